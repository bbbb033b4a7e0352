"""Numba kernels of the BoW branch: Gram matrices and per-dimension kernel contributions.

Private: these functions take validated, C-contiguous float64 arrays and write into preallocated
outputs. The public wrappers live in :mod:`bowlrp.kernels`; each kernel here has a numpy twin in
``tests/bowlrp/test_kernels.py``.

Layout choice (why ``YT`` is transposed): for a fixed row ``x_i`` the kernels loop over the
dimensions ``d`` and, inside, over the columns ``j`` of ``YT[d, :]``. The inner loop is then a plain
element-wise update of a row of accumulators, which LLVM vectorises without fastmath (there is no
floating-point reduction to reassociate), and every ``(i, j)`` entry is still summed in the fixed
order d = 0, 1, 2, ... so results do not depend on the number of threads. Dimensions with
``x_id == 0`` are skipped for the histogram kernels, where their terms are exactly zero for
non-negative inputs; BoW histograms are often sparse, so this is a large saving.

Kernel codes (``kind``):

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

from bowlrp._numba import jit_parallel, jit_serial, prange

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


@jit_serial(error_model="numpy")
def _accumulate_row(x, YT, d0, d1, kind, j0, acc):
    """acc[j - j0] = sum over d in [d0, d1) of the kind's term for (x[d], YT[d, j]), j >= j0."""
    m = YT.shape[1]
    for j in range(j0, m):
        acc[j - j0] = 0.0
    for d in range(d0, d1):
        xd = x[d]
        if kind == RBF:
            for j in range(j0, m):
                diff = xd - YT[d, j]
                acc[j - j0] += diff * diff
        elif xd == 0.0:
            # zero terms for linear / intersection / chi2 / hellinger / exp-chi2 (non-negative data)
            continue
        elif kind == LINEAR:
            for j in range(j0, m):
                acc[j - j0] += xd * YT[d, j]
        elif kind == INTERSECTION:
            for j in range(j0, m):
                acc[j - j0] += min(xd, YT[d, j])
        elif kind == HELLINGER:
            # YT already holds square roots (see the wrapper), x[d] too
            for j in range(j0, m):
                acc[j - j0] += xd * YT[d, j]
        else:
            # CHI2 and EXP_CHI2: xd > 0 and y >= 0, so the denominator is > 0 (no 0/0 here)
            for j in range(j0, m):
                y = YT[d, j]
                acc[j - j0] += xd * y / (xd + y)


@jit_parallel(error_model="numpy")
def gram_kernel(X, YT, bounds, weights, kind, gamma, sx, sy, row0, symmetric, out):
    """Weighted multi-channel Gram block: out[i, j] = sum_u weights[u] * k_u(X[i], YT[:, j]).

    ``X`` (n, V) rows, ``YT`` (V, m) columns (transposed), ``bounds`` (n_channels + 1,) int64 channel
    boundaries, ``sx`` (n, n_channels) / ``sy`` (m, n_channels) channel sums (used by exp-chi2 only).
    When ``symmetric``, row ``i`` of this block is global row ``row0 + i`` and only columns
    ``j >= row0 + i`` are written (the wrapper mirrors the rest). Parallel over rows.
    """
    n = X.shape[0]
    m = YT.shape[1]
    n_ch = weights.shape[0]
    for i in prange(n):
        j0 = row0 + i if symmetric else 0
        acc = np.empty(m - j0)
        for j in range(j0, m):
            out[i, j] = 0.0
        for u in range(n_ch):
            _accumulate_row(X[i], YT, bounds[u], bounds[u + 1], kind, j0, acc)
            w = weights[u]
            if kind == LINEAR or kind == INTERSECTION or kind == HELLINGER:
                for j in range(j0, m):
                    out[i, j] += w * acc[j - j0]
            elif kind == CHI2:
                for j in range(j0, m):
                    out[i, j] += w * (2.0 * acc[j - j0])
            elif kind == EXP_CHI2:
                for j in range(j0, m):
                    dist = sx[i, u] + sy[j, u] - 4.0 * acc[j - j0]
                    if dist < 0.0:
                        dist = 0.0
                    out[i, j] += w * math.exp(-gamma * dist)
            else:  # RBF
                for j in range(j0, m):
                    out[i, j] += w * math.exp(-gamma * acc[j - j0])


@jit_parallel(error_model="numpy")
def dimension_contributions_kernel(SVT, coef, X, dim_weights, kind, out):
    """out[o, j, d] = dim_weights[d] * sum_i coef[o, i] * k_d(SVT[d, i], X[j, d]).

    For the sum-decomposable kinds (linear, intersection, chi2, hellinger) only; ``SVT`` is the
    (V, n_sv) transposed support-vector matrix. The sum over ``i`` runs in index order.
    Parallel over the rows ``j`` of ``X``.
    """
    n_out = coef.shape[0]
    n_sv = SVT.shape[1]
    n = X.shape[0]
    V = X.shape[1]
    for j in prange(n):
        for d in range(V):
            xd = X[j, d]
            w = dim_weights[d]
            for o in range(n_out):
                out[o, j, d] = 0.0
            for i in range(n_sv):
                s = SVT[d, i]
                if kind == LINEAR:
                    kd = s * xd
                elif kind == INTERSECTION:
                    kd = min(s, xd)
                elif kind == HELLINGER:
                    kd = math.sqrt(s) * math.sqrt(xd)
                else:  # CHI2, 0/0 := 0
                    den = s + xd
                    kd = 2.0 * s * xd / den if den > 0.0 else 0.0
                for o in range(n_out):
                    out[o, j, d] += coef[o, i] * kd
            for o in range(n_out):
                out[o, j, d] *= w
