"""Batch explanation on a dask distributed cluster (two worker processes on 127.0.0.1) gives the
same results, bit for bit, as the serial run: directly on the scheduler, through joblib's dask
backend, and from the command line with --scheduler."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import nets  # noqa: E402
from bowlrp.app.adapters import NetworkExplainer  # noqa: E402
from bowlrp.app.batch import explain_batch  # noqa: E402
from tests.bowlrp.app import cli_data  # noqa: E402

N_IMAGES = 16


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, host="127.0.0.1", threads_per_worker=1,
                                  dashboard_address=":0") as local:
        yield local


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask")
    images = root / "images"
    cli_data.write_digits(images, N_IMAGES)
    bad = cli_data.write_bad_files(images)
    model = cli_data.digits_network(str(root / "digits.npz"))
    serial = root / "serial"
    explain_batch(NetworkExplainer(nets.load(model)), [str(images)], serial, chunk_size=3, progress=False)
    return {"root": root, "images": str(images), "model": model, "serial": serial, "bad": bad}


def _table(out_dir):
    with open(os.path.join(out_dir, "scores.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_equal_runs(a, b):
    assert _table(a) == _table(b)
    with np.load(os.path.join(a, "relevances.npz")) as ra, np.load(os.path.join(b, "relevances.npz")) as rb:
        assert ra.files == rb.files and len(ra.files) == N_IMAGES
        for key in ra.files:
            np.testing.assert_array_equal(ra[key], rb[key])


def _worker_pids(client):
    return set(client.run(os.getpid).values())


def test_scheduler_address_matches_serial(cluster, data, tmp_path):
    with distributed.Client(cluster) as client:
        assert len(_worker_pids(client)) == 2 and os.getpid() not in _worker_pids(client)
    explainer = NetworkExplainer(nets.load(data["model"]))
    result = explain_batch(explainer, [data["images"]], tmp_path / "dask", chunk_size=3,
                           scheduler=cluster.scheduler_address, progress=False)
    assert result.ok == N_IMAGES and len(result.skipped) == len(data["bad"])
    _assert_equal_runs(data["serial"], tmp_path / "dask")


def test_bow_pipeline_on_the_cluster_matches_serial(cluster, tmp_path):
    """The BoW branch too (numba kernels, one thread per worker there, all cores here)."""
    from bowlrp.app.adapters import BoWExplainer

    written = cli_data.write_scenes(tmp_path / "scenes", n=12)
    data = written["scenes"]
    explainer = BoWExplainer(cli_data.tiny_bow(data.images, data.labels))
    explain_batch(explainer, [written["train"]], tmp_path / "serial", chunk_size=2, progress=False)
    explain_batch(explainer, [written["train"]], tmp_path / "dask", chunk_size=2, progress=False,
                  scheduler=cluster.scheduler_address)
    serial, dask = _table(tmp_path / "serial"), _table(tmp_path / "dask")
    assert serial == dask and len(serial) == 12 and all(r["status"] == "ok" for r in serial)
    serial_maps, dask_maps = (np.load(tmp_path / run / "relevances.npz") for run in ("serial", "dask"))
    assert serial_maps.files == dask_maps.files
    for key in serial_maps.files:
        np.testing.assert_array_equal(serial_maps[key], dask_maps[key])


def test_joblib_dask_backend_matches_serial(cluster, data, tmp_path):
    explainer = NetworkExplainer(nets.load(data["model"]))
    with distributed.Client(cluster):
        explain_batch(explainer, [data["images"]], tmp_path / "joblib-dask", chunk_size=3, backend="dask",
                      n_jobs=2, progress=False)
    _assert_equal_runs(data["serial"], tmp_path / "joblib-dask")


def test_command_line_scheduler_matches_serial(cluster, data, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "bowlrp.app.cli", "explain", data["model"], data["images"], "--out", str(out),
         "--chunk-size", "3", "--scheduler", cluster.scheduler_address, "--no-png", "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"explained {N_IMAGES} of {N_IMAGES + len(data['bad'])} images" in proc.stdout
    assert "skipped 3 of" in proc.stderr
    # the command line names the run by the model file's hash; the numbers are the serial ones
    serial, cli = _table(data["serial"]), _table(out)
    assert [{k: v for k, v in row.items() if k != "heatmap_png"} for row in serial] == \
           [{k: v for k, v in row.items() if k != "heatmap_png"} for row in cli]
    with np.load(data["serial"] / "relevances.npz") as a, np.load(out / "relevances.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


class SlowExplainer:
    """A real explainer that takes its time, so that workers can die in the middle of a run."""

    def __init__(self, inner, seconds=0.15):
        self.inner, self.seconds = inner, seconds

    def describe(self):
        return self.inner.describe()

    def explain(self, images, target=None):
        import time

        time.sleep(self.seconds * len(images))
        return self.inner.explain(images, target=target)


def _kill_worker(client, dead_pids):
    """SIGKILL one live worker process not killed before; returns its address."""
    import signal

    # a worker killed a moment ago may still be listed: its answer is an error, not a pid
    answers = client.run(os.getpid, on_error="return")
    pids = {a: pid for a, pid in answers.items() if isinstance(pid, int)}
    address = next(a for a, pid in sorted(pids.items()) if pid not in dead_pids)
    dead_pids.add(pids[address])
    os.kill(pids[address], signal.SIGKILL)
    return address


def test_the_run_survives_workers_dying_one_after_the_other(data, tmp_path):
    """Both original workers are killed one after the other while chunks and the model's copies
    are on them (the second before the first is back: the model is lost with it), then, with the
    cluster back at full strength, a restarted one; the nannies restart them each time. The run
    finishes with the serial numbers."""
    explainer = SlowExplainer(NetworkExplainer(nets.load(data["model"])))
    with distributed.LocalCluster(n_workers=2, processes=True, host="127.0.0.1", threads_per_worker=1,
                                  dashboard_address=":0") as local, distributed.Client(local) as client:
        originals = set(client.run(os.getpid).values())
        dead, killed, seen = set(), [], []

        def kill_during_the_run(record):
            seen.append(record["key"])
            if len(seen) == 10:
                client.wait_for_workers(2, timeout=60)  # back at full strength
            if len(seen) in (2, 3, 10):
                killed.append(_kill_worker(client, dead))

        result = explain_batch(explainer, [data["images"]], tmp_path / "dask", chunk_size=1,
                               scheduler=client, progress=False, on_result=kill_during_the_run)
    assert len(killed) == 3 and originals <= dead
    assert result.ok == N_IMAGES and result.pending == 0
    _assert_equal_runs(data["serial"], tmp_path / "dask")


def test_losing_every_worker_names_the_dead(data, tmp_path, monkeypatch):
    from bowlrp.app import executors
    from bowlrp.app.executors import WorkerLossError

    monkeypatch.setattr(executors, "_DASK_GRACE_SECONDS", 3.0)
    explainer = SlowExplainer(NetworkExplainer(nets.load(data["model"])))
    with distributed.LocalCluster(n_workers=1, processes=True, host="127.0.0.1", threads_per_worker=1,
                                  dashboard_address=":0") as local, distributed.Client(local) as client:
        killed = []

        def kill_for_good(record):
            if not killed:
                killed.append(_kill_worker(client, set()))
                local.scale(0)  # no restart: the cluster is gone for good

        with pytest.raises(WorkerLossError, match="losing workers") as info:
            explain_batch(explainer, [data["images"]], tmp_path / "dask", chunk_size=1, scheduler=client,
                          progress=False, on_result=kill_for_good)
    assert killed[0] in str(info.value)
    # what was finished is kept: a rerun on a working cluster resumes
    assert 1 <= len([line for line in open(tmp_path / "dask" / "manifest.jsonl")]) < N_IMAGES + 3
