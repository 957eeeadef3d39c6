"""Two real rclpy nodes exchange a MarkerArray and a PointCloud2 over DDS (Fast DDS).

This process publishes the occupancy markers (as a message and as ready-made CDR bytes) and
the voxel cloud of a grid; a subprocess node
(``sys.executable``) converts what it receives back to numpy, prints a JSON summary and echoes
the cloud on a second topic, which this process converts and compares. ``test/conftest.py``
gives the session its own ROS_DOMAIN_ID; the subprocess gets the same environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from occ_core.classes import OCC3D_FREE
from occ_core.grid import GridSpec

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 20.0
SPEC = GridSpec.from_range("dds", (-4.0, -4.0, -1.0, 4.0, 4.0, 0.6), 0.4)  # 20 x 20 x 4

PEER = r'''
import json, sys, time
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray
from occ_ros.conversions import pointcloud2_to_array

prefix = sys.argv[1]
ctx = rclpy.Context()
rclpy.init(context=ctx)
node = rclpy.create_node("occ_dds_peer", context=ctx)
executor = SingleThreadedExecutor(context=ctx)
executor.add_node(node)
got = {}
echo = node.create_publisher(PointCloud2, prefix + "/echo", 10)

def summarize(msg):
    return [[m.ns, m.id, m.action, len(m.points), float(np.sum([[p.x, p.y, p.z] for p in m.points])) if m.points else 0.0]
            for m in msg.markers]

def on_markers(msg):
    if "markers" not in got:
        got["markers"] = summarize(msg)

def on_markers_raw(msg):
    if "markers_raw" not in got:
        got["markers_raw"] = summarize(msg)

def on_cloud(msg):
    got["cloud"] = msg
    if "labels" not in got:
        pts = pointcloud2_to_array(msg)
        got["labels"] = np.bincount(pts["label"], minlength=18).tolist()
        got["frame"] = msg.header.frame_id

node.create_subscription(MarkerArray, prefix + "/markers", on_markers, 10)
node.create_subscription(MarkerArray, prefix + "/markers_raw", on_markers_raw, 10)
node.create_subscription(PointCloud2, prefix + "/voxels", on_cloud, 10)
deadline = time.monotonic() + float(sys.argv[2])
printed = False
seen_echo_sub = False
try:
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
        if all(k in got for k in ("markers", "markers_raw", "cloud")):
            if not printed:
                print(json.dumps({k: got[k] for k in ("markers", "markers_raw", "labels", "frame")}), flush=True)
                printed = True
            echo.publish(got["cloud"])
        subs = echo.get_subscription_count()
        seen_echo_sub = seen_echo_sub or subs > 0
        if printed and seen_echo_sub and subs == 0:  # the test node has gone: done
            break
finally:
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)
'''


def test_markers_and_cloud_cross_a_process_boundary(tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    from occ_ros.conversions import (
        occupancy_to_marker_array,
        occupancy_to_marker_array_cdr,
        occupancy_to_pointcloud2,
        pointcloud2_to_occupancy,
    )

    assert os.environ.get("ROS_DOMAIN_ID"), "test/conftest.py must set ROS_DOMAIN_ID before rclpy.init"
    rng = np.random.default_rng(11)
    grid = np.full(SPEC.dims, OCC3D_FREE, np.uint8)
    occ = rng.random(SPEC.dims) < 0.2
    grid[occ] = rng.integers(0, 17, int(occ.sum()))
    markers = occupancy_to_marker_array(grid, SPEC, frame_id="base_link")
    markers_raw = occupancy_to_marker_array_cdr(grid, SPEC, frame_id="base_link")  # publish(bytes) path
    cloud = occupancy_to_pointcloud2(grid, SPEC, frame_id="base_link")
    prefix = f"/occ_test_{os.getpid()}_{int(time.time() * 1000) % 100000}"

    script = tmp_path / "peer.py"
    script.write_text(PEER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    peer = subprocess.Popen([sys.executable, str(script), prefix, str(WAIT_S + 5)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("occ_dds_test", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    echoed = []
    try:
        pub_m = node.create_publisher(MarkerArray, prefix + "/markers", 10)
        pub_raw = node.create_publisher(MarkerArray, prefix + "/markers_raw", 10)
        pub_c = node.create_publisher(PointCloud2, prefix + "/voxels", 10)
        node.create_subscription(PointCloud2, prefix + "/echo", echoed.append, 10)
        deadline = time.monotonic() + WAIT_S
        last = 0.0
        while not echoed and time.monotonic() < deadline and peer.poll() is None:
            if time.monotonic() - last > 0.3:  # keep publishing until the peer has answered
                pub_m.publish(markers)
                pub_raw.publish(markers_raw)
                pub_c.publish(cloud)
                last = time.monotonic()
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        try:
            out, err = peer.communicate(timeout=WAIT_S + 10)
        except subprocess.TimeoutExpired:
            peer.kill()
            out, err = peer.communicate()

    assert echoed, f"no echo from the peer within {WAIT_S} s; peer stderr:\n{err[-2000:]}"
    summary = json.loads(out.strip().splitlines()[0])
    # what the peer saw equals what was sent
    sent = [[m.ns, m.id, m.action, len(m.points),
             float(np.sum([[p.x, p.y, p.z] for p in m.points])) if m.points else 0.0] for m in markers.markers]
    for key in ("markers", "markers_raw"):
        assert len(summary[key]) == len(sent) > 2
        for got, exp in zip(summary[key], sent):
            assert got[:4] == exp[:4]
            assert abs(got[4] - exp[4]) < 1e-6 * max(1.0, abs(exp[4]))
    assert summary["labels"] == np.bincount(grid[grid != OCC3D_FREE], minlength=18).tolist()
    assert summary["frame"] == "base_link"
    # and the cloud that came back through both processes is the grid again
    np.testing.assert_array_equal(pointcloud2_to_occupancy(echoed[0], SPEC), grid)
