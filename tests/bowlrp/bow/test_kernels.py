"""Kernels: every numba kernel against a slow numpy twin, scikit-learn's chi2_kernel, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics.pairwise import chi2_kernel, rbf_kernel

from bowlrp.bow import _kernels
from bowlrp.bow.kernels import (
    DECOMPOSABLE_KERNELS,
    KERNELS,
    channel_bounds,
    dimension_contributions,
    gram,
)
from tests.kernel_twins import assert_matches_twin

RNG = np.random.default_rng(7)


def _histograms(n, V, density=0.6, seed=0):
    """Sparse-ish non-negative histograms with exact zeros (the 0/0 cases) and a few equal entries."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, V))
    X[rng.random((n, V)) > density] = 0.0
    X[:, 0] = 0.0  # a dimension where every pair is 0/0
    if n > 1:
        X[1, 1:4] = X[0, 1:4]  # equal entries: (x - y)^2 / (x + y) = 0 exactly
    return X


# ---------------------------------------------------------------------------------- numpy twins
def _kd_twin(kernel, x, y):
    """Elementwise k_d on broadcast arrays (the definitions of SPEC §1)."""
    if kernel == "linear":
        return x * y
    if kernel == "intersection":
        return np.minimum(x, y)
    if kernel == "chi2":
        den = x + y
        return np.where(den > 0, 2 * x * y / np.where(den > 0, den, 1.0), 0.0)
    if kernel == "hellinger":
        return np.sqrt(x * y)
    raise AssertionError(kernel)


def _gram_twin(kernel, X, Y, gamma=1.0, weights=None, slices=None):
    slices = slices or [slice(0, X.shape[1])]
    weights = np.ones(len(slices)) if weights is None else weights
    K = np.zeros((X.shape[0], Y.shape[0]))
    for w, sl in zip(weights, slices):
        x, y = X[:, None, sl], Y[None, :, sl]
        if kernel in DECOMPOSABLE_KERNELS:
            K += w * _kd_twin(kernel, x, y).sum(-1)
        elif kernel == "exp_chi2":
            den = x + y
            terms = np.where(den > 0, (x - y) ** 2 / np.where(den > 0, den, 1.0), 0.0)
            K += w * np.exp(-gamma * terms.sum(-1))
        else:
            K += w * np.exp(-gamma * ((x - y) ** 2).sum(-1))
    return K


def _contrib_twin(kernel, SV, coef, X, dim_weights):
    out = np.zeros((coef.shape[0], X.shape[0], X.shape[1]))
    for o in range(coef.shape[0]):
        for j in range(X.shape[0]):
            kd = _kd_twin(kernel, SV, X[j][None, :])  # (n_sv, V)
            out[o, j] = dim_weights * (coef[o][:, None] * kd).sum(0)
    return out


# ---------------------------------------------------------------------------------- raw kernels
def _raw_gram(X, Y, kind, gamma, bounds, weights, fn=None):
    """Call the raw numba kernel (non-symmetric, one block) as the wrapper would."""
    if kind == _kernels.HELLINGER:
        X, Y = np.sqrt(X), np.sqrt(Y)
    sx = np.zeros((X.shape[0], bounds.size - 1))
    sy = np.zeros((Y.shape[0], bounds.size - 1))
    _kernels._channel_sums(X, bounds, sx)
    _kernels._channel_sums(Y, bounds, sy)
    out = np.full((X.shape[0], Y.shape[0]), np.nan)
    fn = fn or _kernels.gram_kernel
    fn(X, np.ascontiguousarray(Y.T), bounds, weights, kind, gamma, sx, sy, 0, False, out)
    return out


@pytest.mark.parametrize("build", ["parallel", "serial"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_gram_kernel_matches_twin(kernel, build):
    fn = getattr(_kernels.gram_kernel, build)
    code = {"linear": 0, "intersection": 1, "chi2": 2, "hellinger": 3, "exp_chi2": 4, "rbf": 5}[kernel]
    cases = []
    for seed, (n, m, sizes) in enumerate([(5, 7, (12,)), (9, 4, (5, 11, 3)), (1, 1, (1,)), (6, 6, (30,))]):
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        X = _histograms(n, bounds[-1], seed=seed)
        Y = _histograms(m, bounds[-1], seed=seed + 100)
        weights = np.random.default_rng(seed).random(len(sizes)) + 0.5
        cases.append((X, Y, code, 0.7, bounds, weights))

    def twin(X, Y, kind, gamma, bounds, weights):
        slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        return _gram_twin(kernel, X, Y, gamma, weights, slices)

    def fast(*case):
        return _raw_gram(*case, fn=fn)

    assert_matches_twin(fast, twin, cases, rtol=1e-12, atol=1e-13)


def test_channel_sums_matches_twin():
    def fast(X, bounds):
        out = np.empty((X.shape[0], bounds.size - 1))
        _kernels._channel_sums(X, bounds, out)
        return out

    def slow(X, bounds):
        return np.stack([X[:, a:b].sum(1) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)

    cases = [(RNG.random((4, 10)), np.array([0, 3, 10])), (RNG.random((1, 5)), np.array([0, 5]))]
    assert_matches_twin(fast, slow, cases)


@pytest.mark.parametrize("build", ["parallel", "serial"])
@pytest.mark.parametrize("kernel", DECOMPOSABLE_KERNELS)
def test_dimension_contributions_kernel_matches_twin(kernel, build):
    code = {"linear": 0, "intersection": 1, "chi2": 2, "hellinger": 3}[kernel]
    fn = getattr(_kernels.dimension_contributions_kernel, build)

    def fast(SV, coef, X, dim_weights):
        out = np.full((coef.shape[0], X.shape[0], X.shape[1]), np.nan)
        fn(SV, coef, X, dim_weights, code, out)
        return out

    def slow(SV, coef, X, dim_weights):
        return _contrib_twin(kernel, SV, coef, X, dim_weights)

    cases = [
        (_histograms(6, 9, seed=1), RNG.normal(size=(1, 6)), _histograms(4, 9, seed=2), np.ones(9)),
        (_histograms(3, 5, seed=3), RNG.normal(size=(3, 3)), _histograms(2, 5, seed=4), RNG.random(5) + 0.1),
    ]
    assert_matches_twin(fast, slow, cases, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------------- public wrappers
@pytest.mark.parametrize("kernel", KERNELS)
def test_gram_wrapper_symmetric_blocks_and_channels(kernel):
    X = _histograms(23, 17, seed=5)
    slices = [slice(0, 6), slice(6, 17)]
    weights = np.array([0.3, 1.7])
    want = _gram_twin(kernel, X, X, 0.9, weights, slices)
    # symmetric path, several row blocks (the mirrored triangle must be exact)
    K = gram(kernel, X, gamma=0.9, weights=weights, slices=slices, block_rows=4)
    np.testing.assert_allclose(K, want, rtol=1e-12, atol=1e-13)
    assert np.array_equal(K, K.T)
    # rows of new data against the same columns give the same numbers
    K2 = gram(kernel, X[:5], X, gamma=0.9, weights=weights, slices=slices)
    np.testing.assert_allclose(K2, K[:5], rtol=1e-13, atol=1e-14)


def test_exp_chi2_equals_sklearn_chi2_kernel():
    X, Y = _histograms(30, 64, seed=8), _histograms(20, 64, seed=9)
    for gamma in (0.1, 1.0, 3.0):
        np.testing.assert_allclose(gram("exp_chi2", X, Y, gamma=gamma), chi2_kernel(X, Y, gamma=gamma),
                                   rtol=1e-12, atol=1e-14)
    assert np.allclose(gram("exp_chi2", X), chi2_kernel(X), rtol=1e-12)


def test_rbf_equals_sklearn_rbf_kernel_on_signed_data():
    X, Y = RNG.normal(size=(10, 6)), RNG.normal(size=(7, 6))
    np.testing.assert_allclose(gram("rbf", X, Y, gamma=0.2), rbf_kernel(X, Y, gamma=0.2), rtol=1e-12)


def test_hand_made_values():
    x = np.array([[0.5, 0.5, 0.0]])
    y = np.array([[0.25, 0.0, 0.75]])
    assert gram("linear", x, y)[0, 0] == pytest.approx(0.125)
    assert gram("intersection", x, y)[0, 0] == pytest.approx(0.25)
    # chi2: 2*0.5*0.25/0.75 + 0 (one side 0) + 0 (one side 0); 0/0 never appears here
    assert gram("chi2", x, y)[0, 0] == pytest.approx(1.0 / 3.0)
    assert gram("hellinger", x, y)[0, 0] == pytest.approx(np.sqrt(0.125))
    # all-zero histograms: every term is 0/0 := 0, the exp-chi2 distance is 0
    z = np.zeros((1, 3))
    assert gram("chi2", z, z)[0, 0] == 0.0
    assert gram("exp_chi2", z, z)[0, 0] == 1.0


def test_dimension_contributions_sum_to_the_kernel_expansion():
    SV, X = _histograms(8, 12, seed=11), _histograms(5, 12, seed=12)
    coef = RNG.normal(size=(3, 8))
    slices, weights = [slice(0, 4), slice(4, 12)], np.array([2.0, 0.5])
    for kernel in DECOMPOSABLE_KERNELS:
        C = dimension_contributions(kernel, SV, coef, X, weights=weights, slices=slices)
        assert C.shape == (3, 5, 12)
        want = (gram(kernel, X, SV, weights=weights, slices=slices) @ coef.T).T
        np.testing.assert_allclose(C.sum(-1), want, rtol=1e-12, atol=1e-12)
    # a 1-D coef is one output
    assert dimension_contributions("linear", SV, coef[0], X).shape == (1, 5, 12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: gram("poly", np.ones((2, 2))), "unknown kernel 'poly'"),
        (lambda: gram("chi2", -np.ones((2, 2))), "Negative values"),
        (lambda: gram("linear", np.array([[np.nan, 1.0]])), "NaN"),
        (lambda: gram("linear", np.ones((2, 3)), np.ones((2, 4))), "expected 3"),
        (lambda: gram("linear", np.ones(3)), "2-D"),
        (lambda: gram("rbf", np.ones((2, 2)), gamma=-1.0), "gamma"),
        (lambda: gram("linear", np.ones((2, 4)), slices=[slice(0, 2)]), "cover 2"),
        (lambda: gram("linear", np.ones((2, 4)), slices=[slice(0, 2), slice(2, 4)], weights=[1.0]),
         "2 channel weights"),
        (lambda: dimension_contributions("rbf", np.ones((2, 2)), [1.0, 1.0], np.ones((1, 2))),
         "not sum-decomposable"),
        (lambda: dimension_contributions("linear", np.ones((2, 2)), [1.0], np.ones((1, 2))), "coef"),
    ],
)
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("values", [np.array([[1 + 5j, 2.0], [3.0, 4j]]), np.array([[1, 2]], "m8[s]"),
                                    np.array([["a", "b"]]), np.array([[None, 1.0]], dtype=object)])
def test_arrays_of_other_than_real_numbers_are_refused(values):
    # complex values lost their imaginary part in the float64 conversion (a ComplexWarning, then numbers)
    with pytest.raises(TypeError, match="array of real numbers"):
        gram("linear", values)


def test_channel_bounds():
    assert channel_bounds(5).tolist() == [0, 5]
    assert channel_bounds(5, [slice(0, 2), slice(2, 5)]).tolist() == [0, 2, 5]
    with pytest.raises(ValueError, match="contiguously"):
        channel_bounds(5, [slice(0, 2), slice(3, 5)])


def test_gram_verbose_reports_progress(capsys):
    gram("intersection", _histograms(6, 4), block_rows=3, verbose=True)
    assert "Gram rows 6/6" in capsys.readouterr().err


@pytest.mark.parametrize("kernel", ["intersection", "exp_chi2", "rbf"])
def test_gram_tiles_chunks_and_blocks_beyond_one_tile(kernel):
    # more rows than one chunk (32) and columns than one tile (128), none a multiple of the block
    # sizes, and symmetric row blocks that start off the chunk grid
    X = _histograms(150, 9, seed=21)
    Y = _histograms(301, 9, seed=22)
    slices = [slice(0, 4), slice(4, 9)]
    np.testing.assert_allclose(gram(kernel, X, Y, gamma=0.6, slices=slices),
                               _gram_twin(kernel, X, Y, 0.6, None, slices), rtol=1e-12, atol=1e-13)
    K = gram(kernel, X, gamma=0.6, slices=slices, block_rows=45)
    np.testing.assert_allclose(K, _gram_twin(kernel, X, X, 0.6, None, slices), rtol=1e-12, atol=1e-13)
    assert np.array_equal(K, K.T)


def test_parallel_and_serial_builds_agree_bitwise():
    from bowlrp.jit import forced_builds

    X = _histograms(70, 40, seed=30)
    Y = _histograms(90, 40, seed=31)
    with forced_builds("parallel"):  # force threads
        par = [gram(k, X, Y, gamma=0.4) for k in KERNELS] + [gram("exp_chi2", X, gamma=0.4)]
    with forced_builds("serial"):
        ser = [gram(k, X, Y, gamma=0.4) for k in KERNELS] + [gram("exp_chi2", X, gamma=0.4)]
    for a, b in zip(par, ser):
        assert np.array_equal(a, b)


def test_one_registry_says_everything_about_a_kernel():
    from bowlrp.bow.kernels import REGISTRY, kernel_spec

    # one code per built-in kernel, the numba kernels' own constants, no second numbering anywhere
    codes = {k: REGISTRY[k].code for k in KERNELS}
    assert codes == {"linear": _kernels.LINEAR, "intersection": _kernels.INTERSECTION, "chi2": _kernels.CHI2,
                     "hellinger": _kernels.HELLINGER, "exp_chi2": _kernels.EXP_CHI2, "rbf": _kernels.RBF}
    assert len(set(codes.values())) == len(codes)
    assert DECOMPOSABLE_KERNELS == ("linear", "intersection", "chi2", "hellinger")
    assert {k for k in KERNELS if REGISTRY[k].signed} == {"linear", "rbf"}
    assert {k for k in KERNELS if REGISTRY[k].uses_gamma} == {"exp_chi2", "rbf"}
    assert {k for k in KERNELS if REGISTRY[k].differentiable} == {"linear", "exp_chi2", "rbf"}
    # negative input is refused exactly where the registry says so
    X = -_histograms(3, 5)
    for kernel in KERNELS:
        if kernel_spec(kernel).signed:
            assert np.all(np.isfinite(gram(kernel, X)))
        else:
            with pytest.raises(ValueError, match="Negative values"):
                gram(kernel, X)
    # gamma="auto" distances: exp-chi2 uses the chi2 distance, rbf the squared Euclidean one
    B = _histograms(4, 6, seed=3) + 0.01
    np.testing.assert_allclose(kernel_spec("exp_chi2").pairwise_distance(B),
                               -np.log(chi2_kernel(B, gamma=1.0)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(kernel_spec("rbf").pairwise_distance(B),
                               -np.log(rbf_kernel(B, gamma=1.0)), rtol=1e-10, atol=1e-12)
