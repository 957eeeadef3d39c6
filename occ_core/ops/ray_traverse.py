"""Segment traversal through a voxel grid: per voxel, the summed weights of the segments crossing it.

Used by the label generator (:mod:`occ_core.labels.visibility`): LiDAR rays from the sensor to
each return give ``mask_lidar`` and the free-space carving counts; camera rays stopped at the
first occupied voxel (``blocked``) give ``mask_camera``. One DDA (Amanatides-Woo) with three
backends (see :mod:`occ_core.ops.backend`): the torch reference here (all segments in lockstep),
a numba CPU kernel (:mod:`occ_core.ops.numba.ray_traverse_kernel`, sequential per segment) and
a Triton kernel (:mod:`occ_core.ops.triton.ray_traverse_kernel`, atomic adds into the grids).
All three take the same float64 start state (:func:`traverse_setup`) and step with the same
float64 arithmetic, so they visit the same voxels.

Conventions (those of the label generator; compare :mod:`occ_core.ops.raycast`):

- Grid: (X, Y, Z) voxels indexed ``[x, y, z]`` on a :class:`~occ_core.grid.GridSpec`; voxel
  ``i`` spans ``[min + size * i, min + size * (i + 1))``. Segments, in the grid's frame, are
  parametrised ``p(s) = start + s * (end - start)``, ``s`` in [0, 1], stepped in voxel units.
- A segment *crosses* a voxel when it leaves that voxel at ``s_exit`` before its end
  (``s_exit < 1``) and inside the grid. So the voxel holding ``end`` is never counted (a LiDAR
  return ends in an occupied voxel; the crossed ones are free), and a segment from outside the
  grid counts from where it enters (slab test). Zero-length segments cross nothing.
- The voxel a segment starts in is the one it moves through just after entering:
  ``floor(u)``, or ``ceil(u) - 1`` going down an axis, with ``u = (p - min) / size``.
- A segment exactly through an edge or corner crosses the tied faces at once: it does not
  visit the voxels it only touches there (as the exact segment-box test).
- ``early``: the crossings that leave the voxel ``margin`` metres or more before ``end``
  (``s_exit <= 1 - margin / |end - start|``): free-space carving ignores the last ``margin``
  metres before a return, where the return's own surface may lie.
- ``blocked``: a segment that reaches a blocked voxel counts it (if it leaves it before its
  end) and stops there: first-hit ray casting, as :func:`~occ_core.ops.raycast.raycast`.
  ``mask_camera`` = the voxels camera rays reach up to and including the first occupied one.
- Sums: per voxel, the weights are added in an order that differs between backends (the
  reference by step then segment, numba by segment then step, Triton as the atomics land). The
  results are identical when every partial sum is exact, e.g. integer weights with totals below
  2**53 (the label generator's weights are return counts); otherwise they agree to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from occ_core.grid import GridSpec
from occ_core.ops.backend import resolve_backend


@dataclass
class TraverseCounts:
    """Per-voxel sums of segment weights.

    Attributes:
        crossed: (X, Y, Z) float64, weights of the segments crossing each voxel before their end.
        early: (X, Y, Z) float64, the part of ``crossed`` leaving the voxel at least ``margin``
            metres before the end.
    """

    crossed: torch.Tensor
    early: torch.Tensor


@dataclass
class TraverseSetup:
    """DDA start state of the A segments that cross some voxel (float64; shared by all backends).

    Per-axis quantities are (3, A), rows x, y, z; times are in the segment parameter ``s``.

    Attributes:
        rows: (A,) int64 indices of these segments into the input.
        idx: (3, A) int64 first voxel.
        t_max: (3, A) ``s`` of the next face crossing per axis (``inf`` for a zero component).
        t_delta: (3, A) ``s`` between crossings per axis (``inf`` for a zero component).
        step: (3, A) int64 in {-1, 0, 1}.
        s_stop: (A,) crossings count while ``s_exit < s_stop``: the end (1), or just past where the
            segment leaves the grid, whichever is first.
        s_early: (A,) ``1 - margin / length``: crossings with ``s_exit <= s_early`` count as early.
        weight: (A,) float64.
    """

    rows: torch.Tensor
    idx: torch.Tensor
    t_max: torch.Tensor
    t_delta: torch.Tensor
    step: torch.Tensor
    s_stop: torch.Tensor
    s_early: torch.Tensor
    weight: torch.Tensor


def _check_inputs(start: torch.Tensor, end: torch.Tensor, grid: GridSpec, weights: torch.Tensor | None,
                  margin: float, blocked: torch.Tensor | None) -> None:
    for name, t in (("start", start), ("end", end)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[1] != 3 or not t.is_floating_point():
            raise ValueError(f"ray_traverse: {name} must be a float tensor of shape (R, 3), got "
                             f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    if start.shape[0] != end.shape[0]:
        raise ValueError(f"ray_traverse: start has {start.shape[0]} rows but end has {end.shape[0]}")
    if weights is not None and (not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (start.shape[0],)):
        raise ValueError(f"ray_traverse: weights must be a tensor of shape ({start.shape[0]},), got "
                         f"{tuple(getattr(weights, 'shape', ()))}")
    if not (margin >= 0.0 and margin < float("inf")):
        raise ValueError(f"ray_traverse: margin must be a finite number >= 0 (metres), got {margin!r}")
    if blocked is not None and (not isinstance(blocked, torch.Tensor) or blocked.dtype != torch.bool
                                or tuple(blocked.shape) != tuple(grid.dims)):
        raise ValueError(f"ray_traverse: blocked must be a bool tensor of shape {tuple(grid.dims)} (grid {grid.name!r}), "
                         f"got {getattr(blocked, 'dtype', type(blocked).__name__)} {tuple(getattr(blocked, 'shape', ()))}")


def traverse_setup(start: torch.Tensor, end: torch.Tensor, grid: GridSpec, weights: torch.Tensor | None = None,
                   margin: float = 0.0) -> TraverseSetup:
    """Slab-test entry and DDA start state of each segment (vectorised, float64, on ``start``'s device).

    Args:
        start, end: (R, 3) metres in the grid's frame.
        weights: (R,) or None (1 each).
        margin: metres, for :attr:`TraverseSetup.s_early`.

    Raises:
        ValueError: non-finite coordinates or weights.
    """
    f64 = torch.float64
    dev = start.device
    inf = float("inf")
    s = start.t().to(f64)  # (3, R)
    e = end.to(dev).t().to(f64)
    R = s.shape[1]
    w = torch.ones(R, dtype=f64, device=dev) if weights is None else weights.to(device=dev, dtype=f64)
    bad = ~(torch.isfinite(s).all(0) & torch.isfinite(e).all(0) & torch.isfinite(w))
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(f"ray_traverse: start, end and weights must be finite; bad rows {rows}")
    lo = torch.tensor(grid.range_min, dtype=f64, device=dev)[:, None]
    vs = torch.tensor(grid.voxel_size, dtype=f64, device=dev)[:, None]
    dims = torch.tensor(grid.dims, dtype=torch.int64, device=dev)[:, None]
    u0 = (s - lo) / vs  # (3, R) voxel units
    du = (e - s) / vs
    dm = e - s
    length = ((dm[0] * dm[0] + dm[1] * dm[1]) + dm[2] * dm[2]).sqrt()  # metres
    zero = du == 0
    inv = 1.0 / du  # inf on zero components (patched below)
    s1 = (0.0 - u0) * inv
    s2 = (dims - u0) * inv
    near = torch.minimum(s1, s2)
    far = torch.maximum(s1, s2)
    inside = (u0 >= 0) & (u0 < dims)
    near = torch.where(zero, torch.where(inside, -inf, inf), near)
    far = torch.where(zero, torch.where(inside, inf, -inf), far)
    s_enter = near.amax(0).clamp_min(0.0)
    # + 1e-9: the last voxel inside the grid is left exactly where the segment leaves the grid
    s_stop = torch.clamp_max(far.amin(0) + 1e-9, 1.0)
    rows = ((s_enter < s_stop) & (length > 0)).nonzero().flatten()
    u0, du, inv, s_enter, s_stop = u0[:, rows], du[:, rows], inv[:, rows], s_enter[rows], s_stop[rows]
    u = u0 + s_enter * du
    idx = torch.where(du < 0, torch.ceil(u) - 1, torch.floor(u)).to(torch.int64)
    idx = torch.minimum(idx.clamp_min(0), dims - 1)
    pos = du > 0
    zero = du == 0
    t_max = torch.where(zero, inf, ((idx + pos).to(f64) - u0) * inv)
    t_delta = torch.where(zero, inf, inv.abs())
    step = pos.to(torch.int64) - (du < 0).to(torch.int64)
    s_early = 1.0 - margin / length[rows].clamp_min(1e-12)
    return TraverseSetup(rows, idx, t_max, t_delta, step, s_stop, s_early, w[rows])


def ray_traverse_torch(setup: TraverseSetup, grid: GridSpec, blocked: torch.Tensor | None = None) -> TraverseCounts:
    """Torch reference: all segments step together, one voxel per round (any device).

    Args:
        setup: from :func:`traverse_setup`.
        blocked: (X, Y, Z) bool on the setup's device, or None.
    """
    dev = setup.idx.device
    n = grid.num_voxels
    crossed = torch.zeros(n, dtype=torch.float64, device=dev)
    early = torch.zeros(n, dtype=torch.float64, device=dev)
    X, Y, Z = grid.dims
    blk = None if blocked is None else blocked.reshape(-1)
    ix, iy, iz = setup.idx
    tx, ty, tz = setup.t_max
    dx, dy, dz = setup.t_delta
    sx, sy, sz = setup.step
    s_stop, s_early, w = setup.s_stop, setup.s_early, setup.weight
    while ix.numel():
        m = torch.minimum(torch.minimum(tx, ty), tz)  # where the segment leaves its current voxel
        emit = m < s_stop
        flat = (ix * Y + iy) * Z + iz
        fe = flat[emit]
        crossed.index_add_(0, fe, w[emit])
        early.index_add_(0, fe, torch.where(m <= s_early, w, 0.0)[emit])
        if blk is not None:
            emit &= ~blk[flat]  # the blocked voxel was counted: stop
        cx, cy, cz = tx <= m, ty <= m, tz <= m  # exact ties cross together
        ix, iy, iz = ix + sx * cx, iy + sy * cy, iz + sz * cz
        tx = torch.where(cx, tx + dx, tx)
        ty = torch.where(cy, ty + dy, ty)
        tz = torch.where(cz, tz + dz, tz)
        live = emit & (ix >= 0) & (ix < X) & (iy >= 0) & (iy < Y) & (iz >= 0) & (iz < Z)
        if not bool(live.all()):
            keep = live.nonzero().flatten()
            ix, iy, iz, tx, ty, tz, dx, dy, dz, sx, sy, sz, s_stop, s_early, w = (
                a.index_select(0, keep) for a in (ix, iy, iz, tx, ty, tz, dx, dy, dz, sx, sy, sz, s_stop, s_early, w))
    return TraverseCounts(crossed.view(grid.dims), early.view(grid.dims))


def ray_traverse(start: torch.Tensor, end: torch.Tensor, grid: GridSpec, weights: torch.Tensor | None = None,
                 margin: float = 0.0, blocked: torch.Tensor | None = None, backend: str | None = None) -> TraverseCounts:
    """Per voxel, the summed weights of the segments crossing it before their end (module docstring).

    Args:
        start, end: (R, 3) float, metres in the grid's frame (either may lie outside the grid).
        grid: the voxel grid.
        weights: (R,) float (e.g. how many returns one LiDAR segment stands for); None: 1 each.
        margin: metres, for :attr:`TraverseCounts.early`.
        blocked: (X, Y, Z) bool; a segment stops at the first blocked voxel it reaches (counted).
        backend: ``"auto"``, ``"torch"``, ``"numba"`` or ``"triton"``; None reads ``$OCC_OPS_BACKEND``.

    Returns:
        :class:`TraverseCounts` on ``start``'s device (the other inputs are moved there).
    """
    _check_inputs(start, end, grid, weights, margin, blocked)
    dev = start.device
    if blocked is not None:
        blocked = blocked.to(dev)
    setup = traverse_setup(start, end.to(dev), grid, weights, float(margin))
    choice = resolve_backend(backend, dev, has_numba=True)
    if choice == "numba":
        from occ_core.ops.numba.ray_traverse_kernel import ray_traverse_numba

        return ray_traverse_numba(setup, grid, blocked)
    if choice == "triton":
        from occ_core.ops.triton.ray_traverse_kernel import ray_traverse_triton

        return ray_traverse_triton(setup, grid, blocked)
    return ray_traverse_torch(setup, grid, blocked)
