"""Convert a PyTorch model to a :class:`nets.Graph` without ONNX.

The model is traced symbolically with ``torch.fx`` (so residual ``x + y``, ``torch.cat``,
``flatten``, ``view``/``reshape``, ``permute`` and functional calls are seen as graph nodes), then
run once on ``example_input`` with an fx interpreter that records every value: shapes come from
that run, and everything that does not depend on the input (``x.size(0)``, arithmetic on sizes,
parameters used in functional calls) is a constant. Each traced node that touches the data maps
to nets nodes through the module and function tables of :mod:`nets._torch_ops`; anything else is
refused by its module path and class, or its qualified function name. The conversion ends by
comparing the nets model with PyTorch on ``example_input``.

The weights are copied (``dtype``, default float64); the module itself is not changed, except that
it is put in eval mode (with a warning) when it was in training mode.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._graph_builder import GraphBuilder
from ._torch_ops import FUNCTIONS, MODULES, array, function_table

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
            return array(v) if isinstance(v, self.torch.Tensor) else v
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
        handler = MODULES.get(cls.__name__) if cls.__module__.startswith("torch.nn") else None
        if handler is None:
            raise ValueError(
                f"{cls.__module__}.{cls.__name__} is not supported; "
                f"supported modules are torch.nn.{', torch.nn.'.join(sorted(MODULES))}"
            )
        handler(self, node, mod, node.args[0])

    def _function(self, node):
        if node.op == "call_method":
            key, name = ("method", node.target), f"Tensor.{node.target}"
        else:
            key, name = node.target, _qualified(node.target)
        handler = FUNCTIONS.get(key)
        if handler is None:
            raise ValueError(f"{name} is not supported")
        handler(self, node)


def _qualified(fn):
    module = getattr(fn, "__module__", None) or ("torch" if "torch" in repr(fn) else "builtins")
    return f"{module}.{getattr(fn, '__name__', repr(fn))}"


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
        ``reshape``), permutes, pads (``F.pad``), averages over the spatial axes (``x.mean((2, 3))``),
        scales by constants or calls ``F.conv2d`` / ``F.linear`` on its parameters (shared weights
        too). A module in training mode is put in eval mode (with a warning): batch norm then
        uses its running statistics.
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
    if not FUNCTIONS:
        FUNCTIONS.update(function_table())
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
    """Raise when the converted model and PyTorch disagree on the example batch (relative to the
    largest output; PyTorch's float32 rounding allowed for)."""
    X = example.detach().cpu().numpy().astype(np.float64)
    ours = model(X)
    theirs = expected.detach().cpu().numpy().astype(np.float64)
    tol = 1e-8 if str(example.dtype) == "torch.float64" else 1e-4
    err = np.abs(ours - theirs).max() / max(1.0, np.abs(theirs).max())
    if not err <= tol:
        raise ValueError(
            f"the converted model differs from PyTorch on example_input (relative error {err:.2g}); "
            "a reshape may depend on the batch size (pass an example batch of 2 or more)"
        )


__all__ = ["from_torch"]
