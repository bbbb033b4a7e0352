"""Compile what a cold test session's own process will compile, on a background thread, ahead of time.

Every ``jit_both`` kernel's twin test compiles its parallel build once, for the comparison with the
serial build: about 35 specialisations and two thirds of a cold session's compile seconds, nearly all
in LLVM, which runs without the GIL. ``tests/compile_ahead.txt`` lists the specialisations the
session's process compiled in a cold run of the whole suite (test file, kernel, numba argument types,
in the order they compiled: ``bench_cold.py --only suite --ahead off --inventory --write-ahead
tests/compile_ahead.txt``). Once pytest has collected the session's tests, :func:`start` hands the
ones the selected test files need, in the order the session reaches them, to
:func:`bowlrp.compile_ahead.compile_ahead`, which compiles them on the second core while the tests run. A test
then finds its kernel compiled (or waits for the one compilation under way); the code, its numbers
and numba's disk cache are those the test would have compiled itself. Kernels numba already has on
disk (a warm cache) are skipped, so a warm session starts no thread. The list leaves out kernels that
other processes of the suite (command-line and worker subprocesses) compile too: numba's disk cache
is not safe for two processes saving signatures of one kernel at once. A stale line (a kernel renamed,
another signature) costs nothing but its own compilation.
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
    list of (numba dispatcher, tuple)
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
    todo = jobs(files)
    if not todo:
        return None
    from bowlrp.compile_ahead import compile_ahead

    return compile_ahead(todo, default="1")
