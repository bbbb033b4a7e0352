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
    """A deep copy that keeps read-only arrays read-only: numba compiles a separate specialisation of
    a kernel for read-only and for writeable arrays, so a writeable copy of an argument the code
    under test always passes read-only (cached SIFT geometry and taps) compiled both builds once
    more on every cold test run (seconds per kernel) and tested a specialisation nobody calls.
    ``memo`` is shared by the arguments of one call, so arguments that were one array stay one."""
    out = copy.deepcopy(value, memo)
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        out.flags.writeable = False
    return out


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
