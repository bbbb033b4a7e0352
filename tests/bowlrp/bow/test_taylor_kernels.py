"""The root kernel's RBF sums (bowlrp/bow/decompose/_taylor_kernels.py) against term-by-term numpy twins.

The search evaluates f through the Gram kernel's numbers: every RBF sum over the dimensions takes its
terms one after the other, in increasing order. The kernels add four terms per load and store of a sum
(((c + t_d) + t_d+1) + ...), so the twins add one dimension at a time and the two must agree bit for
bit, also for channel ranges, support vectors and points not multiples of four.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.kernel_twins import assert_matches_twin


def _rbf_cross(ZT, n, SV, lo, hi, cross):
    from bowlrp.bow.decompose import _taylor_kernels as tk

    tk._rbf_cross(ZT, n, SV, lo, hi, cross)
    return cross


def _rbf_cross_twin(ZT, n, SV, lo, hi, cross):
    for d in range(lo, hi):  # one term per (support vector, point) and dimension, in order
        e = SV[:, d, None] - ZT[d, None, :n]
        cross[:, :n] += e * e
    return cross


def _point_cross(ZT, k, SVT, lo, hi):
    from bowlrp.bow._kernels import RBF
    from bowlrp.bow.decompose import _taylor_kernels as tk

    out = np.full(SVT.shape[1], np.nan)  # every entry is written (set to 0.0, then summed)
    tk._point_cross(ZT, k, SVT, lo, hi, RBF, out)
    return out


def _point_cross_twin(ZT, k, SVT, lo, hi):
    out = np.zeros(SVT.shape[1])
    for d in range(lo, hi):
        e = SVT[d] - ZT[d, k]
        out += e * e
    return out


def _problem(rng, n_sv, dims, n_points=64):
    """Sparse support vectors (zeros where BoW vectors have them) and points on the scale of BoWs."""
    SV = rng.random((n_sv, dims)) * (rng.random((n_sv, dims)) < 0.4)
    ZT = rng.random((dims, n_points)) * (rng.random((dims, n_points)) < 0.6)
    ZT *= np.exp(rng.uniform(-6, 0, ZT.shape))  # magnitudes that make the sums round
    return SV, ZT


@pytest.mark.parametrize("n_sv", [1, 3, 4, 5, 8, 21])
@pytest.mark.parametrize("dims", [1, 6, 64, 203])
def test_rbf_cross_matches_a_term_by_term_twin_bit_for_bit(n_sv, dims):
    # four support vectors and four dimensions per pass, the rest one by one: every split of both,
    # channel ranges starting anywhere, 1 to 64 points, sums that start from earlier channels' values
    rng = np.random.default_rng(100 * n_sv + dims)
    SV, ZT = _problem(rng, n_sv, dims)
    cases = []
    for lo, hi in ((0, dims), (dims // 3, dims), (1 if dims > 1 else 0, max(1, dims - 2))):
        for n in (1, 7, 8, 33, 64):
            start = np.zeros((n_sv, 64)) if n != 33 else rng.random((n_sv, 64))
            cases.append((ZT, n, SV, lo, hi, start))
    assert_matches_twin(_rbf_cross, _rbf_cross_twin, cases, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("n_sv", [1, 5, 21, 40])
@pytest.mark.parametrize("dims", [3, 64, 1027])
def test_rbf_point_sums_match_a_term_by_term_twin_bit_for_bit(n_sv, dims):
    # one point, vectorised over the support vectors, four dimensions per pass (_rbf_point4)
    rng = np.random.default_rng(7 * n_sv + dims)
    SV, ZT = _problem(rng, n_sv, dims, n_points=5)
    SVT = np.ascontiguousarray(SV.T)
    cases = [(ZT, k, SVT, lo, hi) for k in (0, 4) for lo, hi in ((0, dims), (1, dims), (2, dims - 1))]
    assert_matches_twin(_point_cross, _point_cross_twin, cases, rtol=0.0, atol=0.0)


def _sparse_cross(S, idx, starts, ZT, n, kind, out):
    from bowlrp.bow._kernels import sparse_cross

    for i in range(S.shape[0]):
        sparse_cross(S, i, idx, starts[i], starts[i + 1], ZT, n, kind, out[i])
    return out


def _sparse_cross_twin(S, idx, starts, ZT, n, kind, out):
    from bowlrp.bow._kernels import EXP_CHI2

    for i in range(S.shape[0]):
        for d in idx[starts[i]:starts[i + 1]]:  # the vector's non-zero dimensions, one term at a time
            s, z = S[i, d], ZT[d, :n]
            out[i, :n] += s * z / (s + z) if kind == EXP_CHI2 else s * z
    return out


@pytest.mark.parametrize("kind", ["exp_chi2", "linear"])
@pytest.mark.parametrize("dims", [3, 64, 1027])
def test_sparse_cross_matches_a_term_by_term_twin_bit_for_bit(kind, dims):
    # four non-zero dimensions per pass and the rest one by one (vectors with 0 to 3 of them left over,
    # and one with no non-zero dimension), the sums added in increasing order of dimension
    from bowlrp.bow._kernels import EXP_CHI2, LINEAR

    rng = np.random.default_rng(dims)
    S, ZT = _problem(rng, 9, dims)
    S[0] = 0.0
    S[1, :] = 0.0
    S[1, :min(dims, 5)] = 0.3
    idx = np.concatenate([np.flatnonzero(row) for row in S]).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum((S != 0).sum(axis=1))]).astype(np.int64)
    code = EXP_CHI2 if kind == "exp_chi2" else LINEAR
    cases = [(S, idx, starts, ZT, n, code, start) for n in (1, 8, 64)
             for start in (np.zeros((9, 64)), rng.random((9, 64)))]
    assert_matches_twin(_sparse_cross, _sparse_cross_twin, cases, rtol=0.0, atol=0.0)


def test_slots_grow_to_a_block_of_a_quarter_mib_and_never_pass_the_segments():
    from bowlrp.bow.decompose import _taylor_kernels as tk

    assert tk.SEGMENTS == 64 and tk._BLOCK_BYTES == 256 * 1024
    # (segments, dimensions) -> slots: at least one, at most the segments, else 64 or a 256 KiB block
    cases = {(0, 64): 1, (5, 64): 5, (96, 64): 96, (2000, 64): 512, (96, 1024): 64, (2000, 1024): 64,
             (2000, 300): 109, (10, 0): 10}
    assert {key: tk._slots(*key) for key in cases} == cases


def test_rounds_of_five_points_or_more_are_padded_to_a_multiple_of_eight_within_the_slots():
    from bowlrp.bow.decompose import _taylor_kernels as tk

    # (points, slots) -> points evaluated
    cases = {(1, 64): 1, (4, 64): 4, (5, 64): 8, (8, 64): 8, (9, 64): 16, (61, 64): 64, (64, 64): 64,
             (65, 96): 72, (13, 13): 13, (9, 13): 9, (5, 6): 5, (61, 62): 61}
    assert {key: tk._padded(*key) for key in cases} == cases
    for n in range(1, 70):
        for slots in (n, 13, 64, 96):
            if n <= slots:
                padded = tk._padded(n, slots)
                assert n <= padded <= slots and (padded == n or (n >= 5 and padded % 8 == 0))


@pytest.mark.parametrize("kernel", ["exp_chi2", "rbf"])
@pytest.mark.parametrize("dims, n_rows", [((2048,), 12), ((40, 24), 60)])
def test_root_kernel_refills_its_slots_bit_for_bit(kernel, dims, n_rows):
    # more segments than slots (64 slots of 2,048 dimensions; 512 of 64 dimensions): slots refilled as
    # their segments finish give every segment the roots and values of the Python search
    from bowlrp.bow.decompose import _taylor_kernels as tk
    from tests.bowlrp.bow.test_decompose import _kernel_search, _python_search, centred, make_problem

    rng = np.random.default_rng(sum(dims))
    problem = make_problem(kernel, rng, n_sv=7, dims=dims, gamma=2.0 / sum(dims))
    V = sum(dims)
    X, C = rng.random((n_rows, V)), rng.random((40, V))
    X[rng.random(X.shape) < 0.5] = 0.0
    C[rng.random(C.shape) < 0.5] = 0.0
    f = centred(problem, C)[0]
    fX, fC = f.decision(X), f.decision(C)
    rows, picks = np.nonzero(fX[:, None] * fC[None, :] < 0)
    assert rows.size > tk._slots(10**6, V)
    case = (f, X, C, rows, picks, fC[picks], fX[rows], 1e-10, 200)
    assert_matches_twin(_kernel_search, _python_search, [case], rtol=0.0, atol=0.0)
