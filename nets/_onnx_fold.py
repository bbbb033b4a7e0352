"""ONNX import helpers: reading nodes, evaluating constant sub-graphs once at load, and the
attribute-or-input forms that changed between opsets 7 and 21."""

from __future__ import annotations

import numpy as np

_MISSING_ONNX = (
    "nets.load_onnx needs the optional dependency 'onnx'; install it with "
    "`pip install onnx` or `pip install 'bowlrp[onnx]'`"
)


def import_onnx():
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401
        import onnx.reference  # noqa: F401
    except ImportError:
        raise ImportError(_MISSING_ONNX) from None
    return onnx


class NodeRef:
    """One ONNX node: its proto, operator, a name for error messages, and its attributes."""

    def __init__(self, onnx, proto, index):
        self.proto = proto
        self.op = proto.op_type
        self.name = proto.name or f"{proto.op_type}_{index}"
        self.attrs = {}
        for a in proto.attribute:
            value = onnx.helper.get_attribute_value(a)
            self.attrs[a.name] = value.decode("utf-8") if isinstance(value, bytes) else value
        self.output = proto.output[0] if proto.output else ""

    def __str__(self):
        return f"node {self.name!r} ({self.op})"


class Evaluator:
    """Runs single nodes with ``onnx.reference`` at the model's opset: constant folding, and the
    ``Shape`` of a data tensor (whose per-sample shape is known; the batch is the file's static
    batch size, else 1)."""

    def __init__(self, onnx, opset_imports):
        self.onnx = onnx
        self.opset_imports = list(opset_imports)

    def run(self, proto, values):
        helper = self.onnx.helper
        names = [n for n in proto.input if n]
        inputs = [
            helper.make_tensor_value_info(
                n, helper.np_dtype_to_tensor_dtype(values[n].dtype), values[n].shape
            )
            for n in dict.fromkeys(names)
        ]
        outputs = [helper.make_empty_tensor_value_info(n) for n in proto.output if n]
        model = helper.make_model(
            helper.make_graph([proto], "fold", inputs, outputs), opset_imports=self.opset_imports
        )
        model.ir_version = min(model.ir_version, 10)
        from onnx.reference import ReferenceEvaluator

        results = ReferenceEvaluator(model).run(None, {n: values[n] for n in dict.fromkeys(names)})
        return dict(zip([n for n in proto.output if n], (np.asarray(r) for r in results)))


def opset_of(model):
    """The default-domain opset the model was written for."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def attr_or_input(walker, node, index, attr, since, default=None):
    """A parameter given as attribute ``attr`` before opset ``since`` and as (constant, optional)
    input number ``index`` from it (Pad pads, Clip min/max, Squeeze axes, ...)."""
    if walker.opset >= since:
        inputs = node.proto.input
        if index < len(inputs) and inputs[index]:
            return walker.const(node, inputs[index], f"input {index} ({attr})")
        return default
    return node.attrs.get(attr, default)


def same_padding(size, k, s, mode):
    """(begin, end) padding of ONNX's auto_pad SAME_UPPER / SAME_LOWER for one axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    if mode == "SAME_UPPER":
        return total // 2, total - total // 2
    return total - total // 2, total // 2


def spatial_pads(node, shape, kernel, strides, dilations=(1, 1)):
    """(top, left, bottom, right) padding of a 2-D Conv/pool from ``pads`` or ``auto_pad``."""
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = [int(p) for p in node.attrs.get("pads", [0, 0, 0, 0])]
        if len(pads) != 4:
            raise ValueError(f"{node}: pads={pads} is not 2-D padding")
        return tuple(pads)
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [
            same_padding(shape[1 + a], (kernel[a] - 1) * dilations[a] + 1, strides[a], auto_pad)
            for a in range(2)
        ]
        return (pairs[0][0], pairs[1][0], pairs[0][1], pairs[1][1])
    raise ValueError(f"{node}: unknown auto_pad={auto_pad!r}")
