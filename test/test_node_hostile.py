"""occupancy_node against hostile and lossy input over real DDS (issue 12).

Decompression bombs, corrupt JPEGs, non-finite CameraInfo, empty and all-NaN clouds, duplicate
and backward stamps and truncated CDR are each counted and dropped while the node stays alive,
its memory flat, and the next good frame is answered; a controlled loss (every third cloud
dropped at the publisher) shows up exactly on /diagnostics.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from test_node_dds import keyframe, spinning_node, topic_overrides  # noqa: E402,F401 - keyframe is a fixture
from test_node_support import (CAMERAS, PointHeightTestPredictor, camera_info_msg, image_msg, jpeg_bomb,  # noqa: E402
                               lidar_msg, png_bomb, truncated_jpeg, wait_for)

PREFIX = "/t_node_hostile"
S = 10**9


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture(scope="module")
def harness(keyframe):  # noqa: F811
    with spinning_node(PREFIX, keyframe, PointHeightTestPredictor(), topic_overrides(PREFIX, keyframe.rig_file)) \
            as (node, peer):
        wait_for(lambda: peer.connected() and node.voxels_pub.get_subscription_count() > 0, what="discovery")
        peer.send(keyframe.stamp_ns)  # a first good frame: CameraInfo known, everything warmed up
        wait_for(lambda: peer.voxels, what="first frame")
        yield node, peer


def answered(peer, n_before: int, stamp_ns: int) -> bool:
    return len(peer.voxels) > n_before and any(
        v.header.stamp.sec * S + v.header.stamp.nanosec == stamp_ns for v in peer.voxels[n_before:])


def test_image_bombs_are_counted_memory_stays_flat_and_the_next_frame_is_answered(harness, keyframe):
    node, peer = harness
    t = keyframe.stamp_ns + 100 * S
    before = node.counters.malformed_image
    rss0 = rss_mb()
    bombs = [("png", png_bomb()), ("jpeg", jpeg_bomb()), ("jpeg", truncated_jpeg(keyframe.jpeg["CAM_FRONT"]))]
    sent = 0
    for k in range(10):
        for fmt, data in bombs:
            for cam in CAMERAS:
                msg = image_msg(keyframe, cam, t + (k * len(bombs) + sent % len(bombs)) * 10**6, fmt=fmt)
                msg.data = data
                peer.img[cam].publish(msg)
            sent += 1
        wait_for(lambda: node.counters.malformed_image == before + sent * len(CAMERAS), timeout=30,
                 what=f"{sent * len(CAMERAS)} bombs counted")
    growth = rss_mb() - rss0
    assert growth < 50.0, f"RSS grew by {growth:.1f} MB"
    n = len(peer.voxels)
    t_good = t + 10 * S
    peer.send(t_good)
    wait_for(lambda: answered(peer, n, t_good), what="the next good frame answered")
    counts = node.input_counts()
    assert all(counts[c].malformed == 30 for c in CAMERAS)


def test_bad_camera_info_clouds_and_stamps_are_counted_and_dropped(harness, keyframe):
    node, peer = harness
    t = keyframe.stamp_ns + 200 * S
    c0 = vars(node.counters).copy()

    info = camera_info_msg(keyframe, "CAM_FRONT", t)
    info.k[2] = float("nan")  # NaN cx
    peer.info["CAM_FRONT"].publish(info)
    info = camera_info_msg(keyframe, "CAM_BACK", t)
    info.k[0] = float("inf")  # infinite fx
    peer.info["CAM_BACK"].publish(info)
    wait_for(lambda: node.counters.malformed_camera_info == c0["malformed_camera_info"] + 2, what="bad CameraInfo")

    empty = lidar_msg(keyframe, t)
    empty.width, empty.row_step, empty.data = 0, 0, b""
    peer.lidar.publish(empty)
    nan = lidar_msg(keyframe, t + S // 10)
    nan.data = np.full(len(nan.data) // 4, np.nan, np.float32).tobytes()
    peer.lidar.publish(nan)
    wait_for(lambda: node.counters.malformed_lidar == c0["malformed_lidar"] + 2, what="empty and all-NaN clouds")

    # a good frame, then the same stamp again and an older one: both dropped as out of order
    n = len(peer.voxels)
    t_good = t + 2 * S // 10
    peer.send(t_good, infos=False)
    wait_for(lambda: answered(peer, n, t_good), what="good frame")
    peer.lidar.publish(lidar_msg(keyframe, t_good))
    peer.lidar.publish(lidar_msg(keyframe, t_good - S // 20))
    wait_for(lambda: node.counters.out_of_order == c0["out_of_order"] + 2, what="duplicate and backward stamps")
    time.sleep(0.3)
    assert node.counters.published_frames == c0["published_frames"] + 1  # nothing more was published

    # truncated CDR: counted (typed subscriptions lose it silently inside rmw)
    from rclpy.serialization import serialize_message

    data = serialize_message(lidar_msg(keyframe, t_good + S))
    peer.lidar.publish(data[: len(data) // 3])
    wait_for(lambda: node.counters.unreadable_messages == c0["unreadable_messages"] + 1, what="truncated CDR counted")
    assert node.counters.malformed_lidar == c0["malformed_lidar"] + 3
    assert node.input_counts()["lidar"].malformed == node.counters.malformed_lidar


def test_a_controlled_loss_is_counted_on_diagnostics(harness, keyframe):
    """Every third cloud of a 10 Hz stream is dropped at the publisher: /diagnostics counts each."""
    node, peer = harness
    t0 = keyframe.stamp_ns + 300 * S
    before = node.input_counts()["lidar"]
    n_diag0 = len(peer.diags)
    published = 0
    dropped = 0
    for i in range(31):
        stamp = t0 + i * S // 10
        if i >= 4 and i % 3 == 2 and i < 30:
            dropped += 1
            continue
        got = node.counters.lidar_msgs
        peer.lidar.publish(lidar_msg(keyframe, stamp))
        published += 1
        wait_for(lambda: node.counters.lidar_msgs > got, what=f"cloud {i}")
    n_diag = len(peer.diags)
    wait_for(lambda: len(peer.diags) > n_diag + 1, what="diagnostics")
    after = node.input_counts()["lidar"]
    assert after.lost - before.lost == dropped == 9
    assert after.received - before.received == published
    statuses = {s.name: s for s in peer.diags[-1].status}
    lidar = next(s for name, s in statuses.items() if name.endswith(f"input {PREFIX}/lidar"))
    values = {kv.key: kv.value for kv in lidar.values}
    assert int(values["lost"]) == after.lost and int(values["expected"]) == after.expected
    pipeline = {kv.key: kv.value for kv in peer.diags[-1].status[0].values}
    assert int(pipeline["lidar_lost"]) == after.lost
    from diagnostic_msgs.msg import DiagnosticStatus

    window_levels = [d.status[0].level for d in peer.diags[n_diag0:]]
    assert DiagnosticStatus.ERROR in window_levels  # 9 of 31 lost > loss_error_fraction 0.2


def test_camera_frames_without_tf_are_named(harness, keyframe):
    """With extrinsics from TF, camera names TF cannot place are named in a warning after start-up."""
    from rclpy.parameter import Parameter

    from occ_ros.occupancy_node import OccupancyNode

    node = OccupancyNode(PointHeightTestPredictor(), node_name="occ_tf_check", context=harness[0].context,
                         parameter_overrides=topic_overrides("/t_node_tf_check", keyframe.rig_file)
                         + [Parameter("extrinsics_source", value="tf")])
    warnings = []

    class Logger:
        def warning(self, text):
            warnings.append(text)

    try:
        node.get_logger = Logger
        node._check_tf_frames()
        assert len(warnings) == 1 and all(c in warnings[0] for c in CAMERAS)
    finally:
        node.destroy_node()
