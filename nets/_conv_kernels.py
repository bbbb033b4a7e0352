"""numba kernels of the network branch's convolutions (private): the im2col layouts the layers'
GEMMs read and their transposes. Each kernel has a slow numpy twin in ``tests/nets/test_kernels.py``.

* ``im2col`` writes one row per output position, ``row = (n * OH + oh) * OW + ow``, and one column per
  (input channel, kernel row, kernel column), ``col = (c * KH + i) * KW + j``: the column order of
  ``W.reshape(out_channels, -1)``; training's weight gradient is one GEMM ``grad @ cols``.
* ``unfold`` / ``fold`` / ``fold_same``: one (K, P) matrix per image, for the forward GEMM
  ``W2 (O, K) @ cols (K, P)`` and its transpose (the relevance pass), described below.

Their parallel builds split as ``nets/_kernels.py`` says (over images, or image x channel pairs:
no races, a fixed order, the same numbers as the serial build).
"""

from __future__ import annotations

from bowlrp.jit import jit_both, jit_serial, prange


@jit_both
def im2col(x, kh, kw, sh, sw, ph, pw, out):  # pragma: no cover - compiled
    n_img, n_ch, h, w = x.shape
    oh_n = (h + 2 * ph - kh) // sh + 1
    ow_n = (w + 2 * pw - kw) // sw + 1
    for n in prange(n_img):
        for oh in range(oh_n):
            for ow in range(ow_n):
                row = (n * oh_n + oh) * ow_n + ow
                y0 = oh * sh - ph
                x0 = ow * sw - pw
                for c in range(n_ch):
                    for i in range(kh):
                        yy = y0 + i
                        base = (c * kh + i) * kw
                        if yy < 0 or yy >= h:
                            for j in range(kw):
                                out[row, base + j] = 0.0
                        else:
                            for j in range(kw):
                                xx = x0 + j
                                if xx < 0 or xx >= w:
                                    out[row, base + j] = 0.0
                                else:
                                    out[row, base + j] = x[n, c, yy, xx]


# ``unfold`` / ``fold``: the im2col layout the convolution layers use, one (K, P) matrix per image
# (``out[n, (c * KH + i) * KW + j, oh * OW + ow]``). Every row is one shifted copy of an input row,
# so with stride 1 both kernels stream contiguous memory (the row-per-position ``im2col`` above
# gathers across channels, which made it cost as much as the GEMM); and ``W2 (O, K) @ cols (K, P)``
# lands directly in the NCHW output. Parallel over (image, channel) pairs: each writes its own rows
# (unfold) or its own output plane (fold), so there are no races and the order is fixed.
# The row copies and adds are loops over sub-views from index 0 into flat views (the index is
# provably non-negative, so numba's wrap-around branch folds away and LLVM vectorises the loop):
# 3-4x faster than slice assignments, which cost ~50 ns each on rows of 8-64 elements (LeNet's
# second convolution, batch 256: unfold 56 -> 20 ms, fold 51 -> 11 ms; the same numbers).
@jit_serial(inline="always")
def _tap_columns(j, sw, pw, w, ow_n):  # pragma: no cover - compiled
    """``[lo, hi)``: the output columns whose kernel column ``j`` falls inside the image."""
    lo = max(0, (pw - j + sw - 1) // sw)
    return lo, max(lo, min(ow_n, (w - 1 + pw - j) // sw + 1))


@jit_serial(inline="always")
def _tap_rows(i, ph, oh0, rows, h):  # pragma: no cover - compiled
    """``[r_lo, r_hi)``: the band's output rows (stride 1, first row ``oh0``) whose kernel row ``i``
    falls inside the image."""
    r_lo = min(rows, max(0, ph - i - oh0))
    return r_lo, max(r_lo, min(rows, h + ph - i - oh0))


@jit_serial(inline="always")
def _fold_plane(nc, n_ch, plane, zero, of):  # pragma: no cover - compiled
    """``(image, channel, offset)`` of output plane ``nc`` (``plane`` values), zeroed if ``zero``."""
    o_plane = nc * plane
    if zero:
        for t in range(plane):
            of[o_plane + t] = 0.0
    return nc // n_ch, nc % n_ch, o_plane


@jit_both
def unfold(x, kh, kw, sh, sw, ph, pw, oh0, out):  # pragma: no cover - compiled
    """Output rows ``oh0 .. oh0 + out.shape[2] // OW`` (a band of them, or all with ``oh0 = 0``).
    ``x`` and ``out`` are C-contiguous (addressed in their flat views)."""
    n_img, n_ch, h, w = x.shape
    ow_n = (w + 2 * pw - kw) // sw + 1
    k_n, p_n = out.shape[1], out.shape[2]
    rows = p_n // ow_n
    xf = x.reshape(-1)
    of = out.reshape(-1)
    # stride 1 and "same" width (2 pw = kw - 1: LeNet's and VGG's convolutions): an input row and an
    # output row have the same length, so a tap's rows inside the image are ONE contiguous span of
    # x shifted by the tap's offset: one long copy, then the few wrapped-around edge entries of
    # each row set to zero (the per-row copies of 8-28 elements cost their loop set-up each)
    span = sh == 1 and sw == 1 and ow_n == w
    for nc in prange(n_img * n_ch):
        n, c = nc // n_ch, nc % n_ch
        x_plane = nc * h * w
        for i in range(kh):
            for j in range(kw):
                o_row0 = (n * k_n + (c * kh + i) * kw + j) * p_n
                lo, hi = _tap_columns(j, sw, pw, w, ow_n)
                x0 = j - pw
                if span:
                    r_lo, r_hi = _tap_rows(i, ph, oh0, rows, h)
                    for t in range(r_lo * ow_n):
                        of[o_row0 + t] = 0.0
                    for t in range(r_hi * ow_n, rows * ow_n):
                        of[o_row0 + t] = 0.0
                    if r_hi > r_lo:
                        d0 = o_row0 + r_lo * ow_n
                        s0 = x_plane + (oh0 + r_lo - ph + i) * w + x0
                        length = (r_hi - r_lo) * w - lo - (ow_n - hi)
                        src = xf[s0 + lo : s0 + lo + length]
                        dst = of[d0 + lo : d0 + lo + length]
                        for t in range(length):
                            dst[t] = src[t]
                        for r in range(r_hi - r_lo):  # the entries that wrapped around a row edge
                            for t in range(lo):
                                of[d0 + r * ow_n + t] = 0.0
                            for t in range(hi, ow_n):
                                of[d0 + r * ow_n + t] = 0.0
                    continue
                for r in range(rows):
                    yy = (oh0 + r) * sh - ph + i
                    base = o_row0 + r * ow_n
                    if yy < 0 or yy >= h:
                        for t in range(ow_n):
                            of[base + t] = 0.0
                        continue
                    for t in range(lo):
                        of[base + t] = 0.0
                    xb = x_plane + yy * w + x0
                    if sw == 1:
                        src = xf[xb + lo : xb + hi]
                        dst = of[base + lo : base + hi]
                        for t in range(hi - lo):
                            dst[t] = src[t]
                    else:
                        for ow in range(lo, hi):
                            of[base + ow] = xf[xb + ow * sw]
                    for t in range(hi, ow_n):
                        of[base + t] = 0.0


@jit_both
def fold(cols, kh, kw, sh, sw, ph, pw, oh0, zero, out):  # pragma: no cover - compiled
    """The transpose of ``unfold`` (same band arguments): overlapping contributions are added, to
    zeros (``zero``) or to what ``out`` holds (the next band of the same images). ``out`` is
    C-contiguous (addressed in its flat view); ``cols`` may be any view with unit-stride rows
    (the Flat rule passes one row broadcast to every kernel tap)."""
    n_img, n_ch, h, w = out.shape
    ow_n = (w + 2 * pw - kw) // sw + 1
    rows = cols.shape[2] // ow_n
    of = out.reshape(-1)
    for nc in prange(n_img * n_ch):
        n, c, o_plane = _fold_plane(nc, n_ch, h * w, zero, of)
        for i in range(kh):
            for j in range(kw):
                col = cols[n, (c * kh + i) * kw + j]
                lo, hi = _tap_columns(j, sw, pw, w, ow_n)
                x0 = j - pw
                for r in range(rows):
                    yy = (oh0 + r) * sh - ph + i
                    if yy < 0 or yy >= h:
                        continue
                    base = r * ow_n
                    ob = o_plane + yy * w + x0
                    if sw == 1:
                        src = col[base + lo : base + hi]
                        dst = of[ob + lo : ob + hi]
                        for t in range(hi - lo):
                            dst[t] += src[t]
                    else:
                        for ow in range(lo, hi):
                            of[ob + ow * sw] += col[base + ow]


@jit_both
def fold_same(cols, kh, kw, ph, pw, oh0, zero, times, out):  # pragma: no cover - compiled
    """``fold`` for stride 1 and "same" width (``2 pw = kw - 1``: an input row as long as an output
    row), with ``cols`` a C-contiguous scratch matrix that it overwrites: each tap's rows are one
    contiguous span added at once, after its entries that fall outside the image (which the span
    would wrap onto the neighbouring row's edge) are set to zero. Each pixel gets the taps in the
    same order as ``fold``; a pixel a tap does not reach gets + 0.0 (the same value, but a -0.0
    becomes 0.0). A non-empty ``times`` (``out``'s shape, C-contiguous: the images' last band) is
    multiplied into each finished plane while it is in cache (LRP's ``x * W^T s``)."""
    n_img, n_ch, h, w = out.shape
    k_n, p_n = cols.shape[1], cols.shape[2]
    rows = p_n // w
    cf = cols.reshape(-1)
    of = out.reshape(-1)
    for nc in prange(n_img * n_ch):
        n, c, o_plane = _fold_plane(nc, n_ch, h * w, zero, of)
        for i in range(kh):
            r_lo, r_hi = _tap_rows(i, ph, oh0, rows, h)
            if r_hi == r_lo:
                continue
            for j in range(kw):
                c0 = (n * k_n + (c * kh + i) * kw + j) * p_n
                lo, hi = _tap_columns(j, 1, pw, w, w)
                for r in range(r_lo, r_hi):
                    for t in range(lo):
                        cf[c0 + r * w + t] = 0.0
                    for t in range(hi, w):
                        cf[c0 + r * w + t] = 0.0
                length = (r_hi - r_lo) * w - lo - (w - hi)
                s0 = c0 + r_lo * w + lo
                d0 = o_plane + (oh0 + r_lo - ph + i) * w + j - pw + lo
                src = cf[s0 : s0 + length]
                dst = of[d0 : d0 + length]
                for t in range(length):
                    dst[t] += src[t]
        if times.size:
            tf = times.reshape(-1)
            src = tf[o_plane : o_plane + h * w]
            dst = of[o_plane : o_plane + h * w]
            for t in range(h * w):
                dst[t] *= src[t]
