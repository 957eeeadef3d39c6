"""Training and inference throughput of every model config (samples/s), CPU (and CUDA if present).

Run from the repository root::

    .venv/bin/python bench/train.py --dataroot data/synthetic [--steps 4] [--threads 2] [--configs lidar,fusion]

For each ``config/models/*.yaml``: the last keyframe of the first training scene goes through
the data pipeline once (not timed); then ``--steps`` training steps (forward, all losses,
backward, clipping, AdamW) on that batch of one and ``--steps`` ``OccupancyPredictor.predict``
calls on its SensorFrame (preprocessing, forward, argmax/softmax, copy to numpy) are timed
after one untimed warm-up each. Samples/s = 1 / median seconds per call; the minimum is printed
too, since other processes on a shared machine inflate the wall time (the load average is
printed). The configs run at their shipped sizes: the Occ3D grid 200 x 200 x 16 and the image
size of the config.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from statistics import median

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.data.nuscenes_dataset import NuScenesOccDataset, collate, scene_splits  # noqa: E402
from occ_core.models.config import load_config  # noqa: E402
from occ_core.models.predictor import OccupancyPredictor  # noqa: E402
from occ_core.training.train import Trainer  # noqa: E402
from _machine import cpu_model, timed  # noqa: E402  (bench/ is on sys.path when run as a script)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config" / "models"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", type=Path, default=Path("data/synthetic"))
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    p.add_argument("--configs", default="", help="comma-separated config names (default: all)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.configs.split(",") if n] or sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    split = scene_splits(args.dataroot)["train"]
    rows = []
    for name in tqdm(names, desc="configs"):
        cfg = load_config(CONFIG_DIR / f"{name}.yaml")
        sweeps = cfg.lidar.max_sweeps if cfg.lidar is not None else 1
        ds = NuScenesOccDataset(args.dataroot, split[:1], cfg.grid_spec, sweeps, cfg.flow, image_hw=cfg.image_hw)
        sample = ds[len(ds) - 1]  # a later keyframe: its earlier LiDAR sweeps exist
        batch = collate([sample], cfg)
        for dev in devices:
            tr = Trainer(cfg, dev, torch.ones(cfg.num_classes))
            train_s = timed(lambda: tr.train_step(batch), args.steps, dev)
            pred = OccupancyPredictor(tr.model, cfg, dev)
            infer_s = timed(lambda: pred.predict(sample.frame), args.steps, dev)
            params = sum(q.numel() for q in tr.model.parameters())
            rows.append((name, dev.type, params, median(train_s), min(train_s), median(infer_s), min(infer_s),
                         len(sample.frame.points)))
    print(f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    print(f"batch 1, Occ3D grid 200x200x16, {args.steps} timed calls after 1 warm-up; LiDAR points per frame in 'points'\n")
    head = f"{'config':16s} {'device':6s} {'params':>8s} {'points':>7s} {'train samples/s':>16s} {'(best)':>7s} {'infer samples/s':>16s} {'(best)':>7s}"
    print(head)
    print("-" * len(head))
    for name, dev, params, tm, tb, im, ib, npts in rows:
        print(f"{name:16s} {dev:6s} {params:8d} {npts:7d} {1 / tm:16.3f} {1 / tb:7.3f} {1 / im:16.3f} {1 / ib:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
