"""Numba kernels of the dense SIFT extractor (private; ``bowlrp.bow.features`` validates and wraps them).

The descriptor is computed the filter-based way (as in vlfeat's ``dsift``), so that the work is shared
between overlapping frames instead of being redone per keypoint:

1. ``smooth_separable``: Gaussian smoothing (separable, edge-replicated borders).
2. ``orientation_field``: image gradient (``np.gradient`` stencil) and, per pixel, its magnitude split
   between the two nearest of 8 orientation bins (linear interpolation in angle). Stored compactly as
   (first bin, weight of first bin, weight of next bin) because a pixel touches only 2 of the 8 planes.
3. ``pool_columns`` then ``pool_rows``: the spatial triangular (bilinear) binning is a separable
   triangular filter, evaluated only at the bin centres that some frame on the grid uses.
4. ``assemble_normalize``: gather the 4 x 4 x 8 values of every frame, zero flat patches, L2 / clip / L2.

Every kernel writes into preallocated outputs and has a numpy twin in ``tests/bowlrp/bow/test_features.py``.
The row helpers (``convolve_x``, ``orientation_row``, ``pool_columns_row``, ``assemble_row``) are shared
with the fused kernel of :mod:`bowlrp.bow._sift_stream`, which runs stages 1-4 in one pass over the rows
(the extractor's default path); the stage kernels serve bin sizes that share one orientation field.
Each driver is compiled twice by :func:`bowlrp.jit.jit_both` (parallel and serial build of the same
source); a call runs the build the project's size rule picks, and always the serial one inside the
batch threads of :func:`bowlrp.jit.parallel_map`.
"""

from __future__ import annotations

import math

import numpy as np

from bowlrp.jit import jit_both, jit_serial, prange

N_ORIENTATIONS = 8
TWO_PI = 2.0 * math.pi


# ----------------------------------------------------------------------------------------------- smoothing
@jit_serial(inline="always")
def convolve_x(src, taps, dst):
    """dst[x] = sum_t taps[t] * src[clip(x + t - r)] (edge replication) for 1-D rows."""
    width = src.shape[0]
    n_taps = taps.shape[0]
    r = (n_taps - 1) // 2
    # Border pixels clamp their taps; the interior loop has no branches so LLVM can vectorise it.
    for x in range(width):
        if x >= r and x < width - r:
            continue
        acc = 0.0
        for t in range(n_taps):
            acc += taps[t] * src[min(max(x + t - r, 0), width - 1)]
        dst[x] = acc
    n = width - 2 * r
    if n <= 0:
        return
    # Interior: 1-D views starting at 0, so every index is a plain loop counter. With 2-D indexing
    # at ``x + t - r`` numba's negative-index wraparound blocked vectorisation (this pass was 6x
    # slower than the column pass); the arithmetic and its order are unchanged.
    d = dst[r : width - r]
    for x in range(n):
        d[x] = 0.0
    for t in range(n_taps):
        w = taps[t]
        s = src[t : t + n]
        for x in range(n):
            d[x] += w * s[x]


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


@jit_both(work=lambda image, taps, tmp, out: 2 * image.size * taps.size)
def smooth_separable(image, taps, tmp, out):
    """Separable convolution of ``image`` (H, W) with the odd-length 1-D ``taps``, rows then columns.

    ``tmp`` and ``out`` are (H, W) float64 buffers; borders replicate the edge pixel.
    """
    height = image.shape[0]
    for y in prange(height):
        convolve_x(image[y], taps, tmp[y])
    for y in prange(height):
        _convolve_row_y(tmp, taps, y, out)



# ----------------------------------------------------------------------------------------- orientations
# atan(z) = z * sum_k (-1)^k z^(2k) / (2k + 1) for |z| <= tan(pi / 8): truncation error below 1e-13.
# A polynomial instead of libm's atan2 lets the per-pixel loop vectorise (atan2 was 2/3 of the time).
(_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13, _C14) = (
    (-1.0) ** k / (2 * k + 1) for k in range(15)
)
_TAN_PI_8 = math.tan(math.pi / 8.0)
_INV_QUARTER_PI = 4.0 / math.pi


@jit_serial(inline="always", error_model="numpy")
def _orientation(gx, gy):
    """(first bin, fraction towards the next bin) of the gradient (gx, gy), y axis pointing down.

    Angles are counter-clockwise with the y axis pointing UP (as OpenCV's SIFT measures them), so
    the row derivative enters with a minus sign. In units of 45 degrees: t = angle / (pi / 4).
    Written without branches that LLVM cannot turn into selects, so the pixel loop vectorises.
    """
    X = gx
    Y = -gy
    ax = abs(X)
    ay = abs(Y)
    r = min(ax, ay) / max(max(ax, ay), 1e-300)  # in [0, 1]; 0 for a zero gradient
    big = r > _TAN_PI_8
    zb = (r - 1.0) / (r + 1.0)  # atan(r) = pi/4 + atan((r - 1) / (r + 1)), |.| <= tan(pi/8)
    z = zb if big else r
    z2 = z * z
    p = _C14
    p = p * z2 + _C13
    p = p * z2 + _C12
    p = p * z2 + _C11
    p = p * z2 + _C10
    p = p * z2 + _C9
    p = p * z2 + _C8
    p = p * z2 + _C7
    p = p * z2 + _C6
    p = p * z2 + _C5
    p = p * z2 + _C4
    p = p * z2 + _C3
    p = p * z2 + _C2
    p = p * z2 + _C1
    p = p * z2 + _C0
    a = z * p * _INV_QUARTER_PI + (1.0 if big else 0.0)  # atan(min / max) in octants, [0, 1]
    phi = (2.0 - a) if ay > ax else a  # angle folded into the first quadrant, [0, 2]
    sx = X < 0.0
    sy = Y < 0.0
    base = 4.0 if sx else (8.0 if sy else 0.0)
    sign = -1.0 if sx != sy else 1.0
    t = base + sign * phi  # in [0, 8]
    b = int(t)
    # t == 8 (exactly 360 degrees) wraps to bin 0 with fraction 0.
    return b & 7, t - b


@jit_serial(inline="always", error_model="numpy")
def _orientation_weights(gx, gy):
    """(first bin, its weight, next bin's weight): the magnitude split linearly in angle."""
    b, frac = _orientation(gx, gy)
    mag = math.sqrt(gx * gx + gy * gy)
    return b, mag * (1.0 - frac), mag * frac


@jit_serial(inline="always")
def gradient_neighbours(y, height):
    """(row above, row below, factor) of the ``np.gradient`` stencil along y at row ``y``, as row
    indices: central inside, one-sided on the border, no gradient in a one-row image."""
    if height == 1:
        return 0, 0, 0.0
    if y == 0:
        return 0, 1, 1.0
    if y == height - 1:
        return y - 1, y, 1.0
    return y - 1, y + 1, 0.5


@jit_serial(inline="always")
def gradient_rows(image, y):
    """(row above, row below, factor) of the ``np.gradient`` stencil along y at row ``y``."""
    up, down, fy = gradient_neighbours(y, image.shape[0])
    return image[up], image[down], fy


@jit_serial(inline="always", error_model="numpy")
def _orientation_span(gx, gy, lo, hi, b_row, w0_row, w1_row):
    for x in range(lo, hi):
        b, v0, v1 = _orientation_weights(gx[x], gy[x])
        b_row[x] = b
        w0_row[x] = v0
        w1_row[x] = v1


@jit_serial(inline="always", error_model="numpy")
def orientation_row(row, up, down, fy, gx, gy, b_row, w0_row, w1_row):
    """One row of :func:`orientation_field`: ``gy = fy * (down - up)``, ``gx`` from ``row`` (1-D).

    ``gx`` and ``gy`` are scratch rows. The differences are taken first (``np.gradient`` stencil:
    central inside, one-sided on the border), so that the costly per-pixel part runs as one loop over
    the whole row: the two border pixels and the vector loop's remainder were scalar code, 3 % of
    the pixels of a 256-pixel row but ~15 % of the time (more on small images). A row whose length
    is not a multiple of 8 ends with 8 pixels recomputed as one full vector (the same values again).
    """
    width = row.shape[0]
    last = width - 1
    for x in range(1, last):
        gx[x] = 0.5 * (row[x + 1] - row[x - 1])
    gx[0] = row[min(1, last)] - row[0]
    gx[last] = row[last] - row[max(last - 1, 0)]
    for x in range(width):
        gy[x] = fy * (down[x] - up[x])
    n_main = width - width % 8
    _orientation_span(gx, gy, 0, n_main, b_row, w0_row, w1_row)
    if n_main < width:
        _orientation_span(gx, gy, max(width - 8, 0), width, b_row, w0_row, w1_row)


@jit_both(work=lambda image, bin0, w0, w1: 40 * image.size, error_model="numpy")
def orientation_field(image, bin0, w0, w1):
    """Gradient magnitude of ``image`` split linearly between two adjacent orientation bins.

    For every pixel, orientation plane ``bin0`` gets ``w0`` and plane ``(bin0 + 1) % 8`` gets ``w1``
    (``w0 + w1`` is the gradient magnitude). Bin ``o`` is centred on angle ``o * 45`` degrees.
    """
    height, width = image.shape
    n_blocks = min(height, 64)  # scratch rows per block of image rows, not per row
    for k in prange(n_blocks):
        gx = np.empty(width)
        gy = np.empty(width)
        for y in range(k * height // n_blocks, (k + 1) * height // n_blocks):
            up, down, fy = gradient_rows(image, y)
            orientation_row(image[y], up, down, fy, gx, gy, bin0[y], w0[y], w1[y])



# -------------------------------------------------------------------------------------- spatial binning
@jit_serial(inline="always")
def pool_columns_row(bin0, w0, w1, starts, weights, offset, out):
    """One row of :func:`pool_columns`: 1-D ``bin0, w0, w1`` into ``out`` (len(starts), 8)."""
    width = bin0.shape[0]
    n_taps = weights.shape[0]
    n_cols = starts.shape[0]
    for c in range(n_cols):
        for o in range(N_ORIENTATIONS):
            out[c, o] = 0.0
    # Four bins per pass: each tap is a read-modify-write of out[c, b] that often hits the same
    # cell as the previous tap (neighbours share orientations), so one bin alone is a chain of
    # dependent adds through memory; four independent chains overlap (1.2-1.7x faster with two,
    # 1.1-1.25x more with four; a loop over the four instead of this unrolled code was slower).
    # Each bin still sums its taps in order. ``& 7`` is ``% 8`` for bins in 0..7 without the sign
    # handling of Python's modulo.
    for c in range(0, n_cols - 3, 4):
        s0 = starts[c] + offset
        s1 = starts[c + 1] + offset
        s2 = starts[c + 2] + offset
        s3 = starts[c + 3] + offset
        for t in range(n_taps):
            w = weights[t]
            x = s0 + t
            if x >= 0 and x < width:
                b = bin0[x]
                out[c, b] += w * w0[x]
                out[c, (b + 1) & 7] += w * w1[x]
            x = s1 + t
            if x >= 0 and x < width:
                b = bin0[x]
                out[c + 1, b] += w * w0[x]
                out[c + 1, (b + 1) & 7] += w * w1[x]
            x = s2 + t
            if x >= 0 and x < width:
                b = bin0[x]
                out[c + 2, b] += w * w0[x]
                out[c + 2, (b + 1) & 7] += w * w1[x]
            x = s3 + t
            if x >= 0 and x < width:
                b = bin0[x]
                out[c + 3, b] += w * w0[x]
                out[c + 3, (b + 1) & 7] += w * w1[x]
    for c in range(n_cols - n_cols % 4, n_cols):
        s0 = starts[c] + offset
        for t in range(n_taps):
            x = s0 + t
            if x >= 0 and x < width:
                w = weights[t]
                b = bin0[x]
                out[c, b] += w * w0[x]
                out[c, (b + 1) & 7] += w * w1[x]


@jit_both(work=lambda bin0, w0, w1, starts, weights, offset, out: 4 * out.size // 8 * weights.size)
def pool_columns(bin0, w0, w1, starts, weights, offset, out):
    """Triangular filter along x, evaluated at the bins that start at columns ``starts``.

    ``out[y, c, o] = sum_t weights[t] * plane_o[y, starts[c] + offset + t]`` where plane_o is the
    orientation plane rebuilt from ``(bin0, w0, w1)``; pixels outside the image count as zero.
    ``out`` is (H, len(starts), 8).
    """
    for y in prange(bin0.shape[0]):
        pool_columns_row(bin0[y], w0[y], w1[y], starts, weights, offset, out[y])



@jit_serial(inline="always")
def _pool_rows_one(columns, starts, weights, offset, r, out):
    # Each (C, 8) row block is contiguous: flat 1-D views with plain loop counters let LLVM vectorise
    # the axpy (3-D indexing with computed indices was ~2x slower); same arithmetic, same order.
    height = columns.shape[0]
    m = columns.shape[1] * columns.shape[2]
    d = out[r].reshape(m)
    for k in range(m):
        d[k] = 0.0
    first = starts[r] + offset
    lo = max(0, -first)
    hi = min(weights.shape[0], height - first)
    for t in range(lo, hi):
        w = weights[t]
        s = columns[first + t].reshape(m)
        for k in range(m):
            d[k] += w * s[k]


@jit_both(work=lambda columns, starts, weights, offset, out: 2 * out.size * weights.size)
def pool_rows(columns, starts, weights, offset, out):
    """Triangular filter along y of the column-pooled planes ``columns`` (H, C, 8).

    ``out[r, c, o] = sum_t weights[t] * columns[starts[r] + offset + t, c, o]`` (zero outside); both
    arrays C-contiguous.
    """
    for r in prange(starts.shape[0]):
        _pool_rows_one(columns, starts, weights, offset, r, out)



# ------------------------------------------------------------------------------------- normalisation
@jit_serial(inline="always")
def clip_sums_128(out, f, inv, clip):
    """out[f, :128] = min(out[f, :128] * inv, clip); returns the sum of squares of the result.

    fastmath stays off (project policy), so LLVM may not reorder a single running sum; eight
    independent accumulators (index k goes to accumulator k % 8) in a fixed order give the same
    speed-up deterministically.
    """
    q0 = q1 = q2 = q3 = q4 = q5 = q6 = q7 = 0.0
    for k in range(0, 128, 8):
        v0 = min(out[f, k] * inv, clip)
        v1 = min(out[f, k + 1] * inv, clip)
        v2 = min(out[f, k + 2] * inv, clip)
        v3 = min(out[f, k + 3] * inv, clip)
        v4 = min(out[f, k + 4] * inv, clip)
        v5 = min(out[f, k + 5] * inv, clip)
        v6 = min(out[f, k + 6] * inv, clip)
        v7 = min(out[f, k + 7] * inv, clip)
        out[f, k] = v0
        out[f, k + 1] = v1
        out[f, k + 2] = v2
        out[f, k + 3] = v3
        out[f, k + 4] = v4
        out[f, k + 5] = v5
        out[f, k + 6] = v6
        out[f, k + 7] = v7
        q0 += v0 * v0
        q1 += v1 * v1
        q2 += v2 * v2
        q3 += v3 * v3
        q4 += v4 * v4
        q5 += v5 * v5
        q6 += v6 * v6
        q7 += v7 * v7
    return ((q0 + q1) + (q2 + q3)) + ((q4 + q5) + (q6 + q7))


@jit_serial(inline="always")
def assemble_row(pooled, row_index, col_index, area, threshold, clip, fy, out, energy):
    # Plain 2-D/3-D indexing from 0 on purpose: row or cell views, or a column offset, cost 2-5x here.
    # Colour variants pass a column block of the wider output as ``out``.
    # The sum and the sum of squares are taken while gathering (orientation o = k % 8 goes to
    # accumulator o, as in clip_sums_128) and the clip is fused with the second sum of squares:
    # 3 passes over each descriptor instead of 5 (bit-identical to the former 5-pass version).
    n_fx = col_index.shape[0]
    for fx in range(n_fx):
        f = fy * n_fx + fx
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
        q0 = q1 = q2 = q3 = q4 = q5 = q6 = q7 = 0.0
        for i in range(4):
            r = row_index[fy, i]
            for j in range(4):
                c = col_index[fx, j]
                base = (i * 4 + j) * N_ORIENTATIONS
                v0 = pooled[r, c, 0]
                v1 = pooled[r, c, 1]
                v2 = pooled[r, c, 2]
                v3 = pooled[r, c, 3]
                v4 = pooled[r, c, 4]
                v5 = pooled[r, c, 5]
                v6 = pooled[r, c, 6]
                v7 = pooled[r, c, 7]
                out[f, base] = v0
                out[f, base + 1] = v1
                out[f, base + 2] = v2
                out[f, base + 3] = v3
                out[f, base + 4] = v4
                out[f, base + 5] = v5
                out[f, base + 6] = v6
                out[f, base + 7] = v7
                a0 += v0
                a1 += v1
                a2 += v2
                a3 += v3
                a4 += v4
                a5 += v5
                a6 += v6
                a7 += v7
                q0 += v0 * v0
                q1 += v1 * v1
                q2 += v2 * v2
                q3 += v3 * v3
                q4 += v4 * v4
                q5 += v5 * v5
                q6 += v6 * v6
                q7 += v7 * v7
        total = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
        sq = ((q0 + q1) + (q2 + q3)) + ((q4 + q5) + (q6 + q7))
        e = total / area
        energy[f] = e
        if e < threshold or sq <= 0.0:
            # A flat patch: its orientations are noise, so the descriptor says "nothing here".
            for k in range(128):
                out[f, k] = 0.0
            continue
        sq2 = clip_sums_128(out, f, 1.0 / math.sqrt(sq), clip)
        inv2 = 1.0 / math.sqrt(sq2)
        for k in range(128):
            out[f, k] *= inv2


@jit_both(work=lambda pooled, row_index, col_index, area, threshold, clip, out, energy: 6 * out.size)
def assemble_normalize(pooled, row_index, col_index, area, threshold, clip, out, energy):
    """Gather each frame's 4 x 4 x 8 histogram and normalise it into ``out`` (n_frames, 128).

    Frame ``f = fy * n_fx + fx`` has spatial bin (i, j) at ``pooled[row_index[fy, i], col_index[fx, j]]``.
    ``energy[f]`` = sum of the raw histogram / ``area`` (the mean gradient magnitude over the support,
    as the bins weigh it). Descriptors with ``energy < threshold`` (or no gradient at all) are all-zero;
    the others are L2-normalised, clipped at ``clip`` and L2-normalised again.
    """
    for fy in prange(row_index.shape[0]):
        assemble_row(pooled, row_index, col_index, area, threshold, clip, fy, out, energy)



def empty_orientation_field(shape):
    """Preallocated outputs of :func:`orientation_field` for an image of ``shape``."""
    return np.empty(shape, np.int64), np.empty(shape, np.float64), np.empty(shape, np.float64)
