"""Tiny numba kernels for the compile-ahead protocol tests (``tests/bowlrp/test_compile_ahead.py``).

Each test uses kernels of its own (a fresh dispatcher and cache entry), importable by module path in
the compile-ahead child process. ``F64`` is numba's spelling of their float64 argument type.
"""

from __future__ import annotations

from bowlrp.jit import _renamed, jit_serial

F64 = "Array(float64, 1, 'C', False, aligned=True)"
I64 = "Array(int64, 1, 'C', False, aligned=True)"


def _add_one(x, out):
    for i in range(x.shape[0]):
        out[i] = x[i] + 1.0


NAMES = [f"add_one_{k}" for k in range(14)]
globals().update({name: jit_serial(_renamed(_add_one, name)) for name in NAMES})


def spec(name, args=f"({F64}, {F64})"):
    """The ``(kernel, args)`` pair naming ``name`` with the float64 signature."""
    return f"{__name__}.{name}", args
