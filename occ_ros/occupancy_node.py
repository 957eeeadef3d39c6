"""``occupancy_node``: synchronized cameras + LiDAR in, semantic occupancy out.

Inputs (sensor-data QoS, or reliable with ``input_qos: reliable``; names from parameters, see
:mod:`occ_ros.params`): one image topic per camera (``CompressedImage`` or ``Image``), its
``CameraInfo`` (intrinsics, latest kept), and the LiDAR ``PointCloud2`` (x, y, z [, intensity]). Extrinsics come from TF when
``tf2_ros`` is importable, else from the rig file; ``extrinsics_source: tf`` without tf2_ros
reads /tf_static and /tf through tf2_msgs (:mod:`occ_ros.tf_buffer`). With ``lidar_sweeps`` > 1 the node also
subscribes ``odom_topic`` (nav_msgs/Odometry) and adds earlier sweeps moved into the current
base_link by the ego motion (:mod:`occ_ros.sweeps`; ``SensorFrame.points[:, 4]`` = their age);
by default it uses the current sweep only.

Outputs, stamped with the LiDAR header stamp in ``base_frame``: ``/occupancy/grid``
(occ_ros_msgs/SemanticOccupancyGrid: the dense (X, Y, Z) labels with scores and flow when the
predictor gives them, :mod:`occ_ros.conversions.grid_msg`), ``/occupancy/voxels``
(PointCloud2 x, y, z, label, score of non-free voxels), ``/occupancy/markers`` (MarkerArray,
serialized straight to CDR, built only while someone subscribes) and ``/diagnostics``
(latency, input rates, drop and malformed counts).

Threading: callbacks only convert a message to numpy and hand it to the
:class:`~occ_ros.sync.ApproximateTimeSync` (LiDAR = trigger); a matched set goes into a
:class:`~occ_ros.worker.DropOldestWorker` whose thread builds the :class:`SensorFrame`, runs
the predictor and publishes. Bad input never stops the node: a malformed message is logged
(throttled), counted and dropped; a frame without every camera or without calibration is
counted and skipped; the next good frame is processed normally.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from occ_core.classes import OCC3D_FREE
from occ_core.data.transforms import scale_matrix
from occ_core.errors import OccDataError
from occ_core.frame import OccupancyPrediction, Predictor, SensorFrame
from occ_core.geometry import make_transform
from occ_core.grid import OCC3D, GridSpec
from occ_ros.conversions import (ConversionError, camera_info_to_intrinsics, compressed_to_array, image_to_array,
                                 occupancy_to_marker_array_cdr, occupancy_to_pointcloud2, pointcloud2_to_array)
from occ_ros.params import NODE_NAME, NodeConfig, ParameterError, declare_and_read, resolve_share_path
from occ_ros.sweeps import EgoMotion, Sweep, SweepBuffer
from occ_ros.sync import ApproximateTimeSync, IncompleteSet, SyncedSet
from occ_ros.conversions.grid_msg import grid_to_msg
from occ_ros.tf_buffer import TfMessageExtrinsics
from occ_ros.tf_source import RigExtrinsics, TfExtrinsics, tf2_available
from occ_ros.worker import DropOldestWorker

LIDAR = "lidar"


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class CameraItem:
    """A decoded camera image: (H', W', 3) uint8 RGB, its frame id and the decode time (s);
    ``pixel_transform`` (3, 3) maps pixels of the full-size (H, W) = ``source_hw`` image to it
    (identity unless a JPEG was decoded at reduced size for the model's input)."""

    image: np.ndarray
    frame_id: str
    decode_s: float
    pixel_transform: np.ndarray
    source_hw: tuple[int, int]


@dataclass
class LidarItem:
    """A decoded LiDAR sweep: (P, 4) float32 x, y, z, intensity in ``frame_id``; its header."""

    points: np.ndarray
    frame_id: str
    header: Any
    decode_s: float


@dataclass
class FrameTiming:
    """Seconds spent on one published frame; ``total`` = sync complete -> outputs published;
    ``voxels`` = occupied (non-free) voxels published."""

    stamp_ns: int
    voxels: int
    decode: float
    preprocess: float
    model: float
    postprocess: float
    publish: float
    total: float


@dataclass
class NodeCounters:
    """What the node counted since it started (inputs, malformed, skipped, published)."""

    lidar_msgs: int = 0
    image_msgs: int = 0
    camera_info_msgs: int = 0
    malformed_lidar: int = 0
    malformed_image: int = 0
    malformed_camera_info: int = 0
    odom_msgs: int = 0
    malformed_odom: int = 0
    synced_frames: int = 0
    incomplete_frames: int = 0
    no_calibration: int = 0
    predictor_errors: int = 0
    published_frames: int = 0
    marker_messages: int = 0


@dataclass
class _Rate:
    """Arrival times (monotonic s) of one input; rate over the last ``window`` s."""

    times: deque = field(default_factory=lambda: deque(maxlen=200))

    def hz(self, now: float, window: float = 5.0) -> float:
        ts = [t for t in self.times if now - t <= window]
        return (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) >= 2 and ts[-1] > ts[0] else 0.0


class OccupancyNode(Node):
    """The occupancy node.

    Args:
        predictor: the model (``occ_core.frame.Predictor``); None = load it from the
            ``model_config`` / ``checkpoint`` / ``device`` parameters.
        spec: the predictor's grid (default: ``predictor.spec`` if it has one, else Occ3D).
        **node_kwargs: passed to ``rclpy.node.Node`` (``context``, ``parameter_overrides``, ...).

    Raises:
        ParameterError: invalid parameters (named in the message).
    """

    def __init__(self, predictor: Predictor | None = None, spec: GridSpec | None = None,
                 node_name: str = NODE_NAME, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.config: NodeConfig = declare_and_read(self)
        cfg = self.config
        if predictor is None:
            predictor = self._load_predictor(cfg)
        self.predictor = predictor
        # JPEGs are decoded at the reduced size that still covers the model's camera input, as
        # the training and offline loaders decode them (None: full size, e.g. LiDAR-only models)
        self._image_hw = getattr(predictor, "image_hw", None)
        self.spec: GridSpec = spec or getattr(predictor, "spec", None) or OCC3D
        self.counters = NodeCounters()
        self.timings: deque[FrameTiming] = deque(maxlen=500)
        self._lock = threading.Lock()
        self._last_warn: dict[str, float] = {}
        self._intrinsics: dict[str, Any] = {}
        self._rates = {name: _Rate() for name in (LIDAR, *cfg.camera_names)}
        self.motion = EgoMotion()
        self.sweeps = SweepBuffer(capacity=4 * cfg.lidar_sweeps + 8)
        self._problems_reported = 0

        use_tf = cfg.extrinsics_source == "tf" or (cfg.extrinsics_source == "auto" and tf2_available())
        if use_tf:
            self.extrinsics = (TfExtrinsics(self, cfg.base_frame) if tf2_available()
                               else TfMessageExtrinsics(self, cfg.base_frame))
        else:
            self.extrinsics = RigExtrinsics(resolve_share_path(cfg.rig_file))

        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from occ_ros_msgs.msg import SemanticOccupancyGrid
        from visualization_msgs.msg import MarkerArray

        reliable = QoSProfile(depth=2)
        self.markers_pub = self.create_publisher(MarkerArray, cfg.markers_topic, reliable)
        self.voxels_pub = self.create_publisher(PointCloud2, cfg.voxels_topic, reliable)
        self.grid_pub = self.create_publisher(SemanticOccupancyGrid, cfg.grid_topic, reliable)
        self.diag_pub = self.create_publisher(DiagnosticArray, cfg.diagnostics_topic, QoSProfile(depth=10))

        self.sync = ApproximateTimeSync((LIDAR, *cfg.camera_names), LIDAR, cfg.sync_queue_size, cfg.sync_slop,
                                        self._on_synced, self._on_incomplete)
        self.worker = DropOldestWorker(self._process, cfg.worker_queue_size, self._on_worker_error,
                                       name="occupancy-predictor")
        image_type = CompressedImage if cfg.image_transport == "compressed" else Image
        input_qos = qos_profile_sensor_data if cfg.input_qos == "sensor_data" else QoSProfile(depth=10)
        self._subs = [self.create_subscription(PointCloud2, cfg.lidar_topic, self._on_lidar, input_qos)]
        for cam in cfg.camera_names:
            self._subs.append(self.create_subscription(
                image_type, cfg.image_topic(cam), lambda msg, cam=cam: self._on_image(cam, msg), input_qos))
            self._subs.append(self.create_subscription(
                CameraInfo, cfg.info_topic(cam), lambda msg, cam=cam: self._on_camera_info(cam, msg),
                input_qos))
        if cfg.odom_topic:
            from nav_msgs.msg import Odometry

            self._subs.append(self.create_subscription(Odometry, cfg.odom_topic, self._on_odom, input_qos))
        self._diag_timer = self.create_timer(cfg.diagnostics_period, self.publish_diagnostics)
        self.get_logger().info(
            f"{len(cfg.camera_names)} cameras ({cfg.image_transport}), LiDAR {cfg.lidar_topic}, extrinsics from "
            f"{self.extrinsics.describe()}, grid {self.spec.name} {tuple(self.spec.dims)}, slop {cfg.sync_slop} s")

    # ------------------------------------------------------------------ set-up
    def _load_predictor(self, cfg: NodeConfig) -> Predictor:
        from occ_core.models.predictor import load_predictor

        ckpt = str(resolve_share_path(cfg.checkpoint)) if cfg.checkpoint else None
        return load_predictor(str(resolve_share_path(cfg.model_config)), ckpt, device=cfg.device)

    def destroy_node(self) -> None:
        self.worker.stop()
        super().destroy_node()

    # ------------------------------------------------------------------ logging / counting
    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.counters, name, getattr(self.counters, name) + 1)

    def _warn(self, kind: str, text: str) -> None:
        """A warning, at most once per ``log_throttle`` seconds per kind."""
        now = time.monotonic()
        with self._lock:
            last = self._last_warn.get(kind)
            if last is not None and now - last < self.config.log_throttle:
                return
            self._last_warn[kind] = now
        self.get_logger().warning(text)

    # ------------------------------------------------------------------ callbacks (thin)
    def _on_lidar(self, msg) -> None:
        t0 = time.perf_counter()
        self._count("lidar_msgs")
        self._rates[LIDAR].times.append(time.monotonic())
        try:
            names = [f.name for f in msg.fields]
            wanted = ["x", "y", "z"] + (["intensity"] if "intensity" in names else [])
            pts = pointcloud2_to_array(msg, wanted, skip_nans=True)
            cols = np.zeros((pts.shape[0], 4), dtype=np.float32)
            for j, n in enumerate(wanted):
                cols[:, j] = pts[n]
            cols = cols[np.isfinite(cols).all(axis=1)]
        except ConversionError as e:
            self._count("malformed_lidar")
            self._warn("lidar", f"dropped a malformed LiDAR cloud on {self.config.lidar_topic}: {e}")
            return
        item = LidarItem(cols, msg.header.frame_id, msg.header, time.perf_counter() - t0)
        stamp = stamp_to_ns(msg.header.stamp)
        if self.config.lidar_sweeps > 1:
            T = self.extrinsics.lookup(item.frame_id, stamp)
            if T is not None:
                self.sweeps.add(Sweep(stamp, cols, T))
        self.sync.add(LIDAR, stamp, item)

    def _on_odom(self, msg) -> None:
        self._count("odom_msgs")
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        t = np.array([p.x, p.y, p.z])
        quat = np.array([q.w, q.x, q.y, q.z])
        if not (np.isfinite(t).all() and np.isfinite(quat).all() and abs(np.linalg.norm(quat) - 1.0) < 1e-3):
            self._count("malformed_odom")
            self._warn("odom", f"ignored an Odometry pose with a non-finite position or non-unit quaternion on "
                               f"{self.config.odom_topic}")
            return
        self.motion.add(stamp_to_ns(msg.header.stamp), make_transform(t, quat / np.linalg.norm(quat)))

    def _on_image(self, cam: str, msg) -> None:
        t0 = time.perf_counter()
        self._count("image_msgs")
        self._rates[cam].times.append(time.monotonic())
        try:
            if self.config.image_transport == "compressed":
                dec = compressed_to_array(msg, "rgb8", out_hw=self._image_hw)
                rgb, A, source_hw = dec.image, dec.pixel_transform, dec.source_hw
            else:
                rgb = image_to_array(msg, "rgb8")
                A, source_hw = np.eye(3), rgb.shape[:2]
        except ConversionError as e:
            self._count("malformed_image")
            self._warn("image:" + cam, f"dropped a malformed image of {cam}: {e}")
            return
        self.sync.add(cam, stamp_to_ns(msg.header.stamp),
                      CameraItem(rgb, msg.header.frame_id or cam, time.perf_counter() - t0, A, source_hw))

    def _on_camera_info(self, cam: str, msg) -> None:
        self._count("camera_info_msgs")
        try:
            intr = camera_info_to_intrinsics(msg)
        except ConversionError as e:
            self._count("malformed_camera_info")
            self._warn("info:" + cam, f"ignored a malformed CameraInfo of {cam}: {e}")
            return
        with self._lock:
            self._intrinsics[cam] = intr

    def _on_synced(self, synced: SyncedSet) -> None:
        self._count("synced_frames")
        if self.worker.put((synced, time.perf_counter())):
            self._warn("worker", "predictor is slower than the sensors: dropped the oldest queued frame")

    def _on_incomplete(self, inc: IncompleteSet) -> None:
        self._count("incomplete_frames")
        self._warn("incomplete", f"skipped the LiDAR frame at {inc.stamp_ns * 1e-9:.3f} s: no image of "
                                 f"{', '.join(inc.missing) or 'every camera within the spread'} within "
                                 f"{self.config.sync_slop} s")

    def _on_worker_error(self, item, exc: BaseException) -> None:
        self._count("predictor_errors")
        self._warn("predictor", f"frame failed in the predictor/publisher: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ worker thread
    def build_frame(self, synced: SyncedSet) -> SensorFrame | None:
        """The :class:`SensorFrame` of a matched set, or None when calibration is missing (logged, counted)."""
        cfg = self.config
        lidar: LidarItem = synced.payloads[LIDAR]
        missing = []
        T_lidar = self.extrinsics.lookup(lidar.frame_id, synced.stamp_ns)
        if T_lidar is None:
            missing.append(f"extrinsics of LiDAR frame {lidar.frame_id!r}")
        with self._lock:
            intrinsics = dict(self._intrinsics)
        Ks, Ts, images = [], [], []
        for cam in cfg.camera_names:
            item: CameraItem = synced.payloads[cam]
            intr = intrinsics.get(cam)
            T = self.extrinsics.lookup(item.frame_id, synced.stamp_ns)
            if intr is None:
                missing.append(f"CameraInfo of {cam}")
            if T is None:
                missing.append(f"extrinsics of {cam} frame {item.frame_id!r}")
            if intr is None or T is None:
                continue
            K = intr.K
            h, w = item.source_hw
            if intr.width > 0 and intr.height > 0 and (intr.width, intr.height) != (w, h):  # calibrated at another size
                K = scale_matrix(w / intr.width, h / intr.height) @ K
            Ks.append(item.pixel_transform @ K)
            Ts.append(T)
            images.append(item.image)
        if missing:
            self._count("no_calibration")
            self._warn("calibration", f"skipped the frame at {synced.stamp_ns * 1e-9:.3f} s: no {'; no '.join(missing)}")
            return None
        # current sweep (LiDAR frame -> base_link, time lag 0) + earlier sweeps by ego motion
        points, _ = self.sweeps.gather(Sweep(synced.stamp_ns, lidar.points, T_lidar), cfg.lidar_sweeps,
                                       cfg.sweep_max_age, self.motion)
        return SensorFrame(stamp_ns=synced.stamp_ns, camera_names=tuple(cfg.camera_names), images=images,
                           intrinsics=np.stack(Ks), T_base_from_cam=np.stack(Ts), points=points,
                           T_base_from_lidar=T_lidar)

    def _process(self, item: tuple[SyncedSet, float]) -> None:
        synced, t_complete = item
        t0 = time.perf_counter()
        frame = self.build_frame(synced)
        if frame is None:
            return
        t1 = time.perf_counter()
        pred: OccupancyPrediction = self.predictor.predict(frame)
        t2 = time.perf_counter()
        labels = np.asarray(pred.labels)
        if labels.shape != tuple(self.spec.dims):
            raise ValueError(f"predictor returned labels of shape {labels.shape}, expected {tuple(self.spec.dims)}")
        if self.config.min_score > 0.0:
            labels = np.where(pred.scores < self.config.min_score, np.uint8(OCC3D_FREE), labels).astype(np.uint8)
        from std_msgs.msg import Header

        lidar: LidarItem = synced.payloads[LIDAR]
        header = Header(stamp=lidar.header.stamp, frame_id=self.config.base_frame)
        cloud = occupancy_to_pointcloud2(labels, self.spec, header=header, scores=pred.scores)
        grid = grid_to_msg(labels, self.spec, header=header, scores=pred.scores, flow=pred.flow)
        markers = None
        if self.markers_pub.get_subscription_count() > 0:
            markers = occupancy_to_marker_array_cdr(labels, self.spec, header=header, alpha=self.config.marker_alpha)
        t3 = time.perf_counter()
        self.grid_pub.publish(grid)
        self.voxels_pub.publish(cloud)
        if markers is not None:
            self.markers_pub.publish(markers)
            self._count("marker_messages")
        t4 = time.perf_counter()
        decode = lidar.decode_s + sum(synced.payloads[c].decode_s for c in self.config.camera_names)
        with self._lock:
            self.counters.published_frames += 1
            self.timings.append(FrameTiming(synced.stamp_ns, int(cloud.width), decode, t1 - t0, t2 - t1, t3 - t2, t4 - t3,
                                            t4 - t_complete))

    # ------------------------------------------------------------------ diagnostics
    def publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        now = time.monotonic()
        with self._lock:
            c = NodeCounters(**vars(self.counters))
            totals = np.array([t.total for t in self.timings]) * 1e3
            models = np.array([t.model for t in self.timings]) * 1e3
        ws = self.worker.stats()
        values = {f: getattr(c, f) for f in vars(c)}
        values["worker_dropped"] = ws.dropped
        values["worker_queued"] = ws.queued
        if totals.size:
            values["latency_ms_p50"] = f"{np.percentile(totals, 50):.1f}"
            values["latency_ms_p95"] = f"{np.percentile(totals, 95):.1f}"
            values["model_ms_p50"] = f"{np.percentile(models, 50):.1f}"
        for name, rate in self._rates.items():
            values[f"rate_hz_{name}"] = f"{rate.hz(now):.2f}"
        problems_total = (c.malformed_lidar + c.malformed_image + c.malformed_camera_info + c.malformed_odom
                          + c.no_calibration + c.predictor_errors + ws.dropped)
        new_problems = problems_total - self._problems_reported  # WARN while problems keep occurring
        self._problems_reported = problems_total
        status = DiagnosticStatus(name=f"{self.get_name()}: occupancy pipeline", hardware_id=self.get_name())
        status.level = DiagnosticStatus.WARN if new_problems else DiagnosticStatus.OK
        status.message = f"{c.published_frames} frames published"
        if new_problems:
            status.message += (f"; {new_problems} inputs/frames dropped since the last report (malformed, no "
                               f"calibration, queue full, predictor errors)")
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


def main(argv: list[str] | None = None, predictor: Predictor | None = None) -> int:
    """Run the node until shutdown (Ctrl-C / SIGTERM). Exit code 2 on invalid parameters or a model
    that cannot be loaded (the message says which)."""
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    try:
        node = OccupancyNode(predictor)
        rclpy.spin(node)
    except ParameterError as e:
        print(f"occupancy_node: invalid parameters: {e}", file=sys.stderr)
        return 2
    except (OccDataError, OSError, RuntimeError) as e:  # model config/checkpoint/device that cannot be loaded
        print(f"occupancy_node: cannot load the model: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
