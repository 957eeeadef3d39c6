"""``make demo``: the main job on the embedded default data, end to end.

1. Generate the default synthetic world (nuScenes v1.0-mini layout with Occ3D ground truth)
   into ``--dataroot`` if it is not there yet (seeded: the same files on every machine).
2. Predict every keyframe of the validation scenes with the shipped camera + LiDAR fusion
   model (``config/models/fusion.yaml`` + ``fusion_demo.pt``, through ``occ-predict``).
3. Fit the per-voxel prior on the training scenes (:mod:`occ_core.models.prior`), the floor
   every learned model must beat, and predict the same keyframes with it.
4. Evaluate both with ``occ-eval``: Occ3D mIoU and geometric IoU inside the camera mask, and
   RayIoU@1/2/4 m from the scenes' LiDAR origins; print the tables, write JSON, and print a
   side-by-side summary.

The ROS node on rosbag playback plugs in here as it lands.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from occ_core.data.synthetic import SynthConfig, generate, load_splits
from occ_core.eval import cli as eval_cli
from occ_core.formats import occ3d
from occ_core.models.prior import PerVoxelPrior
from occ_core.training import predict as predict_cli

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = PACKAGE_ROOT / "config" / "models" / "fusion.yaml"
SHIPPED_CHECKPOINT = PACKAGE_ROOT / "config" / "models" / "fusion_demo.pt"

#: The embedded default world: 5 scenes (4 train, 1 val) of 10 keyframes (5 s) each.
DEFAULT_WORLD = SynthConfig(scenes=5, samples_per_scene=10, seed=0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="occ-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", type=Path, default=Path("data/synthetic"), help="synthetic world (generated if missing)")
    p.add_argument("--out", type=Path, default=Path("work_dirs/demo"), help="predictions and reports")
    p.add_argument("--config", type=Path, default=SHIPPED_CONFIG, help="model config")
    p.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT, help="model checkpoint")
    return p.parse_args(argv)


def evaluate(args: argparse.Namespace, pred_dir: Path, name: str, val_scenes: list[str]) -> dict:
    """Run occ-eval on ``pred_dir`` for the validation scenes; returns its JSON document."""
    out = args.out / f"metrics_{name}.json"
    status = eval_cli.main([
        "--gt", str(args.dataroot / "gts"), "--pred", str(pred_dir), "--scenes", ",".join(val_scenes),
        "--dataroot", str(args.dataroot), "--version", "v1.0-mini", "--metrics", "miou,iou,rayiou",
        "--mask", "camera", "--json", str(out),
    ])
    if status != 0:
        raise SystemExit(f"occ-demo: occ-eval failed on {pred_dir} (exit {status})")
    return json.loads(out.read_text())


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
    print(f"== fusion model: predicting {len(val)} keyframes of {', '.join(splits['val'])} "
          f"({args.config.name} + {args.checkpoint.name})")
    model_dir = args.out / "pred_fusion"
    status = predict_cli.main(["--config", str(args.config), "--checkpoint", str(args.checkpoint), "--dataroot",
                               str(args.dataroot), "--split", "val", "--out", str(model_dir), "--overwrite"])
    if status != 0:
        return status

    print(f"== per-voxel prior: fitting on {len(train)} keyframes of {len(splits['train'])} training scenes")
    prior = PerVoxelPrior.fit(occ3d.read_gt(e.path).semantics for e in tqdm(train, desc="fitting prior"))
    prior.save(args.out / "prior.npz")
    labels = prior.predict()
    prior_dir = args.out / "pred_prior"
    for e in tqdm(val, desc="writing prior predictions"):
        occ3d.write_prediction(prior_dir / f"{e.token}.npz", labels)

    docs = {}
    for name, pred_dir in (("fusion", model_dir), ("prior", prior_dir)):
        print(f"\n== evaluating {name} on {len(val)} keyframes of {', '.join(splits['val'])}")
        docs[name] = evaluate(args, pred_dir, name, splits["val"])
    print("\n== summary (held-out scenes; mIoU/IoU inside the camera mask)")
    print(f"{'predictor':<12} {'mIoU %':>8} {'IoU %':>8} {'RayIoU %':>9}")
    for name, doc in docs.items():
        vox, ray = doc["reports"]["voxel"]["summary"], doc["reports"]["ray"]["summary"]
        print(f"{name:<12} {100 * vox['mIoU']:8.2f} {100 * vox['IoU (geometric)']:8.2f} {100 * ray['RayIoU']:9.2f}")
    print(f"== demo finished in {time.perf_counter() - t0:.0f} s; reports in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
