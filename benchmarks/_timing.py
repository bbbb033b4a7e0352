"""Clocks shared by the benchmark scripts.

``CLOCKS``: the clock of a timing loop, wall time or the process's CPU time (user + system of every
thread; with one thread it measures the work done whatever the machine's load). ``children_cpu``:
CPU seconds of the finished child processes (forked workers, subprocess runs).
"""

from __future__ import annotations

import resource
import time

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
