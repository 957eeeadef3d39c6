"""Occupancy models: configs, geometry of the pieces, forward/backward of every config, predictor."""

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from occ_core.data.transforms import prepare_image
from occ_core.errors import OccDataError
from occ_core.frame import SensorFrame
from occ_core.grid import OCC3D
from occ_core.models.cascade import CascadeRefiner
from occ_core.models.config import BEVEncoderConfig, CascadeConfig, LSSConfig, config_from_dict, config_to_dict, load_config
from occ_core.models.heads import ChannelToHeightHead, FlowHead
from occ_core.models.lss import depth_bin_centres, frustum_points, lidar_depth_targets
from occ_core.models.occnet import build_model
from occ_core.models.predictor import frame_to_inputs, load_predictor
from occ_core.rig import load_rig

warnings.filterwarnings("ignore", category=UserWarning)
CONFIGS = sorted((Path(__file__).resolve().parent.parent / "config" / "models").glob("*.yaml"))


def tiny(cfg):
    """The same architecture on 32 x 64 images (fast)."""
    return dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, size=(32, 64)))


def make_frame(seed=0, n_points=3000):
    rig = load_rig().scaled(160, 90)
    rng = np.random.default_rng(seed)
    pts = np.concatenate([rng.uniform([-40, -40, -1], [40, 40, 5], (n_points, 3)), rng.uniform(0, 1, (n_points, 2))], 1)
    return SensorFrame(0, rig.camera_names, [rng.integers(0, 255, (90, 160, 3), dtype=np.uint8) for _ in rig.cameras],
                       np.stack([c.K for c in rig.cameras]), np.stack([c.T_base_from_cam for c in rig.cameras]),
                       pts.astype(np.float32), rig.lidar.T_base_from_lidar)


def test_all_five_configs_present():
    assert {p.stem for p in CONFIGS} >= {"camera", "lidar", "fusion", "fusion_cascade", "fusion_flow"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_forward_backward_every_config(path):
    cfg = tiny(load_config(path))
    assert config_from_dict(config_to_dict(cfg)) == cfg
    torch.manual_seed(0)
    model = build_model(cfg).train()
    out = model(frame_to_inputs(make_frame(), cfg))
    assert out.logits.shape == (1, 18, *OCC3D.dims)
    loss = out.logits.logsumexp(1).mean()
    if cfg.lss is not None:
        assert out.depth_probs.shape[1] == depth_bin_centres(cfg.lss).numel()
        assert torch.allclose(out.depth_probs.sum(1), torch.ones(()))
        loss = loss + out.depth_probs.square().mean()
    else:
        assert out.depth_probs is None
    if cfg.cascade is not None:
        assert out.coarse_logits.shape == (1, 18, 100, 100, 8)
        loss = loss + out.coarse_logits.logsumexp(1).mean()
    if cfg.flow:
        assert out.flow.shape == (1, *OCC3D.dims, 2)
        loss = loss + out.flow.square().mean()
    else:
        assert out.flow is None
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    # the cascade MLP only gets gradients where voxels were refined (random init may refine none)
    missing = [n for n in missing if not (n.startswith("cascade.") and out.refined.shape[0] == 0)]
    assert missing == []


SHIPPED = sorted(CONFIGS[0].parent.glob("*_demo.pt"))


@pytest.mark.parametrize("ckpt", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_checkpoint_fits_its_config(ckpt):
    """config/models/<name>_demo.pt loads into <name>.yaml's model and stays a few MB."""
    cfg = ckpt.with_name(ckpt.name.removesuffix("_demo.pt") + ".yaml")
    assert cfg.exists(), f"{ckpt.name} has no {cfg.name} beside it"
    assert ckpt.stat().st_size < 5_000_000
    pred = load_predictor(cfg, ckpt)
    assert sum(p.numel() for p in pred.model.parameters()) > 0


def test_build_model_is_seeded_and_leaves_global_rng_alone():
    cfg = tiny(load_config(CONFIGS[0]))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_model(cfg), build_model(cfg)
    assert torch.rand(1) == before
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), na
    c = build_model(dataclasses.replace(cfg, seed=1))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_config_errors_name_file_and_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: lidar\nlidar: {channels: [16, 16], max_sweps: 3}\n")
    with pytest.raises(OccDataError, match=r"bad.yaml.lidar: unknown key\(s\) \['max_sweps'\]"):
        load_config(p)
    p.write_text("name: lidar\nlidar: {channels: [16, 16.5]}\n")
    with pytest.raises(OccDataError, match=r"bad.yaml.lidar.channels\[1\]: expected an integer"):
        load_config(p)
    p.write_text("name: lidar\nfeature_stride: [3, 2, 2]\nlidar: {}\n")
    with pytest.raises(OccDataError, match="feature_stride"):
        load_config(p)


def test_prepare_image_updates_intrinsics():
    """A blob centred on pixel (u, v) lands where K' K^-1 (u, v, 1) says (centroid within 0.15 px)."""
    K = np.array([[400.0, 0, 310.0], [0, 400.0, 170.0], [0, 0, 1]])
    centres = np.array([[420, 260], [150, 120], [600, 300]])
    img = np.zeros((360, 640, 3), np.uint8)
    for u, v in centres:
        img[v - 4:v + 5, u - 4:u + 5] = 255  # 9x9 blob centred on (u, v)
    p = prepare_image(img, K, (96, 176), (0, 0, 0), (1, 1, 1))
    assert p.image.shape == (3, 96, 176)
    expect = (p.intrinsics @ np.linalg.inv(K) @ np.c_[centres, np.ones(3)].T).T[:, :2]
    m = p.image[0]
    for u, v in expect:
        iu, iv = int(round(u)), int(round(v))
        ys, xs = np.mgrid[iv - 3:iv + 4, iu - 3:iu + 4]
        win = m[iv - 3:iv + 4, iu - 3:iu + 4]
        assert abs((win * xs).sum() / win.sum() - u) < 0.15 and abs((win * ys).sum() / win.sum() - v) < 0.15


def test_frustum_points_project_back_to_their_pixels():
    rig = load_rig().scaled(176, 99)
    K = torch.tensor(np.stack([c.K for c in rig.cameras]), dtype=torch.float32)[None]
    T = torch.tensor(np.stack([c.T_base_from_cam for c in rig.cameras]), dtype=torch.float32)[None]
    d = torch.tensor([2.0, 10.0])
    pts = frustum_points(d, K, T, (96, 176), (6, 11))  # (1, 6, 2, 6, 11, 3)
    Tinv = torch.linalg.inv(T[0])
    pc = torch.einsum("nij,ndhwj->ndhwi", Tinv[:, :3, :3], pts[0]) + Tinv[:, None, None, None, :3, 3]
    assert torch.allclose(pc[..., 2], d.view(1, 2, 1, 1).expand_as(pc[..., 2]), atol=1e-4)
    uvw = torch.einsum("nij,ndhwj->ndhwi", K[0], pc)
    u = uvw[..., 0] / uvw[..., 2]
    expect_u = (torch.arange(11) + 0.5) * 16 - 0.5
    assert torch.allclose(u, expect_u.expand_as(u), atol=1e-3)


def test_lidar_depth_targets_take_the_nearest_point_per_feature_pixel():
    K = torch.tensor([[[[100.0, 0, 87.5], [0, 100.0, 47.5], [0, 0, 1]]]])
    T = torch.eye(4)[None, None]  # camera frame == base_link
    pts = torch.tensor([[0.0, 0.0, 10.3, 0, 0], [0.0, 0.0, 7.6, 0, 0], [0.0, 0.0, -5.0, 0, 0], [0.0, 0.0, 60.0, 0, 0]])
    cfg = LSSConfig(depth=(1.0, 49.0, 1.0))
    t = lidar_depth_targets([pts], K, T, (96, 176), (6, 11), cfg)
    assert t.shape == (1, 6, 11)
    # (u, v) = (87.5, 47.5) -> feature pixel (floor(88 * 11 / 176), floor(48 * 6 / 96)) = (5, 3)
    assert t[0, 3, 5] == 6  # nearest point 7.6 m -> bin floor(6.6) = 6; behind-camera and 60 m ignored
    t[0, 3, 5] = -1
    assert (t == -1).all()


def test_channel_to_height_layout():
    head = ChannelToHeightHead(4, 1, 3, (8, 6, 5), bev_channels=4)
    with torch.no_grad():
        head.cls.weight.zero_()
        k, z = torch.meshgrid(torch.arange(3), torch.arange(5), indexing="ij")
        head.cls.bias.copy_((100 * k + z).flatten().float())  # channel k*Z + z
    y = head.eval()(torch.randn(2, 4, 8, 6, 1))
    assert y.shape == (2, 3, 8, 6, 5)
    assert torch.equal(y[1, 2, 7, 5], torch.tensor([200.0, 201, 202, 203, 204]))
    assert torch.equal(y[0, :, 3, 2, 4], torch.tensor([4.0, 104, 204]))


def _influence_radius(head: ChannelToHeightHead, size: int = 64) -> int:
    """Chebyshev distance (cells) from a perturbed BEV cell to the farthest logit it changes."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, size, size, 1)
    with torch.no_grad():
        base = head.eval()(x)
        x2 = x.clone()
        x2[0, :, size // 2, size // 2] += 10.0
        changed = (head(x2) - base).abs().amax(dim=(0, 1, 4)) > 1e-6  # (X, Y)
    ix, iy = torch.nonzero(changed, as_tuple=True)
    return int(torch.maximum((ix - size // 2).abs(), (iy - size // 2).abs()).max())


@pytest.mark.parametrize("train", [True, False])
def test_flow_head_bev_path_equals_the_volume_path(train):
    """FlowHead on a BEV input (Z' = 1) runs 2D convs and copies the flow to every height: the same
    flow, input gradients, weight gradients and BatchNorm statistics as the 3x3x3 volume path; an
    input with Z' > 1 takes the volume path."""
    import copy

    gen = torch.Generator().manual_seed(0)
    head = FlowHead(8, (20, 24, 4)).train(train)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    ref = copy.deepcopy(head)
    x = torch.randn(2, 8, 10, 12, 1, generator=gen)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = head(xa), ref.forward_volume(xb)
    assert a.shape == (2, 20, 24, 4, 2) and torch.equal(a[:, :, :, 0], a[:, :, :, 3])
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    w = torch.randn(a.shape, generator=gen)
    (a * w).sum().backward()
    (b * w).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-4, rtol=1e-4)
    for (name, p), q in zip(head.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-3, rtol=1e-4), name
    for key, v in head.state_dict().items():
        assert torch.allclose(v.float(), ref.state_dict()[key].float(), atol=1e-6), key
    vol = torch.randn(1, 8, 10, 12, 2, generator=gen)
    with torch.no_grad():
        assert torch.equal(head(vol), head.forward_volume(vol))


def test_multiscale_bev_encoder_widens_the_c2h_head_receptive_field():
    """bev_encoder (FlashOcc CustomResNet + FPN-LSS): same output layout, far wider reach than two BasicBlocks."""
    plain = ChannelToHeightHead(4, 1, 3, (64, 64, 2), bev_channels=8)
    wide = ChannelToHeightHead(4, 1, 3, (64, 64, 2), bev_channels=8,
                               bev_encoder=BEVEncoderConfig(channels=(8, 16, 32), blocks=(2, 2, 2)))
    assert wide(torch.randn(2, 4, 64, 64, 1)).shape == (2, 3, 64, 64, 2)
    r_plain, r_wide = _influence_radius(plain), _influence_radius(wide)
    assert r_plain == 5  # reduce + 2 BasicBlocks: five 3x3 convs
    assert r_wide >= 4 * r_plain, (r_plain, r_wide)


def test_bev_encoder_config_checks(tmp_path):
    p = tmp_path / "cam.yaml"
    base = "name: camera\nfeature_stride: [2, 2, 16]\nlss: {}\n"
    p.write_text(base + "head: voxel\nbev_encoder: {}\n")
    with pytest.raises(OccDataError, match=r"cam.yaml.bev_encoder: .*c2h head; head is 'voxel'"):
        load_config(p)
    p.write_text(base + "head: c2h\nbev_encoder: {channels: [8, 16], blocks: [1]}\n")
    with pytest.raises(OccDataError, match=r"cam.yaml.bev_encoder: expected channels and blocks of the same length"):
        load_config(p)
    p.write_text(base + "head: c2h\nbev_encoder: {channels: [8, 16], blocks: [1, 1]}\n")
    cfg = load_config(p)
    assert cfg.bev_encoder == BEVEncoderConfig(channels=(8, 16), blocks=(1, 1))
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_cascade_refines_only_fine_voxels_of_predicted_occupied_coarse_voxels():
    grid = OCC3D
    ref = CascadeRefiner(CascadeConfig(max_voxels=10, hidden=8), 18, 17, 4, 0, 0, grid, (2, 2, 2))
    coarse = torch.zeros(1, 18, 100, 100, 8)
    coarse[:, 17] = 5.0  # free everywhere ...
    coarse[0, 4, 30, 61, 2] = 10.0  # ... except one coarse car voxel
    base = torch.randn(1, 18, 200, 200, 16)
    out, refined = ref(coarse, base, torch.randn(1, 4, 100, 100, 8), None, None, None, None, None)
    expect = {(0, 60 + i, 122 + j, 4 + k) for i in (0, 1) for j in (0, 1) for k in (0, 1)}
    assert {tuple(r) for r in refined.tolist()} == expect
    changed = (out != base).any(1).nonzero()
    assert {tuple(r) for r in changed.tolist()} <= expect and len(changed) > 0


@pytest.mark.parametrize("name", ["lidar", "fusion_flow"])
def test_load_predictor_random_init_is_deterministic(name, tmp_path):
    path = next(p for p in CONFIGS if p.stem == name)
    cfg = tiny(load_config(path))
    cfg_path = tmp_path / "m.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    frame = make_frame(1)
    a = load_predictor(cfg_path, None).predict(frame)
    b = load_predictor(cfg_path, None).predict(frame)
    assert a.labels.shape == OCC3D.dims and a.labels.dtype == np.uint8 and a.labels.max() <= 17
    assert a.scores.dtype == np.float32 and (a.scores > 1 / 18 - 1e-6).all() and (a.scores <= 1).all()
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.scores, b.scores)
    assert (a.flow is not None) == cfg.flow
    if cfg.flow:
        assert a.flow.shape == (*OCC3D.dims, 2)
    # a saved state_dict reloads into the same predictions
    pred = load_predictor(cfg_path, None)
    torch.save({"model": pred.model.state_dict()}, tmp_path / "w.pt")
    c = load_predictor(cfg_path, tmp_path / "w.pt").predict(frame)
    assert np.array_equal(a.labels, c.labels)
    # a frame without LiDAR points (or with all points out of range) still predicts
    empty = dataclasses.replace(frame, points=np.zeros((0, 5), np.float32))
    assert load_predictor(cfg_path, None).predict(empty).labels.shape == OCC3D.dims
    (tmp_path / "bad.pt").write_bytes((tmp_path / "w.pt").read_bytes()[:1000])
    with pytest.raises(OccDataError, match="bad.pt"):
        load_predictor(cfg_path, tmp_path / "bad.pt")


def test_lidar_encoder_is_deterministic_on_cpu_and_restores_threads():
    """spconv's CPU kernels race with >1 torch thread (see lidar._CpuThreads): repeated
    forward/backward passes must agree exactly, and the thread count must come back."""
    from occ_core.models.config import LidarConfig
    from occ_core.models.lidar import LidarEncoder

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        enc = LidarEncoder(LidarConfig((8, 16)), OCC3D, (2, 2, 2))
        pts = torch.cat([torch.rand(20000, 3) * torch.tensor([80.0, 80, 6]) - torch.tensor([40.0, 40, 1]),
                         torch.rand(20000, 2)], 1)
        runs = []
        for _ in range(6):
            enc.zero_grad()
            y = enc([pts])
            (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
            runs.append((y.detach(), enc.net[0].weight.grad.clone()))
            assert torch.get_num_threads() == 2
        assert all(torch.equal(r[0], runs[0][0]) and torch.equal(r[1], runs[0][1]) for r in runs[1:])
    finally:
        torch.set_num_threads(threads)
