"""The images of a batch run, read chunk by chunk when they are due, or by any range of them.

Iterating an :class:`ImageChunks` gives the chunks of a serial run, ``(keys, images,
read_failures)`` of ``chunk_size`` inputs each; :meth:`ImageChunks.read` reads any range of the
inputs the same way. Local worker processes forked from the run (:mod:`bowlrp.app.forked_workers`)
read their own ranges from it, so that no image passes through the run's process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from bowlrp.imageio import ImageItem, ImageReadError, read_image

__all__ = ["ImageChunks"]


class ImageChunks:
    """Reads the inputs ``items`` of a run; each file once, its bytes hashed and decoded.

    Parameters
    ----------
    items : list of ImageItem
    chunk_size : int
        Inputs per chunk when iterated.
    read_mode : {"auto", "gray", "rgb"}
    max_pixels : int or None
        Larger images are refused (with the reason) from their header, before decoding.

    Attributes
    ----------
    digests : dict
        SHA-256 of each input file read so far, by key (what the manifest records of the input).
    """

    def __init__(self, items: list[ImageItem], chunk_size: int, read_mode: str, max_pixels):
        self.items, self.chunk_size = list(items), int(chunk_size)
        self.read_mode, self.max_pixels = read_mode, max_pixels
        self.digests: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple]:
        for start in range(0, len(self.items), self.chunk_size):
            yield self.read(start, start + self.chunk_size)

    def read(self, start: int, stop: int) -> tuple[list, list, list]:
        """``(keys, images, read_failures)`` of the inputs ``start:stop``: the keys and decoded
        images of the files that could be read, ``(key, reason)`` of the others."""
        keys, images, failures = [], [], []
        for item in self.items[start:stop]:
            try:
                with open(item.path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                failures.append((item.key, f"cannot read the file: {exc.strerror or exc}"))
                continue
            self.digests[item.key] = hashlib.sha256(data).hexdigest()
            try:
                images.append(read_image(item.path, mode=self.read_mode, max_pixels=self.max_pixels,
                                         data=data))
                keys.append(item.key)
            except ImageReadError as exc:
                failures.append((item.key, exc.reason))
        return keys, images, failures

    def digests_of(self, start: int, stop: int) -> dict[str, str]:
        """The digests of the inputs ``start:stop`` that were read."""
        return {item.key: self.digests[item.key] for item in self.items[start:stop]
                if item.key in self.digests}
