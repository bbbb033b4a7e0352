"""Explaining a bag-of-words/SVM prediction: the three decomposition steps of Bach et al. (2015), §2.

The forward pipeline is image -> local features -> mapping m(l) -> p-means pooling -> BoW vector x ->
kernel SVM f(x) = b + sum_i a_i k(x_i, x). The explanation walks it backwards:

* **Step 3** (:func:`bow_relevance`, :func:`taylor_relevance`): the score f(x) is split over the V
  dimensions of the BoW vector. Exact for sum-decomposable kernels (Eq 24); a first-order Taylor
  expansion at a root point x0 (f(x0) = 0) for the differentiable exp-chi2 and RBF kernels (Eq 25),
  with the root search of Eqs 17-18 (:func:`find_root`). The Taylor residual is always reported.
* **Step 2** (:func:`feature_relevance`): each dimension's relevance is shared by the local features
  in proportion to their share of the pooled value, m_d(l)^p / sum_l' m_d(l')^p (Eqs 26-32), max
  pooling (p = inf) included.
* **Step 1** (:func:`pixel_relevance`): each feature's relevance is spread evenly over the pixels of
  its support square clipped to the image (Eqs 33-34).

Each step conserves exactly what it is given (up to float rounding), so for sum-decomposable kernels
the pixel map sums to f(x). All functions here are pure array functions; ``BoWClassifier.explain``
(:func:`explain_classifier`) strings them together and packs each result into a
:class:`~bowlrp.heatmap.Heatmap`. :func:`explain_tiles` implements the overlapping-tile maps of the
paper's Fig. 6.

Conventions (EXTENSIONS where the paper is silent)
--------------------------------------------------
* Bias: the intercept b is split evenly over all V_total dimensions of the (concatenated) BoW
  vector, whatever channel a dimension belongs to: R3_d = b / V_total + beta_u(d) sum_i a_i k_d(...).
  This is Eq 24 with the multi-channel kernel k = sum_u beta_u k_u applied per dimension.
* Max pooling: a dimension's relevance goes to the feature(s) with the largest m_d(l); ties are
  split equally.
* Uncovered dimensions (no feature of the channel maps to d): their relevance is split equally over
  the features of that dimension's channel (the "+ sum_Z R3 / M" term), per channel with the
  channel's own feature count M_u.
* The pixel area of a feature is its support square clipped to the image, so border features
  conserve their relevance too.
* Binary classifiers score the positive class ``classes_[1]``; explaining ``classes_[0]`` explains
  the negated score -f(x) (relevance of every level is negated).
* Taylor kernels: the root candidates are the training BoWs (``train_bows_``) whose score has the
  sign opposite to f(x), at most ``n_candidates`` of them drawn with the given seed (each image seeded
  on its own, so a map does not depend on the batch it was computed in). When no training BoW has
  the opposite sign the expansion point is the candidate with the smallest |f| (reported as
  ``bracketed = 0`` with its f value); when f(x) = 0 exactly, x is its own root and R3 = 0. The
  residual rho = f(x) - sum R3 is reported in ``Heatmap.residual`` and ``extras["taylor"]``.
"""

from __future__ import annotations

import numbers
import sys
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from bowlrp.bow import _decompose_kernels as _dk

__all__ = [
    "SUM_DECOMPOSABLE",
    "DIFFERENTIABLE",
    "KernelExpansion",
    "bow_relevance",
    "taylor_relevance",
    "find_root",
    "TaylorResult",
    "explain_bow",
    "feature_relevance",
    "pixel_relevance",
    "explain_classifier",
    "explain_tiles",
    "tile_boxes",
]

SUM_DECOMPOSABLE = ("linear", "intersection", "chi2", "hellinger")
DIFFERENTIABLE = ("exp_chi2", "rbf")


# =====================================================================================================
# Step 1: features -> pixels
# =====================================================================================================
def _check_boxes(boxes, n_features: int, image_shape) -> tuple[np.ndarray, tuple[int, int]]:
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be an (M, 4) array of y0, x0, y1, x1, got shape {boxes.shape}")
    if boxes.shape[0] != n_features:
        raise ValueError(f"got {boxes.shape[0]} boxes for {n_features} feature relevances")
    if boxes.dtype.kind not in "iu":
        raise TypeError(f"boxes must be integer pixel coordinates, got dtype {boxes.dtype}")
    if len(image_shape) < 2:
        raise ValueError(f"image_shape must be (H, W), got {image_shape}")
    height, width = int(image_shape[0]), int(image_shape[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"image_shape must be positive, got {(height, width)}")
    boxes = boxes.astype(np.int64)
    # Clip to the image (EXTENSION: |area(l)| counts the clipped pixels), so border features conserve.
    y0 = np.clip(boxes[:, 0], 0, height)
    x0 = np.clip(boxes[:, 1], 0, width)
    y1 = np.clip(boxes[:, 2], 0, height)
    x1 = np.clip(boxes[:, 3], 0, width)
    return np.stack([y0, x0, y1, x1], axis=1), (height, width)


def pixel_relevance(feature_rel, boxes, image_shape) -> np.ndarray:
    """Step 1: spread each feature's relevance evenly over its support box (Eqs 33-34).

    R1_q = sum over features l whose box contains pixel q of R2_l / |box_l|. Overlapping boxes add.
    Runs in O(M + H W): every box adds its density at two corners and subtracts it at the two
    others of a difference image, whose 2-D cumulative sum is the map.

    Parameters
    ----------
    feature_rel : array-like of shape (M,)
        Relevance of each local feature (Step 2).
    boxes : array-like of shape (M, 4), int
        Half-open boxes ``y0, x0, y1, x1`` (``LocalFeatures.boxes()``); clipped to the image here.
    image_shape : tuple (H, W) or (H, W, C)

    Returns
    -------
    ndarray of shape (H, W), float64
        Pixel relevance; sums to ``feature_rel.sum()`` minus the relevance of features whose clipped
        box is empty (such features lie entirely outside the image and cannot be drawn).

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.decompose import pixel_relevance
    >>> R1 = pixel_relevance(np.array([4.0]), np.array([[0, 0, 2, 2]]), (3, 3))
    >>> R1
    array([[1., 1., 0.],
           [1., 1., 0.],
           [0., 0., 0.]])
    """
    rel = np.asarray(feature_rel, dtype=np.float64).ravel()
    if not np.all(np.isfinite(rel)):
        raise ValueError("feature relevance contains NaN or inf")
    boxes, (height, width) = _check_boxes(boxes, rel.size, image_shape)
    y0, x0, y1, x1 = boxes.T
    area = (y1 - y0) * (x1 - x0)
    keep = area > 0
    density = np.zeros_like(rel)
    density[keep] = rel[keep] / area[keep]
    # Difference image of shape (H+1, W+1); np.bincount accumulates repeated corners in O(M).
    stride = width + 1
    size = (height + 1) * stride
    diff = np.bincount(y0 * stride + x0, weights=density, minlength=size)
    diff -= np.bincount(y0 * stride + x1, weights=density, minlength=size)
    diff -= np.bincount(y1 * stride + x0, weights=density, minlength=size)
    diff += np.bincount(y1 * stride + x1, weights=density, minlength=size)
    diff = diff.reshape(height + 1, stride)
    out = np.cumsum(np.cumsum(diff, axis=0), axis=1)
    return np.ascontiguousarray(out[:height, :width])


# =====================================================================================================
# Step 2: BoW dimensions -> local features
# =====================================================================================================
def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a positive number or np.inf, got {p!r}")
    p = float(p)
    if not (p > 0):  # also rejects NaN
        raise ValueError(f"p must be > 0 (np.inf for max pooling), got {p}")
    return p


def _as_slices(channel_slices, n_dims: int) -> list[slice]:
    if channel_slices is None:
        return [slice(0, n_dims)]
    slices = []
    stop_prev = 0
    for s in channel_slices:
        if isinstance(s, slice):
            start, stop = s.start or 0, s.stop
        else:
            start, stop = (int(v) for v in s)
        if start != stop_prev or stop is None or stop < start:
            raise ValueError(
                "channel_slices must be consecutive slices covering the BoW dimensions, got "
                f"{list(channel_slices)}"
            )
        slices.append(slice(int(start), int(stop)))
        stop_prev = stop
    if stop_prev != n_dims:
        raise ValueError(f"channel_slices cover {stop_prev} dimensions but the BoW vector has {n_dims}")
    return slices


def feature_relevance(mapping, bow_rel, p=1.0, channel_slices=None, feature_channel=None) -> np.ndarray:
    """Step 2: share each BoW dimension's relevance among the local features (Eqs 26-32).

    For each channel u with features L_u (M_u = |L_u|) and dimensions D_u::

        col_d = sum_{l in L_u} m_d(l)^p,   Z_u = {d in D_u : col_d = 0}
        R2_l  = sum_{d in D_u \\ Z_u} R3_d m_d(l)^p / col_d  +  sum_{d in Z_u} R3_d / M_u

    For ``p = inf`` (max pooling) dimension d's relevance goes to the feature(s) with the largest
    m_d(l), ties split equally (EXTENSION). The shares are computed as (m_d(l) / max_l' m_d(l'))^p,
    which is the same fraction but cannot underflow for large p and tends to the max-pooling shares
    as p grows.

    Parameters
    ----------
    mapping : scipy.sparse matrix or ndarray of shape (M, V)
        m_d(l) before pooling (``Encoding.mapping``); must be non-negative.
    bow_rel : array-like of shape (V,)
        R3 (Step 3).
    p : float, default=1.0
        The pooling exponent (``Encoding.p``); ``np.inf`` for max pooling.
    channel_slices : list of slice, optional
        The dimensions of each channel; default one channel.
    feature_channel : array-like of shape (M,), int, optional
        The channel of each feature (``LocalFeatures.channel``); default channel 0 for all.

    Returns
    -------
    ndarray of shape (M,)
        R2. Sums to ``bow_rel.sum()`` except for the relevance of a channel that has no features.

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.decompose import feature_relevance
    >>> m = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # hard assignment
    >>> feature_relevance(m, np.array([2.0, 3.0, 0.3]), p=1.0)
    array([1.1, 1.1, 3.1])
    """
    p = _check_p(p)
    m = sp.csr_matrix(mapping, dtype=np.float64, copy=True)  # never touch the caller's Encoding
    m.sum_duplicates()
    n_feat, n_dims = m.shape
    r3 = np.asarray(bow_rel, dtype=np.float64).ravel()
    if r3.size != n_dims:
        raise ValueError(f"bow_rel has {r3.size} dimensions but the mapping has {n_dims} columns")
    if not np.all(np.isfinite(r3)):
        raise ValueError("BoW relevance contains NaN or inf")
    if m.nnz and (not np.all(np.isfinite(m.data)) or m.data.min() < 0):
        raise ValueError("mapping must be finite and non-negative")
    slices = _as_slices(channel_slices, n_dims)
    if feature_channel is None:
        if len(slices) != 1:
            raise ValueError("feature_channel is required when there are several channels")
        feature_channel = np.zeros(n_feat, dtype=np.int64)
    feature_channel = np.asarray(feature_channel).ravel()
    if feature_channel.size != n_feat:
        raise ValueError(f"feature_channel has {feature_channel.size} entries for {n_feat} features")
    if n_feat and (feature_channel.min() < 0 or feature_channel.max() >= len(slices)):
        raise ValueError(f"feature_channel values must lie in [0, {len(slices)})")

    # Column maxima (per dimension). A column is only fed by the features of its own channel.
    m.eliminate_zeros()
    colmax = np.zeros(n_dims)
    if m.nnz:
        np.maximum.at(colmax, m.indices, m.data)
    # Shares w_ld = (m_ld / max_l' m_l'd)^p: per-column rescaling leaves m^p / col unchanged.
    ratio = m.data / colmax[m.indices]
    if np.isinf(p):
        w_data = (ratio == 1.0).astype(np.float64)
    else:
        w_data = ratio**p
    w = sp.csr_matrix((w_data, m.indices, m.indptr), shape=m.shape)
    col = np.asarray(w.sum(axis=0)).ravel()
    covered = colmax > 0  # col >= 1 on these (the maximum itself contributes 1)
    scaled = np.zeros(n_dims)
    scaled[covered] = r3[covered] / col[covered]
    out = w @ scaled

    # Uncovered dimensions: equal split over the channel's features.
    for u, sl in enumerate(slices):
        uncovered = float(r3[sl][~covered[sl]].sum())
        if uncovered == 0.0:
            continue
        members = feature_channel == u
        n_u = int(members.sum())
        if n_u:
            out[members] += uncovered / n_u
    return out


# =====================================================================================================
# Step 3: score -> BoW dimensions
# =====================================================================================================
def _weights_for(slices, channel_weights) -> np.ndarray:
    if channel_weights is None:
        return np.ones(len(slices))
    beta = np.asarray(channel_weights, dtype=np.float64).ravel()
    if beta.size != len(slices):
        raise ValueError(f"got {beta.size} channel weights for {len(slices)} channels")
    if not np.all(np.isfinite(beta)):
        raise ValueError("channel weights contain NaN or inf")
    return beta


@dataclass
class KernelExpansion:
    """One SVM output as a kernel expansion f(z) = b + sum_i a_i sum_u beta_u k_u(x_i[u], z[u]).

    The object the Step-3 functions work on: one row of ``dual_coef_`` and one ``intercept_`` of a
    fitted :class:`~bowlrp.bow.classifier.BoWClassifier`, with the kernel, its ``gamma`` and the channel
    layout. ``negated()`` gives -f (the negative class of a binary problem).

    Parameters
    ----------
    kernel : str
        One of ``"linear", "intersection", "chi2", "hellinger"`` (sum-decomposable) or
        ``"exp_chi2", "rbf"`` (differentiable).
    support_vectors : ndarray of shape (n_sv, V)
    coef : ndarray of shape (n_sv,)
        a_i = y_i alpha_i.
    intercept : float
    gamma : float, optional
        Bandwidth of ``"exp_chi2"`` and ``"rbf"`` (default 1.0, as in :func:`bowlrp.bow.kernels.gram`).
    channel_slices : list of slice, optional
        Dimensions of each channel (one channel by default).
    channel_weights : array-like of shape (n_channels,), optional
        beta_u (ones by default).

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.decompose import KernelExpansion
    >>> f = KernelExpansion("linear", np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([1.0, -1.0]), 0.5)
    >>> f.decision(np.array([[1.0, 1.0]]))
    array([-0.5])
    """

    kernel: str
    support_vectors: np.ndarray
    coef: np.ndarray
    intercept: float
    gamma: float | None = None
    channel_slices: list | None = None
    channel_weights: np.ndarray | None = None
    _slices: list = field(init=False, repr=False)
    _beta: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if self.kernel not in SUM_DECOMPOSABLE + DIFFERENTIABLE:
            raise ValueError(
                f"unknown kernel {self.kernel!r}; expected one of {SUM_DECOMPOSABLE + DIFFERENTIABLE}"
            )
        sv = np.asarray(self.support_vectors, dtype=np.float64)
        if sv.ndim != 2:
            raise ValueError(f"support_vectors must be 2-D (n_sv, V), got shape {sv.shape}")
        coef = np.asarray(self.coef, dtype=np.float64).ravel()
        if coef.size != sv.shape[0]:
            raise ValueError(f"got {coef.size} coefficients for {sv.shape[0]} support vectors")
        if not (np.all(np.isfinite(sv)) and np.all(np.isfinite(coef))):
            raise ValueError("support vectors or coefficients contain NaN or inf")
        if self.kernel not in ("linear", "rbf") and sv.size and sv.min() < 0:
            raise ValueError(f"kernel {self.kernel!r} needs non-negative support vectors")
        self.support_vectors, self.coef = np.ascontiguousarray(sv), np.ascontiguousarray(coef)
        self.intercept = float(self.intercept)
        if self.kernel in DIFFERENTIABLE:
            if self.gamma is None:
                self.gamma = 1.0  # the default of bowlrp.bow.kernels.gram (and of scikit-learn's chi2_kernel)
            if not np.isfinite(self.gamma) or self.gamma <= 0:
                raise ValueError(f"kernel {self.kernel!r} needs a positive finite gamma, got {self.gamma}")
            self.gamma = float(self.gamma)
        self._slices = _as_slices(self.channel_slices, sv.shape[1])
        self._beta = _weights_for(self._slices, self.channel_weights)

    @property
    def n_dims(self) -> int:
        """V, the length of the BoW vector."""
        return self.support_vectors.shape[1]

    def negated(self) -> KernelExpansion:
        """The expansion of -f."""
        return KernelExpansion(self.kernel, self.support_vectors, -self.coef, -self.intercept,
                               self.gamma, self._slices, self._beta)

    def _check_points(self, Z) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim == 1:
            Z = Z[None, :]
        if Z.ndim != 2 or Z.shape[1] != self.n_dims:
            raise ValueError(f"BoW vectors must have {self.n_dims} dimensions, got shape {Z.shape}")
        if not np.all(np.isfinite(Z)):
            raise ValueError("BoW vectors contain NaN or inf")
        if self.kernel not in ("linear", "rbf") and Z.size and Z.min() < 0:
            raise ValueError(f"kernel {self.kernel!r} needs non-negative BoW vectors; got negative values")
        return Z

    # ---------------------------------------------------------------- numba-backed evaluations
    def _bounds(self) -> np.ndarray:
        return np.array([0] + [sl.stop for sl in self._slices], dtype=np.int64)

    def _code(self) -> int:
        return {"linear": _dk.LINEAR, "exp_chi2": _dk.EXP_CHI2, "rbf": _dk.RBF}[self.kernel]

    def decision(self, Z) -> np.ndarray:
        """f(z) for each row of Z, shape (n,)."""
        Z = self._check_points(Z)
        if self.kernel in SUM_DECOMPOSABLE and self.kernel != "linear":
            return self.contributions(Z).sum(axis=1) + self.intercept
        out = np.empty(Z.shape[0])
        _dk.expansion_values(np.ascontiguousarray(Z), self.support_vectors, self.coef, self._bounds(),
                             self._beta, self._code(), float(self.gamma or 0.0), self.intercept, out)
        return out

    def contributions(self, X) -> np.ndarray:
        """(n, V) with [j, d] = beta_u(d) sum_i a_i k_d(x_id, X_jd) (sum-decomposable kernels)."""
        if self.kernel not in SUM_DECOMPOSABLE:
            raise ValueError(f"kernel {self.kernel!r} is not sum-decomposable; use the Taylor path")
        X = self._check_points(X)
        from bowlrp.bow.kernels import dimension_contributions

        return dimension_contributions(self.kernel, self.support_vectors, self.coef, X,
                                       weights=self._beta, slices=self._slices)[0]

    def gradient(self, z) -> np.ndarray:
        """Gradient of f at one point z, shape (V,) (differentiable kernels and linear).

        exp-chi2: dk/dz_d = k(x_i, z) gamma (4 x_id^2 / (x_id + z_d)^2 - 1), the fraction being 0
        when x_id = z_d = 0; RBF: dk/dz_d = 2 gamma k(x_i, z) (x_id - z_d); linear: x_id.
        """
        if self.kernel not in DIFFERENTIABLE + ("linear",):
            raise ValueError(f"kernel {self.kernel!r} is not differentiable; use bow_relevance")
        z = self._check_points(z)
        if z.shape[0] != 1:
            raise ValueError("gradient takes one point")
        out = np.empty(self.n_dims)
        _dk.expansion_gradient(np.ascontiguousarray(z[0]), self.support_vectors, self.coef, self._bounds(),
                               self._beta, self._code(), float(self.gamma or 0.0), out)
        return out


def bow_relevance(expansion: KernelExpansion, X) -> np.ndarray:
    """Step 3 for sum-decomposable kernels (Eq 24): R3_d = b / V + beta_u(d) sum_i a_i k_d(x_id, x_d).

    Exact: ``R3.sum(axis=1)`` equals f(x) up to float rounding. The intercept is split evenly over
    all V dimensions (EXTENSION for several channels; see the module docstring).

    Parameters
    ----------
    expansion : KernelExpansion
        The explained output (kernel ``"linear"``, ``"intersection"``, ``"chi2"`` or ``"hellinger"``).
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


@dataclass
class TaylorResult:
    """Step 3 by a first-order Taylor expansion at a root (Eq 25) for one BoW vector.

    Attributes
    ----------
    relevance : ndarray (V,)
        R3_d = (x_d - x0_d) df/dz_d(x0) (averaged over the ``roots`` used when more than one).
    root : ndarray (V,)
        The best root x0 (smallest |residual|).
    f_root : float
        f(x0) (|f(x0)| <= the bisection tolerance when a bracketing candidate existed).
    score : float
        f(x).
    residual : float
        rho = f(x) - relevance.sum(): what the first-order expansion does not explain.
    roots : ndarray (r, V)
        The roots whose relevance was averaged.
    candidate : int
        Index (into the candidates given) the best root was found from, -1 if x itself is a root.
    bracketed : bool
        False when no candidate of the opposite sign existed; the root is then the candidate with
        the smallest |f| (EXTENSION) and f_root says how far from a root it is.
    """

    relevance: np.ndarray
    root: np.ndarray
    f_root: float
    score: float
    residual: float
    roots: np.ndarray
    candidate: int
    bracketed: bool


def taylor_relevance(expansion: KernelExpansion, x, root) -> tuple[np.ndarray, float]:
    """R3 = (x - x0) * grad f(x0) and the residual rho = f(x) - sum R3, for a given root x0.

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.decompose import KernelExpansion, taylor_relevance
    >>> f = KernelExpansion("linear", np.array([[1.0, 2.0]]), np.array([1.0]), -1.0)
    >>> R3, rho = taylor_relevance(f, np.array([1.0, 1.0]), np.array([1.0, 0.0]))
    >>> R3, abs(rho) < 1e-12
    (array([0., 2.]), True)
    """
    x = expansion._check_points(x)[0]
    x0 = expansion._check_points(root)[0]
    rel = (x - x0) * expansion.gradient(x0)
    return rel, float(expansion.decision(x)[0] - rel.sum())


def _bisect(expansion, x, fx, Z, fz, tol, max_iter):
    """Bisect on a in [0, 1] for f(a x + (1 - a) z_j) = 0 for every candidate row z_j (numba).

    a = 1 is x (value fx), a = 0 is z_j (value fz_j, of the opposite sign). Returns the roots (k, V)
    (the best point seen on each segment) and their f values (k,).
    """
    Z = np.ascontiguousarray(Z)
    best_a = np.empty(len(Z))
    best_f = np.empty(len(Z))
    _dk.bisect_segments(np.ascontiguousarray(x), float(fx), Z, np.ascontiguousarray(fz, dtype=np.float64),
                        expansion.support_vectors, expansion.coef, expansion._bounds(), expansion._beta,
                        expansion._code(), float(expansion.gamma or 0.0), expansion.intercept, float(tol),
                        int(max_iter), best_a, best_f)
    roots = best_a[:, None] * x[None, :] + (1.0 - best_a[:, None]) * Z
    return roots, expansion.decision(roots)


def find_root(expansion: KernelExpansion, x, candidates, n_candidates=16, n_roots=1, tol=1e-10,
              max_iter=200, random_state=None) -> TaylorResult:
    """Step 3 for differentiable kernels: root search (Eqs 17-18) and Taylor relevance (Eq 25).

    Candidates z_j of the opposite sign (f(x) f(z_j) < 0) are drawn (seeded) from ``candidates``;
    on each segment a x + (1 - a) z_j, a in [0, 1], bisection finds a point with
    |f| <= ``tol``. Each root x0 gives R3 = (x - x0) grad f(x0) and a residual
    rho = f(x) - sum R3; the root with the smallest |rho| is kept, or the relevance is averaged over
    the ``n_roots`` best. When no candidate has the opposite sign (EXTENSION) the candidate with the
    smallest |f| is used as the expansion point and ``bracketed`` is False; when f(x) = 0, x is its
    own root and R3 = 0.

    Parameters
    ----------
    expansion : KernelExpansion
        ``"exp_chi2"``, ``"rbf"`` or ``"linear"`` (linear: the expansion is exact, rho ~ 0).
    x : array-like of shape (V,)
    candidates : array-like of shape (n, V)
        Typically the training BoW vectors (``BoWClassifier.train_bows_``).
    n_candidates : int, default=16
        How many opposite-sign candidates to bisect towards (drawn at random when there are more).
    n_roots : int, default=1
        Average the relevance over the ``n_roots`` roots with the smallest |rho| (r of the paper).
    tol : float, default=1e-10
        Bisection stops when |f| <= tol.
    max_iter : int, default=200
        Bisection steps at most (the bracket reaches float resolution after about 60).
    random_state : int, RandomState or None
        Seeds the draw of the candidates (only used when there are more than ``n_candidates``).

    Returns
    -------
    TaylorResult

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.bow.decompose import KernelExpansion, find_root
    >>> rng = np.random.default_rng(0)
    >>> S = rng.random((6, 4))
    >>> f = KernelExpansion("rbf", S, np.array([1.0, 1, 1, -1, -1, -1]), 0.0, gamma=2.0)
    >>> res = find_root(f, S[0], S, random_state=0)
    >>> bool(abs(res.f_root) <= 1e-10), bool(abs(res.score - res.relevance.sum() - res.residual) < 1e-12)
    (True, True)
    """
    from sklearn.utils import check_random_state

    if expansion.kernel not in DIFFERENTIABLE + ("linear",):
        raise ValueError(f"the Taylor path needs a differentiable kernel, got {expansion.kernel!r}")
    if int(n_candidates) < 1 or int(n_roots) < 1:
        raise ValueError(f"n_candidates and n_roots must be >= 1, got {n_candidates}, {n_roots}")
    x = expansion._check_points(x)[0]
    C = expansion._check_points(candidates)
    if C.shape[0] == 0:
        raise ValueError("the root search needs at least one candidate BoW vector")
    fx = float(expansion.decision(x)[0])
    if fx == 0.0:
        zero = np.zeros_like(x)
        return TaylorResult(zero, x.copy(), 0.0, 0.0, 0.0, x[None, :].copy(), -1, True)
    fc = expansion.decision(C)
    opposite = np.flatnonzero(fc * fx < 0)
    if opposite.size == 0:
        # No bracket: expand around the candidate closest to a root (reported via f_root, bracketed).
        j = int(np.argmin(np.abs(fc)))
        rel, rho = taylor_relevance(expansion, x, C[j])
        return TaylorResult(rel, C[j].copy(), float(fc[j]), fx, rho, C[j][None, :].copy(), j, False)
    rng = check_random_state(random_state)
    if opposite.size > n_candidates:
        opposite = np.sort(rng.choice(opposite, size=int(n_candidates), replace=False))
    roots, froots = _bisect(expansion, x, fx, C[opposite], fc[opposite], tol, max_iter)
    rels = np.empty_like(roots)
    for k, r in enumerate(roots):
        rels[k] = (x - r) * expansion.gradient(r)
    rhos = fx - rels.sum(axis=1)
    order = np.argsort(np.abs(rhos), kind="stable")
    best = order[: int(n_roots)]
    rel = rels[best].mean(axis=0)
    k0 = int(order[0])
    return TaylorResult(rel, roots[k0].copy(), float(froots[k0]), fx, float(fx - rel.sum()),
                        roots[best].copy(), int(opposite[k0]), True)


# =====================================================================================================
# All three steps for a fitted BoWClassifier
# =====================================================================================================
def explain_bow(expansion: KernelExpansion, X, candidates=None, n_candidates=16, n_roots=1,
                random_state=0) -> tuple[np.ndarray, list]:
    """Step 3 for a batch of BoW vectors, whatever the kernel.

    Sum-decomposable kernels use Eq 24 (one batched call); ``"exp_chi2"`` and ``"rbf"`` use the root
    search and Taylor expansion of :func:`find_root`, with ``candidates`` (the training BoWs).

    Returns
    -------
    R3 : ndarray of shape (n, V)
    taylor : list of TaylorResult or None
        One per row for the Taylor kernels, ``None`` entries for exact kernels.
    """
    X = expansion._check_points(X)
    if expansion.kernel in SUM_DECOMPOSABLE:
        return bow_relevance(expansion, X), [None] * X.shape[0]
    if candidates is None:
        raise ValueError(f"kernel {expansion.kernel!r} is explained by a Taylor step and needs candidate "
                         "BoW vectors for its root search (the training BoWs)")
    # An int seed (or None) seeds every row's draw on its own, so a row's explanation does not depend
    # on the other rows of the batch; a RandomState instance is consumed row after row.
    results = [find_root(expansion, x, candidates, n_candidates=n_candidates, n_roots=n_roots,
                         random_state=random_state) for x in X]
    return np.stack([r.relevance for r in results]) if results else np.zeros((0, X.shape[1])), results


def _expansion_for(clf, output: int, negate: bool) -> KernelExpansion:
    f = KernelExpansion(
        clf.kernel,
        clf.support_vectors_,
        np.asarray(clf.dual_coef_)[output],
        float(np.asarray(clf.intercept_)[output]),
        gamma=getattr(clf, "gamma_", None) if getattr(clf, "gamma_", None) is not None else clf.gamma,
        channel_slices=clf.channel_slices_,
        channel_weights=clf.channel_weights_,
    )
    return f.negated() if negate else f


def _resolve_target(classes, target):
    """(class index, label) of one requested target: a class label, or an index for non-integer labels."""
    classes = np.asarray(classes)
    hits = np.flatnonzero(classes == target) if not isinstance(target, (list, tuple, dict)) else []
    if len(hits) == 1:
        return int(hits[0]), classes[hits[0]]
    integer_labels = classes.dtype.kind in "iub"
    if (not integer_labels and isinstance(target, (int, np.integer)) and not isinstance(target, bool)
            and 0 <= int(target) < len(classes)):
        return int(target), classes[int(target)]
    raise ValueError(f"unknown target class {target!r}; the classifier knows {list(classes)}")


def _output_of(n_classes: int, n_outputs: int, class_index: int) -> tuple[int, bool]:
    """SVM output and sign that score a class: binary problems score classes_[1] on one output."""
    if n_outputs == 1 and n_classes == 2:
        return 0, class_index == 0
    return class_index, False


def explain_classifier(clf, images, target=None, n_candidates=16, n_roots=1, random_state=0):
    """Explain a fitted :class:`~bowlrp.bow.classifier.BoWClassifier` (what ``clf.explain`` runs).

    Features are extracted and encoded once; the decision values come from the classifier's own
    ``_decision_from_bows`` (the code path of ``decision_function``), so ``Heatmap.score`` equals
    ``decision_function`` exactly, and for sum-decomposable kernels the pixel map sums to it up to
    float rounding (``Heatmap.residual``).

    Parameters
    ----------
    clf : fitted BoWClassifier
    images : sequence of images
    target : None, class label, or list of class labels
        ``None`` explains each image's predicted class. A single label explains that class for
        every image. A list (or tuple / array) explains each of its classes for every image. Labels
        are matched against ``clf.classes_``; when the labels are not integers, an int is also
        accepted as an index into ``classes_``. For a binary classifier, explaining ``classes_[0]``
        explains the negated decision value.
    n_candidates, n_roots, random_state
        Root search of the Taylor kernels (see :func:`find_root`); ignored by exact kernels. An int
        seed seeds each image's search on its own, so an image's map does not depend on the batch.

    Returns
    -------
    list of Heatmap, or list of list of Heatmap
        One Heatmap per image when ``target`` is None or a single label; when ``target`` is a list,
        one list per image holding one Heatmap per requested target, in the order given.
    """
    from sklearn.utils.validation import check_is_fitted

    from bowlrp.heatmap import Heatmap

    check_is_fitted(clf, ["support_vectors_", "dual_coef_", "classes_"])
    features = clf._extract(images)
    encodings = clf._encode(features)
    X = np.stack([e.x for e in encodings]) if encodings else np.zeros((0, clf.support_vectors_.shape[1]))
    decision = np.asarray(clf._decision_from_bows(X), dtype=np.float64)
    if decision.ndim == 1:
        decision = decision[:, None]
    classes = np.asarray(clf.classes_)
    n_outputs = decision.shape[1]

    if isinstance(target, np.ndarray) and target.ndim == 0:
        target = target.item()
    many = isinstance(target, (list, tuple, np.ndarray))
    if target is None:
        if n_outputs == 1:
            chosen = (decision[:, 0] > 0).astype(int)
        else:
            chosen = np.argmax(decision, axis=1)
        per_image = [[int(c)] for c in chosen]
    else:
        requested = [_resolve_target(classes, t)[0] for t in (target if many else [target])]
        if many and not requested:
            raise ValueError("target is an empty list: give at least one class to explain")
        per_image = [requested] * len(encodings)

    # Step 3. Exact kernels: one batched call for every output any image needs (binary problems
    # need one output for both classes: classes_[0] is its negation). Taylor kernels: per class.
    bow_rel: dict = {}
    needed = sorted({c for cs in per_image for c in cs})
    if clf.kernel in SUM_DECOMPOSABLE:
        outputs = sorted({_output_of(len(classes), n_outputs, c)[0] for c in needed})
        expansions = {o: _expansion_for(clf, o, False) for o in outputs}
        coef = np.stack([expansions[o].coef for o in outputs])
        from bowlrp.bow.kernels import dimension_contributions

        contrib = dimension_contributions(clf.kernel, expansions[outputs[0]].support_vectors, coef, X,
                                          weights=expansions[outputs[0]]._beta,
                                          slices=expansions[outputs[0]]._slices)
        for i, cs in enumerate(per_image):
            for c in cs:
                output, negate = _output_of(len(classes), n_outputs, c)
                b = expansions[output].intercept
                R3 = contrib[outputs.index(output), i] + b / X.shape[1]  # Eq 24, as bow_relevance
                bow_rel[i, c] = (-R3 if negate else R3, None, -b if negate else b)
    else:
        for c in needed:
            rows = [i for i, cs in enumerate(per_image) if c in cs]
            output, negate = _output_of(len(classes), n_outputs, c)
            f = _expansion_for(clf, output, negate)
            R3, taylor = explain_bow(f, X[rows], getattr(clf, "train_bows_", None), n_candidates, n_roots,
                                     random_state)
            for k, i in enumerate(rows):
                bow_rel[i, c] = (R3[k], taylor[k], f.intercept)

    method = f"bow-lrp/{clf.kernel}"
    bounds = np.array([[s.start, s.stop] for s in encodings[0].channel_slices]) if encodings else None
    out = []
    for i, (feat, enc) in enumerate(zip(features, encodings)):
        boxes = feat.boxes()
        maps = []
        for c in per_image[i]:
            R3, taylor, intercept = bow_rel[i, c]
            output, negate = _output_of(len(classes), n_outputs, c)
            score = -decision[i, output] if negate else decision[i, output]
            R2 = feature_relevance(enc.mapping, R3, enc.p, enc.channel_slices, feat.channel)
            R1 = pixel_relevance(R2, boxes, feat.image_shape)
            extras = {
                "kernel": clf.kernel,
                "p": float(enc.p),
                "intercept": float(intercept),
                "bow": enc.x,
                "bow_relevance": R3,
                "feature_relevance": R2,
                "feature_centers": feat.centers,
                "feature_support": feat.support,
                "feature_channel": feat.channel,
                "feature_boxes": boxes,
                "channel_slices": bounds,
                "level_sums": {"bow": float(R3.sum()), "features": float(R2.sum()),
                               "pixels": float(R1.sum())},
            }
            if taylor is not None:
                extras["taylor"] = {
                    "root": taylor.root,
                    "f_root": float(taylor.f_root),
                    "residual": float(taylor.residual),
                    "bracketed": int(taylor.bracketed),
                    "n_roots": int(taylor.roots.shape[0]),
                    "candidate": int(taylor.candidate),
                }
            image = np.asarray(images[i])
            maps.append(Heatmap(R1, score=float(score), target=classes[c], method=method,
                                image=image if image.shape[:2] == R1.shape else None, extras=extras))
        out.append(maps if many else maps[0])
        every = max(1, len(encodings) // 10)
        if getattr(clf, "verbose", False) and (i + 1 == len(encodings) or (i + 1) % every == 0):
            print(f"[bowlrp] explained {i + 1}/{len(encodings)} images", file=sys.stderr, flush=True)
    return out


# =====================================================================================================
# Overlapping tiles (the paper's Fig. 6)
# =====================================================================================================
def tile_boxes(image_shape, tile, stride=None) -> np.ndarray:
    """Top-left-anchored tiles of side ``tile`` every ``stride`` pixels, the last flush with the border.

    Returns an (n_tiles, 4) int64 array of half-open ``y0, x0, y1, x1``; together the tiles cover
    every pixel. A tile larger than the image is clipped to it.

    Examples
    --------
    >>> from bowlrp.bow.decompose import tile_boxes
    >>> tile_boxes((10, 6), 6, 4)
    array([[ 0,  0,  6,  6],
           [ 4,  0, 10,  6]])
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    th, tw = (tile, tile) if np.isscalar(tile) else tile
    th, tw = min(int(th), height), min(int(tw), width)
    if th < 1 or tw < 1:
        raise ValueError(f"tile must be positive, got {tile!r}")
    if stride is None:
        sh, sw = max(1, th // 2), max(1, tw // 2)
    else:
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        sh, sw = int(sh), int(sw)
        if sh < 1 or sw < 1:
            raise ValueError(f"stride must be positive, got {stride!r}")

    def starts(length, size, step):
        s = list(range(0, length - size + 1, step))
        if s[-1] != length - size:
            s.append(length - size)
        return s

    return np.array([[y, x, y + th, x + tw] for y in starts(height, th, sh) for x in starts(width, tw, sw)],
                    dtype=np.int64)


def explain_tiles(clf, image, tile, stride=None, target=None, **options):
    """Explain overlapping tiles of one image separately and average their maps per pixel (Fig. 6).

    Every tile is classified and explained as an image of its own, so each tile's map conserves its
    own score (up to its residual); the returned map is, at each pixel, the mean over the tiles that
    contain it. ``target=None`` explains the class predicted for the whole image in every tile.

    Parameters
    ----------
    clf : fitted BoWClassifier
    image : array (H, W) or (H, W, 3)
    tile : int or (int, int)
        Tile side(s) in pixels; must be large enough for the feature extractor.
    stride : int or (int, int), optional
        Default: half the tile (50 % overlap).
    target : class label, optional
    **options
        Passed to :func:`explain_classifier` (root search settings).

    Returns
    -------
    Heatmap
        ``score`` and ``residual`` are None (an average of tile maps conserves nothing as a whole);
        ``extras`` holds ``tile_boxes``, ``tile_scores``, ``tile_residuals`` and ``coverage`` (tiles
        per pixel).
    """
    from bowlrp.heatmap import Heatmap

    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    if target is None:
        target = clf.predict([img])[0]
    boxes = tile_boxes(img.shape[:2], tile, stride)
    crops = [img[y0:y1, x0:x1] for y0, x0, y1, x1 in boxes]
    maps = explain_classifier(clf, crops, target=target, **options)
    total = np.zeros(img.shape[:2])
    coverage = np.zeros(img.shape[:2])
    for (y0, x0, y1, x1), h in zip(boxes, maps):
        total[y0:y1, x0:x1] += h.relevance
        coverage[y0:y1, x0:x1] += 1.0
    # every pixel is covered by construction of tile_boxes
    return Heatmap(
        total / coverage,
        target=maps[0].target,
        method=f"{maps[0].method}/tiles",
        image=img,
        extras={
            "tile_boxes": boxes,
            "tile_scores": np.array([h.score for h in maps]),
            "tile_residuals": np.array([h.residual for h in maps]),
            "coverage": coverage,
        },
    )
