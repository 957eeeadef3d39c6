"""The rolling semantic map (occ_core.mapping): what it keeps, what it forgets, where it puts
things, its costmap, and fusion against per-frame predictions on a tiny world."""

from __future__ import annotations

import numpy as np
import pytest

from occ_core.classes import OCC3D_FREE, OCC3D_INDEX
from occ_core.errors import OccDataError
from occ_core.geometry import make_transform
from occ_core.grid import GridSpec
from occ_core.mapping import UNKNOWN, MapConfig, RollingSemanticMap
from occ_core.mapping.costmap import cost_table, costmap_from_labels, map_costmap, parse_class_costs

CAR, WALL, ROAD, FREE = OCC3D_INDEX["car"], OCC3D_INDEX["manmade"], OCC3D_INDEX["driveable_surface"], OCC3D_FREE
#: A small ego grid like Occ3D's (0.4 m, z from -1.0 m), 16 x 16 x 8 voxels.
EGO = GridSpec.from_range("small", (-3.2, -3.2, -1.0, 3.2, 3.2, 2.2), 0.4)


def yaw_pose(x: float, y: float, yaw: float = 0.0, z: float = 0.0) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return make_transform([x, y, z], np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]))


def small_map(**kw) -> RollingSemanticMap:
    return RollingSemanticMap(MapConfig(extent=(9.6, 9.6, 4.0), **kw), EGO)


def frame(occupied: dict[tuple[int, int, int], int], seen=None, score: float = 0.9):
    """Ego grid labels (free but for ``occupied``), scores, and seen (all by default)."""
    labels = np.full(EGO.dims, FREE, np.uint8)
    for ijk, c in occupied.items():
        labels[ijk] = c
    return labels, np.full(EGO.dims, score, np.float32), np.ones(EGO.dims, bool) if seen is None else seen


def test_a_static_wall_seen_over_frames_stays():
    m = small_map()
    wall = {(10, y, z): WALL for y in range(4, 12) for z in range(2, 6)}
    T = yaw_pose(0.0, 0.0)
    for _ in range(4):
        m.update(*frame(wall), T)
    # one frame misses it (predicted free with middling confidence): the wall stays
    out = m.update(*frame({}, score=0.6), T)
    assert all(out[ijk] == WALL for ijk in wall)
    # frames that do not see it keep it, wherever the robot stands
    unseen = np.ones(EGO.dims, bool)
    unseen[8:, :, :] = False
    for x in (0.4, 0.8):
        m.update(*frame({}, seen=unseen), yaw_pose(x, 0.0))
    crop = m.crop(T)
    assert all(crop[ijk] == WALL for ijk in wall)
    assert (crop == WALL).sum() == len(wall)


def car_at(step: int) -> dict:
    """A 3 x 2 x 2 voxel car, one voxel further along ego x per step."""
    return {(2 + step + i, 7 + j, 2 + k): CAR for i in range(3) for j in range(2) for k in range(2)}


def trail_cells(m: RollingSemanticMap, T: np.ndarray, car: dict) -> tuple[int, int]:
    """(map voxels of class car whose centre lies outside the current car's ego voxels, all car voxels)."""
    cells = np.argwhere(m.labels() == CAR)
    centres = m.window_grid().voxel_centers(cells)
    ego = (np.linalg.inv(T) @ np.c_[centres, np.ones(len(centres))].T).T[:, :3]
    idx, inside = EGO.points_to_voxels(ego)
    outside = [not (ok and tuple(i) in car) for i, ok in zip(idx, inside)]
    return int(sum(outside)), len(cells)


def car_frame(step: int):
    """The car confidently seen (0.9), the free space around it less so (0.7)."""
    labels, scores, seen = frame(car_at(step), score=0.7)
    scores[labels == CAR] = 0.9
    return labels, scores, seen


def test_a_car_driving_through_leaves_no_trail_once_seen_free():
    m = small_map()
    T = yaw_pose(0.5, -0.3, 0.3)  # the robot yawed: the map resamples the ego grid
    for step in range(8):  # the car moves one voxel per frame, every frame sees everything
        out = m.update(*car_frame(step), T)
        assert all(out[ijk] == CAR for ijk in car_at(step))  # the current car is there at once ...
        assert (out == CAR).sum() == 12  # ... and nothing of where it was
    trail, cars = trail_cells(m, T, car_at(7))
    assert trail == 0 and cars > 0
    # a car treated like a static object is not overturned by one unsure free observation: the
    # same drive leaves a trail (the test can fail)
    slow = small_map(dynamic_classes=())
    for step in range(8):
        slow.update(*car_frame(step), T)
    assert trail_cells(slow, T, car_at(7))[0] > 0


def test_scrolling_keeps_voxels_in_place_after_a_known_motion():
    m = small_map()
    T0 = yaw_pose(0.0, 0.0)
    post = (12, 4, 3)  # ego voxel centre (1.8, -1.4, 0.4) m in odom at T0
    m.update(*frame({post: WALL}), T0)
    odom = EGO.voxel_centers(np.array([post]))[0]
    # drive 2.0 m forward and 0.8 m left, turned 90 degrees left: the post is now at
    # ego x = odom y - 0.8 = -2.2, ego y = -(odom x - 2.0) = 0.2
    T1 = yaw_pose(2.0, 0.8, np.pi / 2)
    shift = m.move_to(T1)
    assert tuple(shift) == (5, 2, 0)  # whole voxels
    crop = m.crop(T1)
    expect = np.linalg.inv(T1) @ np.append(odom, 1.0)
    idx, inside = EGO.points_to_voxels(expect[None, :3])
    assert inside[0] and tuple(idx[0]) == (2, 8, 3)
    assert (crop == WALL).sum() == 1 and crop[2, 8, 3] == WALL
    # the window itself: the post sits at (odom - origin) / voxel_size
    win = m.labels()
    w = np.floor((odom - m.origin) / m.voxel_size).astype(int)
    assert win[tuple(w)] == WALL and (win == WALL).sum() == 1
    # voxels that leave the window are forgotten; coming back finds them unknown
    m.move_to(yaw_pose(30.0, 0.0))
    m.move_to(T0)
    assert m.crop(T0)[post] == UNKNOWN


def test_unseen_voxels_keep_their_state_and_never_seen_ones_are_unknown():
    m = small_map()
    seen = np.zeros(EGO.dims, bool)
    seen[:, :8] = True
    out = m.update(*frame({(3, 3, 3): CAR, (4, 4, 3): WALL, (3, 12, 3): WALL, (5, 12, 3): CAR}, seen=seen),
                   yaw_pose(0.0, 0.0))
    assert out[3, 3, 3] == CAR and out[4, 4, 3] == WALL and out[0, 0, 0] == FREE
    assert out[3, 12, 3] == UNKNOWN  # never seen: the map knows nothing (occ-predict --fuse keeps the frame's label)
    assert out[5, 12, 3] == CAR  # ... but moving objects out of sight are the frame's own guess
    # the next frame sees nothing: the wall is remembered, the car is not carried out of sight
    out = m.update(*frame({}, seen=np.zeros(EGO.dims, bool)), yaw_pose(0.0, 0.0))
    assert out[4, 4, 3] == WALL and out[3, 3, 3] == FREE
    # a pose jump beyond reset_distance clears the map
    m.update(*frame({}, seen=np.zeros(EGO.dims, bool)), yaw_pose(50.0, 0.0))
    assert (m.labels() != UNKNOWN).sum() == 0 and m.resets == 1


def test_bad_inputs_are_named():
    m = small_map()
    with pytest.raises(OccDataError, match="labels has shape"):
        m.update(np.zeros((3, 3, 3), np.uint8), None, np.ones((3, 3, 3), bool), np.eye(4))
    with pytest.raises(OccDataError, match=r"\(4, 4\)"):
        m.update(*frame({}), np.eye(3))
    with pytest.raises(OccDataError, match="evidence_rate"):
        MapConfig(evidence_rate=1.5)
    with pytest.raises(OccDataError, match="unknown keys"):
        MapConfig.from_dict({"voxel": 0.2})


def test_costmap_of_a_hand_made_grid():
    """Obstacles in the band are lethal, road free, unseen columns unknown, rows along y."""
    labels = np.full((5, 4, 6), UNKNOWN, np.uint8)  # window at origin (10, 20, -1.0), 0.4 m voxels
    labels[:, :, 2] = ROAD  # ground layer z in [-0.2, 0.2) around base z 0
    labels[:, :, 3:] = FREE
    labels[1, 2, 3] = CAR  # an obstacle 0.2-0.6 m up
    labels[3, 0, 4] = WALL  # 0.6-1.0 m up
    labels[4, 3, :] = UNKNOWN  # a column nobody saw
    labels[0, 3, 5] = WALL  # 1.0-1.4 m up: above the band (max 1.0 m), ignored
    table = cost_table()
    cm = costmap_from_labels(labels, np.array([10.0, 20.0, -1.0]), 0.4, 0.0, 0.0, 1.0, table)
    assert cm.data.shape == (4, 5) and cm.data.dtype == np.int8  # (height = y cells, width = x cells)
    assert cm.origin == (10.0, 20.0, 0.0) and cm.resolution == 0.4
    assert cm.data[2, 1] == 100 and cm.data[0, 3] == 100
    assert cm.data[3, 4] == -1
    assert cm.data[3, 0] == 0
    flat = cm.data.ravel()  # nav_msgs order: data[y * width + x]
    assert flat[2 * 5 + 1] == 100 and (flat == 0).sum() == 4 * 5 - 3
    # the table is a parameter: terrain at 50, road lethal
    t2 = cost_table(parse_class_costs(["driveable_surface=100"]))
    assert (costmap_from_labels(labels, np.array([10.0, 20.0, -1.0]), 0.4, 0.0, 0.0, 1.0, t2).data[:3, :4] == 100).all()
    with pytest.raises(OccDataError, match="unknown class 'road'"):
        parse_class_costs(["road=0"])
    with pytest.raises(OccDataError, match="class=cost"):
        parse_class_costs(["terrain"])
    with pytest.raises(OccDataError, match="0..100"):
        parse_class_costs(["terrain=101"])


def test_costmap_of_the_map_follows_the_robot():
    m = small_map()
    T = yaw_pose(1.2, -2.0)  # on the lattice: voxel centres fall on voxel centres
    m.update(*frame({(12, 8, 3): WALL, **{(x, y, 2): ROAD for x in range(16) for y in range(16)}}), T)
    cm = map_costmap(m, T, 0.0, 2.0, cost_table())
    assert (cm.data == 100).sum() == 1 and (cm.data == 0).sum() >= 16 * 16 - 1
    wall = EGO.voxel_centers(np.array([[12, 8, 3]]))[0] + [1.2, -2.0, 0.0]
    x, y = np.floor((wall[:2] - np.array(cm.origin[:2])) / cm.resolution).astype(int)
    assert cm.data[y, x] == 100


def test_fused_scores_at_least_per_frame_on_a_tiny_world(synthetic_dataroot):
    """A predictor that flickers (the ground truth with 30 % of its occupied voxels dropped to free
    with a low score, differently each frame): fused through the map in scene order with the
    dataset's ego poses, the scenes score higher than per frame (the frames' seen voxels: their
    camera masks)."""
    from occ_core.data.nuscenes_dataset import NuScenesOccDataset
    from occ_core.eval.occupancy import occ3d_miou
    from occ_core.grid import OCC3D

    ds = NuScenesOccDataset(synthetic_dataroot, ["scene-0001", "scene-0002"], OCC3D)
    rng = np.random.default_rng(0)
    m = RollingSemanticMap(MapConfig(), OCC3D)
    per_frame, fused = occ3d_miou("camera"), occ3d_miou("camera")
    scene = None
    for sc, token in ds.samples:
        if sc != scene:
            m.reset()
            scene, T_odom_from_global = sc, np.linalg.inv(ds.ego_pose(token))
        t = ds.load_targets(sc, token)
        noisy = t.semantics.copy()
        drop = (noisy != FREE) & (rng.random(noisy.shape) < 0.3)
        noisy[drop] = FREE
        scores = np.where(drop, 0.55, 0.95).astype(np.float32)
        out = m.update(noisy, scores, t.mask_camera, T_odom_from_global @ ds.ego_pose(token))
        out[out == UNKNOWN] = noisy[out == UNKNOWN]
        per_frame.update(t.semantics, noisy, t.mask_camera)
        fused.update(t.semantics, out, t.mask_camera)
    assert fused.miou() >= per_frame.miou() and fused.geometric_iou() > per_frame.geometric_iou() + 0.02


def test_frame_visibility_of_the_ground_truth_is_its_camera_mask(synthetic_dataroot):
    """Cast through the ground truth, a keyframe's visibility is (nearly) its mask_camera: rendered
    depth from voxels instead of the world's surfaces loses some grazing voxels, adds almost none."""
    from occ_core.data.nuscenes_dataset import NuScenesOccDataset
    from occ_core.grid import OCC3D
    from occ_core.mapping.visibility import frame_visibility

    ds = NuScenesOccDataset(synthetic_dataroot, ["scene-0002"], OCC3D, image_hw=(96, 176))
    scene, token = ds.samples[1]
    t = ds.load_targets(scene, token)
    seen = frame_visibility(t.semantics, ds.load_frame(token), OCC3D, ray_step=0.012)
    mask = t.mask_camera
    assert (seen & mask).sum() / mask.sum() > 0.75  # recall
    assert (seen & mask).sum() / seen.sum() > 0.97  # precision
    assert not seen[:, :, 0].any() or (seen & mask)[:, :, 0].sum() >= 0.9 * seen[:, :, 0].sum()


def test_occ_predict_fuse_arguments_are_checked_before_the_model_loads(synthetic_dataroot, tmp_path, capsys):
    from occ_core.training import predict

    base = ["--config", "config/models/lidar.yaml", "--dataroot", str(synthetic_dataroot), "--split", "val",
            "--out", str(tmp_path / "out")]
    bad = tmp_path / "map.yaml"
    bad.write_text("clamp_max: 2.0\nvoxel: 0.2\n")
    assert predict.main(base + ["--map-config", str(bad)]) == 2
    assert "only used with --fuse" in capsys.readouterr().err
    assert predict.main(base + ["--fuse", "--map-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "unknown keys ['voxel']" in err
    assert not (tmp_path / "out").exists()  # nothing written before the arguments are good
