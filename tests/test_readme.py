"""The README's Python examples run as written (on the real data they name) and say what they claim."""

import pathlib
import re

import numpy as np
import pytest

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _block(first_line_start):
    found = [b for b in BLOCKS if b.startswith(first_line_start)]
    assert len(found) == 1, f"README has no single python block starting with {first_line_start!r}"
    return found[0]


def test_bow_example(tmp_path, monkeypatch):
    import warnings

    monkeypatch.chdir(tmp_path)
    scope = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # photos large enough: no CoarseGridWarning (nor anything else)
        exec(compile(_block("from bowlrp import BoWClassifier"), "README-bow", "exec"), scope)
    h, test, clf = scope["h"], scope["test"], scope["clf"]
    assert clf.score(list(test.images), test.labels) >= 0.85  # the README says 0.90
    assert abs(h.score - h.relevance.sum()) <= 1e-9 * max(1.0, abs(h.score))
    assert (tmp_path / "eye.png").is_file() and (tmp_path / "eye.npz").is_file()
    # a meaningful map: the eye scenes put their positive relevance on the eye, far above chance
    from bowlrp.evaluation import mask_fraction, relevance_mass_accuracy

    eyes = [i for i in range(4) if test.labels[i] == 1]
    mass = relevance_mass_accuracy([scope["maps"][i] for i in eyes], test.positive_masks[eyes])
    assert np.mean(mass) > 2 * np.mean(mask_fraction(test.positive_masks[eyes]))


def test_network_example():
    scope = {}
    exec(compile(_block("import nets"), "README-nets", "exec"), scope)
    R, maps, X = scope["R"], scope["maps"], scope["X"]
    assert R.shape == X[:8].shape == (8, 64) and len(maps) == 8 and maps[0].relevance.shape == (8, 8)
    assert np.all(np.isfinite(R))
    # what the explanation misses (score - relevance) is exactly what the diagnostics say the biases
    # and epsilons absorbed, measured from the rules' denominators (not by difference)
    diag = scope["diag"]
    for i, m in enumerate(maps):
        absorbed = m.extras["bias_absorbed"].sum() + m.extras["stabiliser_absorbed"].sum()
        assert m.residual == pytest.approx(absorbed, abs=1e-9)
        assert diag.residual[i] == pytest.approx(diag.absorbed[i], abs=1e-9)
        assert m.score == pytest.approx(diag.score[i], abs=1e-12)


def test_graph_example():
    import nets

    scope = {}
    exec(compile(_block("import numpy as np, nets"), "README-graph", "exec"), scope)
    R, diag, model, images = scope["R"], scope["diag"], scope["model"], scope["images"]
    assert R.shape == images[:4].shape and isinstance(model, nets.Graph)
    logits = model(images[:4]).max(axis=1)
    np.testing.assert_allclose(R.sum(axis=(1, 2, 3)) + diag.absorbed, logits, rtol=1e-9, atol=1e-9)
    assert diag.layer_names == model.names


def test_pytorch_example():
    torch = pytest.importorskip("torch")
    import nets

    scope = {}
    exec(compile(_block("import torch, nets"), "README-torch", "exec"), scope)
    model, maps, images = scope["model"], scope["maps"], scope["images"]
    assert isinstance(model, nets.Graph) and model.input_shape == (1, 8, 8) and len(maps) == 8
    with torch.no_grad():
        logits = scope["torch_model"](images).numpy()
    np.testing.assert_allclose(model(images.numpy()), logits, rtol=1e-5, atol=1e-5)
    for m in maps:  # the predicted class's logit, split into pixels and what biases/epsilon took
        assert m.relevance.shape == (8, 8)
        assert m.relevance.sum() + m.residual == pytest.approx(m.score, abs=1e-9)
