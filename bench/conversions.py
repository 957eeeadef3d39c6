"""Benchmark of occ_ros.conversions against plain per-voxel / per-point Python loops.

Run from the repository root: ``.venv/bin/python bench/conversions.py [--repeats N]``.

Cases (medians of repeats, milliseconds, one process, real rclpy messages):
* filling 40,000 ``geometry_msgs/Point`` (``voxel_points`` vs ``[Point(x=.., ..) for ..]``);
* Occ3D 200x200x16 grid with 40,000 occupied voxels of random classes -> MarkerArray, against
  a loop over every voxel and against a loop over the occupied voxels only;
* the same grid -> voxel PointCloud2 (x, y, z, label, score), against a struct.pack loop;
* PointCloud2 of 34,720 points x 5 float32 fields -> (N, 5) float32, against a
  struct.unpack_from loop (what the ROS 1 ``read_points`` did);
* the same grid -> serialized MarkerArray bytes (``occupancy_to_marker_array_cdr``, for
  ``publish(bytes)``), against the all-voxel loop plus ``serialize_message``;
* ``serialize_message`` of the MarkerArray message (what ``publish(msg)`` pays on top of
  building it; no loop twin).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import struct
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE, OCC3D_PALETTE  # noqa: E402
from occ_core.grid import OCC3D  # noqa: E402
from occ_ros.conversions import (  # noqa: E402
    columns_to_pointcloud2,
    occupancy_to_marker_array,
    occupancy_to_marker_array_cdr,
    occupancy_to_pointcloud2,
    pointcloud2_to_xyz,
    voxel_points,
)
from _machine import cpu_model  # noqa: E402  (bench/ is on sys.path when run as a script)


# --------------------------------------------------------------------- plain loop twins
def loop_points(xyz):
    from geometry_msgs.msg import Point

    return [Point(x=x, y=y, z=z) for x, y, z in xyz.tolist()]


def _loop_marker(cls, header):
    from visualization_msgs.msg import Marker

    m = Marker()
    m.header = header
    m.ns = OCC3D_CLASSES[cls]
    m.id = cls
    m.type = Marker.CUBE_LIST
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = OCC3D.voxel_size[0] - 1e-3
    r, g, b = (float(c) / 255.0 for c in OCC3D_PALETTE[cls])
    m.color.r, m.color.g, m.color.b, m.color.a = r, g, b, 1.0
    return m


def loop_marker_array_all_voxels(grid):
    """Plain Python: visit every voxel, one Point(x=..) per occupied one."""
    from geometry_msgs.msg import Point
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker, MarkerArray

    header = Header(frame_id="base_link")
    (x0, y0, z0), (sx, sy, sz) = OCC3D.range_min, OCC3D.voxel_size
    per_class = {}
    for i, plane in enumerate(grid.tolist()):
        for j, column in enumerate(plane):
            for k, label in enumerate(column):
                if label != OCC3D_FREE:
                    per_class.setdefault(label, []).append(
                        Point(x=x0 + sx * (i + 0.5), y=y0 + sy * (j + 0.5), z=z0 + sz * (k + 0.5)))
    clear = Marker(header=header, action=Marker.DELETEALL)
    markers = [clear]
    for cls in sorted(per_class):
        m = _loop_marker(cls, header)
        m.points = per_class[cls]
        markers.append(m)
    return MarkerArray(markers=markers)


def loop_marker_array_occupied(grid):
    """Python loop over the occupied voxels only (found with numpy)."""
    from geometry_msgs.msg import Point
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker, MarkerArray

    header = Header(frame_id="base_link")
    (x0, y0, z0), (sx, sy, sz) = OCC3D.range_min, OCC3D.voxel_size
    per_class = {}
    for i, j, k in np.argwhere(grid != OCC3D_FREE).tolist():
        per_class.setdefault(int(grid[i, j, k]), []).append(
            Point(x=x0 + sx * (i + 0.5), y=y0 + sy * (j + 0.5), z=z0 + sz * (k + 0.5)))
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    for cls in sorted(per_class):
        m = _loop_marker(cls, header)
        m.points = per_class[cls]
        markers.append(m)
    return MarkerArray(markers=markers)


def loop_voxel_cloud(grid):
    """Plain Python: visit every voxel, struct.pack x, y, z, label, score of occupied ones."""
    import array

    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    (x0, y0, z0), (sx, sy, sz) = OCC3D.range_min, OCC3D.voxel_size
    buf = bytearray()
    pack = struct.Struct("<fffBf").pack
    n = 0
    for i, plane in enumerate(grid.tolist()):
        for j, column in enumerate(plane):
            for k, label in enumerate(column):
                if label != OCC3D_FREE:
                    buf += pack(x0 + sx * (i + 0.5), y0 + sy * (j + 0.5), z0 + sz * (k + 0.5), label, 1.0)
                    n += 1
    fields = [PointField(name=nm, offset=o, datatype=d, count=1)
              for nm, o, d in (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("label", 12, 2), ("score", 13, 7))]
    return PointCloud2(header=Header(frame_id="base_link"), height=1, width=n, fields=fields, is_bigendian=False,
                       point_step=17, row_step=17 * n, data=array.array("B", bytes(buf)), is_dense=True)


def loop_read_cloud(msg, names=("x", "y", "z", "intensity", "ring")):
    """Per-point struct.unpack_from, like the ROS 1 read_points generator."""
    offsets = {f.name: f.offset for f in msg.fields}
    unpack = struct.Struct("<f").unpack_from
    data = bytes(msg.data)
    rows = []
    for p in range(msg.width):
        base = p * msg.point_step
        rows.append([unpack(data, base + offsets[n])[0] for n in names])
    return np.array(rows, dtype=np.float32)


# --------------------------------------------------------------------- harness
def timed(fn, repeats):
    """Median wall time in ms of ``repeats`` calls (the previous result is freed outside the timing)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        del out
    return 1e3 * median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21, help="repeats of the vectorized ops (loops: a third)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from rclpy.serialization import serialize_message

    rng = np.random.default_rng(args.seed)
    grid = np.full(OCC3D.dims, OCC3D_FREE, dtype=np.uint8)
    occ = rng.choice(OCC3D.num_voxels, 40_000, replace=False)
    grid.reshape(-1)[occ] = rng.integers(0, 17, occ.size)
    ijk = np.argwhere(grid != OCC3D_FREE)
    centers = OCC3D.voxel_centers(ijk)
    lidar = rng.normal(0, 20, (34_720, 5)).astype(np.float32)
    cloud = columns_to_pointcloud2(lidar, ("x", "y", "z", "intensity", "ring"), header=None, frame_id="LIDAR_TOP")
    markers = occupancy_to_marker_array(grid)

    # sanity: the loop twins compute the same thing
    assert np.array_equal(loop_read_cloud(cloud), pointcloud2_to_xyz(cloud, ("x", "y", "z", "intensity", "ring")))
    assert bytes(loop_voxel_cloud(grid).data) == bytes(occupancy_to_pointcloud2(grid).data)
    assert sum(len(m.points) for m in loop_marker_array_all_voxels(grid).markers) == 40_000
    assert len(occupancy_to_marker_array_cdr(grid)) == len(serialize_message(markers))

    rl = max(3, args.repeats // 3)
    cases = [
        ("fill 40k geometry_msgs/Point", lambda: voxel_points(ijk, OCC3D), lambda: loop_points(centers)),
        ("grid->MarkerArray (loop: all voxels)", lambda: occupancy_to_marker_array(grid),
         lambda: loop_marker_array_all_voxels(grid)),
        ("grid->MarkerArray (loop: occupied only)", lambda: occupancy_to_marker_array(grid),
         lambda: loop_marker_array_occupied(grid)),
        ("grid->MarkerArray CDR bytes (loop: all voxels + serialize)",
         lambda: occupancy_to_marker_array_cdr(grid),
         lambda: serialize_message(loop_marker_array_all_voxels(grid))),
        ("serialize_message(MarkerArray) (paid in publish)", lambda: serialize_message(markers), None),
        ("grid->PointCloud2 (40k voxels)", lambda: occupancy_to_pointcloud2(grid), lambda: loop_voxel_cloud(grid)),
        ("PointCloud2->numpy (34,720 x 5 f32)",
         lambda: pointcloud2_to_xyz(cloud, ("x", "y", "z", "intensity", "ring")), lambda: loop_read_cloud(cloud)),
    ]
    rows = []
    for name, ours, loop in tqdm(cases, desc="bench", unit="case"):
        t_ours = timed(ours, args.repeats)
        t_loop = timed(loop, rl) if loop is not None else float("nan")
        rows.append((name, t_ours, t_loop))

    print(f"date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"machine: {platform.platform()}; CPU: {cpu_model()}; nproc: {os.cpu_count()}; "
          f"python {platform.python_version()}, numpy {np.__version__}")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"repeats: ours {args.repeats}, loops {rl} (medians); load average at the end: {load}\n")
    w = max(len(r[0]) for r in rows)
    print(f"| {'op':<{w}} | ours ms | loop ms | speed-up |")
    print(f"|{'-' * (w + 2)}|--------:|--------:|---------:|")
    for name, t_ours, t_loop in rows:
        if np.isnan(t_loop):
            print(f"| {name:<{w}} | {t_ours:7.2f} |       - |        - |")
        else:
            print(f"| {name:<{w}} | {t_ours:7.2f} | {t_loop:7.1f} | {t_loop / t_ours:7.1f}x |")


if __name__ == "__main__":
    main()
