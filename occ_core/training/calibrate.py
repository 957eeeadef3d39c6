"""A classifier's occupancy threshold (``occ_threshold``), chosen on labelled training frames.

Class-weighted cross entropy gives "free", by far the most frequent class, the smallest weight, so
a trained classifier's argmax calls a voxel occupied at occupancy probabilities
``P(occupied) = 1 - softmax(logits)[free]`` well below 0.5: it over-fills, and its geometric IoU
pays for every wrong voxel. :func:`iou_threshold` picks the threshold that maximises geometric
IoU (camera mask) on frames with 3D labels, from two histograms of the occupancy logit (GT-free
and GT-occupied voxels), so every threshold is scored in one pass over the frames. The model then
outputs :func:`occ_core.models.output.thresholded_class_logits` at it.

``occ-train`` runs it at the end of training when ``train.calibrate_threshold`` is set, on
``--dataroot``'s val split when that has keyframes and on every :data:`CALIBRATION_EVERY`-th
train keyframe otherwise (never on ``--val-dataroot``, which may be a held-out world). For a
trained checkpoint::

    python -m occ_core.training.calibrate --config config/models/camera.yaml \\
        --checkpoint config/models/camera_demo.pt --dataroot data/bench/train [--out run.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from occ_core.models.config import ModelConfig

#: every k-th keyframe of the calibration split is used
CALIBRATION_EVERY = 10
#: bin edges of the occupancy-logit histograms: candidate thresholds sigmoid(edge), 6e-6 .. 1 - 6e-6
LOGIT_EDGES = np.linspace(-12.0, 12.0, 1201)


def occupancy_histograms(occ_logit: np.ndarray, gt_occupied: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(2, len(LOGIT_EDGES) - 1) int64 counts of the occupancy logits of the GT-free (row 0) and
    GT-occupied (row 1) voxels inside ``mask`` (all three arrays (X, Y, Z)); logits beyond the
    edges count in the outer bins."""
    x = np.clip(occ_logit, LOGIT_EDGES[0], LOGIT_EDGES[-1] - 1e-6)
    bins = len(LOGIT_EDGES) - 1
    idx = np.clip(np.searchsorted(LOGIT_EDGES, x[mask], side="right") - 1, 0, bins - 1)
    occ = gt_occupied[mask]
    return np.stack([np.bincount(idx[~occ], minlength=bins), np.bincount(idx[occ], minlength=bins)]).astype(np.int64)


def iou_threshold(hist: np.ndarray) -> tuple[float, float]:
    """The occupancy threshold with the highest geometric IoU, from :func:`occupancy_histograms`.

    A voxel is occupied where its logit is >= the threshold's edge; bin ``j``'s lower edge as the
    threshold counts bins ``j..`` occupied. Ties go to the lowest threshold.

    Returns:
        (tau, iou): ``sigmoid(edge)`` and the geometric IoU there.
    """
    free_above = hist[0][::-1].cumsum()[::-1]  # GT-free voxels predicted occupied at edge j
    tp = hist[1][::-1].cumsum()[::-1]
    gt = hist[1].sum()
    denom = gt + free_above
    iou = np.where(denom > 0, tp / np.maximum(denom, 1), 0.0)
    j = int(np.argmax(iou))
    return float(1.0 / (1.0 + np.exp(-LOGIT_EDGES[j]))), float(iou[j])


@torch.no_grad()
def calibrate_threshold(model: torch.nn.Module, cfg: ModelConfig, dataset, indices: list[int],
                        device="cpu") -> tuple[float, dict]:
    """Choose ``occ_threshold`` for a classifier on labelled keyframes.

    Args:
        model: a model from :func:`occ_core.models.occnet.build_model` (its ``occ_threshold`` is
            set aside while the raw logits are read, then restored).
        cfg: its config (not rendering-only).
        dataset: an un-augmented :class:`~occ_core.data.nuscenes_dataset.NuScenesOccDataset`
            with 3D labels (``history`` as the model's training; temporal models see it).
        indices: the keyframes of ``dataset`` to use.

    Returns:
        (tau, stats): the threshold and ``{frames, voxels, IoU, IoU_argmax}`` (geometric IoU in
        the camera mask at tau and of the plain argmax, on these frames).
    """
    from occ_core.data.nuscenes_dataset import Collate
    from occ_core.models.output import occupancy_logit_of_classes
    from occ_core.training.train import forward_batch

    if cfg.rendering_only:
        raise ValueError("calibrate_threshold: a model trained by rendering alone gets a label-free threshold")
    if not indices:
        raise ValueError("calibrate_threshold: no keyframes to calibrate on")
    device = torch.device(device)
    was_training, kept = model.training, model.occ_threshold
    model.eval()
    model.occ_threshold = None  # the raw logits
    collate, free = Collate(cfg), cfg.num_classes - 1
    hist = np.zeros((2, len(LOGIT_EDGES) - 1), np.int64)
    argmax_counts = np.zeros(3, np.int64)  # GT occupied, predicted occupied, both
    try:
        for i in indices:
            batch = collate([dataset[i]])
            logits = forward_batch(model, batch, device).logits.float()[0]  # (K, X, Y, Z)
            occ = occupancy_logit_of_classes(logits, 0)[0].cpu().numpy()
            gt = batch.semantics[0].numpy()
            mask = batch.mask_camera[0].numpy().astype(bool) & (gt < cfg.num_classes)
            gt_occ = gt != free
            hist += occupancy_histograms(occ, gt_occ, mask)
            pred_occ = (logits.argmax(0) != free).cpu().numpy()
            argmax_counts += [(gt_occ & mask).sum(), (pred_occ & mask).sum(), (gt_occ & pred_occ & mask).sum()]
    finally:
        model.train(was_training)
        model.occ_threshold = kept
    tau, iou = iou_threshold(hist)
    g, p, tp = (float(v) for v in argmax_counts)
    return tau, {"frames": len(indices), "voxels": int(hist.sum()), "IoU": iou,
                 "IoU_argmax": tp / (g + p - tp) if g + p - tp else float("nan")}


def calibration_split(dataroot: Path) -> tuple[str, list[str]]:
    """The split to calibrate on: ``val`` when it holds scenes, else ``train``."""
    from occ_core.data.nuscenes_dataset import scene_splits

    splits = scene_splits(dataroot)
    return ("val", splits["val"]) if splits.get("val") else ("train", splits["train"])


def calibrate_on(model: torch.nn.Module, cfg: ModelConfig, dataroot: Path, split: str | None = None,
                 every: int = CALIBRATION_EVERY, device="cpu", nusc=None) -> tuple[float, dict]:
    """:func:`calibrate_threshold` on every ``every``-th keyframe of ``dataroot``'s ``split``
    (default :func:`calibration_split`); ``stats`` also names the split."""
    from occ_core.data.nuscenes_dataset import NuScenesOccDataset, scene_splits

    if split is None:
        split, scenes = calibration_split(dataroot)
    else:
        scenes = scene_splits(dataroot)[split]
    history = cfg.temporal.train_frames if cfg.temporal is not None else 0
    sweeps = cfg.lidar.max_sweeps if cfg.lidar is not None else 1
    ds = NuScenesOccDataset(dataroot, scenes, cfg.grid_spec, sweeps, False, nusc=nusc, image_hw=cfg.image_hw,
                            history=history)
    tau, stats = calibrate_threshold(model, cfg, ds, list(range(0, len(ds), every)), device)
    return tau, {"split": f"{dataroot}:{split} (every {every})"} | stats


def main(argv: list[str] | None = None) -> int:
    """``python -m occ_core.training.calibrate``: print a checkpoint's calibrated threshold and,
    with ``--out``, write its config with ``occ_threshold`` set."""
    from occ_core.cli import check_input_file, positive_int, run_cli
    from occ_core.data.nuscenes_dataset import check_dataroot
    from occ_core.fileio import atomic_write_text
    from occ_core.models.config import config_to_dict
    from occ_core.models.predictor import load_predictor

    p = argparse.ArgumentParser(prog="python -m occ_core.training.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="model config (a classifier, not rendering-only)")
    p.add_argument("--checkpoint", required=True, help="its trained weights")
    p.add_argument("--dataroot", required=True, help="a world with 3D labels the model trained on (not a held-out one)")
    p.add_argument("--split", choices=("train", "val"), default=None, help="default: val when it has scenes, else train")
    p.add_argument("--every", type=positive_int, default=CALIBRATION_EVERY, help="every k-th keyframe")
    p.add_argument("--out", type=Path, default=None, help="write the config with occ_threshold set here")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)

    def run() -> int:
        check_input_file(a.config, "--config")
        check_input_file(a.checkpoint, "--checkpoint")
        check_dataroot(a.dataroot)
        if a.threads:
            torch.set_num_threads(a.threads)
        pred = load_predictor(a.config, a.checkpoint)
        tau, stats = calibrate_on(pred.model, pred.cfg, Path(a.dataroot), a.split, a.every)
        print(f"occ_threshold {tau:.4f}: geometric IoU {100 * stats['IoU']:.2f} % (argmax "
              f"{100 * stats['IoU_argmax']:.2f} %) on {stats['frames']} keyframes of {stats['split']}")
        if a.out is not None:
            cfg = dataclasses.replace(pred.cfg, occ_threshold=tau)
            atomic_write_text(a.out, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        return 0

    return run_cli("calibrate", run)


if __name__ == "__main__":
    sys.exit(main())
