"""The fused dense SIFT kernels (``_sift_stream``) and the batched extraction built on them.

Each fused kernel is checked twice: against the numpy twins of its stages (the definition) and, bit
for bit, against the stage kernels it replaces (the descriptors must not move by one ulp).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from skimage import data

from bowlrp.bow import _sift_kernels as K
from bowlrp.bow import _sift_stream as S
from bowlrp.bow.features import DenseSIFT
from bowlrp.bow.sift_grid import default_smoothing, frame_geometry, frame_layout, gaussian_taps
from bowlrp.bow.sift_numba import orientation_fields, pooled_descriptors, streamed_descriptors
from bowlrp.jit import forced_builds
from tests.bowlrp.bow.test_features import (
    _read_only,
    twin_assemble,
    twin_planes,
    twin_pool_columns,
    twin_pool_rows,
    twin_smooth,
)
from tests.kernel_twins import assert_matches_twin

# (height, width, bin size, step, sigma): odd sizes, a plane barely one support high, no smoothing,
# a filter wider than the bands, scattered bin starts (B = 6 at step 8)
GEOMETRIES = [
    (23, 45, 4, 4, 0.7),
    (37, 29, 3, 5, 0.0),
    (16, 40, 4, 3, 2.0),
    (50, 50, 6, 8, default_smoothing(6)),
    (41, 33, 2, 2, 1.1),
]


def _stages(plane, taps, layout):
    """The stage kernels' pooled cells: the reference the fused kernel must equal bit for bit."""
    _, _, row_starts, _, col_starts, _, weights, offset = layout
    if taps.size > 1:
        smoothed = np.empty_like(plane)
        K.smooth_separable.serial(plane, taps, np.empty_like(plane), smoothed)
    else:
        smoothed = plane
    field = K.empty_orientation_field(plane.shape)
    K.orientation_field.serial(smoothed, *field)
    cols = np.empty((plane.shape[0], col_starts.size, 8))
    K.pool_columns.serial(*field, col_starts, weights, offset, cols)
    pooled = np.empty((row_starts.size, col_starts.size, 8))
    K.pool_rows.serial(cols, row_starts, weights, offset, pooled)
    return pooled


def _twin_pooled(planes, taps, layout):
    _, _, row_starts, _, col_starts, _, weights, offset = layout
    return np.stack([
        twin_pool_rows(
            twin_pool_columns(twin_planes(twin_smooth(p, taps)), col_starts, weights, offset),
            row_starts, weights, offset,
        )
        for p in planes
    ])


def _fast_pooled(kernel, planes, taps, layout, n_bands):
    _, _, row_starts, _, col_starts, _, weights, offset = layout
    out = np.full((planes.shape[0], row_starts.size, col_starts.size, 8), np.nan)  # all must be written
    kernel(planes, taps, col_starts, row_starts, weights, offset, n_bands, out)
    return out


@pytest.mark.parametrize("kernel", [S.pooled_planes.parallel, S.pooled_planes.serial])
@pytest.mark.parametrize("n_bands", [1, 3, 50])
def test_pooled_planes_matches_twin_and_stages(kernel, n_bands):
    rng = np.random.default_rng(n_bands)
    for height, width, bin_size, step, sigma in GEOMETRIES:
        layout = frame_layout(height, width, bin_size, step)
        taps = gaussian_taps(sigma)
        planes = rng.random((2, height, width))
        planes[1, :, : width // 2] = 0.25  # flat regions: zero gradients
        assert_matches_twin(
            lambda p, t, g: _fast_pooled(kernel, p, t, g, n_bands), _twin_pooled, [(planes, taps, layout)],
            rtol=1e-10, atol=1e-12,
        )
        got = _fast_pooled(kernel, planes, taps, layout, n_bands)
        for p in range(2):
            assert np.array_equal(got[p], _stages(planes[p], taps, layout)), (height, width, bin_size)


@pytest.mark.parametrize("kernel", [S.assemble_planes.parallel, S.assemble_planes.serial])
def test_assemble_planes_matches_twin_per_image_and_plane(kernel):
    rng = np.random.default_rng(3)
    row_index = np.array([[0, 1, 2, 3], [2, 3, 4, 5]])
    col_index = np.array([[0, 1, 2, 3], [1, 2, 3, 4], [3, 4, 5, 6]])
    _read_only(row_index, col_index)  # as frame_layout hands them to the kernel (one specialisation)
    n_images, n_planes, row0, n_total = 2, 3, 4, 13
    pooled = rng.random((n_images * n_planes, 6, 7, 8)) ** 4
    pooled[1] *= 1e-5  # below the threshold: all-zero descriptors
    pooled[4] = 0.0  # no gradient at all

    def fast(pooled):
        out = np.full((n_images, n_total, 128 * n_planes), -1.0)
        energy = np.empty((n_images * n_planes, 6))
        kernel(pooled, row_index, col_index, 64.0, 0.01, 0.2, row0, out, energy)
        outside = np.ones(n_total, bool)
        outside[row0 : row0 + 6] = False
        assert np.all(out[:, outside] == -1.0), "kernel wrote outside its rows"
        return out[:, row0 : row0 + 6], energy

    def slow(pooled):
        out = np.zeros((n_images, 6, 128 * n_planes))
        energy = np.zeros((n_images * n_planes, 6))
        for q in range(n_images * n_planes):
            i, p = divmod(q, n_planes)
            block, energy[q] = twin_assemble(pooled[q], row_index, col_index, 64.0, 0.01, 0.2)
            out[i, :, 128 * p : 128 * (p + 1)] = block
        return out, energy

    assert_matches_twin(fast, slow, [(pooled,)])
    got, _ = fast(pooled)
    assert np.all(got[0, :, 128:256] == 0) and np.all(got[1, :, 128:256] == 0)


@pytest.mark.parametrize("build", ["serial", "parallel"])
def test_streamed_descriptors_equal_the_stages_on_real_images(build):
    images = [data.camera()[:70, :90] / 255.0, data.coins()[5:66, 7:100] / 255.0,
              data.brick()[:70, :90] / 255.0]
    for bin_size, step in ((4, 4), (4, 8), (6, 8), (3, 3)):
        sigma = default_smoothing(bin_size)
        same_shape = [im for im in images if im.shape == images[0].shape]
        out = np.empty((len(same_shape), 600, 128))
        with forced_builds(build):
            energy = streamed_descriptors(np.stack(same_shape), len(same_shape), bin_size, step, sigma, 0.005,
                                          out, row0=5)
        for i, im in enumerate(same_shape):
            fields = orientation_fields([im], sigma)
            want, want_energy, ys, xs = pooled_descriptors(fields, bin_size, step, 0.005)
            assert np.array_equal(out[i, 5 : 5 + ys.size * xs.size], want)
            assert np.array_equal(energy[i], want_energy[:, 0])
    with pytest.raises(ValueError, match="C-contiguous"):
        streamed_descriptors(np.stack(images[:1]), 1, 4, 4, 0.5, 0.005, np.empty((1, 3, 128)))


def test_extract_many_in_chunks_equals_extract_image_by_image():
    crops = [data.astronaut()[y : y + 48, x : x + 56] for y in (0, 100, 200) for x in (0, 150)]
    images = crops[:4] + [data.camera()[:60, :40]] + crops[4:] + [crops[0] / 255.0]
    for color, bins, smoothing in (("gray", (4,), None), ("opponent", (3, 4), None), ("gray", (3, 5), 0.9)):
        sift = DenseSIFT(step=5, bin_sizes=bins, color=color, smoothing=smoothing)
        one_by_one = [sift.extract(im) for im in images]
        for threads, build in ((1, "serial"), (2, "parallel")):
            with forced_builds(build):
                many = sift.extract_many(images, n_jobs=threads)
            for got, want in zip(many, one_by_one):
                assert got.descriptors.flags["C_CONTIGUOUS"]
                assert np.array_equal(got.descriptors, want.descriptors)
                assert np.array_equal(got.centers, want.centers)
                assert np.array_equal(got.channel, want.channel)
        many[0].centers[:] = -1.0  # results own their geometry: the cache is not touched
        assert np.array_equal(sift.extract(images[0]).centers, one_by_one[0].centers)


def test_frame_geometry_is_cached_and_read_only():
    bounds, centers, support, channel = frame_geometry(40, 52, (4, 6), 5)
    assert frame_geometry(40, 52, (4, 6), 5)[1] is centers
    assert not centers.flags.writeable and not bounds.flags.writeable
    feats = DenseSIFT(step=5, bin_sizes=(4, 6)).extract(np.random.default_rng(0).random((40, 52)))
    np.testing.assert_array_equal(feats.centers, centers)
    np.testing.assert_array_equal(feats.support, support)
    np.testing.assert_array_equal(np.diff(bounds), np.bincount(channel))
    assert feats.centers.flags.writeable


def test_value_range_is_checked_for_float_inputs_only_and_for_generators():
    sift = DenseSIFT(step=8)
    huge = np.full((32, 32), 1e101)
    with pytest.raises(ValueError, match="1e\\+100"):
        sift.extract_many(im for im in [np.zeros((32, 32)), huge])  # a generator is read once
    with pytest.warns(UserWarning, match="divide by 255"):
        sift.extract_many(iter([np.full((32, 32), 200.0)]))
    # uint8 / uint16 inputs are scaled into [0, 1]: same descriptors as the float image, no warning
    image = data.camera()[:40, :48]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_uint8 = sift.extract_many([image, (image.astype(np.uint16) * 257)])
    want = sift.extract(image / 255.0).descriptors
    np.testing.assert_allclose(from_uint8[0].descriptors, want, atol=1e-12)
    np.testing.assert_allclose(from_uint8[1].descriptors, want, atol=1e-12)


def test_a_lazy_sequence_is_read_once():
    """A sequence that loads its images on access (a dataset object) is read once by ``extract_many``,
    and gives the same descriptors as the list of its images."""

    class Lazy:
        def __init__(self, images):
            self.images, self.reads = images, 0

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            if i >= len(self.images):
                raise IndexError(i)
            self.reads += 1
            return self.images[i]

    images = [data.camera()[:40, :48], data.camera()[100:140, 60:108]]
    lazy = Lazy(images)
    got = DenseSIFT(step=8).extract_many(lazy)
    assert lazy.reads == len(images)
    for g, w in zip(got, DenseSIFT(step=8).extract_many(images), strict=True):
        assert np.array_equal(g.descriptors, w.descriptors)


def test_gradient_neighbours_is_the_np_gradient_stencil():
    # the one border rule of the stage kernel (gradient_rows) and of the fused one (on its ring of rows)
    rng = np.random.default_rng(7)
    for height in (2, 3, 5):
        image = rng.random((height, 6))
        reference = np.gradient(image, axis=0)
        for y in range(height):
            up, down, fy = K.gradient_neighbours(y, height)
            assert np.array_equal(fy * (image[down] - image[up]), reference[y]), (height, y)
            rows = K.gradient_rows(image, y)
            assert np.array_equal(rows[0], image[up]) and np.array_equal(rows[1], image[down])
    assert K.gradient_neighbours(0, 1) == (0, 0, 0.0)  # one row: no gradient along y
