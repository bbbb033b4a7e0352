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


def test_the_policy_is_applied_when_a_convolution_is_built_not_on_every_call(monkeypatch):
    """``keep_freed_memory`` runs once per process: when a ``Conv2D`` (or an ``LRP``) is built, not
    on every convolution (review of issue 15: each ``Conv2D.linear`` called it)."""
    import numpy as np

    import nets
    from nets.layers import linear

    calls = []
    monkeypatch.setattr(linear, "keep_freed_memory", lambda: calls.append(1))
    conv = nets.Conv2D(np.ones((2, 1, 3, 3)), padding=1)
    assert calls == [1]
    x = np.ones((2, 1, 5, 5))
    for _ in range(3):
        conv.forward(x)
        conv.linear_transpose(conv.forward(x), conv.W, x.shape)
    assert calls == [1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_process_that_unpickles_an_explainer_applies_the_policy():
    """A pool's worker unpickles the model and its LRP, which runs no ``__init__``: unpickling a
    ``Conv2D`` or an ``LRP`` applies the policy too (review of the third speed round)."""
    import pickle

    import numpy as np

    import nets

    conv_lrp = nets.LRP(nets.Sequential([nets.Conv2D(np.ones((2, 1, 3, 3)), padding=1), nets.Flatten()]))
    dense_lrp = nets.LRP(nets.Sequential([nets.Dense(np.ones((2, 3)))]))
    child = ("import pickle, sys; import nets._memory as m; pickle.loads(sys.stdin.buffer.read()); "
             "print(int(m._state['done']))")
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    for lrp in (conv_lrp, dense_lrp):
        out = subprocess.run([sys.executable, "-c", child], input=pickle.dumps(lrp), env=env,
                             capture_output=True, check=True)
        assert out.stdout.split() == [b"1"]
