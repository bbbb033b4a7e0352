"""bowlrp: pixel-wise explanations of bag-of-words/SVM image classifiers (and, with ``nets``, of
multilayer networks) by Layer-wise Relevance Propagation (Bach et al., PLOS ONE 2015).

Public names are imported lazily so that ``import bowlrp`` stays cheap (numba kernels compile on
first use, not on import).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (add a line here when a module gains a public name)
_EXPORTS = {
    "Heatmap": "bowlrp.heatmap",
    "montage": "bowlrp.heatmap",
    "render": "bowlrp.heatmap",
    "BoWClassifier": "bowlrp.pipeline",
    "explain_tiles": "bowlrp.decompose",
    "DenseSIFT": "bowlrp.features",
    "LocalFeatures": "bowlrp.features",
    "save_model": "bowlrp.persist",
    "load_model": "bowlrp.persist",
    "explain_batch": "bowlrp.batch",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        # submodules too (``bowlrp.evaluation``), without importing them all up front
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module 'bowlrp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
