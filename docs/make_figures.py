"""Draw the README's figures into docs/ (run: ``.venv/bin/python docs/make_figures.py``).

``bow_cat_eye.png``: the README's bag-of-words example, drawn. The classifier is fitted exactly as
in the README; the figure shows held-out photo scenes (a pasted cat's eye or coffee cup on grass,
gravel or brick) next to the relevance for "cat's eye", each map on its own colour scale. Takes a few
seconds; the numbers it prints are the ones the README quotes.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np


def bow_cat_eye(out_dir) -> dict:
    """Fit the README's BoW model, draw four held-out scenes and their maps; returns the numbers."""
    from bowlrp import BoWClassifier
    from bowlrp.app.photos import photo_scenes
    from bowlrp.evaluation import mask_fraction, relevance_mass_accuracy
    from bowlrp.montages import montage

    scenes = photo_scenes(120, random_state=0)
    train, test = scenes.subset(slice(0, 60)), scenes.subset(slice(60, None))
    clf = BoWClassifier(step=4, bin_sizes=(4,), vocabulary_size=64, kernel="intersection",
                        random_state=0).fit(list(train.images), train.labels)
    maps = clf.explain(list(test.images), target=1)
    eyes = test.labels == 1
    numbers = {
        "held_out_accuracy": float(clf.score(list(test.images), test.labels)),
        "max_conservation_error": max(abs(m.score - m.total) for m in maps),
        "eye_mass": float(np.mean(relevance_mass_accuracy([m for m, e in zip(maps, eyes) if e],
                                                          test.positive_masks[eyes]))),
        "chance_mass": float(np.mean(mask_fraction(test.positive_masks[eyes]))),
    }
    cells, labels = [], []
    for i in range(4):  # labels alternate: cup, eye, cup, eye
        cells += [test.images[i], maps[i]]
        labels += [test.class_names[test.labels[i]], f"score of cat's eye {maps[i].score:+.2f}"]
    path = pathlib.Path(out_dir) / "bow_cat_eye.png"
    montage(cells, labels=labels, ncols=4, cell_size=160, path=path)
    numbers["figure"] = str(path)
    return numbers


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent),
                        help="folder for the figures (default: docs/)")
    args = parser.parse_args(argv)
    for name, value in bow_cat_eye(args.out).items():
        print(f"{name}: {value:.3g}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
