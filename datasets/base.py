"""The container every loader of ``datasets`` returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LabelledImages"]


@dataclass(frozen=True)
class LabelledImages:
    """Images with one integer label each.

    Attributes
    ----------
    images : ndarray, shape (n, H, W) or (n, H, W, 3)
        float64, values in [0, 1].
    labels : ndarray, shape (n,)
        int64 class indices into ``class_names``.
    class_names : tuple of str
    source : str
        Where the data came from (a path, or the bundled package's name), for reports.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple
    source: str = ""

    def __len__(self):
        return len(self.labels)

    def subset(self, index) -> LabelledImages:
        """The images selected by ``index`` (anything that indexes a numpy array)."""
        idx = np.atleast_1d(np.arange(len(self))[index])
        return LabelledImages(self.images[idx], self.labels[idx], self.class_names, self.source)

    def balanced(self, per_class, random_state=None) -> LabelledImages:
        """At most ``per_class`` images of every class, drawn without replacement (seeded)."""
        rng = np.random.default_rng(random_state)
        picks = []
        for c in np.unique(self.labels):
            idx = np.flatnonzero(self.labels == c)
            picks.append(rng.choice(idx, size=min(per_class, idx.size), replace=False))
        return self.subset(np.sort(np.concatenate(picks)))
