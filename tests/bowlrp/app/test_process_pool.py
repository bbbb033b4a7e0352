"""The ``-j N`` worker pool (:mod:`bowlrp.app.process_pool`) on a BoW/SVM model: workers forked from
the run's own process give the serial run's files bit for bit (also after the run's process used
numba's OpenMP threads, which a forked child must never touch), a worker that dies ends the run with
an error naming it while every recorded result stays valid and a rerun completes the folder, and
the pool leaves no process behind."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from bowlrp.app import process_pool
from bowlrp.app.adapters import BoWExplainer
from bowlrp.app.batch import explain_batch, read_manifest
from bowlrp.app.executors import WorkerLossError
from bowlrp.app.run_folder import verified
from bowlrp.jit import forced_builds
from tests.bowlrp.app import cli_data
from tests.bowlrp.app.run_checks import assert_same_outputs, fork_from_the_run

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="workers are forked from the run's process on Linux only")

N_IMAGES = 14


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    written = cli_data.write_scenes(root, N_IMAGES)
    data = written["scenes"]
    return {"images": written["train"], "labels": data.labels, "train": data.images}


@pytest.fixture(scope="module", params=["intersection", "exp_chi2"])
def explainer(request, scenes):
    """An exact kernel and a Taylor kernel (root search), fitted on the images explained."""
    return BoWExplainer(cli_data.tiny_bow(scenes["train"], scenes["labels"], kernel=request.param))


@pytest.fixture
def forkable(monkeypatch):
    """The test's workers are forked from its process (unless it sets FORK_DRIVER to False)."""
    fork_from_the_run(monkeypatch)


def _children():
    """This process's live child processes (``active_children`` also reaps the finished ones)."""
    return {child.pid for child in multiprocessing.active_children()}


def test_forked_workers_give_the_serial_files_bit_for_bit(scenes, explainer, tmp_path, forkable):
    explain_batch(explainer, [scenes["images"]], tmp_path / "serial", chunk_size=3, progress=False)
    before = _children()
    explain_batch(explainer, [scenes["images"]], tmp_path / "par", chunk_size=3, n_jobs=2, progress=False)
    assert_same_outputs(tmp_path / "serial", tmp_path / "par")
    assert _children() <= before  # the workers are gone


def test_workers_forked_after_the_driver_used_openmp(scenes, explainer, tmp_path, forkable):
    """GNU OpenMP kills a forked child that enters a parallel region once its parent has used
    OpenMP: the workers run the serial builds only, so a run after parallel kernels still works."""
    with forced_builds("parallel"):
        explainer.explain([np.asarray(scenes["train"][0])])  # this process now runs OpenMP threads
    explain_batch(explainer, [scenes["images"]], tmp_path / "serial", chunk_size=4, progress=False)
    explain_batch(explainer, [scenes["images"]], tmp_path / "par", chunk_size=4, n_jobs=2, progress=False)
    assert_same_outputs(tmp_path / "serial", tmp_path / "par")
    # even a run started where parallel builds are forced: the workers inherit that setting, and
    # bowlrp.jit.serial_only() overrides it in them for good
    with forced_builds("parallel"):
        explain_batch(explainer, [scenes["images"]], tmp_path / "forced", chunk_size=4, n_jobs=2,
                      progress=False)
    assert_same_outputs(tmp_path / "serial", tmp_path / "forced")


class DyingExplainer:
    """Kills the worker process that explains its third chunk (never the driver)."""

    def __init__(self, inner):
        self.inner, self.driver, self.calls = inner, os.getpid(), 0

    def describe(self):
        return self.inner.describe()

    def explain(self, images, target=None):
        if os.getpid() != self.driver:
            self.calls += 1  # per process: each worker has its own copy
            if self.calls == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.explain(images, target=target)


@pytest.mark.parametrize("fork_driver", [True, False])
def test_a_killed_worker_is_named_and_the_rerun_completes(scenes, explainer, tmp_path, monkeypatch,
                                                           forkable, fork_driver):
    monkeypatch.setattr(process_pool, "FORK_DRIVER", fork_driver)
    monkeypatch.setattr(process_pool, "DRIVER_HELPS", False)  # (the server's workers do every chunk)
    out, before = tmp_path / "par", _children()
    with pytest.raises(WorkerLossError, match=r"killed by SIGKILL.*rerun the same command to resume"):
        explain_batch(DyingExplainer(explainer), [scenes["images"]], out, chunk_size=1, n_jobs=2,
                      progress=False)
    assert _children() <= before  # the other worker was stopped too
    records = read_manifest(out)
    assert len(records) < N_IMAGES  # the run stopped early...
    assert all(verified(str(out), record) for record in records.values())  # ...with only whole results
    result = explain_batch(explainer, [scenes["images"]], out, chunk_size=1, n_jobs=2, progress=False)
    assert result.new == N_IMAGES - len(records) and result.complete
    explain_batch(explainer, [scenes["images"]], tmp_path / "serial", chunk_size=1, progress=False)
    assert_same_outputs(tmp_path / "serial", out)


def test_the_workers_come_from_the_server_while_another_thread_runs(monkeypatch):
    """A fork copies only the calling thread: with another thread alive (it might hold a lock the
    child needs), the workers are forked from the server instead. A fresh interpreter, like the
    command line's, forks them itself, also once the batch threads of ``parallel_map`` run."""
    code = ("import numba; from bowlrp import jit; from bowlrp.app import process_pool as p\n"
            "alone = p.driver_forkable()\n"
            "with jit.limited_threads(2), jit.forced_builds('parallel'):\n"
            "    jit.parallel_map(abs, range(8), work=1e9)\n"
            "import threading\n"
            "print(alone, p.driver_forkable(), sorted({t.name[:12] for t in threading.enumerate()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("True True") and "bowlrp-batch" in out, out
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="a-user-thread")
    thread.start()
    try:
        assert not process_pool.driver_forkable()
    finally:
        stop.set()
        thread.join()
    monkeypatch.setattr(process_pool, "FORK_DRIVER", False)
    assert not process_pool.driver_forkable()


def test_a_forked_worker_does_not_hold_the_runs_lock(tmp_path):
    """A worker outliving its run by a moment (it notices its parent's death within half a second)
    must not keep the folder locked: the child closes its copy of the lock file at the fork."""
    from bowlrp.app.run_folder import RunLock, RunLockedError

    read, write = os.pipe()
    up_read, up_write = os.pipe()
    with RunLock(tmp_path):
        child = os.fork()
        if child == 0:  # the worker: says it runs, then holds on until the parent locked again
            os.write(up_write, b"x")
            os.read(read, 1)
            os._exit(0)
        assert os.read(up_read, 1) == b"x"  # (the child's at-fork handlers have run)
    try:
        with RunLock(tmp_path):  # the run is over: the lock is free although the child lives
            assert os.waitpid(child, os.WNOHANG) == (0, 0)
        with RunLock(tmp_path), pytest.raises(RunLockedError):
            RunLock(tmp_path).__enter__()  # (the lock itself still works)
    finally:
        os.write(write, b"x")
        os.waitpid(child, 0)
        for fd in (read, write, up_read, up_write):
            os.close(fd)


def test_a_failing_run_stops_its_workers_before_anything_else(scenes, explainer, tmp_path, monkeypatch,
                                                                forkable):
    """The run's own error reaches the caller even when discarding the unfinished ``relevances.npz``
    fails (a full disk), and the workers are stopped first: none outlives the run or its lock."""
    import errno

    from bowlrp.app import batch

    discard = batch._RelevanceArchive.discard

    def disk_full(self):
        discard(self)  # (the file goes, then the error a full disk could give)
        raise OSError(errno.ENOSPC, "No space left on device")

    def stop_after_one(record):
        raise RuntimeError("the caller's own error")

    monkeypatch.setattr(batch._RelevanceArchive, "discard", disk_full)
    out, before = tmp_path / "par", _children()
    with pytest.raises(OSError, match="No space") as failure:
        explain_batch(explainer, [scenes["images"]], out, chunk_size=1, n_jobs=2, progress=False,
                      on_result=stop_after_one)
    assert isinstance(failure.value.__context__, RuntimeError)  # raised while handling the run's error
    assert _children() <= before  # the workers were stopped before the archive was touched
    monkeypatch.undo()
    fork_from_the_run(monkeypatch)
    with pytest.raises(RuntimeError, match="the caller's own error"):
        explain_batch(explainer, [scenes["images"]], tmp_path / "again", chunk_size=1, n_jobs=2,
                      progress=False, on_result=stop_after_one)
    assert _children() <= before
    assert not (tmp_path / "again" / ".relevances.npz.tmp").exists()
    assert all(verified(str(tmp_path / "again"), r) for r in read_manifest(tmp_path / "again").values())
