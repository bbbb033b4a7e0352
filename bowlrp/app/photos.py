"""Photo scenes: real photographs with one pasted object each, and a mask of where it is.

Each image is a crop of one of scikit-image's bundled texture photos (grass, gravel, brick) with
one square patch pasted at a random place: a cat's eye (from the ``chelsea`` photo; label 1) or
the rim of a coffee cup (from the ``coffee`` photo; label 0). Both patches are real photo content of
the same size, so a classifier has to recognise the eye, not "something pasted"; and because the
masks say where each patch is, a heatmap can be checked: the "cat's eye" score should be red on the
eye and blue on the cup. The README's bag-of-words example and its figure use these scenes.
"""

from __future__ import annotations

import numpy as np

from bowlrp.app.scenes import Scenes

__all__ = ["photo_scenes"]

_PHOTOS = None


def _photos():
    """Grey backgrounds and the two patches' source crops, floats in [0, 1] (read once)."""
    global _PHOTOS
    if _PHOTOS is None:
        try:
            from skimage import data
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("photo_scenes needs scikit-image (pip install 'bowlrp[data]')") from exc

        def grey(a):
            return (a.mean(axis=2) if a.ndim == 3 else a.astype(np.float64)) / 255.0

        backgrounds = [grey(data.grass()), grey(data.gravel()), grey(data.brick())]
        eye = grey(data.chelsea())[60:170, 110:220]  # the cat's left eye, 110 x 110
        cup = grey(data.coffee())[100:300, 150:350]  # rim and coffee of the cup, 200 x 200
        _PHOTOS = backgrounds, {"cat's eye": eye, "coffee cup": cup}
    return _PHOTOS


def _shrink(image, side):
    """Area-average ``image`` down to side x side (Pillow's box filter)."""
    from PIL import Image

    small = Image.fromarray(image.astype(np.float32), mode="F").resize((side, side), Image.BOX)
    return np.asarray(small, dtype=np.float64)


def photo_scenes(n_images=120, size=96, patch=36, random_state=None) -> Scenes:
    """Photo crops with a pasted cat's eye (label 1) or coffee cup (label 0), alternating.

    Parameters
    ----------
    n_images : int
        Number of images; labels alternate 0, 1, 0, ... so every slice is balanced.
    size : int
        Side of the square images in pixels (at least ``patch + 1``, at most 512).
    patch : int
        Side of the pasted square (at least 8).
    random_state : int, numpy Generator or None
        Seed of the crops and the positions.

    Returns
    -------
    Scenes
        ``images`` (n, size, size) float64 in [0, 1], ``labels``, ``masks`` ``"cat's eye"`` and
        ``"coffee cup"`` (where the patch is), ``positive="cat's eye"``; ``class_names`` are
        ``("coffee cup", "cat's eye")``.

    Examples
    --------
    >>> from bowlrp.app.photos import photo_scenes
    >>> scenes = photo_scenes(4, size=64, patch=24, random_state=0)
    >>> scenes.images.shape, scenes.labels.tolist(), int(scenes.positive_masks[1].sum())
    ((4, 64, 64), [0, 1, 0, 1], 576)
    """
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    size, patch = int(size), int(patch)
    if patch < 8 or not patch < size <= 512:
        raise ValueError(f"need 8 <= patch < size <= 512, got patch={patch}, size={size}")
    backgrounds, sources = _photos()
    names = ("coffee cup", "cat's eye")
    patches = [_shrink(sources[name], patch) for name in names]
    rng = np.random.default_rng(random_state)
    labels = np.arange(n_images, dtype=np.int64) % 2
    images = np.empty((n_images, size, size))
    masks = {name: np.zeros((n_images, size, size), bool) for name in names}
    objects = []
    for i, label in enumerate(labels):
        background = backgrounds[rng.integers(len(backgrounds))]
        y, x = (int(rng.integers(0, side - size + 1)) for side in background.shape)
        images[i] = background[y:y + size, x:x + size]
        y, x = (int(v) for v in rng.integers(0, size - patch + 1, size=2))
        images[i, y:y + patch, x:x + patch] = patches[label]
        masks[names[label]][i, y:y + patch, x:x + patch] = True
        objects.append([{"kind": names[label], "top_left": (y, x), "side": patch}])
    return Scenes(images=images, labels=labels, masks=masks, objects=objects, class_names=names,
                  positive="cat's eye")
