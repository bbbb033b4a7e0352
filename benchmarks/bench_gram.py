"""Gram matrices: our numba kernels vs what a user would otherwise call.

* exp-chi2: ``bowlrp.bow.kernels.gram("exp_chi2", ...)`` vs scikit-learn's ``chi2_kernel`` (Cython);
* histogram intersection: ours vs numpy (broadcast ``np.minimum(...).sum(-1)``, chunked over rows so
  that the temporary stays ~64 MB; scikit-learn has no intersection kernel);
* additive chi2: ours vs scikit-learn's ``additive_chi2_kernel`` (same Cython loop, no exponential).

Two kinds of BoW matrices, both L1-normalised rows:

* ``real``: BoWs of real images - dense SIFT of crops from scikit-image photos, a k-means vocabulary
  of V words, rank mapping (base 2, n 4), mean pooling: what ``BoWClassifier`` feeds the SVM;
* ``dense``: every entry > 0 (e.g. soft mapping), the worst case for our zero-skipping kernels.

Two shapes: the training Gram matrix K(X, X) (symmetric, n x n) and kernel rows of new images
K(X_test, X_train) (n x n). Each timing is the best of ``--rounds`` runs, numba warm-up excluded,
all measured in this one run.

    .venv/bin/python benchmarks/bench_gram.py            # n = 1000, V = 512 and 1024
    .venv/bin/python benchmarks/bench_gram.py --quick    # n = 300, V = 256
"""

from __future__ import annotations

import argparse
import time

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)
import numpy as np
from sklearn.metrics.pairwise import additive_chi2_kernel, chi2_kernel

from bowlrp.bow.kernels import gram


def numpy_intersection(X, Y, budget_bytes=64 * 2**20):
    """Histogram intersection with numpy broadcasting, chunked over the rows of X."""
    out = np.empty((X.shape[0], Y.shape[0]))
    rows = max(1, int(budget_bytes // (8 * Y.shape[0] * Y.shape[1])))
    for r in range(0, X.shape[0], rows):
        out[r:r + rows] = np.minimum(X[r:r + rows, None, :], Y[None, :, :]).sum(-1)
    return out


def best_of(fn, rounds):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def real_bows(n, V, seed=0):
    """BoWs of 2n real image crops (first n: 'train', last n: 'test'), vocabulary of V words."""
    from skimage import data

    from bowlrp.bow.encoding import encode
    from bowlrp.bow.features import DenseSIFT
    from bowlrp.bow.vocabulary import fit_vocabularies

    photos = [data.camera(), data.brick(), data.grass(), data.gravel(), data.coins(), data.moon(),
              data.text(), data.page(), data.astronaut().mean(2).astype(np.uint8)]
    rng = np.random.default_rng(seed)
    crops = []
    for k in range(2 * n):
        photo = photos[k % len(photos)]
        side = int(rng.integers(48, 80))
        r = int(rng.integers(0, photo.shape[0] - side))
        c = int(rng.integers(0, photo.shape[1] - side))
        crops.append(photo[r:r + side, c:c + side])
    sift = DenseSIFT(step=4, bin_sizes=(4,))
    features = sift.extract_many(crops)
    vocab = fit_vocabularies(features, 1, V, max_descriptors=50_000, random_state=seed)
    B = np.stack([encode(f, vocab, "rank", 2.0, 4, p=1.0, normalize=True).x for f in features])
    return B[:n], B[n:]


def dense_bows(n, V, seed=0):
    rng = np.random.default_rng(seed)
    B = rng.gamma(0.5, size=(2 * n, V)) + 1e-6
    B /= B.sum(1, keepdims=True)
    return B[:n], B[n:]


def compare(label, ours, theirs, rounds):
    """Time ours with all numba threads and with one thread (robust to a busy shared machine)."""
    import numba

    threads = numba.get_num_threads()
    t_ours, K_ours = best_of(ours, rounds)
    numba.set_num_threads(1)
    try:
        t_one, _ = best_of(ours, rounds)
    finally:
        numba.set_num_threads(threads)
    t_theirs, K_theirs = best_of(theirs, rounds)
    err = float(np.max(np.abs(K_ours - K_theirs)))
    print(f"  {label:46s} ours {t_ours * 1e3:7.1f} ms ({threads} thr), {t_one * 1e3:7.1f} ms (1 thr)"
          f"   baseline {t_theirs * 1e3:7.1f} ms   ratio {t_theirs / t_ours:5.1f}x / "
          f"{t_theirs / t_one:5.1f}x (1 thr)   max|diff| {err:.1e}", flush=True)
    return t_theirs / t_ours, t_theirs / t_one


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    n, dims, rounds = (300, (256,), 2) if args.quick else (1000, (512, 1024), 3)
    rounds = args.rounds or rounds

    warm = np.random.default_rng(0).random((8, 16))
    for kernel in ("exp_chi2", "intersection", "chi2"):  # numba compilation is not what we measure
        gram(kernel, warm)
        gram(kernel, warm, warm[:3])

    ratios = {}
    for V in dims:
        for kind, make in (("real", real_bows), ("dense", dense_bows)):
            X, Y = make(n, V)
            density = float(np.mean(np.concatenate([X, Y]) > 0))
            print(f"\n{kind} BoWs, n = {n}, V = {V}, non-zero fraction {density:.2f}")
            for shape, A, B in (("K(X, X)", X, None), ("K(X_test, X)", Y, X)):
                for kernel, ours, theirs, name in _cases(A, B):
                    r = compare(f"{kernel} {shape} vs {name}", ours, theirs, rounds)
                    ratios[(kernel, kind, V, shape)] = r
    print("\nsummary: baseline time / our time (all threads, one thread); the target is >= 5x")
    for (kernel, kind, V, shape), (r, r1) in ratios.items():
        print(f"  {kernel:12s} {kind:5s} V={V:<5d} {shape:13s} {r:6.1f}x  {r1:6.1f}x")


def _cases(A, B):
    """(kernel, our call, baseline call, baseline name) for rows A against columns B (None: A)."""
    C = A if B is None else B
    return [
        ("exp_chi2", lambda: gram("exp_chi2", A, B, gamma=0.5), lambda: chi2_kernel(A, C, gamma=0.5),
         "sklearn chi2_kernel"),
        ("intersection", lambda: gram("intersection", A, B), lambda: numpy_intersection(A, C),
         "numpy min-sum"),
        ("chi2", lambda: gram("chi2", A, B), lambda: _sklearn_additive_as_ours(A, C),
         "sklearn additive_chi2_kernel"),
    ]


def _sklearn_additive_as_ours(X, Y=None):
    """sklearn's additive_chi2_kernel is -sum (x-y)^2/(x+y); ours is sum 2xy/(x+y) = (|x|+|y| + that)/2."""
    Y = X if Y is None else Y
    K = additive_chi2_kernel(X, Y)
    return (X.sum(1)[:, None] + Y.sum(1)[None, :] + K) / 2.0


if __name__ == "__main__":
    _blas.native_blas()
    main()
