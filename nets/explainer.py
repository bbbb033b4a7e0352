"""What every explainer of a network shares: the target specification, dropping a trailing
``Softmax``, and turning per-input relevance into ``bowlrp.heatmap.Heatmap`` objects.

Every explainer takes a ``target``: None (the predicted class), an int (the same output for every
sample), an int array (one output per sample), or a float array of output relevances (shape of the
logits, or one row for all samples). The explained score is the target logit; a trailing
``Softmax`` is dropped first, so probabilities are never explained.
"""

from __future__ import annotations

import math

import numpy as np

from nets import _kernels
from nets.graph import Graph, check_batch
from nets.layers import Softmax

__all__ = ["check_batch"]


# --------------------------------------------------------------------------------------------------
def _strip_softmax(model):
    """The model without its trailing Softmax node(s): the logits are explained."""
    if not isinstance(model, Graph):
        raise TypeError(f"model must be a nets.Graph or nets.Sequential, got {type(model).__name__}")
    nodes, output = list(model.nodes), model.output
    while isinstance(nodes[-1].layer, Softmax):
        if len(nodes) == 1:
            raise ValueError("the model has no layers besides Softmax")
        # the output node comes last, so the Softmax's input is the new output
        output = nodes.pop().inputs[0]
        if output in model.inputs:
            raise ValueError("the model has no layers besides Softmax")
    if any(isinstance(n.layer, Softmax) for n in nodes):
        raise ValueError("Softmax is only supported as the last layer (it is dropped to explain the logits)")
    if len(nodes) == len(model.nodes):
        return model
    return model.with_nodes(nodes, (output,))


def _target_array(target):
    """``target`` as an array, or TypeError when it is neither int(s) nor float relevances."""
    t = np.asarray(target)
    if t.dtype == bool or t.dtype == object:
        raise TypeError(f"target must be int(s) or an array of output relevances, got {target!r}")
    return t


def _class_indices(t, n):
    """Integer targets ``t`` as one class index per sample of a batch of ``n``."""
    idx = np.broadcast_to(t, (n,)) if t.ndim == 0 else t
    if idx.shape != (n,):
        raise ValueError(f"target has shape {t.shape}; give one int or one per sample ({n},)")
    return idx


def _output_relevance(target, logits):
    """(R_out, score, target_label) from a target specification; see the module docstring."""
    if logits.ndim != 2:
        raise ValueError(f"the model's output must be (N, outputs) to pick a target, got {logits.shape}")
    n, n_out = logits.shape
    rows = np.arange(n)
    if target is None:
        idx = np.argmax(logits, axis=1)
    else:
        t = _target_array(target)
        if np.issubdtype(t.dtype, np.integer):
            idx = _class_indices(t, n)
            if np.any(idx < 0) or np.any(idx >= n_out):
                raise ValueError(f"target out of range: the model has {n_out} outputs")
        elif np.issubdtype(t.dtype, np.floating):
            if t.shape == (n_out,):
                t = np.broadcast_to(t, logits.shape)
            if t.shape != logits.shape:
                raise ValueError(
                    f"output relevance has shape {t.shape}, expected {logits.shape} or ({n_out},)"
                )
            if not np.all(np.isfinite(t)):
                raise ValueError("output relevance contains NaN or infinite values")
            R = np.array(t, dtype=logits.dtype)
            return R, R.sum(axis=1, dtype=np.float64), [None] * n
        else:
            raise TypeError(f"target must be int(s) or an array of output relevances, got dtype {t.dtype}")
    idx = np.asarray(idx, dtype=np.int64)
    R = np.zeros_like(logits)
    R[rows, idx] = logits[rows, idx]
    return R, logits[rows, idx].astype(np.float64), [int(i) for i in idx]


def _row_sums(R, out):
    """Per-sample sums of R (any shape (N, ...)) in float64, written into ``out`` (N,)."""
    buf = np.empty(R.shape[0], dtype=np.float64)
    _kernels.row_sums(np.ascontiguousarray(R).reshape(R.shape[0], -1), buf)
    out[:] = buf


def _channel_map(r, image_shape):
    """One sample's relevance (shape of the input without the batch axis) -> (H, W), channel sum."""
    if image_shape is not None:
        if int(np.prod(image_shape)) != r.size:
            raise ValueError(
                f"image_shape {tuple(image_shape)} does not fit per-sample relevance of shape {r.shape}"
            )
        r = r.reshape(image_shape)
    if r.ndim == 3:
        return r.sum(axis=0)
    if r.ndim == 2:
        return r
    if r.ndim == 1:
        side = math.isqrt(r.size)
        if side * side == r.size:
            return r.reshape(side, side)
    raise ValueError(
        f"cannot draw relevance of per-sample shape {r.shape} as an image; pass image_shape=(H, W) "
        "or (C, H, W)"
    )


class _Explainer:
    method = "explainer"

    def __init__(self, model):
        self.model = _strip_softmax(model)

    def _relevance(self, acts, R_out):  # pragma: no cover - interface
        raise NotImplementedError

    def relevance(self, X, target=None):
        """Relevance of every input element, same shape as ``X``."""
        acts = self.model.trace(X)
        R_out, _, _ = _output_relevance(target, acts[-1])
        return self._relevance(acts, R_out)

    def _heatmaps(self, R, scores, labels, X, image_shape, extras_fn, score_in_map=True):
        maps = []
        for i in range(R.shape[0]):
            extras = extras_fn(i) if extras_fn else {}
            if not score_in_map:
                extras = {**extras, "score": float(scores[i])}
            image = None
            if X.ndim == 4 and X.shape[1] in (1, 3):
                image = X[i, 0] if X.shape[1] == 1 else np.moveaxis(X[i], 0, -1)
            maps.append(
                _heatmap(
                    _channel_map(R[i], image_shape),
                    scores[i] if score_in_map else None,
                    labels[i],
                    self.method,
                    image,
                    extras,
                )
            )
        return maps

    def explain(self, X, target=None, image_shape=None):
        """One ``bowlrp.heatmap.Heatmap`` per sample: relevance summed over channels.

        ``image_shape`` reshapes flat inputs, e.g. ``(8, 8)`` for an MLP on 8x8 digits (a flat
        input of square length is reshaped to a square by default).
        """
        X = check_batch(X)
        acts = self.model.trace(X)
        R_out, scores, labels = _output_relevance(target, acts[-1])
        R = self._relevance(acts, R_out)
        return self._heatmaps(R, scores, labels, X, image_shape, None)


def _heatmap(relevance, score, target, method, image, extras):
    from bowlrp.heatmap import Heatmap

    if image is not None and (not np.all(np.isfinite(image)) or image.shape != relevance.shape[:2]):
        image = None
    return Heatmap(relevance, score=score, target=target, method=method, image=image, extras=extras)


