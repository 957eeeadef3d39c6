"""Occupancy label generation from LiDAR (no ROS): the occupancy-for-nuscenes, SurroundOcc and
Occ3D pipelines as plain functions over dataclasses.

Stages, in order: :mod:`.scene` (sweep loading, ego-body removal), :mod:`.aggregate`
(static/dynamic split by boxes, per-instance accumulation in box coordinates, 1-NN semantics,
majority vote, per-voxel flow), :mod:`.visibility` (ray traversal, free-space carving,
``mask_lidar``, ``mask_camera``); :mod:`.pipeline` runs them per keyframe, :mod:`.outputs`
writes Occ3D, OpenOcc v2, SurroundOcc or OpenOccupancy files, :mod:`.cli` is ``occ-label``
(a process pool, or Ray tasks through :mod:`.ray_runner`).
"""

from occ_core.labels.config import LabelConfig

__all__ = ["LabelConfig"]
