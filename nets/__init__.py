"""nets: multilayer networks (dense, conv, pooling, batch norm) and their LRP explanations.

Public names are imported lazily, as in ``bowlrp``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (add a line here when a module gains a public name)
_EXPORTS: dict[str, str] = {}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(_EXPORTS) + ["__version__"]
