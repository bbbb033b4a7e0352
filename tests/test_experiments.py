"""The quick modes of the experiment scripts: they run, write their figures and tables, and the numbers
in the tables obey what the maths guarantees. (The full runs are reported in experiments/results/.)"""

import json
import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")


def _load(out):
    data = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# Experiment")
    return data


def _table(data, section):
    rows = data["tables"][section]
    assert rows, f"empty table {section!r}"
    return rows


def _finite(rows, keys):
    for r in rows:
        for k in keys:
            assert isinstance(r[k], (int, float)) and math.isfinite(r[k]), (k, r)


def test_e1_synthetic_bow_quick(tmp_path):
    from experiments import e1_synthetic_bow

    assert e1_synthetic_bow.main(["--quick", "--out", str(tmp_path)]) == 0
    for name in ("heatmaps.png", "heatmaps_overlay.png", "perturbation_blur.png"):
        assert (tmp_path / name).stat().st_size > 1000
    data = _load(tmp_path)
    # the intersection kernel is sum-decomposable: the heatmaps conserve the SVM score exactly
    assert data["meta"]["max |residual| / max(1, |f|)"] < 1e-9
    loc = _table(data, "Localization")
    _finite(loc, ["mass_accuracy", "rank_accuracy", "pointing_game", "chance"])
    for r in loc:
        assert 0 <= r["mass_accuracy"] <= 1 and 0 < r["chance"] < 1
    pf = _table(data, "Region perturbation")
    assert {(r["method"], r["order"]) for r in pf} == {
        ("BoW-LRP", "morf"),
        ("BoW-LRP", "lerf"),
        ("random", "random"),
    }


def test_e2_mnist_mlp_quick(tmp_path):
    from experiments import e2_mnist_mlp

    assert e2_mnist_mlp.main(["--quick", "--out", str(tmp_path)]) == 0
    for name in ("heatmaps_predicted.png", "heatmaps_wrong_class.png", "perturbation_uniform_morf.png"):
        assert (tmp_path / name).stat().st_size > 1000
    data = _load(tmp_path)
    assert data["meta"]["test accuracy"] > 0.6  # even the quick MLP learns the digits
    summary = {r["method"]: r for r in _table(data, "Summary (AOPC)")}
    _finite(summary.values(), ["AOPC MoRF", "AOPC LeRF", "AOPC random"])
    # for a ReLU network LRP-0 and gradient x input are the same map, hence the same curves
    assert summary["LRP-0"]["AOPC MoRF"] == pytest.approx(summary["gradient x input"]["AOPC MoRF"], rel=1e-9)
    # flipping the most relevant pixels first hurts more than flipping the least relevant first
    for name in ("LRP-0", "LRP-zB+eps"):
        assert summary[name]["AOPC MoRF"] > summary[name]["AOPC LeRF"]
    cons = {r["method"]: r for r in _table(data, "LRP conservation")}
    assert cons["LRP-0"]["mean |f - sum R| / |f|"] < 0.5  # only the biases are absorbed


@pytest.mark.parametrize("data", ["mnist", "scenes"])
def test_e3_bow_vs_net_quick(tmp_path, data):
    from experiments import e3_bow_vs_net

    assert e3_bow_vs_net.main(["--quick", "--data", data, "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"bow_vs_net_{data}.png").stat().st_size > 1000
    tables = _load(tmp_path)["tables"]
    (rows,) = tables.values()
    # MNIST: the MLP of experiment 2; scenes: a small CNN (an MLP on pixels cannot learn them)
    assert {r["model"] for r in rows} == {"BoW/SVM", "MLP" if data == "mnist" else "CNN"}
    _finite(rows, ["AOPC MoRF", "AOPC random", "test accuracy"])
    if data == "mnist":
        # both models learn digits even in the quick run
        assert min(r["test accuracy"] for r in rows) > 0.6
        by = {r["method"]: r for r in rows}
        assert by["BoW-LRP"]["corr. with BoW-LRP map"] == pytest.approx(1.0)
    else:
        _finite(rows, ["mass accuracy", "chance"])


def test_e4_voc_bow_on_a_tiny_tree(tmp_path):
    from experiments import e4_voc_bow
    from tests.datasets.voc_tree import write_tiny_voc

    voc = write_tiny_voc(tmp_path / "voc", nested=True)
    out = tmp_path / "out"
    assert e4_voc_bow.main(["--quick", "--voc", str(voc.parent), "--out", str(out)]) == 0
    assert (out / "heatmaps.png").stat().st_size > 1000
    data = _load(out)
    rows = {r["class"]: r for r in _table(data, "Relevance in the boxes, per class")}
    assert set(rows) == {"cat", "dog", "person"}
    for r in rows.values():
        assert r["max |residual|"] < 1e-9 and 0 <= r["mass_accuracy"] <= 1
    assert rows["cat"]["explained images"] == 2
    # a missing folder is a clear exit code, not a traceback
    assert e4_voc_bow.main(["--quick", "--voc", str(tmp_path / "none"), "--out", str(out)]) == 2


def _tiny_onnx(path, rng):
    """Conv(2 filters, 3x3, pad 1) -> Relu -> MaxPool 2 -> Flatten -> Gemm(4 classes) on 1x8x8 input."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    W1 = rng.normal(size=(2, 1, 3, 3)).astype(np.float32)
    b1 = rng.normal(size=2).astype(np.float32) * 0.1
    W2 = rng.normal(size=(4, 32)).astype(np.float32)
    b2 = rng.normal(size=4).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Conv", ["x", "W1", "b1"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "W2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(a, n) for a, n in ((W1, "W1"), (b1, "b1"), (W2, "W2"), (b2, "b2"))],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_e5_onnx_heatmaps_on_a_tiny_model(tmp_path):
    from experiments import e5_onnx_heatmaps

    model = tmp_path / "tiny.onnx"
    _tiny_onnx(model, np.random.default_rng(0))
    (tmp_path / "labels.txt").write_text("zero\none\ntwo\nthree\n")
    out = tmp_path / "out"
    argv = [
        "--quick",
        "--model",
        str(model),
        "--out",
        str(out),
        "--top",
        "2",
        "--labels",
        str(tmp_path / "labels.txt"),
    ]
    assert e5_onnx_heatmaps.main(argv) == 0
    assert (out / "heatmaps.png").stat().st_size > 1000
    data = _load(out)
    rows = _table(data, "Explained logits")
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["logit"] >= rows[1]["logit"]
    assert {r["class"] for r in rows} <= {"zero", "one", "two", "three"}
    assert data["meta"]["composite"] == "epsilon_gamma_box"
    for r in rows:  # the relevance plus what bias and stabilisers absorbed is the logit
        assert r["sum R"] + r["residual (bias, eps)"] == pytest.approx(r["logit"], rel=1e-9, abs=1e-9)
    assert e5_onnx_heatmaps.main(["--model", str(tmp_path / "absent.onnx"), "--out", str(out)]) == 2
