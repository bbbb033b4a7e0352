"""Faithfulness and localization metrics for heatmaps (SPEC section 4), shared by both branches.

A package: ``perturbation`` (region perturbation, AOPC), ``localization`` (masks and boxes),
``plotting``; every public name is importable from ``bowlrp.evaluation`` itself.

Everything here works on a plain callable ``model(images) -> scores``, so a ``BoWClassifier``
(``clf.decision_function``) and a network (``lambda X: net(X.reshape(len(X), -1))``) are scored by
the same code.

Region perturbation (Samek et al., "Evaluating the visualization of what a deep neural network has
learned", IEEE TNNLS 2017): the image is cut into non-overlapping r x r regions (the last row and
column of regions are cropped at the border), the regions are ordered by summed relevance (MoRF: most
relevant first; LeRF: least relevant first; or at random) and replaced cumulatively, ``regions_per_step``
per step, by a perturbation; the model is rescored after every step. The area over the perturbation
curve is

    AOPC = 1/(L+1) * mean over images of sum_{k=0..L} (f(x^0) - f(x^k)).

Our convention (the paper leaves it open): every image gets ONE replacement image (uniform noise,
a blurred copy, or a constant), drawn from a random stream that depends only on ``random_state`` and
the image's index. Flipping a region copies the replacement's pixels, so MoRF, LeRF and the random
order of the same image see the very same noise, and results do not depend on the batch size.

Localization against ground-truth masks or boxes: relevance mass accuracy (share of the positive
relevance inside the mask), relevance rank accuracy (share of the K most relevant pixels inside the
mask, K = mask size) and the pointing game (is the most relevant pixel inside the mask). Ties are
scored by their expectation under random tie-breaking, so a constant heatmap scores chance level
instead of whatever the raster order favours.
"""

from __future__ import annotations

from bowlrp.evaluation._inputs import boxes_to_masks
from bowlrp.evaluation.localization import (
    localization_scores,
    mask_fraction,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from bowlrp.evaluation.perturbation import (
    ORDERS,
    PERTURBATIONS,
    PerturbationCurve,
    aopc,
    aopc_per_image,
    aopc_sem,
    perturbation_curves,
    region_order,
    region_perturbation,
)
from bowlrp.evaluation.plotting import plot_perturbation_curves

__all__ = [
    "PerturbationCurve",
    "region_perturbation",
    "perturbation_curves",
    "aopc",
    "aopc_per_image",
    "aopc_sem",
    "region_order",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "pointing_game",
    "mask_fraction",
    "localization_scores",
    "boxes_to_masks",
    "plot_perturbation_curves",
    "ORDERS",
    "PERTURBATIONS",
]
