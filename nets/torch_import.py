"""Convert a PyTorch model to a :class:`nets.Graph` without ONNX.

The model is traced symbolically with ``torch.fx`` (so residual ``x + y``, ``torch.cat``,
``flatten``, ``view``/``reshape``, ``permute`` and functional calls are seen as graph nodes), then
run once on ``example_input`` with an fx interpreter that records every value: shapes come from
that run, and everything that does not depend on the input (``x.size(0)``, arithmetic on sizes,
parameters used in functional calls) is a constant. Each traced node that touches the data maps
to nets nodes through the module and function tables below; anything else is refused by its module
path and class, or its qualified function name. The conversion ends by comparing the nets model
with PyTorch on ``example_input``.

The weights are copied (``dtype``, default float64); the module itself is not changed, except that
it is put in eval mode (with a warning) when it was in training mode.
"""

from __future__ import annotations

import operator
import warnings

import numpy as np

from ._graph_builder import GraphBuilder, ceil_mode_extra

_MISSING_TORCH = (
    "nets.from_torch needs the optional dependency 'torch'; install it with "
    "`pip install torch` or `pip install 'bowlrp[torch]'`"
)


def _import_torch():
    try:
        import torch
        import torch.fx  # noqa: F401
    except ImportError:
        raise ImportError(_MISSING_TORCH) from None
    return torch


def _array(t):
    return t.detach().cpu().numpy().astype(np.float64)


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else tuple(int(x) for x in v)


def _get(node, index, name, default=None):
    """Argument ``index`` (positional) or ``name`` (keyword) of an fx node."""
    if index is not None and len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


class _Converter:
    def __init__(self, torch, gm, values, fold_batchnorm):
        self.torch, self.gm, self.values = torch, gm, values
        self.fold_batchnorm = fold_batchnorm
        self.builder = None

    # -- values ------------------------------------------------------------------------------
    def is_data(self, arg):
        return hasattr(arg, "op") and self.builder.is_data(arg.name)

    def value(self, arg):
        """The recorded constant behind an argument (fx nodes replaced, containers walked)."""
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(a) for a in arg)
        if hasattr(arg, "op"):
            if self.builder.is_data(arg.name):
                raise ValueError(f"{arg.name!r} is data where a constant is expected")
            v = self.values[arg]
            return _array(v) if isinstance(v, self.torch.Tensor) else v
        return arg

    def full_shape(self, node):
        return tuple(self.values[node].shape)

    def sole(self, node):
        """True when ``node``'s output is read by one data node only (so it may be folded)."""
        readers = [
            u for u in node.users if u.op == "output" or isinstance(self.values.get(u), self.torch.Tensor)
        ]
        return len(readers) == 1

    def add(self, node, layer, inputs, key=None, shape=None):
        keys = [a.name for a in inputs]
        self.builder.add(self.label(node), layer, keys, key or node.name, shape)

    def reshape_to_recorded(self, node, x):
        """``node`` reshapes ``x``; its per-sample shape is what the example run produced."""
        before, after = self.full_shape(x), self.full_shape(node)
        if before[0] != after[0]:
            raise ValueError(f"reshapes across the batch axis ({before} -> {after})")
        self.builder.reshape(node.name, x.name, after[1:], self.label(node))

    def affine(self, node, x, factor, offset):
        where, label = self.where(node), self.label(node)
        self.builder.affine(where, x.name, factor, offset, node.name, label, self.sole(x))

    def label(self, node):
        """The nets node name: the module path for a module (``layer1.0.conv1``), else fx's name."""
        return str(node.target) if node.op == "call_module" else node.name

    def where(self, node):
        if node.op == "call_module":
            return f"module {node.target!r} ({type(self.gm.get_submodule(node.target)).__name__})"
        target = node.target if isinstance(node.target, str) else _qualified(node.target)
        return f"node {node.name!r} ({target})"

    # -- the walk ----------------------------------------------------------------------------
    def convert(self, dtype):
        output = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if self.builder is not None:
                    raise ValueError(f"the model takes several inputs ({node.name!r} is the second)")
                value = self.values[node]
                self.builder = GraphBuilder(node.name, tuple(value.shape[1:]))
                continue
            if node.op == "output":
                output = node.args[0]
                continue
            data = [a for a in node.all_input_nodes if self.builder.is_data(a.name)]
            if not data or not self._holds_tensor(self.values.get(node)):
                continue  # a constant (parameters, sizes, arithmetic on them): read via value()
            try:
                if node.op == "call_module":
                    self._module(node, self.gm.get_submodule(node.target))
                else:
                    self._function(node)
            except ValueError as exc:
                raise ValueError(f"{self.where(node)}: {exc}") from None
        if not hasattr(output, "op") or not self.builder.is_data(output.name):
            raise ValueError("the model must return one tensor computed from its input")
        return self.builder.finish(output.name, dtype)

    def _holds_tensor(self, value):
        if isinstance(value, (list, tuple)):
            return any(self._holds_tensor(v) for v in value)
        return isinstance(value, self.torch.Tensor)

    def _module(self, node, mod):
        cls = type(mod)
        handler = _MODULES.get(cls.__name__) if cls.__module__.startswith("torch.nn") else None
        if handler is None:
            raise ValueError(
                f"{cls.__module__}.{cls.__name__} is not supported; "
                f"supported modules are torch.nn.{', torch.nn.'.join(sorted(_MODULES))}"
            )
        handler(self, node, mod, node.args[0])

    def _function(self, node):
        if node.op == "call_method":
            key, name = ("method", node.target), f"Tensor.{node.target}"
        else:
            key, name = node.target, _qualified(node.target)
        handler = _FUNCTIONS.get(key)
        if handler is None:
            raise ValueError(f"{name} is not supported")
        handler(self, node)


def _qualified(fn):
    module = getattr(fn, "__module__", None) or ("torch" if "torch" in repr(fn) else "builtins")
    return f"{module}.{getattr(fn, '__name__', repr(fn))}"


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
        pads = tuple(m.padding) * 2
    key, padding = c.builder.pad_before(c.where(node), x.name, pads, c.label(node))
    b = None if m.bias is None else _array(m.bias)
    layer = nets.Conv2D(
        _array(m.weight), b, stride=m.stride, padding=padding, groups=m.groups, dilation=dilation
    )
    c.builder.add(c.label(node), layer, [key], node.name)


def _linear(c, node, m, x):
    import nets

    if len(c.builder.shape(x.name)) != 1:
        raise ValueError(f"Linear on per-sample shape {c.builder.shape(x.name)} (flatten first)")
    b = None if m.bias is None else _array(m.bias)
    c.add(node, nets.Dense(_array(m.weight), b), [x])


def _batchnorm(c, node, m, x):
    import nets

    if m.running_mean is None:
        raise ValueError("track_running_stats=False uses batch statistics; not supported")
    C = m.num_features
    gamma = _array(m.weight) if m.affine else np.ones(C)
    beta = _array(m.bias) if m.affine else np.zeros(C)
    params = (gamma, beta, _array(m.running_mean), _array(m.running_var), float(m.eps))
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
    import nets

    shape = c.builder.shape(x.name)
    out = _pair(size if size is not None else shape[1])
    out = tuple(shape[1 + a] if o is None else o for a, o in enumerate(out))
    if out == (1, 1):
        layer = nets.GlobalAvgPool2D() if kind == "avg" else nets.GlobalMaxPool2D()
        c.add(node, layer, [x], key=node.name + "#pooled")
        c.builder.reshape(node.name, node.name + "#pooled", (shape[0], 1, 1), c.label(node) + "_keepdims")
        return
    if shape[1] % out[0] or shape[2] % out[1]:
        raise ValueError(f"adaptive pooling of {shape[1:]} to {out} has unequal windows; not supported")
    k = (shape[1] // out[0], shape[2] // out[1])
    if k == (1, 1):
        c.builder.alias(node.name, x.name)
        return
    _pool(c, node, x, kind, k, k, 0, False)


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


_MODULES = {
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


def _f_max_pool(c, node):
    if _get(node, 6, "return_indices", False):
        raise ValueError("return_indices=True is not supported")
    _pool(
        c,
        node,
        node.args[0],
        "max",
        _get(node, 1, "kernel_size"),
        _get(node, 2, "stride"),
        _get(node, 3, "padding", 0),
        _get(node, 5, "ceil_mode", False),
        dilation=_get(node, 4, "dilation", 1),
    )


def _f_avg_pool(c, node):
    if _get(node, 6, "divisor_override") is not None:
        raise ValueError("divisor_override is not supported")
    _pool(
        c,
        node,
        node.args[0],
        "avg",
        _get(node, 1, "kernel_size"),
        _get(node, 2, "stride"),
        _get(node, 3, "padding", 0),
        _get(node, 4, "ceil_mode", False),
        _get(node, 5, "count_include_pad", True),
    )


def _f_pad(c, node):
    import nets

    pad = [int(p) for p in _get(node, 1, "pad")]
    if _get(node, 2, "mode", "constant") != "constant" or float(_get(node, 3, "value", 0.0) or 0.0) != 0.0:
        raise ValueError("only zero padding is supported")
    if len(pad) != 4 or len(c.builder.shape(node.args[0].name)) != 3:
        raise ValueError(f"only padding of the two spatial axes of an image is supported (pad={pad})")
    left, right, top, bottom = pad  # PyTorch lists the last axis first
    c.add(node, nets.Pad((top, left, bottom, right)), [node.args[0]])


def _f_lrn(c, node):
    size = int(_get(node, 1, "size"))
    module = type(
        "LRN",
        (),
        {
            "size": size,
            "alpha": _get(node, 2, "alpha", 1e-4),
            "beta": _get(node, 3, "beta", 0.75),
            "k": _get(node, 4, "k", 1.0),
        },
    )
    _lrn(c, node, module, node.args[0])


def _function_table():
    import torch
    import torch.nn.functional as F

    relu = _elementwise("ReLU")
    table = {
        operator.add: _add,
        operator.iadd: _add,
        torch.add: _add,
        ("method", "add"): _add,
        operator.sub: _sub,
        operator.isub: _sub,
        torch.sub: _sub,
        ("method", "sub"): _sub,
        operator.mul: _mul,
        operator.imul: _mul,
        torch.mul: _mul,
        ("method", "mul"): _mul,
        operator.truediv: _div,
        operator.itruediv: _div,
        torch.div: _div,
        ("method", "div"): _div,
        torch.cat: _cat,
        torch.concat: _cat,
        torch.flatten: _reshape,
        torch.reshape: _reshape,
        torch.squeeze: _reshape,
        torch.unsqueeze: _reshape,
        torch.permute: _permute,
        torch.transpose: _permute,
        F.relu: relu,
        torch.relu: relu,
        ("method", "relu"): relu,
        F.relu6: _elementwise("Clip", 0.0, 6.0),
        F.hardtanh: _hardtanh,
        F.leaky_relu: _leaky,
        torch.sigmoid: _elementwise("Sigmoid"),
        F.sigmoid: _elementwise("Sigmoid"),
        ("method", "sigmoid"): _elementwise("Sigmoid"),
        torch.tanh: _elementwise("Tanh"),
        F.tanh: _elementwise("Tanh"),
        ("method", "tanh"): _elementwise("Tanh"),
        torch.clamp: _clamp,
        torch.clip: _clamp,
        ("method", "clamp"): _clamp,
        ("method", "clip"): _clamp,
        F.dropout: _dropout,
        F.max_pool2d: _f_max_pool,
        F.avg_pool2d: _f_avg_pool,
        F.pad: _f_pad,
        F.local_response_norm: _f_lrn,
        F.adaptive_avg_pool2d: lambda c, node: _adaptive(
            c, node, node.args[0], _get(node, 1, "output_size"), "avg"
        ),
        F.adaptive_max_pool2d: lambda c, node: _adaptive(
            c, node, node.args[0], _get(node, 1, "output_size"), "max"
        ),
        F.softmax: lambda c, node: _softmax(c, node, node.args[0], _get(node, 1, "dim")),
        torch.softmax: lambda c, node: _softmax(c, node, node.args[0], _get(node, 1, "dim")),
        ("method", "softmax"): lambda c, node: _softmax(c, node, node.args[0], _get(node, 1, "dim")),
    }
    for method in ("view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as"):
        table[("method", method)] = _reshape
    for method in ("permute", "transpose"):
        table[("method", method)] = _permute
    table[("method", "contiguous")] = _passthrough
    if hasattr(torch, "concatenate"):  # torch >= 2.1 spells it three ways
        table[torch.concatenate] = _cat
    return table


_FUNCTIONS: dict = {}


# ----------------------------------------------------------------------------------------------
def from_torch(module, example_input, fold_batchnorm=True, dtype=np.float64, check=True):
    """Convert a PyTorch model to a :class:`nets.Graph` (no ONNX involved).

    Parameters
    ----------
    module : torch.nn.Module
        Made of ``Conv2d`` (groups, dilation, zero padding incl. ``"same"``), ``Linear``,
        ``BatchNorm1d/2d``, ``ReLU``/``ReLU6``/``Hardtanh``/``LeakyReLU``/``Tanh``/``Sigmoid``,
        ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``/``AdaptiveMaxPool2d`` (to 1, or to
        equal windows), ``LocalResponseNorm`` (odd size), ``Dropout``, ``Identity``, ``Flatten``,
        ``Softmax`` (last), inside any ``Sequential`` or custom module whose ``forward`` adds
        (``x + y``, ``torch.add``), concatenates (``torch.cat``), reshapes (``flatten``, ``view``,
        ``reshape``), permutes, pads (``F.pad``) or scales by constants. A module in training mode
        is put in eval mode (with a warning): batch norm then uses its running statistics.
    example_input : torch.Tensor or array
        One batch of inputs as the model takes it, e.g. ``torch.zeros(1, 3, 224, 224)``: it fixes
        the per-sample input shape (``graph.input_shape``) and the shapes of every reshape.
    fold_batchnorm : bool, default=True
        Fold batch norm into the convolution/linear layer that feeds only it.
    dtype : numpy dtype, default=np.float64
        Dtype of the copied weights.
    check : bool, default=True
        Compare the converted model with PyTorch on ``example_input`` and raise when they differ.

    Returns
    -------
    model : nets.Graph
        Node names are the module paths (``layer1.0.conv1``) and, for functions and tensor
        methods, the names torch.fx gave them (``add``, ``cat_1``, ``view``).

    Raises
    ------
    ImportError
        When torch is missing.
    ValueError
        For a module, function or argument that has no nets equivalent (the message names the
        module by its path and class, or the function by its qualified name), or a model that
        ``torch.fx`` cannot trace (data-dependent control flow).

    Examples
    --------
    >>> import torch, nets
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(2 * 4 * 4, 3)).eval()
    >>> model = nets.from_torch(net, torch.zeros(1, 1, 6, 6))
    >>> model.names  # module paths (the flatten is kept as a node: the dense layer reads it)
    ['0', '1', '2', '3']
    >>> model.input_shape
    (1, 6, 6)
    """
    torch = _import_torch()
    if not _FUNCTIONS:
        _FUNCTIONS.update(_function_table())
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if module.training:
        warnings.warn(
            "nets.from_torch put the module in eval mode (module.eval())", UserWarning, stacklevel=2
        )
        module.eval()
    example = (
        example_input
        if isinstance(example_input, torch.Tensor)
        else torch.as_tensor(np.asarray(example_input))
    )
    params = next(iter(module.parameters()), None)
    if params is not None and example.dtype != params.dtype:
        example = example.to(params.dtype)
    if example.dim() < 2:
        raise ValueError(f"example_input must be a batch (N, ...), got shape {tuple(example.shape)}")
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as exc:  # fx raises TraceError, TypeError, ... for untraceable Python
        raise ValueError(f"torch.fx cannot trace this model ({type(exc).__name__}: {exc})") from None
    values = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            values[n] = out = super().run_node(n)
            return out

    with torch.no_grad():
        expected = Recorder(gm).run(example)
    model = _Converter(torch, gm, values, fold_batchnorm).convert(dtype)
    if check:
        _check(model, example, expected)
    return model


def _check(model, example, expected):
    X = example.detach().cpu().numpy()
    ours = model(X.astype(np.float64))
    theirs = expected.detach().cpu().numpy().astype(np.float64)
    tol = 1e-4 if example.dtype != np.float64 and str(example.dtype) != "torch.float64" else 1e-8
    err = np.abs(ours - theirs).max() / max(1.0, np.abs(theirs).max())
    if not err <= tol:
        raise ValueError(
            f"the converted model differs from PyTorch on example_input (relative error {err:.2g}); "
            "a reshape may depend on the batch size (pass an example batch of 2 or more)"
        )


__all__ = ["from_torch"]
