"""The node's rolling map (issue 19): folds each frame's prediction into an
:class:`occ_core.mapping.RollingSemanticMap` in ``odom`` and builds the map messages.

:class:`NodeMap` is what the node holds: the worker thread calls :meth:`NodeMap.integrate`
after publishing a frame; the map timer calls :meth:`NodeMap.snapshot` and turns it into

- ``/occupancy/map``: occ_ros_msgs/SemanticOccupancyGrid of the window in ``map_frame``
  (labels: Occ3D classes, 17 free, 18 unknown, ``class_set`` ``occ3d+unknown``);
- ``/occupancy/map_cloud``: PointCloud2 of its occupied voxels (x, y, z, label, score, rgb) for
  RViz and Foxglove, which cannot draw the custom message;
- ``/occupancy/costmap``: nav_msgs/OccupancyGrid (:mod:`occ_core.mapping.costmap`: a height
  band above the robot's base, class -> cost table, -1 unknown), row-major from the window's
  lower-left corner as nav2's static layer reads ``map_topic``.

Ego poses (``T_odom_from_base``) come from ``/odom`` (the node's :class:`~occ_ros.sweeps.EgoMotion`,
interpolated at the frame's stamp) or TF (``map_frame -> base_frame``, latest); a jump farther
than ``reset_distance`` clears the map (:meth:`RollingSemanticMap.move_to`), and so do a restart
of the LiDAR stamps and the ``map_clear`` parameter. Thread-safe (one lock around the map).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE
from occ_core.frame import OccupancyPrediction, SensorFrame
from occ_core.grid import GridSpec
from occ_core.mapping import UNKNOWN, MapConfig, RollingSemanticMap
from occ_core.mapping.costmap import Costmap, costmap_from_labels
from occ_core.mapping.visibility import frame_visibility

#: Label of an unknown voxel in /occupancy/map (class_names[18] == "unknown").
MAP_UNKNOWN_LABEL = len(OCC3D_CLASSES)
MAP_CLASS_NAMES: tuple[str, ...] = (*OCC3D_CLASSES, "unknown")
MAP_CLASS_SET = "occ3d+unknown"


@dataclass(frozen=True)
class MapSnapshot:
    """The window at one moment: (X, Y, Z) uint8 labels (17 free, 255 unknown) on ``spec``
    (axis-aligned in the map frame, ``range_min`` = its lower corner), the stamp of the last
    frame folded in and the robot's base z (the costmap band's reference)."""

    labels: np.ndarray
    spec: GridSpec
    stamp_ns: int
    base_z: float
    updates: int


class NodeMap:
    """The rolling map of the node (see the module docstring).

    Args:
        cfg: map settings; ego_grid: the predictor's grid; ray_step: radians between the
        visibility rays; cost_table: (256,) costs per label; min_height, max_height: the band.
    """

    def __init__(self, cfg: MapConfig, ego_grid: GridSpec, ray_step: float, cost_table: np.ndarray,
                 min_height: float, max_height: float):
        self.map = RollingSemanticMap(cfg, ego_grid)
        self.ego_grid = ego_grid
        self.ray_step = float(ray_step)
        self.cost_table = cost_table
        self.min_height, self.max_height = float(min_height), float(max_height)
        self._lock = threading.Lock()
        self._stamp_ns = 0
        self._base_z = 0.0
        self._published = -1
        self.timings_ms: list[float] = []

    def integrate(self, frame: SensorFrame, labels: np.ndarray, pred: OccupancyPrediction,
                  T_odom_from_base: np.ndarray) -> float:
        """Fold one frame (its labels as published, the prediction's scores) in; returns the
        seconds it took (visibility included)."""
        t0 = time.perf_counter()
        scores = pred.scores if pred.scores is not None else np.ones(self.ego_grid.dims, np.float32)
        seen = frame_visibility(labels, frame, self.ego_grid, self.ray_step)
        with self._lock:
            self.map.move_to(T_odom_from_base)
            self.map.integrate(labels, scores, seen, T_odom_from_base)
            self._stamp_ns = int(frame.stamp_ns)
            self._base_z = float(np.asarray(T_odom_from_base)[2, 3])
        dt = time.perf_counter() - t0
        self.timings_ms = (self.timings_ms + [dt * 1e3])[-200:]
        return dt

    def clear(self) -> None:
        with self._lock:
            self.map.reset()
            self._published = -1

    @property
    def updates(self) -> int:
        return self.map.updates

    @property
    def resets(self) -> int:
        return self.map.resets

    def snapshot(self, only_new: bool = True) -> MapSnapshot | None:
        """The window, or None when the map has no window yet (or, with ``only_new``, nothing was
        folded in since the last snapshot)."""
        with self._lock:
            if self.map.lo is None or (only_new and self._published == self.map.updates):
                return None
            self._published = self.map.updates
            return MapSnapshot(self.map.labels(), self.map.window_grid(), self._stamp_ns, self._base_z,
                               self.map.updates)

    def costmap(self, snap: MapSnapshot) -> Costmap:
        return costmap_from_labels(snap.labels, np.asarray(snap.spec.range_min), snap.spec.voxel_size[0], snap.base_z,
                                   self.min_height, self.max_height, self.cost_table)


def map_grid_msg(snap: MapSnapshot, header: Any) -> Any:
    """occ_ros_msgs/SemanticOccupancyGrid of a snapshot (unknown voxels labelled 18, "unknown")."""
    from occ_ros.conversions.grid_msg import grid_to_msg

    labels = np.where(snap.labels == UNKNOWN, np.uint8(MAP_UNKNOWN_LABEL), snap.labels)
    return grid_to_msg(labels, snap.spec, header, class_set=MAP_CLASS_SET, class_names=MAP_CLASS_NAMES,
                       free_label=OCC3D_FREE)


def map_cloud_msg(snap: MapSnapshot, header: Any) -> Any:
    """PointCloud2 of the snapshot's occupied voxels (class colours), for RViz/Foxglove."""
    from occ_ros.conversions import occupancy_to_pointcloud2

    labels = np.where(snap.labels == UNKNOWN, np.uint8(OCC3D_FREE), snap.labels)
    return occupancy_to_pointcloud2(labels, snap.spec, header=header)


def costmap_msg(cm: Costmap, header: Any) -> Any:
    """nav_msgs/OccupancyGrid: ``info`` (resolution, width, height, origin = the lower-left
    corner, z 0, no rotation) and ``data`` row-major (``data[y * width + x]``)."""
    from nav_msgs.msg import OccupancyGrid

    msg = OccupancyGrid()
    msg.header = header
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(cm.resolution)
    msg.info.width, msg.info.height = cm.width, cm.height
    msg.info.origin.position.x, msg.info.origin.position.y = float(cm.origin[0]), float(cm.origin[1])
    msg.info.origin.position.z = 0.0
    msg.info.origin.orientation.w = 1.0
    import array

    msg.data = array.array("b", np.ascontiguousarray(cm.data, np.int8).tobytes())
    return msg


def map_qos() -> Any:
    """Reliable, transient local, depth 1: what nav2's static layer subscribes ``map_topic`` with
    (``map_subscribe_transient_local: true``), so a late subscriber gets the latest map."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
