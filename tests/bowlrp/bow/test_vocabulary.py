"""Visual vocabularies: scikit-learn contract, seeded subsample, determinism, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from bowlrp.bow.features import LocalFeatures
from bowlrp.bow.vocabulary import VisualVocabulary, fit_vocabularies, squared_distances


@parametrize_with_checks([VisualVocabulary(n_words=3, random_state=0),
                          VisualVocabulary(n_words=2, method="kmeans", n_init=1, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _blobs(seed=0, n=60):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    return np.concatenate([c + 0.1 * rng.normal(size=(n, 3)) for c in centres])


@pytest.mark.parametrize("method", ["minibatch", "kmeans"])
def test_finds_well_separated_clusters(method):
    X = _blobs()
    voc = VisualVocabulary(n_words=4, method=method, random_state=0).fit(X)
    found = np.sort(np.round(voc.cluster_centers_).astype(int), axis=0)
    assert found.tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 0], [4, 4, 4]]
    labels = voc.predict(X)
    assert len(np.unique(labels)) == 4
    assert all(len(np.unique(labels[k * 60:(k + 1) * 60])) == 1 for k in range(4))


def test_deterministic_under_random_state_and_seed_matters():
    X = np.random.default_rng(1).random((500, 8))
    a = VisualVocabulary(n_words=10, max_descriptors=200, random_state=3).fit(X).cluster_centers_
    b = VisualVocabulary(n_words=10, max_descriptors=200, random_state=3).fit(X).cluster_centers_
    c = VisualVocabulary(n_words=10, max_descriptors=200, random_state=4).fit(X).cluster_centers_
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_descriptor_cap_subsamples():
    X = np.random.default_rng(2).random((1000, 4))
    voc = VisualVocabulary(n_words=5, max_descriptors=123, random_state=0).fit(X)
    assert voc.n_descriptors_fit_ == 123
    assert VisualVocabulary(n_words=5, random_state=0).fit(X).n_descriptors_fit_ == 1000


def test_too_few_distinct_descriptors_is_a_clear_error():
    X = np.zeros((50, 4))
    X[:3] = np.eye(4)[:3]
    with pytest.raises(ValueError, match="cannot build 8 visual words from 4 distinct descriptors"):
        VisualVocabulary(n_words=8).fit(X)


def test_transform_is_squared_euclidean_distance():
    X = _blobs()
    voc = VisualVocabulary(n_words=4, random_state=0).fit(X)
    want = ((X[:, None, :] - voc.cluster_centers_[None]) ** 2).sum(-1)
    np.testing.assert_allclose(voc.transform(X), want, rtol=1e-9, atol=1e-12)
    assert np.all(squared_distances(X, X) >= 0)


def test_fit_vocabularies_one_per_channel():
    rng = np.random.default_rng(0)

    def feats(m):
        ch = np.repeat([0, 1], m)
        return LocalFeatures(descriptors=rng.random((2 * m, 6)), centers=np.zeros((2 * m, 2)),
                             support=np.full(2 * m, 8, np.int64), channel=ch, image_shape=(16, 16))

    features = [feats(10), feats(7)]
    vocs = fit_vocabularies(features, n_channels=2, n_words=4, random_state=0)
    assert len(vocs) == 2 and all(v.cluster_centers_.shape == (4, 6) for v in vocs)
    assert [v.n_descriptors_fit_ for v in vocs] == [17, 17]
    again = fit_vocabularies(features, n_channels=2, n_words=4, random_state=0)
    assert all(np.array_equal(a.cluster_centers_, b.cluster_centers_) for a, b in zip(vocs, again))
    with pytest.raises(ValueError, match="no local features of channel 2"):
        fit_vocabularies(features, n_channels=3, n_words=4)
