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

``--inventory`` logs numba's compile events (``numba.core.event``, ``"numba:compile"``) of every
Python process of each run (``_compile_log.py``, installed as ``sitecustomize``, so the command line,
demo and worker subprocesses the tests start count too): per kernel and signature the compile time,
exclusive of the kernels it compiled inside it (an inlined or called kernel compiles within its
caller), and the test that compiled it. The warm run is logged too: numba's cache should serve it all.
``--only suite`` times the whole test suite as ``make test`` runs it. ``--report DIR`` prints the
inventory of a log folder written by a run with ``BENCH_COLD_LOG_DIR=DIR`` (``--keep DIR`` keeps a
run's caches and logs). ``--ahead both`` runs every command without and then with compiling ahead
in a second process (``bowlrp.compile_ahead``, on unless ``BOWLRP_COMPILE_AHEAD=0``; the inventory
counts what that process compiled and the run loaded), an A/B in one round; ``--ahead-processes 1 2``
runs it once per number of compile-ahead children (``BOWLRP_COMPILE_AHEAD_PROCESSES``), so ``--ahead
both --ahead-processes 1 2`` is an A/B/C in one round;
``--write-ahead PREFIX`` (with ``--ahead off``) writes the kernel lists it compiles from a cold
run's log (the suite's:
``tests/compile_ahead.txt``, the demo's: ``bowlrp/app/demo_kernels.txt``; with ``--report`` too). A
run with failed tests still counts (its failures are printed): a flaky test must not discard a cold
suite run of minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import _blas  # noqa: E402  (benchmarks/_blas.py: no machine BLAS overrides)
from _timing import children_cpu  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent

TEST_SLICE = [
    "tests/bowlrp/bow/test_features.py",
    "tests/bowlrp/bow/test_encoding.py",
    "tests/bowlrp/bow/test_classifier.py",
    "tests/bowlrp/bow/test_explain.py",
    "tests/nets/test_layers.py",
    "tests/nets/test_rules.py",
]
#: the whole suite, as ``make test`` runs it (``pytest -q``; no cache provider: nothing left behind)
SUITE = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
TEST_SLICE_QUICK = ["tests/bowlrp/bow/test_classifier.py", "tests/bowlrp/bow/test_explain.py"]


# ----------------------------------------------------------------------------------------- parent
def run(argv, cache_dir, log_dir=None, extra_env=None):
    """Wall time of ``python argv`` in a fresh process with numba's cache in ``cache_dir``.

    With ``log_dir``, every Python process of the run logs its numba compiles there (``_compile_log``
    installed as ``sitecustomize``).
    """
    path = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), **(extra_env or {})}
    if log_dir is not None:
        hook = pathlib.Path(log_dir) / "hook"
        hook.mkdir(parents=True)
        shutil.copy(pathlib.Path(__file__).with_name("_compile_log.py"), hook / "sitecustomize.py")
        path.insert(0, str(hook))
        env["BENCH_COLD_LOG_DIR"] = str(log_dir)
    env["PYTHONPATH"] = os.pathsep.join(path).rstrip(os.pathsep)
    load = os.getloadavg()[0]
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        if argv[:2] != ["-m", "pytest"] or proc.returncode != 1:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        # failed tests: the run still timed the whole suite (a flaky timing test must not throw away
        # a cold run of many minutes); say which
        failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        print(f"    ({' '.join(argv[:2])}: {len(failed)} failed: {'; '.join(failed)[:600]})", flush=True)
    return seconds, children_cpu() - cpu0, load


def read_log(log_dir, waits=False):
    """The compile records of every process of a run (``_compile_log``'s JSON lines); with ``waits``,
    the records of the run waiting for a compile-ahead child instead."""
    records = [json.loads(line) for f in sorted(pathlib.Path(log_dir).glob("*.jsonl"))
               for line in f.read_text().splitlines()]
    return [r for r in records if bool(r.get("wait")) == waits]


def blocked(log_dir):
    """Print how long the run's processes were held up by compilation: compiling themselves
    (top-level compiles, inclusive) and waiting for a compile-ahead child."""
    compiles = [r for r in read_log(log_dir) if not r.get("ahead") and r["caller"] is None]
    waits = read_log(log_dir, waits=True)
    print(f"    held up by compilation outside the compile-ahead children: compiling "
          f"{sum(r['inclusive'] for r in compiles):.1f} s ({len(compiles)} top-level), waiting for a child "
          f"{sum(r['seconds'] for r in waits):.1f} s ({len(waits)} waits)")


def inventory(records, top=15):
    """Print a compile log: total, the top kernels (all their signatures), the top test files."""
    total = sum(r["seconds"] for r in records)
    per_kernel = defaultdict(lambda: [0.0, 0, set()])
    per_file = defaultdict(float)
    for r in records:
        key = r["kernel"] + (" [parallel]" if r["parallel"] else "")
        per_kernel[key][0] += r["seconds"]
        per_kernel[key][1] += 1
        per_kernel[key][2].add(r["args"])
        per_file[r.get("test", "").split("::")[0] or "(no test)"] += r["seconds"]
    n_proc = len({r.get("pid") for r in records})
    parallel = [r["seconds"] for r in records if r["parallel"]]
    ahead = [r["seconds"] for r in records if r.get("ahead")]
    print(f"    compiled {len(records)} specialisations of {len(per_kernel)} kernels in {total:.1f} s "
          f"(exclusive times, {n_proc} processes); parallel builds {len(parallel)}, {sum(parallel):.1f} s; "
          f"in the compile-ahead process {len(ahead)}, {sum(ahead):.1f} s")
    print("    top kernels: seconds, compiles, distinct signatures")
    for name, (seconds, count, sigs) in sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"    {seconds:6.2f} s  {count:3d} x  {len(sigs):2d} sig  {name}")
    if len(per_file) > 1:
        print("    top test files (compile seconds)")
        for name, seconds in sorted(per_file.items(), key=lambda kv: -kv[1])[:top]:
            print(f"    {seconds:6.2f} s  {name}")
    return records


def write_ahead_list(records, path, with_tests):
    """Write what a cold run compiled, for ``compile_ahead`` (its test session or demo).

    One line per specialisation of a project kernel compiled at the top level (not inside another
    kernel), in the order the cold run compiled them: the test file that first needed it (suite),
    the kernel, its argument types (numba's spelling). First those of the run's process (the one that
    logged most compiles outside compile-ahead children), then those that only its command-line and
    worker subprocesses compiled (the demo a test starts): saved by a compile-ahead child before such
    a subprocess needs them, they are loaded there too (``compile_ahead.uncompiled`` checks the
    cache per signature, so the demo's own compile-ahead skips what the session's saved).
    """
    counts = defaultdict(int)
    for r in records:
        counts[r["pid"]] += not r.get("ahead")
    main_pid = max(counts, key=counts.get)
    top = [r for r in records if r["caller"] is None and not r.get("ahead")
           and r["kernel"].startswith(("bowlrp.", "nets.")) and (r["test"] or not with_tests)]
    lines, seen, others = [], set(), 0
    for r in sorted(top, key=lambda r: r["pid"] != main_pid):  # stable: each process's own order
        key = (r["kernel"], r["args"])
        if key not in seen:
            seen.add(key)
            others += r["pid"] != main_pid
            test = [r["test"].split("::")[0]] if with_tests else []
            lines.append("\t".join([*test, r["kernel"], r["args"]]))
    pathlib.Path(path).write_text("\n".join(lines) + "\n")
    print(f"    wrote {len(lines)} specialisations to {path} ({others} of them compiled only in "
          "subprocesses of the run)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--inventory", action="store_true",
                        help="log the kernels compiled in cold runs (and in warm runs: should be none)")
    parser.add_argument("--only", choices=["demo", "tests", "suite"], nargs="+",
                        help="these commands only (suite: the whole test suite as `make test` runs it)")
    parser.add_argument("--json", help="write the compile logs and timings here")
    parser.add_argument("--report", metavar="DIR", help="print the inventory of a compile log folder")
    parser.add_argument("--top", type=int, default=15, help="rows of the inventory")
    parser.add_argument("--ahead", choices=["on", "off", "both"], default="on",
                        help="compile ahead in a second process (bowlrp.compile_ahead: the test "
                             "session's and the demo's kernel lists; on by default, as in make test "
                             "and make demo) or not (BOWLRP_COMPILE_AHEAD=0); "
                             "both: each command without, then with, in every round")
    parser.add_argument("--ahead-processes", type=int, nargs="+",
                        help="children compiling ahead (BOWLRP_COMPILE_AHEAD_PROCESSES; default: "
                             "the library's); several numbers: one run with compiling ahead per "
                             "number, in the same round (e.g. --ahead both --ahead-processes 1 2)")
    parser.add_argument("--keep", metavar="DIR", help="keep the caches and logs in a new folder in DIR")
    parser.add_argument("--write-ahead", metavar="PREFIX",
                        help="with --inventory and --ahead off: write what each command's cold run "
                             "compiled in its own process to PREFIX.<command>.txt "
                             "(tests/compile_ahead.txt: the suite's; bowlrp/app/demo_kernels.txt: "
                             "the demo's)")
    args = parser.parse_args(argv)
    if args.report:
        records = inventory(read_log(args.report), args.top)
        blocked(args.report)
        if args.write_ahead:
            write_ahead_list(records, args.write_ahead, any(r["test"] for r in records))
        return 0
    rounds = args.rounds or (1 if args.quick else 2)
    folder = (contextlib.nullcontext(tempfile.mkdtemp(prefix="bench_cold_", dir=args.keep)) if args.keep
              else tempfile.TemporaryDirectory(prefix="bench_cold_"))
    with folder as tmp:
        tmp = pathlib.Path(tmp)
        if args.keep:
            print(f"caches and logs kept in {tmp} (--report {tmp}/log_<command>_<round>_cold)")
        demo = ["-m", "bowlrp", "demo", "--out", str(tmp / "demo_out")]
        if args.quick:
            demo += ["--n-train", "100", "--n-test", "40", "--n-show", "2"]
        tests = ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                 *(TEST_SLICE_QUICK if args.quick else TEST_SLICE)]
        commands = {"demo": demo, "tests": tests, "suite": [*SUITE]}
        on = {"BOWLRP_COMPILE_AHEAD": "1"}
        ahead = [("-ahead", on)] if not args.ahead_processes else [
            (f"-ahead{n}", {**on, "BOWLRP_COMPILE_AHEAD_PROCESSES": str(n)}) for n in args.ahead_processes]
        variants = {"on": ahead, "off": [("", {"BOWLRP_COMPILE_AHEAD": "0"})]}
        variants["both"] = variants["off"] + variants["on"]  # A/B: the same command without, then with
        commands = {name + suffix: (commands[name], env) for name in (args.only or ["demo", "tests"])
                    for suffix, env in variants[args.ahead]}
        print(f"{os.cpu_count()} cores (shared machine); each round: cold run (empty NUMBA_CACHE_DIR), "
              "then warm run (same cache)")
        results = defaultdict(list)
        logs = {}
        for k in range(rounds):
            for name, (cmd, extra_env) in commands.items():
                cache = tmp / f"cache_{name}_{k}"
                cache.mkdir()
                log = {run_: tmp / f"log_{name}_{k}_{run_}" if args.inventory else None
                       for run_ in ("cold", "warm")}
                cold, cpu_cold, load_cold = run(cmd, cache, log["cold"], extra_env)
                warm, cpu_warm, load_warm = run(cmd, cache, log["warm"], extra_env)
                results[name].append((cold, warm))
                print(f"{name:<12} round {k + 1}: cold {cold:7.1f} s (load {load_cold:.1f}), "
                      f"warm {warm:7.1f} s (load {load_warm:.1f}): cold / warm {cold / warm:.2f}; "
                      f"CPU {cpu_cold:.1f} / {cpu_warm:.1f} s = {cpu_cold / cpu_warm:.2f}", flush=True)
                if args.inventory:
                    print("  cold run:")
                    logs[f"{name}_{k}_cold"] = inventory(read_log(log["cold"]), args.top)
                    blocked(log["cold"])
                    if args.write_ahead and k == 0:
                        write_ahead_list(logs[f"{name}_{k}_cold"], f"{args.write_ahead}.{name}.txt",
                                         not name.startswith("demo"))
                    print("  warm run (numba's cache should serve everything):")
                    logs[f"{name}_{k}_warm"] = inventory(read_log(log["warm"]), args.top)
        for name, pairs in results.items():
            ratios = sorted(c / w for c, w in pairs)
            print(f"{name}: cold / warm median {ratios[len(ratios) // 2]:.2f} "
                  f"[{ratios[0]:.2f}..{ratios[-1]:.2f}]")
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps({"runs": results, "compiles": logs}, indent=1))
    return 0


if __name__ == "__main__":
    _blas.native_blas()
    sys.exit(main())
