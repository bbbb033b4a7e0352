"""Benchmark: what a second thread buys, within one process (issue 15, "both cores").

    .venv/bin/python benchmarks/bench_threads.py            # 7 rounds
    .venv/bin/python benchmarks/bench_threads.py --quick    # 3 rounds, smaller batches
    .venv/bin/python benchmarks/bench_threads.py --bow      # the BoW rows only (with or without --quick)
    .venv/bin/python benchmarks/bench_threads.py --bow --stages   # ... and each BoW explain stage by stage
    .venv/bin/python benchmarks/bench_threads.py --bow --rounds 25  # more rounds on a busy machine

Each workload runs with one thread (``bowlrp.jit.limited_threads(1)``: numba and BLAS) and with two
(``limited_threads(2)``), the two settings alternating round by round; medians, spreads (min..max)
and the ratio of the medians are printed, with the load average (the machine has 2 cores shared
with other jobs: a second thread only helps when the other core is free).

* a VGG-style CNN (float32, 3 x 64 x 64 inputs, batch 32: conv 3x3 32-32-pool-64-64-pool-128-128-
  pool-256-256-pool, dense 256, dense 10, He-initialised weights): ``model(X)`` and
  ``nets.LRP(model, "epsilon_plus_flat").relevance(X)`` (since the nets branch both split the batch
  over the threads themselves, through ``nets.layers.linear.split_over_threads``);
* the same forward by (numba, BLAS) thread counts (1,1), (1,2), (2,1), (2,2), the measurement that
  located the oversubscription (busy-waiting OpenMP workers of numba against OpenBLAS's threads);
* forward and LRP through ``bowlrp.jit.split_batch`` called from outside: the batch in halves on two
  threads, each with serial kernels and one BLAS thread (one pool only; what the plain calls now do);
* a ``BoWClassifier`` (step 4, bin 4, 64 words, intersection kernel) on 96 x 96 generated scenes:
  ``transform`` and ``explain`` of a batch of 48 images (24 with ``--quick``); ``explain`` also with
  the ``exp_chi2`` kernel (Taylor step) and, in the full run, with p = 3 pooling.

Ceilings, measured in the same rounds as the BoW rows (every round runs every workload under both
settings): a nogil numba loop halved over two threads, the BoW's own kernels (dense SIFT and the
encoding's BLAS products of the batch, no Python objects) halved over two threads, the explanation's
Steps 2 and 1 kernels alone (what the decomposition stage would give without its Python), and a plain Python
loop as one process against two (``bench_scale --jobs``'s measurement). A second thread gains only
while the other core is free (the kernel shares CPU time fairly between sessions: with another session
busy, two threads get what one got), so each BoW ratio is also printed as a share of the BoW kernels'
ceiling of the same run; on a free machine the ceilings were 1.74x (Python, 2 processes) to 1.93x (a
compiled loop).

Target: two threads at least 1.6x faster than one for each workload.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)
import numba
import numpy as np

from bowlrp.jit import PARALLEL_MIN_WORK, jit_serial, limited_threads, parallel_map, split_batch


def he(rng, shape, fan_in):
    return rng.normal(size=shape) * np.sqrt(2.0 / fan_in)


def build_vgg(rng, side=64):
    import nets

    layers, channels = [], 3
    for out in (32, 32, None, 64, 64, None, 128, 128, None, 256, 256, None):
        if out is None:
            layers.append(nets.MaxPool2D(2))
            continue
        w = he(rng, (out, channels, 3, 3), 9 * channels)
        layers += [nets.Conv2D(w, rng.normal(size=out) * 0.01, padding=1), nets.ReLU()]
        channels = out
    flat = channels * (side // 16) ** 2
    layers += [nets.Flatten(), nets.Dense(he(rng, (256, flat), flat), np.zeros(256)), nets.ReLU(),
               nets.Dense(he(rng, (10, 256), 256), np.zeros(10))]
    return nets.Sequential(layers).astype(np.float32)


def interleaved(settings, fn, rounds):
    """Times (seconds) of ``fn`` under each thread setting, the settings alternating round by round."""
    return interleaved_rows(settings, {None: fn}, rounds)[None]


def interleaved_rows(settings, rows, rounds):
    """Times of several workloads ``{name: fn}``: each round runs every workload under every setting,
    so all rows (the ceilings too) see the same minutes of the shared machine."""
    times = {name: {key: [] for key in settings} for name in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            for key, (numba_threads, blas_threads) in settings.items():
                with limited_threads(numba_threads), limited_threads(blas_threads, numba_threads=False,
                                                                     user_api="blas"):
                    t0 = time.perf_counter()
                    fn()
                    times[name][key].append(time.perf_counter() - t0)
    return times


def report(name, times, one="1 thread", two="2 threads", ceiling=None):
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    parts = [f"{k}: {med[k]:7.1f} ms [{1e3 * min(v):.1f}..{1e3 * max(v):.1f}]" for k, v in times.items()]
    ratio = f"   speed-up {med[one] / med[two]:.2f}x" if one in med and two in med else ""
    if ratio:
        # each round's two settings ran back to back: the median of the rounds' own ratios follows the
        # load less than the ratio of the medians does
        rounds = np.median(np.asarray(times[one]) / np.asarray(times[two]))
        ratio += f" (rounds {rounds:.2f}x)"
    if ratio and ceiling:
        ratio += f", {med[one] / med[two] / ceiling:.0%} of the BoW kernels' ceiling"
    print(f"{name:<36}" + "   ".join(parts) + ratio, flush=True)
    return med[one] / med[two] if ratio else None


@jit_serial
def _spin(n):
    """A nogil floating-point loop: what two threads of pure compiled code gain on this machine."""
    s = 0.0
    for i in range(n):
        s += np.sqrt(i * 1.0) * 1e-9
    return s


def _python_loop(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def _python_units(units):
    for _ in range(units):
        _python_loop(400_000)


class _Processes:
    """Two worker processes, started once (spawned: forking this large process would leave its pages
    copy-on-write and charge the next row's first writes with page faults): a plain Python loop as
    one process (both halves in one worker) against two (a half in each), bench_scale --jobs'
    measurement, in the rounds of the other rows."""

    def __init__(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        self.workers = [ProcessPoolExecutor(1, mp_context=context) for _ in range(2)]
        for worker in self.workers:
            worker.submit(_python_units, 1).result()  # started and warm before the first round

    def close(self):
        for worker in self.workers:
            worker.shutdown()

    def __call__(self):
        if numba.get_num_threads() == 1:
            self.workers[0].submit(_python_units, 2).result()
        else:
            for job in [worker.submit(_python_units, 1) for worker in self.workers]:
                job.result()


def ceiling_rows(clf, images):
    """Workloads with no Python in their loops, halved over the threads: what a second thread can give.

    * compiled loop: a nogil numba loop, one half per thread (``parallel_map``);
    * SIFT kernels, BLAS products, BoW kernels (both): the dense SIFT kernels and the encoding's BLAS
      products of the batch (the kernels of ``transform``), one half of the images per thread, no
      object built; and "SIFT | BLAS": one thread all the SIFT kernels, the other all the products;
    * decomposition kernels: the explanation's Steps 2 and 1 kernels (``prepare`` and ``relevance``,
      serial builds) on the arguments ``decompose_batch`` gave them for each half, 10 times per half:
      what the decomposition stage's kernels give on two threads without its Python;
    * Python, 2 processes: a plain Python loop as one process and as two (no GIL between them); the
      "1 thread" setting runs both halves in one worker process, "2 threads" a half in each of two.
    """
    from bowlrp.bow.sift_grid import color_planes, default_smoothing, frame_geometry
    from bowlrp.bow.sift_numba import streamed_descriptors
    from bowlrp.validation import check_images

    ex = clf.extractor_
    checked = check_images(images)
    height, width = checked[0].shape[:2]
    bounds = frame_geometry(height, width, ex.bin_sizes, ex.step)[0]
    B = clf.vocabularies_[0].cluster_centers_
    half = len(checked) // 2
    halves = [checked[:half], checked[half:]]
    planes = [np.concatenate([color_planes(im, ex.color) for im in h]) for h in halves]

    descriptors = [np.empty((len(h), int(bounds[-1]), 128), np.float64) for h in halves]

    def sift(k):
        streamed_descriptors(planes[k], len(halves[k]), ex.bin_sizes[0], ex.step,
                             default_smoothing(ex.bin_sizes[0]), ex.contrast_threshold, descriptors[k])

    def products(k):
        for d in descriptors[k]:
            np.matmul(d, B.T)

    def kernels(k):
        sift(k)
        products(k)

    decomposition = _decomposition_kernels(clf, halves)

    _spin(10)  # compile before timing
    n = 3_000_000
    halved = lambda fn: lambda: parallel_map(fn, [0, 1], PARALLEL_MIN_WORK)  # noqa: E731
    return {
        "ceiling: compiled loop": halved(lambda _: _spin(n)),
        "ceiling: SIFT kernels": halved(sift),
        "ceiling: BLAS products": halved(products),
        "ceiling: BoW kernels": halved(kernels),
        # the two kinds side by side: one thread all the SIFT, the other all the products (do two
        # vCPUs of one core give more to different kinds of work than to two halves of the same?)
        "ceiling: SIFT | BLAS": lambda: parallel_map(lambda f: [f(0), f(1)], [sift, products],
                                                     PARALLEL_MIN_WORK),
        "ceiling: decomposition kernels": halved(decomposition),
        "ceiling: Python, 2 procs": _Processes(),
    }


def _decomposition_kernels(clf, halves, repeats=10):
    """``fn(k)``: the Steps 2 and 1 kernels of half k, ``repeats`` times, with the arguments that
    ``decompose_batch`` passed them (recorded once; the BoW vectors stand in for the BoW relevance,
    which the kernels' cost does not depend on)."""
    from bowlrp.bow.decompose import batch

    real = batch._k
    recorded = []

    class _Recording:  # the kernels module, the arguments of its two kernels kept in ``calls``
        def __init__(self, calls):
            self.calls = calls

        def __getattr__(self, name):
            return getattr(real, name)

        def prepare(self, *args):
            self.calls["prepare"] = args
            return real.prepare(*args)

        def relevance(self, *args):
            self.calls["relevance"] = args
            return real.relevance(*args)

    for images in halves:
        features, encodings = clf.extract_and_encode(images)
        recorded.append({})
        batch._k = _Recording(recorded[-1])
        try:
            batch.decompose_batch(features, encodings, np.arange(len(images)),
                                  np.stack([e.x for e in encodings]))
        finally:
            batch._k = real

    def run(k):
        for _ in range(repeats):  # (prepare's column maxima come out the same on every repeat)
            real.prepare.serial(*recorded[k]["prepare"])
            real.relevance.serial(*recorded[k]["relevance"])

    return run


def bow_rows(quick, rounds, both, stages=False):
    """The BoW rows: ``transform`` and ``explain`` of a batch of generated scenes, with the ceilings
    measured in the same rounds; each also with main's two-stage forward pass ("two stages")."""
    import copy

    from bowlrp.app.scenes import make_scenes
    from bowlrp.bow.classifier import BoWClassifier

    train = make_scenes(n_images=40, size=96, random_state=1)
    test = make_scenes(n_images=24 if quick else 48, size=96, random_state=2)
    images = list(test.images)
    # the explanation's other paths: a Taylor kernel (root search on threads) and p-means pooling
    # with p != 1 (the shares' powers by numpy between the two batch kernels)
    variants = [("", {}), (", exp_chi2", {"kernel": "exp_chi2"})]
    if not quick:
        variants.append((", p = 3", {"p": 3.0}))
    rows = {}
    for label, params in variants:
        with limited_threads(1):
            clf = BoWClassifier(vocabulary_size=64, random_state=0, **params).fit(list(train.images),
                                                                                  train.labels)
        clf.explain(images[:2])  # warm-up
        # main's forward pass (dd83860): extract_features, then encode_features, each on its own
        # threads; an instance override of the stages makes extract_and_encode run them that way
        staged = copy.copy(clf)
        staged.extract_features = clf.extract_features
        if not label:
            rows.update(ceiling_rows(clf, images))
            rows["BoW transform"] = lambda clf=clf: clf.transform(images)
            rows["BoW transform, two stages"] = lambda clf=staged: clf.transform(images)
        rows["BoW explain" + label] = lambda clf=clf: clf.explain(images)
        rows["BoW explain" + label + ", two stages"] = lambda clf=staged: clf.explain(images)
        if stages:
            rows.update(bow_stages(clf, images))
    try:
        times = interleaved_rows(both, rows, rounds)
    finally:
        for fn in rows.values():
            getattr(fn, "close", lambda: None)()
    ceiling = None
    for name, t in times.items():
        ratio = report(name, t, ceiling=ceiling)
        if name == "ceiling: BoW kernels":
            ceiling = ratio  # the later rows are also given as a share of it


def bow_stages(clf, images):
    """Where a BoW ``explain`` spends its time, stage by stage: the forward pass (features and
    encoding each alone; decision values) and the decomposition alone (``explain`` with the forward
    pass served from a cache: root search, Steps 2 and 1, the heatmaps)."""
    import copy

    features, encodings = clf.extract_and_encode(images)
    X = np.stack([e.x for e in encodings])
    cached = copy.copy(clf)
    cached.extract_and_encode = lambda _: (features, encodings)
    tag = f"  {clf.kernel}, p = {clf.p:g}: "
    return {tag + "features": lambda: clf.extract_features(images),
            tag + "encoding": lambda: clf.encode_features(features),
            tag + "decision": lambda: clf.decision_from_bows(X),
            tag + "decomposition": lambda: cached.explain(images)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bow", action="store_true", help="the BoW rows only")
    parser.add_argument("--stages", action="store_true", help="each BoW explain also stage by stage")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, 3 quick)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    import nets

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine); "
          f"{rounds} interleaved rounds, median [min..max]")
    both = {"1 thread": (1, 1), "2 threads": (2, 2)}
    if args.bow:
        bow_rows(args.quick, rounds, both, args.stages)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        return 0
    rng = np.random.default_rng(0)
    model = build_vgg(rng)
    X = rng.random((16 if args.quick else 32, 3, 64, 64)).astype(np.float32)
    lrp = nets.LRP(model, "epsilon_plus_flat")
    lrp.relevance(X[:2])  # numba warm-up
    model(X)
    grid = {f"({a},{b})": (a, b) for a in (1, 2) for b in (1, 2)}
    report("VGG forward by (numba, BLAS)", interleaved(grid, lambda: model(X), rounds), "(1,1)", "(2,2)")
    # the batch in two halves on two threads, serial kernels and one BLAS thread each (split_batch;
    # with one thread it is the plain call)
    report("VGG forward, split", interleaved(both, lambda: split_batch(model, X), rounds))
    report("VGG LRP, split", interleaved(both, lambda: split_batch(lrp.relevance, X), rounds))
    if not args.quick:  # one pool of each: slow and erratic when the machine is busy
        report("VGG forward", interleaved(both, lambda: model(X), rounds))
        report("VGG LRP", interleaved(both, lambda: lrp.relevance(X), rounds))

    bow_rows(args.quick, rounds, both, args.stages)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    _blas.native_blas()
    sys.exit(main())
