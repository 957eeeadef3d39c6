"""Multi-sweep aggregation (occ_ros.sweeps) against the nuScenes sensor -> ego -> global -> ego chain,
and the node over DDS with /odom and lidar_sweeps > 1."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from occ_core.ego import NUSCENES_EGO_FOOTPRINT
from occ_core.geometry import make_transform
from occ_ros.sweeps import EgoMotion, Sweep, SweepBuffer


def lidar_chain(dataroot, n_past: int):
    """The keyframe LiDAR sample_data of the second sample of scene 1 and its n_past predecessors:
    [(stamp_ns, points (P, 5) sensor frame, T_ego_lidar, T_global_ego)], newest first."""
    tab = {t: json.loads((dataroot / "v1.0-mini" / f"{t}.json").read_text())
           for t in ("sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose")}
    sd_by = {r["token"]: r for r in tab["sample_data"]}
    cs = {r["token"]: r for r in tab["calibrated_sensor"]}
    sensor = {r["token"]: r for r in tab["sensor"]}
    ego = {r["token"]: r for r in tab["ego_pose"]}
    sample = tab["sample"][1]
    sd = next(r for r in tab["sample_data"] if r["sample_token"] == sample["token"] and r["is_key_frame"]
              and sensor[cs[r["calibrated_sensor_token"]]["sensor_token"]]["channel"] == "LIDAR_TOP")
    out = []
    while sd is not None and len(out) <= n_past:
        c, e = cs[sd["calibrated_sensor_token"]], ego[sd["ego_pose_token"]]
        out.append((sd["timestamp"] * 1000, np.fromfile(dataroot / sd["filename"], np.float32).reshape(-1, 5),
                    make_transform(c["translation"], c["rotation"]), make_transform(e["translation"], e["rotation"])))
        sd = sd_by.get(sd["prev"]) if sd["prev"] else None
    return out


def offline_sweeps(chain, n: int) -> np.ndarray:
    """nuScenes devkit style: past sweep -> ego(t_past) -> global -> ego(t_cur)."""
    t_cur, _, _, G_cur = chain[0]
    parts = []
    for stamp, pts, T_el, G in chain[:n]:
        T = np.linalg.inv(G_cur) @ G @ T_el
        xyz = pts[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
        parts.append(np.column_stack([xyz, pts[:, 3], np.full(len(pts), (t_cur - stamp) * 1e-9)]).astype(np.float32))
    return np.concatenate(parts)


def test_gather_matches_the_nuscenes_chain(synthetic_dataroot):
    chain = lidar_chain(synthetic_dataroot, 4)
    assert len(chain) == 5 and chain[0][0] - chain[1][0] == 50_000_000  # 20 Hz sweeps
    motion, buf = EgoMotion(), SweepBuffer(capacity=10)
    for stamp, pts, T_el, G in reversed(chain):
        motion.add(stamp, G)
        buf.add(Sweep(stamp, pts[:, :4], T_el))
    stamp, pts, T_el, _ = chain[0]
    got, used = buf.gather(Sweep(stamp, pts[:, :4], T_el), 4, 0.6, motion)
    assert used == 4
    want = offline_sweeps(chain, 4)
    np.testing.assert_allclose(got, want, atol=2e-4)
    np.testing.assert_allclose(np.unique(got[:, 4]), [0.0, 0.05, 0.1, 0.15], atol=1e-6)
    # the ego moved: without motion compensation the past sweeps would be off
    assert np.abs(chain[0][3][:3, 3] - chain[3][3][:3, 3]).max() > 0.2
    # too old (max age) or without poses: left out
    assert buf.gather(Sweep(stamp, pts[:, :4], T_el), 4, 0.07, motion)[1] == 2
    assert buf.gather(Sweep(stamp, pts[:, :4], T_el), 4, 0.6, EgoMotion())[1] == 1


def test_ego_motion_interpolates_and_refuses_to_extrapolate():
    m = EgoMotion(tolerance_s=0.05)
    m.add(2_000_000_000, make_transform([2.0, 0.0, 0.0], [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]))  # yaw 90
    m.add(1_000_000_000, make_transform([0.0, 0.0, 0.0], [1.0, 0, 0, 0]))  # out of order
    mid = m.pose_at(1_500_000_000)
    np.testing.assert_allclose(mid[:3, 3], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(np.degrees(np.arctan2(mid[1, 0], mid[0, 0])), 45.0)
    assert m.pose_at(2_040_000_000) is not None and m.pose_at(2_060_000_000) is None
    assert m.pose_at(900_000_000) is None


def test_node_aggregates_sweeps_with_odometry(synthetic_dataroot, tmp_path):
    pytest.importorskip("rclpy")
    from nav_msgs.msg import Odometry
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header

    from occ_core.geometry import matrix_to_quat_wxyz
    from occ_ros.conversions import columns_to_pointcloud2, pointcloud2_to_occupancy
    from test_node_dds import spinning_node, topic_overrides, wait_for
    from test_node_support import PointHeightTestPredictor, load_keyframe, ros_time

    chain = lidar_chain(synthetic_dataroot, 2)
    kf = load_keyframe(synthetic_dataroot, tmp_path, index=1)
    assert kf.stamp_ns == chain[0][0]
    prefix = "/t_node_sweeps"
    overrides = topic_overrides(prefix, kf.rig_file) + [
        Parameter("odom_topic", value=prefix + "/odom"), Parameter("lidar_sweeps", value=3)]
    frames = []

    class Rec(PointHeightTestPredictor):
        def predict(self, frame):
            frames.append(frame)
            return super().predict(frame)

    with spinning_node(prefix, kf, Rec(), overrides) as (node, peer):
        odom = peer.node.create_publisher(Odometry, prefix + "/odom", 50)
        wait_for(lambda: peer.connected() and odom.get_subscription_count() and node.voxels_pub.get_subscription_count(),
                 what="discovery")
        for stamp, pts, _, G in reversed(chain):
            msg = Odometry(child_frame_id="base_link")
            msg.header.frame_id, msg.header.stamp = "odom", ros_time(stamp)
            msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = G[:3, 3].tolist()
            w, x, y, z = matrix_to_quat_wxyz(G[:3, :3]).tolist()
            o = msg.pose.pose.orientation
            o.w, o.x, o.y, o.z = w, x, y, z
            odom.publish(msg)
        time.sleep(0.1)
        for stamp, pts, _, _ in reversed(chain[1:]):  # earlier sweeps: no cameras, not frames of their own
            header = Header(frame_id="LIDAR_TOP", stamp=ros_time(stamp))
            peer.lidar.publish(columns_to_pointcloud2(pts, ("x", "y", "z", "intensity", "ring"), header=header))
        wait_for(lambda: node.counters.lidar_msgs == 2 and node.counters.odom_msgs == 3, what="sweeps and odometry")
        peer.send(chain[0][0])
        wait_for(lambda: peer.voxels, what="voxels")
        got = frames[-1].points
        # the node drops the points inside the ego footprint (ego_filter, on by default) and counts them
        want = offline_sweeps(chain, 3)
        inside = NUSCENES_EGO_FOOTPRINT.inside(want)
        assert inside.sum() > 100 and node.counters.ego_points_removed == inside.sum()
        np.testing.assert_allclose(got, want[~inside], atol=2e-4)
        expected = PointHeightTestPredictor().predict(frames[-1])
        np.testing.assert_array_equal(pointcloud2_to_occupancy(peer.voxels[-1]), expected.labels)
        assert node.counters.malformed_odom == 0
