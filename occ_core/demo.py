"""``make demo``: the main job on the embedded default data, end to end.

1. Generate the default synthetic world (nuScenes v1.0-mini layout with Occ3D ground truth)
   into ``--dataroot`` if it is not there yet (seeded: the same files on every machine).
2. Predict every keyframe of the validation scenes with the shipped camera + LiDAR fusion
   model (``config/models/fusion.yaml`` + ``fusion_demo.pt``, through ``occ-predict``).
3. Fit the per-voxel prior on the training scenes (:mod:`occ_core.models.prior`), the floor
   every learned model must beat, and predict the same keyframes with it.
4. Evaluate both with ``occ-eval``: Occ3D mIoU and geometric IoU inside the camera mask, and
   RayIoU@1/2/4 m from the scenes' LiDAR origins; print the tables, write JSON. Render the fusion
   model's predictions beside the ground truth (``occ-render --compare``: the six cameras, GT /
   prediction / difference maps, 3D views, per-frame scores) into ``<out>/renders``, one
   ``<scene>_<kk>_<token>_compare.png`` per keyframe and one ``<scene>.gif`` per validation scene.
5. The ROS loop: convert the keyframes of the validation scenes into a ROS 2 bag (``occ-nusc2bag``,
   MCAP), and score the occupancy node on its playback (``occ-bag-eval``: player + node with the
   shipped model + recorder on the live DDS graph, at ``--rate`` x real time so that the node keeps
   up on 2 cores); the predictions are recorded into ``<out>/predictions_bag`` and rendered to PNGs
   (``occ-render``) in ``<out>/renders``.
6. Print one summary: offline fusion (5 LiDAR sweeps, the config's setting), the per-voxel prior,
   the node on bag playback (current sweep only: the node's default ``lidar_sweeps: 1``), and the
   offline fusion with ``lidar.max_sweeps: 1``: the last two see the same inputs, so their scores
   are equal when the node keeps up.

The ROS steps run as subprocesses (``python -m occ_ros.bag...``): ``occ_core`` never imports rclpy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tqdm import tqdm

from occ_core.data.synthetic import generate, load_splits
from occ_core.data.synthetic.presets import PRESETS
from occ_core.eval import cli as eval_cli
from occ_core.fileio import atomic_write_text
from occ_core.formats import occ3d
from occ_core.models.prior import PerVoxelPrior
from occ_core.training import predict as predict_cli
from occ_core.viz import cli as render_cli

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = PACKAGE_ROOT / "config" / "models" / "fusion.yaml"
SHIPPED_CHECKPOINT = PACKAGE_ROOT / "config" / "models" / "fusion_demo.pt"

#: The embedded default world: 5 scenes (4 train, 1 val) of 10 keyframes (5 s) each.
DEFAULT_WORLD = PRESETS["demo"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="occ-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", type=Path, default=Path("data/synthetic"), help="synthetic world (generated if missing)")
    p.add_argument("--out", type=Path, default=Path("work_dirs/demo"), help="predictions and reports")
    p.add_argument("--config", type=Path, default=SHIPPED_CONFIG, help="model config")
    p.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT, help="model checkpoint")
    p.add_argument("--rate", type=float, default=0.5,
                   help="bag playback speed for the node (default 0.5: keyframes 1 s apart, so 2 cores keep up)")
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

    compare_renders(args, model_dir, splits["val"])

    # the same model with the node's LiDAR input (current sweep only), offline
    one_sweep = args.out / "fusion_1sweep.yaml"
    cfg = yaml.safe_load(args.config.read_text())
    if cfg.get("lidar"):
        cfg["lidar"]["max_sweeps"] = 1
    atomic_write_text(one_sweep, yaml.safe_dump(cfg, sort_keys=False))
    print(f"\n== fusion model, current LiDAR sweep only (as the node): predicting {len(val)} keyframes offline")
    one_dir = args.out / "pred_fusion_1sweep"
    status = predict_cli.main(["--config", str(one_sweep), "--checkpoint", str(args.checkpoint), "--dataroot",
                               str(args.dataroot), "--split", "val", "--out", str(one_dir), "--overwrite"])
    if status != 0:
        return status
    docs["fusion_1sweep"] = evaluate(args, one_dir, "fusion_1sweep", splits["val"])

    bag_doc = ros_loop(args, splits["val"], one_sweep)
    print("\n== summary (held-out scenes; mIoU/IoU inside the camera mask)")
    print(f"{'predictor':<34} {'mIoU %':>8} {'IoU %':>8} {'RayIoU %':>9}")
    rows = [("fusion, offline, 5 sweeps", docs["fusion"]), ("per-voxel prior", docs["prior"]),
            ("fusion, offline, 1 sweep", docs["fusion_1sweep"])]
    for label, doc in rows:
        vox, ray = doc["reports"]["voxel"]["summary"], doc["reports"]["ray"]["summary"]
        print(f"{label:<34} {100 * vox['mIoU']:8.2f} {100 * vox['IoU (geometric)']:8.2f} {100 * ray['RayIoU']:9.2f}")
    b = bag_doc["summary"]
    print(f"{'fusion, ROS node on bag, 1 sweep':<34} {100 * b['mIoU']:8.2f} {100 * b['IoU']:8.2f} {100 * b['RayIoU']:9.2f}")
    print(f"   node on playback x{b['play_rate']:g}: {b['predicted']}/{b['frames']} keyframes predicted, "
          f"{b['dropped']} dropped; latency p50 {b['latency_ms_p50']:.0f} ms, p95 {b['latency_ms_p95']:.0f} ms; "
          f"effective rate {b['effective_rate_hz']:.2f} Hz")
    print(f"== demo finished in {time.perf_counter() - t0:.0f} s; reports in {args.out}")
    return 0


def compare_renders(args: argparse.Namespace, pred_dir: Path, val_scenes: list[str]) -> None:
    """Step 4b: prediction beside ground truth per keyframe and a GIF per scene, into ``<out>/renders``."""
    renders = args.out / "renders"
    model = f"{args.checkpoint.name} ({args.config.name})"
    print(f"\n== rendering {model} beside the ground truth into {renders}")
    t0 = time.perf_counter()
    for scene in val_scenes:
        status = render_cli.main(["--compare", str(pred_dir), "--dataroot", str(args.dataroot), "--scenes", scene,
                                  "-o", str(renders), "--model-name", model, "--gif", str(renders / f"{scene}.gif")])
        if status != 0:
            raise SystemExit(f"occ-demo: occ-render --compare failed on {scene} (exit {status})")
    print(f"   comparison renders took {time.perf_counter() - t0:.1f} s")


def _run(step: str, cmd: list[str]) -> None:
    """Run one ROS step as a subprocess of this interpreter (occ_core never imports rclpy itself)."""
    status = subprocess.run(cmd).returncode
    if status != 0:
        raise SystemExit(f"occ-demo: {step} failed (exit {status}): {' '.join(cmd)}")


def ros_loop(args: argparse.Namespace, val_scenes: list[str], model_config: Path) -> dict:
    """Steps 5: bag of the validation keyframes, node playback evaluation, renders; returns occ-bag-eval's JSON."""
    bag = args.out / "val_bag"
    if bag.exists():  # our own output of an earlier run: the converter never overwrites
        shutil.rmtree(bag)
    print(f"\n== converting the keyframes of {', '.join(val_scenes)} into a ROS 2 bag: {bag}")
    _run("occ-nusc2bag", [sys.executable, "-m", "occ_ros.bag.nusc2bag", "--dataroot", str(args.dataroot), "--out",
                          str(bag), "--scenes", *val_scenes, "--keyframes-only"])
    record, out_json = args.out / "predictions_bag", args.out / "metrics_bag.json"
    print(f"\n== ROS 2 loop: occ-bag-play x{args.rate:g} -> occupancy_node ({model_config.name} + "
          f"{args.checkpoint.name}) -> recorder")
    _run("occ-bag-eval", [sys.executable, "-m", "occ_ros.bag.evaluate", str(bag), "--rate", str(args.rate),
                          "--config", str(model_config), "--checkpoint", str(args.checkpoint), "--record", str(record),
                          "--json", str(out_json)])
    renders = args.out / "renders"
    print(f"\n== rendering the recorded predictions into {renders}")
    if render_cli.main([str(record), "--topic", "/occupancy/voxels", "-o", str(renders)]) != 0:
        raise SystemExit("occ-demo: occ-render failed")
    return json.loads(out_json.read_text())


if __name__ == "__main__":
    sys.exit(main())
