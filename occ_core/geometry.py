"""Rigid transforms on scipy: nuScenes ``[w, x, y, z]`` quaternions and 4×4 matrices.

Conventions: a transform ``T_a_from_b`` (4×4, float64) maps points in frame ``b`` to frame
``a``: ``p_a = T_a_from_b @ p_b``. nuScenes stores rotations as ``[w, x, y, z]`` and
translations in metres; ROS messages store quaternions as ``x, y, z, w``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def quat_wxyz_to_matrix(q_wxyz) -> np.ndarray:
    """(3, 3) rotation matrix of a unit quaternion ``[w, x, y, z]`` (normalised first)."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-12:
        raise ValueError(f"quaternion must be 4 finite values [w, x, y, z] with non-zero norm, got {q_wxyz!r}")
    return Rotation.from_quat(q, scalar_first=True).as_matrix()


def matrix_to_quat_wxyz(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion ``[w, x, y, z]`` (w >= 0) of a (3, 3) rotation matrix."""
    q = Rotation.from_matrix(np.asarray(rot, dtype=np.float64)).as_quat(scalar_first=True)
    return q if q[0] >= 0 else -q


def make_transform(translation, rotation) -> np.ndarray:
    """(4, 4) transform from a translation (3,) and a rotation.

    ``rotation`` is a nuScenes ``[w, x, y, z]`` quaternion (4,) or a (3, 3) matrix.
    """
    rot = np.asarray(rotation, dtype=np.float64)
    T = np.eye(4)
    T[:3, :3] = quat_wxyz_to_matrix(rot) if rot.shape == (4,) else rot
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform, using R^T rather than a general inverse."""
    T = np.asarray(T, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) transform to (N, >=3) points; columns past x, y, z are kept as they are."""
    pts = np.asarray(points)
    out = pts.copy()
    xyz = pts[:, :3].astype(np.float64, copy=False)
    out[:, :3] = xyz @ np.asarray(T)[:3, :3].T + np.asarray(T)[:3, 3]
    return out


def yaw_of(rot: np.ndarray) -> float:
    """Heading (rotation about +z, radians) of a (3, 3) rotation or a ``[w, x, y, z]`` quaternion."""
    rot = np.asarray(rot, dtype=np.float64)
    m = quat_wxyz_to_matrix(rot) if rot.shape == (4,) else rot
    return float(np.arctan2(m[1, 0], m[0, 0]))


def quat_xyzw_to_wxyz(q_xyzw) -> np.ndarray:
    """ROS ``x, y, z, w`` order -> nuScenes ``w, x, y, z`` order."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    return np.array([q[3], q[0], q[1], q[2]])


def quat_wxyz_to_xyzw(q_wxyz) -> np.ndarray:
    """nuScenes ``w, x, y, z`` order -> ROS ``x, y, z, w`` order."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    return np.array([q[1], q[2], q[3], q[0]])


def heights_from_pitch(T_global_from_ego: np.ndarray) -> np.ndarray:
    """Ego heights (n,) along a trajectory, from its pitch: ``z[0] = 0`` and each step climbs
    its horizontal length times the slope of the mean forward axis of its two poses.

    nuScenes ego poses keep ``z = 0`` while their rotation pitches with the road, so scans
    aggregated along a slope drift apart vertically (about 0.05 m per metre at 3 degrees);
    these heights put them back on one road surface.

    Args:
        T_global_from_ego: (n, 4, 4) ego poses in time order.
    """
    T = np.asarray(T_global_from_ego, np.float64)
    fwd = T[:, :3, 0]
    f = (fwd[1:] + fwd[:-1]) / 2
    step = np.hypot(*(T[1:, :2, 3] - T[:-1, :2, 3]).T)
    return np.concatenate([[0.0], np.cumsum(step * f[:, 2] / np.maximum(np.hypot(f[:, 0], f[:, 1]), 1e-9))])
