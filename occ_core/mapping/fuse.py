"""Fusing a scene's predictions over time (``occ-predict --fuse``): keyframes in order through
one :class:`~occ_core.mapping.rolling.RollingSemanticMap`, cleared at each new scene.

Per keyframe: the predictor's labels and scores on the keyframe's ego grid (``base_link``),
what the frame saw (:func:`~occ_core.mapping.visibility.frame_visibility`), the ego pose from
the dataset (``T_global_from_ego`` of the LiDAR sweep; the scene's first pose plays ``odom``).
The fused ego grid is the map's posterior after this keyframe
(:meth:`RollingSemanticMap.update`); voxels the map has never known (never seen, by this frame
or any earlier) keep the frame's own prediction, so the output is a full Occ3D prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occ_core.frame import OccupancyPrediction, SensorFrame
from occ_core.grid import GridSpec
from occ_core.mapping.config import MapConfig
from occ_core.mapping.rolling import UNKNOWN, RollingSemanticMap
from occ_core.mapping.visibility import DEFAULT_RAY_STEP, frame_visibility


@dataclass
class FusedFrame:
    """One fused keyframe.

    Attributes:
        labels: (X, Y, Z) uint8 Occ3D labels of the keyframe's ego grid (17 = free).
        seen: (X, Y, Z) bool, the voxels the keyframe saw.
        from_map: how many voxels the map decided (the others kept the frame's prediction).
    """

    labels: np.ndarray
    seen: np.ndarray
    from_map: int


class SceneFuser:
    """Feeds one scene's keyframes, in order, into a rolling map.

    Args:
        grid: the predictions' ego grid.
        cfg: map settings.
        ray_step: radians between the camera rays of the visibility.
    """

    def __init__(self, grid: GridSpec, cfg: MapConfig | None = None, ray_step: float = DEFAULT_RAY_STEP):
        self.grid = grid
        self.map = RollingSemanticMap(cfg or MapConfig(), grid)
        self.ray_step = ray_step
        self.scene: str | None = None
        self._T_odom_from_global: np.ndarray | None = None

    def step(self, scene: str, pred: OccupancyPrediction, frame: SensorFrame, T_global_from_ego: np.ndarray) -> FusedFrame:
        """Fold one keyframe of ``scene`` in (a new scene name clears the map) and return its fused grid."""
        if scene != self.scene:
            self.map.reset()
            self.scene = scene
            self._T_odom_from_global = np.linalg.inv(np.asarray(T_global_from_ego, np.float64))
        T = self._T_odom_from_global @ np.asarray(T_global_from_ego, np.float64)
        labels = np.asarray(pred.labels, np.uint8)
        seen = frame_visibility(labels, frame, self.grid, self.ray_step)
        fused = self.map.update(labels, pred.scores, seen, T)
        unknown = fused == UNKNOWN
        fused[unknown] = labels[unknown]
        return FusedFrame(fused, seen, int(unknown.size - np.count_nonzero(unknown)))
