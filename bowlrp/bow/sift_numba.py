"""The numba backend of dense SIFT: orientation fields, then triangular pooling at the grid's bins.

Filter-based dense SIFT (as vlfeat's ``dsift``): Gaussian smoothing (``sigma``), ``np.gradient``
gradients, 8 orientation planes with linear interpolation in angle (fixed orientation: angle 0 points
along +x, angles grow counter-clockwise with y up, as in OpenCV), spatial triangular binning (the
outer bins' triangles reach ``B / 2`` pixels beyond the support; pixels outside the image count as
zero), then L2 normalisation, clipping at 0.2 and L2 normalisation again. The *energy* of a frame, the
sum of its raw histogram divided by ``A^2`` (the mean gradient magnitude over the support, image in
[0, 1]), decides flat patches: below the contrast threshold the descriptor is exactly all-zero.
The kernels are in :mod:`bowlrp.bow._sift_kernels` (one per stage) and :mod:`bowlrp.bow._sift_stream`
(all per-pixel stages fused in one pass over the rows, bit-identical to the stages): a bin size with its
own smoothing streams; bin sizes that share a smoothing share one orientation field through the stages.
Their inner loops use the 8-lane intrinsics of :mod:`bowlrp.bow._sift_simd` (same bits as scalar code).
"""

from __future__ import annotations

import numba
import numpy as np

from bowlrp.bow import _sift_kernels as _k
from bowlrp.bow import _sift_stream as _s
from bowlrp.bow._sift_simd import empty_aligned_array
from bowlrp.bow.sift_grid import frame_layout, gaussian_taps

__all__ = [
    "DESCRIPTOR_CLIP",
    "stacked_planes",
    "orientation_fields",
    "pooled_descriptors",
    "streamed_descriptors",
    "numba_descriptors",
]

DESCRIPTOR_CLIP = 0.2


def orientation_fields(planes, sigma):
    """Smooth each plane with a Gaussian of ``sigma`` and split its gradient into orientation bins.

    Returns one ``(bin0, w0, w1)`` triple per plane (see :func:`bowlrp.bow._sift_kernels.orientation_field`).
    Bin sizes that share the smoothing share these fields.
    """
    taps = gaussian_taps(sigma)
    fields = []
    tmp = smoothed = None
    for plane in planes:
        # the kernels load 8 neighbouring float64 values at once: C-contiguous float64 rows only
        plane = np.ascontiguousarray(plane, dtype=np.float64)
        if taps.size > 1:
            if tmp is None:
                tmp = np.empty(plane.shape, np.float64)
                smoothed = np.empty(plane.shape, np.float64)
            _k.smooth_separable(plane, taps, tmp, smoothed)
            source = smoothed
        else:
            source = plane
        field = _k.empty_orientation_field(plane.shape)
        _k.orientation_field(source, *field)
        fields.append(field)
    return fields


def pooled_descriptors(fields, bin_size, step, threshold, out=None):
    """Spatial binning and normalisation of precomputed orientation fields for one bin size.

    Returns ``(descriptors (M, 128 * P), energy (M, P), y_starts, x_starts)``, frames in row-major
    order of the grid (``y_starts`` x ``x_starts``). ``out``, if given, is a C-contiguous
    (M, 128 * P) float64 array that receives the descriptors (saves a copy of a large array).
    """
    height, width = fields[0][0].shape
    support = 4 * bin_size
    ys, xs, row_starts, row_index, col_starts, col_index, weights, offset = frame_layout(
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
        _k.pool_columns(bin0, w0, w1, col_starts, weights, offset, cols)
        _k.pool_rows(cols, row_starts, weights, offset, pooled)
        block = out if len(fields) == 1 else out[:, 128 * p : 128 * (p + 1)]
        _k.assemble_normalize(
            pooled, row_index, col_index, area, threshold, DESCRIPTOR_CLIP, block, energy[p]
        )
    return out, energy.T, ys, xs


def stacked_planes(planes):
    """The planes as one C-contiguous (P, H, W) float64 array (a view when they already are one)."""
    if isinstance(planes, np.ndarray) and planes.ndim == 3:
        return np.ascontiguousarray(planes, dtype=np.float64)
    if len(planes) == 1:
        return np.ascontiguousarray(planes[0], dtype=np.float64)[None]
    return np.ascontiguousarray(np.stack(planes), dtype=np.float64)


def streamed_descriptors(planes, n_images, bin_size, step, sigma, threshold, out, row0=0):
    """Dense SIFT of one bin size for a stack of equal-shaped images, by the fused kernels.

    Parameters
    ----------
    planes : numpy.ndarray
        (N P, H, W): the P planes of image 0, then those of image 1, ... (C-contiguous float64,
        else copied to it).
    n_images : int
        N.
    bin_size, step, sigma, threshold
        As for :func:`numba_descriptors`.
    out : numpy.ndarray
        (N, M_total, 128 P) C-contiguous float64; image i's descriptors of this bin size go to rows
        ``row0 .. row0 + M - 1`` of ``out[i]`` (M frames, row-major grid order).
    row0 : int

    Returns
    -------
    energy : numpy.ndarray
        (N P, M), in the order of ``planes``.

    The same numbers, bit for bit, as :func:`orientation_fields` + :func:`pooled_descriptors` per image.
    """
    planes = stacked_planes(planes)  # (8-value loads: C-contiguous float64 rows only)
    n_stack, height, width = planes.shape
    _, _, row_starts, row_index, col_starts, col_index, weights, offset = frame_layout(
        int(height), int(width), int(bin_size), int(step)
    )
    n_frames = row_index.shape[0] * col_index.shape[0]
    n_planes = n_stack // n_images
    if (out.ndim != 3 or out.shape[0] != n_images or out.shape[2] != 128 * n_planes
            or out.shape[1] < row0 + n_frames or out.dtype != np.float64 or not out.flags["C_CONTIGUOUS"]):
        raise ValueError(f"out must be a C-contiguous float64 array ({n_images}, >= {row0 + n_frames}, "
                         f"{128 * n_planes}), got {out.shape}")
    energy = np.empty((n_stack, n_frames), np.float64)
    if n_frames == 0:
        return energy
    # on a cache line: the gathering loads each cell's 8 orientations as one 64-byte vector
    pooled = empty_aligned_array((n_stack, row_starts.size, col_starts.size, _k.N_ORIENTATIONS))
    taps = gaussian_taps(sigma)
    kernel = _s.pooled_planes.build(_s.STREAM_WORK_PER_PIXEL * planes.size)
    threads = numba.get_num_threads() if kernel is _s.pooled_planes.parallel else 1
    # planes run in parallel; with fewer planes than threads each plane is also cut into bands
    n_bands = -(-threads // n_stack)
    kernel(planes, taps, col_starts, row_starts, weights, offset, n_bands, pooled)
    area = float(16 * bin_size * bin_size)
    _s.assemble_planes(pooled, row_index, col_index, area, threshold, DESCRIPTOR_CLIP, row0, out, energy)
    return energy


def numba_descriptors(planes, bin_size, step, sigma, threshold):
    """Dense SIFT of each plane of one image for one bin size with the numba kernels (smoothing ``sigma``).

    ``planes``: a list of (H, W) arrays or one (P, H, W) array. Returns ``(descriptors (M, 128 * P),
    energy (M, P), y_starts, x_starts)``, frames in row-major order of the grid (``y_starts`` x
    ``x_starts``).
    """
    planes = stacked_planes(planes)
    height, width = planes.shape[1:]
    ys, xs = frame_layout(int(height), int(width), int(bin_size), int(step))[:2]
    out = np.empty((1, ys.size * xs.size, 128 * planes.shape[0]), np.float64)
    energy = streamed_descriptors(planes, 1, bin_size, step, sigma, threshold, out)
    return out[0], energy.T, ys, xs
