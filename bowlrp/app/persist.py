"""Saving and loading fitted models: BoW pipelines with joblib, networks in the ``nets`` formats.

A BoW model file is a joblib file holding a small header (format name and version, the versions of
bowlrp, scikit-learn and numpy that wrote it) and the fitted estimator, itself serialised by joblib
into bytes. The header is read first, so a file from an incompatible format version is refused with
a message that says which versions are involved *before* any of its objects are unpickled (an
unpickle of a changed class fails with an obscure ``AttributeError`` otherwise).

Networks are saved in our own NPZ format (``model.save(path)``, read by ``nets.load``) and ONNX
files are read by ``nets.load_onnx``; :func:`load_model` picks the right reader from the file.

Security: joblib files are pickles. Load only model files you trust.
"""

from __future__ import annotations

import io
import os
import warnings

import joblib

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "IncompatibleModelError",
    "save_model",
    "load_model",
    "model_kind",
    "read_header",
]

FORMAT_NAME = "bowlrp-bow-model"
# Bump when the layout of the saved BoW estimator changes in a way older code cannot read.
FORMAT_VERSION = 1
# Oldest format this code still reads.
MIN_FORMAT_VERSION = 1

_ZIP_MAGIC = b"PK\x03\x04"


class IncompatibleModelError(ValueError):
    """A model file written by a format version this bowlrp cannot read."""


def model_kind(model) -> str:
    """``"bow"`` for a BoW/SVM pipeline, ``"network"`` for a ``nets`` model.

    Raises
    ------
    TypeError
        Neither.
    """
    try:  # nets may be absent in a minimal installation; a model of it cannot exist then
        from nets.graph import Graph  # a Sequential is a Graph too
    except ImportError:  # pragma: no cover - nets ships with bowlrp
        Graph = ()
    if isinstance(model, Graph):
        return "network"
    from bowlrp.bow.classifier import BoWClassifier

    if isinstance(model, BoWClassifier):
        return "bow"
    raise TypeError(
        f"expected a fitted BoWClassifier or a nets.Sequential (or nets.Graph), got {type(model).__name__}"
    )


def _versions() -> dict:
    import numpy
    import sklearn

    import bowlrp

    return {
        "bowlrp_version": bowlrp.__version__,
        "sklearn_version": sklearn.__version__,
        "numpy_version": numpy.__version__,
    }


def save_model(model, path, compress: int = 3) -> str:
    """Save a fitted model to one file.

    Parameters
    ----------
    model : BoWClassifier or nets.Sequential
        A BoW pipeline is written as a versioned joblib file (any suffix; ``.joblib`` is usual).
        A network is written in the ``nets`` NPZ format (the path should end in ``.npz``).
    path : str or path
    compress : int, default=3
        joblib compression level for BoW models (0 = none).

    Returns
    -------
    str : the path written.

    Examples
    --------
    >>> from bowlrp.app.persist import save_model, load_model  # doctest: +SKIP
    >>> save_model(clf, "model.joblib")                     # doctest: +SKIP
    >>> clf2 = load_model("model.joblib")                   # doctest: +SKIP
    """
    path = os.fspath(path)
    kind = model_kind(model)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if kind == "network":
        model.save(path)
        return path
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model)
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=0)  # the outer dump compresses everything once
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        **_versions(),
        "model": buffer.getvalue(),
    }
    # write next to the target and rename, so an interrupted save never leaves half a model
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        joblib.dump(payload, tmp, compress=compress)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _load_joblib(path: str):
    try:
        return joblib.load(path)
    except Exception as exc:  # joblib/pickle raise many types for foreign or damaged files
        raise ValueError(
            f"{path} is not a readable bowlrp model file ({type(exc).__name__}: {exc})"
        ) from exc


def read_header(path) -> dict:
    """The header of a saved BoW model (format, versions, class) without loading the model."""
    path = os.fspath(path)
    payload = _load_joblib(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is a joblib file but not a bowlrp model saved by save_model")
    return {k: v for k, v in payload.items() if k != "model"}


def _check_version(path: str, payload: dict) -> None:
    version = payload.get("format_version")
    if not isinstance(version, int):
        raise IncompatibleModelError(f"{path}: model header has no valid format version ({version!r})")
    writer = payload.get("bowlrp_version", "unknown")
    import bowlrp

    if version > FORMAT_VERSION:
        raise IncompatibleModelError(
            f"{path} was saved by bowlrp {writer} in model format {version}; this bowlrp "
            f"{bowlrp.__version__} reads formats {MIN_FORMAT_VERSION}..{FORMAT_VERSION}. "
            "Upgrade bowlrp to load it."
        )
    if version < MIN_FORMAT_VERSION:
        raise IncompatibleModelError(
            f"{path} was saved by bowlrp {writer} in model format {version}, which this bowlrp "
            f"{bowlrp.__version__} no longer reads (formats {MIN_FORMAT_VERSION}..{FORMAT_VERSION}). "
            "Re-fit the model (bowlrp fit) or load it with the older bowlrp and save it again."
        )


def load_model(path):
    """Load a model saved by :func:`save_model`, ``model.save`` or exported to ONNX.

    Parameters
    ----------
    path : str or path
        ``.onnx``: an ONNX network (``nets.load_onnx``); ``.txt``: a network in the LRP Toolbox
        text format (``nets.load_toolbox``); an NPZ (zip) file: a network in our format
        (``nets.load``); otherwise a BoW model file written by :func:`save_model`.

    Returns
    -------
    BoWClassifier or nets.Sequential

    Raises
    ------
    IncompatibleModelError
        The file was written in a format version this bowlrp cannot read.
    ValueError
        The file does not exist, is damaged, or is not a model file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"model file {path!r} does not exist")
    if path.lower().endswith(".onnx"):
        import nets

        return nets.load_onnx(path)
    if path.lower().endswith(".txt"):  # the LRP Toolbox's plain-text network format
        import nets

        return nets.load_toolbox(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == _ZIP_MAGIC:
        import nets

        return nets.load(path)
    payload = _load_joblib(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        # a bare estimator dumped with joblib.dump(clf): usable, but nothing to check it against
        try:
            model_kind(payload)
        except TypeError:
            raise ValueError(
                f"{path} is a joblib file but not a bowlrp model (it holds a {type(payload).__name__})"
            ) from None
        warnings.warn(
            f"{path} has no bowlrp format header (saved with joblib.dump, not bowlrp.app.persist.save_model): "
            "its compatibility cannot be checked",
            UserWarning,
            stacklevel=2,
        )
        return payload
    _check_version(path, payload)
    try:
        model = joblib.load(io.BytesIO(payload["model"]))
    except Exception as exc:
        import bowlrp

        raise IncompatibleModelError(
            f"{path} (saved by bowlrp {payload.get('bowlrp_version')}, scikit-learn "
            f"{payload.get('sklearn_version')}) cannot be unpickled with bowlrp {bowlrp.__version__}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return model
