"""numba's disk cache, made safe for processes that compile the same kernel at the same time."""

from __future__ import annotations

import functools
import os


def lock_cache_files():
    """Make numba's disk cache safe for processes that compile the same kernel at the same time.

    numba saves a specialisation by reading the kernel's index file, picking the first free data file
    number, writing the index, then the data (``numba.core.caching.IndexDataCacheFile.save``): two
    processes saving signatures of one kernel at once can pick the same number, and the index can
    end up naming another signature's machine code (numba issue #10128, a crash or wrong numbers in
    the next process that loads it). The test suite's compile-ahead thread saves while command-line
    and worker subprocesses compile, so saves take an exclusive and loads a shared POSIX lock on a
    file next to the cache's files (``fcntl.lockf``: per process, not inherited across ``fork``;
    within a process numba's compiler lock already serialises loads and saves). Where the lock cannot
    be taken (no ``fcntl``, a read-only cache folder, another numba layout) numba works as it does.
    """
    try:
        import fcntl

        from numba.core.caching import IndexDataCacheFile

        save, load = IndexDataCacheFile.save, IndexDataCacheFile.load
    except (ImportError, AttributeError):
        return
    if getattr(save, "_bowlrp_locked", False):
        return

    def locked(method, mode):
        @functools.wraps(method)
        def under_lock(self, *args):
            try:
                fd = os.open(os.path.join(self._cache_path, "bowlrp-cache.lock"),
                             os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except (OSError, AttributeError):
                return method(self, *args)
            try:
                fcntl.lockf(fd, mode)
                return method(self, *args)
            finally:
                os.close(fd)  # releases the lock
        under_lock._bowlrp_locked = True
        return under_lock

    IndexDataCacheFile.save = locked(save, fcntl.LOCK_EX)
    IndexDataCacheFile.load = locked(load, fcntl.LOCK_SH)
