"""The contract between sensors and models: one synchronized frame in, one occupancy grid out.

The ROS node (:mod:`occ_ros`) builds a :class:`SensorFrame` from messages, the offline data
pipeline builds the same from a nuScenes dataroot, and every predictor maps it to an
:class:`OccupancyPrediction`. Keeping the two paths on one dataclass is what makes the
node's output equal the offline prediction on the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class SensorFrame:
    """One synchronized camera + LiDAR frame of the ego vehicle.

    Attributes:
        stamp_ns: the LiDAR (trigger) timestamp in nanoseconds.
        camera_names: (N,) camera names, e.g. ``CAM_FRONT`` (= their frame ids).
        images: N arrays (H, W, 3) uint8 in RGB order, one per camera (sizes may differ).
        intrinsics: (N, 3, 3) float64 pinhole K of each image as given (pixels).
        T_base_from_cam: (N, 4, 4) float64, camera (optical) frame -> base_link.
        points: (P, 5) float32 ``[x, y, z, intensity, time_lag_s]`` in this frame's
            base_link; past LiDAR sweeps already moved into it (time_lag_s >= 0 is how much
            older the sweep is than ``stamp_ns``; 0 for the current sweep).
        T_base_from_lidar: (4, 4) float64, LiDAR frame -> base_link (for models that work in
            the LiDAR frame).
        ego_pose: (4, 4) float64 base_link at ``stamp_ns`` -> a fixed world frame (nuScenes'
            global frame offline, ``odom`` in the node), or None when no pose is known. Temporal
            models take the ego motion between frames from it
            (``inv(ego_pose_cur) @ ego_pose_prev``); a BEV-augmented training frame carries
            ``ego_pose @ inv(A)`` so that the motion is expressed in the augmented frames.
    """

    stamp_ns: int
    camera_names: tuple[str, ...]
    images: list[np.ndarray]
    intrinsics: np.ndarray
    T_base_from_cam: np.ndarray
    points: np.ndarray
    T_base_from_lidar: np.ndarray
    ego_pose: np.ndarray | None = None


@dataclass
class OccupancyPrediction:
    """A predicted semantic occupancy grid on the predictor's GridSpec (Occ3D by default).

    Attributes:
        labels: (X, Y, Z) uint8 Occ3D labels, 17 = free, indexed [x, y, z] in base_link.
        scores: (X, Y, Z) float32 confidence of the label (softmax probability), in [0, 1].
        flow: (X, Y, Z, 2) float32 velocity in m/s (x, y of base_link), or None.
    """

    labels: np.ndarray
    scores: np.ndarray
    flow: np.ndarray | None = None


class Predictor(Protocol):
    """Anything that turns a :class:`SensorFrame` into an :class:`OccupancyPrediction`.

    Optional attributes a caller may read: ``spec`` (the output :class:`~occ_core.grid.GridSpec`)
    and ``image_hw`` (the camera input (h, w) images may be decoded for, see
    :func:`occ_core.data.transforms.decode_image`; None or absent: full size).
    """

    def predict(self, frame: SensorFrame) -> OccupancyPrediction: ...
