"""PASCAL VOC from a local folder: images, image-level labels and object boxes from the XML files.

Expected layout (the one the official tar files unpack to; ``root`` may be the ``VOC2007`` folder or
a ``VOCdevkit`` folder holding exactly one ``VOC*`` folder)::

    root/Annotations/<id>.xml
    root/JPEGImages/<id>.jpg
    root/ImageSets/Main/<image_set>.txt     (one id per line; optional when image_set is None)

Boxes are returned as int64 ``(y0, x0, y1, x1)``, half-open and 0-based, the convention of
``bowlrp.evaluation``: VOC's 1-based inclusive ``xmin..xmax`` becomes ``x0 = xmin - 1, x1 = xmax``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["VOC_CLASSES", "VOCDataset", "parse_voc_annotation", "load_voc", "boxes_to_mask"]

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


@dataclass(frozen=True)
class VOCDataset:
    """Images of a VOC split with their annotations.

    Attributes
    ----------
    ids : list of str
    images : list of ndarray
        (H, W, 3) float64 in [0, 1]; sizes differ.
    labels : ndarray, shape (n, n_classes)
        int64 multi-hot: 1 when at least one (non-difficult unless asked) object of the class is present.
    boxes : list of ndarray, shape (k, 4)
        int64 (y0, x0, y1, x1), half-open, 0-based, clipped to the image.
    box_classes : list of ndarray, shape (k,)
        int64 class index of every box.
    difficult : list of ndarray, shape (k,)
        bool VOC "difficult" flags.
    class_names : tuple of str
    root : str
    """

    ids: list
    images: list = field(repr=False)
    labels: np.ndarray
    boxes: list = field(repr=False)
    box_classes: list = field(repr=False)
    difficult: list = field(repr=False)
    class_names: tuple = VOC_CLASSES
    root: str = ""

    def __len__(self):
        return len(self.ids)

    def class_mask(self, i, cls) -> np.ndarray:
        """(H, W) bool: the union of the boxes of class ``cls`` (name or index) in image ``i``."""
        c = self.class_names.index(cls) if isinstance(cls, str) else int(cls)
        h, w = self.images[i].shape[:2]
        return boxes_to_mask(self.boxes[i][self.box_classes[i] == c], (h, w))


def boxes_to_mask(boxes, shape) -> np.ndarray:
    """Union of half-open (y0, x0, y1, x1) boxes as an (H, W) bool mask (boxes are clipped).

    Examples
    --------
    >>> from datasets.voc import boxes_to_mask
    >>> int(boxes_to_mask([[0, 0, 2, 3]], (4, 4)).sum())
    6
    """
    h, w = shape
    mask = np.zeros((h, w), bool)
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    for y0, x0, y1, x1 in boxes:
        mask[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)] = True
    return mask


def parse_voc_annotation(path, class_names=VOC_CLASSES) -> dict:
    """Read one VOC XML file.

    Returns
    -------
    dict
        ``filename``, ``size`` (H, W), ``boxes`` (k, 4) int64 half-open 0-based (y0, x0, y1, x1),
        ``classes`` (k,) int64, ``difficult`` (k,) bool. Objects of classes outside ``class_names``
        are skipped.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file; malformed XML or a box without coordinates.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VOC annotation not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path}: malformed XML ({exc})") from None
    size = root.find("size")
    hw = None
    if size is not None and size.findtext("height") and size.findtext("width"):
        hw = (int(float(size.findtext("height"))), int(float(size.findtext("width"))))
    boxes, classes, difficult = [], [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in class_names:
            continue
        bb = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"{path}: object {name!r} has no complete bndbox") from None
        boxes.append((int(round(ymin)) - 1, int(round(xmin)) - 1, int(round(ymax)), int(round(xmax))))
        classes.append(class_names.index(name))
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    return {
        "filename": (root.findtext("filename") or path.stem + ".jpg").strip(),
        "size": hw,
        "boxes": np.asarray(boxes, np.int64).reshape(-1, 4),
        "classes": np.asarray(classes, np.int64),
        "difficult": np.asarray(difficult, bool),
    }


def _resolve_root(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"VOC folder not found: {root}")
    if (root / "Annotations").is_dir():
        return root
    subs = sorted(p for p in root.glob("VOC*") if (p / "Annotations").is_dir())
    if len(subs) == 1:
        return subs[0]
    if len(subs) > 1:
        raise ValueError(f"{root} holds several VOC folders {[p.name for p in subs]}: pass one of them")
    raise FileNotFoundError(f"{root} has no Annotations/ folder (nor a VOC*/Annotations/ inside)")


def load_voc(
    root, image_set="trainval", classes=VOC_CLASSES, max_images=None, include_difficult=False, max_side=None
) -> VOCDataset:
    """Load a PASCAL VOC split from a local folder.

    Parameters
    ----------
    root : str or Path
        ``VOC2007``-style folder (or a ``VOCdevkit`` holding one).
    image_set : str or None
        Name of the list in ``ImageSets/Main`` ("train", "val", "trainval", "test"); None takes every
        annotation file, sorted by id.
    classes : sequence of str
        Classes to keep (labels and boxes of other classes are dropped).
    max_images : int or None
        Keep only the first ``max_images`` ids of the list.
    include_difficult : bool
        Whether objects flagged difficult make an image positive (their boxes are always returned).
    max_side : int or None
        Downscale images whose longer side exceeds this (boxes are scaled with them).

    Returns
    -------
    VOCDataset

    Raises
    ------
    FileNotFoundError
        Missing folder, image list, annotation or image, with the path in the message.
    ValueError
        Unknown class names, malformed annotations, images whose size disagrees with their XML.
    """
    from PIL import Image

    root = _resolve_root(Path(root))
    classes = tuple(classes)
    unknown = [c for c in classes if c not in VOC_CLASSES]
    if unknown:
        raise ValueError(f"unknown VOC class(es) {unknown}; valid: {VOC_CLASSES}")
    if image_set is None:
        ids = sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    else:
        lst = root / "ImageSets" / "Main" / f"{image_set}.txt"
        if not lst.is_file():
            raise FileNotFoundError(
                f"VOC image list not found: {lst} (pass image_set=None to use all annotations)"
            )
        ids = [line.split()[0] for line in lst.read_text().splitlines() if line.strip()]
    if max_images is not None:
        ids = ids[:max_images]
    if not ids:
        raise ValueError(f"no images listed for image_set={image_set!r} in {root}")

    images, boxes, box_classes, difficult = [], [], [], []
    labels = np.zeros((len(ids), len(classes)), np.int64)
    for i, ident in enumerate(ids):
        ann = parse_voc_annotation(root / "Annotations" / f"{ident}.xml", classes)
        img_path = root / "JPEGImages" / ann["filename"]
        if not img_path.is_file():
            img_path = root / "JPEGImages" / f"{ident}.jpg"
        if not img_path.is_file():
            raise FileNotFoundError(f"VOC image not found: {img_path}")
        with Image.open(img_path) as im:
            im = im.convert("RGB")
            if ann["size"] is not None and (im.height, im.width) != ann["size"]:
                raise ValueError(
                    f"{img_path}: image is {im.height}x{im.width} but its XML says {ann['size']}"
                )
            scale = 1.0
            if max_side is not None and max(im.size) > max_side:
                scale = max_side / max(im.size)
                im = im.resize(
                    (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR
                )
            img = np.asarray(im, np.float64) / 255.0
        h, w = img.shape[:2]
        b = ann["boxes"]
        if scale != 1.0:
            b = np.stack(
                [
                    np.floor(b[:, 0] * scale),
                    np.floor(b[:, 1] * scale),
                    np.ceil(b[:, 2] * scale),
                    np.ceil(b[:, 3] * scale),
                ],
                axis=1,
            ).astype(np.int64)
        b = np.clip(b, 0, [h, w, h, w]).reshape(-1, 4)
        images.append(img)
        boxes.append(b)
        box_classes.append(ann["classes"])
        difficult.append(ann["difficult"])
        counted = ann["classes"] if include_difficult else ann["classes"][~ann["difficult"]]
        labels[i, np.unique(counted)] = 1
    return VOCDataset(ids, images, labels, boxes, box_classes, difficult, classes, str(root))
