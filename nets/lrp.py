"""Layer-wise relevance propagation on a ``nets.Graph`` (or ``Sequential``), with diagnostics.

The relevance pass is one reverse walk over the graph's nodes (``Graph.backpropagate``): a node's
output relevance is the sum of what its consumers sent back, and the node's rule
(``nets.propagation.propagate_node``) turns it into relevance at each of its inputs. Per node the
diagnostics record the relevance in and out and what the bias, the stabiliser and (LRN's Taylor
rule) the expansion's remainder absorbed, computed from the rule's denominators, so that

    sum(input relevance) + sum(absorbed) = f(x)

is a check of the backward pass, not an identity.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numba
import numpy as np

from bowlrp.jit import n_parts
from nets._memory import keep_freed_memory
from nets.canonizers import canonize
from nets.composites import get_composite
from nets.explainer import (
    _class_indices,
    _Explainer,
    _output_relevance,
    _row_sums,
    _strip_softmax,
    _target_array,
    check_batch,
)
from nets.layers import Flatten, MaxPool2D, ReLU
from nets.layers.linear import split_over_threads
from nets.propagation import forward_for_rule, propagate_node
from nets.rules import ZBox

__all__ = ["LRP", "Diagnostics"]

#: layers whose output is >= 0 when their input is (a max pool's padding never wins)
_KEEP_SIGN = (MaxPool2D, Flatten)


def _needs_whole_batch(rule, ndim):
    """True when a rule reads the whole batch (of ``ndim`` axes), so the pass may not be cut into
    parts: ZBox bounds taken from the batch's observed range or given per sample (they would have to
    be cut with the batch), or a user's stabiliser (a callable may use batch statistics)."""
    if isinstance(rule, ZBox) and any(b is None or b.ndim >= ndim for b in (rule.low, rule.high)):
        return True
    return callable(getattr(rule, "stabilizer", None))


@dataclass
class Diagnostics:
    """What an LRP pass conserved and where the rest went, per sample (rows) and node (columns, in
    the explained model's topological order).

    Attributes
    ----------
    score : (N,) the explained value f(x) (target logit, or the sum of a given output relevance)
    layer_relevance : (N, L + 1) column l: the relevance node l sent to its inputs (in a chain: the
        relevance at the input of layer l); the last column is the output relevance
    bias_absorbed : (N, L) relevance taken by each node's (modified) bias
    stabiliser_absorbed : (N, L) relevance taken by each node's stabiliser (and outputs that a rule
        leaves out, e.g. Gamma's z == 0, and the relevance of an explicit ``Pad``'s zeros)
    layer_names, rules : the nodes (after canonizing) and the rule each used
    relevance_out : (N, L) relevance at each node's output (the sum of what its consumers sent)
    taylor_absorbed : (N, L) the higher-order remainder of a first-order Taylor step (``LRNTaylor``)
    relevance_at_input : (N,) sum of the relevance at the model input (the explanation's total)
    """

    score: np.ndarray
    layer_relevance: np.ndarray
    bias_absorbed: np.ndarray
    stabiliser_absorbed: np.ndarray
    layer_names: list = field(default_factory=list)
    rules: list = field(default_factory=list)
    relevance_out: np.ndarray | None = None
    taylor_absorbed: np.ndarray | None = None
    relevance_at_input: np.ndarray | None = None

    def __post_init__(self):
        n, L = self.bias_absorbed.shape
        if self.relevance_out is None:
            self.relevance_out = self.layer_relevance[:, 1:].copy()
        if self.taylor_absorbed is None:
            self.taylor_absorbed = np.zeros((n, L))
        if self.relevance_at_input is None:
            self.relevance_at_input = self.layer_relevance[:, 0].copy()

    @property
    def residual(self):
        """(N,) score minus the input relevance sum."""
        return self.score - self.relevance_at_input

    @property
    def absorbed(self):
        """(N,) everything the bias, stabiliser and Taylor steps absorbed, over all nodes: equals
        ``residual`` (up to rounding) when the backward pass is right."""
        return (self.bias_absorbed + self.stabiliser_absorbed + self.taylor_absorbed).sum(axis=1)

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
            "relevance_out": self.relevance_out[i].copy(),
            "bias_absorbed": self.bias_absorbed[i].copy(),
            "stabiliser_absorbed": self.stabiliser_absorbed[i].copy(),
            "taylor_absorbed": self.taylor_absorbed[i].copy(),
            "bias_share": float(self.bias_share[i]),
            "stabiliser_share": float(self.stabiliser_share[i]),
            "layer_names": list(self.layer_names),
            "rules": list(self.rules),
        }


def _box_defaults(composite, model, kwargs):
    """``epsilon_gamma_box`` without ``low``/``high``: the model's training range if known, else
    each batch's observed range; warns which. Returns (kwargs, source)."""
    if composite != "epsilon_gamma_box" or ("low" in kwargs and "high" in kwargs):
        return kwargs, "given" if composite == "epsilon_gamma_box" else None
    if model.input_range is not None:
        low, high = model.input_range
        kwargs = {"low": low, "high": high, **kwargs}
        source = f"the model's training data range [{low:g}, {high:g}]"
    else:
        source = "the observed range (min, max) of the first layers' input in each explained batch"
    warnings.warn(
        f"epsilon_gamma_box: no low/high given; the ZBox bounds are {source}. Pass low= and high= "
        "(the range your inputs can take) to fix them.",
        UserWarning,
        stacklevel=3,
    )
    return kwargs, source


class LRP(_Explainer):
    """Layer-wise relevance propagation for a ``nets.Graph`` or ``nets.Sequential``.

    Parameters
    ----------
    model : nets.Graph or nets.Sequential
        A trailing Softmax is dropped (the target logit is explained).
    composite : str, Composite or None, default None
        A preset name (``"epsilon_plus"``, ``"epsilon_plus_flat"``, ``"epsilon_alpha2_beta1"``,
        ``"epsilon_alpha2_beta1_flat"``, ``"epsilon_gamma_box"``), a ``nets.composites.Composite``,
        or None: Epsilon(1e-6) on every dense/conv layer (the paper's rule).
    canonizers : list of Canonizer, optional
        Default: fold each batch norm into the dense/conv node that feeds only it.
    **composite_kwargs
        Arguments of the preset, e.g. ``low=0.0, high=1.0`` for ``"epsilon_gamma_box"`` (without
        them: the model's ``input_range``, else each batch's observed range, with a warning).

    Attributes
    ----------
    explained_model : the canonized model the relevance pass runs through
    rules : the rule of each of its nodes
    box_source : for ``epsilon_gamma_box``, where the ZBox bounds come from

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
    >>> bool(np.allclose(R.sum(axis=1) + diag.absorbed, model(X)[:, 0], atol=1e-12))
    True
    """

    def __init__(self, model, composite=None, canonizers=None, **composite_kwargs):
        original = _strip_softmax(model)
        composite_kwargs, self.box_source = _box_defaults(composite, original, composite_kwargs)
        self.composite = get_composite(composite, **composite_kwargs)
        self.composite_name = (
            composite if isinstance(composite, str) else ("epsilon" if composite is None else "custom")
        )
        self.explained_model, self.origin = canonize(original, canonizers)
        self.rules = self.composite.resolve(self.explained_model, self.origin, original)
        self.model = original
        self.method = f"lrp/{self.composite_name}"
        keep_freed_memory()  # (once per process) large temporaries are reused, not page-faulted anew

    def __setstate__(self, state):
        self.__dict__.update(state)
        keep_freed_memory()  # (an unpickled explainer, e.g. in a pool's worker, runs no __init__)

    def _trace(self, X):
        """The forward pass, plus the rule denominators that can share its GEMMs."""
        rules, sources = self.rules, self.explained_model.sources
        nonneg = set()  # positions of trace's list known to be >= 0 (no sign check of them needed)

        def step(i, layer, xs):
            if layer.n_inputs != 1:
                return forward_for_rule(layer, rules[i], xs)
            known = sources[i][0] in nonneg
            # exact types: a user's subclass (a shifted ReLU, say) may well output negative values
            if type(layer) is ReLU or (known and type(layer) in _KEEP_SIGN):
                nonneg.add(i + 1)
            return forward_for_rule(layer, rules[i], xs[0], nonneg=known)

        return self.explained_model.trace(X, step=step)

    def _backward(self, acts, R_out, with_sums=True, zs=None):
        model = self.explained_model
        n, n_nodes = R_out.shape[0], len(model)
        bias = np.zeros((n, n_nodes))
        sums = {k: np.zeros((n, n_nodes)) for k in ("in", "out", "stab", "taylor")} if with_sums else None

        def step(i, node, xs, y, R):
            z = None if zs is None else zs[i]
            out, bias[:, i], stab, taylor = propagate_node(
                node.layer, self.rules[i], xs, y, R, z, absorbed=with_sums, bias=with_sums
            )
            if with_sums:  # the diagnostics only: skipped when nobody asks for them
                _row_sums(R, sums["out"][:, i])
                total = np.zeros(n)
                for r in out:
                    _row_sums(r, sums["in"][:, i])
                    total += sums["in"][:, i]
                sums["in"][:, i] = total
                sums["stab"][:, i], sums["taylor"][:, i] = stab, taylor
            return out

        R = model.backpropagate(acts, R_out, step)
        if with_sums:
            sums["at_input"] = np.zeros(n)
            _row_sums(R, sums["at_input"])
            sums["total_out"] = np.zeros(n)
            _row_sums(R_out, sums["total_out"])
        return R, sums, bias

    def _diagnostics(self, score, sums, bias):
        if sums is None:
            return None
        return Diagnostics(
            score,
            np.concatenate([sums["in"], sums["total_out"][:, None]], axis=1),
            bias,
            sums["stab"],
            list(self.explained_model.names),
            [repr(r) for r in self.rules],
            relevance_out=sums["out"],
            taylor_absorbed=sums["taylor"],
            relevance_at_input=sums["at_input"],
        )

    def _relevance(self, acts, R_out):
        return self._backward(acts, R_out, with_sums=False)[0]

    def relevance(self, X, target=None, return_diagnostics=False):
        """Input relevance (same shape as ``X``); with ``return_diagnostics`` also a ``Diagnostics``."""
        out = self.relevance_many(X, [target], return_diagnostics)
        return out[0]

    def relevance_many(self, X, targets, return_diagnostics=False):
        """Relevance for several targets from ONE forward pass: a list with one entry per target
        (an array, or ``(array, Diagnostics)`` with ``return_diagnostics``).

        With more than one numba thread the batch is explained in contiguous parts, one per thread
        (``bowlrp.jit.split_batch``: serial kernels and one BLAS thread each, so every step of the
        pass runs on all threads and no thread pool waits on another); each sample's relevance is
        the same up to float round-off. Not with diagnostics, nor when a rule depends on the whole
        batch (ZBox bounds taken from the batch's observed range or given per sample, a callable
        stabiliser)."""
        targets = list(targets)  # any iterable; it is read more than once
        if not return_diagnostics:
            split = self._split_relevance(X, targets)
            if split is not None:
                return split
        return self._relevance_many(X, targets, return_diagnostics)

    def _split_relevance(self, X, targets):
        """``relevance_many`` through ``split_batch``, or None when the batch must stay whole."""
        if numba.get_num_threads() < 2:
            return None
        X = check_batch(X)
        if any(_needs_whole_batch(rule, X.ndim) for rule in self.rules):
            return None
        n = X.shape[0]
        # about 3 passes of a forward's multiply-adds (``Graph.weight_work``) for the size rule
        work = 6 * self.explained_model.weight_work(n)
        if n_parts(n, work) < 2:
            return None  # (the whole batch: no target check here, whose float case costs a forward)
        self._check_targets(X, targets)  # (a part's error would name the part's size)
        fixed, per_sample = [], []  # targets shared by every sample / split with the batch
        for k, t in enumerate(targets):
            a = None if t is None else np.asarray(t)
            if a is None or a.ndim == 0 or (a.ndim == 1 and a.dtype.kind == "f"):
                fixed.append((k, t))  # None, one class, one output relevance vector for all
            else:
                per_sample.append((k, a))

        def part(Xp, *tps):
            ts = [None] * len(targets)
            for k, t in fixed:
                ts[k] = t
            for (k, _), tp in zip(per_sample, tps):
                ts[k] = tp
            return tuple(self._relevance_many(Xp, ts, False))

        try:
            out = split_over_threads(part, X, *(a for _, a in per_sample), work=work)
        except ValueError:
            # a shape error found inside a part (X itself, or ZBox bounds given per sample for a
            # layer of lower rank than X, which the check above cannot tell from shared ones): the
            # whole batch computes what it can and names a problem with the caller's sizes
            return None
        return list(out) if isinstance(out, tuple) else [out]

    def _check_targets(self, X, targets):
        """Raise what ``_output_relevance`` raises on the whole batch for a target whose form does
        not fit it (a class index's range is checked in the parts: its message names no size).
        The output's shape, which an output relevance must have, comes from one sample's forward."""
        n, outputs = len(X), None
        for t in targets:
            if t is None:
                continue
            a = _target_array(t)
            if a.dtype.kind in "iu":
                _class_indices(a, n)
                continue
            if outputs is None:
                outputs = self.explained_model.trace(X[:1])[-1]
            _output_relevance(a, np.zeros((n,) + outputs.shape[1:], outputs.dtype))

    def _relevance_many(self, X, targets, return_diagnostics):
        acts, zs = self._trace(X)
        results = []
        for target in targets:
            R_out, score, _ = _output_relevance(target, acts[-1])
            R, sums, bias = self._backward(acts, R_out, with_sums=return_diagnostics, zs=zs)
            results.append((R, self._diagnostics(score, sums, bias)) if return_diagnostics else R)
        return results

    def explain(self, X, target=None, image_shape=None):
        """One ``Heatmap`` per sample (channel sum); extras carry the per-node diagnostics."""
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
