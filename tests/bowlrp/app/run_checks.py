"""Helpers shared by the batch-run tests: an explainer that counts its work, and the comparison of
two output folders (scores.csv rows and every relevance map, bit for bit)."""

from __future__ import annotations

import csv
import os

import numpy as np


class CountingExplainer:
    """Counts how many images reach the wrapped explainer (to prove resumed runs skip done work)."""

    def __init__(self, inner):
        self.inner = inner
        self.seen = 0

    def describe(self):
        return self.inner.describe()

    def explain(self, images, target=None):
        self.seen += len(images)
        return self.inner.explain(images, target=target)


def read_rows(out_dir):
    with open(os.path.join(out_dir, "scores.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def read_relevances(out_dir):
    with np.load(os.path.join(out_dir, "relevances.npz")) as data:
        return {k: data[k] for k in data.files}


def assert_same_outputs(a, b):
    assert read_rows(a) == read_rows(b)
    maps_a, maps_b = read_relevances(a), read_relevances(b)
    assert list(maps_a) == list(maps_b)
    for key in maps_a:
        np.testing.assert_array_equal(maps_a[key], maps_b[key])


def fork_from_the_run(monkeypatch):
    """Make the ``-j`` workers of this test forked from the test's process, as in a command-line run.

    Earlier tests leave idle library threads behind that a test cannot stop (dask's offload
    executor, joblib loky's manager and feeder), and with those alive the pool would fork its
    workers from the server instead; idle, they hold no lock, so the test forks anyway (the check
    itself is tested in a fresh interpreter). Skips where workers are never forked from the run's
    process (not Linux)."""
    import sys

    import pytest

    from bowlrp.app import process_pool

    if not sys.platform.startswith("linux"):
        pytest.skip("workers are forked from the run's process on Linux only")
    monkeypatch.setattr(process_pool, "driver_forkable", lambda: process_pool.FORK_DRIVER)
