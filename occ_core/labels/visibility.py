"""Ray traversal for label generation: which voxels LiDAR and camera rays cross.

- :func:`pass_counts` counts, per voxel, the segments that cross it *before* their end point
  (a LiDAR ray from its origin to its return passes through free space, and ends in an
  occupied voxel): :func:`occ_core.ops.ray_traverse.ray_traverse`, the project's DDA
  traversal (torch reference, numba CPU kernel, Triton GPU kernel).
- :func:`carve` (free-space carving): a voxel that rays cross many times more often than they
  end in is free. A moving object's points, aggregated as if static, leave a trail of
  voxels that later (or earlier) rays cross: carving removes it without any box.
- :func:`lidar_mask` (Occ3D ``mask_lidar``): voxels some ray crossed or ended in.
- :func:`camera_mask` (Occ3D ``mask_camera``): camera rays cast to the first occupied voxel
  (the same traversal with ``blocked``; the first-hit convention of
  :func:`occ_core.ops.raycast.raycast`); the voxels before it and the hit voxel are visible.

All points, origins and grids here are in one frame (a keyframe's base_link); voxels are
given as row-major flat indices ``(ix * Y + iy) * Z + iz`` of the grid.
"""

from __future__ import annotations

import numpy as np
import torch

from occ_core.grid import GridSpec
from occ_core.ops.ray_traverse import ray_traverse


def pass_counts(start: np.ndarray, end: np.ndarray, grid: GridSpec, weights: np.ndarray | None = None,
                margin: float = 0.0, backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per voxel, the summed ``weights`` (default 1) of the segments that cross it before their end.

    Args:
        start, end: (R, 3) segments (a LiDAR origin and its return), metres in the grid's frame.
        weights: (R,) e.g. how many returns one segment stands for.
        margin: metres; the second count leaves out crossings within ``margin`` of the end.
        backend: of :func:`occ_core.ops.ray_traverse.ray_traverse` (None: ``$OCC_OPS_BACKEND``,
            default ``auto``: the numba kernel when numba is installed).

    Returns:
        ``(crossed, crossed_early)``: (X * Y * Z,) float64 each; every crossing (see
        :mod:`occ_core.ops.ray_traverse` for the conventions), and those that leave the voxel
        ``margin`` metres or more before the end point.
    """
    w = None if weights is None else torch.from_numpy(np.ascontiguousarray(weights, np.float64))
    res = ray_traverse(_tensor(start), _tensor(end), grid, w, margin=margin, backend=backend)
    return res.crossed.reshape(-1).numpy(), res.early.reshape(-1).numpy()


def _tensor(points: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(points, np.float64).reshape(-1, 3))


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
                max_range: float = 200.0, backend: str | None = None) -> np.ndarray:
    """Occ3D ``mask_camera`` (X, Y, Z) bool: the voxels camera rays reach.

    Each ray (origins, directions: (R, 3), base_link) is walked to its first occupied voxel
    (first-hit DDA, the convention of :func:`occ_core.ops.raycast.raycast`); that voxel and
    every voxel the ray crosses before it are visible; a ray that hits nothing makes the voxels
    it crosses up to ``max_range`` visible. ``backend``: as in :func:`pass_counts`.
    """
    occ = torch.from_numpy(np.ascontiguousarray(occupied, bool).reshape(grid.dims))
    if len(origins) == 0:
        return np.zeros(grid.dims, bool)
    d = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    res = ray_traverse(_tensor(origins), _tensor(origins + d * max_range), grid, blocked=occ, backend=backend)
    return res.crossed.numpy() > 0
