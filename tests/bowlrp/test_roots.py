"""The shared bracketed root search (bowlrp.roots) of the Taylor step of both branches."""

from __future__ import annotations

import numpy as np
import pytest

from bowlrp.roots import bracketed_roots


def _counted(fn):
    calls = []

    def evaluate(a, idx):
        calls.append(len(idx))
        return fn(a, idx)

    return evaluate, calls


def test_roots_are_roots_within_tolerance_in_few_evaluations():
    rng = np.random.default_rng(0)
    c = rng.uniform(0.05, 0.95, size=50)
    k = rng.uniform(1, 8, size=50)
    # smooth, strongly non-linear, monotone on [0, 1]: tanh(k (a - c))
    evaluate, calls = _counted(lambda a, idx: np.tanh(k[idx] * (a - c[idx])))
    a, g = bracketed_roots(evaluate, np.tanh(-k * c), np.tanh(k * (1 - c)), tol=1e-10)
    assert np.all(np.abs(g) <= 1e-10)
    np.testing.assert_allclose(a, c, atol=1e-9)
    np.testing.assert_array_equal(g, np.tanh(k * (a - c)))
    # bisection needs about 33 halvings for 1e-10; the safeguarded secant far fewer
    assert len(calls) <= 16 and sum(calls) / 50 <= 10


def test_each_segment_is_independent_of_the_others():
    rng = np.random.default_rng(1)
    c = rng.uniform(0.1, 0.9, size=12)

    def f(a, idx):
        return (a - c[idx]) ** 3 + 0.1 * (a - c[idx])

    g0, g1 = f(np.zeros(12), np.arange(12)), f(np.ones(12), np.arange(12))
    together = bracketed_roots(f, g0, g1)
    for j in range(12):
        alone = bracketed_roots(lambda a, idx, j=j: f(a, idx + j), g0[j:j + 1], g1[j:j + 1])
        assert alone[0][0] == together[0][j] and alone[1][0] == together[1][j]


def test_hard_functions_still_converge_no_slower_than_a_third_of_bisection():
    # a flat plateau next to a steep wall defeats plain regula falsi; the bisection safeguard keeps
    # the bracket shrinking
    def f(a, idx):
        return np.where(a < 0.999, -1e-3 * (1 - a), (a - 0.999) * 1e4)

    evaluate, calls = _counted(f)
    a, g = bracketed_roots(evaluate, f(np.zeros(1), [0]), f(np.ones(1), [0]), tol=1e-10, max_iter=200)
    assert abs(g[0]) <= 1e-10 and len(calls) <= 3 * 60


def test_end_points_that_are_roots_and_bad_input():
    a, g = bracketed_roots(lambda a, idx: a, [0.0, -1.0], [1.0, 0.0])
    np.testing.assert_array_equal(a, [0.0, 1.0])
    np.testing.assert_array_equal(g, [0.0, 0.0])
    with pytest.raises(ValueError, match="opposite sign"):
        bracketed_roots(lambda a, idx: a, [1.0], [2.0])
    with pytest.raises(ValueError, match="NaN"):
        bracketed_roots(lambda a, idx: a, [np.nan], [1.0])
    with pytest.raises(ValueError, match="NaN, inf or a wrong shape"):
        bracketed_roots(lambda a, idx: np.full(len(a), np.nan), [-1.0], [1.0])
    with pytest.raises(ValueError, match="same length"):
        bracketed_roots(lambda a, idx: a, [-1.0, -1.0], [1.0])


def test_both_branches_use_it():
    # the BoW Taylor step and nets.TaylorDecomposition run this search; the network one says what its
    # references are for instead of failing on a missing argument
    import nets
    from bowlrp.bow.decompose import taylor

    assert taylor.bracketed_roots is bracketed_roots
    from nets import attribution

    assert attribution.bracketed_roots is bracketed_roots
    model = nets.Sequential([nets.Dense(np.ones((1, 3)), np.array([-1.0]))])
    with pytest.raises(TypeError, match="references=.*training samples"):
        nets.TaylorDecomposition(model)


# ----------------------------------------------------------------------------------------------------
# the numba bookkeeping (start_segment / propose_point / accept_point) against a slow numpy twin: the
# same method written with whole-array numpy operations, round by round
# ----------------------------------------------------------------------------------------------------
def _numpy_twin(evaluate, g0, g1, tol=1e-10, max_iter=100):
    """Anderson-Bjorck regula falsi with the bisection safeguard, vectorised over the segments."""
    lo_g, hi_g = np.array(g0, dtype=np.float64), np.array(g1, dtype=np.float64)
    n = lo_g.size
    lo, hi = np.zeros(n), np.ones(n)
    first = np.abs(lo_g) <= np.abs(hi_g)
    best_a, best_g = np.where(first, 0.0, 1.0), np.where(first, lo_g, hi_g)
    side, stalls = np.zeros(n, np.int8), np.zeros(n, np.int8)
    active = np.abs(best_g) > tol
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        a0, a1, f0, f1 = lo[idx], hi[idx], lo_g[idx], hi_g[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            secant = a1 - f1 * (a1 - a0) / (f1 - f0)
        bisect = (stalls[idx] >= 2) | ~(secant > a0) | ~(secant < a1)
        c = np.where(bisect, 0.5 * (a0 + a1), secant)
        gc = evaluate(c, idx)
        shrank = np.abs(gc) <= 0.5 * np.abs(best_g[idx])
        better = np.abs(gc) < np.abs(best_g[idx])
        best_a[idx[better]], best_g[idx[better]] = c[better], gc[better]
        to_hi = (gc > 0) == (f1 > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where(to_hi, 1.0 - gc / f1, 1.0 - gc / f0)
        m = np.where(m > 0, m, 0.5)
        h, lidx = idx[to_hi], idx[~to_hi]
        hi[h], hi_g[h] = c[to_hi], gc[to_hi]
        lo[lidx], lo_g[lidx] = c[~to_hi], gc[~to_hi]
        lo_g[h[side[h] == 1]] *= m[to_hi][side[h] == 1]
        hi_g[lidx[side[lidx] == -1]] *= m[~to_hi][side[lidx] == -1]
        side[h], side[lidx] = 1, -1
        stalls[idx] = np.where(bisect | shrank, 0, stalls[idx] + 1)
        active[idx] = (np.abs(gc) > tol) & (hi[idx] - lo[idx] > 4 * np.finfo(float).eps) & (gc != 0.0)
        active[idx[np.abs(best_g[idx]) <= tol]] = False
    return best_a, best_g


def test_numba_method_matches_its_numpy_twin_bit_for_bit():
    from tests.kernel_twins import assert_matches_twin

    rng = np.random.default_rng(5)
    cases = []
    for shape in ("tanh", "wall", "power"):
        n = 40
        c, k, p = rng.uniform(0, 1, n), rng.uniform(0.5, 30, n), rng.integers(1, 4, n)

        def f(a, idx, shape=shape, c=c, k=k, p=p):
            if shape == "tanh":
                return np.tanh(k[idx] * (a - c[idx]))
            if shape == "wall":
                return np.where(a < c[idx], -1e-3 * (c[idx] - a), (a - c[idx]) * 1e4 * k[idx])
            return np.sign(a - c[idx]) * np.abs(a - c[idx]) ** p[idx] + 1e-3 * (a - c[idx])

        g0, g1 = f(np.zeros(n), np.arange(n)), f(np.ones(n), np.arange(n))
        for tol, max_iter in ((1e-10, 100), (1e-14, 7), (0.0, 200)):
            cases.append((f, g0, g1, tol, max_iter))
    assert_matches_twin(bracketed_roots, _numpy_twin, cases, rtol=0.0, atol=0.0)


def test_search_state_has_named_fields_the_steps_read_and_write():
    from bowlrp.roots import SearchState, accept_point, new_state, propose_point, start_segment

    state = new_state(3)
    assert isinstance(state, SearchState)
    assert state._fields == ("lo", "hi", "lo_g", "hi_g", "best_a", "best_g", "side", "stalls")
    assert [a.dtype for a in state] == [np.float64] * 6 + [np.int8] * 2
    assert all(a.shape == (3,) for a in state)
    # g(a) = 3 a - 1 on segment 1: bracket [0, 1], values -1 and 2; the smaller |g| end is a = 0
    assert start_segment(1, -1.0, 2.0, 1e-10, state)
    assert (state.lo[1], state.hi[1], state.lo_g[1], state.hi_g[1]) == (0.0, 1.0, -1.0, 2.0)
    assert (state.best_a[1], state.best_g[1], state.side[1], state.stalls[1]) == (0.0, -1.0, 0, 0)
    c, bisect = propose_point(1, state)
    assert c == 1.0 - 2.0 * 1.0 / 3.0 and not bisect  # the secant point of the bracket
    assert not accept_point(1, c, 3.0 * c - 1.0, bisect, 1e-10, state)  # a root to round-off: done
    assert state.best_a[1] == c and state.side[1] in (-1, 1)
    assert state.lo[0] == state.lo[2] == 0.0  # the other segments untouched
    with pytest.raises(AttributeError):
        state.lo = np.zeros(3)  # the fields are fixed; their arrays are the state
