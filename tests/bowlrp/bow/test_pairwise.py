"""numpy's pairwise summation in numba (bowlrp.bow._pairwise): ndarray.sum()'s numbers, bit for bit."""

from __future__ import annotations

import numpy as np

from bowlrp.bow._pairwise import pairwise_sum, range_sums


def test_pairwise_sum_is_numpys_sum_bit_for_bit():
    rng = np.random.default_rng(8)
    for n in list(range(0, 140)) + [255, 256, 257, 1000, 4099]:
        a = rng.standard_normal(n + 3) * np.exp(rng.uniform(-30, 30, n + 3))
        assert pairwise_sum(a, 2, n) == a[2:2 + n].sum()
        zeros = np.full(n, -0.0)  # numpy adds to 0.0: a sum of -0.0s is 0.0 (and so is the empty sum)
        assert not np.signbit(pairwise_sum(zeros, 0, n)) and not np.signbit(zeros.sum())
    rng = np.random.default_rng(7)
    for n in [*range(1, 300), 511, 512, 513, 1024, 1100, 5003]:  # blocks, one split, several splits
        a = rng.random(n + 3) * (rng.random(n + 3) < 0.6) * 10.0 ** rng.integers(-3, 6)
        got, want = pairwise_sum(a, 2, n), a[2:2 + n].sum()
        assert got == want and np.signbit(got) == np.signbit(want), n


def test_range_sums_sum_each_map_as_numpy_sums_it():
    rng = np.random.default_rng(8)
    maps = [rng.random((int(h), int(w))) for h, w in rng.integers(0, 40, (30, 2))]
    flat = np.concatenate([m.ravel() for m in maps])
    sums = np.empty(len(maps))
    range_sums(flat, np.cumsum([0] + [m.size for m in maps]), sums)
    assert all(s == m.sum() for s, m in zip(sums, maps))  # a 2-D map summed as numpy sums it
