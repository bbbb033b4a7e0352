"""Canonizers: rewrite a model into an equivalent one that the LRP rules handle well.

``MergeBatchNorm`` folds every batch norm node whose input is a dense or convolution node that feeds
only it into that node (SPEC section 3):

    w' = w * gamma / sqrt(var + eps),     b' = (b - mean) * gamma / sqrt(var + eps) + beta

so the folded model computes the same outputs (up to rounding) and the batch norm's affine map is
explained by the linear layer's rule instead of being passed over. A batch norm that follows
anything else (an ``Add``, a ``Concat``, an activation), or whose linear node also feeds other
nodes, stays: a per-channel affine node whose rule is ``Pass`` in the presets (as in zennit), or
any linear rule a composite gives it. It is never dropped.

Every canonizer returns the new model and ``origin``: for each new layer, the index of the layer of
the original model it came from, so rules given by index keep referring to the user's model.
"""

from __future__ import annotations

import numpy as np

from nets.graph import Node
from nets.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense

__all__ = ["Canonizer", "MergeBatchNorm", "SequentialMergeBatchNorm", "fold_batch_norm", "canonize"]


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
    return Conv2D(
        W_new,
        b_new,
        stride=linear.stride,
        padding=linear.padding,
        groups=linear.groups,
        dilation=linear.dilation,
    )


class MergeBatchNorm(Canonizer):
    """Fold each batch norm into the Dense (BatchNorm1D) or Conv2D (BatchNorm2D) node that feeds
    only it; the folded node keeps the linear node's name, and the batch norm's consumers read it.

    Examples
    --------
    >>> import numpy as np
    >>> import nets
    >>> from nets.canonizers import MergeBatchNorm
    >>> model = nets.Sequential([nets.Dense(np.ones((2, 2))),
    ...                          nets.BatchNorm1D([2.0, 1.0], [0.0, 1.0], [0.5, 0.0], [1.0, 4.0])])
    >>> folded, origin = MergeBatchNorm().apply(model)
    >>> [layer.kind for layer in folded], origin
    (['Dense'], [0])
    """

    def apply(self, model, origin=None):
        origin = list(range(len(model))) if origin is None else list(origin)
        nodes = model.nodes
        consumers = model.consumers()
        fold_into = {}  # linear node index -> batch norm node index
        for i, node in enumerate(nodes):
            (src,) = model.sources[i] if len(model.sources[i]) == 1 else (0,)
            if src == 0:
                continue  # reads the graph input (or several inputs): nothing to fold into
            j = src - 1
            lin = nodes[j].layer
            foldable = (isinstance(lin, Dense) and isinstance(node.layer, BatchNorm1D)) or (
                isinstance(lin, Conv2D) and isinstance(node.layer, BatchNorm2D)
            )
            if foldable and consumers[src] == [i] and node.layer.num_features == lin.W.shape[0]:
                fold_into[j] = i
        if not fold_into:
            return model, origin
        removed = {nodes[i].name: nodes[j].name for j, i in fold_into.items()}
        new_nodes, new_origin = [], []
        for k, node in enumerate(nodes):
            if node.name in removed:
                continue
            layer = _fold(node.layer, nodes[fold_into[k]].layer) if k in fold_into else node.layer
            inputs = [removed.get(name, name) for name in node.inputs]
            new_nodes.append(Node(node.name, layer, inputs))
            new_origin.append(origin[k])
        outputs = (removed.get(model.output, model.output),)
        return model.with_nodes(new_nodes, outputs), new_origin


#: the name this canonizer had when models were chains only
SequentialMergeBatchNorm = MergeBatchNorm


def fold_batch_norm(model):
    """The model with batch norms folded into their preceding dense/conv layers (outputs unchanged)."""
    return MergeBatchNorm().apply(model)[0]


def canonize(model, canonizers=None):
    """Apply ``canonizers`` (default: batch-norm folding) in order; returns ``(model, origin)``."""
    canonizers = [MergeBatchNorm()] if canonizers is None else list(canonizers)
    origin = list(range(len(model)))
    for canonizer in canonizers:
        if not isinstance(canonizer, Canonizer):
            raise TypeError(f"expected a Canonizer, got {type(canonizer).__name__}")
        model, origin = canonizer.apply(model, origin)
    return model, origin
