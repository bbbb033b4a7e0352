"""Every preset's relevance on a residual CNN equals zennit 0.5.1's on the same weights (float64,
1e-6), with the residual adds as zennit's ``Sum`` module (rule ``Norm``). torch and zennit are in
the ``dev`` extra, so this runs in CI (never skipped)."""

from __future__ import annotations

import numpy as np
import pytest

import nets
from nets.composites import COMPOSITES
from tests.nets.graph_models import dense_block, grouped_cnn, inception, residual_cnn
from tests.nets.torch_helpers import import_zennit, to_torch, zennit_relevance

torch, zennit = import_zennit()


def _setup(build, shape, seed=0):
    graph, _ = build()
    lrp_model = nets.LRP(graph).explained_model  # batch norm folded: zennit gets the same weights
    X = np.random.default_rng(seed).uniform(size=(4,) + shape)
    return graph, to_torch(lrp_model, torch, zennit), X


@pytest.fixture(scope="module")
def residual():
    return _setup(residual_cnn, (3, 8, 8))


def test_torch_twin_computes_the_same_logits(residual):
    graph, module, X = residual
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, graph(X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("preset", sorted(COMPOSITES))
def test_every_preset_matches_zennit_on_a_residual_cnn(residual, preset):
    graph, module, X = residual
    target = np.array([0, 1, 2, 1])
    kwargs = {"low": 0.0, "high": 1.0} if preset == "epsilon_gamma_box" else {}
    ours = nets.LRP(graph, preset, **kwargs).relevance(X, target=target)
    theirs = zennit_relevance(torch, zennit, module, X, target, preset, **kwargs)
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize(
    "build, shape", [(dense_block, (3, 6, 6)), (inception, (3, 6, 6)), (grouped_cnn, (3, 6, 6))]
)
@pytest.mark.parametrize("preset", ["epsilon_plus", "epsilon_alpha2_beta1"])
def test_concat_and_grouped_graphs_match_zennit(build, shape, preset):
    graph, module, X = _setup(build, shape)
    target = np.array([2, 0, 1, 0])
    ours = nets.LRP(graph, preset).relevance(X, target=target)
    theirs = zennit_relevance(torch, zennit, module, X, target, preset)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * np.abs(theirs).max())
