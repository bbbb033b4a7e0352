"""The 8-lane intrinsics (``_sift_simd``) and the SIFT kernels written with them, bit for bit.

The vector code must give the bits the scalar code gave (descriptors are bit-identical across
speed-ups), so every twin here is the scalar formula in the same order of operations, written with
numpy (which neither fuses multiply-adds nor reorders a sum of two arrays), compared with
``np.array_equal``. The rtol twins of ``test_features.py`` check the same kernels against the
definition.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from skimage import data

from bowlrp.bow import _sift_kernels as K
from bowlrp.bow import _sift_simd as V
from bowlrp.bow.sift_grid import frame_layout, gaussian_taps
from tests.bowlrp.bow.test_features import twin_smooth
from tests.kernel_twins import assert_matches_twin


@numba.njit
def _lanes_ops(a, b, x, out):
    """out rows: a + b, a * b, min(a, b), splat(x), zero, then hsum of a and b in rows 5, 6."""
    va = V.vload8(a, 0)
    vb = V.vload8(b, 0)
    V.vstore8(out[0], 0, V.vadd8(va, vb))
    V.vstore8(out[1], 0, V.vmul8(va, vb))
    V.vstore8(out[2], 0, V.vmin8(va, vb))
    V.vstore8(out[3], 0, V.vsplat8(x))
    V.vstore8(out[4], 0, V.vzero8())
    out[5, 0] = V.hsum8(va)
    out[6, 0] = V.hsum8(vb)


def test_lane_operations_equal_the_scalar_ones():
    rng = np.random.default_rng(0)
    a = rng.normal(size=8) * 10.0 ** rng.integers(-5, 5, 8)
    b = rng.normal(size=8)
    b[3] = a[3]  # a tie for min
    # lane sums where the order matters: 1e16 + 1 loses the 1, (1e16 + 1) + (-1e16 + 1) = 0 + ...
    a[:4] = [1e16, 1.0, -1e16, 1.0]
    out = np.zeros((7, 8))
    _lanes_ops(a, b, 0.3, out)
    assert np.array_equal(out[0], a + b)
    assert np.array_equal(out[1], a * b)
    assert np.array_equal(out[2], np.where(b < a, b, a))
    assert np.array_equal(out[3], np.full(8, 0.3))
    assert np.array_equal(out[4], np.zeros(8)) and not np.signbit(out[4]).any()
    for row, v in ((5, a), (6, b)):
        want = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))
        assert out[row, 0] == want
    assert out[5, 0] != sum(a)  # the fixed order is not the left-to-right sum here


@numba.njit
def _select(lane, x, y, z, out):
    V.vstore8(out, 0, V.vselect_lane8(lane, x, y, z))


@pytest.mark.parametrize("lane", range(8))
def test_select_lane_puts_two_values_in_neighbouring_lanes(lane):
    out = np.full(8, np.nan)
    _select(lane, 1.5, 2.5, -0.0, out)
    want = np.full(8, -0.0)
    want[lane] = 1.5
    want[(lane + 1) % 8] = 2.5
    assert np.array_equal(out, want) and np.array_equal(np.signbit(out), np.signbit(want))


@numba.njit
def _load_store_offsets(src, dst, at, to):
    V.vstore8(dst, to, V.vload8(src, at))


def test_load_and_store_at_any_offset_and_on_a_row_of_a_block():
    src = np.arange(40.0)
    dst = np.zeros(40)
    _load_store_offsets(src, dst, 3, 29)
    want = np.zeros(40)
    want[29:37] = src[3:11]
    assert np.array_equal(dst, want)
    # a row of a column block of a wider array: unit stride, numba layout "A"
    wide = np.zeros((3, 24))
    _load_store_offsets(src, wide[1, 8:16], 5, 0)
    assert np.array_equal(wide[1, 8:16], src[5:13]) and not wide[0].any() and not wide[2].any()


@numba.njit
def _aligned(n):
    a = V.empty_aligned(n)
    z = V.zeros_aligned(n)
    return a.ctypes.data % 64, a.size, z.ctypes.data % 64, z.size, z.sum()


@pytest.mark.parametrize("n", [1, 7, 100, 1000, 4097])
def test_aligned_buffers_start_on_a_cache_line(n):
    assert _aligned(n) == (0, n, 0, n, 0.0)
    arr = V.empty_aligned_array((n, 3))
    assert arr.shape == (n, 3) and arr.flags["C_CONTIGUOUS"] and arr.ctypes.data % 64 == 0


# ---------------------------------------------------------------------- kernels, bit for bit
@numba.njit
def _series(values):
    K._atan_series(values, values.shape[0])


def twin_series(values):
    """Horner's scheme of the arctangent series, highest term first, each step rounded."""
    p = np.full_like(values, K._ATAN_COEFFS[-1])
    for c in K._ATAN_COEFFS[-2::-1]:
        p = p * values + c
    return p


@pytest.mark.parametrize("n", [0, 5, 8, 31, 32, 45, 64, 71])
def test_atan_series_equals_horner_bit_for_bit(n):
    z = np.random.default_rng(n).uniform(-0.42, 0.42, n) ** 2
    out = z.copy()
    _series(out)
    assert np.array_equal(out, twin_series(z))


def twin_orientation_bits(image):
    """(bin0, w0, w1) of orientation_field by the scalar formulas, in their order of operations."""
    gy, gx = np.gradient(image)
    if image.shape[0] == 1:
        gy = np.zeros_like(image)
    X, Y = gx, -gy
    ax, ay = np.abs(X), np.abs(Y)
    r = np.minimum(ax, ay) / np.maximum(np.maximum(ax, ay), 1e-300)
    big = r > K._TAN_PI_8
    z = np.where(big, (r - 1.0) / (r + 1.0), r)
    a = z * twin_series(z * z) * K._INV_QUARTER_PI + np.where(big, 1.0, 0.0)
    phi = np.where(ay > ax, 2.0 - a, a)
    sx, sy = X < 0.0, Y < 0.0
    t = np.where(sx, 4.0, np.where(sy, 8.0, 0.0)) + np.where(sx != sy, -1.0, 1.0) * phi
    b = t.astype(np.int64)
    frac = t - b
    mag = np.sqrt(gx * gx + gy * gy)
    return b & 7, mag * (1.0 - frac), mag * frac


@pytest.mark.parametrize("kernel", [K.orientation_field.parallel, K.orientation_field.serial])
@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (20, 7), (9, 33)])
def test_orientation_field_equals_the_scalar_formula_bit_for_bit(kernel, shape):
    image = data.camera()[100 : 100 + shape[0], 200 : 200 + shape[1]] / 255.0
    fast = K.empty_orientation_field(shape)
    kernel(image, *fast)
    for got, want in zip(fast, twin_orientation_bits(image)):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("kernel", [K.smooth_separable.parallel, K.smooth_separable.serial])
def test_smoothing_equals_the_scalar_sums_bit_for_bit(kernel):
    """Widths around every boundary of the row pass: narrower than the filter (all border), exactly
    two radii, one 8-pixel block, 32-pixel blocks with and without 8-pixel and scalar remainders."""
    taps_by_size = {5: gaussian_taps(0.44), 11: gaussian_taps(1.25)}
    for n_taps, taps in taps_by_size.items():
        assert taps.size == n_taps
        r = n_taps // 2
        for width in (1, 3, r, 2 * r, 2 * r + 1, 2 * r + 8, 2 * r + 31, 2 * r + 32, 2 * r + 45, 2 * r + 77):
            image = data.camera()[200:213, 100 : 100 + width] / 255.0
            out = np.full(image.shape, np.nan)
            kernel(image, taps, np.empty_like(image), out)
            assert np.array_equal(out, twin_smooth(image, taps)), (n_taps, width)


def twin_pool_columns_bits(bin0, w0, w1, starts, weights, offset):
    """out[y, c, o]: 0.0 plus w * w0 (bin0 == o) or w * w1 (next bin == o), taps in order."""
    height, width = bin0.shape
    out = np.zeros((height, starts.size, 8))
    for c, s in enumerate(starts):
        for t, w in enumerate(weights):
            x = s + offset + t
            if 0 <= x < width:
                rows = np.arange(height)
                b = bin0[:, x]
                cell = out[:, c]
                cell[rows, b] = cell[rows, b] + w * w0[:, x]
                cell[rows, (b + 1) % 8] = cell[rows, (b + 1) % 8] + w * w1[:, x]
    return out


@pytest.mark.parametrize("kernel", [K.pool_columns.parallel, K.pool_columns.serial])
@pytest.mark.parametrize("bin_size,step,width", [(4, 8, 64), (6, 8, 61), (3, 2, 29), (8, 4, 45)])
def test_pool_columns_equals_scattered_adds_bit_for_bit(kernel, bin_size, step, width):
    image = data.astronaut()[50:90, 100 : 100 + width, 1] / 255.0
    field = K.empty_orientation_field(image.shape)
    K.orientation_field.serial(image, *field)
    _, _, _, _, starts, _, weights, offset = frame_layout(*image.shape, bin_size, step)
    out = np.full((image.shape[0], starts.size, 8), np.nan)
    kernel(*field, starts, weights, offset, out)
    assert np.array_equal(out, twin_pool_columns_bits(*field, starts, weights, offset))


def twin_assemble_bits(pooled, row_index, col_index, area, threshold, clip):
    """assemble_normalize by the scalar formulas: per-orientation sums in cell order, lanes added
    ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)), the clip pass's squares in lane k % 8."""

    def lanes(v):
        return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))

    n_fx = col_index.shape[0]
    out = np.zeros((row_index.shape[0] * n_fx, 128))
    energy = np.zeros(out.shape[0])
    for fy in range(row_index.shape[0]):
        for fx in range(n_fx):
            f = fy * n_fx + fx
            a = np.zeros(8)
            q = np.zeros(8)
            cells = []
            for i in range(4):
                for j in range(4):
                    v = pooled[row_index[fy, i], col_index[fx, j]]
                    cells.append(v)
                    a = a + v
                    q = q + v * v
            energy[f] = lanes(a) / area
            sq = lanes(q)
            if energy[f] < threshold or sq <= 0.0:
                continue
            d = np.concatenate(cells)
            c = d * (1.0 / np.sqrt(sq))
            c = np.where(clip < c, clip, c)
            q2 = np.zeros(8)
            for k in range(16):
                q2 = q2 + c[8 * k : 8 * k + 8] ** 2
            out[f] = c * (1.0 / np.sqrt(lanes(q2)))
    return out, energy


@pytest.mark.parametrize("kernel", [K.assemble_normalize.parallel, K.assemble_normalize.serial])
def test_assemble_normalize_equals_the_scalar_order_bit_for_bit(kernel):
    image = data.coffee()[100:164, 200:260, 0] / 255.0
    field = K.empty_orientation_field(image.shape)
    K.orientation_field.serial(image, *field)
    _, _, rows, row_index, cols, col_index, weights, offset = frame_layout(*image.shape, 4, 4)
    by_col = np.empty((image.shape[0], cols.size, 8))
    K.pool_columns.serial(*field, cols, weights, offset, by_col)
    pooled = np.empty((rows.size, cols.size, 8))
    K.pool_rows.serial(by_col, rows, weights, offset, pooled)
    pooled[:2] = 0.0  # flat frames too

    def fast(pooled):
        out = np.full((row_index.shape[0] * col_index.shape[0], 128), np.nan)
        energy = np.full(out.shape[0], np.nan)
        kernel(pooled, row_index, col_index, 256.0, 0.005, 0.2, out, energy)
        return out, energy

    got = fast(pooled)
    want = twin_assemble_bits(pooled, row_index, col_index, 256.0, 0.005, 0.2)
    assert (want[1] < 0.005).any() and (want[1] >= 0.005).any()
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    assert_matches_twin(fast, lambda p: twin_assemble_bits(p, row_index, col_index, 256.0, 0.005, 0.2),
                        [(pooled,)], rtol=0, atol=0)


def test_strided_and_float32_planes_are_read_as_their_values():
    """Review of issue 15: the 8-value loads assume unit-stride float64 rows; a Fortran-order, strided
    or float32 plane given to the public helpers is read as its values (it read wrong memory, or
    raised a numba typing error)."""
    from bowlrp.bow.sift_numba import orientation_fields, streamed_descriptors

    plane = np.ascontiguousarray(data.camera()[100:140, 200:280] / 255.0)
    want = orientation_fields([plane], 1.0)[0]
    for odd in (np.asfortranarray(plane), np.repeat(plane, 2, axis=1)[:, ::2], plane.astype(np.float32)):
        got = orientation_fields([odd], 1.0)[0]
        ref = orientation_fields([np.ascontiguousarray(odd, dtype=np.float64)], 1.0)[0]
        for g, r in zip(got, ref):
            assert np.array_equal(g, r)
    for g, r in zip(orientation_fields([np.asfortranarray(plane)], 1.0)[0], want):
        assert np.array_equal(g, r)
    out_c, out_f = np.zeros((1, 200, 128)), np.zeros((1, 200, 128))
    streamed_descriptors(plane[None], 1, 4, 8, 1.0, 0.0, out_c)
    streamed_descriptors(np.repeat(plane[None], 2, axis=2)[:, :, ::2], 1, 4, 8, 1.0, 0.0, out_f)
    assert np.array_equal(out_c, out_f) and out_c.any()
