"""One launch description, two consumers: the runner's command lines, the launch file, the RViz config."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from occ_ros.launch_description import (ARGUMENTS, LaunchArgumentError, LaunchPlan, commands, describe, main,
                                        node_command, param_value_text, run)
from occ_ros.params import DEFAULT_PARAMS_FILE, NUSCENES_CAMERAS, PARAMETERS_BY_NAME

REPO = Path(__file__).resolve().parent.parent


def test_default_plan_is_the_node_with_the_shipped_params_file():
    plan = describe()
    assert [n.executable for n in plan.nodes] == ["occupancy_node"] and plan.processes == ()
    node = plan.nodes[0]
    assert node.params_files == (str(DEFAULT_PARAMS_FILE),)
    assert dict(node.parameters) == {"model_config": str(REPO / "config/models/fusion.yaml"),
                                     "checkpoint": str(REPO / "config/models/fusion_demo.pt"), "use_sim_time": False}
    assert dict(node.remappings) == {"/occupancy/markers": "/occupancy/markers", "/occupancy/voxels": "/occupancy/voxels"}
    # the launch defaults agree with the node's parameter defaults
    assert ARGUMENTS[0].default == PARAMETERS_BY_NAME["model_config"].default
    assert ARGUMENTS[1].default == PARAMETERS_BY_NAME["checkpoint"].default


def test_arguments_change_the_plan_and_bad_ones_are_rejected(tmp_path):
    ckpt = tmp_path / "m.pt"
    plan = describe({"rviz": "true", "bag": "/data/bag1", "use_sim_time": "true", "checkpoint": str(ckpt),
                     "output_ns": "/occ2"})
    node, rviz = plan.nodes
    assert dict(node.parameters)["checkpoint"] == str(ckpt) and dict(node.parameters)["use_sim_time"] is True
    assert dict(node.remappings)["/occupancy/voxels"] == "/occ2/voxels"
    assert rviz.executable == "rviz2" and rviz.arguments == ("-d", str(REPO / "config/occupancy.rviz"))
    assert plan.processes[0].cmd == ("occ-bag-play", "/data/bag1")
    (name, argv), = commands(LaunchPlan((), plan.processes))  # resolved to this environment's console script
    assert name == "bag_player" and argv[1:] == ["/data/bag1"] and Path(argv[0]).name == "occ-bag-play"
    with pytest.raises(LaunchArgumentError, match="unknown launch argument"):
        describe({"modle": "x"})
    with pytest.raises(LaunchArgumentError, match=r"rviz:='yes'.*\['true', 'false'\]"):
        describe({"rviz": "yes"})


def test_runner_dry_run_prints_the_description_commands(capsys):
    args = {"rviz": "true", "model": "config/models/lidar.yaml", "output_ns": "/x"}
    assert main(["--dry-run", *(f"{k}:={v}" for k, v in args.items())]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    expected = [f"{name}: {' '.join(cmd)}" for name, cmd in commands(describe(args), resolve=False)]
    assert printed == expected
    node_line = printed[0]
    assert f"--params-file {DEFAULT_PARAMS_FILE}" in node_line
    assert "-r /occupancy/markers:=/x/markers" in node_line
    assert f"-p model_config:={REPO / 'config/models/lidar.yaml'}" in node_line
    assert f"-p checkpoint:={REPO / 'config/models/fusion_demo.pt'} -p use_sim_time:=false" in node_line
    assert main(["rviz:=maybe"]) == 2


def test_param_values_round_trip_through_ros_argument_parsing():
    """rclpy parses the runner's --ros-args exactly into the described parameters."""
    import rclpy

    spec = describe({"checkpoint": "", "use_sim_time": "true"}).nodes[0]
    assert param_value_text(0.25) == "0.25" and param_value_text("") == "''" and param_value_text(True) == "true"
    argv = node_command(spec)
    ctx = rclpy.Context()
    rclpy.init(args=argv, context=ctx)
    try:
        node = rclpy.create_node("renamed_by_args", context=ctx, automatically_declare_parameters_from_overrides=True)
        assert node.get_name() == "occupancy_node"  # -r __node:=...
        for name, value in spec.parameters:
            assert node.get_parameter(name).value == value, name
        assert node.get_parameter("sync_slop").value == PARAMETERS_BY_NAME["sync_slop"].default  # from the YAML
        assert node.resolve_topic_name("/occupancy/markers") == "/occupancy/markers"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_runner_stops_the_others_when_one_exits_and_returns_its_code():
    py = sys.executable
    t0 = time.monotonic()
    code = run([("quits", [py, "-c", "import sys, time; time.sleep(0.3); sys.exit(3)"]),
                ("sleeps", [py, "-c", "import time; time.sleep(60)"])], stop_timeout=5)
    assert code == 3
    assert time.monotonic() - t0 < 20  # the sleeper was interrupted, not waited for


def test_runner_forwards_sigint_and_exits_cleanly(tmp_path):
    import signal

    marker = tmp_path / "got_sigint"
    child = (f"import signal, sys, time, pathlib\n"
             f"def h(*a):\n    pathlib.Path({str(marker)!r}).write_text('x'); sys.exit(0)\n"
             f"signal.signal(signal.SIGINT, h)\nprint('ready', flush=True)\ntime.sleep(60)\n")
    runner = (f"import sys; from occ_ros.launch_description import run\n"
              f"sys.exit(run([('child', [sys.executable, '-c', {child!r}])]))\n")
    p = subprocess.Popen([sys.executable, "-c", runner], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        p.send_signal(signal.SIGINT)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
    assert marker.read_text() == "x"


def test_launch_file_builds_the_same_nodes():
    pytest.importorskip("launch_ros", reason="launch/launch_ros are not installed (no ROS 2 install; PyPI wheels only)")
    import importlib.util

    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    spec = importlib.util.spec_from_file_location("occupancy_launch", REPO / "launch" / "occupancy.launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    declared = [e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)]
    assert declared == [a.name for a in ARGUMENTS]
    ctx = LaunchContext()
    ctx.launch_configurations.update({a.name: a.default for a in ARGUMENTS} | {"rviz": "true"})
    opaque = [e for e in ld.entities if isinstance(e, OpaqueFunction)][0]
    actions = opaque.execute(ctx)
    assert [a.node_executable for a in actions] == [n.executable for n in describe({"rviz": "true"}).nodes]


def test_rviz_config_shows_the_default_topics_in_base_link():
    doc = yaml.safe_load((REPO / "config" / "occupancy.rviz").read_text())
    vm = doc["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == PARAMETERS_BY_NAME["base_frame"].default
    by_class: dict[str, list] = {}
    for d in vm["Displays"]:
        by_class.setdefault(d["Class"].split("/")[1], []).append(d)
    topics = {d["Topic"]["Value"]: d for ds in by_class.values() for d in ds if "Topic" in d}
    assert topics[PARAMETERS_BY_NAME["markers_topic"].default]["Class"] == "rviz_default_plugins/MarkerArray"
    vox = topics[PARAMETERS_BY_NAME["voxels_topic"].default]
    assert vox["Class"] == "rviz_default_plugins/PointCloud2" and vox["Channel Name"] == "label"
    assert topics[PARAMETERS_BY_NAME["lidar_topic"].default]["Class"] == "rviz_default_plugins/PointCloud2"
    pattern = PARAMETERS_BY_NAME["compressed_image_topic"].default
    for cam in NUSCENES_CAMERAS:
        assert topics[pattern.format(camera=cam)]["Class"] == "rviz_default_plugins/Image"
    assert {"Grid", "TF"} <= set(by_class)
