"""Temporal fusion benchmark (issue 14 item 5): a temporal model against its single-frame twin.

Run from the repository root, after training both (BENCHMARKS.md, "Temporal fusion")::

    .venv/bin/python bench/temporal.py --dataroot data/bench/heldout \\
        --model bevformer_temporal=config/models/bevformer_temporal.yaml:work_dirs/bevformer_temporal/model.pt \\
        --model bevformer_flow=config/models/bevformer_flow.yaml:work_dirs/bevformer_flow/model.pt \\
        --out work_dirs/temporal_bench

For each model, on the val split of ``--dataroot`` (or ``--scenes`` of it; every scene in keyframe
order: temporal models carry their state, reset at each scene start, as ``occ-predict`` does; each
keyframe is predicted once and written in both formats):

1. Occ3D predictions, scored by ``occ-eval`` inside the camera mask (mIoU, IoU)
   and RayIoU;
2. OpenOcc v2 predictions (``occ-predict --format openocc``'s writer) scored by ``occ-eval --format openocc --metrics
   mave`` (mAVE, per-class AVE), and the same semantics with the flow zeroed (the zero-flow row);
3. a voxel view of the flow: on voxels where GT and prediction agree on a dynamic class (OpenOcc
   classes car .. pedestrian), the mean L2 flow error of the model and of zero flow, separately
   for moving voxels (GT speed > 0.5 m/s) and still ones (parked cars: zero flow is exact there).

A markdown table is printed and everything written to ``<out>/temporal.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.classes import OPENOCC_CLASSES  # noqa: E402
from occ_core.data.nuscenes_dataset import find_version, scene_splits  # noqa: E402
from occ_core.eval import cli as eval_cli  # noqa: E402
from occ_core.fileio import atomic_write_text  # noqa: E402
from occ_core.formats import openocc  # noqa: E402
from occ_core.training import predict as predict_cli  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402

DYNAMIC = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle", "pedestrian")
MOVING_SPEED = 0.5


def _eval(args: list[str], json_path: Path) -> dict:
    if eval_cli.main(args + ["--json", str(json_path), "--no-progress"]) != 0:
        raise SystemExit(f"occ-eval failed: {' '.join(args)}")
    return json.loads(json_path.read_text())["reports"]


def flow_errors(gt_dir: Path, pred_dir: Path, scenes: list[str]) -> dict:
    """Mean L2 flow error (m/s) of the predictions and of zero flow on voxels where GT and
    prediction agree on a dynamic OpenOcc class, split into moving and still voxels."""
    dyn = np.array([OPENOCC_CLASSES.index(c) for c in DYNAMIC])
    acc = {k: [0.0, 0.0, 0] for k in ("moving", "still")}
    for scene in scenes:
        for d in sorted((gt_dir / scene).iterdir()):
            gt = openocc.read(d / "labels.npz", True)
            pr = openocc.read(pred_dir / f"{d.name}.npz", True)
            tp = (gt.semantics == pr.semantics) & np.isin(gt.semantics, dyn)
            speed = np.linalg.norm(gt.flow, axis=-1)
            for key, sel in (("moving", tp & (speed > MOVING_SPEED)), ("still", tp & (speed <= MOVING_SPEED))):
                acc[key][0] += float(np.linalg.norm(pr.flow[sel] - gt.flow[sel], axis=-1).sum())
                acc[key][1] += float(speed[sel].sum())
                acc[key][2] += int(sel.sum())
    return {k: {"model": a / max(n, 1), "zero_flow": z / max(n, 1), "voxels": n} for k, (a, z, n) in acc.items()}


def predict_scenes(config: str, checkpoint: str, dataroot: Path, scenes: list[str], out: Path) -> None:
    """``occ-predict``'s loop over the chosen scenes (keyframe order, the state reset at each
    scene start), writing each prediction once as Occ3D (``out/occ3d``) and OpenOcc v2 (``out/openocc``)."""
    from occ_core.data.nuscenes_dataset import NuScenesOccDataset
    from occ_core.formats import occ3d
    from occ_core.models.predictor import load_predictor

    predictor = load_predictor(config, checkpoint)
    ds = NuScenesOccDataset(dataroot, scenes, predictor.cfg.grid_spec, image_hw=predictor.cfg.image_hw)
    (out / "occ3d").mkdir(parents=True, exist_ok=True)
    (out / "openocc").mkdir(parents=True, exist_ok=True)
    prev = None
    for scene, token in ds.samples:
        if scene != prev:
            predictor.reset()
        prev = scene
        pred = predictor.predict(ds.load_frame(token))
        occ3d.write_prediction(occ3d.prediction_path(out / "occ3d", token), pred.labels)
        predict_cli.write_openocc(occ3d.prediction_path(out / "openocc", token), pred)
    if predictor.state is not None:
        print(f"{config}: state carried over {predictor.state.carried} frames, resets {predictor.state.resets}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", required=True, type=Path, help="held-out world (its val split is scored)")
    p.add_argument("--model", action="append", required=True, help="NAME=CONFIG:CHECKPOINT (repeat)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--scenes", default=None, help="comma-separated val scenes to score (default: all of them)")
    a = p.parse_args()
    scenes = scene_splits(a.dataroot)["val"]
    if a.scenes:
        unknown = sorted(set(a.scenes.split(",")) - set(scenes))
        if unknown:
            raise SystemExit(f"--scenes: {unknown} are not val scenes of {a.dataroot}")
        scenes = a.scenes.split(",")
    version = find_version(a.dataroot)
    common = ["--dataroot", str(a.dataroot), "--version", version, "--scenes", ",".join(scenes)]
    results = {}
    for spec in a.model:
        name, rest = spec.split("=", 1)
        cfg, ckpt = rest.rsplit(":", 1)
        out = a.out / name
        t0 = time.process_time()
        predict_scenes(cfg, ckpt, a.dataroot, scenes, out)
        cpu_s = time.process_time() - t0
        occ = _eval(["--gt", str(a.dataroot / "gts"), "--pred", str(out / "occ3d"), "--mask", "camera",
                     "--metrics", "miou,iou,rayiou", *common], out / "occ3d.json")
        oo = _eval(["--format", "openocc", "--gt", str(a.dataroot / "openocc_v2"), "--pred", str(out / "openocc"),
                    "--metrics", "rayiou,mave", *common], out / "openocc.json")
        zero = out / "openocc_zeroflow"
        zero.mkdir(parents=True, exist_ok=True)
        for f in sorted((out / "openocc").glob("*.npz")):
            s = openocc.read(f, True)
            openocc.write(zero / f.name, openocc.OpenOccSample(s.semantics, np.zeros_like(s.flow)))
        oz = _eval(["--format", "openocc", "--gt", str(a.dataroot / "openocc_v2"), "--pred", str(zero),
                    "--metrics", "rayiou,mave", *common], out / "openocc_zeroflow.json")
        results[name] = {
            "mIoU": occ["voxel"]["summary"]["mIoU"], "IoU": occ["voxel"]["summary"]["IoU (geometric)"],
            "RayIoU": occ["ray"]["summary"]["RayIoU"], "mAVE": oo["ray"]["summary"]["mAVE"],
            "mAVE_zero_flow": oz["ray"]["summary"]["mAVE"],
            "AVE": {r["name"]: r["values"].get("AVE") for r in oo["ray"]["rows"] if r["name"] in DYNAMIC},
            "AVE_zero_flow": {r["name"]: r["values"].get("AVE") for r in oz["ray"]["rows"] if r["name"] in DYNAMIC},
            "voxel_flow": flow_errors(a.dataroot / "openocc_v2", out / "openocc", scenes),
            "predict_cpu_s": cpu_s,
        }
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
            "load": load_average(), "dataroot": str(a.dataroot), "scenes": scenes}
    atomic_write_text(a.out / "temporal.json", json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"{meta['date']}, {meta['cpu']}, load {meta['load']}; {a.dataroot} val scenes {', '.join(scenes)}")
    def f(v, scale=1.0, digits=2):
        return "–" if v is None else f"{scale * v:.{digits}f}"

    print("| model | mIoU % | IoU % | RayIoU % | mAVE | mAVE zero flow | moving L2 (zero) | still L2 (zero) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, r in results.items():
        v = r["voxel_flow"]
        print(f"| {name} | {f(r['mIoU'], 100)} | {f(r['IoU'], 100)} | {f(r['RayIoU'], 100)} | {f(r['mAVE'], 1, 3)} | "
              f"{f(r['mAVE_zero_flow'], 1, 3)} | {f(v['moving']['model'])} ({f(v['moving']['zero_flow'])}) | "
              f"{f(v['still']['model'])} ({f(v['still']['zero_flow'])}) |")
    for name, r in results.items():
        print(f"{name} AVE: " + ", ".join(f"{c} {r['AVE'].get(c)} ({r['AVE_zero_flow'].get(c)})" for c in DYNAMIC))


if __name__ == "__main__":
    main()
