"""Step 1 of the explanation, local features -> pixels (Bach et al. 2015, Eqs 33-34).

Backward of the feature extraction: each feature's relevance is spread evenly over the pixels of its
support square clipped to the image (EXTENSION: |area(l)| counts the clipped pixels, so border
features conserve their relevance too).
"""

from __future__ import annotations

import numpy as np

from bowlrp.bow.decompose import _kernels as _k

__all__ = ["pixel_relevance"]


def _check_boxes(boxes, n_features: int, image_shape) -> tuple[np.ndarray, tuple[int, int]]:
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be an (M, 4) array of y0, x0, y1, x1, got shape {boxes.shape}")
    if boxes.shape[0] != n_features:
        raise ValueError(f"got {boxes.shape[0]} boxes for {n_features} feature relevances")
    if boxes.dtype.kind not in "iu":
        raise TypeError(f"boxes must be integer pixel coordinates, got dtype {boxes.dtype}")
    if len(image_shape) < 2:
        raise ValueError(f"image_shape must be (H, W), got {image_shape}")
    height, width = int(image_shape[0]), int(image_shape[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"image_shape must be positive, got {(height, width)}")
    # Clip to the image (EXTENSION: |area(l)| counts the clipped pixels), so border features conserve.
    clipped = np.clip(boxes.astype(np.int64), 0, np.array([height, width, height, width], dtype=np.int64))
    return clipped, (height, width)


def pixel_relevance(feature_rel, boxes, image_shape) -> np.ndarray:
    """Step 1: spread each feature's relevance evenly over its support box (Eqs 33-34).

    R1_q = sum over features l whose box contains pixel q of R2_l / |box_l|. Overlapping boxes add.
    Runs in O(M + H W): every box adds its density at two corners and subtracts it at the two
    others of a difference image, whose 2-D cumulative sum is the map.

    Parameters
    ----------
    feature_rel : array-like of shape (M,)
        Relevance of each local feature (Step 2).
    boxes : array-like of shape (M, 4), int
        Half-open boxes ``y0, x0, y1, x1`` (``LocalFeatures.boxes()``); clipped to the image here.
    image_shape : tuple (H, W) or (H, W, C)

    Returns
    -------
    ndarray of shape (H, W), float64
        Pixel relevance; sums to ``feature_rel.sum()`` minus the relevance of features whose clipped
        box is empty (such features lie entirely outside the image and cannot be drawn).

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.decompose import pixel_relevance
    >>> R1 = pixel_relevance(np.array([4.0]), np.array([[0, 0, 2, 2]]), (3, 3))
    >>> R1
    array([[1., 1., 0.],
           [1., 1., 0.],
           [0., 0., 0.]])
    """
    rel = np.asarray(feature_rel, dtype=np.float64).ravel()
    if not np.all(np.isfinite(rel)):
        raise ValueError("feature relevance contains NaN or inf")
    boxes, (height, width) = _check_boxes(boxes, rel.size, image_shape)
    # densities, the difference image and its 2-D cumulative sum, in one numba kernel (O(M + HW))
    out = np.zeros(height * width)
    _k.pixel_map(rel, np.ascontiguousarray(boxes), height, width, out)
    return out.reshape(height, width)
