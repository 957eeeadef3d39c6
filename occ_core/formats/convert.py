"""Conversions between label spaces and grids, only where they are well defined.

Label spaces:

=====================  ==========================================  =====================
space                  classes                                     free / ignore
=====================  ==========================================  =====================
Occ3D                  0 others, 1 barrier ... 16 vegetation        17 free
OpenOcc v2             0 car ... 15 vegetation (own order)          16 free
SSC (OpenOccupancy,    1 barrier ... 16 vegetation (Occ3D 1-16)     0 empty, 255 ignore
SurroundOcc dense)
=====================  ==========================================  =====================

Well defined and provided: OpenOcc -> Occ3D and SSC -> Occ3D (injective); Occ3D -> OpenOcc
and Occ3D -> SSC except for Occ3D ``others``, which has no class there: a grid holding
``others`` is rejected unless the caller names the label it becomes (``others_to``).

Grid resampling (:func:`resample`), between grids whose voxel sizes differ by an integer
factor per axis and whose corners are aligned to the finer voxel lattice:

- same voxel size, shifted by whole voxels: crop / pad (exact);
- target voxels ``k`` times smaller: every child takes its parent's label (exact);
- target voxels ``k`` times larger: a reduction, so it needs ``reduce="majority"``: a
  coarse voxel takes the most frequent non-free, non-ignored child label (lowest label on a
  tie); free if it has no such child but a free one; ``fill`` if every child is ignored or
  outside the source.

Target voxels outside the source grid get ``fill`` (required when there are any). Grids
with non-integer size ratios (SurroundOcc 0.5 m vs Occ3D 0.4 m) or misaligned corners are
rejected: any result would be an interpolation, not a conversion.
"""

from __future__ import annotations

import numpy as np

from occ_core.classes import (IGNORE_LABEL, OCC3D_FREE, OCC3D_NUM_CLASSES, OCC3D_TO_OPENOCC,
                              OPENOCC_NUM_CLASSES, OPENOCC_TO_OCC3D)
from occ_core.errors import OccDataError
from occ_core.grid import GridSpec

_SSC_EMPTY = 0


def _lut_apply(labels: np.ndarray, lut: np.ndarray, name: str, space: str) -> np.ndarray:
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise OccDataError(f"{name}: labels must be integers, got {labels.dtype}")
    full = np.full(256, -1, dtype=np.int64)
    full[: len(lut)] = lut
    bad = (labels < 0) | (labels > 255)
    if not bad.any():
        bad = full[labels] < 0
    if bad.any():
        raise OccDataError(f"{name}: labels {np.unique(labels[bad])[:8].tolist()} are not valid {space} labels")
    return full[labels].astype(np.uint8)


def openocc_to_occ3d(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """OpenOcc v2 labels (0-16) -> Occ3D labels (1-17); 255 stays ignore."""
    lut = np.full(256, -1, np.int64)
    lut[:OPENOCC_NUM_CLASSES] = OPENOCC_TO_OCC3D
    lut[IGNORE_LABEL] = IGNORE_LABEL
    return _lut_apply(labels, lut, name, "OpenOcc")


def occ3d_to_openocc(labels: np.ndarray, others_to: int | None = None, name: str = "labels") -> np.ndarray:
    """Occ3D labels (0-17) -> OpenOcc v2 labels (0-16); 255 stays ignore.

    Occ3D ``others`` (0) has no OpenOcc class: if present, ``others_to`` (e.g. 255 or the
    OpenOcc free label 16) must say what it becomes, otherwise OccDataError.
    """
    lut = np.full(256, -1, np.int64)
    lut[:OCC3D_NUM_CLASSES] = OCC3D_TO_OPENOCC.astype(np.int64)
    lut[0] = -1 if others_to is None else others_to
    lut[IGNORE_LABEL] = IGNORE_LABEL
    return _lut_apply(labels, lut, name, "Occ3D (others has no OpenOcc class; pass others_to)")


def ssc_to_occ3d(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Dense SSC labels (0 empty, 1-16, 255 ignore) -> Occ3D (17 free, 1-16, 255)."""
    lut = np.full(256, -1, np.int64)
    lut[1:17] = np.arange(1, 17)
    lut[_SSC_EMPTY] = OCC3D_FREE
    lut[IGNORE_LABEL] = IGNORE_LABEL
    return _lut_apply(labels, lut, name, "SSC")


def occ3d_to_ssc(labels: np.ndarray, others_to: int | None = None, name: str = "labels") -> np.ndarray:
    """Occ3D labels -> dense SSC labels (17 -> 0 empty, 1-16 kept, 255 kept).

    Occ3D ``others`` (0) has no SSC class; see :func:`occ3d_to_openocc` for ``others_to``.
    """
    lut = np.full(256, -1, np.int64)
    lut[1:17] = np.arange(1, 17)
    lut[OCC3D_FREE] = _SSC_EMPTY
    lut[0] = -1 if others_to is None else others_to
    lut[IGNORE_LABEL] = IGNORE_LABEL
    return _lut_apply(labels, lut, name, "Occ3D (others has no SSC class; pass others_to)")


def _ratio(a: float, b: float) -> int | None:
    r = a / b
    k = round(r)
    return k if k >= 1 and abs(r - k) < 1e-6 else None


def resample(labels: np.ndarray, src: GridSpec, dst: GridSpec, free: int, fill: int | None = None,
             reduce: str | None = None, ignore: int = IGNORE_LABEL) -> np.ndarray:
    """Resample a label grid from ``src`` to ``dst`` (both in the same ego frame).

    Args:
        labels: (X, Y, Z) integer labels on ``src``, ``[x, y, z]``.
        free: the free label of this label space (17 Occ3D, 16 OpenOcc, 0 SSC).
        fill: label for target voxels not covered by the source; required if there are any.
        reduce: ``"majority"`` to allow coarsening (see the module docstring); else rejected.
        ignore: a label excluded from the majority vote.

    Returns:
        (X', Y', Z') uint8 labels on ``dst``.

    Raises:
        ValueError: the grids are not related by an integer factor with aligned corners,
            coarsening without ``reduce``, or uncovered target voxels without ``fill``.
    """
    labels = np.asarray(labels)
    if labels.shape != tuple(src.dims):
        raise OccDataError(f"resample: labels have shape {labels.shape}, expected {src.name} {src.dims}")
    up = [_ratio(s, d) for s, d in zip(src.voxel_size, dst.voxel_size)]      # src voxel = k * dst voxel
    down = [_ratio(d, s) for s, d in zip(src.voxel_size, dst.voxel_size)]    # dst voxel = k * src voxel
    idx_axes: list[np.ndarray] = []
    k_axes: list[int] = []
    for a in range(3):
        fine = min(src.voxel_size[a], dst.voxel_size[a])
        off = (dst.range_min[a] - src.range_min[a]) / fine
        if up[a] is None and down[a] is None or abs(off - round(off)) > 1e-6:
            raise ValueError(f"resample {src.name} -> {dst.name}: axis {'xyz'[a]} has voxel sizes {src.voxel_size[a]} / "
                             f"{dst.voxel_size[a]} and corners {src.range_min[a]} / {dst.range_min[a]}: not an integer "
                             "factor with aligned corners, so no well-defined resampling exists")
        off = int(round(off))
        if down[a] is not None and down[a] > 1:
            if reduce != "majority":
                raise ValueError(f"resample {src.name} -> {dst.name}: coarsening by {down[a]} along {'xyz'[a]} is a "
                                 "reduction; pass reduce='majority' to accept that rule")
            k = down[a]
            # child j of target voxel i is source voxel off + i * k + j   (off in source voxels)
            idx = off + np.arange(dst.dims[a])[:, None] * k + np.arange(k)[None, :]
            idx_axes.append(idx.reshape(-1))
            k_axes.append(k)
        else:
            k = up[a]
            # target voxel i (size s/k) lies in source voxel floor((off + i) / k)   (off in target voxels)
            idx_axes.append(np.floor_divide(off + np.arange(dst.dims[a]), k))
            k_axes.append(1)
    inside = [(i >= 0) & (i < n) for i, n in zip(idx_axes, src.dims)]
    covered = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    if not covered.all() and fill is None:
        raise ValueError(f"resample {src.name} -> {dst.name}: {int((~covered).sum())} target voxels lie outside the "
                         "source grid; pass fill= (e.g. 255) to label them")
    clipped = [np.clip(i, 0, n - 1) for i, n in zip(idx_axes, src.dims)]
    out = labels[np.ix_(*clipped)].astype(np.int64)
    if fill is not None:
        out[~covered] = fill
    if max(k_axes) == 1:
        return out.astype(np.uint8)
    # gather children: (X'*kx, Y'*ky, Z'*kz) -> (X', Y', Z', kx*ky*kz)
    X, Y, Z = dst.dims
    kx, ky, kz = k_axes
    ch = out.reshape(X, kx, Y, ky, Z, kz).transpose(0, 2, 4, 1, 3, 5).reshape(X * Y * Z, kx * ky * kz)
    nl = int(max(ch.max(), free, ignore)) + 1
    vote = (ch != free) & (ch != ignore) & ((ch != fill) if fill is not None else True)
    counts = np.zeros((ch.shape[0], nl), dtype=np.int32)
    rows = np.repeat(np.arange(ch.shape[0]), ch.shape[1])
    np.add.at(counts, (rows[vote.reshape(-1)], ch.reshape(-1)[vote.reshape(-1)]), 1)
    has_occ = counts.sum(1) > 0
    res = np.where(has_occ, counts.argmax(1), np.where((ch == free).any(1), free, fill if fill is not None else free))
    return res.reshape(X, Y, Z).astype(np.uint8)
