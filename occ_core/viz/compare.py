"""Comparison renders: one keyframe's prediction beside its ground truth, with the six cameras.

One composite BGR image per keyframe (:func:`render_comparison`), top to bottom:

- a title: scene, keyframe index, short sample token, UTC time and time into the scene, model
  name, the frame's mIoU and geometric IoU (:mod:`occ_core.eval.occupancy`, inside the shown mask);
- the six camera images in the nuScenes layout (:data:`CAMERA_LAYOUT`: FRONT_LEFT, FRONT,
  FRONT_RIGHT on top; BACK_LEFT, BACK, BACK_RIGHT below);
- three BEV maps of the same size and orientation (x forward up, y left left): ground truth,
  prediction, and their difference per column (:func:`diff_columns`), each with range rings
  and the ego marker (:func:`occ_core.viz.render.render_bev`);
- two 3D views from the same camera: ground truth and prediction, with the ego car;
- on the right, the legend: the classes present (voxel counts in GT / prediction) and the
  difference colours.

With a mask (``mask_camera`` by default in ``occ-render --compare``) the ground truth, the
prediction, the difference and the scores all cover only the voxels inside it: what the Occ3D
metric scores. Everything is numpy + OpenCV; no display.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import cv2
import numpy as np

from occ_core.classes import OCC3D_CLASSES, OCC3D_FREE, OCC3D_PALETTE
from occ_core.errors import OccDataError
from occ_core.grid import OCC3D, GridSpec
from occ_core.viz.render import (Camera3D, bev_image, draw_ego, draw_range_rings, legend_panel, render_3d,
                                 render_bev)

#: The six nuScenes cameras as they are usually tiled: front row, then back row.
CAMERA_LAYOUT: tuple[tuple[str, str, str], tuple[str, str, str]] = (
    ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
    ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"),
)

#: Column codes of :func:`diff_columns`.
DIFF_OUTSIDE, DIFF_FREE, DIFF_CORRECT, DIFF_WRONG, DIFF_FALSE, DIFF_MISSED = -2, -1, 0, 1, 2, 3
#: Legend text and RGB colour of each column code.
DIFF_LEGEND: dict[int, tuple[str, tuple[int, int, int]]] = {
    DIFF_CORRECT: ("correct", (110, 185, 110)),
    DIFF_WRONG: ("wrong class", (225, 30, 45)),
    DIFF_FALSE: ("predicted occupied, GT free", (255, 165, 0)),
    DIFF_MISSED: ("missed (GT occupied)", (40, 100, 235)),
    DIFF_FREE: ("free in both", (255, 255, 255)),
    DIFF_OUTSIDE: ("not evaluated (outside mask)", (200, 200, 200)),
}

#: The 3D views' camera (for the 80 m Occ3D grid; :meth:`Camera3D.for_grid` scales it): steeper than
#: the single-grid default and centred behind the ego, so more of the grid fills 600 x 400 pixels.
COMPARE_VIEW = {"elevation_deg": 50.0, "distance": 85.0, "target": (-4.0, 0.0, 0.0), "width": 600, "height": 400}

_TITLE_H, _CAPTION_H, _LEGEND_W = 58, 26, 300
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def diff_columns(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None, free: int = OCC3D_FREE) -> np.ndarray:
    """What the prediction got right or wrong in each (x, y) column.

    Each evaluated voxel (inside ``mask``) is correct (occupied in both, same class), wrong class
    (occupied in both, classes differ), false occupied (occupied in the prediction, free in the
    ground truth), missed (occupied in the ground truth, free in the prediction) or free in both.
    A column takes the kind with the most voxels among the first four; ties go to the worse kind
    (wrong class, then missed, then false occupied, then correct). A column with none of them is
    :data:`DIFF_FREE`, one without any evaluated voxel :data:`DIFF_OUTSIDE`.

    Args:
        gt, pred: (X, Y, Z) integer labels, ``free`` = free.
        mask: (X, Y, Z) bool voxels to evaluate; None = all.

    Returns:
        (X, Y) int8 column codes (``DIFF_*``).
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 3 or (mask is not None and np.shape(mask) != gt.shape):
        raise OccDataError(f"diff: expected gt, pred (and mask) of one (X, Y, Z) shape, got {gt.shape}, {pred.shape}"
                           f"{'' if mask is None else ', ' + str(np.shape(mask))}")
    m = np.ones(gt.shape, bool) if mask is None else np.asarray(mask, bool)
    g_occ, p_occ = (gt != free) & m, (pred != free) & m
    both = g_occ & p_occ
    same = gt == pred
    counts = np.stack([(both & ~same).sum(2), (g_occ & ~p_occ).sum(2), (p_occ & ~g_occ).sum(2),
                       (both & same).sum(2)])  # worst first: argmax keeps the first of equal counts
    code = np.array([DIFF_WRONG, DIFF_MISSED, DIFF_FALSE, DIFF_CORRECT], np.int8)[np.argmax(counts, axis=0)]
    code = np.where(counts.sum(0) > 0, code, np.int8(DIFF_FREE))
    return np.where(m.any(2), code, np.int8(DIFF_OUTSIDE)).astype(np.int8)


def render_diff_bev(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None, spec: GridSpec = OCC3D,
                    pixels_per_voxel: int = 4, free: int = OCC3D_FREE, ego: bool = True,
                    rings_m: float | None = None) -> np.ndarray:
    """The :func:`diff_columns` map in the :func:`render_bev` layout, coloured by :data:`DIFF_LEGEND`.

    Returns:
        (X * ppv, Y * ppv, 3) uint8 BGR image.
    """
    code = diff_columns(gt, pred, mask, free)
    if code.shape != tuple(spec.dims[:2]):
        raise OccDataError(f"diff: expected grids of shape {tuple(spec.dims)} (grid {spec.name!r}), got {np.shape(gt)}")
    lut = np.zeros((256, 3), np.uint8)
    for c, (_, rgb) in DIFF_LEGEND.items():
        lut[c % 256] = rgb
    img = bev_image(lut[code.astype(np.int64) % 256], pixels_per_voxel)
    if rings_m:
        draw_range_rings(img, spec, pixels_per_voxel, rings_m)
    if ego:
        draw_ego(img, spec, pixels_per_voxel)
    return img


def camera_mosaic(images: Mapping[str, np.ndarray | None], tile_w: int, tile_h: int) -> np.ndarray:
    """The six cameras tiled as :data:`CAMERA_LAYOUT`, each resized to (tile_h, tile_w) and named.

    Args:
        images: camera name -> (H, W, 3) uint8 BGR image; a missing or None camera gets a grey tile.

    Returns:
        (2 * tile_h, 3 * tile_w, 3) uint8 BGR image.
    """
    rows = []
    for names in CAMERA_LAYOUT:
        tiles = []
        for name in names:
            img = images.get(name)
            if img is None:
                tile = np.full((tile_h, tile_w, 3), 120, np.uint8)
                _text(tile, "no image", (8, tile_h // 2), 0.5, (255, 255, 255))
            else:
                img = np.asarray(img)
                if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                    raise OccDataError(f"{name}: expected an (H, W, 3) uint8 image, got {img.dtype} {img.shape}")
                interp = cv2.INTER_AREA if img.shape[1] > tile_w else cv2.INTER_LINEAR
                tile = cv2.resize(img, (tile_w, tile_h), interpolation=interp)
            _text(tile, name[4:] if name.startswith("CAM_") else name, (6, 18), 0.5, (255, 255, 255))
            cv2.rectangle(tile, (0, 0), (tile_w - 1, tile_h - 1), (255, 255, 255), 1)
            tiles.append(tile)
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def frame_scores(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray | None) -> tuple[float, float]:
    """(mIoU, geometric IoU) of one Occ3D frame inside ``mask``, by :func:`occ_core.eval.occupancy.occ3d_miou`
    (nan where undefined)."""
    from occ_core.eval.occupancy import occ3d_miou

    metric = occ3d_miou()
    metric.update(gt, pred, mask)
    return metric.miou(), metric.geometric_iou()


@dataclass
class FrameInfo:
    """Where a keyframe sits: scene, its index among the scene's keyframes, sample token, the
    sample's timestamp and the scene's first keyframe timestamp (microseconds, nuScenes)."""

    scene: str
    index: int
    token: str
    timestamp_us: int
    scene_start_us: int
    lidar_stamp_ns: int = 0

    def time_text(self) -> str:
        t = datetime.datetime.fromtimestamp(self.timestamp_us / 1e6, tz=datetime.timezone.utc)
        return (f"{t.strftime('%Y-%m-%d %H:%M:%S')}.{t.microsecond // 1000:03d} UTC "
                f"(t+{(self.timestamp_us - self.scene_start_us) / 1e6:.1f} s)")


def title_lines(info: FrameInfo, model_name: str, scores: tuple[float, float], mask_name: str) -> tuple[str, str]:
    """The two title lines of a comparison render."""
    miou, iou = scores

    def pct(v):
        return "n/a" if np.isnan(v) else f"{100 * v:.1f} %"

    where = "all voxels" if mask_name == "none" else f"inside the {mask_name} mask"
    return (f"{info.scene}  keyframe {info.index}  sample {info.token[:8]}  {info.time_text()}",
            f"model: {model_name}   frame mIoU {pct(miou)}  IoU {pct(iou)}  ({where})")


@dataclass
class Composite:
    """A comparison render and where its parts are.

    Attributes:
        image: (H, W, 3) uint8 BGR.
        panels: part name -> (x, y, w, h) pixel box: ``title``, ``cameras``, ``gt_bev``,
            ``pred_bev``, ``diff_bev``, ``gt_3d``, ``pred_3d``, ``legend`` (``title`` and
            ``cameras`` only when drawn).
        pixels_per_voxel: of the three BEV maps (:func:`occ_core.viz.render.bev_pixel` inside them).
    """

    image: np.ndarray
    panels: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    pixels_per_voxel: int = 1


def comparison_layout(spec: GridSpec = OCC3D, panel_px: int = 400, title: bool = True, cameras: bool = True,
                      camera3d: Camera3D | None = None) -> Composite:
    """The layout of :func:`render_comparison` (an empty image of the final size and the panel boxes).

    The BEV maps get ``round(panel_px / max(X, Y))`` (at least 1) pixels per voxel; the canvas is
    three BEV maps (or two 3D views, if wider) wide plus the legend column; camera tiles are a third
    of three BEV maps wide, 16:9; the 3D views are ``camera3d``'s size (default :data:`COMPARE_VIEW`
    at 1.5 x 1 BEV widths).
    """
    X, Y, _ = spec.dims
    ppv = max(1, int(round(panel_px / max(X, Y))))
    bev_w, bev_h = Y * ppv, X * ppv
    cam3 = camera3d or Camera3D.for_grid(spec, **{**COMPARE_VIEW, "width": 3 * bev_w // 2, "height": bev_h})
    width = max(3 * bev_w, 2 * cam3.width)
    panels: dict[str, tuple[int, int, int, int]] = {}
    y = 0
    if title:
        panels["title"] = (0, 0, width + _LEGEND_W, _TITLE_H)
        y = _TITLE_H
    top = y
    if cameras:
        tile_w = bev_w
        tile_h = int(round(tile_w * 9 / 16))
        panels["cameras"] = (0, y, 3 * tile_w, 2 * tile_h)
        y += 2 * tile_h
    y += _CAPTION_H
    for i, name in enumerate(("gt_bev", "pred_bev", "diff_bev")):
        panels[name] = (i * bev_w, y, bev_w, bev_h)
    y += bev_h + _CAPTION_H
    panels["gt_3d"] = (0, y, cam3.width, cam3.height)
    panels["pred_3d"] = (cam3.width, y, cam3.width, cam3.height)
    y += cam3.height
    panels["legend"] = (width, top, _LEGEND_W, y - top)
    return Composite(np.full((y, width + _LEGEND_W, 3), 255, np.uint8), panels, ppv)


def render_comparison(gt: np.ndarray, pred: np.ndarray, spec: GridSpec = OCC3D, mask: np.ndarray | None = None,
                      cameras: Mapping[str, np.ndarray | None] | None = None, title: Sequence[str] = (),
                      pred_name: str = "prediction", mask_name: str = "camera", panel_px: int = 400,
                      camera3d: Camera3D | None = None, rings_m: float | None = 10.0,
                      class_names: Sequence[str] = OCC3D_CLASSES, palette: np.ndarray = OCC3D_PALETTE,
                      free: int = OCC3D_FREE) -> Composite:
    """The composite of one keyframe (layout: :func:`comparison_layout`, contents: module docstring).

    Args:
        gt, pred: (X, Y, Z) uint8 labels on ``spec`` (base_link), ``free`` = free.
        mask: (X, Y, Z) bool voxels shown and compared (both grids are set to free outside it); None = all.
        cameras: camera name -> (H, W, 3) uint8 BGR image (:data:`CAMERA_LAYOUT`); None: no camera row.
        title: up to two lines drawn on top (e.g. :func:`title_lines`); empty: no title band.
        pred_name: the prediction panels' caption; ``mask_name`` names the mask in the captions.
        panel_px: the BEV maps' approximate size in pixels.
        camera3d: the 3D views' camera (see :func:`comparison_layout`).
        rings_m: range rings on the BEV maps every this many metres; None: none.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != gt.shape:
            raise OccDataError(f"mask: expected shape {gt.shape}, got {mask.shape}")
        gt = np.where(mask, gt, np.uint8(free)).astype(np.uint8)
        pred = np.where(mask, pred, np.uint8(free)).astype(np.uint8)
    comp = comparison_layout(spec, panel_px, bool(title), cameras is not None, camera3d)
    P, ppv, img = comp.panels, comp.pixels_per_voxel, comp.image
    X, Y, _ = spec.dims
    cam3 = camera3d or Camera3D.for_grid(spec, **{**COMPARE_VIEW, "width": P["gt_3d"][2], "height": P["gt_3d"][3]})

    def paste(name, part):
        x, y, w, h = P[name]
        img[y:y + h, x:x + w] = part[:h, :w]

    for i, line in enumerate(title[:2]):
        _text(img, line, (10, 24 + 26 * i), 0.62 if i == 0 else 0.58, (0, 0, 0), outline=False)
    if cameras is not None:
        x, y, w, h = P["cameras"]
        paste("cameras", camera_mosaic(cameras, w // 3, h // 2))
    shown = "all voxels" if mask is None else f"inside the {mask_name} mask"
    paste("gt_bev", render_bev(gt, spec, ppv, palette, free, rings_m=rings_m))
    paste("pred_bev", render_bev(pred, spec, ppv, palette, free, rings_m=rings_m))
    paste("diff_bev", render_diff_bev(gt, pred, mask, spec, ppv, free, rings_m=rings_m))
    paste("gt_3d", render_3d(gt, spec, cam3, palette, free, draw_edges=False, ego=True))
    paste("pred_3d", render_3d(pred, spec, cam3, palette, free, draw_edges=False, ego=True))
    captions = {"gt_bev": f"ground truth ({shown})", "pred_bev": f"prediction: {pred_name}",
                "diff_bev": "difference: prediction vs ground truth", "gt_3d": "ground truth, 3D",
                "pred_3d": f"prediction, 3D: {pred_name}"}
    for name, text in captions.items():
        x, y, w, _ = P[name]
        max_chars = max(8, int(w / 8.5))
        _text(img, text if len(text) <= max_chars else text[:max_chars - 3] + "...", (x + 8, y - 8), 0.5,
              (0, 0, 0), outline=False)

    counts_gt = np.bincount(gt.reshape(-1), minlength=len(palette))
    counts_pred = np.bincount(pred.reshape(-1), minlength=len(palette))
    present = [c for c in range(min(len(palette), len(class_names)))
               if c != free and (counts_gt[c] or counts_pred[c])]
    entries = [(tuple(int(v) for v in palette[c][::-1]), f"{class_names[c]} {counts_gt[c]}/{counts_pred[c]}")
               for c in present] or [((255, 255, 255), "no occupied voxels")]
    diff_entries = [(tuple(int(v) for v in rgb[::-1]), text) for text, rgb in DIFF_LEGEND.values()]
    x, y, w, h = P["legend"]
    diff_h = min(h // 2, 22 * len(diff_entries) + 50)
    img[y:y + h - diff_h, x:x + w] = legend_panel(h - diff_h, entries, "classes: voxels GT/prediction", w, 0.45, 22)
    img[y + h - diff_h:y + h, x:x + w] = legend_panel(diff_h, diff_entries, "difference, per column", w, 0.45, 22)
    return comp


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int],
          outline: bool = True) -> None:
    if outline:
        cv2.putText(img, text, org, _FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, _FONT, scale, color, 1, cv2.LINE_AA)
