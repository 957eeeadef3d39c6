"""OccNeRF: contraction, rendering, photometric loss and auto-masking, training without 3D
labels, depth files (issue 15)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from occ_core.formats.image_maps import encode_depth_png, read_depth_png, write_depth_png
from occ_core.models.config import RenderConfig, config_from_dict
from occ_core.models.occnerf import VoxelField, render_camera_rays
from occ_core.ops.render import contract, render_rays, sample_depths, uncontract
from occ_core.training.render_losses import reprojection_loss

ROOT = Path(__file__).resolve().parents[1]
LO, HI = (-40.0, -40.0, -1.0), (40.0, 40.0, 5.4)


def test_contraction_round_trip_and_ranges():
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([torch.rand(500, 3, generator=g) * 80 - 40,                # inside the ROI
                     (torch.rand(500, 3, generator=g) - 0.5) * 2000], 0).double()  # far outside
    c = contract(pts, LO, HI)
    assert c.abs().max() < 1.0
    assert torch.allclose(uncontract(c, LO, HI), pts, rtol=1e-6, atol=1e-6)
    # the ROI fills the inner 2/3: its corners map to +-2/3, and the map is linear inside
    corners = contract(torch.tensor([LO, HI], dtype=torch.float64), LO, HI)
    assert torch.allclose(corners, torch.tensor([[-2 / 3] * 3, [2 / 3] * 3], dtype=torch.float64))
    mid = contract(torch.tensor([[0.0, 20.0, 2.2]], dtype=torch.float64), LO, HI)
    assert torch.allclose(mid, torch.tensor([[0.0, 1 / 3, 0.0]], dtype=torch.float64), atol=1e-9)


def test_sampler_is_uniform_in_contracted_distance():
    d = sample_depths(3, 64, 0.1, 80.0, 40.0)
    assert d.shape == (3, 64) and (d[:, 1:] > d[:, :-1]).all() and d.min() >= 0.1 and d.max() <= 80.0
    c = contract(d[0, :, None].double(), [-40.0], [40.0])[:, 0]
    assert torch.allclose(c.diff(), c.diff().mean().expand(63), atol=1e-5)
    j = sample_depths(200, 64, 0.1, 80.0, 40.0, jitter=True, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(j[0], j[1]) and (j[:, 1:] > j[:, :-1]).all()


def _slab_field(contracted: bool) -> VoxelField:
    """Geometry +20 (opaque) where base_link x >= 10 m, -20 elsewhere."""
    if contracted:
        n = (800, 8, 8)
        ax = [-1 + (2 * torch.arange(k, dtype=torch.float32) + 1) / k for k in n]
        cx, cy, cz = torch.meshgrid(*ax, indexing="ij")
        x = uncontract(torch.stack([cx, cy, cz], -1), LO, HI)[..., 0]
    else:
        n = (800, 4, 4)
        x = (LO[0] + (torch.arange(n[0]) + 0.5) * (HI[0] - LO[0]) / n[0]).view(-1, 1, 1).expand(n)
    geo = torch.where(x >= 10.0, 20.0, -20.0)[None, None].float()
    return VoxelField(geo, None, LO, HI, contracted=contracted)


@pytest.mark.parametrize("mode", ["prob", "density"])
@pytest.mark.parametrize("contracted", [True, False])
def test_opaque_slab_at_10m_renders_depth_10m(mode, contracted):
    field = _slab_field(contracted)
    rc = RenderConfig(mode=mode, samples=600, sample_roi=40.0)
    K = torch.tensor([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]]).view(1, 1, 3, 3)
    # optical z along base_link x, x right = -y, y down = -z; camera 1.5 m up
    T = torch.eye(4)
    T[:3, :3] = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    T[2, 3] = 1.5
    uv = torch.tensor([[64.0, 48.0], [10.0, 40.0], [120.0, 60.0]]).view(1, 1, 3, 2)
    rr = render_camera_rays(field, K, T.view(1, 1, 4, 4), uv, rc)
    assert torch.allclose(rr.depth, torch.full_like(rr.depth, 10.0), atol=0.25), rr.depth
    assert (rr.opacity > 0.99).all()
    # nothing in the way: the ray ends at the far plane
    empty = VoxelField(torch.full_like(field.geo, -20.0), None, LO, HI, contracted=contracted)
    assert (render_camera_rays(empty, K, T.view(1, 1, 4, 4), uv, rc).depth > 70).all()


def test_render_rays_semantics_are_weighted_logits():
    depths = torch.linspace(1, 10, 10).expand(2, 10)
    geo = torch.full((2, 10), -30.0)
    geo[:, 4] = 30.0  # one opaque sample
    sem = torch.randn(2, 10, 5)
    r = render_rays(geo, depths, "prob", semantics=sem)
    assert torch.allclose(r.depth, depths[:, 4], atol=1e-4)
    assert torch.allclose(r.semantics, sem[:, 4], atol=1e-4)
    assert torch.allclose(r.weights.sum(1), torch.ones(2))


# ----------------------------------------------------------------------------- RenderOcc's LiDAR depth rays
def _forward_camera(cx: float = 64.0, cy: float = 48.0):
    """A 128 x 96 camera 1.5 m up looking along base_link x: K (1, 1, 3, 3), T (1, 1, 4, 4)."""
    K = torch.tensor([[100.0, 0, cx], [0, 100.0, cy], [0, 0, 1]]).view(1, 1, 3, 3)
    T = torch.eye(4)
    T[:3, :3] = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    T[2, 3] = 1.5
    return K, T.view(1, 1, 4, 4)


def test_lidar_pixels_land_where_the_projection_says():
    from occ_core.training.render_losses import lidar_pixels

    K, T = _forward_camera()
    pts = torch.tensor([[10.0, 0.0, 1.5],     # on the optical axis: pixel (64, 48), depth 10
                        [20.0, -2.0, 0.5],    # right and down: u = 64 + 100 * 2 / 20, v = 48 + 100 * 1 / 20
                        [-5.0, 0.0, 1.5],     # behind the camera
                        [60.0, 0.0, 1.5],     # beyond lidar_max_depth
                        [10.0, 20.0, 1.5]])   # left of the image
    rc = RenderConfig(lidar_rays=4, lidar_max_depth=52.0)
    uv, depth = lidar_pixels([pts], K, T, (96, 128), rc, generator=torch.Generator().manual_seed(0))
    assert uv.shape == (1, 1, 4, 2) and depth.shape == (1, 1, 4)
    hit = depth[0, 0] > 0
    assert int(hit.sum()) == 2  # two visible points; the other two slots stay empty (depth 0)
    got = sorted(zip(depth[0, 0][hit].tolist(), uv[0, 0][hit].tolist()))
    assert got[0][0] == pytest.approx(10.0) and got[0][1] == pytest.approx([64.0, 48.0], abs=1e-4)
    assert got[1][0] == pytest.approx(20.0) and got[1][1] == pytest.approx([74.0, 53.0], abs=1e-4)
    # more points than rays: R distinct points, every one a visible one
    many = torch.stack([torch.full((50,), 10.0), torch.linspace(-3, 3, 50), torch.full((50,), 1.5)], 1)
    uv, depth = lidar_pixels([many], K, T, (96, 128), RenderConfig(lidar_rays=8))
    assert (depth == 10.0).all() and len({round(u, 3) for u in uv[0, 0, :, 0].tolist()}) == 8


def test_silog_loss_is_zero_at_the_truth_and_charges_scale_and_spread():
    from occ_core.training.render_losses import silog_loss

    t = torch.linspace(2.0, 40.0, 50)
    assert float(silog_loss(t, t)) < 1e-3
    scaled = float(silog_loss(t * 2.0, t))  # a pure scale error costs sqrt(1 - 0.85) * log 2
    assert scaled == pytest.approx(math.sqrt(0.15) * math.log(2.0), rel=1e-4)
    noisy = t * torch.exp(0.3 * torch.randn(50, generator=torch.Generator().manual_seed(0)))
    assert float(silog_loss(noisy, t)) > 0.2


def test_lidar_depth_term_is_small_for_the_true_surface_and_large_for_a_wrong_one():
    """RenderOcc's depth rays through a box field with an opaque slab at x >= 10 m: LiDAR points on
    the slab's face cost ~0, points 2x farther cost log 2 (the scale counts); 0 when off."""
    from occ_core.training.render_losses import render_loss

    field = _slab_field(contracted=False)
    K, T = _forward_camera()
    ys, zs = torch.meshgrid(torch.linspace(-4, 4, 9), torch.linspace(0.0, 3.0, 4), indexing="ij")
    face = torch.stack([torch.full_like(ys, 10.0), ys, zs], -1).reshape(-1, 3)
    rgb = torch.zeros(1, 1, 3, 96, 128)
    args = (field, K, T, rgb, rgb[:, :, None], torch.eye(4).view(1, 1, 1, 4, 4), None)
    rc = RenderConfig(samples=400, photometric=0.0, semantic=0.0, distortion=0.0, entropy=0.0, smoothness=0.0,
                      lidar_depth=1.0, lidar_rays=64)
    good = float(render_loss(*args, rc, points=[face]).lidar_depth)
    far = face.clone()
    far[:, :2] *= 2.0  # the same rays, twice as deep
    bad = float(render_loss(*args, rc, points=[far]).lidar_depth)
    assert good < 0.03 and bad == pytest.approx(math.log(2.0), abs=0.03)
    off = dataclasses.replace(rc, lidar_depth=0.0)
    assert float(render_loss(*args, off, points=[face]).lidar_depth) == 0.0


def test_sky_rays_charge_opacity_and_leave_the_cross_entropy():
    """render.sky: patch rays through pixels labelled sky cost -log(1 - opacity): ~0 through an
    empty field, large through the slab; sky pixels do not enter the semantic cross entropy."""
    from occ_core.formats.image_maps import SKY_LABEL
    from occ_core.training.render_losses import render_loss

    K, T = _forward_camera()
    rgb = torch.zeros(1, 1, 3, 96, 128)
    rc = RenderConfig(samples=400, photometric=0.0, semantic=0.0, distortion=0.0, entropy=0.0, smoothness=0.0,
                      sky=1.0)
    sky = torch.full((1, 1, 96, 128), SKY_LABEL)

    def terms(field, labels, rc=rc):
        return render_loss(field, K, T, rgb, rgb[:, :, None], torch.eye(4).view(1, 1, 1, 4, 4), labels, rc)

    slab = _slab_field(contracted=False)
    empty = VoxelField(torch.full_like(slab.geo, -20.0), None, LO, HI)
    assert float(terms(empty, sky).sky) < 1e-3
    assert float(terms(slab, sky).sky) > 5.0  # every ray stops at the slab: opacity ~1
    assert float(terms(slab, sky, dataclasses.replace(rc, sky=0.0)).sky) == 0.0
    assert float(terms(slab, torch.full_like(sky, -1)).sky) == 0.0  # no sky pixel: no term
    # with semantics on, sky pixels are ignored by the cross entropy (17 is no rendered class)
    sem = torch.zeros(1, 17, *slab.geo.shape[2:])
    sem_field = VoxelField(slab.geo, sem, LO, HI)
    assert float(terms(sem_field, sky, dataclasses.replace(rc, semantic=1.0)).semantic) == 0.0
    half = sky.clone()
    half[..., :64] = 3
    assert float(terms(sem_field, half, dataclasses.replace(rc, semantic=1.0)).semantic) > 0.0


def test_read_semantic2d_keeps_sky_when_asked(tmp_path):
    from occ_core.formats.image_maps import SKY_LABEL, encode_semantic_png, read_semantic2d

    raw = np.array([[0, 16, 17, 255]], np.uint8)
    path = tmp_path / "m.png"
    path.write_bytes(encode_semantic_png(raw))
    assert read_semantic2d(path).tolist() == [[0, 16, -1, -1]]
    assert read_semantic2d(path, keep_sky=True).tolist() == [[0, 16, SKY_LABEL, -1]]


def _camera_at(x: float):
    """:func:`_forward_camera`'s camera moved to base_link x = ``x``: (3, 3) K, (4, 4) T."""
    K, T = _forward_camera()
    T = T[0, 0].clone()
    T[0, 3] = x
    return K[0, 0], T


def test_aux_rays_see_the_field_from_the_adjacent_camera_and_skip_dynamic_classes():
    """RenderOcc's auxiliary rays: an adjacent keyframe's camera 2 m behind (x = -2) sees the slab
    at x >= 10 at z-depth 12 through the current field. Its LiDAR points on the face cost ~0; a
    second view whose points lie twice as far costs log 2 unless their 2D label is a dynamic class."""
    from occ_core.classes import OCC3D_INDEX
    from occ_core.data.render_dataset import AuxBatch
    from occ_core.training.render_losses import aux_ray_loss

    field = _slab_field(contracted=False)
    K, T = _camera_at(-2.0)
    ys, zs = torch.meshgrid(torch.linspace(-4, 4, 9), torch.linspace(0.0, 3.0, 4), indexing="ij")
    face = torch.stack([torch.full_like(ys, 10.0), ys, zs], -1).reshape(-1, 3)
    far = face.clone()
    far[:, 0] = 22.0  # from x = -2: z-depth 24 instead of 12
    far[:, 1:] = (far[:, 1:] - torch.tensor([0.0, 1.5])) * 2.0 + torch.tensor([0.0, 1.5])  # same pixels
    rc = RenderConfig(samples=400, lidar_depth=1.0, lidar_rays=64, semantic=0.0, aux_keyframes=1,
                      aux_dynamic=("car",))
    labels = torch.full((1, 2, 1, 96, 128), OCC3D_INDEX["driveable_surface"])

    def loss(points, labels, rc=rc):
        aux = AuxBatch(K.expand(1, len(points), 1, 3, 3), T.expand(1, len(points), 1, 4, 4), points,
                       labels[:, :len(points)])
        return float(aux_ray_loss(field, aux, (96, 128), rc, with_sem=False))

    assert loss([face], labels) < 0.03
    assert loss([far], labels) == pytest.approx(math.log(2.0), abs=0.03)
    both = loss([face, far], labels)
    assert both > 0.3  # the wrong view counts ...
    cars = labels.clone()
    cars[:, 1] = OCC3D_INDEX["car"]
    assert loss([face, far], cars) < 0.03  # ... unless the 2D labels call it a car
    assert loss([face, far], cars, dataclasses.replace(rc, aux_dynamic=())) == pytest.approx(both, abs=0.02)
    assert loss([torch.zeros(0, 3)], labels) == 0.0  # no point: no ray (a padding view)


def test_aux_views_place_the_adjacent_keyframes_where_their_own_frames_are(tiny_world):
    """A point of the adjacent keyframe's LiDAR lands on the same pixel at the same depth through
    its camera as the loader sees it in that keyframe's own frame (poses composed through the
    current base_link; intrinsics without decoding equal the decoding path's)."""
    from occ_core.data.render_dataset import RenderDataset, collate_aux
    from occ_core.models.lss import project_to_cameras
    from occ_core.models.predictor import frame_to_inputs

    cfg = _tiny_cfg(lidar_depth=1.0, aux_keyframes=2)
    ds = RenderDataset(tiny_world, ["scene-0001"], cfg)
    (_, first), (_, second) = ds.samples
    aux = ds[0].aux
    assert aux.tokens == [second] and ds.load_aux(second, ds[0].frame.camera_names).tokens == [first]
    own = ds.load_frame(second)
    inp = frame_to_inputs(own, cfg)
    p_own = torch.from_numpy(own.points[:, :3]).float()
    uv_own, in_own = project_to_cameras(p_own, inp.intrinsics[0], inp.T_base_from_cam[0], cfg.image.size)
    uv_aux, in_aux = project_to_cameras(torch.from_numpy(aux.points[0]), torch.from_numpy(aux.intrinsics[0]).float(),
                                        torch.from_numpy(aux.T_base_from_cam[0]).float(), cfg.image.size)
    assert in_own.sum() > 50 and torch.equal(in_own, in_aux)
    assert torch.allclose(uv_own[in_own], uv_aux[in_aux], atol=1e-3)
    E = np.linalg.solve(ds.ego_pose(first), ds.ego_pose(second))  # adjacent base_link -> current
    assert np.allclose(aux.T_base_from_cam[0], E @ own.T_base_from_cam, atol=1e-6)
    assert not np.allclose(E[:3, 3], 0.0, atol=0.5)  # the car moved between the keyframes
    assert aux.labels.shape == (1, 6, 32, 64) and (aux.labels[0] >= 0).mean() > 0.3
    # a batch pads the item with fewer adjacent keyframes with views that have no point
    short = dataclasses.replace(aux, tokens=[], intrinsics=aux.intrinsics[:0], T_base_from_cam=aux.T_base_from_cam[:0],
                                points=[], labels=aux.labels[:0])
    two = dataclasses.replace(aux, tokens=aux.tokens * 2, intrinsics=np.concatenate([aux.intrinsics] * 2),
                              T_base_from_cam=np.concatenate([aux.T_base_from_cam] * 2), points=aux.points * 2,
                              labels=np.concatenate([aux.labels] * 2))
    batch = collate_aux([two, short])
    assert batch.intrinsics.shape == (2, 2, 6, 3, 3) and [len(p) for p in batch.points[2:]] == [0, 0]
    assert (batch.labels[1] == -1).all() and collate_aux([short]) is None


def test_aux_rays_config_checks():
    import yaml

    from occ_core.errors import OccDataError

    doc = yaml.safe_load((ROOT / "config" / "models" / "camera_renderocc.yaml").read_text())

    def with_render(**kw):
        return config_from_dict({**doc, "render": {**doc["render"], **kw}})

    assert with_render(aux_keyframes=1).render.aux_dynamic[:2] == ("bicycle", "bus")
    with pytest.raises(OccDataError, match="auxiliary rays are LiDAR rays; set lidar_depth > 0"):
        with_render(aux_keyframes=1, lidar_depth=0.0)
    with pytest.raises(OccDataError, match=r"aux_dynamic: \['lorry'\]"):
        with_render(aux_keyframes=1, aux_dynamic=["lorry"])
    with pytest.raises(OccDataError, match="aux_keyframes: expected >= 0"):
        with_render(aux_keyframes=-1)
    assert with_render(start_geo=-6).render.start_geo == -6 and with_render().render.start_geo is None
    assert with_render(sky=0.5).render.sky == 0.5 and with_render().render.sky == 0.0
    with pytest.raises(OccDataError, match="a 2D label folder is needed when sky > 0"):
        with_render(sky=1.0, semantic=0.0, labels="")
    with pytest.raises(OccDataError, match=r"render.sky: weights must be >= 0, got -1"):
        with_render(sky=-1.0)
    with pytest.raises(OccDataError, match=r"render.start_geo: expected a logit in \[-20, 20\] or null, got 50"):
        with_render(start_geo=50)


# ----------------------------------------------------------------------------- photometric loss
def _plane_views(b: float = 0.5, Z: float = 8.0, H: int = 48, W: int = 64):
    """A fronto-parallel textured plane at z-depth Z seen by a target camera and one moved by b
    metres along its x axis: (tgt (1, 3, H, W), src (1, 1, 3, H, W), K (1, 3, 3), T (1, 1, 4, 4))."""
    fx, cx, cy = 60.0, W / 2 - 0.5, H / 2 - 0.5

    def tex(X, Y):
        return torch.stack([0.5 + 0.25 * torch.sin(3.1 * X + 1.3 * Y), 0.5 + 0.25 * torch.cos(2.3 * Y - 0.7 * X),
                            0.5 + 0.2 * torch.sin(1.7 * X) * torch.cos(2.9 * Y)], 0)

    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    X, Y = (u - cx) / fx * Z, (v - cy) / fx * Z
    tgt = tex(X, Y)[None]
    src = tex(X + b, Y)[None, None]  # the source camera sits at x = b
    K = torch.tensor([[fx, 0, cx], [0, fx, cy], [0, 0, 1.0]])[None]
    T = torch.eye(4)
    T[0, 3] = -b  # target camera -> source camera
    return tgt, src, K, T.view(1, 1, 4, 4)


def _patch_uv(H=48, W=64, p=6):
    from occ_core.training.render_losses import random_patches

    rc = RenderConfig(patches=20, patch_size=p)
    uv = random_patches(1, 1, (H, W), rc, generator=torch.Generator().manual_seed(3)).view(1, -1, 2)
    return uv.clamp(8, W - 9)  # stay where the warped pixel is inside the source image


def test_photometric_loss_near_zero_with_true_depth_and_pose():
    tgt, src, K, T = _plane_views()
    uv = _patch_uv()
    d = torch.full(uv.shape[:2], 8.0)
    good, _ = reprojection_loss(tgt, src, uv, d, K, T, 6, automask=False)
    bad, _ = reprojection_loss(tgt, src, uv, d * 2.0, K, T, 6, automask=False)
    near, _ = reprojection_loss(tgt, src, uv, d * 0.6, K, T, 6, automask=False)
    assert float(good) < 0.01
    assert float(bad) > 5 * float(good) and float(near) > 5 * float(good)


def test_automask_masks_a_static_camera():
    # the images do not change although the poses say the camera moved (a car at the ego's speed,
    # or a camera standing still under wrong odometry): every pixel is masked, the loss ~ 0
    tgt, _, K, T = _plane_views()
    src = tgt[:, None].clone()
    uv = _patch_uv()
    d = torch.full(uv.shape[:2], 8.0)
    loss, kept = reprojection_loss(tgt, src, uv, d, K, T, 6, automask=True)
    assert float(kept.float().mean()) < 0.02
    assert float(loss) < 1e-3
    unmasked, _ = reprojection_loss(tgt, src, uv, d, K, T, 6, automask=False)
    assert float(unmasked) > 20 * float(loss)
    # a moving camera (true motion in the images) keeps its pixels
    tgt2, src2, K2, T2 = _plane_views()
    _, kept2 = reprojection_loss(tgt2, src2, uv, d, K2, T2, 6, automask=True)
    assert float(kept2.float().mean()) > 0.9


def test_photometric_ignore_drops_labelled_pixels_from_the_loss():
    # half of the patches see a "car" whose depth is wrong (as a car moving with the ego would be
    # explained): with the car class ignored the loss is the other half's, ~ 0
    from occ_core.classes import OCC3D_INDEX
    from occ_core.training.render_losses import labels_at

    tgt, src, K, T = _plane_views()
    uv = _patch_uv()
    d = torch.full(uv.shape[:2], 8.0)
    car = torch.zeros_like(d, dtype=torch.bool)
    car[:, : car.shape[1] // 2] = True
    d[car] = 16.0
    labels = torch.full((1, 48, 64), OCC3D_INDEX["driveable_surface"], dtype=torch.long)
    iu, iv = uv[0, car[0], 0].round().long(), uv[0, car[0], 1].round().long()
    labels[0, iv, iu] = OCC3D_INDEX["car"]
    at = labels_at(labels, uv)
    assert bool((at[car] == OCC3D_INDEX["car"]).all())
    counted = ~torch.isin(at, torch.tensor([OCC3D_INDEX["car"]]))
    assert 0 < int(counted.sum()) < counted.numel()
    everything, _ = reprojection_loss(tgt, src, uv, d, K, T, 6, automask=False)
    kept, _ = reprojection_loss(tgt, src, uv, d, K, T, 6, automask=False, counted=counted)
    assert float(everything) > 0.02 and float(kept) < 0.25 * float(everything)
    # outside the image: -1
    assert int(labels_at(labels, torch.tensor([[[-3.0, 5.0], [70.0, 5.0]]]))[0].max()) == -1


def test_photometric_ignore_config_names_occ3d_classes():
    import yaml

    from occ_core.errors import OccDataError

    doc = yaml.safe_load((ROOT / "config" / "models" / "occnerf.yaml").read_text())

    def with_render(**kw):
        return config_from_dict({**doc, "render": {**doc["render"], **kw}})

    assert with_render(photometric_ignore=["car", "pedestrian"]).render.photometric_ignore == ("car", "pedestrian")
    assert with_render().render.photometric_ignore == ()  # OccNeRF's default: every pixel counts
    with pytest.raises(OccDataError, match=r"photometric_ignore: \['cars'\]"):
        with_render(photometric_ignore=["cars"])
    with pytest.raises(OccDataError, match="photometric_ignore needs the 2D label folder"):
        with_render(photometric_ignore=["car"], semantic=0.0, labels="")


# ----------------------------------------------------------------------------- depth files
def test_depth_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    d = (rng.random((9, 13)) * 90).astype(np.float32)
    d[0, 0] = 0.0
    (tmp_path / "CAM_FRONT").mkdir()
    write_depth_png(tmp_path / "CAM_FRONT" / "x.png", d)
    back = read_depth_png(tmp_path / "CAM_FRONT" / "x.png", (9, 13))
    assert back.dtype == np.float32 and back.shape == (9, 13)
    assert np.abs(back - d).max() <= 0.5 / 256 + 1e-6
    assert back[0, 0] == 0.0
    # the synthetic world's encoding: the same bytes
    import cv2

    ok, buf = cv2.imencode(".png", np.clip(np.round(d * 256.0), 0, 65535).astype(np.uint16))
    assert encode_depth_png(d) == buf.tobytes()
    from occ_core.errors import OccDataError

    with pytest.raises(OccDataError, match="expected 13x10"):
        read_depth_png(tmp_path / "CAM_FRONT" / "x.png", (10, 13))


# ----------------------------------------------------------------------------- model and training
def _tiny_cfg(**render):
    import yaml

    doc = yaml.safe_load((ROOT / "config/models/occnerf.yaml").read_text())
    doc["image"] = {"size": [32, 64]}
    doc["backbone"] = {"stem": 8, "widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1], "neck_channels": 8, "out_stride": 8}
    doc["occnerf"] = {"field_dims": [12, 12, 6], "channels": 8, "cnn_channels": 8, "cnn_blocks": 1}
    doc["render"].update({"samples": 24, "patches": 4, "patch_size": 4, **render})
    doc["train"].update({"steps": 2, "lr": 5e-3})
    return config_from_dict(doc)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from occ_core.data.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("occnerf") / "world"
    generate(SynthConfig(scenes=2, samples_per_scene=2, image_size=(64, 36), sweeps=False, camera_adjacent=True,
                         semantic2d=True, semantic2d_corrupt=True), out, progress=False, workers=1)
    return out


def test_synthetic_adjacent_frames_and_2d_labels(tiny_world):
    import json

    from occ_core.formats.image_maps import read_semantic2d

    sd = json.loads((tiny_world / "v1.0-mini" / "sample_data.json").read_text())
    cams = [r for r in sd if "CAM_FRONT/" in r["filename"]]
    keys = [r for r in cams if r["is_key_frame"]]
    assert len(keys) == 4 and len(cams) == 4 + 8  # previous and next frame of each keyframe
    by_tok = {r["token"]: r for r in sd}
    for k in keys:
        for nb in (by_tok[k["prev"]], by_tok[k["next"]]):
            assert abs(abs(nb["timestamp"] - k["timestamp"]) - 1e6 / 12) <= 1
    stem = Path(keys[0]["filename"]).stem
    clean = read_semantic2d(tiny_world / "semantic2d" / "CAM_FRONT" / f"{stem}.png")
    bad = read_semantic2d(tiny_world / "semantic2d_corrupt" / "CAM_FRONT" / f"{stem}.png")
    assert clean.shape == (36, 64) and clean.max() <= 16 and (clean >= 0).mean() > 0.3
    assert (bad == -1).sum() > (clean == -1).sum() and (bad != clean).any()


def test_corruption_changes_labels_like_a_segmenter():
    from occ_core.classes import OCC3D_INDEX
    from occ_core.data.synthetic.semantic2d import Corruption, corrupt_semantic2d

    cls = np.full((60, 80), OCC3D_INDEX["driveable_surface"], np.uint8)
    cls[:20] = 17
    inst = np.zeros((60, 80), np.int32)
    for i in range(8):
        cls[25:45, 10 * i:10 * i + 8] = OCC3D_INDEX["truck"]
        inst[25:45, 10 * i:10 * i + 8] = i + 1
    out = corrupt_semantic2d(cls, inst, np.random.default_rng(0), Corruption(confuse_object=0.5, drop_object=0.2))
    assert 0.02 < (out == 255).mean() < 0.4  # dropped regions
    assert (out == OCC3D_INDEX["car"]).any() or (out == OCC3D_INDEX["bus"]).any()  # confused trucks
    same = corrupt_semantic2d(cls, inst, np.random.default_rng(0), Corruption(confuse_object=0.5, drop_object=0.2))
    assert (same == out).all()
    clean = corrupt_semantic2d(cls, inst, np.random.default_rng(0), Corruption(0, 0, 0, 0, 0))
    assert (clean == cls).all()


def test_forward_backward_and_loss_falls_on_one_batch(tiny_world):
    from occ_core.data.render_dataset import RenderDataset, collate_render
    from occ_core.training.train import Trainer

    cfg = _tiny_cfg()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=40, lr=3e-3))
    ds = RenderDataset(tiny_world, ["scene-0001"], cfg)
    batch = collate_render([ds[0]], cfg)
    assert batch.labels is not None and batch.src_rgb.shape == (1, 6, 2, 3, 32, 64)
    tr = Trainer(cfg, "cpu", torch.ones(18))
    with torch.no_grad():
        out = tr.model(batch.inputs)
    assert out.logits.shape == (1, 18, 200, 200, 16) and torch.isfinite(out.logits).all()
    torch.manual_seed(0)
    first = [tr.train_step(batch).losses for _ in range(2)]
    for _ in range(8):
        tr.train_step(batch)
    torch.manual_seed(0)
    last = [tr.train_step(batch).losses for _ in range(2)]
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    assert all(math.isfinite(r["total"]) for r in first + last)
    assert mean(last, "total") < 0.9 * mean(first, "total"), (first, last)
    grads = [p.grad for p in tr.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_occnerf_training_never_opens_gts(tiny_world, tmp_path, monkeypatch):
    """occ-train with the occnerf config: no file under gts/ of a training scene is opened
    (only the held-out val scene's labels, for the mIoU)."""
    import builtins
    import zipfile

    import yaml

    from occ_core.models.config import config_to_dict
    from occ_core.training import train

    train_gts = str(tiny_world / "gts" / "scene-0001")
    opened: list[str] = []

    def guard(path):
        p = str(Path(path).resolve()) if isinstance(path, (str, Path)) else ""
        if "/gts/" in p:
            opened.append(p)
        if p.startswith(train_gts):
            raise AssertionError(f"occnerf training opened a 3D label: {p}")

    real_open, real_load, real_zip = builtins.open, np.load, zipfile.ZipFile.__init__

    def open_(file, *a, **k):
        guard(file)
        return real_open(file, *a, **k)

    def load_(file, *a, **k):
        guard(file)
        return real_load(file, *a, **k)

    def zip_(self, file, *a, **k):
        guard(file)
        return real_zip(self, file, *a, **k)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(np, "load", load_)
    monkeypatch.setattr(zipfile.ZipFile, "__init__", zip_)
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(_tiny_cfg())))
    rc = train.main(["--config", str(cfg_path), "--dataroot", str(tiny_world), "--work-dir", str(tmp_path / "run"),
                     "--steps", "2", "--no-progress", "--threads", "1"])
    assert rc == 0
    import json

    val = json.loads((tmp_path / "run" / "val.json").read_text())
    assert val["depth_images"] == 12 and val["abs_rel"] is not None  # 2 val keyframes x 6 cameras
    assert val["occ_frames"] == 2 and val["mIoU"] is not None
    assert opened and all("scene-0002" in p for p in opened)  # the val labels, read to score
    # the output's occupancy threshold was chosen without labels, and saved with the run
    from occ_core.models.predictor import load_checkpoint_state

    tau = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["occ_threshold"]
    assert 1e-3 <= tau <= 0.9 and tau != _tiny_cfg().occupancy_threshold
    assert load_checkpoint_state(tmp_path / "run" / "model.pt")["config"]["occ_threshold"] == tau


def test_predict_depth_and_eval(tiny_world, tmp_path):
    import yaml

    from occ_core.eval import cli as eval_cli
    from occ_core.models.config import config_to_dict
    from occ_core.training import predict

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(_tiny_cfg())))
    out = tmp_path / "depth"
    assert predict.main(["--config", str(cfg_path), "--dataroot", str(tiny_world), "--out", str(out),
                         "--format", "depth", "--no-progress"]) == 0
    maps = sorted(out.glob("*/*.png"))
    assert len(maps) == 12
    d = read_depth_png(maps[0], (36, 64))
    assert (d > 0).all() and d.max() <= 80.0
    assert eval_cli.main(["--metrics", "depth", "--gt", str(tiny_world / "depth"), "--pred", str(out),
                          "--json", str(tmp_path / "d.json"), "--no-progress"]) == 0
    import json

    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["images"] == 12 and doc["reports"]["scale-aware"]["summary"]["abs_rel"] > 0
    # a non-render model cannot write depth
    assert predict.main(["--config", str(ROOT / "config/models/camera.yaml"), "--dataroot", str(tiny_world),
                         "--out", str(tmp_path / "x"), "--format", "depth", "--no-progress"]) == 2


def test_shipped_config_runs_through_the_node_predictor(tiny_world):
    """The node's path: load_predictor(config, checkpoint) -> predict(SensorFrame)."""
    from occ_core.data.nuscenes_dataset import NuScenesOccDataset
    from occ_core.grid import OCC3D
    from occ_core.models.predictor import load_predictor

    ckpt = ROOT / "config/models/occnerf_demo.pt"
    pred = load_predictor(ROOT / "config/models/occnerf.yaml", ckpt if ckpt.exists() else None)
    ds = NuScenesOccDataset(tiny_world, ["scene-0002"], OCC3D, image_hw=pred.image_hw)
    out = pred.predict(ds.load_frame(ds.samples[0][1]))
    assert out.labels.shape == (200, 200, 16) and out.labels.dtype == np.uint8 and out.labels.max() <= 17
    assert np.all((out.scores > 0) & (out.scores <= 1.0))


def test_adjacent_frames_leave_keyframes_and_labels_unchanged(tmp_path):
    from occ_core.data.synthetic import SynthConfig, generate

    base = dict(scenes=1, samples_per_scene=2, image_size=(48, 27), sweeps=False)
    generate(SynthConfig(**base), tmp_path / "plain", progress=False, workers=1)
    generate(SynthConfig(**base, camera_adjacent=True), tmp_path / "adj", progress=False, workers=1)
    for sub in ("samples/CAM_BACK", "gts"):
        a = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain" / sub).rglob("*") if p.is_file())
        b = sorted(p.relative_to(tmp_path / "adj") for p in (tmp_path / "adj" / sub).rglob("*") if p.is_file())
        assert a and a == b
        assert all((tmp_path / "plain" / r).read_bytes() == (tmp_path / "adj" / r).read_bytes() for r in a)
    assert len(list((tmp_path / "adj" / "sweeps" / "CAM_BACK").iterdir())) == 4


@pytest.mark.parametrize("name,start_geo", [("camera_render", None), ("camera_renderocc", None), ("camera", None),
                                            ("camera_renderocc", -6.0), ("occnerf", -6.0)])
def test_rendering_supervised_heads_start_mostly_free(name, start_geo):
    """A model with a render section starts with voxels at ~sigmoid(-3) occupancy (rays can travel
    and every sample gets gradient), or at ~sigmoid(render.start_geo); without one, the head's
    usual start (~17/18 occupied)."""
    from occ_core.models.config import config_from_dict, config_to_dict, load_config
    from occ_core.models.occnet import build_model
    from occ_core.models.predictor import frame_to_inputs
    from test_models import make_frame

    cfg = load_config(ROOT / "config" / "models" / f"{name}.yaml")
    cfg = dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, size=(32, 64)))
    if start_geo is not None:  # through the YAML dict, as a config file gives it
        d = config_to_dict(cfg)
        d["render"]["start_geo"] = start_geo
        cfg = config_from_dict(d, "cfg")
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(frame_to_inputs(make_frame(), cfg))
    if cfg.render is not None:  # trained by rendering alone: the field of the head's own logits
        occupied = torch.sigmoid(out.field.geo)
        lo, hi = (0.02, 0.1) if start_geo is None else (0.3 * torch.sigmoid(torch.tensor(start_geo)), 0.01)
        assert lo < float(occupied.median()) < hi
        # an LSS head's output is that field thresholded at its occupancy threshold (0.5 unset);
        # OccNeRF's field is contracted space, its output the field queried at the Occ3D voxels
        labels = out.logits.argmax(1)
        assert cfg.name == "occnerf" or torch.equal(labels == cfg.num_classes - 1, occupied[:, 0] <= cfg.occupancy_threshold)
    else:
        assert out.field is None
        assert float((1 - out.logits.softmax(1)[:, -1]).median()) > 0.8


@pytest.mark.parametrize("name", ["camera_renderocc", "camera_renderocc+aux", "camera_renderocc+sky", "camera_render"])
def test_renderocc_style_training_uses_lidar_rays_and_the_depth_head_loss(tiny_world, name):
    """camera_renderocc trains on LiDAR depth rays (SILog) and the LSS depth head's LiDAR loss,
    with no 3D labels (+aux: and the adjacent keyframes' rays; +sky: and the sky rays, sky kept in
    the loaded labels); camera_render (photometric) uses neither. One step, finite gradients."""
    from occ_core.formats.image_maps import SKY_LABEL
    from occ_core.data.render_dataset import RenderDataset, collate_render
    from occ_core.models.config import load_config
    from occ_core.training.train import Trainer

    cfg = load_config(ROOT / "config" / "models" / f"{name.split('+')[0]}.yaml")
    cfg = dataclasses.replace(cfg, image=dataclasses.replace(cfg.image, size=(32, 64)),
                              render=dataclasses.replace(cfg.render, samples=16, patch_size=4, lidar_rays=32,
                                                         aux_keyframes=int(name.endswith("+aux")),
                                                         sky=float(name.endswith("+sky")),
                                                         patches=8 if name.endswith("+sky") else 2))
    ds = RenderDataset(tiny_world, ["scene-0001"], cfg)
    assert not ds.with_gts
    batch = collate_render([ds[0]], cfg)
    assert bool((batch.labels == SKY_LABEL).any()) == name.endswith("+sky")
    assert batch.src_rgb.shape[2] == (2 if cfg.render.photometric else 0)  # no source frame read for nothing
    tr = Trainer(cfg, "cpu", torch.ones(18))
    losses = tr.train_step(batch).losses
    assert all(math.isfinite(v) for v in losses.values()), losses
    assert (losses["aux_rays"] > 0) == name.endswith("+aux")
    assert (losses["sky"] > 0) == name.endswith("+sky")
    if name.startswith("camera_renderocc"):
        assert losses["lidar_depth"] > 0 and losses["lss_depth"] > 0 and losses["photometric"] == 0
    else:
        assert losses["lidar_depth"] == 0 and losses["lss_depth"] == 0 and losses["photometric"] > 0
    grads = [p.grad for p in tr.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_label_free_threshold_separates_the_rendered_surface_from_the_space_before_it():
    """A field with occupancy 0.3 in a slab at base_link x in [10, 20] m and 0.002 elsewhere: rays
    of the front camera stop in the slab, so the label-free threshold lies between the two values
    and separates them perfectly; with the slab at 0.6 it moves up with it."""
    from types import SimpleNamespace

    from occ_core.models.occnet import OccOutput
    from occ_core.training.render_eval import label_free_threshold
    from test_models import make_frame

    cfg = _tiny_cfg(samples=200)  # 0.4 m steps: a ray stops within a metre of the slab's face

    class SlabModel(torch.nn.Module):
        def __init__(self, p_slab: float):
            super().__init__()
            self.p_slab = p_slab

        def forward(self, inputs, with_logits=True):
            n = (400, 8, 8)
            ax = [-1 + (2 * torch.arange(k, dtype=torch.float32) + 1) / k for k in n]
            x = uncontract(torch.stack(torch.meshgrid(*ax, indexing="ij"), -1), LO, HI)[..., 0]
            p = torch.where((x >= 10.0) & (x <= 20.0), self.p_slab, 0.002)
            geo = torch.log(p / (1 - p))[None, None]
            return OccOutput(logits=None, field=VoxelField(geo, None, LO, HI, contracted=True))

    ds = SimpleNamespace(samples=[("scene", "token")], load_frame=lambda token: make_frame())
    low, st = label_free_threshold(SlabModel(0.3), cfg, ds, [0], rays_per_camera=64)
    assert 0.002 <= low < 0.3 and st["balanced_accuracy"] > 0.99 and st["rays"] > 10, (low, st)
    high, _ = label_free_threshold(SlabModel(0.6), cfg, ds, [0], rays_per_camera=64)
    assert 0.002 <= high < 0.6 and high > low
    # separable sets: the threshold sits inside the gap between them, away from both ends. Here the
    # free samples next to the slab's face take interpolated values up to 0.04 and the occupied
    # ones start at 0.16: the gap's log-midpoint is 0.08 (an accuracy maximum would take 0.04)
    assert 0.05 < low < 0.13
