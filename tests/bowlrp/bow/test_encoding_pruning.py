"""The kernels of the exact-pruning experiment (benchmarks/_pruning.py) against slow numpy twins.

The experiment is benchmark code, but its claim ("the same words as today") rests on these kernels:
the dot products in a named summation order with correctly rounded fused multiply-adds, and the pruned
rank selection giving exactly the n nearest words by (exact distance, index).
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numba
import numpy as np
import pytest
from skimage import data

from bowlrp.bow.features import DenseSIFT
from tests.kernel_twins import assert_matches_twin

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
_pruning = pytest.importorskip("_pruning")


def fma_twin(a, b, c):
    """a * b + c rounded once: exact rational arithmetic, then Python's correctly rounded division."""
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def dot_twin(x, b, four):
    if four:
        acc = [0.0] * 4
        for k in range(x.size):
            acc[k % 4] = fma_twin(x[k], b[k], acc[k % 4])
        return (acc[0] + acc[1]) + (acc[2] + acc[3])
    acc = 0.0
    for k in range(x.size):
        acc = fma_twin(x[k], b[k], acc)
    return acc


def chain_products_twin(x, b, four_rows, out):
    rows, words = x.shape[0], b.shape[0]
    return np.array([[dot_twin(x[i], b[j], four_rows[i]) for j in range(words)] for i in range(rows)])


def _chain_products(x, b, four_rows, out):
    _pruning.chain_products(x, b, four_rows, out)
    return out


def test_chain_products_match_the_exact_fma_twin_bit_for_bit():
    rng = np.random.default_rng(0)
    cases = []
    for rows, words, dim in ((3, 5, 7), (6, 4, 13), (2, 3, 128)):
        x = rng.standard_normal((rows, dim)) * 10.0 ** rng.integers(-3, 4, (rows, 1))
        b = rng.standard_normal((words, dim))
        four = np.arange(rows) % 2 == 1
        cases.append((x, b, four, np.empty((rows, words))))
    assert_matches_twin(_chain_products, chain_products_twin, cases, rtol=0, atol=0)


def _real_case(words, duplicates):
    feats = DenseSIFT(step=6, bin_sizes=(4,)).extract(data.camera()[100:164, 200:264] / 255.0)
    x = np.ascontiguousarray(feats.descriptors, np.float64)
    rng = np.random.default_rng(1)
    b = x[rng.choice(x.shape[0], words, replace=False)] + 0.02 * rng.random((words, x.shape[1]))
    b[words - duplicates:] = b[:duplicates]  # equal words: ties broken by index
    return x, np.ascontiguousarray(b)


def _pruned(x, b, four, n, blocks=None):
    p32 = (x.astype(np.float32) @ b.astype(np.float32).T).astype(np.float32)
    sq = np.einsum("md,md->m", x, x)
    b_sq = np.einsum("vd,vd->v", b, b)
    values = 2.0 ** -np.arange(1, n + 1)
    indices, out = np.empty(x.shape[0] * n, np.int64), np.empty(x.shape[0] * n)
    delta = _pruning.bound(sq, b, x.shape[1])
    if blocks is not None:  # "scalar" or "vector" chains
        vector = blocks == "vector"
        _pruning.pruned_rank_blocks(x, p32, sq, b_sq, b, delta, four, n, values, vector, indices, out)
    else:
        _pruning.pruned_rank(x, p32, sq, b_sq, b, delta, four, n, values, True, indices, out)
    return indices, out


def _pruned_twin(x, b, four, n, blocks=None):
    """The n nearest words by (distance, index) of the exact distances, columns sorted per row."""
    products = chain_products_twin(x, b, four, None)
    sq = np.einsum("md,md->m", x, x)
    b_sq = np.einsum("vd,vd->v", b, b)
    d2 = sq[:, None] + b_sq[None, :]
    d2 -= 2.0 * products
    np.maximum(d2, 0.0, out=d2)
    nearest = np.argsort(d2, axis=1, kind="stable")[:, :n]
    values = 2.0 ** -np.arange(1, n + 1)
    order = np.argsort(nearest, axis=1)
    return np.take_along_axis(nearest, order, 1).ravel(), values[order].ravel()


@pytest.mark.parametrize("blocks", [None, "scalar", "vector"])
@pytest.mark.parametrize("n", [1, 4])
def test_pruned_rank_gives_the_nearest_words_of_the_exact_distances(n, blocks):
    x, b = _real_case(words=24, duplicates=3)
    assert x.shape[0] % 8 != 0  # a last block of fewer than 8 rows
    four = np.zeros(x.shape[0], np.bool_)
    four[-1] = True  # the Haswell rule's row too
    assert_matches_twin(_pruned, _pruned_twin, [(x, b, four, n, blocks)], rtol=0, atol=0)


def test_the_bound_covers_the_float32_error_on_real_descriptors():
    x, b = _real_case(words=32, duplicates=0)
    sq = np.einsum("md,md->m", x, x)
    b_sq = np.einsum("vd,vd->v", b, b)
    exact = np.maximum(sq[:, None] + b_sq[None, :] - 2.0 * (x @ b.T), 0.0)
    p32 = x.astype(np.float32) @ b.astype(np.float32).T
    approx = np.maximum(sq[:, None] + b_sq[None, :] - 2.0 * p32.astype(np.float64), 0.0)
    delta = _pruning.bound(sq, b, x.shape[1])
    err = np.abs(approx - exact).max(axis=1)
    assert np.all(err <= delta)
    assert np.all(delta < 1e-3)  # a bound that prunes: far below the distances' spread


@numba.njit
def _call_chains8x4(xt, b, words, out):
    _pruning.chains8x4(xt, b, words[0], words[1], words[2], words[3], out)


def _chains8x4(x, b, words):
    out = np.empty(32)
    _call_chains8x4(np.ascontiguousarray(x.T), b, words, out)
    return out.reshape(4, 8)


def _chains8x4_twin(x, b, words):
    return chain_products_twin(x, b[words], np.zeros(8, np.bool_), None).T


def test_vector_chains_match_the_exact_fma_twin_bit_for_bit():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 37)) * 10.0 ** rng.integers(-3, 4, (8, 1))
    b = rng.standard_normal((6, 37))
    assert_matches_twin(_chains8x4, _chains8x4_twin, [(x, b, np.array([5, 0, 0, 3]))], rtol=0, atol=0)
