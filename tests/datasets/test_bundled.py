import numpy as np
import pytest

from datasets.bundled import load_lfw_subset, load_photos, load_sklearn_digits, load_textures


def test_sklearn_digits():
    d = load_sklearn_digits()
    assert d.images.shape == (1797, 8, 8) and d.images.max() == 1.0 and d.images.min() == 0.0
    assert set(np.unique(d.labels)) == set(range(10))


def test_photos_and_textures():
    photos = load_photos(["astronaut", "camera"])
    assert photos["astronaut"].shape == (512, 512, 3) and photos["camera"].shape == (512, 512)
    gray = load_photos(["chelsea"], gray=True)["chelsea"]
    assert gray.shape == (300, 451) and 0 <= gray.min() and gray.max() <= 1
    tex = load_textures()
    assert sorted(tex) == ["brick", "grass", "gravel"]
    with pytest.raises(ValueError, match="no bundled image"):
        load_photos(["not_a_photo"])


def test_lfw_subset_faces_then_non_faces():
    d = load_lfw_subset()
    assert d.images.shape == (200, 25, 25)
    assert d.labels[:100].all() and not d.labels[100:].any()
    # faces are more alike than non-faces: the mean face explains more of each face's pixels
    faces, other = d.images[:100], d.images[100:]
    assert np.abs(faces - faces.mean(0)).mean() < np.abs(other - other.mean(0)).mean()
