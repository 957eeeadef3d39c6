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
