"""occupancy_node over real DDS (rclpy + Fast DDS), in this process.

A publisher node sends one synthetic keyframe (six CompressedImages with CameraInfo and the
LiDAR cloud, from the ``synthetic_dataroot`` fixture); the node's voxel cloud must equal the
offline prediction of the same predictor on the SensorFrame built from the files, and its
markers must be RViz-valid and match the prediction. Malformed input (bad cloud, unknown
encoding, a missing camera, no calibration) is counted and dropped and the node recovers.
Topics carry a per-module prefix; conftest gives the session its own ROS_DOMAIN_ID.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from test_node_support import (CAMERAS, wait_for, PointHeightTestPredictor, camera_info_msg, image_msg, lidar_msg,  # noqa: E402
                          load_keyframe, offline_frame)
from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE  # noqa: E402
from occ_ros.conversions import plan_markers, pointcloud2_to_array, pointcloud2_to_occupancy  # noqa: E402

WAIT_S = 20.0
PREFIX = "/t_node_inproc"


def topic_overrides(prefix: str, rig_file) -> list:
    from rclpy.parameter import Parameter

    return [Parameter("compressed_image_topic", value=prefix + "/{camera}/image"),
            Parameter("camera_info_topic", value=prefix + "/{camera}/camera_info"),
            Parameter("lidar_topic", value=prefix + "/lidar"),
            Parameter("markers_topic", value=prefix + "/markers"),
            Parameter("voxels_topic", value=prefix + "/voxels"),
            Parameter("diagnostics_topic", value=prefix + "/diagnostics"),
            Parameter("rig_file", value=str(rig_file)),
            Parameter("extrinsics_source", value="rig"),
            Parameter("diagnostics_period", value=0.2),
            Parameter("sync_slop", value=0.05)]


class Recording:
    """Wraps a predictor and keeps the frames it saw."""

    def __init__(self, inner):
        self.inner, self.spec, self.frames = inner, inner.spec, []

    def predict(self, frame):
        self.frames.append(frame)
        return self.inner.predict(frame)


class Peer:
    """Publishes keyframes on the node's inputs and records its outputs."""

    def __init__(self, ctx, prefix: str, kf):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
        from visualization_msgs.msg import MarkerArray

        self.kf, self.prefix = kf, prefix
        self.calibrated = None  # a callable: True once the node holds every camera's CameraInfo
        self.node = rclpy.create_node("occ_node_test_peer", context=ctx)
        self.img = {c: self.node.create_publisher(CompressedImage, f"{prefix}/{c}/image", 10) for c in CAMERAS}
        self.info = {c: self.node.create_publisher(CameraInfo, f"{prefix}/{c}/camera_info", 10) for c in CAMERAS}
        self.lidar = self.node.create_publisher(PointCloud2, prefix + "/lidar", 10)
        self.voxels, self.markers, self.diags = [], [], []
        self.node.create_subscription(PointCloud2, prefix + "/voxels", self.voxels.append, 10)
        self.node.create_subscription(MarkerArray, prefix + "/markers", self.markers.append, 10)
        self.node.create_subscription(DiagnosticArray, prefix + "/diagnostics", self.diags.append, 10)

    def connected(self) -> bool:
        pubs = [*self.img.values(), *self.info.values(), self.lidar]
        return all(p.get_subscription_count() > 0 for p in pubs)

    def send(self, stamp_ns: int, cameras=CAMERAS, lidar=True, frame_ids=None, infos=True):
        if infos:
            for c in CAMERAS:
                self.info[c].publish(camera_info_msg(self.kf, c, stamp_ns))
            if self.calibrated is not None:
                # CameraInfo streams continuously on a live rig; here it is sent once, so let it
                # arrive before the frame (the executor may run the callbacks in any order).
                wait_for(self.calibrated, what="CameraInfo of every camera at the node")
        for c in cameras:
            self.img[c].publish(image_msg(self.kf, c, stamp_ns, (frame_ids or {}).get(c)))
        if lidar:
            time.sleep(0.05)  # images first, as usual; the sync does not depend on it
            self.lidar.publish(lidar_msg(self.kf, stamp_ns))

    def diag_values(self) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.diags[-1].status[0].values}


@pytest.fixture(scope="module")
def keyframe(synthetic_dataroot, tmp_path_factory):
    return load_keyframe(synthetic_dataroot, tmp_path_factory.mktemp("node_kf"))


@contextmanager
def graph(make_node, prefix: str, kf, setup=None):
    """A fresh rclpy context with ``make_node(ctx)`` and a :class:`Peer` on ``prefix``, spun by
    one single-threaded executor thread, as rclpy.spin runs the node (a MultiThreadedExecutor
    re-polls in a loop while a callback group is busy and can starve the timers and the
    worker). ``setup(node, peer)`` runs before spinning starts. Yields ``(node, peer)``;
    everything is shut down after."""
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = make_node(ctx)
    peer = Peer(ctx, prefix, kf)
    if setup is not None:
        setup(node, peer)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(peer.node)
    thread = threading.Thread(target=ex.spin, daemon=True)
    thread.start()
    try:
        yield node, peer
    finally:
        ex.shutdown(timeout_sec=5)
        thread.join(5)
        node.destroy_node()
        peer.node.destroy_node()
        rclpy.shutdown(context=ctx)


@contextmanager
def spinning_node(prefix: str, kf, predictor, overrides: list):
    """:func:`graph` with an :class:`OccupancyNode` (``overrides``) whose peer knows when the
    node has every camera's intrinsics."""
    from occ_ros.occupancy_node import OccupancyNode

    def calibrated(node, peer):
        peer.calibrated = lambda: set(node._intrinsics) >= set(CAMERAS)

    with graph(lambda ctx: OccupancyNode(predictor, context=ctx, parameter_overrides=overrides), prefix, kf,
               calibrated) as pair:
        yield pair


@pytest.fixture(scope="module")
def harness(keyframe):
    predictor = Recording(PointHeightTestPredictor())
    with spinning_node(PREFIX, keyframe, predictor, topic_overrides(PREFIX, keyframe.rig_file)) as (node, peer):
        wait_for(lambda: peer.connected() and node.markers_pub.get_subscription_count() > 0
                 and node.voxels_pub.get_subscription_count() > 0, what="discovery")
        yield node, peer, predictor


def check_rviz_markers(msg, stamp_ns: int):
    from visualization_msgs.msg import Marker

    assert msg.markers[0].action == Marker.DELETEALL
    for m in msg.markers[1:]:
        assert m.type == Marker.CUBE_LIST and m.action == Marker.ADD
        assert m.header.frame_id == "base_link"
        assert m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamp_ns
        assert m.scale.x > 0 and m.scale.y > 0 and m.scale.z > 0
        assert m.color.a > 0
        assert len(m.colors) in (0, len(m.points))
        q = m.pose.orientation
        assert abs(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 - 1.0) < 1e-6
        assert m.ns == OCC3D_CLASSES[m.id] and len(m.points) > 0


def test_keyframe_gives_the_offline_prediction(harness, keyframe):
    node, peer, predictor = harness
    stamp = keyframe.stamp_ns
    peer.send(stamp)
    wait_for(lambda: peer.voxels and peer.markers, what="voxels and markers")
    cloud, markers = peer.voxels[-1], peer.markers[-1]

    offline = offline_frame(keyframe)
    expected = PointHeightTestPredictor().predict(offline)
    assert (expected.labels != OCC3D_FREE).sum() > 1000  # a real scene, not an empty grid

    # the node built the same SensorFrame from the messages
    got = predictor.frames[-1]
    assert got.camera_names == offline.camera_names and got.stamp_ns == stamp
    for a, b in zip(got.images, offline.images):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got.intrinsics, offline.intrinsics)
    np.testing.assert_array_equal(got.T_base_from_cam, offline.T_base_from_cam)
    np.testing.assert_array_equal(got.points, offline.points)

    # voxel cloud == offline prediction, stamped with the LiDAR header in base_link
    assert cloud.header.frame_id == "base_link"
    assert cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec == stamp
    np.testing.assert_array_equal(pointcloud2_to_occupancy(cloud), expected.labels)
    pts = pointcloud2_to_array(cloud)
    np.testing.assert_array_equal(pts["score"], np.full(pts.shape[0], expected.scores.flat[0], np.float32))

    # markers: RViz-valid, one per present class with exactly the predicted voxels
    check_rviz_markers(markers, stamp)
    n_diag = len(peer.diags)
    wait_for(lambda: len(peer.diags) > n_diag, what="diagnostics")
    from diagnostic_msgs.msg import DiagnosticStatus
    assert peer.diags[-1].status[0].level == DiagnosticStatus.OK  # nothing went wrong
    assert int(peer.diag_values()["published_frames"]) >= 1
    plan = plan_markers(expected.labels)
    assert [m.ns for m in markers.markers[1:]] == plan.names
    assert [len(m.points) for m in markers.markers[1:]] == np.diff(plan.bounds).tolist()
    first = markers.markers[1]
    c = plan.ijk[0] * 0.4 + np.array([-40.0, -40.0, -1.0]) + 0.2
    assert np.allclose([first.points[0].x, first.points[0].y, first.points[0].z], c)


def test_malformed_inputs_are_counted_and_the_node_recovers(harness, keyframe):
    node, peer, predictor = harness
    c0 = node.counters
    before = (c0.malformed_lidar, c0.malformed_image, c0.incomplete_frames, c0.no_calibration, c0.published_frames)
    n_vox = len(peer.voxels)
    n_diag0 = len(peer.diags)
    t = keyframe.stamp_ns + 10**9

    bad = lidar_msg(keyframe, t)
    bad.data = bytes(bad.data)[:-7]  # length no longer height * row_step
    peer.lidar.publish(bad)
    wait_for(lambda: node.counters.malformed_lidar == before[0] + 1, what="malformed cloud counted")

    img = image_msg(keyframe, "CAM_BACK", t, fmt="webp")
    peer.img["CAM_BACK"].publish(img)
    wait_for(lambda: node.counters.malformed_image == before[1] + 1, what="unknown encoding counted")

    # a frame without CAM_BACK_LEFT: skipped once a later frame completes
    t2 = t + 10**9
    peer.send(t2, cameras=[c for c in CAMERAS if c != "CAM_BACK_LEFT"])
    # a frame whose CAM_FRONT frame id has no calibration
    t3 = t2 + 10**9
    peer.send(t3, frame_ids={"CAM_FRONT": "CAM_NOT_IN_RIG"})
    wait_for(lambda: node.counters.no_calibration == before[3] + 1, what="no calibration counted")
    assert node.counters.incomplete_frames == before[2] + 1
    assert len(peer.voxels) == n_vox  # nothing published for the bad frames

    # good input again: published and equal to the offline prediction
    t4 = t3 + 10**9
    peer.send(t4)
    wait_for(lambda: len(peer.voxels) > n_vox, what="recovery")
    cloud = peer.voxels[-1]
    assert cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec == t4
    expected = PointHeightTestPredictor().predict(offline_frame(keyframe))
    np.testing.assert_array_equal(pointcloud2_to_occupancy(cloud), expected.labels)
    assert node.counters.published_frames == before[4] + 1

    # /diagnostics reports the counts (the next report: the LiDAR rate covers the last 5 s)
    n_diag = len(peer.diags)
    wait_for(lambda: len(peer.diags) > n_diag, what="diagnostics")
    values = peer.diag_values()
    assert int(values["malformed_lidar"]) == before[0] + 1
    assert int(values["malformed_image"]) == before[1] + 1
    assert int(values["incomplete_frames"]) == before[2] + 1
    assert int(values["no_calibration"]) == before[3] + 1
    assert float(values["latency_ms_p50"]) > 0.0
    assert float(values["rate_hz_lidar"]) > 0.0
    from diagnostic_msgs.msg import DiagnosticStatus
    levels = [d.status[0].level for d in peer.diags[n_diag0:]]
    assert {DiagnosticStatus.WARN, DiagnosticStatus.ERROR} & set(levels)  # ERROR: 1 of 1 cloud malformed


def test_input_qos_sets_the_reliability_of_every_input(harness, keyframe):
    from rclpy.parameter import Parameter
    from rclpy.qos import ReliabilityPolicy

    from occ_ros.occupancy_node import OccupancyNode

    node = harness[0]
    inputs = [PREFIX + "/lidar", *(f"{PREFIX}/{c}/image" for c in CAMERAS), *(f"{PREFIX}/{c}/camera_info" for c in CAMERAS)]

    def reliability(n, topic):
        return {i.qos_profile.reliability for i in n.get_subscriptions_info_by_topic(topic) if i.node_name == n.get_name()}

    assert all(reliability(node, t) == {ReliabilityPolicy.BEST_EFFORT} for t in inputs)  # sensor_data, the default
    reliable = OccupancyNode(PointHeightTestPredictor(), node_name="occ_node_reliable", context=node.context,
                             parameter_overrides=topic_overrides(PREFIX, keyframe.rig_file)
                             + [Parameter("input_qos", value="reliable")])
    try:
        assert all(reliability(reliable, t) == {ReliabilityPolicy.RELIABLE} for t in inputs)
    finally:
        reliable.destroy_node()


def test_raw_images_and_late_camera_info(keyframe):
    """image_transport 'raw' (sensor_msgs/Image, bgr8): frames before any CameraInfo are skipped
    as 'no calibration'; once CameraInfo arrives the output equals the offline prediction."""
    import cv2
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from occ_ros.conversions import array_to_image
    from occ_ros.occupancy_node import OccupancyNode
    from test_node_support import ros_time

    prefix = "/t_node_raw"
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    overrides = topic_overrides(prefix, keyframe.rig_file) + [
        Parameter("image_transport", value="raw"), Parameter("raw_image_topic", value=prefix + "/{camera}/raw")]
    node = OccupancyNode(PointHeightTestPredictor(), context=ctx, parameter_overrides=overrides)
    peer = rclpy.create_node("occ_node_raw_peer", context=ctx)
    img = {c: peer.create_publisher(Image, f"{prefix}/{c}/raw", 10) for c in CAMERAS}
    info = {c: peer.create_publisher(CameraInfo, f"{prefix}/{c}/camera_info", 10) for c in CAMERAS}
    lidar = peer.create_publisher(PointCloud2, prefix + "/lidar", 10)
    voxels = []
    peer.create_subscription(PointCloud2, prefix + "/voxels", voxels.append, 10)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(peer)
    thread = threading.Thread(target=ex.spin, daemon=True)
    thread.start()
    bgr = {c: cv2.imdecode(np.frombuffer(keyframe.jpeg[c], np.uint8), cv2.IMREAD_COLOR) for c in CAMERAS}

    def send(t, with_info):
        for c in CAMERAS:
            if with_info:
                info[c].publish(camera_info_msg(keyframe, c, t))
            msg = array_to_image(bgr[c], "bgr8", frame_id=c)
            msg.header.stamp = ros_time(t)
            img[c].publish(msg)
        time.sleep(0.05)
        lidar.publish(lidar_msg(keyframe, t))

    try:
        wait_for(lambda: all(p.get_subscription_count() for p in [*img.values(), *info.values(), lidar])
                 and node.voxels_pub.get_subscription_count(), what="discovery")
        send(keyframe.stamp_ns, with_info=False)
        wait_for(lambda: node.counters.no_calibration == 1, what="frame without CameraInfo skipped")
        assert voxels == []
        send(keyframe.stamp_ns + 10**9, with_info=True)
        wait_for(lambda: voxels, what="voxels after CameraInfo")
        expected = PointHeightTestPredictor().predict(offline_frame(keyframe))
        np.testing.assert_array_equal(pointcloud2_to_occupancy(voxels[-1]), expected.labels)
        assert node.counters.malformed_image == 0
    finally:
        ex.shutdown(timeout_sec=5)
        thread.join(5)
        node.destroy_node()
        peer.destroy_node()
        rclpy.shutdown(context=ctx)
