"""``occ-eval``: evaluate a folder of occupancy predictions against Occ3D or OpenOcc v2 GT.

Usage::

    occ-eval --gt DIR --pred DIR [--dataroot DIR --version V] \\
             --metrics miou,iou,rayiou,mave --mask camera|lidar|both|none \\
             --format occ3d|openocc [--scenes A,B] [--json OUT]

- ``--gt``: ``<scene_name>/<sample_token>/labels.npz`` (Occ3D ``gts`` or ``openocc_v2``).
- ``--pred``: ``<sample_token>.npz`` per GT token (key ``semantics``; OpenOcc also ``flow``).
- ``--metrics``: ``miou`` and ``iou`` (voxel mIoU / geometric IoU inside ``--mask``),
  ``rayiou`` (SparseOcc), ``mave`` (OpenOcc only; also gives OccScore). RayIoU and mAVE need
  the nuScenes tables (``--dataroot``, ``--version``) for the LiDAR ray origins; RayIoU uses
  no visibility mask (as SparseOcc).
- ``--metrics depth`` (alone): depth maps instead of voxels. ``--gt`` is a depth folder
  ``<CAM>/<image stem>.png`` (the synthetic world's ``depth/``), ``--pred`` the same layout
  (``occ-predict --format depth``), uint16 metres x 256; every prediction needs its GT map of
  the same size. Reports abs rel, sq rel, RMSE, RMSE log and delta < 1.25^k over
  0.1 < gt < 80 m, scale-aware and median-scaled (:mod:`occ_core.eval.depth`, OccNeRF's protocol).
- ``--scenes``: evaluate only these scenes of ``--gt`` (e.g. a validation split); default all.
- ``--mask``: default ``camera`` for Occ3D, ``none`` for OpenOcc (which has no masks).

Every GT frame needs a prediction. Before any metric is computed, all predictions (and GT
files) are read and checked; if any is missing or malformed the command prints every bad
token with the reason and exits with status 1. Exit status 2, with one line naming the
argument or file: bad arguments, a missing or wrong-kind ``--gt``/``--pred``/``--dataroot``,
an unwritable ``--json`` (checked before any frame is read), or a GT folder name that cannot
be a token (separators, control characters).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from occ_core.cli import (check_device, check_input_dir, check_output_file, positive_int, run_cli)
from occ_core.errors import OccDataError
from occ_core.fileio import atomic_write_text
from occ_core.formats import occ3d, openocc
from occ_core.formats.occ3d import GtEntry
from occ_core.eval.occupancy import MASKS, ConfusionMetric, occ3d_miou, openocc_miou, select_mask
from occ_core.eval.rayiou import RayIoU, occ3d_rayiou, openocc_rayiou
from occ_core.paths import safe_component

METRICS: tuple[str, ...] = ("miou", "iou", "rayiou", "mave", "depth")
FORMATS: tuple[str, ...] = ("occ3d", "openocc")


@dataclass
class EvalConfig:
    """Resolved command-line options."""

    gt: Path
    pred: Path
    metrics: tuple[str, ...]
    mask: str
    fmt: str
    dataroot: Path | None
    version: str | None
    json_out: Path | None
    scenes: tuple[str, ...] | None
    threads: int
    device: str
    progress: bool


def parse_args(argv: list[str] | None) -> EvalConfig:
    p = argparse.ArgumentParser(prog="occ-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, type=Path, help="GT folder: <scene>/<token>/labels.npz")
    p.add_argument("--pred", required=True, type=Path, help="prediction folder: <token>.npz")
    p.add_argument("--metrics", default="miou,iou", help=f"comma-separated subset of {','.join(METRICS)}")
    p.add_argument("--mask", choices=MASKS, default=None, help="voxel mask for miou/iou (default: camera for occ3d, none for openocc)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="occ3d", help="label format of GT and predictions")
    p.add_argument("--dataroot", type=Path, default=None, help="nuScenes root (for RayIoU origins)")
    p.add_argument("--version", default=None, help="nuScenes version, e.g. v1.0-trainval (for RayIoU origins)")
    p.add_argument("--json", dest="json_out", type=Path, default=None, help="write the reports as JSON (atomically)")
    p.add_argument("--scenes", default=None, help="comma-separated scene names to evaluate (default: every scene in --gt)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default 1: the ray casting runs many small ops, which a second "
                        "thread barely speeds up on an idle machine and slows down many times on a busy one)")
    p.add_argument("--device", default="cpu", help="torch device for ray casting (cpu, cuda)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    a = p.parse_args(argv)
    metrics = tuple(m.strip() for m in a.metrics.split(",") if m.strip())
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        p.error(f"--metrics: unknown {bad or 'empty list'}; choose from {','.join(METRICS)}")
    if "depth" in metrics and len(metrics) > 1:
        p.error("--metrics depth scores depth maps and cannot be combined with voxel metrics")
    if "depth" in metrics and a.scenes is not None:
        p.error("--metrics depth scores every map in --pred; --scenes does not apply (predict only the split you want)")
    if "mave" in metrics and a.fmt != "openocc":
        p.error("--metrics mave needs --format openocc (only OpenOcc v2 carries flow)")
    if ("rayiou" in metrics or "mave" in metrics) and (a.dataroot is None or a.version is None):
        p.error("--metrics rayiou/mave need --dataroot and --version: the ray origins are the LiDAR positions of the "
                "scene's keyframes, read from the nuScenes tables")
    mask = a.mask or ("camera" if a.fmt == "occ3d" else "none")
    scenes = None if a.scenes is None else tuple(s.strip() for s in a.scenes.split(",") if s.strip())
    if scenes == ():
        p.error("--scenes: empty list")
    return EvalConfig(a.gt, a.pred, metrics, mask, a.fmt, a.dataroot, a.version, a.json_out, scenes, a.threads,
                      a.device, not a.no_progress)


@dataclass
class Frame:
    """One loaded GT/prediction pair (label grids (X, Y, Z), flows (X, Y, Z, 2) or None)."""

    gt: np.ndarray
    pred: np.ndarray
    mask: np.ndarray | None
    gt_flow: np.ndarray | None
    pred_flow: np.ndarray | None


def load_frame(cfg: EvalConfig, entry: GtEntry, need_mask: bool) -> Frame:
    """Read and check one GT file and its prediction; OccDataError names the bad file."""
    pred_path = occ3d.prediction_path(cfg.pred, entry.token)
    need_flow = "mave" in cfg.metrics
    if cfg.fmt == "occ3d":
        g = occ3d.read_gt(entry.path)
        pred = occ3d.read_prediction(pred_path)
        mask = select_mask(cfg.mask, g.mask_camera, g.mask_lidar, str(entry.path)) if need_mask else None
        return Frame(g.semantics, pred, mask, None, None)
    g = openocc.read(entry.path, require_flow=need_flow)
    pr = openocc.read(pred_path, require_flow=need_flow)
    mask = select_mask(cfg.mask, g.mask_camera, g.mask_lidar, str(entry.path)) if need_mask else None
    return Frame(g.semantics, pr.semantics, mask, g.flow, pr.flow)


def check_all(cfg: EvalConfig, entries: list[GtEntry], need_mask: bool) -> list[str]:
    """Read every frame; one line per bad token (missing or malformed GT or prediction)."""
    bad = []
    for e in tqdm(entries, desc="checking predictions", disable=not cfg.progress):
        if not occ3d.prediction_path(cfg.pred, e.token).is_file():
            bad.append(f"{e.token} (scene {e.scene}): missing prediction {occ3d.prediction_path(cfg.pred, e.token)}")
            continue
        try:
            load_frame(cfg, e, need_mask)
        except OccDataError as err:
            bad.append(f"{e.token} (scene {e.scene}): {err}")
    return bad


def check_paths(cfg: EvalConfig) -> None:
    """Inputs exist and are of the right kind, ``--json`` can be written, names are names:
    all before any frame is read. Raises OccDataError naming the argument."""
    check_input_dir(cfg.gt, "--gt")
    check_input_dir(cfg.pred, "--pred")
    if cfg.dataroot is not None:
        check_input_dir(cfg.dataroot, "--dataroot")
    if cfg.json_out is not None:
        check_output_file(cfg.json_out, "--json")
    for s in cfg.scenes or ():
        safe_component(s, "--scenes")
    check_device(cfg.device, "--device")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``occ-eval``; returns the exit status (0 ok, 1 frames that cannot be
    evaluated, 2 bad arguments or paths, one line on stderr). Torch runs on ``--threads``
    threads meanwhile; the caller's thread count is restored after (``main`` also runs
    in-process)."""
    try:
        cfg = parse_args(argv)
    except SystemExit as e:  # argparse printed usage and the error (or --help)
        return int(e.code or 0)

    def run() -> int:
        check_paths(cfg)
        saved = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        try:
            return evaluate_depth(cfg) if "depth" in cfg.metrics else evaluate(cfg)
        finally:
            torch.set_num_threads(saved)

    return run_cli("occ-eval", run)


def evaluate_depth(cfg: EvalConfig) -> int:
    """``--metrics depth``: every ``<pred>/<CAM>/<stem>.png`` against ``<gt>/<CAM>/<stem>.png``;
    returns the exit status (1: a prediction without GT, of another size, or unreadable)."""
    from occ_core.eval.depth import DepthMetric
    from occ_core.formats.image_maps import read_depth_png

    preds = sorted(p for p in cfg.pred.glob("*/*.png") if p.is_file())
    if not preds:
        print(f"occ-eval: {cfg.pred}: no depth maps <CAM>/<stem>.png", file=sys.stderr)
        return 1
    cams = tuple(sorted({p.parent.name for p in preds}))
    metrics = {"scale-aware": DepthMetric(cams), "median-scaled": DepthMetric(cams, median_scaling=True)}
    bad, pairs = [], []
    for p in preds:
        g = cfg.gt / p.parent.name / p.name
        try:
            gt = read_depth_png(g)
            pairs.append((p.parent.name, gt, read_depth_png(p, gt.shape)))
        except OccDataError as e:
            bad.append(str(e))
    if bad:
        print(f"occ-eval: {len(bad)} of {len(preds)} depth maps cannot be evaluated (no metric was computed):",
              file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
        return 1
    for cam, gt, pred in tqdm(pairs, desc="evaluating depth", disable=not cfg.progress):
        for m in metrics.values():
            m.update(gt, pred, cam)
    reports = {k: m.report() for k, m in metrics.items()}
    print("\n\n".join(f"[{k}]\n{r.to_text()}" for k, r in reports.items()))
    if cfg.json_out is not None:
        import json

        doc = {"metrics": ["depth"], "images": len(pairs), "gt": str(cfg.gt), "pred": str(cfg.pred),
               "reports": {k: r.to_dict() for k, r in reports.items()}}
        atomic_write_text(cfg.json_out, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return 0


def evaluate(cfg: EvalConfig) -> int:
    """Check every frame, then compute and report the metrics of ``cfg``; returns the exit status.

    Raises:
        OccDataError: a ``--gt`` folder without frames or with names that cannot be tokens.
    """
    entries = occ3d.list_gt(cfg.gt)
    if cfg.scenes is not None:
        missing = sorted(set(cfg.scenes) - {e.scene for e in entries})
        if missing:
            print(f"occ-eval: {cfg.gt}: no frames of the requested scenes {', '.join(missing)}", file=sys.stderr)
            return 1
        entries = [e for e in entries if e.scene in cfg.scenes]
    need_mask = "miou" in cfg.metrics or "iou" in cfg.metrics
    extra = {p.stem for p in cfg.pred.glob("*.npz")} - {e.token for e in entries}
    if extra:
        print(f"occ-eval: note: {len(extra)} predictions in {cfg.pred} have no GT frame and are not evaluated", file=sys.stderr)
    bad = check_all(cfg, entries, need_mask)
    if bad:
        print(f"occ-eval: {len(bad)} of {len(entries)} frames cannot be evaluated (no metric was computed):", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
        return 1

    origins: dict[str, np.ndarray] = {}
    ray: RayIoU | None = None
    if "rayiou" in cfg.metrics or "mave" in cfg.metrics:
        try:
            from nuscenes.nuscenes import NuScenes

            from occ_core.eval.origins import nuscenes_ray_origins

            nusc = NuScenes(version=cfg.version, dataroot=str(cfg.dataroot), verbose=False)
            origins = nuscenes_ray_origins(nusc, [e.token for e in entries], progress=cfg.progress)
        except (OccDataError, AssertionError, FileNotFoundError, KeyError) as e:
            print(f"occ-eval: cannot read the ray origins from nuScenes {cfg.version} at {cfg.dataroot}: {e}", file=sys.stderr)
            return 1
        ray = occ3d_rayiou(cfg.device) if cfg.fmt == "occ3d" else openocc_rayiou("mave" in cfg.metrics, cfg.device)
    vox: ConfusionMetric | None = None
    if need_mask:
        vox = occ3d_miou(cfg.mask) if cfg.fmt == "occ3d" else openocc_miou(cfg.mask)

    for e in tqdm(entries, desc="evaluating", disable=not cfg.progress):
        f = load_frame(cfg, e, need_mask)
        if vox is not None:
            vox.update(f.gt, f.pred, f.mask)
        if ray is not None:
            ray.update(f.gt, f.pred, origins[e.token], f.gt_flow, f.pred_flow)

    reports = {}
    if vox is not None:
        reports["voxel"] = vox.report()
        if "miou" not in cfg.metrics:
            reports["voxel"].summary.pop("mIoU")
        if "iou" not in cfg.metrics:
            reports["voxel"].summary.pop("IoU (geometric)")
    if ray is not None:
        reports["ray"] = ray.report()
    print("\n\n".join(r.to_text() for r in reports.values()))
    if cfg.json_out is not None:
        import json

        doc = {"format": cfg.fmt, "mask": cfg.mask, "metrics": list(cfg.metrics), "frames": len(entries),
               "gt": str(cfg.gt), "pred": str(cfg.pred), "reports": {k: r.to_dict() for k, r in reports.items()}}
        atomic_write_text(cfg.json_out, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
