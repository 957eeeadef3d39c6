"""Image / CompressedImage / CameraInfo <-> numpy: encodings, step padding, byte order, codecs."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from occ_ros.conversions import (
    IMAGE_ENCODINGS,
    ConversionError,
    array_to_compressed,
    array_to_image,
    camera_info_to_intrinsics,
    compressed_to_array,
    image_to_array,
    parse_compressed_format,
)

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


def to_rosbags(msg):
    typename = type(msg).__module__.split(".")[0] + "/msg/" + type(msg).__name__
    return TYPESTORE.deserialize_cdr(serialize_message(msg), typename)


def random_image(encoding, h, w, rng):
    dtype, c = IMAGE_ENCODINGS[encoding]
    shape = (h, w) if c == 1 else (h, w, c)
    if dtype.kind == "f":
        return rng.normal(0, 10, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape, dtype=np.int64).astype(dtype)


def padded_image_msg(img, encoding, pad, big):
    """An Image written row by row with ``pad`` garbage bytes per row, in the given byte order."""
    dtype, c = IMAGE_ENCODINGS[encoding]
    h, w = img.shape[:2]
    rows = [np.ascontiguousarray(img[r], dtype=dtype.newbyteorder(">" if big else "<")).tobytes() + b"\xee" * pad
            for r in range(h)]
    msg = Image(header=Header(frame_id="CAM_FRONT"), height=h, width=w, encoding=encoding,
                is_bigendian=int(big), step=w * c * dtype.itemsize + pad)
    msg.data = array.array("B", b"".join(rows))
    return msg


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(IMAGE_ENCODINGS)), st.integers(1, 7), st.integers(1, 9), st.integers(0, 9),
       st.booleans(), st.integers(0, 2**31 - 1))
def test_every_encoding_with_step_padding_and_byte_order(encoding, h, w, pad, big, seed):
    img = random_image(encoding, h, w, np.random.default_rng(seed))
    msg = padded_image_msg(img, encoding, pad, big)
    for m in (msg, to_rosbags(msg)):
        out = image_to_array(m)
        assert out.dtype == img.dtype and out.dtype.isnative
        np.testing.assert_array_equal(out, img)
    # writer: packed little endian, reads back
    written = array_to_image(img, encoding, header=Header(frame_id="CAM_FRONT"))
    assert written.step == w * img.itemsize * (1 if img.ndim == 2 else img.shape[2])
    assert written.is_bigendian == 0 and written.encoding == encoding
    np.testing.assert_array_equal(image_to_array(to_rosbags(written)), img)


def test_desired_encoding_like_cv_bridge():
    rng = np.random.default_rng(1)
    rgb = random_image("rgb8", 5, 6, rng)
    msg = array_to_image(rgb, "rgb8")
    np.testing.assert_array_equal(image_to_array(msg, "bgr8"), rgb[:, :, ::-1])
    np.testing.assert_array_equal(image_to_array(msg, "rgb8"), rgb)
    np.testing.assert_array_equal(image_to_array(msg, "mono8"), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    bgra = image_to_array(msg, "bgra8")
    assert bgra.shape == (5, 6, 4) and (bgra[:, :, 3] == 255).all()
    np.testing.assert_array_equal(bgra[:, :, :3], rgb[:, :, ::-1])
    depth = random_image("16UC1", 4, 4, rng)
    np.testing.assert_array_equal(image_to_array(array_to_image(depth, "16UC1"), "mono16"), depth)
    with pytest.raises(ConversionError, match="desired_encoding"):
        image_to_array(msg, "32FC1")
    # passthrough writer names the layout like cv_bridge
    assert array_to_image(rng.random((3, 3)).astype(np.float32)).encoding == "32FC1"
    assert array_to_image(rgb).encoding == "8UC3"


@pytest.mark.parametrize("mutate, field", [
    (lambda m: setattr(m, "encoding", "yuv422_weird"), "Image.encoding"),
    (lambda m: setattr(m, "step", 5), "Image.step"),
    (lambda m: setattr(m, "data", array.array("B", bytes(m.data)[:-3])), "Image.data"),
    (lambda m: setattr(m, "height", 7), "Image.data"),
])
def test_malformed_images_raise(mutate, field):
    msg = array_to_image(np.zeros((4, 5, 3), np.uint8), "bgr8")
    assert image_to_array(msg).shape == (4, 5, 3)
    mutate(msg)
    with pytest.raises(ConversionError, match=field.replace(".", r"\.")):
        image_to_array(msg)


def smooth_image(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 127 // (h + w))], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "mono16", "bgra8"])
def test_png_round_trip_is_exact(encoding):
    img = random_image(encoding, 17, 23, np.random.default_rng(3))
    msg = array_to_compressed(img, encoding, "png", header=Header(frame_id="CAM_BACK"))
    assert msg.format.startswith(f"{encoding}; png compressed ")
    for m in (msg, to_rosbags(msg)):
        dec = compressed_to_array(m, desired_encoding=encoding)
        assert dec.encoding == encoding and dec.source_encoding == encoding and dec.compression == "png"
        np.testing.assert_array_equal(dec.image, img)
    if encoding == "rgb8":  # passthrough gives OpenCV's BGR, labelled as such
        dec = compressed_to_array(msg)
        assert dec.encoding == "bgr8"
        np.testing.assert_array_equal(dec.image, img[:, :, ::-1])


def test_jpeg_round_trip_is_close_and_formats_parse():
    img = smooth_image(48, 64)
    msg = array_to_compressed(img, "rgb8", "jpeg", quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    assert bytes(msg.data[:2]) == b"\xff\xd8"
    dec = compressed_to_array(to_rosbags(msg), desired_encoding="rgb8")
    assert dec.image.shape == img.shape and dec.image.dtype == np.uint8
    err = np.abs(dec.image.astype(int) - img.astype(int))
    assert err.mean() < 2.0 and err.max() < 40
    plain = array_to_compressed(img[:, :, 0], "mono8", "jpeg", plain_format=True)
    assert plain.format == "jpeg"
    d2 = compressed_to_array(plain)
    assert d2.encoding == "mono8" and d2.source_encoding is None and d2.image.shape == (48, 64)
    assert parse_compressed_format("bgr8; jpeg compressed bgr8") == ("bgr8", "jpeg")
    assert parse_compressed_format("png") == (None, "png")
    assert parse_compressed_format("jpg") == (None, "jpeg")


def test_corrupt_compressed_images_raise():
    msg = array_to_compressed(smooth_image(32, 32), "bgr8", "jpeg")
    raw = bytes(msg.data)
    msg.data = array.array("B", raw[: len(raw) // 2])  # truncated
    with pytest.raises(ConversionError, match=r"CompressedImage\.data"):
        compressed_to_array(msg)
    png = array_to_compressed(smooth_image(32, 32), "bgr8", "png")
    png.data = array.array("B", bytes(png.data)[:-20])
    with pytest.raises(ConversionError, match=r"CompressedImage\.data"):
        compressed_to_array(png)
    junk = CompressedImage(format="jpeg")
    junk.data = array.array("B", b"\xff\xd8" + bytes(200) + b"\xff\xd9")
    with pytest.raises(ConversionError, match=r"CompressedImage\.data"):
        compressed_to_array(junk)
    junk.format = "tiff"
    with pytest.raises(ConversionError, match=r"CompressedImage\.format"):
        compressed_to_array(junk)
    with pytest.raises(ConversionError, match="jpeg"):
        array_to_compressed(np.zeros((4, 4), np.uint16), "mono16", "jpeg")


def camera_info():
    msg = CameraInfo(header=Header(frame_id="CAM_FRONT"), width=1600, height=900, distortion_model="plumb_bob")
    msg.k = [1266.4, 0.0, 816.3, 0.0, 1266.4, 491.5, 0.0, 0.0, 1.0]
    msg.d = [0.01, -0.02, 0.0, 0.0, 0.003]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [1266.4, 0.0, 816.3, 0.0, 0.0, 1266.4, 491.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def test_camera_info_intrinsics_and_zero_k():
    msg = camera_info()
    for m in (msg, to_rosbags(msg)):
        intr = camera_info_to_intrinsics(m)
        assert intr.K.shape == (3, 3) and intr.K.dtype == np.float64
        np.testing.assert_array_equal(intr.K, np.array(msg.k).reshape(3, 3))
        np.testing.assert_array_equal(intr.D, [0.01, -0.02, 0.0, 0.0, 0.003])
        np.testing.assert_array_equal(intr.P, np.array(msg.p).reshape(3, 4))
        assert (intr.width, intr.height, intr.distortion_model, intr.frame_id) == (1600, 900, "plumb_bob", "CAM_FRONT")
    msg.k = [0.0] * 9
    with pytest.raises(ConversionError, match=r"CameraInfo\.k"):
        camera_info_to_intrinsics(msg)


def test_hostile_compressed_images_raise_conversion_error_only():
    """Bombs, corrupt scans and format lies become ConversionError (no cv2.error, nothing decoded)."""
    from test_node_support import jpeg_bomb, png_bomb, truncated_jpeg

    good = bytes(array_to_compressed(smooth_image(64, 64), "bgr8", "jpeg").data)
    cases = {"png": png_bomb(), "jpeg": jpeg_bomb()}
    for fmt, data in cases.items():
        for kwargs in ({}, {"desired_encoding": "rgb8"}, {"desired_encoding": "rgb8", "out_hw": (96, 176)}):
            msg = CompressedImage(format=fmt)
            msg.data = array.array("B", data)
            with pytest.raises(ConversionError, match="max_image_pixels"):
                compressed_to_array(msg, **kwargs)
    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", truncated_jpeg(good))
    with pytest.raises(ConversionError, match="corrupt JPEG"):
        compressed_to_array(msg, "rgb8")
    msg.data = array.array("B", good)
    with pytest.raises(ConversionError, match="disagrees with the calibrated size"):
        compressed_to_array(msg, "rgb8", expected_hw=(900, 1600))
    msg.format = "png"
    with pytest.raises(ConversionError, match="CompressedImage.data"):
        compressed_to_array(msg)


@pytest.mark.parametrize("field, index, value", [("k", 2, float("nan")), ("k", 0, float("inf")),
                                                 ("p", 2, float("nan")), ("d", 0, float("inf"))])
def test_non_finite_camera_info_is_refused(field, index, value):
    K = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    values = {"k": list(K), "r": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], "p": K[:3] + [0.0] + K[3:6] + [0.0] + K[6:] + [0.0],
              "d": [0.0] * 5}
    values[field][index] = value
    msg = CameraInfo(width=640, height=480, distortion_model="plumb_bob", **values)
    with pytest.raises(ConversionError, match=f"CameraInfo.{field}"):
        camera_info_to_intrinsics(msg)
