"""occ-bag-play: a player -> subscriber round trip over DDS delivers every message, in order;
the converter's /occupancy/gt_grid arrives as occ_ros_msgs/SemanticOccupancyGrid; a type without
a Python package is skipped."""

import os
import shutil
import threading
import time

import numpy as np
import pytest

from occ_core.errors import OccDataError
from occ_ros.bag.play import BagPlayer, PlayConfig, message_class, rclpy_qos

PREFIX = f"/occ_bag_play_{os.getpid()}"


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """A bag with 40 std_msgs/String on one topic, 10 PointCloud2 on another, and one topic of a
    type that rosbags knows but no Python message package here provides (as tf2_msgs is on a
    wheels-only machine without the project's generated interfaces)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from rosbags.typesys import get_types_from_msg

    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg("int32 value", "occ_test_no_wheel_msgs/msg/Thing"))
    t = store.types
    out = tmp_path_factory.mktemp("play") / "bag"
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        chat = w.add_connection(PREFIX + "/chatter", "std_msgs/msg/String", typestore=store)
        cloud = w.add_connection(PREFIX + "/cloud", "sensor_msgs/msg/PointCloud2", typestore=store)
        other = w.add_connection(PREFIX + "/thing", "occ_test_no_wheel_msgs/msg/Thing", typestore=store)
        t0 = 1_700_000_000_000_000_000
        for i in range(40):
            w.write(chat, t0 + i * 10_000_000, store.serialize_cdr(t["std_msgs/msg/String"](data=f"msg {i}"),
                                                                   "std_msgs/msg/String"))
            if i % 4 == 0:
                hdr = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=i, nanosec=7), frame_id="x")
                msg = t["sensor_msgs/msg/PointCloud2"](header=hdr, height=1, width=i, fields=[], is_bigendian=False,
                                                       point_step=1, row_step=i, data=np.arange(i, dtype=np.uint8),
                                                       is_dense=True)
                w.write(cloud, t0 + i * 10_000_000 + 1, store.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"))
        w.write(other, t0, store.serialize_cdr(t["occ_test_no_wheel_msgs/msg/Thing"](value=3),
                                               "occ_test_no_wheel_msgs/msg/Thing"))
    return out


def play_to_subscriber(config: PlayConfig, subscribe, done, timeout: float = 10.0):
    """Play ``config`` to a node whose subscriptions ``subscribe(node)`` creates, on one executor,
    until ``done()`` or ``timeout`` s after the playback; returns the (closed) player and its stats."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    player = None
    try:
        sub = Node("occ_bag_play_test_sub", context=ctx)
        subscribe(sub)
        player = BagPlayer(config, context=ctx)
        ex.add_node(sub)
        ex.add_node(player.node)
        threading.Thread(target=ex.spin, daemon=True).start()
        stats = player.play()
        end = time.monotonic() + timeout
        while time.monotonic() < end and not done():
            time.sleep(0.02)
    finally:
        ex.shutdown()
        if player is not None:
            player.close()
        rclpy.try_shutdown(context=ctx)
    return player, stats


def test_message_class_and_qos_mapping():
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    from sensor_msgs.msg import PointCloud2

    assert message_class("sensor_msgs/msg/PointCloud2") is PointCloud2
    assert message_class("no_such_pkg/msg/Thing") is None and message_class("bad") is None
    z = QosTime(0, 0)
    q = rclpy_qos([Qos(QosHistory.KEEP_LAST, 1, QosReliability.BEST_EFFORT, QosDurability.TRANSIENT_LOCAL, z, z,
                       QosLiveliness.AUTOMATIC, z, False)])
    assert q.durability == DurabilityPolicy.TRANSIENT_LOCAL and q.reliability == ReliabilityPolicy.BEST_EFFORT and q.depth == 1
    assert rclpy_qos([]).reliability == ReliabilityPolicy.RELIABLE


def test_player_to_subscriber_round_trip_delivers_every_message_in_order(bag):
    from rclpy.qos import QoSProfile
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    got_chat, got_cloud, got_clock = [], [], []

    def subscribe(sub):
        sub.create_subscription(String, PREFIX + "/chatter", lambda m: got_chat.append(m.data), QoSProfile(depth=100))
        sub.create_subscription(PointCloud2, PREFIX + "/cloud", lambda m: got_cloud.append(m), QoSProfile(depth=100))
        sub.create_subscription(Clock, "/clock", lambda m: got_clock.append(m.clock.sec * 10**9 + m.clock.nanosec),
                                QoSProfile(depth=100))

    player, stats = play_to_subscriber(PlayConfig(bag, rate=2.0, wait_for_subscribers=10.0, start_delay=0.3), subscribe,
                                       lambda: len(got_chat) >= 40 and len(got_cloud) >= 10)
    assert set(player.publishers) == {PREFIX + "/chatter", PREFIX + "/cloud"}
    assert "occ_test_no_wheel_msgs" in player.stats.skipped[PREFIX + "/thing"]  # no Python class: skipped
    assert stats.published == {PREFIX + "/chatter": 40, PREFIX + "/cloud": 10}
    assert got_chat == [f"msg {i}" for i in range(40)]
    assert [(c.width, c.header.stamp.sec, c.header.stamp.nanosec) for c in got_cloud] == [(i, i, 7) for i in range(0, 40, 4)]
    np.testing.assert_array_equal(np.asarray(got_cloud[-1].data, np.uint8), np.arange(36, dtype=np.uint8))
    assert got_clock and got_clock == sorted(got_clock) and got_clock[-1] == 1_700_000_000_000_000_000 + 390_000_000
    assert 0.39 / 2.0 * 0.9 <= stats.wall_s  # paced at 2x the recorded 0.39 s


def test_topics_filter_and_cli_errors(bag, capsys):
    import rclpy

    from occ_ros.bag import play

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        p = BagPlayer(PlayConfig(bag, topics=[PREFIX + "/cloud"], start_delay=0.0, clock=False), context=ctx)
        assert set(p.publishers) == {PREFIX + "/cloud"} and p.clock_pub is None
        assert p.play().published == {PREFIX + "/cloud": 10}
        p.close()
    finally:
        rclpy.try_shutdown(context=ctx)
    assert play.main([str(bag.parent / "missing_bag")]) == 2
    assert "missing_bag" in capsys.readouterr().err


def test_player_delivers_the_ground_truth_grid_of_a_converted_bag(synthetic_dataroot, tmp_path):
    """The converter's /occupancy/gt_grid (rosbags CDR) reaches an rclpy subscriber as
    SemanticOccupancyGrid, one per keyframe, with the Occ3D ground-truth labels."""
    from nuscenes.nuscenes import NuScenes
    from occ_ros_msgs.msg import SemanticOccupancyGrid
    from rclpy.qos import QoSProfile

    from occ_core.formats import occ3d
    from occ_ros.bag.nusc2bag import GT_GRID_TOPIC, ConvertConfig, convert
    from occ_ros.conversions.grid_msg import msg_to_grid

    scene = "scene-0002"
    bag = tmp_path / "gt_bag"
    convert(ConvertConfig(synthetic_dataroot, bag, scenes=[scene], keyframes_only=True, progress=False))
    got = []
    player, stats = play_to_subscriber(
        PlayConfig(bag, rate=4.0, topics=[GT_GRID_TOPIC], clock=False, wait_for_subscribers=10.0, start_delay=0.3),
        lambda sub: sub.create_subscription(SemanticOccupancyGrid, GT_GRID_TOPIC, got.append, QoSProfile(depth=10)),
        lambda: len(got) >= 3)
    assert set(player.publishers) == {GT_GRID_TOPIC} and not player.stats.skipped
    assert stats.published == {GT_GRID_TOPIC: 3} and len(got) == 3
    entries = {e.token: e for e in occ3d.list_gt(synthetic_dataroot / "gts") if e.scene == scene}
    nusc = NuScenes("v1.0-mini", str(synthetic_dataroot), verbose=False)
    by_stamp = {nusc.get("sample", t)["timestamp"] * 1000: t for t in entries}
    grids = [msg_to_grid(m) for m in got]
    assert [g.stamp_ns for g in grids] == sorted(by_stamp)
    for g in grids:
        np.testing.assert_array_equal(g.labels, occ3d.read_gt(entries[by_stamp[g.stamp_ns]].path).semantics)
        assert (g.frame_id, g.class_set, g.free_label, g.spec.dims) == ("base_link", "occ3d", 17, (200, 200, 16))


def test_graph_topic_moves_everything_but_tf_below_the_namespace():
    from occ_ros.bag.play import GLOBAL_TOPICS, check_namespace, graph_topic

    assert graph_topic("/LIDAR_TOP", "/robot1") == "/robot1/LIDAR_TOP"
    assert graph_topic("/CAM_FRONT/image_rect/compressed", "/a/b") == "/a/b/CAM_FRONT/image_rect/compressed"
    assert [graph_topic(t, "/robot1") for t in ("/tf", "/tf_static")] == ["/tf", "/tf_static"] == list(GLOBAL_TOPICS)
    assert graph_topic("/tf", "/robot1", keep=()) == "/robot1/tf"
    assert graph_topic("/LIDAR_TOP", "") == graph_topic("/LIDAR_TOP", "/") == "/LIDAR_TOP"
    assert check_namespace("/") == "" and check_namespace("/r1/x") == "/r1/x"
    for bad in ("robot1", "/r 1", "/r1/"):
        with pytest.raises(OccDataError, match=f"--namespace '{bad}': expected a ROS 2 namespace"):
            check_namespace(bad)


def test_a_namespace_moves_the_bag_topics_and_the_player_node(bag, capsys):
    """--namespace: the topics go below it (a subscriber at the recorded name gets nothing), a
    --global-topics one keeps its name, the player's node is in the namespace, and readiness can
    name a node in the namespace."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    from occ_ros.bag import play
    from occ_ros.bag.play import NotReadyError

    ns = f"/occ_ns_{os.getpid()}"
    moved, kept, at_root = [], [], []
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    player = None
    try:
        sub = Node("occupancy_node", namespace=ns, context=ctx)
        sub.create_subscription(PointCloud2, ns + PREFIX + "/cloud", moved.append, QoSProfile(depth=100))
        sub.create_subscription(String, PREFIX + "/chatter", kept.append, QoSProfile(depth=100))
        sub.create_subscription(PointCloud2, PREFIX + "/cloud", at_root.append, QoSProfile(depth=100))
        ex.add_node(sub)
        player = BagPlayer(PlayConfig(bag, rate=4.0, start_delay=0.3, clock=False, namespace=ns,
                                      global_topics=(PREFIX + "/chatter",)), context=ctx)
        ex.add_node(player.node)
        threading.Thread(target=ex.spin, daemon=True).start()
        assert player.node.get_namespace() == ns
        assert set(player.publishers) == {ns + PREFIX + "/cloud", PREFIX + "/chatter"}
        assert player.wait_until_subscribed([ns + PREFIX + "/cloud"], f"{ns}/occupancy_node", 20.0) == [ns + PREFIX + "/cloud"]
        with pytest.raises(NotReadyError, match="of /elsewhere/occupancy_node"):
            player.wait_until_subscribed([ns + PREFIX + "/cloud"], "/elsewhere/occupancy_node", 0.3)
        player.wait_for_subscribers(10.0)
        stats = player.play()
        end = time.monotonic() + 10
        while time.monotonic() < end and (len(moved) < 10 or len(kept) < 40):
            time.sleep(0.02)
    finally:
        ex.shutdown()
        if player is not None:
            player.close()
        rclpy.try_shutdown(context=ctx)
    assert stats.published == {ns + PREFIX + "/cloud": 10, PREFIX + "/chatter": 40}
    assert [c.width for c in moved] == list(range(0, 40, 4)) and len(kept) == 40 and at_root == []
    assert play.main([str(bag), "--namespace", "robot1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--namespace 'robot1': expected a ROS 2 namespace such as /robot1" in err, err


# ---------------------------------------------------------------------------------------------
# long gaps, readiness, reliable publishing, counting the outputs, bad input


def _write_bag(out, t0, stamps_s, best_effort=False):
    """A bag of PointCloud2 on PREFIX/gap_cloud at ``t0 + s`` for each ``s`` of ``stamps_s``
    (header stamp = log time), recorded BEST_EFFORT or RELIABLE."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    t = store.types
    inf = QosTime(sec=2147483647, nsec=4294967295)
    qos = Qos(QosHistory.KEEP_LAST, 10, QosReliability.BEST_EFFORT if best_effort else QosReliability.RELIABLE,
              QosDurability.VOLATILE, inf, inf, QosLiveliness.AUTOMATIC, inf, False)
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection(PREFIX + "/gap_cloud", "sensor_msgs/msg/PointCloud2", typestore=store,
                             offered_qos_profiles=[qos])
        for s in stamps_s:
            ns = t0 + int(round(s * 1e9))
            hdr = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                           frame_id="x")
            msg = t["sensor_msgs/msg/PointCloud2"](header=hdr, height=1, width=0, fields=[], is_bigendian=False,
                                                   point_step=1, row_step=0, data=np.zeros(0, np.uint8), is_dense=True)
            w.write(c, ns, store.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"))
    return out


T0 = 1_700_000_000_000_000_000
SCENE_STAMPS = [0.0, 0.5, 1.0, 3601.0, 3601.5, 3602.0]  # two "scenes" an hour apart, as the synthetic world's


@pytest.fixture(scope="module")
def gap_bag(tmp_path_factory):
    return _write_bag(tmp_path_factory.mktemp("gap") / "bag", T0, SCENE_STAMPS)


def test_long_gaps_are_skipped_with_a_line_and_clock_keeps_the_bag_time(gap_bag, capsys):
    from rclpy.qos import QoSProfile
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import PointCloud2

    got, clock = [], []

    def subscribe(sub):
        sub.create_subscription(PointCloud2, PREFIX + "/gap_cloud", got.append, QoSProfile(depth=100))
        sub.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock.sec * 10**9 + m.clock.nanosec),
                                QoSProfile(depth=100))

    result = {}

    def run():
        result["stats"] = play_to_subscriber(PlayConfig(gap_bag, rate=4.0, wait_for_subscribers=10.0, start_delay=0.3,
                                                        topics=[PREFIX + "/gap_cloud"]),
                                             subscribe, lambda: len(got) >= 6, timeout=5.0)[1]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)  # the old player slept through the hour
    assert not thread.is_alive(), "the player slept through the 3600 s gap"
    stats = result["stats"]
    assert [(t, round(g, 3)) for t, g in stats.gaps_skipped] == [(T0 + 1_000_000_000, 3600.0)]
    assert stats.wall_s < 20  # 2 x 1 s of bag time at x4, not an hour
    assert "skipped a 3600.0 s gap at 1.0 s into the bag" in capsys.readouterr().out
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in got] == [T0 + int(s * 1e9) for s in SCENE_STAMPS]
    assert clock[-1] == T0 + int(3602 * 1e9)  # /clock jumps with the bag
    assert stats.lidar_stamps == []  # not the LiDAR topic


def test_readiness_waits_for_the_named_node_and_reports_a_qos_mismatch(tmp_path):
    """--wait-for/--wait-for-node: ready only once that node's reliable subscription is matched; a
    best-effort recording does not match a reliable subscriber unless --reliable."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from occ_ros.bag.play import NotReadyError

    bag = _write_bag(tmp_path / "be_bag", T0, [0.0, 0.1], best_effort=True)
    topic = PREFIX + "/gap_cloud"
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    try:
        player = BagPlayer(PlayConfig(bag, start_delay=0.0, clock=False), context=ctx)
        with pytest.raises(NotReadyError, match=f"no subscription of fake_node on {topic}"):
            player.wait_until_subscribed([topic], "fake_node", 0.5)  # nobody there yet
        sub_node = Node("fake_node", context=ctx)
        sub_node.create_subscription(PointCloud2, topic, lambda m: None, QoSProfile(depth=10))  # reliable
        ex.add_node(sub_node)
        with pytest.raises(NotReadyError, match=r"RELIABLE but the bag offers BEST_EFFORT \(use --reliable\)"):
            player.wait_until_subscribed([topic], "fake_node", 3.0)
        player.close()
        player = BagPlayer(PlayConfig(bag, start_delay=0.0, clock=False, reliable=True), context=ctx)
        assert player.publishers[topic].qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert player.wait_until_subscribed([topic, "/not/in/bag"], "fake_node", 20.0) == [topic]
        with pytest.raises(NotReadyError, match="of other_node"):
            player.wait_until_subscribed([topic], "other_node", 0.5)
        player.close()
    finally:
        ex.shutdown()
        rclpy.try_shutdown(context=ctx)


def test_playback_to_a_node_counts_the_predicted_lidar_frames(gap_bag):
    """run_playback (what occ-launch bag:= runs): waits for the node, plays, and counts an output per
    LiDAR frame; a node that answers only some frames is counted as such once it goes quiet."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import PointCloud2

    from occ_ros.bag.play import run_playback

    topic, out = PREFIX + "/gap_cloud", PREFIX + "/gap_out"
    for answer_every, expected in ((1, 6), (2, 3)):
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        ex = SingleThreadedExecutor(context=ctx)
        try:
            node = Node("echo_node", context=ctx)
            pub = node.create_publisher(PointCloud2, out, QoSProfile(depth=10))
            seen = []

            def echo(msg, pub=pub, seen=seen, every=answer_every):
                seen.append(msg)
                if len(seen) % every == 1 % every:
                    time.sleep(0.2)  # a model at work
                    pub.publish(msg)

            node.create_subscription(PointCloud2, topic, echo, QoSProfile(depth=10))
            ex.add_node(node)
            threading.Thread(target=ex.spin, daemon=True).start()
            res = run_playback(PlayConfig(gap_bag, rate=4.0, wait_for=[topic], wait_for_node="echo_node",
                                          wait_timeout=20.0, expect_outputs=out, lidar_topic=topic, drain_idle=2.0,
                                          reliable=True), context=ctx)
        finally:
            ex.shutdown()
            rclpy.try_shutdown(context=ctx)
        assert (res.played, res.predicted) == (6, expected)
        assert res.stats.lidar_stamps == [T0 + int(s * 1e9) for s in SCENE_STAMPS]


def _truncated(bag, tmp_path):
    dst = tmp_path / "truncated"
    shutil.copytree(bag, dst)
    (mcap,) = dst.glob("*.mcap")
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    return dst


@pytest.mark.parametrize("case", ["missing", "text file", "folder", "truncated", "truncated file"])
def test_a_path_that_is_no_bag_exits_2_with_one_line(case, bag, tmp_path, capsys):
    from occ_ros.bag import play

    path = {"missing": lambda: tmp_path / "missing_bag",
            "text file": lambda: (tmp_path / "notes.txt", (tmp_path / "notes.txt").write_text("hello"))[0],
            "folder": lambda: (tmp_path / "empty", (tmp_path / "empty").mkdir())[0],
            "truncated": lambda: _truncated(bag, tmp_path),
            "truncated file": lambda: next(_truncated(bag, tmp_path).glob("*.mcap"))}[case]()
    assert play.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"occ-bag-play: bag: {path}"), err


@pytest.mark.parametrize("args", [["--rate", "0"], ["--rate", "x"], ["--max-gap", "-1"], ["--wait-timeout", "0"]])
def test_bad_numbers_exit_2(args, bag, capsys):
    from occ_ros.bag import play

    with pytest.raises(SystemExit) as e:
        play.main([str(bag), *args])
    assert e.value.code == 2 and args[0] in capsys.readouterr().err


def test_a_missing_bag_from_the_command_line_is_one_line_without_traceback(tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "occ_ros.bag.play", str(tmp_path / "nope")], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "nope" in p.stderr, p.stderr
