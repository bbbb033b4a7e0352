"""Benchmark: the BoW ``transform`` of a batch of small crops, with our dense SIFT and with OpenCV's.

    .venv/bin/python benchmarks/bench_encoding.py            # 200 crops of 64 x 64, 7 rounds
    .venv/bin/python benchmarks/bench_encoding.py --quick    # 60 crops, 3 rounds
    .venv/bin/python benchmarks/bench_encoding.py --clock cpu  # timed in CPU time

What is measured, in one process (ratios, not seconds, are meaningful on a shared machine):

* two ``BoWClassifier`` (step 4, bin 4, rank mapping, mean pooling) fitted on the same 64 x 64 gray
  crops of scikit-image / scikit-learn sample photos, one with ``backend="numba"``, one with
  ``backend="opencv"``; the same vocabulary sizes (64 and 256 words);
* per batch: the extraction alone (``clf.extract_features``), the encoding alone
  (``clf.encode_features`` of the extracted features: distances, top-n selection, pooling), the
  float64 BLAS products inside it alone (one per image into one buffer, as the encoding makes them:
  the floor of the encoding as long as the distances stay bit-identical; with their GFLOP/s), the
  squared norms alone (one ``einsum`` per image), the word selection alone (its numba kernel on those
  products: distances, the 4 nearest words, CSR order), the same kernel built with the seeded
  single-pass selection (``_select_seeded``, main's before the bounded one; the one used on CPUs
  without AVX-512) and the encoding with it, float32 products (descriptors converted per image: the
  first cost of a float32 filter in front of exact distances) and the whole ``transform``; one thread;
* rounds alternate between the contestants; medians over rounds and the spread (min..max) are printed.
  Everything runs in the calling thread (OpenCV's pool set to one thread), so ``--clock cpu`` can
  time it with the process's CPU clock, which leaves out the time other processes hold the core.

Target (issue 15): the encoding costs no more than our extraction, and ``transform`` with our SIFT is
at least 5x faster than with OpenCV's.

The exact-pruning experiment of the fourth round (float32 products as a filter, exact float64
products for the shortlisted words only: the same words, not faster) is kept in the history, not in
the tree: ``git show 39b2f64:benchmarks/_pruning.py`` (benchmarks/README.md, "exact pruning").
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import types

import cv2
import numba
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)
from _timing import CLOCKS  # noqa: E402
from bench_sift import make_images  # noqa: E402

from bowlrp.bow import _encoding_kernels  # noqa: E402
from bowlrp.bow._encoding_kernels import rank_from_products  # noqa: E402
from bowlrp.bow.classifier import BoWClassifier  # noqa: E402
from bowlrp.jit import limited_threads  # noqa: E402

# the clock of every timing: wall clock, or with --clock cpu the process's CPU time (everything
# measured runs in the calling thread: numba's serial kernels, one BLAS thread, one OpenCV thread)
CLOCK = CLOCKS["wall"]


def interleaved(fns, rounds):
    """Each callable's times over ``rounds`` alternating rounds (seconds)."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = CLOCK()
            fn()
            times[name].append(CLOCK() - t0)
    return times


def summary(ts):
    ts = np.asarray(ts) * 1e3
    return f"{np.median(ts):8.1f} ms [{ts.min():.1f}..{ts.max():.1f}]"


def measure(images, y, words, rounds):
    """Times of extraction, encoding and transform with each backend, one thread, and the floating-point
    operations of the products."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # OpenCV's own thread pool (pthreads) is not limited by limited_threads
    try:
        return _measure(images, y, words, rounds)
    finally:
        cv2.setNumThreads(threads)


def _measure(images, y, words, rounds):
    with limited_threads(1):
        clfs = {b: BoWClassifier(vocabulary_size=words, backend=b, random_state=0).fit(images, y)
                for b in ("numba", "opencv")}
        feats = clfs["numba"].extract_features(images)
        descriptors = [f.descriptors for f in feats]
        prototypes = clfs["numba"].vocabularies_[0].cluster_centers_
        seeded = seeded_kernel()
        fns = {
            "ours: extract": lambda: clfs["numba"].extract_features(images),
            "ours: encode": lambda: clfs["numba"].encode_features(feats),
            "seeded: encode": with_kernel(seeded, lambda: clfs["numba"].encode_features(feats)),
            "ours: products": products(descriptors, prototypes),
            "ours: norms": norms(descriptors),
            "ours: selection": selection(descriptors, prototypes),
            "seeded: selection": selection(descriptors, prototypes, kernel=seeded),
            "float32 products": products(descriptors, prototypes, np.float32),
            "ours: transform": lambda: clfs["numba"].transform(images),
            "opencv: extract": lambda: clfs["opencv"].extract_features(images),
            "opencv: transform": lambda: clfs["opencv"].transform(images),
        }
        for name in ("seeded: selection", "seeded: encode"):
            fns[name]()  # its numba compilation (not cached: built here) outside the rounds
        flops = 2.0 * sum(d.shape[0] for d in descriptors) * prototypes.size  # of the products
        return interleaved(fns, rounds), flops


def products(descriptors, prototypes, dtype=np.float64):
    """The BLAS products alone, as the encoding makes them: one call per image, written into one
    reused buffer (fresh arrays per image would add allocation and page faults to the floor).

    With ``dtype=np.float32`` the descriptors are converted per image (the extraction gives float64)
    and the product is single precision: what a float32 filter in front of exact float64 distances
    would pay before any exact distance (see benchmarks/README.md, "exact pruning")."""
    bounds = np.cumsum([0] + [d.shape[0] for d in descriptors]).tolist()
    out = np.empty((bounds[-1], prototypes.shape[0]), dtype)
    prototypes = prototypes.astype(dtype)  # once per vocabulary

    def run():
        for g, d in enumerate(descriptors):
            np.matmul(d.astype(dtype, copy=False), prototypes.T, out=out[bounds[g] : bounds[g + 1]])

    return run


def norms(descriptors):
    """The descriptors' squared norms alone, one ``einsum`` per image as the encoding computes them."""
    bounds = np.cumsum([0] + [d.shape[0] for d in descriptors]).tolist()
    out = np.empty(bounds[-1])

    def run():
        for g, d in enumerate(descriptors):
            np.einsum("md,md->m", d, d, out=out[bounds[g] : bounds[g + 1]])

    return run


@functools.cache
def seeded_kernel():
    """``rank_from_products`` built with the seeded single-pass selection (``_select_seeded``) instead of
    ``select_row``: the selection before the bounded one (and the one of CPUs without AVX-512), for a
    before/after in one process."""
    fn = rank_from_products.py_func
    scope = dict(fn.__globals__, select_row=_encoding_kernels._select_seeded)
    return numba.njit(nogil=True)(types.FunctionType(fn.__code__, scope, fn.__name__))


def with_kernel(kernel, run):
    """``run`` with the encoding's ``rank_from_products`` replaced by ``kernel`` for the call."""

    def swapped():
        original = _encoding_kernels.rank_from_products
        _encoding_kernels.rank_from_products = kernel
        try:
            run()
        finally:
            _encoding_kernels.rank_from_products = original

    return swapped


def selection(descriptors, prototypes, rank_n=4, kernel=rank_from_products):
    """The word selection of the encoding alone (its numba kernel on precomputed products)."""
    rows = np.concatenate(descriptors)
    products = np.concatenate([d @ prototypes.T for d in descriptors])
    sq_norms = np.einsum("md,md->m", rows, rows)
    proto_sq = np.einsum("vd,vd->v", prototypes, prototypes)
    values = 2.0 ** -np.arange(1, rank_n + 1)
    indices = np.empty(rows.shape[0] * rank_n, np.int64)
    data = np.empty(rows.shape[0] * rank_n)
    return lambda: kernel(products, sq_norms, proto_sq, rank_n, values, 0, indices, data)


def report(words, t, flops, rounds):
    print(f"\n{words} words (median [min..max] of {rounds} rounds)")
    for name, ts in t.items():
        print(f"  {name:<20}{summary(ts)}")
    med = {k: float(np.median(v)) for k, v in t.items()}
    print(f"  encode / our extract          {med['ours: encode'] / med['ours: extract']:.2f}")
    print(f"  products / encode             {med['ours: products'] / med['ours: encode']:.2f}")
    print(f"  selection / encode            {med['ours: selection'] / med['ours: encode']:.2f}")
    print(f"  selection: seeded / ours      {med['seeded: selection'] / med['ours: selection']:.2f}x")
    print(f"  encode: seeded / ours         {med['seeded: encode'] / med['ours: encode']:.2f}x")
    rest = med["ours: encode"] - med["ours: products"] - med["ours: norms"] - med["ours: selection"]
    print(f"  rest of encode (pooling, buffers, checks, Encoding objects) {rest * 1e3:.1f} ms")
    print(f"  float32 / float64 products    {med['float32 products'] / med['ours: products']:.2f}")
    print(f"  products: {flops / 1e9 / min(t['ours: products']):.0f} GFLOP/s (best round; one thread)")
    print(f"  transform: opencv / ours      {med['opencv: transform'] / med['ours: transform']:.2f}x")
    per_round = np.asarray(t["opencv: transform"]) / np.asarray(t["ours: transform"])
    print(f"  (per-round ratios {per_round.min():.2f}..{per_round.max():.2f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall time or CPU time")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    n, rounds = (60, 3) if args.quick else (200, 7)
    images = make_images(n, size=64, seed=1)
    y = np.arange(n) % 2
    print(f"transform of {n} gray crops 64 x 64, one thread (OpenCV too); load average "
          f"{os.getloadavg()[0]:.1f} (2 cores shared with other jobs); clock: "
          f"{args.clock}; word selection: {_encoding_kernels.select_row.__name__}")
    for words in (64, 256):
        report(words, *measure(images, y, words, rounds), rounds)
    return 0


if __name__ == "__main__":
    _blas.native_blas()
    sys.exit(main())
