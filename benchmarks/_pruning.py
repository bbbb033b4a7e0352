"""Exact pruning of the rank encoding with a float32 filter: an experiment of ``bench_encoding.py --pruning``.

The rank (and hard) mapping needs, per descriptor x, the n words with the smallest
``d_j = max(fl(||x||^2 + ||b_j||^2) - 2 p_j, 0)``, where ``p_j`` is the float64 BLAS product of the
image's descriptors with the vocabulary, ordered by ``(d_j, j)``. Most of the encoding's time is those
products (benchmarks/README.md). The idea tried here:

1. float32 products (about half the float64 time) give approximate distances ``e_j`` with a rigorous
   bound ``|e_j - d_j| <= delta`` (the float32 and float64 rounding of a K-term dot product, bounded by
   ``||x|| ||b||``);
2. with ``t`` the n-th smallest ``e_j``, only the words with ``e_j <= t + 2 delta`` can be among the
   n nearest by the exact distances (the n words of smallest ``e`` have exact distances at most
   ``t + delta``, so the n-th smallest exact distance is at most ``t + delta``, and a nearest word has
   ``e_j <= d_j + delta``);
3. the exact ``p_j`` of those candidates only, bit for bit what BLAS gives: that needs the summation
   order of OpenBLAS's dgemm kernel per entry. :func:`chain_products` is the order found here (one fused
   multiply-add per k, k in order) and :func:`find_rule` checks it, entry by entry, against the BLAS
   in use, with the one exception found (the Haswell kernel's last row of a product with an odd number
   of rows: four accumulators, k mod 4, added as ``(a0 + a1) + (a2 + a3)``).

The kernels here are benchmark code (not used by the library); their numpy twins are in
``tests/bowlrp/bow/test_encoding_pruning.py``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from bowlrp.bow._encoding_kernels import _insert, rank_from_products, select_row, write_row_sorted
from bowlrp.jit import jit_serial, limited_threads

# unit roundoffs of float32 and float64
U32 = 2.0**-24
U64 = 2.0**-53


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (LLVM's ``llvm.fma.f64``: the FMA instruction BLAS kernels use)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        dt = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [dt], ir.FunctionType(dt, [dt, dt, dt]))
        return builder.call(fn, args)

    return sig, codegen


@jit_serial(inline="always")
def _dot(x, i, b, j, four):
    """The dot product of ``x[i]`` and ``b[j]``: one FMA per k in order, or (``four``) four interleaved
    accumulators (k mod 4) added as (a0 + a1) + (a2 + a3)."""
    n_k = x.shape[1]
    if four:
        a0 = a1 = a2 = a3 = 0.0
        for k in range(n_k):
            r = k % 4
            if r == 0:
                a0 = fma(x[i, k], b[j, k], a0)
            elif r == 1:
                a1 = fma(x[i, k], b[j, k], a1)
            elif r == 2:
                a2 = fma(x[i, k], b[j, k], a2)
            else:
                a3 = fma(x[i, k], b[j, k], a3)
        return (a0 + a1) + (a2 + a3)
    acc = 0.0
    for k in range(n_k):
        acc = fma(x[i, k], b[j, k], acc)
    return acc


@jit_serial(inline="always")
def _dot4(x, i, b, j0, j1, j2, j3):
    """Four dot products of :func:`_dot` (one FMA per k) at once: four independent chains keep the FMA
    unit busy where one chain waits for each result (the order within each chain is unchanged)."""
    a0 = a1 = a2 = a3 = 0.0
    for k in range(x.shape[1]):
        xk = x[i, k]
        a0 = fma(xk, b[j0, k], a0)
        a1 = fma(xk, b[j1, k], a1)
        a2 = fma(xk, b[j2, k], a2)
        a3 = fma(xk, b[j3, k], a3)
    return a0, a1, a2, a3


@jit_serial(inline="always")
def _keep_if_nearer(kept, nearest, d, j):
    """Insert (d, j) into the sorted ``kept``/``nearest`` (n smallest (distance, index) pairs so far)
    if it comes before the n-th."""
    n = kept.shape[0]
    if d < kept[n - 1] or (d == kept[n - 1] and j < nearest[n - 1]):
        _insert(kept, nearest, n - 1, d, j)


@jit_serial
def chain_products(x, b, four_rows, out):
    """``out[i, j]`` = the dot product of ``x[i]`` and ``b[j]`` in the order :func:`_dot` names (four
    accumulators for the rows flagged in ``four_rows``)."""
    for i in range(x.shape[0]):
        for j in range(b.shape[0]):
            out[i, j] = _dot(x, i, b, j, four_rows[i])


@jit_serial
def pruned_rank(x, p32, sq_norms, proto_sq_norms, b, delta, four_rows, n, values, exact, indices, data):
    """The rank mapping of :func:`~bowlrp.bow._encoding_kernels.rank_from_products` (same outputs) from
    float32 products ``p32``: the words whose approximate distance is within ``2 delta[i]`` of the n-th
    smallest get their exact product (:func:`_dot`), and the n nearest by (exact distance, index) are
    chosen among them. ``exact=False`` skips the exact products (wrong words: only to time the rest).
    Returns the number of candidates of all rows."""
    n_rows, n_words = p32.shape
    approx = np.empty(n_words)
    kept = np.empty(n)
    nearest = np.empty(n, np.int64)
    seeds = np.arange(n)
    cand = np.empty(n_words, np.int64)
    dist = np.empty(n_words)
    total = 0
    for i in range(n_rows):
        for j in range(n_words):
            d = sq_norms[i] + proto_sq_norms[j]
            d -= 2.0 * np.float64(p32[i, j])
            approx[j] = d if d >= 0.0 else 0.0
        limit = 0.0
        for j in range(n_words):  # select_row overwrites its row: the threshold from a copy's pass
            dist[j] = approx[j]
        select_row(dist, n, seeds, kept, nearest)
        seeds[:] = nearest
        limit = kept[n - 1] + 2.0 * delta[i]
        m = 0
        for j in range(n_words):
            if approx[j] <= limit:
                cand[m] = j
                m += 1
        total += m
        for c in range(m):
            dist[c] = approx[cand[c]]
        if exact and four_rows[i]:
            for c in range(m):
                dist[c] = _dot(x, i, b, cand[c], True)
        elif exact:
            for c in range(0, m, 4):  # four chains at a time (the last group padded with its first word)
                j0 = cand[c]
                j1 = cand[c + 1] if c + 1 < m else j0
                j2 = cand[c + 2] if c + 2 < m else j0
                j3 = cand[c + 3] if c + 3 < m else j0
                a0, a1, a2, a3 = _dot4(x, i, b, j0, j1, j2, j3)
                dist[c] = a0
                if c + 1 < m:
                    dist[c + 1] = a1
                if c + 2 < m:
                    dist[c + 2] = a2
                if c + 3 < m:
                    dist[c + 3] = a3
        if exact:
            for c in range(m):  # products -> distances, the formula of rank_from_products
                d = sq_norms[i] + proto_sq_norms[cand[c]]
                d -= 2.0 * dist[c]
                dist[c] = d if d >= 0.0 else 0.0
        # the n smallest (distance, index) pairs of the candidates, nearest first
        for r in range(n):
            kept[r] = np.inf
            nearest[r] = n_words
        for c in range(m):
            _keep_if_nearer(kept, nearest, dist[c], cand[c])
        write_row_sorted(nearest, values, 0, i * n, indices, data)
    return total


@jit_serial(inline="always")
def _chains8(xt, b, j, acc):
    """``acc[l]`` = the dot product of block row l (``xt[:, l]``, the block transposed) with ``b[j]``,
    one FMA per k in order: eight independent chains, kept in registers (scalars, which LLVM may pack
    into one vector FMA per k)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for k in range(xt.shape[0]):
        bjk = b[j, k]
        a0 = fma(xt[k, 0], bjk, a0)
        a1 = fma(xt[k, 1], bjk, a1)
        a2 = fma(xt[k, 2], bjk, a2)
        a3 = fma(xt[k, 3], bjk, a3)
        a4 = fma(xt[k, 4], bjk, a4)
        a5 = fma(xt[k, 5], bjk, a5)
        a6 = fma(xt[k, 6], bjk, a6)
        a7 = fma(xt[k, 7], bjk, a7)
    acc[0], acc[1], acc[2], acc[3] = a0, a1, a2, a3
    acc[4], acc[5], acc[6], acc[7] = a4, a5, a6, a7


@intrinsic
def chains8x4(typingctx, xt, b, j0, j1, j2, j3, out):
    """``out[w * 8 + l]`` = the dot product of block row l (``xt[:, l]``) with ``b[j_w]``, w = 0..3: one
    FMA per k in order for each of the 32 chains, written as four 8-wide vector FMAs per k (LLVM does
    not vectorise the scalar chains of :func:`_chains8`). ``xt`` (K, 8), ``b`` and ``out`` C-contiguous."""
    arrays = (xt, b, out)
    if not all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.float64 for a in arrays):
        return None
    sig = types.void(xt, b, j0, j1, j2, j3, out)

    def codegen(context, builder, signature, args):
        xt_v, b_v, j0_v, j1_v, j2_v, j3_v, out_v = args
        xt_a = context.make_array(signature.args[0])(context, builder, xt_v)
        b_a = context.make_array(signature.args[1])(context, builder, b_v)
        out_a = context.make_array(signature.args[6])(context, builder, out_v)
        dbl = ir.DoubleType()
        vec = ir.VectorType(dbl, 8)
        i64 = ir.IntType(64)
        K = builder.extract_value(xt_a.shape, 0)
        bK = builder.extract_value(b_a.shape, 1)
        fma_type = ir.FunctionType(vec, [vec, vec, vec])
        fma = cgutils.get_or_insert_function(builder.module, fma_type, "llvm.fma.v8f64")
        xt_ptr = builder.bitcast(xt_a.data, vec.as_pointer())
        rows = [builder.gep(b_a.data, [builder.mul(builder.sext(j, i64) if j.type != i64 else j, bK)])
                for j in (j0_v, j1_v, j2_v, j3_v)]
        zero = ir.Constant(vec, [0.0] * 8)
        i32 = ir.IntType(32)
        undef = ir.Constant(vec, ir.Undefined)
        lane0 = ir.Constant(ir.VectorType(i32, 8), [0] * 8)
        entry = builder.basic_block
        loop = builder.append_basic_block("chains_loop")
        body = builder.append_basic_block("chains_body")
        done = builder.append_basic_block("chains_done")
        builder.branch(loop)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        k.add_incoming(ir.Constant(i64, 0), entry)
        accs = []
        for _ in range(4):
            p = builder.phi(vec)
            p.add_incoming(zero, entry)
            accs.append(p)
        cond = builder.icmp_signed("<", k, K)
        builder.cbranch(cond, body, done)
        builder.position_at_end(body)
        xv = builder.load(builder.gep(xt_ptr, [k]), align=8)
        new = []
        for w in range(4):
            bk = builder.load(builder.gep(rows[w], [k]))
            splat = builder.insert_element(undef, bk, ir.Constant(i32, 0))
            splat = builder.shuffle_vector(splat, undef, lane0)  # bk in all 8 lanes
            new.append(builder.call(fma, [xv, splat, accs[w]]))
        k_next = builder.add(k, ir.Constant(i64, 1))
        body_end = builder.basic_block
        k.add_incoming(k_next, body_end)
        for w in range(4):
            accs[w].add_incoming(new[w], body_end)
        builder.branch(loop)
        builder.position_at_end(done)
        out_ptr = builder.bitcast(out_a.data, vec.as_pointer())
        for w in range(4):
            builder.store(accs[w], builder.gep(out_ptr, [ir.Constant(i64, w)]), align=8)
        return context.get_dummy_value()

    return sig, codegen


@jit_serial
def pruned_rank_blocks(x, p32, sq_norms, proto_sq_norms, b, delta, four_rows, n, values, vector, indices,
                       data):
    """:func:`pruned_rank` (same outputs) with the exact products of a block of 8 rows computed word by
    word for the union of the block's candidates (neighbouring descriptors share most of them): eight
    rows per vector FMA instead of one scalar chain per (row, word): by :func:`chains8x4` (``vector``) or
    by :func:`_chains8`. Returns the union sizes' sum."""
    n_rows, n_words = p32.shape
    n_k = x.shape[1]
    approx = np.empty((8, n_words))
    is_cand = np.zeros((8, n_words), np.bool_)
    in_union = np.zeros(n_words, np.bool_)
    union = np.empty(n_words, np.int64)
    exact = np.empty((8, n_words))
    xt = np.zeros((n_k, 8))
    acc = np.empty(8)
    acc32 = np.empty(32)
    w = np.empty(4, np.int64)
    dist = np.empty(n_words)
    kept = np.empty(n)
    nearest = np.empty(n, np.int64)
    seeds = np.arange(n)
    total = 0
    for i0 in range(0, n_rows, 8):
        rows = min(8, n_rows - i0)
        m = 0
        for l in range(rows):
            i = i0 + l
            for j in range(n_words):
                d = sq_norms[i] + proto_sq_norms[j]
                d -= 2.0 * np.float64(p32[i, j])
                d = d if d >= 0.0 else 0.0
                approx[l, j] = d
                dist[j] = d
            select_row(dist, n, seeds, kept, nearest)
            seeds[:] = nearest
            limit = kept[n - 1] + 2.0 * delta[i]
            for j in range(n_words):
                c = approx[l, j] <= limit
                is_cand[l, j] = c
                if c and not in_union[j]:
                    in_union[j] = True
                    union[m] = j
                    m += 1
        total += m
        for l in range(rows):
            for k in range(n_k):
                xt[k, l] = x[i0 + l, k]
        if vector:
            for u0 in range(0, m, 4):  # four words at a time (the last group padded with its first)
                for v in range(4):
                    w[v] = union[u0 + v] if u0 + v < m else union[u0]
                chains8x4(xt, b, w[0], w[1], w[2], w[3], acc32)
                for v in range(min(4, m - u0)):
                    for l in range(rows):
                        exact[l, w[v]] = acc32[v * 8 + l]
        else:
            for u in range(m):
                j = union[u]
                _chains8(xt, b, j, acc)
                for l in range(rows):
                    exact[l, j] = acc[l]
        for l in range(rows):
            i = i0 + l
            if four_rows[i]:  # the Haswell kernel's odd last row: its own order
                for u in range(m):
                    exact[l, union[u]] = _dot(x, i, b, union[u], True)
            for r in range(n):
                kept[r] = np.inf
                nearest[r] = n_words
            for u in range(m):
                j = union[u]
                if not is_cand[l, j]:
                    continue
                d = sq_norms[i] + proto_sq_norms[j]
                d -= 2.0 * exact[l, j]
                _keep_if_nearer(kept, nearest, d if d >= 0.0 else 0.0, j)
            write_row_sorted(nearest, values, 0, i * n, indices, data)
        for u in range(m):
            in_union[union[u]] = False
    return total


def bound(sq_norms, prototypes, n_k):
    """``delta[i]`` >= |approximate - exact distance| of row i for every word (float32 rounding of the
    inputs and of the K-term sum, float64 rounding of the exact sum and of the distance formula)."""
    x_norm = np.sqrt(sq_norms)
    b_norm = float(np.sqrt(np.einsum("vd,vd->v", prototypes, prototypes).max()))
    b_sq = b_norm * b_norm
    dot = 1.01 * x_norm * b_norm  # >= |x . b| and >= sum_k |x_k b_k| (Cauchy-Schwarz)
    products = 2.0 * ((n_k + 2) * (U32 + U64)) * dot * 1.01
    formula = 2.02 * U64 * (sq_norms + b_sq + 2.0 * dot)
    return products + formula + 1e-30  # float32 subnormals: absolute error far below this


def find_rule(descriptors, prototypes):
    """Which order reproduces every entry of the per-image float64 BLAS products (one BLAS thread).

    Returns ``(rule, shares)``: ``rule`` is "chain" (one FMA per k for every row), "haswell" (the same,
    but four accumulators for the last row of an image with an odd number of rows) or None; ``shares``
    the fraction of equal entries for each order tried, and for a per-row ``np.dot``.
    """
    bounds = np.cumsum([0] + [d.shape[0] for d in descriptors])
    x = np.concatenate(descriptors)
    blas = np.empty((x.shape[0], prototypes.shape[0]))
    with limited_threads(1, numba_threads=False, user_api="blas"):
        for g, d in enumerate(descriptors):
            np.matmul(d, prototypes.T, out=blas[bounds[g] : bounds[g + 1]])
        dots = np.array([[np.dot(r, c) for c in prototypes] for r in x[:200]])
    last_odd = np.zeros(x.shape[0], np.bool_)
    odd = np.diff(bounds) % 2 == 1
    last_odd[bounds[1:][odd] - 1] = True
    shares, rule = {}, None
    for name, four in (("chain", np.zeros_like(last_odd)), ("haswell", last_odd)):
        chain = np.empty_like(blas)
        chain_products(x, np.ascontiguousarray(prototypes), four, chain)
        equal = chain == blas
        shares[name] = float(equal.mean())
        if rule is None and equal.all():
            rule = name
    shares["np.dot per entry"] = float(np.mean(dots == blas[:200]))
    return rule, shares


def main(images, y, rounds, clock):
    """Print the reproduction check and the timings of today's selection path against the pruned one."""
    import os

    from bowlrp.bow.classifier import BoWClassifier

    print(f"exact pruning experiment, {len(images)} crops; load average {os.getloadavg()[0]:.1f}")
    with limited_threads(1):
        for words in (64, 256):
            clf = BoWClassifier(vocabulary_size=words, random_state=0).fit(images, y)
            descriptors = [np.asarray(f.descriptors, np.float64) for f in clf.extract_features(images)]
            _experiment(descriptors, clf.vocabularies_[0].cluster_centers_, rounds, clock)
    return 0


def _experiment(descriptors, prototypes, rounds, clock):
    words = prototypes.shape[0]
    rule, shares = find_rule(descriptors, prototypes)
    print(f"\n{words} words: entries of the BLAS products reproduced: "
          + ", ".join(f"{k} {v:.4f}" for k, v in shares.items()) + f" -> rule {rule}")
    if rule is None:
        print("  no order reproduces the products: the pruned path cannot be exact here")
        return
    bounds = np.cumsum([0] + [d.shape[0] for d in descriptors]).tolist()
    x = np.concatenate(descriptors)
    b = np.ascontiguousarray(prototypes)
    b32 = b.astype(np.float32)
    b_sq = np.einsum("vd,vd->v", b, b)
    four = np.zeros(x.shape[0], np.bool_)
    if rule == "haswell":
        for g in range(len(descriptors)):
            if (bounds[g + 1] - bounds[g]) % 2:
                four[bounds[g + 1] - 1] = True
    n = 4
    values = 2.0 ** -np.arange(1, n + 1)
    p64 = np.empty((x.shape[0], words))
    p32 = np.empty((x.shape[0], words), np.float32)
    sq = np.empty(x.shape[0])
    out = {k: (np.empty(x.shape[0] * n, np.int64), np.empty(x.shape[0] * n)) for k in ("today", "pruned")}
    found = {}

    def norms():
        for g, d in enumerate(descriptors):
            np.einsum("md,md->m", d, d, out=sq[bounds[g] : bounds[g + 1]])

    def today():
        norms()
        for g, d in enumerate(descriptors):
            np.matmul(d, b.T, out=p64[bounds[g] : bounds[g + 1]])
        rank_from_products(p64, sq, b_sq, n, values, 0, *out["today"])

    def pruned(exact=True):
        norms()
        for g, d in enumerate(descriptors):
            np.matmul(d.astype(np.float32), b32.T, out=p32[bounds[g] : bounds[g + 1]])
        delta = bound(sq, b, x.shape[1])
        found["candidates"] = pruned_rank(x, p32, sq, b_sq, b, delta, four, n, values, exact, *out["pruned"])

    out["blocks"] = (np.empty(x.shape[0] * n, np.int64), np.empty(x.shape[0] * n))

    def blocks(vector=False):
        norms()
        for g, d in enumerate(descriptors):
            np.matmul(d.astype(np.float32), b32.T, out=p32[bounds[g] : bounds[g + 1]])
        delta = bound(sq, b, x.shape[1])
        found["union"] = pruned_rank_blocks(x, p32, sq, b_sq, b, delta, four, n, values, vector,
                                            *out["blocks"])

    fns = {"today": today, "pruned": pruned, "pruned, no exact products": lambda: pruned(False),
           "pruned, 8-row blocks": blocks, "pruned, 8-row blocks, vector IR": lambda: blocks(True)}
    with limited_threads(1, numba_threads=False, user_api="blas"):
        today()
        pruned()
        same = all(np.array_equal(a, c) for a, c in zip(out["today"], out["pruned"]))
        same_blocks = []
        for vector in (False, True):
            out["blocks"][0][:] = -1  # a kernel that wrote nothing would not pass
            blocks(vector)
            same_blocks.append(all(np.array_equal(a, c) for a, c in zip(out["today"], out["blocks"])))
        times = {k: [] for k in fns}
        for _ in range(rounds):
            for k, fn in fns.items():
                t0 = clock()
                fn()
                times[k].append(clock() - t0)
    print(f"  same words as today: {same} (8-row blocks, scalar / vector: {same_blocks}); candidates per row "
          f"{found['candidates'] / x.shape[0]:.2f}, per 8 rows {8 * found['union'] / x.shape[0]:.1f}")
    for k, ts in times.items():
        ts = np.asarray(ts) * 1e3
        print(f"  {k:<34}{np.median(ts):8.1f} ms [{ts.min():.1f}..{ts.max():.1f}]")
