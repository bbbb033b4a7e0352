"""ONNX import of graphs (residual, dense-concat, inception, grouped/depthwise, LRN, channel
shuffle, NHWC input) at opsets 7, 11, 13 and 21: the forward pass equals onnx's reference
evaluator (float32) to 1e-5, LRP conserves with zero biases, unsupported ops are refused by name."""

from __future__ import annotations

import time

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import nets  # noqa: E402

from .onnx_models import BUILDERS, reference, residual  # noqa: E402

OPSETS = (7, 11, 13, 21)
# onnx.reference's BatchNormalization before opset 14 blends in batch statistics (a training-mode
# quirk) and its LRN before 13 differs too: the same network written at opset 21 is the reference
REFERENCE_OPSET = 21

IN_SHAPES = {
    "residual": (3, 8, 8),
    "dense_concat": (4, 6, 6),
    "inception": (3, 10, 10),
    "mobile": (4, 9, 9),
    "caffenet": (3, 19, 19),
    "shuffle": (4, 6, 6),
    "nhwc": (8, 8, 3),
    "squeezenet": (3, 12, 12),
}


def sample(name, n=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n,) + IN_SHAPES[name])


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_forward_equals_the_reference_evaluator(name, opset):
    build = BUILDERS[name]
    model = build(opset)
    net = nets.load_onnx(model)
    assert isinstance(net, nets.Graph)
    assert net.input_shape == IN_SHAPES[name]  # read from the file
    X = sample(name)
    if any(n.op_type == "BatchNormalization" for n in model.graph.node) and opset < REFERENCE_OPSET:
        model = build(REFERENCE_OPSET)  # the same network where the evaluator's batch norm is right
    expected = reference(model, X).reshape(len(X), -1)  # (N, K), or SqueezeNet's (N, K, 1, 1)
    np.testing.assert_allclose(net(X), expected, rtol=1e-5, atol=1e-5)


def test_graph_structure_of_the_residual_model():
    net = nets.load_onnx(residual(13))
    kinds = [layer.kind for layer in net.layers]
    # batch norms folded into the convolutions; the skip connections are Add nodes with two inputs
    assert "BatchNorm2D" not in kinds and kinds.count("Conv2D") == 6 and kinds.count("Add") == 2
    for node in net.nodes:
        if node.layer.kind == "Add":
            assert len(node.inputs) == 2
    # ONNX's GlobalAveragePool (N, C, 1, 1) + Flatten is one GlobalAvgPool2D: no reshape left
    assert kinds[-2:] == ["GlobalAvgPool2D", "Dense"]
    kept = nets.load_onnx(residual(13), fold_batchnorm=False)
    assert [layer.kind for layer in kept.layers].count("BatchNorm2D") == 6
    X = sample("residual")
    np.testing.assert_allclose(kept(X), net(X), rtol=1e-10, atol=1e-10)


def test_structure_of_the_other_models():
    kinds = {name: [layer.kind for layer in nets.load_onnx(BUILDERS[name](13)).layers] for name in BUILDERS}
    assert kinds["dense_concat"].count("Concat") == 2 and kinds["dense_concat"].count("BatchNorm2D") == 2
    assert "GlobalMaxPool2D" in kinds["dense_concat"]
    assert kinds["inception"].count("Concat") == 1 and "LRN" in kinds["inception"]
    assert kinds["inception"][-1] == "Softmax" and "Pad" in kinds["inception"]  # asymmetric pool pads
    assert kinds["mobile"][:2] == ["Pad", "Conv2D"] and kinds["mobile"].count("Clip") == 2
    assert kinds["mobile"].count("Scale") == 1  # the Mul and the Add after it: one Scale
    assert kinds["caffenet"].count("LRN") == 2
    assert kinds["shuffle"].count("Reshape") == 2 and "Transpose" in kinds["shuffle"]
    assert kinds["nhwc"][:3] == ["Transpose", "Scale", "Conv2D"]  # (x - mean) / std: one Scale
    mobile = nets.load_onnx(BUILDERS["mobile"](13))
    groups = [layer.groups for layer in mobile.layers if layer.kind == "Conv2D"]
    assert groups == [1, 8, 1, 4]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_lrp_conserves_on_every_graph_with_zero_biases(name):
    net = nets.load_onnx(BUILDERS[name](13, bias=False))
    X = np.abs(sample(name, n=2))
    for composite in ("epsilon_plus", "epsilon_alpha2_beta1_flat"):
        R, diag = nets.LRP(net, composite).relevance(X, target=1, return_diagnostics=True)
        assert R.shape == X.shape and np.all(np.isfinite(R))
        assert np.all(np.abs(diag.bias_absorbed) <= 1e-12)
        np.testing.assert_allclose(R.reshape(len(X), -1).sum(axis=1) + diag.absorbed, diag.score, atol=1e-9)


def test_input_shape_from_the_file_or_the_caller():
    model = residual(13)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    with pytest.raises(ValueError, match="pass input_shape"):
        nets.load_onnx(model)
    net = nets.load_onnx(model, input_shape=(3, 8, 8))
    assert net.input_shape == (3, 8, 8)


def test_a_hundred_node_residual_model_loads_in_seconds():
    model = residual(REFERENCE_OPSET, blocks=16)
    assert len(model.graph.node) > 100
    start = time.perf_counter()
    net = nets.load_onnx(model)
    elapsed = time.perf_counter() - start
    print(f"\n{len(model.graph.node)} ONNX nodes -> {len(net.nodes)} nets nodes loaded in {elapsed:.2f} s")
    X = sample("residual", n=2)
    np.testing.assert_allclose(net(X), reference(model, X), rtol=1e-4, atol=1e-4)


def test_a_dangling_branch_is_not_read():
    # an auxiliary branch that no output reads (here with an operator nets does not have) is skipped
    model = residual(13)
    first = model.graph.node[0].output[0]
    model.graph.node.append(helper.make_node("Resize", [first, "", "aux_scales"], ["aux"], name="aux_up"))
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "aux_scales")
    )
    net = nets.load_onnx(model)
    X = sample("residual")
    np.testing.assert_allclose(net(X), nets.load_onnx(residual(13))(X), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# refusals name the node and the operator


def _single(node, in_shape, inits=(), opset=13):
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    "node, in_shape, message",
    [
        (
            helper.make_node("Resize", ["x", "", "sc"], ["y"], name="up"),
            ["N", 2, 4, 4],
            r"node 'up' \(Resize\): operator 'Resize' is not supported",
        ),
        (
            helper.make_node("Mul", ["x", "x"], ["y"], name="sq"),
            ["N", 4],
            r"node 'sq' \(Mul\): multiplying two data tensors",
        ),
        (
            helper.make_node("Sub", ["x", "x"], ["y"], name="diff"),
            ["N", 4],
            r"node 'diff' \(Sub\): subtracting one data tensor",
        ),
        (
            helper.make_node("Div", ["sc", "x"], ["y"], name="inv"),
            ["N", 4],
            r"node 'inv' \(Div\): only data / constant",
        ),
        (
            helper.make_node("Concat", ["x", "x"], ["y"], axis=0, name="cat0"),
            ["N", 4],
            r"node 'cat0' \(Concat\): concatenation along the batch axis",
        ),
        (
            helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect", name="refl"),
            ["N", 1, 4, 4],
            r"node 'refl' \(Pad\): mode='reflect'",
        ),
        (
            helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], pads=[0, 0, 1, 1], name="mp"),
            ["N", 1, 4, 4],
            r"node 'mp' \(MaxPool\): asymmetric padding .* only after a ReLU",
        ),
        (
            helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2, 3], name="tb"),
            ["N", 2, 4, 4],
            r"node 'tb' \(Transpose\): perm=\[1, 0, 2, 3\] moves the batch axis",
        ),
        (
            helper.make_node("Mul", ["x", "spatial"], ["y"], name="mask"),
            ["N", 2, 4, 4],
            r"node 'mask' \(Mul\): the constant of shape .* varies along several axes",
        ),
    ],
)
def test_unsupported_graphs_are_refused_by_node_and_op(node, in_shape, message):
    inits = [
        onnx.numpy_helper.from_array(np.array([2.0, 2.0, 2.0, 2.0], dtype=np.float32), "sc"),
        onnx.numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads"),
        onnx.numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), "spatial"),
    ]
    with pytest.raises(ValueError, match=message):
        nets.load_onnx(_single(node, in_shape, inits))


def test_the_application_reads_the_input_shape_from_the_file(tmp_path):
    # a convolution first leaves the spatial size open: before graphs recorded it, the command line
    # needed --input-shape for such a file
    from bowlrp.app.adapters import NetworkExplainer, infer_input_shape
    from bowlrp.app.persist import load_model

    path = tmp_path / "resnet.onnx"
    onnx.save(residual(13), str(path))
    net = load_model(path)
    assert infer_input_shape(net) == (3, 8, 8)
    image = np.random.default_rng(0).uniform(size=(12, 12, 3))
    heatmap = NetworkExplainer(net).explain([image])[0]
    assert heatmap.relevance.sum() + heatmap.residual == pytest.approx(heatmap.score, abs=1e-9)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_imported_graphs_save_and_load(name, tmp_path):
    net = nets.load_onnx(BUILDERS[name](13))
    path = net.save(tmp_path / f"{name}.npz")
    again = nets.load(path)
    X = sample(name)
    np.testing.assert_array_equal(again(X), net(X))
    assert again.names == net.names


def test_a_tensor_read_under_two_names_is_not_folded_into():
    """Gemm -> y; Identity(y) -> z; z + bias and relu(y) both read the Gemm: folding the bias into it
    (the bias's input z has one reader) would change what relu(y) reads."""
    rng = np.random.default_rng(0)
    W, c = rng.normal(size=(2, 3)), rng.normal(size=2)
    init = [helper.make_tensor("W", TensorProto.FLOAT, W.shape, W.astype(np.float32).ravel()),
            helper.make_tensor("c", TensorProto.FLOAT, c.shape, c.astype(np.float32).ravel())]
    nodes = [helper.make_node("Gemm", ["x", "W"], ["y"], transB=1, name="gemm"),
             helper.make_node("Identity", ["y"], ["z"], name="same"),
             helper.make_node("Add", ["z", "c"], ["biased"], name="bias"),
             helper.make_node("Relu", ["y"], ["r"], name="relu"),
             helper.make_node("Add", ["biased", "r"], ["out"], name="join")]
    graph = helper.make_graph(nodes, "aliased",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    X = rng.normal(size=(4, 3))
    np.testing.assert_allclose(nets.load_onnx(model)(X), reference(model, X), rtol=1e-5, atol=1e-5)


def test_the_input_shape_survives_casting_folding_and_saving(tmp_path):
    net = nets.load_onnx(residual(13))
    assert net.input_shape == (3, 8, 8)
    assert net.astype(np.float32).input_shape == (3, 8, 8)
    again = nets.load(net.save(tmp_path / "net.npz"))
    assert again.input_shape == (3, 8, 8)
    np.testing.assert_array_equal(again(sample("residual")), net(sample("residual")))


def test_a_bias_and_a_batch_norm_both_fold_into_their_convolution():
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(2, 1, 3, 3)), rng.normal(size=(1, 2, 1, 1))
    bn = [rng.uniform(0.5, 2, 2), rng.normal(size=2), rng.normal(size=2), rng.uniform(0.5, 2, 2)]
    names = ["W", "b", "gamma", "beta", "mean", "var"]
    init = [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.astype(np.float32).ravel())
            for n, a in zip(names, [W, b] + bn)]
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "b"], ["cb"], name="bias"),
             helper.make_node("BatchNormalization", ["cb", "gamma", "beta", "mean", "var"], ["out"],
                              name="bn")]
    graph = helper.make_graph(nodes, "conv_bias_bn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 5, 5])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    net = nets.load_onnx(model)
    assert [type(layer).__name__ for layer in net.layers] == ["Conv2D"]
    X = rng.normal(size=(2, 1, 5, 5))
    np.testing.assert_allclose(net(X), reference(model, X), rtol=1e-5, atol=1e-5)


def test_a_node_missing_a_required_attribute_is_a_clear_error():
    nodes = [helper.make_node("LRN", ["x"], ["out"], name="lrn")]  # no "size"
    graph = helper.make_graph(nodes, "bad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ValueError, match="malformed ONNX graph|size"):
        nets.load_onnx(model)
