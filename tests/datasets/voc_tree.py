"""Writes a tiny PASCAL-VOC-shaped folder for tests (3 JPEG images, XML annotations, image lists)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# id -> (height, width, [(class name, xmin, ymin, xmax, ymax, difficult)])  (VOC: 1-based, inclusive)
TINY_VOC = {
    "000001": (60, 80, [("cat", 11, 6, 40, 35, 0), ("dog", 50, 20, 75, 55, 0)]),
    "000002": (64, 64, [("cat", 1, 1, 64, 30, 0)]),
    "000003": (50, 70, [("person", 5, 5, 30, 45, 0), ("dog", 40, 10, 60, 40, 1)]),
}


def write_tiny_voc(root, seed=0, nested=False, items=None):
    """Create the VOC tree under ``root`` (``root/VOCdevkit/VOC2007`` when nested) and return its folder.

    Each object is painted as a bright rectangle on a dark noisy image, so a detector of bright
    rectangles would find the boxes.
    """
    items = TINY_VOC if items is None else items
    rng = np.random.default_rng(seed)
    base = Path(root) / "VOCdevkit" / "VOC2007" if nested else Path(root)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for ident, (h, w, objs) in items.items():
        img = (rng.uniform(0, 60, size=(h, w, 3))).astype(np.uint8)
        xml = [
            f"<annotation><folder>VOC2007</folder><filename>{ident}.jpg</filename>",
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>",
        ]
        for name, xmin, ymin, xmax, ymax, diff in objs:
            img[ymin - 1 : ymax, xmin - 1 : xmax] = 220
            xml.append(
                f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                f"<difficult>{diff}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
                f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
            )
        xml.append("</annotation>")
        (base / "Annotations" / f"{ident}.xml").write_text("\n".join(xml))
        Image.fromarray(img).save(base / "JPEGImages" / f"{ident}.jpg", quality=95)
    ids = sorted(items)
    (base / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    (base / "ImageSets" / "Main" / "train.txt").write_text(ids[0] + "\n")
    return base
