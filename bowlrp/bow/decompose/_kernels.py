"""Numba kernels of the explanation's Steps 2 and 1 for a batch: one call per batch, images in ``prange``.

Private: validated, C-contiguous arrays in, preallocated outputs written. The public wrappers are
:func:`~bowlrp.bow.decompose.pooling.feature_relevance` (a batch of one) and
:func:`~bowlrp.bow.decompose.batch.decompose_batch` (what the orchestrator runs), so the per-image
work runs outside the GIL, on numba's threads when :func:`bowlrp.jit.use_parallel` says it pays.

The batch layout is ragged, concatenated: image i owns features ``feat_off[i]:feat_off[i+1]`` and CSR
entries ``nnz_off[i]:nnz_off[i+1]``; its ``indptr`` (relative to its own first entry) is stored at
``indptr[feat_off[i] + i : feat_off[i+1] + i + 1]``. An *item* is one (image, explained class) pair:
``item_image[k]`` and row k of ``r3``; its feature relevance goes to ``r2[item_feat_off[k]:...]`` and
its pixel map (H * W, flat) to ``r1[item_pix_off[k]:...]``.

Every number is computed in the order of the numpy code these kernels replaced, so results are
bit-identical to it (and, ``prange`` running over independent images only, to the serial build):

* column maxima and shares ``ratio = m / colmax`` entry by entry (``np.maximum.at``, a division);
* ``col_d`` and ``R2_l`` summed in CSR storage order starting from 0.0 (what ``np.bincount`` does);
* the powers ``ratio**p`` are left to numpy between the two kernels (its ``power``, ``square`` and
  ``sqrt`` loops), so no libm ``pow`` can round differently;
* boxes as ``LocalFeatures.boxes`` computes them (``rint`` of the corner, then clipped), the pixel
  map as four corner images (one per corner kind, summed in feature order), combined and summed
  down the columns, then along the rows (the old ``np.bincount`` / ``np.cumsum`` twin's order).
"""

from __future__ import annotations

import numpy as np

from bowlrp.bow._pairwise import pairwise_sum
from bowlrp.jit import jit_both, jit_serial, prange


def _boxes_work(feat_off, centers, support, shapes, boxes):
    return 16 * support.size


@jit_both(work=_boxes_work)
def support_boxes(feat_off, centers, support, shapes, boxes):
    """Per image i (shape ``shapes[i]``): the support squares (y0, x0, y1, x1) of its features,
    half-open and clipped to the image, exactly as ``LocalFeatures.boxes`` computes them."""
    for i in prange(feat_off.shape[0] - 1):
        height, width = shapes[i, 0], shapes[i, 1]
        for m in range(feat_off[i], feat_off[i + 1]):
            half = (np.float64(support[m]) - 1.0) / 2.0
            y0 = np.int64(np.rint(centers[m, 0] - half))
            x0 = np.int64(np.rint(centers[m, 1] - half))
            boxes[m, 0] = min(max(y0, 0), height)
            boxes[m, 1] = min(max(x0, 0), width)
            boxes[m, 2] = min(max(y0 + support[m], 0), height)
            boxes[m, 3] = min(max(x0 + support[m], 0), width)


def _prepare_work(indptr, indices, data, feat_off, nnz_off, colmax, ratio, bad):
    return 4 * (data.size + colmax.size)


@jit_both(work=_prepare_work, error_model="numpy")
def prepare(indptr, indices, data, feat_off, nnz_off, colmax, ratio, bad):
    """Per image i: column maxima ``colmax[i]`` (zeros on entry) and ``ratio = data / colmax[column]``.

    ``bad[i]`` is set when image i's CSR is not canonical with positive finite entries (a row's
    columns not strictly increasing or out of range, an entry <= 0 or not finite): the caller takes
    the general path for that image, and its ``colmax`` / ``ratio`` are not to be used.
    """
    n_dims = colmax.shape[1]
    for i in prange(feat_off.shape[0] - 1):
        first, base = feat_off[i] + i, nnz_off[i]
        for r in range(feat_off[i + 1] - feat_off[i]):
            prev = -1
            for e in range(base + indptr[first + r], base + indptr[first + r + 1]):
                d, v = indices[e], data[e]
                if d <= prev or d >= n_dims or not (v > 0.0 and v < np.inf):
                    bad[i] = True
                    break
                prev = d
                if v > colmax[i, d]:
                    colmax[i, d] = v
        if not bad[i]:
            for e in range(nnz_off[i], nnz_off[i + 1]):
                ratio[e] = data[e] / colmax[i, indices[e]]


def _relevance_work(indptr, indices, weights, feat_off, nnz_off, channel, item_image, skip, colmax, r3, extra,
                    boxes, shapes, item_feat_off, item_pix_off, r2, r1):
    return 4 * (np.diff(nnz_off)[item_image].sum() + 2 * r3.size) + 12 * r1.size


@jit_both(work=_relevance_work, error_model="numpy")
def relevance(indptr, indices, weights, feat_off, nnz_off, channel, item_image, skip, colmax, r3, extra,
              boxes, shapes, item_feat_off, item_pix_off, r2, r1):
    """Steps 2 and 1 of every item k (an image and row k of ``r3``).

    ``r2`` of feature l of item k = sum over the covered d (``colmax > 0``) of w_ld r3_d / col_d with
    the shares w = ``weights`` (Eqs 26-32), plus ``extra[k, channel[l]]`` when that is not zero (the
    uncovered dimensions' equal split, computed by the caller); ``r1`` of item k = its (H, W) pixel
    map (Eqs 33-34), unless ``r1`` is empty (Step 2 only). Items of an image with ``skip[i]`` (a
    ``bad`` image of :func:`prepare`) are left alone.
    """
    n_dims = r3.shape[1]
    for k in prange(item_image.shape[0]):
        i = item_image[k]
        if skip[i]:
            continue
        first, base, f0 = feat_off[i] + i, nnz_off[i], item_feat_off[k]
        col = np.zeros(n_dims)
        for e in range(nnz_off[i], nnz_off[i + 1]):
            col[indices[e]] += weights[e]
        scaled = np.zeros(n_dims)
        for d in range(n_dims):
            if colmax[i, d] > 0:
                scaled[d] = r3[k, d] / col[d]
        n_feat = feat_off[i + 1] - feat_off[i]
        for r in range(n_feat):
            s = 0.0
            for e in range(base + indptr[first + r], base + indptr[first + r + 1]):
                s += weights[e] * scaled[indices[e]]
            add = extra[k, channel[feat_off[i] + r]]
            r2[f0 + r] = s + add if add != 0.0 else s
        if r1.shape[0] == 0:
            continue
        pixel_map(r2[f0:f0 + n_feat], boxes[feat_off[i]:feat_off[i + 1]], shapes[i, 0], shapes[i, 1],
                  r1[item_pix_off[k]:item_pix_off[k] + shapes[i, 0] * shapes[i, 1]])


@jit_serial(error_model="numpy")
def pixel_map(rel, boxes, height, width, out):
    """Step 1 of one map: ``out`` (H * W, flat) = the densities rel / area of the (clipped) boxes,
    spread over them and summed (a feature with an empty box adds nothing).

    The difference image of the boxes and its 2-D cumulative sum, in O(M + HW) and one pass: box m
    adds its density at the corners (y0, x0) and (y1, x1) and subtracts it at (y0, x1) and (y1, x0),
    each corner kind summed in its own accumulator in feature order, combined as ((a - b) - c) + d,
    summed down the columns and then along the rows. Corners on row H or column W lie outside the map
    and are skipped (they only reach pixels past it). No value is ever -0.0 (a sum starting from
    +0.0), so adding the zero of an untouched pixel or of the first row / column changes nothing.

    Memory is O(M + W), not O(HW) per corner kind: the corner events are sorted by row (a counting
    sort that keeps feature order) and each row's four accumulators are rebuilt from its events.
    """
    n = rel.shape[0]
    starts = np.zeros(height + 1, np.int64)  # events of row y: starts[y] .. starts[y + 1] - 1
    for m in range(n):
        y0, x0, y1, x1 = boxes[m, 0], boxes[m, 1], boxes[m, 2], boxes[m, 3]
        if (y1 - y0) * (x1 - x0) <= 0:
            continue
        if y0 < height:
            starts[y0 + 1] += 2
        if y1 < height:
            starts[y1 + 1] += 2
    for y in range(height):
        starts[y + 1] += starts[y]
    ev_x = np.empty(starts[height], np.int64)
    ev_kind = np.empty(starts[height], np.int64)
    ev_value = np.empty(starts[height])
    fill = starts[:height].copy()
    for m in range(n):  # in feature order: each row's events keep it
        y0, x0, y1, x1 = boxes[m, 0], boxes[m, 1], boxes[m, 2], boxes[m, 3]
        area = (y1 - y0) * (x1 - x0)
        if area <= 0:
            continue
        density = rel[m] / area
        for y, kind in ((y0, 0), (y1, 2)):
            if y < height:
                e = fill[y]
                ev_x[e], ev_kind[e], ev_value[e] = x0, kind, density
                ev_x[e + 1], ev_kind[e + 1], ev_value[e + 1] = x1, kind + 1, density
                fill[y] = e + 2
    corners = np.zeros((width, 4))
    down = np.zeros(width)  # the cumulative sums down each column, up to the previous row
    for y in range(height):
        corners[:] = 0.0
        for e in range(starts[y], starts[y + 1]):
            if ev_x[e] < width:
                corners[ev_x[e], ev_kind[e]] += ev_value[e]
        left = 0.0
        for x in range(width):
            c = corners[x]
            down[x] = (((c[0] - c[1]) - c[2]) + c[3]) + down[x]
            left = down[x] + left
            out[y * width + x] = left


@jit_serial(error_model="numpy")
def uncovered_sums(r3, covered, rows, starts, stops, counts, extra):
    """extra[k, u] = (the sum of r3[k, d] over the dimensions d of channel u, ``starts[u]`` to
    ``stops[u]``, with ``covered[rows[k], d]`` False) / counts[rows[k], u], where that sum and the
    count are not 0 (``rows[k]``: the image of row k, whose covered dimensions and feature counts
    every row of that image shares).

    The sum is numpy's of the selected values in dimension order (``r3[k][sl][~covered[k][sl]].sum()``:
    :func:`pairwise_sum` of the gathered values) and the division Python's of that float by the int
    count, so the shares are those of the numpy loop it replaces, bit for bit.
    """
    buf = np.empty(r3.shape[1])
    for k in range(r3.shape[0]):
        i = rows[k]
        for u in range(starts.shape[0]):
            m = np.int64(0)  # not the literal 0: numba would compile pairwise_sum for Literal[int](0) too
            for d in range(starts[u], stops[u]):
                if not covered[i, d]:
                    buf[m] = r3[k, d]
                    m += 1
            total = pairwise_sum(buf, np.int64(0), m)
            if total != 0.0 and counts[i, u] != 0:
                extra[k, u] = total / counts[i, u]


@jit_serial(error_model="numpy")
def batch_layout(per_image, item_image, channel, n_channels):
    """Where each image's and item's values lie in a batch's concatenated arrays, in one call.

    ``per_image[i]`` = (features, CSR entries, height, width) of image i; ``channel`` the features'
    channels end to end. Returns ``feat_off``, ``nnz_off`` (n_img + 1: where each image's features
    and entries start, the total last), ``item_feat_off``, ``item_pix_off`` (n_items + 1: where each
    item's feature relevance and pixel map start), ``counts`` (n_img, n_channels: features per image
    and channel) and ``problem``: 0, or 1 when an item's image is not in [0, n_img), 2 when a
    channel is not in [0, n_channels) (the other outputs are then not to be used).
    """
    n_img, n_items = per_image.shape[0], item_image.shape[0]
    feat_off, nnz_off = np.zeros(n_img + 1, np.int64), np.zeros(n_img + 1, np.int64)
    for i in range(n_img):
        feat_off[i + 1] = feat_off[i] + per_image[i, 0]
        nnz_off[i + 1] = nnz_off[i] + per_image[i, 1]
    item_feat_off, item_pix_off = np.zeros(n_items + 1, np.int64), np.zeros(n_items + 1, np.int64)
    counts = np.zeros((n_img, max(n_channels, 1)), np.int64)
    problem = 0
    for k in range(n_items):
        i = item_image[k]
        if i < 0 or i >= n_img:
            problem = 1
            break
        item_feat_off[k + 1] = item_feat_off[k] + per_image[i, 0]
        item_pix_off[k + 1] = item_pix_off[k] + per_image[i, 2] * per_image[i, 3]
    if problem == 0:
        for i in range(n_img):
            for m in range(feat_off[i], feat_off[i + 1]):
                u = channel[m]
                if u < 0 or u >= n_channels:
                    problem = 2
                    break
                counts[i, u] += 1
    return feat_off, nnz_off, item_feat_off, item_pix_off, counts, problem


@jit_serial(error_model="numpy")
def level_sums(r3, n_dims, r2, item_feat_off, r1, item_pix_off, level):
    """``level[k]`` = the sums of item k's BoW relevance (row k of ``r3``, flat, ``n_dims`` long),
    feature relevance and pixel map, each as numpy sums it (:func:`pairwise_sum`)."""
    for k in range(level.shape[0]):
        level[k, 0] = pairwise_sum(r3, k * n_dims, n_dims)
        level[k, 1] = pairwise_sum(r2, item_feat_off[k], item_feat_off[k + 1] - item_feat_off[k])
        level[k, 2] = pairwise_sum(r1, item_pix_off[k], item_pix_off[k + 1] - item_pix_off[k])
