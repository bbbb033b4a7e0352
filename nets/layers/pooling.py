"""Pooling layers: max pooling (winner takes all) and average pooling (a parameter-free linear map).

Pooling runs in numba kernels (``nets/_kernels.py``).
"""

from __future__ import annotations

import numpy as np

from nets import _kernels
from nets.layers.base import Layer, _check_input, _float_dtype, _pair, _pool_out_size

__all__ = ["MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "GlobalMaxPool2D"]


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


class GlobalMaxPool2D(Layer):
    """Maximum over the spatial axes: (N, C, H, W) -> (N, C). Relevance and gradient go to the
    maximum of each channel (ties share equally), the rule ``WinnerTakesAll``.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import GlobalMaxPool2D
    >>> GlobalMaxPool2D().forward(np.arange(8.0).reshape(1, 2, 2, 2))
    array([[3., 7.]])
    """

    kind = "GlobalMaxPool2D"

    def forward(self, x):
        _check_input(x, self, 4)
        return x.max(axis=(2, 3))

    def scatter(self, x, y, r):
        """Hand each channel's ``r`` to its maximum positions (ties split equally)."""
        winners = x == y[:, :, None, None]
        count = winners.sum(axis=(2, 3))
        share = r / count  # count >= 1: the maximum is always attained
        return np.where(winners, share[:, :, None, None], 0).astype(_float_dtype(x, r), copy=False)

    def backward(self, x, y, grad):
        return self.scatter(x, y, grad)
