"""The generated interfaces (occ_ros_msgs, tf2_msgs) and occ_ros.conversions.grid_msg.

- ``make venv`` generated occ_ros_msgs from msg/ and tf2_msgs with the rosidl tool chain: the
  Python types import, their fields are the .msg's, the ament index knows the packages.
- numpy <-> SemanticOccupancyGrid round trip, and malformed messages raise ConversionError.
- A publisher in a second process and a subscriber here exchange a full Occ3D 200x200x16 grid
  with scores and flow over DDS.
- rosbags registers the .msg text (grid_typestore), grid_to_rosbags_msg builds the grid with the
  same checks as grid_to_msg, its CDR equals rclpy's serialization, a bag written with it reads
  back, and mcap-ros2-support decodes it from the MCAP schema alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
grid_msgs = pytest.importorskip("occ_ros_msgs.msg")

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE  # noqa: E402
from occ_core.grid import OCC3D, GridSpec  # noqa: E402
from occ_ros.conversions import ConversionError  # noqa: E402
from occ_ros.conversions.grid_msg import (GRID_MSG_TYPE, ORDER_XYZ_ROW_MAJOR, grid_to_msg,  # noqa: E402
                                          grid_to_rosbags_msg, grid_typestore, msg_to_grid)

REPO = Path(__file__).resolve().parent.parent
TOPIC = "/t_ifaces/grid"
SEED = 7


def make_grid(spec: GridSpec = OCC3D, seed: int = SEED):
    """Deterministic (labels (X, Y, Z) uint8, scores (X, Y, Z) float32, flow (X, Y, Z, 2) float32)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(OCC3D_CLASSES), spec.dims, dtype=np.uint8)
    scores = rng.random(spec.dims, dtype=np.float32)
    flow = rng.normal(size=(*spec.dims, 2)).astype(np.float32)
    return labels, scores, flow


def header(stamp_ns: int, frame_id: str = "base_link"):
    from std_msgs.msg import Header

    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return h


# --------------------------------------------------------------------- generation
def test_generated_types_match_the_msg_files():
    from ament_index_python.packages import get_package_share_directory
    from tf2_msgs.msg import TFMessage

    G = grid_msgs.SemanticOccupancyGrid
    assert G.ORDER_XYZ_ROW_MAJOR == ORDER_XYZ_ROW_MAJOR == 0
    fields = G.get_fields_and_field_types()
    assert fields == {
        "header": "std_msgs/Header", "origin": "geometry_msgs/Pose",
        "voxel_size_x": "double", "voxel_size_y": "double", "voxel_size_z": "double",
        "size_x": "uint32", "size_y": "uint32", "size_z": "uint32", "index_order": "uint8",
        "class_set": "string", "class_names": "sequence<string>", "free_label": "uint8",
        "labels": "sequence<uint8>", "scores": "sequence<float>", "flow": "sequence<float>",
    }
    assert TFMessage.get_fields_and_field_types() == {"transforms": "sequence<geometry_msgs/TransformStamped>"}
    # installed: the ament index has the package, with the .msg the build generated from
    share = Path(get_package_share_directory("occ_ros_msgs"))
    assert (share / "msg" / "SemanticOccupancyGrid.msg").read_text() == (REPO / "msg" / "SemanticOccupancyGrid.msg").read_text()
    # no collision with the hand-written package: occ_ros is still the node's package
    import occ_ros

    assert (Path(occ_ros.__file__).parent / "occupancy_node.py").is_file()
    assert Path(grid_msgs.__file__).parent.parent.name == "occ_ros_msgs"


# --------------------------------------------------------------------- conversions
def test_grid_round_trip_and_layout():
    spec = GridSpec("small", (-2.0, -3.0, -1.0), (0.5, 0.25, 0.4), (4, 6, 3))
    labels, scores, flow = make_grid(spec)
    msg = grid_to_msg(labels, spec, header(1_500_000_123), scores=scores, flow=flow)
    assert (msg.size_x, msg.size_y, msg.size_z) == (4, 6, 3)
    assert msg.class_set == "occ3d" and list(msg.class_names) == list(OCC3D_CLASSES) and msg.free_label == OCC3D_FREE
    # ORDER_XYZ_ROW_MAJOR: flat index (i * Y + j) * Z + k, flow pairs fastest
    i, j, k = 3, 4, 2
    assert msg.labels[(i * 6 + j) * 3 + k] == labels[i, j, k]
    assert msg.flow[2 * ((i * 6 + j) * 3 + k) + 1] == flow[i, j, k, 1]
    assert (msg.origin.position.x, msg.origin.position.y, msg.origin.position.z) == (-2.0, -3.0, -1.0)

    g = msg_to_grid(msg)
    np.testing.assert_array_equal(g.labels, labels)
    np.testing.assert_array_equal(g.scores, scores)
    np.testing.assert_array_equal(g.flow, flow)
    assert g.spec.range_min == spec.range_min and g.spec.voxel_size == spec.voxel_size and g.spec.dims == spec.dims
    np.testing.assert_array_equal(g.T_frame_from_grid, np.diag([1.0, 1.0, 1.0, 1.0]) + np.pad(
        np.array([-2.0, -3.0, -1.0])[:, None], ((0, 1), (3, 0))))
    assert (g.frame_id, g.stamp_ns) == ("base_link", 1_500_000_123)

    bare = msg_to_grid(grid_to_msg(labels, spec))
    assert bare.scores is None and bare.flow is None


def test_malformed_grids_raise():
    spec = GridSpec("small", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (2, 3, 4))
    labels, scores, flow = make_grid(spec)
    with pytest.raises(ConversionError, match="labels: expected shape"):
        grid_to_msg(labels[:, :, :3], spec)
    with pytest.raises(ConversionError, match="flow: expected shape"):
        grid_to_msg(labels, spec, flow=flow[..., :1])
    with pytest.raises(ConversionError, match="uint8"):
        grid_to_msg(labels.astype(np.int32) + 250, spec)
    with pytest.raises(ConversionError, match="free_label: 18"):
        grid_to_msg(labels, spec, free_label=18)
    msg = grid_to_msg(labels, spec, scores=scores)
    msg.size_z = 5
    with pytest.raises(ConversionError, match=r"labels: expected 30 values, got 24"):
        msg_to_grid(msg)
    msg.size_z, msg.index_order = 4, 1
    with pytest.raises(ConversionError, match="index_order"):
        msg_to_grid(msg)


def test_rosbags_builder_checks_and_fills_like_grid_to_msg():
    store = grid_typestore()
    spec = GridSpec("small", (0.0, -1.0, 2.0), (1.0, 0.5, 0.25), (2, 3, 4))
    labels, scores, flow = make_grid(spec)

    def build(lab, **kw):
        return grid_to_rosbags_msg(lab, spec, 3_000_000_004, "base_link", typestore=store, **kw)

    for bad, kw, match in ((labels[:, :, :3], {}, "labels: expected shape"),
                           (labels.astype(np.int32) + 250, {}, "uint8"),
                           (labels, {"scores": scores[:1]}, "scores: expected shape"),
                           (labels, {"flow": flow[..., :1]}, "flow: expected shape"),
                           (labels, {"free_label": 18}, "free_label: 18")):
        for builder in (build, lambda lab, **k: grid_to_msg(lab, spec, **k)):
            with pytest.raises(ConversionError, match=match):
                builder(bad, **kw)
    bare = build(labels.astype(np.int64))
    assert bare.labels.dtype == np.uint8 and bare.scores.size == 0 and bare.flow.size == 0
    g = msg_to_grid(store.deserialize_cdr(store.serialize_cdr(bare, GRID_MSG_TYPE), GRID_MSG_TYPE))
    np.testing.assert_array_equal(g.labels, labels)
    assert g.scores is None and g.flow is None and (g.stamp_ns, g.frame_id, g.free_label) == (3_000_000_004, "base_link", 17)
    assert g.spec.range_min == spec.range_min and g.spec.voxel_size == spec.voxel_size and g.class_names == OCC3D_CLASSES


# --------------------------------------------------------------------- two processes
def _publish_main(topic: str) -> None:
    """Child process: publish the full Occ3D grid every 0.3 s until killed (or 60 s)."""
    from rclpy.qos import QoSProfile

    from occ_ros_msgs.msg import SemanticOccupancyGrid

    rclpy.init()
    node = rclpy.create_node("occ_ifaces_test_publisher")
    pub = node.create_publisher(SemanticOccupancyGrid, topic, QoSProfile(depth=1))
    labels, scores, flow = make_grid()
    msg = grid_to_msg(labels, OCC3D, header(42_000_000_007), scores=scores, flow=flow)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if pub.get_subscription_count() > 0:
            pub.publish(msg)
        time.sleep(0.3)


def test_two_processes_exchange_a_full_grid():
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("occ_ifaces_test_subscriber", context=ctx)
    got = []
    node.create_subscription(grid_msgs.SemanticOccupancyGrid, TOPIC, got.append, QoSProfile(depth=1))
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    thread = threading.Thread(target=ex.spin, daemon=True)
    thread.start()
    proc = subprocess.Popen([sys.executable, __file__, "--publish", TOPIC], cwd=REPO, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 45
        while not got and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.05)
        assert got, f"no grid received; publisher rc={proc.poll()} output: {proc.stdout.read() if proc.poll() is not None else ''}"
    finally:
        proc.kill()
        proc.wait(10)
        ex.shutdown(timeout_sec=5)
        thread.join(5)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    g = msg_to_grid(got[0])
    labels, scores, flow = make_grid()
    assert g.labels.shape == (200, 200, 16) and g.flow.shape == (200, 200, 16, 2)
    np.testing.assert_array_equal(g.labels, labels)
    np.testing.assert_array_equal(g.scores, scores)
    np.testing.assert_array_equal(g.flow, flow)
    assert g.spec == OCC3D.__class__("occ3d", OCC3D.range_min, OCC3D.voxel_size, OCC3D.dims)
    assert (g.frame_id, g.stamp_ns) == ("base_link", 42_000_000_007)


# --------------------------------------------------------------------- bags
def test_rosbags_and_mcap_decode_the_grid(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    typestore = grid_typestore()

    spec = GridSpec("small", (-4.0, -4.0, -1.0), (0.4, 0.4, 0.4), (20, 20, 8))
    labels, scores, flow = make_grid(spec, seed=3)
    stamp = 1_700_000_000_123_456_789
    rb_msg = grid_to_rosbags_msg(labels, spec, stamp, "base_link", scores=scores, flow=flow, typestore=typestore)
    cdr = typestore.serialize_cdr(rb_msg, GRID_MSG_TYPE)
    # the registered definition and the generated type are the same wire format (equal
    # lengths, and each side decodes the other's bytes; Fast CDR leaves padding bytes unset)
    rclpy_cdr = serialize_message(grid_to_msg(labels, spec, header(stamp), scores=scores, flow=flow))
    assert len(cdr) == len(rclpy_cdr)
    for decoded in (deserialize_message(bytes(cdr), grid_msgs.SemanticOccupancyGrid),
                    typestore.deserialize_cdr(rclpy_cdr, GRID_MSG_TYPE)):
        g = msg_to_grid(decoded)
        np.testing.assert_array_equal(g.labels, labels)
        np.testing.assert_array_equal(g.flow, flow)
        assert (g.stamp_ns, g.class_names, g.spec.range_min) == (stamp, OCC3D_CLASSES, spec.range_min)

    bag = tmp_path / "grid_bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/occupancy/grid", GRID_MSG_TYPE, typestore=typestore)
        writer.write(conn, stamp, cdr)
        writer.write(conn, stamp + 100_000_000,
                     typestore.serialize_cdr(grid_to_rosbags_msg(labels[::-1], spec, stamp + 100_000_000, "base_link",
                                                                 scores=scores, flow=flow, typestore=typestore),
                                             GRID_MSG_TYPE))

    with Reader(bag) as reader:
        msgs = [typestore.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()]
    assert len(msgs) == 2
    np.testing.assert_array_equal(msg_to_grid(msgs[0]).labels, labels)
    np.testing.assert_array_equal(msg_to_grid(msgs[1]).labels, labels[::-1])
    np.testing.assert_array_equal(msg_to_grid(msgs[0]).flow, flow)

    # a reader without occ_ros_msgs: the MCAP schema carries the definition
    (mcap_file,) = sorted(bag.glob("*.mcap"))
    with open(mcap_file, "rb") as f:
        decoded = list(make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages())
    assert [d.schema.name for d in decoded] == [GRID_MSG_TYPE] * 2
    g = msg_to_grid(decoded[0].decoded_message)
    np.testing.assert_array_equal(g.labels, labels)
    np.testing.assert_array_equal(g.scores, scores)
    np.testing.assert_array_equal(g.flow, flow)
    assert (g.stamp_ns, g.frame_id, g.class_names, g.spec.dims) == (stamp, "base_link", OCC3D_CLASSES, (20, 20, 8))
    np.testing.assert_array_equal(msg_to_grid(decoded[1].decoded_message).labels, labels[::-1])


if __name__ == "__main__" and sys.argv[1:2] == ["--publish"]:
    _publish_main(sys.argv[2])
