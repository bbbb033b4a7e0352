"""Dense and convolution layers: the linear maps with weights (``linear`` / ``linear_transpose``).

Dense layers use numpy's matmul (BLAS); convolutions use a numba ``im2col`` and one GEMM (one
batched GEMM over the groups of a grouped convolution), their transpose one GEMM and a numba
``col2im``.
"""

from __future__ import annotations

import numpy as np

from nets import _kernels
from nets.layers.base import Layer, _as_param, _check_input, _float_dtype, _pair, _pool_out_size

__all__ = ["Dense", "Conv2D"]

# im2col matrices are built in batch chunks of at most this many elements (16 MiB in float32):
# bounded memory, and mostly cache-resident columns between im2col/col2im and their GEMM. Much
# smaller chunks were faster single-threaded but far slower with threads on a busy machine (every
# chunk is a parallel region whose threads must all be scheduled), so this is the compromise.
_IM2COL_MAX_ELEMENTS = 1 << 22


class _Weighted(Layer):
    """A linear layer with a weight array ``W`` and an optional bias ``b`` (saved as such)."""

    is_linear = True

    def get_arrays(self):
        return {"W": self.W} if self.b is None else {"W": self.W, "b": self.b}

    @classmethod
    def from_config(cls, config, arrays=None):
        arrays = arrays or {}
        return cls(arrays["W"], arrays.get("b"), **dict(config or {}))


class Dense(_Weighted):
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


class Conv2D(_Weighted):
    """2-D convolution (cross-correlation, as in PyTorch and ONNX), NCHW, optionally grouped and
    dilated.

    Parameters
    ----------
    W : array of shape (out_channels, in_channels // groups, kh, kw)
    b : array of shape (out_channels,), optional
    stride, padding : int or pair of ints
        Zero padding on both sides of each spatial axis (use ``nets.Pad`` before the convolution
        for asymmetric padding).
    groups : int, default 1
        Input and output channels are split into ``groups`` blocks; output block g sees only input
        block g (``groups == in_channels`` is a depthwise convolution).
    dilation : int or pair of ints, default 1
        Spacing between kernel taps.

    Notes
    -----
    A dilated kernel is evaluated as the dense kernel with zeros between the taps (the numba
    ``im2col`` kernels stay the ones the trainer shares). The LRP rules modify the *true* taps and
    the zeros are inserted afterwards, so Flat and WSquare never give weight to the inserted zeros.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Conv2D
    >>> conv = Conv2D(np.ones((1, 1, 2, 2)), stride=2)
    >>> conv.forward(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0]
    array([[10., 18.],
           [42., 50.]])
    >>> Conv2D(np.ones((4, 1, 3, 3)), groups=4, dilation=2).output_shape((1, 4, 9, 9))
    (1, 4, 5, 5)
    """

    kind = "Conv2D"
    is_linear = True

    def __init__(self, W, b=None, stride=1, padding=0, groups=1, dilation=1):
        self.W = _as_param(W, "Conv2D W", ndim=4)
        self.b = None if b is None else _as_param(b, "Conv2D b", dtype=self.W.dtype, ndim=1)
        if self.b is not None and self.b.shape[0] != self.W.shape[0]:
            raise ValueError(f"Conv2D b has shape {self.b.shape}, expected ({self.W.shape[0]},)")
        self.stride = _pair(stride, "Conv2D stride", 1)
        self.padding = _pair(padding, "Conv2D padding", 0)
        self.dilation = _pair(dilation, "Conv2D dilation", 1)
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"Conv2D groups must be a positive int, got {groups!r}")
        self.groups = int(groups)
        if self.W.shape[0] % self.groups:
            raise ValueError(
                f"Conv2D: {self.W.shape[0]} output channels do not split into {self.groups} groups"
            )

    @property
    def in_channels(self):
        return self.W.shape[1] * self.groups

    @property
    def out_channels(self):
        return self.W.shape[0]

    @property
    def kernel_size(self):
        return self.W.shape[2:]

    @property
    def effective_kernel_size(self):
        """The kernel's extent on the image, dilation included."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation))

    def get_config(self):
        config = {"stride": list(self.stride), "padding": list(self.padding)}
        # written only when used, so files and configs of plain convolutions are unchanged
        if self.groups != 1:
            config["groups"] = self.groups
        if self.dilation != (1, 1):
            config["dilation"] = list(self.dilation)
        return config

    def output_shape(self, input_shape):
        n, _, h, w = input_shape
        kh, kw = self.effective_kernel_size
        oh = _pool_out_size(h, kh, self.stride[0], self.padding[0], self, "height")
        ow = _pool_out_size(w, kw, self.stride[1], self.padding[1], self, "width")
        return (n, self.out_channels, oh, ow)

    def _chunks(self, n, rows_per_image, k):
        per = max(1, _IM2COL_MAX_ELEMENTS // max(1, rows_per_image * k))
        return [(i, min(n, i + per)) for i in range(0, n, per)]

    def _dilated(self, W):
        if self.dilation == (1, 1):
            return W
        dh, dw = self.dilation
        kh, kw = W.shape[2:]
        out = np.zeros(W.shape[:2] + ((kh - 1) * dh + 1, (kw - 1) * dw + 1), dtype=W.dtype)
        out[:, :, ::dh, ::dw] = W
        return out

    def linear(self, x, W, b):
        x = np.ascontiguousarray(x)
        n = x.shape[0]
        _, _, oh, ow = self.output_shape(x.shape)
        W = self._dilated(W)
        o, _, kh, kw = W.shape  # W may be a stack of modified weights (more output channels)
        dtype = _float_dtype(x, W)
        W2 = W.reshape(W.shape[0], -1).astype(dtype, copy=False)
        g = self.groups
        k, p = W2.shape[1] * g, oh * ow
        out = np.empty((n, o, oh, ow), dtype=dtype)
        for i0, i1 in self._chunks(n, p, k):
            cols = np.empty(((i1 - i0) * p, k), dtype=dtype)
            _kernels.im2col(x[i0:i1].astype(dtype, copy=False), kh, kw, *self.stride, *self.padding, cols)
            if g == 1:
                # (O, K) @ (K, P) per image, written straight into the NCHW output (no transpose copy)
                np.matmul(
                    W2, cols.reshape(i1 - i0, p, k).transpose(0, 2, 1), out=out[i0:i1].reshape(i1 - i0, o, p)
                )
            else:
                # the im2col columns are channel-major, so group gi owns one contiguous block of them:
                # (G, O/G, K/G) @ (n, G, K/G, P) in one batched GEMM
                cg = cols.reshape(i1 - i0, p, g, k // g).transpose(0, 2, 3, 1)
                np.matmul(W2.reshape(g, o // g, k // g), cg, out=out[i0:i1].reshape(i1 - i0, g, o // g, p))
        if b is not None:
            out += b.astype(dtype, copy=False).reshape(1, -1, 1, 1)
        return out

    def linear_transpose(self, s, W, input_shape):
        n = input_shape[0]
        _, o, oh, ow = s.shape
        W = self._dilated(W)
        kh, kw = W.shape[2:]
        dtype = _float_dtype(s, W)
        W2 = W.reshape(W.shape[0], -1).astype(dtype, copy=False)
        s3 = np.ascontiguousarray(s, dtype=dtype).reshape(n, o, oh * ow)
        out = np.empty(input_shape, dtype=dtype)
        g = self.groups
        k, p = W2.shape[1] * g, oh * ow
        for i0, i1 in self._chunks(n, p, k):
            if g == 1:
                # (P, O) @ (O, K) per image: the columns of the transposed convolution
                cols = np.matmul(s3[i0:i1].transpose(0, 2, 1), W2).reshape((i1 - i0) * p, k)
            else:
                sg = s3[i0:i1].reshape(i1 - i0, g, o // g, p).transpose(0, 1, 3, 2)
                cg = np.matmul(sg, W2.reshape(g, o // g, k // g))  # (n, G, P, K/G)
                cols = np.ascontiguousarray(cg.transpose(0, 2, 1, 3)).reshape((i1 - i0) * p, k)
            _kernels.col2im(cols, kh, kw, *self.stride, *self.padding, out[i0:i1])
        return out

    def linear_transpose_ones(self, s, input_shape):
        """``linear_transpose`` with every weight 1 (the Flat rule): one GEMM with a single output
        channel per group carrying the group's channel sum of ``s``, instead of ``out_channels``."""
        n, o = s.shape[:2]
        g = self.groups
        ones = np.ones((g, input_shape[1] // g, *self.kernel_size), dtype=s.dtype)
        if g == 1:
            s_sum = s.sum(axis=1, keepdims=True)
        else:
            s_sum = s.reshape(n, g, o // g, *s.shape[2:]).sum(axis=2)
        return self.linear_transpose(s_sum, ones, input_shape)

    def check_input(self, x):
        _check_input(x, self, 4, self.in_channels)
        self.output_shape(x.shape)  # raises when the image is smaller than the kernel

    def forward(self, x):
        self.check_input(x)
        return self.linear(x, self.W, self.b)

    def backward(self, x, y, grad):
        return self.linear_transpose(grad, self.W, x.shape)
