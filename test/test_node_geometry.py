"""The node's geometry on a moving car, without DDS traffic: each camera placed at its image stamp
by the ego poses (static fallback counted), the ego footprint applied to the LiDAR and counted,
and the footprint parameter checked (real-data coverage: test/test_real_data.py)."""

from __future__ import annotations

import numpy as np
import pytest

from occ_core.ego import NUSCENES_EGO_FOOTPRINT, EgoFootprint
from occ_core.errors import OccDataError
from occ_core.geometry import make_transform
from occ_ros.sync import SyncedSet
from test_node_support import CAMERAS, PointHeightTestPredictor, camera_info_msg, load_keyframe

S = 1_000_000_000


def _yaw(deg: float) -> np.ndarray:
    a = np.radians(deg) / 2
    return np.array([np.cos(a), 0.0, 0.0, np.sin(a)])


@pytest.fixture
def node_and_kf(synthetic_dataroot, tmp_path):
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from occ_ros.occupancy_node import OccupancyNode
    from test_node_dds import topic_overrides

    kf = load_keyframe(synthetic_dataroot, tmp_path)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = []

    def make(**params):
        overrides = topic_overrides("/t_node_geometry", kf.rig_file) + [Parameter("odom_topic", value="/t_node_geometry/odom")]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        node = OccupancyNode(PointHeightTestPredictor(), node_name=f"occ_geometry_{len(nodes)}", context=ctx,
                             parameter_overrides=overrides)
        nodes.append(node)
        for cam in CAMERAS:
            node._on_camera_info(cam, camera_info_msg(kf, cam, kf.stamp_ns))
        return node

    yield make, kf
    for n in nodes:
        n.destroy_node()
    rclpy.try_shutdown(context=ctx)


def _synced(kf, lidar_points: np.ndarray, cam_offsets_ms: dict[str, float]) -> SyncedSet:
    from occ_ros.occupancy_node import LIDAR, CameraItem, LidarItem

    t = kf.stamp_ns
    payloads = {LIDAR: LidarItem(lidar_points, "LIDAR_TOP", None, 0.0)}
    stamps = {LIDAR: t}
    for cam in CAMERAS:
        w, h = kf.size[cam]
        payloads[cam] = CameraItem(np.zeros((h, w, 3), np.uint8), cam, 0.0, np.eye(3), (h, w))
        stamps[cam] = t + int(cam_offsets_ms.get(cam, 0.0) * 1e6)
    return SyncedSet(t, payloads, stamps)


def test_cameras_are_placed_at_their_image_stamps_and_missing_poses_fall_back(node_and_kf):
    make, kf = node_and_kf
    node = make()
    t = kf.stamp_ns
    # the car drives 10 m/s along x and turns 20 deg/s: poses every 10 ms from t - 60 ms to t
    for k in range(-6, 1):
        s = k * 0.01
        node.motion.add(t + int(s * S), make_transform([10.0 * s, 0.0, 0.0], _yaw(20.0 * s)))
    offsets = {"CAM_FRONT": -35.0, "CAM_BACK": -10.0, "CAM_FRONT_LEFT": -43.0, "CAM_BACK_RIGHT": -80.0}  # last: no pose
    lidar = np.zeros((10, 4), np.float32)
    lidar[:, 0] = 30.0  # far from the ego
    frame = node.build_frame(_synced(kf, lidar, offsets))
    assert frame is not None
    for i, cam in enumerate(CAMERAS):
        dt = offsets.get(cam, 0.0) * 1e-3
        if cam == "CAM_BACK_RIGHT" or dt == 0.0:
            np.testing.assert_allclose(frame.T_base_from_cam[i], kf.T_cam[cam], atol=1e-12)  # static
            continue
        # camera -> base_link(t_cam) -> odom -> base_link(t_lidar): the car was 10 |dt| m behind
        P = make_transform([10.0 * dt, 0.0, 0.0], _yaw(20.0 * dt))
        np.testing.assert_allclose(frame.T_base_from_cam[i], P @ kf.T_cam[cam], atol=1e-9)
        assert abs(frame.T_base_from_cam[i][0, 3] - kf.T_cam[cam][0, 3]) > 0.09
    assert node.counters.cameras_motion_compensated == 5 and node.counters.camera_static_fallbacks == 1

    off = make(camera_motion_compensation=False)
    off.motion = node.motion
    frame = off.build_frame(_synced(kf, lidar, offsets))
    np.testing.assert_allclose(frame.T_base_from_cam, np.stack([kf.T_cam[c] for c in CAMERAS]), atol=1e-12)
    assert off.counters.cameras_motion_compensated == off.counters.camera_static_fallbacks == 0


def test_ego_footprint_points_are_dropped_and_counted(node_and_kf):
    make, kf = node_and_kf
    T = np.linalg.inv(kf.T_lidar)
    body = np.array([[0.0, 0.0, 1.5], [2.5, 0.5, 0.9], [-1.0, -1.0, 1.0]])  # base_link: roof, bonnet, rear corner
    outside = np.array([[10.0, 0.0, 0.0], [0.0, 1.8, 1.0], [1.0, 0.0, 2.5]])  # ahead, a pedestrian beside, above
    pts = np.zeros((6, 4), np.float32)
    pts[:, :3] = np.concatenate([body, outside]) @ T[:3, :3].T + T[:3, 3]
    node = make()
    frame = node.build_frame(_synced(kf, pts, {}))
    np.testing.assert_allclose(frame.points[:, :3], outside, atol=1e-5)
    assert node.counters.ego_points_removed == 3
    keep = make(ego_filter=False)
    assert len(keep.build_frame(_synced(kf, pts, {})).points) == 6 and keep.counters.ego_points_removed == 0
    small = make(ego_footprint=[-0.5, -0.5, 1.2, 0.5, 0.5, 2.0])
    assert len(small.build_frame(_synced(kf, pts, {})).points) == 5


@pytest.mark.parametrize("value, match", [
    ([0.0, 0.0, 0.0, 1.0, 1.0], "6 numbers"),
    ([1.0, -1.0, -0.5, -1.0, 1.0, 2.0], "min < max"),
])
def test_bad_footprints_are_refused_naming_the_parameter(value, match):
    from occ_ros.params import ParameterError, config_from_values

    with pytest.raises(ParameterError, match=f"ego_footprint.*{match}"):
        config_from_values({"ego_footprint": value})
    with pytest.raises(OccDataError, match=match):
        EgoFootprint.from_list(value)


def test_the_default_footprint_is_the_nuscenes_car():
    from occ_ros.params import PARAMETERS_BY_NAME
    from occ_core.labels import LabelConfig

    assert PARAMETERS_BY_NAME["ego_footprint"].default == NUSCENES_EGO_FOOTPRINT.as_list()
    assert LabelConfig().ego_box == (NUSCENES_EGO_FOOTPRINT.lo, NUSCENES_EGO_FOOTPRINT.hi)
    assert EgoFootprint.from_list([]) is None
