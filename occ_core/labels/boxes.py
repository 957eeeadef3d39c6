"""Annotation boxes as arrays, and points in and out of box coordinates.

A box (nuScenes convention) has a centre, a size ``[w, l, h]`` (width along its y axis,
length along x, height along z) and a rotation; its own frame ``box`` has the origin at the
centre. All functions take points and boxes in the same frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Boxes:
    """B boxes in one frame.

    Attributes:
        center: (B, 3) float64 metres.
        wlh: (B, 3) float64 metres ``[width, length, height]``.
        rotation: (B, 3, 3) float64, box frame -> this frame.
        label: (B,) uint8 Occ3D class of the box's category.
        instance: (B,) int64 instance id (the same object has the same id in every frame of
            a scene).
        velocity: (B, 3) float64 m/s in this frame (NaN where unknown), or None when no
            velocities are known at all.
    """

    center: np.ndarray
    wlh: np.ndarray
    rotation: np.ndarray
    label: np.ndarray
    instance: np.ndarray
    velocity: np.ndarray | None = None

    @classmethod
    def empty(cls) -> "Boxes":
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros(0, np.uint8),
                   np.zeros(0, np.int64), np.zeros((0, 3)))

    def __len__(self) -> int:
        return len(self.center)

    def transformed(self, T: np.ndarray) -> "Boxes":
        """The same boxes in another frame: ``T`` (4, 4) maps this frame to the new one (velocities
        are rotated only: ``T`` is a fixed change of frame, not a moving one)."""
        T = np.asarray(T, np.float64)
        vel = None if self.velocity is None else self.velocity @ T[:3, :3].T
        return Boxes(self.center @ T[:3, :3].T + T[:3, 3], self.wlh.copy(), T[:3, :3] @ self.rotation,
                     self.label.copy(), self.instance.copy(), vel)

    def take(self, idx) -> "Boxes":
        vel = None if self.velocity is None else self.velocity[idx]
        return Boxes(self.center[idx], self.wlh[idx], self.rotation[idx], self.label[idx], self.instance[idx], vel)


def to_box_frame(points: np.ndarray, boxes: Boxes, which: np.ndarray) -> np.ndarray:
    """(N, 3) points -> the frame of box ``which[n]`` each: ``R^T (p - c)``."""
    d = np.asarray(points, np.float64)[:, :3] - boxes.center[which]
    return np.einsum("nji,nj->ni", boxes.rotation[which], d)


def from_box_frame(points_box: np.ndarray, boxes: Boxes, which: np.ndarray) -> np.ndarray:
    """(N, 3) points in the frame of box ``which[n]`` -> the boxes' frame: ``R p + c``."""
    return np.einsum("nij,nj->ni", boxes.rotation[which], np.asarray(points_box, np.float64)) + boxes.center[which]


def box_extent(boxes: Boxes, scale: float = 1.0, clearance: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper corners (B, 3) of each box in its own frame, enlarged by ``scale`` in
    length, width and upwards (the bottom stays), then with the bottom raised by ``clearance``
    metres: x in ±l/2·s, y in ±w/2·s, z in [-h/2 + clearance, -h/2 + h·s]."""
    w, l, h = boxes.wlh[:, 0], boxes.wlh[:, 1], boxes.wlh[:, 2]
    lo = np.stack([-l * scale / 2, -w * scale / 2, -h / 2 + clearance], 1)
    hi = np.stack([l * scale / 2, w * scale / 2, -h / 2 + h * scale], 1)
    return lo, hi


def points_in_boxes(points: np.ndarray, boxes: Boxes, scale: float = 1.0, clearance: float = 0.0) -> np.ndarray:
    """Index of the box each point lies in (the first one if several), -1 if none.

    Args:
        points: (N, >=3) metres, in the boxes' frame.
        boxes: B boxes, enlarged as :func:`box_extent` says.

    Returns:
        (N,) int64.
    """
    pts = np.asarray(points, np.float64)[:, :3]
    out = np.full(len(pts), -1, np.int64)
    if len(boxes) == 0 or len(pts) == 0:
        return out
    lo, hi = box_extent(boxes, scale, clearance)
    radius = np.linalg.norm(np.maximum(np.abs(lo), np.abs(hi)), axis=1)
    order = np.argsort(pts[:, 0], kind="stable")
    xs = pts[order, 0]
    for b in range(len(boxes)):  # B is small (tens): candidates by x, then the exact test
        a0, a1 = np.searchsorted(xs, [boxes.center[b, 0] - radius[b], boxes.center[b, 0] + radius[b]])
        cand = order[a0:a1]
        if len(cand) == 0:
            continue
        cand = cand[(np.abs(pts[cand, 1:] - boxes.center[b, 1:]) <= radius[b]).all(1) & (out[cand] < 0)]
        q = (pts[cand] - boxes.center[b]) @ boxes.rotation[b]
        inside = ((q >= lo[b]) & (q <= hi[b])).all(1)
        out[cand[inside]] = b
    return out
