"""The fused dense SIFT kernel: every per-pixel stage of :mod:`bowlrp.bow._sift_kernels` in one pass.

The stage kernels (smoothing, orientation field, column pooling, row pooling) each write a full-size
intermediate that the next one reads back: 4-5 MB per 256 x 256 plane, more than the L2 cache, and
one numba call per stage. Here the image is streamed row by row: a row is smoothed along x into a
ring of ``2 r + 1`` rows, along y into a ring of 3 rows, turned into an orientation row, pooled along
x into one ``(C, 8)`` row of a ring of as many rows as a triangle has taps, and each pooled row is
summed from that ring once its triangle's last image row is in. Only the image and the pooled array
``(R, C, 8)`` touch memory. Every value is computed by the same helpers in the same order as
the stage kernels, so the descriptors are bit-identical to theirs:

* the y-smoothing of a row sums its taps in order, from 0.0, exactly as ``smooth_separable``;
* a pooled row is a sum from 0.0 of its image rows in increasing order, the order in which
  ``pool_rows`` sums its taps (each pooled value now stays in a register over the taps; adding
  every image row into the pooled rows it falls in loaded and stored them once per tap).

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


@jit_serial
def _weighted_rows(flat, rows, weights, lo, hi, dst):
    """dst[x] = sum_{t = lo}^{hi - 1} weights[t] * flat[rows[t] + x], taps in order from 0.0.

    32 values per pass over the taps in four 8-lane registers (:mod:`bowlrp.bow._sift_simd`; one
    broadcast per tap for four sums), then 8 at a time, then one at a time: the order of the former
    pass per tap (``dst[x] += w * src[x]``) without loading and storing ``dst`` per tap. Not inlined
    into the numba IR (LLVM still inlines it): two inline copies in the parallel build's loop body
    cost ~5 s more of cold compilation (18.4 against 14.8 s; main 13.4) for no speed.
    """
    width = dst.shape[0]
    n_32 = width - width % 32
    for x in range(0, n_32, 32):
        a0 = a1 = a2 = a3 = vzero8()
        for t in range(lo, hi):
            w = vsplat8(weights[t])
            row = rows[t] + x
            a0 = vadd8(a0, vmul8(w, vload8(flat, row)))
            a1 = vadd8(a1, vmul8(w, vload8(flat, row + 8)))
            a2 = vadd8(a2, vmul8(w, vload8(flat, row + 16)))
            a3 = vadd8(a3, vmul8(w, vload8(flat, row + 24)))
        vstore8(dst, x, a0)
        vstore8(dst, x + 8, a1)
        vstore8(dst, x + 16, a2)
        vstore8(dst, x + 24, a3)
    n_vec = width - width % 8
    for x in range(n_32, n_vec, 8):
        acc = vzero8()
        for t in range(lo, hi):
            acc = vadd8(acc, vmul8(vsplat8(weights[t]), vload8(flat, rows[t] + x)))
        vstore8(dst, x, acc)
    for x in range(n_vec, width):
        acc = 0.0
        for t in range(lo, hi):
            acc += weights[t] * flat[rows[t] + x]
        dst[x] = acc


@jit_serial(inline="always")
def _convolve_y_ring(ring, taps, y, height, rows, dst):
    """dst = sum_t taps[t] * xrow[clip(y + t - r)], x-smoothed row k at ``ring[k % len(ring), :len(dst)]``.

    ``rows`` is scratch for the ring rows of the taps (:func:`_weighted_rows` sums them).
    """
    n_ring, stride = ring.shape  # rows of ``stride`` >= width values, the first width used
    n_taps = taps.shape[0]
    r = (n_taps - 1) // 2
    for t in range(n_taps):
        rows[t] = (min(max(y + t - r, 0), height - 1) % n_ring) * stride
    _weighted_rows(ring.reshape(n_ring * stride), rows, taps, np.int64(0), n_taps, dst)


@jit_serial(inline="always")
def _pool_ring_rows(ring, weights, first, lo, hi, rows, dst):
    """dst = sum_{t = lo}^{hi - 1} weights[t] * ring[(first + t) % len(ring)], taps in order from 0.0.

    The column-pooled image rows of one pooled row's triangle (:func:`_weighted_rows`): the order in
    which ``pool_rows`` sums its taps, with each pooled value loaded and stored once instead of once
    per tap. ``rows`` is scratch (>= hi).
    """
    n_ring, m = ring.shape
    for t in range(lo, hi):
        rows[t] = ((first + t) % n_ring) * m
    _weighted_rows(ring.reshape(n_ring * m), rows, weights, lo, hi, dst)


@jit_serial(error_model="numpy")
def _stream_band(plane, taps, col_starts, row_starts, weights, offset, r0, r1, pooled):
    """Pooled rows ``r0 .. r1 - 1`` of one plane (see :func:`pooled_planes`).

    A function of its own, not inlined into :func:`pooled_planes`: both builds of that kernel call
    this one compiled body (and so do the row helpers it calls, which the stage kernels share). Inlined,
    each build compiled it anew: 5.1 s (serial) and 13.2 s (parallel) of a cold process, against
    0.9 + 3.3 s for the two builds and 1.7 s for this body now, at the same speed (CPU time, 256 x 256,
    steps 4 and 8, one process: 415 / 326 / 1,078 us against 428 / 334 / 1,072 us inlined).
    """
    height, width = plane.shape
    n_w = weights.shape[0]
    n_cols = col_starts.shape[0]
    m = n_cols * N_ORIENTATIONS
    y_lo = max(0, row_starts[r0] + offset)
    y_hi = min(height, row_starts[r1 - 1] + offset + n_w)
    if y_lo >= y_hi:
        return
    radius = (taps.shape[0] - 1) // 2
    n_ring = 2 * radius + 1
    padded = width + (-width) % 8
    # rows on cache lines, used [:width]: the y-smoothing's 8-value loads of the x-smoothed rows then
    # never straddle two lines (on np.empty's 16-32 byte alignment half of them did)
    xring = empty_aligned(n_ring * padded).reshape((n_ring, padded))
    sring = empty_aligned(3 * padded).reshape((3, padded))
    tap_rows = np.empty(taps.shape[0], np.int64)
    bin0 = np.empty(width, np.int64)
    w0 = empty_aligned(width)
    w1 = empty_aligned(width)
    gx, gy, work = orientation_scratch(width)
    lanes = column_lanes(width, n_w)
    # the last n_w image rows pooled along x, (n_cols, 8) flat each: a pooled row is summed from
    # them once its triangle's last row is in
    cring = empty_aligned(n_w * m).reshape((n_w, m))
    ring_rows = np.empty(n_w, np.int64)
    next_x = max(0, y_lo - 1 - radius)  # next row to smooth along x
    next_s = max(0, y_lo - 1)  # next row to smooth along y
    r = r0  # next pooled row to complete
    for y in range(y_lo, y_hi):
        while next_s <= min(y + 1, height - 1):
            while next_x <= min(next_s + radius, height - 1):
                convolve_x(plane[next_x], taps, xring[next_x % n_ring][:width])
                next_x += 1
            _convolve_y_ring(xring, taps, next_s, height, tap_rows, sring[next_s % 3][:width])
            next_s += 1
        # the np.gradient stencil of orientation_field, on the ring of smoothed rows
        y_up, y_down, fy = gradient_neighbours(y, height)
        orientation_row(sring[y % 3][:width], sring[y_up % 3][:width], sring[y_down % 3][:width], fy, gx, gy,
                        work, bin0, w0, w1)
        pool_columns_row(bin0, w0, w1, col_starts, weights, offset, lanes, cring[y % n_w])
        # pooled rows whose triangle ends at this row (or at the image's last row), in order: image
        # rows first + lo .. first + hi - 1, as pool_rows clips them
        while r < r1 and min(row_starts[r] + offset + n_w, height) - 1 == y:
            first = row_starts[r] + offset
            _pool_ring_rows(cring, weights, first, max(0, -first), min(n_w, height - first), ring_rows,
                            pooled[r].reshape(m))
            r += 1


#: operations per pixel of :func:`pooled_planes` (the size rule's estimate)
STREAM_WORK_PER_PIXEL = 60


@jit_both(work=lambda planes, *rest: STREAM_WORK_PER_PIXEL * planes.size, error_model="numpy")
def pooled_planes(planes, taps, col_starts, row_starts, weights, offset, n_bands, pooled):
    """Smoothing, orientation field and triangular pooling of each plane, fused (one pass over rows).

    ``planes`` (P, H, W); ``pooled`` (P, len(row_starts), len(col_starts), 8) receives, for plane p,
    what ``pool_rows(pool_columns(orientation_field(smooth_separable(planes[p], taps))))`` gives.
    ``n_bands`` bands of pooled rows run in parallel in the parallel build (1 is the cheapest serial).
    Every pooled row's triangle must overlap the image (``0 <= row_starts + offset < H`` and a
    positive end, as :func:`~bowlrp.bow.sift_grid.frame_layout` lays frames out): a row outside it
    is left unwritten here, where ``pool_rows`` would give zeros.
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
