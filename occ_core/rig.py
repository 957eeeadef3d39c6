"""Sensor rig calibration: camera intrinsics and sensor -> base_link extrinsics.

A rig file (``config/rigs/*.yaml``) describes the sensors of one vehicle the way static TF
would: for each sensor its frame id and the transform from the sensor frame to
``base_link`` (translation in metres, quaternion in ROS ``x, y, z, w`` order). Cameras also
carry the pinhole intrinsics of their native image size. Camera frames follow the optical
convention: x right, y down, z forward.

Example::

    base_frame: base_link
    lidar:
      name: LIDAR_TOP
      translation: [0.9437, 0.0, 1.8402]
      quaternion_xyzw: [...]
    cameras:
      - name: CAM_FRONT
        width: 1600
        height: 900
        K: [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]
        translation: [...]
        quaternion_xyzw: [...]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml

from occ_core.errors import OccDataError
from occ_core.fileio import read_yaml
from occ_core.geometry import make_transform, matrix_to_quat_wxyz, quat_wxyz_to_xyzw, quat_xyzw_to_wxyz

#: The rig shipped with the package: the published nuScenes calibration.
NUSCENES_RIG_PATH = Path(__file__).resolve().parent.parent / "config" / "rigs" / "nuscenes.yaml"


@dataclass(frozen=True)
class CameraCalib:
    """One camera: name (= frame id), native image size, K (3, 3), T_base_from_cam (4, 4)."""

    name: str
    width: int
    height: int
    K: np.ndarray
    T_base_from_cam: np.ndarray

    def scaled(self, width: int, height: int) -> "CameraCalib":
        """The same camera at another image size (intrinsics scaled per axis)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, :] *= sx
        K[1, :] *= sy
        return replace(self, width=int(width), height=int(height), K=K)


@dataclass(frozen=True)
class LidarCalib:
    """The LiDAR: name (= frame id) and T_base_from_lidar (4, 4)."""

    name: str
    T_base_from_lidar: np.ndarray


@dataclass(frozen=True)
class Rig:
    """A vehicle's sensors; all transforms map sensor coordinates into ``base_frame``."""

    base_frame: str
    lidar: LidarCalib
    cameras: tuple[CameraCalib, ...]

    def camera(self, name: str) -> CameraCalib:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"rig has no camera {name!r}; it has {[c.name for c in self.cameras]}")

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def scaled(self, width: int, height: int) -> "Rig":
        """The rig with every camera rescaled to ``width`` × ``height`` pixels."""
        return replace(self, cameras=tuple(c.scaled(width, height) for c in self.cameras))


def _vector(d: dict, key: str, n: int, where: str) -> np.ndarray:
    if key not in d:
        raise OccDataError(f"{where}: missing field {key!r} (expected {n} numbers)")
    try:
        v = np.asarray(d[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise OccDataError(f"{where}: field {key!r} must be {n} numbers, got {d[key]!r}") from None
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise OccDataError(f"{where}: field {key!r} must be {n} finite numbers, got {d[key]!r}")
    return v


def _transform(d: dict, where: str) -> np.ndarray:
    t = _vector(d, "translation", 3, where)
    q = _vector(d, "quaternion_xyzw", 4, where)
    if abs(np.linalg.norm(q) - 1.0) > 1e-3:
        raise OccDataError(f"{where}: field 'quaternion_xyzw' must be a unit quaternion, norm is {np.linalg.norm(q):.6f}")
    return make_transform(t, quat_xyzw_to_wxyz(q))


def load_rig(path: str | Path = NUSCENES_RIG_PATH) -> Rig:
    """Read a rig YAML file; errors name the file and the field that is wrong."""
    path = Path(path)
    doc = read_yaml(path, "rig file")
    if not isinstance(doc, dict):
        raise OccDataError(f"{path}: expected a mapping with 'lidar' and 'cameras'")
    if "lidar" not in doc or not isinstance(doc["lidar"], dict):
        raise OccDataError(f"{path}: missing mapping 'lidar'")
    lid = doc["lidar"]
    lidar = LidarCalib(str(lid.get("name", "LIDAR_TOP")), _transform(lid, f"{path}: lidar"))
    cams_doc = doc.get("cameras")
    if not isinstance(cams_doc, list) or not cams_doc:
        raise OccDataError(f"{path}: 'cameras' must be a non-empty list")
    cams = []
    for i, c in enumerate(cams_doc):
        where = f"{path}: cameras[{i}]"
        if not isinstance(c, dict) or "name" not in c:
            raise OccDataError(f"{where}: expected a mapping with a 'name'")
        where = f"{path}: camera {c['name']}"
        try:
            K = np.asarray(c["K"], dtype=np.float64)
        except KeyError:
            raise OccDataError(f"{where}: missing field 'K' (3x3 intrinsics)") from None
        if K.shape != (3, 3) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise OccDataError(f"{where}: field 'K' must be a 3x3 matrix with positive focal lengths")
        for key in ("width", "height"):
            if not isinstance(c.get(key), int) or c[key] <= 0:
                raise OccDataError(f"{where}: field {key!r} must be a positive integer, got {c.get(key)!r}")
        cams.append(CameraCalib(str(c["name"]), c["width"], c["height"], K, _transform(c, where)))
    names = [c.name for c in cams]
    if len(set(names)) != len(names):
        raise OccDataError(f"{path}: camera names must be unique, got {names}")
    return Rig(str(doc.get("base_frame", "base_link")), lidar, tuple(cams))


def rig_to_yaml(rig: Rig) -> str:
    """Serialise a rig in the format :func:`load_rig` reads."""

    def tf(T: np.ndarray) -> dict:
        q = quat_wxyz_to_xyzw(matrix_to_quat_wxyz(T[:3, :3]))
        return {"translation": [round(float(v), 9) for v in T[:3, 3]],
                "quaternion_xyzw": [round(float(v), 9) for v in q]}

    doc = {
        "base_frame": rig.base_frame,
        "lidar": {"name": rig.lidar.name, **tf(rig.lidar.T_base_from_lidar)},
        "cameras": [
            {"name": c.name, "width": c.width, "height": c.height,
             "K": [[round(float(v), 6) for v in row] for row in c.K], **tf(c.T_base_from_cam)}
            for c in rig.cameras
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)
