"""The ONNX operator table: one function per operator that touches the data, turning the node
into nets nodes through the walker of :mod:`nets.onnx_import`.

Every handler is called as ``handler(walker, node)`` once the walker knows that at least one input
of ``node`` is data (nodes on constants alone were evaluated at load). Shapes are per sample (the
batch axis left out); ONNX axes count the batch axis, so ONNX axis ``a`` is per-sample axis ``a - 1``.
"""

from __future__ import annotations

import numpy as np

from ._graph_builder import ceil_mode_extra
from ._onnx_fold import attr_or_input, spatial_pads


def _nets():
    import nets

    return nets


def _data_input(w, node, position=0, what="the data"):
    key = node.proto.input[position] if position < len(node.proto.input) else ""
    if not w.builder.is_data(key):
        raise ValueError(f"{node}: {what} must be input {position}")
    return key


def _image(w, node, key):
    shape = w.builder.shape(key)
    if len(shape) != 3:
        raise ValueError(f"{node}: expects an image (N, C, H, W) but its input has per-sample shape {shape}")
    return shape


def _vector(w, node, key):
    shape = w.builder.shape(key)
    if len(shape) != 1:
        raise ValueError(f"{node}: expects a vector per sample but receives shape {shape}; flatten first")
    return shape


def _pair_attr(node, key, default=(1, 1)):
    values = tuple(int(v) for v in node.attrs.get(key, default))
    if len(values) != 2:
        raise ValueError(f"{node}: {key}={list(values)} is not 2-D")
    return values


# -- linear layers ------------------------------------------------------------------------------
def _per_output_bias(node, C, M):
    if C.size == 1:
        return np.full(M, C.ravel()[0])
    if C.shape[-1] == M and C.size == M:
        return C.reshape(M)
    raise ValueError(f"{node}: bias of shape {C.shape} is not one value per output ({M} outputs)")


def gemm(w, node):
    x = _data_input(w, node, 0, "the data (A in Y = A B + C)")
    if node.attrs.get("transA", 0):
        raise ValueError(f"{node}: transA=1 would transpose the batch axis; not supported")
    (k,) = _vector(w, node, x)
    B = w.const(node, node.proto.input[1], "weight B")
    if B.ndim != 2:
        raise ValueError(f"{node}: weight B must be 2-D, got shape {B.shape}")
    if node.attrs.get("transB", 0):
        B = B.T
    if B.shape[0] != k:
        raise ValueError(f"{node}: weight expects {B.shape[0]} inputs but receives {k}")
    W = float(node.attrs.get("alpha", 1.0)) * B.T
    b = np.zeros(W.shape[0])
    if len(node.proto.input) > 2 and node.proto.input[2]:
        C = w.const(node, node.proto.input[2], "bias C")
        b = float(node.attrs.get("beta", 1.0)) * _per_output_bias(node, C, W.shape[0])
    w.add(node, _nets().Dense(W, b), [x])


def matmul(w, node):
    x = _data_input(w, node, 0, "the data (only data @ constant is supported)")
    (k,) = _vector(w, node, x)
    W = w.const(node, node.proto.input[1], "weight")
    if W.ndim != 2 or W.shape[0] != k:
        raise ValueError(f"{node}: weight of shape {W.shape} does not take {k} inputs")
    w.add(node, _nets().Dense(W.T, np.zeros(W.shape[1])), [x])


def conv(w, node):
    nets = _nets()
    x = _data_input(w, node)
    shape = _image(w, node, x)
    W = w.const(node, node.proto.input[1], "weight W")
    if W.ndim != 4:
        raise ValueError(f"{node}: only 2-D convolutions are supported (weight shape {W.shape})")
    groups = int(node.attrs.get("group", 1))
    if W.shape[1] * groups != shape[0]:
        raise ValueError(
            f"{node}: weight expects {W.shape[1]} x {groups} group(s) channels but receives {shape[0]}"
        )
    kernel = tuple(W.shape[2:])
    if "kernel_shape" in node.attrs and tuple(node.attrs["kernel_shape"]) != kernel:
        raise ValueError(f"{node}: kernel_shape {node.attrs['kernel_shape']} disagrees with weight {W.shape}")
    strides, dilations = _pair_attr(node, "strides"), _pair_attr(node, "dilations")
    pads = spatial_pads(node, shape, kernel, strides, dilations)
    b = None
    if len(node.proto.input) > 2 and node.proto.input[2]:
        b = w.const(node, node.proto.input[2], "bias B").reshape(-1)
    x, padding = w.pad_if_asymmetric(node, x, pads)
    layer = nets.Conv2D(W, b, stride=strides, padding=padding, groups=groups, dilation=dilations)
    w.add(node, layer, [x])


def batch_normalization(w, node):
    nets = _nets()
    x = _data_input(w, node)
    if node.attrs.get("training_mode", 0):
        raise ValueError(f"{node}: training_mode=1 is not supported (export the model in eval mode)")
    if len([o for o in node.proto.output if o]) > 1:
        raise ValueError(f"{node}: running-statistics outputs are not supported (training graph?)")
    if not node.attrs.get("spatial", 1):
        raise ValueError(f"{node}: spatial=0 (per-position statistics) is not supported")
    gamma, beta, mean, var = (
        w.const(node, node.proto.input[i], what).reshape(-1)
        for i, what in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance"))
    )
    eps = float(node.attrs.get("epsilon", 1e-5))
    shape = w.builder.shape(x)
    if not all(a.size == shape[0] for a in (gamma, beta, mean, var)):
        raise ValueError(f"{node}: parameters do not have one value per channel ({shape[0]})")
    if w.fold_into_linear(node, x, gamma, beta, mean, var, eps):
        return
    if len(shape) not in (1, 3):
        raise ValueError(f"{node}: batch norm over per-sample shape {shape} is not supported")
    kind = nets.BatchNorm1D if len(shape) == 1 else nets.BatchNorm2D
    w.add(node, kind(gamma, beta, mean, var, eps=eps), [x])


# -- pooling ------------------------------------------------------------------------------------
def _pool(w, node, kind):
    nets = _nets()
    x = _data_input(w, node)
    shape = _image(w, node, x)
    kernel = _pair_attr(node, "kernel_shape", ())
    strides = _pair_attr(node, "strides")
    if _pair_attr(node, "dilations") != (1, 1):
        raise ValueError(f"{node}: dilations={list(node.attrs['dilations'])} is not supported for pooling")
    top, left, bottom, right = spatial_pads(node, shape, kernel, strides)
    if node.attrs.get("ceil_mode", 0):
        # ceil mode adds windows that hang over the end: the extra end padding they need
        extra = [
            ceil_mode_extra(shape[1 + a], kernel[a], strides[a], begin, end)
            for a, (begin, end) in enumerate(((top, bottom), (left, right)))
        ]
        if any(extra) and kind == "AvgPool2D":
            raise ValueError(f"{node}: ceil_mode=1 changes the output size here; not supported for averages")
        bottom, right = bottom + extra[0], right + extra[1]
    if kind == "MaxPool2D":
        if len([o for o in node.proto.output if o]) > 1:
            raise ValueError(f"{node}: the Indices output of MaxPool is not supported")
        x, padding = w.pad_if_asymmetric(node, x, (top, left, bottom, right), pool=True)
        layer = nets.MaxPool2D(kernel, stride=strides, padding=padding)
    else:
        include = bool(node.attrs.get("count_include_pad", 0))  # ONNX default 0
        if (top, left) != (bottom, right) and not include:
            windows = zip(kernel, strides, (top, left), (bottom, right), shape[1:])
            if all(k - b >= n and (n + b + e - k) // st == 0 for k, st, b, e, n in windows):
                # one window over the whole map (GoogLeNet's last pool as the zoo converted it):
                # padding that is never counted leaves the mean of the map
                _global_pool(w, node, nets.GlobalAvgPool2D())
                return
            raise ValueError(
                f"{node}: asymmetric padding with count_include_pad=0 is not supported "
                f"(begin {[top, left]}, end {[bottom, right]})"
            )
        x, padding = w.pad_if_asymmetric(node, x, (top, left, bottom, right))
        layer = nets.AvgPool2D(kernel, stride=strides, padding=padding, count_include_pad=include)
    w.add(node, layer, [x])


def max_pool(w, node):
    _pool(w, node, "MaxPool2D")


def average_pool(w, node):
    _pool(w, node, "AvgPool2D")


def _global_pool(w, node, layer):
    x = _data_input(w, node)
    channels = _image(w, node, x)[0]
    # nets' global pools return (N, C); ONNX keeps (N, C, 1, 1): a reshape the next flatten undoes
    w.add(node, layer, [x], key=node.output + "#pooled")
    w.builder.reshape(node.output, node.output + "#pooled", (channels, 1, 1), node.name + "_keepdims")


def global_average_pool(w, node):
    _global_pool(w, node, _nets().GlobalAvgPool2D())


def global_max_pool(w, node):
    _global_pool(w, node, _nets().GlobalMaxPool2D())


def lrn(w, node):
    x = _data_input(w, node)
    _image(w, node, x)
    a = node.attrs
    layer = _nets().LRN(
        int(a["size"]),
        alpha=float(a.get("alpha", 1e-4)),
        beta=float(a.get("beta", 0.75)),
        bias=float(a.get("bias", 1.0)),
    )
    w.add(node, layer, [x])


# -- elementwise --------------------------------------------------------------------------------
def _activation(layer):
    def handler(w, node):
        w.add(node, layer(node), [_data_input(w, node)])

    return handler


relu = _activation(lambda node: _nets().ReLU())
tanh = _activation(lambda node: _nets().Tanh())
sigmoid = _activation(lambda node: _nets().Sigmoid())
leaky_relu = _activation(lambda node: _nets().LeakyReLU(negative_slope=float(node.attrs.get("alpha", 0.01))))


def clip(w, node):
    x = _data_input(w, node)
    low = attr_or_input(w, node, 1, "min", 11)
    high = attr_or_input(w, node, 2, "max", 11)
    low = None if low is None else float(np.asarray(low).reshape(()))
    high = None if high is None else float(np.asarray(high).reshape(()))
    w.add(node, _nets().Clip(low, high), [x])


def softmax(w, node):
    x = _data_input(w, node)
    shape = w.builder.shape(x)
    axis = int(node.attrs.get("axis", -1 if w.opset >= 13 else 1))
    size = int(np.prod(shape))
    if len(shape) > 1 and max(shape) == size and (axis == 1 or shape[-1] == size):
        # a score map of shape (K, 1, 1) (SqueezeNet's head): the softmax over its K values
        w.builder.reshape(node.output + "#scores", x, (size,), node.name + "_flat")
        x = node.output + "#scores"
    elif len(shape) != 1:
        raise ValueError(f"{node}: Softmax over per-sample shape {shape} is not supported (only vectors)")
    elif axis not in (1, -1):
        raise ValueError(f"{node}: Softmax over axis {axis} is not supported")
    w.add(node, _nets().Softmax(), [x])


def identity(w, node):
    # Identity, and Dropout at inference (its optional mask output is never read as data)
    x = _data_input(w, node)
    if node.op == "Dropout" and w.opset >= 12 and len(node.proto.input) > 2 and node.proto.input[2]:
        if bool(np.asarray(w.const(node, node.proto.input[2], "training_mode")).reshape(())):
            raise ValueError(f"{node}: training_mode=True is not supported (export in eval mode)")
    w.builder.alias(node.output, x)


def cast(w, node):
    # nets computes in float32/float64 anyway: a cast to a float type changes nothing we keep
    tp = w.onnx.TensorProto
    if node.attrs.get("to") not in (tp.FLOAT, tp.DOUBLE, tp.FLOAT16, tp.BFLOAT16):
        raise ValueError(f"{node}: only casts to a floating-point type are supported")
    identity(w, node)


def add(w, node):
    """Add and Sum: data + data -> nets.Add; data + constant -> a bias or a Scale offset."""
    data = [k for k in node.proto.input if k and w.builder.is_data(k)]
    consts = [k for k in node.proto.input if k and not w.builder.is_data(k)]
    shapes = {w.builder.shape(k) for k in data}
    if len(shapes) > 1:
        raise ValueError(f"{node}: adds data tensors of different shapes {sorted(shapes)}")
    if len(data) > 1:
        offset = sum(w.const(node, k, "constant") for k in consts) if consts else None
        key = node.output + "#sum" if offset is not None else node.output
        w.add(node, _nets().Add(), data, key=key, shape=shapes.pop())
        if offset is None:
            return
        data = [key]
        consts_value = offset
    else:
        consts_value = sum(w.const(node, k, "constant") for k in consts)
    w.affine(node, data[0], 1.0, consts_value)


def sub(w, node):
    a, b = node.proto.input[:2]
    if w.builder.is_data(a) and w.builder.is_data(b):
        raise ValueError(f"{node}: subtracting one data tensor from another is not supported")
    if w.builder.is_data(a):
        w.affine(node, a, 1.0, -w.const(node, b, "constant"))
    else:
        w.affine(node, b, -1.0, w.const(node, a, "constant"))


def mul(w, node):
    a, b = node.proto.input[:2]
    if w.builder.is_data(a) and w.builder.is_data(b):
        raise ValueError(f"{node}: multiplying two data tensors is not supported")
    x, c = (a, b) if w.builder.is_data(a) else (b, a)
    w.affine(node, x, w.const(node, c, "constant"), 0.0)


def div(w, node):
    a, b = node.proto.input[:2]
    if not w.builder.is_data(a) or w.builder.is_data(b):
        raise ValueError(f"{node}: only data / constant is supported")
    c = w.const(node, b, "divisor")
    if np.any(c == 0):
        raise ValueError(f"{node}: division by a constant that contains 0")
    w.affine(node, a, 1.0 / c, 0.0)


# -- concatenation and shapes -------------------------------------------------------------------
def concat(w, node):
    keys = [k for k in node.proto.input if k]
    if not all(w.builder.is_data(k) for k in keys):
        raise ValueError(f"{node}: concatenating data with constants is not supported")
    shapes = [w.builder.shape(k) for k in keys]
    rank = len(shapes[0]) + 1
    axis = int(node.attrs["axis"])
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise ValueError(f"{node}: concatenation along the batch axis is not supported")
    rest = {s[: axis - 1] + s[axis:] for s in shapes}
    if len(rest) > 1 or any(len(s) != rank - 1 for s in shapes):
        raise ValueError(f"{node}: inputs of shapes {shapes} do not concatenate along axis {axis}")
    out = list(shapes[0])
    out[axis - 1] = sum(s[axis - 1] for s in shapes)
    w.add(node, _nets().Concat(axis=axis), keys, shape=tuple(out))


def reshape(w, node):
    # the batch is the file's own static batch size (a target exported with it hard-coded, as
    # torch.onnx.export writes x.view(x.size(0), -1) for a fixed input), else 1
    x = _data_input(w, node)
    full = (w.batch,) + w.builder.shape(x)
    target = [int(t) for t in w.const(node, node.proto.input[1], "target shape").reshape(-1)]
    if not node.attrs.get("allowzero", 0):
        target = [full[i] if t == 0 and i < len(full) else t for i, t in enumerate(target)]
    try:
        out = np.empty(full, dtype=np.int8).reshape(target).shape
    except ValueError:
        raise ValueError(f"{node}: cannot reshape {full} to {target}") from None
    if out[0] != w.batch:
        raise ValueError(f"{node}: reshapes across the batch axis ({full} -> {out})")
    w.builder.reshape(node.output, x, out[1:], node.name)


def flatten(w, node):
    x = _data_input(w, node)
    shape = w.builder.shape(x)
    axis = int(node.attrs.get("axis", 1))
    if axis != 1:
        raise ValueError(f"{node}: Flatten with axis={axis} is not supported (only axis=1)")
    w.builder.reshape(node.output, x, (int(np.prod(shape)),), node.name)


def squeeze(w, node):
    x = _data_input(w, node)
    full = (1,) + w.builder.shape(x)
    axes = attr_or_input(w, node, 1, "axes", 13)
    if axes is None:
        out = (1,) + tuple(s for s in full[1:] if s != 1)
    else:
        drop = {int(a) % len(full) for a in np.asarray(axes).reshape(-1)}
        if 0 in drop or any(full[a] != 1 for a in drop):
            raise ValueError(f"{node}: cannot squeeze axes {sorted(drop)} of {full}")
        out = tuple(s for i, s in enumerate(full) if i not in drop)
    w.builder.reshape(node.output, x, out[1:], node.name)


def unsqueeze(w, node):
    x = _data_input(w, node)
    full = (1,) + w.builder.shape(x)
    axes = attr_or_input(w, node, 1, "axes", 13)
    rank = len(full) + np.asarray(axes).size
    insert = sorted(int(a) % rank for a in np.asarray(axes).reshape(-1))
    if 0 in insert:
        raise ValueError(f"{node}: inserting an axis before the batch axis is not supported")
    out = list(full)
    for a in insert:
        out.insert(a, 1)
    w.builder.reshape(node.output, x, out[1:], node.name)


def transpose(w, node):
    x = _data_input(w, node)
    rank = len(w.builder.shape(x)) + 1
    perm = [int(p) for p in node.attrs.get("perm", list(range(rank))[::-1])]
    if sorted(perm) != list(range(rank)) or perm[0] != 0:
        raise ValueError(f"{node}: perm={perm} moves the batch axis (or is not a permutation)")
    if perm == list(range(rank)):
        w.builder.alias(node.output, x)
        return
    w.add(node, _nets().Transpose(perm), [x])


def pad(w, node):
    x = _data_input(w, node)
    shape = w.builder.shape(x)
    mode = node.attrs.get("mode", "constant")
    if mode != "constant":
        raise ValueError(f"{node}: mode={mode!r} is not supported (only zero padding)")
    pads = attr_or_input(w, node, 1, "pads", 11)
    value = attr_or_input(w, node, 2, "value", 11, 0.0)
    if value is not None and float(np.asarray(value).reshape(())) != 0.0:
        raise ValueError(f"{node}: padding with {np.asarray(value).ravel()[0]} (only 0) is not supported")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    rank = len(shape) + 1
    axes = attr_or_input(w, node, 3, "axes", 18)
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in np.asarray(axes).reshape(-1)]
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[i + len(axes)]
    if len(shape) != 3 or begin[:2] != [0, 0] or end[:2] != [0, 0]:
        raise ValueError(f"{node}: only spatial padding of an image is supported (pads {pads})")
    w.add(node, _nets().Pad((begin[2], begin[3], end[2], end[3])), [x])


OPS = {
    "Gemm": gemm,
    "MatMul": matmul,
    "Conv": conv,
    "BatchNormalization": batch_normalization,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "GlobalAveragePool": global_average_pool,
    "GlobalMaxPool": global_max_pool,
    "LRN": lrn,
    "Relu": relu,
    "LeakyRelu": leaky_relu,
    "Tanh": tanh,
    "Sigmoid": sigmoid,
    "Clip": clip,
    "Softmax": softmax,
    "Identity": identity,
    "Dropout": identity,
    "Cast": cast,
    "Add": add,
    "Sum": add,
    "Sub": sub,
    "Mul": mul,
    "Div": div,
    "Concat": concat,
    "Reshape": reshape,
    "Flatten": flatten,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Transpose": transpose,
    "Pad": pad,
}
