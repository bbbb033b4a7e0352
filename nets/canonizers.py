"""Canonizers: rewrite a model into an equivalent one that the LRP rules handle well.

``SequentialMergeBatchNorm`` folds every batch norm that directly follows a dense or convolution
layer into that layer (SPEC section 3):

    w' = w * gamma / sqrt(var + eps),     b' = (b - mean) * gamma / sqrt(var + eps) + beta

so the folded model computes the same outputs (up to rounding) and the batch norm's affine map is
explained by the linear layer's rule instead of being passed over. A batch norm that follows
anything else stays (and is passed over by the presets, as in zennit).

Every canonizer returns the new model and ``origin``: for each new layer, the index of the layer of
the original model it came from, so rules given by index keep referring to the user's model.
"""

from __future__ import annotations

import numpy as np

from nets.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense
from nets.model import Sequential

__all__ = ["Canonizer", "SequentialMergeBatchNorm", "fold_batch_norm", "canonize"]


class Canonizer:
    """Base class: ``apply(model, origin=None) -> (new_model, origin)``."""

    def apply(self, model, origin=None):  # pragma: no cover - interface
        raise NotImplementedError


def _fold(linear, bn):
    scale = bn.scale.astype(np.float64)
    shift = bn.shift.astype(np.float64)
    W = linear.W.astype(np.float64)
    b = np.zeros(W.shape[0]) if linear.b is None else linear.b.astype(np.float64)
    dtype = linear.W.dtype
    W_new = (W * scale.reshape((-1,) + (1,) * (W.ndim - 1))).astype(dtype)
    b_new = (b * scale + shift).astype(dtype)
    if isinstance(linear, Dense):
        return Dense(W_new, b_new)
    return Conv2D(W_new, b_new, stride=linear.stride, padding=linear.padding)


class SequentialMergeBatchNorm(Canonizer):
    """Fold each batch norm directly following a Dense (BatchNorm1D) or Conv2D (BatchNorm2D).

    Examples
    --------
    >>> import numpy as np
    >>> import nets
    >>> from nets.canonizers import SequentialMergeBatchNorm
    >>> model = nets.Sequential([nets.Dense(np.ones((2, 2))),
    ...                          nets.BatchNorm1D([2.0, 1.0], [0.0, 1.0], [0.5, 0.0], [1.0, 4.0])])
    >>> folded, origin = SequentialMergeBatchNorm().apply(model)
    >>> [layer.kind for layer in folded], origin
    (['Dense'], [0])
    """

    def apply(self, model, origin=None):
        origin = list(range(len(model))) if origin is None else list(origin)
        layers, names, new_origin = [], [], []
        i = 0
        while i < len(model):
            layer = model.layers[i]
            nxt = model.layers[i + 1] if i + 1 < len(model) else None
            foldable = (isinstance(layer, Dense) and isinstance(nxt, BatchNorm1D)) or (
                isinstance(layer, Conv2D) and isinstance(nxt, BatchNorm2D)
            )
            if foldable and nxt.num_features == layer.W.shape[0]:
                layers.append(_fold(layer, nxt))
                step = 2
            else:
                layers.append(layer)
                step = 1
            names.append(model.names[i])
            new_origin.append(origin[i])
            i += step
        return Sequential(layers, names), new_origin


def fold_batch_norm(model):
    """The model with batch norms folded into their preceding dense/conv layers (outputs unchanged)."""
    return SequentialMergeBatchNorm().apply(model)[0]


def canonize(model, canonizers=None):
    """Apply ``canonizers`` (default: batch-norm folding) in order; returns ``(model, origin)``."""
    canonizers = [SequentialMergeBatchNorm()] if canonizers is None else list(canonizers)
    origin = list(range(len(model)))
    for canonizer in canonizers:
        if not isinstance(canonizer, Canonizer):
            raise TypeError(f"expected a Canonizer, got {type(canonizer).__name__}")
        model, origin = canonizer.apply(model, origin)
    return model, origin
