"""Composites: presets as zennit defines them, rules by type, index and name, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

import nets
from nets.composites import COMPOSITES, Composite, get_composite, register_composite
from nets.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, WinnerTakesAll, ZBox, ZPlus


def _cnn(rng):
    return nets.Sequential(
        [
            nets.Conv2D(rng.normal(size=(4, 1, 3, 3)), rng.normal(size=4), padding=1),
            nets.BatchNorm2D(np.ones(4), np.zeros(4), np.zeros(4), np.ones(4)),
            nets.ReLU(),
            nets.MaxPool2D(2),
            nets.Conv2D(rng.normal(size=(4, 4, 3, 3)), padding=1),
            nets.ReLU(),
            nets.AvgPool2D(2),
            nets.Flatten(),
            nets.Dense(rng.normal(size=(5, 16)), rng.normal(size=5)),
            nets.ReLU(),
            nets.Dropout(),
            nets.Dense(rng.normal(size=(3, 5))),
        ]
    )


def _mlp(rng):
    return nets.Sequential(
        [nets.Dense(rng.normal(size=(6, 4))), nets.Tanh(), nets.Dense(rng.normal(size=(2, 6)))]
    )


def _types(rules):
    return [type(r).__name__ for r in rules]


def test_presets_on_a_cnn_after_folding():
    rng = np.random.default_rng(0)
    lrp = {
        name: nets.LRP(_cnn(rng), name, **({"low": 0, "high": 1} if "box" in name else {}))
        for name in COMPOSITES
    }
    # BN folded into the first conv: 11 layers remain
    tail = ["Pass", "WinnerTakesAll", "{conv}", "Pass", "Norm", "Pass", "Epsilon", "Pass", "Pass", "Epsilon"]
    expect = {
        "epsilon_plus": ["ZPlus"] + [t.format(conv="ZPlus") for t in tail],
        "epsilon_plus_flat": ["Flat"] + [t.format(conv="ZPlus") for t in tail],
        "epsilon_alpha2_beta1": ["AlphaBeta"] + [t.format(conv="AlphaBeta") for t in tail],
        "epsilon_alpha2_beta1_flat": ["Flat"] + [t.format(conv="AlphaBeta") for t in tail],
        "epsilon_gamma_box": ["ZBox"] + [t.format(conv="Gamma") for t in tail],
    }
    for name, want in expect.items():
        assert _types(lrp[name].rules) == want, name
    rules = lrp["epsilon_gamma_box"].rules
    assert rules[3].gamma == 0.25 and rules[0].stabilizer == 1e-6 and rules[-1].epsilon == 1e-6
    assert lrp["epsilon_alpha2_beta1"].rules[3] == AlphaBeta(2, 1)


def test_presets_on_an_mlp():
    rng = np.random.default_rng(1)
    model = _mlp(rng)
    assert _types(nets.LRP(model, "epsilon_plus_flat").rules) == ["Flat", "Pass", "Epsilon"]
    assert _types(nets.LRP(model, "epsilon_plus").rules) == ["Epsilon", "Pass", "Epsilon"]
    # as in zennit, only a convolution can be the ZBox layer
    assert _types(nets.LRP(model, "epsilon_gamma_box", low=-1, high=1).rules) == [
        "Epsilon",
        "Pass",
        "Epsilon",
    ]
    assert _types(nets.LRP(model).rules) == ["Epsilon", "Pass", "Epsilon"]


def test_rules_by_index_name_and_type_with_precedence():
    rng = np.random.default_rng(2)
    model = _cnn(rng)
    comp = Composite(
        layer_map=[(nets.Conv2D, ZPlus()), ("dense", Epsilon(0.25))],
        index_map={4: Gamma(0.5), -1: Epsilon(0.0)},
        name_map={"dense_8": Epsilon(0.1), "conv2d_4": AlphaBeta(3, 2)},  # name beats index
        first_map=[((nets.Conv2D,), Flat())],
    )
    rules = nets.LRP(model, comp).rules
    assert rules[0] == Flat()
    assert rules[3] == AlphaBeta(3, 2)  # conv2d_4 (index 3 after folding the BN away)
    assert rules[7] == Epsilon(0.1)  # dense_8 by name
    assert rules[-1] == Epsilon(0.0)  # by negative index into the original model
    comp2 = Composite(index_map={4: Gamma(0.5)}, first_map=[((nets.Conv2D,), Flat())])
    assert nets.LRP(model, comp2).rules[3] == Gamma(0.5)  # index 4 is the original model's 2nd conv
    # an index or name rule on the first layer wins over first_map, and still consumes "first"
    comp3 = Composite(index_map={0: ZPlus()}, first_map=[((nets.Conv2D,), Flat())])
    assert _types(nets.LRP(model, comp3).rules)[:4] == ["ZPlus", "Pass", "WinnerTakesAll", "Epsilon"]


def test_base_map_defaults():
    rng = np.random.default_rng(3)
    model = nets.Sequential(
        [
            nets.BatchNorm1D(np.ones(4), np.zeros(4), np.zeros(4), np.ones(4)),  # cannot fold: Pass
            nets.Dense(rng.normal(size=(3, 4))),
            nets.Sigmoid(),
            nets.LeakyReLU(),
            nets.Dense(rng.normal(size=(2, 3))),
            nets.Softmax(),
        ]
    )
    rules = nets.LRP(model).rules  # the trailing softmax is dropped
    assert rules == [Pass(), Epsilon(), Pass(), Pass(), Epsilon()]
    assert Composite().resolve(nets.Sequential([nets.GlobalAvgPool2D()])) == [Norm()]
    assert Composite().resolve(nets.Sequential([nets.MaxPool2D(2)])) == [WinnerTakesAll()]


def test_composite_errors():
    rng = np.random.default_rng(4)
    model = _mlp(rng)
    with pytest.raises(ValueError, match="unknown composite 'eps'"):
        nets.LRP(model, "eps")
    with pytest.raises(TypeError, match="epsilon_gamma_box.*unexpected"), pytest.warns(UserWarning):
        nets.LRP(model, "epsilon_gamma_box", lo=0.0)
    with pytest.raises(KeyError, match="unknown layers"):
        nets.LRP(model, Composite(name_map={"conv1": ZPlus()}))
    with pytest.raises(IndexError, match="layer 7"):
        nets.LRP(model, Composite(index_map={7: ZPlus()}))
    with pytest.raises(TypeError, match="layer 'tanh_1'.*linear layer"):
        nets.LRP(model, Composite(index_map={1: ZPlus()}))
    with pytest.raises(TypeError, match="Rule"):
        Composite(layer_map=[(nets.Dense, "zplus")])
    with pytest.raises(TypeError, match="preset name or a Composite"):
        get_composite(42)
    with pytest.raises(TypeError, match="only apply to preset names"):
        get_composite(Composite(), epsilon=0.1)
    with pytest.raises(ValueError, match="only supported as the last layer"):
        nets.LRP(nets.Sequential([nets.Dense(np.ones((2, 2))), nets.Softmax(), nets.Dense(np.ones((2, 2)))]))


def test_register_composite():
    def all_zplus(stabilizer=1e-6):
        return Composite(layer_map=[((nets.Dense, nets.Conv2D), ZPlus(stabilizer))])

    register_composite("all_zplus_test", all_zplus)
    try:
        rules = nets.LRP(_mlp(np.random.default_rng(5)), "all_zplus_test", stabilizer=1e-3).rules
        assert rules == [ZPlus(1e-3), Pass(), ZPlus(1e-3)]
        assert isinstance(get_composite("epsilon_gamma_box", low=-1, high=1).first_map[0][1], ZBox)
    finally:
        COMPOSITES.pop("all_zplus_test")
    with pytest.raises(TypeError, match="callable"):
        register_composite("bad", 3)
