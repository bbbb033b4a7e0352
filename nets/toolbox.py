"""Read networks written in the LRP Toolbox's plain-text model format.

The LRP Toolbox (Lapuschkin et al., JMLR 2016) stores a ``modules.Sequential`` as plain text, one
layer after another, shared between its Python and Matlab implementations::

    Linear <m> <n>                       W (m inputs x n outputs), then the n biases
    <m*n values of W, row-major>         (legacy files: m lines of n values instead)
    <n values of the bias>
    Convolution <h> <w> <d> <n> <s0> <s1>   filters (h, w, d, n), strides (s0, s1), no padding
    <h*w*d*n values of W, row-major>
    <n values of the bias>
    MaxPool <h> <w> <s0> <s1>
    SumPool <h> <w> <s0> <s1>            window sum times 1/sqrt(h*w) (toolbox >= 1.2)
    Rect | Tanh | SoftMax | Flatten

The toolbox computes ``Y = X @ W + B`` for ``Linear`` and works on NHWC images; ``nets`` uses
``W`` as (out, in) and NCHW, so every weight is transposed here, and the first ``Linear`` after a
``Flatten`` of an image gets its input columns permuted from (h, w, c) to (c, h, w) order. A model
read from a file that starts with a convolution therefore takes ``X_nhwc.transpose(0, 3, 1, 2)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

_PARAMETERLESS = ("Rect", "Tanh", "SoftMax", "Flatten")
_KNOWN = ("Linear", "Convolution", "MaxPool", "SumPool") + _PARAMETERLESS
# Operations through which a positive factor can travel unchanged to the next linear layer:
# relu(c x) = c relu(x), max(c x) = c max(x), and sums/flattening are linear.
_POSITIVELY_HOMOGENEOUS = ("Rect", "MaxPool", "SumPool", "Flatten")


@dataclass
class ToolboxLayer:
    """One layer of a toolbox text file, exactly as written there (NHWC, W as in x out)."""

    kind: str
    line: int  # 1-based line number of the layer's header, for error messages
    params: tuple = ()
    W: np.ndarray | None = None
    b: np.ndarray | None = None
    extras: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------


def _floats(tokens, lineno, what):
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"line {lineno}: {what} contains a value that is not a number ({exc})") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"line {lineno}: {what} contains NaN or infinite values")
    return values


def _ints(tokens, lineno, header, count):
    if len(tokens) != count:
        raise ValueError(f"line {lineno}: {header!r} must have {count} integer parameters, got {len(tokens)}")
    try:
        values = tuple(int(t) for t in tokens)
    except ValueError:
        raise ValueError(f"line {lineno}: {header!r} has parameters that are not integers") from None
    if any(v <= 0 for v in values):
        raise ValueError(f"line {lineno}: {header!r} has parameters that are not positive")
    return values


def parse_toolbox_text(text: str) -> list[ToolboxLayer]:
    """Parse the LRP Toolbox plain-text model format into a list of :class:`ToolboxLayer`.

    Both the current format (a weight matrix on one line) and the legacy one (one line per row of
    a ``Linear`` weight matrix, as in the toolbox's XOR example) are accepted. Blank lines are
    ignored. The arrays keep the toolbox's own layout; :func:`load_toolbox` converts them.
    """
    lines = [(i + 1, line.split()) for i, line in enumerate(text.splitlines())]
    lines = [(i, tokens) for i, tokens in lines if tokens]
    layers: list[ToolboxLayer] = []
    pos = 0

    def take(what, lineno_header):
        nonlocal pos
        if pos >= len(lines):
            raise ValueError(
                f"line {lineno_header}: file ends before the {what} of this layer (truncated file?)"
            )
        lineno, tokens = lines[pos]
        pos += 1
        return lineno, tokens

    while pos < len(lines):
        lineno, tokens = lines[pos]
        pos += 1
        kind, args = tokens[0], tokens[1:]
        header = " ".join(tokens)
        if kind not in _KNOWN:
            raise ValueError(
                f"line {lineno}: unknown layer type {kind!r}; "
                f"the toolbox text format knows {', '.join(_KNOWN)}"
            )
        if kind == "Linear":
            m, n = _ints(args, lineno, header, 2)
            wl, wt = take("weights", lineno)
            if len(wt) == m * n:
                W = _floats(wt, wl, "the Linear weights").reshape(m, n)
            elif len(wt) == n:
                # legacy layout: m lines with one row of W each
                rows = [_floats(wt, wl, "a Linear weight row")]
                for _ in range(m - 1):
                    rl, rt = take("weight rows", lineno)
                    if len(rt) != n:
                        raise ValueError(f"line {rl}: a Linear weight row needs {n} values, got {len(rt)}")
                    rows.append(_floats(rt, rl, "a Linear weight row"))
                W = np.stack(rows)
            else:
                raise ValueError(
                    f"line {wl}: 'Linear {m} {n}' needs {m * n} weights on one line "
                    f"(or {n} per line in the legacy layout), got {len(wt)}"
                )
            bl, bt = take("bias", lineno)
            if len(bt) != n:
                raise ValueError(f"line {bl}: 'Linear {m} {n}' needs {n} bias values, got {len(bt)}")
            layers.append(ToolboxLayer(kind, lineno, (m, n), W, _floats(bt, bl, "the Linear bias")))
        elif kind == "Convolution":
            h, w, d, n, s0, s1 = _ints(args, lineno, header, 6)
            wl, wt = take("weights", lineno)
            if len(wt) != h * w * d * n:
                raise ValueError(f"line {wl}: {header!r} needs {h * w * d * n} weights, got {len(wt)}")
            W = _floats(wt, wl, "the Convolution weights").reshape(h, w, d, n)
            bl, bt = take("bias", lineno)
            if len(bt) != n:
                raise ValueError(f"line {bl}: {header!r} needs {n} bias values, got {len(bt)}")
            b = _floats(bt, bl, "the Convolution bias")
            layers.append(ToolboxLayer(kind, lineno, (h, w, d, n, s0, s1), W, b))
        elif kind in ("MaxPool", "SumPool"):
            layers.append(ToolboxLayer(kind, lineno, _ints(args, lineno, header, 4)))
        else:
            if args:
                raise ValueError(f"line {lineno}: {kind!r} takes no parameters, got {header!r}")
            layers.append(ToolboxLayer(kind, lineno))
    if not layers:
        raise ValueError("the file holds no layers")
    return layers


# ----------------------------------------------------------------------------------------------
# conversion to nets layers
# ----------------------------------------------------------------------------------------------


def _sumpool_scale_can_fold(tb_layers, start):
    """True when the layers after ``start`` reach a Linear/Convolution through homogeneous ops only."""
    for layer in tb_layers[start + 1 :]:
        if layer.kind in ("Linear", "Convolution"):
            return True
        if layer.kind not in _POSITIVELY_HOMOGENEOUS:
            return False
    return False


def _check_shape(shape, input_shape, lineno, kind):
    if shape is None or shape[0] is None:
        return
    h, w = shape[0], shape[1]
    if h <= 0 or w <= 0:
        raise ValueError(
            f"line {lineno}: {kind} leaves no output for input_shape={tuple(input_shape)} "
            "(the image is smaller than the window)"
        )


def convert_toolbox_layers(tb_layers, input_shape=None, sumpool_normalizer="sqrt"):
    """Turn parsed toolbox layers into a list of nets layers (NCHW, W as (out, in))."""
    from . import layers as L

    if sumpool_normalizer not in ("sqrt", "none"):
        raise ValueError(f"sumpool_normalizer must be 'sqrt' or 'none', got {sumpool_normalizer!r}")
    # What we know about the current tensor, per sample: "flat" with K features, or "image" with
    # (H, W, C) where H, W are None when no input_shape was given.
    if input_shape is not None:
        input_shape = tuple(int(v) for v in input_shape)
        if len(input_shape) == 3:
            state = ["image", (input_shape[0], input_shape[1], input_shape[2])]
        elif len(input_shape) == 1:
            state = ["flat", input_shape[0]]
        else:
            raise ValueError(f"input_shape must be (H, W, C) or (K,), got {input_shape}")
    else:
        first = tb_layers[0].kind
        state = ["flat", None] if first == "Linear" else ["image", (None, None, None)]

    out = []
    pending_scale = 1.0  # factor of earlier sum pools still to be multiplied into the next weights
    flattened_from = None  # (H, W, C) of the image that the last Flatten turned into a vector

    def add(layer, kind):
        out.append(layer)

    for i, t in enumerate(tb_layers):
        if t.kind == "Linear":
            m, n = t.params
            if state[0] != "flat":
                raise ValueError(
                    f"line {t.line}: Linear layer applied to an image; the toolbox needs a Flatten before it"
                )
            if state[1] is not None and state[1] != m:
                raise ValueError(f"line {t.line}: Linear expects {m} inputs but receives {state[1]}")
            W = t.W.T * pending_scale  # (n, m) = (out, in)
            if flattened_from is not None:
                W = _permute_flat_columns(W, flattened_from, m, t.line)
            flattened_from = None
            pending_scale = 1.0
            add(L.Dense(np.ascontiguousarray(W), t.b.copy()), "Dense")
            state = ["flat", n]
        elif t.kind == "Convolution":
            h, w, d, n, s0, s1 = t.params
            if state[0] != "image":
                raise ValueError(
                    f"line {t.line}: Convolution applied to a flat vector (after Flatten/Linear)"
                )
            H, Wd, C = state[1]
            if C is not None and C != d:
                raise ValueError(f"line {t.line}: Convolution expects {d} input channels but receives {C}")
            W = np.ascontiguousarray(t.W.transpose(3, 2, 0, 1)) * pending_scale  # (n, d, h, w)
            pending_scale = 1.0
            add(L.Conv2D(W, t.b.copy(), stride=(s0, s1), padding=0), "Conv2D")
            state = ["image", _window_out(H, Wd, h, w, s0, s1) + (n,)]
            _check_shape(state[1], input_shape, t.line, "Convolution")
        elif t.kind in ("MaxPool", "SumPool"):
            h, w, s0, s1 = t.params
            if state[0] != "image":
                raise ValueError(f"line {t.line}: {t.kind} applied to a flat vector")
            H, Wd, C = state[1]
            if t.kind == "MaxPool":
                add(L.MaxPool2D((h, w), stride=(s0, s1)), "MaxPool2D")
            else:
                factor = math.sqrt(h * w) if sumpool_normalizer == "sqrt" else float(h * w)
                # toolbox sum pool = factor * average pool
                if _sumpool_scale_can_fold(tb_layers, i):
                    add(L.AvgPool2D((h, w), stride=(s0, s1)), "AvgPool2D")
                    pending_scale *= factor
                else:
                    if C is None:
                        raise ValueError(
                            f"line {t.line}: SumPool before any Convolution and not followed by a linear "
                            "layer; pass input_shape=(H, W, C) so its channel count is known"
                        )
                    # a fixed per-channel convolution computes exactly the scaled window sum
                    Wk = np.zeros((C, C, h, w))
                    Wk[np.arange(C), np.arange(C)] = factor / (h * w)
                    add(L.Conv2D(Wk, np.zeros(C), stride=(s0, s1), padding=0), "Conv2D")
            state = ["image", _window_out(H, Wd, h, w, s0, s1) + (C,)]
            _check_shape(state[1], input_shape, t.line, t.kind)
        elif t.kind == "Flatten":
            if state[0] == "image":
                flattened_from = state[1]
                H, Wd, C = state[1]
                size = None if None in (H, Wd, C) else H * Wd * C
                add(L.Flatten(), "Flatten")
                state = ["flat", size]
            # flattening a vector is a no-op in the toolbox
        elif t.kind == "Rect":
            add(L.ReLU(), "ReLU")
        elif t.kind == "Tanh":
            add(L.Tanh(), "Tanh")
        elif t.kind == "SoftMax":
            if i != len(tb_layers) - 1:
                raise ValueError(
                    f"line {t.line}: SoftMax is only supported as the last layer "
                    "(LRP explains the scores before it)"
                )
            add(L.Softmax(), "Softmax")
    return out


def _window_out(H, W, h, w, s0, s1):
    # toolbox: int((H - h) / s + 1), i.e. floor for H >= h
    Ho = None if H is None else (H - h) // s0 + 1
    Wo = None if W is None else (W - w) // s1 + 1
    return (Ho, Wo)


def _permute_flat_columns(W, image_shape, m, lineno):
    """Reorder the input columns of W (out, H*W*C in NHWC order) to NCHW order."""
    H, Wd, C = image_shape
    if C is not None and H is None:
        if m % C:
            raise ValueError(f"line {lineno}: Linear has {m} inputs, not a multiple of the {C} channels")
        if m == C:
            return W  # 1 x 1 feature map: both orders agree
        raise ValueError(
            f"line {lineno}: the feature map before Flatten has {m // C} positions per channel; pass "
            "input_shape=(H, W, C) so that the NHWC -> NCHW column permutation is known"
        )
    if C is None:
        raise ValueError(
            f"line {lineno}: Flatten of an image whose channel count is unknown; pass input_shape"
        )
    if H * Wd * C != m:
        raise ValueError(
            f"line {lineno}: Linear expects {m} inputs but the flattened map is {H}x{Wd}x{C} = {H * Wd * C}"
        )
    out = W.shape[0]
    return np.ascontiguousarray(W.reshape(out, H, Wd, C).transpose(0, 3, 1, 2).reshape(out, m))


def load_toolbox(path, input_shape=None, sumpool_normalizer="sqrt"):
    """Load a network saved in the LRP Toolbox's plain-text format.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.txt`` model file written by the LRP Toolbox (``model_io.write(model, "x.txt")``).
    input_shape : tuple of int, optional
        Shape of one toolbox input: ``(H, W, C)`` for an image (NHWC, as the toolbox uses) or
        ``(K,)`` for a vector. Needed only when a ``Flatten`` turns a feature map larger than 1 x 1
        into a vector (to permute the next weights from NHWC to NCHW order); always checked when
        given.
    sumpool_normalizer : {"sqrt", "none"}, default="sqrt"
        The toolbox >= 1.2 multiplies window sums by ``1/sqrt(h*w)``; use "none" for plain sums.

    Returns
    -------
    model : nets.Sequential
        The same function in ``nets`` layout: images are NCHW, so feed
        ``X_nhwc.transpose(0, 3, 1, 2)``. A final ``SoftMax`` becomes :class:`nets.Softmax`. A sum
        pool becomes an average pool whose constant factor is multiplied into the weights of the
        next linear layer (exact, since ReLU and max pooling commute with positive factors), or a
        fixed per-channel convolution when no linear layer follows.

    Examples
    --------
    >>> import tempfile, os, numpy as np, nets
    >>> path = os.path.join(tempfile.mkdtemp(), "xor.txt")
    >>> with open(path, "w") as f:
    ...     _ = f.write("Linear 2 2\\n1 -1 -1 1\\n0 0\\nRect\\nLinear 2 1\\n1 1\\n0\\n")
    >>> model = nets.load_toolbox(path)
    >>> model(np.array([[1.0, 0.0], [1.0, 1.0]])).ravel().tolist()
    [1.0, 0.0]
    """
    from .model import Sequential

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not an LRP Toolbox text model (the file is not text)") from None
    try:
        tb_layers = parse_toolbox_text(text)
        layers = convert_toolbox_layers(tb_layers, input_shape, sumpool_normalizer)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return Sequential(layers)
