"""bowlrp/compile_ahead.py: a child process compiles listed specialisations, the run loads them.

Each test uses kernels of its own (``tests/bowlrp/_ahead_kernels.py``) and an empty numba cache
folder, so the run's process starts cold for them. The protocol, not timing, is checked: who compiled
what (numba's cache hit and miss counters in the run, the child's ``done`` reports), that nothing is
compiled twice, that the child ends with the run and that nothing starts when there is nothing to do.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import numba
import numpy as np
import pytest

from bowlrp import compile_ahead as ahead
from tests.bowlrp import _ahead_kernels as K
from tests.signals import default_sigint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIG = (numba.types.Array(numba.types.float64, 1, "C"),) * 2


@pytest.fixture
def cold(tmp_path, monkeypatch):
    """An empty numba cache folder (this process and the child), new dispatchers of the test kernels
    (a dispatcher's cache folder is fixed when it is made) and compiling ahead switched on."""
    # not NUMBA_CACHE_DIR in os.environ: numba re-reads its settings when a NUMBA_ variable changes,
    # which would reset a later test's CACHE_DIR (the child is given this folder anyway)
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("BOWLRP_COMPILE_AHEAD", "1")
    importlib.reload(K)
    return tmp_path


def _run(kernel):
    x = np.arange(4.0)
    out = np.empty_like(x)
    kernel(x, out)
    np.testing.assert_array_equal(out, x + 1.0)


def _compiled_here(kernel):
    """How many specialisations the run's process compiled itself (not loaded from the cache)."""
    return sum(kernel.stats.cache_misses.values())


def test_the_child_compiles_and_the_run_loads_from_the_cache(cold):
    stale = K.spec("add_one_0", "(float64, float64)")  # a scalar where the kernel indexes: does not type
    int_sig = K.spec("add_one_1", f"({K.I64}, {K.F64})")
    jobs = ahead.uncompiled([K.spec("add_one_0"), stale, K.spec("add_one_1"), int_sig])
    assert [job.kernel for job in jobs] == [f"{K.__name__}.add_one_{k}" for k in (0, 0, 1, 1)]
    handle = ahead.compile_ahead(jobs, processes=1)
    try:
        assert handle.join(timeout=120), "the compile-ahead child did not finish"
        i64 = numba.types.Array(numba.types.int64, 1, "C")
        assert handle.compiled == [(K.add_one_0, SIG), (K.add_one_1, SIG), (K.add_one_1, (i64, SIG[1]))]
        assert not K.add_one_0.overloads  # nothing compiled in this process so far
        _run(K.add_one_0)  # loaded from the disk cache, not compiled
        assert sum(K.add_one_0.stats.cache_hits.values()) == 1 and _compiled_here(K.add_one_0) == 0
    finally:
        handle.stop()
    assert [child.proc.returncode for child in handle._children] == [0]
    assert "load_overload" not in vars(K.add_one_0._cache)  # unhooked


def test_two_children_share_the_jobs_and_compile_each_once(cold):
    names = ["add_one_9", "add_one_10", "add_one_11"]
    handle = ahead.compile_ahead(ahead.uncompiled([K.spec(name) for name in names]), processes=2)
    try:
        assert len(handle._children) == 2
        assert handle.join(timeout=120)
        kernels = [getattr(K, name) for name in names]
        assert sorted(handle.compiled, key=lambda pair: names.index(pair[0].py_func.__name__)) == [
            (kernel, SIG) for kernel in kernels]
        for kernel in kernels:
            _run(kernel)
            assert _compiled_here(kernel) == 0
    finally:
        handle.stop()


def test_a_job_the_child_has_not_started_is_compiled_by_the_run_once(cold):
    first, second = K.add_one_2, K.add_one_3
    handle = ahead.compile_ahead(ahead.uncompiled([K.spec("add_one_2"), K.spec("add_one_3")]), processes=1)
    try:
        _run(second)  # at once: the child is still starting up, so the run takes the job over
        assert handle.join(timeout=120)
        done = [d for d, _ in handle.compiled]
        # compiled exactly once: by the child (the run loaded it) or by the run (no child got it)
        assert (second in done) == (_compiled_here(second) == 0)
        assert first in done
        _run(first)
        assert _compiled_here(first) == 0
    finally:
        handle.stop()


def test_the_run_waits_for_the_job_the_child_is_compiling(cold):
    handle = ahead.compile_ahead(ahead.uncompiled([K.spec("add_one_4")]))
    try:
        deadline = time.monotonic() + 120
        while not handle._running and not handle.compiled and time.monotonic() < deadline:
            time.sleep(0.005)
        _run(K.add_one_4)  # under way (or done): loaded from the cache, never compiled here
        assert _compiled_here(K.add_one_4) == 0 and handle.compiled == [(K.add_one_4, SIG)]
    finally:
        handle.stop()


@pytest.mark.parametrize("setting", [None, "0"])
def test_compiling_ahead_is_off_unless_asked_for(cold, monkeypatch, setting):
    if setting is None:
        monkeypatch.delenv("BOWLRP_COMPILE_AHEAD")
    else:
        monkeypatch.setenv("BOWLRP_COMPILE_AHEAD", setting)
    monkeypatch.setattr(ahead.subprocess, "Popen", _no_process)
    jobs = ahead.uncompiled([K.spec("add_one_5")])
    assert jobs
    assert ahead.compile_ahead(jobs) is None
    if setting == "0":  # the demo's and the test session's default is on; the variable still wins
        assert ahead.compile_ahead(jobs, default="1") is None
    assert not K.add_one_5.overloads


def test_the_run_keeps_a_core_unless_told_how_many_children(monkeypatch):
    monkeypatch.delenv("BOWLRP_COMPILE_AHEAD_PROCESSES", raising=False)
    assert [ahead.default_processes(cores) for cores in (1, 2, 3, 8)] == [1, 1, 2, ahead.MAX_PROCESSES]
    assert ahead.default_processes() >= 1  # this machine's cores
    monkeypatch.setenv("BOWLRP_COMPILE_AHEAD_PROCESSES", "3")
    assert ahead.default_processes(2) == 3
    monkeypatch.setenv("BOWLRP_COMPILE_AHEAD_PROCESSES", "0")
    assert ahead.default_processes(2) == 1  # a child at least: off is BOWLRP_COMPILE_AHEAD=0


def test_a_warm_cache_starts_nothing(cold, monkeypatch):
    _run(K.add_one_6)  # compiled here and saved to the cache
    monkeypatch.setattr(ahead.subprocess, "Popen", _no_process)
    assert ahead.uncompiled([K.spec("add_one_6")]) == []
    assert ahead.compile_ahead([]) is None


def test_the_cache_is_checked_per_signature(cold):
    """A kernel the cache holds in one signature is still compiled ahead in another (the float32
    build of a layer whose float64 build an earlier process saved), once per listed pair."""
    _run(K.add_one_6)  # the float64 signature, saved to the cache
    int_pair = K.spec("add_one_6", f"({K.I64}, {K.F64})")
    jobs = ahead.uncompiled([K.spec("add_one_6"), int_pair, int_pair])
    assert [(job.kernel, job.args) for job in jobs] == [int_pair]
    assert ahead.cached(K.add_one_6, SIG) and not ahead.cached(K.add_one_6, jobs[0].signature)
    K.add_one_6.compile(jobs[0].signature)  # saved: now the cache holds both
    assert ahead.uncompiled([K.spec("add_one_6"), int_pair]) == []


def test_lines_the_child_prints_at_start_up_are_not_the_protocol(cold, tmp_path, monkeypatch):
    """Something printed to the child's stdout before it takes the pipe (a sitecustomize, a warning)
    is skipped: the child's jobs are still handed out and reported (the reader thread died on it)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text('print("site ready")\nprint("done 7x")\nprint("next")\n')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    handle = ahead.compile_ahead(ahead.uncompiled([K.spec("add_one_13")]), processes=1)
    try:
        assert handle.join(timeout=120), "the compile-ahead child did not finish"
        assert handle.compiled == [(K.add_one_13, SIG)]
        assert all(reader.is_alive() for reader in handle._readers)
    finally:
        handle.stop()


def test_a_child_whose_run_is_gone_at_its_start_exits(cold):
    """The child compares its parent with the run's pid it is given, not with its own parent at its
    start-up (already 1 when the run died during the child's imports): it exits although its stdin
    stays open (a forked process of the run could hold it)."""
    env = {**os.environ, "BOWLRP_COMPILE_AHEAD_CHILD": "1", "BOWLRP_COMPILE_AHEAD_PARENT": "1",
           "PYTHONPATH": ROOT}
    child = subprocess.Popen([sys.executable, "-m", "bowlrp.compile_ahead"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        child.stdin.close()
        child.stdout.close()


@pytest.mark.parametrize("setting", ["two", "1.5", "-1"])
def test_a_bad_number_of_children_is_named(monkeypatch, setting):
    monkeypatch.setenv("BOWLRP_COMPILE_AHEAD_PROCESSES", setting)
    with pytest.raises(ValueError, match="BOWLRP_COMPILE_AHEAD_PROCESSES"):
        ahead.default_processes()


def _no_process(*args, **kwargs):
    raise AssertionError("no compile-ahead process may start here")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method")
def test_a_process_forked_from_the_run_compiles_for_itself(cold):
    """A forked ``-j N`` worker does not wait for the child (its reports go to the run) and holds no
    copy of the pipes (the child must see them close when the run ends)."""
    handle = ahead.compile_ahead(ahead.uncompiled([K.spec("add_one_7"), K.spec("add_one_8")]))
    try:
        deadline = time.monotonic() + 120
        while not handle._running and not handle.compiled and time.monotonic() < deadline:
            time.sleep(0.005)
        pipes = [fd for child in handle._children for fd in (child.to_child, child.from_child)]
        pid = os.fork()
        if pid == 0:  # child: compile and run a listed kernel, exit 0 if right
            code = 1
            try:
                ends = [(child.to_child, child.from_child) for child in handle._children]
                if any(fd is not None for pair in ends for fd in pair):
                    os._exit(4)  # the handle still names a pipe end
                for fd in pipes:
                    try:
                        os.fstat(fd)
                    except OSError:
                        continue
                    os._exit(3)  # a pipe to the compile-ahead child is still open here
                out = np.empty(3)
                K.add_one_8(np.zeros(3), out)
                code = 0 if np.array_equal(out, np.ones(3)) else 1
            finally:
                os._exit(code)
        status = _wait(pid, 120)
        assert status == 0, f"the forked process exited with {status}"
        assert handle.join(timeout=120)
    finally:
        handle.stop()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method")
def test_a_fork_after_the_run_closed_its_pipes_leaves_reused_descriptors_alone(cold):
    """A handle whose pipes are closed (the run stopped it) must not close their old numbers in a
    process forked later: the run has reused them (a test's own pipe broke that way, in the suite)."""
    handle = ahead.compile_ahead(ahead.uncompiled([K.spec("add_one_12")]), processes=1)
    assert handle.join(timeout=120)
    old = {handle._children[0].to_child, handle._children[0].from_child}
    handle.stop()
    pipes = [os.pipe() for _ in range(4)]  # the lowest free numbers: the handle's old ones
    try:
        assert old & {fd for pipe in pipes for fd in pipe}, "the old descriptor numbers were not reused"
        pid = os.fork()
        if pid == 0:  # every pipe still works here
            code = 1
            try:
                for read, write in pipes:
                    os.write(write, b"x")
                    assert os.read(read, 1) == b"x"
                code = 0
            finally:
                os._exit(code)
        assert _wait(pid, 60) == 0, "a pipe of the run was closed in the forked process"
    finally:
        for pipe in pipes:
            for fd in pipe:
                os.close(fd)


def _wait(pid, seconds):
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked process hung")
        time.sleep(0.05)


def _gone(pid):
    """Whether ``pid`` has ended (a zombie counts: its parent may not reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT", "fork-outlives"])
def test_the_child_ends_with_the_run(cold, how):
    """Killed, interrupted (Ctrl-C) or ended while a forked process of it lives on, the run leaves
    no compile-ahead process behind (they watch their stdin and their parent process id)."""
    script = textwrap.dedent(f"""
        import os, sys, time
        from bowlrp import compile_ahead as ahead
        from tests.bowlrp import _ahead_kernels as K
        jobs = ahead.uncompiled([K.spec(name, f"(Array({{t}}, 1, 'C', False, aligned=True), {{K.F64}})")
                                 for name in K.NAMES[9:] for t in ("float64", "float32", "int64", "int32")])
        handle = ahead.compile_ahead(jobs)
        if {how == "fork-outlives"!r} and os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        print(*[child.proc.pid for child in handle._children], flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": ROOT, "NUMBA_CACHE_DIR": str(cold)}
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env,
                           start_new_session=True, preexec_fn=default_sigint)
    try:
        children = [int(pid) for pid in run.stdout.readline().split()]
        assert children and not any(map(_gone, children))  # still compiling twelve jobs when the run ends
        sent = signal.SIGINT if how == "SIGINT" else signal.SIGKILL
        run.send_signal(sent)
        run.wait(timeout=60)
        deadline = time.monotonic() + 30
        while not all(map(_gone, children)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(map(_gone, children)), f"a compile-ahead process outlived the run ({how})"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # the forked sleeper too
        run.wait()
