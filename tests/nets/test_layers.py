"""Layers and Sequential: forward against explicit matrices and formulas, gradients against finite
differences, the config/array round trip, float32, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nets
from nets.layers import LAYER_TYPES, layer_from_config
from tests.nets.matrix_twins import bias_vector, conv_matrix


@pytest.mark.parametrize("stride,padding", [(1, 0), ((2, 1), (1, 2)), (3, 1)])
def test_conv_forward_equals_explicit_matrix(stride, padding):
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(4, 3, 3, 2)), rng.normal(size=4)
    layer = nets.Conv2D(W, b, stride=stride, padding=padding)
    X = rng.normal(size=(3, 3, 8, 7))
    M, out_shape = conv_matrix(W, X.shape[1:], layer.stride, layer.padding)
    Y = layer.forward(X)
    assert Y.shape == (3, *out_shape) and Y.flags.c_contiguous
    want = X.reshape(3, -1) @ M.T + bias_vector(b, out_shape)
    np.testing.assert_allclose(Y.reshape(3, -1), want, rtol=1e-12, atol=1e-12)


def test_conv_transpose_is_the_adjoint():
    rng = np.random.default_rng(1)
    layer = nets.Conv2D(rng.normal(size=(4, 3, 3, 3)), stride=2, padding=1)
    X = rng.normal(size=(2, 3, 9, 8))
    S = rng.normal(size=layer.forward(X).shape)
    lhs = (layer.linear(X, layer.W, None) * S).sum()
    rhs = (X * layer.linear_transpose(S, layer.W, X.shape)).sum()
    assert np.isclose(lhs, rhs, rtol=1e-12)


def test_conv_chunks_give_the_same_result(monkeypatch):
    import nets.layers.linear as L

    rng = np.random.default_rng(2)
    layer = nets.Conv2D(rng.normal(size=(2, 2, 3, 3)), rng.normal(size=2), padding=1)
    X = rng.normal(size=(5, 2, 6, 6))
    full = layer.forward(X)
    back = layer.linear_transpose(full, layer.W, X.shape)
    monkeypatch.setattr(L, "_IM2COL_MAX_ELEMENTS", 100)  # forces one image per chunk
    np.testing.assert_allclose(layer.forward(X), full, rtol=1e-14)
    np.testing.assert_allclose(layer.linear_transpose(full, layer.W, X.shape), back, rtol=1e-14)


@pytest.mark.parametrize("stride, padding, kernel", [(1, 1, 3), (1, 2, 5), (2, 1, 3), (1, 0, 1), (1, 0, 3)])
def test_transposed_map_times_the_input_is_the_product(monkeypatch, stride, padding, kernel):
    """``linear_transpose(s, W, shape, times=x)`` is ``x * linear_transpose(s, W, shape)`` to the
    last bit: multiplied into each plane by the fold (stride 1, "same" width), also when an image
    is folded in bands of rows, or after the map (other strides and paddings, 1x1, dense layers,
    mixed dtypes)."""
    import nets.layers.linear as L

    rng = np.random.default_rng(4)
    for dtype, xdtype in ((np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64)):
        W = rng.normal(size=(5, 3, kernel, kernel)).astype(dtype)
        layer = nets.Conv2D(W, stride=stride, padding=padding)
        X = rng.normal(size=(3, 3, 12, 11)).astype(xdtype)
        S = rng.normal(size=layer.output_shape(X.shape)).astype(dtype)
        want = X * layer.linear_transpose(S, layer.W, X.shape)
        got = layer.linear_transpose(S, layer.W, X.shape, times=X)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        with monkeypatch.context() as m:
            m.setattr(L, "_BAND_MAX_ELEMENTS", 3 * 11 * kernel * kernel)  # bands of about 3 rows
            banded = X * layer.linear_transpose(S, layer.W, X.shape)  # (bands add in another order)
            np.testing.assert_array_equal(layer.linear_transpose(S, layer.W, X.shape, times=X), banded)
    dense = nets.Dense(rng.normal(size=(4, 6)))
    x, s = rng.normal(size=(2, 6)), rng.normal(size=(2, 4))
    np.testing.assert_array_equal(dense.linear_transpose(s, dense.W, x.shape, times=x), x * (s @ dense.W))


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0), ((2, 1), (1, 2))])
def test_conv_flat_transpose_equals_the_ones_kernel_map(stride, padding):
    """``linear_transpose_ones`` folds the channel sum once for every input channel: the same
    numbers, to the last bit, as the transposed map of an all-ones kernel."""
    rng = np.random.default_rng(3)
    for dtype in (np.float64, np.float32):
        layer = nets.Conv2D(rng.normal(size=(4, 3, 3, 3)).astype(dtype), stride=stride, padding=padding)
        X = rng.normal(size=(2, 3, 9, 40)).astype(dtype)
        S = rng.normal(size=layer.forward(X).shape).astype(dtype)
        got = layer.linear_transpose_ones(S, X.shape)
        want = layer.linear_transpose(S.sum(axis=1, keepdims=True), np.ones((1, 3, 3, 3), dtype), X.shape)
        assert got.shape == X.shape and got.dtype == dtype
        np.testing.assert_array_equal(got, want)


def test_dense_pooling_and_elementwise_formulas():
    rng = np.random.default_rng(3)
    W, b = rng.normal(size=(3, 5)), rng.normal(size=3)
    x = rng.normal(size=(4, 5))
    np.testing.assert_allclose(nets.Dense(W, b)(x), x @ W.T + b, rtol=1e-14)
    img = rng.normal(size=(2, 3, 4, 6))
    np.testing.assert_allclose(nets.MaxPool2D(2)(img), img.reshape(2, 3, 2, 2, 3, 2).max(axis=(3, 5)), rtol=0)
    np.testing.assert_allclose(
        nets.AvgPool2D(2)(img), img.reshape(2, 3, 2, 2, 3, 2).mean(axis=(3, 5)), rtol=1e-14
    )
    np.testing.assert_allclose(nets.GlobalAvgPool2D()(img), img.mean(axis=(2, 3)), rtol=1e-14)
    assert nets.Flatten()(img).shape == (2, 72)
    np.testing.assert_array_equal(nets.ReLU()(x), np.maximum(x, 0))
    np.testing.assert_allclose(nets.LeakyReLU(0.2)(x), np.where(x > 0, x, 0.2 * x))
    np.testing.assert_allclose(nets.Tanh()(x), np.tanh(x))
    big = np.array([[-800.0, 0.0, 800.0]])
    np.testing.assert_allclose(nets.Sigmoid()(big), [[0.0, 0.5, 1.0]])  # no overflow warnings
    np.testing.assert_allclose(nets.Sigmoid()(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    p = nets.Softmax()(np.array([[1000.0, 1000.0, 0.0]]))
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0]], atol=1e-300)
    np.testing.assert_array_equal(nets.Dropout(0.3)(x), x)
    g, be, mu, var = rng.uniform(0.5, 2, 3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.5, 2, 3)
    xb = rng.normal(size=(4, 3))
    np.testing.assert_allclose(
        nets.BatchNorm1D(g, be, mu, var, eps=1e-3)(xb), (xb - mu) / np.sqrt(var + 1e-3) * g + be, rtol=1e-13
    )
    xb4 = rng.normal(size=(2, 3, 4, 4))
    want = (xb4 - mu[:, None, None]) / np.sqrt(var + 1e-5)[:, None, None] * g[:, None, None] + be[
        :, None, None
    ]
    np.testing.assert_allclose(nets.BatchNorm2D(g, be, mu, var)(xb4), want, rtol=1e-13)


def test_avg_pool_count_include_pad():
    x = np.ones((1, 1, 3, 3))
    assert nets.AvgPool2D(3, 1, 1)(x)[0, 0, 0, 0] == pytest.approx(4 / 9)
    assert nets.AvgPool2D(3, 1, 1, count_include_pad=False)(x)[0, 0, 0, 0] == pytest.approx(1.0)


def _every_layer_model(rng):
    return nets.Sequential(
        [
            nets.Conv2D(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4), stride=1, padding=1),
            nets.BatchNorm2D(
                rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)
            ),
            nets.LeakyReLU(0.1),
            nets.MaxPool2D(2),
            nets.Conv2D(rng.normal(size=(3, 4, 2, 2)), None, stride=(1, 2), padding=(1, 0)),
            nets.Tanh(),
            nets.AvgPool2D(2, stride=1, padding=1),
            nets.Sigmoid(),
            nets.Dropout(0.1),
            nets.Flatten(),
            nets.Dense(rng.normal(size=(6, 3 * 6 * 3)), rng.normal(size=6)),
            nets.BatchNorm1D(
                rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6)
            ),
            nets.ReLU(),
            nets.Dense(rng.normal(size=(3, 6))),
        ]
    )


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    model = _every_layer_model(rng)
    X = rng.normal(size=(2, 2, 8, 8))
    G = rng.normal(size=(2, 3))
    grad = model.gradient(X, G)
    h = 1e-6
    for idx in [(0, 0, 0, 0), (0, 1, 3, 4), (1, 0, 7, 7), (1, 1, 2, 5), (0, 0, 5, 1)]:
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += h
        Xm[idx] -= h
        fd = ((model(Xp) - model(Xm)) * G).sum() / (2 * h)
        assert grad[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8)
    g_gap = nets.Sequential([nets.GlobalAvgPool2D()]).gradient(X, np.ones((2, 2)))
    np.testing.assert_allclose(g_gap, np.full(X.shape, 1 / 64))
    p = nets.Sequential([nets.Dense(rng.normal(size=(3, 4))), nets.Softmax()])
    x4 = rng.normal(size=(1, 4))
    gs = p.gradient(x4, np.array([[1.0, 0.0, 0.0]]))
    fd = [(p(x4 + h * e)[0, 0] - p(x4 - h * e)[0, 0]) / (2 * h) for e in np.eye(4)]
    np.testing.assert_allclose(gs[0], fd, rtol=1e-5)


def test_every_layer_round_trips_through_config_and_arrays():
    rng = np.random.default_rng(5)
    model = _every_layer_model(rng)
    X = rng.normal(size=(2, 2, 8, 8))
    rebuilt = []
    for layer in model.layers:
        config = layer.get_config()
        json.dumps(config)  # JSON-serialisable
        arrays = layer.get_arrays()
        assert all(isinstance(a, np.ndarray) for a in arrays.values())
        again = layer_from_config(layer.kind, config, arrays)
        assert type(again) is type(layer) and LAYER_TYPES[layer.kind] is type(layer)
        rebuilt.append(again)
    np.testing.assert_array_equal(nets.Sequential(rebuilt)(X), model(X))
    json.dumps(model.get_config())
    with pytest.raises(ValueError, match="unsupported layer type"):
        layer_from_config("Conv3D", {}, {})


def test_float32_model_computes_in_float32():
    rng = np.random.default_rng(6)
    model = _every_layer_model(rng)
    m32 = model.astype(np.float32)
    assert m32.dtype == np.float32 and model.dtype == np.float64
    X = rng.normal(size=(3, 2, 8, 8))
    acts = m32.trace(X.astype(np.float32))
    assert all(a.dtype == np.float32 for a in acts)
    np.testing.assert_allclose(acts[-1], model(X), rtol=1e-4, atol=1e-4)


def test_sequential_names_and_indexing():
    rng = np.random.default_rng(7)
    model = nets.Sequential([nets.Dense(rng.normal(size=(3, 2))), nets.ReLU()], names=["fc", "act"])
    assert model["fc"] is model.layers[0] and model[1] is model.layers[1] and len(model) == 2
    assert "fc" in repr(model)
    assert nets.Sequential([nets.ReLU(), nets.ReLU()]).names == ["relu_0", "relu_1"]
    with pytest.raises(KeyError, match="no layer named"):
        model["conv"]
    with pytest.raises(ValueError, match="unique"):
        nets.Sequential([nets.ReLU(), nets.ReLU()], names=["a", "a"])
    with pytest.raises(TypeError, match="not a nets layer"):
        nets.Sequential([nets.ReLU(), np.eye(2)])
    with pytest.raises(ValueError, match="at least one layer"):
        nets.Sequential([])


def test_bad_inputs_and_parameters_give_clear_errors():
    rng = np.random.default_rng(8)
    dense = nets.Sequential([nets.Dense(rng.normal(size=(3, 4)))])
    with pytest.raises(ValueError, match="expects 4 input features"):
        dense(np.ones((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        dense(np.array([[1.0, np.nan, 0.0, 0.0]]))
    with pytest.raises(TypeError, match="numeric"):
        dense(np.array([["a", "b", "c", "d"]]))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        dense(np.ones(4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        nets.Dense(np.array([[np.inf]]))
    with pytest.raises(ValueError, match="2 dimensions"):
        nets.Dense(np.ones(3))
    with pytest.raises(ValueError, match="b has shape"):
        nets.Dense(np.ones((2, 3)), np.ones(3))
    conv = nets.Sequential([nets.Conv2D(rng.normal(size=(2, 1, 5, 5)))], names=["c1"])
    with pytest.raises(ValueError, match="'c1'.*smaller than the kernel"):
        conv(np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        conv(np.ones((1, 9)))
    with pytest.raises(ValueError, match="expects 1 input channels"):
        conv(np.ones((1, 2, 6, 6)))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        nets.Conv2D(np.ones((1, 1, 2, 2)), stride=0)
    with pytest.raises(ValueError, match="pair"):
        nets.MaxPool2D((2, 2, 2))
    with pytest.raises(ValueError, match="half the kernel"):
        nets.MaxPool2D(2, padding=2)
    with pytest.raises(ValueError, match="Dropout p"):
        nets.Dropout(1.0)
    with pytest.raises(ValueError, match="var \\+ eps"):
        nets.BatchNorm1D([1.0], [0.0], [0.0], [-1.0])
    with pytest.raises(ValueError, match="channels"):
        nets.BatchNorm2D([1.0], [0.0], [0.0], [1.0])(np.ones((1, 2, 3, 3)))
