"""Triton kernel of :mod:`occ_core.ops.raycast`: one program per block of rays, DDA loop inside.

The start state (slab entry, first voxel, first crossing times) comes from the same float64
:func:`~occ_core.ops.raycast.ray_setup` as the torch reference; the kernel steps with float32
crossing times exactly as the reference does (all tied axes at once), so both visit the same
voxels; the exit distance of the hit voxel is then recomputed exactly in float64.
Imported only when the Triton backend is chosen; CPU tensors need ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from occ_core.grid import GridSpec
from occ_core.ops.raycast import RayHits, exit_distance, ray_setup


@triton.jit
def _raycast_kernel(occ_ptr, valid_ptr, idx_ptr, tmax_ptr, tdelta_ptr, step_ptr, maxd_ptr, hit_ptr, vox_ptr,
                    R, X, Y, Z, BLOCK: tl.constexpr):
    rays = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rm = rays < R
    r3 = rays.to(tl.int64) * 3
    valid = rm & (tl.load(valid_ptr + rays, mask=rm, other=0) != 0)
    # Per-axis inputs are (3, R), axis-major.
    ix = tl.load(idx_ptr + rays, mask=rm, other=0)
    iy = tl.load(idx_ptr + R + rays, mask=rm, other=0)
    iz = tl.load(idx_ptr + 2 * R + rays, mask=rm, other=0)
    tx = tl.load(tmax_ptr + rays, mask=rm, other=0.0)
    ty = tl.load(tmax_ptr + R + rays, mask=rm, other=0.0)
    tz = tl.load(tmax_ptr + 2 * R + rays, mask=rm, other=0.0)
    dx = tl.load(tdelta_ptr + rays, mask=rm, other=0.0)
    dy = tl.load(tdelta_ptr + R + rays, mask=rm, other=0.0)
    dz = tl.load(tdelta_ptr + 2 * R + rays, mask=rm, other=0.0)
    sx = tl.load(step_ptr + rays, mask=rm, other=0)
    sy = tl.load(step_ptr + R + rays, mask=rm, other=0)
    sz = tl.load(step_ptr + 2 * R + rays, mask=rm, other=0)
    maxd = tl.load(maxd_ptr + rays, mask=rm, other=0.0)

    occ0 = tl.load(occ_ptr + (ix.to(tl.int64) * Y + iy) * Z + iz, mask=valid, other=0)
    hit = valid & (occ0 != 0)
    active = valid & (occ0 == 0)
    hx = tl.where(hit, ix, -1)
    hy = tl.where(hit, iy, -1)
    hz = tl.where(hit, iz, -1)
    n_active = tl.sum(active.to(tl.int32), axis=0)
    while n_active > 0:
        m = tl.minimum(tl.minimum(tx, ty), tz)  # entry time of the next voxel
        ex = tx == m  # every tied axis steps
        ey = ty == m
        ez = tz == m
        ix += tl.where(ex, sx, 0)
        iy += tl.where(ey, sy, 0)
        iz += tl.where(ez, sz, 0)
        tx += tl.where(ex, dx, 0.0)
        ty += tl.where(ey, dy, 0.0)
        tz += tl.where(ez, dz, 0.0)
        inside = (ix >= 0) & (ix < X) & (iy >= 0) & (iy < Y) & (iz >= 0) & (iz < Z)
        active = active & inside & (m < maxd)
        o = tl.load(occ_ptr + (ix.to(tl.int64) * Y + iy) * Z + iz, mask=active, other=0)
        new = active & (o != 0)
        hx = tl.where(new, ix, hx)
        hy = tl.where(new, iy, hy)
        hz = tl.where(new, iz, hz)
        hit = hit | new
        active = active & (o == 0)
        n_active = tl.sum(active.to(tl.int32), axis=0)
    tl.store(hit_ptr + rays, hit.to(tl.int8), mask=rm)
    tl.store(vox_ptr + r3 + 0, hx.to(tl.int64), mask=rm)
    tl.store(vox_ptr + r3 + 1, hy.to(tl.int64), mask=rm)
    tl.store(vox_ptr + r3 + 2, hz.to(tl.int64), mask=rm)


def raycast_triton(occupied: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor, grid: GridSpec,
                   max_distance: float | torch.Tensor | None = None, block: int = 128) -> RayHits:
    """Triton twin of :func:`occ_core.ops.raycast.raycast_torch` (same inputs and outputs)."""
    dev = occupied.device
    R = origins.shape[0]
    hit8 = torch.zeros(R, dtype=torch.int8, device=dev)
    voxel = torch.full((R, 3), -1, dtype=torch.int64, device=dev)
    distance = torch.full((R,), float("inf"), dtype=torch.float32, device=dev)
    if R == 0:
        return RayHits(hit8.bool(), distance, voxel)
    s = ray_setup(origins, directions, grid, max_distance)
    occ = occupied.contiguous().view(torch.uint8)
    t_delta = s.t_delta.nan_to_num(posinf=0.0).to(torch.float32)  # 0 on zero components, as the reference
    _raycast_kernel[(triton.cdiv(R, block),)](
        occ, s.valid.to(torch.uint8), s.idx.to(torch.int32).contiguous(), s.t_max.to(torch.float32).contiguous(),
        t_delta, s.step.to(torch.int32).contiguous(), s.max_distance.to(torch.float32).contiguous(), hit8, voxel,
        R, *grid.dims, BLOCK=block)
    hit = hit8.bool()
    rows = hit.nonzero().flatten()
    if rows.numel():
        distance[rows] = exit_distance(s, rows, voxel[rows], grid).to(torch.float32)
    return RayHits(hit, distance, voxel)
