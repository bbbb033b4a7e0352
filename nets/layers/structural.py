"""Structural layers: they move, copy or merge values without weights.

``Flatten``, ``Reshape``, ``Transpose``, ``Pad`` and ``Concat`` route relevance back exactly (their
``route`` is the inverse re-indexing: relevance of a padded zero is dropped, which is zero for any
rule whose relevance is proportional to the input). ``Add`` merges residual branches; its LRP rule
(zennit's ``Sum`` with ``Norm``) is in ``nets.propagation``.
"""

from __future__ import annotations

import numpy as np

from nets.layers.base import Layer

__all__ = ["Flatten", "Reshape", "Transpose", "Pad", "Concat", "Add"]


def _ints(value, name):
    try:
        out = tuple(int(v) for v in value)
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}") from err
    if any(float(v) != o for v, o in zip(value, out)):
        raise ValueError(f"{name} must be integers, got {value!r}")
    return out


class _Routing(Layer):
    """A re-indexing: the ``Pass`` rule routes relevance like the gradient (exact)."""

    def route(self, xs, y, R):
        return self.backward_inputs(xs, y, R)


class Flatten(_Routing):
    """(N, ...) -> (N, prod(...)), C-order (channel-major for NCHW, as PyTorch's ``flatten``)."""

    kind = "Flatten"

    def forward(self, x):
        if x.ndim < 2:
            raise ValueError(f"Flatten expects a batch of at least 2 dimensions, got shape {x.shape}")
        return x.reshape(x.shape[0], -1)

    def backward(self, x, y, grad):
        return grad.reshape(x.shape)


class Reshape(_Routing):
    """Reshape every sample to ``shape`` (the batch axis is kept; one entry may be -1).

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Reshape
    >>> Reshape((2, -1)).forward(np.zeros((5, 3, 4))).shape
    (5, 2, 6)
    """

    kind = "Reshape"

    def __init__(self, shape):
        self.shape = _ints(shape, "Reshape shape")
        if sum(s == -1 for s in self.shape) > 1 or any(s < -1 or s == 0 for s in self.shape):
            raise ValueError(f"Reshape shape needs positive sizes and at most one -1, got {shape!r}")

    def get_config(self):
        return {"shape": list(self.shape)}

    def forward(self, x):
        try:
            return x.reshape((x.shape[0],) + self.shape)
        except ValueError:
            raise ValueError(
                f"Reshape cannot reshape samples of shape {x.shape[1:]} to {self.shape}"
            ) from None

    def backward(self, x, y, grad):
        return grad.reshape(x.shape)


class Transpose(_Routing):
    """Permute the axes of every sample; the batch axis stays first.

    Parameters
    ----------
    perm : sequence of int
        The per-sample axes, numbered as in the batch array (1 ... ndim - 1), in their new order;
        a full permutation starting with 0 (ONNX's ``perm``) is accepted too.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Transpose
    >>> Transpose((2, 3, 1)).forward(np.zeros((5, 3, 8, 8))).shape  # NCHW -> NHWC
    (5, 8, 8, 3)
    """

    kind = "Transpose"

    def __init__(self, perm):
        perm = _ints(perm, "Transpose perm")
        if perm and perm[0] == 0:
            perm = perm[1:]
        if sorted(perm) != list(range(1, len(perm) + 1)):
            raise ValueError(
                f"Transpose perm must order the per-sample axes 1..{len(perm)} "
                f"(batch axis 0 stays), got {perm!r}"
            )
        self.perm = (0,) + perm

    def get_config(self):
        return {"perm": list(self.perm[1:])}

    def forward(self, x):
        if x.ndim != len(self.perm):
            raise ValueError(
                f"Transpose perm {self.perm[1:]} needs {len(self.perm)}-D input, got shape {x.shape}"
            )
        return x.transpose(self.perm)

    def backward(self, x, y, grad):
        return grad.transpose(np.argsort(self.perm))


class Pad(_Routing):
    """Zero padding, any amount on each side.

    Parameters
    ----------
    pads : sequence of 2k non-negative ints
        ONNX's layout for the last k axes: all begins, then all ends. With 4 values on NCHW input
        that is ``(top, left, bottom, right)``; with 2 * ndim values the batch axis must get 0.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Pad
    >>> Pad((0, 1, 2, 0)).forward(np.ones((1, 1, 2, 2))).shape
    (1, 1, 4, 3)
    """

    kind = "Pad"

    def __init__(self, pads):
        self.pads = _ints(pads, "Pad pads")
        if not self.pads or len(self.pads) % 2 or min(self.pads) < 0:
            raise ValueError(
                f"Pad needs an even number of non-negative pads (begins, then ends), got {pads!r}"
            )

    def get_config(self):
        return {"pads": list(self.pads)}

    def _widths(self, ndim):
        k = len(self.pads) // 2
        if k > ndim or (k == ndim and (self.pads[0] or self.pads[k])):
            raise ValueError(
                f"Pad pads {self.pads} do not fit input with {ndim} axes (the batch axis gets no padding)"
            )
        return [(0, 0)] * (ndim - k) + list(zip(self.pads[:k], self.pads[k:]))

    def forward(self, x):
        return np.pad(x, self._widths(x.ndim))

    def backward(self, x, y, grad):
        idx = tuple(slice(b, b + n) for (b, _), n in zip(self._widths(x.ndim), x.shape))
        return grad[idx]


class Concat(_Routing):
    """Concatenate the inputs along ``axis`` (default the channels of NCHW); relevance and gradient
    go back slice by slice.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Concat
    >>> Concat().forward(np.zeros((2, 3, 4, 4)), np.zeros((2, 5, 4, 4))).shape
    (2, 8, 4, 4)
    """

    kind = "Concat"
    n_inputs = None

    def __init__(self, axis=1):
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
            raise ValueError(f"Concat axis must be a non-zero int (axis 0 is the batch), got {axis!r}")
        self.axis = int(axis)

    def get_config(self):
        return {"axis": self.axis}

    def forward(self, *xs):
        if not xs:
            raise ValueError("Concat needs at least one input")
        ndim = xs[0].ndim
        if not -ndim < self.axis < ndim or self.axis % ndim == 0:
            raise ValueError(f"Concat axis {self.axis} does not fit inputs of shape {xs[0].shape}")
        try:
            return np.concatenate(xs, axis=self.axis)
        except ValueError:
            shapes = [x.shape for x in xs]
            raise ValueError(f"Concat along axis {self.axis} cannot join shapes {shapes}") from None

    def backward_inputs(self, xs, y, grad):
        ends = np.cumsum([x.shape[self.axis] for x in xs])[:-1]
        return np.split(grad, ends, axis=self.axis)


class Add(Layer):
    """Element-wise sum of any number of inputs of one shape (residual connections).

    Notes
    -----
    LRP (zennit's ``Sum`` module with the ``Norm`` rule): each input gets relevance in proportion
    to its contribution, ``R_i = a_i * R / stab(sum_j a_j)`` with the epsilon-stabiliser of the
    rule (``Norm`` by default, ``Epsilon`` gives the same with its epsilon); what the stabiliser
    takes is reported as absorbed.

    Examples
    --------
    >>> import numpy as np
    >>> from nets import Add
    >>> Add().forward(np.ones((1, 2)), np.full((1, 2), 2.0))
    array([[3., 3.]])
    """

    kind = "Add"
    n_inputs = None

    def forward(self, *xs):
        if not xs:
            raise ValueError("Add needs at least one input")
        shapes = {x.shape for x in xs}
        if len(shapes) != 1:
            raise ValueError(f"Add needs inputs of one shape, got {[x.shape for x in xs]}")
        out = xs[0] + xs[1] if len(xs) > 1 else xs[0].copy()
        for x in xs[2:]:
            out += x
        return out

    def backward_inputs(self, xs, y, grad):
        return [grad] * len(xs)
