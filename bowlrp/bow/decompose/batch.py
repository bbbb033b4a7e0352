"""Steps 2 and 1 for a whole batch of explained images in a few numba calls (features -> pixels).

What :func:`~bowlrp.bow.decompose.explain.explain_classifier` runs after Step 3: the per-image work of
:func:`~bowlrp.bow.decompose.pooling.feature_relevance` and
:func:`~bowlrp.bow.decompose.pixels.pixel_relevance` (the same kernels, :mod:`._kernels`) for every
(image, class) pair at once, on the encodings' CSR arrays (no scipy objects), so it runs outside the
GIL and, when the batch is large enough (:func:`bowlrp.jit.use_parallel`), with images spread over
numba's threads. The numbers are those of the two public functions called image by image.
:func:`decompose_batch` is :func:`plan_batch` (checks and layout, Python), :func:`run_batch` (the
kernels) and :func:`finish_batch` (the per-item arrays), which a caller running batches on threads
calls apart.
"""

from __future__ import annotations

import numpy as np

from bowlrp.bow.decompose import _kernels as _k
from bowlrp.bow.decompose.pixels import pixel_relevance
from bowlrp.bow.decompose.pooling import channel_ends, feature_relevance, share_weights

__all__ = ["BatchPlan", "decompose_batch", "finish_batch", "plan_batch", "run_batch"]


def decompose_batch(features, encodings, item_image, R3, sums=False):
    """Feature and pixel relevance of every item (an image and one BoW relevance vector).

    Parameters
    ----------
    features : list of LocalFeatures
        One per image.
    encodings : list of Encoding
        One per image (its ``csr``, ``p`` and ``channel_slices``).
    item_image : array-like of int, shape (n_items,)
        The image of each item.
    R3 : ndarray of shape (n_items, V)
        The BoW relevance of each item (Step 3).
    sums : bool, default=False
        Also return the sums of every item's relevance at the three levels.

    Returns
    -------
    boxes : list of ndarray (M_i, 4), one per image
        The clipped support boxes (``LocalFeatures.boxes``).
    R2 : list of ndarray (M_i,), one per item
        Feature relevance (Step 2).
    R1 : list of ndarray (H_i, W_i), one per item
        Pixel relevance (Step 1), each map an array of its own.
    level_sums : ndarray of shape (n_items, 3), only with ``sums=True``
        ``R3[k].sum()``, ``R2[k].sum()`` and ``R1[k].sum()`` of each item, numpy's numbers (one
        numba call instead of three numpy calls per item).
    """
    R3 = np.ascontiguousarray(R3, dtype=np.float64)
    if R3.ndim != 2:
        raise ValueError(f"the BoW relevance must be 2-D (n_items, V), got shape {R3.shape}")
    plan = plan_batch(features, encodings, item_image, R3.shape[1], n_vectors=R3.shape[0])
    return finish_batch(plan, run_batch(plan, R3, sums))


class BatchPlan:
    """What the kernels of one batch decomposition need besides the BoW relevance: the batch's
    concatenated arrays, offsets and buffers (:func:`plan_batch`; Python under the GIL, once)."""

    __slots__ = ("features", "encodings", "item_image", "n_dims", "p", "csr", "channel", "centers", "support",
                 "shapes", "feat_off", "nnz_off", "item_feat_off", "counts", "ends")


def plan_batch(features, encodings, item_image, n_dims, n_vectors=None):
    """Validate a batch and lay it out for :func:`run_batch` (the part of :func:`decompose_batch`
    that holds the GIL: a caller running batches on threads plans them all first, on one thread).

    ``n_vectors`` (default: one per item) is the number of BoW relevance vectors to come, checked
    here so that a mismatch is named before any work.
    """
    item_image = np.asarray(item_image)
    if item_image.ndim != 1 or (item_image.size and item_image.dtype.kind not in "iu"):
        raise ValueError(f"item images must be a 1-D sequence of image indices, got {item_image.dtype} "
                         f"of shape {item_image.shape}")
    item_image = item_image.astype(np.int64, copy=False)
    n_img, n_items = len(features), item_image.size
    n_vectors = n_items if n_vectors is None else n_vectors
    if len(encodings) != n_img or n_vectors != n_items:
        raise ValueError(f"got {n_img} feature sets, {len(encodings)} encodings, {n_items} items and "
                         f"{n_vectors} BoW relevance vectors")
    csrs = [e.csr for e in encodings]
    # per image: features, CSR entries, height, width (one array: the layout kernel takes it whole)
    per_image = np.array([(len(f), c[1].size) + tuple(f.image_shape[:2]) for f, c in zip(features, csrs)],
                         np.int64).reshape(n_img, 4)
    channel = _cat([f.channel for f in features], np.int64)
    n_channels = max([len(e.channel_slices) for e in encodings], default=1)
    plan = BatchPlan()
    plan.feat_off, plan.nnz_off, plan.item_feat_off, plan.counts, problem = \
        _k.batch_layout(per_image, item_image, channel, n_channels)
    if problem == 1:
        raise ValueError(f"item images must lie in [0, {n_img})")
    if any(e.x.size != n_dims for e in encodings):
        raise ValueError(f"the BoW relevance has {n_dims} dimensions, an encoding has another number")
    if problem == 2:
        raise ValueError(f"feature channel values must lie in [0, {n_channels})")
    if any(e.p != encodings[0].p for e in encodings):
        raise ValueError("the encodings of a batch must share their pooling exponent p")
    slices = encodings[0].channel_slices if n_img else []
    if any(e.channel_slices != slices for e in encodings):
        raise ValueError("the encodings of a batch must share their channel layout")
    plan.features, plan.encodings, plan.item_image, plan.n_dims = features, encodings, item_image, n_dims
    plan.p = encodings[0].p if n_img else 1.0
    plan.ends = channel_ends(slices, n_dims) if n_items and slices else None
    plan.shapes = np.ascontiguousarray(per_image[:, 2:])
    plan.csr = (_cat([c[0] for c in csrs], np.int64), _cat([c[1] for c in csrs], np.int64),
                _cat([c[2] for c in csrs], np.float64))
    plan.channel = channel
    plan.centers = np.concatenate([f.centers for f in features]) if n_img else np.zeros((0, 2))
    plan.support = _cat([f.support for f in features], np.int64)
    return plan


def run_batch(plan, R3, sums=False):
    """The kernels of a planned batch (:func:`plan_batch`) on the BoW relevance ``R3`` (n_items, V):
    a few nogil numba calls with little Python between them, so batches run on threads side by side.

    Returns ``(R3, boxes, r2, maps, bad, level)``: the batch's flat buffers, each item's pixel map (an
    array of its own), the images the kernels skipped (:func:`finish_batch` takes the general path for
    them) and the level sums (or None).
    """
    R3 = np.ascontiguousarray(R3, dtype=np.float64)
    if R3.shape != (plan.item_image.size, plan.n_dims):
        raise ValueError(f"expected the BoW relevance of {plan.item_image.size} items in {plan.n_dims} "
                         f"dimensions, got shape {R3.shape}")
    if not np.isfinite(R3).all():
        raise ValueError("BoW relevance contains NaN or inf")
    indptr, indices, data = plan.csr
    n_img, n_items = plan.shapes.shape[0], R3.shape[0]
    boxes = np.empty((int(plan.feat_off[-1]), 4), np.int64)
    _k.support_boxes(plan.feat_off, plan.centers, plan.support, plan.shapes, boxes)
    colmax, ratio, bad = np.zeros((n_img, plan.n_dims)), np.zeros(data.size), np.zeros(n_img, bool)
    _k.prepare(indptr, indices, data, plan.feat_off, plan.nnz_off, colmax, ratio, bad)
    weights = share_weights(ratio, plan.p)
    # the uncovered dimensions' shares of every item (its image's covered dimensions and features
    # per channel)
    extra = np.zeros((n_items, plan.counts.shape[1]))
    if plan.ends is not None:
        _k.uncovered_sums(R3, colmax > 0, plan.item_image, *plan.ends, plan.counts, extra)
    # every value is written by the kernel, except those of a skipped (``bad``) image's items, which
    # the general path replaces (maps and sums): no zeroing pass over the batch's feature relevance
    r2 = np.empty(plan.item_feat_off[-1])
    level = np.empty((n_items if sums else 0, 3))
    maps = _k.relevance(indptr, indices, weights, plan.feat_off, plan.nnz_off, plan.channel, plan.item_image,
                        bad, colmax, R3, extra, boxes, plan.shapes, plan.item_feat_off, r2, True, level)
    return R3, boxes, r2, maps, bad, level if sums else None


def finish_batch(plan, ran):
    """:func:`decompose_batch`'s lists from a planned batch's kernel results (:func:`run_batch`)."""
    R3, boxes, r2, R1, bad, level = ran
    item_image = plan.item_image
    # offsets as Python ints: slicing with numpy scalars costs more, under the GIL
    fo, io = plan.feat_off.tolist(), plan.item_feat_off.tolist()
    box_list = [boxes[fo[i]:fo[i + 1]] for i in range(len(fo) - 1)]
    R2 = [r2[io[k]:io[k + 1]] for k in range(item_image.size)]
    if bad.any():
        for k in np.flatnonzero(bad[item_image]):  # a mapping that is not canonical: the general path
            i = item_image[k]
            e = plan.encodings[i]
            R2[k] = feature_relevance(e.mapping, R3[k], e.p, e.channel_slices, plan.features[i].channel)
            R1[k] = pixel_relevance(R2[k], box_list[i], plan.shapes[i])
            if level is not None:
                level[k, 1:] = R2[k].sum(), R1[k].sum()
    return (box_list, R2, R1) if level is None else (box_list, R2, R1, level)


def _cat(arrays, dtype):
    """The arrays of the images end to end, as ``dtype`` (an empty array for no image)."""
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)
