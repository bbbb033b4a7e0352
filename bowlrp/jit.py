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

import contextlib
import types

import numba

__all__ = ["jit_serial", "jit_parallel", "jit_both", "limited_threads", "prange"]

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


def _renamed(func, name):
    """A copy of ``func`` under another name (same bytecode, globals, defaults and closure)."""
    code = func.__code__.replace(co_name=name, co_qualname=name)
    copy = types.FunctionType(code, func.__globals__, name, func.__defaults__, func.__closure__)
    copy.__qualname__ = name
    copy.__doc__ = func.__doc__
    return copy


def jit_both(func=None, **options):
    """Compile one ``prange`` kernel twice: ``(parallel_build, serial_build)``.

    The serial build (``prange`` runs as ``range``) serves small inputs, where waking threads and
    joining them costs more than the work. It compiles a renamed copy of the function: numba's
    on-disk cache is keyed by the function's qualified name and bytecode, not by the ``parallel``
    flag, so two builds of one function would otherwise load each other's cached machine code.
    """
    if func is None:
        return lambda f: jit_both(f, **options)
    serial_name = f"{func.__name__}__serial"
    return jit_parallel(func, **options), jit_serial(_renamed(func, serial_name), **options)


_threadpool_controller = None


@contextlib.contextmanager
def limited_threads(n, numba_threads=True, user_api=None):
    """Run a block with at most ``n`` BLAS/OpenMP threads (and numba threads, unless told not to).

    Small batches run faster on one thread, and on a busy machine much faster: every parallel region
    waits for all of its threads to be scheduled. ``n=None`` leaves the settings alone. The
    threadpoolctl controller is built once (scanning the loaded libraries costs about 0.6 ms, which
    per-image calls would pay every time); the settings are restored afterwards.
    """
    global _threadpool_controller
    if n is None:
        yield
        return
    n = max(1, int(n))
    if _threadpool_controller is None:
        from threadpoolctl import ThreadpoolController

        _threadpool_controller = ThreadpoolController()
    before = numba.get_num_threads()
    if numba_threads:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        with _threadpool_controller.limit(limits=n, user_api=user_api):
            yield
    finally:
        numba.set_num_threads(before)
