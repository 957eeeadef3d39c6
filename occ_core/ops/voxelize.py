"""Point cloud voxelization: dynamic (mean per voxel) and hard (fixed slots), mmdet3d semantics.

Voxel coordinates follow mmdet3d/OpenPCDet exactly: in the points' dtype (float32),
``c = floor((p - range_min) / voxel_size)`` per axis; a point is in range where
``0 <= c < dims`` on all three axes (so the upper range faces are excluded).

**Coordinate order**: every ``coords`` returned here is ``[z, y, x]`` as mmdet3d's
``Voxelization`` returns it (and as spconv expects after a batch column is prepended), not the
``[x, y, z]`` of :mod:`occ_core.grid`. ``flat = (z * Y + y) * X + x`` with ``(X, Y, Z) =
grid.dims``.

One point cloud per call (batch by calling per sample and prepending the sample index, as
mmdet3d does). The Triton kernels compute the per-point coordinates and the scatter-mean;
``torch.unique``/sorting stays in torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from occ_core.grid import GridSpec
from occ_core.ops.backend import resolve_backend


@dataclass
class PointVoxelCoords:
    """Voxel of each point.

    Attributes:
        coords: (N, 3) int64 ``[z, y, x]``; ``-1`` rows for points out of range.
        flat: (N,) int64 ``(z * Y + y) * X + x``; ``-1`` for points out of range.
    """

    coords: torch.Tensor
    flat: torch.Tensor


@dataclass
class DynamicVoxels:
    """Dynamic voxelization of N points into M occupied voxels.

    Attributes:
        features: (M, C) float, mean of the point rows (all C columns) falling in each voxel.
        coords: (M, 3) int64 ``[z, y, x]``, sorted by ``flat`` (z, then y, then x).
        num_points: (M,) int64 points per voxel.
        point_voxel: (N,) int64 row of each point's voxel in ``features``; -1 out of range.
        point_coords: (N, 3) int64 ``[z, y, x]`` per point (-1 rows out of range), as mmdet3d's
            dynamic voxelization returns.
    """

    features: torch.Tensor
    coords: torch.Tensor
    num_points: torch.Tensor
    point_voxel: torch.Tensor
    point_coords: torch.Tensor


@dataclass
class HardVoxels:
    """Hard voxelization (OpenPCDet/mmdet3d ``hard_voxelize``).

    Attributes:
        voxels: (M, max_points, C) float, the first ``max_points`` points of each voxel in input
            order, zero-padded.
        coords: (M, 3) int64 ``[z, y, x]``; voxels in order of first appearance in the input.
        num_points: (M,) int64 points kept per voxel (<= max_points).
    """

    voxels: torch.Tensor
    coords: torch.Tensor
    num_points: torch.Tensor


def _check_points(points: torch.Tensor) -> None:
    if points.ndim != 2 or points.shape[1] < 3 or not points.is_floating_point():
        raise ValueError(f"voxelize: points must be a float tensor (N, C>=3) with x, y, z first, got "
                         f"{points.dtype} {tuple(points.shape)}")


def _grid_tensors(grid: GridSpec, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lo = torch.tensor(grid.range_min, dtype=dtype, device=device)
    vs = torch.tensor(grid.voxel_size, dtype=dtype, device=device)
    dims = torch.tensor(grid.dims, dtype=torch.int64, device=device)
    return lo, vs, dims


def point_voxel_coords_torch(points: torch.Tensor, grid: GridSpec) -> PointVoxelCoords:
    """Torch reference of :func:`point_voxel_coords`."""
    dtype = points.dtype if points.dtype in (torch.float32, torch.float64) else torch.float32
    lo, vs, dims = _grid_tensors(grid, dtype, points.device)
    c = torch.floor((points[:, :3].to(dtype) - lo) / vs)  # (N, 3) x, y, z, float32 (or float64)
    outside = ((c < 0) | (c >= dims.to(c.dtype))).any(1)
    zyx = c[:, [2, 1, 0]].to(torch.int64).masked_fill_(outside[:, None], -1)
    X, Y, _ = grid.dims
    flat = ((zyx[:, 0] * Y + zyx[:, 1]) * X + zyx[:, 2]).masked_fill_(outside, -1)
    return PointVoxelCoords(zyx, flat)


def point_voxel_coords(points: torch.Tensor, grid: GridSpec, backend: str | None = None) -> PointVoxelCoords:
    """Voxel coordinates ``[z, y, x]`` and flat index of each point of ``points`` (N, C>=3).

    Points are in the grid's frame (x, y, z in the first three columns). See the module
    docstring for the formula; ``backend`` as in :mod:`occ_core.ops.backend`.
    """
    _check_points(points)
    if resolve_backend(backend, points.device) == "triton":
        from occ_core.ops.triton.voxelize_kernel import point_voxel_coords_triton

        return point_voxel_coords_triton(points, grid)
    return point_voxel_coords_torch(points, grid)


def scatter_mean_torch(features: torch.Tensor, index: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of rows of ``features`` (N, C) grouped by ``index`` (N,) in [0, num_rows) or -1 (skipped).

    Returns ``(means (num_rows, C), counts (num_rows,) int64)``.
    """
    keep = index >= 0
    idx = index[keep]
    sums = torch.zeros(num_rows, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, idx, features[keep])
    counts = torch.bincount(idx, minlength=num_rows)
    return sums / counts.clamp_min(1).to(features.dtype)[:, None], counts


def scatter_mean(features: torch.Tensor, index: torch.Tensor, num_rows: int, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group mean of ``features`` (N, C); see :func:`scatter_mean_torch`."""
    if resolve_backend(backend, features.device) == "triton":
        from occ_core.ops.triton.voxelize_kernel import scatter_mean_triton

        return scatter_mean_triton(features, index, num_rows)
    return scatter_mean_torch(features, index, num_rows)


def _unflatten_zyx(flat: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    X, Y, _ = grid.dims
    return torch.stack((flat // (X * Y), (flat // X) % Y, flat % X), dim=1)


def dynamic_voxelize(points: torch.Tensor, grid: GridSpec, backend: str | None = None) -> DynamicVoxels:
    """Dynamic voxelization: every in-range point gets its voxel; features are voxel means.

    Args:
        points: (N, C>=3) float, x, y, z first, in the grid's frame.
        grid: the voxel grid (range and voxel size).
        backend: ``"auto"``/``"torch"``/``"triton"`` (coordinates and scatter-mean).
    """
    pvc = point_voxel_coords(points, grid, backend)
    inside = pvc.flat >= 0
    uniq, inv = torch.unique(pvc.flat[inside], sorted=True, return_inverse=True)
    point_voxel = torch.full_like(pvc.flat, -1)
    point_voxel[inside] = inv
    features, counts = scatter_mean(points, point_voxel, uniq.numel(), backend)
    return DynamicVoxels(features, _unflatten_zyx(uniq, grid), counts, point_voxel, pvc.coords)


def hard_voxelize(points: torch.Tensor, grid: GridSpec, max_points: int, max_voxels: int,
                  backend: str | None = None) -> HardVoxels:
    """Hard voxelization with OpenPCDet/mmdet3d semantics.

    Points are visited in input order: a point in range whose voxel is new opens a voxel if
    fewer than ``max_voxels`` are open (else it is dropped); a point of an open voxel is added if
    that voxel holds fewer than ``max_points``. Vectorised: voxel ids by first appearance,
    slot = rank of the point among earlier points of its voxel (stable sort).

    Args:
        points: (N, C>=3) float, x, y, z first, in the grid's frame.
        grid: the voxel grid.
        max_points: slots per voxel (> 0).
        max_voxels: most voxels kept (> 0).
        backend: for the per-point coordinates.
    """
    if max_points <= 0 or max_voxels <= 0:
        raise ValueError(f"hard_voxelize: max_points and max_voxels must be > 0, got {max_points}, {max_voxels}")
    pvc = point_voxel_coords(points, grid, backend)
    dev = points.device
    N, C = points.shape
    pid = (pvc.flat >= 0).nonzero().flatten()  # in-range points, in input order
    key = pvc.flat[pid]
    if pid.numel() == 0:
        return HardVoxels(points.new_zeros(0, max_points, C), torch.zeros(0, 3, dtype=torch.int64, device=dev),
                          torch.zeros(0, dtype=torch.int64, device=dev))
    uniq, inv = torch.unique(key, return_inverse=True)
    first = torch.full((uniq.numel(),), N, dtype=torch.int64, device=dev)
    first.scatter_reduce_(0, inv, pid, reduce="amin")
    order = torch.argsort(first)  # voxels by first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=dev)
    vid = rank[inv]  # voxel id of each in-range point
    # Slot of each point inside its voxel: position among its voxel's points in input order.
    srt = torch.sort(vid, stable=True)
    starts = torch.searchsorted(srt.values, srt.values, right=False)
    slot = torch.empty_like(vid)
    slot[srt.indices] = torch.arange(vid.numel(), device=dev) - starts
    keep = (vid < max_voxels) & (slot < max_points)
    M = min(order.numel(), max_voxels)
    voxels = points.new_zeros(M, max_points, C)
    voxels[vid[keep], slot[keep]] = points[pid[keep]]
    num_points = torch.bincount(vid[keep], minlength=M)
    coords = _unflatten_zyx(uniq[order[:M]], grid)
    return HardVoxels(voxels, coords, num_points)
