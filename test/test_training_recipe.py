"""The training recipe of issue 16: LR schedule, EMA, image zoom and LiDAR dropout augmentation,
the benchmark world presets."""

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from occ_core.data.nuscenes_dataset import NuScenesOccDataset, augment_images, scene_splits
from occ_core.data.synthetic.presets import PRESETS, preset
from occ_core.errors import OccDataError
from occ_core.frame import SensorFrame
from occ_core.grid import OCC3D
from occ_core.models.config import config_from_dict, config_to_dict, load_config
from occ_core.training.train import Trainer, lr_factor, main as train_main, read_training_checkpoint

warnings.filterwarnings("ignore", category=UserWarning)
REPO = Path(__file__).resolve().parent.parent
LIDAR_CFG = REPO / "config" / "models" / "lidar.yaml"


def test_lr_schedule_warms_up_linearly_then_follows_the_cosine_to_2_percent():
    warm, steps = 10, 100
    assert lr_factor(0, steps, warm) == pytest.approx(0.1 * (0.02 + 0.98 * 0.5 * (1 + math.cos(0.0))))
    assert lr_factor(4, steps, warm) == pytest.approx(0.5 * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * 0.04))))
    assert lr_factor(50, steps, warm) == pytest.approx(0.02 + 0.98 * 0.5)  # half way: the cosine's mid point
    assert lr_factor(100, steps, warm) == pytest.approx(0.02)
    assert lr_factor(250, steps, warm) == pytest.approx(0.02)  # flat after the schedule


def _lidar_cfg(**train):
    cfg = load_config(LIDAR_CFG)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


def test_ema_first_update_copies_then_averages_the_parameters_and_copies_the_buffers():
    """Parameters: EMA with the decay. BatchNorm running statistics: the live model's, never averaged."""
    tr = Trainer(_lidar_cfg(ema_decay=0.75), "cpu", torch.ones(18))
    bufs = [n for n, b in tr.model.named_buffers() if b.dtype.is_floating_point]
    assert any(n.endswith("running_var") for n in bufs)
    for fill in (1.0, 3.0):
        with torch.no_grad():
            for p in tr.model.parameters():
                p.fill_(fill)
            for _, b in tr.model.named_buffers():
                b.fill_(100.0 * fill if b.dtype.is_floating_point else int(fill))
        tr.update_ema()
    ema = dict(tr.eval_model.named_parameters())
    for name, p in tr.model.named_parameters():
        # 0.75 * 1 + 0.25 * 3
        assert torch.allclose(ema[name], torch.full_like(p, 1.5)), name
    ema_bufs = dict(tr.eval_model.named_buffers())
    for name, b in tr.model.named_buffers():
        assert torch.equal(ema_bufs[name], b), name  # 300 (the live value), not the average 150
    assert tr.eval_model is not tr.model


def test_occ_train_with_ema_saves_the_averaged_weights_and_resumes_them(synthetic_dataroot, tmp_path):
    doc = config_to_dict(_lidar_cfg(ema_decay=0.5))
    cfg_path = tmp_path / "lidar_ema.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    work = tmp_path / "run"
    common = ["--config", str(cfg_path), "--dataroot", str(synthetic_dataroot), "--work-dir", str(work),
              "--val-every", "0", "--max-val-samples", "1", "--no-progress", "--ckpt-every", "1"]
    assert train_main(common + ["--steps", "2"]) == 0
    ck = read_training_checkpoint(work / "checkpoints" / "latest.pt")
    final = torch.load(work / "model.pt", map_location="cpu")["model"]
    ema = {k.removeprefix("module."): v for k, v in ck["ema"].items() if k.startswith("module.")}
    w = next(k for k, v in ck["model"].items() if v.dtype.is_floating_point and v.numel() > 10)
    assert torch.equal(final[w], ema[w])
    assert not torch.equal(final[w], ck["model"][w])  # averaged, not the last step's weights
    assert int(ck["ema"]["n_averaged"]) == 2
    # a resumed run continues the average from the checkpoint
    assert train_main(common + ["--steps", "3", "--resume"]) == 0
    assert int(read_training_checkpoint(work / "checkpoints" / "latest.pt")["ema"]["n_averaged"]) == 3


def _dot_frame(u: float, v: float) -> SensorFrame:
    """One 90x160 camera looking along +x of base_link, a white 3x3 dot centred at pixel (u, v)."""
    img = np.zeros((90, 160, 3), np.uint8)
    img[int(v) - 1:int(v) + 2, int(u) - 1:int(u) + 2] = 255
    K = np.array([[100.0, 0, 80.0], [0, 100.0, 45.0], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)  # optical (z fwd, x right, y down) -> base_link
    return SensorFrame(0, ("CAM_FRONT",), [img], K[None], T[None], np.zeros((0, 5), np.float32), np.eye(4))


@pytest.mark.parametrize("scale,offset", [(1.0, (0.5, 0.5)), (1.3, (0.0, 1.0)), (1.7, (0.8, 0.2))])
def test_image_zoom_moves_the_intrinsics_with_the_pixels(scale, offset):
    u, v = 61.0, 52.0
    f = _dot_frame(u, v)
    # the 3D point that the original K puts on the dot's centre, 10 m ahead
    K = f.intrinsics[0]
    ray = np.linalg.inv(K) @ np.array([u, v, 1.0])
    p_cam = 10.0 * ray / ray[2]
    g = augment_images(f, np.array([scale]), np.array([offset]))
    assert g.images[0].shape == f.images[0].shape
    q = g.intrinsics[0] @ p_cam
    uq, vq = q[:2] / q[2]
    ys, xs = np.nonzero(g.images[0][..., 0] > 127)
    assert len(xs) > 0
    # the bright blob's centre is where the new intrinsics project the point (within a pixel)
    assert abs(xs.mean() - uq) < 1.0 and abs(ys.mean() - vq) < 1.0, (xs.mean(), ys.mean(), uq, vq)


def test_training_dataset_zooms_and_drops_points_reproducibly(synthetic_dataroot):
    scenes = scene_splits(synthetic_dataroot)["train"]
    plain = NuScenesOccDataset(synthetic_dataroot, scenes, OCC3D)
    aug = NuScenesOccDataset(synthetic_dataroot, scenes, OCC3D, image_scale=(1.2, 1.5), lidar_dropout=0.5, seed=3)
    a, b, c = plain[(0, 0)], aug[(0, 0)], aug[(0, 0)]
    assert len(b.frame.points) < len(a.frame.points)
    assert np.array_equal(b.frame.points, c.frame.points)  # seeded by (seed, epoch, index)
    zoom = b.frame.intrinsics[:, 0, 0] / a.frame.intrinsics[:, 0, 0]
    assert np.all((zoom >= 1.2 - 1e-9) & (zoom <= 1.5 + 1e-9)) and len(np.unique(np.round(zoom, 6))) == len(zoom)
    assert np.array_equal(b.targets.semantics, a.targets.semantics)  # labels do not move with the image
    assert not np.array_equal(aug[(0, 1)].frame.intrinsics, b.frame.intrinsics)  # a new epoch draws anew


@pytest.mark.parametrize("field,value", [("image_scale", [0.8, 1.2]), ("lidar_dropout", 1.0), ("ema_decay", 1.0),
                                         ("warmup_steps", -2)])
def test_bad_recipe_values_are_refused_with_the_field_named(field, value):
    doc = config_to_dict(load_config(LIDAR_CFG))
    doc["train"][field] = value
    with pytest.raises(OccDataError, match=f"train.{field}"):
        config_from_dict(doc, "cfg.yaml")


def test_presets_are_fixed_and_unknown_names_are_refused():
    assert preset("bench-train").scenes == 24 and preset("bench-train").samples_per_scene == 20
    assert preset("bench-train").val_scenes == 0 and preset("bench-heldout").val_scenes == preset("bench-heldout").scenes
    assert preset("bench-heldout").seed != preset("bench-train").seed != preset("demo").seed
    assert set(PRESETS) >= {"demo", "bench-train", "bench-heldout"}
    with pytest.raises(OccDataError, match="bench-train"):
        preset("bench")


def _lovasz_per_class(probs, labels):
    """Reference: Berman et al.'s Lovasz-softmax, one class at a time."""
    out = []
    for c in torch.unique(labels).tolist():
        fg = (labels == c).double()
        err, perm = torch.sort((fg - probs[:, c]).abs(), descending=True)
        g = fg[perm]
        jac = 1.0 - (g.sum() - g.cumsum(0)) / (g.sum() + (1 - g).cumsum(0))
        jac[1:] = jac[1:] - jac[:-1].clone()
        out.append(torch.dot(err, jac))
    return torch.stack(out).mean()


def _sem_scal_per_class(probs, labels):
    """Reference: MonoScene's sem_scal loss, one class at a time (BCE to 1 = -log)."""
    total, n = 0.0, 0
    for c in torch.unique(labels).tolist():
        p, t = probs[:, c], (labels == c).double()
        nom = (p * t).sum()
        total = total - torch.log((nom / p.sum()).clamp(1e-6, 1)) - torch.log((nom / t.sum()).clamp(1e-6, 1))
        if (1 - t).sum() > 0:
            total = total - torch.log((((1 - p) * (1 - t)).sum() / (1 - t).sum()).clamp(1e-6, 1))
        n += 1
    return total / n


@pytest.mark.parametrize("n,k", [(1, 3), (500, 5), (4000, 18)])
def test_batched_lovasz_and_sem_scal_equal_the_per_class_definitions(n, k):
    from occ_core.training.losses import lovasz_softmax, sem_scal_loss

    g = torch.Generator().manual_seed(n)
    probs = torch.randn(n, k, generator=g, dtype=torch.float64).softmax(1).requires_grad_(True)
    labels = torch.randint(0, k, (n,), generator=g)
    labels[: n // 2] = 0  # a dominant class, and ties in the errors of the one-hot rows below
    with torch.no_grad():
        probs[: n // 4] = torch.nn.functional.one_hot(labels[: n // 4], k).double()
    for fast, ref in ((lovasz_softmax, _lovasz_per_class), (sem_scal_loss, _sem_scal_per_class)):
        a, b = fast(probs, labels), ref(probs, labels)
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (fast.__name__, a, b)
        ga, = torch.autograd.grad(a, probs)
        gb, = torch.autograd.grad(b, probs)
        assert torch.allclose(ga, gb, rtol=1e-7, atol=1e-10), fast.__name__

