"""nets: networks as graphs of layers (dense, conv, pooling, batch norm, residual adds, concat, ...)
and their LRP explanations.

Public names are imported lazily, as in ``bowlrp``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
# bowlrp.app.nets_check looks for this: another top-level package named "nets" exists on PyPI
__bowlrp_nets__ = True

# public name -> module that defines it (add a line here when a module gains a public name)
_EXPORTS: dict[str, str] = {
    "Sequential": "nets.model",
    "Graph": "nets.graph",
    "Node": "nets.graph",
    "Dense": "nets.layers",
    "Conv2D": "nets.layers",
    "MaxPool2D": "nets.layers",
    "AvgPool2D": "nets.layers",
    "GlobalAvgPool2D": "nets.layers",
    "Flatten": "nets.layers",
    "ReLU": "nets.layers",
    "LeakyReLU": "nets.layers",
    "Tanh": "nets.layers",
    "Sigmoid": "nets.layers",
    "BatchNorm1D": "nets.layers",
    "BatchNorm2D": "nets.layers",
    "Dropout": "nets.layers",
    "Softmax": "nets.layers",
    "Add": "nets.layers",
    "Concat": "nets.layers",
    "Scale": "nets.layers",
    "Pad": "nets.layers",
    "LRN": "nets.layers",
    "Transpose": "nets.layers",
    "Reshape": "nets.layers",
    "Clip": "nets.layers",
    "GlobalMaxPool2D": "nets.layers",
    "Identity": "nets.layers",
    "LRP": "nets.attribution",
    "Diagnostics": "nets.attribution",
    "Sensitivity": "nets.attribution",
    "GradientTimesInput": "nets.attribution",
    "TaylorDecomposition": "nets.attribution",
    "Composite": "nets.composites",
    "get_composite": "nets.composites",
    "fold_batch_norm": "nets.canonizers",
    "Epsilon": "nets.rules",
    "ZPlus": "nets.rules",
    "AlphaBeta": "nets.rules",
    "Gamma": "nets.rules",
    "ZBox": "nets.rules",
    "WSquare": "nets.rules",
    "Flat": "nets.rules",
    "Pass": "nets.rules",
    "Norm": "nets.rules",
    "WinnerTakesAll": "nets.rules",
    "LRNTaylor": "nets.rules",
    "save_model": "nets.io",
    "load": "nets.io",
    "from_sklearn": "nets.sklearn",
    "load_onnx": "nets.onnx_import",
    "from_torch": "nets.torch_import",
    "load_toolbox": "nets.toolbox",
    "ConvNetClassifier": "nets.train",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        # submodules too (``nets.train``), without importing them all up front
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module 'nets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(_EXPORTS) + ["__version__"]
