"""Layers of a network (NCHW, float32 or float64), one module per family:

=========================  ==================================================================
``nets.layers.base``        the ``Layer`` protocol (forward, backward, route, config, arrays)
``nets.layers.linear``      ``Dense``, ``Conv2D`` (grouped, depthwise, dilated)
``nets.layers.affine``      ``BatchNorm1D``, ``BatchNorm2D``, ``Scale`` (per-channel x * a + b)
``nets.layers.pooling``     ``MaxPool2D``, ``AvgPool2D``, ``GlobalAvgPool2D``, ``GlobalMaxPool2D``
``nets.layers.elementwise`` activations, ``Clip``, ``Dropout``, ``Identity``, ``Softmax``, ``LRN``
``nets.layers.structural``  ``Flatten``, ``Reshape``, ``Transpose``, ``Pad``, ``Concat``, ``Add``
=========================  ==================================================================

``LAYER_TYPES`` maps each layer's ``kind`` string back to its class, and
``layer_from_config(kind, config, arrays)`` rebuilds a layer (what ``nets.io`` uses to load).
"""

from __future__ import annotations

from nets.layers.affine import BatchNorm1D, BatchNorm2D, Scale, _BatchNorm, _ChannelAffine
from nets.layers.base import Layer
from nets.layers.elementwise import (
    LRN,
    Clip,
    Dropout,
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    _Elementwise,
)
from nets.layers.linear import Conv2D, Dense
from nets.layers.pooling import AvgPool2D, GlobalAvgPool2D, GlobalMaxPool2D, MaxPool2D
from nets.layers.structural import Add, Concat, Flatten, Pad, Reshape, Transpose

__all__ = [
    "Layer",
    "Dense",
    "Conv2D",
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAvgPool2D",
    "GlobalMaxPool2D",
    "Flatten",
    "Reshape",
    "Transpose",
    "Pad",
    "Concat",
    "Add",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "Clip",
    "BatchNorm1D",
    "BatchNorm2D",
    "Scale",
    "LRN",
    "Dropout",
    "Identity",
    "Softmax",
    "LAYER_TYPES",
    "layer_from_config",
    "_BatchNorm",
    "_ChannelAffine",
    "_Elementwise",
]

LAYER_TYPES: dict[str, type] = {
    cls.kind: cls
    for cls in (
        Dense,
        Conv2D,
        MaxPool2D,
        AvgPool2D,
        GlobalAvgPool2D,
        GlobalMaxPool2D,
        Flatten,
        Reshape,
        Transpose,
        Pad,
        Concat,
        Add,
        ReLU,
        LeakyReLU,
        Tanh,
        Sigmoid,
        Clip,
        BatchNorm1D,
        BatchNorm2D,
        Scale,
        LRN,
        Dropout,
        Identity,
        Softmax,
    )
}


def layer_from_config(kind, config=None, arrays=None):
    """Rebuild a layer from its ``kind`` string, ``get_config()`` and ``get_arrays()``.

    Examples
    --------
    >>> import numpy as np
    >>> from nets.layers import Dense, layer_from_config
    >>> d = Dense(np.ones((2, 3)))
    >>> layer_from_config(d.kind, d.get_config(), d.get_arrays()).W.shape
    (2, 3)
    """
    try:
        cls = LAYER_TYPES[kind]
    except KeyError:
        raise ValueError(f"unsupported layer type {kind!r}; known: {sorted(LAYER_TYPES)}") from None
    return cls.from_config(config or {}, arrays or {})
