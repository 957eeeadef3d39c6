"""Which voxels of a predicted ego grid a frame actually saw (the map folds in only those).

A camera *sees* a voxel when the voxel's centre projects into its image and the first surface
along that pixel lies no nearer than where the ray to the centre enters the voxel: the
synthetic world's ``mask_camera`` convention
(:func:`occ_core.data.synthetic.groundtruth.camera_visibility`), with the depth images rendered
from the prediction instead of the world: one first-hit ray per pixel of a reduced image
(pixels ``ray_step`` radians apart) through the predicted occupied voxels
(:func:`occ_core.ops.raycast.raycast`, the RayIoU DDA), the depth taken where the ray enters
the hit voxel. Every voxel is tested on its own, so none is skipped between rays. Voxels behind
predicted surfaces or outside every camera are unseen, and the map keeps what it knew about
them. A frame without cameras (a LiDAR-only rig) sees along its LiDAR rays instead: each
return's segment from the sensor, through the voxels it crosses, to the voxel it ends in
(:func:`occ_core.labels.visibility.pass_counts`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from occ_core.classes import OCC3D_FREE
from occ_core.data.synthetic.groundtruth import camera_visibility
from occ_core.frame import SensorFrame
from occ_core.geometry import invert_transform
from occ_core.grid import GridSpec
from occ_core.labels.visibility import end_counts, pass_counts
from occ_core.ops.raycast import raycast

#: Radians between the pixels of the rendered depth images (about 0.4 m at 50 m).
DEFAULT_RAY_STEP = 0.008


def prediction_depth(occupied: torch.Tensor, K: np.ndarray, T_base_from_cam: np.ndarray, width: int, height: int,
                     grid: GridSpec, ray_step: float = DEFAULT_RAY_STEP,
                     backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A z-depth image of the predicted occupancy seen from one camera, at reduced size.

    Args:
        occupied: (X, Y, Z) bool tensor on ``grid`` (base_link).
        K: (3, 3) intrinsics of the (width x height) image; T_base_from_cam: (4, 4) optical
            frame -> base_link.
        ray_step: radians between pixels of the depth image (at the image centre).

    Returns:
        ``(depth, K_small)``: (h, w) float32 metres of z-depth where each pixel's ray enters its
        first occupied voxel (a millimetre inside it), 0 where it meets none; and the (3, 3)
        intrinsics of that image.
    """
    K = np.asarray(K, np.float64)
    step_px = max(1.0, ray_step * float(K[0, 0]))
    w, h = max(1, math.ceil(width / step_px)), max(1, math.ceil(height / step_px))
    Ks = np.diag([1.0 / step_px, 1.0 / step_px, 1.0]) @ K
    U, V = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5, indexing="xy")
    d_cam = np.stack([U.ravel(), V.ravel(), np.ones(U.size)], 1) @ np.linalg.inv(Ks).T
    d_cam /= np.linalg.norm(d_cam, axis=1, keepdims=True)
    T = np.asarray(T_base_from_cam, np.float64)
    d = d_cam @ T[:3, :3].T
    o = np.broadcast_to(T[:3, 3], d.shape)
    hits = raycast(occupied, torch.from_numpy(np.ascontiguousarray(o)), torch.from_numpy(d), grid, backend=backend)
    hit = hits.hit.numpy()
    depth = np.zeros(len(d), np.float64)
    if hit.any():
        vox = hits.voxel.numpy()[hit]
        lo = np.asarray(grid.range_min) + np.asarray(grid.voxel_size) * vox
        hi = lo + np.asarray(grid.voxel_size)
        dh, oh = d[hit], o[hit]
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - oh) / dh, (hi - oh) / dh
        t_enter = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf, neginf=-np.inf).max(axis=1).clip(min=0.0)
        depth[hit] = (t_enter + 1e-3) * d_cam[hit, 2]
    return depth.reshape(h, w).astype(np.float32), Ks


def frame_visibility(labels: np.ndarray, frame: SensorFrame, grid: GridSpec, ray_step: float = DEFAULT_RAY_STEP,
                     backend: str | None = None) -> np.ndarray:
    """(X, Y, Z) bool: the voxels of ``grid`` (base_link) the frame saw, given its predicted ``labels``.

    Args:
        labels: (X, Y, Z) uint8 Occ3D labels (17 = free) predicted for ``frame``.
        frame: the frame (camera intrinsics for its images as given, extrinsics in base_link;
            points in base_link).
        ray_step: radians between the pixels of the rendered depth images.
        backend: of the ray casting (None: ``$OCC_OPS_BACKEND``, numba when installed).
    """
    occupied = torch.from_numpy(np.ascontiguousarray(np.asarray(labels) != OCC3D_FREE))
    depths, Ks, Ts = [], [], []
    for img, K, T in zip(frame.images, frame.intrinsics, frame.T_base_from_cam):
        h, w = np.shape(img)[:2]
        depth, Ks_ = prediction_depth(occupied, K, T, w, h, grid, ray_step, backend)
        depths.append(depth)
        Ks.append(Ks_)
        Ts.append(invert_transform(np.asarray(T, np.float64)))
    if depths:
        return camera_visibility(depths, Ks, Ts, grid)
    pts = np.asarray(frame.points, np.float64)[:, :3]
    if len(pts) == 0:
        return np.zeros(grid.dims, bool)
    start = np.broadcast_to(np.asarray(frame.T_base_from_lidar, np.float64)[:3, 3], pts.shape)
    crossed, _ = pass_counts(start, pts, grid, backend=backend)
    return ((crossed > 0) | (end_counts(pts, grid) > 0)).reshape(grid.dims)
