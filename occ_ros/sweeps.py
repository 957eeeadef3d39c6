"""Multi-sweep LiDAR aggregation with ego motion from odometry (nuScenes-style sweeps).

Multi-sweep models take the current sweep plus a few earlier ones, moved into the current
``base_link`` and tagged with their age (``SensorFrame.points[:, 4]`` = time lag in seconds).
:class:`EgoMotion` keeps recent ``odom -> base_link`` poses and interpolates them (linear
translation, slerp rotation); :class:`SweepBuffer` keeps recent sweeps in their sensor frame
and :func:`SweepBuffer.gather` returns them in the base_link of a given stamp:

    p_cur = inv(T_odom_base(t_cur)) @ T_odom_base(t_past) @ T_base_lidar @ p_lidar

(the nuScenes devkit's sensor -> ego(t_past) -> global -> ego(t_cur) chain, with odom in
place of the global frame). A past sweep whose pose cannot be interpolated is left out.
Pure numpy/scipy, thread-safe; no ROS types.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from occ_core.geometry import transform_points


class EgoMotion:
    """Recent ``T_odom_base`` poses (4, 4) by stamp; :meth:`pose_at` interpolates between them.

    Args:
        capacity: poses kept (oldest dropped).
        tolerance_s: how far outside the kept poses a stamp may lie (the nearest pose is then used).
    """

    def __init__(self, capacity: int = 400, tolerance_s: float = 0.05):
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []
        self._capacity = int(capacity)
        self._tol_ns = int(tolerance_s * 1e9)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, T_odom_base: np.ndarray) -> None:
        """Add a pose; poses may arrive out of order (an equal stamp replaces the old pose)."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if i < len(self._stamps) and self._stamps[i] == stamp_ns:
                self._poses[i] = np.asarray(T_odom_base, dtype=np.float64)
                return
            self._stamps.insert(i, int(stamp_ns))
            self._poses.insert(i, np.asarray(T_odom_base, dtype=np.float64))
            if len(self._stamps) > self._capacity:
                del self._stamps[0], self._poses[0]

    def latest_stamp(self) -> int | None:
        """The newest pose's stamp (ns), or None while there is none."""
        with self._lock:
            return self._stamps[-1] if self._stamps else None

    def pose_at(self, stamp_ns: int, tolerance_s: float | None = None) -> np.ndarray | None:
        """``T_odom_base`` (4, 4) at ``stamp_ns``, or None when no pose brackets it; outside the
        kept poses the nearest one is used within ``tolerance_s`` (default: the constructor's)."""
        tol_ns = self._tol_ns if tolerance_s is None else int(tolerance_s * 1e9)
        with self._lock:
            if not self._stamps:
                return None
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if i < len(self._stamps) and self._stamps[i] == stamp_ns:
                return self._poses[i].copy()
            if i == 0 or i == len(self._stamps):
                j = 0 if i == 0 else len(self._stamps) - 1
                return self._poses[j].copy() if abs(self._stamps[j] - stamp_ns) <= tol_ns else None
            t0, t1 = self._stamps[i - 1], self._stamps[i]
            P0, P1 = self._poses[i - 1], self._poses[i]
        a = (stamp_ns - t0) / (t1 - t0)
        T = np.eye(4)
        T[:3, 3] = (1 - a) * P0[:3, 3] + a * P1[:3, 3]
        T[:3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([P0[:3, :3], P1[:3, :3]])))([a]).as_matrix()[0]
        return T


@dataclass
class Sweep:
    """One LiDAR sweep: stamp, (P, 4) float32 x, y, z, intensity in the sensor frame, T_base_from_sensor (4, 4)."""

    stamp_ns: int
    points: np.ndarray
    T_base_sensor: np.ndarray


class SweepBuffer:
    """The last ``capacity`` sweeps; :meth:`gather` builds multi-sweep points for a stamp."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity: expected >= 1, got {capacity}")
        self._sweeps: deque[Sweep] = deque(maxlen=int(capacity))
        self._lock = threading.Lock()

    def add(self, sweep: Sweep) -> None:
        with self._lock:
            self._sweeps.append(sweep)

    def gather(self, current: Sweep, num_sweeps: int, max_age_s: float, motion: EgoMotion) -> tuple[np.ndarray, int]:
        """``current`` plus up to ``num_sweeps - 1`` earlier sweeps, in the base_link at ``current.stamp_ns``.

        Returns:
            ``(points, used)``: (P, 5) float32 ``[x, y, z, intensity, time_lag_s]`` (current sweep
            first, then newest to oldest), and how many sweeps went in (>= 1).
        """
        pts = np.zeros((current.points.shape[0], 5), dtype=np.float32)
        pts[:, :4] = current.points
        parts, used = [transform_points(current.T_base_sensor, pts)], 1
        if num_sweeps > 1:
            T_cur = motion.pose_at(current.stamp_ns)
            with self._lock:
                past = sorted((s for s in self._sweeps
                               if s.stamp_ns < current.stamp_ns and current.stamp_ns - s.stamp_ns <= max_age_s * 1e9),
                              key=lambda s: -s.stamp_ns)
            if T_cur is not None:
                T_cur_inv = np.linalg.inv(T_cur)
                for s in past:
                    if used >= num_sweeps:
                        break
                    T_past = motion.pose_at(s.stamp_ns)
                    if T_past is None:
                        continue
                    p = np.empty((s.points.shape[0], 5), dtype=np.float32)
                    p[:, :4] = s.points
                    p[:, 4] = (current.stamp_ns - s.stamp_ns) * 1e-9
                    parts.append(transform_points(T_cur_inv @ T_past @ s.T_base_sensor, p))
                    used += 1
        return (np.concatenate(parts) if len(parts) > 1 else parts[0]), used
