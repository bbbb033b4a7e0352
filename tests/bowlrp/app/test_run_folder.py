"""What a resumed run may trust: results keyed by input path and content, verified result files,
a torn manifest tail, one run per folder, names that differ only by punctuation, image-size limits,
spreadsheet-safe CSV cells, and maps that overflow. Real data: LRP of an MLP on digits."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import nets
from bowlrp.app.adapters import NetworkExplainer
from bowlrp.app.batch import RunLockedError, explain_batch, read_manifest
from bowlrp.app.run_folder import RunLock, csv_read, csv_text
from bowlrp.imageio import list_images, read_image
from tests.bowlrp.app import cli_data
from tests.bowlrp.app.run_checks import CountingExplainer, assert_same_outputs, read_rows

N = 8


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return nets.load(cli_data.digits_network(str(tmp_path_factory.mktemp("net") / "digits.npz")))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    cli_data.write_digits(folder, N)
    return folder


# ------------------------------------------------------------------ item 2: changed inputs
def test_a_changed_input_set_resumes_into_the_right_results(model, images, tmp_path):
    """a.png replaced by a.jpg, one file rewritten in place, one added: exactly those three are
    explained again, the old image is not listed, and the result says how many changed."""
    explainer = NetworkExplainer(model)
    out = tmp_path / "out"
    explain_batch(explainer, [images], out, progress=False)
    extra = cli_data.write_digits(tmp_path / "more", 3, start=1500)
    (images / "digit000.png").unlink()
    Image.open(extra[0]).save(images / "digit000.jpg", quality=100)  # same key, another file
    shutil.copy(extra[1], images / "digit001.png")  # same path, other bytes
    shutil.copy(extra[2], images / "digit999.png")  # new
    counting = CountingExplainer(explainer)
    result = explain_batch(counting, [images], out, progress=False)
    assert counting.seen == 3 and result.new == 3 and result.changed == 2 and result.damaged == 0
    paths = [row["path"] for row in read_rows(out)]
    assert str(images / "digit000.jpg") in paths and str(images / "digit000.png") not in paths
    explain_batch(explainer, [images], tmp_path / "fresh", progress=False)
    assert_same_outputs(tmp_path / "fresh", out)
    again = explain_batch(CountingExplainer(explainer), [images], out, progress=False)
    assert (again.new, again.changed, again.damaged) == (0, 0, 0)


# ------------------------------------------------------------------ item 3: damaged results
def test_a_damaged_result_file_is_recomputed_not_trusted(model, images, tmp_path):
    explainer = NetworkExplainer(model)
    out = tmp_path / "out"
    explain_batch(explainer, [images], out, progress=False)
    reference = tmp_path / "reference"
    shutil.copytree(out, reference)
    records = read_manifest(out)
    truncated = out / records["digit002"]["relevance_npz"]
    truncated.write_bytes(truncated.read_bytes()[:100])
    flipped = out / records["digit003"]["relevance_npz"]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    flipped.write_bytes(bytes(data))
    (out / records["digit004"]["heatmap_png"]).unlink()
    counting = CountingExplainer(explainer)
    result = explain_batch(counting, [images], out, progress=False)
    assert counting.seen == 3 and result.damaged == 3 and result.changed == 0
    assert_same_outputs(reference, out)
    record = read_manifest(out)["digit002"]
    assert record["relevance_npz_size"] == os.path.getsize(out / record["relevance_npz"])


def test_a_torn_last_manifest_line_costs_nothing(model, images, tmp_path):
    """The next record starts on a fresh line: nothing written after the crash is lost."""
    explainer = NetworkExplainer(model)
    out = tmp_path / "out"
    explain_batch(explainer, [images], out, limit=4, progress=False)
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines) + lines[0][:25])  # a fifth record, cut by a crash
    explain_batch(explainer, [images], out, limit=2, progress=False)
    assert len(read_manifest(out)) == 6
    for line in manifest.read_text().splitlines():
        json.loads(line)  # every line is whole again
    counting = CountingExplainer(explainer)
    explain_batch(counting, [images], out, progress=False)
    assert counting.seen == N - 6


# ------------------------------------------------------------------ item 9: one run per folder
def test_a_second_run_into_the_same_folder_is_refused_and_told_who_holds_it(model, images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(  # another process holding the folder's lock
        [sys.executable, "-c", "import sys, time; from bowlrp.app.run_folder import RunLock\n"
                               "with RunLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)",
         str(out)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by another run \(pid {holder.pid} on .* since "):
            explain_batch(NetworkExplainer(model), [images], out, progress=False)
        assert not (out / "manifest.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    result = explain_batch(NetworkExplainer(model), [images], out, progress=False)  # the OS dropped it
    assert result.ok == N
    with RunLock(out), pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        explain_batch(NetworkExplainer(model), [images], out, progress=False)


# ------------------------------------------------------------------ item 7: colliding names
def test_names_that_differ_by_punctuation_or_case_get_unique_keys(model, tmp_path):
    folder = tmp_path / "images"
    paths = cli_data.write_digits(folder, 5)
    names = ["a b.png", "a_b.png", "a_b-1.png", "A B.png", "a+b.png"]
    for path, name in zip(paths, names):
        os.replace(path, folder / name)
    items = list_images([folder])
    keys = [item.key for item in items]
    assert len({k.casefold() for k in keys}) == 5
    assert list_images([folder]) == items  # stable
    result = explain_batch(NetworkExplainer(model), [folder], tmp_path / "out", progress=False)
    assert result.ok == 5 and len(list((tmp_path / "out" / "relevance").glob("*.npz"))) == 5


# ------------------------------------------------------------------ item 5: decompression bombs
def test_a_decompression_bomb_is_skipped_and_reported(model, images, tmp_path):
    bomb = images / "bomb.png"
    Image.new("L", (6000, 6000)).save(bomb, optimize=True)  # 36 M pixels in a small file
    assert bomb.stat().st_size < 200_000
    start = time.perf_counter()
    with pytest.raises(ValueError, match="too large: 6000x6000 = 36,000,000 pixels"):
        read_image(bomb)
    assert time.perf_counter() - start < 1.0  # refused from the header, nothing decoded
    result = explain_batch(NetworkExplainer(model), [images], tmp_path / "out", progress=False)
    assert result.ok == N and [(k, r[:15]) for k, _, r in result.skipped] == [("bomb", "image too large")]
    small = explain_batch(NetworkExplainer(model), [images], tmp_path / "small", max_pixels=63,
                          progress=False)
    assert small.ok == 0 and all("over the limit of 63" in r for _, _, r in small.skipped[1:])


# ------------------------------------------------------------------ item 8: overflow, CSV cells
# the overflow is the point: numpy's own overflow warnings are expected, the run must report it
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_overflowing_weights_are_reported_never_written_as_nan_maps(model, images, tmp_path):
    from bowlrp.app.adapters import BoWExplainer
    from bowlrp.app.executors import explain_chunk
    from bowlrp.heatmap import Heatmap

    huge = nets.load(cli_data.digits_network(str(tmp_path / "huge.npz")))
    for layer in huge.layers:
        if hasattr(layer, "W"):
            layer.W[...] *= 1e200
    result = explain_batch(NetworkExplainer(huge), [images], tmp_path / "out", progress=False)
    assert result.ok == 0 and len(result.skipped) == N
    assert all("overflow" in reason for _, _, reason in result.skipped)
    assert not list((tmp_path / "out" / "relevance").glob("*.npz"))
    scenes = cli_data.scenes(12, random_state=5)
    bow = cli_data.tiny_bow(scenes.images, scenes.labels)
    # finite weights whose sum overflows (the classifier reads its SVM's coefficients)
    bow.svm_.dual_coef_ = np.full_like(bow.svm_.dual_coef_, 1.7e308)
    assert np.all(bow.dual_coef_ == 1.7e308)
    (key, heatmap, reason), = explain_chunk(BoWExplainer(bow), ["s"], [scenes.images[0]], None, [])
    assert heatmap is None and "overflow" in reason

    class NaNExplainer:  # a model whose map has NaN: Heatmap refuses it, the reason says why
        def explain(self, images, target=None):
            return [Heatmap(np.full((8, 8), np.nan), score=1.0) for _ in images]

    (key, heatmap, reason), = explain_chunk(NaNExplainer(), ["x"], [np.zeros((8, 8))], None, [])
    assert heatmap is None and "64 non-finite" in reason and "overflow" in reason


def test_csv_cells_cannot_become_spreadsheet_formulas(model, tmp_path):
    for text in ("=HYPERLINK(\"x\")", "+1+2", "-cmd", "@SUM(A1)", "'quoted", "plain"):
        assert csv_read(csv_text(text)) == text
        assert not csv_text(text).startswith(("=", "+", "-", "@"))
    assert csv_text("-1.5") == "-1.5" and csv_text("+3") == "+3"  # numbers stay numbers
    folder = tmp_path / "images"
    paths = cli_data.write_digits(folder, 2)
    os.replace(paths[0], folder / "=cmd.png")
    explain_batch(NetworkExplainer(model), [folder], tmp_path / "out", progress=False)
    rows = read_rows(tmp_path / "out")
    assert all(not cell.startswith(("=", "+", "@")) for row in rows for cell in row.values()
               if not _is_number(cell))
    from bowlrp.app.runs import iter_run

    assert sorted(os.path.basename(item.path) for item in iter_run(tmp_path / "out")) == \
        ["=cmd.png", "digit001.png"]


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_a_crafted_table_cannot_make_compare_write_outside_its_folder(model, images, tmp_path):
    from bowlrp.app.runs import compare_runs

    for name in ("a", "b"):
        explain_batch(NetworkExplainer(model), [images], tmp_path / name, progress=False)
    table = tmp_path / "a" / "scores.csv"
    rows = read_rows(tmp_path / "a")
    rows[0]["key"] = "../../escaped"
    with open(table, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match=r"scores.csv, line 2: key '../../escaped'"):
        compare_runs(tmp_path / "a", tmp_path / "b", tmp_path / "cmp" / "out")
    assert not list(tmp_path.rglob("escaped*"))
    rows[0]["key"], rows[0]["relevance_npz"] = "digit000", "/etc/passwd"
    with open(table, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match="not one an explain run writes"):
        compare_runs(tmp_path / "a", tmp_path / "b", tmp_path / "cmp" / "out")


def test_results_to_redo_beyond_the_limit_are_pending_not_stale(model, images, tmp_path):
    """A resumed run with ``limit`` re-explains some of the images whose results cannot be kept; the
    others (an input changed, a result file damaged) are pending: not in scores.csv as ok, not in
    relevances.npz, and the run does not fail on the damaged file (review of issue 15)."""
    explainer = NetworkExplainer(model)
    out = tmp_path / "out"
    explain_batch(explainer, [images], out, progress=False)
    records = read_manifest(out)
    extra = cli_data.write_digits(tmp_path / "more", 2, start=1500)
    shutil.copy(extra[0], images / "digit001.png")  # same path, other bytes
    shutil.copy(extra[1], images / "digit005.png")
    damaged = out / records["digit006"]["relevance_npz"]
    damaged.write_bytes(damaged.read_bytes()[:100])
    result = explain_batch(CountingExplainer(explainer), [images], out, limit=1, progress=False)
    assert result.new == 1 and result.pending == 2 and result.ok == N - 2
    rows = {row["key"]: row for row in read_rows(out)}
    assert rows["digit001"]["status"] == "ok"  # the one the limit let through
    assert rows["digit005"]["status"] == "pending" and rows["digit006"]["status"] == "pending"
    with np.load(out / "relevances.npz") as archive:
        assert "digit005" not in archive.files and "digit006" not in archive.files
    explain_batch(explainer, [images], out, progress=False)
    explain_batch(explainer, [images], tmp_path / "fresh", progress=False)
    assert_same_outputs(tmp_path / "fresh", out)
