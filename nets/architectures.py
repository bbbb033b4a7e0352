"""Architecture specs -> freshly initialised ``nets.Sequential`` models, for the trainer.

An architecture is a name in :data:`ARCHITECTURES` or a list of layer specs (``"relu"``,
``("conv", 8, 5)``, ``("dense", 64)``, ...); :func:`build_model` turns it into layers with He-normal
weights and zero biases for a given input shape and number of outputs. ``nets.train`` fits them.
"""

from __future__ import annotations

import numpy as np

from nets.layers import (
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Tanh,
)
from nets.model import Sequential

__all__ = ["ARCHITECTURES", "TRAINABLE_LAYERS", "build_model"]

#: The layer types the specs build and ``nets.train`` can fit (it has their parameter gradients).
TRAINABLE_LAYERS = (Dense, Conv2D, ReLU, LeakyReLU, Tanh, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten,
                    Dropout)

#: Named architectures (layer specs, without the output layer that ``build_model`` appends).
ARCHITECTURES: dict[str, list] = {
    # three 'same'-padded convolutions and a global max pool: the max over positions answers
    # "is there a polygon anywhere", which is what the synthetic scenes ask
    "small_cnn": [
        ("conv", 8, 5),  # no padding: the input standardisation folds exactly into this layer
        "relu",
        ("maxpool", 2),
        ("conv", 16, 5, {"padding": 2}),
        "relu",
        ("maxpool", 2),
        ("conv", 16, 3, {"padding": 1}),
        "relu",
        "global_maxpool",
    ],
    "mlp": ["flatten", ("dense", 64), "relu"],
}



def _split_spec(spec):
    if isinstance(spec, str):
        return spec, (), {}
    if isinstance(spec, (tuple, list)) and spec and isinstance(spec[0], str):
        args = list(spec[1:])
        kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
        return spec[0], tuple(args), dict(kwargs)
    raise TypeError(
        f"a layer spec must be a string or a tuple (kind, *args[, kwargs]), got {spec!r}"
    )


def _make_layer(kind, args, kwargs, in_shape, rng, dtype, output=False):
    """One freshly initialised layer for the spec ``kind(*args, **kwargs)`` on input ``in_shape``."""
    if kind == "conv":
        filters, ksize = args[0], args[1] if len(args) > 1 else kwargs.pop("kernel_size")
        kh, kw = (ksize, ksize) if np.isscalar(ksize) else ksize
        if len(in_shape) != 3:
            raise ValueError(f"'conv' needs an image input (C, H, W), got per-sample shape {in_shape}")
        fan_in = in_shape[0] * kh * kw
        W = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(int(filters), in_shape[0], kh, kw))
        return Conv2D(W.astype(dtype), np.zeros(int(filters), dtype), *args[2:], **kwargs)
    if kind == "dense":
        units = int(args[0])
        fan_in = int(np.prod(in_shape))
        W = rng.normal(0.0, np.sqrt((1.0 if output else 2.0) / fan_in), size=(units, fan_in))
        return Dense(W.astype(dtype), np.zeros(units, dtype))
    simple = {
        "relu": ReLU,
        "leaky_relu": LeakyReLU,
        "tanh": Tanh,
        "maxpool": MaxPool2D,
        "avgpool": AvgPool2D,
        "global_avgpool": GlobalAvgPool2D,
        "flatten": Flatten,
        "dropout": Dropout,
    }
    if kind == "global_maxpool":
        if len(in_shape) != 3:
            raise ValueError(f"'global_maxpool' needs an image input, got per-sample shape {in_shape}")
        # a max pool whose window is the whole map (then Flatten): the winner-takes-all LRP rule
        # and the max-pool gradient apply unchanged
        return MaxPool2D(tuple(in_shape[1:]))
    if kind not in simple:
        raise ValueError(
            f"unsupported layer spec {kind!r}; supported: "
            f"{sorted(['conv', 'dense', 'global_maxpool', *simple])}"
        )
    return simple[kind](*args, **kwargs)


def build_model(architecture, input_shape, n_outputs, random_state=None, dtype=np.float64):
    """A freshly initialised ``nets.Sequential`` for ``architecture`` on per-sample ``input_shape``.

    Parameters
    ----------
    architecture : str or list of specs
        A name in ``ARCHITECTURES`` or a list of layer specs. A spec is a kind string (``"relu"``,
        ``"tanh"``, ``"flatten"``, ``"global_avgpool"``, ``"global_maxpool"``, ...) or a tuple
        ``(kind, *args[, kwargs])``: ``("conv", filters, kernel_size, {"padding": 2, "stride": 1})``,
        ``("dense", units)``, ``("maxpool", 2)``, ``("avgpool", 2)``, ``("leaky_relu", 0.1)``,
        ``("dropout", 0.3)``. A ``Flatten`` is inserted before a dense layer that follows an image
        and a final ``Dense(n_outputs)`` is appended.
    input_shape : tuple
        Shape of one sample, ``(C, H, W)`` or ``(features,)``.
    n_outputs : int
    random_state : int, numpy Generator or None
    dtype : float32 or float64

    Returns
    -------
    nets.Sequential

    Examples
    --------
    >>> from nets.train import build_model
    >>> model = build_model([("conv", 4, 3), "relu", "global_avgpool"], (1, 8, 8), 3, random_state=0)
    >>> [layer.kind for layer in model]
    ['Conv2D', 'ReLU', 'GlobalAvgPool2D', 'Dense']
    >>> model(np.zeros((2, 1, 8, 8))).shape
    (2, 3)
    """
    if isinstance(architecture, str):
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
        specs = ARCHITECTURES[architecture]
    else:
        specs = list(architecture)
    rng = np.random.default_rng(random_state)
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in input_shape)
    layers = []

    def push(layer):
        nonlocal shape
        probe = np.zeros((1, *shape), dtype=dtype)
        try:
            shape = layer.forward(probe).shape[1:]
        except ValueError as err:
            raise ValueError(f"architecture does not fit input shape {tuple(input_shape)}: {err}") from None
        layers.append(layer)

    for spec in specs:
        kind, args, kwargs = _split_spec(spec)
        if kind == "dense" and len(shape) > 1:
            push(Flatten())
        push(_make_layer(kind, args, kwargs, shape, rng, dtype))
        if kind == "global_maxpool":
            push(Flatten())
    if len(shape) > 1:
        push(Flatten())
    push(_make_layer("dense", (n_outputs,), {}, shape, rng, dtype, output=True))
    return Sequential(layers)
