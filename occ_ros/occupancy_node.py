"""``occupancy_node``: synchronized cameras + LiDAR in, semantic occupancy out.

Inputs (sensor-data QoS, or reliable with ``input_qos: reliable``; names from parameters, see
:mod:`occ_ros.params`): one image topic per camera (``CompressedImage`` or ``Image``), its
``CameraInfo`` (intrinsics, latest kept), and the LiDAR ``PointCloud2`` (x, y, z [, intensity]). Extrinsics come from TF when
``tf2_ros`` is importable, else from the rig file; ``extrinsics_source: tf`` without tf2_ros
reads /tf_static and /tf through tf2_msgs (:mod:`occ_ros.tf_buffer`). With ``lidar_sweeps`` > 1 the node also
subscribes ``odom_topic`` (nav_msgs/Odometry) and adds earlier sweeps moved into the current
base_link by the ego motion (:mod:`occ_ros.sweeps`; ``SensorFrame.points[:, 4]`` = their age);
by default it uses the current sweep only.

Geometry on a moving car (``camera_motion_compensation``, on by default): each camera fires at its
own time, up to ~45 ms off the LiDAR on nuScenes, so the node places it by the ego poses at both
stamps, camera -> base_link(t_image) -> odom -> base_link(t_lidar):
``T = inv(P(t_lidar)) @ P(t_image) @ T_base_from_cam``, with ``P`` = ``T_odom_base`` from
``odom_topic``, or, when that is empty and the node reads TF (through tf2_ros or tf2_msgs), from
``/tf``'s ``* -> base_frame`` transforms (one source, never both), interpolated
(:class:`occ_ros.sweeps.EgoMotion`). The models take these per-frame extrinsics unchanged. When a
pose is missing the camera keeps its static extrinsics and ``camera_static_fallbacks`` on
/diagnostics counts it (``cameras_motion_compensated`` counts the others). Ego body (``ego_filter``,
``ego_footprint``): LiDAR points inside the footprint box in base_link, the car's own roof and
bonnet (:mod:`occ_core.ego`), are dropped before the model; ``ego_points_removed`` on /diagnostics
counts them.

Temporal models (``needs_ego_pose``, a model config with a ``temporal`` section): each frame
carries ``ego_pose`` = ``T_odom_base`` at the LiDAR stamp (the same pose lookup as above, made
for them even with camera motion compensation off, waiting up to ``temporal_pose_wait`` seconds for a
pose that lags its sensor message), and the predictor keeps its state from frame
to frame by :func:`occ_core.models.temporal.link_frames`: it resets on the first frame, a missing
pose (no ``odom_topic`` / TF, or none near the stamp), a stamp gap over twice the period, a stamp
that goes back (a bag played again), or a pose jump. ``temporal_carried`` and
``temporal_reset_<reason>`` on /diagnostics count them.

Outputs, stamped with the LiDAR header stamp in ``base_frame``: ``/occupancy/grid``
(occ_ros_msgs/SemanticOccupancyGrid: the dense (X, Y, Z) labels with scores and flow when the
predictor gives them, :mod:`occ_ros.conversions.grid_msg`), ``/occupancy/voxels``
(PointCloud2 x, y, z, label, score of non-free voxels), ``/occupancy/markers`` (MarkerArray,
serialized straight to CDR, built only while someone subscribes) and ``/diagnostics``
(latency, input rates, drop and malformed counts).

With ``map_enabled`` (the default) every published frame is also folded into a rolling semantic
map in ``map_frame`` (odom; ego pose from ``odom_topic``, else TF ``map_frame -> base_frame``;
:mod:`occ_ros.map_output`, logic in :mod:`occ_core.mapping`), published every
``map_publish_period`` seconds as ``/occupancy/map`` (SemanticOccupancyGrid of the window),
``/occupancy/map_cloud`` (PointCloud2 of its occupied voxels) and ``/occupancy/costmap``
(nav_msgs/OccupancyGrid for nav2), the two grids latched (transient local). A pose jump, a
restart of the LiDAR stamps or setting ``map_clear`` clears the map; frames without a pose are
counted (``map_no_pose``) and left out of the map.

Hostile or broken input: every input is subscribed raw and deserialized by the node, so a
truncated CDR message is counted too. Image sizes are read from the JPEG/PNG header and refused
above ``max_image_pixels`` or when they disagree with the camera's CameraInfo before anything is
decoded; JPEGs decode strictly. Empty or all-NaN clouds, 0x0 images, non-finite CameraInfo,
duplicate and backward stamps are logged (throttled), counted and dropped; a stamp that jumps
back by more than 2 s (a bag played again) starts a new sequence. The sync queues are bounded
in messages and in bytes (``sync_queue_max_mb``).

Every loss is visible on /diagnostics: a pipeline status (frames published, dropped at sync,
for lack of calibration, at the worker; predictor errors) and one status per input (received,
expected and lost from gaps in the stamp sequence, lost as the middleware reports it, malformed,
out of order; see
:mod:`occ_ros.input_stats`), WARN/ERROR when the loss between two reports passes
``loss_warn_fraction`` / ``loss_error_fraction``.

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
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from occ_core.classes import OCC3D_FREE
from occ_core.data.transforms import check_image_size, scale_matrix
from occ_core.ego import EgoFootprint, remove_ego_points
from occ_core.errors import OccDataError
from occ_core.frame import OccupancyPrediction, Predictor, SensorFrame
from occ_core.geometry import make_transform
from occ_core.grid import OCC3D, GridSpec
from occ_ros.conversions import (ConversionError, camera_info_to_intrinsics, compressed_to_array, image_to_array,
                                 occupancy_to_marker_array_cdr, occupancy_to_pointcloud2, pointcloud2_to_array)
from occ_ros.params import (MARKER_CLASSES, NODE_NAME, PARAMETERS_BY_NAME, NodeConfig, ParameterError, check_params_file_args,
                             check_update, declare_and_read, help_text, resolve_share_path)
from occ_ros.dds_profile import use_shipped_profile
from occ_ros.input_stats import InputCounts, StampTracker, StampVerdict
from occ_ros.sweeps import EgoMotion, Sweep, SweepBuffer
from occ_ros.sync import ApproximateTimeSync, IncompleteSet, SyncedSet
from occ_ros.conversions.grid_msg import grid_to_msg
from occ_ros.tf_buffer import TfMessageExtrinsics
from occ_ros.tf_source import RigExtrinsics, TfExtrinsics, tf2_available, tf_messages_available
from occ_ros.worker import DropOldestWorker

LIDAR = "lidar"
#: A forward gap longer than this (s) in an input's stamps is a pause, not loss; a backward jump
#: longer than this is a restart (a bag played again): a new sequence begins.
INPUT_PAUSE_S = 2.0
#: Seconds after start-up at which camera frames are checked against TF.
TF_CHECK_DELAY_S = 5.0
#: Motion compensation: how far (s) a stamp may lie outside the received ego poses and still take
#: the nearest one (no extrapolation beyond this) ...
POSE_TOLERANCE_S = 0.002
#: ... and how long (s) the worker waits, per frame, for ego poses at the LiDAR and image stamps
#: when the odometry stream is alive but has not reached a stamp yet (poses travel beside the data).
POSE_WAIT_S = 0.1
#: Queue depth of the odom_topic subscription (same as /tf's): poses are small and must not be dropped.
ODOM_QUEUE_DEPTH = 100
#: The ego pose stream counts as alive (worth waiting for) while its latest pose is at most this
#: many seconds (stamp time) before the frame's stamp ...
POSE_STREAM_ALIVE_S = 0.5
#: ... or this many for temporal models: a keyframe-only bag carries /odom at 2 Hz, so the pose
#: before a keyframe's is about 0.5 s older than it.
MODEL_POSE_STREAM_ALIVE_S = 1.5


def pose_wait_needed(latest_ns: int | None, stamp_ns: int, alive_s: float, first_pose_expected: bool) -> bool:
    """Whether the pose at ``stamp_ns`` may still come: the ego pose stream is alive (its latest
    pose ``latest_ns`` at most ``alive_s`` before the stamp) and has not reached the stamp. Before
    any pose has arrived (``latest_ns`` None) only when one is expected: ``odom_topic`` has a
    publisher, so the first pose may be in flight beside the first sensor messages (without this
    a temporal model's first frame lost its pose whenever the data was handled first, and the
    next frame reset its state)."""
    if latest_ns is None:
        return first_pose_expected
    return latest_ns < stamp_ns and stamp_ns - latest_ns <= alive_s * 1e9


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _describe(e: BaseException) -> str:
    """A conversion error's own message; any other exception with its type (it is a bug to report)."""
    return str(e) if isinstance(e, (ConversionError, OccDataError)) else f"{type(e).__name__}: {e}"


def _payload_bytes(item: Any) -> int:
    """Bytes a queued sync payload holds (its decoded image or points)."""
    return int(item.image.nbytes if isinstance(item, CameraItem) else item.points.nbytes)


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
    unreadable_messages: int = 0
    out_of_order: int = 0
    stamp_resets: int = 0
    synced_frames: int = 0
    incomplete_frames: int = 0
    no_calibration: int = 0
    ego_points_removed: int = 0
    cameras_motion_compensated: int = 0
    camera_static_fallbacks: int = 0
    predictor_errors: int = 0
    published_frames: int = 0
    marker_messages: int = 0
    map_no_pose: int = 0
    map_messages: int = 0


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

    #: False: the constructor configures and activates (plain node). ManagedOccupancyNode: the
    #: lifecycle transitions do (configure loads the model, activate subscribes).
    MANAGED = False

    def __init__(self, predictor: Predictor | None = None, spec: GridSpec | None = None,
                 node_name: str = NODE_NAME, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.config: NodeConfig = declare_and_read(self)
        self._given_predictor, self._given_spec = predictor, spec
        self._lock = threading.Lock()
        self._subs: list = []
        self._diag_timer = None
        self._tf_check_timer = None
        self._map_timer = None
        self._pose_tf = None
        self.map = None
        self.extrinsics = None
        self.predictor = None
        self.worker = None
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        if not self.MANAGED:
            self._configure()
            self._activate()

    # ------------------------------------------------------------------ lifecycle steps
    def _configure(self) -> None:
        """Load the model (unless one was given), set up extrinsics, publishers, sync and worker.

        Raises:
            ParameterError: camera names the rig file does not know.
            OccDataError, OSError, RuntimeError: a model that cannot be loaded.
        """
        cfg = self.config
        predictor = self._given_predictor if self._given_predictor is not None else self._load_predictor(cfg)
        # JPEGs are decoded at the reduced size that still covers the model's camera input, as
        # the training and offline loaders decode them (None: full size, e.g. LiDAR-only models)
        self._image_hw = getattr(predictor, "image_hw", None)
        self.spec: GridSpec = self._given_spec or getattr(predictor, "spec", None) or OCC3D
        self.counters = NodeCounters()
        self.timings: deque[FrameTiming] = deque(maxlen=500)
        self._last_warn: dict[str, float] = {}
        self._intrinsics: dict[str, Any] = {}
        self._rates = {name: _Rate() for name in (LIDAR, *cfg.camera_names)}
        self._stats = {name: StampTracker(INPUT_PAUSE_S) for name in (LIDAR, *cfg.camera_names)}
        self._stats_reported = {name: tr.counts() for name, tr in self._stats.items()}
        self.motion = EgoMotion()
        self.sweeps = SweepBuffer(capacity=4 * cfg.lidar_sweeps + 8)
        self._problems_reported = 0
        self._footprint = EgoFootprint.from_list(cfg.ego_footprint) if cfg.ego_filter else None

        if self.extrinsics is None:  # once: a TF listener cannot be taken back (and the parameters are read-only)
            use_tf = cfg.extrinsics_source == "tf" or (cfg.extrinsics_source == "auto" and tf2_available())
            if use_tf:
                # without odom_topic the ego poses on /tf (odom -> base_link) place the cameras at their
                # stamps. One pose source only: /odom and /tf arrive on separate callbacks, and a pose
                # waited for on one stream could be passed by the other's later pose (see _pose_at)
                source = TfExtrinsics if tf2_available() else TfMessageExtrinsics
                on_pose = None if cfg.odom_topic else (lambda t, T: self.motion.add(t, T))
                self.extrinsics = source(self, cfg.base_frame, on_ego_pose=on_pose)
            else:
                extrinsics = RigExtrinsics(resolve_share_path(cfg.rig_file))
                unknown = [c for c in cfg.camera_names if c not in extrinsics.rig.camera_names]
                if unknown:
                    raise ParameterError(f"parameter 'camera_names': {unknown} are not cameras of the rig file "
                                         f"{cfg.rig_file} (it has {list(extrinsics.rig.camera_names)})")
                self._check_rig_fits_model(cfg, extrinsics.rig, predictor)
                self.extrinsics = extrinsics

        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import PointCloud2
        from occ_ros_msgs.msg import SemanticOccupancyGrid
        from visualization_msgs.msg import MarkerArray

        # managed: lifecycle publishers, which publish only while the node is active
        publisher = self.create_lifecycle_publisher if self.MANAGED else self.create_publisher
        reliable = QoSProfile(depth=2)
        self.markers_pub = publisher(MarkerArray, cfg.markers_topic, reliable)
        self.voxels_pub = publisher(PointCloud2, cfg.voxels_topic, reliable)
        self.grid_pub = publisher(SemanticOccupancyGrid, cfg.grid_topic, reliable)
        self.diag_pub = publisher(DiagnosticArray, cfg.diagnostics_topic, QoSProfile(depth=10))
        if cfg.map_enabled:
            self._configure_map(cfg, publisher, reliable)

        self.sync = ApproximateTimeSync((LIDAR, *cfg.camera_names), LIDAR, cfg.sync_queue_size, cfg.sync_slop,
                                        self._on_synced, self._on_incomplete,
                                        max_bytes=int(cfg.sync_queue_max_mb * 2**20), sizeof=_payload_bytes)
        self.worker = DropOldestWorker(self._process, cfg.worker_queue_size, self._on_worker_error,
                                       name="occupancy-predictor")
        self.predictor = predictor

    def _configure_map(self, cfg: NodeConfig, publisher, reliable) -> None:
        """The rolling map, its publishers and its pose source (odom_topic, else TF)."""
        from nav_msgs.msg import OccupancyGrid
        from occ_ros_msgs.msg import SemanticOccupancyGrid
        from sensor_msgs.msg import PointCloud2

        from occ_core.mapping import MapConfig
        from occ_core.mapping.costmap import cost_table, parse_class_costs
        from occ_ros.map_output import NodeMap, map_qos

        mcfg = MapConfig(extent=(cfg.map_extent_xy, cfg.map_extent_xy, cfg.map_extent_z),
                         reset_distance=cfg.map_reset_distance)
        self.map = NodeMap(mcfg, self.spec, cfg.map_ray_step, cost_table(parse_class_costs(cfg.costmap_class_costs)),
                           cfg.costmap_min_height, cfg.costmap_max_height)
        self.map_pub = publisher(SemanticOccupancyGrid, cfg.map_topic, map_qos())
        self.map_cloud_pub = publisher(PointCloud2, cfg.map_cloud_topic, reliable)
        self.costmap_pub = publisher(OccupancyGrid, cfg.costmap_topic, map_qos())
        if not cfg.odom_topic and self._pose_tf is None:  # once: a TF listener cannot be taken back
            if isinstance(self.extrinsics, (TfExtrinsics, TfMessageExtrinsics)):
                self._pose_tf = self.extrinsics
            elif tf2_available():
                self._pose_tf = TfExtrinsics(self, cfg.base_frame)
            elif tf_messages_available():
                self._pose_tf = TfMessageExtrinsics(self, cfg.base_frame)

    def _activate(self) -> None:
        """Subscribe to the inputs and start the diagnostics (and the one-off TF check)."""
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        cfg = self.config
        image_type = CompressedImage if cfg.image_transport == "compressed" else Image
        input_qos = qos_profile_sensor_data if cfg.input_qos == "sensor_data" else QoSProfile(depth=10)
        self._subs = [self._subscribe(PointCloud2, cfg.lidar_topic, self._on_lidar, input_qos, LIDAR, "malformed_lidar")]
        for cam in cfg.camera_names:
            self._subs.append(self._subscribe(image_type, cfg.image_topic(cam),
                                              lambda msg, cam=cam: self._on_image(cam, msg), input_qos, cam,
                                              "malformed_image"))
            self._subs.append(self._subscribe(CameraInfo, cfg.info_topic(cam),
                                              lambda msg, cam=cam: self._on_camera_info(cam, msg), input_qos, None,
                                              "malformed_camera_info"))
        if cfg.odom_topic:
            from nav_msgs.msg import Odometry

            # deeper than the sensors' queue: a bag carries a pose per sensor message, ~7 within 50 ms
            # per keyframe, and a pose lost while the executor decodes images would be interpolated over
            odom_qos = QoSProfile(depth=ODOM_QUEUE_DEPTH, reliability=input_qos.reliability)
            self._subs.append(self._subscribe(Odometry, cfg.odom_topic, self._on_odom, odom_qos, None,
                                              "malformed_odom"))
        self._diag_timer = self.create_timer(cfg.diagnostics_period, self.publish_diagnostics)
        if self.map is not None:
            self._map_timer = self.create_timer(cfg.map_publish_period, self.publish_map)
        self._tf_check_timer = (self.create_timer(TF_CHECK_DELAY_S, self._check_tf_frames)
                                if not isinstance(self.extrinsics, RigExtrinsics) else None)
        if cfg.camera_motion_compensation and not self.has_pose_source():
            self.get_logger().info("camera_motion_compensation: no ego pose source (set odom_topic, or extrinsics_source "
                                   "tf): the cameras keep their static extrinsics (counted as "
                                   "camera_static_fallbacks on /diagnostics)")
        self.get_logger().info(
            f"{len(cfg.camera_names)} cameras ({cfg.image_transport}, "
            f"{self.resolve_topic_name(cfg.image_topic(cfg.camera_names[0]))}, ...), LiDAR "
            f"{self.resolve_topic_name(cfg.lidar_topic)}, extrinsics from {self.extrinsics.describe()}, grid "
            f"{self.spec.name} {tuple(self.spec.dims)}, slop {cfg.sync_slop} s; outputs "
            f"{self.resolve_topic_name(cfg.grid_topic)}, {self.resolve_topic_name(cfg.voxels_topic)}, "
            f"{self.resolve_topic_name(cfg.markers_topic)}")

    def _deactivate(self) -> None:
        """Unsubscribe, stop the timers and forget the partly matched frames (the model stays loaded)."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        for timer in (self._diag_timer, self._tf_check_timer, self._map_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._diag_timer = self._tf_check_timer = self._map_timer = None
        self.sync.reset()

    def _cleanup(self) -> None:
        """Stop the worker, drop the publishers and release the model (a given predictor is kept)."""
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        pubs = [self.markers_pub, self.voxels_pub, self.grid_pub, self.diag_pub]
        if self.map is not None:
            pubs += [self.map_pub, self.map_cloud_pub, self.costmap_pub]
            self.map = None
        for pub in pubs:
            if self.MANAGED:
                self.destroy_lifecycle_publisher(pub)
            else:
                self.destroy_publisher(pub)
        self.predictor = None

    # ------------------------------------------------------------------ runtime parameters
    def _on_set_parameters(self, params: list) -> Any:
        """``add_on_set_parameters_callback``: accept a change only when the new configuration is
        valid (:func:`~occ_ros.params.check_update`); rclpy has already refused read-only parameters
        and values outside the descriptors' ranges."""
        from rcl_interfaces.msg import SetParametersResult

        try:
            check_update(self.config, {p.name: p.value for p in params})
        except ParameterError as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list) -> None:
        """``add_post_set_parameters_callback``: apply an accepted change (a new :class:`NodeConfig`;
        a new diagnostics period restarts its timer)."""
        changes = {p.name: p.value for p in params if p.name in PARAMETERS_BY_NAME}
        if not changes:
            return
        old = self.config
        self.config = check_update(old, changes)  # the worker reads self.config once per frame
        if changes.get("map_clear") is True and self.map is not None:
            self.map.clear()
            self.get_logger().info("map_clear: the map was cleared")
        if self.config.diagnostics_period != old.diagnostics_period and self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(self.config.diagnostics_period, self.publish_diagnostics)
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))

    # ------------------------------------------------------------------ set-up
    def _subscribe(self, msg_type, topic: str, handler, qos, stats_key: str | None, malformed_counter: str):
        """A raw subscription that deserializes here, so a message that does not deserialize
        (truncated CDR) is counted (``malformed_counter``, the input's stats) instead of vanishing in rmw."""
        from rclpy.serialization import deserialize_message

        def on_raw(data: bytes) -> None:
            try:
                msg = deserialize_message(data, msg_type)
            except Exception as e:  # noqa: BLE001 - rclpy raises RMWError/RuntimeError on bad CDR
                self._count("unreadable_messages")
                self._count(malformed_counter)
                if stats_key is not None:
                    self._stats[stats_key].received_unstamped()
                self._warn("cdr:" + topic, f"dropped a {len(data)}-byte message on {topic} that is not a valid "
                                           f"{msg_type.__name__} (CDR): {e}")
                return
            handler(msg)

        events = None
        if stats_key is not None:
            from rclpy.event_handler import SubscriptionEventCallbacks

            tracker = self._stats[stats_key]
            events = SubscriptionEventCallbacks(message_lost=lambda info: tracker.transport_lost(info.total_count_change))
        return self.create_subscription(msg_type, topic, on_raw, qos, raw=True, event_callbacks=events)

    def _check_tf_frames(self) -> None:
        """Once, TF_CHECK_DELAY_S after start: name the camera frames TF cannot place in base_frame
        (camera names default to their frame ids; the rig-file case is checked in __init__)."""
        self.destroy_timer(self._tf_check_timer)
        stamp = self.get_clock().now().nanoseconds
        missing = [c for c in self.config.camera_names if self.extrinsics.lookup(c, stamp) is None]
        if missing:
            self.get_logger().warning(
                f"after {TF_CHECK_DELAY_S:.0f} s TF still has no transform {self.config.base_frame} <- {missing}: "
                f"check camera_names against the camera frame ids (frames without TF are skipped and counted as "
                f"dropped_no_calibration)")

    def _check_rig_fits_model(self, cfg: NodeConfig, rig, predictor) -> None:
        """Refuse a rig whose cameras the model's camera branch cannot take (a crop that keeps
        under half the image, a view that misses the grid: :mod:`occ_core.models.rig_fit`)."""
        model_cfg = getattr(predictor, "cfg", None)
        if model_cfg is None:  # a predictor without a model config (tests, a prior): nothing to check
            return
        from occ_core.models.rig_fit import check_rig_fits_model

        try:
            check_rig_fits_model(rig, cfg.camera_names, model_cfg, f"rig file {cfg.rig_file}",
                                 f"model {cfg.model_config}")
        except OccDataError as e:
            raise ParameterError(f"parameter 'rig_file': {e}") from None

    def _load_predictor(self, cfg: NodeConfig) -> Predictor:
        """The model on ``backend`` (:func:`occ_core.deploy.runtime.load_backend_predictor`): an
        ONNX backend exports once into ``engine_cache_dir`` and reuses the file while the checkpoint
        stays; a missing backend raises its named ``BackendUnavailableError`` here, at configure."""
        from occ_core.deploy.runtime import load_backend_predictor

        ckpt = str(resolve_share_path(cfg.checkpoint)) if cfg.checkpoint else None
        predictor = load_backend_predictor(str(resolve_share_path(cfg.model_config)), ckpt, backend=cfg.backend,
                                           device=cfg.device, cameras=len(cfg.camera_names),
                                           cache_dir=cfg.engine_cache_dir or None)
        if cfg.backend != "torch":
            self.get_logger().info(f"backend {cfg.backend}: {predictor.path} ({', '.join(predictor.session.get_providers())})")
        return predictor

    def destroy_node(self) -> None:
        if self.worker is not None:
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
    def _accept_stamp(self, name: str, stamp_ns: int, topic: str) -> bool:
        """Count one message of input ``name`` by its stamp; False = drop it (duplicate or older stamp)."""
        verdict = self._stats[name].observe(stamp_ns)
        if verdict is StampVerdict.OUT_OF_ORDER:
            self._count("out_of_order")
            self._warn("order:" + name, f"dropped a message on {topic} stamped {stamp_ns * 1e-9:.3f} s: not newer than "
                                        f"the previous one (duplicate or out-of-order stamp)")
            return False
        if verdict is StampVerdict.RESET:
            self._count("stamp_resets")
            self.get_logger().info(f"{topic}: the stamps jumped back to {stamp_ns * 1e-9:.3f} s (more than "
                                   f"{INPUT_PAUSE_S} s); starting a new sequence")
            if name == LIDAR:  # queued sets, earlier sweeps and the map belong to the old time line
                self.sync.reset()
                if self.map is not None:
                    self.map.clear()
                self.sweeps = SweepBuffer(capacity=4 * self.config.lidar_sweeps + 8)
                self.motion = EgoMotion()
        return True

    def _malformed(self, name: str | None, counter: str, kind: str, text: str) -> None:
        self._count(counter)
        if name is not None:
            self._stats[name].malformed()
        self._warn(kind, text)

    def _on_lidar(self, msg) -> None:
        t0 = time.perf_counter()
        self._count("lidar_msgs")
        self._rates[LIDAR].times.append(time.monotonic())
        stamp = stamp_to_ns(msg.header.stamp)
        if not self._accept_stamp(LIDAR, stamp, self.config.lidar_topic):
            return
        try:
            names = [f.name for f in msg.fields]
            wanted = ["x", "y", "z"] + (["intensity"] if "intensity" in names else [])
            pts = pointcloud2_to_array(msg, wanted, skip_nans=True)
            cols = np.zeros((pts.shape[0], 4), dtype=np.float32)
            for j, n in enumerate(wanted):
                cols[:, j] = pts[n]
            cols = cols[np.isfinite(cols).all(axis=1)]
            if cols.shape[0] == 0:
                raise ConversionError(f"PointCloud2: no finite point among its {int(msg.width) * int(msg.height)} "
                                      f"(an empty or all-NaN cloud)")
        except Exception as e:  # noqa: BLE001 - ConversionError, or anything else a hostile message raises
            self._malformed(LIDAR, "malformed_lidar", "lidar", f"dropped a malformed LiDAR cloud on "
                                                               f"{self.config.lidar_topic}: {_describe(e)}")
            return
        item = LidarItem(cols, msg.header.frame_id, msg.header, time.perf_counter() - t0)
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
        cfg = self.config
        stamp = stamp_to_ns(msg.header.stamp)
        if not self._accept_stamp(cam, stamp, cfg.image_topic(cam)):
            return
        with self._lock:
            intr = self._intrinsics.get(cam)
        calibrated_hw = (intr.height, intr.width) if intr is not None else None
        try:
            if cfg.image_transport == "compressed":
                dec = compressed_to_array(msg, "rgb8", out_hw=self._image_hw, max_pixels=cfg.max_image_pixels,
                                          expected_hw=calibrated_hw)
                rgb, A, source_hw = dec.image, dec.pixel_transform, dec.source_hw
            else:  # the pixels are in the message already; still refuse sizes the model must not see
                try:
                    check_image_size(int(msg.height), int(msg.width), "Image", cfg.max_image_pixels, calibrated_hw)
                except OccDataError as e:
                    raise ConversionError(str(e)) from None
                rgb = image_to_array(msg, "rgb8")
                A, source_hw = np.eye(3), rgb.shape[:2]
        except Exception as e:  # noqa: BLE001 - ConversionError, or anything else a hostile message raises
            self._malformed(cam, "malformed_image", "image:" + cam, f"dropped a malformed image of {cam}: {_describe(e)}")
            return
        self.sync.add(cam, stamp,
                      CameraItem(rgb, msg.header.frame_id or cam, time.perf_counter() - t0, A, source_hw))

    def _on_camera_info(self, cam: str, msg) -> None:
        self._count("camera_info_msgs")
        try:
            intr = camera_info_to_intrinsics(msg)
        except Exception as e:  # noqa: BLE001 - ConversionError, or anything else a hostile message raises
            self._malformed(None, "malformed_camera_info", "info:" + cam,
                            f"ignored a malformed CameraInfo of {cam}: {_describe(e)}")
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
    def has_pose_source(self) -> bool:
        """True when ego poses reach :attr:`motion`: ``odom_topic`` is subscribed or /tf is read here."""
        return bool(self.config.odom_topic) or isinstance(self.extrinsics, (TfMessageExtrinsics, TfExtrinsics))

    def _pose_at(self, stamp_ns: int, deadline: float, alive_s: float = POSE_STREAM_ALIVE_S) -> np.ndarray | None:
        """``T_odom_base`` at ``stamp_ns``. While the ego pose stream is alive but has not reached
        the stamp yet (the pose at a sensor stamp travels beside its message), wait for it until
        ``deadline`` (monotonic s); then take the nearest pose within POSE_TOLERANCE_S, or None
        (:func:`pose_wait_needed` says when to wait). "Reached" is sound because the poses come from
        one in-order stream (odom_topic, else /tf): a pose at the stamp cannot arrive after a later
        one of the same stream."""
        first_expected = None  # asked of the ROS graph at most once per lookup, and only before the first pose
        while time.monotonic() < deadline:
            latest = self.motion.latest_stamp()
            if latest is None and first_expected is None:
                first_expected = bool(self.config.odom_topic) and self.count_publishers(self.config.odom_topic) > 0
            if not pose_wait_needed(latest, stamp_ns, alive_s, bool(first_expected)):
                break
            time.sleep(0.002)
        return self.motion.pose_at(stamp_ns, POSE_TOLERANCE_S)

    def camera_extrinsics(self, synced: SyncedSet, cam: str, T_static: np.ndarray,
                          P_lidar: np.ndarray | None, deadline: float = 0.0) -> tuple[np.ndarray, bool]:
        """``(T_base_from_cam, compensated)`` of one camera of a matched set: camera ->
        base_link(t_image) -> odom -> base_link(t_lidar) when both ego poses are known, else the
        static ``T_static`` (compensated False).

        Args:
            T_static: (4, 4) camera -> base_link from the rig or TF.
            P_lidar: (4, 4) ``T_odom_base`` at the LiDAR stamp, or None.
            deadline: monotonic time up to which to wait for a pose that has not arrived yet.
        """
        if P_lidar is None:
            return T_static, False
        P_cam = self._pose_at(synced.stamps_ns[cam], deadline)
        if P_cam is None:
            return T_static, False
        return np.linalg.solve(P_lidar, P_cam) @ T_static, True

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
        compensate = cfg.camera_motion_compensation
        # the ego pose at the LiDAR stamp: camera motion compensation, and the ego motion of temporal models
        model_needs_pose = bool(getattr(self.predictor, "needs_ego_pose", False))
        wants_pose = compensate or model_needs_pose
        # temporal models wait longer (parameter temporal_pose_wait): a frame without its pose resets their
        # state, so a pose late by a loaded machine's scheduling would cut the sequence
        deadline = time.monotonic() + (cfg.temporal_pose_wait if model_needs_pose else POSE_WAIT_S)
        alive_s = MODEL_POSE_STREAM_ALIVE_S if model_needs_pose else POSE_STREAM_ALIVE_S
        P_lidar = self._pose_at(synced.stamp_ns, deadline, alive_s) if wants_pose and self.has_pose_source() else None
        compensated = fallbacks = 0
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
            if compensate:
                T, ok = self.camera_extrinsics(synced, cam, T, P_lidar, deadline)
                compensated, fallbacks = compensated + ok, fallbacks + (not ok)
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
        points, removed = remove_ego_points(points, self._footprint)
        with self._lock:
            self.counters.ego_points_removed += removed
            self.counters.cameras_motion_compensated += compensated
            self.counters.camera_static_fallbacks += fallbacks
        return SensorFrame(stamp_ns=synced.stamp_ns, camera_names=tuple(cfg.camera_names), images=images,
                           intrinsics=np.stack(Ks), T_base_from_cam=np.stack(Ts), points=points,
                           T_base_from_lidar=T_lidar, ego_pose=P_lidar)

    def _process(self, item: tuple[SyncedSet, float]) -> None:
        synced, t_complete = item
        cfg = self.config  # one snapshot per frame (runtime parameters replace it)
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
        if cfg.min_score > 0.0:
            labels = np.where(pred.scores < cfg.min_score, np.uint8(OCC3D_FREE), labels).astype(np.uint8)
        from std_msgs.msg import Header

        lidar: LidarItem = synced.payloads[LIDAR]
        header = Header(stamp=lidar.header.stamp, frame_id=cfg.base_frame)
        cloud = occupancy_to_pointcloud2(labels, self.spec, header=header, scores=pred.scores)
        grid = grid_to_msg(labels, self.spec, header=header, scores=pred.scores, flow=pred.flow)
        markers = None
        if self.markers_pub.get_subscription_count() > 0:
            hidden = [MARKER_CLASSES.index(c) for c in cfg.marker_hidden_classes]
            markers = occupancy_to_marker_array_cdr(labels, self.spec, header=header, alpha=cfg.marker_alpha,
                                                    hidden=hidden)
        t3 = time.perf_counter()
        self.grid_pub.publish(grid)
        self.voxels_pub.publish(cloud)
        if markers is not None:
            self.markers_pub.publish(markers)
            self._count("marker_messages")
        t4 = time.perf_counter()
        decode = lidar.decode_s + sum(synced.payloads[c].decode_s for c in cfg.camera_names)
        with self._lock:
            self.counters.published_frames += 1
            self.timings.append(FrameTiming(synced.stamp_ns, int(cloud.width), decode, t1 - t0, t2 - t1, t3 - t2, t4 - t3,
                                            t4 - t_complete))
        if self.map is not None:  # after the frame's own outputs: the map never delays them
            self._update_map(frame, labels, pred, cfg)

    # ------------------------------------------------------------------ rolling map
    def ego_pose(self, stamp_ns: int, cfg: NodeConfig) -> np.ndarray | None:
        """(4, 4) ``T_map_frame_from_base`` at a stamp: /odom (interpolated) when ``odom_topic`` is
        set, else the latest TF; None when unknown."""
        if cfg.odom_topic:
            return self.motion.pose_at(stamp_ns)
        if self._pose_tf is None:
            return None
        T_base_from_odom = self._pose_tf.lookup(cfg.map_frame, stamp_ns)
        return None if T_base_from_odom is None else np.linalg.inv(T_base_from_odom)

    def _update_map(self, frame: SensorFrame, labels: np.ndarray, pred: OccupancyPrediction, cfg: NodeConfig) -> None:
        T = self.ego_pose(frame.stamp_ns, cfg)
        if T is None:
            self._count("map_no_pose")
            source = cfg.odom_topic or (f"TF {cfg.map_frame} -> {cfg.base_frame}" if self._pose_tf is not None
                                        else "TF (no tf2_ros or tf2_msgs here; set odom_topic)")
            self._warn("map_pose", f"the frame at {frame.stamp_ns * 1e-9:.3f} s is not in the map: no ego pose from {source}")
            return
        self.map.integrate(frame, labels, pred, T)

    def publish_map(self) -> None:
        """Timer: the map, its cloud and the costmap, when a frame was folded in since the last time."""
        snap = self.map.snapshot() if self.map is not None else None
        if snap is None:
            return
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        from occ_ros.map_output import costmap_msg, map_cloud_msg, map_grid_msg

        sec, nsec = divmod(snap.stamp_ns, 1_000_000_000)
        header = Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=self.config.map_frame)
        self.map_pub.publish(map_grid_msg(snap, header))
        if self.map_cloud_pub.get_subscription_count() > 0:
            self.map_cloud_pub.publish(map_cloud_msg(snap, header))
        self.costmap_pub.publish(costmap_msg(self.map.costmap(snap), header))
        self._count("map_messages")

    # ------------------------------------------------------------------ diagnostics
    def input_counts(self) -> dict[str, InputCounts]:
        """Per input (``lidar`` and each camera): received, expected, lost, malformed, out of order."""
        return {name: tr.counts() for name, tr in self._stats.items()}

    def _level(self, window: InputCounts) -> int:
        """0 OK, 1 WARN, 2 ERROR (DiagnosticStatus levels) for an input's loss between two reports."""
        loss = window.loss_fraction
        if window.expected and loss > self.config.loss_error_fraction:
            return 2
        if window.expected and loss > self.config.loss_warn_fraction:
            return 1
        return 0

    def _input_status(self, name: str, total: InputCounts, window: InputCounts):
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

        topic = self.config.lidar_topic if name == LIDAR else self.config.image_topic(name)
        status = DiagnosticStatus(name=f"{self.get_name()}: input {topic}", hardware_id=self.get_name())
        status.level = bytes([self._level(window)])
        status.message = (f"{window.received} received, {window.lost} lost, {window.malformed} malformed, "
                          f"{window.out_of_order} out of order since the last report")
        values = {"received": total.received, "expected": total.expected, "lost": total.lost,
                  "transport_lost": total.transport_lost,
                  "malformed": total.malformed, "out_of_order": total.out_of_order, "pauses": total.pauses,
                  "resets": total.resets, "loss_fraction": f"{total.loss_fraction:.4f}",
                  "period_s": "" if total.period_s is None else f"{total.period_s:.4f}"}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return status

    def publish_diagnostics(self) -> None:
        """One DiagnosticArray: ``status[0]`` the pipeline (counters, latency, rates, frames dropped
        at sync / for calibration / at the worker), then one status per input (its stamp accounting)."""
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        now = time.monotonic()
        with self._lock:
            c = NodeCounters(**vars(self.counters))
            totals = np.array([t.total for t in self.timings]) * 1e3
            models = np.array([t.model for t in self.timings]) * 1e3
        ws = self.worker.stats()
        counts = self.input_counts()
        windows = {n: counts[n].minus(self._stats_reported[n]) for n in counts}
        self._stats_reported = counts
        values = {f: getattr(c, f) for f in vars(c)}
        values["dropped_at_sync"] = c.incomplete_frames
        values["dropped_no_calibration"] = c.no_calibration
        values["dropped_at_worker"] = ws.dropped
        values["worker_dropped"] = ws.dropped
        values["worker_queued"] = ws.queued
        for name, n in counts.items():
            for key in ("received", "expected", "lost", "transport_lost", "malformed", "out_of_order"):
                values[f"{name}_{key}"] = getattr(n, key)
        if totals.size:
            values["latency_ms_p50"] = f"{np.percentile(totals, 50):.1f}"
            values["latency_ms_p95"] = f"{np.percentile(totals, 95):.1f}"
            values["model_ms_p50"] = f"{np.percentile(models, 50):.1f}"
        for name, rate in self._rates.items():
            values[f"rate_hz_{name}"] = f"{rate.hz(now):.2f}"
        if self.map is not None:
            values["map_updates"] = self.map.updates
            values["map_resets"] = self.map.resets
            if self.map.timings_ms:
                values["map_update_ms_p50"] = f"{np.percentile(self.map.timings_ms, 50):.1f}"
        state = getattr(self.predictor, "state", None)  # temporal models: how often the state carried or reset
        if state is not None and hasattr(state, "resets"):
            values["temporal_carried"] = state.carried
            for reason, n in state.resets.items():
                values[f"temporal_reset_{reason}"] = n
        problems_total = (c.malformed_lidar + c.malformed_image + c.malformed_camera_info + c.malformed_odom
                          + c.out_of_order + c.no_calibration + c.predictor_errors + ws.dropped)
        new_problems = problems_total - self._problems_reported  # WARN while problems keep occurring
        self._problems_reported = problems_total
        inputs = [self._input_status(n, counts[n], windows[n]) for n in counts]
        lost = sum(w.lost for w in windows.values())
        status = DiagnosticStatus(name=f"{self.get_name()}: occupancy pipeline", hardware_id=self.get_name())
        status.level = bytes([max([1 if new_problems else 0] + [self._level(w) for w in windows.values()])])
        status.message = f"{c.published_frames} frames published"
        if new_problems:
            status.message += (f"; {new_problems} inputs/frames dropped since the last report (malformed, out of "
                               f"order, no calibration, queue full, predictor errors)")
        if lost:
            status.message += f"; {lost} messages lost in transport since the last report (gaps in the stamps)"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status, *inputs])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


class ManagedOccupancyNode(OccupancyNode, LifecycleNode):
    """:class:`OccupancyNode` as a managed (lifecycle) node (``occupancy_node --managed``).

    It starts *unconfigured*, with its parameters declared (and settable) but no model and no
    topics. ``configure`` loads the model and creates the (lifecycle) publishers, the synchronizer
    and the worker; a model that cannot be loaded fails the transition (logged, the node stays
    unconfigured). ``activate`` subscribes to the inputs and starts /diagnostics; the publishers
    publish only while active. ``deactivate`` unsubscribes (the model stays loaded);
    ``cleanup`` releases the model; ``shutdown`` does what is left of both.
    """

    MANAGED = True

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._configure()
        except ParameterError as e:
            self.get_logger().error(f"configure failed: invalid parameters: {e}")
            return TransitionCallbackReturn.FAILURE
        except (OccDataError, OSError, RuntimeError) as e:
            self.get_logger().error(f"configure failed: cannot load the model: {type(e).__name__}: {e}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: model loaded, grid {self.spec.name} {tuple(self.spec.dims)}")
        return super().on_configure(state)

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._activate()
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        ret = super().on_cleanup(state)
        self._cleanup()
        return ret

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        ret = super().on_shutdown(state)
        if self._subs or self._diag_timer is not None:
            self._deactivate()
        if self.worker is not None:
            self._cleanup()
        return ret


def main(argv: list[str] | None = None, predictor: Predictor | None = None) -> int:
    """Run the node until shutdown (Ctrl-C / SIGTERM). Exit code 2, with one line naming the
    cause, on a missing or invalid params file, bad ROS arguments, invalid parameters (camera
    names the rig file does not know included), or a model that cannot be loaded (a device this
    torch lacks included). ``-h``/``--help`` prints the parameters; ``--managed`` (before
    ``--ros-args``) starts a :class:`ManagedOccupancyNode`."""
    from rclpy.executors import ExternalShutdownException

    args = list(argv if argv is not None else sys.argv)
    user_args = args[1:args.index("--ros-args")] if "--ros-args" in args else args[1:]
    if "-h" in user_args or "--help" in user_args:
        print(help_text(NODE_NAME))
        return 0
    managed = "--managed" in user_args
    if managed:
        args.remove("--managed")
    try:
        check_params_file_args(args)
    except ParameterError as e:
        print(f"occupancy_node: {e}", file=sys.stderr)
        return 2
    dds = use_shipped_profile()  # large clouds between processes need it (occ_ros.dds_profile)
    try:
        rclpy.init(args=args)
    except Exception as e:  # noqa: BLE001 - rclpy raises RCLError/RuntimeError for bad --ros-args
        print(f"occupancy_node: invalid ROS arguments {args[1:]}: {e}", file=sys.stderr)
        return 2
    node = None
    try:
        node = (ManagedOccupancyNode if managed else OccupancyNode)(predictor)
        node.get_logger().info(dds.message)
        if managed:
            node.get_logger().info("managed node: unconfigured; 'configure' loads the model, 'activate' subscribes "
                                   "(ros2 lifecycle set / occ-lifecycle)")
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
