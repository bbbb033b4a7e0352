"""The interface every explained model offers the application: the :class:`Explainer` protocol.

The two model branches (``bowlrp.bow``'s BoW/SVM pipeline and ``nets``' networks) meet the
application (command line, batch runs, evaluation, reports) only through this protocol; the
adapters in :mod:`bowlrp.app.adapters` implement it for each branch. A new kind of model needs
one more adapter, nothing else. It lives in the core so that both branches and the application
can name it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Explainer"]


@runtime_checkable
class Explainer(Protocol):
    """What the application needs from a model it explains.

    ``isinstance(obj, Explainer)`` checks that the members exist (not their signatures).

    Attributes
    ----------
    kind : str
        A short name of the model branch (``"bow"``, ``"network"``); shown to users and recorded
        in a run's settings.
    classes : list or None
        The class labels a target is chosen from, or None when targets are output indices.

    Notes
    -----
    Implementations must be picklable: joblib and dask ship them to worker processes.
    """

    kind: str

    @property
    def classes(self) -> list | None:
        """Class labels (targets are labels), or None (targets are output indices)."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the model and settings; a resumed run must describe the same."""
        ...

    def prepare(self, images: list) -> list:
        """Images as read from disk -> the images the model sees (heatmaps are drawn on these and
        evaluations perturb them)."""
        ...

    def explain(self, images: list, target: Any = None) -> list:
        """One :class:`~bowlrp.heatmap.Heatmap` per image (raw, as read) for ``target`` (None: the
        predicted class), each with its prepared image attached."""
        ...

    def decision(self, prepared: list, batch_size: int | None = None) -> Any:
        """``(n, n_outputs)`` float64 scores of prepared images."""
        ...

    def score_function(self, target: Any) -> Callable[[list], Any]:
        """A callable: prepared images -> the explained score f(x) of ``target`` per image (the
        number a heatmap's ``score`` holds), for perturbation curves."""
        ...
