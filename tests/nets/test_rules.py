"""Every LRP rule against its dense-matrix twin (float64, 1e-10), conservation, a hand-made
AlphaBeta case, stabilisers and the rules' validation."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import nets
from nets.propagation import propagate
from nets.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, WSquare, ZBox, ZPlus
from tests.nets.matrix_twins import bias_vector, conv_matrix, rule_twin

RULES = {
    "epsilon": lambda zb: Epsilon(1e-6, zero_bias=zb),
    "lrp0": lambda zb: Epsilon(0.0, zero_bias=zb),
    "zplus": lambda zb: ZPlus(zero_bias=zb),
    "alphabeta": lambda zb: AlphaBeta(2, 1, zero_bias=zb),
    "alphabeta31": lambda zb: AlphaBeta(3, 2, stabilizer=1e-3, zero_bias=zb),
    "gamma": lambda zb: Gamma(0.25, zero_bias=zb),
    "zbox": lambda zb: ZBox(-2.0, 2.5, zero_bias=zb),
    "wsquare": lambda zb: WSquare(zero_bias=zb),
    "flat": lambda zb: Flat(zero_bias=zb),
}


def _seed(*args):
    return zlib.crc32(repr(args).encode())


def _twin_kwargs(name, rule):
    kw = {"eps": rule.stabilizer}
    twin = {"lrp0": "epsilon", "alphabeta31": "alphabeta"}.get(name, name)
    if twin == "alphabeta":
        kw.update(alpha=rule.alpha, beta=rule.beta)
    if twin == "gamma":
        kw.update(gamma=rule.gamma)
    return twin, kw


def _dense_case(rng, bias, n=3, d_in=7, d_out=5):
    W = rng.normal(size=(d_out, d_in))
    b = rng.normal(size=d_out) if bias else None
    layer = nets.Dense(W, b)
    X = rng.normal(size=(n, d_in))
    return layer, X, W, W, np.ones_like(W), b, (d_out,)


def _conv_case(rng, bias, stride, padding, n=2):
    W = rng.normal(size=(3, 2, 3, 2))
    b = rng.normal(size=3) if bias else None
    layer = nets.Conv2D(W, b, stride=stride, padding=padding)
    X = rng.normal(size=(n, 2, 6, 5))
    sp = layer.stride, layer.padding
    M, out_shape = conv_matrix(W, X.shape[1:], *sp)
    ones, _ = conv_matrix(np.ones_like(W), X.shape[1:], *sp)
    return layer, X, W, M, ones, b, out_shape


def _check_rule(name, layer, X, M, connect, b, out_shape, zero_bias, rng):
    rule = RULES[name](zero_bias)
    Y = layer.forward(X)
    R = rng.normal(size=Y.shape)
    got, _ = propagate(layer, rule, X, Y, R)
    assert got.shape == X.shape and np.all(np.isfinite(got))
    twin, kw = _twin_kwargs(name, rule)
    bvec = bias_vector(None if zero_bias else b, out_shape)
    if twin == "zbox":
        kw.update(low=np.full(M.shape[1], -2.0), high=np.full(M.shape[1], 2.5))
    if twin == "gamma":
        kw.update(gate_bias=bias_vector(b, out_shape))
    for i in range(X.shape[0]):
        want = rule_twin(twin, M, bvec, X[i].ravel(), R[i].ravel(), connect=connect, **kw)
        scale = max(1.0, np.abs(want).max())
        np.testing.assert_allclose(got[i].ravel(), want, rtol=1e-10, atol=1e-10 * scale, err_msg=name)


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("zero_bias", [False, True])
def test_dense_rules_match_matrix_twin(name, bias, zero_bias):
    rng = np.random.default_rng(_seed(name, bias, zero_bias))
    layer, X, _, M, ones, b, out_shape = _dense_case(rng, bias)
    _check_rule(name, layer, X, M, ones, b, out_shape, zero_bias, rng)


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("geometry", [((1, 1), (0, 0)), ((2, 1), (1, 1)), ((2, 2), (1, 0))])
def test_conv_rules_match_matrix_twin(name, bias, geometry):
    rng = np.random.default_rng(_seed(name, bias, geometry))
    layer, X, _, M, ones, b, out_shape = _conv_case(rng, bias, *geometry)
    _check_rule(name, layer, X, M, ones, b, out_shape, False, rng)


def test_rules_on_nonnegative_inputs_match_twin():
    """After a ReLU x- is zero and the engine skips those terms: results must not change."""
    rng = np.random.default_rng(11)
    layer, X, _, M, ones, b, out_shape = _conv_case(rng, True, (2, 1), (1, 1))
    X = np.abs(X)
    for name in ("zplus", "alphabeta", "gamma"):
        _check_rule(name, layer, X, M, ones, b, out_shape, False, rng)
    _check_rule("zplus", layer, -X, M, ones, b, out_shape, False, rng)  # all-negative: x+ skipped


def test_zbox_per_channel_bounds_match_twin():
    rng = np.random.default_rng(12)
    layer, X, _, M, _, b, out_shape = _conv_case(rng, True, (1, 1), (1, 1))
    low, high = np.array([-1.0, -3.0]), np.array([2.0, 0.5])
    rule = ZBox(low, high)
    Y = layer.forward(X)
    R = rng.normal(size=Y.shape)
    got, _ = propagate(layer, rule, X, Y, R)
    lo = np.repeat(low, 6 * 5)
    hi = np.repeat(high, 6 * 5)
    for i in range(X.shape[0]):
        want = rule_twin("zbox", M, bias_vector(b, out_shape), X[i].ravel(), R[i].ravel(), low=lo, high=hi)
        np.testing.assert_allclose(got[i].ravel(), want, rtol=1e-10, atol=1e-10)


def test_norm_on_average_pooling_matches_twin():
    rng = np.random.default_rng(13)
    layer = nets.AvgPool2D(3, stride=2, padding=1)
    X = rng.normal(size=(2, 2, 6, 5))
    Y = layer.forward(X)
    R = rng.normal(size=Y.shape)
    got, _ = propagate(layer, Norm(), X, Y, R)
    # the pooling map as an explicit matrix: a depthwise conv with weights 1/9 per channel
    W = np.zeros((2, 2, 3, 3))
    W[0, 0] = W[1, 1] = 1 / 9
    M, _ = conv_matrix(W, X.shape[1:], (2, 2), (1, 1))
    for i in range(2):
        want = rule_twin("epsilon", M, np.zeros(M.shape[0]), X[i].ravel(), R[i].ravel())
        np.testing.assert_allclose(got[i].ravel(), want, rtol=1e-10, atol=1e-12)


def test_global_average_pooling_norm_conserves():
    rng = np.random.default_rng(14)
    layer = nets.GlobalAvgPool2D()
    X = rng.normal(size=(3, 4, 5, 5)) + 3
    R = rng.normal(size=(3, 4))
    got, _ = propagate(layer, Norm(0.0), X, layer.forward(X), R)
    np.testing.assert_allclose(got.sum(axis=(2, 3)), R, rtol=1e-12)


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lrp0", "zplus", "alphabeta", "gamma", "flat", "wsquare", "zbox"])
def test_conservation_with_zero_bias(name):
    """With biases dropped (and eps = 0 or only absorbing a tiny share) sum R_in == sum R_out.

    No padding here: at a padded border every input of a window may point the wrong way (z+ = 0
    exactly for ZPlus), and such an output's relevance is absorbed by design (0/0 -> 0)."""
    rng = np.random.default_rng(21)
    layer, X, *_ = _conv_case(rng, True, (2, 1), (0, 0), n=4)
    rule = {"lrp0": Epsilon(0.0, zero_bias=True)}.get(name) or RULES[name](True)
    Y = layer.forward(X)
    R = np.abs(rng.normal(size=Y.shape))
    if name == "gamma":  # gamma redistributes only where the unmodified z is non-zero
        R = R * (Y != 0)
    got, bias = propagate(layer, rule, X, Y, R)
    np.testing.assert_allclose(got.sum(axis=(1, 2, 3)), R.sum(axis=(1, 2, 3)), rtol=1e-5)
    assert np.all(bias == 0)
    if name == "lrp0":  # no stabiliser at all: exact up to rounding
        np.testing.assert_allclose(got.sum(axis=(1, 2, 3)), R.sum(axis=(1, 2, 3)), rtol=1e-10)


def test_bias_absorbed_is_what_conservation_misses():
    rng = np.random.default_rng(22)
    layer, X, *_ = _dense_case(rng, True, n=6)
    Y = layer.forward(X)
    R = rng.normal(size=Y.shape)
    for rule in (Epsilon(0.0), ZPlus(0.0), AlphaBeta(2, 1, 0.0), WSquare(0.0)):
        got, bias = propagate(layer, rule, X, Y, R)
        np.testing.assert_allclose(got.sum(axis=1) + bias, R.sum(axis=1), rtol=1e-9, atol=1e-9)


def test_alphabeta_hand_computed_toy_case():
    """Two inputs, one output: x = (1, 2), w = (1, -1), b = 0.5, R_out = 1, alpha = 2, beta = 1.

    z_a = w+ x+ + b+ = 1 + 0.5 = 1.5;  z_b = w- x+ + b- = -2.
    R_in = 2 * (1 * 1 / 1.5, 0) - 1 * (0, 2 * (-1) / (-2)) = (4/3, -1).
    """
    layer = nets.Dense(np.array([[1.0, -1.0]]), np.array([0.5]))
    X = np.array([[1.0, 2.0]])
    got, bias = propagate(layer, AlphaBeta(2, 1, stabilizer=0.0), X, layer.forward(X), np.array([[1.0]]))
    np.testing.assert_allclose(got, [[4 / 3, -1.0]], rtol=1e-15)
    np.testing.assert_allclose(bias, [2 * 0.5 / 1.5], rtol=1e-15)  # alpha * b+ / z_a; b- = 0


def test_epsilon_hand_computed_and_zero_denominator_gives_zero_not_nan():
    layer = nets.Dense(np.array([[1.0, -1.0]]))
    X = np.array([[2.0, 2.0], [3.0, 1.0]])  # z = 0 for the first sample
    Y = layer.forward(X)
    got, _ = propagate(layer, Epsilon(0.0), X, Y, np.array([[5.0], [4.0]]))
    np.testing.assert_array_equal(got[0], [0.0, 0.0])  # R / 0 -> 0 (absorbed), never NaN
    np.testing.assert_allclose(got[1], [3 * 2.0, -1 * 2.0])  # s = 4 / 2
    got, _ = propagate(layer, Epsilon(0.5), X, Y, np.array([[5.0], [4.0]]))
    np.testing.assert_allclose(got[0], [2 * 10.0, -2 * 10.0])  # sign0(0) = +1: s = 5 / 0.5


def test_callable_stabiliser():
    rng = np.random.default_rng(23)
    layer, X, _, M, _, b, out_shape = _dense_case(rng, True)
    Y = layer.forward(X)
    R = rng.normal(size=Y.shape)
    got, _ = propagate(layer, Epsilon(lambda z: z + 0.1 * np.sign(z)), X, Y, R)
    for i in range(X.shape[0]):
        z = M @ X[i] + b
        want = X[i] * (M.T @ (R[i] / (z + 0.1 * np.sign(z))))
        np.testing.assert_allclose(got[i], want, rtol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        propagate(layer, Epsilon(lambda z: z[:1]), X, Y, R)
    with pytest.raises(ValueError, match="NaN"):
        propagate(layer, Epsilon(lambda z: z * np.nan), X, Y, R)


def test_float32_layers_propagate_in_float32():
    rng = np.random.default_rng(24)
    layer64, X, *_ = _conv_case(rng, True, (2, 1), (1, 1))
    layer = layer64.astype(np.float32)
    X32 = X.astype(np.float32)
    Y = layer.forward(X32)
    R = rng.normal(size=Y.shape).astype(np.float32)
    for name in sorted(RULES):
        got, _ = propagate(layer, RULES[name](False), X32, Y, R)
        want, _ = propagate(layer64, RULES[name](False), X, layer64.forward(X), R.astype(np.float64))
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * np.abs(want).max(), err_msg=name)


# ------------------------------------------------------------------------------------------------
def test_rule_validation():
    with pytest.raises(ValueError, match="alpha - beta"):
        AlphaBeta(1.0, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        AlphaBeta(-1.0, -2.0)
    with pytest.raises(ValueError, match=">= 0"):
        AlphaBeta(0.5, -0.5)
    with pytest.raises(ValueError, match="gamma"):
        Gamma(-0.1)
    with pytest.raises(ValueError, match="low <= high"):
        ZBox(1.0, 0.0)
    with pytest.raises(TypeError, match="stabilizer"):
        ZPlus(stabilizer="big")
    with pytest.raises(ValueError, match=">= 0"):
        Epsilon(-1e-3)
    assert AlphaBeta(1, 0).groups()[0].coef == 1.0 and len(AlphaBeta(1, 0).groups()) == 1


def test_rules_refuse_layers_they_do_not_fit():
    from nets.propagation import check_rule_for_layer

    with pytest.raises(TypeError, match="needs weights"):
        check_rule_for_layer(ZPlus(), nets.AvgPool2D(2))
    with pytest.raises(TypeError, match="linear layer"):
        check_rule_for_layer(Epsilon(), nets.ReLU())
    with pytest.raises(TypeError, match="Pass would skip"):
        check_rule_for_layer(Pass(), nets.Dense(np.ones((2, 2))))
    with pytest.raises(TypeError, match="MaxPool2D"):
        check_rule_for_layer(nets.WinnerTakesAll(), nets.AvgPool2D(2))
    check_rule_for_layer(Norm(), nets.AvgPool2D(2))


def test_zbox_bounds_must_fit_the_input():
    rng = np.random.default_rng(25)
    layer, X, *_ = _conv_case(rng, False, (1, 1), (0, 0))
    with pytest.raises(ValueError, match="does not fit"):
        propagate(layer, ZBox(np.zeros(5), np.ones(5)), X, layer.forward(X), layer.forward(X))


def test_gamma_without_relevance_at_negative_outputs_matches_twin():
    """After a ReLU no relevance reaches a negative output: the engine then skips Gamma's negative
    side (its z is never computed), which must not change the result."""
    rng = np.random.default_rng(13)
    for layer, X, _, M, _, b, out_shape in (_conv_case(rng, True, (1, 1), (1, 1)), _dense_case(rng, True)):
        X = np.abs(X)
        rule = Gamma(0.25)
        Y = layer.forward(X)
        R = rng.normal(size=Y.shape) * (Y > 0)
        got, bias = propagate(layer, rule, X, Y, R)
        bvec = bias_vector(b, out_shape)
        for i in range(X.shape[0]):
            x, r = X[i].ravel(), R[i].ravel()
            want = rule_twin("gamma", M, bvec, x, r, eps=1e-6, gamma=0.25, gate_bias=bvec)
            np.testing.assert_allclose(got[i].ravel(), want, rtol=1e-10, atol=1e-10)
        assert np.all(np.isfinite(bias))


def test_zbox_per_pixel_bounds_match_twin():
    """Bounds that vary over the pixels cannot go into the weights (the per-channel shortcut)."""
    rng = np.random.default_rng(15)
    layer, X, _, M, _, b, out_shape = _conv_case(rng, True, (1, 1), (1, 1))
    low = -1.0 - rng.random(X.shape[1:])
    high = 1.0 + rng.random(X.shape[1:])
    Y = layer.forward(X)
    R = rng.normal(size=Y.shape)
    got, _ = propagate(layer, ZBox(low, high), X, Y, R)
    for i in range(X.shape[0]):
        bvec = bias_vector(b, out_shape)
        want = rule_twin("zbox", M, bvec, X[i].ravel(), R[i].ravel(), low=low.ravel(), high=high.ravel())
        np.testing.assert_allclose(got[i].ravel(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "rule",
    [ZPlus(), AlphaBeta(2, 1), AlphaBeta(3, 2), Gamma(0.25), ZBox(-2.0, 2.5), Epsilon(1e-6, zero_bias=True)],
    ids=repr,
)
def test_denominators_from_the_forward_pass_equal_the_recomputed_ones(rule):
    """``forward_for_rule`` computes what it can in the forward GEMM (stacked modified weights,
    W x = W+ x + W- x for AlphaBeta, W x before the bias for ZBox and zero-bias Epsilon): the
    relevance equals the one recomputed from scratch, and the forward output the layer's own."""
    from nets.propagation import forward_for_rule

    rng = np.random.default_rng(_seed("fused", repr(rule)))
    for layer, X, *_ in (_conv_case(rng, True, (1, 1), (1, 1)), _dense_case(rng, True)):
        X = np.abs(X)  # after a ReLU: the single-term groups become fusable
        Y = layer.forward(X)
        y, extras = forward_for_rule(layer, rule, X)
        assert extras, f"{rule!r} on {layer.kind}: nothing came out of the forward pass"
        np.testing.assert_allclose(y, Y, rtol=1e-13, atol=1e-13)
        R = rng.normal(size=Y.shape)
        want, want_bias = propagate(layer, rule, X, Y, R)
        got, got_bias = propagate(layer, rule, X, y, R, precomputed=extras)
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12 * np.abs(want).max())
        np.testing.assert_allclose(got_bias, want_bias, rtol=1e-11, atol=1e-12)


def test_denominators_left_in_the_stacked_forward_output():
    """A fused denominator stays in the stacked GEMM output (``_StackedDenominator``) and is divided
    in place; a callable stabiliser, another dtype of R and the diagnostics' ``s * z`` copy it out:
    every path gives the recomputed relevance, and the in-place division the copied one's bits."""
    from nets.propagation import _StackedDenominator, forward_for_rule, propagate_node, stabilised_divide

    rng = np.random.default_rng(_seed("stacked-denominator"))
    for layer, X, *_ in (_conv_case(rng, True, (1, 1), (1, 1)), _dense_case(rng, True)):
        X = np.abs(X)
        for rule in (ZPlus(), ZPlus(stabilizer=lambda z: z + np.where(z >= 0, 1e-6, -1e-6))):
            y, extras = forward_for_rule(layer, rule, X)
            z = extras[0]
            assert isinstance(z, _StackedDenominator) and z.shape == y.shape
            R = rng.normal(size=y.shape)
            for r in (R, R.astype(np.float32)):  # (another dtype: copied out)
                want_s = stabilised_divide(r, z.array(), 1e-6)
                np.testing.assert_array_equal(stabilised_divide(r, z, 1e-6), want_s)
            Y = layer.forward(X)
            (want,), want_bias, want_stab, _ = propagate_node(layer, rule, [X], Y, R, absorbed=True)
            (got,), got_bias, got_stab, _ = propagate_node(layer, rule, [X], y, R, extras, absorbed=True)
            np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12 * np.abs(want).max())
            np.testing.assert_allclose(got_bias, want_bias, rtol=1e-11, atol=1e-12)
            np.testing.assert_allclose(got_stab, want_stab, rtol=1e-11, atol=1e-12)


def test_stacked_denominators_read_as_arrays():
    """``forward_for_rule`` is public: a user reading its extras gets each denominator as an array
    (``np.asarray``), the same numbers as the in-place path uses."""
    from nets.propagation import forward_for_rule

    rng = np.random.default_rng(_seed("stacked-as-array"))
    layer, X, *_ = _conv_case(rng, True, (1, 1), (1, 1))
    y, extras = forward_for_rule(layer, ZPlus(), np.abs(X))
    z = extras[0]
    np.testing.assert_array_equal(np.asarray(z), z.array())
    assert np.asarray(z, dtype=np.float32).dtype == np.float32 and np.asarray(z).shape == y.shape


@pytest.mark.parametrize("rule", [ZPlus(), AlphaBeta(2, 1), Gamma(0.25)], ids=repr)
def test_a_user_layer_without_times_in_its_transpose(rule):
    """The documented protocol is ``linear_transpose(s, W, input_shape)``: a user's layer that
    overrides it without the library's ``times=`` still gets every rule, with the same relevance."""
    rng = np.random.default_rng(_seed("user-transpose", repr(rule)))

    class PlainTranspose(nets.Conv2D):
        def linear_transpose(self, s, W, input_shape):
            return super().linear_transpose(s, W, input_shape)

    X = np.abs(rng.normal(size=(2, 2, 6, 5)))
    # a 3 x 3 "same" convolution (the library multiplies by x inside its fold) and a 3 x 2 one
    for W, padding in ((rng.normal(size=(3, 2, 3, 3)), 1), (rng.normal(size=(3, 2, 3, 2)), (1, 1))):
        layer = nets.Conv2D(W, rng.normal(size=3), padding=padding)
        user = PlainTranspose(layer.W, layer.b, padding=padding)
        Y = layer.forward(X)
        R = rng.normal(size=Y.shape)
        want, want_bias = propagate(layer, rule, X, Y, R)
        got, got_bias = propagate(user, rule, X, user.forward(X), R)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_bias, want_bias)


@pytest.mark.parametrize("pool", ["avg", "global_avg"])
def test_zero_bias_rules_on_pooling_layers(pool):
    """Pools carry no bias at all: a zero-bias Epsilon on them is LRP-0 through the pool, the same
    relevance as Norm(0), and the whole pass still conserves (review of issue 15: it raised)."""
    rng = np.random.default_rng(_seed("zero-bias-pool", pool))
    pooling = nets.AvgPool2D(2) if pool == "avg" else nets.GlobalAvgPool2D()
    tail = [nets.Flatten()] if pool == "avg" else []
    n_flat = 3 * 3 * 3 if pool == "avg" else 3
    model = nets.Sequential([nets.Conv2D(rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3), padding=1),
                             nets.ReLU(), pooling, *tail, nets.Dense(rng.normal(size=(4, n_flat)))])
    X = rng.normal(size=(5, 2, 6, 6))
    linear = (nets.Conv2D, nets.Dense)
    zero = nets.Composite(layer_map=[(linear + (type(pooling),), Epsilon(0.0, zero_bias=True))])
    norm = nets.Composite(layer_map=[(linear, Epsilon(0.0, zero_bias=True)), ((type(pooling),), Norm(0.0))])
    R = nets.LRP(model, zero).relevance(X, target=1)
    np.testing.assert_allclose(R, nets.LRP(model, norm).relevance(X, target=1), rtol=1e-12, atol=1e-14)
    Y = model(X)[:, 1]
    np.testing.assert_allclose(R.reshape(len(X), -1).sum(axis=1), Y, rtol=1e-9, atol=1e-9)


def test_a_callable_stabiliser_cannot_change_the_forward_output():
    """The denominator handed to a callable stabiliser may be the layer's forward output itself: the
    function gets a read-only view, so an in-place edit is an error instead of a silent change."""
    rng = np.random.default_rng(_seed("stabiliser-in-place"))
    layer = nets.Dense(rng.normal(size=(4, 6)), rng.normal(size=4))
    X = rng.normal(size=(3, 6))
    Y = layer.forward(X)
    before = Y.copy()

    def in_place(z):
        z += 1e-3 * np.sign(z)
        return z

    with pytest.raises(ValueError, match="read-only"):
        propagate(layer, Epsilon(in_place), X, Y, rng.normal(size=Y.shape))
    np.testing.assert_array_equal(Y, before)


def test_zbox_bounds_per_channel_are_classified_once_when_set():
    """``ZBox.channel_bound``: one value per input channel for a scalar, per-channel, observed or
    per-sample bound constant over each channel (that constancy is checked when the rule is built),
    None for bounds that vary within a channel or come per sample; a per-pixel bound that is
    constant per channel explains exactly as its per-channel form."""
    rng = np.random.default_rng(_seed("zbox-channels"))
    x = rng.random((3, 2, 4, 5)).astype(np.float32)
    const = np.stack([np.full((4, 5), -1.0), np.full((4, 5), -2.0)])
    varying = const.copy()
    varying[1, 2, 3] = -3.0
    rule = ZBox(const, 1.0)
    assert rule._per_channel == {"low": True, "high": False}
    for low, want in [
        (0.5, [[0.5], [0.5]]), ([-1.0, -2.0], [[-1.0], [-2.0]]), (const, [[-1.0], [-2.0]]),
        (None, [[x.min()], [x.min()]]),
    ]:
        got = ZBox(low, 2.0).channel_bound("low", x)
        assert got.shape == (1, 2, 1, 1) and got.dtype == np.float32
        np.testing.assert_array_equal(got.reshape(2, 1), np.asarray(want, np.float32))
    assert ZBox(varying, 1.0).channel_bound("low", x) is None
    assert ZBox(np.broadcast_to(const, x.shape), 1.0).channel_bound("low", x) is None  # per sample
    dense_low = ZBox(np.arange(6.0), 9.0).channel_bound("low", rng.random((3, 6)))
    np.testing.assert_array_equal(dense_low, np.arange(6.0)[None])
    layer = nets.Conv2D(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4), padding=1)
    y = layer.forward(x)
    R = rng.normal(size=y.shape).astype(np.float32)
    per_pixel, _ = propagate(layer, ZBox(const, 1.0), x, y, R)
    per_channel, _ = propagate(layer, ZBox([-1.0, -2.0], 1.0), x, y, R)
    np.testing.assert_array_equal(per_pixel, per_channel)


def test_zbox_bounds_are_private_read_only_and_reclassified_when_assigned():
    """``channel_bound`` classifies the bounds once, so they cannot change behind its back: the rule
    keeps read-only copies (an edit of the caller's array does not reach it, an edit of
    ``rule.low`` raises) and assigning ``rule.low`` / ``rule.high`` validates and classifies anew.
    Review of the third speed round: an in-place edit silently gave wrong relevances (0.45 off)."""
    rng = np.random.default_rng(_seed("zbox-private"))
    x = rng.random((2, 2, 4, 5))
    low = np.stack([np.full((4, 5), -1.0), np.full((4, 5), -2.0)])
    rule = ZBox(low, 1.0)
    low[1, 2, 3] = -3.0  # the caller's array, after the rule was built
    assert rule.low[1, 2, 3] == -2.0
    with pytest.raises(ValueError, match="read-only"):
        rule.low[0, 0, 0] = 5.0
    rule.low = low  # assigned anew: no longer one value per channel
    assert rule._per_channel["low"] is False and rule.channel_bound("low", x) is None
    layer = nets.Conv2D(rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3), padding=1)
    y = layer.forward(x)
    R = rng.normal(size=y.shape)
    got, _ = propagate(layer, rule, x, y, R)
    want, _ = propagate(layer, ZBox(low.copy(), 1.0), x, y, R)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="low <= high"):
        rule.high = -5.0
    import pickle

    again = pickle.loads(pickle.dumps(rule))
    assert not again.low.flags.writeable and again._per_channel == rule._per_channel
