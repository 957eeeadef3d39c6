"""OpenOcc v2 ground truth and predictions (occupancy and flow).

Layout (OpenDriveLab OccNet / the CVPR 2024 occupancy-and-flow challenge)::

    <openocc_v2>/<scene_name>/<sample_token>/labels.npz
        semantics  uint8 (200, 200, 16)     OpenOcc classes 0-15, 16 = free
        flow       float32 (200, 200, 16, 2) (vx, vy) in m/s in the ego frame
    <pred_dir>/<sample_token>.npz
        semantics  uint8 (200, 200, 16), flow float32 (200, 200, 16, 2) (flow optional unless
        mAVE is evaluated)

The grid is :data:`occ_core.grid.OPENOCC` (same as Occ3D), indexed ``[x, y, z]``. OpenOcc v2
carries no visibility masks; if ``mask_camera`` / ``mask_lidar`` are present they are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from occ_core.classes import OPENOCC_FREE
from occ_core.errors import OccDataError
from occ_core.fileio import atomic_save_npz
from occ_core.formats._npz import check_labels, load_npz, require
from occ_core.grid import OPENOCC

SHAPE: tuple[int, int, int] = OPENOCC.dims


@dataclass
class OpenOccSample:
    """One OpenOcc v2 frame.

    Attributes:
        semantics: (X, Y, Z) uint8 OpenOcc labels, 16 = free.
        flow: (X, Y, Z, 2) float32 horizontal velocity, or None where the file has none.
        mask_lidar, mask_camera: (X, Y, Z) bool, or None where absent.
    """

    semantics: np.ndarray
    flow: np.ndarray | None = None
    mask_lidar: np.ndarray | None = None
    mask_camera: np.ndarray | None = None


def read(path: str | os.PathLike, require_flow: bool = True, shape: tuple[int, int, int] = SHAPE) -> OpenOccSample:
    """Read an OpenOcc v2 ``labels.npz`` or prediction ``<token>.npz``.

    Args:
        require_flow: if True a missing ``flow`` is an error; otherwise it is returned as None.

    Raises:
        OccDataError: naming the file and the key, shape, dtype or label that is wrong.
    """
    arrays = load_npz(path)
    sem = require(path, arrays, "semantics", shape, (np.uint8,))
    check_labels(path, "semantics", sem, OPENOCC_FREE)
    flow = None
    if require_flow or "flow" in arrays:
        flow = require(path, arrays, "flow", (*shape, 2), (np.float32, np.float16, np.float64)).astype(np.float32)
        if not np.all(np.isfinite(flow)):
            raise OccDataError(f"{path}: 'flow' holds non-finite values")
    masks = {k: require(path, arrays, k, shape, (np.bool_, np.uint8)).astype(bool) if k in arrays else None
             for k in ("mask_lidar", "mask_camera")}
    return OpenOccSample(sem, flow, masks["mask_lidar"], masks["mask_camera"])


def write(path: str | os.PathLike, sample: OpenOccSample) -> None:
    """Write an OpenOcc v2 ``.npz`` atomically (semantics uint8, flow float32, masks if set)."""
    sem = np.asarray(sample.semantics)
    if sem.ndim != 3 or not np.issubdtype(sem.dtype, np.integer) or (sem.size and (sem.min() < 0 or sem.max() > OPENOCC_FREE)):
        raise OccDataError(f"{path}: 'semantics' must be an integer (X, Y, Z) grid in 0..{OPENOCC_FREE}")
    arrays = {"semantics": sem.astype(np.uint8)}
    if sample.flow is not None:
        flow = np.asarray(sample.flow, np.float32)
        if flow.shape != (*sem.shape, 2):
            raise OccDataError(f"{path}: 'flow' has shape {flow.shape}, expected {(*sem.shape, 2)}")
        arrays["flow"] = flow
    for k in ("mask_lidar", "mask_camera"):
        m = getattr(sample, k)
        if m is not None:
            arrays[k] = np.asarray(m).astype(np.uint8)
    atomic_save_npz(path, **arrays)
