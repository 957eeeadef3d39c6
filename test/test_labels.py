"""occ_core.labels: each stage on tiny hand-made inputs with known answers, and occ-label on
the tiny synthetic world against its analytic ground truth."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from occ_core.classes import IGNORE_LABEL, OCC3D_FREE, OCC3D_INDEX
from occ_core.grid import GridSpec
from occ_core.labels import LabelConfig
from occ_core.labels.aggregate import fill_ground, majority_vote, nn_labels, split_scene
from occ_core.labels.boxes import Boxes, points_in_boxes
from occ_core.labels.pipeline import PreparedScene, label_keyframe
from occ_core.labels.scene import SceneData, Sweep
from occ_core.labels.visibility import camera_mask, pass_counts

CAR, MANMADE, ROAD = OCC3D_INDEX["car"], OCC3D_INDEX["manmade"], OCC3D_INDEX["driveable_surface"]
GRID = GridSpec.from_range("test", (-10.0, -10.0, -1.0, 10.0, 10.0, 3.0), 0.4)


# ------------------------------------------------------------------ a box moving along x
def _plane(axis_vals: dict, step: float = 0.1) -> np.ndarray:
    """Points on an axis-aligned rectangle: {axis: value or (lo, hi)}."""
    grids = [np.atleast_1d(v) if np.isscalar(v) else np.arange(v[0] + step / 2, v[1], step) for v in
             (axis_vals["x"], axis_vals["y"], axis_vals["z"])]
    return np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, 3)


def _moving_box_scene(n: int = 5, speed: float = 3.0) -> SceneData:
    """A static ego (LiDAR at (0, 0, 1.8)); a 4 x 2 x 1.6 m car at y = 4 drives along +x,
    ``speed`` metres per scan, centred at x = 0 at the middle scan; a wall at y = 8 behind it
    (wider than the grid).
    The LiDAR sees the car's near face (y = 3), the road (z = 0) and the wall where the car
    does not hide them."""
    origin = np.array([0.0, 0.0, 1.8])
    sweeps = []
    for i in range(n):
        cx = (i - n // 2) * speed
        car = _plane({"x": (cx - 2, cx + 2), "y": 3.0, "z": (0.0, 1.6)})
        wall = _plane({"x": (-25.0, 25.0), "y": 8.0, "z": (0.0, 3.0)})  # wide: every ray past the car meets it
        s = (3.0 - origin[1]) / (wall[:, 1] - origin[1])  # where the ray to a wall point crosses y = 3
        at = origin + s[:, None] * (wall - origin)
        hidden = (np.abs(at[:, 0] - cx) < 2) & (at[:, 2] < 1.6)
        wall = wall[~hidden]
        ground = _plane({"x": (-25.0, 25.0), "y": (-9.9, 8.0), "z": 0.0})
        g_at = origin + (3.0 - origin[1]) / np.maximum(ground[:, 1] - origin[1], 1e-9)[:, None] * (ground - origin)
        hidden = ((ground[:, 1] > 3.0) & (np.abs(g_at[:, 0] - cx) < 2) & (g_at[:, 2] < 1.6)) | (
            (np.abs(ground[:, 0] - cx) < 2) & (ground[:, 1] > 3.0) & (ground[:, 1] < 5.0))
        ground = ground[~hidden]
        pts = np.concatenate([car, wall, ground]).astype(np.float32)
        label = np.concatenate([np.full(len(car), CAR), np.full(len(wall), MANMADE),
                                np.full(len(ground), ROAD)]).astype(np.uint8)
        boxes = Boxes(np.array([[cx, 4.0, 0.8]]), np.array([[2.0, 4.0, 1.6]]), np.eye(3)[None], np.array([CAR], np.uint8),
                      np.array([7]))
        sweeps.append(Sweep(f"sd{i}", i * 500_000, True, f"s{i}", pts, label, origin, np.eye(4), boxes))
    return SceneData("moving", np.zeros(3), sweeps, list(range(n)), True)


def _car_voxels_outside(sem: np.ndarray, cx: float) -> tuple[int, int]:
    """(car voxels whose centre is outside the car's box at x = cx, grown by one voxel; inside it)."""
    ctr = GRID.all_voxel_centers()
    inside = (np.abs(ctr[..., 0] - cx) <= 2.4) & (np.abs(ctr[..., 1] - 4.0) <= 1.4) & (ctr[..., 2] <= 2.0)
    car = sem == CAR
    return int((car & ~inside).sum()), int((car & inside).sum())


_CFG = LabelConfig(grid=GRID, window=2, ground_fill=0.0, carve_min_passes=8, ray_sweep_stride=1)


def _label(scene: SceneData, cfg: LabelConfig, k: int = 2):
    return label_keyframe(PreparedScene(scene, split_scene(scene, cfg), 0.0), k, cfg)


def test_moving_box_leaves_a_trail_when_aggregated_as_static():
    """The reference failure: neither boxes nor carving, the car smears along x."""
    lab = _label(_moving_box_scene(), replace(_CFG, use_boxes=False, carve="off"))
    outside, inside = _car_voxels_outside(lab.semantics, 0.0)
    assert outside > 50 and inside > 0


def test_moving_box_leaves_no_trail_with_boxes():
    lab = _label(_moving_box_scene(), replace(_CFG, use_boxes=True, carve="off"))
    outside, inside = _car_voxels_outside(lab.semantics, 0.0)
    assert outside == 0
    assert inside >= 40  # the near face: 10 x 4 voxels (4 m x 1.6 m at 0.4 m)
    assert (lab.semantics == MANMADE).sum() > 0


def test_moving_box_leaves_no_trail_with_carving_only():
    lab = _label(_moving_box_scene(), replace(_CFG, use_boxes=False, carve="on"))
    outside, inside = _car_voxels_outside(lab.semantics, 0.0)
    assert outside == 0
    assert inside >= 40  # the current scan's car is kept
    assert lab.carved > 0
    # the wall behind stays: every wall voxel the current scan hits is occupied
    wall_layer = lab.semantics[:, np.floor((8.0 + 10) / 0.4).astype(int), 3:8]
    assert (wall_layer == MANMADE).mean() > 0.9


def _yaw(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _moved(scene: SceneData, R: np.ndarray, ego_step: np.ndarray) -> SceneData:
    """The scene turned by ``R`` as a whole (points, boxes and their velocities, poses), with
    scan i's ego pose (and LiDAR) moved by ``i * ego_step`` (scene frame, after turning): the
    world stays, only the ego drives."""
    G = np.eye(4)
    G[:3, :3] = R
    sweeps = []
    for i, sw in enumerate(scene.sweeps):
        T = G @ sw.T_scene_from_ego
        T[:3, 3] += i * ego_step
        sweeps.append(Sweep(sw.token, sw.timestamp_us, sw.is_key_frame, sw.sample_token,
                            (sw.points @ R.T).astype(np.float32), sw.label, R @ sw.origin + i * ego_step, T,
                            sw.boxes.transformed(G)))
    return SceneData(scene.name, scene.offset, sweeps, scene.keyframes, scene.has_lidarseg)


def test_flow_is_the_box_velocity_on_its_voxels_in_the_ego_frame_and_zero_elsewhere():
    """The car drives 3 m per 0.5 s scan (6 m/s) along its own x. The scene is turned by 30 deg
    (the ego too, so the car drives along the ego's x) and the ego drives 1 m per scan: the flow
    is the car's own velocity in base_link, (6, 0), without the ego's motion subtracted."""
    base = _moving_box_scene()
    for sw in base.sweeps:
        sw.boxes.velocity = np.array([[6.0, 0.0, 0.0]])
    scene = _moved(base, _yaw(30.0), _yaw(30.0) @ np.array([1.0, 0.0, 0.0]))
    cfg = replace(_CFG, use_boxes=True, carve="off", flow=True)
    lab = _label(scene, cfg)
    car = lab.semantics == CAR
    assert car.sum() >= 40 and lab.flow.shape == (*GRID.dims, 2) and lab.flow.dtype == np.float32
    np.testing.assert_allclose(lab.flow[car], np.broadcast_to([6.0, 0.0], (car.sum(), 2)), atol=1e-4)
    assert not lab.flow[~car].any()
    # unknown velocities (a single annotation) give zero flow, never NaN
    for sw in scene.sweeps:
        sw.boxes.velocity = np.full((1, 3), np.nan)
    assert not _label(scene, cfg).flow.any()
    assert _label(scene, replace(cfg, flow=False)).flow is None


def test_labels_in_the_lidar_frame_are_the_ego_labels_turned():
    """LIDAR_TOP yawed 90 deg against base_link (as in nuScenes) at the ego's origin: the LiDAR-frame
    grid is the ego grid turned, voxel for voxel (x_lidar = y_ego, y_lidar = -x_ego)."""
    scene = _moving_box_scene()
    T_ego_from_lidar = np.eye(4)
    T_ego_from_lidar[:3, :3] = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for sw in scene.sweeps:
        sw.T_ego_from_lidar = T_ego_from_lidar
    cfg = replace(_CFG, use_boxes=True, carve="off")
    ego = _label(scene, cfg).semantics
    lidar = _label(scene, replace(cfg, frame="lidar")).semantics
    assert (ego == CAR).sum() >= 40
    # lidar voxel (i, j) has centre (c_i, c_j) -> ego (-c_j, c_i) = ego voxel (X - 1 - j, i)
    np.testing.assert_array_equal(lidar, np.transpose(ego[::-1], (1, 0, 2)))


def test_boxes_catch_points_in_enlarged_box_only():
    boxes = Boxes(np.array([[0.0, 0.0, 1.0]]), np.array([[2.0, 4.0, 2.0]]), np.eye(3)[None], np.array([CAR], np.uint8),
                  np.array([0]))
    pts = np.array([[2.15, 0, 1], [2.25, 0, 1], [0, 1.08, 1], [0, 0, 0.05], [0, 0, 0.15], [0, 0, 2.15]])
    # x half-length 2 * 1.1 = 2.2; y half-width 1.1; bottom 0 + clearance 0.1; top 0 + 2 * 1.1
    assert points_in_boxes(pts, boxes, scale=1.1, clearance=0.1).tolist() == [0, -1, 0, -1, 0, 0]


# ------------------------------------------------------------------ rays
def _sampled_voxels(start: np.ndarray, end: np.ndarray, grid: GridSpec) -> set[int]:
    """Brute force: voxels a segment visits before the voxel of its end, by dense sampling."""
    t = np.linspace(0, 1, 20001)
    p = start + t[:, None] * (end - start)
    idx, inside = grid.points_to_voxels(p)
    end_idx, end_inside = grid.points_to_voxels(end[None])
    end_flat = grid.flat_index(end_idx)[0] if end_inside[0] else -1
    flat = grid.flat_index(np.where(inside[:, None], idx, 0))
    keep = inside & (np.cumsum(flat == end_flat) == 0)
    return set(flat[keep].tolist())


def test_traverse_matches_dense_sampling():
    rng = np.random.default_rng(3)
    start = rng.uniform(-12, 12, (40, 3)) * [1, 1, 0.3]
    end = rng.uniform(-9, 9, (40, 3)) * [1, 1, 0.2]
    for r in range(len(start)):
        crossed, _ = pass_counts(start[r:r + 1], end[r:r + 1], GRID)
        assert set(np.nonzero(crossed)[0].tolist()) == _sampled_voxels(start[r], end[r], GRID), r


def test_wall_seen_from_two_origins_gets_the_right_free_voxels():
    """A wall at x = 6 seen from (0, -3) and (0, 3): free = the voxels between the origins and the
    wall; the wall voxels hold the returns; nothing behind it is free."""
    wall = _plane({"x": 6.0 + 1e-3, "y": (-6.0, 6.0), "z": (0.0, 2.0)}, step=0.2)
    starts, ends = [], []
    for oy in (-3.0, 3.0):
        starts.append(np.broadcast_to([0.0, oy, 1.0], wall.shape))
        ends.append(wall)
    S, E = np.concatenate(starts), np.concatenate(ends)
    crossed, _ = pass_counts(S, E, GRID)
    expected = set()
    for s, e in zip(S, E):
        expected |= _sampled_voxels(s, e, GRID)
    free = set(np.nonzero(crossed)[0].tolist())
    assert free == expected
    ctr = GRID.flat_centers(np.arange(GRID.num_voxels))
    assert not (ctr[list(free), 0] > 6.0).any()  # nothing behind the wall (or in it) is free
    # in front of the wall, the voxel on each origin's own line is free, seen by that origin only
    for oy in (-3.0, 3.0):
        v = GRID.flat_index(GRID.points_to_voxels(np.array([[3.0, oy + 0.05, 1.05]]))[0])[0]
        assert crossed[v] > 0


def test_camera_mask_stops_at_the_first_occupied_voxel():
    occ = np.zeros(GRID.dims, bool)
    ix = int((4.0 + 10) / 0.4)
    occ[ix, :, :] = True  # a wall filling the plane x in [4, 4.4)
    d = np.array([[1.0, 0.0, 0.0], [1.0, 0.3, 0.05]])
    vis = camera_mask(occ, np.zeros((2, 3)) + [0, 0, 1.0], d, GRID)
    assert vis[ix].any() and not vis[ix + 1:].any()
    assert vis[int(10 / 0.4) + 2, int(10 / 0.4), int(2.0 / 0.4)]  # (1, 0, 1) m: in front of the wall


# ------------------------------------------------------------------ semantics
def test_nn_labels_respect_the_cap():
    ref = np.array([[0.0, 0, 0], [10.0, 0, 0]])
    lab = np.array([ROAD, MANMADE], np.uint8)
    q = np.array([[0.4, 0, 0], [0.6, 0, 0], [9.55, 0, 0], [5.0, 0, 0]])
    assert nn_labels(q, ref, lab, cap=0.5).tolist() == [ROAD, IGNORE_LABEL, MANMADE, IGNORE_LABEL]


def test_majority_vote_and_unknown_points():
    grid = GridSpec.from_range("g", (0, 0, 0, 2, 2, 2), 1.0)
    pts = np.array([[0.5, 0.5, 0.5]] * 5 + [[1.5, 0.5, 0.5]] * 3 + [[0.5, 1.5, 0.5]] * 2)
    lab = np.array([CAR, CAR, ROAD, ROAD, CAR] + [IGNORE_LABEL, IGNORE_LABEL, ROAD] + [CAR, ROAD], np.uint8)
    sem = majority_vote(pts, lab, grid, unknown=None)
    assert sem[0, 0, 0] == CAR  # 3 car vs 2 road
    assert sem[1, 0, 0] == ROAD  # any known label beats unknown ones
    assert sem[0, 1, 0] == min(CAR, ROAD)  # a tie: the smaller class
    assert (sem == OCC3D_FREE).sum() == 5
    only_unknown = majority_vote(pts[5:7], lab[5:7], grid, unknown=0)
    assert only_unknown[1, 0, 0] == 0
    assert (majority_vote(pts[5:7], lab[5:7], grid, unknown=None) == OCC3D_FREE).all()


def test_fill_ground_closes_holes_only_where_observed_and_empty():
    sem = np.full(GRID.dims, OCC3D_FREE, np.uint8)
    sem[:, :, 2] = ROAD
    sem[10:14, 10:14, 2] = OCC3D_FREE  # a hole, observed
    sem[30:34, 30:34, 2] = OCC3D_FREE  # a hole, not observed
    sem[40:42, 40:42, 2] = OCC3D_FREE  # a hole under a wall
    sem[40:42, 40:42, 3] = MANMADE
    observed = np.ones(GRID.dims[:2], bool)
    observed[30:34, 30:34] = False
    out = fill_ground(sem, observed, 2.0, GRID)
    assert (out[10:14, 10:14, 2] == ROAD).all()
    assert (out[30:34, 30:34, 2] == OCC3D_FREE).all()
    assert (out[40:42, 40:42, 2] == OCC3D_FREE).all()
    assert (out[:, :, 3:] == sem[:, :, 3:]).all()


def test_area_weighted_ground_vote_follows_coverage_not_hit_count():
    """A 1 m voxel: road covers x in [0, 0.7), sidewalk [0.7, 1); a curb face at x = 0.7 and the
    sidewalk's near strip collect many returns. Raw votes pick sidewalk, area votes pick road."""
    from occ_core.labels.aggregate import area_weighted_ground

    SIDEWALK = OCC3D_INDEX["sidewalk"]
    grid = GridSpec.from_range("g", (0, 0, -0.5, 1, 1, 0.5), 1.0)
    road = _plane({"x": (0.0, 0.7), "y": (0.0, 1.0), "z": 0.0}, step=0.1)  # 70 points, one per 0.1 m square
    curb = np.repeat(_plane({"x": 0.7, "y": (0.0, 1.0), "z": (0.0, 0.15)}, step=0.05), 3, axis=0)  # dense hits
    side = _plane({"x": (0.7, 1.0), "y": (0.0, 1.0), "z": 0.15}, step=0.1)
    pts = np.concatenate([road, curb, side])
    lab = np.array([ROAD] * len(road) + [SIDEWALK] * (len(curb) + len(side)), np.uint8)
    assert majority_vote(pts, lab, grid, None)[0, 0, 0] == SIDEWALK
    p2, l2 = area_weighted_ground(pts, lab, 0.1)
    assert majority_vote(p2, l2, grid, None)[0, 0, 0] == ROAD
    assert len(p2) == 70 + 10 + 30  # road squares, the curb's line of squares, sidewalk squares
    car = np.array([[0.5, 0.5, 0.3]] * 4)  # other classes are left out
    p3, l3 = area_weighted_ground(np.concatenate([pts, car]), np.r_[lab, [CAR] * 4].astype(np.uint8), 0.1)
    assert len(p3) == len(p2) and not (l3 == CAR).any()


def test_object_owns_the_voxels_it_shares_with_the_ground():
    """The road layer under the moving car: road returns outnumber the few car returns low on
    the car, yet the voxels that hold car points are the car's."""
    scene = _moving_box_scene()
    lab = _label(scene, _CFG)
    ctr = GRID.all_voxel_centers()
    # the car's near face (y = 3) touches the road layer z in [-0.2, 0.2) (index 2 of GRID: z from -1)
    face = (np.abs(ctr[..., 0]) < 1.8) & (np.abs(ctr[..., 1] - 3.0) < 0.2) & (np.abs(ctr[..., 2]) < 0.2)
    assert face.any() and (lab.semantics[face] == CAR).all()


def test_poisson_closes_a_hole_and_keeps_things_in_their_boxes():
    from occ_core.labels.densify import poisson_vertices

    # a wall (x = 5) with a 1.2 m hole, seen from the origin; Poisson closes the hole
    wall = _plane({"x": 5.0, "y": (-4.0, 4.0), "z": (0.0, 2.8)}, step=0.1)
    hole = (np.abs(wall[:, 1]) < 0.6) & (np.abs(wall[:, 2] - 1.4) < 0.6)
    pts = wall[~hole]
    lab = np.full(len(pts), MANMADE, np.uint8)
    verts, vlab = poisson_vertices(pts, lab, np.array([0.0, 0.0, 1.5]), depth=7, min_density=0.1, max_gap=0.8)
    assert len(verts) and (vlab == MANMADE).all()
    in_hole = (np.abs(verts[:, 0] - 5.0) < 0.2) & (np.abs(verts[:, 1]) < 0.4) & (np.abs(verts[:, 2] - 1.4) < 0.4)
    assert in_hole.any()
    # max_gap drops vertices far from every point: none lie more than 0.8 m from the wall's points
    from scipy.spatial import cKDTree
    assert cKDTree(pts).query(verts)[0].max() <= 0.8 + 1e-9
    # the label pipeline with densify: car surface vertices stay inside the car's box (no trail)
    scene = _moving_box_scene()
    cfg = replace(_CFG, densify="poisson", poisson_depth=8)
    sem = _label(scene, cfg).semantics
    outside, inside = _car_voxels_outside(sem, 0.0)
    assert outside == 0 and inside > 0
