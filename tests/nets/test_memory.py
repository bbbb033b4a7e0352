"""``nets._memory``: freed memory is kept for reuse once per process, never against the user's own
malloc settings."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import resource, numpy as np
    from nets._memory import keep_freed_memory
    applied = keep_freed_memory()
    assert keep_freed_memory() == applied  # once per process, the same answer
    def churn():
        for _ in range(4):
            a = np.empty(12_000_000, np.float32); a[:] = 1.0; del a
    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn()
    print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _run(env_extra):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return bool(int(applied)), int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_arrays_reuse_memory_instead_of_faulting_pages_in_again():
    applied, faults = _run({})
    if not applied:
        pytest.skip("not glibc")
    # 4 x 48 MB allocated and written after the first round: without the policy each is mapped and
    # faulted in anew, with it the heap keeps the block
    assert faults < 1000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_users_malloc_settings_win():
    applied, _ = _run({"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert not applied
