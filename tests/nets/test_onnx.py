"""ONNX import: models built with onnx.helper, saved to real files, compared with onnx's reference
evaluator (float32) to 1e-5; unsupported graphs must fail with errors that name the node."""

from __future__ import annotations

import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import nets  # noqa: E402

OPSET = 17


def init(name, array, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(array, dtype=dtype), name)


def make_model(nodes, inits, in_shape, out_shape=None, opset=OPSET, in_name="x", out_name="y"):
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if out_shape is not None:
        onnx.checker.check_model(model)
    return model


def save(tmp_path, model, name="model.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def reference(model, X):
    return ReferenceEvaluator(model).run(None, {model.graph.input[0].name: X.astype(np.float32)})[0]


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def f32(rng, *shape, scale=0.5):
    return (rng.normal(size=shape) * scale).astype(np.float32)


# ------------------------------------------------------------------------------------------------
def test_mlp_gemm_variants_matmul_add_and_softmax(tmp_path, rng):
    W1, b1 = f32(rng, 8, 6), f32(rng, 8)  # Gemm transB=1: (out, in) like PyTorch
    W2, b2 = f32(rng, 8, 7), f32(rng, 1, 7)  # Gemm transB=0 with alpha/beta and a (1, M) bias
    W3, b3 = f32(rng, 7, 5), f32(rng, 5)  # MatMul + Add
    W4 = f32(rng, 4, 5)
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h1"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "W2", "b2"], ["h2"], alpha=0.5, beta=2.0, name="fc2"),
        helper.make_node("LeakyRelu", ["h2"], ["a2"], alpha=0.2, name="lrelu"),
        helper.make_node("MatMul", ["a2", "W3"], ["m3"], name="mm3"),
        helper.make_node("Add", ["m3", "b3"], ["h3"], name="bias3"),
        helper.make_node("Tanh", ["h3"], ["a3"], name="tanh"),
        helper.make_node("Gemm", ["a3", "W4"], ["h4"], transB=1, name="fc4"),
        helper.make_node("Sigmoid", ["h4"], ["a4"], name="sig"),
        helper.make_node("Softmax", ["a4"], ["y"], axis=-1, name="softmax"),
    ]
    inits = [
        init("W1", W1),
        init("b1", b1),
        init("W2", W2),
        init("b2", b2),
        init("W3", W3),
        init("b3", b3),
        init("W4", W4),
    ]
    model = make_model(nodes, inits, ["N", 6], ["N", 4])
    net = nets.load_onnx(save(tmp_path, model))
    X = rng.normal(size=(10, 6))
    np.testing.assert_allclose(net(X), reference(model, X), rtol=1e-5, atol=1e-5)
    assert [layer.kind for layer in net.layers] == [
        "Dense",
        "ReLU",
        "Dense",
        "LeakyReLU",
        "Dense",
        "Tanh",
        "Dense",
        "Sigmoid",
        "Softmax",
    ]
    assert net.names[:2] == ["fc1", "relu1"]
    assert net.dtype == np.float64
    single = nets.load_onnx(model, dtype=np.float32)
    assert single.dtype == np.float32
    np.testing.assert_allclose(single(X.astype(np.float32)), reference(model, X), rtol=1e-5, atol=1e-5)
    # alpha and beta went into the weights, the separate Add into the MatMul's bias
    np.testing.assert_array_equal(net.layers[2].W, 0.5 * W2.T.astype(np.float64))
    np.testing.assert_array_equal(net.layers[2].b, 2.0 * b2.ravel().astype(np.float64))
    np.testing.assert_array_equal(net.layers[4].b, b3.astype(np.float64))


def _cnn(rng, opset=OPSET):
    Wc1, bc1 = f32(rng, 4, 3, 3, 3), f32(rng, 4)
    g1, be1, m1, v1 = f32(rng, 4) + 1, f32(rng, 4), f32(rng, 4), np.abs(f32(rng, 4)) + 0.5
    Wc2, bias2 = f32(rng, 6, 4, 3, 3), f32(rng, 6, 1, 1)
    g2, be2, m2, v2 = f32(rng, 6) + 1, f32(rng, 6), f32(rng, 6), np.abs(f32(rng, 6)) + 0.5
    Wf, bf = f32(rng, 5, 6 * 3 * 3), f32(rng, 5)
    nodes = [
        helper.make_node(
            "Conv", ["x", "Wc1", "bc1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], name="conv1"
        ),
        helper.make_node(
            "BatchNormalization", ["c1", "g1", "be1", "m1", "v1"], ["n1"], epsilon=1e-3, name="bn1"
        ),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "Wc2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "bias2"], ["c2b"], name="conv2_bias"),
        helper.make_node("BatchNormalization", ["c2b", "g2", "be2", "m2", "v2"], ["n2"], name="bn2"),
        helper.make_node("LeakyRelu", ["n2"], ["r2"], name="lrelu2"),
        helper.make_node(
            "AveragePool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 1, 1], name="avg"
        ),
        helper.make_node("Flatten", ["p2"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "Wf", "bf"], ["g"], transB=1, name="fc"),
        helper.make_node("Dropout", ["g"], ["d"], name="drop"),
        helper.make_node("Identity", ["d"], ["y"], name="ident"),
    ]
    inits = [
        init(k, v)
        for k, v in dict(
            Wc1=Wc1,
            bc1=bc1,
            g1=g1,
            be1=be1,
            m1=m1,
            v1=v1,
            Wc2=Wc2,
            bias2=bias2,
            g2=g2,
            be2=be2,
            m2=m2,
            v2=v2,
            Wf=Wf,
            bf=bf,
        ).items()
    ]
    return make_model(nodes, inits, ["N", 3, 8, 8], ["N", 5], opset=opset)


def test_cnn_with_batchnorm_pooling_flatten_matches_reference(tmp_path, rng):
    model = _cnn(rng)
    net = nets.load_onnx(save(tmp_path, model))
    X = rng.normal(size=(4, 3, 8, 8))
    np.testing.assert_allclose(net(X), reference(model, X), rtol=1e-5, atol=1e-5)
    # both batch norms folded (one after a Conv, one after Conv + bias Add); nothing left of them
    kinds = [layer.kind for layer in net.layers]
    assert kinds == ["Conv2D", "ReLU", "MaxPool2D", "Conv2D", "LeakyReLU", "AvgPool2D", "Flatten", "Dense"]
    assert net.layers[5].count_include_pad is False  # ONNX's default, kept

    kept = nets.load_onnx(model, fold_batchnorm=False)
    assert [layer.kind for layer in kept.layers].count("BatchNorm2D") == 2
    np.testing.assert_allclose(kept(X), net(X), rtol=1e-10, atol=1e-10)


def test_cnn_at_an_old_opset():
    # onnx.reference's BatchNormalization-9 blends in batch statistics (a training-mode quirk), so
    # the same graph at opset 17 is the reference for the opset-11 file
    old, new = _cnn(np.random.default_rng(5), opset=11), _cnn(np.random.default_rng(5))
    X = np.random.default_rng(6).normal(size=(2, 3, 8, 8))
    np.testing.assert_allclose(nets.load_onnx(old)(X), reference(new, X), rtol=1e-5, atol=1e-5)


def test_batchnorm_without_a_layer_before_is_kept(rng):
    g, b, m, v = f32(rng, 5) + 1, f32(rng, 5), f32(rng, 5), np.abs(f32(rng, 5)) + 0.1
    W = f32(rng, 3, 5)
    nodes = [
        helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["n"], name="bn_in"),
        helper.make_node("Gemm", ["n", "W"], ["y"], transB=1, name="fc"),
    ]
    model = make_model(
        nodes, [init("g", g), init("b", b), init("m", m), init("v", v), init("W", W)], ["N", 5]
    )
    net = nets.load_onnx(model)
    assert [layer.kind for layer in net.layers] == ["BatchNorm1D", "Dense"]
    X = rng.normal(size=(6, 5))
    np.testing.assert_allclose(net(X), reference(model, X), rtol=1e-5, atol=1e-5)


def test_global_average_pool_with_flatten_and_before_a_1x1_conv(rng):
    Wc, Wh, Wf = f32(rng, 4, 2, 3, 3), f32(rng, 3, 4, 1, 1), f32(rng, 2, 4)
    flat = [
        helper.make_node("Conv", ["x", "Wc"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "Wf"], ["y"], transB=1, name="fc"),
    ]
    model = make_model(flat, [init("Wc", Wc), init("Wf", Wf)], ["N", 2, 7, 6])
    net = nets.load_onnx(model)
    assert [layer.kind for layer in net.layers] == ["Conv2D", "ReLU", "GlobalAvgPool2D", "Dense"]
    X = rng.normal(size=(3, 2, 7, 6))
    np.testing.assert_allclose(net(X), reference(model, X), rtol=1e-5, atol=1e-5)

    # SqueezeNet-style head: the pooled (C, 1, 1) map feeds a 1x1 convolution
    head = [
        helper.make_node("Conv", ["x", "Wc"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Conv", ["g", "Wh"], ["h"], name="conv_head"),
        helper.make_node("Flatten", ["h"], ["y"], name="flat"),
    ]
    model = make_model(head, [init("Wc", Wc), init("Wh", Wh)], ["N", 2, 7, 6])
    net = nets.load_onnx(model)
    np.testing.assert_allclose(net(X), reference(model, X), rtol=1e-5, atol=1e-5)


def test_model_zoo_mnist_layout(tmp_path, rng):
    """The ONNX model zoo's MNIST (CNTK export, opset 8): fixed (1, 1, 28, 28) input, SAME_UPPER
    convolutions without bias followed by an Add of a (C, 1, 1) constant, a Reshape to the constant
    [1, 256], and a MatMul whose weight is itself a Reshape of a (16, 4, 4, 10) initializer."""
    P5, P6 = f32(rng, 8, 1, 5, 5), f32(rng, 8, 1, 1)
    P87, P88 = f32(rng, 16, 8, 5, 5, scale=0.1), f32(rng, 16, 1, 1)
    P193, P194 = f32(rng, 16, 4, 4, 10, scale=0.1), f32(rng, 1, 10)
    nodes = [
        helper.make_node("Reshape", ["P193", "P193_shape"], ["P193_reshape1"], name="Times212_reshape1"),
        helper.make_node(
            "Conv",
            ["x", "P5"],
            ["c28"],
            kernel_shape=[5, 5],
            strides=[1, 1],
            auto_pad="SAME_UPPER",
            name="Convolution28",
        ),
        helper.make_node("Add", ["c28", "P6"], ["p30"], name="Plus30"),
        helper.make_node("Relu", ["p30"], ["r32"], name="ReLU32"),
        helper.make_node("MaxPool", ["r32"], ["m66"], kernel_shape=[2, 2], strides=[2, 2], name="Pooling66"),
        helper.make_node(
            "Conv",
            ["m66", "P87"],
            ["c110"],
            kernel_shape=[5, 5],
            strides=[1, 1],
            auto_pad="SAME_UPPER",
            name="Convolution110",
        ),
        helper.make_node("Add", ["c110", "P88"], ["p112"], name="Plus112"),
        helper.make_node("Relu", ["p112"], ["r114"], name="ReLU114"),
        helper.make_node(
            "MaxPool", ["r114"], ["m160"], kernel_shape=[3, 3], strides=[3, 3], name="Pooling160"
        ),
        helper.make_node("Reshape", ["m160", "shape256"], ["t212"], name="Times212_reshape0"),
        helper.make_node("MatMul", ["t212", "P193_reshape1"], ["t"], name="Times212"),
        helper.make_node("Add", ["t", "P194"], ["y"], name="Plus214"),
    ]
    inits = [
        init("P5", P5),
        init("P6", P6),
        init("P87", P87),
        init("P88", P88),
        init("P193", P193),
        init("P194", P194),
        init("P193_shape", [256, 10], np.int64),
        init("shape256", [1, 256], np.int64),
    ]
    model = make_model(nodes, inits, [1, 1, 28, 28], [1, 10], opset=8)
    net = nets.load_onnx(save(tmp_path, model))
    assert [layer.kind for layer in net.layers] == [
        "Conv2D",
        "ReLU",
        "MaxPool2D",
        "Conv2D",
        "ReLU",
        "MaxPool2D",
        "Flatten",
        "Dense",
    ]
    assert net.layers[0].padding == (2, 2)
    X = rng.uniform(0, 1, size=(3, 1, 28, 28))
    ours = net(X)  # our model takes any batch size; the file is fixed to batch 1
    for i in range(3):
        np.testing.assert_allclose(ours[i : i + 1], reference(model, X[i : i + 1]), rtol=1e-5, atol=1e-5)


def test_pytorch_style_dynamic_flatten_through_shape_ops(rng):
    # x.view(x.size(0), -1) exported by older torch.onnx: Shape -> Gather -> Unsqueeze -> Concat
    Wc, Wf, bf = f32(rng, 3, 1, 2, 2), f32(rng, 4, 3 * 2 * 2), f32(rng, 4)
    nodes = [
        helper.make_node("Cast", ["x"], ["xc"], to=TensorProto.FLOAT, name="cast"),  # no-op for nets
        helper.make_node("Conv", ["xc", "Wc"], ["c"], strides=[2, 2], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["s"], name="shape"),
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.INT64, [], [0])),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0, name="gather"),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0, name="concat"),
        helper.make_node("Reshape", ["r", "target"], ["f"], name="view"),
        helper.make_node("Gemm", ["f", "Wf", "bf"], ["y"], transB=1, name="fc"),
    ]
    inits = [
        init("Wc", Wc),
        init("Wf", Wf),
        init("bf", bf),
        init("axes", [0], np.int64),
        init("minus1", [-1], np.int64),
    ]
    model = make_model(nodes, inits, ["batch", 1, 4, 4])
    net = nets.load_onnx(model)
    assert [layer.kind for layer in net.layers] == ["Conv2D", "ReLU", "Flatten", "Dense"]
    X = rng.normal(size=(5, 1, 4, 4))
    np.testing.assert_allclose(net(X), reference(model, X), rtol=1e-5, atol=1e-5)


def test_dynamic_spatial_size_needs_input_shape(rng):
    Wc = f32(rng, 2, 1, 3, 3)
    nodes = [
        helper.make_node("Conv", ["x", "Wc"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    model = make_model(nodes, [init("Wc", Wc)], ["N", 1, "H", "W"])
    with pytest.raises(ValueError, match="pass input_shape"):
        nets.load_onnx(model)
    net = nets.load_onnx(model, input_shape=(1, 9, 9))
    X = rng.normal(size=(2, 1, 9, 9))
    np.testing.assert_allclose(net(X), reference(model, X), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not match the graph input"):
        nets.load_onnx(model, input_shape=(3, 9, 9))


# ------------------------------------------------------------------------------------------------
# graphs and operators that must be refused, with the node named


def _dense(rng, name, inp, out, k=4, m=4):
    return helper.make_node("Gemm", [inp, f"W_{name}"], [out], transB=1, name=name), init(
        f"W_{name}", f32(rng, m, k)
    )


def test_residual_add_and_an_unused_branch_load_as_a_graph(rng):
    # these two were refused as "not a chain" before graphs: now they load and compute the same
    n1, i1 = _dense(rng, "fc1", "x", "h")
    nodes = [
        n1,
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "x"], ["y"], name="skip_add"),
    ]
    model = make_model(nodes, [i1], ["N", 4])
    net = nets.load_onnx(model)
    assert isinstance(net, nets.Graph) and net.node("skip_add").inputs == ("relu", "input")
    X = rng.normal(size=(5, 4))
    np.testing.assert_allclose(net(X), reference(model, X), rtol=1e-5, atol=1e-5)

    n2, i2 = _dense(rng, "fc2", "h", "a")
    nodes = [n1, n2, helper.make_node("Relu", ["h"], ["y"], name="branch_relu")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [i1, i2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    net = nets.load_onnx(model)
    assert net.names == ["fc1", "branch_relu"]  # fc2 computes nothing the output needs
    np.testing.assert_allclose(net(X), reference(model, X), rtol=1e-5, atol=1e-5)


def test_extra_graph_output_is_not_a_chain(rng):
    n1, i1 = _dense(rng, "fc1", "x", "h")
    graph = helper.make_graph(
        [n1, helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, None),
        ],
        [i1],
    )
    with pytest.raises(ValueError, match="outputs are"):
        nets.load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))


@pytest.mark.parametrize(
    "node, inits, in_shape, message",
    [
        (
            # ceil mode needs end padding that must never win the max: refused on raw input
            helper.make_node(
                "MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, name="ceil"
            ),
            [],
            ["N", 1, 5, 5],
            r"node 'ceil' \(MaxPool\): asymmetric padding .* only after a ReLU",
        ),
        (
            helper.make_node("Flatten", ["x"], ["y"], axis=2, name="flat2"),
            [],
            ["N", 2, 3, 3],
            r"node 'flat2' \(Flatten\): Flatten with axis=2",
        ),
        (
            helper.make_node("Gemm", ["x", "W"], ["y"], transA=1, name="ta"),
            [("W", (3, 4))],
            ["N", 3],
            r"node 'ta' \(Gemm\): transA=1",
        ),
    ],
)
def test_unsupported_operators_and_attributes_name_the_node(node, inits, in_shape, message):
    tensors = []
    for name, spec in inits:
        if name == "s":
            tensors.append(init(name, spec, np.int64))
        else:
            tensors.append(init(name, np.ones(spec)))
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        tensors,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(ValueError, match=message):
        nets.load_onnx(model)


def _constant(name, spec):
    if name == "s":
        return init(name, spec, np.int64)
    return init(name, np.linspace(-1, 1, int(np.prod(spec))).reshape(spec))


@pytest.mark.parametrize(
    "node, inits, in_shape",
    [
        # refused while nets explained chains only; graphs take them (test_onnx_graphs.py has more)
        (helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1], name="to_nhwc"), [], ["N", 2, 4, 4]),
        (
            helper.make_node("Conv", ["x", "W"], ["y"], group=2, name="dw"),
            [("W", (2, 1, 3, 3))],
            ["N", 2, 4, 4],
        ),
        (
            helper.make_node("Conv", ["x", "W"], ["y"], dilations=[2, 2], name="dil"),
            [("W", (2, 2, 2, 2))],
            ["N", 2, 6, 6],
        ),
        (
            helper.make_node("Conv", ["x", "W"], ["y"], pads=[0, 0, 1, 1], name="asym"),
            [("W", (2, 2, 2, 2))],
            ["N", 2, 6, 6],
        ),
        (
            helper.make_node("Conv", ["x", "W"], ["y"], auto_pad="SAME_UPPER", name="same_even"),
            [("W", (2, 2, 2, 2))],
            ["N", 2, 6, 6],
        ),
        (helper.make_node("Reshape", ["x", "s"], ["y"], name="resh"), [("s", [-1, 6, 3])], ["N", 2, 3, 3]),
        (helper.make_node("Add", ["x", "c"], ["y"], name="shift"), [("c", (4,))], ["N", 4]),
    ],
)
def test_formerly_refused_single_operators_match_the_reference(node, inits, in_shape, rng):
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_constant(name, spec) for name, spec in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    X = rng.normal(size=(3,) + tuple(in_shape[1:]))
    np.testing.assert_allclose(nets.load_onnx(model)(X), reference(model, X), rtol=1e-5, atol=1e-5)


def test_softmax_in_the_middle_is_refused(rng):
    n1, i1 = _dense(rng, "fc1", "sm", "y")
    nodes = [helper.make_node("Softmax", ["x"], ["sm"], name="early_softmax"), n1]
    model = make_model(nodes, [i1], ["N", 4])
    with pytest.raises(ValueError, match=r"'early_softmax' \(Softmax\) is not the last layer"):
        nets.load_onnx(model)


def test_corrupt_and_missing_files(tmp_path, rng):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(rng.integers(0, 256, size=300, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="not a valid ONNX file|no nodes|data input"):
        nets.load_onnx(bad)
    with pytest.raises(FileNotFoundError):
        nets.load_onnx(tmp_path / "missing.onnx")
    # a real file cut in half
    good = save(tmp_path, _cnn(rng))
    half = tmp_path / "half.onnx"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError):
        nets.load_onnx(half)


def test_missing_onnx_package_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="pip install"):
        nets.load_onnx(tmp_path / "whatever.onnx")


# ------------------------------------------------------------------------------------------------
# LRP: a model imported from ONNX explains exactly like the same weights assembled by hand


def _presets():
    from nets.composites import COMPOSITES

    return [
        (name, {"low": -4.0, "high": 4.0} if name == "epsilon_gamma_box" else {})
        for name in sorted(COMPOSITES)
    ]


def _hand_built_cnn(model):
    a = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    eps1 = float(np.float32(1e-3))  # ONNX stores epsilon as float32
    return nets.Sequential(
        [
            nets.Conv2D(a["Wc1"], a["bc1"], padding=1),
            nets.BatchNorm2D(a["g1"], a["be1"], a["m1"], a["v1"], eps=eps1),
            nets.ReLU(),
            nets.MaxPool2D(2, stride=2),
            nets.Conv2D(a["Wc2"], a["bias2"].ravel(), stride=2, padding=1),
            nets.BatchNorm2D(a["g2"], a["be2"], a["m2"], a["v2"], eps=float(np.float32(1e-5))),
            nets.LeakyReLU(0.01),
            nets.AvgPool2D(2, stride=1, padding=1, count_include_pad=False),
            nets.Flatten(),
            nets.Dense(a["Wf"], a["bf"]),
        ]
    )


def test_lrp_of_the_imported_cnn_equals_the_hand_built_network(tmp_path, rng):
    model = _cnn(rng)
    imported = nets.load_onnx(save(tmp_path, model))  # batch norm folded by the importer
    by_hand = _hand_built_cnn(model)  # batch norm folded by the LRP canonizer
    X = rng.normal(size=(3, 3, 8, 8))
    np.testing.assert_allclose(imported(X), by_hand(X), rtol=1e-10, atol=1e-10)
    for name, kwargs in _presets() + [(None, {})]:
        R_imp = nets.LRP(imported, name, **kwargs).relevance(X, target=2)
        R_hand = nets.LRP(by_hand, name, **kwargs).relevance(X, target=2)
        assert np.all(np.isfinite(R_imp)), name
        scale = np.abs(R_hand).max()
        np.testing.assert_allclose(R_imp, R_hand, rtol=1e-10, atol=1e-11 * scale, err_msg=str(name))


def test_lrp_of_the_imported_mlp_with_softmax_explains_logits(rng):
    W1, b1, W2 = f32(rng, 5, 4), f32(rng, 5), f32(rng, 3, 5)
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "W2"], ["z"], transB=1, name="fc2"),
        helper.make_node("Softmax", ["z"], ["y"], axis=1, name="softmax"),
    ]
    imported = nets.load_onnx(make_model(nodes, [init("W1", W1), init("b1", b1), init("W2", W2)], ["N", 4]))
    by_hand = nets.Sequential(
        [
            nets.Dense(W1.astype(np.float64), b1.astype(np.float64)),
            nets.ReLU(),
            nets.Dense(W2.astype(np.float64)),
        ]
    )
    X = rng.normal(size=(6, 4))
    for name, kwargs in _presets():
        np.testing.assert_allclose(
            nets.LRP(imported, name, **kwargs).relevance(X),
            nets.LRP(by_hand, name, **kwargs).relevance(X),
            rtol=1e-12,
            atol=1e-14,
        )
