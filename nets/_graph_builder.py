"""Assemble a :class:`nets.Graph` while an importer (ONNX, PyTorch) walks a foreign graph.

The importers speak in the foreign graph's tensor names ("keys"); the builder maps every data
tensor to the nets node that computes it and to its per-sample shape. Three things are shared by
both importers and live here:

* **lazy reshapes.** ``Flatten``/``Reshape``/``Squeeze``/``view`` only record a new per-sample
  shape ("view") for a tensor. A nets node is written only when something other than another
  reshape reads it, so a chain of reshapes becomes one node and a reshape back to the producer's
  own shape (ONNX's ``GlobalAveragePool -> Flatten``) none at all.
* **folding into a linear node.** A bias ``Add`` or a batch norm that is the only reader of a
  dense/convolution output is folded into its weights (exact up to rounding), as the importers
  did for chains.
* **pruning.** Only nodes the output depends on are kept; node names are made unique.
"""

from __future__ import annotations

import numpy as np

GRAPH_INPUT = "input"


class _Tensor:
    """A data tensor of the foreign graph: the nets node computing it, that node's per-sample
    output shape, and the per-sample shape the foreign graph sees (a pure reshape of it)."""

    __slots__ = ("node", "shape", "view", "view_name")

    def __init__(self, node, shape, view=None, view_name=None):
        self.node = node
        self.shape = tuple(int(s) for s in shape)
        self.view = None if view is None or tuple(view) == self.shape else tuple(int(s) for s in view)
        self.view_name = view_name


class GraphBuilder:
    """Collects nets nodes in topological order.

    Parameters
    ----------
    input_key : str
        The foreign graph's name for its data input.
    input_shape : tuple of int
        Per-sample input shape.
    """

    def __init__(self, input_key, input_shape):
        self.input_shape = tuple(int(s) for s in input_shape)
        self.tensors = {input_key: _Tensor(GRAPH_INPUT, self.input_shape)}
        self.layers: dict[str, object] = {}  # node name -> layer (float64 while building)
        self.inputs: dict[str, list[str]] = {}  # node name -> names of the nodes it reads
        self.shapes: dict[str, tuple] = {GRAPH_INPUT: self.input_shape}
        self._materialized: dict[tuple, str] = {}

    # -- queries -----------------------------------------------------------------------------
    def is_data(self, key):
        return key in self.tensors

    def shape(self, key):
        """Per-sample shape of a data tensor as the foreign graph sees it."""
        t = self.tensors[key]
        return t.view if t.view is not None else t.shape

    def producer(self, key, kinds):
        """Name of the node computing ``key`` when its layer kind is in ``kinds`` and the tensor is
        not a reshape of it; else None (used to fold a bias or batch norm into it)."""
        t = self.tensors[key]
        if t.view is not None or t.node == GRAPH_INPUT:
            return None
        return t.node if self.layers[t.node].kind in kinds else None

    # -- building ----------------------------------------------------------------------------
    def _unique(self, name):
        base, k = str(name) or "node", 1
        name = base
        while name in self.shapes:
            name = f"{base}_{k}"
            k += 1
        return name

    def add(self, name, layer, input_keys, output_key, shape=None):
        """Append a node computing ``output_key`` from ``input_keys``; its output shape is
        ``shape`` or, for a one-input layer, what the layer makes of a zero sample."""
        sources = [self.node_of(k) for k in input_keys]
        if shape is None:
            probe = np.zeros((1,) + self.shape(input_keys[0]), dtype=np.float64)
            shape = layer.forward(probe).shape[1:]
        name = self._unique(name)
        self.layers[name] = layer
        self.inputs[name] = sources
        self.shapes[name] = tuple(int(s) for s in shape)
        self.tensors[output_key] = _Tensor(name, shape)
        return name

    def replace(self, name, layer):
        """Swap the layer of node ``name`` (same input and output shapes), e.g. after folding."""
        self.layers[name] = layer

    def alias(self, output_key, key):
        """``output_key`` is the same tensor as ``key`` (Identity, Dropout, a float Cast)."""
        self.tensors[output_key] = self.tensors[key]

    def reshape(self, output_key, key, shape, name):
        """``output_key`` is ``key`` reshaped (per sample) to ``shape``; no node is written yet."""
        t = self.tensors[key]
        shape = tuple(int(s) for s in shape)
        if int(np.prod(shape)) != int(np.prod(t.shape)):
            raise ValueError(f"cannot reshape per-sample shape {self.shape(key)} to {shape}")
        self.tensors[output_key] = _Tensor(t.node, t.shape, shape, name)

    def node_of(self, key):
        """Name of the node whose output is exactly ``key`` (writing the pending reshape)."""
        import nets

        t = self.tensors[key]
        if t.view is None:
            return t.node
        cache = (t.node, t.view)
        if cache not in self._materialized:
            layer = nets.Flatten() if len(t.view) == 1 else nets.Reshape(t.view)
            name = self._unique(t.view_name)
            self.layers[name] = layer
            self.inputs[name] = [t.node]
            self.shapes[name] = t.view
            self._materialized[cache] = name
        return self._materialized[cache]

    def finish(self, output_key, dtype):
        """The :class:`nets.Graph` computing ``output_key`` (unused nodes dropped; a
        :class:`nets.Sequential` when the nodes form a chain), its weights cast to ``dtype``, with
        ``input_shape`` recorded."""
        import nets

        out = self.node_of(output_key)
        if out == GRAPH_INPUT:
            out = self.add("identity", nets.Identity(), [output_key], output_key + "#out")
        keep, stack = set(), [out]
        while stack:
            name = stack.pop()
            if name in keep or name == GRAPH_INPUT:
                continue
            keep.add(name)
            stack.extend(self.inputs[name])
        dtype = np.dtype(dtype)
        nodes = []
        for name in self.layers:  # insertion order is topological
            if name in keep:
                layer = self.layers[name]
                if dtype != np.float64 and layer.get_arrays():
                    layer = layer.astype(dtype)
                nodes.append(nets.Node(name, layer, tuple(self.inputs[name])))
        chain = all(
            n.inputs == ((GRAPH_INPUT,) if i == 0 else (nodes[i - 1].name,)) for i, n in enumerate(nodes)
        )
        if chain:  # a chain is a Sequential (a Graph too): the simple form, for printing and saving
            graph = nets.Sequential([n.layer for n in nodes], names=[n.name for n in nodes])
        else:
            graph = nets.Graph(nodes, inputs=(GRAPH_INPUT,), outputs=(out,))
        graph.input_shape = self.input_shape
        return graph


def _linear_arrays(layer):
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in layer.get_arrays().items()}
    if arrays.get("b") is None:
        arrays["b"] = np.zeros(arrays["W"].shape[0])
    return arrays


def fold_bias(layer, bias):
    """The dense/convolution ``layer`` with ``bias`` (one value per output) added to its bias."""
    arrays = _linear_arrays(layer)
    arrays["b"] = arrays["b"] + bias
    return type(layer).from_config(layer.get_config(), arrays)


def fold_batchnorm(layer, gamma, beta, mean, var, eps):
    """The dense/convolution ``layer`` followed by an inference batch norm, as one layer:
    w' = w γ/√(σ²+ε), b' = (b − μ) γ/√(σ²+ε) + β (float64)."""
    arrays = _linear_arrays(layer)
    scale = gamma / np.sqrt(var + eps)
    arrays["W"] = arrays["W"] * scale.reshape((-1,) + (1,) * (arrays["W"].ndim - 1))
    arrays["b"] = (arrays["b"] - mean) * scale + beta
    return type(layer).from_config(layer.get_config(), arrays)
