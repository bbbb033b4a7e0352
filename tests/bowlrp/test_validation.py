"""Image validation: dtype scaling, shapes, non-finite pixels, too-small images, collections."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from bowlrp.validation import check_image, check_images


def test_uint8_and_uint16_are_scaled_to_unit_range():
    img = data.camera()
    out = check_image(img)
    assert out.dtype == np.float64 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, img / 255.0)
    wide = check_image(np.array([[0, 65535]], np.uint16))
    np.testing.assert_array_equal(wide, [[0.0, 1.0]])


def test_float_images_are_kept_and_copied():
    img = np.random.default_rng(0).random((5, 6)).astype(np.float32)
    out = check_image(img)
    np.testing.assert_array_equal(out, img.astype(np.float64))
    out[0, 0] = 7.0
    assert img[0, 0] != 7.0  # the caller's image is never modified


def test_rgb_and_single_channel():
    assert check_image(data.astronaut()).shape == (512, 512, 3)
    assert check_image(np.zeros((4, 5, 1))).shape == (4, 5)


@pytest.mark.parametrize(
    "image,match",
    [
        (np.zeros((3, 4, 4)), "1 or 3 channels.*alpha"),
        (np.zeros((3, 4, 2)), "1 or 3 channels"),
        (np.zeros(7), "2-D"),
        (np.zeros((2, 3, 4, 3)), "2-D"),
        (np.zeros((0, 5)), "empty"),
        (np.array([[0.0, np.nan], [np.inf, 1.0]]), r"non-finite pixels \(1 NaN, 1 inf\)"),
    ],
)
def test_shape_and_value_errors(image, match):
    with pytest.raises(ValueError, match=match):
        check_image(image)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, bool, np.complex128, object])
def test_unsupported_dtypes(dtype):
    with pytest.raises(TypeError, match="unsupported dtype"):
        check_image(np.zeros((4, 4), dtype=dtype))


def test_none_is_a_type_error():
    with pytest.raises(TypeError, match="None"):
        check_image(None)


def test_too_small_names_both_sizes():
    with pytest.raises(ValueError, match=r"image of size 15x40 .* \(16x16 pixels\)"):
        check_image(np.zeros((15, 40)), min_side=16)
    assert check_image(np.zeros((16, 16)), min_side=16).shape == (16, 16)


def test_check_images_collections():
    out = check_images([np.zeros((8, 9), np.uint8), np.ones((10, 6, 3))])
    assert [im.shape for im in out] == [(8, 9), (10, 6, 3)]
    stacked = check_images(np.zeros((3, 5, 5), np.uint8))
    assert len(stacked) == 3 and stacked[0].dtype == np.float64
    with pytest.raises(ValueError, match="empty"):
        check_images([])
    with pytest.raises(ValueError, match="stacked array"):
        check_images(np.zeros((5, 5)))
    with pytest.raises(TypeError, match="list of arrays"):
        check_images("image.png")
    with pytest.raises(ValueError, match="image 1 has non-finite"):
        check_images([np.zeros((4, 4)), np.full((4, 4), np.nan)])
    with pytest.raises(ValueError, match="image 0 of size 4x4"):
        check_images([np.zeros((4, 4))], min_side=8)
