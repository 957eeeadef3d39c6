"""Numba CPU kernel of :mod:`occ_core.ops.raycast`: one ray after the other, first-hit DDA loop inside.

The start state (slab entry, first voxel, first crossing times) comes from the same float64
:func:`~occ_core.ops.raycast.ray_setup` as the torch reference; the kernel steps with crossing
times in ``step_dtype`` exactly as the reference and the Triton kernel do (all tied axes at
once, one addition per crossing), so all three visit the same voxels for the same
``step_dtype`` (float32 by default, as the reference). The exit distance of the hit voxel is
recomputed exactly in float64 (:func:`~occ_core.ops.raycast.exit_distance`). Sequential (see
:mod:`occ_core.ops.numba.ray_traverse_kernel`). Imported only when the numba backend is chosen.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from occ_core.grid import GridSpec
from occ_core.ops.raycast import RayHits, exit_distance, ray_setup


@njit(cache=True, nogil=True)
def _raycast(occ, valid, idx, t_max, t_delta, step, maxd, X, Y, Z, hit, vox):
    for r in range(valid.shape[0]):
        if not valid[r]:
            continue
        ix, iy, iz = idx[0, r], idx[1, r], idx[2, r]
        if occ[(ix * Y + iy) * Z + iz]:  # occupied start voxel: hit at once
            hit[r] = True
            vox[r, 0], vox[r, 1], vox[r, 2] = ix, iy, iz
            continue
        tx, ty, tz = t_max[0, r], t_max[1, r], t_max[2, r]
        dx, dy, dz = t_delta[0, r], t_delta[1, r], t_delta[2, r]
        sx, sy, sz = step[0, r], step[1, r], step[2, r]
        md = maxd[r]
        while True:
            m = min(min(tx, ty), tz)  # entry time of the next voxel
            if tx == m:  # every tied axis steps
                ix += sx
                tx += dx
            if ty == m:
                iy += sy
                ty += dy
            if tz == m:
                iz += sz
                tz += dz
            if ix < 0 or ix >= X or iy < 0 or iy >= Y or iz < 0 or iz >= Z or not m < md:
                break
            if occ[(ix * Y + iy) * Z + iz]:
                hit[r] = True
                vox[r, 0], vox[r, 1], vox[r, 2] = ix, iy, iz
                break


def raycast_numba(occupied: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor, grid: GridSpec,
                  max_distance: float | torch.Tensor | None = None,
                  step_dtype: torch.dtype = torch.float32) -> RayHits:
    """Numba twin of :func:`occ_core.ops.raycast.raycast_torch` (same inputs and outputs, CPU tensors)."""
    R = origins.shape[0]
    hit = np.zeros(R, np.bool_)
    voxel = np.full((R, 3), -1, np.int64)
    distance = torch.full((R,), float("inf"), dtype=torch.float32)
    if R == 0:
        return RayHits(torch.from_numpy(hit), distance, torch.from_numpy(voxel))
    s = ray_setup(origins, directions, grid, max_distance)
    occ = occupied.reshape(-1).contiguous().numpy()
    t_delta = s.t_delta.nan_to_num(posinf=0.0).to(step_dtype)  # 0 on zero components, as the reference
    if max_distance is None:
        maxd = torch.full((R,), float("inf"), dtype=step_dtype)
    else:
        maxd = s.max_distance.to(step_dtype)
    _raycast(occ, s.valid.numpy(), s.idx.contiguous().numpy(), s.t_max.to(step_dtype).contiguous().numpy(),
             t_delta.contiguous().numpy(), s.step.contiguous().numpy(), maxd.contiguous().numpy(), *grid.dims, hit, voxel)
    hit_t, voxel_t = torch.from_numpy(hit), torch.from_numpy(voxel)
    rows = hit_t.nonzero().flatten()
    if rows.numel():
        distance[rows] = exit_distance(s, rows, voxel_t[rows], grid).to(torch.float32)
    return RayHits(hit_t, distance, voxel_t)
