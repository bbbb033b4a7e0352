"""The test pattern every numba kernel follows: compare it with a slow, obviously correct numpy twin.

Usage::

    from tests.kernel_twins import assert_matches_twin
    assert_matches_twin(fast_function, slow_twin, cases, rtol=1e-12)

``cases`` is an iterable of argument tuples (or dicts of keyword arguments). Both functions are
called on copies of the arguments, so a kernel that writes into its inputs cannot fool the check.
"""

from __future__ import annotations

import copy

import numpy as np


def _copy(value, memo):
    """A deep copy of the writeable arrays in ``value``; read-only arrays (also inside tuples, lists
    and dicts) are passed as they are.

    A kernel cannot write into a read-only array (numba refuses to compile the store), so those need
    no copy, and a copy would test another specialisation than the one production runs: numba compiles
    a kernel separately for read-only and writeable arrays and for each layout (a writeable copy of the
    read-only SIFT layout arrays, or a contiguous copy of a stride-0 broadcast view, compiled the
    parallel and the serial build once more on every cold test run, seconds per kernel, to test a
    specialisation nobody calls). ``memo`` is shared by the arguments of one call, so arguments that
    were one array stay one."""
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        return value
    if isinstance(value, (tuple, list)):
        items = [_copy(v, memo) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        return {k: _copy(v, memo) for k, v in value.items()}
    return copy.deepcopy(value, memo)


def _call(func, case):
    memo = {}
    if isinstance(case, dict):
        return func(**{k: _copy(v, memo) for k, v in case.items()})
    return func(*(_copy(v, memo) for v in case))


def assert_matches_twin(fast, slow, cases, rtol=1e-12, atol=1e-12):
    """Assert ``fast(*case)`` equals ``slow(*case)`` for every case, shape, dtype kind and values."""
    n = 0
    for case in cases:
        got = _call(fast, case)
        want = _call(slow, case)
        got_t = got if isinstance(got, tuple) else (got,)
        want_t = want if isinstance(want, tuple) else (want,)
        assert len(got_t) == len(want_t), "kernel and twin return different numbers of outputs"
        for g, w in zip(got_t, want_t):
            g = np.asarray(g)
            w = np.asarray(w)
            assert g.shape == w.shape, f"shape {g.shape} != twin's {w.shape}"
            assert np.all(np.isfinite(g)), "kernel returned non-finite values"
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
        n += 1
    assert n > 0, "no cases were given to compare"
