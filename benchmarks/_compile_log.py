"""Log numba's compile events of every Python process of a run (``bench_cold.py --inventory``).

``bench_cold.py`` copies this file as ``sitecustomize.py`` into a folder it puts first on
``PYTHONPATH``, so it runs at the start of the benchmarked process and of every Python process that
one starts (the test suite runs the command line, the demo and fork-server pools in subprocesses,
which compile kernels too). It does nothing unless ``BENCH_COLD_LOG_DIR`` is set, and it does not
import numba itself: it waits until the process imports ``numba.core.event`` (as ``import numba``
does) and registers a listener for ``"numba:compile"`` there.

Each compile is appended at once as one JSON line to ``<BENCH_COLD_LOG_DIR>/<pid>.jsonl`` (forked
children write under their own pid; nothing is lost when a process ends with ``os._exit``): kernel,
build (parallel or not), argument types, exclusive seconds (without the kernels compiled inside it),
inclusive seconds, the pytest test running at the time (``PYTEST_CURRENT_TEST``), the thread, and
whether the process is ``bowlrp.compile_ahead``'s child (``ahead``: compiled ahead, loaded by the run).
A ``"wait": True`` line is the time the run waited for a kernel a compile-ahead child was compiling.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
import threading
import time

_LOG_DIR = os.environ.get("BENCH_COLD_LOG_DIR")


def _register(event):
    """Register the compile listener on numba's (just executed) ``numba.core.event`` module."""
    local = threading.local()  # compiles nest on one thread (numba holds its compiler lock)

    class Recorder(event.Listener):
        def on_start(self, ev):
            stack = local.__dict__.setdefault("stack", [])
            py_func = ev.data["dispatcher"].py_func
            stack.append([time.perf_counter(), 0.0, f"{py_func.__module__}.{py_func.__qualname__}"])

        def on_end(self, ev):
            stack = local.stack
            start, nested, name = stack.pop()
            total = time.perf_counter() - start
            if stack:
                stack[-1][1] += total
            dispatcher = ev.data["dispatcher"]
            record = {
                "kernel": name,
                "caller": stack[-1][2] if stack else None,
                "parallel": bool(dispatcher.targetoptions.get("parallel")),
                "args": str(tuple(ev.data["args"])),
                "seconds": total - nested,
                "inclusive": total,
                "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" (")[0],
                "pid": os.getpid(),
                "thread": threading.current_thread().name,
                "ahead": os.environ.get("BOWLRP_COMPILE_AHEAD_CHILD") == "1",  # the compile-ahead child
                "argv": " ".join(sys.argv[:3]),
            }
            with open(os.path.join(_LOG_DIR, f"{os.getpid()}.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")

    event.register("numba:compile", Recorder())

    class Waits(event.Listener):
        """The run waiting for a kernel a compile-ahead child is compiling (``bowlrp.compile_ahead``)."""

        def on_start(self, ev):
            local.wait_start = time.perf_counter()

        def on_end(self, ev):
            py_func = ev.data["dispatcher"].py_func
            record = {"wait": True, "kernel": f"{py_func.__module__}.{py_func.__qualname__}",
                      "args": str(tuple(ev.data["args"])), "seconds": time.perf_counter() - local.wait_start,
                      "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" (")[0], "pid": os.getpid()}
            with open(os.path.join(_LOG_DIR, f"{os.getpid()}.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")

    event.register("bowlrp:compile-ahead-wait", Waits())


class _EventFinder(importlib.abc.MetaPathFinder):
    """Finds ``numba.core.event`` as usual, then registers the listener once it has executed."""

    def find_spec(self, name, path, target=None):
        if name != "numba.core.event":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _register(module)

        spec.loader.exec_module = exec_module
        return spec


if _LOG_DIR:
    sys.meta_path.insert(0, _EventFinder())
