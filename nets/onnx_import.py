"""Import an ONNX model as a :class:`nets.Graph`.

The ONNX nodes are walked in their (topological) order. A node whose inputs are all constants
(initializers, ``Constant``, ``ConstantOfShape``, and the ``Shape -> Gather -> Concat -> Reshape``
chains that PyTorch exports build for ``x.view(x.size(0), -1)``) is evaluated once with
``onnx.reference`` at the opset of the model; ``Shape`` of a data tensor is known because every
per-sample shape is. The batch is taken as the file's own static batch size (``torch.onnx.export``
without ``dynamic_axes`` hard-codes it into reshape targets), else as 1. Every other node goes
through the operator table of :mod:`nets._onnx_ops`, which writes nets nodes; the assembly (lazy
reshapes, folding, pruning) is :mod:`nets._graph_builder`'s.

Biases written as a separate ``Add`` (``MatMul + Add``, a ``Conv`` followed by an ``Add`` of a
(C, 1, 1) constant) and ``BatchNormalization`` that is the only reader of a dense or convolution
output are folded into that layer (w' = w γ/√(σ²+ε), b' = (b − μ) γ/√(σ²+ε) + β), which preserves
its outputs up to rounding. Other elementwise ``Add``/``Sub``/``Mul``/``Div`` by a constant become
:class:`nets.Scale` nodes.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from ._graph_builder import GraphBuilder
from ._onnx_fold import Evaluator, NodeRef, import_onnx, opset_of
from ._onnx_ops import OPS

#: operators that may touch the data (any operator may appear in a constant sub-graph)
SUPPORTED_OPERATORS = tuple(OPS)

# why a few operators that real files contain are refused (appended to the error message)
_HINTS = {
    "QuantizeLinear": " (quantized models are not supported; use the float model)",
    "DequantizeLinear": " (quantized models are not supported; use the float model)",
    "QLinearConv": " (quantized models are not supported; use the float model)",
}


class _Walker:
    """Walks one ONNX graph; the operator handlers call back into it."""

    def __init__(self, onnx, model, input_shape, fold_batchnorm):
        self.onnx = onnx
        self.graph = model.graph
        self.opset = opset_of(model)
        self.fold_batchnorm = fold_batchnorm
        self.evaluator = Evaluator(onnx, model.opset_import)
        self.consts = {t.name: onnx.numpy_helper.to_array(t) for t in self.graph.initializer}
        key, shape = self._read_input(input_shape)
        self.builder = GraphBuilder(key, shape)
        outputs = [o.name for o in self.graph.output]
        if len(outputs) != 1:
            raise ValueError(f"the graph must have exactly one output; its outputs are {outputs}")
        self.needed = self._needed(outputs[0])
        # how many nodes (or graph outputs) read each tensor: folding needs a sole reader
        self.readers = Counter(n for i in self.needed for n in self.graph.node[i].input if n)
        self.readers.update(outputs)

    def _needed(self, output):
        """Indices of the nodes the output depends on (an auxiliary head or a dangling branch is
        not read, so an operator there cannot stop the import)."""
        wanted, keep = {output}, set()
        for i in range(len(self.graph.node) - 1, -1, -1):
            proto = self.graph.node[i]
            if any(o in wanted for o in proto.output if o):
                keep.add(i)
                wanted.update(n for n in proto.input if n)
        return keep

    # -- graph input -------------------------------------------------------------------------
    def _read_input(self, input_shape):
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise ValueError(f"the graph must have exactly one data input, found {len(inputs)}: {names}")
        value = inputs[0]
        declared = None
        ttype = value.type.tensor_type
        if ttype.HasField("shape"):
            declared = [
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in ttype.shape.dim
            ]
        # the batch size that shape computations assume: the file's, when it fixes one
        self.batch = declared[0] if declared and declared[0] else 1
        if input_shape is not None:
            shape = tuple(int(v) for v in input_shape)
            if declared is not None and (
                len(declared) != len(shape) + 1
                or any(d is not None and d != s for d, s in zip(declared[1:], shape))
            ):
                raise ValueError(
                    f"input_shape={shape} does not match the graph input {value.name!r} "
                    f"of shape {declared} (input_shape excludes the batch axis)"
                )
        else:
            if declared is None or len(declared) < 2 or any(d is None for d in declared[1:]):
                raise ValueError(
                    f"the graph input {value.name!r} has shape {declared}, whose per-sample part is not "
                    "fixed; pass input_shape=(C, H, W) or (K,)"
                )
            shape = tuple(declared[1:])
        if len(shape) not in (1, 3):
            raise ValueError(
                f"the graph input {value.name!r} has per-sample shape {shape}; nets supports vectors (K,) "
                "and images (C, H, W) (or (H, W, C) that the graph transposes)"
            )
        return value.name, shape

    # -- the walk ----------------------------------------------------------------------------
    def build(self, dtype):
        for index, proto in enumerate(self.graph.node):
            if index not in self.needed:
                continue
            node = NodeRef(self.onnx, proto, index)
            if proto.domain not in ("", "ai.onnx"):
                raise ValueError(f"{node}: operator from domain {proto.domain!r} is not supported")
            inputs = [n for n in proto.input if n]
            for n in inputs:
                if not self.builder.is_data(n) and n not in self.consts:
                    raise ValueError(f"{node}: reads {n!r}, which no earlier node computes")
            data = [n for n in inputs if self.builder.is_data(n)]
            if not data:
                self._fold(node, {n: self.consts[n] for n in inputs})
            elif proto.op_type in ("Shape", "Size"):
                # depends only on the (known) shape of the data; the batch is the file's static one, else 1
                probe = np.zeros((self.batch,) + self.builder.shape(data[0]), dtype=np.float32)
                self._fold(node, {data[0]: probe})
            elif proto.op_type in OPS:
                OPS[proto.op_type](self, node)
            else:
                raise ValueError(
                    f"{node}: operator {proto.op_type!r} is not supported{_HINTS.get(proto.op_type, '')}; "
                    f"supported operators are {', '.join(SUPPORTED_OPERATORS)}"
                )
        output = self.graph.output[0].name
        if not self.builder.is_data(output):
            raise ValueError(f"the graph output {output!r} is not computed from the input")
        return self.builder.finish(output, dtype)

    def _fold(self, node, values):
        try:
            self.consts.update(self.evaluator.run(node.proto, values))
        except Exception as exc:  # the reference evaluator raises many kinds
            raise ValueError(f"{node}: cannot evaluate this constant expression ({exc})") from None

    # -- called by the operator handlers ------------------------------------------------------
    def const(self, node, key, what):
        """A constant input as float64 (integers kept), or an error naming the node."""
        if key not in self.consts:
            raise ValueError(f"{node}: the {what} must be a constant (initializer or Constant node)")
        value = np.asarray(self.consts[key])
        return value.astype(np.float64) if np.issubdtype(value.dtype, np.floating) else value

    def add(self, node, layer, input_keys, key=None, shape=None):
        self.builder.add(node.name, layer, input_keys, key or node.output, shape)

    def fold_into_linear(self, node, key, *params):
        """Fold a batch norm into the dense/conv node computing ``key`` for it alone."""
        sole = self.fold_batchnorm and self.readers[key] == 1
        return self.builder.fold_batchnorm(key, params, node.output, sole)

    def affine(self, node, key, factor, offset):
        """``key * factor + offset`` with constant operands (a folded bias or a Scale node)."""
        self.builder.affine(node, key, factor, offset, node.output, node.name, self.readers[key] == 1)

    def pad_if_asymmetric(self, node, key, pads, pool=False):
        return self.builder.pad_before(node, key, pads, node.name, pool)


def load_onnx(path, input_shape=None, fold_batchnorm=True, dtype=np.float64):
    """Load an ONNX model as a :class:`nets.Graph`.

    Parameters
    ----------
    path : str, os.PathLike or onnx.ModelProto
        The ``.onnx`` file (or an already loaded model).
    input_shape : tuple of int, optional
        Per-sample input shape, ``(C, H, W)`` or ``(K,)``, needed only when the file leaves it
        dynamic (a static shape is read from the file).
    fold_batchnorm : bool, default=True
        Fold ``BatchNormalization`` into the dense/convolution layer that feeds only it. Other
        batch norms (or every one, when False) are kept as ``BatchNorm1D/2D``.
    dtype : numpy dtype, default=np.float64
        Dtype of the imported weights (float32 files are widened so that LRP runs in float64).

    Returns
    -------
    model : nets.Graph
        Takes the input layout of the file (NCHW images, vectors, or NHWC that the graph
        transposes); ``model.input_shape`` is the per-sample input shape. Node names are the ONNX
        node names. A final ``Softmax`` is kept as :class:`nets.Softmax`.

    Raises
    ------
    ImportError
        When the optional ``onnx`` package is missing.
    ValueError
        For an invalid file or an unsupported operator or attribute; the message names the node
        and its operator.

    Examples
    --------
    >>> import numpy as np, onnx, nets
    >>> from onnx import helper, numpy_helper, TensorProto
    >>> W = numpy_helper.from_array(np.array([[1.0, -1.0]], dtype=np.float32), "W")
    >>> g = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], "g",
    ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
    ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], [W])
    >>> model = nets.load_onnx(helper.make_model(g))
    >>> model(np.array([[3.0, 1.0]])).tolist()
    [[2.0]]
    >>> model.input_shape
    (2,)
    """
    onnx = import_onnx()
    if isinstance(path, onnx.ModelProto):
        model, source = path, "the ONNX model"
    else:
        source = os.fspath(path)
        if not os.path.exists(source):
            raise FileNotFoundError(f"no such ONNX file: {source}")
        try:
            model = onnx.load(source)
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise ValueError(f"{source}: not a valid ONNX file ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise ValueError(f"{source}: the ONNX graph has no nodes")
    try:
        return _Walker(onnx, model, input_shape, fold_batchnorm).build(dtype)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    except (TypeError, KeyError, IndexError) as exc:  # a malformed node: an input or attribute missing
        raise ValueError(f"{source}: malformed ONNX graph ({type(exc).__name__}: {exc})") from None


__all__ = ["load_onnx", "SUPPORTED_OPERATORS"]
