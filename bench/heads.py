"""FlowHead on a BEV input: its 2D path against the 3x3x3 volume path, side by side (CPU).

Run from the repository root::

    .venv/bin/python bench/heads.py [--dataroot data/bench/train] [--repeats 5] [--threads 2]

``FlowHead.forward`` runs a BEV input (Z' = 1, the HBEVOcc and channel-to-height models) as 2D
convolutions and copies the flow along z; ``FlowHead.forward_volume`` is the general 3x3x3 path
it replaces there (the same values: ``test_models.py``). Timed, alternating the two paths in one
run (median and minimum wall ms of ``--repeats`` calls after one warm-up each):

* the head alone at hbevocc's size, (1, C, 100, 100, 1) -> (1, 200, 200, 16, 2), C = 64
  (``hbevocc_flow`` / ``hbevocc_temporal``) and 96 (``hbevocc.flow_stack_dilations``): forward
  without gradient (inference, and the previous frames a temporal model's training step runs)
  and forward + backward of a sum;
* the whole model, ``--configs`` (default ``hbevocc_flow``): one training step of ``Trainer``
  (forward, losses, backward, AdamW) and one forward without gradient, on the last keyframe of
  the dataroot's first training scene, random initial weights.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from statistics import median

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.data.nuscenes_dataset import NuScenesOccDataset, collate, scene_splits  # noqa: E402
from occ_core.models.config import load_config  # noqa: E402
from occ_core.models.heads import FlowHead  # noqa: E402
from occ_core.training.train import Trainer  # noqa: E402
from _machine import cpu_model, load_average, timed  # noqa: E402  (bench/ is on sys.path when run as a script)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config" / "models"
BEV_PATH = FlowHead.forward


def use_path(name: str) -> None:
    """Make every FlowHead run the ``"bev"`` (shipped) or the ``"volume"`` path."""
    FlowHead.forward = BEV_PATH if name == "bev" else FlowHead.forward_volume


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", type=Path, default=Path("data/bench/train"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--configs", default="hbevocc_flow", help="comma-separated flow configs for the model rows")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []  # (case, path, median ms, min ms)

    def case(name: str, fn) -> None:
        for path in ("volume", "bev"):
            use_path(path)
            s = timed(fn, args.repeats, torch.device("cpu"))
            rows.append((name, path, median(s) * 1e3, min(s) * 1e3))

    gen = torch.Generator().manual_seed(0)
    for C in (64, 96):
        head = FlowHead(C, (200, 200, 16))
        x = torch.randn(1, C, 100, 100, 1, generator=gen)

        def forward_no_grad():
            with torch.no_grad():
                head(x)

        def forward_backward():
            head.zero_grad()
            head(x.requires_grad_()).sum().backward()

        head.eval()
        case(f"head C={C}, forward, no grad (eval)", forward_no_grad)
        head.train()
        case(f"head C={C}, forward + backward (train)", forward_backward)

    split = scene_splits(args.dataroot)["train"]
    for name in [n for n in args.configs.split(",") if n]:
        cfg = load_config(CONFIG_DIR / f"{name}.yaml")
        if not cfg.flow:
            raise SystemExit(f"bench/heads.py: --configs {name}: not a flow config (flow: false)")
        ds = NuScenesOccDataset(args.dataroot, split[:1], cfg.grid_spec, 1, cfg.flow, image_hw=cfg.image_hw)
        batch = collate([ds[len(ds) - 1]], cfg)
        trainer = Trainer(cfg, torch.device("cpu"), torch.ones(cfg.num_classes))
        case(f"{name}, training step", lambda: trainer.train_step(batch))
        trainer.model.eval()

        def model_no_grad():
            with torch.no_grad():
                trainer.model(batch.inputs)

        case(f"{name}, forward, no grad (eval)", model_no_grad)
        trainer.model.train()
    use_path("bev")

    print(f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load_average()}")
    print(f"{args.repeats} timed calls after 1 warm-up per path; the two paths alternate case by case\n")
    print("| case | volume path median (min) ms | BEV path median (min) ms | volume / BEV (medians) |")
    print("|---|--:|--:|--:|")
    for i in range(0, len(rows), 2):
        (name, _, vm, vb), (_, _, bm, bb) = rows[i], rows[i + 1]
        print(f"| {name} | {vm:.1f} ({vb:.1f}) | {bm:.1f} ({bb:.1f}) | {vm / bm:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
