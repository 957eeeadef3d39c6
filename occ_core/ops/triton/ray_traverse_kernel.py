"""Triton kernel of :mod:`occ_core.ops.ray_traverse`: one program per block of segments, DDA loop
inside, weights atomically added into the per-voxel grids.

The start state comes from the same float64 :func:`~occ_core.ops.ray_traverse.traverse_setup`
as the torch reference and the loop repeats its float64 arithmetic, so both visit the same
voxels; only the order in which the atomics add the weights differs (exact for integer
weights). Imported only when the Triton backend is chosen; CPU tensors need ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from occ_core.grid import GridSpec
from occ_core.ops.ray_traverse import TraverseCounts, TraverseSetup


@triton.jit
def _traverse_kernel(idx_ptr, tmax_ptr, tdelta_ptr, step_ptr, stop_ptr, early_lim_ptr, w_ptr, blocked_ptr,
                     crossed_ptr, early_ptr, A, X, Y, Z, HAS_BLOCKED: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    active = rows < A
    # Per-axis inputs are (3, A), axis-major.
    ix = tl.load(idx_ptr + rows, mask=active, other=0)
    iy = tl.load(idx_ptr + A + rows, mask=active, other=0)
    iz = tl.load(idx_ptr + 2 * A + rows, mask=active, other=0)
    tx = tl.load(tmax_ptr + rows, mask=active, other=0.0)
    ty = tl.load(tmax_ptr + A + rows, mask=active, other=0.0)
    tz = tl.load(tmax_ptr + 2 * A + rows, mask=active, other=0.0)
    dx = tl.load(tdelta_ptr + rows, mask=active, other=0.0)
    dy = tl.load(tdelta_ptr + A + rows, mask=active, other=0.0)
    dz = tl.load(tdelta_ptr + 2 * A + rows, mask=active, other=0.0)
    sx = tl.load(step_ptr + rows, mask=active, other=0)
    sy = tl.load(step_ptr + A + rows, mask=active, other=0)
    sz = tl.load(step_ptr + 2 * A + rows, mask=active, other=0)
    stop = tl.load(stop_ptr + rows, mask=active, other=0.0)
    lim = tl.load(early_lim_ptr + rows, mask=active, other=0.0)
    w = tl.load(w_ptr + rows, mask=active, other=0.0)
    n_active = tl.sum(active.to(tl.int32), axis=0)
    while n_active > 0:
        m = tl.minimum(tl.minimum(tx, ty), tz)  # where the segment leaves its current voxel
        active = active & (m < stop)
        flat = (ix * Y + iy) * Z + iz
        tl.atomic_add(crossed_ptr + flat, w, mask=active)
        tl.atomic_add(early_ptr + flat, w, mask=active & (m <= lim))
        if HAS_BLOCKED:
            b = tl.load(blocked_ptr + flat, mask=active, other=0)
            active = active & (b == 0)  # the blocked voxel was counted: stop
        cx = tx <= m  # exact ties cross together
        cy = ty <= m
        cz = tz <= m
        ix += tl.where(cx, sx, 0)
        iy += tl.where(cy, sy, 0)
        iz += tl.where(cz, sz, 0)
        tx = tl.where(cx, tx + dx, tx)
        ty = tl.where(cy, ty + dy, ty)
        tz = tl.where(cz, tz + dz, tz)
        active = active & (ix >= 0) & (ix < X) & (iy >= 0) & (iy < Y) & (iz >= 0) & (iz < Z)
        n_active = tl.sum(active.to(tl.int32), axis=0)


def ray_traverse_triton(setup: TraverseSetup, grid: GridSpec, blocked: torch.Tensor | None = None,
                        block: int = 128) -> TraverseCounts:
    """Triton twin of :func:`occ_core.ops.ray_traverse.ray_traverse_torch` (same inputs and outputs)."""
    dev = setup.idx.device
    n = grid.num_voxels
    crossed = torch.zeros(n, dtype=torch.float64, device=dev)
    early = torch.zeros(n, dtype=torch.float64, device=dev)
    A = setup.rows.numel()
    if A:
        blk = (torch.zeros(1, dtype=torch.uint8, device=dev) if blocked is None
               else blocked.reshape(-1).contiguous().view(torch.uint8))
        _traverse_kernel[(triton.cdiv(A, block),)](
            setup.idx.contiguous(), setup.t_max.contiguous(), setup.t_delta.contiguous(), setup.step.contiguous(),
            setup.s_stop.contiguous(), setup.s_early.contiguous(), setup.weight.contiguous(), blk, crossed, early,
            A, *grid.dims, HAS_BLOCKED=blocked is not None, BLOCK=block)
    return TraverseCounts(crossed.view(grid.dims), early.view(grid.dims))
