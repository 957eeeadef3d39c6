"""One launch description, two consumers: the runner's command lines, the launch file, the RViz config."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from occ_ros.launch_description import (ARGUMENTS, LaunchArgumentError, LaunchPlan, commands, describe, main,
                                        node_command, node_topics, param_value_text, run, rviz_topics)
from occ_ros.params import DEFAULT_PARAMS_FILE, PARAMETERS_BY_NAME

REPO = Path(__file__).resolve().parent.parent


def test_default_plan_is_the_node_with_the_shipped_params_file():
    plan = describe()
    assert [n.executable for n in plan.nodes] == ["occupancy_node"] and plan.processes == ()
    node = plan.nodes[0]
    assert node.params_files == (str(DEFAULT_PARAMS_FILE),)
    assert dict(node.parameters) == {"model_config": str(REPO / "config/models/fusion.yaml"),
                                     "checkpoint": str(REPO / "config/models/fusion_demo.pt"), "use_sim_time": False}
    assert node.remappings == () and node.namespace == "" and node.arguments == ()  # the params file's topics
    # the launch defaults agree with the node's parameter defaults
    assert ARGUMENTS[0].default == PARAMETERS_BY_NAME["model_config"].default
    assert ARGUMENTS[1].default == PARAMETERS_BY_NAME["checkpoint"].default


def test_arguments_change_the_plan_and_bad_ones_are_rejected(tmp_path):
    ckpt = tmp_path / "m.pt"
    plan = describe({"rviz": "true", "bag": "/data/bag1", "use_sim_time": "true", "checkpoint": str(ckpt),
                     "output_ns": "/occ2"})
    node, rviz = plan.nodes
    assert dict(node.parameters)["checkpoint"] == str(ckpt) and dict(node.parameters)["use_sim_time"] is True
    assert dict(node.remappings) == {"occupancy/voxels": "/occ2/voxels", "occupancy/markers": "/occ2/markers",
                                     "occupancy/grid": "/occ2/grid", "occupancy/map": "/occ2/map",
                                     "occupancy/map_cloud": "/occ2/map_cloud",
                                     "occupancy/costmap": "/occ2/costmap"}  # every output under output_ns
    assert rviz.executable == "rviz2" and rviz.arguments[0] == "-d"
    shown = rviz_topics(yaml.safe_load(Path(rviz.arguments[1]).read_text()))
    assert shown["Occupancy voxels (class colour)"] == "/occ2/voxels"
    assert shown["Semantic map (odom)"] == "/occ2/map_cloud" and shown["Costmap (odom)"] == "/occ2/costmap"
    player = plan.processes[0]
    assert player.cmd[:2] == ("occ-bag-play", "/data/bag1") and player.ends_launch
    (name, argv), = commands(LaunchPlan((), plan.processes))  # resolved to this environment's console script
    assert name == "bag_player" and argv[1:] == list(player.cmd[1:]) and Path(argv[0]).name == "occ-bag-play"
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
    assert "-r occupancy/markers:=/x/markers" in node_line and "-r occupancy/grid:=/x/grid" in node_line
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
        from occ_ros.params import declare_and_read

        # (declared as the node declares them: rcl reads the params file's empty list as 'not set',
        # which automatically_declare_parameters_from_overrides cannot declare)
        node = rclpy.create_node("renamed_by_args", context=ctx)
        declare_and_read(node)
        assert node.get_name() == "occupancy_node"  # -r __node:=...
        for name, value in spec.parameters:
            assert node.get_parameter(name).value == value, name
        assert node.get_parameter("sync_slop").value == PARAMETERS_BY_NAME["sync_slop"].default  # from the YAML
        assert node.resolve_topic_name(node.get_parameter("markers_topic").value) == "/occupancy/markers"
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


def _displays_by_topic(doc) -> dict[str, str]:
    return {d["Topic"]["Value"]: d["Class"].split("/")[1] for d in doc["Visualization Manager"]["Displays"] if "Topic" in d}


def _expected_displays(topics) -> dict[str, str]:
    """What RViz must show of the node: its inputs (LiDAR, the camera images) and outputs (markers, voxels,
    the map's voxels and the costmap)."""
    return {topics.markers: "MarkerArray", topics.voxels: "PointCloud2", topics.lidar: "PointCloud2",
            topics.map_cloud: "PointCloud2", topics.costmap: "Map", **{img: "Image" for _, img in topics.images}}


def test_rviz_config_topics_are_the_nodes_topics():
    """The shipped config, parsed: its topics are the node's default output and input topics (as
    the node resolves them with the shipped params file), in base_link; the voxels in class colours."""
    doc = yaml.safe_load((REPO / "config" / "occupancy.rviz").read_text())
    vm = doc["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == PARAMETERS_BY_NAME["base_frame"].default
    topics = node_topics(str(DEFAULT_PARAMS_FILE))
    assert topics.images[0] == ("CAM_FRONT", "/CAM_FRONT/image_rect/compressed")  # image_transport: <base>/compressed
    assert _displays_by_topic(doc) == _expected_displays(topics)
    vox = next(d for d in vm["Displays"] if d.get("Topic", {}).get("Value") == topics.voxels)
    assert vox["Color Transformer"] == "RGB8"  # the rgb field: the class palette
    assert {"Grid", "TF"} <= {d["Class"].split("/")[1] for d in vm["Displays"]}
    # the launch hands RViz the shipped file when nothing moves the topics
    assert describe({"rviz": "true"}).nodes[1].arguments == ("-d", str(REPO / "config/occupancy.rviz"))


def test_namespace_moves_every_topic_and_rviz_follows(tmp_path):
    args = {"rviz": "true", "namespace": "/robot1", "output_ns": "perception", "managed": "true"}
    node, rviz = describe(args).nodes
    assert node.namespace == "/robot1" and node.arguments == ("--managed",)
    cmd = node_command(node)
    assert cmd[:2] == ["occupancy_node", "--managed"] and "__ns:=/robot1" in cmd
    topics = node_topics(str(DEFAULT_PARAMS_FILE), dict(node.remappings), namespace="/robot1")
    assert topics.lidar == "/robot1/LIDAR_TOP" and topics.images[1][1] == "/robot1/CAM_FRONT_RIGHT/image_rect/compressed"
    assert (topics.markers, topics.voxels, topics.grid) == (
        "/robot1/perception/markers", "/robot1/perception/voxels", "/robot1/perception/grid")
    assert (topics.map, topics.costmap) == ("/robot1/perception/map", "/robot1/perception/costmap")
    doc = yaml.safe_load(Path(rviz.arguments[1]).read_text())
    assert _displays_by_topic(doc) == _expected_displays(topics)
    # rcl resolves the node's own names the same way
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(args=cmd, context=ctx)
    try:
        from occ_ros.params import declare_and_read

        n = rclpy.create_node("x", context=ctx)
        cfg = declare_and_read(n)
        assert n.get_namespace() == "/robot1"
        assert n.resolve_topic_name(cfg.voxels_topic) == topics.voxels
        assert n.resolve_topic_name(cfg.grid_topic) == topics.grid
        assert n.resolve_topic_name(cfg.costmap_topic) == topics.costmap
        assert n.resolve_topic_name(cfg.image_topic("CAM_BACK")) == dict(topics.images)["CAM_BACK"]
        assert n.resolve_topic_name(cfg.diagnostics_topic) == "/diagnostics"
        n.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_old_image_topic_names_stay_usable(tmp_path):
    plan = describe({"image_topic": "/{camera}/image_rect_compressed", "rviz": "true"})
    assert dict(plan.nodes[0].parameters)["compressed_image_topic"] == "/{camera}/image_rect_compressed"
    doc = yaml.safe_load(Path(plan.nodes[1].arguments[1]).read_text())
    assert "/CAM_BACK/image_rect_compressed" in _displays_by_topic(doc)
    with pytest.raises(LaunchArgumentError, match="image_topic"):
        describe({"image_topic": "/camera/image"})


def test_foxglove_layout_shows_the_nodes_topics():
    import json

    layout = json.loads((REPO / "config" / "occupancy.foxglove.json").read_text())
    cfg = layout["configById"]
    topics = node_topics(str(DEFAULT_PARAMS_FILE))
    three_d = next(v for k, v in cfg.items() if k.startswith("3D!"))
    assert three_d["followTf"] == PARAMETERS_BY_NAME["base_frame"].default
    assert set(three_d["topics"]) == {topics.markers, topics.voxels, topics.lidar, topics.map_cloud, topics.costmap}
    assert three_d["topics"][topics.voxels]["colorField"] == "rgb"
    images = {v["imageMode"]["imageTopic"]: v["imageMode"]["calibrationTopic"] for k, v in cfg.items()
              if k.startswith("Image!")}
    assert images == dict(zip((img for _, img in topics.images), topics.camera_info))

    def leaves(node):
        return [node] if isinstance(node, str) else leaves(node["first"]) + leaves(node["second"])

    assert sorted(leaves(layout["layout"])) == sorted(cfg)  # every panel placed, none missing


def _opts(cmd, flag):
    """The values after ``flag`` in an argv, up to the next ``--`` option."""
    i = cmd.index(flag) + 1
    out = []
    while i < len(cmd) and not cmd[i].startswith("--"):
        out.append(cmd[i])
        i += 1
    return out


def test_a_bag_gets_reliable_inputs_sim_time_a_deep_queue_and_a_player_that_waits_for_the_node():
    plan = describe({"bag": "/data/bag1", "rate": "0.5", "loop": "true", "output_ns": "/occ2"})
    params = dict(plan.nodes[0].parameters)
    assert params["input_qos"] == "reliable" and params["use_sim_time"] is True and params["worker_queue_size"] == 32
    cmd = list(plan.processes[0].cmd)
    assert _opts(cmd, "--rate") == ["0.5"] and "--loop" in cmd and "--reliable" in cmd
    cams = PARAMETERS_BY_NAME["camera_names"].default
    assert _opts(cmd, "--wait-for") == ["/LIDAR_TOP", *(t for c in cams for t in (f"/{c}/image_rect/compressed",
                                                                                   f"/{c}/camera_info"))]
    assert _opts(cmd, "--wait-for-node") == ["occupancy_node"]
    assert _opts(cmd, "--preroll") == [f"/{c}/camera_info" for c in cams]
    assert _opts(cmd, "--expect-outputs") == ["/occ2/voxels"] and _opts(cmd, "--lidar-topic") == ["/LIDAR_TOP"]
    # what the user sets wins; without a bag, auto leaves the params file's values alone
    params = dict(describe({"bag": "/b", "input_qos": "sensor_data", "use_sim_time": "false",
                            "worker_queue_size": "4"}).nodes[0].parameters)
    assert (params["input_qos"], params["use_sim_time"], params["worker_queue_size"]) == ("sensor_data", False, 4)
    params = dict(describe({"input_qos": "reliable"}).nodes[0].parameters)
    assert params["input_qos"] == "reliable" and "worker_queue_size" not in params and params["use_sim_time"] is False
    assert "--loop" not in describe({"bag": "/b"}).processes[0].cmd


def test_the_player_waits_for_the_topics_of_the_params_file(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"occupancy_node": {"ros__parameters": {
        "camera_names": ["CAM_A"], "lidar_topic": "/lidar", "compressed_image_topic": "/{camera}/jpeg",
        "camera_info_topic": "/{camera}/info", "voxels_topic": "/out/voxels", "use_sim_time": False}}}))
    cmd = list(describe({"bag": "/b", "params_file": str(params)}).processes[0].cmd)
    assert _opts(cmd, "--wait-for") == ["/lidar", "/CAM_A/jpeg", "/CAM_A/info"]
    assert _opts(cmd, "--preroll") == ["/CAM_A/info"] and _opts(cmd, "--expect-outputs") == ["/out/voxels"]


def test_a_namespace_with_a_bag_moves_the_player_topics_with_the_node(tmp_path):
    """namespace:= + bag:=: the player publishes each input the node subscribes (the bag's root
    names below the namespace), waits for the node in the namespace, and keeps /tf, /tf_static and
    the inputs the params file names absolutely at their recorded names."""
    from occ_ros.bag.play import graph_topic

    plan = describe({"bag": "/data/bag1", "namespace": "/robot1"})
    node, = plan.nodes
    cmd = list(plan.processes[0].cmd)
    assert node.namespace == "/robot1" and _opts(cmd, "--namespace") == ["/robot1"]
    assert _opts(cmd, "--global-topics") == ["/tf", "/tf_static"]
    assert _opts(cmd, "--wait-for-node") == ["/robot1/occupancy_node"]
    assert _opts(cmd, "--expect-outputs") == ["/robot1/occupancy/voxels"]
    assert _opts(cmd, "--lidar-topic") == ["/robot1/LIDAR_TOP"]
    in_ns = node_topics(str(DEFAULT_PARAMS_FILE), namespace="/robot1")
    at_root = node_topics(str(DEFAULT_PARAMS_FILE))  # the bag's names (a bag of occ-nusc2bag)
    assert _opts(cmd, "--wait-for") == list(in_ns.inputs)
    assert [graph_topic(t, "/robot1", _opts(cmd, "--global-topics")) for t in at_root.inputs] == list(in_ns.inputs)
    # an absolute input of the params file is not moved by the namespace: the player keeps it too
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"occupancy_node": {"ros__parameters": {
        "camera_names": ["CAM_A"], "lidar_topic": "/lidar", "odom_topic": "/odom", "use_sim_time": False}}}))
    cmd = list(describe({"bag": "/b", "namespace": "/r2", "params_file": str(params)}).processes[0].cmd)
    assert _opts(cmd, "--global-topics") == ["/tf", "/tf_static", "/lidar", "/odom"]
    assert _opts(cmd, "--wait-for") == ["/lidar", "/r2/CAM_A/image_rect/compressed", "/r2/CAM_A/camera_info"]
    # a bag of an older converter: its image topics, relative so that both move below the namespace
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    old = tmp_path / "old_bag"
    with Writer(old, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        w.add_connection("/CAM_FRONT/image_rect_compressed", "sensor_msgs/msg/CompressedImage",
                         typestore=get_typestore(Stores.ROS2_JAZZY))
    plan = describe({"bag": str(old), "namespace": "/r3"})
    assert dict(plan.nodes[0].parameters)["compressed_image_topic"] == "{camera}/image_rect_compressed"
    assert "/r3/CAM_FRONT/image_rect_compressed" in _opts(list(plan.processes[0].cmd), "--wait-for")
    assert dict(describe({"bag": str(old)}).nodes[0].parameters)["compressed_image_topic"] == \
        "/{camera}/image_rect_compressed"


@pytest.mark.parametrize("args, field", [
    (["modle:=x"], "unknown launch argument"),
    (["rviz:=maybe"], "rviz:='maybe'"),
    (["rate:=0"], "rate:='0'"),
    (["rate:=fast"], "rate:='fast'"),
    (["loop:=yes"], "loop:='yes'"),
    (["input_qos:=fast"], "input_qos:='fast'"),
    (["worker_queue_size:=0"], "worker_queue_size:='0'"),
    (["params_file:=/no/such/params.yaml"], "params_file:=/no/such/params.yaml"),
    (["model:=/no/such/model.yaml"], "model:=/no/such/model.yaml"),
    (["checkpoint:=/no/such/model.pt"], "checkpoint:=/no/such/model.pt"),
    (["bag:=/no/such/bag"], "bag:=/no/such/bag"),
    (["params_file:=BAD"], "params_file:="),
    (["output_ns:=bad ns"], "output_ns:='bad ns'"),
    (["namespace:=robot1"], "namespace:='robot1'"),
    (["managed:=yes"], "managed:='yes'"),
    (["stray"], "'stray'"),
])
def test_bad_launch_arguments_exit_2_with_one_line(args, field, capsys, tmp_path):
    if args == ["params_file:=BAD"]:
        bad = tmp_path / "bad.yaml"
        bad.write_text("occupancy_node: {ros__parameters: {lidar_topic: 'no topic'}}\n")
        args = [f"params_file:={bad}", "bag:=" + str(tmp_path)]
    for dry in ([], ["--dry-run"]):
        assert main([*dry, *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("occ-launch: ") and field in err, err


def test_bad_launch_argument_from_the_command_line_is_one_line_without_traceback():
    p = subprocess.run([sys.executable, "-m", "occ_ros.launch_description", "params_file:=/no/such.yaml"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "params_file:=/no/such.yaml" in p.stderr, p.stderr
