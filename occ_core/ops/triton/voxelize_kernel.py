"""Triton kernels of :mod:`occ_core.ops.voxelize`: per-point voxel coordinates, scatter-mean.

Imported only when the Triton backend is chosen. On CPU tensors they run under
``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from occ_core.grid import GridSpec
from occ_core.ops.voxelize import PointVoxelCoords


@triton.jit
def _coords_kernel(pts_ptr, coords_ptr, flat_ptr, grid_ptr, n, stride_n, X, Y, Z,
                   IS_F64: tl.constexpr, BLOCK: tl.constexpr):
    """coords (N, 3) int64 [z, y, x] and flat (N,) int64, -1 out of range; floor((p - lo) / vs).

    grid_ptr: (6,) [lo_x, lo_y, lo_z, vs_x, vs_y, vs_z] in the points' dtype.
    """
    lo_x = tl.load(grid_ptr + 0)
    lo_y = tl.load(grid_ptr + 1)
    lo_z = tl.load(grid_ptr + 2)
    vs_x = tl.load(grid_ptr + 3)
    vs_y = tl.load(grid_ptr + 4)
    vs_z = tl.load(grid_ptr + 5)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    base = pts_ptr + offs.to(tl.int64) * stride_n
    x = tl.load(base + 0, mask=m, other=0.0)
    y = tl.load(base + 1, mask=m, other=0.0)
    z = tl.load(base + 2, mask=m, other=0.0)
    # Correctly rounded division, as torch divides (Triton's float32 "/" is approximate; its
    # float64 "/" is correctly rounded).
    if IS_F64:
        cx = tl.floor((x - lo_x) / vs_x)
        cy = tl.floor((y - lo_y) / vs_y)
        cz = tl.floor((z - lo_z) / vs_z)
    else:
        cx = tl.floor(tl.div_rn(x - lo_x, vs_x))
        cy = tl.floor(tl.div_rn(y - lo_y, vs_y))
        cz = tl.floor(tl.div_rn(z - lo_z, vs_z))
    inside = (cx >= 0) & (cx < X) & (cy >= 0) & (cy < Y) & (cz >= 0) & (cz < Z)
    ix = tl.where(inside, cx, -1.0).to(tl.int64)
    iy = tl.where(inside, cy, -1.0).to(tl.int64)
    iz = tl.where(inside, cz, -1.0).to(tl.int64)
    flat = tl.where(inside, (iz * Y + iy) * X + ix, -1)
    out = coords_ptr + offs.to(tl.int64) * 3
    tl.store(out + 0, iz, mask=m)
    tl.store(out + 1, iy, mask=m)
    tl.store(out + 2, ix, mask=m)
    tl.store(flat_ptr + offs, flat, mask=m)


def point_voxel_coords_triton(points: torch.Tensor, grid: GridSpec) -> PointVoxelCoords:
    """Triton twin of :func:`occ_core.ops.voxelize.point_voxel_coords_torch`."""
    N = points.shape[0]
    if points.dtype not in (torch.float32, torch.float64):
        points = points.float()
    coords = torch.empty(N, 3, dtype=torch.int64, device=points.device)
    flat = torch.empty(N, dtype=torch.int64, device=points.device)
    if N:
        pts = points if points.stride(1) == 1 else points.contiguous()
        # Range and size in the points' dtype, as the reference computes (float32 for float32 points).
        params = torch.tensor((*grid.range_min, *grid.voxel_size), dtype=pts.dtype, device=pts.device)
        BLOCK = 256
        _coords_kernel[(triton.cdiv(N, BLOCK),)](pts, coords, flat, params, N, pts.stride(0), *grid.dims,
                                                 IS_F64=pts.dtype == torch.float64, BLOCK=BLOCK)
    return PointVoxelCoords(coords, flat)


@triton.jit
def _scatter_add_kernel(feat_ptr, index_ptr, sums_ptr, counts_ptr, n, C, stride_n,
                        BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """sums[index[i], c] += feat[i, c]; counts[index[i]] += 1 (index -1: skipped)."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n
    idx = tl.load(index_ptr + rows, mask=rmask, other=-1)
    ok = rmask & (idx >= 0)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        m2 = ok[:, None] & (cols[None, :] < C)
        v = tl.load(feat_ptr + rows.to(tl.int64)[:, None] * stride_n + cols[None, :], mask=m2, other=0.0)
        tl.atomic_add(sums_ptr + idx[:, None] * C + cols[None, :], v, mask=m2)
    tl.atomic_add(counts_ptr + idx, tl.full([BLOCK_N], 1, tl.int32), mask=ok)


def scatter_mean_triton(features: torch.Tensor, index: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of :func:`occ_core.ops.voxelize.scatter_mean_torch` (float atomics: the
    summation order, hence the last bits, may vary between runs on a GPU)."""
    N, C = features.shape
    dev = features.device
    acc_dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    sums = torch.zeros(num_rows, C, dtype=acc_dtype, device=dev)
    counts = torch.zeros(num_rows, dtype=torch.int32, device=dev)
    if N and num_rows:
        feat = features.to(acc_dtype)
        feat = feat if feat.stride(1) == 1 else feat.contiguous()
        BLOCK_N = 64
        BLOCK_C = max(4, min(64, triton.next_power_of_2(C)))
        _scatter_add_kernel[(triton.cdiv(N, BLOCK_N),)](feat, index.contiguous(), sums, counts, N, C, feat.stride(0),
                                                        BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C)
    counts = counts.to(torch.int64)
    means = (sums / counts.clamp_min(1).to(acc_dtype)[:, None]).to(features.dtype)
    return means, counts
