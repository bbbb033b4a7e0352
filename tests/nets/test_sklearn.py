"""scikit-learn MLPs trained on real data (digits, diabetes) and converted with nets.from_sklearn."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor

import nets


def fit_quietly(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def sklearn_scores(est, X):
    """scikit-learn's own forward pass, with the output activation switched off: the scores."""
    raw = copy.deepcopy(est)
    raw.out_activation_ = "identity"
    return raw._forward_pass_fast(X)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def softmax(Z):
    e = np.exp(Z - Z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_multiclass_digits_every_activation(digits, activation):
    X, y = digits
    est = fit_quietly(
        MLPClassifier(hidden_layer_sizes=(24, 12), activation=activation, max_iter=200, random_state=0),
        X[:1200],
        y[:1200],
    )
    model = nets.from_sklearn(est)
    X_test = X[1200:]
    logits = model(X_test)
    assert logits.shape == (len(X_test), 10)
    np.testing.assert_allclose(logits, sklearn_scores(est, X_test), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(softmax(logits), est.predict_proba(X_test), rtol=1e-10, atol=1e-12)
    assert np.array_equal(est.classes_[model.predict(X_test)], est.predict(X_test))
    kinds = [layer.kind for layer in model.layers]
    hidden = {"identity": [], "logistic": ["Sigmoid"], "tanh": ["Tanh"], "relu": ["ReLU"]}[activation]
    assert kinds == ["Dense", *hidden, "Dense", *hidden, "Dense"]
    if activation == "relu":
        assert est.score(X_test, y[1200:]) > 0.9  # a real classifier, not noise


def test_binary_classifier_gives_one_logit(digits):
    X, y = digits
    mask = np.isin(y, (3, 8))  # the two most confusable digits
    est = fit_quietly(MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, random_state=1), X[mask], y[mask])
    model = nets.from_sklearn(est)
    logit = model(X[mask])
    assert logit.shape == (mask.sum(), 1)
    np.testing.assert_allclose(logit, sklearn_scores(est, X[mask]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(1 / (1 + np.exp(-logit[:, 0])), est.predict_proba(X[mask])[:, 1], rtol=1e-10)
    # the logit scores classes_[1]
    assert np.array_equal(np.where(logit[:, 0] > 0, est.classes_[1], est.classes_[0]), est.predict(X[mask]))


def test_multilabel_classifier_gives_one_logit_per_label(digits):
    X, y = digits
    Y = np.column_stack([y % 2 == 0, y >= 5]).astype(int)
    est = fit_quietly(MLPClassifier(hidden_layer_sizes=(16,), max_iter=60, random_state=0), X, Y)
    logits = nets.from_sklearn(est)(X[:50])
    assert logits.shape == (50, 2)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), est.predict_proba(X[:50]), rtol=1e-10)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_regressor_single_and_multi_output(activation):
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    est = fit_quietly(
        MLPRegressor(hidden_layer_sizes=(20,), activation=activation, max_iter=200, random_state=0),
        X,
        y / y.std(),
    )
    out = nets.from_sklearn(est)(X)
    assert out.shape == (len(X), 1)
    np.testing.assert_allclose(out[:, 0], est.predict(X), rtol=1e-12, atol=1e-12)

    Y = np.column_stack([y / y.std(), X[:, 2]])
    est2 = fit_quietly(
        MLPRegressor(hidden_layer_sizes=(10, 5), activation=activation, max_iter=100, random_state=0), X, Y
    )
    np.testing.assert_allclose(nets.from_sklearn(est2)(X), est2.predict(X), rtol=1e-12, atol=1e-12)


def test_float32_weights_option(digits):
    X, y = digits
    est = fit_quietly(MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0), X[:300], y[:300])
    model = nets.from_sklearn(est, dtype=np.float32)
    assert model.dtype == np.float32
    np.testing.assert_allclose(
        model(X[:20].astype(np.float32)), sklearn_scores(est, X[:20]), rtol=1e-4, atol=1e-4
    )


def test_rejects_unfitted_and_foreign_estimators(digits):
    with pytest.raises(NotFittedError):
        nets.from_sklearn(MLPClassifier())
    X, y = digits
    with pytest.raises(TypeError, match="MLPClassifier and MLPRegressor"):
        nets.from_sklearn(LogisticRegression(max_iter=50).fit(X[:100], y[:100]))


def _presets():
    from nets.composites import COMPOSITES

    return [
        (name, {"low": 0.0, "high": 1.0} if name == "epsilon_gamma_box" else {})
        for name in sorted(COMPOSITES)
    ]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_lrp_of_the_imported_mlp_equals_the_hand_built_network(digits, activation):
    X, y = digits
    est = fit_quietly(
        MLPClassifier(hidden_layer_sizes=(20, 10), activation=activation, max_iter=80, random_state=0),
        X[:600],
        y[:600],
    )
    act = {"relu": nets.ReLU, "tanh": nets.Tanh}[activation]
    W, b = est.coefs_, est.intercepts_
    by_hand = nets.Sequential(
        [nets.Dense(W[0].T, b[0]), act(), nets.Dense(W[1].T, b[1]), act(), nets.Dense(W[2].T, b[2])]
    )
    imported = nets.from_sklearn(est)
    Xs = X[600:620]
    for name, kwargs in _presets() + [(None, {})]:
        R_imp, diag = nets.LRP(imported, name, **kwargs).relevance(Xs, return_diagnostics=True)
        R_hand = nets.LRP(by_hand, name, **kwargs).relevance(Xs)
        np.testing.assert_allclose(R_imp, R_hand, rtol=1e-12, atol=1e-14)
        assert np.all(np.isfinite(R_imp))
    # the explained score is sklearn's own pre-softmax score of the predicted class
    maps = nets.LRP(imported, "epsilon_plus").explain(Xs, image_shape=(8, 8))
    scores = sklearn_scores(est, Xs)
    for i, m in enumerate(maps):
        assert m.relevance.shape == (8, 8)
        assert m.target == scores[i].argmax()
        assert m.score == pytest.approx(scores[i].max(), rel=1e-12)
