"""Reading image files, folders and CSV lists; bad files are named with the reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from bowlrp.imageio import (
    ImageItem,
    ImageReadError,
    labelled_folder,
    list_images,
    read_image,
    read_images,
    read_label_csv,
)
from tests.bowlrp.app import cli_data


def test_reads_gray_rgb_alpha_palette_and_16_bit(tmp_path):
    rgb = data.astronaut()[::8, ::8]
    gray = data.camera()[::8, ::8]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgba = np.dstack([rgb, np.full(gray.shape, 255, np.uint8)])
    rgba[0, 0, 3] = 0  # one transparent pixel: composited over white
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    deep = (gray.astype(np.uint16) * 257)
    Image.fromarray(deep).save(tmp_path / "deep.png")

    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)
    assert read_image(tmp_path / "rgb.jpg").shape == rgb.shape
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), gray)
    alpha = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(alpha[1:, 1:], rgb[1:, 1:])
    np.testing.assert_array_equal(alpha[0, 0], [255, 255, 255])
    assert read_image(tmp_path / "palette.png").shape == rgb.shape
    wide = read_image(tmp_path / "deep.png")
    assert wide.dtype == np.float64 and wide.shape == gray.shape
    np.testing.assert_allclose(wide, gray / 255.0, atol=1e-12)
    assert read_image(tmp_path / "rgb.png", mode="gray").shape == gray.shape
    assert read_image(tmp_path / "gray.png", mode="rgb").shape == gray.shape + (3,)
    with pytest.raises(ValueError, match="mode"):
        read_image(tmp_path / "rgb.png", mode="cmyk")


def test_bad_files_name_the_problem(tmp_path):
    bad = cli_data.write_bad_files(tmp_path)
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(bad["notes"])
    with pytest.raises(ImageReadError, match="corrupt or unreadable"):
        read_image(bad["truncated"])
    with pytest.raises(ImageReadError) as info:
        read_image(bad["empty"])
    assert info.value.path == bad["empty"]
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)
    assert issubclass(ImageReadError, ValueError)


def test_read_images_skips_and_reports(tmp_path):
    good = cli_data.write_digits(tmp_path / "ok", 3)
    bad = cli_data.write_bad_files(tmp_path / "bad")
    images, ok, skipped = read_images([good[0], bad["notes"], good[1], bad["truncated"], good[2]])
    assert ok == good and len(images) == 3
    assert [path for path, _ in skipped] == [bad["notes"], bad["truncated"]]


def test_list_images_from_folders_files_and_csv(tmp_path):
    a = cli_data.write_digits(tmp_path / "a", 2)
    b = cli_data.write_digits(tmp_path / "b", 2)  # same file names in another folder
    (tmp_path / "a" / "readme.txt").write_text("ignored: not an image suffix")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"ignored: hidden")
    items = list_images([tmp_path / "a", tmp_path / "b"])
    assert [i.path for i in items] == a + b
    assert [i.key for i in items] == ["a__digit000", "a__digit001", "b__digit000", "b__digit001"]
    assert all(isinstance(i, ImageItem) and i.label is None for i in items)
    # the same file twice still gets two distinct output names
    twice = list_images([a[0], a[0]])
    assert len({i.key for i in twice}) == 2
    csv = tmp_path / "list.csv"
    csv.write_text("path,label\na/digit000.png,zero\n" + f"{b[1]},one\n")
    from_csv = list_images(csv)
    assert [(i.path, i.label) for i in from_csv] == [(a[0], "zero"), (b[1], "one")]
    with pytest.raises(ValueError, match="does not exist"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        list_images(tmp_path / "empty")


def test_labelled_folder_and_label_csv(tmp_path):
    written = cli_data.write_scenes(tmp_path, n=6)
    paths, labels = labelled_folder(written["train"])
    assert sorted(zip(paths, labels)) == sorted(zip(written["paths"], written["labels"]))
    csv_paths, csv_labels = read_label_csv(written["csv"])
    assert csv_paths == written["paths"] and csv_labels == written["labels"]
    headerless = tmp_path / "plain.csv"
    headerless.write_text("".join(f"{p},{lab}\n" for p, lab in zip(paths, labels)))
    assert read_label_csv(headerless) == (paths, labels)
    only = tmp_path / "one_class"
    (only / "cats").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(only / "cats" / "x.png")
    with pytest.raises(ValueError, match="at least two classes"):
        labelled_folder(only)
    nolabel = tmp_path / "nolabel.csv"
    nolabel.write_text("path\nx.png\n")
    with pytest.raises(ValueError, match="no label column"):
        read_label_csv(nolabel)
    missing = tmp_path / "missing_label.csv"
    missing.write_text("path,label\nx.png,\n")
    with pytest.raises(ValueError, match="row 2: no label"):
        read_label_csv(missing)
    (tmp_path / "blank.csv").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_label_csv(tmp_path / "blank.csv")


def test_csv_errors_name_the_row_as_the_file_numbers_it(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("a.png,cat\n,dog\n")  # no header: the bad row is line 2
    with pytest.raises(ValueError, match="row 2: no path"):
        read_label_csv(path)
    path.write_text("path,label\n\na.png,cat\n,dog\n")  # a header and a blank line: line 4
    with pytest.raises(ValueError, match="row 4: no path"):
        read_label_csv(path)
