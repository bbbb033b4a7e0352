"""Batch-norm folding keeps the outputs and the explanation sees the folded layer."""

from __future__ import annotations

import numpy as np
import pytest

import nets
from nets.canonizers import SequentialMergeBatchNorm, canonize, fold_batch_norm


def _bn(rng, c, cls):
    return cls(
        rng.uniform(0.3, 3, c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.1, 4, c), eps=1e-3
    )


def _model(rng, dtype=np.float64):
    model = nets.Sequential(
        [
            nets.Conv2D(rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4), stride=2, padding=1),
            _bn(rng, 4, nets.BatchNorm2D),
            nets.ReLU(),
            nets.Conv2D(rng.normal(size=(5, 4, 3, 3))),  # no bias: folding creates one
            _bn(rng, 5, nets.BatchNorm2D),
            nets.ReLU(),
            nets.Flatten(),
            nets.Dense(rng.normal(size=(7, 5 * 3 * 3)), rng.normal(size=7)),
            _bn(rng, 7, nets.BatchNorm1D),
            nets.ReLU(),
            _bn(rng, 7, nets.BatchNorm1D),  # follows a ReLU: cannot be folded
            nets.Dense(rng.normal(size=(3, 7))),
        ]
    )
    return model.astype(dtype)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_folding_keeps_the_outputs(dtype, tol):
    rng = np.random.default_rng(0)
    model = _model(rng, dtype)
    folded, origin = SequentialMergeBatchNorm().apply(model)
    assert [layer.kind for layer in folded] == [
        "Conv2D",
        "ReLU",
        "Conv2D",
        "ReLU",
        "Flatten",
        "Dense",
        "ReLU",
        "BatchNorm1D",
        "Dense",
    ]
    assert origin == [0, 2, 3, 5, 6, 7, 9, 10, 11]
    assert folded.names == [model.names[i] for i in origin]
    X = rng.uniform(0, 1, size=(16, 3, 10, 10)).astype(dtype)
    want, got = model(X), folded(X)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_array_equal(fold_batch_norm(model)(X), got)


def test_folded_parameters_follow_the_formula():
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    bn = _bn(rng, 3, nets.BatchNorm1D)
    folded = fold_batch_norm(nets.Sequential([nets.Dense(W, b), bn])).layers[0]
    k = bn.gamma / np.sqrt(bn.var + bn.eps)
    np.testing.assert_allclose(folded.W, W * k[:, None], rtol=1e-14)
    np.testing.assert_allclose(folded.b, (b - bn.mean) * k + bn.beta, rtol=1e-13)


def test_mismatched_batch_norm_is_left_alone_and_canonize_validates():
    rng = np.random.default_rng(2)
    model = nets.Sequential(
        [nets.Dense(rng.normal(size=(3, 4))), nets.BatchNorm2D([1.0] * 3, [0.0] * 3, [0.0] * 3, [1.0] * 3)]
    )
    assert len(fold_batch_norm(model)) == 2  # BatchNorm2D after Dense: not a fold
    folded, origin = canonize(model, canonizers=[])
    assert folded is model and origin == [0, 1]
    with pytest.raises(TypeError, match="Canonizer"):
        canonize(model, canonizers=[lambda m: m])


def test_lrp_explains_the_folded_model():
    """Relevance through a Dense+BN pair equals the relevance through the single folded Dense."""
    rng = np.random.default_rng(3)
    model = _model(rng)
    folded = fold_batch_norm(model)
    X = rng.uniform(0, 1, size=(4, 3, 10, 10))
    R1 = nets.LRP(model, "epsilon_plus").relevance(X, target=1)
    R2 = nets.LRP(folded, "epsilon_plus", canonizers=[]).relevance(X, target=1)
    np.testing.assert_allclose(R1, R2, rtol=1e-10, atol=1e-12)
