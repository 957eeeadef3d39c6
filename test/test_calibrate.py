"""A classifier's occupancy threshold: the output rule, its calibration on labelled frames, the
config key and occ-train's calibration at the end of training."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from occ_core.errors import OccDataError
from occ_core.models.config import config_from_dict, load_config
from occ_core.models.occnet import build_model
from occ_core.models.output import occupancy_logit_of_classes, thresholded_class_logits
from occ_core.models.predictor import frame_to_inputs
from occ_core.training.calibrate import LOGIT_EDGES, iou_threshold, occupancy_histograms
from test_models import make_frame

REPO = Path(__file__).resolve().parent.parent
LIDAR_CFG = REPO / "config" / "models" / "lidar.yaml"


@pytest.mark.parametrize("tau", [0.2, 0.5, 0.93])
def test_thresholded_class_logits_argmax_is_the_threshold_rule(tau):
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(2, 18, 5, 4, 3, generator=g, dtype=torch.float64)
    logits[:, 17] += 4.0  # free competes with the 17 other classes' pooled mass
    labels = thresholded_class_logits(logits, tau).argmax(1)
    p_occ = 1 - logits.softmax(1)[:, 17]
    assert torch.equal(labels == 17, p_occ <= tau)
    best = logits[:, :17].argmax(1)
    assert torch.equal(labels[p_occ > tau], best[p_occ > tau])
    assert 0 < int((labels == 17).sum()) < labels.numel()  # both sides of the threshold are exercised
    assert torch.allclose(torch.sigmoid(occupancy_logit_of_classes(logits)[:, 0]), p_occ)


def test_iou_threshold_is_the_best_of_every_candidate_threshold():
    rng = np.random.default_rng(0)
    gt = rng.random((30, 20, 8)) < 0.3
    logit = np.where(gt, rng.normal(1.0, 2.0, gt.shape), rng.normal(-1.5, 2.0, gt.shape))
    mask = rng.random(gt.shape) < 0.8
    hist = occupancy_histograms(logit, gt, mask)
    assert hist.sum() == mask.sum() and hist[1].sum() == (gt & mask).sum()
    tau, iou = iou_threshold(hist)
    g, x = gt[mask], logit[mask]
    brute = [(g & (x >= e)).sum() / (g.sum() + (~g & (x >= e)).sum()) for e in LOGIT_EDGES[:-1]]
    assert iou == pytest.approx(max(brute))
    assert tau == pytest.approx(1 / (1 + np.exp(-LOGIT_EDGES[int(np.argmax(brute))])))
    # the plain 0.5 threshold is not the optimum of this over-filling score
    assert iou > brute[int(np.searchsorted(LOGIT_EDGES, 0.0))] + 1e-3


def test_iou_threshold_of_separable_scores_lies_between_them():
    """GT-occupied voxels at logit >= 2, free ones at <= 1: IoU 1 from the lowest edge above 1."""
    gt = np.array([True] * 50 + [False] * 200)
    logit = np.concatenate([np.linspace(2.0, 6.0, 50), np.linspace(-8.0, 1.0, 200)])
    tau, iou = iou_threshold(occupancy_histograms(logit, gt, np.ones_like(gt)))
    assert iou == 1.0
    assert 1 / (1 + np.exp(-1.0)) < tau <= 1 / (1 + np.exp(-2.0))


def test_model_output_is_thresholded_in_eval_mode_only():
    cfg = load_config(REPO / "config" / "models" / "camera.yaml")
    cfg = dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, size=(32, 64)), occ_threshold=None)
    inputs = frame_to_inputs(make_frame(), cfg)
    model = build_model(cfg).eval()
    with torch.no_grad():
        raw = model(inputs).logits
        tau = float((1 - raw.softmax(1)[:, 17]).flatten().median())  # half the voxels on each side
        model.occ_threshold = tau
        out = model(inputs).logits
        model.train()
        train_out = model(inputs).logits
    assert torch.equal(out, thresholded_class_logits(raw, tau))
    assert not torch.equal(out.argmax(1), raw.argmax(1))
    assert train_out.shape == raw.shape and not torch.equal(train_out, out)  # training sees the head's logits
    assert build_model(dataclasses.replace(cfg, occ_threshold=0.9)).occ_threshold == 0.9


def test_config_occ_threshold_range_and_the_moved_render_key():
    doc = yaml.safe_load(LIDAR_CFG.read_text())
    assert config_from_dict(dict(doc, occ_threshold=0.8)).occ_threshold == 0.8
    assert config_from_dict(doc).occupancy_threshold is None  # the argmax
    with pytest.raises(OccDataError, match=r"cfg\.occ_threshold: expected 0 < threshold < 1"):
        config_from_dict(dict(doc, occ_threshold=1.0), "cfg")
    occnerf = yaml.safe_load((REPO / "config" / "models" / "occnerf.yaml").read_text())
    occnerf["render"]["occ_threshold"] = occnerf.pop("occ_threshold")
    with pytest.raises(OccDataError, match=r"cfg\.render\.occ_threshold: .*top-level key occ_threshold"):
        config_from_dict(occnerf, "cfg")


def test_occ_train_calibrates_the_threshold_into_config_and_checkpoint(synthetic_dataroot, tmp_path):
    from occ_core.models.predictor import load_checkpoint_state, load_predictor
    from occ_core.training.train import main as train_main

    doc = yaml.safe_load(LIDAR_CFG.read_text())
    doc["train"]["calibrate_threshold"] = True
    cfg_path = tmp_path / "lidar_calibrated.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    work = tmp_path / "run"
    assert train_main(["--config", str(cfg_path), "--dataroot", str(synthetic_dataroot), "--work-dir", str(work),
                       "--steps", "2", "--val-every", "0", "--max-val-samples", "1", "--no-progress"]) == 0
    tau = yaml.safe_load((work / "config.yaml").read_text())["occ_threshold"]
    assert 0 < tau < 1
    assert load_checkpoint_state(work / "model.pt")["config"]["occ_threshold"] == tau
    # the predictor of the run's config applies it
    pred = load_predictor(work / "config.yaml", work / "model.pt")
    assert pred.model.occ_threshold == tau
