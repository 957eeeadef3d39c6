"""Aggregation stages: the static/dynamic split by (enlarged) boxes, per-instance accumulation
in box coordinates, 1-NN semantics for sweeps, and the majority vote per voxel.

Frames: see :mod:`occ_core.labels.scene` (``scene``) and :mod:`occ_core.labels.boxes` (``box``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from occ_core.classes import IGNORE_LABEL, OCC3D_FREE, OCC3D_INDEX
from occ_core.grid import GridSpec
from occ_core.labels.boxes import Boxes, box_extent, from_box_frame, points_in_boxes, to_box_frame
from occ_core.labels.config import LabelConfig
from occ_core.labels.scene import SceneData

#: Occ3D classes that are "things" (objects that have boxes and may move): 0-10.
THING = np.zeros(256, bool)
THING[: OCC3D_INDEX["truck"] + 1] = True


@dataclass
class ObjectCloud:
    """The points of one instance, accumulated over a scene in its box frame.

    Attributes:
        points: (M, 3) float32 metres in the box frame, thinned to one per ``object_cell``.
        label: Occ3D class of the instance's category.
    """

    points: np.ndarray
    label: int


@dataclass
class SplitScene:
    """A scene split into static and dynamic parts.

    Attributes:
        static: per sweep, (N_i,) bool: the point is static (kept in the scene frame).
        labels: per sweep, (N_i,) uint8 Occ3D label of each point (lidarseg for keyframes,
            1-NN for sweeps, the box category for object points; 255 = unknown).
        objects: instance id -> its accumulated :class:`ObjectCloud`.
    """

    static: list[np.ndarray]
    labels: list[np.ndarray]
    objects: dict[int, ObjectCloud]


def thin(points: np.ndarray, cell: float) -> np.ndarray:
    """One point (the first) per cubic cell of ``cell`` metres: (M, 3) of (N, 3)."""
    if len(points) == 0:
        return points
    key = np.floor(points / cell).astype(np.int64)
    _, first = np.unique(key, axis=0, return_index=True)
    return points[np.sort(first)]


def nn_labels(query: np.ndarray, ref_points: np.ndarray, ref_labels: np.ndarray, cap: float,
              tree: cKDTree | None = None) -> np.ndarray:
    """Label of the nearest reference point within ``cap`` metres, else 255 (unknown).

    Args:
        query: (N, 3); ref_points: (M, 3) (same frame); ref_labels: (M,) uint8.
        tree: a prebuilt ``cKDTree(ref_points)`` to reuse.

    Returns:
        (N,) uint8.
    """
    out = np.full(len(query), IGNORE_LABEL, np.uint8)
    if len(query) == 0 or len(ref_points) == 0:
        return out
    tree = tree if tree is not None else cKDTree(ref_points)
    dist, idx = tree.query(query, k=1, distance_upper_bound=cap)
    ok = np.isfinite(dist)
    out[ok] = np.asarray(ref_labels)[idx[ok]]
    return out


def split_scene(scene: SceneData, cfg: LabelConfig) -> SplitScene:
    """Static/dynamic split, object accumulation and sweep semantics for a whole scene.

    - A point is dynamic when it lies in a box enlarged by ``box_scale`` (length, width,
      upwards) and at least ``ground_clearance`` above the box's bottom; with lidarseg
      (keyframes), a point labelled as a thing (Occ3D 0-10) is dynamic down to the box's
      bottom, and one labelled as stuff never is. Dynamic points go to their instance's
      cloud in box coordinates (thinned to ``object_cell``), labelled with the box category.
    - Static points stay in the scene frame. Sweep points take the label of the nearest static
      keyframe point of the scene within ``nn_cap`` (255 beyond it).
    - Without ``use_boxes`` every point is static.
    """
    static, labels = [], []
    acc: dict[int, list[np.ndarray]] = {}
    obj_label: dict[int, int] = {}
    for sw in scene.sweeps:
        lab = sw.label.copy()
        st = np.ones(len(sw.points), bool)
        if cfg.use_boxes and len(sw.boxes):
            which = points_in_boxes(sw.points, sw.boxes, cfg.box_scale, cfg.ground_clearance)
            dyn = which >= 0
            if sw.is_key_frame and (lab != IGNORE_LABEL).any():
                # labelled points: things in the box down to its bottom, stuff never
                full = points_in_boxes(sw.points, sw.boxes, cfg.box_scale, 0.0)
                dyn = (dyn & (THING[lab] | (lab == IGNORE_LABEL))) | ((full >= 0) & THING[lab])
                which = np.where(which >= 0, which, full)
            st = ~dyn
            if dyn.any():
                w = which[dyn]
                local = to_box_frame(sw.points[dyn], sw.boxes, w).astype(np.float32)
                lab[dyn] = sw.boxes.label[w]
                for b in np.unique(w):
                    inst = int(sw.boxes.instance[b])
                    acc.setdefault(inst, []).append(local[w == b])
                    obj_label[inst] = int(sw.boxes.label[b])
        static.append(st)
        labels.append(lab)
    # sweep semantics: 1-NN to the scene's static keyframe points
    ref = [(scene.sweeps[i].points[static[i] & (labels[i] != IGNORE_LABEL)],
            labels[i][static[i] & (labels[i] != IGNORE_LABEL)]) for i in scene.keyframes]
    if ref and sum(len(r[0]) for r in ref):
        ref_pts = np.concatenate([r[0] for r in ref])
        ref_lab = np.concatenate([r[1] for r in ref])
        tree = cKDTree(ref_pts)
        for i, sw in enumerate(scene.sweeps):
            if sw.is_key_frame:
                continue
            q = static[i]
            labels[i][q] = nn_labels(sw.points[q], ref_pts, ref_lab, cfg.nn_cap, tree)
    objects = {inst: ObjectCloud(thin(np.concatenate(parts), cfg.object_cell), obj_label[inst])
               for inst, parts in acc.items()}
    return SplitScene(static, labels, objects)


def place_objects(objects: dict[int, ObjectCloud], boxes: Boxes,
                  cfg: LabelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object clouds at the given boxes (one frame): points (M, 3) float64, labels (M,) uint8
    and the index (M,) int64 into ``boxes`` of the box each point was placed in.

    Each instance's cloud is moved rigidly into its box and cropped to the enlarged box
    (a cloud gathered while the box was larger stays inside the current one).
    """
    pts, labs, which = [], [], []
    lo, hi = box_extent(boxes, cfg.box_scale, cfg.ground_clearance)
    for b in range(len(boxes)):
        obj = objects.get(int(boxes.instance[b]))
        if obj is None or len(obj.points) == 0:
            continue
        p = obj.points.astype(np.float64)
        p = p[((p >= lo[b]) & (p <= hi[b])).all(1)]
        pts.append(from_box_frame(p, boxes, np.full(len(p), b)))
        labs.append(np.full(len(p), obj.label, np.uint8))
        which.append(np.full(len(p), b, np.int64))
    if not pts:
        return np.zeros((0, 3)), np.zeros(0, np.uint8), np.zeros(0, np.int64)
    return np.concatenate(pts), np.concatenate(labs), np.concatenate(which)


def voxel_flow(points: np.ndarray, box_index: np.ndarray, velocity: np.ndarray, semantics: np.ndarray,
               grid: GridSpec) -> np.ndarray:
    """Per-voxel flow (OpenOcc v2): the velocity of the object a voxel belongs to, 0 elsewhere.

    A voxel belongs to the box most of the placed object points inside it came from (ties: the
    lower box index) when its final label is a thing (Occ3D 0-10); every other voxel (free,
    stuff, or a thing voxel holding no object point) gets 0. Unknown velocities (NaN) count
    as 0.

    Args:
        points: (M, 3) placed object points, metres in the grid's frame.
        box_index: (M,) int64 index of each point's box (:func:`place_objects`).
        velocity: (B, >=2) m/s of each box in the grid's frame; x and y are used.
        semantics: (X, Y, Z) uint8 Occ3D labels on ``grid``.

    Returns:
        (X, Y, Z, 2) float32 ``(vx, vy)`` m/s.
    """
    flow = np.zeros((grid.num_voxels, 2), np.float32)
    n_boxes = len(velocity)
    if len(points) and n_boxes:
        idx, inside = grid.points_to_voxels(points)
        flat = grid.flat_index(idx[inside])
        b = np.asarray(box_index, np.int64)[inside]
        keys, counts = np.unique(flat * n_boxes + b, return_counts=True)
        vox, box = keys // n_boxes, keys % n_boxes
        order = np.lexsort((box, -counts, vox))  # per voxel: most points, then the lower box index
        vox, box = vox[order], box[order]
        first = np.r_[True, vox[1:] != vox[:-1]]
        vox, box = vox[first], box[first]
        keep = THING[np.asarray(semantics).reshape(-1)[vox]]
        vel = np.nan_to_num(np.asarray(velocity, np.float64)[box[keep], :2], nan=0.0)
        flow[vox[keep]] = vel
    return flow.reshape(*grid.dims, 2)


def majority_vote(points: np.ndarray, labels: np.ndarray, grid: GridSpec, unknown: int | None) -> np.ndarray:
    """Semantic grid (X, Y, Z) uint8 from labelled points: each voxel takes its most frequent
    known label (ties: the smaller class index); a voxel with only unknown (255) points becomes
    ``unknown`` (e.g. 0 ``others`` for geometry-only labels), or free when ``unknown`` is None;
    voxels without points are free (17).

    Args:
        points: (N, 3) metres in the grid's frame; labels: (N,) uint8.
    """
    sem = np.full(grid.num_voxels, OCC3D_FREE, np.uint8)
    idx, inside = grid.points_to_voxels(points)
    if not inside.any():
        return sem.reshape(grid.dims)
    flat = grid.flat_index(idx[inside])
    lab = np.asarray(labels, np.int64)[inside]
    keys, counts = np.unique(flat * 256 + lab, return_counts=True)
    vox, cls = keys // 256, keys % 256
    score = np.where(cls == IGNORE_LABEL, 0, counts)  # any known label beats unknown
    order = np.lexsort((cls, -score, vox))  # per voxel: highest score, then smallest class
    vox, cls, score = vox[order], cls[order], score[order]
    first = np.r_[True, vox[1:] != vox[:-1]]
    v, c = vox[first], cls[first]
    unk = c == IGNORE_LABEL
    if unknown is None:
        v, c = v[~unk], c[~unk]
    else:
        c = np.where(unk, unknown, c)
    sem[v] = c.astype(np.uint8)
    return sem.reshape(grid.dims)


#: Occ3D ground classes: driveable_surface, other_flat, sidewalk, terrain.
GROUND_CLASSES = (OCC3D_INDEX["driveable_surface"], OCC3D_INDEX["other_flat"], OCC3D_INDEX["sidewalk"],
                  OCC3D_INDEX["terrain"])


def area_weighted_ground(points: np.ndarray, labels: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """The ground-class points, thinned to one per class and ``cell`` x ``cell`` square of the
    ground plane.

    A majority vote over raw points weighs each ground class by how often the LiDAR hit it, not
    by how much of the voxel it covers: the face of a curb, which the sensor sees head on, and
    the near side of a voxel collect most of the returns. A vote over these points counts the
    squares each class covers, so a voxel takes the ground class that covers most of its
    footprint. (Whether a voxel is ground at all is still the raw vote's call: see
    :func:`occ_core.labels.pipeline.label_keyframe`.)

    Args:
        points: (N, 3) metres; labels: (N,) uint8 Occ3D classes (255 unknown).
        cell: metres (> 0).

    Returns:
        ``(points (M, 3), labels (M,))`` of the ground classes only.
    """
    ground = np.isin(labels, GROUND_CLASSES)
    if not ground.any():
        return np.zeros((0, 3)), np.zeros(0, np.uint8)
    g = np.floor(np.asarray(points, np.float64)[ground, :2] / cell).astype(np.int64) + 2**20  # >= 0 within +-1e5 m
    key = (g[:, 0] * 2**21 + g[:, 1]) * 256 + labels[ground].astype(np.int64)  # one int64: a flat np.unique
    _, first = np.unique(key, return_index=True)
    gi = np.nonzero(ground)[0][np.sort(first)]
    return points[gi], labels[gi]


def fill_ground(semantics: np.ndarray, observed: np.ndarray, radius: float, grid: GridSpec) -> np.ndarray:
    """Close the holes of the ground layer (a cheap densification for the ground only).

    A spinning LiDAR's rings leave the ground between them unhit, metres apart far from the
    sensor and across the direction of travel. A column (x, y) without a ground voxel takes the
    class and height (z-index) of the nearest column that has one, within ``radius`` metres,
    when the column was observed (``observed``) and holds nothing at or just above that height.

    Args:
        semantics: (X, Y, Z) uint8 Occ3D labels (17 free); not modified.
        observed: (X, Y) bool, columns some LiDAR ray crossed.
        radius: metres (in x, y); 0 returns a copy.

    Returns:
        (X, Y, Z) uint8, the filled labels.
    """
    from scipy.ndimage import distance_transform_edt

    sem = semantics.copy()
    if radius <= 0:
        return sem
    X, Y, Z = sem.shape
    is_ground = np.isin(sem, GROUND_CLASSES)
    has = is_ground.any(2)
    if not has.any():
        return sem
    gz = np.where(has, np.argmax(is_ground, axis=2), 0)  # lowest ground voxel per column
    gl = np.take_along_axis(sem, gz[..., None], 2)[..., 0]
    vs = grid.voxel_size[:2]
    dist, (nx, ny) = distance_transform_edt(~has, sampling=vs, return_indices=True)
    cand = ~has & observed & (dist <= radius)
    ci, cj = np.nonzero(cand)
    z = gz[nx[ci, cj], ny[ci, cj]]
    occupied = sem != OCC3D_FREE
    # nothing in the column at or below z + 1 (an object or wall standing there)
    below = np.cumsum(occupied, axis=2)  # (X, Y, Z) occupied voxels up to each layer
    top = np.minimum(z + 1, Z - 1)
    free_col = below[ci, cj, top] == 0
    ci, cj, z = ci[free_col], cj[free_col], z[free_col]
    sem[ci, cj, z] = gl[nx[ci, cj], ny[ci, cj]]
    return sem
