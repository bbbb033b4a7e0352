"""Numba kernel of the Taylor step's root search: every segment's search and its f values in one call.

Private: validated, C-contiguous arrays in, preallocated outputs written; the caller is
:func:`bowlrp.bow.decompose.taylor.find_roots`. Segment s runs from the candidate ``C[picks[s]]``
(a = 0, value ``g0[s]``) to the explained BoW ``X[rows[s]]`` (a = 1, value ``g1[s]``); the search is
the shared method of :mod:`bowlrp.roots` (its three per-segment functions), so the points, values and
roots are those of :func:`bowlrp.roots.bracketed_roots` driven by
:meth:`~bowlrp.bow.decompose.expansion.KernelExpansion.values`, bit for bit, without a Python round
trip, a Gram call and a dozen numpy temporaries per round.

f is evaluated exactly as ``KernelExpansion.values`` does through the Gram kernel
(:func:`bowlrp.bow._kernels._gram` on K(SV, Z)): per support vector i and channel u the sum over the
dimensions in increasing order (over the vector's non-zero dimensions only, except for RBF), the
channel terms added to 0.0 in channel order, then sum_i K_i a_i in numpy's pairwise order
(:func:`~bowlrp.bow._pairwise.pairwise_sum`) plus the intercept. The segments are searched in slots
(:func:`_slots`: at least :data:`SEGMENTS`, more while a block of points stays within
:data:`_BLOCK_BYTES`) refilled as their segments finish, and the points of a round are evaluated
together (the inner loops run over the points and vectorise, as the Gram kernel's run over its columns,
four dimensions per pass so that each sum is loaded and stored once per four terms, added in the same
order; a round of 5 points or more is padded to a multiple of 8 (:func:`_padded`); fewer than
:data:`_FEW` points are evaluated one by one, vectorised over the support vectors): a segment's numbers
never depend on when or beside which others it is searched.
"""

from __future__ import annotations

import math

import numpy as np

from bowlrp.bow._kernels import EXP_CHI2, RBF, sparse_cross, transposed
from bowlrp.bow._pairwise import pairwise_sum
from bowlrp.jit import jit_serial
from bowlrp.roots import accept_point, new_state, propose_point, start_segment

#: segments searched at a time at least (the slots of :func:`segment_roots`: their points evaluated as
#: one block), and the block size of :func:`point_values`
SEGMENTS = 64
#: more slots while a block of points stays this small (bytes): with few words, every segment of a batch
#: in a slot of its own, so the rounds evaluate as many points as there are segments left
_BLOCK_BYTES = 1 << 18


@jit_serial(error_model="numpy")
def _slots(n_seg, n_dims):
    """Slots of :func:`segment_roots`: :data:`SEGMENTS`, or more up to a block of :data:`_BLOCK_BYTES`,
    never more than the segments."""
    return max(1, min(n_seg, max(SEGMENTS, _BLOCK_BYTES // (8 * max(1, n_dims)))))


@jit_serial(error_model="numpy")
def support_layout(SV, bounds):
    """The non-zero dimensions of each support vector per channel (``idx[start[i, u]:start[i, u + 1]]``,
    increasing) and the channel sums of each support vector (left to right, as the Gram kernel's)."""
    n_sv, n_ch = SV.shape[0], bounds.shape[0] - 1
    nnz = 0
    for i in range(n_sv):
        for d in range(SV.shape[1]):
            if SV[i, d] != 0.0:
                nnz += 1
    idx = np.empty(nnz, np.int64)
    start = np.empty((n_sv, n_ch + 1), np.int64)
    sums = np.zeros((n_sv, n_ch))
    pos = 0
    for i in range(n_sv):
        for u in range(n_ch):
            start[i, u] = pos
            s = 0.0
            for d in range(bounds[u], bounds[u + 1]):
                s += SV[i, d]
                if SV[i, d] != 0.0:
                    idx[pos] = d
                    pos += 1
            sums[i, u] = s
        start[i, n_ch] = pos
    return idx, start, sums


#: dimensions of a point block written together (32 rows of the block: 16 KiB, in the L1 cache)
_ROWS = 32


@jit_serial(error_model="numpy")
def segment_points(X, C, rows, picks, first, which, points, n, ZT):
    """The points a x + (1 - a) z of segments ``first + which[j]`` at a = ``points[j]``, j < n, as
    numpy computes them, into the columns of ``ZT``.

    Eight points at a time, dimension after dimension: each row of ``ZT`` gets eight neighbouring
    values from eight rows read in order (1,024 words, 64 points: 29 us against 52 us for the blocks
    of :data:`_ROWS` dimensions written column by column, which the last n % 8 points still use;
    column by column without the blocks it was 187 us: every write of a point landed on another cache
    line of a block too large for the L1 cache).
    """
    n_dims = X.shape[1]
    j0 = 0
    while j0 + 8 <= n:
        # the eight segments' ends and weights in locals: the loop below is eight plain streams
        w = which[j0:j0 + 8]
        s0, s1, s2, s3 = first + w[0], first + w[1], first + w[2], first + w[3]
        s4, s5, s6, s7 = first + w[4], first + w[5], first + w[6], first + w[7]
        x0, x1, x2, x3 = X[rows[s0]], X[rows[s1]], X[rows[s2]], X[rows[s3]]
        x4, x5, x6, x7 = X[rows[s4]], X[rows[s5]], X[rows[s6]], X[rows[s7]]
        z0, z1, z2, z3 = C[picks[s0]], C[picks[s1]], C[picks[s2]], C[picks[s3]]
        z4, z5, z6, z7 = C[picks[s4]], C[picks[s5]], C[picks[s6]], C[picks[s7]]
        a0, a1, a2, a3 = points[j0], points[j0 + 1], points[j0 + 2], points[j0 + 3]
        a4, a5, a6, a7 = points[j0 + 4], points[j0 + 5], points[j0 + 6], points[j0 + 7]
        b0, b1, b2, b3 = 1.0 - a0, 1.0 - a1, 1.0 - a2, 1.0 - a3
        b4, b5, b6, b7 = 1.0 - a4, 1.0 - a5, 1.0 - a6, 1.0 - a7
        for d in range(n_dims):
            out = ZT[d]
            out[j0] = a0 * x0[d] + b0 * z0[d]
            out[j0 + 1] = a1 * x1[d] + b1 * z1[d]
            out[j0 + 2] = a2 * x2[d] + b2 * z2[d]
            out[j0 + 3] = a3 * x3[d] + b3 * z3[d]
            out[j0 + 4] = a4 * x4[d] + b4 * z4[d]
            out[j0 + 5] = a5 * x5[d] + b5 * z5[d]
            out[j0 + 6] = a6 * x6[d] + b6 * z6[d]
            out[j0 + 7] = a7 * x7[d] + b7 * z7[d]
        j0 += 8
    for d0 in range(0, n_dims, _ROWS):
        d1 = min(n_dims, d0 + _ROWS)
        for j in range(j0, n):
            s = first + which[j]
            x, z, a = X[rows[s]], C[picks[s]], points[j]
            for d in range(d0, d1):
                ZT[d, j] = a * x[d] + (1.0 - a) * z[d]


#: fewer points than this are evaluated one by one, vectorised over the support vectors
#: (:func:`_point_cross`): the loops over the points of :func:`block_values` do not vectorise on so
#: few, and a round of the search's last one or two segments cost as much as 10-20 points of a full
#: block (1,024 dimensions)
_FEW = 8


@jit_serial(error_model="numpy")
def _point_cross(ZT, k, SVT, lo, hi, kind, out):
    """out[i] = the channel [lo, hi) cross sum of support vector i (``SVT[:, i]``) and the point
    ``ZT[:, k]``, as :func:`block_values` sums it for a block of points, vectorised over the support
    vectors instead.

    Each sum runs over the dimensions in increasing order with the same operations. For the sparse
    kinds the Gram kernel adds the terms of the support vector's non-zero dimensions; here those of the
    point's non-zero dimensions: the terms left out on either side (s = 0 or z = 0: s z / (s + z) and
    s z with a finite other factor) are zeros, and adding a zero to a sum that starts at 0.0 changes no
    bit (it never becomes -0.0), so both give the same number.
    """
    n_sv = SVT.shape[1]
    for i in range(n_sv):
        out[i] = 0.0
    if kind == RBF:  # every dimension, four at a time (their terms added in order)
        d4 = hi - (hi - lo) % 4
        for d in range(lo, d4, 4):
            _rbf_point4(SVT, d, ZT[d, k], ZT[d + 1, k], ZT[d + 2, k], ZT[d + 3, k], out)
        for d in range(d4, hi):
            z, s = ZT[d, k], SVT[d]
            for i in range(n_sv):
                e = s[i] - z
                out[i] += e * e
        return
    for d in range(lo, hi):
        z = ZT[d, k]
        s = SVT[d]
        if z == 0.0:
            continue
        elif kind == EXP_CHI2:
            for i in range(n_sv):
                out[i] += s[i] * z / (s[i] + z)  # z > 0: no 0/0
        else:
            for i in range(n_sv):
                out[i] += s[i] * z


@jit_serial(error_model="numpy")
def _rbf_point4(SVT, d, za, zb, zc, zd, out):
    """out[i] += the RBF terms of dimensions d..d+3 (values za..zd of one point), added in that order:
    each sum loaded and stored once per four terms."""
    sa, sb, sc, sd = SVT[d], SVT[d + 1], SVT[d + 2], SVT[d + 3]
    for i in range(SVT.shape[1]):
        ea, eb, ec, ed = sa[i] - za, sb[i] - zb, sc[i] - zc, sd[i] - zd
        out[i] = (((out[i] + ea * ea) + eb * eb) + ec * ec) + ed * ed


@jit_serial(error_model="numpy")
def _rbf_cross(ZT, n, SV, lo, hi, cross):
    """cross[i, k] += the sum over d in [lo, hi), increasing, of (SV[i, d] - ZT[d, k])^2: the RBF sums of
    :func:`block_values`, the Gram kernel's numbers (every sum takes its terms one after the other).

    Four support vectors and four dimensions per pass over the points: each sum is loaded and stored
    once per four terms, written ((c + t_d) + t_d+1) + ..., the order of a one-term loop (2-2.5x faster
    than one dimension per pass, which the loads and stores of the sums bound).
    """
    n_sv = SV.shape[0]
    d4 = hi - (hi - lo) % 4
    i = 0
    while i <= n_sv - 4:
        c0, c1, c2, c3 = cross[i], cross[i + 1], cross[i + 2], cross[i + 3]
        S0, S1, S2, S3 = SV[i], SV[i + 1], SV[i + 2], SV[i + 3]
        for d in range(lo, d4, 4):
            ra, rb, rc, rd = ZT[d], ZT[d + 1], ZT[d + 2], ZT[d + 3]
            a0, a1, a2, a3 = S0[d], S1[d], S2[d], S3[d]  # dimension d of the four vectors
            b0, b1, b2, b3 = S0[d + 1], S1[d + 1], S2[d + 1], S3[d + 1]
            e0, e1, e2, e3 = S0[d + 2], S1[d + 2], S2[d + 2], S3[d + 2]
            f0, f1, f2, f3 = S0[d + 3], S1[d + 3], S2[d + 3], S3[d + 3]
            for k in range(n):
                za, zb, zc, zd = ra[k], rb[k], rc[k], rd[k]
                ua, ub, uc, ud = a0 - za, b0 - zb, e0 - zc, f0 - zd
                c0[k] = (((c0[k] + ua * ua) + ub * ub) + uc * uc) + ud * ud
                ua, ub, uc, ud = a1 - za, b1 - zb, e1 - zc, f1 - zd
                c1[k] = (((c1[k] + ua * ua) + ub * ub) + uc * uc) + ud * ud
                ua, ub, uc, ud = a2 - za, b2 - zb, e2 - zc, f2 - zd
                c2[k] = (((c2[k] + ua * ua) + ub * ub) + uc * uc) + ud * ud
                ua, ub, uc, ud = a3 - za, b3 - zb, e3 - zc, f3 - zd
                c3[k] = (((c3[k] + ua * ua) + ub * ub) + uc * uc) + ud * ud
        for d in range(d4, hi):
            row = ZT[d]
            a0, a1, a2, a3 = S0[d], S1[d], S2[d], S3[d]
            for k in range(n):
                z = row[k]
                ua, ub, uc, ud = a0 - z, a1 - z, a2 - z, a3 - z
                c0[k] += ua * ua
                c1[k] += ub * ub
                c2[k] += uc * uc
                c3[k] += ud * ud
        i += 4
    for j in range(i, n_sv):  # the last n_sv % 4 support vectors, four dimensions per pass
        c, S = cross[j], SV[j]
        for d in range(lo, d4, 4):
            ra, rb, rc, rd = ZT[d], ZT[d + 1], ZT[d + 2], ZT[d + 3]
            a, b, e, f = S[d], S[d + 1], S[d + 2], S[d + 3]
            for k in range(n):
                ua, ub, uc, ud = a - ra[k], b - rb[k], e - rc[k], f - rd[k]
                c[k] = (((c[k] + ua * ua) + ub * ub) + uc * uc) + ud * ud
        for d in range(d4, hi):
            a, row = S[d], ZT[d]
            for k in range(n):
                ua = a - row[k]
                c[k] += ua * ua


@jit_serial(error_model="numpy")
def block_values(ZT, n, SV, SVT, sv_idx, sv_start, sv_sums, coef, intercept, bounds, weights, kind, gamma,
                 out):
    """f at the points ``ZT[:, :n]`` (one point per column) into ``out[:n]`` (``SVT``: SV transposed,
    contiguous, for fewer than :data:`_FEW` points)."""
    n_sv, n_ch = SV.shape[0], bounds.shape[0] - 1
    sums = np.zeros((n_ch, n))  # channel sums of the points (exp-chi2), left to right
    if kind == EXP_CHI2:
        for u in range(n_ch):  # four dimensions per pass, added in order (as for the cross sums)
            s, lo, hi = sums[u], bounds[u], bounds[u + 1]
            d4 = hi - (hi - lo) % 4
            for d in range(lo, d4, 4):
                ra, rb, rc, rd = ZT[d], ZT[d + 1], ZT[d + 2], ZT[d + 3]
                for k in range(n):
                    s[k] = (((s[k] + ra[k]) + rb[k]) + rc[k]) + rd[k]
            for d in range(d4, hi):
                row = ZT[d]
                for k in range(n):
                    s[k] += row[k]
    cross = np.empty((n_sv, n))  # per support vector: the channel's sum over its dimensions
    value = np.zeros((n_sv, n))  # K(SV_i, point k): the channels' terms added to 0.0 in channel order
    column = np.empty(n_sv)
    for u in range(n_ch):
        lo, hi = bounds[u], bounds[u + 1]
        cross[:, :] = 0.0
        if n < _FEW:
            for k in range(n):
                _point_cross(ZT, k, SVT, lo, hi, kind, column)
                for i in range(n_sv):
                    cross[i, k] = column[i]
        elif kind == RBF:  # every dimension (the Gram kernel skips none for RBF)
            _rbf_cross(ZT, n, SV, lo, hi, cross)
        else:  # the support vector's non-zero dimensions only
            for i in range(n_sv):
                sparse_cross(SV, i, sv_idx, sv_start[i, u], sv_start[i, u + 1], ZT, n, kind, cross[i])
        w = weights[u]
        for i in range(n_sv):
            c, v = cross[i], value[i]
            if kind == EXP_CHI2:
                for k in range(n):
                    dist = sv_sums[i, u] + sums[u, k] - 4.0 * c[k]
                    if dist < 0.0:
                        dist = 0.0
                    v[k] += w * math.exp(-gamma * dist)
            elif kind == RBF:
                for k in range(n):
                    v[k] += w * math.exp(-gamma * c[k])
            else:
                for k in range(n):
                    v[k] += w * c[k]
    terms = np.empty((n, n_sv))
    for i in range(n_sv):
        for k in range(n):
            terms[k, i] = value[i, k] * coef[i]
    for k in range(n):
        out[k] = pairwise_sum(terms[k], np.int64(0), n_sv) + intercept


@jit_serial(error_model="numpy")
def point_values(Z, SV, sv_idx, sv_start, sv_sums, coef, intercept, bounds, weights, kind, gamma, out):
    """f at every row of Z into ``out`` (blocks of :data:`SEGMENTS` points)."""
    ZT = np.empty((Z.shape[1], SEGMENTS))
    vals = np.empty(SEGMENTS)
    SVT = transposed(SV)
    for s0 in range(0, Z.shape[0], SEGMENTS):
        n = min(Z.shape[0], s0 + SEGMENTS) - s0
        for d0 in range(0, Z.shape[1], _ROWS):  # a block of dimensions for all points (see segment_points)
            for k in range(n):
                for d in range(d0, min(Z.shape[1], d0 + _ROWS)):
                    ZT[d, k] = Z[s0 + k, d]
        block_values(ZT, n, SV, SVT, sv_idx, sv_start, sv_sums, coef, intercept, bounds, weights, kind,
                     gamma, vals)
        for k in range(n):
            out[s0 + k] = vals[k]


@jit_serial(error_model="numpy")
def _padded(n, slots):
    """Points a round of :func:`segment_roots` evaluates for its n: from 5 on, up to the next multiple of
    8 when the slots hold it, else n (a count between would only lengthen the one-by-one rest). A
    point's value does not depend on the other columns, and the loops over the points run 8 at a time
    and the rest one by one: 8 points cost less than 7 (1,024 words: 23 against 26 us), 16 less than 12
    (26 against 40 us); the extra columns hold earlier rounds' points, their values unused.
    """
    padded = (n + 7) // 8 * 8
    return padded if n >= 5 and padded <= slots else n


@jit_serial(error_model="numpy")
def segment_roots(X, C, rows, picks, g0, g1, SV, sv_idx, sv_start, sv_sums, coef, intercept, bounds, weights,
                  kind, gamma, tol, max_iter, roots, froots, failed):
    """The root of f on every segment: ``roots[s]`` (V,), ``froots[s]`` = f(roots[s]).

    ``failed[s]`` is set when f was not finite at a point of segment s (its search stops there).

    The segments are searched :data:`SEGMENTS` at a time, in slots: a slot whose segment is done takes
    the next segment at once, so every round evaluates as many points as there are segments left
    (searching fixed blocks to their end, the last rounds of every block evaluated one or two points).
    Each slot runs the search of :mod:`bowlrp.roots` on its segment (at most ``max_iter`` points), so a
    segment's points and values do not depend on when or beside which others it is searched.
    """
    n_seg, n_dims = rows.shape[0], X.shape[1]
    SVT = transposed(SV)
    slots = _slots(n_seg, n_dims)
    ZT = np.zeros((n_dims, slots))  # (columns past a round's points: finite points of earlier rounds)
    vals = np.empty(slots)
    which = np.empty(slots, np.int64)  # the slot of each point of a round
    segs = np.empty(slots, np.int64)  # and its segment
    points = np.empty(slots)
    bisects = np.empty(slots, np.bool_)
    state = new_state(slots)  # the search of the slots' segments (bowlrp.roots.SearchState)
    best_a, best_g = state.best_a, state.best_g
    seg_of = np.full(slots, -1, np.int64)  # the segment of each slot (-1: none)
    active = np.zeros(slots, np.bool_)
    evals = np.zeros(slots, np.int64)
    known = np.empty(slots, np.bool_)  # best_g of a slot is f at best_a evaluated here
    pending = np.empty(n_seg, np.int64)  # segments whose f at the root is evaluated at the end
    n_pending, next_seg = 0, 0
    while True:
        n = np.int64(0)  # int64 from the start: a literal 0 makes numba compile _padded once more
        for slot in range(slots):
            while not active[slot]:
                s = seg_of[slot]
                if s >= 0:  # done: its root; f there is its value from the search (the same point,
                    # computed the same way), evaluated again only where the best point is an end of
                    # the segment (a given value)
                    x, z, a = X[rows[s]], C[picks[s]], best_a[slot]
                    for d in range(n_dims):
                        roots[s, d] = a * x[d] + (1.0 - a) * z[d]
                    froots[s] = best_g[slot]
                    if not known[slot]:
                        pending[n_pending] = s
                        n_pending += 1
                    seg_of[slot] = -1
                if next_seg == n_seg:
                    break
                s = next_seg
                next_seg += 1
                seg_of[slot], evals[slot], known[slot] = s, 0, False
                active[slot] = start_segment(slot, g0[s], g1[s], tol, state) and max_iter > 0
            if active[slot]:
                points[n], bisects[n] = propose_point(slot, state)
                which[n], segs[n] = slot, seg_of[slot]
                n += 1
        if n == 0:
            break
        segment_points(X, C, rows, picks, np.int64(0), segs, points, n, ZT)
        m = _padded(n, slots)
        block_values(ZT, m, SV, SVT, sv_idx, sv_start, sv_sums, coef, intercept, bounds, weights, kind, gamma,
                     vals)
        for j in range(n):
            slot = which[j]
            if not np.isfinite(vals[j]):
                failed[segs[j]] = True
                active[slot] = False
                continue
            active[slot] = accept_point(slot, points[j], vals[j], bisects[j], tol, state)
            evals[slot] += 1
            if evals[slot] >= max_iter:
                active[slot] = False
            if best_a[slot] == points[j] and best_g[slot] == vals[j]:
                known[slot] = True
    for p0 in range(0, n_pending, slots):
        n = min(n_pending, p0 + slots) - p0
        for j in range(n):
            for d in range(n_dims):
                ZT[d, j] = roots[pending[p0 + j], d]
        block_values(ZT, n, SV, SVT, sv_idx, sv_start, sv_sums, coef, intercept, bounds, weights, kind, gamma,
                     vals)
        for j in range(n):
            froots[pending[p0 + j]] = vals[j]


@jit_serial(error_model="numpy")
def segment_relevance(X, rows, roots, grad, fX, rels, rhos):
    """``rels[s] = (X[rows[s]] - roots[s]) * grad[s]`` and ``rhos[s] = fX[rows[s]] - rels[s].sum()``
    for every segment s, numpy's numbers (the row sum in numpy's order: :func:`pairwise_sum`), in
    one pass instead of numpy's gathered copy of the rows and two temporaries."""
    for s in range(rows.shape[0]):
        x, root, g, rel = X[rows[s]], roots[s], grad[s], rels[s]
        for d in range(x.shape[0]):
            rel[d] = (x[d] - root[d]) * g[d]
        rhos[s] = fX[rows[s]] - pairwise_sum(rel, np.int64(0), rel.shape[0])

