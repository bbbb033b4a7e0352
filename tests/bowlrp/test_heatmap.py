"""The shared Heatmap API: validation, NPZ round trip, colours, normalisation, overlay, montage."""

import numpy as np
import pytest
from PIL import Image
from skimage import data

from bowlrp.colorbar import colorbar, format_value
from bowlrp.heatmap import COLORMAPS, PNG_MIN_SIDE, Heatmap, colorize, enlarge, montage, render, shared_vmax


@pytest.fixture
def astronaut_map():
    img = data.astronaut()[::8, ::8]  # real photo, 64 x 64 x 3 uint8
    grey = img.mean(axis=2)
    rel = (grey - grey.mean()) / 255.0  # a real-valued map with both signs
    return Heatmap(rel, score=float(rel.sum()) + 0.25, target="person", method="test", image=img)


def test_residual_is_score_minus_sum(astronaut_map):
    assert astronaut_map.residual == pytest.approx(0.25, abs=1e-12)
    assert astronaut_map.total + astronaut_map.residual == pytest.approx(astronaut_map.score, abs=1e-12)


def test_explicit_residual_is_kept():
    h = Heatmap(np.ones((3, 3)), score=10.0, residual=0.5)
    assert h.residual == 0.5


def test_no_score_means_no_residual():
    h = Heatmap(np.ones((2, 2)))
    assert h.score is None and h.residual is None


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[0.0, np.nan]]), "non-finite"),
        (np.array([[0.0, np.inf]]), "non-finite"),
        (np.zeros(4), "2-D"),
        (np.zeros((0, 3)), "empty"),
        (np.array([["a"]]), "numeric"),
    ],
)
def test_bad_relevance_is_refused(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Heatmap(bad)


def test_image_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        Heatmap(np.zeros((4, 5)), image=np.zeros((5, 4, 3)))


def test_non_finite_score_is_refused():
    with pytest.raises(ValueError, match="score must be finite"):
        Heatmap(np.zeros((2, 2)), score=float("nan"))


def test_npz_round_trip_is_exact(tmp_path, astronaut_map):
    astronaut_map.extras = {
        "bow_relevance": np.linspace(-1, 1, 7),
        "features": {"centers": np.arange(6.0).reshape(3, 2), "support": np.array([16, 16, 24])},
        "layer_sums": [1.5, 1.25, np.float64(1.0)],
        "shape": (64, 64),
        "root_f": 3e-11,
        "name": "rank",
        "nothing": None,
        "inf": float("inf"),
    }
    path = astronaut_map.save(tmp_path / "map.npz")
    back = Heatmap.load(path)
    assert np.array_equal(back.relevance, astronaut_map.relevance)
    assert back.relevance.dtype == np.float64
    assert np.array_equal(back.image, astronaut_map.image) and back.image.dtype == np.uint8
    for name in ("score", "target", "method", "residual"):
        assert getattr(back, name) == getattr(astronaut_map, name)
    ex = back.extras
    assert np.array_equal(ex["bow_relevance"], astronaut_map.extras["bow_relevance"])
    assert np.array_equal(ex["features"]["support"], [16, 16, 24])
    assert ex["layer_sums"] == [1.5, 1.25, 1.0]
    assert ex["shape"] == (64, 64)
    assert ex["root_f"] == 3e-11 and ex["name"] == "rank" and ex["nothing"] is None
    assert ex["inf"] == float("inf")


def test_integer_target_round_trips_as_int(tmp_path):
    h = Heatmap(np.eye(3), score=1.0, target=np.int64(7))
    back = Heatmap.load(h.save(tmp_path / "m.npz"))
    assert back.target == 7 and isinstance(back.target, int)


def test_load_refuses_other_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable heatmap"):
        Heatmap.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved Heatmap"):
        Heatmap.load(other)


def test_load_names_the_file_for_every_kind_of_damage(astronaut_map, tmp_path):
    """Truncated, bit-flipped, foreign, pickled, tampered and missing files: one ValueError each,
    naming the file (never BadZipFile, KeyError, JSONDecodeError or numpy's allow_pickle advice)."""
    import json
    import pickle
    import zipfile

    good = astronaut_map.save(tmp_path / "good.npz")
    data = open(good, "rb").read()
    cases = {"truncated.npz": data[: len(data) // 2], "header_only.npz": data[:40], "empty.npz": b"",
             "pickle.npz": pickle.dumps({"relevance": 1}), "text.npz": b"relevance,score\n1,2\n"}
    flipped = bytearray(data)
    flipped[len(data) // 3: len(data) // 3 + 64] = bytes(64)
    cases["flipped.npz"] = bytes(flipped)
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.savez(tmp_path / "objects.npz", relevance=np.array([{"a": 1}], dtype=object),
             __heatmap_meta__=np.array("{}"))
    meta = {"format": 1, "score": 1.0, "target": {"__array__": "missing"}, "method": "m",
            "residual": 0.0, "extras": {"__dict__": {}}}
    np.savez(tmp_path / "dangling.npz", relevance=np.eye(2), __heatmap_meta__=np.array(json.dumps(meta)))
    np.savez(tmp_path / "badjson.npz", relevance=np.eye(2), __heatmap_meta__=np.array("{not json"))
    np.savez(tmp_path / "nometa.npz", relevance=np.eye(2), __heatmap_meta__=np.array('{"format": 1}'))
    with zipfile.ZipFile(tmp_path / "foreign.npz", "w") as zf:
        zf.writestr("readme.txt", "hello")
    names = [*cases, "objects.npz", "dangling.npz", "badjson.npz", "nometa.npz", "foreign.npz", "absent.npz"]
    for name in names:
        path = tmp_path / name
        with pytest.raises(ValueError) as info:
            Heatmap.load(path)
        assert type(info.value) is ValueError and str(path) in str(info.value), (name, info.value)
        assert "allow_pickle=" not in str(info.value), name
    with pytest.raises(ValueError, match="pickled Python objects"):
        Heatmap.load(tmp_path / "objects.npz")


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown heatmap file type"):
        Heatmap(np.zeros((2, 2))).save(tmp_path / "m.jpg")


@pytest.mark.parametrize("cmap", sorted(COLORMAPS))
def test_zero_maps_to_centre_and_extremes_to_ends(cmap):
    positions, colours = COLORMAPS[cmap]
    centre = colours[np.flatnonzero(positions == 0.0)[0]]
    rgb = colorize(np.array([[-2.0, 0.0, 2.0, 1.0]]), cmap=cmap)
    np.testing.assert_array_equal(rgb[0, 1], centre)
    np.testing.assert_array_equal(rgb[0, 2], colours[-1])  # max -> end colour
    np.testing.assert_array_equal(rgb[0, 0], colours[0])  # -max -> first colour
    halfway = [np.interp(0.5, positions, colours[:, c]) for c in range(3)]
    np.testing.assert_allclose(rgb[0, 3], halfway)


def test_bwr_known_colours_in_uint8():
    out = render(Heatmap(np.array([[-1.0, 0.0, 1.0]])), cmap="bwr")
    assert out.dtype == np.uint8
    assert out[0].tolist() == [[0, 0, 255], [255, 255, 255], [255, 0, 0]]
    hot = render(Heatmap(np.array([[0.0, 1.0]])), cmap="coldhot")
    assert hot[0].tolist() == [[0, 0, 0], [255, 255, 0]]


def test_all_zero_map_renders_centre_colour():
    out = render(Heatmap(np.zeros((3, 4))))
    assert np.all(out == 255)


def test_shared_normalisation():
    weak = Heatmap(np.array([[0.5, -0.25]]))
    strong = Heatmap(np.array([[2.0, 0.0]]))
    vmax = shared_vmax([weak, strong])
    assert vmax == 2.0
    own = render(weak)  # per-map: 0.5 is full red
    shared = render(weak, vmax=vmax)  # shared: 0.5 is a quarter of the way to red
    assert own[0, 0].tolist() == [255, 0, 0]
    assert shared[0, 0].tolist() == [255, 191, 191]


def test_vmax_clips_beyond_range():
    out = render(np.array([[10.0, -10.0]]), vmax=1.0)
    assert out[0].tolist() == [[255, 0, 0], [0, 0, 255]]


def test_unknown_cmap_is_refused():
    with pytest.raises(ValueError, match="unknown colour map"):
        render(np.zeros((2, 2)), cmap="jet")


def test_overlay_blends_colours_over_grey_image(astronaut_map):
    out = astronaut_map.render(overlay=True, alpha=0.5)
    assert out.shape == astronaut_map.image.shape and out.dtype == np.uint8
    img = astronaut_map.image.astype(np.float64) / 255
    grey = img @ np.array([0.299, 0.587, 0.114])
    colours = colorize(astronaut_map.relevance)
    want = np.round((0.5 * colours + 0.5 * grey[..., None]) * 255)
    np.testing.assert_array_equal(out, want.astype(np.uint8))


def test_overlay_without_image_is_refused():
    with pytest.raises(ValueError, match="needs an image"):
        render(Heatmap(np.zeros((2, 2))), overlay=True)


def test_overlay_with_gray_float_image():
    img = np.linspace(0, 1, 12).reshape(3, 4)
    out = render(Heatmap(np.zeros((3, 4)), image=img), overlay=True, alpha=0.0)
    assert np.array_equal(out[..., 0], np.round(img * 255).astype(np.uint8))


def test_png_save_writes_the_rendered_map(tmp_path, astronaut_map):
    # 64 x 64 is saved 4 x larger (256 px, the default PNG_MIN_SIDE): each pixel a 4 x 4 square
    path = astronaut_map.save(tmp_path / "sub" / "map.png", cmap="coldhot")
    back = np.asarray(Image.open(path))
    want = np.repeat(np.repeat(astronaut_map.render(cmap="coldhot"), 4, axis=0), 4, axis=1)
    np.testing.assert_array_equal(back, want)
    native = astronaut_map.save(tmp_path / "native.png", cmap="coldhot", min_side=None)
    np.testing.assert_array_equal(np.asarray(Image.open(native)), astronaut_map.render(cmap="coldhot"))


@pytest.mark.parametrize("shape, factor", [((25, 25), 11), ((8, 8), 32), ((64, 100), 3), ((300, 20), 1)])
def test_png_is_enlarged_by_a_whole_factor_to_256(tmp_path, shape, factor):
    relevance = np.random.default_rng(0).normal(size=shape)
    png = np.asarray(Image.open(Heatmap(relevance).save(tmp_path / "m.png")))
    assert max(png.shape[:2]) >= PNG_MIN_SIDE == 256
    assert png.shape[:2] == (shape[0] * factor, shape[1] * factor)
    np.testing.assert_array_equal(png[::factor, ::factor], render(relevance))  # nearest: no new colours
    assert np.array_equal(enlarge(render(relevance)), png)
    with pytest.raises(ValueError, match="min_side"):
        enlarge(png, min_side=0)
    with pytest.raises(TypeError, match="min_side apply to .png only"):
        Heatmap(relevance).save(tmp_path / "m.npz", min_side=64)


def test_montage_shape_and_file(tmp_path, astronaut_map):
    other = Heatmap(-astronaut_map.relevance[:32, :32])
    items = [astronaut_map.image, astronaut_map, other, astronaut_map.image]
    out = montage(items, labels=["image", "BoW", "net", "image"], ncols=3, path=tmp_path / "m.png",
                  cell_size=64, pad=4, label_height=14, shared=True, colorbar=False)
    assert out.shape == (2 * (64 + 14 + 4) + 4, 3 * (64 + 4) + 4, 3)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")), out)
    # the first cell holds the image itself (64 x 64 at scale 1)
    assert np.array_equal(out[4 + 14:4 + 14 + 64, 4:68], astronaut_map.image)
    # labels are drawn: the label strip is not blank
    assert np.any(out[4:4 + 14, 4:68] < 255)


def test_montage_shared_scale_uses_one_vmax():
    a = Heatmap(np.array([[1.0]]))
    b = Heatmap(np.array([[4.0]]))
    out = montage([a, b], cell_size=1, pad=0)
    assert out[0, 0].tolist() == out[0, 1].tolist() == [255, 0, 0]
    out = montage([a, b], cell_size=1, pad=0, shared=True)
    assert out[0, 0].tolist() == [255, 191, 191] and out[0, 1].tolist() == [255, 0, 0]


def test_montage_errors():
    with pytest.raises(ValueError, match="at least one"):
        montage([])
    with pytest.raises(ValueError, match="labels"):
        montage([np.zeros((2, 2))], labels=["a", "b"])


def _blue_and_red_columns(strip):
    """Columns of the colour bar's first row that are pure blue / pure red."""
    row = strip[6].astype(int)
    return np.flatnonzero((row == [0, 0, 255]).all(axis=1)), np.flatnonzero((row == [255, 0, 0]).all(axis=1))


def test_montage_colour_bar_on_a_shared_scale(astronaut_map):
    other = Heatmap(-0.5 * astronaut_map.relevance)
    grid = montage([astronaut_map.image, astronaut_map, other], cell_size=64, pad=4, label_height=14,
                   shared=True, colorbar=False)
    out = montage([astronaut_map.image, astronaut_map, other], cell_size=64, pad=4, label_height=14,
                  shared=True)
    # the grid is unchanged on top, widened to the bar's minimum width; the bar is added below
    assert out.shape[1] == max(grid.shape[1], 300)
    np.testing.assert_array_equal(out[:grid.shape[0], :grid.shape[1]], grid)
    strip = out[grid.shape[0]:]
    np.testing.assert_array_equal(strip, colorbar(out.shape[1], vmax=shared_vmax([astronaut_map, other]),
                                                  note="one scale for all maps"))
    blue, red = _blue_and_red_columns(strip)
    assert blue.max() < out.shape[1] / 2 < red.min()  # blue (against) left, red (for) right
    # the value range is written: the labels differ from those of another range
    assert not np.array_equal(strip, colorbar(out.shape[1], vmax=2 * shared_vmax([astronaut_map]),
                                              note="one scale for all maps"))


def test_montage_with_one_scale_per_map_writes_each_range(astronaut_map):
    weak = Heatmap(0.001 * astronaut_map.relevance)
    out = montage([astronaut_map, weak], labels=["a", "b"], cell_size=64, pad=4, label_height=14)
    rows = 4 + 14 + 64 + 14 + 4  # pad, label, cell, the range line, pad
    assert out.shape[0] == rows + colorbar(300, note="each map on its own scale").shape[0]
    range_line = out[4 + 14 + 64:4 + 14 + 64 + 14]
    assert np.any(range_line[:, 4:68] < 255) and np.any(range_line[:, 72:136] < 255)
    assert not np.array_equal(range_line[:, 4:68], range_line[:, 72:136])  # different numbers
    np.testing.assert_array_equal(out[rows:], colorbar(out.shape[1], note="each map on its own scale"))
    # images alone need no scale
    assert montage([astronaut_map.image], cell_size=64).shape[0] == 4 + 64 + 4


def test_colour_bar_values_are_rounded_and_narrow_bars_refused():
    assert format_value(0.0123456) == "0.0123" and format_value(1234.5) == "1.23e+03"
    assert format_value(0.0) == "0"
    with pytest.raises(ValueError, match="at least 300"):
        colorbar(100)


def test_trusted_constructor_gives_the_public_constructors_fields(astronaut_map):
    """Heatmap._trusted (explainers' maps from checked arrays) skips the checks, not the residual."""
    h = astronaut_map
    fast = Heatmap._trusted(h.relevance, h.score, np.int64(3), "m", h.image, {"a": 1})
    public = Heatmap(h.relevance, score=h.score, target=np.int64(3), method="m", image=h.image,
                     extras={"a": 1})
    for name in ("score", "residual", "target", "method", "extras"):
        assert getattr(fast, name) == getattr(public, name)
        assert type(getattr(fast, name)) is type(getattr(public, name))
    assert fast.relevance is h.relevance and fast.image is public.image
    with pytest.raises(ValueError, match="score must be finite"):
        Heatmap._trusted(h.relevance, float("nan"), 1, "m", None, {})
