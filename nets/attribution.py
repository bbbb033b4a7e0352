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
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from bowlrp.roots import bracketed_roots
from nets import _kernels
from nets.canonizers import canonize
from nets.composites import get_composite
from nets.layers import Softmax
from nets.model import Sequential, check_batch
from nets.propagation import forward_for_rule, propagate

__all__ = [
    "LRP",
    "Diagnostics",
    "Sensitivity",
    "GradientTimesInput",
    "TaylorDecomposition",
]


# --------------------------------------------------------------------------------------------------
def _strip_softmax(model):
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a nets.Sequential, got {type(model).__name__}")
    layers, names = list(model.layers), list(model.names)
    while layers and isinstance(layers[-1], Softmax):
        layers.pop()
        names.pop()
    if any(isinstance(layer, Softmax) for layer in layers):
        raise ValueError("Softmax is only supported as the last layer (it is dropped to explain the logits)")
    if not layers:
        raise ValueError("the model has no layers besides Softmax")
    return Sequential(layers, names)


def _output_relevance(target, logits):
    """(R_out, score, target_label) from a target specification; see the module docstring."""
    if logits.ndim != 2:
        raise ValueError(f"the model's output must be (N, outputs) to pick a target, got {logits.shape}")
    n, n_out = logits.shape
    rows = np.arange(n)
    if target is None:
        idx = np.argmax(logits, axis=1)
    else:
        t = np.asarray(target)
        if t.dtype == bool or t.dtype == object:
            raise TypeError(f"target must be int(s) or an array of output relevances, got {target!r}")
        if np.issubdtype(t.dtype, np.integer):
            idx = np.broadcast_to(t, (n,)) if t.ndim == 0 else t
            if idx.shape != (n,):
                raise ValueError(f"target has shape {t.shape}; give one int or one per sample ({n},)")
            if np.any(idx < 0) or np.any(idx >= n_out):
                raise ValueError(f"target out of range: the model has {n_out} outputs")
        elif np.issubdtype(t.dtype, np.floating):
            if t.shape == (n_out,):
                t = np.broadcast_to(t, logits.shape)
            if t.shape != logits.shape:
                raise ValueError(
                    f"output relevance has shape {t.shape}, expected {logits.shape} or ({n_out},)"
                )
            if not np.all(np.isfinite(t)):
                raise ValueError("output relevance contains NaN or infinite values")
            R = np.array(t, dtype=logits.dtype)
            return R, R.sum(axis=1, dtype=np.float64), [None] * n
        else:
            raise TypeError(f"target must be int(s) or an array of output relevances, got dtype {t.dtype}")
    idx = np.asarray(idx, dtype=np.int64)
    R = np.zeros_like(logits)
    R[rows, idx] = logits[rows, idx]
    return R, logits[rows, idx].astype(np.float64), [int(i) for i in idx]


def _row_sums(R, out):
    """Per-sample sums of R (any shape (N, ...)) in float64, written into ``out`` (N,)."""
    buf = np.empty(R.shape[0], dtype=np.float64)
    _kernels.row_sums(np.ascontiguousarray(R).reshape(R.shape[0], -1), buf)
    out[:] = buf


def _channel_map(r, image_shape):
    """One sample's relevance (shape of the input without the batch axis) -> (H, W), channel sum."""
    if image_shape is not None:
        if int(np.prod(image_shape)) != r.size:
            raise ValueError(
                f"image_shape {tuple(image_shape)} does not fit per-sample relevance of shape {r.shape}"
            )
        r = r.reshape(image_shape)
    if r.ndim == 3:
        return r.sum(axis=0)
    if r.ndim == 2:
        return r
    if r.ndim == 1:
        side = math.isqrt(r.size)
        if side * side == r.size:
            return r.reshape(side, side)
    raise ValueError(
        f"cannot draw relevance of per-sample shape {r.shape} as an image; pass image_shape=(H, W) "
        "or (C, H, W)"
    )


@dataclass
class Diagnostics:
    """What an LRP pass conserved and where the rest went, per sample (rows) and layer (columns).

    Attributes
    ----------
    score : (N,) the explained value f(x) (target logit, or the sum of a given output relevance)
    layer_relevance : (N, L + 1) sum of relevance at the input of layer l (column l); the last
        column is the output relevance
    bias_absorbed : (N, L) relevance taken by each layer's (modified) bias
    stabiliser_absorbed : (N, L) the rest of each layer's loss: the stabiliser's share (and outputs
        that a rule leaves out, e.g. Gamma's z == 0)
    layer_names, rules : the layers (after canonizing) and the rule each used
    """

    score: np.ndarray
    layer_relevance: np.ndarray
    bias_absorbed: np.ndarray
    stabiliser_absorbed: np.ndarray
    layer_names: list = field(default_factory=list)
    rules: list = field(default_factory=list)

    @property
    def input_relevance(self):
        """(N,) sum of the input relevance."""
        return self.layer_relevance[:, 0]

    @property
    def residual(self):
        """(N,) score minus the input relevance sum."""
        return self.score - self.layer_relevance[:, 0]

    def _share(self, total):
        denom = np.abs(self.score)
        return np.divide(total, denom, out=np.zeros_like(total), where=denom > 0)

    @property
    def bias_share(self):
        """(N,) fraction of |f(x)| absorbed by biases (0 where f(x) = 0)."""
        return self._share(self.bias_absorbed.sum(axis=1))

    @property
    def stabiliser_share(self):
        """(N,) fraction of |f(x)| absorbed by stabilisers (0 where f(x) = 0)."""
        return self._share(self.stabiliser_absorbed.sum(axis=1))

    def sample(self, i):
        """Sample ``i`` as a dict of plain arrays and numbers (for ``Heatmap.extras``)."""
        return {
            "score": float(self.score[i]),
            "layer_relevance": self.layer_relevance[i].copy(),
            "bias_absorbed": self.bias_absorbed[i].copy(),
            "stabiliser_absorbed": self.stabiliser_absorbed[i].copy(),
            "bias_share": float(self.bias_share[i]),
            "stabiliser_share": float(self.stabiliser_share[i]),
            "layer_names": list(self.layer_names),
            "rules": list(self.rules),
        }


class _Explainer:
    method = "explainer"

    def __init__(self, model):
        self.model = _strip_softmax(model)

    def _relevance(self, acts, R_out):  # pragma: no cover - interface
        raise NotImplementedError

    def relevance(self, X, target=None):
        """Relevance of every input element, same shape as ``X``."""
        acts = self.model.trace(X)
        R_out, _, _ = _output_relevance(target, acts[-1])
        return self._relevance(acts, R_out)

    def _heatmaps(self, R, scores, labels, X, image_shape, extras_fn, score_in_map=True):
        maps = []
        for i in range(R.shape[0]):
            extras = extras_fn(i) if extras_fn else {}
            if not score_in_map:
                extras = {**extras, "score": float(scores[i])}
            image = None
            if X.ndim == 4 and X.shape[1] in (1, 3):
                image = X[i, 0] if X.shape[1] == 1 else np.moveaxis(X[i], 0, -1)
            maps.append(
                _heatmap(
                    _channel_map(R[i], image_shape),
                    scores[i] if score_in_map else None,
                    labels[i],
                    self.method,
                    image,
                    extras,
                )
            )
        return maps

    def explain(self, X, target=None, image_shape=None):
        """One ``bowlrp.heatmap.Heatmap`` per sample: relevance summed over channels.

        ``image_shape`` reshapes flat inputs, e.g. ``(8, 8)`` for an MLP on 8x8 digits (a flat
        input of square length is reshaped to a square by default).
        """
        X = check_batch(X)
        acts = self.model.trace(X)
        R_out, scores, labels = _output_relevance(target, acts[-1])
        R = self._relevance(acts, R_out)
        return self._heatmaps(R, scores, labels, X, image_shape, None)


def _heatmap(relevance, score, target, method, image, extras):
    from bowlrp.heatmap import Heatmap

    if image is not None and (not np.all(np.isfinite(image)) or image.shape != relevance.shape[:2]):
        image = None
    return Heatmap(relevance, score=score, target=target, method=method, image=image, extras=extras)


# --------------------------------------------------------------------------------------------------
class LRP(_Explainer):
    """Layer-wise relevance propagation for a ``nets.Sequential``.

    Parameters
    ----------
    model : nets.Sequential
        A trailing Softmax is dropped (the target logit is explained).
    composite : str, Composite or None, default None
        A preset name (``"epsilon_plus"``, ``"epsilon_plus_flat"``, ``"epsilon_alpha2_beta1"``,
        ``"epsilon_alpha2_beta1_flat"``, ``"epsilon_gamma_box"``), a ``nets.composites.Composite``,
        or None: Epsilon(1e-6) on every dense/conv layer (the paper's rule).
    canonizers : list of Canonizer, optional
        Default: fold batch norm into the preceding dense/conv layer.
    **composite_kwargs
        Arguments of the preset, e.g. ``low=0.0, high=1.0`` for ``"epsilon_gamma_box"``.

    Attributes
    ----------
    explained_model : the canonized model the relevance pass runs through
    rules : the rule of each of its layers

    Examples
    --------
    >>> import numpy as np
    >>> import nets
    >>> rng = np.random.default_rng(0)
    >>> model = nets.Sequential([nets.Dense(rng.normal(size=(8, 4))), nets.ReLU(),
    ...                          nets.Dense(rng.normal(size=(3, 8)))])
    >>> X = rng.normal(size=(5, 4))
    >>> R, diag = nets.LRP(model, "epsilon_plus").relevance(X, target=0, return_diagnostics=True)
    >>> R.shape
    (5, 4)
    >>> bool(np.allclose(R.sum(axis=1), model(X)[:, 0], atol=1e-4))
    True
    """

    def __init__(self, model, composite=None, canonizers=None, **composite_kwargs):
        original = _strip_softmax(model)
        self.composite = get_composite(composite, **composite_kwargs)
        self.composite_name = (
            composite if isinstance(composite, str) else ("epsilon" if composite is None else "custom")
        )
        self.explained_model, self.origin = canonize(original, canonizers)
        self.rules = self.composite.resolve(self.explained_model, self.origin, original)
        self.model = original
        self.method = f"lrp/{self.composite_name}"

    def _trace(self, X):
        """The forward pass, plus the rule denominators that can share its GEMMs."""
        a = check_batch(X)
        acts, zs = [a], []
        for name, layer, rule in zip(self.explained_model.names, self.explained_model.layers, self.rules):
            try:
                a, z = forward_for_rule(layer, rule, a)
            except ValueError as err:
                raise ValueError(f"layer {name!r}: {err}") from None
            acts.append(a)
            zs.append(z)
        return acts, zs

    def _backward(self, acts, R_out, with_sums=True, zs=None):
        layers = self.explained_model.layers
        n, n_layers = R_out.shape[0], len(layers)
        sums = np.zeros((n, n_layers + 1))
        bias = np.zeros((n, n_layers))
        R = R_out
        if with_sums:
            _row_sums(R, sums[:, n_layers])
        for i in range(n_layers - 1, -1, -1):
            try:
                R, bias[:, i] = propagate(
                    layers[i], self.rules[i], acts[i], acts[i + 1], R, None if zs is None else zs[i]
                )
            except ValueError as err:
                raise ValueError(f"layer {self.explained_model.names[i]!r}: {err}") from None
            if with_sums:  # the diagnostics only: skipped when nobody asks for them
                _row_sums(R, sums[:, i])
        return R, sums, bias

    def _diagnostics(self, score, sums, bias):
        stab = sums[:, 1:] - sums[:, :-1] - bias
        return Diagnostics(
            score, sums, bias, stab, list(self.explained_model.names), [repr(r) for r in self.rules]
        )

    def _relevance(self, acts, R_out):
        return self._backward(acts, R_out)[0]

    def relevance(self, X, target=None, return_diagnostics=False):
        """Input relevance (same shape as ``X``); with ``return_diagnostics`` also a ``Diagnostics``."""
        out = self.relevance_many(X, [target], return_diagnostics)
        return out[0]

    def relevance_many(self, X, targets, return_diagnostics=False):
        """Relevance for several targets from ONE forward pass: a list with one entry per target
        (an array, or ``(array, Diagnostics)`` with ``return_diagnostics``)."""
        acts, zs = self._trace(X)
        results = []
        for target in targets:
            R_out, score, _ = _output_relevance(target, acts[-1])
            R, sums, bias = self._backward(acts, R_out, with_sums=return_diagnostics, zs=zs)
            results.append((R, self._diagnostics(score, sums, bias)) if return_diagnostics else R)
        return results

    def explain(self, X, target=None, image_shape=None):
        """One ``Heatmap`` per sample (channel sum); extras carry the per-layer diagnostics."""
        return self.explain_many(X, [target], image_shape)[0]

    def explain_many(self, X, targets, image_shape=None):
        """Heatmaps for several targets from one forward pass: a list (per target) of lists."""
        X = check_batch(X)
        acts, zs = self._trace(X)
        out = []
        for target in targets:
            R_out, score, labels = _output_relevance(target, acts[-1])
            R, sums, bias = self._backward(acts, R_out, zs=zs)
            diag = self._diagnostics(score, sums, bias)
            out.append(self._heatmaps(R, score, labels, X, image_shape, diag.sample))
        return out


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
