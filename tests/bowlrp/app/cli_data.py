"""Small real data sets and models on disk for the command-line, batch, report and dask tests.

Everything is generated from bundled data (scikit-learn's digits, the project's synthetic scenes)
and written as files, as a user would have them, plus the kinds of bad files real folders contain.
Models are tiny so that the tests run in seconds.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

SCENE_SIZE = 40  # pixels; large enough for the BoW descriptors (support 16 px), small enough to be fast
NET_SIDE = 16  # the scene network sees 16 x 16 gray images


def digits_data(n: int = 400):
    """(X in [0, 1] of shape (n, 64), labels) from scikit-learn's bundled 8x8 digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data[:n] / 16.0, digits.target[:n]


def digit_png(x: np.ndarray) -> np.ndarray:
    return np.round(x.reshape(8, 8) * 255.0).astype(np.uint8)


def write_digits(folder, n: int = 12, start: int = 1000) -> list[str]:
    """Digits (not used for training the digit network: index >= ``start``) as 8x8 PNG files."""
    from sklearn.datasets import load_digits

    os.makedirs(folder, exist_ok=True)
    data = load_digits().data[start:start + n] / 16.0
    paths = []
    for i, x in enumerate(data):
        path = os.path.join(folder, f"digit{i:03d}.png")
        Image.fromarray(digit_png(x)).save(path)
        paths.append(path)
    return paths


def write_bad_files(folder) -> dict[str, str]:
    """The bad files a real image folder contains: text with an image name, a truncated PNG, an
    empty file. Returns name -> path."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    paths["notes"] = os.path.join(folder, "notes.png")
    with open(paths["notes"], "w") as fh:
        fh.write("this is not an image\n")
    good = os.path.join(folder, ".tmp_full.png")
    Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)).save(good)
    with open(good, "rb") as fh:
        data = fh.read()
    os.remove(good)
    paths["truncated"] = os.path.join(folder, "truncated.png")
    with open(paths["truncated"], "wb") as fh:
        fh.write(data[: len(data) // 2])
    paths["empty"] = os.path.join(folder, "empty.jpg")
    open(paths["empty"], "wb").close()
    return paths


def digits_network(path, hidden=(16,)) -> str:
    """An MLP trained on digits, converted with ``nets.from_sklearn`` and saved in our format."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    import nets

    X, y = digits_data(600)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden, random_state=0, max_iter=200).fit(X, y)
    nets.from_sklearn(mlp).save(path)
    return path


def scenes(n: int = 24, random_state: int = 0):
    from bowlrp.app.scenes import make_scenes

    return make_scenes(n_images=n, size=SCENE_SIZE, random_state=random_state)


def write_scenes(root, n: int = 24, random_state: int = 0) -> dict:
    """Synthetic scenes as ``root/train/<class>/sceneNNN.png`` plus ``root/masks/sceneNNN.png``
    (polygon masks) and ``root/train.csv`` (path,label). Returns paths and the Scenes object."""
    data = scenes(n, random_state)
    paths, labels = [], []
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    for i, (image, label) in enumerate(zip(data.images, data.labels)):
        name = data.class_names[label]
        folder = os.path.join(root, "train", name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"scene{i:03d}.png")
        Image.fromarray(np.round(image * 255.0).astype(np.uint8)).save(path)
        mask = data.masks["polygon"][i].astype(np.uint8) * 255
        Image.fromarray(mask).save(os.path.join(root, "masks", f"scene{i:03d}.png"))
        paths.append(path)
        labels.append(name)
    csv_path = os.path.join(root, "train.csv")
    with open(csv_path, "w") as fh:
        fh.write("path,label\n")
        for path, label in zip(paths, labels):
            fh.write(f"{os.path.relpath(path, root)},{label}\n")
    return {"train": os.path.join(root, "train"), "masks": os.path.join(root, "masks"), "csv": csv_path,
            "paths": paths, "labels": labels, "scenes": data}


def scene_network(path, n: int = 60, random_state: int = 1) -> str:
    """An MLP on 16x16 gray scenes (polygons vs circles), converted to nets and saved."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    import nets

    data = scenes(n, random_state)
    small = np.stack([np.asarray(Image.fromarray(im.astype(np.float32), mode="F")
                                 .resize((NET_SIDE, NET_SIDE), Image.BILINEAR)) for im in data.images])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier((24,), random_state=0, max_iter=300).fit(small.reshape(n, -1), data.labels)
    nets.from_sklearn(mlp).save(path)
    return path


def tiny_bow(images, labels, **params):
    """A small BoW/SVM (16 words, intersection kernel) fitted in-process."""
    from bowlrp.bow.classifier import BoWClassifier

    options = {"vocabulary_size": 16, "random_state": 0, **params}
    return BoWClassifier(**options).fit(list(images), np.asarray(labels))
