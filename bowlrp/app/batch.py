"""Explaining many images: streamed, written as it goes, resumable, parallel on joblib or dask.

Layout of an output folder (all paths relative to it)::

    run.json            what the run explains (model, target, options); a resumed run must match
    manifest.jsonl      append-only, one JSON record per image as soon as it is finished
    heatmaps/KEY.png    rendered heatmap of each image
    relevance/KEY.npz   the full Heatmap (relevance, score, residual, image, extras)
    scores.csv          one row per input image, in input order (status ok / skipped / pending)
    relevances.npz      every relevance map, one array per KEY, in input order
    summary.json        counts: total, ok, skipped, pending, complete

Memory stays bounded: images are read chunk by chunk in the driver, at most a few chunks per worker
are in flight, and each finished image is written and dropped at once. The final ``relevances.npz``
is streamed map by map into the zip file.

Resuming: a record is appended to the manifest only after the image's files are durably in place
(written to a temporary name, fsync'ed, renamed), so after an interruption, at any moment, the
manifest lists only images that are done. Running the same command again keeps a recorded result
only if its input has the same path and content (SHA-256) and its files still have the recorded
size and checksum (see :mod:`bowlrp.app.run_folder`); everything else is explained, and the result
says how many were new, changed or damaged. Files that could not be read or explained are
recorded as ``skipped`` with the reason; they are tried again on a rerun. One run at a time writes
into a folder (a lock; the second run is told which process holds it).

Parallelism: ``n_jobs`` local worker processes (forked from the run's own process, or from a warm
server while it runs other threads; each worker writing its own result files:
:mod:`bowlrp.app.process_pool`), a joblib backend
(``backend``: loky, threading, ...; the model goes with every chunk and the driver writes), or a
dask distributed cluster (``scheduler``: an address such as ``tcp://10.0.0.5:8786`` or a
``distributed.Client``; the model is sent once per worker, the driver writes). Images are read by
the driver and sent to the workers, so workers need no access to the input files. See
:mod:`bowlrp.app.executors`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass, field

import numpy as np

from bowlrp.app.executors import WorkerLossError, run_chunks
from bowlrp.app.image_chunks import ImageChunks
from bowlrp.app.run_folder import (
    HEATMAP_DIR,
    MANIFEST,
    RELEVANCE_DIR,
    RELEVANCES_NPZ,
    RUN_FILE,
    SCORES_CSV,
    SUMMARY_JSON,
    ResultWriter,
    RunLock,
    RunLockedError,
    RunMismatchError,
    csv_text,
    file_sha256,
    jsonable,
    open_manifest,
    read_manifest,
    verified,
)
from bowlrp.imageio import DEFAULT_MAX_PIXELS, ImageItem, list_images

__all__ = ["explain_batch", "BatchResult", "RunMismatchError", "RunLockedError", "Progress", "read_manifest"]

RUN_FORMAT = 1

SCORE_COLUMNS = ["key", "path", "status", "target", "score", "relevance_sum", "residual", "method",
                 "heatmap_png", "relevance_npz", "reason"]


@dataclass
class BatchResult:
    """What :func:`explain_batch` did. ``skipped`` lists ``(key, path, reason)``; ``changed`` and
    ``damaged`` count earlier results explained again because their input changed (path or
    content) or their result files no longer matched the manifest."""

    out_dir: str
    total: int
    ok: int
    new: int
    skipped: list = field(default_factory=list)
    pending: int = 0
    changed: int = 0
    damaged: int = 0

    @property
    def complete(self) -> bool:
        """Every input was handled (explained or skipped)."""
        return self.pending == 0

    @property
    def scores_csv(self) -> str:
        return os.path.join(self.out_dir, SCORES_CSV)

    @property
    def relevances_npz(self) -> str:
        return os.path.join(self.out_dir, RELEVANCES_NPZ)


class Progress:
    """Progress on stderr: a self-updating line on a terminal, a line every few seconds otherwise."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream=None, every: float = 2.0):
        self.total, self.label, self.enabled = total, label, enabled and total > 0
        self.stream = stream or sys.stderr
        self.every = every
        self.done = self.skipped = 0
        self.start = self.last = time.perf_counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: int = 0, skipped: int = 0) -> None:
        self.done += done
        self.skipped += skipped
        now = time.perf_counter()
        finished = self.done + self.skipped >= self.total
        if self.enabled and (self.tty or finished or now - self.last >= self.every):
            self.last = now
            self._print(end="\n" if finished or not self.tty else "")

    def _print(self, end: str) -> None:
        handled = self.done + self.skipped
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - handled) / rate if rate > 0 else math.nan
        text = f"{self.label}: {handled}/{self.total} images"
        if self.skipped:
            text += f" ({self.skipped} skipped)"
        text += f", {rate:.1f} img/s"
        if handled < self.total and math.isfinite(eta):
            text += f", about {eta:.0f} s left"
        prefix = "\r\x1b[K" if self.tty else ""
        self.stream.write(prefix + text + end)
        self.stream.flush()


# ---------------------------------------------------------------------- run file
def _check_run_file(out_dir: str, fingerprint: dict, resume: bool) -> None:
    path = os.path.join(out_dir, RUN_FILE)
    if resume and os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            try:
                previous = json.load(fh)
            except (json.JSONDecodeError, UnicodeDecodeError):
                previous = None
        has_results = os.path.exists(os.path.join(out_dir, MANIFEST))
        if isinstance(previous, dict) and previous != fingerprint and has_results:
            changed = sorted(k for k in set(previous) | set(fingerprint)
                             if previous.get(k) != fingerprint.get(k))
            raise RunMismatchError(out_dir, changed)
    _write_atomic_text(path, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")


def _write_atomic_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _clear_previous(out_dir: str) -> None:
    """Remove the files a previous run wrote here (only ours: other files are left alone)."""
    for name in (MANIFEST, RUN_FILE, SCORES_CSV, RELEVANCES_NPZ, SUMMARY_JSON):
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            os.remove(path)
    for folder, suffix in ((HEATMAP_DIR, ".png"), (RELEVANCE_DIR, ".npz")):
        folder = os.path.join(out_dir, folder)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.endswith(suffix):
                    os.remove(os.path.join(folder, name))


# ---------------------------------------------------------------------- reading inputs
def _input_digest(path: str) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def _reusable(out_dir, items, records) -> tuple[set, int, int]:
    """Keys whose recorded result can be kept: same input path, same input bytes, result files
    intact. Also counts the results dropped because the input changed and because they are damaged."""
    done, changed, damaged = set(), 0, 0
    for item in items:
        record = records.get(item.key)
        if record is None or record.get("status") != "ok":
            continue
        if record.get("path") != item.path or record.get("input_sha256") != _input_digest(item.path):
            changed += 1
        elif not verified(out_dir, record):
            damaged += 1
        else:
            done.add(item.key)
    return done, changed, damaged


# ---------------------------------------------------------------------- writing results
def _record(key, item, fields, reason, digest=None):
    """The manifest record of one image: ``fields`` from :class:`ResultWriter`, or None and a reason."""
    if fields is None:
        return {"key": key, "path": item.path, "status": "skipped", "reason": reason, "input_sha256": digest}
    return {"key": key, "path": item.path, "input_sha256": digest, "status": "ok", **fields}


class _RelevanceArchive:
    """``relevances.npz`` (every explained map, one ``KEY.npy`` member per image, in input order),
    written while the run goes rather than all at its end: an image's map joins it as soon as the
    image and every one before it are settled (recorded in this run, or not to be explained in it).
    The copying runs in the driver (which also explains pieces with forked workers: the guided
    pieces spread that load); the archive's content is what writing it at the end would give. It
    replaces the previous archive only when the run completes (:meth:`finish`); an interrupted run
    removes it (:meth:`discard`)."""

    def __init__(self, out_dir: str, items: list[ImageItem]):
        self.out_dir, self.items, self.next = out_dir, items, 0
        self.tmp = os.path.join(out_dir, f".{RELEVANCES_NPZ}.tmp")
        # our own file handle, closed by finish or discard even when the zip cannot be
        self.raw = open(self.tmp, "wb")  # noqa: SIM115
        self.npz = zipfile.ZipFile(self.raw, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)

    def advance(self, records: dict[str, dict], outstanding) -> None:
        """Add the maps of the settled images that follow the last one added (``outstanding``: the
        keys this run has still to record)."""
        while self.next < len(self.items) and self.items[self.next].key not in outstanding:
            key = self.items[self.next].key
            record = records.get(key)
            if record is not None and record["status"] == "ok":
                with np.load(os.path.join(self.out_dir, record["relevance_npz"]), allow_pickle=False) as data:
                    relevance = data["relevance"]
                # one map in memory at a time, streamed into the zip as KEY.npy
                with self.npz.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(relevance), allow_pickle=False)
            self.next += 1

    def finish(self, records: dict[str, dict]) -> None:
        self.advance(records, ())
        self.npz.close()
        self.raw.close()
        os.replace(self.tmp, os.path.join(self.out_dir, RELEVANCES_NPZ))

    def discard(self) -> None:
        try:
            # the zip's directory goes into a file about to be removed: a full disk may refuse it,
            # and that must not hide why the run stopped
            with contextlib.suppress(OSError, ValueError):
                self.npz.close()
        finally:
            self.raw.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.tmp)


def _write_outputs(out_dir: str, items: list[ImageItem], records: dict[str, dict]) -> dict:
    """scores.csv and summary.json from the manifest, in input order (relevances.npz is written
    as the run goes: :class:`_RelevanceArchive`)."""
    counts = {"total": len(items), "ok": 0, "skipped": 0, "pending": 0}
    tmp_csv = os.path.join(out_dir, f".{SCORES_CSV}.tmp")
    with open(tmp_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SCORE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for item in items:
            record = records.get(item.key)
            if record is None:
                record = {"key": item.key, "path": item.path, "status": "pending"}
            counts[record["status"]] += 1
            row = {k: csv_text(record.get(k)) for k in SCORE_COLUMNS}
            for k in ("score", "relevance_sum", "residual"):
                if isinstance(record.get(k), float):
                    row[k] = repr(record[k])  # exact: a reader gets the same float back
            writer.writerow(row)
    os.replace(tmp_csv, os.path.join(out_dir, SCORES_CSV))
    counts["complete"] = counts["pending"] == 0
    _write_atomic_text(os.path.join(out_dir, SUMMARY_JSON), json.dumps(counts, indent=2) + "\n")
    return counts


# ---------------------------------------------------------------------- the public entry point
def explain_batch(explainer, items, out_dir, *, target=None, chunk_size: int = 8, n_jobs: int = 1,
                  backend=None, scheduler=None, limit: int | None = None, resume: bool = True,
                  png: bool = True, cmap: str = "bwr", overlay: bool = False, read_mode: str = "auto",
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, run_info: dict | None = None,
                  progress: bool = True, on_result=None) -> BatchResult:
    """Explain many images, writing each result as soon as it is ready; resumable.

    Parameters
    ----------
    explainer : bowlrp.explainer.Explainer
        For example :class:`bowlrp.app.adapters.BoWExplainer` or ``NetworkExplainer`` (at least
        ``explain(images, target=None) -> list[Heatmap]``). Must be picklable for ``n_jobs != 1``
        and dask.
    items : list of ImageItem, or paths / folders / CSV files (see :func:`bowlrp.imageio.list_images`)
    out_dir : str or path
        Output folder (layout in the module docstring). Created when missing.
    target : class label or index, optional
        What to explain; None = each image's predicted class.
    chunk_size : int
        Images per task. Memory in use is about ``chunk_size * (2 * workers)`` images.
    n_jobs : int
        joblib workers (-1 = all cores); 1 runs in this process.
    backend : str, optional
        joblib backend ("loky", "threading", "multiprocessing", or "dask" inside a dask client).
    scheduler : str or distributed.Client, optional
        Run on a dask distributed cluster instead of joblib (e.g. ``"tcp://host:8786"``).
    limit : int, optional
        Explain at most this many new images in this call (the rest stays pending for a rerun).
    resume : bool
        Continue a previous run in ``out_dir`` (default): results whose input (path and content)
        is unchanged and whose files are intact are kept, everything else is explained. False
        starts over, deleting its results.
    png, cmap, overlay : rendering of the per-image heatmap PNGs.
    read_mode : {"auto", "gray", "rgb"}
    max_pixels : int or None
        Larger images (from their header, before decoding) are skipped with the reason.
    run_info : dict, optional
        Extra settings that identify the run (e.g. a hash of the model file); a resumed run must
        have the same.
    progress : bool
        Report progress on stderr.
    on_result : callable, optional
        Called with each manifest record after it is written (for monitoring).

    Returns
    -------
    BatchResult

    Raises
    ------
    RunMismatchError
        ``out_dir`` holds a run with other settings and ``resume`` is True.
    RunLockedError
        Another run is writing into ``out_dir`` (the message says which process).
    KeyboardInterrupt
        Passed on after the finished images are safely recorded; rerun to resume.
    """
    if isinstance(chunk_size, bool) or int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    if limit is not None and int(limit) < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer (-1 = all cores), got {n_jobs!r}")
    if not (items and all(isinstance(i, ImageItem) for i in items)):
        items = list_images(items)
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise ValueError("image keys must be unique (they name the output files)")
    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, RELEVANCE_DIR), exist_ok=True)
    if png:
        os.makedirs(os.path.join(out_dir, HEATMAP_DIR), exist_ok=True)
    with RunLock(out_dir):
        return _explain_locked(explainer, items, out_dir, target, chunk_size, n_jobs, backend, scheduler,
                               limit, resume, png, {"cmap": cmap, "overlay": overlay}, read_mode,
                               max_pixels, run_info, progress, on_result)


def _explain_locked(explainer, items, out_dir, target, chunk_size, n_jobs, backend, scheduler, limit,
                    resume, png, render_options, read_mode, max_pixels, run_info, progress, on_result):
    if not resume:
        _clear_previous(out_dir)
    describe = getattr(explainer, "describe", None)
    fingerprint = {
        "format": RUN_FORMAT,
        "explainer": describe() if callable(describe) else type(explainer).__name__,
        "target": jsonable(target),
        "png": bool(png), **render_options, "overlay": bool(render_options["overlay"]),
        "read_mode": read_mode, "run_info": run_info or {},
    }
    _check_run_file(out_dir, fingerprint, resume)

    records = read_manifest(out_dir)
    done, changed, damaged = _reusable(out_dir, items, records)
    todo = [item for item in items if item.key not in done]
    if limit is not None:
        todo = todo[:int(limit)]
    for item in items:
        # an earlier "ok" that cannot be kept (its input changed, or its files are damaged) and is
        # not explained again in this run (beyond --limit) is pending, never reported or archived
        if item.key not in done and records.get(item.key, {}).get("status") == "ok":
            del records[item.key]
    by_key = {item.key: item for item in items}

    chunks = ImageChunks(todo, chunk_size, read_mode, max_pixels)
    write = ResultWriter(out_dir, png, render_options)
    results = run_chunks(explainer, chunks, target, write, n_jobs, backend, scheduler)

    bar = Progress(len(todo), "explain", enabled=progress)
    new, interrupted, completed = 0, False, False
    outstanding, archive = {item.key for item in todo}, None
    manifest = open_manifest(out_dir)
    try:
        archive = _RelevanceArchive(out_dir, items)
        for chunk_results in results:
            # the chunk's files are durably in place (each fsync'ed and renamed, and their folders
            # fsync'ed, by whichever process wrote them: executors.written), so no manifest record
            # ever names a file a power cut could still take away
            for key, fields, reason in chunk_results:
                record = _record(key, by_key[key], fields, reason, chunks.digests.get(key))
                new += fields is not None
                manifest.write(json.dumps(record) + "\n")
                manifest.flush()
                records[key] = record
                outstanding.discard(key)
                bar.update(done=fields is not None, skipped=fields is None)
                if on_result is not None:
                    on_result(record)
            os.fsync(manifest.fileno())  # a chunk's records survive a power cut, not just a crash
            archive.advance(records, outstanding)
            if not outstanding:
                break  # every image is in: the outputs first, the executor's own end after them
        archive.finish(records)
        completed = True
        counts = _write_outputs(out_dir, items, records)
        # the executor now ends as it does when done (forked workers joined, the run's one-thread
        # limit lifted: OpenBLAS then starts its threads again, which busy-wait a while), no longer
        # ahead of the outputs: a worker's exit and those threads overlap them instead
        try:
            for late in results:
                if late:
                    raise RuntimeError(f"the executor returned {len(late)} results after every image "
                                       "was recorded")
        except WorkerLossError as error:
            # every image is saved and the outputs are written: a worker's results come only after its
            # files are durably in place, so an end this late cannot touch them (the run is complete)
            warnings.warn(f"a worker ended abnormally after every image was saved: {error}",
                          RuntimeWarning, stacklevel=2)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        # the workers stop first, whatever fails after: none may outlive the run (and its lock)
        try:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stop the executor's generator (cancels queued joblib/dask work)
        finally:
            try:
                manifest.close()
            finally:
                if archive is not None and not completed:
                    archive.discard()
        if interrupted and progress and not completed:
            sys.stderr.write(f"\ninterrupted: {new} new images saved in {out_dir}; rerun to resume\n")

    skipped = [(item.key, item.path, records[item.key].get("reason", "")) for item in items
               if records.get(item.key, {}).get("status") == "skipped"]
    return BatchResult(out_dir=out_dir, total=len(items), ok=counts["ok"], new=new, skipped=skipped,
                       pending=counts["pending"], changed=changed, damaged=damaged)
