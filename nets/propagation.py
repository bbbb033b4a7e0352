"""The one engine that evaluates every LRP rule on every layer.

``propagate_node(layer, rule, xs, y, R)`` returns the relevance at each input of a node and what
the step absorbed, per sample: the bias's share, the stabiliser's share and (LRN's Taylor rule) the
expansion's remainder. The absorbed amounts are computed from the denominators, independently of
the relevance sent back, so "sum of input relevance + absorbed = f(x)" checks the numerics of the
backward pass. For linear layers it evaluates the rule's groups of terms (see ``nets.rules``)
through ``layer.linear`` and ``layer.linear_transpose`` only, so dense layers run on BLAS,
convolutions on im2col + GEMM, pooling on the numba kernels, and a new rule never needs new
numerics. ``propagate(layer, rule, x, y, R)`` is the one-input form (input relevance, bias share).

Rules of the merging layers: ``Add`` splits R in proportion to each input's contribution,
``R_i = a_i R / stab(sum_j a_j)`` (zennit's ``Sum`` with ``Norm``); ``Concat`` and the other
structural layers route relevance back exactly (``Pass``, through ``layer.route``).

Two exact shortcuts keep the relevance pass close to the cost of a forward pass:

* a group that is the unmodified layer (Epsilon/Norm without ``zero_bias``) reuses the forward
  output ``y`` as its denominator instead of recomputing it;
* a term whose modified input is all zero (x- after a ReLU, x+ of a negative input) is skipped:
  it contributes nothing to z or to R_in.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from nets import _kernels
from nets._denominators import _bias_term, _dense, _StackedDenominator, _with_bias, stabilised_divide
from nets.layers import LRN, Add, Conv2D, Dense, Pad, _ChannelAffine
from nets.rules import Epsilon, Norm, Rule

__all__ = ["propagate", "propagate_node", "forward_for_rule", "stabilised_divide", "check_rule_for_layer"]


def check_rule_for_layer(rule, layer, where=""):
    """Raise TypeError when ``rule`` is not defined for ``layer``."""
    if not isinstance(rule, Rule):
        raise TypeError(f"{where}expected a nets.rules.Rule, got {type(rule).__name__}")
    name = type(rule).__name__
    if isinstance(layer, Add):
        # the only rules that split a sum by contribution; Pass would duplicate the relevance
        if not isinstance(rule, (Norm, Epsilon)):
            raise TypeError(f"{where}Add takes Norm or Epsilon (R_i = a_i R / stab(sum a)), not {name}")
        return
    if rule.kind == "maxpool":
        if not hasattr(layer, "scatter"):
            raise TypeError(
                f"{where}{name} is only defined for MaxPool2D and GlobalMaxPool2D, not {layer.kind}"
            )
    elif rule.kind == "lrn_taylor":
        if not isinstance(layer, LRN):
            raise TypeError(f"{where}{name} is only defined for LRN, not {layer.kind}")
    elif rule.kind == "linear":
        if not layer.is_linear:
            raise TypeError(f"{where}rule {name} needs a linear layer, {layer.kind} is not one")
        if getattr(layer, "W", None) is None and not rule.parameter_free:
            raise TypeError(f"{where}rule {name} needs weights; {layer.kind} has none (use Norm)")
    elif rule.kind == "passthrough":
        # a per-channel affine map (batch norm, Scale) may pass (zennit's presets do, for a batch
        # norm the canonizer could not fold); any other linear map or a max pool may not
        if (layer.is_linear and not isinstance(layer, _ChannelAffine)) or hasattr(layer, "scatter"):
            raise TypeError(f"{where}Pass would skip the linear map of {layer.kind}; give it a linear rule")


def _modify(key, A, gamma):
    if A is None:
        return None
    if key == "id":
        return A
    if key == "pos":
        return np.maximum(A, 0)
    if key == "neg":
        return np.minimum(A, 0)
    if key == "square":
        return A * A
    if key == "ones":
        return np.ones_like(A)
    if key == "gamma_pos":
        return A + A.dtype.type(gamma) * np.maximum(A, 0)
    if key == "gamma_neg":
        return A + A.dtype.type(gamma) * np.minimum(A, 0)
    raise ValueError(f"unknown parameter modifier {key!r}")  # pragma: no cover - rules validate


class _Inputs:
    """Modified inputs, computed once per layer and shared by the terms; None means all zero."""

    def __init__(self, x, rule):
        self.x, self.rule, self._cache = x, rule, {}
        self._nonneg = self._nonpos = None

    @property
    def nonneg(self):  # computed only for rules that split x into x+ and x-
        if self._nonneg is None:
            self._nonneg = bool(self.x.min() >= 0)
        return self._nonneg

    @property
    def nonpos(self):
        if self._nonpos is None:
            self._nonpos = not _kernels.any_positive(np.ravel(self.x))
        return self._nonpos

    def get(self, key):
        if key in self._cache:
            return self._cache[key]
        x = self.x
        if key == "x":
            v = x
        elif key == "pos":
            v = None if self.nonpos else (x if self.nonneg else np.maximum(x, 0))
        elif key == "neg":
            v = None if self.nonneg else (x if self.nonpos else np.minimum(x, 0))
        elif key == "ones":  # a read-only broadcast view: no batch-sized allocation
            v = np.broadcast_to(np.ones((1,) + x.shape[1:], dtype=x.dtype), x.shape)
        else:  # "low" / "high" (ZBox)
            v = self.rule.bound(key, x)
            raw = getattr(self.rule, key, None)
            if x.shape[0] > 1 and (raw is None or np.ndim(raw) < x.ndim):
                # a scalar, per-channel or per-pixel bound is the same for every sample: a view
                # with batch stride 0, so its linear map runs on one sample (``_shared``)
                v = np.broadcast_to(v[:1], x.shape)
        self._cache[key] = v
        return v


def _bias_absorbed(s, b):
    """Per-sample sum_j s_j * b_j (b broadcast along axis 1)."""
    per_channel = s.reshape(s.shape[0], s.shape[1], -1).sum(axis=2) if s.ndim > 2 else s
    return per_channel @ b.astype(s.dtype, copy=False)


def _fusable_groups(layer, rule, inputs):
    """Groups whose denominator is ONE linear map of x itself: a single live term whose input is x
    (or x+ of a non-negative x, x- of a non-positive x), e.g. ZPlus / AlphaBeta / Gamma after a
    ReLU. Their z can come out of the forward pass's im2col and GEMM.

    A group gated to negative outputs (Gamma's second group) is left out: after a ReLU whose
    consumer multiplies by its input, no relevance reaches a negative output, and the relevance
    pass then skips the group without ever needing its z (it computes it when it does)."""
    if not _plain_linear(layer, rule):
        return []  # (a grouped convolution cannot stack modified weights as extra output channels)
    fusable = []
    for gi, group in enumerate(rule.groups()):
        if group.gate == "negative":
            continue
        live = [t for t in group.terms if inputs.get(t.input) is not None]
        if len(live) != 1 or live[0].input == "ones" or inputs.get(live[0].input) is not inputs.x:
            continue
        t = live[0]
        if t.weight == "id" and t.sign == 1.0:
            continue  # W x itself: the forward GEMM (``_forward_term``)
        fusable.append((gi, group, t))
    return fusable


def _plain_linear(layer, rule):
    """A dense or ungrouped convolution layer under a linear rule: its terms are GEMMs of W."""
    return rule.kind == "linear" and isinstance(layer, (Dense, Conv2D)) and getattr(layer, "groups", 1) == 1


def _forward_term(layer, t, inputs, tb, y, unbiased):
    """``layer.linear(x, W, tb)`` of a term on x itself with the unmodified weights, from the forward
    pass instead of another GEMM: ``y`` when the term carries the layer's own bias, the forward
    GEMM before its bias (``unbiased``) when it carries none; None otherwise."""
    if t.weight != "id" or inputs.get(t.input) is not inputs.x:
        return None
    if tb is None:
        # layers without a bias (pools) have no ``b`` at all
        return y if getattr(layer, "b", None) is None else unbiased
    return y if tb is getattr(layer, "b", None) else None


def _needs_unbiased(layer, rule, inputs, fusable):
    """Whether the relevance pass will want ``W x`` without the bias (ZBox's x term, a zero-bias
    Epsilon): then the forward pass keeps its GEMM's output before adding the bias."""
    if not _plain_linear(layer, rule) or layer.b is None:
        return False
    fused = {gi for gi, _, _ in fusable}
    for gi, group in enumerate(rule.groups()):
        if gi in fused:
            continue
        for t in group.terms:
            if t.weight == "id" and inputs.get(t.input) is inputs.x and (t.bias is None or rule.zero_bias):
                return True
    return False


def forward_for_rule(layer, rule, x, nonneg=False):
    """``layer.forward(x)`` and the rule's extras: ``{group index: z}`` for the denominators of the
    fusable groups, computed in the same pass by stacking their modified weights with W (one
    im2col, one GEMM; ``z`` is array-like, read in place by :func:`propagate_node`,
    ``np.asarray(z)`` copies it out), ``"unbiased"``: W x before the bias, when a term needs it, and
    ``"nonneg"`` / ``"nonpos"``: the sign checks of x the rule made (not repeated backwards).

    When the stack holds W+ and W- (AlphaBeta on a non-negative input), W x is their sum
    (W x = W+ x + W- x) instead of a third GEMM; the forward output then differs from the layer's
    own by float round-off only.

    ``nonneg=True`` says that x >= 0 is known (a ReLU's output): the check is skipped."""
    if layer.n_inputs != 1:
        return layer.forward(*x), {}
    inputs = _Inputs(x, rule)
    if nonneg:
        inputs._nonneg = True
    fusable = _fusable_groups(layer, rule, inputs) if rule.kind == "linear" else []
    unbiased = _needs_unbiased(layer, rule, inputs, fusable)
    signs = {k: v for k, v in (("nonneg", inputs._nonneg), ("nonpos", inputs._nonpos)) if v is not None}
    if not fusable and not unbiased:
        return layer.forward(x), signs  # (the sign checks of x, for the relevance pass)
    layer.check_input(x)
    W, b_layer = layer.W, layer.b
    b = None if rule.zero_bias else b_layer
    gamma = getattr(rule, "gamma", 0.0)
    o = W.shape[0]
    signed = [(t.weight, t.sign) for _, _, t in fusable]
    split = ("pos", 1.0) in signed and ("neg", 1.0) in signed
    weights = [] if split else [W]
    biases = []
    for _, group, t in fusable:
        weights.append(t.sign * _modify(t.weight, W, gamma))
        zb = None
        for term in group.terms:  # the bias of every term counts, live or not
            if term.bias is not None and b is not None:
                tb = term.sign * _modify(term.bias, b, gamma)
                zb = tb if zb is None else zb + tb
        biases.append(zb)
    stacked = layer.linear(x, np.concatenate(weights), None)
    blocks = [stacked[:, k * o : (k + 1) * o] for k in range(len(weights))]
    if split:
        y0 = blocks[signed.index(("pos", 1.0))] + blocks[signed.index(("neg", 1.0))]
    else:
        y0 = blocks[0]
    first = 0 if split else 1  # the fusable groups' blocks follow W's, if W is in the stack
    extras = {gi: _StackedDenominator(stacked, (first + k) * o, o, zb)
              for k, ((gi, _, _), zb) in enumerate(zip(fusable, biases))}
    extras.update(signs)
    if split:
        if unbiased:
            extras["unbiased"] = y0
        return _with_bias(y0, b_layer), extras
    # W x + b in place in the stacked output's W block (the denominators read the blocks after it
    # and keep the whole output alive anyway): no output-sized copy per layer
    if unbiased:
        extras["unbiased"] = np.array(y0, order="C")
    if b_layer is not None:
        y0 += _bias_term(b_layer, y0.shape, y0.dtype)
    return y0, extras


def _shared(a):
    """True for a batch-broadcast view (every sample the same array)."""
    return a.ndim > 0 and a.shape[0] > 1 and a.strides[0] == 0


def _row_sum(a):
    """Per-sample sum in float64."""
    return a.reshape(a.shape[0], -1).sum(axis=1, dtype=np.float64)


def _accumulate(R_in, contrib, factor, dtype):
    """``R_in + factor * contrib``, storing the first contribution (owned, writable) as is."""
    if factor != 1.0:
        contrib = factor * contrib
    if R_in is None:
        fresh = contrib.flags.owndata and contrib.flags.writeable and contrib.dtype == dtype
        return contrib if fresh else np.array(contrib, dtype=dtype)
    R_in += contrib
    return R_in


def _stacked_transposes(layer, pending, input_shape):
    """``(factor, xin * back)`` for the pending terms ``(xin, factor, s, W_modified)``, the product
    made by the layer's transposed map (``times=``: inside a convolution's fold). Terms that
    multiply the same input (alpha and beta of AlphaBeta: x * (a W+^T s+ - b W-^T s-)) go back as
    ONE transposed map of the stacked weights, ``[W1; W2]^T [f1 s1; f2 s2]`` (one GEMM over twice the
    channels, one col2im instead of two, one product with x); the others one by one."""
    by_input = {}
    for xin, factor, s, Wm in pending:
        by_input.setdefault(id(xin), (xin, []))[1].append((factor, s, Wm))
    for xin, items in by_input.values():
        if len(items) == 1:
            factor, s, Wm = items[0]
            yield factor, _transpose_times(layer, s, Wm, input_shape, xin)
            continue
        s0 = items[0][1]
        width = sum(s.shape[1] for _, s, _ in items)
        s_all = np.empty((s0.shape[0], width) + s0.shape[2:], np.result_type(*(s for _, s, _ in items)))
        o = 0
        for f, s, _ in items:  # f * s written straight into its block (no concatenation pass)
            block = s_all[:, o : o + s.shape[1]]
            if f == 1.0:
                block[...] = s
            else:
                np.multiply(s, f, out=block)
            o += s.shape[1]
        W_all = np.concatenate([Wm for _, _, Wm in items], axis=0)
        yield 1.0, _transpose_times(layer, s_all, W_all, input_shape, xin)


@functools.cache
def _takes_times(layer_type):
    """Whether ``layer_type.linear_transpose`` takes ``times=`` (the library's layers do; a user's
    layer written to the documented ``linear_transpose(s, W, input_shape)`` need not)."""
    try:
        params = inspect.signature(layer_type.linear_transpose).parameters
    except (TypeError, ValueError):
        return False
    return "times" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _transpose_times(layer, s, W, input_shape, xin):
    """``xin * layer.linear_transpose(s, W, input_shape)``, the product made inside the layer's
    transposed map when it offers ``times=`` (the same numbers: one product per element)."""
    if _takes_times(type(layer)):
        return layer.linear_transpose(s, W, input_shape, times=xin)
    back = layer.linear_transpose(s, W, input_shape)
    return xin * back


def _propagate_linear(layer, rule, x, y, R, precomputed=None, stab=None, with_bias=True):
    W = getattr(layer, "W", None)
    b = None if rule.zero_bias else getattr(layer, "b", None)
    gamma = getattr(rule, "gamma", 0.0)
    dtype = np.result_type(x.dtype, R.dtype)
    inputs = _Inputs(x, rule)
    if precomputed:  # x's sign checks from the forward pass (a pass over x each)
        inputs._nonneg = precomputed.get("nonneg")
        inputs._nonpos = precomputed.get("nonpos")
    R_in = None  # the first contribution is stored, later ones are added (no zero-fill pass)
    bias_absorbed = np.zeros(x.shape[0], dtype=np.float64)
    # dense/conv terms are sent back together at the end (see ``_stacked_transposes``)
    stackable = _plain_linear(layer, rule)  # (rule.kind is "linear" here)
    pending, scaled = [], {}
    unbiased = precomputed.get("unbiased") if precomputed else None
    for gi, group in enumerate(rule.groups()):
        Rg = R
        if group.gate == "positive":
            Rg = R * (y > 0)
        elif group.gate == "negative":
            Rg = R * (y < 0)
        if group.gate is not None and not Rg.any():
            continue  # no relevance through this side (e.g. negative outputs before a ReLU): s = 0
        terms = [(t, inputs.get(t.input)) for t in group.terms]
        reuse_forward = (
            len(terms) == 1
            and terms[0][0].input == "x"
            and terms[0][0].weight == "id"
            and terms[0][0].bias == "id"
            and not rule.zero_bias
        )
        biases = []
        if precomputed and gi in precomputed:  # computed with the forward pass
            z = precomputed[gi]
            for t in group.terms:
                if t.bias is not None and b is not None:
                    biases.append((t.sign, _modify(t.bias, b, gamma)))
        elif reuse_forward:
            z = y
            if b is not None:
                biases.append((1.0, b))
        else:
            z = None
            for t, xin in terms:
                tb = _modify(t.bias, b, gamma) if t.bias is not None else None
                if xin is None:
                    zt = None if tb is None else _bias_term(tb, y.shape, dtype)
                elif (zf := _forward_term(layer, t, inputs, tb, y, unbiased)) is not None:
                    zt = zf  # W x (+ b) of the forward pass
                elif t.input == "ones" or _shared(xin):
                    # the same for every sample (Flat, WSquare, ZBox's bounds): one sample's worth,
                    # broadcast later
                    zt = layer.linear(xin[:1], _modify(t.weight, W, gamma), tb)
                else:
                    zt = layer.linear(xin, _modify(t.weight, W, gamma), tb)
                if tb is not None:
                    biases.append((t.sign, tb))
                if zt is None:
                    continue
                z = t.sign * zt if z is None else z + t.sign * zt
            if z is None:  # every term vanished: z = 0, all of R is absorbed
                z = np.zeros(y.shape, dtype=dtype)
        s = stabilised_divide(Rg, z, rule.stabilizer)
        if stab is not None:  # what this group does not send back: sum R_g - sum s z
            stab -= group.coef * _row_sum(s * _dense(z))
        for t, xin in terms:
            if xin is None:
                continue
            factor = group.coef * t.sign
            if stackable and t.input != "ones" and t.weight != "ones":
                Wm = _modify(t.weight, W, gamma)
                v = rule.channel_bound(t.input, x) if t.input in ("low", "high") else None
                if v is None:
                    pending.append((xin, factor, s, Wm))
                else:  # l W+^T s = (l W+)^T s for a per-channel l: into the weights, no product
                    scaled.setdefault(id(s), (s, []))[1].append(factor * (Wm * v))
                continue
            if t.weight == "ones" and hasattr(layer, "linear_transpose_ones"):
                back = layer.linear_transpose_ones(s, x.shape)  # Flat: same numbers, less work
            else:
                back = layer.linear_transpose(s, _modify(t.weight, W, gamma), x.shape)
            contrib = back if t.input == "ones" else xin * back  # 1 * back: skip the product
            R_in = _accumulate(R_in, contrib, factor, dtype)
        for sign, tb in biases if with_bias else ():
            bias_absorbed += group.coef * sign * _bias_absorbed(s, tb)
    for s, Ws in scaled.values():  # the terms of one group whose inputs went into the weights
        R_in = _accumulate(R_in, layer.linear_transpose(s, sum(Ws[1:], Ws[0]), x.shape), 1.0, dtype)
    for factor, contrib in _stacked_transposes(layer, pending, x.shape):
        R_in = _accumulate(R_in, contrib, factor, dtype)
    if R_in is None:  # every term vanished (all-zero input parts)
        R_in = np.zeros(x.shape, dtype=dtype)
    return R_in, bias_absorbed


def propagate_node(layer, rule, xs, y, R, precomputed=None, absorbed=False, bias=True):
    """Relevance at each input of a node (inputs ``xs``, output ``y``) from the relevance ``R`` at
    its output, under ``rule``.

    Returns ``(R_ins, bias, stab, taylor)``: a list with one array per input, and per sample the
    relevance the bias absorbed (zeros with ``bias=False``: a pass over each quotient saved when
    nobody reads it), and (only with ``absorbed=True``, else None) the stabiliser's share
    (with outputs a rule leaves out) and the Taylor remainder of ``LRNTaylor``.
    ``precomputed`` holds denominators from ``forward_for_rule``.
    """
    if R.shape != y.shape:
        raise ValueError(f"{layer.kind}: relevance has shape {R.shape}, the output has shape {y.shape}")
    n = y.shape[0]
    zero = np.zeros(n, dtype=np.float64)
    stab = _row_sum(R) if absorbed else None  # the relevance in; each step subtracts what it keeps
    taylor = zero.copy() if absorbed else None
    if isinstance(layer, Add):
        s = stabilised_divide(R, y, rule.stabilizer)
        if absorbed:
            stab -= _row_sum(s * y)
        return [x * s for x in xs], zero, stab, taylor
    if rule.kind == "linear":
        R_in, bias = _propagate_linear(layer, rule, xs[0], y, R, precomputed, stab, bias)
        return [R_in], bias, stab, taylor
    if rule.kind == "lrn_taylor":
        x = xs[0]
        s = stabilised_divide(R, y, rule.stabilizer)
        if absorbed:
            sy = s * y
            stab -= _row_sum(sy)
            taylor += _row_sum(sy * layer.taylor_loss(x))
        return [x * layer.backward(x, y, s)], zero, stab, taylor
    if rule.kind == "maxpool":
        out = [layer.scatter(xs[0], y, R)]
    else:  # passthrough
        out = layer.route(xs, y, R)
    if absorbed:
        # routing loses nothing, except the relevance an explicit Pad's zeros received (non-zero
        # only for rules that do not scale with the input: Flat, WSquare, ZBox's bounds)
        stab = stab - sum(_row_sum(r) for r in out) if isinstance(layer, Pad) else zero.copy()
    return out, zero, stab, taylor


def propagate(layer, rule, x, y, R, precomputed=None):
    """Relevance at the input of the one-input ``layer`` (input ``x``, output ``y``) from the
    relevance ``R`` at its output, under ``rule``; returns ``(R_in, bias_absorbed)`` (bias share per
    sample). ``precomputed`` holds denominators from ``forward_for_rule``."""
    out, bias, _, _ = propagate_node(layer, rule, [x], y, R, precomputed)
    return out[0], bias
