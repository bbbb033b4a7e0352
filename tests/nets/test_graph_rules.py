"""Every rule on grouped, depthwise and dilated convolutions against the dense-matrix twin
(float64, 1e-10); exact routing of the structural layers; the new layers' validation."""

from __future__ import annotations

import numpy as np
import pytest

import nets
from nets.propagation import propagate, propagate_node
from nets.rules import AlphaBeta, Pass, WinnerTakesAll
from tests.nets.graph_models import residual_cnn
from tests.nets.matrix_twins import conv_matrix
from tests.nets.test_rules import RULES, _check_rule, _seed

GEOMETRIES = {
    "grouped": dict(groups=2, dilation=1, stride=1, padding=1, w=(4, 2, 3, 3)),
    "depthwise": dict(groups=4, dilation=1, stride=2, padding=1, w=(8, 1, 3, 3)),
    "dilated": dict(groups=1, dilation=(2, 1), stride=1, padding=(2, 0), w=(3, 4, 3, 2)),
    "grouped_dilated": dict(groups=2, dilation=2, stride=(1, 2), padding=2, w=(6, 2, 2, 3)),
}


def _case(rng, bias, geometry):
    g = dict(GEOMETRIES[geometry])
    W = rng.normal(size=g.pop("w"))
    b = rng.normal(size=W.shape[0]) if bias else None
    layer = nets.Conv2D(W, b, **g)
    X = rng.normal(size=(2, 4, 7, 6))
    args = (layer.stride, layer.padding, layer.groups, layer.dilation)
    M, out_shape = conv_matrix(W, X.shape[1:], *args)
    ones, _ = conv_matrix(np.ones_like(W), X.shape[1:], *args)
    return layer, X, M, ones, b, out_shape


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("bias", [True, False])
def test_rules_on_grouped_and_dilated_conv_match_matrix_twin(name, geometry, bias):
    rng = np.random.default_rng(_seed("grouped", name, geometry, bias))
    layer, X, M, ones, b, out_shape = _case(rng, bias, geometry)
    np.testing.assert_allclose(
        layer(X).reshape(len(X), -1),
        X.reshape(len(X), -1) @ M.T + (0 if b is None else np.repeat(b, out_shape[1] * out_shape[2])),
        rtol=1e-12,
        atol=1e-12,
    )
    _check_rule(name, layer, X, M, ones, b, out_shape, False, rng)


def test_grouped_conv_gradient_is_the_matrix_transpose():
    rng = np.random.default_rng(5)
    layer, X, M, _, _, _ = _case(rng, True, "grouped_dilated")
    g = rng.normal(size=layer(X).shape)
    np.testing.assert_allclose(
        layer.backward(X, None, g).reshape(len(X), -1), g.reshape(len(X), -1) @ M, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize(
    "layer, shapes",
    [
        (nets.Flatten(), [(2, 3, 4, 5)]),
        (nets.Reshape((6, -1)), [(2, 3, 4, 5)]),
        (nets.Transpose((3, 1, 2)), [(2, 3, 4, 5)]),
        (nets.Transpose((0, 2, 3, 1)), [(2, 3, 4, 5)]),
        (nets.Pad((1, 0, 2, 3)), [(2, 3, 4, 5)]),
        (nets.Pad((0, 0, 0, 1, 0, 0, 2, 0)), [(2, 3, 4, 5)]),
        (nets.Concat(), [(2, 3, 4, 5), (2, 1, 4, 5), (2, 2, 4, 5)]),
        (nets.Concat(axis=-1), [(2, 3, 4, 5), (2, 3, 4, 1)]),
        (nets.Identity(), [(2, 3)]),
    ],
)
def test_structural_layers_route_relevance_exactly(layer, shapes):
    """Pass routes every output position's relevance to the input position it came from."""
    rng = np.random.default_rng(7)
    xs = [rng.normal(size=s) for s in shapes]
    y = layer(*xs)
    # tag every input position with a unique number and check where each one lands
    tags = [np.arange(x.size, dtype=float).reshape(x.shape) + 1000 * k for k, x in enumerate(xs)]
    routed, _, stab, _ = propagate_node(layer, Pass(), tags, layer(*tags), layer(*tags), absorbed=True)
    for t, r in zip(tags, routed):
        np.testing.assert_array_equal(r, t)
    R = rng.normal(size=y.shape)
    out, *_ = propagate_node(layer, Pass(), xs, y, R)
    if not isinstance(layer, nets.Pad):
        assert np.isclose(sum(o.sum() for o in out), R.sum())
    assert np.all(stab == 0)


def test_pad_reports_the_relevance_of_its_zeros():
    layer = nets.Pad((1, 0, 0, 0))
    x = np.ones((1, 1, 2, 2))
    y = layer(x)
    R = np.ones(y.shape)
    (r,), _, stab, _ = propagate_node(layer, Pass(), [x], y, R, absorbed=True)
    assert r.sum() == 4 and stab[0] == 2


def test_global_max_pool_winner_takes_all_with_ties():
    x = np.array([[[[1.0, 3.0], [3.0, 0.0]]]])
    layer = nets.GlobalMaxPool2D()
    y = layer(x)
    got, _ = propagate(layer, WinnerTakesAll(), x, y, np.array([[4.0]]))
    np.testing.assert_array_equal(got, [[[[0.0, 2.0], [2.0, 0.0]]]])
    np.testing.assert_array_equal(layer.backward(x, y, np.array([[4.0]])), got)


def test_scale_clip_and_lrn_formulas():
    x = np.linspace(-2, 8, 24).reshape(1, 3, 2, 4)
    s = nets.Scale([1.0, 2.0, -1.0], offset=[0.0, 1.0, 0.5])
    np.testing.assert_allclose(
        s(x), x * np.array([1, 2, -1])[None, :, None, None] + np.array([0, 1, 0.5])[None, :, None, None]
    )
    np.testing.assert_allclose(nets.Scale(2.0, -1.0)(x), 2 * x - 1)
    np.testing.assert_allclose(nets.Scale([1.0, 2.0, 3.0, 4.0], axis=-1)(x), x * np.arange(1, 5))
    np.testing.assert_allclose(nets.Clip(0, 6)(x), np.clip(x, 0, 6))
    np.testing.assert_allclose(nets.Clip(high=1.0)(x), np.minimum(x, 1))
    # LRN with size 1 is x / (bias + alpha x^2)^beta
    np.testing.assert_allclose(nets.LRN(1, 0.5, 0.75, 2.0)(x), x / (2.0 + 0.5 * x * x) ** 0.75)


def test_new_layer_validation():
    with pytest.raises(ValueError, match="groups"):
        nets.Conv2D(np.ones((3, 1, 2, 2)), groups=2)
    with pytest.raises(ValueError, match="expects 4 input channels"):
        nets.Conv2D(np.ones((4, 2, 2, 2)), groups=2)(np.ones((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="dilation"):
        nets.Conv2D(np.ones((1, 1, 2, 2)), dilation=0)
    with pytest.raises(ValueError, match="per-sample axes"):
        nets.Transpose((1, 1, 2))
    with pytest.raises(ValueError, match="at most one -1"):
        nets.Reshape((-1, -1))
    with pytest.raises(ValueError, match="cannot reshape"):
        nets.Reshape((5,))(np.ones((2, 4)))
    with pytest.raises(ValueError, match="even number"):
        nets.Pad((1, 2, 3))
    with pytest.raises(ValueError, match="batch axis"):
        nets.Pad((1, 0, 0, 0, 0, 0))(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="cannot join"):
        nets.Concat()(np.ones((1, 2, 3)), np.ones((1, 2, 4)))
    with pytest.raises(ValueError, match="axis 0 is the batch"):
        nets.Concat(axis=0)
    with pytest.raises(ValueError, match="low <= high"):
        nets.Clip(2.0, 1.0)
    with pytest.raises(ValueError, match="LRN size"):
        nets.LRN(0)
    with pytest.raises(ValueError, match="Scale has 2 values"):
        nets.Scale([1.0, 2.0])(np.ones((1, 3, 2, 2)))


def test_alpha_beta_accepts_decimal_pairs():
    rule = AlphaBeta(2.2, 1.2)  # 2.2 - 1.2 == 1.0000000000000002 in binary floating point
    assert rule.alpha == 2.2 and rule.beta == 1.2
    with pytest.raises(ValueError, match="alpha - beta == 1"):
        AlphaBeta(2.2, 1.1)
    graph, _ = residual_cnn()
    X = np.random.default_rng(0).uniform(size=(2, 3, 8, 8))
    comp = nets.Composite(layer_map=[(nets.Conv2D, rule)])
    R, diag = nets.LRP(graph, comp).relevance(X, return_diagnostics=True)
    np.testing.assert_allclose(R.sum(axis=(1, 2, 3)) + diag.absorbed, graph(X).max(1), rtol=1e-9, atol=1e-9)
