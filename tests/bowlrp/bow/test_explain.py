"""End-to-end explanations of fitted BoWClassifiers on real and generated images (SPEC §2).

The decisive numbers: for sum-decomposable kernels the pixel map sums to ``decision_function`` to 1e-9
(relative); for the Taylor kernels the residual is reported and consistent; the explained class's objects
get positive relevance and the other class's objects negative relevance; no map contains NaN.
"""

from __future__ import annotations

import cv2
import joblib
import numpy as np
import pytest
from skimage import data as skdata
from sklearn.exceptions import NotFittedError

from bowlrp.bow.classifier import BoWClassifier
from bowlrp.bow.decompose import KernelExpansion, bow_relevance, explain_tiles, find_root, tile_boxes
from bowlrp.heatmap import Heatmap

EXACT = ["linear", "intersection", "chi2", "hellinger"]
TAYLOR = ["exp_chi2", "rbf"]


@pytest.fixture(scope="module")
def faces():
    """scikit-image's lfw_subset: 100 faces then 100 non-faces, 25 x 25 (real photographs)."""
    images = skdata.lfw_subset()
    y = np.array([1] * 100 + [0] * 100)
    return list(images[::4]), y[::4], list(images[1::8]), y[1::8]


_FITTED = {}


def fitted(kernel, faces):
    """One classifier per kernel for the whole module (fits take about a second each)."""
    if kernel not in _FITTED:
        X, y = faces[0], faces[1]
        _FITTED[kernel] = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, kernel=kernel,
                                        gamma="auto", random_state=0).fit(X, y)
    return _FITTED[kernel]


@pytest.fixture(scope="module")
def textures():
    """A 3-class, 2-channel problem on real textures: crops of brick, grass and gravel photographs."""
    rng = np.random.default_rng(0)
    sources = [skdata.brick(), skdata.grass(), skdata.gravel()]
    images, labels = [], []
    for label, src in enumerate(sources):
        for _ in range(12):
            y0, x0 = rng.integers(0, src.shape[0] - 40), rng.integers(0, src.shape[1] - 40)
            images.append(src[y0:y0 + 40, x0:x0 + 40])
            labels.append(["brick", "grass", "gravel"][label])
    labels = np.array(labels)
    clf = BoWClassifier(step=4, bin_sizes=(2, 4), vocabulary_size=12, p=3.0, channel_weights=(1.0, 0.5),
                        kernel="intersection", random_state=0).fit(images[::2], labels[::2])
    return clf, images[1::2], labels[1::2]


def relative_gap(total, score):
    return abs(total - score) / max(1.0, abs(score))


# ====================================================================================================
# conservation against decision_function
# ====================================================================================================
@pytest.mark.parametrize("kernel", EXACT)
def test_exact_kernels_conserve_end_to_end(kernel, faces):
    clf = fitted(kernel, faces)
    images = faces[2]
    decision = clf.decision_function(images)
    for target, sign in ((clf.classes_[1], 1.0), (clf.classes_[0], -1.0)):
        maps = clf.explain(images, target=target)
        assert len(maps) == len(images)
        for h, f in zip(maps, decision):
            assert isinstance(h, Heatmap)
            assert h.score == sign * f  # the very number decision_function returns
            assert relative_gap(h.relevance.sum(), h.score) <= 1e-9
            assert abs(h.residual) <= 1e-9 * max(1.0, abs(h.score))
            sums = h.extras["level_sums"]
            for level in ("bow", "features", "pixels"):
                assert relative_gap(sums[level], h.score) <= 1e-9
            assert h.method == f"bow-lrp/{kernel}"
            assert h.target == target
            assert np.all(np.isfinite(h.relevance))


def test_multiclass_multichannel_conserves_for_every_class(textures):
    clf, images, labels = textures
    assert clf.score(images, labels) > 0.6
    decision = clf.decision_function(images)  # (n, 3)
    maps = clf.explain(images, target=list(clf.classes_))
    assert len(maps) == len(images) and all(len(m) == 3 for m in maps)
    for i, per_class in enumerate(maps):
        for c, h in enumerate(per_class):
            assert h.target == clf.classes_[c]
            assert h.score == decision[i, c]
            assert relative_gap(h.relevance.sum(), h.score) <= 1e-9
            # features of both channels are there, each with its geometry
            ex = h.extras
            assert set(np.unique(ex["feature_channel"]).tolist()) == {0, 1}
            assert ex["feature_relevance"].shape == ex["feature_support"].shape
            assert ex["feature_centers"].shape == (ex["feature_relevance"].size, 2)
            assert ex["bow_relevance"].shape == (clf.support_vectors_.shape[1],)
            assert ex["channel_slices"].tolist() == [[s.start, s.stop] for s in clf.channel_slices_]
            # Step 3 of the batched glue is Eq 24 of the array-level function
            f = KernelExpansion(clf.kernel, clf.support_vectors_, clf.dual_coef_[c], clf.intercept_[c],
                                channel_slices=clf.channel_slices_, channel_weights=clf.channel_weights_)
            np.testing.assert_allclose(ex["bow_relevance"], bow_relevance(f, ex["bow"])[0], rtol=1e-12,
                                       atol=1e-15)


def test_max_pooling_and_other_mappings_conserve(faces):
    X, y, images, _ = faces
    for kw in (dict(p=np.inf, mapping="rank"), dict(p=2.0, mapping="soft"), dict(p=1.0, mapping="hard")):
        clf = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=8, random_state=0, **kw).fit(X, y)
        for h, f in zip(clf.explain(images[:6], target=1), clf.decision_function(images[:6])):
            assert h.score == f
            assert relative_gap(h.relevance.sum(), f) <= 1e-9


# ====================================================================================================
# Taylor kernels
# ====================================================================================================
@pytest.mark.parametrize("kernel", TAYLOR)
def test_taylor_kernels_report_root_and_residual(kernel, faces):
    clf = fitted(kernel, faces)
    images = faces[2][:8]
    decision = clf.decision_function(images)
    maps = clf.explain(images, target=1, random_state=0)
    for h, f in zip(maps, decision):
        assert h.score == f
        taylor = h.extras["taylor"]
        assert taylor["bracketed"] == 1
        assert abs(taylor["f_root"]) <= 1e-8
        assert taylor["root"].shape == (clf.support_vectors_.shape[1],)
        assert np.all(taylor["root"] >= 0)
        # the reported residual is exactly what the pixels do not explain, and it is the Taylor
        # remainder: the lower steps conserve what Step 3 hands them
        assert h.residual == pytest.approx(f - h.relevance.sum(), abs=1e-12)
        assert h.residual == pytest.approx(taylor["residual"], abs=1e-9 * max(1.0, abs(f)))
        assert np.all(np.isfinite(h.relevance))
    # seeded: the same call gives the same maps
    again = clf.explain(images, target=1, random_state=0)
    for a, b in zip(maps, again):
        np.testing.assert_array_equal(a.relevance, b.relevance)


def test_taylor_maps_do_not_depend_on_the_batch(faces):
    # n_candidates below the number of opposite-sign training BoWs, so the seeded draw matters
    clf = fitted("rbf", faces)
    images = faces[2][:5]
    batch = clf.explain(images, target=1, n_candidates=3, random_state=7)
    for image, h in zip(images, batch):
        alone = clf.explain([image], target=1, n_candidates=3, random_state=7)[0]
        np.testing.assert_array_equal(alone.relevance, h.relevance)
        np.testing.assert_array_equal(alone.extras["taylor"]["root"], h.extras["taylor"]["root"])


def test_searching_all_candidates_never_worsens_the_best_residual(faces):
    # with n_candidates above the training-set size every opposite-sign candidate is bisected, a
    # superset of any single draw, so the best |residual| can only be smaller or equal
    clf = fitted("exp_chi2", faces)
    images = faces[2][:6]
    few = clf.explain(images, target=1, n_candidates=1, random_state=0)
    many = clf.explain(images, target=1, n_candidates=10_000, random_state=0)
    for a, b in zip(few, many):
        assert abs(b.extras["taylor"]["residual"]) <= abs(a.extras["taylor"]["residual"]) + 1e-12


# ====================================================================================================
# targets, reuse of features, errors
# ====================================================================================================
def test_target_none_explains_the_predicted_class(faces):
    clf = fitted("intersection", faces)
    images = faces[2]
    predicted = clf.predict(images)
    maps = clf.explain(images)
    assert [h.target for h in maps] == predicted.tolist()
    assert all(h.score >= 0 or h.target == clf.classes_[0] for h in maps)


def test_binary_negative_class_is_the_negated_map(faces):
    clf = fitted("chi2", faces)
    images = faces[2][:5]
    pos = clf.explain(images, target=1)
    neg = clf.explain(images, target=0)
    for a, b in zip(pos, neg):
        np.testing.assert_array_equal(b.relevance, -a.relevance)
        assert b.score == -a.score


@pytest.mark.parametrize("kernel", TAYLOR)
def test_binary_taylor_negative_class_has_the_same_roots_and_negated_values(kernel, faces):
    # -f has the roots of f; its Taylor relevance and residual are the exact negations, whether the
    # classes are asked for one by one, together, or come from the prediction
    clf = fitted(kernel, faces)
    images = faces[2][:6]
    pos = clf.explain(images, target=1)
    neg = clf.explain(images, target=0)
    both = clf.explain(images, target=[0, 1])
    predicted = clf.explain(images)
    for i, (a, b) in enumerate(zip(pos, neg)):
        np.testing.assert_array_equal(b.relevance, -a.relevance)
        np.testing.assert_array_equal(b.extras["taylor"]["root"], a.extras["taylor"]["root"])
        assert b.extras["taylor"]["f_root"] == -a.extras["taylor"]["f_root"] and b.residual == -a.residual
        np.testing.assert_array_equal(both[i][0].relevance, b.relevance)
        np.testing.assert_array_equal(both[i][1].relevance, a.relevance)
        want = a if predicted[i].target == clf.classes_[1] else b
        np.testing.assert_array_equal(predicted[i].relevance, want.relevance)


def test_list_of_targets_extracts_features_once(faces, monkeypatch):
    clf = fitted("intersection", faces)
    calls = []
    original = clf.extract_features
    monkeypatch.setattr(clf, "extract_features", lambda images: calls.append(len(images)) or original(images))
    images = faces[2][:4]
    maps = clf.explain(images, target=[1, 0])
    assert calls == [4]
    assert len(maps) == 4 and all(len(m) == 2 and [h.target for h in m] == [1, 0] for m in maps)
    single = clf.explain(images, target=0)
    for m, s in zip(maps, single):
        np.testing.assert_array_equal(m[1].relevance, s.relevance)


def test_string_labels_accept_labels_and_indices(textures):
    clf, images, _ = textures
    by_label = clf.explain(images[:2], target="grass")
    by_index = clf.explain(images[:2], target=1)
    for a, b in zip(by_label, by_index):
        assert a.target == b.target == "grass"
        np.testing.assert_array_equal(a.relevance, b.relevance)
    with pytest.raises(ValueError, match="unknown target class 'sand'"):
        clf.explain(images[:1], target="sand")


def test_explain_rejects_bad_input(faces):
    clf = fitted("intersection", faces)
    with pytest.raises(ValueError, match="unknown target class 7"):
        clf.explain(faces[2][:1], target=7)
    with pytest.raises(ValueError, match="empty"):
        clf.explain([], target=1)
    with pytest.raises(ValueError, match="empty list"):
        clf.explain(faces[2][:1], target=[])
    with pytest.raises(ValueError, match="NaN"):
        clf.explain([np.full((25, 25), np.nan)])
    with pytest.raises(NotFittedError):
        BoWClassifier().explain(faces[2][:1])


def test_flat_and_noise_images_never_give_nan(faces):
    clf = fitted("hellinger", faces)
    rng = np.random.default_rng(0)
    images = [np.zeros((25, 25)), np.full((30, 27), 0.7), rng.random((25, 31)), np.ones((25, 25, 3))]
    for h in clf.explain(images) + clf.explain(images, target=0):
        assert np.all(np.isfinite(h.relevance))
        assert relative_gap(h.relevance.sum(), h.score) <= 1e-9


def test_explain_is_identical_after_joblib_round_trip(faces, tmp_path):
    clf = fitted("intersection", faces)
    path = tmp_path / "clf.joblib"
    joblib.dump(clf, path)
    loaded = joblib.load(path)
    for a, b in zip(clf.explain(faces[2][:3]), loaded.explain(faces[2][:3])):
        np.testing.assert_array_equal(a.relevance, b.relevance)
        assert a.score == b.score


# ====================================================================================================
# tiles (Fig 6)
# ====================================================================================================
def test_tile_boxes_cover_the_image():
    boxes = tile_boxes((37, 50), 16, 10)
    cover = np.zeros((37, 50), int)
    for y0, x0, y1, x1 in boxes:
        assert (y1 - y0, x1 - x0) == (16, 16)
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    assert boxes[:, 2].max() == 37 and boxes[:, 3].max() == 50


def test_tiles_average_maps_and_each_tile_conserves(faces):
    clf = fitted("intersection", faces)
    image = skdata.astronaut()[60:110, 170:230]  # 50 x 60 real photo (face region), RGB
    h = explain_tiles(clf, image, tile=25, stride=12, target=1)
    assert h.relevance.shape == image.shape[:2]
    assert h.score is None and h.method == "bow-lrp/intersection/tiles"
    boxes = h.extras["tile_boxes"]
    crops = [image[y0:y1, x0:x1] for y0, x0, y1, x1 in boxes]
    maps = clf.explain(crops, target=1)
    np.testing.assert_array_equal(h.extras["tile_scores"], clf.decision_function(crops))
    total = np.zeros(image.shape[:2])
    for (y0, x0, y1, x1), m in zip(boxes, maps):
        assert relative_gap(m.relevance.sum(), m.score) <= 1e-9
        total[y0:y1, x0:x1] += m.relevance
    np.testing.assert_allclose(h.relevance, total / h.extras["coverage"], rtol=1e-12, atol=1e-15)
    assert np.all(np.abs(h.extras["tile_residuals"]) <= 1e-9 * np.maximum(1, np.abs(h.extras["tile_scores"])))


# ====================================================================================================
# sign test on generated scenes
# ====================================================================================================
def _scene(rng, kinds, size=64):
    """Striped discs on a smooth noise texture; 'vertical' and 'horizontal' differ only in stripe
    orientation, which fixed-orientation SIFT sees directly. Returns the image and one mask per kind."""
    image = cv2.GaussianBlur(rng.normal(0.5, 0.08, (size, size)), (0, 0), 1.5)
    masks = {"vertical": np.zeros((size, size), bool), "horizontal": np.zeros((size, size), bool)}
    yy, xx = np.mgrid[:size, :size]
    for kind, cell in zip(kinds, rng.permutation(4)):
        cy = 16 + 32 * (cell // 2) + int(rng.integers(-3, 4))
        cx = 16 + 32 * (cell % 2) + int(rng.integers(-3, 4))
        disc = np.zeros((size, size), np.uint8)
        cv2.circle(disc, (cx, cy), int(rng.integers(9, 13)), 1, -1)
        coord = xx if kind == "vertical" else yy
        stripes = 0.5 + 0.4 * np.sign(np.sin(2 * np.pi * coord / rng.uniform(4, 7) + rng.uniform(0, 6.3)))
        image[disc > 0] = stripes[disc > 0]
        masks[kind] |= disc > 0
    return np.clip(image, 0, 1), masks


def test_sign_on_generated_scenes():
    rng = np.random.default_rng(0)
    train, labels = [], []
    for k in range(40):
        kind = "vertical" if k % 2 else "horizontal"
        train.append(_scene(rng, [kind] * int(rng.integers(1, 3)))[0])
        labels.append(["horizontal", "vertical"][k % 2])
    # test scenes hold one object of each class
    test = [_scene(rng, ["vertical", "horizontal"]) for _ in range(12)]
    clf = BoWClassifier(step=4, bin_sizes=(4,), vocabulary_size=32, random_state=0).fit(train, labels)
    assert clf.score(train, labels) == 1.0
    for explained, other in (("vertical", "horizontal"), ("horizontal", "vertical")):
        maps = clf.explain([img for img, _ in test], target=explained)
        for h, (_, masks) in zip(maps, test):
            on_own = h.relevance[masks[explained]].mean()
            on_other = h.relevance[masks[other]].mean()
            background = np.abs(h.relevance[~(masks[explained] | masks[other])]).mean()
            assert on_own > 0 > on_other
            # (the background near objects is touched by their features' supports, hence only 2x)
            assert min(on_own, -on_other) > 2 * background


def test_heatmaps_with_all_extras_save_and_load(faces, tmp_path):
    clf = fitted("exp_chi2", faces)
    h = clf.explain(faces[2][:1], target=1)[0]
    path = h.save(tmp_path / "h.npz")
    back = Heatmap.load(path)
    np.testing.assert_array_equal(back.relevance, h.relevance)
    assert back.score == h.score and back.residual == h.residual and back.method == h.method
    for key in ("bow_relevance", "feature_relevance", "feature_centers", "feature_boxes"):
        np.testing.assert_array_equal(back.extras[key], h.extras[key])
    np.testing.assert_array_equal(back.extras["taylor"]["root"], h.extras["taylor"]["root"])
    assert back.extras["taylor"]["f_root"] == h.extras["taylor"]["f_root"]


# ====================================================================================================
# the Taylor machinery on fitted models and real BoW vectors
# ====================================================================================================
def _expansion(clf, output=0):
    return KernelExpansion(clf.kernel, clf.support_vectors_, clf.dual_coef_[output], clf.intercept_[output],
                           gamma=clf.gamma_, channel_slices=clf.channel_slices_,
                           channel_weights=clf.channel_weights_)


@pytest.mark.parametrize("kernel", TAYLOR)
def test_fitted_expansion_matches_decision_function_and_its_gradient(kernel, faces):
    clf = fitted(kernel, faces)
    f = _expansion(clf)
    X = clf.transform(faces[2][:6])
    np.testing.assert_allclose(f.decision(X), clf.decision_function(faces[2][:6]), rtol=1e-12, atol=1e-12)
    z = 0.5 * (X[0] + clf.train_bows_.mean(axis=0))  # a real BoW-like point, mostly positive
    g = f.gradient(z)
    h = 1e-7
    inside = np.flatnonzero(z > 10 * h)  # central differences must stay in the domain z >= 0
    assert inside.size > z.size // 2
    for d in inside[:25]:
        e = np.zeros_like(z)
        e[d] = h
        fd = (f.decision(z + e)[0] - f.decision(z - e)[0]) / (2 * h)
        assert abs(g[d] - fd) <= 1e-5 * max(abs(g[d]), 1e-3 * np.abs(g).max())


def test_linear_model_through_the_taylor_path_has_zero_residual(faces):
    clf = fitted("linear", faces)
    f = _expansion(clf)
    for x in clf.transform(faces[2][:5]):
        res = find_root(f, x, clf.train_bows_, random_state=0)
        assert res.bracketed and abs(res.f_root) <= 1e-8
        assert abs(res.residual) <= 1e-9 * max(1.0, abs(res.score))


def test_verbose_explain_reports_progress(faces, capsys):
    clf = fitted("intersection", faces)
    clf.set_params(verbose=True)
    try:
        clf.explain(faces[2][:3])
    finally:
        clf.set_params(verbose=False)
    assert "explained 3/3 images" in capsys.readouterr().err


# ====================================================================================================
# one registry entry adds a kernel: fit, decide and explain with a registered toy kernel
# ====================================================================================================
def _cauchy_channel(X, Y, gamma):
    d2 = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    return 1.0 / (1.0 + gamma * d2)


def _cauchy_gradient(z, S, gamma):
    k = 1.0 / (1.0 + gamma * ((S - z[None, :]) ** 2).sum(1))
    return 2.0 * gamma * (k**2)[:, None] * (S - z[None, :])


@pytest.fixture
def toy_kernels():
    from bowlrp.bow.kernels import Kernel, register_kernel, unregister_kernel

    register_kernel(Kernel("double_min", exact=True, formula="sum_d 2 min(x_d, y_d)",
                           term=lambda x, y: 2.0 * np.minimum(x, y)))
    register_kernel(Kernel("cauchy", exact=False, signed=True, uses_gamma=True,
                           formula="1 / (1 + gamma ||x - y||^2)", channel=_cauchy_channel,
                           gradient=_cauchy_gradient))
    yield
    unregister_kernel("double_min")
    unregister_kernel("cauchy")


def test_a_registered_kernel_fits_decides_and_explains(faces, toy_kernels):
    X, y, Xt, _ = faces
    # exact toy kernel: twice the intersection kernel, explained by Eq 24, conserves to 1e-9
    clf = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, kernel="double_min", C=0.5,
                        random_state=0).fit(X, y)
    ref = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, kernel="intersection", C=1.0,
                        random_state=0).fit(X, y)
    B = clf.transform(Xt[:6])
    np.testing.assert_allclose(clf.decision_function(Xt[:6]), ref.decision_function(Xt[:6]), rtol=1e-6,
                               atol=1e-6)  # 2 min with C/2 is the same SVM as min with C
    want = 2.0 * np.minimum(B[:, None, :], clf.support_vectors_[None]).sum(-1) @ clf.dual_coef_[0] \
        + clf.intercept_[0]
    np.testing.assert_allclose(clf.decision_function(Xt[:6]), want, rtol=1e-12, atol=1e-12)
    for h in clf.explain(Xt[:6], target=1):
        assert h.method == "bow-lrp/double_min" and "taylor" not in h.extras
        assert relative_gap(h.relevance.sum(), h.score) <= 1e-9
    # Taylor toy kernel: a root with |f(x0)| <= 1e-8 and the residual reported
    clf = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, kernel="cauchy", gamma="auto",
                        random_state=0).fit(X, y)
    f = clf.kernel_expansion(1)
    z = clf.train_bows_[0]
    g = f.gradient(z)
    e = np.zeros_like(z)
    e[3] = 1e-6
    assert g[3] == pytest.approx((f.decision(z + e)[0] - f.decision(z - e)[0]) / 2e-6, rel=1e-5, abs=1e-9)
    for h in clf.explain(Xt[:4], target=1):
        taylor = h.extras["taylor"]
        assert taylor["bracketed"] == 1 and abs(taylor["f_root"]) <= 1e-8
        assert h.residual == pytest.approx(h.score - h.relevance.sum(), abs=1e-12)


def test_registry_refuses_incomplete_or_built_in_entries():
    from bowlrp.bow.kernels import REGISTRY, Kernel, register_kernel, unregister_kernel

    with pytest.raises(ValueError, match="built-in"):
        register_kernel(Kernel("rbf", exact=False))
    with pytest.raises(ValueError, match="term"):
        register_kernel(Kernel("no_term", exact=True))
    with pytest.raises(ValueError, match="gradient"):
        register_kernel(Kernel("no_grad", exact=False, channel=_cauchy_channel))
    with pytest.raises(ValueError, match="no registered kernel"):
        unregister_kernel("never_registered")
    assert "no_term" not in REGISTRY and "no_grad" not in REGISTRY
    with pytest.raises(ValueError, match="unknown kernel"):
        BoWClassifier(kernel="poly").fit([np.zeros((16, 16))] * 2, [0, 1])


def test_readme_registry_example_runs_as_written():
    import pathlib
    import re

    from bowlrp.bow.kernels import REGISTRY, unregister_kernel

    readme = (pathlib.Path(__file__).resolve().parents[3] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "register_kernel(" in b]
    assert len(blocks) == 1
    images = list(skdata.lfw_subset())
    scope = {"images": images, "y": [1] * 100 + [0] * 100, "BoWClassifier": BoWClassifier}
    try:
        exec(compile(blocks[0], "README-registry", "exec"), scope)
        assert "double_min" in REGISTRY
    finally:
        unregister_kernel("double_min")


# ====================================================================================================
# threads: every number is the same on one thread and on two (Steps 2 + 1 and the root search run
# their per-image work on threads; the kernels' two builds are forced so that small batches use them)
# ====================================================================================================
def _flat_numbers(maps):
    """Every number of a list of (lists of) heatmaps, in a fixed order."""
    out = []
    for h in (m for per in maps for m in (per if isinstance(per, list) else [per])):
        out += [h.relevance, np.array([h.score, h.residual])]
        for key in sorted(h.extras):
            value = h.extras[key]
            if isinstance(value, dict):
                out += [np.asarray(value[k], dtype=np.float64) for k in sorted(value)]
            elif not isinstance(value, str):
                out.append(np.asarray(value))
    return out


@pytest.mark.parametrize("case", ["intersection", "exp_chi2", "rbf", "textures"])
def test_explanations_do_not_depend_on_the_thread_count(case, faces, textures):
    from bowlrp.jit import forced_builds, limited_threads

    if case == "textures":  # 3 classes, 2 channels, p = 3, every class of every image
        clf, images, _ = textures
        run = lambda: clf.explain(images, target=list(clf.classes_))  # noqa: E731
    else:
        clf, images = fitted(case, faces), faces[2]
        run = lambda: clf.explain(images, n_candidates=6, n_roots=2, random_state=1)  # noqa: E731
    with forced_builds("serial"), limited_threads(1):
        one = _flat_numbers(run())
    with forced_builds("parallel"), limited_threads(2):
        two = _flat_numbers(run())
    assert len(one) == len(two) > 100
    for a, b in zip(one, two):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_a_class_asked_for_twice_gets_maps_of_its_own(faces):
    """``target=[1, 1]``: two equal heatmaps that share no array, so editing one leaves the other."""
    clf = fitted("intersection", faces)
    maps = clf.explain(faces[2][:2], target=[1, 1])
    for first, second in maps:
        np.testing.assert_array_equal(first.relevance, second.relevance)
        np.testing.assert_array_equal(first.extras["feature_relevance"], second.extras["feature_relevance"])
        assert not np.shares_memory(first.extras["feature_relevance"], second.extras["feature_relevance"])
        assert not np.shares_memory(first.relevance, second.relevance)


def test_every_map_owns_its_pixels_whatever_the_threads(faces):
    """Each map is an allocation of its own (the batch kernel allocates every map, none is a view of
    a batch buffer): a map kept alone keeps no other image's pixels alive."""
    from bowlrp.jit import forced_builds, limited_threads

    clf = fitted("intersection", faces)
    for kind, threads in (("serial", 1), ("parallel", 2)):
        with forced_builds(kind), limited_threads(threads):
            maps = clf.explain(faces[2][:10])
        for m in maps:
            r = m.relevance
            assert r.flags.c_contiguous and r.flags.writeable
            # not a view of a larger array: no base, or numba's record of the memory it allocated,
            # which starts where the map starts
            assert r.base is None or (not isinstance(r.base, np.ndarray)
                                      and r.base.data == r.__array_interface__["data"][0])
        assert not any(np.shares_memory(a.relevance, b.relevance)
                       for k, a in enumerate(maps) for b in maps[:k])


def test_a_random_state_instance_draws_in_image_order_on_threads(faces):
    # the batch runs in parts on threads only when every image's draw is its own (an int seed); a
    # RandomState instance is consumed image after image, so its maps are those of one thread
    from bowlrp.jit import forced_builds, limited_threads

    clf, images = fitted("exp_chi2", faces), faces[2]
    with forced_builds("serial"), limited_threads(1):
        one = _flat_numbers(clf.explain(images, n_candidates=3, random_state=np.random.RandomState(4)))
    with forced_builds("parallel"), limited_threads(2):
        two = _flat_numbers(clf.explain(images, n_candidates=3, random_state=np.random.RandomState(4)))
        other = _flat_numbers(clf.explain(images, n_candidates=3, random_state=np.random.RandomState(5)))
    assert len(one) == len(two) > 100
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(one, two))
    assert not all(np.array_equal(a, b) for a, b in zip(one, other))  # the draws matter here


@pytest.mark.parametrize("kernel", ["intersection", "exp_chi2"])
def test_explain_maps_equal_the_public_constructors(kernel, faces):
    """The maps are built without re-checking every pixel (Heatmap._trusted): each field must be the
    one the validating constructor gives for the same inputs, bit for bit and type for type."""
    clf, images = fitted(kernel, faces), faces[2][:6]
    for h, image in zip(clf.explain(images, target=[0, 1]), images):
        for m in h:
            public = Heatmap(m.relevance, score=m.score, target=m.target, method=m.method, image=image,
                             extras=m.extras)
            assert m.relevance.dtype == np.float64 and m.relevance.flags.c_contiguous
            assert np.array_equal(m.relevance, public.relevance) and np.array_equal(m.image, public.image)
            for name in ("score", "residual", "target", "method"):
                assert getattr(m, name) == getattr(public, name)
                assert type(getattr(m, name)) is type(getattr(public, name))


def test_an_overflowing_map_is_refused_by_name(faces, monkeypatch):
    """A non-finite pixel map (its level sum is not finite) goes through the checking constructor."""
    import bowlrp.bow.decompose.explain as explain_module

    real = explain_module.finish_batch

    def overflowing(*args, **kwargs):
        boxes, R2, R1, level = real(*args, **kwargs)
        R1[0][0, 0], level[0, 2] = np.inf, np.inf
        return boxes, R2, R1, level

    monkeypatch.setattr(explain_module, "finish_batch", overflowing)
    with pytest.raises(ValueError, match="non-finite"):
        fitted("intersection", faces).explain(faces[2][:2])


def test_kept_expansions_follow_the_fitted_model(faces):
    # explain keeps each fitted SVM's kernel expansions: a refit, a fitted value replaced or changed in
    # place must never explain with old ones (the numbers of a deep copy, which shares nothing kept)
    import copy

    X, y, Xt, _ = faces

    def same(a, b):
        pairs = zip(_flat_numbers(a), _flat_numbers(b))
        return all(u.shape == v.shape and np.array_equal(u, v) for u, v in pairs)

    clf = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, kernel="exp_chi2", gamma="auto",
                        random_state=0).fit(X, y)
    first = clf.explain(Xt[:4])
    clf.fit(X[5:], y[5:])  # refit in place: another SVM, other support vectors and scores
    fresh = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, kernel="exp_chi2", gamma="auto",
                          random_state=0).fit(X[5:], y[5:])
    assert same(clf.explain(Xt[:4]), fresh.explain(Xt[:4])) and not same(first, fresh.explain(Xt[:4]))
    # the candidates of the root search and their scores replaced on the same SVM
    fewer = copy.copy(fresh)
    fewer.train_bows_, fewer.train_scores_ = fresh.train_bows_[::2], fresh.train_scores_[::2]
    assert same(fewer.explain(Xt[:4]), copy.deepcopy(fewer).explain(Xt[:4]))
    # values changed in place: the intercept (copied into the expansion), the support vectors and the
    # coefficients (shared with it); an exact kernel's maps still sum to the new scores
    exact = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, kernel="intersection",
                          random_state=0).fit(X, y)
    for model in (fresh, exact):
        model.explain(Xt[:4])  # its expansions are kept now
        model.svm_.intercept_ += 0.5
        model.svm_.support_vectors_[0] *= 1.5
        model.svm_.dual_coef_[0, -1] *= 0.5
        assert same(model.explain(Xt[:4]), copy.deepcopy(model).explain(Xt[:4]))
    for h, score in zip(exact.explain(Xt[:4]), exact.decision_function(Xt[:4])):
        assert h.score == score and relative_gap(h.relevance.sum(), h.score) <= 1e-9
    # an expansion changed in place after a root search searches with its new values
    from bowlrp.bow.decompose import KernelExpansion
    from bowlrp.bow.decompose.taylor import find_roots

    f = fresh.kernel_expansion(fresh.classes_[1])
    B = fresh.transform(Xt[:3])
    find_roots(f, B, fresh.train_bows_, random_state=0)
    f.support_vectors *= 1.5
    f.intercept = f.intercept + 0.25
    g = KernelExpansion(f.kernel, f.support_vectors.copy(), f.coef.copy(), f.intercept, f.gamma,
                        f.channel_slices, f.channel_weights.copy())  # nothing kept
    for a, b in zip(find_roots(f, B, fresh.train_bows_, random_state=0),
                    find_roots(g, B, fresh.train_bows_, random_state=0)):
        assert np.array_equal(a.relevance, b.relevance) and np.array_equal(a.root, b.root)
