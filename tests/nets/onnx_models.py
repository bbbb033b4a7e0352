"""ONNX graphs built with ``onnx.helper`` for the import tests: residual, dense-concat,
inception-style, grouped/depthwise, LRN (CaffeNet-like), channel-shuffle and NHWC-input models.

Every builder takes an opset and writes the operators in that opset's form (``Pad`` pads and
``Clip`` bounds as attributes before 11 and as inputs from 11, ``Squeeze``/``Unsqueeze`` axes as
inputs from 13, ``Sum`` before 13 and ``Add`` after), with weights drawn from ``seed``: the same
seed gives the same network at every opset.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun


class Net:
    """Collects nodes and initializers; ``t(...)`` adds a weight, ``n(...)`` a node."""

    def __init__(self, opset, seed, bias=True):
        self.opset, self.rng, self.bias = opset, np.random.default_rng(seed), bias
        self.nodes, self.inits, self._k = [], [], 0

    def _name(self, prefix):
        self._k += 1
        return f"{prefix}{self._k}"

    def t(self, array, dtype=np.float32, name=None):
        name = name or self._name("w")
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def w(self, *shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(np.prod(shape[1:]) or 1)
        return self.t(self.rng.normal(size=shape) * scale)

    def n(self, op, inputs, name=None, **attrs):
        name = name or self._name(op.lower())
        out = name + "_out"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    # -- layers in the form of the opset --------------------------------------------------------
    def conv(self, x, cin, cout, k, stride=1, pad=0, group=1, dilation=1, name=None, **attrs):
        ins = [x, self.w(cout, cin // group, k, k)]
        if self.bias:
            ins.append(self.t(self.rng.normal(size=cout) * 0.1))
        if "auto_pad" not in attrs:
            attrs["pads"] = [pad] * 4 if np.isscalar(pad) else list(pad)
        return self.n(
            "Conv",
            ins,
            name,
            kernel_shape=[k, k],
            strides=[stride] * 2,
            group=group,
            dilations=[dilation] * 2,
            **attrs,
        )

    def bn(self, x, c, name=None):
        g = self.rng.uniform(0.5, 1.5, c)
        beta = self.rng.normal(size=c) * 0.1 if self.bias else np.zeros(c)
        mean = self.rng.normal(size=c) * 0.1 if self.bias else np.zeros(c)
        var = self.rng.uniform(0.5, 1.5, c)
        attrs = {"spatial": 1} if self.opset < 9 else {}
        return self.n("BatchNormalization", [x] + [self.t(a) for a in (g, beta, mean, var)], name, **attrs)

    def relu(self, x):
        return self.n("Relu", [x])

    def clip(self, x, low, high):
        if self.opset < 11:
            return self.n("Clip", [x], min=float(low), max=float(high))
        return self.n("Clip", [x, self.t(low), self.t(high)])

    def add(self, *xs, name=None):
        return self.n("Sum" if self.opset < 13 else "Add", xs, name)

    def pad(self, x, pads):
        if self.opset < 11:
            return self.n("Pad", [x], pads=list(pads))
        return self.n("Pad", [x, self.t(pads, np.int64)])

    def unsqueeze(self, x, axes):
        if self.opset < 13:
            return self.n("Unsqueeze", [x], axes=list(axes))
        return self.n("Unsqueeze", [x, self.t(axes, np.int64)])

    def squeeze(self, x, axes):
        if self.opset < 13:
            return self.n("Squeeze", [x], axes=list(axes))
        return self.n("Squeeze", [x, self.t(axes, np.int64)])

    def gemm(self, x, cin, cout):
        ins = [x, self.w(cout, cin)]
        if self.bias:
            ins.append(self.t(self.rng.normal(size=cout) * 0.1))
        elif self.opset < 11:  # C is optional only from opset 11
            ins.append(self.t(np.zeros(cout)))
        return self.n("Gemm", ins, transB=1)

    def head(self, x, cin, classes, flatten="Flatten"):
        pooled = self.n("GlobalAveragePool", [x])
        flat = self.n("Flatten", [pooled]) if flatten == "Flatten" else self.squeeze(pooled, [2, 3])
        return self.gemm(flat, cin, classes)

    def model(self, output, in_shape):
        self.nodes[-1].output[0] = "y"
        graph = helper.make_graph(
            self.nodes,
            "test",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "K"])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = min(model.ir_version, 10 if self.opset >= 21 else 8)
        onnx.checker.check_model(model)
        return model


# ------------------------------------------------------------------------------------------------
def residual(opset, seed=0, bias=True, blocks=1):
    """ResNet-style: stem, ``blocks`` identity blocks (conv-bn-relu-conv-bn + skip), one
    down-sampling block with a 1x1 strided shortcut, global pool, dense."""
    g = Net(opset, seed, bias)
    x = g.relu(g.bn(g.conv("x", 3, 8, 3, pad=1), 8))
    for _ in range(blocks):
        h = g.bn(g.conv(g.relu(g.bn(g.conv(x, 8, 8, 3, pad=1), 8)), 8, 8, 3, pad=1), 8)
        x = g.relu(g.add(h, x))
    h = g.bn(g.conv(g.relu(g.bn(g.conv(x, 8, 16, 3, stride=2, pad=1), 16)), 16, 16, 3, pad=1), 16)
    s = g.bn(g.conv(x, 8, 16, 1, stride=2), 16)
    x = g.relu(g.add(h, s))
    return g.model(g.head(x, 16, 10), ["N", 3, 8, 8])


def dense_concat(opset, seed=0, bias=True):
    """DenseNet-style: batch norm on the input (kept: nothing to fold it into), two dense layers
    whose outputs are concatenated to their inputs, a transition (1x1 conv, average pool),
    global max pool."""
    g = Net(opset, seed, bias)
    x, c = "x", 4
    for _ in range(2):
        new = g.conv(g.relu(g.bn(x, c)), c, 4, 3, pad=1)
        x, c = g.n("Concat", [x, new], axis=1), c + 4
    x = g.n("AveragePool", [g.conv(x, c, 6, 1)], kernel_shape=[2, 2], strides=[2, 2])
    pooled = g.n("Flatten", [g.n("GlobalMaxPool", [x])])
    return g.model(g.gemm(pooled, 6, 5), ["N", 4, 6, 6])


def inception(opset, seed=0, bias=True):
    """GoogLeNet-style: stem, LRN, a max pool with asymmetric pads (as in the zoo's Inception v1),
    four branches (1x1; 1x1-3x3; 1x1-5x5; pool-1x1) concatenated, global pool, dropout, dense,
    softmax."""
    g = Net(opset, seed, bias)
    x = g.relu(g.conv("x", 3, 8, 3, pad=1))
    x = g.n("LRN", [x], size=5, alpha=1e-2, beta=0.75, bias=1.0)
    x = g.n("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])
    b1 = g.relu(g.conv(x, 8, 4, 1))
    b2 = g.relu(g.conv(g.relu(g.conv(x, 8, 3, 1)), 3, 4, 3, pad=1))
    b3 = g.relu(g.conv(g.relu(g.conv(x, 8, 2, 1)), 2, 3, 5, pad=2))
    b4 = g.relu(g.conv(g.n("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4), 8, 3, 1))
    x = g.n("Concat", [b1, b2, b3, b4], axis=1)
    pooled = g.n("Dropout", [g.n("Flatten", [g.n("GlobalAveragePool", [x])])])
    logits = g.gemm(pooled, 14, 6)
    return g.model(g.n("Softmax", [logits], axis=1), ["N", 3, 10, 10])


def mobile(opset, seed=0, bias=True):
    """MobileNet-style: an even-kernel SAME_UPPER convolution (asymmetric padding), batch norm
    written as Mul + Add, ReLU6 as Clip, depthwise and pointwise convolutions, a grouped dilated
    convolution."""
    g = Net(opset, seed, bias)
    x = g.conv("x", 4, 8, 2, auto_pad="SAME_UPPER")
    x = g.n("Mul", [x, g.t(g.rng.uniform(0.5, 1.5, (8, 1, 1)))])
    if bias:
        x = g.n("Add", [x, g.t(g.rng.normal(size=(8, 1, 1)) * 0.1)])
    x = g.clip(x, 0.0, 6.0)
    x = g.clip(g.bn(g.conv(x, 8, 8, 3, pad=1, group=8), 8), 0.0, 6.0)  # depthwise
    x = g.relu(g.bn(g.conv(x, 8, 12, 1), 12))  # pointwise
    x = g.relu(g.conv(x, 12, 12, 3, pad=2, group=4, dilation=2))
    return g.model(g.head(x, 12, 5, flatten="Squeeze"), ["N", 4, 9, 9])


def caffenet(opset, seed=0, bias=True):
    """AlexNet/CaffeNet-like: strided conv, ReLU, LRN, max pool in Caffe's ceil mode, two-group
    conv, LRN, pool, flatten, dense-dropout-dense, softmax."""
    g = Net(opset, seed, bias)
    # ceil mode from opset 10; before, the end padding it implies, as the zoo's CaffeNet-7 files
    ceil = {"ceil_mode": 1} if opset >= 10 else {"pads": [0, 0, 1, 1]}
    x = g.n("LRN", [g.relu(g.conv("x", 3, 8, 5, stride=2))], size=5, alpha=1e-4, beta=0.75)
    x = g.n("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], **ceil)
    x = g.n("LRN", [g.relu(g.conv(x, 8, 8, 3, pad=1, group=2))], size=3, alpha=1e-3, beta=0.75, bias=2.0)
    x = g.n("Flatten", [g.n("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])])
    x = g.n("Dropout", [g.relu(g.gemm(x, 8 * 2 * 2, 16))])
    return g.model(g.n("Softmax", [g.gemm(x, 16, 4)], axis=1), ["N", 3, 19, 19])


def shuffle(opset, seed=0, bias=True):
    """ShuffleNet-style channel shuffle: grouped 1x1 conv, reshape to (N, groups, C/groups, H, W)
    with the batch taken from ``Shape -> Gather -> Unsqueeze -> Concat``, transpose, reshape back."""
    g = Net(opset, seed, bias)
    x = g.relu(g.conv("x", 4, 8, 1, group=2))
    batch = g.unsqueeze(g.n("Gather", [g.n("Shape", [x]), g.t(0, np.int64)], axis=0), [0])
    target = g.n("Concat", [batch, g.t([2, 4, 6, 6], np.int64)], axis=0)
    x = g.n("Transpose", [g.n("Reshape", [x, target])], perm=[0, 2, 1, 3, 4])
    x = g.n("Reshape", [x, g.t([-1, 8, 6, 6], np.int64)])
    x = g.relu(g.conv(x, 8, 8, 3, pad=1, group=2))
    return g.model(g.head(x, 8, 3), ["N", 4, 6, 6])


def nhwc(opset, seed=0, bias=True):
    """A Keras-style model with NHWC input: transpose to NCHW, standardise per channel
    ((x - mean) / std, the mean a Cast of a Constant, the std from ConstantOfShape), conv,
    pool, dense."""
    g = Net(opset, seed, bias)
    x = g.n("Transpose", ["x"], perm=[0, 3, 1, 2])
    mean = helper.make_tensor("m", TensorProto.INT32, [1, 3, 1, 1], [1, 0, 2])
    mean = g.n("Cast", [g.n("Constant", [], value=mean)], to=TensorProto.FLOAT)
    if opset >= 9:
        std = g.n(
            "ConstantOfShape",
            [g.t([1, 3, 1, 1], np.int64)],
            value=helper.make_tensor("s", TensorProto.FLOAT, [1], [2.0]),
        )
    else:
        std = g.n("Constant", [], value=helper.make_tensor("s", TensorProto.FLOAT, [1, 3, 1, 1], [2.0] * 3))
    x = g.n("Div", [g.n("Sub", [x, mean]), std])
    x = g.relu(g.conv(x, 3, 6, 3, pad=1))
    return g.model(g.head(x, 6, 4), ["N", 8, 8, 3])


def squeezenet(opset, seed=0, bias=True):
    """SqueezeNet-style: fire modules (1x1 squeeze, then 1x1 and 3x3 expands concatenated), a
    max pool in ceil mode, a 1x1 convolution head, global average pool and a softmax over the
    (N, K, 1, 1) scores, as the zoo's SqueezeNet ends."""
    g = Net(opset, seed, bias)
    x = g.relu(g.conv("x", 3, 8, 3, stride=2))
    ceil = {"ceil_mode": 1} if opset >= 10 else {}
    x = g.n("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], **ceil)
    for cin in (8, 8):
        s = g.relu(g.conv(x, cin, 2, 1))
        x = g.n("Concat", [g.relu(g.conv(s, 2, 4, 1)), g.relu(g.conv(s, 2, 4, 3, pad=1))], axis=1)
    x = g.n("Dropout", [x])
    x = g.n("GlobalAveragePool", [g.relu(g.conv(x, 8, 5, 1))])
    return g.model(g.n("Softmax", [x], axis=1), ["N", 3, 12, 12])


class LRN(OpRun):
    """A correct LRN for onnx's reference evaluator (onnx 1.23's loops over the batch axis instead
    of the channels), straight from the operator's definition."""

    op_domain = ""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
        squares = np.zeros_like(x)
        for c in range(x.shape[1]):
            squares[:, c] = (x[:, max(0, c - before) : c + after + 1] ** 2).sum(axis=1)
        return ((x / (bias + alpha / size * squares) ** beta).astype(x.dtype),)


def reference(model, X):
    """The model's output for ``X`` (cast to float32) by onnx's reference evaluator."""
    return ReferenceEvaluator(model, new_ops=[LRN]).run(None, {"x": np.asarray(X, dtype=np.float32)})[0]


BUILDERS = {
    f.__name__: f for f in (residual, dense_concat, inception, mobile, caffenet, shuffle, nhwc, squeezenet)
}
