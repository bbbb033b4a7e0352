"""Kernels on bag-of-words histograms: the kernel registry, Gram matrices, kernel rows, per-dimension
contributions and the gradient of a kernel expansion.

**The registry** (:data:`REGISTRY`, :func:`register_kernel`) is the one place that says, for each
kernel, its name, how its Gram matrix is computed, its per-dimension term, its gradient, whether
negative inputs are allowed, whether it has a bandwidth ``gamma`` and whether it decomposes exactly.
Everything else (the SVM's validation, ``BoWClassifier``, the decomposition) asks the registry, so a
new kernel is one :class:`Kernel` entry plus its tests. Built-in kernels (SPEC §1):

Sum-decomposable, k(x, y) = sum_d k_d(x_d, y_d), explained exactly (Eq 24):

* ``"linear"``        k_d = x_d y_d
* ``"intersection"``  k_d = min(x_d, y_d)              (histogram intersection)
* ``"chi2"``          k_d = 2 x_d y_d / (x_d + y_d)    (additive chi-squared, 0/0 := 0)
* ``"hellinger"``     k_d = sqrt(x_d y_d)              (computed as sqrt(x_d) sqrt(y_d))

Differentiable, explained by a Taylor step at a root (Eq 25):

* ``"exp_chi2"``  k = exp(-gamma sum_d (x_d - y_d)^2 / (x_d + y_d)), scikit-learn's ``chi2_kernel``
* ``"rbf"``       k = exp(-gamma ||x - y||^2)

Several channels (e.g. one vocabulary per SIFT bin size) combine as a weighted kernel sum
k(x, y) = sum_u weights[u] * k_u(x[slice_u], y[slice_u]); for exp-chi2 and RBF each channel has its
own exponential. All kernels but ``"linear"`` and ``"rbf"`` require non-negative inputs.

The built-in numerics are numba kernels in :mod:`bowlrp.bow._kernels` (selected by the entry's
``code``); a registered kernel without a code gives numpy callables instead (see :class:`Kernel`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics.pairwise import additive_chi2_kernel, euclidean_distances

from bowlrp.bow import _kernels
from bowlrp.validation import channel_bounds, check_channel_weights

__all__ = [
    "Kernel",
    "REGISTRY",
    "KERNELS",
    "DECOMPOSABLE_KERNELS",
    "register_kernel",
    "unregister_kernel",
    "kernel_spec",
    "gram",
    "KernelColumns",
    "dimension_contributions",
    "expansion_gradient",
    "channel_bounds",
]


def _squared_euclidean(X):
    return euclidean_distances(X, squared=True)


@dataclass(frozen=True)
class Kernel:
    """One entry of the kernel registry.

    Parameters
    ----------
    name : str
        The name users pass as ``kernel=``.
    exact : bool
        Sum-decomposable, k(x, y) = sum_d k_d(x_d, y_d): explained exactly by Eq 24. Otherwise the
        explanation is a Taylor step at a root (Eq 25) and ``gradient`` (or a built-in code) is needed.
    signed : bool
        Negative inputs allowed (else inputs are checked to be non-negative histograms).
    uses_gamma : bool
        The kernel has a bandwidth ``gamma`` (positive; default 1.0).
    formula : str
        One line for error messages and documentation.
    code : int, optional
        Built-in kernels only: the ``kind`` code of the numba kernels in :mod:`bowlrp.bow._kernels`.
    term : callable, optional
        ``term(x, y) -> k_d`` elementwise with numpy broadcasting (exact kernels without a code).
    channel : callable, optional
        ``channel(X, Y, gamma) -> (n, m)`` one channel's Gram matrix (kernels without a code;
        exact kernels default to summing ``term`` over the dimensions).
    gradient : callable, optional
        ``gradient(z, S, gamma) -> (n_sv, V_u)``: dk(S_i, z)/dz_d of one channel at one point z
        (differentiable kernels without a code).
    distance : callable, optional
        ``distance(X) -> (n, n)``: the pairwise distances inside the exponential of a kernel with a
        bandwidth, whose mean sets ``gamma="auto"`` of ``BoWClassifier`` (default: squared Euclidean).
    """

    name: str
    exact: bool
    signed: bool = False
    uses_gamma: bool = False
    formula: str = ""
    code: int | None = None
    term: Callable | None = None
    channel: Callable | None = None
    gradient: Callable | None = None
    distance: Callable | None = None

    def pairwise_distance(self, X) -> np.ndarray:
        """The (n, n) distances that set ``gamma="auto"`` (``distance``, or squared Euclidean)."""
        return (self.distance or _squared_euclidean)(X)

    @property
    def differentiable(self) -> bool:
        """True when the Taylor step can expand this kernel (it has a gradient)."""
        return self.gradient is not None or self.code in (_kernels.LINEAR, _kernels.EXP_CHI2, _kernels.RBF)


_BUILT_IN = (
    Kernel("linear", exact=True, signed=True, formula="sum_d x_d y_d", code=_kernels.LINEAR),
    Kernel("intersection", exact=True, formula="sum_d min(x_d, y_d)", code=_kernels.INTERSECTION),
    Kernel("chi2", exact=True, formula="sum_d 2 x_d y_d / (x_d + y_d)", code=_kernels.CHI2),
    Kernel("hellinger", exact=True, formula="sum_d sqrt(x_d y_d)", code=_kernels.HELLINGER),
    Kernel("exp_chi2", exact=False, uses_gamma=True,
           formula="exp(-gamma sum_d (x_d - y_d)^2 / (x_d + y_d))", code=_kernels.EXP_CHI2,
           distance=lambda X: -additive_chi2_kernel(X)),
    Kernel("rbf", exact=False, signed=True, uses_gamma=True, formula="exp(-gamma ||x - y||^2)",
           code=_kernels.RBF, distance=_squared_euclidean),
)
#: name -> Kernel, every kernel known to the package (built-in and registered)
REGISTRY: dict[str, Kernel] = {k.name: k for k in _BUILT_IN}
#: the built-in names (``REGISTRY`` also holds registered kernels)
KERNELS = tuple(k.name for k in _BUILT_IN)
DECOMPOSABLE_KERNELS = tuple(k.name for k in _BUILT_IN if k.exact)


def register_kernel(kernel: Kernel) -> Kernel:
    """Add a kernel to the registry; every estimator and the decomposition can then use its name.

    A kernel without a numba ``code`` must give ``term`` (exact kernels) or ``channel`` and
    ``gradient`` (Taylor kernels). Returns the entry.

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.kernels import Kernel, register_kernel, unregister_kernel, gram
    >>> _ = register_kernel(Kernel("double_min", exact=True, term=lambda x, y: 2 * np.minimum(x, y)))
    >>> gram("double_min", np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]))
    array([[1.]])
    >>> unregister_kernel("double_min")
    """
    if not isinstance(kernel, Kernel):
        raise TypeError(f"register a bowlrp.bow.kernels.Kernel, got {type(kernel).__name__}")
    if kernel.name in KERNELS:
        raise ValueError(f"{kernel.name!r} is a built-in kernel and cannot be replaced")
    if kernel.code is None:
        if kernel.exact and kernel.term is None and kernel.channel is None:
            raise ValueError(f"exact kernel {kernel.name!r} needs a per-dimension term(x, y)")
        if not kernel.exact and (kernel.channel is None or kernel.gradient is None):
            raise ValueError(f"Taylor kernel {kernel.name!r} needs channel(X, Y, gamma) and "
                             "gradient(z, S, gamma)")
    REGISTRY[kernel.name] = kernel
    return kernel


def unregister_kernel(name: str) -> None:
    """Remove a registered (not built-in) kernel."""
    if name in KERNELS:
        raise ValueError(f"{name!r} is a built-in kernel and cannot be removed")
    if REGISTRY.pop(name, None) is None:
        raise ValueError(f"no registered kernel {name!r}")


def kernel_spec(kernel) -> Kernel:
    """The registry entry of a kernel name; a ValueError listing the known names otherwise."""
    if not isinstance(kernel, str) or kernel not in REGISTRY:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[kernel]


def _check_gamma(kernel, gamma):
    if not kernel_spec(kernel).uses_gamma:
        return 0.0
    gamma = 1.0 if gamma is None else gamma
    if not np.isscalar(gamma) or not np.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a positive finite number for kernel {kernel!r}, got {gamma!r}")
    return float(gamma)


#: the dtype kinds a kernel takes: booleans, integers and floats (complex numbers would lose their
#: imaginary part in the float64 conversion, time deltas are no histogram counts)
_REAL_KINDS = frozenset("biuf")


def _check_matrix(X, name, kernel, n_features=None):
    X = np.asarray(X)
    if X.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{name} must be an array of real numbers (bool, int or float), got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_dims), got shape {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not np.isfinite(X).all():  # (the array's own reduction: np.all's wrapper costs more)
        raise ValueError(f"{name} contains NaN or infinite values")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} dimensions, expected {n_features}")
    if not kernel_spec(kernel).signed and X.size and X.min() < 0:
        raise ValueError(f"Negative values in data passed to kernel {kernel!r} ({name}): it needs "
                         "non-negative histograms")
    return X


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
    spec = kernel_spec(kernel)
    gamma = _check_gamma(kernel, gamma)
    X = _check_matrix(X, "X", kernel)
    if Y is not None:
        Y = _check_matrix(Y, "Y", kernel, n_features=X.shape[1])
        return KernelColumns(kernel, Y, gamma, weights, slices).rows(X, block_rows, verbose, checked=True)
    bounds = channel_bounds(X.shape[1], slices)
    weights = check_channel_weights(weights, bounds.shape[0] - 1)
    if spec.code is None:
        return _numpy_gram(spec, X, X, gamma, weights, bounds)
    if spec.code == _kernels.HELLINGER:  # sqrt once per entry instead of once per pair
        X = np.sqrt(X)
    sx = np.zeros((X.shape[0], bounds.shape[0] - 1))
    if spec.code == _kernels.EXP_CHI2:
        _kernels._channel_sums(X, bounds, sx)
    out = _fill(kernel, X, np.ascontiguousarray(X.T), bounds, weights, spec.code, gamma, sx, sx, True,
                block_rows, verbose, None)
    lower = np.tril_indices(X.shape[0], -1)
    out[lower] = out.T[lower]
    return out


def _fill(kernel, X, YT, bounds, weights, code, gamma, sx, sy, symmetric, block_rows, verbose, parallel):
    """Run the numba Gram kernel over blocks of rows (serial or parallel by the amount of work, unless
    ``parallel`` says)."""
    n, m = X.shape[0], YT.shape[1]
    out = np.empty((n, m))
    if n == 0 or m == 0:
        return out
    start = time.perf_counter()
    step = max(1, int(block_rows))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        work = (r1 - r0) * m * X.shape[1] / (2 if symmetric else 1)  # kernel terms
        builds = _kernels.gram_kernel
        if parallel is None:
            kernel_fn = builds.build(work)
        else:
            kernel_fn = builds.parallel if parallel else builds.serial
        kernel_fn(X[r0:r1], YT, bounds, weights, code, gamma, sx[r0:r1], sy, r0, symmetric, out[r0:r1])
        if verbose:
            print(f"[bowlrp] {kernel} Gram rows {r1}/{n} ({time.perf_counter() - start:.1f} s)",
                  file=sys.stderr, flush=True)
    return out


class KernelColumns:
    """The fixed columns Y of kernel matrices K(X, Y) (e.g. support vectors), prepared once.

    Validated, transposed and summed per channel once, so that many calls of :meth:`rows` (an SVM's
    decision function, the Taylor root search) pay only for their rows. ``rows(X)`` gives the same
    numbers as ``gram(kernel, X, Y, ...)``, which uses this class itself.

    Parameters
    ----------
    kernel : str
    Y : array-like of shape (m, V)
    gamma, weights, slices : optional
        As in :func:`gram`.
    checked : bool, default=False
        Skip validating Y (already a finite, C-contiguous float64 array the kernel accepts).

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.kernels import KernelColumns
    >>> cols = KernelColumns("intersection", np.array([[0.5, 0.5], [1.0, 0.0]]))
    >>> cols.rows(np.array([[0.25, 0.75]]))
    array([[0.75, 0.25]])
    """

    def __init__(self, kernel, Y, gamma=None, weights=None, slices=None, checked=False):
        self.kernel = kernel
        self.spec = kernel_spec(kernel)
        self.gamma = _check_gamma(kernel, gamma)
        # checked=True: Y is already a valid C-contiguous float64 array (the Taylor step's points)
        self.Y = np.ascontiguousarray(Y, dtype=np.float64) if checked else _check_matrix(Y, "Y", kernel)
        self.bounds = channel_bounds(self.Y.shape[1], slices)
        self.weights = check_channel_weights(weights, self.bounds.shape[0] - 1)
        if self.spec.code is not None:
            Yk = np.sqrt(self.Y) if self.spec.code == _kernels.HELLINGER else self.Y
            self._YT = np.ascontiguousarray(Yk.T)
            self._sy = np.zeros((Yk.shape[0], self.bounds.shape[0] - 1))
            if self.spec.code == _kernels.EXP_CHI2:
                _kernels._channel_sums(Yk, self.bounds, self._sy)

    @property
    def n_features(self) -> int:
        """V, the dimensions of every row and column."""
        return self.Y.shape[1]

    def rows(self, X, block_rows=256, verbose=False, checked=False, parallel=None):
        """K(X, Y) of shape (n, m); ``checked=True`` skips validating X (already a valid float array).

        ``parallel``: None picks threads by the amount of work; False keeps one thread (the Taylor
        step's many short evaluations, where starting threads costs more than it saves: measured 4x
        slower for 256 points x 75 support vectors x 1024 dimensions on the 2-core machine).
        """
        if not checked:
            X = _check_matrix(X, "X", self.kernel, n_features=self.n_features)
        if self.spec.code is None:
            return _numpy_gram(self.spec, X, self.Y, self.gamma, self.weights, self.bounds)
        if self.spec.code == _kernels.HELLINGER:
            X = np.sqrt(X)
        sx = np.zeros((X.shape[0], self.bounds.shape[0] - 1))
        if self.spec.code == _kernels.EXP_CHI2:
            _kernels._channel_sums(X, self.bounds, sx)
        return _fill(self.kernel, X, self._YT, self.bounds, self.weights, self.spec.code, self.gamma, sx,
                     self._sy, False, block_rows, verbose, parallel)


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
    spec = kernel_spec(kernel)
    if not spec.exact:
        exact = ", ".join(k for k, v in REGISTRY.items() if v.exact)
        raise ValueError(f"kernel {kernel!r} is not sum-decomposable; dimension contributions exist for "
                         f"{exact} (use a Taylor step for {kernel!r})")
    SV = _check_matrix(SV, "SV", kernel)
    X = _check_matrix(X, "X", kernel, n_features=SV.shape[1])
    coef = _check_coef(coef, SV.shape[0])
    if coef.ndim == 1:
        coef = coef[None, :]
    bounds = channel_bounds(X.shape[1], slices)
    weights = check_channel_weights(weights, bounds.shape[0] - 1)
    dim_weights = np.repeat(weights, np.diff(bounds))
    out = np.empty((coef.shape[0], X.shape[0], X.shape[1]))
    if spec.code is None:
        for j in range(X.shape[0]):  # numpy path of registered kernels: (n_sv, V) terms per row
            out[:, j] = coef @ spec.term(SV, X[j][None, :]) * dim_weights
    elif out.size:
        fn = _kernels.dimension_contributions_kernel.build(out.size * SV.shape[0] if X.shape[0] > 1 else 0)
        fn(SV, coef, X, dim_weights, spec.code, out)
    return out


def expansion_gradient(kernel, Z, SV, coef, gamma=None, weights=None, slices=None):
    """Gradient of f(z) = sum_u weights[u] sum_i coef[i] k_u(SV[i, slice_u], z[slice_u]) at points Z.

    The Taylor step (Eq 25) of differentiable kernels (and of ``"linear"``). exp-chi2:
    dk/dz_d = k(x_i, z) gamma (4 x_id^2 / (x_id + z_d)^2 - 1), the fraction being 0 when
    x_id = z_d = 0; RBF: dk/dz_d = 2 gamma k(x_i, z) (x_id - z_d); linear: x_id.

    Parameters
    ----------
    kernel : str
    Z : array-like of shape (V,) or (k, V)
        One point or a batch of points (each row's gradient is computed on its own).
    SV : array-like of shape (n_sv, V)
    coef : array-like of shape (n_sv,)
    gamma, weights, slices : optional
        As in :func:`gram`.

    Returns
    -------
    ndarray of the shape of ``Z``
    """
    spec = kernel_spec(kernel)
    if not spec.differentiable:
        raise ValueError(f"kernel {kernel!r} is not differentiable; it has no Taylor step")
    gamma = _check_gamma(kernel, gamma)
    SV = _check_matrix(SV, "SV", kernel)
    Z = np.asarray(Z, dtype=np.float64)
    one = Z.ndim == 1
    Z = _check_matrix(Z.reshape(1, -1) if one else Z, "Z", kernel, n_features=SV.shape[1])
    coef = _check_coef(coef, SV.shape[0]).ravel()
    bounds = channel_bounds(SV.shape[1], slices)
    weights = check_channel_weights(weights, bounds.shape[0] - 1)
    out = np.zeros(Z.shape)
    if spec.code is None:
        for u in range(bounds.shape[0] - 1):
            sl = slice(bounds[u], bounds[u + 1])
            for k, z in enumerate(Z):
                out[k, sl] = weights[u] * (coef @ spec.gradient(z[sl], SV[:, sl], gamma))
    else:
        _kernels.expansion_gradient(Z, SV, np.ascontiguousarray(coef), bounds, weights, spec.code, gamma, out)
    return out[0] if one else out


def _check_coef(coef, n_sv):
    coef = np.asarray(coef, dtype=np.float64)
    if coef.ndim not in (1, 2) or coef.shape[-1] != n_sv:
        raise ValueError(f"coef must have shape (n_outputs, {n_sv}) or ({n_sv},), got {coef.shape}")
    if not np.all(np.isfinite(coef)):
        raise ValueError("coef contains NaN or infinite values")
    return np.ascontiguousarray(coef)


def _numpy_gram(spec, X, Y, gamma, weights, bounds):
    """Gram matrix of a registered kernel without a numba code, channel by channel."""
    out = np.zeros((X.shape[0], Y.shape[0]))
    for u in range(bounds.shape[0] - 1):
        Xu, Yu = X[:, bounds[u]:bounds[u + 1]], Y[:, bounds[u]:bounds[u + 1]]
        if spec.channel is not None:
            out += weights[u] * np.asarray(spec.channel(Xu, Yu, gamma), dtype=np.float64)
        else:
            for j in range(Y.shape[0]):
                out[:, j] += weights[u] * spec.term(Xu, Yu[j][None, :]).sum(axis=1)
    return out
