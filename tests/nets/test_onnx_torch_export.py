"""Real exports: the PyTorch models of test_torch.py written by ``torch.onnx.export(dynamo=False)``
(the exporter that needs no onnxscript) load with ``nets.load_onnx`` and compute what PyTorch and
``nets.from_torch`` compute."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import nets  # noqa: E402

from .test_torch import build, example  # noqa: E402

# the AlexNet-like model is left out: torch exports LocalResponseNorm as pow/pad/avg-pool/mul
# arithmetic on the data (refused by node name), and AdaptiveAvgPool2d not at all from opset 11
EXPORTED = ["densenet", "inception", "mobilenet", "resnet_basic", "resnet_bottleneck", "shuffle_nhwc"]


def export(model, x, path, opset):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset)
    return path


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("name", EXPORTED)
def test_exported_models_load_and_match_pytorch(name, opset, tmp_path):
    model, x = build(name), example(name)
    net = nets.load_onnx(export(model, x, tmp_path / "m.onnx", opset))
    # the file fixes the batch size (no dynamic_axes); the graph takes any batch
    X = example(name, n=5, seed=4)
    with torch.no_grad():
        np.testing.assert_allclose(net(X.numpy()), model(X).numpy(), rtol=1e-5, atol=1e-5)
    converted = nets.from_torch(model, x)
    # float64 both, the same weights; ONNX stores batch norm's epsilon as float32 (1e-7 relative)
    np.testing.assert_allclose(net(X.numpy()), converted(X.numpy()), rtol=1e-6, atol=1e-8)
    assert net.input_shape == converted.input_shape


def test_decomposed_lrn_export_is_refused_by_node(tmp_path):
    model, x = build("alexnet"), example("alexnet")
    with pytest.raises(ValueError, match=r"node '/features/features\.2/.*' \((Mul|Pow|Div)\)"):
        nets.load_onnx(export(model, x, tmp_path / "alexnet.onnx", 7))
