"""Numba kernels of the dense SIFT extractor (private; ``bowlrp.features`` validates and wraps them).

The descriptor is computed the filter-based way (as in vlfeat's ``dsift``), so that the work is shared
between overlapping frames instead of being redone per keypoint:

1. ``smooth_separable``: Gaussian smoothing (separable, edge-replicated borders).
2. ``orientation_field``: image gradient (``np.gradient`` stencil) and, per pixel, its magnitude split
   between the two nearest of 8 orientation bins (linear interpolation in angle). Stored compactly as
   (first bin, weight of first bin, weight of next bin) because a pixel touches only 2 of the 8 planes.
3. ``pool_columns`` then ``pool_rows``: the spatial triangular (bilinear) binning is a separable
   triangular filter, evaluated only at the bin centres that some frame on the grid uses.
4. ``assemble_normalize``: gather the 4 x 4 x 8 values of every frame, zero flat patches, L2 / clip / L2.

Every kernel writes into preallocated outputs and has a numpy twin in ``tests/bowlrp/test_features.py``.
Each parallel driver has a serial twin compiled from the same per-row helper: ``extract_many`` runs many
images on threads and must not nest parallel regions.
"""

from __future__ import annotations

import math

import numpy as np

from bowlrp._numba import jit_parallel, jit_serial, prange

N_ORIENTATIONS = 8
TWO_PI = 2.0 * math.pi


# ----------------------------------------------------------------------------------------------- smoothing
@jit_serial(inline="always")
def _convolve_row_x(src, taps, y, dst):
    """dst[y, x] = sum_t taps[t] * src[y, clip(x + t - r)] (edge replication)."""
    width = src.shape[1]
    r = (taps.shape[0] - 1) // 2
    for x in range(width):
        acc = 0.0
        for t in range(taps.shape[0]):
            xx = min(max(x + t - r, 0), width - 1)
            acc += taps[t] * src[y, xx]
        dst[y, x] = acc


@jit_serial(inline="always")
def _convolve_row_y(src, taps, y, dst):
    """dst[y, x] = sum_t taps[t] * src[clip(y + t - r), x] (edge replication)."""
    height, width = src.shape
    r = (taps.shape[0] - 1) // 2
    for x in range(width):
        dst[y, x] = 0.0
    for t in range(taps.shape[0]):
        yy = min(max(y + t - r, 0), height - 1)
        w = taps[t]
        for x in range(width):
            dst[y, x] += w * src[yy, x]


@jit_parallel
def smooth_separable(image, taps, tmp, out):
    """Separable convolution of ``image`` (H, W) with the odd-length 1-D ``taps``, rows then columns.

    ``tmp`` and ``out`` are (H, W) float64 buffers; borders replicate the edge pixel.
    """
    height = image.shape[0]
    for y in prange(height):
        _convolve_row_x(image, taps, y, tmp)
    for y in prange(height):
        _convolve_row_y(tmp, taps, y, out)


@jit_serial
def smooth_separable_serial(image, taps, tmp, out):
    """Serial twin of :func:`smooth_separable` (for use inside thread pools)."""
    height = image.shape[0]
    for y in range(height):
        _convolve_row_x(image, taps, y, tmp)
    for y in range(height):
        _convolve_row_y(tmp, taps, y, out)


# ----------------------------------------------------------------------------------------- orientations
@jit_serial(inline="always")
def _orientation_row(image, y, bin0, w0, w1):
    height, width = image.shape
    scale = N_ORIENTATIONS / TWO_PI
    for x in range(width):
        # np.gradient stencil: central differences inside, one-sided differences on the border.
        if width == 1:
            gx = 0.0
        elif x == 0:
            gx = image[y, 1] - image[y, 0]
        elif x == width - 1:
            gx = image[y, x] - image[y, x - 1]
        else:
            gx = 0.5 * (image[y, x + 1] - image[y, x - 1])
        if height == 1:
            gy = 0.0
        elif y == 0:
            gy = image[1, x] - image[0, x]
        elif y == height - 1:
            gy = image[y, x] - image[y - 1, x]
        else:
            gy = 0.5 * (image[y + 1, x] - image[y - 1, x])
        # Angles are counter-clockwise with the y axis pointing UP (as OpenCV's SIFT measures them),
        # so the row index, which grows downwards, enters with a minus sign.
        angle = math.atan2(-gy, gx)
        if angle < 0.0:
            angle += TWO_PI
        t = angle * scale
        b = int(math.floor(t))
        frac = t - b
        if b >= N_ORIENTATIONS:  # angle rounded up to exactly 2 pi
            b = 0
            frac = 0.0
        mag = math.sqrt(gx * gx + gy * gy)
        bin0[y, x] = b
        w0[y, x] = mag * (1.0 - frac)
        w1[y, x] = mag * frac


@jit_parallel
def orientation_field(image, bin0, w0, w1):
    """Gradient magnitude of ``image`` split linearly between two adjacent orientation bins.

    For every pixel, orientation plane ``bin0`` gets ``w0`` and plane ``(bin0 + 1) % 8`` gets ``w1``
    (``w0 + w1`` is the gradient magnitude). Bin ``o`` is centred on angle ``o * 45`` degrees.
    """
    for y in prange(image.shape[0]):
        _orientation_row(image, y, bin0, w0, w1)


@jit_serial
def orientation_field_serial(image, bin0, w0, w1):
    """Serial twin of :func:`orientation_field`."""
    for y in range(image.shape[0]):
        _orientation_row(image, y, bin0, w0, w1)


# -------------------------------------------------------------------------------------- spatial binning
@jit_serial(inline="always")
def _pool_columns_row(bin0, w0, w1, starts, weights, offset, y, out):
    width = bin0.shape[1]
    n_taps = weights.shape[0]
    for c in range(starts.shape[0]):
        for o in range(N_ORIENTATIONS):
            out[y, c, o] = 0.0
        first = starts[c] + offset
        for t in range(n_taps):
            x = first + t
            if x < 0 or x >= width:
                continue
            w = weights[t]
            b = bin0[y, x]
            out[y, c, b] += w * w0[y, x]
            out[y, c, (b + 1) % N_ORIENTATIONS] += w * w1[y, x]


@jit_parallel
def pool_columns(bin0, w0, w1, starts, weights, offset, out):
    """Triangular filter along x, evaluated at the bins that start at columns ``starts``.

    ``out[y, c, o] = sum_t weights[t] * plane_o[y, starts[c] + offset + t]`` where plane_o is the
    orientation plane rebuilt from ``(bin0, w0, w1)``; pixels outside the image count as zero.
    ``out`` is (H, len(starts), 8).
    """
    for y in prange(bin0.shape[0]):
        _pool_columns_row(bin0, w0, w1, starts, weights, offset, y, out)


@jit_serial
def pool_columns_serial(bin0, w0, w1, starts, weights, offset, out):
    """Serial twin of :func:`pool_columns`."""
    for y in range(bin0.shape[0]):
        _pool_columns_row(bin0, w0, w1, starts, weights, offset, y, out)


@jit_serial(inline="always")
def _pool_rows_one(columns, starts, weights, offset, r, out):
    height = columns.shape[0]
    n_cols = columns.shape[1]
    for c in range(n_cols):
        for o in range(N_ORIENTATIONS):
            out[r, c, o] = 0.0
    first = starts[r] + offset
    for t in range(weights.shape[0]):
        y = first + t
        if y < 0 or y >= height:
            continue
        w = weights[t]
        for c in range(n_cols):
            for o in range(N_ORIENTATIONS):
                out[r, c, o] += w * columns[y, c, o]


@jit_parallel
def pool_rows(columns, starts, weights, offset, out):
    """Triangular filter along y of the column-pooled planes ``columns`` (H, C, 8).

    ``out[r, c, o] = sum_t weights[t] * columns[starts[r] + offset + t, c, o]`` (zero outside).
    """
    for r in prange(starts.shape[0]):
        _pool_rows_one(columns, starts, weights, offset, r, out)


@jit_serial
def pool_rows_serial(columns, starts, weights, offset, out):
    """Serial twin of :func:`pool_rows`."""
    for r in range(starts.shape[0]):
        _pool_rows_one(columns, starts, weights, offset, r, out)


# ------------------------------------------------------------------------------------- normalisation
@jit_serial(inline="always")
def _assemble_row(pooled, row_index, col_index, area, threshold, clip, fy, out, col0, energy):
    n_fx = col_index.shape[0]
    dim = 16 * N_ORIENTATIONS
    for fx in range(n_fx):
        f = fy * n_fx + fx
        total = 0.0
        sq = 0.0
        for i in range(4):
            r = row_index[fy, i]
            for j in range(4):
                c = col_index[fx, j]
                base = col0 + (i * 4 + j) * N_ORIENTATIONS
                for o in range(N_ORIENTATIONS):
                    v = pooled[r, c, o]
                    out[f, base + o] = v
                    total += v
                    sq += v * v
        e = total / area
        energy[f] = e
        if e < threshold or sq <= 0.0:
            # A flat patch: its orientations are noise, so the descriptor says "nothing here".
            for k in range(dim):
                out[f, col0 + k] = 0.0
            continue
        inv = 1.0 / math.sqrt(sq)
        sq2 = 0.0
        for k in range(dim):
            v = out[f, col0 + k] * inv
            if v > clip:
                v = clip
            out[f, col0 + k] = v
            sq2 += v * v
        inv2 = 1.0 / math.sqrt(sq2)
        for k in range(dim):
            out[f, col0 + k] *= inv2


@jit_parallel
def assemble_normalize(pooled, row_index, col_index, area, threshold, clip, out, col0, energy):
    """Gather each frame's 4 x 4 x 8 histogram and normalise it into ``out[:, col0:col0 + 128]``.

    Frame ``f = fy * n_fx + fx`` has spatial bin (i, j) at ``pooled[row_index[fy, i], col_index[fx, j]]``.
    ``energy[f]`` = sum of the raw histogram / ``area`` (the mean gradient magnitude over the support,
    as the bins weigh it). Descriptors with ``energy < threshold`` (or no gradient at all) are all-zero;
    the others are L2-normalised, clipped at ``clip`` and L2-normalised again.
    """
    for fy in prange(row_index.shape[0]):
        _assemble_row(pooled, row_index, col_index, area, threshold, clip, fy, out, col0, energy)


@jit_serial
def assemble_normalize_serial(pooled, row_index, col_index, area, threshold, clip, out, col0, energy):
    """Serial twin of :func:`assemble_normalize`."""
    for fy in range(row_index.shape[0]):
        _assemble_row(pooled, row_index, col_index, area, threshold, clip, fy, out, col0, energy)


KERNELS = {
    True: (smooth_separable, orientation_field, pool_columns, pool_rows, assemble_normalize),
    False: (
        smooth_separable_serial,
        orientation_field_serial,
        pool_columns_serial,
        pool_rows_serial,
        assemble_normalize_serial,
    ),
}


def empty_orientation_field(shape):
    """Preallocated outputs of :func:`orientation_field` for an image of ``shape``."""
    return np.empty(shape, np.int64), np.empty(shape, np.float64), np.empty(shape, np.float64)
