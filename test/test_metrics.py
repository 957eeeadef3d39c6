"""Metrics: hand-computed cases, invariances, DDP merging, and RayIoU against an exact brute force."""

import math

import numpy as np
import pytest

from occ_core import grid
from occ_core.classes import OCC3D_FREE, OPENOCC_FREE
from occ_core.errors import OccDataError
from occ_core.eval import depth, occupancy, rayiou
from occ_core.eval.distributed import all_reduce_state

RNG = np.random.default_rng(1)


# ---------------------------------------------------------------------------- mIoU / IoU / SSC
def _grid(vals):
    return np.asarray(vals, np.uint8).reshape(-1, 1, 1)


def test_miou_hand_computed():
    m = occupancy.occ3d_miou("none")
    m.update(_grid([0, 0, 1, 17]), _grid([0, 1, 1, 17]))
    iou = m.per_class_iou()
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(0.5)
    assert np.isnan(iou[2:17]).all() and iou[17] == 1.0       # absent from GT and prediction -> nan
    assert m.miou() == pytest.approx(0.5)                      # free (17) excluded from the mean
    assert m.geometric_iou() == pytest.approx(1.0)             # occupancy is right everywhere
    assert m.hist[0, 1] == 1 and m.hist.sum() == 4


def test_class_absent_from_gt_but_predicted_is_zero_not_nan():
    m = occupancy.occ3d_miou("none")
    m.update(_grid([0, 17, 17]), _grid([2, 2, 17]))
    iou = m.per_class_iou()
    assert iou[0] == 0.0 and iou[2] == 0.0 and np.isnan(iou[3])
    assert m.miou() == 0.0
    # geometric: TP 1 (voxel 0), FP 1 (voxel 1), FN 0
    assert m.geometric_iou() == pytest.approx(0.5)


def test_all_free_prediction_and_empty_scene():
    m = occupancy.occ3d_miou("none")
    m.update(_grid([4, 4, 11, 17]), _grid([17, 17, 17, 17]))
    assert m.per_class_iou()[4] == 0.0 and m.per_class_iou()[11] == 0.0
    assert m.miou() == 0.0 and m.geometric_iou() == 0.0
    e = occupancy.occ3d_miou("none")
    e.update(_grid([17, 17]), _grid([17, 17]))
    assert math.isnan(e.miou()) and math.isnan(e.geometric_iou())


def test_masks_select_voxels():
    gt = _grid([4, 4, 4, 4])
    pred = _grid([4, 17, 4, 17])
    cam = _grid([1, 1, 0, 0]).astype(bool)
    lid = _grid([1, 0, 1, 0]).astype(bool)
    res = {}
    for name in occupancy.MASKS:
        m = occupancy.occ3d_miou(name)
        m.update(gt, pred, occupancy.select_mask(name, cam, lid))
        res[name] = m.per_class_iou()[4]
    assert res == {"camera": 0.5, "lidar": 1.0, "both": 1.0, "none": 0.5}
    with pytest.raises(OccDataError, match="mask_lidar"):
        occupancy.select_mask("lidar", cam, None, "f.npz")


def _naive_hist(gts, preds, masks, c=18):
    h = np.zeros((c, c), np.int64)
    for g, p, m in zip(gts, preds, masks):
        for a, b in zip(g[m], p[m]):
            h[a, b] += 1
    return h


def test_split_merge_order_and_state_round_trip_equal_one_pass():
    gts = [RNG.integers(0, 18, (6, 5, 4)).astype(np.uint8) for _ in range(6)]
    preds = [RNG.integers(0, 18, (6, 5, 4)).astype(np.uint8) for _ in range(6)]
    masks = [RNG.random((6, 5, 4)) < 0.7 for _ in range(6)]
    one = occupancy.occ3d_miou()
    for g, p, k in zip(gts, preds, masks):
        one.update(g, p, k)
    np.testing.assert_array_equal(one.hist, _naive_hist(gts, preds, masks))
    a, b = occupancy.occ3d_miou(), occupancy.occ3d_miou()
    for i in (5, 3, 1):
        a.update(gts[i], preds[i], masks[i])
    for i in (4, 0, 2):
        b.update(gts[i], preds[i], masks[i])
    merged = a.merge(b)
    np.testing.assert_array_equal(merged.hist, one.hist)
    assert merged.frames == 6 and merged.miou() == one.miou()
    via_state = occupancy.occ3d_miou().load_state(all_reduce_state(one.state()))
    np.testing.assert_array_equal(via_state.hist, one.hist)


def test_ssc_ignores_255_and_averages_classes_1_to_16():
    m = occupancy.ssc_metric()
    gt = _grid([0, 1, 1, 255, 16])
    pred = _grid([0, 1, 0, 1, 0])
    m.update(gt, pred)
    assert m.hist.sum() == 4                                 # the 255 voxel is dropped
    iou = m.per_class_iou()
    assert iou[1] == pytest.approx(0.5) and iou[16] == 0.0
    assert m.miou() == pytest.approx(0.25)                   # nanmean over 1..16 (only 1 and 16 defined)
    assert m.geometric_iou() == pytest.approx(1 / 3)         # TP 1, FN 2 (voxels 2, 4), FP 0


def test_prediction_label_out_of_range_is_an_error():
    with pytest.raises(OccDataError, match="label 18"):
        occupancy.occ3d_miou("none").update(_grid([0]), _grid([18]))


def test_report_formats():
    m = occupancy.occ3d_miou("camera")
    m.update(_grid([0, 0, 1, 17]), _grid([0, 1, 1, 17]))
    r = m.report()
    assert "mIoU: 50.00 %" in r.to_text() and "| others | 50.00 |" in r.to_markdown()
    import json

    d = json.loads(r.to_json())
    assert d["summary"]["mIoU"] == 0.5 and d["rows"][2]["values"]["IoU"] is None  # nan -> null


# ---------------------------------------------------------------------------- depth
def test_depth_metrics_hand_computed_and_frame_averaging():
    e = depth.frame_depth_errors(np.array([1.0, 2.0, 0.0, 100.0]), np.array([2.0, 2.0, 5.0, 5.0]))
    exp = [0.5, 0.5, math.sqrt(0.5), math.sqrt(0.5) * math.log(2), 0.5, 0.5, 0.5]
    np.testing.assert_allclose(e, exp)
    ms = depth.frame_depth_errors(np.array([1.0, 2, 4]), np.array([2.0, 4, 8]), median_scaling=True)
    np.testing.assert_allclose(ms, [0, 0, 0, 0, 1, 1, 1], atol=1e-12)
    m = depth.DepthMetric()
    m.update(np.array([1.0]), np.array([2.0]))                # abs rel 1.0 (1 pixel)
    m.update(np.array([1.0, 1, 1]), np.array([1.0, 1, 1]))    # abs rel 0.0 (3 pixels)
    m.update(np.array([0.0]), np.array([1.0]))                # no valid pixel
    assert m.result()["abs_rel"] == pytest.approx(0.5)        # per-image mean, not per-pixel (0.25)
    assert m.counts.tolist() == [2] and m.empty.tolist() == [1]
    m2 = depth.DepthMetric().load_state(m.state())
    assert m2.result() == m.result()


def test_depth_mean_over_cameras_of_per_camera_means():
    m = depth.DepthMetric(cameras=("CAM_FRONT", "CAM_BACK"))
    m.update(np.array([1.0]), np.array([2.0]), "CAM_FRONT")   # 1.0
    m.update(np.array([1.0]), np.array([1.0]), "CAM_FRONT")   # 0.0 -> front mean 0.5
    m.update(np.array([2.0]), np.array([1.0]), "CAM_BACK")    # 0.5 -> back mean 0.5
    m.update(np.array([4.0]), np.array([1.0]), "CAM_BACK")    # 0.75 -> back mean 0.625
    np.testing.assert_allclose(m.per_camera()[:, 0], [0.5, 0.625])
    m.update(np.array([1.0]), np.array([1.0]), "CAM_FRONT")   # front: (1 + 0 + 0) / 3
    assert m.result()["abs_rel"] == pytest.approx((1 / 3 + 0.625) / 2)  # image mean would be 2.25 / 5 = 0.45
    with pytest.raises(ValueError, match="CAM_LEFT"):
        m.update(np.array([1.0]), np.array([1.0]), "CAM_LEFT")


# ---------------------------------------------------------------------------- RayIoU counting
def _rays(label, dist, flow=None):
    return rayiou.CastRays(np.array(label), np.array(dist, float), None if flow is None else np.array(flow, float))


def test_rayiou_hand_computed():
    m = rayiou.occ3d_rayiou()
    inf = np.inf
    gt = _rays([4, 4, 11, 17, 11], [5, 10, 3, inf, 8])
    pred = _rays([4, 11, 11, 4, 17], [5.5, 10, 6, 3, inf])
    m.update_rays(gt, pred)
    # kept rays 0, 1, 2, 4; ray 3 (GT free) is dropped even though pred says car
    assert m.gt_cnt[4] == 2 and m.gt_cnt[11] == 2 and m.pred_cnt[4] == 1 and m.pred_cnt[11] == 2
    assert m.tp_cnt[:, 4].tolist() == [1, 1, 1] and m.tp_cnt[:, 11].tolist() == [0, 0, 1]
    iou = m.per_class_iou()
    assert iou[0, 4] == 0.5 and iou[0, 11] == 0.0 and iou[2, 11] == pytest.approx(1 / 3)
    assert np.isnan(iou[0, 0])
    np.testing.assert_allclose(m.rayiou_at(), [0.25, 0.25, (0.5 + 1 / 3) / 2])
    assert m.rayiou() == pytest.approx((0.25 + 0.25 + (0.5 + 1 / 3) / 2) / 3)


def test_mave_and_occscore_hand_computed():
    m = rayiou.openocc_rayiou()
    # OpenOcc: 0 car, 7 pedestrian, 16 free
    gt = _rays([0, 0, 7, 0], [5, 5, 5, 10], [[1, 0], [0, 0], [0, 0], [0, 0]])
    pred = _rays([0, 0, 7, 0], [5, 5, 5, 13], [[0, 0], [0, 0], [3, 4], [100, 0]])
    m.update_rays(gt, pred)
    ave = m.per_class_ave()
    assert ave[0] == pytest.approx(0.5) and ave[7] == pytest.approx(5.0)  # the 3 m-off ray is no TP at 2 m
    assert np.isnan(ave[1]) and np.isnan(ave[10])
    assert m.mave() == pytest.approx(2.75)
    assert m.rayiou() == pytest.approx(5 / 6)
    assert m.occ_score() == pytest.approx(0.9 * 5 / 6)
    m2 = rayiou.openocc_rayiou()
    m2.update_rays(_rays([0], [5], [[0, 0]]), _rays([0], [5], [[0.2, 0]]))
    assert m2.occ_score() == pytest.approx(0.9 + 0.1 * 0.8)


def test_rayiou_split_merge_and_state_equal_one_pass():
    frames = []
    for _ in range(4):
        n = 50
        gl = RNG.integers(0, 18, n)
        frames.append((_rays(gl, RNG.random(n) * 20), _rays(np.where(RNG.random(n) < 0.6, gl, RNG.integers(0, 18, n)), RNG.random(n) * 20)))
    one = rayiou.occ3d_rayiou()
    for g, p in frames:
        one.update_rays(g, p)
    a, b = rayiou.occ3d_rayiou(), rayiou.occ3d_rayiou()
    for g, p in frames[2:]:
        a.update_rays(g, p)
    for g, p in frames[:2][::-1]:
        b.update_rays(g, p)
    a.merge(b)
    for k, v in one.state().items():
        np.testing.assert_array_equal(a.state()[k], v)
    c = rayiou.occ3d_rayiou().load_state(one.state())
    assert c.rayiou() == one.rayiou()


# ---------------------------------------------------------------------------- rays and origins
def test_sparseocc_ray_set():
    p = rayiou.lidar_pitches()
    assert len(p) == 39
    assert p[0] == pytest.approx(-math.pi / 4) and p[9] == pytest.approx(-(math.pi / 2 - math.atan(10)))
    assert p[-2] < 0.21 <= p[-1]
    np.testing.assert_allclose(np.diff(p[9:]), p[9] - p[8])
    d = rayiou.lidar_ray_directions()
    assert d.shape == (14040, 3) and d.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(d[360 + 90], [0, math.cos(p[1]), math.sin(p[1])], atol=1e-6)  # pitch 1, azimuth 90 deg


def _pose(x, y=0.0, yaw=0.0, z=0.0):
    T = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    T[:2, :2] = [[c, -s], [s, c]]
    T[:3, 3] = [x, y, z]
    return T


def test_origin_selection_limit_and_eight_of_many():
    ego_from_lidar = _pose(0.94, 0, math.pi / 2, 1.84)  # LiDAR yawed 90 deg as in nuScenes
    # ego drives along global x in 2 m steps; the reference ego is yawed 90 deg (facing +y)
    ego_poses = [_pose(100 + 2 * i, 50, math.pi / 2) for i in range(30)]
    g_from_l = np.stack([T @ ego_from_lidar for T in ego_poses])
    o = rayiou.select_ray_origins(g_from_l, 0, ego_from_lidar)
    # frame i sits at global x + 2i, i.e. ego -y by 2i; the LiDAR mount adds +0.94 in ego x
    kept = [i for i in range(30) if abs(-2 * i) < 39]                    # i = 0..19
    sel = [kept[j] for j in np.round(np.linspace(0, len(kept) - 1, 8)).astype(int)]
    assert sel == [0, 3, 5, 8, 11, 14, 16, 19]
    np.testing.assert_allclose(o, [[0.94, -2 * i, 1.84] for i in sel], atol=1e-4)
    few = rayiou.select_ray_origins(g_from_l[:3], 2, ego_from_lidar)
    np.testing.assert_allclose(few, [[0.94, 4, 1.84], [0.94, 2, 1.84], [0.94, 0, 1.84]], atol=1e-4)


def test_nuscenes_origins_walk_the_scene_tables():
    from occ_core.eval.origins import nuscenes_ray_origins

    class FakeNusc:
        def __init__(self):
            q = [1.0, 0.0, 0.0, 0.0]
            self.t = {"scene": {"sc": {"first_sample_token": "s0"}}, "sample": {}, "sample_data": {},
                      "calibrated_sensor": {"cs": {"translation": [0.94, 0, 1.84], "rotation": q}}, "ego_pose": {}}
            for i in range(3):
                self.t["sample"][f"s{i}"] = {"scene_token": "sc", "next": f"s{i + 1}" if i < 2 else "",
                                             "data": {"LIDAR_TOP": f"sd{i}"}}
                self.t["sample_data"][f"sd{i}"] = {"calibrated_sensor_token": "cs", "ego_pose_token": f"ep{i}"}
                self.t["ego_pose"][f"ep{i}"] = {"translation": [10.0 * i, 0, 0], "rotation": q}

        def get(self, table, token):
            return self.t[table][token]

    o = nuscenes_ray_origins(FakeNusc(), ["s1"], progress=False)
    np.testing.assert_allclose(o["s1"], [[-9.06, 0, 1.84], [0.94, 0, 1.84], [10.94, 0, 1.84]], atol=1e-5)
    with pytest.raises(OccDataError, match="nope"):
        nuscenes_ray_origins(FakeNusc(), ["s0", "nope"], progress=False)


# ---------------------------------------------------------------------------- RayIoU vs brute force
TINY = grid.GridSpec.from_range("tiny", (-4.0, -4.0, -1.0, 4.0, 4.0, 2.2), 0.4)  # 20 x 20 x 8


def _brute_force_first_hits(sem, free, origins, dirs, g):
    """Exact first hits without a DDA: slab-intersect every ray with every occupied voxel."""
    occ = np.argwhere(sem != free)
    lo = np.asarray(g.range_min) + occ * np.asarray(g.voxel_size)
    hi = lo + np.asarray(g.voxel_size)
    o = np.repeat(origins, len(dirs), 0).astype(np.float64)
    d = np.tile(dirs, (len(origins), 1)).astype(np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    label = np.full(len(o), free)
    dist = np.full(len(o), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        for s in range(0, len(o), 2048):
            oo, ii = o[s:s + 2048, None, :], inv[s:s + 2048, None, :]
            t1, t2 = (lo[None] - oo) * ii, (hi[None] - oo) * ii
            t1 = np.where(np.isnan(t1), -np.inf, t1)
            t2 = np.where(np.isnan(t2), np.inf, t2)
            tn = np.minimum(t1, t2).max(-1).clip(min=0)
            tf = np.maximum(t1, t2).min(-1)
            through = tf > tn + 1e-9
            tn = np.where(through, tn, np.inf)
            j = tn.argmin(1)
            ok = np.isfinite(tn[np.arange(len(j)), j])
            label[s:s + 2048][ok] = sem[tuple(occ[j[ok]].T)]
            dist[s:s + 2048][ok] = tf[np.arange(len(j)), j][ok]
    return label, dist


@pytest.mark.parametrize("seed", [0, 1])
def test_cast_labels_and_rayiou_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    gt = np.full(TINY.dims, OCC3D_FREE, np.uint8)
    gt[:, :, 0] = 11                                            # ground
    blobs = rng.random(TINY.dims) < 0.04
    gt[blobs] = rng.integers(0, 17, blobs.sum())
    pred = gt.copy()
    flip = rng.random(TINY.dims) < 0.05
    pred[flip] = rng.integers(0, 18, flip.sum())
    # two origins inside the grid off the voxel lattice, one outside it (rays enter from the side)
    origins = np.array([[0.13, -0.21, 0.57], [-2.31, 1.77, 1.03], [5.3, -4.61, 0.77]])
    # every 3rd azimuth of the SparseOcc set: still holds the rays along +-x and +-y
    dirs = rayiou.lidar_ray_directions()[::3]
    brute = {}
    for name, sem in (("gt", gt), ("pred", pred)):
        c = rayiou.cast_labels(sem, origins, OCC3D_FREE, TINY, directions=dirs)
        lab, dist = brute[name] = _brute_force_first_hits(sem, OCC3D_FREE, origins, dirs, TINY)
        np.testing.assert_array_equal(c.label, lab)
        hit = np.isfinite(dist)
        np.testing.assert_array_equal(np.isfinite(c.distance), hit)
        np.testing.assert_allclose(c.distance[hit], dist[hit], atol=1e-4)
    m = rayiou.RayIoU(grid=TINY)
    m.update_rays(rayiou.cast_labels(gt, origins, OCC3D_FREE, TINY, directions=dirs),
                  rayiou.cast_labels(pred, origins, OCC3D_FREE, TINY, directions=dirs))
    ref = rayiou.RayIoU(grid=TINY)
    ref.update_rays(rayiou.CastRays(*brute["gt"], None), rayiou.CastRays(*brute["pred"], None))
    for k, v in ref.state().items():
        np.testing.assert_array_equal(m.state()[k], v, err_msg=k)
    assert 0 < ref.rayiou() < 1
    perfect = rayiou.RayIoU(grid=TINY)
    perfect.update(gt, gt, origins)
    assert perfect.rayiou() == 1.0
    empty = rayiou.RayIoU(grid=TINY)
    empty.update(gt, np.full(TINY.dims, OCC3D_FREE, np.uint8), origins)  # all-free prediction
    assert empty.rayiou() == 0.0 and empty.tp_cnt.sum() == 0


def test_rayiou_origin_outside_grid_and_flow_lookup():
    g = grid.GridSpec.from_range("line", (0.0, 0.0, 0.0, 4.0, 0.4, 0.4), 0.4)  # 10 x 1 x 1
    sem = np.full(g.dims, OPENOCC_FREE, np.uint8)
    sem[6, 0, 0] = 0                                                          # a car at x in [2.4, 2.8)
    flow = np.zeros((*g.dims, 2), np.float32)
    flow[6, 0, 0] = [3.0, 4.0]
    c = rayiou.cast_labels(sem, np.array([[-1.0, 0.2, 0.2]]), OPENOCC_FREE, g, flow, directions=np.array([[1.0, 0, 0], [-1.0, 0, 0]]))
    assert c.label.tolist() == [0, OPENOCC_FREE]
    assert c.distance[0] == pytest.approx(3.8) and np.isinf(c.distance[1])   # exit of the hit voxel
    assert c.flow[0].tolist() == [3.0, 4.0] and c.flow[1].tolist() == [0.0, 0.0]


def test_rayiou_rejects_bad_inputs():
    m = rayiou.RayIoU(grid=TINY)
    ok = np.full(TINY.dims, OCC3D_FREE, np.uint8)
    with pytest.raises(OccDataError, match="outside 0..17"):
        m.update(ok, ok + 1, np.zeros((1, 3)))
    with pytest.raises(OccDataError, match="no ray origin"):
        m.update(ok, ok, np.zeros((0, 3)))
    with pytest.raises(OccDataError, match="flow"):
        rayiou.openocc_rayiou().update(np.zeros((200, 200, 16), np.uint8), np.zeros((200, 200, 16), np.uint8), np.zeros((1, 3)))


# ---------------------------------------------------------------------------- DDP
def _ddp_worker(rank, world, init_file, states, out):
    import torch.distributed as dist

    from occ_core.eval.distributed import all_reduce_metric

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    m = occupancy.occ3d_miou().load_state(states[rank])
    all_reduce_metric(m)
    out.put((rank, m.hist.tolist(), m.frames))
    dist.destroy_process_group()


def test_all_reduce_across_two_processes_equals_one_pass(tmp_path):
    import torch.multiprocessing as mp

    gts = [RNG.integers(0, 18, (8, 8, 4)).astype(np.uint8) for _ in range(4)]
    preds = [RNG.integers(0, 18, (8, 8, 4)).astype(np.uint8) for _ in range(4)]
    one, parts = occupancy.occ3d_miou(), [occupancy.occ3d_miou(), occupancy.occ3d_miou()]
    for i, (g, p) in enumerate(zip(gts, preds)):
        one.update(g, p)
        parts[i % 2].update(g, p)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), [p.state() for p in parts], q), nprocs=2,
                       join=True, start_method="spawn")
    for _ in range(2):
        rank, hist, frames = q.get(timeout=30)
        np.testing.assert_array_equal(np.array(hist), one.hist)
        assert frames == 4
