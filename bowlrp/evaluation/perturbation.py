"""Region perturbation (pixel flipping) and AOPC (Samek et al., IEEE TNNLS 2017; SPEC section 4).

The image is cut into non-overlapping r x r regions (the last row and column of regions are cropped at
the border), the regions are ordered by summed relevance (MoRF: most relevant first; LeRF: least
relevant first; or at random) and replaced cumulatively, ``regions_per_step`` per step, by a
perturbation; the model is rescored after every step. The area over the perturbation curve is

    AOPC = 1/(L+1) * mean over images of sum_{k=0..L} (f(x^0) - f(x^k)),

computed in ONE place, :func:`aopc_per_image` (with :func:`aopc` and :func:`aopc_sem` on top of it);
``PerturbationCurve`` and the application's run evaluation call these.

Our convention (the paper leaves it open): every image gets ONE replacement image (uniform noise,
a blurred copy, or a constant), drawn from a random stream that depends only on ``random_state`` and
the image's index. Flipping a region copies the replacement's pixels, so MoRF, LeRF and the random
order of the same image see the very same noise, and results do not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from bowlrp.evaluation._inputs import _as_heatmaps, _as_images, _as_relevance

__all__ = ["ORDERS", "PERTURBATIONS", "PerturbationCurve", "region_perturbation", "perturbation_curves",
           "region_order", "aopc", "aopc_per_image", "aopc_sem"]

ORDERS = ("morf", "lerf", "random")
PERTURBATIONS = ("uniform", "blur", "constant")


def _region_sums(relevance, r):
    """Summed relevance of the r x r regions (border regions cropped), shape (ceil(H/r), ceil(W/r))."""
    h, w = relevance.shape
    nh, nw = -(-h // r), -(-w // r)
    padded = np.zeros((nh * r, nw * r))
    padded[:h, :w] = relevance
    return padded.reshape(nh, r, nw, r).sum(axis=(1, 3))


def region_order(relevance, order="morf", region_size=9, random_state=None):
    """Order in which the regions of one heatmap are perturbed.

    Parameters
    ----------
    relevance : (H, W) array or Heatmap (ignored for ``order="random"``, except for its shape)
    order : {"morf", "lerf", "random"}
    region_size : int
    random_state : int, Generator or None
        Used by the random order only.

    Returns
    -------
    ndarray of int64
        Flat region indices (row-major over the ``ceil(H/r) x ceil(W/r)`` grid), first perturbed first.
        Ties keep raster order (a stable sort), so the result is deterministic.

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.evaluation import region_order
    >>> region_order(np.array([[0., 5.], [1., -2.]]), "morf", region_size=1).tolist()
    [1, 2, 0, 3]
    """
    rel = _as_relevance(relevance)
    r = _check_region_size(region_size)
    sums = _region_sums(rel, r).ravel()
    if order == "morf":
        return np.argsort(-sums, kind="stable")
    if order == "lerf":
        return np.argsort(sums, kind="stable")
    if order == "random":
        return np.random.default_rng(random_state).permutation(sums.size)
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def _check_region_size(region_size):
    if isinstance(region_size, bool) or not isinstance(region_size, (int, np.integer)) or region_size < 1:
        raise ValueError(f"region_size must be a positive integer, got {region_size!r}")
    return int(region_size)


def _replacement(image, perturbation, rng, value, noise_range, blur_sigma):
    """The image every flipped region copies its pixels from."""
    if perturbation == "uniform":
        lo, hi = (image.min(), image.max()) if noise_range is None else noise_range
        if hi < lo:
            raise ValueError(f"noise_range {noise_range} has high < low")
        return rng.uniform(lo, hi, size=image.shape)
    if perturbation == "blur":
        sigma = (blur_sigma,) * 2 + ((0,) if image.ndim == 3 else ())  # never blur across channels
        return gaussian_filter(image, sigma=sigma, mode="reflect")
    if perturbation == "constant":
        if isinstance(value, str):
            if value != "mean":
                raise ValueError(f"value must be a number, a per-channel vector or 'mean', got {value!r}")
            fill = image.mean(axis=(0, 1))
        else:
            fill = np.asarray(value, np.float64)
            if not np.all(np.isfinite(fill)):
                raise ValueError("value must be finite")
        try:
            return np.broadcast_to(fill, image.shape).astype(np.float64)
        except ValueError:
            raise ValueError(
                f"value {value!r} does not broadcast to an image of shape {image.shape}"
            ) from None
    raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")


def _entropy(random_state):
    """Seed material for a SeedSequence from None, an int, a Generator or a legacy RandomState."""
    if (
        random_state is None
        or isinstance(random_state, (int, np.integer))
        and not isinstance(random_state, bool)
    ):
        if random_state is not None and random_state < 0:
            raise ValueError(f"random_state must be non-negative, got {random_state}")
        return random_state
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    raise TypeError(
        f"random_state must be None, an int, a numpy Generator or RandomState, got {random_state!r}"
    )


def _scores_1d(raw, n, target, what):
    s = np.asarray(raw, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.shape[:1] != (n,) or s.ndim not in (1, 2):
        raise ValueError(
            f"model returned scores of shape {s.shape} for {n} {what}; expected (n,) or (n, n_classes)"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError("model returned NaN or inf scores")
    if s.ndim == 1:
        return s
    return s[np.arange(n), target]


def _call_model(model, batch, stack):
    return model(np.stack(batch) if stack else list(batch))


@dataclass
class PerturbationCurve:
    """Scores of the perturbed images, one row per image, one column per step (column 0: intact).

    Attributes
    ----------
    scores : ndarray, shape (n, L+1)
        f(x^k) for k = 0..L.
    order, perturbation : str
    region_size, regions_per_step : int
    target : ndarray, shape (n,)
        The class whose score was tracked (-1 when the model returns one score per image).
    """

    scores: np.ndarray
    order: str
    region_size: int
    regions_per_step: int
    perturbation: str
    target: np.ndarray = field(repr=False)

    @property
    def n_steps(self) -> int:
        """L, the number of perturbation steps."""
        return self.scores.shape[1] - 1

    @property
    def drops(self) -> np.ndarray:
        """(n, L+1): f(x^0) - f(x^k)."""
        return self.scores[:, :1] - self.scores

    @property
    def aopc_per_image(self) -> np.ndarray:
        """(n,): 1/(L+1) * sum_k (f(x^0) - f(x^k)) per image (:func:`aopc_per_image`)."""
        return aopc_per_image(self.scores)

    @property
    def aopc(self) -> float:
        """AOPC = 1/(L+1) * mean over images of sum_{k=0..L} (f(x^0) - f(x^k)) (:func:`aopc`)."""
        return aopc(self.scores)

    @property
    def aopc_by_step(self) -> np.ndarray:
        """(L+1,): the AOPC computed with only the first L' steps, for L' = 0..L (Samek et al.'s plots)."""
        cum = self.drops.mean(axis=0).cumsum()
        return cum / np.arange(1, cum.size + 1)

    @property
    def mean_curve(self) -> np.ndarray:
        """(L+1,): the mean score after k steps."""
        return self.scores.mean(axis=0)

    def to_dict(self) -> dict:
        """JSON-ready summary (no per-image scores)."""
        return {
            "order": self.order,
            "perturbation": self.perturbation,
            "region_size": self.region_size,
            "regions_per_step": self.regions_per_step,
            "n_images": int(self.scores.shape[0]),
            "n_steps": self.n_steps,
            "aopc": self.aopc,
            "aopc_sem": aopc_sem(self.scores),
            "mean_curve": self.mean_curve.tolist(),
        }

    def plot(self, ax=None, label=None, **kwargs):
        """Plot the mean score against the number of steps (matplotlib imported lazily)."""
        from bowlrp.evaluation.plotting import plot_perturbation_curves

        return plot_perturbation_curves({label or self.order: self}, ax=ax, **kwargs)


def region_perturbation(
    model,
    images,
    heatmaps=None,
    *,
    order="morf",
    region_size=9,
    n_steps=None,
    regions_per_step=1,
    perturbation="uniform",
    value=0.0,
    noise_range=None,
    blur_sigma=None,
    target=None,
    batch_size=64,
    random_state=None,
):
    """Perturb the regions of every image in relevance order and rescore (pixel flipping).

    Parameters
    ----------
    model : callable
        ``model(batch) -> scores``; ``batch`` is an (b, H, W[, C]) array when all images share one
        shape (a list of arrays otherwise); scores are (b,) or (b, n_classes).
    images : ndarray (n, H, W[, C]) or list of arrays
    heatmaps : ndarray (n, H, W), list of (H, W) arrays or of Heatmap objects
        Required unless ``order="random"``.
    order : {"morf", "lerf", "random"}
    region_size : int
        Side r of the square regions (default 9, as in Samek et al.).
    n_steps : int or None
        L. None: perturb every region of the smallest image, at most 100 steps.
    regions_per_step : int
        Regions replaced per step (1 in the paper; larger for large images).
    perturbation : {"uniform", "blur", "constant"}
        ``"uniform"``: noise uniform in ``noise_range`` (default: the image's own min and max);
        ``"blur"``: a Gaussian-blurred copy (``blur_sigma``, default r/2); ``"constant"``: ``value``
        (a number, a per-channel vector, or "mean" for the image's mean colour).
    target : int, array of int or None
        Tracked class when the model returns (b, n_classes); None: each image's top class at k = 0.
    batch_size : int
        Number of perturbed images per model call.
    random_state : int, Generator or None
        Seeds the noise and the random order (per image, independent of ``batch_size``).

    Returns
    -------
    PerturbationCurve

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.evaluation import region_perturbation
    >>> w = np.zeros((1, 4, 4)); w[0, :2, :2] = 1.0          # the model looks at one corner only
    >>> model = lambda X: (X * w).sum(axis=(1, 2))
    >>> X = np.ones((1, 4, 4))
    >>> curve = region_perturbation(model, X, w, region_size=2, perturbation="constant", value=0.0)
    >>> curve.scores.tolist()
    [[4.0, 0.0, 0.0, 0.0, 0.0]]
    >>> curve.aopc
    3.2
    """
    if not callable(model):
        raise TypeError(f"model must be callable (images -> scores), got {type(model).__name__}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")
    r = _check_region_size(region_size)
    if (
        isinstance(regions_per_step, bool)
        or not isinstance(regions_per_step, (int, np.integer))
        or regions_per_step < 1
    ):
        raise ValueError(f"regions_per_step must be a positive integer, got {regions_per_step!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    imgs, stack = _as_images(images)
    n = len(imgs)
    shapes = [im.shape[:2] for im in imgs]
    if order == "random" and heatmaps is None:
        maps = [np.zeros(s) for s in shapes]
    else:
        maps = _as_heatmaps(heatmaps, n)
        for i, (m, s) in enumerate(zip(maps, shapes)):
            if m.shape != s:
                raise ValueError(f"heatmap {i} has shape {m.shape} but image {i} is {s}")
    blur_sigma = r / 2.0 if blur_sigma is None else float(blur_sigma)

    n_regions = [(-(-h // r)) * (-(-w // r)) for h, w in shapes]
    max_steps = min(-(-k // regions_per_step) for k in n_regions)
    if n_steps is None:
        n_steps = min(max_steps, 100)
    elif isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    elif n_steps > max_steps:
        raise ValueError(
            f"n_steps={n_steps} exceeds the {max_steps} steps the smallest image allows "
            f"({min(n_regions)} regions of {r}x{r}, {regions_per_step} per step)"
        )
    n_steps = int(n_steps)

    # one independent stream per image: child 0 -> replacement noise, child 1 -> random order
    seeds = np.random.SeedSequence(_entropy(random_state)).spawn(n)
    replacements, step_maps = [], []
    for im, rel, seed in zip(imgs, maps, seeds):
        noise_seed, order_seed = seed.spawn(2)
        replacements.append(
            _replacement(im, perturbation, np.random.default_rng(noise_seed), value, noise_range, blur_sigma)
        )
        ordering = region_order(rel, order, r, random_state=np.random.default_rng(order_seed))
        # step at which each region is replaced (1-based); regions beyond step L stay intact
        step_of_region = np.empty(ordering.size, np.int64)
        step_of_region[ordering] = np.arange(ordering.size) // regions_per_step + 1
        h, w = im.shape[:2]
        grid = step_of_region.reshape(-(-h // r), -(-w // r))
        step_maps.append(np.repeat(np.repeat(grid, r, axis=0), r, axis=1)[:h, :w])

    # the intact images first, to fix the tracked class
    s0_raw = []
    for start in range(0, n, batch_size):
        s0_raw.append(np.asarray(_call_model(model, imgs[start : start + batch_size], stack), np.float64))
    s0_raw = np.concatenate([s if s.ndim else s[None] for s in s0_raw], axis=0)
    if s0_raw.ndim == 2 and s0_raw.shape[1] > 1:
        if target is None:
            tgt = s0_raw.argmax(axis=1)
        else:
            tgt = np.broadcast_to(np.asarray(target, np.int64), (n,)).copy()
            if tgt.min() < 0 or tgt.max() >= s0_raw.shape[1]:
                raise ValueError(f"target {target!r} out of range for {s0_raw.shape[1]} classes")
    else:
        tgt = np.full(n, -1, np.int64)
    scores = np.empty((n, n_steps + 1))
    scores[:, 0] = _scores_1d(s0_raw, n, tgt, "images")

    jobs = [(i, k) for i in range(n) for k in range(1, n_steps + 1)]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        batch = []
        for i, k in chunk:
            flipped = step_maps[i] <= k
            if imgs[i].ndim == 3:
                flipped = flipped[:, :, None]
            batch.append(np.where(flipped, replacements[i], imgs[i]))
        got = _scores_1d(_call_model(model, batch, stack), len(chunk), tgt[[i for i, _ in chunk]], "images")
        for (i, k), s in zip(chunk, got):
            scores[i, k] = s
    return PerturbationCurve(scores, order, r, int(regions_per_step), perturbation, tgt)


def perturbation_curves(
    model, images, heatmaps_by_method, orders=("morf", "lerf"), include_random=True, **kwargs
):
    """Region perturbation of several heatmap methods on the same images, plus the random baseline.

    Parameters
    ----------
    model, images
        As in :func:`region_perturbation`.
    heatmaps_by_method : dict of str -> heatmaps
    orders : tuple of {"morf", "lerf"}
    include_random : bool
        Add the method-free random order under the key ``("random", "random")``.
    **kwargs
        Passed to :func:`region_perturbation` (same ``random_state`` for all: the same noise).

    Returns
    -------
    dict of (method, order) -> PerturbationCurve
    """
    # one seed for every call, settled here: with None or a Generator each call would draw its own,
    # and the methods would no longer see the same noise (an int seed is kept as it is)
    kwargs["random_state"] = np.random.SeedSequence(_entropy(kwargs.get("random_state"))).entropy
    out = {}
    for name, maps in heatmaps_by_method.items():
        for order in orders:
            out[(name, order)] = region_perturbation(model, images, maps, order=order, **kwargs)
    if include_random:
        out[("random", "random")] = region_perturbation(model, images, None, order="random", **kwargs)
    return out


def _score_matrix(scores) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"scores must be (n, L+1), got shape {s.shape}")
    return s


def aopc_per_image(scores) -> np.ndarray:
    """AOPC of each image, 1/(L+1) * sum_{k=0..L} (f(x^0) - f(x^k)), from a score matrix (n, L+1)
    whose column 0 holds the intact images' scores. The one AOPC computation of the package.

    Examples
    --------
    >>> from bowlrp.evaluation import aopc_per_image
    >>> aopc_per_image([[3.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    array([1.66666667, 0.        ])
    """
    s = _score_matrix(scores)
    return (s[:, :1] - s).sum(axis=1) / s.shape[1]


def aopc(scores) -> float:
    """AOPC of a score matrix (n, L+1): the mean over images of :func:`aopc_per_image`.

    Examples
    --------
    >>> from bowlrp.evaluation import aopc
    >>> aopc([[3.0, 1.0, 0.0]])   # (0 + 2 + 3) / 3
    1.6666666666666667
    """
    return float(aopc_per_image(scores).mean())


def aopc_sem(scores) -> float:
    """Standard error of the mean of :func:`aopc_per_image` (0.0 for a single image)."""
    per_image = aopc_per_image(scores)
    return float(per_image.std(ddof=1) / np.sqrt(len(per_image))) if len(per_image) > 1 else 0.0
