"""Benchmark: what a second thread buys, within one process (issue 15, "both cores").

    .venv/bin/python benchmarks/bench_threads.py            # 7 rounds
    .venv/bin/python benchmarks/bench_threads.py --quick    # 3 rounds, smaller batches
    .venv/bin/python benchmarks/bench_threads.py --bow      # the BoW rows only (with or without --quick)
    .venv/bin/python benchmarks/bench_threads.py --bow --stages   # ... and each BoW explain stage by stage

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

Target: two threads at least 1.6x faster than one for each workload.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)
import numpy as np

from bowlrp.jit import limited_threads, split_batch


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
    times = {key: [] for key in settings}
    for _ in range(rounds):
        for key, (numba_threads, blas_threads) in settings.items():
            with limited_threads(numba_threads), limited_threads(blas_threads, numba_threads=False,
                                                                 user_api="blas"):
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
    return times


def report(name, times, one="1 thread", two="2 threads"):
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    parts = [f"{k}: {med[k]:7.1f} ms [{1e3 * min(v):.1f}..{1e3 * max(v):.1f}]" for k, v in times.items()]
    ratio = f"   speed-up {med[one] / med[two]:.2f}x" if one in med and two in med else ""
    print(f"{name:<22}" + "   ".join(parts) + ratio, flush=True)


def bow_rows(quick, rounds, both, stages=False):
    """The BoW rows: ``transform`` and ``explain`` of a batch of generated scenes."""
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
    for label, params in variants:
        with limited_threads(1):
            clf = BoWClassifier(vocabulary_size=64, random_state=0, **params).fit(list(train.images),
                                                                                  train.labels)
        clf.explain(images[:2])  # warm-up
        if not label:
            report("BoW transform", interleaved(both, lambda clf=clf: clf.transform(images), rounds))
        report("BoW explain" + label, interleaved(both, lambda clf=clf: clf.explain(images), rounds))
        if stages:
            bow_stages(clf, images, rounds, both)


def bow_stages(clf, images, rounds, both):
    """Where a BoW ``explain`` spends its time, stage by stage, on one thread and on two: the forward
    pass (features, encoding, decision values) and the decomposition alone (``explain`` with the
    forward pass served from a cache: root search, Steps 2 and 1, the heatmaps)."""
    import copy

    features = clf.extract_features(images)
    encodings = clf.encode_features(features)
    X = np.stack([e.x for e in encodings])
    cached = copy.copy(clf)
    cached.extract_features = lambda _: features
    cached.encode_features = lambda _: encodings
    for name, fn in (("  features", lambda: clf.extract_features(images)),
                     ("  encoding", lambda: clf.encode_features(features)),
                     ("  decision", lambda: clf.decision_from_bows(X)),
                     ("  decomposition", lambda: cached.explain(images))):
        report(name, interleaved(both, fn, rounds))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bow", action="store_true", help="the BoW rows only")
    parser.add_argument("--stages", action="store_true", help="each BoW explain also stage by stage")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 7
    import nets

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine); "
          f"{rounds} interleaved rounds, median [min..max]")
    both = {"1 thread": (1, 1), "2 threads": (2, 2)}
    if args.bow:
        bow_rows(args.quick, rounds, both, args.stages)
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
    return 0


if __name__ == "__main__":
    _blas.native_blas()
    sys.exit(main())
