"""Element-wise layers (activations, ``Clip``, ``Dropout``, ``Identity``), ``Softmax`` and ``LRN``.

Under LRP their relevance passes unchanged (``Pass``), except ``LRN``, which also offers the
first-order Taylor rule of Binder et al. (2016) (``nets.rules.LRNTaylor``).
"""

from __future__ import annotations

import numpy as np

from nets.layers.base import Layer

__all__ = ["ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Clip", "Dropout", "Identity", "Softmax", "LRN"]


class _Elementwise(Layer):
    pass


class ReLU(_Elementwise):
    """max(x, 0)."""

    kind = "ReLU"

    def forward(self, x):
        return np.maximum(x, 0)

    def backward(self, x, y, grad):
        return grad * (x > 0)


class LeakyReLU(_Elementwise):
    """x for x > 0, ``negative_slope * x`` otherwise."""

    kind = "LeakyReLU"

    def __init__(self, negative_slope=0.01):
        self.negative_slope = float(negative_slope)

    def get_config(self):
        return {"negative_slope": self.negative_slope}

    def forward(self, x):
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def backward(self, x, y, grad):
        return grad * np.where(x > 0, 1, self.negative_slope).astype(grad.dtype)


class Tanh(_Elementwise):
    kind = "Tanh"

    def forward(self, x):
        return np.tanh(x)

    def backward(self, x, y, grad):
        return grad * (1 - y * y)


class Sigmoid(_Elementwise):
    kind = "Sigmoid"

    def forward(self, x):
        # split by sign so that exp never overflows
        out = np.empty_like(x)
        pos = x >= 0
        out[pos] = 1 / (1 + np.exp(-x[pos]))
        e = np.exp(x[~pos])
        out[~pos] = e / (1 + e)
        return out

    def backward(self, x, y, grad):
        return grad * y * (1 - y)


class Dropout(_Elementwise):
    """Identity at inference (``p`` is kept for round trips only)."""

    kind = "Dropout"

    def __init__(self, p=0.5):
        p = float(p)
        if not 0 <= p < 1:
            raise ValueError(f"Dropout p must be in [0, 1), got {p}")
        self.p = p

    def get_config(self):
        return {"p": self.p}


class Softmax(Layer):
    """Softmax over the last axis. LRP explains the logits: it is dropped before explaining."""

    kind = "Softmax"

    def forward(self, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def backward(self, x, y, grad):
        return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


class Identity(_Elementwise):
    """y = x (ONNX ``Identity``; a placeholder node keeps its name in a graph)."""

    kind = "Identity"


class Clip(_Elementwise):
    """Clamp to [low, high] (``Clip(0, 6)`` is ReLU6); None leaves that side open.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Clip
    >>> Clip(0.0, 6.0).forward(np.array([[-1.0, 3.0, 8.0]]))
    array([[0., 3., 6.]])
    """

    kind = "Clip"

    def __init__(self, low=None, high=None):
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)
        for name, v in (("low", self.low), ("high", self.high)):
            if v is not None and np.isnan(v):
                raise ValueError(f"Clip {name} is NaN")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"Clip needs low <= high, got {self.low} > {self.high}")

    def get_config(self):
        return {"low": self.low, "high": self.high}

    def forward(self, x):
        return np.clip(x, self.low, self.high) if (self.low, self.high) != (None, None) else x

    def backward(self, x, y, grad):
        inside = np.ones(x.shape, dtype=bool)
        if self.low is not None:
            inside &= x > self.low
        if self.high is not None:
            inside &= x < self.high
        return grad * inside


def _channel_window_sum(a, before, after):
    """sum_{k=-before..after} a[:, c + k] with zeros outside the channels (axis 1)."""
    c = a.shape[1]
    pad = [(0, 0)] * a.ndim
    pad[1] = (before, after)
    p = np.pad(a, pad)
    out = p[:, 0:c].copy()
    for k in range(1, before + after + 1):
        out += p[:, k : k + c]
    return out


class LRN(Layer):
    """Local response normalisation across channels, with ONNX's semantics (as AlexNet/CaffeNet):

    ``y_c = x_c / (bias + alpha / size * sum_{k in window(c)} x_k^2) ** beta``, the window running
    from ``c - floor((size - 1) / 2)`` to ``c + ceil((size - 1) / 2)``, clipped to the channels.

    Parameters
    ----------
    size : int
        Window length in channels.
    alpha, beta, bias : float

    Notes
    -----
    LRP: by default ``Pass`` (relevance unchanged: conserving). ``nets.rules.LRNTaylor`` is the
    first-order Taylor rule of Binder et al. (2016), ``R_i = x_i sum_j (dy_j/dx_i) R_j / y_j``; it
    does not conserve, and what it leaves out, ``sum_j R_j (1 - sum_i x_i dy_j/dx_i / y_j) =
    sum_j R_j 2 beta (D_j - bias) / D_j`` with ``D`` the denominator base, is reported in the
    diagnostics (``taylor_absorbed``).

    Examples
    --------
    >>> import numpy as np
    >>> from nets import LRN
    >>> LRN(size=1, alpha=1.0, beta=1.0, bias=1.0).forward(np.full((1, 1, 1, 1), 2.0)).item()
    0.4
    """

    kind = "LRN"

    def __init__(self, size, alpha=1e-4, beta=0.75, bias=1.0):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"LRN size must be a positive int, got {size!r}")
        self.size = int(size)
        self.alpha, self.beta, self.bias = float(alpha), float(beta), float(bias)
        if not all(np.isfinite(v) for v in (self.alpha, self.beta, self.bias)):
            raise ValueError("LRN alpha, beta and bias must be finite")
        if self.bias <= 0 or self.alpha < 0:
            raise ValueError(f"LRN needs bias > 0 and alpha >= 0, got bias={self.bias}, alpha={self.alpha}")

    def get_config(self):
        return {"size": self.size, "alpha": self.alpha, "beta": self.beta, "bias": self.bias}

    def _window(self):
        before = (self.size - 1) // 2
        return before, self.size - 1 - before

    def denominator_base(self, x):
        """``D = bias + alpha / size * (windowed channel sum of x^2)``."""
        before, after = self._window()
        return self.bias + (self.alpha / self.size) * _channel_window_sum(x * x, before, after)

    def forward(self, x):
        if x.ndim < 2:
            raise ValueError(f"LRN expects (N, C, ...) input, got shape {x.shape}")
        return x * self.denominator_base(x) ** -self.beta

    def backward(self, x, y, grad):
        D = self.denominator_base(x)
        before, after = self._window()
        # output j depends on input i when i is in j's window, i.e. j in [i - after, i + before]
        t = _channel_window_sum(grad * x * D ** (-self.beta - 1), after, before)
        return grad * D**-self.beta - (2 * self.alpha * self.beta / self.size) * x * t

    def taylor_loss(self, x):
        """Per output, the fraction of y_j that the first-order expansion misses:
        ``1 - sum_i x_i dy_j/dx_i / y_j = 2 beta (D_j - bias) / D_j``."""
        D = self.denominator_base(x)
        return 2 * self.beta * (D - self.bias) / D
