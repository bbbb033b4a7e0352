"""Dense local features: SIFT descriptors on a regular grid, with the geometry the explanation needs.

Geometry
--------
A frame with bin size ``B`` has a square support of side ``A = 4 B`` pixels, split into 4 x 4 spatial
bins of ``B x B`` pixels. Frames sit on a regular grid with step ``step`` pixels (the grid is centred in
the image) and only frames whose support lies entirely inside the image are kept. Pixel ``k`` has the
coordinate ``k``, so a support covering rows ``y0 .. y0 + A - 1`` has its centre at ``y0 + (A - 1) / 2``.

Descriptor (``backend="numba"``, the filter-based dense SIFT of vlfeat's ``dsift``)
------------------------------------------------------------------------------------
Gaussian smoothing (``smoothing``; by default ``sqrt((B / 6)^2 - 0.25)`` per bin size, the rule of
vlfeat's ``phow``), ``np.gradient`` gradients, 8 orientation planes with linear interpolation in angle
(fixed orientation: angle 0 points along +x, angles grow counter-clockwise with y up, as in OpenCV),
spatial triangular (bilinear) binning: bin ``(i, j)`` weighs pixel ``(y, x)`` by
``(1 - |y - cy_i| / B)+ (1 - |x - cx_j| / B)+`` around its bin centre ``(cy_i, cx_j)``. As in SIFT the
outer bins' triangles reach ``B / 2`` pixels beyond the support; pixels outside the image count as zero.
Then the descriptor is L2-normalised, clipped at 0.2 and L2-normalised again. Its *energy*, the sum of
the raw histogram divided by ``A^2`` (the mean gradient magnitude over the support, image in [0, 1]),
decides flat patches: below ``contrast_threshold`` the descriptor is exactly all-zero.

Colour variants compute one 128-dim descriptor per plane and concatenate them (384 dims); each block is
normalised (and zeroed when flat) on its own. ``"opponent"``: O1 = (R - G)/sqrt 2,
O2 = (R + G - 2B)/sqrt 6, O3 = (R + G + B)/sqrt 3; ``"rgb"``: R, G, B. Gray images given to a colour
extractor are replicated into 3 channels; RGB images given to the gray extractor are converted with the
ITU-R 601 luma weights (those of OpenCV's ``cvtColor``).

``backend="opencv"`` computes ``cv2.SIFT.compute`` on the same frames (keypoint angle 0, size ``A / 6``
because OpenCV's descriptor covers 4 bins of 3 * size / 2 = 6 * size pixels), renormalised to unit L2
norm, with flat patches zeroed by the same energy rule.
"""

from __future__ import annotations

import functools
import math
import sys
import time
import warnings
from dataclasses import dataclass
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator

from bowlrp.bow import _sift_kernels as _k
from bowlrp.validation import check_image, check_images, to_grey

__all__ = ["LocalFeatures", "DenseSIFT"]

DESCRIPTOR_CLIP = 0.2
PARALLEL_MIN_PIXELS = 1 << 19  # images at least this large use the parallel kernels
MAX_ABS_PIXEL = 1e100  # far below the float64 overflow of squared gradients (~1e154)
_COLORS = ("gray", "opponent", "rgb")
_BACKENDS = ("numba", "opencv")
_OPPONENT = np.array(
    [
        [1.0 / math.sqrt(2.0), -1.0 / math.sqrt(2.0), 0.0],
        [1.0 / math.sqrt(6.0), 1.0 / math.sqrt(6.0), -2.0 / math.sqrt(6.0)],
        [1.0 / math.sqrt(3.0), 1.0 / math.sqrt(3.0), 1.0 / math.sqrt(3.0)],
    ]
)
# Value range of each opponent plane for RGB in [0, 1]: how OpenCV's uint8 input is scaled.
_OPPONENT_RANGE = np.array(
    [[-1 / math.sqrt(2), 1 / math.sqrt(2)], [-2 / math.sqrt(6), 2 / math.sqrt(6)], [0.0, math.sqrt(3)]]
)


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


# ------------------------------------------------------------------------------------------- geometry
def triangle_weights(bin_size):
    """Taps of the spatial triangular filter of one bin starting at pixel 0.

    Returns ``(weights, offset)``: pixel ``offset + t`` gets ``weights[t]`` =
    ``1 - |d - (B - 1) / 2| / B`` (positive part), ``d`` its offset from the bin start.
    """
    d = np.arange(-bin_size, 2 * bin_size)
    w = 1.0 - np.abs(2.0 * d - (bin_size - 1)) / (2.0 * bin_size)
    keep = w > 0
    return np.ascontiguousarray(w[keep]), int(d[keep][0])


def grid_starts(length, support, step):
    """First pixel of every support along one axis: a grid of ``step`` centred in ``length`` pixels."""
    if length < support:
        return np.zeros(0, np.int64)
    margin = length - support
    first = (margin % step) // 2
    return np.arange(first, margin + 1, step, dtype=np.int64)


def bin_layout(frame_starts, bin_size):
    """Distinct bin starts used by the frames and, per frame, the index of each of its 4 bins."""
    all_starts = frame_starts[:, None] + bin_size * np.arange(4)[None, :]
    starts, index = np.unique(all_starts, return_inverse=True)
    return starts.astype(np.int64), index.reshape(all_starts.shape).astype(np.int64)


@functools.lru_cache(maxsize=64)
def _frame_layout(height, width, bin_size, step):
    """Grid and bin layout of one image shape and bin size, cached (read-only arrays).

    Images of a data set usually share their shape; rebuilding this per call (``np.unique`` twice)
    cost ~3 % of an extraction of a 256 x 256 image.
    """
    support = 4 * bin_size
    ys = grid_starts(height, support, step)
    xs = grid_starts(width, support, step)
    row_starts, row_index = bin_layout(ys, bin_size)
    col_starts, col_index = bin_layout(xs, bin_size)
    weights, offset = triangle_weights(bin_size)
    arrays = (ys, xs, row_starts, row_index, col_starts, col_index, weights)
    for a in arrays:
        a.flags.writeable = False  # shared between calls and threads
    return (*arrays, offset)


def gaussian_taps(sigma):
    """Normalised 1-D Gaussian taps (radius ceil(4 sigma)); ``[1.0]`` when sigma is 0."""
    if sigma <= 0:
        return np.ones(1)
    radius = max(1, int(math.ceil(4.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def default_smoothing(bin_size):
    """vlfeat ``phow``'s smoothing for a bin size: sqrt((B / 6)^2 - 0.25), at least 0."""
    return math.sqrt(max((bin_size / 6.0) ** 2 - 0.25, 0.0))


def color_planes(image, color):
    """Split a checked float image into the planes described by ``color`` (list of (H, W) arrays)."""
    if color == "gray":
        if image.ndim == 2:
            return [image]
        return [np.ascontiguousarray(to_grey(image))]
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    if color == "rgb":
        return [np.ascontiguousarray(rgb[:, :, c]) for c in range(3)]
    opp = rgb @ _OPPONENT.T
    return [np.ascontiguousarray(opp[:, :, c]) for c in range(3)]


# ------------------------------------------------------------------------------------------- backends
def orientation_fields(planes, sigma, parallel=True):
    """Smooth each plane with a Gaussian of ``sigma`` and split its gradient into orientation bins.

    Returns one ``(bin0, w0, w1)`` triple per plane (see :func:`bowlrp.bow._sift_kernels.orientation_field`).
    Bin sizes that share the smoothing share these fields.
    """
    smooth, orient = _k.KERNELS[bool(parallel)][:2]
    taps = gaussian_taps(sigma)
    fields = []
    tmp = smoothed = None
    for plane in planes:
        if taps.size > 1:
            if tmp is None:
                tmp = np.empty(plane.shape, np.float64)
                smoothed = np.empty(plane.shape, np.float64)
            smooth(plane, taps, tmp, smoothed)
            source = smoothed
        else:
            source = plane
        field = _k.empty_orientation_field(plane.shape)
        orient(source, *field)
        fields.append(field)
    return fields


def pooled_descriptors(fields, bin_size, step, threshold, parallel=True, out=None):
    """Spatial binning and normalisation of precomputed orientation fields for one bin size.

    Returns ``(descriptors (M, 128 * P), energy (M, P), y_starts, x_starts)``, frames in row-major
    order of the grid (``y_starts`` x ``x_starts``). ``out``, if given, is a C-contiguous
    (M, 128 * P) float64 array that receives the descriptors (saves a copy of a large array).
    """
    pool_x, pool_y, assemble = _k.KERNELS[bool(parallel)][2:]
    height, width = fields[0][0].shape
    support = 4 * bin_size
    ys, xs, row_starts, row_index, col_starts, col_index, weights, offset = _frame_layout(
        int(height), int(width), int(bin_size), int(step)
    )
    n_frames = ys.size * xs.size
    shape = (n_frames, 128 * len(fields))
    if out is None:
        out = np.empty(shape, np.float64)
    elif out.shape != shape or out.dtype != np.float64 or not out.flags["C_CONTIGUOUS"]:
        raise ValueError(f"out must be a C-contiguous float64 array {shape}, got {out.shape}")
    energy = np.empty((len(fields), n_frames), np.float64)
    if n_frames == 0:
        return out, energy.T, ys, xs
    cols = np.empty((height, col_starts.size, _k.N_ORIENTATIONS), np.float64)
    pooled = np.empty((row_starts.size, col_starts.size, _k.N_ORIENTATIONS), np.float64)
    area = float(support * support)
    for p, (bin0, w0, w1) in enumerate(fields):
        pool_x(bin0, w0, w1, col_starts, weights, offset, cols)
        pool_y(cols, row_starts, weights, offset, pooled)
        block = out if len(fields) == 1 else out[:, 128 * p : 128 * (p + 1)]
        assemble(pooled, row_index, col_index, area, threshold, DESCRIPTOR_CLIP, block, energy[p])
    return out, energy.T, ys, xs


def numba_descriptors(planes, bin_size, step, sigma, threshold, parallel=True, out=None):
    """Dense SIFT of each plane for one bin size with the numba kernels (smoothing ``sigma``).

    Returns ``(descriptors (M, 128 * P), energy (M, P), y_starts, x_starts)``; see
    :func:`pooled_descriptors`.
    """
    fields = orientation_fields(planes, sigma, parallel)
    return pooled_descriptors(fields, bin_size, step, threshold, parallel, out)


def _to_uint8(plane, low, high):
    scaled = (plane - low) * (255.0 / (high - low))
    return np.ascontiguousarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def opencv_descriptors(planes, bin_size, step, sigma, threshold, color, parallel=True):
    """OpenCV's SIFT on the same frames as :func:`numba_descriptors` (angle 0, size A / 6).

    The energy (flat-patch rule) is the numba backend's, so both backends zero the same frames.
    """
    import cv2

    _, energy, ys, xs = numba_descriptors(planes, bin_size, step, sigma, threshold, parallel)
    support = 4 * bin_size
    half = (support - 1) / 2.0
    centers_y = np.repeat(ys + half, xs.size)
    centers_x = np.tile(xs + half, ys.size)
    # OpenCV's descriptor spans 4 bins of SIFT_DESCR_SCL_FCTR (3) * size / 2 pixels: 6 * size = A.
    size = support / 6.0
    keypoints = [cv2.KeyPoint(float(x), float(y), size, 0.0) for y, x in zip(centers_y, centers_x)]
    sift = cv2.SIFT_create()
    out = np.zeros((len(keypoints), 128 * len(planes)), np.float64)
    for p, plane in enumerate(planes):
        if color == "opponent":
            low, high = _OPPONENT_RANGE[p]
        else:
            low, high = 0.0, 1.0
        if not keypoints:
            break
        returned, desc = sift.compute(_to_uint8(plane, low, high), keypoints)
        if desc is None or len(returned) != len(keypoints):
            raise RuntimeError(
                f"OpenCV returned {0 if desc is None else len(returned)} descriptors for "
                f"{len(keypoints)} keypoints"
            )
        desc = desc.astype(np.float64)
        norms = np.linalg.norm(desc, axis=1)
        flat = (energy[:, p] < threshold) | (norms <= 0)
        desc[~flat] /= norms[~flat, None]
        desc[flat] = 0.0
        out[:, 128 * p : 128 * (p + 1)] = desc
    return out, energy, ys, xs


# ------------------------------------------------------------------------------------------ estimator
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
        Threads used by :meth:`extract_many` (joblib; ``-1`` = all cores).
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
        if self.color not in _COLORS:
            raise ValueError(f"color must be one of {_COLORS}, got {self.color!r}")
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

    @property
    def min_image_side(self):
        """Smallest image side that holds one descriptor support of the largest bin size."""
        return 4 * max(self._checked_bin_sizes())

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
        checked = check_image(image, min_side=4 * max(sizes))
        _check_value_range([checked])
        return self._extract_checked(checked, sizes, parallel=_use_parallel(checked))

    def _extract_checked(self, image, sizes, parallel):
        planes = color_planes(image, self.color)
        height, width = image.shape[:2]
        grids = [(grid_starts(height, 4 * b, self.step), grid_starts(width, 4 * b, self.step)) for b in sizes]
        counts = [ys.size * xs.size for ys, xs in grids]
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # One output array for all channels, filled in place (descriptors dominate the memory).
        descriptors = np.empty((int(bounds[-1]), 128 * len(planes)), np.float64)
        centers = np.empty((int(bounds[-1]), 2), np.float64)
        support = np.empty(int(bounds[-1]), np.int64)
        channel = np.empty(int(bounds[-1]), np.int64)
        threshold = float(self.contrast_threshold)
        fields = {}  # sigma -> orientation fields: bin sizes with the same smoothing share them
        for c, (bin_size, (ys, xs)) in enumerate(zip(sizes, grids)):
            sigma = default_smoothing(bin_size) if self.smoothing is None else float(self.smoothing)
            rows = slice(bounds[c], bounds[c + 1])
            if self.backend == "numba":
                if sigma not in fields:
                    fields[sigma] = orientation_fields(planes, sigma, parallel)
                pooled_descriptors(
                    fields[sigma], bin_size, self.step, threshold, parallel, out=descriptors[rows]
                )
            else:
                descriptors[rows] = opencv_descriptors(
                    planes, bin_size, self.step, sigma, threshold, self.color, parallel
                )[0]
            a = 4 * bin_size
            half = (a - 1) / 2.0
            centers[rows, 0] = np.repeat(ys + half, xs.size)
            centers[rows, 1] = np.tile(xs + half, ys.size)
            support[rows] = a
            channel[rows] = c
        return LocalFeatures(descriptors, centers, support, channel, (height, width))

    def extract_many(self, images, n_jobs=None):
        """Dense descriptors of several images (sizes may differ), optionally on joblib threads.

        Parameters
        ----------
        images : list of array-like or numpy.ndarray
            Images as accepted by :meth:`extract`, or a stacked (N, H, W[, 3]) array.
        n_jobs : int or None
            Overrides ``self.n_jobs`` when given.

        Returns
        -------
        list of LocalFeatures
            One per image, in order.
        """
        sizes = self._validate_params()
        checked = check_images(images, min_side=4 * max(sizes))
        _check_value_range(checked)
        n_jobs = self.n_jobs if n_jobs is None else n_jobs
        n = len(checked)
        if n_jobs is None or n_jobs == 1 or n == 1:
            progress = _Progress(n, self.verbose)
            out = []
            for im in checked:
                out.append(self._extract_checked(im, sizes, parallel=_use_parallel(im)))
                progress.step()
            return out
        from joblib import Parallel, delayed, effective_n_jobs

        # Threads: the kernels release the GIL; serial kernels inside avoid nested parallel regions.
        # An image takes ~1 ms, so images go to the workers in chunks (a few per worker) to keep
        # the dispatch overhead small; the progress is reported per chunk.
        n_chunks = min(n, 4 * effective_n_jobs(n_jobs))
        chunks = np.array_split(np.arange(n), n_chunks)
        runner = Parallel(n_jobs=n_jobs, prefer="threads", verbose=10 if self.verbose else 0)
        results = runner(delayed(self._extract_chunk)([checked[i] for i in chunk], sizes) for chunk in chunks)
        return [feats for chunk in results for feats in chunk]

    def _extract_chunk(self, images, sizes):
        return [self._extract_checked(im, sizes, parallel=False) for im in images]


def _is_finite_nonnegative(value):
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _check_value_range(images):
    """Reject values whose squared gradients would overflow; warn on images clearly not in [0, 1].

    Float images are taken as given; values far outside [0, 1] usually mean a 0..255 float image,
    which shifts the contrast threshold (and saturates the uint8 input of the OpenCV backend).
    """
    warned = False
    for i, im in enumerate(images):
        low, high = float(im.min()), float(im.max())
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
                stacklevel=3,
            )
            warned = True


def _use_parallel(image):
    """Parallel kernels only for large images.

    A 256 x 256 image takes about 1 ms serially; below ~0.5 megapixel the cost of starting and
    joining threads (and, on a busy machine, waiting for a descheduled worker) exceeds the gain.
    """
    return image.shape[0] * image.shape[1] >= PARALLEL_MIN_PIXELS


class _Progress:
    """Minimal progress line on stderr (every ~10 % and at the end) when verbose."""

    def __init__(self, total, verbose):
        self.total = total
        self.verbose = bool(verbose)
        self.done = 0
        self.start = time.perf_counter()
        self.every = max(1, total // 10)

    def step(self):
        self.done += 1
        if self.verbose and (self.done % self.every == 0 or self.done == self.total):
            elapsed = time.perf_counter() - self.start
            print(
                f"[DenseSIFT] {self.done}/{self.total} images ({elapsed:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
