"""Mappings (hard, rank, soft) and p-means pooling on hand-made cases; the Encoding of one image."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp
from llvmlite import binding as llvm_binding

from bowlrp.bow.encoding import Encoding, encode, map_descriptors, pool
from bowlrp.bow.features import LocalFeatures

# prototypes on a line: distances from a descriptor v are |v - b|
B = np.array([[0.0], [1.0], [3.0], [7.0]])


def test_hard_mapping_is_one_hot_nearest():
    m = map_descriptors(np.array([[0.2], [2.5], [10.0]]), B, "hard")
    assert sp.issparse(m)
    np.testing.assert_array_equal(m.toarray(), [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def test_hard_mapping_ties_go_to_the_first_prototype():
    m = map_descriptors(np.array([[0.5]]), B, "hard")  # equidistant to words 0 and 1
    np.testing.assert_array_equal(m.toarray(), [[1, 0, 0, 0]])


def test_rank_mapping_is_base_to_minus_rank_for_the_n_nearest():
    # v = 2.4: distances 2.4, 1.4, 0.6, 4.6 -> ranks 3, 2, 1, 4
    m = map_descriptors(np.array([[2.4]]), B, "rank", rank_base=2.4, rank_n=3).toarray()[0]
    np.testing.assert_allclose(m, [2.4**-3, 2.4**-2, 2.4**-1, 0.0], rtol=0, atol=0)
    full = map_descriptors(np.array([[2.4]]), B, "rank", rank_base=2.0, rank_n=8).toarray()[0]
    np.testing.assert_array_equal(full, [2.0**-3, 2.0**-2, 2.0**-1, 2.0**-4])  # n > V keeps all V


def test_soft_mapping_is_a_softmax_of_squared_distances():
    v = np.array([[2.4], [100.0]])  # the second one would underflow without the shift
    beta = 0.8
    m = map_descriptors(v, B, "soft", soft_beta=beta).toarray()
    d2 = (v - B.T) ** 2
    want = np.exp(-beta * d2[0]) / np.exp(-beta * d2[0]).sum()
    np.testing.assert_allclose(m[0], want, rtol=1e-13)
    np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-14)
    assert np.all(np.isfinite(m)) and m[1].argmax() == 3


def test_mapping_of_no_descriptors_is_empty():
    assert map_descriptors(np.empty((0, 1)), B, "rank").shape == (0, 4)


def test_pooling_p1_is_the_mean_and_p_inf_the_max():
    dense = np.array([[1.0, 0.0, 0.5], [0.25, 0.0, 0.5], [0.0, 0.0, 0.125]])
    m = sp.csr_matrix(dense)
    np.testing.assert_allclose(pool(m, 1.0), dense.mean(0), rtol=0, atol=0)
    np.testing.assert_array_equal(pool(m, np.inf), dense.max(0))
    p = 2.5
    np.testing.assert_allclose(pool(m, p), ((dense**p).mean(0)) ** (1 / p), rtol=1e-14)
    p = 0.5
    np.testing.assert_allclose(pool(m, p), ((dense**p).mean(0)) ** (1 / p), rtol=1e-14)


def test_large_p_approaches_max_without_underflow():
    # m^p underflows to 0 for p = 2000 when computed naively; the scaled form does not
    dense = np.array([[0.5, 0.01], [0.25, 0.0]])
    x = pool(sp.csr_matrix(dense), 2000.0)
    np.testing.assert_allclose(x, dense.max(0), rtol=1e-3)
    assert np.all(x > 0)


@pytest.mark.parametrize("p", [0.0, -1.0, np.nan, "max", True])
def test_bad_p_raises(p):
    with pytest.raises(ValueError, match="pooling exponent"):
        pool(sp.csr_matrix(np.ones((2, 2))), p)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mapping="fuzzy"), "unknown mapping 'fuzzy'"),
        (dict(mapping="rank", rank_base=1.0), "rank_base"),
        (dict(mapping="rank", rank_n=0), "rank_n"),
        (dict(mapping="soft", soft_beta=-2.0), "soft_beta"),
    ],
)
def test_bad_mapping_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        map_descriptors(np.zeros((1, 1)), B, **kwargs)


def _features(descriptors, channel):
    M = len(channel)
    return LocalFeatures(descriptors=np.asarray(descriptors, dtype=np.float64),
                         centers=np.zeros((M, 2)) + 8.0, support=np.full(M, 16, np.int64),
                         channel=np.asarray(channel, np.int64), image_shape=(32, 32))


def test_encode_two_channels_keeps_channels_apart():
    voc0 = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    voc1 = np.array([[0.0, 0.0], [2.0, 2.0]])
    desc = [[0.9, 0.1], [0.1, 0.8], [0.0, 0.1], [1.9, 2.0], [0.2, 0.1]]
    ch = [0, 0, 0, 1, 1]
    enc = encode(_features(desc, ch), [voc0, voc1], mapping="hard", p=1.0, normalize=False)
    assert isinstance(enc, Encoding) and enc.p == 1.0
    assert enc.channel_slices == [slice(0, 3), slice(3, 5)]
    m = enc.mapping.toarray()
    assert m.shape == (5, 5) and sp.isspmatrix_csr(enc.mapping)
    # rows of channel-0 features live in columns 0..2 only, channel-1 in 3..4
    assert not m[:3, 3:].any() and not m[3:, :3].any()
    np.testing.assert_array_equal(m, [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [1, 0, 0, 0, 0],
                                      [0, 0, 0, 0, 1], [0, 0, 0, 1, 0]])
    # mean pooling per channel over that channel's features (3 and 2)
    np.testing.assert_allclose(enc.x, [1 / 3, 1 / 3, 1 / 3, 0.5, 0.5])


def test_encode_normalises_each_channel_to_unit_l1_and_pools_with_p():
    rng = np.random.default_rng(0)
    desc = rng.random((12, 4))
    ch = np.repeat([0, 1], 6)
    vocs = [rng.random((5, 4)), rng.random((3, 4))]
    for p in (1.0, 3.0, np.inf):
        enc = encode(_features(desc, ch), vocs, mapping="rank", rank_base=2.0, rank_n=2, p=p, normalize=True)
        for sl in enc.channel_slices:
            assert enc.x[sl].sum() == pytest.approx(1.0, abs=1e-14)
        raw = encode(_features(desc, ch), vocs, mapping="rank", rank_base=2.0, rank_n=2, p=p, normalize=False)
        m = raw.mapping.toarray()
        for u, sl in enumerate(raw.channel_slices):
            block = m[ch == u][:, sl]
            want = block.max(0) if np.isinf(p) else (block**p).mean(0) ** (1 / p)
            np.testing.assert_allclose(raw.x[sl], want, rtol=1e-13)
        assert enc.p == p and np.isinf(enc.p) == np.isinf(p)


def test_encode_rejects_mismatched_vocabularies():
    with pytest.raises(ValueError, match="only 1 vocabularies"):
        encode(_features([[0.0, 0.0], [1.0, 1.0]], [0, 1]), [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="dimension 2"):
        encode(_features([[0.0, 0.0]], [0]), [np.zeros((2, 3))])


@pytest.mark.parametrize("n", [1, 3, 8, 20])
def test_nearest_words_equal_a_stable_full_sort_even_with_ties(n):
    from bowlrp.bow.encoding import _nearest

    rng = np.random.default_rng(n)
    d2 = rng.integers(0, 4, size=(300, 12)).astype(np.float64)  # many ties, also across the n-th place
    want = np.argsort(d2, axis=1, kind="stable")[:, :n]
    np.testing.assert_array_equal(_nearest(d2, n), want)
    d2 = rng.random((300, 64))  # the usual case: no ties
    np.testing.assert_array_equal(_nearest(d2, min(n, 64)), np.argsort(d2, axis=1, kind="stable")[:, :n])



@pytest.mark.parametrize("n", [1, 3, 8])
def test_nearest_words_with_infinite_distances_equal_a_stable_full_sort(n):
    # +inf distances meet the selection's threshold (kept at +inf, or the seeds set to +inf) and its
    # check for entries already kept; rows alternate so that the seeds are sometimes +inf themselves
    from bowlrp.bow.encoding import _nearest

    rng = np.random.default_rng(10 + n)
    d2 = rng.integers(0, 3, size=(200, 10)).astype(np.float64)
    d2[rng.random(d2.shape) < 0.4] = np.inf
    d2[::7] = np.inf  # whole rows
    d2[3::7, :5] = np.inf  # the first words, which the first rows keep as seeds
    np.testing.assert_array_equal(_nearest(d2, n), np.argsort(d2, axis=1, kind="stable")[:, :n])

# ------------------------------------------------------------------------ kernels against numpy twins
def _rank_twin(d2, n, values, offset):
    """Dense rank mapping by a stable full sort: the obviously correct definition."""
    out = np.zeros((d2.shape[0], offset + d2.shape[1]))
    order = np.argsort(d2, axis=1, kind="stable")[:, :n]
    for i, row in enumerate(order):
        out[i, offset + row] = values
    return out


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_rank_from_products_kernel_matches_twin_with_ties(n):
    from bowlrp.bow import _encoding_kernels as K
    from bowlrp.bow.vocabulary import squared_distances
    from tests.kernel_twins import assert_matches_twin

    def fast(descriptors, prototypes, offset):
        M = descriptors.shape[0]
        indptr = np.arange(0, M * n + 1, n)
        indices = np.full(M * n, -1, np.int64)
        data = np.full(M * n, np.nan)
        values = 2.0 ** -np.arange(1, n + 1)
        K.rank_from_products(descriptors @ prototypes.T, (descriptors**2).sum(1), (prototypes**2).sum(1), n,
                             values, offset, indices, data)
        for i in range(M):  # columns sorted within a row, as scipy's canonical format
            assert np.all(np.diff(indices[indptr[i]:indptr[i + 1]]) > 0)
        return sp.csr_matrix((data, indices, indptr), shape=(M, offset + prototypes.shape[0])).toarray()

    def slow(descriptors, prototypes, offset):
        d2 = squared_distances(descriptors, prototypes)
        return _rank_twin(d2, n, 2.0 ** -np.arange(1, n + 1), offset)

    rng = np.random.default_rng(n)
    # small integers: many exactly equal distances, also across the n-th place; a zero descriptor
    ties = rng.integers(0, 2, size=(50, 3)).astype(float)
    ties[0] = 0.0
    cases = [(ties, rng.integers(0, 2, size=(9, 3)).astype(float), 0),
             (rng.random((40, 6)), rng.random((16, 6)), 5)]
    assert_matches_twin(fast, slow, cases)


@pytest.mark.parametrize("p", [1.0, 0.5, 2.5, np.inf])
def test_pooling_kernels_match_twin_on_a_row_block_with_offset(p):
    from bowlrp.bow.encoding import _pool_csr
    from tests.kernel_twins import assert_matches_twin

    rng = np.random.default_rng(3)
    dense = rng.random((9, 7)) * (rng.random((9, 7)) < 0.4)
    dense[:, 2] = 0.0  # a column no feature uses stays 0
    m = sp.csr_matrix(np.hstack([np.zeros((9, 3)), dense]))

    def fast(rows):
        out = np.full(7, np.nan)
        csr = (m.indptr[rows[0]:rows[-1] + 2].astype(np.int64), m.indices.astype(np.int64), m.data)
        _pool_csr(csr, 3, p, out)
        return out

    def slow(rows):
        block = dense[rows]
        return block.max(0) if np.isinf(p) else ((block**p).mean(0)) ** (1 / p)

    assert_matches_twin(fast, slow, [(np.arange(9),), (np.arange(2, 6),)], rtol=1e-13)


def test_encode_many_on_threads_equals_encode_image_by_image_and_interleaved_channels():
    from skimage import data

    from bowlrp.bow.encoding import encode_many
    from bowlrp.bow.features import DenseSIFT
    from bowlrp.jit import forced_builds

    images = [data.camera()[:64, :80], data.coins()[:48, :48], data.astronaut()[:56, :56]]
    feats = DenseSIFT(step=6, bin_sizes=(3, 4)).extract_many(images)
    rng = np.random.default_rng(0)
    vocs = [rng.random((12, 128)), rng.random((5, 128))]
    for mapping in ("hard", "rank", "soft"):
        one = [encode(f, vocs, mapping=mapping, p=2.0) for f in feats]
        with forced_builds("parallel"):  # threads although the batch is small
            many = encode_many(feats, vocs, mapping=mapping, p=2.0)
        for a, b in zip(one, many):
            assert np.array_equal(a.x, b.x)
            assert (a.mapping != b.mapping).nnz == 0
        # features given with their channels interleaved: the same rows, in their own order
        f = feats[0]
        perm = rng.permutation(len(f))
        g = LocalFeatures(f.descriptors[perm], f.centers[perm], f.support[perm], f.channel[perm],
                          f.image_shape)
        shuffled = encode(g, vocs, mapping=mapping, p=2.0)
        np.testing.assert_array_equal(shuffled.mapping.toarray(), one[0].mapping.toarray()[perm])
        np.testing.assert_allclose(shuffled.x, one[0].x, rtol=1e-14)


def test_encodings_do_not_depend_on_the_blas_threads():
    """OpenBLAS splits a product of this size over its threads, and rounds the rows at the split
    differently; the encoding runs its products on one BLAS thread whatever the caller's setting, so
    a single image, a serial batch and a batch on threads give the same bits."""
    from skimage import data

    from bowlrp.bow.encoding import encode_many
    from bowlrp.bow.features import DenseSIFT
    from bowlrp.jit import forced_builds, limited_threads

    photo = data.camera()
    images = [photo[y:y + 64, x:x + 64] for y in (0, 100, 200, 300) for x in (0, 150, 300)]
    feats = DenseSIFT(step=4, bin_sizes=(4,)).extract_many(images)
    rng = np.random.default_rng(0)
    pool_of_descriptors = np.concatenate([f.descriptors for f in feats])
    words = pool_of_descriptors[rng.choice(len(pool_of_descriptors), 64, replace=False)]
    vocab = [words + 0.01 * rng.standard_normal(words.shape)]
    for mapping in ("soft", "rank"):
        with limited_threads(2, numba_threads=False, user_api="blas"):
            single = [encode(f, vocab, mapping=mapping) for f in feats]
        with forced_builds("parallel"):
            threaded = encode_many(feats, vocab, mapping=mapping)
        with limited_threads(1):
            serial = encode_many(feats, vocab, mapping=mapping)
        for a, b, c in zip(single, threaded, serial):
            assert np.array_equal(a.x, b.x) and np.array_equal(a.x, c.x)
            assert all(np.array_equal(u, v) and np.array_equal(u, w) for u, v, w in zip(a.csr, b.csr, c.csr))


def _pool_as_before(mapping, p):
    """The scipy/numpy pooling the numba kernel replaced (per column: divide, power, np.sum)."""
    mapping = sp.csr_matrix(mapping)
    M, V = mapping.shape
    col_max = np.asarray(mapping.max(axis=0).toarray()).ravel()
    csc = mapping.tocsc()
    x = np.zeros(V)
    for d in np.flatnonzero(col_max > 0):
        values = csc.data[csc.indptr[d]:csc.indptr[d + 1]] / col_max[d]
        x[d] = col_max[d] * (np.sum(values ** p) / M) ** (1.0 / p)
    return x


@pytest.mark.parametrize("p", [0.5, 2.0, 3.0, 7.5])
def test_general_p_pooling_is_bit_identical_to_the_numpy_version(p):
    rng = np.random.default_rng(int(p * 10))
    for rows in (1, 5, 9, 40, 300):  # columns with < 8, <= 128 and > 128 entries (numpy's pairwise sum)
        dense = rng.random((rows, 6)) * (rng.random((rows, 6)) < 0.7)
        dense[:, 4] = 0.0
        assert np.array_equal(pool(sp.csr_matrix(dense), p), _pool_as_before(dense, p))


@pytest.mark.parametrize("mapping", ["hard", "rank", "soft"])
def test_non_finite_descriptors_are_a_clear_error(mapping):
    desc = np.array([[0.5], [np.nan], [1.0]])
    with pytest.raises(ValueError, match="descriptor 1 contains NaN or infinite"):
        encode(_features(desc, [0, 0, 0]), [B], mapping=mapping)
    with pytest.raises(ValueError, match="descriptor 0 contains NaN or infinite"):
        map_descriptors(np.array([[np.inf]]), B, mapping)


def test_empty_or_non_finite_vocabularies_are_a_clear_error():
    with pytest.raises(ValueError, match="vocabulary 0 must be a non-empty"):
        encode(_features([[0.5]], [0]), [np.zeros((0, 1))])
    with pytest.raises(ValueError, match="NaN or infinite"):
        map_descriptors(np.array([[0.5]]), np.array([[np.nan]]), "rank")


# ------------------------------------------------------------------------ the batched hard/rank path
def _channel_blocks_twin(channel, row_bounds, n_channels):
    """np.searchsorted per image, or None when an image's channels are unsorted or out of range."""
    out = []
    for lo, hi in zip(row_bounds[:-1], row_bounds[1:]):
        c = channel[lo:hi]
        if c.size and (np.any(np.diff(c) < 0) or c.min() < 0 or c.max() >= n_channels):
            return None
        out.append(np.searchsorted(c, np.arange(n_channels + 1)))
    return np.array(out, np.int64).reshape(len(row_bounds) - 1, n_channels + 1)


def test_channel_blocks_kernel_matches_twin():
    from bowlrp.bow import _encoding_kernels as K

    rng = np.random.default_rng(1)
    for case in range(60):
        n_channels = int(rng.integers(1, 4))
        sizes = rng.integers(0, 9, size=int(rng.integers(1, 5)))
        channel = np.concatenate([np.sort(rng.integers(0, n_channels, s)) for s in sizes]).astype(np.int64)
        if case % 3 == 1 and channel.size > 1:
            channel = rng.permutation(channel)  # often unsorted
        if case % 5 == 2 and channel.size:
            channel[-1] = n_channels if case % 2 else -1  # out of range
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        out = np.full((sizes.size, n_channels + 1), -7, np.int64)
        ok = K.channel_blocks(channel, bounds, n_channels, out)
        want = _channel_blocks_twin(channel, bounds, n_channels)
        assert ok == (want is not None)
        if ok:
            np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("p", [1.0, np.inf])
@pytest.mark.parametrize("normalize", [True, False])
def test_pool_images_kernel_matches_twin(p, normalize):
    from bowlrp.bow import _encoding_kernels as K
    from tests.kernel_twins import assert_matches_twin

    rng = np.random.default_rng(4)
    n, offset, n_cols = 3, 5, 11
    row_bounds = np.array([0, 4, 4, 13, 14], np.int64)  # an image without rows of this channel
    indices = np.concatenate([np.sort(rng.choice(n_cols, n, replace=False)) for _ in range(14)]) + offset
    data = np.tile(2.0 ** -np.arange(1, n + 1), 14)
    indptr = np.arange(0, 14 * n + 1, n)

    def fast(data):
        out = np.full((4, offset + n_cols + 2), -1.0)  # columns outside the channel stay untouched
        K.pool_images(indptr, indices, data, row_bounds, offset, n_cols, p, normalize, out)
        return out

    def slow(data):
        out = np.full((4, offset + n_cols + 2), -1.0)
        dense = sp.csr_matrix((data, indices - offset, indptr), shape=(14, n_cols)).toarray()
        for g in range(4):
            block = dense[row_bounds[g]:row_bounds[g + 1]]
            x = np.zeros(n_cols) if not len(block) else block.max(0) if np.isinf(p) else block.mean(0)
            out[g, offset:offset + n_cols] = x / x.sum() if normalize and x.sum() > 0 else x
        return out

    assert_matches_twin(fast, slow, [(data,), (data * rng.random(data.size),)], rtol=1e-14)


def _photo_features():
    from skimage import data

    from bowlrp.bow.features import DenseSIFT

    gray = [data.camera()[:64, :64], data.coins()[40:104, 60:124], data.moon()[100:164, 100:164],
            data.camera()[200:248, 100:170]]
    colour = [data.astronaut()[:56, :56], data.coffee()[100:164, 200:248], data.chelsea()[50:98, 50:114]]
    return {
        "gray": (DenseSIFT(step=4, bin_sizes=(4,)).extract_many(gray), 1),
        "two_bins": (DenseSIFT(step=3, bin_sizes=(3, 5)).extract_many(gray), 2),
        "opponent": (DenseSIFT(step=5, bin_sizes=(4,), color="opponent").extract_many(colour), 1),
    }


@pytest.mark.parametrize("mapping,kwargs", [("hard", {}), ("rank", {}),
                                            ("rank", dict(rank_base=2.4, rank_n=8)),
                                            ("rank", dict(rank_n=40))])
def test_batched_encoding_is_bit_identical_to_image_by_image(mapping, kwargs, monkeypatch):
    from bowlrp.bow import encoding
    from bowlrp.bow.encoding import _encode_one, _prototypes, encode_many
    from bowlrp.bow.vocabulary import fit_vocabularies
    from bowlrp.jit import forced_builds

    monkeypatch.setattr(encoding, "_BATCH_ROWS", 300)  # several batches, cut inside the list
    for name, (feats, n_channels) in _photo_features().items():
        for size in (7, 32):
            vocs = fit_vocabularies(feats, n_channels, size, 10_000, "minibatch", random_state=0)
            protos = [v.cluster_centers_.copy() for v in vocs]
            protos[0][3] = protos[0][0]  # a duplicated word: exact ties, ranked by word index
            f0 = feats[0]
            last = f0.channel == n_channels - 1  # an image with the last channel only, and an empty one
            extra = [LocalFeatures(f0.descriptors[last], f0.centers[last], f0.support[last], f0.channel[last],
                                   f0.image_shape),
                     LocalFeatures(np.zeros((0, f0.descriptors.shape[1])), np.zeros((0, 2)), np.zeros(0, int),
                                   np.zeros(0, int), (20, 20))]
            batch = list(feats) + extra
            for p in (1.0, np.inf, 2.0, 0.5):
                for normalize in (True, False):
                    ref = [_encode_one(f, _prototypes(protos), mapping, kwargs.get("rank_base", 2.0),
                                       kwargs.get("rank_n", 4), 1.0, p, normalize) for f in batch]
                    with forced_builds("parallel"):
                        got = encode_many(batch, protos, mapping, p=p, normalize=normalize, **kwargs)
                    for a, b in zip(ref, got, strict=True):
                        assert np.array_equal(a.x, b.x), (name, size, p, normalize)
                        assert a.channel_slices == b.channel_slices and a.p == b.p
                        for u, v in zip(a.csr, b.csr, strict=True):
                            assert u.dtype == v.dtype and np.array_equal(u, v), (name, size, p, normalize)


def test_batches_cut_at_the_row_budget_and_keep_the_order():
    from bowlrp.bow.encoding import _batches

    feats = [_features(np.zeros((m, 1)), [0] * m) for m in (3, 0, 4, 2, 5, 1)]
    batches = _batches(feats, 5)
    assert [[len(f) for f in b] for b in batches] == [[3, 0, 4], [2, 5], [1]]
    assert [f for b in batches for f in b] == feats
    assert _batches([], 5) == []


def test_a_bad_image_in_a_batch_is_named_as_before():
    good = _features([[0.5], [2.0]], [0, 0])
    with pytest.raises(ValueError, match="descriptor 1 contains NaN or infinite"):
        from bowlrp.bow.encoding import encode_many
        encode_many([good, _features([[0.5], [np.inf]], [0, 0]), good], [B], mapping="rank")
    with pytest.raises(ValueError, match="only 1 vocabularies were given"):
        encode_many([good, _features([[0.5]], [1])], [B], mapping="hard")
    # interleaved channels take the per-image path: the rows keep their own order
    two = _features([[0.5], [0.2], [6.0]], [1, 0, 1])
    enc = encode_many([good, two], [B, B[:2]], mapping="hard", normalize=False)[1]
    np.testing.assert_array_equal(enc.mapping.toarray(), [[0, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0],
                                                          [0, 0, 0, 0, 0, 1]])


# the vector compress of vcompress_le8 (the bounded selection) is in LLVM 19 and later (numba's llvmlite)
needs_compress = pytest.mark.skipif(llvm_binding.llvm_version_info < (19,),
                                    reason="vcompress_le8 needs LLVM 19 or later (a newer numba)")
# both implementations of select_row, on any CPU
SELECTIONS = [pytest.param("_select_bounded", marks=needs_compress), "_select_seeded"]


def _check_selection(name, row, n, seeds, case):
    """The implementation ``name`` of select_row gives the first n of a stable argsort of ``row``."""
    from bowlrp.bow import _encoding_kernels as K

    out = np.full(n, -1, np.int64)
    getattr(K, name)(row.copy(), n, seeds, np.empty(n), out, np.empty(row.size, np.int64))
    np.testing.assert_array_equal(out, np.argsort(row, kind="stable")[:n], err_msg=f"case {case}")


@pytest.mark.parametrize("name", SELECTIONS)
def test_select_row_is_a_stable_sort_whatever_the_seeds(name):
    rng = np.random.default_rng(11)
    for case in range(300):
        width = int(rng.integers(1, 20))
        n = int(rng.integers(1, width + 1))
        row = rng.integers(0, 4, width).astype(float)  # ties, also with the seeds and at the n-th place
        row[rng.random(width) < 0.2] = np.inf  # infinite distances too (kept when fewer are finite)
        _check_selection(name, row, n, rng.permutation(width)[:n], case)


@pytest.mark.parametrize("name", SELECTIONS)
def test_select_row_on_wide_rows_with_ties_at_the_bound(name):
    # several blocks of 8 words and a rest, n on both sides of 8 (the group bound's limit); rows of few
    # distinct values put ties at the bound, in the group minima and across the n-th place
    rng = np.random.default_rng(12)
    for case in range(400):
        width = int(rng.integers(8, 70))
        n = int(rng.integers(1, min(width, 12) + 1))
        row = rng.integers(0, int(rng.integers(2, 9)), width).astype(float)
        if case % 3 == 0:
            row = rng.random(width)  # no ties
        row[rng.random(width) < 0.1] = np.inf
        _check_selection(name, row, n, rng.permutation(width)[:n], case)


def test_the_bounded_selection_needs_avx512_features_numba_compiles_for(monkeypatch):
    """compiles_for_avx512 follows numba's target: NUMBA_CPU_FEATURES when given, "" (a CPU name such
    as "generic" without features, for a portable cache) meaning no AVX-512, else the host's."""
    import numba
    from llvmlite import binding

    from bowlrp.bow._sift_simd import compiles_for_avx512

    host = "+avx512f" in binding.get_host_cpu_features().flatten().split(",")
    for features, want in (("+avx512f,+avx2", True), ("+avx2,-avx512f", False), ("", False), (None, host)):
        monkeypatch.setattr(numba.config, "CPU_FEATURES", features)
        assert compiles_for_avx512() is (want and binding.llvm_version_info >= (19,))


def test_selecting_no_words_returns_at_once():
    # n = 0 stops in the kernels that call select_row (review: select_row read seeds[0] of no seeds)
    from bowlrp.bow import _encoding_kernels as K

    out = np.empty((3, 0), np.int64)
    K.nearest_words(np.random.default_rng(0).random((3, 16)), 0, out)
    indices, data = np.empty(0, np.int64), np.empty(0)
    K.rank_from_products(np.ones((3, 16)), np.ones(3), np.ones(16), 0, np.empty(0), 0, indices, data)
    assert out.size == 0 and indices.size == 0


@needs_compress
def test_select_row_is_chosen_by_the_cpu_numba_compiles_for():
    """The bounded selection is picked exactly when numba's build of it has the real vector compress
    (AVX-512 ``vpcompressq``), not LLVM's slow emulation of it."""
    from bowlrp.bow import _encoding_kernels as K
    from bowlrp.bow._sift_simd import compiles_for_avx512

    fresh = _fresh_build("_select_bounded")
    real_compress = "vpcompressq" in fresh.inspect_asm(fresh.signatures[0])
    assert compiles_for_avx512() is real_compress
    assert K.select_row is (K._select_bounded if real_compress else K._select_seeded)


@functools.cache
def _fresh_build(name):
    """A fresh (uncached, inspectable) numba build of one selection, compiled once per session."""
    import numba

    from bowlrp.bow import _encoding_kernels as K

    fresh = numba.njit(nogil=True)(getattr(K, name).py_func)
    fresh(np.random.default_rng(0).random(20), 3, np.arange(3), np.empty(3), np.empty(3, np.int64),
          np.empty(20, np.int64))
    return fresh


@pytest.mark.parametrize("name", SELECTIONS)
def test_select_row_keeps_no_reference_counting(name):
    # numba increments and decrements (atomically) the reference count of each array argument at
    # entry and exit unless its pruning pass removes the pairs; some control flow defeats it (two
    # inlined insertions in an if / elif did), which made the selection 2x slower. A fresh build, as
    # the cached one cannot be inspected.
    import re

    fresh = _fresh_build(name)
    llvm = fresh.inspect_llvm(fresh.signatures[0])
    body = [f for f in llvm.split("\ndefine ")[1:]  # the function itself, not its Python wrappers
            if re.search(rf"@_ZN\d+bowlrp\d+bow\d+_encoding_kernels\d+{name}B", f.split("\n")[0])]
    assert len(body) == 1
    assert "@NRT_incref" not in body[0] and "@NRT_decref" not in body[0]


def test_nth_of_8_is_the_nth_smallest():
    from bowlrp.bow._encoding_kernels import _nth_of_8

    rng = np.random.default_rng(13)
    # every 0/1 input (a network that sorts them sorts everything: the zero-one principle), ties, infs
    cases = [np.array([(m >> b) & 1 for b in range(8)], float) for m in range(256)]
    cases += [rng.integers(0, 3, 8).astype(float) for _ in range(200)] + [rng.random(8) for _ in range(200)]
    cases += [np.where(rng.random(8) < 0.3, np.inf, rng.random(8)) for _ in range(50)]
    for s in cases:
        for n in range(1, 9):
            assert _nth_of_8(*s, n) == np.sort(s)[n - 1]
        assert _nth_of_8(*s, 9) == np.inf


@needs_compress
def test_vcompress_le8_and_vlane8_match_numpy():
    import numba

    from bowlrp.bow._sift_simd import vcompress_le8, vlane8, vload8

    @numba.njit
    def compress(row, bound, out):
        c = 0
        for j in range(0, row.shape[0], 8):
            c = vcompress_le8(row, j, bound, out, c)
        return c

    @numba.njit
    def lanes(row, out):
        v = vload8(row, 0)
        for k in range(8):
            out[k] = vlane8(v, k)

    rng = np.random.default_rng(14)
    for case in range(200):
        row = rng.integers(-2, 3, 8 * int(rng.integers(1, 5))).astype(float)
        row[rng.random(row.size) < 0.1] = np.nan  # never selected (ordered comparison)
        row[rng.random(row.size) < 0.1] = np.inf
        row[rng.random(row.size) < 0.1] = -0.0
        bound = [0.0, -0.0, 1.0, np.inf, -np.inf, np.nan][case % 6]
        out = np.full(row.size + 8, -1, np.int64)
        want = np.flatnonzero(row <= bound)
        assert compress(row, bound, out) == want.size
        np.testing.assert_array_equal(out[:want.size], want)
        got = np.empty(8)
        lanes(row, got)
        assert got.tobytes() == row[:8].tobytes()


def test_rank_mapping_of_photo_descriptors_matches_a_stable_sort():
    # real descriptors: the group bound and the compress on vocabularies of 64 words (blocks of 8
    # only) and 50 (a rest of 2), n from 1 to 9; bit-equal columns and values of the twin
    from bowlrp.bow._encoding_kernels import rank_from_products
    from bowlrp.bow.vocabulary import fit_vocabularies, squared_distances

    feats, n_channels = _photo_features()["gray"]
    rows = np.concatenate([f.descriptors for f in feats])
    for words in (64, 50):
        prototypes = fit_vocabularies(feats, n_channels, words, 10_000, "minibatch",
                                      random_state=0)[0].cluster_centers_
        order = np.argsort(squared_distances(rows, prototypes), axis=1, kind="stable")
        for n in range(1, 10):
            values = 2.0 ** -np.arange(1, n + 1)
            indices = np.full(rows.shape[0] * n, -1, np.int64)
            data = np.full(rows.shape[0] * n, np.nan)
            rank_from_products(rows @ prototypes.T, np.einsum("md,md->m", rows, rows),
                               np.einsum("vd,vd->v", prototypes, prototypes), n, values, 3, indices, data)
            want = np.sort(order[:, :n], axis=1) + 3
            np.testing.assert_array_equal(indices.reshape(-1, n), want)
            np.testing.assert_array_equal(data.reshape(-1, n), values[np.argsort(order[:, :n], axis=1)])


def test_the_encodings_of_a_batch_share_no_writeable_memory():
    """Each image's encoding owns its numbers: an in-place edit of one (its BoW or its CSR arrays) leaves
    every other image of the same batch unchanged (review of issue 15: the indptr was one shared slice)."""
    from bowlrp.bow.encoding import encode_many
    from bowlrp.bow.vocabulary import fit_vocabularies

    feats, n_channels = _photo_features()["gray"]
    vocs = fit_vocabularies(feats, n_channels, 16, 10_000, "minibatch", random_state=0)
    protos = [v.cluster_centers_ for v in vocs]
    got = encode_many(feats, protos, "rank")
    keep = [(e.x.copy(), [a.copy() for a in e.csr]) for e in got]
    for a in (*got[0].csr, got[0].x):
        a[...] = a[::-1] if a.ndim == 1 else 0
    for e, (x, csr) in zip(got[1:], keep[1:]):
        assert np.array_equal(e.x, x)
        assert all(np.array_equal(u, v) for u, v in zip(e.csr, csr))
