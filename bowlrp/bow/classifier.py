"""``BoWClassifier``: dense SIFT -> visual words -> p-means pooling -> one-vs-rest kernel SVMs.

One code path for training, prediction and explanation (SPEC §1): every image goes through
:meth:`~BoWClassifier.extract_features` (local features), :meth:`~BoWClassifier.encode_features` (one
:class:`~bowlrp.bow.encoding.Encoding` per image, encoded one image at a time so the numbers never
depend on the batch) and :meth:`~BoWClassifier.decision_from_bows` (the fitted SVMs' kernel expansion
b + sum_i a_i k(x_i, x), computed by ``svm_`` itself). ``decision_function`` is exactly this chain; the
explanation (:mod:`bowlrp.bow.decompose`) reuses the same public methods and
:meth:`~BoWClassifier.kernel_expansion`.
"""

from __future__ import annotations

import sys
import time
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from bowlrp.bow.encoding import check_mapping, encode_many
from bowlrp.bow.features import DenseSIFT
from bowlrp.bow.forward import extract_and_encode
from bowlrp.bow.grid_check import warn_if_coarse
from bowlrp.bow.kernels import kernel_spec
from bowlrp.bow.svm import OneVsRestKernelSVC
from bowlrp.bow.vocabulary import fit_vocabularies
from bowlrp.jit import limited_threads
from bowlrp.validation import check_fitted, check_p, offsets

__all__ = ["BoWClassifier"]


def _n_images(images):
    if images is None:
        raise TypeError("images is None; expected a list of images")
    if sp.issparse(images):
        raise TypeError("sparse input is not supported: BoWClassifier takes a list of image arrays")
    if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
        raise ValueError(f"a stacked array of images must be (N, H, W) or (N, H, W, 3), got shape "
                         f"{images.shape}; wrap a single image in a list")
    try:
        n = len(images)
    except TypeError:
        raise TypeError(f"images must be a list of arrays, got {type(images).__name__}") from None
    if n == 0:
        raise ValueError("images is empty; at least one image is required")
    return n


class BoWClassifier(ClassifierMixin, BaseEstimator):
    """Bag-of-visual-words image classifier with a kernel SVM, built to be explained pixel-wise.

    Parameters
    ----------
    step : int, default=4
        Dense grid step (pixels).
    bin_sizes : tuple of int, default=(4,)
        SIFT spatial bin sizes; each is one channel with its own vocabulary (support side 4 * bin).
    color : {"gray", "opponent", "rgb"}, default="gray"
        Descriptor colour variant.
    backend : {"numba", "opencv"}, default="numba"
        Dense SIFT implementation (ours, or OpenCV's SIFT on the same frames).
    vocabulary_size : int, default=256
        Visual words per channel.
    max_descriptors : int, default=100_000
        Cap on the descriptors clustered per channel (seeded subsample).
    vocabulary_method : {"minibatch", "kmeans"}, default="minibatch"
        k-means variant.
    mapping : {"rank", "hard", "soft"}, default="rank"
        Mapping of a descriptor to visual words (see :mod:`bowlrp.bow.encoding`).
    rank_base : float, default=2.0
        Rank mapping base^(-rank) (paper: 2 on synthetic data, 2.4 on VOC).
    rank_n : int, default=4
        Rank mapping keeps the n nearest words (paper: 4 synthetic, 8 VOC).
    soft_beta : float, default=10.0
        Soft mapping exp(-beta ||v - b||^2) (squared Euclidean distance; SIFT blocks have unit norm).
    p : float, default=1.0
        p-means pooling exponent in (0, inf]; 1 = mean pooling, ``np.inf`` = max pooling.
    normalize : bool, default=True
        L1-normalise each channel's BoW vector.
    kernel : str, default="intersection"
        SVM kernel, a name of the kernel registry (:mod:`bowlrp.bow.kernels`): "intersection", "chi2",
        "hellinger", "linear" (explained exactly), "exp_chi2", "rbf" (Taylor step) or a registered one.
    gamma : float or "auto", default=1.0
        Bandwidth of "exp_chi2" / "rbf"; "auto" uses 1 / (mean training distance). The value used is
        ``gamma_``.
    C : float, default=1.0
        SVM regularisation.
    channel_weights : array-like of float, optional
        Kernel weight of each channel (default all 1).
    class_weight : dict, "balanced" or None, default=None
        Per-class weights of the SVM samples.
    random_state : int, RandomState instance or None, default=None
        Seeds the descriptor subsample and k-means (everything else is deterministic).
    n_jobs : int or None, default=None
        Threads for feature extraction.
    verbose : bool, default=False
        Report progress of the long steps (features, vocabulary, encoding, Gram matrix, SVMs).
    probability : bool, default=False
        Fit Platt sigmoids so that :meth:`predict_proba` is available (as ``sklearn.svm.SVC``): an
        internal stratified 5-fold cross-validation on the training Gram matrix (seeded by
        ``random_state``) gives out-of-fold scores, and each SVM output gets a sigmoid
        1 / (1 + exp(A f + B)) fitted to them. Off by default (it costs about 5x more SVM solves).
        With more than two classes the one-vs-rest probabilities are normalised to sum to one.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    extractor_ : DenseSIFT
    vocabularies_ : list of VisualVocabulary
        One per channel.
    support_vectors_ : ndarray of shape (n_sv, V)
        BoW vectors of the support vectors (union over the one-vs-rest problems).
    dual_coef_ : ndarray of shape (n_outputs, n_sv)
        a_i = y_i alpha_i; n_outputs = 1 for two classes (scores ``classes_[1]``), else n_classes.
    intercept_ : ndarray of shape (n_outputs,)
    channel_slices_ : list of slice
        The BoW dimensions of each channel.
    channel_weights_ : ndarray of shape (n_channels,)
    gamma_ : float
        The bandwidth used (equals ``gamma`` unless it is "auto").
    train_bows_ : ndarray of shape (n_train, V)
        BoW vectors of the training images.
    svm_ : OneVsRestKernelSVC
        The fitted SVMs on the training BoWs.

    Examples
    --------
    >>> from skimage import data
    >>> from bowlrp import BoWClassifier
    >>> faces = data.lfw_subset()  # 100 faces, then 100 non-faces, 25 x 25
    >>> y = [1] * 100 + [0] * 100
    >>> clf = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, random_state=0)
    >>> clf = clf.fit(list(faces[::2]), y[::2])
    >>> clf.score(list(faces[1::2]), y[1::2]) > 0.7
    True
    """

    def __init__(self, step=4, bin_sizes=(4,), color="gray", backend="numba", vocabulary_size=256,
                 max_descriptors=100_000, vocabulary_method="minibatch", mapping="rank", rank_base=2.0,
                 rank_n=4, soft_beta=10.0, p=1.0, normalize=True, kernel="intersection", gamma=1.0,
                 C=1.0, channel_weights=None, class_weight=None, random_state=None, n_jobs=None,
                 verbose=False, probability=False):
        self.step = step
        self.bin_sizes = bin_sizes
        self.color = color
        self.backend = backend
        self.vocabulary_size = vocabulary_size
        self.max_descriptors = max_descriptors
        self.vocabulary_method = vocabulary_method
        self.mapping = mapping
        self.rank_base = rank_base
        self.rank_n = rank_n
        self.soft_beta = soft_beta
        self.p = p
        self.normalize = normalize
        self.kernel = kernel
        self.gamma = gamma
        self.C = C
        self.channel_weights = channel_weights
        self.class_weight = class_weight
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.probability = probability

    # ------------------------------------------------------------------ checks
    def _check_params(self):
        kernel_spec(self.kernel)
        check_mapping(self.mapping, self.rank_base, self.rank_n, self.soft_beta)
        check_p(self.p)
        for name in ("vocabulary_size", "max_descriptors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.vocabulary_method not in ("minibatch", "kmeans"):
            raise ValueError(f"vocabulary_method must be 'minibatch' or 'kmeans', got "
                             f"{self.vocabulary_method!r}")
        if not isinstance(self.probability, (bool, np.bool_)):
            raise ValueError(f"probability must be True or False, got {self.probability!r}")
        if not (isinstance(self.C, Real) and np.isfinite(self.C) and self.C > 0):
            raise ValueError(f"C must be a positive finite number, got {self.C!r}")
        if not (self.gamma == "auto" if isinstance(self.gamma, str)
                else isinstance(self.gamma, Real) and np.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma must be a positive finite number or 'auto', got {self.gamma!r}")

    def _log(self, message):
        if self.verbose:
            print(f"[bowlrp] {message}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ the one code path
    def extract_features(self, images):
        """Local features of each image, with the fitted extractor.

        Parameters
        ----------
        images : list of array-like
            Gray or RGB images, as for :meth:`fit`.

        Returns
        -------
        list of LocalFeatures
            Descriptors with their centres, support squares and channels (one per image).
        """
        check_fitted(self, "extractor_")
        return self.extractor_.extract_many(images, n_jobs=self.n_jobs)

    def encode_features(self, features):
        """Map and pool local features: one :class:`~bowlrp.bow.encoding.Encoding` per image.

        Each image is encoded on its own (the numbers never depend on the batch).

        Parameters
        ----------
        features : list of LocalFeatures
            From :meth:`extract_features`.

        Returns
        -------
        list of Encoding
            The mapping matrix m(l) and the pooled BoW vector ``x`` of each image.
        """
        check_fitted(self, "vocabularies_")
        start = time.perf_counter()
        out = self._encode(features)
        self._log(f"encoded {len(out)}/{len(out)} images ({time.perf_counter() - start:.1f} s)")
        return out

    def _encode(self, features):
        """:meth:`encode_features` without the log line."""
        # One BLAS thread: the per-image distance products are small (threads cost more than they save)
        # and the numbers then cannot depend on the machine's thread count; images go to threads.
        with limited_threads(1, numba_threads=False, user_api="blas"):
            return encode_many(features, self.vocabularies_, self.mapping, self.rank_base, self.rank_n,
                               self.soft_beta, self.p, self.normalize)

    def extract_and_encode(self, images):
        """:meth:`extract_features` then :meth:`encode_features`, a thread taking whole images through both.

        The numbers of the two calls (every image's features and encoding depend on that image only).
        A batch worth threads (:func:`bowlrp.jit.use_parallel`) is cut into contiguous parts, a few per
        thread: a thread takes each of its parts from pixels to BoW vectors with serial kernels and one
        BLAS thread (:mod:`bowlrp.bow.forward`), one barrier instead of two. Errors and warnings name
        an image by its index in ``images``. A stage overridden on the instance or in a subclass (a
        cache, say) is honoured: the two methods then run one after the other.

        Parameters
        ----------
        images : list of array-like or ndarray (N, H, W[, 3])
            Images as for :meth:`transform`.

        Returns
        -------
        features : list of LocalFeatures
        encodings : list of Encoding
            One of each per image, in order.
        """
        check_fitted(self, ["extractor_", "vocabularies_"])
        own = all(name not in vars(self) and getattr(type(self), name) is getattr(BoWClassifier, name)
                  for name in ("extract_features", "encode_features"))
        if not own:
            features = self.extract_features(images)
            return features, self.encode_features(features)
        start = time.perf_counter()
        out = extract_and_encode(self, images)
        self._log(f"extracted and encoded {len(out[0])} images ({time.perf_counter() - start:.1f} s)")
        return out

    def decision_from_bows(self, X):
        """Scores (n, n_outputs) of BoW vectors: ``svm_.decision_matrix(X)``, 2-D also for two classes.

        Parameters
        ----------
        X : array-like of shape (n, V)
            BoW vectors (:meth:`transform`).

        Returns
        -------
        ndarray of shape (n, n_outputs)
            b_o + sum_i a_oi k(x_i, x); one output (scoring ``classes_[1]``) for two classes.
        """
        check_fitted(self, "svm_")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.support_vectors_.shape[1]:
            raise ValueError(f"BoW vectors must have shape (n, {self.support_vectors_.shape[1]}), "
                             f"got {X.shape}")
        return self.svm_.decision_matrix(X)

    # fitted model, read from the SVMs (one source of truth, nothing copied)
    classes_ = property(lambda self: self.svm_.classes_, doc="Class labels, sorted.")
    support_vectors_ = property(lambda self: self.svm_.support_vectors_, doc="BoW vectors of the SVs.")
    dual_coef_ = property(lambda self: self.svm_.dual_coef_, doc="a_i = y_i alpha_i per output.")
    intercept_ = property(lambda self: self.svm_.intercept_, doc="b per output.")
    channel_slices_ = property(lambda self: self.svm_.channel_slices_, doc="BoW dims of each channel.")
    channel_weights_ = property(lambda self: self.svm_.channel_weights_, doc="Kernel weight per channel.")

    # ------------------------------------------------------------------ classes and outputs
    def class_index(self, target):
        """Index into ``classes_`` of a class label (or, for non-integer labels, of an int index).

        Raises a ValueError naming the known classes for an unknown target.
        """
        check_fitted(self, "svm_")
        classes = np.asarray(self.classes_)
        hits = np.flatnonzero(classes == target) if not isinstance(target, (list, tuple, dict)) else []
        if len(hits) == 1:
            return int(hits[0])
        integer_labels = classes.dtype.kind in "iub"
        if (not integer_labels and isinstance(target, (int, np.integer)) and not isinstance(target, bool)
                and 0 <= int(target) < len(classes)):
            return int(target)
        raise ValueError(f"unknown target class {target!r}; the classifier knows {list(classes)}")

    def _output_of(self, class_index):
        """SVM output and sign that score a class: two classes share one output (scoring classes_[1])."""
        if len(self.classes_) == 2:
            return 0, class_index == 0
        return class_index, False

    def class_scores(self, decision, class_index):
        """Scores (n,) of one class from a decision matrix (n, n_outputs) of :meth:`decision_from_bows`.

        With two classes, ``classes_[0]`` scores the negated output.
        """
        output, negate = self._output_of(int(class_index))
        column = np.asarray(decision)[:, output]
        return -column if negate else column

    def predicted_class_index(self, decision):
        """Index of the predicted class for each row of a decision matrix (binary: score > 0)."""
        decision = np.asarray(decision)
        if len(self.classes_) == 2:
            return (decision[:, 0] > 0).astype(int)
        return np.argmax(decision, axis=1)

    def kernel_expansion(self, target):
        """The score of one class as a kernel expansion (what the explanation decomposes).

        Parameters
        ----------
        target : class label
            As in :meth:`explain`; with two classes ``classes_[0]`` gives the negated expansion.

        Returns
        -------
        bowlrp.bow.decompose.KernelExpansion
            f(z) = b + sum_i a_i k(x_i, z) of that class, its values equal to :meth:`decision_from_bows`.
        """
        from bowlrp.bow.decompose.expansion import KernelExpansion

        output, negate = self._output_of(self.class_index(target))
        f = KernelExpansion(self.kernel, self.support_vectors_, self.dual_coef_[output],
                            float(self.intercept_[output]), gamma=self.gamma_,
                            channel_slices=self.channel_slices_, channel_weights=self.channel_weights_)
        return f.negated() if negate else f

    def training_scores(self, class_index):
        """Scores (n_train,) of one class on the training BoWs ``train_bows_`` (kept from fitting).

        The Taylor root search picks its candidates among the training BoWs of the opposite sign.
        """
        check_fitted(self, "train_bows_")
        decision = getattr(self, "train_scores_", None)
        if decision is None:  # models fitted before train_scores_ existed
            decision = self.decision_from_bows(self.train_bows_)
        return self.class_scores(decision, class_index)

    # ------------------------------------------------------------------ fitting
    def fit(self, images, y):
        """Extract features, build the vocabularies, encode and fit the SVMs. Returns self.

        Parameters
        ----------
        images : list of array-like or ndarray (N, H, W[, 3])
            Gray or RGB images (sizes may differ), uint8/uint16 or float in [0, 1].
        y : array-like of shape (N,)
            Class labels (at least two classes).
        """
        self._check_params()
        n = _n_images(images)
        warn_if_coarse(images, self.step, self.bin_sizes)
        y = column_or_1d(np.asarray(y), warn=True)
        if y.shape[0] != n:
            raise ValueError(f"got {n} images but {y.shape[0]} labels; they must match")
        check_classification_targets(y)
        if np.unique(y).shape[0] < 2:
            raise ValueError(f"need images of at least 2 classes to fit a classifier, got only class "
                             f"{y[0]}")
        start = time.perf_counter()
        self.extractor_ = DenseSIFT(step=self.step, bin_sizes=self.bin_sizes, color=self.color,
                                    backend=self.backend, n_jobs=self.n_jobs, verbose=self.verbose).fit()
        features = self.extract_features(images)
        self._log(f"extracted features of {n} images ({time.perf_counter() - start:.1f} s)")
        self.vocabularies_ = fit_vocabularies(features, self.extractor_.n_channels, self.vocabulary_size,
                                              self.max_descriptors, self.vocabulary_method,
                                              random_state=self.random_state, verbose=self.verbose)
        X = np.stack([e.x for e in self.encode_features(features)])
        sizes = tuple(v.cluster_centers_.shape[0] for v in self.vocabularies_)
        self.gamma_ = self._resolve_gamma(X, sizes)
        self.svm_ = OneVsRestKernelSVC(kernel=self.kernel, C=self.C, gamma=self.gamma_, channel_sizes=sizes,
                                       channel_weights=self.channel_weights, class_weight=self.class_weight,
                                       verbose=self.verbose, probability=self.probability,
                                       random_state=self.random_state).fit(X, y)
        self.train_bows_ = X
        self.train_scores_ = self.svm_.decision_matrix(X)
        self._log(f"fitted in {time.perf_counter() - start:.1f} s: {X.shape[1]} BoW dims, "
                  f"{self.support_vectors_.shape[0]} support vectors")
        return self

    def _resolve_gamma(self, X, sizes):
        if not isinstance(self.gamma, str):
            return float(self.gamma)
        if not kernel_spec(self.kernel).uses_gamma:
            return 1.0  # unused by the other kernels
        # "auto": 1 / mean pairwise distance, averaged over the channels (each has its own exponential)
        bounds = offsets(sizes)
        means = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            D = kernel_spec(self.kernel).pairwise_distance(X[:, a:b])
            means.append(D[np.triu_indices(X.shape[0], 1)].mean())
        mean = float(np.mean(means))
        return 1.0 / mean if mean > 0 else 1.0

    # ------------------------------------------------------------------ prediction
    def transform(self, images):
        """BoW vectors (n, V) of the images."""
        check_fitted(self, "svm_")
        return np.stack([e.x for e in self.extract_and_encode(images)[1]])

    def decision_function(self, images):
        """One-vs-rest scores: (n,) for two classes (positive = ``classes_[1]``), else (n, n_classes)."""
        scores = self.decision_from_bows(self.transform(images))
        return scores[:, 0] if self.classes_.shape[0] == 2 else scores

    def predict(self, images):
        """Predicted class of each image (largest one-vs-rest score; binary: score > 0)."""
        decision = self.decision_from_bows(self.transform(images))
        return self.classes_[self.predicted_class_index(decision)]

    @available_if(lambda self: self.probability)
    def predict_proba(self, images):
        """Class probabilities (n, n_classes) by Platt scaling (only with ``probability=True``).

        Columns follow ``classes_``. Two classes: P(classes_[1]) = 1 / (1 + exp(A f + B)) of the
        decision value f; more classes: the one-vs-rest sigmoids normalised to sum to one. As with
        ``sklearn.svm.SVC``, the most probable class can differ from :meth:`predict` near ties.

        Examples
        --------
        >>> from skimage import data
        >>> from bowlrp import BoWClassifier
        >>> faces = data.lfw_subset()
        >>> clf = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, probability=True,
        ...                     random_state=0).fit(list(faces[::4]), [1] * 25 + [0] * 25)
        >>> clf.predict_proba([faces[1]]).shape
        (1, 2)
        """
        return self.svm_.predict_proba(self.transform(images))

    @available_if(lambda self: self.probability)
    def predict_log_proba(self, images):
        """Natural log of :meth:`predict_proba` (only with ``probability=True``)."""
        return self.svm_.predict_log_proba(self.transform(images))

    # ------------------------------------------------------------------ explanation
    def explain(self, images, target=None, n_candidates=16, n_roots=1, random_state=0):
        """Pixel-wise relevance of each image for a class (Bach et al. 2015, SPEC §2).

        Runs the same :meth:`extract_features` / :meth:`encode_features` / :meth:`decision_from_bows` path as
        :meth:`decision_function` once, then decomposes: score -> BoW dimensions -> local features ->
        pixels (:mod:`bowlrp.bow.decompose`). For the sum-decomposable kernels the map sums to the score;
        for "exp_chi2" / "rbf" a Taylor step at a root leaves a reported residual.

        Parameters
        ----------
        images : list of array-like
            Images as for :meth:`decision_function`.
        target : None, class label or list of class labels, default=None
            None explains each image's predicted class; a label explains that class; a list explains
            each of its classes (features are computed once for all of them). For two classes,
            explaining ``classes_[0]`` explains the negated decision value.
        n_candidates, n_roots, random_state
            Root search of the Taylor kernels (see :func:`bowlrp.bow.decompose.find_root`).

        Returns
        -------
        list of Heatmap (one per image), or, when ``target`` is a list, a list per image of one
        Heatmap per requested class. ``Heatmap.score`` is the decision value of the explained class;
        ``extras`` holds the BoW relevance, the feature relevance with the feature geometry and, for
        Taylor kernels, the root and f(root).

        Examples
        --------
        >>> from skimage import data
        >>> from bowlrp import BoWClassifier
        >>> faces = data.lfw_subset()
        >>> clf = BoWClassifier(step=3, bin_sizes=(3,), vocabulary_size=16, random_state=0)
        >>> clf = clf.fit(list(faces[::4]), [1] * 25 + [0] * 25)
        >>> h = clf.explain([faces[1]])[0]
        >>> h.relevance.shape, abs(h.residual) < 1e-9
        ((25, 25), True)
        """
        from bowlrp.bow.decompose import explain_classifier

        _n_images(images)
        warn_if_coarse(images, self.step, self.bin_sizes)
        return explain_classifier(self, images, target, n_candidates, n_roots, random_state)

    def __sklearn_tags__(self):
        # The input is a list of images, not a 2-D feature matrix: scikit-learn's data-driven checks
        # (which generate (n_samples, n_features) blobs) cannot apply, and check_estimator skips them
        # on this tag. The checks that need no 2-D data run in tests/bowlrp/bow/test_classifier.py, and
        # the estimator on the 2-D BoW vectors, OneVsRestKernelSVC, passes the full check_estimator.
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.sparse = False
        tags.non_deterministic = False
        return tags
