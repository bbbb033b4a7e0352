"""numba kernels of the network branch (private): pooling, the LRP rules' stabilised divisions,
row sums. The convolutions' im2col layouts are in ``nets/_conv_kernels.py``.

Every kernel takes arrays and writes into a preallocated output; the public layer and rule code in
``nets/layers/`` and ``nets/propagation.py`` validates shapes and dtypes before calling them. Each
kernel has a slow numpy twin in ``tests/nets/test_kernels.py``. Layout: NCHW everywhere.

Parallel kernels split over the batch (or batch x channel) only: every slice is written by one
thread, so there are no races and the summation order inside a sample is fixed (deterministic
results, identical between the parallel and the serial build).
"""

from __future__ import annotations

import numpy as np

from bowlrp.jit import jit_both, jit_serial, prange

#: every kernel is compiled twice (``prange`` parallel and serial, same source; the tests check both)
#: and a call runs the build the project's size rule picks from the output size
#: (:func:`bowlrp.jit.use_parallel`)
_parallel_or_serial = jit_both


@_parallel_or_serial
def max_pool(x, kh, kw, sh, sw, ph, pw, out):  # pragma: no cover - compiled
    # padded positions never win (they are -inf, as in PyTorch and ONNX)
    n_img, n_ch, h, w = x.shape
    oh_n, ow_n = out.shape[2], out.shape[3]
    for n in prange(n_img):
        for c in range(n_ch):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    best = -np.inf
                    for i in range(kh):
                        yy = oh * sh - ph + i
                        if yy < 0 or yy >= h:
                            continue
                        for j in range(kw):
                            xx = ow * sw - pw + j
                            if xx >= 0 and xx < w and x[n, c, yy, xx] > best:
                                best = x[n, c, yy, xx]
                    out[n, c, oh, ow] = best


@_parallel_or_serial
def max_pool_scatter(x, y, r, kh, kw, sh, sw, ph, pw, out):  # pragma: no cover - compiled
    """Winner takes all: ``r`` of each window goes to the inputs equal to the window's maximum
    ``y``; ties share it equally. Serves both the relevance and the gradient pass."""
    n_img, n_ch, h, w = x.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    for n in prange(n_img):
        for c in range(n_ch):
            for yy in range(h):
                for xx in range(w):
                    out[n, c, yy, xx] = 0.0
            for oh in range(oh_n):
                for ow in range(ow_n):
                    if r[n, c, oh, ow] == 0:
                        continue  # nothing to hand out (dead ReLU, lost window): skip the search
                    m = y[n, c, oh, ow]
                    count = 0
                    for i in range(kh):
                        yy = oh * sh - ph + i
                        if yy < 0 or yy >= h:
                            continue
                        for j in range(kw):
                            xx = ow * sw - pw + j
                            if xx >= 0 and xx < w and x[n, c, yy, xx] == m:
                                count += 1
                    if count == 0:
                        continue
                    share = r[n, c, oh, ow] / count
                    for i in range(kh):
                        yy = oh * sh - ph + i
                        if yy < 0 or yy >= h:
                            continue
                        for j in range(kw):
                            xx = ow * sw - pw + j
                            if xx >= 0 and xx < w and x[n, c, yy, xx] == m:
                                out[n, c, yy, xx] += share


@_parallel_or_serial
def avg_pool(x, kh, kw, sh, sw, ph, pw, include_pad, out):  # pragma: no cover - compiled
    n_img, n_ch, h, w = x.shape
    oh_n, ow_n = out.shape[2], out.shape[3]
    for n in prange(n_img):
        for c in range(n_ch):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    acc = 0.0
                    count = 0
                    for i in range(kh):
                        yy = oh * sh - ph + i
                        if yy < 0 or yy >= h:
                            continue
                        for j in range(kw):
                            xx = ow * sw - pw + j
                            if xx >= 0 and xx < w:
                                acc += x[n, c, yy, xx]
                                count += 1
                    div = kh * kw if include_pad else count
                    out[n, c, oh, ow] = acc / div if div > 0 else 0.0


@_parallel_or_serial
def avg_pool_transpose(s, kh, kw, sh, sw, ph, pw, include_pad, out):  # pragma: no cover - compiled
    """Transpose of ``avg_pool``: every window hands ``s / divisor`` to each of its inputs."""
    n_img, n_ch, h, w = out.shape
    oh_n, ow_n = s.shape[2], s.shape[3]
    for n in prange(n_img):
        for c in range(n_ch):
            for yy in range(h):
                for xx in range(w):
                    out[n, c, yy, xx] = 0.0
            for oh in range(oh_n):
                for ow in range(ow_n):
                    count = 0
                    if include_pad:
                        count = kh * kw
                    else:
                        for i in range(kh):
                            yy = oh * sh - ph + i
                            if yy < 0 or yy >= h:
                                continue
                            for j in range(kw):
                                xx = ow * sw - pw + j
                                if xx >= 0 and xx < w:
                                    count += 1
                    if count == 0:
                        continue
                    share = s[n, c, oh, ow] / count
                    for i in range(kh):
                        yy = oh * sh - ph + i
                        if yy < 0 or yy >= h:
                            continue
                        for j in range(kw):
                            xx = ow * sw - pw + j
                            if xx >= 0 and xx < w:
                                out[n, c, yy, xx] += share


@jit_serial(inline="always")
def _stabilised_quotient(rk, zk, eps):  # pragma: no cover - compiled
    """``rk / (zk + eps * sign0(zk))``, sign0(0) = +1, and 0 where that denominator is 0.

    Written so that LLVM vectorises the loops calling it (one select in the divisor, the division
    always made: 2x faster): a zero denominator divides by infinity, which gives 0 (signed like
    ``rk``); every other quotient is the plain division, bit for bit."""
    d = zk + (eps if zk >= 0 else -eps)  # (zk + -eps is zk - eps exactly)
    return rk / (d if d != 0 else np.inf)


@_parallel_or_serial
def stabilised_divide(r, z, eps, out):  # pragma: no cover - compiled
    """``out = r / (z + eps * sign0(z))`` with sign0(0) = +1, and 0 wherever the denominator is 0
    (0/0 -> 0: relevance over a zero denominator is absorbed, never NaN). Flat 1-D arrays."""
    for k in prange(r.shape[0]):
        out[k] = _stabilised_quotient(r[k], z[k], eps)


@_parallel_or_serial
def stabilised_divide_stacked(r, stacked, start, b, eps, out):  # pragma: no cover - compiled
    """``stabilised_divide`` of ``r`` (N, O, P) by ``z = stacked[:, start:start + O] + b`` (``b`` per
    channel, or empty for none), read in place from the stacked forward GEMM's output (N, K, P)
    instead of a contiguous copy: the same z (``a + b`` in the arrays' dtype) and the same
    division. All arrays C-contiguous."""
    n_img, o_n, p_n = r.shape
    with_b = b.shape[0] > 0
    for nc in prange(n_img * o_n):
        n, c = nc // o_n, nc % o_n
        zrow = stacked[n, start + c]
        rrow = r[n, c]
        orow = out[n, c]
        if with_b:  # (two loops: no add in the loop without a bias)
            bc = b[c]
            for t in range(p_n):
                orow[t] = _stabilised_quotient(rrow[t], zrow[t] + bc, eps)
        else:
            for t in range(p_n):
                orow[t] = _stabilised_quotient(rrow[t], zrow[t], eps)


@_parallel_or_serial
def safe_divide(r, d, out):  # pragma: no cover - compiled
    """``out = r / d`` and 0 where ``d == 0`` (for user-supplied stabilisers). Flat 1-D arrays."""
    for k in prange(r.shape[0]):
        out[k] = r[k] / d[k] if d[k] != 0 else 0.0


@_parallel_or_serial
def stabilised_divide_rows(r, z, eps, out):  # pragma: no cover - compiled
    """``stabilised_divide`` of every row of ``r`` (N, K) by one shared row ``z`` (K,): the
    denominator of the Flat and WSquare rules does not depend on the sample."""
    k_n = z.shape[0]
    d = np.empty(k_n, dtype=out.dtype)
    for k in range(k_n):
        zk = z[k]
        d[k] = zk + eps if zk >= 0 else zk - eps
        if d[k] == 0:
            d[k] = np.inf  # r / inf = 0 (see ``stabilised_divide``)
    for n in prange(r.shape[0]):
        for k in range(k_n):
            out[n, k] = r[n, k] / d[k]


# no-padding variants: every window lies inside the image, so the inner loops need no bounds checks
# (about 2x faster); the layers call them whenever padding is 0 (the common case)
@_parallel_or_serial
def max_pool_valid(x, kh, kw, sh, sw, out):  # pragma: no cover - compiled
    n_img, n_ch, h, w = x.shape
    oh_n, ow_n = out.shape[2], out.shape[3]
    if kh == 2 and kw == 2 and sh == 2 and sw == 2:
        # the common 2 x 2 pool in flat views (x and out C-contiguous): the same comparisons in the
        # same order as the general loop below, without its 4-D indexing (2x faster)
        xf = x.reshape(-1)
        of = out.reshape(-1)
        for nc in prange(n_img * n_ch):
            for oh in range(oh_n):
                a0 = (nc * h + 2 * oh) * w
                o0 = (nc * oh_n + oh) * ow_n
                for ow in range(ow_n):
                    a = a0 + 2 * ow
                    best = xf[a]
                    if xf[a + 1] > best:
                        best = xf[a + 1]
                    if xf[a + w] > best:
                        best = xf[a + w]
                    if xf[a + w + 1] > best:
                        best = xf[a + w + 1]
                    of[o0 + ow] = best
        return
    for nc in prange(n_img * n_ch):
        n, c = nc // n_ch, nc % n_ch
        for oh in range(oh_n):
            for ow in range(ow_n):
                best = x[n, c, oh * sh, ow * sw]
                for i in range(kh):
                    for j in range(kw):
                        v = x[n, c, oh * sh + i, ow * sw + j]
                        if v > best:
                            best = v
                out[n, c, oh, ow] = best


@_parallel_or_serial
def max_pool_scatter_valid(x, y, r, kh, kw, sh, sw, out):  # pragma: no cover - compiled
    n_img, n_ch, h, w = x.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    if kh == 2 and kw == 2 and sh == 2 and sw == 2:
        # the common 2 x 2 pool in flat views (all arrays C-contiguous): the windows do not
        # overlap, so each writes its four inputs once (the winner's r, ties r / count, else 0)
        # instead of zeroing the plane and adding; the same numbers (0 + v is v)
        xf = x.reshape(-1)
        yf = y.reshape(-1)
        rf = r.reshape(-1)
        of = out.reshape(-1)
        ragged = oh_n * 2 != h or ow_n * 2 != w
        for nc in prange(n_img * n_ch):
            if ragged:  # the last row or column belongs to no window
                for t in range(nc * h * w, (nc + 1) * h * w):
                    of[t] = 0.0
            for oh in range(oh_n):
                a0 = (nc * h + 2 * oh) * w
                o0 = (nc * oh_n + oh) * ow_n
                for ow in range(ow_n):
                    a = a0 + 2 * ow
                    # without branches (r is zero at random places): a zero r writes zeros,
                    # 0.0 + share as the general loop's "+=" into a zeroed plane
                    m = yf[o0 + ow]
                    e0 = xf[a] == m
                    e1 = xf[a + 1] == m
                    e2 = xf[a + w] == m
                    e3 = xf[a + w + 1] == m
                    count = int(e0) + int(e1) + int(e2) + int(e3)
                    rv = rf[o0 + ow]
                    share = 0.0 + (rv if count == 1 else rv / max(1, count))
                    of[a] = share if e0 else 0.0
                    of[a + 1] = share if e1 else 0.0
                    of[a + w] = share if e2 else 0.0
                    of[a + w + 1] = share if e3 else 0.0
        return
    for nc in prange(n_img * n_ch):
        n, c = nc // n_ch, nc % n_ch
        out[n, c] = 0.0
        for oh in range(oh_n):
            for ow in range(ow_n):
                rv = r[n, c, oh, ow]
                if rv == 0:
                    continue
                m = y[n, c, oh, ow]
                count = 0
                fi = 0
                fj = 0
                for i in range(kh):
                    for j in range(kw):
                        if x[n, c, oh * sh + i, ow * sw + j] == m:
                            if count == 0:
                                fi, fj = i, j
                            count += 1
                if count == 1:  # the usual case: one winner, no second pass
                    out[n, c, oh * sh + fi, ow * sw + fj] += rv
                elif count > 1:  # ties share equally
                    share = rv / count
                    for i in range(kh):
                        for j in range(kw):
                            if x[n, c, oh * sh + i, ow * sw + j] == m:
                                out[n, c, oh * sh + i, ow * sw + j] += share


@jit_serial
def any_positive(a):  # pragma: no cover - compiled
    """Whether the flat array ``a`` holds a value > 0, stopping at the first one: the LRP rules' check
    "x <= 0 everywhere" costs a full pass only when it is true (after a ReLU it stops at once)."""
    for k in range(a.shape[0]):
        if a[k] > 0:
            return True
    return False


@_parallel_or_serial
def row_sums(a, out):  # pragma: no cover - compiled
    """``out[i] = sum(a[i])`` accumulated in float64 whatever a's dtype (per-layer relevance sums of
    float32 runs stay accurate), without numpy's casting buffer. ``a`` is 2-D C-contiguous."""
    for i in prange(a.shape[0]):
        acc = 0.0
        for j in range(a.shape[1]):
            acc += a[i, j]
        out[i] = acc
