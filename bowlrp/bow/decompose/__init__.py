"""Explaining a bag-of-words/SVM prediction: the forward pass of Bach et al. (2015) run backwards.

The forward pipeline is image -> local features -> mapping m(l) -> p-means pooling -> BoW vector x ->
kernel SVM f(x) = b + sum_i a_i k(x_i, x). One module per backward step:

=================  ==========================================================================
module             step
=================  ==========================================================================
``expansion``      :class:`KernelExpansion`: one SVM output, the thing being explained
``kernel``         Step 3, score -> BoW dimensions: exact for sum-decomposable kernels (Eq 24,
                   :func:`bow_relevance`); :func:`explain_bow` picks Eq 24 or the Taylor step
``taylor``         Step 3 for differentiable kernels (Eq 25, :func:`taylor_relevance`) with the
                   root search of Eqs 17-18 (:func:`find_root`, on :mod:`bowlrp.roots`; the
                   search of all segments in one numba call, ``_taylor_kernels``)
``pooling``        Step 2, pooling -> local features (Eqs 26-32, :func:`feature_relevance`)
``pixels``         Step 1, features -> pixels (Eqs 33-34, :func:`pixel_relevance`)
``batch``          Steps 2 and 1 of a whole explained batch in numba kernels over images
                   (``_kernels``, also behind the two functions above)
``explain``        the orchestrator (:func:`explain_classifier`, what ``BoWClassifier.explain``
                   runs), using the classifier's public methods only
``tiles``          overlapping-tile maps of the paper's Fig. 6 (:func:`explain_tiles`)
=================  ==========================================================================

Each step conserves exactly what it is given (up to float rounding), so for sum-decomposable kernels
the pixel map sums to f(x); for Taylor kernels the residual rho = f(x) - sum R3 is reported in
``Heatmap.residual`` and ``extras["taylor"]``. Which kernel is which comes from the kernel registry
(:mod:`bowlrp.bow.kernels`). EXTENSIONS where the paper is silent are documented in each step's module.
"""

from __future__ import annotations

from bowlrp.bow.decompose.expansion import KernelExpansion
from bowlrp.bow.decompose.explain import explain_classifier
from bowlrp.bow.decompose.kernel import bow_relevance, explain_bow
from bowlrp.bow.decompose.pixels import pixel_relevance
from bowlrp.bow.decompose.pooling import feature_relevance
from bowlrp.bow.decompose.taylor import TaylorResult, find_root, find_roots, taylor_relevance
from bowlrp.bow.decompose.tiles import explain_tiles, tile_boxes

__all__ = [
    "KernelExpansion",
    "bow_relevance",
    "taylor_relevance",
    "find_root",
    "find_roots",
    "TaylorResult",
    "explain_bow",
    "feature_relevance",
    "pixel_relevance",
    "explain_classifier",
    "explain_tiles",
    "tile_boxes",
]
