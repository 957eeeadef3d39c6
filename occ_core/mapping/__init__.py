"""Fusing per-frame predictions over time: a rolling semantic voxel map in ``odom``
(:mod:`occ_core.mapping.rolling`), what a frame saw (:mod:`occ_core.mapping.visibility`), the
scene-by-scene fusion of ``occ-predict --fuse`` (:mod:`occ_core.mapping.fuse`) and a 2D costmap
for planners (:mod:`occ_core.mapping.costmap`). No ROS imports."""

from occ_core.mapping.config import MapConfig
from occ_core.mapping.rolling import UNKNOWN, RollingSemanticMap

__all__ = ["MapConfig", "RollingSemanticMap", "UNKNOWN"]
