"""Numba kernels of the BoW branch: Gram matrices, per-dimension kernel contributions and the
gradient of a kernel expansion (the Taylor step).

Private: these functions take validated, C-contiguous float64 arrays and write into preallocated
outputs. The public wrappers live in :mod:`bowlrp.bow.kernels`, whose registry is the only place that
maps kernel names to the codes below; each kernel here has a numpy twin in
``tests/bowlrp/bow/test_kernels.py`` (the gradient's in ``test_decompose.py``).

Layout choice (why ``YT`` is transposed): for a fixed row ``x_i`` the kernels loop over the
dimensions ``d`` and, inside, over the columns ``j`` of ``YT[d, :]``. The inner loop is then a plain
element-wise update of a row of accumulators, which LLVM vectorises without fastmath (there is no
floating-point reduction to reassociate), and every ``(i, j)`` entry is still summed in the fixed
order d = 0, 1, 2, ... so results do not depend on the number of threads. Dimensions with
``x_id == 0`` are skipped for the histogram kernels, where their terms are exactly zero for
non-negative inputs; BoW histograms are often sparse, so this is a large saving.

Kernel codes (``kind``, the ``code`` of the built-in entries of the registry):

====  ==============  =========================================================
code  name            per-channel value
====  ==============  =========================================================
0     linear          sum_d x_d y_d
1     intersection    sum_d min(x_d, y_d)
2     chi2 (additive) sum_d 2 x_d y_d / (x_d + y_d), 0/0 := 0
3     hellinger       sum_d sqrt(x_d) sqrt(y_d)
4     exp_chi2        exp(-gamma * sum_d (x_d - y_d)^2 / (x_d + y_d)), 0/0 := 0
5     rbf             exp(-gamma * sum_d (x_d - y_d)^2)
====  ==============  =========================================================

The exp-chi2 distance uses the identity (x - y)^2 / (x + y) = x + y - 4 x y / (x + y), so only the
dimensions where both histograms are non-zero cost a division; the channel sums of ``x`` and ``y``
are precomputed (``sx``, ``sy``). The distance is clipped at 0 against rounding.

``error_model="numpy"``: numba's default Python error model checks every float division for a zero
divisor (to raise ZeroDivisionError), and that check stops LLVM from vectorising the chi2 loops. Every
division here has a provably positive denominator (or is guarded), so nothing changes but speed.
"""

from __future__ import annotations

import math

import numpy as np

from bowlrp.jit import jit_both, jit_serial, prange

LINEAR, INTERSECTION, CHI2, HELLINGER, EXP_CHI2, RBF = 0, 1, 2, 3, 4, 5


@jit_serial
def _channel_sums(X, bounds, out):
    """out[i, u] = sum of X[i, bounds[u]:bounds[u+1]] (left to right)."""
    for i in range(X.shape[0]):
        for u in range(bounds.shape[0] - 1):
            s = 0.0
            for d in range(bounds[u], bounds[u + 1]):
                s += X[i, d]
            out[i, u] = s


# Cache blocking of the Gram kernel: a thread owns CHUNK consecutive rows; for one tile of TILE columns
# the (V, TILE) slab of YT (512 KB for V = 512) stays in L2 while the thread walks its rows in blocks of
# BLOCK, and each YT[d, tile] line stays in L1 while the BLOCK rows use it.
CHUNK, BLOCK, TILE = 32, 4, 128


@jit_serial(error_model="numpy")
def _accumulate_block(X, b0, b1, YT, d0, d1, kind, t0, t1, acc):
    """acc[r, k] = sum over d in [d0, d1) of the kind's term for (X[b0 + r, d], YT[d, t0 + k])."""
    width = t1 - t0
    for r in range(b1 - b0):
        for k in range(width):
            acc[r, k] = 0.0
    for d in range(d0, d1):
        y = YT[d, t0:t1]
        for r in range(b1 - b0):
            a = acc[r]
            xd = X[b0 + r, d]
            if kind == RBF:
                for k in range(width):
                    diff = xd - y[k]
                    a[k] += diff * diff
            elif xd == 0.0:
                # zero terms for linear / intersection / chi2 / hellinger / exp-chi2 (non-negative data)
                continue
            elif kind == LINEAR or kind == HELLINGER:
                # for hellinger, X and YT already hold square roots (see the wrapper)
                for k in range(width):
                    a[k] += xd * y[k]
            elif kind == INTERSECTION:
                for k in range(width):
                    a[k] += min(xd, y[k])
            else:
                # CHI2 and EXP_CHI2: xd > 0 and y >= 0, so the denominator is > 0 (no 0/0 here)
                for k in range(width):
                    a[k] += xd * y[k] / (xd + y[k])


def _gram(X, YT, bounds, weights, kind, gamma, sx, sy, row0, symmetric, out):
    """Weighted multi-channel Gram block: out[i, j] = sum_u weights[u] * k_u(X[i], YT[:, j]).

    ``X`` (n, V) rows, ``YT`` (V, m) columns (transposed), ``bounds`` (n_channels + 1,) int64 channel
    boundaries, ``sx`` (n, n_channels) / ``sy`` (m, n_channels) channel sums (used by exp-chi2 only).
    When ``symmetric``, row ``i`` of this block is global row ``row0 + i`` and at least the columns
    ``j >= row0 + i`` are written (whole tiles; the wrapper mirrors the upper triangle). Every entry is
    summed over d in increasing order, whatever the blocking or the number of threads. Parallel over
    chunks of rows.
    """
    n = X.shape[0]
    m = YT.shape[1]
    n_ch = weights.shape[0]
    n_chunks = (n + CHUNK - 1) // CHUNK
    for c in prange(n_chunks):
        acc = np.empty((BLOCK, TILE))
        i_start = c * CHUNK
        i_stop = min(n, i_start + CHUNK)
        for t0 in range(0, m, TILE):
            t1 = min(m, t0 + TILE)
            for b0 in range(i_start, i_stop, BLOCK):
                b1 = min(i_stop, b0 + BLOCK)
                if symmetric and t1 <= row0 + b0:
                    continue  # this tile lies below the diagonal for every row of the block
                for r in range(b0, b1):
                    for j in range(t0, t1):
                        out[r, j] = 0.0
                for u in range(n_ch):
                    _accumulate_block(X, b0, b1, YT, bounds[u], bounds[u + 1], kind, t0, t1, acc)
                    w = weights[u]
                    for r in range(b0, b1):
                        a = acc[r - b0]
                        if kind == LINEAR or kind == INTERSECTION or kind == HELLINGER:
                            for j in range(t0, t1):
                                out[r, j] += w * a[j - t0]
                        elif kind == CHI2:
                            for j in range(t0, t1):
                                out[r, j] += w * (2.0 * a[j - t0])
                        elif kind == EXP_CHI2:
                            for j in range(t0, t1):
                                dist = sx[r, u] + sy[j, u] - 4.0 * a[j - t0]
                                if dist < 0.0:
                                    dist = 0.0
                                out[r, j] += w * math.exp(-gamma * dist)
                        else:  # RBF
                            for j in range(t0, t1):
                                out[r, j] += w * math.exp(-gamma * a[j - t0])


# The same body twice: parallel over row chunks for big matrices, serial for small ones (kernel rows of
# a few images, as prediction and explanation compute them); the caller picks with ``.build(work)``.
gram_kernel = jit_both(_gram, error_model="numpy")


def _dimension_contributions(SV, coef, X, dim_weights, kind, out):
    """out[o, j, d] = dim_weights[d] * sum_i coef[o, i] * k_d(SV[i, d], X[j, d]).

    For the sum-decomposable kinds (linear, intersection, chi2, hellinger) only. The sum over ``i``
    runs in index order, for all dimensions of a row at once: the loop over ``d`` is the inner one,
    so it vectorises and the V sums advance side by side (one sum at a time, each term waited for the
    previous one: 3-10x slower), each still adding its terms one after the other. Parallel over the
    rows ``j`` of ``X``.
    """
    n_out, n_sv = coef.shape[0], SV.shape[0]
    n, V = X.shape[0], X.shape[1]
    for j in prange(n):
        x = X[j]
        for o in range(n_out):
            acc = out[o, j]
            for d in range(V):
                acc[d] = 0.0
            for i in range(n_sv):
                s, c = SV[i], coef[o, i]
                if kind == LINEAR:
                    for d in range(V):
                        acc[d] += c * (s[d] * x[d])
                elif kind == INTERSECTION:
                    for d in range(V):
                        acc[d] += c * min(s[d], x[d])
                elif kind == HELLINGER:
                    for d in range(V):
                        acc[d] += c * (math.sqrt(s[d]) * math.sqrt(x[d]))
                else:  # CHI2, 0/0 := 0
                    for d in range(V):
                        den = s[d] + x[d]
                        acc[d] += c * (2.0 * s[d] * x[d] / den if den > 0.0 else 0.0)
            for d in range(V):
                acc[d] *= dim_weights[d]


dimension_contributions_kernel = jit_both(_dimension_contributions, error_model="numpy")


@jit_serial(error_model="numpy")
def sparse_cross(S, i, idx, p0, p1, ZT, n, kind, out):
    """out[k] += the sum over the non-zero dimensions d = idx[p0:p1] (increasing) of the vector S[i] of
    s_d z_d / (s_d + z_d) for EXP_CHI2, s_d z_d otherwise, at the points ZT[:, k], k < n (one point per
    column: the inner loops run over the points and vectorise). The exp-chi2 and dot-product cross
    terms of a kernel expansion's value (the root search) and of its gradient.

    Four dimensions per pass over the points, added ((out + t_a) + t_b) + ... in increasing order (the
    numbers of one dimension per pass; out[k] loaded and stored once per four terms: 20-35 % faster).
    """
    p4 = p1 - (p1 - p0) % 4
    for p in range(p0, p4, 4):
        da, db, dc, dd = idx[p], idx[p + 1], idx[p + 2], idx[p + 3]
        sa, sb, sc, sd = S[i, da], S[i, db], S[i, dc], S[i, dd]
        ra, rb, rc, rd = ZT[da], ZT[db], ZT[dc], ZT[dd]
        if kind == EXP_CHI2:  # s > 0: no 0/0; z = 0 adds 0
            for k in range(n):
                za, zb, zc, zd = ra[k], rb[k], rc[k], rd[k]
                ta, tb = sa * za / (sa + za), sb * zb / (sb + zb)
                tc, td = sc * zc / (sc + zc), sd * zd / (sd + zd)
                out[k] = (((out[k] + ta) + tb) + tc) + td
        else:
            for k in range(n):
                out[k] = (((out[k] + sa * ra[k]) + sb * rb[k]) + sc * rc[k]) + sd * rd[k]
    for p in range(p4, p1):
        d = idx[p]
        sd = S[i, d]
        row = ZT[d]
        if kind == EXP_CHI2:
            for k in range(n):
                out[k] += sd * row[k] / (sd + row[k])
        else:
            for k in range(n):
                out[k] += sd * row[k]


@jit_serial(error_model="numpy")
def transposed(Z):
    """``np.ascontiguousarray(Z.T)`` of a C-contiguous (n, V) array, eight rows of Z at a time.

    Each pass reads eight rows of Z from start to end and writes eight neighbouring values of every
    row of the result. Column by column, the reads of one column lie a row apart, and when a row is a
    multiple of 4 KiB (512 or 1,024 float64 words) they all fall in one cache set and evict each
    other: 96 roots x 1,024 words took 490 us, against 26 us this way.
    """
    n, m = Z.shape
    ZT = np.empty((m, n))
    k0 = 0
    while k0 + 8 <= n:
        z0, z1, z2, z3 = Z[k0], Z[k0 + 1], Z[k0 + 2], Z[k0 + 3]
        z4, z5, z6, z7 = Z[k0 + 4], Z[k0 + 5], Z[k0 + 6], Z[k0 + 7]
        for d in range(m):
            row = ZT[d]
            row[k0], row[k0 + 1], row[k0 + 2], row[k0 + 3] = z0[d], z1[d], z2[d], z3[d]
            row[k0 + 4], row[k0 + 5], row[k0 + 6], row[k0 + 7] = z4[d], z5[d], z6[d], z7[d]
        k0 += 8
    for k in range(k0, n):
        z = Z[k]
        for d in range(m):
            ZT[d, k] = z[d]
    return ZT


@jit_serial(error_model="numpy")
def expansion_gradient(Z, S, coef, bounds, weights, kind, gamma, out):
    """out[k, d] = df/dz_d at the point Z[k] of f(z) = sum_u weights[u] sum_i coef[i] k_u(S[i], z).

    For the differentiable kinds (LINEAR, EXP_CHI2, RBF). exp-chi2: dk/dz_d = k gamma (4 s_d^2 /
    (s_d + z_d)^2 - 1), the fraction 0 where s_d = z_d = 0; RBF: dk/dz_d = 2 gamma k (s_d - z_d);
    linear: s_d. Serial and row by row: each point's gradient does not depend on the other rows.

    Support vectors are sparse histograms, so the work per (point, support vector) runs over the
    vector's non-zero dimensions only: the kernel value through the identities of the Gram kernel
    (exp-chi2: sum_d (s - z)^2 / (s + z) = sum s + sum z - 4 sum_{s_d > 0} s z / (s + z); RBF:
    ||s - z||^2 = ||s||^2 + ||z||^2 - 2 s.z, both clipped at 0), and the gradient's constant parts
    (-gamma w for exp-chi2, -2 gamma w z_d for RBF) added once per channel.
    """
    n_sv = S.shape[0]
    n_ch = bounds.shape[0] - 1
    # non-zero dimensions of each support vector, per channel: idx[start[i, u]:start[i, u + 1]]
    nnz = 0
    for i in range(n_sv):
        for d in range(S.shape[1]):
            if S[i, d] != 0.0:
                nnz += 1
    idx = np.empty(nnz, dtype=np.int64)
    start = np.empty((n_sv, n_ch + 1), dtype=np.int64)
    own = np.zeros((n_sv, n_ch))  # sum of s (exp-chi2) or of s^2 (RBF) per channel
    pos = 0
    for i in range(n_sv):
        for u in range(n_ch):
            start[i, u] = pos
            for d in range(bounds[u], bounds[u + 1]):
                v = S[i, d]
                if v != 0.0:
                    idx[pos] = d
                    pos += 1
                    own[i, u] += v * v if kind == RBF else v
        start[i, n_ch] = pos
    # Column layout (as in the Gram kernel): dimensions outside, points inside, so that every inner
    # loop runs over the n points contiguously and vectorises; ZT and gT are (V, n).
    n = Z.shape[0]
    ZT = transposed(Z)
    gT = np.zeros((Z.shape[1], n))
    zsum = np.empty(n)
    cross = np.empty(n)
    wk = np.empty(n)
    base = np.empty(n)
    for u in range(n_ch):
        lo = bounds[u]
        hi = bounds[u + 1]
        if kind == LINEAR:
            for i in range(n_sv):
                w = weights[u] * coef[i]
                for p in range(start[i, u], start[i, u + 1]):
                    d = idx[p]
                    g = gT[d]
                    for k in range(n):
                        g[k] += w * S[i, d]
            continue
        for k in range(n):
            zsum[k] = 0.0
            base[k] = 0.0
        for d in range(lo, hi):
            row = ZT[d]
            for k in range(n):
                zsum[k] += row[k] * row[k] if kind == RBF else row[k]
        for i in range(n_sv):
            for k in range(n):
                cross[k] = 0.0
            sparse_cross(S, i, idx, start[i, u], start[i, u + 1], ZT, n, kind, cross)
            scale = 4.0 if kind == EXP_CHI2 else 2.0
            for k in range(n):
                dist = own[i, u] + zsum[k] - scale * cross[k]
                if dist < 0.0:
                    dist = 0.0
                wk[k] = weights[u] * coef[i] * math.exp(-gamma * dist)
            for p in range(start[i, u], start[i, u + 1]):
                d = idx[p]
                sd = S[i, d]
                row = ZT[d]
                g = gT[d]
                if kind == EXP_CHI2:
                    for k in range(n):
                        den = sd + row[k]
                        g[k] += wk[k] * gamma * (4.0 * sd * sd / (den * den))
                else:
                    for k in range(n):
                        g[k] += 2.0 * gamma * wk[k] * sd
            for k in range(n):
                base[k] += wk[k] * gamma if kind == EXP_CHI2 else 2.0 * gamma * wk[k]
        for d in range(lo, hi):
            g = gT[d]
            row = ZT[d]
            if kind == EXP_CHI2:
                for k in range(n):
                    g[k] -= base[k]
            else:
                for k in range(n):
                    g[k] -= base[k] * row[k]
    for k in range(n):
        for d in range(Z.shape[1]):
            out[k, d] = gT[d, k]

