"""Tests of bowlrp.evaluation (SPEC section 4): region perturbation, AOPC and localization."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from bowlrp.evaluation import (
    aopc,
    boxes_to_masks,
    localization_scores,
    mask_fraction,
    perturbation_curves,
    plot_perturbation_curves,
    pointing_game,
    region_order,
    region_perturbation,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from bowlrp.heatmap import Heatmap


def _linear_model(w, bias=0.0):
    """f(x) = bias + sum(w * x): its exact relevance is w * x (gradient x input)."""
    return lambda X: bias + np.einsum("nhw,hw->n", np.asarray(X), w)


@pytest.fixture()
def linear_case():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(18, 18))
    X = rng.uniform(0, 1, size=(6, 18, 18))
    return w, X, _linear_model(w, bias=0.3), X * w


# ----------------------------------------------------------------------------- perturbation


def test_aopc_formula_by_hand():
    # three images, L = 2: AOPC = 1/(L+1) * mean_i sum_k (f(x0) - f(xk))
    s = np.array([[5.0, 3.0, 1.0], [2.0, 2.0, 0.0], [1.0, 2.0, 3.0]])
    by_hand = ((0 + 2 + 4) + (0 + 0 + 2) + (0 - 1 - 2)) / 3 / 3
    assert aopc(s) == pytest.approx(by_hand, abs=1e-15)


def test_one_aopc_computation_serves_curves_and_summaries(linear_case):
    # per image, mean and standard error come from one function; the curve's numbers are exactly those
    from bowlrp.evaluation import aopc_per_image, aopc_sem

    s = np.array([[5.0, 3.0, 1.0], [2.0, 2.0, 0.0], [1.0, 2.0, 3.0]])
    per = aopc_per_image(s)
    np.testing.assert_allclose(per, [6 / 3, 2 / 3, -3 / 3], rtol=1e-15)
    assert aopc_sem(s) == pytest.approx(per.std(ddof=1) / np.sqrt(3), rel=1e-15)
    assert aopc_sem(s[:1]) == 0.0
    w, X, model, R = linear_case
    curve = region_perturbation(model, X, R, region_size=3, perturbation="constant", value=0.0)
    np.testing.assert_array_equal(curve.aopc_per_image, aopc_per_image(curve.scores))
    assert curve.aopc == aopc(curve.scores) and curve.to_dict()["aopc_sem"] == aopc_sem(curve.scores)
    with pytest.raises(ValueError, match=r"\(n, L\+1\)"):
        aopc_per_image(np.ones(3))


def test_morf_with_true_relevance_is_greedy_optimal(linear_case):
    # constant-0 replacement on a linear model removes exactly the region sums of w*x, so MoRF's drop
    # after k steps is the sum of the k largest region sums: computable by hand, and no order does better
    w, X, model, R = linear_case
    r = 3
    curves = {
        o: region_perturbation(
            model, X, R, order=o, region_size=r, perturbation="constant", value=0.0, random_state=1
        )
        for o in ("morf", "lerf", "random")
    }
    L = curves["morf"].n_steps
    assert L == 36  # (18 / 3)^2 regions
    by_hand = []
    for x in X:
        sums = (x * w).reshape(6, r, 6, r).sum(axis=(1, 3)).ravel()
        drops = np.r_[0.0, np.cumsum(np.sort(sums)[::-1])]
        by_hand.append(drops.sum() / (L + 1))
    assert curves["morf"].aopc == pytest.approx(np.mean(by_hand), rel=1e-12)
    np.testing.assert_allclose(curves["morf"].scores[:, 0], model(X), rtol=1e-13)
    assert curves["morf"].aopc > curves["random"].aopc > curves["lerf"].aopc
    # every order ends with all regions replaced by zeros: the bias alone
    for c in curves.values():
        np.testing.assert_allclose(c.scores[:, -1], 0.3, atol=1e-12)
    # and the MoRF curve lies on or above every other (mean drop is greedy-maximal at each step)
    assert np.all(curves["morf"].mean_curve <= curves["random"].mean_curve + 1e-12)


def test_uniform_noise_is_shared_across_orders_and_batch_sizes(linear_case):
    w, X, model, R = linear_case
    kw = dict(region_size=6, perturbation="uniform", random_state=7)
    a = region_perturbation(model, X, R, order="morf", batch_size=5, **kw)
    b = region_perturbation(model, X, R, order="lerf", batch_size=64, **kw)
    c = region_perturbation(model, X, R, order="morf", batch_size=64, **kw)
    np.testing.assert_array_equal(a.scores, c.scores)  # batching does not change anything
    np.testing.assert_allclose(a.scores[:, -1], b.scores[:, -1], rtol=1e-12)  # same final noise image
    d = region_perturbation(model, X, R, order="morf", batch_size=64, **{**kw, "random_state": 8})
    assert not np.allclose(d.scores[:, 1:], a.scores[:, 1:])
    # generators and legacy RandomState objects are accepted and seed reproducibly
    for make in (np.random.default_rng, np.random.RandomState):
        e1 = region_perturbation(model, X, R, order="random", **{**kw, "random_state": make(3)})
        e2 = region_perturbation(model, X, R, order="random", **{**kw, "random_state": make(3)})
        np.testing.assert_array_equal(e1.scores, e2.scores)
    with pytest.raises(TypeError, match="random_state"):
        region_perturbation(model, X, R, **{**kw, "random_state": "seed"})


def test_noise_range_and_blur_replacements():
    X = np.full((1, 10, 10), 0.5)
    X[0, :, :5] = 0.0
    ident = lambda Z: np.asarray(Z).reshape(len(Z), -1)  # noqa: E731 (scores = all pixels)
    seen = []

    def spy(Z):
        seen.append(np.array(Z))
        return np.asarray(Z).sum(axis=(1, 2))

    R = np.arange(100.0).reshape(10, 10)
    region_perturbation(
        spy, X, R, region_size=10, perturbation="uniform", noise_range=(2.0, 3.0), random_state=0
    )
    flipped = seen[-1][0]
    assert flipped.min() >= 2.0 and flipped.max() <= 3.0
    seen.clear()
    region_perturbation(spy, X, R, region_size=10, perturbation="blur", blur_sigma=1.5)
    from scipy.ndimage import gaussian_filter

    np.testing.assert_allclose(seen[-1][0], gaussian_filter(X[0], 1.5, mode="reflect"), rtol=1e-13)
    assert ident(X).shape == (1, 100)


def test_rgb_constant_mean_and_multiclass_target():
    rng = np.random.default_rng(2)
    X = rng.uniform(size=(3, 8, 8, 3))
    W = rng.normal(size=(4, 8, 8, 3))
    model = lambda Z: np.einsum("nhwc,khwc->nk", np.asarray(Z), W)  # noqa: E731
    R = rng.normal(size=(3, 8, 8))
    c = region_perturbation(model, X, R, region_size=4, perturbation="constant", value="mean", target=2)
    np.testing.assert_allclose(c.scores[:, 0], model(X)[:, 2], rtol=1e-13)
    assert c.target.tolist() == [2, 2, 2]
    # after all regions are replaced the image is its mean colour everywhere
    flat = np.broadcast_to(X.mean(axis=(1, 2))[:, None, None, :], X.shape)
    np.testing.assert_allclose(c.scores[:, -1], model(flat)[:, 2], rtol=1e-12)
    auto = region_perturbation(model, X, R, region_size=4, perturbation="constant")
    assert auto.target.tolist() == model(X).argmax(axis=1).tolist()


def test_images_of_different_sizes_reach_the_model_as_a_list():
    rng = np.random.default_rng(3)
    X = [rng.uniform(size=(12, 15)), rng.uniform(size=(9, 20))]
    calls = []

    def model(batch):
        calls.append(type(batch))
        return np.array([im.sum() for im in batch])

    maps = [Heatmap(im.copy()) for im in X]  # Heatmap objects are accepted as they are
    c = region_perturbation(model, X, maps, region_size=3, perturbation="constant", regions_per_step=2)
    assert all(t is list for t in calls)
    # 4 x 5 = 20 regions -> 10 steps of 2 for the first image, 3 x 7 = 21 -> 11 for the second: L = 10
    assert c.n_steps == 10
    np.testing.assert_allclose(c.scores[:, 0], [X[0].sum(), X[1].sum()], rtol=1e-13)


def test_region_order_ties_and_borders():
    R = np.zeros((5, 5))
    R[4, 4] = 1.0  # the cropped corner region of a 3x3 grid
    assert region_order(R, "morf", region_size=3).tolist()[0] == 3
    assert region_order(R, "lerf", region_size=3).tolist() == [0, 1, 2, 3]
    a = region_order(R, "random", 1, random_state=0)
    assert sorted(a.tolist()) == list(range(25))
    np.testing.assert_array_equal(a, region_order(R, "random", 1, random_state=0))


def test_curve_summaries_and_plot(linear_case):
    w, X, model, R = linear_case
    curves = perturbation_curves(model, X, {"w*x": R, "-w*x": -R}, region_size=6, perturbation="constant")
    assert set(curves) == {
        ("w*x", "morf"),
        ("w*x", "lerf"),
        ("-w*x", "morf"),
        ("-w*x", "lerf"),
        ("random", "random"),
    }
    # negating the heatmap swaps MoRF and LeRF
    np.testing.assert_allclose(curves[("w*x", "morf")].scores, curves[("-w*x", "lerf")].scores)
    c = curves[("w*x", "morf")]
    assert c.aopc_by_step[-1] == pytest.approx(c.aopc)
    assert c.to_dict()["n_images"] == 6
    ax = plot_perturbation_curves(curves, normalize=True, title="t")
    assert len(ax.get_lines()) == 5


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"order": "best"}, ValueError, "order"),
        ({"perturbation": "zeros"}, ValueError, "perturbation"),
        ({"region_size": 0}, ValueError, "region_size"),
        ({"n_steps": 1000}, ValueError, "exceeds"),
        ({"target": 5}, ValueError, "out of range"),
        ({"value": [1.0, 2.0]}, ValueError, "broadcast"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    X = np.zeros((2, 6, 6))
    model = lambda Z: np.stack([np.asarray(Z).sum(axis=(1, 2))] * 3, axis=1)  # noqa: E731
    with pytest.raises(err, match=match):
        region_perturbation(
            model, X, np.ones((2, 6, 6)), **{"perturbation": "constant", "region_size": 3, **kwargs}
        )


def test_bad_inputs():
    X = np.zeros((2, 6, 6))
    good = lambda Z: np.asarray(Z).sum(axis=(1, 2))  # noqa: E731
    with pytest.raises(TypeError, match="callable"):
        region_perturbation("model", X, np.ones((2, 6, 6)))
    with pytest.raises(ValueError, match="heatmap 1 has shape"):
        region_perturbation(good, X, [np.ones((6, 6)), np.ones((5, 6))])
    with pytest.raises(ValueError, match="NaN"):
        region_perturbation(good, X, np.full((2, 6, 6), np.nan))
    with pytest.raises(ValueError, match="2 images"):
        region_perturbation(good, X, np.ones((3, 6, 6)))
    with pytest.raises(ValueError, match="model returned scores of shape"):
        region_perturbation(lambda Z: np.zeros(7), X, np.ones((2, 6, 6)))
    with pytest.raises(ValueError, match="NaN or inf scores"):
        region_perturbation(lambda Z: np.full(len(Z), np.nan), X, np.ones((2, 6, 6)))
    with pytest.raises(ValueError, match="heatmaps are required"):
        region_perturbation(good, X, None, order="morf")


def test_real_digits_linear_model_morf_beats_random():
    # real data: a linear classifier on scikit-learn's digits; its score minus the bias is exactly
    # sum(coef * x), so coef * x is a perfect explanation and must beat the random order
    from sklearn.datasets import load_digits
    from sklearn.linear_model import RidgeClassifier

    d = load_digits()
    X = d.images / 16.0
    clf = RidgeClassifier(alpha=1.0).fit(X.reshape(len(X), -1), d.target)
    model = lambda Z: clf.decision_function(np.asarray(Z).reshape(len(Z), -1))  # noqa: E731
    test = X[:40]
    pred = clf.predict(test.reshape(40, -1))
    R = test * clf.coef_[pred].reshape(40, 8, 8)
    kw = dict(region_size=2, perturbation="constant", value=0.0, target=pred, random_state=0)
    morf = region_perturbation(model, test, R, order="morf", **kw)
    rand = region_perturbation(model, test, None, order="random", **kw)
    lerf = region_perturbation(model, test, R, order="lerf", **kw)
    assert morf.aopc > rand.aopc + 0.3 and rand.aopc > lerf.aopc


# ----------------------------------------------------------------------------- localization


def test_mass_accuracy_on_known_masks():
    R = np.array([[[4.0, 0.0, -3.0], [1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]])
    m = np.zeros((1, 3, 3), bool)
    m[0, :2, :2] = True
    assert relevance_mass_accuracy(R, masks=m).tolist() == [7.0 / 10.0]
    # boxes give the same answer as the mask they describe
    assert relevance_mass_accuracy(R, boxes=[[[0, 0, 2, 2]]]).tolist() == [0.7]
    # no positive relevance at all: the heatmap points nowhere -> 0
    assert relevance_mass_accuracy(-np.abs(R), masks=m).tolist() == [0.0]
    assert mask_fraction(masks=m).tolist() == [4 / 9]


def test_rank_accuracy_and_pointing_game_with_ties():
    m = np.zeros((4, 4), bool)
    m[:2, :] = True  # half the image
    flat = np.zeros((4, 4))
    # a constant map scores chance level (expected value under random tie-breaking), not raster luck
    assert relevance_rank_accuracy(flat, masks=m).tolist() == [0.5]
    assert pointing_game(flat, masks=m).tolist() == [0.5]
    perfect = m * 1.0
    assert relevance_rank_accuracy(perfect, masks=m).tolist() == [1.0]
    assert pointing_game(perfect, masks=m).tolist() == [1.0]
    R = np.zeros((4, 4))
    R[3, 3], R[0, 0], R[0, 1] = 5.0, 4.0, 3.0  # top-8: 3 strict leaders (2 inside) + 5 of 13 tied zeros
    expected = (2 + 5 * 6 / 13) / 8
    assert relevance_rank_accuracy(R, masks=m)[0] == pytest.approx(expected, abs=1e-15)
    assert pointing_game(R, masks=m).tolist() == [0.0]
    assert pointing_game(R, masks=m, tolerance=2).tolist() == [1.0]


def test_localization_scores_and_errors():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(5, 10, 10)) < 0.3
    good = masks * 1.0 + 0.01 * rng.uniform(size=masks.shape)
    noise = rng.normal(size=masks.shape)
    s_good = localization_scores(good, masks=masks)
    s_noise = localization_scores(noise, masks=masks)
    assert s_good["mass_accuracy"] > 0.9 and s_good["pointing_game"] == 1.0
    assert s_good["chance"] == pytest.approx(masks.mean())
    assert s_noise["rank_accuracy"] < s_good["rank_accuracy"]
    with pytest.raises(ValueError, match="exactly one"):
        relevance_mass_accuracy(good)
    with pytest.raises(ValueError, match="mask 0 is empty"):
        relevance_mass_accuracy(good[:1], masks=np.zeros((1, 10, 10), bool))
    with pytest.raises(ValueError, match="mask 0 has shape"):
        pointing_game(good[:1], masks=np.ones((1, 9, 10), bool))
    with pytest.raises(ValueError, match="2-D"):
        relevance_mass_accuracy([np.ones((10, 10, 3))], masks=masks[:1])
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(good, masks=masks, tolerance=-1)
    assert boxes_to_masks([np.zeros((0, 4))], [(3, 3)])[0].sum() == 0


def test_localization_on_synthetic_scenes_oracle_vs_flat():
    from bowlrp.app.scenes import make_scenes

    s = make_scenes(8, size=48, positive_fraction=1.0, random_state=0)
    oracle = s.masks["polygon"] * 1.0
    assert relevance_mass_accuracy(oracle, masks=s.masks["polygon"]).min() == 1.0
    chance = mask_fraction(masks=s.masks["polygon"])
    uniform = np.ones_like(oracle)
    np.testing.assert_allclose(relevance_mass_accuracy(uniform, masks=s.masks["polygon"]), chance)
    np.testing.assert_allclose(relevance_rank_accuracy(uniform, masks=s.masks["polygon"]), chance)


def test_localization_with_images_of_different_sizes():
    # VOC-like: one heatmap per image, sizes differ, ground truth as boxes
    maps = [np.zeros((6, 8)), np.zeros((10, 4))]
    maps[0][1:3, 2:5] = 1.0
    maps[1][0, 0] = 1.0
    boxes = [np.array([[1, 2, 3, 5]]), np.array([[5, 0, 10, 4]])]
    s = localization_scores(maps, boxes=boxes)
    assert s["mass_accuracy"] == 0.5 and s["pointing_game"] == 0.5
    assert s["chance"] == pytest.approx((6 / 48 + 20 / 40) / 2)
    np.testing.assert_allclose(mask_fraction(boxes=boxes, shapes=[(6, 8), (10, 4)]), [6 / 48, 0.5])


@pytest.mark.parametrize("random_state", [None, "generator", 7])
def test_every_method_of_perturbation_curves_sees_the_same_noise(linear_case, random_state):
    """Two methods with the same heatmaps get the same curves whatever the seed is (with None or a
    Generator, each call used to draw a seed of its own)."""
    w, X, model, R = linear_case
    seed = np.random.default_rng(3) if random_state == "generator" else random_state
    curves = perturbation_curves(model, X, {"a": R, "b": R.copy()}, region_size=6, perturbation="uniform",
                                 include_random=False, random_state=seed)
    for order in ("morf", "lerf"):
        np.testing.assert_array_equal(curves[("a", order)].scores, curves[("b", order)].scores)
