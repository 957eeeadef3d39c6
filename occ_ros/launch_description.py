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
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from occ_ros.params import NODE_NAME, PACKAGE, package_share


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
    LaunchArgument("use_sim_time", "false", "Use /clock time (set true when playing a bag).", ("true", "false")),
    LaunchArgument("bag", "", "A rosbag2 folder to play with occ-bag-play (publishes /clock, recorded QoS); "
                              "empty = live sensors."),
    LaunchArgument("rviz", "false", "Start RViz2 with config/occupancy.rviz.", ("true", "false")),
    LaunchArgument("params_file", "config/occupancy.yaml", "occupancy_node parameters (ROS 2 params file)."),
    LaunchArgument("output_ns", "/occupancy", "Namespace of the outputs: <output_ns>/markers, <output_ns>/voxels."),
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
    params_files: tuple[str, ...] = ()
    parameters: tuple[tuple[str, Any], ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProcessSpec:
    """A plain process to start (``cmd`` = argv)."""

    name: str
    cmd: tuple[str, ...]


@dataclass(frozen=True)
class LaunchPlan:
    """Everything one launch starts."""

    nodes: tuple[NodeSpec, ...]
    processes: tuple[ProcessSpec, ...]


class LaunchArgumentError(ValueError):
    """An unknown launch argument or a value outside its choices."""


def resolve_arguments(values: Mapping[str, str]) -> dict[str, str]:
    """All launch arguments: ``values`` over the defaults, checked against names and choices."""
    unknown = sorted(set(values) - set(ARGUMENTS_BY_NAME))
    if unknown:
        raise LaunchArgumentError(f"unknown launch argument(s) {unknown}; known: {sorted(ARGUMENTS_BY_NAME)}")
    out = {a.name: str(values.get(a.name, a.default)) for a in ARGUMENTS}
    for a in ARGUMENTS:
        if a.choices is not None and out[a.name] not in a.choices:
            raise LaunchArgumentError(f"launch argument {a.name}:={out[a.name]!r}: expected one of {list(a.choices)}")
    ns = out["output_ns"].rstrip("/")
    if not ns.startswith("/"):
        raise LaunchArgumentError(f"launch argument output_ns:={out['output_ns']!r}: expected an absolute namespace")
    return out


def _share_path(path: str) -> str:
    p = Path(path).expanduser()
    return str(p.resolve() if p.is_absolute() or p.exists() else package_share() / p)


def describe(values: Mapping[str, str] | None = None) -> LaunchPlan:
    """The nodes and processes of ``occupancy.launch.py`` for the given launch arguments."""
    a = resolve_arguments(values or {})
    sim = a["use_sim_time"] == "true"
    ns = a["output_ns"].rstrip("/")
    node = NodeSpec(
        package=PACKAGE, executable="occupancy_node", name=NODE_NAME,
        params_files=(_share_path(a["params_file"]),),
        parameters=(("model_config", _share_path(a["model"])),
                    ("checkpoint", _share_path(a["checkpoint"]) if a["checkpoint"] else ""),
                    ("use_sim_time", sim)),
        remappings=(("/occupancy/markers", ns + "/markers"), ("/occupancy/voxels", ns + "/voxels")),
    )
    nodes = [node]
    if a["rviz"] == "true":
        nodes.append(NodeSpec(package="rviz2", executable="rviz2", name="rviz2",
                              parameters=(("use_sim_time", sim),),
                              arguments=("-d", _share_path("config/occupancy.rviz"))))
    processes = []
    if a["bag"]:
        # our own player: ros2 bag play is not part of the rclpy wheels; occ-bag-play publishes /clock too
        processes.append(ProcessSpec("bag_player", ("occ-bag-play", a["bag"])))
    return LaunchPlan(tuple(nodes), tuple(processes))


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
            raise LaunchArgumentError(f"expected name:=value or --dry-run, got {arg!r}")
    return values, dry


USAGE = "usage: occ-launch [--dry-run] [name:=value ...]\n\nlaunch arguments:\n" + "\n".join(
    f"  {a.name}:=<{'|'.join(a.choices) if a.choices else 'value'}>  {a.description} (default: {a.default!r})"
    for a in ARGUMENTS)


def main(argv: Sequence[str] | None = None) -> int:
    """``occ-launch``: start what ``occupancy.launch.py`` starts, without ``ros2 launch``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        values, dry = parse_cli(argv)
        cmds = commands(describe(values), resolve=not dry)
    except (LaunchArgumentError, FileNotFoundError) as e:
        print(f"occ-launch: {e}\n\n{USAGE}", file=sys.stderr)
        return 2
    if dry:
        for name, cmd in cmds:
            print(f"{name}: {' '.join(cmd)}")
        return 0
    return run(cmds)


if __name__ == "__main__":
    sys.exit(main())
