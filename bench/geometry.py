"""Where geometric IoU is won and lost: occupied/free precision and recall per height layer.

Run from the repository root::

    .venv/bin/python bench/geometry.py --train-root data/bench/train --eval-root data/bench/heldout \\
        --model camera=config/models/camera.yaml:config/models/camera_demo.pt [--every 4]

Geometric IoU (occupied vs free, inside the camera mask) pools every voxel, so a model can lose to
the per-voxel prior on it while beating it on mIoU. This splits the pooled counts by height layer
(the grid's z index, base_link). For each ``--model name=config:checkpoint`` and for the per-voxel
prior fitted on the train split of ``--train-root`` (it uses 3D labels), every ``--every``-th val
keyframe of ``--eval-root`` is predicted and compared with its label: per layer, the GT-occupied
voxels, the predicted-occupied ones, precision and recall; then a summary of the layers at and
below ``--ground-top`` metres ("ground") against the layers above it. A model beats the prior's
geometric IoU only if what it predicts above the ground is right often enough to pay for what it
adds wrong: the line above the table gives that break-even precision, from the prior's own counts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.classes import OCC3D_FREE  # noqa: E402
from occ_core.data.nuscenes_dataset import NuScenesOccDataset, label_path, scene_splits  # noqa: E402
from occ_core.formats import occ3d  # noqa: E402
from occ_core.grid import OCC3D  # noqa: E402
from occ_core.models.predictor import load_predictor  # noqa: E402
from _heldout import add_heldout_args, fit_prior, parse_models  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402



def layer_counts(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray, free: int = OCC3D_FREE) -> np.ndarray:
    """Per z layer ``[gt_occupied, pred_occupied, true_positive]`` inside ``mask``.

    Args:
        gt, pred: (X, Y, Z) labels; ``free`` marks empty voxels.
        mask: (X, Y, Z) bool, the voxels that count (Occ3D's camera mask).
    Returns:
        (Z, 3) int64.
    """
    g = (gt != free) & mask
    p = (pred != free) & mask
    return np.stack([g.sum((0, 1)), p.sum((0, 1)), (g & p).sum((0, 1))], 1).astype(np.int64)


def summary(counts: np.ndarray, ground_layers: int) -> dict[str, float]:
    """IoU over all layers, and precision / recall / IoU of the ground layers and of those above.

    ``counts``: (Z, 3) from :func:`layer_counts`, summed over frames. Ratios with a zero
    denominator are NaN."""
    def ratios(c: np.ndarray) -> tuple[float, float, float]:
        g, p, tp = (float(v) for v in c.sum(0))
        div = lambda a, b: a / b if b else float("nan")  # noqa: E731
        return div(tp, p), div(tp, g), div(tp, g + p - tp)

    out = {"IoU": ratios(counts)[2]}
    for name, part in (("ground", counts[:ground_layers]), ("above", counts[ground_layers:])):
        prec, rec, iou = ratios(part)
        out |= {f"{name}_precision": prec, f"{name}_recall": rec, f"{name}_IoU": iou}
    return out


def break_even_precision(prior_counts: np.ndarray) -> float:
    """The precision above which an extra predicted-occupied voxel raises the prior's geometric IoU.

    Adding ``n`` predictions of precision ``q`` to the prior's ``TP / (G + P - TP)`` moves it to
    ``(TP + qn) / (G + P - TP + (1 - q)n)``; that grows iff ``q > IoU / (1 + IoU)``.
    """
    g, p, tp = (float(v) for v in prior_counts.sum(0))
    iou = tp / (g + p - tp)
    return iou / (1 + iou)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_heldout_args(p)
    p.add_argument("--ground-top", type=float, default=0.2, help="metres (base_link z): layers whose top is at or below it are ground")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    spec = OCC3D
    tops = spec.range_min[2] + spec.voxel_size[2] * (np.arange(spec.dims[2]) + 1)
    ground_layers = int((tops <= a.ground_top + 1e-6).sum())
    models = [(name, load_predictor(cfg_path, ckpt)) for name, cfg_path, ckpt in parse_models(a.model)]
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {a.threads} threads, load {load_average()}")
    prior = fit_prior(a.train_root)
    val_scenes = scene_splits(a.eval_root)["val"]
    base = NuScenesOccDataset(a.eval_root, val_scenes, spec)
    samples = base.samples[::a.every]
    counts = {"per-voxel prior": np.zeros((spec.dims[2], 3), np.int64)} | {n: np.zeros((spec.dims[2], 3), np.int64) for n, _ in models}
    datasets = {n: NuScenesOccDataset(a.eval_root, val_scenes, spec, nusc=base.nusc, image_hw=m.cfg.image_hw) for n, m in models}
    for s, t in samples:
        g = occ3d.read_gt(label_path(a.eval_root, s, t))
        mask = g.mask_camera.astype(bool)
        counts["per-voxel prior"] += layer_counts(g.semantics, prior, mask)
        for n, m in models:
            m.reset()  # single frames (temporal models see no history here)
            counts[n] += layer_counts(g.semantics, m.predict(datasets[n].load_frame(t)).labels, mask)
    print(f"# eval: {len(samples)} val keyframes of {a.eval_root} (every {a.every}), camera mask; "
          f"ground = the {ground_layers} layers with top <= {a.ground_top} m")
    q = break_even_precision(counts["per-voxel prior"])
    print(f"# a prediction added to the prior raises its geometric IoU only above precision {100 * q:.1f} %\n")
    print("| model | IoU % | ground precision % | ground recall % | above precision % | above recall % | above IoU % |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    rows = {}
    for n, c in counts.items():
        r = rows[n] = summary(c, ground_layers)
        f = lambda k: f"{100 * r[k]:.2f}" if np.isfinite(r[k]) else "–"  # noqa: E731
        print(f"| {n} | {f('IoU')} | {f('ground_precision')} | {f('ground_recall')} | {f('above_precision')} | "
              f"{f('above_recall')} | {f('above_IoU')} |")
    print("\n| layer top m | GT occupied | " + " | ".join(f"{n} pred / prec %" for n in counts) + " |")
    print("|--:|--:|" + "--:|" * len(counts))
    for z in range(spec.dims[2]):
        gz = counts["per-voxel prior"][z, 0]
        if gz == 0:
            continue
        cells = [f"{c[z, 1]} / {100 * c[z, 2] / c[z, 1]:.1f}" if c[z, 1] else "0 / –" for c in counts.values()]
        print(f"| {tops[z]:.1f} | {gz} | " + " | ".join(cells) + " |")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "layers": {n: c.tolist() for n, c in counts.items()},
                                      "break_even_precision": q}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
