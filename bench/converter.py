"""Benchmark of the nuScenes -> rosbag2 converter (``occ-nusc2bag``) and of the bag player's read path.

Run from the repository root: ``.venv/bin/python bench/converter.py [--dataroot DIR] [--repeats N]``.
Without ``--dataroot`` a synthetic world (2 scenes x 10 keyframes, 640x360 images, 20 Hz LiDAR
sweeps; generated once into a temporary folder, not timed) is converted.

Cases (median of repeats; samples = keyframes, MB = bytes of the input files read (JPEG, .pcd.bin)
per second, and the size of the bag written):
* MCAP and sqlite3, every sample_data (keyframes + sweeps) and keyframes only;
* reading the MCAP back as the player does (rosbags raw CDR, no deserialization), against
  deserializing every message with rosbags (what a generic rosbags -> rclpy field copy would pay
  before even building rclpy objects).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_ros.bag.nusc2bag import ConvertConfig, convert  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402  (bench/ is on sys.path when run as a script)


def _bag_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def bench_convert(root: Path, work: Path, storage: str, keyframes_only: bool, repeats: int) -> tuple[float, object, int]:
    times, res, size = [], None, 0
    for r in range(repeats):
        out = work / f"bag_{storage}_{int(keyframes_only)}_{r}"
        t0 = time.perf_counter()
        res = convert(ConvertConfig(root, out, storage=storage, keyframes_only=keyframes_only, progress=False))
        times.append(time.perf_counter() - t0)
        size = _bag_bytes(out)
        if r < repeats - 1:
            shutil.rmtree(out)
    return median(times), res, size


def bench_read(bag: Path, deserialize: bool, repeats: int) -> tuple[float, int]:
    from rosbags.highlevel import AnyReader

    times, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        with AnyReader([bag]) as reader:
            n = 0
            for conn, _t, raw in reader.messages():
                if deserialize:
                    reader.deserialize(raw, conn.msgtype)
                n += 1
        times.append(time.perf_counter() - t0)
    return median(times), n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", type=Path, help="nuScenes-format dataroot (default: a generated synthetic world)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_converter_") as tmp:
        work = Path(tmp)
        root = args.dataroot
        if root is None:
            from occ_core.data.synthetic import SynthConfig, generate

            root = work / "world"
            print("generating the synthetic world (2 scenes x 10 keyframes, 640x360, sweeps; not timed)")
            generate(SynthConfig(scenes=2, samples_per_scene=10, seed=0, image_size=(640, 360), sweeps=True), root)
        rows = []
        for storage in ("mcap", "sqlite3"):
            for kf in (False, True):
                s, res, size = bench_convert(root, work, storage, kf, args.repeats)
                msgs = sum(res.counts.values())
                rows.append((f"convert {storage}, {'keyframes only' if kf else 'all sample_data'}", s, res.samples / s,
                             res.bytes_in / 1e6 / s, msgs / s, size / 1e6))
        bag = next(work.glob("bag_mcap_0_*"))
        for deser in (False, True):
            s, n = bench_read(bag, deser, args.repeats)
            rows.append((f"read mcap, {'deserialize (rosbags)' if deser else 'raw CDR (player path)'}", s, float("nan"),
                         _bag_bytes(bag) / 1e6 / s, n / s, _bag_bytes(bag) / 1e6))
    print(f"\ndate {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, "
          f"{os.cpu_count()} CPUs, load {load_average()}, dataroot {args.dataroot or 'synthetic 2x10 640x360'}, "
          f"median of {args.repeats}")
    print(f"| {'case':<42} | {'s':>7} | {'samples/s':>9} | {'MB/s':>7} | {'msgs/s':>8} | {'bag MB':>7} |")
    print(f"|{'-' * 44}|{'-' * 9}|{'-' * 11}|{'-' * 9}|{'-' * 10}|{'-' * 9}|")
    for name, s, sps, mbs, mps, mb in rows:
        sps_t = "-" if sps != sps else f"{sps:.1f}"
        print(f"| {name:<42} | {s:7.2f} | {sps_t:>9} | {mbs:7.1f} | {mps:8.0f} | {mb:7.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
