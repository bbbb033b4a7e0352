"""Step 3 of the explanation, score -> BoW dimensions (Bach et al. 2015, Eqs 24-25).

Backward of the kernel SVM. Sum-decomposable kernels split f(x) exactly over the V dimensions
(Eq 24, :func:`bow_relevance`); differentiable kernels take a first-order Taylor step at a root of f
(Eq 25, :mod:`bowlrp.bow.decompose.taylor`). :func:`explain_bow` picks the right one from the kernel
registry.

EXTENSION (several channels): the intercept b is split evenly over all V_total dimensions of the
concatenated BoW vector, whatever channel a dimension belongs to: R3_d = b / V_total +
beta_u(d) sum_i a_i k_d(x_id, x_d).
"""

from __future__ import annotations

import numpy as np

from bowlrp.bow.decompose.expansion import KernelExpansion
from bowlrp.bow.decompose.taylor import find_roots

__all__ = ["bow_relevance", "explain_bow"]


def bow_relevance(expansion: KernelExpansion, X) -> np.ndarray:
    """Step 3 for sum-decomposable kernels (Eq 24): R3_d = b / V + beta_u(d) sum_i a_i k_d(x_id, x_d).

    Exact: ``R3.sum(axis=1)`` equals f(x) up to float rounding. The intercept is split evenly over
    all V dimensions (EXTENSION for several channels; see the module docstring).

    Parameters
    ----------
    expansion : KernelExpansion
        The explained output (a sum-decomposable kernel such as ``"intersection"``).
    X : array-like of shape (n, V) or (V,)
        BoW vectors.

    Returns
    -------
    ndarray of shape (n, V)

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.decompose import KernelExpansion, bow_relevance
    >>> f = KernelExpansion("intersection", np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([2.0, -1.0]), 0.2)
    >>> R3 = bow_relevance(f, np.array([0.25, 0.75]))
    >>> R3
    array([[0.35, 1.1 ]])
    >>> round(float(R3.sum()), 12), round(float(f.decision(np.array([0.25, 0.75]))[0]), 12)
    (1.45, 1.45)
    """
    contrib = expansion.contributions(X)
    return contrib + expansion.intercept / expansion.n_dims


def explain_bow(expansion: KernelExpansion, X, candidates=None, n_candidates=16, n_roots=1,
                random_state=0, candidate_scores=None) -> tuple[np.ndarray, list]:
    """Step 3 for a batch of BoW vectors, whatever the kernel.

    Sum-decomposable kernels use Eq 24 (one batched call); differentiable kernels the root search
    and Taylor expansion of :func:`~bowlrp.bow.decompose.taylor.find_root`, with ``candidates`` (the
    training BoWs) and optionally their scores f(candidates) (computed once for the whole batch when
    not given).

    Returns
    -------
    R3 : ndarray of shape (n, V)
    taylor : list of TaylorResult or None
        One per row for the Taylor kernels, ``None`` entries for exact kernels.
    """
    X = expansion.check_points(X)
    if expansion.exact:
        return bow_relevance(expansion, X), [None] * X.shape[0]
    if candidates is None:
        raise ValueError(f"kernel {expansion.kernel!r} is explained by a Taylor step and needs candidate "
                         "BoW vectors for its root search (the training BoWs)")
    if candidate_scores is None:  # (the candidates are checked there, and again by find_roots)
        candidate_scores = expansion.decision(candidates)
    # An int seed (or None) seeds every row's draw on its own, so a row's explanation does not depend
    # on the other rows of the batch; a RandomState instance is consumed row after row.
    results = find_roots(expansion, X, candidates, n_candidates=n_candidates, n_roots=n_roots,
                         random_state=random_state, candidate_scores=candidate_scores)
    return np.stack([r.relevance for r in results]) if results else np.zeros((0, X.shape[1])), results
