"""Occupancy grid -> visualization_msgs/MarkerArray and -> sensor_msgs/PointCloud2.

Markers: a DELETEALL marker, then one CUBE_LIST per present non-free class (``ns`` = class
name, ``id`` = class index), points = voxel centres in the grid's frame (``base_link``).

The hot path is filling ``Marker.points`` with tens of thousands of ``geometry_msgs/Point``
objects. rclpy message classes are Python classes with ``__slots__`` (``_x``, ``_y``, ``_z``,
``_check_fields``) behind type-checking properties. ``points_from_array`` / ``voxel_points``
create the objects with ``Point.__new__`` and fill the slots through their member descriptors
with ``map``, so no Python bytecode runs per point, and keep the garbage collector paused while
the objects are allocated (``voxel_points`` also shares one float object per grid coordinate).
The objects are ordinary ``Point`` instances: equal to ``Point(x=..)``, their setters and repr
work, and they serialize to messages that decode identically (the tests check this). When the
generated class has no such slots (another rosidl generator) the plain constructor is used.
bench/conversions.py compares this with the plain constructor.

Publishing the message costs more again: rclpy converts it to C reading every coordinate
through its Python property (``serialize_message`` measures that). ``cdr.py`` writes the
serialized MarkerArray directly for ``Publisher.publish(bytes)``.
"""

from __future__ import annotations

import gc
from collections import deque
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Sequence

import numpy as np

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE, OCC3D_PALETTE
from occ_core.grid import OCC3D, GridSpec

from .errors import ConversionError
from .pointcloud import array_to_pointcloud2, pointcloud2_to_array

VOXEL_CLOUD_FIELDS: tuple[str, ...] = ("x", "y", "z", "label", "score", "rgb")
VOXEL_CLOUD_DTYPES: tuple[np.dtype, ...] = ((np.dtype(np.float32),) * 3 + (np.dtype(np.uint8), np.dtype(np.float32),
                                                                         np.dtype(np.uint32)))
#: A voxel cloud point, packed little endian (21 bytes): the centre as one (3,) field for a
#: single write, and the same bytes as the six PointCloud2 fields. ``rgb`` is the class colour
#: packed as PCL does (``0x00RRGGBB``, UINT32): RViz2's ``RGB8`` colour transformer and Foxglove's
#: packed-RGB colour mode draw the cloud in the class palette.
_VOXEL_RECORD = np.dtype([("xyz", "<f4", (3,)), ("label", "u1"), ("score", "<f4"), ("rgb", "<u4")])
_VOXEL_CLOUD_DTYPE = np.dtype({"names": list(VOXEL_CLOUD_FIELDS), "formats": [d.newbyteorder("<") for d in VOXEL_CLOUD_DTYPES]})
#: The same without ``rgb`` (17 bytes; ``palette=None``).
_VOXEL_RECORD_NO_RGB = np.dtype([("xyz", "<f4", (3,)), ("label", "u1"), ("score", "<f4")])
_VOXEL_CLOUD_DTYPE_NO_RGB = np.dtype({"names": list(VOXEL_CLOUD_FIELDS[:5]),
                                      "formats": [d.newbyteorder("<") for d in VOXEL_CLOUD_DTYPES[:5]]})


def packed_rgb(palette: np.ndarray) -> np.ndarray:
    """(C,) uint32 ``0x00RRGGBB`` of a (C, 3+) uint8 RGB palette (PCL's packed ``rgb``)."""
    pal = np.asarray(palette).astype(np.uint32)
    return (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]


def _fill_slots(cls: type, slots: Sequence[str], columns: Sequence[Any], n: int, check_fields: bool) -> list:
    """``n`` new ``cls`` objects with slot ``slots[j]`` = ``columns[j][i]`` (iterables of floats)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        objs = list(map(cls.__new__, repeat(cls, n)))
        for slot, col in zip(slots, columns):
            deque(map(getattr(cls, slot).__set__, objs, col), 0)
        deque(map(cls._check_fields.__set__, objs, repeat(check_fields, n)), 0)
    finally:
        if was_enabled:
            gc.enable()
    return objs


def _default_check_fields(cls: type) -> bool:
    """What ``cls()`` sets ``_check_fields`` to (the ROS_PYTHON_CHECK_FIELDS default)."""
    return bool(cls()._check_fields)


def _has_slots(cls: type, names: Sequence[str]) -> bool:
    return all(n in getattr(cls, "__slots__", ()) for n in (*names, "_check_fields"))


def points_from_array(xyz: np.ndarray) -> list:
    """``geometry_msgs/Point`` objects (rclpy) for an (N, 3) array of coordinates in metres."""
    from geometry_msgs.msg import Point

    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    cols = xyz.T.tolist()  # Python floats, as the message fields require
    if _has_slots(Point, ("_x", "_y", "_z")):
        return _fill_slots(Point, ("_x", "_y", "_z"), cols, xyz.shape[0], _default_check_fields(Point))
    return [Point(x=x, y=y, z=z) for x, y, z in zip(*cols)]  # other rosidl generators


def voxel_points(ijk: np.ndarray, spec: GridSpec) -> list:
    """``geometry_msgs/Point`` objects (rclpy) at the centres of voxels ``ijk`` (N, 3) of ``spec``.

    Same values as ``spec.voxel_centers(ijk)``; the coordinates come from per-axis tables of
    Python floats (one object per grid coordinate, shared by the points), which saves
    allocating 3 N floats.
    """
    from geometry_msgs.msg import Point

    ijk = np.asarray(ijk, dtype=np.int64).reshape(-1, 3)
    if ijk.size and (ijk.min() < 0 or np.any(ijk.max(axis=0) >= np.asarray(spec.dims))):
        raise ConversionError(f"ijk: voxel indices must lie in [0, {tuple(spec.dims)}) of grid {spec.name!r}")
    tables = [axis.tolist() for axis in spec.axis_centers()]
    cols = [map(tab.__getitem__, col) for tab, col in zip(tables, ijk.T.tolist())]
    if _has_slots(Point, ("_x", "_y", "_z")):
        return _fill_slots(Point, ("_x", "_y", "_z"), cols, ijk.shape[0], _default_check_fields(Point))
    return [Point(x=x, y=y, z=z) for x, y, z in zip(*cols)]


def colors_from_array(rgba: np.ndarray) -> list:
    """``std_msgs/ColorRGBA`` objects (rclpy) for an (N, 4) array of r, g, b, a in [0, 1]."""
    from std_msgs.msg import ColorRGBA

    rgba = np.asarray(rgba, dtype=np.float32).reshape(-1, 4).astype(np.float64)
    cols = rgba.T.tolist()
    if _has_slots(ColorRGBA, ("_r", "_g", "_b", "_a")):
        return _fill_slots(ColorRGBA, ("_r", "_g", "_b", "_a"), cols, rgba.shape[0], _default_check_fields(ColorRGBA))
    return [ColorRGBA(r=r, g=g, b=b, a=a) for r, g, b, a in zip(*cols)]


def _header(header: Any, frame_id: str, stamp: Any):
    from std_msgs.msg import Header

    if header is not None:
        return header
    h = Header(frame_id=frame_id)
    if stamp is not None:
        h.stamp = stamp
    return h


def _check_grid(grid: np.ndarray, spec: GridSpec) -> np.ndarray:
    grid = np.asarray(grid)
    if grid.shape != tuple(spec.dims):
        raise ConversionError(f"grid: expected shape {tuple(spec.dims)} of grid {spec.name!r}, got {grid.shape}")
    if grid.dtype != np.uint8:
        raise ConversionError(f"grid: expected uint8 class labels, got {grid.dtype}")
    return grid


@dataclass
class MarkerPlan:
    """What the markers of a grid contain, before any message object is built.

    Attributes:
        index: (N,) int64 row-major flat indices of the occupied voxels, grouped by class
            (increasing), in increasing flat order within a class.
        classes: (K,) present non-free class indices, increasing.
        bounds: (K + 1,) voxel ranges: class ``classes[k]`` owns ``index[bounds[k]:bounds[k+1]]``.
        names: K ``ns`` strings.
        class_rgba: (K, 4) float32 marker ``color`` (alpha: the value, or the class mean).
        voxel_rgba: (N, 4) float32 per-point ``colors`` for per-voxel alpha, else None.
        scale: voxel size - 1e-3 per axis (metres).
    """

    index: np.ndarray
    classes: np.ndarray
    bounds: np.ndarray
    names: list
    class_rgba: np.ndarray
    voxel_rgba: np.ndarray | None
    scale: tuple[float, float, float]
    dims: tuple[int, int, int]

    @property
    def ijk(self) -> np.ndarray:
        """(N, 3) int64 voxel indices ``[x, y, z]`` of :attr:`index`."""
        return np.stack(np.unravel_index(self.index, self.dims), axis=1)


def plan_markers(grid: np.ndarray, spec: GridSpec = OCC3D, class_names: Sequence[str] = OCC3D_CLASSES,
                 palette: np.ndarray = OCC3D_PALETTE, free_label: int = OCC3D_FREE,
                 alpha: float | np.ndarray = 1.0, hidden: Sequence[int] = ()) -> MarkerPlan:
    """Group the occupied voxels of ``grid`` (X, Y, Z) by class; see ``occupancy_to_marker_array``.

    ``hidden``: class indices left out (as if free), e.g. the ground classes.
    """
    grid = _check_grid(grid, spec)
    palette = np.asarray(palette)
    per_voxel_alpha = np.ndim(alpha) > 0
    if per_voxel_alpha:
        alpha = np.asarray(alpha, dtype=np.float32)
        if alpha.shape != grid.shape:
            raise ConversionError(f"alpha: expected a scalar or shape {grid.shape}, got {alpha.shape}")
    elif not 0.0 < float(alpha) <= 1.0:
        raise ConversionError(f"alpha: expected a value in (0, 1], got {alpha}")

    flat = grid.reshape(-1)
    if len(hidden):
        drawn = np.ones(256, dtype=bool)
        drawn[free_label] = False
        drawn[np.asarray(hidden, dtype=np.int64)] = False
        occ = np.flatnonzero(drawn[flat])
    else:
        occ = np.flatnonzero(flat != free_label)
    labels = flat[occ]
    order = np.argsort(labels, kind="stable")
    occ, labels = occ[order], labels[order]
    present, starts = np.unique(labels, return_index=True)
    if present.size and int(present.max()) >= min(len(class_names), len(palette)):
        raise ConversionError(
            f"grid: label {int(present.max())} has no class name/palette entry ({len(class_names)} names, {len(palette)} colours)")
    bounds = np.append(starts, labels.size).astype(np.int64)
    class_rgba = np.ones((present.size, 4), dtype=np.float32)
    class_rgba[:, :3] = palette[present][:, :3].astype(np.float32) / np.float32(255.0)
    voxel_rgba = None
    if per_voxel_alpha:
        a = alpha.reshape(-1)[occ]
        if a.size and not (a.min() > 0.0 and a.max() <= 1.0):
            raise ConversionError("alpha: per-voxel alpha of occupied voxels must lie in (0, 1]")
        voxel_rgba = np.empty((occ.size, 4), dtype=np.float32)
        voxel_rgba[:, :3] = palette[labels][:, :3].astype(np.float32) / np.float32(255.0)
        voxel_rgba[:, 3] = a
        if present.size:
            class_rgba[:, 3] = np.add.reduceat(a.astype(np.float64), starts) / np.diff(bounds)
    else:
        class_rgba[:, 3] = float(alpha)
    return MarkerPlan(index=occ, classes=present, bounds=bounds, names=[str(class_names[c]) for c in present.tolist()],
                      class_rgba=class_rgba, voxel_rgba=voxel_rgba,
                      scale=tuple(float(v) - 1e-3 for v in spec.voxel_size), dims=tuple(grid.shape))


def occupancy_to_marker_array(grid: np.ndarray, spec: GridSpec = OCC3D, header: Any = None,
                              frame_id: str = "base_link", stamp: Any = None,
                              class_names: Sequence[str] = OCC3D_CLASSES, palette: np.ndarray = OCC3D_PALETTE,
                              free_label: int = OCC3D_FREE, alpha: float | np.ndarray = 1.0,
                              hidden: Sequence[int] = ()):
    """An RViz MarkerArray of the occupied voxels of a semantic grid.

    Args:
        grid: (X, Y, Z) uint8 class labels on ``spec`` (Occ3D: 0-16 classes, 17 free).
        spec: the grid (default Occ3D 200x200x16, 0.4 m).
        header: ``std_msgs/Header`` for every marker; default ``frame_id`` + ``stamp``.
        frame_id, stamp: used when no header is given (``builtin_interfaces/Time`` stamp).
        class_names: name per class index; becomes each marker's ``ns``.
        palette: (C, 3) uint8 RGB per class.
        free_label: label of free space (not drawn).
        alpha: opacity in (0, 1]: one value, or an (X, Y, Z) array for per-voxel alpha, which
            fills ``colors`` (one per point) while ``color`` carries the class colour with the
            mean alpha.
        hidden: class indices not drawn (no marker, as if free).

    Returns:
        ``visualization_msgs.msg.MarkerArray``: markers[0] is DELETEALL; then one CUBE_LIST per
        present non-free class in increasing class order, points = voxel centres (metres, in
        the header's frame), scale = voxel size - 1e-3, identity pose, lifetime 0. Colour
        values are float32-exact (what the message carries on the wire).
    """
    from visualization_msgs.msg import Marker, MarkerArray

    plan = plan_markers(grid, spec, class_names, palette, free_label, alpha, hidden)
    hdr = _header(header, frame_id, stamp)
    points = voxel_points(plan.ijk, spec)
    colors = colors_from_array(plan.voxel_rgba) if plan.voxel_rgba is not None else None

    clear = Marker()
    clear.header = hdr
    clear.action = Marker.DELETEALL
    markers = [clear]
    sx, sy, sz = plan.scale
    bounds = plan.bounds.tolist()
    for k, cls in enumerate(plan.classes.tolist()):
        lo, hi = bounds[k], bounds[k + 1]
        m = Marker()
        m.header = hdr
        m.ns = plan.names[k]
        m.id = int(cls)
        m.type = Marker.CUBE_LIST
        m.action = Marker.ADD
        m.pose.orientation.w = 1.0
        m.scale.x, m.scale.y, m.scale.z = sx, sy, sz
        m.color.r, m.color.g, m.color.b, m.color.a = (float(v) for v in plan.class_rgba[k])
        m.frame_locked = False
        m.points = points[lo:hi]
        if colors is not None:
            m.colors = colors[lo:hi]
        markers.append(m)
    out = MarkerArray()
    out.markers = markers
    return out


def occupancy_to_pointcloud2(grid: np.ndarray, spec: GridSpec = OCC3D, header: Any = None,
                             frame_id: str = "base_link", stamp: Any = None, scores: np.ndarray | None = None,
                             free_label: int = OCC3D_FREE, palette: np.ndarray | None = OCC3D_PALETTE):
    """A PointCloud2 of the non-free voxels: fields x, y, z (float32), label (uint8), score (float32),
    rgb (uint32 ``0x00RRGGBB``, the label's palette colour).

    Args:
        grid: (X, Y, Z) uint8 class labels on ``spec``.
        spec: the grid (default Occ3D).
        header / frame_id / stamp: as in ``occupancy_to_marker_array``.
        scores: optional (X, Y, Z) float confidence per voxel; default 1.0.
        free_label: label of free space (left out).
        palette: (C, 3) uint8 RGB per class for the ``rgb`` field; None = no ``rgb`` field.

    Returns:
        ``sensor_msgs.msg.PointCloud2``: height 1, dense packed little endian (point_step 21, or 17
        without ``rgb``), one point per non-free voxel at its centre (metres, header frame), in
        flat index order.
    """
    grid = _check_grid(grid, spec)
    flat = grid.reshape(-1)
    occ = np.flatnonzero(flat != free_label)
    if scores is not None:
        scores = np.asarray(scores)
        if scores.shape != grid.shape:
            raise ConversionError(f"scores: expected shape {grid.shape}, got {scores.shape}")
    packed = np.empty(occ.size, dtype=_VOXEL_RECORD if palette is not None else _VOXEL_RECORD_NO_RGB)
    packed["xyz"] = spec.flat_centers(occ, np.float32)  # = spec.voxel_centers, rounded to float32
    labels = flat[occ]
    packed["label"] = labels
    packed["score"] = 1.0 if scores is None else scores.reshape(-1).take(occ)
    if palette is None:
        return array_to_pointcloud2(packed.view(_VOXEL_CLOUD_DTYPE_NO_RGB), header=_header(header, frame_id, stamp))
    table = packed_rgb(palette)
    if labels.size and int(labels.max()) >= table.size:
        raise ConversionError(f"grid: label {int(labels.max())} has no palette colour ({table.size} colours)")
    packed["rgb"] = table[labels]
    return array_to_pointcloud2(packed.view(_VOXEL_CLOUD_DTYPE), header=_header(header, frame_id, stamp))


def pointcloud2_to_occupancy(msg: Any, spec: GridSpec = OCC3D, free_label: int = OCC3D_FREE,
                             label_field: str = "label") -> np.ndarray:
    """The (X, Y, Z) uint8 grid of a voxel cloud (x, y, z + ``label_field``); other voxels free.

    Points outside ``spec`` are dropped; when two points fall in one voxel the later wins.
    """
    pts = pointcloud2_to_array(msg, ("x", "y", "z", label_field))
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1).astype(np.float64)
    idx, inside = spec.points_to_voxels(xyz)
    grid = np.full(spec.dims, free_label, dtype=np.uint8)
    idx = idx[inside]
    grid[idx[:, 0], idx[:, 1], idx[:, 2]] = pts[label_field][inside]
    return grid
