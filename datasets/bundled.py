"""Real images that ship with installed packages, so tests and experiments need no download:
scikit-learn's 8x8 digits, scikit-image's photos, textures and ``lfw_subset`` faces."""

from __future__ import annotations

import numpy as np

from datasets.base import LabelledImages

__all__ = ["load_sklearn_digits", "load_photos", "load_textures", "load_lfw_subset", "PHOTOS", "TEXTURES"]

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon")
TEXTURES = ("brick", "grass", "gravel")


def _skimage_data():
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("these images come with scikit-image: pip install 'bowlrp[data]'") from exc
    return data


def _to_float(img):
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    return img.astype(np.float64)


def load_sklearn_digits() -> LabelledImages:
    """scikit-learn's 1,797 handwritten digits as (n, 8, 8) float64 images in [0, 1].

    Examples
    --------
    >>> from datasets.bundled import load_sklearn_digits
    >>> load_sklearn_digits().images.shape
    (1797, 8, 8)
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    return LabelledImages(
        d.images / 16.0,
        d.target.astype(np.int64),
        tuple(str(c) for c in range(10)),
        "sklearn.datasets.load_digits",
    )


def load_photos(names=None, gray=False) -> dict:
    """scikit-image's bundled photos, name -> float64 image in [0, 1].

    Parameters
    ----------
    names : sequence of str or None
        Names of ``skimage.data`` functions; None gives all of :data:`PHOTOS`.
    gray : bool
        Convert RGB photos to gray with the ITU-R 601 luma weights (0.299, 0.587, 0.114).

    Examples
    --------
    >>> from datasets.bundled import load_photos
    >>> load_photos(["chelsea"])["chelsea"].shape
    (300, 451, 3)
    """
    data = _skimage_data()
    names = PHOTOS if names is None else tuple(names)
    out = {}
    for name in names:
        loader = getattr(data, name, None)
        if loader is None or not callable(loader):
            raise ValueError(f"scikit-image has no bundled image called {name!r}")
        img = _to_float(loader())
        if gray and img.ndim == 3:
            img = img[..., :3] @ np.array([0.299, 0.587, 0.114])
        out[name] = img
    return out


def load_textures() -> dict:
    """scikit-image's gray texture photos (brick, grass, gravel), name -> (512, 512) float64 in [0, 1]."""
    return load_photos(TEXTURES)


def load_lfw_subset() -> LabelledImages:
    """scikit-image's ``lfw_subset``: 100 faces (label 1) then 100 non-faces (label 0), 25x25 float64.

    Examples
    --------
    >>> from datasets.bundled import load_lfw_subset
    >>> faces = load_lfw_subset()
    >>> faces.images.shape, int(faces.labels.sum())
    ((200, 25, 25), 100)
    """
    data = _skimage_data()
    images = np.asarray(data.lfw_subset(), np.float64)
    labels = np.r_[np.ones(100, np.int64), np.zeros(images.shape[0] - 100, np.int64)]
    return LabelledImages(images, labels, ("non-face", "face"), "skimage.data.lfw_subset")
