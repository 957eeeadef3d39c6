"""PointCloud2 <-> numpy: random layouts, byte orders, padding, NaNs, rosbags CDR, errors."""

from __future__ import annotations

import array
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from occ_ros.conversions import (
    ConversionError,
    array_to_pointcloud2,
    columns_to_pointcloud2,
    pointcloud2_to_array,
    pointcloud2_to_xyz,
)

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
# PointField datatype -> (struct code, numpy dtype)
STRUCT = {1: ("b", np.int8), 2: ("B", np.uint8), 3: ("h", np.int16), 4: ("H", np.uint16),
          5: ("i", np.int32), 6: ("I", np.uint32), 7: ("f", np.float32), 8: ("d", np.float64)}


def to_rosbags(msg):
    """The rosbags dataclass message of an rclpy message, through CDR bytes."""
    typename = type(msg).__module__.split(".")[0] + "/msg/" + type(msg).__name__
    return TYPESTORE.deserialize_cdr(serialize_message(msg), typename)


@st.composite
def cloud_layouts(draw):
    """(fields [(name, offset, datatype)], point_step, row_step, height, width, bigendian, values)."""
    k = draw(st.integers(1, 5))
    dtypes = draw(st.lists(st.integers(1, 8), min_size=k, max_size=k))
    names = ["x", "y", "z", "intensity", "ring"][:k]
    order = draw(st.permutations(list(range(k))))
    fields, offset = [], 0
    for j in order:  # fields laid out in a random order with random gaps
        offset += draw(st.integers(0, 3))
        fields.append((names[j], offset, dtypes[j]))
        offset += np.dtype(STRUCT[dtypes[j]][1]).itemsize
    point_step = offset + draw(st.integers(0, 5))
    height = draw(st.integers(1, 3))
    width = draw(st.integers(0, 6))
    row_step = width * point_step + draw(st.integers(0, 7))
    big = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return fields, point_step, row_step, height, width, big, seed


def random_values(dtype, n, rng):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.normal(0, 100, n).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, int(info.max) + 1, n, dtype=np.int64).astype(dt)


def pack_cloud(fields, point_step, row_step, height, width, big, values):
    """A PointCloud2 whose bytes are written point by point with struct (independent of numpy views)."""
    buf = bytearray(b"\xcd" * (height * row_step))  # padding bytes are garbage, not zeros
    endian = ">" if big else "<"
    for r in range(height):
        for c in range(width):
            i = r * width + c
            for name, off, dt in fields:
                struct.pack_into(endian + STRUCT[dt][0], buf, r * row_step + c * point_step + off, values[name][i].item())
    msg = PointCloud2(header=Header(frame_id="LIDAR_TOP"), height=height, width=width, is_bigendian=big,
                      point_step=point_step, row_step=row_step, is_dense=True)
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in fields]
    msg.data = array.array("B", bytes(buf))
    return msg


def assert_same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud_layouts())
def test_random_layouts_read_back_through_rclpy_and_rosbags(layout):
    fields, point_step, row_step, height, width, big, seed = layout
    rng = np.random.default_rng(seed)
    n = height * width
    values = {name: random_values(STRUCT[dt][1], n, rng) for name, _o, dt in fields}
    msg = pack_cloud(fields, point_step, row_step, height, width, big, values)
    for m in (msg, to_rosbags(msg)):
        pts = pointcloud2_to_array(m)
        assert pts.shape == (n,)
        assert list(pts.dtype.names) == [f[0] for f in fields]
        for name, _o, dt in fields:
            assert pts.dtype.fields[name][0] == np.dtype(STRUCT[dt][1])  # native byte order
            assert_same(pts[name], values[name])
        if height > 1:
            organized = pointcloud2_to_array(m, reshape_organized=True)
            assert organized.shape == (height, width)
            assert_same(organized[fields[0][0]], values[fields[0][0]].reshape(height, width))
        sub = [f[0] for f in fields][::-1]
        cols = pointcloud2_to_xyz(m, sub)
        assert cols.dtype == np.float32 and cols.shape == (n, len(sub))
        for j, name in enumerate(sub):
            assert_same(cols[:, j], values[name].astype(np.float32))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.booleans(), st.integers(1, 40))
def test_skip_nans_drops_points_with_nan_in_requested_fields(seed, big, n):
    rng = np.random.default_rng(seed)
    fields = [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 16, 8)]
    values = {f[0]: rng.normal(size=n).astype(STRUCT[f[2]][1]) for f in fields}
    for name in ("x", "z", "intensity"):
        values[name][rng.random(n) < 0.3] = np.nan
    msg = pack_cloud(fields, 24, 24 * n, 1, n, big, values)
    keep = ~(np.isnan(values["x"]) | np.isnan(values["y"]) | np.isnan(values["z"]))
    xyz = pointcloud2_to_xyz(msg, skip_nans=True)
    assert_same(xyz, np.stack([values[c][keep] for c in "xyz"], axis=1))
    # intensity NaNs do not matter when only x, y, z are requested, but do when all are
    allp = pointcloud2_to_array(msg, skip_nans=True)
    keep_all = keep & ~np.isnan(values["intensity"])
    assert_same(allp["intensity"], values["intensity"][keep_all])
    assert pointcloud2_to_array(msg).shape == (n,)  # default keeps every point


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 50))
def test_lidar_columns_round_trip(seed, n):
    rng = np.random.default_rng(seed)
    cols = rng.normal(0, 50, (n, 5)).astype(np.float32)
    hdr = Header(frame_id="LIDAR_TOP")
    hdr.stamp.sec, hdr.stamp.nanosec = 1533151603, 547590000
    msg = columns_to_pointcloud2(cols, ("x", "y", "z", "intensity", "ring"), header=hdr)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, n, 20, 20 * n)
    assert not msg.is_bigendian and len(msg.data) == 20 * n
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1), ("ring", 16, 7, 1)]
    back = to_rosbags(msg)
    assert back.header.frame_id == "LIDAR_TOP" and back.header.stamp.sec == 1533151603
    assert_same(pointcloud2_to_xyz(back, ("x", "y", "z", "intensity", "ring")), cols)


def test_mixed_dtypes_structured_round_trip():
    rng = np.random.default_rng(0)
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "u1"), ("score", ">f4"), ("t", "<f8")])
    pts = np.zeros(33, dtype=dt)
    for n in dt.names:
        pts[n] = rng.integers(0, 17, 33) if n == "label" else rng.normal(size=33)
    msg = array_to_pointcloud2(pts)
    assert msg.point_step == 4 * 3 + 1 + 4 + 8  # packed, no alignment padding
    assert [f.datatype for f in msg.fields] == [7, 7, 7, 2, 7, 8]
    back = pointcloud2_to_array(to_rosbags(msg))
    for n in dt.names:
        assert_same(back[n], pts[n])
    cols = np.column_stack([pts["x"], pts["y"], pts["z"], pts["label"], pts["score"]])
    msg2 = columns_to_pointcloud2(cols, ("x", "y", "z", "label", "score"),
                                  (np.float32, np.float32, np.float32, np.uint8, np.float32))
    back2 = pointcloud2_to_array(msg2)
    assert back2.dtype["label"] == np.uint8
    assert_same(back2["label"], pts["label"])
    assert_same(back2["score"], pts["score"].astype(np.float32))


def good_cloud():
    values = {"x": np.arange(4, dtype=np.float32), "y": np.ones(4, np.float32), "z": np.zeros(4, np.float32)}
    return pack_cloud([("x", 0, 7), ("y", 4, 7), ("z", 8, 7)], 16, 32, 2, 2, False, values)


@pytest.mark.parametrize("mutate, field", [
    (lambda m: setattr(m, "data", array.array("B", bytes(m.data)[:-1])), "PointCloud2.data"),
    (lambda m: setattr(m, "row_step", 16), "PointCloud2.row_step"),
    (lambda m: setattr(m, "fields", [PointField(name="x", offset=0, datatype=9, count=1)]), "datatype"),
    (lambda m: setattr(m, "fields", [PointField(name="x", offset=0, datatype=7, count=0)]), "count"),
    (lambda m: setattr(m, "fields", [PointField(name="x", offset=0, datatype=7, count=5)]), "offset"),
    (lambda m: setattr(m, "fields", [PointField(name="x", offset=14, datatype=7, count=1)]), "offset"),
    (lambda m: setattr(m, "fields", [PointField(name="x", offset=0, datatype=7, count=1),
                                     PointField(name="y", offset=2, datatype=7, count=1)]), "overlap"),
    (lambda m: setattr(m, "point_step", 0), "point_step"),
])
def test_malformed_clouds_raise_conversion_error_naming_the_field(mutate, field):
    msg = good_cloud()
    assert pointcloud2_to_xyz(msg).shape == (4, 3)
    mutate(msg)
    with pytest.raises(ConversionError, match=field):
        pointcloud2_to_array(msg)


def test_missing_xyz_field_and_bad_inputs():
    msg = good_cloud()
    msg.fields = [PointField(name="x", offset=0, datatype=7, count=1), PointField(name="y", offset=4, datatype=7, count=1)]
    with pytest.raises(ConversionError, match=r"PointCloud2\.fields.*'z'"):
        pointcloud2_to_xyz(msg)
    assert issubclass(ConversionError, ValueError)
    with pytest.raises(ConversionError, match="structured"):
        array_to_pointcloud2(np.zeros((3, 3), np.float32))
    with pytest.raises(ConversionError, match="columns"):
        columns_to_pointcloud2(np.zeros((3, 2), np.float32), ("x", "y", "z"))
    with pytest.raises(ConversionError, match="no PointField datatype"):
        array_to_pointcloud2(np.zeros(3, dtype=[("x", "<f4"), ("c", "c16")]))


def test_count_above_one_becomes_numbered_fields():
    values = {"x": np.arange(3, dtype=np.float32), "y": np.arange(3, dtype=np.float32) + 10,
              "z": np.arange(3, dtype=np.float32) + 20, "rgb": np.array([1, 2, 3], np.uint16)}
    msg = pack_cloud([("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 14, 4)], 16, 48, 1, 3, True, values)
    msg.fields = [PointField(name="p", offset=0, datatype=7, count=3), PointField(name="rgb", offset=14, datatype=4, count=1)]
    pts = pointcloud2_to_array(msg)
    assert list(pts.dtype.names) == ["p_0", "p_1", "p_2", "rgb"]
    for sub, name in zip(("p_0", "p_1", "p_2"), "xyz"):
        assert_same(pts[sub], values[name])
    assert_same(pts["rgb"], values["rgb"])
    assert_same(pointcloud2_to_xyz(msg, ("p_0", "p_1", "p_2")), np.stack([values[c] for c in "xyz"], axis=1))
