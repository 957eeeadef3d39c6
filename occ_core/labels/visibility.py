"""Ray traversal for label generation: which voxels LiDAR and camera rays cross.

- :func:`traverse` walks every voxel a segment crosses (Amanatides-Woo DDA, all segments in
  lockstep with numpy); :func:`pass_counts` counts, per voxel, the segments that cross it
  *before* their end point (a LiDAR ray from its origin to its return passes through free
  space, and ends in an occupied voxel).
- :func:`carve` (free-space carving): a voxel that rays cross many times more often than they
  end in is free. A moving object's points, aggregated as if static, leave a trail of
  voxels that later (or earlier) rays cross: carving removes it without any box.
- :func:`lidar_mask` (Occ3D ``mask_lidar``): voxels some ray crossed or ended in.
- :func:`camera_mask` (Occ3D ``mask_camera``): camera rays cast to the first occupied voxel
  (:func:`occ_core.ops.raycast.raycast`, the project's DDA ray caster); the voxels before it
  and the hit voxel are visible.

All points, origins and grids here are in one frame (a keyframe's base_link); voxels are
given as row-major flat indices ``(ix * Y + iy) * Z + iz`` of the grid.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from occ_core.grid import GridSpec


def _setup(start: np.ndarray, end: np.ndarray, grid: GridSpec, margin: float):
    """DDA start state of each segment, in the segment parameter s in [0, 1] (s = 1 at ``end``).

    Returns ``(rows, idx (3, A) int64, t_max (3, A), t_delta (3, A), step (3, A), s_stop (A,))``
    for the A segments that cross some voxel before ``s_stop``: the end minus ``margin`` metres,
    or where the segment leaves the grid, whichever is first.
    """
    lo = np.asarray(grid.range_min, np.float64)[:, None]
    vs = np.asarray(grid.voxel_size, np.float64)[:, None]
    dims = np.asarray(grid.dims, np.int64)[:, None]
    u0 = (np.asarray(start, np.float64).T - lo) / vs  # (3, R) voxel units
    du = (np.asarray(end, np.float64).T - np.asarray(start, np.float64).T) / vs
    length = np.sqrt((((du * vs)) ** 2).sum(0))  # metres
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / du
        s1 = (0.0 - u0) * inv
        s2 = (dims - u0) * inv
        near = np.minimum(s1, s2)
        far = np.maximum(s1, s2)
        zero = du == 0
        inside = (u0 >= 0) & (u0 < dims)
        near = np.where(zero, np.where(inside, -np.inf, np.inf), near)
        far = np.where(zero, np.where(inside, np.inf, -np.inf), far)
        s_enter = np.maximum(near.max(0), 0.0)
        # + 1e-9: the last voxel inside the grid leaves it exactly at the grid's exit
        s_stop = np.minimum(far.min(0) + 1e-9, 1.0 - margin / np.maximum(length, 1e-12))
    ok = (s_enter < s_stop) & (length > 0)
    rows = np.nonzero(ok)[0]
    u0, du, inv, s_enter, s_stop = u0[:, rows], du[:, rows], inv[:, rows], s_enter[rows], s_stop[rows]
    u = u0 + s_enter * du
    idx = np.where(du < 0, np.ceil(u) - 1, np.floor(u)).astype(np.int64)
    idx = np.minimum(np.maximum(idx, 0), dims - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_max = np.where(du == 0, np.inf, (idx + (du > 0) - u0) * inv)
        t_delta = np.where(du == 0, np.inf, np.abs(inv))
    step = np.sign(du).astype(np.int64)
    return rows, idx, t_max, t_delta, step, s_stop


def traverse(start: np.ndarray, end: np.ndarray, grid: GridSpec, margin: float = 0.0,
             blocked: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The voxels each segment crosses before its end, step by step.

    A voxel is reported for a segment when the segment leaves it before reaching ``end``
    (minus ``margin`` metres) and inside the grid: so the voxel holding ``end`` is never
    reported, nor voxels the segment only touches at an edge or corner.

    Args:
        start, end: (R, 3) metres in the grid's frame (either may lie outside the grid).
        grid: the voxel grid.
        margin: metres before ``end`` where reporting stops.
        blocked: (X * Y * Z,) bool; a segment that enters a blocked voxel reports it and stops
            there (first-hit ray casting, as :func:`occ_core.ops.raycast.raycast` does).

    Yields:
        ``(rows, flat, s_exit)``: (K,) int64 segment indices into ``start``, (K,) int64 flat
        voxel indices and (K,) float64 where the segment leaves that voxel (0 at ``start``,
        1 at ``end``), one triple per voxel crossed, in order along each segment.
    """
    rows, idx, t_max, t_delta, step, s_stop = _setup(start, end, grid, margin)
    X, Y, Z = grid.dims
    ix, iy, iz = idx
    tx, ty, tz = t_max
    dx, dy, dz = t_delta
    sx, sy, sz = step
    while len(rows):
        m = np.minimum(np.minimum(tx, ty), tz)  # where the ray leaves its current voxel
        emit = m < s_stop
        if emit.any():
            yield rows[emit], ((ix[emit] * Y + iy[emit]) * Z + iz[emit]), m[emit]
        if blocked is not None:
            emit &= ~blocked[(ix * Y + iy) * Z + iz]  # the blocked voxel was reported: stop
        cx, cy, cz = tx <= m, ty <= m, tz <= m  # exact ties cross together (as ops.raycast)
        ix = ix + sx * cx
        iy = iy + sy * cy
        iz = iz + sz * cz
        tx = np.where(cx, tx + dx, tx)
        ty = np.where(cy, ty + dy, ty)
        tz = np.where(cz, tz + dz, tz)
        live = emit & (ix >= 0) & (ix < X) & (iy >= 0) & (iy < Y) & (iz >= 0) & (iz < Z)
        if not live.all():
            rows, ix, iy, iz, tx, ty, tz, dx, dy, dz, sx, sy, sz, s_stop = (
                a[live] for a in (rows, ix, iy, iz, tx, ty, tz, dx, dy, dz, sx, sy, sz, s_stop))


def pass_counts(start: np.ndarray, end: np.ndarray, grid: GridSpec, weights: np.ndarray | None = None,
                margin: float = 0.0, chunk: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Per voxel, the summed ``weights`` (default 1) of the segments that cross it before their end.

    Args:
        start, end: (R, 3) segments (a LiDAR origin and its return), metres in the grid's frame.
        weights: (R,) e.g. how many returns one segment stands for.
        margin: metres; the second count leaves out crossings within ``margin`` of the end.

    Returns:
        ``(crossed, crossed_early)``: (X * Y * Z,) float64 each; every crossing (see
        :func:`traverse`), and those that leave the voxel ``margin`` metres or more before the
        end point.
    """
    n = grid.num_voxels
    crossed = np.zeros(n, np.float64)
    early = np.zeros(n, np.float64)
    start = np.asarray(start, np.float64)
    end = np.asarray(end, np.float64)
    R = len(start)
    for a in range(0, R, chunk):
        b = min(R, a + chunk)
        w = np.ones(b - a) if weights is None else np.asarray(weights, np.float64)[a:b]
        limit = 1.0 - margin / np.maximum(np.linalg.norm(end[a:b] - start[a:b], axis=1), 1e-12)
        flats, ws, ews = [], [], []
        for rows, flat, s_exit in traverse(start[a:b], end[a:b], grid):
            flats.append(flat)
            wr = w[rows]
            ws.append(wr)
            ews.append(np.where(s_exit <= limit[rows], wr, 0.0))
        if flats:
            f = np.concatenate(flats)
            crossed += np.bincount(f, np.concatenate(ws), minlength=n)
            early += np.bincount(f, np.concatenate(ews), minlength=n)
    return crossed, early


def end_counts(points: np.ndarray, grid: GridSpec, weights: np.ndarray | None = None) -> np.ndarray:
    """(X * Y * Z,) float64: per voxel, the summed ``weights`` (default 1) of the points (N, 3)
    that lie in it."""
    idx, inside = grid.points_to_voxels(points)
    w = None if weights is None else np.asarray(weights, np.float64)[inside]
    return np.bincount(grid.flat_index(idx[inside]), w, minlength=grid.num_voxels).astype(np.float64)


def carve(occupied: np.ndarray, passes: np.ndarray, ends: np.ndarray, protected: np.ndarray, ratio: float,
          min_passes: float, passes_now: np.ndarray | None = None, now_min: float = 2.0) -> np.ndarray:
    """Free-space carving: which occupied voxels become free.

    Args:
        occupied: (V,) bool, voxels holding aggregated (static) points.
        passes: (V,) rays crossing each voxel before their end (:func:`pass_counts`).
        ends: (V,) rays ending in each voxel (:func:`end_counts`), over the same rays.
        protected: (V,) bool, voxels never carved: those the current scan hits (they are
            occupied now, whatever other times saw), placed objects, the ground
            (:func:`lowest_occupied`).
        ratio, min_passes: carve where ``passes >= min_passes`` and ``passes > ratio * ends``.
        passes_now: (V,) rays of the current scan crossing each voxel: a voxel the current
            scan sees through at least ``now_min`` times is free now, whatever other times saw.

    Returns:
        (V,) bool, the voxels to clear.
    """
    free = (passes >= min_passes) & (passes > ratio * ends)
    if passes_now is not None:
        free |= passes_now >= now_min
    return occupied & ~protected & free


def lowest_occupied(occupied: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: the lowest occupied voxel of each column (the ground, where there is one).

    Carving leaves these alone: rays that graze the ground cross its voxels just before they
    end on it, far more often than they end in any one of them.
    """
    occ = np.asarray(occupied, bool)
    first = np.argmax(occ, axis=2)
    out = np.zeros_like(occ)
    i, j = np.nonzero(occ.any(2))
    out[i, j, first[i, j]] = True
    return out


def lidar_mask(passes: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """Occ3D ``mask_lidar`` (V,) bool: voxels a LiDAR ray crossed, or that hold a return."""
    return (passes > 0) | occupied


def camera_rays(K: np.ndarray, T_base_from_cam: np.ndarray, width: int, height: int,
                step_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Origins and unit directions (R, 3) in base_link of rays through a camera's image, about
    ``step_rad`` apart (a regular pixel lattice covering the whole image).

    Args:
        K: (3, 3) pinhole intrinsics (pixels); T_base_from_cam: (4, 4) optical frame -> base_link.
    """
    K = np.asarray(K, np.float64)
    step_px = max(1.0, step_rad * float(K[0, 0]))
    us = np.arange(step_px / 2, width, step_px)
    vs = np.arange(step_px / 2, height, step_px)
    U, V = np.meshgrid(us, vs, indexing="xy")
    pix = np.stack([U.ravel(), V.ravel(), np.ones(U.size)], 1)
    d_cam = pix @ np.linalg.inv(K).T
    d = d_cam @ np.asarray(T_base_from_cam)[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = np.broadcast_to(np.asarray(T_base_from_cam)[:3, 3], d.shape).copy()
    return o, d


def camera_mask(occupied: np.ndarray, origins: np.ndarray, directions: np.ndarray, grid: GridSpec,
                max_range: float = 200.0) -> np.ndarray:
    """Occ3D ``mask_camera`` (X, Y, Z) bool: the voxels camera rays reach.

    Each ray (origins, directions: (R, 3), base_link) is walked to its first occupied voxel
    (first-hit DDA, the convention of :func:`occ_core.ops.raycast.raycast`); that voxel and
    every voxel the ray crosses before it are visible; a ray that hits nothing makes the voxels
    it crosses up to ``max_range`` visible.
    """
    occ = np.asarray(occupied, bool).reshape(-1)
    vis = np.zeros(grid.num_voxels, bool)
    if len(origins) == 0:
        return vis.reshape(grid.dims)
    d = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    for _, flat, _ in traverse(origins, origins + d * max_range, grid, blocked=occ):
        vis[flat] = True
    return vis.reshape(grid.dims)
