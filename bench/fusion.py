"""Benchmark: fused (``occ-predict --fuse``) against per-frame predictions (issue 19, item 2).

For each split of a synthetic world, the shipped model (``config/models/fusion.yaml`` +
``fusion_demo.pt``) predicts every keyframe once per frame and once fused through the rolling
map (scene by scene, ego poses from the dataset); ``occ-eval`` scores both (Occ3D mIoU and
geometric IoU inside the camera mask, RayIoU from the scenes' LiDAR origins), and the trail
check of ``bench/labels.py`` (:func:`occ_core.labels.measures.trail_counts`) counts the
dynamic-class voxels whose centre lies outside every box of the keyframe (grown by half a
voxel diagonal), over the whole grid, as a share of all dynamic-class voxels. A model's
misplaced dynamic voxels count there too, so the fused predictions also get the share that is
the map's doing: trail voxels whose class the per-frame prediction of that keyframe does not
call dynamic (a moving object carried in from earlier frames).

    PYTHONPATH=. .venv/bin/python bench/fusion.py --dataroot data/synthetic --splits val --work /tmp/fuse-demo
    PYTHONPATH=. .venv/bin/python bench/fusion.py --dataroot /tmp/seed3 --splits train,val --work /tmp/fuse-seed3

A world the model never trained on: ``occ-synth --out DIR --scenes 3 --samples-per-scene 10 --seed 3``
(the shipped model trains on seed 0's training scenes; the demo's ``scene-0005`` is held out).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occ_core.data.nuscenes_dataset import scene_splits  # noqa: E402
from occ_core.eval import cli as eval_cli  # noqa: E402
from occ_core.formats import occ3d  # noqa: E402
from occ_core.geometry import invert_transform, make_transform  # noqa: E402
from occ_core.grid import OCC3D  # noqa: E402
from occ_core.labels.measures import trail_mask  # noqa: E402
from occ_core.training import predict as predict_cli  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent


def trails(dataroot: Path, pred_dir: Path, scenes: list[str], reference: Path | None = None) -> tuple[int, int, int]:
    """(dynamic-class voxels outside every box, all dynamic-class voxels, those of the first that
    are not dynamic in the ``reference`` predictions of the same keyframe: what fusion carried in)
    over the scenes' keyframes."""
    from nuscenes.nuscenes import NuScenes

    from occ_core.data.nuscenes_dataset import find_version
    from occ_core.labels.measures import DYNAMIC
    from occ_core.labels.scene import Annotations

    nusc = NuScenes(find_version(dataroot), str(dataroot), verbose=False)
    anns = Annotations(nusc)
    out = dyn = added = 0
    for sc in nusc.scene:
        if sc["name"] not in scenes:
            continue
        tok = sc["first_sample_token"]
        while tok:
            sample = nusc.get("sample", tok)
            sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            ep = nusc.get("ego_pose", sd["ego_pose_token"])
            boxes = anns.boxes(sd).transformed(invert_transform(make_transform(ep["translation"], ep["rotation"])))
            sem = occ3d.read_prediction(occ3d.prediction_path(pred_dir, tok))
            trail = trail_mask(sem, boxes, OCC3D)
            out, dyn = out + int(trail.sum()), dyn + int(DYNAMIC[sem].sum())
            if reference is not None:
                ref = occ3d.read_prediction(occ3d.prediction_path(reference, tok))
                added += int((trail & ~DYNAMIC[ref]).sum())
            tok = sample["next"]
    return out, dyn, added


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", type=Path, required=True)
    p.add_argument("--splits", default="val", help="comma-separated splits to predict and score together")
    p.add_argument("--work", type=Path, required=True, help="folder for the predictions and reports")
    p.add_argument("--config", default=str(REPO / "config/models/fusion.yaml"))
    p.add_argument("--checkpoint", default=str(REPO / "config/models/fusion_demo.pt"))
    a = p.parse_args()
    import torch

    torch.set_num_threads(2)
    splits = scene_splits(a.dataroot)
    scenes = [s for name in a.splits.split(",") for s in splits[name]]
    rows = {}
    for mode in ("per-frame", "fused"):
        out = a.work / mode
        t0 = time.perf_counter()
        for split in a.splits.split(","):
            args = ["--config", a.config, "--checkpoint", a.checkpoint, "--dataroot", str(a.dataroot), "--split", split,
                    "--out", str(out), "--no-progress"] + (["--fuse"] if mode == "fused" else [])
            if predict_cli.main(args) != 0:
                return 1
        secs = time.perf_counter() - t0
        js = a.work / f"metrics_{mode}.json"
        if eval_cli.main(["--gt", str(a.dataroot / "gts"), "--pred", str(out), "--scenes", ",".join(scenes),
                          "--dataroot", str(a.dataroot), "--version", "v1.0-mini", "--metrics", "miou,iou,rayiou",
                          "--mask", "camera", "--json", str(js), "--no-progress"]) != 0:
            return 1
        doc = json.loads(js.read_text())["reports"]
        ref = a.work / "per-frame" if mode == "fused" else None
        rows[mode] = (doc["voxel"]["summary"], doc["ray"]["summary"], trails(a.dataroot, out, scenes, ref), secs)
    n = sum(1 for _ in (a.work / "fused").glob("*.npz"))
    print(f"# fused vs per-frame, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} x {cpu_model()}, load {load_average()}, Python {platform.python_version()}")
    print(f"# {a.dataroot} splits {a.splits}: scenes {', '.join(scenes)} ({n} keyframes); "
          f"model {Path(a.config).name} + {Path(a.checkpoint).name}; mIoU/IoU inside the camera mask")
    print()
    print("| predictions | mIoU % | IoU % | RayIoU % | RayIoU@1/2/4 % | dynamic voxels outside boxes % | "
          "... carried in by the map % | wall s |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for mode, (vox, ray, (out_n, dyn_n, added), secs) in rows.items():
        at = "/".join(f"{100 * v:.1f}" for k, v in ray.items() if k.startswith("RayIoU@"))
        carried = f"{100 * added / max(1, dyn_n):.2f} ({added})" if mode == "fused" else "–"
        print(f"| {mode} | {100 * vox['mIoU']:.2f} | {100 * vox['IoU (geometric)']:.2f} | {100 * ray['RayIoU']:.2f} | "
              f"{at} | {100 * out_n / max(1, dyn_n):.2f} ({out_n} of {dyn_n}) | {carried} | {secs:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
