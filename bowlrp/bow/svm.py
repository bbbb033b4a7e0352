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
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC
from sklearn.utils import check_scalar
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bowlrp.bow.kernels import REGISTRY as _REGISTRY
from bowlrp.bow.kernels import gram, kernel_spec
from bowlrp.bow.platt import fit_sigmoid, sigmoid_probability
from bowlrp.validation import check_channel_slices, check_channel_weights, check_fitted, offsets

__all__ = ["OneVsRestKernelSVC"]


class OneVsRestKernelSVC(ClassifierMixin, BaseEstimator):
    """One-vs-rest SVMs with a histogram kernel computed by :func:`bowlrp.bow.kernels.gram`.

    Parameters
    ----------
    kernel : str, default="intersection"
        A kernel of the registry (:mod:`bowlrp.bow.kernels`): "linear", "intersection", "chi2",
        "hellinger", "exp_chi2", "rbf" or a registered one. All built-ins but "linear" and "rbf" need
        non-negative features (histograms).
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
    probability : bool, default=False
        Also fit Platt sigmoids for :meth:`predict_proba` (as ``sklearn.svm.SVC``): each output's
        sigmoid is fitted on out-of-fold scores of an internal stratified 5-fold cross-validation on
        the same Gram matrix, so fitting costs about 5x more SVM solves. With more than two classes
        the one-vs-rest probabilities are normalised to sum to one.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffling of the internal cross-validation (``probability=True`` only).

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
    probA_, probB_ : ndarray of shape (n_outputs,)
        Platt sigmoid P = 1 / (1 + exp(A f + B)) of each output (``probability=True`` only).

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.svm import OneVsRestKernelSVC
    >>> X = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
    >>> clf = OneVsRestKernelSVC(kernel="chi2", C=10.0).fit(X, [0, 0, 1, 1])
    >>> clf.predict([[0.7, 0.3], [0.3, 0.7]]).tolist()
    [0, 1]
    """

    def __init__(self, kernel="intersection", C=1.0, gamma=1.0, channel_sizes=None, channel_weights=None,
                 class_weight=None, tol=1e-3, max_iter=-1, verbose=False, probability=False,
                 random_state=None):
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.channel_sizes = channel_sizes
        self.channel_weights = channel_weights
        self.class_weight = class_weight
        self.tol = tol
        self.max_iter = max_iter
        self.verbose = verbose
        self.probability = probability
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = self.kernel in _REGISTRY and not kernel_spec(self.kernel).signed
        return tags

    def _check_params(self):
        """Validate the hyper-parameters (explicit checks, public scikit-learn helpers only)."""
        kernel_spec(self.kernel)
        check_scalar(self.C, "C", Real, min_val=0, include_boundaries="neither")
        check_scalar(self.gamma, "gamma", Real, min_val=0, include_boundaries="neither")
        check_scalar(self.tol, "tol", Real, min_val=0, include_boundaries="neither")
        check_scalar(self.max_iter, "max_iter", Integral, min_val=-1)
        for name in ("verbose", "probability"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not (self.class_weight is None or self.class_weight == "balanced"
                or isinstance(self.class_weight, dict)):
            raise ValueError(f"class_weight must be a dict, 'balanced' or None, got {self.class_weight!r}")
        if self.channel_sizes is not None and not isinstance(self.channel_sizes, (tuple, list)):
            raise TypeError(f"channel_sizes must be a tuple of ints or None, got {self.channel_sizes!r}")

    def _kernel_kwargs(self):
        return dict(gamma=self.gamma, weights=self.channel_weights_, slices=self.channel_slices_)

    def _channels(self, n_features):
        if self.channel_sizes is None:
            slices = [slice(0, n_features)]
        else:
            sizes = [int(s) for s in self.channel_sizes]
            bounds = offsets(sizes)
            slices = check_channel_slices([slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])],
                                          n_features)
        try:
            weights = check_channel_weights(self.channel_weights, len(slices))
        except ValueError as exc:
            raise ValueError(f"channel_weights: {exc}") from None
        return slices, weights

    def fit(self, X, y):
        """Fit one binary SVM per class (one in total for two classes) on a shared Gram matrix."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if self.classes_.shape[0] < 2:
            raise ValueError(f"need samples of at least 2 classes to fit a classifier, got 1 class "
                             f"({self.classes_[0]!r})")
        self.channel_slices_, self.channel_weights_ = self._channels(X.shape[1])
        K = gram(self.kernel, X, **self._kernel_kwargs(), verbose=self.verbose)
        # class weights act per sample (C_i = C * w_{y_i}), so "the rest" keeps its own classes' weights
        sample_weight = compute_sample_weight(self.class_weight, y)
        dual, intercept, self.n_iter_ = self._solve(K, y_idx, sample_weight, self.verbose)
        self.support_ = np.flatnonzero(np.any(dual != 0, axis=0))
        self.support_vectors_ = X[self.support_].copy()
        self.dual_coef_ = dual[:, self.support_].copy()
        self.intercept_ = intercept
        if self.probability:
            self.probA_, self.probB_ = self._fit_platt(K, y_idx, sample_weight)
        return self

    def _problems(self, y_idx):
        """Positive samples of each binary problem: classes_[1] for two classes, else one per class."""
        if self.classes_.shape[0] == 2:
            return [y_idx == 1]
        return [y_idx == c for c in range(len(self.classes_))]

    def _solve(self, K, y_idx, sample_weight, verbose=False):
        """libsvm on the precomputed Gram matrix K for every problem: (dual (n_out, n), intercept, n_iter)."""
        start = time.perf_counter()
        problems = self._problems(y_idx)
        dual = np.zeros((len(problems), K.shape[0]))
        intercept = np.zeros(len(problems))
        n_iter = np.zeros(len(problems), dtype=np.int64)
        for o, positive in enumerate(problems):
            svc = SVC(kernel="precomputed", C=self.C, tol=self.tol, max_iter=self.max_iter)
            svc.fit(K, positive.astype(int), sample_weight=sample_weight)
            n_iter[o] = int(np.max(svc.n_iter_))
            # binary SVC: decision = dual_coef_ @ K[support] + intercept_, positive = label 1
            dual[o, svc.support_] = svc.dual_coef_[0]
            intercept[o] = svc.intercept_[0]
            if verbose:
                print(f"[bowlrp] SVM {o + 1}/{len(problems)}: {svc.support_.shape[0]} support vectors "
                      f"({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
        return dual, intercept, n_iter

    def _fit_platt(self, K, y_idx, sample_weight):
        """Platt sigmoids (A, B) per output from out-of-fold scores of a stratified 5-fold CV on K."""
        counts = np.bincount(y_idx)
        n_splits = int(min(5, counts.min()))
        if n_splits < 2:
            raise ValueError("probability=True needs at least 2 training samples of every class for its "
                             "internal cross-validation")
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
        scores = np.zeros((K.shape[0], len(self._problems(y_idx))))
        for train, test in folds.split(np.zeros(len(y_idx)), y_idx):
            if np.unique(y_idx[train]).size < len(self.classes_):
                raise ValueError("a cross-validation fold lacks a class; give more samples per class")
            dual, intercept, _ = self._solve(K[np.ix_(train, train)], y_idx[train], sample_weight[train])
            scores[test] = K[np.ix_(test, train)] @ dual.T + intercept
        fits = [fit_sigmoid(scores[:, o], positive) for o, positive in enumerate(self._problems(y_idx))]
        return np.array([a for a, _ in fits]), np.array([b for _, b in fits])

    def decision_matrix(self, X):
        """Scores (n, n_outputs): b_o + sum_i a_oi k(x_i, x) for every output o (2-D, also binary)."""
        check_fitted(self, ("support_vectors_", "dual_coef_", "intercept_"))
        if not _plain_rows(X, self):  # (a plain array needs none of scikit-learn's conversions)
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

    @available_if(lambda self: self.probability)
    def predict_proba(self, X):
        """Class probabilities (n, n_classes) by Platt scaling (``probability=True`` only).

        Two classes: P(classes_[1]) = 1 / (1 + exp(A f + B)) of the one output. More classes: the
        one-vs-rest probabilities of the outputs, normalised to sum to one per sample. As with
        ``sklearn.svm.SVC``, the most probable class may differ from :meth:`predict` near ties.
        """
        check_is_fitted(self, "probA_")
        scores = self.decision_matrix(X)
        P = sigmoid_probability(scores, self.probA_[None, :], self.probB_[None, :])
        if self.classes_.shape[0] == 2:
            return np.column_stack([1.0 - P[:, 0], P[:, 0]])
        total = P.sum(axis=1, keepdims=True)
        return np.divide(P, total, out=np.full_like(P, 1.0 / P.shape[1]), where=total > 0)

    @available_if(lambda self: self.probability)
    def predict_log_proba(self, X):
        """Natural log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


def _plain_rows(X, estimator):
    """Whether ``X`` is what ``validate_data(estimator, X, dtype=float64, reset=False)`` returns as it is,
    without a message to give: a non-empty, finite float64 (n, n_features_in_) ndarray, and an estimator
    fitted without feature names (one without ``n_features_in_``, from a hand-made state, takes
    validate_data's path, which then checks no width). The BoW classifier's every decision and explanation
    passes such rows, and scikit-learn's checks of them took half of a decision's time (~50 us)."""
    return (type(X) is np.ndarray and X.dtype == np.float64 and X.ndim == 2 and X.shape[0] > 0
            and X.shape[1] == getattr(estimator, "n_features_in_", -1)
            and not hasattr(estimator, "feature_names_in_")
            and bool(np.isfinite(X).all()))
