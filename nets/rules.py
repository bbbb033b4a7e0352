"""LRP rules as small declarative objects (SPEC section 3).

A rule does no arithmetic of its own. A rule for a linear layer (dense, convolution, unfolded batch
norm, average pooling) is a list of *groups*; each group is a list of *terms* and a coefficient:

    z_g    = sum_t sign_t * layer.linear(input_t(x), weight_t(W), bias_t(b))
    s_g    = gate_g(R) / stab(z_g)
    R_in   = sum_g coef_g * sum_t sign_t * input_t(x) * layer.linear_transpose(s_g, weight_t(W))

with the input modifiers ``"x"``, ``"pos"`` (x+), ``"neg"`` (x-), ``"ones"``, ``"low"``, ``"high"``
and weight/bias modifiers ``"id"``, ``"pos"``, ``"neg"``, ``"square"``, ``"ones"``, ``"gamma_pos"``
(W + gamma W+), ``"gamma_neg"`` (W + gamma W-). The one shared engine that evaluates them is
``nets.propagation``; this is the zennit pattern (input, parameter and gradient modifiers feeding one
backward pass) written for numpy.

Stabiliser: a float eps gives stab(z) = z + eps * sign0(z) with sign0(0) = +1; a callable is applied
to z and must return the denominator. Wherever the denominator is exactly 0 the quotient is 0, so
relevance over a zero denominator is absorbed instead of becoming NaN (0/0 -> 0).

``zero_bias=True`` drops every bias term (the conservation setting). Rules for layers without a
linear map: ``Pass`` (activations, structural layers, dropout: relevance unchanged or exactly
re-routed), ``WinnerTakesAll`` (max pooling) and ``LRNTaylor`` (local response normalisation).
A residual ``Add`` takes ``Norm`` (or ``Epsilon``): ``R_i = a_i R / stab(sum_j a_j)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Rule",
    "Term",
    "Group",
    "Epsilon",
    "ZPlus",
    "AlphaBeta",
    "Gamma",
    "ZBox",
    "WSquare",
    "Flat",
    "Pass",
    "Norm",
    "WinnerTakesAll",
    "LRNTaylor",
    "DEFAULT_EPSILON",
]

#: the default epsilon/stabiliser of every rule and preset (as in zennit's composites)
DEFAULT_EPSILON = 1e-6
#: how far alpha - beta may be from 1 (the difference of two decimal floats such as 2.2 - 1.2)
_ALPHA_BETA_TOL = 1e-9

_INPUTS = {"x", "pos", "neg", "ones", "low", "high"}
_PARAMS = {"id", "pos", "neg", "square", "ones", "gamma_pos", "gamma_neg"}


@dataclass(frozen=True)
class Term:
    """One linear contribution ``sign * layer.linear(input(x), weight(W), bias(b))``.

    ``bias`` is the bias modifier, or None when this term carries no bias.
    """

    input: str
    weight: str
    bias: str | None = None
    sign: float = 1.0

    def __post_init__(self):
        if self.input not in _INPUTS:
            raise ValueError(f"unknown input modifier {self.input!r}")
        if self.weight not in _PARAMS or (self.bias is not None and self.bias not in _PARAMS):
            raise ValueError(f"unknown parameter modifier in {self}")


@dataclass(frozen=True)
class Group:
    """Terms sharing one denominator; ``gate`` restricts R to outputs with ``"positive"`` or
    ``"negative"`` unmodified pre-activation (the Gamma rule), None uses all of R."""

    terms: tuple
    coef: float = 1.0
    gate: str | None = None


def _check_stabilizer(value, name="stabilizer"):
    if callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a float or a callable z -> denominator, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite float >= 0, got {value}")
    return value


class Rule:
    """Base of all rules: the stabiliser and the zero-bias option.

    Parameters
    ----------
    stabilizer : float or callable, default 1e-6
        eps of stab(z) = z + eps * sign0(z), or a function z -> denominator.
    zero_bias : bool, default False
        Ignore the layer's bias (every bias term is dropped from z).
    """

    #: "linear" (needs a layer with a linear map), "passthrough" or "maxpool"
    kind = "linear"
    #: False when the rule needs the layer's weights (parameterless pooling cannot use it)
    parameter_free = False

    def __init__(self, stabilizer=DEFAULT_EPSILON, zero_bias=False):
        self.stabilizer = _check_stabilizer(stabilizer)
        self.zero_bias = bool(zero_bias)

    def groups(self):
        raise NotImplementedError

    def _params(self):
        return {"stabilizer": self.stabilizer, "zero_bias": self.zero_bias}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self._params() == other._params()

    def __hash__(self):
        return hash((type(self).__name__, repr(self._params())))


class Epsilon(Rule):
    """LRP-epsilon: ``R_in = x * W.T s`` with ``s = R / stab(Wx + b)``; ``epsilon=0`` is LRP-0.

    Examples
    --------
    >>> from nets.rules import Epsilon
    >>> Epsilon(0.0)
    Epsilon(epsilon=0.0, zero_bias=False)
    """

    parameter_free = True

    def __init__(self, epsilon=DEFAULT_EPSILON, zero_bias=False):
        super().__init__(_check_stabilizer(epsilon, "epsilon"), zero_bias)

    @property
    def epsilon(self):
        return self.stabilizer

    def _params(self):
        return {"epsilon": self.stabilizer, "zero_bias": self.zero_bias}

    def groups(self):
        return (Group((Term("x", "id", "id"),)),)


class Norm(Rule):
    """Sum / average pooling (and any parameter-free linear map): ``R_in = x * J.T (R / stab(z))``.

    It is Epsilon without parameters; the stabiliser only prevents division by zero.
    """

    parameter_free = True

    def __init__(self, stabilizer=DEFAULT_EPSILON):
        super().__init__(stabilizer, zero_bias=False)

    def _params(self):
        return {"stabilizer": self.stabilizer}

    def groups(self):
        return (Group((Term("x", "id", "id"),)),)


class ZPlus(Rule):
    """z+ rule: ``z = W+ x+ + W- x- + b+``, ``R_in = x+ * W+.T s + x- * W-.T s`` (alpha=1, beta=0)."""

    def groups(self):
        return (Group((Term("pos", "pos", "pos"), Term("neg", "neg", None))),)


class AlphaBeta(Rule):
    """alpha-beta rule (Bach et al. 2015), alpha - beta = 1 (to 1e-9, so 2.2 and 1.2 are accepted),
    both >= 0.

    ``z_a = W+ x+ + W- x- + b+``, ``z_b = W- x+ + W+ x- + b-``;
    ``R_in = alpha (x+ W+.T s_a + x- W-.T s_a) - beta (x+ W-.T s_b + x- W+.T s_b)``.
    Conservation needs z_a != 0 and z_b != 0: an output without any negative (or positive)
    contribution passes alpha (or -beta) times its relevance, as in zennit and the LRP Toolbox.

    Examples
    --------
    >>> from nets.rules import AlphaBeta
    >>> AlphaBeta(2, 1)
    AlphaBeta(alpha=2.0, beta=1.0, stabilizer=1e-06, zero_bias=False)
    >>> AlphaBeta(1, 1)
    Traceback (most recent call last):
    ...
    ValueError: AlphaBeta needs alpha - beta == 1, got alpha=1.0, beta=1.0
    """

    def __init__(self, alpha=2.0, beta=1.0, stabilizer=DEFAULT_EPSILON, zero_bias=False):
        alpha, beta = float(alpha), float(beta)
        if not (np.isfinite(alpha) and np.isfinite(beta)) or alpha < 0 or beta < 0:
            raise ValueError(f"AlphaBeta needs alpha >= 0 and beta >= 0, got alpha={alpha}, beta={beta}")
        if abs(alpha - beta - 1) > _ALPHA_BETA_TOL:
            raise ValueError(f"AlphaBeta needs alpha - beta == 1, got alpha={alpha}, beta={beta}")
        super().__init__(stabilizer, zero_bias)
        self.alpha, self.beta = alpha, beta

    def _params(self):
        return {"alpha": self.alpha, "beta": self.beta, **super()._params()}

    def groups(self):
        groups = [Group((Term("pos", "pos", "pos"), Term("neg", "neg", None)), coef=self.alpha)]
        if self.beta != 0:
            groups.append(Group((Term("pos", "neg", "neg"), Term("neg", "pos", None)), coef=-self.beta))
        return tuple(groups)


class Gamma(Rule):
    """Generalised gamma rule (zennit's form, valid for negative inputs too).

    Where the unmodified output z > 0: ``z+ = (W + gW+) x+ + (W + gW-) x- + b + g b+``; where z < 0:
    ``z- = (W + gW-) x+ + (W + gW+) x- + b + g b-``; each side's relevance is redistributed through
    its own modified weights. Relevance of outputs with z == 0 exactly is absorbed. For x >= 0 and
    z > 0 this is the gamma rule of Montavon et al. (2019).
    """

    def __init__(self, gamma=0.25, stabilizer=DEFAULT_EPSILON, zero_bias=False):
        gamma = float(gamma)
        if not np.isfinite(gamma) or gamma < 0:
            raise ValueError(f"Gamma needs gamma >= 0, got {gamma}")
        super().__init__(stabilizer, zero_bias)
        self.gamma = gamma

    def _params(self):
        return {"gamma": self.gamma, **super()._params()}

    def groups(self):
        return (
            Group((Term("pos", "gamma_pos", "gamma_pos"), Term("neg", "gamma_neg", None)), gate="positive"),
            Group((Term("pos", "gamma_neg", "gamma_neg"), Term("neg", "gamma_pos", None)), gate="negative"),
        )


class ZBox(Rule):
    """z^B rule for bounded inputs (first layer of image models), l <= x <= h.

    ``s = R / stab(Wx - W+ l - W- h)``, ``R_in = x W.T s - l W+.T s - h W-.T s``. The bias cancels
    (as in zennit: b - b+ - b- = 0). ``low``/``high``: a scalar, one value per input channel, an
    array of the input's per-sample shape, or None: the smallest (largest) value of the layer's
    input in the batch being explained (the observed range).
    """

    def __init__(self, low, high, stabilizer=DEFAULT_EPSILON, zero_bias=False):
        super().__init__(stabilizer, zero_bias)
        self._set_bounds(low, high)

    def _set_bounds(self, low, high):
        """Validate and keep the bounds as read-only copies (an edit of the caller's arrays cannot
        change them behind ``channel_bound``'s back; assigning ``rule.low`` / ``rule.high`` anew
        validates and classifies again)."""
        low, high = (None if v is None else np.array(v, dtype=np.float64) for v in (low, high))
        given = [v for v in (low, high) if v is not None]
        if not all(np.all(np.isfinite(v)) for v in given):
            raise ValueError("ZBox bounds must be finite")
        if len(given) == 2 and np.any(np.broadcast_arrays(low, high)[0] > np.broadcast_arrays(low, high)[1]):
            raise ValueError("ZBox needs low <= high")
        for v in given:
            v.setflags(write=False)
        self._low, self._high = low, high
        # whether an array bound (per-sample shape (C, H, W)) is one value per channel: checked once
        # here, not on every relevance pass (``channel_bound``)
        self._per_channel = {
            which: v is not None and v.ndim >= 2 and bool(np.all(_rows(v) == _rows(v)[:, :1]))
            for which, v in (("low", low), ("high", high))
        }

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._set_bounds(self._low, self._high)  # (unpickled arrays come back writable)

    @property
    def low(self):
        """The lower bound (read-only float64 array) or None (the batch's observed minimum)."""
        return self._low

    @low.setter
    def low(self, value):
        self._set_bounds(value, self._high)

    @property
    def high(self):
        """The upper bound (read-only float64 array) or None (the batch's observed maximum)."""
        return self._high

    @high.setter
    def high(self, value):
        self._set_bounds(self._low, value)

    def _params(self):
        return {
            "low": None if self.low is None else self.low.tolist(),
            "high": None if self.high is None else self.high.tolist(),
            **super()._params(),
        }

    def groups(self):
        return (
            Group((Term("x", "id", None), Term("low", "pos", None, -1.0), Term("high", "neg", None, -1.0))),
        )

    def channel_bound(self, which, x):
        """``low`` or ``high`` as one value per input channel of the batch ``x`` (N, C, ...), shape
        (1, C, 1, ...) in x's dtype, when the bound is the same for every sample and every position
        of a channel (a scalar, one value per channel, the observed range, a per-sample array that
        is constant over each channel, or any per-sample bound of a dense layer's (N, D) input);
        None otherwise. Such a bound can go into the weights (``l W+^T s = (l W+)^T s``)."""
        v = self.low if which == "low" else self.high
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        if v is None:  # the observed range of this batch
            return np.full(shape, x.min() if which == "low" else x.max(), dtype=x.dtype)
        if v.ndim == 0:
            return np.full(shape, v, dtype=x.dtype)
        if v.ndim == 1 and v.shape[0] == x.shape[1]:
            return v.astype(x.dtype).reshape(shape)
        if v.shape == x.shape[1:] and self._per_channel[which]:
            return _rows(v)[:, 0].astype(x.dtype).reshape(shape)
        return None

    def bound(self, which, x):
        """``low`` or ``high`` broadcast against the batch ``x`` (per channel for a 1-D bound)."""
        v = self.low if which == "low" else self.high
        if v is None:  # the observed range of this batch
            v = np.asarray(x.min() if which == "low" else x.max(), dtype=np.float64)
        if v.ndim == 0:
            return np.full(x.shape, v, dtype=x.dtype)
        if v.ndim == 1 and x.ndim >= 2 and v.shape[0] == x.shape[1]:
            v = v.reshape((1, -1) + (1,) * (x.ndim - 2))
        elif v.shape == x.shape[1:]:
            v = v[None]
        elif v.shape != x.shape:
            raise ValueError(
                f"ZBox {which} bound of shape {v.shape} does not fit inputs of shape {x.shape} "
                "(give a scalar, one value per channel or the per-sample input shape)"
            )
        return np.broadcast_to(v.astype(x.dtype), x.shape)


def _rows(v):
    """``v`` (C, ...) as a (C, positions) matrix."""
    return v.reshape(len(v), -1)


class WSquare(Rule):
    """w^2 rule: ``R_in = (W^2).T s`` with ``s = R / stab(W^2 1 + b^2)`` (input-independent)."""

    def groups(self):
        return (Group((Term("ones", "square", "square"),)),)


class Flat(Rule):
    """Flat rule: every input of an output's receptive field gets an equal share,
    ``R_in = 1.T s`` with ``s = R / stab(fan-in)`` (weights set to one, no bias)."""

    def groups(self):
        return (Group((Term("ones", "ones", None),)),)


class _ParameterFreeRule(Rule):
    """A rule with no stabiliser and no bias to treat (the layer has no weights)."""

    parameter_free = True

    def __init__(self):
        self.stabilizer = 0.0
        self.zero_bias = False

    def _params(self):
        return {}


class Pass(_ParameterFreeRule):
    """Relevance passes unchanged (activations, flatten reshapes it, dropout, batch norm after folding)."""

    kind = "passthrough"


class WinnerTakesAll(_ParameterFreeRule):
    """Max pooling: each window's relevance goes to its maximum input; ties share it equally."""

    kind = "maxpool"


class LRNTaylor(_ParameterFreeRule):
    """First-order Taylor rule for local response normalisation (Binder et al. 2016, ICANN, "LRP for
    neural networks with local renormalization layers").

    ``R_i = x_i sum_j (dy_j / dx_i) s_j`` with ``s_j = R_j / stab(y_j)``: each output's relevance is
    split in proportion to the first-order terms of its expansion. Not conserving: the higher-order
    rest, ``sum_j s_j y_j 2 beta (D_j - bias) / D_j``, is reported as ``taylor_absorbed`` in the
    diagnostics (and the stabiliser's share as ``stabiliser_absorbed``).
    """

    kind = "lrn_taylor"

    def __init__(self, stabilizer=DEFAULT_EPSILON):
        super().__init__()
        self.stabilizer = _check_stabilizer(stabilizer)

    def _params(self):
        return {"stabilizer": self.stabilizer}
