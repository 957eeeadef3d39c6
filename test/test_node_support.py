"""Helpers for the occupancy node tests: one synthetic keyframe as files, as messages, as an offline SensorFrame.

Holds no tests; imported by ``test/test_node*.py`` and by the node
subprocess of the cross-process test.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from occ_core.classes import OCC3D_FREE
from occ_core.frame import OccupancyPrediction, SensorFrame
from occ_core.ego import NUSCENES_EGO_FOOTPRINT
from occ_core.geometry import make_transform, transform_points
from occ_core.grid import OCC3D, GridSpec

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")


class PointHeightTestPredictor:
    """A deterministic TEST predictor that really computes a grid from a frame.

    Voxelises the base_link LiDAR points on ``spec``: voxels with a point whose z < 0.2 m are
    driveable_surface (11), up to 2 m car (4), above manmade (15), later points winning; all
    other voxels free. The score of every voxel is the mean brightness of the first camera
    image (so the decoded images reach the output too).
    """

    def __init__(self, spec: GridSpec = OCC3D):
        self.spec = spec

    def predict(self, frame: SensorFrame) -> OccupancyPrediction:
        idx, inside = self.spec.points_to_voxels(frame.points)
        z = frame.points[inside, 2]
        idx = idx[inside]
        labels = np.full(self.spec.dims, OCC3D_FREE, dtype=np.uint8)
        cls = np.where(z < 0.2, 11, np.where(z < 2.0, 4, 15)).astype(np.uint8)
        labels[idx[:, 0], idx[:, 1], idx[:, 2]] = cls
        score = np.float32(np.mean(frame.images[0]) / 255.0)
        return OccupancyPrediction(labels=labels, scores=np.full(self.spec.dims, score, dtype=np.float32))


@dataclass
class Keyframe:
    """One synthetic keyframe: JPEG bytes, intrinsics, extrinsics, the LiDAR sweep (LIDAR_TOP frame)."""

    stamp_ns: int
    jpeg: dict[str, bytes]
    K: dict[str, np.ndarray]
    size: dict[str, tuple[int, int]]
    T_cam: dict[str, np.ndarray]
    lidar_points: np.ndarray  # (P, 5) float32 x, y, z, intensity, ring
    T_lidar: np.ndarray
    rig_file: Path


def load_keyframe(dataroot: Path, out_dir: Path, index: int = 0) -> Keyframe:
    """Keyframe ``index`` of the synthetic dataroot; writes its calibration as a rig file into ``out_dir``."""
    tab = {t: json.loads((dataroot / "v1.0-mini" / f"{t}.json").read_text())
           for t in ("sample", "sample_data", "calibrated_sensor", "sensor")}
    sample = tab["sample"][index]
    cs = {r["token"]: r for r in tab["calibrated_sensor"]}
    sensor = {r["token"]: r for r in tab["sensor"]}
    jpeg, K, size, T_cam = {}, {}, {}, {}
    rig = {"base_frame": "base_link", "cameras": []}
    points = T_lidar = None
    for sd in tab["sample_data"]:
        if sd["sample_token"] != sample["token"] or not sd["is_key_frame"]:
            continue
        c = cs[sd["calibrated_sensor_token"]]
        ch = sensor[c["sensor_token"]]["channel"]
        q = c["rotation"]
        entry = {"name": ch, "translation": c["translation"], "quaternion_xyzw": [q[1], q[2], q[3], q[0]]}
        if ch == "LIDAR_TOP":
            points = np.fromfile(dataroot / sd["filename"], dtype=np.float32).reshape(-1, 5)
            T_lidar = make_transform(c["translation"], c["rotation"])
            rig["lidar"] = entry
        else:
            jpeg[ch] = (dataroot / sd["filename"]).read_bytes()
            K[ch] = np.asarray(c["camera_intrinsic"], dtype=np.float64)
            size[ch] = (int(sd["width"]), int(sd["height"]))
            T_cam[ch] = make_transform(c["translation"], c["rotation"])
            rig["cameras"].append({"name": ch, "width": size[ch][0], "height": size[ch][1],
                                   "K": K[ch].tolist(), **{k: entry[k] for k in ("translation", "quaternion_xyzw")}})
    out_dir.mkdir(parents=True, exist_ok=True)
    rig_file = out_dir / "rig.yaml"
    rig_file.write_text(yaml.safe_dump(rig, sort_keys=False))
    return Keyframe(sample["timestamp"] * 1000, jpeg, K, size, T_cam, points, T_lidar, rig_file)


def offline_frame(kf: Keyframe, cameras=CAMERAS) -> SensorFrame:
    """The SensorFrame of a keyframe built straight from its files (no ROS); LiDAR points inside
    the default ego footprint dropped, as the node (``ego_filter``) and the loaders do."""
    images = [cv2.cvtColor(cv2.imdecode(np.frombuffer(kf.jpeg[c], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
              for c in cameras]
    pts = np.zeros((kf.lidar_points.shape[0], 5), dtype=np.float32)
    pts[:, :4] = kf.lidar_points[:, :4]
    return SensorFrame(stamp_ns=kf.stamp_ns, camera_names=tuple(cameras), images=images,
                       intrinsics=np.stack([kf.K[c] for c in cameras]),
                       T_base_from_cam=np.stack([kf.T_cam[c] for c in cameras]),
                       points=NUSCENES_EGO_FOOTPRINT.remove(transform_points(kf.T_lidar, pts))[0],
                       T_base_from_lidar=kf.T_lidar)


def ros_time(stamp_ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def camera_info_msg(kf: Keyframe, cam: str, stamp_ns: int):
    from sensor_msgs.msg import CameraInfo

    w, h = kf.size[cam]
    K = kf.K[cam]
    msg = CameraInfo(width=w, height=h, distortion_model="plumb_bob", d=[0.0] * 5, k=K.reshape(-1).tolist(),
                     r=np.eye(3).reshape(-1).tolist(), p=np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist())
    msg.header.frame_id = cam
    msg.header.stamp = ros_time(stamp_ns)
    return msg


def image_msg(kf: Keyframe, cam: str, stamp_ns: int, frame_id: str | None = None, fmt: str = "jpeg"):
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt)
    msg.data = kf.jpeg[cam]
    msg.header.frame_id = cam if frame_id is None else frame_id
    msg.header.stamp = ros_time(stamp_ns)
    return msg


def lidar_msg(kf: Keyframe, stamp_ns: int):
    from std_msgs.msg import Header

    from occ_ros.conversions import columns_to_pointcloud2

    header = Header(frame_id="LIDAR_TOP", stamp=ros_time(stamp_ns))
    return columns_to_pointcloud2(kf.lidar_points, ("x", "y", "z", "intensity", "ring"), header=header)


def wait_for(pred, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``pred`` every 20 ms until it is true; fail naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ------------------------------------------------------------------ hostile inputs (issue 12)
def png_bomb(height: int = 100_000, width: int = 100_000) -> bytes:
    """A ~100-byte PNG whose IHDR claims ``width`` x ``height`` RGB pixels (CRCs valid, one tiny IDAT)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def jpeg_bomb(height: int = 60_000, width: int = 60_000) -> bytes:
    """A small real JPEG (8x8 grey) whose start-of-frame header is patched to claim ``width`` x ``height``."""
    import struct

    ok, buf = cv2.imencode(".jpg", np.full((8, 8), 128, np.uint8))
    data = bytearray(buf.tobytes())
    i = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, height, width)
    return bytes(data)


def truncated_jpeg(jpeg: bytes) -> bytes:
    """``jpeg`` cut in the middle of its scan with an end-of-image marker appended: libjpeg's lenient
    decode fills the rest grey with only a warning."""
    return jpeg[: len(jpeg) // 2] + b"\xff\xd9"
