"""Per-pixel image maps on disk: depth PNGs and 2D semantic label PNGs.

Depth (the synthetic world's ``depth/`` and ``occ-predict --format depth``):
``<root>/<CAM>/<image file stem>.png``, 16-bit single-channel, value = metres x 256 rounded
(KITTI's convention; 0 = no depth, so the range is 1/256 m .. 255.996 m).

2D semantics (the synthetic world's ``semantic2d/`` and ``semantic2d_corrupt/``, the stand-in
for an open-vocabulary segmenter such as Grounded-SAM): ``<root>/<CAM>/<image file stem>.png``,
8-bit single-channel at the image's size, value = Occ3D class 0..16, 17 = sky / nothing hit,
255 = no label (a region the segmenter left out). :func:`read_semantic2d` returns int64 labels
with every value that is not a class (17 and 255) as -1, the ignore index of the losses, or with
sky kept as :data:`SKY_LABEL` when asked (``render.sky``: rays through sky pixels hit nothing).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from occ_core.errors import OccDataError
from occ_core.fileio import atomic_write_bytes

DEPTH_SCALE = 256.0
#: 2D label value for "no label" in the PNG files.
SEMANTIC_NO_LABEL = 255


def encode_depth_png(depth: np.ndarray) -> bytes:
    """(H, W) metres (0 = none) -> PNG bytes, uint16 metres x 256 (clipped to 0..65535)."""
    d = np.asarray(depth, np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth map: expected (H, W), got {d.shape}")
    d16 = np.clip(np.round(np.nan_to_num(d, nan=0.0, posinf=0.0) * DEPTH_SCALE), 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", d16)
    if not ok:
        raise OccDataError("depth map: OpenCV could not encode the PNG")
    return buf.tobytes()


def write_depth_png(path: str | Path, depth: np.ndarray) -> None:
    """Write :func:`encode_depth_png` of ``depth`` to ``path`` atomically."""
    atomic_write_bytes(path, encode_depth_png(depth))


def read_depth_png(path: str | Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) float32 metres of a depth PNG (0 = none).

    Raises:
        OccDataError: naming the file: missing, not a 16-bit single-channel PNG, or not of
            ``expected_hw`` (H, W) when given.
    """
    path = Path(path)
    try:
        raw = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError as e:
        raise OccDataError(f"{path}: cannot read the depth map ({e.strerror})") from None
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 2 or img.dtype != np.uint16:
        got = "undecodable" if img is None else f"{img.dtype} {img.shape}"
        raise OccDataError(f"{path}: expected a 16-bit single-channel PNG (metres x 256), got {got}")
    if expected_hw is not None and img.shape != tuple(expected_hw):
        raise OccDataError(f"{path}: depth map is {img.shape[1]}x{img.shape[0]}, expected "
                           f"{expected_hw[1]}x{expected_hw[0]} (the source image size)")
    return img.astype(np.float32) / DEPTH_SCALE


def encode_semantic_png(labels: np.ndarray) -> bytes:
    """(H, W) uint8 labels (0..17, 255) -> PNG bytes."""
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype != np.uint8:
        raise ValueError(f"semantic map: expected (H, W) uint8, got {lab.dtype} {lab.shape}")
    ok, buf = cv2.imencode(".png", lab)
    if not ok:
        raise OccDataError("semantic map: OpenCV could not encode the PNG")
    return buf.tobytes()


#: The 2D semantic maps' value for sky / nothing hit (Occ3D's free index).
SKY_LABEL = 17


def read_semantic2d(path: str | Path, num_classes: int = 17, keep_sky: bool = False) -> np.ndarray:
    """(H, W) int64 labels of a 2D semantic PNG: 0 .. num_classes - 1, and -1 for everything
    else (sky 17, no label 255); with ``keep_sky`` sky stays :data:`SKY_LABEL`.

    Raises:
        OccDataError: naming the file: missing or not an 8-bit single-channel PNG.
    """
    path = Path(path)
    try:
        raw = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError as e:
        raise OccDataError(f"{path}: cannot read the 2D semantic map ({e.strerror})") from None
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 2 or img.dtype != np.uint8:
        got = "undecodable" if img is None else f"{img.dtype} {img.shape}"
        raise OccDataError(f"{path}: expected an 8-bit single-channel PNG of class indices, got {got}")
    lab = img.astype(np.int64)
    lab[(lab >= num_classes) & ~(keep_sky & (lab == SKY_LABEL))] = -1
    return lab


def map_path(root: str | Path, camera: str, image_filename: str) -> Path:
    """``<root>/<camera>/<stem of image_filename>.png`` (both names checked as single file names)."""
    from occ_core.paths import safe_component

    stem = Path(image_filename).name
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix else stem
    return Path(root) / safe_component(camera, "camera name") / (safe_component(stem, "image file stem") + ".png")
