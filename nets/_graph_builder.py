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
_LINEAR = ("Dense", "Conv2D")


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
        # nodes whose output also goes by another name (Identity, Dropout, Cast): the callers count
        # the readers of one name only, so folding into such a node could change what the others read
        self._aliased: set[str] = set()

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
        if t.view is not None or t.node == GRAPH_INPUT or t.node in self._aliased:
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
        ``shape`` or, for a one-input layer, what the layer computes for one sample."""
        sources = [self.node_of(k) for k in input_keys]
        if shape is None:
            shape = _output_shape(layer, (1,) + self.shape(input_keys[0]))
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
        """``output_key`` is the same tensor as ``key`` (Identity, Dropout, a float Cast): both
        names stay readable, so nothing may be folded into the node any more."""
        self.tensors[output_key] = self.tensors[key]
        self._aliased.add(self.tensors[key].node)

    def _renamed(self, output_key, key):
        """``key`` now goes by ``output_key`` after folding its sole reader into its node."""
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

    # -- shared by the importers -----------------------------------------------------------------
    def fold_batchnorm(self, key, params, output_key, sole):
        """Fold an inference batch norm (gamma, beta, mean, var, eps) into the dense/conv node
        computing ``key`` when the batch norm is its ``sole`` reader; False when it cannot."""
        producer = self.producer(key, _LINEAR) if sole else None
        if producer is None:
            return False
        self.replace(producer, fold_batchnorm(self.layers[producer], *params))
        self._renamed(output_key, key)
        return True

    def affine(self, where, key, factor, offset, output_key, name, sole):
        """``key * factor + offset`` with constant (scalar or per-axis) operands: a bias added to
        the dense/conv node before, or merged into the Scale node before, when this is its
        ``sole`` reader; else a new :class:`nets.Scale`."""

        shape = self.shape(key)
        factor, f_axis = per_axis(where, factor, shape)
        offset, o_axis = per_axis(where, offset, shape)
        producer = self.producer(key, _LINEAR) if sole else None
        if f_axis is None and factor == 1.0 and o_axis in (None, 1) and producer is not None:
            bias = np.broadcast_to(offset, (shape[0],))
            self.replace(producer, fold_bias(self.layers[producer], bias))
            self._renamed(output_key, key)
            return
        if f_axis is not None and o_axis is not None and f_axis != o_axis:
            raise ValueError(f"{where}: scale and offset vary along different axes")
        axis = f_axis if f_axis is not None else (o_axis if o_axis is not None else 1)
        previous = self.producer(key, ("Scale",)) if sole else None
        if previous is not None:  # (x * f1 + o1) * f2 + o2 as one Scale: (x - mean) / std
            before = self.layers[previous]
            f1, o1 = np.asarray(before.factor, dtype=np.float64), np.asarray(before.offset, dtype=np.float64)
            axes = {axis} if f_axis is not None or o_axis is not None else set()
            if f1.ndim or o1.ndim:
                axes.add(before.axis % (len(shape) + 1))
            if len(axes) <= 1:
                axis = axes.pop() if axes else 1
                factor, offset = f1 * factor, o1 * factor + offset
                self.replace(previous, _scale(factor, offset, axis))
                self._renamed(output_key, key)
                return
        self.add(name, _scale(factor, offset, axis), [key], output_key)

    def pad_before(self, where, key, pads, name, pool=False):
        """(input key, symmetric padding) for a conv/pool with ``pads`` (top, left, bottom, right):
        unequal padding becomes a zero ``Pad`` node before it (for max pooling only when its input
        is known to be non-negative, so that the zeros never win where the source pads with -inf)."""
        import nets

        top, left, bottom, right = (int(p) for p in pads)
        if (top, left) == (bottom, right):
            return key, (top, left)
        if pool and not self._nonnegative(key):
            raise ValueError(
                f"{where}: asymmetric padding (begin {[top, left]}, end {[bottom, right]}) of a max pool "
                "is supported only after a ReLU (or another non-negative output)"
            )
        padded = f"{key}#pad:{name}"  # per consumer: two may pad one tensor differently
        self.add(name + "_pad", nets.Pad((top, left, bottom, right)), [key], padded)
        return padded, (0, 0)

    def _nonnegative(self, key):
        """True when every path back from ``key`` ends in a ReLU (or a Clip at >= 0) through
        layers that keep signs."""
        seen, stack = set(), [self.tensors[key].node]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if name not in self.layers:
                return False  # the graph input
            layer = self.layers[name]
            if layer.kind == "ReLU" or (layer.kind == "Clip" and layer.low is not None and layer.low >= 0):
                continue
            if layer.kind not in ("MaxPool2D", "Pad", "LRN", "Concat", "Reshape", "Flatten", "Identity"):
                return False
            stack.extend(self.inputs[name])
        return True

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
        for name in keep:
            if self.layers[name].kind == "Softmax" and name != out:
                raise ValueError(
                    f"node {name!r} (Softmax) is not the last layer; LRP explains the scores before it"
                )
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


def _scale(factor, offset, axis):
    """A :class:`nets.Scale`; a scalar next to a vector is repeated to its length."""
    import nets

    factor, offset = np.asarray(factor, dtype=np.float64), np.asarray(offset, dtype=np.float64)
    if factor.ndim != offset.ndim:
        n = max(factor.size, offset.size)
        factor, offset = np.broadcast_to(factor, (n,)), np.broadcast_to(offset, (n,))
    return nets.Scale(factor, offset=offset, axis=axis)


def _output_shape(layer, full):
    """Per-sample output shape of a one-input ``layer`` for input of shape ``full`` (batch 1):
    from its ``output_shape`` when it has one (convolutions and pools: a forward pass over a
    224 x 224 image would make loading a ResNet take as long as explaining it), else by running it
    on zeros."""
    if hasattr(layer, "output_shape"):
        check = getattr(layer, "check_input", None)
        if check is not None:  # the input checks of forward (channels), on a zero-strided probe
            check(np.broadcast_to(np.zeros((), dtype=np.float64), full))
        return tuple(layer.output_shape(full))[1:]
    return layer.forward(np.zeros(full, dtype=np.float64)).shape[1:]


def per_axis(where, constant, shape):
    """A constant operand of an elementwise op on data of per-sample ``shape``, as a scalar or as one
    value per index of a single axis: ``(value, axis)``; ``axis`` None for a scalar."""
    c = np.asarray(constant, dtype=np.float64)
    full = (1,) + tuple(shape)
    if c.ndim > len(full):
        raise ValueError(f"{where}: constant of shape {c.shape} has more axes than the data {full}")
    try:
        broadcast = np.broadcast_shapes(c.shape, full)
    except ValueError:
        raise ValueError(f"{where}: constant of shape {c.shape} does not broadcast to {full}") from None
    if broadcast != full:
        raise ValueError(f"{where}: constant of shape {c.shape} would change the data shape {full}")
    c = c.reshape((1,) * (len(full) - c.ndim) + c.shape)
    if c.size == 1:
        return float(c.ravel()[0]), None
    axes = [a for a in range(1, len(full)) if c.shape[a] > 1]
    if len(axes) > 1:
        raise ValueError(
            f"{where}: the constant of shape {c.shape[1:]} varies along several axes; only a scalar or "
            "one value per channel (or per index of one axis) is supported"
        )
    return c.reshape(-1), axes[0]


def ceil_mode_extra(size, kernel, stride, begin, end):
    """Extra end padding that a pool in ceil mode needs on one axis (ONNX and PyTorch drop a last
    window that would start in the end padding)."""
    out = -(-(size + begin + end - kernel) // stride) + 1
    if (out - 1) * stride >= size + begin:
        out -= 1
    return max((out - 1) * stride + kernel - (size + begin + end), 0)


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
