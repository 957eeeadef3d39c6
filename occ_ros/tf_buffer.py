"""A small TF buffer for environments without ``tf2_ros`` (the PyPI wheels): latest transforms only.

:class:`TransformTree` keeps, per child frame, its parent and the latest (4, 4)
``T_parent_from_child`` received on ``/tf_static`` or ``/tf`` (tf2_msgs/TFMessage) and answers
``lookup(target, source)`` = ``T_target_from_source`` by composing the chains of both frames up
to their common root. Sensor mounts are static, so no time interpolation is done (tf2_ros does
that on a full ROS 2 install, where :class:`occ_ros.tf_source.TfExtrinsics` uses it).

:class:`TfMessageExtrinsics` is the node's extrinsics source built on it: it subscribes
``/tf_static`` with tf2's static QoS (reliable, transient local, so late joiners receive the
latched transforms) and ``/tf``. :func:`rig_tf_message` turns a rig calibration into the
``/tf_static`` message a static broadcaster would send.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from occ_core.geometry import make_transform, matrix_to_quat_wxyz
from occ_core.rig import Rig


def _frame(name: str) -> str:
    """tf2 ignores a leading slash in frame ids."""
    return name[1:] if name.startswith("/") else name


class TransformTree:
    """Latest transforms between frames (a forest: each child has one parent). Thread-safe."""

    def __init__(self) -> None:
        self._parent: dict[str, tuple[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def set_transform(self, parent: str, child: str, T_parent_from_child: np.ndarray) -> None:
        """Record (or replace) the edge ``parent <- child`` with a (4, 4) transform."""
        with self._lock:
            self._parent[_frame(child)] = (_frame(parent), np.asarray(T_parent_from_child, dtype=np.float64).copy())

    def add_message(self, msg: Any) -> int:
        """Add every ``geometry_msgs/TransformStamped`` of a ``tf2_msgs/TFMessage``; returns how many."""
        for ts in msg.transforms:
            t, q = ts.transform.translation, ts.transform.rotation
            T = make_transform(np.array([t.x, t.y, t.z]), np.array([q.w, q.x, q.y, q.z]))
            self.set_transform(ts.header.frame_id, ts.child_frame_id, T)
        return len(msg.transforms)

    def _chain(self, frame: str) -> dict[str, np.ndarray]:
        """``{ancestor: T_ancestor_from_frame}`` for ``frame`` and every ancestor (frame included)."""
        out = {frame: np.eye(4)}
        T = np.eye(4)
        while frame in self._parent and len(out) <= len(self._parent):
            frame, T_parent = self._parent[frame][0], self._parent[frame][1] @ T
            if frame in out:  # a cycle in the received data: stop at the repeat
                break
            T = T_parent
            out[frame] = T
        return out

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """(4, 4) ``T_target_from_source`` (points in ``source`` -> points in ``target``), or None
        when the frames are not connected."""
        target, source = _frame(target), _frame(source)
        with self._lock:
            up_source = self._chain(source)
            up_target = self._chain(target)
        for frame, T_frame_from_source in up_source.items():  # nearest common ancestor first
            T_frame_from_target = up_target.get(frame)
            if T_frame_from_target is not None:
                return np.linalg.solve(T_frame_from_target, T_frame_from_source)
        return None

    def frames(self) -> set[str]:
        with self._lock:
            return set(self._parent) | {p for p, _ in self._parent.values()}


def ego_poses(msg: Any, base_frame: str) -> list[tuple[int, np.ndarray]]:
    """``(stamp_ns, T_parent_from_base)`` (4, 4) of every transform of a ``tf2_msgs/TFMessage`` whose
    child is ``base_frame`` (``odom -> base_link``, REP 105); non-finite or non-unit rotations are left out."""
    out = []
    for ts in msg.transforms:
        if _frame(ts.child_frame_id) == _frame(base_frame):
            t, q = ts.transform.translation, ts.transform.rotation
            quat = np.array([q.w, q.x, q.y, q.z])
            xyz = np.array([t.x, t.y, t.z])
            if np.isfinite(quat).all() and np.isfinite(xyz).all() and abs(np.linalg.norm(quat) - 1.0) < 1e-3:
                stamp = int(ts.header.stamp.sec) * 1_000_000_000 + int(ts.header.stamp.nanosec)
                out.append((stamp, make_transform(xyz, quat / np.linalg.norm(quat))))
    return out


def tf_static_qos() -> Any:
    """tf2's QoS of ``/tf_static``: reliable, transient local, keep last 100."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class TfMessageExtrinsics:
    """Sensor -> base_frame extrinsics from ``/tf_static`` and ``/tf`` without tf2_ros (needs
    ``tf2_msgs``), latest transform; same interface as :class:`occ_ros.tf_source.TfExtrinsics`.

    Args:
        on_ego_pose: called with ``(stamp_ns, T_parent_from_base)`` (4, 4) for every ``/tf``
            transform whose child is ``base_frame`` (``odom -> base_link``, REP 105): the ego
            poses by stamp, which the node interpolates to place each camera at its image stamp.
    """

    def __init__(self, node: Any, base_frame: str, static_topic: str = "/tf_static", dynamic_topic: str = "/tf",
                 on_ego_pose: Callable[[int, np.ndarray], None] | None = None):
        from rclpy.qos import QoSProfile
        from tf2_msgs.msg import TFMessage

        self.base_frame = base_frame
        self.tree = TransformTree()
        self._on_ego_pose = on_ego_pose
        self._subs = [
            node.create_subscription(TFMessage, static_topic, self.tree.add_message, tf_static_qos()),
            node.create_subscription(TFMessage, dynamic_topic, self._on_dynamic, QoSProfile(depth=100)),
        ]

    def _on_dynamic(self, msg: Any) -> None:
        self.tree.add_message(msg)
        if self._on_ego_pose is not None:
            for stamp, T in ego_poses(msg, self.base_frame):
                self._on_ego_pose(stamp, T)

    def lookup(self, frame_id: str, stamp_ns: int) -> np.ndarray | None:
        """(4, 4) ``T_base_from_frame``, or None while the frame is not connected to base_frame."""
        if _frame(frame_id) == _frame(self.base_frame):
            return np.eye(4)
        return self.tree.lookup(self.base_frame, frame_id)

    def describe(self) -> str:
        return "TF (/tf_static + /tf, tf2_msgs)"


def rig_tf_message(rig: Rig, stamp_ns: int = 0) -> Any:
    """A ``tf2_msgs/TFMessage`` with ``base_frame -> sensor`` for the LiDAR and every camera of
    ``rig`` (what a static transform broadcaster publishes on ``/tf_static``)."""
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    msg = TFMessage()
    sensors = [(rig.lidar.name, rig.lidar.T_base_from_lidar)] + [(c.name, c.T_base_from_cam) for c in rig.cameras]
    for name, T in sensors:
        ts = TransformStamped()
        ts.header.stamp.sec, ts.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        ts.header.frame_id = rig.base_frame
        ts.child_frame_id = name
        ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = (float(v) for v in T[:3, 3])
        q = matrix_to_quat_wxyz(T[:3, :3])
        ts.transform.rotation.w, ts.transform.rotation.x, ts.transform.rotation.y, ts.transform.rotation.z = (
            float(v) for v in q)
        msg.transforms.append(ts)
    return msg
