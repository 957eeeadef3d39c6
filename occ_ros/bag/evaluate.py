"""``occ-bag-eval BAG [--rate R]``: score the occupancy node in the loop on a bag from ``occ-nusc2bag``.

One process, one rclpy context, three nodes on the live DDS graph: the :class:`~occ_ros.bag.play.BagPlayer`
(the bag's serialized messages at ``rate`` x recorded speed, with ``/clock``), an
:class:`~occ_ros.occupancy_node.OccupancyNode` (its parameters as the launch file gives them, the
model from ``--config`` / ``--checkpoint``) and a recorder subscribed to the node's
``/occupancy/grid`` (``occ_ros_msgs/SemanticOccupancyGrid``) and ``/occupancy/voxels``, both
serialized (``raw=True``), so the recording is byte-exact. Extrinsics: tf2_ros is not installed
with the rclpy wheels, so the node gets the bag's ``/tf_static`` (base_link -> sensors) as static
extrinsics; the rig file is not used. The node subscribes the bag's ``/odom`` (the ego pose at
every sample_data stamp), which places each camera at its own image stamp
(``camera_motion_compensation``) as the offline loader does from the nuScenes ego poses.

Matching and metrics: the predictions are the labels of the ``/occupancy/grid`` messages (CDR
decoded with :func:`~occ_ros.conversions.grid_msg.grid_typestore`, unpacked by
:func:`~occ_ros.conversions.grid_msg.msg_to_grid`); a grid whose geometry is not Occ3D's (dims,
voxel size, min corner, axis-aligned in base_link) stops the evaluation with an
:class:`~occ_core.errors.OccDataError`. A prediction is matched to the ``/occupancy/gt`` keyframe
with the same header stamp (the node stamps its output with the LiDAR stamp; the converter stamps the
ground truth with the keyframe LiDAR stamp). The ground truth comes from ``/occupancy/gt`` (it
carries the visibility masks), so bags converted before ``/occupancy/gt_grid`` existed evaluate
too. Occ3D mIoU / geometric IoU (camera mask by default) through
``occ_core.eval.occupancy.occ3d_miou`` and RayIoU through ``occ_core.eval.rayiou.occ3d_rayiou`` with
ray origins from the bag: the LIDAR_TOP poses (``/tf`` map -> base_link at each keyframe stamp x
``/tf_static`` base_link -> LIDAR_TOP) of the scene's keyframes, selected by
:func:`occ_core.eval.rayiou.select_ray_origins` exactly as ``occ-eval`` does from the nuScenes tables.
A scene starts at each ``/tf_static`` message (the converter writes one per scene). A keyframe
without a prediction is a dropped frame and is left out of the metrics (the count is reported).

Before playing, the first ``CameraInfo`` of each camera is published once (a pre-roll, as a camera
driver's info precedes its stream) so that the first keyframe is not skipped for lack of intrinsics.

Latency = wall time from the player publishing the LiDAR cloud to the recorder receiving the
grid with its stamp (p50/p95 over the matched frames); the effective rate = grids received per
wall second of playback. ``--record`` writes an MCAP bag (atomically) with the predictions as
received, ``/occupancy/grid`` (its definition stored in the file) and ``/occupancy/voxels``, and
the input bag's ``/occupancy/gt``, ``/occupancy/gt_grid`` (when present), ``/tf`` and ``/tf_static``.

Gaps between messages longer than ``--max-gap`` s of bag time (default 2; synthetic scenes are an
hour apart) are skipped, not slept through, with a line saying so. Bad input ends the tool with
one line and exit code 2 before the evaluation starts: a missing path, a file that is not a bag or
a truncated bag, a missing model config or checkpoint, a ``--record`` or ``--json`` that cannot be
written (or a ``--record`` path that exists and is not a bag folder), bad numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from occ_core.cli import check_input_file, check_output_dir, check_output_file, positive_float, positive_int, run_cli
from occ_core.errors import OccDataError
from occ_core.eval.occupancy import occ3d_miou, select_mask
from occ_core.eval.rayiou import occ3d_rayiou, select_ray_origins
from occ_core.eval.report import MetricReport
from occ_core.fileio import atomic_write_text
from occ_core.geometry import make_transform
from occ_core.grid import OCC3D
from occ_ros.bag.bagio import bag_messages, open_bag, remove_stale_temp_dirs, temp_dir_for
from occ_ros.bag.nusc2bag import BASE_FRAME, GT_GRID_TOPIC, GT_TOPIC, MAP_FRAME, ODOM_TOPIC, gt_cloud_to_grid
from occ_ros.bag.play import BagPlayer, PlayConfig
from occ_ros.conversions.grid_msg import GRID_MSG_TYPE, SemanticGrid, grid_typestore, msg_to_grid
from occ_ros.params import PARAMETERS, image_topic_for_bag

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent
GRID_TOPIC = "/occupancy/grid"
VOXELS_TOPIC = "/occupancy/voxels"
LIDAR_TOPIC = "/LIDAR_TOP"
#: Topics of the input bag copied into the ``--record`` bag (those it has).
COPIED_TOPICS = (GT_TOPIC, GT_GRID_TOPIC, "/tf", "/tf_static")


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _tf_matrix(tf: Any) -> np.ndarray:
    t, q = tf.transform.translation, tf.transform.rotation
    return make_transform(np.array([t.x, t.y, t.z]), np.array([q.w, q.x, q.y, q.z]))


@dataclass
class GtFrame:
    """One ground-truth keyframe of the bag: stamp, scene index, (X, Y, Z) grids, ray origins (K, 3) in base_link."""

    stamp_ns: int
    scene: int
    semantics: np.ndarray
    mask_lidar: np.ndarray
    mask_camera: np.ndarray
    origins: np.ndarray | None = None


@dataclass
class BagGroundTruth:
    """What the evaluation reads from the bag before playing: keyframes, static extrinsics
    (frame -> base_link, 4x4) and the LiDAR log-time -> header-stamp map.

    Attributes:
        static: every ``/tf_static`` transform, later scenes overriding earlier ones.
        scene_static: per scene in bag order, ``(first stamp ns, {frame: T_base_from_frame})``
            of its own ``/tf_static`` (each recording has its own calibration).
    """

    frames: list[GtFrame]
    static: dict[str, np.ndarray]
    lidar_stamps: dict[int, int]
    topics: frozenset[str] = frozenset()
    scene_static: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)


def read_ground_truth(bag: Path, lidar_frame: str = "LIDAR_TOP") -> BagGroundTruth:
    """``/occupancy/gt``, ``/tf``, ``/tf_static`` and the LiDAR stamps of ``bag``, with the ray origins.

    Raises:
        OccDataError: no ``/occupancy/gt`` topic, or a keyframe without its map -> base_link ``/tf``.
    """
    from rosbags.typesys import Stores, get_typestore

    reader = open_bag(bag, typestore=get_typestore(Stores.ROS2_JAZZY))
    try:
        topics = {c.topic for c in reader.connections}
        if GT_TOPIC not in topics:
            raise OccDataError(f"{bag}: no {GT_TOPIC} topic (convert with occ-nusc2bag and Occ3D gts/); has {sorted(topics)}")
        conns = [c for c in reader.connections if c.topic in (GT_TOPIC, "/tf", "/tf_static", LIDAR_TOPIC)]
        frames: list[GtFrame] = []
        ego: dict[int, np.ndarray] = {}
        ego_parent: dict[int, str] = {}
        map_from: dict[str, np.ndarray] = {MAP_FRAME: np.eye(4)}  # static map -> frame (REP 105: map -> odom)
        static: dict[str, np.ndarray] = {}
        scene_static: list[tuple[int, dict[str, np.ndarray]]] = []
        lidar_stamps: dict[int, int] = {}
        scene = -1
        for conn, t_ns, raw in bag_messages(reader, bag, conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == "/tf_static":
                scene += 1
                scene_static.append((t_ns, {}))
                for tf in msg.transforms:
                    if tf.header.frame_id == BASE_FRAME:
                        static[tf.child_frame_id] = scene_static[-1][1][tf.child_frame_id] = _tf_matrix(tf)
                    elif tf.header.frame_id == MAP_FRAME:
                        map_from[tf.child_frame_id] = _tf_matrix(tf)
            elif conn.topic == "/tf":
                for tf in msg.transforms:
                    if tf.child_frame_id == BASE_FRAME:
                        ego[_stamp_ns(tf.header.stamp)] = _tf_matrix(tf)
                        ego_parent[_stamp_ns(tf.header.stamp)] = tf.header.frame_id
            elif conn.topic == LIDAR_TOPIC:
                lidar_stamps[t_ns] = _stamp_ns(msg.header.stamp)
            else:
                sem, ml, mc = gt_cloud_to_grid(msg)
                frames.append(GtFrame(_stamp_ns(msg.header.stamp), max(scene, 0), sem, ml, mc))
    finally:
        reader.close()
    for t, parent in ego_parent.items():  # odom -> base_link (occ-nusc2bag since issue 17) composed with map -> odom
        if parent not in map_from:
            raise OccDataError(f"{bag}: /tf has {parent} -> {BASE_FRAME} but /tf_static has no {MAP_FRAME} -> {parent}")
        ego[t] = map_from[parent] @ ego[t]
    if lidar_frame not in static:
        raise OccDataError(f"{bag}: /tf_static has no {BASE_FRAME} -> {lidar_frame} transform")
    for s in sorted({f.scene for f in frames}):
        keys = [f for f in frames if f.scene == s]
        T_lidar = scene_static[s][1].get(lidar_frame, static[lidar_frame]) if s < len(scene_static) else static[lidar_frame]
        missing = [f.stamp_ns for f in keys if f.stamp_ns not in ego]
        if missing:
            raise OccDataError(f"{bag}: /tf has no map -> {BASE_FRAME} at the keyframe stamps {missing[:3]} ns")
        g_from_l = np.stack([ego[f.stamp_ns] @ T_lidar for f in keys])
        for i, f in enumerate(keys):
            f.origins = select_ray_origins(g_from_l, i, T_lidar)
    return BagGroundTruth(frames, static, lidar_stamps, frozenset(topics), scene_static)


class StaticExtrinsics:
    """Node extrinsics from the bag's ``/tf_static`` (what TF would give the node in a full ROS 2
    install): for a stamp, the transforms of the last scene that started at or before it (a bag
    of several recordings carries one calibration each), else ``T_base_from``."""

    def __init__(self, T_base_from: dict[str, np.ndarray],
                 scenes: list[tuple[int, dict[str, np.ndarray]]] | None = None):
        self._T = dict(T_base_from)
        self._T[BASE_FRAME] = np.eye(4)
        self._scenes = sorted(scenes or [], key=lambda s: s[0])

    def lookup(self, frame_id: str, stamp_ns: int) -> np.ndarray | None:
        T = self._T.get(frame_id)
        for start, transforms in self._scenes:
            if start > stamp_ns:
                break
            T = transforms.get(frame_id, T)
        return None if T is None else T.copy()

    def describe(self) -> str:
        return f"bag /tf_static ({', '.join(sorted(self._T))})"


@dataclass
class EvalConfig:
    """Arguments of :func:`evaluate` (see ``occ-bag-eval --help``)."""

    bag: Path
    rate: float = 1.0
    config: Path = PACKAGE_ROOT / "config" / "models" / "fusion.yaml"
    checkpoint: Path | None = PACKAGE_ROOT / "config" / "models" / "fusion_demo.pt"
    mask: str = "camera"
    record: Path | None = None
    json_out: Path | None = None
    lidar_sweeps: int = 1
    worker_queue_size: int = 2
    temporal_pose_wait: float = next(s.default for s in PARAMETERS if s.name == "temporal_pose_wait")
    drain_timeout: float = 120.0
    discovery_timeout: float = 10.0
    max_gap: float = 2.0


@dataclass
class PlaybackResult:
    """Scores and timing of one playback (metrics over the matched keyframes only).

    Attributes:
        voxel, ray: the occ_core metric reports (mIoU / IoU, RayIoU).
        frames: ground-truth keyframes in the bag; predicted: matched predictions; dropped: frames - predicted.
        latency_ms_p50, latency_ms_p95: LiDAR published -> grid received (nan without predictions).
        effective_rate_hz: grids received per wall second of playback.
        counters: the node's counters at the end (inputs, incomplete, dropped by the worker, ...).
    """

    voxel: MetricReport
    ray: MetricReport
    frames: int
    predicted: int
    dropped: int
    latency_ms_p50: float
    latency_ms_p95: float
    effective_rate_hz: float
    play_rate: float
    wall_s: float
    counters: dict[str, int] = field(default_factory=dict)
    predictions: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, float]:
        return {"mIoU": self.voxel.summary["mIoU"], "IoU": self.voxel.summary["IoU (geometric)"],
                "RayIoU": self.ray.summary["RayIoU"], "frames": self.frames, "predicted": self.predicted,
                "dropped": self.dropped, "latency_ms_p50": self.latency_ms_p50, "latency_ms_p95": self.latency_ms_p95,
                "effective_rate_hz": self.effective_rate_hz, "play_rate": self.play_rate}

    def to_text(self) -> str:
        s = self.summary()
        return (f"{self.voxel.to_text()}\n\n{self.ray.to_text()}\n\n"
                f"playback x{s['play_rate']:g}: {s['predicted']}/{s['frames']} keyframes predicted "
                f"({s['dropped']} dropped), latency p50 {s['latency_ms_p50']:.0f} ms p95 {s['latency_ms_p95']:.0f} ms, "
                f"effective rate {s['effective_rate_hz']:.2f} Hz")


def grid_prediction(raw: bytes, store: Any, where: str) -> np.ndarray:
    """The (X, Y, Z) uint8 labels of a serialized SemanticOccupancyGrid, checked to be an Occ3D grid.

    Raises:
        OccDataError: (naming ``where``) a grid that is not Occ3D's geometry in base_link.
    """
    grid = msg_to_grid(store.deserialize_cdr(raw, GRID_MSG_TYPE))
    check_occ3d_geometry(grid, where)
    return grid.labels


def check_occ3d_geometry(grid: SemanticGrid, where: str) -> None:
    """Raise :class:`OccDataError` unless ``grid`` has the dims, voxel size and min corner of
    :data:`~occ_core.grid.OCC3D`, axis-aligned in ``base_link`` (what the ground truth is scored in)."""
    got, want = grid.spec, OCC3D
    same = (tuple(got.dims) == tuple(want.dims) and np.allclose(got.voxel_size, want.voxel_size, rtol=0, atol=1e-6)
            and np.allclose(got.range_min, want.range_min, rtol=0, atol=1e-6)
            and np.allclose(grid.T_frame_from_grid[:3, :3], np.eye(3), rtol=0, atol=1e-9) and grid.frame_id == BASE_FRAME)
    if not same:
        raise OccDataError(
            f"{where}: expected the {want.name} grid (dims {tuple(want.dims)}, voxel size {tuple(want.voxel_size)} m, "
            f"min corner {tuple(want.range_min)} m, axis-aligned in {BASE_FRAME}), got dims {tuple(got.dims)}, "
            f"voxel size {tuple(got.voxel_size)} m, min corner {tuple(got.range_min)} m in {grid.frame_id!r} with "
            f"rotation {grid.T_frame_from_grid[:3, :3].round(6).tolist()}")


def check_record_path(out: Path, field: str = "--record") -> Path:
    """Make sure the recording can be written at ``out`` (a bag folder to create, or an earlier
    recording to replace) before the evaluation starts.

    Raises:
        OccDataError: naming ``field``: an existing path that is not a bag folder (it would be
            deleted), a bad name, or a parent folder that cannot be created or written.
    """
    out = Path(out)
    if out.name in ("", ".", ".."):
        raise OccDataError(f"{field}: expected a bag folder path, got {str(out)!r}")
    if out.exists() and not (out.is_dir() and (out / "metadata.yaml").is_file()):
        raise OccDataError(f"{field}: {out} exists and is not a bag folder (expected a new path, or an earlier "
                           f"recording to replace)")
    check_output_dir(out.parent, field)
    return out


def _write_record(out: Path, bag: Path, grids: list[tuple[int, bytes]], voxels: list[tuple[int, bytes]]) -> None:
    """MCAP bag of the predictions as received (``(stamp ns, CDR)``, log time = stamp) plus the
    input's :data:`COPIED_TOPICS`, atomically (temporary folder ``.<out>.tmp-<pid>`` + rename;
    stale folders of killed runs are removed first)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = grid_typestore()
    out = check_record_path(out)
    remove_stale_temp_dirs(out, "occ-bag-eval")
    tmp_dir = temp_dir_for(out)
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    try:
        with Writer(tmp_dir / out.name, version=9, storage_plugin=StoragePlugin.MCAP) as w:
            reader = open_bag(bag, typestore=store)
            try:
                for c in reader.connections:
                    if c.topic in COPIED_TOPICS:
                        wc = w.add_connection(c.topic, c.msgtype, typestore=store,
                                              offered_qos_profiles=list(getattr(c.ext, "offered_qos_profiles", [])))
                        for _, t_ns, raw in bag_messages(reader, bag, [c]):
                            w.write(wc, t_ns, raw)
            finally:
                reader.close()
            for topic, typename, msgs in ((GRID_TOPIC, GRID_MSG_TYPE, grids),
                                          (VOXELS_TOPIC, "sensor_msgs/msg/PointCloud2", voxels)):
                conn = w.add_connection(topic, typename, typestore=store)
                for stamp, raw in msgs:
                    w.write(conn, stamp, raw)
        if out.exists():
            shutil.rmtree(out)
        (tmp_dir / out.name).rename(out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def check_inputs_and_outputs(cfg: EvalConfig, model: bool = True) -> None:
    """What :func:`evaluate` checks before it starts: numbers, the bag, the model files (``model``),
    the ``--record`` and ``--json`` outputs.

    Raises:
        OccDataError: naming the field and what was expected.
    """
    if not cfg.rate > 0:
        raise OccDataError(f"--rate: expected a number > 0, got {cfg.rate}")
    if not cfg.max_gap >= 0:
        raise OccDataError(f"--max-gap: expected a number >= 0, got {cfg.max_gap}")
    open_bag(cfg.bag).close()
    if model:
        check_input_file(cfg.config, "--config")
        if cfg.checkpoint is not None:
            check_input_file(cfg.checkpoint, "--checkpoint")
    if cfg.record is not None:
        check_record_path(cfg.record)
    if cfg.json_out is not None:
        check_output_file(cfg.json_out, "--json")


def evaluate(cfg: EvalConfig, predictor: Any = None, progress: bool = True) -> PlaybackResult:
    """Play ``cfg.bag`` through an in-process :class:`OccupancyNode` and score its predictions.

    Args:
        predictor: an ``occ_core.frame.Predictor`` (None = ``load_predictor(cfg.config, cfg.checkpoint)``).

    Raises:
        OccDataError: a bag without ground truth, or unreadable; a missing model config or
            checkpoint; a ``record`` or ``json_out`` that cannot be written (checked first).
    """
    import rclpy
    from occ_ros_msgs.msg import SemanticOccupancyGrid
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import PointCloud2
    from tqdm import tqdm

    from occ_ros.occupancy_node import OccupancyNode

    check_inputs_and_outputs(cfg, predictor is None)
    gt = read_ground_truth(cfg.bag)
    if predictor is None:
        from occ_core.models.predictor import load_predictor

        predictor = load_predictor(str(cfg.config), str(cfg.checkpoint) if cfg.checkpoint else None, device="cpu")
    store = grid_typestore()
    from occ_ros.dds_profile import use_shipped_profile

    use_shipped_profile()  # no effect once this process has a DDS participant (e.g. under pytest)
    context = rclpy.Context()
    rclpy.init(context=context)
    received: dict[int, tuple[float, bytes]] = {}  # grids: stamp -> (arrival, CDR)
    voxels: dict[int, bytes] = {}  # voxel clouds: stamp -> CDR (for --record)
    bar = tqdm(total=len(gt.frames), desc="occ-bag-eval", unit="frame", disable=not progress)
    lock = threading.Lock()
    # The node on its own single-threaded executor, as rclpy.spin runs it in occupancy_node's
    # main(); the recorder and player on another. (A MultiThreadedExecutor re-polls in a loop
    # while a callback of a busy group is pending, holding the GIL against the node's worker.)
    executors = [SingleThreadedExecutor(context=context), SingleThreadedExecutor(context=context)]
    nodes = []
    try:
        node = OccupancyNode(predictor=predictor, context=context, parameter_overrides=[
            Parameter("lidar_sweeps", value=cfg.lidar_sweeps),
            Parameter("worker_queue_size", value=cfg.worker_queue_size),
            Parameter("temporal_pose_wait", value=float(cfg.temporal_pose_wait)),
            # the bag's ego poses: earlier sweeps, and each camera placed at its image stamp
            Parameter("odom_topic", value=ODOM_TOPIC if ODOM_TOPIC in gt.topics or cfg.lidar_sweeps > 1 else ""),
            Parameter("compressed_image_topic", value=image_topic_for_bag(gt.topics)),
            # the per-frame grids are scored: the rolling map's work would only add to their latency
            Parameter("map_enabled", value=False),
        ])
        node.extrinsics = StaticExtrinsics(gt.static, gt.scene_static)
        recorder = Node("occ_bag_recorder", context=context)

        def on_grid(raw: bytes) -> None:
            now = time.monotonic()
            msg = store.deserialize_cdr(raw, GRID_MSG_TYPE)
            with lock:
                received[_stamp_ns(msg.header.stamp)] = (now, raw)
            bar.update(1)

        def on_voxels(raw: bytes) -> None:
            msg = store.deserialize_cdr(raw, "sensor_msgs/msg/PointCloud2")
            with lock:
                voxels[_stamp_ns(msg.header.stamp)] = raw

        recorder.create_subscription(SemanticOccupancyGrid, GRID_TOPIC, on_grid, QoSProfile(depth=100), raw=True)
        recorder.create_subscription(PointCloud2, VOXELS_TOPIC, on_voxels, QoSProfile(depth=100), raw=True)
        player = BagPlayer(PlayConfig(cfg.bag, rate=cfg.rate, wait_for_subscribers=0.0, max_gap=cfg.max_gap,
                                      prog="occ-bag-eval"), context=context)
        nodes = [node, recorder, player.node]
        executors[0].add_node(node)
        executors[1].add_node(recorder)
        executors[1].add_node(player.node)
        for ex in executors:
            threading.Thread(target=ex.spin, daemon=True).start()
        # discovery: the node's inputs and the recorder must be matched before the first message
        end = time.monotonic() + cfg.discovery_timeout
        inputs = {node.resolve_topic_name(t) for t in (node.config.lidar_topic, *(
            f(c) for c in node.config.camera_names for f in (node.config.image_topic, node.config.info_topic)))}
        while time.monotonic() < end and not (all(p.get_subscription_count() > 0 for t, p in player.publishers.items()
                                                  if t in inputs)
                                              and node.grid_pub.get_subscription_count() > 0
                                              and node.voxels_pub.get_subscription_count() > 0):
            time.sleep(0.05)
        # CameraInfo pre-roll: the node keeps the latest intrinsics; without them the first keyframe
        # would be skipped when its info and image arrive in the same instant (callback order race)
        info_topics = [t for t in player.publishers if t.endswith("/camera_info")]
        player.publish_first(info_topics)
        end = time.monotonic() + cfg.discovery_timeout
        while time.monotonic() < end and node.counters.camera_info_msgs < len(info_topics):
            time.sleep(0.02)
        t_play = time.monotonic()
        stats = player.play()
        wanted = {f.stamp_ns for f in gt.frames}
        last_n, last_change = -1, time.monotonic()
        end = time.monotonic() + cfg.drain_timeout
        while time.monotonic() < end:  # let the node finish what it queued
            with lock:  # both outputs of every keyframe (the voxels follow the grid, for --record)
                n = len(wanted & set(received) & set(voxels))
            if n == len(wanted):
                break
            idle = node.worker.join_idle(0.0)  # nothing queued and nothing in the predictor
            if n != last_n:
                last_n, last_change = n, time.monotonic()
            elif idle and time.monotonic() - last_change > 2.0:
                break
            time.sleep(0.05)
        wall = time.monotonic() - t_play
        counters = dict(vars(node.counters))
        counters["worker_dropped"] = node.worker.stats().dropped
        player.close()
    finally:
        bar.close()
        for ex in executors:
            ex.shutdown()
        for n in nodes:
            try:
                n.destroy_node()
            except Exception:  # noqa: BLE001 - the player closed its node already
                pass
        rclpy.try_shutdown(context=context)

    vox, ray = occ3d_miou(cfg.mask), occ3d_rayiou()
    latencies, predictions = [], {}
    stamp_to_log = {v: k for k, v in gt.lidar_stamps.items()}
    for f in gt.frames:
        if f.stamp_ns not in received:
            continue
        t_recv, raw = received[f.stamp_ns]
        pred = grid_prediction(raw, store, f"{GRID_TOPIC}@{f.stamp_ns}")
        predictions[f.stamp_ns] = pred
        vox.update(f.semantics, pred, select_mask(cfg.mask, f.mask_camera, f.mask_lidar, f"{GT_TOPIC}@{f.stamp_ns}"))
        ray.update(f.semantics, pred, f.origins)
        sent = stats.sent_at.get((LIDAR_TOPIC, stamp_to_log.get(f.stamp_ns, f.stamp_ns)))
        if sent is not None:
            latencies.append((t_recv - sent) * 1e3)
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    recv_times = sorted(t for t, _ in received.values())
    play_wall = max(stats.wall_s, (recv_times[-1] - t_play) if recv_times else 0.0)
    result = PlaybackResult(vox.report(), ray.report(), len(gt.frames), len(predictions),
                            len(gt.frames) - len(predictions), float(np.percentile(lat, 50)), float(np.percentile(lat, 95)),
                            len(received) / play_wall if play_wall > 0 else 0.0, cfg.rate, wall, counters, predictions)
    if cfg.record is not None:
        _write_record(cfg.record, cfg.bag, sorted((s, r) for s, (_, r) in received.items()), sorted(voxels.items()))
    if cfg.json_out is not None:
        summary = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in result.summary().items()}
        doc = {"bag": str(cfg.bag), "summary": summary, "counters": counters,
               "reports": {"voxel": result.voxel.to_dict(), "ray": result.ray.to_dict()}}
        atomic_write_text(cfg.json_out, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return result


def parse_args(argv: list[str] | None) -> EvalConfig:
    d = EvalConfig(Path("."))
    p = argparse.ArgumentParser(prog="occ-bag-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", type=Path, help="bag from occ-nusc2bag (with /occupancy/gt)")
    p.add_argument("--rate", type=positive_float, default=1.0, help="playback speed factor (default 1)")
    p.add_argument("--max-gap", type=positive_float, default=2.0, metavar="S",
                   help="skip gaps between messages longer than S seconds of bag time (default 2)")
    p.add_argument("--config", type=Path, default=d.config, help="model config (default: the shipped fusion model)")
    p.add_argument("--checkpoint", default=str(d.checkpoint), help="model checkpoint ('' = seeded random init)")
    p.add_argument("--mask", choices=("camera", "lidar", "both", "none"), default="camera", help="mIoU mask")
    p.add_argument("--record", type=Path, help="write the predictions (grid, voxels; + GT, TF) into this MCAP bag folder")
    p.add_argument("--json", dest="json_out", type=Path, help="write the summary and reports as JSON")
    p.add_argument("--lidar-sweeps", type=positive_int, default=1, help="node parameter lidar_sweeps (default 1)")
    wait = next(s for s in PARAMETERS if s.name == "temporal_pose_wait")
    p.add_argument("--temporal-pose-wait", type=float, default=d.temporal_pose_wait, metavar="S",
                   help="node parameter temporal_pose_wait: seconds a temporal model's frame waits for its ego pose "
                        f"(default {d.temporal_pose_wait:g}; more on a loaded machine)")
    a = p.parse_args(argv)
    if not wait.lo <= a.temporal_pose_wait <= wait.hi:
        p.error(f"--temporal-pose-wait: {a.temporal_pose_wait}; expected seconds in [{wait.lo:g}, {wait.hi:g}] "
                "(the node parameter's range)")
    ckpt = Path(a.checkpoint) if a.checkpoint else None
    return EvalConfig(a.bag, a.rate, a.config, ckpt, a.mask, a.record, a.json_out, a.lidar_sweeps, max_gap=a.max_gap,
                      temporal_pose_wait=a.temporal_pose_wait)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    return run_cli("occ-bag-eval", lambda: _main(cfg))


def _main(cfg: EvalConfig) -> int:
    res = evaluate(cfg)
    print(res.to_text())
    if cfg.record is not None:
        print(f"occ-bag-eval: predictions recorded in {cfg.record}")
    return 0 if res.predicted > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
