"""occupancy_node's rolling map over real DDS: /occupancy/costmap and /occupancy/map in odom.

A peer publishes the synthetic keyframe and an Odometry pose (odom -> base_link) at its stamp;
the node folds the frame into its map and publishes, at map_publish_period, the costmap
(nav_msgs/OccupancyGrid: declared frame, resolution, origin at the window's lower-left corner,
free road, lethal obstacles) and the map (SemanticOccupancyGrid in odom). Setting map_clear
clears it. Topics carry a per-module prefix; conftest gives the session its own ROS_DOMAIN_ID.
"""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from test_node_dds import graph, topic_overrides  # noqa: E402
from test_node_support import CAMERAS, PointHeightTestPredictor, load_keyframe, wait_for  # noqa: E402
from occ_core.classes import OCC3D_INDEX  # noqa: E402

PREFIX = "/t_node_map"
POSE = (12.4, -3.6, 0.0, 0.4)  # x, y, z, yaw of base_link in odom


@pytest.fixture(scope="module")
def keyframe(synthetic_dataroot, tmp_path_factory):
    return load_keyframe(synthetic_dataroot, tmp_path_factory.mktemp("map_kf"))


def odometry(stamp_ns: int, frame: str):
    from nav_msgs.msg import Odometry

    x, y, z, yaw = POSE
    msg = Odometry()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id, msg.child_frame_id = frame, "base_link"
    msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = x, y, z
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = np.sin(yaw / 2), np.cos(yaw / 2)
    return msg


def test_costmap_and_map_over_dds(keyframe):
    from nav_msgs.msg import OccupancyGrid, Odometry
    from occ_ros_msgs.msg import SemanticOccupancyGrid
    from rclpy.parameter import Parameter

    from occ_ros.map_output import map_qos
    from occ_ros.occupancy_node import OccupancyNode

    overrides = topic_overrides(PREFIX, keyframe.rig_file) + [
        Parameter("odom_topic", value=PREFIX + "/odom"),
        Parameter("map_topic", value=PREFIX + "/map"),
        Parameter("costmap_topic", value=PREFIX + "/costmap"),
        Parameter("map_cloud_topic", value=PREFIX + "/map_cloud"),
        Parameter("map_frame", value="odom_test"),
        Parameter("map_publish_period", value=0.2),
        Parameter("map_extent_xy", value=40.0),
        Parameter("map_ray_step", value=0.03),
        Parameter("costmap_max_height", value=1.5)]
    got: dict[str, list] = {"costmap": [], "map": []}

    def setup(node, peer):
        peer.calibrated = lambda: set(node._intrinsics) >= set(CAMERAS)
        peer.odom = peer.node.create_publisher(Odometry, PREFIX + "/odom", 10)
        peer.node.create_subscription(OccupancyGrid, PREFIX + "/costmap", got["costmap"].append, map_qos())
        peer.node.create_subscription(SemanticOccupancyGrid, PREFIX + "/map", got["map"].append, map_qos())

    make = lambda ctx: OccupancyNode(PointHeightTestPredictor(), context=ctx, parameter_overrides=overrides)  # noqa: E731
    with graph(make, PREFIX, keyframe, setup) as (node, peer):
        wait_for(lambda: peer.connected() and peer.odom.get_subscription_count() > 0
                 and node.costmap_pub.get_subscription_count() > 0, what="discovery")
        stamp = keyframe.stamp_ns
        peer.odom.publish(odometry(stamp, "odom_test"))
        wait_for(lambda: node.counters.odom_msgs > 0, what="odometry at the node")
        peer.send(stamp)
        wait_for(lambda: got["costmap"] and got["map"], what="costmap and map")
        cm, grid = got["costmap"][-1], got["map"][-1]

        # the declared frame and resolution; the origin is the window's lower-left corner, a
        # whole number of voxels from odom's origin, with the robot in the middle
        assert cm.header.frame_id == "odom_test" and grid.header.frame_id == "odom_test"
        assert cm.header.stamp.sec * 10**9 + cm.header.stamp.nanosec == stamp
        assert cm.info.resolution == pytest.approx(0.4) and (cm.info.width, cm.info.height) == (100, 100)
        ox, oy = cm.info.origin.position.x, cm.info.origin.position.y
        assert cm.info.origin.orientation.w == 1.0
        assert ox == pytest.approx(POSE[0] - 20.0, abs=0.4) and oy == pytest.approx(POSE[1] - 20.0, abs=0.4)
        assert ox / 0.4 == pytest.approx(round(ox / 0.4), abs=1e-6)
        assert (grid.origin.position.x, grid.origin.position.y) == pytest.approx((ox, oy))
        assert (grid.size_x, grid.size_y, grid.voxel_size_x) == (100, 100, pytest.approx(0.4))

        # the cells: the predictor's car voxels (LiDAR returns 0.2-2 m up) are lethal where they
        # fall, its road voxels free, cells nobody saw -1
        data = np.asarray(cm.data, np.int8).reshape(cm.info.height, cm.info.width)
        assert set(np.unique(data)) <= {-1, 0, 100} and (data == 100).any() and (data == 0).any()
        labels = np.asarray(grid.labels, np.uint8).reshape(grid.size_x, grid.size_y, grid.size_z)
        car = np.argwhere(labels == OCC3D_INDEX["car"])
        z_lo = grid.origin.position.z + 0.4 * car[:, 2]
        in_band = car[(z_lo < POSE[2] + 1.5) & (z_lo + 0.4 > POSE[2] + 0.1)]
        assert len(in_band) and (data[in_band[:, 1], in_band[:, 0]] == 100).all()  # data[y, x]
        assert (data == 100).sum() == len({(int(i), int(j)) for i, j, _ in in_band} | {
            (int(i), int(j)) for i, j, k in np.argwhere((labels < 17) & (labels != OCC3D_INDEX["driveable_surface"]))
            if grid.origin.position.z + 0.4 * k < 1.5 and grid.origin.position.z + 0.4 * (k + 1) > 0.1})
        unknown = (labels == 18).all(axis=2)
        assert (data[unknown.T] == -1).all() and unknown.any()

        # map_clear (runtime) empties it: the next frame starts a new map
        n = node.map.updates
        node.set_parameters([Parameter("map_clear", value=True)])
        assert node.map.map.lo is None and node.map.resets >= 1
        assert n >= 1
