"""Benchmark: synthetic world generation (occ-synth) at the default settings.

Generates 2 scenes x 20 keyframes with 20 Hz LiDAR sweeps at the default image size (640x360)
into a temporary folder and prints a table of elapsed time and per-stage seconds (summed over
scenes, i.e. over worker processes), with the date and the machine.

    .venv/bin/python bench/synthetic.py [--scenes 2] [--samples 20] [--image-size 640x360] [--workers N]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.data.synthetic import SynthConfig, generate  # noqa: E402
from occ_core.data.synthetic.cli import _image_size  # noqa: E402
from _machine import cpu_model  # noqa: E402  (bench/ is on sys.path when run as a script)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=2)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--image-size", type=_image_size, default=(640, 360))
    p.add_argument("--workers", type=int, default=None, help="default: one per core")
    p.add_argument("--no-sweeps", action="store_true")
    a = p.parse_args()
    cfg = SynthConfig(scenes=a.scenes, samples_per_scene=a.samples, image_size=a.image_size, sweeps=not a.no_sweeps)
    with tempfile.TemporaryDirectory(prefix="occ-synth-bench-") as d:
        t0 = time.perf_counter()
        res = generate(cfg, Path(d) / "data", progress=False, workers=a.workers)
        wall = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (Path(d) / "data").rglob("*") if f.is_file())
    w, h = cfg.image_size
    n_lidar = res.sample_data - res.samples * 6  # all sample_data but the keyframe images (no camera sweeps here)
    workers = a.workers or min(cfg.scenes, os.cpu_count() or 1)
    print(f"# occ-synth benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} x {cpu_model()}, Python {platform.python_version()}")
    print(f"# {cfg.scenes} scenes x {cfg.samples_per_scene} keyframes, sweeps={cfg.sweeps}, {w}x{h} images, "
          f"{workers} worker process(es)")
    print()
    print("| stage | seconds (summed over scenes) | per item |")
    print("|---|---:|---:|")
    t = res.times
    print(f"| world layout | {t.world:.1f} | {t.world / cfg.scenes * 1000:.0f} ms / scene |")
    print(f"| LiDAR ray casting ({n_lidar} scans) | {t.lidar:.1f} | {t.lidar / n_lidar * 1000:.0f} ms / scan |")
    print(f"| camera rendering ({res.samples * 6} images) | {t.cameras:.1f} | "
          f"{t.cameras / (res.samples * 6) * 1000:.0f} ms / image |")
    print(f"| ground truth + annotations ({res.samples} keyframes) | {t.groundtruth:.1f} | "
          f"{t.groundtruth / res.samples * 1000:.0f} ms / keyframe |")
    print(f"| encoding + writing | {t.write:.1f} | |")
    print(f"| **elapsed (wall clock)** | **{wall:.1f}** | {size / 1e6:.0f} MB written |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
