"""BEVFormer occupancy (occ_core.models.bevformer): ego-motion alignment of the previous BEV,
forward/backward of bevformer.yaml with both decoders and flow, the temporal path, loss falls,
config checks and the predictor."""

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from occ_core.errors import OccDataError
from occ_core.grid import OCC3D, GridSpec
from occ_core.models.bevformer import BEVFormerOccNet, TemporalSelfAttention, align_bev, bev_reference_points
from occ_core.models.bevformer_sca import bev_cell_centres
from occ_core.models.config import config_from_dict, config_to_dict, load_config
from occ_core.models.occnet import MODELS, build_model
from occ_core.models.predictor import frame_to_inputs, load_predictor

from test_models import make_frame

warnings.filterwarnings("ignore", category=UserWarning)
REPO = Path(__file__).resolve().parent.parent
CFG = REPO / "config" / "models" / "bevformer.yaml"
BEV = GridSpec.from_range("bev_test", (-20.0, -20.0, -1.0, 20.0, 20.0, 5.4), (0.5, 0.5, 6.4))  # 80 x 80 x 1


def tiny(cfg, **bevformer):
    """bevformer.yaml on 32 x 64 images, optionally with other bevformer fields."""
    return dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, size=(32, 64)),
                               bevformer=dataclasses.replace(cfg.bevformer, **bevformer))


def c2h(cfg):
    return dataclasses.replace(cfg, feature_stride=(4, 4, 16), bevformer=dataclasses.replace(cfg.bevformer, decoder="c2h"))


def motion(yaw_deg, tx, ty):
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    T = torch.eye(4, dtype=torch.float64)
    T[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    T[:2, 3] = torch.tensor([tx, ty], dtype=torch.float64)
    return T


def blob(grid, centre_xy, sigma=1.0):
    """(1, 1, X, Y) Gaussian feature centred on the base_link point ``centre_xy``."""
    xy = bev_cell_centres(grid).double()
    d2 = ((xy - torch.tensor(centre_xy, dtype=torch.float64)) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * sigma ** 2)).view(1, 1, *grid.dims[:2]).float()


def centroid(m, grid):
    w = m.reshape(-1).double()
    return (bev_cell_centres(grid).double() * w[:, None]).sum(0) / w.sum()


@pytest.mark.parametrize("yaw,tx,ty", [(30.0, 4.0, -2.5), (-75.0, -3.0, 5.0), (0.0, 6.0, 0.0), (90.0, 0.0, 0.0)])
def test_align_bev_moves_a_blob_where_the_ego_motion_says(yaw, tx, ty):
    """A static feature at p_prev (previous base_link) lands at T_cur_from_prev @ p_prev."""
    p_prev = torch.tensor([5.0, 3.0, 0.0, 1.0], dtype=torch.float64)
    T = motion(yaw, tx, ty)
    p_cur = (T @ p_prev)[:2]
    out = align_bev(blob(BEV, p_prev[:2].tolist()), T.float(), BEV)
    assert out.shape == (1, 1, 80, 80)
    got = centroid(out, BEV)
    assert torch.linalg.norm(got - p_cur) < 0.1, (got, p_cur)
    rotation_only = (T[:2, :2] @ p_prev[:2])
    if tx or ty:  # an implementation that ignores the translation would be |t| away
        assert torch.linalg.norm(got - rotation_only) > 2.0
    # the peak cell is the cell of p_cur
    ix, iy = divmod(int(out.reshape(-1).argmax()), 80)
    assert torch.linalg.norm(bev_cell_centres(BEV)[ix * 80 + iy].double() - p_cur) < 0.5


def test_align_bev_identity_zero_outside_and_batched():
    prev = torch.rand(2, 3, 80, 80)
    assert torch.allclose(align_bev(prev, torch.eye(4), BEV), prev, atol=1e-5)
    # ego moved 10 m forward: the previous map covered x in [-20, 20] of the previous frame,
    # i.e. x in [-30, 10] now; cells ahead of x = 10 m have no history -> exactly 0
    T = torch.stack([motion(0, -10.0, 0), motion(0, 0, 0)]).float()
    out = align_bev(torch.ones(2, 3, 80, 80), T, BEV)
    x = bev_cell_centres(BEV)[:, 0].view(80, 80)
    assert (out[0][:, x > 10.3] == 0).all() and torch.allclose(out[0][:, x < 9.7], torch.ones(()))
    assert torch.allclose(out[1], torch.ones(()))
    with pytest.raises(ValueError, match="T_cur_from_prev"):
        align_bev(prev, torch.eye(3), BEV)
    with pytest.raises(ValueError, match="prev_bev"):
        align_bev(torch.rand(1, 3, 40, 80), torch.eye(4), BEV)


def test_tsa_reference_points_are_the_cell_centres():
    """With zero offsets the TSA samples each query's own cell: a one-hot value map comes back
    at exactly that query (the BEV map flattened as h = X, w = Y, query ix * Y + iy)."""
    X, Y = 5, 7
    ref = bev_reference_points(X, Y)
    tsa = TemporalSelfAttention((X, Y), 4, 1, 1)
    with torch.no_grad():
        tsa.sampling_offsets.bias.zero_()
        tsa.value_proj.weight.copy_(torch.eye(4))
        tsa.output_proj.weight.copy_(torch.eye(4))
    hist = torch.zeros(1, X * Y, 4)
    hist[0, 2 * Y + 5] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # cell (2, 5)
    out = tsa(torch.zeros(1, X * Y, 4), torch.zeros(1, X * Y, 4), hist)
    expect = torch.zeros(1, X * Y, 4)
    expect[0, 2 * Y + 5] = hist[0, 2 * Y + 5] / 2  # mean of [history, current (zero)]
    assert torch.allclose(out, expect, atol=1e-6)
    assert torch.allclose(ref[2 * Y + 5], torch.tensor([5.5 / Y, 2.5 / X]))


@pytest.mark.parametrize("variant", ["zembed", "zembed+flow", "c2h+flow"])
def test_forward_backward(variant):
    cfg = tiny(load_config(CFG))
    if "c2h" in variant:
        cfg = c2h(cfg)
    cfg = dataclasses.replace(cfg, flow="flow" in variant)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    model = build_model(cfg).train()
    assert isinstance(model, BEVFormerOccNet) and MODELS["bevformer"] is BEVFormerOccNet
    out = model(frame_to_inputs(make_frame(), cfg))
    assert out.logits.shape == (1, 18, *OCC3D.dims)
    assert out.bev.shape == (1, cfg.bevformer.embed_dims, 50, 50)
    loss = out.logits.logsumexp(1).mean()
    if cfg.flow:
        assert out.flow.shape == (1, *OCC3D.dims, 2)
        loss = loss + out.flow.square().mean()
    else:
        assert out.flow is None
    loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert bad == []


def test_previous_bev_changes_the_output_and_gets_gradients():
    cfg = tiny(load_config(CFG))
    model = build_model(cfg).eval()
    inputs = frame_to_inputs(make_frame(), cfg)
    with torch.no_grad():
        first = model(inputs)
    prev = (first.bev + torch.randn_like(first.bev)).requires_grad_(True)
    T = motion(10.0, 2.0, -1.0).float()
    second = model(inputs, prev_bev=prev, T_cur_from_prev=T)
    assert (second.logits - first.logits).abs().max() > 1e-3
    second.logits.logsumexp(1).mean().backward()
    assert prev.grad is not None and prev.grad.abs().sum() > 0
    # the motion matters: the same history under another motion gives another output
    with torch.no_grad():
        third = model(inputs, prev_bev=prev, T_cur_from_prev=torch.eye(4))
    assert (third.logits - second.logits).abs().max() > 1e-4
    with pytest.raises(ValueError, match="T_cur_from_prev"):
        model(inputs, prev_bev=prev)


def test_loss_falls_on_one_batch():
    """8 AdamW steps of the real occupancy loss (CE, Lovasz, scene-class affinity) on one batch;
    supervised voxels: a 64 x 64 column block (keeps the test to seconds)."""
    from occ_core.data.nuscenes_dataset import OccBatch
    from occ_core.training.train import Trainer

    cfg = tiny(load_config(CFG))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=5e-3, steps=8))
    inputs = frame_to_inputs(make_frame(), cfg)
    rng = np.random.default_rng(0)
    sem = np.full(OCC3D.dims, 17, np.int64)
    sem[:, :, :3] = 11  # driveable surface below, car and vegetation blocks on it
    for cls in (4, 15):
        for _ in range(4):
            x, y = rng.integers(70, 122, 2)
            sem[x:x + 8, y:y + 8, 3:8] = cls
    mask = torch.zeros(1, *OCC3D.dims, dtype=torch.bool)
    mask[:, 68:132, 68:132] = True
    batch = OccBatch(inputs, torch.from_numpy(sem)[None], mask, mask, None, ["t0"], ["s0"])
    tr = Trainer(cfg, "cpu", torch.ones(18))
    losses = [tr.train_step(batch).losses["total"] for _ in range(8)]
    assert losses[-1] < 0.4 * losses[0] and min(losses[-3:]) < min(losses[:3]), losses


def test_config_checks_name_the_field(tmp_path):
    doc = config_to_dict(load_config(CFG))
    bad = dict(doc, bevformer=dict(doc["bevformer"], decoder="c2h"))
    with pytest.raises(OccDataError, match=r"x\.bevformer\.decoder: c2h .*feature_stride"):
        config_from_dict(bad, "x")
    with pytest.raises(OccDataError, match=r"x\.bevformer\.decoder: 'mlp'"):
        config_from_dict(dict(doc, bevformer=dict(doc["bevformer"], decoder="mlp")), "x")
    with pytest.raises(OccDataError, match=r"x\.bevformer\.embed_dims: 30 must be divisible by num_heads 4"):
        config_from_dict(dict(doc, bevformer=dict(doc["bevformer"], embed_dims=30)), "x")
    with pytest.raises(OccDataError, match=r"x\.bevformer: .*name: bevformer"):
        config_from_dict(dict(doc, name="camera"), "x")
    assert config_from_dict(dict(doc, feature_stride=[4, 4, 16], bevformer=dict(doc["bevformer"], decoder="c2h")))


def test_predictor_runs_bevformer_yaml_from_its_checkpoint(tmp_path):
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
    assert pred.image_hw == (96, 176)
    ref = model.eval()(frame_to_inputs(make_frame(), cfg)).logits[0].argmax(0).numpy()
    assert np.array_equal(out.labels, ref)
