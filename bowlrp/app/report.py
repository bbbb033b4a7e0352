"""One self-contained HTML page per run: images, their heatmaps, scores, and evaluation curves.

Everything is inside the file (PNG images as base64 ``data:`` URIs, curves as inline SVG, CSS in a
``<style>`` block): it can be mailed or archived and opens in any browser without a server or the
output folder next to it.

Building blocks:

- :class:`ReportRow`: one image, the heatmaps of one or more methods (for example "BoW" and
  "network" in a comparison), and a few scores shown under each map.
- :func:`write_report`: rows + summary + tables + curves -> the page.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass, field

import numpy as np

from bowlrp.colorbar import COLOUR_WORDS, format_value
from bowlrp.heatmap import COLORMAPS, Heatmap, _to_uint8_rgb, render, shared_vmax

__all__ = ["ReportRow", "write_report", "png_data_uri", "svg_curves", "nice_ticks"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:16px 24px;color:#222}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{width:100%} .grid td{text-align:center}
.grid img{image-rendering:pixelated;display:block;margin:0 auto 4px;width:100%;min-width:96px;max-width:512px}
.small{font-size:.85em;color:#555} .skipped{color:#a33} .right{color:#1a7f37} .wrong{color:#c62828}
.legend{display:flex;align-items:center;gap:8px;margin:.4em 0 .8em;max-width:640px}
.legend .bar{flex:1;height:14px;border:1px solid #999}
"""

_PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]


@dataclass
class ReportRow:
    """One image of the report.

    Parameters
    ----------
    key : str
        Name shown for the image.
    image : ndarray, optional
        The image (shown first). Default: the first heatmap's image.
    maps : dict of str -> Heatmap
        Heatmaps by method label, shown left to right.
    info : dict of str -> value
        Extra cells (e.g. the path).
    label : optional
        The image's true class, when known: shown next to each prediction.
    predicted : dict of str -> value, optional
        The class each method's model predicted (by method label); with ``label`` known, the page
        says "correct" or "wrong" under that map.
    """

    key: str
    maps: dict = field(default_factory=dict)
    image: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    label: object = None
    predicted: dict = field(default_factory=dict)


def png_data_uri(rgb: np.ndarray, max_side: int | None = None, min_side: int = 96) -> str:
    """Encode an (H, W[, 3]) image as a ``data:image/png;base64,...`` URI.

    Large images are shrunk to ``max_side`` (keeping the report small); tiny ones (MNIST) are
    enlarged by an integer factor with nearest neighbour, so pixels stay sharp squares.
    """
    from PIL import Image

    img = Image.fromarray(_to_uint8_rgb(rgb))
    side = max(img.size)
    if max_side is not None and side > max_side:
        scale = max_side / side
        img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))),
                         Image.LANCZOS)
    elif side < min_side:
        factor = math.ceil(min_side / side)
        img = img.resize((img.size[0] * factor, img.size[1] * factor), Image.NEAREST)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def _table(columns, rows) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns or [])
    body = []
    for row in rows:
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            cls = ' class="num"' if numeric else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    head = f"<tr>{head}</tr>" if head else ""
    return f"<table>{head}{''.join(body)}</table>"


def nice_ticks(lo: float, hi: float, n: int = 5):
    """Round axis ticks covering [lo, hi]: a step of 1, 2, 2.5 or 5 times a power of ten.

    Returns ``(start, stop, ticks)``: the axis range (widened to whole steps) and about ``n``
    ``(value, label)`` pairs with as many decimals as the step needs (``0.25``, ``0.5``, ``10``).
    """
    lo, hi = float(lo), float(hi)
    if hi <= lo:  # one value: a unit range around it
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(n - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    mantissa = step / 10.0 ** math.floor(math.log10(step))
    decimals = max(0, -math.floor(math.log10(step)) + (1 if abs(mantissa - 2.5) < 1e-9 else 0))
    ticks = [(k * step, f"{k * step:.{decimals}f}") for k in range(first, last + 1)]
    ticks = [(v, "0" if float(t) == 0.0 else t) for v, t in ticks]  # no "-0.0"
    return first * step, last * step, ticks


def svg_curves(series: dict, title: str = "", xlabel: str = "perturbation step",
               ylabel: str = "score", width: int = 420, height: int = 260) -> str:
    """A small line chart as inline SVG (no plotting library needed).

    Parameters
    ----------
    series : dict of label -> y values, or label -> (x values, y values)
    """
    if not series:
        return ""
    lines = {}
    for label, values in series.items():
        if isinstance(values, tuple) and len(values) == 2:
            x, y = (np.asarray(v, dtype=np.float64) for v in values)
        else:
            y = np.asarray(values, dtype=np.float64)
            x = np.arange(len(y), dtype=np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.any():
            lines[str(label)] = (x[keep], y[keep])
    if not lines:
        return ""
    xs = np.concatenate([x for x, _ in lines.values()])
    ys = np.concatenate([y for _, y in lines.values()])
    (x0, x1, x_ticks), (y0, y1, y_ticks) = nice_ticks(xs.min(), xs.max()), nice_ticks(ys.min(), ys.max())
    left, right, top, bottom = 56, 12, 24, 38
    pw, ph = width - left - right, height - top - bottom

    def px(x):
        return left + (x - x0) / (x1 - x0) * pw

    def py(y):
        return top + (y1 - y) / (y1 - y0) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-size="11" font-family="sans-serif">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>']
    for yv, text in y_ticks:
        parts.append(f'<text x="{left - 4}" y="{py(yv) + 4:.1f}" text-anchor="end">{text}</text>')
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(yv):.1f}" y2="{py(yv):.1f}" '
                     'stroke="#eee"/>')
    for xv, text in x_ticks:
        parts.append(f'<text x="{px(xv):.1f}" y="{top + ph + 14}" text-anchor="middle">{text}</text>')
    if y0 < 0 < y1:
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(0):.1f}" y2="{py(0):.1f}" stroke="#aaa" '
                     'stroke-dasharray="3,3"/>')
    for k, (label, (x, y)) in enumerate(lines.items()):
        colour = _PALETTE[k % len(_PALETTE)]
        points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, y))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
                     f"<title>{html.escape(label)}</title></polyline>")
        parts.append(f'<text x="{left + pw - 4}" y="{top + 14 + 13 * k}" text-anchor="end" '
                     f'fill="{colour}">{html.escape(label)}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle">'
                 f"{html.escape(xlabel)}</text>")
    parts.append(f'<text x="12" y="{top + ph / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + ph / 2:.1f})">{html.escape(ylabel)}</text>')
    if title:
        parts.append(f'<text x="{left}" y="14" font-weight="bold">{html.escape(title)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _verdict(label, predicted) -> str:
    """'predicted X · true Y: correct/wrong' (HTML), or what of it is known."""
    if predicted is None:
        return f"true label {html.escape(str(label))}" if label is not None else ""
    text = f"predicted {html.escape(str(predicted))}"
    if label is None:
        return text
    right = str(predicted) == str(label)  # labels read back from CSV files are strings
    verdict = "<b class='right'>correct</b>" if right else "<b class='wrong'>wrong</b>"
    return f"{text} · true {html.escape(str(label))}: {verdict}"


def _map_cell(heatmap: Heatmap, vmax, cmap: str, overlay: bool, max_side: int, verdict: str = "") -> str:
    use_overlay = overlay and heatmap.image is not None
    rgb = render(heatmap, cmap=cmap, vmax=vmax, overlay=use_overlay)
    scale = float(np.max(np.abs(heatmap.relevance))) if vmax is None else vmax
    lines = [verdict,
             f"score {_fmt(heatmap.score)}" if heatmap.score is not None else "",
             f"target {html.escape(str(heatmap.target))}" if heatmap.target is not None else "",
             f"ΣR {_fmt(heatmap.total)}",
             f"residual {_fmt(heatmap.residual)}" if heatmap.residual is not None else "",
             f"colour scale ±{format_value(scale)}"]
    caption = "<br>".join(line for line in lines if line)
    return f'<img src="{png_data_uri(rgb, max_side)}" alt="heatmap"><span class="small">{caption}</span>'


def _legend(cmap: str, shared_scale: bool) -> str:
    """The colour bar of the page, drawn in CSS (a gradient through the colour map's anchors)."""
    positions, colours = COLORMAPS[cmap]
    stops = ", ".join(f"rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f}) {(p + 1) * 50:.0f}%"
                      for p, (r, g, b) in zip(positions, colours))
    negative, positive = COLOUR_WORDS.get(cmap, ("negative", "positive"))
    scale = ("one colour scale per row: ±the row's largest |R|" if shared_scale
             else "each map on its own scale: ±its max |R|")
    return (f"<div class='legend'><span class='small'>{negative}: against the explained class "
            f"&nbsp;−s</span><span class='bar' style='background:linear-gradient(to right, {stops})'></span>"
            f"<span class='small'>+s&nbsp; {positive}: for it</span></div>"
            f"<p class='small'>0 is the centre colour; s, the relevance drawn at full colour, is under "
            f"each map ({scale}).</p>")


def write_report(path, rows, title: str = "bowlrp report", summary: dict | None = None,
                 tables=None, curves=None, skipped=None, cmap: str = "bwr", overlay: bool = False,
                 shared_scale: bool = False, max_rows: int | None = 200, max_side: int = 256) -> str:
    """Write a self-contained HTML report.

    Parameters
    ----------
    path : str or path
    rows : sequence of ReportRow
    title : str
    summary : dict, optional
        Key/value facts shown first (model, counts, settings).
    tables : sequence of (caption, columns, rows), optional
        Extra tables (scores, AOPC, localization).
    curves : sequence of (title, series, xlabel, ylabel), optional
        Perturbation curves etc.; ``series`` as in :func:`svg_curves`.
    skipped : sequence of (key, path, reason), optional
        Inputs that were skipped, listed with the reason.
    shared_scale : bool
        One colour scale per row (all methods on the same relevance scale) instead of one per map.
    max_rows : int, optional
        Show at most this many images (the page says how many were left out).

    Returns
    -------
    str : the path written.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> from bowlrp.heatmap import Heatmap
    >>> from bowlrp.app.report import ReportRow, write_report
    >>> h = Heatmap(np.eye(4), score=4.0, method="toy")
    >>> page = write_report(os.path.join(tempfile.mkdtemp(), "r.html"), [ReportRow("a", {"toy": h})])
    >>> open(page).read().startswith("<!DOCTYPE html>")
    True
    """
    rows = list(rows)
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if summary:
        out.append(_table(None, [(k, v) for k, v in summary.items()]))
    if skipped:
        out.append(f"<h2 class='skipped'>Skipped inputs ({len(skipped)})</h2>")
        out.append(_table(["key", "path", "reason"], skipped))
    for caption, columns, table_rows in tables or []:
        out.append(f"<h2>{html.escape(caption)}</h2>")
        out.append(_table(columns, table_rows))
    for spec in curves or []:
        curve_title, series, xlabel, ylabel = (list(spec) + ["perturbation step", "score"])[:4]
        out.append(svg_curves(series, title=curve_title, xlabel=xlabel, ylabel=ylabel))
    if rows:
        methods = list(dict.fromkeys(m for row in rows for m in row.maps))
        info_names = list(dict.fromkeys(k for row in rows for k in row.info))
        shown = rows if max_rows is None else rows[:max_rows]
        out.append(f"<h2>Heatmaps ({len(rows)} images)</h2>")
        out.append(_legend(cmap, shared_scale))
        # the pictures share most of the page width equally; key and info columns take what is left
        picture = f" style='width:{80 // (1 + len(methods))}%'"
        head = [("key", ""), ("image", picture)] + [(m, picture) for m in methods]
        head += [(name, "") for name in info_names]
        cells = "".join(f"<th{style}>{html.escape(h)}</th>" for h, style in head)
        out.append(f"<table class='grid'><tr>{cells}</tr>")
        for row in shown:
            image = row.image
            if image is None:
                image = next((h.image for h in row.maps.values() if h.image is not None), None)
            vmax = shared_vmax(list(row.maps.values())) if shared_scale and row.maps else None
            cells = [f"<td>{html.escape(row.key)}</td>"]
            if image is not None:
                cells.append(f'<td><img src="{png_data_uri(image, max_side)}" alt="image"></td>')
            else:
                cells.append("<td></td>")
            for method in methods:
                heatmap = row.maps.get(method)
                verdict = _verdict(row.label, row.predicted.get(method))
                cells.append("<td></td>" if heatmap is None
                             else f"<td>{_map_cell(heatmap, vmax, cmap, overlay, max_side, verdict)}</td>")
            for name in info_names:
                cells.append(f"<td>{html.escape(_fmt(row.info.get(name)))}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</table>")
        if len(shown) < len(rows):
            out.append(f"<p class='small'>{len(rows) - len(shown)} more images not shown "
                       "(see the output folder).</p>")
    out.append("</body></html>\n")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("".join(out))
    return path
