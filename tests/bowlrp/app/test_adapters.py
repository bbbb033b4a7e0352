"""The adapters implement the core's Explainer protocol, recognise models and layers by type,
and read a network's input shape from its first layer."""

from __future__ import annotations

import numpy as np
import pytest

import nets
from bowlrp.app.adapters import BoWExplainer, NetworkExplainer, as_explainer, infer_input_shape
from bowlrp.explainer import Explainer
from tests.bowlrp.app import cli_data


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    data = cli_data.scenes(12, random_state=5)
    bow = cli_data.tiny_bow(data.images, data.labels)
    net = nets.load(cli_data.digits_network(str(tmp_path_factory.mktemp("net") / "digits.npz")))
    return {"bow": bow, "net": net, "images": list(data.images[:2])}


def test_both_adapters_are_explainers_and_pass_through(models):
    bow, net = as_explainer(models["bow"]), as_explainer(models["net"])
    assert isinstance(bow, BoWExplainer) and isinstance(net, NetworkExplainer)
    for adapter in (bow, net):
        assert isinstance(adapter, Explainer)
        assert as_explainer(adapter) is adapter
    assert bow.classes == list(models["bow"].classes_) and net.classes is None
    assert not isinstance(models["bow"], Explainer)  # a bare model is not: it needs its adapter
    maps = bow.explain(models["images"])
    scores = bow.score_function(maps[0].target)(bow.prepare(models["images"][:1]))
    assert scores[0] == pytest.approx(maps[0].score, rel=1e-9, abs=1e-12)


def test_models_and_layers_are_recognised_by_type_not_name(models):
    class Dense:  # a look-alike with the right class name is not a nets layer
        W = np.ones((4, 16))

    class Fake:
        layers = [Dense()]

    with pytest.raises(TypeError, match="nets model"):
        NetworkExplainer(Fake())
    with pytest.raises(TypeError, match="BoWClassifier or a nets"):
        as_explainer(Fake())
    with pytest.raises(ValueError, match="input shape"):
        infer_input_shape(Fake())


def test_input_shape_from_the_first_dense_layer(models):
    assert infer_input_shape(models["net"]) == (1, 8, 8)  # 64 digit pixels
    rgb = nets.Sequential([nets.Flatten(), nets.Dense(np.ones((2, 3 * 25)))])
    assert infer_input_shape(rgb) == (3, 5, 5)
    conv = nets.Sequential([nets.Conv2D(np.ones((2, 1, 3, 3))), nets.Flatten()])
    with pytest.raises(ValueError, match="--input-shape"):
        infer_input_shape(conv)
    odd = nets.Sequential([nets.Dense(np.ones((2, 7)))])
    with pytest.raises(ValueError, match="--input-shape"):
        infer_input_shape(odd)
