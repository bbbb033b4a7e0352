"""How a Heatmap's ``target`` and ``extras`` are stored in its NPZ file without pickle.

Arrays become NPZ members; everything else JSON with references to those members. Tagged dicts keep
the types JSON would lose (tuples, lists vs dicts, non-finite floats); non-string keys are refused.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["encode_value", "decode_value"]


def encode_value(value, key: str, arrays: dict):
    """JSON-able form of ``value``; its arrays are put into ``arrays`` under names derived from ``key``.

    Raises
    ------
    TypeError
        An object array, a non-string dict key, or a type that cannot be stored without pickle.
    """
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"extras entry {key!r} is an object array; store numeric or string arrays")
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, np.generic):
        return encode_value(value.item(), key, arrays)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"extras keys must be strings, got {k!r} in {key!r}")
            out[k] = encode_value(v, f"{key}/{k}", arrays)
        return {"__dict__": out}
    if isinstance(value, (list, tuple)):
        items = [encode_value(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]
        return {"__tuple__" if isinstance(value, tuple) else "__list__": items}
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save extras entry {key!r} of type {type(value).__name__}")


def decode_value(value, arrays: dict):
    """Inverse of :func:`encode_value`: the stored value, with its arrays taken from ``arrays``."""
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__dict__" in value:
            return {k: decode_value(v, arrays) for k, v in value["__dict__"].items()}
        if "__list__" in value:
            return [decode_value(v, arrays) for v in value["__list__"]]
        if "__tuple__" in value:
            return tuple(decode_value(v, arrays) for v in value["__tuple__"])
        if "__float__" in value:
            return float(value["__float__"])
    return value


