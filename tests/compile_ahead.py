"""Compile what a cold test session's own process will compile, in a second process, ahead of time.

Every ``jit_both`` kernel's twin test compiles its parallel build once, for the comparison with the
serial build: about 35 specialisations and two thirds of a cold session's compile seconds.
``tests/compile_ahead.txt`` lists the specialisations the session's process compiled in a cold run
of the whole suite (test file, kernel, numba argument types, in the order they compiled:
``bench_cold.py --only suite --ahead off --inventory --write-ahead PREFIX``). Once pytest has
collected the session's tests, :func:`start` hands the ones the selected test files need, in the
order the session reaches them, to :func:`bowlrp.compile_ahead.compile_ahead`: a child process
compiles them on a core the session does not use and saves them to numba's disk cache, and a test
loads its kernel from there (waits for the one the child is compiling, or compiles one the child has
not reached, which the child then skips). The code, its numbers and numba's disk cache are those the
test would have compiled itself. Specialisations numba already has on disk (a warm cache) are
skipped, so a warm session starts no process. The list ends with the specialisations that only
subprocesses of the suite compiled (the demo ``test_cli.py`` starts): saved by the child first, they
are loaded there. A stale line (a kernel renamed, another signature) costs nothing but its own
compilation.
"""

from __future__ import annotations

import pathlib

LIST = pathlib.Path(__file__).with_name("compile_ahead.txt")


def entries(lines=None):
    """The list's ``(test file, kernel, argument types)`` lines (default: ``tests/compile_ahead.txt``)."""
    from bowlrp.compile_ahead import kernel_list

    return kernel_list(LIST, lines)


def jobs(test_files, lines=None):
    """``(dispatcher, signature)`` jobs the given test files need, in the order of ``test_files``.

    Parameters
    ----------
    test_files : sequence of str
        Paths relative to the repository (``tests/nets/test_kernels.py``) in the order the session
        runs them.
    lines : iterable of str, optional
        The list's lines (default: ``tests/compile_ahead.txt``).

    Returns
    -------
    list of bowlrp.compile_ahead.Job
        See :func:`bowlrp.compile_ahead.uncompiled` (no kernel the disk cache has, no stale line).
    """
    from bowlrp.compile_ahead import uncompiled

    rank = {name: k for k, name in enumerate(dict.fromkeys(test_files))}
    wanted = sorted((w for w in entries(lines) if w[0] in rank), key=lambda w: rank[w[0]])  # stable
    return uncompiled((kernel, args) for _, kernel, args in wanted)


def start(items, root):
    """Start compiling what the collected pytest ``items`` need; the handle (``stop()``), or None."""
    files = []
    for item in items:
        try:
            files.append(pathlib.Path(str(item.path)).relative_to(root).as_posix())
        except ValueError:
            continue
    from bowlrp.compile_ahead import compile_ahead

    return compile_ahead(jobs(files), default="1")
