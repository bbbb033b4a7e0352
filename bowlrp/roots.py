"""Bracketed root search on many segments at once: the Taylor step's search for f(x0) = 0.

Both branches expand a score f at a root x0 on a segment between the explained input x and a
reference z of the opposite sign (Bach et al. 2015, Eqs 17-18): the BoW model
(:mod:`bowlrp.bow.decompose.taylor`) and ``nets.TaylorDecomposition``. On the segment,
g(a) = f(a x + (1 - a) z) changes sign between a = 0 and a = 1, so a root is bracketed.

The method is the Anderson-Bjorck variant of regula falsi (a secant step that always keeps a bracket;
when the same end is replaced twice in a row, the value kept at the other end is scaled by
m = 1 - g(c)/g(replaced), or halved when m <= 0, so the search does not stall on one side) with a
bisection safeguard: if two secant steps in a row fail to halve |g|, the next step bisects.
Convergence is superlinear on smooth g, and on any g either |g| halves or the bracket does at least
every third step, so the search always ends; on the BoW Taylor step roots to |g| <= 1e-10 take about
5 evaluations (at most 6 on the lfw faces) where bisection takes 35-60. Each segment's sequence of
points depends only on its own values, so a segment's root does not depend on which other segments
are searched with it.

The method lives in three numba functions on one segment of a :class:`SearchState` (named arrays,
one entry per segment: :func:`start_segment`, :func:`propose_point`, :func:`accept_point`). Two
drivers run them:

* :func:`bracketed_roots` for any Python ``evaluate``: every round evaluates all still-active
  segments in ONE call of the user's function (its cost amortised over the segments), the
  bookkeeping of a round in one numba call;
* numba kernels that evaluate g themselves (the BoW Taylor step,
  :mod:`bowlrp.bow.decompose._taylor_kernels`), which call the three functions segment by segment,
  with no Python between the rounds.

Both give the same points and values, bit for bit, since they run the same operations per segment.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from bowlrp.jit import jit_serial

__all__ = ["bracketed_roots", "check_ends", "SearchState", "new_state", "start_segment", "propose_point",
           "accept_point"]

_EPS4 = 4.0 * np.finfo(np.float64).eps


#: The search state of n segments, one entry per segment: a named tuple of arrays, which numba takes as
#: it takes a plain tuple (a struct of array pointers: its fields cost nothing to pass or read)
SearchState = namedtuple("SearchState", ["lo", "hi", "lo_g", "hi_g", "best_a", "best_g", "side", "stalls"])
SearchState.__doc__ = """The state of the bracketed search on n segments (arrays of length n, filled by
:func:`start_segment`).

Attributes
----------
lo, hi : float64
    The bracket [lo, hi] in a (the segment parameter).
lo_g, hi_g : float64
    g at the bracket's ends (scaled by the Anderson-Bjorck step).
best_a, best_g : float64
    The point of smallest |g| seen so far and g there.
side : int8
    Which end the last step replaced: -1 lo, +1 hi, 0 none yet.
stalls : int8
    Secant steps in a row that did not halve |g|.
"""


@jit_serial(error_model="numpy")
def new_state(n):
    """A :class:`SearchState` for ``n`` segments (zeros; :func:`start_segment` sets a segment up).

    Compiled, so a numba kernel builds the state of its segments the same way as Python does."""
    return SearchState(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n),
                       np.zeros(n, np.int8), np.zeros(n, np.int8))


@jit_serial(error_model="numpy")
def start_segment(j, g0, g1, tol, state):
    """Segment j starts on [0, 1] with g(0) = g0, g(1) = g1; returns whether it must be searched
    (the best end point, the one of smaller |g|, does not meet ``tol``)."""
    state.lo[j], state.hi[j], state.lo_g[j], state.hi_g[j] = 0.0, 1.0, g0, g1
    first = abs(g0) <= abs(g1)
    state.best_a[j] = 0.0 if first else 1.0
    state.best_g[j] = g0 if first else g1
    state.side[j], state.stalls[j] = 0, 0
    return abs(state.best_g[j]) > tol


@jit_serial(error_model="numpy")
def propose_point(j, state):
    """The next point c of segment j and whether it bisects: the secant point of the bracket, or its
    middle after two secant steps without progress or when the secant leaves the bracket."""
    a0, a1, f0, f1 = state.lo[j], state.hi[j], state.lo_g[j], state.hi_g[j]
    width = a1 - a0
    secant = a1 - f1 * width / (f1 - f0)  # NaN or inf for a flat bracket: the tests below bisect then
    bisect = state.stalls[j] >= 2 or not (secant > a0) or not (secant < a1)
    return (0.5 * (a0 + a1) if bisect else secant), bisect


@jit_serial(error_model="numpy")
def accept_point(j, c, gc, bisect, tol, state):
    """Segment j takes g(c) = gc at its proposed point c; returns whether it must go on."""
    best_g = state.best_g
    shrank = abs(gc) <= 0.5 * abs(best_g[j])  # progress is measured on |g|, not on the bracket
    if abs(gc) < abs(best_g[j]):
        state.best_a[j], best_g[j] = c, gc
    f0, f1 = state.lo_g[j], state.hi_g[j]
    # keep the bracket: c replaces the end whose value has the sign of g(c). Anderson-Bjorck: the
    # same end replaced twice in a row -> scale the value kept at the other end by
    # m = 1 - g(c) / g(replaced end) (0.5 when m <= 0), so the next secant lands past the root
    if (gc > 0) == (f1 > 0):
        m = 1.0 - gc / f1
        state.hi[j], state.hi_g[j] = c, gc
        if state.side[j] == 1:
            state.lo_g[j] *= m if m > 0 else 0.5
        state.side[j] = 1
    else:
        m = 1.0 - gc / f0
        state.lo[j], state.lo_g[j] = c, gc
        if state.side[j] == -1:
            state.hi_g[j] *= m if m > 0 else 0.5
        state.side[j] = -1
    state.stalls[j] = 0 if (bisect or shrank) else state.stalls[j] + 1
    if abs(best_g[j]) <= tol:
        return False
    return abs(gc) > tol and state.hi[j] - state.lo[j] > _EPS4 and gc != 0.0


# The drivers of bracketed_roots take the state's arrays one by one and name them inside: numba's
# dispatch types a named tuple argument field by field on every call (7 % more time for the whole
# search of 200 segments than eight plain arrays), while building it in compiled code costs nothing


@jit_serial(error_model="numpy")
def _start_all(g0, g1, tol, lo, hi, lo_g, hi_g, best_a, best_g, side, stalls, active):
    state = SearchState(lo, hi, lo_g, hi_g, best_a, best_g, side, stalls)
    for j in range(g0.shape[0]):
        active[j] = start_segment(j, g0[j], g1[j], tol, state)


@jit_serial(error_model="numpy")
def _propose_all(idx, lo, hi, lo_g, hi_g, best_a, best_g, side, stalls, c, bisect):
    state = SearchState(lo, hi, lo_g, hi_g, best_a, best_g, side, stalls)
    for k in range(idx.shape[0]):
        c[k], bisect[k] = propose_point(idx[k], state)


@jit_serial(error_model="numpy")
def _accept_all(idx, c, gc, bisect, tol, lo, hi, lo_g, hi_g, best_a, best_g, side, stalls, active):
    state = SearchState(lo, hi, lo_g, hi_g, best_a, best_g, side, stalls)
    for k in range(idx.shape[0]):
        j = idx[k]
        active[j] = accept_point(j, c[k], gc[k], bisect[k], tol, state)


def bracketed_roots(evaluate, g0, g1, tol=1e-10, max_iter=100):
    """Find a in [0, 1] with |g_j(a)| <= tol on every segment j where g_j(0), g_j(1) differ in sign.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(a, index) -> g``: the values g_index[k](a[k]) (float arrays of the same length) of
        the segments ``index`` at the points ``a``; called once per iteration for all active segments.
    g0, g1 : array-like of shape (n,)
        g_j(0) and g_j(1); for each j they must have opposite signs (or one of them be 0).
    tol : float, default=1e-10
        A segment stops when |g| <= tol (or when its bracket is down to a few ulps).
    max_iter : int, default=100
        Evaluations per segment at most.

    Returns
    -------
    a : ndarray of shape (n,)
        The point of smallest |g| seen on each segment (an end point when it already met ``tol``).
    g : ndarray of shape (n,)
        g_j(a_j).

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.roots import bracketed_roots
    >>> c = np.array([0.2, 0.7])
    >>> a, g = bracketed_roots(lambda a, idx: a**3 - c[idx]**3, -c**3, 1 - c**3)
    >>> np.allclose(a, c), bool(np.all(np.abs(g) <= 1e-10))
    (True, True)
    """
    g0 = np.array(g0, dtype=np.float64).ravel()
    g1 = np.array(g1, dtype=np.float64).ravel()
    check_ends(g0, g1)
    state = new_state(g0.size)
    active = np.empty(g0.size, bool)
    _start_all(g0, g1, float(tol), *state, active)
    for _ in range(int(max_iter)):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        c, bisect = np.empty(idx.size), np.empty(idx.size, bool)
        _propose_all(idx, *state, c, bisect)
        gc = np.asarray(evaluate(c, idx), dtype=np.float64).ravel()
        if gc.shape != c.shape or not np.all(np.isfinite(gc)):
            raise ValueError("the function evaluated on the segments returned NaN, inf or a wrong shape")
        _accept_all(idx, c, gc, bisect, float(tol), *state, active)
    return state.best_a, state.best_g


def check_ends(g0, g1):
    """ValueError unless g0, g1 (float arrays) have one length, are finite and bracket a root."""
    if g0.shape != g1.shape:
        raise ValueError(f"g0 and g1 must have the same length, got {g0.shape} and {g1.shape}")
    # (the arrays' own reductions: numpy's np.all / np.any wrappers cost more than the test itself)
    if not (np.isfinite(g0).all() and np.isfinite(g1).all()):
        raise ValueError("the end values g(0), g(1) contain NaN or inf")
    if (g0 * g1 > 0).any():
        raise ValueError("every segment needs end values of opposite sign (a bracketed root)")
