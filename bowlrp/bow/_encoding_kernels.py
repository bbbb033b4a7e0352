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
    """p-means pooling of the rows of a CSR mapping into ``out`` (column ``offset + d`` -> ``out[d]``).

    ``p == 1``: mean (rows summed in order, then divided by ``n_rows``); ``p == inf``: max; other
    ``p``: ``c_d ((1/M) sum_l (m_ld / c_d)^p)^(1/p)`` with ``c_d`` the column maximum, which does not
    underflow for large ``p``.
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
    if p == np.inf:
        return
    sums = np.zeros(n_cols)
    for k in range(first, nnz):
        d = indices[k] - offset
        if out[d] > 0.0:
            sums[d] += (data[k] / out[d]) ** p
    for d in range(n_cols):
        if out[d] > 0.0:
            out[d] = out[d] * (sums[d] / n_rows) ** (1.0 / p)


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
