"""Image decoding and preprocessing shared by the training data pipeline, ``occ-predict`` and the node.

An image (H, W, 3) uint8 RGB is scaled to cover the network input (h, w) with its aspect kept,
cropped (centred horizontally, from the top vertically: the sky goes) and normalised. The
pixel mapping is the affine ``p' = A p`` (integer pixel coordinates are pixel centres), so the
intrinsics become ``K' = A K``.

Decoding (:func:`decode_image`): the size is read from the JPEG/PNG header and checked before any
pixel is decoded (:func:`check_image_size`: a bomb costs nothing), and a JPEG decodes strictly
(libjpeg-turbo through ``simplejpeg``: corrupt data is an error, not grey fill). A JPEG much
larger than the network input is decoded at 1/2, 1/4 or 1/8 scale in libjpeg's DCT domain (the
same pixels as OpenCV's ``IMREAD_REDUCED_COLOR_*``), the largest
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


#: Largest image accepted unless a caller says otherwise: 4096 x 3072 (12.6 MP), a little over
#: the largest camera expected on a robot (nuScenes: 1600 x 900). The size is read from the
#: header before anything is decoded, so a 100-byte file that claims 100000 x 100000 pixels
#: costs nothing.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 3072
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageHeader:
    """What a JPEG or PNG header says: ``kind`` ("jpeg" | "png"), (``height``, ``width``) pixels
    and ``channels`` (1 grey, 3 colour, 4 with alpha; PNG: after palette expansion)."""

    kind: str
    height: int
    width: int
    channels: int


def read_image_header(data: bytes, where: str = "image") -> ImageHeader:
    """The header of a JPEG (start-of-frame) or PNG (IHDR) stream; no pixel data is decoded.

    Raises:
        OccDataError: naming ``where``: neither JPEG nor PNG, or a header that cannot be read.
    """
    if data[:2] == b"\xff\xd8":
        size = jpeg_size(data)
        if size is None:
            raise OccDataError(f"{where}: JPEG without a readable start-of-frame header")
        i = data.find(b"\xff", 2)
        channels = 3
        while 0 <= i < len(data) - 9:  # the component count of the first SOF marker
            if data[i + 1] in _SOF_MARKERS:
                channels = data[i + 9]
                break
            i = data.find(b"\xff", i + 1)
        return ImageHeader("jpeg", size[0], size[1], 1 if channels == 1 else 3)
    if data[:8] == _PNG_SIGNATURE:
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise OccDataError(f"{where}: PNG without an IHDR header")
        w, h = struct.unpack_from(">II", data, 16)
        colour_type = data[25]
        channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour_type)
        if channels is None or h == 0 or w == 0:
            raise OccDataError(f"{where}: PNG header with size {w}x{h} and colour type {colour_type} is invalid")
        return ImageHeader("png", h, w, channels)
    raise OccDataError(f"{where}: expected a JPEG or PNG stream, got {len(data)} bytes starting {data[:8]!r}")


def check_image_size(height: int, width: int, where: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                     expected_hw: tuple[int, int] | None = None) -> None:
    """Refuse an image size before decoding it.

    Args:
        height, width: from the header.
        max_pixels: most pixels accepted.
        expected_hw: the calibrated (H, W) of this camera (CameraInfo), or None / zeros when
            unknown. The image must have the same aspect ratio (within 1 %): a camera's images
            may be delivered at another resolution than its calibration, never reshaped.

    Raises:
        OccDataError: naming ``where``, the size and the limit it breaks.
    """
    if height <= 0 or width <= 0:
        raise OccDataError(f"{where}: expected an image of at least 1x1 pixels, got {width}x{height}")
    if height * width > max_pixels:
        raise OccDataError(f"{where}: the header claims {width}x{height} = {height * width} pixels, more than "
                           f"max_image_pixels = {max_pixels}; refused before decoding")
    if expected_hw is not None and expected_hw[0] > 0 and expected_hw[1] > 0:
        eh, ew = expected_hw
        if abs(height * ew - width * eh) > 0.01 * max(height * ew, width * eh):
            raise OccDataError(f"{where}: {width}x{height} image disagrees with the calibrated size {ew}x{eh} "
                               f"(CameraInfo): expected that size or the same aspect ratio")


def decode_jpeg(data: bytes, where: str, colorspace: str = "RGB", min_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a JPEG with libjpeg-turbo (``simplejpeg``), strictly: libjpeg's corrupt-data
    warnings (a truncated scan, bad Huffman codes) are errors, not grey fill.

    Args:
        colorspace: ``"RGB"``, ``"BGR"`` or ``"GRAY"``.
        min_hw: decode at the smallest of libjpeg's DCT scales (n/8) whose size still reaches
            (h, w); None = full size. Pixels equal OpenCV's ``IMREAD_REDUCED_*`` decode.

    Returns:
        (H', W', 3) uint8, or (H', W') for ``"GRAY"``.

    Raises:
        OccDataError: naming ``where`` and libjpeg's complaint.
    """
    import simplejpeg

    kwargs = {} if min_hw is None else {"min_height": int(min_hw[0]), "min_width": int(min_hw[1])}
    try:
        img = simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True, **kwargs)
    except (ValueError, RuntimeError) as e:
        raise OccDataError(f"{where}: corrupt JPEG ({e})") from None
    return img[:, :, 0] if colorspace == "GRAY" else img


def decode_png(data: bytes | np.ndarray, where: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode a PNG through OpenCV; a failure of any kind becomes :class:`OccDataError` naming ``where``."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        img = cv2.imdecode(buf, flags | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as e:
        raise OccDataError(f"{where}: OpenCV could not decode the PNG ({str(e).strip().splitlines()[-1]})") from None
    if img is None:
        raise OccDataError(f"{where}: OpenCV could not decode {buf.size} bytes as a PNG")
    return img


def decode_image(data: bytes | np.ndarray, out_hw: tuple[int, int] | None = None, where: str = "image",
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, expected_hw: tuple[int, int] | None = None) -> ScaledImage:
    """Decode a JPEG or PNG to RGB, its size checked from the header first.

    Args:
        data: the compressed bytes.
        out_hw: the network input (h, w): a JPEG is then decoded at the largest DCT reduction
            that still covers it (:func:`decode_reduction`); None decodes at full size.
        where: names the image in errors.
        max_pixels, expected_hw: see :func:`check_image_size`.

    Raises:
        OccDataError: not a JPEG/PNG, a size refused by :func:`check_image_size`, or data that
            does not decode cleanly (a truncated or corrupt stream).
    """
    raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data, np.uint8).tobytes()
    header = read_image_header(raw, where)
    H, W = header.height, header.width
    check_image_size(H, W, where, max_pixels, expected_hw)
    if header.kind == "jpeg":
        r = decode_reduction((H, W), out_hw) if out_hw is not None else 1
        want = (-(-H // r), -(-W // r))
        img = decode_jpeg(raw, where, "RGB", want if r > 1 else None)
    else:
        r, want = 1, (H, W)
        img = cv2.cvtColor(decode_png(raw, where), cv2.COLOR_BGR2RGB)
    if img.shape[:2] != want:
        raise OccDataError(f"{where}: decoded {img.shape[1]}x{img.shape[0]} pixels, the header says "
                           f"{want[1]}x{want[0]}")
    return ScaledImage(np.ascontiguousarray(img), scale_matrix(1.0 / r, 1.0 / r), (H, W))
