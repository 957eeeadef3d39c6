"""What ``launch/occupancy.launch.py`` starts, as plain data, and ``occ-launch``, a runner for it.

One description, two consumers, so they cannot drift:

- ``launch/occupancy.launch.py`` (``ros2 launch occ_ros occupancy.launch.py model:=...``)
  turns each :class:`NodeSpec` into a ``launch_ros.actions.Node`` and each
  :class:`ProcessSpec` into an ``ExecuteProcess``; ``launch``/``launch_ros`` are imported
  only inside that file.
- ``occ-launch`` (``occ-launch model:=... rviz:=true``), for installs without ``ros2 launch``
  (the PyPI wheels), starts the same executables as subprocesses with
  ``--ros-args -r __node:=<name> --params-file <yaml> -r from:=to -p name:=value``, forwards
  SIGINT/SIGTERM to them and exits when one of them exits (stopping the others).

Launch arguments (``name:=value``): see :data:`ARGUMENTS`.

Bag playback (``bag:=BAG``) works out of the box: the player (``occ-bag-play``) starts with the
node but plays only once the node is ready, i.e. once every input topic of the node (LiDAR, each
camera's image and CameraInfo, read from the params file) has a matched subscription of
``occupancy_node`` (the node subscribes only after its model is loaded; the player waits up to
``--wait-timeout`` s and says which topics are missing). It publishes every topic RELIABLE, and
with a bag the ``auto`` arguments give the node ``input_qos: reliable`` (no cloud lost to a dropped
fragment), ``use_sim_time: true`` and ``worker_queue_size: 32`` (a frame that arrives while the
model is busy waits instead of being dropped). The first CameraInfo of each camera goes out before
the playback. After the bag ends the player waits until every played LiDAR frame has its output
on the node's voxel topic (or none came for 10 s), prints ``predicted N of M LiDAR frames`` and
exits 0, which ends the launch (the runner stops the node; the launch file shuts down). Gaps of
more than 2 s between messages (separate scenes) are skipped.

Topics: the node's default topics are relative, so ``namespace:=/robot1`` moves them all; with
``bag:=`` the player then publishes the bag's topics below the namespace too (``occ-bag-play
--namespace``: ``/LIDAR_TOP`` as ``/robot1/LIDAR_TOP``), except ``/tf``, ``/tf_static`` (tf2 reads
these absolute names in every namespace, and so does the node) and the node inputs that the params
file names absolutely (the node does not move them either); ``/clock`` stays global. ``output_ns:=NS`` remaps every
output (grid, voxels, markers, map, map_cloud, costmap) to ``NS/<leaf>``; ``image_topic:=PATTERN`` sets the camera topics
(with a bag of an older ``occ-nusc2bag``, its ``/<CH>/image_rect_compressed`` are followed on
their own). ``rviz:=true`` hands RViz2 ``config/occupancy.rviz``, or a copy on the launched
topics (:func:`rviz_config_for`). ``managed:=true`` starts the node as a lifecycle node.

Bad arguments (an unknown name, a value outside its choices, a missing params file, model,
checkpoint or bag) end ``occ-launch`` with one line naming the argument and exit code 2.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from occ_core.cli import check_input_file, run_cli
from occ_core.errors import OccDataError
from occ_ros.params import (NODE_NAME, PACKAGE, PARAMETERS_BY_NAME, NodeConfig, ParameterError, config_from_values,
                            image_topic_for_bag, load_params_file, package_share, resolve_topic)

_NAMESPACE = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
_TOPIC = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
#: Outputs that ``output_ns`` moves: NodeConfig field -> leaf name below output_ns.
OUTPUTS = (("grid_topic", "grid"), ("voxels_topic", "voxels"), ("markers_topic", "markers"), ("map_topic", "map"),
           ("map_cloud_topic", "map_cloud"), ("costmap_topic", "costmap"))


@dataclass(frozen=True)
class LaunchArgument:
    """A launch argument: name, default, description, allowed values (None = any string)."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None


ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("model", "config/models/fusion.yaml",
                   "Model config YAML (relative paths: from the occ_ros share folder)."),
    LaunchArgument("checkpoint", "config/models/fusion_demo.pt",
                   "Model checkpoint (relative paths: from the occ_ros share folder); empty = seeded random-init weights."),
    LaunchArgument("use_sim_time", "auto", "Use /clock time; auto = true when playing a bag.", ("auto", "true", "false")),
    LaunchArgument("bag", "", "A rosbag2 folder to play with occ-bag-play once the node is ready (publishes /clock, "
                              "reliable); the launch ends when every frame is predicted. Empty = live sensors."),
    LaunchArgument("rate", "1.0", "Playback speed factor of the bag (> 0)."),
    LaunchArgument("loop", "false", "Play the bag again and again.", ("true", "false")),
    LaunchArgument("input_qos", "auto", "QoS of the node's inputs; auto = reliable when playing a bag, else the "
                                        "params file's value.", ("auto", "sensor_data", "reliable")),
    LaunchArgument("worker_queue_size", "auto", "Frames waiting for the model (1-32, drop-oldest); auto = 32 when "
                                                "playing a bag (every frame predicted), else the params file's value."),
    LaunchArgument("rviz", "false", "Start RViz2 with config/occupancy.rviz.", ("true", "false")),
    LaunchArgument("params_file", "config/occupancy.yaml", "occupancy_node parameters (ROS 2 params file)."),
    LaunchArgument("output_ns", "", "Namespace of every output: <output_ns>/grid, <output_ns>/voxels, <output_ns>/markers, "
                                    "<output_ns>/map, <output_ns>/map_cloud, <output_ns>/costmap "
                                    "(relative: below namespace); empty = the params file's topics (occupancy/...)."),
    LaunchArgument("namespace", "", "Namespace of the node (e.g. /robot1): its relative topics, i.e. every default "
                                    "input and output except /diagnostics, move below it; with bag:= the player "
                                    "publishes the bag's topics below it too (not /tf, /tf_static, /clock). "
                                    "Empty = the root."),
    LaunchArgument("managed", "false", "Start occupancy_node as a managed (lifecycle) node: 'configure' loads the "
                                       "model, 'activate' subscribes (ros2 lifecycle set / occ-lifecycle).",
                   ("true", "false")),
    LaunchArgument("image_topic", "", "Camera image topic pattern of the node ({camera} = camera name), e.g. "
                                      "/{camera}/image_rect_compressed for bags of older occ-nusc2bag versions; "
                                      "empty = the params file's (image_transport naming), or with bag:= the bag's."),
)
ARGUMENTS_BY_NAME = {a.name: a for a in ARGUMENTS}


@dataclass(frozen=True)
class NodeSpec:
    """A ROS node to start.

    Attributes:
        parameters: ``(name, value)`` pairs applied after ``params_files`` (they win).
        remappings: ``(from, to)`` topic remappings.
        arguments: plain command-line arguments before ``--ros-args``.
    """

    package: str
    executable: str
    name: str
    namespace: str = ""
    params_files: tuple[str, ...] = ()
    parameters: tuple[tuple[str, Any], ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProcessSpec:
    """A plain process to start (``cmd`` = argv); ``ends_launch``: its exit ends the launch."""

    name: str
    cmd: tuple[str, ...]
    ends_launch: bool = False


@dataclass(frozen=True)
class LaunchPlan:
    """Everything one launch starts."""

    nodes: tuple[NodeSpec, ...]
    processes: tuple[ProcessSpec, ...]


class LaunchArgumentError(OccDataError):
    """An unknown launch argument, a value outside its choices, or a missing file (named)."""


def resolve_arguments(values: Mapping[str, str]) -> dict[str, str]:
    """All launch arguments: ``values`` over the defaults, checked against names, choices and number ranges."""
    unknown = sorted(set(values) - set(ARGUMENTS_BY_NAME))
    if unknown:
        raise LaunchArgumentError(f"unknown launch argument(s) {unknown}; known: {sorted(ARGUMENTS_BY_NAME)}")
    out = {a.name: str(values.get(a.name, a.default)) for a in ARGUMENTS}
    for a in ARGUMENTS:
        if a.choices is not None and out[a.name] not in a.choices:
            raise LaunchArgumentError(f"launch argument {a.name}:={out[a.name]!r}: expected one of {list(a.choices)}")
    for name in ("output_ns", "namespace"):
        value = out[name].rstrip("/") or out[name]
        if value and not _NAMESPACE.match(value):
            raise LaunchArgumentError(f"launch argument {name}:={out[name]!r}: expected a namespace (letters, digits, "
                                      f"'_' and '/'-separated, e.g. /robot1 or occupancy)")
    if out["namespace"] and not out["namespace"].startswith("/"):
        raise LaunchArgumentError(f"launch argument namespace:={out['namespace']!r}: expected an absolute namespace "
                                  f"(e.g. /robot1)")
    if out["image_topic"] and ("{camera}" not in out["image_topic"]
                               or not _TOPIC.match(out["image_topic"].format(camera="CAM"))):
        raise LaunchArgumentError(f"launch argument image_topic:={out['image_topic']!r}: expected a topic name with "
                                  f"{{camera}} (e.g. /{{camera}}/image_rect_compressed)")
    try:
        rate = float(out["rate"])
    except ValueError:
        rate = float("nan")
    if not 0 < rate < float("inf"):
        raise LaunchArgumentError(f"launch argument rate:={out['rate']!r}: expected a number > 0")
    q = out["worker_queue_size"]
    spec = PARAMETERS_BY_NAME["worker_queue_size"]
    if q != "auto" and not (q.isdigit() and spec.lo <= int(q) <= spec.hi):
        raise LaunchArgumentError(f"launch argument worker_queue_size:={q!r}: expected 'auto' or an integer in "
                                  f"[{int(spec.lo)}, {int(spec.hi)}]")
    return out


@dataclass(frozen=True)
class NodeTopics:
    """The node's topics, fully qualified, as the launch starts it (params file, parameter
    overrides, namespace, remappings).

    Attributes:
        inputs: LiDAR, then each camera's image and CameraInfo topic.
        camera_info: the CameraInfo topics. images: camera name -> image topic.
        lidar: the LiDAR topic. voxels, markers, grid, map, map_cloud, costmap: the outputs.
    """

    inputs: tuple[str, ...]
    camera_info: tuple[str, ...]
    lidar: str
    voxels: str
    markers: str = ""
    grid: str = ""
    images: tuple[tuple[str, str], ...] = ()
    map: str = ""
    map_cloud: str = ""
    costmap: str = ""


def _node_config(params_file: str, overrides: Mapping[str, Any], strict: bool) -> NodeConfig:
    try:
        values = load_params_file(params_file)
        values = {k: v for k, v in values.items() if k in PARAMETERS_BY_NAME}
        values.update({k: v for k, v in overrides.items() if k in PARAMETERS_BY_NAME})
        return config_from_values(values)
    except ParameterError as e:
        if strict:
            raise LaunchArgumentError(f"launch argument params_file:={params_file}: {e}") from None
        return config_from_values({k: v for k, v in overrides.items() if k in PARAMETERS_BY_NAME})


def node_topics(params_file: str, remappings: Mapping[str, str] | None = None, strict: bool = True,
                namespace: str = "", overrides: Mapping[str, Any] | None = None) -> NodeTopics:
    """:class:`NodeTopics` of ``occupancy_node`` started with ``params_file`` and the parameter
    ``overrides`` (parameters neither sets take their defaults; names the node does not know are
    left out) in ``namespace``, with ``remappings`` (from -> to, as the launch passes them).

    Raises:
        LaunchArgumentError: with ``strict``, an unreadable params file or invalid topic parameters
            (else the defaults are used).
    """
    cfg = _node_config(params_file, dict(overrides or {}), strict)
    remap = {resolve_topic(k, namespace): resolve_topic(v, namespace) for k, v in (remappings or {}).items()}

    def full(topic: str) -> str:
        t = resolve_topic(topic, namespace)
        return remap.get(t, t)

    images = tuple((c, full(cfg.image_topic(c))) for c in cfg.camera_names)
    info = tuple(full(cfg.info_topic(c)) for c in cfg.camera_names)
    inputs = (full(cfg.lidar_topic), *(t for (_, img), i in zip(images, info) for t in (img, i)))
    return NodeTopics(inputs, info, full(cfg.lidar_topic), full(cfg.voxels_topic), full(cfg.markers_topic),
                      full(cfg.grid_topic), images, full(cfg.map_topic), full(cfg.map_cloud_topic), full(cfg.costmap_topic))


def check_files(values: Mapping[str, str]) -> None:
    """The files the launch arguments name exist (checked before anything starts).

    Raises:
        LaunchArgumentError: naming the argument and the path.
    """
    a = resolve_arguments(values)
    fields = [("params_file", a["params_file"]), ("model", a["model"])]
    if a["checkpoint"]:
        fields.append(("checkpoint", a["checkpoint"]))
    try:
        for name, path in fields:
            check_input_file(_share_path(path), f"launch argument {name}:={path}")
    except OccDataError as e:
        raise LaunchArgumentError(str(e)) from None
    if a["bag"] and not Path(a["bag"]).expanduser().exists():
        raise LaunchArgumentError(f"launch argument bag:={a['bag']}: {a['bag']} does not exist "
                                  f"(expected a rosbag2 folder or a .mcap/.db3 file)")


def _share_path(path: str) -> str:
    p = Path(path).expanduser()
    return str(p.resolve() if p.is_absolute() or p.exists() else package_share() / p)


def describe(values: Mapping[str, str] | None = None, check: bool = False) -> LaunchPlan:
    """The nodes and processes of ``occupancy.launch.py`` for the given launch arguments.

    Args:
        check: also check that the named files exist and the params file is valid (:func:`check_files`).

    Raises:
        LaunchArgumentError: a bad argument (named in the message).
    """
    values = dict(values or {})
    a = resolve_arguments(values)
    if check:
        check_files(values)
    bag = a["bag"]
    sim = a["use_sim_time"] == "true" or (a["use_sim_time"] == "auto" and bool(bag))
    params_file = _share_path(a["params_file"])
    parameters: list[tuple[str, Any]] = [("model_config", _share_path(a["model"])),
                                         ("checkpoint", _share_path(a["checkpoint"]) if a["checkpoint"] else ""),
                                         ("use_sim_time", sim)]
    if a["input_qos"] != "auto" or bag:
        parameters.append(("input_qos", "reliable" if a["input_qos"] == "auto" else a["input_qos"]))
    if a["worker_queue_size"] != "auto" or bag:
        parameters.append(("worker_queue_size", 32 if a["worker_queue_size"] == "auto" else int(a["worker_queue_size"])))
    cfg = _node_config(params_file, dict(parameters), strict=check)
    image_param = "compressed_image_topic" if cfg.image_transport == "compressed" else "raw_image_topic"
    if a["image_topic"]:
        parameters.append((image_param, a["image_topic"]))
    namespace = "/" + a["namespace"].strip("/") if a["namespace"].strip("/") else ""
    if not a["image_topic"] and bag and cfg.image_transport == "compressed":
        legacy = image_topic_for_bag(_bag_topics(bag))
        if legacy != "/" + PARAMETERS_BY_NAME["compressed_image_topic"].default:  # an older bag: its image topics
            # relative in a namespace, where the player publishes them
            parameters.append((image_param, legacy.lstrip("/") if namespace else legacy))
    out_ns = a["output_ns"].rstrip("/")
    # every output below output_ns: remap the topics the node is configured with (relative ones
    # expand in the node's namespace, as rcl expands both sides of a rule)
    remappings = tuple((getattr(cfg, field), f"{out_ns}/{leaf}") for field, leaf in OUTPUTS) if out_ns else ()
    node = NodeSpec(
        package=PACKAGE, executable="occupancy_node", name=NODE_NAME, namespace=namespace,
        params_files=(params_file,),
        parameters=tuple(parameters),
        remappings=remappings,
        arguments=("--managed",) if a["managed"] == "true" else (),
    )
    topics = node_topics(params_file, dict(remappings), strict=check, namespace=namespace, overrides=dict(parameters))
    nodes = [node]
    if a["rviz"] == "true":
        nodes.append(NodeSpec(package="rviz2", executable="rviz2", name="rviz2",
                              parameters=(("use_sim_time", sim),),
                              arguments=("-d", rviz_config_for(topics, cfg.base_frame))))
    processes = []
    if bag:
        # our own player: ros2 bag play is not part of the rclpy wheels; occ-bag-play publishes /clock too
        cmd = ["occ-bag-play", bag, "--rate", a["rate"], *(["--loop"] if a["loop"] == "true" else []), "--reliable",
               "--wait-for", *topics.inputs, "--wait-for-node", f"{namespace}/{NODE_NAME}" if namespace else NODE_NAME,
               "--preroll", *topics.camera_info, "--expect-outputs", topics.voxels, "--lidar-topic", topics.lidar]
        if namespace:
            cmd += ["--namespace", namespace, "--global-topics", *_global_topics(params_file, parameters, strict=check)]
        processes.append(ProcessSpec("bag_player", tuple(cmd), ends_launch=True))
    return LaunchPlan(tuple(nodes), tuple(processes))


def _global_topics(params_file: str, parameters: Sequence[tuple[str, Any]], strict: bool) -> list[str]:
    """The bag topics the player keeps at their recorded names under ``namespace:=``: ``/tf`` and
    ``/tf_static`` (absolute in tf2 and in the node, see :data:`occ_ros.bag.play.GLOBAL_TOPICS`) and
    every input (LiDAR, images, CameraInfo, odometry) the node's parameters name absolutely, which
    the namespace does not move."""
    from occ_ros.bag.play import GLOBAL_TOPICS

    cfg = _node_config(params_file, dict(parameters), strict)
    inputs = [cfg.lidar_topic, cfg.odom_topic, *(t for c in cfg.camera_names for t in (cfg.image_topic(c),
                                                                                       cfg.info_topic(c)))]
    return list(dict.fromkeys([*GLOBAL_TOPICS, *(t for t in inputs if t.startswith("/"))]))


def _bag_topics(bag: str) -> set[str]:
    """The topic names of a bag (empty when it cannot be read: check_files reports a missing bag)."""
    try:
        from occ_ros.bag.bagio import open_bag

        reader = open_bag(Path(bag).expanduser())
    except Exception:  # noqa: BLE001 - not a bag (yet): the player says so with its own message
        return set()
    try:
        return {c.topic for c in reader.connections}
    finally:
        reader.close()


SHIPPED_RVIZ = "config/occupancy.rviz"


def rviz_topics(doc: Mapping[str, Any]) -> dict[str, str]:
    """Display name -> topic of every display with a topic in a parsed RViz config."""
    return {d["Name"]: d["Topic"]["Value"] for d in doc["Visualization Manager"]["Displays"] if "Topic" in d}


def rviz_config_for(topics: NodeTopics, base_frame: str = "base_link") -> str:
    """An RViz config showing ``topics``: the shipped ``config/occupancy.rviz`` when its topics are
    these, else a copy with the display topics (markers, voxels, LiDAR, one Image display per
    camera) and the fixed frame replaced, written once under ``<tmp>/occ_ros/`` (named by its
    content hash); returns its path."""
    shipped = Path(_share_path(SHIPPED_RVIZ))
    text = shipped.read_text()
    doc = yaml.safe_load(text)
    vm = doc["Visualization Manager"]
    want = {"Occupancy markers": topics.markers, "Occupancy voxels (class colour)": topics.voxels,
            "LiDAR": topics.lidar, "Semantic map (odom)": topics.map_cloud, "Costmap (odom)": topics.costmap,
            **dict(topics.images)}
    if rviz_topics(doc) == want and vm["Global Options"]["Fixed Frame"] == base_frame:
        return str(shipped)
    displays = [d for d in vm["Displays"] if "Topic" not in d or d["Name"] in want]
    for d in displays:
        if "Topic" in d:
            d["Topic"]["Value"] = want[d["Name"]]
    missing = [name for name in want if name not in {d["Name"] for d in displays}]
    template = next(d for d in vm["Displays"] if d["Class"] == "rviz_default_plugins/Image")
    for cam in missing:  # cameras the shipped config does not have
        d = yaml.safe_load(yaml.safe_dump(template))
        d["Name"], d["Topic"]["Value"] = cam, want[cam]
        displays.append(d)
    vm["Displays"] = displays
    vm["Global Options"]["Fixed Frame"] = base_frame
    vm["Views"]["Current"]["Target Frame"] = base_frame
    out_text = "# Written by occ_ros.launch_description from config/occupancy.rviz for the launched topics.\n" + \
        yaml.safe_dump(doc, sort_keys=False)
    out = Path(tempfile.gettempdir()) / "occ_ros" / f"occupancy-{hashlib.sha1(out_text.encode()).hexdigest()[:12]}.rviz"
    if not out.is_file():
        from occ_core.fileio import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, out_text)
    return str(out)


def param_value_text(value: Any) -> str:
    """A parameter value as ``-p name:=<text>`` expects it (YAML: ``true``, ``0.1``, ``''``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.split("\n...")[0].strip()


def find_executable(package: str, executable: str) -> str | None:
    """``<prefix>/lib/<package>/<executable>`` of an ament prefix, else the interpreter's bin folder, else PATH."""
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        cand = Path(prefix) / "lib" / package / executable
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    if package == PACKAGE:
        cand = Path(sys.executable).parent / executable
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which(executable)


def node_command(spec: NodeSpec, executable_path: str | None = None) -> list[str]:
    """The argv that starts ``spec`` like launch_ros would (``--ros-args`` remaps, params files, params)."""
    cmd = [executable_path or spec.executable, *spec.arguments, "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        cmd += ["-r", f"__ns:={spec.namespace}"]
    for f in spec.params_files:
        cmd += ["--params-file", f]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    for name, value in spec.parameters:
        cmd += ["-p", f"{name}:={param_value_text(value)}"]
    return cmd


def commands(plan: LaunchPlan, resolve: bool = True) -> list[tuple[str, list[str]]]:
    """``(name, argv)`` for every node and process of ``plan``.

    Raises:
        FileNotFoundError: with ``resolve``, an executable that cannot be found.
    """
    out = []
    for spec in plan.nodes:
        path = None
        if resolve:
            path = find_executable(spec.package, spec.executable)
            if path is None:
                raise FileNotFoundError(f"executable {spec.executable!r} of package {spec.package!r} not found "
                                        f"(AMENT_PREFIX_PATH, {Path(sys.executable).parent}, PATH)")
        out.append((spec.name, node_command(spec, path)))
    for proc in plan.processes:
        argv = list(proc.cmd)
        if resolve:
            beside = Path(sys.executable).parent / argv[0]  # console scripts of this environment
            path = str(beside) if beside.is_file() and os.access(beside, os.X_OK) else shutil.which(argv[0])
            if path is None:
                raise FileNotFoundError(f"{proc.name}: {argv[0]!r} not found in {Path(sys.executable).parent} or on PATH")
            argv[0] = path
        out.append((proc.name, argv))
    return out


def run(cmds: Sequence[tuple[str, list[str]]], stop_timeout: float = 10.0) -> int:
    """Start every command, forward SIGINT/SIGTERM to them, return when the first exits.

    The others are then interrupted (SIGINT, then SIGTERM, then SIGKILL after ``stop_timeout``).
    Returns the exit code of the first process that exited (0 when stopped by a signal we forwarded).
    """
    procs: list[tuple[str, subprocess.Popen]] = []
    stopping = {"signal": None}

    def forward(signum, _frame):
        stopping["signal"] = signum
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name, argv in cmds:
            print(f"[occ-launch] {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
            procs.append((name, subprocess.Popen(argv)))
        first = None
        while first is None:
            for name, p in procs:
                if p.poll() is not None:
                    first = (name, p.returncode)
                    break
            else:
                time.sleep(0.1)
        name, code = first
        print(f"[occ-launch] {name} exited with code {code}; stopping the rest", file=sys.stderr, flush=True)
        for sig, wait in ((signal.SIGINT, stop_timeout), (signal.SIGTERM, stop_timeout / 2), (signal.SIGKILL, 5.0)):
            alive = [p for _, p in procs if p.poll() is None]
            if not alive:
                break
            for p in alive:
                p.send_signal(sig)
            end = time.monotonic() + wait
            while time.monotonic() < end and any(p.poll() is None for p in alive):
                time.sleep(0.05)
        if stopping["signal"] is not None and code in (0, -stopping["signal"], 128 + stopping["signal"]):
            return 0
        return code if code >= 0 else 128 - code
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def parse_cli(argv: Sequence[str]) -> tuple[dict[str, str], bool]:
    """``name:=value`` launch arguments and the ``--dry-run`` flag."""
    values, dry = {}, False
    for arg in argv:
        if arg in ("--dry-run", "-n"):
            dry = True
        elif ":=" in arg:
            k, v = arg.split(":=", 1)
            values[k] = v
        else:
            raise LaunchArgumentError(f"expected name:=value or --dry-run, got {arg!r} (occ-launch --help lists them)")
    return values, dry


USAGE = "usage: occ-launch [--dry-run] [name:=value ...]\n\nlaunch arguments:\n" + "\n".join(
    f"  {a.name}:=<{'|'.join(a.choices) if a.choices else 'value'}>  {a.description} (default: {a.default!r})"
    for a in ARGUMENTS)


def main(argv: Sequence[str] | None = None) -> int:
    """``occ-launch``: start what ``occupancy.launch.py`` starts, without ``ros2 launch``.
    Bad arguments: one line ``occ-launch: ...`` on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    return run_cli("occ-launch", lambda: _main(argv))


def _main(argv: list[str]) -> int:
    values, dry = parse_cli(argv)
    cmds = commands(describe(values, check=True), resolve=not dry)
    if dry:
        for name, cmd in cmds:
            print(f"{name}: {' '.join(cmd)}")
        return 0
    from occ_ros.dds_profile import use_shipped_profile

    print(f"occ-launch: {use_shipped_profile().message}", file=sys.stderr)  # the children inherit it
    return run(cmds)


if __name__ == "__main__":
    sys.exit(main())
