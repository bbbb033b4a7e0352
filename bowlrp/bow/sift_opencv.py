"""The OpenCV backend of dense SIFT: ``cv2.SIFT.compute`` on the frames of the numba backend.

Keypoint angle 0 and size ``A / 6``, because OpenCV's descriptor covers 4 bins of 3 * size / 2 =
6 * size pixels; descriptors are renormalised to unit L2 norm and flat patches are zeroed by the numba
backend's energy rule, so both backends zero the same frames. OpenCV takes uint8 planes: each plane
is scaled from its value range for RGB in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np

from bowlrp.bow.sift_numba import numba_descriptors

__all__ = ["opencv_descriptors"]

# Value range of each opponent plane for RGB in [0, 1]: how OpenCV's uint8 input is scaled.
_OPPONENT_RANGE = np.array(
    [[-1 / math.sqrt(2), 1 / math.sqrt(2)], [-2 / math.sqrt(6), 2 / math.sqrt(6)], [0.0, math.sqrt(3)]]
)


def _to_uint8(plane, low, high):
    scaled = (plane - low) * (255.0 / (high - low))
    return np.ascontiguousarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def opencv_descriptors(planes, bin_size, step, sigma, threshold, color):
    """OpenCV's SIFT on the same frames as :func:`numba_descriptors` (angle 0, size A / 6).

    The energy (flat-patch rule) is the numba backend's, so both backends zero the same frames.
    """
    import cv2

    _, energy, ys, xs = numba_descriptors(planes, bin_size, step, sigma, threshold)
    support = 4 * bin_size
    half = (support - 1) / 2.0
    centers_y = np.repeat(ys + half, xs.size)
    centers_x = np.tile(xs + half, ys.size)
    # OpenCV's descriptor spans 4 bins of SIFT_DESCR_SCL_FCTR (3) * size / 2 pixels: 6 * size = A.
    size = support / 6.0
    keypoints = [cv2.KeyPoint(float(x), float(y), size, 0.0) for y, x in zip(centers_y, centers_x)]
    sift = cv2.SIFT_create()
    out = np.zeros((len(keypoints), 128 * len(planes)), np.float64)
    for p, plane in enumerate(planes):
        if color == "opponent":
            low, high = _OPPONENT_RANGE[p]
        else:
            low, high = 0.0, 1.0
        if not keypoints:
            break
        returned, desc = sift.compute(_to_uint8(plane, low, high), keypoints)
        if desc is None or len(returned) != len(keypoints):
            raise RuntimeError(
                f"OpenCV returned {0 if desc is None else len(returned)} descriptors for "
                f"{len(keypoints)} keypoints"
            )
        desc = desc.astype(np.float64)
        norms = np.linalg.norm(desc, axis=1)
        flat = (energy[:, p] < threshold) | (norms <= 0)
        desc[~flat] /= norms[~flat, None]
        desc[flat] = 0.0
        out[:, 128 * p : 128 * (p + 1)] = desc
    return out, energy, ys, xs
