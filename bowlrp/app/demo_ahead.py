"""Compile the demo's numba kernels in a second process while the demo runs (a fresh clone's first
``make demo``; issue 15, cold start).

A fresh clone's first demo compiles about 25 project kernels (SIFT, encoding, Gram matrix, the BoW
decomposition, the network's layers in float32 for training and float64 for LRP), a third of its run
time. ``demo_kernels.txt`` lists them as the demo compiled them (kernel, numba argument types, in
order; written by ``benchmarks/bench_cold.py --only demo --ahead off --inventory --write-ahead PREFIX``), and
:func:`start` hands the ones numba's disk cache does not hold to a child process
(:func:`bowlrp.compile_ahead.compile_ahead`), which compiles them on the second core and saves them to
the cache; the demo loads each at its first call (or compiles it itself if the child has not reached
it yet, and the child skips it). The code is the same as the demo would compile; a line that no
longer matches a kernel costs only its own compilation. Measured: see the cold-start section of
``benchmarks/README.md``.
"""

from __future__ import annotations

import pathlib

LIST = pathlib.Path(__file__).with_name("demo_kernels.txt")


def start():
    """Start compiling the demo's kernels that are not in numba's disk cache; the handle, or None
    (a warm cache, or ``BOWLRP_COMPILE_AHEAD=0``)."""
    from bowlrp.compile_ahead import compile_ahead, kernel_list, uncompiled

    jobs = uncompiled(kernel_list(LIST))
    return compile_ahead(jobs, default="1")
