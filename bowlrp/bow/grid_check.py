"""Is the dense feature grid fine enough for a heatmap to show anything? One check, one warning.

A BoW heatmap is a sum of square descriptor supports weighted by their relevance (SPEC §2), so it
cannot be sharper than the grid of supports. On a 25 x 25 image with ``step=4, bin_sizes=(4,)``
there are 9 supports of 16 x 16 pixels that all cover the same central 8 x 8 pixels: every map is
the same centred blob, whatever the classifier learned. :func:`warn_if_coarse` says so (and what
would help) when an image gives

* fewer than :data:`MIN_DESCRIPTORS` local features over all bin sizes, or
* a channel whose supports all share one region (the last support starts before the first one
  ends, along a row or a column), so that the map of that channel is one blob.

``BoWClassifier.fit`` and ``explain`` call it; the suggestion is the largest bin size and step
(those change the classifier least and keep it fast) that pass both tests on that image size.
"""

from __future__ import annotations

import warnings

import numpy as np

from bowlrp.bow.features import grid_starts
from bowlrp.validation import user_stacklevel

__all__ = ["CoarseGridWarning", "MIN_DESCRIPTORS", "grid_problem", "warn_if_coarse"]

MIN_DESCRIPTORS = 50


class CoarseGridWarning(UserWarning):
    """The feature grid is too coarse for the image size: the heatmap cannot localise anything."""


def _bins(bin_sizes) -> tuple[int, ...]:
    return (int(bin_sizes),) if np.isscalar(bin_sizes) else tuple(int(b) for b in bin_sizes)


def _layout(length: int, support: int, step: int) -> tuple[int, bool]:
    """Supports along one axis, and whether they all overlap (one shared region)."""
    starts = grid_starts(length, support, step)
    return len(starts), len(starts) > 0 and starts[-1] < starts[0] + support


def _problem(shape, step, bins) -> tuple[int, str | None]:
    """(number of features, what the supports of a channel all share, or None)."""
    height, width = shape
    total, shared = 0, None
    for b in bins:
        ny, overlap_y = _layout(height, 4 * b, step)
        nx, overlap_x = _layout(width, 4 * b, step)
        total += ny * nx
        if ny * nx and (overlap_y or overlap_x) and shared is None:
            where = ("one central region" if overlap_y and overlap_x
                     else "the same central rows" if overlap_y else "the same central columns")
            shared = f"all supports of {4 * b}x{4 * b} pixels cover {where}"
    return total, shared


def _fine_enough(shape, step, bins, minimum) -> bool:
    total, shared = _problem(shape, step, bins)
    return total >= minimum and shared is None


def grid_problem(shape, step, bin_sizes, min_descriptors: int = MIN_DESCRIPTORS) -> str | None:
    """What is wrong with the grid on an image of ``shape`` (H, W), with advice; None when fine.

    Examples
    --------
    >>> print(grid_problem((25, 25), 4, (4,)))  # doctest: +ELLIPSIS
    a 25x25 image gives 9 local features with step=4, bin_sizes=(4,) (fewer than 50; ... Try step=1, ...
    >>> grid_problem((128, 128), 4, (4,)) is None
    True
    """
    shape = tuple(int(s) for s in shape[:2])
    step, bins = int(step), _bins(bin_sizes)
    total, shared = _problem(shape, step, bins)
    if total >= min_descriptors and shared is None:
        return None
    why = [f"fewer than {min_descriptors}"] if total < min_descriptors else []
    if shared is not None:
        why.append(shared)
    advice = []
    # the largest bin size, then the largest step, that gives a fine enough grid on this size
    for b in range(min(bins), 0, -1):
        good = [s for s in range(step, 0, -1) if _fine_enough(shape, s, (b,), min_descriptors)]
        if good:
            advice.append(f"step={good[0]}, bin_sizes=({b},)")
            break
    # the smallest square that passes (both tests only get better as a side grows)
    side = next((n for n in range(4 * min(bins), 4 * max(bins) + 64 * step + 1)
                 if _fine_enough((n, n), step, bins, min_descriptors)), None)
    if side is not None:
        advice.append(f"images of at least {side}x{side} pixels")
    return (f"a {shape[0]}x{shape[1]} image gives {total} local features with step={step}, "
            f"bin_sizes={bins} ({'; '.join(why)}): its heatmap cannot show where the evidence is. "
            + ("Try " + ", or ".join(advice) + "." if advice else "It is too small for dense SIFT."))


def warn_if_coarse(images, step, bin_sizes, min_descriptors: int = MIN_DESCRIPTORS,
                   stacklevel: int | None = None) -> str | None:
    """Issue one :class:`CoarseGridWarning` for the images whose grid is too coarse.

    Parameters
    ----------
    images : sequence of arrays (H, W[, C])
    step, bin_sizes
        The dense feature grid (as given to ``BoWClassifier``).
    stacklevel : int, optional
        ``warnings.warn``'s; by default the first caller outside bowlrp (the user's line, whichever
        method of the classifier checked).

    Returns
    -------
    str or None : the warning's text (None: no warning).
    """
    shapes = [tuple(np.shape(image)[:2]) for image in images]
    problems = {}
    for shape in set(shapes):
        if len(shape) == 2 and min(shape) > 0:
            message = grid_problem(shape, step, bin_sizes, min_descriptors)
            if message is not None:
                problems[shape] = message
    if not problems:
        return None
    affected = sum(shape in problems for shape in shapes)
    smallest = min(problems, key=lambda s: (s[0] * s[1], s))
    which = "the image is" if len(shapes) == 1 else f"{affected} of {len(shapes)} images are"
    text = f"{which} too small for the feature grid: {problems[smallest]}"
    warnings.warn(text, CoarseGridWarning, stacklevel=user_stacklevel() if stacklevel is None else stacklevel)
    return text
