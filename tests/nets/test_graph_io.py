"""Model files across format versions (format-1 files written by the chain-only code still load,
bit-identically), hostile files, and the epsilon_gamma_box box defaults."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import nets
from nets.io import FORMAT_VERSION
from tests.nets.graph_models import residual_cnn
from tests.nets.test_io import every_layer_model

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("dtype, tag", [(np.float64, "f64"), (np.float32, "f32")])
def test_format_1_files_load_identically(dtype, tag):
    """tests/nets/data/model_v1_*.npz were written by main at 6230920 (format 1, chains only) from
    ``every_layer_model(dtype, default_rng(11))``."""
    path = DATA / f"model_v1_{tag}.npz"
    with np.load(path) as npz:
        arch = json.loads(str(npz["__architecture__"]))
    assert arch["format"] == "nets.Sequential" and arch["version"] == 1
    loaded = nets.load(path)
    model = every_layer_model(dtype, np.random.default_rng(11))
    assert type(loaded) is nets.Sequential
    assert loaded.names == model.names and loaded.get_config() == model.get_config()
    X = np.random.default_rng(0).normal(size=(2, 2, 6, 6)).astype(dtype)
    assert np.array_equal(loaded(X), model(X))
    assert np.array_equal(
        nets.LRP(loaded, "epsilon_plus").relevance(X), nets.LRP(model, "epsilon_plus").relevance(X)
    )


def test_files_are_written_in_the_current_format(tmp_path):
    graph, _ = residual_cnn()
    graph.save(tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz", allow_pickle=False) as npz:
        arch = json.loads(str(npz["__architecture__"]))
    assert arch["format"] == "nets.Graph" and arch["version"] == FORMAT_VERSION == 2
    assert arch["layers"][8]["inputs"] == ["b1_bn2", "stem_relu"]


def _write(path, architecture, **arrays):
    np.savez(path, __architecture__=np.array(architecture), **arrays)


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deeply_nested_files_give_a_clear_error(tmp_path, depth):
    path = tmp_path / "deep.npz"
    _write(path, "[" * depth + "]" * depth)
    with pytest.raises(ValueError, match="nested too deeply"):
        nets.load(path)
    nested = "[" * depth + "1" + "]" * depth
    arch = (
        '{"format": "nets.Graph", "version": 2, "inputs": ["input"], "outputs": ["p"], '
        '"layers": [{"kind": "Pad", "name": "p", "config": {"pads": ' + nested + '}, "arrays": [], '
        '"inputs": ["input"]}]}'
    )
    _write(path, arch)
    with pytest.raises(ValueError, match="nested too deeply"):
        nets.load(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"inputs": ["input"], "layers": "x"}, "lists no layers"),
        ({"format": "nets.Sequential"}, "does not match version 2"),
        ({"outputs": ["nowhere"]}, "invalid graph.*not a node"),
    ],
)
def test_invalid_graph_files(tmp_path, change, message):
    graph, _ = residual_cnn()
    graph.save(tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz") as npz:
        members = {k: npz[k] for k in npz.files}
    arch = json.loads(str(members.pop("__architecture__")))
    arch.update(change)
    _write(tmp_path / "bad.npz", json.dumps(arch), **members)
    with pytest.raises(ValueError, match=message):
        nets.load(tmp_path / "bad.npz")


def test_cyclic_graph_file_is_refused(tmp_path):
    graph, _ = residual_cnn()
    graph.save(tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz") as npz:
        members = {k: npz[k] for k in npz.files}
    arch = json.loads(str(members.pop("__architecture__")))
    arch["layers"][0]["inputs"] = ["fc"]
    _write(tmp_path / "bad.npz", json.dumps(arch), **members)
    with pytest.raises(ValueError, match="cycle"):
        nets.load(tmp_path / "bad.npz")


def test_epsilon_gamma_box_without_bounds_uses_the_training_range_or_the_observed_range():
    graph, _ = residual_cnn()
    X = np.random.default_rng(0).uniform(0.1, 0.9, size=(3, 3, 8, 8))
    with pytest.warns(UserWarning, match="observed range"):
        lrp = nets.LRP(graph, "epsilon_gamma_box")
    assert "observed" in lrp.box_source
    observed = nets.LRP(graph, "epsilon_gamma_box", low=X.min(), high=X.max()).relevance(X)
    np.testing.assert_allclose(lrp.relevance(X), observed, rtol=1e-12, atol=1e-15)

    graph.input_range = (0.0, 1.0)
    with pytest.warns(UserWarning, match=r"training data range \[0, 1\]"):
        lrp = nets.LRP(graph, "epsilon_gamma_box")
    explicit = nets.LRP(graph, "epsilon_gamma_box", low=0.0, high=1.0)
    np.testing.assert_array_equal(lrp.relevance(X), explicit.relevance(X))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # given bounds: nothing to say
        nets.LRP(graph, "epsilon_gamma_box", low=0.0, high=1.0)


def test_unpickled_layers_realign_their_arrays():
    """dask can hand a worker arrays at addresses that are not multiples of 8; numpy's matmul then
    skips BLAS and rounds differently. Layers copy such arrays when unpickled, so a distributed run
    is bit-identical to a local one."""
    rng = np.random.default_rng(0)
    W = rng.normal(size=(16, 64))
    raw = np.zeros(W.nbytes + 1, dtype=np.uint8)
    raw[1:] = np.frombuffer(W.tobytes(), dtype=np.uint8)
    unaligned = np.frombuffer(raw.data, dtype=np.float64, offset=1).reshape(W.shape)
    assert not unaligned.flags.aligned
    layer = nets.Dense.__new__(nets.Dense)
    layer.__setstate__({"W": unaligned, "b": None})
    assert layer.W.flags.aligned and np.array_equal(layer.W, W)
    x = rng.normal(size=(1, 64))
    assert np.array_equal(layer(x), nets.Dense(W)(x))
    import pickle

    assert np.array_equal(pickle.loads(pickle.dumps(layer))(x), layer(x))
