"""The ``bowlrp`` command line, end to end, as a user runs it: subprocesses on small generated data
(synthetic scenes and scikit-learn digits written as PNG files, with the bad files real folders
contain), checking the files each command writes and the exit codes scripts rely on."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import nets
from bowlrp.app.adapters import NetworkExplainer
from bowlrp.app.persist import load_model
from bowlrp.heatmap import Heatmap, enlarge
from bowlrp.imageio import read_image
from tests.bowlrp.app import cli_data
from tests.signals import default_sigint

N_SCENES = 20


def bowlrp(*args, timeout=300, check=None):
    """Run ``python -m bowlrp.app.cli ARGS``; returns the CompletedProcess (``check``: expected exit code)."""
    proc = subprocess.run([sys.executable, "-m", "bowlrp.app.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, \
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def run_main(capsys, *args):
    """Run the command line in this process (faster; for the error paths and secondary options).
    Returns (exit code, stdout, stderr)."""
    from bowlrp.app.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Scenes on disk (class folders, masks, CSV), a BoW model fitted by ``bowlrp fit``, a network."""
    root = tmp_path_factory.mktemp("cli")
    written = cli_data.write_scenes(root, N_SCENES)
    # bad files inside the training folder: fit must skip them and say so
    bad = cli_data.write_bad_files(os.path.join(written["train"], "circles"))
    bad["small"] = os.path.join(written["train"], "polygons", "small.png")  # no descriptor fits in it
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(bad["small"])
    model = root / "bow.joblib"
    fit = bowlrp("fit", written["train"], "-o", model, "--vocabulary-size", 16, "--random-state", 0, check=0)
    # the inputs to explain: the scenes, the bad files, and an image too small for any descriptor
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(root / "tiny.png")
    net = cli_data.scene_network(str(root / "net.npz"))
    return {"root": root, **written, "bad": bad, "model": model, "fit": fit, "net": net,
            "tiny": root / "tiny.png"}


# ------------------------------------------------------------------ help and exit codes
def test_help_of_every_command_documents_exit_codes():
    script = os.path.join(os.path.dirname(sys.executable), "bowlrp")  # the installed entry point
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for command in ("demo", "fit", "explain", "evaluate", "compare"):
        assert command in proc.stdout
        sub = bowlrp(command, "--help", check=0)
        assert "exit codes: 0 success" in sub.stdout and "2 usage error" in sub.stdout
    assert "--scheduler" in bowlrp("explain", "--help").stdout
    assert bowlrp("--version", check=0).stdout.startswith("bowlrp ")


def test_usage_errors_exit_2(ws, tmp_path, capsys):
    assert bowlrp().returncode == 2  # no command (as a real process: the exit status itself)
    assert run_main(capsys, "explain", ws["model"])[0] == 2  # missing arguments (argparse)
    assert run_main(capsys, "explain", ws["model"], ws["train"], "-o", tmp_path / "o", "--bogus")[0] == 2
    cases = [
        (("explain", ws["model"], tmp_path / "nowhere", "-o", tmp_path / "o"), "does not exist"),
        (("explain", tmp_path / "none.joblib", ws["train"], "-o", tmp_path / "o"), "model file"),
        (("explain", ws["model"], ws["train"], "-o", tmp_path / "o", "--target", "squares"),
         "unknown target"),
        (("explain", ws["net"], ws["train"], "-o", tmp_path / "o", "--input-shape", "2,x"), "C,H,W"),
        (("explain", ws["net"], ws["train"], "-o", tmp_path / "o", "--composite", "nope"), "composite"),
        (("fit", ws["train"], "-o", tmp_path / "m.joblib", "--set", "colour=red"), "unknown BoWClassifier"),
        (("fit", tmp_path / "nowhere", "-o", tmp_path / "m.joblib"), "does not exist"),
        (("evaluate", ws["model"], tmp_path), "not an explain output folder"),
    ]
    for args, message in cases:
        code, _, err = run_main(capsys, *args)
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err


def test_backend_options_name_what_they_choose(ws, tmp_path, capsys):
    """fit chooses the SIFT implementation (--sift-backend), explain/compare the joblib backend of the
    workers (--parallel-backend); the old --backend still means the one that fits the command, and
    a value of the other kind is a usage error before anything is read."""
    from bowlrp.app.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["fit", "t", "-o", "m", "--sift-backend", "opencv"]).sift_backend == "opencv"
    assert parser.parse_args(["fit", "t", "-o", "m", "--backend", "numba"]).sift_backend == "numba"
    for command in (["explain", "m", "x"], ["compare", "b", "n", "x"]):
        args = parser.parse_args([*command, "-o", "o", "--parallel-backend", "threading"])
        assert args.parallel_backend == "threading"
        assert parser.parse_args([*command, "-o", "o", "--backend", "loky"]).parallel_backend == "loky"
    for args in (("fit", ws["train"], "-o", tmp_path / "m.joblib", "--backend", "loky"),
                 ("fit", ws["train"], "-o", tmp_path / "m.joblib", "--parallel-backend", "loky"),
                 ("explain", ws["model"], ws["train"], "-o", tmp_path / "o", "--backend", "numba"),
                 ("explain", ws["model"], ws["train"], "-o", tmp_path / "o", "--parallel-backend", "x")):
        code, _, err = run_main(capsys, *args)
        assert code == 2 and ("invalid choice" in err or "unrecognized" in err), (args, err)
    assert not os.path.exists(tmp_path / "o")
    fit_help = bowlrp("fit", "--help", check=0).stdout
    explain_help = bowlrp("explain", "--help", check=0).stdout
    assert "--sift-backend" in fit_help and "--parallel-backend" not in fit_help
    assert "--parallel-backend" in explain_help and "--sift-backend" not in explain_help
    assert "--backend " not in fit_help + explain_help  # the old spelling is not advertised


def test_pickled_models_need_trust_pickle(ws, tmp_path, capsys):
    """fit writes the safe format; a joblib/pickle model file is refused unread unless --trust-pickle
    says it is trusted, and the help of every loading command warns what that means."""
    import pickle

    from bowlrp.app.persist import save_model, sniff_format

    assert sniff_format(ws["model"]) == "npz"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    evil = tmp_path / "model.npz"
    evil.write_bytes(pickle.dumps(Evil()))
    code, _, err = run_main(capsys, "explain", evil, ws["train"], "-o", tmp_path / "o")
    assert code == 1 and "--trust-pickle" in err and not (tmp_path / "pwned").exists()
    old = save_model(load_model(ws["model"]), tmp_path / "old.joblib", format="joblib")
    code, _, err = run_main(capsys, "explain", old, ws["train"], "-o", tmp_path / "o")
    assert code == 1 and "--trust-pickle" in err and not (tmp_path / "o" / "scores.csv").exists()
    code, _, _ = run_main(capsys, "explain", old, ws["paths"][0], "-o", tmp_path / "o", "--trust-pickle",
                          "--no-png")
    assert code == 0
    for command in ("explain", "evaluate", "compare"):
        text = " ".join(bowlrp(command, "--help", check=0).stdout.split())
        assert "--trust-pickle" in text and "runs any code" in text


def test_every_usage_error_exits_2_before_any_image_is_read(ws, tmp_path, capsys, monkeypatch):
    from bowlrp.app import image_chunks

    def no_reading(*args, **kwargs):
        raise AssertionError("images were read before the usage error was found")

    monkeypatch.setattr(image_chunks, "read_image", no_reading)  # (where a run reads its images)
    monkeypatch.setattr("bowlrp.imageio.read_images", no_reading)
    (tmp_path / "file").write_text("a file where a folder is expected")
    fit = ("fit", ws["train"], "-o", tmp_path / "m.npz")
    explain = ("explain", ws["model"], ws["train"], "-o", tmp_path / "o")
    net = ("explain", ws["net"], ws["train"], "-o", tmp_path / "o")
    cases = [
        ((*fit, "-j", "0"), "-j/--n-jobs"),
        ((*fit, "--kernel", "rbff"), "rbff"),
        ((*fit, "--vocabulary-size", "0"), "vocabulary_size"),
        ((*fit, "--set", "step=abc"), "step"),
        ((*fit, "--sift-backend", "x"), "invalid choice"),
        (("fit", ws["train"], "-o", tmp_path / "file" / "m.npz"), "is a file"),
        ((*explain, "-j", "0"), "-j/--n-jobs"),
        ((*explain, "--parallel-backend", "x"), "invalid choice"),
        ((*explain, "--composite", "epsilon_plus"), "network models only"),
        ((*explain, "--mean", "0.5"), "network models only"),
        ((*explain, "--report", tmp_path / "r.html", "--report-max", "-1"), "--report-max"),
        ((*explain, "--max-pixels", "0"), "--max-pixels"),
        (("explain", ws["model"], ws["train"], "-o", tmp_path / "file" / "run"), "is a file"),
        (("explain", ws["model"], ws["train"], "-o", tmp_path / "file"), "is a file"),
        ((*net, "--target", "99"), "out of range"),
        ((*net, "--mean", "0.1,0.2"), "one per channel"),
        (("evaluate", ws["model"], tmp_path, "--report-max", "-1"), "--report-max"),
        (("evaluate", ws["model"], tmp_path, "-j", "0"), "-j/--n-jobs"),
    ]
    for args, message in cases:
        code, _, err = run_main(capsys, *args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.npz").exists()


def test_failures_exit_1_with_one_line(ws, tmp_path, capsys):
    import joblib

    broken = tmp_path / "broken.joblib"
    broken.write_bytes(ws["model"].read_bytes()[:200])
    proc = bowlrp("explain", broken, ws["train"], "-o", tmp_path / "o")
    assert proc.returncode == 1 and "not a readable bowlrp model file" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    only_bad = tmp_path / "only_bad"
    cli_data.write_bad_files(only_bad)
    code, _, err = run_main(capsys, "explain", ws["model"], only_bad, "-o", tmp_path / "o2")
    assert code == 1 and "no image could be explained" in err
    from bowlrp.app.persist import save_model

    future = save_model(load_model(ws["model"]), tmp_path / "future.joblib", format="joblib")
    payload = joblib.load(future)
    payload["format_version"] += 1
    joblib.dump(payload, future)
    code, _, err = run_main(capsys, "explain", future, ws["train"], "-o", tmp_path / "o3", "--trust-pickle")
    assert code == 1 and "Upgrade bowlrp" in err
    with np.load(ws["model"], allow_pickle=False) as npz:  # the same for the safe format
        members = {key: npz[key] for key in npz.files}
    document = json.loads(str(members["__bowlrp_model__"]))
    document["format_version"] += 1
    members["__bowlrp_model__"] = np.array(json.dumps(document))
    np.savez(tmp_path / "future.npz", **members)
    code, _, err = run_main(capsys, "explain", tmp_path / "future.npz", ws["train"], "-o", tmp_path / "o3")
    assert code == 1 and "Upgrade bowlrp" in err
    # --strict turns skipped inputs into a failure, after writing the results
    code, _, err = run_main(capsys, "explain", ws["model"], ws["train"], "-o", tmp_path / "o4", "--strict",
                            "--no-png")
    assert code == 1 and "skipped (--strict)" in err and (tmp_path / "o4" / "scores.csv").exists()


# ------------------------------------------------------------------ fit
def test_fit_from_folder_skips_bad_files(ws):
    assert "model saved to" in ws["fit"].stdout
    assert all(path in ws["fit"].stderr for path in ws["bad"].values())
    info = json.loads((ws["root"] / "bow.joblib.json").read_text())
    assert sorted(p for p, _ in info["skipped"]) == sorted(ws["bad"].values())
    assert info["n_train"] == N_SCENES and info["classes"] == ["circles", "polygons"]
    assert "fitted in" in ws["fit"].stderr  # progress of the long steps while fitting
    clf = load_model(ws["model"])
    assert list(clf.classes_) == ["circles", "polygons"] and clf.vocabulary_size == 16
    assert not clf.verbose and not clf.extractor_.verbose  # the saved model explains quietly
    images = [read_image(p) for p in ws["paths"]]
    assert clf.score(images, ws["labels"]) == pytest.approx(info["train_accuracy"])


@pytest.fixture(scope="module")
def csv_fit(ws):
    out = ws["root"] / "csv.joblib"
    proc = bowlrp("fit", ws["csv"], "-o", out, "--vocabulary-size", 8, "--kernel", "chi2", "--holdout", 0.25,
                  "--set", "rank_n=3", check=0)
    return {"model": out, "proc": proc}


def test_fit_from_csv_with_holdout_and_strict(ws, csv_fit, tmp_path, capsys):
    assert "held-out accuracy" in csv_fit["proc"].stdout
    info = json.loads(csv_fit["model"].with_name("csv.joblib.json").read_text())
    assert info["n_train"] + info["n_holdout"] == N_SCENES and info["n_holdout"] == 5
    clf = load_model(csv_fit["model"])
    assert (clf.kernel, clf.vocabulary_size, clf.rank_n) == ("chi2", 8, 3)
    # with --strict the bad files in the class folders fail the run before any fitting
    code, _, err = run_main(capsys, "fit", ws["train"], "-o", tmp_path / "strict.joblib", "--strict")
    assert code == 1 and "skipped (--strict)" in err
    assert not (tmp_path / "strict.joblib").exists()


# ------------------------------------------------------------------ explain
def test_explain_bow_writes_maps_scores_and_report(ws, tmp_path):
    out, page = tmp_path / "run", tmp_path / "page.html"
    proc = bowlrp("explain", ws["model"], ws["train"], ws["tiny"], "-o", out, "--report", page, check=0)
    total = N_SCENES + len(ws["bad"]) + 1
    assert f"explained {N_SCENES} of {total} images" in proc.stdout
    assert f"skipped {len(ws['bad']) + 1} of {total} inputs" in proc.stderr
    assert "smaller than one descriptor" in proc.stderr  # the tiny image: read fine, cannot be explained
    rows = _rows(out / "scores.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(rows) == total and len(ok) == N_SCENES
    clf = load_model(ws["model"])
    relevances = np.load(out / "relevances.npz")
    for row in ok:
        image = read_image(row["path"])
        f = clf.decision_function([image])[0]
        label = clf.predict([image])[0]
        assert row["target"] == label
        expected = f if label == clf.classes_[1] else -f  # binary: classes_[0] explains -f
        assert float(row["score"]) == expected  # the same code path: exactly the decision value
        relevance = relevances[row["key"]]
        assert relevance.shape == image.shape[:2]
        assert abs(relevance.sum() - expected) <= 1e-9 * max(1.0, abs(expected))  # conservation
        png = np.asarray(Image.open(out / row["heatmap_png"]))
        # the rendered map, enlarged by a whole factor (nearest) to >= 256 px
        np.testing.assert_array_equal(png, enlarge(Heatmap.load(out / row["relevance_npz"]).render()))
    assert relevances.files == [r["key"] for r in ok]
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2 * N_SCENES
    assert f"Skipped inputs ({len(ws['bad']) + 1})" in text


def test_explain_given_target_and_network_models(ws, tmp_path, capsys):
    code, _, err = run_main(capsys, "explain", ws["model"], ws["train"], "-o", tmp_path / "pos", "--target",
                            "polygons", "--no-png", "--quiet")
    assert code == 0 and "img/s" not in err  # quiet: no progress, only the skipped files
    rows = [r for r in _rows(tmp_path / "pos" / "scores.csv") if r["status"] == "ok"]
    assert {r["target"] for r in rows} == {"polygons"} and len(rows) == N_SCENES
    assert not any((tmp_path / "pos" / "heatmaps").glob("*.png"))

    # the scene network: input shape (1, 16, 16) read from its first dense layer, images resized
    out = tmp_path / "net"
    code, _, _ = run_main(capsys, "explain", ws["net"], ws["train"], "-o", out, "--composite", "epsilon_plus")
    assert code == 0
    explainer = NetworkExplainer(nets.load(ws["net"]), composite="epsilon_plus")
    rows = [r for r in _rows(out / "scores.csv") if r["status"] == "ok"]
    images = [read_image(r["path"]) for r in rows]
    direct = explainer.explain(images)
    relevances = np.load(out / "relevances.npz")
    for row, heatmap in zip(rows, direct):
        assert float(row["score"]) == heatmap.score and int(row["target"]) == heatmap.target
        np.testing.assert_array_equal(relevances[row["key"]], heatmap.relevance)
        assert heatmap.relevance.shape == (cli_data.NET_SIDE, cli_data.NET_SIDE)
    run = json.loads((out / "run.json").read_text())
    assert run["explainer"]["input_shape"] == [1, 16, 16] and run["explainer"]["composite"] == "epsilon_plus"


def test_explain_onnx_network(ws, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    model = nets.load(ws["net"])
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    nodes, inits, prev = [], [], "x"
    for i, layer in enumerate(dense):
        inits += [numpy_helper.from_array(layer.W, f"W{i}"), numpy_helper.from_array(layer.b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"z{i}"], transB=1))
        prev = f"z{i}"
        if i < len(dense) - 1:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    side = cli_data.NET_SIDE
    graph = helper.make_graph(nodes, "scenes", [helper.make_tensor_value_info("x", TensorProto.DOUBLE,
                                                                              [None, side * side])],
                              [helper.make_tensor_value_info(prev, TensorProto.DOUBLE, [None, 1])],
                              initializer=inits)
    path = tmp_path / "scenes.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    assert run_main(capsys, "explain", path, ws["train"], "-o", tmp_path / "onnx", "--no-png")[0] == 0
    assert run_main(capsys, "explain", ws["net"], ws["train"], "-o", tmp_path / "npz", "--no-png")[0] == 0
    a, b = np.load(tmp_path / "onnx" / "relevances.npz"), np.load(tmp_path / "npz" / "relevances.npz")
    assert a.files == b.files and len(a.files) == N_SCENES + 1  # resized, the small image works here
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=1e-12)


def test_explain_limit_then_resume_equals_one_run(ws, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run_main(capsys, "explain", ws["model"], ws["train"], "-o", full, "--chunk-size", 4)[0] == 0
    proc = bowlrp("explain", ws["model"], ws["train"], "-o", part, "--chunk-size", 4, "--limit", 7, check=0)
    assert "pending" in proc.stdout
    first = {p.name: p.stat().st_mtime_ns for p in (part / "relevance").iterdir()}
    ok_first = len(first)
    code, out, _ = run_main(capsys, "explain", ws["model"], ws["train"], "-o", part, "--chunk-size", 3)
    assert code == 0 and f"({N_SCENES - ok_first} new)" in out  # other chunks: results must not care
    assert _rows(full / "scores.csv") == _rows(part / "scores.csv")
    for name, mtime in first.items():  # finished images were not redone
        assert (part / "relevance" / name).stat().st_mtime_ns == mtime
    a, b = np.load(full / "relevances.npz"), np.load(part / "relevances.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    # the same folder with another target is refused, --overwrite starts over
    code, _, err = run_main(capsys, "explain", ws["model"], ws["train"], "-o", part, "--target", "circles")
    assert code == 2 and "different run" in err
    assert "start over (--overwrite)" in err and "resume=False" not in err  # CLI words for a CLI user
    code, out, _ = run_main(capsys, "explain", ws["model"], ws["train"], "-o", part, "--target", "circles",
                            "--overwrite")
    assert code == 0 and f"({N_SCENES} new)" in out


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(ws, tmp_path):
    out = tmp_path / "run"
    # the same scenes 8 times: a run long enough to interrupt (twice was not, on a fast BLAS kernel:
    # the run had finished, exit status 0, when the signal came)
    copies = 8
    inputs = [ws["train"]] * copies
    command = [sys.executable, "-m", "bowlrp.app.cli", "explain", ws["model"], *inputs, "-o", out,
               "--chunk-size", 1, "--no-png"]
    proc = subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_sigint)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= 3:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "rerun to resume" in stderr
    done = manifest.read_text().count("\n")
    total = copies * (N_SCENES + len(ws["bad"]))
    assert 3 <= done < total and not (out / "scores.csv").exists()
    proc = bowlrp("explain", ws["model"], *inputs, "-o", out, "--chunk-size", 1, "--no-png", check=0)
    lines = manifest.read_text().splitlines()[:done]
    explained_before = sum(json.loads(line)["status"] == "ok" for line in lines)
    assert f"({copies * N_SCENES - explained_before} new)" in proc.stdout
    assert len([r for r in _rows(out / "scores.csv") if r["status"] == "ok"]) == copies * N_SCENES


# ------------------------------------------------------------------ evaluate
def test_evaluate_aopc_and_localization(ws, csv_fit, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, _ = run_main(capsys, "explain", ws["model"], ws["train"], "-o", run, "--target", "polygons",
                          "--no-png")
    assert code == 0
    page = tmp_path / "eval.html"
    proc = bowlrp("evaluate", ws["model"], run, "--masks", ws["masks"], "--region-size", 8, "--steps", 4,
                  "--report", page, check=0)
    assert "AOPC morf" in proc.stdout and "relevance mass accuracy" in proc.stdout
    result = json.loads((run / "evaluation" / "evaluation.json").read_text())
    assert result["n_images"] == N_SCENES and set(result["aopc"]) == {"morf", "lerf", "random"}
    assert result["score_check_max_rel_error"] <= 1e-9  # rescoring the intact image gives the explained f
    per_image = _rows(run / "evaluation" / "aopc.csv")
    assert len(per_image) == N_SCENES
    for order in ("morf", "lerf", "random"):
        mean = np.mean([float(r[f"aopc_{order}"]) for r in per_image])
        assert mean == pytest.approx(result["aopc"][order]["aopc"], rel=1e-12)
        assert len(result["mean_curves"][order]) == 4 + 1
    curves = _rows(run / "evaluation" / "curves.csv")
    assert len(curves) == 5 and float(curves[0]["mean_score_morf"]) == float(curves[0]["mean_score_lerf"])
    positives = sum(label == "polygons" for label in ws["labels"])
    localization = _rows(run / "evaluation" / "localization.csv")
    assert len(localization) == positives  # circle scenes have empty polygon masks: left out
    assert result["localization"]["n_images"] == positives
    for row in localization:
        assert 0.0 <= float(row["mass_accuracy"]) <= 1.0 and 0.0 < float(row["mask_fraction"]) < 1.0
    text = page.read_text()
    assert "<svg" in text and "AOPC" in text and text.count("data:image/png") == 2 * N_SCENES
    # once evaluated, the explain report shows the curves too
    code, _, _ = run_main(capsys, "explain", ws["model"], ws["train"], "-o", run, "--target", "polygons",
                          "--no-png", "--report", tmp_path / "explain.html")
    assert code == 0 and "<svg" in (tmp_path / "explain.html").read_text()
    # another model than the one explained is refused
    code, _, err = run_main(capsys, "evaluate", csv_fit["model"], run)
    assert code == 1 and "different model" in err


def test_evaluate_network_run_uses_its_settings(ws, tmp_path, capsys):
    run = tmp_path / "net"
    code, _, _ = run_main(capsys, "explain", ws["net"], ws["train"], "-o", run, "--no-png", "--batch-size", 4)
    assert code == 0
    code, _, err = run_main(capsys, "evaluate", ws["net"], run, "--region-size", 4, "--steps", 5,
                            "--no-random", "--orders", "morf", "-o", tmp_path / "ev")
    assert code == 0, err
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert set(result["aopc"]) == {"morf"} and result["score_check_max_rel_error"] <= 1e-9
    # two worker processes evaluate the same chunks with the same seeds: the same numbers
    code, _, err = run_main(capsys, "evaluate", ws["net"], run, "--region-size", 4, "--steps", 5,
                            "--no-random", "--orders", "morf", "-o", tmp_path / "ev2", "-j", 2)
    assert code == 0, err
    assert _rows(tmp_path / "ev" / "aopc.csv") == _rows(tmp_path / "ev2" / "aopc.csv")


# ------------------------------------------------------------------ compare
def test_compare_bow_and_network(ws, tmp_path):
    out, page = tmp_path / "cmp", tmp_path / "cmp.html"
    proc = bowlrp("compare", ws["model"], ws["net"], ws["train"], "-o", out, "--bow-target", "polygons",
                  "--report", page, "--shared-scale", check=0)
    assert f"compared {N_SCENES} images" in proc.stdout
    rows = _rows(out / "compare.csv")
    # the small image: only the network (which resizes its inputs) could explain it
    assert len(rows) == N_SCENES + 1
    alone = [r for r in rows if not r["montage"]]
    assert [r["key"] for r in alone] == ["polygons__small"] and alone[0]["bow_score"] == ""
    assert alone[0]["net_score"] != "" and alone[0]["pearson"] == ""
    rows = [r for r in rows if r["montage"]]
    bow_scores = {r["key"]: r for r in _rows(out / "bow" / "scores.csv")}
    for row in rows:
        assert row["bow_target"] == "polygons" and row["bow_score"] == bow_scores[row["key"]]["score"]
        assert -1.0 <= float(row["pearson"]) <= 1.0
        picture = np.asarray(Image.open(out / row["montage"]))
        assert picture.ndim == 3 and picture.shape[1] > 3 * 128  # image | BoW | network
    text = page.read_text()
    assert text.count("data:image/png") == 3 * N_SCENES and "Pearson" in text
    assert "Skipped inputs" in text  # the bad files in the folder are listed


# ------------------------------------------------------------------ demo
@pytest.mark.slow
def test_demo_writes_heatmaps(tmp_path):
    out = tmp_path / "demo"
    bowlrp("demo", "--out", out, "--n-train", 12, "--n-test", 6, "--n-show", 1, "--size", 32, check=0)
    pngs = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
    assert "montage.png" in pngs and len(pngs) >= 3
    assert Image.open(out / "montage.png").size[0] > 0
