import numpy as np
import pytest

from bowlrp.app.scenes import make_scenes


def test_seeded_and_shaped():
    a = make_scenes(12, size=48, random_state=3)
    b = make_scenes(12, size=48, random_state=3)
    c = make_scenes(12, size=48, random_state=4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks["polygon"], b.masks["polygon"])
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (12, 48, 48) and a.images.dtype == np.float64
    assert 0.0 <= a.images.min() and a.images.max() <= 1.0
    assert a.labels.sum() == 6 and len(a) == 12


def test_labels_match_masks():
    s = make_scenes(40, size=64, random_state=0)
    pos, neg = s.labels == 1, s.labels == 0
    assert s.masks["polygon"][pos].any(axis=(1, 2)).all()
    assert not s.masks["polygon"][neg].any()
    assert s.masks["circle"][neg].any(axis=(1, 2)).all()
    assert not (s.masks["polygon"] & s.masks["circle"]).any()
    # with distractors, some positive images also show circles; without, none do
    assert s.masks["circle"][pos].any(axis=(1, 2)).any()
    clean = make_scenes(20, size=64, distractors=False, random_state=0)
    assert not clean.masks["circle"][clean.labels == 1].any()
    for objs, label in zip(s.objects, s.labels):
        kinds = {o["kind"] for o in objs}
        assert ("polygon" in kinds) == bool(label)


def test_objects_are_drawn_where_the_masks_say():
    s = make_scenes(10, size=64, background="flat", random_state=1)
    for i, objs in enumerate(s.objects):
        mask = s.masks["polygon"][i] | s.masks["circle"][i]
        assert np.abs(s.images[i][~mask] - 0.5).max() < 0.5  # flat gray where no object lies
        for o in objs:
            cy, cx = (int(v) for v in o["center"])
            assert mask[cy, cx]
            assert abs(s.images[i][cy, cx] - o["value"]) < 0.2


def test_polygons_and_circles_have_equal_area_laws():
    # size must not give the class away: mean object area per kind agrees within 10 %
    s = make_scenes(60, size=96, background="flat", random_state=2)
    areas = {"polygon": [], "circle": []}
    from scipy.ndimage import label

    for kind in areas:
        for m in s.masks[kind]:
            lab, n = label(m)
            areas[kind] += np.bincount(lab.ravel())[1:].tolist()
    a_poly, a_circ = np.mean(areas["polygon"]), np.mean(areas["circle"])
    assert abs(a_poly - a_circ) / a_circ < 0.1


def test_any_size_color_and_backgrounds():
    s = make_scenes(3, size=(40, 100), color=True, background="skimage", random_state=0)
    assert s.images.shape == (3, 40, 100, 3)
    assert s.masks["polygon"].shape == (3, 40, 100)
    big = make_scenes(1, size=300, n_objects=5, positive_fraction=1.0, random_state=0)
    assert big.labels.tolist() == [1] and len(big.objects[0]) == 5
    sub = s.subset([0, 2])
    assert len(sub) == 2 and sub.images.shape[0] == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 8}, "too small"),
        ({"background": "plaid"}, "background"),
        ({"radius": 0.4}, "radius"),
        ({"n_objects": (3, 1)}, "low 3"),
        ({"n_vertices": 2}, ">= 3"),
        ({"positive_fraction": 1.5}, "positive_fraction"),
        ({"n_images": 0}, "n_images"),
    ],
)
def test_bad_parameters(kwargs, match):
    args = {"n_images": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_scenes(**args)


def test_photo_scenes_paste_real_patches_where_the_masks_say():
    from bowlrp.app.photos import photo_scenes

    a = photo_scenes(10, size=80, patch=30, random_state=1)
    np.testing.assert_array_equal(a.images, photo_scenes(10, size=80, patch=30, random_state=1).images)
    assert not np.array_equal(a.images, photo_scenes(10, size=80, patch=30, random_state=2).images)
    assert a.images.shape == (10, 80, 80) and 0.0 <= a.images.min() and a.images.max() <= 1.0
    assert a.labels.tolist() == [0, 1] * 5 and a.class_names == ("coffee cup", "cat's eye")
    eye, cup = a.masks["cat's eye"], a.masks["coffee cup"]
    np.testing.assert_array_equal(a.positive_masks, eye)
    assert (eye.sum(axis=(1, 2)) == 900 * a.labels).all()
    assert (cup.sum(axis=(1, 2)) == 900 * (1 - a.labels)).all()
    # every eye scene holds the same eye patch, every cup scene the same cup patch, at the masked place
    eyes = [img[m].reshape(30, 30) for img, m in zip(a.images, eye) if m.any()]
    cups = [img[m].reshape(30, 30) for img, m in zip(a.images, cup) if m.any()]
    assert all(np.array_equal(e, eyes[0]) for e in eyes) and all(np.array_equal(c, cups[0]) for c in cups)
    assert not np.allclose(eyes[0], cups[0])
    sub = a.subset([1, 3])
    assert sub.positive == "cat's eye" and sub.positive_masks.shape == (2, 80, 80)
    with pytest.raises(ValueError, match="patch < size"):
        photo_scenes(2, size=30, patch=30)
