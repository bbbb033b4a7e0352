"""Seeded synthetic scenes in the spirit of the paper's toy data (Bach et al. 2015, Fig 6).

Every image shows several filled shapes on a textured background. Positive images (label 1) contain
at least one polygon; negative images (label 0) contain circles only. Shapes of both kinds share the
same size, brightness and texture distributions, so the only cue that separates the classes is the
outline (corners and straight edges versus a smooth curve). The generator returns, for every image,
one boolean mask per object kind, so that heatmaps can be scored against the truth: an explanation of
the "polygon" score should put its relevance on the polygon mask, and chance level is the mask's area
fraction.

Shapes are rasterised at ``supersample`` times the resolution and averaged down, which gives
anti-aliased edges (no staircase corners on circles that a corner detector could mistake for a
polygon). A pixel belongs to an object's mask when at least half of it is covered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["Scenes", "make_scenes", "BACKGROUNDS"]

BACKGROUNDS = ("texture", "skimage", "flat")
_MIN_SIDE = 16


@dataclass(frozen=True)
class Scenes:
    """A batch of synthetic scenes with their ground truth.

    Attributes
    ----------
    images : ndarray, shape (n, H, W) or (n, H, W, 3)
        float64 images with values in [0, 1].
    labels : ndarray, shape (n,)
        int64, 1 when the image contains at least one polygon, 0 when it shows circles only.
    masks : dict of str -> ndarray of bool, shape (n, H, W)
        ``"polygon"`` and ``"circle"``: the pixels covered (at least half) by objects of that kind.
    objects : list of list of dict
        Per image, one dict per object: ``kind``, ``center`` (y, x), ``radius``, ``n_vertices``
        (0 for circles), ``value`` (fill brightness).
    class_names : tuple of str
        Names of labels 0 and 1.
    positive : str
        The key of ``masks`` that makes an image positive (``"polygon"`` here).
    """

    images: np.ndarray
    labels: np.ndarray
    masks: dict
    objects: list = field(repr=False)
    class_names: tuple = ("circles", "polygons")
    positive: str = "polygon"

    def __len__(self):
        return len(self.labels)

    @property
    def positive_masks(self) -> np.ndarray:
        """(n, H, W) bool: the masks of the objects that make an image positive (the polygons)."""
        return self.masks[self.positive]

    def subset(self, index) -> Scenes:
        """The scenes selected by ``index`` (anything that indexes a numpy array)."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Scenes(
            images=self.images[idx],
            labels=self.labels[idx],
            masks={k: v[idx] for k, v in self.masks.items()},
            objects=[self.objects[i] for i in idx],
            class_names=self.class_names,
            positive=self.positive,
        )


def _check_range(name, value, kind=float, low=None):
    if np.isscalar(value):
        value = (value, value)
    try:
        lo, hi = (kind(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or a (low, high) pair, got {value!r}") from None
    if lo > hi:
        raise ValueError(f"{name}: low {lo} is larger than high {hi}")
    if low is not None and lo < low:
        raise ValueError(f"{name} must be >= {low}, got {lo}")
    return lo, hi


def _procedural_texture(rng, shape):
    """A random texture: smoothed noise plus oriented stripes, mean about 0.5, contrast about 0.1."""
    h, w = shape
    noise = gaussian_filter(rng.standard_normal(shape), sigma=rng.uniform(0.7, 2.5), mode="wrap")
    noise /= noise.std() + 1e-12
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(4.0, 12.0)
    stripes = np.sin(
        2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 2 * np.pi)
    )
    mix = rng.uniform(0.2, 0.8)
    tex = mix * noise + (1 - mix) * stripes
    tex /= tex.std() + 1e-12
    return 0.5 + 0.1 * tex


_SKIMAGE_TEXTURES = None


def _skimage_texture(rng, shape):
    """A random crop of one of scikit-image's bundled textures (brick, grass, gravel), tiled if needed."""
    global _SKIMAGE_TEXTURES
    if _SKIMAGE_TEXTURES is None:
        try:
            from skimage import data
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("background='skimage' needs scikit-image (pip install 'bowlrp[data]')") from exc
        _SKIMAGE_TEXTURES = [data.brick(), data.grass(), data.gravel()]
    tex = _SKIMAGE_TEXTURES[rng.integers(len(_SKIMAGE_TEXTURES))].astype(np.float64) / 255.0
    h, w = shape
    reps = (-(-h // tex.shape[0]) + 1, -(-w // tex.shape[1]) + 1)
    tex = np.tile(tex, reps)
    y0 = rng.integers(tex.shape[0] - h + 1)
    x0 = rng.integers(tex.shape[1] - w + 1)
    crop = tex[y0 : y0 + h, x0 : x0 + w]
    # same brightness statistics as the procedural texture, so that objects contrast equally
    return 0.5 + 0.1 * (crop - crop.mean()) / (crop.std() + 1e-12)


def _shape_alpha(kind, center, radius, n_vertices, rotation, shape, supersample):
    """Anti-aliased coverage in [0, 1] of one circle or polygon, shape (H, W)."""
    h, w = shape
    s = supersample
    canvas = np.zeros((h * s, w * s), np.uint8)
    # pixel (i, j) covers [i, i+1) x [j, j+1); on the fine grid its centre is at s*i + (s-1)/2
    cy, cx = (center[0] * s - 0.5, center[1] * s - 0.5)
    shift = 4  # cv2 sub-pixel precision: coordinates in 1/16 pixels
    if kind == "circle":
        cv2.circle(
            canvas,
            (int(round(cx * 2**shift)), int(round(cy * 2**shift))),
            int(round(radius * s * 2**shift)),
            255,
            thickness=-1,
            lineType=cv2.LINE_8,
            shift=shift,
        )
    else:
        angles = rotation + 2 * np.pi * np.arange(n_vertices) / n_vertices
        pts = np.stack([cx + radius * s * np.cos(angles), cy + radius * s * np.sin(angles)], axis=1)
        pts = np.round(pts * 2**shift).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_8, shift=shift)
    fine = canvas.astype(np.float64) / 255.0
    return fine.reshape(h, s, w, s).mean(axis=(1, 3))


def _equal_area_factor(n_vertices):
    """Circumradius of a regular n-gon with the area of the unit circle."""
    return float(np.sqrt(np.pi / (0.5 * n_vertices * np.sin(2 * np.pi / n_vertices))))


def _place(rng, radii, shape, gap):
    """Centres for objects with the given bounding radii, inside the image and apart.

    Returns {object index: (y, x)}; objects that find no free spot in 200 tries are dropped.
    """
    h, w = shape
    placed = {}
    for j, r in enumerate(radii):
        if 2 * r + 2 >= min(h, w):
            continue
        for _ in range(200):
            c = (rng.uniform(r + 1, h - r - 1), rng.uniform(r + 1, w - r - 1))
            if all(np.hypot(c[0] - o[0], c[1] - o[1]) >= r + radii[i] + gap for i, o in placed.items()):
                placed[j] = c
                break
    return placed


def make_scenes(
    n_images=100,
    size=64,
    n_objects=(2, 4),
    radius=(0.1, 0.18),
    n_vertices=(3, 6),
    background="texture",
    distractors=True,
    positive_fraction=0.5,
    color=False,
    supersample=4,
    random_state=None,
):
    """Generate seeded scenes of polygons and circles on textured backgrounds.

    Parameters
    ----------
    n_images : int
        Number of images.
    size : int or (int, int)
        Image height and width in pixels (at least 16).
    n_objects : int or (int, int)
        Number of objects per image, drawn uniformly from the inclusive range. At least one.
    radius : float or (float, float)
        Equal-area radius of the objects as a fraction of the shorter image side, at most 0.28: a
        circle has this radius, a polygon the circumradius that gives it the same area.
    n_vertices : int or (int, int)
        Number of polygon corners, inclusive range, at least 3.
    background : {"texture", "skimage", "flat"}
        ``"texture"``: procedural stripes plus smoothed noise (no dependency); ``"skimage"``: random
        crops of scikit-image's brick, grass and gravel photos; ``"flat"``: uniform gray 0.5.
    distractors : bool
        When True, positive images also contain circles (each object after the first polygon is a
        polygon or a circle with equal odds), so a heatmap has to single the polygons out. When
        False, positive images contain polygons only.
    positive_fraction : float
        Expected share of positive images; the count is rounded and the order shuffled.
    color : bool
        When True, images are RGB: the background and every object get a random tint.
    supersample : int
        Anti-aliasing factor of the rasteriser.
    random_state : int, numpy Generator or None
        Seed; the same seed gives the same scenes.

    Returns
    -------
    Scenes
        ``images`` (n, H, W) or (n, H, W, 3) float64 in [0, 1], ``labels`` (n,), ``masks`` with
        ``"polygon"`` and ``"circle"`` (n, H, W) bool, and the object lists.

    Examples
    --------
    >>> from bowlrp.app.scenes import make_scenes
    >>> scenes = make_scenes(4, size=48, random_state=0)
    >>> scenes.images.shape, scenes.masks["polygon"].shape
    ((4, 48, 48), (4, 48, 48))
    >>> bool(scenes.masks["polygon"][scenes.labels == 0].any())
    False
    """
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    if np.isscalar(size):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise TypeError(f"size must be an int or an (H, W) pair, got {size!r}") from None
    if min(h, w) < _MIN_SIDE:
        raise ValueError(f"size {(h, w)} is too small: both sides must be at least {_MIN_SIDE} pixels")
    k_lo, k_hi = _check_range("n_objects", n_objects, int, low=1)
    r_lo, r_hi = _check_range("radius", radius, float)
    if not (0 < r_lo and r_hi <= 0.28):
        # 0.28: a triangle of that equal-area radius still fits inside the image
        raise ValueError(f"radius must lie in (0, 0.28] of the shorter side, got {(r_lo, r_hi)}")
    v_lo, v_hi = _check_range("n_vertices", n_vertices, int, low=3)
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must lie in [0, 1], got {positive_fraction!r}")
    if int(supersample) < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample!r}")
    supersample = int(supersample)
    side = min(h, w)

    rng = np.random.default_rng(random_state)
    n_pos = int(round(positive_fraction * n_images))
    labels = np.zeros(n_images, np.int64)
    labels[:n_pos] = 1
    rng.shuffle(labels)

    n_ch = 3 if color else 1
    images = np.empty((n_images, h, w, n_ch), np.float64)
    masks = {"polygon": np.zeros((n_images, h, w), bool), "circle": np.zeros((n_images, h, w), bool)}
    objects = []
    for i in range(n_images):
        if background == "texture":
            img = _procedural_texture(rng, (h, w))
        elif background == "skimage":
            img = _skimage_texture(rng, (h, w))
        else:
            img = np.full((h, w), 0.5)
        img = np.repeat(img[:, :, None], n_ch, axis=2)
        if color:
            img = img * rng.uniform(0.6, 1.4, size=3)

        k = int(rng.integers(k_lo, k_hi + 1))
        if labels[i] == 1:
            kinds = ["polygon"] + [
                ("polygon" if (not distractors or rng.random() < 0.5) else "circle") for _ in range(k - 1)
            ]
        else:
            kinds = ["circle"] * k
        verts = [int(rng.integers(v_lo, v_hi + 1)) if kind == "polygon" else 0 for kind in kinds]
        # radius is the equal-area radius: a polygon gets the circumradius that gives it the area of
        # the circle, so that size carries no information about the class
        base = rng.uniform(r_lo, r_hi, k) * side
        radii = [r * (_equal_area_factor(nv) if nv else 1.0) for r, nv in zip(base, verts)]
        placed = _place(rng, radii, (h, w), gap=2.0)
        if 0 not in placed:
            raise ValueError(f"could not place an object of radius {radius} in a {h}x{w} image")
        objs = []
        for j, c in placed.items():
            kind, r, nv = kinds[j], radii[j], verts[j]
            rot = rng.uniform(0, 2 * np.pi)
            alpha = _shape_alpha(kind, c, r, nv, rot, (h, w), supersample)
            # dark or bright fill with a little texture of its own; same law for both kinds
            value = rng.uniform(0.05, 0.25) if rng.random() < 0.5 else rng.uniform(0.75, 0.95)
            fill = value + 0.04 * gaussian_filter(rng.standard_normal((h, w)), 1.0)
            fill = np.repeat(fill[:, :, None], n_ch, axis=2)
            if color:
                fill = fill * rng.uniform(0.6, 1.4, size=3)
            img = img * (1 - alpha[:, :, None]) + fill * alpha[:, :, None]
            masks[kind][i] |= alpha >= 0.5
            objs.append(
                {
                    "kind": kind,
                    "center": (float(c[0]), float(c[1])),
                    "radius": float(r),  # circumradius
                    "n_vertices": nv,
                    "value": float(value),
                }
            )
        images[i] = np.clip(img, 0.0, 1.0)
        objects.append(objs)
    if not color:
        images = images[..., 0]
    return Scenes(images=images, labels=labels, masks=masks, objects=objects)
