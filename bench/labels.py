"""Benchmark: occ-label against exact ground truth (issue 13, item 5).

Generates a synthetic world of a seed the shipped model never trained on (seed 7 by default;
the shipped model trains on seed 0), labels every keyframe with several settings, and compares
the labels with the world's analytic Occ3D ground truth inside the analytic ``mask_camera``:

- IoU (geometric) and mIoU (Occ3D protocol, one confusion matrix over all keyframes);
- trail voxels: voxels of a dynamic class (the 8 OpenOcc dynamic classes) whose centre lies
  outside every keyframe box grown by half a voxel diagonal, over the whole grid, as a share
  of all dynamic-class voxels (the analytic GT's own share is printed as a check);
- seconds per keyframe per core: one process, scene loading and split included.

    .venv/bin/python bench/labels.py [--scenes 2] [--samples 20] [--seed 7] [--keep DIR]
        [--variants keyframes,sweeps,boxes_nofill,default,poisson,carving]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.data.synthetic import SynthConfig, generate  # noqa: E402
from occ_core.eval.occupancy import occ3d_miou  # noqa: E402
from occ_core.formats import occ3d  # noqa: E402
from occ_core.geometry import invert_transform  # noqa: E402
from occ_core.labels import LabelConfig  # noqa: E402
from occ_core.labels.measures import trail_counts  # noqa: E402
from occ_core.labels.pipeline import label_keyframe, prepare_scene  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402  (bench/ is on sys.path when run as a script)

VARIANTS: dict[str, tuple[str, dict]] = {
    "keyframes": ("keyframes only (no sweeps, no boxes, no carving)", dict(use_sweeps=False, use_boxes=False, carve="off")),
    "sweeps": ("+ sweeps (no boxes, no carving)", dict(use_boxes=False, carve="off")),
    "boxes_nofill": ("+ dynamic alignment (boxes), no ground fill", dict(ground_fill=0.0)),
    "default": ("+ ground fill = **default settings**", {}),
    "poisson": ("default + Poisson densification", dict(densify="poisson")),
    "carving": ("without boxes: carving only", dict(use_boxes=False, carve="on")),
}


def run_variant(nusc, root: Path, cfg: LabelConfig) -> dict:
    met = occ3d_miou("camera")
    out_n = dyn_n = gt_out = gt_dyn = 0
    frames = 0
    t0 = time.perf_counter()
    for sc in sorted(s["name"] for s in nusc.scene):
        prep = prepare_scene(nusc, root, sc, cfg)
        for k, i in enumerate(prep.scene.keyframes):
            sw = prep.scene.sweeps[i]
            lab = label_keyframe(prep, k, cfg)
            gt = occ3d.read_gt(root / "gts" / sc / sw.sample_token / "labels.npz")
            met.update(gt.semantics, lab.semantics, gt.mask_camera)
            boxes = sw.boxes.transformed(invert_transform(sw.T_scene_from_ego))
            o, d = trail_counts(lab.semantics, boxes, cfg.grid)
            go, gd = trail_counts(gt.semantics, boxes, cfg.grid)
            out_n, dyn_n, gt_out, gt_dyn = out_n + o, dyn_n + d, gt_out + go, gt_dyn + gd
            frames += 1
    secs = time.perf_counter() - t0
    return dict(iou=met.geometric_iou(), miou=met.miou(), trail=out_n / max(1, dyn_n), gt_trail=gt_out / max(1, gt_dyn),
                per_kf=secs / max(1, frames), frames=frames, per_class=met.per_class_iou())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=2)
    p.add_argument("--samples", type=int, default=20, help="keyframes per scene")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", default=None, help="generate into (or reuse) this folder instead of a temporary one")
    p.add_argument("--variants", default=",".join(VARIANTS))
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from nuscenes.nuscenes import NuScenes

    with tempfile.TemporaryDirectory(prefix="occ-label-bench-") as d:
        root = Path(a.keep) if a.keep else Path(d) / "world"
        if not (root / "v1.0-mini").is_dir():
            generate(SynthConfig(scenes=a.scenes, samples_per_scene=a.samples, seed=a.seed, image_size=(640, 360)),
                     root, progress=False, overwrite=True)
        nusc = NuScenes("v1.0-mini", str(root), verbose=False)
        rows = []
        for name in a.variants.split(","):
            title, kw = VARIANTS[name]
            cfg = replace(LabelConfig(), **kw)
            r = run_variant(nusc, root, cfg)
            rows.append((title, r))
            print(f"# {name}: IoU {r['iou'] * 100:.2f} mIoU {r['miou'] * 100:.2f} trail {r['trail'] * 100:.2f} % "
                  f"{r['per_kf']:.2f} s/keyframe", file=sys.stderr)
    print(f"# occ-label benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} x {cpu_model()}, load {load_average()}, Python {platform.python_version()}")
    print(f"# synthetic world seed {a.seed}: {a.scenes} scenes x {a.samples} keyframes, 20 Hz sweeps; "
          f"{rows[0][1]['frames']} keyframes; Occ3D grid; metrics inside the analytic mask_camera; one process")
    print()
    print("| settings | IoU % | mIoU % | trail voxels % | s / keyframe / core |")
    print("|---|---:|---:|---:|---:|")
    for title, r in rows:
        print(f"| {title} | {r['iou'] * 100:.2f} | {r['miou'] * 100:.2f} | {r['trail'] * 100:.2f} | {r['per_kf']:.2f} |")
    print(f"| (analytic GT itself, trail check) | 100 | 100 | {rows[0][1]['gt_trail'] * 100:.2f} | |")
    print()
    names = [n for n in occ3d_miou().class_names[:17]]
    print("| settings | " + " | ".join(n[:8] for n in names) + " |")
    print("|---|" + "---:|" * len(names))
    for title, r in rows:
        print(f"| {title} | " + " | ".join("–" if np.isnan(v) else f"{v * 100:.0f}" for v in r["per_class"][:17]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
