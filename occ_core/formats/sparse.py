"""Sparse occupancy labels: OpenOccupancy (nuScenes-Occupancy) and SurroundOcc.

Both store only the labelled voxels as an integer array of voxel indices and classes; the
dense grid they are evaluated on uses **0 = empty**, classes **1-16** (barrier ... vegetation,
the Occ3D/lidarseg-16 order) and **255 = ignore**; a stored class 0 means noise and becomes
255 (ignored), as both repositories' loaders do.

=================  ======================  =======================================  ========================
format             sparse array            dense grid                               duplicates of one voxel
=================  ======================  =======================================  ========================
OpenOccupancy      (N, 4) ``[z, y, x, c]``  512×512×40, 0.2 m, [-51.2,-51.2,-5,51.2,  majority label (ties ->
                   or (N, 7) ``[z, y, x,     51.2,3] (:data:`grid.OPENOCCUPANCY`)     lowest), as its
                   vx, vy, vz, c]``                                                  ``nb_process_label``
SurroundOcc        (N, 4) ``[x, y, z, c]``  200×200×16, 0.5 m, [-50,-50,-5,50,50,3]  last entry wins
                                           (:data:`grid.SURROUNDOCC`)
=================  ======================  =======================================  ========================

Files: OpenOccupancy ``scene_<scene_token>/occupancy/<lidar_token>.npy``; SurroundOcc
``<lidar_file_name>.npy``. Indices outside the grid are an error (the OpenOccupancy loader
clips them silently after augmentation; without augmentation none occur).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from occ_core.classes import IGNORE_LABEL
from occ_core.errors import OccDataError
from occ_core.fileio import atomic_path
from occ_core.grid import OPENOCCUPANCY, SURROUNDOCC

EMPTY = 0
NOISE = 0  # the stored class that means noise
NUM_SSC_CLASSES = 17  # 0 empty + 16 semantic classes


def _validate(sparse: np.ndarray, ncols: tuple[int, ...], name: str) -> np.ndarray:
    a = np.asarray(sparse)
    if a.ndim != 2 or a.shape[1] not in ncols:
        raise OccDataError(f"{name}: sparse labels have shape {a.shape}, expected (N, {' or '.join(map(str, ncols))})")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise OccDataError(f"{name}: sparse labels have dtype {a.dtype}, expected an integer or float array")
    return a


def _to_dense(idx_xyz: np.ndarray, labels: np.ndarray, dims: tuple[int, int, int], name: str, majority: bool) -> np.ndarray:
    if idx_xyz.size and (idx_xyz.min() < 0 or np.any(idx_xyz.max(axis=0) >= np.asarray(dims))):
        raise OccDataError(f"{name}: voxel indices {idx_xyz.min(axis=0).tolist()}..{idx_xyz.max(axis=0).tolist()} leave the {dims} grid")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise OccDataError(f"{name}: classes must lie in 0..255, got {labels.min()}..{labels.max()}")
    labels = np.where(labels == NOISE, IGNORE_LABEL, labels).astype(np.int64)
    dense = np.full(dims, EMPTY, dtype=np.uint8)
    if not labels.size:
        return dense
    flat = np.ravel_multi_index(tuple(idx_xyz.T), dims)
    if majority:
        # count (voxel, label) pairs; per voxel keep the most frequent label, lowest on ties
        pairs, counts = np.unique(flat * 256 + labels, return_counts=True)
        vox, lab = pairs // 256, pairs % 256
        order = np.lexsort((lab, -counts, vox))  # by voxel, then count desc, then label asc
        vox, lab = vox[order], lab[order]
        first = np.r_[True, vox[1:] != vox[:-1]]
        dense.reshape(-1)[vox[first]] = lab[first]
    else:
        rev = flat[::-1]
        _, i = np.unique(rev, return_index=True)  # first of the reversed = last entry
        dense.reshape(-1)[rev[i]] = labels[::-1][i]
    return dense


def _to_sparse(dense: np.ndarray, dims: tuple[int, int, int], name: str) -> np.ndarray:
    dense = np.asarray(dense)
    if dense.shape != tuple(dims):
        raise OccDataError(f"{name}: dense grid has shape {dense.shape}, expected {tuple(dims)}")
    idx = np.argwhere(dense != EMPTY)
    lab = dense[tuple(idx.T)].astype(np.int64)
    lab[lab == IGNORE_LABEL] = NOISE
    return np.concatenate([idx, lab[:, None]], axis=1)


def openoccupancy_to_dense(sparse: np.ndarray, name: str = "openoccupancy") -> np.ndarray:
    """(N, 4|7) ``[z, y, x, (vx, vy, vz,) c]`` -> (512, 512, 40) uint8 ``[x, y, z]``: 0 empty, 1-16, 255 noise."""
    a = _validate(sparse, (4, 7), name)
    idx = a[:, [2, 1, 0]].astype(np.int64)
    return _to_dense(idx, a[:, -1].astype(np.int64), OPENOCCUPANCY.dims, name, majority=True)


def openoccupancy_from_dense(dense: np.ndarray, name: str = "openoccupancy") -> np.ndarray:
    """(512, 512, 40) dense -> (N, 4) int64 ``[z, y, x, c]`` of the non-empty voxels (255 -> 0 noise)."""
    s = _to_sparse(dense, OPENOCCUPANCY.dims, name)
    return s[:, [2, 1, 0, 3]]


def surroundocc_to_dense(sparse: np.ndarray, name: str = "surroundocc") -> np.ndarray:
    """(N, 4) ``[x, y, z, c]`` -> (200, 200, 16) uint8: 0 empty, 1-16, 255 noise."""
    a = _validate(sparse, (4,), name)
    return _to_dense(a[:, :3].astype(np.int64), a[:, 3].astype(np.int64), SURROUNDOCC.dims, name, majority=False)


def surroundocc_from_dense(dense: np.ndarray, name: str = "surroundocc") -> np.ndarray:
    """(200, 200, 16) dense -> (N, 4) int64 ``[x, y, z, c]`` of the non-empty voxels (255 -> 0 noise)."""
    return _to_sparse(dense, SURROUNDOCC.dims, name)


def read_sparse(path: str | os.PathLike, fmt: str) -> np.ndarray:
    """Read a sparse ``.npy`` of ``fmt`` (``"openoccupancy"`` or ``"surroundocc"``) as its dense grid."""
    path = Path(path)
    convert = {"openoccupancy": openoccupancy_to_dense, "surroundocc": surroundocc_to_dense}
    if fmt not in convert:
        raise ValueError(f"unknown sparse format {fmt!r}; expected one of {sorted(convert)}")
    if not path.is_file():
        raise OccDataError(f"{path}: file not found (expected a {fmt} sparse .npy)")
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise OccDataError(f"{path}: not a readable .npy array ({e})") from None
    return convert[fmt](a, name=str(path))


def write_sparse(path: str | os.PathLike, dense: np.ndarray, fmt: str) -> None:
    """Write the dense grid of ``fmt`` as its sparse ``.npy`` (int64) atomically."""
    convert = {"openoccupancy": openoccupancy_from_dense, "surroundocc": surroundocc_from_dense}
    if fmt not in convert:
        raise ValueError(f"unknown sparse format {fmt!r}; expected one of {sorted(convert)}")
    sparse = convert[fmt](dense, name=str(path))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, sparse)
