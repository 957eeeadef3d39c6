"""``occ-bag2nusc``: a ROS 2 bag -> a nuScenes-format dataroot (the reverse of ``occ-nusc2bag``).

    occ-bag2nusc BAG --out DIR [--version v1.0-mini] [--keyframe-hz 2] [--lidar-topic /LIDAR_TOP]
                 [--camera-topics TOPIC[=CHANNEL] ...] [--scene-name NAME] [--poses auto|tf|odom]
                 [--odom-topic /odom] [--map-frame map] [--base-frame base_link]
                 [--pose-tolerance 0.05] [--jpeg-quality 95] [--overwrite] [--no-progress]

The bag becomes one scene (named after the bag folder, or ``--scene-name``) of one log, in
``<out>/<version>/*.json`` (the 13 nuScenes tables; nuscenes-devkit loads them unmodified) and
``<out>/samples|sweeps/<CHANNEL>/<scene>__<CHANNEL>__<us>.pcd.bin|jpg``:

- **Keyframes**: the LiDAR message nearest each tick of ``--keyframe-hz`` counted from the first
  LiDAR message (a tick whose nearest message is more than half a period away, a gap in the
  recording, gives none), so a bag written by ``occ-nusc2bag`` gets its keyframes back. Each
  keyframe is a ``sample`` (timestamp = its LiDAR stamp); per camera, the image nearest the keyframe
  stamp (within half a period, used once) is its keyframe image. Every other LiDAR and camera message
  is a sweep, owned by the following keyframe's sample as in nuScenes (the last sample owns those
  after it). ``prev``/``next`` chain every channel's sample_data in time order.
- **LiDAR** (``--lidar-topic``, PointCloud2, channel ``LIDAR_TOP``): ``.pcd.bin`` float32
  ``[x, y, z, intensity, ring]`` (N, 5) in the cloud's own frame (``header.frame_id``); clouds
  without ``intensity`` or ``ring`` get zeros there; points with a NaN coordinate are dropped.
- **Cameras** (``--camera-topics``; default: every CompressedImage / Image topic with a
  ``camera_info`` beside it): JPEG bytes exactly as recorded for a JPEG CompressedImage; raw Images
  (and PNG CompressedImages) are encoded to JPEG with OpenCV (``--jpeg-quality``). Channel names
  reverse ``occ-nusc2bag``'s topics: ``/<CH>/image_rect/compressed`` (and the older
  ``/<CH>/image_rect_compressed``) -> ``<CH>``; other topics drop
  the image leaf (``image_raw``, ``image_rect``, ..., image_transport's ``/compressed``) and join the
  namespace with ``_`` (``/camera/front/image_raw/compressed`` -> ``camera_front``), or take
  ``TOPIC=CHANNEL`` as given. Intrinsics: ``K`` of the camera's CameraInfo
  (``<namespace>/camera_info``) with the image's stamp, else the nearest one in time; its size
  must match the image.
- **Calibration**: ``calibrated_sensor`` = the ``/tf_static`` chain ``--base-frame`` -> the message's
  ``frame_id`` (camera optical frames, z forward, as ``occ-nusc2bag`` writes them); one record per
  channel and distinct (frame, K). A single static transform is copied exactly as recorded.
- **Ego poses**: one ``ego_pose`` per sample_data, ``--map-frame`` -> ``--base-frame`` at the
  message's header stamp from ``/tf`` (a chain of dynamic and static transforms is composed) or from
  ``--odom-topic`` (nav_msgs/Odometry whose ``child_frame_id`` is the base frame); ``--poses auto``
  takes ``/tf`` when it has the path, else the odometry. Between recorded poses the translation is
  interpolated linearly and the rotation by slerp (:class:`occ_ros.sweeps.EgoMotion`); z is kept as
  recorded. A message more than ``--pose-tolerance`` s outside the recorded poses is left out
  (counted in the summary).
- **Timestamps**: microseconds from the header stamps (rounded to the nearest microsecond). A
  second message of a channel with the same microsecond is left out (counted).
- **No annotations**: ``category``, ``attribute``, ``visibility``, ``instance`` and
  ``sample_annotation`` are empty lists, and there is no lidarseg: ``occ-label`` then labels
  geometry only (class ``others``) with free-space carving. A bag carries no map, but the devkit
  requires a ``map`` record for every log: ``maps/<token>.png`` is a 1 x 1 empty (all 0) mask.

Tokens are uuid5 hashes of the scene name, table, topic and header stamp, so a rerun writes
identical files. The dataroot is built in ``.<out>.tmp-<pid>`` beside ``--out`` and renamed at the
end (:func:`occ_core.fileio.temp_dir_for`); an existing non-empty ``--out`` is refused unless
``--overwrite`` (then it is replaced only once the new dataroot is complete). Bad input (a missing
or unreadable bag, a missing topic, no TF path from the base frame to a sensor or to the map frame,
an existing ``--out``, ...) ends the tool with one line naming the field and exit code 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from tqdm import tqdm

from occ_core.cli import check_output_dir, positive_float, positive_int, run_cli
from occ_core.errors import OccDataError
from occ_core.fileio import remove_stale_temp_dirs, temp_dir_for
from occ_core.geometry import make_transform, matrix_to_quat_wxyz
from occ_core.paths import safe_component
from occ_ros.bag.bagio import bag_messages, open_bag
from occ_ros.bag.nusc2bag import BASE_FRAME, LIDAR, MAP_FRAME, ODOM_TOPIC

PROG = "occ-bag2nusc"
LIDAR_TOPIC = "/" + LIDAR
#: The 13 nuScenes tables, in the devkit's order.
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log", "scene",
          "sample", "sample_data", "sample_annotation", "map")
#: Last topic components of image topics (dropped to name the camera; image_transport adds ``/compressed``).
IMAGE_LEAVES = ("image_rect_compressed", "image_raw", "image_rect", "image_rect_color", "image_color", "image_mono",
                "image_rect_mono", "image")
PC2, COMPRESSED, IMAGE = "sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image"
CAMERA_INFO, TF, ODOM = "sensor_msgs/msg/CameraInfo", "tf2_msgs/msg/TFMessage", "nav_msgs/msg/Odometry"
_ROS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/occ-ros/occ_ros/occ-bag2nusc")


# ------------------------------------------------------------------ names
def camera_channel(topic: str) -> str:
    """The channel name of an image topic (see the module docstring): ``/CAM_FRONT/image_rect_compressed``
    -> ``CAM_FRONT``, ``/camera/front/image_raw/compressed`` -> ``camera_front``."""
    parts = [p for p in topic.split("/") if p]
    if len(parts) > 1 and parts[-1] == "compressed":
        parts = parts[:-1]
    if len(parts) > 1 and parts[-1] in IMAGE_LEAVES:
        parts = parts[:-1]
    return "_".join(parts)


def camera_info_topic(topic: str) -> str:
    """The CameraInfo topic beside an image topic: ``<namespace>/camera_info`` (image_transport)."""
    parts = [p for p in topic.split("/") if p]
    if len(parts) > 1 and parts[-1] == "compressed":
        parts = parts[:-1]
    return "/" + "/".join(parts[:-1] + ["camera_info"])


def check_channel(name: str, field: str) -> str:
    """``name`` if it can name a channel (folders ``samples/<name>``, ROS-name characters).

    Raises:
        OccDataError: naming ``field``.
    """
    safe_component(name, field)
    if not _ROS_NAME.match(name):
        raise OccDataError(f"{field}: expected a channel name (a letter, then letters, digits, '_'), got {name!r}")
    return name


def make_token(scene: str, *key: object) -> str:
    """A 32-hex-digit nuScenes token: uuid5 of the scene name and ``key`` (table, topic, stamp, ...)."""
    return uuid.uuid5(_NAMESPACE, "/".join(str(k) for k in (scene, *key))).hex


# ------------------------------------------------------------------ keyframes
def select_keyframes(stamps_ns: np.ndarray, hz: float) -> list[int]:
    """Indices of the keyframes among sorted LiDAR stamps: the stamp nearest each tick
    ``t0 + k / hz`` (t0 = the first stamp), when it lies within half a period of the tick and is
    not already taken."""
    stamps = np.asarray(stamps_ns, np.int64)
    if len(stamps) == 0:
        return []
    period = 1e9 / hz
    half = period / 2
    out: list[int] = []
    k = 0
    while True:
        tick = int(stamps[0]) + int(round(k * period))
        if tick > stamps[-1] + half:
            break
        i = int(np.searchsorted(stamps, tick))
        cands = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
        j = min(cands, key=lambda c: (abs(int(stamps[c]) - tick), c))
        if abs(int(stamps[j]) - tick) <= half and (not out or j > out[-1]):
            out.append(j)
        k += 1
    return out


def match_nearest(stamps_ns: np.ndarray, targets_ns: list[int], tolerance_ns: float) -> dict[int, int]:
    """``{target index: stamp index}``: for each target the nearest stamp within ``tolerance_ns``,
    each stamp used at most once (targets in order; sorted ``stamps_ns``)."""
    stamps = np.asarray(stamps_ns, np.int64)
    out: dict[int, int] = {}
    used: set[int] = set()
    if len(stamps) == 0:
        return out
    for ti, t in enumerate(targets_ns):
        i = int(np.searchsorted(stamps, t))
        cands = [j for j in (i - 1, i) if 0 <= j < len(stamps) and j not in used]
        if not cands:
            continue
        j = min(cands, key=lambda c: (abs(int(stamps[c]) - t), c))
        if abs(int(stamps[j]) - t) <= tolerance_ns:
            out[ti] = j
            used.add(j)
    return out


# ------------------------------------------------------------------ transforms
@dataclass
class _Static:
    parent: str
    translation: list[float]
    rotation: list[float]  # [w, x, y, z] as recorded

    @property
    def matrix(self) -> np.ndarray:
        return make_transform(self.translation, self.rotation)


class TfTree:
    """The bag's transforms: static edges (``/tf_static``) and dynamic ones (``/tf``, interpolated
    by :class:`~occ_ros.sweeps.EgoMotion`), each ``child -> parent`` (``T_parent_from_child``)."""

    def __init__(self, tolerance_s: float):
        self.static: dict[str, _Static] = {}
        self.dynamic: dict[str, tuple[str, Any]] = {}
        self.tolerance_s = tolerance_s

    @staticmethod
    def _frames(tf: Any) -> tuple[str, str]:
        return tf.header.frame_id.lstrip("/"), tf.child_frame_id.lstrip("/")

    def add_static(self, tf: Any, where: str) -> None:
        parent, child = self._frames(tf)
        t, q = tf.transform.translation, tf.transform.rotation
        edge = _Static(parent, [float(t.x), float(t.y), float(t.z)], [float(q.w), float(q.x), float(q.y), float(q.z)])
        old = self.static.get(child)
        if old is not None and old != edge:
            if old.parent != edge.parent or not np.allclose(old.matrix, edge.matrix, atol=1e-9):
                raise OccDataError(f"{where}: /tf_static gives {child!r} two different transforms (from {old.parent!r} "
                                   f"and {edge.parent!r}); one scene per bag: convert a bag with one rig")
            return
        self.static[child] = edge

    def add_dynamic(self, tf: Any, stamp_ns: int) -> None:
        from occ_ros.sweeps import EgoMotion

        parent, child = self._frames(tf)
        if child not in self.dynamic:
            self.dynamic[child] = (parent, EgoMotion(capacity=sys.maxsize, tolerance_s=self.tolerance_s))
        elif self.dynamic[child][0] != parent:
            return  # tf2 keeps one parent per frame; the first one seen wins
        t, q = tf.transform.translation, tf.transform.rotation
        self.dynamic[child][1].add(stamp_ns, make_transform([t.x, t.y, t.z], [q.w, q.x, q.y, q.z]))

    def chain(self, frame: str, target: str, static_only: bool = False) -> list[tuple[str, bool]] | None:
        """The edges ``(child, is_static)`` from ``frame`` up to ``target``, or None without a path."""
        out, cur, seen = [], frame, {frame}
        while cur != target:
            if cur in self.static:
                out.append((cur, True))
                cur = self.static[cur].parent
            elif cur in self.dynamic and not static_only:
                out.append((cur, False))
                cur = self.dynamic[cur][0]
            else:
                return None
            if cur in seen:
                return None
            seen.add(cur)
        return out

    def frames(self) -> list[str]:
        names = set(self.static) | set(self.dynamic)
        names |= {e.parent for e in self.static.values()} | {p for p, _ in self.dynamic.values()}
        return sorted(names)

    def compose(self, chain: list[tuple[str, bool]], stamp_ns: int | None = None) -> np.ndarray | None:
        """``T_target_from_frame`` (4, 4) of a chain at ``stamp_ns``; None when a dynamic edge has no pose there."""
        T = np.eye(4)
        for child, is_static in chain:
            if is_static:
                E = self.static[child].matrix
            else:
                E = self.dynamic[child][1].pose_at(stamp_ns)
                if E is None:
                    return None
            T = E @ T
        return T


def _pose_record(T: np.ndarray) -> tuple[list[float], list[float]]:
    return [float(v) for v in T[:3, 3]], [float(v) for v in matrix_to_quat_wxyz(T[:3, :3])]


# ------------------------------------------------------------------ configuration
@dataclass
class BagToNuscConfig:
    """Arguments of :func:`convert` (see ``occ-bag2nusc --help``)."""

    bag: Path
    out: Path
    version: str = "v1.0-mini"
    keyframe_hz: float = 2.0
    lidar_topic: str = LIDAR_TOPIC
    camera_topics: list[str] | None = None
    scene_name: str | None = None
    poses: str = "auto"
    odom_topic: str = ODOM_TOPIC
    map_frame: str = MAP_FRAME
    base_frame: str = BASE_FRAME
    pose_tolerance: float = 0.05
    jpeg_quality: int = 95
    overwrite: bool = False
    progress: bool = True


@dataclass
class BagToNuscResult:
    """What :func:`convert` wrote."""

    out: Path
    scene: str
    samples: int = 0
    sample_data: dict[str, int] = field(default_factory=dict)
    sweeps: dict[str, int] = field(default_factory=dict)
    pose_source: str = ""
    no_pose: int = 0
    duplicates: int = 0


@dataclass
class _Message:
    """One sensor message, staged to disk during the bag pass."""

    channel: str
    topic: str
    stamp_ns: int
    frame_id: str
    staged: Path
    ext: str
    width: int = 0
    height: int = 0
    K: list[list[float]] | None = None

    @property
    def timestamp_us(self) -> int:
        return (self.stamp_ns + 500) // 1000


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _lidar_points(msg: Any, where: str) -> np.ndarray:
    """(N, 5) float32 ``[x, y, z, intensity, ring]`` of a PointCloud2 (missing fields are 0)."""
    from occ_ros.conversions import ConversionError, pointcloud2_to_array

    try:
        pts = pointcloud2_to_array(msg)
    except ConversionError as e:
        raise OccDataError(f"{where}: {e}") from None
    names = pts.dtype.names or ()
    missing = [n for n in ("x", "y", "z") if n not in names]
    if missing:
        raise OccDataError(f"{where}: PointCloud2.fields: no {missing}; the cloud has {list(names)}")
    out = np.zeros((pts.shape[0], 5), np.float32)
    for i, n in enumerate(("x", "y", "z", "intensity", "ring")):
        if n in names:
            out[:, i] = pts[n]
    return out[np.isfinite(out[:, :3]).all(1)]


def _jpeg(msg: Any, msgtype: str, quality: int, where: str) -> tuple[bytes, int, int]:
    """(JPEG bytes, width, height) of an image message: a JPEG CompressedImage's bytes as recorded,
    anything else decoded and encoded with OpenCV."""
    from occ_core.data.transforms import read_image_header
    from occ_ros.conversions import ConversionError, compressed_to_array, image_to_array

    try:
        if msgtype == COMPRESSED:
            raw = np.asarray(msg.data, np.uint8).tobytes()
            head = read_image_header(raw, f"{where}: CompressedImage.data")
            if head.kind == "jpeg":
                return raw, head.width, head.height
            img = compressed_to_array(msg, "bgr8").image
        else:
            img = image_to_array(msg, "bgr8")
    except ConversionError as e:
        raise OccDataError(f"{where}: {e}") from None
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OccDataError(f"{where}: OpenCV could not encode the image as JPEG")
    return buf.tobytes(), int(img.shape[1]), int(img.shape[0])


def parse_camera_topics(items: list[str] | None) -> dict[str, str] | None:
    """``{topic: channel}`` of ``--camera-topics`` (``TOPIC`` or ``TOPIC=CHANNEL``; commas separate too)."""
    if items is None:
        return None
    out: dict[str, str] = {}
    for item in (s for it in items for s in it.split(",") if s):
        topic, _, ch = item.partition("=")
        out[topic] = ch or camera_channel(topic)
    return out


# ------------------------------------------------------------------ conversion
def _check_out(out: Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.name in ("", ".", ".."):
        raise OccDataError(f"--out: expected a dataroot folder path, got {str(out)!r}")
    if out.exists() and not out.is_dir():
        raise OccDataError(f"--out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OccDataError(f"--out: {out} exists and is not empty (use --overwrite to replace it)")
    check_output_dir(out.parent, "--out")
    return out


def _cameras(cfg: BagToNuscConfig, types: dict[str, str], bag: Path) -> dict[str, tuple[str, str]]:
    """``{image topic: (channel, camera_info topic)}``, checked against the bag's topics."""
    listing = f"the bag has {sorted(types)}"
    wanted = parse_camera_topics(cfg.camera_topics)
    if wanted is None:
        wanted = {t: camera_channel(t) for t, ty in sorted(types.items())
                  if ty in (COMPRESSED, IMAGE) and types.get(camera_info_topic(t)) == CAMERA_INFO}
    out: dict[str, tuple[str, str]] = {}
    by_channel: dict[str, str] = {}
    for topic, ch in wanted.items():
        if topic not in types:
            raise OccDataError(f"--camera-topics: {topic} is not in {bag}; {listing}")
        if types[topic] not in (COMPRESSED, IMAGE):
            raise OccDataError(f"--camera-topics: {topic} is {types[topic]}, expected {COMPRESSED} or {IMAGE}")
        info = camera_info_topic(topic)
        if types.get(info) != CAMERA_INFO:
            raise OccDataError(f"--camera-topics: {topic} has no {CAMERA_INFO} topic {info} beside it; {listing}")
        check_channel(ch, f"--camera-topics: the channel of {topic}")
        if ch == LIDAR or ch in by_channel:
            raise OccDataError(f"--camera-topics: {topic} and {by_channel.get(ch, cfg.lidar_topic)} both map to channel "
                               f"{ch!r}; choose one or name the channels with TOPIC=CHANNEL")
        by_channel[ch] = topic
        out[topic] = (ch, info)
    return out


def convert(cfg: BagToNuscConfig) -> BagToNuscResult:
    """Write the dataroot (see the module docstring); returns what was written.

    Raises:
        OccDataError: a missing or unreadable bag, a missing topic or one of the wrong type, an
            existing non-empty ``out`` (without ``overwrite``), no ego poses, no static transform
            from the base frame to a sensor frame, a malformed message.
    """
    from rosbags.typesys import Stores, get_typestore

    bag = Path(cfg.bag)
    reader = open_bag(bag, typestore=get_typestore(Stores.ROS2_JAZZY))
    try:
        out = _check_out(Path(cfg.out), cfg.overwrite)
        scene = cfg.scene_name if cfg.scene_name is not None else (bag.stem if bag.is_file() else bag.resolve().name)
        safe_component(scene, "--scene-name" if cfg.scene_name is not None else "the bag's folder name (--scene-name)")
        safe_component(cfg.version, "--version")
        types = {c.topic: c.msgtype for c in reader.connections}
        if types.get(cfg.lidar_topic) != PC2:
            what = "is not in" if cfg.lidar_topic not in types else f"is {types[cfg.lidar_topic]}, not {PC2}, in"
            raise OccDataError(f"--lidar-topic: {cfg.lidar_topic} {what} {bag}; the bag has {sorted(types)}")
        cameras = _cameras(cfg, types, bag)
        if cfg.poses == "odom" and types.get(cfg.odom_topic) != ODOM:
            raise OccDataError(f"--odom-topic: {cfg.odom_topic} ({ODOM}) is not in {bag}; the bag has {sorted(types)}")
        if cfg.poses == "tf" and types.get("/tf") != TF:
            raise OccDataError(f"--poses tf: {bag} has no /tf ({TF}) topic; the bag has {sorted(types)}")
        remove_stale_temp_dirs(out, PROG)
        tmp = temp_dir_for(out)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            result = _convert(cfg, reader, bag, types, cameras, scene, tmp)
            result.out = out
            _replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        reader.close()
    return result


def _replace(tmp: Path, out: Path) -> None:
    """Rename the finished dataroot ``tmp`` to ``out``, replacing an existing ``out`` last."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _convert(cfg: BagToNuscConfig, reader: Any, bag: Path, types: dict[str, str],
             cameras: dict[str, tuple[str, str]], scene: str, tmp: Path) -> BagToNuscResult:
    result = BagToNuscResult(Path(cfg.out), scene)
    tree = TfTree(cfg.pose_tolerance)
    from occ_ros.sweeps import EgoMotion

    odom = EgoMotion(capacity=sys.maxsize, tolerance_s=cfg.pose_tolerance)
    infos: dict[str, list[tuple[int, Any]]] = {info: [] for _, info in cameras.values()}
    msgs: dict[str, list[_Message]] = {LIDAR: [], **{ch: [] for ch, _ in cameras.values()}}
    seen: set[tuple[str, int]] = set()
    n_odom = 0
    odom_children: set[str] = set()
    staging = tmp / ".staging"
    wanted = {cfg.lidar_topic, *cameras, *infos}
    if types.get("/tf") == TF:
        wanted.add("/tf")
    if types.get("/tf_static") == TF:
        wanted.add("/tf_static")
    if types.get(cfg.odom_topic) == ODOM and cfg.poses in ("auto", "odom"):
        wanted.add(cfg.odom_topic)
    conns = [c for c in reader.connections if c.topic in wanted]
    total = sum(c.msgcount for c in conns)
    for conn, _t, raw in tqdm(bag_messages(reader, bag, conns), total=total, desc=PROG, unit="msg",
                              disable=not cfg.progress):
        topic = conn.topic
        where = f"{bag}: {topic}"
        try:
            msg = reader.deserialize(raw, conn.msgtype)
        except Exception as e:  # noqa: BLE001 - rosbags raises many types for bad CDR
            raise OccDataError(f"{where}: cannot deserialize a {conn.msgtype} message ({type(e).__name__}: {e})") from None
        if topic == "/tf_static":
            for tf in msg.transforms:
                tree.add_static(tf, where)
        elif topic == "/tf":
            for tf in msg.transforms:
                tree.add_dynamic(tf, _stamp_ns(tf.header.stamp))
        elif topic == cfg.odom_topic:
            odom_children.add(msg.child_frame_id.lstrip("/"))
            if msg.child_frame_id.lstrip("/") == cfg.base_frame:
                p, q = msg.pose.pose.position, msg.pose.pose.orientation
                odom.add(_stamp_ns(msg.header.stamp), make_transform([p.x, p.y, p.z], [q.w, q.x, q.y, q.z]))
                n_odom += 1
        elif topic in infos:
            infos[topic].append((_stamp_ns(msg.header.stamp), msg))
        else:
            stamp = _stamp_ns(msg.header.stamp)
            ch = LIDAR if topic == cfg.lidar_topic else cameras[topic][0]
            m = _Message(ch, topic, stamp, msg.header.frame_id.lstrip("/"), staging / ch / str(stamp),
                         "pcd.bin" if ch == LIDAR else "jpg")
            if (ch, m.timestamp_us) in seen:
                result.duplicates += 1
                continue
            seen.add((ch, m.timestamp_us))
            m.staged.parent.mkdir(parents=True, exist_ok=True)
            if ch == LIDAR:
                m.staged.write_bytes(_lidar_points(msg, where).tobytes())
            else:
                data, m.width, m.height = _jpeg(msg, conn.msgtype, cfg.jpeg_quality, where)
                m.staged.write_bytes(data)
            msgs[ch].append(m)
    pose_at = _pose_source(cfg, tree, odom, n_odom, sorted(odom_children), bag, result)
    return _write(cfg, scene, tmp, msgs, infos, cameras, tree, pose_at, result)


def _pose_source(cfg: BagToNuscConfig, tree: TfTree, odom: Any, n_odom: int, odom_children: list[str], bag: Path,
                 result: BagToNuscResult) -> Callable[[int], np.ndarray | None]:
    """``T_map_from_base(stamp_ns)`` (4, 4, or None outside the recorded poses) from /tf or the odometry."""
    chain = tree.chain(cfg.base_frame, cfg.map_frame) if cfg.poses in ("auto", "tf") else None
    if chain is not None:
        result.pose_source = f"/tf ({cfg.map_frame} -> {cfg.base_frame})"
        return lambda t: tree.compose(chain, t)
    if cfg.poses in ("auto", "odom") and n_odom:
        result.pose_source = cfg.odom_topic
        return odom.pose_at
    if cfg.poses == "odom":
        if odom_children:
            raise OccDataError(f"--odom-topic: {bag}: {cfg.odom_topic} has nav_msgs/Odometry.child_frame_id "
                               f"{odom_children}, expected the base frame {cfg.base_frame!r} (--base-frame)")
        raise OccDataError(f"--odom-topic: {bag}: {cfg.odom_topic} has no messages")
    raise OccDataError(f"{bag}: no ego poses: /tf has no path from {cfg.map_frame!r} to {cfg.base_frame!r} "
                       f"(frames: {tree.frames()})"
                       + ("" if cfg.poses == "tf" else f" and there is no {cfg.odom_topic} odometry of it"
                          + (f" ({cfg.odom_topic} has child frames {odom_children})" if odom_children else ""))
                       + " (see --map-frame, --base-frame, --poses)")


def _calibration(tree: TfTree, base: str, frame: str, channel: str, bag: Path) -> tuple[list[float], list[float]]:
    """(translation, rotation [w, x, y, z]) of ``frame`` in the base frame from ``/tf_static``."""
    chain = tree.chain(frame, base, static_only=True)
    if chain is None:
        raise OccDataError(f"{bag}: /tf_static has no path from {base!r} to {frame!r} (the frame of {channel}); static "
                           f"frames: {sorted(set(tree.static) | {e.parent for e in tree.static.values()})}")
    if not chain:  # the sensor frame is the base frame
        return [0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]
    if len(chain) == 1:  # copied exactly as recorded
        e = tree.static[chain[0][0]]
        return list(e.translation), list(e.rotation)
    return _pose_record(tree.compose(chain))


def _intrinsics(cam: _Message, stamps: np.ndarray, infos: list[tuple[int, Any]], info_topic: str) -> list[list[float]]:
    """K (3 x 3 rows) of the CameraInfo with the image's stamp, else the nearest one (``stamps``:
    the sorted stamps of ``infos``); checked against the image size."""
    from occ_ros.conversions import ConversionError, camera_info_to_intrinsics

    if not infos:
        raise OccDataError(f"{info_topic}: no CameraInfo messages for the images of {cam.topic}")
    i = int(np.searchsorted(stamps, cam.stamp_ns))
    j = min((c for c in (i - 1, i) if 0 <= c < len(stamps)), key=lambda c: (abs(int(stamps[c]) - cam.stamp_ns), c))
    try:
        intr = camera_info_to_intrinsics(infos[j][1])
    except ConversionError as e:
        raise OccDataError(f"{info_topic}: {e}") from None
    if (intr.width, intr.height) != (0, 0) and (intr.width, intr.height) != (cam.width, cam.height):
        raise OccDataError(f"{info_topic}: CameraInfo is for {intr.width}x{intr.height} images, the image of "
                           f"{cam.topic} at {cam.stamp_ns} ns is {cam.width}x{cam.height} (K would not fit it)")
    return [[float(v) for v in row] for row in intr.K]


def _write(cfg: BagToNuscConfig, scene: str, tmp: Path, msgs: dict[str, list[_Message]],
           infos: dict[str, list[tuple[int, Any]]], cameras: dict[str, tuple[str, str]], tree: TfTree,
           pose_at: Callable[[int], np.ndarray | None], result: BagToNuscResult) -> BagToNuscResult:
    bag = Path(cfg.bag)
    tables: dict[str, list[dict]] = {t: [] for t in TABLES}
    info_of = {ch: info for ch, info in cameras.values()}
    for rows in infos.values():
        rows.sort(key=lambda r: r[0])
    info_stamps = {topic: np.array([s for s, _ in rows], np.int64) for topic, rows in infos.items()}
    poses: dict[tuple[str, int], np.ndarray] = {}
    for ch in msgs:
        msgs[ch].sort(key=lambda m: m.stamp_ns)
        keep = []
        for m in msgs[ch]:
            T = pose_at(m.stamp_ns)
            if T is None:
                result.no_pose += 1
                continue
            poses[(ch, m.stamp_ns)] = T
            keep.append(m)
        msgs[ch] = keep
    lidar = msgs[LIDAR]
    if not lidar:
        raise OccDataError(f"--lidar-topic: {bag}: no {cfg.lidar_topic} message has an ego pose within "
                           f"{cfg.pose_tolerance} s (--pose-tolerance) of its stamp")
    key_idx = select_keyframes(np.array([m.stamp_ns for m in lidar], np.int64), cfg.keyframe_hz)
    key_stamps = [lidar[i].stamp_ns for i in key_idx]
    sample_tokens = [make_token(scene, "sample", cfg.lidar_topic, s) for s in key_stamps]
    keyframe: dict[tuple[str, int], int] = {(LIDAR, lidar[i].stamp_ns): k for k, i in enumerate(key_idx)}
    for ch, ms in msgs.items():
        if ch == LIDAR:
            continue
        match = match_nearest(np.array([m.stamp_ns for m in ms], np.int64), key_stamps, 0.5e9 / cfg.keyframe_hz)
        for k, j in match.items():
            keyframe[(ch, ms[j].stamp_ns)] = k

    log_token = make_token(scene, "log")
    map_token = make_token(scene, "map")
    scene_token = make_token(scene, "scene")
    first_us = lidar[key_idx[0]].timestamp_us
    date = datetime.datetime.fromtimestamp(first_us / 1e6, tz=datetime.timezone.utc).strftime("%Y-%m-%d")
    tables["log"].append({"token": log_token, "logfile": scene, "vehicle": "unknown", "date_captured": date,
                          "location": "unknown"})
    (tmp / "maps").mkdir()
    ok, png = cv2.imencode(".png", np.zeros((1, 1), np.uint8))
    (tmp / "maps" / f"{map_token}.png").write_bytes(png.tobytes())
    tables["map"].append({"token": map_token, "log_tokens": [log_token], "category": "semantic_prior",
                          "filename": f"maps/{map_token}.png"})
    for k, (tok, stamp) in enumerate(zip(sample_tokens, key_stamps)):
        tables["sample"].append({"token": tok, "timestamp": (stamp + 500) // 1000,
                                 "prev": sample_tokens[k - 1] if k > 0 else "",
                                 "next": sample_tokens[k + 1] if k + 1 < len(sample_tokens) else "",
                                 "scene_token": scene_token})
    tables["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(sample_tokens),
                            "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                            "name": scene, "description": f"converted by {PROG} from {bag.name} (keyframes at "
                                                          f"{cfg.keyframe_hz:g} Hz, no annotations)"})
    calib_tokens: dict[tuple, str] = {}
    for ch in sorted(msgs):
        modality = "lidar" if ch == LIDAR else "camera"
        sensor_token = make_token(scene, "sensor", ch)
        if msgs[ch]:
            tables["sensor"].append({"token": sensor_token, "channel": ch, "modality": modality})
        rows = []
        n_sweeps = 0
        for m in msgs[ch]:
            K = _intrinsics(m, info_stamps[info_of[ch]], infos[info_of[ch]], info_of[ch]) if ch != LIDAR else []
            ckey = (ch, m.frame_id, json.dumps(K))
            if ckey not in calib_tokens:
                calib_tokens[ckey] = make_token(scene, "calibrated_sensor", *ckey)
                t, q = _calibration(tree, cfg.base_frame, m.frame_id, ch, bag)
                tables["calibrated_sensor"].append({"token": calib_tokens[ckey], "sensor_token": sensor_token,
                                                    "translation": t, "rotation": q, "camera_intrinsic": K})
            k = keyframe.get((ch, m.stamp_ns))
            if k is None:  # a sweep: owned by the following keyframe's sample (the last one after it)
                k = min(int(np.searchsorted(key_stamps, m.stamp_ns)), len(key_stamps) - 1)
                n_sweeps += 1
            is_key = (ch, m.stamp_ns) in keyframe
            us = m.timestamp_us
            folder = "samples" if is_key else "sweeps"
            filename = f"{folder}/{ch}/{scene}__{ch}__{us}.{m.ext}"
            (tmp / folder / ch).mkdir(parents=True, exist_ok=True)
            m.staged.rename(tmp / filename)
            ego_token = make_token(scene, "ego_pose", m.topic, m.stamp_ns)
            t, q = _pose_record(poses[(ch, m.stamp_ns)])
            tables["ego_pose"].append({"token": ego_token, "timestamp": us, "rotation": q, "translation": t})
            rows.append({"token": make_token(scene, "sample_data", m.topic, m.stamp_ns), "sample_token": sample_tokens[k],
                         "ego_pose_token": ego_token, "calibrated_sensor_token": calib_tokens[ckey], "timestamp": us,
                         "fileformat": "pcd" if ch == LIDAR else "jpg", "is_key_frame": is_key,
                         "height": m.height, "width": m.width, "filename": filename, "prev": "", "next": ""})
        for a, b in zip(rows[:-1], rows[1:]):
            a["next"], b["prev"] = b["token"], a["token"]
        tables["sample_data"].extend(rows)
        if rows:
            result.sample_data[ch] = len(rows)
            result.sweeps[ch] = n_sweeps
    tables["sample_data"].sort(key=lambda r: (r["timestamp"], r["filename"]))
    tables["ego_pose"].sort(key=lambda r: (r["timestamp"], r["token"]))
    shutil.rmtree(tmp / ".staging", ignore_errors=True)
    (tmp / cfg.version).mkdir()
    for name in TABLES:
        (tmp / cfg.version / f"{name}.json").write_text(json.dumps(tables[name], indent=1))
    result.samples = len(sample_tokens)
    return result


# ------------------------------------------------------------------ command line
def jpeg_quality(text: str) -> int:
    """argparse type: an integer 1..100."""
    value = positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"expected an integer 1..100, got {text!r}")
    return value


def parse_args(argv: list[str] | None) -> BagToNuscConfig:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1].replace("``", ""))
    p.add_argument("bag", type=Path, help="rosbag2 folder (or .mcap/.db3 file)")
    p.add_argument("--out", required=True, type=Path, help="dataroot folder to write (new or empty; see --overwrite)")
    p.add_argument("--version", default="v1.0-mini", help="table folder name (default v1.0-mini)")
    p.add_argument("--keyframe-hz", type=positive_float, default=2.0, help="keyframe rate (default 2, as nuScenes)")
    p.add_argument("--lidar-topic", default=LIDAR_TOPIC, help=f"PointCloud2 topic (default {LIDAR_TOPIC})")
    p.add_argument("--camera-topics", nargs="+", metavar="TOPIC[=CHANNEL]",
                   help="image topics (default: every image topic with a camera_info beside it)")
    p.add_argument("--scene-name", help="scene (and log) name (default: the bag folder's name)")
    p.add_argument("--poses", choices=("auto", "tf", "odom"), default="auto",
                   help="ego poses from /tf or --odom-topic (auto: /tf when it has the path, else odometry)")
    p.add_argument("--odom-topic", default=ODOM_TOPIC, help=f"nav_msgs/Odometry topic (default {ODOM_TOPIC})")
    p.add_argument("--map-frame", default=MAP_FRAME, help=f"global frame of the ego poses (default {MAP_FRAME})")
    p.add_argument("--base-frame", default=BASE_FRAME, help=f"ego frame (default {BASE_FRAME})")
    p.add_argument("--pose-tolerance", type=positive_float, default=0.05,
                   help="seconds a message may lie outside the recorded poses (nearest pose used; default 0.05)")
    p.add_argument("--jpeg-quality", type=jpeg_quality, default=95, metavar="1..100",
                   help="quality of images encoded here (raw Image / PNG; recorded JPEGs are copied)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    return BagToNuscConfig(a.bag, a.out, a.version, a.keyframe_hz, a.lidar_topic, a.camera_topics, a.scene_name,
                           a.poses, a.odom_topic, a.map_frame, a.base_frame, a.pose_tolerance, a.jpeg_quality,
                           a.overwrite, not a.no_progress)


def _main(cfg: BagToNuscConfig) -> int:
    res = convert(cfg)
    print(f"{PROG}: wrote scene {res.scene} ({res.samples} keyframes, ego poses from {res.pose_source}) to {res.out}")
    for ch in sorted(res.sample_data):
        print(f"  {ch:<24} {res.sample_data[ch]:>6} sample_data ({res.sweeps[ch]} sweeps)")
    if res.no_pose or res.duplicates:
        print(f"{PROG}: left out {res.no_pose} messages without an ego pose and {res.duplicates} with a repeated stamp")
    return 0


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    return run_cli(PROG, lambda: _main(cfg))


if __name__ == "__main__":
    sys.exit(main())
