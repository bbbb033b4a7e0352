"""Image validation: dtype scaling, shapes, non-finite pixels, too-small images, collections."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from bowlrp.validation import (
    LUMA,
    InvalidParameterError,
    _float_pixels,
    channel_bounds,
    check_channel_slices,
    check_channel_weights,
    check_fitted,
    check_image,
    check_images,
    check_p,
    checked_image,
    to_grey,
)
from tests.kernel_twins import assert_matches_twin


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


# ---------------------------------------------------------------------------------- shared helpers
def test_check_p_accepts_positive_numbers_and_inf_only():
    assert check_p(1) == 1.0 and check_p(np.inf) == np.inf and isinstance(check_p(np.float32(2)), float)
    for bad in (0.0, -1.0, np.nan, "max", True, None):
        with pytest.raises(InvalidParameterError, match="pooling exponent p must be"):
            check_p(bad)
    # one error for both callers' conventions: a ValueError and a TypeError
    assert issubclass(InvalidParameterError, ValueError) and issubclass(InvalidParameterError, TypeError)


def test_channel_slices_tile_the_dimensions():
    assert check_channel_slices(None, 5) == [slice(0, 5)]
    assert check_channel_slices([(0, 2), slice(2, 5)], 5) == [slice(0, 2), slice(2, 5)]
    assert check_channel_slices([slice(0, 0), slice(0, 5)], 5) == [slice(0, 0), slice(0, 5)]  # empty ok
    np.testing.assert_array_equal(channel_bounds(5, [slice(0, 2), slice(2, 5)]), [0, 2, 5])
    assert channel_bounds(5).dtype == np.int64
    with pytest.raises(ValueError, match="tile 0..5 contiguously"):
        check_channel_slices([slice(0, 2), slice(3, 5)], 5)
    with pytest.raises(ValueError, match="cover 4 dimensions, the data has 5"):
        check_channel_slices([slice(0, 4)], 5)


def test_channel_weights_are_finite_non_negative_one_per_channel():
    np.testing.assert_array_equal(check_channel_weights(None, 3), np.ones(3))
    np.testing.assert_array_equal(check_channel_weights([1, 0.5], 2), [1.0, 0.5])
    with pytest.raises(ValueError, match="expected 2 channel weights, got 3"):
        check_channel_weights([1, 1, 1], 2)
    for bad in ([1.0, -1.0], [1.0, np.nan]):
        with pytest.raises(ValueError, match="finite and non-negative"):
            check_channel_weights(bad, 2)


def test_to_grey_is_the_bt601_luma_of_real_photos():
    rgb = data.astronaut()[:32, :32] / 255.0
    np.testing.assert_array_equal(to_grey(rgb), rgb @ np.array([0.299, 0.587, 0.114]))
    assert LUMA.sum() == pytest.approx(1.0)
    rgba = np.concatenate([rgb, np.ones(rgb.shape[:2] + (1,))], axis=2)
    np.testing.assert_array_equal(to_grey(rgba), to_grey(rgb))  # alpha ignored


def _pixels_kernel(src, scale):
    out = np.empty(src.shape, np.float64)
    low, high, finite = _float_pixels(src, scale, out)
    return out, low, high, finite


def _pixels_twin(src, scale):
    """numpy: the float64 copy, divided by the scale when there is one, else its range and finiteness."""
    out = src.astype(np.float64)
    if scale > 0:
        out /= scale
        return out, 0.0, 0.0, True
    return out, out.min(), out.max(), bool(np.isfinite(out).all())


def test_float_pixels_kernel_matches_its_twin_bit_for_bit_on_real_images():
    camera, coffee = data.camera(), data.coffee()
    cases = [
        (camera.ravel(), 255.0),
        (coffee.ravel(), 255.0),
        ((camera.astype(np.uint16) * 257).ravel(), 65535.0),
        ((camera / 255.0).astype(np.float32).ravel(), 0.0),
        ((coffee / 255.0 - 0.5).ravel(), 0.0),  # negative values too
        (np.full(7, -0.0), 0.0),
    ]
    assert_matches_twin(_pixels_kernel, _pixels_twin, cases, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_pixels_kernel_flags_any_non_finite_pixel(bad, dtype):
    img = (data.camera()[:64, :64] / 255.0).astype(dtype).ravel()
    img[1000] = bad
    assert _float_pixels(img, 0.0, np.empty(img.size))[2] is False


def test_checked_image_gives_the_range_of_float_images_and_none_for_unsigned_ones():
    photo = data.astronaut() / 255.0 * 3.0 - 1.0
    out, bounds = checked_image(photo)
    assert bounds == (float(photo.min()), float(photo.max()))
    np.testing.assert_array_equal(out, photo)
    for img in (data.camera(), data.camera().astype(np.uint16)):
        out, bounds = checked_image(img)
        assert bounds is None
        np.testing.assert_array_equal(out, img / float(np.iinfo(img.dtype).max))
    half, bounds = checked_image(data.camera().astype(np.float16) / np.float16(255))
    assert half.dtype == np.float64 and bounds == (float(half.min()), float(half.max()))
    # a non-contiguous view (every other column) is read as the values it shows
    view = (data.camera() / 255.0)[:, ::2]
    np.testing.assert_array_equal(checked_image(view)[0], view)


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">f2", np.longdouble, ">u2", ">u1"])
def test_other_byte_orders_and_long_double_take_numpys_loops_with_the_same_numbers(dtype):
    """numba reads only native uint8/uint16/float32/float64 images; the others are converted by numpy
    as before (review of issue 15: a big-endian float image, as from np.load of a .npy written on
    such a machine, raised numba's TypingError)."""
    camera = data.camera()[:40, :50]
    img = (camera if np.dtype(dtype).kind == "u" else camera / 255.0).astype(dtype)
    native = img.astype(np.dtype(dtype).newbyteorder("="))
    out, bounds = checked_image(img)
    assert out.dtype == np.float64 and out.flags["C_CONTIGUOUS"]
    assert np.array_equal(out, check_image(native))
    if img.dtype.kind == "f":
        assert bounds == (float(out.min()), float(out.max()))
        bad = img.copy()
        bad[3, 4] = np.nan
        with pytest.raises(ValueError, match="1 NaN, 0 inf"):
            check_image(bad)
    else:
        assert bounds is None


def test_check_fitted_is_scikit_learns_check():
    # the fitted attributes there: no error (and none of scikit-learn's work); one missing: scikit-learn's
    # NotFittedError with its message, for one name or a list of names
    from sklearn.exceptions import NotFittedError

    from bowlrp.bow.svm import OneVsRestKernelSVC

    svm = OneVsRestKernelSVC()
    for names in ("support_vectors_", ["support_vectors_", "dual_coef_"]):
        with pytest.raises(NotFittedError, match="OneVsRestKernelSVC instance is not fitted yet"):
            check_fitted(svm, names)
    svm.support_vectors_ = np.zeros((1, 2))
    check_fitted(svm, "support_vectors_")
    with pytest.raises(NotFittedError):
        check_fitted(svm, ["support_vectors_", "dual_coef_"])
    svm.dual_coef_ = np.zeros((1, 1))
    check_fitted(svm, ["support_vectors_", "dual_coef_"])
    with pytest.raises(NotFittedError):  # decision_matrix checks every array it reads
        svm.decision_matrix(np.zeros((1, 2)))
    # scikit-learn's TypeErrors too: a class (whose properties are attributes) or an object without fit
    with pytest.raises(TypeError, match="is a class"):
        check_fitted(OneVsRestKernelSVC, "fit")
    with pytest.raises(TypeError, match="not an estimator"):
        check_fitted(type("Bag", (), {"support_vectors_": 1})(), "support_vectors_")
