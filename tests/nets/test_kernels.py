"""Every numba kernel of nets/_kernels.py and nets/_conv_kernels.py against a slow, obviously correct
numpy twin."""

from __future__ import annotations

import numpy as np
import pytest

from bowlrp.jit import forced_builds
from nets import _conv_kernels, _kernels
from tests.kernel_twins import assert_matches_twin


@pytest.fixture(autouse=True, params=["parallel", "serial"])
def build(request):
    """Run every test with the parallel and with the serial build of the kernels."""
    with forced_builds(request.param):
        yield request.param


GEOMETRIES = [  # (kh, kw, sh, sw, ph, pw)
    (3, 3, 1, 1, 0, 0),
    (3, 2, 2, 1, 1, 1),
    (2, 2, 2, 2, 0, 0),
    (3, 3, 2, 3, 1, 0),
    (1, 1, 1, 1, 0, 0),
    (3, 3, 1, 1, 1, 1),  # stride 1, "same" width: the span paths of unfold and fold
    (5, 5, 1, 1, 2, 2),
    (3, 3, 1, 1, 2, 2),  # (wider than "same": the row paths)
]


def _out_size(h, w, kh, kw, sh, sw, ph, pw):
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def _windows(x, kh, kw, sh, sw, ph, pw, fill):
    """(N, C, OH, OW, kh, kw) window contents of the padded x (padding = ``fill``), by loops."""
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, kh, kw, sh, sw, ph, pw)
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), fill, dtype=np.float64)
    xp[:, :, ph : ph + h, pw : pw + w] = x
    win = np.empty((n, c, oh, ow, kh, kw))
    for a in range(oh):
        for b in range(ow):
            win[:, :, a, b] = xp[:, :, a * sh : a * sh + kh, b * sw : b * sw + kw]
    return win


def _inside(h, w, kh, kw, sh, sw, ph, pw):
    """(OH, OW, kh, kw) mask of window positions that fall inside the image."""
    return _windows(np.ones((1, 1, h, w)), kh, kw, sh, sw, ph, pw, 0.0)[0, 0] > 0


def _cases(seed=0):
    rng = np.random.default_rng(seed)
    for g in GEOMETRIES:
        for shape in [(2, 3, 7, 6), (1, 1, 5, 5)]:
            yield g, rng.normal(size=shape)


# ------------------------------------------------------------------------------------------------
def im2col_fast(x, g):
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, *g)
    out = np.full((n * oh * ow, c * g[0] * g[1]), np.nan)
    _conv_kernels.im2col(x, *g, out)
    return out


def im2col_twin(x, g):
    win = _windows(x, *g, 0.0)  # (N, C, OH, OW, kh, kw)
    n, c, oh, ow, kh, kw = win.shape
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)


def test_im2col_matches_twin():
    assert_matches_twin(im2col_fast, im2col_twin, [(x, g) for g, x in _cases()])


def unfold_fast(x, g):
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, *g)
    out = np.full((n, c * g[0] * g[1], oh * ow), np.nan)
    _conv_kernels.unfold(x, *g, 0, out)
    return out


def unfold_twin(x, g):
    win = _windows(x, *g, 0.0)  # (N, C, OH, OW, kh, kw)
    n, c, oh, ow, kh, kw = win.shape
    return win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, oh * ow)


def test_unfold_matches_twin_and_is_im2col_per_image():
    cases = [(x, g) for g, x in _cases()]
    assert_matches_twin(unfold_fast, unfold_twin, cases)
    for x, g in cases:  # the same entries as the row-per-position layout, per image transposed
        n = x.shape[0]
        cols = im2col_twin(x, g)
        np.testing.assert_array_equal(
            unfold_fast(x, g), cols.reshape(n, -1, cols.shape[1]).transpose(0, 2, 1)
        )


def fold_fast(cols, shape, g):
    out = np.full(shape, np.nan)
    _conv_kernels.fold(cols, *g, 0, True, out)
    return out


def transpose_of_im2col(cols, shape, g):
    """The transpose of im2col: <im2col(x), cols> == <x, transpose_of_im2col(cols)> for every x,
    built by pushing each column entry back to its source pixel."""
    n, c, h, w = shape
    kh, kw, sh, sw, ph, pw = g
    oh, ow = _out_size(h, w, *g)
    out = np.zeros(shape)
    for nn in range(n):
        for a in range(oh):
            for b in range(ow):
                row = (nn * oh + a) * ow + b
                for cc in range(c):
                    for i in range(kh):
                        for j in range(kw):
                            y, x = a * sh - ph + i, b * sw - pw + j
                            if 0 <= y < h and 0 <= x < w:
                                out[nn, cc, y, x] += cols[row, (cc * kh + i) * kw + j]
    return out


def fold_twin(cols, shape, g):
    n, k, p = cols.shape
    return transpose_of_im2col(cols.transpose(0, 2, 1).reshape(n * p, k), shape, g)


def test_fold_matches_twin_and_is_the_transpose_of_unfold():
    rng = np.random.default_rng(3)
    cases = []
    for g, x in _cases(3):
        cols = rng.normal(size=unfold_twin(x, g).shape)
        cases.append((cols, x.shape, g))
        assert np.isclose((unfold_fast(x, g) * cols).sum(), (x * fold_fast(cols, x.shape, g)).sum())
    assert_matches_twin(fold_fast, fold_twin, cases)


def test_unfold_and_fold_by_bands_of_output_rows_equal_the_whole():
    rng = np.random.default_rng(6)
    for g, x in _cases(6):
        n, c, h, w = x.shape
        oh, ow = _out_size(h, w, *g)
        whole = unfold_twin(x, g)
        cols = rng.normal(size=whole.shape)
        folded = np.full(x.shape, np.nan)
        for r0 in range(0, oh, 2):  # bands of two output rows (the last one may be shorter)
            r1 = min(oh, r0 + 2)
            band = np.full((n, whole.shape[1], (r1 - r0) * ow), np.nan)
            _conv_kernels.unfold(x, *g, r0, band)
            np.testing.assert_array_equal(band, whole[:, :, r0 * ow : r1 * ow])
            _conv_kernels.fold(np.ascontiguousarray(cols[:, :, r0 * ow : r1 * ow]), *g, r0, r0 == 0, folded)
        np.testing.assert_allclose(folded, fold_twin(cols, x.shape, g), rtol=1e-12, atol=1e-12)


def test_unfold_and_fold_with_a_kernel_wider_than_the_padded_row_edge():
    # taps that never land inside the image (lo >= hi) must write zeros / add nothing
    x = np.random.default_rng(4).normal(size=(1, 2, 2, 3))
    g = (3, 5, 1, 2, 2, 3)
    assert_matches_twin(unfold_fast, unfold_twin, [(x, g)])
    cols = np.random.default_rng(5).normal(size=unfold_twin(x, g).shape)
    assert_matches_twin(fold_fast, fold_twin, [(cols, x.shape, g)])


def test_unfold_and_fold_on_long_float32_rows_match_twin():
    # rows of 40 output columns: the vectorised row copies and adds, in float32 as the nets run
    rng = np.random.default_rng(7)
    for g in [(3, 3, 1, 1, 1, 1), (5, 5, 1, 1, 2, 2), (3, 3, 2, 2, 1, 1)]:
        x = rng.normal(size=(2, 3, 9, 40)).astype(np.float32)
        assert_matches_twin(unfold_fast, unfold_twin, [(x, g)], rtol=0, atol=0)
        cols = rng.normal(size=unfold_twin(x, g).shape).astype(np.float32)
        assert_matches_twin(fold_fast, fold_twin, [(cols, x.shape, g)], rtol=1e-6, atol=1e-6)


def test_fold_of_one_row_broadcast_to_every_tap_matches_twin():
    """The Flat rule's transposed map folds ONE row per image as the column of every kernel tap (a
    stride-0 view, never materialised)."""
    rng = np.random.default_rng(8)
    for g in GEOMETRIES:
        for shape in [(2, 1, 7, 6), (1, 1, 5, 40)]:
            oh, ow = _out_size(*shape[2:], *g)
            row = rng.normal(size=(shape[0], 1, oh * ow))
            cols = np.broadcast_to(row, (shape[0], g[0] * g[1], oh * ow))
            assert cols.strides[1] == 0
            assert_matches_twin(fold_fast, fold_twin, [(cols, shape, g)])



#: stride 1 and input rows as long as output rows (2 pw = kw - 1): the geometries of ``fold_same``
SAME_WIDTH = [
    (3, 3, 1, 1, 1, 1), (5, 5, 1, 1, 2, 2), (3, 3, 1, 1, 0, 1), (5, 5, 1, 1, 4, 2), (1, 3, 1, 1, 0, 1),
]


def fold_same_fast(cols, shape, g):
    out = np.full(shape, np.nan)
    _conv_kernels.fold_same(np.array(cols), g[0], g[1], g[4], g[5], 0, True, np.empty((0, 0, 0, 0)), out)
    return out


def test_fold_same_matches_twin_by_bands_and_equals_fold():
    """``fold_same`` (stride 1, same width, one span per tap on a scratch copy of the columns) is
    ``fold``: the twin's sums, band by band as the whole, and ``fold``'s numbers exactly."""
    rng = np.random.default_rng(9)
    for g in SAME_WIDTH:
        for shape in [(2, 3, 7, 6), (1, 2, 5, 5), (2, 1, 3, 40)]:
            oh, ow = _out_size(*shape[2:], *g)
            assert ow == shape[3]
            cols = rng.normal(size=(shape[0], shape[1] * g[0] * g[1], oh * ow))
            assert_matches_twin(fold_same_fast, fold_twin, [(cols, shape, g)])
            np.testing.assert_array_equal(fold_same_fast(cols, shape, g), fold_fast(cols, shape, g))
            c32 = cols.astype(np.float32)
            np.testing.assert_array_equal(fold_same_fast(c32, shape, g), fold_fast(c32, shape, g))
            banded, banded_fold = np.full(shape, np.nan), np.full(shape, np.nan)
            for r0 in range(0, oh, 2):  # bands of two output rows, added to the previous ones
                r1 = min(oh, r0 + 2)
                band = np.array(cols[:, :, r0 * ow : r1 * ow])
                _conv_kernels.fold(band, *g, r0, r0 == 0, banded_fold)
                no_times = np.empty((0, 0, 0, 0))
                _conv_kernels.fold_same(band, g[0], g[1], g[4], g[5], r0, r0 == 0, no_times, banded)
            np.testing.assert_array_equal(banded, banded_fold)
            np.testing.assert_allclose(banded, fold_twin(cols, shape, g), rtol=1e-12, atol=1e-12)
            times = rng.normal(size=shape)  # multiplied into each plane once it is complete
            scaled = np.full(shape, np.nan)
            _conv_kernels.fold_same(np.array(cols), g[0], g[1], g[4], g[5], 0, True, times, scaled)
            np.testing.assert_array_equal(scaled, times * fold_fast(cols, shape, g))

# ------------------------------------------------------------------------------------------------
def max_pool_fast(x, g):
    n, c, h, w = x.shape
    out = np.full((n, c, *_out_size(h, w, *g)), np.nan)
    _kernels.max_pool(x, *g, out)
    return out


def max_pool_twin(x, g):
    return _windows(x, *g, -np.inf).max(axis=(4, 5))


def test_max_pool_matches_twin():
    cases = [(x, g) for g, x in _cases(2) if g[4] * 2 <= g[0] and g[5] * 2 <= g[1]]
    assert_matches_twin(max_pool_fast, max_pool_twin, cases)


def max_scatter_fast(x, r, g):
    y = max_pool_twin(x, g)
    out = np.full(x.shape, np.nan)
    _kernels.max_pool_scatter(x, y, r, *g, out)
    return out


def max_scatter_twin(x, r, g):
    n, c, h, w = x.shape
    kh, kw, sh, sw, ph, pw = g
    y = max_pool_twin(x, g)
    out = np.zeros(x.shape)
    for idx in np.ndindex(*y.shape):
        nn, cc, a, b = idx
        winners = [
            (a * sh - ph + i, b * sw - pw + j)
            for i in range(kh)
            for j in range(kw)
            if 0 <= a * sh - ph + i < h
            and 0 <= b * sw - pw + j < w
            and x[nn, cc, a * sh - ph + i, b * sw - pw + j] == y[idx]
        ]
        for yy, xx in winners:
            out[nn, cc, yy, xx] += r[idx] / len(winners)
    return out


def test_max_pool_scatter_matches_twin_with_ties_split_equally():
    rng = np.random.default_rng(3)
    cases = []
    for g, x in _cases(3):
        if g[4] * 2 > g[0] or g[5] * 2 > g[1]:
            continue
        x = np.round(x)  # many exact ties
        r = rng.normal(size=max_pool_twin(x, g).shape)
        r[rng.random(r.shape) < 0.3] = 0.0  # windows with nothing to hand out are skipped
        cases.append((x, r, g))
    assert_matches_twin(max_scatter_fast, max_scatter_twin, cases)
    # a 2x2 window of four equal values hands a quarter to each
    out = max_scatter_fast(np.ones((1, 1, 2, 2)), np.array([[[[4.0]]]]), (2, 2, 2, 2, 0, 0))
    np.testing.assert_array_equal(out, np.ones((1, 1, 2, 2)))


# ------------------------------------------------------------------------------------------------
def avg_pool_fast(x, g, include_pad):
    n, c, h, w = x.shape
    out = np.full((n, c, *_out_size(h, w, *g)), np.nan)
    _kernels.avg_pool(x, *g, include_pad, out)
    return out


def avg_pool_twin(x, g, include_pad):
    win = _windows(x, *g, 0.0)
    if include_pad:
        return win.mean(axis=(4, 5))
    count = _inside(x.shape[2], x.shape[3], *g).sum(axis=(2, 3))
    return win.sum(axis=(4, 5)) / count


def test_avg_pool_matches_twin():
    cases = [(x, g, inc) for g, x in _cases(4) for inc in (True, False)]
    assert_matches_twin(avg_pool_fast, avg_pool_twin, cases)


def avg_t_fast(s, shape, g, include_pad):
    out = np.full(shape, np.nan)
    _kernels.avg_pool_transpose(s, *g, include_pad, out)
    return out


def avg_t_twin(s, shape, g, include_pad):
    # explicit matrix of the average pooling map, transposed
    n, c, h, w = shape
    size = n * c * h * w
    A = np.stack([avg_pool_twin(e.reshape(shape), g, include_pad).ravel() for e in np.eye(size)], axis=1)
    return (A.T @ s.ravel()).reshape(shape)


def test_avg_pool_transpose_matches_twin():
    rng = np.random.default_rng(5)
    cases = []
    for g in GEOMETRIES:
        shape = (1, 2, 5, 4)
        s = rng.normal(size=(1, 2, *_out_size(5, 4, *g)))
        for inc in (True, False):
            cases.append((s, shape, g, inc))
    assert_matches_twin(avg_t_fast, avg_t_twin, cases)


# ------------------------------------------------------------------------------------------------
def stab_fast(r, z, eps):
    out = np.full(r.shape, np.nan)
    _kernels.stabilised_divide(r, z, eps, out)
    return out


def stab_twin(r, z, eps):
    d = z + eps * np.where(z >= 0, 1.0, -1.0)
    return np.divide(r, d, out=np.zeros_like(r), where=d != 0)


@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.5])
def test_stabilised_divide_matches_twin_and_never_nan(eps):
    rng = np.random.default_rng(6)
    z = rng.normal(size=200)
    z[:20] = 0.0
    z[20:25] = -1e-3  # small negatives are pushed away from zero by -eps
    r = rng.normal(size=200)
    r[:5] = 0.0
    assert_matches_twin(stab_fast, stab_twin, [(r, z, eps)])
    out = stab_fast(r, z, eps)
    if eps == 0:
        assert np.all(out[:20] == 0)  # 0/0 and r/0 -> 0, never NaN or inf
    else:
        np.testing.assert_allclose(out[:20], r[:20] / eps)  # sign0(0) = +1


def stab_stacked_fast(r, stacked, start, b, eps):
    out = np.full(r.shape, np.nan, dtype=r.dtype)
    _kernels.stabilised_divide_stacked(r, stacked, start, b, eps, out)
    return out


def test_stabilised_divide_of_a_stacked_block_matches_twin_and_the_copied_block():
    """The denominator read in place from channels ``start`` .. ``start + O`` of the stacked forward
    output plus a bias (or none): the twin, and bit for bit the division of the block copied out
    with its bias added (``_with_bias``), zero denominators included, float32 and float64."""
    rng = np.random.default_rng(11)
    cases = []
    for dtype in (np.float64, np.float32):
        stacked = rng.normal(size=(3, 7, 10)).astype(dtype)
        stacked[0, 3, :4] = 0.0
        r = rng.normal(size=(3, 2, 10)).astype(dtype)
        biases = [(3, np.zeros(0, dtype)), (5, rng.normal(size=2).astype(dtype)), (0, np.zeros(2, dtype))]
        for start, b in biases:
            for eps in (0.0, 1e-6):
                cases.append((r, stacked, start, b, eps))

    def twin(r, stacked, start, b, eps):
        z = stacked[:, start : start + r.shape[1]]
        return stab_twin(r, z + b[:, None] if b.size else z, eps)

    assert_matches_twin(stab_stacked_fast, twin, cases, rtol=1e-6, atol=1e-7)
    for r, stacked, start, b, eps in cases:
        z = stacked[:, start : start + r.shape[1]]
        z = np.ascontiguousarray(z + b[:, None] if b.size else z)
        want = np.empty_like(r)
        _kernels.stabilised_divide(r.ravel(), z.ravel(), eps, want.ravel())
        np.testing.assert_array_equal(stab_stacked_fast(r, stacked, start, b, eps), want)


def safe_fast(r, d):
    out = np.full(r.shape, np.nan)
    _kernels.safe_divide(r, d, out)
    return out


def test_safe_divide_matches_twin():
    rng = np.random.default_rng(8)
    d = rng.normal(size=50)
    d[::7] = 0.0
    r = rng.normal(size=50)
    assert_matches_twin(safe_fast, lambda r, d: np.divide(r, d, out=np.zeros_like(r), where=d != 0), [(r, d)])


def test_kernels_keep_float32():
    x = np.random.default_rng(9).normal(size=(2, 2, 6, 6)).astype(np.float32)
    out = np.empty((2 * 16, 2 * 9), dtype=np.float32)
    _conv_kernels.im2col(x, 3, 3, 1, 1, 0, 0, out)
    np.testing.assert_allclose(out, im2col_twin(x.astype(np.float64), (3, 3, 1, 1, 0, 0)), rtol=1e-6)


def stab_rows_fast(r, z, eps):
    out = np.full(r.shape, np.nan)
    _kernels.stabilised_divide_rows(r, z, eps, out)
    return out


def test_stabilised_divide_rows_matches_twin():
    rng = np.random.default_rng(10)
    z = rng.normal(size=30)
    z[:4] = 0.0
    r = rng.normal(size=(5, 30))
    cases = [(r, z, eps) for eps in (0.0, 1e-6, 0.3)]
    assert_matches_twin(
        stab_rows_fast, lambda r, z, eps: stab_twin(r, np.broadcast_to(z, r.shape), eps), cases
    )


def test_no_padding_max_pool_kernels_match_twins():
    rng = np.random.default_rng(11)
    fwd, scat = [], []
    for g, x in _cases(11):
        if g[4] or g[5]:
            continue
        x = np.round(x * 2) / 2  # ties
        r = rng.normal(size=max_pool_twin(x, g).shape)
        r[rng.random(r.shape) < 0.3] = 0.0
        fwd.append((x, g))
        scat.append((x, r, g))

    def fwd_fast(x, g):
        n, c, h, w = x.shape
        out = np.full((n, c, *_out_size(h, w, *g)), np.nan)
        _kernels.max_pool_valid(x, *g[:4], out)
        return out

    def scat_fast(x, r, g):
        out = np.full(x.shape, np.nan)
        _kernels.max_pool_scatter_valid(x, max_pool_twin(x, g), r, *g[:4], out)
        return out

    assert len(fwd) >= 4
    assert_matches_twin(fwd_fast, max_pool_twin, fwd)
    assert_matches_twin(scat_fast, max_scatter_twin, scat)


def row_sums_fast(a):
    out = np.full(a.shape[0], np.nan)
    _kernels.row_sums(a, out)
    return out


def test_row_sums_matches_twin_in_float64():
    rng = np.random.default_rng(12)
    a64 = rng.normal(size=(7, 1000))
    a32 = (rng.normal(size=(5, 3000)) * 1e3).astype(np.float32)
    assert_matches_twin(
        row_sums_fast, lambda a: a.astype(np.float64).sum(axis=1), [(a64,), (a32,)], rtol=1e-10, atol=1e-9
    )


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("band", [1 << 40, 60])  # whole images, or bands of a few output rows
@pytest.mark.parametrize("threads", [1, 2])
def test_conv2d_blocks_match_the_unfold_twin_on_any_thread_count(build, monkeypatch, band, threads):
    """Conv2D's forward and transpose, cut into bands and dealt out to worker threads, equal the
    one-matrix-per-image twin (and do not depend on the thread count)."""
    import numba

    from bowlrp.jit import limited_threads
    from nets import Conv2D
    from nets.layers import linear

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("needs two numba threads")
    monkeypatch.setattr(linear, "_BAND_MAX_ELEMENTS", band)
    rng = np.random.default_rng(7)
    for g, x in _cases(7):
        kh, kw, sh, sw, ph, pw = g
        conv = Conv2D(rng.normal(size=(4, x.shape[1], kh, kw)), stride=(sh, sw), padding=(ph, pw))
        x = np.concatenate([x, x[::-1] + 1.0])  # at least two images, so the workers share them
        n, c, h, w = x.shape
        oh, ow = _out_size(h, w, *g)
        W2 = conv.W.reshape(4, -1)
        with limited_threads(threads):
            y = conv.forward(x)
            s = rng.normal(size=y.shape)
            back = conv.backward(x, y, s)
        np.testing.assert_allclose(y.reshape(n, 4, -1), W2 @ unfold_twin(x, g), rtol=1e-12, atol=1e-12)
        want = fold_twin(W2.T @ s.reshape(n, 4, oh * ow), x.shape, g)
        np.testing.assert_allclose(back, want, rtol=1e-12, atol=1e-12)


def test_a_pass_over_convolutions_holds_blas_at_one_thread_and_restores_it(build):
    import numba
    from threadpoolctl import threadpool_info

    from bowlrp.jit import limited_threads
    from nets import Conv2D, Dense
    from nets.layers.linear import one_blas_thread_for

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two numba threads")

    def blas_threads():  # numpy's BLAS (scipy may have loaded another one, which we do not use)
        return {
            p["num_threads"]
            for p in threadpool_info()
            if p["user_api"] == "blas" and "numpy" in p["filepath"]
        }

    conv, dense = Conv2D(np.ones((1, 1, 1, 1))), Dense(np.ones((1, 1)))
    with limited_threads(2):
        before = blas_threads()
        with one_blas_thread_for([dense, conv]):
            assert blas_threads() == {1}
            with one_blas_thread_for([conv]):  # nested passes (a trace inside an LRP): no change
                assert blas_threads() == {1}
            assert blas_threads() == {1}
        assert blas_threads() == before
        with one_blas_thread_for([dense]):  # no convolution: BLAS keeps its threads
            assert blas_threads() == before


def test_max_pool_scatter_with_disjoint_windows_matches_twin():
    """Windows that do not overlap (stride >= kernel) are written directly, gaps and ragged edges
    zeroed: ties, zero relevance, a stride larger than the kernel."""
    rng = np.random.default_rng(12)
    cases = []
    for g in [(2, 2, 2, 2, 0, 0), (2, 2, 3, 3, 0, 0), (3, 2, 3, 2, 0, 0), (1, 1, 2, 1, 0, 0)]:
        for shape in [(2, 3, 8, 8), (1, 2, 7, 9), (1, 1, 5, 5)]:
            x = np.round(rng.normal(size=shape) * 2) / 2  # ties
            r = rng.normal(size=max_pool_twin(x, g).shape)
            r[rng.random(r.shape) < 0.3] = 0.0
            cases.append((x, r, g))

    def scat_fast(x, r, g):
        out = np.full(x.shape, np.nan)
        _kernels.max_pool_scatter_valid(x, max_pool_twin(x, g), r, *g[:4], out)
        return out

    assert_matches_twin(scat_fast, max_scatter_twin, cases)


def test_two_by_two_pool_fast_path_matches_twins_and_general_loop():
    """``max_pool_valid`` / ``max_pool_scatter_valid`` run 2 x 2 stride-2 windows in flat views
    (no zeroing pass, no branches in the scatter): against the twins, ties of two, three and four,
    zero relevance, odd sides (the last row/column in no window), float32 and float64; and equal,
    bit for bit, to the general kernels' loop (``max_pool`` / ``max_pool_scatter`` with no padding)."""
    rng = np.random.default_rng(13)
    g = (2, 2, 2, 2, 0, 0)
    fwd, scat = [], []
    for shape in [(2, 3, 8, 8), (1, 2, 7, 9), (3, 1, 5, 4), (1, 1, 2, 2)]:
        for dtype in (np.float32, np.float64):
            x = (np.round(rng.normal(size=shape) * 2) / 2).astype(dtype)  # many ties
            r = rng.normal(size=max_pool_twin(x, g).shape).astype(dtype)
            r[rng.random(r.shape) < 0.4] = 0.0
            fwd.append((x, g))
            scat.append((x, r, g))

    def fwd_fast(x, g):
        out = np.full((x.shape[0], x.shape[1], *_out_size(*x.shape[2:], *g)), np.nan, dtype=x.dtype)
        _kernels.max_pool_valid(x, *g[:4], out)
        return out

    def scat_fast(x, r, g):
        out = np.full(x.shape, np.nan, dtype=x.dtype)
        _kernels.max_pool_scatter_valid(x, fwd_fast(x, g), r, *g[:4], out)
        return out

    assert_matches_twin(fwd_fast, max_pool_twin, fwd)
    assert_matches_twin(
        scat_fast, lambda x, r, g: max_scatter_twin(x, r, g).astype(x.dtype), scat, rtol=1e-6, atol=1e-7
    )
    for x, r, _ in scat:  # the general loops (padding 0) give the same bits
        y = fwd_fast(x, g)
        y_general = np.empty_like(y)
        _kernels.max_pool(x, *g, y_general)
        assert np.array_equal(y, y_general)
        out_general = np.empty_like(x)
        _kernels.max_pool_scatter(x, y, r, *g, out_general)
        assert np.array_equal(scat_fast(x, r, g), out_general)


def test_any_positive_matches_twin():
    """The early-exit sign check of the LRP rules (x <= 0 everywhere?) against ``np.any(a > 0)``:
    a positive value first, last or nowhere, negative zeros, float32 and float64."""
    rng = np.random.default_rng(14)
    cases = []
    for dtype in (np.float32, np.float64):
        neg = -rng.random(50).astype(dtype)
        last = neg.copy()
        last[-1] = 1e-30
        first = neg.copy()
        first[0] = 2.0
        cases += [
            (neg,),
            (last,),
            (first,),
            (np.zeros(7, dtype),),
            (np.full(3, -0.0, dtype),),
            (rng.normal(size=1000).astype(dtype),),
        ]
    assert_matches_twin(
        lambda a: np.array(_kernels.any_positive(a)), lambda a: np.array(np.any(a > 0)), cases
    )
