"""The synthetic nuScenes-format world: devkit compatibility, sensor/label consistency, determinism,
CLI errors and the geometry kernels it is built on."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import points_in_box
from pyquaternion import Quaternion

from occ_core.classes import (DETECTION_CLASSES, LIDARSEG_TO_OCC3D, OCC3D_FREE, OCC3D_INDEX, OCC3D_TO_OPENOCC,
                              OPENOCC_FREE)
from occ_core.data.synthetic import SynthConfig, generate, load_splits
from occ_core.data.synthetic import dataset as ds_mod
from occ_core.data.synthetic.cli import main
from occ_core.data.synthetic.geometry import Ground, Solids, cast_rays, sdf_box
from occ_core.data.synthetic.groundtruth import label_voxels
from occ_core.errors import OccDataError
from occ_core.grid import OCC3D, GridSpec

DYNAMIC_OCC3D = [OCC3D_INDEX[n] for n in ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle",
                                           "motorcycle", "pedestrian")]


@pytest.fixture(scope="module")
def nusc(synthetic_dataroot) -> NuScenes:
    return NuScenes(version="v1.0-mini", dataroot=str(synthetic_dataroot), verbose=False)


def _lidar_in_ego(nusc: NuScenes, sd_token: str) -> np.ndarray:
    rec = nusc.get("sample_data", sd_token)
    cs = nusc.get("calibrated_sensor", rec["calibrated_sensor_token"])
    pc = LidarPointCloud.from_file(nusc.get_sample_data_path(sd_token))
    pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
    pc.translate(np.array(cs["translation"]))
    return pc.points[:3].T


# ----------------------------------------------------------------------------- devkit
def test_devkit_walks_every_sample(nusc, synthetic_dataroot):
    assert len(nusc.scene) == 2 and len(nusc.sample) == 6
    channels = {"LIDAR_TOP", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT",
                "CAM_BACK_RIGHT"}
    for scene in nusc.scene:
        tok, n = scene["first_sample_token"], 0
        while tok:
            sample = nusc.get("sample", tok)
            assert set(sample["data"]) == channels
            for ch, sd in sample["data"].items():
                path, boxes, K = nusc.get_sample_data(sd)
                assert os.path.isfile(path)
                if ch.startswith("CAM"):
                    assert K.shape == (3, 3)
                    img = cv2.imread(path)
                    assert img.shape == (180, 320, 3)
            tok, n = sample["next"], n + 1
        assert n == scene["nbr_samples"] == 3
        # 20 Hz LiDAR chain: 2 intervals x 10 steps + 1, timestamps strictly increasing
        first = nusc.get("sample", scene["first_sample_token"])
        sd = nusc.get("sample_data", first["data"]["LIDAR_TOP"])
        stamps = [sd["timestamp"]]
        while sd["next"]:
            sd = nusc.get("sample_data", sd["next"])
            stamps.append(sd["timestamp"])
            # a sweep belongs to the following keyframe, as the devkit's box interpolation expects
            smp = nusc.get("sample", sd["sample_token"])
            assert smp["timestamp"] >= sd["timestamp"]
        assert len(stamps) == 21 and np.all(np.diff(stamps) == 50_000)
    # every sample_data's sweeps interpolate boxes without error
    sweep = next(r for r in nusc.sample_data if not r["is_key_frame"])
    _, boxes, _ = nusc.get_sample_data(sweep["token"])
    assert len(boxes) > 0
    splits = load_splits(synthetic_dataroot)
    assert splits == {"train": ["scene-0001"], "val": ["scene-0002"]}


def test_all_ten_classes_are_annotated(nusc):
    cats = Counter(a["category_name"] for a in nusc.sample_annotation)
    from occ_core.classes import category_to_occ3d
    names = {n for n in DETECTION_CLASSES if any(category_to_occ3d(c) == OCC3D_INDEX[n] for c in cats)}
    assert names == set(DETECTION_CLASSES)
    for inst in nusc.instance:  # annotation chains are consistent
        ann = nusc.get("sample_annotation", inst["first_annotation_token"])
        k = 1
        while ann["next"]:
            ann = nusc.get("sample_annotation", ann["next"])
            k += 1
        assert k == inst["nbr_annotations"] and ann["token"] == inst["last_annotation_token"]


def test_map_pointcloud_to_image_agrees_with_depth_maps(nusc, synthetic_dataroot):
    rel_all = []
    for sample in nusc.sample:
        for cam in ("CAM_FRONT", "CAM_BACK_LEFT"):
            pts, depth, _ = nusc.explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"], sample["data"][cam])
            assert pts.shape[1] > 200
            rec = nusc.get("sample_data", sample["data"][cam])
            dpath = synthetic_dataroot / "depth" / cam / (Path(rec["filename"]).name[:-4] + ".png")
            dm = cv2.imread(str(dpath), cv2.IMREAD_UNCHANGED)
            assert dm.dtype == np.uint16 and dm.shape == (180, 320)
            d = dm[pts[1].astype(int), pts[0].astype(int)] / 256.0
            rel_all.append(np.abs(d - depth) / depth)
    rel = np.concatenate(rel_all)
    # the LiDAR sits 0.3-1 m from the cameras: occlusion edges differ; everything else agrees
    assert np.median(rel) < 0.01
    assert np.mean(rel < 0.05) > 0.9


def test_lidarseg_matches_gt_voxels(nusc, synthetic_dataroot):
    agree = total = 0
    for sample in nusc.sample:
        sd = sample["data"]["LIDAR_TOP"]
        pts = _lidar_in_ego(nusc, sd)
        seg = np.fromfile(synthetic_dataroot / nusc.get("lidarseg", sd)["filename"], dtype=np.uint8)
        assert len(seg) == len(pts)
        scene = nusc.get("scene", sample["scene_token"])["name"]
        gt = np.load(synthetic_dataroot / "gts" / scene / sample["token"] / "labels.npz")
        idx, inside = OCC3D.points_to_voxels(pts)
        g = gt["semantics"][idx[inside, 0], idx[inside, 1], idx[inside, 2]]
        lab = LIDARSEG_TO_OCC3D[seg[inside]]
        assert not np.any(lab == 255)  # no noise / ego labels are produced
        agree += int((g == lab).sum())
        total += int(inside.sum())
    assert total > 10_000
    assert agree / total >= 0.95


def test_annotation_boxes_contain_their_points(nusc, synthetic_dataroot):
    checked = 0
    for sample in nusc.sample:
        sd = sample["data"]["LIDAR_TOP"]
        pan = np.load(synthetic_dataroot / nusc.get("panoptic", sd)["filename"])["data"]
        pc = LidarPointCloud.from_file(nusc.get_sample_data_path(sd))
        _, boxes, _ = nusc.get_sample_data(sd)  # boxes in the LiDAR frame
        anns = {a: nusc.get("sample_annotation", a) for a in sample["anns"]}
        in_box = np.stack([points_in_box(b, pc.points[:3]) for b in boxes])  # (boxes, points)
        for iid in np.unique(pan % 1000):
            if iid == 0:
                continue
            m = pan % 1000 == iid
            inside = in_box[:, m].all(axis=1)
            assert inside.any(), f"points of object {iid} lie outside every box"
            box = boxes[int(np.argmax(inside))]
            assert anns[box.token]["num_lidar_pts"] == int(m.sum())
            cat = nusc.get("category", nusc.get("instance", anns[box.token]["instance_token"])["category_token"])
            assert cat["index"] == int(pan[m][0] // 1000)
            checked += 1
    assert checked > 20


def test_gt_files(nusc, synthetic_dataroot):
    flows = 0
    for sample in nusc.sample:
        scene = nusc.get("scene", sample["scene_token"])["name"]
        gt = np.load(synthetic_dataroot / "gts" / scene / sample["token"] / "labels.npz")
        oo = np.load(synthetic_dataroot / "openocc_v2" / scene / sample["token"] / "labels.npz")
        sem = gt["semantics"]
        assert sem.shape == (200, 200, 16) and sem.dtype == np.uint8
        assert gt["mask_lidar"].dtype == bool and gt["mask_camera"].dtype == bool
        assert 0.2 < gt["mask_camera"].mean() < 0.9 and 0.2 < gt["mask_lidar"].mean() < 0.9
        assert sem.max() <= OCC3D_FREE and not np.any(sem == OCC3D_INDEX["others"])
        # the ground layer below the ego is driveable surface; the ego's own box is free
        assert sem[100, 100, 2] == OCC3D_INDEX["driveable_surface"]
        assert np.all(sem[98:103, 98:103, 3:6] == OCC3D_FREE)
        assert np.array_equal(oo["semantics"], OCC3D_TO_OPENOCC[sem])
        assert oo["flow"].shape == (200, 200, 16, 2) and oo["flow"].dtype == np.float32
        moving = np.linalg.norm(oo["flow"], axis=-1) > 0
        assert np.all(np.isin(sem[moving], DYNAMIC_OCC3D))
        assert np.all(oo["semantics"][moving] != OPENOCC_FREE)
        flows += int(moving.sum())
        # occupied voxels that are visible exist in the camera mask; hidden ones too
        occ = sem != OCC3D_FREE
        assert (occ & gt["mask_camera"]).sum() > 1000 and (occ & ~gt["mask_camera"]).sum() > 100
    assert flows > 0


def test_flow_matches_annotation_velocity(nusc, synthetic_dataroot):
    """Flow in a moving object's voxels equals its annotated velocity rotated into base_link."""
    sample = nusc.sample[1]
    scene = nusc.get("scene", sample["scene_token"])["name"]
    flow = np.load(synthetic_dataroot / "openocc_v2" / scene / sample["token"] / "labels.npz")["flow"]
    ego = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
    R = Quaternion(ego["rotation"]).rotation_matrix
    n = 0
    for a in sample["anns"]:
        v = nusc.box_velocity(a)  # central differences of the annotated positions (m/s, map)
        if not np.all(np.isfinite(v)) or np.linalg.norm(v) < 0.5:
            continue
        c = R.T @ (np.array(nusc.get("sample_annotation", a)["translation"]) - np.array(ego["translation"]))
        idx, inside = OCC3D.points_to_voxels(c[None])
        if not inside[0]:
            continue
        f = flow[idx[0, 0], idx[0, 1], :]
        f = f[np.linalg.norm(f, axis=1) > 0]
        if len(f) == 0:
            continue
        v_ego = (R.T @ v)[:2]
        assert np.allclose(f.mean(0), v_ego, atol=0.15 * np.linalg.norm(v) + 0.1)
        n += 1
    assert n >= 3


# ----------------------------------------------------------------------------- determinism, CLI
def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    args = ["--scenes", "1", "--samples-per-scene", "2", "--image-size", "64x36", "--no-sweeps", "--quiet"]
    assert main(["--out", str(tmp_path / "a"), "--seed", "7", *args]) == 0
    assert main(["--out", str(tmp_path / "b"), "--seed", "7", *args]) == 0
    assert main(["--out", str(tmp_path / "c"), "--seed", "8", *args]) == 0
    # two scenes in two worker processes equal two scenes generated one after the other
    two = ["--scenes", "2", "--samples-per-scene", "1", "--image-size", "32x18", "--no-sweeps", "--quiet"]
    assert main(["--out", str(tmp_path / "p"), "--workers", "2", *two]) == 0
    assert main(["--out", str(tmp_path / "s"), "--workers", "1", *two]) == 0
    assert _digest(tmp_path / "p") == _digest(tmp_path / "s")
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(da) > 30 and da == db
    assert da != dc
    assert not list(tmp_path.glob("*.tmp-*"))


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["--out", str(out), "--scenes", "-1"]) == 2
    assert "--scenes" in capsys.readouterr().err
    assert main(["--out", str(out), "--samples-per-scene", "0"]) == 2
    assert main(["--out", str(out), "--image-size", "640by360"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["--out", str(out), "--scenes", "1", "--samples-per-scene", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err
    assert (out / "keep.txt").exists()
    tiny = ["--scenes", "1", "--samples-per-scene", "1", "--image-size", "32x18", "--no-sweeps", "--quiet"]
    assert main(["--out", str(out), "--overwrite", *tiny]) == 2  # not a dataset: never deleted
    assert "refusing" in capsys.readouterr().err and (out / "keep.txt").exists()
    data = tmp_path / "data"
    assert main(["--out", str(data), *tiny]) == 0
    (data / "stale.txt").write_text("x")
    assert main(["--out", str(data), "--overwrite", "--seed", "3", *tiny]) == 0
    assert not (data / "stale.txt").exists() and (data / "v1.0-mini" / "scene.json").exists()
    assert "seed 3" in (data / "v1.0-mini" / "scene.json").read_text()
    with pytest.raises(OccDataError, match="image_size"):
        SynthConfig(image_size=(0, 10))


def test_cli_rejects_output_below_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["--out", str(tmp_path / "file" / "data"), "--scenes", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is not a folder" in err
    assert main(["--out", str(tmp_path / "file"), "--scenes", "1", "--quiet"]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_cli_rejects_unwritable_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["--out", str(ro / "data"), "--scenes", "1", "--samples-per-scene", "1", "--quiet"]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_interrupted_run_leaves_no_dataset(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ds_mod.render_camera

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    stale = tmp_path / ".d.tmp-999999999"  # left by a killed run (no such pid)
    (stale / "samples").mkdir(parents=True)
    monkeypatch.setattr(ds_mod, "render_camera", failing)
    with pytest.raises(KeyboardInterrupt):
        generate(SynthConfig(scenes=1, samples_per_scene=2, image_size=(32, 18), sweeps=False), tmp_path / "d",
                 progress=False)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- geometry kernels
def _flat_ground() -> Ground:
    return Ground(np.full((10, 10), OCC3D_INDEX["driveable_surface"], np.uint8), np.array([-1000.0, -1000.0]), 200.0)


def _one_box(center, half, yaw, cls="car") -> Solids:
    return Solids(box_center=np.array([center], float), box_half=np.array([half], float),
                  box_yaw=np.array([yaw], float), box_cls=np.array([OCC3D_INDEX[cls]], np.uint8),
                  box_inst=np.array([1], np.int32))


def test_cast_rays_box_and_ground():
    yaw = 0.4
    solids = _one_box((10.0, 0.0, 1.0), (2.0, 1.0, 1.0), yaw)
    o = np.array([0.0, 0.0, 1.0])
    rng = np.random.default_rng(0)
    az = rng.uniform(-np.pi, np.pi, 4000)
    el = rng.uniform(-0.6, 0.3, 4000)
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], 1)
    hits = cast_rays(solids, _flat_ground(), o, d, 100.0, sectors=36)
    p = o + hits.distance[:, None] * d
    car = hits.cls == OCC3D_INDEX["car"]
    assert car.sum() > 20 and np.all(hits.inst[car] == 1)
    # car hits lie on the box surface, ground hits on z = 0
    assert np.all(np.abs(sdf_box(p[car], np.array([10.0, 0.0, 1.0]), np.array([2.0, 1.0, 1.0]), yaw)) < 1e-6)
    road = hits.cls == OCC3D_INDEX["driveable_surface"]
    assert np.allclose(p[road, 2], 0.0, atol=1e-9)
    assert np.all(np.isinf(hits.distance[d[:, 2] >= 0] [hits.cls[d[:, 2] >= 0] == OCC3D_FREE]))
    # brute force: a point just before each car hit is outside the box, nothing nearer was hit
    q = o + (hits.distance[car, None] - 1e-3) * d[car]
    assert np.all(sdf_box(q, np.array([10.0, 0.0, 1.0]), np.array([2.0, 1.0, 1.0]), yaw) > 0)
    assert np.allclose(np.linalg.norm(hits.normal[car], axis=1), 1.0)


def test_label_voxels_box_is_exact_up_to_dilation():
    grid = GridSpec.from_range("t", (-4.0, -4.0, -1.0, 4.0, 4.0, 3.0), 0.4)
    solids = _one_box((0.55, -0.3, 1.0), (1.0, 0.6, 0.7), 0.0)
    lab = label_voxels(solids, _flat_ground(), np.eye(4), np.zeros((2, 3)), grid, dilation=0.0)
    car = lab.semantics == OCC3D_INDEX["car"]
    # axis-aligned box [-0.45, 1.55] x [-0.9, 0.3] x [0.3, 1.7]: voxels that overlap it
    ax = [grid.range_min[a] + 0.4 * np.arange(grid.dims[a]) for a in range(3)]
    lo = [np.array(ax[a]) for a in range(3)]
    ov = [(lo[a] < hi) & (lo[a] + 0.4 > low) for a, (low, hi) in enumerate([(-0.45, 1.55), (-0.9, 0.3), (0.3, 1.7)])]
    expect = ov[0][:, None, None] & ov[1][None, :, None] & ov[2][None, None, :]
    assert np.array_equal(car, expect)
    assert np.all(lab.instance[car] == 1)
    ground = lab.semantics[:, :, 2] == OCC3D_INDEX["driveable_surface"]
    assert ground.sum() == 20 * 20 - expect[:, :, 2].sum()


def test_visibility_masks_stop_at_the_first_hit():
    from occ_core.data.synthetic.groundtruth import camera_visibility, lidar_visibility
    from occ_core.data.synthetic.sensors import LidarConfig

    grid = GridSpec.from_range("t", (-20.0, -20.0, -2.0, 20.0, 20.0, 6.0), 0.4)
    ctr = grid.all_voxel_centers()
    dist = np.linalg.norm(ctr, axis=-1)
    cfg = LidarConfig()
    el = cfg.elevations()
    # a LiDAR at the origin that sees a surface 10 m away in every direction
    vis = lidar_visibility(np.full((cfg.beams, cfg.azimuth_steps), 10.0), -np.pi, el, 70.0, np.eye(4), grid)
    elev = np.degrees(np.arcsin(ctr[..., 2] / np.maximum(dist, 1e-9)))
    in_fov = (elev > -30.0) & (elev < 11.0)
    assert np.all(vis[(dist < 9.6) & in_fov])          # in front of the surface
    assert not np.any(vis[dist > 10.0 + 0.35])          # behind it (entry beyond 10 m)
    assert not np.any(vis[(elev > 12.0) | (elev < -32.0)])  # outside the vertical field of view
    # a camera looking along +x (optical z = ego x) with a surface at z-depth 8 m
    T_cam_from_ego = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    K = np.array([[100.0, 0, 100], [0, 100.0, 50], [0, 0, 1]])
    cv = camera_visibility([np.full((100, 200), 8.0, np.float32)], [K], [T_cam_from_ego], grid)
    x, y, z = ctr[..., 0], ctr[..., 1], ctr[..., 2]
    in_view = (x > 0.5) & (np.abs(y) < 0.9 * x) & (np.abs(z) < 0.45 * x)
    assert np.all(cv[in_view & (x < 7.6)])
    assert not np.any(cv[x > 8.0 + 0.2 * 1.8])
    assert not np.any(cv[x < 0])


def test_camera_visibility_includes_raised_ground_voxels():
    """Ground raised above its voxels' centres (a sidewalk at the curb height, 0.15 m, in the
    layer [-0.2, 0.2)) is seen from above at a grazing angle: the ray towards a far voxel's
    centre (z = 0) meets the raised surface of the nearer columns first, yet the voxel holding
    the first hit of a pixel is visible."""
    from occ_core.data.synthetic.groundtruth import camera_visibility

    grid = GridSpec.from_range("t", (-20.0, -20.0, -1.0, 20.0, 20.0, 5.4), 0.4)
    # a camera 1.5 m above the ground looking along +x (optical z = ego x, y = -ego z)
    T_ego_from_cam = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1]], float)
    T_cam_from_ego = np.linalg.inv(T_ego_from_cam)
    K = np.array([[1000.0, 0, 100], [0, 1000.0, 200], [0, 0, 1]])  # rows < 0.3 m of ground apart at 19 m
    H, W = 400, 200
    # depth map of the plane z = 0.15 (ego): ray through pixel (u, v) hits it at t = (1.5 - 0.15) / down
    v = np.arange(H)[:, None] + 0.5
    down = (v - K[1, 2]) / K[1, 1]  # optical y per unit z-depth (image rows below the centre look down)
    depth = np.where(down > 0, (1.5 - 0.15) / np.maximum(down, 1e-9), 0.0)
    depth = np.where(depth < 120, depth, 0.0).astype(np.float32) * np.ones((1, W), np.float32)
    vis = camera_visibility([depth], [K], [T_cam_from_ego], grid)
    ix = np.nonzero((grid.all_voxel_centers()[:, 0, 0, 0] > 12) & (grid.all_voxel_centers()[:, 0, 0, 0] < 19))[0]
    iy = np.argmin(np.abs(grid.all_voxel_centers()[0, :, 0, 1]))
    layer = int(np.floor((0.15 - grid.range_min[2]) / grid.voxel_size[2]))  # holds the surface
    assert np.all(vis[ix, iy, layer])  # far ground voxels are seen (the test fails without the hits)
    assert not np.any(vis[ix, iy, layer - 1])  # the layer below the surface is not


def test_camera_sweeps(tmp_path):
    out = tmp_path / "cs"
    generate(SynthConfig(scenes=1, samples_per_scene=2, image_size=(48, 27), sweeps=False, camera_sweeps=True), out,
             progress=False)
    nusc = NuScenes(version="v1.0-mini", dataroot=str(out), verbose=False)
    cams = [r for r in nusc.sample_data if r["channel"] == "CAM_FRONT"]
    assert len(cams) == 2 + 5  # two keyframes, 12 Hz in between
    assert sum(not r["is_key_frame"] for r in cams) == 5
    assert all(r["filename"].startswith("sweeps/CAM_FRONT/") for r in cams if not r["is_key_frame"])
    assert len([r for r in nusc.sample_data if r["channel"] == "LIDAR_TOP"]) == 2
    for r in cams:
        assert (out / "depth" / "CAM_FRONT" / (Path(r["filename"]).name[:-4] + ".png")).is_file()
        _, boxes, _ = nusc.get_sample_data(r["token"])  # interpolated boxes for sweeps


def test_cast_rays_culling_matches_brute_force():
    """Sector and slope culling never changes a hit: compare with every ray against every solid."""
    from occ_core.data.synthetic.geometry import _box_hits, _cyl_hits, _ell_hits

    rng = np.random.default_rng(3)
    n = 40
    solids = Solids(
        box_center=np.c_[rng.uniform(-30, 30, (n, 2)), rng.uniform(0.2, 4.0, n)], box_half=rng.uniform(0.2, 3.0, (n, 3)),
        box_yaw=rng.uniform(-np.pi, np.pi, n), box_cls=np.full(n, 4, np.uint8), box_inst=np.arange(1, n + 1, dtype=np.int32),
        cyl_xy=rng.uniform(-30, 30, (n, 2)), cyl_z=np.sort(rng.uniform(0.0, 6.0, (n, 2)), axis=1),
        cyl_r=rng.uniform(0.05, 1.0, n), cyl_cls=np.full(n, 15, np.uint8), cyl_inst=np.zeros(n, np.int32),
        ell_center=np.c_[rng.uniform(-30, 30, (n, 2)), rng.uniform(0.0, 5.0, n)], ell_radii=rng.uniform(0.3, 2.5, (n, 3)),
        ell_cls=np.full(n, 16, np.uint8), ell_inst=np.zeros(n, np.int32))
    d = rng.normal(size=(20000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    for o in (np.array([0.5, -0.3, 1.8]), np.array([2.0, 1.0, 9.0])):  # among the solids; above all of them
        hits = cast_rays(solids, _flat_ground(), o, d, 50.0, sectors=48)
        ref = np.full(len(d), np.inf)
        ref = np.minimum(ref, _box_hits(o, d, solids.box_center, solids.box_half, solids.box_yaw)[0].min(axis=1))
        ref = np.minimum(ref, _cyl_hits(o, d, solids.cyl_xy, solids.cyl_z, solids.cyl_r)[0].min(axis=1))
        ref = np.minimum(ref, _ell_hits(o, d, solids.ell_center, solids.ell_radii).min(axis=1))
        down = d[:, 2] < 0
        ref[down] = np.minimum(ref[down], -o[2] / d[down, 2])  # the flat road at z = 0
        ref[ref > 50.0] = np.inf
        assert np.isfinite(ref).sum() > 5000
        assert np.array_equal(np.isfinite(hits.distance), np.isfinite(ref))
        fin = np.isfinite(ref)
        assert np.allclose(hits.distance[fin], ref[fin], rtol=0, atol=1e-9)


def test_every_world_has_all_ten_classes_and_nothing_overlaps():
    from occ_core.data.synthetic.world import build_world

    for seed in range(6):
        w = build_world(np.random.default_rng([seed, 0, 0]), 9.5)
        assert set(w.objects.name) == set(DETECTION_CLASSES)
        for t in (0.0, 4.5, 9.5):
            st = w.object_states(t)
            # no two object boxes overlap (checked on their footprints' inscribed circles)
            r = 0.5 * np.minimum(w.objects.wlh[:, 0], w.objects.wlh[:, 1])
            d = np.linalg.norm(st.center[:, None, :2] - st.center[None, :, :2], axis=-1)
            np.fill_diagonal(d, np.inf)
            assert np.all(d > 0.9 * (r[:, None] + r[None, :]))
            # nobody walks into a pole or a tree trunk
            dc = np.linalg.norm(st.center[:, None, :2] - w.static.cyl_xy[None], axis=-1)
            assert np.all(dc >= r[:, None] + w.static.cyl_r[None])
            # the ego (base_link at the rear axle, 4.6 x 1.9 m car) overlaps no object
            p, yaw = w.ego_pose(t)
            c = p[:2] + 1.4 * np.array([np.cos(yaw), np.sin(yaw)])
            assert np.all(np.linalg.norm(st.center[:, :2] - c, axis=1) > 0.95 + r)
