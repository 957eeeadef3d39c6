"""HBEVOcc (``name: hbevocc``): fused branches, HADA sampling, the height-weighted voxel loss,
forward/backward of the config, loss on one batch, the predictor path."""

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from occ_core.errors import OccDataError
from occ_core.grid import OCC3D
from occ_core.models.config import config_from_dict, config_to_dict, load_config
from occ_core.models.hbevocc import HBEVOccNet, HeightAwareDeformableAttention, backward_grid
from occ_core.models.occnet import MODELS, build_model
from occ_core.models.predictor import frame_to_inputs, load_predictor
from occ_core.training.losses import height_layer_weights, height_voxel_loss

from test_models import make_frame

warnings.filterwarnings("ignore", category=UserWarning)
REPO = Path(__file__).resolve().parent.parent
CFG = REPO / "config" / "models" / "hbevocc.yaml"


def tiny(cfg, **changes):
    """hbevocc.yaml on 32 x 64 images (fast)."""
    return dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, size=(32, 64)), **changes)


@pytest.mark.parametrize("flow", [False, True])
def test_forward_backward_and_branch_shapes(flow):
    cfg = tiny(load_config(CFG), flow=flow)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    model = build_model(cfg).train()
    assert isinstance(model, HBEVOccNet) and MODELS["hbevocc"] is HBEVOccNet
    inputs = frame_to_inputs(make_frame(), cfg)
    C, E = cfg.hbevocc.channels, cfg.bevformer.embed_dims
    assert backward_grid(cfg).dims == (50, 50, 1) and cfg.feature_grid.dims == (100, 100, 1)
    feats = model.image_encoder(inputs.images.flatten(0, 1))
    f_bev, f_down, depth, stack = model.forward_bev(feats, inputs, (32, 64))
    assert stack is f_bev  # K = 1: the stack is the BEV itself
    assert f_bev.shape == (1, C, 100, 100) and f_down.shape == (1, C, 50, 50)
    stride = cfg.backbone.out_stride  # LSS depth per image feature pixel
    assert depth.shape == (6, 48, 32 // stride, 64 // stride)
    g = model.backward_bev(feats, inputs, (32, 64))
    assert g.shape == (1, E, 50, 50)
    assert model.back_up(g).shape == (1, C, 100, 100)
    out = model(inputs)
    assert out.logits.shape == (1, 18, *OCC3D.dims)
    assert torch.allclose(out.depth_probs.sum(1), torch.ones(()))
    loss = out.logits.logsumexp(1).mean() + out.depth_probs.square().mean()
    if flow:
        assert out.flow.shape == (1, *OCC3D.dims, 2)
        loss = loss + out.flow.square().mean()
    else:
        assert out.flow is None
    loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert bad == []


def test_both_branches_reach_the_output():
    """Zeroing either branch's BEV changes the logits: the fusion uses both."""
    cfg = tiny(load_config(CFG))
    model = build_model(cfg).eval()
    inputs = frame_to_inputs(make_frame(), cfg)
    with torch.no_grad():
        ref = model(inputs).logits
        orig_back = model.backward_bev
        model.backward_bev = lambda *a: torch.zeros_like(orig_back(*a))
        no_back = model(inputs).logits
        model.backward_bev = orig_back
        orig_fwd = model.forward_bev
        model.forward_bev = lambda *a: tuple(torch.zeros_like(t) if i < 2 else t for i, t in enumerate(orig_fwd(*a)))
        no_fwd = model(inputs).logits
    assert (ref - no_back).abs().max() > 1e-3 and (ref - no_fwd).abs().max() > 1e-3


def test_hada_samples_where_the_offsets_say():
    """sample_points on a known map: offset (+1, 0) cells reads the next x cell, (0, -2) two y
    cells back, fractional offsets interpolate, outside is zero."""
    X, Y = 6, 5
    hada = HeightAwareDeformableAttention(8, (X, Y), num_heads=2, head_dim=4, num_points=3)
    xp = torch.randn(1, 8, X, Y)
    off = torch.zeros(1, 2, 3, 2, X, Y)
    off[:, :, 0, 0] = 1.0  # point 0: +1 cell along x
    off[:, :, 1, 1] = -2.0  # point 1: -2 cells along y
    off[:, :, 2, 0] = 0.5  # point 2: half a cell along x
    s = hada.sample_points(xp, off)  # (1, NH, P, D, X, Y)
    heads = xp.view(1, 2, 4, X, Y)
    assert torch.allclose(s[:, :, 0, :, :-1], heads[..., 1:, :], atol=1e-6)
    assert torch.allclose(s[:, :, 0, :, -1], torch.zeros(1, 2, 4, Y))
    assert torch.allclose(s[:, :, 1, ..., 2:], heads[..., :-2], atol=1e-6)
    assert torch.allclose(s[:, :, 1, ..., :2], torch.zeros(1, 2, 4, X, 2))
    assert torch.allclose(s[:, :, 2, :, :-1], (heads[..., :-1, :] + heads[..., 1:, :]) / 2, atol=1e-6)


def test_hada_offsets_bounded_and_height_keys_used():
    X, Y = 8, 8
    torch.manual_seed(0)
    hada = HeightAwareDeformableAttention(16, (X, Y), num_heads=4, head_dim=4, num_points=2, height_keys=2,
                                          offset_range=3.0)
    with torch.no_grad():
        hada.conv_offset[-1].weight.normal_(std=50.0)
        q = torch.randn(2, 16, X, Y)
        off = hada.sampling_offsets(q)
        assert off.shape == (2, 4, 2, 2, X, Y) and off.abs().max() <= 3.0 and off.abs().max() > 2.5
        ref = hada(q, q)
        assert ref.shape == q.shape
        hada.proj_v_h.weight.zero_()  # the height values carry into the output
        assert (hada(q, q) - ref).abs().max() > 1e-3
    bad = HeightAwareDeformableAttention(16, (X, Y), num_heads=4)
    with pytest.raises(ValueError, match=r"HADA: query and x must be \(B, 16, 8, 8\)"):
        bad(torch.zeros(1, 16, 8, 7), torch.zeros(1, 16, 8, 7))


def test_height_layer_weights_on_a_hand_made_column_set():
    """Four columns; layer 0 fully occupied (4), layer 1 half (2), layer 3 one voxel, others empty:
    w = 3 * (1/3) ** (count / 4) -> 1, sqrt(3), 3 ** 0.75, and 0 for empty layers."""
    Z = 6
    labels = torch.full((2, 2, Z), 17)
    labels[:, :, 0] = 11
    labels[0, :, 1] = 4
    labels[1, 1, 3] = 15
    occ = labels != 17
    counts = occ.reshape(4, Z).sum(0)
    assert counts.tolist() == [4, 2, 0, 1, 0, 0]
    w = height_layer_weights(counts, 1.0, 3.0)
    assert torch.allclose(w, torch.tensor([1.0, math.sqrt(3), 0.0, 3 ** 0.75, 0.0, 0.0]))
    assert torch.equal(height_layer_weights(torch.zeros(Z, dtype=torch.long)), torch.zeros(Z))
    # the loss with uniform logits: every occupied voxel has p_true = 1/18
    logits = torch.zeros(18, 2, 2, Z)
    lp = math.log(1 / 18 + 1e-3)

    def smooth_l1(v):
        return 0.5 * v * v if abs(v) < 1 else abs(v) - 0.5

    expect = (4 * smooth_l1(1.0 * lp) + 2 * smooth_l1(math.sqrt(3) * lp) + smooth_l1(3 ** 0.75 * lp)) / 7
    got = height_voxel_loss(logits, labels, None, free=17, columns=0)
    assert got.item() == pytest.approx(expect, rel=1e-5)
    # the mask removes layer 3's voxel: only layers 0 and 1 count, with the same weights
    mask = torch.ones(2, 2, Z, dtype=torch.bool)
    mask[1, 1, 3] = False
    expect_masked = (4 * smooth_l1(lp) + 2 * smooth_l1(math.sqrt(3) * lp)) / 6
    assert height_voxel_loss(logits, labels, mask, 17, 0).item() == pytest.approx(expect_masked, rel=1e-5)
    # a confident correct prediction costs almost nothing; all-free columns cost exactly 0
    sharp = torch.full((18, 2, 2, Z), -20.0).scatter(0, labels[None], 20.0)
    assert height_voxel_loss(sharp, labels, None, 17, 0).item() < 1e-5
    assert height_voxel_loss(logits, torch.full((2, 2, Z), 17), None, 17, 0).item() == 0.0


def test_height_voxel_loss_draws_columns():
    """columns=1 scores one random column: its own layer counts, so one voxel per layer -> w = 1."""
    labels = torch.full((3, 3, 4), 17)
    labels[..., 0] = 11
    labels[1, 1, 2] = 4
    logits = torch.zeros(18, 3, 3, 4)
    lp = math.log(1 / 18 + 1e-3)
    vals = {round(height_voxel_loss(logits, labels, None, 17, 1, generator=torch.Generator().manual_seed(s)).item(), 6)
            for s in range(40)}
    assert vals == {round(lp * lp / 2 if abs(lp) < 1 else abs(lp) - 0.5, 6)}  # every column: weights 1
    assert height_voxel_loss(logits, labels, None, 17, 0).item() != pytest.approx(list(vals)[0])


def test_loss_falls_on_one_batch():
    """AdamW steps of the configured loss (CE, Lovasz, scene-class affinity, LiDAR depth,
    height-weighted voxel loss) on one batch; supervised voxels: a 64 x 64 column block."""
    from occ_core.data.nuscenes_dataset import OccBatch
    from occ_core.training.train import Trainer

    cfg = tiny(load_config(CFG))
    assert cfg.loss.height_voxel == 0.1
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=5e-3, steps=6))
    frame = make_frame()
    # the training loader always carries the LiDAR points (depth targets); frame_to_inputs
    # leaves them out for camera-only models
    inputs = dataclasses.replace(frame_to_inputs(frame, cfg), points=[torch.from_numpy(frame.points[:, :5])])
    rng = np.random.default_rng(0)
    sem = np.full(OCC3D.dims, 17, np.int64)
    sem[:, :, :3] = 11
    for cls in (4, 15):
        for _ in range(4):
            x, y = rng.integers(70, 122, 2)
            sem[x:x + 8, y:y + 8, 3:8] = cls
    mask = torch.zeros(1, *OCC3D.dims, dtype=torch.bool)
    mask[:, 68:132, 68:132] = True
    batch = OccBatch(inputs, torch.from_numpy(sem)[None], mask, mask, None, ["t0"], ["s0"])
    tr = Trainer(cfg, "cpu", torch.ones(18))
    results = [tr.train_step(batch).losses for _ in range(6)]
    occ = [r["total"] - r["depth"] for r in results]  # the voxel terms
    assert all(r["height_voxel"] > 0 and r["depth"] > 0 for r in results)
    assert occ[-1] < 0.6 * occ[0] and min(occ[-2:]) < min(occ[:2]), occ
    assert results[-1]["height_voxel"] < results[0]["height_voxel"]
    assert results[-1]["depth"] < results[0]["depth"]


def test_config_checks_name_the_field():
    doc = config_to_dict(load_config(CFG))
    with pytest.raises(OccDataError, match=r"x\.hbevocc: the hbevocc model needs an 'lss' section"):
        config_from_dict(dict(doc, lss=None), "x")
    with pytest.raises(OccDataError, match=r"x\.hbevocc\.back_stride: 3 must divide"):
        config_from_dict(dict(doc, hbevocc=dict(doc["hbevocc"], back_stride=3)), "x")
    with pytest.raises(OccDataError, match=r"x\.feature_stride: .*Z' = 1"):
        config_from_dict(dict(doc, feature_stride=[2, 2, 8]), "x")
    with pytest.raises(OccDataError, match=r"x\.bevformer\.decoder: 'c2h'"):
        config_from_dict(dict(doc, bevformer=dict(doc["bevformer"], decoder="c2h")), "x")
    with pytest.raises(OccDataError, match=r"x\.hbevocc: .*name: hbevocc"):
        config_from_dict(dict(doc, name="bevformer"), "x")
    with pytest.raises(OccDataError, match=r"x\.bevformer: .*bevformer or hbevocc"):
        config_from_dict(dict(doc, bevformer=None), "x")
    with pytest.raises(OccDataError, match=r"x\.loss\.height_voxel_weights: .*0 < w_min <= w_max"):
        config_from_dict(dict(doc, loss=dict(doc["loss"], height_voxel_weights=[3.0, 1.0])), "x")
    with pytest.raises(OccDataError, match=r"x\.hbevocc\.hada_offset_range"):
        config_from_dict(dict(doc, hbevocc=dict(doc["hbevocc"], hada_offset_range=0.0)), "x")


def test_predictor_runs_hbevocc_yaml_from_its_checkpoint(tmp_path):
    """The node / occ-predict path: load_predictor(config, checkpoint) -> predict(SensorFrame)."""
    cfg = load_config(CFG)
    assert cfg.image_hw == (96, 176) and cfg.uses_camera
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    torch.save({"model": model.state_dict()}, tmp_path / "m.pt")
    pred = load_predictor(CFG, tmp_path / "m.pt")
    out = pred.predict(make_frame())
    assert out.labels.shape == OCC3D.dims and out.labels.dtype == np.uint8 and out.flow is None
    ref = model.eval()(frame_to_inputs(make_frame(), cfg)).logits[0].argmax(0).numpy()
    assert np.array_equal(out.labels, ref)


# ------------------------------------------------------------------ multi-frame (hbevocc.frames > 1)
MF_CFG = REPO / "config" / "models" / "hbevocc_temporal.yaml"
FLOW_CFG = REPO / "config" / "models" / "hbevocc_flow.yaml"  # its single-frame twin


def _slots(stack, k):
    """(B, K, X, Y) of a 1-channel-per-slot stack."""
    return stack.view(stack.shape[0], k, *stack.shape[-2:])


def test_bev_stack_warps_drops_the_oldest_and_zeros_resets():
    """push_bev_stack on hand-set slots (1 channel each, K = 3, 0.5 m cells): a pure translation
    of (4, -2) cells moves slot 0 exactly that many cells into slot 1; a rotation + translation
    puts each slot's blob at T @ p; the oldest slot (a constant 7) is gone; a batch item whose link
    does not carry gets zeros in its past slots while the other keeps its own."""
    from occ_core.models.temporal import push_bev_stack
    from test_models_bevformer import BEV, blob, centroid, motion

    K, X, Y = 3, *BEV.dims[:2]
    p0, p1 = [-3.0, 4.0], [5.0, -2.0]
    old = torch.cat([blob(BEV, p0, 0.8), blob(BEV, p1, 0.8), torch.full((1, 1, X, Y), 7.0)], 1)  # (1, 3, X, Y)
    old = torch.cat([old, 0.5 * old])  # batch of 2
    cur = torch.cat([blob(BEV, [0.0, 0.0], 0.8), blob(BEV, [1.0, 1.0], 0.8)])  # (2, 1, X, Y)

    # pure translation by whole cells: an exact shift
    T = motion(0.0, 2.0, -1.0)
    new = _slots(push_bev_stack(old, cur, T.float(), None, BEV, K), K)
    assert new.shape == (2, K, X, Y) and torch.equal(new[:, 0], cur[:, 0])
    assert torch.allclose(new[:, 1, 4:, :-2], old[:, 0, :-4, 2:], atol=1e-6)
    assert torch.allclose(new[:, 2, 4:, :-2], old[:, 1, :-4, 2:], atol=1e-6)
    i0 = torch.tensor(divmod(int(old[0, 0].argmax()), Y))
    assert (torch.tensor(divmod(int(new[0, 1].argmax()), Y)) - i0).tolist() == [4, -2]
    assert new.max() <= 1.0 + 1e-6  # the constant-7 oldest slot was dropped

    # rotation and translation; item 1's link does not carry
    T = motion(30.0, 3.0, -1.5)
    new = _slots(push_bev_stack(old, cur, T.float(), torch.tensor([True, False]), BEV, K), K)
    for slot, p in ((1, p0), (2, p1)):
        expect = (T @ torch.tensor([*p, 0.0, 1.0], dtype=torch.float64))[:2]
        assert torch.linalg.norm(centroid(new[0, slot], BEV) - expect) < 0.1
        assert torch.linalg.norm(centroid(new[0, slot], BEV) - torch.tensor(p, dtype=torch.float64) - T[:2, 3]) > 1.0
    assert torch.equal(new[1, 0], cur[1, 0]) and new[1, 1:].abs().max() == 0
    # two steps: the first frame's blob reaches slot 2 moved by both motions; no previous stack: zeros
    first = push_bev_stack(None, blob(BEV, p0, 0.8), None, None, BEV, K)
    assert _slots(first, K)[0, 1:].abs().max() == 0
    T2 = motion(-20.0, 1.0, 2.0)
    two = push_bev_stack(push_bev_stack(first, torch.zeros(1, 1, X, Y), T.float(), None, BEV, K),
                         torch.zeros(1, 1, X, Y), T2.float(), None, BEV, K)
    expect = (T2 @ T @ torch.tensor([*p0, 0.0, 1.0], dtype=torch.float64))[:2]
    assert torch.linalg.norm(centroid(_slots(two, K)[0, 2], BEV) - expect) < 0.15
    with pytest.raises(ValueError, match="stack must be"):
        push_bev_stack(old[:, :2], cur, T.float(), None, BEV, K)
    with pytest.raises(ValueError, match="needs T_cur_from_prev"):
        push_bev_stack(old, cur, None, None, BEV, K)


def test_single_frame_state_dict_is_unchanged_and_multi_frame_only_adds_the_reduction():
    """frames 1 (hbevocc.yaml) builds exactly the shipped hbevocc_demo.pt's keys and shapes; the
    multi-frame config adds only the stack's reduction conv to its single-frame twin
    (hbevocc_flow.yaml), and its other weights start equal."""
    from occ_core.models.predictor import load_checkpoint_state

    single = build_model(load_config(CFG))
    assert load_config(CFG).hbevocc.frames == 1 and single.temporal_reduce is None
    shipped = load_checkpoint_state(REPO / "config" / "models" / "hbevocc_demo.pt")["model"]
    assert {k: tuple(v.shape) for k, v in single.state_dict().items()} == {k: tuple(v.shape) for k, v in shipped.items()}
    single, multi = build_model(load_config(FLOW_CFG)), build_model(load_config(MF_CFG))
    sd1, sdk = single.state_dict(), multi.state_dict()
    extra = sorted(set(sdk) - set(sd1))
    assert set(sd1) <= set(sdk) and extra and all(k.startswith("temporal_reduce.") for k in extra)
    assert sdk["temporal_reduce.0.weight"].shape == (32, 3 * 32, 3, 3)
    assert all(torch.equal(sd1[k], sdk[k]) for k in sd1)
    with pytest.raises(ValueError, match="single-frame model .* has no state"):
        single(frame_to_inputs(make_frame(), load_config(CFG)), torch.zeros(1, 32, 100, 100), torch.eye(4))


def test_multi_frame_model_carries_its_stack():
    """The output state is [this frame's forward BEV, the previous stack's slots 0..K-2 warped];
    it changes the logits; an item with prev_valid False predicts as with no state."""
    from occ_core.models.temporal import warp_bev

    cfg = tiny(load_config(MF_CFG))
    C, K = cfg.hbevocc.channels, cfg.hbevocc.frames
    model = build_model(cfg).eval()
    one = frame_to_inputs(make_frame(), cfg)
    two = dataclasses.replace(one, **{k: torch.cat([getattr(one, k)] * 2) for k in ("images", "intrinsics", "T_base_from_cam")})
    T = torch.from_numpy(np.array([[0.8, -0.6, 0, 1.6], [0.6, 0.8, 0, -0.8], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32))
    with torch.no_grad():
        first = model(two)
        assert first.bev.shape == (2, K * C, 100, 100)
        assert first.bev[:, :C].abs().max() > 0 and first.bev[:, C:].abs().max() == 0
        # a hand-set previous stack with something in every slot
        prev = torch.randn(2, K * C, 100, 100, generator=torch.Generator().manual_seed(0))
        second = model(two, prev, T, torch.tensor([True, False]))
    assert torch.equal(second.bev[:, :C], first.bev[:, :C])  # this frame's own BEV in front
    assert torch.allclose(second.bev[0, C:], warp_bev(prev[:1, :(K - 1) * C], T, cfg.feature_grid)[0], atol=1e-6)
    assert second.bev[1, C:].abs().max() == 0
    assert (second.logits[0] - first.logits[0]).abs().max() > 1e-4  # the state is used
    assert torch.allclose(second.logits[1], first.logits[1], atol=1e-5)  # the reset item is single-frame


def test_multi_frame_config_checks_name_the_field():
    doc = config_to_dict(load_config(MF_CFG))
    twin = load_config(MF_CFG)
    single = load_config(FLOW_CFG)  # the same but for the stack and its checkpoint's calibrated threshold
    assert dataclasses.replace(twin, temporal=None, hbevocc=dataclasses.replace(twin.hbevocc, frames=1),
                               occ_threshold=single.occ_threshold) == single
    base = load_config(CFG)  # hbevocc.yaml trains 3000 steps; the flow pair 1500, as the shipped temporal checkpoint
    assert single.train == dataclasses.replace(base.train, steps=1500)
    assert dataclasses.replace(single, flow=False, occ_threshold=None, train=base.train) == dataclasses.replace(base, occ_threshold=None)
    assert twin.temporal.train_frames == twin.hbevocc.frames - 1
    with pytest.raises(OccDataError, match=r"x\.hbevocc\.frames: 3 stacks past frames' BEVs, which needs a 'temporal'"):
        config_from_dict(dict(doc, temporal=None), "x")
    with pytest.raises(OccDataError, match=r"x\.hbevocc\.frames: 1; a temporal hbevocc model"):
        config_from_dict(dict(doc, hbevocc=dict(doc["hbevocc"], frames=1)), "x")
    with pytest.raises(OccDataError, match=r"x\.hbevocc\.frames: expected an integer >= 1, got 0"):
        config_from_dict(dict(doc, hbevocc=dict(doc["hbevocc"], frames=0), temporal=None), "x")


def test_motion_blocks_reach_a_moved_object_that_the_reduction_alone_does_not():
    """hbevocc.motion_dilations: the reduced stack at a cell depends on the previous frame 10
    forward cells (8 m) away only through the dilated blocks; their reach is 1 + 2 * sum(d) cells
    (the 3x3 reduction's 1, then two convs per block)."""
    cfg = load_config(MF_CFG)
    moving = dataclasses.replace(cfg, hbevocc=dataclasses.replace(cfg.hbevocc, motion_dilations=(2, 4)))
    influence = {}
    for name, c in (("reduction", cfg), ("motion", moving)):
        model = build_model(c).eval()
        C, K = c.hbevocc.channels, c.hbevocc.frames
        stack = torch.randn(1, K * C, 40, 40, generator=torch.Generator().manual_seed(0)).requires_grad_()
        bev = model.temporal_reduce(stack)
        if model.temporal_motion is not None:
            bev = model.temporal_motion(bev)
        bev[0, :, 20, 20].sum().backward()
        influence[name] = stack.grad[0, C:].abs().sum(0)[20]  # (40,) along x through the centre cell
    assert influence["reduction"][21] > 0 and influence["reduction"][22:].sum() == 0
    assert influence["motion"][30] > 0 and influence["motion"][10] > 0  # 10 cells ahead and behind
    assert influence["motion"][20 + 13] > 0 and influence["motion"][20 + 14:].sum() == 0
    assert build_model(cfg).temporal_motion is None  # the shipped config: no blocks, same weights
    single = config_to_dict(load_config(CFG))
    with pytest.raises(OccDataError, match=r"motion_dilations: \[2\]; expected dilations >= 1, on a multi-frame"):
        config_from_dict(dict(single, hbevocc=dict(single["hbevocc"], motion_dilations=[2])))


def test_flow_stack_reads_the_raw_stack_far_away_and_leaves_occupancy_alone():
    """hbevocc.flow_stack_dilations: the flow at a cell depends on a previous frame's BEV 10 forward
    cells (8 m, a car at 16 m/s between keyframes) away, up to 1 + 2 * sum(d) cells; the occupancy
    logits are those of the same weights without the flow encoder (its path is unchanged)."""
    cfg = tiny(load_config(MF_CFG))
    C, K = cfg.hbevocc.channels, cfg.hbevocc.frames
    wide = dataclasses.replace(cfg, hbevocc=dataclasses.replace(cfg.hbevocc, flow_stack_dilations=(2, 4)))
    assert config_from_dict(config_to_dict(wide)) == wide
    model = build_model(wide).eval()
    assert model.flow_head.net[0][0].in_channels == 3 * C
    stack = torch.randn(1, K * C, 100, 100, generator=torch.Generator().manual_seed(0)).requires_grad_()
    motion = model.flow_stack(stack)  # (1, C, 100, 100)
    motion[0, :, 50, 50].sum().backward()
    reach = stack.grad[0, C:].abs().sum(0)[:, 50]  # (100,) along x through the centre cell, past slots only
    assert reach[60] > 0 and reach[40] > 0  # 10 cells ahead and behind
    assert reach[50 + 13] > 0 and reach[50 + 14:].sum() == 0
    # end to end, one batch of two: the flow sees a change of the previous stack 10 cells away
    one = frame_to_inputs(make_frame(), wide)
    two = dataclasses.replace(one, **{k: torch.cat([getattr(one, k)] * 2) for k in ("images", "intrinsics", "T_base_from_cam")})
    prev = torch.zeros(2, K * C, 100, 100)
    prev[1, :, 60, 50] = 5.0
    model.zero_grad()
    out = model(two, prev, torch.eye(4))
    # the flow of the Occ3D cells under the feature cell (50, 50) (0.8 m cells: Occ3D 100..101)
    assert (out.flow[0, 100:102, 100:102] - out.flow[1, 100:102, 100:102]).abs().max() > 1e-6
    # the occupancy path does not go through the flow encoder
    out.logits.sum().backward()
    assert all(p.grad is None for p in model.flow_stack.parameters())
    assert model.temporal_reduce[0].weight.grad.abs().sum() > 0
    doc = config_to_dict(load_config(MF_CFG))
    with pytest.raises(OccDataError, match=r"flow_stack_dilations: \[2\]; expected dilations >= 1, for a flow head "
                                           r"\(flow: false\)"):
        config_from_dict(dict(doc, flow=False, hbevocc=dict(doc["hbevocc"], flow_stack_dilations=[2])))
    single = config_to_dict(load_config(FLOW_CFG))
    with pytest.raises(OccDataError, match=r"flow_stack_dilations: \[2\].*frames >= 2, got 1"):
        config_from_dict(dict(single, hbevocc=dict(single["hbevocc"], flow_stack_dilations=[2])))
