"""The files of an ``explain`` output folder and what makes them trustworthy across crashes.

* **Manifest** (``manifest.jsonl``): one JSON record per finished image, appended. A record names
  the input (path and SHA-256 of its bytes) and the result files (size and SHA-256). A resume
  trusts a result only if its input is unchanged and its files still match (:func:`verified`).
  Result files are fsync'ed, renamed into place and their folder fsync'ed *before* the record that
  names them is written; a torn last line (a crash mid-write) is ignored when read and cut off
  before anything is appended (:func:`open_manifest`).
* **Lock** (``.bowlrp.lock``): one run writes into a folder at a time; a second one is refused with
  the pid, host, start time and command of the holder (:class:`RunLock`). The operating system
  drops the lock when the holder dies, however it dies.
* **CSV cells**: text that a spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@``...)
  is written with a leading apostrophe (:func:`csv_text`) and read back without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import weakref

import numpy as np

__all__ = [
    "MANIFEST", "RUN_FILE", "SCORES_CSV", "RELEVANCES_NPZ", "SUMMARY_JSON", "HEATMAP_DIR",
    "RELEVANCE_DIR", "LOCK_FILE", "RunMismatchError", "RunLockedError", "RunLock", "read_manifest",
    "open_manifest", "file_sha256", "fsync_folder", "finish_file", "verified", "csv_text", "csv_read",
    "safe_key", "ResultWriter", "jsonable",
]

MANIFEST = "manifest.jsonl"
RUN_FILE = "run.json"
SCORES_CSV = "scores.csv"
RELEVANCES_NPZ = "relevances.npz"
SUMMARY_JSON = "summary.json"
HEATMAP_DIR = "heatmaps"
RELEVANCE_DIR = "relevance"
LOCK_FILE = ".bowlrp.lock"


class RunMismatchError(ValueError):
    """The output folder holds a run with different settings (another model, target, ...).

    ``out_dir`` and ``changed`` (the settings that differ) let a caller say how to start over in
    its own terms (:meth:`advice`): ``resume=False`` in Python, ``--overwrite`` on the command line.
    """

    def __init__(self, out_dir: str, changed, start_over: str = "resume=False"):
        self.out_dir, self.changed = out_dir, list(changed)
        super().__init__(self.advice(start_over))

    def __reduce__(self):  # picklable (the default would call __init__ with the message alone)
        return type(self), (self.out_dir, self.changed)

    def advice(self, start_over: str) -> str:
        """The message, with ``start_over`` as the way to discard the old results."""
        return (f"{self.out_dir} holds results of a different run (changed: {', '.join(self.changed)}); "
                f"use another output folder, or start over ({start_over})")


class RunLockedError(RunMismatchError):
    """Another run is writing into the output folder right now (the message names the holder)."""

    def __init__(self, message: str):
        self.out_dir, self.changed = None, []
        ValueError.__init__(self, message)

    def __reduce__(self):
        return type(self), (str(self),)

    def advice(self, start_over: str) -> str:
        return str(self)  # starting over would not help: wait for the other run


# ---------------------------------------------------------------------- checksums and durable files
def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_folder(folder) -> None:
    """Make renames inside ``folder`` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def finish_file(tmp: str, final: str) -> tuple[int, str]:
    """fsync ``tmp``, rename it to ``final``; returns (size, sha256) of the content."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    size, digest = os.path.getsize(tmp), file_sha256(tmp)
    os.replace(tmp, final)
    return size, digest


def verified(out_dir: str, record: dict) -> bool:
    """Do the result files a manifest record names exist with the recorded size and checksum?"""
    for name in ("relevance_npz", "heatmap_png"):
        rel = record.get(name)
        if not rel:
            if name == "relevance_npz":
                return False
            continue
        path = os.path.join(out_dir, rel)
        expected_size, expected_sha = record.get(f"{name}_size"), record.get(f"{name}_sha256")
        if expected_sha is None or not os.path.isfile(path) or os.path.getsize(path) != expected_size:
            return False
        if file_sha256(path) != expected_sha:
            return False
    return True


# ---------------------------------------------------------------------- one image's result files
def jsonable(value):
    """A number or string JSON can hold (numpy scalars as Python ones; anything else as text)."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class ResultWriter:
    """Writes the files of one explained image durably and says what the manifest records of it.

    Picklable (plain settings), so that local worker processes can write their own results: the
    driver then only appends manifest records, after fsync'ing the folders the files were renamed
    into. Every writer, in whichever process, writes the same bytes for the same heatmap.
    """

    def __init__(self, out_dir, png: bool, render_options: dict):
        self.out_dir, self.png, self.render_options = os.fspath(out_dir), bool(png), dict(render_options)

    def __call__(self, key: str, heatmap) -> dict:
        """Write ``relevance/KEY.npz`` (and ``heatmaps/KEY.png``), each to a temporary name, fsync'ed
        and renamed; returns the record fields: the heatmap's numbers and the files' sizes and checksums."""
        fields = {"target": jsonable(heatmap.target), "score": heatmap.score, "relevance_sum": heatmap.total,
                  "residual": heatmap.residual, "method": heatmap.method}
        npz_rel = os.path.join(RELEVANCE_DIR, f"{key}.npz")
        tmp = os.path.join(self.out_dir, RELEVANCE_DIR, f".{key}.tmp.npz")
        heatmap.save(tmp)
        size, digest = finish_file(tmp, os.path.join(self.out_dir, npz_rel))
        fields.update(relevance_npz=npz_rel, relevance_npz_size=size, relevance_npz_sha256=digest)
        fields["heatmap_png"] = ""
        if self.png:
            png_rel = os.path.join(HEATMAP_DIR, f"{key}.png")
            tmp = os.path.join(self.out_dir, HEATMAP_DIR, f".{key}.tmp.png")
            options = dict(self.render_options)
            if options.get("overlay") and heatmap.image is None:
                options["overlay"] = False
            heatmap.save(tmp, **options)
            size, digest = finish_file(tmp, os.path.join(self.out_dir, png_rel))
            fields.update(heatmap_png=png_rel, heatmap_png_size=size, heatmap_png_sha256=digest)
        return fields

    def sync(self) -> None:
        """fsync the folders the files were renamed into (once for any number of files): after
        this, and only after this, may manifest records name them."""
        for folder in (RELEVANCE_DIR, HEATMAP_DIR) if self.png else (RELEVANCE_DIR,):
            fsync_folder(os.path.join(self.out_dir, folder))


# ---------------------------------------------------------------------- manifest
def read_manifest(out_dir) -> dict[str, dict]:
    """The latest manifest record of each key (a torn or damaged line is ignored)."""
    records: dict[str, dict] = {}
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.exists(path):
        return records
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption: that image is redone
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                records[record["key"]] = record
    return records


def open_manifest(out_dir):
    """The manifest opened for appending, a torn last line (no newline) cut off first, so that the
    next record starts on a line of its own."""
    path = os.path.join(out_dir, MANIFEST)
    if os.path.exists(path):
        with open(path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)
    return open(path, "a", encoding="utf-8")


# ---------------------------------------------------------------------- lock
_held_locks: weakref.WeakSet = weakref.WeakSet()  # the RunLocks this process holds


def _drop_inherited_locks() -> None:
    """In a forked child (a ``-j`` worker): close the copies of the parent's lock files. An flock
    belongs to the open file, which the child's copy would keep open: a worker outliving a killed
    run by a moment would still hold the folder's lock. Closing a copy leaves the parent's lock."""
    for lock in list(_held_locks):
        lock.handle.close()
        lock.handle = None
    _held_locks.clear()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_drop_inherited_locks)


class RunLock:
    """An exclusive lock on an output folder for the duration of a run (``with RunLock(dir):``).

    Uses ``fcntl.flock`` on ``.bowlrp.lock`` (released by the OS when the process ends, however it
    ends, so a crash never leaves a stale lock; a forked child does not inherit it). The file holds
    who took it, for the message the next run prints. Where ``fcntl`` does not exist (Windows) runs
    are not locked.
    """

    def __init__(self, out_dir):
        self.path = os.path.join(os.fspath(out_dir), LOCK_FILE)
        self.handle = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise RunLockedError(f"{os.path.dirname(self.path)} is in use by another run "
                                 f"({_describe_holder(holder)}); wait for it to finish, or use another "
                                 "output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": " ".join(sys.argv)}) + "\n")
        handle.flush()
        self.handle = handle
        _held_locks.add(self)
        return self

    def __exit__(self, *exc):
        _held_locks.discard(self)
        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()
            self.handle.close()  # closing drops the flock
            self.handle = None
        return False


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


# ---------------------------------------------------------------------- CSV cells and keys
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value) -> str:
    """A text cell safe to open in a spreadsheet: one that starts like a formula gets a leading
    apostrophe (numbers, also negative ones, are left alone)."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START) or text.startswith("'"):
        try:
            float(text)
            return text
        except ValueError:
            return "'" + text
    return text


def csv_read(text: str) -> str:
    """The value :func:`csv_text` wrote."""
    return text[1:] if text.startswith("'") else text


def safe_key(key) -> bool:
    """Is ``key`` a key our runs write (letters, digits, ``._-``; never a path)?"""
    import re

    return isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9._-]+", key) is not None \
        and key not in (".", "..")
