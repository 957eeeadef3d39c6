"""Held-out scores of rendering-supervised models (OccNeRF, RenderOcc-style LSS) against the
per-voxel prior, on the val split of an unseen world.

Run from the repository root::

    .venv/bin/python bench/occnerf.py --train-root data/occnerf_world0 --eval-root data/occnerf_world1 \\
        --model occnerf=config/models/occnerf.yaml:config/models/occnerf_demo.pt \\
        --model camera=config/models/camera.yaml:work_dirs/camera/model.pt

For each ``--model name=config:checkpoint``: every (``--every``-th) val keyframe of ``--eval-root`` goes through
the predictor (Occ3D mIoU and geometric IoU inside the camera mask, one confusion matrix over
the split) and, for models with a ``render`` section, its rendered depth of every camera image
is scored against ``depth/`` (scale-aware and median-scaled, :mod:`occ_core.eval.depth`). The
per-voxel prior is fitted on the train split of ``--train-root`` (it uses 3D labels) and scored
the same way. Prints one table; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.data.nuscenes_dataset import NuScenesOccDataset, label_path, scene_splits  # noqa: E402
from occ_core.eval.occupancy import occ3d_miou  # noqa: E402
from occ_core.formats import occ3d  # noqa: E402
from occ_core.grid import OCC3D  # noqa: E402
from occ_core.models.predictor import load_predictor  # noqa: E402
from occ_core.training.render_eval import label_free_threshold, validate_render  # noqa: E402
from occ_core.training.train import LABEL_FREE_EVERY  # noqa: E402
from _heldout import add_heldout_args, fit_prior, parse_models  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_heldout_args(p)
    p.add_argument("--label-free-threshold", action="store_true",
                   help="also score each model trained by rendering alone at the occupancy threshold chosen "
                        "without 3D labels on --train-root (occ_core.training.render_eval.label_free_threshold)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"# {datetime.date.today()} {cpu_model()}, {a.threads} threads, load {load_average()}")
    val_scenes = scene_splits(a.eval_root)["val"]
    ds = NuScenesOccDataset(a.eval_root, val_scenes, OCC3D)
    rows = {}
    prior = fit_prior(a.train_root)
    keep = list(range(0, len(ds), a.every))
    m = occ3d_miou("camera")
    for s, t in (ds.samples[i] for i in keep):
        g = occ3d.read_gt(label_path(a.eval_root, s, t))
        m.update(g.semantics, prior, g.mask_camera)
    rows["per-voxel prior (3D labels)"] = {"mIoU": m.miou(), "IoU_geometric": m.geometric_iou()}
    for name, cfg_path, ckpt in parse_models(a.model):
        pred = load_predictor(cfg_path, ckpt)
        ds_m = NuScenesOccDataset(a.eval_root, val_scenes, OCC3D, nusc=ds.nusc, image_hw=pred.cfg.image_hw)
        if pred.cfg.render is not None:
            rows[name] = validate_render(pred.model, pred.cfg, ds_m, keep)
            if a.label_free_threshold and pred.cfg.rendering_only:
                train = NuScenesOccDataset(a.train_root, scene_splits(a.train_root)["train"], OCC3D,
                                           image_hw=pred.cfg.image_hw)
                tau, stats = label_free_threshold(pred.model, pred.cfg, train, list(range(0, len(train), LABEL_FREE_EVERY)))
                cfg = dataclasses.replace(pred.cfg, occ_threshold=tau)
                pred.model.occ_threshold = tau
                print(f"{name}: label-free occ_threshold {tau:.4f} ({stats})", flush=True)
                occ = validate_render(pred.model, cfg, ds_m, keep, with_depth=False)  # depth: as above
                rows[f"{name}, label-free threshold {tau:.3f}"] = dict(
                    rows[name], **{k: occ[k] for k in ("mIoU", "IoU_geometric", "per_class_IoU") if k in occ},
                    occ_threshold=tau, **stats)
        else:
            mm = occ3d_miou("camera")
            for s, t in (ds_m.samples[i] for i in keep):
                g = occ3d.read_gt(label_path(a.eval_root, s, t))
                mm.update(g.semantics, pred.predict(ds_m.load_frame(t)).labels, g.mask_camera)
            rows[name] = {"mIoU": mm.miou(), "IoU_geometric": mm.geometric_iou()}
    cols = ["mIoU", "IoU_geometric", "abs_rel", "sq_rel", "rmse", "a1", "abs_rel_median_scaled", "a1_median_scaled"]
    print(f"eval: val {', '.join(val_scenes)} of {a.eval_root} ({len(keep)} of {len(ds)} keyframes, every {a.every}), camera mask")
    print("| model | " + " | ".join(cols) + " |")
    print("| --- |" + " ---: |" * len(cols))
    for name, r in rows.items():
        def f(k):
            v = r.get(k)
            if v is None or (isinstance(v, float) and not np.isfinite(v)):
                return "–"
            return f"{100 * v:.2f}" if k in ("mIoU", "IoU_geometric") else f"{v:.3f}"
        print(f"| {name} | " + " | ".join(f(k) for k in cols) + " |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
