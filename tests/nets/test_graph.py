"""The graph engine on residual, dense-concat, inception, grouped, dilated, LRN and channel-shuffle
models: forward against numpy twins, LRP-0 = gradient x input, conservation, the diagnostics
identity sum(R) + absorbed = f(x), batch-norm folding, composites' first layers, save/load."""

from __future__ import annotations

import numpy as np
import pytest

import nets
from nets import Node
from nets.composites import COMPOSITES, Composite
from nets.rules import Epsilon, LRNTaylor, Norm, Pass
from tests.nets.graph_models import GRAPHS, inputs

PRESETS = sorted(COMPOSITES)


def _preset_kwargs(name):
    return {"low": 0.0, "high": 1.0} if name == "epsilon_gamma_box" else {}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_forward_equals_numpy_twin(name):
    build, shape = GRAPHS[name]
    graph, twin = build()
    X = inputs(shape)
    np.testing.assert_allclose(graph(X), twin(X), rtol=1e-12, atol=1e-12)
    acts = graph.trace(X)
    assert len(acts) == len(graph) + 1 and acts[-1] is not None


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_gradient_matches_finite_differences(name):
    build, shape = GRAPHS[name]
    graph, _ = build()
    X = inputs(shape, n=2)
    rng = np.random.default_rng(1)
    w = rng.normal(size=graph(X).shape)
    g = graph.gradient(X, w)
    d = rng.normal(size=X.shape)
    h = 1e-6
    fd = ((graph(X + h * d) * w).sum() - (graph(X - h * d) * w).sum()) / (2 * h)
    assert np.isclose((g * d).sum(), fd, rtol=1e-5, atol=1e-8)


LRP0 = Composite(layer_map=[((nets.Dense, nets.Conv2D), Epsilon(0.0))], stabilizer=0.0)


@pytest.mark.parametrize("name", ["residual", "dense_block", "inception", "grouped", "dilated", "shuffle"])
def test_lrp0_equals_gradient_times_input_without_biases(name):
    """Piecewise-linear and bias-free: LRP-0 (Add split with eps 0) is exactly x * df/dx."""
    build, shape = GRAPHS[name]
    graph, _ = build(bias=False)
    X = inputs(shape)
    R = nets.LRP(graph, LRP0).relevance(X, target=1)
    np.testing.assert_allclose(
        R, nets.GradientTimesInput(graph).relevance(X, target=1), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("preset", PRESETS + ["lrp0"])
def test_conservation_with_zero_biases(name, preset):
    build, shape = GRAPHS[name]
    graph, _ = build(bias=False)
    X = inputs(shape)
    if preset == "lrp0":
        lrp = nets.LRP(graph, LRP0)
    else:
        lrp = nets.LRP(graph, preset, zero_bias=True, **_preset_kwargs(preset))
    R, diag = lrp.relevance(X, return_diagnostics=True)
    f = graph(X).max(axis=1)
    np.testing.assert_allclose(diag.score, f, rtol=1e-12)
    assert np.all(diag.bias_absorbed == 0)
    if preset == "lrp0":  # nothing to absorb: relevance is conserved exactly
        np.testing.assert_allclose(R.sum(axis=(1, 2, 3)), f, rtol=1e-9, atol=1e-12)
    # the stabilisers (and z+/alpha-beta/gamma outputs whose positive or negative part is 0) absorb
    # the rest, exactly as reported
    np.testing.assert_allclose(R.sum(axis=(1, 2, 3)) + diag.absorbed, f, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("preset", PRESETS + [None])
def test_diagnostics_account_for_every_loss(name, preset):
    """With biases: sum(input relevance) + bias + eps (+ Taylor) absorbed = f(x) to 1e-9, per node
    relevance out - in = what that node absorbed, and a node's output relevance is the sum of what
    its consumers sent back."""
    build, shape = GRAPHS[name]
    graph, _ = build()
    X = inputs(shape)
    lrp = nets.LRP(graph, preset, **(_preset_kwargs(preset) if preset else {}))
    R, diag = lrp.relevance(X, target=0, return_diagnostics=True)
    f = graph(X)[:, 0]
    np.testing.assert_allclose(diag.relevance_at_input, R.sum(axis=(1, 2, 3)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(diag.relevance_at_input + diag.absorbed, f, rtol=1e-9, atol=1e-9)
    lost = diag.relevance_out - diag.layer_relevance[:, :-1]
    absorbed = diag.bias_absorbed + diag.stabiliser_absorbed + diag.taylor_absorbed
    np.testing.assert_allclose(lost, absorbed, atol=1e-9)
    model = lrp.explained_model
    for i, consumers in enumerate(model.consumers()[1:]):
        if consumers and all(len(model.sources[k]) == 1 for k in consumers):
            sent = sum(diag.layer_relevance[:, k] for k in consumers)
            np.testing.assert_allclose(diag.relevance_out[:, i], sent, rtol=1e-9, atol=1e-9)
    # over the whole graph: everything sent back arrives at a node output or at the input
    total_out = diag.layer_relevance[:, -1]
    np.testing.assert_allclose(
        diag.relevance_out.sum(1) - diag.layer_relevance[:, :-1].sum(1),
        total_out - diag.relevance_at_input,
        rtol=1e-9,
        atol=1e-9,
    )


def test_lrn_taylor_rule_reports_its_remainder():
    graph, _ = GRAPHS["lrn"][0]()
    X = inputs(GRAPHS["lrn"][1])
    comp = Composite(layer_map=[(nets.LRN, LRNTaylor())])
    R, diag = nets.LRP(graph, comp).relevance(X, return_diagnostics=True)
    f = graph(X).max(axis=1)
    lrn_cols = [i for i, n in enumerate(diag.layer_names) if n.startswith("lrn")]
    assert np.all(diag.taylor_absorbed[:, lrn_cols] > 0)  # D > bias: the expansion misses a part
    other = [i for i in range(len(diag.layer_names)) if i not in lrn_cols]
    assert np.all(diag.taylor_absorbed[:, other] == 0)
    np.testing.assert_allclose(R.sum(axis=(1, 2, 3)) + diag.absorbed, f, rtol=1e-9, atol=1e-9)
    # the default (Pass) conserves through LRN
    _, diag_pass = nets.LRP(graph).relevance(X, return_diagnostics=True)
    assert np.all(diag_pass.taylor_absorbed == 0)


def test_lrn_taylor_is_gradient_times_input_over_output():
    rng = np.random.default_rng(3)
    layer = nets.LRN(3, alpha=0.7, beta=0.75, bias=1.5)
    x = rng.normal(size=(2, 5, 2, 2))
    y = layer(x)
    R = rng.normal(size=y.shape)
    from nets.propagation import propagate_node

    (got,), _, stab, taylor = propagate_node(layer, LRNTaylor(0.0), [x], y, R, absorbed=True)
    # Jacobian by finite differences, then R_i = x_i sum_j J_ji R_j / y_j
    want = np.zeros_like(x)
    h = 1e-6
    for idx in np.ndindex(*x.shape[1:]):
        for s in range(x.shape[0]):
            e = np.zeros_like(x)
            e[(s,) + idx] = h
            J = (layer(x + e) - layer(x - e))[s] / (2 * h)
            want[(s,) + idx] = x[(s,) + idx] * (J * R[s] / y[s]).sum()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got.sum(axis=(1, 2, 3)) + stab + taylor, R.sum(axis=(1, 2, 3)), atol=1e-12)


def test_batch_norm_folds_into_the_linear_node_that_feeds_only_it():
    graph, _ = GRAPHS["residual"][0]()
    lrp = nets.LRP(graph)
    names = lrp.explained_model.names
    assert not any("bn" in n for n in names)  # every BN here follows a conv
    assert "b2_short" in names and lrp.explained_model.node("b2_add").inputs == ("b2_conv2", "b2_short")
    X = inputs((3, 8, 8))
    np.testing.assert_allclose(lrp.explained_model(X), graph(X), rtol=1e-12, atol=1e-12)


def test_batch_norm_after_add_stays_with_a_documented_rule():
    graph, _ = GRAPHS["shuffle"][0]()
    lrp = nets.LRP(graph)
    assert "bn" in lrp.explained_model.names
    assert lrp.rules[lrp.explained_model.names.index("bn")] == Pass()
    # a linear rule can be given to it by name, and the books still balance
    X = inputs((3, 6, 6))
    lrp_eps = nets.LRP(graph, Composite(name_map={"bn": Epsilon()}))
    R, diag = lrp_eps.relevance(X, return_diagnostics=True)
    assert np.any(diag.bias_absorbed[:, lrp_eps.explained_model.names.index("bn")] != 0)
    np.testing.assert_allclose(R.sum(axis=(1, 2, 3)) + diag.absorbed, graph(X).max(1), rtol=1e-9, atol=1e-9)


def test_a_linear_node_with_two_consumers_is_not_folded():
    rng = np.random.default_rng(0)
    bn = nets.BatchNorm2D([2.0, 1.0], [0.5, 0.0], [0.1, 0.2], [1.0, 2.0])
    graph = nets.Graph(
        [
            Node("conv", nets.Conv2D(rng.normal(size=(2, 1, 3, 3)), padding=1), "input"),
            Node("bn", bn, "conv"),
            Node("add", nets.Add(), ["bn", "conv"]),
            Node("gap", nets.GlobalAvgPool2D(), "add"),
        ]
    )
    assert nets.LRP(graph).explained_model.names == graph.names


def test_first_layer_is_every_linear_node_reading_the_input():
    graph, _ = GRAPHS["inception"][0]()
    lrp = nets.LRP(graph, "epsilon_gamma_box", low=0.0, high=1.0)
    kinds = dict(zip(lrp.explained_model.names, (type(r).__name__ for r in lrp.rules)))
    # br_pool_conv reads the input through a max pool only: also a first layer
    assert kinds["br1"] == kinds["br3"] == kinds["br_pool_conv"] == "ZBox"
    flat = nets.LRP(graph, "epsilon_plus_flat")
    kinds = dict(zip(flat.explained_model.names, (type(r).__name__ for r in flat.rules)))
    assert kinds["br1"] == kinds["br3"] == kinds["br_pool_conv"] == "Flat" and kinds["fc"] == "Epsilon"
    # in the residual CNN only the stem reads the input
    res, _ = GRAPHS["residual"][0]()
    rules = nets.LRP(res, "epsilon_gamma_box", low=0.0, high=1.0).rules
    assert [type(r).__name__ for r in rules].count("ZBox") == 1


def test_rules_by_name_and_index_on_graphs():
    graph, _ = GRAPHS["residual"][0]()
    comp = Composite(name_map={"b1_add": Epsilon(0.1)}, index_map={-1: Epsilon(0.5)})
    lrp = nets.LRP(graph, comp)
    names = lrp.explained_model.names
    assert lrp.rules[names.index("b1_add")] == Epsilon(0.1)
    assert lrp.rules[names.index("fc")] == Epsilon(0.5)
    assert lrp.rules[names.index("b2_add")] == Norm()
    with pytest.raises(TypeError, match="Add takes Norm or Epsilon"):
        nets.LRP(graph, Composite(name_map={"b1_add": Pass()}))


def test_add_splits_relevance_in_proportion_to_contributions():
    a, b = np.array([[1.0, -2.0, 3.0]]), np.array([[3.0, 1.0, 0.0]])
    layer = nets.Add()
    y = layer(a, b)
    R = np.array([[4.0, 1.0, 6.0]])
    from nets.propagation import propagate_node

    (ra, rb), _, stab, _ = propagate_node(layer, Norm(0.0), [a, b], y, R, absorbed=True)
    np.testing.assert_allclose(ra, [[1.0, 2.0, 6.0]])
    np.testing.assert_allclose(rb, [[3.0, -1.0, 0.0]])
    assert stab[0] == 0.0


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_save_load_round_trip(tmp_path, name):
    graph, _ = GRAPHS[name][0]()
    graph.input_range = (0.0, 1.0)
    path = tmp_path / "g.npz"
    graph.save(path)
    loaded = nets.load(path)
    assert type(loaded) is nets.Graph and loaded.get_config() == graph.get_config()
    assert loaded.input_range == (0.0, 1.0)
    X = inputs(GRAPHS[name][1])
    assert np.array_equal(loaded(X), graph(X))


def test_sequential_is_a_chain_graph_and_round_trips_as_sequential(tmp_path):
    model = nets.Sequential([nets.Dense(np.eye(2)), nets.ReLU()], names=["input", "relu"])
    assert isinstance(model, nets.Graph) and model.inputs == ("_input",)
    model.save(tmp_path / "s.npz")
    loaded = nets.load(tmp_path / "s.npz")
    assert type(loaded) is nets.Sequential and loaded.names == ["input", "relu"]


def test_graph_construction_errors():
    d = nets.Dense(np.eye(2))
    with pytest.raises(ValueError, match="neither a graph input nor a node"):
        nets.Graph([Node("a", d, "x")])
    with pytest.raises(ValueError, match="cycle"):
        nets.Graph([Node("a", d, "b"), Node("b", nets.ReLU(), "a")], outputs="b")
    with pytest.raises(ValueError, match="unique"):
        nets.Graph([Node("a", d, "input"), Node("a", nets.ReLU(), "a")])
    with pytest.raises(ValueError, match="do not contribute"):
        nets.Graph([Node("a", d, "input"), Node("dead", nets.ReLU(), "input"), Node("b", nets.ReLU(), "a")])
    with pytest.raises(ValueError, match="takes 1 input"):
        Node("a", d, ["input", "input"])
    with pytest.raises(TypeError, match="not a nets layer"):
        Node("a", object(), ["input"])
    with pytest.raises(ValueError, match="exactly one input"):
        nets.Graph([Node("a", d, "input")], inputs=("input", "other"))
    with pytest.raises(ValueError, match="layer 'add'.*one shape"):
        nets.Graph([Node("f", nets.Flatten(), "input"), Node("add", nets.Add(), ["f", "input"])])(
            np.ones((1, 2, 2))
        )


def test_nodes_are_sorted_topologically():
    d = nets.Dense(np.eye(2))
    g = nets.Graph(
        [Node("out", nets.Add(), ["a", "b"]), Node("b", nets.ReLU(), "a"), Node("a", d, "input")],
        outputs="out",
    )
    assert g.names == ["a", "b", "out"]


def test_comparison_methods_and_heatmaps_on_a_graph():
    graph, _ = GRAPHS["residual"][0]()
    X = inputs((3, 8, 8), n=4)
    refs = np.random.default_rng(5).normal(size=(40, 3, 8, 8))
    f = graph(X)[:, 0]
    w = np.array([1.0, -1.0, 0.0])  # explain logit 0 - logit 1, which changes sign among the refs
    R, roots, found = nets.TaylorDecomposition(graph, refs).relevance(X, target=w, return_roots=True)
    assert R.shape == X.shape and found.all()
    np.testing.assert_allclose(graph(roots) @ w, 0, atol=1e-8)
    S = nets.Sensitivity(graph).relevance(X, target=0)
    G = nets.GradientTimesInput(graph).relevance(X, target=0)
    np.testing.assert_allclose(S, (G / X) ** 2, rtol=1e-9)
    maps = nets.LRP(graph, "epsilon_plus").explain(X, target=0)
    assert len(maps) == 4 and maps[0].relevance.shape == (8, 8)
    extras = maps[0].extras
    assert extras["relevance_out"].shape == extras["bias_absorbed"].shape == (len(extras["layer_names"]),)
    total = maps[0].relevance.sum() + extras["bias_absorbed"].sum() + extras["stabiliser_absorbed"].sum()
    assert total == pytest.approx(f[0], abs=1e-9)


def test_softmax_output_node_is_dropped():
    graph, _ = GRAPHS["inception"][0]()
    nodes = list(graph.nodes) + [Node("prob", nets.Softmax(), ["fc"])]
    with_softmax = nets.Graph(nodes)
    X = inputs((3, 6, 6))
    np.testing.assert_allclose(with_softmax(X).sum(axis=1), 1.0)
    lrp = nets.LRP(with_softmax)
    assert lrp.model.output == "fc"
    np.testing.assert_array_equal(lrp.relevance(X), nets.LRP(graph).relevance(X))
    bad = nets.Graph(
        list(graph.nodes[:-1]) + [Node("sm", nets.Softmax(), ["gap"]), Node("fc2", graph["fc"], ["sm"])]
    )
    with pytest.raises(ValueError, match="Softmax is only supported as the last layer"):
        nets.LRP(bad)


def test_a_node_may_read_one_value_twice():
    rng = np.random.default_rng(2)
    W = rng.normal(size=(3, 4))
    graph = nets.Graph(
        [
            Node("cat", nets.Concat(), ["input", "input"]),
            Node("dense", nets.Dense(np.hstack([W, 2 * W])), ["cat"]),
            Node("twice", nets.Add(), ["dense", "dense"]),
        ]
    )
    X = rng.normal(size=(5, 4))
    np.testing.assert_allclose(graph(X), 2 * X @ (3 * W).T, rtol=1e-12)
    np.testing.assert_allclose(graph.gradient(X, np.ones((5, 3))), np.tile(6 * W.sum(0), (5, 1)), rtol=1e-12)
    R, diag = nets.LRP(graph, LRP0).relevance(X, target=1, return_diagnostics=True)
    # LRP-0 of a linear model is x * w: both copies of the input pass their share back
    np.testing.assert_allclose(R, X * 6 * W[1], rtol=1e-9)
    np.testing.assert_allclose(R.sum(1), graph(X)[:, 1], rtol=1e-9)
