"""Per-channel affine layers: inference batch norm and ``Scale`` (multiply/add by constants).

Both are linear maps ``y = x * W + b`` with one weight and one bias per channel (or one for all),
so every linear rule applies to them; the composites' default is ``Pass`` (relevance unchanged, as
zennit does for a batch norm the canonizer could not fold into a dense/conv layer).
"""

from __future__ import annotations

import numpy as np

from nets.layers.base import Layer, _as_param

__all__ = ["BatchNorm1D", "BatchNorm2D", "Scale"]


class _ChannelAffine(Layer):
    """``y = x * W + b`` with W and b scalars or vectors along ``self.axis`` (the channel axis)."""

    is_linear = True
    axis = 1

    def _bcast(self, v, ndim):
        if v.ndim == 0:
            return v
        axis = self.axis % ndim
        return v.reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1))

    def linear(self, x, W, b):
        y = x * self._bcast(W, x.ndim)
        if b is not None:
            y = y + self._bcast(b, x.ndim)
        return y

    def linear_transpose(self, s, W, input_shape):
        return s * self._bcast(W, s.ndim)

    def backward(self, x, y, grad):
        return self.linear_transpose(grad, self.W, x.shape)


class _BatchNorm(_ChannelAffine):
    """Inference batch norm ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` per channel (axis 1).

    As a linear layer its "weight" is the per-channel scale and its bias the shift, so the rules
    apply when it cannot be folded into a preceding dense/conv layer (``nets.canonizers``).
    """

    is_linear = True
    _ndims: tuple = ()

    def __init__(self, gamma, beta, mean, var, eps=1e-5):
        self.gamma = _as_param(gamma, f"{self.kind} gamma", ndim=1)
        dtype = self.gamma.dtype
        self.beta = _as_param(beta, f"{self.kind} beta", dtype=dtype, ndim=1)
        self.mean = _as_param(mean, f"{self.kind} mean", dtype=dtype, ndim=1)
        self.var = _as_param(var, f"{self.kind} var", dtype=dtype, ndim=1)
        self.eps = float(eps)
        c = self.gamma.shape[0]
        for name in ("beta", "mean", "var"):
            if getattr(self, name).shape != (c,):
                raise ValueError(f"{self.kind} {name} must have shape ({c},)")
        if np.any(self.var + self.eps <= 0):
            raise ValueError(f"{self.kind}: var + eps must be positive")

    @property
    def num_features(self):
        return self.gamma.shape[0]

    @property
    def scale(self):
        return self.gamma / np.sqrt(self.var + self.gamma.dtype.type(self.eps))

    @property
    def shift(self):
        return self.beta - self.mean * self.scale

    # the linear-layer view used by the rules: W is the scale vector, b the shift
    @property
    def W(self):
        return self.scale

    @property
    def b(self):
        return self.shift

    def get_config(self):
        return {"eps": self.eps}

    def get_arrays(self):
        return {"gamma": self.gamma, "beta": self.beta, "mean": self.mean, "var": self.var}

    @classmethod
    def from_config(cls, config, arrays=None):
        a = arrays or {}
        return cls(a["gamma"], a["beta"], a["mean"], a["var"], **dict(config or {}))

    def forward(self, x):
        if x.ndim not in self._ndims:
            raise ValueError(f"{self.kind} expects input with {self._ndims} dimensions, got {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{self.kind} expects {self.num_features} channels, got shape {x.shape}")
        return self.linear(x, self.W.astype(x.dtype, copy=False), self.b.astype(x.dtype, copy=False))


class BatchNorm1D(_BatchNorm):
    """Batch norm over features of (N, C) (or (N, C, L)) input, inference statistics.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import BatchNorm1D
    >>> bn = BatchNorm1D(gamma=[2.0], beta=[1.0], mean=[0.5], var=[1.0], eps=0.0)
    >>> bn.forward(np.array([[1.5]]))
    array([[3.]])
    """

    kind = "BatchNorm1D"
    _ndims = (2, 3)


class BatchNorm2D(_BatchNorm):
    """Batch norm over the channels of (N, C, H, W) input, inference statistics."""

    kind = "BatchNorm2D"
    _ndims = (4,)


class Scale(_ChannelAffine):
    """Multiply and add by constants: ``y = x * factor + offset``.

    Covers ``Mul``/``Div``/``Sub``/``Add`` by a constant, input standardisation ``(x - mean) / std``
    inside a model, and a batch norm exported as ``Mul`` + ``Add``.

    Parameters
    ----------
    factor : float or 1-D array
        One value for all elements, or one per position of ``axis``.
    offset : float or 1-D array, default 0.0
    axis : int, default 1
        The axis the vectors run along (the channel axis of NCHW input); negative counts from the
        end. The batch axis 0 cannot be scaled per position.

    Notes
    -----
    LRP (SPEC section 3, "Pass"): by default relevance passes through unchanged,
    ``R_in = R_out``, the rule for an unfolded per-channel affine map (the offset is not given a
    share, and nothing is absorbed). As a linear layer (W = factor, b = offset) it also accepts
    every linear rule, e.g. ``Epsilon``, which does give the offset its share.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Scale
    >>> Scale([2.0, 0.5], offset=[0.0, 1.0]).forward(np.ones((1, 2, 1, 1))).ravel()
    array([2. , 1.5])
    """

    kind = "Scale"

    def __init__(self, factor, offset=0.0, axis=1):
        # reshaped back: ascontiguousarray makes scalars 1-D, and a scalar scales every element
        self.factor = _as_param(factor, "Scale factor").reshape(np.shape(factor))
        self.offset = _as_param(offset, "Scale offset", dtype=self.factor.dtype).reshape(np.shape(offset))
        for name, v in (("factor", self.factor), ("offset", self.offset)):
            if v.ndim > 1:
                raise ValueError(f"Scale {name} must be a scalar or a 1-D array, got shape {v.shape}")
        if self.factor.ndim and self.offset.ndim and self.factor.shape != self.offset.shape:
            raise ValueError(
                f"Scale factor {self.factor.shape} and offset {self.offset.shape} differ in length"
            )
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
            raise ValueError(f"Scale axis must be a non-zero int (axis 0 is the batch), got {axis!r}")
        self.axis = int(axis)

    @property
    def W(self):
        return self.factor

    @property
    def b(self):
        return self.offset

    def get_config(self):
        return {"axis": self.axis}

    def get_arrays(self):
        return {"factor": self.factor, "offset": self.offset}

    @classmethod
    def from_config(cls, config, arrays=None):
        a = arrays or {}
        return cls(a["factor"], a.get("offset", 0.0), **dict(config or {}))

    def forward(self, x):
        if not -x.ndim < self.axis < x.ndim or self.axis % x.ndim == 0:
            raise ValueError(f"Scale axis {self.axis} does not fit input of shape {x.shape}")
        n = max(self.factor.size if self.factor.ndim else 1, self.offset.size if self.offset.ndim else 1)
        if (self.factor.ndim or self.offset.ndim) and x.shape[self.axis] != n:
            raise ValueError(
                f"Scale has {n} values, input axis {self.axis} has {x.shape[self.axis]} (shape {x.shape})"
            )
        return self.linear(
            x, self.factor.astype(x.dtype, copy=False), self.offset.astype(x.dtype, copy=False)
        )
