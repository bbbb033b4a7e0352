"""One-vs-rest kernel SVMs on one shared precomputed Gram matrix (SPEC §1, multi-class).

Every class score is a kernel expansion f_c(x) = b_c + sum_i a_ci k(x_i, x) over ONE set of support
vectors (the union over the binary problems, with a_ci = 0 where problem c does not use x_i), which
is what the explanation decomposes. scikit-learn's multi-class ``SVC`` votes one-vs-one and its
scores cannot be decomposed that way, so each binary problem here is a separate
``SVC(kernel="precomputed")`` fitted on the same Gram matrix.
"""

from __future__ import annotations

import sys
import time
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.svm import SVC
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bowlrp.bow.kernels import KERNELS, channel_bounds, gram

__all__ = ["OneVsRestKernelSVC"]


class OneVsRestKernelSVC(ClassifierMixin, BaseEstimator):
    """One-vs-rest SVMs with a histogram kernel computed by :func:`bowlrp.bow.kernels.gram`.

    Parameters
    ----------
    kernel : {"linear", "intersection", "chi2", "hellinger", "exp_chi2", "rbf"}, default="intersection"
        All but "linear" and "rbf" need non-negative features (histograms).
    C : float, default=1.0
        SVM regularisation.
    gamma : float, default=1.0
        Bandwidth of "exp_chi2" and "rbf" (ignored otherwise).
    channel_sizes : tuple of int, optional
        Split the features into consecutive channels of these sizes (default: one channel).
    channel_weights : array-like of float, optional
        Weight beta_u of each channel in k = sum_u beta_u k_u (default all 1).
    class_weight : dict, "balanced" or None, default=None
        Per-class weights, applied per training sample (C_i = C w_{y_i}) in every binary problem.
    tol : float, default=1e-3
        libsvm stopping tolerance.
    max_iter : int, default=-1
        libsvm iteration limit (-1: none).
    verbose : bool, default=False
        Report Gram matrix and SVM progress on stderr.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    support_ : ndarray of shape (n_sv,)
        Training indices of the support vectors (union over the binary problems).
    support_vectors_ : ndarray of shape (n_sv, n_features_in_)
    dual_coef_ : ndarray of shape (n_outputs, n_sv)
        a_i = y_i alpha_i per problem; n_outputs = 1 for two classes (scores ``classes_[1]``).
    intercept_ : ndarray of shape (n_outputs,)
    channel_slices_ : list of slice
    channel_weights_ : ndarray of shape (n_channels,)
    n_features_in_ : int
    n_iter_ : ndarray of shape (n_outputs,)
        libsvm iterations of each binary problem.

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.svm import OneVsRestKernelSVC
    >>> X = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
    >>> clf = OneVsRestKernelSVC(kernel="chi2", C=10.0).fit(X, [0, 0, 1, 1])
    >>> clf.predict([[0.7, 0.3], [0.3, 0.7]]).tolist()
    [0, 1]
    """

    _parameter_constraints = {
        "kernel": [StrOptions(set(KERNELS))],
        "C": [Interval(Real, 0, None, closed="neither")],
        "gamma": [Interval(Real, 0, None, closed="neither")],
        "channel_sizes": [tuple, list, None],
        "channel_weights": ["array-like", None],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, -1, None, closed="left")],
        "verbose": ["boolean"],
    }

    def __init__(self, kernel="intersection", C=1.0, gamma=1.0, channel_sizes=None, channel_weights=None,
                 class_weight=None, tol=1e-3, max_iter=-1, verbose=False):
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.channel_sizes = channel_sizes
        self.channel_weights = channel_weights
        self.class_weight = class_weight
        self.tol = tol
        self.max_iter = max_iter
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = self.kernel not in ("linear", "rbf")
        return tags

    def _kernel_kwargs(self):
        return dict(gamma=self.gamma, weights=self.channel_weights_, slices=self.channel_slices_)

    def _channels(self, n_features):
        if self.channel_sizes is None:
            slices = [slice(0, n_features)]
        else:
            sizes = [int(s) for s in self.channel_sizes]
            bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
            slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        channel_bounds(n_features, slices)  # validates that the channels tile the features
        if self.channel_weights is None:
            weights = np.ones(len(slices))
        else:
            weights = np.asarray(self.channel_weights, dtype=np.float64).ravel()
            if weights.shape != (len(slices),) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
                raise ValueError(f"channel_weights must be {len(slices)} finite non-negative numbers, "
                                 f"got {self.channel_weights!r}")
        return slices, weights

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit one binary SVM per class (one in total for two classes) on a shared Gram matrix."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if self.classes_.shape[0] < 2:
            raise ValueError(f"need samples of at least 2 classes to fit a classifier, got 1 class "
                             f"({self.classes_[0]!r})")
        self.channel_slices_, self.channel_weights_ = self._channels(X.shape[1])
        start = time.perf_counter()
        K = gram(self.kernel, X, **self._kernel_kwargs(), verbose=self.verbose)
        problems = [y_idx == 1] if self.classes_.shape[0] == 2 else [y_idx == c
                                                                      for c in range(len(self.classes_))]
        dual = np.zeros((len(problems), X.shape[0]))
        intercept = np.zeros(len(problems))
        # class weights act per sample (C_i = C * w_{y_i}), so "the rest" keeps its own classes' weights
        sample_weight = compute_sample_weight(self.class_weight, y)
        self.n_iter_ = np.zeros(len(problems), dtype=np.int64)
        for o, positive in enumerate(problems):
            svc = SVC(kernel="precomputed", C=self.C, tol=self.tol, max_iter=self.max_iter)
            svc.fit(K, positive.astype(int), sample_weight=sample_weight)
            self.n_iter_[o] = int(np.max(svc.n_iter_))
            # binary SVC: decision = dual_coef_ @ K[support] + intercept_, positive = label 1
            dual[o, svc.support_] = svc.dual_coef_[0]
            intercept[o] = svc.intercept_[0]
            if self.verbose:
                print(f"[bowlrp] SVM {o + 1}/{len(problems)}: {svc.support_.shape[0]} support vectors "
                      f"({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
        self.support_ = np.flatnonzero(np.any(dual != 0, axis=0))
        self.support_vectors_ = X[self.support_].copy()
        self.dual_coef_ = dual[:, self.support_].copy()
        self.intercept_ = intercept
        return self

    def decision_matrix(self, X):
        """Scores (n, n_outputs): b_o + sum_i a_oi k(x_i, x) for every output o (2-D, also binary)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        K = gram(self.kernel, X, self.support_vectors_, **self._kernel_kwargs())
        return K @ self.dual_coef_.T + self.intercept_

    def decision_function(self, X):
        """Scores: (n,) for two classes (positive = ``classes_[1]``), else (n, n_classes)."""
        scores = self.decision_matrix(X)
        return scores[:, 0] if self.classes_.shape[0] == 2 else scores

    def predict(self, X):
        """Class with the largest one-vs-rest score (binary: ``classes_[1]`` where the score > 0)."""
        scores = self.decision_matrix(X)
        if self.classes_.shape[0] == 2:
            return self.classes_[(scores[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]
