"""Compile numba specialisations in a second process ahead of their first call (cold start, issue 15).

A fresh clone's first run compiles every kernel it uses. :func:`compile_ahead` starts a child
process (``python -m bowlrp.compile_ahead``, same environment and numba cache folder) that compiles
a list of specialisations in the order the run will need them and saves each to numba's disk cache;
the run's own process then *loads* them there at their first call (numba's dispatcher tries its disk
cache before compiling; the cache index is read again at every attempt), which takes milliseconds.
A second process compiles in parallel with everything the run does: numba compiles one
specialisation at a time per process (its global compiler lock), and its own passes are Python
holding the GIL, so a compile-ahead *thread* overlapped only LLVM's share of the work.

Nothing compiles twice. The child says on a pipe which job it starts and which it finished. When
the run needs a listed specialisation the cache does not hold yet (a hook on the dispatcher's cache
load, :meth:`_AheadCompilers._load`), it waits if that is the child's current job, and otherwise
compiles it itself and tells the child to skip it. The code is what numba would have compiled in
the run's own process (same source, environment, machine), i.e. what a warm run loads from the cache.

Safety: the child ends when the run's process ends (end of file on its stdin, or a new parent
process id), also when killed; it never ends in the middle of a cache save (numba writes each file
to a temporary name and renames it; saves and loads take a file lock, :mod:`bowlrp._numba_cache`);
it runs in its own session, so a Ctrl-C in the terminal reaches only the run, which closes the pipe.
A process forked from the run (``-j N`` workers) detaches from the child (closes its copies of the
pipes, waits for nothing, compiles what it needs). Off with ``BOWLRP_COMPILE_AHEAD=0``; the lists
(:func:`specialisation`) skip specialisations the disk cache holds (:func:`uncompiled`), so a warm run
starts no process.
"""

from __future__ import annotations

import atexit
import collections
import functools
import importlib
import os
import pathlib
import select
import subprocess
import sys
import threading
import weakref

import numba
from numba.core import event

__all__ = ["Job", "cached", "compile_ahead", "default_processes", "kernel_list", "specialisation",
           "uncompiled"]

#: seconds the run waits for a job a child compiles before compiling it itself (a stuck child)
WAIT_SECONDS = 600.0
#: most children compiling at once (one per core the run does not use, up to this)
MAX_PROCESSES = 4

Job = collections.namedtuple("Job", "kernel args dispatcher signature")
Job.__doc__ = """A specialisation to compile ahead: its names (sent to the child) and what they resolve to."""


def specialisation(kernel, args):
    """The dispatcher and signature numba's compile log names: ``("nets._conv_kernels.fold", "(Array(float64,
    3, 'C', False, aligned=True), int64, ...)")``.

    ``kernel`` is ``module.name`` of a :func:`jit_serial` / :func:`jit_parallel` kernel or of a
    :func:`jit_both` kernel's parallel build, ``module.name__serial`` of its serial build; ``args``
    spells the argument types as numba prints them and is evaluated among numba's type names only (no
    builtins). Raises if the kernel is gone or a type does not parse.
    """
    from bowlrp.jit import BothBuilds

    module, _, name = kernel.rpartition(".")
    # the dispatcher compiled from the function ``name`` (a kernel object may be stored under another
    # name: ``gram_kernel = jit_both(_gram)``)
    builds = (build for obj in vars(sys.modules.get(module) or importlib.import_module(module)).values()
              for build in ((obj.parallel, obj.serial) if isinstance(obj, BothBuilds) else (obj,))
              if isinstance(build, numba.core.registry.CPUDispatcher))
    dispatcher = next(b for b in builds if (b.py_func.__module__, b.py_func.__name__) == (module, name))
    return dispatcher, tuple(eval(args, _type_names()))  # noqa: S307 - numba's type names only, no builtins


@functools.cache
def _type_names():
    from numba.core import types

    return {**{key: getattr(types, key) for key in dir(types) if not key.startswith("_")}, "__builtins__": {}}


def kernel_list(path, lines=None):
    """The tab-separated fields of a kernel list's lines (``tests/compile_ahead.txt``,
    ``bowlrp/app/demo_kernels.txt``), blank lines and ``#`` comments left out; ``lines`` instead of
    the file's (a missing file has none)."""
    if lines is None:
        path = pathlib.Path(path)
        lines = path.read_text().splitlines() if path.exists() else []
    return [tuple(line.split("\t")) for line in lines if line.strip() and not line.startswith("#")]


def uncompiled(specialisations):
    """The :class:`Job` s for ``(kernel, args)`` pairs (see :func:`specialisation`) that numba's disk
    cache does not hold yet (:func:`cached`); pairs that no longer resolve (a kernel renamed or
    removed, a type gone) and kernels without a disk cache are left out: the first real call
    compiles what it needs."""
    jobs, seen = [], set()
    for kernel, args in specialisations:
        try:
            dispatcher, signature = specialisation(kernel, args)
        except Exception:  # noqa: BLE001 - a stale entry costs nothing
            continue
        if (kernel, signature) not in seen and not cached(dispatcher, signature):
            jobs.append(Job(kernel, args, dispatcher, signature))
        seen.add((kernel, signature))
    return jobs


def cached(dispatcher, signature):
    """Whether numba's disk cache holds ``dispatcher``'s specialisation for ``signature`` (the
    argument types) compiled from its current source for this machine, i.e. whether a first call
    would load it; also True for a dispatcher without a disk cache (nothing to compile ahead).

    Per signature, not per kernel: a cache a run left with the float64 build of a kernel still lacks
    its float32 one (another test file, the demo started by a test), and that is compiled ahead.
    Reads the kernel's cache index (numba's private layout: if that changes, the answer is True, as
    for a warm cache, and the run compiles at first call as without compiling ahead).
    """
    if not _loadable(dispatcher):
        return True
    try:
        cache = dispatcher._cache
        return cache._index_key(signature, dispatcher.targetctx.codegen()) in cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - another numba layout
        return True


def _loadable(dispatcher):
    """Whether the dispatcher loads from numba's disk cache (``cache=True``): else compiling it in
    another process gains nothing."""
    from numba.core.caching import Cache

    return isinstance(getattr(dispatcher, "_cache", None), Cache)


# ------------------------------------------------------------------------------------ the run's side
_handles = weakref.WeakSet()  # live handles, detached in a forked child


class _Child:
    """One compiling child process and this process's ends of its two pipes."""

    def __init__(self, env):
        child_in, self.to_child = os.pipe()  # (read, write); non-inheritable: exec'd subprocesses get neither
        self.from_child, child_out = os.pipe()
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "bowlrp.compile_ahead"], stdin=child_in,
                                         stdout=child_out, stderr=subprocess.DEVNULL, env=env,
                                         start_new_session=True)  # Ctrl-C reaches the run only
        finally:
            os.close(child_in)
            os.close(child_out)

    def send(self, line):
        try:
            os.write(self.to_child, (line + "\n").encode())
        except (OSError, TypeError):  # the child has ended, or the pipe is closed: nothing to tell it
            pass

    def close(self, end):
        """Close this process's end ``"to_child"`` or ``"from_child"`` once. The attribute is cleared
        before the descriptor is closed: a fork in between leaves the child a descriptor that is still
        this pipe's, never a number the run has since reused for another file (a test's pipe)."""
        fd = getattr(self, end)
        setattr(self, end, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


class _AheadCompilers:
    """The children compiling ``jobs`` and the run's view of them (see :func:`compile_ahead`)."""

    def __init__(self, jobs, processes):
        self.jobs = list(jobs)
        self.compiled = []  # (dispatcher, signature) the children compiled, in order
        self._key = {(id(job.dispatcher), job.signature): i for i, job in enumerate(self.jobs)}
        self._pending = list(range(len(self.jobs)))  # not handed out yet, in order
        self._running = {}  # child -> the job it compiles now
        self._detached = False
        self._forked = False  # a copy in a process forked from the run
        self._cond = threading.Condition()
        path = [str(pathlib.Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        # the run's pid: the child compares its parent with it (its own getppid() at start-up, after
        # its imports, would already be 1 if the run died meanwhile, and it would never notice)
        env = {**os.environ, "BOWLRP_COMPILE_AHEAD_CHILD": "1",
               "BOWLRP_COMPILE_AHEAD_PARENT": str(os.getpid()),
               "PYTHONPATH": os.pathsep.join(path).rstrip(os.pathsep)}
        if numba.config.CACHE_DIR:  # also when set in this process after start-up (tests)
            env["NUMBA_CACHE_DIR"] = str(numba.config.CACHE_DIR)
        self._children = [_Child(env) for _ in range(max(1, min(processes, len(self.jobs))))]
        self._alive = len(self._children)
        self._hooked = []
        for dispatcher in {id(job.dispatcher): job.dispatcher for job in self.jobs}.values():
            cache = dispatcher._cache
            cache.load_overload = functools.partial(self._load, dispatcher, cache.load_overload)
            self._hooked.append(cache)
        self._readers = [threading.Thread(target=self._read, args=(child,), daemon=True,
                                          name="bowlrp-compile-ahead-reader") for child in self._children]
        for reader in self._readers:
            reader.start()
        _handles.add(self)
        atexit.register(self.stop)

    def _read(self, child):
        """A child's requests and reports: ``next`` (answered ``job i kernel args`` or ``end``),
        ``done i``, ``fail i``; end of file when it ends."""
        try:
            self._serve(child)
        finally:  # also if something unforeseen fails here: the run then compiles what is left itself
            with self._cond:
                self._running.pop(child, None)  # the waiting call compiles it
                self._alive -= 1
                self._cond.notify_all()
            if not self._forked:
                child.close("from_child")

    def _serve(self, child):
        for line in _lines(child.from_child):
            what, _, number = line.partition(" ")
            if what not in ("next", "done", "fail") or (what != "next" and not number.isdigit()):
                continue  # not the protocol's (something printed at the child's start-up)
            with self._cond:
                if what == "next":
                    i = self._pending.pop(0) if self._pending and not self._detached else None
                    if i is None:
                        child.send("end")
                    else:
                        self._running[child] = i
                        child.send(f"job {i}\t{self.jobs[i].kernel}\t{self.jobs[i].args}")
                elif self._running.get(child) == int(number):
                    i = self._running.pop(child)
                    if what == "done":
                        self.compiled.append((self.jobs[i].dispatcher, self.jobs[i].signature))
                self._cond.notify_all()

    # -- the hook on the listed dispatchers' cache loads
    def _load(self, dispatcher, load, sig, target_context):
        """numba's cache load for ``dispatcher``; on a miss of a listed specialisation, wait if a
        child compiles it now (then load it), else take it over (the caller compiles it)."""
        cres = load(sig, target_context)
        if cres is not None or self._detached:
            return cres
        i = self._key.get((id(dispatcher), sig)) if isinstance(sig, tuple) else None
        if i is None:
            return None
        with self._cond:
            if i in self._pending:  # not handed out: compile it here
                self._pending.remove(i)
                return None
            # an event (as numba's "numba:compile") for whoever measures how long the run waited
            waiting = {"dispatcher": dispatcher, "args": sig}
            with event.trigger_event("bowlrp:compile-ahead-wait", data=waiting):
                self._cond.wait_for(lambda: i not in self._running.values(), WAIT_SECONDS)
        return load(sig, target_context)  # None if the child failed or ended: the caller compiles

    # -- handle
    def join(self, timeout=None):
        """Wait until every job is compiled, failed or taken over (or the children ended); whether so."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._pending or self._running) or not self._alive,
                                       timeout)

    def stop(self):
        """Unhook the dispatchers and end the children (each exits between two cache saves)."""
        if self._detached:
            return
        self._detached = True
        for cache in self._hooked:
            cache.__dict__.pop("load_overload", None)
        for child in self._children:
            child.close("to_child")  # end of file: the child exits
        for child in self._children:
            try:
                child.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)

    def _detach_after_fork(self):
        """In a forked child of the run: close this process's copies of the pipes (the compiling
        children must see end of file when the run ends) and compile everything here."""
        self._detached = self._forked = True
        self._cond = threading.Condition()  # a reader thread (not copied) may have held the old one
        for child in self._children:
            # only the ends still open here: the run may have closed one and reused its number
            child.close("to_child")
            child.close("from_child")
            child.proc.returncode = 0  # not this process's child: never wait for it here


def _detach_all_after_fork():
    for handle in list(_handles):
        handle._detach_after_fork()


os.register_at_fork(after_in_child=_detach_all_after_fork)


def compile_ahead(jobs, default="0", processes=None):
    """Compile :class:`Job` s in child processes, in order, from now on; the run loads them.

    A cold process spends seconds per specialisation in numba's typing, lowering and LLVM; the
    children do that on the other cores and save each one to numba's disk cache, from which the first
    call in this process loads it. A call that needs a job a child is compiling waits for it; one that
    needs a job no child has started compiles it here (no child gets it). Returns at once.

    Parameters
    ----------
    jobs : sequence of Job
        From :func:`uncompiled`. A signature that no longer types fails in the child only (the first
        real call compiles what it needs and raises what it raises).
    default : {"0", "1"}
        Whether to compile ahead when ``BOWLRP_COMPILE_AHEAD`` is not set (the test session and the
        demo pass ``"1"``).
    processes : int, optional
        Children compiling at once (default: :func:`default_processes`): while the run waits for
        one kernel, the others compile the next ones on the other cores.

    Returns
    -------
    object or None
        With ``stop()`` (end the children; also at exit), ``join(timeout)`` and ``compiled`` (the
        pairs the children compiled so far); None when there is nothing to do or
        ``BOWLRP_COMPILE_AHEAD`` (else ``default``) is not ``1``: every kernel then compiles at its
        first call.
    """
    jobs = [job for job in jobs if _loadable(job.dispatcher)]
    if os.environ.get("BOWLRP_COMPILE_AHEAD", default) != "1" or not jobs:
        return None
    if processes is None:
        processes = default_processes()
    return _AheadCompilers(jobs, processes)


def default_processes(cores=None):
    """Children to start: ``BOWLRP_COMPILE_AHEAD_PROCESSES``, else one per core the run does not use
    (at least one, at most :data:`MAX_PROCESSES`; ``cores``: those this process may run on).

    The run keeps a core: on 2 cores, one child compiled the cold test suite with less CPU and wall
    time than two (two compile numba's own helpers twice and compete with the run for the cores), and
    the demo's first run was as fast (``benchmarks/README.md``, cold start, round 5).
    """
    setting = os.environ.get("BOWLRP_COMPILE_AHEAD_PROCESSES", "").strip()
    if setting:
        if not setting.isdigit():
            raise ValueError(f"BOWLRP_COMPILE_AHEAD_PROCESSES={setting!r}: give a whole number of child "
                             "processes (or BOWLRP_COMPILE_AHEAD=0 to compile nothing ahead)")
        return max(1, int(setting))
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_PROCESSES, cores - 1))


# ---------------------------------------------------------------------------------- the child's side
def _child(stdin, report):
    """Ask for jobs on the file descriptor ``report`` (``next``), read them from the file descriptor
    ``stdin`` (``job i kernel args``, until ``end``), compile each and report ``done i`` or ``fail
    i``. Exits between two cache saves when ``stdin`` ends or the parent process changes (the run
    was killed)."""
    import queue
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run handles Ctrl-C and then closes the pipe
    parent = int(os.environ.get("BOWLRP_COMPILE_AHEAD_PARENT") or os.getppid())
    from numba.core.caching import IndexDataCacheFile

    import bowlrp.jit  # noqa: F401 - numba's cache saves and loads under the file lock

    saving = threading.Lock()
    save = IndexDataCacheFile.save

    def whole_save(self, *args):  # the exit below waits for a save under way
        with saving:
            return save(self, *args)

    IndexDataCacheFile.save = whole_save
    answers = queue.Queue()

    def watch():
        for line in _lines(stdin, lambda: os.getppid() != parent):
            answers.put(line)
        saving.acquire(timeout=60)  # the run has ended
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    while True:
        os.write(report, b"next\n")
        answer = answers.get()
        if not answer.startswith("job "):
            break
        number, kernel, args = answer[4:].split("\t")
        try:
            dispatcher, signature = specialisation(kernel, args)
            dispatcher.compile(signature)  # loads instead when the cache has it
            outcome = "done"
        except Exception:  # noqa: BLE001 - a stale line: the run compiles (and reports) it itself
            outcome = "fail"
        os.write(report, f"{outcome} {number}\n".encode())
    with saving:
        os._exit(0)


def _lines(fd, orphaned=None, poll=0.5):
    """Lines read from the file descriptor ``fd`` until it ends (or is closed here: None, or an
    error reading it), or until ``orphaned()``, checked every ``poll`` seconds, says the parent is
    gone (the child's side; the run's readers just block)."""
    buffer = b""
    while True:
        if orphaned is not None:
            ready, _, _ = select.select([fd], [], [], poll)
            if orphaned():
                return
            if not ready:
                continue
        try:
            chunk = os.read(fd, 65536)
        except (OSError, TypeError):
            return
        if not chunk:
            return
        *done, buffer = (buffer + chunk).split(b"\n")
        yield from (line.decode(errors="replace") for line in done)


def _main():
    report = os.dup(1)  # the pipe to the run; whatever else prints goes nowhere
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    _child(0, report)


if __name__ == "__main__":
    _main()
