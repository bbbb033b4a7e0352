"""bowlrp: pixel-wise explanations of bag-of-words/SVM image classifiers (and, with ``nets``, of
multilayer networks) by Layer-wise Relevance Propagation (Bach et al., PLOS ONE 2015).

The package is in layers; imports only point down:

* ``bowlrp.app``  - application: command line, batch runs, reports, persistence, demo, and the
  adapters that wrap a BoW model or a network as an :class:`~bowlrp.explainer.Explainer`.
* ``bowlrp.bow``  - the BoW model (features, vocabulary, encoding, kernels, SVM, classifier) and its
  decomposition; ``nets`` (a separate top-level package) is the network model at the same level.
* ``bowlrp`` top level - the core both branches share: ``heatmap``, ``evaluation``, ``imageio``,
  ``validation``, ``jit`` (the numba/threads policy) and ``explainer`` (the protocol).

Public names are imported lazily so that ``import bowlrp`` stays cheap (numba kernels compile on
first use, not on import).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (add a line here when a module gains a public name)
_EXPORTS = {
    "Heatmap": "bowlrp.heatmap",
    "montage": "bowlrp.montages",
    "render": "bowlrp.heatmap",
    "BoWClassifier": "bowlrp.bow.classifier",
    "explain_tiles": "bowlrp.bow.decompose",
    "DenseSIFT": "bowlrp.bow.features",
    "LocalFeatures": "bowlrp.bow.features",
    "save_model": "bowlrp.app.persist",
    "load_model": "bowlrp.app.persist",
    "explain_batch": "bowlrp.app.batch",
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
