"""Temporal state (occ_core.models.temporal, issue 14 item 5): the warp by a known ego motion, the
reset rule, temporal training items (one BEV augmentation for every frame, the motion transformed
with it), forward/backward and a falling loss of the temporal configs (bevformer_temporal.yaml and
the multi-frame hbevocc_temporal.yaml), the predictor's state equal to the training forward,
occ-predict in keyframe order, and node playback equal to offline sequential prediction."""

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from occ_core.data.nuscenes_dataset import NuScenesOccDataset, collate
from occ_core.errors import OccDataError
from occ_core.grid import OCC3D
from occ_core.models.bevformer import align_bev
from occ_core.models.config import TemporalConfig, config_from_dict, config_to_dict, load_config
from occ_core.models.occnet import build_model
from occ_core.models.predictor import OccupancyPredictor, load_predictor
from occ_core.models.temporal import (RESET_REASONS, TemporalState, forward_with_history, link_frames,
                                      rotation_angle_deg, warp_bev)

from test_models_bevformer import BEV, blob, centroid, motion

warnings.filterwarnings("ignore", category=UserWarning)
REPO = Path(__file__).resolve().parent.parent
CFG = REPO / "config" / "models" / "bevformer_temporal.yaml"
TWIN = REPO / "config" / "models" / "bevformer_flow.yaml"
HBEV_CFG = REPO / "config" / "models" / "hbevocc_temporal.yaml"
#: every temporal config: BEVFormer's recurrent BEV, HBEVOcc's stack of the last K forward BEVs
TEMPORAL_CONFIGS = pytest.mark.parametrize("cfg_path", [CFG, HBEV_CFG], ids=lambda p: p.stem)
SMALL_HW = (48, 80)  # the 320x180 test JPEGs decode at 1/4 for it, in the dataset and the node alike
TC = TemporalConfig()


def small(cfg, train_frames=2):
    """Small images; the argmax output (an untrained model's occupancy sits under a trained one's
    calibrated occ_threshold everywhere, so every label would be free)."""
    return dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, size=SMALL_HW), occ_threshold=None,
                               temporal=dataclasses.replace(cfg.temporal, train_frames=train_frames))


def supervise_block(batch):
    """Supervise only a 48 x 48 column block ahead of the ego (keeps the Lovasz sort to seconds)."""
    mask = torch.zeros_like(batch.mask_camera)
    mask[:, 100:148, 76:124] = True
    return dataclasses.replace(batch, mask_camera=mask, mask_lidar=mask)


def pose(x, y, yaw_deg):
    return motion(yaw_deg, x, y).numpy()


# ------------------------------------------------------------------ warp
@pytest.mark.parametrize("yaw,tx,ty", [(25.0, 3.5, -2.0), (-60.0, -4.0, 6.0), (0.0, 0.0, 7.0)])
def test_warp_moves_a_feature_where_the_ego_motion_says(yaw, tx, ty):
    """A static feature at p (previous base_link) lands at T_cur_from_prev @ p; the motion is the
    one link_frames computes from two ego poses (rotation and translation)."""
    P_prev = pose(10.0, -5.0, 40.0)
    T_true = motion(yaw, tx, ty).numpy()
    P_cur = P_prev @ np.linalg.inv(T_true)  # so that inv(P_cur) @ P_prev == T_true
    lk = link_frames(0, P_prev, 500_000_000, P_cur, dataclasses.replace(TC, max_rotation_deg=90.0))
    assert lk.carries and np.allclose(lk.T_cur_from_prev, T_true, atol=1e-9)
    p_prev = np.array([-4.0, 6.0, 0.0, 1.0])
    expect = (T_true @ p_prev)[:2]
    out = warp_bev(blob(BEV, p_prev[:2].tolist(), sigma=0.8), torch.from_numpy(lk.T_cur_from_prev), BEV)
    got = centroid(out, BEV).numpy()
    assert np.linalg.norm(got - expect) < 0.1, (got, expect)
    if tx or ty:  # ignoring the translation would put it |t| away; ignoring the rotation elsewhere too
        assert np.linalg.norm(got - (T_true[:2, :2] @ p_prev[:2])) > 2.0
    if yaw:
        assert np.linalg.norm(got - (p_prev[:2] + T_true[:2, 3])) > 2.0
    assert align_bev is warp_bev  # BEVFormer's TSA aligns with this very function


# ------------------------------------------------------------------ reset rule
@pytest.mark.parametrize("case,reason", [
    ("carry", None), ("first", "first_frame"), ("no_prev_pose", "missing_pose"), ("no_pose", "missing_pose"),
    ("nan_pose", "missing_pose"), ("same_stamp", "stamp_order"), ("back", "stamp_order"), ("gap", "stamp_gap"),
    ("one_lost", None), ("jump_t", "pose_jump"), ("jump_r", "pose_jump")])
def test_reset_rule(case, reason):
    P0 = pose(100.0, 50.0, 10.0)
    P1 = P0 @ pose(4.0, 0.2, 3.0)  # 4 m ahead, 3 deg left: a car at 8 m/s
    t0, t1 = 10**18, 10**18 + 500_000_000
    args = dict(carry=(t0, P0, t1, P1), first=(None, None, t1, P1), no_prev_pose=(t0, None, t1, P1),
                no_pose=(t0, P0, t1, None), nan_pose=(t0, P0, t1, np.full((4, 4), np.nan)),
                same_stamp=(t0, P0, t0, P1), back=(t1, P0, t0, P1), gap=(t0, P0, t0 + 1_000_000_001, P1),
                one_lost=(t0, P0, t0 + 1_000_000_000, P1), jump_t=(t0, P0, t1, P0 @ pose(10.5, 0.0, 0.0)),
                jump_r=(t0, P0, t1, P0 @ pose(1.0, 0.0, 46.0)))[case]
    lk = link_frames(*args, TC)
    assert lk.reset == reason
    assert lk.carries == (reason is None)
    if case == "carry":
        assert np.allclose(lk.T_cur_from_prev @ np.array([4.0, 0.2, 0, 1]), [0, 0, 0, 1], atol=1e-9)
        assert lk.dt_s == pytest.approx(0.5) and rotation_angle_deg(lk.T_cur_from_prev[:3, :3]) == pytest.approx(3.0)


def test_state_counts_and_resets():
    st = TemporalState(TC)
    P = [pose(3.0 * k, 0.0, 0.0) for k in range(5)]
    stamps = [0, 500_000_000, 1_000_000_000, 5_000_000_000, 5_500_000_000]
    reasons = []
    for k, (t, p) in enumerate(zip(stamps, P)):
        lk = st.link(t, p if k != 4 else None)
        reasons.append(lk.reset)
        st.update(torch.zeros(1, 2, 3, 3), t, p if k != 4 else None)
    assert reasons == ["first_frame", None, None, "stamp_gap", "missing_pose"]
    assert st.carried == 2 and st.resets == {**dict.fromkeys(RESET_REASONS, 0), "first_frame": 1, "stamp_gap": 1,
                                             "missing_pose": 1}
    st.reset()
    assert st.link(6_000_000_000, P[0]).reset == "first_frame"


def test_config_checks_name_the_field(tmp_path):
    doc = yaml.safe_load(CFG.read_text())
    assert config_from_dict(config_to_dict(load_config(CFG))) == load_config(CFG)
    for patch, match in [({"max_gap_factor": 0.5}, "temporal.max_gap_factor"), ({"period_s": 0}, "temporal.period_s"),
                         ({"train_frames": 0}, "temporal.train_frames"), ({"bogus": 1}, "bogus")]:
        bad = dict(doc, temporal={**doc["temporal"], **patch})
        with pytest.raises(OccDataError, match=match):
            config_from_dict(bad, "cfg")
    lss = yaml.safe_load((REPO / "config/models/camera.yaml").read_text())
    with pytest.raises(OccDataError, match="temporal: model 'camera' has no temporal state"):
        config_from_dict(dict(lss, temporal={}), "cfg")
    # the twin is the same model without the state (and without its checkpoint's calibrated threshold)
    twin, temporal = load_config(TWIN), load_config(CFG)
    assert twin.temporal is None and dataclasses.replace(temporal, temporal=None, occ_threshold=twin.occ_threshold) == twin


# ------------------------------------------------------------------ training items
def _A(frame_aug, frame):
    """The BEV transform of an augmented frame, from its ego pose: inv(P') @ P = A."""
    return np.linalg.inv(frame_aug.ego_pose) @ frame.ego_pose


def test_flips_are_consistent_over_the_frames_of_an_item_and_move_the_ego_motion(synthetic_dataroot):
    cfg = small(load_config(CFG))
    plain = NuScenesOccDataset(synthetic_dataroot, ["scene-0001"], OCC3D, image_hw=SMALL_HW, history=2)
    aug = NuScenesOccDataset(synthetic_dataroot, ["scene-0001"], OCC3D, image_hw=SMALL_HW, history=2, augment=True,
                             rotate_deg=30.0, nusc=plain.nusc)
    item = plain[2]
    assert [f.stamp_ns for f in item.history] == [item.frame.stamp_ns - 10**9, item.frame.stamp_ns - 5 * 10**8]
    flipped = None
    for epoch in range(16):  # an epoch whose draw flips x or y (det A = -1)
        s = aug[(2, epoch)]
        if np.linalg.det(_A(s.frame, item.frame)[:3, :3]) < 0:
            flipped = s
            break
    assert flipped is not None
    A = _A(flipped.frame, item.frame)
    assert not np.allclose(A, np.eye(4))
    for fa, f in zip(flipped.history + [flipped.frame], item.history + [item.frame]):
        assert np.allclose(_A(fa, f), A, atol=1e-9)  # one transform for every frame of the item
        # every point and camera keeps its place in the world: P' @ x' == P @ x
        assert np.allclose(fa.points[:, :3] @ fa.ego_pose[:3, :3].T + fa.ego_pose[:3, 3],
                           f.points[:, :3] @ f.ego_pose[:3, :3].T + f.ego_pose[:3, 3], atol=2e-3)
        assert np.allclose(fa.ego_pose @ fa.T_base_from_cam, f.ego_pose @ f.T_base_from_cam, atol=1e-6)
        assert np.allclose(fa.points[:, :3], f.points[:, :3] @ A[:3, :3].T, atol=1e-4)
    b_plain, b_aug = collate([item], cfg), collate([flipped], cfg)
    assert b_aug.link_valid[:, 0].tolist() == [False, True, True]
    for k in (1, 2):
        T, Ta = b_plain.T_cur_from_prev[k, 0].double().numpy(), b_aug.T_cur_from_prev[k, 0].double().numpy()
        assert np.allclose(Ta, A @ T @ np.linalg.inv(A), atol=1e-4)  # the motion seen in the augmented frames
        assert np.linalg.det(Ta[:3, :3]) == pytest.approx(1.0, abs=1e-5)  # still a proper rigid motion
        assert not np.allclose(Ta, T, atol=1e-2)  # the flip changed it (the ego drives along x)
        # the previous frame's points, moved by the augmented motion, are the current frame's view of them


@TEMPORAL_CONFIGS
def test_forward_backward_and_scene_starts_in_one_batch(synthetic_dataroot, cfg_path):
    """A batch mixing a scene's first keyframe (no state) and its third (two previous frames):
    the links say so, the loss backpropagates into every parameter, and the state changes the
    output only of the sample that has one."""
    from occ_core.training.train import Trainer

    cfg = small(load_config(cfg_path))
    ds = NuScenesOccDataset(synthetic_dataroot, ["scene-0001"], OCC3D, image_hw=SMALL_HW, history=2, with_flow=True)
    batch = supervise_block(collate([ds[0], ds[2]], cfg))
    assert len(batch.history) == 2 and batch.T_cur_from_prev.shape == (3, 2, 4, 4)
    assert batch.link_valid.tolist() == [[False, False], [False, True], [False, True]]
    torch.manual_seed(0)
    tr = Trainer(cfg, "cpu", torch.ones(18))
    tr.model.train()
    terms = tr.compute_loss(batch)
    terms.total.backward()
    bad = [n for n, p in tr.model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert bad == [] and torch.isfinite(terms.total)
    assert tr.model.training  # the history ran in eval mode and the model is back in train mode
    tr.model.eval()
    with torch.no_grad():
        with_state = tr.forward(batch).logits
        alone = tr.model(batch.inputs).logits
    assert torch.equal(with_state[0], alone[0])  # the scene start has no state
    assert (with_state[1] - alone[1]).abs().max() > 1e-4  # the third keyframe uses one


@TEMPORAL_CONFIGS
def test_loss_falls_on_one_temporal_batch(synthetic_dataroot, cfg_path):
    from occ_core.training.train import Trainer

    cfg = small(load_config(cfg_path), train_frames=1)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=5e-3, steps=6, warmup_steps=0))
    ds = NuScenesOccDataset(synthetic_dataroot, ["scene-0001"], OCC3D, image_hw=SMALL_HW, history=1, with_flow=True)
    batch = supervise_block(collate([ds[1]], cfg))
    assert batch.link_valid.tolist() == [[False], [True]]
    torch.manual_seed(0)
    tr = Trainer(cfg, "cpu", torch.ones(18))
    losses = [tr.train_step(batch).losses["total"] for _ in range(6)]
    assert losses[-1] < 0.7 * losses[0] and min(losses[-2:]) < min(losses[:2]), losses


# ------------------------------------------------------------------ inference
@TEMPORAL_CONFIGS
def test_predictor_state_equals_the_training_forward_and_resets(synthetic_dataroot, cfg_path):
    """Three keyframes predicted in order with the state equal forward_with_history on the
    third with the first two as history (what training runs); a gap, a stamp going back, a pose
    jump or a lost pose resets to single-frame (HBEVOcc: the stack's past slots filled after three
    frames, zero after a reset)."""
    cfg = small(load_config(cfg_path))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    pred = OccupancyPredictor(model, cfg)
    assert pred.needs_ego_pose
    ds = NuScenesOccDataset(synthetic_dataroot, ["scene-0001"], OCC3D, image_hw=SMALL_HW)
    frames = [ds.load_frame(t) for _, t in ds.samples]
    outs = [pred.predict(f) for f in frames]
    assert pred.last_link.carries and pred.state.carried == 2 and pred.state.resets["first_frame"] == 1
    if cfg.hbevocc is not None:  # [frame 2, frame 1 warped, frame 0 warped twice]: every slot filled
        C, K = cfg.hbevocc.channels, cfg.hbevocc.frames
        assert pred.state.bev.shape == (1, K * C, 100, 100)
        assert all(pred.state.bev[:, k * C:(k + 1) * C].abs().max() > 0 for k in range(K))
    batch = collate([NuScenesOccDataset(synthetic_dataroot, ["scene-0001"], OCC3D, image_hw=SMALL_HW, history=2,
                                        nusc=ds.nusc)[2]], cfg)
    with torch.no_grad():
        logits = forward_with_history(model, batch.inputs, batch.history, batch.T_cur_from_prev, batch.link_valid).logits
    # the same labels wherever the training forward's top two classes are not tied (an untrained
    # model's logits are close; summation order may flip a near-tie)
    top2 = logits[0].topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-4
    assert clear.float().mean() > 0.99
    assert torch.equal(logits[0].argmax(0).to(torch.uint8)[clear], torch.from_numpy(outs[2].labels)[clear])
    # the state mattered, and after a gap (or a lost pose) the frame is predicted alone
    single = OccupancyPredictor(model, dataclasses.replace(cfg, temporal=None))
    alone = single.predict(frames[2])
    assert not np.array_equal(alone.labels, outs[2].labels)
    late = dataclasses.replace(frames[2], stamp_ns=frames[2].stamp_ns + 10**10)
    jump = late.ego_pose @ pose(12.0, 0.0, 0.0)  # 12 m in half a second: over max_translation_m
    for frame, reason in [(late, "stamp_gap"), (dataclasses.replace(late, stamp_ns=late.stamp_ns - 5 * 10**8), "stamp_order"),
                          (dataclasses.replace(late, ego_pose=jump), "pose_jump"),
                          (dataclasses.replace(late, stamp_ns=late.stamp_ns + 5 * 10**8, ego_pose=None), "missing_pose")]:
        assert np.array_equal(pred.predict(frame).labels, alone.labels) and pred.last_link.reset == reason
        if cfg.hbevocc is not None:
            assert pred.state.bev[:, C:].abs().max() == 0 and pred.state.bev[:, :C].abs().max() > 0


def _temporal_config(tmp_path, cfg_path=CFG) -> Path:
    doc = yaml.safe_load(cfg_path.read_text())
    doc["image"]["size"] = list(SMALL_HW)
    doc["occ_threshold"] = None  # as small(): the untrained model's argmax
    path = tmp_path / f"{cfg_path.stem}_small.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_occ_predict_runs_scenes_in_order_with_the_state(synthetic_dataroot, tmp_path, capsys):
    from occ_core.formats import occ3d
    from occ_core.training import predict as predict_cli

    cfg_path = _temporal_config(tmp_path)
    out = tmp_path / "pred"
    argv = ["--config", str(cfg_path), "--dataroot", str(synthetic_dataroot), "--split", "train", "--out", str(out),
            "--no-progress"]
    assert predict_cli.main(argv) == 0
    assert "carried over 2 frames, reset on first_frame 1" in capsys.readouterr().out
    ds = NuScenesOccDataset(synthetic_dataroot, ["scene-0001"], OCC3D, image_hw=SMALL_HW)
    ref = load_predictor(cfg_path)
    for _, token in ds.samples:  # the same as one stream through the predictor
        assert np.array_equal(occ3d.read_prediction(occ3d.prediction_path(out, token)),
                              ref.predict(ds.load_frame(token)).labels)
    # a missing last prediction re-runs the scene from its start (the state), and only it is written
    last = occ3d.prediction_path(out, ds.samples[-1][1])
    kept = last.read_bytes()
    last.unlink()
    assert predict_cli.main(argv) == 0
    assert "1 occ3d predictions written, 2 kept" in capsys.readouterr().out and last.read_bytes() == kept


class RecordingPredictor:
    """Wraps a predictor (its state and attributes too) and keeps each frame and prediction."""

    def __init__(self, inner):
        self.inner, self.frames, self.preds, self.links = inner, [], [], []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, frame):
        self.frames.append(frame)
        p = self.inner.predict(frame)
        self.preds.append(p)
        self.links.append(self.inner.last_link)
        return p


@TEMPORAL_CONFIGS
def test_node_playback_equals_offline_sequential_prediction(synthetic_dataroot, tmp_path, cfg_path):
    """The val scene as a bag through occupancy_node (ego motion from the bag's /odom) gives the
    predictions occ-predict writes, frame by frame, with the state carried (not a reset each frame)."""
    from occ_core.formats import occ3d
    from occ_core.training import predict as predict_cli
    from occ_ros.bag.evaluate import EvalConfig, evaluate
    from occ_ros.bag.nusc2bag import ConvertConfig, convert

    scene = "scene-0002"
    cfg_path = _temporal_config(tmp_path, cfg_path)
    bag = tmp_path / "bag"
    convert(ConvertConfig(synthetic_dataroot, bag, scenes=[scene], keyframes_only=True, progress=False))
    off = tmp_path / "offline"
    assert predict_cli.main(["--config", str(cfg_path), "--dataroot", str(synthetic_dataroot), "--split", "val",
                             "--out", str(off), "--no-progress"]) == 0
    rec = RecordingPredictor(load_predictor(cfg_path))
    # slow playback and a deep queue: on a loaded machine no frame may be dropped (each one carries the state).
    # The node waits up to temporal_pose_wait (wall clock) for the /odom pose that travels beside a LiDAR
    # message; this test is about the state, not that latency, so it allows 20 s for a machine loaded by
    # other jobs (a pose that never comes still fails it).
    res = evaluate(EvalConfig(bag, rate=0.05, config=cfg_path, checkpoint=None, worker_queue_size=8,
                              temporal_pose_wait=20.0), predictor=rec, progress=False)
    assert (res.frames, res.predicted, res.dropped) == (3, 3, 0)
    assert [lk.reset for lk in rec.links] == ["first_frame", None, None], res.counters
    ds = NuScenesOccDataset(synthetic_dataroot, [scene], OCC3D, image_hw=SMALL_HW)
    for (_, token), frame, pred in zip(ds.samples, rec.frames, rec.preds):
        offline = ds.load_frame(token)
        assert frame.stamp_ns == offline.stamp_ns
        assert np.allclose(frame.ego_pose, offline.ego_pose, atol=1e-6)  # /odom at the LiDAR stamp = ego_pose
        assert np.array_equal(pred.labels, occ3d.read_prediction(occ3d.prediction_path(off, token)))
    single = OccupancyPredictor(rec.inner.model, dataclasses.replace(rec.inner.cfg, temporal=None))
    assert not np.array_equal(single.predict(rec.frames[2]).labels, rec.preds[2].labels)


def test_shipped_checkpoint_fits_its_config():
    ckpt = REPO / "config" / "models" / "bevformer_temporal_demo.pt"
    assert ckpt.stat().st_size < 5 * 2**20
    pred = load_predictor(CFG, ckpt)
    assert pred.needs_ego_pose and pred.cfg.flow
    with pytest.raises(OccDataError, match="weights do not fit"):
        load_predictor(REPO / "config" / "models" / "camera.yaml", ckpt)


@pytest.mark.parametrize("batch_stats", [False, True])
def test_history_frames_run_in_the_mode_the_config_names(synthetic_dataroot, batch_stats):
    """temporal.history_batch_stats: a training item's previous frames run in training mode
    (BatchNorm on batch statistics, as the current frame) or in eval mode; the model ends in the
    mode it started in, and an eval-mode model runs every frame in eval mode."""
    cfg = small(load_config(HBEV_CFG), train_frames=1)
    cfg = dataclasses.replace(cfg, temporal=dataclasses.replace(cfg.temporal, history_batch_stats=batch_stats))
    model = build_model(cfg)
    modes = []
    model.register_forward_pre_hook(lambda m, args: modes.append(m.training))
    ds = NuScenesOccDataset(synthetic_dataroot, ["scene-0001"], OCC3D, image_hw=SMALL_HW, history=1)
    batch = collate([ds[1]], cfg)
    with torch.no_grad():
        model.train()
        forward_with_history(model, batch.inputs, batch.history, batch.T_cur_from_prev, batch.link_valid)
        assert modes == [batch_stats, True] and model.training
        modes.clear()
        model.eval()
        forward_with_history(model, batch.inputs, batch.history, batch.T_cur_from_prev, batch.link_valid)
        assert modes == [False, False] and not model.training
