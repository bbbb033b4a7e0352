"""Explaining a network's prediction: LRP and the comparison methods of Bach et al. (2015).

* ``LRP(model, composite)`` - layer-wise relevance propagation with per-layer rules;
* ``Sensitivity(model)`` - squared partial derivatives (summed over channels in the heatmap);
* ``GradientTimesInput(model)`` - x * df/dx;
* ``TaylorDecomposition(model, references)`` - first-order Taylor expansion of the whole network at a
  root point x0 (f(x0) = 0) found by bisection on the segment from x towards a reference input that
  scores on the other side of zero (the paper's Eqs 17-18, as the BoW branch does for its kernels).

Every explainer takes a ``target``: None (the predicted class), an int (the same output for every
sample), an int array (one output per sample), or a float array of output relevances (shape of the
logits, or one row for all samples). The explained score is the target logit; a trailing
``Softmax`` is dropped first, so probabilities are never explained.

``LRP`` and ``Diagnostics`` live in ``nets.lrp`` (re-exported here); the shared explainer base in
``nets.explainer``.
"""

from __future__ import annotations

import warnings

import numpy as np

from bowlrp.roots import bracketed_roots
from nets.explainer import _Explainer, _output_relevance, check_batch
from nets.lrp import LRP, Diagnostics

__all__ = [
    "LRP",
    "Diagnostics",
    "Sensitivity",
    "GradientTimesInput",
    "TaylorDecomposition",
]


# --------------------------------------------------------------------------------------------------
class GradientTimesInput(_Explainer):
    """``R = x * df/dx`` (for bias-free ReLU networks this equals LRP-0).

    Examples
    --------
    >>> import numpy as np
    >>> import nets
    >>> model = nets.Sequential([nets.Dense(np.array([[2.0, -1.0]]))])
    >>> nets.GradientTimesInput(model).relevance(np.array([[1.0, 3.0]]), target=0)
    array([[ 2., -3.]])
    """

    method = "gradient_x_input"

    def _relevance(self, acts, R_out):
        grad_out = (R_out != 0).astype(R_out.dtype) if _is_one_hot_scaled(R_out, acts[-1]) else R_out
        return acts[0] * self.model.gradient(acts[0], grad_out, acts)


class Sensitivity(_Explainer):
    """Sensitivity analysis: ``(df/dx)^2`` per input element; the heatmap sums it over channels
    (the squared norm of the pixel's gradient). Not a decomposition of f(x): the map's ``score`` is
    None and f(x) is kept in ``extras["score"]``.
    """

    method = "sensitivity"

    def _relevance(self, acts, R_out):
        grad_out = (R_out != 0).astype(R_out.dtype) if _is_one_hot_scaled(R_out, acts[-1]) else R_out
        g = self.model.gradient(acts[0], grad_out, acts)
        return g * g

    def explain(self, X, target=None, image_shape=None):
        X = check_batch(X)
        acts = self.model.trace(X)
        R_out, scores, labels = _output_relevance(target, acts[-1])
        R = self._relevance(acts, R_out)
        return self._heatmaps(R, scores, labels, X, image_shape, None, score_in_map=False)


def _is_one_hot_scaled(R_out, logits):
    """True when R_out is a target logit picked from ``logits`` (one non-zero per row, equal to it):
    the gradient methods then differentiate that logit with a one-hot output gradient."""
    nz = R_out != 0
    return bool(np.all(nz.sum(axis=1) <= 1) and np.all(R_out[nz] == logits[nz]))


class TaylorDecomposition(_Explainer):
    """First-order Taylor decomposition of the whole network at a root point.

    For each sample x and explained output f, reference inputs z with f(x) * f(z) < 0 are the
    candidates; for the ``n_candidates`` nearest (Euclidean) of them, a safeguarded secant search on
    a in [0, 1] (:func:`bowlrp.roots.bracketed_roots`) finds x0 = a x + (1 - a) z with f(x0) = 0 (to
    ``tol``). Then ``R = (x - x0) * df/dx(x0)`` and the
    residual rho = f(x) - sum(R) is what the first-order expansion misses. The root with the
    smallest |rho| is kept (or the ``n_roots`` best are averaged).

    Parameters
    ----------
    model : nets.Sequential
    references : array (M, ...) of inputs, required
        Where the roots are searched: inputs of the same per-sample shape as ``X`` whose scores fall
        on both sides of zero, typically a few hundred training samples (e.g. ``X_train[:200]``).
        There is no default: a root needs an input the model scores on the other side of zero, and
        only the data can supply one. Their forward pass is computed once, here.
    n_candidates : int, default 8
    n_roots : int, default 1
    tol : float, default 1e-10
        Stop the root search on a segment when |f(x0)| <= tol or after ``max_iter`` evaluations.
    max_iter : int, default 100

    Notes
    -----
    When no reference scores on the other side of zero, no root exists on any segment: the
    relevance is zero, the residual is f(x), ``extras["root_found"]`` is False and a
    RuntimeWarning says so.
    """

    method = "taylor"

    def __init__(self, model, references=None, n_candidates=8, n_roots=1, tol=1e-10, max_iter=100):
        super().__init__(model)
        if references is None:
            raise TypeError("TaylorDecomposition needs references=...: inputs (M, ...) of the explained "
                            "samples' shape, e.g. a few hundred training samples, among which the root "
                            "search finds inputs scored on the other side of zero")
        self.references = check_batch(references, "references")
        if int(n_candidates) < 1 or int(n_roots) < 1:
            raise ValueError("n_candidates and n_roots must be >= 1")
        self.n_candidates, self.n_roots = int(n_candidates), int(n_roots)
        self.tol, self.max_iter = float(tol), int(max_iter)
        self._ref_logits = self.model.forward(self.references)

    def _explain_arrays(self, X, target):
        X = check_batch(X)
        if X.shape[1:] != self.references.shape[1:]:
            raise ValueError(f"X has per-sample shape {X.shape[1:]}, references {self.references.shape[1:]}")
        logits = self.model.forward(X)
        R_out, scores, labels = _output_relevance(target, logits)
        weights = np.where(_is_one_hot_scaled(R_out, logits), (R_out != 0).astype(np.float64), R_out)
        n = X.shape[0]
        R = np.zeros(X.shape, dtype=np.float64)
        roots = np.zeros(X.shape, dtype=np.float64)
        found = np.zeros(n, dtype=bool)
        ref_flat = self.references.reshape(len(self.references), -1)
        for i in range(n):
            w = weights[i]
            f_x = float(logits[i] @ w)
            f_ref = self._ref_logits @ w
            cand = np.flatnonzero(f_x * f_ref < 0)
            if cand.size == 0:
                continue
            d = ((ref_flat[cand] - X[i].reshape(1, -1)) ** 2).sum(axis=1)
            cand = cand[np.argsort(d, kind="stable")[: self.n_candidates]]
            x0 = self._bisect(X[i], self.references[cand], w, f_x, f_ref[cand])
            grads = self.model.gradient(x0, np.broadcast_to(w, (len(x0), w.size)).astype(x0.dtype))
            Rc = (X[i][None] - x0) * grads
            rho = np.abs(f_x - Rc.reshape(len(Rc), -1).sum(axis=1))
            best = np.argsort(rho, kind="stable")[: self.n_roots]
            R[i] = Rc[best].mean(axis=0)
            roots[i] = x0[best[0]]
            found[i] = True
        if not found.all():
            warnings.warn(
                f"{int((~found).sum())} sample(s) had no reference scoring on the other side of zero: "
                "their Taylor relevance is zero (residual = f(x))",
                RuntimeWarning,
                stacklevel=3,
            )
        return X, R, roots, found, scores, labels

    def _bisect(self, x, Z, w, f_x, f_z):
        """Roots on the segments a x + (1 - a) z (a = 0: reference, a = 1: x), all candidates at once,
        by the core's safeguarded secant search (:func:`bowlrp.roots.bracketed_roots`)."""
        shape = (-1,) + (1,) * (x.ndim)

        def on_segments(a, index):
            return self.model.forward(a.reshape(shape) * x[None] + (1 - a).reshape(shape) * Z[index]) @ w

        a, _ = bracketed_roots(on_segments, f_z, np.full(len(Z), f_x), tol=self.tol, max_iter=self.max_iter)
        return a.reshape(shape) * x[None] + (1 - a).reshape(shape) * Z

    def relevance(self, X, target=None, return_roots=False):
        """Taylor relevance (same shape as ``X``); with ``return_roots`` also the root points and a
        boolean per sample saying whether a root was found."""
        _, R, roots, found, _, _ = self._explain_arrays(X, target)
        return (R, roots, found) if return_roots else R

    def explain(self, X, target=None, image_shape=None):
        X, R, roots, found, scores, labels = self._explain_arrays(X, target)
        return self._heatmaps(R, scores, labels, X, image_shape, lambda i: {"root_found": bool(found[i])})
