"""A fitted estimator as arrays plus JSON, and back, without pickle: the safe model format.

:func:`encode` walks an estimator's attributes and turns them into a JSON tree plus a dict of
numpy arrays; :func:`decode` rebuilds the estimator. Loading runs no code from the file: the JSON
can only name

* plain values (None, bool, int, str, finite and non-finite floats), lists, tuples, dicts with
  string keys, slices and bytes;
* arrays and numpy scalars, kept in the NPZ (read with ``allow_pickle=False``, so no object
  arrays), with their dtype: a loaded estimator computes bit-identical results;
* ``nets`` networks, rebuilt from layer kinds, configs and arrays (``nets.layers.layer_from_config``);
* estimators: scikit-learn ``BaseEstimator`` subclasses *defined in* ``bowlrp`` or ``nets``
  modules. They are created without calling ``__init__`` and given the decoded attributes, the
  way pickle itself restores them, but no other class, function or module can be named.

Every tag is a one-key JSON object (``{"tuple": [...]}``, ``{"array": "a3"}``, ...); a plain dict
is ``{"dict": {...}}``, so a tag and a dict can never be confused.
"""

from __future__ import annotations

import importlib
import math

import numpy as np

__all__ = ["encode", "decode", "is_safe_estimator", "UnsafeStateError"]

# modules whose estimators the safe format may name (ours: importing them runs only our code)
_TRUSTED_PACKAGES = ("bowlrp.", "nets.")
_MAX_DEPTH = 64  # far deeper than any estimator we save; a crafted file cannot exhaust the stack


class UnsafeStateError(ValueError):
    """The state cannot be written (or was not written) in the safe format."""


def _estimator_base():
    from sklearn.base import BaseEstimator

    return BaseEstimator


def is_safe_estimator(obj) -> bool:
    """True for instances of scikit-learn estimators defined in ``bowlrp`` or ``nets``."""
    cls = type(obj)
    return isinstance(obj, _estimator_base()) and cls.__module__.startswith(_TRUSTED_PACKAGES)


def _network_classes() -> tuple:
    from bowlrp.app.adapters import network_types

    return network_types()


# ---------------------------------------------------------------------- encoding
class _Encoder:
    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, value) -> str:
        value = np.asarray(value)
        if value.dtype.hasobject:
            raise UnsafeStateError(f"arrays of Python objects cannot be saved safely (dtype {value.dtype})")
        key = f"a{len(self.arrays)}"
        self.arrays[key] = value
        return key

    def __call__(self, value, depth=0):  # noqa: C901 - one branch per kind of value, flat on purpose
        if depth > _MAX_DEPTH:
            raise UnsafeStateError("the estimator's state is nested too deeply (a cycle?)")
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.generic):  # before float: np.float64 is a float too, dtype kept
            return {"scalar": self.array(value)}
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"float": repr(value)}
        if isinstance(value, np.ndarray):
            return {"array": self.array(value)}
        if isinstance(value, bytes):
            return {"bytes": self.array(np.frombuffer(value, dtype=np.uint8))}
        if isinstance(value, list):
            return [self(v, depth + 1) for v in value]
        if isinstance(value, tuple):
            return {"tuple": [self(v, depth + 1) for v in value]}
        if isinstance(value, slice):
            return {"slice": [self(v, depth + 1) for v in (value.start, value.stop, value.step)]}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise UnsafeStateError("dicts with keys other than strings cannot be saved safely")
            return {"dict": {k: self(v, depth + 1) for k, v in value.items()}}
        if isinstance(value, _network_classes()):
            return {"network": self.network(value)}  # refuses all but a layer chain
        if is_safe_estimator(value):
            cls = type(value)
            return {"estimator": f"{cls.__module__}:{cls.__qualname__}",
                    "state": {k: self(v, depth + 1) for k, v in vars(value).items()}}
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        raise UnsafeStateError(f"a {kind} cannot be saved safely")

    def network(self, model):
        from nets.model import Sequential

        if type(model) is not Sequential:  # a branching graph is not a chain of layers
            raise UnsafeStateError(f"a {type(model).__name__} network inside an estimator cannot be saved "
                                   "in the safe format yet (save the network itself with model.save)")
        layers = []
        for name, layer in zip(model.names, model.layers):
            arrays = {k: self.array(v) for k, v in layer.get_arrays().items()}
            config = _plain(layer.get_config())
            layers.append({"kind": layer.kind, "name": name, "config": config, "arrays": arrays})
        return layers


def _plain(value):
    """A layer config (plain Python, maybe with numpy scalars) as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def encode(estimator) -> tuple[dict, dict]:
    """``(tree, arrays)`` of a fitted estimator: a JSON-able tree and the arrays it refers to.

    Raises
    ------
    UnsafeStateError
        Some attribute holds a value the safe format cannot represent.
    """
    if not is_safe_estimator(estimator):
        raise UnsafeStateError(f"{type(estimator).__name__} is not a bowlrp or nets estimator")
    encoder = _Encoder()
    tree = encoder(estimator)
    return tree, encoder.arrays


# ---------------------------------------------------------------------- decoding
def _estimator_class(name: str):
    module_name, sep, qualname = name.partition(":")
    # no private module (``bowlrp.__main__`` would run the command line on import) and no private class
    if (not sep or not module_name.startswith(_TRUSTED_PACKAGES) or not qualname.isidentifier()
            or qualname.startswith("_") or any(part.startswith("_") for part in module_name.split("."))):
        raise UnsafeStateError(f"the file names a class outside bowlrp/nets estimators: {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise UnsafeStateError(f"the file names an unknown module {module_name!r}") from None
    cls = getattr(module, qualname, None)
    if not (isinstance(cls, type) and cls.__module__ == module_name and issubclass(cls, _estimator_base())):
        raise UnsafeStateError(f"the file names {name!r}, which is not a bowlrp/nets estimator class")
    return cls


class _Decoder:
    def __init__(self, arrays):
        self.arrays = arrays

    def array(self, key):
        if not isinstance(key, str) or not isinstance(self.arrays.get(key), np.ndarray):
            raise UnsafeStateError(f"the file refers to a missing array {key!r}")
        return self.arrays[key]

    def __call__(self, node, depth=0):  # noqa: C901 - one branch per tag
        if depth > _MAX_DEPTH:
            raise UnsafeStateError("the model description is nested too deeply")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self(v, depth + 1) for v in node]
        if not isinstance(node, dict) or not node:
            raise UnsafeStateError(f"unexpected value in the model description: {node!r:.60}")
        tag = next(iter(node))
        body = node[tag]
        if tag == "float" and body in ("inf", "-inf", "nan"):
            return float(body)
        if tag == "array":
            return self.array(body)
        if tag == "scalar":
            return self.array(body)[()]
        if tag == "bytes":
            return self.array(body).tobytes()
        if tag == "tuple" and isinstance(body, list):
            return tuple(self(v, depth + 1) for v in body)
        if tag == "slice" and isinstance(body, list) and len(body) == 3:
            return slice(*(self(v, depth + 1) for v in body))
        if tag == "dict" and isinstance(body, dict):
            return {k: self(v, depth + 1) for k, v in body.items()}
        if tag == "network" and isinstance(body, list):
            return self.network(body)
        if tag == "estimator" and isinstance(body, str) and isinstance(node.get("state"), dict):
            cls = _estimator_class(body)
            state = {k: self(v, depth + 1) for k, v in node["state"].items()}
            if any(k.startswith("__") for k in state):
                raise UnsafeStateError(f"{body}: attribute names may not start with '__'")
            obj = cls.__new__(cls)  # as pickle does: the state is set, __init__ is not called
            obj.__dict__.update(state)
            return obj
        raise UnsafeStateError(f"unknown entry {tag!r} in the model description")

    def network(self, layers):
        from nets.layers import layer_from_config
        from nets.model import Sequential

        built, names = [], []
        for i, meta in enumerate(layers):
            if not (isinstance(meta, dict) and {"kind", "name", "config", "arrays"} <= set(meta)
                    and isinstance(meta["arrays"], dict)):
                raise UnsafeStateError(f"network layer {i} lacks kind/name/config/arrays")
            arrays = {k: self.array(v) for k, v in meta["arrays"].items()}
            try:
                built.append(layer_from_config(meta["kind"], meta["config"], arrays))
            except (ValueError, TypeError, KeyError) as exc:
                raise UnsafeStateError(f"cannot rebuild network layer {i} ({meta['kind']!r}): {exc}") \
                    from None
            names.append(str(meta["name"]))
        return Sequential(built, names=names)


def decode(tree, arrays: dict):
    """The estimator :func:`encode` described (``arrays`` as read with ``allow_pickle=False``).

    Raises
    ------
    UnsafeStateError
        The description names something the safe format does not allow, or is malformed.
    """
    obj = _Decoder(arrays)(tree)
    if not is_safe_estimator(obj):
        raise UnsafeStateError("the file does not describe a bowlrp or nets estimator")
    return obj
