"""Numba kernels of the explanation's Steps 2 and 1 for a batch: one call per batch, images in ``prange``.

Private: validated, C-contiguous arrays in, preallocated outputs written (and the pixel maps, which
:func:`relevance` allocates and returns). The public wrappers are
:func:`~bowlrp.bow.decompose.pooling.feature_relevance` (a batch of one) and
:func:`~bowlrp.bow.decompose.batch.decompose_batch` (what the orchestrator runs), so the per-image
work runs outside the GIL, on numba's threads when :func:`bowlrp.jit.use_parallel` says it pays.

The batch layout is ragged, concatenated: image i owns features ``feat_off[i]:feat_off[i+1]`` and CSR
entries ``nnz_off[i]:nnz_off[i+1]``; its ``indptr`` (relative to its own first entry) is stored at
``indptr[feat_off[i] + i : feat_off[i+1] + i + 1]``. An *item* is one (image, explained class) pair:
``item_image[k]`` and row k of ``r3``; its feature relevance goes to ``r2[item_feat_off[k]:...]`` and
its pixel map is an (H, W) array of its own, which :func:`relevance` allocates and returns.

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
                    boxes, shapes, item_feat_off, r2, with_maps, level):
    pixels = (shapes[item_image, 0] * shapes[item_image, 1]).sum() if with_maps else 0
    return 4 * (np.diff(nnz_off)[item_image].sum() + 2 * r3.size) + 12 * pixels


@jit_both(work=_relevance_work, error_model="numpy")
def relevance(indptr, indices, weights, feat_off, nnz_off, channel, item_image, skip, colmax, r3, extra,
              boxes, shapes, item_feat_off, r2, with_maps, level):
    """Steps 2 and 1 of every item k (an image and row k of ``r3``); returns the items' pixel maps.

    ``r2`` of feature l of item k = sum over the covered d (``colmax > 0``) of w_ld r3_d / col_d with
    the shares w = ``weights`` (Eqs 26-32), plus ``extra[k, channel[l]]`` when that is not zero (the
    uncovered dimensions' equal split, computed by the caller). With ``with_maps``, item k's (H, W)
    pixel map (Eqs 33-34) is an array of its own in the returned list (allocated here, so no map is
    copied out of a batch buffer, and summed while it is still in the cache); without, and for the
    items of a skipped image, the list holds a (0, 0) array. Items of an image with ``skip[i]`` (a
    ``bad`` image of :func:`prepare`) are left alone.

    ``level`` (n_items, 3), unless it has no rows: the sums of item k's BoW relevance, feature
    relevance and pixel map, each as numpy sums it (:func:`pairwise_sum`; for a skipped item only the
    first).
    """
    n_dims, n_items = r3.shape[1], item_image.shape[0]
    maps = []  # allocated before the threads: a list is not to be grown inside prange
    for k in range(n_items):
        i = item_image[k]
        if with_maps and not skip[i]:
            maps.append(np.empty((shapes[i, 0], shapes[i, 1])))
        else:
            maps.append(np.empty((0, 0)))
    sums = level.shape[0] > 0
    for k in prange(n_items):
        i = item_image[k]
        if sums:
            level[k, 0] = pairwise_sum(r3[k], np.int64(0), n_dims)
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
        if sums:
            level[k, 1] = pairwise_sum(r2, f0, n_feat)
        if not with_maps:
            continue
        flat = maps[k].reshape(-1)
        pixel_map(r2[f0:f0 + n_feat], boxes[feat_off[i]:feat_off[i + 1]], shapes[i, 0], shapes[i, 1], flat)
        if sums:
            level[k, 2] = pairwise_sum(flat, np.int64(0), flat.shape[0])
    return maps


@jit_serial(error_model="numpy")
def pixel_map(rel, boxes, height, width, out):
    """Step 1 of one map: ``out`` (H * W, flat) = the densities rel / area of the (clipped) boxes,
    spread over them and summed (a feature with an empty box adds nothing).

    The difference image of the boxes and its 2-D cumulative sum, in O(M + HW): box m adds its
    density at the corners (y0, x0) and (y1, x1) and subtracts it at (y0, x1) and (y1, x0), each
    corner kind summed in its own accumulator in feature order, combined as ((a - b) - c) + d, summed
    down the columns (row after row, into ``out``) and then along the rows (a second pass over
    ``out``, four rows at a time: the same additions). Corners on row H or column W lie outside the
    map and are skipped (they only reach pixels past it). No value is ever -0.0 (a sum starting from
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
    corners = np.zeros((4, width))  # each corner kind's sums along the current row
    c0, c1, c2, c3 = corners[0], corners[1], corners[2], corners[3]
    down = np.zeros(width)  # the cumulative sums down each column, up to the previous row
    for y in range(height):
        for e in range(starts[y], starts[y + 1]):
            if ev_x[e] < width:
                corners[ev_kind[e], ev_x[e]] += ev_value[e]
        row = out[y * width:(y + 1) * width]
        for x in range(width):  # (the columns are independent)
            down[x] = (((c0[x] - c1[x]) - c2[x]) + c3[x]) + down[x]
            row[x] = down[x]
        for e in range(starts[y], starts[y + 1]):  # the row's accumulators back to zero
            if ev_x[e] < width:
                corners[ev_kind[e], ev_x[e]] = 0.0
    # then along the rows: each sum waits for the one before it, so four rows advance side by side
    # (a 96 x 96 map: 22 -> 20 us against one row at a time in the pass down the columns)
    rest = height - height % 4  # (the rows from here on: one at a time)
    for y in range(0, rest, 4):
        r0, r1 = out[y * width:(y + 1) * width], out[(y + 1) * width:(y + 2) * width]
        r2, r3 = out[(y + 2) * width:(y + 3) * width], out[(y + 3) * width:(y + 4) * width]
        left0, left1, left2, left3 = 0.0, 0.0, 0.0, 0.0
        for x in range(width):
            left0 = r0[x] + left0
            left1 = r1[x] + left1
            left2 = r2[x] + left2
            left3 = r3[x] + left3
            r0[x], r1[x], r2[x], r3[x] = left0, left1, left2, left3
    for y in range(rest, height):
        row = out[y * width:(y + 1) * width]
        left = 0.0
        for x in range(width):
            left = row[x] + left
            row[x] = left


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
    and entries start, the total last), ``item_feat_off`` (n_items + 1: where each item's feature
    relevance starts), ``counts`` (n_img, n_channels: features per image and channel) and
    ``problem``: 0, or 1 when an item's image is not in [0, n_img), 2 when a channel is not in
    [0, n_channels) (the other outputs are then not to be used).
    """
    n_img, n_items = per_image.shape[0], item_image.shape[0]
    feat_off, nnz_off = np.zeros(n_img + 1, np.int64), np.zeros(n_img + 1, np.int64)
    for i in range(n_img):
        feat_off[i + 1] = feat_off[i] + per_image[i, 0]
        nnz_off[i + 1] = nnz_off[i] + per_image[i, 1]
    item_feat_off = np.zeros(n_items + 1, np.int64)
    counts = np.zeros((n_img, max(n_channels, 1)), np.int64)
    problem = 0
    for k in range(n_items):
        i = item_image[k]
        if i < 0 or i >= n_img:
            problem = 1
            break
        item_feat_off[k + 1] = item_feat_off[k] + per_image[i, 0]
    if problem == 0:
        for i in range(n_img):
            for m in range(feat_off[i], feat_off[i + 1]):
                u = channel[m]
                if u < 0 or u >= n_channels:
                    problem = 2
                    break
                counts[i, u] += 1
    return feat_off, nnz_off, item_feat_off, counts, problem
