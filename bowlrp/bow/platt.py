"""Platt scaling: turn SVM scores into probabilities, P(y = 1 | f) = 1 / (1 + exp(A f + B)).

As libsvm (and so ``sklearn.svm.SVC(probability=True)``) does: the sigmoid is fitted on
out-of-fold decision values of an internal cross-validation, with Platt's smoothed targets
(N+ + 1) / (N+ + 2) and 1 / (N- + 2), by the Newton method with backtracking of Lin, Lin & Weng,
"A note on Platt's probabilistic outputs for support vector machines" (Machine Learning 68, 2007),
which is numerically safe for large |A f + B|.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_sigmoid", "sigmoid_probability"]


def sigmoid_probability(f, A, B):
    """P(y = 1 | f) = 1 / (1 + exp(A f + B)), evaluated without overflow."""
    t = A * np.asarray(f, dtype=np.float64) + B
    out = np.empty_like(t)
    pos = t >= 0
    e = np.exp(-t[pos])
    out[pos] = e / (1.0 + e)
    out[~pos] = 1.0 / (1.0 + np.exp(t[~pos]))
    return out


def fit_sigmoid(f, positive, max_iter=100, min_step=1e-10, sigma=1e-12, eps=1e-5):
    """Fit (A, B) of Platt's sigmoid to decision values ``f`` and boolean labels ``positive``.

    Returns
    -------
    (A, B) : tuple of float

    Examples
    --------
    >>> import numpy as np
    >>> f = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
    >>> A, B = fit_sigmoid(f, f > 0)
    >>> bool(A < 0)
    True
    """
    f = np.asarray(f, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    hi, lo = (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0)
    t = np.where(positive, hi, lo)
    A, B = 0.0, float(np.log((n_neg + 1.0) / (n_pos + 1.0)))

    def objective(A, B):
        fApB = f * A + B
        return float(np.sum(np.where(fApB >= 0, t * fApB + np.log1p(np.exp(-np.abs(fApB))),
                                     (t - 1.0) * fApB + np.log1p(np.exp(-np.abs(fApB))))))

    value = objective(A, B)
    for _ in range(max_iter):
        p = sigmoid_probability(f, A, B)  # = 1 / (1 + exp(fApB))
        q = 1.0 - p
        d2 = p * q
        h11 = sigma + float(np.dot(f * f, d2))
        h22 = sigma + float(d2.sum())
        h21 = float(np.dot(f, d2))
        d1 = t - p
        g1, g2 = float(np.dot(f, d1)), float(d1.sum())
        if abs(g1) < eps and abs(g2) < eps:
            break
        det = h11 * h22 - h21 * h21
        dA = -(h22 * g1 - h21 * g2) / det
        dB = -(-h21 * g1 + h11 * g2) / det
        gd = g1 * dA + g2 * dB
        step = 1.0
        while step >= min_step:  # backtracking line search (sufficient decrease)
            newA, newB = A + step * dA, B + step * dB
            new_value = objective(newA, newB)
            if new_value < value + 1e-4 * step * gd:
                A, B, value = newA, newB, new_value
                break
            step /= 2.0
        else:
            break  # no decrease possible: at the optimum up to rounding
    return float(A), float(B)
