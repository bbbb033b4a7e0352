"""The heatmap type shared by both branches, and how heatmaps are drawn, saved and compared.

A :class:`Heatmap` is the answer to "which pixels made the classifier say f(x)?": an H x W array of
relevance whose sum is the explained score up to a reported ``residual``. BoW/SVM explanations
(``bowlrp``) and network explanations (``nets``) both return it, so the same rendering, montage and
evaluation code serves both.

Rendering uses numpy and pillow only. Colour maps are symmetric: relevance 0 always maps to the
centre colour and ``+vmax`` / ``-vmax`` to the two end colours, so red means "for the class" and
blue "against" on every map. Normalisation is per map by default (Eq 35 of Bach et al.: divide by
max |R|) or shared across a set of maps for a fair comparison (:func:`shared_vmax`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bowlrp.npz_values import decode_value as _decode_value
from bowlrp.npz_values import encode_value as _encode_value
from bowlrp.validation import to_grey

__all__ = [
    "Heatmap",
    "COLORMAPS",
    "render",
    "colorize",
    "shared_vmax",
    "save_png",
    "enlarge",
    "PNG_MIN_SIDE",
]

# Saved heatmap PNGs are enlarged to at least this many pixels on the longer side: a 25 x 25 map
# saved as is is a smudge in any image viewer.
PNG_MIN_SIDE = 256

# Each colour map: anchor positions in [-1, 1] (value / vmax) and RGB colours in [0, 1].
# Zero is an anchor of every map, so 0 lands exactly on the centre colour.
COLORMAPS: dict[str, tuple[np.ndarray, np.ndarray]] = {
    # blue - white - red
    "bwr": (
        np.array([-1.0, 0.0, 1.0]),
        np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]),
    ),
    # cyan - blue - black - red - yellow: black-centred cold/hot, as used in LRP papers
    "coldhot": (
        np.array([-1.0, -0.5, 0.0, 0.5, 1.0]),
        np.array(
            [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
        ),
    ),
    # dark blue - white - dark red, softer for print
    "seismic": (
        np.array([-1.0, -0.5, 0.0, 0.5, 1.0]),
        np.array(
            [[0.0, 0.0, 0.3], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0]]
        ),
    ),
}

_NPZ_FORMAT = 1
_META_KEY = "__heatmap_meta__"


def _as_relevance(relevance) -> np.ndarray:
    rel = np.asarray(relevance)
    if rel.dtype.kind not in "fiub":
        raise TypeError(f"relevance must be numeric, got dtype {rel.dtype}")
    if rel.ndim != 2:
        raise ValueError(f"relevance must be a 2-D (H, W) array, got shape {rel.shape}")
    if rel.shape[0] == 0 or rel.shape[1] == 0:
        raise ValueError(f"relevance must not be empty, got shape {rel.shape}")
    rel = rel.astype(np.float64, copy=False)
    if not np.all(np.isfinite(rel)):
        bad = int(np.count_nonzero(~np.isfinite(rel)))
        raise ValueError(f"relevance contains {bad} non-finite values (NaN or inf)")
    return rel


def _as_image(image, shape: tuple[int, int]) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {img.shape}")
    if img.shape[:2] != tuple(shape):
        raise ValueError(f"image shape {img.shape[:2]} does not match relevance shape {tuple(shape)}")
    if img.dtype.kind not in "fiub":
        raise TypeError(f"image must be numeric, got dtype {img.dtype}")
    if img.dtype.kind == "f" and not np.all(np.isfinite(img)):
        raise ValueError("image contains non-finite values (NaN or inf)")
    return img


def _finite_or_none(value, name: str):
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


@dataclass(eq=False)
class Heatmap:
    """Pixel relevance for one image and one explained output.

    Parameters
    ----------
    relevance : array-like of shape (H, W)
        Relevance of each pixel; positive speaks for ``target``, negative against. Must be finite.
    score : float, optional
        The explained value f(x) (an SVM decision value or a network logit).
    target : int or str, optional
        The class (or output index) explained.
    method : str, default=""
        What produced the map, e.g. ``"bow-lrp/intersection"`` or ``"lrp/epsilon_plus_flat"``.
    image : array-like of shape (H, W) or (H, W, C), optional
        The explained image, for overlays.
    residual : float, optional
        ``score - relevance.sum()``: what the bias, the stabiliser or a Taylor step absorbed.
        Computed from ``score`` when not given.
    extras : dict, optional
        Method-specific intermediate results (BoW relevance, feature relevance, per-layer sums...):
        numpy arrays, numbers, strings, lists and nested dicts. Saved and loaded with the map.

    Examples
    --------
    >>> import numpy as np
    >>> from bowlrp.heatmap import Heatmap
    >>> h = Heatmap(np.array([[1.0, -0.5], [0.25, 0.25]]), score=1.5, target=1, method="toy")
    >>> h.residual
    0.5
    >>> h.render().shape
    (2, 2, 3)
    """

    relevance: np.ndarray
    score: float | None = None
    target: Any = None
    method: str = ""
    image: np.ndarray | None = None
    residual: float | None = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        self.relevance = _as_relevance(self.relevance)
        self.score = _finite_or_none(self.score, "score")
        if self.image is not None:
            self.image = _as_image(self.image, self.relevance.shape)
        if self.residual is None and self.score is not None:
            self.residual = self.score - float(self.relevance.sum())
        self.residual = _finite_or_none(self.residual, "residual")
        if self.extras is None:
            self.extras = {}
        if not isinstance(self.extras, dict):
            raise TypeError(f"extras must be a dict, got {type(self.extras).__name__}")
        if isinstance(self.target, np.generic):
            self.target = self.target.item()
        self.method = str(self.method)

    @classmethod
    def _trusted(cls, relevance, score, target, method, image, extras, total=None) -> Heatmap:
        """A map from arrays the library itself computed and checked, without re-validating them.

        For explainers building many maps per batch (``__post_init__``'s checks of every pixel cost as
        much as Steps 2 and 1 of a small image). The caller guarantees: ``relevance`` a finite float64
        (H, W) array, ``image`` None or an array ``__post_init__`` would accept for that shape,
        ``method`` a str, ``extras`` a dict and ``total``, when given, the float ``relevance.sum()``
        returns (a batch computes every map's sum in one call). The score is checked and the residual
        computed exactly as the public constructor does, so the fields are the ones ``Heatmap(...)``
        gives.
        """
        self = object.__new__(cls)
        self.relevance = relevance
        self.score = _finite_or_none(score, "score")
        self.target = target.item() if isinstance(target, np.generic) else target
        self.method = method
        self.image = image
        if self.score is None:
            residual = None
        else:
            residual = self.score - (float(relevance.sum()) if total is None else total)
        self.residual = _finite_or_none(residual, "residual")
        self.extras = extras
        return self

    # ------------------------------------------------------------------ views
    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the map."""
        return self.relevance.shape

    @property
    def total(self) -> float:
        """Sum of the pixel relevance (equals ``score - residual``)."""
        return float(self.relevance.sum())

    def render(self, cmap: str = "bwr", vmax: float | None = None, overlay: bool = False,
               alpha: float = 0.6) -> np.ndarray:
        """Colour image of the map, uint8 (H, W, 3). See :func:`render`."""
        return render(self, cmap=cmap, vmax=vmax, overlay=overlay, alpha=alpha)

    # ------------------------------------------------------------------ I/O
    def save(self, path, min_side: int | None = PNG_MIN_SIDE, **render_options) -> str:
        """Save to ``path``: ``.png`` writes the rendered map (to look at), ``.npz`` every field
        exactly (to compute with; read back with :meth:`load`). Returns the path written.

        A PNG is enlarged by a whole factor (nearest neighbour: every pixel becomes a square of one
        colour) until its longer side is at least ``min_side`` (default :data:`PNG_MIN_SIDE`);
        ``min_side=None`` keeps the map's own size. ``render_options`` go to :meth:`render`.
        """
        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".png":
            save_png(enlarge(self.render(**render_options), min_side), path)
        elif suffix == ".npz":
            if render_options or min_side != PNG_MIN_SIDE:
                raise TypeError("render options and min_side apply to .png only")
            self._save_npz(path)
        else:
            raise ValueError(f"unknown heatmap file type {suffix!r}: use .png or .npz")
        return path

    def _save_npz(self, path: str) -> None:
        arrays: dict[str, np.ndarray] = {"relevance": self.relevance}
        if self.image is not None:
            arrays["image"] = self.image
        meta = {
            "format": _NPZ_FORMAT,
            "score": self.score,
            "target": _encode_value(self.target, "target", arrays),
            "method": self.method,
            "residual": self.residual,
            "extras": _encode_value(self.extras, "extras", arrays),
        }
        arrays[_META_KEY] = np.array(json.dumps(meta))
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path) -> Heatmap:
        """Read a heatmap written by ``save(path.npz)``; every field round-trips exactly.

        Raises
        ------
        ValueError
            Naming the file: missing, truncated or corrupt, not an NPZ archive, an NPZ of something
            else, holding pickled objects (never loaded), or written by a newer bowlrp.
        """
        path = os.fspath(path)
        arrays = _read_npz_members(path)
        if _META_KEY not in arrays or "relevance" not in arrays:
            raise ValueError(f"{path} is an NPZ file but not a saved Heatmap (no metadata)")
        try:
            meta = json.loads(str(arrays[_META_KEY]))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"{path}: the heatmap's metadata is damaged ({exc})") from None
        version = meta.get("format", 0) if isinstance(meta, dict) else None
        if not isinstance(version, int):
            raise ValueError(f"{path}: the heatmap's metadata is damaged (no format version)")
        if version > _NPZ_FORMAT:
            raise ValueError(
                f"{path} was written by a newer bowlrp (heatmap format {meta['format']}, "
                f"this version reads up to {_NPZ_FORMAT})"
            )
        try:
            return cls(
                relevance=arrays["relevance"],
                score=meta["score"],
                target=_decode_value(meta["target"], arrays),
                method=meta["method"],
                image=arrays.get("image"),
                residual=meta["residual"],
                extras=_decode_value(meta["extras"], arrays),
            )
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise ValueError(f"{path}: damaged heatmap file ({type(exc).__name__}: {exc})") from None

    def __repr__(self) -> str:
        return (
            f"Heatmap(shape={self.shape}, score={self.score}, target={self.target!r}, "
            f"method={self.method!r}, residual={self.residual}, extras={sorted(self.extras)})"
        )


# ---------------------------------------------------------------------- reading NPZ files
def _read_npz_members(path: str) -> dict:
    """Every member of an NPZ file; each way a file can be unusable becomes a ValueError naming it."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such heatmap file")
    with open(path, "rb") as fh:
        if fh.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise ValueError(f"{path} is not a readable heatmap file (not an NPZ archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"{path} holds pickled Python objects, which a heatmap file never does; "
                             "not loaded") from None
        raise ValueError(f"{path} is not a readable heatmap NPZ file (corrupt: {exc})") from None
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, OSError of truncated members
        raise ValueError(f"{path} is not a readable heatmap NPZ file (truncated or corrupt: "
                         f"{type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------- rendering
def _relevance_of(item) -> np.ndarray:
    return item.relevance if isinstance(item, Heatmap) else _as_relevance(item)


def shared_vmax(maps) -> float:
    """One normalisation for several maps: the largest |relevance| among them (0 if all are 0).

    Pass it as ``vmax`` to :func:`render` (or use ``montage(..., shared=True)``) so that equal
    colours mean equal relevance across the maps.
    """
    peaks = [float(np.max(np.abs(_relevance_of(m)))) for m in maps]
    if not peaks:
        raise ValueError("shared_vmax needs at least one map")
    return max(peaks)


def colorize(values: np.ndarray, cmap: str = "bwr", vmax: float | None = None) -> np.ndarray:
    """Map values to RGB floats in [0, 1] with a symmetric colour map.

    ``values / vmax`` is clipped to [-1, 1]; 0 gives the centre colour exactly, ``+vmax`` the last
    colour and ``-vmax`` the first. ``vmax`` defaults to max |values| (per-map normalisation).
    """
    if cmap not in COLORMAPS:
        raise ValueError(f"unknown colour map {cmap!r}; choose one of {sorted(COLORMAPS)}")
    values = np.asarray(values, dtype=np.float64)
    if vmax is None:
        vmax = float(np.max(np.abs(values))) if values.size else 0.0
    vmax = float(vmax)
    if not math.isfinite(vmax) or vmax < 0:
        raise ValueError(f"vmax must be a finite non-negative number, got {vmax}")
    t = np.clip(values / vmax, -1.0, 1.0) if vmax > 0 else np.zeros_like(values)
    positions, colours = COLORMAPS[cmap]
    rgb = np.empty(values.shape + (3,), dtype=np.float64)
    for c in range(3):
        rgb[..., c] = np.interp(t, positions, colours[:, c])
    return rgb


def _to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.dtype.kind == "f" or img.dtype.kind == "b":
        img = img.astype(np.float64)
        lo, hi = float(img.min()), float(img.max())
        if lo < 0.0 or hi > 1.0:  # not in [0, 1]: stretch to it
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        img = np.round(img * 255.0)
    elif img.dtype != np.uint8:
        img = img.astype(np.float64)
        hi = float(img.max())
        if hi > 255:
            img = img * (255.0 / hi)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img


def _grey(image: np.ndarray) -> np.ndarray:
    rgb = _to_uint8_rgb(image).astype(np.float64) / 255.0
    luminance = to_grey(rgb)
    return np.repeat(luminance[..., None], 3, axis=2)


def render(heatmap, cmap: str = "bwr", vmax: float | None = None, overlay: bool = False,
           alpha: float = 0.6, image=None) -> np.ndarray:
    """Render a heatmap (a :class:`Heatmap` or an (H, W) array) as a uint8 RGB image.

    Parameters
    ----------
    heatmap : Heatmap or array-like of shape (H, W)
    cmap : {"bwr", "coldhot", "seismic"}
        Symmetric colour map; zero relevance is always the centre colour.
    vmax : float, optional
        Relevance shown at full colour. Default: this map's max |R|. Use :func:`shared_vmax` to put
        several maps on one scale.
    overlay : bool
        Blend the colours over a grey version of the image (the Heatmap's ``image`` or ``image``).
    alpha : float in [0, 1]
        Weight of the colours in the overlay.

    Returns
    -------
    ndarray of shape (H, W, 3), uint8
    """
    rel = _relevance_of(heatmap)
    rgb = colorize(rel, cmap=cmap, vmax=vmax)
    if overlay:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if image is None and isinstance(heatmap, Heatmap):
            image = heatmap.image
        if image is None:
            raise ValueError("overlay=True needs an image: the Heatmap has none and none was given")
        image = _as_image(image, rel.shape)
        rgb = alpha * rgb + (1.0 - alpha) * _grey(image)
    return np.round(rgb * 255.0).astype(np.uint8)


def save_png(rgb: np.ndarray, path) -> str:
    """Write an (H, W, 3) uint8 array as a PNG file."""
    from PIL import Image

    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, format="PNG")
    return path


def enlarge(rgb: np.ndarray, min_side: int | None = PNG_MIN_SIDE) -> np.ndarray:
    """Repeat every pixel ``k x k`` times, with the smallest whole ``k`` that makes the longer side at
    least ``min_side`` (``k = 1``, a copy-free return, when it already is or ``min_side`` is None).

    Nearest neighbour by a whole factor keeps pixels square and invents no colour.
    """
    rgb = np.asarray(rgb)
    if min_side is None:
        return rgb
    if isinstance(min_side, bool) or not isinstance(min_side, (int, np.integer)) or min_side < 1:
        raise ValueError(f"min_side must be a positive whole number of pixels or None, got {min_side!r}")
    factor = math.ceil(int(min_side) / max(rgb.shape[0], rgb.shape[1]))
    if factor <= 1:
        return rgb
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def __getattr__(name: str):
    # montage() moved to bowlrp.montages (which imports this module); ``from bowlrp.heatmap import
    # montage`` keeps working, resolved on first use so that neither module needs the other first.
    if name == "montage":
        from bowlrp.montages import montage

        return montage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
