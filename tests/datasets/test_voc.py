import numpy as np
import pytest

from datasets.voc import VOC_CLASSES, boxes_to_mask, load_voc, parse_voc_annotation
from tests.datasets.voc_tree import TINY_VOC, write_tiny_voc


@pytest.fixture()
def voc(tmp_path):
    return write_tiny_voc(tmp_path)


def test_loads_images_labels_and_boxes(voc):
    ds = load_voc(voc)
    assert ds.ids == ["000001", "000002", "000003"]
    assert [im.shape for im in ds.images] == [(60, 80, 3), (64, 64, 3), (50, 70, 3)]
    assert all(im.dtype == np.float64 and 0 <= im.min() and im.max() <= 1 for im in ds.images)
    cat, dog, person = (VOC_CLASSES.index(c) for c in ("cat", "dog", "person"))
    assert ds.labels.shape == (3, 20)
    assert ds.labels[0, [cat, dog]].tolist() == [1, 1] and ds.labels[0].sum() == 2
    assert ds.labels[1].sum() == 1 and ds.labels[1, cat] == 1
    # the dog in image 3 is "difficult": not a positive label by default, its box is still returned
    assert ds.labels[2, person] == 1 and ds.labels[2, dog] == 0
    assert ds.difficult[2].tolist() == [False, True]
    # VOC xmin=11..xmax=40 (1-based, inclusive) -> x0=10, x1=40 (0-based, half-open)
    assert ds.boxes[0].tolist() == [[5, 10, 35, 40], [19, 49, 55, 75]]
    assert ds.box_classes[0].tolist() == [cat, dog]


def test_boxes_cover_the_painted_objects(voc):
    ds = load_voc(voc)
    for i, ident in enumerate(ds.ids):
        for y0, x0, y1, x1 in ds.boxes[i]:
            patch = ds.images[i][y0:y1, x0:x1]
            assert patch.mean() > 0.8  # painted 220/255 (JPEG blurs the rim a little)
        outside = ~boxes_to_mask(ds.boxes[i], ds.images[i].shape[:2])
        assert ds.images[i][outside].mean() < 0.3
        assert ident in TINY_VOC


def test_include_difficult_and_class_subset(voc):
    ds = load_voc(voc, include_difficult=True, classes=("dog", "person"))
    assert ds.class_names == ("dog", "person")
    assert ds.labels.tolist() == [[1, 0], [0, 0], [1, 1]]
    assert ds.box_classes[1].size == 0 and ds.boxes[1].shape == (0, 4)
    assert ds.class_mask(0, "dog").sum() == (55 - 19) * (75 - 49)


def test_image_sets_nesting_and_limits(tmp_path):
    write_tiny_voc(tmp_path, nested=True)
    assert load_voc(tmp_path / "VOCdevkit", image_set="train").ids == ["000001"]
    assert len(load_voc(tmp_path / "VOCdevkit", image_set=None, max_images=2)) == 2


def test_max_side_scales_images_and_boxes(voc):
    ds = load_voc(voc, max_side=40)
    assert ds.images[0].shape == (30, 40, 3)
    # box (5, 10, 35, 40) at scale 0.5 -> floor/ceil keeps the object inside
    assert ds.boxes[0][0].tolist() == [2, 5, 18, 20]


def test_parse_annotation(voc):
    ann = parse_voc_annotation(voc / "Annotations" / "000003.xml")
    assert ann["size"] == (50, 70)
    assert ann["boxes"].tolist() == [[4, 4, 45, 30], [9, 39, 40, 60]]
    assert ann["difficult"].tolist() == [False, True]


def test_clear_errors(tmp_path, voc):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_voc(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="Annotations"):
        load_voc(tmp_path / "Annotations")
    with pytest.raises(FileNotFoundError, match="test.txt"):
        load_voc(voc, image_set="test")
    with pytest.raises(ValueError, match="unknown VOC class"):
        load_voc(voc, classes=("cat", "unicorn"))
    (voc / "JPEGImages" / "000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000002.jpg"):
        load_voc(voc)
    (voc / "Annotations" / "000001.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="malformed XML"):
        parse_voc_annotation(voc / "Annotations" / "000001.xml")


def test_size_mismatch_is_reported(tmp_path):
    base = write_tiny_voc(tmp_path, items={"000009": (40, 40, [("cat", 2, 2, 20, 20, 0)])})
    xml = (
        (base / "Annotations" / "000009.xml")
        .read_text()
        .replace("<height>40</height>", "<height>41</height>")
    )
    (base / "Annotations" / "000009.xml").write_text(xml)
    with pytest.raises(ValueError, match="XML says"):
        load_voc(base)
