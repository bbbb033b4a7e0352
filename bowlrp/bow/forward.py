"""The forward pass of a batch on threads: each thread takes whole images from pixels to BoW vectors.

What :meth:`~bowlrp.bow.classifier.BoWClassifier.extract_and_encode` runs (and through it ``transform``,
``decision_function``, ``predict`` and ``explain``). Extracting and then encoding, each stage spread over
the threads on its own, makes a batch wait at two barriers and leaves the per-image Python of each stage
(checking an image, building its ``LocalFeatures`` and ``Encoding``) to compete for the GIL with the
other thread at the same moment. Here the batch is cut into contiguous parts, a few per thread
(:func:`bowlrp.jit.parallel_map`); a thread checks, extracts and encodes each of its parts with serial
kernels and one BLAS thread, so one barrier is left and one thread's Python runs while the other's
kernels do. Every image's features and encoding depend on that image only, so the numbers are those of
the two stages, bit for bit, whatever the cut.
"""

from __future__ import annotations

import numpy as np

from bowlrp.bow.features import _check_ranges, _Progress
from bowlrp.jit import PARALLEL_MIN_WORK, contiguous_parts, limited_threads, n_parts, parallel_map

__all__ = ["extract_and_encode"]

#: fewest images in a part one thread takes from pixels to BoW vectors
MIN_PART = 4
#: parts per thread: a thread descheduled on a busy machine leaves parts to the other (one part per
#: thread would make the batch wait for it), and a part's set-up (checks, buffers) stays small
PARTS_PER_THREAD = 2
#: the encoding's distance products cost about as much as the extraction (64 x 64 crops, 256 words:
#: issue 15), so the forward pass counts twice the extraction's work
_FORWARD_WORK_FACTOR = 2.0


def extract_and_encode(clf, images):
    """Features and encodings of ``images`` with a fitted classifier's extractor and vocabularies.

    Parameters
    ----------
    clf : BoWClassifier
        Fitted; its ``extract_features`` / ``encode_features`` are not overridden (the caller checks).
    images : list of array-like or ndarray (N, H, W[, 3])

    Returns
    -------
    features : list of LocalFeatures
    encodings : list of Encoding
        One of each per image, the numbers of ``clf.extract_features`` then ``clf.encode_features``.
        A bad image raises the error those name (the first bad image's); an image clearly outside
        [0, 1] gets their one warning.
    """
    extractor = clf.extractor_
    sizes = extractor._validate_params()
    # numba's thread count as extract_features -> extract_many sets it: those threads take the parts
    with limited_threads(extractor._thread_count(clf.n_jobs), user_api="openmp"):
        batch = _plain_batch(images)
        count = 1
        if batch is not None:
            work = _FORWARD_WORK_FACTOR * extractor._work(batch)
            count = n_parts(len(batch), work, min_rows=MIN_PART)
        if count < 2:  # the two stages one after the other, each on numba's threads when it pays
            checked = extractor._checked_images(images, sizes)
            features = extractor._extract_checked(checked, sizes, _Progress(len(checked), extractor.verbose))
            return features, clf._encode(features)
        count = min(PARTS_PER_THREAD * count, len(batch) // MIN_PART)
        progress = _Progress(len(batch), extractor.verbose)

        def forward(ab):
            checked, ranges = extractor._checked_part(batch[ab[0]:ab[1]], ab[0], sizes)
            features = extractor._extract_checked(checked, sizes, progress)
            return features, clf._encode(features), ranges

        failed = None
        try:
            parts = parallel_map(forward, contiguous_parts(len(batch), count), PARALLEL_MIN_WORK)
        except (TypeError, ValueError) as error:
            failed = error
        if failed is not None:
            # the parts check their images at once: the error of the first bad image, as one thread
            # names it, comes from checking the batch in order (which raises it; outside the
            # handler, so the user sees one traceback, not the part's and then the same again)
            extractor._checked_images(batch, sizes)
            raise failed
    # values out of range: the error or the one warning of extract_many (naming the user's line)
    _check_ranges([r for part in parts for r in part[2]])
    return [f for part in parts for f in part[0]], [e for part in parts for e in part[1]]


def _plain_batch(images):
    """``images`` as a list when it is a list, tuple or stacked array of arrays of at least two
    dimensions (what the parts can check and cut), else None (one thread names the problem)."""
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim in (3, 4) else None
    if not isinstance(images, (list, tuple)) or not images:
        return None
    if not all(getattr(im, "ndim", 0) >= 2 for im in images):
        return None
    return list(images)
