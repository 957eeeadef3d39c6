"""Image preprocessing shared by the training data pipeline and the online predictor.

An image (H, W, 3) uint8 RGB is scaled to cover the network input (h, w) with its aspect kept,
cropped (centred horizontally, from the top vertically: the sky goes) and normalised. The
pixel mapping is the affine ``p' = A p`` (integer pixel coordinates are pixel centres), so the
intrinsics become ``K' = A K``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from occ_core.errors import OccDataError


@dataclass
class PreparedImage:
    """A network-input image.

    Attributes:
        image: (3, h, w) float32, normalised ``(rgb - mean) / std``.
        intrinsics: (3, 3) float64 K of this image.
    """

    image: np.ndarray
    intrinsics: np.ndarray


def resize_crop_matrix(src_hw: tuple[int, int], out_hw: tuple[int, int], scale: float = 1.0) -> tuple[np.ndarray, tuple[int, int]]:
    """The pixel affine A (3, 3) of resize+crop and the resized size (H', W') before the crop.

    ``scale`` multiplies the covering scale (>= 1 zooms in; training augmentation).
    """
    (H, W), (h, w) = src_hw, out_hw
    s = max(w / W, h / H) * scale
    Hr, Wr = max(h, int(round(H * s))), max(w, int(round(W * s)))
    sx, sy = Wr / W, Hr / H
    cx, cy = (Wr - w) // 2, Hr - h
    A = np.array([[sx, 0.0, 0.5 * sx - 0.5 - cx], [0.0, sy, 0.5 * sy - 0.5 - cy], [0.0, 0.0, 1.0]])
    return A, (Hr, Wr)


def prepare_image(image: np.ndarray, intrinsics: np.ndarray, out_hw: tuple[int, int],
                  mean: tuple[float, float, float], std: tuple[float, float, float], scale: float = 1.0,
                  where: str = "image") -> PreparedImage:
    """Resize, crop and normalise one RGB image; update its intrinsics.

    Args:
        image: (H, W, 3) uint8 RGB.
        intrinsics: (3, 3) K of ``image``.
        out_hw: (h, w) network input size.
        mean, std: RGB normalisation (0..255 scale).
        scale: extra zoom (>= 1), see :func:`resize_crop_matrix`.
        where: names the image in errors.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise OccDataError(f"{where}: expected an (H, W, 3) RGB image, got shape {image.shape}")
    K = np.asarray(intrinsics, dtype=np.float64)
    if K.shape != (3, 3):
        raise OccDataError(f"{where}: intrinsics must be (3, 3), got {K.shape}")
    H, W = image.shape[:2]
    h, w = out_hw
    A, (Hr, Wr) = resize_crop_matrix((H, W), (h, w), scale)
    interp = cv2.INTER_AREA if Wr < W else cv2.INTER_LINEAR
    r = cv2.resize(image, (Wr, Hr), interpolation=interp)
    cx, cy = (Wr - w) // 2, Hr - h
    r = r[cy:cy + h, cx:cx + w].astype(np.float32)
    r = (r - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return PreparedImage(np.ascontiguousarray(r.transpose(2, 0, 1)), A @ K)
