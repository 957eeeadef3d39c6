"""occupancy_node with the generated interfaces: /tf_static extrinsics (tf2_msgs, no tf2_ros) and
the /occupancy/grid output (occ_ros_msgs/SemanticOccupancyGrid).

- TransformTree composes chains and inverts edges like tf2 does.
- The nuScenes rig broadcast on /tf_static (transient local, sent before the node starts) gives
  the node the same sensor -> base_link extrinsics as the rig file.
- A synthetic keyframe, with its rig only on /tf_static, comes out on /occupancy/grid equal to
  the offline prediction, stamped with the LiDAR header in base_link.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("occ_ros_msgs.msg")
pytest.importorskip("tf2_msgs.msg")

from test_node_support import (CAMERAS, wait_for, PointHeightTestPredictor, camera_info_msg, image_msg, lidar_msg,  # noqa: E402
                               load_keyframe, offline_frame)
from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE  # noqa: E402
from occ_core.geometry import invert_transform, make_transform  # noqa: E402
from occ_core.grid import OCC3D  # noqa: E402
from occ_core.rig import load_rig  # noqa: E402
from occ_ros.conversions.grid_msg import msg_to_grid  # noqa: E402
from occ_ros.tf_buffer import TfMessageExtrinsics, TransformTree, rig_tf_message, tf_static_qos  # noqa: E402
from occ_ros.tf_source import RigExtrinsics, tf2_available  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NUSCENES_RIG = REPO / "config" / "rigs" / "nuscenes.yaml"
WAIT_S = 20.0
PREFIX = "/t_ifaces_node"


def test_transform_tree_composes_chains():
    rng = np.random.default_rng(0)

    def rand_T():
        q = rng.normal(size=4)
        return make_transform(rng.normal(size=3), q / np.linalg.norm(q))

    T_base_a, T_a_b, T_base_c = rand_T(), rand_T(), rand_T()
    tree = TransformTree()
    tree.set_transform("base_link", "a", T_base_a)
    tree.set_transform("/a", "b", T_a_b)  # a leading slash names the same frame
    tree.set_transform("base_link", "c", T_base_c)
    tree.set_transform("map", "odom", rand_T())  # a second, unconnected tree
    np.testing.assert_allclose(tree.lookup("base_link", "b"), T_base_a @ T_a_b, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("b", "base_link"), invert_transform(T_base_a @ T_a_b), atol=1e-12)
    # siblings through their common ancestor: T_c_b = T_c_base @ T_base_a @ T_a_b
    np.testing.assert_allclose(tree.lookup("c", "b"), invert_transform(T_base_c) @ T_base_a @ T_a_b, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("a", "a"), np.eye(4))
    assert tree.lookup("base_link", "odom") is None and tree.lookup("base_link", "nowhere") is None
    # a later transform replaces the edge
    tree.set_transform("base_link", "a", np.eye(4))
    np.testing.assert_allclose(tree.lookup("base_link", "b"), T_a_b, atol=1e-12)
    # a cycle in the data does not hang the lookup
    tree.set_transform("b", "base_link", np.eye(4))
    tree.lookup("c", "odom")


class Harness:
    """One context: a /tf_static broadcaster (latched), the node, a peer for inputs and outputs."""

    def __init__(self, rig_file: Path, predictor, kf=None):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
        from tf2_msgs.msg import TFMessage

        from occ_ros.occupancy_node import OccupancyNode
        from occ_ros_msgs.msg import SemanticOccupancyGrid

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.peer = rclpy.create_node("occ_ifaces_node_peer", context=self.ctx)
        # broadcast before the node exists: transient local must deliver it to the late joiner
        self.tf_pub = self.peer.create_publisher(TFMessage, "/tf_static", tf_static_qos())
        self.tf_pub.publish(rig_tf_message(load_rig(rig_file), 0))
        overrides = [Parameter("extrinsics_source", value="tf"),
                     Parameter("compressed_image_topic", value=PREFIX + "/{camera}/image"),
                     Parameter("camera_info_topic", value=PREFIX + "/{camera}/camera_info"),
                     Parameter("lidar_topic", value=PREFIX + "/lidar"),
                     Parameter("markers_topic", value=PREFIX + "/markers"),
                     Parameter("voxels_topic", value=PREFIX + "/voxels"),
                     Parameter("grid_topic", value=PREFIX + "/grid"),
                     Parameter("diagnostics_topic", value=PREFIX + "/diagnostics"),
                     Parameter("sync_slop", value=0.05)]
        self.node = OccupancyNode(predictor, context=self.ctx, parameter_overrides=overrides)
        self.img = {c: self.peer.create_publisher(CompressedImage, f"{PREFIX}/{c}/image", 10) for c in CAMERAS}
        self.info = {c: self.peer.create_publisher(CameraInfo, f"{PREFIX}/{c}/camera_info", 10) for c in CAMERAS}
        self.lidar = self.peer.create_publisher(PointCloud2, PREFIX + "/lidar", 10)
        self.grids = []
        self.peer.create_subscription(SemanticOccupancyGrid, PREFIX + "/grid", self.grids.append, QoSProfile(depth=2))
        self.ex = SingleThreadedExecutor(context=self.ctx)  # as rclpy.spin runs the node
        self.ex.add_node(self.node)
        self.ex.add_node(self.peer)
        self.thread = threading.Thread(target=self.ex.spin, daemon=True)
        self.thread.start()

    def close(self):
        self.ex.shutdown(timeout_sec=5)
        self.thread.join(5)
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.mark.skipif(tf2_available(), reason="tf2_ros is installed: the node uses it instead of the tf2_msgs buffer")
def test_node_extrinsics_from_tf_static_equal_the_nuscenes_rig():
    rig = RigExtrinsics(NUSCENES_RIG)
    frames = [rig.rig.lidar.name] + [c.name for c in rig.rig.cameras]
    assert len(frames) == 7
    h = Harness(NUSCENES_RIG, PointHeightTestPredictor())
    try:
        assert isinstance(h.node.extrinsics, TfMessageExtrinsics)
        wait_for(lambda: all(h.node.extrinsics.lookup(f, 0) is not None for f in frames), what="/tf_static")
        for f in frames:
            T_tf, T_rig = h.node.extrinsics.lookup(f, 0), rig.lookup(f, 0)
            assert not np.allclose(T_rig, np.eye(4))
            np.testing.assert_allclose(T_tf, T_rig, atol=1e-9, err_msg=f)
        np.testing.assert_array_equal(h.node.extrinsics.lookup("base_link", 0), np.eye(4))
        assert h.node.extrinsics.lookup("CAM_NOWHERE", 0) is None
    finally:
        h.close()


@pytest.mark.skipif(tf2_available(), reason="tf2_ros is installed: the node uses it instead of the tf2_msgs buffer")
def test_node_publishes_the_grid_with_tf_extrinsics(synthetic_dataroot, tmp_path):
    kf = load_keyframe(synthetic_dataroot, tmp_path)
    h = Harness(kf.rig_file, PointHeightTestPredictor())
    try:
        pubs = [*h.img.values(), *h.info.values(), h.lidar]
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs)
                 and h.node.grid_pub.get_subscription_count() > 0
                 and h.node.extrinsics.lookup("LIDAR_TOP", 0) is not None, what="discovery and /tf_static")
        stamp = kf.stamp_ns
        for c in CAMERAS:
            h.info[c].publish(camera_info_msg(kf, c, stamp))
            h.img[c].publish(image_msg(kf, c, stamp))
        time.sleep(0.05)
        h.lidar.publish(lidar_msg(kf, stamp))
        wait_for(lambda: h.grids, what="/occupancy/grid")
    finally:
        h.close()
    expected = PointHeightTestPredictor().predict(offline_frame(kf))
    assert (expected.labels != OCC3D_FREE).sum() > 1000  # a real scene, so the extrinsics matter
    g = msg_to_grid(h.grids[-1])
    np.testing.assert_array_equal(g.labels, expected.labels)
    np.testing.assert_array_equal(g.scores, expected.scores)
    assert g.flow is None
    assert (g.frame_id, g.stamp_ns) == ("base_link", stamp)
    assert (g.spec.range_min, g.spec.voxel_size, g.spec.dims) == (OCC3D.range_min, OCC3D.voxel_size, OCC3D.dims)
    assert (g.class_set, g.class_names, g.free_label) == ("occ3d", OCC3D_CLASSES, OCC3D_FREE)
