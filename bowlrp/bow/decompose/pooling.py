"""Step 2 of the explanation, BoW dimensions -> local features (Bach et al. 2015, Eqs 26-32).

Backward of the mapping and p-means pooling: each dimension's relevance is shared by the local
features in proportion to their share of the pooled value, m_d(l)^p / sum_l' m_d(l')^p; max pooling
(p = inf) gives it to the largest m_d(l), ties split equally (EXTENSION). Dimensions no feature maps
to ("uncovered") are split equally over the features of their channel (EXTENSION).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from bowlrp.bow.decompose import _kernels as _k
from bowlrp.validation import check_channel_slices, check_p

__all__ = ["channel_ends", "feature_relevance", "share_weights", "uncovered_shares"]


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
        m = _canonical_copy(mapping)
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
    given = np.asarray(feature_channel).ravel()
    feature_channel = given.astype(np.int64)
    if not np.array_equal(feature_channel, given):
        raise ValueError("feature_channel must hold integer channel indices")
    if feature_channel.size != n_feat:
        raise ValueError(f"feature_channel has {feature_channel.size} entries for {n_feat} features")
    if n_feat and (feature_channel.min() < 0 or feature_channel.max() >= len(slices)):
        raise ValueError(f"feature_channel values must lie in [0, {len(slices)})")

    while True:
        indptr, indices = m.indptr.astype(np.int64), m.indices.astype(np.int64)
        colmax, ratio = np.zeros((1, n_dims)), np.zeros(m.nnz)
        feat_off, nnz_off = np.array([0, n_feat], np.int64), np.array([0, m.nnz], np.int64)
        bad = np.zeros(1, bool)
        _k.prepare(indptr, indices, m.data, feat_off, nnz_off, colmax, ratio, bad)
        if not bad[0] or m is not mapping:
            break
        # scipy's has_canonical_format is a cached flag that an in-place edit of the matrix leaves
        # stale (entries reordered or zeroed): read a canonical copy instead
        m = _canonical_copy(mapping)
    counts = np.bincount(feature_channel, minlength=len(slices))[None, :]
    extra = uncovered_shares(r3[None, :], colmax > 0, slices, counts)
    out = np.zeros(n_feat)
    _k.relevance(indptr, indices, share_weights(ratio, p), feat_off, nnz_off, feature_channel,
                 np.zeros(1, np.int64), bad, colmax, r3[None, :], extra, np.zeros((0, 4), np.int64),
                 np.zeros((1, 2), np.int64), np.zeros(1, np.int64), out, False, np.zeros((0, 3)))
    return out


def share_weights(ratio, p):
    """The shares w = (m / max_l' m_l'd)^p from the ratios m / max, as numpy computes the power.

    ``ratio**p`` through numpy (``x**1.0`` is x itself, ``**2.0`` and ``**0.5`` numpy's ``square``
    and ``sqrt``, other exponents its ``power``); max pooling (p = inf) gives 1 to the maxima only.
    Element by element, so the shares of a batch are those of each image on its own.
    """
    if np.isinf(p):
        return (ratio == 1.0).astype(np.float64)
    return ratio if p == 1.0 else ratio**p


def uncovered_shares(r3, covered, slices, counts):
    """(n, n_channels) equal shares of the uncovered dimensions (EXTENSION), 0 where nothing is added.

    Row k, channel u: the relevance of the channel's dimensions that no feature of the image maps to
    (``covered[k] == False``), summed by numpy, divided by the channel's feature count ``counts[k, u]``
    (nothing when that sum is 0 or the channel has no features: its relevance is then lost). One numba
    call (:func:`._kernels.uncovered_sums`, the numbers of numpy's masked row sums) instead of a Python
    loop over the images and channels.
    """
    counts = np.asarray(counts)
    if counts.size and counts.dtype.kind not in "iub":
        raise TypeError(f"counts must be whole feature counts (an integer array), got {counts.dtype}")
    starts, stops = channel_ends(slices, r3.shape[1])
    covered = np.asarray(covered)
    if r3.ndim != 2 or covered.shape != r3.shape or counts.shape != (r3.shape[0], len(slices)):
        raise ValueError(f"uncovered shares need r3 (n, V), covered of the same shape and counts (n, "
                         f"n_channels); got {np.shape(r3)}, {covered.shape} and {counts.shape} for "
                         f"{len(slices)} channels")
    extra = np.zeros((r3.shape[0], max(1, len(slices))))
    if r3.shape[0] and len(slices):
        r3, covered = np.ascontiguousarray(r3, dtype=np.float64), np.ascontiguousarray(covered, dtype=bool)
        _k.uncovered_sums(r3, covered, np.arange(r3.shape[0]), starts, stops,
                          np.ascontiguousarray(counts, dtype=np.int64), extra)
    return extra


def channel_ends(slices, n_dims):
    """The first and past-the-last dimension of each channel's slice, two int64 arrays (the channels'
    slices must be contiguous, step 1)."""
    if any(sl.step not in (None, 1) for sl in slices):
        raise ValueError("channel slices must be contiguous (step 1)")
    ends = np.array([sl.indices(n_dims)[:2] for sl in slices], np.int64).reshape(len(slices), 2)
    return ends[:, 0].copy(), ends[:, 1].copy()


def _canonical_copy(mapping):
    """A float64 CSR copy of ``mapping`` with sorted, summed, non-zero entries (the caller's matrix,
    perhaps an ``Encoding``'s, is never touched)."""
    m = sp.csr_matrix(mapping, dtype=np.float64, copy=True)
    m.has_canonical_format = False  # recomputed, not trusted: the flag may be stale
    m.sum_duplicates()
    m.eliminate_zeros()
    return m
