"""Step 3 for differentiable kernels: the Taylor expansion at a root (Bach et al. 2015, Eqs 17-18, 25).

R3_d = (x_d - x0_d) df/dz_d(x0) at a root x0 (f(x0) = 0) on a segment between x and a training BoW
z of the opposite sign. The root on each segment comes from the shared bracketed root search of the
core (:mod:`bowlrp.roots`, safeguarded Anderson-Bjorck regula falsi): for the built-in kernels every
segment's whole search runs in one numba call (:mod:`._taylor_kernels`, f evaluated as
:meth:`KernelExpansion.values` evaluates it), for a registered kernel through
:func:`bowlrp.roots.bracketed_roots` on ``KernelExpansion.values`` (the same points and numbers). The
gradient comes from the kernel registry.

EXTENSIONS: when no candidate has the opposite sign, the expansion point is the candidate with the
smallest |f| (``bracketed = False``, its f value reported); when f(x) = 0, x is its own root and
R3 = 0. The residual rho = f(x) - sum R3 is always reported.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

from bowlrp.bow import _kernels as _gram_kernels
from bowlrp.bow.decompose import _taylor_kernels as _tk
from bowlrp.bow.decompose.expansion import KernelExpansion
from bowlrp.bow.kernels import channel_bounds, kernel_spec
from bowlrp.jit import split_batch
from bowlrp.roots import bracketed_roots, check_ends

__all__ = ["TaylorResult", "taylor_relevance", "find_root", "find_roots"]


@dataclass
class TaylorResult:
    """Step 3 by a first-order Taylor expansion at a root (Eq 25) for one BoW vector.

    Attributes
    ----------
    relevance : ndarray (V,)
        R3_d = (x_d - x0_d) df/dz_d(x0) (averaged over the ``roots`` used when more than one).
    root : ndarray (V,)
        The best root x0 (smallest |residual|).
    f_root : float
        f(x0) (|f(x0)| <= the root tolerance when a bracketing candidate existed).
    score : float
        f(x).
    residual : float
        rho = f(x) - relevance.sum(): what the first-order expansion does not explain.
    roots : ndarray (r, V)
        The roots whose relevance was averaged.
    candidate : int
        Index (into the candidates given) the best root was found from, -1 if x itself is a root.
    bracketed : bool
        False when no candidate of the opposite sign existed; the root is then the candidate with
        the smallest |f| (EXTENSION) and f_root says how far from a root it is.
    """

    relevance: np.ndarray
    root: np.ndarray
    f_root: float
    score: float
    residual: float
    roots: np.ndarray
    candidate: int
    bracketed: bool

    def negated(self) -> TaylorResult:
        """The result for -f: the same roots, every value and relevance negated."""
        return TaylorResult(-self.relevance, self.root, -self.f_root, -self.score, -self.residual, self.roots,
                            self.candidate, self.bracketed)


def taylor_relevance(expansion: KernelExpansion, x, root) -> tuple[np.ndarray, float]:
    """R3 = (x - x0) * grad f(x0) and the residual rho = f(x) - sum R3, for a given root x0.

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.decompose import KernelExpansion, taylor_relevance
    >>> f = KernelExpansion("linear", np.array([[1.0, 2.0]]), np.array([1.0]), -1.0)
    >>> R3, rho = taylor_relevance(f, np.array([1.0, 1.0]), np.array([1.0, 0.0]))
    >>> R3, abs(rho) < 1e-12
    (array([0., 2.]), True)
    """
    x = expansion.check_points(x)[0]
    x0 = expansion.check_points(root)[0]
    rel = (x - x0) * expansion.gradient(x0)
    return rel, float(expansion.decision(x)[0] - rel.sum())


def find_root(expansion: KernelExpansion, x, candidates, n_candidates=16, n_roots=1, tol=1e-10,
              max_iter=200, random_state=None, candidate_scores=None) -> TaylorResult:
    """Step 3 for differentiable kernels: root search (Eqs 17-18) and Taylor relevance (Eq 25).

    Candidates z_j of the opposite sign (f(x) f(z_j) < 0) are drawn (seeded) from ``candidates``;
    on each segment a x + (1 - a) z_j, a in [0, 1], the bracketed root search
    (:func:`bowlrp.roots.bracketed_roots`) finds a point with |f| <= ``tol``. Each root x0 gives
    R3 = (x - x0) grad f(x0) and a residual rho = f(x) - sum R3; the root with the smallest |rho| is
    kept, or the relevance is averaged over the ``n_roots`` best. When no candidate has the opposite
    sign (EXTENSION) the candidate with the smallest |f| is used as the expansion point and
    ``bracketed`` is False; when f(x) = 0, x is its own root and R3 = 0.

    Parameters
    ----------
    expansion : KernelExpansion
        A differentiable kernel (``"exp_chi2"``, ``"rbf"``, or ``"linear"``: the expansion is then
        exact, rho ~ 0).
    x : array-like of shape (V,)
    candidates : array-like of shape (n, V)
        Typically the training BoW vectors (``BoWClassifier.train_bows_``).
    n_candidates : int, default=16
        How many opposite-sign candidates to search towards (drawn at random when there are more).
    n_roots : int, default=1
        Average the relevance over the ``n_roots`` roots with the smallest |rho| (r of the paper).
    tol : float, default=1e-10
        The root search stops on a segment when |f| <= tol.
    max_iter : int, default=200
        Evaluations per segment at most (the safeguarded secant search needs about 6-12).
    random_state : int, RandomState or None
        Seeds the draw of the candidates (only used when there are more than ``n_candidates``).
    candidate_scores : array-like of shape (n,), optional
        f(candidates), when already known (``BoWClassifier`` keeps them from fitting).

    Returns
    -------
    TaylorResult

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.decompose import KernelExpansion, find_root
    >>> rng = np.random.default_rng(0)
    >>> S = rng.random((6, 4))
    >>> f = KernelExpansion("rbf", S, np.array([1.0, 1, 1, -1, -1, -1]), 0.0, gamma=2.0)
    >>> res = find_root(f, S[0], S, random_state=0)
    >>> bool(abs(res.f_root) <= 1e-10), bool(abs(res.score - res.relevance.sum() - res.residual) < 1e-12)
    (True, True)
    """
    return find_roots(expansion, x, candidates, n_candidates, n_roots, tol, max_iter, random_state,
                      candidate_scores)[0]


def find_roots(expansion: KernelExpansion, X, candidates, n_candidates=16, n_roots=1, tol=1e-10,
               max_iter=200, random_state=None, candidate_scores=None) -> list[TaylorResult]:
    """:func:`find_root` for every row of X, with one root search over all their segments at once.

    Each row's candidates are drawn as in :func:`find_root` (an int seed seeds every row's draw on
    its own; a RandomState instance is consumed row after row), and every segment's search depends
    only on its own values, so a row's result does not depend on the other rows.

    Returns
    -------
    list of TaylorResult, one per row of X
    """
    if not kernel_spec(expansion.kernel).differentiable:
        raise ValueError(f"the Taylor path needs a differentiable kernel, got {expansion.kernel!r}")
    if int(n_candidates) < 1 or int(n_roots) < 1:
        raise ValueError(f"n_candidates and n_roots must be >= 1, got {n_candidates}, {n_roots}")
    X = np.ascontiguousarray(expansion.check_points(X))
    C = np.ascontiguousarray(expansion.check_points(candidates))
    if C.shape[0] == 0:
        raise ValueError("the root search needs at least one candidate BoW vector")
    model = _numba_model(expansion)
    if candidate_scores is None:
        fc = expansion.decision(C)
    else:
        fc = np.asarray(candidate_scores, dtype=np.float64).ravel()
        if fc.shape != (C.shape[0],):
            raise ValueError(f"got {fc.size} candidate scores for {C.shape[0]} candidates")
    if model is None:
        fX = expansion.decision(X)
    else:  # the numbers of expansion.decision(X), without the Gram call's set-up
        fX = np.empty(X.shape[0])
        _tk.point_values(X, *model, fX)
    k = int(n_candidates)
    if random_state is None:
        def draw(n):
            return check_random_state(None).permutation(n)[:k]
    elif isinstance(random_state, (int, np.integer)):
        # an int seed gives every row the draw RandomState(seed).choice(n, k, replace=False) makes,
        # i.e. the first k of RandomState(seed).permutation(n): computed once per (seed, n, k) and
        # process (seeding a RandomState costs 0.2 ms, as much as the root search of a few images)
        def draw(n, seed=int(random_state)):
            return _seeded_draw(seed, n, k)
    else:
        rng = check_random_state(random_state)  # a RandomState instance is consumed row after row

        def draw(n):
            return rng.permutation(n)[:k]
    results: list = [None] * X.shape[0]
    searched, picks = [], []  # the rows searched, and each one's candidates (its segments)
    opposite_sign = fc[None, :] * fX[:, None] < 0  # every row's test at once
    # with an int seed a row's picks depend only on its set of opposite-sign candidates: rows with the
    # same set (all rows of one sign, in practice) share one draw
    same_set: dict | None = {} if isinstance(random_state, (int, np.integer)) else None
    fx_all = fX.tolist()  # (Python floats: the loops over the rows run under the GIL)
    for r, fx in enumerate(fx_all):
        if fx == 0.0:
            x = X[r]
            results[r] = TaylorResult(np.zeros_like(x), x.copy(), 0.0, 0.0, 0.0, x[None, :].copy(), -1, True)
            continue
        key = None if same_set is None else opposite_sign[r].tobytes()
        if key is not None and key in same_set:
            searched.append(r)
            picks.append(same_set[key])
            continue
        opposite = np.flatnonzero(opposite_sign[r])
        if opposite.size == 0:
            # No bracket: expand around the candidate closest to a root (reported via f_root, bracketed).
            j = int(np.argmin(np.abs(fc)))
            rel, rho = taylor_relevance(expansion, X[r], C[j])
            results[r] = TaylorResult(rel, C[j].copy(), float(fc[j]), fx, rho, C[j][None, :].copy(), j, False)
            continue
        if opposite.size > n_candidates:
            opposite = np.sort(opposite[draw(opposite.size)])
        searched.append(r)
        picks.append(opposite)
        if key is not None:
            same_set[key] = opposite
    if not searched:
        return results
    counts = np.array([p.size for p in picks], dtype=np.int64)  # >= 1 each
    rows = np.repeat(np.array(searched, dtype=np.int64), counts)
    picks = np.concatenate(picks)
    # every search starts from finite end values (the numba search does not check them itself): an
    # infinite candidate score, or f(x) overflowing, is a clear error, never a NaN root
    check_ends(fc[picks], fX[rows])

    def search(seg_rows, seg_picks):
        """Roots, f(roots), relevance and residuals of some segments: each depends on its own segment
        only."""
        # a = 0 is the candidate (value f(z), opposite sign), a = 1 is x (value f(x))
        if model is None:  # a registered kernel: the Python driver of the same search
            Xs, Zs = X[seg_rows], C[seg_picks]

            def on_segments(a, index):  # f(a x + (1 - a) z) for the segments still searched
                return expansion.values(a[:, None] * Xs[index] + (1.0 - a[:, None]) * Zs[index])

            a, _ = bracketed_roots(on_segments, fc[seg_picks], fX[seg_rows], tol=tol, max_iter=max_iter)
            roots = a[:, None] * Xs + (1.0 - a[:, None]) * Zs
            rels = (Xs - roots) * expansion.gradient(roots)
            return roots, expansion.values(roots), rels, fX[seg_rows] - rels.sum(axis=1)
        # every segment's whole search in one numba call (the same numbers)
        roots, froots = np.empty((seg_rows.size, X.shape[1])), np.empty(seg_rows.size)
        failed = np.zeros(seg_rows.size, bool)
        _tk.segment_roots(X, C, seg_rows, seg_picks, fc[seg_picks], fX[seg_rows], *model, float(tol),
                          int(max_iter), roots, froots, failed)
        if failed.any():
            raise ValueError("the kernel expansion is not finite on a segment of the root search")
        # the gradient kernel of expansion.gradient, without re-validating the model and the roots, then
        # the relevance and residuals of the Python path above in one pass (the same numbers)
        SV, _, _, _, coef, _, bounds, weights, code, gamma = model
        grad = np.zeros(roots.shape)
        _gram_kernels.expansion_gradient(roots, SV, coef, bounds, weights, code, gamma, grad)
        rels, rhos = np.empty(roots.shape), np.empty(seg_rows.size)
        _tk.segment_relevance(X, seg_rows, roots, grad, fX, rels, rhos)
        return roots, froots, rels, rhos

    # the segments in contiguous parts on threads (the searches, kernel values and gradients of a
    # part run there; about ten evaluations of f per segment, each n_sv x V kernel terms)
    work = 10.0 * rows.size * expansion.support_vectors.size
    # with the residuals rho = f(x) - sum R3 of every segment (each row of rels summed on its own, as
    # numpy sums a row)
    roots, froots, rels, rhos = split_batch(search, rows, picks, work=work, min_rows=8)
    # a row's segments are contiguous (built row after row): its block of the arrays, by offsets. One
    # stable sort by (row, |rho|): within a row's block, the order of a stable argsort of |rho|
    order = np.lexsort((np.abs(rhos), rows))
    ends = np.cumsum(counts)
    starts = ends - counts
    n_best = int(n_roots)
    if n_best == 1:
        # every row's best segment at once; its "mean" as numpy takes the mean of one row, (0.0 + R) / 1
        # (a -0.0 becomes 0.0, nothing else changes), and the residuals row by row as numpy sums a row
        firsts = order[starts]
        rel_all = 0.0 + rels[firsts]
        rho_all = fX[rows[starts]] - rel_all.sum(axis=1)
        # (Python numbers taken once: this loop runs under the GIL)
        for i, (k0, r, f_root, j, rho) in enumerate(zip(firsts.tolist(), searched, froots[firsts].tolist(),
                                                         picks[firsts].tolist(), rho_all.tolist())):
            results[r] = TaylorResult(rel_all[i].copy(), roots[k0].copy(), f_root, fx_all[r], rho,
                                      roots[k0:k0 + 1].copy(), j, True)
        return results
    for a, b in zip(starts.tolist(), ends.tolist()):
        r, fx = int(rows[a]), float(fX[rows[a]])
        best = order[a:min(b, a + n_best)]
        rel = rels[best].mean(axis=0)
        k0 = int(best[0])
        results[r] = TaylorResult(rel, roots[k0].copy(), float(froots[k0]), fx, float(fx - rel.sum()),
                                  roots[best], int(picks[k0]), True)
    return results


@functools.lru_cache(maxsize=256)
def _seeded_draw(seed, n, k):
    """The first k of ``RandomState(seed).permutation(n)`` (read-only: shared by every call)."""
    picks = check_random_state(seed).permutation(n)[:k]
    picks.flags.writeable = False
    return picks


def _numba_model(expansion):
    """The arguments of the root-search kernel after the segments' (support vectors, their non-zero
    layout and channel sums, coefficients, intercept, channel bounds and weights, kernel code, gamma),
    or None for a registered kernel without a numba code. Built on every call (a few microseconds):
    the layout is derived from the support vectors, which a kept copy would not follow if they were
    changed in place."""
    code = kernel_spec(expansion.kernel).code
    if code not in (_gram_kernels.EXP_CHI2, _gram_kernels.RBF, _gram_kernels.LINEAR):
        return None
    SV = expansion.support_vectors
    bounds = channel_bounds(SV.shape[1], expansion.channel_slices)
    idx, start, sums = _tk.support_layout(SV, bounds)
    weights = np.ascontiguousarray(expansion.channel_weights, dtype=np.float64)
    gamma = float(expansion.gamma) if expansion.gamma is not None else 0.0
    return (SV, idx, start, sums, expansion.coef, float(expansion.intercept), bounds, weights, code, gamma)
