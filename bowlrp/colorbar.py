"""Scale legends for heatmap pictures: a colour bar with its value range and what the colours mean.

A heatmap picture without a scale cannot be read: is dark red a lot of relevance or a little, and
which colour speaks for the class? :func:`colorbar` draws the answer as an RGB strip that
:func:`bowlrp.montages.montage` appends under its grid (the HTML report draws the same legend in CSS).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["colorbar", "format_value", "COLOUR_WORDS"]

# what the two ends of each colour map look like, for the legend's words
COLOUR_WORDS = {"bwr": ("blue", "red"), "seismic": ("blue", "red"), "coldhot": ("blue/cyan", "red/yellow")}

_TEXT_HEIGHT = 13
_BAR_HEIGHT = 12
_MARGIN = 6
MIN_WIDTH = 300  # narrower strips cannot hold the three labels


def format_value(value: float) -> str:
    """A relevance value as a short, rounded label: 3 significant digits (``0.0123``, ``1.2e+03``)."""
    value = float(value)
    if value == 0.0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.3g}"


def colorbar(width: int, cmap: str = "bwr", vmax: float | None = None, note: str = "") -> np.ndarray:
    """A colour bar strip, uint8 RGB of shape (height, width, 3), white background.

    Parameters
    ----------
    width : int
        Width in pixels (at least :data:`MIN_WIDTH`).
    cmap : str
        A colour map of :data:`bowlrp.heatmap.COLORMAPS`.
    vmax : float, optional
        The relevance at full colour, written at the ends (``-vmax``, ``0``, ``+vmax``). ``None``:
        every map has its own scale, and the ends read ``-max|R|`` and ``+max|R|``.
    note : str
        A few words after the legend (e.g. "one scale for all maps").
    """
    from PIL import Image, ImageDraw, ImageFont

    from bowlrp.heatmap import colorize

    width = int(width)
    if width < MIN_WIDTH:
        raise ValueError(f"a colour bar needs at least {MIN_WIDTH} pixels of width, got {width}")
    negative, positive = COLOUR_WORDS.get(cmap, ("negative", "positive"))
    height = _MARGIN + _BAR_HEIGHT + (3 if note else 2) * _TEXT_HEIGHT + _MARGIN
    strip = np.full((height, width, 3), 255, dtype=np.uint8)
    bar_width = width - 2 * _MARGIN
    colours = colorize(np.linspace(-1.0, 1.0, bar_width), cmap=cmap, vmax=1.0)
    rows, cols = slice(_MARGIN, _MARGIN + _BAR_HEIGHT), slice(_MARGIN, _MARGIN + bar_width)
    strip[rows, cols] = np.round(colours * 255).astype(np.uint8)
    img = Image.fromarray(strip)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    ends = ("-max|R|", "+max|R|") if vmax is None else (f"-{format_value(vmax)}", f"+{format_value(vmax)}")
    y = _MARGIN + _BAR_HEIGHT + 1
    centre = _MARGIN + bar_width / 2
    draw.line([(centre, _MARGIN + _BAR_HEIGHT - 4), (centre, y)], fill=(0, 0, 0))
    draw.text((_MARGIN, y), ends[0], fill=(0, 0, 0), font=font)
    draw.text((centre, y), "0", fill=(0, 0, 0), font=font, anchor="ma")
    draw.text((width - _MARGIN, y), ends[1], fill=(0, 0, 0), font=font, anchor="ra")
    y += _TEXT_HEIGHT
    draw.text((_MARGIN, y), f"{negative}: against", fill=(0, 0, 0), font=font)
    draw.text((width - _MARGIN, y), f"{positive}: for the class", fill=(0, 0, 0), font=font, anchor="ra")
    if note:
        draw.text((centre, y + _TEXT_HEIGHT), note, fill=(90, 90, 90), font=font, anchor="ma")
    return np.asarray(img)
