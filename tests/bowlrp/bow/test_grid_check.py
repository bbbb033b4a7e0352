"""The small-image warning: BoW maps of images too small for the feature grid are blobs, and fit,
explain and the command line say so, with a step/bin_sizes that would help (and that does help)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from skimage import data

from bowlrp import BoWClassifier
from bowlrp.bow.features import DenseSIFT
from bowlrp.bow.grid_check import CoarseGridWarning, grid_problem, warn_if_coarse

FACES = data.lfw_subset()  # 200 real 25 x 25 photos: 100 faces, then 100 non-faces


def _suggestion(message):
    step, bins = re.search(r"Try step=(\d+), bin_sizes=\((\d+),\)", message).groups()
    return int(step), (int(bins),)


@pytest.mark.parametrize("shape, step, bins", [((25, 25), 4, (4,)), ((25, 25), 3, (3,)), ((40, 40), 4, (4,)),
                                               ((30, 200), 2, (4,)), ((64, 64), 4, (4, 8))])
def test_counts_are_the_extractor_s_and_the_advice_helps(shape, step, bins):
    image = np.random.default_rng(0).random(shape)
    n_features = len(DenseSIFT(step=step, bin_sizes=bins).fit().extract(image).support)
    message = grid_problem(shape, step, bins)
    if shape == (64, 64):  # the demo's scenes: 169 + 81 features, supports spread out
        assert message is None and n_features == 250
        return
    assert f"gives {n_features} local features with step={step}, bin_sizes={bins}" in message
    assert ("fewer than 50" in message) == (n_features < 50)
    better_step, better_bins = _suggestion(message)
    assert grid_problem(shape, better_step, better_bins) is None  # the advice is right
    side = int(re.search(r"images of at least (\d+)x\1 pixels", message).group(1))
    assert grid_problem((side, side), step, bins) is None and grid_problem((side - 1, side - 1), step, bins)


def test_overlapping_supports_are_named():
    # 9 supports of 16 x 16 on a 25 x 25 face all cover its centre: every map is one blob
    assert "all supports of 16x16 pixels cover one central region" in grid_problem((25, 25), 4, (4,))
    # a wide strip: plenty of features, but every support covers the same rows
    wide = grid_problem((30, 200), 2, (4,))
    assert "fewer than" not in wide and "cover the same central rows" in wide


def test_fit_and_explain_warn_on_small_faces_only():
    y = np.array([1] * 100 + [0] * 100)
    too_small = r"100 of 100 images are too small .* 25x25 image gives 9 "
    with pytest.warns(CoarseGridWarning, match=too_small) as record:
        clf = BoWClassifier(vocabulary_size=16, random_state=0).fit(list(FACES[::2]), y[::2])
    assert record[0].filename == __file__
    with pytest.warns(CoarseGridWarning, match=r"2 of 2 images") as record:
        clf.explain(list(FACES[1:3]))
    assert record[0].filename == __file__  # the user's line, not the classifier's
    with pytest.warns(CoarseGridWarning, match=r"^the image is too small for the feature grid: a 25x25"):
        clf.explain([FACES[1]])
    step, bins = _suggestion(grid_problem((25, 25), 4, (4,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoarseGridWarning)
        better = BoWClassifier(step=step, bin_sizes=bins, vocabulary_size=16, random_state=0)
        better.fit(list(FACES[::2]), y[::2]).explain(list(FACES[1:3]))


def test_mixed_sizes_report_the_smallest_and_large_images_are_quiet():
    photo = data.camera()  # 512 x 512
    images = [photo, photo[:30, :30], photo[:128, :128], photo[:20, :20]]
    with pytest.warns(CoarseGridWarning) as record:
        text = warn_if_coarse(images, 4, (4,))
    assert len(record) == 1 and str(record[0].message) == text and record[0].filename == __file__
    assert text.startswith("2 of 4 images") and "a 20x20 image" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_coarse([photo, photo[:128, :96]], 4, (4,)) is None
