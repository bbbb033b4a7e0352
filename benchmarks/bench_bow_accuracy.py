"""BoWClassifier accuracy with our numba dense SIFT vs OpenCV's SIFT on the same frames.

The point: swapping OpenCV's SIFT for ours loses no accuracy. Two real tasks, held-out splits, the same
classifier settings for both backends, all in this one run:

* scikit-image ``lfw_subset``: 100 faces vs 100 non-faces (25 x 25), seeded random 50/50 splits;
* texture crops: brick / grass / gravel photos cut into 48 x 48 crops, train on crops from the top
  half of each photo and test on the bottom half (no overlap), the split shifted per repeat.

    .venv/bin/python benchmarks/bench_bow_accuracy.py           # 5 repeats
    .venv/bin/python benchmarks/bench_bow_accuracy.py --quick   # 2 repeats
"""

from __future__ import annotations

import argparse
import time

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)
import numpy as np
from skimage import data

from bowlrp import BoWClassifier


def lfw_split(seed):
    images = data.lfw_subset()
    y = np.array([1] * 100 + [0] * 100)
    perm = np.random.default_rng(seed).permutation(200)
    return list(images[perm[:100]]), y[perm[:100]], list(images[perm[100:]]), y[perm[100:]]


def texture_split(seed, side=48):
    offset = (seed * 11) % side  # a different crop grid per repeat
    train, y_train, test, y_test = [], [], [], []
    for label, photo in enumerate([data.brick(), data.grass(), data.gravel()]):
        h, w = photo.shape
        for r in range(offset, h // 2 - side + 1, side):
            for c in range(offset, w - side + 1, side * 2):
                train.append(photo[r:r + side, c:c + side])
                y_train.append(label)
                test.append(photo[h // 2 + r:h // 2 + r + side, c:c + side])
                y_test.append(label)
    return train, np.array(y_train), test, np.array(y_test)


TASKS = {
    "lfw faces vs non-faces": (lfw_split, dict(step=2, bin_sizes=(3,), vocabulary_size=64,
                                               kernel="intersection", C=10.0)),
    "brick/grass/gravel crops": (texture_split, dict(step=6, bin_sizes=(4,), vocabulary_size=64,
                                                    kernel="exp_chi2", gamma="auto", C=10.0)),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats instead of 5")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else 5
    BoWClassifier(step=8, vocabulary_size=2, random_state=0).fit(  # numba warm-up
        [data.brick()[:40, :40], data.grass()[:40, :40]], [0, 1])
    for task, (split, params) in TASKS.items():
        print(f"\n{task}: {repeats} held-out splits, {params}")
        for backend in ("numba", "opencv"):
            scores, seconds = [], 0.0
            for seed in range(repeats):
                X, y, Xt, yt = split(seed)
                t = time.perf_counter()
                clf = BoWClassifier(**params, backend=backend, random_state=seed).fit(X, y)
                scores.append(clf.score(Xt, yt))
                seconds += time.perf_counter() - t
            print(f"  backend={backend:7s} accuracy {np.mean(scores):.3f} +- {np.std(scores):.3f} "
                  f"(splits: {', '.join(f'{s:.2f}' for s in scores)}; train {len(X)}, test {len(Xt)}; "
                  f"{seconds:.1f} s)", flush=True)


if __name__ == "__main__":
    _blas.native_blas()
    main()
