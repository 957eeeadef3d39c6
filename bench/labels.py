"""Benchmark: occ-label against exact ground truth (issue 13, item 5).

Generates a synthetic world of a seed the shipped model never trained on (seed 7 by default;
the shipped model trains on seed 0), labels every keyframe with several settings, and compares
the labels with the world's analytic Occ3D ground truth inside the analytic ``mask_camera``:

- IoU (geometric) and mIoU (Occ3D protocol, one confusion matrix over all keyframes);
- trail voxels: voxels of a dynamic class (the 8 OpenOcc dynamic classes) whose centre lies
  outside every keyframe box grown by half a voxel diagonal, over the whole grid, as a share
  of all dynamic-class voxels (the analytic GT's own share is printed as a check);
- seconds per keyframe per core: one process, scene loading and split included.

The ``bag`` variant labels what a recording gives: each scene goes through ``occ-nusc2bag`` (a
ROS 2 bag) and ``occ-bag2nusc`` (a dataroot without lidarseg or boxes), then carving-only labels
(geometry only, class ``others``: mIoU and trail voxels do not apply); its keyframes are matched
to the world's by timestamp. The conversions (kept in ``<keep>-bag/`` with ``--keep``) are not
counted in its seconds per keyframe.

    .venv/bin/python bench/labels.py [--scenes 2] [--samples 20] [--seed 7] [--keep DIR]
        [--variants keyframes,sweeps,boxes_nofill,default,poisson,carving,bag]
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
from occ_core.geometry import invert_transform, make_transform  # noqa: E402
from occ_core.labels import LabelConfig  # noqa: E402
from occ_core.labels.measures import trail_counts  # noqa: E402
from occ_core.labels.pipeline import label_keyframe, prepare_scene  # noqa: E402
from occ_core.labels.scene import Annotations  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402  (bench/ is on sys.path when run as a script)

VARIANTS: dict[str, tuple[str, dict]] = {
    "keyframes": ("keyframes only (no sweeps, no boxes, no carving)", dict(use_sweeps=False, use_boxes=False, carve="off")),
    "sweeps": ("+ sweeps (no boxes, no carving)", dict(use_boxes=False, carve="off")),
    "boxes_nofill": ("+ dynamic alignment (boxes), no ground fill", dict(ground_fill=0.0)),
    "default": ("+ ground fill = **default settings**", {}),
    "poisson": ("default + Poisson densification", dict(densify="poisson")),
    "carving": ("without boxes: carving only", dict(use_boxes=False, carve="on")),
    "bag": ("from a bag (occ-nusc2bag -> occ-bag2nusc): no lidarseg, no boxes, carving only",
            dict(use_boxes=False, carve="on")),
}


def run_variant(datasets: list[tuple], cfg: LabelConfig, world, world_root: Path) -> dict:
    """Label every keyframe of the ``(nusc, dataroot)`` pairs and score them against the analytic GT
    of the synthetic world (``world`` tables, folder ``world_root``); one metric over all.

    A dataroot derived from the world (the bag variant) has its own tokens: keyframes are matched
    to the world's by scene name and timestamp, and the trail check uses the world's boxes.
    """
    gt_token = {(world.get("scene", s["scene_token"])["name"], s["timestamp"]): s["token"] for s in world.sample}
    anns = Annotations(world)
    met = occ3d_miou("camera")
    out_n = dyn_n = gt_out = gt_dyn = 0
    frames = 0
    t0 = time.perf_counter()
    for nusc, root, sc in [(n, r, s["name"]) for n, r in datasets for s in sorted(n.scene, key=lambda s: s["name"])]:
        prep = prepare_scene(nusc, root, sc, cfg)
        for k, i in enumerate(prep.scene.keyframes):
            sw = prep.scene.sweeps[i]
            lab = label_keyframe(prep, k, cfg)
            wtok = gt_token[(sc, nusc.get("sample", sw.sample_token)["timestamp"])]
            gt = occ3d.read_gt(world_root / "gts" / sc / wtok / "labels.npz")
            met.update(gt.semantics, lab.semantics, gt.mask_camera)
            sd = world.get("sample_data", world.get("sample", wtok)["data"]["LIDAR_TOP"])
            ep = world.get("ego_pose", sd["ego_pose_token"])
            boxes = anns.boxes(sd).transformed(invert_transform(make_transform(ep["translation"], ep["rotation"])))
            o, d = trail_counts(lab.semantics, boxes, cfg.grid)
            go, gd = trail_counts(gt.semantics, boxes, cfg.grid)
            out_n, dyn_n, gt_out, gt_dyn = out_n + o, dyn_n + d, gt_out + go, gt_dyn + gd
            frames += 1
    secs = time.perf_counter() - t0
    return dict(iou=met.geometric_iou(), miou=met.miou(), trail=out_n / max(1, dyn_n), gt_trail=gt_out / max(1, gt_dyn),
                per_kf=secs / max(1, frames), frames=frames, per_class=met.per_class_iou())


def bag_dataroots(world, root: Path, work: Path) -> list[Path]:
    """Each scene of the world through ``occ-nusc2bag`` and ``occ-bag2nusc``: one dataroot per scene."""
    from occ_ros.bag.bag2nusc import BagToNuscConfig
    from occ_ros.bag.bag2nusc import convert as bag_to_nusc
    from occ_ros.bag.nusc2bag import ConvertConfig
    from occ_ros.bag.nusc2bag import convert as nusc_to_bag

    out = []
    for sc in sorted(s["name"] for s in world.scene):
        bag = work / "bags" / sc
        if not bag.exists():
            nusc_to_bag(ConvertConfig(root, bag, scenes=[sc], progress=False))
        nusc = work / "nusc" / sc
        if not (nusc / "v1.0-mini").is_dir():
            bag_to_nusc(BagToNuscConfig(bag, nusc, progress=False, overwrite=True))
        out.append(nusc)
    return out


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
            if name == "bag":
                datasets = [(NuScenes("v1.0-mini", str(d), verbose=False), d)
                            for d in bag_dataroots(nusc, root, root.parent / f"{root.name}-bag")]
            else:
                datasets = [(nusc, root)]
            r = run_variant(datasets, cfg, nusc, root)
            r["geometry_only"] = name == "bag"  # class others only: no mIoU, no dynamic class to trail
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
        sem = "n/a | n/a" if r["geometry_only"] else f"{r['miou'] * 100:.2f} | {r['trail'] * 100:.2f}"
        print(f"| {title} | {r['iou'] * 100:.2f} | {sem} | {r['per_kf']:.2f} |")
    print(f"| (analytic GT itself, trail check) | 100 | 100 | {rows[0][1]['gt_trail'] * 100:.2f} | |")
    print()
    names = [n for n in occ3d_miou().class_names[:17]]
    print("| settings | " + " | ".join(n[:8] for n in names) + " |")
    print("|---|" + "---:|" * len(names))
    for title, r in (row for row in rows if not row[1]["geometry_only"]):
        print(f"| {title} | " + " | ".join("–" if np.isnan(v) else f"{v * 100:.0f}" for v in r["per_class"][:17]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
