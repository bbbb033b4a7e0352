"""numpy's pairwise summation in numba: sums that equal ``ndarray.sum()`` bit for bit.

numpy sums a contiguous run of float64 values in blocks of at most 128 (8 running sums, combined
pairwise) and halves a longer run at a multiple of 8, adding the two halves' sums. Kernels whose
results must be numpy's numbers (the pooled BoW vector, the Taylor step's f values, the level sums of
an explanation) sum in that order with :func:`pairwise_sum`; each call names its own range, so no
slice (and no array view) is made per sum.
"""

from __future__ import annotations

import numpy as np

from bowlrp.jit import jit_serial

__all__ = ["pairwise_sum", "range_sums"]


@jit_serial(error_model="numpy")
def _block_sum(a, start, n):
    """sum(a[start:start + n]) for n <= 128 as numpy sums such a block: fewer than 8 terms one after the
    other from -0.0, else with 8 accumulators, combined pairwise, and the rest added one by one."""
    if n < 8:
        res = -0.0
        for i in range(start, start + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    i = start + 8
    stop = start + n - n % 8
    while i < stop:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < start + n:
        res += a[i]
        i += 1
    return res


@jit_serial(error_model="numpy")
def pairwise_sum(a, start, n):
    """sum(a[start:start + n]) in the order of numpy's pairwise summation of a contiguous row (blocks
    of at most 128 as :func:`_block_sum`, larger ranges split in two at a multiple of 8, the halves'
    sums added) added to 0.0 (numpy's identity: a sum of -0.0s is 0.0), so it equals
    ``a[start:start + n].sum()`` bit for bit.

    Iterative (an explicit stack of ranges, depth < 64): numba's disk cache does not reload
    self-recursive functions reliably.
    """
    if n <= 128:
        return 0.0 + _block_sum(a, start, n)
    starts = np.empty(64, np.int64)
    sizes = np.empty(64, np.int64)
    phase = np.zeros(64, np.int64)  # 0: left half next, 1: right half next, 2: both summed
    sums = np.empty(64)  # the sums of finished ranges, in the order they finished
    top, done = 0, 0
    starts[0], sizes[0] = start, n
    while top >= 0:
        s, m = starts[top], sizes[top]
        if m <= 128:
            sums[done] = _block_sum(a, s, m)
            done += 1
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        if phase[top] == 2:  # both halves summed: replace them by their sum
            sums[done - 2] = sums[done - 2] + sums[done - 1]
            done -= 1
            top -= 1
            continue
        phase[top] += 1
        top += 1
        phase[top] = 0
        if phase[top - 1] == 1:
            starts[top], sizes[top] = s, half
        else:
            starts[top], sizes[top] = s + half, m - half
    return 0.0 + sums[0]


@jit_serial(error_model="numpy")
def range_sums(flat, offsets, out):
    """out[k] = flat[offsets[k]:offsets[k + 1]].sum(), numpy's numbers (:func:`pairwise_sum`)."""
    for k in range(offsets.shape[0] - 1):
        out[k] = pairwise_sum(flat, offsets[k], offsets[k + 1] - offsets[k])
