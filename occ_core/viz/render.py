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

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) of base_link points (N, 3) and (N,) bool: in front of the camera."""
        P = self.world_to_camera()
        cam = np.asarray(points, np.float64) @ P[:, :3].T + P[:, 3]
        front = cam[:, 2] > 0.5
        z = np.where(front, cam[:, 2], 1.0)
        return self.focal() * cam[:, :2] / z[:, None] + np.array([self.width / 2, self.height / 2]), front

    @classmethod
    def for_grid(cls, spec: GridSpec, **kwargs) -> "Camera3D":
        """A camera for ``spec``: ``distance`` and ``target`` (given for the 80 m Occ3D grid; default
        the class defaults) are scaled by the grid's largest horizontal extent / 80 m; the other
        fields as given in ``kwargs``."""
        s = max(spec.range_max[0] - spec.range_min[0], spec.range_max[1] - spec.range_min[1]) / 80.0
        distance = kwargs.pop("distance", cls.distance) * s
        target = tuple(float(v) * s for v in kwargs.pop("target", cls.target))
        return cls(distance=distance, target=target, **kwargs)


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
              draw_edges: bool = True, ego: bool = False) -> np.ndarray:
    """A perspective view of the occupied voxels of ``labels`` (X, Y, Z) uint8 (base_link grid).

    ``ego``: draw the ego car (the :data:`EGO_BOX_M` footprint, 1.5 m high, in black wireframe,
    with a heading line along +x on the ground) over the voxels.

    Returns:
        (H, W, 3) uint8 BGR image (OpenCV order), white background.
    """
    labels = _check(labels, spec, palette, free)
    img = np.full((camera.height, camera.width, 3), _BACKGROUND, dtype=np.uint8)
    occupied = (labels != free) & (labels < len(palette))
    if occupied.any():
        _paint_voxels(img, labels, occupied, spec, camera, palette, draw_edges)
    if ego:
        _draw_ego_3d(img, camera)
    return img


def _paint_voxels(img: np.ndarray, labels: np.ndarray, occupied: np.ndarray, spec: GridSpec, camera: Camera3D,
                  palette: np.ndarray, draw_edges: bool) -> None:
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


def _draw_ego_3d(img: np.ndarray, camera: Camera3D) -> None:
    x0, x1, y0, y1 = EGO_BOX_M
    corners = np.array([[x, y, z] for z in (0.0, 1.5) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))])
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
    uv, front = camera.project(np.vstack([corners, [[0.0, 0.0, 0.05], [x1 + 2.5, 0.0, 0.05]]]))
    pts = np.round(uv * 16).astype(np.int64)
    lines = [(a, b) for a, b in edges] + [(8, 9)]
    for color, width in (((255, 255, 255), 4), ((0, 0, 0), 2)):
        for a, b in lines:
            if front[a] and front[b]:
                cv2.line(img, tuple(pts[a].tolist()), tuple(pts[b].tolist()), color, width, cv2.LINE_AA, shift=4)


def bev_pixel(spec: GridSpec, pixels_per_voxel: int, x: float, y: float) -> tuple[float, float]:
    """(col, row) pixel coordinates in a :func:`render_bev` image of the base_link point (x, y) metres
    (pixel edges at integers: the grid's max-x, max-y corner is (0, 0))."""
    x_max = spec.range_min[0] + spec.dims[0] * spec.voxel_size[0]
    y_max = spec.range_min[1] + spec.dims[1] * spec.voxel_size[1]
    return ((y_max - y) / spec.voxel_size[1] * pixels_per_voxel, (x_max - x) / spec.voxel_size[0] * pixels_per_voxel)


def bev_image(colors: np.ndarray, pixels_per_voxel: int) -> np.ndarray:
    """A BEV map from per-column colours.

    Args:
        colors: (X, Y, 3) uint8 RGB, one colour per (x, y) column of the grid.
        pixels_per_voxel: size of a column in pixels.

    Returns:
        (X * ppv, Y * ppv, 3) uint8 BGR image, x forward up and y left left.
    """
    X, Y = colors.shape[:2]
    img = np.ascontiguousarray(colors[::-1, ::-1, ::-1])  # row 0 = max x, col 0 = max y, RGB -> BGR
    return cv2.resize(img, (Y * pixels_per_voxel, X * pixels_per_voxel), interpolation=cv2.INTER_NEAREST)


def draw_range_rings(img: np.ndarray, spec: GridSpec, pixels_per_voxel: int, every_m: float,
                     color: tuple[int, int, int] = (70, 70, 70)) -> np.ndarray:
    """Circles around the base_link origin every ``every_m`` metres on a BEV map (in place), each
    labelled with its radius where it crosses the forward-left diagonal; blended at 55 % so the
    map stays readable under them. Returns ``img``."""
    if every_m <= 0:
        raise ValueError(f"range rings: every_m must be > 0, got {every_m}")
    lo, hi = np.asarray(spec.range_min[:2], float), np.asarray(spec.range_max[:2], float)
    far = float(np.max(np.hypot(np.maximum(np.abs(lo), np.abs(hi))[0], np.maximum(np.abs(lo), np.abs(hi))[1])))
    overlay = img.copy()
    cx, cy = bev_pixel(spec, pixels_per_voxel, 0.0, 0.0)
    scale = pixels_per_voxel / spec.voxel_size[0]
    labels = []
    r = every_m
    while r <= far + 1e-9:
        cv2.circle(overlay, (int(round(cx * 16)), int(round(cy * 16))), int(round(r * scale * 16)), color, 1,
                   lineType=cv2.LINE_AA, shift=4)
        u, v = bev_pixel(spec, pixels_per_voxel, r * np.sqrt(0.5), r * np.sqrt(0.5))
        labels.append((f"{r:g} m", int(round(u)) + 3, int(round(v)) + 4))
        r += every_m
    cv2.addWeighted(overlay, 0.55, img, 0.45, 0.0, dst=img)
    h, w = img.shape[:2]
    for text, u, v in labels:
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        if 0 <= u and u + tw < w and th <= v < h:
            cv2.putText(img, text, (u, v), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 3, cv2.LINE_AA)
            cv2.putText(img, text, (u, v), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return img


#: The ego vehicle drawn on maps: a 4.5 m x 1.9 m box around base_link (rear axle, 1.2 m from the rear).
EGO_BOX_M = (-1.2, 3.3, -0.95, 0.95)


def draw_ego(img: np.ndarray, spec: GridSpec, pixels_per_voxel: int) -> np.ndarray:
    """The ego marker on a BEV map (in place): the car outline (:data:`EGO_BOX_M`) with an arrow
    head in its front half pointing along +x (the heading) and a dot on the base_link origin;
    black with a white border so it shows on any class colour. Returns ``img``."""
    x0, x1, y0, y1 = EGO_BOX_M

    def px(x, y):
        u, v = bev_pixel(spec, pixels_per_voxel, x, y)
        return int(round(u)), int(round(v))

    thick = max(1, pixels_per_voxel // 2)
    head = np.array([px(x1, 0.0), px(x1 - 1.9, 0.8 * y1), px(x1 - 1.9, 0.8 * y0)], dtype=np.int32)
    dot = max(2, pixels_per_voxel)
    for color, extra in (((255, 255, 255), 2), ((0, 0, 0), 0)):
        cv2.rectangle(img, px(x1, y1), px(x0, y0), color, thick + extra)
        cv2.circle(img, px(0.0, 0.0), dot + extra // 2, color, -1)
        if extra:
            cv2.polylines(img, [head], True, color, extra)
        else:
            cv2.fillConvexPoly(img, head, color)
    return img


def render_bev(labels: np.ndarray, spec: GridSpec = OCC3D, pixels_per_voxel: int = 4,
               palette: np.ndarray = OCC3D_PALETTE, free: int = OCC3D_FREE, ego: bool = True,
               rings_m: float | None = None) -> np.ndarray:
    """Top-down map: each (x, y) column takes the colour of its highest occupied voxel.

    Lower tops are drawn darker (from 55 % brightness at z index 0 to 100 % at the top). x
    forward is up, y left is left (pixels of a point: :func:`bev_pixel`).

    Args:
        ego: draw the ego marker with its heading (:func:`draw_ego`) at the base_link origin.
        rings_m: draw range rings every this many metres (:func:`draw_range_rings`); None: none.

    Returns:
        (X * ppv, Y * ppv, 3) uint8 BGR image.
    """
    labels = _check(labels, spec, palette, free)
    Z = labels.shape[2]
    occupied = (labels != free) & (labels < len(palette))
    has = occupied.any(axis=2)
    top = Z - 1 - np.argmax(occupied[:, :, ::-1], axis=2)  # highest occupied z per column
    cls = np.take_along_axis(labels, top[:, :, None], axis=2)[:, :, 0]
    bright = 0.55 + 0.45 * top / max(Z - 1, 1)
    rgb = palette[np.where(has, cls, 0)].astype(np.float64) * bright[..., None]
    rgb = np.where(has[..., None], rgb, np.array(_EMPTY_BEV, dtype=np.float64)[::-1])
    img = bev_image(np.clip(rgb, 0, 255).astype(np.uint8), pixels_per_voxel)
    if rings_m:
        draw_range_rings(img, spec, pixels_per_voxel, rings_m)
    if ego:
        draw_ego(img, spec, pixels_per_voxel)
    return img


def legend_panel(height: int, entries: Sequence[tuple[tuple[int, int, int], str]], title: str = "",
                 width: int = 300, font_scale: float = 0.5, row: int = 26) -> np.ndarray:
    """A white (height, width, 3) uint8 BGR panel listing ``entries`` (BGR swatch colour, text)
    top-down under an optional title; rows that do not fit are left out."""
    panel = np.full((height, width, 3), 255, dtype=np.uint8)
    y = 30
    if title:
        cv2.putText(panel, title[:34], (12, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        y += 30
    for color, text in entries:
        if y > height - 10:
            break
        cv2.rectangle(panel, (12, y - 14), (32, y + 4), tuple(int(c) for c in color), -1)
        cv2.rectangle(panel, (12, y - 14), (32, y + 4), (90, 90, 90), 1)
        cv2.putText(panel, text, (42, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
        y += row
    return panel


def add_legend(img: np.ndarray, labels: np.ndarray, class_names: Sequence[str] = OCC3D_CLASSES,
               palette: np.ndarray = OCC3D_PALETTE, free: int = OCC3D_FREE, title: str = "") -> np.ndarray:
    """``img`` with a legend panel on its right: a swatch, name and voxel count per present class."""
    labels = np.asarray(labels)
    counts = np.bincount(labels.reshape(-1), minlength=len(palette))
    present = [c for c in range(min(len(palette), len(class_names))) if c != free and counts[c] > 0]
    entries = [(tuple(int(v) for v in palette[c][::-1]), f"{class_names[c]} ({counts[c]})") for c in present]
    if not present:
        entries = [((255, 255, 255), "no occupied voxels")]
    return np.hstack([img, legend_panel(img.shape[0], entries, title)])
