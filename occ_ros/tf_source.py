"""Sensor -> base_link extrinsics for the node: from TF (tf2_ros) or from a rig calibration file.

Without tf2_ros (the PyPI wheels) :class:`occ_ros.tf_buffer.TfMessageExtrinsics` reads
/tf_static and /tf through tf2_msgs instead.

Both sources answer ``lookup(frame_id, stamp_ns)`` with a (4, 4) float64 transform mapping
points in ``frame_id`` into the base frame, or None when the transform is unknown (the node
then counts the frame as "no calibration" and skips it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import numpy as np

from occ_core.geometry import make_transform
from occ_core.rig import Rig, load_rig


def _importable(module: str) -> bool:
    """True when ``module`` (dotted) is installed, found without importing it (its parent package
    is imported, as ``importlib.util.find_spec`` does)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def tf_messages_available() -> bool:
    """True when ``tf2_msgs.msg`` is installed (a ROS 2 install, or the venv's generated one)."""
    return _importable("tf2_msgs.msg")


def tf2_available() -> bool:
    """True when ``tf2_ros`` is installed (a full ROS 2 install; not the PyPI wheels)."""
    return _importable("tf2_ros")


class RigExtrinsics:
    """Static extrinsics from a rig YAML (``config/rigs/*.yaml``): the LiDAR and every camera."""

    def __init__(self, rig: Rig | str | Path):
        self.rig = load_rig(rig) if not isinstance(rig, Rig) else rig
        self._T = {self.rig.lidar.name: self.rig.lidar.T_base_from_lidar}
        self._T.update({c.name: c.T_base_from_cam for c in self.rig.cameras})
        self._T[self.rig.base_frame] = np.eye(4)

    def lookup(self, frame_id: str, stamp_ns: int) -> np.ndarray | None:
        T = self._T.get(frame_id)
        return None if T is None else T.copy()

    def describe(self) -> str:
        return f"rig file ({', '.join(sorted(self._T))})"


class TfExtrinsics:
    """Extrinsics from TF (``tf2_ros.Buffer`` + ``TransformListener`` on ``node``), latest available.

    Sensor mounts are static, so the latest transform is used rather than one at the stamp.

    Args:
        on_ego_pose: called with ``(stamp_ns, T_parent_from_base)`` (4, 4) for every ``/tf``
            transform whose child is ``base_frame`` (``odom -> base_link``), from a second
            ``/tf`` subscription (tf2_msgs), as :class:`occ_ros.tf_buffer.TfMessageExtrinsics`
            does: the ego poses by stamp for the camera motion compensation.
    """

    def __init__(self, node: Any, base_frame: str, on_ego_pose: Callable[[int, np.ndarray], None] | None = None):
        import tf2_ros

        self.base_frame = base_frame
        self._buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self._buffer, node)
        self._sub = None
        if on_ego_pose is not None:
            from rclpy.qos import QoSProfile
            from tf2_msgs.msg import TFMessage

            from occ_ros.tf_buffer import ego_poses

            def on_tf(msg: Any) -> None:
                for stamp, T in ego_poses(msg, base_frame):
                    on_ego_pose(stamp, T)

            self._sub = node.create_subscription(TFMessage, "/tf", on_tf, QoSProfile(depth=100))

    def lookup(self, frame_id: str, stamp_ns: int) -> np.ndarray | None:
        import rclpy.time
        import tf2_ros

        if frame_id == self.base_frame:
            return np.eye(4)
        try:
            tf = self._buffer.lookup_transform(self.base_frame, frame_id, rclpy.time.Time())
        except (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.ExtrapolationException):
            return None
        t, q = tf.transform.translation, tf.transform.rotation
        return make_transform(np.array([t.x, t.y, t.z]), np.array([q.w, q.x, q.y, q.z]))

    def describe(self) -> str:
        return "TF (tf2_ros)"
