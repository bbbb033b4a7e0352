"""``BoWClassifier.extract_and_encode``: whole images from pixels to BoW vectors, a part per thread.

The numbers must be those of ``extract_features`` then ``encode_features`` bit for bit (every image's
features and encoding depend on that image only), on one thread and on two with the parts path forced,
whatever the cut; errors and warnings name an image by its index in the whole batch.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from skimage import data

from bowlrp import BoWClassifier
from bowlrp.app.scenes import make_scenes
from bowlrp.bow import forward as forward_module
from bowlrp.jit import forced_builds, limited_threads, parallel_map


def _crops(photo, side, n, seed):
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, photo.shape[0] - side, n)
    xs = rng.integers(0, photo.shape[1] - side, n)
    return [photo[y:y + side, x:x + side] for y, x in zip(ys, xs)]


@pytest.fixture(scope="module")
def scenes():
    train = make_scenes(n_images=24, size=64, random_state=1)
    test = make_scenes(n_images=14, size=64, random_state=2)
    return list(train.images), train.labels, list(test.images)


def _mixed(scenes):
    """Scenes 64 x 64, camera crops 48 x 48 and uint8 coin crops 56 x 40, interleaved runs of shapes."""
    camera = _crops(data.camera(), 48, 5, 0)
    coins = [c[:, :40] for c in _crops(data.coins(), 56, 4, 1)]
    return scenes[2][:5] + camera + scenes[2][5:9] + coins + scenes[2][9:]


def _assert_same_forward(a, b):
    (fa, ea), (fb, eb) = a, b
    assert len(fa) == len(fb) == len(ea) == len(eb)
    for x, y in zip(fa, fb):
        for name in ("descriptors", "centers", "support", "channel"):
            assert np.array_equal(getattr(x, name), getattr(y, name)), name
        assert x.image_shape == y.image_shape
    for x, y in zip(ea, eb):
        assert np.array_equal(x.x, y.x)
        assert all(np.array_equal(u, v) for u, v in zip(x.csr, y.csr))
        assert x.channel_slices == y.channel_slices and x.p == y.p


@pytest.mark.parametrize("params", [
    dict(),
    dict(mapping="hard", p=3.0, bin_sizes=(3, 5)),
    dict(mapping="soft", p=np.inf, kernel="exp_chi2"),
    dict(color="opponent", p=0.5),
])
@pytest.mark.parametrize("min_part, per_thread", [(4, 2), (1, 8)])
def test_the_parts_give_the_two_stages_numbers_bit_for_bit(scenes, params, min_part, per_thread,
                                                          monkeypatch):
    train, y, _ = scenes
    images = _mixed(scenes)
    if params.get("color") == "opponent":  # three different planes from each gray image
        train, images = ([np.stack([im, im[::-1], im[:, ::-1]], axis=-1) for im in ims]
                         for ims in (train, images))
    clf = BoWClassifier(step=4, vocabulary_size=16, random_state=0, **params).fit(train, y)
    with limited_threads(1):
        features = clf.extract_features(images)
        staged = (features, clf.encode_features(features))
        X = clf.decision_function(images)
    monkeypatch.setattr(forward_module, "MIN_PART", min_part)
    monkeypatch.setattr(forward_module, "PARTS_PER_THREAD", per_thread)
    parts = []

    def spy(func, items, work):
        parts.append(len(items))
        return parallel_map(func, items, work)

    monkeypatch.setattr(forward_module, "parallel_map", spy)
    for kind, threads in (("serial", 1), ("parallel", 2), ("serial", 2)):
        with forced_builds(kind), limited_threads(threads):
            _assert_same_forward(clf.extract_and_encode(images), staged)
            assert np.array_equal(clf.decision_function(images), X)
            assert np.array_equal(clf.transform(images), np.stack([e.x for e in staged[1]]))
    # the parts path ran (three calls with the parallel builds forced: 23 images cut in 4 or 16 parts)
    assert parts == [2 * per_thread] * 3


def test_explanations_through_the_parts_equal_one_thread(scenes):
    train, y, test = scenes
    clf = BoWClassifier(step=4, vocabulary_size=16, random_state=0, kernel="exp_chi2").fit(train, y)
    images = _mixed(scenes)
    with forced_builds("serial"), limited_threads(1):
        one = clf.explain(images)
    with forced_builds("parallel"), limited_threads(2):
        two = clf.explain(images)
    for a, b in zip(one, two):
        assert np.array_equal(a.relevance, b.relevance) and a.score == b.score and a.residual == b.residual
        assert np.array_equal(a.extras["taylor"]["root"], b.extras["taylor"]["root"])


def test_a_stage_overridden_on_the_instance_is_honoured(scenes):
    train, y, test = scenes
    clf = BoWClassifier(step=4, vocabulary_size=16, random_state=0).fit(train, y)
    features = clf.extract_features(test)
    encodings = clf.encode_features(features)
    calls = []
    clf.extract_features = lambda images: calls.append(len(images)) or features
    clf.encode_features = lambda f: calls.append("encode") or encodings
    with forced_builds("parallel"), limited_threads(2):
        got = clf.extract_and_encode(test)
        X = clf.transform(test)
    assert got[0] is features and got[1] is encodings
    assert calls == [len(test), "encode"] * 2  # once each per call: the whole batch, no parts
    assert np.array_equal(X, np.stack([e.x for e in encodings]))


def test_errors_and_warnings_name_the_image_of_the_batch(scenes):
    train, y, test = scenes
    clf = BoWClassifier(step=4, vocabulary_size=16, random_state=0).fit(train, y)
    images = list(test) * 2
    bad = [im.copy() for im in images]
    bad[9][3, 4] = np.nan
    with forced_builds("parallel"), limited_threads(2):
        with pytest.raises(ValueError, match="image 9 .*non-finite|non-finite.*image 9"):
            clf.transform(bad)
        loud = list(images)
        loud[11] = images[11] * 255.0
        loud[20] = images[20] * 255.0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clf.transform(loud)
    messages = [str(w.message) for w in caught if "DenseSIFT expects" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("image 11 ")


@pytest.mark.parametrize("threads", [1, 2])
def test_the_range_warning_names_the_users_line_and_a_bad_image_one_traceback(scenes, threads):
    """Review of issue 15: the range warning named a library line, another one on two threads than
    on one; a bad image on two threads showed the part's error, then the same error raised while
    handling it. Now the warning names the user's call (this file) on any number of threads, from
    every entry point, and the error is raised once."""
    train, y, test = scenes
    clf = BoWClassifier(step=4, vocabulary_size=16, random_state=0).fit(train, y)
    loud = [im * 255.0 for im in list(test) * 2]
    bad = list(test) * 2
    bad[9] = bad[9].copy()
    bad[9][3, 4] = np.nan
    calls = [lambda: clf.transform(loud), lambda: clf.explain(loud[:8]),
             lambda: clf.extractor_.extract(loud[0]), lambda: clf.extractor_.extract_many(loud)]
    with forced_builds("parallel" if threads == 2 else "serial"), limited_threads(threads):
        for call in calls:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                call()
            ours = [w for w in caught if "DenseSIFT expects" in str(w.message)]
            assert len(ours) == 1 and ours[0].filename == __file__, (ours[0].filename, ours[0].lineno)
        with pytest.raises(ValueError, match="image 9 .*non-finite|non-finite.*image 9") as info:
            clf.transform(bad)
    assert info.value.__context__ is None and info.value.__cause__ is None
