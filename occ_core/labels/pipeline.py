"""Occupancy labels of every keyframe of a scene: the stages of :mod:`occ_core.labels` in order.

Per scene (:func:`prepare_scene`): load every LiDAR scan (:func:`~occ_core.labels.scene.load_scene`),
split static/dynamic and accumulate objects (:func:`~occ_core.labels.aggregate.split_scene`).
Per keyframe (:func:`label_keyframe`), in its base_link:

1. static points of the scans within ``window`` keyframes on each side;
2. object clouds placed at the keyframe's boxes;
3. majority vote per voxel (:func:`~occ_core.labels.aggregate.majority_vote`; ground points
   weighted by the area they cover, and a voxel an object shares with the ground is the
   object's, as the wheels' voxels are); with
   ``densify='poisson'``, the Poisson surface's vertices (:mod:`occ_core.labels.densify`) fill
   voxels the points left free;
4. LiDAR rays (one per scan and end cell, weighted by the returns they stand for) from every
   ``ray_sweep_stride``-th scan: ``mask_lidar`` and free-space carving of static voxels;
5. ground holes closed (:func:`~occ_core.labels.aggregate.fill_ground`);
6. camera rays to the first occupied voxel: ``mask_camera``;
7. with ``cfg.flow``: per-voxel flow from the boxes' velocities
   (:func:`~occ_core.labels.aggregate.voxel_flow`).

With ``cfg.frame == "lidar"`` every stage runs in the keyframe's LIDAR_TOP frame instead of its
base_link.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from occ_core.classes import IGNORE_LABEL, OCC3D_FREE, OCC3D_INDEX
from occ_core.geometry import invert_transform
from occ_core.errors import OccDataError
from occ_core.labels.aggregate import (GROUND_CLASSES, THING, SplitScene, area_weighted_ground, fill_ground,
                                      majority_vote, place_objects, split_scene, voxel_flow)
from occ_core.labels.boxes import points_in_boxes
from occ_core.labels.config import LabelConfig
from occ_core.labels.densify import poisson_vertices
from occ_core.labels.scene import SceneData, load_scene
from occ_core.labels.visibility import (camera_mask, camera_rays, carve, end_counts, lidar_mask, lowest_occupied,
                                        pass_counts)


@dataclass
class KeyframeLabels:
    """Labels of one keyframe on ``cfg.grid``, [x, y, z] in its base_link (LIDAR_TOP with
    ``cfg.frame == "lidar"``).

    Attributes:
        sample_token: the keyframe's sample.
        semantics: (X, Y, Z) uint8 Occ3D classes, 17 = free.
        mask_lidar: (X, Y, Z) bool, voxels a LiDAR ray crossed or ended in.
        mask_camera: (X, Y, Z) bool, voxels a camera ray reaches.
        flow: (X, Y, Z, 2) float32 ``(vx, vy)`` m/s of the object each voxel belongs to, in the
            grid's frame (0 elsewhere), or None unless ``cfg.flow``.
        points: aggregated points voted (static + objects, inside the grid).
        rays: LiDAR rays cast.
        carved: voxels freed by carving.
        seconds: time spent on this keyframe (not counting the scene's loading and split).
    """

    sample_token: str
    semantics: np.ndarray
    mask_lidar: np.ndarray
    mask_camera: np.ndarray
    points: int
    rays: int
    carved: int
    seconds: float
    flow: np.ndarray | None = None


@dataclass
class PreparedScene:
    """A loaded and split scene, ready for :func:`label_keyframe`."""

    scene: SceneData
    split: SplitScene
    seconds: float


def prepare_scene(nusc, dataroot: str | Path, scene_name: str, cfg: LabelConfig) -> PreparedScene:
    """Load and split one scene (the per-scene stages)."""
    t0 = time.perf_counter()
    scene = load_scene(nusc, dataroot, scene_name, cfg)
    split = split_scene(scene, cfg)
    return PreparedScene(scene, split, time.perf_counter() - t0)


def _unknown_label(cfg: LabelConfig, has_lidarseg: bool) -> int | None:
    mode = cfg.unlabelled
    if mode == "auto":
        mode = "drop" if has_lidarseg else "others"
    return None if mode == "drop" else OCC3D_INDEX["others"]


def _to_out(points: np.ndarray, T_out_from_scene: np.ndarray, z_shift: float) -> np.ndarray:
    """(N, 3) scene-frame points -> the output frame (base_link or LIDAR_TOP), z shifted."""
    out = np.asarray(points, np.float64) @ T_out_from_scene[:3, :3].T + T_out_from_scene[:3, 3]
    if z_shift:
        out[:, 2] += z_shift
    return out


def _z_shift_transform(z_shift: float) -> np.ndarray:
    """(4, 4) translation by ``z_shift`` metres along z (the vertical convention, see config)."""
    T = np.eye(4)
    T[2, 3] = z_shift
    return T


def window_scans(scene: SceneData, k: int, window: int) -> list[int]:
    """Indices into ``scene.sweeps`` of the scans from keyframe ``k - window`` to ``k + window``
    (clipped to the scene), sweeps between them included when the scene holds them."""
    kf = scene.keyframes
    a = kf[max(0, k - window)]
    b = kf[min(len(kf) - 1, k + window)]
    return list(range(a, b + 1))


def label_keyframe(prep: PreparedScene, k: int, cfg: LabelConfig) -> KeyframeLabels:
    """Labels of keyframe ``k`` (index into ``prep.scene.keyframes``); see the module docstring."""
    t0 = time.perf_counter()
    scene, split, grid = prep.scene, prep.split, cfg.grid
    cur = scene.keyframes[k]
    key = scene.sweeps[cur]
    T_out_from_ego = np.eye(4)
    if cfg.frame == "lidar":
        if key.T_ego_from_lidar is None:
            raise OccDataError(f"scene {scene.name}: keyframe {key.sample_token} has no LiDAR extrinsics, "
                               "so labels cannot be made in its LiDAR frame")
        T_out_from_ego = invert_transform(key.T_ego_from_lidar)
    T = T_out_from_ego @ invert_transform(key.T_scene_from_ego)  # scene -> the output frame of this keyframe
    scans = window_scans(scene, k, cfg.window)
    unknown = _unknown_label(cfg, scene.has_lidarseg)
    do_carve = cfg.carve == "on" or (cfg.carve == "auto" and not (cfg.use_boxes and split.objects))
    lo = np.asarray(grid.range_min) - 0.5
    hi = np.asarray(grid.range_max) + 0.5

    # 1-2. static points of the window and objects at the keyframe's boxes
    pts, labs = [], []
    for i in scans:
        sw = scene.sweeps[i]
        st = split.static[i]
        lab = split.labels[i][st]
        if unknown is None:
            keep = lab != IGNORE_LABEL
            p, lab = sw.points[st][keep], lab[keep]
        else:
            p = sw.points[st]
        p = _to_out(p, T, cfg.z_shift)
        near = ((p >= lo) & (p < hi)).all(1)
        pts.append(p[near])
        labs.append(lab[near])
    static_pts = np.concatenate(pts) if pts else np.zeros((0, 3))
    static_lab = np.concatenate(labs) if labs else np.zeros(0, np.uint8)
    obj_pts, obj_lab, obj_box = np.zeros((0, 3)), np.zeros(0, np.uint8), np.zeros(0, np.int64)
    if cfg.use_boxes and len(key.boxes):
        obj_pts, obj_lab, obj_box = place_objects(split.objects, key.boxes, cfg)
        obj_pts = _to_out(obj_pts, T, cfg.z_shift)
    # 3. majority vote
    all_pts = np.concatenate([static_pts, obj_pts])
    all_lab = np.concatenate([static_lab, obj_lab])
    sem = majority_vote(all_pts, all_lab, grid, unknown).reshape(-1)
    if cfg.ground_vote_cell > 0:  # which ground class: by the area each covers
        g_pts, g_lab = area_weighted_ground(all_pts, all_lab, cfg.ground_vote_cell)
        by_area = majority_vote(g_pts, g_lab, grid, None).reshape(-1)
        take = np.isin(sem, GROUND_CLASSES) & np.isin(by_area, GROUND_CLASSES)
        sem[take] = by_area[take]
    if len(obj_pts):  # an object standing on the ground owns the voxels it shares with it
        on_ground = majority_vote(obj_pts, obj_lab, grid, None).reshape(-1)
        take = (on_ground != OCC3D_FREE) & np.isin(sem, GROUND_CLASSES)
        sem[take] = on_ground[take]
    if cfg.densify == "poisson":
        origin = _to_out(key.origin[None], T, cfg.z_shift)[0]
        verts, vlab = poisson_vertices(all_pts, all_lab, origin, cfg.poisson_depth, cfg.poisson_min_density,
                                       cfg.poisson_max_gap, cell=cfg.poisson_cell)
        keep = ~np.isin(vlab, GROUND_CLASSES)  # the ground is closed by fill_ground (step 5)
        thing = THING[vlab] & keep  # object surface stays inside a current box
        if thing.any():
            ego_boxes = key.boxes.transformed(T) if len(key.boxes) else key.boxes
            if cfg.z_shift:
                ego_boxes = ego_boxes.transformed(_z_shift_transform(cfg.z_shift))
            keep[np.nonzero(thing)[0][points_in_boxes(verts[thing], ego_boxes) < 0]] = False
        dense = majority_vote(verts[keep], vlab[keep], grid, unknown).reshape(-1)
        fill = (sem == OCC3D_FREE) & (dense != OCC3D_FREE)
        sem[fill] = dense[fill]

    # 4. LiDAR rays: one per scan and end cell, weighted by the returns it stands for
    ray_scans = [i for j, i in enumerate(scans) if scene.sweeps[i].is_key_frame or j % cfg.ray_sweep_stride == 0]
    starts, ends, weights, static_ends = [], [], [], []
    for i in ray_scans:
        sw = scene.sweeps[i]
        p = _to_out(sw.points, T, cfg.z_shift)
        cell = np.floor(p / cfg.ray_cell).astype(np.int64)
        ckey = (cell[:, 0] * 1_000_003 + cell[:, 1]) * 1_000_003 + cell[:, 2]  # distinct within +-4e5 cells
        _, first, count = np.unique(ckey, return_index=True, return_counts=True)
        o = _to_out(sw.origin[None], T, cfg.z_shift)[0]
        starts.append(np.broadcast_to(o, (len(first), 3)))
        ends.append(p[first])
        weights.append(count.astype(np.float64))
        static_ends.append(p[split.static[i]])
    n_rays = 0
    carved = 0
    if starts:
        S, E, W = np.concatenate(starts), np.concatenate(ends), np.concatenate(weights)
        n_rays = len(S)
        crossed, crossed_early = pass_counts(S, E, grid, W, margin=cfg.carve_margin)
        if do_carve:
            j = ray_scans.index(cur)  # the current scan's rays: free now
            a = sum(len(x) for x in starts[:j])
            b = a + len(starts[j])
            _, now = pass_counts(S[a:b], E[a:b], grid, W[a:b], margin=cfg.carve_margin)
            hits = end_counts(np.concatenate(static_ends), grid)
            own = end_counts(_to_out(key.points[split.static[cur]], T, cfg.z_shift), grid) > 0
            objects = end_counts(obj_pts, grid) > 0 if len(obj_pts) else np.zeros(grid.num_voxels, bool)
            occupied = sem != OCC3D_FREE
            protected = own | objects | lowest_occupied(occupied.reshape(grid.dims)).reshape(-1)
            cut = carve(occupied, crossed_early, hits, protected, cfg.carve_ratio, cfg.carve_min_passes, now,
                        cfg.carve_now_min)
            sem[cut] = OCC3D_FREE
            carved = int(cut.sum())
    else:
        crossed = np.zeros(grid.num_voxels)
    sem = sem.reshape(grid.dims)
    if cfg.ground_fill > 0:
        sem = fill_ground(sem, (crossed > 0).reshape(grid.dims).any(2), cfg.ground_fill, grid)
    m_lidar = lidar_mask(crossed, (sem != OCC3D_FREE).reshape(-1))

    # 6. cameras
    origins, dirs = [], []
    for cam in key.cameras:
        o, d = camera_rays(cam.K, T_out_from_ego @ cam.T_base_from_cam, cam.width, cam.height, cfg.camera_ray_step)
        if cfg.z_shift:
            o = o.copy()
            o[:, 2] += cfg.z_shift
        origins.append(o)
        dirs.append(d)
    if origins:
        m_camera = camera_mask(sem != OCC3D_FREE, np.concatenate(origins), np.concatenate(dirs), grid)
    else:
        m_camera = np.zeros(grid.dims, bool)

    # 7. flow: box velocities (scene frame) rotated into the output frame; ego motion is not
    # subtracted (OpenOcc v2: static voxels have zero flow)
    flow = None
    if cfg.flow:
        vel = key.boxes.velocity
        if vel is None:
            vel = np.full((len(key.boxes), 3), np.nan)
        flow = voxel_flow(obj_pts, obj_box, vel @ T[:3, :3].T, sem, grid)
    return KeyframeLabels(key.sample_token, sem, m_lidar.reshape(grid.dims), m_camera, len(all_pts), n_rays, carved,
                          time.perf_counter() - t0, flow)


def label_scene(nusc, dataroot: str | Path, scene_name: str, cfg: LabelConfig,
                skip: set[str] | frozenset[str] = frozenset()) -> Iterator[KeyframeLabels]:
    """Labels of every keyframe of a scene, in order, except the sample tokens in ``skip``."""
    prep = prepare_scene(nusc, dataroot, scene_name, cfg)
    for k, i in enumerate(prep.scene.keyframes):
        if prep.scene.sweeps[i].sample_token in skip:
            continue
        yield label_keyframe(prep, k, cfg)
