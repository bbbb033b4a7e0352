"""Import a feed-forward ONNX graph as a :class:`nets.Sequential`.

Only chains are accepted: after constant folding, every operator that touches the data must read
the output of the operator before it, and nothing else may read that output (``Shape`` aside).
That is what LRP on a ``Sequential`` can explain; a residual ``Add`` or a ``Concat`` is refused with
an error that names the node.

Constant sub-graphs (``Constant`` nodes, initializers, a ``Reshape`` of a weight, the
``Shape -> Gather -> Unsqueeze -> Concat`` chain that older PyTorch exports build for
``x.view(x.size(0), -1)``) are evaluated once with ``onnx.reference`` at the opset of the model.
The batch size is taken as 1 when a shape is computed, so a ``Reshape`` is accepted when it
flattens one sample (or leaves it unchanged); real-world files often hard-code ``[1, K]``.

Biases written as a separate ``Add`` (``MatMul + Add``, or ``Conv`` followed by an ``Add`` of a
(C, 1, 1) constant, as in the ONNX model zoo's MNIST) and ``BatchNormalization`` right after a dense
or convolution layer are folded into that layer, which preserves its outputs exactly up to
rounding (w' = w γ/√(σ²+ε), b' = (b − μ) γ/√(σ²+ε) + β).
"""

from __future__ import annotations

import os

import numpy as np

_MISSING_ONNX = (
    "nets.load_onnx needs the optional dependency 'onnx'; install it with "
    "`pip install onnx` or `pip install 'bowlrp[onnx]'`"
)

SUPPORTED_OPERATORS = (
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Conv",
    "Relu",
    "LeakyRelu",
    "Tanh",
    "Sigmoid",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Squeeze",
    "BatchNormalization",
    "Dropout",
    "Identity",
    "Cast",
    "Softmax",
)


# why a few operators that real files contain are refused (appended to the error message)
_HINTS = {
    "Transpose": " (graphs exported from TensorFlow/Keras often take NHWC input and transpose it; "
    "nets layers are NCHW, so export the model with NCHW input)",
    "QuantizeLinear": " (quantized models are not supported; use the float model)",
    "DequantizeLinear": " (quantized models are not supported; use the float model)",
    "QLinearConv": " (quantized models are not supported; use the float model)",
    "Concat": " (several branches: nets explains chains of layers only)",
}


def _import_onnx():
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401
        import onnx.reference  # noqa: F401
    except ImportError:
        raise ImportError(_MISSING_ONNX) from None
    return onnx


class _Node:
    """Error-message helper: a node's name and operator."""

    def __init__(self, node, index):
        self.proto = node
        self.op = node.op_type
        self.name = node.name or f"{node.op_type}_{index}"

    def __str__(self):
        return f"node {self.name!r} ({self.op})"


def _attributes(onnx, node):
    attrs = {}
    for a in node.attribute:
        value = onnx.helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        attrs[a.name] = value
    return attrs


class _Evaluator:
    """Runs single nodes with onnx.reference at the model's opset (constant folding, shapes)."""

    def __init__(self, onnx, opset_imports):
        self.onnx = onnx
        self.opset_imports = list(opset_imports)

    def run(self, node, values):
        helper = self.onnx.helper
        names = [n for n in node.input if n]
        inputs = [
            helper.make_tensor_value_info(
                n, helper.np_dtype_to_tensor_dtype(values[n].dtype), values[n].shape
            )
            for n in names
        ]
        outputs = [helper.make_empty_tensor_value_info(n) for n in node.output if n]
        graph = helper.make_graph([node], "fold", inputs, outputs)
        model = helper.make_model(graph, opset_imports=self.opset_imports)
        model.ir_version = min(model.ir_version, 10)
        from onnx.reference import ReferenceEvaluator

        results = ReferenceEvaluator(model).run(None, {n: values[n] for n in names})
        return dict(zip([n for n in node.output if n], results))


# ----------------------------------------------------------------------------------------------
# layer specs: plain dicts, folded in place, turned into nets layers at the end
# ----------------------------------------------------------------------------------------------


def _conv_out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _same_padding(size, k, s, mode):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    if mode == "SAME_UPPER":
        return total // 2, total - total // 2
    return total - total // 2, total // 2


def _spatial_padding(node, attrs, shape, kernel, strides):
    """Symmetric (ph, pw) padding from ``pads``/``auto_pad``, or a clear error."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            raise ValueError(f"{node}: pads={pads} is not 2-D padding")
        begin, end = pads[:2], pads[2:]
    elif auto_pad == "VALID":
        begin, end = [0, 0], [0, 0]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [_same_padding(shape[1 + a], kernel[a], strides[a], auto_pad) for a in range(2)]
        begin, end = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        raise ValueError(f"{node}: unknown auto_pad={auto_pad!r}")
    if list(begin) != list(end):
        raise ValueError(
            f"{node}: asymmetric padding (begin {list(begin)}, end {list(end)}) is not supported; "
            "nets layers pad both sides equally"
        )
    return int(begin[0]), int(begin[1])


def _check_2d_image(node, shape):
    if len(shape) != 3:
        raise ValueError(f"{node}: expects an image (N, C, H, W) but its input has per-sample shape {shape}")


def _ones_or_error(node, attrs, key):
    values = list(attrs.get(key, [1, 1]))
    if any(v != 1 for v in values):
        raise ValueError(f"{node}: {key}={values} is not supported (only {key} of 1)")


class _Builder:
    def __init__(self, onnx, model, input_shape, fold_batchnorm, dtype):
        self.onnx = onnx
        self.model = model
        self.graph = model.graph
        self.fold_batchnorm = fold_batchnorm
        self.dtype = np.dtype(dtype)
        self.eval = _Evaluator(onnx, model.opset_import)
        self.consts: dict[str, np.ndarray] = {}
        self.specs: list[dict] = []
        self.bias_foldable = False  # the last spec is Dense/Conv2D and only no-ops followed it
        self._read_constants()
        self.current, self.shape = self._read_input(input_shape)
        self.consumed: set[str] = set()  # chain tensors already read by a data node
        self.chain_shapes = {self.current: self.shape}  # per-sample shape of every data tensor

    # -- graph inputs and constants ------------------------------------------------------------
    def _read_constants(self):
        for init in self.graph.initializer:
            self.consts[init.name] = self.onnx.numpy_helper.to_array(init)

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
        if input_shape is not None:
            shape = tuple(int(v) for v in input_shape)
            if declared is not None:
                if len(declared) != len(shape) + 1 or any(
                    d is not None and d != s for d, s in zip(declared[1:], shape)
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
                "and images (C, H, W)"
            )
        return value.name, shape

    # -- the walk -------------------------------------------------------------------------------
    def build(self):
        for index, proto in enumerate(self.graph.node):
            node = _Node(proto, index)
            if proto.domain not in ("", "ai.onnx"):
                raise ValueError(f"{node}: operator from domain {proto.domain!r} is not supported")
            inputs = [n for n in proto.input if n]
            chain_inputs = [n for n in inputs if n not in self.consts]
            if not chain_inputs:
                self._fold_constant(node, inputs)
                continue
            if proto.op_type in ("Shape", "Size") and chain_inputs[0] in self.chain_shapes:
                # depends only on the shape of the data, which is known (batch taken as 1)
                name = chain_inputs[0]
                values = {name: np.zeros((1,) + self.chain_shapes[name], dtype=np.float32)}
                self.consts.update(self.eval.run(proto, values))
                continue
            for name in chain_inputs:
                if name != self.current:
                    if name in self.consumed:
                        raise ValueError(
                            f"graph is not a chain: {node} reads {name!r}, which another node already read"
                        )
                    raise ValueError(
                        f"graph is not a chain: {node} reads {name!r}, which is neither a constant nor "
                        "the output of the previous layer"
                    )
            if len(chain_inputs) > 1:
                raise ValueError(f"graph is not a chain: {node} combines several data tensors")
            self.consumed.add(self.current)
            handler = getattr(self, f"_op_{proto.op_type}", None)
            if handler is None:
                raise ValueError(
                    f"{node}: operator {proto.op_type!r} is not supported{_HINTS.get(proto.op_type, '')}; "
                    f"supported operators are {', '.join(SUPPORTED_OPERATORS)}"
                )
            handler(node, _attributes(self.onnx, proto), inputs)
            self.current = proto.output[0]
            self.chain_shapes[self.current] = self.shape
        outputs = [o.name for o in self.graph.output]
        if outputs != [self.current]:
            raise ValueError(
                f"graph is not a chain: its outputs are {outputs}, "
                f"but the chain of layers ends in {self.current!r}"
            )
        for spec in self.specs[:-1]:
            if spec["type"] == "Softmax":
                raise ValueError(
                    f"node {spec['name']!r} (Softmax) is not the last layer; "
                    "LRP explains the scores before it"
                )
        return self.specs

    def _fold_constant(self, node, inputs):
        try:
            self.consts.update(self.eval.run(node.proto, {n: self.consts[n] for n in inputs}))
        except Exception as exc:  # the reference evaluator raises many kinds
            raise ValueError(f"{node}: cannot evaluate this constant expression ({exc})") from None

    def _const(self, node, name, what):
        if name not in self.consts:
            raise ValueError(f"{node}: the {what} must be a constant (initializer or Constant node)")
        return np.asarray(self.consts[name])

    def _add(self, node, spec, shape, foldable):
        spec["name"] = node.name
        self.specs.append(spec)
        self.shape = tuple(int(s) for s in shape)
        self.bias_foldable = foldable

    # -- operators -----------------------------------------------------------------------------
    def _op_Gemm(self, node, attrs, inputs):
        if inputs[0] != self.current:
            raise ValueError(f"{node}: the data must be the first input A (Y = A B + C)")
        if attrs.get("transA", 0):
            raise ValueError(f"{node}: transA=1 would transpose the batch axis; not supported")
        if len(self.shape) != 1:
            raise ValueError(
                f"{node}: expects a vector per sample but receives shape {self.shape}; flatten first"
            )
        B = self._const(node, inputs[1], "weight B").astype(np.float64)
        if B.ndim != 2:
            raise ValueError(f"{node}: weight B must be 2-D, got shape {B.shape}")
        if attrs.get("transB", 0):
            B = B.T
        K, M = B.shape
        if K != self.shape[0]:
            raise ValueError(f"{node}: weight expects {K} inputs but receives {self.shape[0]}")
        W = float(attrs.get("alpha", 1.0)) * B.T
        b = np.zeros(M)
        if len(inputs) > 2:
            C = self._const(node, inputs[2], "bias C").astype(np.float64)
            b = float(attrs.get("beta", 1.0)) * self._per_output_bias(node, C, M)
        self._add(node, {"type": "Dense", "W": W, "b": b}, (M,), True)

    def _per_output_bias(self, node, C, M):
        if C.size == 1:
            return np.full(M, C.ravel()[0])
        if C.shape[-1] == M and C.size == M:
            return C.reshape(M)
        raise ValueError(f"{node}: bias of shape {C.shape} is not one value per output ({M} outputs)")

    def _op_MatMul(self, node, attrs, inputs):
        if inputs[0] != self.current:
            raise ValueError(f"{node}: only data @ constant is supported (the data is the right operand)")
        if len(self.shape) != 1:
            raise ValueError(
                f"{node}: expects a vector per sample but receives shape {self.shape}; flatten first"
            )
        B = self._const(node, inputs[1], "weight").astype(np.float64)
        if B.ndim != 2 or B.shape[0] != self.shape[0]:
            raise ValueError(f"{node}: weight of shape {B.shape} does not fit {self.shape[0]} inputs")
        self._add(node, {"type": "Dense", "W": B.T.copy(), "b": np.zeros(B.shape[1])}, (B.shape[1],), True)

    def _op_Add(self, node, attrs, inputs, sign=1.0):
        const_name = inputs[1] if inputs[0] == self.current else inputs[0]
        if sign < 0 and inputs[0] != self.current:
            raise ValueError(f"{node}: constant - data is not supported")
        c = self._const(node, const_name, "added operand").astype(np.float64)
        if not (self.bias_foldable and self.specs):
            raise ValueError(
                f"{node}: adding a constant is only supported as the bias of the Gemm, MatMul or Conv "
                "right before it"
            )
        spec = self.specs[-1]
        try:
            full = np.broadcast_to(c, (1,) + self.shape)[0]
        except ValueError:
            raise ValueError(
                f"{node}: constant of shape {c.shape} does not broadcast to {self.shape}"
            ) from None
        if np.broadcast_shapes(c.shape, (1,) + self.shape) != (1,) + self.shape:
            raise ValueError(f"{node}: constant of shape {c.shape} would change the shape {self.shape}")
        if spec["type"] == "Conv2D":
            per_channel = full[:, :1, :1]
            if not np.array_equal(np.broadcast_to(per_channel, full.shape), full):
                raise ValueError(
                    f"{node}: the added constant varies over space; only a per-channel bias folds"
                )
            full = per_channel[:, 0, 0]
        spec["b"] = spec["b"] + sign * full
        self.specs[-1] = spec
        # the chain tensor is renamed; the layer is unchanged otherwise
        self.bias_foldable = True

    def _op_Sub(self, node, attrs, inputs):
        self._op_Add(node, attrs, inputs, sign=-1.0)

    def _op_Conv(self, node, attrs, inputs):
        if inputs[0] != self.current:
            raise ValueError(f"{node}: the data must be the first input X")
        _check_2d_image(node, self.shape)
        W = self._const(node, inputs[1], "weight W").astype(np.float64)
        if W.ndim != 4:
            raise ValueError(f"{node}: only 2-D convolutions are supported (weight shape {W.shape})")
        group = int(attrs.get("group", 1))
        if group != 1:
            raise ValueError(f"{node}: group={group} (grouped or depthwise convolution) is not supported")
        _ones_or_error(node, attrs, "dilations")
        if W.shape[1] != self.shape[0]:
            raise ValueError(f"{node}: weight expects {W.shape[1]} channels but receives {self.shape[0]}")
        kernel = tuple(W.shape[2:])
        if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != kernel:
            raise ValueError(f"{node}: kernel_shape {attrs['kernel_shape']} disagrees with weight {W.shape}")
        strides = tuple(int(s) for s in attrs.get("strides", [1, 1]))
        pad = _spatial_padding(node, attrs, self.shape, kernel, strides)
        b = np.zeros(W.shape[0])
        if len(inputs) > 2:
            b = self._const(node, inputs[2], "bias B").astype(np.float64).reshape(-1)
        out = (W.shape[0],) + tuple(
            _conv_out(self.shape[1 + a], kernel[a], strides[a], pad[a]) for a in range(2)
        )
        if min(out[1:]) < 1:
            raise ValueError(f"{node}: the input {self.shape} is smaller than the kernel {kernel}")
        self._add(node, {"type": "Conv2D", "W": W, "b": b, "stride": strides, "padding": pad}, out, True)

    def _activation(self, node, spec):
        self._add(node, spec, self.shape, False)

    def _op_Relu(self, node, attrs, inputs):
        self._activation(node, {"type": "ReLU"})

    def _op_LeakyRelu(self, node, attrs, inputs):
        self._activation(node, {"type": "LeakyReLU", "negative_slope": float(attrs.get("alpha", 0.01))})

    def _op_Tanh(self, node, attrs, inputs):
        self._activation(node, {"type": "Tanh"})

    def _op_Sigmoid(self, node, attrs, inputs):
        self._activation(node, {"type": "Sigmoid"})

    def _pool(self, node, attrs, kind):
        _check_2d_image(node, self.shape)
        kernel = tuple(int(k) for k in attrs["kernel_shape"])
        if len(kernel) != 2:
            raise ValueError(f"{node}: only 2-D pooling is supported (kernel_shape {kernel})")
        strides = tuple(int(s) for s in attrs.get("strides", [1, 1]))
        _ones_or_error(node, attrs, "dilations")
        pad = _spatial_padding(node, attrs, self.shape, kernel, strides)
        out = tuple(_conv_out(self.shape[1 + a], kernel[a], strides[a], pad[a]) for a in range(2))
        if attrs.get("ceil_mode", 0):
            ceil_out = tuple(
                -(-(self.shape[1 + a] + 2 * pad[a] - kernel[a]) // strides[a]) + 1 for a in range(2)
            )
            if ceil_out != out:
                raise ValueError(f"{node}: ceil_mode=1 changes the output size here; not supported")
        if min(out) < 1:
            raise ValueError(f"{node}: the input {self.shape} is smaller than the window {kernel}")
        spec = {"type": kind, "kernel_size": kernel, "stride": strides, "padding": pad}
        if kind == "AvgPool2D":
            spec["count_include_pad"] = bool(attrs.get("count_include_pad", 0))  # ONNX default 0
        self._add(node, spec, (self.shape[0],) + out, False)

    def _op_MaxPool(self, node, attrs, inputs):
        if len([o for o in node.proto.output if o]) > 1:
            raise ValueError(f"{node}: the Indices output of MaxPool is not supported")
        self._pool(node, attrs, "MaxPool2D")

    def _op_AveragePool(self, node, attrs, inputs):
        self._pool(node, attrs, "AvgPool2D")

    def _op_GlobalAveragePool(self, node, attrs, inputs):
        _check_2d_image(node, self.shape)
        # ONNX keeps (C, 1, 1); nets.GlobalAvgPool2D returns (C,). _merge_global_pool decides later
        # whether a following flatten lets us use GlobalAvgPool2D or an AvgPool2D over the whole map
        spec = {"type": "GlobalAvgPool2D", "map_size": self.shape[1:]}
        self._add(node, spec, (self.shape[0], 1, 1), False)

    def _flatten_like(self, node, out_shape):
        """Flatten / Reshape / Squeeze: accepted when they flatten one sample or change nothing."""
        per_sample = tuple(out_shape[1:])
        if out_shape[0] != 1:
            raise ValueError(
                f"{node}: reshapes across the batch axis (output shape {tuple(out_shape)} for batch 1)"
            )
        if per_sample == self.shape:
            return  # no-op
        if per_sample == (int(np.prod(self.shape)),):
            if len(self.shape) == 1:
                return
            self._add(node, {"type": "Flatten"}, per_sample, False)
            return
        raise ValueError(
            f"{node}: reshape of per-sample shape {self.shape} to {per_sample} "
            "is not a flatten; not supported"
        )

    def _dummy_shape(self, node, inputs):
        values = {self.current: np.zeros((1,) + self.shape, dtype=np.float32)}
        for n in inputs:
            if n != self.current:
                values[n] = self.consts[n]
        try:
            return self.eval.run(node.proto, values)[node.proto.output[0]].shape
        except Exception as exc:
            raise ValueError(f"{node}: cannot evaluate this reshape ({exc})") from None

    def _op_Flatten(self, node, attrs, inputs):
        axis = int(attrs.get("axis", 1))
        if axis != 1:
            raise ValueError(f"{node}: Flatten with axis={axis} is not supported (only axis=1)")
        self._flatten_like(node, (1, int(np.prod(self.shape))))

    def _op_Reshape(self, node, attrs, inputs):
        if inputs[0] != self.current:
            raise ValueError(f"{node}: the data must be the first input")
        self._flatten_like(node, self._dummy_shape(node, inputs))

    def _op_Squeeze(self, node, attrs, inputs):
        self._flatten_like(node, self._dummy_shape(node, inputs))

    def _op_BatchNormalization(self, node, attrs, inputs):
        if attrs.get("training_mode", 0):
            raise ValueError(f"{node}: training_mode=1 is not supported (export the model in eval mode)")
        if len([o for o in node.proto.output if o]) > 1:
            raise ValueError(f"{node}: running-statistics outputs are not supported (training graph?)")
        gamma, beta, mean, var = (
            self._const(node, inputs[i], what).astype(np.float64).reshape(-1)
            for i, what in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance"))
        )
        eps = float(attrs.get("epsilon", 1e-5))
        C = self.shape[0]
        if not all(a.size == C for a in (gamma, beta, mean, var)):
            raise ValueError(f"{node}: parameters do not have one value per channel ({C})")
        if self.fold_batchnorm and self.bias_foldable and self.specs:
            spec = self.specs[-1]
            scale = gamma / np.sqrt(var + eps)
            spec["W"] = spec["W"] * scale.reshape((-1,) + (1,) * (spec["W"].ndim - 1))
            spec["b"] = (spec["b"] - mean) * scale + beta
            return
        kind = "BatchNorm1D" if len(self.shape) == 1 else "BatchNorm2D"
        spec = {"type": kind, "gamma": gamma, "beta": beta, "mean": mean, "var": var, "eps": eps}
        self._add(node, spec, self.shape, False)

    def _op_Dropout(self, node, attrs, inputs):
        # inference: identity (an optional mask output is never a constant, so a reader of it fails
        # with the "not a chain" error)
        pass

    def _op_Identity(self, node, attrs, inputs):
        pass

    def _op_Cast(self, node, attrs, inputs):
        # nets computes in float32/float64 anyway: a cast to a float type changes nothing we keep
        tp = self.onnx.TensorProto
        if attrs.get("to") not in (tp.FLOAT, tp.DOUBLE, tp.FLOAT16, tp.BFLOAT16):
            raise ValueError(f"{node}: only casts to a floating-point type are supported")

    def _op_Softmax(self, node, attrs, inputs):
        if len(self.shape) != 1:
            raise ValueError(f"{node}: Softmax over an image is not supported")
        axis = int(attrs.get("axis", -1 if self._opset() >= 13 else 1))
        if axis not in (1, -1):
            raise ValueError(f"{node}: Softmax over axis {axis} is not supported")
        self._add(node, {"type": "Softmax"}, self.shape, False)

    def _opset(self):
        for imp in self.model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                return int(imp.version)
        return 1


def _merge_global_pool(specs):
    """GlobalAveragePool + flatten -> GlobalAvgPool2D; a lone one -> AvgPool2D over the whole map."""
    merged = []
    i = 0
    while i < len(specs):
        spec = specs[i]
        if spec["type"] == "GlobalAvgPool2D":
            if i + 1 < len(specs) and specs[i + 1]["type"] == "Flatten":
                merged.append({"type": "GlobalAvgPool2D", "name": spec["name"]})
                i += 2
                continue
            k = tuple(spec["map_size"])
            spec = {
                "type": "AvgPool2D",
                "kernel_size": k,
                "stride": k,
                "padding": (0, 0),
                "name": spec["name"],
            }
        merged.append(spec)
        i += 1
    return merged


def _to_layers(specs, dtype):
    from . import layers as L

    out, names, seen = [], [], {}
    for spec in _merge_global_pool(specs):
        try:
            layer = _make_layer(L, spec, dtype)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"node {spec['name']!r}: cannot build {spec['type']}: {exc}") from None
        name = spec["name"]
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 0
        out.append(layer)
        names.append(name)
    return out, names


def _make_layer(L, spec, dtype):
    """One nets layer from a spec (arrays cast to ``dtype``)."""
    kind = spec["type"]
    a = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in spec.items() if isinstance(v, np.ndarray)}
    if kind == "Dense":
        return L.Dense(a["W"], a["b"])
    if kind == "Conv2D":
        return L.Conv2D(a["W"], a["b"], stride=spec["stride"], padding=spec["padding"])
    if kind == "MaxPool2D":
        return L.MaxPool2D(spec["kernel_size"], stride=spec["stride"], padding=spec["padding"])
    if kind == "AvgPool2D":
        return L.AvgPool2D(
            spec["kernel_size"],
            stride=spec["stride"],
            padding=spec["padding"],
            count_include_pad=spec.get("count_include_pad", True),
        )
    if kind == "LeakyReLU":
        return L.LeakyReLU(negative_slope=spec["negative_slope"])
    if kind in ("BatchNorm1D", "BatchNorm2D"):
        return getattr(L, kind)(a["gamma"], a["beta"], a["mean"], a["var"], eps=spec["eps"])
    # parameter-free layers: GlobalAvgPool2D, Flatten, ReLU, Tanh, Sigmoid, Softmax
    return getattr(L, kind)()


def load_onnx(path, input_shape=None, fold_batchnorm=True, dtype=np.float64):
    """Load a feed-forward ONNX model as a :class:`nets.Sequential`.

    Parameters
    ----------
    path : str, os.PathLike or onnx.ModelProto
        The ``.onnx`` file (or an already loaded model).
    input_shape : tuple of int, optional
        Per-sample input shape, ``(C, H, W)`` or ``(K,)``, when the file leaves it dynamic.
    fold_batchnorm : bool, default=True
        Fold ``BatchNormalization`` into the dense/convolution layer before it. Batch norm that
        does not follow such a layer (or every one, when False) is kept as ``BatchNorm1D/2D``,
        for the LRP canonizer to handle.
    dtype : numpy dtype, default=np.float64
        Dtype of the imported weights (float32 files are widened so that LRP runs in float64).

    Returns
    -------
    model : nets.Sequential
        Takes NCHW images (or vectors), as ONNX does; a final ``Softmax`` is kept as
        :class:`nets.Softmax`. Layer names are the ONNX node names.

    Raises
    ------
    ImportError
        When the optional ``onnx`` package is missing.
    ValueError
        For an invalid file, a graph that is not a chain, or an unsupported operator or attribute;
        the message names the node and its operator.

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
    """
    onnx = _import_onnx()
    if isinstance(path, onnx.ModelProto):
        model = path
        source = "the ONNX model"
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
        specs = _Builder(onnx, model, input_shape, fold_batchnorm, dtype).build()
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    if not specs:
        raise ValueError(f"{source}: the ONNX graph holds no layer that nets can represent")
    from .model import Sequential

    layers, names = _to_layers(specs, dtype)
    return Sequential(layers, names=names)


__all__ = ["load_onnx", "SUPPORTED_OPERATORS"]
