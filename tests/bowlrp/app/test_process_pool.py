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
            code = 1
            try:  # never back into pytest in the forked process, whatever fails
                os.write(up_write, b"x")
                os.read(read, 1)
                code = 0
            finally:
                os._exit(code)
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


# ---------------------------------------------------------------------- how the work is shared
def test_pieces_shrink_toward_the_end_within_the_serial_chunks():
    from bowlrp.app.forked_workers import piece_end

    def plan(total, chunk, processes, guided, start=0):
        pieces = []
        while start < total:
            end = piece_end(start, total, chunk, processes, guided)
            pieces.append((start, end))
            start = end
        return pieces

    guided = plan(100, 8, 2, True, start=1)
    assert guided[0][0] == 1 and guided[-1][1] == 100
    assert all(a < b and (b - 1) // 8 == a // 8 for a, b in guided)  # within one serial chunk
    sizes = [b - a for a, b in guided]
    assert max(sizes) == 8 and sizes[-4:] == [1, 1, 1, 1]  # whole chunks first, single images last
    # each piece at most a quarter of what is left per process (two processes: an eighth)
    assert all(b - a <= max(1, -(-(100 - a) // 4)) for a, b in guided)
    # not guided: exactly the serial run's chunks
    assert plan(20, 8, 2, False) == [(0, 8), (8, 16), (16, 20)]


class _ReadLog:
    """Records ``(pid, start, stop)`` of every range of inputs read, in any process (forked workers
    inherit the patch; they append to a file)."""

    def __init__(self, monkeypatch, path):
        from bowlrp.app.image_chunks import ImageChunks

        self.path, read = str(path), ImageChunks.read

        def logged(chunks, start, stop):
            with open(self.path, "a") as fh:
                fh.write(f"{os.getpid()} {start} {min(stop, len(chunks))}\n")
            return read(chunks, start, stop)

        monkeypatch.setattr(ImageChunks, "read", logged)

    def entries(self):
        with open(self.path) as fh:
            return [tuple(int(v) for v in line.split()) for line in fh]


def test_the_run_and_its_worker_share_every_image_once(scenes, explainer, tmp_path, monkeypatch, forkable):
    """The run's process explains too, the first image is not explained twice (its warm-up result
    is kept), and every other image is read and explained by exactly one process."""
    log = _ReadLog(monkeypatch, tmp_path / "reads.log")
    explain_batch(explainer, [scenes["images"]], tmp_path / "par", chunk_size=4, n_jobs=2, progress=False)
    entries = log.entries()
    images = sorted(i for _, start, stop in entries for i in range(start, stop))
    assert images == list(range(N_IMAGES))
    # this process and at most one worker (how many pieces each takes depends on the machine's load)
    pids = {pid for pid, _, _ in entries}
    assert os.getpid() in pids and len(pids) <= 2
    monkeypatch.undo()
    explain_batch(explainer, [scenes["images"]], tmp_path / "serial", chunk_size=4, progress=False)
    assert_same_outputs(tmp_path / "serial", tmp_path / "par")


def test_an_explainer_that_batches_images_gets_the_serial_chunks(scenes, tmp_path, monkeypatch, forkable):
    """With ``batch_size`` > 1 an image's numbers may depend on the images batched with it: the
    processes then claim exactly the serial run's chunks, and the files stay bit-identical."""
    model = cli_data.tiny_bow(scenes["train"], scenes["labels"])
    explainer = BoWExplainer(model, batch_size=3)
    log = _ReadLog(monkeypatch, tmp_path / "reads.log")
    explain_batch(explainer, [scenes["images"]], tmp_path / "par", chunk_size=4, n_jobs=2, progress=False)
    ranges = sorted((start, stop) for _, start, stop in log.entries())
    serial = [(start, min(start + 4, N_IMAGES)) for start in range(0, N_IMAGES, 4)]
    assert ranges == sorted([(0, 1)] + serial)  # (0, 1): the warm-up image, whose result is dropped
    monkeypatch.undo()
    explain_batch(explainer, [scenes["images"]], tmp_path / "serial", chunk_size=4, progress=False)
    assert_same_outputs(tmp_path / "serial", tmp_path / "par")


def test_a_worker_that_cannot_write_stops_the_run_with_its_error(scenes, explainer, tmp_path, monkeypatch,
                                                                 forkable):
    """A worker's own error (here a full disk while writing) reaches the caller as it is; the
    workers are gone, every recorded result is whole, and the pieces this process finished are
    recorded before the error is raised (review finding: they were written and synced, then dropped
    with the error)."""
    import errno

    from bowlrp.app.run_folder import ResultWriter

    driver, write = os.getpid(), ResultWriter.__call__
    written_here = []

    def full_in_workers(self, key, heatmap):
        if os.getpid() != driver:
            raise OSError(errno.ENOSPC, "No space left on device")
        written_here.append(key)
        return write(self, key, heatmap)

    monkeypatch.setattr(ResultWriter, "__call__", full_in_workers)
    out, before = tmp_path / "par", _children()
    with pytest.raises(OSError, match="No space left"):
        explain_batch(explainer, [scenes["images"]], out, chunk_size=2, n_jobs=2, progress=False)
    assert _children() <= before
    records = read_manifest(out)
    assert len(records) < N_IMAGES and all(verified(str(out), r) for r in records.values())
    assert written_here and set(written_here) <= set(records)


def test_one_serial_chunk_of_a_batching_explainer_is_explained_once_without_a_fork(scenes, tmp_path,
                                                                                   monkeypatch, forkable):
    """Nothing to share: the inputs are read and explained once, in this process (review finding: the
    warm-up image was explained, dropped, and the chunk explained again beside a forked worker)."""
    model = cli_data.tiny_bow(scenes["train"], scenes["labels"])
    log = _ReadLog(monkeypatch, tmp_path / "reads.log")
    explain_batch(BoWExplainer(model, batch_size=3), [scenes["images"]], tmp_path / "par",
                  chunk_size=N_IMAGES, n_jobs=2, progress=False)
    assert log.entries() == [(os.getpid(), 0, N_IMAGES)]


def test_workers_are_forked_next_to_the_idle_convolution_threads():
    """A network run on two threads leaves ``nets``' convolution workers idle in the process; they are
    forgotten in a forked child (tests/nets/test_lrp_threads.py forks next to them), so a fresh
    interpreter still forks its workers itself instead of falling back to the slower server."""
    code = ("import threading, numpy as np, nets; from bowlrp.jit import limited_threads\n"
            "from bowlrp.app import process_pool as p\n"
            "rng = np.random.default_rng(0)\n"
            "conv = nets.Sequential([nets.Conv2D(rng.normal(size=(16, 16, 3, 3)), None, padding=1)])\n"
            "with limited_threads(2):\n"
            "    conv(rng.random((8, 16, 32, 32)))\n"
            "print(p.driver_forkable(), sorted({t.name[:9] for t in threading.enumerate()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    if "nets-conv" not in out:
        pytest.skip(f"the convolution ran without its thread pool here (one numba thread): {out}")
    assert out.startswith("True"), out


class _ThreadCounting:
    """Wraps an explainer: after each call, appends ``pid native-threads`` to ``path`` (threads of
    the process that Python did not start: BLAS and OpenMP pools)."""

    def __init__(self, inner, path):
        self.inner, self.path, self.batch_size = inner, path, inner.batch_size

    def describe(self):
        return self.inner.describe()

    def explain(self, images, target=None):
        maps = self.inner.explain(images, target=target)
        native = len(os.listdir("/proc/self/task")) - threading.active_count()
        with open(self.path, "a") as fh:
            fh.write(f"{os.getpid()} {native}\n")
        return maps


def test_no_blas_threads_start_in_the_processes_of_a_run(scenes, explainer, tmp_path, forkable):
    """OpenBLAS stops its thread pool at a fork and starts all of it again whenever its thread count
    is set, even to the count it has; each new thread busy-waits about 0.1 s, taking the cores from
    the processes explaining (a -j 2 run of 100 small images lost a fifth of its time to them). The
    run sets one thread before the fork: neither the worker nor the run's process may start a BLAS
    pool until the run is over, although the model sets one BLAS thread around its own steps."""
    from threadpoolctl import threadpool_info

    pool = sum(lib["num_threads"] - 1 for lib in threadpool_info()
               if lib["internal_api"] == "openblas" and lib.get("threading_layer") == "pthreads")
    if pool == 0:
        pytest.skip("OpenBLAS runs one thread here: it has no pool to start again")
    path = tmp_path / "threads.log"
    explain_batch(_ThreadCounting(explainer, path), [scenes["images"]], tmp_path / "par", chunk_size=2,
                  n_jobs=2, progress=False)
    with open(path) as fh:
        counts = [tuple(int(v) for v in line.split()) for line in fh]
    here = [native for pid, native in counts if pid == os.getpid()]
    there = [native for pid, native in counts if pid != os.getpid()]
    assert there and here[1:]  # both processes explained (the first call here is before the fork)
    assert max(there) == 0  # forked with the main thread alone
    assert max(here[1:]) <= here[0] - pool  # the pool stopped at the fork stays stopped


def test_the_outputs_are_written_before_the_worker_is_joined(scenes, explainer, tmp_path, monkeypatch,
                                                             forkable):
    """Once every image is recorded the run writes scores.csv and relevances.npz, then joins its
    worker (which exits meanwhile) and lifts its thread limit: neither delays the outputs."""
    from bowlrp.app import forked_workers
    from bowlrp.app.run_folder import RELEVANCES_NPZ, SCORES_CSV

    out, stop, seen = tmp_path / "par", forked_workers._Workers.stop, []

    def stopping(self, finished):
        seen.append((finished, (out / SCORES_CSV).exists(), (out / RELEVANCES_NPZ).exists()))
        stop(self, finished)

    monkeypatch.setattr(forked_workers._Workers, "stop", stopping)
    explain_batch(explainer, [scenes["images"]], out, chunk_size=3, n_jobs=2, progress=False)
    assert seen == [(True, True, True)]


class _EndsBeforeDone:
    """A worker's connection that ends the worker between its last results and saying it is done."""

    def __init__(self, conn):
        self.conn = conn

    def send(self, message):
        if message[0] == "done":
            os._exit(3)
        self.conn.send(message)


def test_a_worker_ending_after_every_image_is_saved_warns_and_the_run_succeeds(scenes, explainer, tmp_path,
                                                                                monkeypatch, forkable):
    """Results come only after their files are durably in place, so a worker that ends abnormally
    once every image is recorded cannot touch the outputs: the run is complete and says so, with a
    warning (review of the third speed round: it failed with "rerun the same command to resume",
    which had nothing left to do)."""
    from bowlrp.app import forked_workers
    from bowlrp.app.run_folder import RELEVANCES_NPZ, SCORES_CSV

    work = forked_workers._work

    def ending(initializer, explainer_, chunks, target, write, pieces, conn, foreign):
        return work(initializer, explainer_, chunks, target, write, pieces, _EndsBeforeDone(conn), foreign)

    monkeypatch.setattr(forked_workers, "_work", ending)
    out = tmp_path / "par"
    with pytest.warns(RuntimeWarning, match="after every image was saved: .*exited with code 3"):
        result = explain_batch(explainer, [scenes["images"]], out, chunk_size=3, n_jobs=2, progress=False)
    assert result.ok == result.total and result.pending == 0
    assert all(r["status"] == "ok" for r in read_manifest(str(out)).values())
    assert (out / SCORES_CSV).exists() and (out / RELEVANCES_NPZ).exists()
    monkeypatch.setattr(forked_workers, "_work", work)
    explain_batch(explainer, [scenes["images"]], tmp_path / "one", chunk_size=3, progress=False)
    assert_same_outputs(out, tmp_path / "one")
