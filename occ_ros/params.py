"""Every parameter of ``occupancy_node``, declared in one place.

``PARAMETERS`` lists each parameter with its default, description and valid range; the node
declares them all through rcl_interfaces ``ParameterDescriptor`` (with ``IntegerRange`` /
``FloatingPointRange``, so ``ros2 param describe`` shows them and rclpy rejects out-of-range
overrides), reads the values back and copies them into the typed :class:`NodeConfig` with
:func:`config_from_values`, which checks what a range cannot express (choices, topic names,
non-empty lists) and raises :class:`ParameterError` naming the parameter, the value and what
was expected. The defaults live in ``config/occupancy.yaml`` too (a ROS 2 params file,
``occupancy_node: ros__parameters: ...``); :func:`load_params_file` reads that format without
ROS, and a test keeps the file and this table equal.

Topic parameters may contain ``{camera}``, replaced by each camera name. The default topics are
relative names (``LIDAR_TOP``, ``{camera}/image_rect/compressed``, ``occupancy/markers``), so a
node namespace (``-r __ns:=/robot1``, the launch argument ``namespace``) moves them all; outside a
namespace they resolve to ``/LIDAR_TOP`` and so on. ``/diagnostics`` stays absolute (the
diagnostic aggregator listens there). Image topics follow image_transport's naming: the
compressed transport of the base topic ``{camera}/image_rect`` is ``{camera}/image_rect/compressed``
(what RViz2's Image display subscribes when given that topic); bags written before this
convention carry :data:`LEGACY_COMPRESSED_IMAGE_TOPIC`, which ``compressed_image_topic`` (or a
remapping) still selects.

Runtime parameters: the specs with ``read_only=False`` (:data:`RUNTIME_PARAMETERS`: ``min_score``,
``marker_alpha``, ``marker_hidden_classes``, ``diagnostics_period``, ``map_clear``) may be set while the node
runs; :func:`check_update` validates a proposed change (the node calls it from its
``add_on_set_parameters_callback``). The others are read once at start-up (rclpy refuses to set
them: ``read_only`` descriptors).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from occ_core.classes import FLAT_CLASSES, OCC3D_CLASSES, OCC3D_FREE
from occ_core.ego import NUSCENES_EGO_FOOTPRINT, EgoFootprint
from occ_core.errors import OccDataError
from occ_core.fileio import read_yaml

NODE_NAME = "occupancy_node"
PACKAGE = "occ_ros"


def package_share() -> Path:
    """The folder holding ``config/`` and ``launch/``: the source checkout when the package runs
    from one, else the ament share folder of ``occ_ros`` (an installed package)."""
    source = Path(__file__).resolve().parent.parent
    if (source / "config" / "occupancy.yaml").is_file():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError):
        return source


#: The params file shipped with the package.
DEFAULT_PARAMS_FILE = package_share() / "config" / "occupancy.yaml"

#: Image topic of bags written before the image_transport naming (``occ-nusc2bag`` up to issue 17).
LEGACY_COMPRESSED_IMAGE_TOPIC = "/{camera}/image_rect_compressed"
#: Classes the marker filter knows (Occ3D 0-16; free is never drawn).
MARKER_CLASSES: tuple[str, ...] = tuple(OCC3D_CLASSES[:OCC3D_FREE])
#: ``marker_hidden_classes`` that hides the ground (road, other flat ground, sidewalk, terrain).
GROUND_CLASSES = FLAT_CLASSES

NUSCENES_CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")


class ParameterError(ValueError):
    """An invalid parameter value; the message names the parameter, the value and what is expected."""


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, default (its type is the parameter's type), description, constraints.

    Attributes:
        lo, hi: inclusive numeric range (``IntegerRange`` / ``FloatingPointRange``), or None.
        choices: allowed string values, or None.
        read_only: the node reads it once at start-up; False: it may change while the node runs.
    """

    name: str
    default: Any
    description: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = True


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("model_config", "config/models/fusion.yaml",
              "Model config YAML (occ_core.models); a relative path is taken from the package share folder."),
    ParamSpec("checkpoint", "config/models/fusion_demo.pt",
              "Model checkpoint file (relative paths: from the package share folder); empty = seeded random-init weights."),
    ParamSpec("device", "cpu", "Torch device of the predictor: 'cpu', 'cuda' or 'cuda:N'."),
    ParamSpec("backend", "torch",
              "Inference engine: 'torch' (eager), 'onnxruntime' or 'tensorrt' (ONNX Runtime's TensorRT provider, "
              "fp16). The model is exported to ONNX once and cached (engine_cache_dir); LiDAR/fusion models keep "
              "their spconv LiDAR encoder in torch.",
              choices=("torch", "onnxruntime", "tensorrt")),
    ParamSpec("engine_cache_dir", "",
              "Folder of the exported ONNX files and TensorRT engines, keyed by checkpoint hash, config, "
              "camera count and opset; empty = $OCC_ENGINE_CACHE or ~/.cache/occ_ros/engines."),
    ParamSpec("camera_names", list(NUSCENES_CAMERAS),
              "Camera names, in the order the model expects them; each is also the camera's default frame id."),
    ParamSpec("image_transport", "compressed",
              "Camera message type: 'compressed' (sensor_msgs/CompressedImage) or 'raw' (sensor_msgs/Image).",
              choices=("compressed", "raw")),
    ParamSpec("compressed_image_topic", "{camera}/image_rect/compressed",
              "CompressedImage topic per camera ({camera} = camera name): image_transport's compressed "
              "transport of the base topic {camera}/image_rect; bags of older occ-nusc2bag versions use "
              "/{camera}/image_rect_compressed."),
    ParamSpec("raw_image_topic", "{camera}/image_raw", "Image topic per camera ({camera} = camera name)."),
    ParamSpec("camera_info_topic", "{camera}/camera_info", "CameraInfo topic per camera (intrinsics)."),
    ParamSpec("lidar_topic", "LIDAR_TOP", "LiDAR PointCloud2 topic (x, y, z [, intensity]); the sync trigger."),
    ParamSpec("input_qos", "sensor_data",
              "QoS of the camera, CameraInfo, LiDAR and odometry subscriptions: 'sensor_data' (best effort, "
              "keep last 5: matches any publisher) or 'reliable' (keep last 10: only reliable publishers, e.g. "
              "ros2 bag play; no message lost to a dropped fragment between processes). The odometry "
              "subscription keeps the last 100 either way (a pose per sensor message must not be dropped).",
              choices=("sensor_data", "reliable")),
    ParamSpec("odom_topic", "",
              "nav_msgs/Odometry (odom -> base_link): ego poses for multi-sweep aggregation and for placing each "
              "camera at its image stamp (camera_motion_compensation); empty = not subscribed."),
    ParamSpec("lidar_sweeps", 1,
              "LiDAR sweeps per frame (current + earlier ones moved into the current base_link with "
              "odometry); > 1 needs odom_topic.", lo=1, hi=20),
    ParamSpec("sweep_max_age", 0.6, "Oldest earlier sweep used, seconds before the current one.", lo=0.05, hi=5.0),
    ParamSpec("camera_motion_compensation", True,
              "Place each camera at its own image stamp: camera -> base_link(t_image) -> odom -> "
              "base_link(t_lidar), with ego poses from odom_topic, or from /tf's odom -> base_frame when "
              "odom_topic is empty and TF is read (through tf2_ros or tf2_msgs); never both. A camera whose pose "
              "at its stamp is missing keeps its static extrinsics and is counted on /diagnostics "
              "(camera_static_fallbacks)."),
    ParamSpec("temporal_pose_wait", 1.0,
              "Temporal models (a model config with a 'temporal' section): seconds (wall clock) the worker waits, "
              "per frame, for the ego pose at the LiDAR stamp when it has not arrived yet (poses travel beside the "
              "data; a frame without one resets the model's state, counted as temporal_reset_missing_pose). Other "
              "models wait at most 0.1 s, for camera motion compensation.", lo=0.0, hi=30.0),
    ParamSpec("ego_filter", True,
              "Drop LiDAR points inside ego_footprint (the vehicle's own body); the count is on /diagnostics "
              "(ego_points_removed)."),
    ParamSpec("ego_footprint", list(NUSCENES_EGO_FOOTPRINT.as_list()),
              "The vehicle body as a box in base_frame, [xmin, ymin, zmin, xmax, ymax, zmax] metres; default: "
              "the nuScenes car with margin (occ_core.ego, measured on real nuScenes sweeps)."),
    ParamSpec("markers_topic", "occupancy/markers", "Output MarkerArray (one CUBE_LIST per class)."),
    ParamSpec("voxels_topic", "occupancy/voxels",
              "Output PointCloud2 of non-free voxels (x, y, z, label, score, rgb = the class colour)."),
    ParamSpec("grid_topic", "occupancy/grid",
              "Output occ_ros_msgs/SemanticOccupancyGrid (dense labels, scores, flow when predicted)."),
    ParamSpec("diagnostics_topic", "/diagnostics", "Output diagnostic_msgs/DiagnosticArray."),
    ParamSpec("base_frame", "base_link", "Frame of the occupancy grid and of the outputs."),
    ParamSpec("extrinsics_source", "auto",
              "Sensor -> base_frame transforms: 'tf' (tf2_ros; without it /tf_static and /tf through "
              "tf2_msgs), 'rig' (rig_file) or 'auto' (tf when tf2_ros is importable, else rig).",
              choices=("auto", "tf", "rig")),
    ParamSpec("rig_file", "config/rigs/nuscenes.yaml",
              "Rig calibration YAML (sensor -> base_link); a relative path is taken from the package share folder."),
    ParamSpec("sync_queue_size", 10, "Messages kept per input by the approximate-time synchronizer.", lo=1, hi=100),
    ParamSpec("sync_queue_max_mb", 64.0,
              "Decoded bytes kept per input by the synchronizer, in MiB; the oldest messages go first.",
              lo=1.0, hi=4096.0),
    ParamSpec("max_image_pixels", 4096 * 3072,
              "Largest camera image accepted (width x height, read from the JPEG/PNG header before "
              "decoding); larger ones are dropped and counted as malformed.", lo=1, hi=1 << 30),
    ParamSpec("loss_warn_fraction", 0.01,
              "/diagnostics is WARN when an input loses (gaps in its stamps), garbles or reorders more than "
              "this fraction of its messages between two reports.", lo=0.0, hi=1.0),
    ParamSpec("loss_error_fraction", 0.2, "/diagnostics is ERROR above this fraction.", lo=0.0, hi=1.0),
    ParamSpec("sync_slop", 0.1,
              "Approximate-time slop in seconds: a set matches when max - min stamp < slop.", lo=0.0, hi=2.0),
    ParamSpec("worker_queue_size", 2, "Synchronized frames waiting for the predictor; the oldest is dropped.",
              lo=1, hi=32),
    ParamSpec("min_score", 0.0, "Voxels whose score is below this are published as free (runtime).",
              lo=0.0, hi=1.0, read_only=False),
    ParamSpec("marker_alpha", 1.0, "Marker opacity (runtime).", lo=0.01, hi=1.0, read_only=False),
    ParamSpec("marker_hidden_classes", [],
              "Classes left out of the markers (runtime; the voxel cloud and the grid keep them), e.g. "
              "[driveable_surface, other_flat, sidewalk, terrain] to hide the ground; empty = show every class.",
              read_only=False),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages (runtime).", lo=0.05, hi=60.0,
              read_only=False),
    ParamSpec("log_throttle", 5.0, "Seconds between repeated warnings of one kind.", lo=0.0, hi=3600.0),
    # the rolling map in odom (occ_core.mapping, occ_ros.map_output)
    ParamSpec("map_enabled", True,
              "Fold every frame into a rolling semantic map in map_frame and publish map_topic, map_cloud_topic "
              "and costmap_topic; needs the ego pose (odom_topic, else TF map_frame -> base_frame)."),
    ParamSpec("map_frame", "odom", "Fixed frame of the map and the costmap (REP 105 odom)."),
    ParamSpec("map_topic", "occupancy/map",
              "Output occ_ros_msgs/SemanticOccupancyGrid of the map window in map_frame (18 = unknown)."),
    ParamSpec("map_cloud_topic", "occupancy/map_cloud",
              "Output PointCloud2 of the map's occupied voxels in map_frame (for RViz and Foxglove)."),
    ParamSpec("costmap_topic", "occupancy/costmap",
              "Output nav_msgs/OccupancyGrid in map_frame (nav2 static layer map_topic): 0 free, 100 lethal, -1 unknown."),
    ParamSpec("map_publish_period", 1.0, "Seconds between map, map cloud and costmap messages.", lo=0.05, hi=60.0),
    ParamSpec("map_extent_xy", 96.0, "Metres of the map window along x and y (centred on the robot).",
              lo=1.0, hi=400.0),
    ParamSpec("map_extent_z", 8.0, "Metres of the map window along z (around the predictor grid's height band).",
              lo=1.0, hi=40.0),
    ParamSpec("map_reset_distance", 10.0, "A pose jump farther than this (m) between two frames clears the map.",
              lo=0.1, hi=1000.0),
    ParamSpec("map_ray_step", 0.012,
              "Radians between the rays that decide which voxels a frame saw (smaller: finer, slower).",
              lo=0.002, hi=0.1),
    ParamSpec("costmap_min_height", 0.1, "Bottom of the costmap's height band, metres above base_frame.",
              lo=-5.0, hi=10.0),
    ParamSpec("costmap_max_height", 2.0, "Top of the costmap's height band, metres above base_frame.",
              lo=-5.0, hi=10.0),
    ParamSpec("costmap_class_costs", [f"{c}=0" for c in FLAT_CLASSES],
              "Cost (0-100) of voxels of a class in the band, as 'class=cost' entries; free voxels cost 0, "
              "classes not listed are lethal (100), unknown cells -1."),
    ParamSpec("map_clear", False, "Setting it to true clears the map (runtime; each set clears again).",
              read_only=False),
)

PARAMETERS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMETERS}
#: Parameters that may change while the node runs.
RUNTIME_PARAMETERS: tuple[str, ...] = tuple(p.name for p in PARAMETERS if not p.read_only)

_TOPIC = re.compile(r"^~?/?[A-Za-z_{][A-Za-z0-9_{}/]*$")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class NodeConfig:
    """The node's settings, copied from its parameters (see ``PARAMETERS`` for each meaning)."""

    model_config: str
    checkpoint: str
    device: str
    backend: str
    engine_cache_dir: str
    camera_names: tuple[str, ...]
    image_transport: str
    compressed_image_topic: str
    raw_image_topic: str
    camera_info_topic: str
    lidar_topic: str
    input_qos: str
    odom_topic: str
    lidar_sweeps: int
    sweep_max_age: float
    camera_motion_compensation: bool
    temporal_pose_wait: float
    ego_filter: bool
    ego_footprint: tuple[float, ...]
    markers_topic: str
    voxels_topic: str
    grid_topic: str
    diagnostics_topic: str
    base_frame: str
    extrinsics_source: str
    rig_file: str
    sync_queue_size: int
    sync_queue_max_mb: float
    max_image_pixels: int
    loss_warn_fraction: float
    loss_error_fraction: float
    sync_slop: float
    worker_queue_size: int
    min_score: float
    marker_alpha: float
    marker_hidden_classes: tuple[str, ...]
    diagnostics_period: float
    log_throttle: float
    map_enabled: bool
    map_frame: str
    map_topic: str
    map_cloud_topic: str
    costmap_topic: str
    map_publish_period: float
    map_extent_xy: float
    map_extent_z: float
    map_reset_distance: float
    map_ray_step: float
    costmap_min_height: float
    costmap_max_height: float
    costmap_class_costs: tuple[str, ...]
    map_clear: bool

    def image_topic(self, camera: str) -> str:
        pattern = self.compressed_image_topic if self.image_transport == "compressed" else self.raw_image_topic
        return pattern.format(camera=camera)

    def info_topic(self, camera: str) -> str:
        return self.camera_info_topic.format(camera=camera)


def _check_type(spec: ParamSpec, value: Any) -> Any:
    d = spec.default
    if isinstance(d, bool):
        ok = isinstance(value, bool)
    elif isinstance(d, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(d, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(d, str):
        ok = isinstance(value, str)
    elif d and isinstance(d[0], float):  # list of numbers
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      for v in value)
        value = tuple(float(v) for v in value) if ok else value
    else:  # list of strings
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        kind = " of numbers" if isinstance(d, list) and d and isinstance(d[0], float) else " of strings"
        raise ParameterError(f"parameter {spec.name!r}: expected {type(d).__name__}"
                             f"{kind if isinstance(d, list) else ''}, got {value!r}")
    return value


def config_from_values(values: Mapping[str, Any]) -> NodeConfig:
    """A :class:`NodeConfig` from parameter values (missing ones take their defaults).

    Raises:
        ParameterError: unknown name, wrong type, out of range, not one of the choices, a bad
            topic/device/camera name; the message names the parameter and what it expects.
    """
    unknown = sorted(set(values) - set(PARAMETERS_BY_NAME))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown}; known: {sorted(PARAMETERS_BY_NAME)}")
    out: dict[str, Any] = {}
    for spec in PARAMETERS:
        v = _check_type(spec, values.get(spec.name, spec.default))
        if spec.lo is not None and not spec.lo <= v <= spec.hi:
            raise ParameterError(f"parameter {spec.name!r}: expected a value in [{spec.lo}, {spec.hi}], got {v!r}")
        if spec.choices is not None and v not in spec.choices:
            raise ParameterError(f"parameter {spec.name!r}: expected one of {list(spec.choices)}, got {v!r}")
        out[spec.name] = v
    cams = out["camera_names"]
    if not cams or len(set(cams)) != len(cams) or not all(_NAME.match(c) for c in cams):
        raise ParameterError(f"parameter 'camera_names': expected unique non-empty names of letters, digits and '_', "
                             f"got {list(cams)!r}")
    for name in ("compressed_image_topic", "raw_image_topic", "camera_info_topic", "lidar_topic", "markers_topic",
                 "voxels_topic", "grid_topic", "diagnostics_topic", "odom_topic", "map_topic", "map_cloud_topic",
                 "costmap_topic"):
        topic = out[name]
        if name == "odom_topic" and not topic:
            continue
        try:
            expanded = topic.format(camera="CAM")
        except (KeyError, IndexError, ValueError):
            raise ParameterError(f"parameter {name!r}: only the placeholder {{camera}} is allowed, got {topic!r}") from None
        if not _TOPIC.match(expanded) or "//" in expanded or expanded.endswith("/"):
            raise ParameterError(f"parameter {name!r}: expected a ROS topic name, got {topic!r}")
    for name in ("compressed_image_topic", "raw_image_topic", "camera_info_topic"):
        if len(cams) > 1 and "{camera}" not in out[name]:
            raise ParameterError(f"parameter {name!r}: with {len(cams)} cameras the topic needs '{{camera}}', "
                                 f"got {out[name]!r}")
    if out["lidar_sweeps"] > 1 and not out["odom_topic"]:
        raise ParameterError(f"parameter 'lidar_sweeps': {out['lidar_sweeps']} sweeps need ego motion; set 'odom_topic'")
    if not _DEVICE.match(out["device"]):
        raise ParameterError(f"parameter 'device': expected 'cpu', 'cuda' or 'cuda:N', got {out['device']!r}")
    for name in ("base_frame", "map_frame"):
        if not _NAME.match(out[name]):
            raise ParameterError(f"parameter {name!r}: expected a frame id, got {out[name]!r}")
    if out["costmap_max_height"] <= out["costmap_min_height"]:
        raise ParameterError(f"parameter 'costmap_max_height': expected > costmap_min_height "
                             f"({out['costmap_min_height']}), got {out['costmap_max_height']}")
    from occ_core.mapping.costmap import parse_class_costs  # (imports numba: only when parameters are checked)

    try:
        parse_class_costs(out["costmap_class_costs"], "parameter 'costmap_class_costs'")
    except OccDataError as e:
        raise ParameterError(str(e)) from None
    if out["loss_error_fraction"] < out["loss_warn_fraction"]:
        raise ParameterError(f"parameter 'loss_error_fraction': expected >= loss_warn_fraction "
                             f"({out['loss_warn_fraction']}), got {out['loss_error_fraction']}")
    if not out["model_config"]:
        raise ParameterError("parameter 'model_config': expected a model config path, got ''")
    if len(out["ego_footprint"]) != 6:
        raise ParameterError(f"parameter 'ego_footprint': expected 6 numbers [xmin, ymin, zmin, xmax, ymax, zmax], "
                             f"got {list(out['ego_footprint'])!r}")
    try:
        EgoFootprint.from_list(out["ego_footprint"], "parameter 'ego_footprint'")
    except OccDataError as e:
        raise ParameterError(str(e)) from None
    hidden = out["marker_hidden_classes"]
    bad = [c for c in hidden if c not in MARKER_CLASSES]
    if bad or len(set(hidden)) != len(hidden):
        raise ParameterError(f"parameter 'marker_hidden_classes': expected distinct class names out of "
                             f"{list(MARKER_CLASSES)}, got {list(hidden)!r}"
                             + (f" ({bad} unknown)" if bad else " (a name repeats)"))
    return NodeConfig(**out)


def check_update(config: NodeConfig, changes: Mapping[str, Any]) -> NodeConfig:
    """The configuration after a runtime parameter change, checked like the start-up values.

    Args:
        config: the node's current configuration.
        changes: parameter name -> proposed value; names this table does not declare (rclpy's own,
            ``use_sim_time``) are ignored.

    Raises:
        ParameterError: a read-only parameter, or a value :func:`config_from_values` rejects
            (the message names the parameter, the value and what is expected).
    """
    ours = {k: v for k, v in changes.items() if k in PARAMETERS_BY_NAME}
    fixed = sorted(k for k in ours if PARAMETERS_BY_NAME[k].read_only)
    if fixed:
        raise ParameterError(f"parameter(s) {fixed} are read at start-up only; at runtime only "
                             f"{list(RUNTIME_PARAMETERS)} can change")
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()}
    values.update(ours)
    return config_from_values(values)


def resolve_topic(name: str, namespace: str = "/", node_name: str = NODE_NAME) -> str:
    """The fully qualified name of a topic as rcl expands it: absolute names stay, ``~/x`` becomes
    ``<namespace>/<node_name>/x``, relative names go below ``namespace``."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if name.startswith("/"):
        return name
    if name.startswith("~"):
        return f"{ns}/{node_name}/{name[1:].lstrip('/')}"
    return f"{ns}/{name}"


def image_topic_for_bag(topics) -> str:
    """``compressed_image_topic`` for a bag with these topics: the image_transport layout
    (``/{camera}/image_rect/compressed``) unless the bag has only :data:`LEGACY_COMPRESSED_IMAGE_TOPIC` ones."""
    if (any(t.endswith("/image_rect_compressed") for t in topics)
            and not any(t.endswith("/image_rect/compressed") for t in topics)):
        return LEGACY_COMPRESSED_IMAGE_TOPIC
    return "/" + PARAMETERS_BY_NAME["compressed_image_topic"].default.lstrip("/")


def help_text(prog: str = NODE_NAME) -> str:
    """``occupancy_node --help``: usage and every parameter with its default, range and meaning."""
    lines = [f"usage: {prog} [--managed] [--ros-args [--params-file FILE] [-p NAME:=VALUE ...] [-r FROM:=TO ...]]",
             "",
             "Semantic occupancy from synchronized cameras and LiDAR (occ_ros). Parameters are set with",
             "'-p name:=value' or a params file (defaults: config/occupancy.yaml); '(runtime)' ones can also be",
             "set while the node runs (SetParameters service, 'ros2 param set').",
             "",
             "options:",
             "  -h, --help   print this help and exit",
             "  --managed    start as a managed (lifecycle) node: 'configure' loads the model, 'activate'",
             "               subscribes to the inputs (ros2 lifecycle set / occ-lifecycle)",
             "",
             "parameters:"]
    for p in PARAMETERS:
        rng = f" [{p.lo:g}, {p.hi:g}]" if p.lo is not None else ""
        if p.choices:
            rng = f" {{{'|'.join(p.choices)}}}"
        lines.append(f"  {p.name} ({type(p.default).__name__}{rng}, default {p.default!r}{'' if p.read_only else ', runtime'})")
        lines.append(f"      {p.description}")
    return "\n".join(lines)


def load_params_file(path: str | Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The ``ros__parameters`` of ``node_name`` (and of ``/**``) in a ROS 2 params file.

    Raises:
        ParameterError: unreadable file, or no ``<node>: ros__parameters:`` mapping.
    """
    path = Path(path)
    try:
        doc = read_yaml(path, "params file")
    except OccDataError as e:
        raise ParameterError(str(e)) from None
    if not isinstance(doc, dict):
        raise ParameterError(f"{path}: expected a mapping '<node name>: ros__parameters: ...'")
    values: dict[str, Any] = {}
    found = False
    for key in ("/**", node_name, "/" + node_name):
        section = doc.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise ParameterError(f"{path}: {key!r} must hold a 'ros__parameters' mapping")
        values.update(section["ros__parameters"])
        found = True
    if not found:
        raise ParameterError(f"{path}: no section {node_name!r} (or '/**') with 'ros__parameters'")
    return values


def check_params_file_args(argv: list[str]) -> None:
    """Check every ``--params-file PATH`` of a node's command line before rcl reads it (rcl fails
    with a traceback): each must be a readable YAML file mapping node names to ``ros__parameters``.

    Raises:
        ParameterError: naming the file and what is wrong with it.
    """
    for i, arg in enumerate(argv):
        if arg != "--params-file":
            continue
        if i + 1 >= len(argv):
            raise ParameterError("--params-file: expected a file path after it")
        path = Path(argv[i + 1])
        if not path.is_file():
            raise ParameterError(f"--params-file: {path} does not exist or is not a file")
        try:
            doc = read_yaml(path, "params file")
        except OccDataError as e:
            raise ParameterError(f"--params-file: {e}") from None
        if not isinstance(doc, dict) or not any(isinstance(v, dict) and "ros__parameters" in v for v in doc.values()):
            raise ParameterError(f"--params-file: {path} holds no '<node name>: ros__parameters:' mapping")


def resolve_share_path(path: str) -> Path:
    """An absolute path for a parameter path: absolute or existing as given, else below the package share folder."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    return package_share() / p


# ------------------------------------------------------------------ rclpy side (imported lazily)
def descriptor(spec: ParamSpec):
    """The rcl_interfaces ``ParameterDescriptor`` of one parameter."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    kind = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
            float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
            list: ParameterType.PARAMETER_STRING_ARRAY}[type(spec.default)]
    if isinstance(spec.default, list) and spec.default and isinstance(spec.default[0], float):
        kind = ParameterType.PARAMETER_DOUBLE_ARRAY
    text = spec.description
    if spec.choices:
        text += f" One of: {', '.join(spec.choices)}."
    d = ParameterDescriptor(name=spec.name, type=kind, description=text, read_only=spec.read_only)
    if spec.lo is not None and isinstance(spec.default, int):
        d.integer_range = [IntegerRange(from_value=int(spec.lo), to_value=int(spec.hi), step=1)]
    elif spec.lo is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.lo), to_value=float(spec.hi), step=0.0)]
    if spec.choices:
        d.additional_constraints = f"one of {list(spec.choices)}"
    return d


def declare_and_read(node) -> NodeConfig:
    """Declare every parameter on an rclpy node and return the validated :class:`NodeConfig`.

    Raises:
        ParameterError: a value that rclpy's range check or :func:`config_from_values` rejects.
    """
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.parameter import Parameter

    # an empty list would be declared as a byte array (rclpy infers the type from the value):
    # such parameters are declared by type and given their empty default when nothing overrides them
    empty = [s for s in PARAMETERS if isinstance(s.default, list) and not s.default]
    try:
        node.declare_parameters("", [(s.name, Parameter.Type.STRING_ARRAY if s in empty else s.default, descriptor(s))
                                     for s in PARAMETERS])
    except (InvalidParameterValueException, InvalidParameterTypeException) as e:
        raise ParameterError(f"{node.get_name()}: {e}") from None
    for s in empty:
        try:
            node.get_parameter(s.name)
        except ParameterUninitializedException:
            node.set_parameters([Parameter(s.name, Parameter.Type.STRING_ARRAY, [])])
    values = {s.name: node.get_parameter(s.name).value for s in PARAMETERS}
    return config_from_values(values)


__all__ = ["LEGACY_COMPRESSED_IMAGE_TOPIC", "MARKER_CLASSES", "GROUND_CLASSES", "RUNTIME_PARAMETERS", "check_update",
           "resolve_topic", "help_text", "image_topic_for_bag", "NODE_NAME", "PACKAGE", "package_share", "DEFAULT_PARAMS_FILE", "NUSCENES_CAMERAS", "ParameterError", "ParamSpec", "PARAMETERS",
           "PARAMETERS_BY_NAME", "NodeConfig", "config_from_values", "load_params_file", "check_params_file_args", "resolve_share_path",
           "descriptor", "declare_and_read"]
