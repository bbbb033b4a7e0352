"""Localization of heatmaps against ground-truth masks or boxes (SPEC section 4).

Relevance mass accuracy (share of the positive relevance inside the mask), relevance rank accuracy
(share of the K most relevant pixels inside the mask, K = mask size) and the pointing game (is the most
relevant pixel inside the mask). Ties are scored by their expectation under random tie-breaking, so a
constant heatmap scores chance level instead of whatever the raster order favours.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation

from bowlrp.evaluation._inputs import _as_heatmaps, _as_masks, _maps_and_truth, boxes_to_masks

__all__ = ["relevance_mass_accuracy", "relevance_rank_accuracy", "pointing_game", "mask_fraction",
           "localization_scores", "boxes_to_masks"]


def relevance_mass_accuracy(heatmaps, masks=None, boxes=None) -> np.ndarray:
    """Share of each heatmap's positive relevance that falls inside the ground truth.

    ``sum(R+ inside) / sum(R+)``; a heatmap with no positive relevance scores 0 (it points nowhere).

    Parameters
    ----------
    heatmaps : (n, H, W) array or list of (H, W) arrays / Heatmaps
    masks : (n, H, W) bool array or list, optional
    boxes : list of (k, 4) arrays (y0, x0, y1, x1), optional
        Give exactly one of ``masks`` and ``boxes``.

    Returns
    -------
    ndarray, shape (n,)
        In [0, 1]. Chance level is :func:`mask_fraction`.

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.evaluation import relevance_mass_accuracy
    >>> R = np.array([[3.0, 1.0], [-5.0, 0.0]])
    >>> relevance_mass_accuracy(R, masks=np.array([[True, False], [True, False]])).tolist()
    [0.75]
    """
    maps, gts = _maps_and_truth(heatmaps, masks, boxes, "relevance mass accuracy")
    out = np.empty(len(maps))
    for i, (r, m) in enumerate(zip(maps, gts)):
        pos = np.maximum(r, 0.0)
        total = pos.sum()
        out[i] = pos[m].sum() / total if total > 0 else 0.0
    return out


def relevance_rank_accuracy(heatmaps, masks=None, boxes=None) -> np.ndarray:
    """Share of the K most relevant pixels that lie inside the ground truth, K = mask size.

    Pixels tied at the K-th value count by their expectation under random tie-breaking.

    Returns
    -------
    ndarray, shape (n,)
        In [0, 1]; chance level is :func:`mask_fraction`.

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.evaluation import relevance_rank_accuracy
    >>> R = np.array([[3.0, 1.0], [2.0, 0.0]])
    >>> relevance_rank_accuracy(R, masks=np.array([[True, True], [False, False]])).tolist()
    [0.5]
    """
    maps, gts = _maps_and_truth(heatmaps, masks, boxes, "relevance rank accuracy")
    out = np.empty(len(maps))
    for i, (r, m) in enumerate(zip(maps, gts)):
        k = int(m.sum())
        t = np.partition(r.ravel(), r.size - k)[r.size - k]  # the K-th largest value
        above, tied = r > t, r == t
        need = k - int(above.sum())
        hits = (above & m).sum() + need * (tied & m).sum() / tied.sum()
        out[i] = hits / k
    return out


def pointing_game(heatmaps, masks=None, boxes=None, tolerance=0) -> np.ndarray:
    """Whether the most relevant pixel lies inside the ground truth (grown by ``tolerance`` pixels).

    Zhang et al. (ECCV 2016) use a tolerance of 15 pixels. When several pixels share the maximum, the
    score is the share of them inside (the expected hit under random tie-breaking).

    Returns
    -------
    ndarray, shape (n,)
        1.0 hit, 0.0 miss (fractions only for ties).

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.evaluation import pointing_game
    >>> R = np.zeros((5, 5)); R[0, 0] = 1.0
    >>> m = np.zeros((5, 5), bool); m[2, 2] = True
    >>> pointing_game(R, masks=m).tolist(), pointing_game(R, masks=m, tolerance=3).tolist()
    ([0.0], [1.0])
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative integer (pixels), got {tolerance!r}")
    maps, gts = _maps_and_truth(heatmaps, masks, boxes, "the pointing game")
    if tolerance:
        yy, xx = np.mgrid[-tolerance : tolerance + 1, -tolerance : tolerance + 1]
        disk = yy**2 + xx**2 <= tolerance**2
        gts = [binary_dilation(m, structure=disk) for m in gts]
    out = np.empty(len(maps))
    for i, (r, m) in enumerate(zip(maps, gts)):
        top = r == r.max()
        out[i] = (top & m).sum() / top.sum()
    return out


def mask_fraction(masks=None, boxes=None, shapes=None) -> np.ndarray:
    """Area fraction of each ground-truth mask: the chance level of mass and rank accuracy.

    Parameters
    ----------
    masks : (n, H, W) bool array or list, optional
    boxes : list of (k, 4) arrays, optional (then ``shapes`` is required)
    shapes : list of (H, W), optional

    Returns
    -------
    ndarray, shape (n,)
    """
    if boxes is not None:
        if shapes is None:
            raise ValueError("mask_fraction with boxes= needs shapes=")
        gts = boxes_to_masks(boxes, shapes)
    else:
        if masks is None:
            raise ValueError("give masks= or boxes=")
        if isinstance(masks, np.ndarray) and masks.ndim == 2:
            masks = masks[None]
        gts = [np.asarray(m, bool) for m in masks]  # a list may hold masks of different sizes
    return np.array([m.mean() for m in gts])


def localization_scores(heatmaps, masks=None, boxes=None, tolerance=0) -> dict:
    """Mean relevance mass accuracy, rank accuracy and pointing game, with the chance level.

    Returns
    -------
    dict
        ``mass_accuracy``, ``rank_accuracy``, ``pointing_game``, ``chance`` (mean mask fraction),
        ``n_images``; plain floats, JSON-ready.
    """
    maps = _as_heatmaps(heatmaps)
    gts = _as_masks(masks, boxes, [m.shape for m in maps])
    return {
        "mass_accuracy": float(relevance_mass_accuracy(maps, masks=gts).mean()),
        "rank_accuracy": float(relevance_rank_accuracy(maps, masks=gts).mean()),
        "pointing_game": float(pointing_game(maps, masks=gts, tolerance=tolerance).mean()),
        "chance": float(mask_fraction(masks=gts).mean()),
        "n_images": len(maps),
    }
