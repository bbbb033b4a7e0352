"""Where the chunks of a batch run are explained: in this process, in joblib workers, on a dask cluster.

Each executor takes an iterator of chunks ``(keys, images, read_failures)`` and a writer of one
image's result files (:class:`bowlrp.app.run_folder.ResultWriter`), and yields, per chunk,
``[(key, record fields or None, reason or None)]`` as chunks finish. The numbers do not depend on
the executor: each image's explanation is computed by the same code (:func:`explain_chunk`) on the
same inputs, and its files are written by the same writer. Local worker processes
(:mod:`bowlrp.app.process_pool`, the default for ``n_jobs != 1``) write their own results; joblib
backends and dask send the heatmaps back and the driver writes them (dask workers may not see the
output folder).

Two guarantees beyond that:

* **joblib workers die with their parent.** A loky/multiprocessing worker whose parent is killed
  (SIGKILL, SIGTERM, a crash) exits within about half a second (:func:`_exit_with_parent`)
  instead of idling for minutes.
* **dask survives worker losses.** A chunk whose worker died is sent again, with the model sent
  again to the surviving and restarted workers, as long as one worker remains; when none does
  (or a chunk fails too often) the error names the workers that died.
"""

from __future__ import annotations

import os
import threading
from contextlib import nullcontext
from itertools import islice

from bowlrp.app.adapters import realign
from bowlrp.jit import limited_threads

__all__ = ["explain_chunk", "prepare_workers", "run_chunks", "run_serial", "run_joblib", "run_dask",
           "WorkerLossError"]

_DASK_ATTEMPTS = 4  # tries of one chunk before the run gives up
_DASK_GRACE_SECONDS = 30.0  # how long to wait for a restarted worker when none is left
_PARENT_POLL_SECONDS = 0.5


class WorkerLossError(RuntimeError):
    """Workers died: a local worker process (``n_jobs``), or dask workers faster than the run could
    resubmit their work. The message names them; the results recorded before stay recorded."""


# ---------------------------------------------------------------------- the work of one chunk
_OVERFLOW_HINT = "the model's numbers overflow: check its weights and the input scaling"


def _failure(exc) -> str:
    reason = f"cannot explain: {type(exc).__name__}: {exc}"
    # Heatmap and both model branches refuse non-finite numbers with these words: say the likely cause
    if any(words in str(exc).lower() for words in ("nan or inf", "non-finite")):
        reason += f" ({_OVERFLOW_HINT})"
    return reason


def explain_chunk(explainer, keys, images, target, read_failures, threads=None):
    """Explain a chunk; on an error, explain image by image so only the bad ones are lost.

    Runs on the workers. Returns ``[(key, Heatmap or None, reason or None)]`` including the
    images the driver could not read (``read_failures``), so the driver has one stream of results.
    (Heatmaps never hold non-finite numbers: ``Heatmap`` and both model branches refuse them, and
    the reason then names the likely cause, overflowing weights.)
    """
    results = [(key, None, reason) for key, reason in read_failures]
    if not keys:
        return results
    # workers are the parallelism: one numba and one BLAS thread each while they explain (restored
    # afterwards), or several processes with full thread pools would fight over the same cores
    with limited_threads(threads):
        try:
            maps = explainer.explain(list(images), target=target)
            if len(maps) != len(keys):
                raise RuntimeError(f"explainer returned {len(maps)} heatmaps for {len(keys)} images")
        except Exception as exc:  # one bad image must not sink the chunk: find it
            if len(keys) == 1:
                return results + [(keys[0], None, _failure(exc))]
            for key, image in zip(keys, images):
                results += explain_chunk(explainer, [key], [image], target, [])
            return results
    return results + [(key, heatmap, None) for key, heatmap in zip(keys, maps)]


def written(result, write, received=False):
    """``explain_chunk``'s result with each heatmap replaced by ``write(key, heatmap)``, the fields
    of its manifest record (the heatmap is dropped: nothing holds more than a chunk). The files are
    durable when it returns: the writer's folders are fsync'ed (``write.sync()``) after the chunk's
    files, so the process that wrote them does it, once per chunk, before any record names them."""
    out = []
    for key, heatmap, reason in result:
        if heatmap is not None and received:
            realign(heatmap)  # received arrays may sit at odd offsets (see adapters.realign)
        out.append((key, None if heatmap is None else write(key, heatmap), reason))
    sync = getattr(write, "sync", None)
    if sync is not None and any(fields is not None for _, fields, _ in out):
        sync()
    return out


def run_chunks(explainer, chunks, target, write, n_jobs=1, backend=None, scheduler=None):
    """The executor ``explain_batch`` asked for: dask with a ``scheduler``, in this process for
    ``n_jobs == 1`` (no backend), joblib with a ``backend``, else local worker processes."""
    if scheduler is not None:
        return run_dask(explainer, chunks, target, write, scheduler)
    if n_jobs == 1 and backend is None:
        return run_serial(explainer, chunks, target, write)
    if backend is None:
        from bowlrp.app.process_pool import run_processes

        run = run_processes(explainer, chunks, target, write, n_jobs)
        if run is not None:
            return run
    return run_joblib(explainer, chunks, target, write, n_jobs, backend)


def prepare_workers(n_jobs=1, backend=None, scheduler=None) -> None:
    """Start what the workers of a coming run are forked from (when :func:`run_chunks` will use
    local worker processes forked from a server, not from this process), so that it imports the
    model libraries while the caller still loads the model and lists the images. Optional: a run
    starts it itself when it has not been."""
    if scheduler is None and backend is None and n_jobs != 1:
        from bowlrp.app.process_pool import prestart

        prestart()


# ---------------------------------------------------------------------- in this process
def run_serial(explainer, chunks, target, write):
    for keys, images, failures in chunks:
        yield written(explain_chunk(explainer, keys, images, target, failures), write)


# ---------------------------------------------------------------------- joblib
def _exit_with_parent(parent_pid: int | None = None) -> None:
    """Worker initializer: exit as soon as the parent process is gone.

    A worker is re-parented (to init or a subreaper) when its parent dies, so a changed
    ``os.getppid()`` means the run is over; a daemon thread checks twice a second. ``parent_pid``
    None watches the parent the worker has now (a fork server's workers watch the server, which
    exits when the run's process does).
    """
    if parent_pid is None:
        parent_pid = os.getppid()

    def watch():
        import time

        while os.getppid() == parent_pid:
            time.sleep(_PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="bowlrp-parent-watch", daemon=True).start()


def run_joblib(explainer, chunks, target, write, n_jobs, backend):
    from joblib import Parallel, delayed, parallel_config

    backend_name = backend or "loky"
    options = {}
    if backend_name in ("loky", "multiprocessing"):  # process pools: workers must die with us
        options = {"initializer": _exit_with_parent, "initargs": (os.getpid(),)}
    # parallel_config (not Parallel(backend=...)) also finds the external backends such as "dask"
    config = parallel_config(backend=backend_name, **options) if backend or options else nullcontext()
    with config:
        parallel = Parallel(n_jobs=n_jobs, return_as="generator_unordered", pre_dispatch="2*n_jobs")
        tasks = (delayed(explain_chunk)(explainer, k, i, target, f, threads=1) for k, i, f in chunks)
        for result in parallel(tasks):
            yield written(result, write, received=True)


# ---------------------------------------------------------------------- dask
def _worker_names(client, grace: float = 0.0) -> set:
    """Addresses of the live workers; with ``grace``, wait that long for one to (re)appear."""
    try:
        if grace > 0:
            try:
                client.wait_for_workers(1, timeout=grace)
            except TimeoutError:
                pass
        return set(client.scheduler_info().get("workers", {}))
    except Exception:  # the scheduler itself is gone
        return set()


def run_dask(explainer, chunks, target, write, scheduler):
    from distributed import Client, as_completed

    own_client = not isinstance(scheduler, Client)
    client = Client(scheduler) if own_client else scheduler
    try:
        workers = client.scheduler_info().get("workers", {})
        slots = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
        window = 2 * slots  # chunks in flight: enough to keep every worker busy, no more
        seen, lost = set(workers), []
        state = {"model": client.scatter(explainer, broadcast=True, hash=False)}
        pending, attempts = {}, {}
        chunks = iter(chunks)

        def submit(chunk):
            keys, images, failures = chunk
            future = client.submit(explain_chunk, state["model"], keys, images, target, failures, threads=1,
                                   pure=False)
            pending[future.key] = chunk
            return future

        running = as_completed([submit(c) for c in islice(chunks, window)])
        for future in running:
            chunk = pending.pop(future.key)
            try:
                result = future.result()
            except Exception as exc:  # explain_chunk catches model errors: this is a lost worker
                now = _worker_names(client)
                lost += sorted(seen - now - set(lost))
                if not now:  # a nanny may be restarting them: wait a little before giving up
                    now = _worker_names(client, grace=_DASK_GRACE_SECONDS)
                seen |= now
                tries = attempts[id(chunk)] = attempts.get(id(chunk), 0) + 1
                if not now or tries >= _DASK_ATTEMPTS:
                    raise WorkerLossError(
                        f"dask run failed after losing workers {', '.join(lost) or '(none seen)'}; "
                        f"{len(now)} workers left, chunk tried {tries} times; last error: "
                        f"{type(exc).__name__}: {exc}") from exc
                # the model may have died with the worker that held it: send it again
                state["model"] = client.scatter(explainer, broadcast=True, hash=False)
                running.add(submit(chunk))
                continue
            finally:
                future.release()
            following = next(chunks, None)
            if following is not None:
                running.add(submit(following))
            yield written(result, write, received=True)
    finally:
        if own_client:
            client.close()
