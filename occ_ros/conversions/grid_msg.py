"""occ_ros_msgs/SemanticOccupancyGrid <-> numpy.

:func:`grid_to_msg` packs a dense (X, Y, Z) label grid of a :class:`~occ_core.grid.GridSpec`
(axis-aligned in base_link, REP 103) with optional (X, Y, Z) scores and (X, Y, Z, 2) flow into
the message; :func:`msg_to_grid` unpacks one (an rclpy message or a rosbags dataclass message:
duck typing on the field names) into a :class:`SemanticGrid`. Arrays are flattened in C order of
(X, Y, Z), i.e. ``ORDER_XYZ_ROW_MAJOR`` (z fastest), with no per-voxel Python code.

The message definition is ``msg/SemanticOccupancyGrid.msg`` (package ``occ_ros_msgs``);
:data:`GRID_MSG_TYPE` and :func:`grid_msg_definition` give its name and text for bag writers
without the generated package: :func:`grid_typestore` is the rosbags Jazzy typestore with the type
registered (a writer given it stores the definition, so MCAP readers decode the grid from the bag
alone), and :func:`grid_to_rosbags_msg` builds the rosbags dataclass message with the same checks
as :func:`grid_to_msg`.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE
from occ_core.geometry import make_transform
from occ_core.grid import GridSpec

from .errors import ConversionError

#: The ROS type name of the message.
GRID_MSG_TYPE = "occ_ros_msgs/msg/SemanticOccupancyGrid"
#: ``index_order`` value: C order of an (X, Y, Z) array, z fastest.
ORDER_XYZ_ROW_MAJOR = 0

_MSG_FILE = Path(__file__).resolve().parents[2] / "msg" / "SemanticOccupancyGrid.msg"


def grid_msg_definition() -> str:
    """The text of ``SemanticOccupancyGrid.msg``: from the source checkout, else from the
    installed ``occ_ros_msgs`` share folder."""
    if _MSG_FILE.is_file():
        return _MSG_FILE.read_text()
    from ament_index_python.packages import get_package_share_directory

    return (Path(get_package_share_directory("occ_ros_msgs")) / "msg" / "SemanticOccupancyGrid.msg").read_text()


@dataclass(frozen=True)
class SemanticGrid:
    """A decoded SemanticOccupancyGrid.

    Attributes:
        labels: (X, Y, Z) uint8 class labels.
        spec: the grid geometry; ``range_min`` is the origin position (the min corner) in
            ``frame_id``, exact when ``T_frame_from_grid`` has no rotation.
        T_frame_from_grid: (4, 4) float64 pose of the grid's min corner in ``frame_id``.
        frame_id, stamp_ns: the header.
        class_set, class_names, free_label: the label space.
        scores: (X, Y, Z) float32 or None.
        flow: (X, Y, Z, 2) float32 horizontal flow [m/s] or None.
    """

    labels: np.ndarray
    spec: GridSpec
    T_frame_from_grid: np.ndarray
    frame_id: str
    stamp_ns: int
    class_set: str
    class_names: tuple[str, ...]
    free_label: int
    scores: np.ndarray | None = None
    flow: np.ndarray | None = None


def _numeric_sequence(values: np.ndarray, typecode: str) -> array.array:
    """A contiguous little-endian numpy array as the ``array.array`` rclpy stores sequences in
    (assigning an array.array skips rclpy's per-element checks)."""
    out = array.array(typecode)
    out.frombytes(np.ascontiguousarray(values).tobytes())
    return out


@dataclass(frozen=True)
class _Checked:
    """Validated arrays of one grid: ``dims`` (X, Y, Z); labels (X, Y, Z) uint8; scores (X, Y, Z)
    little-endian float32 or None; flow (X, Y, Z, 2) little-endian float32 or None."""

    dims: tuple[int, int, int]
    labels: np.ndarray
    scores: np.ndarray | None
    flow: np.ndarray | None


def _check_grid(labels: np.ndarray, spec: GridSpec, scores: np.ndarray | None, flow: np.ndarray | None,
                class_names: Sequence[str], free_label: int) -> _Checked:
    """The checks of :func:`grid_to_msg` and :func:`grid_to_rosbags_msg` (see their Raises)."""
    dims = tuple(int(d) for d in spec.dims)
    labels = np.asarray(labels)
    if labels.shape != dims:
        raise ConversionError(f"SemanticOccupancyGrid.labels: expected shape {dims} (spec {spec.name!r}), got {labels.shape}")
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ConversionError("SemanticOccupancyGrid.labels: values must fit uint8 (0..255)")
        labels = labels.astype(np.uint8)
    if class_names and not 0 <= free_label < len(class_names):
        raise ConversionError(f"SemanticOccupancyGrid.free_label: {free_label} is not an index of the {len(class_names)} class_names")
    if scores is not None:
        scores = np.asarray(scores)
        if scores.shape != dims:
            raise ConversionError(f"SemanticOccupancyGrid.scores: expected shape {dims}, got {scores.shape}")
        scores = scores.astype("<f4", copy=False)
    if flow is not None:
        flow = np.asarray(flow)
        if flow.shape != dims + (2,):
            raise ConversionError(f"SemanticOccupancyGrid.flow: expected shape {dims + (2,)}, got {flow.shape}")
        flow = flow.astype("<f4", copy=False)
    return _Checked(dims, labels, scores, flow)


def grid_to_msg(labels: np.ndarray, spec: GridSpec, header: Any = None, *,
                scores: np.ndarray | None = None, flow: np.ndarray | None = None,
                class_set: str = "occ3d", class_names: Sequence[str] = OCC3D_CLASSES,
                free_label: int = OCC3D_FREE, msg_type: Any = None) -> Any:
    """Pack a label grid into a SemanticOccupancyGrid (rclpy message of ``occ_ros_msgs``).

    Args:
        labels: (X, Y, Z) integer labels in 0..255, ``spec.dims`` shaped.
        spec: grid geometry in ``header.frame_id`` (axis-aligned: identity origin orientation).
        header: std_msgs/Header (stamp, frame_id), or None for an empty one.
        scores: optional (X, Y, Z) per-voxel confidence.
        flow: optional (X, Y, Z, 2) horizontal flow (vx, vy) [m/s].
        class_set, class_names, free_label: the label space (default Occ3D).
        msg_type: the message class (default ``occ_ros_msgs.msg.SemanticOccupancyGrid``).

    Raises:
        ConversionError: a shape that does not match ``spec.dims``, labels outside uint8, a
            ``free_label`` outside ``class_names``.
    """
    g = _check_grid(labels, spec, scores, flow, class_names, free_label)
    if msg_type is None:
        from occ_ros_msgs.msg import SemanticOccupancyGrid as msg_type
    msg = msg_type()
    if header is not None:
        msg.header = header
    msg.origin.position.x, msg.origin.position.y, msg.origin.position.z = (float(v) for v in spec.range_min)
    msg.origin.orientation.w = 1.0
    msg.voxel_size_x, msg.voxel_size_y, msg.voxel_size_z = (float(v) for v in spec.voxel_size)
    msg.size_x, msg.size_y, msg.size_z = g.dims
    msg.index_order = ORDER_XYZ_ROW_MAJOR
    msg.class_set = class_set
    msg.class_names = list(class_names)
    msg.free_label = int(free_label)
    msg.labels = _numeric_sequence(g.labels, "B")
    if g.scores is not None:
        msg.scores = _numeric_sequence(g.scores, "f")
    if g.flow is not None:
        msg.flow = _numeric_sequence(g.flow, "f")
    return msg


def grid_typestore() -> Any:
    """A new rosbags ``Stores.ROS2_JAZZY`` typestore with :data:`GRID_MSG_TYPE` registered from
    :func:`grid_msg_definition` (for bag readers and writers; a writer's connection made with it
    stores the definition)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(grid_msg_definition(), GRID_MSG_TYPE))
    return store


def grid_to_rosbags_msg(labels: np.ndarray, spec: GridSpec, stamp_ns: int, frame_id: str, *,
                        scores: np.ndarray | None = None, flow: np.ndarray | None = None,
                        class_set: str = "occ3d", class_names: Sequence[str] = OCC3D_CLASSES,
                        free_label: int = OCC3D_FREE, typestore: Any = None) -> Any:
    """The rosbags dataclass SemanticOccupancyGrid of a label grid (for bag writers; no rclpy).

    Same fields and checks as :func:`grid_to_msg`; serialize it with
    ``typestore.serialize_cdr(msg, GRID_MSG_TYPE)``.

    Args:
        labels: (X, Y, Z) integer labels in 0..255, ``spec.dims`` shaped.
        spec: grid geometry in ``frame_id`` (axis-aligned: identity origin orientation; the
            origin is ``spec.range_min``, the min corner).
        stamp_ns: header stamp [ns]; frame_id: header frame (``base_link`` for occ_ros).
        scores: optional (X, Y, Z) per-voxel confidence.
        flow: optional (X, Y, Z, 2) horizontal flow (vx, vy) [m/s] along the grid's x, y.
        class_set, class_names, free_label: the label space (default Occ3D).
        typestore: a typestore with :data:`GRID_MSG_TYPE` registered (default :func:`grid_typestore`).

    Raises:
        ConversionError: as :func:`grid_to_msg`.
    """
    g = _check_grid(labels, spec, scores, flow, class_names, free_label)
    T = (typestore if typestore is not None else grid_typestore()).types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    empty = np.zeros(0, np.float32)
    x, y, z = (float(v) for v in spec.range_min)
    vx, vy, vz = (float(v) for v in spec.voxel_size)
    return T[GRID_MSG_TYPE](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id),
        origin=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=x, y=y, z=z),
                                           orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
        voxel_size_x=vx, voxel_size_y=vy, voxel_size_z=vz, size_x=g.dims[0], size_y=g.dims[1], size_z=g.dims[2],
        index_order=ORDER_XYZ_ROW_MAJOR, class_set=class_set, class_names=list(class_names), free_label=int(free_label),
        labels=g.labels.reshape(-1),
        scores=empty if g.scores is None else g.scores.reshape(-1),
        flow=empty if g.flow is None else g.flow.reshape(-1))


def _array(msg: Any, field: str, dtype: str, count: int, optional: bool) -> np.ndarray | None:
    """``msg.<field>`` (array.array, numpy array or list) as a flat numpy array of ``count``
    values; None when optional and empty."""
    value = getattr(msg, field)
    try:
        flat = np.frombuffer(value, dtype=dtype)
    except (TypeError, ValueError):
        flat = np.asarray(value).astype(dtype, copy=False).reshape(-1)
    if optional and flat.size == 0:
        return None
    if flat.size != count:
        raise ConversionError(f"SemanticOccupancyGrid.{field}: expected {count} values{' or none' if optional else ''}, got {flat.size}")
    return flat


def msg_to_grid(msg: Any) -> SemanticGrid:
    """Unpack a SemanticOccupancyGrid (rclpy or rosbags message) into a :class:`SemanticGrid`.

    Raises:
        ConversionError: an unknown ``index_order``, zero or negative sizes/voxel sizes, or an
            array whose length does not match ``size_x * size_y * size_z`` (x2 for flow).
    """
    if int(msg.index_order) != ORDER_XYZ_ROW_MAJOR:
        raise ConversionError(f"SemanticOccupancyGrid.index_order: expected ORDER_XYZ_ROW_MAJOR (0), got {msg.index_order}")
    dims = (int(msg.size_x), int(msg.size_y), int(msg.size_z))
    voxel = (float(msg.voxel_size_x), float(msg.voxel_size_y), float(msg.voxel_size_z))
    if min(dims) <= 0 or min(voxel) <= 0:
        raise ConversionError(f"SemanticOccupancyGrid: sizes {dims} and voxel sizes {voxel} must be > 0")
    n = dims[0] * dims[1] * dims[2]
    labels = _array(msg, "labels", "u1", n, optional=False).reshape(dims)
    scores = _array(msg, "scores", "<f4", n, optional=True)
    flow = _array(msg, "flow", "<f4", 2 * n, optional=True)
    p, q = msg.origin.position, msg.origin.orientation
    T = make_transform(np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z]))
    stamp = msg.header.stamp
    return SemanticGrid(
        labels=labels,
        spec=GridSpec(str(msg.class_set) or "grid", (float(p.x), float(p.y), float(p.z)), voxel, dims),
        T_frame_from_grid=T,
        frame_id=str(msg.header.frame_id),
        stamp_ns=int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec),
        class_set=str(msg.class_set),
        class_names=tuple(str(c) for c in msg.class_names),
        free_label=int(msg.free_label),
        scores=None if scores is None else scores.reshape(dims),
        flow=None if flow is None else flow.reshape(dims + (2,)),
    )
