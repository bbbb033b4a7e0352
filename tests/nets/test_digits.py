"""Real data: an sklearn MLP trained on load_digits, rebuilt by hand from ``coefs_``/``intercepts_``
as nets Dense layers, explained with LRP."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

import nets
from nets.composites import Composite
from nets.rules import Epsilon


@pytest.fixture(scope="module")
def digits_mlp():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    # one BLAS thread: the machine is shared, and threads only add contention at this size
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(48, 24), solver="lbfgs", max_iter=300, random_state=0)
        clf.fit(X[:1400], y[:1400])
    layers = []
    for i, (W, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        layers.append(nets.Dense(W.T, b))  # sklearn stores (in, out)
        if i < len(clf.coefs_) - 1:
            layers.append(nets.ReLU())
    layers.append(nets.Softmax())
    return clf, nets.Sequential(layers), X[1400:], y[1400:]


def test_hand_built_model_reproduces_sklearn(digits_mlp):
    clf, model, X, y = digits_mlp
    np.testing.assert_allclose(model(X), clf.predict_proba(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(model.predict(X), clf.predict(X))
    assert clf.score(X, y) > 0.9


def test_lrp_on_digits_conserves_and_reports_the_bias_share(digits_mlp):
    clf, model, X, _ = digits_mlp
    logits_model = nets.Sequential(model.layers[:-1])
    logits = logits_model(X)
    pred = logits.argmax(axis=1)
    # zero bias and LRP-0: every sample's relevance sums to its predicted logit
    comp = Composite(layer_map=[(nets.Dense, Epsilon(0.0, zero_bias=True))])
    R, diag = nets.LRP(model, comp).relevance(X, return_diagnostics=True)
    np.testing.assert_allclose(R.sum(axis=1), logits[np.arange(len(X)), pred], rtol=1e-9, atol=1e-9)
    # with biases: the residual is exactly what the biases and the stabiliser absorbed
    R, diag = nets.LRP(model, "epsilon_plus").relevance(X, return_diagnostics=True)
    np.testing.assert_allclose(
        diag.residual, diag.bias_absorbed.sum(1) + diag.stabiliser_absorbed.sum(1), atol=1e-10
    )
    assert np.all(np.isfinite(R))
    maps = nets.LRP(model, "epsilon_plus").explain(X[:4])
    assert maps[0].shape == (8, 8) and maps[0].target == pred[0]
    assert maps[0].score == pytest.approx(logits[0, pred[0]])


def _flip_drop(model, X, order, k):
    """Mean drop of the predicted logit when the k pixels first in ``order`` are set to 0."""
    logits = model(X)
    pred = logits.argmax(axis=1)
    Xf = X.copy()
    rows = np.arange(len(X))[:, None]
    Xf[rows, order[:, :k]] = 0.0
    return float(np.mean(logits[rows[:, 0], pred] - model(Xf)[rows[:, 0], pred]))


def test_lrp_ranks_pixels_better_than_random_and_sensitivity(digits_mlp):
    """Pixel flipping on real digits: removing the most relevant pixels (LRP) lowers the score more
    than removing random ones or the most sensitive ones."""
    _, model, X, _ = digits_mlp
    logits_model = nets.Sequential(model.layers[:-1])
    R = nets.LRP(model, "epsilon_plus").relevance(X)
    S = nets.Sensitivity(model).relevance(X)
    rng = np.random.default_rng(0)
    rand = np.argsort(rng.random(X.shape), axis=1)
    lrp_order = np.argsort(-R, axis=1, kind="stable")
    sens_order = np.argsort(-S, axis=1, kind="stable")
    k = 6
    drop_lrp = _flip_drop(logits_model, X, lrp_order, k)
    drop_rand = _flip_drop(logits_model, X, rand, k)
    drop_sens = _flip_drop(logits_model, X, sens_order, k)
    assert drop_lrp > 2 * drop_rand
    assert drop_lrp > drop_sens
