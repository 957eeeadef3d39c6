"""sensor_msgs Image / CompressedImage / CameraInfo <-> numpy, with ``cv_bridge`` semantics.

* ``image_to_array`` / ``array_to_image``: raw images of the encodings in ``IMAGE_ENCODINGS``,
  honouring ``step`` (row padding) and ``is_bigendian``. One-channel images are (H, W), others
  (H, W, C), like cv_bridge. ``desired_encoding="passthrough"`` (default) returns the data as
  stored; otherwise 8-bit colour/mono encodings convert through ``cv2.cvtColor`` (rgb8 <-> bgr8
  etc.), and encodings with the same pixel layout (``16UC1`` <-> ``mono16``) are relabelled.
* ``compressed_to_array`` / ``array_to_compressed``: jpeg/png through OpenCV. ``format`` is
  written as ``image_transport``'s compressed plugin writes it (``"rgb8; jpeg compressed bgr8"``)
  or plain (``"jpeg"``) like ``cv_bridge.cv2_to_compressed_imgmsg``; both are read.
* ``camera_info_to_intrinsics``: K, D, R, P and the image size of a CameraInfo.

Readers accept rclpy messages and rosbags dataclass messages alike (duck typing).
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from occ_core.data.transforms import (DEFAULT_MAX_IMAGE_PIXELS, check_image_size, decode_image, decode_jpeg, decode_png,
                                       read_image_header)
from occ_core.errors import OccDataError

from .errors import ConversionError

#: encoding -> (numpy dtype, channels) (sensor_msgs/image_encodings.hpp names).
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "rgb16": (np.dtype(np.uint16), 3),
    "bgr16": (np.dtype(np.uint16), 3),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "8UC4": (np.dtype(np.uint8), 4),
    "16UC1": (np.dtype(np.uint16), 1),
    "16SC1": (np.dtype(np.int16), 1),
    "32SC1": (np.dtype(np.int32), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "64FC1": (np.dtype(np.float64), 1),
}

# 8-bit colour/mono encodings and the cv2.cvtColor code between each pair.
_CVT: dict[tuple[str, str], int] = {
    ("rgb8", "bgr8"): cv2.COLOR_RGB2BGR, ("bgr8", "rgb8"): cv2.COLOR_BGR2RGB,
    ("rgba8", "bgra8"): cv2.COLOR_RGBA2BGRA, ("bgra8", "rgba8"): cv2.COLOR_BGRA2RGBA,
    ("rgb8", "rgba8"): cv2.COLOR_RGB2RGBA, ("rgba8", "rgb8"): cv2.COLOR_RGBA2RGB,
    ("bgr8", "bgra8"): cv2.COLOR_BGR2BGRA, ("bgra8", "bgr8"): cv2.COLOR_BGRA2BGR,
    ("rgb8", "bgra8"): cv2.COLOR_RGB2BGRA, ("bgra8", "rgb8"): cv2.COLOR_BGRA2RGB,
    ("bgr8", "rgba8"): cv2.COLOR_BGR2RGBA, ("rgba8", "bgr8"): cv2.COLOR_RGBA2BGR,
    ("rgb8", "mono8"): cv2.COLOR_RGB2GRAY, ("bgr8", "mono8"): cv2.COLOR_BGR2GRAY,
    ("rgba8", "mono8"): cv2.COLOR_RGBA2GRAY, ("bgra8", "mono8"): cv2.COLOR_BGRA2GRAY,
    ("mono8", "rgb8"): cv2.COLOR_GRAY2RGB, ("mono8", "bgr8"): cv2.COLOR_GRAY2BGR,
    ("mono8", "rgba8"): cv2.COLOR_GRAY2RGBA, ("mono8", "bgra8"): cv2.COLOR_GRAY2BGRA,
    ("rgb16", "bgr16"): cv2.COLOR_RGB2BGR, ("bgr16", "rgb16"): cv2.COLOR_BGR2RGB,
}


def _check_encoding(encoding: str, field: str) -> tuple[np.dtype, int]:
    try:
        return IMAGE_ENCODINGS[encoding]
    except KeyError:
        raise ConversionError(f"{field}: unknown encoding {encoding!r}; expected one of {sorted(IMAGE_ENCODINGS)}") from None


def convert_encoding(image: np.ndarray, encoding: str, desired_encoding: str) -> np.ndarray:
    """Convert an image between encodings like cv_bridge (see module docstring).

    Args:
        image: (H, W) or (H, W, C) array in ``encoding``.
        encoding: its encoding.
        desired_encoding: target encoding or ``"passthrough"``.
    """
    if desired_encoding in ("passthrough", encoding):
        return image
    src_dt, src_c = _check_encoding(encoding, "encoding")
    dst_dt, dst_c = _check_encoding(desired_encoding, "desired_encoding")
    code = _CVT.get((encoding, desired_encoding))
    if code is not None:
        return cv2.cvtColor(image, code)
    if src_dt == dst_dt and src_c == dst_c:
        return image  # same pixel layout, new label (16UC1 <-> mono16, 8UC3 -> bgr8, ...)
    raise ConversionError(f"desired_encoding: cannot convert {encoding!r} to {desired_encoding!r}")


def image_to_array(msg: Any, desired_encoding: str = "passthrough") -> np.ndarray:
    """A ``sensor_msgs/Image`` as a numpy array (``cv_bridge.imgmsg_to_cv2``).

    Returns:
        (H, W) for one channel, else (H, W, C); a contiguous copy in native byte order.

    Raises:
        ConversionError: unknown ``encoding``, ``step`` < width * pixel bytes, ``data`` length
            != height * step, or an unsupported ``desired_encoding``.
    """
    dtype, channels = _check_encoding(msg.encoding, "Image.encoding")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ConversionError(
            f"Image.step: expected >= width * channels * bytes = {width}*{channels}*{dtype.itemsize} = {row_bytes}, got {step}")
    try:
        buf = np.frombuffer(msg.data, dtype=np.uint8)
    except (TypeError, ValueError):
        buf = np.ascontiguousarray(np.asarray(msg.data, dtype=np.uint8)).reshape(-1)
    if buf.size != height * step:
        raise ConversionError(f"Image.data: expected height * step = {height} * {step} = {height * step} bytes, got {buf.size}")
    dt = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    if height * width == 0:
        img = np.zeros((height, width, channels), dtype=dtype)
    else:
        img = np.ndarray(shape=(height, width, channels), dtype=dt, buffer=buf,
                         strides=(step, channels * dtype.itemsize, dtype.itemsize))
    img = np.ascontiguousarray(img.astype(dtype, copy=False))
    if channels == 1:
        img = img[:, :, 0]
    return convert_encoding(img, msg.encoding, desired_encoding)


def _infer_encoding(image: np.ndarray) -> str:
    channels = 1 if image.ndim == 2 else image.shape[2]
    for enc in ("8UC1", "8UC3", "8UC4", "16UC1", "16SC1", "32SC1", "32FC1", "64FC1"):
        dt, c = IMAGE_ENCODINGS[enc]
        if dt == image.dtype and c == channels:
            return enc
    raise ConversionError(f"image: no encoding for dtype {image.dtype} with {channels} channels")


def array_to_image(image: np.ndarray, encoding: str = "passthrough", header: Any = None, frame_id: str = ""):
    """A ``sensor_msgs/Image`` from an (H, W) or (H, W, C) array (``cv_bridge.cv2_to_imgmsg``).

    ``encoding="passthrough"`` names the layout as cv_bridge does (``8UC3``, ``32FC1``, ...).
    The message is packed (step = width * channels * bytes) and little endian.
    """
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ConversionError(f"image: expected shape (H, W) or (H, W, C), got {image.shape}")
    if encoding == "passthrough":
        encoding = _infer_encoding(image)
    dtype, channels = _check_encoding(encoding, "encoding")
    got_c = 1 if image.ndim == 2 else image.shape[2]
    if image.dtype != dtype or got_c != channels:
        raise ConversionError(
            f"image: encoding {encoding!r} needs dtype {dtype} with {channels} channel(s), got {image.dtype} with {got_c}")
    msg = Image()
    msg.header = header if header is not None else Header(frame_id=frame_id)
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels * dtype.itemsize
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(image, dtype=dtype.newbyteorder("<")).tobytes())
    msg.data = data
    return msg


# ------------------------------------------------------------------------ compressed images
@dataclass
class DecodedImage:
    """A decoded CompressedImage.

    Attributes:
        image: (H, W) or (H, W, C) array.
        encoding: encoding of ``image`` (``bgr8`` for OpenCV's colour decode, ``mono8``,
            ``mono16``, ``bgra8``, or ``desired_encoding`` when one was asked for).
        source_encoding: encoding before compression, from an image_transport ``format``
            (``"rgb8; jpeg compressed bgr8"`` -> ``"rgb8"``), else None.
        compression: ``"jpeg"`` or ``"png"``.
        pixel_transform: (3, 3) affine from pixel coordinates of the full-size image to
            ``image`` (identity unless decoded at reduced size for ``out_hw``): K -> ``A @ K``.
        source_hw: (H, W) of the full-size image.
    """

    image: np.ndarray
    encoding: str
    source_encoding: str | None
    compression: str
    pixel_transform: np.ndarray = field(default_factory=lambda: np.eye(3))
    source_hw: tuple[int, int] | None = None


def parse_compressed_format(fmt: str) -> tuple[str | None, str]:
    """``(source_encoding, compression)`` of a CompressedImage ``format`` string.

    Accepts ``"jpeg"``, ``"png"``, ``"jpg"`` and image_transport's
    ``"<enc>; <jpeg|png> compressed [<enc>]"``.
    """
    source = None
    text = fmt.strip().lower()
    if ";" in fmt:
        head, tail = fmt.split(";", 1)
        source = head.strip() or None
        text = tail.strip().lower()
    word = text.split()[0] if text else ""
    compression = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}.get(word)
    if compression is None:
        raise ConversionError(f"CompressedImage.format: expected 'jpeg', 'png' or '<encoding>; <jpeg|png> compressed ...', got {fmt!r}")
    return source, compression


def compressed_to_array(msg: Any, desired_encoding: str = "passthrough",
                        out_hw: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                        expected_hw: tuple[int, int] | None = None) -> DecodedImage:
    """Decode a ``sensor_msgs/CompressedImage`` (``cv_bridge.compressed_imgmsg_to_cv2``).

    The size is read from the JPEG/PNG header first and refused above ``max_pixels`` or when it
    disagrees with ``expected_hw`` (the camera's CameraInfo size; same aspect ratio required), so
    a decompression bomb is never decoded (:func:`occ_core.data.transforms.check_image_size`).
    JPEGs decode strictly (libjpeg's corrupt-data warnings are errors).

    With ``out_hw`` (a network input (h, w)) and ``desired_encoding="rgb8"``, a JPEG is decoded
    at the reduced size that still covers that input, as the training and offline paths decode
    it (:func:`occ_core.data.transforms.decode_image`); ``pixel_transform`` then maps the
    full-size pixel coordinates (and intrinsics) to the decoded image.

    Raises:
        ConversionError: unknown ``format``, data that is not a complete, clean jpeg/png, or a
            refused size; never any other exception for bad ``data``.
    """
    source, compression = parse_compressed_format(msg.format)
    try:
        buf = np.frombuffer(msg.data, dtype=np.uint8)
    except (TypeError, ValueError):
        buf = np.ascontiguousarray(np.asarray(msg.data, dtype=np.uint8)).reshape(-1)
    raw = buf.tobytes()
    # libjpeg decodes a truncated stream with a warning and grey fill: insist on the markers.
    if compression == "jpeg" and not (raw[:2] == b"\xff\xd8" and b"\xff\xd9" in raw[-16:]):
        raise ConversionError("CompressedImage.data: not a complete JPEG stream (missing SOI/EOI marker)")
    if compression == "png" and not (raw[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" in raw[-16:]):
        raise ConversionError("CompressedImage.data: not a complete PNG stream (missing signature/IEND chunk)")
    where = "CompressedImage.data"
    try:
        header = read_image_header(raw, where)
        if header.kind != compression:
            raise OccDataError(f"{where}: format says {compression}, the data is {header.kind}")
        check_image_size(header.height, header.width, where, max_pixels, expected_hw)
        if out_hw is not None and desired_encoding == "rgb8" and compression == "jpeg":
            scaled = decode_image(raw, out_hw, where, max_pixels, expected_hw)
            return DecodedImage(scaled.image, "rgb8", source, compression, scaled.pixel_transform, scaled.source_hw)
        if compression == "jpeg":
            grey = header.channels == 1
            image = decode_jpeg(raw, where, "GRAY" if grey else "BGR")
        else:
            image = decode_png(buf, where, cv2.IMREAD_UNCHANGED)
    except OccDataError as e:
        raise ConversionError(str(e)) from None
    if image.shape[:2] != (header.height, header.width):
        raise ConversionError(f"{where}: decoded {image.shape[1]}x{image.shape[0]} pixels, the header says "
                              f"{header.width}x{header.height}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    encoding = {(np.dtype(np.uint8), 1): "mono8", (np.dtype(np.uint8), 3): "bgr8", (np.dtype(np.uint8), 4): "bgra8",
                (np.dtype(np.uint16), 1): "mono16", (np.dtype(np.uint16), 3): "bgr16"}.get((image.dtype, channels))
    if encoding is None:
        raise ConversionError(f"{where}: decoded {image.dtype} image with {channels} channels is not supported")
    if desired_encoding != "passthrough":
        try:
            image = convert_encoding(image, encoding, desired_encoding)
        except cv2.error as e:
            raise ConversionError(f"{where}: cannot convert {encoding} to {desired_encoding} ({e})") from None
        encoding = desired_encoding
    return DecodedImage(image, encoding, source, compression, source_hw=image.shape[:2])


def array_to_compressed(image: np.ndarray, encoding: str = "bgr8", compression: str = "jpeg", quality: int = 95,
                        header: Any = None, frame_id: str = "", plain_format: bool = False):
    """A ``sensor_msgs/CompressedImage`` from an image (jpeg or png through OpenCV).

    Args:
        image: (H, W) or (H, W, C) array in ``encoding`` (8-bit for jpeg; png also takes
            16-bit mono/colour).
        encoding: the image's encoding; colour is stored as OpenCV's BGR.
        compression: ``"jpeg"`` or ``"png"``.
        quality: jpeg quality 1-100.
        plain_format: write ``format`` as ``"jpeg"``/``"png"`` (cv_bridge) instead of
            image_transport's ``"<encoding>; <compression> compressed <stored encoding>"``.
    """
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    image = np.asarray(image)
    dtype, channels = _check_encoding(encoding, "encoding")
    if image.dtype != dtype or (1 if image.ndim == 2 else image.shape[2]) != channels:
        raise ConversionError(f"image: encoding {encoding!r} needs dtype {dtype} with {channels} channel(s), got {image.dtype} {image.shape}")
    if compression not in ("jpeg", "png"):
        raise ConversionError(f"compression: expected 'jpeg' or 'png', got {compression!r}")
    stored = {1: "mono8" if dtype == np.uint8 else "mono16", 3: "bgr8" if dtype == np.uint8 else "bgr16",
              4: "bgra8"}[channels]
    if compression == "jpeg" and (dtype != np.uint8 or channels == 4):
        raise ConversionError(f"encoding: jpeg stores 8-bit mono or colour images, got {encoding!r}")
    if dtype not in (np.uint8, np.uint16):
        raise ConversionError(f"encoding: {compression} stores 8/16-bit images, got {encoding!r}")
    bgr = convert_encoding(image, encoding, stored)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if compression == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if compression == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ConversionError(f"image: OpenCV could not encode a {image.shape} {image.dtype} image as {compression}")
    msg = CompressedImage()
    msg.header = header if header is not None else Header(frame_id=frame_id)
    msg.format = compression if plain_format else f"{encoding}; {compression} compressed {stored}"
    data = array.array("B")
    data.frombytes(buf.tobytes())
    msg.data = data
    return msg


# ------------------------------------------------------------------------ camera info
@dataclass
class CameraIntrinsics:
    """Calibration of one camera from a ``sensor_msgs/CameraInfo``.

    Attributes:
        K: (3, 3) float64 intrinsic matrix (pixels), camera frame z forward, x right, y down.
        D: (n,) float64 distortion coefficients of ``distortion_model``.
        R: (3, 3) float64 rectification rotation.
        P: (3, 4) float64 projection matrix of the rectified image.
        width, height: image size in pixels.
        distortion_model: e.g. ``"plumb_bob"``, ``"rational_polynomial"``, ``"equidistant"``.
        frame_id: the camera's optical frame.
    """

    K: np.ndarray
    D: np.ndarray
    R: np.ndarray
    P: np.ndarray
    width: int
    height: int
    distortion_model: str
    frame_id: str


def _field(msg: Any, name: str):
    value = getattr(msg, name, None)
    return getattr(msg, name.upper(), None) if value is None else value


def camera_info_to_intrinsics(msg: Any) -> CameraIntrinsics:
    """Intrinsics of a ``sensor_msgs/CameraInfo`` (ROS 2 ``k``/``d``/``r``/``p`` or ROS 1 upper case).

    Raises:
        ConversionError: K, R or P of the wrong size, a non-finite value (NaN, inf) in K, R, P
            or D, or a K without focal lengths (all zero: an uncalibrated camera).
    """
    k = np.asarray(_field(msg, "k"), dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise ConversionError(f"CameraInfo.k: expected 9 values, got {k.size}")
    K = k.reshape(3, 3)
    if not (K[0, 0] > 0 and K[1, 1] > 0 and K[2, 2] != 0):
        raise ConversionError(f"CameraInfo.k: expected a calibrated K with fx, fy > 0 and K[2,2] != 0, got {k.tolist()}")
    r = np.asarray(_field(msg, "r"), dtype=np.float64).reshape(-1)
    p = np.asarray(_field(msg, "p"), dtype=np.float64).reshape(-1)
    if r.size != 9:
        raise ConversionError(f"CameraInfo.r: expected 9 values, got {r.size}")
    if p.size != 12:
        raise ConversionError(f"CameraInfo.p: expected 12 values, got {p.size}")
    d = np.asarray(_field(msg, "d"), dtype=np.float64).reshape(-1)
    for name, values in (("k", k), ("r", r), ("p", p), ("d", d)):
        if not np.isfinite(values).all():
            raise ConversionError(f"CameraInfo.{name}: expected finite values, got {values.tolist()}")
    return CameraIntrinsics(K=K.copy(), D=d.copy(), R=r.reshape(3, 3).copy(), P=p.reshape(3, 4).copy(),
                            width=int(msg.width), height=int(msg.height),
                            distortion_model=str(msg.distortion_model), frame_id=str(msg.header.frame_id))
