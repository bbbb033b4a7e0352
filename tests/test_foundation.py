"""The engineering base: numba policy, packaging layout, the kernel-twin helper itself."""

import pathlib
import tomllib

import numpy as np
import pytest

from bowlrp.jit import jit_both, jit_parallel, jit_serial, prange
from tests.kernel_twins import assert_matches_twin

ROOT = pathlib.Path(__file__).resolve().parents[1]


@jit_parallel
def _row_sums(x, out):
    for i in prange(x.shape[0]):
        acc = 0.0
        for j in range(x.shape[1]):
            acc += x[i, j]
        out[i] = acc


def _row_sums_fast(x):
    out = np.empty(x.shape[0])
    _row_sums(x, out)
    return out


def test_parallel_kernel_matches_numpy_twin():
    rng = np.random.default_rng(0)
    cases = [(rng.normal(size=(n, 7)),) for n in (1, 5, 64)]
    assert_matches_twin(_row_sums_fast, lambda x: x.sum(axis=1), cases)


def test_twin_helper_catches_a_wrong_kernel():
    with pytest.raises(AssertionError):
        assert_matches_twin(lambda x: x.sum(axis=1) + 1e-6, lambda x: x.sum(axis=1), [(np.ones((2, 2)),)])
    with pytest.raises(AssertionError, match="no cases"):
        assert_matches_twin(np.sum, np.sum, [])


def test_policy_refuses_fastmath():
    with pytest.raises(ValueError, match="fastmath"):
        jit_serial(fastmath=True)
    with pytest.raises(ValueError, match="fastmath"):
        jit_parallel(lambda x: x, fastmath=True)


def test_serial_kernel_has_cache_and_no_fastmath():
    @jit_serial
    def add(a, b):
        return a + b

    assert add(1.0, 2.0) == 3.0
    assert add.targetoptions.get("fastmath") in (False, None)


def test_datasets_folder_is_not_installed_as_a_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert all(not pattern.startswith("datasets") for pattern in include)
    from setuptools import find_packages

    found = find_packages(str(ROOT), include=include)
    assert "datasets" not in found and "bowlrp" in found and "nets" in found


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme.split("\n## ")[0] and "make demo" in readme.split("\n## ")[0]
    assert "make test" in ci


def _scale_rows(x, out):
    for i in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = 2.0 * x[i, j]


_scaled = jit_both(_scale_rows, work=lambda x, out: x.size)


def test_jit_both_gives_two_builds_that_never_share_a_cache_entry():
    parallel, serial = _scaled.parallel, _scaled.serial
    assert parallel.targetoptions["parallel"] is True
    assert not serial.targetoptions.get("parallel", False)
    # numba's disk cache is keyed by qualified name, not by the parallel flag: the names must differ
    assert parallel.py_func.__qualname__ != serial.py_func.__qualname__
    x = np.arange(12.0).reshape(3, 4)
    for build in (parallel, serial, _scaled):
        out = np.empty_like(x)
        build(x, out)
        np.testing.assert_array_equal(out, 2.0 * x)


def test_one_size_rule_picks_the_build():
    import numba

    from bowlrp.jit import PARALLEL_MIN_WORK, forced_builds, use_parallel

    assert _scaled.build(PARALLEL_MIN_WORK - 1) is _scaled.serial
    x = np.ones((2, 2))
    _scaled.parallel(x, np.empty_like(x))  # compiled: ready (a cold parallel build waits, see test_jit)
    many_threads = numba.get_num_threads() > 1
    assert (_scaled.build(PARALLEL_MIN_WORK) is _scaled.parallel) == many_threads
    with forced_builds("parallel"):
        assert use_parallel(0) and _scaled.build(0) is _scaled.parallel
        with forced_builds("serial"):
            assert not use_parallel(1e30)
        assert use_parallel(0)
    with pytest.raises(ValueError, match="'parallel' or 'serial'"), forced_builds("both"):
        pass


def test_parallel_map_keeps_order_runs_kernels_serially_and_restores_blas():
    from threadpoolctl import threadpool_info

    from bowlrp.jit import forced_builds, parallel_map, use_parallel

    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    seen = []

    def work(i):
        seen.append(use_parallel(1e30))  # inside a batch worker every kernel runs serially
        return i * i

    with forced_builds("parallel"):  # threads although the batch is tiny
        assert parallel_map(work, range(23), work=0) == [i * i for i in range(23)]
    assert seen and not any(seen)
    assert parallel_map(work, [], work=1e30) == []
    assert parallel_map(work, range(5), work=0) == [0, 1, 4, 9, 16]  # below the rule: a plain loop
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == blas


def test_parallel_map_returns_only_when_no_helper_runs():
    """When the calling thread's items fail, the helpers stop taking chunks and are waited for before
    the error propagates (a caller may fork next: no thread may hold a lock then)."""
    import threading
    import time

    from bowlrp.jit import forced_builds, limited_threads, parallel_map

    main, running = threading.get_ident(), []

    def work(i):
        if threading.get_ident() == main:
            raise RuntimeError("the calling thread's item failed")
        running.append(i)
        time.sleep(0.02)
        running.remove(i)
        return i

    with limited_threads(2), forced_builds("parallel"), pytest.raises(RuntimeError, match="item failed"):
        parallel_map(work, range(40), work=0)
    assert running == []  # no helper was still inside an item


def test_parallel_parts_prepare_on_the_calling_thread_and_compute_on_threads():
    """parallel_parts: every set-up on the calling thread, the last item's first; each item computed
    on a thread of its own with serial kernels; results in order; a failing set-up waits for the
    helpers already started before it propagates; more items than threads fall back to parallel_map."""
    import threading
    import time

    from threadpoolctl import threadpool_info

    from bowlrp.jit import forced_builds, limited_threads, parallel_parts, use_parallel

    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    main, prepared, computed = threading.get_ident(), [], []

    def prepare(i):
        prepared.append((i, threading.get_ident()))
        return i

    def compute(i):
        computed.append((i, threading.get_ident() == main, use_parallel(1e30)))
        return i * i

    with limited_threads(2), forced_builds("parallel"):
        assert parallel_parts(prepare, compute, range(2), work=0) == [0, 1]
    assert prepared == [(1, main), (0, main)]  # the helper's item first, all on the calling thread
    assert sorted(computed) == [(0, True, False), (1, False, False)]
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == blas
    prepared.clear()
    with limited_threads(2), forced_builds("parallel"):
        assert parallel_parts(prepare, compute, range(5), work=0) == [0, 1, 4, 9, 16]  # parallel_map
        assert parallel_parts(prepare, compute, [], work=0) == []
    with limited_threads(1):
        assert parallel_parts(prepare, compute, range(3), work=1e30) == [0, 1, 4]
    with limited_threads(2), forced_builds("parallel"):
        assert use_parallel(1e30)  # the calling thread's kernels are not left serial
    finished = []

    def slow(i):
        time.sleep(0.05)
        finished.append(i)
        return i

    def failing(i):
        if i == 0:
            raise RuntimeError("the set-up of the first item failed")
        return i

    with limited_threads(2), forced_builds("parallel"), pytest.raises(RuntimeError, match="set-up"):
        parallel_parts(failing, slow, range(2), work=0)
    assert finished == [1]  # the helper's item was finished before the error propagated

    def helper_fails(i):
        if threading.get_ident() != main:
            raise RuntimeError("the helper's item failed")
        return slow(i)

    finished.clear()
    with limited_threads(2), forced_builds("parallel"), pytest.raises(RuntimeError, match="helper's item"):
        parallel_parts(lambda i: i, helper_fails, range(2), work=0)
    assert finished == [0]


def test_numba_openmp_workers_wait_passively():
    import os

    import bowlrp.jit  # noqa: F401

    # ours, unless the user chose a policy (busy-waiting workers oversubscribe the cores)
    assert os.environ.get("OMP_WAIT_POLICY") is not None or "GOMP_SPINCOUNT" in os.environ


def test_submodules_are_reachable_from_the_package():
    import bowlrp
    import nets

    assert nets.train.ConvNetClassifier is nets.ConvNetClassifier
    assert callable(bowlrp.evaluation.region_perturbation)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nets.nope  # noqa: B018


def test_limited_threads_limits_blas_and_numba_and_restores_them():
    import numba
    from threadpoolctl import threadpool_info

    from bowlrp.jit import limited_threads

    before_numba = numba.get_num_threads()
    before_blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    with limited_threads(1):
        assert numba.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    with limited_threads(1, numba_threads=False, user_api="blas"):
        assert numba.get_num_threads() == before_numba
    with limited_threads(None):
        assert numba.get_num_threads() == before_numba
    assert numba.get_num_threads() == before_numba
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == before_blas


def test_split_batch_equals_the_whole_call_and_checks_lengths():
    from bowlrp.jit import forced_builds, split_batch

    x = np.arange(30.0).reshape(10, 3)
    y = np.arange(10.0)

    def per_row(a, b):
        return a * 2.0 + b[:, None], b + 1.0

    with forced_builds("parallel"):  # parts on threads although the batch is tiny
        got = split_batch(per_row, x, y, work=0)
        single = split_batch(lambda a: a.sum(axis=1), x, work=0)
    want = per_row(x, y)
    assert isinstance(got, tuple) and all(np.array_equal(g, w) for g, w in zip(got, want))
    np.testing.assert_array_equal(single, x.sum(axis=1))
    np.testing.assert_array_equal(split_batch(lambda a: a + 1, x[:1]), x[:1] + 1)  # one row: one call
    with pytest.raises(ValueError, match="same length"):
        split_batch(per_row, x, y[:3])


def test_split_batch_of_a_network_forward_on_digits_matches_the_whole_batch():
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    import nets
    from bowlrp.jit import forced_builds, split_batch

    X, y = load_digits(return_X_y=True)
    X = X[:300] / 16.0
    clf = MLPClassifier((32,), max_iter=2000, random_state=0).fit(X, y[:300])
    model = nets.from_sklearn(clf)
    with forced_builds("parallel"):
        got = split_batch(model, X, work=0)
    np.testing.assert_allclose(got, model(X), rtol=1e-12, atol=1e-12)  # round-off of smaller GEMMs only
