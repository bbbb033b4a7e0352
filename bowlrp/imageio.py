"""Reading images from files, folders and CSV lists, reporting the files that cannot be used.

Batches of real files always contain a few bad ones (truncated downloads, a README in the image
folder, a PDF with a ``.jpg`` name). Everything here reads with Pillow, raises
:class:`ImageReadError` (a ``ValueError`` naming the file and the reason) for a file that is not a
usable image, and the batch helpers collect those as ``(item, reason)`` pairs instead of stopping.

Three ways to name images:

- a folder of images (searched recursively) or single image files,
- a folder with one sub-folder per class (:func:`labelled_folder`), for training,
- a CSV file with a ``path`` column and an optional ``label`` column (:func:`read_label_csv`);
  relative paths are resolved against the CSV file's folder.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "DEFAULT_MAX_PIXELS",
    "ImageItem",
    "ImageReadError",
    "read_image",
    "list_images",
    "labelled_folder",
    "read_label_csv",
    "read_images",
]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)


# Largest image read by default, checked from the file's header before anything is decoded: a 79 KB
# PNG can declare 28 M pixels. Explaining an image with the default BoW model peaks at about 170 bytes
# per pixel (measured: ru_maxrss growth for 1000^2 and 2000^2 images), so 25 M pixels (5000 x 5000)
# cost about 4 GiB: four workers at once fit in a 24 GiB machine next to the driver.
DEFAULT_MAX_PIXELS = 25_000_000


class ImageReadError(ValueError):
    """A file that cannot be used as an image; ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class ImageItem:
    """One input image: where it is, a unique file-name-safe ``key`` for outputs, an optional label."""

    path: str
    key: str
    label: str | None = None


def read_image(path, mode: str = "auto", max_pixels: int | None = DEFAULT_MAX_PIXELS,
               data: bytes | None = None) -> np.ndarray:
    """Read one image file into a numpy array.

    Parameters
    ----------
    path : str or path
    mode : {"auto", "gray", "rgb"}
        ``"auto"`` keeps gray images gray (H, W) and gives colour images as (H, W, 3); alpha is
        composited over white. ``"gray"`` / ``"rgb"`` convert.
    max_pixels : int or None, default=DEFAULT_MAX_PIXELS
        Refuse images with more pixels (width x height, read from the header before decoding;
        None: no limit of ours, Pillow's own decompression-bomb limit still applies).
    data : bytes, optional
        The file's content, already read (``path`` then only names it in messages).

    Returns
    -------
    ndarray, uint8 of shape (H, W) or (H, W, 3); float64 in [0, 1] for 16-bit images; float images
    as stored (checked to be finite, not rescaled).

    Raises
    ------
    ImageReadError
        The file is missing, unreadable, truncated or not an image.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from PIL import Image
    >>> from bowlrp.imageio import read_image
    >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> Image.fromarray(np.zeros((4, 5), np.uint8)).save(path)
    >>> read_image(path).shape
    (4, 5)
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in ("auto", "gray", "rgb"):
        raise ValueError(f"mode must be 'auto', 'gray' or 'rgb', got {mode!r}")
    path = os.fspath(path)
    if data is None:
        if not os.path.exists(path):
            raise ImageReadError(path, "no such file")
        if os.path.isdir(path):
            raise ImageReadError(path, "is a folder, not an image file")
    try:
        with warnings.catch_warnings():
            # Pillow warns (instead of failing) on some damaged files; treat that as damage
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as img:
                _check_size(path, img.size, max_pixels)  # from the header: nothing decoded yet
                img.load()  # decode now: truncated files fail here, not later
                array = _to_array(img, mode)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (Pillow cannot identify the format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"corrupt or unreadable image ({exc})") from None
    if array.size == 0 or min(array.shape[:2]) == 0:
        raise ImageReadError(path, f"empty image of shape {array.shape}")
    return array


def _check_size(path, size, max_pixels) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            path, f"image too large: {width}x{height} = {width * height:,} pixels, over the limit of "
                  f"{max_pixels:,} (--max-pixels / max_pixels; declared in the file's header, not decoded)")


def _to_array(img, mode: str) -> np.ndarray:
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # high bit depth: keep the precision as floats in [0, 1]
        arr = np.asarray(img, dtype=np.float64)
        if img.mode != "F":  # integer: 16-bit range unless the values fit in 8 bits
            hi = 65535.0 if img.mode.startswith("I;16") or float(np.max(arr)) > 255 else 255.0
            arr = np.clip(arr / hi, 0.0, 1.0)
        elif not np.all(np.isfinite(arr)):
            raise ValueError("float image contains NaN or inf")
        if mode == "rgb":
            arr = np.repeat(arr[..., None], 3, axis=2)
        return arr
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    gray_modes = ("1", "L", "LA")
    if mode == "gray" or (mode == "auto" and img.mode in gray_modes):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _key_for(rel: str) -> str:
    """A file-name-safe key from a relative path: folders joined by '__', suffix dropped."""
    stem = os.path.splitext(rel)[0]
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace(os.sep, "__").replace("/", "__"))
    return key.strip("._") or "image"


def _unique_keys(rel_paths: list[str]) -> list[str]:
    """One key per path; names that differ only by punctuation (``a b``, ``a_b``, ``a_b-1``) or by
    case (the keys name files, and some file systems ignore case) get ``-1``, ``-2``... until free."""
    keys, used = [], set()
    for rel in rel_paths:
        base = key = _key_for(rel)
        number = 0
        while key.casefold() in used:
            number += 1
            key = f"{base}-{number}"
        used.add(key.casefold())
        keys.append(key)
    return keys


def _relative_names(paths: list[str]) -> list[str]:
    """Shortest distinguishing names: paths relative to their common folder."""
    if not paths:
        return []
    absolute = [os.path.abspath(p) for p in paths]
    if len(absolute) == 1:
        return [os.path.basename(absolute[0])]
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    return [os.path.relpath(p, root) for p in absolute]


def list_images(sources, recursive: bool = True) -> list[ImageItem]:
    """Expand files, folders and CSV lists into image items with unique output keys.

    Parameters
    ----------
    sources : str, path or sequence of them
        Image files (taken as given, even with an unusual suffix: a bad file is reported when
        read), folders (files with an image suffix, recursively, sorted) and ``.csv`` files
        (see :func:`read_label_csv`).
    recursive : bool
        Search folders recursively.

    Returns
    -------
    list of ImageItem, in a stable order (the order of ``sources``, sorted within folders).

    Raises
    ------
    ValueError
        A source does not exist, or nothing was found.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    paths: list[str] = []
    labels: list[str | None] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in source.glob(pattern) if p.is_file() and _is_image_name(p))
            paths += [str(p) for p in found]
            labels += [None] * len(found)
        elif source.suffix.lower() == ".csv" and source.is_file():
            csv_paths, csv_labels = read_label_csv(source, require_labels=False)
            paths += csv_paths
            labels += csv_labels
        elif source.exists():
            paths.append(str(source))
            labels.append(None)
        else:
            raise ValueError(f"input {str(source)!r} does not exist")
    if not paths:
        raise ValueError(f"no image files found in {[str(s) for s in sources]}")
    keys = _unique_keys(_relative_names(paths))
    return [ImageItem(path=p, key=k, label=lab) for p, k, lab in zip(paths, keys, labels)]


def labelled_folder(root) -> tuple[list[str], list[str]]:
    """Image paths and labels from a folder with one sub-folder per class.

    ``root/cat/1.png, root/dog/2.jpg`` gives labels ``["cat", "dog"]``. Files directly in ``root``
    and hidden folders are ignored. Sub-folders are searched recursively.

    Raises
    ------
    ValueError
        ``root`` is not a folder, has fewer than two class folders with images.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a folder")
    paths, labels = [], []
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    for folder in classes:
        found = sorted(p for p in folder.rglob("*") if p.is_file() and _is_image_name(p))
        paths += [str(p) for p in found]
        labels += [folder.name] * len(found)
    used = sorted(set(labels))
    if len(used) < 2:
        raise ValueError(
            f"{str(root)!r} needs one sub-folder of images per class (at least two classes); "
            f"found image folders: {used}"
        )
    return paths, labels


def read_label_csv(path, require_labels: bool = True) -> tuple[list[str], list[str | None]]:
    """Image paths and labels from a CSV file.

    The file has a header with a ``path`` column (also accepted: ``image``, ``file``, ``filename``)
    and a ``label`` column (also: ``class``, ``y``), or no header and the columns ``path,label``.
    Relative paths are taken relative to the CSV file's folder.

    Raises
    ------
    ValueError
        The file is empty, has no path column, or (with ``require_labels``) a row has no label.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            # (line number, cells) of the non-blank rows: messages name the row as the file numbers it
            rows = [(reader.line_num, row) for reader in [csv.reader(fh)] for row in reader
                    if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read CSV {str(path)!r}: {exc}") from None
    if not rows:
        raise ValueError(f"CSV {str(path)!r} is empty")
    header = [cell.strip().lower() for cell in rows[0][1]]
    path_names, label_names = ("path", "image", "file", "filename"), ("label", "class", "y", "target")
    if any(name in header for name in path_names):
        p_col = next(header.index(n) for n in path_names if n in header)
        l_col = next((header.index(n) for n in label_names if n in header), None)
        rows = rows[1:]
    else:
        p_col, l_col = 0, (1 if len(rows[0][1]) > 1 else None)
    if l_col is None and require_labels:
        raise ValueError(f"CSV {str(path)!r} has no label column (expected 'path,label')")
    paths, labels = [], []
    for lineno, row in rows:
        if p_col >= len(row) or not row[p_col].strip():
            raise ValueError(f"CSV {str(path)!r}, row {lineno}: no path")
        label = row[l_col].strip() if l_col is not None and l_col < len(row) else None
        if require_labels and not label:
            raise ValueError(f"CSV {str(path)!r}, row {lineno}: no label")
        image_path = Path(row[p_col].strip())
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        paths.append(str(image_path))
        labels.append(label or None)
    if not paths:
        raise ValueError(f"CSV {str(path)!r} lists no images")
    return paths, labels


def read_images(items, mode: str = "auto", max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Read several images, skipping the bad ones.

    Parameters
    ----------
    items : sequence of ImageItem or paths
    mode, max_pixels : see :func:`read_image`

    Returns
    -------
    images : list of ndarray
    ok : list
        The items that were read, aligned with ``images``.
    skipped : list of (item, reason)
    """
    images, ok, skipped = [], [], []
    for item in items:
        path = item.path if isinstance(item, ImageItem) else item
        try:
            images.append(read_image(path, mode=mode, max_pixels=max_pixels))
            ok.append(item)
        except ImageReadError as exc:
            skipped.append((item, exc.reason))
    return images, ok, skipped
