"""``Sequential``: a feed-forward network as an ordered list of named layers.

A ``Sequential`` is a ``nets.Graph`` whose nodes form a chain, so it runs on the graph engine: the
model is a callable from inputs to logits, and ``trace`` runs the same forward pass but keeps every
intermediate activation, which is what the relevance and gradient passes walk back through; so the
explanation reuses exactly the numbers the prediction computed.
"""

from __future__ import annotations

from nets.graph import Graph, Node, check_batch
from nets.layers import Layer

__all__ = ["Sequential", "check_batch"]


class Sequential(Graph):
    """A feed-forward network: ``layers`` applied in order (a chain-shaped ``nets.Graph``: the same
    engine runs it).

    Parameters
    ----------
    layers : list of nets layers
    names : list of str, optional
        One unique name per layer (used by name-based composites); default ``"<kind>_<index>"``,
        e.g. ``"dense_0"``.

    Examples
    --------
    >>> import numpy as np
    >>> import nets
    >>> rng = np.random.default_rng(0)
    >>> model = nets.Sequential([nets.Dense(rng.normal(size=(4, 3))), nets.ReLU(),
    ...                          nets.Dense(rng.normal(size=(2, 4)))])
    >>> model(rng.normal(size=(5, 3))).shape
    (5, 2)
    >>> model.names
    ['dense_0', 'relu_1', 'dense_2']
    """

    def __init__(self, layers, names=None):
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is {type(layer).__name__}, not a nets layer")
        if names is None:
            names = [f"{layer.kind.lower()}_{i}" for i, layer in enumerate(layers)]
        names = [str(n) for n in names]
        if len(names) != len(layers):
            raise ValueError(f"got {len(names)} names for {len(layers)} layers")
        if len(set(names)) != len(names):
            raise ValueError("layer names must be unique")
        input_name = "input"
        while input_name in names:  # a layer may itself be called "input"
            input_name = "_" + input_name
        sources = [input_name] + names[:-1]
        super().__init__(
            [Node(n, layer, [src]) for n, layer, src in zip(names, layers, sources)], (input_name,)
        )

    def with_nodes(self, nodes, outputs=None):
        """A ``Sequential`` again when ``nodes`` still form a chain (folding batch norm keeps one),
        else a ``Graph``."""
        nodes = list(nodes)
        chain = all(
            len(n.inputs) == 1 and n.inputs[0] == (self.inputs[0] if k == 0 else nodes[k - 1].name)
            for k, n in enumerate(nodes)
        )
        if chain and outputs in (None, self.outputs, (nodes[-1].name,)):
            model = Sequential([n.layer for n in nodes], [n.name for n in nodes])
            model.input_range, model.input_shape = self.input_range, self.input_shape
            return model
        return super().with_nodes(nodes, outputs)

    def __repr__(self):
        body = "\n".join(f"  ({n}): {layer!r}" for n, layer in zip(self.names, self.layers))
        return f"Sequential(\n{body}\n)"

    def get_config(self):
        """Layer kinds, names and configs (JSON-serialisable); arrays come from ``get_arrays``."""
        return {
            "layers": [
                {"kind": layer.kind, "name": name, "config": layer.get_config()}
                for name, layer in zip(self.names, self.layers)
            ]
        }
