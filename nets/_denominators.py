"""The LRP rules' denominators (private): z + eps * sign(z) and the division of R by it, never NaN.

A fusable group's denominator can stay where the stacked forward GEMM left it
(:class:`_StackedDenominator`, read in place); :func:`stabilised_divide` takes it or a plain array.
``nets.propagation`` re-exports :func:`stabilised_divide` (its public name).
"""

from __future__ import annotations

import numpy as np

from nets import _kernels

__all__ = ["stabilised_divide"]


def _bias_term(b, y_shape, dtype):
    """The bias ``b`` broadcast to the layer's output shape (channel axis 1)."""
    return np.broadcast_to(b.astype(dtype, copy=False).reshape((1, -1) + (1,) * (len(y_shape) - 2)), y_shape)


def _with_bias(a, b):
    """``a + b`` (b along axis 1) as a new array, or a contiguous copy of ``a`` without a bias: the
    same numbers as ``layer.linear`` adding its bias in place to the GEMM output."""
    return np.array(a, order="C") if b is None else a + _bias_term(b, a.shape, a.dtype)


class _StackedDenominator:
    """A fusable group's denominator as the stacked forward GEMM left it: channels ``start`` to
    ``start + o`` of ``stacked`` (N, K, ...) plus the bias ``b`` (or None), not yet copied out;
    ``stabilised_divide`` reads it in place (one pass over an output-sized array fewer), anything
    else asks for ``array()``."""

    def __init__(self, stacked, start, o, b):
        self.stacked, self.start, self.o, self.b = stacked, start, o, b
        self.shape = (stacked.shape[0], o) + stacked.shape[2:]
        self.dtype = stacked.dtype

    def array(self):
        return _with_bias(self.stacked[:, self.start : self.start + self.o], self.b)

    def __array__(self, dtype=None, copy=None):
        # a user reading ``forward_for_rule``'s extras gets the denominator as an array
        a = self.array()
        return a if dtype is None else a.astype(dtype, copy=False)


def _dense(z):
    """``z`` as an array (a ``_StackedDenominator`` copied out)."""
    return z.array() if isinstance(z, _StackedDenominator) else z


def stabilised_divide(R, z, stabilizer):
    """``R / stab(z)``; 0 wherever the denominator is 0 (never NaN)."""
    if isinstance(z, _StackedDenominator):
        if callable(stabilizer) or R.shape != z.shape or R.dtype != z.dtype:
            return stabilised_divide(R, z.array(), stabilizer)
        out = np.empty(R.shape, dtype=R.dtype)
        n, o = R.shape[:2]
        b = np.empty(0, R.dtype) if z.b is None else z.b.astype(R.dtype, copy=False)
        _kernels.stabilised_divide_stacked(
            np.ascontiguousarray(R).reshape(n, o, -1), z.stacked.reshape(n, z.stacked.shape[1], -1),
            z.start, b, float(stabilizer), out.reshape(n, o, -1),
        )
        return out
    dtype = np.result_type(R.dtype, z.dtype)
    R = np.ascontiguousarray(R, dtype=dtype)
    out = np.empty_like(R)
    if z.shape != R.shape and z.shape[0] == 1 and not callable(stabilizer):
        # one denominator for all samples (Flat, WSquare): never materialise it per sample
        z1 = np.ascontiguousarray(z, dtype=dtype).reshape(-1)
        _kernels.stabilised_divide_rows(
            R.reshape(R.shape[0], -1), z1, float(stabilizer), out.reshape(R.shape[0], -1)
        )
        return out
    # broadcast only when needed and writeable: broadcast_to's read-only view (even of an equal
    # shape) would compile the division kernels once more for read-only arrays
    z = np.require(z if z.shape == R.shape else np.broadcast_to(z, R.shape), dtype=dtype,
                   requirements=["C", "W"])
    if callable(stabilizer):
        zv = z.view()  # z may be the forward output itself: the user's function must not change it
        zv.flags.writeable = False
        d = np.asarray(stabilizer(zv), dtype=dtype)
        if d.shape != z.shape:
            raise ValueError(f"the stabiliser returned shape {d.shape} for z of shape {z.shape}")
        if not np.all(np.isfinite(d)):
            raise ValueError("the stabiliser returned NaN or infinite values")
        _kernels.safe_divide(R.ravel(), np.ascontiguousarray(d).ravel(), out.ravel())
    else:
        _kernels.stabilised_divide(R.ravel(), z.ravel(), float(stabilizer), out.ravel())
    return out
