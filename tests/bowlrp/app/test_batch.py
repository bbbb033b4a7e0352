"""Streaming batch explanation: outputs, bad files, resume after an interruption, bounded memory,
joblib parallelism. The explainer is a real one: LRP on an MLP trained on scikit-learn's digits."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import nets
from bowlrp.app.adapters import NetworkExplainer
from bowlrp.app.batch import RunMismatchError, explain_batch, read_manifest
from bowlrp.app.run_folder import SCORES_CSV
from bowlrp.heatmap import Heatmap
from bowlrp.imageio import list_images, read_image
from tests.bowlrp.app import cli_data
from tests.bowlrp.app.run_checks import (
    CountingExplainer,
    assert_same_outputs,
    fork_from_the_run,
    read_relevances,
    read_rows,
)

N_GOOD = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    images = root / "images"
    cli_data.write_digits(images, N_GOOD)
    bad = cli_data.write_bad_files(images)
    model_path = cli_data.digits_network(str(root / "digits.npz"))
    return {"root": root, "images": str(images), "bad": bad, "model": nets.load(model_path)}


def test_serial_run_writes_every_output(data, tmp_path, capsys):
    explainer = NetworkExplainer(data["model"])
    result = explain_batch(explainer, [data["images"]], tmp_path / "out", chunk_size=5)
    out = tmp_path / "out"
    assert (result.total, result.ok, result.new, result.pending) == (N_GOOD + 3, N_GOOD, N_GOOD, 0)
    assert result.complete
    assert sorted(k for k, _, _ in result.skipped) == ["empty", "notes", "truncated"]
    reasons = {k: r for k, _, r in result.skipped}
    assert "not an image" in reasons["notes"] and "corrupt" in reasons["truncated"]

    rows = read_rows(out)
    assert [r["key"] for r in rows] == [item.key for item in list_images([data["images"]])]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == N_GOOD
    relevances = read_relevances(out)
    assert sorted(relevances) == sorted(r["key"] for r in ok)
    # the scores are the network's logits of the predicted class, the maps the LRP maps
    images = [read_image(r["path"]) for r in ok]
    logits = explainer.decision(explainer.prepare(images))
    direct = explainer.explain(images)
    for row, logit, heatmap in zip(ok, logits, direct):
        assert int(row["target"]) == int(np.argmax(logit))
        assert float(row["score"]) == pytest.approx(float(logit.max()), rel=1e-12)
        # (another batch composition: BLAS may differ in the last bit)
        np.testing.assert_allclose(relevances[row["key"]], heatmap.relevance, rtol=1e-12, atol=1e-15)
        saved = Heatmap.load(out / row["relevance_npz"])
        assert float(row["relevance_sum"]) == saved.total and float(row["residual"]) == saved.residual
        assert saved.image is not None and saved.image.shape == (8, 8)
        assert (out / row["heatmap_png"]).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary == {"total": N_GOOD + 3, "ok": N_GOOD, "skipped": 3, "pending": 0, "complete": True}
    assert f"explain: {N_GOOD + 3}/{N_GOOD + 3} images (3 skipped)" in capsys.readouterr().err


def test_interrupted_run_resumes_without_recomputing(data, tmp_path):
    explainer = NetworkExplainer(data["model"])
    explain_batch(explainer, [data["images"]], tmp_path / "full", chunk_size=4, progress=False)

    k = 5
    seen = []

    def interrupt_after_k(record):
        seen.append(record["key"])
        if len(seen) == k:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of a chunk

    with pytest.raises(KeyboardInterrupt):
        explain_batch(explainer, [data["images"]], tmp_path / "part", chunk_size=4, progress=False,
                      on_result=interrupt_after_k)
    done = read_manifest(tmp_path / "part")
    assert list(done) == seen  # exactly the recorded images count as done
    assert not (tmp_path / "part" / "scores.csv").exists()
    done_ok = sum(r["status"] == "ok" for r in done.values())
    mtimes = {key: os.stat(tmp_path / "part" / r["relevance_npz"]).st_mtime_ns
              for key, r in done.items() if r["status"] == "ok"}

    counting = CountingExplainer(explainer)
    result = explain_batch(counting, [data["images"]], tmp_path / "part", chunk_size=4, progress=False)
    assert counting.seen == N_GOOD - done_ok  # nothing done is explained again
    assert result.new == N_GOOD - done_ok and result.ok == N_GOOD
    for key, mtime in mtimes.items():  # and the files of finished images were not rewritten
        assert os.stat(tmp_path / "part" / "relevance" / f"{key}.npz").st_mtime_ns == mtime
    assert_same_outputs(tmp_path / "full", tmp_path / "part")


def test_torn_manifest_line_is_redone(data, tmp_path):
    explainer = NetworkExplainer(data["model"])
    out = tmp_path / "out"
    explain_batch(explainer, [data["images"]], out, limit=6, progress=False)
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    cut = json.loads(lines[-1])["key"]
    manifest.write_text("".join(lines[:-1]) + lines[-1][:17])  # a crash in the middle of a write
    assert cut not in read_manifest(out)
    counting = CountingExplainer(explainer)
    explain_batch(counting, [data["images"]], out, progress=False)
    ok_before = sum(json.loads(line)["status"] == "ok" for line in lines[:-1])
    assert counting.seen == N_GOOD - ok_before
    explain_batch(explainer, [data["images"]], tmp_path / "full", progress=False)
    assert_same_outputs(tmp_path / "full", out)


def test_limit_leaves_the_rest_pending(data, tmp_path):
    explainer = NetworkExplainer(data["model"])
    out = tmp_path / "out"
    result = explain_batch(explainer, [data["images"]], out, limit=4, progress=False)
    assert result.pending == N_GOOD + 3 - 4 and not result.complete
    statuses = [r["status"] for r in read_rows(out)]
    assert statuses.count("pending") == N_GOOD + 3 - 4
    assert json.loads((out / "summary.json").read_text())["complete"] is False
    result = explain_batch(explainer, [data["images"]], out, progress=False)
    assert result.complete and result.ok == N_GOOD


def test_other_settings_in_the_same_folder_are_refused(data, tmp_path):
    explainer = NetworkExplainer(data["model"])
    out = tmp_path / "out"
    explain_batch(explainer, [data["images"]], out, limit=2, progress=False)
    with pytest.raises(RunMismatchError, match="target"):
        explain_batch(explainer, [data["images"]], out, target=3, progress=False)
    result = explain_batch(explainer, [data["images"]], out, target=3, resume=False, progress=False)
    assert result.new == N_GOOD
    assert {r["target"] for r in read_rows(out) if r["status"] == "ok"} == {"3"}


def test_memory_is_bounded_by_the_chunk(data, tmp_path, monkeypatch):
    """Images are read only when their chunk is due: never more than one chunk ahead of the writes."""
    from bowlrp.app import image_chunks

    reads, written = [], []
    original = image_chunks.read_image

    def counting_read(path, mode="auto", **options):
        reads.append(path)
        return original(path, mode=mode, **options)

    monkeypatch.setattr(image_chunks, "read_image", counting_read)
    chunk = 3

    def check(record):
        written.append(record["key"])
        assert len(reads) <= len(written) + chunk

    explain_batch(NetworkExplainer(data["model"]), [data["images"]], tmp_path / "out", chunk_size=chunk,
                  on_result=check, progress=False)
    assert len(written) == N_GOOD + 3


@pytest.mark.parametrize("backend, fork_driver, driver_helps", [
    (None, True, True), (None, True, False), (None, False, False), (None, False, True),
    ("loky", False, False)])
def test_parallel_workers_give_the_serial_results(data, tmp_path, monkeypatch, backend, fork_driver,
                                                  driver_helps):
    """The default pool (workers write their own files), its workers forked from the run's process
    (which explains chunks too, or not) or from a server (the driver helps while they start, or
    not), and joblib's loky (the driver writes the files)."""
    from bowlrp.app import process_pool

    monkeypatch.setattr(process_pool, "FORK_DRIVER", fork_driver)
    monkeypatch.setattr(process_pool, "DRIVER_HELPS", driver_helps)
    if fork_driver:
        fork_from_the_run(monkeypatch)
    explainer = NetworkExplainer(data["model"])
    explain_batch(explainer, [data["images"]], tmp_path / "serial", chunk_size=3, progress=False)
    explain_batch(explainer, [data["images"]], tmp_path / "par", chunk_size=3, n_jobs=2, backend=backend,
                  progress=False)
    assert_same_outputs(tmp_path / "serial", tmp_path / "par")


@pytest.mark.parametrize("fork_driver", [True, False])
def test_an_interrupted_parallel_run_stops_its_workers_and_resumes(data, tmp_path, monkeypatch, fork_driver):
    """Closing the run early (an exception in the driver) terminates the workers before the lock is
    released, and the rerun completes the folder with the serial results."""
    from bowlrp.app import process_pool

    monkeypatch.setattr(process_pool, "FORK_DRIVER", fork_driver)
    monkeypatch.setattr(process_pool, "DRIVER_HELPS", False)
    if fork_driver:
        fork_from_the_run(monkeypatch)
    seen = []

    def stop_after_two(record):
        seen.append(record["key"])
        if len(seen) == 2:
            raise RuntimeError("stop")

    from bowlrp.app import forked_workers

    explainer = NetworkExplainer(data["model"])
    started = []
    original, stop = process_pool.ProcessPoolExecutor, forked_workers._Workers.stop

    class Recording(original):
        def shutdown(self, *args, **kwargs):
            started.extend((self._processes or {}).values())  # the workers, before shutdown forgets them
            super().shutdown(*args, **kwargs)

    def recording_stop(self, finished):  # the workers forked from the run
        started.extend(self.processes)
        stop(self, finished)

    monkeypatch.setattr(forked_workers._Workers, "stop", recording_stop)
    process_pool.ProcessPoolExecutor = Recording
    try:
        with pytest.raises(RuntimeError, match="stop"):
            explain_batch(explainer, [data["images"]], tmp_path / "par", chunk_size=1, n_jobs=2,
                          progress=False, on_result=stop_after_two)
    finally:
        process_pool.ProcessPoolExecutor = original
    assert started and not any(p.is_alive() for p in started)
    explain_batch(explainer, [data["images"]], tmp_path / "par", chunk_size=3, n_jobs=2, progress=False)
    explain_batch(explainer, [data["images"]], tmp_path / "serial", chunk_size=3, progress=False)
    assert_same_outputs(tmp_path / "serial", tmp_path / "par")


def test_classes_of_a_script_are_left_to_loky_when_the_server_forks(data, monkeypatch):
    """Workers forked from the server do not run the user's script, so they could not unpickle a
    class defined in it: such explainers go to joblib's loky, which pickles classes by value.
    Workers forked from the run's own process inherit the class, and take it."""
    from bowlrp.app import process_pool

    script_class = type("ScriptExplainer", (), {"__module__": "__main__"})
    fork_from_the_run(monkeypatch)
    assert process_pool.pool_kind(script_class()) == "forked"
    monkeypatch.setattr(process_pool, "FORK_DRIVER", False)
    assert process_pool.pool_kind(script_class()) is None
    assert process_pool.pool_kind(NetworkExplainer(data["model"])) == \
        ("server" if "forkserver" in __import__("multiprocessing").get_all_start_methods() else None)


def test_bad_arguments(data, tmp_path):
    explainer = NetworkExplainer(data["model"])
    with pytest.raises(ValueError, match="chunk_size"):
        explain_batch(explainer, [data["images"]], tmp_path / "o", chunk_size=0)
    with pytest.raises(ValueError, match="limit"):
        explain_batch(explainer, [data["images"]], tmp_path / "o", limit=-1)
    with pytest.raises(ValueError, match="does not exist"):
        explain_batch(explainer, [str(tmp_path / "missing")], tmp_path / "o")


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_no_record_before_its_files_and_their_folders_are_synced(data, tmp_path, monkeypatch, n_jobs):
    """Whichever process writes an image's files fsyncs their folders after them, and the run
    appends the image's manifest record only after that (here: from timestamps of every process)."""
    import time

    from bowlrp.app import run_folder

    log = str(tmp_path / "events.log")
    write, sync = run_folder.ResultWriter.__call__, run_folder.fsync_folder

    def event(*words):
        with open(log, "a") as fh:
            fh.write(" ".join(str(w) for w in (time.monotonic_ns(), os.getpid(), *words)) + "\n")

    def logged_write(self, key, heatmap):
        fields = write(self, key, heatmap)
        event("wrote", key)
        return fields

    def logged_sync(folder):
        sync(folder)
        event("synced", os.path.basename(folder))

    monkeypatch.setattr(run_folder.ResultWriter, "__call__", logged_write)
    monkeypatch.setattr(run_folder, "fsync_folder", logged_sync)
    if n_jobs != 1:
        fork_from_the_run(monkeypatch)
    explain_batch(NetworkExplainer(data["model"]), [data["images"]], tmp_path / "out", chunk_size=3,
                  n_jobs=n_jobs, progress=False, on_result=lambda record: event("recorded", record["key"]))
    with open(log) as fh:
        events = [line.split() for line in fh]
    wrote = {key: (int(t), pid) for t, pid, what, key in events if what == "wrote"}
    recorded = {key: int(t) for t, _, what, key in events if what == "recorded"}
    synced = [(int(t), pid, folder) for t, pid, what, folder in events if what == "synced"]
    assert set(wrote) and set(wrote) <= set(recorded)
    for key, (t_wrote, pid) in wrote.items():
        folders = {folder for t, p, folder in synced if p == pid and t_wrote < t < recorded[key]}
        assert folders == {"relevance", "heatmaps"}, key


def test_results_after_every_image_is_recorded_are_an_error(data, tmp_path, monkeypatch):
    """The run writes its outputs once every image is recorded, then lets the executor end: an
    executor that returned results after that (an image twice) would have them missing from the
    outputs, so it is an error rather than silently dropped."""
    from bowlrp.app import batch, executors

    def twice(explainer, chunks, target, write, *options):
        results = list(executors.run_serial(explainer, chunks, target, write))
        yield from results
        yield results[-1]

    monkeypatch.setattr(batch, "run_chunks", twice)
    with pytest.raises(RuntimeError, match="after every image was recorded"):
        explain_batch(NetworkExplainer(data["model"]), [data["images"]], tmp_path / "out", chunk_size=5,
                      progress=False)


def test_ctrl_c_after_every_image_is_saved_does_not_ask_for_a_rerun(data, tmp_path, monkeypatch, capsys):
    """An interrupt while the executor ends, after every image is saved and the outputs are
    written, is passed on but does not say "rerun to resume": there is nothing left to do."""
    from bowlrp.app import batch, executors

    def then_interrupt(explainer, chunks, target, write, *options):
        yield from executors.run_serial(explainer, chunks, target, write)
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "run_chunks", then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        explain_batch(NetworkExplainer(data["model"]), [data["images"]], out, chunk_size=5, progress=True)
    assert "rerun to resume" not in capsys.readouterr().err
    records = read_manifest(str(out))
    assert records and all(r["status"] in ("ok", "skipped") for r in records.values())
    assert (out / SCORES_CSV).exists()
