"""Where a rendering model's depth goes wrong: scale-aware abs rel of its rendered depth, split by
the ground-truth depth and by what the pixel sees (issue 15's depth target).

Run from the repository root::

    .venv/bin/python bench/depth_breakdown.py --eval-root data/bench/heldout --every 20 \\
        --model occnerf=config/models/occnerf.yaml:config/models/occnerf_demo.pt

For each ``--model name=config:checkpoint`` (a model with a ``render`` section) and every
``--every``-th val keyframe of ``--eval-root``, every camera's rendered depth
(:func:`occ_core.training.render_eval.predict_depth`, source image size) is compared pixel by
pixel with the exact ``depth/`` map (0.1-80 m). Each valid pixel is unprojected into base_link
and put in a GT-depth band and a kind:

- **ground**: the point lies below ``--ground-height`` metres (base_link z);
- **static** / **moving**: above it, and the OpenOcc v2 flow of the voxel it falls in is at most /
  above ``--moving-speed`` m/s (points outside the grid, or without an ``openocc_v2`` label,
  count as static).

Per (band, kind) the table gives the share of all valid pixels, the pixels' mean abs rel and their
share of the overall abs rel (their summed error over all pixels' count, so the column sums to
the pooled abs rel). Pooled over pixels, unlike the per-image means of ``occ_core.eval.depth``
(the official figure); the two differ by a few hundredths.
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

from occ_core.cli import positive_int  # noqa: E402
from occ_core.data.nuscenes_dataset import NuScenesOccDataset, label_path, scene_splits  # noqa: E402
from occ_core.formats import openocc  # noqa: E402
from occ_core.formats.image_maps import map_path, read_depth_png  # noqa: E402
from occ_core.grid import OCC3D  # noqa: E402
from occ_core.models.predictor import load_predictor  # noqa: E402
from occ_core.training.render_eval import predict_depth, source_cameras  # noqa: E402
from _heldout import parse_models  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402

BANDS: tuple[float, ...] = (0.1, 5.0, 10.0, 20.0, 40.0, 80.0)
KINDS: tuple[str, ...] = ("ground", "static", "moving")


def pixel_kinds(gt: np.ndarray, K: np.ndarray, T_base_from_cam: np.ndarray, speed: np.ndarray | None,
                ground_height: float, moving_speed: float) -> np.ndarray:
    """(H, W) int kind index into :data:`KINDS` of every pixel of a GT depth map ``gt`` (metres),
    from its point in base_link (``K`` (3, 3), ``T_base_from_cam`` (4, 4)); ``speed`` (X, Y, Z)
    OpenOcc flow magnitude in m/s on the Occ3D grid, or None."""
    H, W = gt.shape
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(K).T  # optical z = 1
    p_cam = rays * gt.reshape(-1, 1)
    p = p_cam @ T_base_from_cam[:3, :3].T + T_base_from_cam[:3, 3]
    kind = np.where(p[:, 2] < ground_height, 0, 1)
    if speed is not None:
        idx, inside = OCC3D.points_to_voxels(p)
        fast = np.zeros(len(p), bool)
        fast[inside] = speed[idx[inside, 0], idx[inside, 1], idx[inside, 2]] > moving_speed
        kind[(kind == 1) & fast] = 2
    return kind.reshape(H, W)


def breakdown(pred, ds: NuScenesOccDataset, indices: list[int], ground_height: float, moving_speed: float) -> dict:
    """Summed abs rel and pixel counts per (band, kind) over the keyframes ``indices``."""
    nb = len(BANDS) - 1
    err = np.zeros((nb, len(KINDS)))
    cnt = np.zeros((nb, len(KINDS)), np.int64)
    for i in indices:
        scene, token = ds.samples[i]
        frame = ds.load_frame(token)
        flow_path = label_path(ds.dataroot, scene, token, "openocc_v2")
        speed = None
        if flow_path.is_file():
            speed = np.linalg.norm(openocc.read(flow_path, True, OCC3D.dims).flow, axis=-1)
        rendered = predict_depth(pred.model, pred.cfg, frame, ds.nusc, token)
        cams = source_cameras(ds.nusc, token, frame.camera_names)  # K as recorded, in the same camera order
        for k, ((cam, filename, d), (_, _, K, _)) in enumerate(zip(rendered, cams)):
            gt = read_depth_png(map_path(ds.dataroot / "depth", cam, filename), d.shape)
            kind = pixel_kinds(gt, K, np.asarray(frame.T_base_from_cam[k], float), speed, ground_height, moving_speed)
            valid = (gt > BANDS[0]) & (gt < BANDS[-1])
            g, p, kd = gt[valid], np.clip(d[valid], BANDS[0], BANDS[-1]), kind[valid]
            band = np.clip(np.searchsorted(BANDS, g, side="right") - 1, 0, nb - 1)
            np.add.at(err, (band, kd), np.abs(g - p) / g)
            np.add.at(cnt, (band, kd), 1)
    return {"abs_rel_sum": err.tolist(), "pixels": cnt.tolist()}


def print_table(name: str, res: dict) -> None:
    err, cnt = np.asarray(res["abs_rel_sum"]), np.asarray(res["pixels"])
    total = cnt.sum()
    print(f"\n{name}: pooled abs rel {err.sum() / total:.3f} over {total} pixels")
    print("| GT depth | " + " | ".join(f"{k}: share / abs rel / part" for k in KINDS) + " |")
    print("| --- |" + " ---: |" * len(KINDS))
    for b in range(len(BANDS) - 1):
        cells = []
        for k in range(len(KINDS)):
            n = cnt[b, k]
            cells.append(f"{100 * n / total:.1f} % / {err[b, k] / n:.2f} / {err[b, k] / total:.3f}" if n else "–")
        print(f"| {BANDS[b]:g}–{BANDS[b + 1]:g} m | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--eval-root", type=Path, required=True, help="unseen world whose val split is scored")
    p.add_argument("--model", action="append", default=[], help="name=config.yaml:checkpoint.pt (repeatable)")
    p.add_argument("--every", type=positive_int, default=20, help="score every k-th val keyframe")
    p.add_argument("--ground-height", type=float, default=0.3, help="base_link z below which a point is ground (m)")
    p.add_argument("--moving-speed", type=float, default=0.5, help="OpenOcc flow above which a voxel moves (m/s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"# {datetime.date.today()} {cpu_model()}, {a.threads} threads, load {load_average()}")
    val_scenes = scene_splits(a.eval_root)["val"]
    out = {}
    for name, cfg_path, ckpt in parse_models(a.model):
        pred = load_predictor(cfg_path, ckpt)
        if pred.cfg.render is None:
            raise SystemExit(f"--model {name}: {cfg_path} has no render section, so no rendered depth")
        ds = NuScenesOccDataset(a.eval_root, val_scenes, OCC3D, image_hw=pred.cfg.image_hw)
        keep = list(range(0, len(ds), a.every))
        out[name] = breakdown(pred, ds, keep, a.ground_height, a.moving_speed)
        out[name]["keyframes"] = len(keep)
        print_table(f"{name} ({len(keep)} keyframes of {a.eval_root}, every {a.every})", out[name])
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
