"""Reduced-size JPEG decoding for the network input (occ_core.data.transforms.decode_image)."""

import cv2
import numpy as np
import pytest

from occ_core.data.transforms import decode_image, decode_reduction, jpeg_size, prepare_image, scale_matrix
from occ_core.errors import OccDataError


def _jpeg(image_bgr: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("hw", [(900, 1600), (360, 640), (1, 1), (901, 1601)])
def test_jpeg_size_reads_the_frame_header(hw):
    assert jpeg_size(_jpeg(np.zeros((*hw, 3), np.uint8))) == hw


def test_jpeg_size_of_other_data_is_none():
    ok, png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    assert jpeg_size(png.tobytes()) is None
    assert jpeg_size(b"") is None and jpeg_size(b"\xff\xd8\xff") is None
    assert jpeg_size(_jpeg(np.zeros((8, 8, 3), np.uint8))[:20]) is None  # header cut before the frame


@pytest.mark.parametrize("src, out, r", [((900, 1600), (96, 176), 8), ((360, 640), (96, 176), 2),
                                         ((180, 320), (96, 176), 1), ((900, 1600), (256, 704), 2),
                                         ((900, 1600), (900, 1600), 1)])
def test_reduction_is_the_largest_that_still_covers_the_input(src, out, r):
    assert decode_reduction(src, out) == r
    Hr, Wr = prepare_image(np.zeros((*src, 3), np.uint8), np.eye(3), out, (0, 0, 0), (1, 1, 1)).image.shape[1:]
    assert (-(-src[0] // r), -(-src[1] // r)) >= (Hr, Wr)


def test_pixel_transform_maps_source_pixels_onto_the_decoded_image():
    # a horizontal ramp, value = column (0..255): decoded column i at 1/8 holds the mean of
    # source columns 8i..8i+7 = 8i + 3.5, where the transform puts source u = 8i + 3.5
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (64, 1, 3))
    dec = decode_image(_jpeg(ramp, 100), out_hw=(8, 32))
    assert dec.image.shape == (8, 32, 3) and dec.source_hw == (64, 256)
    np.testing.assert_allclose(dec.pixel_transform, scale_matrix(1 / 8, 1 / 8))
    cols = np.arange(1, 31)
    u_src = (np.linalg.inv(dec.pixel_transform) @ np.stack([cols, np.zeros_like(cols), np.ones_like(cols)]))[0]
    got = dec.image[4, 1:31, 0].astype(float)
    assert np.abs(got - u_src).max() <= 1.5  # JPEG rounding; u = 8i (no half-pixel term) would be 3.5 off


def test_full_size_when_no_input_is_given_or_for_png():
    img = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    dec = decode_image(_jpeg(img), out_hw=None)
    assert dec.image.shape == (90, 160, 3) and np.array_equal(dec.pixel_transform, np.eye(3))
    np.testing.assert_array_equal(dec.image, cv2.cvtColor(cv2.imdecode(np.frombuffer(_jpeg(img), np.uint8),
                                                                          cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    ok, png = cv2.imencode(".png", img)
    dec = decode_image(png.tobytes(), out_hw=(8, 16))
    np.testing.assert_array_equal(dec.image, img[..., ::-1])  # PNG: lossless, full size, RGB
    assert np.array_equal(dec.pixel_transform, np.eye(3))


def test_undecodable_data_names_the_image():
    with pytest.raises(OccDataError, match="cam.jpg: JPEG without a readable start-of-frame"):
        decode_image(b"\xff\xd8 not a jpeg", (96, 176), where="cam.jpg")


def test_node_and_offline_paths_decode_the_same_pixels():
    """compressed_to_array (the node) and decode_image (training, occ-predict) at 1600x900."""
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import CompressedImage

    from occ_ros.conversions import compressed_to_array

    img = cv2.resize(np.random.default_rng(1).integers(0, 255, (90, 160, 3), dtype=np.uint8), (1600, 900))
    data = _jpeg(img)
    msg = CompressedImage(format="jpeg")
    msg.data = data
    node = compressed_to_array(msg, "rgb8", out_hw=(96, 176))
    offline = decode_image(data, (96, 176))
    assert node.image.shape == (113, 200, 3) and node.source_hw == (900, 1600)
    np.testing.assert_array_equal(node.image, offline.image)
    np.testing.assert_array_equal(node.pixel_transform, offline.pixel_transform)
    assert compressed_to_array(msg, "rgb8").image.shape == (900, 1600, 3)  # no input size: full size


# ------------------------------------------------------------------ hostile inputs (issue 12)
def test_bombs_are_refused_from_the_header():
    from test_node_support import jpeg_bomb, png_bomb

    png, jpg = png_bomb(), jpeg_bomb()
    assert len(png) < 120 and len(jpg) < 700
    with pytest.raises(OccDataError, match=r"cam\.png: .*100000x100000 .*max_image_pixels"):
        decode_image(png, where="cam.png")
    with pytest.raises(OccDataError, match=r"cam\.jpg: .*60000x60000 .*max_image_pixels"):
        decode_image(jpg, (96, 176), where="cam.jpg")
    with pytest.raises(OccDataError, match="max_image_pixels = 100"):
        decode_image(_jpeg(np.zeros((16, 16, 3), np.uint8)), max_pixels=100)


def test_truncated_jpeg_with_end_marker_is_an_error_not_grey():
    from test_node_support import truncated_jpeg

    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur((rng.random((180, 320, 3)) * 255).astype(np.uint8), (7, 7), 2)
    bad = truncated_jpeg(_jpeg(img))
    assert cv2.imdecode(np.frombuffer(bad, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV: grey fill, no error
    for out_hw in (None, (96, 176)):
        with pytest.raises(OccDataError, match=r"cam\.jpg: corrupt JPEG"):
            decode_image(bad, out_hw, where="cam.jpg")


def test_size_must_agree_with_the_calibration():
    data = _jpeg(np.zeros((90, 160, 3), np.uint8))
    assert decode_image(data, expected_hw=(900, 1600)).source_hw == (90, 160)  # same aspect: another resolution
    with pytest.raises(OccDataError, match="disagrees with the calibrated size 1600x1600"):
        decode_image(data, expected_hw=(1600, 1600))


def test_reduced_decode_equals_opencv_reduced_decode():
    """The strict decoder gives OpenCV's IMREAD_REDUCED pixels, so the shipped model sees what it was trained on."""
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur((rng.random((900, 1600, 3)) * 255).astype(np.uint8), (9, 9), 3)
    data = _jpeg(img, 90)
    for out_hw, flag in (((96, 176), cv2.IMREAD_REDUCED_COLOR_8), ((256, 704), cv2.IMREAD_REDUCED_COLOR_2),
                         (None, cv2.IMREAD_COLOR)):
        ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), flag), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(decode_image(data, out_hw).image, ref)
