"""Graph-shaped test models built in numpy, each with an independent numpy twin of its forward pass.

Every builder returns ``(graph, twin)``, where ``twin(X)`` recomputes the output with plain numpy
(explicit loops over kernel taps, no nets code). ``bias=False`` builds the same architecture with
every bias, batch-norm shift and Scale offset zero (the conservation setting).
"""

from __future__ import annotations

import numpy as np

import nets
from nets import Node


# --------------------------------------------------------------------------------------------------
# numpy references
def ref_conv(x, W, b=None, stride=(1, 1), padding=(0, 0), groups=1, dilation=(1, 1)):
    n, c, h, w = x.shape
    o, cg, kh, kw = W.shape
    og = o // groups
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    oh = (h + 2 * padding[0] - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    for g in range(groups):
        xg = xp[:, g * cg : (g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dilation[0], j * dilation[1]
                patch = xg[:, :, y0 : y0 + stride[0] * oh : stride[0], x0 : x0 + stride[1] * ow : stride[1]]
                out[:, g * og : (g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch, W[g * og : (g + 1) * og, :, i, j]
                )
    if b is not None:
        out += b[None, :, None, None]
    return out


def ref_bn(x, p):
    gamma, beta, mean, var, eps = p
    return (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + eps) * gamma[
        None, :, None, None
    ] + beta[None, :, None, None]


def ref_maxpool(x, k, s, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    oh, ow = (x.shape[2] + 2 * p - k) // s + 1, (x.shape[3] + 2 * p - k) // s + 1
    out = np.full(x.shape[:2] + (oh, ow), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, xp[:, :, i : i + s * oh : s, j : j + s * ow : s])
    return out


def ref_lrn(x, size, alpha, beta, bias):
    c = x.shape[1]
    out = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - (size - 1) // 2), min(c - 1, ch + int(np.ceil((size - 1) / 2)))
        sq = (x[:, lo : hi + 1] ** 2).sum(axis=1)
        out[:, ch] = x[:, ch] / (bias + alpha / size * sq) ** beta
    return out


relu = lambda a: np.maximum(a, 0)  # noqa: E731


# --------------------------------------------------------------------------------------------------
class _Params:
    def __init__(self, seed, bias):
        self.rng = np.random.default_rng(seed)
        self.bias = bias

    def w(self, *shape):
        fan_in = int(np.prod(shape[1:]))
        return self.rng.normal(size=shape) / np.sqrt(fan_in)

    def b(self, n):
        return self.rng.normal(scale=0.1, size=n) if self.bias else None

    def bn(self, c):
        gamma = self.rng.uniform(0.5, 1.5, c)
        var = self.rng.uniform(0.5, 2.0, c)
        if self.bias:
            return gamma, self.rng.normal(scale=0.1, size=c), self.rng.normal(scale=0.1, size=c), var, 1e-5
        return gamma, np.zeros(c), np.zeros(c), var, 1e-5


def _bn_layer(p):
    return nets.BatchNorm2D(p[0], p[1], p[2], p[3], eps=p[4])


def residual_cnn(bias=True, seed=0):
    """stem conv-bn-relu; block 1: conv-bn-relu-conv-bn + identity; block 2 (stride 2): conv-bn-relu
    -conv-bn + 1x1-conv-bn shortcut; global average pool; dense. Input (N, 3, 8, 8)."""
    P = _Params(seed, bias)
    W0, b0, bn0 = P.w(4, 3, 3, 3), P.b(4), P.bn(4)
    W1, b1, bn1 = P.w(4, 4, 3, 3), P.b(4), P.bn(4)
    W2, b2, bn2 = P.w(4, 4, 3, 3), P.b(4), P.bn(4)
    W3, b3, bn3 = P.w(6, 4, 3, 3), P.b(6), P.bn(6)
    W4, b4, bn4 = P.w(6, 6, 3, 3), P.b(6), P.bn(6)
    Ws, bs, bns = P.w(6, 4, 1, 1), P.b(6), P.bn(6)
    Wd, bd = P.w(3, 6), P.b(3)
    C = nets.Conv2D
    nodes = [
        Node("stem", C(W0, b0, padding=1), ["input"]),
        Node("stem_bn", _bn_layer(bn0), ["stem"]),
        Node("stem_relu", nets.ReLU(), ["stem_bn"]),
        Node("b1_conv1", C(W1, b1, padding=1), ["stem_relu"]),
        Node("b1_bn1", _bn_layer(bn1), ["b1_conv1"]),
        Node("b1_relu1", nets.ReLU(), ["b1_bn1"]),
        Node("b1_conv2", C(W2, b2, padding=1), ["b1_relu1"]),
        Node("b1_bn2", _bn_layer(bn2), ["b1_conv2"]),
        Node("b1_add", nets.Add(), ["b1_bn2", "stem_relu"]),
        Node("b1_relu", nets.ReLU(), ["b1_add"]),
        Node("b2_conv1", C(W3, b3, stride=2, padding=1), ["b1_relu"]),
        Node("b2_bn1", _bn_layer(bn3), ["b2_conv1"]),
        Node("b2_relu1", nets.ReLU(), ["b2_bn1"]),
        Node("b2_conv2", C(W4, b4, padding=1), ["b2_relu1"]),
        Node("b2_bn2", _bn_layer(bn4), ["b2_conv2"]),
        Node("b2_short", C(Ws, bs, stride=2), ["b1_relu"]),
        Node("b2_short_bn", _bn_layer(bns), ["b2_short"]),
        Node("b2_add", nets.Add(), ["b2_bn2", "b2_short_bn"]),
        Node("b2_relu", nets.ReLU(), ["b2_add"]),
        Node("pool", nets.GlobalAvgPool2D(), ["b2_relu"]),
        Node("fc", nets.Dense(Wd, bd), ["pool"]),
    ]

    def twin(X):
        a = relu(ref_bn(ref_conv(X, W0, b0, padding=(1, 1)), bn0))
        h = relu(ref_bn(ref_conv(a, W1, b1, padding=(1, 1)), bn1))
        a = relu(ref_bn(ref_conv(h, W2, b2, padding=(1, 1)), bn2) + a)
        h = relu(ref_bn(ref_conv(a, W3, b3, (2, 2), (1, 1)), bn3))
        h = ref_bn(ref_conv(h, W4, b4, padding=(1, 1)), bn4)
        s = ref_bn(ref_conv(a, Ws, bs, (2, 2)), bns)
        a = relu(h + s).mean(axis=(2, 3))
        return a @ Wd.T + (0 if bd is None else bd)

    return nets.Graph(nodes), twin


def dense_block(bias=True, seed=1):
    """DenseNet-style: each conv reads the concatenation of everything before it."""
    P = _Params(seed, bias)
    W0, b0 = P.w(4, 3, 3, 3), P.b(4)
    W1, b1 = P.w(2, 4, 3, 3), P.b(2)
    W2, b2 = P.w(2, 6, 3, 3), P.b(2)
    Wd, bd = P.w(3, 8), P.b(3)
    C = nets.Conv2D
    nodes = [
        Node("stem", C(W0, b0, padding=1), ["input"]),
        Node("stem_relu", nets.ReLU(), ["stem"]),
        Node("c1", C(W1, b1, padding=1), ["stem_relu"]),
        Node("c1_relu", nets.ReLU(), ["c1"]),
        Node("cat1", nets.Concat(), ["stem_relu", "c1_relu"]),
        Node("c2", C(W2, b2, padding=1), ["cat1"]),
        Node("c2_relu", nets.ReLU(), ["c2"]),
        Node("cat2", nets.Concat(), ["stem_relu", "c1_relu", "c2_relu"]),
        Node("pool", nets.AvgPool2D(2), ["cat2"]),
        Node("gap", nets.GlobalAvgPool2D(), ["pool"]),
        Node("fc", nets.Dense(Wd, bd), ["gap"]),
    ]

    def twin(X):
        s = relu(ref_conv(X, W0, b0, padding=(1, 1)))
        c1 = relu(ref_conv(s, W1, b1, padding=(1, 1)))
        c2 = relu(ref_conv(np.concatenate([s, c1], 1), W2, b2, padding=(1, 1)))
        a = np.concatenate([s, c1, c2], 1)
        n, c, h, w = a.shape
        a = a.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5)).mean(axis=(2, 3))
        return a @ Wd.T + (0 if bd is None else bd)

    return nets.Graph(nodes), twin


def inception(bias=True, seed=2):
    """Parallel 1x1, 3x3 and pool->1x1 branches on the input, concatenated."""
    P = _Params(seed, bias)
    Wa, ba = P.w(2, 3, 1, 1), P.b(2)
    Wb, bb = P.w(3, 3, 3, 3), P.b(3)
    Wc, bc = P.w(2, 3, 1, 1), P.b(2)
    Wd, bd = P.w(3, 7), P.b(3)
    C = nets.Conv2D
    nodes = [
        Node("br1", C(Wa, ba), ["input"]),
        Node("br3", C(Wb, bb, padding=1), ["input"]),
        Node("br_pool", nets.MaxPool2D(3, stride=1, padding=1), ["input"]),
        Node("br_pool_conv", C(Wc, bc), ["br_pool"]),
        Node("cat", nets.Concat(), ["br1", "br3", "br_pool_conv"]),
        Node("relu", nets.ReLU(), ["cat"]),
        Node("gap", nets.GlobalAvgPool2D(), ["relu"]),
        Node("fc", nets.Dense(Wd, bd), ["gap"]),
    ]

    def twin(X):
        a = ref_conv(X, Wa, ba)
        b = ref_conv(X, Wb, bb, padding=(1, 1))
        c = ref_conv(ref_maxpool(X, 3, 1, 1), Wc, bc)
        h = relu(np.concatenate([a, b, c], 1)).mean(axis=(2, 3))
        return h @ Wd.T + (0 if bd is None else bd)

    return nets.Graph(nodes), twin


def grouped_cnn(bias=True, seed=3):
    """Grouped (2 groups), depthwise (multiplier 2) and pointwise convolutions, a ReLU6 (Clip)."""
    P = _Params(seed, bias)
    W0, b0 = P.w(4, 3, 3, 3), P.b(4)
    Wg, bg = P.w(4, 2, 3, 3), P.b(4)
    Wdw, bdw = P.w(8, 1, 3, 3), P.b(8)
    Wpw, bpw = P.w(4, 8, 1, 1), P.b(4)
    Wd, bd = P.w(3, 4), P.b(3)
    C = nets.Conv2D
    nodes = [
        Node("stem", C(W0, b0, padding=1), ["input"]),
        Node("relu0", nets.ReLU(), ["stem"]),
        Node("grouped", C(Wg, bg, padding=1, groups=2), ["relu0"]),
        Node("relu1", nets.ReLU(), ["grouped"]),
        Node("depthwise", C(Wdw, bdw, stride=2, padding=1, groups=4), ["relu1"]),
        Node("relu6", nets.Clip(0.0, 6.0), ["depthwise"]),
        Node("pointwise", C(Wpw, bpw), ["relu6"]),
        Node("relu2", nets.ReLU(), ["pointwise"]),
        Node("gmp", nets.GlobalMaxPool2D(), ["relu2"]),
        Node("fc", nets.Dense(Wd, bd), ["gmp"]),
    ]

    def twin(X):
        a = relu(ref_conv(X, W0, b0, padding=(1, 1)))
        a = relu(ref_conv(a, Wg, bg, padding=(1, 1), groups=2))
        a = np.clip(ref_conv(a, Wdw, bdw, (2, 2), (1, 1), groups=4), 0, 6)
        a = relu(ref_conv(a, Wpw, bpw)).max(axis=(2, 3))
        return a @ Wd.T + (0 if bd is None else bd)

    return nets.Graph(nodes), twin


def dilated_cnn(bias=True, seed=4):
    """Dilated convolutions (2 and (2, 1)), an asymmetric Pad, Flatten and a dense layer."""
    P = _Params(seed, bias)
    W0, b0 = P.w(4, 3, 3, 3), P.b(4)
    W1, b1 = P.w(3, 4, 3, 2), P.b(3)
    Wd, bd = P.w(3, 3 * 5 * 8), P.b(3)
    nodes = [
        Node("conv0", nets.Conv2D(W0, b0, padding=2, dilation=2), ["input"]),
        Node("relu0", nets.ReLU(), ["conv0"]),
        Node("pad", nets.Pad((0, 1, 1, 0)), ["relu0"]),
        Node("conv1", nets.Conv2D(W1, b1, dilation=(2, 1)), ["pad"]),
        Node("relu1", nets.ReLU(), ["conv1"]),
        Node("flat", nets.Flatten(), ["relu1"]),
        Node("fc", nets.Dense(Wd, bd), ["flat"]),
    ]

    def twin(X):
        a = relu(ref_conv(X, W0, b0, padding=(2, 2), dilation=(2, 2)))
        a = np.pad(a, ((0, 0), (0, 0), (0, 1), (1, 0)))
        a = relu(ref_conv(a, W1, b1, dilation=(2, 1))).reshape(len(X), -1)
        return a @ Wd.T + (0 if bd is None else bd)

    return nets.Graph(nodes), twin


def lrn_cnn(bias=True, seed=5):
    """CaffeNet-style: conv-relu-LRN-maxpool, conv-relu-LRN, dense."""
    P = _Params(seed, bias)
    W0, b0 = P.w(6, 3, 3, 3), P.b(6)
    W1, b1 = P.w(4, 6, 3, 3), P.b(4)
    Wd, bd = P.w(3, 4 * 2 * 2), P.b(3)
    nodes = [
        Node("conv0", nets.Conv2D(W0, b0, padding=1), ["input"]),
        Node("relu0", nets.ReLU(), ["conv0"]),
        Node("lrn0", nets.LRN(5, alpha=0.5, beta=0.75, bias=1.0), ["relu0"]),
        Node("pool0", nets.MaxPool2D(2), ["lrn0"]),
        Node("conv1", nets.Conv2D(W1, b1), ["pool0"]),
        Node("relu1", nets.ReLU(), ["conv1"]),
        Node("lrn1", nets.LRN(2, alpha=0.3, beta=0.5, bias=2.0), ["relu1"]),
        Node("flat", nets.Flatten(), ["lrn1"]),
        Node("fc", nets.Dense(Wd, bd), ["flat"]),
    ]

    def twin(X):
        a = ref_lrn(relu(ref_conv(X, W0, b0, padding=(1, 1))), 5, 0.5, 0.75, 1.0)
        a = ref_maxpool(a, 2, 2, 0)
        a = ref_lrn(relu(ref_conv(a, W1, b1)), 2, 0.3, 0.5, 2.0).reshape(len(X), -1)
        return a @ Wd.T + (0 if bd is None else bd)

    return nets.Graph(nodes), twin


def shuffle_cnn(bias=True, seed=6):
    """Input standardisation as Scale, a grouped conv, a ShuffleNet channel shuffle
    (Reshape -> Transpose -> Reshape), a grouped conv, a batch norm after an Add (not foldable)."""
    P = _Params(seed, bias)
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    W0, b0 = P.w(6, 3, 3, 3), P.b(6)
    W1, b1 = P.w(6, 3, 3, 3), P.b(6)
    bn = P.bn(6)
    Wd, bd = P.w(3, 6), P.b(3)
    offset = -mean / std if bias else np.zeros(3)
    nodes = [
        Node("standardise", nets.Scale(1 / std, offset), ["input"]),
        Node("conv0", nets.Conv2D(W0, b0, padding=1), ["standardise"]),
        Node("relu0", nets.ReLU(), ["conv0"]),
        Node("split", nets.Reshape((2, 3, 6, 6)), ["relu0"]),
        Node("swap", nets.Transpose((2, 1, 3, 4)), ["split"]),
        Node("merge", nets.Reshape((6, 6, 6)), ["swap"]),
        Node("conv1", nets.Conv2D(W1, b1, padding=1, groups=2), ["merge"]),
        Node("add", nets.Add(), ["conv1", "relu0"]),
        Node("bn", _bn_layer(bn), ["add"]),
        Node("relu1", nets.ReLU(), ["bn"]),
        Node("gap", nets.GlobalAvgPool2D(), ["relu1"]),
        Node("fc", nets.Dense(Wd, bd), ["gap"]),
    ]

    def twin(X):
        a = X / std[None, :, None, None] + offset[None, :, None, None]
        a = relu(ref_conv(a, W0, b0, padding=(1, 1)))
        n = len(X)
        shuffled = a.reshape(n, 2, 3, 6, 6).transpose(0, 2, 1, 3, 4).reshape(n, 6, 6, 6)
        h = ref_conv(shuffled, W1, b1, padding=(1, 1), groups=2) + a
        h = relu(ref_bn(h, bn)).mean(axis=(2, 3))
        return h @ Wd.T + (0 if bd is None else bd)

    return nets.Graph(nodes), twin


#: name -> (builder, per-sample input shape)
GRAPHS = {
    "residual": (residual_cnn, (3, 8, 8)),
    "dense_block": (dense_block, (3, 6, 6)),
    "inception": (inception, (3, 6, 6)),
    "grouped": (grouped_cnn, (3, 6, 6)),
    "dilated": (dilated_cnn, (3, 8, 8)),
    "lrn": (lrn_cnn, (3, 8, 8)),
    "shuffle": (shuffle_cnn, (3, 6, 6)),
}


def inputs(shape, n=3, seed=0):
    """Image-like inputs in [0, 1)."""
    return np.random.default_rng(seed).uniform(size=(n,) + shape)
