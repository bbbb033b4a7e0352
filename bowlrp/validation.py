"""Input checks shared by every layer: images, the pooling exponent, channel layouts and weights, and
the one grey conversion.

Images are numpy arrays (H, W) gray or (H, W, 3) RGB; (H, W, 1) is taken as gray. ``uint8`` and
``uint16`` are scaled to [0, 1]; float images are used as given (expected in [0, 1]). Everything comes
back as float64 so that the numba kernels see one dtype.
"""

from __future__ import annotations

import math
import os
import sys
from numbers import Real

import numpy as np

from bowlrp.jit import jit_serial

__all__ = ["check_fitted", "check_image", "check_images", "checked_image", "checked_images", "check_p",
           "check_channel_slices", "channel_bounds", "check_channel_weights", "to_grey", "LUMA",
           "InvalidParameterError"]

#: ITU-R BT.601 luma weights: the one RGB -> grey conversion of the package
LUMA = np.array([0.299, 0.587, 0.114])


class InvalidParameterError(ValueError, TypeError):
    """A parameter of the wrong type or value (both a ValueError and a TypeError, as scikit-learn's)."""


def to_grey(rgb):
    """Luminance ``rgb @ LUMA`` of an (..., 3) array (BT.601 weights), the package's only grey conversion.

    Examples
    --------
    >>> import numpy as np
    >>> float(to_grey(np.array([1.0, 1.0, 1.0])))
    1.0
    """
    return np.asarray(rgb)[..., :3] @ LUMA


def check_fitted(estimator, attributes):
    """scikit-learn's ``check_is_fitted(estimator, attributes)`` without its cost when the fitted
    attributes are there (about 15-25 us a call: it reads the estimator's tags; a prediction or an
    explanation checks several times): when one of ``attributes`` (a name or a list of names) is
    missing, or ``estimator`` is a class or has no ``fit`` (scikit-learn's TypeErrors), scikit-learn's
    check itself runs, and raises or passes as it does."""
    names = (attributes,) if isinstance(attributes, str) else attributes
    if isinstance(estimator, type) or not hasattr(estimator, "fit") or not all(
            hasattr(estimator, name) for name in names):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(estimator, attributes)


def check_p(p):
    """Validate the p-means pooling exponent p in (0, inf] (``np.inf``: max pooling); return a float.

    Raises :class:`InvalidParameterError` (a ValueError and a TypeError) for a non-number, NaN or p <= 0.
    """
    if isinstance(p, bool) or not isinstance(p, Real):
        raise InvalidParameterError(f"pooling exponent p must be a number in (0, inf] (np.inf for max "
                                    f"pooling), got {p!r}")
    if not p > 0:  # also NaN
        raise InvalidParameterError(f"pooling exponent p must be > 0 (np.inf for max pooling), got {p!r}")
    return float(p)


def check_channel_slices(channel_slices, n_dims):
    """The channels of a vector of ``n_dims`` dimensions as a list of contiguous slices.

    ``None`` is one channel; otherwise slices (or ``(start, stop)`` pairs) must tile ``0..n_dims`` in
    order (a channel may be empty).
    """
    if channel_slices is None:
        return [slice(0, int(n_dims))]
    slices = []
    stop_prev = 0
    for s in channel_slices:
        if isinstance(s, slice):
            start, stop, step = s.start or 0, s.stop, s.step or 1
        else:
            (start, stop), step = (int(v) for v in s), 1
        if step != 1 or start != stop_prev or stop is None or stop < start:
            raise ValueError(f"channel slices must tile 0..{n_dims} contiguously, got {list(channel_slices)}")
        slices.append(slice(int(start), int(stop)))
        stop_prev = int(stop)
    if stop_prev != n_dims:
        raise ValueError(f"channel slices cover {stop_prev} dimensions, the data has {n_dims}")
    return slices


def offsets(sizes):
    """``[0, s0, s0 + s1, ...]`` as int64: where consecutive blocks of the given sizes start (and the
    total last), e.g. the column bounds of channels from their vocabulary sizes."""
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)


def channel_bounds(n_dims, slices=None):
    """Channel boundaries (n_channels + 1,) int64 of :func:`check_channel_slices`' slices."""
    checked = check_channel_slices(slices, n_dims)
    return np.array([0] + [s.stop for s in checked], dtype=np.int64)


def check_channel_weights(weights, n_channels):
    """Kernel weights of the channels as a float64 (n_channels,) array (None: all 1)."""
    if weights is None:
        return np.ones(n_channels)
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if weights.shape != (n_channels,):
        raise ValueError(f"expected {n_channels} channel weights, got {weights.shape[0]}")
    # (a few channels: Python floats cost less than two numpy reductions on every kernel call)
    if not all(math.isfinite(w) and w >= 0 for w in weights.tolist()):
        raise ValueError(f"channel weights must be finite and non-negative, got {weights.tolist()}")
    return weights

_INTEGER_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
#: the dtypes :func:`_float_pixels` reads (native byte order); others take numpy's loops
_KERNEL_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.float32, np.float64))


def check_image(image, min_side=None, name="image"):
    """Validate one image and return it as float64 (H, W) or (H, W, 3).

    Parameters
    ----------
    image : array-like
        (H, W) gray or (H, W, 3) RGB (a trailing channel axis of size 1 is dropped). uint8 / uint16
        values are scaled to [0, 1]; float16/32/64 values are kept.
    min_side : int, optional
        Smallest allowed height and width (for example the side of one descriptor support).
    name : str
        How the image is called in error messages.

    Returns
    -------
    numpy.ndarray
        A new C-contiguous float64 array.

    Raises
    ------
    TypeError
        Unsupported dtype (bool, signed integers, complex, object).
    ValueError
        Wrong number of dimensions or channels, an empty image, NaN or infinite pixels, or an image
        smaller than ``min_side``.

    Examples
    --------
    >>> import numpy as np
    >>> float(check_image(np.full((8, 8), 255, np.uint8)).max())
    1.0
    """
    return checked_image(image, min_side, name)[0]


def checked_image(image, min_side=None, name="image"):
    """:func:`check_image`, and the image's value range.

    Parameters
    ----------
    image, min_side, name
        As for :func:`check_image`.

    Returns
    -------
    checked : numpy.ndarray
        What :func:`check_image` returns.
    bounds : tuple of float or None
        ``(low, high)``, the least and greatest value of a float image; None for an image given as
        unsigned integers (scaling put it into [0, 1]). The conversion, the finiteness check and the
        range take one pass over the pixels, outside the GIL, for the native byte order's uint8,
        uint16, float32 and float64 images; numpy's loops take other dtypes (float16, long double,
        the other byte order).
    """
    if image is None:
        raise TypeError(f"{name} is None; expected a numpy array (H, W) or (H, W, 3)")
    array = np.asarray(image)
    dtype = array.dtype
    if dtype.kind == "u" and dtype.newbyteorder("=") in _INTEGER_SCALE:
        scale = _INTEGER_SCALE[dtype.newbyteorder("=")]
    elif dtype.kind == "f":
        scale = None
    else:
        raise TypeError(
            f"{name} has unsupported dtype {dtype}; use uint8, uint16 or float (values in [0, 1])"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2-D (H, W) gray or 3-D (H, W, 3) RGB, got shape {array.shape}")
    if array.ndim == 3 and array.shape[2] != 3:
        raise ValueError(
            f"{name} must have 1 or 3 channels in its last axis, got shape {array.shape}"
            + (" (drop the alpha channel of an RGBA image)" if array.shape[2] == 4 else "")
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if dtype in _KERNEL_DTYPES:  # one pass: convert (and scale), check finiteness, take the range
        out = np.empty(array.shape, np.float64)
        low, high, finite = _float_pixels(np.ascontiguousarray(array).reshape(-1), scale or 0.0,
                                          out.reshape(-1))
    else:  # numba has no float16, long double or non-native arrays: numpy's loops, the same numbers
        out = np.array(array, dtype=np.float64, order="C", copy=True)
        if scale is not None:
            out /= scale
        finite = bool(np.all(np.isfinite(out)))
        low, high = (float(out.min()), float(out.max())) if finite else (0.0, 0.0)
    if not finite:
        n_nan = int(np.isnan(out).sum())
        n_inf = int(np.isinf(out).sum())
        raise ValueError(f"{name} has non-finite pixels ({n_nan} NaN, {n_inf} inf)")
    if min_side is not None and min(height, width) < min_side:
        raise ValueError(
            f"{name} of size {height}x{width} is smaller than one descriptor support "
            f"({min_side}x{min_side} pixels); use a larger image or smaller bin sizes"
        )
    return out, (None if scale is not None else (low, high))


@jit_serial(error_model="numpy")
def _float_pixels(src, scale, out):
    """``out = src`` as float64, divided by ``scale`` when it is positive (numpy's ``astype`` then
    ``/=``: the same numbers), in one pass. Returns (low, high, finite) of a float image: its least and
    greatest value and whether every value is finite (``(0.0, 0.0, True)`` when scaling)."""
    n = src.shape[0]
    if scale > 0.0:
        for i in range(n):
            out[i] = np.float64(src[i]) / scale
        return 0.0, 0.0, True
    low, high = np.inf, -np.inf
    finite = True
    for i in range(n):
        v = np.float64(src[i])
        out[i] = v
        if not (v - v == 0.0):  # NaN or +-inf
            finite = False
        low = v if v < low else low
        high = v if v > high else high
    return low, high, finite


def check_images(images, min_side=None):
    """Validate a non-empty collection of images; return a list of float64 arrays.

    Parameters
    ----------
    images : list of array-like or numpy.ndarray
        A list/tuple of images (sizes may differ), or one stacked array (N, H, W) or (N, H, W, 3).
    min_side : int, optional
        Passed to :func:`check_image` for every image.

    Returns
    -------
    list of numpy.ndarray

    Examples
    --------
    >>> import numpy as np
    >>> [im.shape for im in check_images([np.zeros((8, 9)), np.zeros((10, 6, 3), np.uint8)])]
    [(8, 9), (10, 6, 3)]
    """
    return checked_images(images, min_side)[0]


def checked_images(images, min_side=None, first=0):
    """:func:`check_images`, and the value range of each image.

    Parameters
    ----------
    images, min_side
        As for :func:`check_images`.
    first : int, default=0
        The index in a larger batch of the first image (error messages name ``image {first + k}``).

    Returns
    -------
    checked : list of numpy.ndarray
    bounds : list of tuple of float or None
        Each image's :func:`checked_image` range.
    """
    if images is None:
        raise TypeError("images is None; expected a list of images")
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ValueError(
                "a stacked array of images must be (N, H, W) or (N, H, W, 3), "
                f"got shape {images.shape}; wrap a single image in a list"
            )
        images = list(images)
    elif isinstance(images, (str, bytes, dict)) or not hasattr(images, "__iter__"):
        raise TypeError(f"images must be a list of arrays, got {type(images).__name__}")
    images = list(images)
    if len(images) == 0:
        raise ValueError("images is empty; at least one image is required")
    pairs = [checked_image(im, min_side=min_side, name=f"image {first + i}") for i, im in enumerate(images)]
    return [image for image, _ in pairs], [bounds for _, bounds in pairs]


#: the project's packages: a warning about the user's input names the first frame outside them
_OWN_DIRS = tuple(os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + name + os.sep
                  for name in ("bowlrp", "nets"))


def user_stacklevel():
    """The ``stacklevel`` for ``warnings.warn``, called right here, that names the first caller outside
    ``bowlrp`` and ``nets``: the user's line, however many library frames (threads' parts, wrappers)
    lie between (Python 3.12's ``skip_file_prefixes``, for 3.11). Threads: the stack is the calling
    thread's."""
    frame, level = sys._getframe(1), 1  # the caller of user_stacklevel: warnings.warn's caller
    while frame is not None and frame.f_code.co_filename.startswith(_OWN_DIRS):
        frame, level = frame.f_back, level + 1
    return level

