"""A network from the command line only: ``bowlrp fit --model cnn`` next to ``--model bow`` on the
same class folders, then ``compare``/``explain`` with neither Python nor ``--input-shape``; the
network's class names are in its file, its tables and its report. Plus the small frictions of the
``fit`` command line (defaults in --help, a typo shows the subcommand's usage)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bowlrp.app.adapters import NetworkExplainer
from bowlrp.app.persist import load_model
from bowlrp.imageio import read_image
from nets.train import ConvNetClassifier
from tests.bowlrp.app import cli_data
from tests.bowlrp.app.test_cli import _rows, bowlrp

N = 24  # scenes: 18 to train, 6 held out (--holdout 0.25)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cnn")
    data = cli_data.write_scenes(root, N)
    bow = bowlrp("fit", data["train"], "-o", root / "bow.npz", "--vocabulary-size", 16, "--holdout", 0.25,
                 check=0)
    cnn = bowlrp("fit", data["train"], "-o", root / "cnn.npz", "--model", "cnn", "--epochs", 8,
                 "--augment", "flips", "--holdout", 0.25, check=0)
    return {"root": root, **data, "bow": root / "bow.npz", "cnn": root / "cnn.npz", "bow_fit": bow,
            "cnn_fit": cnn}


def test_fit_cnn_reports_held_out_accuracy_like_the_bow_fit(fitted):
    for proc, path in ((fitted["bow_fit"], fitted["bow"]), (fitted["cnn_fit"], fitted["cnn"])):
        assert "(classes: circles, polygons; 18 training images; 0 skipped)" in proc.stdout
        info = json.loads(open(f"{path}.json").read())
        assert f"held-out accuracy: {info['holdout_accuracy']:.3f} on 6 images" in proc.stdout
        assert info["classes"] == ["circles", "polygons"] and info["n_holdout"] == 6
    # 40 x 40 scenes give 49 features with the default grid: the BoW fit says so, in one line
    warning = "bowlrp fit: warning: 18 of 18 images are too small for the feature grid"
    assert warning in fitted["bow_fit"].stderr
    assert "CoarseGridWarning" not in fitted["bow_fit"].stderr
    assert "epoch   8" in fitted["cnn_fit"].stderr and "epoch" not in fitted["cnn_fit"].stdout  # progress
    model = load_model(fitted["cnn"])  # the safe format: classes and input shape are in the file
    assert isinstance(model, ConvNetClassifier) and model.classes_.tolist() == ["circles", "polygons"]
    assert model.input_shape_ == (1, cli_data.SCENE_SIZE, cli_data.SCENE_SIZE)
    assert json.loads(open(f"{fitted['cnn']}.json").read())["input_shape"] == [1, 40, 40]


def test_compare_a_bow_model_and_a_cli_network_from_the_command_line(fitted):
    out, page = fitted["root"] / "cmp", fitted["root"] / "cmp.html"
    proc = bowlrp("compare", fitted["bow"], fitted["cnn"], fitted["train"], "-o", out, "--report", page,
                  check=0)
    assert f"compared {N} images" in proc.stdout
    rows = _rows(out / "compare.csv")
    assert len(rows) == N and {r["net_target"] for r in rows} <= {"circles", "polygons"}  # names, not 0/1
    net = _rows(out / "network" / "scores.csv")
    model = load_model(fitted["cnn"])
    for row in net[:5]:  # the score is the logit of the named class, as the model computes it
        image = read_image(row["path"])
        x = np.asarray(image, dtype=np.float64)[None, None] / 255.0
        logit = model.model_(x)[0, list(model.classes_).index(row["target"])]
        assert float(row["score"]) == pytest.approx(logit, abs=1e-9)
    text = page.read_text()
    assert "network target" in text and ">polygons<" in text
    # true labels (the class folders) next to every prediction, for both models
    verdicts = text.count("<b class='right'>correct</b>") + text.count("<b class='wrong'>wrong</b>")
    assert verdicts == 2 * N


def test_explain_a_named_class_of_a_cli_network(fitted, tmp_path):
    out = tmp_path / "ex"
    bowlrp("explain", fitted["cnn"], fitted["csv"], "-o", out, "--target", "polygons", "--report",
           tmp_path / "r.html", check=0)
    rows = _rows(out / "scores.csv")
    assert len(rows) == N and {r["target"] for r in rows} == {"polygons"}
    explainer = NetworkExplainer(load_model(fitted["cnn"]))
    assert explainer.classes == ["circles", "polygons"] and explainer.input_shape == (1, 40, 40)
    prepared = explainer.prepare([read_image(rows[0]["path"])])
    score = explainer.score_function("polygons")(prepared)[0]
    assert float(rows[0]["score"]) == pytest.approx(score, abs=1e-9)
    text = (tmp_path / "r.html").read_text()
    assert "true label polygons" in text and "true label circles" in text  # a given target: no verdict
    bowlrp("explain", fitted["cnn"], fitted["csv"], "-o", tmp_path / "bad", "--target", "1", check=2)


def test_fit_command_line_frictions(fitted, tmp_path):
    helptext = bowlrp("fit", "--help", check=0).stdout
    assert "visual words per channel (default: 256)" in helptext and "(default: 'small_cnn')" in helptext
    assert "--read-mode {auto,gray,rgb}\n                        how images are read" in helptext
    # a typo in a subcommand's option: that subcommand's usage, exit 2
    typo = bowlrp("fit", fitted["train"], "-o", tmp_path / "m.npz", "--vocabulary-sise", 3, check=2)
    assert typo.stderr.startswith("usage: bowlrp fit ")
    assert "unrecognized arguments: --vocabulary-sise" in typo.stderr
    wrong = bowlrp("fit", fitted["train"], "-o", tmp_path / "m.npz", "--model", "cnn", "--kernel", "chi2",
                   check=2)
    assert "--kernel is not a parameter of ConvNetClassifier" in wrong.stderr
    wrong = bowlrp("fit", fitted["train"], "-o", tmp_path / "m.npz", "--epochs", 3, check=2)
    assert "--epochs is not a parameter of BoWClassifier" in wrong.stderr
