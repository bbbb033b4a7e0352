"""Numba kernels of the Taylor step (root search and gradient) of :mod:`bowlrp.bow.decompose`.

The root search evaluates one SVM output f(z) = b + sum_u w_u sum_i a_i k_u(x_i[u], z[u]) thousands of
times on a handful of points at once, so these kernels are serial (no thread start-up per call) and
loop over support vectors and dimensions directly. Private: the public wrappers in
:mod:`bowlrp.bow.decompose` (``KernelExpansion``) validate every input. Each kernel has a numpy twin in
``tests/bowlrp/test_decompose.py``.

``bounds`` (n_channels + 1,) int64 gives the dimension range of each channel; ``weights`` the channel
weights w_u. Codes: 0 linear, 1 exp-chi2, 2 RBF.
"""

from __future__ import annotations

import math

import numpy as np

from bowlrp.jit import jit_serial

LINEAR = 0
EXP_CHI2 = 1
RBF = 2


@jit_serial
def _channel_kernel(z, s, lo, hi, code, gamma):
    """k_u(s[lo:hi], z[lo:hi]) for one support vector s and one point z."""
    acc = 0.0
    if code == LINEAR:
        for d in range(lo, hi):
            acc += s[d] * z[d]
        return acc
    if code == EXP_CHI2:
        for d in range(lo, hi):
            den = s[d] + z[d]
            if den > 0.0:
                diff = s[d] - z[d]
                acc += diff * diff / den
        return math.exp(-gamma * acc)
    for d in range(lo, hi):  # RBF
        diff = s[d] - z[d]
        acc += diff * diff
    return math.exp(-gamma * acc)


@jit_serial
def _value_at(z, S, coef, bounds, weights, code, gamma, intercept):
    """f(z) for one point."""
    total = 0.0
    for u in range(bounds.shape[0] - 1):
        lo = bounds[u]
        hi = bounds[u + 1]
        acc = 0.0
        for i in range(S.shape[0]):
            acc += coef[i] * _channel_kernel(z, S[i], lo, hi, code, gamma)
        total += weights[u] * acc
    return intercept + total


@jit_serial
def expansion_values(Z, S, coef, bounds, weights, code, gamma, intercept, out):
    """out[j] = intercept + sum_u weights[u] sum_i coef[i] k_u(S[i], Z[j])."""
    for j in range(Z.shape[0]):
        out[j] = _value_at(Z[j], S, coef, bounds, weights, code, gamma, intercept)


@jit_serial
def bisect_segments(x, fx, Z, fz, S, coef, bounds, weights, code, gamma, intercept, tol, max_iter,
                    out_a, out_f):
    """For each row z_j of Z (f(z_j) of the sign opposite to f(x) = fx), bisect on a in [0, 1] for
    f(a x + (1 - a) z_j) = 0. Writes the best a seen (smallest |f|) and its f value.

    Stops a segment when |f| <= tol or when the bracket is down to a few ulps.
    """
    point = np.empty(x.shape[0])
    eps4 = 4.0 * np.finfo(np.float64).eps
    for j in range(Z.shape[0]):
        lo = 0.0  # side of z_j
        hi = 1.0  # side of x
        if abs(fz[j]) < abs(fx):
            best_a = 0.0
            best_f = fz[j]
        else:
            best_a = 1.0
            best_f = fx
        if abs(best_f) > tol:
            for _ in range(max_iter):
                mid = 0.5 * (lo + hi)
                for d in range(x.shape[0]):
                    point[d] = mid * x[d] + (1.0 - mid) * Z[j, d]
                fm = _value_at(point, S, coef, bounds, weights, code, gamma, intercept)
                if abs(fm) < abs(best_f):
                    best_a = mid
                    best_f = fm
                if (fm > 0.0) == (fx > 0.0) and fm != 0.0:
                    hi = mid
                else:
                    lo = mid
                if abs(fm) <= tol or hi - lo <= eps4:
                    break
        out_a[j] = best_a
        out_f[j] = best_f


@jit_serial
def expansion_gradient(z, S, coef, bounds, weights, code, gamma, out):
    """out[d] = df/dz_d at z (see ``KernelExpansion.gradient`` for the formulas)."""
    n_channels = bounds.shape[0] - 1
    for d in range(out.shape[0]):
        out[d] = 0.0
    for u in range(n_channels):
        lo = bounds[u]
        hi = bounds[u + 1]
        for i in range(S.shape[0]):
            s = S[i]
            if code == LINEAR:
                w = weights[u] * coef[i]
                for d in range(lo, hi):
                    out[d] += w * s[d]
                continue
            w = weights[u] * coef[i] * _channel_kernel(z, s, lo, hi, code, gamma)
            if code == EXP_CHI2:
                for d in range(lo, hi):
                    den = s[d] + z[d]
                    frac = 4.0 * s[d] * s[d] / (den * den) if den > 0.0 else 0.0
                    out[d] += w * gamma * (frac - 1.0)
            else:
                for d in range(lo, hi):
                    out[d] += 2.0 * gamma * w * (s[d] - z[d])
