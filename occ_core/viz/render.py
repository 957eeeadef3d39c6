"""Headless renders of a semantic occupancy grid: a perspective 3D voxel view and a BEV map.

Both are numpy + OpenCV images (no display, no GL): the 3D view projects the exposed,
camera-facing faces of the occupied voxels with a pinhole camera and paints them far to near
(painter's algorithm; per-face Lambert shading so the three visible sides differ); the BEV map
colours each (x, y) column by its highest occupied voxel, darker the lower it is. Both carry
the class palette (``OCC3D_PALETTE``) and a legend of the classes present.

Orientation (REP 103, base_link): x forward is up in the BEV map and y left is left; the ego
sits at the grid origin, drawn as a box outline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE, OCC3D_PALETTE
from occ_core.errors import OccDataError
from occ_core.grid import OCC3D, GridSpec

#: Face normals of a voxel (+x, -x, +y, -y, +z, -z) and their 4 corners (unit cube, CCW seen from outside).
_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.int64)
_CORNERS = np.array([
    [[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 1]],
    [[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0]],
    [[0, 1, 0], [0, 1, 1], [1, 1, 1], [1, 1, 0]],
    [[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1]],
    [[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]],
    [[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0]],
], dtype=np.float64)
_LIGHT = np.array([-0.35, 0.25, 0.9]) / np.linalg.norm([-0.35, 0.25, 0.9])
_BACKGROUND = (255, 255, 255)
_EMPTY_BEV = (236, 236, 236)


@dataclass(frozen=True)
class Camera3D:
    """A pinhole camera orbiting the grid centre.

    Attributes:
        azimuth_deg: direction from the target to the eye, counter-clockwise from +x (180 = behind the ego).
        elevation_deg: angle of the eye above the xy plane.
        distance: metres from the target to the eye.
        target: (3,) point looked at, base_link metres.
        fov_deg: horizontal field of view.
        width, height: image size in pixels.
    """

    azimuth_deg: float = 210.0
    elevation_deg: float = 38.0
    distance: float = 95.0
    target: tuple[float, float, float] = (4.0, 0.0, 0.0)
    fov_deg: float = 55.0
    width: int = 1280
    height: int = 800

    def eye(self) -> np.ndarray:
        az, el = np.radians(self.azimuth_deg), np.radians(self.elevation_deg)
        d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        return np.asarray(self.target, dtype=np.float64) + self.distance * d

    def world_to_camera(self) -> np.ndarray:
        """(3, 4) [R | t] mapping base_link points into the camera frame (x right, y down, z forward)."""
        eye = self.eye()
        fwd = np.asarray(self.target, dtype=np.float64) - eye
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        R = np.stack([right, down, fwd])
        return np.hstack([R, (-R @ eye)[:, None]])

    def focal(self) -> float:
        return 0.5 * self.width / np.tan(np.radians(self.fov_deg) / 2)


def _check(labels: np.ndarray, spec: GridSpec, palette: np.ndarray, free: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != tuple(spec.dims):
        raise OccDataError(f"labels: expected shape {tuple(spec.dims)} of grid {spec.name!r}, got {labels.shape}")
    if labels.dtype != np.uint8:
        raise OccDataError(f"labels: expected uint8 class labels, got {labels.dtype}")
    if labels.size and int(labels.max()) >= len(palette) and int(labels.max()) != free:
        raise OccDataError(f"labels: label {int(labels.max())} has no palette colour ({len(palette)} colours)")
    return labels


def exposed_faces(occupied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces of occupied voxels whose neighbour is not occupied (or outside the grid).

    Args:
        occupied: (X, Y, Z) bool.

    Returns:
        ``(ijk, face)``: (F, 3) int64 voxel indices and (F,) int64 face numbers 0-5
        (+x, -x, +y, -y, +z, -z).
    """
    padded = np.pad(occupied, 1, constant_values=False)
    inner = padded[1:-1, 1:-1, 1:-1]
    ijks, faces = [], []
    X, Y, Z = occupied.shape
    for f, n in enumerate(_NORMALS):
        nb = padded[1 + n[0]:1 + n[0] + X, 1 + n[1]:1 + n[1] + Y, 1 + n[2]:1 + n[2] + Z]
        idx = np.argwhere(inner & ~nb)
        ijks.append(idx)
        faces.append(np.full(len(idx), f, dtype=np.int64))
    return np.concatenate(ijks), np.concatenate(faces)


def render_3d(labels: np.ndarray, spec: GridSpec = OCC3D, camera: Camera3D = Camera3D(),
              palette: np.ndarray = OCC3D_PALETTE, free: int = OCC3D_FREE,
              draw_edges: bool = True) -> np.ndarray:
    """A perspective view of the occupied voxels of ``labels`` (X, Y, Z) uint8 (base_link grid).

    Returns:
        (H, W, 3) uint8 BGR image (OpenCV order), white background.
    """
    labels = _check(labels, spec, palette, free)
    img = np.full((camera.height, camera.width, 3), _BACKGROUND, dtype=np.uint8)
    occupied = (labels != free) & (labels < len(palette))
    if not occupied.any():
        return img
    ijk, face = exposed_faces(occupied)
    vs = np.asarray(spec.voxel_size, dtype=np.float64)
    lo = np.asarray(spec.range_min, dtype=np.float64)
    corners = lo + (ijk[:, None, :] + _CORNERS[face]) * vs  # (F, 4, 3) metres
    centers = corners.mean(axis=1)
    eye = camera.eye()
    facing = np.einsum("fk,fk->f", _NORMALS[face].astype(np.float64), eye - centers) > 0
    corners, centers, ijk, face = corners[facing], centers[facing], ijk[facing], face[facing]
    P = camera.world_to_camera()
    cam = corners @ P[:, :3].T + P[:, 3]  # (F, 4, 3)
    in_front = (cam[..., 2] > 0.5).all(axis=1)
    cam, centers, ijk, face = cam[in_front], centers[in_front], ijk[in_front], face[in_front]
    f = camera.focal()
    uv = f * cam[..., :2] / cam[..., 2:3] + np.array([camera.width / 2, camera.height / 2])
    depth = np.linalg.norm(centers - eye, axis=1)
    order = np.argsort(-depth, kind="stable")  # far to near
    cls = labels[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    shade = 0.55 + 0.45 * np.clip(_NORMALS[face].astype(np.float64) @ _LIGHT, 0.0, 1.0)
    rgb = palette[cls].astype(np.float64) * shade[:, None]
    bgr = np.clip(rgb[:, ::-1], 0, 255).astype(np.int32)
    edge = (bgr * 0.6).astype(np.int32)
    pts = np.round(uv * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    for k in order.tolist():
        poly = pts[k]
        cv2.fillConvexPoly(img, poly, bgr[k].tolist(), lineType=cv2.LINE_8, shift=4)
        if draw_edges:
            cv2.polylines(img, [poly], True, edge[k].tolist(), 1, lineType=cv2.LINE_8, shift=4)
    return img


def render_bev(labels: np.ndarray, spec: GridSpec = OCC3D, pixels_per_voxel: int = 4,
               palette: np.ndarray = OCC3D_PALETTE, free: int = OCC3D_FREE) -> np.ndarray:
    """Top-down map: each (x, y) column takes the colour of its highest occupied voxel.

    Lower tops are drawn darker (from 55 % brightness at z index 0 to 100 % at the top). x
    forward is up, y left is left. The ego (base_link origin) is a black box outline.

    Returns:
        (X * ppv, Y * ppv, 3) uint8 BGR image.
    """
    labels = _check(labels, spec, palette, free)
    X, Y, Z = labels.shape
    occupied = (labels != free) & (labels < len(palette))
    has = occupied.any(axis=2)
    top = Z - 1 - np.argmax(occupied[:, :, ::-1], axis=2)  # highest occupied z per column
    cls = np.take_along_axis(labels, top[:, :, None], axis=2)[:, :, 0]
    bright = 0.55 + 0.45 * top / max(Z - 1, 1)
    rgb = palette[np.where(has, cls, 0)].astype(np.float64) * bright[..., None]
    bev = np.where(has[..., None], rgb, np.array(_EMPTY_BEV, dtype=np.float64)[::-1])
    bev = np.clip(bev, 0, 255).astype(np.uint8)[:, :, ::-1]  # (X, Y, 3) BGR
    img = np.ascontiguousarray(bev[::-1, ::-1])  # row 0 = max x (forward up), col 0 = max y (left)
    img = cv2.resize(img, (Y * pixels_per_voxel, X * pixels_per_voxel), interpolation=cv2.INTER_NEAREST)
    # ego outline: a 4.5 m x 1.9 m car at the origin
    def px(x, y):
        col = (spec.range_min[1] + spec.dims[1] * spec.voxel_size[1] - y) / spec.voxel_size[1] * pixels_per_voxel
        row = (spec.range_min[0] + spec.dims[0] * spec.voxel_size[0] - x) / spec.voxel_size[0] * pixels_per_voxel
        return int(round(col)), int(round(row))
    cv2.rectangle(img, px(3.3, 0.95), px(-1.2, -0.95), (0, 0, 0), max(1, pixels_per_voxel // 2))
    return img


def add_legend(img: np.ndarray, labels: np.ndarray, class_names: Sequence[str] = OCC3D_CLASSES,
               palette: np.ndarray = OCC3D_PALETTE, free: int = OCC3D_FREE, title: str = "") -> np.ndarray:
    """``img`` with a legend panel on its right: a swatch, name and voxel count per present class."""
    labels = np.asarray(labels)
    counts = np.bincount(labels.reshape(-1), minlength=len(palette))
    present = [c for c in range(min(len(palette), len(class_names))) if c != free and counts[c] > 0]
    h = img.shape[0]
    panel = np.full((h, 300, 3), 255, dtype=np.uint8)
    y = 30
    if title:
        cv2.putText(panel, title[:34], (12, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        y += 30
    for c in present:
        if y > h - 10:
            break
        color = tuple(int(v) for v in palette[c][::-1])
        cv2.rectangle(panel, (12, y - 14), (32, y + 4), color, -1)
        cv2.rectangle(panel, (12, y - 14), (32, y + 4), (90, 90, 90), 1)
        cv2.putText(panel, f"{class_names[c]} ({counts[c]})", (42, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        y += 26
    if not present:
        cv2.putText(panel, "no occupied voxels", (12, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.hstack([img, panel])
