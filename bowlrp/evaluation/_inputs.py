"""Input checks shared by the evaluation metrics: heatmaps, images, ground-truth masks and boxes."""

from __future__ import annotations

import numpy as np

__all__ = ["boxes_to_masks"]


def _as_relevance(h, name="heatmap"):
    """A heatmap (array, or anything with ``.relevance`` such as a Heatmap) -> (H, W) float64."""
    r = getattr(h, "relevance", h)
    try:
        r = np.asarray(r, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a numeric (H, W) array or a Heatmap, got {type(h).__name__}"
        ) from None
    if r.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (H, W) (sum relevance over channels first), got shape {r.shape}"
        )
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{name} contains NaN or inf")
    return r


def _as_heatmaps(heatmaps, n=None):
    if heatmaps is None:
        raise ValueError("heatmaps are required for this metric / order")
    if isinstance(heatmaps, np.ndarray):
        if heatmaps.ndim == 2:
            heatmaps = heatmaps[None]
        if heatmaps.ndim != 3:
            raise ValueError(
                f"heatmaps must be (n, H, W) or a list of (H, W) maps, got shape {heatmaps.shape}"
            )
    elif not isinstance(heatmaps, (list, tuple)):
        heatmaps = [heatmaps]  # a single Heatmap
    maps = [_as_relevance(h, f"heatmap {i}") for i, h in enumerate(heatmaps)]
    if n is not None and len(maps) != n:
        raise ValueError(f"got {len(maps)} heatmaps for {n} images")
    if not maps:
        raise ValueError("no heatmaps given")
    return maps


def _as_images(images):
    """-> (list of float64 arrays, whether the model should receive stacked arrays)."""
    if isinstance(images, np.ndarray):
        if images.ndim < 3:
            raise ValueError(f"images must be (n, H, W) or (n, H, W, C), got shape {images.shape}")
        imgs = [np.asarray(im, np.float64) for im in images]
        stack = True
    elif isinstance(images, (list, tuple)):
        imgs = [np.asarray(im, np.float64) for im in images]
        stack = len({im.shape for im in imgs}) == 1
    else:
        raise TypeError(f"images must be an array or a list of arrays, got {type(images).__name__}")
    if not imgs:
        raise ValueError("no images given")
    for i, im in enumerate(imgs):
        if im.ndim not in (2, 3):
            raise ValueError(f"image {i} must be (H, W) or (H, W, C), got shape {im.shape}")
        if not np.all(np.isfinite(im)):
            raise ValueError(f"image {i} contains NaN or inf")
    return imgs, stack


def _as_masks(masks, boxes, shapes):
    """Ground truth as a list of (H, W) bool masks, from masks or from (k, 4) boxes (y0, x0, y1, x1)."""
    if (masks is None) == (boxes is None):
        raise ValueError("give exactly one of masks= or boxes=")
    if boxes is not None:
        if len(boxes) != len(shapes):
            raise ValueError(f"got {len(boxes)} box sets for {len(shapes)} heatmaps")
        return boxes_to_masks(boxes, shapes)
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        masks = masks[None]
    if len(masks) != len(shapes):
        raise ValueError(f"got {len(masks)} masks for {len(shapes)} heatmaps")
    out = []
    for i, (m, shape) in enumerate(zip(masks, shapes)):
        m = np.asarray(m)
        if m.shape != shape:
            raise ValueError(f"mask {i} has shape {m.shape} but heatmap {i} has shape {shape}")
        out.append(m.astype(bool))
    return out


def _nonempty(masks, what):
    for i, m in enumerate(masks):
        if not m.any():
            raise ValueError(f"mask {i} is empty: {what} is undefined for an image without ground truth")


def _maps_and_truth(heatmaps, masks, boxes, what):
    """Relevance arrays and their ground-truth masks (from masks or boxes), none of them empty."""
    maps = _as_heatmaps(heatmaps)
    gts = _as_masks(masks, boxes, [m.shape for m in maps])
    _nonempty(gts, what)
    return maps, gts


def boxes_to_masks(boxes, shapes):
    """Boxes -> masks.

    Parameters
    ----------
    boxes : sequence of array-like, each (k, 4)
        Per image, half-open 0-based boxes ``(y0, x0, y1, x1)``; they are clipped to the image.
    shapes : sequence of (H, W)

    Returns
    -------
    list of ndarray of bool, each (H, W)

    Examples
    --------
    >>> from bowlrp.evaluation import boxes_to_masks
    >>> int(boxes_to_masks([[[1, 1, 3, 4]]], [(5, 5)])[0].sum())
    6
    """
    out = []
    for i, (b, (h, w)) in enumerate(zip(boxes, shapes)):
        b = np.asarray(b, dtype=np.int64)
        if b.size and (b.ndim != 2 or b.shape[1] != 4):
            raise ValueError(f"boxes {i} must be (k, 4) rows of (y0, x0, y1, x1), got shape {b.shape}")
        m = np.zeros((h, w), bool)
        for y0, x0, y1, x1 in b.reshape(-1, 4):
            m[max(y0, 0) : max(min(y1, h), 0), max(x0, 0) : max(min(x1, w), 0)] = True
        out.append(m)
    return out
