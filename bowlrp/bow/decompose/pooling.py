"""Step 2 of the explanation, BoW dimensions -> local features (Bach et al. 2015, Eqs 26-32).

Backward of the mapping and p-means pooling: each dimension's relevance is shared by the local
features in proportion to their share of the pooled value, m_d(l)^p / sum_l' m_d(l')^p; max pooling
(p = inf) gives it to the largest m_d(l), ties split equally (EXTENSION). Dimensions no feature maps
to ("uncovered") are split equally over the features of their channel (EXTENSION).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from bowlrp.validation import check_channel_slices, check_p

__all__ = ["feature_relevance"]


def feature_relevance(mapping, bow_rel, p=1.0, channel_slices=None, feature_channel=None) -> np.ndarray:
    """Step 2: share each BoW dimension's relevance among the local features (Eqs 26-32).

    For each channel u with features L_u (M_u = |L_u|) and dimensions D_u::

        col_d = sum_{l in L_u} m_d(l)^p,   Z_u = {d in D_u : col_d = 0}
        R2_l  = sum_{d in D_u \\ Z_u} R3_d m_d(l)^p / col_d  +  sum_{d in Z_u} R3_d / M_u

    For ``p = inf`` (max pooling) dimension d's relevance goes to the feature(s) with the largest
    m_d(l), ties split equally (EXTENSION). The shares are computed as (m_d(l) / max_l' m_d(l'))^p,
    which is the same fraction but cannot underflow for large p and tends to the max-pooling shares
    as p grows.

    Parameters
    ----------
    mapping : scipy.sparse matrix or ndarray of shape (M, V)
        m_d(l) before pooling (``Encoding.mapping``); must be non-negative.
    bow_rel : array-like of shape (V,)
        R3 (Step 3).
    p : float, default=1.0
        The pooling exponent (``Encoding.p``); ``np.inf`` for max pooling.
    channel_slices : list of slice, optional
        The dimensions of each channel; default one channel.
    feature_channel : array-like of shape (M,), int, optional
        The channel of each feature (``LocalFeatures.channel``); default channel 0 for all.

    Returns
    -------
    ndarray of shape (M,)
        R2. Sums to ``bow_rel.sum()`` except for the relevance of a channel that has no features.

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.decompose import feature_relevance
    >>> m = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # hard assignment
    >>> feature_relevance(m, np.array([2.0, 3.0, 0.3]), p=1.0)
    array([1.1, 1.1, 3.1])
    """
    p = check_p(p)
    m = mapping
    canonical = (sp.issparse(m) and m.format == "csr" and m.dtype == np.float64 and m.has_canonical_format
                 and np.all(m.data != 0))
    if not canonical:  # (an Encoding's mapping is canonical already: read as it is, never modified)
        m = sp.csr_matrix(mapping, dtype=np.float64, copy=True)  # never touch the caller's Encoding
        m.sum_duplicates()
        m.eliminate_zeros()
    n_feat, n_dims = m.shape
    r3 = np.asarray(bow_rel, dtype=np.float64).ravel()
    if r3.size != n_dims:
        raise ValueError(f"bow_rel has {r3.size} dimensions but the mapping has {n_dims} columns")
    if not np.all(np.isfinite(r3)):
        raise ValueError("BoW relevance contains NaN or inf")
    if m.nnz and (not np.all(np.isfinite(m.data)) or m.data.min() < 0):
        raise ValueError("mapping must be finite and non-negative")
    slices = check_channel_slices(channel_slices, n_dims)
    if feature_channel is None:
        if len(slices) != 1:
            raise ValueError("feature_channel is required when there are several channels")
        feature_channel = np.zeros(n_feat, dtype=np.int64)
    feature_channel = np.asarray(feature_channel).ravel()
    if feature_channel.size != n_feat:
        raise ValueError(f"feature_channel has {feature_channel.size} entries for {n_feat} features")
    if n_feat and (feature_channel.min() < 0 or feature_channel.max() >= len(slices)):
        raise ValueError(f"feature_channel values must lie in [0, {len(slices)})")

    # Column maxima (per dimension). A column is only fed by the features of its own channel.
    colmax = np.zeros(n_dims)
    if m.nnz:
        np.maximum.at(colmax, m.indices, m.data)
    # Shares w_ld = (m_ld / max_l' m_l'd)^p: per-column rescaling leaves m^p / col unchanged.
    ratio = m.data / colmax[m.indices]
    if np.isinf(p):
        w_data = (ratio == 1.0).astype(np.float64)
    else:
        w_data = ratio**p
    # col_d = sum_l w_ld and R2_l = sum_d w_ld R3_d / col_d, as plain bincounts over the CSR arrays
    # (each sums its terms in storage order, as scipy's own products do, without building objects)
    col = np.bincount(m.indices, weights=w_data, minlength=n_dims)
    covered = colmax > 0  # col >= 1 on these (the maximum itself contributes 1)
    scaled = np.zeros(n_dims)
    scaled[covered] = r3[covered] / col[covered]
    rows = np.repeat(np.arange(n_feat), np.diff(m.indptr))
    out = np.bincount(rows, weights=w_data * scaled[m.indices], minlength=n_feat)

    # Uncovered dimensions: equal split over the channel's features.
    for u, sl in enumerate(slices):
        uncovered = float(r3[sl][~covered[sl]].sum())
        if uncovered == 0.0:
            continue
        members = feature_channel == u
        n_u = int(members.sum())
        if n_u:
            out[members] += uncovered / n_u
    return out
