"""The layer protocol shared by every nets layer, and the small validation helpers layers use.

Each layer is a small object with

* ``forward(*inputs)``: the inference computation (one input, or ``n_inputs`` of them: ``Add``,
  ``Concat``);
* ``backward(x, y, grad)``: the vector-Jacobian product (gradient of a scalar with respect to the
  input, given its gradient ``grad`` with respect to the output ``y = forward(x)``), used by the
  gradient-based comparison methods; ``backward_inputs(xs, y, grad)`` is the same for any number of
  inputs (a list, one gradient per input);
* ``route(xs, y, R)``: where relevance goes under the ``Pass`` rule (unchanged for activations,
  exactly re-routed for reshapes, transposes, padding and concatenation);
* ``get_config()`` (JSON-serialisable hyperparameters), ``get_arrays()`` (named numpy arrays) and the
  classmethod ``from_config(config, arrays)``, so ``nets/io.py`` can save and load any model
  generically; ``kind`` is the layer type string (the class name).

Layers with a linear map also expose ``linear(x, W, b)`` and ``linear_transpose(s, W, input_shape)``:
the same map with *modified* parameters and its transpose. The LRP engine (``nets/propagation.py``)
is written only against these two methods, so every rule works on every linear layer through one
code path.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Layer"]


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
    """Base class: identity forward, gradient passed through, no parameters, one input."""

    kind = "Layer"
    #: True for layers whose relevance is redistributed through a linear map (rules apply)
    is_linear = False
    #: how many inputs ``forward`` takes; None for any number >= 1 (``Add``, ``Concat``)
    n_inputs = 1

    def forward(self, x):
        return x

    def __call__(self, *xs):
        # dispatch at call time, so a subclass only overrides ``forward``
        return self.forward(*xs)

    def backward(self, x, y, grad):
        return grad

    def backward_inputs(self, xs, y, grad):
        """The gradient with respect to each input (a list); one-input layers use ``backward``."""
        return [self.backward(xs[0], y, grad)]

    def route(self, xs, y, R):
        """Relevance at each input under the ``Pass`` rule: by default it passes unchanged (an
        activation keeps the shape; a reshape only relabels positions)."""
        return [R.reshape(xs[0].shape)]

    def __setstate__(self, state):
        # Arrays unpickled out of a received buffer (dask, multiprocessing) can sit at an address
        # that is not a multiple of their item size. numpy's matmul then bypasses BLAS and sums in
        # another order, so a distributed run would differ in the last bit from a local one: copy
        # such arrays to fresh (aligned) memory.
        for key, value in state.items():
            if isinstance(value, np.ndarray) and not value.flags.aligned:
                state[key] = value.copy()
        self.__dict__.update(state)

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
