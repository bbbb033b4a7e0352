"""Saving and loading models: BoW pipelines (versioned joblib), networks (nets NPZ, ONNX).

A loaded model must predict and explain bit for bit like the saved one; files from another format
version, damaged files and files that are not models are refused with a message that says why."""

from __future__ import annotations

import io
import warnings

import joblib
import numpy as np
import pytest

import nets
from bowlrp.app import persist
from bowlrp.app.persist import IncompatibleModelError, load_model, read_header, save_model
from tests.bowlrp.app import cli_data


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    data = cli_data.scenes(16, random_state=3)
    clf = cli_data.tiny_bow(data.images[:12], data.labels[:12])
    path = tmp_path_factory.mktemp("persist") / "bow.joblib"
    save_model(clf, path)
    return {"clf": clf, "path": path, "test": list(data.images[12:])}


def _payload(path):
    return joblib.load(path)


def test_bow_round_trip_predicts_and_explains_identically(fitted):
    clf, test = fitted["clf"], fitted["test"]
    loaded = load_model(fitted["path"])
    assert type(loaded) is type(clf) and loaded is not clf
    np.testing.assert_array_equal(loaded.decision_function(test), clf.decision_function(test))
    before, after = clf.explain(test), loaded.explain(test)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.relevance, b.relevance)
        assert (a.score, a.target, a.residual) == (b.score, b.target, b.residual)
    header = read_header(fitted["path"])
    assert header["format"] == persist.FORMAT_NAME and header["format_version"] == persist.FORMAT_VERSION
    assert header["class"] == "bowlrp.bow.classifier.BoWClassifier" and "model" not in header


def test_newer_format_is_refused_before_unpickling(fitted, tmp_path):
    payload = _payload(fitted["path"])
    payload["format_version"] = persist.FORMAT_VERSION + 1
    payload["bowlrp_version"] = "9.9.9"
    payload["model"] = b"not even a pickle"  # never touched: the header check comes first
    joblib.dump(payload, tmp_path / "future.joblib")
    with pytest.raises(IncompatibleModelError, match=r"bowlrp 9\.9\.9 .* format 2.*Upgrade bowlrp"):
        load_model(tmp_path / "future.joblib")


def test_retired_format_is_refused(fitted, tmp_path, monkeypatch):
    monkeypatch.setattr(persist, "MIN_FORMAT_VERSION", persist.FORMAT_VERSION + 1)
    monkeypatch.setattr(persist, "FORMAT_VERSION", persist.FORMAT_VERSION + 1)
    with pytest.raises(IncompatibleModelError, match="no longer reads.*Re-fit"):
        load_model(fitted["path"])


def test_model_that_cannot_be_unpickled_names_the_versions(fitted, tmp_path):
    payload = _payload(fitted["path"])
    payload["model"] = payload["model"][: len(payload["model"]) // 3]
    joblib.dump(payload, tmp_path / "cut.joblib")
    with pytest.raises(IncompatibleModelError,
                       match="saved by bowlrp .* scikit-learn .* cannot be unpickled"):
        load_model(tmp_path / "cut.joblib")


def test_damaged_and_foreign_files_are_refused(fitted, tmp_path):
    data = fitted["path"].read_bytes()
    (tmp_path / "truncated.joblib").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable bowlrp model file"):
        load_model(tmp_path / "truncated.joblib")
    (tmp_path / "noise.joblib").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ValueError, match="not a readable bowlrp model file"):
        load_model(tmp_path / "noise.joblib")
    joblib.dump({"weights": np.ones(3)}, tmp_path / "dict.joblib")
    with pytest.raises(ValueError, match="not a bowlrp model"):
        load_model(tmp_path / "dict.joblib")
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "missing.joblib")
    with pytest.raises(ValueError, match="not a bowlrp model saved by save_model"):
        read_header(tmp_path / "dict.joblib")


def test_bare_joblib_dump_loads_with_a_warning(fitted, tmp_path):
    joblib.dump(fitted["clf"], tmp_path / "bare.joblib")
    with pytest.warns(UserWarning, match="no bowlrp format header"):
        loaded = load_model(tmp_path / "bare.joblib")
    np.testing.assert_array_equal(loaded.decision_function(fitted["test"]),
                                  fitted["clf"].decision_function(fitted["test"]))


def test_save_refuses_unfitted_and_foreign_models(tmp_path):
    from sklearn.exceptions import NotFittedError
    from sklearn.linear_model import LogisticRegression

    from bowlrp.bow.classifier import BoWClassifier

    with pytest.raises(NotFittedError):
        save_model(BoWClassifier(), tmp_path / "m.joblib")
    with pytest.raises(TypeError, match="BoWClassifier or a nets.Sequential"):
        save_model(LogisticRegression(), tmp_path / "m.joblib")
    assert not (tmp_path / "m.joblib").exists()


def test_networks_round_trip_through_our_format(tmp_path):
    path = cli_data.digits_network(str(tmp_path / "digits.npz"))
    model = nets.load(path)
    save_model(model, tmp_path / "again.npz")
    loaded = load_model(tmp_path / "again.npz")
    X, _ = cli_data.digits_data(50)
    np.testing.assert_array_equal(loaded(X), model(X))
    a, b = nets.LRP(model, "epsilon_plus").relevance(X, 3), nets.LRP(loaded, "epsilon_plus").relevance(X, 3)
    np.testing.assert_array_equal(a, b)


def test_onnx_networks_load(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    W1, b1 = rng.normal(size=(64, 12)), rng.normal(size=12)
    W2, b2 = rng.normal(size=(12, 3)), rng.normal(size=3)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "W2", "b2"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 3])],
        initializer=[numpy_helper.from_array(a, n)
                     for a, n in ((W1, "W1"), (b1, "b1"), (W2, "W2"), (b2, "b2"))])
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    model = load_model(path)
    X, _ = cli_data.digits_data(10)
    np.testing.assert_allclose(model(X), np.maximum(X @ W1 + b1, 0) @ W2 + b2, rtol=1e-12)


def test_saving_is_atomic(fitted, tmp_path, monkeypatch):
    """An interrupted save leaves the previous model file intact (write elsewhere, then rename)."""
    target = tmp_path / "model.joblib"
    save_model(fitted["clf"], target)
    before = target.read_bytes()

    def broken_dump(value, filename, **kwargs):
        if isinstance(filename, io.BytesIO):
            return real_dump(value, filename, **kwargs)
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise KeyboardInterrupt

    real_dump = joblib.dump
    monkeypatch.setattr(persist.joblib, "dump", broken_dump)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        save_model(fitted["clf"], target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.joblib"]


def test_lrp_toolbox_text_networks_load(tmp_path):
    rng = np.random.default_rng(1)
    W1, b1, W2, b2 = rng.normal(size=(4, 3)), rng.normal(size=3), rng.normal(size=(3, 2)), rng.normal(size=2)

    def line(a):
        return " ".join(repr(float(v)) for v in np.ravel(a))

    path = tmp_path / "mlp.txt"  # the toolbox stores W as (in, out), row-major
    path.write_text(f"Linear 4 3\n{line(W1)}\n{line(b1)}\nRect\nLinear 3 2\n{line(W2)}\n{line(b2)}\n")
    model = load_model(path)
    X = rng.normal(size=(5, 4))
    np.testing.assert_allclose(model(X), np.maximum(X @ W1 + b1, 0) @ W2 + b2, rtol=1e-12)
