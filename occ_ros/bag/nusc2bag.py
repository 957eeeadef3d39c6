"""``occ-nusc2bag``: a nuScenes-format dataroot (real or synthetic) -> a ROS 2 bag (rosbags, Jazzy types).

Topics (stamps = the ``sample_data`` timestamps, DESIGN.md section 3):

=============================  ==============================  ===========================================
``/CAM_*/image_rect/compressed``  sensor_msgs/CompressedImage  the JPEG file's bytes, unmodified, ``jpeg``
                                                               (image_transport's compressed transport of
                                                               ``/CAM_*/image_rect``; ``--image-topic``)
``/CAM_*/camera_info``         sensor_msgs/CameraInfo          K/P = calibrated_sensor intrinsics (they are
                                                               for the stored image size), plumb_bob, D = 0
``/LIDAR_TOP``                 sensor_msgs/PointCloud2         x, y, z, intensity, ring float32, LIDAR_TOP frame
``/tf``                        tf2_msgs/TFMessage              odom -> base_link (the ego pose) at every
                                                               sample_data stamp
``/tf_static``                 tf2_msgs/TFMessage              map -> odom (identity: nuScenes poses do not
                                                               drift) and base_link -> every sensor, once per
                                                               scene, TRANSIENT_LOCAL
``/odom``                      nav_msgs/Odometry               the same ego pose, ``frame_id`` odom,
                                                               ``child_frame_id`` base_link (REP 105); twist
                                                               zero, covariances zero (ego_pose has no velocity)
``/occupancy/gt``              sensor_msgs/PointCloud2         per keyframe (LIDAR_TOP stamp), base_link
``/occupancy/gt_grid``         occ_ros_msgs/msg/               the same keyframe's Occ3D semantics as a dense
                               SemanticOccupancyGrid           grid (base_link, class_set occ3d, free 17, no
                                                               scores or flow); no visibility masks
``/markers/annotations``       visualization_msgs/MarkerArray  per keyframe, one CUBE per box, map frame
=============================  ==============================  ===========================================

``/occupancy/gt`` holds one point per voxel that is non-free *or* inside either visibility mask
(voxel centers x, y, z float32; label, mask_lidar, mask_camera uint8). A voxel without a point is
free and outside both masks, so the dense Occ3D ground truth (semantics and both masks) is
recovered exactly (:func:`gt_cloud_to_grid`), which masked mIoU needs: free voxels inside the camera
mask count. Non-free-only clouds would lose them. ``/occupancy/gt_grid`` carries the labels in the
node's own output type (``/occupancy/grid``) for viewers and consumers of that type; the writer's
typestore has the type registered (:func:`~occ_ros.conversions.grid_msg.grid_typestore`), so the
MCAP file holds its definition and readers need no ``occ_ros_msgs``.

The bag is written to ``.<out>.tmp-<pid>/<out>`` and renamed to ``<out>`` when complete; a run
killed before it could clean up (``kill -9``) leaves its folder behind, and the next run for the same
``--out`` removes every such folder whose process is gone (:mod:`occ_ros.bag.bagio`). A missing file is
an :class:`~occ_core.errors.OccDataError` naming it; ``--skip-missing`` skips that message and counts it.

Names from the dataroot's tables become paths and topic names only through
:mod:`occ_core.paths`: scene names and sample tokens (``<gt>/<scene>/<token>/labels.npz``) must be
single names, ``sample_data.filename`` a relative path inside the dataroot (no ``..``, nothing
absolute), the channel a ROS name (it names topics and frames); all are checked before anything is
written. Bad input (a missing dataroot, an existing or unwritable ``--out``, a bad name) ends
``occ-nusc2bag`` with one line naming the field and exit code 2.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from occ_core.classes import OCC3D_FREE
from occ_core.cli import check_input_dir, check_output_dir, run_cli
from occ_core.errors import OccDataError
from occ_core.formats import occ3d
from occ_core.grid import OCC3D, GridSpec
from occ_core.paths import safe_component, safe_relative
from occ_ros.bag.bagio import remove_stale_temp_dirs, temp_dir_for
from occ_ros.conversions.grid_msg import GRID_MSG_TYPE, grid_to_rosbags_msg, grid_typestore

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
LIDAR = "LIDAR_TOP"
MAP_FRAME, ODOM_FRAME, BASE_FRAME = "map", "odom", "base_link"
#: Camera image topic ({camera} = channel): image_transport's compressed transport of ``/<CH>/image_rect``.
IMAGE_TOPIC = "/{camera}/image_rect/compressed"
GT_TOPIC, MARKERS_TOPIC, ODOM_TOPIC = "/occupancy/gt", "/markers/annotations", "/odom"
GT_GRID_TOPIC = "/occupancy/gt_grid"
#: /occupancy/gt fields: (name, numpy dtype) in cloud order.
GT_FIELDS = (("x", np.float32), ("y", np.float32), ("z", np.float32), ("label", np.uint8),
             ("mask_lidar", np.uint8), ("mask_camera", np.uint8))
_PF = {np.dtype(np.float32): 7, np.dtype(np.uint8): 2}  # sensor_msgs/PointField datatypes
_ROS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _qos(transient_local: bool, depth: int):
    """A rosbags offered QoS profile: KEEP_LAST ``depth``, RELIABLE, TRANSIENT_LOCAL or VOLATILE."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    inf = QosTime(sec=2147483647, nsec=4294967295)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE, inf, inf,
               QosLiveliness.AUTOMATIC, inf, False)


def image_topic(cam: str, pattern: str = IMAGE_TOPIC) -> str:
    return pattern.format(camera=cam)


def info_topic(cam: str) -> str:
    return f"/{cam}/camera_info"


@dataclass
class ConvertConfig:
    """Arguments of :func:`convert` (see ``occ-nusc2bag --help``)."""

    dataroot: Path
    out: Path
    version: str = "v1.0-mini"
    scenes: list[str] | None = None
    storage: str = "mcap"
    keyframes_only: bool = False
    gt: Path | None = None
    skip_missing: bool = False
    progress: bool = True
    image_topic: str = IMAGE_TOPIC


@dataclass
class ConvertResult:
    """What :func:`convert` wrote: messages per topic, skipped files, keyframes and bytes read."""

    out: Path
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    samples: int = 0
    bytes_in: int = 0


class _Types:
    """The rosbags Jazzy typestore (with SemanticOccupancyGrid registered) and its message classes."""

    def __init__(self):
        self.store = grid_typestore()
        t = self.store.types
        self.Time, self.Header = t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"]
        self.Vec3, self.Quat = t["geometry_msgs/msg/Vector3"], t["geometry_msgs/msg/Quaternion"]
        self.Point, self.Pose = t["geometry_msgs/msg/Point"], t["geometry_msgs/msg/Pose"]
        self.Transform, self.TS = t["geometry_msgs/msg/Transform"], t["geometry_msgs/msg/TransformStamped"]
        self.TF = t["tf2_msgs/msg/TFMessage"]
        self.PoseCov, self.Twist, self.TwistCov = (t["geometry_msgs/msg/PoseWithCovariance"], t["geometry_msgs/msg/Twist"],
                                                   t["geometry_msgs/msg/TwistWithCovariance"])
        self.Odom = t["nav_msgs/msg/Odometry"]
        self.PointField, self.PointCloud2 = t["sensor_msgs/msg/PointField"], t["sensor_msgs/msg/PointCloud2"]
        self.Compressed, self.CameraInfo = t["sensor_msgs/msg/CompressedImage"], t["sensor_msgs/msg/CameraInfo"]
        self.ROI = t["sensor_msgs/msg/RegionOfInterest"]
        self.Marker, self.MarkerArray = t["visualization_msgs/msg/Marker"], t["visualization_msgs/msg/MarkerArray"]
        self.Color, self.Duration = t["std_msgs/msg/ColorRGBA"], t["builtin_interfaces/msg/Duration"]

    def header(self, stamp_ns: int, frame_id: str):
        return self.Header(stamp=self.Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
                           frame_id=frame_id)

    def transform(self, stamp_ns: int, parent: str, child: str, t, q_wxyz):
        return self.TS(header=self.header(stamp_ns, parent), child_frame_id=child,
                       transform=self.Transform(translation=self.Vec3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                                                rotation=self.quat(q_wxyz)))

    def quat(self, q_wxyz):
        return self.Quat(x=float(q_wxyz[1]), y=float(q_wxyz[2]), z=float(q_wxyz[3]), w=float(q_wxyz[0]))

    def cloud(self, stamp_ns: int, frame_id: str, arr: np.ndarray):
        """A PointCloud2 of a structured array (little endian, dense)."""
        fields = [self.PointField(name=n, offset=arr.dtype.fields[n][1], datatype=_PF[arr.dtype.fields[n][0]], count=1)
                  for n in arr.dtype.names]
        return self.PointCloud2(header=self.header(stamp_ns, frame_id), height=1, width=int(arr.shape[0]), fields=fields,
                                is_bigendian=False, point_step=arr.dtype.itemsize,
                                row_step=arr.dtype.itemsize * int(arr.shape[0]),
                                data=np.frombuffer(arr.tobytes(), dtype=np.uint8), is_dense=True)


def gt_cloud_array(semantics: np.ndarray, mask_lidar: np.ndarray, mask_camera: np.ndarray,
                   spec: GridSpec = OCC3D, free: int = 17) -> np.ndarray:
    """Structured (N,) array of the ``/occupancy/gt`` points: voxels non-free or in either mask,
    centers in base_link (see the module docstring)."""
    keep = (semantics != free) | mask_lidar | mask_camera
    ijk = np.argwhere(keep)
    centers = np.asarray(spec.range_min, np.float64) + np.asarray(spec.voxel_size, np.float64) * (ijk + 0.5)
    out = np.empty(len(ijk), dtype=np.dtype(list(GT_FIELDS)))
    out["x"], out["y"], out["z"] = centers[:, 0], centers[:, 1], centers[:, 2]
    i, j, k = ijk.T
    out["label"], out["mask_lidar"], out["mask_camera"] = semantics[i, j, k], mask_lidar[i, j, k], mask_camera[i, j, k]
    return out


def gt_cloud_to_grid(msg: Any, spec: GridSpec = OCC3D, free: int = 17) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ``(semantics uint8, mask_lidar bool, mask_camera bool)`` (X, Y, Z) grids from a
    ``/occupancy/gt`` PointCloud2 (rclpy or rosbags message)."""
    from occ_ros.conversions import pointcloud2_to_array

    pts = pointcloud2_to_array(msg, [n for n, _ in GT_FIELDS])
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], 1).astype(np.float64)
    ijk = np.floor((xyz - np.asarray(spec.range_min)) / np.asarray(spec.voxel_size)).astype(np.int64)
    dims = tuple(spec.dims)
    if len(ijk) and ((ijk < 0).any() or (ijk >= np.asarray(dims)).any()):
        raise OccDataError(f"{GT_TOPIC}: voxel centers outside the {spec.name} grid {spec.point_range}")
    sem = np.full(dims, free, np.uint8)
    ml, mc = np.zeros(dims, bool), np.zeros(dims, bool)
    i, j, k = ijk.T
    sem[i, j, k], ml[i, j, k], mc[i, j, k] = pts["label"], pts["mask_lidar"] != 0, pts["mask_camera"] != 0
    return sem, ml, mc


def box_marker(T: _Types, ann: dict, stamp_ns: int, mid: int, category: str):
    """A CUBE marker of a nuScenes ``sample_annotation`` (global = map frame; size = w, l, h)."""
    w, length, h = (float(v) for v in ann["size"])
    x, y, z = (float(v) for v in ann["translation"])
    return T.Marker(header=T.header(stamp_ns, MAP_FRAME), ns=category, id=mid, type=1, action=0,
                    pose=T.Pose(position=T.Point(x=x, y=y, z=z), orientation=T.quat(ann["rotation"])),
                    scale=T.Vec3(x=length, y=w, z=h), color=T.Color(r=1.0, g=0.6, b=0.0, a=0.5),
                    lifetime=T.Duration(sec=0, nanosec=500_000_000), frame_locked=False, points=[], colors=[],
                    texture_resource="", texture=_empty_compressed(T), uv_coordinates=[], text=ann["token"][:8],
                    mesh_resource="", mesh_file=_empty_mesh(T), mesh_use_embedded_materials=False)


def _empty_compressed(T: _Types):
    return T.Compressed(header=T.header(0, ""), format="", data=np.zeros(0, np.uint8))


def _empty_mesh(T: _Types):
    return T.store.types["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8))


def parse_args(argv: list[str] | None) -> ConvertConfig:
    p = argparse.ArgumentParser(prog="occ-nusc2bag", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", required=True, type=Path, help="nuScenes-format dataroot")
    p.add_argument("--version", default="v1.0-mini", help="table version (default v1.0-mini)")
    p.add_argument("--scenes", nargs="+", help="scene names (default: every scene); commas also separate")
    p.add_argument("--out", required=True, type=Path, help="bag folder to create (must not exist)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--keyframes-only", action="store_true", help="only keyframe sample_data (2 Hz)")
    p.add_argument("--gt", type=Path, help="Occ3D gts folder (default <dataroot>/gts if it exists)")
    p.add_argument("--skip-missing", action="store_true", help="skip (and count) missing files instead of failing")
    p.add_argument("--image-topic", default=IMAGE_TOPIC, metavar="PATTERN",
                   help=f"camera image topic, {{camera}} = channel (default {IMAGE_TOPIC}; the layout of older "
                        f"versions: /{{camera}}/image_rect_compressed)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    scenes = [s for item in a.scenes for s in item.split(",") if s] if a.scenes else None
    return ConvertConfig(a.dataroot, a.out, a.version, scenes, a.storage, a.keyframes_only, a.gt, a.skip_missing,
                         not a.no_progress, a.image_topic)


def _sample_data_of_scene(nusc: Any, scene: dict, keyframes_only: bool) -> list[dict]:
    """Every sample_data record of a scene (keyframes, and sweeps unless ``keyframes_only``), by time."""
    out = []
    tok = scene["first_sample_token"]
    while tok:
        sample = nusc.get("sample", tok)
        for sd_tok in sample["data"].values():
            sd = nusc.get("sample_data", sd_tok)
            # walk back over the sweeps belonging to this sample (nuScenes: sweeps precede their keyframe)
            if not keyframes_only:
                prev = sd["prev"]
                while prev:
                    p = nusc.get("sample_data", prev)
                    if p["is_key_frame"] or p["sample_token"] != tok:
                        break
                    out.append(p)
                    prev = p["prev"]
            out.append(sd)
        tok = sample["next"]
    out.sort(key=lambda r: (r["timestamp"], r["channel"]))
    return out


def check_out(out: Path, field: str = "--out") -> Path:
    """``out`` if a new bag folder can be created there (checked before the conversion starts).

    Raises:
        OccDataError: naming ``field``: an existing path, a bad name, or a parent folder that
            cannot be created or written.
    """
    out = Path(out)
    if out.name in ("", ".", ".."):
        raise OccDataError(f"{field}: expected a new bag folder path, got {str(out)!r}")
    if out.exists() or out.is_symlink():
        raise OccDataError(f"{field}: {out} already exists (the output bag must be a new folder)")
    check_output_dir(out.parent, field)
    return out


def check_names(scene_name: str, sd: dict, sample_token: str | None) -> str:
    """Check the names of one record that become paths or topic names (see the module docstring);
    returns the checked relative file name.

    Raises:
        OccDataError: naming the table field and the value.
    """
    safe_component(scene_name, "scene.name")
    ch = safe_component(sd.get("channel"), "sample_data.channel")
    if not _ROS_NAME.match(ch):
        raise OccDataError(f"sample_data.channel: expected a ROS name (a letter, then letters, digits, '_'), got {ch!r}")
    if sample_token is not None:
        safe_component(sample_token, "sample.token")
    return safe_relative(sd.get("filename"), "sample_data.filename")


def check_image_topic(pattern: str, field: str = "--image-topic") -> str:
    """``pattern`` if it names one absolute topic per camera (``{camera}`` in it, ROS name characters).

    Raises:
        OccDataError: naming ``field`` and what is expected.
    """
    try:
        topic = pattern.format(camera="CAM")
    except (KeyError, IndexError, ValueError):
        topic = ""
    if "{camera}" not in pattern or not re.match(r"^(/[A-Za-z_][A-Za-z0-9_]*)+$", topic):
        raise OccDataError(f"{field}: expected an absolute topic name containing {{camera}} "
                           f"(e.g. {IMAGE_TOPIC}), got {pattern!r}")
    return pattern


def convert(cfg: ConvertConfig) -> ConvertResult:
    """Write the bag (see the module docstring); returns what was written.

    Raises:
        OccDataError: a missing dataroot, unknown scenes, an existing or unwritable ``out``, a
            name from the tables that cannot become a path or topic, or a missing file (without
            ``skip_missing``).
    """
    from nuscenes.nuscenes import NuScenes
    from rosbags.rosbag2 import StoragePlugin, Writer

    root = check_input_dir(cfg.dataroot, "--dataroot")
    out = check_out(Path(cfg.out))
    check_image_topic(cfg.image_topic)
    if not (root / cfg.version).is_dir():
        raise OccDataError(f"{root / cfg.version}: no nuScenes tables of version {cfg.version}")
    if cfg.gt is not None:
        check_input_dir(cfg.gt, "--gt")
    gt_root = cfg.gt if cfg.gt is not None else (root / "gts" if (root / "gts").is_dir() else None)
    nusc = NuScenes(cfg.version, str(root), verbose=False)
    by_name = {s["name"]: s for s in nusc.scene}
    names = cfg.scenes or sorted(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise OccDataError(f"{root / cfg.version}/scene.json: scenes {unknown} are not in the scene table")
    T = _Types()
    result = ConvertResult(out)
    records = [(n, sd) for n in names for sd in _sample_data_of_scene(nusc, by_name[n], cfg.keyframes_only)]
    files = {sd["token"]: check_names(n, sd, sd["sample_token"] if gt_root is not None else None) for n, sd in records}
    remove_stale_temp_dirs(out, "occ-nusc2bag")
    tmp_dir = temp_dir_for(out)
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    tmp = tmp_dir / out.name  # the storage file is named after the bag folder
    storage = StoragePlugin.MCAP if cfg.storage == "mcap" else StoragePlugin.SQLITE3
    conns: dict[str, Any] = {}
    try:
        with Writer(tmp, version=9, storage_plugin=storage) as w:
            def conn(topic: str, typename: str, static: bool):
                if topic not in conns:
                    conns[topic] = w.add_connection(topic, typename, typestore=T.store,
                                                    offered_qos_profiles=[_qos(static, 1 if static else 10)])
                return conns[topic]

            def write(topic: str, typename: str, stamp_ns: int, msg, static: bool = False) -> None:
                w.write(conn(topic, typename, static), stamp_ns, T.store.serialize_cdr(msg, typename))
                result.counts[topic] = result.counts.get(topic, 0) + 1

            static_written: set[str] = set()
            for scene_name, sd in tqdm(records, desc="occ-nusc2bag", unit="msg", disable=not cfg.progress):
                stamp = int(sd["timestamp"]) * 1000
                ch = sd["channel"]
                cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                ep = nusc.get("ego_pose", sd["ego_pose_token"])
                if scene_name not in static_written:  # base_link -> every sensor, once per scene, at its first stamp
                    first = nusc.get("sample", by_name[scene_name]["first_sample_token"])
                    tfs = [T.transform(stamp, MAP_FRAME, ODOM_FRAME, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0))]
                    for c in sorted(first["data"]):
                        ccs = nusc.get("calibrated_sensor", nusc.get("sample_data", first["data"][c])["calibrated_sensor_token"])
                        tfs.append(T.transform(stamp, BASE_FRAME, c, ccs["translation"], ccs["rotation"]))
                    write("/tf_static", "tf2_msgs/msg/TFMessage", stamp, T.TF(transforms=tfs), static=True)
                    static_written.add(scene_name)
                path = root / files[sd["token"]]
                if not path.is_file():
                    if not cfg.skip_missing:
                        raise OccDataError(f"{path}: missing {ch} file of sample_data {sd['token']} "
                                           f"(use --skip-missing to continue without it)")
                    result.skipped.append(str(path))
                    continue
                payload = path.read_bytes()
                result.bytes_in += len(payload)
                write("/tf", "tf2_msgs/msg/TFMessage", stamp,
                      T.TF(transforms=[T.transform(stamp, ODOM_FRAME, BASE_FRAME, ep["translation"], ep["rotation"])]))
                pose = T.Pose(position=T.Point(x=float(ep["translation"][0]), y=float(ep["translation"][1]),
                                               z=float(ep["translation"][2])), orientation=T.quat(ep["rotation"]))
                write(ODOM_TOPIC, "nav_msgs/msg/Odometry", stamp,
                      T.Odom(header=T.header(stamp, ODOM_FRAME), child_frame_id=BASE_FRAME,
                             pose=T.PoseCov(pose=pose, covariance=np.zeros(36)),
                             twist=T.TwistCov(twist=T.Twist(linear=T.Vec3(x=0.0, y=0.0, z=0.0),
                                                            angular=T.Vec3(x=0.0, y=0.0, z=0.0)),
                                              covariance=np.zeros(36))))
                if sd["sensor_modality"] == "camera":
                    write(image_topic(ch, cfg.image_topic), "sensor_msgs/msg/CompressedImage", stamp,
                          T.Compressed(header=T.header(stamp, ch), format="jpeg", data=np.frombuffer(payload, np.uint8)))
                    K = np.asarray(cs["camera_intrinsic"], np.float64)
                    P = np.zeros((3, 4))
                    P[:, :3] = K
                    write(info_topic(ch), "sensor_msgs/msg/CameraInfo", stamp,
                          T.CameraInfo(header=T.header(stamp, ch), height=int(sd["height"]), width=int(sd["width"]),
                                       distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1),
                                       p=P.reshape(-1), binning_x=0, binning_y=0,
                                       roi=T.ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)))
                elif sd["sensor_modality"] == "lidar":
                    raw = np.frombuffer(payload, np.float32)
                    if raw.size % 5:
                        raise OccDataError(f"{path}: expected float32 x, y, z, intensity, ring records (size % 20 == 0), "
                                           f"got {len(payload)} bytes")
                    pts = raw.reshape(-1, 5)
                    arr = np.empty(len(pts), dtype=[(n, np.float32) for n in ("x", "y", "z", "intensity", "ring")])
                    for i, n in enumerate(arr.dtype.names):
                        arr[n] = pts[:, i]
                    write("/" + ch, "sensor_msgs/msg/PointCloud2", stamp, T.cloud(stamp, ch, arr))
                    if sd["is_key_frame"]:
                        result.samples += 1
                        sample = nusc.get("sample", sd["sample_token"])
                        if gt_root is not None:
                            gpath = (Path(gt_root) / safe_component(scene_name, "scene.name")
                                     / safe_component(sample["token"], "sample.token") / "labels.npz")
                            if not gpath.is_file():
                                if not cfg.skip_missing:
                                    raise OccDataError(f"{gpath}: missing Occ3D ground truth of sample {sample['token']}")
                                result.skipped.append(str(gpath))
                            else:
                                g = occ3d.read_gt(gpath)
                                write(GT_TOPIC, "sensor_msgs/msg/PointCloud2", stamp,
                                      T.cloud(stamp, BASE_FRAME, gt_cloud_array(g.semantics, g.mask_lidar, g.mask_camera)))
                                write(GT_GRID_TOPIC, GRID_MSG_TYPE, stamp,
                                      grid_to_rosbags_msg(g.semantics, OCC3D, stamp, BASE_FRAME, class_set="occ3d",
                                                          free_label=OCC3D_FREE, typestore=T.store))
                        markers = []
                        for i, atok in enumerate(sample["anns"]):
                            ann = nusc.get("sample_annotation", atok)
                            markers.append(box_marker(T, ann, stamp, i, ann["category_name"]))
                        write(MARKERS_TOPIC, "visualization_msgs/msg/MarkerArray", stamp, T.MarkerArray(markers=markers))
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    return run_cli("occ-nusc2bag", lambda: _main(cfg))


def _main(cfg: ConvertConfig) -> int:
    res = convert(cfg)
    total = sum(res.counts.values())
    print(f"occ-nusc2bag: wrote {total} messages on {len(res.counts)} topics ({res.samples} keyframes) to {res.out}")
    for topic in sorted(res.counts):
        print(f"  {topic:<40} {res.counts[topic]:>6}")
    if res.skipped:
        print(f"occ-nusc2bag: skipped {len(res.skipped)} missing files (first: {res.skipped[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
