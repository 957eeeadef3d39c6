"""Output formats of ``occ-label`` (``--format``): where each keyframe's labels go, on which grid
and in which frame, and how they are written (with the writers of :mod:`occ_core.formats`).

- ``occ3d``: ``<scene_name>/<sample_token>/labels.npz`` with Occ3D ``semantics`` (17 free),
  ``mask_lidar``, ``mask_camera``; any grid (``--grid``), base_link.
- ``openocc``: ``<scene_name>/<sample_token>/labels.npz`` with OpenOcc v2 ``semantics`` (16 free)
  and ``flow`` (200, 200, 16, 2) float32 m/s, plus ``mask_lidar``, ``mask_camera``; the openocc
  grid (= occ3d), base_link.
- ``surroundocc``: ``samples/<LiDAR file name>.npy`` (``n008-...__LIDAR_TOP__<t>.pcd.bin.npy``),
  sparse (N, 4) ``[x, y, z, c]``; the surroundocc grid, LIDAR_TOP.
- ``openoccupancy``: ``scene_<scene_token>/occupancy/<lidar_token>.npy``, sparse (N, 4)
  ``[z, y, x, c]``; the openoccupancy grid, LIDAR_TOP.

Frames: Occ3D and OpenOcc v2 grids lie in the keyframe's ego frame (base_link); SurroundOcc and
OpenOccupancy publish voxel indices in the keyframe's LiDAR frame (LIDAR_TOP, which nuScenes
yaws 90° against base_link), so those two are labelled in that frame.

Classes: OpenOcc v2 and the sparse (SSC) formats have no Occ3D ``others`` class. ``others``
voxels become free (16) in OpenOcc v2 (its readers accept 0-16 only) and ignore (stored as
class 0, noise, which both SSC loaders ignore) in the sparse formats. A dataroot without
lidarseg labels most of its geometry ``others``, so these formats refuse it
(:func:`check_dataroot_for`).

Flow (OpenOcc v2): ``(vx, vy)`` m/s of the object a voxel belongs to, the annotation box's
velocity (nuscenes-devkit ``box_velocity``, a centred difference over the instance's
neighbouring annotations) rotated into the keyframe's base_link. Ego motion is **not**
subtracted: flow is the object's own velocity expressed in the ego frame, so static voxels
(and objects whose velocity is unknown) have zero flow, as in OpenOcc v2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from occ_core.classes import IGNORE_LABEL, OPENOCC_FREE
from occ_core.errors import OccDataError
from occ_core.formats import occ3d, openocc, sparse
from occ_core.formats.convert import occ3d_to_openocc, occ3d_to_ssc
from occ_core.grid import OCC3D, OPENOCC, OPENOCCUPANCY, SURROUNDOCC, GridSpec
from occ_core.paths import safe_component


@dataclass(frozen=True)
class OutputFormat:
    """One ``--format``.

    Attributes:
        name: the ``--format`` value.
        grid: the grid the format is defined on, or None where any grid goes (``occ3d``).
        frame: ``ego`` or ``lidar`` (:attr:`occ_core.labels.config.LabelConfig.frame`).
        flow: the files carry per-voxel flow.
        needs_classes: ``others`` cannot be written, so lidarseg is required.
    """

    name: str
    grid: GridSpec | None
    frame: str
    flow: bool
    needs_classes: bool


FORMATS: dict[str, OutputFormat] = {f.name: f for f in (
    OutputFormat("occ3d", None, "ego", False, False),
    OutputFormat("openocc", OPENOCC, "ego", True, True),
    OutputFormat("surroundocc", SURROUNDOCC, "lidar", False, True),
    OutputFormat("openoccupancy", OPENOCCUPANCY, "lidar", False, True),
)}

#: ``--format`` name -> the grid preset it uses when ``--grid`` is not given.
DEFAULT_GRID: dict[str, GridSpec] = {"occ3d": OCC3D, "openocc": OPENOCC, "surroundocc": SURROUNDOCC,
                                     "openoccupancy": OPENOCCUPANCY}


def _same_grid(a: GridSpec, b: GridSpec) -> bool:
    return (tuple(a.dims) == tuple(b.dims) and np.allclose(a.range_min, b.range_min)
            and np.allclose(a.voxel_size, b.voxel_size))


def grid_for(fmt: str, grid: GridSpec | None) -> GridSpec:
    """The grid to label on for ``fmt``: ``grid`` (``--grid``) if given and allowed, else the
    format's own.

    Raises:
        OccDataError: ``--grid`` names a grid the format is not defined on.
    """
    spec = FORMATS[fmt]
    if grid is None:
        return DEFAULT_GRID[fmt]
    if spec.grid is not None and not _same_grid(grid, spec.grid):
        raise OccDataError(f"--grid {grid.name}: --format {fmt} is defined on the {spec.grid.name} grid "
                           f"({'x'.join(map(str, spec.grid.dims))}); drop --grid or pass the matching one")
    return grid


def check_dataroot_for(fmt: str, has_lidarseg: bool, dataroot: Path) -> None:
    """Refuse a format without an ``others`` class for a dataroot without lidarseg.

    Raises:
        OccDataError: naming the format and the dataroot.
    """
    if FORMATS[fmt].needs_classes and not has_lidarseg:
        raise OccDataError(f"--format {fmt}: {dataroot} has no lidarseg labels, so nearly every voxel would be "
                           f"Occ3D 'others', which {fmt} has no class for; use --format occ3d")


def keyframe_path(fmt: str, out: str | Path, scene_name: str, scene_token: str, sample_token: str,
                  lidar_token: str, lidar_filename: str) -> Path:
    """Where ``fmt`` puts one keyframe's labels under ``out`` (see the module table); every
    name from the tables is checked as a single file name."""
    out = Path(out)
    if fmt in ("occ3d", "openocc"):
        return occ3d.sample_path(out, scene_name, sample_token)
    if fmt == "surroundocc":
        name = safe_component(PurePosixPath(str(lidar_filename)).name, "sample_data.filename")
        return out / "samples" / f"{name}.npy"
    if fmt == "openoccupancy":
        return (out / f"scene_{safe_component(scene_token, 'scene.token')}" / "occupancy"
                / f"{safe_component(lidar_token, 'sample_data.token')}.npy")
    raise ValueError(f"unknown output format {fmt!r}; expected one of {sorted(FORMATS)}")


def write_keyframe(fmt: str, path: str | Path, semantics: np.ndarray, mask_lidar: np.ndarray,
                   mask_camera: np.ndarray, flow: np.ndarray | None = None) -> None:
    """Write one keyframe's labels in ``fmt`` atomically.

    Args:
        semantics: (X, Y, Z) uint8 Occ3D labels (17 free) on the format's grid and frame.
        mask_lidar, mask_camera: (X, Y, Z) bool (kept by ``occ3d`` and ``openocc`` only).
        flow: (X, Y, Z, 2) float32 m/s, required by ``openocc``.
    """
    if fmt == "occ3d":
        occ3d.write_gt(path, occ3d.Occ3DSample(semantics, mask_lidar, mask_camera))
    elif fmt == "openocc":
        if flow is None:
            raise ValueError("openocc output needs the flow")
        sem = occ3d_to_openocc(semantics, others_to=OPENOCC_FREE, name=str(path))
        flow = np.where((sem == OPENOCC_FREE)[..., None], 0.0, flow).astype(np.float32)
        openocc.write(path, openocc.OpenOccSample(sem, flow, mask_lidar, mask_camera))
    elif fmt in ("surroundocc", "openoccupancy"):
        dense = occ3d_to_ssc(semantics, others_to=IGNORE_LABEL, name=str(path))
        sparse.write_sparse(path, dense, fmt)
    else:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {sorted(FORMATS)}")
