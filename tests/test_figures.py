"""docs/make_figures.py draws the README's BoW figure from a fit that matches the README's numbers."""

import importlib.util
import pathlib

import numpy as np
from PIL import Image

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "make_figures.py"


def test_bow_figure_is_drawn_with_the_readme_numbers(tmp_path):
    spec = importlib.util.spec_from_file_location("make_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    numbers = module.bow_cat_eye(tmp_path)
    picture = np.asarray(Image.open(tmp_path / "bow_cat_eye.png"))
    assert picture.shape[1] >= 4 * 160 and picture.shape[0] >= 2 * 160  # 2 x (image | map) per row
    # the committed figure is this one (up to font rendering of another Pillow version)
    committed = np.asarray(Image.open(SCRIPT.parent / "bow_cat_eye.png"))
    assert committed.shape == picture.shape and np.abs(committed.astype(int) - picture).mean() < 1.0
    assert numbers["max_conservation_error"] <= 1e-9
    readme = (SCRIPT.parents[1] / "README.md").read_text()
    assert f"Held-out accuracy {numbers['held_out_accuracy']:.2f}" in readme
    assert f"{numbers['eye_mass']:.0%} of the positive relevance" in readme
    assert f"covers {numbers['chance_mass']:.0%} of" in readme
