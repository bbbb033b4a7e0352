"""Run every benchmark script in this folder, one after the other, in one process tree.

    python benchmarks/run_all.py            # full sizes
    python benchmarks/run_all.py --quick    # small sizes, a smoke run

Each ``bench_*.py`` prints its own ratios against the baseline a user would otherwise pick. The
machines these run on are shared and noisy: compare ratios measured in the same run, not seconds
across runs.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    here = pathlib.Path(__file__).resolve().parent
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        code = subprocess.call([sys.executable, str(script), *argv], cwd=here.parent)
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
