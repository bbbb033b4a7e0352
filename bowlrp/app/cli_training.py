"""Preparing a training set for ``bowlrp fit``: estimator parameters from the command line, the
labelled images (class folders or a CSV), skipping what cannot be used, and the holdout split.

Nothing here depends on the kind of model being fitted except :func:`fit_params` (which checks
the flags against the estimator class it is given), so another model can reuse the rest.
"""

from __future__ import annotations

import ast
import os

import numpy as np

from bowlrp.app.cli_common import Failure, UsageError, warn

# command-line flag (dest) -> estimator parameter (BoWClassifier's, or ConvNetClassifier's for
# --model cnn); fit_params refuses a flag the chosen estimator does not have
FIT_FLAGS = {
    "epochs": "epochs",
    "architecture": "architecture",
    "augment": "augment",
    "learning_rate": "learning_rate",
    "vocabulary_size": "vocabulary_size",
    "kernel": "kernel",
    "gamma": "gamma",
    "C": "C",
    "mapping": "mapping",
    "p": "p",
    "step": "step",
    "bin_sizes": "bin_sizes",
    "color": "color",
    "sift_backend": "backend",
    "random_state": "random_state",
    "n_jobs": "n_jobs",
}


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def fit_params(args, estimator_class) -> dict:
    """The estimator parameters given on the command line (flags of :data:`FIT_FLAGS` and ``--set``)."""
    valid = estimator_class().get_params()
    params = {}
    for dest, name in FIT_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None and name in valid:
            params[name] = value
        elif value is not None:
            raise UsageError(f"--{dest.replace('_', '-')} is not a parameter of {estimator_class.__name__}")
    for assignment in args.set or []:
        name, sep, text = assignment.partition("=")
        if not sep:
            raise UsageError(f"--set expects NAME=VALUE, got {assignment!r}")
        if name not in valid:
            raise UsageError(f"unknown {estimator_class.__name__} parameter {name!r}; "
                             f"known: {', '.join(sorted(valid))}")
        params[name] = _literal(text)
    return params


def training_set(source: str):
    """(paths, labels) of a folder of class sub-folders or of a CSV ``path,label``."""
    from bowlrp.imageio import labelled_folder, read_label_csv

    if not os.path.exists(source):
        raise UsageError(f"training data {source!r} does not exist")
    try:
        if os.path.isdir(source):
            return labelled_folder(source)
        if source.lower().endswith(".csv"):
            return read_label_csv(source)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    raise UsageError(f"training data must be a folder with one sub-folder per class or a CSV, got {source!r}")


def check_params(estimator) -> None:
    """Run the estimator's own parameter checks now, before any image is read (a usage error)."""
    check = getattr(estimator, "_check_params", None) or getattr(estimator, "_validate_params", None)
    try:
        if check is not None:
            check()
        from bowlrp.bow.classifier import BoWClassifier

        if isinstance(estimator, BoWClassifier):  # the feature extractor checks its own parameters
            from bowlrp.bow.features import DenseSIFT

            DenseSIFT(step=estimator.step, bin_sizes=estimator.bin_sizes, color=estimator.color,
                      backend=estimator.backend, n_jobs=estimator.n_jobs).fit()
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    n_jobs = estimator.get_params().get("n_jobs")
    if n_jobs == 0:
        raise UsageError("-j/--n-jobs must be a positive number of workers or negative (-1 = all cores), "
                         "got 0")


def read_training_images(paths, labels, read_mode: str, min_side: int, strict: bool,
                         max_pixels=None):
    """Read the training images; skip (and list on stderr) unreadable ones and ones smaller than
    ``min_side`` pixels. Returns ``(images, y, skipped)`` with ``skipped = [(path, reason)]``.

    Raises
    ------
    Failure
        ``strict`` and something was skipped, or fewer than two classes remain.
    """
    from bowlrp.imageio import read_images

    images, ok, skipped = read_images(paths, mode=read_mode, max_pixels=max_pixels)
    # images smaller than one descriptor support carry no feature: skip them like unreadable files
    usable = [min(image.shape[:2]) >= min_side for image in images]
    skipped += [(path, f"smaller than one descriptor support ({min_side}x{min_side} pixels)")
                for path, use in zip(ok, usable) if not use]
    images = [image for image, use in zip(images, usable) if use]
    ok = [path for path, use in zip(ok, usable) if use]
    for path, reason in skipped:
        warn(f"skipped {path}: {reason}")
    if strict and skipped:
        raise Failure(f"{len(skipped)} training images were skipped (--strict)")
    keep = {p: i for i, p in enumerate(paths)}
    y = np.array([labels[keep[p]] for p in ok])
    if len(set(y.tolist())) < 2:
        raise Failure(f"need images of at least two classes, got {sorted(set(y.tolist()))}")
    return images, y, skipped


def check_holdout(fraction) -> None:
    """A usage error unless ``fraction`` is None/0 (no holdout) or in (0, 1)."""
    if fraction and not 0.0 < fraction < 1.0:
        raise UsageError(f"--holdout must be a fraction in (0, 1), got {fraction}")


def holdout_split(images, y, fraction, random_state):
    """``(fit_images, fit_y, test_images, test_y)``: a stratified ``fraction`` held out (test parts
    are None without a holdout)."""
    if not fraction:
        return images, y, None, None
    from sklearn.model_selection import train_test_split

    check_holdout(fraction)
    index = np.arange(len(y))
    try:
        train_idx, test_idx = train_test_split(index, test_size=fraction, stratify=y,
                                               random_state=random_state or 0)
    except ValueError as exc:
        raise UsageError(f"--holdout {fraction}: {exc}") from None
    return ([images[i] for i in train_idx], y[train_idx], [images[i] for i in test_idx], y[test_idx])


def set_verbose(estimator, verbose) -> None:
    """Set ``verbose`` on a fitted estimator and on its fitted parts (extractor, SVMs), which copied
    the flag at fit time: a model saved quiet does not log every image when it explains."""
    estimator.set_params(verbose=verbose)
    for part in vars(estimator).values():
        if hasattr(part, "verbose") and hasattr(part, "get_params"):
            part.verbose = estimator.verbose
