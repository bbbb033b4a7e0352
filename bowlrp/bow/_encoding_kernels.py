"""Numba kernels of the encoding (private; :mod:`bowlrp.bow.encoding` validates and wraps them).

The mapping of one image is kept as the arrays of a CSR matrix (``indptr``, ``indices``, ``data``): a
rank or hard mapping has the same number of entries ``n`` in every row, so the selection kernel writes
them in place, columns in increasing order within a row (scipy's canonical order). Pooling reads the
same arrays. Each kernel has a numpy twin in ``tests/bowlrp/bow/test_encoding.py``.
"""

from __future__ import annotations

import numpy as np

from bowlrp.bow._pairwise import pairwise_sum
from bowlrp.bow._sift_simd import compiles_for_avx512, vcompress_le8, vlane8, vload8, vmin8, vsplat8
from bowlrp.jit import jit_serial


@jit_serial
def nearest_words(d2, n, out):
    """``out[i]`` = indices of the ``n`` smallest entries of ``d2[i]``, nearest first (:func:`select_row`)."""
    if n == 0:  # (not in select_row: a branch there brought back numba's reference counting)
        return
    row = np.empty(d2.shape[1])
    kept = np.empty(n)
    candidates = np.empty(d2.shape[1], np.int64)
    seeds = np.arange(n)
    for i in range(d2.shape[0]):
        for j in range(row.shape[0]):  # loops, not row[:] = d2[i]: numba would compile (and each cold
            row[j] = d2[i, j]  # process recompile) the formatting of a slice's shape-mismatch message
        select_row(row, n, seeds, kept, out[i], candidates)
        for r in range(n):
            seeds[r] = out[i, r]


@jit_serial
def _select_bounded(row, n, seeds, kept, out, candidates):
    """:func:`select_row` on CPUs with AVX-512.

    First a bound on the n-th smallest distance, from two sets of n distinct entries (the n-th smallest
    is at most the largest of either): the ``n`` distinct indices ``seeds`` (the previous descriptor's
    nearest words, which neighbouring descriptors of a dense grid mostly share) and, for n <= 8, the
    n smallest of the minima of 8 groups of words (word j in group j % 8, one ``vmin8`` per 8 words;
    with fewer than 8 words, one group and a bound of +inf for n > 1). Then one branch-free pass
    (``vcompress_le8``) keeps the indices of the entries at or below the bound in ``candidates``, and
    only those are insertion-sorted, in index order. On real descriptors (64 and 256 words) about
    n + 1 entries pass for n <= 4 (about 15 for n = 8), where the seeds' bound alone let 13 of 64
    through for n = 4, each a mispredicted branch in :func:`_select_seeded`'s single pass. The kernel
    got 1.8x faster for n = 4 (2.0x on 256 words; benchmarks/README.md, bench_encoding); an AVX2
    build, without masked moves and ``vpcompressq``, was slower than the seeded pass for n = 1 and 8,
    hence the choice by CPU.

    ``row`` must be contiguous (8 words are loaded at a time); it is left unchanged.
    """
    n_words = row.shape[0]
    bound = row[seeds[0]]
    for s in range(1, n):
        d = row[seeds[s]]
        bound = d if d > bound else bound
    stop = n_words - n_words % 8
    if n <= 8:
        minima = vsplat8(np.inf)
        for j in range(0, stop, 8):
            minima = vmin8(minima, vload8(row, j))
        first = vlane8(minima, 0)
        for j in range(stop, n_words):  # the last words (fewer than 8) join group 0
            first = min(first, row[j])
        bound = min(bound, _nth_of_8(first, vlane8(minima, 1), vlane8(minima, 2), vlane8(minima, 3),
                                     vlane8(minima, 4), vlane8(minima, 5), vlane8(minima, 6),
                                     vlane8(minima, 7), n))
    c = 0
    for j in range(0, stop, 8):  # writes candidates[c:c + 8], c <= j: within the row's length
        c = vcompress_le8(row, j, bound, candidates, c)
    for j in range(stop, n_words):
        candidates[c] = j
        c += row[j] <= bound
    # at least n candidates: the entries of either set are at or below the bound; only NaN (never
    # passed) could break that, and then every word is a candidate, so out holds n valid indices
    if c < n:
        for j in range(n_words):
            candidates[j] = j
        c = n_words
    # insertion sort in index order: the first n candidates, then those before the n-th kept entry.
    # (a branch-free insertion of each candidate into n registers, and ranks by counting, were
    # both measured: no faster with so few candidates)
    for q in range(n):
        _insert(kept, out, q, row[candidates[q]], candidates[q])
    for q in range(n, c):
        j = candidates[q]
        d = row[j]
        if d < kept[n - 1] or (d == kept[n - 1] and j < out[n - 1]):
            _insert(kept, out, n - 1, d, j)


@jit_serial
def _select_seeded(row, n, seeds, kept, out, candidates):
    """:func:`select_row` on other CPUs: one pass over the row from the seeds' entries.

    The ``n`` distinct indices ``seeds`` are kept first: the previous descriptor's nearest words, which
    neighbouring descriptors of a dense grid (overlapping supports) mostly share. Then one pass over
    the row inserts whatever comes before the n-th kept entry; with good seeds that is rare, and the
    pass is one well-predicted comparison per entry (an insertion mispredicts a branch or two, and
    starting from the first n words, insertions were most of the cost of a row). The seeds' entries
    of ``row`` (overwritten) are set to +inf so that the pass does not meet them again; ``candidates``
    is not used.
    """
    for s in range(n):  # insertion sort of the seeds
        _insert(kept, out, s, row[seeds[s]], seeds[s])
    for s in range(n):
        row[seeds[s]] = np.inf
    # the n-th kept entry in locals: LLVM cannot tell that the stores of an insertion leave ``row``
    # alone, so it reloaded kept[n - 1] and out[n - 1] for every entry (2-12 % of the kernel's time)
    last_d = kept[n - 1]
    last_j = out[n - 1]
    for j in range(row.shape[0]):
        d = row[j]
        if d > last_d or (d == last_d and j >= last_j):
            continue  # not before the n-th kept entry
        kept_already = False  # a seed (when the kept distances are +inf themselves)
        for k in range(n):
            kept_already |= out[k] == j
        if not kept_already:
            _insert(kept, out, n - 1, d, j)
            last_d = kept[n - 1]
            last_j = out[n - 1]


@jit_serial(inline="always")
def _insert(kept, out, k, d, j):
    """Put (d, j) into the sorted ``kept``/``out`` at or below place ``k`` (whose entry drops out),
    after every kept entry with a smaller (distance, index) pair."""
    while k > 0 and (kept[k - 1] > d or (kept[k - 1] == d and out[k - 1] > j)):
        kept[k] = kept[k - 1]
        out[k] = out[k - 1]
        k -= 1
    kept[k] = d
    out[k] = j


@jit_serial(inline="always")
def _nth_of_8(s0, s1, s2, s3, s4, s5, s6, s7, n):
    """The n-th smallest of 8 floats (n = 1..8; +inf for larger n): an optimal 19-comparator sorting
    network (Knuth, TAOCP 5.3.4), each comparator a ``vminsd`` and a ``vmaxsd`` (the builtins: a
    compare and two selects per comparator were slower, and their 19 inlined calls added 0.25 s to the
    kernel's compilation), then the n-th output. Equal values may leave in either order, which does
    not matter for a value."""
    s0, s2 = min(s0, s2), max(s0, s2)
    s1, s3 = min(s1, s3), max(s1, s3)
    s4, s6 = min(s4, s6), max(s4, s6)
    s5, s7 = min(s5, s7), max(s5, s7)
    s0, s4 = min(s0, s4), max(s0, s4)
    s1, s5 = min(s1, s5), max(s1, s5)
    s2, s6 = min(s2, s6), max(s2, s6)
    s3, s7 = min(s3, s7), max(s3, s7)
    s0, s1 = min(s0, s1), max(s0, s1)
    s2, s3 = min(s2, s3), max(s2, s3)
    s4, s5 = min(s4, s5), max(s4, s5)
    s6, s7 = min(s6, s7), max(s6, s7)
    s2, s4 = min(s2, s4), max(s2, s4)
    s3, s5 = min(s3, s5), max(s3, s5)
    s1, s4 = min(s1, s4), max(s1, s4)
    s3, s6 = min(s3, s6), max(s3, s6)
    s1, s2 = min(s1, s2), max(s1, s2)
    s3, s4 = min(s3, s4), max(s3, s4)
    s5, s6 = min(s5, s6), max(s5, s6)
    t = s0 if n == 1 else s1
    t = s2 if n == 3 else t
    t = s3 if n == 4 else t
    t = s4 if n == 5 else t
    t = s5 if n == 6 else t
    t = s6 if n == 7 else t
    t = s7 if n == 8 else t
    return np.inf if n > 8 else t


# select_row(row, n, seeds, kept, out, candidates): ``out[:n]`` = indices of the ``n`` smallest entries of
# ``row``, nearest first. Equal distances are ranked by index, exactly as a stable argsort: entries are
# ordered by the pair (distance, index), so the result does not depend on the order in which they are
# visited. ``seeds`` are n distinct indices expected near the front (the previous descriptor's nearest
# words); ``row`` (contiguous, may be overwritten), ``kept`` (n floats) and ``candidates`` (``len(row)``
# ints) are scratch. n >= 1 (callers return early for 0); distances must not be NaN (+inf is fine). Two
# implementations of the same result, chosen by the CPU numba compiles for (its cache keeps the two builds
# apart).
select_row = _select_bounded if compiles_for_avx512() else _select_seeded


@jit_serial
def pool_csr(indptr, indices, data, offset, p, out):
    """Mean (``p == 1``) or max (any other ``p``) pooling of the rows of a CSR mapping into ``out``
    (column ``offset + d`` -> ``out[d]``); the rows are summed in order, then divided by their number.

    Other ``p`` start from the maxima: see :func:`column_ratios` and :func:`scale_pooled`.
    """
    n_cols = out.shape[0]
    n_rows = indptr.shape[0] - 1
    for d in range(n_cols):
        out[d] = 0.0
    if n_rows == 0:
        return
    first = indptr[0]
    nnz = indptr[n_rows]
    if p == 1.0:
        for k in range(first, nnz):
            out[indices[k] - offset] += data[k]
        for d in range(n_cols):
            out[d] /= n_rows
        return
    for k in range(first, nnz):
        if data[k] > out[indices[k] - offset]:
            out[indices[k] - offset] = data[k]


@jit_serial
def column_ratios(indptr, indices, data, offset, col_max):
    """Each column's entries in row order, divided by the column maximum, columns one after another.

    Returns ``(ratios, bounds)``: column ``d``'s ratios are ``ratios[bounds[d]:bounds[d + 1]]`` (the
    order in which the scipy/numpy version this replaced summed them). Columns whose maximum is 0
    hold zeros.
    """
    n_cols = col_max.shape[0]
    first = indptr[0]
    nnz = indptr[indptr.shape[0] - 1]
    bounds = np.zeros(n_cols + 1, np.int64)
    for k in range(first, nnz):
        bounds[indices[k] - offset + 1] += 1
    for d in range(n_cols):
        bounds[d + 1] += bounds[d]
    ratios = np.empty(nnz - first)
    fill = bounds[:-1].copy()
    for k in range(first, nnz):
        d = indices[k] - offset
        ratios[fill[d]] = data[k] / col_max[d] if col_max[d] > 0.0 else 0.0
        fill[d] += 1
    return ratios, bounds


@jit_serial
def scale_pooled(powers, bounds, n_rows, p, out):
    """``out[d] *= (sum of column d's powers / n_rows)^(1/p)`` where ``out[d] > 0`` (the column maxima).

    The sums are pairwise in numpy's order (``np.sum``), so the pooled vector equals the numpy one.
    """
    for d in range(out.shape[0]):
        if out[d] > 0.0:
            total = pairwise_sum(powers, bounds[d], bounds[d + 1] - bounds[d])
            out[d] = out[d] * (total / n_rows) ** (1.0 / p)


@jit_serial
def rank_from_products(products, sq_norms, proto_sq_norms, n, values, offset, indices, data):
    """Rank mapping of one channel's descriptors straight from their products with the prototypes.

    Row ``i`` gets ``n`` entries at ``indices/data[i * n : (i + 1) * n]``. The squared distances are
    ``max(sq_norms[i] + proto_sq_norms[j] - 2 products[i, j], 0)``, the very operations (and order)
    of :func:`bowlrp.bow.vocabulary.squared_distances`, so the ranks are those of those distances;
    they are formed one row at a time and never stored.
    """
    n_rows, n_words = products.shape
    if n == 0:  # (not in select_row: a branch there brought back numba's reference counting)
        return
    d2 = np.empty(n_words)  # one row at a time (scratch of select_row)
    kept = np.empty(n)
    candidates = np.empty(n_words, np.int64)
    nearest = np.empty(n, np.int64)
    seeds = np.arange(n)  # then each row starts from the previous row's nearest words
    for i in range(n_rows):
        for j in range(n_words):
            d = sq_norms[i] + proto_sq_norms[j]
            d -= 2.0 * products[i, j]
            d2[j] = d if d >= 0.0 else 0.0  # np.maximum(d, 0.0), -0.0 included
        select_row(d2, n, seeds, kept, nearest, candidates)
        for r in range(n):  # not seeds[:] = nearest: see nearest_words
            seeds[r] = nearest[r]
        write_row_sorted(nearest, values, offset, i * n, indices, data)


@jit_serial(inline="always")
def write_row_sorted(nearest, values, offset, start, indices, data):
    """Write a row's ``n`` words (``nearest``, nearest first, with ``values[r]`` for rank r) at
    ``indices/data[start:start + n]``, columns (``nearest + offset``) in increasing order: an insertion
    sort of the (column, value) pairs (scipy's canonical order)."""
    for r in range(nearest.shape[0]):
        col = nearest[r] + offset
        k = r
        while k > 0 and indices[start + k - 1] > col:
            indices[start + k] = indices[start + k - 1]
            data[start + k] = data[start + k - 1]
            k -= 1
        indices[start + k] = col
        data[start + k] = values[r]


@jit_serial
def channel_blocks(channel, row_bounds, n_channels, out):
    """Each image's channel blocks, for a batch whose ``channel`` arrays are concatenated.

    Image ``g`` owns ``channel[row_bounds[g]:row_bounds[g + 1]]``; ``out[g, u]`` becomes the number of
    its features whose channel is below ``u`` (``np.searchsorted(channel_g, u)``, u = 0..n_channels),
    so channel u's features are rows ``out[g, u]:out[g, u + 1]`` of the image. Returns False (and
    leaves ``out`` partly written) when an image's channels are not in increasing order or not in
    ``[0, n_channels)``: those batches take the general path, which also names the problem.
    """
    for g in range(row_bounds.shape[0] - 1):
        lo, hi = row_bounds[g], row_bounds[g + 1]
        u = 0
        for i in range(lo, hi):
            c = channel[i]
            if c < 0 or c >= n_channels or (i > lo and c < channel[i - 1]):
                return False
            while u <= c:
                out[g, u] = i - lo
                u += 1
        while u <= n_channels:
            out[g, u] = hi - lo
            u += 1
    return True


@jit_serial
def pool_images(indptr, indices, data, row_bounds, offset, n_cols, p, normalize, out):
    """Mean (``p == 1``) or max pooling of every image of a batch, optionally L1-normalised.

    The rows of image ``g`` are ``row_bounds[g]:row_bounds[g + 1]`` of one CSR mapping (``indptr``,
    ``indices``, ``data``; columns carry ``offset``); its pooled vector goes to
    ``out[g, offset:offset + n_cols]`` exactly as :func:`pool_csr` computes it. ``normalize`` divides
    it by its sum (numpy's pairwise ``sum``) when that is positive, as ``x /= x.sum()`` does.
    """
    for g in range(row_bounds.shape[0] - 1):
        x = out[g, offset:offset + n_cols]
        pool_csr(indptr[row_bounds[g]:row_bounds[g + 1] + 1], indices, data, offset, p, x)
        if normalize:
            total = pairwise_sum(out[g], offset, n_cols)  # x's entries; a literal 0 start
            # would compile pairwise_sum and its block sum once more (for Literal[int](0))
            if total > 0.0:
                for d in range(n_cols):
                    x[d] /= total
