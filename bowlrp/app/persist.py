"""Saving and loading fitted models; loading never runs code from a file unless the user trusts it.

Formats, recognised by their content (never by the file name alone):

* **the safe format** (default of :func:`save_model` and ``bowlrp fit``): an NPZ archive holding
  only arrays (read with ``allow_pickle=False``) and one JSON member, ``__bowlrp_model__``, with a
  header (format name and version, the versions of bowlrp, scikit-learn and numpy that wrote it)
  and the estimator's attributes (:mod:`bowlrp.app.safe_state`). For fitted ``BoWClassifier`` and
  ``nets.ConvNetClassifier`` (any scikit-learn estimator defined in bowlrp or nets);
* ``nets`` networks: the NPZ of ``model.save`` (``nets.load``), ONNX (``nets.load_onnx``) and
  the LRP Toolbox's text format (``nets.load_toolbox``). None of them unpickles anything;
* **joblib/pickle** (the format of bowlrp before the safe one, or ``format="joblib"``): unpickling
  runs whatever code the file names. It is read only with ``trusted=True`` (``--trust-pickle``);
  otherwise it is refused before a byte of it is unpickled. Files written before the layered
  layout (``bowlrp.pipeline.BoWClassifier``, ...) load with the old module paths mapped.

Files are written next to the target and renamed into place (an interrupted save leaves the old
file), with the permissions the user's umask gives new files.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile

import joblib
import numpy as np

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SAFE_FORMAT_NAME",
    "SAFE_FORMAT_VERSION",
    "IncompatibleModelError",
    "UntrustedModelError",
    "save_model",
    "load_model",
    "model_kind",
    "read_header",
    "sniff_format",
]

# the joblib format (trusted files only)
FORMAT_NAME = "bowlrp-bow-model"
# Bump when the layout of the saved BoW estimator changes in a way older code cannot read.
FORMAT_VERSION = 1
# Oldest format this code still reads.
MIN_FORMAT_VERSION = 1

# the safe format
SAFE_FORMAT_NAME = "bowlrp-estimator"
SAFE_FORMAT_VERSION = 1
_SAFE_MEMBER = "__bowlrp_model__"
_NETS_MEMBER = "__architecture__"

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# how a pickle or a joblib file (raw, zlib, gzip, bz2, xz, lzma, lz4; old joblib "ZF") starts
_PICKLE_MAGIC = (b"\x80", b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x5d\x00\x00",
                 b"\x04\x22\x4d\x18", b"ZF")
_TRUST_HINT = ("loading it would run any code it contains. Load it only if you trust its source: "
               "load_model(path, trusted=True), or on the command line --trust-pickle; then save it "
               "again with save_model (the safe format) to drop the need")


class IncompatibleModelError(ValueError):
    """A model file written by a format version this bowlrp cannot read."""


class UntrustedModelError(ValueError):
    """A pickle/joblib model file, refused because the caller did not say it is trusted."""


def model_kind(model) -> str:
    """``"bow"`` for a BoW/SVM pipeline, ``"network"`` for a ``nets`` model.

    Raises
    ------
    TypeError
        Neither.
    """
    from bowlrp.app.adapters import network_types

    if isinstance(model, network_types()):
        return "network"
    from bowlrp.bow.classifier import BoWClassifier

    if isinstance(model, BoWClassifier):
        return "bow"
    raise TypeError(
        f"expected a fitted BoWClassifier or a nets.Sequential (or nets.Graph), got {type(model).__name__}"
    )


def _versions() -> dict:
    import sklearn

    import bowlrp

    return {
        "bowlrp_version": bowlrp.__version__,
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
    }


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (mkstemp would give 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_atomic(path: str, write) -> None:
    """``write(file)`` into a temporary file next to ``path``, fsync it, rename it into place."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_model(model, path, compress: int = 3, *, format: str = "npz") -> str:  # noqa: A002
    """Save a fitted model to one file.

    Parameters
    ----------
    model : BoWClassifier, nets.ConvNetClassifier or nets.Sequential
        An estimator is written in the safe format (``format="npz"``, any suffix; ``.npz`` is
        usual) or as a versioned joblib pickle (``format="joblib"``: loading it needs
        ``trusted=True``). A network is written in the ``nets`` NPZ format.
    path : str or path
    compress : int, default=3
        joblib compression level (0 = none); the safe format is always compressed.
    format : {"npz", "joblib"}, default="npz"

    Returns
    -------
    str : the path written.

    Examples
    --------
    >>> from bowlrp.app.persist import save_model, load_model  # doctest: +SKIP
    >>> save_model(clf, "model.npz")                         # doctest: +SKIP
    >>> clf2 = load_model("model.npz")                       # doctest: +SKIP
    """
    from bowlrp.app.adapters import network_types
    from bowlrp.app.safe_state import encode, is_safe_estimator

    path = os.fspath(path)
    if format not in ("npz", "joblib"):
        raise ValueError(f"format must be 'npz' or 'joblib', got {format!r}")
    if not (isinstance(model, network_types()) or is_safe_estimator(model)):
        raise TypeError(f"expected a fitted BoWClassifier or a nets.Sequential (or another bowlrp/nets "
                        f"estimator such as nets.ConvNetClassifier), got {type(model).__name__}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if isinstance(model, network_types()):
        model.save(path)
        os.chmod(path, _new_file_mode())
        return path
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model)
    header = {"class": f"{type(model).__module__}.{type(model).__qualname__}", **_versions()}
    if format == "joblib":
        import io

        buffer = io.BytesIO()
        joblib.dump(model, buffer, compress=0)  # the outer dump compresses everything once
        payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **header,
                   "model": buffer.getvalue()}
        _write_atomic(path, lambda fh: joblib.dump(payload, fh, compress=compress))
        return path
    tree, arrays = encode(model)
    document = {"format": SAFE_FORMAT_NAME, "format_version": SAFE_FORMAT_VERSION, **header, "state": tree}
    members = {_SAFE_MEMBER: np.array(json.dumps(document, allow_nan=False)), **arrays}
    _write_atomic(path, lambda fh: np.savez_compressed(fh, **members))
    return path


# ---------------------------------------------------------------------- recognising a file
def sniff_format(path) -> str:
    """What a model file is, from its content: ``"npz"`` (a zip: the safe format or a nets model),
    ``"toolbox"`` (LRP Toolbox text), ``"pickle"`` (joblib/pickle), ``"onnx"`` or ``"unknown"``.

    Reads only the first bytes; nothing is unpickled or imported.
    """
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(_ZIP_MAGIC):
        return "npz"
    words = head.decode("ascii", errors="replace").split()
    from bowlrp.app.nets_check import import_nets

    import_nets()  # a foreign 'nets' fails here with a clear message, not in the next line
    from nets.toolbox import _KNOWN as toolbox_layers

    if words and words[0] in toolbox_layers:
        return "toolbox"
    if head.startswith(_PICKLE_MAGIC):
        return "pickle"
    # an ONNX ModelProto starts with field 1 (ir_version) as a varint: byte 0x08
    if head.startswith(b"\x08") or os.fspath(path).lower().endswith(".onnx"):
        return "onnx"
    return "unknown"


def _unreadable(path, reason) -> ValueError:
    return ValueError(f"{path} is not a readable bowlrp model file ({reason})")


def _zip_members(path) -> set:
    try:
        with zipfile.ZipFile(path) as zf:
            return {name.removesuffix(".npy") for name in zf.namelist()}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _unreadable(path, f"damaged zip archive: {exc}") from None


def _read_safe(path):
    """(document, arrays) of a safe-format file, every failure a ValueError naming the file."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # reads every member and checks its CRC-32
        if bad is not None:
            raise _unreadable(path, f"member {bad!r} fails its CRC check")
        with np.load(path, allow_pickle=False) as npz:
            members = {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "readable bowlrp model" in str(exc):
            raise
        raise _unreadable(path, f"damaged or foreign archive: {exc}") from None
    except Exception as exc:  # BadZipFile, zlib.error, EOFError from damaged members
        raise _unreadable(path, f"damaged archive: {type(exc).__name__}: {exc}") from None
    foreign = sorted(k for k, v in members.items() if not isinstance(v, np.ndarray))
    if foreign:  # np.load hands back raw bytes for members that are not .npy files
        raise _unreadable(path, f"members {foreign} are not arrays")
    raw = members.pop(_SAFE_MEMBER)
    if raw.ndim != 0 or raw.dtype.kind != "U":
        raise _unreadable(path, f"the {_SAFE_MEMBER} member is not a JSON string")
    try:
        document = json.loads(str(raw))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _unreadable(path, f"the model description is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != SAFE_FORMAT_NAME:
        raise _unreadable(path, "the archive is not a bowlrp model")
    return document, members


def _check_safe_version(path, document) -> None:
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise IncompatibleModelError(f"{path}: model header has no valid format version ({version!r})")
    if version > SAFE_FORMAT_VERSION or version < 1:
        import bowlrp

        raise IncompatibleModelError(
            f"{path} was saved by bowlrp {document.get('bowlrp_version', 'unknown')} in safe model format "
            f"{version}; this bowlrp {bowlrp.__version__} reads formats 1..{SAFE_FORMAT_VERSION}. "
            "Upgrade bowlrp to load it."
        )


def _load_safe(path):
    from bowlrp.app.safe_state import UnsafeStateError, decode

    document, arrays = _read_safe(path)
    _check_safe_version(path, document)
    try:
        return decode(document.get("state"), arrays)
    except UnsafeStateError as exc:
        raise _unreadable(path, str(exc)) from None


# ---------------------------------------------------------------------- joblib (trusted only)
def _load_joblib(source, path):
    from bowlrp.app.trusted_pickle import load_trusted

    try:
        return load_trusted(source)
    except Exception as exc:  # joblib/pickle raise many types for foreign or damaged files
        raise _unreadable(path, f"{type(exc).__name__}: {exc}") from exc


def read_header(path, trusted: bool = False) -> dict:
    """The header of a saved estimator (format, versions, class) without its state.

    A joblib file's header is itself a pickle: it is read only with ``trusted=True``.
    """
    path = os.fspath(path)
    kind = sniff_format(path)
    if kind == "npz" and _SAFE_MEMBER in _zip_members(path):
        document, _ = _read_safe(path)
        return {k: v for k, v in document.items() if k != "state"}
    if not trusted:
        if kind == "pickle":
            raise UntrustedModelError(f"{path} is a pickle (joblib) file: {_TRUST_HINT}")
        raise _unreadable(path, "no bowlrp model header (a joblib file's header needs trusted=True)")
    payload = _load_joblib(path, path)
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


def _load_trusted_joblib(path):
    payload = _load_joblib(path, path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        # a bare estimator dumped with joblib.dump(clf): usable, but nothing to check it against
        try:
            model_kind(payload)
        except TypeError:
            raise ValueError(
                f"{path} is a joblib file but not a bowlrp model (it holds a {type(payload).__name__})"
            ) from None
        warnings.warn(
            f"{path} has no bowlrp format header (saved with joblib.dump, not "
            "bowlrp.app.persist.save_model): its compatibility cannot be checked",
            UserWarning,
            stacklevel=3,
        )
        return payload
    _check_version(path, payload)
    try:
        return _load_joblib(payload["model"], path)
    except ValueError as exc:
        import bowlrp

        raise IncompatibleModelError(
            f"{path} (saved by bowlrp {payload.get('bowlrp_version')}, scikit-learn "
            f"{payload.get('sklearn_version')}) cannot be unpickled with bowlrp {bowlrp.__version__}: "
            f"{exc.__cause__ or exc}"
        ) from exc


def load_model(path, trusted: bool = False):
    """Load a model saved by :func:`save_model`, ``model.save``, exported to ONNX or the LRP Toolbox.

    Parameters
    ----------
    path : str or path
        The format is recognised from the content (:func:`sniff_format`).
    trusted : bool, default=False
        Allow joblib/pickle files. Unpickling runs any code the file names: set it only for
        files from a source you trust. Without it such files are refused before anything in
        them is read beyond the first bytes.

    Returns
    -------
    BoWClassifier, nets.ConvNetClassifier or nets.Sequential

    Raises
    ------
    UntrustedModelError
        A pickle/joblib file and ``trusted`` is False.
    IncompatibleModelError
        The file was written in a format version this bowlrp cannot read.
    ValueError
        The file does not exist, is damaged, or is not a model file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"model file {path!r} does not exist")
    kind = sniff_format(path)
    if kind == "npz":
        members = _zip_members(path)
        if _SAFE_MEMBER in members:
            return _load_safe(path)
        if _NETS_MEMBER in members:
            from bowlrp.app.nets_check import import_nets

            return import_nets().load(path)
        raise _unreadable(path, "a zip/NPZ archive that is neither a bowlrp model nor a nets network")
    if kind == "toolbox":
        import nets

        return nets.load_toolbox(path)
    if kind == "onnx":
        import nets

        try:
            return nets.load_onnx(path)
        except ImportError:
            raise
        except Exception as exc:  # protobuf decoding errors of a file that is not ONNX at all
            raise _unreadable(path, f"not ONNX either: {type(exc).__name__}: {exc}") from None
    if not trusted:
        if kind == "pickle":
            raise UntrustedModelError(f"{path} is a pickle (joblib) file: {_TRUST_HINT}")
        raise _unreadable(path, "not a safe bowlrp model, a nets NPZ, ONNX or LRP Toolbox file")
    return _load_trusted_joblib(path)
