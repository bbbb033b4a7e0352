"""Numba kernels of the encoding (private; :mod:`bowlrp.bow.encoding` validates and wraps them).

The mapping of one image is kept as the arrays of a CSR matrix (``indptr``, ``indices``, ``data``): a
rank or hard mapping has the same number of entries ``n`` in every row, so the selection kernel writes
them in place, columns in increasing order within a row (scipy's canonical order). Pooling reads the
same arrays. Each kernel has a numpy twin in ``tests/bowlrp/bow/test_encoding.py``.
"""

from __future__ import annotations

import numpy as np

from bowlrp.jit import jit_serial


@jit_serial
def nearest_words(d2, n, out):
    """``out[i]`` = indices of the ``n`` smallest entries of ``d2[i]``, nearest first.

    Equal distances are ranked by index, exactly as a stable argsort: an entry displaces a kept one
    only when it is strictly nearer, and it is inserted after every kept entry at the same distance.
    One pass over the row with an insertion buffer: O(V) for the usual small ``n``.
    """
    n_rows, n_words = d2.shape
    for i in range(n_rows):
        count = 0
        for j in range(n_words):
            d = d2[i, j]
            if count == n and not d < d2[i, out[i, n - 1]]:
                continue
            k = count if count < n else n - 1
            while k > 0 and d2[i, out[i, k - 1]] > d:
                out[i, k] = out[i, k - 1]
                k -= 1
            out[i, k] = j
            if count < n:
                count += 1


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
            total = _pairwise_sum(powers, bounds[d], bounds[d + 1] - bounds[d])
            out[d] = out[d] * (total / n_rows) ** (1.0 / p)


@jit_serial
def _pairwise_sum(a, start, n):
    """``np.sum(a[start:start + n])`` in numpy's pairwise order (8 running sums in blocks of 128)."""
    if n < 8:
        res = -0.0
        for i in range(n):
            res += a[start + i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
        r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
        i = 8
        while i < n - n % 8:
            r0 += a[start + i]
            r1 += a[start + i + 1]
            r2 += a[start + i + 2]
            r3 += a[start + i + 3]
            r4 += a[start + i + 4]
            r5 += a[start + i + 5]
            r6 += a[start + i + 6]
            r7 += a[start + i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[start + i]
            i += 1
        return res
    half = n // 2
    half -= half % 8
    return _pairwise_sum(a, start, half) + _pairwise_sum(a, start + half, n - half)


@jit_serial
def rank_from_products(products, sq_norms, proto_sq_norms, n, values, offset, indices, data):
    """Rank mapping of one channel's descriptors straight from their products with the prototypes.

    Row ``i`` gets ``n`` entries at ``indices/data[i * n : (i + 1) * n]``. The squared distances are
    ``max(sq_norms[i] + proto_sq_norms[j] - 2 products[i, j], 0)``, the very operations (and order)
    of :func:`bowlrp.bow.vocabulary.squared_distances`, so the ranks are those of those distances;
    they are formed one row at a time and never stored.
    """
    n_rows, n_words = products.shape
    d2 = np.empty((1, n_words))  # one row at a time, as a matrix for nearest_words
    nearest = np.empty((1, n), np.int64)
    for i in range(n_rows):
        for j in range(n_words):
            d = sq_norms[i] + proto_sq_norms[j]
            d -= 2.0 * products[i, j]
            d2[0, j] = d if d >= 0.0 else 0.0  # np.maximum(d, 0.0), -0.0 included
        nearest_words(d2, n, nearest)
        start = i * n
        # insertion sort of the n (column, value) pairs by column (scipy's canonical order)
        for r in range(n):
            col = nearest[0, r] + offset
            k = r
            while k > 0 and indices[start + k - 1] > col:
                indices[start + k] = indices[start + k - 1]
                data[start + k] = data[start + k - 1]
                k -= 1
            indices[start + k] = col
            data[start + k] = values[r]
