"""``-j N`` on Linux: the run's own process and N - 1 workers forked from it, sharing the images by
claiming them piece by piece.

How the work is shared (what a pool with a task queue did before, and why this is faster on short
runs):

* **No hand-over.** The processes claim the next piece of the inputs from a counter in shared
  memory (a lock held for a few microseconds); each reads its images itself, explains them and
  writes their files, and a worker sends back only the manifest fields. The run's process hands
  out nothing and receives no images: it is never the one a worker waits for, so it can explain
  pieces too instead of idling between results.
* **No idle tail.** Pieces shrink toward the end (guided scheduling: a quarter of what is left per
  process, at most ``chunk_size``, at least one image), so every process stops within about one
  image of the others; a fixed chunk could leave one process a whole chunk to finish alone, and a
  queue of chunks handed out in advance could leave it two.
* **Cheap start.** The run's process explains the first image before it forks (the workers inherit
  the kernels numba loaded) and keeps that image's result when it helps with pieces of single
  images; for an explainer that batches, the warm-up result is dropped and image 0 is explained
  again with its serial chunk (one image computed twice, so that its numbers are the serial run's).

Bit-identical results: each image is explained by the same code on the same inputs. Pieces other
than the serial run's chunks change nothing only when each image is computed alone (an explainer
whose ``batch_size`` is 1, the default of both adapters); any other explainer gets whole chunks of
the serial run, claimed the same way.

A worker that dies (killed, out of memory) ends the run with a
:class:`~bowlrp.app.executors.WorkerLossError` naming it; whatever was recorded before stays valid
(a rerun resumes). The run stops its workers (SIGTERM, then waits) before it returns, however it
ends, so none writes into the folder after the run released its lock.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import pickle
import signal
import time
from multiprocessing import popen_fork, sharedctypes, synchronize  # noqa: F401  (see below)
from multiprocessing.connection import wait

from bowlrp.app.executors import WorkerLossError, explain_chunk, written
from bowlrp.jit import limited_threads

__all__ = ["run_forked", "describe_loss", "piece_end", "LOST"]

# (popen_fork, sharedctypes, synchronize: imported now, not while the workers are forked, so that the
# threadpoolctl controller bowlrp.jit builds before the fork stays current in them: it is rebuilt,
# 15 ms per process, whenever sys.modules has grown)

LOST = ("a worker died while explaining: {}; the images finished before are saved: rerun the same "
         "command to resume (with -j 1 if it happens again)")


def piece_end(start: int, total: int, chunk_size: int, processes: int, guided: bool) -> int:
    """Where the piece of inputs that starts at ``start`` ends.

    Never beyond the serial run's chunk that holds ``start`` (so a piece holds at most
    ``chunk_size`` images); ``guided``: a quarter of the remaining inputs per process, at least one.
    """
    end = min(total, (start // chunk_size + 1) * chunk_size)
    if guided:
        end = min(end, start + max(1, math.ceil((total - start) / (2 * processes))))
    return end


class _Pieces:
    """The shared counter the processes claim pieces from (made before the fork)."""

    def __init__(self, total: int, chunk_size: int, processes: int, guided: bool, first: int = 0):
        self.total, self.chunk_size, self.processes, self.guided = total, chunk_size, processes, guided
        self.next = multiprocessing.get_context("fork").Value("q", first)

    def claim(self, check=None):
        """``(start, stop)`` of the next piece, or None when every input is taken. ``check()`` runs
        while the lock is not to be had (a worker killed holding it would block every claim)."""
        lock = self.next.get_lock()
        while not lock.acquire(timeout=0.5):
            if check is not None:
                check()
        try:
            start = self.next.value
            if start >= self.total:
                return None
            stop = piece_end(start, self.total, self.chunk_size, self.processes, self.guided)
            self.next.value = stop
        finally:
            lock.release()
        return start, stop


def _explain_piece(explainer, chunks, piece, target, write):
    """Read, explain and write the inputs of ``piece``; its results. (The caller has limited the
    threads to one for good: setting the limit costs about 1 ms per piece.)"""
    keys, images, failures = chunks.read(*piece)
    return written(explain_chunk(explainer, keys, images, target, failures), write)


def _work(initializer, explainer, chunks, target, write, pieces, conn, foreign) -> None:
    """A worker's life: claim, explain and write pieces until none is left; send each piece's
    results, then ``("done",)``, or ``("error", exception)`` if writing fails."""
    for other in foreign:  # the other workers' pipe ends: a dead worker's pipe must reach EOF
        other.close()
    initializer()
    try:
        while (piece := pieces.claim()) is not None:
            results = _explain_piece(explainer, chunks, piece, target, write)
            # (the run's process has no copy of the digests this process read: they go along)
            conn.send(("results", results, chunks.digests_of(*piece)))
        conn.send(("done",))
        # every file is written and synced: leave now (what multiprocessing does after its clean-up,
        # of which a worker needs nothing) rather than keep the run waiting for the clean-up
        os._exit(0)
    except (BrokenPipeError, ConnectionError, EOFError):
        os._exit(1)  # the run's process is gone: nobody to tell, nothing to print
    except Exception as exc:  # (explaining errors are results: this is writing, or sending)
        try:
            try:
                conn.send(("error", exc))
            except (pickle.PicklingError, TypeError, AttributeError):  # not picklable
                conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
        except (BrokenPipeError, ConnectionError, EOFError):
            os._exit(1)


def describe_loss(processes, timeout: float = 5.0) -> str:
    """Which workers died and how, from their exit codes (the others are stopped)."""
    deadline = time.monotonic() + timeout
    for process in processes:  # a process whose end was seen may not be reaped yet
        process.join(max(0.0, deadline - time.monotonic()))
    # (a pool's own thread may have reaped it a moment ago and be about to record its exit code)
    while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.01)
    ended = [p for p in processes if p.exitcode not in (None, 0)]
    lost = [p for p in ended if p.exitcode != -signal.SIGTERM] or ended
    words = []
    for process in lost:
        if process.exitcode < 0:
            try:
                name = signal.Signals(-process.exitcode).name
            except ValueError:
                name = f"signal {-process.exitcode}"
            hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
            words.append(f"process {process.pid} killed by {name}{hint}")
        else:
            words.append(f"process {process.pid} exited with code {process.exitcode}")
    # exit code 0: its set-up failed (the pool printed why), or it was lost before we saw its code
    return ", ".join(words) or "a worker process ended without an error code (see any message above)"


class _Workers:
    """The forked workers and the driver's ends of their pipes."""

    def __init__(self, n, target_args):
        context = multiprocessing.get_context("fork")
        pipes = [context.Pipe(duplex=False) for _ in range(n)]
        self.processes, self.readers, self.lost, self.backlog = [], {}, False, []
        self.error = None  # a worker's own error (writing failed), raised once its results are out
        # with every object of this process frozen while it forks, a worker's garbage collector
        # never finalizes one it inherited (an unreachable open file of the driver's, say, whose
        # buffer it would flush a second time) and leaves their pages shared
        gc.freeze()
        try:
            for i, (reader, sender) in enumerate(pipes):
                foreign = [end for j, pair in enumerate(pipes) for end in pair if j != i] + [reader]
                process = context.Process(target=_work, args=(*target_args, sender, foreign),
                                          name=f"bowlrp-worker-{i}", daemon=True)
                process.start()
                self.processes.append(process)
                self.readers[reader] = process
        except BaseException:
            self.stop(finished=False)  # (a fork refused for lack of memory, say): none may go on
            for reader, _ in pipes:
                reader.close()
            raise
        finally:
            gc.unfreeze()
            for _, sender in pipes:
                sender.close()  # the workers hold theirs: EOF on a reader means its worker is gone

    def _drain(self, reader, digests: dict) -> None:
        """Read what ``reader``'s worker has sent (at least one message: it is ready)."""
        first = True
        while reader in self.readers and (first or reader.poll()):
            first = False
            try:
                message = reader.recv()
            except EOFError:  # its worker is gone without saying it is done
                self.lost = True
                return
            if message[0] == "results":
                self.backlog += message[1]
                digests.update(message[2])
            elif message[0] == "done":
                del self.readers[reader]
                reader.close()
            else:  # its error: raised once every result sent before it is handed on
                self.error = self.error or message[1]
                return

    def receive(self, block: bool, digests: dict) -> list:
        """The results the workers have sent (waiting for some if ``block``), as one list. A worker
        gone without saying it is done raises :class:`WorkerLossError` (once the results it sent
        before are handed on)."""
        for reader in wait(list(self.readers), timeout=None if block else 0) if self.readers else []:
            self._drain(reader, digests)
        results, self.backlog = self.backlog, []
        if (self.lost or self.error is not None) and not results:
            self._raise_loss()
        return results

    def _raise_loss(self):
        for process in self.processes:  # the others stop now: describing waits for every exit code
            if process.is_alive():
                process.terminate()
        if self.error is not None:
            raise self.error
        raise WorkerLossError(LOST.format(describe_loss(self.processes)))

    def check(self, digests: dict) -> None:
        """Raise :class:`WorkerLossError` if a worker ended before it was done (for a driver that
        cannot claim a piece: a worker killed while holding the lock)."""
        for reader, process in list(self.readers.items()):
            if not process.is_alive():
                self._drain(reader, digests)  # (it may have said it was done, then exited)
        if self.lost or self.error is not None:
            self._raise_loss()  # (the driver hands on the backlog first)

    def stop(self, finished: bool) -> None:
        """Wait for workers that are done; terminate the others (a worker still writing could
        otherwise touch the folder after the run released its lock)."""
        if not finished:
            for process in self.processes:
                if process.is_alive():
                    process.terminate()
        for process in self.processes:
            process.join(timeout=10)
        for reader in self.readers:
            reader.close()


def run_forked(explainer, chunks, target, write, workers: int, driver_helps: bool, initializer):
    """Explain the inputs of ``chunks`` (an :class:`~bowlrp.app.image_chunks.ImageChunks`) in this
    process and ``workers`` workers forked from it (this process only records, and explains the
    first image, without ``driver_helps``); yield the written results as they come (see
    :mod:`bowlrp.app.executors`). ``initializer()`` runs in each worker first."""
    if len(chunks) == 0:
        return
    # one BLAS/numba thread in this process from now to the end of the run, and in the workers
    # (they inherit it): the processes are the parallelism, and no OpenMP pool exists that a forked
    # child could trip over. Set before the fork and never again during the run (the model's own
    # one-thread limits leave a library at one thread alone): OpenBLAS stops its pool at a fork and
    # restarts all of it, threads busy-waiting ~0.1 s, whenever its count is set afterwards
    with limited_threads(1):
        yield from _share(explainer, chunks, target, write, workers, driver_helps, initializer)


def _share(explainer, chunks, target, write, workers, driver_helps, initializer):
    """:func:`run_forked` once the threads are limited."""
    guided = getattr(explainer, "batch_size", None) == 1
    if not guided and len(chunks) <= chunks.chunk_size:
        # one serial chunk (an explainer that batches must get exactly those): nothing to share
        yield _explain_piece(explainer, chunks, (0, len(chunks)), target, write)
        return
    processes = workers + bool(driver_helps)
    first = None
    # the first image, explained here before the fork: loads the kernels (from numba's cache, in a
    # new process) once for every process. Its result is kept when the pieces need not be the
    # serial run's chunks (and written after the fork, while the workers start), else dropped.
    keys, images, failures = chunks.read(0, 1)
    explained = explain_chunk(explainer, keys, images, target, failures)
    if guided and driver_helps:
        first = explained
        if len(chunks) == 1:  # nothing left to share
            yield written(first, write)
            return
    pieces = _Pieces(len(chunks), chunks.chunk_size, processes, guided, first=1 if first is not None else 0)
    pool = _Workers(workers, (initializer, explainer, chunks, target, write, pieces))
    finished = False
    try:
        if first is not None:
            yield written(first, write)
        while driver_helps:
            try:
                piece = pieces.claim(lambda: pool.check(chunks.digests))
            except Exception:
                pending, pool.backlog = pool.backlog, []
                if pending:  # what the workers sent before the loss is recorded all the same
                    yield pending
                raise
            if piece is None:
                break
            results = _explain_piece(explainer, chunks, piece, target, write)
            try:  # with what the workers sent meanwhile: one manifest fsync for both
                results += pool.receive(block=False, digests=chunks.digests)
            except Exception:  # a lost worker, or a worker's own error (a full disk, say)
                yield results  # (this process's own results are recorded all the same)
                raise
            yield results
        while pool.readers:
            results = pool.receive(block=True, digests=chunks.digests)
            if results:
                yield results
        finished = True
    finally:
        pool.stop(finished)
