"""The three decomposition steps of SPEC §2 as pure array functions (bowlrp.bow.decompose).

Every assertion here is one the SPEC lists: conservation of each step, Taylor gradients against central
finite differences, roots that are roots, the pooling invariances, the pixel step against a naive loop.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from skimage import data

from bowlrp.bow import _kernels
from bowlrp.bow.decompose import (
    KernelExpansion,
    bow_relevance,
    feature_relevance,
    find_root,
    pixel_relevance,
    taylor_relevance,
)
from bowlrp.bow.encoding import encode
from bowlrp.bow.features import DenseSIFT


# ----------------------------------------------------------------------------------------------------
# independent references (written from the SPEC formulas, not from the code under test)
# ----------------------------------------------------------------------------------------------------
def ref_kd(kernel, s, z):
    """Per-dimension kernel k_d(s, z) for broadcastable arrays."""
    if kernel == "linear":
        return s * z
    if kernel == "intersection":
        return np.minimum(s, z)
    if kernel == "chi2":
        den = s + z
        return np.divide(2 * s * z, den, out=np.zeros(np.broadcast(s, z).shape), where=den != 0)
    if kernel == "hellinger":
        return np.sqrt(s * z)
    raise AssertionError(kernel)


def ref_f(kernel, S, a, b, z, slices, beta, gamma=None):
    """f(z) = b + sum_i a_i sum_u beta_u k_u(S_i[u], z[u]) by explicit loops over SVs and channels."""
    total = b
    for i in range(len(S)):
        for sl, w in zip(slices, beta):
            s, zu = S[i, sl], z[sl]
            if kernel in ("linear", "intersection", "chi2", "hellinger"):
                k = ref_kd(kernel, s, zu).sum()
            elif kernel == "rbf":
                k = np.exp(-gamma * np.sum((s - zu) ** 2))
            elif kernel == "exp_chi2":
                den = s + zu
                terms = np.divide((s - zu) ** 2, den, out=np.zeros_like(s), where=den > 0)
                k = np.exp(-gamma * terms.sum())
            total += a[i] * w * k
    return total


def make_problem(kernel, rng, n_sv=12, dims=(7, 5), gamma=None, zero_frac=0.3):
    """Random non-negative 'BoW' support vectors with zeros, two channels with weights."""
    V = sum(dims)
    S = rng.random((n_sv, V))
    S[rng.random(S.shape) < zero_frac] = 0.0
    a = rng.normal(size=n_sv)
    b = float(rng.normal())
    slices, start = [], 0
    for d in dims:
        slices.append(slice(start, start + d))
        start += d
    beta = rng.uniform(0.5, 2.0, size=len(dims))
    f = KernelExpansion(kernel, S, a, b, gamma=gamma, channel_slices=slices, channel_weights=beta)
    return f, S, a, b, slices, beta


def centred(problem, candidates):
    """The same problem with the intercept moved so that half the candidates score each sign."""
    f, S, a, b, slices, beta = problem
    b = b - float(np.median(f.decision(candidates)))
    f = KernelExpansion(f.kernel, S, a, b, gamma=f.gamma, channel_slices=slices, channel_weights=beta)
    return f, S, a, b, slices, beta


# ====================================================================================================
# Step 3, sum-decomposable kernels
# ====================================================================================================
@pytest.mark.parametrize("kernel", ["linear", "intersection", "chi2", "hellinger"])
def test_bow_relevance_conserves_and_matches_eq24(kernel):
    rng = np.random.default_rng(1)
    f, S, a, b, slices, beta = make_problem(kernel, rng)
    X = rng.random((5, f.n_dims))
    X[rng.random(X.shape) < 0.3] = 0.0
    R3 = bow_relevance(f, X)
    assert R3.shape == X.shape
    for j, x in enumerate(X):
        fx = ref_f(kernel, S, a, b, x, slices, beta)
        assert abs(R3[j].sum() - fx) <= 1e-9 * max(1.0, abs(fx))
        # Eq 24 dimension by dimension, bias split evenly over all V dimensions
        want = np.full(f.n_dims, b / f.n_dims)
        for sl, w in zip(slices, beta):
            want[sl] += w * (a @ ref_kd(kernel, S[:, sl], x[None, sl]))
        np.testing.assert_allclose(R3[j], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(f.decision(X), R3.sum(axis=1), rtol=1e-12, atol=1e-12)


def test_negated_expansion_negates_relevance():
    rng = np.random.default_rng(2)
    f = make_problem("intersection", rng)[0]
    X = rng.random((3, f.n_dims))
    np.testing.assert_array_equal(bow_relevance(f.negated(), X), -bow_relevance(f, X))


# ====================================================================================================
# Step 3, Taylor path
# ====================================================================================================
@pytest.mark.parametrize("kernel,gamma", [("exp_chi2", 0.7), ("rbf", 1.3)])
def test_decision_matches_reference(kernel, gamma):
    rng = np.random.default_rng(3)
    f, S, a, b, slices, beta = make_problem(kernel, rng, gamma=gamma)
    Z = rng.random((4, f.n_dims))
    Z[0, :3] = 0.0
    want = [ref_f(kernel, S, a, b, z, slices, beta, gamma) for z in Z]
    np.testing.assert_allclose(f.decision(Z), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,gamma", [("exp_chi2", 0.7), ("rbf", 1.3), ("linear", None)])
def test_gradient_matches_central_finite_differences(kernel, gamma):
    rng = np.random.default_rng(4)
    f = make_problem(kernel, rng, gamma=gamma)[0]
    # strictly positive z so that z +- h stays in the domain; SVs keep their zeros (x_id = 0 case)
    z = rng.uniform(0.05, 1.0, size=f.n_dims)
    g = f.gradient(z)
    h = 1e-6
    fd = np.empty_like(z)
    for d in range(f.n_dims):
        e = np.zeros_like(z)
        e[d] = h
        fd[d] = (f.decision(z + e)[0] - f.decision(z - e)[0]) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7 * np.abs(g).max())


def test_exp_chi2_gradient_at_double_zero_is_one_sided_derivative():
    # x_id = z_d = 0: SPEC sets the fraction 4 x^2 / (x + z)^2 to 0, i.e. dk/dz_d = -gamma k,
    # which is the derivative from inside the domain (z_d -> 0+).
    S = np.array([[0.0, 0.4, 0.2]])
    f = KernelExpansion("exp_chi2", S, np.array([1.5]), 0.0, gamma=0.8)
    z = np.array([0.0, 0.3, 0.1])
    g = f.gradient(z)
    h = 1e-7
    one_sided = (f.decision(z + [h, 0, 0])[0] - f.decision(z)[0]) / h
    assert abs(g[0] - one_sided) <= 1e-5 * abs(g[0])
    assert g[0] == pytest.approx(-0.8 * f.decision(z)[0] , rel=1e-12)


def test_linear_kernel_through_taylor_path_is_exact():
    rng = np.random.default_rng(5)
    candidates = rng.random((30, 12))
    f, S, a, b, slices, beta = centred(make_problem("linear", rng, n_sv=20), candidates)
    for x in rng.random((4, f.n_dims)):
        res = find_root(f, x, candidates, random_state=0)
        assert res.bracketed
        assert abs(res.residual) <= 1e-9 * max(1.0, abs(res.score))
        assert abs(res.f_root) <= 1e-8


@pytest.mark.parametrize("kernel,gamma", [("exp_chi2", 0.5), ("rbf", 2.0)])
def test_root_search_finds_roots_and_reports_residual(kernel, gamma):
    rng = np.random.default_rng(6)
    candidates = rng.random((40, 12))
    f, S, a, b, slices, beta = centred(make_problem(kernel, rng, n_sv=25, gamma=gamma), candidates)
    fc = f.decision(candidates)
    assert (fc > 0).any() and (fc < 0).any(), "test set-up needs both signs"
    for x in candidates[:5]:
        res = find_root(f, x, candidates, n_candidates=8, random_state=0)
        assert res.bracketed
        assert abs(res.f_root) <= 1e-8
        assert abs(f.decision(res.root)[0] - res.f_root) <= 1e-14
        assert res.score == pytest.approx(ref_f(kernel, S, a, b, x, slices, beta, gamma), rel=1e-12)
        assert res.residual == pytest.approx(res.score - res.relevance.sum(), abs=1e-12)
        # the root lies on the segment between x and the candidate it came from
        z = candidates[res.candidate]
        assert f.decision(z)[0] * res.score < 0
        diff = res.root - z
        alpha = np.dot(diff, x - z) / np.dot(x - z, x - z)
        np.testing.assert_allclose(res.root, z + alpha * (x - z), atol=1e-12)
        assert 0.0 <= alpha <= 1.0
        assert np.all(np.isfinite(res.relevance))


def test_residual_shrinks_as_root_approaches_x():
    # Points x_t = x0 + t (x - x0) all have x0 as a root on their segment; the first-order residual
    # is O(t^2), so it must shrink (and roughly quadratically) as x_t approaches x0.
    rng = np.random.default_rng(7)
    candidates = rng.random((40, 12))
    f = centred(make_problem("exp_chi2", rng, n_sv=25, gamma=0.5), candidates)[0]
    res = find_root(f, candidates[0], candidates, random_state=0)
    x, x0 = candidates[0], res.root
    rhos = []
    for t in [1.0, 0.5, 0.25, 0.125, 0.0625]:
        xt = x0 + t * (x - x0)
        _, rho = taylor_relevance(f, xt, x0)
        rhos.append(abs(rho) + 1e-300)
    assert rhos[0] > 1e-6, "set-up should have a visibly non-linear f"
    assert all(r1 < r0 for r0, r1 in zip(rhos, rhos[1:]))
    assert rhos[-1] < rhos[0] / 50


def test_root_search_is_seeded_and_averages_best_roots():
    rng = np.random.default_rng(8)
    C = rng.random((60, 12))
    f = centred(make_problem("rbf", rng, n_sv=25, gamma=2.0), C)[0]
    x = C[1]
    r1 = find_root(f, x, C, n_candidates=5, random_state=3)
    r2 = find_root(f, x, C, n_candidates=5, random_state=3)
    np.testing.assert_array_equal(r1.relevance, r2.relevance)
    avg = find_root(f, x, C, n_candidates=10, n_roots=3, random_state=3)
    assert avg.roots.shape == (3, f.n_dims)
    want = np.mean([(x - r) * f.gradient(r) for r in avg.roots], axis=0)
    np.testing.assert_allclose(avg.relevance, want, rtol=1e-12, atol=1e-14)
    assert avg.residual == pytest.approx(avg.score - avg.relevance.sum(), abs=1e-12)
    # the best single root is the first of the averaged ones
    np.testing.assert_array_equal(avg.root, avg.roots[0])


def test_root_search_without_opposite_sign_candidates_still_answers():
    rng = np.random.default_rng(9)
    S = rng.random((5, 6))
    f = KernelExpansion("rbf", S, np.ones(5), 0.1, gamma=1.0)  # f > 0 everywhere
    res = find_root(f, S[0], S[1:], random_state=0)
    assert not res.bracketed
    assert res.f_root > 0 and np.isfinite(res.residual)
    assert res.residual == pytest.approx(res.score - res.relevance.sum(), abs=1e-12)


def test_taylor_path_rejects_non_differentiable_kernel_and_bad_input():
    rng = np.random.default_rng(10)
    f = make_problem("intersection", rng)[0]
    with pytest.raises(ValueError, match="differentiable"):
        find_root(f, np.ones(f.n_dims), np.ones((2, f.n_dims)))
    g = make_problem("rbf", rng, gamma=1.0)[0]
    with pytest.raises(ValueError, match="dimensions"):
        find_root(g, np.ones(3), np.ones((2, g.n_dims)))
    with pytest.raises(ValueError, match="NaN"):
        find_root(g, np.full(g.n_dims, np.nan), np.ones((2, g.n_dims)))
    with pytest.raises(ValueError, match="gamma"):
        KernelExpansion("exp_chi2", np.ones((2, 3)), np.ones(2), 0.0, gamma=-1.0)
    with pytest.raises(ValueError, match="unknown kernel"):
        KernelExpansion("poly", np.ones((2, 3)), np.ones(2), 0.0)


# ====================================================================================================
# Step 2
# ====================================================================================================
def rank_mapping(rng, M, V, n=3, base=2.0, channel=None, slices=None):
    """A rank mapping (Eq 64) of random descriptors onto random prototypes, per channel."""
    slices = slices or [slice(0, V)]
    channel = np.zeros(M, int) if channel is None else channel
    rows, cols, vals = [], [], []
    for l in range(M):
        sl = slices[channel[l]]
        width = sl.stop - sl.start
        dims = sl.start + rng.permutation(width)[: min(n, width)]
        for r, d in enumerate(dims, start=1):
            rows.append(l)
            cols.append(d)
            vals.append(base ** (-r))
    return sp.csr_matrix((vals, (rows, cols)), shape=(M, V))


def two_channel_problem(seed, p_uncovered=True):
    rng = np.random.default_rng(seed)
    slices = [slice(0, 30), slice(30, 50)]
    channel = rng.integers(0, 2, size=40)
    m = rank_mapping(rng, 40, 50, channel=channel, slices=slices)
    R3 = rng.normal(size=50)
    if p_uncovered:
        assert (np.asarray(m.sum(axis=0)).ravel() == 0).any()
    return m, R3, slices, channel


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 7.5, 100.0, np.inf])
def test_feature_relevance_conserves(p):
    m, R3, slices, channel = two_channel_problem(11)
    R2 = feature_relevance(m, R3, p, slices, channel)
    assert R2.shape == (40,)
    assert abs(R2.sum() - R3.sum()) <= 1e-10 * max(1.0, np.abs(R3).sum())
    # and per channel: a channel's features carry exactly its dimensions' relevance
    for u, sl in enumerate(slices):
        assert R2[channel == u].sum() == pytest.approx(R3[sl].sum(), abs=1e-10)


@pytest.mark.parametrize("p", [1.0, 3.0, np.inf])
def test_feature_relevance_matches_eqs_26_32_by_loops(p):
    m, R3, slices, channel = two_channel_problem(12)
    dense = m.toarray()
    want = np.zeros(dense.shape[0])
    for u, sl in enumerate(slices):
        feats = np.flatnonzero(channel == u)
        for d in range(sl.start, sl.stop):
            col = dense[feats, d]
            if col.max() == 0:
                want[feats] += R3[d] / len(feats)
            elif np.isinf(p):
                winners = feats[col == col.max()]
                want[winners] += R3[d] / len(winners)
            else:
                want[feats] += R3[d] * col**p / np.sum(col**p)
    np.testing.assert_allclose(feature_relevance(m, R3, p, slices, channel), want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("p", [1.0, 2.0, np.inf])
def test_feature_relevance_invariant_to_scaling_the_mapping(p):
    m, R3, slices, channel = two_channel_problem(13)
    R2 = feature_relevance(m, R3, p, slices, channel)
    for c in (1e-3, 0.37, 12.0):
        np.testing.assert_allclose(feature_relevance(c * m, R3, p, slices, channel), R2, rtol=1e-12,
                                   atol=1e-14)


def test_hard_assignment_closed_form():
    rng = np.random.default_rng(14)
    M, V = 60, 25
    words = rng.integers(0, 18, size=M)  # dims 18..24 stay uncovered
    m = sp.csr_matrix((np.ones(M), (np.arange(M), words)), shape=(M, V))
    R3 = rng.normal(size=V)
    counts = np.bincount(words, minlength=V)
    uncovered = R3[counts == 0].sum()
    want = R3[words] / counts[words] + uncovered / M
    for p in (1.0, 2.5, np.inf):
        np.testing.assert_allclose(feature_relevance(m, R3, p), want, rtol=1e-12, atol=1e-14)


def test_large_p_approaches_max_pooling():
    rng = np.random.default_rng(15)
    M, V = 50, 20
    m = sp.random(M, V, density=0.3, random_state=15, format="csr")  # continuous values: no ties
    R3 = rng.normal(size=V)
    R_max = feature_relevance(m, R3, np.inf)
    errs = [np.abs(feature_relevance(m, R3, p) - R_max).max() for p in (1.0, 10.0, 100.0, 1e4, 1e6)]
    assert all(e1 < e0 for e0, e1 in zip(errs, errs[1:]))
    assert errs[-1] < 1e-9 * errs[0]


def test_max_pooling_splits_ties_equally():
    m = np.array([[0.5, 0.25], [0.5, 0.0], [0.25, 0.0]])
    R2 = feature_relevance(m, np.array([3.0, 1.0]), np.inf)
    np.testing.assert_allclose(R2, [1.5 + 1.0, 1.5, 0.0])


def test_feature_relevance_uses_each_channels_own_feature_count():
    # channel 0 has 1 feature, channel 1 has 3; uncovered dims go to their own channel only
    m = sp.csr_matrix(np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 1.0, 0], [0, 0, 0.5, 0]]))
    R3 = np.array([2.0, 0.6, 3.0, 0.9])
    R2 = feature_relevance(m, R3, 1.0, [slice(0, 2), slice(2, 4)], np.array([0, 1, 1, 1]))
    np.testing.assert_allclose(R2, [2.6, 1.2 + 0.3, 1.2 + 0.3, 0.6 + 0.3])


def test_feature_relevance_rejects_bad_input():
    m = np.eye(3)
    with pytest.raises(ValueError, match="p must be > 0"):
        feature_relevance(m, np.ones(3), 0.0)
    with pytest.raises(TypeError, match="p must be"):
        feature_relevance(m, np.ones(3), "max")
    with pytest.raises(ValueError, match="columns"):
        feature_relevance(m, np.ones(4), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        feature_relevance(m, np.array([1.0, np.nan, 0]), 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        feature_relevance(-m, np.ones(3), 1.0)
    with pytest.raises(ValueError, match="feature_channel is required"):
        feature_relevance(m, np.ones(3), 1.0, [slice(0, 1), slice(1, 3)])


# ====================================================================================================
# Step 1
# ====================================================================================================
def naive_pixels(rel, boxes, shape):
    out = np.zeros(shape)
    for r, (y0, x0, y1, x1) in zip(rel, boxes):
        y0, y1 = max(y0, 0), min(y1, shape[0])
        x0, x1 = max(x0, 0), min(x1, shape[1])
        if y1 > y0 and x1 > x0:
            out[y0:y1, x0:x1] += r / ((y1 - y0) * (x1 - x0))
    return out


def dense_grid_boxes(shape, step, side):
    """Boxes of a dense grid like DenseSIFT's: centres every `step`, squares of `side`, some clipped."""
    ys = np.arange(0, shape[0], step)
    xs = np.arange(0, shape[1], step)
    cy, cx = np.meshgrid(ys, xs, indexing="ij")
    half = side // 2
    return np.stack([cy.ravel() - half, cx.ravel() - half, cy.ravel() - half + side,
                     cx.ravel() - half + side], axis=1)


def test_pixel_relevance_equals_naive_loop_and_conserves():
    rng = np.random.default_rng(16)
    shape = (37, 53)
    boxes = np.concatenate([dense_grid_boxes(shape, 4, 16), dense_grid_boxes(shape, 6, 24)])
    rel = rng.normal(size=len(boxes))
    R1 = pixel_relevance(rel, boxes, shape)
    assert R1.shape == shape
    np.testing.assert_allclose(R1, naive_pixels(rel, boxes, shape), rtol=1e-10, atol=1e-13)
    assert abs(R1.sum() - rel.sum()) <= 1e-10 * max(1.0, np.abs(rel).sum())


def test_single_feature_is_constant_exactly_on_its_clipped_square():
    shape = (20, 30)
    for box, clipped in [((3, 5, 11, 13), (3, 5, 11, 13)), ((-4, 25, 6, 35), (0, 25, 6, 30)),
                         ((15, -8, 27, 4), (15, 0, 20, 4))]:
        R1 = pixel_relevance([2.5], np.array([box]), shape)
        y0, x0, y1, x1 = clipped
        inside = np.zeros(shape, bool)
        inside[y0:y1, x0:x1] = True
        value = 2.5 / inside.sum()
        assert np.all(R1[inside] == value)
        assert np.all(R1[~inside] == 0.0)
        assert R1.sum() == pytest.approx(2.5, abs=1e-12)


def test_border_features_conserve():
    rng = np.random.default_rng(17)
    shape = (16, 16)
    boxes = np.array([[-10, -10, 4, 4], [12, 12, 40, 40], [-3, 5, 30, 9], [0, 0, 16, 16]])
    rel = rng.normal(size=4)
    R1 = pixel_relevance(rel, boxes, shape)
    assert R1.sum() == pytest.approx(rel.sum(), abs=1e-12)
    np.testing.assert_allclose(R1, naive_pixels(rel, boxes, shape), rtol=1e-12, atol=1e-14)


def test_pixel_relevance_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(M, 4\)"):
        pixel_relevance([1.0], np.array([[0, 0, 1]]), (4, 4))
    with pytest.raises(ValueError, match="boxes for"):
        pixel_relevance([1.0, 2.0], np.array([[0, 0, 1, 1]]), (4, 4))
    with pytest.raises(TypeError, match="integer"):
        pixel_relevance([1.0], np.array([[0, 0, 1.5, 1]]), (4, 4))
    with pytest.raises(ValueError, match="NaN"):
        pixel_relevance([np.nan], np.array([[0, 0, 1, 1]]), (4, 4))


# ====================================================================================================
# Steps 2 + 1 on real local features (scikit-image photo, the project's dense SIFT and encoding)
# ====================================================================================================
@pytest.fixture(scope="module")
def real_features():
    image = data.astronaut()[100:196, 150:270]  # 96 x 120 RGB crop, gray descriptors
    feats = DenseSIFT(step=6, bin_sizes=(3, 5)).extract(image)
    rng = np.random.default_rng(18)
    vocabularies = []
    for u in range(2):
        d = feats.descriptors[feats.channel == u]
        vocabularies.append(d[rng.choice(len(d), size=24, replace=False)])
    return feats, vocabularies


@pytest.mark.parametrize("p", [1.0, 3.0, np.inf])
@pytest.mark.parametrize("mapping", ["hard", "rank", "soft"])
def test_real_features_conserve_and_ignore_l1_normalisation(real_features, p, mapping):
    feats, vocabularies = real_features
    plain = encode(feats, vocabularies, mapping=mapping, p=p, normalize=False)
    normed = encode(feats, vocabularies, mapping=mapping, p=p, normalize=True)
    # (hard and soft mappings with mean pooling are already L1-normalised; the others differ)
    if mapping == "rank" or p != 1.0:
        assert not np.allclose(plain.x, normed.x)
    R3 = np.random.default_rng(19).normal(size=plain.x.size)
    R2 = feature_relevance(plain.mapping, R3, plain.p, plain.channel_slices, feats.channel)
    R2n = feature_relevance(normed.mapping, R3, normed.p, normed.channel_slices, feats.channel)
    np.testing.assert_array_equal(R2, R2n)
    assert abs(R2.sum() - R3.sum()) <= 1e-10 * np.abs(R3).sum()
    R1 = pixel_relevance(R2, feats.boxes(), feats.image_shape)
    assert R1.shape == feats.image_shape
    assert abs(R1.sum() - R3.sum()) <= 1e-10 * np.abs(R3).sum()
    np.testing.assert_allclose(R1, naive_pixels(R2, feats.boxes(), feats.image_shape), rtol=1e-9,
                               atol=1e-13)


# ====================================================================================================
# numba kernels of the Taylor step against numpy twins
# ====================================================================================================
def twin_values(Z, S, coef, bounds, weights, code, gamma, intercept):
    out = np.full(Z.shape[0], intercept)
    for u in range(len(bounds) - 1):
        Zu, Su = Z[:, bounds[u]:bounds[u + 1]], S[:, bounds[u]:bounds[u + 1]]
        if code == _kernels.LINEAR:
            K = Zu @ Su.T
        elif code == _kernels.EXP_CHI2:
            num = (Zu[:, None, :] - Su[None]) ** 2
            den = Zu[:, None, :] + Su[None]
            K = np.exp(-gamma * np.divide(num, den, out=np.zeros_like(num), where=den > 0).sum(-1))
        else:
            K = np.exp(-gamma * ((Zu[:, None, :] - Su[None]) ** 2).sum(-1))
        out += weights[u] * K @ coef
    return out


def twin_gradient(z, S, coef, bounds, weights, code, gamma):
    out = np.zeros_like(z)
    for u in range(len(bounds) - 1):
        sl = slice(bounds[u], bounds[u + 1])
        Su, zu = S[:, sl], z[sl]
        if code == _kernels.LINEAR:
            out[sl] = weights[u] * coef @ Su
            continue
        # k_u(S_i, z) for each i: the expansion with a one-hot coefficient vector
        k = np.array([twin_values(z[None, sl], Su, np.eye(len(S))[i], [0, sl.stop - sl.start], [1.0],
                                  code, gamma, 0.0)[0] for i in range(len(S))])
        w = weights[u] * coef * k
        if code == _kernels.EXP_CHI2:
            den = Su + zu
            frac = np.divide(4 * Su**2, den**2, out=np.zeros_like(Su), where=den > 0)
            out[sl] = gamma * (w @ (frac - 1.0))
        else:
            out[sl] = 2 * gamma * (w @ (Su - zu))
    return out


def test_taylor_kernels_match_numpy_twins():
    # f(z) of an expansion comes from the Gram engine (bowlrp.bow.kernels.gram, the code path of
    # decision_function) and its gradient from the numba kernel _kernels.expansion_gradient
    from tests.kernel_twins import assert_matches_twin

    names = {_kernels.LINEAR: "linear", _kernels.EXP_CHI2: "exp_chi2", _kernels.RBF: "rbf"}

    def fast_values(Z, S, coef, bounds, weights, code, gamma, intercept):
        slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        return KernelExpansion(names[code], S, coef, intercept, gamma=gamma, channel_slices=slices,
                               channel_weights=weights).decision(Z)

    def fast_gradient(z, *args):
        out = np.empty((1, z.shape[0]))
        _kernels.expansion_gradient(z[None, :], *args, out)
        return out[0]

    rng = np.random.default_rng(20)
    value_cases, grad_cases = [], []
    for code in (_kernels.LINEAR, _kernels.EXP_CHI2, _kernels.RBF):
        for bounds in ([0, 9], [0, 4, 9], [0, 0, 9]):
            S = rng.random((7, 9))
            S[rng.random(S.shape) < 0.3] = 0.0
            Z = rng.random((5, 9))
            Z[:, :2] = 0.0
            coef, weights = rng.normal(size=7), rng.uniform(0.5, 2, size=len(bounds) - 1)
            bounds = np.array(bounds, dtype=np.int64)
            value_cases.append((Z, S, coef, bounds, weights, code, 0.6, 0.3))
            grad_cases.append((Z[0].copy(), S, coef, bounds, weights, code, 0.6))
    assert_matches_twin(fast_values, twin_values, value_cases, rtol=1e-12, atol=1e-13)
    assert_matches_twin(fast_gradient, twin_gradient, grad_cases, rtol=1e-12, atol=1e-13)


def test_root_search_matches_a_lock_step_bisection_twin():
    # The roots on the segments of find_root's set-up (three kernels, two channels, loose and tight
    # tolerances) are the roots a plain numpy bisection finds: same bracket, same tolerance.
    rng = np.random.default_rng(21)
    for kernel, gamma in (("exp_chi2", 0.5), ("rbf", 2.0), ("linear", None)):
        S = rng.random((9, 8))
        coef = rng.normal(size=9)
        slices, weights = [slice(0, 5), slice(5, 8)], np.array([1.0, 0.7])
        C = rng.random((30, 8))
        layout = dict(gamma=gamma, channel_slices=slices, channel_weights=weights)
        f0 = KernelExpansion(kernel, S, coef, 0.0, **layout)
        f = KernelExpansion(kernel, S, coef, -float(np.median(f0.decision(C))), **layout)
        fc = f.decision(C)
        x = C[0]
        opp = np.flatnonzero(fc * fc[0] < 0)
        assert opp.size >= 3
        for tol in (1e-10, 1e-3):
            res = find_root(f, x, C, n_candidates=len(C), tol=tol, random_state=0)
            assert res.bracketed and abs(res.f_root) <= tol
            # numpy twin: bisection on the segment of the kept candidate, to the same tolerance, where
            # the segment has a single sign change (then the root is unique and both must find it)
            z = C[res.candidate]
            grid = np.linspace(0, 1, 401)
            along = f.decision(grid[:, None] * x + (1 - grid[:, None]) * z)
            if np.count_nonzero(np.diff(np.sign(along))) != 1:
                continue
            lo, hi = 0.0, 1.0
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                fm = f.decision(mid * x + (1 - mid) * z)[0]
                if abs(fm) <= tol:
                    break
                lo, hi = (lo, mid) if np.sign(fm) == np.sign(fc[0]) else (mid, hi)
            # f is monotone enough near the root that both land within tol / |f'| of each other
            slope = abs(np.dot(f.gradient(res.root), x - z))
            np.testing.assert_allclose(res.root, mid * x + (1 - mid) * z, atol=4 * tol / slope + 1e-12)


def _bincount_pixels(rel, boxes, shape):
    """Numpy twin of the pixel kernel: four bincounts of the corners and two cumulative sums."""
    H, W = shape
    b = np.clip(np.asarray(boxes, np.int64), 0, [H, W, H, W])
    y0, x0, y1, x1 = b.T
    area = (y1 - y0) * (x1 - x0)
    density = np.where(area > 0, rel / np.maximum(area, 1), 0.0)
    stride, size = W + 1, (H + 1) * (W + 1)
    diff = np.bincount(y0 * stride + x0, weights=density, minlength=size)
    diff -= np.bincount(y0 * stride + x1, weights=density, minlength=size)
    diff -= np.bincount(y1 * stride + x0, weights=density, minlength=size)
    diff += np.bincount(y1 * stride + x1, weights=density, minlength=size)
    return np.cumsum(np.cumsum(diff.reshape(H + 1, stride), axis=0), axis=1)[:H, :W]


def test_pixel_kernel_matches_its_numpy_twin_bit_for_bit():
    from tests.kernel_twins import assert_matches_twin

    rng = np.random.default_rng(22)
    cases = []
    # heights of every remainder mod 4 (Step 1 sums along the rows four at a time, then one by one)
    for shape, step, side in [((37, 53), 4, 16), ((16, 16), 3, 12), ((5, 80), 2, 8), ((2, 9), 1, 4),
                              ((3, 7), 2, 4), ((39, 22), 4, 12), ((1, 1), 1, 3)]:
        boxes = dense_grid_boxes(shape, step, side)
        cases.append((rng.normal(size=len(boxes)), boxes, shape))
    assert_matches_twin(pixel_relevance, _bincount_pixels, cases, rtol=0, atol=0)


# ====================================================================================================
# Steps 2 + 1 for a whole batch (bowlrp.bow.decompose.batch, numba kernels over images)
# ====================================================================================================
def _feature_relevance_twin(mapping, bow_rel, p, channel_slices, feature_channel):
    """Eqs 26-32 with numpy and scipy (the code the batch kernels replaced): bincounts over the CSR."""
    m = sp.csr_matrix(mapping, dtype=np.float64, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    n_feat, n_dims = m.shape
    r3 = np.asarray(bow_rel, dtype=np.float64)
    colmax = np.zeros(n_dims)
    np.maximum.at(colmax, m.indices, m.data)
    ratio = m.data / colmax[m.indices]
    w = (ratio == 1.0).astype(np.float64) if np.isinf(p) else ratio**p
    col = np.bincount(m.indices, weights=w, minlength=n_dims)
    covered = colmax > 0
    scaled = np.zeros(n_dims)
    scaled[covered] = r3[covered] / col[covered]
    out = np.bincount(np.repeat(np.arange(n_feat), np.diff(m.indptr)), weights=w * scaled[m.indices],
                      minlength=n_feat)
    for u, sl in enumerate(channel_slices):
        uncovered = float(r3[sl][~covered[sl]].sum())
        members = feature_channel == u
        if uncovered != 0.0 and members.any():
            out[members] += uncovered / members.sum()
    return out


@pytest.fixture(scope="module")
def real_batch():
    """Dense SIFT of scikit-image photos and generated scenes (sizes differ), 2 channels, 40 words each
    (many dimensions of an image are uncovered: the equal split of Eq 32's EXTENSION is exercised)."""
    from bowlrp.app.scenes import make_scenes

    images = [data.camera()[::5, ::5], data.coins()[40:120, 100:190], data.astronaut()[100:196, 150:270]]
    images += list(make_scenes(n_images=3, size=72, random_state=5).images)
    sift = DenseSIFT(step=4, bin_sizes=(3, 5))
    feats = [sift.extract(im) for im in images]
    rng = np.random.default_rng(23)
    vocabularies = []
    for u in range(2):
        d = np.concatenate([f.descriptors[f.channel == u] for f in feats])
        vocabularies.append(d[rng.choice(len(d), size=40, replace=False)])
    return feats, vocabularies


@pytest.mark.parametrize("p", [1.0, 0.5, 2.0, 3.0, np.inf])
@pytest.mark.parametrize("mapping", ["hard", "rank", "soft"])
def test_feature_kernels_match_their_numpy_twin_bit_for_bit(real_batch, p, mapping):
    from tests.kernel_twins import assert_matches_twin

    feats, vocabularies = real_batch
    rng = np.random.default_rng(24)
    cases = []
    for f in feats:
        enc = encode(f, vocabularies, mapping=mapping, p=p)
        cases.append((enc.mapping, rng.normal(size=enc.x.size), p, enc.channel_slices, f.channel))
    if mapping != "soft":  # (a soft mapping covers every word)
        assert any(not np.all(np.asarray(c[0].sum(axis=0)) > 0) for c in cases)  # uncovered dimensions
    assert_matches_twin(feature_relevance, _feature_relevance_twin, cases, rtol=0, atol=0)


@pytest.mark.parametrize("build", ["serial", "parallel"])
@pytest.mark.parametrize("p", [1.0, 3.0, np.inf])
def test_batch_equals_image_by_image_bit_for_bit(real_batch, p, build):
    # the orchestrator's batched Steps 2 + 1 give exactly the public functions' numbers image by
    # image, with either build of the kernels (prange over images) and whatever the thread count
    from bowlrp.bow.decompose.batch import decompose_batch
    from bowlrp.jit import forced_builds, limited_threads

    feats, vocabularies = real_batch
    encs = [encode(f, vocabularies, mapping="rank", p=p) for f in feats]
    items = [0, 1, 1, 2, 3, 4, 5, 5]  # image 1 and 5 explained for two classes
    R3 = np.random.default_rng(25).normal(size=(len(items), encs[0].x.size))
    for threads in (1, 2):
        with forced_builds(build), limited_threads(threads):
            boxes, R2, R1 = decompose_batch(feats, encs, items, R3)
        for i, f in enumerate(feats):
            np.testing.assert_array_equal(boxes[i], f.boxes())
        for k, i in enumerate(items):
            want2 = feature_relevance(encs[i].mapping, R3[k], p, encs[i].channel_slices, feats[i].channel)
            want1 = pixel_relevance(want2, feats[i].boxes(), feats[i].image_shape)
            assert np.array_equal(R2[k], want2) and np.array_equal(R1[k], want1)
            assert abs(R1[k].sum() - R3[k].sum()) <= 1e-10 * np.abs(R3[k]).sum()  # conservation


def test_batch_takes_the_general_path_for_a_non_canonical_mapping(real_batch):
    # an encoding whose CSR has an explicit zero and an unsorted row is canonicalised (as
    # feature_relevance does); a negative entry is refused with feature_relevance's message
    from bowlrp.bow.decompose.batch import decompose_batch
    from bowlrp.bow.encoding import Encoding

    feats, vocabularies = real_batch
    encs = [encode(f, vocabularies, mapping="rank", p=2.0) for f in feats[:2]]
    indptr, indices, data_ = (a.copy() for a in encs[1].csr)
    indices[indptr[3]:indptr[4]] = indices[indptr[3]:indptr[4]][::-1].copy()
    data_[indptr[3]:indptr[4]] = data_[indptr[3]:indptr[4]][::-1].copy()
    data_[indptr[5]] = 0.0
    odd = Encoding(x=encs[1].x, channel_slices=encs[1].channel_slices, p=2.0, csr=(indptr, indices, data_))
    R3 = np.random.default_rng(26).normal(size=(2, encs[0].x.size))
    boxes, R2, R1 = decompose_batch(feats[:2], [encs[0], odd], [0, 1], R3)
    want = feature_relevance(odd.mapping, R3[1], 2.0, odd.channel_slices, feats[1].channel)
    np.testing.assert_array_equal(R2[1], want)
    np.testing.assert_array_equal(R1[1], pixel_relevance(want, feats[1].boxes(), feats[1].image_shape))
    first = feature_relevance(encs[0].mapping, R3[0], 2.0, encs[0].channel_slices, feats[0].channel)
    np.testing.assert_array_equal(R2[0], first)
    # the batch's buffers are not zeroed: the general path's maps and level sums replace whatever the
    # kernel left in the skipped item's place
    _, R2s, R1s, level = decompose_batch(feats[:2], [encs[0], odd], [0, 1], R3, sums=True)
    np.testing.assert_array_equal(R1s[1], R1[1])
    for k in range(2):
        assert level[k].tolist() == [R3[k].sum(), R2s[k].sum(), R1s[k].sum()]
    data_[indptr[5]] = -0.5
    with pytest.raises(ValueError, match="non-negative"):
        decompose_batch(feats[:2], [encs[0], odd], [0, 1], R3)
    with pytest.raises(ValueError, match="NaN or inf"):
        decompose_batch(feats[:1], encs[:1], [0], np.full((1, encs[0].x.size), np.nan))
    with pytest.raises(ValueError, match=r"item images must lie in \[0, 1\)"):
        decompose_batch(feats[:1], encs[:1], [1], R3[:1])
    with pytest.raises(ValueError, match="dimensions"):
        decompose_batch(feats[:1], encs[:1], [0], R3[:1, :-1])
    with pytest.raises(ValueError, match="2 items"):
        decompose_batch(feats[:1], encs[:1], [0, 0], R3[:1])


def test_batch_names_what_is_wrong_with_its_input(real_batch):
    # every guard of the planned batch (the kernels never see what these name)
    import dataclasses

    from bowlrp.bow.decompose.batch import decompose_batch, plan_batch, run_batch

    feats, vocabularies = real_batch
    encs = [encode(f, vocabularies, mapping="rank", p=1.0) for f in feats[:2]]
    R3 = np.random.default_rng(27).normal(size=(2, encs[0].x.size))
    with pytest.raises(ValueError, match="2-D"):
        decompose_batch(feats[:2], encs, [0, 1], R3[0])
    for items in ([[0, 1]], [0.5, 1.0]):
        with pytest.raises(ValueError, match="1-D sequence of image indices"):
            decompose_batch(feats[:2], encs, items, R3)
    wrong = dataclasses.replace(feats[1], channel=np.full(len(feats[1]), 2, np.int64))
    with pytest.raises(ValueError, match=r"channel values must lie in \[0, 2\)"):
        decompose_batch([feats[0], wrong], encs, [0, 1], R3)
    other_p = encode(feats[1], vocabularies, mapping="rank", p=2.0)
    with pytest.raises(ValueError, match="pooling exponent"):
        decompose_batch(feats[:2], [encs[0], other_p], [0, 1], R3)
    one_channel = dataclasses.replace(encs[1], channel_slices=[slice(0, encs[1].x.size)])
    with pytest.raises(ValueError, match="channel layout"):
        decompose_batch(feats[:2], [encs[0], one_channel], [0, 1], R3)
    plan = plan_batch(feats[:2], encs, [0, 1], R3.shape[1])
    with pytest.raises(ValueError, match=r"2 items in 80 dimensions, got shape \(1, 80\)"):
        run_batch(plan, R3[:1])


def _batch_layout_twin(per_image, item_image, channel, n_channels):
    """The batch's offsets and counts by numpy (what decompose_batch computed before its layout kernel)."""
    n_img = per_image.shape[0]
    feat_off = np.concatenate([[0], np.cumsum(per_image[:, 0])]).astype(np.int64)
    nnz_off = np.concatenate([[0], np.cumsum(per_image[:, 1])]).astype(np.int64)
    if item_image.size and (item_image.min() < 0 or item_image.max() >= n_img):
        return feat_off, nnz_off, 1
    item_feat_off = np.concatenate([[0], np.cumsum(per_image[item_image, 0])]).astype(np.int64)
    if channel.size and (channel.min() < 0 or channel.max() >= n_channels):
        return feat_off, nnz_off, 2
    image_of = np.repeat(np.arange(n_img), per_image[:, 0])
    counts = np.bincount(image_of * n_channels + channel, minlength=n_img * n_channels)
    counts = counts.reshape(n_img, n_channels)
    return feat_off, nnz_off, item_feat_off, counts, 0


def test_batch_layout_matches_its_numpy_twin():
    # the offsets of the batch's images and items and the features per image and channel in one call;
    # an item image or a channel out of range is reported (problem 1 or 2), never read
    from bowlrp.bow.decompose._kernels import batch_layout
    from tests.kernel_twins import assert_matches_twin

    def layout(*args):  # what the caller reads: everything when there is no problem, else the problem
        out = batch_layout(*args)
        return out if out[-1] == 0 else (out[0], out[1], out[-1])

    rng = np.random.default_rng(41)
    cases = []
    for n_img, n_channels in ((1, 1), (5, 3), (7, 1)):
        ranges = ((0, 40), (0, 300), (1, 70), (1, 70))  # features, entries, height, width
        per_image = np.stack([rng.integers(lo, hi, n_img) for lo, hi in ranges], axis=1).astype(np.int64)
        channel = rng.integers(0, n_channels, per_image[:, 0].sum()).astype(np.int64)
        items = rng.integers(0, n_img, 2 * n_img).astype(np.int64)
        cases += [(per_image, items, channel, n_channels), (per_image, items[:0], channel, n_channels)]
        if channel.size:
            wrong = channel.copy()
            wrong[-1] = n_channels
            cases.append((per_image, items, wrong, n_channels))
        cases.append((per_image, np.append(items, n_img), channel, n_channels))
        cases.append((per_image, np.append(items, -1), channel, n_channels))
    assert_matches_twin(layout, _batch_layout_twin, cases, rtol=0.0, atol=0.0)


def test_level_sums_are_numpys_bit_for_bit(real_batch):
    # the three sums of every item, computed by the batch kernel beside each item's relevance: numpy's
    # sums of each BoW relevance row, feature relevance and pixel map (pairwise order; values spread
    # over many orders of magnitude, so any other order rounds differently), with either build
    from bowlrp.bow.decompose.batch import decompose_batch
    from bowlrp.jit import forced_builds, limited_threads

    feats, vocabularies = real_batch
    encs = [encode(f, vocabularies, mapping="rank", p=2.0) for f in feats]
    items = [0, 1, 2, 2, 3, 4, 5]
    rng = np.random.default_rng(42)
    R3 = rng.standard_normal((len(items), encs[0].x.size)) * np.exp(rng.uniform(-20, 20, (len(items), 1)))
    R3 *= np.exp(rng.uniform(-20, 20, R3.shape))
    for build in ("serial", "parallel"):
        with forced_builds(build), limited_threads(2):
            _, R2, R1, level = decompose_batch(feats, encs, items, R3, sums=True)
        assert level.shape == (len(items), 3)
        for k in range(len(items)):
            assert level[k].tolist() == [R3[k].sum(), R2[k].sum(), R1[k].sum()]
            assert R1[k].flags.c_contiguous and R1[k].flags.writeable
        # every map is an array of its own (a map kept alone keeps no other item's pixels alive)
        assert not any(np.shares_memory(R1[a], R1[b]) for a in range(len(items)) for b in range(a))
        # and the sums really depend on the order: a naive left-to-right sum differs somewhere
        assert any(math.fsum(R1[k].ravel()) != R1[k].sum() or sum(R1[k].ravel().tolist()) != R1[k].sum()
                   for k in range(len(items)))


@pytest.mark.parametrize("kernel", ["exp_chi2", "rbf"])
def test_root_search_on_threads_is_bit_identical(kernel):
    # find_roots splits the segments over threads (split_batch): every root, value and relevance is
    # the one-thread result, bit for bit
    from bowlrp.bow.decompose import find_roots
    from bowlrp.jit import forced_builds, limited_threads

    rng = np.random.default_rng(27)
    problem = make_problem(kernel, rng, n_sv=20, gamma=0.7)
    X, C = rng.random((30, problem[1].shape[1])), rng.random((60, problem[1].shape[1]))
    f = centred(problem, C)[0]
    with limited_threads(1):
        one = find_roots(f, X, C, n_candidates=8, n_roots=2, random_state=3)
    with forced_builds("parallel"), limited_threads(2):
        two = find_roots(f, X, C, n_candidates=8, n_roots=2, random_state=3)
    assert sum(r.bracketed for r in one) > 20
    for a, b in zip(one, two):
        assert np.array_equal(a.relevance, b.relevance) and np.array_equal(a.roots, b.roots)
        assert (a.f_root, a.residual, a.candidate) == (b.f_root, b.residual, b.candidate)


def test_a_mapping_edited_in_place_is_read_as_it_is_now():
    """scipy caches ``has_canonical_format``: after an in-place reordering of a row's entries (the
    same matrix) the flag is stale, and the relevance must still be the matrix's (review of issue 15:
    it came out all zeros)."""
    import scipy.sparse as sp

    from bowlrp.bow.decompose import feature_relevance

    m = sp.csr_matrix(np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 2.0]]))
    bow_rel = np.array([1.0, 2.0, 3.0])
    want = feature_relevance(m, bow_rel, p=1.0)
    assert m.has_canonical_format
    m.indices[:2], m.data[:2] = m.indices[1::-1].copy(), m.data[1::-1].copy()
    assert m.has_canonical_format  # stale: row 0's columns are no longer sorted
    np.testing.assert_array_equal(feature_relevance(m, bow_rel, p=1.0), want)
    np.testing.assert_array_equal(m.indices[:2], [1, 0])  # the caller's matrix is left as it was


# ====================================================================================================
# the root-search kernel (bowlrp/bow/decompose/_taylor_kernels.py) against its numpy twin: the Python
# driver of the same method (bowlrp.roots.bracketed_roots) on KernelExpansion.values
# ====================================================================================================
def _python_search(f, X, C, rows, picks, g0, g1, tol, max_iter):
    """Roots and f(roots) of the segments from C[picks] (a = 0) to X[rows] (a = 1), through numpy."""
    from bowlrp.roots import bracketed_roots

    Xs, Zs = X[rows], C[picks]

    def on_segments(a, index):
        return f.values(a[:, None] * Xs[index] + (1.0 - a[:, None]) * Zs[index])

    a, _ = bracketed_roots(on_segments, g0, g1, tol=tol, max_iter=max_iter)
    roots = a[:, None] * Xs + (1.0 - a[:, None]) * Zs
    return roots, f.values(roots)


def _kernel_search(f, X, C, rows, picks, g0, g1, tol, max_iter):
    from bowlrp.bow.decompose import _taylor_kernels as tk
    from bowlrp.bow.decompose.taylor import _numba_model

    roots, froots, failed = np.empty((rows.size, X.shape[1])), np.empty(rows.size), np.zeros(rows.size, bool)
    tk.segment_roots(X, C, rows, picks, g0, g1, *_numba_model(f), tol, max_iter, roots, froots, failed)
    assert not failed.any()
    return roots, froots


@pytest.mark.parametrize("kernel", ["exp_chi2", "rbf", "linear"])
@pytest.mark.parametrize("n_sv, dims", [(12, (7, 5)), (150, (40,)), (5, (300, 20))])
def test_root_kernel_matches_the_python_search_bit_for_bit(kernel, n_sv, dims):
    # 150 support vectors: numpy's pairwise sum splits the sum over them (> 128 terms); 300 dimensions
    # in a channel: many blocks of points (70 segments > one block of 64)
    from tests.kernel_twins import assert_matches_twin

    rng = np.random.default_rng(n_sv)
    problem = make_problem(kernel, rng, n_sv=n_sv, dims=dims, gamma=None if kernel == "linear" else 0.3)
    V = sum(dims)
    X, C = rng.random((10, V)), rng.random((30, V))
    X[rng.random(X.shape) < 0.3] = 0.0
    f = centred(problem, C)[0]
    fX, fC = f.decision(X), f.decision(C)
    rows, picks = np.nonzero(fX[:, None] * fC[None, :] < 0)
    rows, picks = rows[:70], picks[:70]
    assert rows.size >= 40
    cases = [(f, X, C, rows, picks, fC[picks], fX[rows], tol, max_iter)
             for tol, max_iter in ((1e-10, 200), (1e-13, 4), (0.0, 60))]
    assert_matches_twin(_kernel_search, _python_search, cases, rtol=0.0, atol=0.0)


def _segment_points_twin(X, C, rows, picks, first, which, points, n, ZT):
    """The points of segments first + which[:n] at points[:n], as numpy computes them, one per column."""
    seg = first + which[:n]
    a = points[:n, None]
    ZT[:, :n] = (a * X[rows[seg]] + (1.0 - a) * C[picks[seg]]).T
    return ZT


def _segment_points(X, C, rows, picks, first, which, points, n, ZT):
    from bowlrp.bow.decompose import _taylor_kernels as tk

    tk.segment_points(X, C, rows, picks, first, which, points, n, ZT)
    return ZT


@pytest.mark.parametrize("dims", [5, 32, 100])
def test_segment_points_match_numpy_bit_for_bit(dims):
    # written 32 dimensions at a time (_ROWS): fewer, exactly one block, and a partial last block
    from tests.kernel_twins import assert_matches_twin

    rng = np.random.default_rng(dims)
    X, C = rng.random((6, dims)), rng.random((9, dims))
    X[rng.random(X.shape) < 0.4] = 0.0
    rows, picks = rng.integers(0, 6, 40), rng.integers(0, 9, 40)
    cases = []
    for first, n in ((0, 40), (8, 20), (30, 1)):
        which = rng.permutation(40 - first)[:64].astype(np.int64)
        points = rng.random(64)
        points[:3] = (0.0, 1.0, 0.5)
        cases.append((X, C, rows, picks, first, which, points, min(n, which.size), np.zeros((dims, 64))))
    assert_matches_twin(_segment_points, _segment_points_twin, cases, rtol=0.0, atol=0.0)


def test_kernel_values_are_numpys_bit_for_bit():
    from bowlrp.bow.decompose import _taylor_kernels as tk
    from bowlrp.bow.decompose.taylor import _numba_model

    rng = np.random.default_rng(8)
    for kernel in ("exp_chi2", "rbf", "linear"):
        f = make_problem(kernel, rng, n_sv=300, dims=(9, 30), gamma=None if kernel == "linear" else 0.2)[0]
        Z = rng.random((100, f.n_dims))
        Z[rng.random(Z.shape) < 0.4] = 0.0
        out = np.empty(100)
        tk.point_values(Z, *_numba_model(f), out)
        assert np.array_equal(out, f.values(Z))


def test_infinite_end_values_of_the_root_search_are_a_clear_error():
    """Review finding: the numba search took an infinite candidate score, or an f(x) that overflows,
    and returned a NaN residual; both name the problem, as the Python search always did."""
    from bowlrp.bow.decompose import KernelExpansion
    from bowlrp.bow.decompose.taylor import find_root

    rng = np.random.default_rng(2)
    S = rng.random((6, 12))
    f = KernelExpansion("rbf", S, np.array([1.0, 1, 1, -1, -1, -1]), 0.0, gamma=2.0)
    scores = f.decision(S)
    scores[3] = -np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        find_root(f, S[0] + 0.01, S, candidate_scores=scores, random_state=0)
    S2 = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    f2 = KernelExpansion("rbf", S2, np.array([1e308, 1e308, -1e308]), 0.0, gamma=1.0)
    with np.errstate(over="ignore"):  # (the overflow is the point)
        assert np.isinf(f2.decision(np.array([1.0, 0.005])))
        with pytest.raises(ValueError, match="NaN or inf"):
            find_root(f2, np.array([1.0, 0.005]), np.array([[0.0, 1.0]]), random_state=0)


def test_an_int_seed_draws_what_a_fresh_random_state_draws_and_the_draw_is_kept_read_only():
    # find_roots keeps the draw of an int seed for the process (seeding a RandomState costs 0.2 ms):
    # it must be RandomState(seed).choice(n, k, replace=False), whatever was drawn before
    from bowlrp.bow.decompose.taylor import _seeded_draw

    for seed, n, k in ((0, 40, 16), (7, 40, 16), (0, 41, 16), (0, 40, 5), (2**31, 100, 16)):
        first = _seeded_draw(seed, n, k)
        np.testing.assert_array_equal(first, np.random.RandomState(seed).choice(n, k, replace=False))
        assert _seeded_draw(seed, n, k) is first and not first.flags.writeable
    with pytest.raises(ValueError):
        _seeded_draw(-1, 40, 16)


def test_few_points_are_evaluated_as_a_block_evaluates_them_bit_for_bit():
    # Fewer than _FEW points go through _point_cross (vectorised over the support vectors, the sums
    # over the points' non-zero dimensions instead of the support vectors'): every value is the one
    # the block loops give (a block of >= _FEW points holding them) and KernelExpansion.values' own,
    # also where points and support vectors are zero in different dimensions
    from bowlrp.bow.decompose import _taylor_kernels as tk
    from bowlrp.bow.decompose.taylor import _numba_model

    rng = np.random.default_rng(31)
    for kernel in ("exp_chi2", "rbf", "linear"):
        for n_sv, dims in ((5, (9,)), (21, (40, 24)), (150, (300,))):
            f = make_problem(kernel, rng, n_sv=n_sv, dims=dims, gamma=None if kernel == "linear" else 0.3,
                             zero_frac=0.5)[0]
            Z = rng.random((tk._FEW + 3, f.n_dims))
            Z[rng.random(Z.shape) < 0.5] = 0.0
            Z[0] = 0.0  # a point with no non-zero dimension at all
            SV, idx, start, sums, coef, b, bounds, w, code, gamma = _numba_model(f)
            ZT = np.zeros((f.n_dims, tk.SEGMENTS))
            ZT[:, :Z.shape[0]] = Z.T
            block, few, SVT = np.empty(tk.SEGMENTS), np.empty(tk.SEGMENTS), tk.transposed(SV)
            tk.block_values(ZT, Z.shape[0], SV, SVT, idx, start, sums, coef, b, bounds, w, code, gamma, block)
            want = f.values(Z)
            assert np.array_equal(block[:Z.shape[0]], want)
            for n in range(1, tk._FEW):
                tk.block_values(ZT, n, SV, SVT, idx, start, sums, coef, b, bounds, w, code, gamma, few)
                assert np.array_equal(few[:n], want[:n]), (kernel, n_sv, n)


def _transposed_twin(Z):
    return np.ascontiguousarray(Z.T)


@pytest.mark.parametrize("shape", [(0, 5), (3, 7), (8, 512), (96, 1024), (101, 100)])
def test_transposed_matches_numpy(shape):
    # the gradient kernel's copy of its points, eight rows at a time (and the rows left over): numpy's
    # transposed copy, whatever the number of rows (a multiple of 8 or not) and the row length
    from bowlrp.bow._kernels import transposed
    from tests.kernel_twins import assert_matches_twin

    rng = np.random.default_rng(shape[0])
    assert_matches_twin(transposed, _transposed_twin, [(rng.standard_normal(shape),)], rtol=0.0, atol=0.0)


def _segment_relevance(X, rows, roots, grad, fX):
    from bowlrp.bow.decompose import _taylor_kernels as tk

    rels, rhos = np.empty(roots.shape), np.empty(rows.size)
    tk.segment_relevance(X, rows, roots, grad, fX, rels, rhos)
    return rels, rhos


def _segment_relevance_twin(X, rows, roots, grad, fX):
    rels = (X[rows] - roots) * grad
    return rels, fX[rows] - rels.sum(axis=1)


@pytest.mark.parametrize("dims", [5, 300, 1024])
def test_segment_relevance_matches_numpy_bit_for_bit(dims):
    # the Taylor relevance and residual of every segment in one pass: numpy's numbers, the residual's
    # row sum in numpy's pairwise order (rows of more than 128 terms are split)
    from tests.kernel_twins import assert_matches_twin

    rng = np.random.default_rng(dims)
    X = rng.random((6, dims))
    X[rng.random(X.shape) < 0.4] = 0.0
    rows = rng.integers(0, 6, 40)
    roots = rng.random((40, dims))
    grad = rng.standard_normal((40, dims)) * np.exp(rng.uniform(-9, 9, (40, dims)))  # sums that round
    cases = [(X, rows, roots, grad, rng.standard_normal(6)), (X, rows[:0], roots[:0], grad[:0], np.zeros(6))]
    assert_matches_twin(_segment_relevance, _segment_relevance_twin, cases, rtol=0.0, atol=0.0)


def _uncovered_shares_twin(r3, covered, slices, counts):
    """The shares by numpy, row by row and channel by channel (what uncovered_shares computed before
    its numba kernel)."""
    extra = np.zeros((r3.shape[0], max(1, len(slices))))
    for k in range(r3.shape[0]):
        for u, sl in enumerate(slices):
            uncovered = float(r3[k][sl][~covered[k][sl]].sum())
            if uncovered != 0.0 and int(counts[k, u]):
                extra[k, u] = uncovered / int(counts[k, u])
    return extra


def test_uncovered_shares_match_numpys_masked_sums_bit_for_bit():
    # the uncovered dimensions' relevance per image and channel (one numba call): numpy's masked row
    # sums (over 128 values: pairwise), divided by the int count; nothing where the sum or count is 0
    from bowlrp.bow.decompose.pooling import uncovered_shares
    from tests.kernel_twins import assert_matches_twin

    rng = np.random.default_rng(33)
    cases = []
    for dims in ((9,), (300, 40), (1024,)):
        slices, start = [], 0
        for d in dims:
            slices.append(slice(start, start + d))
            start += d
        r3 = rng.standard_normal((6, start)) * np.exp(rng.uniform(-20, 20, (6, start)))
        r3[rng.random(r3.shape) < 0.3] = 0.0
        r3[1] = 0.0  # nothing to share
        covered = rng.random(r3.shape) < 0.4
        covered[2] = True  # every dimension covered
        counts = rng.integers(0, 50, (6, len(dims)))
        counts[3] = 0  # a channel without features
        cases.append((r3, covered, slices, counts))
    cases.append((np.zeros((0, 5)), np.zeros((0, 5), bool), [slice(0, 5)], np.zeros((0, 1), np.int64)))
    assert_matches_twin(uncovered_shares, _uncovered_shares_twin, cases, rtol=0.0, atol=0.0)


def test_uncovered_shares_reject_what_they_would_misread():
    """Review of issue 15: the one-call kernel read a slice's step as 1 and cut counts to integers."""
    from bowlrp.bow.decompose.pooling import uncovered_shares

    r3, covered = np.ones((2, 10)), np.zeros((2, 10), bool)
    with pytest.raises(ValueError, match="contiguous"):
        uncovered_shares(r3, covered, [slice(0, 10, 2)], np.ones((2, 1), np.int64))
    with pytest.raises(TypeError, match="whole feature counts"):
        uncovered_shares(r3, covered, [slice(0, 10)], np.full((2, 1), 2.5))
    ones = np.ones((2, 1), np.int64)
    for bad_covered, bad_counts in ((covered[:1], ones), (covered[:, :5], ones), (covered, ones[:1]),
                                    (covered, np.ones((2, 2), np.int64))):
        with pytest.raises(ValueError, match="same shape"):  # (the kernel would read out of bounds)
            uncovered_shares(r3, bad_covered, [slice(0, 10)], bad_counts)
    np.testing.assert_array_equal(uncovered_shares(r3, covered, [slice(0, 10)], np.full((2, 1), 4)),
                                  np.full((2, 1), 2.5))
