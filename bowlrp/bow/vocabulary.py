"""Visual vocabularies: k-means prototypes b_1..b_V of local descriptors (one vocabulary per channel).

The prototypes are fitted on a seeded random subsample of at most ``max_descriptors`` descriptors, so
that the cost of building a vocabulary does not grow with the data set. The clustering is
scikit-learn's ``MiniBatchKMeans`` (default) or full Lloyd ``KMeans``, both seeded by
``random_state``; the result is deterministic for a fixed seed.
"""

from __future__ import annotations

import sys
import time
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils.validation import check_is_fitted, validate_data

from bowlrp.jit import limited_threads

__all__ = ["VisualVocabulary", "squared_distances", "fit_vocabularies"]


def squared_distances(descriptors, prototypes, prototype_sq_norms=None):
    """Squared Euclidean distances (M, V) between descriptors (M, D) and prototypes (V, D).

    Computed as ||v||^2 + ||b||^2 - 2 v.b (one matrix product) and clipped at 0 against rounding.
    Every caller encodes one image at a time through this function, so fit, predict and explain see
    bit-identical distances.

    Examples
    --------
    >>> import numpy as np
    >>> squared_distances(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0]]))
    array([[1.],
           [1.]])
    """
    descriptors = np.asarray(descriptors, dtype=np.float64)
    if prototype_sq_norms is None:
        prototype_sq_norms = np.einsum("vd,vd->v", prototypes, prototypes)
    d2 = np.einsum("md,md->m", descriptors, descriptors)[:, None] + prototype_sq_norms[None, :]
    d2 -= 2.0 * (descriptors @ prototypes.T)
    np.maximum(d2, 0.0, out=d2)
    return d2


def _distinct_rows_at_least(X, n):
    """The number of distinct rows of ``X`` if it is below ``n``, else some number >= ``n``.

    Equal rows have equal sums of their entries weighted by a fixed random vector (numpy reduces
    every row the same way), so distinct sums prove distinct rows: a cheap lower bound that settles
    the usual case. It is taken on the first ``8 n`` rows, then on all of them (distinct rows of a
    part are distinct rows of the whole; all rows of 35,000 SIFT descriptors cost 40-80 ms, a tenth
    of the vocabulary step). Only when the bound is below ``n`` are the rows sorted (``np.unique``,
    0.5 s for 35,000 descriptors).
    """
    weights = np.random.default_rng(0).standard_normal(X.shape[1])
    bound = 0
    for rows in (X[:8 * n], X) if X.shape[0] > 8 * n else (X,):
        bound = np.unique((rows * weights).sum(axis=1)).size
        if bound >= n:
            return bound
    return np.unique(X, axis=0).shape[0]


def _channel_rows(features, c):
    """The descriptors of channel ``c`` of one image's ``LocalFeatures`` (no copy when all are)."""
    mask = features.channel == c
    return features.descriptors if mask.all() else features.descriptors[mask]


class VisualVocabulary(TransformerMixin, BaseEstimator):
    """k-means visual vocabulary on a seeded subsample of local descriptors.

    Parameters
    ----------
    n_words : int, default=256
        Number of prototypes (visual words) V.
    max_descriptors : int, default=100_000
        Cap on the number of descriptors used for clustering; a seeded uniform subsample (without
        replacement) is drawn when more are given.
    method : {"minibatch", "kmeans"}, default="minibatch"
        scikit-learn's ``MiniBatchKMeans`` or full ``KMeans`` (Lloyd, k-means++ initialisation).
    n_init : int, default=3
        Number of k-means initialisations (the best inertia is kept).
    batch_size : int, default=2048
        Mini-batch size for ``method="minibatch"``.
    random_state : int, RandomState instance or None, default=None
        Seeds both the subsample and k-means.
    verbose : bool, default=False
        Print what is being clustered to stderr.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_words, n_features_in_)
        The prototypes b_1..b_V.
    n_features_in_ : int
        Descriptor dimension D.
    n_descriptors_fit_ : int
        Number of descriptors actually clustered (after the cap).

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.vocabulary import VisualVocabulary
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))])
    >>> voc = VisualVocabulary(n_words=2, random_state=0).fit(X)
    >>> sorted(np.round(voc.cluster_centers_[:, 0]).astype(int).tolist())
    [0, 5]
    >>> voc.transform(X[:1]).shape  # squared distances to the prototypes
    (1, 2)
    """

    def __init__(self, n_words=256, max_descriptors=100_000, method="minibatch", n_init=3,
                 batch_size=2048, random_state=None, verbose=False):
        self.n_words = n_words
        self.max_descriptors = max_descriptors
        self.method = method
        self.n_init = n_init
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self):
        """Explicit checks with the public ``check_scalar`` (the one validation style of the package)."""
        for name in ("n_words", "max_descriptors", "n_init", "batch_size"):
            check_scalar(getattr(self, name), name, Integral, min_val=1)
        if self.method not in ("minibatch", "kmeans"):
            raise ValueError(f"method must be 'minibatch' or 'kmeans', got {self.method!r}")
        if not isinstance(self.verbose, (bool, np.bool_)):
            raise TypeError(f"verbose must be a bool, got {self.verbose!r}")
        check_random_state(self.random_state)

    def fit(self, X, y=None):
        """Cluster the descriptors ``X`` (N, D) into ``n_words`` prototypes. Returns self."""
        self._check_params()
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=1)
        rng = check_random_state(self.random_state)
        if X.shape[0] > self.max_descriptors:
            # sorted indices: the subsample keeps the original order, so it only depends on the seed
            X = X[np.sort(rng.choice(X.shape[0], self.max_descriptors, replace=False))]
        n_distinct = _distinct_rows_at_least(X, self.n_words)
        if n_distinct < self.n_words:
            raise ValueError(
                f"cannot build {self.n_words} visual words from {n_distinct} distinct descriptors "
                f"({X.shape[0]} sampled); use a smaller vocabulary size or more / larger images")
        start = time.perf_counter()
        seed = rng.randint(np.iinfo(np.int32).max)
        if self.method == "minibatch":
            # compute_labels=False: the labels of every descriptor after the fit (one more pass
            # over all of them, a tenth of the fit) are not used; the centres do not depend on it
            km = MiniBatchKMeans(n_clusters=self.n_words, n_init=self.n_init, random_state=seed,
                                 batch_size=min(self.batch_size, X.shape[0]), compute_labels=False)
        else:
            km = KMeans(n_clusters=self.n_words, n_init=self.n_init, random_state=seed)
        # scikit-learn's k-means runs OpenMP and BLAS threads; on small problems (and on a busy machine)
        # they cost far more than they save (measured: 18x slower for 5k x 16 words; 35k x 128 words
        # at load 7, passive waiting: 6.0 s on two threads against 1.1 s on one), so small clusterings
        # run on one thread. The centres came out identical on one and two threads (35k SIFT
        # descriptors, 128 words), but the inertia that picks the best of the n_init starts is an
        # OpenMP reduction whose rounding depends on the thread count, so one thread also keeps
        # near-ties from resolving differently on another machine.
        small = X.shape[0] * self.n_words < 20_000_000
        with limited_threads(1 if small else None, numba_threads=False):
            km.fit(X)
        self.cluster_centers_ = np.ascontiguousarray(km.cluster_centers_, dtype=np.float64)
        self.n_descriptors_fit_ = int(X.shape[0])
        if self.verbose:
            print(f"[bowlrp] vocabulary: {self.n_words} words from {X.shape[0]} descriptors of "
                  f"dim {X.shape[1]} ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
        return self

    def transform(self, X):
        """Squared Euclidean distances (N, n_words) of descriptors ``X`` to the prototypes."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return squared_distances(X, self.cluster_centers_)

    def predict(self, X):
        """Index of the nearest prototype of each descriptor (hard assignment, first on ties)."""
        return np.argmin(self.transform(X), axis=1)


def fit_vocabularies(features, n_channels, n_words, max_descriptors=100_000, method="minibatch",
                     n_init=3, random_state=None, verbose=False):
    """Fit one :class:`VisualVocabulary` per channel from a list of ``LocalFeatures``.

    Each channel's cap ``max_descriptors`` applies to that channel's descriptors. The channel
    vocabularies get independent seeds drawn from ``random_state``.

    Examples
    --------
    >>> from skimage import data
    >>> from bowlrp.bow.features import DenseSIFT
    >>> from bowlrp.bow.vocabulary import fit_vocabularies
    >>> sift = DenseSIFT(step=8, bin_sizes=(4, 6))
    >>> feats = sift.extract_many([data.brick()[:96, :96], data.grass()[:96, :96]])
    >>> vocs = fit_vocabularies(feats, sift.n_channels, n_words=8, random_state=0)
    >>> [v.cluster_centers_.shape for v in vocs]
    [(8, 128), (8, 128)]
    """
    rng = check_random_state(random_state)
    vocabularies = []
    for c in range(n_channels):
        descriptors = [_channel_rows(f, c) for f in features]
        descriptors = np.concatenate(descriptors, axis=0) if descriptors else np.empty((0, 0))
        if descriptors.shape[0] == 0:
            raise ValueError(f"no local features of channel {c} were extracted; the images are too "
                             "small for this descriptor size")
        voc = VisualVocabulary(n_words=n_words, max_descriptors=max_descriptors, method=method,
                               n_init=n_init, random_state=rng.randint(np.iinfo(np.int32).max),
                               verbose=verbose)
        vocabularies.append(voc.fit(descriptors))
    return vocabularies
