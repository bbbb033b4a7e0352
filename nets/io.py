"""The ``nets`` model file: one NPZ archive with the architecture as JSON and every weight array.

Layout of the archive (a plain zip of ``.npy`` members, readable with ``numpy.load``)::

    __architecture__   0-d unicode array: JSON {"format": "nets.Graph", "version": 2,
                       "inputs": [name], "outputs": [name], "sequential": bool,
                       "input_range": [low, high] or null, "input_shape": [C, H, W] or null,
                       "layers": [{"kind", "name", "config", "arrays": [keys], "inputs": [names]}, ...]}
    layer<i>/<key>     the arrays of node i (``layer.get_arrays()``), dtype kept

Version 1 (``"format": "nets.Sequential"``, no ``inputs``: a chain) is still read. A model saved
from a ``Sequential`` loads as a ``Sequential``, any other graph as a ``Graph``.

Nothing is pickled, so loading a file cannot run code. Arrays keep their dtype and the JSON keeps
floats exactly (``repr`` round trip), so a loaded model computes bit-identical outputs. The zip
format's CRC-32 checks catch corrupted bytes and truncation; every such failure, a file from a
newer format version, or a missing member becomes a ``ValueError`` that says which.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["save_model", "load", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "nets.Graph"
#: Bump when the layout changes; files with a larger number are refused with a clear message.
#: 1: chains only (format "nets.Sequential"); 2: graphs (node inputs, graph inputs/outputs).
FORMAT_VERSION = 2
_FORMAT_NAMES = {1: "nets.Sequential", 2: FORMAT_NAME}
_ARCH_KEY = "__architecture__"


def _array_key(i, key):
    return f"layer{i}/{key}"


def _json_default(value):
    # layer configs are plain Python, but be lenient with numpy scalars and tuples of them
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"layer config value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def save_model(model, path):
    """Save a :class:`nets.Graph` (or ``Sequential``) to one ``.npz`` file (architecture as JSON plus
    weights).

    Parameters
    ----------
    model : nets.Graph or nets.Sequential
    path : str or os.PathLike
        Written exactly as given (no suffix is appended); ``.npz`` is the natural suffix. The file
        is written to a temporary name first and then moved into place, so an interrupted save
        never leaves a half-written model under ``path``.

    Returns
    -------
    path : str

    Examples
    --------
    >>> import os, tempfile, numpy as np, nets
    >>> model = nets.Sequential([nets.Dense(np.eye(2), np.ones(2)), nets.ReLU()])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> _ = model.save(path)                      # same as nets.io.save_model(model, path)
    >>> loaded = nets.load(path)
    >>> loaded.names, np.array_equal(loaded(np.ones((1, 2))), model(np.ones((1, 2))))
    (['dense_0', 'relu_1'], True)
    """
    from .graph import Graph
    from .model import Sequential

    if not isinstance(model, Graph):
        raise TypeError(f"save_model expects a nets.Graph or nets.Sequential, got {type(model).__name__}")
    path = os.fspath(path)
    layers_meta = []
    arrays: dict[str, np.ndarray] = {}
    for i, node in enumerate(model.nodes):
        layer_arrays = node.layer.get_arrays()
        for key, value in layer_arrays.items():
            arrays[_array_key(i, key)] = np.asarray(value)
        layers_meta.append(
            {
                "kind": node.layer.kind,
                "name": node.name,
                "config": node.layer.get_config(),
                "arrays": sorted(layer_arrays),
                "inputs": list(node.inputs),
            }
        )
    from . import __version__

    architecture = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "nets_version": __version__,
        "inputs": list(model.inputs),
        "outputs": list(model.outputs),
        "sequential": isinstance(model, Sequential),
        "input_range": None if model.input_range is None else list(model.input_range),
        "input_shape": None if model.input_shape is None else list(model.input_shape),
        "layers": layers_meta,
    }
    arrays[_ARCH_KEY] = np.array(json.dumps(architecture, default=_json_default))
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".nets-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _read_archive(path):
    """Every member of the archive as numpy arrays, or a ValueError saying what is wrong."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # reads every member and checks its CRC-32
        if bad is not None:
            raise ValueError(f"member {bad!r} fails its CRC check")
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a nets model file, or corrupt/truncated ({exc})") from None
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise ValueError(
            f"{path}: corrupt or truncated nets model file ({type(exc).__name__}: {exc})"
        ) from None
    except Exception as exc:  # zlib.error and friends from damaged members
        raise ValueError(f"{path}: corrupt nets model file ({type(exc).__name__}: {exc})") from None


def _parse_architecture(path, members):
    if _ARCH_KEY not in members:
        raise ValueError(f"{path}: not a nets model file (no {_ARCH_KEY!r} member)")
    raw = members[_ARCH_KEY]
    if raw.ndim != 0 or raw.dtype.kind != "U":
        raise ValueError(f"{path}: the {_ARCH_KEY!r} member is not a JSON string")
    try:
        arch = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: the architecture is not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: the architecture JSON is nested too deeply to be a nets model") from None
    if not isinstance(arch, dict) or arch.get("format") not in _FORMAT_NAMES.values():
        raise ValueError(
            f"{path}: not a nets model file "
            f"(format {arch.get('format') if isinstance(arch, dict) else None!r})"
        )
    version = arch.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: invalid format version {version!r}")
    if version <= FORMAT_VERSION and arch["format"] != _FORMAT_NAMES[version]:
        raise ValueError(f"{path}: format {arch['format']!r} does not match version {version}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: written by a newer version of nets (file format version {version}; this version "
            f"reads up to {FORMAT_VERSION}). Upgrade bowlrp/nets to load it."
        )
    layers = arch.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{path}: the architecture lists no layers")
    keys = {"kind", "name", "config", "arrays"} | ({"inputs"} if version >= 2 else set())
    for i, meta in enumerate(layers):
        if not isinstance(meta, dict) or not keys <= set(meta):
            raise ValueError(f"{path}: layer {i} description misses {'/'.join(sorted(keys))}")
        if not isinstance(meta["config"], dict) or not isinstance(meta["arrays"], list):
            raise ValueError(f"{path}: layer {i} has a config that is not an object or arrays not a list")
    return arch


def load(path):
    """Load a model written by :func:`save_model` (or ``Sequential.save``).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    model : nets.Sequential or nets.Graph
        Same nodes, names, configs and arrays (dtypes included) as the saved model; a model saved
        from a ``Sequential`` (and every format-1 file) loads as a ``Sequential``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a nets model, is corrupt or truncated, misses a member, names an
        unknown layer type, describes an invalid graph, is nested absurdly deeply, or comes from a
        newer format version.

    Examples
    --------
    >>> import os, tempfile, numpy as np, nets
    >>> path = os.path.join(tempfile.mkdtemp(), "m.npz")
    >>> _ = nets.Sequential([nets.Dense(np.ones((1, 3)))]).save(path)
    >>> nets.load(path)(np.ones((2, 3))).ravel().tolist()
    [3.0, 3.0]
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such nets model file: {path}")
    members = _read_archive(path)
    arch = _parse_architecture(path, members)
    try:
        return _build(path, arch, members)
    except RecursionError:
        raise ValueError(f"{path}: the architecture is nested too deeply to be a nets model") from None


def _build(path, arch, members):
    from .graph import Graph, Node, _check_range
    from .layers import layer_from_config
    from .model import Sequential

    nodes = []
    for i, meta in enumerate(arch["layers"]):
        arrays = {}
        for key in meta["arrays"]:
            member = _array_key(i, key)
            if member not in members:
                raise ValueError(
                    f"{path}: missing array {member!r} of layer {meta['name']!r} ({meta['kind']})"
                )
            arrays[key] = members[member]
        try:
            layer = layer_from_config(meta["kind"], meta["config"], arrays)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(
                f"{path}: cannot rebuild layer {i} {meta['name']!r} ({meta['kind']}): {exc}"
            ) from None
        nodes.append((meta["name"], layer, meta.get("inputs")))
    try:
        if arch["version"] == 1 or arch.get("sequential"):
            model = Sequential([layer for _, layer, _ in nodes], names=[name for name, _, _ in nodes])
            if arch["version"] >= 2 and model.inputs != tuple(arch.get("inputs", ())):
                raise ValueError("a Sequential's input name does not match")
        else:
            model = Graph([Node(*n) for n in nodes], arch.get("inputs"), arch.get("outputs"))
        if arch.get("input_range") is not None:
            model.input_range = _check_range(arch["input_range"])
        if arch.get("input_shape") is not None:
            shape = arch["input_shape"]
            if not isinstance(shape, list) or not all(isinstance(v, int) and v > 0 for v in shape):
                raise ValueError(f"input_shape must be a list of positive integers, got {shape!r}")
            model.input_shape = tuple(shape)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: invalid graph ({exc})") from None
    return model
