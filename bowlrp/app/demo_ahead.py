"""Compile the demo's numba kernels on a background thread while the demo runs (a fresh clone's first
``make demo``; issue 15, cold start).

A fresh clone's first demo compiles about 25 project kernels (SIFT, encoding, Gram matrix, the BoW
decomposition, the network's layers in float32 for training and float64 for LRP), a third of its run
time. ``demo_kernels.txt`` lists them as the demo compiled them (kernel, numba argument types, in
order; written by ``benchmarks/bench_cold.py --only demo --ahead off --inventory --write-ahead PREFIX``), and
:func:`start` compiles the ones numba's disk cache does not hold on a second thread
(:func:`bowlrp.compile_ahead.compile_ahead`): most of a compilation is LLVM, which runs without the GIL, so it
overlaps the demo's own work on the second core (training the network needs its kernels while the BoW
part still runs; the explanation kernels compile while the network trains). The code compiled is the
same; a line that no longer matches a kernel costs only its own compilation. Measured (2026-11-30,
load average 1.1, ``bench_cold.py --only demo --ahead both``): the first demo 40.8 s without, 33.5 s
with it; the second 22.6 / 22.2 s.
"""

from __future__ import annotations

import pathlib

LIST = pathlib.Path(__file__).with_name("demo_kernels.txt")


def start():
    """Start compiling the demo's kernels that are not in numba's disk cache; the handle, or None."""
    from bowlrp.compile_ahead import compile_ahead, kernel_list, uncompiled

    jobs = uncompiled(kernel_list(LIST))
    return compile_ahead(jobs, default="1") if jobs else None  # BOWLRP_COMPILE_AHEAD=0 turns it off
