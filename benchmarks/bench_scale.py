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

``--jobs``: what ``bowlrp explain -j 2`` gains over ``-j 1``, start-up included (the issue-15 target:
at least 1.6x the throughput from 100 images on). 100, 200 and 400 scenes of 64 x 64, for a
``BoWClassifier(vocabulary_size=64)`` and for the demo's small CNN (``ConvNetClassifier("small_cnn")``,
LRP epsilon-plus-flat), repeats interleaved. Every parallel run starts cold, as a command-line run
does: no worker pool and no fork server left from the previous run, and a new output folder.
Modes: ``-j 1`` (in this process, as the command line runs it), ``-j 1`` with one BLAS/numba thread
(the work of one worker, in this process), ``-j 2`` (the default: this process and one worker
forked from it once it has loaded the kernels, both claiming pieces of the images that shrink
toward the end, each reading, explaining and writing its own), ``-j 2`` with two workers forked
from a server process instead (still used when the driver runs other threads) and ``-j 2`` on
joblib's loky (the default before that); then a start-up probe of the first two (their workers
doing every chunk). ``--sizes``, ``--models``, ``--modes`` and ``--no-probe`` make shorter runs.
Besides wall time (meaningless on a loaded machine except as a ratio), CPU seconds: the driver's,
and the workers' (with their server's), read from ``getrusage(RUSAGE_CHILDREN)`` once the pool is gone.

    .venv/bin/python benchmarks/bench_scale.py            # 96 scenes of 96 x 96
    .venv/bin/python benchmarks/bench_scale.py --quick    # 16 scenes of 64 x 64
    .venv/bin/python benchmarks/bench_scale.py --jobs     # -j 1 vs -j 2, 100/200/400 scenes, 3 repeats
    .venv/bin/python benchmarks/bench_scale.py --jobs --modes "-j 1;-j 2" --no-probe --repeats 5
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)
import numpy as np
from _timing import children_cpu  # noqa: E402

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


def fit_cnn(size: int):
    """The demo's small CNN (fewer epochs: the weights do not change the cost of explaining)."""
    from bowlrp.app.scenes import make_scenes
    from nets.train import ConvNetClassifier

    train = make_scenes(n_images=40, size=size, random_state=123)
    return ConvNetClassifier("small_cnn", epochs=3, random_state=0).fit(train.images, train.labels)


# how long OpenBLAS's threads busy-wait once started (~0.1 s), with a margin
_BLAS_SPIN_SECONDS = 0.2


def _stop_pools() -> None:
    """End every worker pool and fork server this process started, and reap them (a cold start for
    the next run, and their CPU time lands in RUSAGE_CHILDREN); then let the threads OpenBLAS
    restarted settle. A ``-j 2`` run ends by lifting its one-thread limit, and OpenBLAS, whose pool
    the fork stopped, starts its threads again; they busy-wait about 0.1 s, and would take CPU from
    the run timed right after (two processes on this machine's two vCPUs gain only x1.6: they share
    more than the cores)."""
    from multiprocessing import forkserver

    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)
    server = forkserver._forkserver  # no public way to stop it: what a fresh command-line run sees
    if getattr(server, "_forkserver_pid", None) is not None:
        server._stop()
    time.sleep(_BLAS_SPIN_SECONDS)


def cli_runs(model, folder, work, repeats) -> dict:
    """Wall seconds of whole ``bowlrp explain`` commands, -j 1 and -j 2 interleaved: what a user
    waits for (the fork server's imports overlap the command's own loading of the model)."""
    import subprocess

    from bowlrp.app.persist import save_model

    path = save_model(model, work / "model.npz")
    walls = {1: [], 2: []}
    for _ in range(repeats):
        for jobs in walls:
            command = [sys.executable, "-m", "bowlrp.app.cli", "explain", str(path), str(folder), "-o",
                       str(work / "cli_out"), "-j", str(jobs), "-q"]
            shutil.rmtree(work / "cli_out", ignore_errors=True)  # a first run into a new folder
            start = time.perf_counter()
            subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           stdout=subprocess.DEVNULL)
            walls[jobs].append(time.perf_counter() - start)
    return walls


def _spin(units: int) -> None:
    x = 0
    for i in range(units * 1_000_000):
        x += i * i


def parallel_headroom(repeats: int = 3) -> float:
    """What two processes gain over one on a pure CPU loop right now (median of ``repeats``): the
    most any ``-j 2`` could gain at the moment. On a machine that other jobs keep busy it falls
    toward x1.0, and the ratios measured beside it mean no more than that."""
    gains = []
    for _ in range(repeats):
        start = time.perf_counter()
        _spin(4)
        alone = time.perf_counter() - start
        start = time.perf_counter()
        child = os.fork()
        if child == 0:
            _spin(2)
            os._exit(0)
        _spin(2)
        os.waitpid(child, 0)
        gains.append(alone / (time.perf_counter() - start))
    return statistics.median(gains)


def _line(xs, ys):
    """Least-squares ``y = a + b x``: (a, b)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def report(name, sizes, modes, runs, cli, repeats, headroom) -> None:
    print(f"\n{name}, load average {os.getloadavg()[0]:.1f} (medians of {repeats}, CPU in ms per image); "
          f"two processes on a CPU loop meanwhile: x{statistics.median(headroom):.2f} "
          f"({min(headroom):.2f}-{max(headroom):.2f})")
    print(f"{'images':>6} {'mode':<20} {'img/s':>7} {'spread':>13} {'vs -j 1':>8} "
          f"{'driver CPU':>10} {'worker CPU':>10}")
    for n in sizes:
        base = [n / wall for wall, _, _ in runs[n, "-j 1"]]
        for mode in modes:
            rates = [n / wall for wall, _, _ in runs[n, mode]]
            # the ratio of each repeat (its runs followed each other), then their median
            ratio = statistics.median(r / b for r, b in zip(rates, base))
            driver = statistics.median(c for _, c, _ in runs[n, mode]) / n * 1e3
            workers = statistics.median(c for _, _, c in runs[n, mode]) / n * 1e3
            print(f"{n:>6} {mode:<20} {statistics.median(rates):7.1f} "
                  f"{min(rates):6.1f}-{max(rates):<6.1f} x{ratio:<7.2f} {driver:10.2f} {workers:10.2f}",
                  flush=True)
    # start-up and running costs, from a line through the medians over the batch sizes
    fitted = sizes if len(sizes) > 1 else ()  # (no line through one point)
    print("mode                 start-up: wall s, CPU s (driver + workers) | running: img/s (vs -j 1), "
          "CPU ms/image")
    steady = {}
    for mode in modes if fitted else ():
        med = [[statistics.median(run[k] for run in runs[n, mode]) for k in range(3)] for n in fitted]
        wall0, wall1 = _line(fitted, [m[0] for m in med])
        cpu0, cpu1 = _line(fitted, [m[1] + m[2] for m in med])
        steady[mode] = 1 / wall1
        print(f"{mode:<20} {wall0:8.2f} s {cpu0:6.2f} s {'':>22}| {steady[mode]:7.1f} "
              f"(x{steady[mode] / steady['-j 1']:.2f}) {cpu1 * 1e3:7.2f}")
    if cli is None:
        return
    one, two = statistics.median(cli[1]), statistics.median(cli[2])
    print(f"bowlrp explain, {sizes[0]} images, whole command: -j 1 {one:.2f} s, -j 2 {two:.2f} s "
          f"(spreads {min(cli[1]):.2f}-{max(cli[1]):.2f}, {min(cli[2]):.2f}-{max(cli[2]):.2f}): "
          f"-j 2 / -j 1 throughput x{statistics.median(a / b for a, b in zip(cli[1], cli[2])):.2f}",
          flush=True)


def startup_probe(explainer, folder, work, repeats) -> None:
    """Where a ``-j 2`` run's start-up goes, by how its workers start (the driver does not explain
    chunks itself here, so the first result is a worker's): seconds until the first image is
    recorded, then per image, and the CPU seconds of the workers (with their server's)."""
    from bowlrp.app import process_pool
    from bowlrp.app.batch import explain_batch

    pools = {"forked from the run": True, "forked from a server": False}
    rows = {name: [] for name in pools}
    fork_before, helps = process_pool.FORK_DRIVER, process_pool.DRIVER_HELPS
    process_pool.DRIVER_HELPS = False
    try:
        for _ in range(repeats):
            for name, fork_driver in pools.items():
                process_pool.FORK_DRIVER = fork_driver
                _stop_pools()
                shutil.rmtree(work / "probe", ignore_errors=True)
                times = []  # when each image was recorded
                start, children = time.perf_counter(), children_cpu()
                explain_batch(explainer, [str(folder)], work / "probe", n_jobs=2, progress=False,
                              on_result=lambda record, times=times: times.append(time.perf_counter()))
                end = time.perf_counter() - start
                times = [t - start for t in times]
                _stop_pools()
                rows[name].append((times[0], (times[-1] - times[0]) / (len(times) - 1), end - times[-1],
                                   children_cpu() - children))
    finally:
        process_pool.FORK_DRIVER, process_pool.DRIVER_HELPS = fork_before, helps
    print("-j 2 start-up, workers only: first image recorded after (s) | then ms per image | "
          "final files (s) | workers' CPU (s)")
    for name, runs in rows.items():
        first, each, tail, cpu = (statistics.median(run[k] for run in runs) for k in range(4))
        print(f"  {name:<22} {first:6.2f} | {each * 1e3:6.2f} | {tail:5.2f} | {cpu:5.2f}", flush=True)


JOB_MODES = {"-j 1": {"n_jobs": 1}, "-j 1, 1 thread": {"n_jobs": 1, "threads": 1},
             "-j 2": {"n_jobs": 2}, "-j 2 server (before)": {"n_jobs": 2, "fork_driver": False},
             "-j 2 loky": {"n_jobs": 2, "backend": "loky"}}


def jobs_benchmark(sizes=(100, 200, 400), repeats=3, side=64, models=("bow", "cnn"), modes=None,
                   probe=True) -> None:
    from bowlrp.app import process_pool
    from bowlrp.app.adapters import BoWExplainer, NetworkExplainer
    from bowlrp.app.batch import explain_batch
    from bowlrp.jit import limited_threads

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_jobs_"))
    try:
        folders = {}
        for n in sizes:
            folders[n] = work / f"scenes{n}"
            write_scenes(folders[n], n, side, seed=0)
        fitted = {"bow": ("BoW/SVM (64 words)", BoWExplainer, fit_model),
                  "cnn": ("small CNN (LRP)", NetworkExplainer, fit_cnn)}
        models = {name: (adapter(model), model) for name, adapter, fit in (fitted[m] for m in models)
                  for model in [fit(side)]}
        modes = {mode: JOB_MODES[mode] for mode in modes or JOB_MODES}
        print(f"-j 1 vs -j 2: scenes of {side}x{side}, {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f}; two processes on a CPU loop: x{parallel_headroom():.2f}",
              flush=True)
        for name, (explainer, model) in models.items():
            explain_batch(explainer, [str(folders[sizes[0]])], work / "warm", resume=False,
                          progress=False)  # numba kernels loaded in this process
            runs = {(n, mode): [] for n in sizes for mode in modes}
            headroom = []
            for _ in range(repeats):
                headroom.append(parallel_headroom(1))
                for n in sizes:
                    for mode, options in modes.items():  # interleaved: the load hits every mode alike
                        options = dict(options)
                        threads = options.pop("threads", None)
                        process_pool.FORK_DRIVER = options.pop("fork_driver", True)
                        _stop_pools()
                        # a new output folder, as for a user's first run (clearing the previous
                        # run's files, 3 ms per unlink here, would be timed alike in every mode)
                        out = work / "out"
                        shutil.rmtree(out, ignore_errors=True)
                        wall, cpu, children = time.perf_counter(), time.process_time(), children_cpu()
                        with limited_threads(threads):
                            explain_batch(explainer, [str(folders[n])], out, progress=False, **options)
                        wall = time.perf_counter() - wall
                        cpu = time.process_time() - cpu
                        process_pool.FORK_DRIVER = True
                        _stop_pools()
                        runs[n, mode].append((wall, cpu, children_cpu() - children))
            cli = cli_runs(model, folders[sizes[0]], work, repeats) if probe else None
            report(name, sizes, modes, runs, cli, repeats, headroom)
            if probe:
                startup_probe(explainer, folders[sizes[0]], work, repeats)
    finally:
        _stop_pools()
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--jobs", action="store_true", help="-j 1 vs -j 2 at 100, 200, 400 images")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of --jobs")
    parser.add_argument("--sizes", default=None, help="--jobs: numbers of images (default 100,200,400)")
    parser.add_argument("--models", default="bow,cnn", help="--jobs: bow, cnn or both (default)")
    parser.add_argument("--modes", default=None,
                        help=f"--jobs: a ';'-separated subset of {'; '.join(JOB_MODES)} (default all)")
    parser.add_argument("--no-probe", action="store_true",
                        help="--jobs: skip the whole-command runs and the start-up probe")
    args = parser.parse_args(argv)
    if args.jobs:
        sizes = (20, 40) if args.quick else (100, 200, 400)
        if args.sizes:
            sizes = tuple(int(n) for n in args.sizes.split(","))
        modes = [mode.strip() for mode in args.modes.split(";")] if args.modes else None
        unknown = sorted(set(modes or ()) - set(JOB_MODES))
        if unknown:
            parser.error(f"unknown --modes {unknown}; choose from {'; '.join(JOB_MODES)}")
        if modes and "-j 1" not in modes:
            modes.insert(0, "-j 1")  # (every ratio is to it)
        jobs_benchmark(sizes=sizes, repeats=args.repeats, models=args.models.split(","), modes=modes,
                       probe=not args.no_probe)
        return 0
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
    _blas.native_blas()
    sys.exit(main())
