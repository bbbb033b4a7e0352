"""The ONNX model zoo's architectures as the ``onnx`` package ships them for its backend tests
(``onnx/backend/test/data/light``: the zoo graphs, opset 9, with their weights made by
``ConstantOfShape``, and the output onnx's reference evaluator computed for a fixed input). Every
one loads without ``input_shape`` and reproduces that output; LRP conserves on the ResNet-50."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

import nets  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
ZOO = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
       "squeezenet", "vgg19", "zfnet512"]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isdir(LIGHT), reason="this onnx package ships no light models"),
]


def _input(model):
    """onnx's own test input for the file: arange(n) / n in the declared shape."""
    inits = {i.name for i in model.graph.initializer}
    value = next(i for i in model.graph.input if i.name not in inits)
    shape = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_architecture_loads_and_reproduces_onnx_output(name):
    model = onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))
    start = time.perf_counter()
    net = nets.load_onnx(model)
    print(f"\n{name}: {len(model.graph.node)} ONNX nodes -> {len(net.nodes)} nets nodes "
          f"in {time.perf_counter() - start:.2f} s")  # fmt: skip
    X = _input(model)
    assert net.input_shape == X.shape[1:]
    expected = numpy_helper.to_array(onnx.load_tensor(os.path.join(LIGHT, f"light_{name}_output_0.pb")))
    ours = net(X)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(ours, expected.reshape(ours.shape), rtol=1e-5, atol=1e-6 * scale)


def test_zoo_structures():
    def kinds(name):
        return [layer.kind for layer in nets.load_onnx(os.path.join(LIGHT, f"light_{name}.onnx")).layers]

    resnet = kinds("resnet50")
    assert resnet.count("Add") == 16 and "BatchNorm2D" not in resnet  # every batch norm folded
    shuffle = kinds("shufflenet")
    assert shuffle.count("Transpose") >= 1 and shuffle.count("Concat") >= 1 and "Add" in shuffle
    assert kinds("bvlc_alexnet").count("LRN") == 2 and kinds("inception_v1").count("Concat") == 9


def test_lrp_on_the_zoo_resnet50_conserves():
    net = nets.load_onnx(os.path.join(LIGHT, "light_resnet50.onnx"))
    model = onnx.load(os.path.join(LIGHT, "light_resnet50.onnx"))
    X = _input(model).astype(np.float64)
    R, diag = nets.LRP(net, "epsilon_plus_flat").relevance(X, target=0, return_diagnostics=True)
    assert R.shape == X.shape and np.all(np.isfinite(R))
    np.testing.assert_allclose(R.sum() + diag.absorbed, diag.score, rtol=1e-9, atol=1e-9)
