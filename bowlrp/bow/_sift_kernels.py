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

Every kernel writes into preallocated outputs and has a numpy twin in ``tests/bowlrp/bow/test_features.py``
(the definition, to 1e-12) and in ``tests/bowlrp/bow/test_sift_simd.py`` (the scalar order of operations,
bit for bit). The innermost loops keep a cell's 8 orientations, or 8 pixels, in one 8-lane register
(:mod:`bowlrp.bow._sift_simd`) where LLVM left the scalar code unvectorised or latency-bound.
The row helpers (``convolve_x``, ``orientation_row``, ``pool_columns_row``, ``assemble_row``) are shared
with the fused kernel of :mod:`bowlrp.bow._sift_stream`, which runs stages 1-4 in one pass over the rows
(the extractor's default path); the stage kernels serve bin sizes that share one orientation field.
Each driver is compiled twice by :func:`bowlrp.jit.jit_both` (parallel and serial build of the same
source); a call runs the build the project's size rule picks, and always the serial one inside the
batch threads of :func:`bowlrp.jit.parallel_map`. The four row helpers are functions of their own,
not inlined into the drivers: every build and the fused kernel then call one compiled body each
(inlined, each build compiled them anew: the SIFT kernels' cold compilation, both builds and both
paths, took 33 s against 17 s now, at the same speed).
"""

from __future__ import annotations

import math

import numpy as np

from bowlrp.bow._sift_simd import (
    empty_aligned,
    hsum8,
    vadd8,
    vload8,
    vmin8,
    vmul8,
    vselect_lane8,
    vsplat8,
    vstore8,
    vzero8,
    zeros_aligned,
)
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
    # (The border loop visits only the border: a loop over the whole row that skipped the interior
    # cost as much as the interior's sums.)
    right = max(width - r, r)
    for k in range(min(r, width) + width - min(right, width)):
        x = k if k < r else right + k - r
        acc = 0.0
        for t in range(n_taps):
            acc += taps[t] * src[min(max(x + t - r, 0), width - 1)]
        dst[x] = acc
    n = width - 2 * r
    if n <= 0:
        return
    # The interior 8 pixels at a time, the sum in one 8-lane register (:mod:`bowlrp.bow._sift_simd`;
    # taps in order from 0.0, as the border loop and the former pass-per-tap ``d[x] += w * s[x]``
    # summed them): one load, multiply and add per tap instead of a pass over ``dst`` per tap.
    # Indices are plain non-negative offsets (numba's negative-index wraparound on ``x + t - r``
    # once blocked vectorisation, 6x slower).
    # 32 pixels per pass over the taps: one broadcast per tap for four sums, and four independent
    # chains of adds (one 8-pixel sum per pass was bound by the chain and the loop over the taps)
    n_32 = n - n % 32
    for x in range(0, n_32, 32):
        a0 = a1 = a2 = a3 = vzero8()
        for t in range(n_taps):
            w = vsplat8(taps[t])
            a0 = vadd8(a0, vmul8(w, vload8(src, x + t)))
            a1 = vadd8(a1, vmul8(w, vload8(src, x + t + 8)))
            a2 = vadd8(a2, vmul8(w, vload8(src, x + t + 16)))
            a3 = vadd8(a3, vmul8(w, vload8(src, x + t + 24)))
        vstore8(dst, x + r, a0)
        vstore8(dst, x + r + 8, a1)
        vstore8(dst, x + r + 16, a2)
        vstore8(dst, x + r + 24, a3)
    n_vec = n - n % 8
    for x in range(n_32, n_vec, 8):
        acc = vzero8()
        for t in range(n_taps):
            acc = vadd8(acc, vmul8(vsplat8(taps[t]), vload8(src, x + t)))
        vstore8(dst, x + r, acc)
    for x in range(n_vec, n):
        acc = 0.0
        for t in range(n_taps):
            acc += taps[t] * src[x + t]
        dst[x + r] = acc


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
_ATAN_COEFFS = np.array([(-1.0) ** k / (2 * k + 1) for k in range(15)])
_TAN_PI_8 = math.tan(math.pi / 8.0)
_INV_QUARTER_PI = 4.0 / math.pi


@jit_serial(inline="always", error_model="numpy")
def _octant_argument(gx, gy):
    """(z, 1.0 or 0.0) with atan(min(|gx|, |gy|) / max(...)) = z P(z^2) + (pi / 4) * the second.

    atan(r) = pi/4 + atan((r - 1) / (r + 1)) brings r in [0, 1] down to |z| <= tan(pi/8).
    """
    ax = abs(gx)
    ay = abs(gy)
    r = min(ax, ay) / max(max(ax, ay), 1e-300)  # in [0, 1]; 0 for a zero gradient
    big = r > _TAN_PI_8
    zb = (r - 1.0) / (r + 1.0)
    return (zb if big else r), (1.0 if big else 0.0)


@jit_serial(inline="always")
def _atan_series(values, n):
    """values[x] = P(values[x]) in place for x < n (P: the series above in Horner form, highest term first).

    The Horner steps of one pixel are a chain of dependent multiply-adds; four 8-pixel vectors are
    advanced together (:mod:`bowlrp.bow._sift_simd`) so that four chains overlap (as one LLVM
    vector loop they did not: the polynomial took half the orientation time). Same operations in
    the same order per pixel, so the same bits.
    """
    top = _ATAN_COEFFS.shape[0] - 1
    n4 = n - n % 32
    for x in range(0, n4, 32):
        z0 = vload8(values, x)
        z1 = vload8(values, x + 8)
        z2 = vload8(values, x + 16)
        z3 = vload8(values, x + 24)
        c = vsplat8(_ATAN_COEFFS[top])
        p0 = p1 = p2 = p3 = c
        for k in range(top - 1, -1, -1):
            c = vsplat8(_ATAN_COEFFS[k])
            p0 = vadd8(vmul8(p0, z0), c)
            p1 = vadd8(vmul8(p1, z1), c)
            p2 = vadd8(vmul8(p2, z2), c)
            p3 = vadd8(vmul8(p3, z3), c)
        vstore8(values, x, p0)
        vstore8(values, x + 8, p1)
        vstore8(values, x + 16, p2)
        vstore8(values, x + 24, p3)
    n1 = n - n % 8
    for x in range(n4, n1, 8):
        z0 = vload8(values, x)
        p0 = vsplat8(_ATAN_COEFFS[top])
        for k in range(top - 1, -1, -1):
            p0 = vadd8(vmul8(p0, z0), vsplat8(_ATAN_COEFFS[k]))
        vstore8(values, x, p0)
    for x in range(n1, n):
        z = values[x]
        p = _ATAN_COEFFS[top]
        for k in range(top - 1, -1, -1):
            p = p * z + _ATAN_COEFFS[k]
        values[x] = p


@jit_serial(inline="always", error_model="numpy")
def _orientation_weights(gx, gy, z, p, big):
    """(first bin, its weight, next bin's weight): the magnitude split linearly in angle.

    ``z, big`` from :func:`_octant_argument` and ``p = P(z^2)``. Angles are counter-clockwise with
    the y axis pointing UP (as OpenCV's SIFT measures them), so the row derivative enters with a
    minus sign. In units of 45 degrees: t = angle / (pi / 4). Written without branches that LLVM
    cannot turn into selects, so the pixel loop vectorises.
    """
    X = gx
    Y = -gy
    a = z * p * _INV_QUARTER_PI + big  # atan(min / max) in octants, [0, 1]
    phi = (2.0 - a) if abs(Y) > abs(X) else a  # angle folded into the first quadrant, [0, 2]
    sx = X < 0.0
    sy = Y < 0.0
    base = 4.0 if sx else (8.0 if sy else 0.0)
    sign = -1.0 if sx != sy else 1.0
    t = base + sign * phi  # in [0, 8]
    b = int(t)
    frac = t - b
    mag = math.sqrt(gx * gx + gy * gy)
    # t == 8 (exactly 360 degrees) wraps to bin 0 with fraction 0.
    return b & 7, mag * (1.0 - frac), mag * frac


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
def _octant_span(gx, gy, lo, hi, zs, bigs, z2s):
    for x in range(lo, hi):
        z, big = _octant_argument(gx[x], gy[x])
        zs[x] = z
        bigs[x] = big
        z2s[x] = z * z


@jit_serial(inline="always", error_model="numpy")
def _weights_span(gx, gy, lo, hi, zs, bigs, ps, b_row, w0_row, w1_row):
    for x in range(lo, hi):
        b, v0, v1 = _orientation_weights(gx[x], gy[x], zs[x], ps[x], bigs[x])
        b_row[x] = b
        w0_row[x] = v0
        w1_row[x] = v1


@jit_serial(inline="always")
def orientation_scratch(width):
    """(gx, gy, work) scratch of :func:`orientation_row`, every row on a 64-byte boundary."""
    padded = width + (-width) % 8
    return empty_aligned(width), empty_aligned(width), empty_aligned(3 * padded).reshape((3, padded))


@jit_serial(error_model="numpy")
def orientation_row(row, up, down, fy, gx, gy, work, b_row, w0_row, w1_row):
    """One row of :func:`orientation_field`: ``gy = fy * (down - up)``, ``gx`` from ``row`` (1-D).

    ``gx``, ``gy`` and ``work`` (3, >= width) are scratch (:func:`orientation_scratch`). The
    differences are taken first (``np.gradient`` stencil: central inside, one-sided on the border),
    then three passes over the row: the octant argument z (two divisions), the series P(z^2)
    (:func:`_atan_series`), and the bins and weights. Passes 1 and 3 run as one vector loop over
    the whole row: the two border pixels and the vector loop's remainder were scalar code, 3 % of
    the pixels of a 256-pixel row but ~15 % of the time, so a row whose length is not a multiple
    of 8 ends with 8 pixels recomputed as one full vector (the same values again).
    """
    width = row.shape[0]
    last = width - 1
    for x in range(1, last):
        gx[x] = 0.5 * (row[x + 1] - row[x - 1])
    gx[0] = row[min(1, last)] - row[0]
    gx[last] = row[last] - row[max(last - 1, 0)]
    for x in range(width):
        gy[x] = fy * (down[x] - up[x])
    zs = work[0]
    bigs = work[1]
    ps = work[2]
    n_main = width - width % 8
    _octant_span(gx, gy, 0, n_main, zs, bigs, ps)
    if n_main < width:
        _octant_span(gx, gy, max(width - 8, 0), width, zs, bigs, ps)
    _atan_series(ps, width)
    _weights_span(gx, gy, 0, n_main, zs, bigs, ps, b_row, w0_row, w1_row)
    if n_main < width:
        _weights_span(gx, gy, max(width - 8, 0), width, zs, bigs, ps, b_row, w0_row, w1_row)


@jit_both(work=lambda image, bin0, w0, w1: 40 * image.size, error_model="numpy")
def orientation_field(image, bin0, w0, w1):
    """Gradient magnitude of ``image`` split linearly between two adjacent orientation bins.

    For every pixel, orientation plane ``bin0`` gets ``w0`` and plane ``(bin0 + 1) % 8`` gets ``w1``
    (``w0 + w1`` is the gradient magnitude). Bin ``o`` is centred on angle ``o * 45`` degrees.
    """
    height, width = image.shape
    n_blocks = min(height, 64)  # scratch rows per block of image rows, not per row
    for k in prange(n_blocks):
        gx, gy, work = orientation_scratch(width)
        for y in range(k * height // n_blocks, (k + 1) * height // n_blocks):
            up, down, fy = gradient_rows(image, y)
            orientation_row(image[y], up, down, fy, gx, gy, work, bin0[y], w0[y], w1[y])



# -------------------------------------------------------------------------------------- spatial binning
@jit_serial(inline="always")
def column_lanes(width, n_taps):
    """Scratch of :func:`pool_columns_row` for rows of ``width`` pixels and ``n_taps`` triangle taps:
    ``width + 2 n_taps`` pixels of 8 orientation lanes, the ``n_taps`` at either end zero."""
    return zeros_aligned((width + 2 * n_taps) * N_ORIENTATIONS)


@jit_serial
def pool_columns_row(bin0, w0, w1, starts, weights, offset, lanes, out):
    """One row of :func:`pool_columns`: 1-D ``bin0, w0, w1`` into ``out`` (8 len(starts),) flat.

    ``lanes`` is :func:`column_lanes` scratch (its zero ends are never written). Each pixel becomes 8
    orientation lanes (``w0`` in lane ``bin0``, ``w1`` in the next, +0.0 elsewhere) and each bin a
    sum over its taps of ``weight * lanes`` in one 8-lane register (:mod:`bowlrp.bow._sift_simd`).
    Bit-identical to adding ``w * w0`` and ``w * w1`` into the two cells alone, taps in order, from
    0.0: the other lanes only add +0.0 (``w * 0.0``) to sums that are >= +0.0, which leaves them
    unchanged, and so do the zero pixels beyond the image (which the scalar version skipped). The
    scalar version's read-modify-writes of 4 cells per pixel were chains of store-to-load
    forwarding; here the sums stay in registers (1.4x at B = 4, 1.9x at B = 6).
    """
    width = bin0.shape[0]
    n_taps = weights.shape[0]
    n_cols = starts.shape[0]
    for x in range(width):
        vstore8(lanes, N_ORIENTATIONS * (x + n_taps), vselect_lane8(bin0[x], w0[x], w1[x], 0.0))
    # four bins per pass: one broadcast of each tap weight for four independent chains of vector adds
    n_4 = n_cols - n_cols % 4
    for c in range(0, n_4, 4):
        s0 = N_ORIENTATIONS * (starts[c] + offset + n_taps)
        s1 = N_ORIENTATIONS * (starts[c + 1] + offset + n_taps)
        s2 = N_ORIENTATIONS * (starts[c + 2] + offset + n_taps)
        s3 = N_ORIENTATIONS * (starts[c + 3] + offset + n_taps)
        a0 = a1 = a2 = a3 = vzero8()
        for t in range(n_taps):
            w = vsplat8(weights[t])
            k = N_ORIENTATIONS * t
            a0 = vadd8(a0, vmul8(w, vload8(lanes, s0 + k)))
            a1 = vadd8(a1, vmul8(w, vload8(lanes, s1 + k)))
            a2 = vadd8(a2, vmul8(w, vload8(lanes, s2 + k)))
            a3 = vadd8(a3, vmul8(w, vload8(lanes, s3 + k)))
        vstore8(out, N_ORIENTATIONS * c, a0)
        vstore8(out, N_ORIENTATIONS * (c + 1), a1)
        vstore8(out, N_ORIENTATIONS * (c + 2), a2)
        vstore8(out, N_ORIENTATIONS * (c + 3), a3)
    for c in range(n_4, n_cols):
        s0 = N_ORIENTATIONS * (starts[c] + offset + n_taps)
        a0 = vzero8()
        for t in range(n_taps):
            a0 = vadd8(a0, vmul8(vsplat8(weights[t]), vload8(lanes, s0 + N_ORIENTATIONS * t)))
        vstore8(out, N_ORIENTATIONS * c, a0)


@jit_both(work=lambda bin0, w0, w1, starts, weights, offset, out: 4 * out.size // 8 * weights.size)
def pool_columns(bin0, w0, w1, starts, weights, offset, out):
    """Triangular filter along x, evaluated at the bins that start at columns ``starts``.

    ``out[y, c, o] = sum_t weights[t] * plane_o[y, starts[c] + offset + t]`` where plane_o is the
    orientation plane rebuilt from ``(bin0, w0, w1)``; pixels outside the image count as zero.
    ``out`` is (H, len(starts), 8).
    """
    height, width = bin0.shape
    m = out.shape[1] * N_ORIENTATIONS
    n_blocks = min(height, 64)  # scratch per block of rows, not per row
    for k in prange(n_blocks):
        lanes = column_lanes(width, weights.shape[0])
        for y in range(k * height // n_blocks, (k + 1) * height // n_blocks):
            pool_columns_row(bin0[y], w0[y], w1[y], starts, weights, offset, lanes, out[y].reshape(m))



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
@jit_serial
def _cell_row(flat, cell_row, col_index, fx):
    """The 4 cells (8 orientations each, as 8-lane values) of one spatial-bin row of frame column fx."""
    return (vload8(flat, N_ORIENTATIONS * (cell_row + col_index[fx, 0])),
            vload8(flat, N_ORIENTATIONS * (cell_row + col_index[fx, 1])),
            vload8(flat, N_ORIENTATIONS * (cell_row + col_index[fx, 2])),
            vload8(flat, N_ORIENTATIONS * (cell_row + col_index[fx, 3])))


@jit_serial
def _add_cells(a, q, cells):
    """(a, q) plus each cell and its square, in cell order."""
    for k in range(4):  # unrolled by LLVM: a constant trip count over a tuple
        a = vadd8(a, cells[k])
        q = vadd8(q, vmul8(cells[k], cells[k]))
    return a, q


@jit_serial
def _clip_cells(cells, inv, vclip, q):
    """Each cell scaled by ``inv`` and clipped, and q plus their squares in cell order."""
    c0 = vmin8(vmul8(cells[0], inv), vclip)
    c1 = vmin8(vmul8(cells[1], inv), vclip)
    c2 = vmin8(vmul8(cells[2], inv), vclip)
    c3 = vmin8(vmul8(cells[3], inv), vclip)
    q = vadd8(vadd8(vadd8(vadd8(q, vmul8(c0, c0)), vmul8(c1, c1)), vmul8(c2, c2)), vmul8(c3, c3))
    return (c0, c1, c2, c3), q


@jit_serial
def _store_cells(row, k0, cells, scale):
    for k in range(4):
        vstore8(row, k0 + N_ORIENTATIONS * k, vmul8(cells[k], scale))


@jit_serial
def assemble_row(pooled, row_index, col_index, area, threshold, clip, fy, out, energy):
    """Frames ``fy * n_fx .. fy * n_fx + n_fx - 1`` of :func:`assemble_normalize` (``pooled`` C-contiguous
    (R, C, 8); ``out`` rows with unit stride, e.g. a column block of a wider C-contiguous output).

    A cell's 8 orientations are one 8-lane register (:mod:`bowlrp.bow._sift_simd`): lane o holds the
    running sum and sum of squares of orientation o over the 16 cells, summed in cell order, and the
    lanes are added in the fixed order of :func:`~bowlrp.bow._sift_simd.hsum8`; the clip pass sums
    the squares of entry k in lane k % 8. That is the order the scalar version used (eight named
    accumulators, which LLVM left scalar), so the bits are the same, at 2.1x the speed. The 16 cells
    stay in registers from the gather to the one store of the normalised descriptor (storing the raw
    histogram and rescaling it in place took three loads and stores of each cell).
    """
    n_fx = col_index.shape[0]
    n_cols = pooled.shape[1]
    flat = pooled.reshape(pooled.size)
    vclip = vsplat8(clip)
    rows0 = row_index[fy, 0] * n_cols
    rows1 = row_index[fy, 1] * n_cols
    rows2 = row_index[fy, 2] * n_cols
    rows3 = row_index[fy, 3] * n_cols
    for fx in range(n_fx):
        f = fy * n_fx + fx
        row = out[f]
        cells0 = _cell_row(flat, rows0, col_index, fx)
        cells1 = _cell_row(flat, rows1, col_index, fx)
        cells2 = _cell_row(flat, rows2, col_index, fx)
        cells3 = _cell_row(flat, rows3, col_index, fx)
        a, q = _add_cells(vzero8(), vzero8(), cells0)  # per-orientation sums and sums of squares
        a, q = _add_cells(a, q, cells1)
        a, q = _add_cells(a, q, cells2)
        a, q = _add_cells(a, q, cells3)
        total = hsum8(a)
        sq = hsum8(q)
        e = total / area
        energy[f] = e
        if e < threshold or sq <= 0.0:
            # A flat patch: its orientations are noise, so the descriptor says "nothing here".
            for k in range(128):
                row[k] = 0.0
            continue
        # L2-normalise and clip, summing the squares of the clipped values on the way
        inv = vsplat8(1.0 / math.sqrt(sq))
        clipped0, q0 = _clip_cells(cells0, inv, vclip, vzero8())
        clipped1, q1 = _clip_cells(cells1, inv, vclip, q0)
        clipped2, q2 = _clip_cells(cells2, inv, vclip, q1)
        clipped3, q3 = _clip_cells(cells3, inv, vclip, q2)
        inv2 = vsplat8(1.0 / math.sqrt(hsum8(q3)))
        _store_cells(row, np.int64(0), clipped0, inv2)
        _store_cells(row, np.int64(32), clipped1, inv2)
        _store_cells(row, np.int64(64), clipped2, inv2)
        _store_cells(row, np.int64(96), clipped3, inv2)


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
