"""Benchmark: training a small CNN with ``nets.train`` on the synthetic polygon/circle scenes.

    .venv/bin/python benchmarks/bench_train.py            # 400 and 800 training scenes, 30 epochs
    .venv/bin/python benchmarks/bench_train.py --quick    # 400 training scenes, 10 epochs

What is measured, in one run:

* data: ``bowlrp.app.scenes.make_scenes(n_train + 100, size=64, n_vertices=(3, 4),
  distractors=True, random_state=0)`` (the demo's task); the last 100 scenes are held out;
* ours: ``nets.train.ConvNetClassifier("small_cnn", augment="flips", random_state=0)``, with and
  without the flip augmentation: held-out accuracy and fit time (numba warm-up excluded);
* the baseline a user would pick for "a network on these images" without a CNN trainer, the one the
  demo used: scikit-learn's ``MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-2)`` on the pixels;
* the thread setting: seconds per training step (batch 32) with ``n_threads=1`` (the default)
  and with numba/BLAS on all cores, alternating, fastest of the rounds.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

sys.path.insert(0, ".")  # `datasets` lives at the repository root

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)

from bowlrp.app.scenes import make_scenes  # noqa: E402
from nets.train import ConvNetClassifier, _limit_threads, build_model, loss_and_grads  # noqa: E402


def fit_and_score(clf, X, y, n_train):
    t = time.perf_counter()
    clf.fit(X[:n_train], y[:n_train])
    return clf.score(X[n_train:], y[n_train:]), time.perf_counter() - t


def step_seconds(rounds):
    """Fastest training step (forward + backward, batch 32, float32) with 1 thread and all threads."""
    rng = np.random.default_rng(0)
    X = rng.random((32, 1, 64, 64)).astype(np.float32)
    y = rng.integers(0, 2, 32)
    model = build_model("small_cnn", (1, 64, 64), 2, random_state=0, dtype=np.float32)
    loss_and_grads(model, X, y)  # warm-up (compilation)
    best = {1: np.inf, None: np.inf}
    for _ in range(rounds):
        for n_threads in (1, None):
            with _limit_threads(n_threads):
                t = time.perf_counter()
                loss_and_grads(model, X, y)
                best[n_threads] = min(best[n_threads], time.perf_counter() - t)
    return best[1], best[None]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 scenes, 10 epochs")
    args = parser.parse_args(argv)
    sizes = [400] if args.quick else [400, 800]
    epochs = 10 if args.quick else 30

    from sklearn.neural_network import MLPClassifier

    # warm-up: compile the numba kernels outside the timed fits
    warm = make_scenes(40, size=64, random_state=1)
    ConvNetClassifier(epochs=1, random_state=0).fit(warm.images, warm.labels)

    one, many = step_seconds(3 if args.quick else 7)
    print(f"training step (batch 32): 1 thread {one * 1e3:.0f} ms, all threads {many * 1e3:.0f} ms "
          f"-> 1 thread x{many / one:.1f} faster")

    print(f"{'n_train':>7}  {'model':<44} {'held-out acc':>12} {'fit s':>7}")
    for n_train in sizes:
        scenes = make_scenes(n_train + 100, size=64, n_vertices=(3, 4), distractors=True, random_state=0)
        X, y = scenes.images, scenes.labels
        rows = []
        for aug in ("flips", None):
            clf = ConvNetClassifier("small_cnn", epochs=epochs, augment=aug, random_state=0)
            rows.append((f"ConvNetClassifier small_cnn, augment={aug}", *fit_and_score(clf, X, y, n_train)))
        mlp = MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-2, max_iter=200, random_state=0)
        t = time.perf_counter()
        mlp.fit(X[:n_train].reshape(n_train, -1), y[:n_train])
        acc = mlp.score(X[n_train:].reshape(100, -1), y[n_train:])
        rows.append(("sklearn MLPClassifier(128,) on pixels", acc, time.perf_counter() - t))
        for name, acc, sec in rows:
            print(f"{n_train:>7}  {name:<44} {acc:>12.2f} {sec:>7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    _blas.native_blas()
    sys.exit(main())
