"""Shared PyTorch/zennit helpers for the tests (and ``benchmarks/``): importing zennit without a
working torchvision, and a PyTorch twin of a ``nets.Graph`` whose residual adds are zennit's ``Sum``
modules, so zennit's composites attach the same rules to the same nodes."""

from __future__ import annotations

import sys
import types

import numpy as np

import nets


def import_zennit():
    """``(torch, zennit)`` with zennit's attribution, composites and layer modules importable.

    zennit's top-level package imports torchvision only for its ResNet canonizers; when torchvision
    is missing or built for another torch, a placeholder module stands in (those canonizers are
    not used here). Raises ImportError when torch or zennit is not installed.
    """
    import torch

    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or built for another torch
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        tv = types.ModuleType("torchvision")
        tv.models = types.ModuleType("torchvision.models")
        tv.models.resnet = types.ModuleType("torchvision.models.resnet")
        tv.models.resnet.Bottleneck = type("Bottleneck", (torch.nn.Module,), {})
        tv.models.resnet.BasicBlock = type("BasicBlock", (torch.nn.Module,), {})
        sys.modules.update(
            {
                "torchvision": tv,
                "torchvision.models": tv.models,
                "torchvision.models.resnet": tv.models.resnet,
            }
        )
    import zennit.attribution  # noqa: F401
    import zennit.composites  # noqa: F401
    import zennit.layer  # noqa: F401

    return torch, sys.modules["zennit"]


def _module(layer, torch, zennit, dtype):
    t = torch.nn
    if isinstance(layer, nets.Dense):
        m = t.Linear(layer.W.shape[1], layer.W.shape[0], bias=layer.b is not None)
    elif isinstance(layer, nets.Conv2D):
        o, c, kh, kw = layer.W.shape
        m = t.Conv2d(
            c * layer.groups,
            o,
            (kh, kw),
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=layer.b is not None,
        )
    elif isinstance(layer, nets.ReLU):
        return t.ReLU()
    elif isinstance(layer, nets.MaxPool2D):
        return t.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
    elif isinstance(layer, nets.AvgPool2D):
        return t.AvgPool2d(
            layer.kernel_size, layer.stride, layer.padding, count_include_pad=layer.count_include_pad
        )
    elif isinstance(layer, nets.GlobalAvgPool2D):
        return t.AdaptiveAvgPool2d(1)
    elif isinstance(layer, nets.GlobalMaxPool2D):
        return t.AdaptiveMaxPool2d(1)
    elif isinstance(layer, nets.Clip) and (layer.low, layer.high) == (0.0, 6.0):
        return t.ReLU6()
    elif isinstance(layer, nets.Flatten):
        return t.Flatten()
    elif isinstance(layer, nets.Add):
        return zennit.layer.Sum(dim=-1)
    elif isinstance(layer, nets.Concat):
        return None  # torch.cat in forward: its gradient routes relevance slice by slice
    else:
        raise TypeError(f"no PyTorch twin for {layer.kind}")
    m.weight.data = torch.from_numpy(np.array(layer.W, dtype=dtype))
    if layer.b is not None:
        m.bias.data = torch.from_numpy(np.array(layer.b, dtype=dtype))
    return m


def to_torch(graph, torch, zennit, dtype=np.float64):
    """A ``torch.nn.Module`` (float64, or ``dtype``) computing ``graph`` node by node (modules
    registered in topological order, so zennit's "first layer" is the first convolution reading the
    input)."""

    class GraphModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.node_modules = torch.nn.ModuleDict()
            self.plan = []
            for node, src in zip(graph.nodes, graph.sources):
                m = _module(node.layer, torch, zennit, dtype)
                key = node.name.replace(".", "_")
                if m is not None:
                    self.node_modules[key] = m
                self.plan.append((key, node.layer, src))

        def forward(self, x):
            acts = [x]
            for key, layer, src in self.plan:
                xs = [acts[j] for j in src]
                if isinstance(layer, nets.Add):
                    out = self.node_modules[key](torch.stack(xs, dim=-1))
                elif isinstance(layer, nets.Concat):
                    out = torch.cat(xs, dim=layer.axis)
                else:
                    out = self.node_modules[key](xs[0])
                    if isinstance(layer, (nets.GlobalAvgPool2D, nets.GlobalMaxPool2D)):
                        out = out.flatten(1)
                acts.append(out)
            return acts[-1]

    module = GraphModule().eval()
    return module.double() if np.dtype(dtype) == np.float64 else module.float()


#: our preset name -> zennit composite (ZBox bounds as given)
def zennit_composite(zennit, preset, low=None, high=None):
    c = zennit.composites
    return {
        "epsilon_plus": lambda: c.EpsilonPlus(),
        "epsilon_plus_flat": lambda: c.EpsilonPlusFlat(),
        "epsilon_alpha2_beta1": lambda: c.EpsilonAlpha2Beta1(),
        "epsilon_alpha2_beta1_flat": lambda: c.EpsilonAlpha2Beta1Flat(),
        "epsilon_gamma_box": lambda: c.EpsilonGammaBox(low=low, high=high),
    }[preset]()


def zennit_relevance(torch, zennit, module, X, target, preset, low=None, high=None):
    """zennit's relevance of ``target`` (one int per sample) under ``preset``; the explained output
    relevance is the target logit, as in ``nets.LRP``."""
    x = torch.from_numpy(np.array(X)).requires_grad_(True)  # the module's dtype
    lo = None if low is None else torch.full_like(x, low)
    hi = None if high is None else torch.full_like(x, high)
    composite = zennit_composite(zennit, preset, lo, hi)
    with zennit.attribution.Gradient(model=module, composite=composite) as attributor:

        def attr_output(out):
            mask = torch.zeros_like(out)
            mask[torch.arange(len(out)), torch.as_tensor(target)] = 1.0
            return out.detach() * mask

        _, relevance = attributor(x, attr_output)
    return relevance.detach().numpy()
