"""LRP Toolbox plain-text models: written here in the toolbox's format, read with nets.load_toolbox,
and compared with an independent NHWC forward pass that follows the toolbox's own definitions."""

from __future__ import annotations

import numpy as np
import pytest

import nets

# ------------------------------------------------------------------------------------------------
# a slow, obviously correct NHWC twin of the toolbox's forward pass (its modules' definitions)


def tb_conv(X, W, B, stride):
    N, H, Wd, D = X.shape
    hf, wf, df, nf = W.shape
    Ho, Wo = (H - hf) // stride[0] + 1, (Wd - wf) // stride[1] + 1
    Y = np.zeros((N, Ho, Wo, nf))
    for i in range(Ho):
        for j in range(Wo):
            patch = X[:, i * stride[0] : i * stride[0] + hf, j * stride[1] : j * stride[1] + wf, :]
            for n in range(nf):
                Y[:, i, j, n] = (patch * W[..., n]).sum(axis=(1, 2, 3)) + B[n]
    return Y


def tb_pool(X, pool, stride, reduce):
    N, H, Wd, D = X.shape
    Ho, Wo = (H - pool[0]) // stride[0] + 1, (Wd - pool[1]) // stride[1] + 1
    Y = np.zeros((N, Ho, Wo, D))
    for i in range(Ho):
        for j in range(Wo):
            Y[:, i, j, :] = reduce(
                X[:, i * stride[0] : i * stride[0] + pool[0], j * stride[1] : j * stride[1] + pool[1], :]
            )
    return Y


def tb_sumpool(X, pool, stride):
    return tb_pool(X, pool, stride, lambda p: p.sum(axis=(1, 2)) / np.sqrt(pool[0] * pool[1]))


def tb_maxpool(X, pool, stride):
    return tb_pool(X, pool, stride, lambda p: p.max(axis=(1, 2)))


def softmax(Z):
    e = np.exp(Z - Z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fmt(values):
    return " ".join(repr(float(v)) for v in np.ravel(values))


def linear_text(W, B):
    return f"Linear {W.shape[0]} {W.shape[1]}\n{fmt(W)}\n{fmt(B)}\n"


def conv_text(W, B, stride):
    h, w, d, n = W.shape
    return f"Convolution {h} {w} {d} {n} {stride[0]} {stride[1]}\n{fmt(W)}\n{fmt(B)}\n"


def write(tmp_path, text, name="model.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# ------------------------------------------------------------------------------------------------
def test_mlp_matches_toolbox_forward(tmp_path, rng):
    W1, B1 = rng.normal(size=(6, 5)), rng.normal(size=5)
    W2, B2 = rng.normal(size=(5, 4)), rng.normal(size=4)
    W3, B3 = rng.normal(size=(4, 3)), rng.normal(size=3)
    text = linear_text(W1, B1) + "Rect\n" + linear_text(W2, B2) + "Tanh\n" + linear_text(W3, B3) + "SoftMax\n"
    model = nets.load_toolbox(write(tmp_path, text))
    X = rng.normal(size=(9, 6))
    expected = softmax(np.tanh(np.maximum(X @ W1 + B1, 0) @ W2 + B2) @ W3 + B3)
    np.testing.assert_allclose(model(X), expected, rtol=0, atol=1e-12)
    kinds = [layer.kind for layer in model.layers]
    assert kinds == ["Dense", "ReLU", "Dense", "Tanh", "Dense", "Softmax"]
    # nets stores W as (out, in): the transpose of the toolbox's (in, out) matrix, bit for bit
    assert np.array_equal(model.layers[0].W, W1.T)


def test_legacy_row_per_line_layout_reads_the_same_weights(tmp_path, rng):
    # the toolbox's published XOR net uses the legacy layout: one line per row of W
    W1, B1 = rng.normal(size=(2, 3)), rng.normal(size=3)
    W2, B2 = rng.normal(size=(3, 2)), rng.normal(size=2)
    legacy = ""
    for W, B, act in ((W1, B1, "Tanh"), (W2, B2, "SoftMax")):
        legacy += (
            f"Linear {W.shape[0]} {W.shape[1]}\n" + "".join(fmt(row) + "\n" for row in W) + fmt(B) + "\n"
        )
        legacy += act + "\n"
    current = linear_text(W1, B1) + "Tanh\n" + linear_text(W2, B2) + "SoftMax\n"
    a = nets.load_toolbox(write(tmp_path, legacy, "legacy.txt"))
    b = nets.load_toolbox(write(tmp_path, current, "current.txt"))
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert np.array_equal(a(X), b(X))
    np.testing.assert_allclose(a(X), softmax(np.tanh(X @ W1 + B1) @ W2 + B2), atol=1e-12)


def test_conv_net_nhwc_to_nchw_with_flatten_permutation(tmp_path, rng):
    Wc1, Bc1 = rng.normal(size=(3, 3, 2, 4)), rng.normal(size=4)
    Wc2, Bc2 = rng.normal(size=(2, 2, 4, 3)), rng.normal(size=3)
    Wl, Bl = rng.normal(size=(2 * 2 * 3, 5)), rng.normal(size=5)
    text = (
        conv_text(Wc1, Bc1, (1, 1))
        + "Rect\nSumPool 2 2 2 2\n"
        + conv_text(Wc2, Bc2, (1, 1))
        + "Rect\nMaxPool 2 2 1 1\nFlatten\n"
        + linear_text(Wl, Bl)
        + "SoftMax\n"
    )
    path = write(tmp_path, text)
    X = rng.normal(size=(3, 10, 10, 2))  # NHWC, as the toolbox takes it
    h = tb_sumpool(np.maximum(tb_conv(X, Wc1, Bc1, (1, 1)), 0), (2, 2), (2, 2))
    h = tb_maxpool(np.maximum(tb_conv(h, Wc2, Bc2, (1, 1)), 0), (2, 2), (1, 1))
    expected = softmax(h.reshape(len(X), -1) @ Wl + Bl)

    model = nets.load_toolbox(path, input_shape=(10, 10, 2))
    got = model(X.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert [layer.kind for layer in model.layers] == [
        "Conv2D",
        "ReLU",
        "AvgPool2D",
        "Conv2D",
        "ReLU",
        "MaxPool2D",
        "Flatten",
        "Dense",
        "Softmax",
    ]
    # the sum pool's factor sqrt(4) = 2 travelled into the next convolution's weights
    assert np.array_equal(model.layers[3].W, 2.0 * Wc2.transpose(3, 2, 0, 1))

    # without input_shape the 2x2 map at Flatten makes the permutation ambiguous: refused, not guessed
    with pytest.raises(ValueError, match="input_shape"):
        nets.load_toolbox(path)
    with pytest.raises(ValueError, match="Linear expects 12 inputs but receives 27"):
        nets.load_toolbox(path, input_shape=(12, 12, 2))


def test_strided_conv_and_sumpool_before_tanh(tmp_path, rng):
    # a sum pool whose factor cannot travel (Tanh follows) becomes a fixed per-channel convolution
    Wc, Bc = rng.normal(size=(3, 2, 1, 2)), rng.normal(size=2)
    Wl, Bl = rng.normal(size=(2 * 2 * 2, 3)), rng.normal(size=3)
    text = conv_text(Wc, Bc, (2, 1)) + "SumPool 2 2 2 2\nTanh\nFlatten\n" + linear_text(Wl, Bl)
    X = rng.normal(size=(4, 9, 5, 1))
    h = np.tanh(tb_sumpool(tb_conv(X, Wc, Bc, (2, 1)), (2, 2), (2, 2)))
    expected = h.reshape(len(X), -1) @ Wl + Bl
    model = nets.load_toolbox(write(tmp_path, text), input_shape=(9, 5, 1))
    np.testing.assert_allclose(model(X.transpose(0, 3, 1, 2)), expected, rtol=0, atol=1e-12)
    assert [layer.kind for layer in model.layers][:3] == ["Conv2D", "Conv2D", "Tanh"]


def test_lenet5_layout_of_the_published_mnist_model(tmp_path, rng):
    # the layer headers of the toolbox's models/MNIST/LeNet-5.txt (32x32x1 input, 1x1 map at Flatten,
    # so no input_shape is needed), with random weights written at its 3-decimal precision
    spec = [((5, 5, 1, 10), True), ((5, 5, 10, 25), True), ((4, 4, 25, 100), True), ((1, 1, 100, 10), False)]
    text, params = "", []
    for shape, pool in spec:
        W = np.round(rng.normal(scale=0.2, size=shape), 3)
        B = np.round(rng.normal(scale=0.01, size=shape[-1]), 3)
        params.append((W, B))
        text += f"Convolution {' '.join(map(str, shape))} 1 1\n"
        text += " ".join(f"{v:.3f}" for v in W.ravel()) + "\n" + " ".join(f"{v:.3f}" for v in B) + "\n"
        if pool:
            text += "Rect\nSumPool 2 2 2 2\n"
    text += "Flatten\n"
    model = nets.load_toolbox(write(tmp_path, text))
    X = rng.uniform(-1, 1, size=(2, 32, 32, 1))
    h = X
    for W, B in params[:3]:
        h = tb_sumpool(np.maximum(tb_conv(h, W, B, (1, 1)), 0), (2, 2), (2, 2))
    expected = tb_conv(h, *params[3], (1, 1)).reshape(2, 10)
    np.testing.assert_allclose(model(X.transpose(0, 3, 1, 2)), expected, rtol=0, atol=1e-12)


def test_plain_sum_pool_option(tmp_path, rng):
    Wl, Bl = rng.normal(size=(4, 2)), rng.normal(size=2)
    text = "SumPool 2 2 2 2\nFlatten\n" + linear_text(Wl, Bl)
    X = rng.normal(size=(2, 4, 4, 1))
    plain = tb_pool(X, (2, 2), (2, 2), lambda p: p.sum(axis=(1, 2)))
    model = nets.load_toolbox(write(tmp_path, text), input_shape=(4, 4, 1), sumpool_normalizer="none")
    np.testing.assert_allclose(model(X.transpose(0, 3, 1, 2)), plain.reshape(2, -1) @ Wl + Bl, atol=1e-12)


@pytest.mark.parametrize(
    "text, message",
    [
        ("Linear 2 2\n1 2 3 4\n0 0\nBogus\n", r"line 4: unknown layer type 'Bogus'"),
        ("Linear 2 2\n1 2 3\n0 0\n", r"line 2: 'Linear 2 2' needs 4 weights"),
        ("Linear 2 2\n1 2 3 4\n", r"line 1: file ends before the bias"),
        ("Linear 2 2\n", r"file ends before the weights"),
        ("Linear 2 2\n1 2 x 4\n0 0\n", r"line 2: .*not a number"),
        ("Linear 2 2\n1 2 nan 4\n0 0\n", r"line 2: .*NaN"),
        ("Linear 2 two\n1 2 3 4\n0 0\n", r"line 1: .*not integers"),
        ("Linear 2 2\n1 2 3 4\n0 0 0\n", r"line 3: 'Linear 2 2' needs 2 bias values"),
        ("SoftMax\nLinear 2 2\n1 2 3 4\n0 0\n", r"SoftMax is only supported as the last layer"),
        ("Convolution 1 1 1 1 1 1\n1\n0\nLinear 1 1\n1\n0\n", r"Linear layer applied to an image"),
        ("Linear 2 2\n1 2 3 4\n0 0\nLinear 3 1\n1 1 1\n0\n", r"Linear expects 3 inputs but receives 2"),
        ("MaxPool 2 2 0 2\n", r"not positive"),
        ("Rect 3\n", r"'Rect' takes no parameters"),
        ("\n\n", r"no layers"),
    ],
)
def test_malformed_files_give_clear_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        nets.load_toolbox(write(tmp_path, text))


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "model.txt"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match="not an LRP Toolbox text model|unknown layer type"):
        nets.load_toolbox(path)


def test_image_smaller_than_window_is_reported(tmp_path):
    text = "Convolution 3 3 1 1 1 1\n" + " ".join(["1"] * 9) + "\n0\n"
    with pytest.raises(ValueError, match="smaller than the window"):
        nets.load_toolbox(write(tmp_path, text), input_shape=(2, 2, 1))


# ------------------------------------------------------------------------------------------------
# LRP: the toolbox's own epsilon rule (its modules' _epsilon_lrp), written NHWC, against nets.LRP
EPS = 1e-6  # nets' default Epsilon


def tb_linear_lrp(X, W, B, R):
    Z = W[None] * X[:, :, None]
    Zs = Z.sum(axis=1) + B
    Zs = Zs + EPS * np.where(Zs >= 0, 1.0, -1.0)
    return ((Z / Zs[:, None, :]) * R[:, None, :]).sum(axis=2)


def tb_conv_lrp(X, W, B, stride, R):
    hf, wf, _, _ = W.shape
    Rx = np.zeros_like(X)
    for i in range(R.shape[1]):
        for j in range(R.shape[2]):
            sl = (
                slice(None),
                slice(i * stride[0], i * stride[0] + hf),
                slice(j * stride[1], j * stride[1] + wf),
            )
            Z = W[None] * X[sl][..., None]
            Zs = Z.sum(axis=(1, 2, 3), keepdims=True) + B
            Zs = Zs + EPS * np.where(Zs >= 0, 1.0, -1.0)
            Rx[sl] += ((Z / Zs) * R[:, i : i + 1, j : j + 1, None, :]).sum(axis=4)
    return Rx


def tb_sumpool_lrp(X, pool, R):
    Rx = np.zeros_like(X)
    for i in range(R.shape[1]):
        for j in range(R.shape[2]):
            sl = (slice(None), slice(i * pool[0], (i + 1) * pool[0]), slice(j * pool[1], (j + 1) * pool[1]))
            Z = X[sl]
            Zs = Z.sum(axis=(1, 2), keepdims=True)
            Rx[sl] += Z / (Zs + EPS * np.where(Zs >= 0, 1.0, -1.0)) * R[:, i : i + 1, j : j + 1, :]
    return Rx


def test_epsilon_lrp_of_a_toolbox_mlp_equals_the_toolbox_rule(tmp_path, rng):
    W1, B1 = rng.normal(size=(6, 5)), rng.normal(size=5)
    W2, B2 = rng.normal(size=(5, 3)), rng.normal(size=3)
    model = nets.load_toolbox(
        write(tmp_path, linear_text(W1, B1) + "Tanh\n" + linear_text(W2, B2) + "SoftMax\n")
    )
    X = rng.normal(size=(7, 6))
    H = np.tanh(X @ W1 + B1)
    logits = H @ W2 + B2
    target = logits.argmax(axis=1)
    R_out = np.zeros_like(logits)
    R_out[np.arange(len(X)), target] = logits[np.arange(len(X)), target]
    expected = tb_linear_lrp(X, W1, B1, tb_linear_lrp(H, W2, B2, R_out))
    got = nets.LRP(model).relevance(X)  # default: Epsilon(1e-6) everywhere, predicted class
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_epsilon_lrp_of_a_toolbox_cnn_equals_the_toolbox_rule_in_nchw(tmp_path, rng):
    Wc, Bc = rng.normal(size=(3, 3, 2, 4)), rng.normal(size=4) * 0.1
    Wl, Bl = rng.normal(size=(3 * 3 * 4, 3)), rng.normal(size=3) * 0.1
    text = conv_text(Wc, Bc, (1, 1)) + "Rect\nSumPool 2 2 2 2\nFlatten\n" + linear_text(Wl, Bl)
    model = nets.load_toolbox(write(tmp_path, text), input_shape=(8, 8, 2))
    X = rng.normal(size=(3, 8, 8, 2))
    A1 = np.maximum(tb_conv(X, Wc, Bc, (1, 1)), 0)
    P = tb_sumpool(A1, (2, 2), (2, 2))
    logits = P.reshape(3, -1) @ Wl + Bl
    R_out = np.zeros_like(logits)
    R_out[:, 1] = logits[:, 1]
    R_p = tb_linear_lrp(P.reshape(3, -1), Wl, Bl, R_out).reshape(P.shape)
    expected = tb_conv_lrp(X, Wc, Bc, (1, 1), tb_sumpool_lrp(A1, (2, 2), R_p))
    got = nets.LRP(model).relevance(X.transpose(0, 3, 1, 2), target=1)
    # the average pool's stabiliser acts on the mean rather than the sum: equal to ~1e-6
    np.testing.assert_allclose(
        got, expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-7 * np.abs(expected).max()
    )


def test_every_preset_composite_explains_a_toolbox_cnn(tmp_path, rng):
    from nets.composites import COMPOSITES

    Wc, Bc = rng.normal(size=(3, 3, 1, 4)), np.zeros(4)
    Wl, Bl = rng.normal(size=(3 * 3 * 4, 3)), np.zeros(3)
    text = conv_text(Wc, Bc, (1, 1)) + "Rect\nSumPool 2 2 2 2\nFlatten\n" + linear_text(Wl, Bl) + "SoftMax\n"
    model = nets.load_toolbox(write(tmp_path, text), input_shape=(8, 8, 1))
    X = rng.uniform(0, 1, size=(4, 1, 8, 8))
    for name in sorted(COMPOSITES):
        kwargs = {"low": 0.0, "high": 1.0} if name == "epsilon_gamma_box" else {}
        R, diag = nets.LRP(model, name, **kwargs).relevance(X, return_diagnostics=True)
        assert R.shape == X.shape and np.all(np.isfinite(R)), name
    # no biases, positive inputs, (almost) no stabiliser: LRP conserves the logit exactly through the
    # average pool and the convolution that absorbed the sum pool's factor
    lrp = nets.LRP(model, "epsilon_plus", epsilon=0.0, stabilizer=1e-15)
    R = lrp.relevance(X, target=0)
    logits = lrp.explained_model(X)
    np.testing.assert_allclose(R.reshape(4, -1).sum(axis=1), logits[:, 0], rtol=1e-9)
