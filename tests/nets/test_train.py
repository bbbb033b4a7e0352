"""Tests of ``nets.train``: parameter gradients against finite differences, the fitting loop, a real
task (scikit-learn's 8x8 digits as images), explainability of the trained model, and bad input."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError

import nets
from nets.train import (
    ConvNetClassifier,
    _flip_augment,
    _fold_standardization,
    _limit_threads,
    build_model,
    loss_and_grads,
)

# --------------------------------------------------------------------------------------------------
# gradients: every trainable array of every supported layer vs central finite differences
GRAD_ARCHS = {
    "conv_maxpool_dense": [("conv", 3, 3, {"padding": 1}), "relu", ("maxpool", 2), ("dense", 5), "tanh"],
    "conv_stride_avgpool": [("conv", 4, (3, 2), {"stride": 2}), ("leaky_relu", 0.1), ("avgpool", 2, 1),
                            "global_avgpool"],
    "conv_conv_gmp": [("conv", 3, 3), "tanh", ("conv", 2, 2, {"padding": 1}), "relu", "global_maxpool"],
    "dense_dropout": ["flatten", ("dense", 6), "relu", ("dropout", 0.4), ("dense", 4), ("leaky_relu", 0.2)],
}


def _fd_grads(model, X, y, alpha, seed, h=1e-6):
    """Central differences of the loss with respect to every parameter (same dropout masks)."""
    out = []
    for i, layer in enumerate(model.layers):
        for name, arr in layer.get_arrays().items():
            fd = np.zeros_like(arr)
            flat, gflat = arr.reshape(-1), fd.reshape(-1)
            for k in range(flat.size):
                old = flat[k]
                flat[k] = old + h
                lp = loss_and_grads(model, X, y, alpha, np.random.default_rng(seed), training=True)[0]
                flat[k] = old - h
                lm = loss_and_grads(model, X, y, alpha, np.random.default_rng(seed), training=True)[0]
                flat[k] = old
                gflat[k] = (lp - lm) / (2 * h)
            out.append((i, name, fd))
    return out


@pytest.mark.parametrize("arch", sorted(GRAD_ARCHS))
@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_parameter_gradients_match_finite_differences(arch, alpha):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3, 2, 7, 6))
    y = np.array([0, 2, 1])
    model = build_model(GRAD_ARCHS[arch], (2, 7, 6), 3, random_state=2)
    # non-zero biases so the ReLU/max kinks are not all at the same place
    for layer in model.layers:
        if getattr(layer, "b", None) is not None and isinstance(layer, (nets.Dense, nets.Conv2D)):
            layer.b[:] = rng.normal(scale=0.1, size=layer.b.shape)
    loss, grads = loss_and_grads(model, X, y, alpha, np.random.default_rng(7), training=True)
    with _limit_threads(1):  # hundreds of tiny evaluations: threads only cost here
        fd = _fd_grads(model, X, y, alpha, seed=7)
    assert [(i, n) for i, n, _ in grads] == [(i, n) for i, n, _ in fd]
    n_params = sum(a.size for layer in model.layers for a in layer.get_arrays().values())
    assert len(grads) == sum(len(layer.get_arrays()) for layer in model.layers) and n_params > 20
    for (i, name, g), (_, _, f) in zip(grads, fd):
        assert g.shape == f.shape and g.dtype == np.float64
        np.testing.assert_allclose(g, f, rtol=1e-6, atol=1e-9, err_msg=f"layer {i} {name}")
    assert np.isfinite(loss) and loss > 0


def test_dropout_masks_are_active_in_training_and_identity_in_the_model():
    model = build_model(["flatten", ("dense", 8), "relu", ("dropout", 0.5)], (1, 4, 4), 2, random_state=0)
    X = np.random.default_rng(0).normal(size=(5, 1, 4, 4))
    y = np.array([0, 1, 0, 1, 1])
    l_eval = loss_and_grads(model, X, y)[0]
    l_a = loss_and_grads(model, X, y, rng=np.random.default_rng(0), training=True)[0]
    l_b = loss_and_grads(model, X, y, rng=np.random.default_rng(1), training=True)[0]
    assert l_a != l_eval and l_a != l_b
    assert loss_and_grads(model, X, y, rng=np.random.default_rng(0), training=True)[0] == l_a


# --------------------------------------------------------------------------------------------------
# building and folding
def test_build_model_shapes_and_he_init():
    model = build_model("small_cnn", (1, 64, 64), 2, random_state=0)
    kinds = [layer.kind for layer in model]
    assert kinds == ["Conv2D", "ReLU", "MaxPool2D", "Conv2D", "ReLU", "MaxPool2D", "Conv2D", "ReLU",
                     "MaxPool2D", "Flatten", "Dense"]
    assert model(np.zeros((2, 1, 64, 64))).shape == (2, 2)
    big = build_model([("conv", 64, 5)], (8, 16, 16), 2, random_state=0)
    W = big.layers[0].W
    assert W.std() == pytest.approx(np.sqrt(2 / (8 * 25)), rel=0.02)
    assert np.all(big.layers[0].b == 0)


def test_standardization_folds_exactly():
    rng = np.random.default_rng(0)
    X = rng.random((4, 2, 9, 9))
    mean, scale = np.array([0.3, 0.6]), 0.27
    Xs = (X - mean.reshape(1, -1, 1, 1)) / scale
    for arch in ([("conv", 3, 3, {"stride": 2}), "relu", ("dense", 4)], ["flatten", ("dense", 5), "tanh"]):
        model = build_model(arch, (2, 9, 9), 3, random_state=1)
        folded = _fold_standardization(model, mean, scale, (2, 9, 9))
        np.testing.assert_allclose(folded(X), model(Xs), rtol=1e-12, atol=1e-12)


def test_flip_augment_keeps_the_pixels():
    X = np.random.default_rng(0).random((16, 2, 5, 5))
    A = _flip_augment(X, np.random.default_rng(3))
    for a, x in zip(A, X):
        assert np.array_equal(np.sort(a.ravel()), np.sort(x.ravel()))
    assert not np.array_equal(A, X)
    assert np.array_equal(A, _flip_augment(X, np.random.default_rng(3)))


# --------------------------------------------------------------------------------------------------
# fitting
@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X = d.images / 16.0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    train, test = order[:1000], order[1000:]
    return X[train], d.target[train], X[test], d.target[test]


DIGITS_ARCH = [("conv", 8, 3), "relu", ("maxpool", 2), ("dense", 32), "relu"]


@pytest.fixture(scope="module")
def digits_clf(digits):
    Xtr, ytr, _, _ = digits
    return ConvNetClassifier(DIGITS_ARCH, epochs=12, batch_size=32, learning_rate=3e-3,
                             random_state=0).fit(Xtr, ytr)


def test_learns_digits(digits, digits_clf):
    _, _, Xte, yte = digits
    clf = digits_clf
    assert list(clf.classes_) == list(range(10))
    acc = clf.score(Xte, yte)
    assert acc >= 0.9, acc
    assert clf.loss_curve_[-1] < 0.5 * clf.loss_curve_[0]
    assert clf.n_epochs_ == 12 and len(clf.loss_curve_) == 12
    P = clf.predict_proba(Xte)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    assert np.array_equal(clf.classes_[P.argmax(axis=1)], clf.predict(Xte))
    # model_ takes raw images with a channel axis and is float64
    logits = clf.model_(Xte[:, None])
    assert clf.model_.dtype == np.float64
    # (BLAS may sum in another order with another thread count: equal to rounding)
    np.testing.assert_allclose(clf.decision_function(Xte), logits, rtol=1e-12, atol=1e-12)


def test_trained_model_explains_with_lrp(digits, digits_clf):
    _, _, Xte, _ = digits
    X = Xte[:6, None]
    R, diag = nets.LRP(digits_clf.model_, "epsilon_plus_flat").relevance(X, return_diagnostics=True)
    assert R.shape == X.shape and np.all(np.isfinite(R))
    assert np.all(np.abs(R).sum(axis=(1, 2, 3)) > 0)
    maps = nets.LRP(digits_clf.model_, "epsilon_plus_flat").explain(X)
    assert len(maps) == 6 and maps[0].relevance.shape == (8, 8)


def test_deterministic_under_random_state(digits):
    Xtr, ytr, _, _ = digits
    kw = dict(architecture=[("conv", 4, 3), "relu", "global_maxpool"], epochs=2, batch_size=64,
              augment="flips")
    a = ConvNetClassifier(random_state=3, **kw).fit(Xtr[:300], ytr[:300])
    b = ConvNetClassifier(random_state=3, **kw).fit(Xtr[:300], ytr[:300])
    c = ConvNetClassifier(random_state=4, **kw).fit(Xtr[:300], ytr[:300])
    for la, lb in zip(a.model_, b.model_):
        for name, arr in la.get_arrays().items():
            assert np.array_equal(arr, lb.get_arrays()[name])
    assert a.loss_curve_ == b.loss_curve_ and a.loss_curve_ != c.loss_curve_


def test_binary_string_labels_float64_and_early_stopping():
    rng = np.random.default_rng(0)
    X = rng.random((160, 10, 10)) * 0.5
    y = np.where(np.arange(160) % 2 == 0, "bright", "dark")
    X[y == "bright", 3:7, 3:7] += 0.5  # a bright square anywhere distinguishes the class
    clf = ConvNetClassifier([("conv", 4, 3), "relu", "global_maxpool"], epochs=40, dtype="float64",
                            batch_size=16, early_stopping=True, validation_fraction=0.2, n_iter_no_change=5,
                            random_state=0)
    clf.fit(X, y)
    assert list(clf.classes_) == ["bright", "dark"]
    assert len(clf.validation_scores_) == clf.n_epochs_ <= 40
    assert max(clf.validation_scores_) == 1.0
    d = clf.decision_function(X)
    assert d.shape == (160,)
    assert np.array_equal(np.where(d > 0, "dark", "bright"), clf.predict(X))
    assert clf.score(X, y) >= 0.95
    # the global max pool (a MaxPool2D over the whole map) explains through winner-takes-all
    R = nets.LRP(clf.model_, "epsilon_plus_flat").relevance(X[:4, None], target=0)
    assert np.all(np.isfinite(R)) and np.all(np.abs(R).sum(axis=(1, 2, 3)) > 0)
    # the decision model computes decision_function exactly, as one output, and explains it
    margin = clf.decision_model()
    np.testing.assert_allclose(margin(X[:, None])[:, 0], d, rtol=1e-12, atol=1e-12)
    R, diag = nets.LRP(margin, "epsilon_plus_flat").relevance(X[:4, None], target=0, return_diagnostics=True)
    assert np.all(np.isfinite(R))
    np.testing.assert_allclose(diag.score, d[:4], rtol=1e-12, atol=1e-12)


def test_warm_start_from_a_sequential_and_sklearn_clone(digits):
    Xtr, ytr, Xte, yte = digits
    start = build_model(DIGITS_ARCH, (1, 8, 8), 10, random_state=0)
    clf = ConvNetClassifier(start, epochs=3, random_state=0).fit(Xtr, ytr)
    assert clf.model_ is not start and clf.score(Xte, yte) > 0.5
    fresh = build_model(DIGITS_ARCH, (1, 8, 8), 10, random_state=0)
    assert np.array_equal(start.layers[0].W, fresh.layers[0].W)  # the start model is not modified
    assert clf.get_params()["architecture"] is start
    copy = clone(clf)
    assert copy.get_params()["epochs"] == 3 and not hasattr(copy, "model_")


def test_thread_setting_is_restored(digits):
    Xtr, ytr, _, _ = digits
    before = numba.get_num_threads()
    ConvNetClassifier(["flatten", ("dense", 4)], epochs=1, n_threads=1).fit(Xtr[:50], ytr[:50])
    assert numba.get_num_threads() == before


# --------------------------------------------------------------------------------------------------
# bad input
def test_clear_errors():
    rng = np.random.default_rng(0)
    X, y = rng.random((20, 8, 8)), np.arange(20) % 2
    small = [("conv", 2, 3), "relu", "global_maxpool"]
    with pytest.raises(ValueError, match="shape"):
        ConvNetClassifier(small).fit(X.reshape(20, 64), y)
    Xn = X.copy()
    Xn[3, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ConvNetClassifier(small).fit(Xn, y)
    with pytest.raises(ValueError, match="single class"):
        ConvNetClassifier(small).fit(X, np.zeros(20))
    with pytest.raises(ValueError, match="one label per image"):
        ConvNetClassifier(small).fit(X, y[:10])
    with pytest.raises(ValueError, match="unsupported layer spec 'batchnorm'"):
        ConvNetClassifier([("conv", 2, 3), "batchnorm"]).fit(X, y)
    with pytest.raises(TypeError, match="layer spec"):
        ConvNetClassifier([42]).fit(X, y)
    with pytest.raises(ValueError, match="unknown architecture"):
        ConvNetClassifier("resnet").fit(X, y)
    seq = nets.Sequential([nets.Flatten(), nets.Dense(np.ones((2, 64))), nets.Sigmoid()])
    with pytest.raises(ValueError, match="Sigmoid.*not supported"):
        ConvNetClassifier(seq).fit(X, y)
    with pytest.raises(ValueError, match="does not fit input shape"):
        ConvNetClassifier([("conv", 2, 9)]).fit(X, y)
    with pytest.raises(ValueError, match="standardize"):
        ConvNetClassifier([("conv", 2, 3, {"padding": 1})]).fit(X, y)
    with pytest.raises(ValueError, match="epochs"):
        ConvNetClassifier(small, epochs=0).fit(X, y)
    with pytest.raises(ValueError, match="augment"):
        ConvNetClassifier(small, augment="rotate").fit(X, y)
    with pytest.raises(NotFittedError):
        ConvNetClassifier(small).predict(X)
    clf = ConvNetClassifier(small, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="per-sample shape"):
        clf.predict(rng.random((3, 9, 9)))
    with pytest.raises(FloatingPointError, match="diverged"), np.errstate(all="ignore"):
        ConvNetClassifier(small, epochs=2, learning_rate=1e300, dtype="float64").fit(X, y)


def test_multichannel_input_and_verbose_output(capsys):
    rng = np.random.default_rng(0)
    X = rng.random((60, 3, 9, 9)) * 0.5
    y = np.arange(60) % 2
    X[y == 1, 1, 2:6, 2:6] += 0.5  # the class shows in the second channel only
    clf = ConvNetClassifier([("conv", 4, 3), "relu", "global_maxpool"], epochs=25, batch_size=16,
                            early_stopping=True, n_iter_no_change=30, random_state=0, verbose=True)
    clf.fit(X, y)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 25 and out[0].startswith("epoch   1  loss") and "val acc" in out[0]
    assert clf.input_shape_ == (3, 9, 9) and clf.input_mean_.shape == (3,)
    assert clf.model_.layers[0].W.shape == (4, 3, 3, 3)
    assert clf.score(X, y) >= 0.9
    with pytest.raises(ValueError, match="per-sample shape"):
        clf.predict(X[:, :2])


def test_layer_spec_builder_lives_in_its_own_module():
    import nets.architectures
    import nets.train

    # moved out of the trainer (issue 11); the old import path keeps working
    assert nets.train.build_model is nets.architectures.build_model
    assert nets.train.ARCHITECTURES is nets.architectures.ARCHITECTURES
