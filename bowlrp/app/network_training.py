"""Training images for a network fitted from the command line (``bowlrp fit --model cnn``).

A network takes one input size, so the images of a class folder are brought to one shape: the
size most of them have (or ``image_size``), grey unless some image has colour, values in [0, 1].
This is :func:`bowlrp.app.adapters.prepare_images`, the preparation the network adapter applies
when it explains, so a network fitted here sees at training time what it sees when explained; its
``input_shape_`` and ``classes_`` are saved with it (``--input-shape`` is never needed).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

__all__ = ["network_input_shape", "network_training_array"]


def network_input_shape(images, image_size=None) -> tuple[int, int, int]:
    """(C, H, W) for a network trained on ``images``: C = 3 if any image has colour, else 1;
    (H, W) = ``image_size`` or the most common image size (ties: the largest)."""
    shapes = [np.shape(image) for image in images]
    if not shapes:
        raise ValueError("no training images")
    channels = 3 if any(len(s) == 3 and s[2] >= 3 for s in shapes) else 1
    if image_size is None:
        counts = Counter(tuple(s[:2]) for s in shapes)
        image_size = max(counts, key=lambda hw: (counts[hw], hw[0] * hw[1], hw))
    height, width = (int(v) for v in image_size)
    if min(height, width) < 1:
        raise ValueError(f"image size must be positive, got {image_size}")
    return channels, height, width


def network_training_array(images, image_size=None):
    """``(X, input_shape)``: the images prepared for a network, stacked as (n, C, H, W) float64."""
    from bowlrp.app.adapters import prepare_images, to_nchw

    input_shape = network_input_shape(images, image_size)
    return to_nchw(prepare_images(images, input_shape)), input_shape
