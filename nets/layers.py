"""Layers of a feed-forward network (NCHW, float32 or float64).

Each layer is a small object with

* ``forward(x)``: the inference computation;
* ``backward(x, y, grad)``: the vector-Jacobian product (gradient of a scalar with respect to the
  input, given its gradient ``grad`` with respect to the output ``y = forward(x)``), used by the
  gradient-based comparison methods;
* ``get_config()`` (JSON-serialisable hyperparameters), ``get_arrays()`` (named numpy arrays) and the
  classmethod ``from_config(config, arrays)``, so ``nets/io.py`` can save and load any model
  generically; ``kind`` is the layer type string (the class name), and ``LAYER_TYPES`` maps it back to
  the class (``layer_from_config(kind, config, arrays)``).

Layers with a linear map (``Dense``, ``Conv2D``, ``BatchNorm1D/2D``, ``AvgPool2D``,
``GlobalAvgPool2D``) also expose ``linear(x, W, b)`` and ``linear_transpose(s, W, input_shape)``:
the same map with *modified* parameters and its transpose. The LRP engine
(``nets/propagation.py``) is written only against these two methods, so every rule works on every
linear layer through one code path.

Dense layers use numpy's matmul (BLAS); convolutions use a numba ``im2col`` and one GEMM, their
transpose one GEMM and a numba ``col2im``; pooling runs in numba kernels (``nets/_kernels.py``).
"""

from __future__ import annotations

import numpy as np

from nets import _kernels

__all__ = [
    "Layer",
    "Dense",
    "Conv2D",
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAvgPool2D",
    "Flatten",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "BatchNorm1D",
    "BatchNorm2D",
    "Dropout",
    "Softmax",
    "LAYER_TYPES",
    "layer_from_config",
]

# im2col matrices are built in batch chunks of at most this many elements (16 MiB in float32):
# bounded memory, and mostly cache-resident columns between im2col/col2im and their GEMM. Much
# smaller chunks were faster single-threaded but far slower with threads on a busy machine (every
# chunk is a parallel region whose threads must all be scheduled), so this is the compromise.
_IM2COL_MAX_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------------
# validation helpers
def _as_param(value, name, dtype=None, ndim=None):
    """A float parameter array (float32 kept, everything else float64), checked finite."""
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if dtype is None:
        dtype = np.float32 if arr.dtype == np.float32 else np.float64
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _pair(value, name, minimum):
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    else:
        try:
            pair = tuple(int(v) for v in value)
        except TypeError as err:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from err
        if len(pair) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def _float_dtype(*arrays):
    """float32 only when every array is float32; float64 otherwise."""
    return np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64


def _check_input(x, layer, ndim, channels=None):
    if x.ndim != ndim:
        what = {2: "(N, features)", 4: "(N, C, H, W)"}.get(ndim, f"{ndim}-D")
        raise ValueError(f"{layer.kind} expects input of shape {what}, got shape {x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{layer.kind} expects {channels} input {'features' if ndim == 2 else 'channels'}, "
            f"got shape {x.shape}"
        )


def _pool_out_size(size, k, s, p, layer, axis):
    out = (size + 2 * p - k) // s + 1
    if size + 2 * p < k or out < 1:
        raise ValueError(f"{layer.kind}: input {axis} {size} (+2*{p} padding) is smaller than the kernel {k}")
    return out


# --------------------------------------------------------------------------------------------------
class Layer:
    """Base class: identity forward, gradient passed through, no parameters."""

    kind = "Layer"
    #: True for layers whose relevance is redistributed through a linear map (rules apply)
    is_linear = False

    def forward(self, x):
        return x

    def __call__(self, x):
        # dispatch at call time, so a subclass only overrides ``forward``
        return self.forward(x)

    def backward(self, x, y, grad):
        return grad

    def get_config(self) -> dict:
        return {}

    def get_arrays(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config, arrays=None):
        return cls(**dict(config or {}))

    def astype(self, dtype):
        """A copy with every parameter array cast to ``dtype`` (float32 or float64)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"layers compute in float32 or float64, got {dtype}")
        arrays = {k: v.astype(dtype) for k, v in self.get_arrays().items()}
        return type(self).from_config(self.get_config(), arrays)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.get_arrays().items())
        return f"{self.kind}({', '.join(s for s in (shapes, args) if s)})"


# --------------------------------------------------------------------------------------------------
class Dense(Layer):
    """Fully connected layer ``y = x @ W.T + b``.

    Parameters
    ----------
    W : array of shape (out_features, in_features)
    b : array of shape (out_features,), optional
        No bias when None.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Dense
    >>> Dense(np.eye(2), np.array([1.0, 0.0])).forward(np.array([[1.0, 2.0]]))
    array([[2., 2.]])
    """

    kind = "Dense"
    is_linear = True

    def __init__(self, W, b=None):
        self.W = _as_param(W, "Dense W", ndim=2)
        self.b = None if b is None else _as_param(b, "Dense b", dtype=self.W.dtype, ndim=1)
        if self.b is not None and self.b.shape[0] != self.W.shape[0]:
            raise ValueError(f"Dense b has shape {self.b.shape}, expected ({self.W.shape[0]},)")

    @property
    def in_features(self):
        return self.W.shape[1]

    @property
    def out_features(self):
        return self.W.shape[0]

    def get_arrays(self):
        return {"W": self.W} if self.b is None else {"W": self.W, "b": self.b}

    @classmethod
    def from_config(cls, config, arrays=None):
        arrays = arrays or {}
        return cls(arrays["W"], arrays.get("b"), **dict(config or {}))

    def linear(self, x, W, b):
        y = x @ W.T
        if b is not None:
            y += b
        return y

    def linear_transpose(self, s, W, input_shape):
        return s @ W

    def linear_transpose_ones(self, s, input_shape):
        """``linear_transpose`` with every weight 1 (the Flat rule): each input gets sum_j s_j."""
        return np.broadcast_to(s.sum(axis=1, keepdims=True), input_shape)

    def check_input(self, x):
        _check_input(x, self, 2, self.in_features)

    def forward(self, x):
        self.check_input(x)
        return self.linear(x, self.W, self.b)

    def backward(self, x, y, grad):
        return grad @ self.W


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in PyTorch and ONNX), NCHW.

    Parameters
    ----------
    W : array of shape (out_channels, in_channels, kh, kw)
    b : array of shape (out_channels,), optional
    stride, padding : int or pair of ints
        Zero padding on both sides of each spatial axis.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Conv2D
    >>> conv = Conv2D(np.ones((1, 1, 2, 2)), stride=2)
    >>> conv.forward(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0]
    array([[10., 18.],
           [42., 50.]])
    """

    kind = "Conv2D"
    is_linear = True

    def __init__(self, W, b=None, stride=1, padding=0):
        self.W = _as_param(W, "Conv2D W", ndim=4)
        self.b = None if b is None else _as_param(b, "Conv2D b", dtype=self.W.dtype, ndim=1)
        if self.b is not None and self.b.shape[0] != self.W.shape[0]:
            raise ValueError(f"Conv2D b has shape {self.b.shape}, expected ({self.W.shape[0]},)")
        self.stride = _pair(stride, "Conv2D stride", 1)
        self.padding = _pair(padding, "Conv2D padding", 0)

    @property
    def in_channels(self):
        return self.W.shape[1]

    @property
    def out_channels(self):
        return self.W.shape[0]

    @property
    def kernel_size(self):
        return self.W.shape[2:]

    def get_config(self):
        return {"stride": list(self.stride), "padding": list(self.padding)}

    def get_arrays(self):
        return {"W": self.W} if self.b is None else {"W": self.W, "b": self.b}

    @classmethod
    def from_config(cls, config, arrays=None):
        arrays = arrays or {}
        return cls(arrays["W"], arrays.get("b"), **dict(config or {}))

    def output_shape(self, input_shape):
        n, _, h, w = input_shape
        kh, kw = self.kernel_size
        oh = _pool_out_size(h, kh, self.stride[0], self.padding[0], self, "height")
        ow = _pool_out_size(w, kw, self.stride[1], self.padding[1], self, "width")
        return (n, self.out_channels, oh, ow)

    def _chunks(self, n, rows_per_image, k):
        per = max(1, _IM2COL_MAX_ELEMENTS // max(1, rows_per_image * k))
        return [(i, min(n, i + per)) for i in range(0, n, per)]

    def linear(self, x, W, b):
        x = np.ascontiguousarray(x)
        n = x.shape[0]
        _, _, oh, ow = self.output_shape(x.shape)
        o, _, kh, kw = W.shape  # W may be a stack of modified weights (more output channels)
        dtype = _float_dtype(x, W)
        W2 = W.reshape(W.shape[0], -1).astype(dtype, copy=False)
        k, p = W2.shape[1], oh * ow
        out = np.empty((n, o, oh, ow), dtype=dtype)
        for i0, i1 in self._chunks(n, p, k):
            cols = np.empty(((i1 - i0) * p, k), dtype=dtype)
            _kernels.im2col(x[i0:i1].astype(dtype, copy=False), kh, kw, *self.stride, *self.padding, cols)
            # (O, K) @ (K, P) per image, written straight into the NCHW output (no transpose copy)
            np.matmul(
                W2, cols.reshape(i1 - i0, p, k).transpose(0, 2, 1), out=out[i0:i1].reshape(i1 - i0, o, p)
            )
        if b is not None:
            out += b.astype(dtype, copy=False).reshape(1, -1, 1, 1)
        return out

    def linear_transpose(self, s, W, input_shape):
        n = input_shape[0]
        _, o, oh, ow = s.shape
        kh, kw = W.shape[2:]
        dtype = _float_dtype(s, W)
        W2 = W.reshape(W.shape[0], -1).astype(dtype, copy=False)
        s3 = np.ascontiguousarray(s, dtype=dtype).reshape(n, o, oh * ow)
        out = np.empty(input_shape, dtype=dtype)
        k, p = W2.shape[1], oh * ow
        for i0, i1 in self._chunks(n, p, k):
            # (P, O) @ (O, K) per image: the columns of the transposed convolution
            cols = np.matmul(s3[i0:i1].transpose(0, 2, 1), W2).reshape((i1 - i0) * p, k)
            _kernels.col2im(cols, kh, kw, *self.stride, *self.padding, out[i0:i1])
        return out

    def linear_transpose_ones(self, s, input_shape):
        """``linear_transpose`` with every weight 1 (the Flat rule): one GEMM with a single output
        channel carrying the channel sum of ``s``, instead of ``out_channels`` of them."""
        ones = np.ones((1, input_shape[1], *self.kernel_size), dtype=s.dtype)
        return self.linear_transpose(s.sum(axis=1, keepdims=True), ones, input_shape)

    def check_input(self, x):
        _check_input(x, self, 4, self.in_channels)
        self.output_shape(x.shape)  # raises when the image is smaller than the kernel

    def forward(self, x):
        self.check_input(x)
        return self.linear(x, self.W, self.b)

    def backward(self, x, y, grad):
        return self.linear_transpose(grad, self.W, x.shape)


# --------------------------------------------------------------------------------------------------
class _LinearPool(Layer):
    """A parameter-free linear layer: forward is ``linear``, the gradient is ``linear_transpose``."""

    is_linear = True

    def forward(self, x):
        _check_input(x, self, 4)
        return self.linear(x)

    def backward(self, x, y, grad):
        return self.linear_transpose(grad, None, x.shape)


class _Pool2D(Layer):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = _pair(kernel_size, f"{self.kind} kernel_size", 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, f"{self.kind} stride", 1)
        self.padding = _pair(padding, f"{self.kind} padding", 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{self.kind} padding must be at most half the kernel size")

    def get_config(self):
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }

    def output_shape(self, input_shape):
        n, c, h, w = input_shape
        oh = _pool_out_size(h, self.kernel_size[0], self.stride[0], self.padding[0], self, "height")
        ow = _pool_out_size(w, self.kernel_size[1], self.stride[1], self.padding[1], self, "width")
        return (n, c, oh, ow)

    def _geometry(self):
        return (*self.kernel_size, *self.stride, *self.padding)


class MaxPool2D(_Pool2D):
    """Max pooling (padding never wins). Relevance and gradient go to the window's maximum; ties
    share equally.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import MaxPool2D
    >>> MaxPool2D(2).forward(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """

    kind = "MaxPool2D"

    def forward(self, x):
        _check_input(x, self, 4)
        x = np.ascontiguousarray(x)
        out = np.empty(self.output_shape(x.shape), dtype=x.dtype)
        if self.padding == (0, 0):
            _kernels.max_pool_valid(x, *self.kernel_size, *self.stride, out)
        else:
            _kernels.max_pool(x, *self._geometry(), out)
        return out

    def scatter(self, x, y, r):
        """Hand each window's ``r`` to its maximum inputs (ties split equally)."""
        x = np.ascontiguousarray(x)
        dtype = _float_dtype(x, r)
        out = np.empty(x.shape, dtype=dtype)
        args = (
            x.astype(dtype, copy=False),
            np.ascontiguousarray(y, dtype=dtype),
            np.ascontiguousarray(r, dtype=dtype),
        )
        if self.padding == (0, 0):
            _kernels.max_pool_scatter_valid(*args, *self.kernel_size, *self.stride, out)
        else:
            _kernels.max_pool_scatter(*args, *self._geometry(), out)
        return out

    def backward(self, x, y, grad):
        return self.scatter(x, y, grad)


class AvgPool2D(_LinearPool, _Pool2D):
    """Average pooling. ``count_include_pad=True`` divides by the full window (PyTorch's default);
    False divides by the in-image positions only (ONNX's default).

    Examples
    --------
    >>> import numpy as np
    >>> from nets import AvgPool2D
    >>> AvgPool2D(2).forward(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """

    kind = "AvgPool2D"
    is_linear = True

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def get_config(self):
        return {**super().get_config(), "count_include_pad": self.count_include_pad}

    def linear(self, x, W=None, b=None):
        x = np.ascontiguousarray(x)
        out = np.empty(self.output_shape(x.shape), dtype=x.dtype)
        _kernels.avg_pool(x, *self._geometry(), self.count_include_pad, out)
        return out

    def linear_transpose(self, s, W, input_shape):
        s = np.ascontiguousarray(s)
        out = np.empty(input_shape, dtype=s.dtype)
        _kernels.avg_pool_transpose(s, *self._geometry(), self.count_include_pad, out)
        return out

class GlobalAvgPool2D(_LinearPool):
    """Mean over the spatial axes: (N, C, H, W) -> (N, C)."""

    kind = "GlobalAvgPool2D"
    is_linear = True

    def linear(self, x, W=None, b=None):
        return x.mean(axis=(2, 3))

    def linear_transpose(self, s, W, input_shape):
        h, w = input_shape[2:]
        out = np.empty(input_shape, dtype=s.dtype)
        out[...] = (s / (h * w))[:, :, None, None]
        return out

class Flatten(Layer):
    """(N, ...) -> (N, prod(...)), C-order (channel-major for NCHW, as PyTorch's ``flatten``)."""

    kind = "Flatten"

    def forward(self, x):
        if x.ndim < 2:
            raise ValueError(f"Flatten expects a batch of at least 2 dimensions, got shape {x.shape}")
        return x.reshape(x.shape[0], -1)

    def backward(self, x, y, grad):
        return grad.reshape(x.shape)


# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
class _BatchNorm(Layer):
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

    def _bcast(self, v, ndim):
        return v.reshape((1, -1) + (1,) * (ndim - 2))

    def linear(self, x, W, b):
        y = x * self._bcast(W, x.ndim)
        if b is not None:
            y = y + self._bcast(b, x.ndim)
        return y

    def linear_transpose(self, s, W, input_shape):
        return s * self._bcast(W, s.ndim)

    def forward(self, x):
        if x.ndim not in self._ndims:
            raise ValueError(f"{self.kind} expects input with {self._ndims} dimensions, got {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{self.kind} expects {self.num_features} channels, got shape {x.shape}")
        return self.linear(x, self.W.astype(x.dtype, copy=False), self.b.astype(x.dtype, copy=False))

    def backward(self, x, y, grad):
        return self.linear_transpose(grad, self.W, x.shape)


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


# --------------------------------------------------------------------------------------------------
LAYER_TYPES: dict[str, type] = {
    cls.kind: cls
    for cls in (
        Dense,
        Conv2D,
        MaxPool2D,
        AvgPool2D,
        GlobalAvgPool2D,
        Flatten,
        ReLU,
        LeakyReLU,
        Tanh,
        Sigmoid,
        BatchNorm1D,
        BatchNorm2D,
        Dropout,
        Softmax,
    )
}


def layer_from_config(kind, config=None, arrays=None):
    """Rebuild a layer from its ``kind`` string, ``get_config()`` and ``get_arrays()``.

    Examples
    --------
    >>> import numpy as np
    >>> from nets.layers import Dense, layer_from_config
    >>> d = Dense(np.ones((2, 3)))
    >>> layer_from_config(d.kind, d.get_config(), d.get_arrays()).W.shape
    (2, 3)
    """
    try:
        cls = LAYER_TYPES[kind]
    except KeyError:
        raise ValueError(f"unsupported layer type {kind!r}; known: {sorted(LAYER_TYPES)}") from None
    return cls.from_config(config or {}, arrays or {})
