"""The training arithmetic of :mod:`nets.train`: parameter gradients, the loss and Adam.

The forward pass is each layer's own ``forward`` and the gradient with respect to a layer's input
is each layer's own ``backward``; what is written here is only what training adds: the derivatives
with respect to the parameters of ``Dense`` and ``Conv2D``, inverted dropout, softmax cross-entropy
with weight decay, and the Adam update. :class:`nets.train.ConvNetClassifier` drives them.
"""

from __future__ import annotations

import numpy as np

from nets import _conv_kernels
from nets.layers import Conv2D, Dense, Dropout

__all__ = ["loss_and_grads", "Adam"]


# --------------------------------------------------------------------------------------------------
# parameter gradients (the input gradients are the layers' own ``backward``)
def _conv_weight_grad(layer, x, grad):
    """dL/dW and dL/db of a ``Conv2D`` given its input ``x`` and ``grad`` = dL/dy: per batch chunk,
    ``grad (O, P) @ im2col(x) (P, K)`` summed over images."""
    n = x.shape[0]
    _, o, oh, ow = grad.shape
    kh, kw = layer.kernel_size
    k, p = layer.W[0].size, oh * ow
    g3 = np.ascontiguousarray(grad).reshape(n, o, p)
    dW = np.zeros((o, k), dtype=grad.dtype)
    x = np.ascontiguousarray(x)
    for i0, i1 in layer._chunks(n, p, k):
        cols = np.empty(((i1 - i0) * p, k), dtype=x.dtype)
        _conv_kernels.im2col(x[i0:i1], kh, kw, *layer.stride, *layer.padding, cols)
        # (O, m*P) @ (m*P, K): one GEMM over the chunk
        dW += g3[i0:i1].transpose(1, 0, 2).reshape(o, -1) @ cols
    return dW.reshape(layer.W.shape), grad.sum(axis=(0, 2, 3))


def _param_grads(layer, x, grad):
    """{name: gradient} for the trainable arrays of ``layer`` (empty for parameter-free layers)."""
    if isinstance(layer, Dense):
        out = {"W": grad.T @ x}
        if layer.b is not None:
            out["b"] = grad.sum(axis=0)
        return out
    if isinstance(layer, Conv2D):
        dW, db = _conv_weight_grad(layer, x, grad)
        return {"W": dW} if layer.b is None else {"W": dW, "b": db}
    return {}


def _forward_train(model, X, rng, training):
    """Activations of every layer and the dropout masks (inverted dropout when ``training``)."""
    acts, masks = [X], {}
    a = X
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Dropout):
            if training and layer.p > 0:
                keep = 1.0 - layer.p
                masks[i] = (rng.random(a.shape) < keep).astype(a.dtype) / a.dtype.type(keep)
                a = a * masks[i]
        else:
            a = layer.forward(a)
        acts.append(a)
    return acts, masks


def _softmax_xent(logits, y_idx):
    """Mean cross-entropy and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(y_idx)
    loss = -float(logp[np.arange(n), y_idx].mean())
    g = np.exp(logp)
    g[np.arange(n), y_idx] -= 1.0
    return loss, g / n


def loss_and_grads(model, X, y_idx, alpha=0.0, rng=None, training=False):
    """Loss (mean softmax cross-entropy + ``alpha/2 * sum ||W||^2``) and its gradient with respect to
    every trainable array, as ``[(layer_index, name, gradient), ...]``.

    ``X`` is a validated batch, ``y_idx`` the class index of each sample. With ``training`` True,
    dropout masks are drawn from ``rng``.
    """
    if training and rng is None:
        rng = np.random.default_rng()
    acts, masks = _forward_train(model, X, rng, training)
    loss, g = _softmax_xent(acts[-1], y_idx)
    grads = []
    for i in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[i]
        layer_grads = []
        for name, dp in _param_grads(layer, acts[i], g).items():
            if name == "W" and alpha:
                dp = dp + alpha * layer.W
            layer_grads.append((i, name, dp))
        grads[:0] = layer_grads  # walking backwards: keep layer order, then W before b
        if i == 0:
            break  # the input gradient is not needed (saves the first layer's col2im)
        if isinstance(layer, Dropout):
            g = g * masks[i] if i in masks else g
        else:
            g = layer.backward(acts[i], acts[i + 1], g)
    if alpha:
        weights = [lay.W for lay in model.layers if isinstance(lay, (Dense, Conv2D))]
        loss += 0.5 * alpha * sum(float(np.sum(W * W)) for W in weights)
    return loss, grads


class Adam:
    """Adam (Kingma & Ba 2015) updating the layers' arrays in place."""

    def __init__(self, model, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m, self.v = {}, {}
        for i, layer in enumerate(model.layers):
            for name, arr in layer.get_arrays().items():
                self.m[i, name] = np.zeros_like(arr)
                self.v[i, name] = np.zeros_like(arr)

    def step(self, model, grads):
        self.t += 1
        corr1 = 1.0 - self.beta1**self.t
        corr2 = 1.0 - self.beta2**self.t
        for i, name, g in grads:
            m, v = self.m[i, name], self.v[i, name]
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * g * g
            arr = getattr(model.layers[i], name)
            arr -= (self.lr / corr1) * m / (np.sqrt(v / corr2) + self.eps)
