"""Checks of generated labels that need no ground-truth grid: trail voxels against the
keyframe's boxes, per-point agreement with the keyframe's labelled LiDAR points, and the height
(z-index) of a class. Used by ``bench/labels.py``, ``bench/labels_real.py`` and the tests.

All grids are (X, Y, Z) uint8 Occ3D classes (17 = free) on ``grid``; points and boxes are in
the grid's frame (a keyframe's base_link, shifted by the label's ``z_shift``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occ_core.classes import OCC3D_INDEX, OCC3D_NUM_CLASSES, OPENOCC_DYNAMIC_CLASSES
from occ_core.geometry import invert_transform
from occ_core.grid import GridSpec
from occ_core.labels.boxes import Boxes, points_in_boxes

#: (256,) bool over Occ3D indices: the 8 OpenOcc dynamic classes (vehicles, cyclists, pedestrians).
DYNAMIC = np.zeros(256, bool)
DYNAMIC[[OCC3D_INDEX[n] for n in OPENOCC_DYNAMIC_CLASSES]] = True


def trail_mask(sem: np.ndarray, boxes: Boxes, grid: GridSpec) -> np.ndarray:
    """(X, Y, Z) bool: the dynamic-class voxels of ``sem`` whose centre lies outside every box
    grown by half a voxel diagonal on each side (trail voxels, see :func:`trail_counts`)."""
    out = np.zeros(sem.shape, bool)
    dyn = np.argwhere(DYNAMIC[sem])
    if len(dyn) == 0:
        return out
    grow = 0.5 * float(np.linalg.norm(grid.voxel_size))
    grown = Boxes(boxes.center, boxes.wlh + 2 * grow, boxes.rotation, boxes.label, boxes.instance)
    outside = points_in_boxes(grid.voxel_centers(dyn), grown) < 0
    out[tuple(dyn[outside].T)] = True
    return out


def trail_counts(sem: np.ndarray, boxes: Boxes, grid: GridSpec) -> tuple[int, int]:
    """(dynamic-class voxels whose centre lies outside every box grown by half a voxel diagonal
    on each side, all dynamic-class voxels). Trails of moving objects smeared over time are
    the first number; a label without trails has (almost) none."""
    return int(trail_mask(sem, boxes, grid).sum()), int(DYNAMIC[sem].sum())


def point_agreement(sem: np.ndarray, points: np.ndarray, labels: np.ndarray,
                    grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per Occ3D class (0-17): (labelled points whose voxel carries their class, labelled points
    inside the grid). Points labelled 255 (unknown) are not counted.

    Args:
        sem: (X, Y, Z) uint8 labels; points: (N, 3) in the grid's frame; labels: (N,) uint8.

    Returns:
        two (18,) int64 arrays; ``hits.sum() / total.sum()`` is the overall agreement.
    """
    idx, inside = grid.points_to_voxels(np.asarray(points, np.float64))
    lab = np.asarray(labels)
    keep = inside & (lab < OCC3D_NUM_CLASSES)
    lab = lab[keep].astype(np.int64)
    ijk = idx[keep]
    hit = sem[ijk[:, 0], ijk[:, 1], ijk[:, 2]] == lab
    return (np.bincount(lab[hit], minlength=OCC3D_NUM_CLASSES), np.bincount(lab, minlength=OCC3D_NUM_CLASSES))


def class_z_histogram(sem: np.ndarray, cls: int, grid: GridSpec | None = None, within: float | None = None) -> np.ndarray:
    """(Z,) int64: voxels of class ``cls`` per z-index (e.g. where the road lies); with ``grid``
    and ``within``, only columns whose centre lies within ``within`` metres (in x, y) of the
    grid's origin (the ego: where the road is at ego z = 0 whatever the terrain further out)."""
    i, j, k = np.nonzero(sem == cls)
    if within is not None:
        cx, cy, _ = grid.axis_centers()
        near = np.hypot(cx[i], cy[j]) <= within
        k = k[near]
    return np.bincount(k, minlength=sem.shape[2])


@dataclass
class KeyframeChecks:
    """:func:`check_keyframe`'s results for one keyframe.

    Attributes:
        trail: dynamic-class voxels outside every grown box (:func:`trail_counts`).
        dynamic: all dynamic-class voxels.
        hits, total: (18,) per class, :func:`point_agreement` of the keyframe's own labelled scan.
        road_z: (Z,) driveable_surface voxels per z-index.
        road_z_near: the same within :data:`NEAR_EGO` metres of the ego.
    """

    trail: int
    dynamic: int
    hits: np.ndarray
    total: np.ndarray
    road_z: np.ndarray
    road_z_near: np.ndarray


#: metres around the ego within which :func:`check_keyframe` reports the road's z-index apart.
NEAR_EGO = 10.0


def check_keyframe(prep, k: int, semantics: np.ndarray, cfg) -> KeyframeChecks:
    """The checks of this module for keyframe ``k`` of a prepared scene.

    Args:
        prep: the :class:`~occ_core.labels.pipeline.PreparedScene` the labels came from.
        k: index into ``prep.scene.keyframes``.
        semantics: (X, Y, Z) the keyframe's labels (``label_keyframe`` or an ``occ-label`` file).
        cfg: the :class:`~occ_core.labels.config.LabelConfig` they were made with (its grid and
            ``z_shift`` place the keyframe's points, after ego-body, noise and near-return
            removal, and its boxes in the grid).
    """
    sw = prep.scene.sweeps[prep.scene.keyframes[k]]
    T = invert_transform(sw.T_scene_from_ego)
    T[2, 3] += cfg.z_shift
    trail, dynamic = trail_counts(semantics, sw.boxes.transformed(T), cfg.grid)
    pts = sw.points.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    hits, total = point_agreement(semantics, pts, sw.label, cfg.grid)
    road = OCC3D_INDEX["driveable_surface"]
    return KeyframeChecks(trail, dynamic, hits, total, class_z_histogram(semantics, road),
                          class_z_histogram(semantics, road, cfg.grid, NEAR_EGO))
