"""BoWClassifier end to end on real images: accuracy, the kernel expansion, the sklearn contract, errors."""

from __future__ import annotations

import io
import pickle

import joblib
import numpy as np
import pytest
from skimage import data
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from bowlrp import BoWClassifier
from tests.bowlrp.bow.test_kernels import _gram_twin

SMALL = dict(step=3, bin_sizes=(3,), vocabulary_size=16, random_state=0)


@pytest.fixture(scope="module")
def faces():
    """scikit-image's lfw_subset: 100 faces then 100 non-faces, 25 x 25 gray; seeded 100/100 split."""
    images = data.lfw_subset()
    y = np.array([1] * 100 + [0] * 100)
    perm = np.random.default_rng(0).permutation(200)
    train, test = perm[:100], perm[100:]
    return list(images[train]), y[train], list(images[test]), y[test]


def _texture_crops(side=48):
    """Non-overlapping crops of three texture photos: train from the top half, test from the bottom."""
    train, y_train, test, y_test = [], [], [], []
    for label, photo in enumerate([data.brick(), data.grass(), data.gravel()]):
        h, w = photo.shape
        for r in range(0, h // 2 - side + 1, side):
            for c in range(0, w - side + 1, side * 2):
                train.append(photo[r:r + side, c:c + side])
                y_train.append(label)
                test.append(photo[h // 2 + r:h // 2 + r + side, c:c + side])
                y_test.append(label)
    return train, np.array(y_train), test, np.array(y_test)


@pytest.fixture(scope="module")
def fitted(faces):
    X, y, _, _ = faces
    return BoWClassifier(**SMALL, kernel="intersection").fit(X, y)


# ---------------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("backend", ["numba", "opencv"])
def test_faces_vs_non_faces_held_out_accuracy(faces, backend):
    X, y, Xt, yt = faces
    clf = BoWClassifier(**SMALL, backend=backend, kernel="intersection", C=10.0).fit(X, y)
    accuracy = clf.score(Xt, yt)
    print(f"lfw_subset faces vs non-faces, {backend}: held-out accuracy {accuracy:.3f}")
    assert accuracy >= 0.85


@pytest.mark.parametrize("backend", ["numba", "opencv"])
def test_three_textures_held_out_accuracy(backend):
    X, y, Xt, yt = _texture_crops()
    clf = BoWClassifier(step=4, bin_sizes=(4,), vocabulary_size=32, kernel="exp_chi2", gamma="auto",
                        C=10.0, backend=backend, random_state=0).fit(X, y)
    assert clf.dual_coef_.shape[0] == 3  # one-vs-rest: one score per class
    accuracy = clf.score(Xt, yt)
    print(f"brick/grass/gravel crops ({len(X)} train, {len(Xt)} test), {backend}: accuracy {accuracy:.3f}")
    # seeds 0-3 gave 0.95-0.96 (numba) and 0.87-0.95 (opencv); chance is 0.33
    assert accuracy >= (0.9 if backend == "numba" else 0.8)


# ---------------------------------------------------------------------------------- the one code path
def _expansion(clf, X):
    K = _gram_twin(clf.kernel, X, clf.support_vectors_, clf.gamma_, clf.channel_weights_, clf.channel_slices_)
    return K @ clf.dual_coef_.T + clf.intercept_


@pytest.mark.parametrize(
    "params",
    [
        dict(kernel="intersection", bin_sizes=(2, 3), channel_weights=[0.4, 1.3], mapping="rank", p=2.0),
        dict(kernel="exp_chi2", gamma="auto", mapping="soft", p=np.inf),
        dict(kernel="chi2", mapping="hard", p=1.0, normalize=False),
    ],
)
def test_decision_function_is_b_plus_sum_a_k_from_attributes(faces, params):
    X, y, Xt, _ = faces
    y3 = np.arange(len(y)) % 3 if params["kernel"] == "chi2" else y  # also a multi-class case
    clf = BoWClassifier(**{**SMALL, **params}).fit(X[:60], y3[:60])
    bows = clf.transform(Xt[:20])
    assert bows.shape == (20, sum(v.cluster_centers_.shape[0] for v in clf.vocabularies_))
    want = _expansion(clf, bows)
    got = clf.decision_function(Xt[:20])
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=0, atol=1e-10)
    # the internal path the explanation uses gives the very same numbers
    encodings = clf.encode_features(clf.extract_features(Xt[:20]))
    assert np.array_equal(np.stack([e.x for e in encodings]), bows)
    assert np.array_equal(clf.decision_from_bows(bows).reshape(got.shape), got)
    assert np.array_equal(clf.train_bows_, clf.transform(X[:60]))


def test_encodings_follow_the_contract(fitted, faces):
    enc = fitted.encode_features(fitted.extract_features(faces[2][:3]))
    V = fitted.support_vectors_.shape[1]
    for e in enc:
        assert e.mapping.shape[1] == V and e.x.shape == (V,) and e.p == 1.0
        assert e.channel_slices == fitted.channel_slices_
        assert e.x.sum() == pytest.approx(1.0)  # L1-normalised single channel


def test_gamma_auto_is_one_over_mean_distance(faces):
    X, y, _, _ = faces
    clf = BoWClassifier(**SMALL, kernel="rbf", gamma="auto").fit(X[:40], y[:40])
    B = clf.train_bows_
    d2 = ((B[:, None] - B[None]) ** 2).sum(-1)[np.triu_indices(len(B), 1)]
    assert clf.gamma_ == pytest.approx(1.0 / d2.mean(), rel=1e-10)
    assert BoWClassifier(**SMALL, gamma=0.3).fit(X[:40], y[:40]).gamma_ == 0.3


# ---------------------------------------------------------------------------------- sklearn contract
def test_sklearn_contract(fitted, faces):
    X, y, Xt, yt = faces
    params = fitted.get_params()
    assert params["vocabulary_size"] == 16 and params["kernel"] == "intersection"
    twin = clone(fitted)
    assert not hasattr(twin, "classes_") and twin.get_params() == params
    twin.set_params(kernel="hellinger", C=3.0)
    assert twin.kernel == "hellinger" and twin.C == 3.0
    with pytest.raises(NotFittedError):
        twin.predict(Xt[:2])
    with pytest.raises(NotFittedError):
        twin.decision_from_bows(np.zeros((1, 16)))
    assert twin.fit(X[:40], y[:40]) is twin
    assert fitted.predict(Xt).shape == (len(Xt),)
    assert set(fitted.predict(Xt)) <= set(fitted.classes_)
    assert 0.0 <= fitted.score(Xt, yt) <= 1.0
    assert isinstance(fitted.extractor_.extract(Xt[0]).descriptors, np.ndarray)


def test_deterministic_under_random_state_and_n_jobs(faces):
    X, y, Xt, _ = faces
    a = BoWClassifier(**SMALL).fit(X[:50], y[:50])
    b = BoWClassifier(**SMALL, n_jobs=2).fit(X[:50], y[:50])
    c = BoWClassifier(**{**SMALL, "random_state": 1}).fit(X[:50], y[:50])
    assert np.array_equal(a.decision_function(Xt[:10]), b.decision_function(Xt[:10]))
    assert not np.array_equal(a.vocabularies_[0].cluster_centers_, c.vocabularies_[0].cluster_centers_)


@pytest.mark.parametrize("mapping", ["hard", "rank"])
def test_transform_of_a_batch_is_bit_identical_to_image_by_image(faces, mapping, monkeypatch):
    """The encoding goes through batches of images (shared buffers, one kernel call per batch and
    channel): no number may depend on the batch, its cut or the threads."""
    from bowlrp.bow import encoding
    from bowlrp.jit import forced_builds

    X, y, Xt, _ = faces
    clf = BoWClassifier(**{**SMALL, "bin_sizes": (3, 4), "mapping": mapping, "p": 2.0}).fit(X[:40], y[:40])
    alone = np.vstack([clf.transform([im]) for im in Xt[:12]])
    assert np.array_equal(clf.transform(Xt[:12]), alone)
    monkeypatch.setattr(encoding, "_BATCH_ROWS", 100)  # batches of three faces (41 descriptors each)
    with forced_builds("parallel"):
        assert np.array_equal(clf.transform(Xt[:12]), alone)


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_round_trip_predicts_identically(fitted, faces, how):
    Xt = faces[2][:10]
    buffer = io.BytesIO()
    if how == "pickle":
        pickle.dump(fitted, buffer)
        buffer.seek(0)
        loaded = pickle.load(buffer)
    else:
        joblib.dump(fitted, buffer)
        buffer.seek(0)
        loaded = joblib.load(buffer)
    assert np.array_equal(loaded.decision_function(Xt), fitted.decision_function(Xt))
    assert np.array_equal(loaded.predict(Xt), fitted.predict(Xt))


def test_mixed_sizes_rgb_and_opponent_colour():
    rng = np.random.default_rng(0)
    photo = data.astronaut()
    images = [photo[r:r + s, c:c + s + 5] for r, c, s in rng.integers([0, 0, 30], [400, 400, 60], (12, 3))]
    y = np.arange(12) % 2
    clf = BoWClassifier(step=6, bin_sizes=(4,), color="opponent", vocabulary_size=8, random_state=0)
    clf.fit(images, y)
    assert clf.vocabularies_[0].cluster_centers_.shape == (8, 384)
    assert clf.decision_function(images).shape == (12,)


def test_verbose_reports_progress(faces, capsys):
    X, y, _, _ = faces
    BoWClassifier(**SMALL, verbose=True).fit(X[:30], y[:30])
    err = capsys.readouterr().err
    for step in ("vocabulary", "encoded 30/30", "Gram rows", "support vectors", "fitted in"):
        assert step in err


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda X, y: ([], []), "empty"),
        (lambda X, y: ([np.zeros((8, 8))] * 4, [0, 1, 0, 1]), "smaller than one descriptor"),
        (lambda X, y: ([np.full((25, 25), np.nan)] + X[1:4], y[:4]), "non-finite"),
        (lambda X, y: (X[:10], y[:9]), "10 images but 9 labels"),
        (lambda X, y: (X[:10], np.zeros(10)), "at least 2 classes"),
    ],
)
def test_bad_input_raises_clear_errors(faces, make, match):
    images, labels = make(faces[0], faces[1])
    with pytest.raises(ValueError, match=match):
        BoWClassifier(**SMALL).fit(images, labels)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(kernel="sigmoid"), "unknown kernel 'sigmoid'"),
        (dict(mapping="sparse"), "unknown mapping 'sparse'"),
        (dict(p=0), "pooling exponent"),
        (dict(vocabulary_size=0), "vocabulary_size"),
        (dict(gamma="scale"), "gamma"),
        (dict(backend="vlfeat"), "backend"),
    ],
)
def test_bad_parameters_raise_clear_errors(faces, params, match):
    X, y, _, _ = faces
    with pytest.raises(ValueError, match=match):
        BoWClassifier(**{**SMALL, **params}).fit(X[:10], y[:10])


def test_predicting_bad_images_raises(fitted):
    with pytest.raises(ValueError, match="empty"):
        fitted.predict([])
    with pytest.raises(ValueError, match="smaller than one descriptor"):
        fitted.decision_function([np.zeros((5, 5))])
    with pytest.raises(ValueError, match="BoW vectors must have shape"):
        fitted.decision_from_bows(np.zeros((2, 3)))


# ---------------------------------------------------------------------------------- sklearn checks
# scikit-learn's checks that need no generated 2-D feature matrix (BoWClassifier takes images): they run
# for real here; the data-driven ones run on OneVsRestKernelSVC, the estimator on the BoW vectors.
_IMAGE_INPUT_CHECKS = [
    "check_no_attributes_set_in_init", "check_get_params_invariance", "check_set_params",
    "check_parameters_default_constructible", "check_estimator_repr", "check_estimator_cloneable",
    "check_estimator_tags_renamed", "check_valid_tag_types", "check_mixin_order",
    "check_do_not_raise_errors_in_init_or_set_params", "check_estimator_sparse_tag",
]


@pytest.mark.parametrize("check", _IMAGE_INPUT_CHECKS)
def test_sklearn_checks_that_apply_to_image_input(check):
    import sklearn.utils.estimator_checks as estimator_checks

    getattr(estimator_checks, check)("BoWClassifier", BoWClassifier(**SMALL, probability=True))


def test_tags_say_the_input_is_images_not_a_feature_matrix():
    from sklearn.utils import get_tags

    tags = get_tags(BoWClassifier())
    assert tags.input_tags.two_d_array is False and tags.input_tags.sparse is False
    assert tags.estimator_type == "classifier" and tags.non_deterministic is False


# ---------------------------------------------------------------------------------- predict_proba
def test_predict_proba_is_platt_scaling_and_off_by_default(faces):
    X, y, Xt, yt = faces
    plain = BoWClassifier(**SMALL).fit(X[:60], y[:60])
    assert not hasattr(plain, "predict_proba")  # as SVC(probability=False)
    clf = BoWClassifier(**SMALL, probability=True).fit(X[:60], y[:60])
    # probability=True changes nothing else: same SVMs, same decision values
    np.testing.assert_array_equal(clf.decision_function(Xt[:20]), plain.decision_function(Xt[:20]))
    P = clf.predict_proba(Xt[:20])
    assert P.shape == (20, 2) and np.all((P >= 0) & (P <= 1))
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    f = clf.decision_function(Xt[:20])
    A, B = clf.svm_.probA_[0], clf.svm_.probB_[0]
    np.testing.assert_allclose(P[:, 1], 1.0 / (1.0 + np.exp(A * f + B)), rtol=1e-12)
    assert A < 0  # a larger score means a likelier classes_[1]
    # calibrated on held-out folds: on new faces the probabilities are informative
    from sklearn.metrics import log_loss

    P_all = clf.predict_proba(Xt)
    assert log_loss(yt, P_all) < log_loss(yt, np.full_like(P_all, 0.5))
    np.testing.assert_array_equal(P_all, BoWClassifier(**SMALL, probability=True).fit(X[:60], y[:60])
                                  .predict_proba(Xt))  # seeded internal CV
    np.testing.assert_allclose(clf.predict_log_proba(Xt[:3]), np.log(P_all[:3]))


def test_predict_proba_multiclass_normalises_one_vs_rest():
    train, y_train, test, y_test = _texture_crops()
    clf = BoWClassifier(**SMALL, probability=True).fit(train, y_train)
    P = clf.predict_proba(test)
    assert P.shape == (len(test), 3)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    S = clf.decision_function(test)
    raw = 1.0 / (1.0 + np.exp(clf.svm_.probA_ * S + clf.svm_.probB_))
    np.testing.assert_allclose(P, raw / raw.sum(axis=1, keepdims=True), rtol=1e-12)
    assert np.mean(clf.classes_[P.argmax(axis=1)] == np.asarray(y_test)) > 0.8


def test_probability_needs_two_samples_per_class_and_a_bool(faces):
    X, y, _, _ = faces
    with pytest.raises(ValueError, match="at least 2 training samples"):
        BoWClassifier(**SMALL, probability=True).fit(X[:3], [0, 1, 1])
    with pytest.raises(ValueError, match="probability"):
        BoWClassifier(**SMALL, probability="yes").fit(X[:10], y[:10])
