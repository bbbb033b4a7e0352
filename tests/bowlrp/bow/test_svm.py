"""One-vs-rest kernel SVMs: scikit-learn contract, the kernel expansion from the attributes, libsvm."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from bowlrp.bow.svm import OneVsRestKernelSVC
from tests.bowlrp.bow.test_kernels import _gram_twin


def _expected_failures(estimator):
    # this check feeds make_blobs data with negative values to every classifier, whatever its tags;
    # the histogram kernels reject negative input by design
    if estimator.kernel not in ("linear", "rbf"):
        return {"check_class_weight_classifiers": "histogram kernels need non-negative features"}
    return {}


@parametrize_with_checks(
    [OneVsRestKernelSVC(kernel="rbf"), OneVsRestKernelSVC(kernel="linear"),
     OneVsRestKernelSVC(kernel="intersection"), OneVsRestKernelSVC(kernel="exp_chi2"),
     OneVsRestKernelSVC(kernel="rbf", probability=True, random_state=0)],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _data(n_classes, n=60, V=10, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    X = rng.random((n, V)) * 0.5
    X[np.arange(n), y] += 3.0  # each class has its own strong dimension
    X[rng.random((n, V)) < 0.3] = 0.0
    return X / X.sum(1, keepdims=True), y


def _expansion_from_attributes(clf, X, kernel, gamma=1.0):
    """b + sum_i a_i k(x_i, x) computed with the numpy twin kernel from the public attributes."""
    K = _gram_twin(kernel, X, clf.support_vectors_, gamma, clf.channel_weights_, clf.channel_slices_)
    return K @ clf.dual_coef_.T + clf.intercept_


@pytest.mark.parametrize("kernel", ["linear", "intersection", "chi2", "hellinger", "exp_chi2", "rbf"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_decision_function_is_the_kernel_expansion(kernel, n_classes):
    X, y = _data(n_classes)
    clf = OneVsRestKernelSVC(kernel=kernel, C=100.0, gamma=2.0, channel_sizes=(4, 6),
                             channel_weights=[0.5, 1.5]).fit(X, y)
    n_out = 1 if n_classes == 2 else n_classes
    assert clf.dual_coef_.shape == (n_out, clf.support_vectors_.shape[0])
    assert clf.intercept_.shape == (n_out,)
    Xt, _ = _data(n_classes, n=15, seed=1)
    want = _expansion_from_attributes(clf, Xt, kernel, gamma=2.0)
    got = clf.decision_function(Xt)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=0, atol=1e-10)
    assert clf.score(X, y) > 0.8  # a sanity check that the SVMs learned; the point is the expansion


@pytest.mark.parametrize("n_classes", [2, 4])
def test_each_output_equals_a_binary_libsvm_on_the_same_gram(n_classes):
    X, y = _data(n_classes, seed=3)
    clf = OneVsRestKernelSVC(kernel="intersection", C=2.0, tol=1e-10).fit(X, y)
    K = _gram_twin("intersection", X, X)
    Xt, _ = _data(n_classes, n=9, seed=4)
    Kt = _gram_twin("intersection", Xt, X)
    scores = clf.decision_function(Xt).reshape(len(Xt), -1)
    positives = [1] if n_classes == 2 else range(n_classes)
    for o, c in enumerate(positives):
        ref = SVC(kernel="precomputed", C=2.0, tol=1e-10).fit(K, (y == c).astype(int))
        np.testing.assert_allclose(scores[:, o], ref.decision_function(Kt), rtol=1e-7, atol=1e-9)
    # support vectors are the union over the problems; all dual coefficients satisfy |a_i| <= C
    assert np.all(np.abs(clf.dual_coef_) <= 2.0 + 1e-9)
    assert np.all(np.any(clf.dual_coef_ != 0, axis=0))


def test_plain_arrays_skip_sklearn_checks_with_the_same_scores_and_errors(monkeypatch):
    """decision_matrix takes a finite float64 ndarray as it is (svm._plain_rows); anything else still
    goes through scikit-learn's validate_data: the same scores, and its errors and warnings."""
    from sklearn.datasets import load_digits

    from bowlrp.bow import svm

    digits = load_digits()
    X, y = digits.data[:300] / 16.0, digits.target[:300] % 3
    clf = OneVsRestKernelSVC(kernel="intersection").fit(X, y)
    Xt = X[200:260]
    plain = clf.decision_matrix(Xt)
    with monkeypatch.context() as patch:  # the plain rows never reach validate_data
        patch.setattr(svm, "validate_data", lambda *a, **k: pytest.fail("validate_data was called"))
        assert np.array_equal(clf.decision_matrix(Xt), plain)
    for other in (Xt.tolist(), np.asfortranarray(Xt), Xt.astype(np.float32).astype(np.float64)):
        assert np.array_equal(clf.decision_matrix(other), plain)
    bad = Xt.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.decision_matrix(bad)
    with pytest.raises(ValueError, match="features"):
        clf.decision_matrix(Xt[:, :-1])
    with pytest.raises(ValueError, match="0 sample"):
        clf.decision_matrix(Xt[:0])
    # a hand-made state without n_features_in_ takes validate_data's path (which then checks no width)
    del clf.n_features_in_
    assert np.array_equal(clf.decision_matrix(Xt), plain)
    clf.n_features_in_ = X.shape[1]
    # an estimator fitted with feature names (as from a DataFrame) warns about an array without them
    clf.feature_names_in_ = np.array([f"d{k}" for k in range(X.shape[1])], dtype=object)
    with pytest.warns(UserWarning, match="feature names"):
        clf.decision_matrix(Xt)


def test_binary_scores_the_second_class_with_string_labels():
    X, y = _data(2, seed=5)
    labels = np.array(["cat", "dog"])[y]
    clf = OneVsRestKernelSVC(kernel="chi2", C=10.0).fit(X, labels)
    assert clf.classes_.tolist() == ["cat", "dog"]
    s = clf.decision_function(X)
    assert s.shape == (len(X),)
    assert np.array_equal(clf.predict(X), np.where(s > 0, "dog", "cat"))


def test_single_class_and_negative_histograms_raise():
    X, _ = _data(2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        OneVsRestKernelSVC().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="Negative values"):
        OneVsRestKernelSVC(kernel="chi2").fit(X - 1.0, np.arange(len(X)) % 2)
    with pytest.raises(ValueError, match="cover 6 dimensions, the data has 10"):
        OneVsRestKernelSVC(channel_sizes=(3, 3)).fit(X, np.arange(len(X)) % 2)
    with pytest.raises(ValueError, match="channel_weights"):
        OneVsRestKernelSVC(channel_weights=[1.0, 2.0]).fit(X, np.arange(len(X)) % 2)
