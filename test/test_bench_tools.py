"""The benchmark scripts' own logic (bench/*.py): what their tables are computed from."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from occ_core.errors import OccDataError

BENCH = Path(__file__).resolve().parent.parent / "bench"


def bench_module(name: str):
    """Import ``bench/<name>.py`` (bench/ is on sys.path while it loads, as when run as a script)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCH))
    return mod


def test_learning_benchmark_variants_change_only_the_named_fields():
    """bench/learning.py --variant NAME=KEY:VALUE,...: dotted keys land in the config, YAML-typed."""
    mod = bench_module("learning")
    name, changes = mod.parse_variant("no_aug=train.flip:false,train.image_scale:[1.0, 1.0],loss.lovasz:0")
    assert name == "no_aug" and changes == {"train.flip": False, "train.image_scale": [1.0, 1.0], "loss.lovasz": 0}
    name, changes = mod.parse_variant("small=train.ema_decay:0.99,channels:8")
    cfg = {"name": "fusion", "channels": 16, "train": {"lr": 2e-3, "ema_decay": 0.997}}
    mod.apply_changes(cfg, changes, name)
    assert cfg == {"name": "fusion", "channels": 8, "train": {"lr": 2e-3, "ema_decay": 0.99}}
    mod.apply_changes(cfg, {"loss.lovasz": 0.0}, name)
    assert cfg["loss"] == {"lovasz": 0.0}
    for bad in ("no_ema", "no_ema=", "x=train.ema_decay", "../x=a:1"):
        with pytest.raises((SystemExit, OccDataError)):
            mod.parse_variant(bad)
    with pytest.raises(SystemExit, match="not a section"):
        mod.apply_changes(cfg, {"channels.x": 1}, name)


def test_learning_benchmark_reuses_a_run_only_while_its_config_is_unchanged(tmp_path, monkeypatch):
    """bench/learning.py's run cache: same config -> the stored scores; an edited config -> retrain."""
    import argparse
    import json

    import yaml

    mod = bench_module("learning")
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny.yaml").write_text("name: camera\nchannels: 8\ntrain: {lr: 0.002}\n")
    monkeypatch.setattr(mod, "CONFIG_DIR", configs)
    args = argparse.Namespace(out=tmp_path / "out", steps=10, fresh=False, threads=1)
    work = args.out / "tiny" / "steps10" / "seed0"
    work.mkdir(parents=True)
    cfg = {"name": "camera", "channels": 8, "train": {"lr": 0.002, "seed": 0}, "seed": 0}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (work / "metrics.json").write_text(json.dumps({"mIoU": 12.5}))
    trained = []

    def fake_run(cmd, threads):  # every subprocess is "python -m <module> ..."
        trained.append(cmd)
        raise RuntimeError(cmd[2])

    monkeypatch.setattr(mod, "run", fake_run)
    assert mod.train_and_score("tiny", 0, args, tmp_path, tmp_path) == {"mIoU": 12.5}
    assert trained == []
    # a new default step count does not change a run made with --steps
    (configs / "tiny.yaml").write_text("name: camera\nchannels: 8\ntrain: {lr: 0.002, steps: 3000, ckpt_every: 500}\n")
    assert mod.train_and_score("tiny", 0, args, tmp_path, tmp_path) == {"mIoU": 12.5}
    assert trained == []
    # asking for a calibrated threshold calibrates the trained run and scores it again; no retraining
    (configs / "tiny.yaml").write_text("name: camera\nchannels: 8\nocc_threshold: 0.9\n"
                                       "train: {lr: 0.002, calibrate_threshold: true}\n")
    with pytest.raises(RuntimeError, match="occ_core.training.calibrate"):
        mod.train_and_score("tiny", 0, args, tmp_path, tmp_path)
    assert len(trained) == 1 and (work / "metrics.json").exists()
    # a scored calibrated run is reused
    (work / "metrics.json").write_text(json.dumps({"mIoU": 13.0, "occ_threshold": 0.9}))
    assert mod.train_and_score("tiny", 0, args, tmp_path, tmp_path) == {"mIoU": 13.0, "occ_threshold": 0.9}
    assert len(trained) == 1
    (configs / "tiny.yaml").write_text("name: camera\nchannels: 16\ntrain: {lr: 0.002}\n")
    with pytest.raises(RuntimeError, match="occ_core.training.train"):
        mod.train_and_score("tiny", 0, args, tmp_path, tmp_path)
    assert len(trained) == 2 and yaml.safe_load((work / "config.yaml").read_text())["channels"] == 16


def test_camera_depth_scores_of_exact_uniform_and_shifted_heads():
    """bench/camera_depth.py: an exact head scores 1 / 0, a uniform one ln D entropy, a one-bin shift known errors."""
    mod = bench_module("camera_depth")
    centres = torch.arange(48, dtype=torch.float32) + 1.5  # lss.depth [1, 49, 1]
    targets = torch.tensor([0, 5, 20, 46])
    exact = torch.nn.functional.one_hot(targets, 48).float()
    s = mod.depth_head_scores(exact, targets, centres)
    assert s["bin_acc"] == 1 and s["within2"] == 1 and s["absrel_expected"] == pytest.approx(0, abs=1e-9)
    assert s["a1_expected"] == 1 and s["entropy"] == pytest.approx(0, abs=1e-6)
    shifted = torch.nn.functional.one_hot(targets + 1, 48).float()
    s = mod.depth_head_scores(shifted, targets, centres)
    d = centres[targets].double()
    assert s["bin_acc"] == 0 and s["within2"] == 1
    assert s["absrel_argmax"] == pytest.approx(float((1 / d).mean()), rel=1e-9)
    uniform = torch.full((4, 48), 1 / 48)
    s = mod.depth_head_scores(uniform, targets, centres)
    assert s["entropy"] == pytest.approx(math.log(48), rel=1e-5)
    assert s["absrel_expected"] == pytest.approx(float(((centres.mean() - d).abs() / d).mean()), rel=1e-5)


def test_geometry_layer_counts_summary_and_break_even_precision():
    """bench/geometry.py: per-layer counts of a hand-made grid, and the break-even precision rule."""
    mod = bench_module("geometry")
    gt = np.full((2, 2, 3), mod.OCC3D_FREE, np.uint8)
    gt[:, :, 0] = 11  # a full ground layer
    gt[0, 0, 1] = 1  # one object voxel
    pred = gt.copy()
    pred[0, 0, 1] = mod.OCC3D_FREE  # object missed ...
    pred[1, 1, 2] = 4  # ... and a wrong one above
    mask = np.ones(gt.shape, bool)
    mask[1, 0, 0] = False
    c = mod.layer_counts(gt, pred, mask)
    assert c.tolist() == [[3, 3, 3], [1, 0, 0], [0, 1, 0]]
    s = mod.summary(c, ground_layers=1)
    assert s["IoU"] == pytest.approx(3 / 5) and s["ground_IoU"] == 1 and s["above_precision"] == 0
    assert s["above_recall"] == 0 and s["above_IoU"] == 0
    # the rule: predictions of precision exactly q* leave the IoU unchanged, better ones raise it
    prior = np.array([[60, 60, 60], [40, 0, 0]])
    q = mod.break_even_precision(prior)
    iou = 60 / 100
    for prec, sign in ((q, 0), (q + 0.05, 1), (q - 0.05, -1)):
        n = 1000
        new = (60 + prec * n) / (100 + (1 - prec) * n)
        assert np.sign(round(new - iou, 12)) == sign


def test_learning_benchmark_flow_scores_the_gt_flow_exact_and_zero_flow_worse(synthetic_dataroot, tmp_path):
    """bench/learning.py score_flow: the GT's own OpenOcc frames as predictions give mAVE 0; the
    same frames with the flow zeroed give the GT's speed error, which is larger."""
    import shutil

    from occ_core.formats import openocc

    mod = bench_module("learning")
    pred = tmp_path / "pred_openocc"
    pred.mkdir()
    moving = 0
    for labels in sorted((synthetic_dataroot / "openocc_v2").glob("*/*/labels.npz")):
        shutil.copy(labels, pred / f"{labels.parent.name}.npz")
        moving += int((np.linalg.norm(openocc.read(labels).flow, axis=-1) > 0.5).sum())
    assert moving > 0, "the fixture world has no moving voxel"
    res = mod.score_flow(pred, synthetic_dataroot, tmp_path / "eval_openocc.json")
    assert res["mAVE"] == pytest.approx(0.0, abs=1e-6)
    assert res["mAVE_zero_flow"] > 0.5
    assert res["RayIoU_openocc"] == pytest.approx(100.0)
    assert not (tmp_path / "pred_openocc_zeroflow").exists()


def test_depth_breakdown_kinds_follow_height_and_voxel_flow():
    """bench/depth_breakdown.py: a pixel is ground below the height cut, else static or moving by
    the OpenOcc flow of the voxel its GT point falls in."""
    mod = bench_module("depth_breakdown")
    from occ_core.grid import OCC3D

    # a camera 1.5 m above base_link looking along +x (optical z = base x, x = -y, y = -z)
    T = np.eye(4)
    T[:3, :3] = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    T[2, 3] = 1.5
    K = np.array([[10.0, 0.0, 2.0], [0.0, 10.0, 2.0], [0.0, 0.0, 1.0]])
    gt = np.full((4, 4), 8.0)  # every pixel's point 8 m ahead; rows 0-1 above the horizon, 2-3 below
    # pixel row v (centre v + 0.5): z = 1.5 - (v + 0.5 - 2) / 10 * 8 -> 2.7, 1.9, 1.1, 0.3
    gt[3] = 1.5 / ((3.5 - 2) / 10)  # the bottom row sees the ground plane: z = 0
    speed = np.zeros(OCC3D.dims, np.float32)
    p_top = np.array([[8.0, 0.0, 2.7]])
    idx, inside = OCC3D.points_to_voxels(p_top)
    assert inside.all()
    speed[tuple(idx[0])] = 3.0  # the top-row points' voxel moves (columns differ only in y)
    kinds = mod.pixel_kinds(gt, K, T, speed, ground_height=0.3, moving_speed=0.5)
    assert (kinds[3] == 0).all()  # ground
    assert (kinds[1:3] == 1).all()  # static, above the ground
    ys = (np.arange(4) + 0.5 - 2.0) / 10.0 * -8.0  # the top row's base_link y per column
    moving = OCC3D.points_to_voxels(np.stack([np.full(4, 8.0), ys, np.full(4, 2.7)], 1))[0][:, 1] == idx[0, 1]
    assert (kinds[0][moving] == 2).all() and (kinds[0][~moving] == 1).all() and moving.any()
    assert (mod.pixel_kinds(gt, K, T, None, 0.3, 0.5)[0] == 1).all()  # no flow label: static
