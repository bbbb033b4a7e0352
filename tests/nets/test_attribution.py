"""LRP end to end: LRP-0 == gradient x input, conservation, diagnostics, targets, heatmaps,
float32, and the comparison methods (sensitivity, gradient x input, Taylor)."""

from __future__ import annotations

import numpy as np
import pytest

import nets
from nets.composites import Composite
from nets.rules import Epsilon, Norm

RNG_SEED = 0


def _mlp(rng, bias=True):
    def b(n):
        return rng.normal(size=n) * 0.5 if bias else None

    return nets.Sequential(
        [
            nets.Dense(rng.normal(size=(16, 10)), b(16)),
            nets.ReLU(),
            nets.Dense(rng.normal(size=(12, 16)), b(12)),
            nets.ReLU(),
            nets.Dense(rng.normal(size=(4, 12)), b(4)),
        ]
    )


def _cnn(rng, bias=True, pad=1):
    def b(n):
        return rng.normal(size=n) * 0.5 if bias else None

    return nets.Sequential(
        [
            nets.Conv2D(rng.normal(size=(4, 2, 3, 3)), b(4), stride=1, padding=pad),
            nets.ReLU(),
            nets.MaxPool2D(2),
            nets.Conv2D(rng.normal(size=(6, 4, 3, 3)), b(6), stride=2, padding=1),
            nets.ReLU(),
            nets.AvgPool2D(2, stride=1),
            nets.Flatten(),
            nets.Dense(rng.normal(size=(5, 6 * 1 * 1)), b(5)),
            nets.ReLU(),
            nets.Dense(rng.normal(size=(3, 5)), b(3)),
        ]
    )


LRP0 = Composite(layer_map=[((nets.Dense, nets.Conv2D), Epsilon(0.0)), ((nets.AvgPool2D,), Norm(0.0))])


@pytest.mark.parametrize("make", [_mlp, _cnn])
def test_lrp0_equals_gradient_times_input_on_bias_free_relu_nets(make):
    rng = np.random.default_rng(1)
    model = make(rng, bias=False)
    X = rng.normal(size=(8, 10)) if make is _mlp else rng.normal(size=(8, 2, 8, 8))
    for target in (None, 1, rng.integers(0, 3, size=8)):
        R = nets.LRP(model, LRP0).relevance(X, target)
        G = nets.GradientTimesInput(model).relevance(X, target)
        np.testing.assert_allclose(R, G, rtol=1e-10, atol=1e-12 * np.abs(G).max())


@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_alpha2_beta1", "epsilon_plus_flat", "lrp0"])
def test_conservation_end_to_end_with_zero_bias(composite):
    rng = np.random.default_rng(2)
    # no padding in the first conv: at a padded corner all (few) inputs of a window can point the
    # same way, then alpha-beta's z_a or z_b is exactly 0 and its share is absorbed by design
    model = _cnn(rng, bias=True, pad=0)
    X = rng.normal(size=(6, 2, 8, 8))
    if composite == "lrp0":
        comp = Composite(
            layer_map=[
                ((nets.Dense, nets.Conv2D), Epsilon(0.0, zero_bias=True)),
                ((nets.AvgPool2D,), Norm(0.0)),
            ]
        )
    else:
        comp = nets.get_composite(composite, epsilon=0.0, stabilizer=0.0, zero_bias=True)
    R, diag = nets.LRP(model, comp).relevance(X, return_diagnostics=True)
    f = model(X).max(axis=1)
    np.testing.assert_allclose(diag.score, f, rtol=1e-14)
    np.testing.assert_allclose(R.reshape(6, -1).sum(axis=1), f, rtol=1e-9, atol=1e-9)
    # every layer conserves: the per-layer sums are all f(x)
    np.testing.assert_allclose(
        diag.layer_relevance, np.repeat(f[:, None], len(model) + 1, axis=1), rtol=1e-9, atol=1e-9
    )
    assert np.all(diag.bias_absorbed == 0)
    np.testing.assert_allclose(diag.residual, 0, atol=1e-9)


def test_diagnostics_account_for_every_loss():
    rng = np.random.default_rng(3)
    model = _mlp(rng, bias=True)
    X = rng.normal(size=(5, 10))
    R, diag = nets.LRP(model, "epsilon_plus").relevance(X, target=2, return_diagnostics=True)
    logits = model(X)
    np.testing.assert_allclose(diag.score, logits[:, 2])
    np.testing.assert_allclose(diag.layer_relevance[:, -1], logits[:, 2])
    np.testing.assert_allclose(diag.layer_relevance[:, 0], R.sum(axis=1), rtol=1e-12)
    # what each layer lost is bias + stabiliser, exactly
    lost = diag.layer_relevance[:, 1:] - diag.layer_relevance[:, :-1]
    np.testing.assert_allclose(lost, diag.bias_absorbed + diag.stabiliser_absorbed, atol=1e-12)
    # with eps = 1e-6 the stabiliser's share is tiny and the bias explains the residual
    assert np.all(np.abs(diag.stabiliser_share) < 1e-4)
    np.testing.assert_allclose(diag.residual, diag.bias_absorbed.sum(axis=1), rtol=1e-4, atol=1e-6)
    assert np.all(np.abs(diag.bias_share) > 0)
    # bias of the last layer under Epsilon: s_j * b_j for the target output j
    last = model.layers[-1]
    z = logits[:, 2]
    np.testing.assert_allclose(
        diag.bias_absorbed[:, -1], z / (z + 1e-6 * np.where(z >= 0, 1, -1)) * last.b[2]
    )
    sample = diag.sample(0)
    assert sample["layer_names"] == model.names and len(sample["rules"]) == len(model)


def test_target_forms():
    rng = np.random.default_rng(4)
    model = _mlp(rng)
    X = rng.normal(size=(6, 10))
    lrp = nets.LRP(model, "epsilon_plus")
    logits = model(X)
    pred = logits.argmax(axis=1)
    per_sample = np.array([0, 1, 2, 3, 0, 1])
    R_none = lrp.relevance(X)
    np.testing.assert_array_equal(R_none, lrp.relevance(X, pred))
    onehot = np.zeros_like(logits)
    onehot[np.arange(6), per_sample] = logits[np.arange(6), per_sample]
    np.testing.assert_allclose(lrp.relevance(X, onehot), lrp.relevance(X, per_sample), rtol=1e-14)
    # a float row of output relevances is used for every sample
    R_row, d = lrp.relevance(X, np.array([1.0, 0.0, -1.0, 0.0]), return_diagnostics=True)
    np.testing.assert_allclose(d.score, np.zeros(6) + 0.0)
    assert R_row.shape == X.shape
    # several targets from one forward pass give the same as separate calls
    many = lrp.relevance_many(X, [0, 3, None])
    for got, t in zip(many, [0, 3, None]):
        np.testing.assert_array_equal(got, lrp.relevance(X, t))
    with pytest.raises(ValueError, match="out of range"):
        lrp.relevance(X, 4)
    with pytest.raises(ValueError, match="out of range"):
        lrp.relevance(X, -1)
    with pytest.raises(ValueError, match="one per sample"):
        lrp.relevance(X, np.array([0, 1]))
    with pytest.raises(ValueError, match="output relevance has shape"):
        lrp.relevance(X, np.ones((6, 3)))
    with pytest.raises(TypeError, match="target"):
        lrp.relevance(X, True)
    with pytest.raises(ValueError, match="NaN"):
        lrp.relevance(X, np.full((6, 4), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        lrp.relevance(np.full((1, 10), np.nan))


def test_explain_returns_heatmaps():
    from bowlrp.heatmap import Heatmap

    rng = np.random.default_rng(5)
    model = _cnn(rng)
    X = rng.uniform(0, 1, size=(3, 2, 8, 8))
    lrp = nets.LRP(model, "epsilon_plus_flat")
    maps = lrp.explain(X, target=[0, 1, 2])
    R = lrp.relevance(X, target=[0, 1, 2])
    logits = model(X)
    assert len(maps) == 3 and all(isinstance(m, Heatmap) for m in maps)
    for i, m in enumerate(maps):
        assert m.relevance.shape == (8, 8) and m.target == i and m.method == "lrp/epsilon_plus_flat"
        np.testing.assert_allclose(m.relevance, R[i].sum(axis=0), rtol=1e-14)
        assert m.score == pytest.approx(logits[i, i])
        assert m.residual == pytest.approx(logits[i, i] - R[i].sum())
        assert m.extras["layer_relevance"].shape == (len(model) + 1,)
    per_target = lrp.explain_many(X, [0, 2])
    np.testing.assert_array_equal(per_target[1][1].relevance, lrp.explain(X, 2)[1].relevance)
    # single-channel images travel with the heatmap for overlays; flat inputs are reshaped
    gray = nets.Sequential([nets.Flatten(), nets.Dense(rng.normal(size=(2, 36)))])
    hm = nets.LRP(gray).explain(rng.uniform(size=(2, 1, 6, 6)))
    assert hm[0].image is not None and hm[0].image.shape == (6, 6)
    flat = nets.Sequential([nets.Dense(rng.normal(size=(2, 12)))])
    assert nets.LRP(flat).explain(rng.normal(size=(2, 12)), image_shape=(3, 4))[0].shape == (3, 4)
    square = nets.Sequential([nets.Dense(rng.normal(size=(2, 16)))])
    assert nets.LRP(square).explain(rng.normal(size=(1, 16)))[0].shape == (4, 4)  # square by default
    with pytest.raises(ValueError, match="image_shape"):
        nets.LRP(flat).explain(rng.normal(size=(2, 12)))
    with pytest.raises(ValueError, match="does not fit"):
        nets.LRP(flat).explain(rng.normal(size=(2, 12)), image_shape=(5, 5))


def test_float32_relevance():
    rng = np.random.default_rng(6)
    model = _cnn(rng)
    X = rng.normal(size=(4, 2, 8, 8))
    for comp in ("epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_gamma_box"):
        kw = {"low": -3.0, "high": 3.0} if comp == "epsilon_gamma_box" else {}
        R64 = nets.LRP(model, comp, **kw).relevance(X, 0)
        R32 = nets.LRP(model.astype(np.float32), comp, **kw).relevance(X.astype(np.float32), 0)
        assert R32.dtype == np.float32 and np.all(np.isfinite(R32))
        np.testing.assert_allclose(R32, R64, rtol=1e-3, atol=1e-4 * np.abs(R64).max())


def test_never_nan_on_degenerate_inputs():
    rng = np.random.default_rng(7)
    model = _cnn(rng, bias=False)
    X = np.zeros((2, 2, 8, 8))  # every z is 0: 0/0 everywhere
    for comp in (LRP0, "epsilon_plus", "epsilon_alpha2_beta1_flat"):
        R, diag = nets.LRP(model, comp).relevance(X, 0, return_diagnostics=True)
        assert np.all(np.isfinite(R)) and np.all(np.isfinite(diag.layer_relevance))
        assert np.all(np.isfinite(diag.bias_share)) and np.all(np.isfinite(diag.stabiliser_share))
    hm = nets.LRP(model, LRP0).explain(X)
    assert np.all(hm[0].relevance == 0)


# ------------------------------------------------------------------------------------------------
def test_sensitivity_is_the_squared_gradient():
    rng = np.random.default_rng(8)
    model = _cnn(rng)
    X = rng.normal(size=(2, 2, 8, 8))
    S = nets.Sensitivity(model).relevance(X, 1)
    h = 1e-6
    for idx in [(0, 0, 1, 2), (1, 1, 5, 5), (0, 1, 7, 0)]:
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += h
        Xm[idx] -= h
        fd = (model(Xp)[idx[0], 1] - model(Xm)[idx[0], 1]) / (2 * h)
        assert S[idx] == pytest.approx(fd**2, rel=1e-5, abs=1e-12)
    maps = nets.Sensitivity(model).explain(X, 1)
    np.testing.assert_allclose(maps[0].relevance, S[0].sum(axis=0))
    assert maps[0].score is None and maps[0].extras["score"] == pytest.approx(model(X)[0, 1])
    assert np.all(S >= 0)


def test_gradient_times_input_for_a_linear_model_is_exact():
    rng = np.random.default_rng(9)
    W = rng.normal(size=(3, 5))
    model = nets.Sequential([nets.Dense(W)])
    X = rng.normal(size=(4, 5))
    np.testing.assert_allclose(nets.GradientTimesInput(model).relevance(X, 2), X * W[2], rtol=1e-14)
    hm = nets.GradientTimesInput(model).explain(X, 2, image_shape=(1, 5))
    assert hm[0].residual == pytest.approx(0, abs=1e-12)


def test_taylor_on_a_linear_model_has_zero_residual():
    rng = np.random.default_rng(10)
    W, b = rng.normal(size=(2, 6)), rng.normal(size=2)
    model = nets.Sequential([nets.Dense(W, b)])
    refs = rng.normal(size=(40, 6)) * 3
    X = rng.normal(size=(5, 6))
    taylor = nets.TaylorDecomposition(model, refs)
    R, roots, found = taylor.relevance(X, 0, return_roots=True)
    assert found.all()
    np.testing.assert_allclose(model(roots)[:, 0], 0, atol=1e-8)  # roots are roots
    np.testing.assert_allclose(R.sum(axis=1), model(X)[:, 0], rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(R, (X - roots) * W[0], rtol=1e-12)


def test_taylor_on_a_relu_network():
    rng = np.random.default_rng(11)
    model = _mlp(rng)
    refs = rng.normal(size=(200, 10))
    X = rng.normal(size=(4, 10))
    t1 = nets.TaylorDecomposition(model, refs, n_candidates=1)
    t8 = nets.TaylorDecomposition(model, refs, n_candidates=16)
    R1, roots, found = t1.relevance(X, 0, return_roots=True)
    R8 = t8.relevance(X, 0)
    assert found.all()
    np.testing.assert_allclose(model(roots)[:, 0], 0, atol=1e-8)
    f = model(X)[:, 0]
    rho1 = np.abs(f - R1.sum(axis=1))
    rho8 = np.abs(f - R8.sum(axis=1))
    assert np.all(rho8 <= rho1 + 1e-12)  # more candidates: the kept root is never worse
    maps = t8.explain(X, 0, image_shape=(2, 5))
    assert maps[0].extras["root_found"] is True
    assert maps[0].residual == pytest.approx(rho8[0] * np.sign(f[0] - R8[0].sum()), abs=1e-9)


def test_taylor_without_a_root_warns_and_gives_zero():
    rng = np.random.default_rng(12)
    model = nets.Sequential([nets.Dense(np.ones((1, 3)), np.array([10.0]))])
    refs = np.abs(rng.normal(size=(5, 3)))  # every reference scores > 0, like every x
    with pytest.warns(RuntimeWarning, match="no reference"):
        maps = nets.TaylorDecomposition(model, refs).explain(np.ones((2, 3)), 0, image_shape=(1, 3))
    assert np.all(maps[0].relevance == 0) and maps[0].residual == pytest.approx(13.0)
    assert maps[0].extras["root_found"] is False
    with pytest.raises(ValueError, match="per-sample shape"):
        nets.TaylorDecomposition(model, refs).relevance(np.ones((2, 4)))


@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_alpha2_beta1", "epsilon_gamma_box"])
def test_denominators_fused_into_the_forward_pass_change_nothing(composite):
    """LRP computes ZPlus/AlphaBeta/Gamma denominators of ReLU inputs in the forward GEMM: the
    result must equal the plain layer-by-layer engine on the model's own trace."""
    from nets.propagation import propagate

    rng = np.random.default_rng(13)
    model = _cnn(rng)
    X = rng.normal(size=(3, 2, 8, 8))
    kw = {"low": -4.0, "high": 4.0} if composite == "epsilon_gamma_box" else {}
    lrp = nets.LRP(model, composite, **kw)
    R, diag = lrp.relevance(X, 1, return_diagnostics=True)
    acts = model.trace(X)
    Rm = np.zeros_like(acts[-1])
    Rm[:, 1] = acts[-1][:, 1]
    for i in range(len(model) - 1, -1, -1):
        Rm, _ = propagate(model.layers[i], lrp.rules[i], acts[i], acts[i + 1], Rm)
    np.testing.assert_allclose(R, Rm, rtol=1e-11, atol=1e-13 * np.abs(Rm).max())
    np.testing.assert_allclose(diag.score, acts[-1][:, 1], rtol=1e-13)
    # and the forward output inside the fused pass is the model's forward output
    from nets.propagation import forward_for_rule

    y, z = forward_for_rule(model.layers[3], lrp.rules[3], acts[3])
    assert z, "the second conv (after a ReLU) should have fused denominators"
    np.testing.assert_allclose(y, acts[4], rtol=1e-13, atol=1e-13)


def test_fused_denominators_on_dense_layers():
    from nets.propagation import propagate
    from nets.rules import AlphaBeta, Gamma, ZPlus

    rng = np.random.default_rng(14)
    model = _mlp(rng)
    X = rng.normal(size=(4, 10))
    for rule in (ZPlus(), AlphaBeta(2, 1), Gamma(0.5), ZPlus(zero_bias=True)):
        lrp = nets.LRP(model, Composite(layer_map=[(nets.Dense, rule)]))
        R = lrp.relevance(X, 2)
        acts = model.trace(X)
        Rm = np.zeros_like(acts[-1])
        Rm[:, 2] = acts[-1][:, 2]
        for i in range(len(model) - 1, -1, -1):
            Rm, _ = propagate(model.layers[i], lrp.rules[i], acts[i], acts[i + 1], Rm)
        np.testing.assert_allclose(R, Rm, rtol=1e-11, atol=1e-13 * np.abs(Rm).max(), err_msg=repr(rule))
