"""Plots of perturbation curves (matplotlib is imported lazily, as scikit-learn's displays do)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_perturbation_curves"]


def plot_perturbation_curves(curves, ax=None, normalize=False, title=None):
    """Plot mean score against perturbation steps, one line per curve.

    Parameters
    ----------
    curves : dict of label -> PerturbationCurve (labels may be (method, order) tuples)
    ax : matplotlib Axes or None
        None creates a new figure.
    normalize : bool
        Divide each mean curve by its value at k = 0.
    title : str or None

    Returns
    -------
    matplotlib Axes
    """
    if ax is None:
        import matplotlib.pyplot as plt  # lazily: plotting is optional

        _, ax = plt.subplots(figsize=(5, 3.5))
    for label, curve in curves.items():
        name = " / ".join(label) if isinstance(label, tuple) else str(label)
        y = curve.mean_curve
        if normalize and y[0] != 0:
            y = y / y[0]
        style = "--" if curve.order == "lerf" else (":" if curve.order == "random" else "-")
        ax.plot(np.arange(y.size), y, style, label=f"{name} (AOPC {curve.aopc:.3g})")
    ax.set_xlabel(f"perturbation steps ({next(iter(curves.values())).region_size} px regions)")
    ax.set_ylabel("mean score" + (" / initial" if normalize else ""))
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    return ax
