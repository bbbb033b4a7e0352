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
