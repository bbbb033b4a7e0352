"""The project's numba policy, in one place.

Every numba kernel of ``bowlrp`` and ``nets`` is compiled through these two decorators so that the
choices below hold everywhere:

* ``fastmath`` is always off: conservation (sum of relevance equals the score) is asserted to 1e-9
  and reassociated floating-point sums would break it.
* serial kernels are cached on disk (``cache=True``) so a second process does not recompile them.
* parallel kernels say so explicitly (``parallel=True``) and use ``numba.prange`` over independent
  slices only (rows of a Gram matrix, images of a batch), never over a reduction whose order matters.

Kernels are private functions in a ``_kernels.py`` module that take arrays and write into
preallocated outputs; the public wrappers validate input. Each kernel has a slow numpy twin in the
tests (see ``tests/kernel_twins.py``).
"""

from __future__ import annotations

import numba

__all__ = ["jit_serial", "jit_parallel", "prange"]

prange = numba.prange


def jit_serial(func=None, **options):
    """Compile ``func`` with numba in nopython mode, cached, no fastmath.

    Usable bare (``@jit_serial``) or with numba options (``@jit_serial(inline="always")``).
    """
    options = {"cache": True, "fastmath": False, "nogil": True, **options}
    if options.get("fastmath"):
        raise ValueError("fastmath is not allowed in bowlrp kernels: it breaks conservation")
    if func is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(func)


def jit_parallel(func=None, **options):
    """Compile ``func`` with ``parallel=True``, cached, no fastmath. Use ``prange`` inside."""
    options = {"cache": True, "fastmath": False, "nogil": True, "parallel": True, **options}
    if options.get("fastmath"):
        raise ValueError("fastmath is not allowed in bowlrp kernels: it breaks conservation")
    if func is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(func)
