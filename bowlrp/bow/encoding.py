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

Speed: each image and channel gets one float64 matrix product with the prototypes (BLAS, one image at
a time: OpenBLAS gives a row other last bits when it is part of a taller product, so the numbers would
depend on the batch), the rest is numba (:mod:`bowlrp.bow._encoding_kernels`). The hard and rank
mappings of a batch of images go through one buffer per channel: its products, then one kernel call
selecting every row's words (written in CSR layout) and one pooling every image; the scipy matrix of
the mapping is only built when the explanation asks for it. :func:`encode_many` runs batches on
threads (:func:`bowlrp.jit.parallel_map`). float32 products would halve the dominant cost but reorder
near-ties of the distances, so they are not used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from numbers import Real

import numba
import numpy as np
import scipy.sparse as sp

from bowlrp.bow import _encoding_kernels as _k
from bowlrp.bow.vocabulary import squared_distances
from bowlrp.jit import parallel_map, use_parallel
from bowlrp.validation import check_p, offsets

__all__ = ["MAPPINGS", "Encoding", "check_mapping", "map_descriptors", "pool", "encode", "encode_many"]

MAPPINGS = ("hard", "rank", "soft")
# descriptors per batch of the hard/rank path: the products of a batch (rows x words) stay a few MB,
# and a batch of 64 x 64 crops (~170 descriptors each) holds a dozen images
_BATCH_ROWS = 2048


@dataclass(frozen=True)
class Encoding:
    """One image's encoding.

    Attributes
    ----------
    x : ndarray of shape (V_total,)
        The BoW vector after p-means pooling and optional per-channel L1 normalisation.
    channel_slices : list of slice
        The columns of each channel (channel u uses vocabulary u).
    p : float
        Pooling exponent (``np.inf`` for max pooling).
    csr : tuple of ndarray
        ``(indptr, indices, data)`` of the mapping, rows in feature order, columns sorted in each row.
    mapping : scipy.sparse.csr_matrix of shape (M, V_total)
        m_d(l) before pooling, built from ``csr`` on first access; row l is non-zero only in the
        columns of feature l's channel.
    """

    x: np.ndarray
    channel_slices: list
    p: float
    csr: tuple = field(repr=False)

    @functools.cached_property
    def mapping(self):
        indptr, indices, data = self.csr
        return sp.csr_matrix((data, indices, indptr), shape=(indptr.size - 1, self.x.size))


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


def _rank_values(mapping, rank_base, rank_n, n_words):
    """(n, values): the entries a row of a rank or hard mapping holds, nearest word first."""
    if mapping == "hard":
        return 1, np.ones(1)
    n = min(int(rank_n), n_words)
    return n, float(rank_base) ** -np.arange(1, n + 1, dtype=np.float64)


def _map_rows(descriptors, prototypes, proto_sq_norms, mapping, rank_base, rank_n, soft_beta, offset=0):
    """CSR arrays ``(indptr, indices, data)`` of the mapping of ``descriptors`` (M, D), columns shifted
    by ``offset``. The distances are those of :func:`~bowlrp.bow.vocabulary.squared_distances`."""
    M, V = descriptors.shape[0], prototypes.shape[0]
    sq_norms = np.einsum("md,md->m", descriptors, descriptors)
    if not np.all(np.isfinite(sq_norms)):  # NaN or inf in a descriptor (or an overflowing norm)
        bad = int(np.flatnonzero(~np.isfinite(sq_norms))[0])
        raise ValueError(f"descriptor {bad} contains NaN or infinite values (or values too large to "
                         "square); descriptors must be finite")
    if mapping == "soft":
        d2 = squared_distances(descriptors, prototypes, proto_sq_norms)
        # softmax of -beta d2, shifted by the row minimum so that the largest term is exp(0) = 1;
        # entries that underflow to 0 are not stored
        e = np.exp(-float(soft_beta) * (d2 - d2.min(axis=1, keepdims=True)))
        e /= e.sum(axis=1, keepdims=True)
        rows, cols = np.nonzero(e)
        indptr = np.zeros(M + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=M), out=indptr[1:])
        return indptr, (cols + offset).astype(np.int64), e[rows, cols]
    n, values = _rank_values(mapping, rank_base, rank_n, V)
    indices = np.empty(M * n, np.int64)
    data = np.empty(M * n, np.float64)
    if M:
        # the distance formula is evaluated row by row inside the selection kernel
        products = descriptors @ prototypes.T
        _k.rank_from_products(products, sq_norms, proto_sq_norms, n, values, offset, indices, data)
    return np.arange(0, M * n + 1, n, dtype=np.int64), indices, data


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
    _check_prototypes(prototypes, "prototypes")
    M, V = np.asarray(descriptors).shape[0], prototypes.shape[0]
    if M == 0:
        return sp.csr_matrix((0, V))
    descriptors = np.asarray(descriptors, dtype=np.float64)
    indptr, indices, data = _map_rows(descriptors, prototypes, np.einsum("vd,vd->v", prototypes, prototypes),
                                      mapping, rank_base, rank_n, soft_beta)
    return sp.csr_matrix((data, indices, indptr), shape=(M, V))


def _nearest(d2, n):
    """Indices of the n smallest entries of each row of d2, nearest first; equal distances are ranked
    by prototype index (exactly as a stable argsort would), so the result is deterministic."""
    d2 = np.ascontiguousarray(d2, dtype=np.float64)
    n = min(int(n), d2.shape[1])
    out = np.empty((d2.shape[0], n), np.int64)
    _k.nearest_words(d2, n, out)
    return out


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
    mapping = sp.csr_matrix(mapping, dtype=np.float64)
    x = np.zeros(mapping.shape[1])
    _pool_csr((mapping.indptr.astype(np.int64), mapping.indices.astype(np.int64), mapping.data), 0, p, x)
    return x


def _pool_csr(csr, offset, p, out):
    """p-means pooling of the CSR arrays ``csr`` (rows = features) into ``out`` (see :func:`pool`)."""
    indptr, indices, data = csr
    _k.pool_csr(indptr, indices, data, offset, p, out)  # the mean, or the column maxima
    _scale_maxima(csr, offset, p, out)


def _scale_maxima(csr, offset, p, out):
    """Turn the column maxima ``out`` of the CSR arrays ``csr`` into their p-means (p not 1 or inf)."""
    indptr, indices, data = csr
    if p == 1.0 or np.isinf(p) or indptr.size < 2:
        return
    # c_d ((1/M) sum_l (m_ld / c_d)^p)^(1/p): the powers by numpy itself (its fast paths for p = 2
    # and 0.5, and its own vectorised pow), so the numbers are those of the numpy version
    ratios, bounds = _k.column_ratios(indptr, indices, data, offset, out)
    _k.scale_pooled(np.power(ratios, p), bounds, indptr.size - 1, p, out)


def _prototypes(vocabularies):
    """(prototypes, their squared norms) per channel: computed once for a batch."""
    prototypes = [np.asarray(getattr(v, "cluster_centers_", v), dtype=np.float64) for v in vocabularies]
    for u, b in enumerate(prototypes):
        _check_prototypes(b, f"vocabulary {u}")
    return [(b, np.einsum("vd,vd->v", b, b)) for b in prototypes]


def _check_prototypes(b, name):
    if b.ndim != 2 or b.shape[0] == 0 or not np.all(np.isfinite(b)):
        raise ValueError(f"{name} must be a non-empty finite (V, D) array of prototypes, got shape {b.shape}"
                         + ("" if b.ndim != 2 or b.shape[0] == 0 else " with NaN or infinite values"))


def _channel_columns(prototypes):
    """(bounds, slices): the BoW columns of each channel (channel u uses vocabulary u)."""
    bounds = offsets([b.shape[0] for b, _ in prototypes])
    return bounds, [slice(int(bounds[u]), int(bounds[u + 1])) for u in range(len(prototypes))]


def _encode_one(features, prototypes, mapping, rank_base, rank_n, soft_beta, p, normalize):
    bounds, slices = _channel_columns(prototypes)
    descriptors = np.asarray(features.descriptors, dtype=np.float64)
    channel = np.asarray(features.channel)
    if channel.size and (channel.min() < 0 or channel.max() >= len(prototypes)):
        raise ValueError(f"features have channel indices up to {channel.max()} but only "
                         f"{len(prototypes)} vocabularies were given")
    x = np.zeros(bounds[-1])
    parts, rows = [], []
    # DenseSIFT gives the channels one after another: then each is a slice, not a gathered copy
    contiguous = bool(np.all(channel[:-1] <= channel[1:]))
    for u, (b, b_sq) in enumerate(prototypes):
        if descriptors.shape[1] != b.shape[1]:
            raise ValueError(f"descriptors have dimension {descriptors.shape[1]}, vocabulary {u} "
                             f"expects {b.shape[1]}")
        if contiguous:
            lo, hi = np.searchsorted(channel, [u, u + 1])
            idx, mine = np.arange(lo, hi), descriptors[lo:hi]
        else:
            idx = np.flatnonzero(channel == u)
            mine = descriptors[idx]
        if idx.size:
            csr = _map_rows(mine, b, b_sq, mapping, rank_base, rank_n, soft_beta, int(bounds[u]))
            x_u = x[slices[u]]
            _pool_csr(csr, int(bounds[u]), p, x_u)
            if normalize:
                _normalize(x_u)
            parts.append(csr)
            rows.append(idx)
    csr = _stack_rows(parts, rows, descriptors.shape[0], in_order=contiguous)
    return Encoding(x=x, channel_slices=slices, p=p, csr=csr)


def _normalize(x_u):
    """L1-normalise one channel's pooled vector in place (an all-zero vector stays zero)."""
    total = x_u.sum()
    if total > 0:
        x_u /= total


def _stack_rows(parts, rows, n_rows, in_order):
    """One CSR (indptr, indices, data) of the channels' row blocks, rows back in feature order.

    ``in_order``: the blocks' rows, one after another, are already the features in order.
    """
    if len(parts) == 1 and in_order:
        return parts[0]
    if not parts:
        return np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int64), np.zeros(0)
    counts = np.concatenate([np.diff(indptr) for indptr, _, _ in parts])
    indices = np.concatenate([c for _, c, _ in parts])
    data = np.concatenate([d for _, _, d in parts])
    if not in_order:
        order = np.concatenate(rows)
        # channels interleaved: gather each feature's entries from its block
        starts = offsets(counts)[:-1]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        counts, starts = counts[inverse], starts[inverse]
        take = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)] or [np.zeros(0, int)])
        indices, data = indices[take], data[take]
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, indices, data


def _encode_batch(features, prototypes, mapping, rank_base, rank_n, p, normalize):
    """Encodings of several images with a hard or rank mapping, the numbers of :func:`_encode_one`.

    Each image still gets its own BLAS products per channel (the very calls of :func:`_encode_one`, so
    the distances are bit-identical), but written into one buffer per channel, and one kernel call per
    channel selects the words and pools every image: at 64 x 64 an image has ~170 descriptors, and the
    per-image allocations, checks and kernel calls cost as much as the products. A batch whose channels
    are interleaved or out of range, whose dimensions do not match or whose descriptors are not finite
    goes through :func:`_encode_one`, which handles or names the problem.
    """
    def general():
        return [_encode_one(f, prototypes, mapping, rank_base, rank_n, 1.0, p, normalize) for f in features]

    descriptors = [np.asarray(f.descriptors, dtype=np.float64) for f in features]
    channels = [np.asarray(f.channel) for f in features]
    dim = prototypes[0][0].shape[1]
    if (any(b.shape[1] != dim for b, _ in prototypes)
            or any(d.ndim != 2 or d.shape[1] != dim for d in descriptors)
            or any(c.dtype != np.int64 or c.shape != d.shape[:1] for c, d in zip(channels, descriptors))):
        return general()
    n_images, n_channels = len(descriptors), len(prototypes)
    blocks = np.empty((n_images, n_channels + 1), np.int64)  # each image's channel row bounds
    if not _k.channel_blocks(np.concatenate(channels), offsets([d.shape[0] for d in descriptors]),
                             n_channels, blocks):
        return general()
    bounds, slices = _channel_columns(prototypes)
    X = np.empty((n_images, int(bounds[-1])))
    mean_or_max = p == 1.0 or np.isinf(p)
    per_channel = []  # (row bounds, indptr, indices, data, n) of each channel, rows image after image
    for u, (b, b_sq) in enumerate(prototypes):
        rows = offsets(blocks[:, u + 1] - blocks[:, u])
        # python ints: this loop runs per image, where numpy scalars cost more than the small products
        first, last, at = blocks[:, u].tolist(), blocks[:, u + 1].tolist(), rows.tolist()
        products = np.empty((at[-1], b.shape[0]))
        sq_norms = np.empty(at[-1])
        with np.errstate(all="ignore"):  # non-finite descriptors: found below, named by _encode_one
            for g, d in enumerate(descriptors):
                if at[g + 1] > at[g]:  # the same arrays and calls as _map_rows on this image's block
                    mine = d[first[g]:last[g]]
                    np.einsum("md,md->m", mine, mine, out=sq_norms[at[g]:at[g + 1]])
                    np.matmul(mine, b.T, out=products[at[g]:at[g + 1]])
        if not np.all(np.isfinite(sq_norms)):
            return general()
        n, values = _rank_values(mapping, rank_base, rank_n, b.shape[0])
        indices = np.empty(at[-1] * n, np.int64)
        data = np.empty(at[-1] * n)
        if at[-1]:
            _k.rank_from_products(products, sq_norms, b_sq, n, values, int(bounds[u]), indices, data)
        indptr = np.arange(0, indices.size + 1, n, dtype=np.int64)
        _k.pool_images(indptr, indices, data, rows, int(bounds[u]), b.shape[0], p,
                       bool(normalize) and mean_or_max, X)
        per_channel.append((at, indptr, indices, data, n))
    out = []
    for g in range(n_images):
        parts = []
        for u, (at, indptr, indices, data, n) in enumerate(per_channel):
            lo, hi = at[g], at[g + 1]
            if hi > lo:
                # every row holds n entries; each image gets its own indptr (a shared slice would let
                # an edit of one image's CSR change the others'; indices and data do not overlap)
                own = np.arange(0, (hi - lo) * n + 1, n, dtype=np.int64)
                parts.append((own, indices[lo * n:hi * n], data[lo * n:hi * n]))
                if not mean_or_max:
                    x_u = X[g, slices[u]]
                    _scale_maxima((indptr[lo:hi + 1], indices, data), int(bounds[u]), p, x_u)
                    if normalize:
                        _normalize(x_u)
        csr = parts[0] if len(parts) == 1 else _stack_rows(parts, None, len(descriptors[g]), in_order=True)
        out.append(Encoding(x=X[g], channel_slices=list(slices), p=p, csr=csr))
    return out


def _batches(features, max_rows):
    """Consecutive images, cut where a batch reaches ``max_rows`` descriptors (at least one image)."""
    batches, current, rows = [], [], 0
    for f in features:
        current.append(f)
        rows += len(f)
        if rows >= max_rows:
            batches.append(current)
            current, rows = [], 0
    return batches + [current] if current else batches


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
    return encode_many([features], vocabularies, mapping, rank_base, rank_n, soft_beta, p, normalize)[0]


def encode_many(features, vocabularies, mapping="rank", rank_base=2.0, rank_n=4, soft_beta=1.0, p=1.0,
                normalize=True):
    """Encode a list of ``LocalFeatures`` (see :func:`encode`), image by image, on threads when it pays.

    Every image is encoded by the same serial code whichever thread runs it, so the numbers do not
    depend on the batch or the number of threads.

    Returns
    -------
    list of Encoding
    """
    check_mapping(mapping, rank_base, rank_n, soft_beta)
    p = check_p(p)
    prototypes = _prototypes(vocabularies)
    features = list(features)
    dims = sum(b.shape[0] * b.shape[1] for b, _ in prototypes) / max(1, len(prototypes))
    rows = sum(len(f) for f in features)
    work = 2.0 * dims * rows  # the distance products dominate
    if mapping == "soft":
        return parallel_map(
            lambda f: _encode_one(f, prototypes, mapping, rank_base, rank_n, soft_beta, p, normalize),
            features, work)
    max_rows = _BATCH_ROWS
    if use_parallel(work):  # smaller batches when threads share the work: at least 4 per thread
        max_rows = min(max_rows, -(-rows // (4 * numba.get_num_threads())))
    batches = parallel_map(lambda batch: _encode_batch(batch, prototypes, mapping, rank_base, rank_n, p,
                                                       normalize),
                           _batches(features, max(1, max_rows)), work)
    return [encoding for batch in batches for encoding in batch]
