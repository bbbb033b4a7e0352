"""The PyTorch operator tables of :func:`nets.from_torch`: one handler per ``torch.nn`` module
class and per function or tensor method that touches the data, writing nets nodes through the
converter of :mod:`nets.torch_import` (``c``) onto the shared graph builder.

Module handlers are called as ``handler(c, node, module, x)`` and function handlers as
``handler(c, node)``, with ``node`` the torch.fx node and ``x`` its data input.
"""

from __future__ import annotations

import operator
from types import SimpleNamespace

import numpy as np

from ._graph_builder import ceil_mode_extra


def array(t):
    """A tensor (or an already recorded array) as a float64 numpy array."""
    t = t.detach().cpu().numpy() if hasattr(t, "detach") else t
    return np.asarray(t, dtype=np.float64)


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else tuple(int(x) for x in v)


def _get(node, index, name, default=None):
    """Argument ``index`` (positional) or ``name`` (keyword) of an fx node."""
    if index is not None and len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


# ----------------------------------------------------------------------------------------------
# modules
def _conv(c, node, m, x):
    import nets

    if m.padding_mode != "zeros":
        raise ValueError(f"padding_mode={m.padding_mode!r} is not supported (only zeros)")
    if len(m.kernel_size) != 2:
        raise ValueError("only 2-D convolutions are supported")
    kernel, dilation = m.kernel_size, m.dilation
    if m.padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        pads = (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
    elif m.padding == "valid":
        pads = (0, 0, 0, 0)
    else:
        pads = _pair(m.padding) * 2
    key, padding = c.builder.pad_before(c.where(node), x.name, pads, c.label(node))
    b = None if m.bias is None else array(m.bias)
    layer = nets.Conv2D(
        array(m.weight), b, stride=m.stride, padding=padding, groups=m.groups, dilation=dilation
    )
    c.builder.add(c.label(node), layer, [key], node.name)


def _linear(c, node, m, x):
    import nets

    if len(c.builder.shape(x.name)) != 1:
        raise ValueError(f"Linear on per-sample shape {c.builder.shape(x.name)} (flatten first)")
    b = None if m.bias is None else array(m.bias)
    c.add(node, nets.Dense(array(m.weight), b), [x])


def _batchnorm(c, node, m, x):
    import nets

    if m.running_mean is None:
        raise ValueError("track_running_stats=False uses batch statistics; not supported")
    C = m.num_features
    gamma = array(m.weight) if m.affine else np.ones(C)
    beta = array(m.bias) if m.affine else np.zeros(C)
    params = (gamma, beta, array(m.running_mean), array(m.running_var), float(m.eps))
    if c.builder.fold_batchnorm(x.name, params, node.name, c.fold_batchnorm and c.sole(x)):
        return
    rank = len(c.builder.shape(x.name))
    if (type(m).__name__, rank) not in (("BatchNorm1d", 1), ("BatchNorm2d", 3)):
        raise ValueError(f"batch norm over per-sample shape {c.builder.shape(x.name)} is not supported")
    kind = nets.BatchNorm1D if rank == 1 else nets.BatchNorm2D
    c.add(node, kind(*params[:4], eps=params[4]), [x])


def _activation(make):
    def handler(c, node, m, x):
        c.add(node, make(m), [x])

    return handler


def _pool(c, node, x, kind, kernel, stride, padding, ceil_mode, count_include_pad=True, dilation=1):
    import nets

    shape = c.builder.shape(x.name)
    if len(shape) != 3:
        raise ValueError(f"expects an image (N, C, H, W), got per-sample shape {shape}")
    kernel = _pair(kernel)
    stride = kernel if stride is None or stride == [] else _pair(stride)
    pad = _pair(padding)
    if _pair(dilation) != (1, 1):
        raise ValueError("dilated pooling is not supported")
    pads = (pad[0], pad[1], pad[0], pad[1])
    if ceil_mode:
        extra = [ceil_mode_extra(shape[1 + a], kernel[a], stride[a], pad[a], pad[a]) for a in range(2)]
        if any(extra) and kind == "avg":
            raise ValueError("ceil_mode=True changes the output size here; not supported for averages")
        pads = (pad[0], pad[1], pad[0] + extra[0], pad[1] + extra[1])
    key, padding = c.builder.pad_before(c.where(node), x.name, pads, c.label(node), pool=kind == "max")
    if kind == "max":
        layer = nets.MaxPool2D(kernel, stride=stride, padding=padding)
    else:
        layer = nets.AvgPool2D(
            kernel, stride=stride, padding=padding, count_include_pad=bool(count_include_pad)
        )
    c.builder.add(c.label(node), layer, [key], node.name)


def _max_pool(c, node, m, x):
    if m.return_indices:
        raise ValueError("return_indices=True is not supported")
    _pool(c, node, x, "max", m.kernel_size, m.stride, m.padding, m.ceil_mode, dilation=m.dilation)


def _avg_pool(c, node, m, x):
    if m.divisor_override is not None:
        raise ValueError("divisor_override is not supported")
    _pool(c, node, x, "avg", m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad)


def _adaptive(c, node, x, size, kind):

    shape = c.builder.shape(x.name)
    if len(shape) != 3:
        raise ValueError(f"expects an image (N, C, H, W), got per-sample shape {shape}")
    out = (size, size) if size is None or np.isscalar(size) else tuple(size)
    out = tuple(shape[1 + a] if o is None else int(o) for a, o in enumerate(out))  # None: kept
    if out == (1, 1):
        _global_pool(c, node, x, kind, keepdim=True)
        return
    if shape[1] % out[0] or shape[2] % out[1]:
        raise ValueError(f"adaptive pooling of {shape[1:]} to {out} has unequal windows; not supported")
    k = (shape[1] // out[0], shape[2] // out[1])
    if k == (1, 1):
        c.builder.alias(node.name, x.name)
        return
    _pool(c, node, x, kind, k, k, 0, False)


def _global_pool(c, node, x, kind, keepdim):
    import nets

    layer = nets.GlobalAvgPool2D() if kind == "avg" else nets.GlobalMaxPool2D()
    if not keepdim:
        c.add(node, layer, [x])
        return
    # nets' global pools return (N, C): a (C, 1, 1) view, which a following flatten undoes
    c.add(node, layer, [x], key=node.name + "#pooled")
    channels = c.builder.shape(x.name)[0]
    c.builder.reshape(node.name, node.name + "#pooled", (channels, 1, 1), c.label(node) + "_keepdims")


def _mean(c, node):
    """x.mean((2, 3)) / torch.mean(x, dim=[-2, -1], keepdim=...): a global average pool."""
    x = node.args[0]
    rank = len(c.full_shape(x))
    dims = _get(node, 1, "dim")
    dims = [dims] if np.isscalar(dims) else list(dims or [])
    if rank != 4 or sorted(int(d) % rank for d in dims) != [2, 3]:
        raise ValueError(f"mean over dims {dims} of a {rank}-D tensor (only the spatial axes 2, 3)")
    _global_pool(c, node, x, "avg", bool(_get(node, 2, "keepdim", False)))


def _lrn(c, node, m, x):
    import nets

    if m.size % 2 == 0:
        raise ValueError(
            f"size={m.size}: PyTorch's window for an even size is shifted by one channel from ONNX's "
            "(nets.LRN); only odd sizes are supported"
        )
    c.add(node, nets.LRN(m.size, alpha=m.alpha, beta=m.beta, bias=m.k), [x])


def _softmax(c, node, x, dim):
    import nets

    if len(c.builder.shape(x.name)) != 1 or dim not in (1, -1):
        raise ValueError(
            f"Softmax over dim {dim} of per-sample shape {c.builder.shape(x.name)} is not supported"
        )
    c.add(node, nets.Softmax(), [x])


def _passthrough(c, node, *args):
    c.builder.alias(node.name, node.args[0].name)


def _reshape_module(c, node, m, x):
    c.reshape_to_recorded(node, x)


def _nets_layer(name, *args):
    import nets

    return getattr(nets, name)(*args)


MODULES = {
    "Conv2d": _conv,
    "Linear": _linear,
    "BatchNorm1d": _batchnorm,
    "BatchNorm2d": _batchnorm,
    "ReLU": _activation(lambda m: _nets_layer("ReLU")),
    "ReLU6": _activation(lambda m: _nets_layer("Clip", 0.0, 6.0)),
    "Hardtanh": _activation(lambda m: _nets_layer("Clip", m.min_val, m.max_val)),
    "LeakyReLU": _activation(lambda m: _nets_layer("LeakyReLU", m.negative_slope)),
    "Tanh": _activation(lambda m: _nets_layer("Tanh")),
    "Sigmoid": _activation(lambda m: _nets_layer("Sigmoid")),
    "MaxPool2d": _max_pool,
    "AvgPool2d": _avg_pool,
    "AdaptiveAvgPool2d": lambda c, node, m, x: _adaptive(c, node, x, m.output_size, "avg"),
    "AdaptiveMaxPool2d": lambda c, node, m, x: _adaptive(c, node, x, m.output_size, "max"),
    "LocalResponseNorm": _lrn,
    "Dropout": _passthrough,
    "Dropout2d": _passthrough,
    "Identity": _passthrough,
    "Flatten": _reshape_module,
    "Unflatten": _reshape_module,
    "Softmax": lambda c, node, m, x: _softmax(c, node, x, m.dim),
}


# ----------------------------------------------------------------------------------------------
# functions and tensor methods
def _add(c, node):
    import nets

    alpha = node.kwargs.get("alpha", 1)
    if alpha != 1:
        raise ValueError(f"alpha={alpha} is not supported")
    a, b = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs["other"]
    if c.is_data(a) and c.is_data(b):
        shapes = {c.builder.shape(a.name), c.builder.shape(b.name)}
        if len(shapes) > 1:
            raise ValueError(f"adds tensors of different shapes {sorted(shapes)}")
        c.add(node, nets.Add(), [a, b], shape=shapes.pop())
        return
    x, k = (a, b) if c.is_data(a) else (b, a)
    c.affine(node, x, 1.0, c.value(k))


def _sub(c, node):
    a, b = node.args[:2]
    if c.is_data(a) and c.is_data(b):
        raise ValueError("subtracting one tensor from another is not supported")
    if c.is_data(a):
        c.affine(node, a, 1.0, -np.asarray(c.value(b), dtype=np.float64))
    else:
        c.affine(node, b, -1.0, c.value(a))


def _mul(c, node):
    a, b = node.args[:2]
    if c.is_data(a) and c.is_data(b):
        raise ValueError("multiplying two tensors is not supported")
    x, k = (a, b) if c.is_data(a) else (b, a)
    c.affine(node, x, c.value(k), 0.0)


def _div(c, node):
    a, b = node.args[:2]
    if not c.is_data(a) or c.is_data(b):
        raise ValueError("only tensor / constant is supported")
    k = np.asarray(c.value(b), dtype=np.float64)
    if np.any(k == 0):
        raise ValueError("division by a constant that contains 0")
    c.affine(node, a, 1.0 / k, 0.0)


def _cat(c, node):
    import nets

    tensors = _get(node, 0, "tensors")
    dim = int(_get(node, 1, "dim", 0))
    if not all(c.is_data(t) for t in tensors):
        raise ValueError("concatenating the data with constants is not supported")
    rank = len(c.full_shape(tensors[0]))
    dim = dim + rank if dim < 0 else dim
    if dim == 0:
        raise ValueError("concatenation along the batch axis is not supported")
    c.add(node, nets.Concat(axis=dim), list(tensors), shape=c.full_shape(node)[1:])


def _reshape(c, node):
    c.reshape_to_recorded(node, node.args[0])


def _permute(c, node):
    import nets

    x = node.args[0]
    rank = len(c.full_shape(x))
    if node.target == "permute" or node.target is getattr(c.torch, "permute", None):
        dims = node.args[1:] if node.op == "call_method" else (_get(node, 1, "dims"),)
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else dims
        perm = [int(d) % rank for d in dims]
    else:  # transpose(x, dim0, dim1)
        d0, d1 = (int(d) % rank for d in node.args[1:3])
        perm = list(range(rank))
        perm[d0], perm[d1] = perm[d1], perm[d0]
    if perm[0] != 0:
        raise ValueError(f"permutation {perm} moves the batch axis")
    if perm == list(range(rank)):
        c.builder.alias(node.name, x.name)
        return
    c.add(node, nets.Transpose(perm), [x])


def _elementwise(name, *config):
    def handler(c, node):
        c.add(node, _nets_layer(name, *config), [node.args[0]])

    return handler


def _clamp(c, node):
    low = _get(node, 1, "min")
    high = _get(node, 2, "max")
    c.add(node, _nets_layer("Clip", low, high), [node.args[0]])


def _hardtanh(c, node):
    c.add(
        node,
        _nets_layer("Clip", _get(node, 1, "min_val", -1.0), _get(node, 2, "max_val", 1.0)),
        [node.args[0]],
    )


def _leaky(c, node):
    c.add(node, _nets_layer("LeakyReLU", _get(node, 1, "negative_slope", 0.01)), [node.args[0]])


def _dropout(c, node):
    if _get(node, 2, "training", True if node.op == "call_function" else False):
        raise ValueError("dropout with training=True (pass training=self.training and use eval mode)")
    _passthrough(c, node)


def _functional(module_handler, *parameters):
    """A handler for ``F.fn(x, ...)`` that reads the arguments (positional after x, or keyword,
    ``(name, default)`` pairs) into the attributes the module handler reads off the module."""

    def handler(c, node):
        m = SimpleNamespace(**{n: _get(node, i + 1, n, d) for i, (n, d) in enumerate(parameters)})
        module_handler(c, node, m, node.args[0])

    return handler


def _f_conv(c, node):
    """F.conv2d(x, weight, bias, stride, padding, dilation, groups) with constant weights."""
    weight = c.value(_get(node, 1, "weight"))
    bias = _get(node, 2, "bias")
    m = SimpleNamespace(
        weight=weight,
        bias=None if bias is None else c.value(bias),
        stride=_pair(_get(node, 3, "stride", 1)),
        padding=_get(node, 4, "padding", 0),
        dilation=_pair(_get(node, 5, "dilation", 1)),
        groups=int(_get(node, 6, "groups", 1)),
        padding_mode="zeros",
        kernel_size=tuple(np.shape(weight)[2:]),
    )
    _conv(c, node, m, node.args[0])


def _f_linear(c, node):
    """F.linear(x, weight, bias) with constant weights."""
    bias = _get(node, 2, "bias")
    m = SimpleNamespace(weight=c.value(_get(node, 1, "weight")), bias=None if bias is None else c.value(bias))
    _linear(c, node, m, node.args[0])


_POOL = (("kernel_size", None), ("stride", None), ("padding", 0))
_f_max_pool = _functional(_max_pool, *_POOL, ("dilation", 1), ("ceil_mode", False), ("return_indices", False))
_f_avg_pool = _functional(
    _avg_pool, *_POOL, ("ceil_mode", False), ("count_include_pad", True), ("divisor_override", None)
)
_f_lrn = _functional(_lrn, ("size", None), ("alpha", 1e-4), ("beta", 0.75), ("k", 1.0))


def _f_pad(c, node):
    import nets

    pad = [int(p) for p in _get(node, 1, "pad")]
    if _get(node, 2, "mode", "constant") != "constant" or float(_get(node, 3, "value", 0.0) or 0.0) != 0.0:
        raise ValueError("only zero padding is supported")
    if len(pad) != 4 or len(c.builder.shape(node.args[0].name)) != 3:
        raise ValueError(f"only padding of the two spatial axes of an image is supported (pad={pad})")
    left, right, top, bottom = pad  # PyTorch lists the last axis first
    c.add(node, nets.Pad((top, left, bottom, right)), [node.args[0]])


def function_table():
    """{function or ("method", name): handler} for the functions and tensor methods above."""
    import torch
    import torch.nn.functional as F

    softmax = lambda c, node: _softmax(c, node, node.args[0], _get(node, 1, "dim"))  # noqa: E731
    adaptive = {
        kind: lambda c, node, kind=kind: _adaptive(c, node, node.args[0], _get(node, 1, "output_size"), kind)
        for kind in ("avg", "max")
    }
    # handler -> the functions and (as strings) the tensor methods it converts
    groups = [
        (_add, [operator.add, operator.iadd, torch.add, "add"]),
        (_sub, [operator.sub, operator.isub, torch.sub, "sub"]),
        (_mul, [operator.mul, operator.imul, torch.mul, "mul"]),
        (_div, [operator.truediv, operator.itruediv, torch.div, "div"]),
        (_cat, [torch.cat, torch.concat, getattr(torch, "concatenate", torch.cat)]),
        (_reshape, [torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze]),
        (_reshape, ["view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as"]),
        (_permute, [torch.permute, torch.transpose, "permute", "transpose"]),
        (_passthrough, ["contiguous"]),
        (_elementwise("ReLU"), [F.relu, torch.relu, "relu"]),
        (_elementwise("Sigmoid"), [F.sigmoid, torch.sigmoid, "sigmoid"]),
        (_elementwise("Tanh"), [F.tanh, torch.tanh, "tanh"]),
        (_elementwise("Clip", 0.0, 6.0), [F.relu6]),
        (_hardtanh, [F.hardtanh]),
        (_leaky, [F.leaky_relu]),
        (_clamp, [torch.clamp, torch.clip, "clamp", "clip"]),
        (_dropout, [F.dropout]),
        (_f_conv, [F.conv2d]),
        (_f_linear, [F.linear]),
        (_f_max_pool, [F.max_pool2d]),
        (_f_avg_pool, [F.avg_pool2d]),
        (adaptive["avg"], [F.adaptive_avg_pool2d]),
        (adaptive["max"], [F.adaptive_max_pool2d]),
        (_f_pad, [F.pad]),
        (_mean, [torch.mean, "mean"]),
        (_f_lrn, [F.local_response_norm]),
        (softmax, [F.softmax, torch.softmax, "softmax"]),
    ]
    return {("method", fn) if isinstance(fn, str) else fn: handler for handler, fns in groups for fn in fns}


FUNCTIONS: dict = {}  # filled on first use (importing torch lazily)
