"""Training: data pipeline, loss falls, exact resume, damaged checkpoints, DDP == one process, occ-predict."""

import dataclasses
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from occ_core.data.nuscenes_dataset import NuScenesOccDataset, augment_bev, collate, scene_splits
from occ_core.grid import OCC3D
from occ_core.models.config import load_config
from occ_core.training.losses import class_weights_from_counts, lovasz_softmax
from occ_core.training.train import StepBatchSampler, Trainer, main as train_main
from occ_core.training.predict import main as predict_main

warnings.filterwarnings("ignore", category=UserWarning)
REPO = Path(__file__).resolve().parent.parent
LIDAR_CFG = REPO / "config" / "models" / "lidar.yaml"


@pytest.fixture(scope="module")
def train_ds(synthetic_dataroot):
    return NuScenesOccDataset(synthetic_dataroot, scene_splits(synthetic_dataroot)["train"], OCC3D, max_sweeps=3,
                              with_flow=True)


def small_cfg(path=LIDAR_CFG, **train):
    cfg = load_config(path)
    return dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, size=(32, 64)),
                               train=dataclasses.replace(cfg.train, **train))


def occupied_fraction(points, semantics):
    idx, ok = OCC3D.points_to_voxels(points[:, :3].astype(np.float64))
    return float((semantics[tuple(idx[ok].T)] != 17).mean())


def test_frame_points_in_base_link_match_gt_and_sweeps_are_older(train_ds):
    s = train_ds[1]
    lag = s.frame.points[:, 4]
    assert lag.min() == 0 and 0.09 < lag.max() < 0.11  # 3 sweeps at 20 Hz
    assert len(np.unique(np.round(lag, 3))) == 3
    # aggregated sweeps land on occupied GT voxels (LiDAR returns hit surfaces)
    assert occupied_fraction(s.frame.points, s.targets.semantics) > 0.9
    assert s.frame.images[0].shape == (180, 320, 3) and s.frame.T_base_from_cam.shape == (6, 4, 4)
    assert s.targets.flow.shape == (*OCC3D.dims, 2)


@pytest.mark.parametrize("flip_x,flip_y,yaw_deg", [(True, False, 0.0), (False, True, 90.0), (True, True, 17.0)])
def test_bev_augmentation_is_consistent(train_ds, flip_x, flip_y, yaw_deg):
    s = train_ds[0]
    f2, t2 = augment_bev(s.frame, s.targets, OCC3D, flip_x, flip_y, math.radians(yaw_deg))
    # the same 3D point projects to the same pixel before and after (extrinsics moved with the world)
    p = s.frame.points[:50, :3].astype(np.float64)
    p2 = f2.points[:50, :3].astype(np.float64)
    for c in range(6):
        a = np.linalg.inv(s.frame.T_base_from_cam[c]) @ np.c_[p, np.ones(50)].T
        b = np.linalg.inv(f2.T_base_from_cam[c]) @ np.c_[p2, np.ones(50)].T
        assert np.allclose(a, b, atol=1e-4)
    # points still fall on occupied voxels of the transformed GT
    before = occupied_fraction(s.frame.points, s.targets.semantics)
    after = occupied_fraction(f2.points, t2.semantics)
    assert after >= before - (0.0 if yaw_deg % 90 == 0 else 0.08)
    if yaw_deg % 90 == 0:  # exact: every point keeps the label of its voxel; labels move with their voxel
        i1, ok1 = OCC3D.points_to_voxels(s.frame.points[:, :3].astype(np.float64))
        i2, ok2 = OCC3D.points_to_voxels(f2.points[:, :3].astype(np.float64))
        ok = ok1 & ok2
        assert ok.sum() > 1000
        assert np.array_equal(s.targets.semantics[tuple(i1[ok].T)], t2.semantics[tuple(i2[ok].T)])
        assert np.bincount(t2.semantics.ravel(), minlength=18).tolist() == np.bincount(s.targets.semantics.ravel(), minlength=18).tolist()
        assert t2.mask_camera.sum() == s.targets.mask_camera.sum()
    # flow vectors rotate with the frame: a moving voxel keeps its speed
    assert np.isclose(np.linalg.norm(t2.flow, axis=-1).max(), np.linalg.norm(s.targets.flow, axis=-1).max(), rtol=0.05)


def test_step_batch_sampler_is_a_function_of_the_step():
    full = StepBatchSampler(10, 2, seed=3, start=0, end=12, rank=0, world=1)
    batches = list(full)
    assert batches[4:] == list(StepBatchSampler(10, 2, seed=3, start=4, end=12))
    assert sorted(i for b in batches[:5] for i, _ in b) == list(range(10))  # one epoch covers every sample once
    r0 = StepBatchSampler(10, 1, 3, 0, 5, rank=0, world=2)
    r1 = StepBatchSampler(10, 1, 3, 0, 5, rank=1, world=2)
    assert sorted(i for a, b in zip(r0, r1) for i, _ in a + b) == list(range(10))


def test_lovasz_softmax_is_zero_for_a_perfect_prediction_and_positive_otherwise():
    labels = torch.tensor([0, 1, 2, 1])
    perfect = torch.nn.functional.one_hot(labels, 3).float()
    assert lovasz_softmax(perfect, labels) == 0
    assert lovasz_softmax(perfect.roll(1, 0), labels) > 0.5


def test_loss_falls_on_one_batch(train_ds):
    cfg = small_cfg(lr=1e-2)
    batch = collate([train_ds[0]], cfg)
    tr = Trainer(cfg, "cpu", torch.ones(18))
    losses = [tr.train_step(batch).losses["total"] for _ in range(5)]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.95 * losses[0], losses


def test_camera_model_losses_include_depth(train_ds):
    cfg = small_cfg(REPO / "config" / "models" / "camera.yaml")
    batch = collate([train_ds[0]], cfg)
    tr = Trainer(cfg, "cpu", torch.ones(18))
    terms = tr.compute_loss(batch)
    assert terms.depth > 0 and math.isfinite(float(terms.total))


def test_save_resume_gives_identical_next_step(train_ds, tmp_path):
    cfg = small_cfg(lr=5e-3)
    batches = [collate([train_ds[i]], cfg) for i in range(3)]
    a = Trainer(cfg, "cpu", class_weights_from_counts(np.arange(1, 19) * 1000, 1.0))
    a.train_step(batches[0])
    a.train_step(batches[1])
    a.save(tmp_path / "ckpt.pt")
    expect = a.train_step(batches[2])
    expect_rand = torch.rand(3)
    b = Trainer(cfg, "cpu", torch.ones(18))  # different weights: the checkpoint must restore them
    b.load(tmp_path / "ckpt.pt")
    assert b.step == 2
    got = b.train_step(batches[2])
    assert got.losses == expect.losses and got.grad_norm == expect.grad_norm and got.lr == expect.lr
    assert torch.equal(torch.rand(3), expect_rand)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_interrupted_save_keeps_the_last_good_checkpoint(train_ds, tmp_path, monkeypatch):
    cfg = small_cfg()
    tr = Trainer(cfg, "cpu", torch.ones(18))
    path = tmp_path / "latest.pt"
    tr.save(path)
    good = path.read_bytes()

    def dying_save(obj, f):
        Path(f).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        tr.save(path)
    assert path.read_bytes() == good and list(tmp_path.iterdir()) == [path]


def test_cli_train_resume_and_damaged_checkpoint(synthetic_dataroot, tmp_path, capsys):
    work = tmp_path / "run"
    common = ["--config", str(LIDAR_CFG), "--dataroot", str(synthetic_dataroot), "--work-dir", str(work),
              "--val-every", "0", "--max-val-samples", "1", "--no-progress"]
    assert train_main(common + ["--steps", "1"]) == 0
    ckpt = work / "checkpoints" / "latest.pt"
    assert torch.load(ckpt, weights_only=True)["step"] == 1
    assert (work / "model.pt").exists() and (work / "val.json").exists()
    assert list((work / "tb").iterdir())
    # a fresh run never overwrites the last good checkpoint
    good = ckpt.read_bytes()
    assert train_main(common + ["--steps", "1"]) == 2
    assert "pass --resume" in capsys.readouterr().err and ckpt.read_bytes() == good
    # resume continues at the saved step
    assert train_main(common + ["--steps", "2", "--resume"]) == 0
    assert torch.load(ckpt, weights_only=True)["step"] == 2
    # truncated latest checkpoint: a warning naming the file, and the run resumes from the previous one
    damaged = ckpt.resolve()
    damaged.write_bytes(damaged.read_bytes()[:5000])
    assert train_main(common + ["--steps", "3", "--resume"]) == 0
    err = capsys.readouterr().err
    assert str(damaged) in err and "truncated or corrupted" in err and "(step 1)" in err
    assert torch.load(ckpt, weights_only=True)["step"] == 3
    # occ-predict writes one Occ3D prediction per val keyframe
    out = tmp_path / "pred"
    assert predict_main(["--config", str(LIDAR_CFG), "--checkpoint", str(work / "model.pt"), "--dataroot",
                         str(synthetic_dataroot), "--out", str(out), "--no-progress"]) == 0
    files = sorted(out.glob("*.npz"))
    assert len(files) == 3
    from occ_core.formats import occ3d

    assert occ3d.read_prediction(files[0]).shape == OCC3D.dims


def _ddp_worker(rank, world, cfg, batches, out_dir):
    torch.set_num_threads(1)
    # a file rendezvous, not a TCP port: no collisions with other jobs on a shared machine
    torch.distributed.init_process_group("gloo", init_method=f"file://{out_dir / 'ddp_rendezvous'}", rank=rank,
                                         world_size=world)
    tr = Trainer(cfg, "cpu", torch.ones(18), ddp=True)
    tr.net.eval()  # BatchNorm on running statistics: per-rank batch statistics would differ from the joint batch
    tr.compute_loss(batches[rank]).total.backward()
    torch.save({n: p.grad for n, p in tr.model.named_parameters()}, out_dir / f"grad{rank}.pt")
    torch.distributed.destroy_process_group()
    # Leave without the interpreter's teardown: in about 1 of 4 full-suite runs a rank aborted
    # there with "terminate called without an active exception" (a joinable C++ thread being
    # destroyed) after its work was done. The gradients are already on disk.
    os._exit(0)


@pytest.mark.flaky(reruns=2)  # pytest-rerunfailures: guards the rare abort described in _ddp_worker
def test_ddp_two_gloo_processes_match_one_process_on_the_joint_batch(train_ds, tmp_path):
    cfg = small_cfg()
    batches = [collate([train_ds[i]], cfg) for i in range(2)]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, cfg, batches, tmp_path), nprocs=2, join=True)
    joint = collate([train_ds[0], train_ds[1]], cfg)
    tr = Trainer(cfg, "cpu", torch.ones(18))
    tr.model.eval()
    tr.compute_loss(joint).total.backward()
    g0 = torch.load(tmp_path / "grad0.pt")
    g1 = torch.load(tmp_path / "grad1.pt")
    # the single-sample gradient of rank 0's sample alone, to show the samples differ
    solo = Trainer(cfg, "cpu", torch.ones(18))
    solo.model.eval()
    solo.compute_loss(batches[0]).total.backward()
    worst, solo_gap = 0.0, 0.0
    for n, p in tr.model.named_parameters():
        assert torch.equal(g0[n], g1[n]), n  # DDP leaves every rank with the same averaged gradient
        scale = p.grad.norm().clamp_min(1e-8)
        worst = max(worst, float((g0[n] - p.grad).norm() / scale))
        solo_gap = max(solo_gap, float((dict(solo.model.named_parameters())[n].grad - p.grad).norm() / scale))
    # float32 reductions over 640k voxels in another order: agreement to ~1e-3, not bitwise
    assert worst < 2e-3 < solo_gap / 10, (worst, solo_gap)


def test_shipped_fusion_checkpoint_predicts_the_synthetic_world(synthetic_dataroot):
    """config/models/fusion_demo.pt (trained on the default synthetic world) on the test world's
    held-out scene: far above the random-init model (mIoU ~0.0002, IoU ~0.05 here)."""
    from occ_core.eval.occupancy import occ3d_miou
    from occ_core.models.predictor import load_predictor

    pred = load_predictor(REPO / "config" / "models" / "fusion.yaml", REPO / "config" / "models" / "fusion_demo.pt")
    ds = NuScenesOccDataset(synthetic_dataroot, scene_splits(synthetic_dataroot)["val"], OCC3D, pred.cfg.lidar.max_sweeps)
    m = occ3d_miou("camera")
    for i in range(len(ds)):
        s = ds[i]
        m.update(s.targets.semantics, pred.predict(s.frame).labels, s.targets.mask_camera)
    assert m.miou() > 0.10 and m.geometric_iou() > 0.5, (m.miou(), m.geometric_iou())
