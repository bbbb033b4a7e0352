"""``-j N`` on one machine: worker processes forked from the run's own process (or from a warm
server), holding the model from the start, writing their own results.

What a joblib/loky pool costs (still available with ``backend="loky"``), and what this pool does
instead:

* **Start-up.** Every loky worker is a fresh interpreter that imports numpy, scikit-learn, scipy,
  numba and bowlrp, unpickles the model and loads its numba kernels from the disk cache before it
  explains anything: about 2 s of CPU each, longer than a whole serial run of 100 small images.
  Here the workers are ``fork`` s of the run's own process (the driver), taken once it has
  explained one image: they inherit the imported modules, the model and the compiled kernels, and
  start in milliseconds. ``n_jobs`` counts the driver: it forks ``n_jobs - 1`` workers and all of
  them claim pieces of the inputs from a shared counter, pieces that shrink toward the end, so
  that no process idles while another finishes (:mod:`bowlrp.app.forked_workers`).
* **Safe forking.** Only the calling thread survives a fork, so the driver forks only from its main
  thread while no other Python thread runs (the project's own batch threads idle between calls);
  otherwise (a dask client, a GUI, any thread that might hold a lock the child needs) the workers
  are forked from a server process instead (Python's ``forkserver``: a clean interpreter that
  imports the model's modules once, started early by :func:`prestart`). Threads that C libraries
  started do not survive either: OpenBLAS re-creates its threads in the child, but GNU OpenMP,
  which numba's parallel kernels use, aborts a child of a process that has used it as soon as the
  child enters a parallel region. The workers never do: they run one numba thread (so every
  kernel runs its serial build, see :func:`bowlrp.jit.use_parallel`) and one BLAS/OpenMP thread.
  The workers are the parallelism; a second pool per process would only fight over the cores.
* **The model** is never pickled for a forked worker (it is in the inherited memory), and once per
  worker (the initializer's arguments) for a server's.
* **Reading and writing.** Forked workers read their own images; every worker writes each image's
  files (fsync'ed and renamed, then their folders fsync'ed) and sends back only the manifest
  fields, which the driver appends. Before, the driver wrote every file itself, which on small
  images took longer than explaining them.
* **No idle start** with a server: until its workers are up, the driver explains chunks itself
  (one thread), so the start-up overlaps useful work; a run the driver finishes alone kills the
  still-importing server rather than wait for it.

Guarantees kept: the same code explains and writes each image (in the chunks of a serial run
wherever an image's numbers could depend on its chunk), so results are bit-identical to it; a worker
that dies (killed, out of memory) ends the run with a :class:`~bowlrp.app.executors.WorkerLossError`
naming it, the images recorded before stay recorded and a rerun resumes; workers exit within about a
second of the driver's death (they watch their parent: the driver, or the server, which exits when
the driver does); a closed or interrupted run terminates its workers before it returns, so none
writes into the folder after the run has released its lock (which forked workers do not hold: see
:class:`bowlrp.app.run_folder.RunLock`).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import spawn

from bowlrp.app.executors import WorkerLossError, _exit_with_parent, explain_chunk, run_serial, written
from bowlrp.app.forked_workers import LOST, describe_loss, run_forked
from bowlrp.jit import limited_threads, serial_only

__all__ = ["pool_kind", "prestart", "run_processes"]

# what the server imports before it forks workers; without a model at hand: what both kinds need
_PRELOAD = ["bowlrp.app.process_pool", "bowlrp.app.adapters", "bowlrp.bow.classifier", "nets",
            "bowlrp.app._server_warmup"]

# fork the workers from the run's own process when that is safe (tests and the benchmark turn it off
# to run the server's workers)
FORK_DRIVER = True

# the driver explains chunks itself: while a server's workers start, and, with workers forked from
# it, as one of the n_jobs processes whenever its workers have enough work (tests turn it off to
# make the workers do every chunk)
DRIVER_HELPS = True

# the thread pools that sit idle between calls, by their ThreadPoolExecutor's name prefix: the batch
# threads of bowlrp.jit.parallel_map and the convolution workers of nets.layers.linear; both modules
# forget their pool in a forked child (os.register_at_fork), so a fork next to them is safe
_IDLE_POOLS = ("bowlrp-batch", "nets-conv")

_worker: dict = {}  # in a worker: the explainer and the writer, set once by the initializer


def driver_forkable() -> bool:
    """Can the workers be forked from this process now? On Linux (macOS's system libraries are not
    safe to use in a forked child), from the main thread, while no other Python thread is alive but
    the idle pool threads of :func:`bowlrp.jit.parallel_map` and of ``nets``' convolutions: a
    thread that holds a lock at the fork (the logging module's, a file's) would leave it locked for
    ever in the child."""
    if not (FORK_DRIVER and sys.platform.startswith("linux")):
        return False
    main = threading.main_thread()
    return threading.current_thread() is main and all(
        thread is main or thread.name.startswith(_IDLE_POOLS) for thread in threading.enumerate())


def pool_kind(explainer=None):
    """Where this process can start worker processes for ``explainer`` now: ``"forked"`` from itself
    (see :func:`driver_forkable`: they inherit everything), ``"server"`` (forked from a server
    process, on Linux and macOS, that can unpickle it), or None (Windows; or the server could not:
    an explainer or model whose class is defined in a script, ``__main__``, which the server does
    not run; joblib's loky, which pickles such classes by value, serves those). A run asks once
    (:func:`run_processes`)."""
    if driver_forkable():
        return "forked"
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    scripted = (explainer, getattr(explainer, "model", None))
    return None if any(type(obj).__module__ == "__main__" for obj in scripted) else "server"


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
    workers of a run started a little later are ready at once, unless they will be forked from this
    process (the server would only take CPU from it). Harmless when it already runs."""
    if pool_kind() == "server":
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
    """One numba and one BLAS/OpenMP thread for the worker's whole life (entered, never left)."""
    _worker["threads"] = limited_threads(1)
    _worker["threads"].__enter__()


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


def _init_worker(explainer, write, forked=False, parent=None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a driver's own handler must not keep us alive
    if not forked:
        _release_server()
    else:
        serial_only()  # forked from the run, which may have used OpenMP: a parallel region would abort us
    # a forked worker watches the run's process by the pid taken before the fork: read here, after
    # it, the parent of a worker whose driver died in between would already be init
    _exit_with_parent(parent)
    _limit_worker_threads()
    if not forked:  # (a forked worker gets both as arguments: forked_workers._work)
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


def _stream(pool, chunks, target, window, pending=()):
    """Keep ``window`` chunks in flight in ``pool``; yield each chunk's written results as it
    finishes. A worker that dies raises :class:`WorkerLossError` (the results yielded so far are the
    driver's to record: a rerun resumes after them)."""
    pending, seen = set(pending), {}

    def submit(chunk):
        pending.add(pool.submit(_explain_and_write, chunk[0], chunk[1], target, chunk[2]))
        seen.update(getattr(pool, "_processes", None) or {})  # the executor's table of its workers

    def finished(block):
        done, _ = wait(pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        pending.difference_update(done)
        return [future.result() for future in done]

    try:
        for chunk in chunks:
            yield from finished(block=len(pending) >= window)
            submit(chunk)
        while pending:
            yield from finished(block=True)
    except BrokenProcessPool as exc:
        seen.update(getattr(pool, "_processes", None) or {})
        raise WorkerLossError(LOST.format(describe_loss(list(seen.values())))) from exc


def _run_forked(explainer, chunks, target, write, n):
    """``n - 1`` workers forked from this process, which explains pieces too (``n`` workers and
    this process only recording without :data:`DRIVER_HELPS`): :mod:`bowlrp.app.forked_workers`."""
    workers = n - 1 if DRIVER_HELPS else n
    yield from run_forked(explainer, chunks, target, write, workers, DRIVER_HELPS,
                          functools.partial(_init_worker, explainer, write, True, os.getpid()))


def _run_served(explainer, chunks, target, write, n):
    """Workers forked from a server process, the driver explaining chunks until they are up."""
    pool = ProcessPoolExecutor(n, mp_context=_context(explainer), initializer=_init_worker,
                               initargs=(explainer, write))
    finished, starter, handed = False, None, set()  # handed: the chunk that went to the pool first
    try:
        started = []
        starter = threading.Thread(target=_start_workers, args=(pool, n, started), daemon=True,
                                   name="bowlrp-start-workers")
        starter.start()
        for chunk in chunks:
            if not DRIVER_HELPS or (not starter.is_alive() and all(future.done() for future in started)):
                handed.add(pool.submit(_explain_and_write, chunk[0], chunk[1], target, chunk[2]))
                break
            # no worker is up yet (the server may still be importing): explain the chunk here, as
            # a serial run would, on one thread so as not to slow the start; a short run then
            # takes about the longer of the serial run and the start-up, not their sum
            with limited_threads(1):
                yield written(explain_chunk(explainer, chunk[0], chunk[1], target, chunk[2]), write)
        # two chunks per worker in flight: one running, one waiting, no more images in memory
        yield from _stream(pool, chunks, target, 2 * n, handed)
        finished = True
    finally:
        if starter is not None:
            # nothing went to the pool (the run is done, or stopped early): do not wait for its start
            if not handed and starter.is_alive():
                _abandon_server()
            starter.join()  # no worker may start after the pool is stopped
        if finished and handed:
            pool.shutdown(wait=True)
        else:
            _stop(pool)


def run_processes(explainer, chunks, target, write, n_jobs):
    """The run of ``chunks`` in ``n_jobs`` processes: an iterator of each chunk's written results as
    it finishes (see :mod:`bowlrp.app.executors` for the protocol), or None when no local worker can
    take ``explainer`` (:func:`pool_kind`, decided here once for the whole run)."""
    kind = pool_kind(explainer)
    if kind is None:
        return None
    n = _n_workers(n_jobs)
    if n == 1:  # (-2 on two cores): this process alone
        return run_serial(explainer, chunks, target, write)
    if kind == "forked":
        # forked workers read their own images (ImageChunks.read): the inputs, not chunks read here
        return _run_forked(explainer, chunks, target, write, n)
    return _run_served(explainer, iter(chunks), target, write, n)
