"""LRP and the forward pass on two threads: the batch runs in parts, one per thread (``split_batch``);
every sample's relevance equals the one-thread result up to float round-off, whatever the target
form, and rules that depend on the whole batch keep it whole."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from sklearn.datasets import load_digits

import bowlrp.jit
import nets
from bowlrp.jit import limited_threads
from nets.layers import linear

pytestmark = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")


@pytest.fixture(scope="module")
def digits_cnn():
    """A small CNN (random He weights) on 64 real 8x8 digits in [0, 1]."""
    X = (load_digits().images[:64] / 16.0)[:, None]
    rng = np.random.default_rng(0)

    def he(shape, fan_in):
        return rng.normal(size=shape) * np.sqrt(2.0 / fan_in)

    model = nets.Sequential(
        [
            nets.Conv2D(he((6, 1, 3, 3), 9), rng.normal(size=6) * 0.01, padding=1),
            nets.ReLU(),
            nets.MaxPool2D(2),
            nets.Conv2D(he((8, 6, 3, 3), 54), rng.normal(size=8) * 0.01, padding=1),
            nets.ReLU(),
            nets.MaxPool2D(2),
            nets.Flatten(),
            nets.Dense(he((16, 32), 32), rng.normal(size=16) * 0.01),
            nets.ReLU(),
            nets.Dense(he((10, 16), 16), rng.normal(size=10) * 0.01),
        ]
    )
    return model, X


def _both(lrp, X, targets):
    with limited_threads(1):
        one = lrp.relevance_many(X, targets)
    with limited_threads(2):
        two = lrp.relevance_many(X, targets)
    return one, two


@pytest.mark.parametrize("preset", ["epsilon_plus", "epsilon_alpha2_beta1_flat", "epsilon_gamma_box"])
def test_two_threads_equal_one_for_every_target_form(digits_cnn, preset, monkeypatch):
    model, X = digits_cnn
    lrp = nets.LRP(model, preset, **({"low": 0.0, "high": 1.0} if preset == "epsilon_gamma_box" else {}))
    monkeypatch.setattr(bowlrp.jit, "PARALLEL_MIN_WORK", 0)  # (this small CNN would not pay)
    parts = []
    real_split = linear.split_batch

    def split(func, *arrays, **kwargs):  # records the rows of each part and what was split
        parts.append(len(arrays))
        return real_split(lambda *a: parts.append(len(a[0])) or func(*a), *arrays, **kwargs)

    monkeypatch.setattr(linear, "split_batch", split)
    n = len(X)
    per_sample_classes = np.arange(n) % 10
    R_out = np.random.default_rng(1).random((n, 10))
    targets = [None, 3, per_sample_classes, np.eye(10)[7], R_out]
    one, two = _both(lrp, X, targets)
    assert parts == [1 + 2, len(X) // 2, len(X) // 2]  # X and the two per-sample targets, in halves
    for k, (a, b) in enumerate(zip(one, two)):
        assert a.shape == X.shape
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.abs(a).max(), err_msg=f"target {k}")
    # conservation of the split result: sum R + absorbed = f(x) (diagnostics from the whole batch)
    R, diag = lrp.relevance(X, per_sample_classes, return_diagnostics=True)
    total = two[2].reshape(n, -1).sum(axis=1) + diag.absorbed
    np.testing.assert_allclose(total, diag.score, rtol=0, atol=1e-9)


def test_batch_dependent_bounds_and_diagnostics_keep_the_batch_whole(digits_cnn, monkeypatch):
    """ZBox without bounds takes the batch's observed range, so the batch is never split (the
    result is bit-identical to one thread); diagnostics are computed on the whole batch too."""
    model, X = digits_cnn
    calls = []
    monkeypatch.setattr(linear, "split_batch", lambda *a, **k: calls.append(1))
    with pytest.warns(UserWarning, match="observed range"):
        lrp = nets.LRP(model, "epsilon_gamma_box")
    one, two = _both(lrp, X, [None])
    assert calls == [] and np.array_equal(one[0], two[0])
    with limited_threads(2):
        R, diag = nets.LRP(model, "epsilon_plus").relevance(X, return_diagnostics=True)
    assert calls == [] and diag.score.shape == (len(X),)


def test_a_wrong_target_still_raises_a_clear_error_on_two_threads(digits_cnn):
    model, X = digits_cnn
    lrp = nets.LRP(model, "epsilon_plus")
    with limited_threads(2):
        with pytest.raises(ValueError, match="target has shape"):
            lrp.relevance(X, np.arange(len(X) - 1))
        with pytest.raises(ValueError, match="target out of range"):
            lrp.relevance(X, np.full(len(X), 10))


def test_forward_on_two_threads_runs_in_halves_and_equals_one_thread(digits_cnn, monkeypatch):
    model, X = digits_cnn
    monkeypatch.setattr(bowlrp.jit, "PARALLEL_MIN_WORK", 0)
    rows = []
    real_split = linear.split_batch
    monkeypatch.setattr(
        linear, "split_batch", lambda f, *a, **k: real_split(lambda p: rows.append(len(p)) or f(p), *a, **k)
    )
    with limited_threads(1):
        one = model(X)
    assert rows == []
    with limited_threads(2):
        two = model(X)
        assert np.array_equal(model.predict(X), one.argmax(axis=1))
    assert rows[:2] == [len(X) // 2] * 2
    np.testing.assert_allclose(two, one, rtol=1e-12, atol=1e-12)


def test_targets_may_be_any_iterable_and_a_bad_one_names_the_whole_batch(digits_cnn, monkeypatch):
    """Review findings: a generator of targets was read twice (a TypeError, or a silent empty list
    for a bad target), and a bad per-sample output relevance named the part's size."""
    model, X = digits_cnn
    lrp = nets.LRP(model, "epsilon_plus")
    monkeypatch.setattr(bowlrp.jit, "PARALLEL_MIN_WORK", 0)
    with limited_threads(1):
        expected = lrp.relevance_many(X, [3, 5])
    with limited_threads(2):
        got = lrp.relevance_many(X, (t for t in (3, 5)))
        assert len(got) == 2
        for a, b in zip(expected, got):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.abs(a).max())
        with pytest.raises(ValueError, match="target has shape"):
            lrp.relevance_many(X, (t for t in [np.arange(len(X) - 1)]))
        with pytest.raises(ValueError, match=rf"\({len(X)}, 7\)"):
            lrp.relevance(X, np.ones((len(X), 7)))


def test_per_sample_box_bounds_and_callable_stabilisers_keep_the_batch_whole(digits_cnn, monkeypatch):
    model, X = digits_cnn
    monkeypatch.setattr(bowlrp.jit, "PARALLEL_MIN_WORK", 0)
    calls = []
    real_split = linear.split_batch
    monkeypatch.setattr(linear, "split_batch", lambda *a, **k: calls.append(1) or real_split(*a, **k))
    # bounds of the batch's own shape: per sample, so they cannot go with a part of it
    lrp = nets.LRP(model, "epsilon_gamma_box", low=X - 0.1, high=X + 0.1)
    one, two = _both(lrp, X, [None])
    assert np.array_equal(one[0], two[0])
    # a stabiliser that reads the whole batch (its standard deviation) sees the whole batch
    from nets.composites import Composite
    from nets.rules import Epsilon

    batch_std = Epsilon(lambda z: z + 0.25 * z.std() * np.where(z >= 0, 1.0, -1.0))
    lrp = nets.LRP(model, Composite(layer_map=[(nets.Dense, batch_std), (nets.Conv2D, batch_std)]))
    one, two = _both(lrp, X, [None])
    assert np.array_equal(one[0], two[0])
    assert calls == []


def test_a_subclass_of_relu_is_not_taken_for_non_negative():
    """Only the library's own ReLU is known to output >= 0: a user's shifted ReLU built on it keeps
    the sign check, so AlphaBeta sees its negative inputs (the same numbers as the same function
    written as another class)."""
    from nets.composites import Composite
    from nets.layers.elementwise import _Elementwise
    from nets.rules import AlphaBeta, Epsilon, Pass

    X = load_digits().data[:20] / 16.0

    class ShiftedReLU(nets.ReLU):
        def forward(self, x):
            return np.maximum(x, 0) - 0.5

        def backward(self, x, y, grad):
            return grad * (x > 0)

    class ShiftedAct(_Elementwise):
        kind = "ReLU"
        forward = ShiftedReLU.forward
        backward = ShiftedReLU.backward

    rng = np.random.default_rng(0)
    W1, b1 = rng.normal(size=(6, 64)) * 0.2, rng.normal(size=6)
    W2, b2 = rng.normal(size=(3, 6)), rng.normal(size=3)
    relevances = []
    for act in (ShiftedReLU, ShiftedAct):
        model = nets.Sequential([nets.Dense(W1, b1), act(), nets.Dense(W2, b2)])
        assert model[1].forward(model[0].forward(X)).min() < 0
        composite = Composite(layer_map=[(act, Pass()), (nets.Dense, Epsilon(1e-6))],
                              index_map={2: AlphaBeta(2.0, 1.0)})
        with limited_threads(1):
            relevances.append(nets.LRP(model, composite).relevance(X, 0))
    np.testing.assert_array_equal(relevances[0], relevances[1])


def test_a_forked_child_runs_convolutions_after_the_parent_used_its_threads():
    """The convolution thread pool is forgotten in a forked child (its threads do not exist there):
    the child's forward finishes and gives the parent's numbers."""
    import os
    import signal

    rng = np.random.default_rng(0)
    model = nets.Sequential([nets.Conv2D(rng.normal(size=(16, 16, 3, 3)), None, padding=1), nets.ReLU()])
    X = rng.random((8, 16, 32, 32))
    with limited_threads(2):
        y = model(X)
        pid = os.fork()
        if pid == 0:  # the child: exit code 0 only when it finishes with the same numbers
            signal.alarm(60)
            try:
                os._exit(0 if np.array_equal(model(X), y) else 3)
            finally:
                os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_the_number_of_parts_is_one_rule_for_split_batch_and_the_nets(digits_cnn, monkeypatch):
    """``bowlrp.jit.n_parts`` decides for both ``split_batch`` and ``split_over_threads``: one part
    per thread with two rows each, one (the whole batch, the convolutions' own pool) otherwise."""
    from bowlrp.jit import n_parts

    monkeypatch.setattr(bowlrp.jit, "PARALLEL_MIN_WORK", 100)
    with limited_threads(2):
        assert n_parts(10, work=100) == 2 and n_parts(10) == 2
        assert n_parts(3, work=100) == 1 and n_parts(10, work=99) == 1 and n_parts(10, min_rows=6) == 1
        calls = []
        monkeypatch.setattr(linear, "split_batch", lambda *a, **k: calls.append(1))
        x = np.arange(3.0)
        assert np.array_equal(linear.split_over_threads(lambda a: a + 1, x, work=10**6), x + 1)
        assert calls == []  # three rows: one part, called directly
    with limited_threads(1):
        assert n_parts(10, work=10**6) == 1


def test_a_bad_target_is_found_before_the_batch_is_cut(digits_cnn, monkeypatch):
    """Targets are checked against the whole batch up front (the messages of the one-thread path),
    so no part runs for a target that cannot fit; a class index out of range is reported by the
    parts with the same message."""
    model, X = digits_cnn
    lrp = nets.LRP(model, "epsilon_plus")
    monkeypatch.setattr(bowlrp.jit, "PARALLEL_MIN_WORK", 0)
    calls = []
    real_split = linear.split_batch
    monkeypatch.setattr(linear, "split_batch", lambda *a, **k: calls.append(1) or real_split(*a, **k))
    n = len(X)
    with limited_threads(2):
        for bad, error, message in [
            (np.arange(n - 1), ValueError, rf"shape \({n - 1},\); give one int or one per sample \({n},\)"),
            (np.zeros((n, 2), int), ValueError, "target has shape"),
            (np.ones((n, 7)), ValueError, rf"expected \({n}, 10\) or \(10,\)"),
            (np.ones(3), ValueError, rf"shape \(3,\), expected \({n}, 10\)"),
            (np.full((n, 10), np.nan), ValueError, "NaN"),
            (np.ones(n, bool), TypeError, "target must be int"),
        ]:
            with pytest.raises(error, match=message):
                lrp.relevance_many(X, [3, bad])
        assert calls == []
        with pytest.raises(ValueError, match="target out of range: the model has 10 outputs"):
            lrp.relevance(X, np.full(n, 10))
    assert calls  # (the last one ran in parts)


def test_per_sample_box_bounds_of_a_flattened_dense_layer_explain_on_two_threads(monkeypatch):
    """ZBox bounds given per sample for a Dense layer after ``Flatten`` have fewer axes than the
    image batch, so the split path cannot tell them from shared bounds up front: a part sees the
    whole batch's bounds, and the pass falls back to the whole batch instead of raising (review of
    the third speed round: it raised "does not fit inputs of shape (32, 784)")."""
    from nets.composites import Composite
    from nets.rules import Epsilon, ZBox

    rng = np.random.default_rng(0)
    X = (load_digits().images[:64] / 16.0)[:, None]
    model = nets.Sequential([nets.Flatten(), nets.Dense(rng.normal(size=(20, 64)) * 0.2), nets.ReLU(),
                             nets.Dense(rng.normal(size=(10, 20)) * 0.2)])
    low = -0.1 * rng.random((64, 64))
    lrp = nets.LRP(model, Composite(layer_map=[(nets.Dense, Epsilon())],
                                    index_map={1: ZBox(low, np.ones((64, 64)))}))
    monkeypatch.setattr(bowlrp.jit, "PARALLEL_MIN_WORK", 0)
    whole = lrp.relevance(X, 3, return_diagnostics=True)[0]  # (diagnostics: never split)
    with limited_threads(2):
        R = lrp.relevance(X, 3)
    np.testing.assert_array_equal(R, whole)


def test_a_wrong_input_width_names_the_callers_batch_on_two_threads(monkeypatch):
    """A shape error found inside a part is raised with the caller's batch size, not the part's."""
    rng = np.random.default_rng(1)
    model = nets.Sequential([nets.Dense(rng.normal(size=(30, 64))), nets.ReLU(),
                             nets.Dense(rng.normal(size=(10, 30)))])
    lrp = nets.LRP(model, "epsilon_plus")
    monkeypatch.setattr(bowlrp.jit, "PARALLEL_MIN_WORK", 0)
    X = load_digits().data[:40, :63] / 16.0
    with limited_threads(2), pytest.raises(ValueError, match=r"got shape \(40, 63\)"):
        lrp.relevance(X, 1)


def test_an_output_relevance_target_costs_no_extra_forward_when_the_batch_stays_whole(digits_cnn):
    """The target check that saves a split run its parts is skipped when there is nothing to split
    (it traces one sample to learn the output's shape)."""
    model, X = digits_cnn
    lrp = nets.LRP(model, "epsilon_plus")
    calls = []
    real = lrp.explained_model.trace
    lrp.explained_model.trace = lambda *a, **k: calls.append(1) or real(*a, **k)
    with limited_threads(2):
        lrp.relevance(X[:1], 3)  # one sample: one part
        with_class = len(calls)
        lrp.relevance(X[:1], np.ones(10))
    assert len(calls) == 2 * with_class
