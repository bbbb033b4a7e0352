"""Compile numba specialisations on a background thread ahead of their first call (cold start, issue 15).

A fresh clone's first run compiles every kernel it uses, most of it in LLVM, which llvmlite runs
without the GIL: :func:`compile_ahead` compiles a list of specialisations on a thread, on the second
core, while the calling thread goes on (the test session: ``tests/compile_ahead.py``; the demo:
``bowlrp/app/demo_ahead.py``). numba compiles one specialisation at a time per process (its global
compiler lock): a call that needs another compilation meanwhile waits for the one under way, at most
one job; a call that needs a job's specialisation finds it compiled, so nothing compiles twice and
the code, its numbers and numba's disk cache are those the first call would have made. The lists are
what a cold run compiled, as numba's compile log names them (:func:`specialisation`);
:func:`uncompiled` drops the kernels numba's disk cache already holds (a warm run starts no thread).
Both are on unless ``BOWLRP_COMPILE_AHEAD=0``. One cold run of the whole suite with the session's
thread on hung once in numba's threading-layer start-up lock, a process-shared semaphore that a
worker terminated inside a thread-count call left taken; forked children now take a lock of their
own (``bowlrp.jit._private_numba_start_lock``, with a test), and the cold suites run since passed.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import os
import pathlib
import sys
import threading

import numba

__all__ = ["compile_ahead", "kernel_list", "specialisation", "uncompiled"]


class _AheadCompiler:
    """A thread compiling numba specialisations ahead of their first call (see :func:`compile_ahead`)."""

    def __init__(self, jobs, pause):
        self.jobs = list(jobs)
        self.pause = pause
        self.compiled = []  # (dispatcher, signature) compiled here, in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bowlrp-compile-ahead", daemon=True)
        self._thread.start()
        # a process that ends before the jobs do must not tear numba down under a compilation
        atexit.register(self.stop)

    def _run(self):
        for dispatcher, signature in self.jobs:
            if self._stop.is_set():
                return
            try:
                dispatcher.compile(signature)  # under numba's compiler lock; a no-op when it exists
                self.compiled.append((dispatcher, signature))
            except Exception:  # noqa: BLE001 - a stale signature: the first real call compiles
                pass
            # let a thread that waits for the compiler take it before the next job (a lock is not fair)
            self._stop.wait(self.pause)

    def stop(self):
        """Compile nothing more; wait for the compilation under way (numba's compile is not interruptible)."""
        self._stop.set()
        self._thread.join()

    def join(self, timeout=None):
        """Wait until every job is compiled (or the thread stopped)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _compiler_lock():
    """numba's global compiler lock: one compilation at a time per process, whichever thread."""
    from numba.core.compiler_lock import global_compiler_lock

    return global_compiler_lock


_ahead_forks_registered = False


def _hold_compiler_for_fork():
    """Fork only between two compilations: a child forked while another thread compiles would inherit
    numba's compiler lock held by a thread it does not have (its first compilation would hang) and LLVM
    halfway through a module."""
    global _ahead_forks_registered
    if not _ahead_forks_registered:
        lock = _compiler_lock()
        os.register_at_fork(before=lock.acquire, after_in_parent=lock.release, after_in_child=lock.release)
        _ahead_forks_registered = True


def specialisation(kernel, args):
    """The dispatcher and signature numba's compile log names: ``("nets._conv_kernels.fold", "(Array(float64,
    3, 'C', False, aligned=True), int64, ...)")``.

    ``kernel`` is ``module.name`` of a :func:`jit_serial` / :func:`jit_parallel` kernel or of a
    :func:`jit_both` kernel's parallel build, ``module.name__serial`` of its serial build; ``args``
    spells the argument types as numba prints them and is evaluated among numba's type names only (no
    builtins). Raises if the kernel is gone or a type does not parse.
    """
    from bowlrp.jit import BothBuilds

    module, _, name = kernel.rpartition(".")
    # the dispatcher compiled from the function ``name`` (a kernel object may be stored under another
    # name: ``gram_kernel = jit_both(_gram)``)
    builds = (build for obj in vars(sys.modules.get(module) or importlib.import_module(module)).values()
              for build in ((obj.parallel, obj.serial) if isinstance(obj, BothBuilds) else (obj,))
              if isinstance(build, numba.core.registry.CPUDispatcher))
    dispatcher = next(b for b in builds if (b.py_func.__module__, b.py_func.__name__) == (module, name))
    return dispatcher, tuple(eval(args, _type_names()))  # noqa: S307 - numba's type names only, no builtins


@functools.cache
def _type_names():
    from numba.core import types

    return {**{key: getattr(types, key) for key in dir(types) if not key.startswith("_")}, "__builtins__": {}}


def kernel_list(path, lines=None):
    """The tab-separated fields of a kernel list's lines (``tests/compile_ahead.txt``,
    ``bowlrp/app/demo_kernels.txt``), blank lines and ``#`` comments left out; ``lines`` instead of
    the file's (a missing file has none)."""
    if lines is None:
        path = pathlib.Path(path)
        lines = path.read_text().splitlines() if path.exists() else []
    return [tuple(line.split("\t")) for line in lines if line.strip() and not line.startswith("#")]


def uncompiled(specialisations):
    """The ``(dispatcher, signature)`` jobs for ``(kernel, args)`` pairs (see :func:`specialisation`)
    whose kernel numba's disk cache holds no build of yet; pairs that no longer resolve (a kernel
    renamed or removed, a type gone) are left out: the first real call compiles what it needs."""
    from bowlrp.jit import _has_cached_build

    jobs, cached = [], {}
    for kernel, args in specialisations:
        try:
            dispatcher, signature = specialisation(kernel, args)
        except Exception:  # noqa: BLE001 - a stale entry costs nothing
            continue
        if kernel not in cached:
            cached[kernel] = _has_cached_build(dispatcher)
        if not cached[kernel]:
            jobs.append((dispatcher, signature))
    return jobs


def compile_ahead(jobs, pause=0.02, default="0"):
    """Compile ``(dispatcher, signature)`` pairs on a background thread, in order, now.

    A cold process spends most of numba's compile time in LLVM, which runs without the GIL, so the
    thread compiles on the second core while the calling thread goes on with Python work (the test
    session pre-compiles the parallel builds its twin tests will call). numba compiles one
    specialisation at a time per process (its global compiler lock): a call that needs another
    compilation meanwhile waits for the one under way, at most one job; one that needs a job's
    specialisation finds it compiled. The compiled code and numba's disk cache are the same as if
    the first call had compiled it. A process forks only between two compilations (the fork waits).

    Parameters
    ----------
    jobs : iterable of (numba dispatcher, tuple of numba types)
        A signature that no longer types is skipped (the first real call compiles what it needs).
    pause : float
        Seconds between two jobs, in which a waiting thread takes the compiler.
    default : {"0", "1"}
        Whether to compile ahead when ``BOWLRP_COMPILE_AHEAD`` is not set (the test session and the
        demo pass ``"1"``).

    Returns
    -------
    object or None
        With ``stop()`` (compile nothing more, wait for the current job), ``join(timeout)`` and
        ``compiled`` (the pairs compiled so far); None when ``BOWLRP_COMPILE_AHEAD`` (else
        ``default``) is not ``1``: every kernel then compiles at its first call.
    """
    if os.environ.get("BOWLRP_COMPILE_AHEAD", default) != "1":
        return None
    _hold_compiler_for_fork()
    return _AheadCompiler(jobs, pause)
