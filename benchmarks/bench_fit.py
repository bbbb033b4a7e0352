"""Benchmark: ``BoWClassifier.fit`` against the composition a practitioner writes by hand.

    .venv/bin/python benchmarks/bench_fit.py            # 160 scenes of 96 x 96, 5 rounds
    .venv/bin/python benchmarks/bench_fit.py --quick    # 80 scenes, 3 rounds

Hand-made: OpenCV's SIFT on the same dense grid (step 4, 16-pixel supports, angle 0) ->
scikit-learn ``MiniBatchKMeans`` (its defaults, ``random_state=0``) -> hard-assignment histograms ->
``SVC(kernel="precomputed")`` on the histogram-intersection Gram matrix. Ours:
``BoWClassifier(vocabulary_size=V, random_state=0)`` (our SIFT, rank mapping, intersection kernel).
Both with the same vocabulary size and C = 3, on the demo's generated scenes (``bowlrp.app.scenes``:
polygons vs circles, with distractors), fitted on one half and scored on the other. Each fit is
timed per stage (ours: inside ``fit`` itself, by wrapping the functions it calls); rounds alternate;
medians and spreads (min..max) are printed. Rows starting with a space are parts of our vocabulary
step (scikit-learn's k-means++ and mini-batch step helpers, wrapped for timing); "other" is the rest of
our ``fit`` (checks, gamma, the training decision values).
Threads: each library's defaults (the machine has 2 cores shared with other jobs), and the hand-made
composition once more on one thread (scikit-learn's OpenMP threads suffer most from a loaded machine;
our vocabulary step runs on one thread at these sizes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import defaultdict

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)
import numpy as np

from bowlrp.app.scenes import make_scenes
from bowlrp.bow import classifier as classifier_module


@contextlib.contextmanager
def stage_timer(times):
    """Time the stages of ``BoWClassifier.fit`` by wrapping the functions it calls."""
    from sklearn.cluster import _kmeans

    from bowlrp.bow import vocabulary

    patched = {
        "features": (classifier_module.DenseSIFT, "extract_many"),
        "vocabulary": (classifier_module, "fit_vocabularies"),
        # inside the vocabulary step: scikit-learn's private helpers, wrapped for timing only
        " distinct check": (vocabulary, "_distinct_rows_at_least"),
        " k-means++ inits": (_kmeans, "_kmeans_plusplus"),
        " mini-batch steps": (_kmeans, "_mini_batch_step"),
        "encoding": (classifier_module, "encode_many"),
        "svm": (classifier_module.OneVsRestKernelSVC, "fit"),
    }
    originals = {name: getattr(owner, attr) for name, (owner, attr) in patched.items()}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[name] += time.perf_counter() - t0

        return wrapper

    for name, (owner, attr) in patched.items():
        setattr(owner, attr, timed(name, originals[name]))
    try:
        yield
    finally:
        for name, (owner, attr) in patched.items():
            setattr(owner, attr, originals[name])


def fit_ours(images, y, words):
    times = defaultdict(float)
    t0 = time.perf_counter()
    with stage_timer(times):
        clf = classifier_module.BoWClassifier(vocabulary_size=words, C=3.0, random_state=0).fit(images, y)
    times["total"] = time.perf_counter() - t0
    times["other"] = times["total"] - sum(times[k] for k in ("features", "vocabulary", "encoding", "svm"))
    return clf.predict, times


def intersection(A, B):
    return np.minimum(A[:, None, :], B[None, :, :]).sum(axis=2)


def fit_hand_made(images, y, words):
    import cv2
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.svm import SVC

    sift = cv2.SIFT_create()

    def describe(image):
        u8 = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
        h, w = u8.shape
        starts_y = np.arange(((h - 16) % 4) // 2, h - 16 + 1, 4)
        starts_x = np.arange(((w - 16) % 4) // 2, w - 16 + 1, 4)
        kps = [cv2.KeyPoint(float(x + 7.5), float(y + 7.5), 16 / 6, 0) for y in starts_y for x in starts_x]
        return sift.compute(u8, kps)[1].astype(np.float64)

    times = {}
    t0 = time.perf_counter()
    descs = [describe(im) for im in images]
    times["features"] = time.perf_counter() - t0
    t = time.perf_counter()
    km = MiniBatchKMeans(n_clusters=words, random_state=0).fit(np.vstack(descs))
    times["vocabulary"] = time.perf_counter() - t
    t = time.perf_counter()

    def histograms(ds):
        return np.stack([np.bincount(km.predict(d), minlength=words) / len(d) for d in ds])

    H = histograms(descs)
    times["encoding"] = time.perf_counter() - t
    t = time.perf_counter()
    svc = SVC(kernel="precomputed", C=3.0).fit(intersection(H, H), y)
    times["svm"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    times["other"] = 0.0

    def predict(test_images):
        return svc.predict(intersection(histograms([describe(im) for im in test_images]), H))

    return predict, times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--words", type=int, default=128)
    args = parser.parse_args(argv)
    n, rounds = (80, 3) if args.quick else (160, 5)
    # the demo's task: triangles and squares vs circles, circles also in the positive scenes
    scenes = make_scenes(2 * n, size=96, n_vertices=(3, 4), distractors=True, random_state=0)
    gray = list(scenes.images)  # gray, float in [0, 1]
    train, test = gray[:n], gray[n:]
    y_train, y_test = scenes.labels[:n], scenes.labels[n:]
    fit_ours(train[:8], y_train[:8], 8)  # numba warm-up
    print(f"fit on {n} gray scenes 96 x 96, {args.words} words; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores (shared machine); {rounds} interleaved rounds, median [min..max]")
    from bowlrp.jit import limited_threads

    def fit_hand_made_1(images, y, words):
        with limited_threads(1):  # scikit-learn's OpenMP and BLAS threads: the load-independent comparison
            return fit_hand_made(images, y, words)

    contestants = (("ours", fit_ours), ("hand-made", fit_hand_made), ("hand-made 1 thread", fit_hand_made_1))
    runs = {name: [] for name, _ in contestants}
    accuracy = {}
    for _ in range(rounds):
        for name, fit in contestants:
            predict, times = fit(train, y_train, args.words)
            runs[name].append(times)
            accuracy[name] = float(np.mean(predict(test) == y_test))
    stages = ("features", "vocabulary", " distinct check", " k-means++ inits", " mini-batch steps",
              "encoding", "svm", "other", "total")
    print(f"{'stage (s)':<18}" + "".join(f"{name:>28}" for name in runs))
    for stage in stages:
        cells = []
        for name in runs:
            if stage not in runs[name][0]:
                cells.append("-")
                continue
            v = np.array([r[stage] for r in runs[name]])
            cells.append(f"{np.median(v):9.3f} [{v.min():.3f}..{v.max():.3f}]")
        print(f"{stage:<18}" + "".join(f"{c:>28}" for c in cells))
    med = {name: float(np.median([r["total"] for r in runs[name]])) for name in runs}
    print(f"fit time ours / hand-made: {med['ours'] / med['hand-made']:.2f}; "
          f"ours / hand-made on one thread: {med['ours'] / med['hand-made 1 thread']:.2f}")
    print("held-out accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
    return 0


if __name__ == "__main__":
    _blas.native_blas()
    sys.exit(main())
