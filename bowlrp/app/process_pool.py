"""``-j N`` on one machine: worker processes forked from a warm server, sent the model once, writing
their own results.

What a joblib/loky pool costs (still available with ``backend="loky"``), and what this pool does
instead:

* **Start-up.** Every loky worker is a fresh interpreter that imports numpy, scikit-learn, scipy,
  numba and bowlrp before it can unpickle the model: about 2 s of CPU each, paid in parallel with
  nothing, so ``-j 2`` started about 2 s behind ``-j 1``. Here one server process (Python's
  ``forkserver``) imports them once, and each worker is a ``fork`` of it. The server is a clean
  interpreter that never ran OpenMP or numba's thread pool, so forking it is safe (forking the run's
  own process is not: GNU OpenMP, which numba and scikit-learn use, deadlocks or aborts in a forked
  child once the parent has used it). :func:`prestart` starts the server early (the command line
  does so before it loads the model), so its imports overlap the driver's.
* **The model** is pickled once per worker (the initializer's arguments), not with every chunk.
* **Writing.** The workers write each image's files (fsync'ed and renamed) and send back only the
  manifest fields; the driver fsyncs the folders and appends the records. Before, the driver wrote
  every file itself, which on small images took longer than explaining them.
* **Threads.** Each worker runs one numba thread and one BLAS/OpenMP thread: the workers are the
  parallelism, and a second pool per process would only fight over the same cores.
* **No idle start.** Until the workers are up, the driver explains chunks itself (one thread), so
  the start-up overlaps useful work instead of adding to it; a run the driver finishes alone kills
  the still-importing server rather than wait for it.

Guarantees kept: the same code explains and writes each image, so results are bit-identical to a
serial run; workers exit within about a second of the driver's death (they watch the server, which
exits when the driver does); a closed or interrupted run terminates its workers before it returns,
so none writes into the folder after the run has released its lock.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import spawn

from bowlrp.app.executors import _exit_with_parent, explain_chunk, written
from bowlrp.jit import limited_threads

__all__ = ["available", "prestart", "run_processes"]

# what the server imports before it forks workers; without a model at hand: what both kinds need
_PRELOAD = ["bowlrp.app.process_pool", "bowlrp.app.adapters", "bowlrp.bow.classifier", "nets",
            "bowlrp.app._server_warmup"]

# while the workers start, the driver explains chunks itself (tests turn it off to make the workers
# do every chunk)
DRIVER_HELPS = True

_worker: dict = {}  # in a worker: the explainer and the writer, set once by the initializer


def available(explainer=None) -> bool:
    """Can this platform fork workers from a server process (Linux, macOS: yes; Windows: no), and
    can they unpickle ``explainer``? An explainer or model whose class is defined in a script
    (``__main__``) cannot be: the workers do not run the script (joblib's loky, which pickles such
    classes by value, serves those)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    return all(type(obj).__module__ != "__main__" for obj in (explainer, getattr(explainer, "model", None)))


def _preload(explainer=None) -> list:
    """Modules the workers of ``explainer`` need (all of ``_PRELOAD`` without one): importing only
    those keeps the server's start short (a network needs no BoW pipeline, and the other way round)."""
    if explainer is None:
        return list(_PRELOAD)
    model = getattr(explainer, "model", None)
    modules = ["bowlrp.app.process_pool", type(explainer).__module__, type(model).__module__]
    if type(model).__module__.split(".")[0] == "nets":
        modules.append("nets")  # LRP itself, imported on the first explanation
    return modules + ["bowlrp.app._server_warmup"]


def _context(explainer=None):
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_preload(explainer))  # no effect once the server runs
    return context


def prestart() -> None:
    """Start the fork server now (it imports the model libraries in the background), so that the
    workers of a run started a little later are ready at once. Harmless when it already runs."""
    if available():
        from multiprocessing import forkserver

        _context()
        forkserver.ensure_running()


@contextlib.contextmanager
def _without_main():
    """Start processes that do not import the driver's ``__main__``.

    multiprocessing makes every non-fork child re-run the parent's main script (or module) so that
    functions defined there can be unpickled; ours need nothing from it, and re-running a user's
    script without an ``if __name__ == "__main__"`` guard would start the run again in every worker.
    ``spawn.get_preparation_data`` is what tells the child to; the patch lasts while workers start."""
    original = spawn.get_preparation_data

    def prepared(name):
        data = original(name)
        data.pop("init_main_from_name", None)
        data.pop("init_main_from_path", None)
        return data

    spawn.get_preparation_data = prepared
    try:
        yield
    finally:
        spawn.get_preparation_data = original


def _limit_worker_threads() -> None:
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)
    threadpool_limits(limits=1)  # BLAS and OpenMP pools of this process, for its whole life


def _release_server() -> None:
    """Close this worker's copy of the fork server's keep-alive pipe.

    multiprocessing hands every child the write end of the pipe whose closing tells the server that
    the driver is gone (so that children could fork through it too). Held by our workers, it would
    keep the server alive after the driver died, and the workers, which watch the server, with it."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        os.close(fd)
        server._forkserver_alive_fd = None


def _init_worker(explainer, write) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops us
    _release_server()
    _exit_with_parent()
    _limit_worker_threads()
    _worker.update(explainer=explainer, write=write)


def _explain_and_write(keys, images, target, failures):
    result = explain_chunk(_worker["explainer"], keys, images, target, failures, threads=1)
    return written(result, _worker["write"], received=True)


def _n_workers(n_jobs: int) -> int:
    """joblib's meaning of ``n_jobs``: -1 = every core, -2 = all but one, ..."""
    cores = os.cpu_count() or 1
    return max(1, n_jobs if n_jobs > 0 else cores + 1 + n_jobs)


def _start_workers(pool: ProcessPoolExecutor, n: int, started: list) -> None:
    """Start the ``n`` workers (the pool starts one per submit). Each start waits until the server
    has imported its modules and forked the worker, so it runs in a thread of its own while the
    driver works; ``started`` receives a future per worker, done once that worker is up."""
    with _without_main():
        for _ in range(n):
            try:
                started.append(pool.submit(os.getpid))
            except (RuntimeError, OSError, EOFError):  # the run ended first (see _abandon_server)
                return


def _abandon_server() -> None:
    """The run finished before its workers came up (the driver did every chunk): kill the server that
    is still importing instead of waiting for it; the next run starts a new one."""
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel queued chunks and end the workers now (a worker still writing could otherwise touch
    the folder after the run released its lock). ``_processes`` is the executor's own table of its
    workers; Python < 3.14 has no public way to terminate them."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)


def run_processes(explainer, chunks, target, write, n_jobs):
    """Explain ``chunks`` in ``n_jobs`` forked workers; yield each chunk's written results as it
    finishes (see :mod:`bowlrp.app.executors` for the protocol)."""
    n = _n_workers(n_jobs)
    pool = ProcessPoolExecutor(n, mp_context=_context(explainer), initializer=_init_worker,
                               initargs=(explainer, write))
    finished, starter, submitted = False, None, False
    try:
        started = []
        starter = threading.Thread(target=_start_workers, args=(pool, n, started), daemon=True,
                                   name="bowlrp-start-workers")
        starter.start()
        chunks, pending = iter(chunks), set()
        for chunk in chunks:
            up = not starter.is_alive() and all(future.done() for future in started)
            if pending or not DRIVER_HELPS or up:
                # two chunks per worker in flight: one running, one waiting, no more images in memory
                pending.add(pool.submit(_explain_and_write, chunk[0], chunk[1], target, chunk[2]))
                submitted = True
                if len(pending) >= 2 * n:
                    break
            else:
                # no worker is up yet (the server may still be importing): explain the chunk here, as
                # a serial run would, on one thread so as not to slow the start; a short run then
                # takes about the longer of the serial run and the start-up, not their sum
                with limited_threads(1):
                    yield written(explain_chunk(explainer, chunk[0], chunk[1], target, chunk[2]), write)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                chunk = next(chunks, None)
                if chunk is not None:
                    pending.add(pool.submit(_explain_and_write, chunk[0], chunk[1], target, chunk[2]))
                yield result
        finished = True
    finally:
        if starter is not None:
            # nothing went to the pool (the run is done, or stopped early): do not wait for its start
            if not submitted and starter.is_alive():
                _abandon_server()
            starter.join()  # no worker may start after the pool is stopped
        if finished and submitted:
            pool.shutdown(wait=True)
        else:
            _stop(pool)
