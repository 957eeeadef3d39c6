"""First-hit ray casting through an occupancy grid (Amanatides-Woo DDA).

Used by the RayIoU metric (SparseOcc: first occupied voxel along each LiDAR-like ray, distance
at the *exit* of that voxel). Backends: the torch reference, a numba CPU kernel
(:mod:`occ_core.ops.numba.raycast_kernel`) and a Triton kernel, all from one float64 start
state (:func:`ray_setup`). The label generator's masks use the same DDA as a traversal that
counts every voxel crossed (:mod:`occ_core.ops.ray_traverse`).

Conventions:

- ``occupied`` is an (X, Y, Z) bool grid indexed ``[x, y, z]`` on a
  :class:`occ_core.grid.GridSpec`; voxel ``i`` spans ``[min + size * i, min + size * (i + 1))``.
- Rays ``p(t) = origin + t * direction / |direction|`` with ``t >= 0`` in metres, in the grid's
  frame. The DDA walks the voxels the ray passes through in order, in voxel units as
  SparseOcc/DVR do; crossing times are kept in metres, so anisotropic voxels are exact.
- A ray starting outside the grid enters it at the slab-test entry point (or misses).
- The start voxel is the one the ray travels through just after ``t_enter`` (for an origin on
  a voxel face with the ray leaving through it, the voxel it moves into), found from
  ``(p - min) / size`` as :meth:`GridSpec.points_to_voxels` does (so "on a face" is decided up
  to the rounding of that division). An occupied start voxel is a hit (distance: its exit).
- ``max_distance``: voxels *entered* at ``t < max_distance`` are considered; the distance
  reported is still the exit of the hit voxel (it may exceed ``max_distance``).
- A ray exactly through an edge or corner crosses the tied faces at once (it does not visit
  the voxels it only touches there), as the exact ray-box test does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from occ_core.grid import GridSpec
from occ_core.ops.backend import resolve_backend

# Codes in the padded grid of the torch reference.
_FREE, _OCC, _OUT = 0, 1, 2


@dataclass
class RayHits:
    """First hits of R rays.

    Attributes:
        hit: (R,) bool, the ray met an occupied voxel inside the grid (within max_distance).
        distance: (R,) float32, metres from the origin to the EXIT point of the first occupied
            voxel along the ray; ``+inf`` where no hit.
        voxel: (R, 3) int64 ``[ix, iy, iz]`` of that voxel; ``-1`` where no hit.
    """

    hit: torch.Tensor
    distance: torch.Tensor
    voxel: torch.Tensor


def _check_inputs(occupied: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor, grid: GridSpec) -> None:
    if occupied.dtype != torch.bool or tuple(occupied.shape) != tuple(grid.dims):
        raise ValueError(f"raycast: occupied must be a bool tensor of shape {tuple(grid.dims)} (grid {grid.name!r}), "
                         f"got {occupied.dtype} {tuple(occupied.shape)}")
    for name, t in (("origins", origins), ("directions", directions)):
        if t.ndim != 2 or t.shape[1] != 3 or not t.is_floating_point():
            raise ValueError(f"raycast: {name} must be a float tensor of shape (R, 3), got {t.dtype} {tuple(t.shape)}")
    if origins.shape[0] != directions.shape[0]:
        raise ValueError(f"raycast: origins has {origins.shape[0]} rows but directions has {directions.shape[0]}")


@dataclass
class RaySetup:
    """Per-ray DDA start state shared by the torch reference and the Triton kernel (float64).

    Per-axis quantities are stored axis-major, (3, R) = rows x, y, z (structure of arrays:
    broadcasting against per-axis grid constants then runs over the long ray dimension).

    Attributes:
        valid: (R,) bool, the ray enters the grid before ``max_distance``.
        t_enter: (R,) metres at which the ray enters the grid (0 for origins inside).
        idx: (3, R) int64 start voxel (meaningful where valid).
        step: (3, R) int64 in {-1, 0, 1}.
        t_max: (3, R) metres of the next face crossing per axis (``inf`` for a zero component).
        t_delta: (3, R) metres between crossings per axis (``inf`` for a zero component).
        max_distance: (R,) metres (``inf`` when unlimited).
        origin: (3, R) metres.
        direction: (3, R) unit directions.
    """

    valid: torch.Tensor
    t_enter: torch.Tensor
    idx: torch.Tensor
    step: torch.Tensor
    t_max: torch.Tensor
    t_delta: torch.Tensor
    max_distance: torch.Tensor
    origin: torch.Tensor
    direction: torch.Tensor


def ray_setup(origins: torch.Tensor, directions: torch.Tensor, grid: GridSpec,
              max_distance: float | torch.Tensor | None = None) -> RaySetup:
    """Slab-test entry and DDA start state of each ray (vectorised, float64).

    Args:
        origins, directions: (R, 3) metres in the grid's frame; directions need not be unit.
        grid: the voxel grid.
        max_distance: metres, a float or an (R,) tensor; None for unlimited.
    """
    dev = origins.device
    f64 = torch.float64
    R = origins.shape[0]
    o = torch.empty(3, R, dtype=f64, device=dev).copy_(origins.t())  # (3, R)
    d = torch.empty(3, R, dtype=f64, device=dev).copy_(directions.t())
    norm = (d * d).sum(0).sqrt_()
    bad = ~(torch.isfinite(norm) & (norm > 0)) | ~torch.isfinite(o).all(0)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(f"raycast: origins must be finite and directions finite and non-zero; bad rows {rows}")
    d /= norm
    lo = torch.tensor(grid.range_min, dtype=f64, device=dev)[:, None]
    vs = torch.tensor(grid.voxel_size, dtype=f64, device=dev)[:, None]
    dims = torch.tensor(grid.dims, dtype=torch.int64, device=dev)[:, None]
    hi = lo + vs * dims.to(f64)
    zero = d == 0
    has_zero = bool(zero.any())  # rays along axes or in axis planes: patch those components
    pos = d > 0
    inf = float("inf")
    inv = 1.0 / d  # +-inf on zero components
    t1 = (lo - o) * inv
    t2 = (hi - o) * inv
    t_near = torch.minimum(t1, t2)
    t_far = torch.maximum(t1, t2)
    if has_zero:  # slab of a zero component: everything or nothing, origin in [lo, hi)
        inside_axis = (o >= lo) & (o < hi)
        t_near = torch.where(zero, torch.where(inside_axis, -inf, inf), t_near)
        t_far = torch.where(zero, torch.where(inside_axis, inf, -inf), t_far)
    t_enter = t_near.amax(0).clamp_min_(0.0)
    t_exit = t_far.amin(0)
    if max_distance is None:
        maxd = torch.full((R,), inf, dtype=f64, device=dev)
    else:
        maxd = torch.as_tensor(max_distance, dtype=f64, device=dev).expand(R)
    valid = (t_enter < t_exit) & (t_enter < maxd)

    u = (torch.addcmul(o, t_enter, d) - lo) / vs  # voxel units at the entry point
    # The voxel the ray moves through just after t_enter: floor, or ceil - 1 going down an axis.
    idx = torch.where(d < 0, torch.ceil(u) - 1, torch.floor(u)).to(torch.int64)
    idx = torch.minimum(idx.clamp_min_(0), dims - 1)
    boundary = lo + vs * (idx + pos).to(f64)  # next face in metres
    t_max = (boundary - o) * inv
    if has_zero:
        t_max = torch.where(zero, inf, t_max)
    t_delta = vs * inv.abs()  # inf on zero components
    step = pos.to(torch.int64) - (d < 0).to(torch.int64)
    return RaySetup(valid, t_enter, idx, step, t_max, t_delta, maxd, o, d)


def exit_distance(setup: RaySetup, rows: torch.Tensor, voxel: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Exact distance (float64 metres) at which rays ``rows`` (K,) leave voxels ``voxel`` (K, 3)."""
    dev = voxel.device
    lo = torch.tensor(grid.range_min, dtype=torch.float64, device=dev)[:, None]
    vs = torch.tensor(grid.voxel_size, dtype=torch.float64, device=dev)[:, None]
    d = setup.direction.index_select(1, rows)  # (3, K)
    face = lo + vs * (voxel.t() + (d > 0)).to(torch.float64)
    t = (face - setup.origin.index_select(1, rows)) / d  # +-inf or nan on zero components
    return torch.where(d == 0, float("inf"), t).amin(0)


def raycast_torch(occupied: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor, grid: GridSpec,
                  max_distance: float | torch.Tensor | None = None, block: int = 8,
                  step_dtype: torch.dtype = torch.float32) -> RayHits:
    """Torch reference of :func:`raycast` (any device).

    All live rays step together, ``block`` voxels per round without any bookkeeping (the grid
    is padded by ``block`` voxels of "outside", so a ray that left keeps stepping harmlessly);
    after each round the first stop of every ray is read from the round's record and finished
    rays are compacted away. Crossing times accumulate in ``step_dtype`` (float32: half the
    memory traffic; the order of two crossings closer than ~1e-5 m may differ from exact
    arithmetic); the reported exit distances are recomputed exactly in float64.
    """
    _check_inputs(occupied, origins, directions, grid)
    dev = occupied.device
    R = origins.shape[0]
    hit = torch.zeros(R, dtype=torch.bool, device=dev)
    distance = torch.full((R,), float("inf"), dtype=torch.float32, device=dev)
    voxel = torch.full((R, 3), -1, dtype=torch.int64, device=dev)
    if R == 0:
        return RayHits(hit, distance, voxel)

    s = ray_setup(origins, directions, grid, max_distance)
    K = int(block)
    X, Y, Z = grid.dims
    PX, PY, PZ = X + 2 * K, Y + 2 * K, Z + 2 * K
    if PX * PY * PZ >= 2**31 or PY * PZ >= 2**24:
        raise ValueError(f"raycast: grid {grid.name!r} {grid.dims} is too large for int32 flat indices")
    padded = torch.full((PX * PY * PZ,), _OUT, dtype=torch.uint8, device=dev)
    padded.view(PX, PY, PZ)[K:-K, K:-K, K:-K] = occupied.to(torch.uint8)
    strides = torch.tensor([PY * PZ, PZ, 1], dtype=torch.int64, device=dev)

    def unravel(flat: torch.Tensor) -> torch.Tensor:
        return torch.stack((flat // (PY * PZ) - K, (flat // PZ) % PY - K, flat % PZ - K), dim=1)

    def record(rows: torch.Tensor, vox: torch.Tensor) -> None:
        hit[rows] = True
        voxel[rows] = vox
        distance[rows] = exit_distance(s, rows, vox, grid).to(torch.float32)

    ray_id = s.valid.nonzero().flatten()
    idx0 = s.idx.index_select(1, ray_id)
    flat = ((idx0 + K) * strides[:, None]).sum(0).to(torch.int32)  # flat index in the padded grid
    start_hit = padded.index_select(0, flat) == _OCC  # occupied start voxel: hit at once
    if bool(start_hit.any()):
        record(ray_id[start_hit], idx0[:, start_hit].t())
        keep = (~start_hit).nonzero().flatten()
        ray_id, flat = ray_id[keep], flat[keep]
    # Structure of arrays (3, A): next crossing time, time between crossings, flat-index step.
    fdt = step_dtype
    T = s.t_max.index_select(1, ray_id).to(fdt)
    Dt = s.t_delta.index_select(1, ray_id).nan_to_num_(posinf=0.0).to(fdt)  # 0 on zero components
    S = (s.step.index_select(1, ray_id) * strides[:, None]).to(fdt)  # exact: strides < 2**24 (checked)
    limited = max_distance is not None
    maxd = s.max_distance[ray_id].to(fdt) if limited else None

    countdown = torch.arange(K, 0, -1, dtype=torch.uint8, device=dev)[:, None]  # (K, 1): K, ..., 1
    while ray_id.numel() > 0:
        A = ray_id.numel()
        M = torch.empty(K, A, dtype=fdt, device=dev)  # entry time of the voxel of each step
        F = torch.empty(K, A, dtype=torch.int32, device=dev)  # its flat index
        C = torch.empty(K, A, dtype=torch.uint8, device=dev)  # its code
        prev = flat
        e = torch.empty(3, A, dtype=fdt, device=dev)
        for k in range(K):
            m = torch.minimum(torch.minimum(T[0], T[1], out=M[k]), T[2], out=M[k])
            torch.eq(T, m, out=e)  # 1.0 on the axes crossed now (all of them on an exact tie)
            T.addcmul_(Dt, e)
            torch.add(prev, torch.linalg.vecdot(S, e, dim=0).to(torch.int32), out=F[k])
            prev = F[k]
            torch.index_select(padded, 0, prev, out=C[k])
        flat = prev.clone()
        stop = C != _FREE
        if limited:
            stop |= M >= maxd
        done = stop.any(0)
        fin = done.nonzero().flatten()
        if fin.numel():
            # First stop within the round: K - max_k(stop_k * (K - k)); then read the record there.
            first = K - (stop.index_select(1, fin) * countdown).amax(0).to(torch.int64)
            at = first * A + fin
            is_hit = C.view(-1).take(at) == _OCC
            if limited:
                is_hit &= M.view(-1).take(at) < maxd.index_select(0, fin)
            if bool(is_hit.any()):
                record(ray_id.index_select(0, fin[is_hit]), unravel(F.view(-1).take(at[is_hit]).to(torch.int64)))
            keep = (~done).nonzero().flatten()
            ray_id, flat = ray_id.index_select(0, keep), flat.index_select(0, keep)
            T, Dt, S = T.index_select(1, keep), Dt.index_select(1, keep), S.index_select(1, keep)
            if limited:
                maxd = maxd.index_select(0, keep)
    return RayHits(hit, distance, voxel)


def raycast(occupied: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor, grid: GridSpec,
            max_distance: float | torch.Tensor | None = None, backend: str | None = None) -> RayHits:
    """First occupied voxel along each ray, with the distance to its exit point.

    Args:
        occupied: (X, Y, Z) bool, indexed ``[x, y, z]`` on ``grid``.
        origins: (R, 3) float, metres in the grid's frame; may lie outside the grid.
        directions: (R, 3) float, need not be normalised (normalised here); non-zero.
        grid: the :class:`~occ_core.grid.GridSpec` of ``occupied``.
        max_distance: metres (float, or (R,) tensor per ray); None for unlimited. Voxels entered
            at ``t < max_distance`` count.
        backend: ``"auto"``, ``"torch"``, ``"numba"`` or ``"triton"``; None reads
            ``$OCC_OPS_BACKEND``. All backends step crossing times in float32 and visit the same
            voxels (on CPU, ``"auto"`` runs the numba kernel when numba is installed).

    Returns:
        :class:`RayHits` on ``occupied``'s device (rays are moved there).
    """
    _check_inputs(occupied, origins, directions, grid)
    origins, directions = origins.to(occupied.device), directions.to(occupied.device)
    choice = resolve_backend(backend, occupied.device, has_numba=True)
    if choice == "triton":
        from occ_core.ops.triton.raycast_kernel import raycast_triton

        return raycast_triton(occupied, origins, directions, grid, max_distance)
    if choice == "numba":
        from occ_core.ops.numba.raycast_kernel import raycast_numba

        return raycast_numba(occupied, origins, directions, grid, max_distance)
    return raycast_torch(occupied, origins, directions, grid, max_distance)
