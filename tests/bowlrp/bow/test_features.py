"""Dense SIFT: every numba kernel against a numpy twin, hand-made cases, real images, both backends."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data
from sklearn.base import clone

from bowlrp.bow import _sift_kernels as K
from bowlrp.bow.features import DenseSIFT, LocalFeatures
from bowlrp.bow.sift_grid import (
    bin_layout,
    color_planes,
    default_smoothing,
    gaussian_taps,
    grid_starts,
    triangle_weights,
)
from bowlrp.bow.sift_numba import numba_descriptors
from bowlrp.jit import forced_builds
from tests.kernel_twins import assert_matches_twin

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------------------- numpy twins
def twin_smooth(image, taps):
    r = (taps.size - 1) // 2
    padded = np.pad(image, ((0, 0), (r, r)), mode="edge")
    rows = sum(taps[t] * padded[:, t : t + image.shape[1]] for t in range(taps.size))
    padded = np.pad(rows, ((r, r), (0, 0)), mode="edge")
    return sum(taps[t] * padded[t : t + image.shape[0], :] for t in range(taps.size))


def twin_planes(image):
    """(8, H, W) orientation planes straight from np.gradient and np.arctan2."""
    gy, gx = np.gradient(image)
    angle = np.mod(np.arctan2(-gy, gx), 2 * np.pi)
    t = angle / (2 * np.pi / 8)
    b = np.floor(t).astype(int)
    frac = t - b
    mag = np.hypot(gx, gy)
    planes = np.zeros((8,) + image.shape)
    yy, xx = np.indices(image.shape)
    np.add.at(planes, (b % 8, yy, xx), mag * (1 - frac))
    np.add.at(planes, ((b + 1) % 8, yy, xx), mag * frac)
    return planes


def planes_from_field(bin0, w0, w1):
    planes = np.zeros((8,) + bin0.shape)
    yy, xx = np.indices(bin0.shape)
    np.add.at(planes, (bin0 % 8, yy, xx), w0)
    np.add.at(planes, ((bin0 + 1) % 8, yy, xx), w1)
    return planes


def twin_pool_columns(planes, starts, weights, offset):
    _, height, width = planes.shape
    out = np.zeros((height, starts.size, 8))
    for c, s in enumerate(starts):
        for t, w in enumerate(weights):
            x = s + offset + t
            if 0 <= x < width:
                out[:, c, :] += w * planes[:, :, x].T
    return out


def twin_pool_rows(columns, starts, weights, offset):
    out = np.zeros((starts.size,) + columns.shape[1:])
    for r, s in enumerate(starts):
        for t, w in enumerate(weights):
            y = s + offset + t
            if 0 <= y < columns.shape[0]:
                out[r] += w * columns[y]
    return out


def _read_only(*arrays):
    """The arrays, read-only like the layout arrays production passes: a writeable copy would make
    numba compile the kernel's builds once more for a signature production never uses."""
    for a in arrays:
        a.flags.writeable = False
    return arrays


def twin_assemble(pooled, row_index, col_index, area, threshold, clip):
    n_fy, n_fx = row_index.shape[0], col_index.shape[0]
    out = np.zeros((n_fy * n_fx, 128))
    energy = np.zeros(n_fy * n_fx)
    for fy in range(n_fy):
        for fx in range(n_fx):
            raw = pooled[np.ix_(row_index[fy], col_index[fx])].reshape(-1)  # (i, j, o) order
            f = fy * n_fx + fx
            energy[f] = raw.sum() / area
            if energy[f] < threshold or not raw.any():
                continue
            u = np.minimum(raw / np.linalg.norm(raw), clip)
            out[f] = u / np.linalg.norm(u)
    return out, energy


def twin_descriptor(image, y0, x0, bin_size, sigma):
    """One frame's normalised descriptor, computed directly from its definition (no filter sharing)."""
    planes = twin_planes(twin_smooth(image, gaussian_taps(sigma)))
    b = bin_size
    pos = np.arange(-b, 5 * b)  # pixel offsets around the support that any bin can touch
    centres = b * np.arange(4) + (b - 1) / 2.0
    wts = np.clip(1 - np.abs(pos[None, :] - centres[:, None]) / b, 0, None)  # (4, len(pos))
    raw = np.zeros((4, 4, 8))
    for o in range(8):
        padded = np.pad(planes[o], 2 * b)  # zeros outside the image
        crop = padded[y0 - b + 2 * b : y0 + 5 * b + 2 * b, x0 - b + 2 * b : x0 + 5 * b + 2 * b]
        raw[:, :, o] = wts @ crop @ wts.T
    raw = raw.reshape(-1)
    energy = raw.sum() / (4 * b) ** 2
    return raw, energy


# -------------------------------------------------------------------------------------- kernel twins
def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    return rng.random((h, w))


@pytest.mark.parametrize("kernel", [K.smooth_separable.parallel, K.smooth_separable.serial])
def test_smooth_matches_twin(kernel):
    def fast(image, taps):
        out = np.empty_like(image)
        kernel(image, taps, np.empty_like(image), out)
        return out

    cases = [
        (_image(h, w, s), gaussian_taps(sig))
        # the last case is narrower than the filter (17 taps, 7 columns): every pixel is a border pixel
        for (h, w, s, sig) in [
            (20, 17, 0, 0.7),
            (9, 31, 1, 1.5),
            (16, 16, 2, 0.3),
            (5, 40, 3, 3.0),
            (12, 7, 4, 2.0),
        ]
    ]
    assert_matches_twin(fast, twin_smooth, cases)


@pytest.mark.parametrize("kernel", [K.orientation_field.parallel, K.orientation_field.serial])
def test_orientation_field_matches_twin(kernel):
    def fast(image):
        bin0, w0, w1 = K.empty_orientation_field(image.shape)
        kernel(image, bin0, w0, w1)
        assert bin0.min() >= 0 and bin0.max() <= 7
        return planes_from_field(bin0, w0, w1)

    edge = np.zeros((12, 12))
    edge[:, 6:] = 1.0  # exact axis-aligned gradients hit the bin boundaries
    cases = [
        (_image(15, 22, 4),),
        (_image(30, 7, 5),),
        (edge,),
        (edge.T.copy(),),
        (-edge,),
        (np.zeros((6, 6)),),
    ]
    assert_matches_twin(fast, twin_planes, cases, rtol=1e-10, atol=1e-12)


def _field(image):
    bin0, w0, w1 = K.empty_orientation_field(image.shape)
    K.orientation_field.serial(image, bin0, w0, w1)
    return bin0, w0, w1


@pytest.mark.parametrize("kernel", [K.pool_columns.parallel, K.pool_columns.serial])
@pytest.mark.parametrize("bin_size,step", [(4, 4), (3, 2), (5, 3), (8, 6)])
def test_pool_columns_matches_twin(kernel, bin_size, step):
    image = _image(23, 45, bin_size)
    starts, _ = bin_layout(grid_starts(45, 4 * bin_size, step), bin_size)
    weights, offset = triangle_weights(bin_size)
    _read_only(starts, weights)  # as frame_layout hands them to the kernels (one specialisation)

    def fast(image):
        out = np.full((image.shape[0], starts.size, 8), np.nan)  # every cell must be written
        kernel(*_field(image), starts, weights, offset, out)
        return out

    def slow(image):
        return twin_pool_columns(planes_from_field(*_field(image)), starts, weights, offset)

    assert_matches_twin(fast, slow, [(image,)])


@pytest.mark.parametrize("kernel", [K.pool_rows.parallel, K.pool_rows.serial])
@pytest.mark.parametrize("bin_size,step", [(4, 4), (3, 5), (6, 2)])
def test_pool_rows_matches_twin(kernel, bin_size, step):
    columns = RNG.random((41, 6, 8))
    starts, _ = bin_layout(grid_starts(41, 4 * bin_size, step), bin_size)
    weights, offset = triangle_weights(bin_size)
    _read_only(starts, weights)  # as frame_layout hands them to the kernels (one specialisation)

    def fast(columns):
        out = np.full((starts.size, columns.shape[1], 8), np.nan)
        kernel(columns, starts, weights, offset, out)
        return out

    assert_matches_twin(fast, lambda c: twin_pool_rows(c, starts, weights, offset), [(columns,)])


@pytest.mark.parametrize("kernel", [K.assemble_normalize.parallel, K.assemble_normalize.serial])
def test_assemble_normalize_matches_twin(kernel):
    pooled = RNG.random((9, 11, 8)) ** 4  # skewed so that clipping at 0.2 happens
    pooled[2] = 0.0  # rows with no gradient at all
    pooled[5] *= 1e-4  # low-contrast rows, below the threshold
    row_index = np.array([[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [5, 6, 7, 8]])
    col_index = np.array([[0, 1, 2, 3], [3, 4, 5, 6], [7, 8, 9, 10]])
    _read_only(row_index, col_index)

    def fast(pooled, threshold):
        out = np.full((12, 128 + 5), -1.0)
        energy = np.empty(12)
        kernel(pooled, row_index, col_index, 64.0, threshold, 0.2, out[:, 5:], energy)  # a column block
        assert np.all(out[:, :5] == -1.0), "kernel wrote outside its column block"
        return out[:, 5:], energy

    def slow(pooled, threshold):
        return twin_assemble(pooled, row_index, col_index, 64.0, threshold, 0.2)

    pooled[8] = 0.0
    pooled[:, 9:] = 0.0  # the last frame column then has no gradient at all
    middle = float(np.median(slow(pooled, 0.0)[1]))
    assert_matches_twin(fast, slow, [(pooled, 0.0), (pooled, middle), (pooled, 1e9)])
    got, _ = fast(pooled, middle)
    assert np.any(np.all(got == 0, axis=1)) and np.any(np.any(got != 0, axis=1))


@pytest.mark.parametrize("bin_size,step,sigma", [(4, 4, 0.8), (3, 5, 0.0), (6, 3, None)])
def test_full_descriptor_matches_direct_definition(bin_size, step, sigma):
    """The shared-filter pipeline equals the per-frame definition (bins, weights, layout, norms)."""
    image = data.camera()[100:141, 200:251] / 255.0
    sigma = default_smoothing(bin_size) if sigma is None else sigma
    desc, energy, ys, xs = numba_descriptors([image], bin_size, step, sigma, 0.004)
    assert desc.shape == (ys.size * xs.size, 128)
    for f, (y0, x0) in enumerate((y, x) for y in ys for x in xs):
        raw, e = twin_descriptor(image, y0, x0, bin_size, sigma)
        np.testing.assert_allclose(energy[f, 0], e, rtol=1e-10, atol=1e-14)
        if e < 0.004:
            assert np.all(desc[f] == 0)
            continue
        u = np.minimum(raw / np.linalg.norm(raw), 0.2)
        np.testing.assert_allclose(desc[f], u / np.linalg.norm(u), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------- hand-made cases
def test_flat_image_gives_all_zero_descriptors():
    for value in (0.0, 0.37, 1.0):
        feats = DenseSIFT(step=5).extract(np.full((30, 33), value))
        assert len(feats) > 0 and np.all(feats.descriptors == 0)


def test_below_threshold_noise_is_flat_but_texture_is_not():
    rng = np.random.default_rng(1)
    faint = 0.5 + 1e-4 * rng.standard_normal((40, 40))
    assert np.all(DenseSIFT().extract(faint).descriptors == 0)
    strong = 0.5 + 0.2 * rng.standard_normal((40, 40))
    assert np.all(np.linalg.norm(DenseSIFT().extract(strong).descriptors, axis=1) > 0.99)


@pytest.mark.parametrize(
    "image,expected_bin",
    [
        (np.tile(np.r_[np.zeros(16), np.ones(16)], (32, 1)), 0),  # bright on the right: gradient +x
        (np.tile(np.r_[np.ones(16), np.zeros(16)], (32, 1)), 4),  # bright on the left: 180 degrees
        (np.tile(np.r_[np.ones(16), np.zeros(16)], (32, 1)).T.copy(), 2),  # bright on top: +y up
        (np.tile(np.r_[np.zeros(16), np.ones(16)], (32, 1)).T.copy(), 6),
    ],
)
def test_straight_edge_fills_only_its_orientation_bin(image, expected_bin):
    feats = DenseSIFT(step=4, bin_sizes=(4,), smoothing=0.0).extract(image)
    desc = feats.descriptors.reshape(-1, 16, 8)
    active = np.linalg.norm(feats.descriptors, axis=1) > 0
    assert active.sum() > 0
    per_bin = desc[active].sum(axis=(0, 1))
    assert per_bin[expected_bin] > 0
    assert np.all(np.delete(per_bin, expected_bin) == 0)


def test_diagonal_gradient_splits_between_two_bins():
    yy, xx = np.indices((32, 32))
    ramp = (xx + (32 - yy)) / 64.0  # increases to the right and upwards: 45 degrees exactly
    desc = DenseSIFT(smoothing=0.0, contrast_threshold=0.0).extract(ramp).descriptors.reshape(-1, 16, 8)
    per_bin = desc.sum(axis=(0, 1))
    assert per_bin[1] > 0 and np.allclose(np.delete(per_bin, 1), 0, atol=1e-12)
    ramp2 = (xx + 0.5 * (32 - yy)) / 64.0  # between 0 and 45 degrees: bins 0 and 1 only
    per_bin2 = DenseSIFT(smoothing=0.0).extract(ramp2).descriptors.reshape(-1, 16, 8).sum(axis=(0, 1))
    assert per_bin2[0] > 0 and per_bin2[1] > 0 and np.all(per_bin2[2:] == 0)


def test_norms_are_one_or_zero_on_a_real_image():
    feats = DenseSIFT(step=3, bin_sizes=(3, 5)).extract(data.camera()[::3, ::3])
    d = feats.descriptors
    norms = np.linalg.norm(d, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-12) | (norms == 0))
    assert np.all(d >= 0) and np.mean(norms > 0) > 0.5


def test_clipping_at_0_2_by_hand():
    # One frame whose raw histogram has one dominant entry (100) and 127 entries of 1.
    pooled = np.ones((4, 4, 8))
    pooled[0, 0, 0] = 100.0
    index = _read_only(np.arange(4)[None, :])[0]
    out, energy = np.empty((1, 128)), np.empty(1)
    K.assemble_normalize.serial(pooled, index, index, 1.0, 0.0, 0.2, out, energy)
    small = 1.0 / np.sqrt(100.0**2 + 127)  # the other entries after the first L2
    norm2 = np.sqrt(0.2**2 + 127 * small**2)  # the dominant entry is clipped to 0.2
    np.testing.assert_allclose(out[0, 0], 0.2 / norm2, rtol=1e-14)
    np.testing.assert_allclose(out[0, 1:], small / norm2, rtol=1e-14)
    assert energy[0] == 227.0


def test_grid_counts_boxes_and_geometry():
    image = RNG.random((40, 50))
    sift = DenseSIFT(step=4, bin_sizes=(4, 6), smoothing=0.5)
    feats = sift.extract(image)
    # B=4 (A=16): 7 rows x 9 cols; B=6 (A=24): 5 rows x 7 cols.
    assert len(feats) == 7 * 9 + 5 * 7
    assert feats.descriptors.dtype == np.float64 and feats.centers.dtype == np.float64
    assert feats.support.dtype == np.int64 and feats.channel.dtype == np.int64
    assert np.array_equal(feats.channel, np.r_[np.zeros(63, int), np.ones(35, int)])
    assert np.array_equal(feats.support, np.r_[np.full(63, 16), np.full(35, 24)])
    assert feats.image_shape == (40, 50)
    boxes = feats.boxes()
    assert boxes.dtype == np.int64
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 40) and np.all(boxes[:, 3] <= 50)
    assert np.all(boxes[:, 2] - boxes[:, 0] == feats.support)
    assert np.all(boxes[:, 3] - boxes[:, 1] == feats.support)
    np.testing.assert_array_equal((boxes[:, :2] + boxes[:, 2:] - 1) / 2.0, feats.centers)
    # grid is centred and regular
    b4 = boxes[feats.channel == 0]
    assert np.array_equal(np.unique(b4[:, 0]), np.arange(0, 25, 4))
    assert np.array_equal(np.unique(b4[:, 1]), np.arange(1, 35, 4))
    assert sift.n_channels == 2 and sift.descriptor_dim == 128
    assert sift.fit() is sift
    copy = clone(sift)
    assert copy.get_params() == sift.get_params()


def test_image_exactly_one_support_gives_one_frame():
    feats = DenseSIFT(step=7, bin_sizes=(5,)).extract(RNG.random((20, 20)))
    assert len(feats) == 1
    np.testing.assert_array_equal(feats.boxes(), [[0, 0, 20, 20]])


def test_extracted_features_are_what_the_public_constructor_builds():
    """The extractor builds its results without ``__post_init__`` (LocalFeatures._trusted): the same
    fields, dtypes and shapes as the checked constructor, and arrays of their own."""
    images = [data.camera()[:70, :90], data.camera()[100:170, 50:140]]
    feats = DenseSIFT(step=6, bin_sizes=(4, 6)).extract_many(images)
    for f in feats:
        public = LocalFeatures(f.descriptors, f.centers, f.support, f.channel, f.image_shape)
        for name in ("descriptors", "centers", "support", "channel"):
            got, want = getattr(f, name), getattr(public, name)
            assert got.dtype == want.dtype and got.shape == want.shape and got.flags.writeable
            np.testing.assert_array_equal(got, want)
        assert f.image_shape == (70, 90) and all(type(s) is int for s in f.image_shape)
    assert not np.shares_memory(feats[0].centers, feats[1].centers)


def test_local_features_rejects_inconsistent_arrays():
    with pytest.raises(ValueError, match="inconsistent"):
        LocalFeatures(np.zeros((3, 128)), np.zeros((2, 2)), np.zeros(3, int), np.zeros(3, int), (9, 9))


# ---------------------------------------------------------------------------------------- inputs
def test_uint8_float_and_rgb_inputs_agree():
    gray = data.camera()[:64, :80]
    sift = DenseSIFT(step=6)
    a = sift.extract(gray).descriptors
    b = sift.extract(gray / 255.0).descriptors
    c = sift.extract(np.repeat(gray[:, :, None], 3, axis=2)).descriptors  # luma of equal RGB is gray
    np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(a, c, atol=1e-9)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((10, 10)), "smaller than one descriptor support"),
        (np.full((20, 20), np.nan), "non-finite"),
        (np.zeros((20, 20, 4)), "channels"),
        (np.zeros((20, 20), np.int64), "dtype"),
    ],
)
def test_bad_images_raise_clear_errors(bad, match):
    err = TypeError if match == "dtype" else ValueError
    with pytest.raises(err, match=match):
        DenseSIFT(bin_sizes=(4,)).extract(bad)


def test_error_names_the_sizes():
    with pytest.raises(ValueError, match=r"12x30 .*32x32"):
        DenseSIFT(bin_sizes=(4, 8)).extract(np.zeros((12, 30)))


@pytest.mark.parametrize(
    "params",
    [
        {"step": 0},
        {"bin_sizes": ()},
        {"bin_sizes": (4, -1)},
        {"color": "hsv"},
        {"backend": "vlfeat"},
        {"smoothing": -1.0},
        {"smoothing": "auto"},
        {"contrast_threshold": np.nan},
        {"contrast_threshold": "high"},
        {"step": 2.5},
    ],
)
def test_bad_parameters_raise(params):
    with pytest.raises(ValueError):
        DenseSIFT(**params).extract(np.zeros((40, 40)))


def test_extract_many_mixed_sizes_threads_and_determinism(capsys):
    images = [data.camera()[:48, :64], data.astronaut()[100:164, 100:150], data.coins()[:40, :40] / 255.0]
    sift = DenseSIFT(step=5, bin_sizes=(4, 6), verbose=True)
    serial = sift.extract_many(images)
    assert "3/3" in capsys.readouterr().err
    with forced_builds("parallel"):  # threads although the batch is small
        threaded = sift.extract_many(images, n_jobs=2)
    again = [sift.extract(im) for im in images]
    for s, t, a, im in zip(serial, threaded, again, images):
        assert s.image_shape == im.shape[:2]
        np.testing.assert_array_equal(s.descriptors, t.descriptors)
        np.testing.assert_array_equal(s.descriptors, a.descriptors)
        np.testing.assert_array_equal(s.centers, t.centers)
    with pytest.raises(ValueError, match="empty"):
        sift.extract_many([])


# ------------------------------------------------------------------------------------ colour variants
def test_opponent_planes_and_descriptor_blocks():
    rgb = data.astronaut()[:96, :96] / 255.0
    planes = color_planes(rgb, "opponent")
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    np.testing.assert_allclose(planes[0], (r - g) / np.sqrt(2), atol=1e-15)
    np.testing.assert_allclose(planes[1], (r + g - 2 * b) / np.sqrt(6), atol=1e-15)
    np.testing.assert_allclose(planes[2], (r + g + b) / np.sqrt(3), atol=1e-15)
    sift = DenseSIFT(step=8, color="opponent")
    assert sift.descriptor_dim == 384
    feats = sift.extract(rgb)
    assert feats.descriptors.shape[1] == 384
    block_norms = np.linalg.norm(feats.descriptors.reshape(len(feats), 3, 128), axis=2)
    assert np.all((np.abs(block_norms - 1) < 1e-12) | (block_norms == 0))
    # Each block is the gray descriptor of its plane.
    for p in range(3):
        gray = DenseSIFT(step=8).extract(planes[p]).descriptors
        np.testing.assert_allclose(feats.descriptors[:, 128 * p : 128 * (p + 1)], gray, atol=1e-12)


def test_gray_image_in_opponent_space_has_zero_chromatic_blocks():
    feats = DenseSIFT(step=8, color="opponent").extract(data.camera()[100:164, 200:264])
    assert np.all(feats.descriptors[:, :256] == 0)
    assert np.any(feats.descriptors[:, 256:] != 0)


def test_rgb_variant_blocks_are_channel_descriptors():
    rgb = data.coffee()[:64, :72]
    feats = DenseSIFT(step=8, color="rgb").extract(rgb)
    for p in range(3):
        gray = DenseSIFT(step=8).extract(rgb[:, :, p] / 255.0).descriptors
        np.testing.assert_allclose(feats.descriptors[:, 128 * p : 128 * (p + 1)], gray, atol=1e-12)


# ------------------------------------------------------------------------------------- OpenCV backend
def test_opencv_backend_same_geometry_and_correlated():
    image = data.camera()[:128, :128]
    ours = DenseSIFT(step=6, bin_sizes=(4, 6)).extract(image)
    theirs = DenseSIFT(step=6, bin_sizes=(4, 6), backend="opencv").extract(image)
    for attr in ("centers", "support", "channel"):
        np.testing.assert_array_equal(getattr(ours, attr), getattr(theirs, attr))
    norms = np.linalg.norm(theirs.descriptors, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-6) | (norms == 0))
    # the same energy rule zeroes the same frames
    np.testing.assert_array_equal(norms == 0, np.linalg.norm(ours.descriptors, axis=1) == 0)
    live = norms > 0
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(ours.descriptors[live], theirs.descriptors[live])]
    assert np.median(corr) > 0.6 and np.mean(corr) > 0.5
    # ...and far more than with a mismatched keypoint (the next frame on the grid)
    shifted = [
        np.corrcoef(a, b)[0, 1] for a, b in zip(ours.descriptors[live][1:], theirs.descriptors[live][:-1])
    ]
    assert np.mean(corr) > np.mean(shifted) + 0.2


def test_opencv_backend_flat_and_colour():
    feats = DenseSIFT(backend="opencv").extract(np.full((32, 32), 0.5))
    assert np.all(feats.descriptors == 0)
    rgb = data.astronaut()[:64, :64]
    ocv = DenseSIFT(step=8, color="opponent", backend="opencv").extract(rgb)
    ours = DenseSIFT(step=8, color="opponent").extract(rgb)
    assert ocv.descriptors.shape == ours.descriptors.shape == (49, 384)
    live = np.linalg.norm(ours.descriptors[:, 256:], axis=1) > 0
    corr = [
        np.corrcoef(a, b)[0, 1] for a, b in zip(ours.descriptors[live, 256:], ocv.descriptors[live, 256:])
    ]
    assert np.mean(corr) > 0.5


def test_float_images_outside_unit_range_warn_and_huge_values_raise():
    with pytest.warns(UserWarning, match="expects float images in"):
        DenseSIFT().extract(data.camera()[:32, :32].astype(np.float64))
    huge = np.zeros((32, 32))
    huge[5, 5] = 1e200  # finite, but its squared gradient would overflow to inf and then NaN
    with pytest.raises(ValueError, match="image 1 has pixel values up to 1e"):
        DenseSIFT().extract_many([np.zeros((32, 32)), huge])


def test_parallel_kernels_on_large_images_match_serial():
    image = data.astronaut()[:120, :150]
    sift = DenseSIFT(step=5, bin_sizes=(3, 5), color="opponent")
    with forced_builds("serial"):
        serial = sift.extract(image)
    with forced_builds("parallel"):
        parallel = sift.extract(image)
    np.testing.assert_array_equal(serial.descriptors, parallel.descriptors)


@pytest.mark.parametrize("smoothing", [0.8, None])
def test_each_channel_equals_its_own_single_bin_size_extractor(smoothing):
    # with a fixed smoothing the bin sizes share one orientation field; the result must not change
    image = data.brick()[:70, :90]
    both = DenseSIFT(step=6, bin_sizes=(4, 6), smoothing=smoothing).extract(image)
    for c, b in enumerate((4, 6)):
        alone = DenseSIFT(step=6, bin_sizes=(b,), smoothing=smoothing).extract(image)
        np.testing.assert_array_equal(both.descriptors[both.channel == c], alone.descriptors)
        np.testing.assert_array_equal(both.centers[both.channel == c], alone.centers)


def test_orientation_interpolates_linearly_in_angle_all_around_the_circle():
    # A linear ramp has the same gradient everywhere; with y pointing down, I = cos(t) x - sin(t) y
    # has its gradient at angle t (counter-clockwise, y up).
    angles = np.r_[np.linspace(0, 2 * np.pi, 1441), np.arange(16) * np.pi / 4]
    yy, xx = np.indices((3, 3)).astype(float)
    for theta in angles:
        ramp = np.cos(theta) * xx - np.sin(theta) * yy
        bin0, w0, w1 = K.empty_orientation_field(ramp.shape)
        K.orientation_field.serial(ramp, bin0, w0, w1)
        planes = planes_from_field(bin0, w0, w1)[:, 1, 1]
        t = (theta % (2 * np.pi)) / (np.pi / 4)
        expected = np.zeros(8)
        lower = int(np.floor(t)) % 8
        expected[lower] += 1 - (t - np.floor(t))
        expected[(lower + 1) % 8] += t - np.floor(t)
        np.testing.assert_allclose(planes, expected, atol=1e-12)
        assert abs(w0[1, 1] + w1[1, 1] - 1.0) < 1e-12  # the magnitude is split, not changed


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(12, 40),
    width=st.integers(12, 40),
    step=st.integers(1, 9),
    bin_size=st.integers(1, 3),
    scale=st.sampled_from([0.0, 1e-6, 1e-3, 1.0, 1e50]),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_images_give_finite_unit_or_zero_descriptors(height, width, step, bin_size, scale, seed):
    image = scale * np.random.default_rng(seed).random((height, width))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        feats = DenseSIFT(step=step, bin_sizes=(bin_size,)).extract(image)
    assert np.all(np.isfinite(feats.descriptors))
    norms = np.linalg.norm(feats.descriptors, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-12) | (norms == 0))
    a = 4 * bin_size
    assert len(feats) == ((height - a) // step + 1) * ((width - a) // step + 1)


def test_extract_many_cuts_long_runs_into_chunks_with_the_same_numbers():
    from bowlrp.bow.features import _CHUNK_PIXELS, _same_shape_chunks

    photo = data.astronaut()
    corners = [(y, x) for y in (0, 96, 192, 288, 384) for x in (0, 96, 192, 288, 384)]
    crops = [photo[y : y + 128, x : x + 128] for y, x in corners]
    crops.insert(20, photo[:80, :72])  # a different shape breaks the run
    gray = [im[..., 0] for im in crops]
    chunks = _same_shape_chunks(gray, 1, 1)
    assert [len(c) for c in chunks] == [16, 4, 1, 5]  # 2^18 plane pixels: 16 gray crops of 128 x 128
    assert all(len(c) * c[0].shape[0] * c[0].shape[1] <= max(_CHUNK_PIXELS, c[0].size) for c in chunks)
    assert [len(c) for c in _same_shape_chunks(crops, 3, 1)][:5] == [5, 5, 5, 5, 1]  # 3 planes each
    for color, images in (("gray", gray), ("opponent", crops)):
        sift = DenseSIFT(step=8, bin_sizes=(4, 6), color=color)
        for got, im in zip(sift.extract_many(images), images):
            np.testing.assert_array_equal(got.descriptors, sift.extract(im).descriptors)
