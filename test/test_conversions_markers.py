"""Occupancy grid -> MarkerArray (RViz validity) and -> PointCloud2 (and back)."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE, OCC3D_PALETTE
from occ_core.grid import OCC3D, GridSpec
from occ_ros.conversions import (
    ConversionError,
    colors_from_array,
    occupancy_to_marker_array,
    plan_markers,
    occupancy_to_marker_array_cdr,
    occupancy_to_pointcloud2,
    pointcloud2_to_array,
    pointcloud2_to_occupancy,
    points_from_array,
    voxel_points,
)

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
SMALL = GridSpec.from_range("small", (-2.0, -1.6, -1.0, 2.0, 1.6, 0.6), 0.4)  # 10 x 8 x 4


def random_grid(spec, rng, p_occ):
    grid = np.full(spec.dims, OCC3D_FREE, dtype=np.uint8)
    occ = rng.random(spec.dims) < p_occ
    grid[occ] = rng.integers(0, 17, int(occ.sum()))
    return grid


def check_rviz_valid(ma, grid, spec, frame_id, per_voxel_alpha=None):
    """The checks RViz (and our contract) need; returns the number of points drawn."""
    markers = ma.markers
    assert markers[0].action == Marker.DELETEALL
    present = sorted(set(np.unique(grid).tolist()) - {OCC3D_FREE})
    assert [m.id for m in markers[1:]] == present
    total = 0
    for m in markers[1:]:
        cls = m.id
        assert m.ns == OCC3D_CLASSES[cls]
        assert m.type == Marker.CUBE_LIST and m.action == Marker.ADD
        assert m.header.frame_id == frame_id
        q = m.pose.orientation
        assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)
        assert (m.pose.position.x, m.pose.position.y, m.pose.position.z) == (0.0, 0.0, 0.0)
        assert [m.scale.x, m.scale.y, m.scale.z] == pytest.approx([v - 1e-3 for v in spec.voxel_size])
        assert min(m.scale.x, m.scale.y, m.scale.z) > 0
        assert 0 < m.color.a <= 1
        assert [m.color.r, m.color.g, m.color.b] == pytest.approx(OCC3D_PALETTE[cls] / 255.0, abs=1e-6)
        assert m.frame_locked is False and m.lifetime.sec == 0 and m.lifetime.nanosec == 0
        assert len(m.colors) in (0, len(m.points))
        pts = np.array([(p.x, p.y, p.z) for p in m.points])
        expect = spec.voxel_centers(np.argwhere(grid == cls))
        np.testing.assert_array_equal(pts[np.lexsort(pts.T[::-1])], expect[np.lexsort(expect.T[::-1])])
        if per_voxel_alpha is not None:
            assert len(m.colors) == len(m.points)
            a = np.array([c.a for c in m.colors])
            idx, _ = spec.points_to_voxels(pts)
            np.testing.assert_allclose(a, per_voxel_alpha[idx[:, 0], idx[:, 1], idx[:, 2]], rtol=1e-6)
        total += len(m.points)
    return total


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.05, 0.5, 1.0]))
def test_marker_array_is_rviz_valid(seed, p_occ):
    rng = np.random.default_rng(seed)
    grid = random_grid(SMALL, rng, p_occ)
    ma = occupancy_to_marker_array(grid, SMALL, frame_id="base_link", stamp=Time(sec=12, nanosec=34))
    assert check_rviz_valid(ma, grid, SMALL, "base_link") == int((grid != OCC3D_FREE).sum())
    assert all(len(m.colors) == 0 for m in ma.markers)
    assert ma.markers[1:] == [] or ma.markers[1].header.stamp.sec == 12
    # serializes, and a rosbags reader sees the same markers
    back = TYPESTORE.deserialize_cdr(serialize_message(ma), "visualization_msgs/msg/MarkerArray")
    assert [m.ns for m in back.markers] == [m.ns for m in ma.markers]
    assert [len(m.points) for m in back.markers] == [len(m.points) for m in ma.markers]
    for mb, ma_m in zip(back.markers[1:], ma.markers[1:]):
        assert mb.points[0].x == ma_m.points[0].x and mb.points[-1].z == ma_m.points[-1].z


def test_full_occ3d_grid_and_per_voxel_alpha():
    rng = np.random.default_rng(5)
    grid = random_grid(OCC3D, rng, 0.01)
    alpha = rng.uniform(0.2, 1.0, OCC3D.dims).astype(np.float32)
    ma = occupancy_to_marker_array(grid, alpha=alpha)
    n = check_rviz_valid(ma, grid, OCC3D, "base_link", per_voxel_alpha=alpha)
    assert n == int((grid != OCC3D_FREE).sum()) > 5000
    with pytest.raises(ConversionError, match="alpha"):
        occupancy_to_marker_array(grid, alpha=0.0)
    with pytest.raises(ConversionError, match="grid"):
        occupancy_to_marker_array(grid[:, :, :8])
    with pytest.raises(ConversionError, match="grid"):
        occupancy_to_marker_array(grid.astype(np.int32))


def test_fast_points_are_real_points():
    """The slot-filled objects behave and serialize exactly like constructor-built ones."""
    rng = np.random.default_rng(2)
    xyz = rng.normal(0, 30, (257, 3))
    fast = points_from_array(xyz)
    slow = [Point(x=float(a), y=float(b), z=float(c)) for a, b, c in xyz]
    assert all(type(p) is Point for p in fast) and fast == slow
    assert repr(fast[0]) == repr(slow[0])
    m1, m2 = Marker(), Marker()
    m1.points, m2.points = fast, slow
    # (CDR alignment padding bytes are not zeroed by the serializer: compare decoded messages)
    assert deserialize_message(serialize_message(m1), Marker) == m2
    decoded = TYPESTORE.deserialize_cdr(serialize_message(m1), "visualization_msgs/msg/Marker")
    np.testing.assert_array_equal([(p.x, p.y, p.z) for p in decoded.points], xyz)
    fast[0].x = 1.5  # setters still work on the slot-filled objects
    assert fast[0].x == 1.5 and fast[1].x == slow[1].x
    rgba = rng.random((9, 4)).astype(np.float32)
    cols = colors_from_array(rgba)
    assert cols == [ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a)) for r, g, b, a in rgba]
    ijk = np.argwhere(random_grid(SMALL, rng, 0.3) != OCC3D_FREE)
    vp = voxel_points(ijk, SMALL)
    np.testing.assert_array_equal(np.array([(p.x, p.y, p.z) for p in vp]), SMALL.voxel_centers(ijk))
    with pytest.raises(ConversionError, match="ijk"):
        voxel_points(np.array([[0, 0, -1]]), SMALL)
    with pytest.raises(ConversionError, match="ijk"):
        voxel_points(np.array([[10, 0, 0]]), SMALL)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.1, 0.6]))
def test_grid_to_pointcloud2_and_back(seed, p_occ):
    rng = np.random.default_rng(seed)
    grid = random_grid(SMALL, rng, p_occ)
    scores = rng.random(SMALL.dims).astype(np.float32)
    msg = occupancy_to_pointcloud2(grid, SMALL, scores=scores, frame_id="base_link")
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("label", 12, 2), ("score", 13, 7), ("rgb", 17, 6)]
    assert msg.point_step == 21 and msg.height == 1 and not msg.is_bigendian
    assert msg.header.frame_id == "base_link"
    back = TYPESTORE.deserialize_cdr(serialize_message(msg), "sensor_msgs/msg/PointCloud2")
    np.testing.assert_array_equal(pointcloud2_to_occupancy(back, SMALL), grid)
    pts = pointcloud2_to_array(back)
    occ = np.argwhere(grid != OCC3D_FREE)
    assert pts.shape[0] == occ.shape[0]
    np.testing.assert_array_equal(pts["label"], grid[occ[:, 0], occ[:, 1], occ[:, 2]])
    np.testing.assert_array_equal(pts["score"], scores[occ[:, 0], occ[:, 1], occ[:, 2]])
    np.testing.assert_allclose(np.stack([pts["x"], pts["y"], pts["z"]], 1), SMALL.voxel_centers(occ), atol=1e-6)
    default = pointcloud2_to_array(occupancy_to_pointcloud2(grid, SMALL))
    assert (default["score"] == 1.0).all()


def test_full_grid_cloud_round_trip_survives_float32_centres():
    """Every Occ3D voxel, written as float32 centres, reads back into the same voxel."""
    grid = (np.arange(OCC3D.num_voxels) % 17).astype(np.uint8).reshape(OCC3D.dims)
    msg = occupancy_to_pointcloud2(grid)
    assert msg.width == OCC3D.num_voxels
    np.testing.assert_array_equal(pointcloud2_to_occupancy(msg), grid)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.05, 0.5, 1.0]), st.booleans(),
       st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12))
def test_cdr_marker_array_decodes_to_the_same_message(seed, p_occ, per_voxel_alpha, frame_id):
    rng = np.random.default_rng(seed)
    grid = random_grid(SMALL, rng, p_occ)
    alpha = rng.uniform(0.05, 1.0, SMALL.dims) if per_voxel_alpha else 0.7
    stamp = Time(sec=int(rng.integers(0, 2**31)), nanosec=int(rng.integers(0, 10**9)))
    raw = occupancy_to_marker_array_cdr(grid, SMALL, frame_id=frame_id, stamp=stamp, alpha=alpha)
    expect = occupancy_to_marker_array(grid, SMALL, frame_id=frame_id, stamp=stamp, alpha=alpha)
    assert isinstance(raw, bytes)
    assert deserialize_message(raw, MarkerArray) == expect
    back = TYPESTORE.deserialize_cdr(raw, "visualization_msgs/msg/MarkerArray")
    assert [(m.ns, m.id, m.type, m.action, len(m.points), len(m.colors)) for m in back.markers] == [
        (m.ns, m.id, m.type, m.action, len(m.points), len(m.colors)) for m in expect.markers]
    assert all(m.header.frame_id == frame_id and m.header.stamp.sec == stamp.sec for m in back.markers)
    with pytest.raises(ConversionError, match="frame_id"):
        occupancy_to_marker_array_cdr(grid, SMALL, frame_id="base\x00link")


def test_voxel_cloud_carries_the_class_palette_as_packed_rgb():
    rng = np.random.default_rng(3)
    grid = random_grid(SMALL, rng, 0.3)
    pts = pointcloud2_to_array(occupancy_to_pointcloud2(grid, SMALL))
    pal = OCC3D_PALETTE[pts["label"]].astype(np.int64)
    rgb = pts["rgb"].astype(np.int64)
    np.testing.assert_array_equal(np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], 1), pal[:, :3])
    assert ((rgb >> 24) == 0).all()
    bare = occupancy_to_pointcloud2(grid, SMALL, palette=None)
    assert [f.name for f in bare.fields] == ["x", "y", "z", "label", "score"] and bare.point_step == 17


def test_hidden_classes_leave_the_markers_only():
    grid = np.full(SMALL.dims, OCC3D_FREE, np.uint8)
    grid[0, 0, 0], grid[1, 0, 0], grid[2, 0, 0], grid[3, 0, 0] = 4, 11, 14, 11  # car, road, terrain, road
    plan = plan_markers(grid, SMALL, hidden=[11, 14])
    assert plan.names == ["car"] and plan.index.tolist() == [np.ravel_multi_index((0, 0, 0), SMALL.dims)]
    assert plan_markers(grid, SMALL).names == ["car", "driveable_surface", "terrain"]
    msg = occupancy_to_marker_array(grid, SMALL, hidden=[4])
    assert [m.ns for m in msg.markers[1:]] == ["driveable_surface", "terrain"]
    assert [len(m.points) for m in msg.markers[1:]] == [2, 1]
