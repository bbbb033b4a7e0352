"""Kernels on bag-of-words histograms: Gram matrices, kernel rows and per-dimension contributions.

Six kernels (SPEC §1). Sum-decomposable, k(x, y) = sum_d k_d(x_d, y_d):

* ``"linear"``        k_d = x_d y_d
* ``"intersection"``  k_d = min(x_d, y_d)              (histogram intersection)
* ``"chi2"``          k_d = 2 x_d y_d / (x_d + y_d)    (additive chi-squared, 0/0 := 0)
* ``"hellinger"``     k_d = sqrt(x_d y_d)              (computed as sqrt(x_d) sqrt(y_d))

Differentiable (explained by a Taylor step, not by summing dimensions):

* ``"exp_chi2"``  k = exp(-gamma sum_d (x_d - y_d)^2 / (x_d + y_d)), scikit-learn's ``chi2_kernel``
* ``"rbf"``       k = exp(-gamma ||x - y||^2)

Several channels (e.g. one vocabulary per SIFT bin size) combine as a weighted kernel sum
k(x, y) = sum_u weights[u] * k_u(x[slice_u], y[slice_u]); for exp-chi2 and RBF each channel has its
own exponential. All kernels but ``"linear"`` and ``"rbf"`` require non-negative inputs.

The numerics are numba kernels in :mod:`bowlrp.bow._kernels`, parallel over rows.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bowlrp.bow import _kernels

__all__ = [
    "KERNELS",
    "DECOMPOSABLE_KERNELS",
    "check_kernel",
    "gram",
    "dimension_contributions",
    "channel_bounds",
]

_CODES = {
    "linear": _kernels.LINEAR,
    "intersection": _kernels.INTERSECTION,
    "chi2": _kernels.CHI2,
    "hellinger": _kernels.HELLINGER,
    "exp_chi2": _kernels.EXP_CHI2,
    "rbf": _kernels.RBF,
}
KERNELS = tuple(_CODES)
DECOMPOSABLE_KERNELS = ("linear", "intersection", "chi2", "hellinger")
_SIGNED_OK = ("linear", "rbf")  # kernels defined for negative inputs


def check_kernel(kernel):
    """Return ``kernel`` if it is a known kernel name, else raise a ValueError listing the names."""
    if not isinstance(kernel, str) or kernel not in _CODES:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    return kernel


def _check_gamma(kernel, gamma):
    if kernel not in ("exp_chi2", "rbf"):
        return 0.0
    gamma = 1.0 if gamma is None else gamma
    if not np.isscalar(gamma) or not np.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a positive finite number for kernel {kernel!r}, got {gamma!r}")
    return float(gamma)


def _check_matrix(X, name, kernel, n_features=None):
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_dims), got shape {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} dimensions, expected {n_features}")
    if kernel not in _SIGNED_OK and X.size and X.min() < 0:
        raise ValueError(f"Negative values in data passed to kernel {kernel!r} ({name}): it needs "
                         "non-negative histograms")
    return X


def channel_bounds(n_dims, slices=None):
    """Channel boundaries (n_channels + 1,) int64 from a list of contiguous slices (None: one channel).

    The slices must tile ``range(n_dims)`` in order, as ``Encoding.channel_slices`` does.
    """
    if slices is None:
        return np.array([0, n_dims], dtype=np.int64)
    bounds = [0]
    for s in slices:
        start, stop, step = s.indices(n_dims)
        if step != 1 or start != bounds[-1] or stop <= start:
            raise ValueError(f"channel slices must tile 0..{n_dims} contiguously, got {list(slices)}")
        bounds.append(stop)
    if bounds[-1] != n_dims:
        raise ValueError(f"channel slices cover {bounds[-1]} dimensions, the data has {n_dims}")
    return np.asarray(bounds, dtype=np.int64)


def _check_weights(weights, n_channels):
    if weights is None:
        return np.ones(n_channels)
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if weights.shape != (n_channels,):
        raise ValueError(f"expected {n_channels} channel weights, got {weights.shape[0]}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("channel weights must be finite and non-negative")
    return weights


def gram(kernel, X, Y=None, gamma=None, weights=None, slices=None, block_rows=256, verbose=False):
    """Kernel matrix K[i, j] = sum_u weights[u] k_u(X[i, slice_u], Y[j, slice_u]).

    Parameters
    ----------
    kernel : str
        One of ``"linear"``, ``"intersection"``, ``"chi2"``, ``"hellinger"``, ``"exp_chi2"``,
        ``"rbf"``.
    X : array-like of shape (n, V)
        Rows (BoW histograms).
    Y : array-like of shape (m, V), optional
        Columns; ``None`` means ``X`` and computes the symmetric matrix once (upper triangle, mirrored).
    gamma : float, optional
        Bandwidth of ``"exp_chi2"`` and ``"rbf"`` (default 1.0, as scikit-learn's ``chi2_kernel``).
    weights : array-like of shape (n_channels,), optional
        Channel weights beta_u (default all 1).
    slices : list of slice, optional
        Contiguous channel slices tiling the V dimensions (default: a single channel).
    block_rows : int, default=256
        Rows per call of the numba kernel (progress is reported per block).
    verbose : bool, default=False
        Print progress to stderr.

    Returns
    -------
    K : ndarray of shape (n, m)

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.kernels import gram
    >>> X = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    >>> gram("intersection", X)
    array([[1. , 0.5],
           [0.5, 1. ]])
    """
    kernel = check_kernel(kernel)
    gamma = _check_gamma(kernel, gamma)
    X = _check_matrix(X, "X", kernel)
    symmetric = Y is None
    Y = X if symmetric else _check_matrix(Y, "Y", kernel, n_features=X.shape[1])
    bounds = channel_bounds(X.shape[1], slices)
    weights = _check_weights(weights, bounds.shape[0] - 1)
    if kernel == "hellinger":  # sqrt once per entry instead of once per pair
        X = np.sqrt(X)
        Y = X if symmetric else np.sqrt(Y)
    n, m = X.shape[0], Y.shape[0]
    out = np.empty((n, m))
    if n == 0 or m == 0:
        return out
    YT = np.ascontiguousarray(Y.T)
    sx = np.zeros((n, bounds.shape[0] - 1))
    sy = sx if symmetric else np.zeros((m, bounds.shape[0] - 1))
    if kernel == "exp_chi2":
        _kernels._channel_sums(X, bounds, sx)
        if not symmetric:
            _kernels._channel_sums(Y, bounds, sy)
    code = _CODES[kernel]
    start = time.perf_counter()
    for r0 in range(0, n, max(1, int(block_rows))):
        r1 = min(n, r0 + max(1, int(block_rows)))
        work = (r1 - r0) * m * X.shape[1] / (2 if symmetric else 1)  # kernel terms
        kernel_fn = _kernels.gram_kernel.build(work)
        kernel_fn(X[r0:r1], YT, bounds, weights, code, gamma, sx[r0:r1], sy, r0, symmetric, out[r0:r1])
        if verbose:
            print(f"[bowlrp] {kernel} Gram rows {r1}/{n} ({time.perf_counter() - start:.1f} s)",
                  file=sys.stderr, flush=True)
    if symmetric:
        lower = np.tril_indices(n, -1)
        out[lower] = out.T[lower]
    return out


def dimension_contributions(kernel, SV, coef, X, weights=None, slices=None):
    """Per-dimension kernel expansion of a sum-decomposable kernel.

    ``C[o, j, d] = w_d * sum_i coef[o, i] * k_d(SV[i, d], X[j, d])`` where ``w_d`` is the weight of
    the channel containing dimension ``d`` (1 by default). Summing over ``d`` gives
    ``sum_i coef[o, i] * k(SV[i], X[j])``, i.e. the decision function minus its bias.

    Parameters
    ----------
    kernel : {"linear", "intersection", "chi2", "hellinger"}
    SV : array-like of shape (n_sv, V)
        Support vectors.
    coef : array-like of shape (n_outputs, n_sv) or (n_sv,)
        Dual coefficients a_i = y_i alpha_i, one row per output.
    X : array-like of shape (n, V)
        Histograms to decompose.
    weights, slices : optional
        Channel weights and slices, as in :func:`gram`.

    Returns
    -------
    C : ndarray of shape (n_outputs, n, V)

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.kernels import dimension_contributions
    >>> SV = np.array([[1.0, 0.0], [0.5, 0.5]])
    >>> C = dimension_contributions("intersection", SV, [[1.0, -2.0]], [[0.25, 0.75]])
    >>> C[0, 0]
    array([-0.25, -1.  ])
    """
    kernel = check_kernel(kernel)
    if kernel not in DECOMPOSABLE_KERNELS:
        raise ValueError(f"kernel {kernel!r} is not sum-decomposable; dimension contributions exist for "
                         f"{', '.join(DECOMPOSABLE_KERNELS)} (use a Taylor step for {kernel!r})")
    SV = _check_matrix(SV, "SV", kernel)
    X = _check_matrix(X, "X", kernel, n_features=SV.shape[1])
    coef = np.asarray(coef, dtype=np.float64)
    if coef.ndim == 1:
        coef = coef[None, :]
    if coef.ndim != 2 or coef.shape[1] != SV.shape[0]:
        raise ValueError(f"coef must have shape (n_outputs, {SV.shape[0]}), got {coef.shape}")
    if not np.all(np.isfinite(coef)):
        raise ValueError("coef contains NaN or infinite values")
    coef = np.ascontiguousarray(coef)
    bounds = channel_bounds(X.shape[1], slices)
    weights = _check_weights(weights, bounds.shape[0] - 1)
    dim_weights = np.repeat(weights, np.diff(bounds))
    out = np.empty((coef.shape[0], X.shape[0], X.shape[1]))
    if out.size:
        fn = _kernels.dimension_contributions_kernel.build(out.size * SV.shape[0] if X.shape[0] > 1 else 0)
        fn(np.ascontiguousarray(SV.T), coef, X, dim_weights, _CODES[kernel], out)
    return out
