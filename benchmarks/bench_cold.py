"""Benchmark: a fresh clone's first run (empty numba cache) against the second run (issue 15, cold start).

    .venv/bin/python benchmarks/bench_cold.py              # demo + test slice, 2 rounds
    .venv/bin/python benchmarks/bench_cold.py --quick      # a smaller demo and test slice, 1 round
    .venv/bin/python benchmarks/bench_cold.py --inventory  # + which kernels compiled, and for how long

Each round runs a command twice in fresh processes with ``NUMBA_CACHE_DIR`` pointing at a new empty
folder: the first run compiles every numba kernel it uses (as on a fresh clone), the second loads them
from that cache. Commands: the demo (``python -m bowlrp demo``, as ``make demo`` runs it; ``--quick``:
fewer scenes) and a slice of the test suite that touches every kernel family (SIFT, encoding, Gram,
explanation, network layers). Rounds interleave the commands; the load average is printed with every
run (the machine is shared: ratios from one round are comparable, seconds across rounds are not).

``--inventory`` runs each command's cold run inside a wrapper that records numba's compile events
(``numba.core.event``, ``"numba:compile"``): per kernel and signature the compile time, exclusive of
the kernels it compiled inside it (an inlined or called kernel compiles within its caller).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import pathlib
import runpy
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)

ROOT = pathlib.Path(__file__).resolve().parent.parent

TEST_SLICE = [
    "tests/bowlrp/bow/test_features.py",
    "tests/bowlrp/bow/test_encoding.py",
    "tests/bowlrp/bow/test_classifier.py",
    "tests/bowlrp/bow/test_explain.py",
    "tests/nets/test_layers.py",
    "tests/nets/test_rules.py",
]
TEST_SLICE_QUICK = ["tests/bowlrp/bow/test_classifier.py", "tests/bowlrp/bow/test_explain.py"]


# ------------------------------------------------------------------------------------------ child
def _record_compiles(log_path):
    """Record numba compile events of this process into ``log_path`` (JSON) at exit."""
    from numba.core import event

    records, stack = [], []

    class Recorder(event.Listener):
        def on_start(self, ev):
            py_func = ev.data["dispatcher"].py_func
            # start, time spent in nested compiles, name
            stack.append([time.perf_counter(), 0.0, f"{py_func.__module__}.{py_func.__qualname__}"])

        def on_end(self, ev):
            start, nested, name = stack.pop()
            total = time.perf_counter() - start
            if stack:
                stack[-1][1] += total
            dispatcher = ev.data["dispatcher"]
            records.append({
                "kernel": name,
                "caller": stack[-1][2] if stack else None,
                "parallel": bool(dispatcher.targetoptions.get("parallel")),
                "args": str(tuple(ev.data["args"])),
                "seconds": total - nested,
                "inclusive": total,
            })

    event.register("numba:compile", Recorder())

    def dump():
        pathlib.Path(log_path).write_text(json.dumps(records))

    atexit.register(dump)


def child(log_path, argv):
    """Run ``python <argv>`` (``-m module ...`` or ``script ...``) in this process, compiles logged."""
    _record_compiles(log_path)
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


# ----------------------------------------------------------------------------------------- parent
def run(argv, cache_dir, log=None):
    """Wall time of ``python argv`` in a fresh process with numba's cache in ``cache_dir``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, *([__file__, "--child", str(log), "--"] if log else []), *argv]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, load


def inventory(log, top=15):
    """Print the compile log: total, per kernel (all its signatures), the top entries."""
    records = json.loads(pathlib.Path(log).read_text())
    total = sum(r["seconds"] for r in records)
    per_kernel = defaultdict(lambda: [0.0, 0])
    for r in records:
        key = r["kernel"] + (" [parallel]" if r["parallel"] else "")
        per_kernel[key][0] += r["seconds"]
        per_kernel[key][1] += 1
    print(f"    compiled {len(records)} specialisations of {len(per_kernel)} kernels in {total:.1f} s "
          "(exclusive times)")
    for name, (seconds, count) in sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"    {seconds:6.2f} s  {count} x  {name}")
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--inventory", action="store_true", help="log the kernels compiled in cold runs")
    parser.add_argument("--only", choices=["demo", "tests"], help="one of the two commands")
    parser.add_argument("--json", help="write the compile logs and timings here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    with tempfile.TemporaryDirectory(prefix="bench_cold_") as tmp:
        tmp = pathlib.Path(tmp)
        demo = ["-m", "bowlrp", "demo", "--out", str(tmp / "demo_out")]
        if args.quick:
            demo += ["--n-train", "100", "--n-test", "40", "--n-show", "2"]
        tests = ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                 *(TEST_SLICE_QUICK if args.quick else TEST_SLICE)]
        commands = {"demo": demo, "tests": tests}
        if args.only:
            commands = {args.only: commands[args.only]}
        print(f"{os.cpu_count()} cores (shared machine); each round: cold run (empty NUMBA_CACHE_DIR), "
              "then warm run (same cache)")
        results = defaultdict(list)
        logs = {}
        for k in range(rounds):
            for name, cmd in commands.items():
                cache = tmp / f"cache_{name}_{k}"
                cache.mkdir()
                log = tmp / f"log_{name}_{k}.json" if args.inventory else None
                cold, load_cold = run(cmd, cache, log)
                warm, load_warm = run(cmd, cache)
                results[name].append((cold, warm))
                print(f"{name:<6} round {k + 1}: cold {cold:7.1f} s (load {load_cold:.1f}), "
                      f"warm {warm:7.1f} s (load {load_warm:.1f}): cold / warm {cold / warm:.2f}", flush=True)
                if log is not None:
                    logs[f"{name}_{k}"] = inventory(log)
        for name, pairs in results.items():
            ratios = sorted(c / w for c, w in pairs)
            print(f"{name}: cold / warm median {ratios[len(ratios) // 2]:.2f} "
                  f"[{ratios[0]:.2f}..{ratios[-1]:.2f}]")
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps({"runs": results, "compiles": logs}, indent=1))
    return 0


if __name__ == "__main__":
    _blas.native_blas()
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sep = sys.argv.index("--")
        child(sys.argv[2], sys.argv[sep + 1:])
    else:
        sys.exit(main())
