"""The nets model file: exact round trip of every layer type, and clear errors for damaged files."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

import nets
from nets.io import FORMAT_VERSION


def every_layer_model(dtype, rng):
    def p(*shape):
        return rng.normal(size=shape).astype(dtype)

    def pos(*shape):
        return rng.uniform(0.5, 2.0, size=shape).astype(dtype)

    return nets.Sequential(
        [
            nets.BatchNorm2D(pos(2), p(2), p(2), pos(2), eps=1e-3),
            nets.Conv2D(p(4, 2, 3, 3), p(4), stride=(1, 2), padding=(1, 0)),
            nets.LeakyReLU(0.125),
            nets.MaxPool2D(2, stride=1, padding=1),
            nets.AvgPool2D((2, 2), stride=1, padding=1, count_include_pad=False),
            nets.Conv2D(p(3, 4, 1, 1)),  # no bias
            nets.Tanh(),
            nets.GlobalAvgPool2D(),
            nets.Dense(p(6, 3), p(6)),
            nets.BatchNorm1D(pos(6), p(6), p(6), pos(6)),
            nets.Sigmoid(),
            nets.Dropout(0.3),
            nets.Dense(p(5, 6)),
            nets.ReLU(),
            nets.Flatten(),
            nets.Dense(p(4, 5), p(4)),
            nets.Softmax(),
        ],
        names=[f"layer-{i}" for i in range(17)],
    )


@pytest.fixture
def rng():
    return np.random.default_rng(11)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_round_trip_is_exact_for_every_layer_type(tmp_path, rng, dtype):
    model = every_layer_model(dtype, rng)
    path = tmp_path / "model.npz"
    assert model.save(path) == str(path)
    loaded = nets.load(path)
    assert loaded.names == model.names
    assert loaded.get_config() == model.get_config()
    for a, b in zip(model.layers, loaded.layers):
        assert type(a) is type(b)
        arrays_a, arrays_b = a.get_arrays(), b.get_arrays()
        assert arrays_a.keys() == arrays_b.keys()
        for key in arrays_a:
            assert arrays_b[key].dtype == arrays_a[key].dtype
            assert np.array_equal(arrays_b[key], arrays_a[key])
    X = rng.normal(size=(3, 2, 7, 9)).astype(dtype)
    assert np.array_equal(loaded(X), model(X))  # bit-identical outputs
    assert loaded.dtype == model.dtype


def test_exact_path_kept_overwrite_and_no_temp_files(tmp_path, rng):
    model = nets.Sequential([nets.Dense(rng.normal(size=(2, 3)))])
    path = tmp_path / "weights.model"  # no .npz appended behind the user's back
    nets.save_model(model, path)
    nets.save_model(nets.Sequential([nets.Dense(np.ones((2, 3)))]), path)  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["weights.model"]
    assert np.array_equal(nets.load(path).layers[0].W, np.ones((2, 3)))
    # a plain NPZ without pickles: numpy can list it with allow_pickle=False
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {"__architecture__", "layer0/W"}


def test_save_rejects_non_models(tmp_path):
    with pytest.raises(TypeError, match="nets.Sequential"):
        nets.save_model([nets.ReLU()], tmp_path / "x.npz")


# ------------------------------------------------------------------------------------------------
def _members(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _write_members(path, members):
    with open(path, "wb") as f:
        np.savez(f, **members)


@pytest.fixture
def saved(tmp_path, rng):
    model = every_layer_model(np.float64, rng)
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path


def test_truncated_files_are_refused(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="corrupt|truncated|not a nets model"):
            nets.load(bad)


def test_corrupted_weight_bytes_are_detected(saved, tmp_path):
    model, path = saved
    data = bytearray(path.read_bytes())
    W = model.layers[1].W
    at = bytes(data).find(W.tobytes())  # the conv weights are stored verbatim
    assert at > 0
    data[at + 5] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC|corrupt"):
        nets.load(bad)


def test_any_damaged_byte_gives_an_error_or_the_same_model(saved, tmp_path, rng):
    # the promise: never a silently different model
    model, path = saved
    data = path.read_bytes()
    X = rng.normal(size=(2, 2, 7, 9))
    expected = model(X)
    for k, pos in enumerate(rng.choice(len(data), size=40, replace=False)):
        damaged = bytearray(data)
        damaged[pos] ^= 1 << int(rng.integers(8))
        bad = tmp_path / f"d{k}.npz"
        bad.write_bytes(bytes(damaged))
        try:
            loaded = nets.load(bad)
        except ValueError:
            continue
        assert np.array_equal(loaded(X), expected)


def test_newer_format_version_is_refused(saved):
    _, path = saved
    members = _members(path)
    arch = json.loads(str(members["__architecture__"]))
    arch["version"] = FORMAT_VERSION + 1
    members["__architecture__"] = np.array(json.dumps(arch))
    _write_members(path, members)
    with pytest.raises(ValueError, match=f"newer version of nets .*version {FORMAT_VERSION + 1}"):
        nets.load(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m, a: m.pop("layer1/W"), r"missing array 'layer1/W' of layer 'layer-1' \(Conv2D\)"),
        (lambda m, a: m.pop("__architecture__"), r"no '__architecture__' member"),
        (lambda m, a: a.update(version="1"), r"invalid format version '1'"),
        (lambda m, a: a.update(format="keras"), r"not a nets model file \(format 'keras'\)"),
        (lambda m, a: a.update(layers=[]), r"lists no layers"),
        (lambda m, a: a["layers"][0].pop("config"), r"layer 0 description misses"),
        (
            lambda m, a: a["layers"][2].update(kind="Swish"),
            r"layer 2 'layer-2' \(Swish\).*unsupported layer type",
        ),
        (
            lambda m, a: a["layers"][1].update(config={"stride": [0, 1]}),
            r"layer 1 'layer-1' \(Conv2D\).*stride",
        ),
        (lambda m, a: m.update(**{"layer8/W": np.ones((2, 2))}), r"layer 8 'layer-8' \(Dense\)"),
    ],
)
def test_damaged_contents_give_errors_naming_the_problem(saved, edit, message):
    _, path = saved
    members = _members(path)
    arch = json.loads(str(members["__architecture__"]))
    edit(members, arch)
    if "__architecture__" in members:
        members["__architecture__"] = np.array(json.dumps(arch))
    _write_members(path, members)
    with pytest.raises(ValueError, match=message):
        nets.load(path)


def test_architecture_that_is_not_json(saved):
    _, path = saved
    members = _members(path)
    members["__architecture__"] = np.array("{not json")
    _write_members(path, members)
    with pytest.raises(ValueError, match="not valid JSON"):
        nets.load(path)


def test_other_files_are_refused(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a nets model file"):
        nets.load(text)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(3))
    with pytest.raises(ValueError, match="not a nets model file"):
        nets.load(plain)
    pickled = tmp_path / "pickled.npz"
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(pickled, "w") as zf:
        zf.writestr("__architecture__.npy", buf.getvalue())
    with pytest.raises(ValueError):
        nets.load(pickled)
    with pytest.raises(FileNotFoundError):
        nets.load(tmp_path / "missing.npz")


def test_loaded_model_explains_identically(tmp_path, rng):
    model = every_layer_model(np.float64, rng)
    model.save(tmp_path / "m.npz")
    loaded = nets.load(tmp_path / "m.npz")
    X = rng.normal(size=(2, 2, 7, 9))
    for composite in ("epsilon_plus_flat", "epsilon_alpha2_beta1"):
        a = nets.LRP(model, composite).relevance(X, target=1)
        b = nets.LRP(loaded, composite).relevance(X, target=1)
        assert np.array_equal(a, b)
