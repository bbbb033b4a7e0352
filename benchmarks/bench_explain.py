"""Cost of explaining a BoW/SVM prediction against the cost of making it, from raw pixels.

    python benchmarks/bench_explain.py            # Taylor kernels over image sides x vocabularies
    python benchmarks/bench_explain.py --quick    # one small configuration per kernel (smoke run)
    python benchmarks/bench_explain.py --clock cpu   # one thread, CPU time: steadier on a loaded machine

The baseline a user compares with is the prediction itself: ``clf.decision_function(images)``
(dense SIFT, encoding, kernel expansion). ``clf.explain(images)`` runs the same forward path once and
then the three decomposition steps, so the ratio explain / decision_function is the price of the
explanation (target: at most 1.5x, also for the Taylor kernels ``exp_chi2`` and ``rbf``, whose root
search dominates their decomposition). Both run on the same images in this process, interleaved, median
of ``--repeats``, numba warm-up excluded; the decomposition is also timed alone (the forward pass served
from a cache), and ``1 + decomp / predict`` is the steadier estimate of the ratio on a loaded machine;
``step3 ms`` is the Taylor step alone (root search, f and gradient at the roots: ``explain_bow`` of one
output on the cached BoWs), the part of the decomposition that grows with words and support vectors. A
second table grows the training set at a fixed image size: the explanation must not get dearer with it (the
candidates' scores are kept from fitting).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)
from _timing import CLOCKS  # noqa: E402

from bowlrp.bow.classifier import BoWClassifier  # noqa: E402
from bowlrp.bow.decompose import explain_bow  # noqa: E402


def photos(n, size, rng):
    """Random crops of scikit-image photographs and textures (real images), labelled by source kind."""
    from skimage import data, transform

    smooth = [data.astronaut(), data.coffee(), data.chelsea()]
    textured = [data.brick(), data.grass(), data.gravel()]
    images, labels = [], []
    for k in range(n):
        label = k % 2
        src = (textured if label else smooth)[int(rng.integers(3))]
        if min(src.shape[:2]) <= size:  # the textures are 512 x 512: upscale a little for side 512
            src = transform.rescale(src, 1.5 * size / min(src.shape[:2]), preserve_range=True,
                                    channel_axis=-1 if src.ndim == 3 else None).astype(np.uint8)
        y0 = int(rng.integers(0, src.shape[0] - size))
        x0 = int(rng.integers(0, src.shape[1] - size))
        images.append(src[y0:y0 + size, x0:x0 + size])
        labels.append(label)
    return images, np.array(labels)


#: the clock of the timings: wall time, or (``--clock cpu``) the process's CPU time on one thread, which
#: other jobs on a shared machine do not inflate
clock = CLOCKS["wall"]


def interleaved(fns, repeats):
    """Median and spread (max - min) of each function's time, the functions alternating within every
    repeat (load on a shared machine drifts; alternating keeps the ratio fair)."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return [(float(np.median(t)), float(np.max(t) - np.min(t))) for t in times]


def measure(kernel, size, words, n_train, n_test, repeats, seed=0):
    rng = np.random.default_rng(seed)
    train_x, train_y = photos(n_train, size, rng)
    test_x, _ = photos(n_test, size, rng)
    clf = BoWClassifier(step=4, bin_sizes=(4,), vocabulary_size=words, kernel=kernel, gamma="auto",
                        C=10.0, random_state=0).fit(train_x, train_y)
    clf.explain(test_x[:1])  # warm-up: numba compilation of every kernel on this path
    clf.decision_function(test_x[:1])
    # the decomposition alone: explain with the forward pass (features, encodings) served from a
    # cache; 1 + decomp / predict is the steadier estimate of the ratio on a loaded machine
    cached = copy.copy(clf)
    feats = clf.extract_features(test_x)
    encs = clf.encode_features(feats)
    cached.extract_features = lambda images: feats
    cached.encode_features = lambda features: encs
    # Step 3 alone (root search, values and gradient at the roots) of the explained class's output
    X = np.stack([e.x for e in encs])
    expansion = clf.kernel_expansion(clf.classes_[1])
    scores = None if expansion.exact else clf.training_scores(1)

    def step3():
        return explain_bow(expansion, X, clf.train_bows_, candidate_scores=scores)

    (t_pred, s_pred), (t_expl, s_expl), (t_dec, _), (t_step3, _) = interleaved(
        [lambda: clf.decision_function(test_x), lambda: clf.explain(test_x), lambda: cached.explain(test_x),
         step3], repeats)
    maps = clf.explain(test_x)
    f_root = max(abs(h.extras["taylor"]["f_root"]) for h in maps) if "taylor" in maps[0].extras else 0.0
    return dict(kernel=kernel, size=size, words=words, n_train=n_train, n_sv=clf.support_vectors_.shape[0],
                t_pred=t_pred, s_pred=s_pred, t_expl=t_expl, s_expl=s_expl, ratio=t_expl / t_pred,
                steady=1.0 + t_dec / t_pred, t_step3=t_step3, f_root=f_root)


def show(r):
    print(f"{r['kernel']:<13}{r['size']:>5}{r['words']:>6}{r['n_train']:>7}{r['n_sv']:>6}"
          f"{1e3 * r['t_pred']:>11.2f}{1e3 * r['s_pred']:>8.2f}"
          f"{1e3 * r['t_expl']:>11.2f}{1e3 * r['s_expl']:>8.2f}"
          f"{r['ratio']:>8.2f}{r['steady']:>11.2f}{1e3 * r['t_step3']:>10.2f}{r['f_root']:>12.1e}",
          flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small configuration per kernel")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kernels", default="exp_chi2,rbf")
    parser.add_argument("--sides", default="64,128,256")
    parser.add_argument("--words", default="64,256,1024")
    parser.add_argument("--train-sizes", default="24,96,384", help="training-set sizes of the growth table")
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or CPU time with one thread (numba and BLAS)")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    if args.clock == "cpu":
        from bowlrp.jit import limited_threads

        with limited_threads(1):
            return _run(args)
    return _run(args)


def _run(args):
    kernels = args.kernels.split(",")
    sides = [64] if args.quick else [int(s) for s in args.sides.split(",")]
    words = [32] if args.quick else [int(w) for w in args.words.split(",")]
    header = (f"{'kernel':<13}{'side':>5}{'words':>6}{'train':>7}{'n_sv':>6}{'predict ms':>11}{'spread':>8}"
              f"{'explain ms':>11}{'spread':>8}{'ratio':>8}{'1+dec/pr':>11}{'step3 ms':>10}"
              f"{'max|f(x0)|':>12}")
    print(f"{args.n_test} test images (RGB photo crops), dense SIFT step 4 bin 4, rank mapping, gamma auto; "
          f"median of {args.repeats} interleaved repeats, {args.clock} clock; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(header)
    for kernel in kernels:
        for size in sides:
            for w in words:
                n_train = max(24, -(-2 * w // ((size // 4) ** 2)) * 2)  # enough descriptors for w words
                show(measure(kernel, size, w, n_train, args.n_test, args.repeats))
    if not args.quick:
        print("\ntraining-set size (side 64, 64 words)")
        print(header)
        for kernel in kernels:
            for n_train in (int(n) for n in args.train_sizes.split(",")):
                show(measure(kernel, 64, 64, n_train, args.n_test, args.repeats))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    _blas.native_blas()
    sys.exit(main())
