"""Explaining at scale: throughput of ``bowlrp.app.batch.explain_batch`` with 1 and 2 workers, and the
driver's memory as the batch grows.

What a user would otherwise do is a plain loop (read an image, ``clf.explain``, save), single process;
that is the baseline. Measured in one run, on the same image files and model:

* the plain loop;
* ``explain_batch`` serial (n_jobs=1: the streaming, manifest and output writing it adds);
* ``explain_batch`` with joblib, n_jobs 1 and 2 (loky; joblib runs n_jobs=1 in the calling process);
* ``explain_batch`` on a dask ``LocalCluster`` (127.0.0.1, processes), 1 and 2 workers;
* the driver's peak traced memory (tracemalloc) for N and 4N images, serial: streaming keeps it flat.

Workers are started (and numba kernels loaded in them) before timing: a warm-up batch runs first.

    .venv/bin/python benchmarks/bench_scale.py            # 96 scenes of 96 x 96
    .venv/bin/python benchmarks/bench_scale.py --quick    # 16 scenes of 64 x 64
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time
import tracemalloc

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # datasets/ lives in the repository, not in the installed package


def write_scenes(folder: pathlib.Path, n: int, size: int, seed: int) -> None:
    from PIL import Image

    from bowlrp.app.scenes import make_scenes

    folder.mkdir(parents=True, exist_ok=True)
    scenes = make_scenes(n_images=n, size=size, random_state=seed)
    for i, image in enumerate(scenes.images):
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / f"scene{i:04d}.png")


def fit_model(size: int):
    from bowlrp.app.scenes import make_scenes
    from bowlrp.bow.classifier import BoWClassifier

    train = make_scenes(n_images=40, size=size, random_state=123)
    return BoWClassifier(vocabulary_size=64, random_state=0).fit(list(train.images), train.labels)


def plain_loop(clf, folder: pathlib.Path, out: pathlib.Path) -> int:
    """What a user writes without the batch tool: read, explain, save, one image at a time."""
    from bowlrp.imageio import read_image

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for path in sorted(folder.glob("*.png")):
        heatmap = clf.explain([read_image(path)])[0]
        heatmap.save(out / f"{path.stem}.npz")
        heatmap.save(out / f"{path.stem}.png")
        n += 1
    return n


def warm_worker(explainer, image):
    """Run one explanation in a worker so that its numba kernels are loaded before timing."""
    explainer.explain([image])
    return os.getpid()


def timed(label, func, n_images, rows, baseline=None):
    start = time.perf_counter()
    func()
    seconds = time.perf_counter() - start
    rate = n_images / seconds
    rows.append((label, seconds, rate))
    ratio = f"x{rate / baseline:.2f}" if baseline else "x1.00"
    print(f"{label:<42s} {seconds:7.2f} s  {rate:7.1f} img/s  {ratio} vs the plain loop", flush=True)
    return rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args(argv)
    n, size = (16, 64) if args.quick else (96, 96)

    from distributed import Client, LocalCluster

    from bowlrp.app.adapters import BoWExplainer
    from bowlrp.app.batch import explain_batch

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        images = work / "images"
        write_scenes(images, n, size, seed=0)
        write_scenes(work / "warm", 4, size, seed=1)
        clf = fit_model(size)
        explainer = BoWExplainer(clf)
        print(f"{n} scenes of {size}x{size}, BoW/SVM with {clf.vocabulary_size} words, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)

        def batch(out, **options):
            return lambda: explain_batch(explainer, [str(images)], work / out, chunk_size=4, progress=False,
                                         **options)

        explain_batch(explainer, [str(work / "warm")], work / "warm_out", progress=False)  # numba warm-up
        rows = []
        base = timed("plain loop (read, explain, save)", lambda: plain_loop(clf, images, work / "loop"), n,
                     rows)
        timed("explain_batch, serial", batch("serial"), n, rows, base)
        from joblib import Parallel, delayed

        from bowlrp.imageio import read_image

        sample = read_image(next(iter(sorted((work / "warm").glob("*.png")))))
        for jobs in (1, 2):
            # warm the loky pool (reused by the timed run): every process loads numba's kernels once
            pids = set(Parallel(n_jobs=jobs, backend="loky")(
                delayed(warm_worker)(explainer, sample) for _ in range(4 * jobs)))
            where = "this process (joblib runs n_jobs=1 in the caller)" if jobs == 1 else \
                f"{len(pids)} worker process(es)"
            print(f"  joblib warm-up reached {where}", flush=True)
            timed(f"explain_batch, joblib loky, {jobs} worker(s)", batch(f"joblib{jobs}", n_jobs=jobs,
                                                                         backend="loky"), n, rows, base)
        for workers in (1, 2):
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=None) as cluster, Client(cluster) as client:
                client.run(warm_worker, explainer, sample)  # on every worker
                timed(f"explain_batch, dask LocalCluster, {workers} worker(s)",
                      batch(f"dask{workers}", scheduler=cluster.scheduler_address), n, rows, base)
        one = {label: rate for label, _, rate in rows}
        for kind in ("joblib loky", "dask LocalCluster"):
            r1 = one[f"explain_batch, {kind}, 1 worker(s)"]
            r2 = one[f"explain_batch, {kind}, 2 worker(s)"]
            print(f"{kind}: 2 workers / 1 worker = x{r2 / r1:.2f}")

        # memory of the driver: streaming keeps the peak flat as the batch grows
        peaks = {}
        for count in (n // 4, n):
            subset = work / f"mem{count}"
            subset.mkdir()
            for path in sorted(images.glob("*.png"))[:count]:
                shutil.copy(path, subset)
            tracemalloc.start()
            explain_batch(explainer, [str(subset)], work / f"mem_out{count}", chunk_size=4, progress=False)
            peaks[count] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        print("driver peak traced memory, serial: " +
              ", ".join(f"{count} images {mb:.1f} MiB" for count, mb in peaks.items()) +
              f" (x{peaks[n] / peaks[n // 4]:.2f} for x4 images)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
