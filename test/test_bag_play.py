"""occ-bag-play: a player -> subscriber round trip over DDS delivers every message, in order;
the converter's /occupancy/gt_grid arrives as occ_ros_msgs/SemanticOccupancyGrid; a type without
a Python package is skipped."""

import os
import threading
import time

import numpy as np
import pytest

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
    assert play.main([str(bag.parent / "missing_bag")]) == 1
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
