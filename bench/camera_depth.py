"""How well the LSS depth head of a camera model predicts LiDAR depth (issue 14's LSS study).

Run from the repository root::

    .venv/bin/python bench/camera_depth.py --config config/models/camera.yaml \\
        --checkpoint work_dirs/.../model.pt --dataroot data/bench/heldout [--max-samples 20]

For every keyframe of the ``--split`` (default ``val``) the model runs as in training (the same preprocessing,
:func:`occ_core.data.nuscenes_dataset.collate`) and its depth distributions, (B*N, D, h, w) per
feature pixel, are compared with the depth targets the training loss uses
(:func:`occ_core.models.lss.lidar_depth_targets`: the nearest LiDAR return in each feature pixel,
as a bin index). Printed, over the feature pixels that have a target:

- ``bin acc``: the argmax bin is the target bin; ``±2 bins``: within two bins;
- ``abs rel (E)`` / ``abs rel (argmax)`` and ``δ<1.25 (E)``: |d - d*| / d* of the expected depth
  sum_k p_k d_k and of the argmax bin's centre, d* the target bin's centre, over all pixels
  pooled (:func:`occ_core.eval.depth.frame_depth_errors`);
- ``entropy``: mean entropy of the distribution in nats (ln D for a uniform one);
- the same abs rel and bin accuracy for a **row prior**: every pixel of a feature row of a camera
  predicts the median target depth of that row over the whole split. A head that learnt only the
  ground plane's depth-per-row does about as well as this prior; one that sees objects beats it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.data.nuscenes_dataset import NuScenesOccDataset, collate, scene_splits  # noqa: E402
from occ_core.eval.depth import DEPTH_METRICS, frame_depth_errors  # noqa: E402
from occ_core.models.config import load_config  # noqa: E402
from occ_core.models.lss import depth_bin_centres, lidar_depth_targets  # noqa: E402
from occ_core.models.occnet import build_model  # noqa: E402
from occ_core.models.predictor import load_checkpoint_state  # noqa: E402


def depth_head_scores(probs: torch.Tensor, targets: torch.Tensor, centres: torch.Tensor) -> dict[str, float]:
    """Scores of depth distributions against bin targets.

    Args:
        probs: (M, D) distributions of the M feature pixels with a target.
        targets: (M,) int64 target bins.
        centres: (D,) bin centres in metres.

    Returns:
        bin accuracy, within-2-bins accuracy, abs rel of the expected and the argmax depth,
        δ < 1.25 of the expected depth, mean entropy (nats).
    """
    d_true = centres[targets].double().numpy()
    arg = probs.argmax(1)
    expected = (probs.double() @ centres.double()).numpy()
    ent = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    lo, hi = float(centres.min()) / 2, float(centres.max()) * 2  # no clipping of bin-centre depths
    e_exp = frame_depth_errors(d_true, expected, lo, hi)
    e_arg = frame_depth_errors(d_true, centres[arg].double().numpy(), lo, hi)
    i_rel, i_a1 = DEPTH_METRICS.index("abs_rel"), DEPTH_METRICS.index("a1")
    return {"bin_acc": float((arg == targets).float().mean()),
            "within2": float(((arg - targets).abs() <= 2).float().mean()),
            "absrel_expected": float(e_exp[i_rel]), "absrel_argmax": float(e_arg[i_rel]),
            "a1_expected": float(e_exp[i_a1]), "entropy": float(ent.mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", default=None, help="occ-train model.pt (none: the seeded random init)")
    p.add_argument("--dataroot", required=True)
    p.add_argument("--split", default="val", choices=("train", "val"), help="the split scored (default val)")
    p.add_argument("--max-samples", type=int, default=0, help="the first N keyframes of the split (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if cfg.lss is None:
        raise SystemExit(f"{args.config}: no lss section: this scores an LSS depth head")
    model = build_model(cfg)
    if args.checkpoint:
        model.load_state_dict(load_checkpoint_state(args.checkpoint)["model"])
    model.eval()
    root = Path(args.dataroot)
    ds = NuScenesOccDataset(root, scene_splits(root)[args.split], cfg.grid_spec, 1, False, image_hw=cfg.image_hw)
    n = len(ds) if args.max_samples <= 0 else min(args.max_samples, len(ds))
    if n == 0:
        raise SystemExit(f"bench/camera_depth.py: --dataroot {root}: the {args.split} split holds no keyframes")
    centres = depth_bin_centres(cfg.lss)
    all_probs, all_targets, all_rows = [], [], []
    with torch.no_grad():
        for i in range(n):
            batch = collate([ds[i]], cfg)
            inp = batch.inputs
            out = model(inp)
            probs = out.depth_probs  # (N, D, h, w)
            h, w = probs.shape[-2:]
            tg = lidar_depth_targets(inp.points, inp.intrinsics, inp.T_base_from_cam, tuple(inp.images.shape[-2:]),
                                     (h, w), cfg.lss)  # (N, h, w)
            ok = tg >= 0
            cam_row = (torch.arange(tg.shape[0])[:, None, None] * h + torch.arange(h)[None, :, None]).expand_as(tg)
            all_probs.append(probs.permute(0, 2, 3, 1)[ok])
            all_targets.append(tg[ok])
            all_rows.append(cam_row[ok])
    probs, targets, rows = torch.cat(all_probs), torch.cat(all_targets), torch.cat(all_rows)
    model_s = depth_head_scores(probs, targets, centres)
    # row prior: the median target bin of each (camera, feature row) over the split
    prior_bins = torch.empty_like(targets)
    for r in rows.unique():
        sel = rows == r
        prior_bins[sel] = targets[sel].median()
    prior_s = depth_head_scores(torch.nn.functional.one_hot(prior_bins, centres.numel()).float(), targets, centres)
    print(f"# {args.config} {args.checkpoint or '(random init)'} on {n} {args.split} keyframes of {root}; "
          f"{targets.numel()} feature pixels with LiDAR depth; feature map {h}x{w}; D = {centres.numel()} "
          f"(uniform entropy {math.log(centres.numel()):.2f})\n")
    print("| depth | bin acc | ±2 bins | abs rel (E) | abs rel (argmax) | δ<1.25 (E) | entropy |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name, s in (("depth head", model_s), ("row prior", prior_s)):
        print(f"| {name} | {s['bin_acc']:.3f} | {s['within2']:.3f} | {s['absrel_expected']:.3f} | "
              f"{s['absrel_argmax']:.3f} | {s['a1_expected']:.3f} | {s['entropy']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
