"""Saving and loading models: estimators (the safe NPZ format; versioned joblib for trusted files),
networks (nets NPZ, ONNX, LRP Toolbox text).

A loaded model must predict and explain bit for bit like the saved one; files from another format
version, damaged files and files that are not models are refused with a message that says why;
nothing in a model file runs unless the caller says the file is trusted."""

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
    folder = tmp_path_factory.mktemp("persist")
    save_model(clf, folder / "bow.npz")
    save_model(clf, folder / "bow.joblib", format="joblib")
    return {"clf": clf, "path": folder / "bow.joblib", "safe": folder / "bow.npz",
            "test": list(data.images[12:])}


def _payload(path):
    return joblib.load(path)


@pytest.mark.parametrize("which", ["safe", "path"])
def test_bow_round_trip_predicts_and_explains_identically(fitted, which):
    clf, test = fitted["clf"], fitted["test"]
    loaded = load_model(fitted[which], trusted=which == "path")
    assert type(loaded) is type(clf) and loaded is not clf
    np.testing.assert_array_equal(loaded.decision_function(test), clf.decision_function(test))
    before, after = clf.explain(test), loaded.explain(test)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.relevance, b.relevance)
        assert (a.score, a.target, a.residual) == (b.score, b.target, b.residual)
    header = read_header(fitted["path"], trusted=True)
    assert header["format"] == persist.FORMAT_NAME and header["format_version"] == persist.FORMAT_VERSION
    assert header["class"] == "bowlrp.bow.classifier.BoWClassifier" and "model" not in header
    safe = read_header(fitted["safe"])
    assert safe["format"] == persist.SAFE_FORMAT_NAME
    assert safe["format_version"] == persist.SAFE_FORMAT_VERSION
    assert safe["class"] == header["class"] and "state" not in safe


def test_newer_format_is_refused_before_unpickling(fitted, tmp_path):
    payload = _payload(fitted["path"])
    payload["format_version"] = persist.FORMAT_VERSION + 1
    payload["bowlrp_version"] = "9.9.9"
    payload["model"] = b"not even a pickle"  # never touched: the header check comes first
    joblib.dump(payload, tmp_path / "future.joblib")
    with pytest.raises(IncompatibleModelError, match=r"bowlrp 9\.9\.9 .* format 2.*Upgrade bowlrp"):
        load_model(tmp_path / "future.joblib", trusted=True)


def test_retired_format_is_refused(fitted, tmp_path, monkeypatch):
    monkeypatch.setattr(persist, "MIN_FORMAT_VERSION", persist.FORMAT_VERSION + 1)
    monkeypatch.setattr(persist, "FORMAT_VERSION", persist.FORMAT_VERSION + 1)
    with pytest.raises(IncompatibleModelError, match="no longer reads.*Re-fit"):
        load_model(fitted["path"], trusted=True)


def test_model_that_cannot_be_unpickled_names_the_versions(fitted, tmp_path):
    payload = _payload(fitted["path"])
    payload["model"] = payload["model"][: len(payload["model"]) // 3]
    joblib.dump(payload, tmp_path / "cut.joblib")
    with pytest.raises(IncompatibleModelError,
                       match="saved by bowlrp .* scikit-learn .* cannot be unpickled"):
        load_model(tmp_path / "cut.joblib", trusted=True)


def test_damaged_and_foreign_files_are_refused(fitted, tmp_path):
    data = fitted["path"].read_bytes()
    (tmp_path / "truncated.joblib").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable bowlrp model file"):
        load_model(tmp_path / "truncated.joblib", trusted=True)
    (tmp_path / "noise.joblib").write_bytes(np.random.default_rng(0).bytes(500))
    for trusted in (False, True):
        with pytest.raises(ValueError, match="not a readable bowlrp model file"):
            load_model(tmp_path / "noise.joblib", trusted=trusted)
    joblib.dump({"weights": np.ones(3)}, tmp_path / "dict.joblib")
    with pytest.raises(ValueError, match="not a bowlrp model"):
        load_model(tmp_path / "dict.joblib", trusted=True)
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "missing.joblib")
    with pytest.raises(ValueError, match="not a bowlrp model saved by save_model"):
        read_header(tmp_path / "dict.joblib", trusted=True)


def test_bare_joblib_dump_loads_with_a_warning(fitted, tmp_path):
    joblib.dump(fitted["clf"], tmp_path / "bare.joblib")
    with pytest.warns(UserWarning, match="no bowlrp format header"):
        loaded = load_model(tmp_path / "bare.joblib", trusted=True)
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
    save_model(fitted["clf"], target, format="joblib")
    before = target.read_bytes()

    def broken_dump(value, filename, **kwargs):
        if isinstance(filename, io.BytesIO):
            return real_dump(value, filename, **kwargs)
        filename.write(b"half a file")  # save_model hands over the open temporary file
        raise KeyboardInterrupt

    real_dump = joblib.dump
    monkeypatch.setattr(persist.joblib, "dump", broken_dump)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        save_model(fitted["clf"], target, format="joblib")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.joblib"]

    def broken_savez(fh, **members):
        fh.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(persist.np, "savez_compressed", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        save_model(fitted["clf"], target)  # the safe format: same guarantee
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


# ------------------------------------------------------------------ nothing in a model file runs untrusted
class _Evil:
    """Unpickling this creates a folder: proof that the file's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def _evil_files(folder, marker):
    """The same malicious object as every kind of pickle bowlrp could meet, under every suffix."""
    import pickle

    evil = _Evil(marker)
    blobs = {f"pickle{p}": pickle.dumps(evil, protocol=p) for p in (0, 2, 4, 5)}
    for name, compress in (("joblib", 0), ("joblib-zlib", 3), ("joblib-gzip", ("gzip", 3))):
        buffer = io.BytesIO()
        joblib.dump(evil, buffer, compress=compress)
        blobs[name] = buffer.getvalue()
    header = {"format": persist.FORMAT_NAME, "format_version": persist.FORMAT_VERSION, "model": evil}
    buffer = io.BytesIO()
    joblib.dump(header, buffer, compress=3)
    blobs["bowlrp-header"] = buffer.getvalue()
    paths = []
    for name, blob in blobs.items():
        for suffix in (".npz", ".joblib", ".pkl", ".onnx", ".txt", ".json", ".bin", ""):
            path = folder / f"{name}{suffix}"
            path.write_bytes(blob)
            paths.append(path)
    return paths


def test_a_malicious_pickle_never_runs_whatever_its_name(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "models"
    folder.mkdir()
    for path in _evil_files(folder, marker):
        with pytest.raises(ValueError) as info:
            load_model(path)
        assert str(path) in str(info.value)
        with pytest.raises(ValueError):
            read_header(path)
        assert not marker.exists(), f"loading {path.name} ran code from the file"
    with pytest.raises(persist.UntrustedModelError, match="trusted=True.*--trust-pickle"):
        load_model(folder / "joblib.npz")
    # the check is real: the same file does run when the caller says it is trusted
    with pytest.raises(ValueError):
        load_model(folder / "pickle4.bin", trusted=True)
    assert marker.exists()


def _safe_file(path, state, arrays=None):
    document = {"format": persist.SAFE_FORMAT_NAME, "format_version": 1, "state": state}
    np.savez(path, __bowlrp_model__=np.array(__import__("json").dumps(document)), **(arrays or {}))
    return path


def test_the_safe_format_names_only_bowlrp_and_nets_estimators(fitted, tmp_path):
    for name in ("posix:mkdir", "os:system", "builtins:eval", "bowlrp.app.persist:save_model",
                 "bowlrp.heatmap:Heatmap", "bowlrp.bow.classifier:__class__", "nets.layers:Dense",
                 "bowlrp.__main__:X", "bowlrp.app._server_warmup:X"):  # importing either would run code
        path = _safe_file(tmp_path / "crafted.npz", {"estimator": name, "state": {}})
        with pytest.raises(ValueError, match="not a readable bowlrp model file"):
            load_model(path)
    for depth in (200, 100_000):  # nested lists: deeper than the decoder allows, deeper than the stack
        state = "[" * depth + "0" + "]" * depth
        text = f'{{"format": "{persist.SAFE_FORMAT_NAME}", "format_version": 1, "state": {state}}}'
        np.savez(tmp_path / "deep.npz", __bowlrp_model__=np.array(text))
        with pytest.raises(ValueError, match="not a readable bowlrp model file"):
            load_model(tmp_path / "deep.npz")
    # every member is plain numpy: readable without allow_pickle
    with np.load(fitted["safe"], allow_pickle=False) as npz:
        assert all(npz[key].dtype != object for key in npz.files)
    data = fitted["safe"].read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable bowlrp model file"):
        load_model(tmp_path / "cut.npz")
    future = _safe_file(tmp_path / "future.npz", {"estimator": "x"})
    with np.load(future) as npz:
        document = __import__("json").loads(str(npz["__bowlrp_model__"]))
    document["format_version"] = 99
    np.savez(future, __bowlrp_model__=np.array(__import__("json").dumps(document)))
    with pytest.raises(IncompatibleModelError, match="safe model format 99.*Upgrade"):
        load_model(future)


def test_safe_files_with_foreign_members_or_numpy_scalars(fitted, tmp_path):
    # a member that is not an .npy file comes back from np.load as bytes: a clear error, not AttributeError
    import zipfile

    crafted = _safe_file(tmp_path / "raw.npz", {"estimator": "x", "state": {}})
    with zipfile.ZipFile(crafted, "a") as zf:
        zf.writestr("raw_member", b"not an array")
    with pytest.raises(ValueError, match="not a readable bowlrp model file.*not arrays"):
        load_model(crafted)
    # numpy scalars (NaN too) keep their dtype through the safe format
    clf = load_model(fitted["safe"])
    clf.note_ = np.float64("nan")
    clf.count_ = np.int32(3)
    save_model(clf, tmp_path / "scalars.npz")
    again = load_model(tmp_path / "scalars.npz")
    assert np.isnan(again.note_) and type(again.note_) is np.float64 and type(again.count_) is np.int32


def test_a_joblib_file_of_the_old_layout_loads_when_trusted(fitted, tmp_path, monkeypatch):
    """Files written before the layered layout name bowlrp.pipeline, bowlrp.features, bowlrp.svm...:
    written here exactly so (the classes pickled under their old module paths), they load with the
    paths mapped and explain bit for bit as before."""
    import importlib
    import sys

    from bowlrp.app.trusted_pickle import LEGACY_MODULES

    for old, new in LEGACY_MODULES.items():
        if not new.startswith("bowlrp.bow."):
            continue
        module = importlib.import_module(new)
        monkeypatch.setitem(sys.modules, old, module)  # so that pickle finds the class it names
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__ == new:
                monkeypatch.setattr(value, "__module__", old)
    path = tmp_path / "old.joblib"
    save_model(fitted["clf"], path, format="joblib")
    monkeypatch.undo()
    payload = joblib.load(path)
    assert payload["class"] == "bowlrp.pipeline.BoWClassifier"
    assert b"bowlrp.pipeline" in payload["model"] and b"bowlrp.bow.classifier" not in payload["model"]
    assert b"bowlrp.svm" in payload["model"] and b"bowlrp.features" in payload["model"]
    with pytest.raises(ModuleNotFoundError):
        joblib.load(io.BytesIO(payload["model"]))  # plain unpickling cannot find the old modules
    loaded = load_model(path, trusted=True)
    for a, b in zip(fitted["clf"].explain(fitted["test"]), loaded.explain(fitted["test"])):
        np.testing.assert_array_equal(a.relevance, b.relevance)
        assert (a.score, a.residual) == (b.score, b.residual)


def test_model_files_get_the_umask_mode(fitted, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_model(fitted["clf"], tmp_path / "m.npz")
        save_model(fitted["clf"], tmp_path / "m.joblib", format="joblib")
        save_model(nets.load(cli_data.digits_network(str(tmp_path / "d.npz"))), tmp_path / "net.npz")
    finally:
        os.umask(old)
    for name in ("m.npz", "m.joblib", "net.npz"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name


def test_conv_net_classifier_round_trips_in_the_safe_format(tmp_path):
    from nets.train import ConvNetClassifier

    X, y = cli_data.digits_data(120)
    images = X.reshape(-1, 1, 8, 8)
    clf = ConvNetClassifier([("conv", 4, 3), "relu", "global_maxpool"], epochs=2, random_state=0)
    clf.fit(images[:100], y[:100])
    path = save_model(clf, tmp_path / "cnn.npz")
    loaded = load_model(path)
    assert type(loaded) is ConvNetClassifier and loaded.get_params() == clf.get_params()
    test = images[100:]
    np.testing.assert_array_equal(loaded.decision_function(test), clf.decision_function(test))
    a = nets.LRP(clf.model_, "epsilon_plus").relevance(images[100:], 1)
    b = nets.LRP(loaded.model_, "epsilon_plus").relevance(images[100:], 1)
    np.testing.assert_array_equal(a, b)
    assert loaded.loss_curve_ == clf.loss_curve_ and loaded.input_shape_ == clf.input_shape_
