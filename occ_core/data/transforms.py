"""Image decoding and preprocessing shared by the training data pipeline, ``occ-predict`` and the node.

An image (H, W, 3) uint8 RGB is scaled to cover the network input (h, w) with its aspect kept,
cropped (centred horizontally, from the top vertically: the sky goes) and normalised. The
pixel mapping is the affine ``p' = A p`` (integer pixel coordinates are pixel centres), so the
intrinsics become ``K' = A K``.

Decoding (:func:`decode_image`): a JPEG much larger than the network input is decoded at 1/2,
1/4 or 1/8 scale in libjpeg's DCT domain (OpenCV ``IMREAD_REDUCED_COLOR_*``), the largest
reduction whose image still covers the resize target, so :func:`prepare_image` only ever
shrinks it. Output pixel ``i`` of a 1/r decode summarises source pixels ``[r i, r i + r)``, so
the pixel mapping is ``u' = (u + 0.5) / r - 0.5``. A 1600x900 JPEG for a 176x96 input decodes
at 1/8, about 2.4x faster than at full size. Every path that feeds the model (training,
``occ-predict``, the node) decodes through this function, so they see the same pixels.
"""

from __future__ import annotations

import struct
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


#: libjpeg DCT-domain reductions OpenCV offers, largest first, with their imread flags.
_REDUCED_FLAGS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(H, W) of a JPEG stream from its start-of-frame header, or None when ``data`` is not a
    JPEG or its header cannot be read (no pixel data is decoded)."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers: no length
            i += 2
            continue
        (length,) = struct.unpack_from(">H", data, i + 2)
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                return None
            h, w = struct.unpack_from(">HH", data, i + 5)
            return (h, w) if h > 0 and w > 0 else None
        i += 2 + length
    return None


def decode_reduction(src_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """The largest r in (8, 4, 2) whose 1/r decode, (ceil(H / r), ceil(W / r)), still covers
    the resize target of :func:`prepare_image` for ``out_hw``; 1 when none does."""
    H, W = src_hw
    _, (Hr, Wr) = resize_crop_matrix((H, W), out_hw)
    for r, _ in _REDUCED_FLAGS:
        if -(-H // r) >= Hr and -(-W // r) >= Wr:
            return r
    return 1


def scale_matrix(sx: float, sy: float) -> np.ndarray:
    """(3, 3) pixel affine of resizing an image by (sx, sy), pixel centres kept:
    ``u' = sx (u + 0.5) - 0.5`` (a 1/r DCT-domain decode is ``scale_matrix(1/r, 1/r)``)."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


@dataclass
class ScaledImage:
    """An RGB image decoded for the network, possibly at reduced size.

    Attributes:
        image: (H', W', 3) uint8 RGB.
        pixel_transform: (3, 3) affine from pixel coordinates of the full-size image to this
            one (identity unless decoded at reduced size): intrinsics become ``A @ K``.
        source_hw: (H, W) of the full-size image.
    """

    image: np.ndarray
    pixel_transform: np.ndarray
    source_hw: tuple[int, int]


def decode_image(data: bytes | np.ndarray, out_hw: tuple[int, int] | None = None, where: str = "image") -> ScaledImage:
    """Decode a JPEG or PNG (any format OpenCV reads) to RGB.

    Args:
        data: the compressed bytes.
        out_hw: the network input (h, w): a JPEG is then decoded at the largest DCT reduction
            that still covers it (:func:`decode_reduction`); None decodes at full size.
        where: names the image in errors.

    Raises:
        OccDataError: ``data`` that OpenCV cannot decode.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data, np.uint8)
    size = jpeg_size(buf.tobytes()) if out_hw is not None else None
    r = decode_reduction(size, out_hw) if size is not None else 1
    flag = dict(_REDUCED_FLAGS).get(r, cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imdecode(buf, flag) if buf.size else None
    if img is None:
        raise OccDataError(f"{where}: OpenCV could not decode {buf.size} bytes as an image")
    H, W = size if size is not None else img.shape[:2]
    if img.shape[:2] != (-(-H // r), -(-W // r)):  # not the libjpeg scaled size: decode again, full size
        img, r = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION), 1
        if img is None:
            raise OccDataError(f"{where}: OpenCV could not decode {buf.size} bytes as an image")
        H, W = img.shape[:2]
    return ScaledImage(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), scale_matrix(1.0 / r, 1.0 / r), (H, W))
