"""What the held-out scoring scripts (bench/geometry.py, bench/occnerf.py) share: their command
line (a training world for the prior, an unseen world to score, models as name=config:checkpoint)
and the per-voxel prior fit on the training world (not a benchmark itself)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from occ_core.data.nuscenes_dataset import NuScenesOccDataset, label_path, scene_splits
from occ_core.cli import positive_int
from occ_core.errors import OccDataError
from occ_core.formats import occ3d
from occ_core.grid import OCC3D
from occ_core.models.prior import PerVoxelPrior


def add_heldout_args(p: argparse.ArgumentParser) -> None:
    """--train-root, --eval-root, --model (repeatable), --every, --threads, --json."""
    p.add_argument("--train-root", type=Path, required=True, help="world whose train split fits the prior")
    p.add_argument("--eval-root", type=Path, required=True, help="unseen world whose val split is scored")
    p.add_argument("--model", action="append", default=[], help="name=config.yaml:checkpoint.pt (repeatable)")
    p.add_argument("--every", type=positive_int, default=1, help="score every k-th val keyframe")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)


def parse_models(specs: list[str]) -> list[tuple[str, str, str]]:
    """``name=config.yaml:checkpoint.pt`` -> (name, config, checkpoint); OccDataError names a bad one."""
    out = []
    for text in specs:
        name, _, rest = text.partition("=")
        cfg_path, _, ckpt = rest.partition(":")
        if not (name and cfg_path and ckpt):
            raise OccDataError(f"--model {text!r}: expected name=config.yaml:checkpoint.pt")
        out.append((name, cfg_path, ckpt))
    return out


def fit_prior(train_root: Path) -> np.ndarray:
    """The per-voxel prior's (X, Y, Z) labels, fit on the 3D labels of ``train_root``'s train split."""
    train = NuScenesOccDataset(train_root, scene_splits(train_root)["train"], OCC3D)
    return PerVoxelPrior.fit(occ3d.read_gt(label_path(train_root, s, t)).semantics for s, t in train.samples).predict()
