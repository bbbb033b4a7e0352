"""The project's numba and threads policy, in one place.

Compilation: every numba kernel of ``bowlrp`` and ``nets`` goes through these decorators, so that

* ``fastmath`` is always off: conservation (sum of relevance equals the score) is asserted to 1e-9
  and reassociated floating-point sums would break it;
* kernels are cached on disk (``cache=True``) so a second process does not recompile them;
* a parallel build is compiled only once it pays: compiling one costs 1-4 s (a fresh clone's first
  ``make demo`` compiled four of them, 10 s of its 32 s of compilation, for calls that ran a few
  milliseconds), so :class:`BothBuilds` runs the serial build (the same numbers) until the parallel
  one is in numba's disk cache, or compiled in this process, or the serial build has spent
  :data:`PARALLEL_COMPILE_SECONDS` in calls the size rule would have run in parallel (then the
  compilation costs at most what the process already lost by waiting for it, the rent-or-buy rule);
* a cold process can have what it will need compiled in a second process (:mod:`bowlrp.compile_ahead`),
  and numba's disk cache is saved and loaded under a file lock (:mod:`bowlrp._numba_cache`), so
  processes compiling one kernel at once cannot corrupt its index;
* parallel kernels use ``numba.prange`` over independent slices only (rows of a Gram matrix, images
  of a batch), never over a reduction whose order matters, so the parallel and the serial build of a
  kernel give bit-identical results.

Threads: one size rule, one limiter, one batch runner.

* :func:`jit_both` compiles a ``prange`` kernel twice; calling the result runs the parallel build only
  when :func:`use_parallel` says the work pays for waking threads (one threshold,
  :data:`PARALLEL_MIN_WORK`, for every kernel of the project).
* :func:`limited_threads` is the only way the project changes thread counts (numba's and BLAS/OpenMP's
  through threadpoolctl), and it always restores them.
* :func:`parallel_map` runs the images of a batch on threads; inside it every kernel runs its serial
  build and BLAS runs one thread, so the threads never nest. :func:`split_batch` does the same for
  a batch array (a network's forward or LRP pass).
* numba's OpenMP workers wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy):
  with the default policy they busy-wait after every parallel region and steal the cores from the
  BLAS threads of the next matrix product (VGG-style forward, 2 cores: 375 ms with 2 numba and 2 BLAS
  threads against 261 ms with one of each; 198 ms against 227 ms with passive waiting). This must
  happen before numba starts its OpenMP runtime, which it does lazily at the first parallel region,
  hence at import of this module.

Kernels are private functions in a ``_kernels.py`` module that take arrays and write into
preallocated outputs (or return arrays they allocate); the public wrappers validate input. Each
kernel has a slow numpy twin in the tests (see ``tests/kernel_twins.py``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sys
import threading
import time
import types
from concurrent import futures

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read by libgomp when numba first loads it

import numba  # noqa: E402  (after the OpenMP policy above)
import numpy as np  # noqa: E402

from bowlrp._numba_cache import lock_cache_files as _lock_numba_cache_files  # noqa: E402

__all__ = [
    "PARALLEL_MIN_WORK",
    "PARALLEL_COMPILE_SECONDS",
    "jit_serial",
    "jit_parallel",
    "jit_both",
    "use_parallel",
    "forced_builds",
    "serial_only",
    "limited_threads",
    "parallel_map",
    "n_parts",
    "split_batch",
    "prange",
]

prange = numba.prange

#: Work (about one floating-point operation per unit) below which a kernel runs its serial build. A
#: parallel region costs a thread wake-up and a barrier (tens of microseconds with passive waiting),
#: and on a busy machine a descheduled worker makes the whole region wait for a scheduler slice;
#: measured on 2 cores, threads pay off from about 10^7 operations (a Gram block of 10^7 terms, a
#: 0.5-megapixel SIFT image, an NCHW tensor of 1.3e5 elements).
PARALLEL_MIN_WORK = 10_000_000

#: Seconds a :func:`jit_both` kernel's serial build may run, in calls big enough for its parallel
#: build, before that parallel build is compiled in a process that does not find it in numba's disk
#: cache. The parallel build saves at most half of those seconds on 2 cores and costs 1-4 s to compile
#: (measured on the project's kernels, loaded 2-core machine), so waiting until the serial runs have
#: cost about as much as compiling bounds the loss either way.
PARALLEL_COMPILE_SECONDS = 2.0

_lock_numba_cache_files()  # before any kernel compiles: see bowlrp/_numba_cache.py

_local = threading.local()  # .serial: a worker of parallel_map; .one_blas: its BLAS runs one thread
_forced = None  # "parallel" / "serial" while forced_builds() is active (tests)
_serial_only = False  # set for good by serial_only() (a process forked after OpenMP was used)


def jit_serial(func=None, **options):
    """Compile ``func`` with numba in nopython mode, cached, no fastmath.

    Usable bare (``@jit_serial``) or with numba options (``@jit_serial(inline="always")``).
    """
    options = {"cache": True, "fastmath": False, "nogil": True, **options}
    if options.get("fastmath"):
        raise ValueError("fastmath is not allowed in bowlrp kernels: it breaks conservation")
    if func is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(func)


def jit_parallel(func=None, **options):
    """Compile ``func`` with ``parallel=True``, cached, no fastmath. Use ``prange`` inside."""
    return jit_serial(func, **{"parallel": True, **options})


def use_parallel(work):
    """Whether a kernel doing ``work`` operations should run its parallel build: the one size rule.

    False inside a :func:`parallel_map` worker (the batch is the parallelism there), when numba has
    one thread, or below :data:`PARALLEL_MIN_WORK`.
    """
    if _forced is None and work < PARALLEL_MIN_WORK:
        return False  # the common case first: numba.get_num_threads() costs microseconds
    if _serial_only or getattr(_local, "serial", False):
        return False
    if _forced is not None:
        return _forced == "parallel"
    return numba.get_num_threads() > 1


def serial_only():
    """From now on this process runs only serial builds, whatever :func:`forced_builds` says.

    For a process forked from one that may have used GNU OpenMP (numba's parallel builds): such a
    child aborts the moment it enters a parallel region, even with one thread. Never undone.
    """
    global _serial_only
    _serial_only = True


@contextlib.contextmanager
def forced_builds(kind):
    """Run every :func:`jit_both` kernel's ``"parallel"`` or ``"serial"`` build (tests compare them)."""
    global _forced
    if kind not in ("parallel", "serial"):
        raise ValueError(f"kind must be 'parallel' or 'serial', got {kind!r}")
    before, _forced = _forced, kind
    try:
        yield
    finally:
        _forced = before


def _renamed(func, name):
    """A copy of ``func`` under another name (same bytecode, globals, defaults and closure)."""
    code = func.__code__.replace(co_name=name, co_qualname=name)
    copy = types.FunctionType(code, func.__globals__, name, func.__defaults__, func.__closure__)
    copy.__qualname__ = name
    copy.__doc__ = func.__doc__
    return copy


def _has_cached_build(dispatcher):
    """Whether numba's disk cache holds a build of ``dispatcher``'s current source (any signature).

    Reads the cache's index file (numba's private layout; if that changes, the answer is True, which
    is the policy from before parallel builds were deferred: compile when the size rule says so).
    """
    try:
        return bool(dispatcher._cache._cache_file._load_index())
    except Exception:  # noqa: BLE001 - no disk cache (cache=False) or another numba layout
        return True


class BothBuilds:
    """A ``prange`` kernel compiled twice; a call runs the build :func:`use_parallel` picks.

    The parallel build is deferred on a cold cache (see :data:`PARALLEL_COMPILE_SECONDS`): until it
    is ready, calls the size rule gives to it run the serial build, which gives the same numbers.

    Attributes
    ----------
    parallel, serial : numba dispatchers
        The two builds of the same source (``prange`` runs as ``range`` in the serial one).
    serial_seconds : float
        Time the serial build spent in calls the size rule gave to the parallel build while that was
        not ready (compilation excluded).
    """

    def __init__(self, func, work, options):
        self.parallel = jit_parallel(func, **options)
        # numba's on-disk cache is keyed by the function's qualified name and bytecode, not by the
        # ``parallel`` flag: a renamed copy keeps the two builds from loading each other's code
        self.serial = jit_serial(_renamed(func, f"{func.__name__}__serial"), **options)
        self.work = work
        self.serial_seconds = 0.0
        self._ready = None  # True once the parallel build is worth running; None: not probed yet
        functools.update_wrapper(self, func)

    def parallel_ready(self):
        """Whether the parallel build is compiled, in the disk cache, or has been waited for long enough."""
        if not self._ready:
            probe = self._ready is None  # the disk cache is read once per process
            self._ready = (bool(self.parallel.overloads) or self.serial_seconds >= PARALLEL_COMPILE_SECONDS
                           or (probe and _has_cached_build(self.parallel)))
        return self._ready

    def build(self, work):
        """The build to run for ``work`` operations."""
        if not use_parallel(work):
            return self.serial
        if _forced == "parallel" or self.parallel_ready():
            return self.parallel
        return self._serial_instead

    def _serial_instead(self, *args):
        """The serial build where the parallel one is not ready yet; its run time is counted."""
        compiled = len(self.serial.overloads)
        start = time.perf_counter()
        try:
            return self.serial(*args)
        finally:
            if len(self.serial.overloads) == compiled:  # the time of a call that compiled is not rent
                self.serial_seconds += time.perf_counter() - start

    def __call__(self, *args):
        return self.build(self.work(*args))(*args)


def _output_work(*args):
    """Default work estimate: the size of the output (the last argument) times 64 operations."""
    return args[-1].size * 64


def jit_both(func=None, work=None, **options):
    """Compile one ``prange`` kernel as :class:`BothBuilds` (parallel and serial build).

    Parameters
    ----------
    func : callable
        The kernel; its ``prange`` loops must run over independent slices.
    work : callable, optional
        ``work(*args)`` estimates the operations of a call (default: 64 per element of the last
        argument, the output); :func:`use_parallel` decides from it.
    **options
        numba options for both builds.
    """
    if func is None:
        return lambda f: jit_both(f, work=work, **options)
    return BothBuilds(func, work or _output_work, options)


# -------------------------------------------------------------------------------------------- threads
_threadpool_controller = None
_threadpool_modules = -1  # len(sys.modules) when the controller was built
_threadpool_lock = threading.Lock()


def _controller():
    """threadpoolctl's controller, rebuilt when modules were imported since (they may have loaded
    another BLAS or OpenMP library, e.g. scipy's own OpenBLAS, which an old controller would miss)."""
    global _threadpool_controller, _threadpool_modules
    with _threadpool_lock:
        if _threadpool_controller is None or len(sys.modules) != _threadpool_modules:
            from threadpoolctl import ThreadpoolController

            _threadpool_controller = ThreadpoolController()
            _threadpool_modules = len(sys.modules)
    return _threadpool_controller


@contextlib.contextmanager
def limited_threads(n, numba_threads=True, user_api=None):
    """Run a block with at most ``n`` BLAS/OpenMP threads (and numba threads, unless told not to).

    The project's only thread setter; the settings are restored afterwards. ``n=None`` leaves them
    alone. The threadpoolctl controller is built once (scanning the loaded libraries costs about
    0.6 ms, which per-image calls would pay every time). numba's count is per calling thread.
    """
    if n is None:
        yield
        return
    n = max(1, int(n))
    if n == 1 and not numba_threads and user_api == "blas" and getattr(_local, "one_blas", False):
        # a parallel_map worker: this thread's BLAS already runs one thread for the whole region, and
        # the extraction and encoding of a part ask again for every chunk (an explain of 48 images
        # made 14 controller scans, 15-25 us of GIL-held Python each; 6 now)
        yield
        return
    if not numba_threads:  # numba's count is left alone: not even read (its lock costs microseconds)
        with _limit_libraries(n, user_api):
            yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        with _limit_libraries(n, user_api):
            yield
    finally:
        numba.set_num_threads(before)


def _limit_libraries(n, user_api):
    """threadpoolctl's limit on the BLAS/OpenMP libraries that do not run ``n`` threads already (the
    others are neither set nor restored). Setting OpenBLAS's count, even to the count it has, starts
    its whole thread pool again in a forked process (OpenBLAS stops the pool at every fork), and
    each new thread busy-waits ~0.1 s: in a ``-j 2`` run that stole the two cores from the two
    processes explaining (each nested one-thread limit in a worker started two spinning threads)."""
    controller = _controller()
    if user_api is not None:
        controller = controller.select(user_api=user_api)
    others = [lib.filepath for lib in controller.lib_controllers if lib.num_threads != n]
    return controller.select(filepath=others).limit(limits=n) if others else contextlib.nullcontext()


_executor = None
_executor_lock = threading.Lock()


def _reset_executor():
    global _executor
    _executor = None  # a forked child has the pool object but none of its threads


os.register_at_fork(after_in_child=_reset_executor)


def _private_numba_start_lock():
    """In a forked child whose threading layer is already started: numba's start-up lock becomes
    the child's own.

    ``numba.set_num_threads`` and ``get_num_threads`` take that lock on every call, and under the
    fork start method it is a process-shared semaphore (``numba.np.ufunc.parallel``): a worker
    terminated while it held it (a ``-j N`` run stopping its workers after an error) left it taken
    for good, and the run's next thread-count call hung. Once the layer is started the lock guards
    nothing but the started flag, so a lock of the child's own is enough; a child whose layer is not
    started yet keeps numba's."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is not None and getattr(parallel, "_is_initialized", False) and \
            hasattr(parallel, "_backend_init_process_lock"):
        parallel._backend_init_process_lock = threading.RLock()


os.register_at_fork(after_in_child=_private_numba_start_lock)


def _workers():
    """The batch threads, started once: starting threads per call cost ~3 ms on a busy machine (a new
    thread waits for a scheduler slot before ``start`` returns), more than a small batch's work."""
    global _executor
    with _executor_lock:
        if _executor is None:
            from concurrent.futures import ThreadPoolExecutor

            _executor = ThreadPoolExecutor(max(1, numba.config.NUMBA_NUM_THREADS - 1),
                                           thread_name_prefix="bowlrp-batch")
    return _executor


def _drain(func, chunks, results, next_chunk, stop=()):
    """Compute chunks, taken in order from the shared counter, until none is left or ``stop`` is
    non-empty (kernels serial)."""
    _local.serial = True
    try:
        # one BLAS thread on this thread too: an OpenMP-threaded BLAS keeps its count per thread (a
        # pthreads pool is already limited by parallel_map, and the limit is then found in place)
        with limited_threads(1, numba_threads=False, user_api="blas"):
            _local.one_blas = True
            while not stop:
                k = next(next_chunk)  # itertools.count: atomic under the GIL
                if k >= len(chunks):
                    return
                results[k] = [func(item) for item in chunks[k]]
    finally:
        _local.serial = False
        _local.one_blas = False


def parallel_map(func, items, work):
    """``[func(item) for item in items]``, on numba's thread count of threads when the work pays.

    Parameters
    ----------
    func : callable
        Called once per item; should spend its time in ``nogil`` numba kernels (every kernel of the
        project is) or BLAS, else the threads wait for the GIL.
    items : sequence
    work : float
        Estimated operations of the whole batch (see :func:`use_parallel`).

    Returns
    -------
    list
        In the order of ``items``; the same numbers on one thread and on many, because every item is
        computed by the same serial code, with one BLAS thread, whichever thread runs it.
    """
    items = list(items)
    n_threads = min(numba.get_num_threads(), len(items))
    if n_threads < 2 or not use_parallel(work):
        # one BLAS thread here too: OpenBLAS rounds a product's rows differently on one thread and on
        # two (the rows at the split), so a serial loop on the default BLAS threads would not give
        # the numbers the batch threads give (soft encodings differed in the last bits)
        with limited_threads(1, numba_threads=False, user_api="blas"):
            return [func(item) for item in items]
    # a few contiguous chunks per thread, handed out in order: little dispatch overhead, and a slow
    # thread (descheduled on a busy machine) takes fewer chunks instead of holding up the others
    n_chunks = min(len(items), 4 * n_threads)
    chunks = [items[a:b] for a, b in contiguous_parts(len(items), n_chunks)]
    results = [None] * n_chunks
    next_chunk = itertools.count()
    # one BLAS thread while the batch threads run: nested pools would oversubscribe the cores
    with limited_threads(1, numba_threads=False, user_api="blas"):
        stop = []
        helpers = [_workers().submit(_drain, func, chunks, results, next_chunk, stop)
                   for _ in range(n_threads - 1)]
        try:
            _drain(func, chunks, results, next_chunk, stop)  # the calling thread works too
        except BaseException:
            # no helper may still run when the error propagates (the caller may fork next)
            stop.append(True)
            futures.wait(helpers)
            raise
        for helper in helpers:
            helper.result()  # waits, and re-raises a helper's exception
    return [out for chunk in results for out in chunk]


def parallel_parts(prepare, func, items, work):
    """``[func(prepare(item)) for item in items]``, one item per thread: ``prepare`` on the calling
    thread, ``func`` of each prepared item on a thread of its own.

    For work whose set-up is GIL-holding Python and whose rest is mostly ``nogil`` kernels: the set-ups
    run one after the other on one thread (on the threads they waited for the GIL beside each other's
    Python at every short kernel or copy, which releases it), the last items first, each handed to a
    batch thread as soon as it is prepared, so that thread starts while this one prepares the next;
    the first item is computed on this thread. Serial kernels and one BLAS thread on every thread, as
    :func:`parallel_map`, so the numbers do not depend on the thread count. With more items than
    threads, or when the work does not pay, it is :func:`parallel_map` of ``func(prepare(item))``.
    """
    items = list(items)
    n_threads = min(numba.get_num_threads(), len(items))
    if n_threads < 2 or len(items) > n_threads or not use_parallel(work):
        return parallel_map(lambda item: func(prepare(item)), items, work)
    with limited_threads(1, numba_threads=False, user_api="blas"):
        helpers = []
        try:
            for item in items[:0:-1]:
                helpers.append(_workers().submit(_run_serial, func, prepare(item)))
            first = _run_serial(func, prepare(items[0]))
        finally:
            futures.wait(helpers)  # no helper may still run when an error propagates (anyone's)
        return [first] + [helper.result() for helper in reversed(helpers)]


def _run_serial(func, arg):
    """``func(arg)`` as a :func:`parallel_map` worker computes it (serial kernels, one BLAS thread)."""
    serial, one_blas = getattr(_local, "serial", False), getattr(_local, "one_blas", False)
    _local.serial = True
    try:
        with limited_threads(1, numba_threads=False, user_api="blas"):
            _local.one_blas = True
            return func(arg)
    finally:
        _local.serial, _local.one_blas = serial, one_blas


def contiguous_parts(n, count):
    """``count`` contiguous ``(start, stop)`` ranges of ``range(n)``, sizes differing by at most one."""
    bounds = [n * k // count for k in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def n_parts(n, work=None, min_rows=2):
    """How many contiguous parts :func:`split_batch` cuts a batch of ``n`` rows into: one per numba
    thread with at least ``min_rows`` rows each, or 1 (the whole batch in one call) when that leaves
    fewer than two parts or the ``work`` does not pay (:func:`use_parallel`; default: it pays)."""
    parts = min(numba.get_num_threads(), n // max(1, int(min_rows)))
    if parts < 2 or not use_parallel(PARALLEL_MIN_WORK if work is None else work):
        return 1
    return parts


def split_batch(func, *arrays, work=None, min_rows=2):
    """``func(*arrays)`` for a batch (arrays share axis 0), computed as contiguous parts on threads.

    The batch is cut into one part per numba thread (at least ``min_rows`` rows each), every part runs
    on its own thread with serial kernels and one BLAS thread (:func:`parallel_map`), and the results
    (arrays, or tuples of arrays) are concatenated along axis 0. This is how a network's forward or
    LRP pass uses both cores: two BLAS threads around every GEMM plus numba's own parallel regions
    oversubscribe two cores and wait on each other (VGG-style forward on a loaded 2-core machine:
    1.7 s on one thread, 10 s with 2 numba and 2 BLAS threads, 1.1 s split in two halves).

    Parameters
    ----------
    func : callable
        Computes row ``i`` of its outputs from row ``i`` of its inputs only (per-sample work).
    *arrays : numpy.ndarray
        Inputs with the same length along axis 0.
    work : float, optional
        Estimated operations of the whole call (:func:`use_parallel`); default: always worth it
        when there are at least two parts.
    min_rows : int
        Smallest part.

    Returns
    -------
    numpy.ndarray or tuple of numpy.ndarray
        As ``func`` returns; equal to ``func(*arrays)`` up to float round-off (a matrix product
        over fewer rows may round differently).
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays must have the same length along axis 0, got {[len(a) for a in arrays]}")
    count = n_parts(n, work, min_rows)
    if count < 2:
        return func(*arrays)
    parts = parallel_map(lambda ab: func(*(a[ab[0]:ab[1]] for a in arrays)),
                         contiguous_parts(n, count), PARALLEL_MIN_WORK if work is None else work)
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(column) for column in zip(*parts))
    return np.concatenate(parts)
