"""``explain`` in one pass over the parts: each thread takes its images from pixels to heatmaps.

Every number must be the stage-after-stage path's bit for bit (forward pass of the whole batch, decision
values of the whole batch, then the decomposition): on one thread and on two, for parts of different
sizes, exact and Taylor kernels, two and three classes, every kind of target; a part whose own decision
values differ from the whole batch's in any bit is explained again from the batch's; a RandomState
instance still runs as one part; errors and warnings are those of the stage path.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from skimage import data

from bowlrp import BoWClassifier
from bowlrp.app.scenes import make_scenes
from bowlrp.bow import forward as forward_module
from bowlrp.bow.decompose import explain as explain_module
from bowlrp.jit import forced_builds, limited_threads


@pytest.fixture(scope="module")
def scenes():
    train = make_scenes(n_images=24, size=64, random_state=1)
    test = make_scenes(n_images=13, size=64, random_state=2)
    return list(train.images), train.labels, list(test.images)


@pytest.fixture(scope="module")
def coins():
    """Three classes of 48 x 48 crops of scikit-image's coins (uint8)."""
    photo = data.coins()
    crops = [photo[r:r + 48, c:c + 48] for r in range(0, 288, 48) for c in range(0, 336, 48)]
    return crops, np.arange(len(crops)) % 3


def _staged(clf):
    """A copy of ``clf`` whose ``extract_and_encode`` is overridden on the instance (by its own bound
    method), which makes ``explain`` run stage after stage: main's path, the reference."""
    import copy

    staged = copy.copy(clf)
    staged.extract_and_encode = clf.extract_and_encode
    return staged


def _flat(maps):
    return [m for entry in maps for m in (entry if isinstance(entry, list) else [entry])]


def _assert_same_maps(a, b):
    a, b = _flat(a), _flat(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.relevance.tobytes() == y.relevance.tobytes()
        assert (x.score, x.residual, x.target, x.method) == (y.score, y.residual, y.target, y.method)
        assert (x.image is None) == (y.image is None)
        if x.image is not None:
            assert np.array_equal(x.image, y.image)
        assert x.extras.keys() == y.extras.keys()
        for key, value in x.extras.items():
            other = y.extras[key]
            if isinstance(value, dict):
                assert value.keys() == other.keys(), key
                for k, v in value.items():
                    assert np.asarray(v).tobytes() == np.asarray(other[k]).tobytes(), (key, k)
            else:
                assert np.asarray(value).tobytes() == np.asarray(other).tobytes(), key


def _spy_parts(monkeypatch):
    """The (lo, hi) of every ``_explain_part`` call and whether the fused pass ran it (its batch is
    the part: ``lo == 0`` and as many images as the part)."""
    calls = []
    real = explain_module._explain_part

    def spy(batch, lo, hi):
        calls.append((lo, hi, len(batch.encodings)))
        return real(batch, lo, hi)

    monkeypatch.setattr(explain_module, "_explain_part", spy)
    return calls


@pytest.mark.parametrize("kernel", ["intersection", "exp_chi2"])
@pytest.mark.parametrize("target", [None, "label", "list"])
def test_one_pass_equals_the_stages_on_one_and_two_threads(scenes, kernel, target, monkeypatch):
    train, y, test = scenes
    clf = BoWClassifier(step=4, vocabulary_size=16, random_state=0, kernel=kernel).fit(train, y)
    target = {None: None, "label": clf.classes_[0], "list": [clf.classes_[1], clf.classes_[0]]}[target]
    with forced_builds("serial"), limited_threads(1):
        reference = _staged(clf).explain(test, target=target)
    calls = _spy_parts(monkeypatch)
    with forced_builds("parallel"), limited_threads(2):
        two = clf.explain(test, target=target)
        fused = list(calls)
        staged_two = _staged(clf).explain(test, target=target)
    with limited_threads(1):
        one = clf.explain(test, target=target)
    _assert_same_maps(two, reference)
    _assert_same_maps(staged_two, reference)
    _assert_same_maps(one, reference)
    # the fused pass ran on two threads: 13 images in 3 parts of 4, 4 and 5 (two per thread, at
    # least four images each), each decomposed as a batch of its own, and no part was explained
    # again (its own decision values were the whole batch's)
    assert sorted(fused) == [(0, 4, 4), (0, 4, 4), (0, 5, 5)]


def test_parts_of_every_size_give_the_same_maps(coins, monkeypatch):
    images, y = coins
    clf = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, random_state=0, kernel="rbf").fit(images, y)
    test = images[::2] + images[1::3]  # 35 images
    with limited_threads(1):
        reference = clf.explain(test, target=[2, 0, 1])
    for min_part, per_thread in [(4, 2), (1, 8), (3, 3), (9, 1)]:
        monkeypatch.setattr(forward_module, "MIN_PART", min_part)
        monkeypatch.setattr(forward_module, "PARTS_PER_THREAD", per_thread)
        calls = _spy_parts(monkeypatch)
        with forced_builds("parallel"), limited_threads(2):
            for target in (None, [2, 0, 1]):
                got = clf.explain(test, target=target)
                _assert_same_maps(got, reference if target else _staged(clf).explain(test))
        monkeypatch.undo()
        sizes = [c[1] for c in calls if c[0] == 0 and c[1] == c[2]]
        count = min(2 * per_thread, len(test) // min_part)
        assert sum(sizes) == 2 * len(test) and len(sizes) == 2 * count, (min_part, per_thread, sizes)


@pytest.mark.parametrize("classes", [2, 3])
def test_a_part_whose_decision_differs_in_a_bit_is_explained_again(scenes, coins, classes, monkeypatch):
    if classes == 2:
        train, y, test = scenes
        clf = BoWClassifier(step=4, vocabulary_size=16, random_state=0).fit(train, y)
    else:
        images, y = coins
        clf = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, random_state=0).fit(images, y)
        test = images[::3]
    with limited_threads(1):
        reference = clf.explain(test)
    real = type(clf).decision_from_bows

    def shaken(self, X):
        # a part's rows (fewer than the batch) round otherwise: the last bit of one score moves and,
        # with three classes, the columns turn (another predicted class, other maps)
        decision = real(self, X)
        if len(X) < len(test):
            decision = decision[:, ::-1].copy() if decision.shape[1] > 1 else decision
            decision[0, 0] = np.nextafter(decision[0, 0], np.inf)
        return decision

    monkeypatch.setattr(type(clf), "decision_from_bows", shaken)
    calls = _spy_parts(monkeypatch)
    with forced_builds("parallel"), limited_threads(2):
        got = clf.explain(test)
    _assert_same_maps(got, reference)
    again = [c for c in calls if c[2] == len(test)]  # explained again from the whole batch's values
    assert again and all(c[1] - c[0] < len(test) for c in again)


def test_a_random_state_instance_still_runs_as_one_part(scenes, monkeypatch):
    train, y, test = scenes
    clf = BoWClassifier(step=4, vocabulary_size=16, random_state=0, kernel="exp_chi2").fit(train, y)
    with forced_builds("serial"), limited_threads(1):
        reference = clf.explain(test, random_state=np.random.RandomState(5))
    calls = _spy_parts(monkeypatch)
    with forced_builds("parallel"), limited_threads(2):
        got = clf.explain(test, random_state=np.random.RandomState(5))
    _assert_same_maps(got, reference)
    assert calls == [(0, len(test), len(test))]  # the whole batch in one call, after its forward pass


def test_errors_and_warnings_are_those_of_the_stages(scenes):
    train, y, test = scenes
    clf = BoWClassifier(step=4, vocabulary_size=16, random_state=0).fit(train, y)
    images = list(test) * 2

    def changed(**images_at):  # the batch with some images replaced
        return [images_at.get(f"i{k}", im) for k, im in enumerate(images)]

    with_nan = images[9].copy()
    with_nan[3, 4] = np.nan
    bad, huge = changed(i9=with_nan), changed(i17=images[17] * 1e101)
    loud = changed(i11=images[11] * 255.0, i20=images[20] * 255.0)
    with forced_builds("parallel"), limited_threads(2):
        with pytest.raises(ValueError, match="image 9 .*non-finite|non-finite.*image 9") as info:
            clf.explain(bad)
        assert info.value.__context__ is None and info.value.__cause__ is None
        # a bad image comes before a bad target, as the stages check them
        with pytest.raises(ValueError, match="image 9"):
            clf.explain(bad, target="no such class")
        with pytest.raises(ValueError, match="unknown target class"):
            clf.explain(images, target="no such class")
        with pytest.raises(ValueError, match="empty list"):
            clf.explain(images, target=[])
        with pytest.raises(ValueError, match="image 17 has pixel values up to"):
            clf.explain(huge)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = clf.explain(loud)
    ours = [w for w in caught if "DenseSIFT expects" in str(w.message)]
    assert len(ours) == 1 and str(ours[0].message).startswith("image 11 ") and ours[0].filename == __file__
    with limited_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_same_maps(got, clf.explain(loud))


def test_verbose_one_pass_reports_every_image(scenes, capsys):
    train, y, test = scenes
    clf = BoWClassifier(step=4, vocabulary_size=16, random_state=0).fit(train, y)
    clf.set_params(verbose=True)
    with forced_builds("parallel"), limited_threads(2):
        clf.explain(test)
    err = capsys.readouterr().err
    assert f"explained {len(test)}/{len(test)} images" in err
    assert f"extracted, encoded and explained {len(test)} images" in err
