"""tests/compile_ahead.py: the list of kernels a cold session compiles ahead in a second process."""

from __future__ import annotations

import pathlib

import numba

import bowlrp.compile_ahead as ahead
from bowlrp.compile_ahead import kernel_list, specialisation
from tests import compile_ahead

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_every_listed_kernel_exists_with_a_signature_that_parses():
    lines = compile_ahead.entries()
    assert lines, "tests/compile_ahead.txt lists nothing"
    for test_file, kernel, args in lines:
        assert (ROOT / test_file).is_file(), f"{test_file} (for {kernel}) does not exist"
        dispatcher, signature = specialisation(kernel, args)
        assert isinstance(dispatcher, numba.core.registry.CPUDispatcher), kernel
        if kernel.endswith("__serial"):  # a jit_both kernel's serial build
            assert not dispatcher.targetoptions.get("parallel"), kernel
        assert signature and all(isinstance(t, numba.types.Type) for t in signature), args


def test_jobs_follow_the_session_s_file_order_and_skip_stale_lines_and_cached_specialisations(monkeypatch):
    f64 = "Array(float64, 4, 'C', False, aligned=True)"
    lines = [
        "# a comment",
        f"tests/b.py\tnets._kernels.avg_pool\t({f64}, int64, int64, int64, int64, {f64})",
        f"tests/a.py\tnets._kernels.no_such_kernel\t({f64},)",  # renamed since: skipped
        f"tests/a.py\tnets._kernels.max_pool_scatter\t({f64}, not_a_type)",  # does not parse
        f"tests/a.py\tnets._conv_kernels.im2col\t({f64}, int64)",
        f"tests/c.py\tnets._conv_kernels.fold\t({f64},)",  # no selected test of that file
        f"tests/b.py\tnets._conv_kernels.fold__serial\t({f64}, bool)",
    ]
    monkeypatch.setattr(ahead, "cached", lambda dispatcher, signature: False)
    jobs = compile_ahead.jobs(["tests/a.py", "tests/b.py"], lines)
    from nets import _conv_kernels, _kernels

    want = [_conv_kernels.im2col.parallel, _kernels.avg_pool.parallel, _conv_kernels.fold.serial]
    assert [job.dispatcher for job in jobs] == want
    assert jobs[0].signature == (numba.types.Array(numba.types.float64, 4, "C"), numba.types.int64)
    assert jobs[0][:2] == ("nets._conv_kernels.im2col", f"({f64}, int64)")  # what the child is sent
    # a warm cache: nothing to compile, no thread
    monkeypatch.setattr(ahead, "cached", lambda dispatcher, signature: True)
    assert compile_ahead.jobs(["tests/a.py", "tests/b.py"], lines) == []


def test_every_kernel_the_demo_compiles_ahead_exists_with_a_signature_that_parses():
    from bowlrp.app import demo_ahead

    lines = kernel_list(demo_ahead.LIST)
    assert lines
    for kernel, args in lines:
        dispatcher, signature = specialisation(kernel, args)
        assert isinstance(dispatcher, numba.core.registry.CPUDispatcher), kernel
        assert not dispatcher.targetoptions.get("parallel"), f"the demo runs serial builds: {kernel}"
