"""Numba CPU kernel of :mod:`occ_core.ops.ray_traverse`: one segment after the other, DDA loop inside.

The start state comes from the same float64 :func:`~occ_core.ops.ray_traverse.traverse_setup`
as the torch reference, and the loop repeats the reference's float64 arithmetic (the minimum of
the three crossing times, ``<`` against ``s_stop``, ``<=`` for ties, one addition per
crossing), so both visit the same voxels. Sequential on purpose: occ-label parallelises over
scenes with forked processes (numba's GNU OpenMP threading layer is not fork-safe), and the sums
stay in one fixed order (segment by segment). Imported only when the numba backend is chosen;
compiled code is cached next to this file (or in numba's user cache).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from occ_core.grid import GridSpec
from occ_core.ops.ray_traverse import TraverseCounts, TraverseSetup


@njit(cache=True, nogil=True)
def _traverse(idx, t_max, t_delta, step, s_stop, s_early, weight, X, Y, Z, blocked, use_blocked, crossed, early):
    for r in range(idx.shape[1]):
        ix, iy, iz = idx[0, r], idx[1, r], idx[2, r]
        tx, ty, tz = t_max[0, r], t_max[1, r], t_max[2, r]
        dx, dy, dz = t_delta[0, r], t_delta[1, r], t_delta[2, r]
        sx, sy, sz = step[0, r], step[1, r], step[2, r]
        stop, lim, w = s_stop[r], s_early[r], weight[r]
        while True:
            m = min(min(tx, ty), tz)  # where the segment leaves its current voxel
            if not m < stop:
                break
            f = (ix * Y + iy) * Z + iz
            crossed[f] += w
            if m <= lim:
                early[f] += w
            if use_blocked and blocked[f]:
                break
            if tx <= m:  # exact ties cross together
                ix += sx
                tx += dx
            if ty <= m:
                iy += sy
                ty += dy
            if tz <= m:
                iz += sz
                tz += dz
            if ix < 0 or ix >= X or iy < 0 or iy >= Y or iz < 0 or iz >= Z:
                break


def ray_traverse_numba(setup: TraverseSetup, grid: GridSpec, blocked: torch.Tensor | None = None) -> TraverseCounts:
    """Numba twin of :func:`occ_core.ops.ray_traverse.ray_traverse_torch` (CPU tensors in and out)."""
    n = grid.num_voxels
    crossed = np.zeros(n, np.float64)
    early = np.zeros(n, np.float64)
    blk = np.zeros(1, np.bool_) if blocked is None else blocked.reshape(-1).contiguous().numpy()
    if setup.rows.numel():
        _traverse(setup.idx.contiguous().numpy(), setup.t_max.contiguous().numpy(), setup.t_delta.contiguous().numpy(),
                  setup.step.contiguous().numpy(), setup.s_stop.contiguous().numpy(), setup.s_early.contiguous().numpy(),
                  setup.weight.contiguous().numpy(), *grid.dims, blk, blocked is not None, crossed, early)
    return TraverseCounts(torch.from_numpy(crossed).view(grid.dims), torch.from_numpy(early).view(grid.dims))
