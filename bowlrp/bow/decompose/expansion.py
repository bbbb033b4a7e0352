"""One SVM output as a kernel expansion: the object the score -> BoW step decomposes.

f(z) = b + sum_i a_i sum_u beta_u k_u(x_i[u], z[u]). Its values come from the same engine as
``BoWClassifier.decision_function`` (:func:`bowlrp.bow.kernels.gram`), its per-dimension terms
from :func:`bowlrp.bow.kernels.dimension_contributions` and its gradient from
:func:`bowlrp.bow.kernels.expansion_gradient`: what a kernel is lives in the kernel registry only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bowlrp.bow.kernels import KernelColumns, dimension_contributions, expansion_gradient, kernel_spec
from bowlrp.validation import check_channel_slices, check_channel_weights

__all__ = ["KernelExpansion"]


@dataclass
class KernelExpansion:
    """One SVM output as a kernel expansion f(z) = b + sum_i a_i sum_u beta_u k_u(x_i[u], z[u]).

    One row of ``dual_coef_`` and one ``intercept_`` of a fitted
    :class:`~bowlrp.bow.classifier.BoWClassifier` (see its :meth:`kernel_expansion`), with the
    kernel, its ``gamma`` and the channel layout. ``negated()`` gives -f (the negative class of a
    binary problem).

    Parameters
    ----------
    kernel : str
        A name of the kernel registry (:mod:`bowlrp.bow.kernels`): sum-decomposable kernels are
        explained exactly, differentiable ones by a Taylor step.
    support_vectors : ndarray of shape (n_sv, V)
    coef : ndarray of shape (n_sv,)
        a_i = y_i alpha_i.
    intercept : float
    gamma : float, optional
        Bandwidth of the kernels that have one (default 1.0, as in :func:`bowlrp.bow.kernels.gram`).
    channel_slices : list of slice, optional
        Dimensions of each channel (one channel by default); normalised to a list of slices.
    channel_weights : array-like of shape (n_channels,), optional
        beta_u (ones by default); normalised to a float array.

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.decompose import KernelExpansion
    >>> f = KernelExpansion("linear", np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([1.0, -1.0]), 0.5)
    >>> f.decision(np.array([[1.0, 1.0]]))
    array([-0.5])
    """

    kernel: str
    support_vectors: np.ndarray
    coef: np.ndarray
    intercept: float
    gamma: float | None = None
    channel_slices: list | None = None
    channel_weights: np.ndarray | None = None

    def __post_init__(self):
        spec = kernel_spec(self.kernel)
        sv = np.asarray(self.support_vectors, dtype=np.float64)
        if sv.ndim != 2:
            raise ValueError(f"support_vectors must be 2-D (n_sv, V), got shape {sv.shape}")
        coef = np.asarray(self.coef, dtype=np.float64).ravel()
        if coef.size != sv.shape[0]:
            raise ValueError(f"got {coef.size} coefficients for {sv.shape[0]} support vectors")
        if not (np.isfinite(sv).all() and np.isfinite(coef).all()):
            raise ValueError("support vectors or coefficients contain NaN or inf")
        if not spec.signed and sv.size and sv.min() < 0:
            raise ValueError(f"kernel {self.kernel!r} needs non-negative support vectors")
        self.support_vectors, self.coef = np.ascontiguousarray(sv), np.ascontiguousarray(coef)
        self.intercept = float(self.intercept)
        if spec.uses_gamma:
            if self.gamma is None:
                self.gamma = 1.0  # the default of bowlrp.bow.kernels.gram (and of scikit-learn's chi2_kernel)
            if not np.isfinite(self.gamma) or self.gamma <= 0:
                raise ValueError(f"kernel {self.kernel!r} needs a positive finite gamma, got {self.gamma}")
            self.gamma = float(self.gamma)
        self.channel_slices = check_channel_slices(self.channel_slices, sv.shape[1])
        self.channel_weights = check_channel_weights(self.channel_weights, len(self.channel_slices))

    @property
    def n_dims(self) -> int:
        """V, the length of the BoW vector."""
        return self.support_vectors.shape[1]

    @property
    def exact(self) -> bool:
        """True when the kernel is sum-decomposable (Eq 24); otherwise the Taylor step explains it."""
        return kernel_spec(self.kernel).exact

    def negated(self) -> KernelExpansion:
        """The expansion of -f."""
        return KernelExpansion(self.kernel, self.support_vectors, -self.coef, -self.intercept,
                               self.gamma, self.channel_slices, self.channel_weights)

    def check_points(self, Z) -> np.ndarray:
        """Z as a float (n, V) array of points this expansion accepts (one point may be given as (V,))."""
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim == 1:
            Z = Z[None, :]
        if Z.ndim != 2 or Z.shape[1] != self.n_dims:
            raise ValueError(f"BoW vectors must have {self.n_dims} dimensions, got shape {Z.shape}")
        if not np.isfinite(Z).all():  # (the array's own reduction: np.all's wrapper costs more)
            raise ValueError("BoW vectors contain NaN or inf")
        if not kernel_spec(self.kernel).signed and Z.size and Z.min() < 0:
            raise ValueError(f"kernel {self.kernel!r} needs non-negative BoW vectors; got negative values")
        return Z

    def _kernel_kwargs(self):
        return dict(gamma=self.gamma, weights=self.channel_weights, slices=self.channel_slices)

    def decision(self, Z) -> np.ndarray:
        """f(z) for each row of Z, shape (n,): the Gram engine of ``decision_function``.

        The sum over the support vectors runs row by row (not as one BLAS product), so a point's
        value never depends on the other rows of Z: the root search evaluates segments in batches.
        """
        return self.values(self.check_points(Z))

    def values(self, Z) -> np.ndarray:
        """f(z) for each row of an already valid float (n, V) array Z (no checks: the root search's
        inner loop, whose points are convex combinations of checked points).

        K(Z, SV) is computed as K(SV, Z).T: the Gram kernel skips the zero dimensions of its rows, and
        the support vectors are sparser than points on segments between two BoWs (the skipped terms
        are exact zeros either way, so the numbers are the same; only the work shrinks).
        """
        columns = KernelColumns(self.kernel, Z, **self._kernel_kwargs(), checked=True)
        K = columns.rows(self.support_vectors, checked=True, parallel=False)
        # C-contiguous rows: numpy then sums each row the same way whatever the number of rows
        return (np.ascontiguousarray(K.T) * self.coef).sum(axis=1) + self.intercept

    def contributions(self, X) -> np.ndarray:
        """(n, V) with [j, d] = beta_u(d) sum_i a_i k_d(x_id, X_jd) (sum-decomposable kernels)."""
        if not self.exact:
            raise ValueError(f"kernel {self.kernel!r} is not sum-decomposable; use the Taylor path")
        return dimension_contributions(self.kernel, self.support_vectors, self.coef, self.check_points(X),
                                       weights=self.channel_weights, slices=self.channel_slices)[0]

    def gradient(self, z) -> np.ndarray:
        """Gradient of f at one point z (V,), or at each row of a batch (k, V), of the same shape.

        See :func:`bowlrp.bow.kernels.expansion_gradient` for the formulas.
        """
        Z = self.check_points(z)
        out = expansion_gradient(self.kernel, Z, self.support_vectors, self.coef, **self._kernel_kwargs())
        return out[0] if np.ndim(z) == 1 else out
