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
    # epsilon-LRP with small epsilon: pixel relevance + what the biases absorbed = the logit
    for m in maps:
        assert m.relevance.sum() + m.residual == pytest.approx(m.score, abs=1e-9)
