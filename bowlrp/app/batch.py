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

Resuming: a record is appended to the manifest only after the image's files are in place (written
to a temporary name, then renamed), so after an interruption, at any moment, the manifest lists
exactly the images that are done. Running the same command again reads it and explains only the
rest. Files that could not be read or explained are recorded as ``skipped`` with the reason; they
are tried again on a rerun (the file may have been fixed).

Parallelism: ``n_jobs`` workers through joblib (any joblib backend), or a dask distributed cluster
(``scheduler``: an address such as ``tcp://10.0.0.5:8786`` or a ``distributed.Client``). Images are
read by the driver and sent to the workers, so workers need no access to the input files; the model
is sent once per worker (dask) or once per chunk (joblib). The numbers do not depend on the
executor: each image's explanation is computed by the same code on the same inputs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from bowlrp.app.adapters import realign
from bowlrp.imageio import ImageItem, ImageReadError, list_images, read_image
from bowlrp.jit import limited_threads

__all__ = ["explain_batch", "BatchResult", "RunMismatchError", "Progress", "read_manifest"]

MANIFEST = "manifest.jsonl"
RUN_FILE = "run.json"
SCORES_CSV = "scores.csv"
RELEVANCES_NPZ = "relevances.npz"
SUMMARY_JSON = "summary.json"
HEATMAP_DIR = "heatmaps"
RELEVANCE_DIR = "relevance"
RUN_FORMAT = 1

SCORE_COLUMNS = ["key", "path", "status", "target", "score", "relevance_sum", "residual", "method",
                 "heatmap_png", "relevance_npz", "reason"]


class RunMismatchError(ValueError):
    """The output folder holds a run with different settings (another model, target, ...)."""


@dataclass
class BatchResult:
    """What :func:`explain_batch` did. ``skipped`` lists ``(key, path, reason)``."""

    out_dir: str
    total: int
    ok: int
    new: int
    skipped: list = field(default_factory=list)
    pending: int = 0

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


# ---------------------------------------------------------------------- manifest and run file
def read_manifest(out_dir) -> dict[str, dict]:
    """The latest manifest record of each key (a torn last line from a crash is ignored)."""
    records: dict[str, dict] = {}
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.exists(path):
        return records
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption: that image is redone
            if isinstance(record, dict) and "key" in record:
                records[record["key"]] = record
    return records


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _check_run_file(out_dir: str, fingerprint: dict, resume: bool) -> None:
    path = os.path.join(out_dir, RUN_FILE)
    if resume and os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            try:
                previous = json.load(fh)
            except json.JSONDecodeError:
                previous = None
        has_results = os.path.exists(os.path.join(out_dir, MANIFEST))
        if previous is not None and previous != fingerprint and has_results:
            changed = sorted(k for k in set(previous) | set(fingerprint)
                             if previous.get(k) != fingerprint.get(k))
            raise RunMismatchError(
                f"{out_dir} holds results of a different run (changed: {', '.join(changed)}); "
                "use another output folder, or start over (--overwrite / resume=False)"
            )
    _write_atomic_text(path, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")


def _write_atomic_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
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


# ---------------------------------------------------------------------- the work of one chunk
def _limit_threads(threads):
    """One numba and BLAS thread per worker process while it explains (restored afterwards): workers
    are the parallelism, and several processes each running full thread pools would fight over the
    same cores."""
    return limited_threads(threads)


def _explain_chunk(explainer, keys, images, target, read_failures, threads=None):
    """Explain a chunk; on an error, explain image by image so only the bad ones are lost.

    Runs on the workers. Returns ``[(key, Heatmap or None, reason or None)]`` including the
    images the driver could not read (``read_failures``), so the driver has one stream of results.
    """
    results = [(key, None, reason) for key, reason in read_failures]
    if not keys:
        return results
    with _limit_threads(threads):
        try:
            maps = explainer.explain(list(images), target=target)
            if len(maps) != len(keys):
                raise RuntimeError(f"explainer returned {len(maps)} heatmaps for {len(keys)} images")
            return results + [(key, heatmap, None) for key, heatmap in zip(keys, maps)]
        except Exception as exc:  # one bad image must not sink the chunk: find it
            if len(keys) == 1:
                return results + [(keys[0], None, f"cannot explain: {type(exc).__name__}: {exc}")]
            for key, image in zip(keys, images):
                results += _explain_chunk(explainer, [key], [image], target, [])
            return results


def _read_chunks(items: list[ImageItem], chunk_size: int, read_mode: str) -> Iterator[tuple]:
    """Yield (keys, images, read_failures) per chunk; images are read only when a chunk is due."""
    for start in range(0, len(items), chunk_size):
        keys, images, failures = [], [], []
        for item in items[start:start + chunk_size]:
            try:
                images.append(read_image(item.path, mode=read_mode))
                keys.append(item.key)
            except ImageReadError as exc:
                failures.append((item.key, exc.reason))
        yield keys, images, failures


# ---------------------------------------------------------------------- executors
def _run_serial(explainer, chunks, target):
    for keys, images, failures in chunks:
        yield _explain_chunk(explainer, keys, images, target, failures)


def _run_joblib(explainer, chunks, target, n_jobs, backend):
    from contextlib import nullcontext

    from joblib import Parallel, delayed, parallel_config

    # parallel_config (not Parallel(backend=...)) also finds the external backends such as "dask"
    with parallel_config(backend=backend) if backend is not None else nullcontext():
        parallel = Parallel(n_jobs=n_jobs, return_as="generator_unordered", pre_dispatch="2*n_jobs")
        tasks = (delayed(_explain_chunk)(explainer, k, i, target, f, threads=1) for k, i, f in chunks)
        for result in parallel(tasks):
            for _key, heatmap, _reason in result:
                if heatmap is not None:
                    realign(heatmap)
            yield result


def _run_dask(explainer, chunks, target, scheduler):
    from distributed import Client, as_completed

    own_client = not isinstance(scheduler, Client)
    client = Client(scheduler) if own_client else scheduler
    try:
        workers = client.scheduler_info().get("workers", {})
        slots = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
        window = 2 * slots  # chunks in flight: enough to keep every worker busy, no more
        model = client.scatter(explainer, broadcast=True)
        chunks = iter(chunks)

        def submit(chunk):
            keys, images, failures = chunk
            return client.submit(_explain_chunk, model, keys, images, target, failures, threads=1, pure=False)

        running = as_completed([submit(c) for c in islice(chunks, window)])
        for future in running:
            result = future.result()
            future.release()
            for _key, heatmap, _reason in result:
                if heatmap is not None:
                    realign(heatmap)  # received arrays may sit at odd offsets (see realign)
            following = next(chunks, None)
            if following is not None:
                running.add(submit(following))
            yield result
    finally:
        if own_client:
            client.close()


# ---------------------------------------------------------------------- writing results
def _save_heatmap(out_dir, key, heatmap, png, render_options):
    npz_rel = os.path.join(RELEVANCE_DIR, f"{key}.npz")
    npz_path = os.path.join(out_dir, npz_rel)
    tmp = os.path.join(out_dir, RELEVANCE_DIR, f".{key}.tmp.npz")
    heatmap.save(tmp)
    os.replace(tmp, npz_path)
    png_rel = ""
    if png:
        png_rel = os.path.join(HEATMAP_DIR, f"{key}.png")
        tmp = os.path.join(out_dir, HEATMAP_DIR, f".{key}.tmp.png")
        options = dict(render_options)
        if options.get("overlay") and heatmap.image is None:
            options["overlay"] = False
        heatmap.save(tmp, **options)
        os.replace(tmp, os.path.join(out_dir, png_rel))
    return png_rel, npz_rel


def _record(key, item, heatmap, reason, png_rel="", npz_rel=""):
    if heatmap is None:
        return {"key": key, "path": item.path, "status": "skipped", "reason": reason}
    return {
        "key": key,
        "path": item.path,
        "status": "ok",
        "target": _jsonable(heatmap.target),
        "score": heatmap.score,
        "relevance_sum": heatmap.total,
        "residual": heatmap.residual,
        "method": heatmap.method,
        "heatmap_png": png_rel,
        "relevance_npz": npz_rel,
    }


def _write_outputs(out_dir: str, items: list[ImageItem], records: dict[str, dict]) -> dict:
    """scores.csv, relevances.npz and summary.json from the manifest, in input order."""
    counts = {"total": len(items), "ok": 0, "skipped": 0, "pending": 0}
    tmp_csv = os.path.join(out_dir, f".{SCORES_CSV}.tmp")
    tmp_npz = os.path.join(out_dir, f".{RELEVANCES_NPZ}.tmp")
    with open(tmp_csv, "w", newline="", encoding="utf-8") as fh, \
            zipfile.ZipFile(tmp_npz, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as npz:
        writer = csv.DictWriter(fh, fieldnames=SCORE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for item in items:
            record = records.get(item.key)
            if record is None:
                record = {"key": item.key, "path": item.path, "status": "pending"}
            counts[record["status"]] += 1
            row = {k: ("" if record.get(k) is None else record.get(k)) for k in SCORE_COLUMNS}
            for k in ("score", "relevance_sum", "residual"):
                if isinstance(record.get(k), float):
                    row[k] = repr(record[k])  # exact: a reader gets the same float back
            writer.writerow(row)
            if record["status"] == "ok":
                with np.load(os.path.join(out_dir, record["relevance_npz"]), allow_pickle=False) as data:
                    relevance = data["relevance"]
                # one map in memory at a time, streamed into the zip as KEY.npy
                with npz.open(f"{item.key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(relevance), allow_pickle=False)
    os.replace(tmp_csv, os.path.join(out_dir, SCORES_CSV))
    os.replace(tmp_npz, os.path.join(out_dir, RELEVANCES_NPZ))
    counts["complete"] = counts["pending"] == 0
    _write_atomic_text(os.path.join(out_dir, SUMMARY_JSON), json.dumps(counts, indent=2) + "\n")
    return counts


# ---------------------------------------------------------------------- the public entry point
def explain_batch(explainer, items, out_dir, *, target=None, chunk_size: int = 8, n_jobs: int = 1,
                  backend=None, scheduler=None, limit: int | None = None, resume: bool = True,
                  png: bool = True, cmap: str = "bwr", overlay: bool = False, read_mode: str = "auto",
                  run_info: dict | None = None, progress: bool = True, on_result=None) -> BatchResult:
    """Explain many images, writing each result as soon as it is ready; resumable.

    Parameters
    ----------
    explainer : object with ``explain(images, target=None) -> list[Heatmap]``
        For example :class:`bowlrp.app.adapters.BoWExplainer` or ``NetworkExplainer``. Must be
        picklable for ``n_jobs != 1`` and dask.
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
        Continue a previous run in ``out_dir`` (default). False starts over, deleting its results.
    png, cmap, overlay : rendering of the per-image heatmap PNGs.
    read_mode : {"auto", "gray", "rgb"}
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
    KeyboardInterrupt
        Passed on after the finished images are safely recorded; rerun to resume.
    """
    if isinstance(chunk_size, bool) or int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    if limit is not None and int(limit) < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if not (items and all(isinstance(i, ImageItem) for i in items)):
        items = list_images(items)
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise ValueError("image keys must be unique (they name the output files)")
    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, RELEVANCE_DIR), exist_ok=True)
    if png:
        os.makedirs(os.path.join(out_dir, HEATMAP_DIR), exist_ok=True)
    if not resume:
        _clear_previous(out_dir)
    describe = getattr(explainer, "describe", None)
    fingerprint = {
        "format": RUN_FORMAT,
        "explainer": describe() if callable(describe) else type(explainer).__name__,
        "target": _jsonable(target),
        "png": bool(png), "cmap": cmap, "overlay": bool(overlay), "read_mode": read_mode,
        "run_info": run_info or {},
    }
    _check_run_file(out_dir, fingerprint, resume)

    records = read_manifest(out_dir)
    done = {k for k, r in records.items()
            if r.get("status") == "ok" and os.path.exists(os.path.join(out_dir, r.get("relevance_npz", "")))}
    todo = [item for item in items if item.key not in done]
    if limit is not None:
        todo = todo[:int(limit)]
    by_key = {item.key: item for item in items}

    chunks = _read_chunks(todo, chunk_size, read_mode)
    if scheduler is not None:
        results = _run_dask(explainer, chunks, target, scheduler)
    elif n_jobs == 1 and backend is None:
        results = _run_serial(explainer, chunks, target)
    else:
        results = _run_joblib(explainer, chunks, target, n_jobs, backend)

    bar = Progress(len(todo), "explain", enabled=progress)
    render_options = {"cmap": cmap, "overlay": overlay}
    new, interrupted = 0, False
    manifest = open(os.path.join(out_dir, MANIFEST), "a", encoding="utf-8")
    try:
        for chunk_results in results:
            for key, heatmap, reason in chunk_results:
                item = by_key[key]
                if heatmap is not None:
                    png_rel, npz_rel = _save_heatmap(out_dir, key, heatmap, png, render_options)
                    record = _record(key, item, heatmap, None, png_rel, npz_rel)
                    new += 1
                else:
                    record = _record(key, item, None, reason)
                manifest.write(json.dumps(record) + "\n")
                manifest.flush()
                records[key] = record
                bar.update(done=heatmap is not None, skipped=heatmap is None)
                if on_result is not None:
                    on_result(record)
            os.fsync(manifest.fileno())  # a chunk's records survive a power cut, not just a crash
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        manifest.close()
        close = getattr(results, "close", None)
        if close is not None:
            close()  # stop the executor's generator (cancels queued joblib/dask work)
        if interrupted and progress:
            sys.stderr.write(f"\ninterrupted: {new} new images saved in {out_dir}; rerun to resume\n")

    counts = _write_outputs(out_dir, items, records)
    skipped = [(k, by_key[k].path, records[k].get("reason", "")) for k in keys
               if records.get(k, {}).get("status") == "skipped"]
    return BatchResult(out_dir=out_dir, total=len(items), ok=counts["ok"], new=new, skipped=skipped,
                       pending=counts["pending"])
