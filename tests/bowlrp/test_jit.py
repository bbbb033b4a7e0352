"""bowlrp.jit compile policy: parallel builds are compiled only once they pay (cold start, issue 15)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import bowlrp.jit as jit
from bowlrp.jit import BothBuilds, forced_builds, jit_both, prange

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
