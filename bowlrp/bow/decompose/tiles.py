"""Overlapping-tile explanations (the paper's Fig. 6): every tile explained as an image of its own."""

from __future__ import annotations

import numpy as np

from bowlrp.bow.decompose.explain import explain_classifier

__all__ = ["tile_boxes", "explain_tiles"]


def tile_boxes(image_shape, tile, stride=None) -> np.ndarray:
    """Top-left-anchored tiles of side ``tile`` every ``stride`` pixels, the last flush with the border.

    Returns an (n_tiles, 4) int64 array of half-open ``y0, x0, y1, x1``; together the tiles cover
    every pixel. A tile larger than the image is clipped to it.

    Examples
    --------
    >>> from bowlrp.bow.decompose import tile_boxes
    >>> tile_boxes((10, 6), 6, 4)
    array([[ 0,  0,  6,  6],
           [ 4,  0, 10,  6]])
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    th, tw = (tile, tile) if np.isscalar(tile) else tile
    th, tw = min(int(th), height), min(int(tw), width)
    if th < 1 or tw < 1:
        raise ValueError(f"tile must be positive, got {tile!r}")
    if stride is None:
        sh, sw = max(1, th // 2), max(1, tw // 2)
    else:
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        sh, sw = int(sh), int(sw)
        if sh < 1 or sw < 1:
            raise ValueError(f"stride must be positive, got {stride!r}")

    def starts(length, size, step):
        s = list(range(0, length - size + 1, step))
        if s[-1] != length - size:
            s.append(length - size)
        return s

    return np.array([[y, x, y + th, x + tw] for y in starts(height, th, sh) for x in starts(width, tw, sw)],
                    dtype=np.int64)


def explain_tiles(clf, image, tile, stride=None, target=None, **options):
    """Explain overlapping tiles of one image separately and average their maps per pixel (Fig. 6).

    Every tile is classified and explained as an image of its own, so each tile's map conserves its
    own score (up to its residual); the returned map is, at each pixel, the mean over the tiles that
    contain it. ``target=None`` explains the class predicted for the whole image in every tile.

    Parameters
    ----------
    clf : fitted BoWClassifier
    image : array (H, W) or (H, W, 3)
    tile : int or (int, int)
        Tile side(s) in pixels; must be large enough for the feature extractor.
    stride : int or (int, int), optional
        Default: half the tile (50 % overlap).
    target : class label, optional
    **options
        Passed to :func:`explain_classifier` (root search settings).

    Returns
    -------
    Heatmap
        ``score`` and ``residual`` are None (an average of tile maps conserves nothing as a whole);
        ``extras`` holds ``tile_boxes``, ``tile_scores``, ``tile_residuals`` and ``coverage`` (tiles
        per pixel).
    """
    from bowlrp.heatmap import Heatmap

    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    if target is None:
        target = clf.predict([img])[0]
    boxes = tile_boxes(img.shape[:2], tile, stride)
    crops = [img[y0:y1, x0:x1] for y0, x0, y1, x1 in boxes]
    maps = explain_classifier(clf, crops, target=target, **options)
    total = np.zeros(img.shape[:2])
    coverage = np.zeros(img.shape[:2])
    for (y0, x0, y1, x1), h in zip(boxes, maps):
        total[y0:y1, x0:x1] += h.relevance
        coverage[y0:y1, x0:x1] += 1.0
    # every pixel is covered by construction of tile_boxes
    return Heatmap(
        total / coverage,
        target=maps[0].target,
        method=f"{maps[0].method}/tiles",
        image=img,
        extras={
            "tile_boxes": boxes,
            "tile_scores": np.array([h.score for h in maps]),
            "tile_residuals": np.array([h.residual for h in maps]),
            "coverage": coverage,
        },
    )
