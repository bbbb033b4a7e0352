"""bowlrp.jit compile policy: parallel builds are compiled only once they pay (cold start, issue 15)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import bowlrp.jit as jit
from bowlrp.jit import BothBuilds, forced_builds, jit_both, prange

ROOT = pathlib.Path(__file__).resolve().parents[2]

BIG = 1e30  # work the size rule always gives to the parallel build


def _double_rows(x, out):
    for i in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = 2.0 * x[i, j]


def _fresh(cache_dir, monkeypatch, **options):
    """Both builds of ``_double_rows`` with numba's disk cache in ``cache_dir`` (new dispatchers, so
    nothing is compiled in this process yet)."""
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(cache_dir))
    return jit_both(_double_rows, work=lambda x, out: BIG, **options)


needs_threads = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                   reason="the size rule never picks a parallel build with one thread")


@needs_threads
def test_cold_cache_runs_the_serial_build_until_the_parallel_one_pays(tmp_path, monkeypatch):
    kernel = _fresh(tmp_path, monkeypatch)
    x = np.random.default_rng(0).random((7, 5))
    want = np.empty_like(x)
    kernel.serial(x, want)
    assert not kernel.parallel_ready()
    for _ in range(3):
        out = np.empty_like(x)
        kernel(x, out)
        np.testing.assert_array_equal(out, want)
    assert not kernel.parallel.overloads, "the parallel build compiled on a cold cache for a tiny job"
    assert kernel.build(BIG) not in (kernel.parallel, kernel.serial)  # the timed serial run
    assert kernel.build(0) is kernel.serial
    assert 0 < kernel.serial_seconds < jit.PARALLEL_COMPILE_SECONDS
    # once the serial runs have cost what a compilation costs, the parallel build is compiled and used
    monkeypatch.setattr(jit, "PARALLEL_COMPILE_SECONDS", kernel.serial_seconds)
    assert kernel.build(BIG) is kernel.parallel
    out = np.empty_like(x)
    kernel(x, out)
    assert kernel.parallel.overloads
    np.testing.assert_array_equal(out, want)
    # a later process (new dispatchers, same disk cache) uses the cached parallel build at once
    again = jit_both(_double_rows, work=lambda x, out: BIG)
    assert not again.parallel.overloads and again.parallel_ready()
    assert again.build(BIG) is again.parallel and again.build(0) is again.serial


@needs_threads
def test_the_serial_build_s_own_compilation_is_not_counted(tmp_path, monkeypatch):
    kernel = _fresh(tmp_path, monkeypatch)
    x = np.ones((3, 2))
    kernel(x, np.empty_like(x))  # compiles the serial build: seconds, but not time waited for parallel
    assert kernel.serial.overloads and kernel.serial_seconds == 0.0


def test_forced_parallel_builds_and_uncached_kernels_keep_the_size_rule(tmp_path, monkeypatch):
    kernel = _fresh(tmp_path, monkeypatch)
    with forced_builds("parallel"):  # the tests compare both builds: always the parallel one
        assert kernel.build(0) is kernel.parallel
    # without a disk cache there is nothing to wait for: the size rule alone decides, as before
    uncached = _fresh(tmp_path, monkeypatch, cache=False)
    assert isinstance(uncached, BothBuilds) and uncached.parallel_ready()
    assert jit._has_cached_build(uncached.parallel)


def _renamed_add_one(k):
    """A new function object (its own dispatcher and cache file) with the compile-ahead tests'
    ``_add_one`` code."""
    from tests.bowlrp._ahead_kernels import _add_one

    return jit._renamed(_add_one, f"_add_one_{k}")


def test_numba_cache_saves_and_loads_hold_a_file_lock(tmp_path, monkeypatch):
    """Two processes saving signatures of one kernel at once could make numba's index name another
    signature's code; saves and loads run under a lock file in the cache folder (and still work)."""
    from numba.core.caching import IndexDataCacheFile

    assert IndexDataCacheFile.save._bowlrp_locked and IndexDataCacheFile.load._bowlrp_locked
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    kernel = jit.jit_serial(_renamed_add_one(7))
    x = np.arange(3.0)
    out = np.empty_like(x)
    kernel(x, out)  # compiles and saves
    assert list(tmp_path.rglob("bowlrp-cache.lock")) and list(tmp_path.rglob("*.nbc"))
    again = jit.jit_serial(_renamed_add_one(7))  # a new dispatcher: loads the saved code
    again(x, out)
    np.testing.assert_array_equal(out, x + 1.0)
    assert again.stats.cache_hits and not again.stats.cache_misses


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method")
def test_a_worker_killed_inside_numbas_thread_count_call_does_not_hang_the_run():
    """numba's thread-count calls take a start-up lock that, under fork, is shared by every process
    forked from the run: a worker killed while it held it (a ``-j N`` run stopping its workers)
    left the run's next ``set_num_threads`` waiting for ever (seen in a cold suite run). A forked
    child whose threading layer is started gets a lock of its own."""
    script = textwrap.dedent(
        """
        import os, signal, time
        import bowlrp.jit
        import numba
        import numba.np.ufunc.parallel as parallel
        numba.get_num_threads()  # the parent starts its threading layer
        pid = os.fork()
        if pid == 0:
            parallel._backend_init_process_lock.acquire()  # as inside numba.set_num_threads
            time.sleep(60)
            os._exit(0)
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        numba.set_num_threads(1)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.split() == ["ok"], out.stderr


@needs_threads
def test_a_batch_worker_runs_one_blas_thread_without_rescanning_the_libraries(monkeypatch):
    """Every thread of a parallel_map region runs BLAS on one thread for the whole region; the one-
    thread limits its items ask for again (each chunk of a part's extraction and encoding) are then
    in force already and skip threadpoolctl's scan; outside a region the limit is set as before."""
    import threading

    from threadpoolctl import threadpool_info

    scans, seen = [], []
    real = jit._limit_libraries
    monkeypatch.setattr(jit, "_limit_libraries", lambda *a: scans.append(a) or real(*a))

    def work(i):
        with jit.limited_threads(1, numba_threads=False, user_api="blas"):
            seen.append((threading.get_ident(),
                         [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]))
        return i

    with jit.limited_threads(2, user_api="blas"), forced_builds("parallel"):
        scans.clear()
        assert jit.parallel_map(work, range(16), work=0) == list(range(16))
        # the region's limit and one per thread that drains chunks, none per item
        assert len(scans) <= 1 + numba.get_num_threads()
        assert all(all(n == 1 for n in counts) for _, counts in seen)
        scans.clear()
        with jit.limited_threads(1, numba_threads=False, user_api="blas"):  # outside a region: set
            assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
        assert len(scans) == 1
        assert all(p["num_threads"] == 2 for p in threadpool_info() if p["user_api"] == "blas")
