"""Reading joblib/pickle model files the user has said they trust, including files that name the
module paths of bowlrp before the layered layout.

Unpickling runs whatever code the file names: this module is used only behind an explicit
``trusted=True`` (``--trust-pickle`` on the command line). Files written before commit 6230920
name the old flat modules (``bowlrp.pipeline.BoWClassifier``, ``bowlrp.features.DenseSIFT``,
``bowlrp.svm``...); :class:`_RenamingUnpickler` maps them to where the classes live now.
"""

from __future__ import annotations

import io
import os

__all__ = ["LEGACY_MODULES", "load_trusted"]

# module path in files written by older bowlrp -> module path today
LEGACY_MODULES = {
    "bowlrp.pipeline": "bowlrp.bow.classifier",
    **{f"bowlrp.{name}": f"bowlrp.bow.{name}"
       for name in ("features", "_sift_kernels", "vocabulary", "encoding", "kernels", "_kernels", "svm",
                    "decompose")},
    **{f"bowlrp.{name}": f"bowlrp.app.{name}"
       for name in ("batch", "cli", "demo", "persist", "report", "runs")},
    "bowlrp.explainers": "bowlrp.app.adapters",
    "bowlrp._numba": "bowlrp.jit",
    "bowlrp._validation": "bowlrp.validation",
    "datasets.synthetic": "bowlrp.app.scenes",
}


def _unpickler_class():
    from joblib.numpy_pickle import NumpyUnpickler

    class _RenamingUnpickler(NumpyUnpickler):
        """joblib's unpickler (it restores joblib's array wrappers) with old module paths mapped."""

        def find_class(self, module, name):
            return super().find_class(LEGACY_MODULES.get(module, module), name)

    return _RenamingUnpickler


def load_trusted(source):
    """Unpickle a joblib file (a path or a bytes buffer), mapping legacy module paths.

    Runs code named by the file: call it only for files the user trusts.
    """
    from joblib.numpy_pickle import _validate_fileobject_and_memmap

    if isinstance(source, (bytes, bytearray)):
        handle, filename = io.BytesIO(source), ""
    else:
        filename = os.fspath(source)
        handle = open(filename, "rb")  # noqa: SIM115 - closed below, also on errors
    try:
        with _validate_fileobject_and_memmap(handle, filename, None) as (fobj, _):
            return _unpickler_class()(filename, fobj, ensure_native_byte_order=True).load()
    finally:
        handle.close()
