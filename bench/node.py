"""End-to-end latency of occupancy_node over real DDS, split by stage.

Run from the repository root: ``.venv/bin/python bench/node.py [--frames N] [--model config/models/fusion.yaml]
[--backend torch onnxruntime]``.

Two processes, as on a robot: this one runs ``occupancy_node`` (the model of ``--model`` with
``--checkpoint``, default the shipped fusion_demo.pt, empty for seeded random init; CPU) on a
multi-threaded executor; a spawned sensor process publishes synthetic keyframes over DDS (six
CompressedImages re-encoded at ``--size``, default nuScenes' 1600x900, JPEG quality 90, with
CameraInfo, then the keyframe's LiDAR sweep of about 30k points 50 ms later; the node's
``input_qos`` is reliable: best effort loses most 600 kB clouds between processes here). The sensor
process waits for each frame's markers before sending the next, so the numbers are latencies
without queueing; the markers topic has a subscriber, so markers are built (CDR) and published
every frame. The subscriber takes the markers as CDR bytes; deserializing them into Python
objects in the node's process would hold its GIL while the worker runs (RViz decodes them in
its own process).

``--backend B ...`` (``torch``, ``onnxruntime``, ``tensorrt``; default ``torch``) runs the whole
measurement once per backend, one after the other in this run (a fresh node and sensor process
each), and ends with a side-by-side table: the node loads the model itself with its ``backend``
parameter, as ``occupancy_node`` does (an ONNX backend exports once into the engine cache,
``$OCC_ENGINE_CACHE`` or ``~/.cache/occ_ros/engines``; the export is outside the measured
frames). "rate" there is the node's end-to-end bound, 1000 / p50 of (decode + total) ms: the
frames a single worker can turn out per second when the decoding does not overlap.

``--predictor gt`` replaces the model by a replay of the synthetic ground truth of each
keyframe (Occ3D labels, score 1): the stages other than ``model`` then run on a realistic
number of occupied voxels (an untrained model labels nearly every voxel occupied, which makes
the marker and cloud building much costlier than with any real prediction).

``--rate HZ`` makes it a soak: the sensors publish at that rate without waiting, and the table
gains a line comparing every cloud sent with what the node received, counted as lost (gaps in
the stamps) and dropped at the worker (``--input-qos sensor_data`` for the node's default QoS).

Stages (per frame, from the node's ``FrameTiming``):
* decode: JPEG decode + colour conversion of the six images (at the reduced size that covers
  the model's input: 1/8 for 1600x900 and the shipped model's 176x96; full size with
  ``--predictor gt --full-decode``) and the PointCloud2 -> numpy of the sweep (in the
  callbacks, before the sync completes);
* preprocess: SensorFrame assembly (calibration lookup, LiDAR -> base_link);
* model: ``predictor.predict`` (the model's own input preparation included);
* postprocess: voxel PointCloud2 + MarkerArray CDR bytes;
* publish: ``publish`` of both;
* total: sync complete -> both published; "total - model" is the node's own overhead there,
  and "decode + total - model" that overhead with the frame's decoding added (an upper bound:
  the decoding mostly overlaps the wait for the LiDAR).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from occ_core.data.synthetic import SynthConfig, generate  # noqa: E402
from _machine import cpu_model  # noqa: E402  (bench/ is on sys.path when run as a script)

PREFIX = "/bench_node"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")


def load_keyframes(root: Path, size: tuple[int, int], out: Path):
    """Keyframes as (stamp_ns, {cam: jpeg bytes}, {cam: K}, lidar (P, 5) float32) and a rig file of their calibration."""
    tab = {t: json.loads((root / "v1.0-mini" / f"{t}.json").read_text())
           for t in ("sample", "sample_data", "calibrated_sensor", "sensor")}
    cs = {r["token"]: r for r in tab["calibrated_sensor"]}
    sensor = {r["token"]: r for r in tab["sensor"]}
    frames, rig = [], {"base_frame": "base_link", "cameras": {}}
    for sample in tab["sample"]:
        jpeg, K, lidar = {}, {}, None
        for sd in tab["sample_data"]:
            if sd["sample_token"] != sample["token"] or not sd["is_key_frame"]:
                continue
            c = cs[sd["calibrated_sensor_token"]]
            ch = sensor[c["sensor_token"]]["channel"]
            q = c["rotation"]
            entry = {"name": ch, "translation": c["translation"], "quaternion_xyzw": [q[1], q[2], q[3], q[0]]}
            if ch == "LIDAR_TOP":
                lidar = np.fromfile(root / sd["filename"], dtype=np.float32).reshape(-1, 5)
                rig["lidar"] = entry
                continue
            img = cv2.imread(str(root / sd["filename"]))
            sx, sy = size[0] / img.shape[1], size[1] / img.shape[0]
            ok, buf = cv2.imencode(".jpg", cv2.resize(img, size, interpolation=cv2.INTER_LINEAR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 90])
            jpeg[ch] = buf.tobytes()
            K[ch] = np.asarray(c["camera_intrinsic"], dtype=np.float64) * np.array([[sx], [sy], [1.0]])
            rig["cameras"][ch] = {**entry, "width": size[0], "height": size[1], "K": K[ch].tolist()}
        frames.append((sample["timestamp"] * 1000, jpeg, K, lidar))
    rig["cameras"] = list(rig["cameras"].values())
    rig_file = out / "rig.yaml"
    rig_file.write_text(yaml.safe_dump(rig, sort_keys=False))
    return frames, rig_file


class GroundTruthReplay:
    """Bench-only predictor: the Occ3D ground truth of the keyframe with the frame's stamp;
    ``image_hw`` = the camera input of ``--model``, so the node decodes images as for it."""

    def __init__(self, labels_by_stamp: dict[int, np.ndarray], image_hw: tuple[int, int] | None):
        self.labels_by_stamp = labels_by_stamp
        self.image_hw = image_hw

    def predict(self, frame):
        from occ_core.frame import OccupancyPrediction

        labels = self.labels_by_stamp[frame.stamp_ns]
        return OccupancyPrediction(labels=labels, scores=np.ones(labels.shape, dtype=np.float32))


def gt_by_sample(root: Path) -> list[np.ndarray]:
    """Occ3D labels of every sample, in sample-table order."""
    from occ_core.formats.occ3d import read_gt

    samples = json.loads((root / "v1.0-mini" / "sample.json").read_text())
    return [read_gt(next((root / "gts").glob(f"*/{s['token']}/labels.npz"))).semantics for s in samples]


def run_sensors(root: Path, size: tuple[int, int], out: Path, total: int, output_timeout: float,
                rate: float = 0.0) -> None:
    """The sensor side, in its own process (as camera and LiDAR drivers are): publish ``total``
    keyframes (CameraInfo + CompressedImage per camera, then the LiDAR sweep 50 ms later), each
    after the previous frame's markers arrived; exit code = frames without output. With ``rate``
    > 0 the frames go out at that rate (stamps 1/rate apart) whatever the node does (a soak:
    exit code 0)."""
    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
    from std_msgs.msg import Header
    from visualization_msgs.msg import MarkerArray

    from occ_ros.conversions import columns_to_pointcloud2

    out.mkdir(exist_ok=True)
    frames, _ = load_keyframes(root, size, out)
    from occ_ros.dds_profile import use_shipped_profile

    use_shipped_profile()  # a sensor driver started by the launch has it too
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    peer = rclpy.create_node("bench_node_sensors", context=ctx)
    img_pub = {c: peer.create_publisher(CompressedImage, f"{PREFIX}/{c}/image", 10) for c in CAMERAS}
    info_pub = {c: peer.create_publisher(CameraInfo, f"{PREFIX}/{c}/camera_info", 10) for c in CAMERAS}
    lidar_pub = peer.create_publisher(PointCloud2, PREFIX + "/lidar", 10)
    got = threading.Semaphore(0)
    # raw=True: nobody here needs the ~100k Points as Python objects (RViz decodes them in C++)
    marker_sub = peer.create_subscription(MarkerArray, PREFIX + "/markers", lambda m: got.release(), 10, raw=True)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(peer)
    threading.Thread(target=ex.spin, daemon=True).start()
    end = time.monotonic() + 30
    while time.monotonic() < end and not (marker_sub.get_publisher_count() and lidar_pub.get_subscription_count()
                                          and all(p.get_subscription_count() for p in (*img_pub.values(),
                                                                                       *info_pub.values()))):
        time.sleep(0.05)

    def stamp(ns):
        return Time(sec=ns // 10**9, nanosec=ns % 10**9)

    def infos(t):
        for c in CAMERAS:
            K = frames[0][2][c]
            info = CameraInfo(width=size[0], height=size[1], distortion_model="plumb_bob", d=[0.0] * 5,
                              k=K.reshape(-1).tolist(), r=np.eye(3).reshape(-1).tolist(),
                              p=np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist())
            info.header = Header(frame_id=c, stamp=stamp(t))
            info_pub[c].publish(info)

    base = frames[0][0]
    infos(base)  # a camera driver's info precedes its stream: the first frame is not skipped for it
    time.sleep(0.5)
    lost = 0
    step = stamp_step_ns(rate)
    start = time.monotonic()
    for i in tqdm(range(total), desc="frames", unit="frame", file=sys.stderr):
        _, jpeg, _, lidar = frames[i % len(frames)]
        t = base + i * step
        if rate > 0:
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
        infos(t)
        for c in CAMERAS:
            msg = CompressedImage(format="jpeg", header=Header(frame_id=c, stamp=stamp(t)))
            msg.data = jpeg[c]
            img_pub[c].publish(msg)
        time.sleep(0.05 if rate <= 0 else min(0.05, 0.5 / rate))
        lidar_pub.publish(columns_to_pointcloud2(lidar, ("x", "y", "z", "intensity", "ring"),
                                                 header=Header(frame_id="LIDAR_TOP", stamp=stamp(t))))
        if rate <= 0 and not got.acquire(timeout=output_timeout):
            lost += 1
    if rate > 0:
        time.sleep(3.0)  # let the node drain what reached it
    ex.shutdown(timeout_sec=5)
    peer.destroy_node()
    rclpy.shutdown(context=ctx)
    sys.stderr.flush()
    os._exit(min(lost, 100))  # no interpreter teardown: the executor's C++ thread can abort it


def stamp_step_ns(rate: float) -> int:
    """Stamp step between frames: 0.5 s (the keyframe rate) in the latency mode, 1/rate in a soak."""
    return int(round(1e9 / rate)) if rate > 0 else 500_000_000


STAGES = ("decode", "preprocess", "model", "postprocess", "publish", "total")


def measure(args, backend: str, tmp: Path, frames, rig_file: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """One measurement: a fresh ``OccupancyNode`` (``backend``) in this process and a sensor process;
    returns the per-stage times (ms, measured frames) and the lines describing the run."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from occ_core.models.config import load_config
    from occ_ros.occupancy_node import OccupancyNode

    total = args.warmup + args.frames
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    overrides = [Parameter("compressed_image_topic", value=PREFIX + "/{camera}/image"),
                 Parameter("camera_info_topic", value=PREFIX + "/{camera}/camera_info"),
                 Parameter("lidar_topic", value=PREFIX + "/lidar"), Parameter("markers_topic", value=PREFIX + "/markers"),
                 Parameter("voxels_topic", value=PREFIX + "/voxels"),
                 Parameter("diagnostics_topic", value=PREFIX + "/diagnostics"),
                 Parameter("rig_file", value=str(rig_file)), Parameter("extrinsics_source", value="rig"),
                 Parameter("sync_slop", value=0.05), Parameter("input_qos", value=args.input_qos)]
    predictor = None
    if args.predictor == "gt":
        gts = gt_by_sample(tmp / "nuscenes")
        image_hw = None if args.full_decode else load_config(REPO / args.model).image_hw
        predictor = GroundTruthReplay({frames[0][0] + i * stamp_step_ns(args.rate): gts[i % len(frames)]
                                       for i in range(args.warmup + args.frames)}, image_hw)
    else:  # the node loads the model on its backend, as occupancy_node does
        overrides += [Parameter("model_config", value=str(REPO / args.model)),
                      Parameter("checkpoint", value=str(REPO / args.checkpoint) if args.checkpoint else ""),
                      Parameter("backend", value=backend)]
    t_load = time.perf_counter()
    node = OccupancyNode(predictor, context=ctx, parameter_overrides=overrides)
    load_s = time.perf_counter() - t_load
    ex = SingleThreadedExecutor(context=ctx)  # what rclpy.spin(node) in occupancy_node's main() uses
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    sensors = subprocess.run([sys.executable, __file__, "--sensors-of", str(tmp), "--frames", str(args.frames),
                              "--warmup", str(args.warmup), "--size", *map(str, args.size),
                              "--output-timeout", str(args.output_timeout), "--rate", str(args.rate)], check=False)
    if not 0 <= sensors.returncode <= 100:
        raise SystemExit(f"bench/node.py: the sensor process failed (exit code {sensors.returncode})")
    lost = sensors.returncode
    timings = [tm for tm in node.timings][args.warmup:]
    counters = node.counters
    lidar_counts = node.input_counts()["lidar"]
    worker_dropped = node.worker.stats().dropped
    ex.shutdown(timeout_sec=5)
    node.destroy_node()
    rclpy.shutdown(context=ctx)

    rows = {name: np.array([getattr(tm, name) for tm in timings]) * 1e3 for name in STAGES}
    rows["total - model"] = rows["total"] - rows["model"]
    rows["decode + total - model"] = rows["decode"] + rows["total - model"]  # all but the model, decode included
    rows["decode + total"] = rows["decode"] + rows["total"]
    what = (f"model {args.model} + {args.checkpoint or 'random init'}, backend {backend} (node start with the model "
            f"load{' and the cached export' if backend != 'torch' else ''}: {load_s:.1f} s)" if args.predictor == "model"
            else f"ground-truth replay (no model; images decoded {'full size' if args.full_decode else 'for ' + args.model})")
    lines = [f"{what}, images {args.size[0]}x{args.size[1]} JPEG q90 x6, "
             f"LiDAR {frames[0][3].shape[0]} points; {len(timings)} frames measured, {lost} without output",
             f"node counters: {total} frames sent, {counters.lidar_msgs} clouds / {counters.image_msgs} images received, "
             f"{counters.synced_frames} synced, {counters.incomplete_frames} incomplete, {counters.published_frames} published"]
    if args.rate > 0:
        uncounted = total - lidar_counts.received - lidar_counts.lost
        lines.append(f"soak at {args.rate:g} Hz, input_qos {args.input_qos}: {total} clouds sent; node received "
                     f"{lidar_counts.received} ({100.0 * (total - lidar_counts.received) / total:.1f} % lost in "
                     f"transport), counted lost {lidar_counts.lost} from stamps, {lidar_counts.transport_lost} by Fast "
                     f"DDS, uncounted {uncounted} by stamps, {total - lidar_counts.received - lidar_counts.transport_lost}"
                     f" by Fast DDS; dropped at the worker {worker_dropped}, at sync {counters.incomplete_frames}")
    vox = np.array([tm.voxels for tm in timings])
    lines.append(f"occupied voxels per frame (voxel cloud points = marker cubes): median "
                 f"{int(np.median(vox)) if vox.size else 0}, of {200 * 200 * 16}")
    return rows, lines


def stage_table(rows: dict[str, np.ndarray]) -> list[str]:
    """The p50/p95 table of one measurement (Markdown)."""
    out = [f"| {'stage':<22} | {'p50 ms':>8} | {'p95 ms':>8} |", f"|{'-' * 24}|{'-' * 10}|{'-' * 10}|"]
    for name, v in rows.items():
        if v.size and name != "decode + total":
            out.append(f"| {name:<22} | {np.percentile(v, 50):8.1f} | {np.percentile(v, 95):8.1f} |")
    return out


def side_by_side(results: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """One row per stage, p50 / p95 ms per backend, and the end-to-end rate bound (Markdown)."""
    head = "| stage | " + " | ".join(f"{b} p50 ms | {b} p95 ms" for b in results) + " |"
    out = [head, "|---|" + "--:|--:|" * len(results)]
    names = [n for n in next(iter(results.values())) if n != "decode + total"]
    for name in names:
        cells = []
        for rows in results.values():
            v = rows[name]
            cells.append(f"{np.percentile(v, 50):.1f} | {np.percentile(v, 95):.1f}" if v.size else "- | -")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for rows in results.values():
        v = rows["decode + total"]
        cells += [f"{1000.0 / np.percentile(v, 50):.2f} Hz" if v.size else "-", ""]
    out.append("| rate, 1000 / p50 of (decode + total) | " + " | ".join(cells) + " |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=30, help="frames measured (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--model", default="config/models/fusion.yaml")
    p.add_argument("--checkpoint", default="config/models/fusion_demo.pt", help="empty: seeded random init")
    p.add_argument("--predictor", choices=("model", "gt"), default="model",
                   help="'gt': replay the ground truth instead of running the model (node overhead on real occupancy)")
    p.add_argument("--backend", nargs="+", choices=("torch", "onnxruntime", "tensorrt"), default=["torch"],
                   help="the node's inference backend(s); several: measured one after the other, then side by side")
    p.add_argument("--size", type=int, nargs=2, default=(1600, 900), metavar=("W", "H"))
    p.add_argument("--full-decode", action="store_true",
                   help="with --predictor gt: decode the JPEGs at full size (not for the model's input)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--output-timeout", type=float, default=10.0,
                   help="seconds the sensors wait for a frame's markers before sending the next (it counts as lost)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="soak: send frames at this rate (Hz) without waiting for outputs, then report every "
                        "cloud sent against what the node received, counted lost and dropped (0: latency mode)")
    p.add_argument("--input-qos", choices=("reliable", "sensor_data"), default="reliable",
                   help="the node's input_qos (sensor_data = the node's default, best effort)")
    p.add_argument("--sensors-of", type=Path, help=argparse.SUPPRESS)  # internal: run the sensor process
    args = p.parse_args(argv)
    total = args.warmup + args.frames
    if args.sensors_of is not None:
        run_sensors(args.sensors_of / "nuscenes", tuple(args.size), args.sensors_of / "sensors", total, args.output_timeout,
                    args.rate)
    backends = list(dict.fromkeys(args.backend)) if args.predictor == "model" else ["torch"]

    os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
    from occ_ros.dds_profile import use_shipped_profile

    print(use_shipped_profile().message, file=sys.stderr)  # as occupancy_node's main() does
    import torch

    from occ_core.deploy.runtime import check_backend

    for b in backends:  # a missing backend: its named error before anything runs
        check_backend(b)
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    print("generating a synthetic dataroot ...", file=sys.stderr)
    generate(SynthConfig(scenes=2, samples_per_scene=3, seed=0, image_size=(320, 180), sweeps=False), tmp / "nuscenes",
             progress=True)
    frames, rig_file = load_keyframes(tmp / "nuscenes", tuple(args.size), tmp)
    load_start = os.getloadavg()
    results, lines = {}, {}
    for b in backends:
        results[b], lines[b] = measure(args, b, tmp, frames, rig_file)
    load_end = os.getloadavg()

    print(f"\nbench/node.py  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  {cpu_model()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); load average "
          f"(1/5/15 min) {' '.join(f'{x:.1f}' for x in load_start)} at the start, "
          f"{' '.join(f'{x:.1f}' for x in load_end)} at the end")
    for b in backends:
        print("\n" + "\n".join(lines[b]) + "\n")
        print("\n".join(stage_table(results[b])))
    if len(backends) > 1:
        print("\nside by side (ms):\n")
        print("\n".join(side_by_side(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
