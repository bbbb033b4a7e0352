"""``Graph``: a network as a directed acyclic graph of named nodes, and the one engine that runs it.

A node applies one layer to the outputs of earlier nodes or of the graph input. The nodes are kept
in topological order, so every pass is a loop over them:

* ``trace`` runs forward and keeps every node's output (``acts[0]`` is the input, ``acts[i + 1]``
  the output of node ``i``), which is what the relevance and gradient passes walk back through, so
  an explanation reuses exactly the numbers the prediction computed;
* ``backpropagate`` walks the nodes in reverse: a node's output signal (gradient or relevance) is
  the sum of what its consumers sent back, and a ``step`` function turns it into one signal per
  input. The gradient, every LRP rule and the diagnostics all run on this one walk;
  ``nets.Sequential`` is a chain written as a list and runs on the same engine.
"""

from __future__ import annotations

import heapq

import numpy as np

from nets.layers import Layer
from nets.layers.linear import one_blas_thread_for, split_over_threads

__all__ = ["Node", "Graph", "check_batch"]


def check_batch(X, name="X"):
    """Validate a batch of inputs: numeric, finite, at least 2-D; float32 kept, else float64."""
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {X.dtype}")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {X.dtype}")
    X = X.astype(np.float32 if X.dtype == np.float32 else np.float64, copy=False)
    if X.ndim < 2:
        raise ValueError(f"{name} must be a batch (N, ...) with at least 2 dimensions, got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


class Node:
    """One step of a graph: ``layer`` applied to the outputs named in ``inputs``.

    Parameters
    ----------
    name : str
        Unique in the graph (used by name-based composites and in error messages).
    layer : nets layer
    inputs : str or sequence of str
        Names of graph inputs or of other nodes, in the order the layer takes them.
    """

    __slots__ = ("name", "layer", "inputs")

    def __init__(self, name, layer, inputs):
        if not isinstance(name, str) or not name:
            raise TypeError(f"a node name must be a non-empty str, got {name!r}")
        if not isinstance(layer, Layer):
            raise TypeError(f"node {name!r}: {type(layer).__name__} is not a nets layer")
        inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        if not inputs or not all(isinstance(i, str) for i in inputs):
            raise TypeError(f"node {name!r}: inputs must be one or more names (str), got {inputs!r}")
        arity = layer.n_inputs
        if arity is not None and len(inputs) != arity:
            raise ValueError(f"node {name!r}: {layer.kind} takes {arity} input(s), got {len(inputs)}")
        self.name, self.layer, self.inputs = name, layer, inputs

    def __repr__(self):
        return f"Node({self.name!r}, {self.layer!r}, {list(self.inputs)!r})"


def _as_names(value, what):
    names = (value,) if isinstance(value, str) else tuple(value)
    if len(names) != 1 or not isinstance(names[0], str):
        raise ValueError(f"a graph has exactly one {what} (a name), got {value!r}")
    return names


def _topological(nodes, input_names):
    """The nodes sorted so that every node follows its inputs (stable: among the nodes that are
    ready, the one given first), in O(nodes + edges); ValueError for unknown names and cycles."""
    position = {n.name: i for i, n in enumerate(nodes)}
    waiting = [0] * len(nodes)  # inputs not yet computed, per node
    users = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        for src in n.inputs:
            if src in position:
                waiting[i] += 1
                users[position[src]].append(i)
            elif src not in input_names:
                raise ValueError(f"node {n.name!r} reads {src!r}, which is neither a graph input nor a node")
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in users[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < len(nodes):
        stuck = sorted(n.name for n, w in zip(nodes, waiting) if w > 0)
        raise ValueError(f"the graph has a cycle through {stuck}")
    return order


class Graph:
    """A network as a directed acyclic graph of named nodes (NCHW, float32 or float64).

    Parameters
    ----------
    nodes : sequence of Node (or ``(name, layer, inputs)`` tuples)
        Any order in which inputs are resolvable; they are kept in a topological order.
    inputs : str or sequence of one str, default ``("input",)``
        The name the nodes use for the network input.
    outputs : str or sequence of one str, optional
        The node whose output is the network output; default the last node given. Every node must
        contribute to it.

    Attributes
    ----------
    nodes : tuple of Node, in topological order (the output node last)
    layers, names : the nodes' layers and names, in that order
    input_range : (low, high) or None
        The range of the data the model was trained on, when known: the default box of the
        ``epsilon_gamma_box`` composite. Saved with the model.
    input_shape : tuple of int or None
        The per-sample input shape, when the model says it (an ONNX file with a static input shape,
        ``from_torch``'s example input); the command line then needs no ``--input-shape``. Kept by
        ``astype`` and batch-norm folding, saved with the model.

    Examples
    --------
    >>> import numpy as np
    >>> import nets
    >>> rng = np.random.default_rng(0)
    >>> g = nets.Graph([
    ...     nets.Node("conv", nets.Conv2D(rng.normal(size=(2, 2, 3, 3)), padding=1), ["input"]),
    ...     nets.Node("relu", nets.ReLU(), ["conv"]),
    ...     nets.Node("add", nets.Add(), ["relu", "input"]),       # a residual connection
    ...     nets.Node("pool", nets.GlobalAvgPool2D(), ["add"]),
    ... ])
    >>> g(rng.normal(size=(4, 2, 5, 5))).shape
    (4, 2)
    """

    def __init__(self, nodes, inputs=("input",), outputs=None, input_range=None, input_shape=None):
        nodes = [n if isinstance(n, Node) else Node(*n) for n in nodes]
        if not nodes:
            raise ValueError("a graph needs at least one node")
        self.inputs = _as_names(inputs, "input")
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"node names must be unique; repeated: {dup}")
        clash = set(names) & set(self.inputs)
        if clash:
            raise ValueError(f"node names {sorted(clash)} are also graph input names")
        self.outputs = (nodes[-1].name,) if outputs is None else _as_names(outputs, "output")
        if self.outputs[0] not in names:
            raise ValueError(f"the output {self.outputs[0]!r} is not a node")
        order = _topological(nodes, self.inputs)
        needed = {self.outputs[0]}
        for n in reversed(order):
            if n.name in needed:
                needed.update(n.inputs)
        dead = [n.name for n in order if n.name not in needed]
        if dead:
            raise ValueError(f"nodes {dead} do not contribute to the output {self.outputs[0]!r}")
        self.nodes = tuple(order)
        index = {name: 0 for name in self.inputs}
        index.update({n.name: i + 1 for i, n in enumerate(self.nodes)})
        #: per node, the positions in ``trace``'s list of the values it reads
        self.sources = tuple(tuple(index[s] for s in n.inputs) for n in self.nodes)
        self.input_range = None if input_range is None else _check_range(input_range)
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)

    # ---------------------------------------------------------------------------------------------
    @property
    def layers(self):
        return [n.layer for n in self.nodes]

    @property
    def names(self):
        return [n.name for n in self.nodes]

    @property
    def output(self):
        """Name of the output node."""
        return self.outputs[0]

    def __len__(self):
        return len(self.nodes)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, key):
        """The layer of node ``key`` (a name or a position in topological order)."""
        if isinstance(key, str):
            for n in self.nodes:
                if n.name == key:
                    return n.layer
            raise KeyError(f"no layer named {key!r}")
        return self.nodes[key].layer

    def node(self, name):
        """The ``Node`` called ``name``."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r}")

    def consumers(self):
        """For every position of ``trace``'s list, the node indices that read it."""
        out = [[] for _ in range(len(self.nodes) + 1)]
        for i, src in enumerate(self.sources):
            for j in src:
                out[j].append(i)
        return out

    def __repr__(self):
        body = "\n".join(f"  ({n.name}): {n.layer!r} <- {', '.join(n.inputs)}" for n in self.nodes)
        return f"{type(self).__name__}(\n{body}\n)"

    @property
    def dtype(self):
        """float32 when every parameter is float32 (or there are none), float64 otherwise."""
        dtypes = {a.dtype for layer in self.layers for a in layer.get_arrays().values()}
        return np.dtype(np.float32) if dtypes <= {np.dtype(np.float32)} and dtypes else np.dtype(np.float64)

    # ---------------------------------------------------------------------------------------------
    def trace(self, X, step=None):
        """Every value of the forward pass: ``[X, out(node 0), out(node 1), ...]``.

        ``step(i, layer, xs)``, if given, computes node ``i``'s output instead of ``layer(*xs)``
        (the LRP pass uses it to compute rule denominators in the same GEMM); it may return
        ``(output, extra)``, and then the extras are returned as a second list.
        """
        a = check_batch(X)
        acts, extras = [a], []
        with one_blas_thread_for(self.layers):  # (one thread policy for the whole pass)
            for i, node in enumerate(self.nodes):
                xs = [acts[j] for j in self.sources[i]]
                try:
                    if step is None:
                        out = node.layer.forward(*xs)
                    else:
                        out, extra = step(i, node.layer, xs)
                        extras.append(extra)
                except ValueError as err:
                    raise ValueError(f"layer {node.name!r}: {err}") from None
                acts.append(out)
        return acts if step is None else (acts, extras)

    def forward(self, X):
        """Logits (or whatever the output node computes) for the batch ``X``.

        With more than one numba thread the batch runs in contiguous parts, one per thread
        (``split_over_threads``; every layer computes each sample on its own at inference), the same
        numbers up to float round-off."""
        X = check_batch(X)
        return split_over_threads(lambda part: self.trace(part)[-1], X, work=2 * self.weight_work(len(X)))

    def weight_work(self, n):
        """Multiply-adds of the weighted layers for ``n`` samples, counting a convolution's weights
        once (not per position): a lower bound of a forward pass, for the threads' size rule."""
        weights = (getattr(layer, "W", None) for layer in self.layers)
        return n * sum(W.size for W in weights if W is not None)

    __call__ = forward

    def predict(self, X):
        """Index of the largest output per sample."""
        return np.argmax(self.forward(X), axis=1)

    def backpropagate(self, acts, signal, step):
        """Walk the nodes backwards from ``signal`` at the output.

        ``step(i, node, xs, y, s)`` gets node ``i``'s inputs ``xs``, output ``y`` and output signal
        ``s`` (the sum of what its consumers sent) and returns one signal per input. Returns the
        signal at the graph input.
        """
        at = [None] * len(acts)
        at[-1] = signal
        with one_blas_thread_for(self.layers):
            return self._backpropagate(acts, at, step)

    def _backpropagate(self, acts, at, step):
        for i in range(len(self.nodes) - 1, -1, -1):
            s, at[i + 1] = at[i + 1], None  # freed as soon as it is used
            node = self.nodes[i]
            xs = [acts[j] for j in self.sources[i]]
            try:
                back = step(i, node, xs, acts[i + 1], s)
            except ValueError as err:
                raise ValueError(f"layer {node.name!r}: {err}") from None
            for j, r in zip(self.sources[i], back):
                # a fan-out point gets the sum over its consumers (a new array: never add in place
                # into a signal a Pass rule may share with its producer)
                at[j] = r if at[j] is None else at[j] + r
        return at[0]

    def gradient(self, X, grad_output, activations=None):
        """Gradient of ``sum(grad_output * model(X))`` with respect to ``X`` (a vector-Jacobian
        product through every node); ``activations`` from ``trace`` can be passed to reuse them."""
        acts = self.trace(X) if activations is None else activations
        g = np.asarray(grad_output, dtype=acts[-1].dtype)
        if g.shape != acts[-1].shape:
            raise ValueError(f"grad_output has shape {g.shape}, the output has shape {acts[-1].shape}")
        return self.backpropagate(acts, g, lambda i, node, xs, y, s: node.layer.backward_inputs(xs, y, s))

    # ---------------------------------------------------------------------------------------------
    def with_nodes(self, nodes, outputs=None):
        """A graph of the same kind over new ``nodes`` (same input name, range and shape)."""
        return Graph(nodes, self.inputs, outputs or self.outputs, self.input_range, self.input_shape)

    def astype(self, dtype):
        """A copy of the model with every parameter cast to ``dtype`` (float32 or float64)."""
        return self.with_nodes([Node(n.name, n.layer.astype(dtype), n.inputs) for n in self.nodes])

    def get_config(self):
        """Input and output names and the nodes' kinds, names, configs and inputs (JSON-serialisable);
        arrays come from each layer's ``get_arrays``."""
        return {
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "nodes": [
                {
                    "kind": n.layer.kind,
                    "name": n.name,
                    "config": n.layer.get_config(),
                    "inputs": list(n.inputs),
                }
                for n in self.nodes
            ],
        }

    def save(self, path):
        """Write the model to ``path`` (see ``nets.io.save_model``)."""
        from nets.io import save_model

        return save_model(self, path)


def _check_range(value):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"input_range must be a pair of numbers (low, high), got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(f"input_range must be finite with low <= high, got {value!r}")
    return (low, high)
