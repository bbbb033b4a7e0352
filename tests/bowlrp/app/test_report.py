"""The HTML report: self-contained, the embedded pictures are exactly the rendered heatmaps, text is
escaped, curves are drawn from the given numbers. Heatmaps are real: LRP of an MLP on digits."""

from __future__ import annotations

import base64
import io
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import nets
from bowlrp.app.adapters import NetworkExplainer
from bowlrp.app.report import ReportRow, png_data_uri, svg_curves, write_report
from bowlrp.heatmap import Heatmap, render, shared_vmax
from tests.bowlrp.app import cli_data


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.scripts, self.rows = [], [], 0, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("a", "link") and "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "script":
            self.scripts += 1
        if tag == "tr":
            self.rows += 1


def _parse(path):
    parser = _Collect()
    parser.feed(open(path, encoding="utf-8").read())
    return parser


def _decode(uri):
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    model = nets.load(cli_data.digits_network(str(root / "digits.npz")))
    X, _ = cli_data.digits_data(600)
    images = [cli_data.digit_png(x) for x in X[-4:]]
    return NetworkExplainer(model).explain(images)


def test_page_is_self_contained_and_embeds_the_rendered_maps(maps, tmp_path):
    rows = [ReportRow(f"digit{i}", {"LRP": h}, info={"label": i}) for i, h in enumerate(maps)]
    page = write_report(tmp_path / "r.html", rows, title="digits", summary={"model": "digits.npz"})
    parsed = _parse(page)
    assert parsed.links == [] and parsed.scripts == 0
    assert len(parsed.images) == 2 * len(maps)  # the image and its map, per row
    assert all(src.startswith("data:image/png;base64,") for src in parsed.images)
    for i, heatmap in enumerate(maps):
        image, drawn = _decode(parsed.images[2 * i]), _decode(parsed.images[2 * i + 1])
        factor = math.ceil(96 / 8)  # small maps are enlarged by an integer factor, pixels stay squares
        assert drawn.shape == (8 * factor, 8 * factor, 3)
        np.testing.assert_array_equal(drawn[::factor, ::factor], render(heatmap))
        grey = np.round(heatmap.image * 255).astype(np.uint8)
        np.testing.assert_array_equal(image[::factor, ::factor, 0], grey)
    text = open(page, encoding="utf-8").read()
    for heatmap in maps:
        assert f"score {heatmap.score:.4g}" in text and f"target {heatmap.target}" in text


def test_shared_scale_uses_one_vmax_per_row(maps, tmp_path):
    strong = maps[0]
    weak = Heatmap(strong.relevance * 0.25, score=strong.score * 0.25, target=strong.target,
                   image=strong.image)
    page = write_report(tmp_path / "r.html", [ReportRow("x", {"a": strong, "b": weak})], shared_scale=True)
    images = _parse(page).images
    factor = 12
    vmax = shared_vmax([strong, weak])
    np.testing.assert_array_equal(_decode(images[2])[::factor, ::factor], render(weak, vmax=vmax))
    assert not np.array_equal(render(weak, vmax=vmax), render(weak))  # the scale made a difference


def test_text_is_escaped_and_rows_are_capped(maps, tmp_path):
    rows = [ReportRow(f"<script>alert({i})</script>", {"m": maps[i % len(maps)]}) for i in range(5)]
    page = write_report(tmp_path / "r.html", rows, max_rows=2,
                        skipped=[("bad", "/data/<b>.png", "not an image")],
                        tables=[("Scores & more", ["a", "b"], [(1, 2.5), ("x<y", None)])])
    text = open(page, encoding="utf-8").read()
    parsed = _parse(page)
    assert parsed.scripts == 0 and "&lt;script&gt;alert(0)&lt;/script&gt;" in text
    assert "3 more images not shown" in text
    assert "Skipped inputs (1)" in text and "/data/&lt;b&gt;.png" in text
    assert "Scores &amp; more" in text and "x&lt;y" in text
    assert len(parsed.images) == 2 * 2


def test_curves_are_drawn_from_the_numbers():
    morf = [3.0, 1.0, 0.5, 0.25]
    svg = svg_curves({"MoRF": morf, "random": ([0, 1, 2, 3], [3.0, 2.9, float("nan"), 2.5])},
                     title="AOPC <curves>")
    lines = re.findall(r'points="([^"]+)"', svg)
    assert len(lines) == 2
    assert len(lines[0].split()) == 4 and len(lines[1].split()) == 3  # the NaN point is left out
    ys = [float(p.split(",")[1]) for p in lines[0].split()]
    assert ys == sorted(ys)  # falling scores go down the page (larger y)
    assert "AOPC &lt;curves&gt;" in svg and ">MoRF<" in svg
    assert svg_curves({}) == "" and svg_curves({"x": [float("nan")]}) == ""


def test_report_with_curves_and_large_images(tmp_path):
    from skimage import data

    photo = data.astronaut()  # 512 x 512 x 3: shrunk to max_side in the page
    relevance = photo.mean(axis=2) - photo.mean()
    heatmap = Heatmap(relevance, score=float(relevance.sum()), image=photo)
    page = write_report(tmp_path / "r.html", [ReportRow("astronaut", {"toy": heatmap})], max_side=128,
                        curves=[("curve", {"MoRF": [1.0, 0.5, 0.2]}, "step", "score")])
    parsed = _parse(page)
    assert all(max(_decode(src).shape[:2]) == 128 for src in parsed.images)
    assert "<svg" in open(page, encoding="utf-8").read()


def test_png_data_uri_round_trip():
    rgb = (np.arange(100 * 120 * 3) % 251).astype(np.uint8).reshape(100, 120, 3)
    np.testing.assert_array_equal(_decode(png_data_uri(rgb)), rgb)


def test_true_label_and_correct_or_wrong_next_to_each_prediction(maps, tmp_path):
    rows = [ReportRow("right", {"LRP": maps[0], "other": maps[1]}, label=3,
                      predicted={"LRP": 3, "other": "5"}),
            ReportRow("label only", {"LRP": maps[2]}, label="7"),
            ReportRow("unknown", {"LRP": maps[3]})]
    text = open(write_report(tmp_path / "r.html", rows), encoding="utf-8").read()
    cells = re.findall(r"<td><img[^>]*><span class=\"small\">(.*?)</span></td>", text)
    assert len(cells) == 4
    assert cells[0].startswith("predicted 3 · true 3: <b class='right'>correct</b>")
    assert cells[1].startswith("predicted 5 · true 3: <b class='wrong'>wrong</b>")
    assert cells[2].startswith("true label 7") and "predicted" not in cells[2]
    assert cells[3].startswith("score ")  # nothing known: no verdict


def test_colour_legend_and_scale_of_every_map(maps, tmp_path):
    from bowlrp.colorbar import format_value

    text = open(write_report(tmp_path / "r.html", [ReportRow("x", {"a": maps[0], "b": maps[1]})],
                             cmap="coldhot"), encoding="utf-8").read()
    gradient = re.search(r"linear-gradient\(to right, (.*?)\)'", text).group(1)
    assert gradient.startswith("rgb(0,255,255) 0%") and gradient.endswith("rgb(255,255,0) 100%")
    assert "rgb(0,0,0) 50%" in gradient  # coldhot is black-centred: 0 in the middle
    assert "blue/cyan: against the explained class" in text and "red/yellow: for it" in text
    for heatmap in maps[:2]:  # each map on its own scale: its own max |R| under it
        assert f"colour scale ±{format_value(np.abs(heatmap.relevance).max())}" in text
    shared = open(write_report(tmp_path / "s.html", [ReportRow("x", {"a": maps[0], "b": maps[1]})],
                               shared_scale=True), encoding="utf-8").read()
    assert shared.count(f"colour scale ±{format_value(shared_vmax(maps[:2]))}") == 2
    assert ".grid{width:100%}" in text  # the heatmap table uses the page width, the pictures most of it
    assert text.count("<th style='width:26%'>") == 3  # image, a, b: equal shares of 80%


@pytest.mark.parametrize("lo, hi, labels", [
    (0.0123, 0.2837, ["0", "0.1", "0.2", "0.3"]),
    (-3.2, 7.9, ["-5", "0", "5", "10"]),
    (0.0, 99.0, ["0", "25", "50", "75", "100"]),
    (0.0, 1.0, ["0", "0.25", "0.50", "0.75", "1.00"]),
    (2.0, 2.0, ["1.50", "1.75", "2.00", "2.25", "2.50"]),
])
def test_plot_ticks_are_round_numbers(lo, hi, labels):
    from bowlrp.app.report import nice_ticks

    start, stop, ticks = nice_ticks(lo, hi)
    assert [t for _, t in ticks] == labels
    assert start <= lo and stop >= hi and ticks[0][0] == start and ticks[-1][0] == stop
    svg = svg_curves({"MoRF": [hi, lo]} if hi > lo else {"flat": [lo, lo]})
    assert all(f">{t}</text>" in svg for t in labels)
