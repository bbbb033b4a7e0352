"""Benchmarks run on the BLAS kernels a user's machine would pick, not on this machine's overrides.

Some of the project's machines set ``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``) because older
OpenBLAS builds crash or compute wrong results on their processors. A current numpy is right there
but slower: on an AVX-512 processor the forced Haswell kernels reach about half its GEMM speed, which
would make every comparison with PyTorch (whose oneDNN/MKL kernels ignore the variables) unfair.

So each benchmark script, when run as a script, re-executes itself once with both variables removed
(together, as they were set together) and prints which OpenBLAS kernel it then runs. Tests and CI
keep the machine's settings. ``BOWLRP_BENCH_BLAS=machine`` keeps them for a benchmark, to compare.
"""

from __future__ import annotations

import os
import sys

OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def native_blas() -> None:
    """Re-execute this script without the machine's OpenBLAS overrides, then report the kernel.

    Call it first thing under ``if __name__ == "__main__":``. Nothing happens when neither variable
    is set or when ``BOWLRP_BENCH_BLAS=machine``; otherwise the process is replaced (``os.execve``)
    by the same command with both variables removed, which cannot loop since they are then unset.
    """
    keep = os.environ.get("BOWLRP_BENCH_BLAS", "") == "machine"
    if not keep and any(name in os.environ for name in OVERRIDES):
        env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    print(f"BLAS: {describe()}", flush=True)


def describe() -> str:
    """One line naming the BLAS library, its kernel (architecture) and threads, via threadpoolctl."""
    import numpy  # noqa: F401  (loads numpy's BLAS so that threadpoolctl sees it)
    from threadpoolctl import threadpool_info

    parts = []
    for info in threadpool_info():
        if info.get("user_api") != "blas":
            continue
        arch = info.get("architecture", "?")
        parts.append(f"{info.get('internal_api')} {info.get('version')} kernel {arch}, "
                     f"{info.get('num_threads')} threads")
    forced = [f"{k}={os.environ[k]}" for k in OVERRIDES if k in os.environ]
    note = f" (machine overrides kept: {', '.join(forced)})" if forced else ""
    return ("; ".join(parts) or "no BLAS found by threadpoolctl") + note
