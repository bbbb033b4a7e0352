"""From local descriptors to a BoW vector: mapping to visual words, then p-means pooling (SPEC §1).

Mappings m(l) in R^V of one local feature l (kept as the rows of a sparse M x V matrix, because the
explanation redistributes relevance through exactly these numbers):

* ``"hard"``: 1 for the nearest prototype (first index on ties), 0 elsewhere;
* ``"rank"`` (Bach et al. Eq 64): m_d(l) = base^(-rank_d(l)) if rank_d(l) <= n else 0, rank 1 being
  the nearest prototype (ties broken by prototype index, so the ranks are a permutation);
* ``"soft"`` (Eq 36): m_d(l) = exp(-beta ||v_l - b_d||^2) / sum_d' exp(-beta ||v_l - b_d'||^2), with
  the SQUARED Euclidean distance, computed stably by subtracting the smallest distance first.
  Entries that underflow to 0 are not stored.

p-means pooling (Eq 19), per channel u over its M_u features:
x_d = ((1/M_u) sum_l m_d(l)^p)^(1/p); p = 1 is mean pooling and p = inf (``np.inf``) max pooling.
For other p the sum is evaluated as c_d ((1/M_u) sum_l (m_d(l)/c_d)^p)^(1/p) with c_d = max_l m_d(l),
which is the same number without underflow for large p. Optional L1 normalisation is per channel
(a channel whose pooled vector is all zero stays zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

import numpy as np
import scipy.sparse as sp

from bowlrp.bow.vocabulary import squared_distances
from bowlrp.validation import check_p

__all__ = ["MAPPINGS", "Encoding", "check_mapping", "map_descriptors", "pool", "encode"]

MAPPINGS = ("hard", "rank", "soft")


@dataclass(frozen=True)
class Encoding:
    """One image's encoding.

    Attributes
    ----------
    mapping : scipy.sparse.csr_matrix of shape (M, V_total)
        m_d(l) before pooling; row l is non-zero only in the columns of feature l's channel.
    x : ndarray of shape (V_total,)
        The BoW vector after p-means pooling and optional per-channel L1 normalisation.
    channel_slices : list of slice
        The columns of each channel (channel u uses vocabulary u).
    p : float
        Pooling exponent (``np.inf`` for max pooling).
    """

    mapping: sp.csr_matrix
    x: np.ndarray
    channel_slices: list
    p: float


def check_mapping(mapping, rank_base=2.0, rank_n=4, soft_beta=1.0):
    """Validate mapping name and parameters; raise ValueError naming the problem."""
    if not isinstance(mapping, str) or mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; choose one of {', '.join(MAPPINGS)}")
    if mapping == "rank":
        if not isinstance(rank_base, Real) or not np.isfinite(rank_base) or rank_base <= 1:
            raise ValueError(f"rank_base must be a finite number > 1, got {rank_base!r}")
        if isinstance(rank_n, bool) or not isinstance(rank_n, (int, np.integer)) or rank_n < 1:
            raise ValueError(f"rank_n must be a positive integer, got {rank_n!r}")
    if mapping == "soft":
        if not isinstance(soft_beta, Real) or not np.isfinite(soft_beta) or soft_beta <= 0:
            raise ValueError(f"soft_beta must be a positive finite number, got {soft_beta!r}")


def map_descriptors(descriptors, prototypes, mapping="rank", rank_base=2.0, rank_n=4, soft_beta=1.0):
    """Sparse mapping matrix (M, V) of descriptors (M, D) onto prototypes (V, D).

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.encoding import map_descriptors
    >>> B = np.array([[0.0], [1.0], [3.0]])
    >>> map_descriptors(np.array([[0.9]]), B, "rank", rank_base=2.0, rank_n=2).toarray()
    array([[0.25, 0.5 , 0.  ]])
    """
    check_mapping(mapping, rank_base, rank_n, soft_beta)
    prototypes = np.asarray(prototypes, dtype=np.float64)
    M, V = np.asarray(descriptors).shape[0], prototypes.shape[0]
    if M == 0:
        return sp.csr_matrix((0, V))
    d2 = squared_distances(descriptors, prototypes)
    rows = np.arange(M)
    if mapping == "hard":
        cols = np.argmin(d2, axis=1)
        return sp.csr_matrix((np.ones(M), (rows, cols)), shape=(M, V))
    if mapping == "rank":
        n = min(int(rank_n), V)
        order = _nearest(d2, n)
        values = np.broadcast_to(float(rank_base) ** -np.arange(1, n + 1, dtype=np.float64), (M, n))
        indptr = np.arange(0, M * n + 1, n)
        m = sp.csr_matrix((values.ravel().copy(), order.ravel(), indptr), shape=(M, V))
        m.sort_indices()
        return m
    # soft: softmax of -beta d2, shifted by the row minimum so that the largest term is exp(0) = 1
    e = np.exp(-float(soft_beta) * (d2 - d2.min(axis=1, keepdims=True)))
    e /= e.sum(axis=1, keepdims=True)
    return sp.csr_matrix(e)


def _nearest(d2, n):
    """Indices of the n smallest entries of each row of d2, nearest first; equal distances are ranked
    by prototype index (exactly as a stable argsort would), so the result is deterministic.

    A full sort of all V distances per descriptor dominated encoding time; a partial selection of the
    n candidates costs O(V) per row.
    """
    V = d2.shape[1]
    if n >= V:
        return np.argsort(d2, axis=1, kind="stable")
    cand = np.argpartition(d2, n - 1, axis=1)[:, :n]
    cand_d = np.take_along_axis(d2, cand, axis=1)
    order = np.take_along_axis(cand, np.lexsort((cand, cand_d), axis=1), axis=1)
    # a tie across the n-th place may have let argpartition keep a higher index than a stable sort
    # would: redo those (rare) rows with the stable sort
    tied = np.count_nonzero(d2 <= cand_d.max(axis=1)[:, None], axis=1) > n
    if tied.any():
        order[tied] = np.argsort(d2[tied], axis=1, kind="stable")[:, :n]
    return order


def pool(mapping, p=1.0):
    """p-means pooling of a (M, V) sparse mapping matrix into a (V,) vector.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from bowlrp.bow.encoding import pool
    >>> m = sp.csr_matrix(np.array([[1.0, 0.0], [0.5, 0.5]]))
    >>> pool(m, 1.0), pool(m, np.inf)
    (array([0.75, 0.25]), array([1. , 0.5]))
    """
    p = check_p(p)
    mapping = sp.csr_matrix(mapping)
    M, V = mapping.shape
    if M == 0:
        return np.zeros(V)
    if p == 1.0:
        return np.asarray(mapping.sum(axis=0)).ravel() / M
    col_max = np.asarray(mapping.max(axis=0).toarray()).ravel()
    if np.isinf(p):
        return col_max
    csc = mapping.tocsc()
    x = np.zeros(V)
    for d in np.flatnonzero(col_max > 0):
        values = csc.data[csc.indptr[d]:csc.indptr[d + 1]] / col_max[d]
        x[d] = col_max[d] * (np.sum(values ** p) / M) ** (1.0 / p)
    return x


def encode(features, vocabularies, mapping="rank", rank_base=2.0, rank_n=4, soft_beta=1.0, p=1.0,
           normalize=True):
    """Encode one image's ``LocalFeatures`` with one vocabulary per channel.

    Parameters
    ----------
    features : LocalFeatures
        Descriptors (M, D) with their ``channel`` (M,) indices.
    vocabularies : list of VisualVocabulary or of (V_u, D) prototype arrays
        Vocabulary u encodes the features of channel u.
    mapping, rank_base, rank_n, soft_beta
        The mapping and its parameters (see the module docstring).
    p : float, default=1.0
        Pooling exponent in (0, inf]; ``np.inf`` is max pooling.
    normalize : bool, default=True
        L1-normalise each channel's pooled vector.

    Returns
    -------
    Encoding

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.encoding import encode
    >>> from bowlrp.bow.features import LocalFeatures
    >>> feats = LocalFeatures(descriptors=np.array([[0.1], [0.9], [1.2]]), centers=np.zeros((3, 2)),
    ...                       support=np.full(3, 16), channel=np.zeros(3, int), image_shape=(32, 32))
    >>> enc = encode(feats, [np.array([[0.0], [1.0]])], mapping="hard", p=1.0, normalize=False)
    >>> enc.mapping.toarray(), enc.x
    (array([[1., 0.],
           [0., 1.],
           [0., 1.]]), array([0.33333333, 0.66666667]))
    """
    check_mapping(mapping, rank_base, rank_n, soft_beta)
    p = check_p(p)
    prototypes = [np.asarray(getattr(v, "cluster_centers_", v), dtype=np.float64) for v in vocabularies]
    sizes = [b.shape[0] for b in prototypes]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    slices = [slice(int(offsets[u]), int(offsets[u + 1])) for u in range(len(sizes))]
    descriptors = np.asarray(features.descriptors, dtype=np.float64)
    channel = np.asarray(features.channel)
    M = descriptors.shape[0]
    if channel.size and (channel.min() < 0 or channel.max() >= len(prototypes)):
        raise ValueError(f"features have channel indices up to {channel.max()} but only "
                         f"{len(prototypes)} vocabularies were given")
    rows, cols, vals = [], [], []
    x = np.zeros(offsets[-1])
    for u, b in enumerate(prototypes):
        idx = np.flatnonzero(channel == u)
        if descriptors.shape[1] != b.shape[1]:
            raise ValueError(f"descriptors have dimension {descriptors.shape[1]}, vocabulary {u} "
                             f"expects {b.shape[1]}")
        m_u = map_descriptors(descriptors[idx], b, mapping, rank_base, rank_n, soft_beta).tocoo()
        rows.append(idx[m_u.row])
        cols.append(m_u.col + offsets[u])
        vals.append(m_u.data)
        x_u = pool(m_u.tocsr(), p)
        if normalize:
            total = x_u.sum()
            x_u = x_u / total if total > 0 else x_u
        x[slices[u]] = x_u
    m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(M, int(offsets[-1])))
    m.sort_indices()
    return Encoding(mapping=m, x=x, channel_slices=slices, p=p)
