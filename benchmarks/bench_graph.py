"""Benchmark: LRP on a ResNet-style graph, against our forward pass and against zennit.

    .venv/bin/python benchmarks/bench_graph.py            # batch 32, 5 rounds
    .venv/bin/python benchmarks/bench_graph.py --quick    # batch 8, 3 rounds
    .venv/bin/python benchmarks/bench_graph.py --clock cpu  # one thread, CPU time (a loaded machine)

What is measured, in one run (ratios, not seconds, are meaningful on a shared machine):

* float32, inputs uniform in [0, 1) of shape (3, 32, 32); a ResNet-style ``nets.Graph`` with
  He-initialised weights: stem conv 3x3x16 + batch norm + ReLU, then three stages of two basic
  blocks (conv-bn-relu-conv-bn + identity or 1x1-conv-bn shortcut, residual ``Add``, ReLU) with 16,
  32 and 64 channels (stride 2 between stages), global average pooling, dense 10: 15 convolutions;
* ``forward``: ``model(X)``; ``LRP``: ``nets.LRP(model, preset).relevance(X)`` for the predicted
  class, its forward pass included (batch norm folded once, when the explainer is built). Target:
  LRP / forward <= 3;
* with torch and zennit (the ``dev`` extra): the same folded weights as a ``torch.nn.Module`` whose
  residual adds are zennit's ``Sum``, its forward pass, zennit's ``Gradient`` attributor with the
  same composite, and the agreement of the two relevance maps in float64.

Rounds alternate between the contestants; the fastest round of each counts; numba warm-up excluded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import nets
from nets import Node

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)
import bench_lrp  # noqa: E402
from bench_lrp import best_times, he  # noqa: E402


def _bn(rng, c):
    return nets.BatchNorm2D(
        rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)
    )


def build_resnet(rng, widths=(16, 32, 64), blocks=2, n_classes=10):
    """A ResNet-style graph (basic blocks) for (3, 32, 32) inputs."""
    nodes = []

    def conv_bn(name, src, c_in, c_out, k, stride, relu):
        nodes.append(
            Node(
                name,
                nets.Conv2D(he(rng, (c_out, c_in, k, k), c_in * k * k), stride=stride, padding=k // 2),
                [src],
            )
        )
        nodes.append(Node(name + "_bn", _bn(rng, c_out), [name]))
        if relu:
            nodes.append(Node(name + "_relu", nets.ReLU(), [name + "_bn"]))
            return name + "_relu"
        return name + "_bn"

    x = conv_bn("stem", "input", 3, widths[0], 3, 1, True)
    c = widths[0]
    for s, width in enumerate(widths):
        for b in range(blocks):
            stride = 2 if s > 0 and b == 0 else 1
            p = f"s{s}b{b}"
            h = conv_bn(p + "_conv1", x, c, width, 3, stride, True)
            h = conv_bn(p + "_conv2", h, width, width, 3, 1, False)
            short = x if stride == 1 and c == width else conv_bn(p + "_short", x, c, width, 1, stride, False)
            nodes.append(Node(p + "_add", nets.Add(), [h, short]))
            nodes.append(Node(p + "_relu", nets.ReLU(), [p + "_add"]))
            x, c = p + "_relu", width
    nodes.append(Node("pool", nets.GlobalAvgPool2D(), [x]))
    nodes.append(Node("fc", nets.Dense(he(rng, (n_classes, c), c), rng.normal(0, 0.01, n_classes)), ["pool"]))
    return nets.Graph(nodes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, 3 rounds")
    parser.add_argument("--preset", default="epsilon_plus_flat")
    parser.add_argument(
        "--clock",
        choices=sorted(bench_lrp.CLOCKS),
        default="wall",
        help="wall time with every library's default threads, or 'cpu': the process's CPU time with "
        "one thread for numba, BLAS and PyTorch (the work done, robust to a loaded machine)",
    )
    args = parser.parse_args(argv)
    bench_lrp.clock = bench_lrp.CLOCKS[args.clock]
    if args.clock == "cpu":
        import numba
        from threadpoolctl import threadpool_limits

        numba.set_num_threads(1)
        threadpool_limits(1)
    batch, rounds = (8, 3) if args.quick else (32, 5)
    rng = np.random.default_rng(0)
    model64 = build_resnet(rng)
    model = model64.astype(np.float32)
    X = rng.uniform(size=(batch, 3, 32, 32)).astype(np.float32)
    kw = {"low": 0.0, "high": 1.0} if args.preset == "epsilon_gamma_box" else {}
    lrp = nets.LRP(model, args.preset, **kw)
    lrp.relevance(X[:2])  # numba warm-up
    fns = [lambda: model(X), lambda: lrp.relevance(X)]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from tests.nets.torch_helpers import import_zennit, to_torch, zennit_relevance

        torch, zennit = import_zennit()
    except ImportError:
        torch = None
    n_conv = sum(isinstance(layer, nets.Conv2D) for layer in model.layers)
    print(
        f"graph LRP benchmark: ResNet-style, {len(model)} nodes ({n_conv} convolutions), float32, "
        f"batch {batch}, preset {args.preset}, best of {rounds} rounds; clock {args.clock}, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    if torch is not None:
        folded = lrp.explained_model
        tmodel = to_torch(folded, torch, zennit, np.float32)
        xt = torch.from_numpy(X)
        target = model(X).argmax(axis=1)

        def torch_forward():
            with torch.no_grad():
                tmodel(xt)

        if args.clock == "cpu":
            torch.set_num_threads(1)
        fns += [torch_forward, lambda: zennit_relevance(torch, zennit, tmodel, X, target, args.preset, **kw)]
        print(f"PyTorch {torch.__version__} with {torch.get_num_threads()} threads, zennit")
    times = best_times(fns, rounds)
    print(
        f"forward {times[0] * 1e3:.1f} ms, LRP {times[1] * 1e3:.1f} ms: "
        f"LRP / forward = {times[1] / times[0]:.2f}"
    )
    if torch is None:
        print("torch/zennit not importable: comparison skipped")
        return 0
    print(
        f"torch forward {times[2] * 1e3:.1f} ms, zennit {times[3] * 1e3:.1f} ms: zennit / torch forward = "
        f"{times[3] / times[2]:.2f}; ours / zennit = {times[1] / times[3]:.2f}; "
        f"our forward / torch forward = {times[0] / times[2]:.2f}"
    )
    X64 = X.astype(np.float64)
    target = model64(X64).argmax(axis=1)
    lrp64 = nets.LRP(model64, args.preset, **kw)
    ours = lrp64.relevance(X64, target)
    theirs = zennit_relevance(
        torch, zennit, to_torch(lrp64.explained_model, torch, zennit), X64, target, args.preset, **kw
    )
    print(
        f"agreement in float64: max |R| {np.abs(theirs).max():.3g}, max abs difference "
        f"{np.abs(ours - theirs).max():.3g}"
    )
    return 0


if __name__ == "__main__":
    _blas.native_blas()
    sys.exit(main())
