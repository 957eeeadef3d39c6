"""``make demo``: the main job on the embedded default data, end to end.

1. Generate the default synthetic world (nuScenes v1.0-mini layout with Occ3D ground truth)
   into ``--dataroot`` if it is not there yet (seeded: the same files on every machine).
2. Fit the per-voxel prior on the training scenes (:mod:`occ_core.models.prior`).
3. Write Occ3D predictions for every keyframe of the validation scenes (atomically).
4. Evaluate them with ``occ-eval``: Occ3D mIoU and geometric IoU inside the camera mask, and
   RayIoU@1/2/4 m from the scenes' LiDAR origins; print the tables and write JSON.

The per-voxel prior is the floor every learned model must beat; the learned models, the ROS
node and the rosbag playback loop plug into steps 2-4 as they land.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from occ_core.data.synthetic import SynthConfig, generate, load_splits
from occ_core.eval import cli as eval_cli
from occ_core.formats import occ3d
from occ_core.models.prior import PerVoxelPrior

#: The embedded default world: 5 scenes (4 train, 1 val) of 10 keyframes (5 s) each.
DEFAULT_WORLD = SynthConfig(scenes=5, samples_per_scene=10, seed=0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="occ-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", type=Path, default=Path("data/synthetic"), help="synthetic world (generated if missing)")
    p.add_argument("--out", type=Path, default=Path("work_dirs/demo"), help="predictions and reports")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    if not (args.dataroot / "v1.0-mini").is_dir():
        print(f"== generating the default synthetic world into {args.dataroot} "
              f"({DEFAULT_WORLD.scenes} scenes x {DEFAULT_WORLD.samples_per_scene} keyframes, seed {DEFAULT_WORLD.seed})")
        generate(DEFAULT_WORLD, args.dataroot)
    else:
        print(f"== using the synthetic world in {args.dataroot}")
    splits = load_splits(args.dataroot)
    entries = occ3d.list_gt(args.dataroot / "gts")
    train = [e for e in entries if e.scene in splits["train"]]
    val = [e for e in entries if e.scene in splits["val"]]
    print(f"== per-voxel prior: fitting on {len(train)} keyframes of {len(splits['train'])} training scenes")
    prior = PerVoxelPrior.fit(occ3d.read_gt(e.path).semantics for e in tqdm(train, desc="fitting prior"))
    prior.save(args.out / "prior.npz")
    labels = prior.predict()
    pred_dir = args.out / "pred"
    for e in tqdm(val, desc="writing predictions"):
        occ3d.write_prediction(pred_dir / f"{e.token}.npz", labels)
    print(f"== evaluating {len(val)} keyframes of the validation scenes {', '.join(splits['val'])}")
    status = eval_cli.main([
        "--gt", str(args.dataroot / "gts"), "--pred", str(pred_dir), "--scenes", ",".join(splits["val"]),
        "--dataroot", str(args.dataroot), "--version", "v1.0-mini", "--metrics", "miou,iou,rayiou",
        "--mask", "camera", "--json", str(args.out / "metrics.json"),
    ])
    print(f"== demo finished in {time.perf_counter() - t0:.0f} s; reports in {args.out / 'metrics.json'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
