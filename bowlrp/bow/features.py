"""Dense local features: the :class:`DenseSIFT` estimator and the :class:`LocalFeatures` it returns.

The pieces live in small modules: :mod:`bowlrp.bow.sift_grid` (frame and bin geometry, colour planes),
:mod:`bowlrp.bow.sift_numba` (our filter-based dense SIFT, vlfeat's ``dsift`` way, default) and
:mod:`bowlrp.bow.sift_opencv` (OpenCV's SIFT on the same frames). Smoothing defaults to
``sqrt((B / 6)^2 - 0.25)`` per bin size (the rule of vlfeat's ``phow``). Colour variants compute one
128-dim descriptor per plane and concatenate them (384 dims); each block is normalised (and zeroed
when flat) on its own.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from numbers import Real

import numba
import numpy as np
from sklearn.base import BaseEstimator

from bowlrp.bow.sift_grid import (
    COLORS,
    color_planes,
    default_smoothing,
    frame_geometry,
    grid_starts,  # noqa: F401  (bowlrp.bow.grid_check imports it from here)
)
from bowlrp.bow.sift_numba import (
    orientation_fields,
    pooled_descriptors,
    streamed_descriptors,
)
from bowlrp.bow.sift_opencv import opencv_descriptors
from bowlrp.jit import limited_threads, parallel_map, use_parallel
from bowlrp.validation import checked_image, checked_images, user_stacklevel

__all__ = ["LocalFeatures", "DenseSIFT"]

MAX_ABS_PIXEL = 1e100  # far below the float64 overflow of squared gradients (~1e154)
_BACKENDS = ("numba", "opencv")
# operations per pixel and plane of an extraction (smoothing, orientation, pooling): the work
# estimate that decides whether a batch runs on threads (bowlrp.jit.use_parallel)
_WORK_PER_PIXEL = 100
# plane pixels per chunk of equal-shaped images extracted together (see DenseSIFT.extract_many). Not
# smaller: a chunk's descriptors are one array, and below numpy's 4 MiB threshold for huge pages its
# first touch takes a page fault per 4 KiB (2^16 pixels, one 256 x 256 image at step 4: ~900 faults,
# 1.7x slower per image when the results are kept, as extract_many's are)
_CHUNK_PIXELS = 1 << 18


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """The local features of one image.

    Attributes
    ----------
    descriptors : numpy.ndarray
        (M, D) float64; each 128-dim block is unit L2 norm (after clipping at 0.2) or all-zero (flat).
    centers : numpy.ndarray
        (M, 2) float64, (y, x) of each support centre in pixel units (pixel k at coordinate k).
    support : numpy.ndarray
        (M,) int64, side ``A`` of each square support (``A = 4 * bin size``).
    channel : numpy.ndarray
        (M,) int64, channel index of each feature (channel c = the c-th bin size).
    image_shape : tuple of int
        (H, W) of the image.
    """

    descriptors: np.ndarray
    centers: np.ndarray
    support: np.ndarray
    channel: np.ndarray
    image_shape: tuple

    def __post_init__(self):
        # Coerce to the documented dtypes (no copy when they already match).
        for name, dtype in (
            ("descriptors", np.float64),
            ("centers", np.float64),
            ("support", np.int64),
            ("channel", np.int64),
        ):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype))
        m = self.descriptors.shape[0]
        if self.descriptors.ndim != 2:
            raise ValueError(f"descriptors must be 2-D (M, D), got shape {self.descriptors.shape}")
        if self.centers.shape != (m, 2) or self.support.shape != (m,) or self.channel.shape != (m,):
            raise ValueError(
                f"inconsistent feature arrays: descriptors {self.descriptors.shape}, centers "
                f"{self.centers.shape}, support {self.support.shape}, channel {self.channel.shape}"
            )
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))

    @classmethod
    def _trusted(cls, descriptors, centers, support, channel, image_shape):
        """Features the extractor itself computed, without ``__post_init__``'s coercion and checks: the
        caller guarantees the documented dtypes and shapes and an ``image_shape`` tuple of ints (an
        extraction builds one object per image; the checks cost as much as a small image's kernels)."""
        self = object.__new__(cls)
        for name, value in (("descriptors", descriptors), ("centers", centers), ("support", support),
                            ("channel", channel), ("image_shape", image_shape)):
            object.__setattr__(self, name, value)
        return self

    def __len__(self):
        return self.descriptors.shape[0]

    def boxes(self):
        """Support squares as (M, 4) int64 ``y0, x0, y1, x1``, half-open, clipped to the image.

        Returns
        -------
        numpy.ndarray
            Row m covers pixels ``[y0, y1) x [x0, x1)``; the explanation spreads a feature's
            relevance evenly over exactly these pixels.
        """
        half = (self.support.astype(np.float64) - 1.0) / 2.0
        y0 = np.rint(self.centers[:, 0] - half).astype(np.int64)
        x0 = np.rint(self.centers[:, 1] - half).astype(np.int64)
        height, width = self.image_shape
        out = np.empty((len(self), 4), np.int64)
        out[:, 0] = np.clip(y0, 0, height)
        out[:, 1] = np.clip(x0, 0, width)
        out[:, 2] = np.clip(y0 + self.support, 0, height)
        out[:, 3] = np.clip(x0 + self.support, 0, width)
        return out



class DenseSIFT(BaseEstimator):
    """Dense SIFT descriptors on a regular grid, for one or several bin sizes.

    Parameters
    ----------
    step : int, default=4
        Grid step in pixels.
    bin_sizes : tuple of int, default=(4,)
        Spatial bin sizes ``B``; each gives one channel with supports of side ``A = 4 B``.
    color : {"gray", "opponent", "rgb"}, default="gray"
        Gray descriptors (128 dims) or one descriptor per colour plane, concatenated (384 dims).
    backend : {"numba", "opencv"}, default="numba"
        Our filter-based dense SIFT, or OpenCV's SIFT computed on the same frames with angle 0.
    smoothing : float or None, default=None
        Gaussian sigma (pixels) applied before the gradients; None uses ``sqrt((B / 6)^2 - 0.25)``
        per bin size (vlfeat's ``phow`` rule).
    contrast_threshold : float, default=0.005
        Frames whose mean gradient magnitude over the support (image in [0, 1]) is below this get an
        all-zero descriptor.
    n_jobs : int or None, default=None
        Threads used by :meth:`extract_many` (None or ``-1``: numba's thread count).
    verbose : bool, default=False
        Print progress of :meth:`extract_many` to stderr.

    Examples
    --------
    >>> from skimage import data
    >>> sift = DenseSIFT(step=8, bin_sizes=(4, 8))
    >>> feats = sift.extract(data.camera()[:64, :64])
    >>> feats.descriptors.shape, sorted(set(feats.support.tolist()))
    ((74, 128), [16, 32])
    """

    def __init__(
        self,
        step=4,
        bin_sizes=(4,),
        color="gray",
        backend="numba",
        smoothing=None,
        contrast_threshold=0.005,
        n_jobs=None,
        verbose=False,
    ):
        self.step = step
        self.bin_sizes = bin_sizes
        self.color = color
        self.backend = backend
        self.smoothing = smoothing
        self.contrast_threshold = contrast_threshold
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ------------------------------------------------------------------ parameters
    def _checked_bin_sizes(self):
        sizes = self.bin_sizes
        if isinstance(sizes, (int, np.integer)):
            sizes = (sizes,)
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise TypeError(f"bin_sizes must be an int or a sequence of ints, got {sizes!r}") from None
        if not sizes:
            raise ValueError("bin_sizes is empty; give at least one bin size")
        for b in sizes:
            if not isinstance(b, (int, np.integer)) or isinstance(b, bool) or b < 1:
                raise ValueError(f"bin sizes must be positive integers, got {self.bin_sizes!r}")
        return tuple(int(b) for b in sizes)

    def _validate_params(self):
        sizes = self._checked_bin_sizes()
        if not isinstance(self.step, (int, np.integer)) or isinstance(self.step, bool) or self.step < 1:
            raise ValueError(f"step must be a positive integer, got {self.step!r}")
        if self.color not in COLORS:
            raise ValueError(f"color must be one of {COLORS}, got {self.color!r}")
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
        if self.smoothing is not None and not _is_finite_nonnegative(self.smoothing):
            raise ValueError(f"smoothing must be None or a finite float >= 0, got {self.smoothing!r}")
        thr = self.contrast_threshold
        if not _is_finite_nonnegative(thr):
            raise ValueError(f"contrast_threshold must be a finite float >= 0, got {thr!r}")
        return sizes

    @property
    def n_channels(self):
        """Number of feature channels (one per bin size)."""
        return len(self._checked_bin_sizes())

    @property
    def descriptor_dim(self):
        """Descriptor length: 128 for gray, 384 for the 3-plane colour variants."""
        return 128 if self.color == "gray" else 384

    def fit(self, images=None, y=None):
        """Check the parameters (the extractor learns nothing). Returns self."""
        self._validate_params()
        self.n_channels_ = self.n_channels
        self.descriptor_dim_ = self.descriptor_dim
        return self

    # ------------------------------------------------------------------ extraction
    def extract(self, image):
        """Dense descriptors of one image.

        Parameters
        ----------
        image : array-like
            (H, W) or (H, W, 3), uint8 / uint16 or float in [0, 1]; each side at least
            ``4 * max(bin_sizes)`` pixels.

        Returns
        -------
        LocalFeatures
            Channel 0 (first bin size) first; within a channel, frames in row-major grid order.
        """
        sizes = self._validate_params()
        checked, bounds = checked_image(image, min_side=4 * max(sizes))
        _check_ranges([bounds])
        return self._extract_batch([checked], sizes)[0]

    def _extract_batch(self, images, sizes):
        """Features of checked images that share one shape: each kernel runs once for all of them.

        The descriptors of image i are ``descriptors[i]`` of one (N, M, D) array (C-contiguous rows
        of it, the same numbers as one image at a time); the geometry is cached per shape.
        """
        height, width = images[0].shape[:2]
        bounds, centers, support, channel = frame_geometry(height, width, sizes, self.step)
        planes = [color_planes(image, self.color) for image in images]
        n_planes = planes[0].shape[0]
        planes = planes[0] if len(images) == 1 else np.concatenate(planes)
        # One output array for all channels and images, filled in place (descriptors dominate the memory).
        descriptors = np.empty((len(images), int(bounds[-1]), 128 * n_planes), np.float64)
        threshold = float(self.contrast_threshold)
        sigmas = [default_smoothing(b) if self.smoothing is None else float(self.smoothing) for b in sizes]
        staged = []  # bin sizes computed image by image: OpenCV's, or sharing a smoothing
        for c, (bin_size, sigma) in enumerate(zip(sizes, sigmas)):
            if self.backend == "numba" and sigmas.count(sigma) == 1:
                streamed_descriptors(planes, len(images), bin_size, self.step, sigma, threshold, descriptors,
                                     row0=int(bounds[c]))
            else:
                staged.append(c)
        for i in range(len(images) if staged else 0):
            own = planes[i * n_planes : (i + 1) * n_planes]
            fields = {}  # sigma -> orientation fields: bin sizes with the same smoothing share them
            for c in staged:
                bin_size, sigma = sizes[c], sigmas[c]
                rows = descriptors[i, bounds[c] : bounds[c + 1]]
                if self.backend == "opencv":
                    rows[:] = opencv_descriptors(own, bin_size, self.step, sigma, threshold, self.color)[0]
                    continue
                if sigma not in fields:
                    fields[sigma] = orientation_fields(own, sigma)
                pooled_descriptors(fields[sigma], bin_size, self.step, threshold, out=rows)
        # the geometry is cached per shape: every result gets its own copy
        shape = (int(height), int(width))
        return [LocalFeatures._trusted(d, centers.copy(), support.copy(), channel.copy(), shape)
                for d in descriptors]

    def extract_many(self, images, n_jobs=None):
        """Dense descriptors of several images (sizes may differ), on threads for large batches.

        Images of the same shape that follow each other are extracted together (one kernel call per
        bin size for a chunk of them), which saves most of the per-image overhead on small images.

        Parameters
        ----------
        images : list of array-like or numpy.ndarray
            Images as accepted by :meth:`extract`, or a stacked (N, H, W[, 3]) array.
        n_jobs : int or None
            Threads (``-1``: all of numba's); overrides ``self.n_jobs`` when given. None uses numba's
            current thread count when the batch is large enough (:func:`bowlrp.jit.parallel_map`).

        Returns
        -------
        list of LocalFeatures
            One per image, in order; the same numbers whatever the number of threads or chunks.
        """
        sizes = self._validate_params()
        checked = self._checked_images(images, sizes)
        with limited_threads(self._thread_count(n_jobs), user_api="openmp"):
            return self._extract_checked(checked, sizes, _Progress(len(checked), self.verbose))

    def _thread_count(self, n_jobs):
        """numba threads for an extraction: ``n_jobs``, else ``self.n_jobs``; None (all of numba's,
        the default) for None or a negative count."""
        n_jobs = self.n_jobs if n_jobs is None else n_jobs
        return None if n_jobs is None or n_jobs < 0 else n_jobs

    def _checked_images(self, images, sizes):
        """The images as checked float64 arrays (:func:`~bowlrp.validation.checked_images`; a value out of
        range raises or warns here)."""
        if not isinstance(images, np.ndarray):
            images = list(images)  # checked_images takes iterables: a sequence may only have __getitem__
        checked, ranges = checked_images(images, min_side=4 * max(sizes))
        _check_ranges(ranges)
        return checked

    def _checked_part(self, images, first, sizes):
        """Images ``first, first + 1, ...`` of a batch checked as :meth:`_checked_images` checks them
        (named by their index in the batch), and their value ranges, for :func:`_check_ranges` to
        judge once the whole batch's are known (the part runs on a thread of its own)."""
        return checked_images(images, min_side=4 * max(sizes), first=first)

    def _work(self, images):
        """Estimated operations of extracting checked ``images`` (:func:`bowlrp.jit.use_parallel`)."""
        planes = 1 if self.color == "gray" else 3
        return _WORK_PER_PIXEL * planes * sum(im.shape[0] * im.shape[1] for im in images)

    def _extract_checked(self, checked, sizes, progress):
        """The features of checked images, in chunks of equal-shaped images, on threads when it pays
        (serially inside a :func:`~bowlrp.jit.parallel_map` worker)."""
        planes = 1 if self.color == "gray" else 3
        work = self._work(checked)

        def extract(chunk):
            out = self._extract_batch(chunk, sizes)
            progress.step(len(chunk))
            return out

        threads = numba.get_num_threads() if use_parallel(work) else 1
        chunks = _same_shape_chunks(checked, planes, threads)
        # the extraction uses no BLAS: the limit is only numba's thread count for this call
        return [f for part in parallel_map(extract, chunks, work) for f in part]


def _same_shape_chunks(images, n_planes, threads):
    """Runs of consecutive equal-shaped images, cut into chunks of at most 2^18 plane pixels
    (bounded scratch memory) and, on threads, into about four chunks per thread."""
    chunks = []
    start = 0
    for k in range(1, len(images) + 1):
        if k < len(images) and images[k].shape == images[start].shape:
            continue
        height, width = images[start].shape[:2]
        size = max(1, _CHUNK_PIXELS // (n_planes * height * width))
        if threads > 1:
            size = max(1, min(size, -(-(k - start) // (4 * threads))))
        chunks += [images[a : min(a + size, k)] for a in range(start, k, size)]
        start = k
    return chunks


def _is_finite_nonnegative(value):
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _check_ranges(ranges):
    """The error for the first image out of the accepted range, else one warning for the first image
    clearly outside [0, 1] (``ranges``: those :func:`~bowlrp.validation.checked_image` gives, of the
    whole batch, in order)."""
    warned = False
    for i, bounds in enumerate(ranges):
        if bounds is None:
            continue
        low, high = bounds
        if max(-low, high) > MAX_ABS_PIXEL:
            raise ValueError(
                f"image {i} has pixel values up to {max(-low, high):.3g} in magnitude; DenseSIFT "
                f"accepts at most {MAX_ABS_PIXEL:.0e} (expected range [0, 1])"
            )
        if not warned and (low < -1.0 or high > 2.0):  # noise or filtering may overshoot a bit
            warnings.warn(
                f"image {i} has values in [{low:.3g}, {high:.3g}]; DenseSIFT expects float images in "
                "[0, 1] (uint8 images are scaled automatically): divide by 255",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
            warned = True


class _Progress:
    """Minimal progress line on stderr (every ~10 % and at the end) when verbose."""

    def __init__(self, total, verbose):
        self.total = total
        self.verbose = bool(verbose)
        self.done = 0
        self.start = time.perf_counter()
        self.every = max(1, total // 10)
        self._lock = threading.Lock()  # images may finish on several threads

    def step(self, n=1):
        if not self.verbose:
            return
        with self._lock:
            before = self.done
            self.done += n
            if self.done // self.every > before // self.every or self.done == self.total:
                elapsed = time.perf_counter() - self.start
                print(f"[DenseSIFT] {self.done}/{self.total} images ({elapsed:.1f} s)", file=sys.stderr,
                      flush=True)
