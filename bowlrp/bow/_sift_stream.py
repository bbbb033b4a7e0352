"""The fused dense SIFT kernel: every per-pixel stage of :mod:`bowlrp.bow._sift_kernels` in one pass.

The stage kernels (smoothing, orientation field, column pooling, row pooling) each write a full-size
intermediate that the next one reads back: 4-5 MB per 256 x 256 plane, more than the L2 cache, and
one numba call per stage. Here the image is streamed row by row: a row is smoothed along x into a
ring of ``2 r + 1`` rows, along y into a ring of 3 rows, turned into an orientation row, pooled along
x into one ``(C, 8)`` row and added straight into the pooled rows whose triangle covers it. Only the
image and the pooled array ``(R, C, 8)`` touch memory. Every value is computed by the same inline
helpers in the same order as the stage kernels, so the descriptors are bit-identical to theirs:

* the y-smoothing of a row sums its taps in order, from 0.0, exactly as ``smooth_separable``;
* a pooled row starts at 0.0 and receives its image rows in increasing order, the order in which
  ``pool_rows`` sums its taps.

The parallel build splits the pooled rows into bands; a band recomputes the few image rows it
shares with its neighbour (the same numbers), so no two threads write the same cell.
"""

from __future__ import annotations

import numpy as np

from bowlrp.bow._sift_kernels import (
    N_ORIENTATIONS,
    assemble_row,
    column_lanes,
    convolve_x,
    gradient_neighbours,
    orientation_row,
    orientation_scratch,
    pool_columns_row,
)
from bowlrp.bow._sift_simd import empty_aligned, vadd8, vload8, vmul8, vsplat8, vstore8, vzero8
from bowlrp.jit import jit_both, jit_serial, prange


@jit_serial(inline="always")
def _convolve_y_ring(ring, taps, y, height, rows, dst):
    """dst = sum_t taps[t] * xrow[clip(y + t - r)], x-smoothed row k stored at ``ring[k % len(ring)]``.

    ``rows`` is scratch for the ring rows of the taps. The sum of 8 pixels stays in one 8-lane
    register over the taps (:mod:`bowlrp.bow._sift_simd`), taps in order from 0.0: the order of the
    former pass per tap (``dst[x] += w * src[x]``), without reloading and storing ``dst`` per tap.
    """
    n_ring, width = ring.shape
    n_taps = taps.shape[0]
    r = (n_taps - 1) // 2
    flat = ring.reshape(n_ring * width)
    for t in range(n_taps):
        rows[t] = (min(max(y + t - r, 0), height - 1) % n_ring) * width
    n_vec = width - width % 8
    for x in range(0, n_vec, 8):
        acc = vzero8()
        for t in range(n_taps):
            acc = vadd8(acc, vmul8(vsplat8(taps[t]), vload8(flat, rows[t] + x)))
        vstore8(dst, x, acc)
    for x in range(n_vec, width):
        acc = 0.0
        for t in range(n_taps):
            acc += taps[t] * flat[rows[t] + x]
        dst[x] = acc


@jit_serial(inline="always", error_model="numpy")
def _stream_band(plane, taps, col_starts, row_starts, weights, offset, r0, r1, pooled):
    """Pooled rows ``r0 .. r1 - 1`` of one plane (see :func:`pooled_planes`)."""
    height, width = plane.shape
    n_w = weights.shape[0]
    n_cols = col_starts.shape[0]
    m = n_cols * N_ORIENTATIONS
    for r in range(r0, r1):
        d = pooled[r].reshape(m)
        for k in range(m):
            d[k] = 0.0
    y_lo = max(0, row_starts[r0] + offset)
    y_hi = min(height, row_starts[r1 - 1] + offset + n_w)
    if y_lo >= y_hi:
        return
    radius = (taps.shape[0] - 1) // 2
    n_ring = 2 * radius + 1
    xring = np.empty((n_ring, width))
    padded = width + (-width) % 8
    sring = empty_aligned(3 * padded).reshape((3, padded))  # rows on cache lines, used [:width]
    tap_rows = np.empty(taps.shape[0], np.int64)
    bin0 = np.empty(width, np.int64)
    w0 = empty_aligned(width)
    w1 = empty_aligned(width)
    gx, gy, work = orientation_scratch(width)
    lanes = column_lanes(width, n_w)
    flat = empty_aligned(m)  # one image row pooled along x: (n_cols, 8) flat
    next_x = max(0, y_lo - 1 - radius)  # next row to smooth along x
    next_s = max(0, y_lo - 1)  # next row to smooth along y
    first_r = r0  # first pooled row whose triangle has not ended above the current row
    for y in range(y_lo, y_hi):
        while next_s <= min(y + 1, height - 1):
            while next_x <= min(next_s + radius, height - 1):
                convolve_x(plane[next_x], taps, xring[next_x % n_ring])
                next_x += 1
            _convolve_y_ring(xring, taps, next_s, height, tap_rows, sring[next_s % 3][:width])
            next_s += 1
        # the np.gradient stencil of orientation_field, on the ring of smoothed rows
        y_up, y_down, fy = gradient_neighbours(y, height)
        orientation_row(sring[y % 3][:width], sring[y_up % 3][:width], sring[y_down % 3][:width], fy, gx, gy,
                        work, bin0, w0, w1)
        pool_columns_row(bin0, w0, w1, col_starts, weights, offset, lanes, flat)
        while first_r < r1 and row_starts[first_r] + offset + n_w <= y:
            first_r += 1
        for r in range(first_r, r1):
            t = y - row_starts[r] - offset
            if t < 0:
                break  # row starts are sorted: the later triangles start below y too
            w = weights[t]
            d = pooled[r].reshape(m)
            for k in range(m):
                d[k] += w * flat[k]


#: operations per pixel of :func:`pooled_planes` (the size rule's estimate)
STREAM_WORK_PER_PIXEL = 60


@jit_both(work=lambda planes, *rest: STREAM_WORK_PER_PIXEL * planes.size, error_model="numpy")
def pooled_planes(planes, taps, col_starts, row_starts, weights, offset, n_bands, pooled):
    """Smoothing, orientation field and triangular pooling of each plane, fused (one pass over rows).

    ``planes`` (P, H, W); ``pooled`` (P, len(row_starts), len(col_starts), 8) receives, for plane p,
    what ``pool_rows(pool_columns(orientation_field(smooth_separable(planes[p], taps))))`` gives.
    ``n_bands`` bands of pooled rows run in parallel in the parallel build (1 is the cheapest serial).
    """
    n_rows = row_starts.shape[0]
    n_bands = max(1, min(n_bands, n_rows))
    for k in prange(planes.shape[0] * n_bands):
        p = k // n_bands
        band = k % n_bands
        r0 = band * n_rows // n_bands
        r1 = (band + 1) * n_rows // n_bands
        if r1 > r0:
            _stream_band(planes[p], taps, col_starts, row_starts, weights, offset, r0, r1, pooled[p])


@jit_both(work=lambda pooled, *rest: 6 * 128 * rest[-1].size)  # rest[-1]: energy, one per descriptor
def assemble_planes(pooled, row_index, col_index, area, threshold, clip, row0, out, energy):
    """:func:`~bowlrp.bow._sift_kernels.assemble_normalize` of many planes of many images at once.

    ``pooled`` (N P, R, C, 8): the P planes of image 0, then those of image 1, ...; ``out``
    (N, M_total, 128 P) C-contiguous: plane p of image i fills rows ``row0 .. row0 + n_frames - 1``
    and columns ``128 p .. 128 p + 127`` of ``out[i]``; ``energy`` (N P, n_frames).
    """
    n_planes = out.shape[2] // 128
    n_fy = row_index.shape[0]
    n_frames = n_fy * col_index.shape[0]
    for k in prange(pooled.shape[0] * n_fy):
        q = k // n_fy
        fy = k % n_fy
        target = out[q // n_planes, row0 : row0 + n_frames]
        if n_planes == 1:
            assemble_row(pooled[q], row_index, col_index, area, threshold, clip, fy, target, energy[q])
        else:
            p = q % n_planes
            block = target[:, 128 * p : 128 * (p + 1)]
            assemble_row(pooled[q], row_index, col_index, area, threshold, clip, fy, block, energy[q])
