"""Montages: a labelled grid of heatmaps and images with a colour bar, one picture to compare maps.

Split from :mod:`bowlrp.heatmap` (``from bowlrp.heatmap import montage`` still works): that module
holds the heatmap type and the drawing of one map, this one the arrangement of many.
"""

from __future__ import annotations

import numpy as np

from bowlrp.heatmap import Heatmap, _to_uint8_rgb, render, save_png, shared_vmax

__all__ = ["montage"]


def _cell(item, cmap: str, vmax, overlay: bool) -> np.ndarray:
    if isinstance(item, Heatmap):
        return render(item, cmap=cmap, vmax=vmax, overlay=overlay and item.image is not None)
    arr = np.asarray(item)
    if arr.ndim not in (2, 3):
        raise ValueError(f"montage items must be Heatmaps or (H, W[, C]) images, got shape {arr.shape}")
    return _to_uint8_rgb(arr)  # an image; wrap a bare relevance array in a Heatmap to colour it


def _resize_nearest(img: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = (np.arange(height) * img.shape[0] // height).clip(0, img.shape[0] - 1)
    cols = (np.arange(width) * img.shape[1] // width).clip(0, img.shape[1] - 1)
    return img[rows][:, cols]


def montage(items, labels=None, ncols: int | None = None, path=None, cmap: str = "bwr",
            shared: bool = False, overlay: bool = False, cell_size: int | None = None,
            pad: int = 4, label_height: int = 14, colorbar: bool = True) -> np.ndarray:
    """A labelled grid of heatmaps and images, e.g. image | BoW map | network map, with a colour bar.

    Parameters
    ----------
    items : sequence of Heatmap or (H, W[, C]) images
        Filled row by row. Cells of different sizes are scaled (nearest neighbour, so no colour is
        invented) to a common ``cell_size`` square.
    labels : sequence of str, optional
        One caption per item, drawn above it.
    ncols : int, optional
        Columns of the grid (default: all items in one row).
    path : str or path, optional
        Also save the montage there as PNG.
    shared : bool
        Put all heatmaps on one colour scale (:func:`shared_vmax`) instead of one scale each.
    overlay : bool
        Draw heatmaps that carry an image over its grey version.
    colorbar : bool
        When there is a heatmap, add a colour bar under the grid (:func:`bowlrp.colorbar.colorbar`):
        the value range of the shared scale, or, with one scale per map, ``-max|R| .. +max|R|`` and
        each map's own max |R| written under it. The canvas is widened to the bar's minimum width.

    Returns
    -------
    ndarray, uint8 RGB. Without colour bar: (rows * (cell + label + pad) + pad,
    ncols * (cell + pad) + pad, 3); the colour bar adds a line per row for the ranges (one scale
    per map) and the bar's strip at the bottom.
    """
    from bowlrp import colorbar as bar

    items = list(items)
    if not items:
        raise ValueError("montage needs at least one item")
    if labels is not None:
        labels = [str(label) for label in labels]
        if len(labels) != len(items):
            raise ValueError(f"got {len(labels)} labels for {len(items)} items")
    ncols = len(items) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    nrows = -(-len(items) // ncols)
    maps = [it for it in items if isinstance(it, Heatmap)]
    vmax = shared_vmax(maps) if shared and maps else None
    colorbar = colorbar and bool(maps)
    # with one scale per map, every map says its own range on a line under it
    ranges = [bar.format_value(np.max(np.abs(it.relevance))) if isinstance(it, Heatmap) else None
              for it in items] if colorbar and vmax is None else None
    cells = [_cell(it, cmap, vmax, overlay) for it in items]
    if cell_size is None:
        cell_size = max(max(c.shape[0], c.shape[1]) for c in cells)
        cell_size = max(cell_size, 96)  # small maps (MNIST) are enlarged to be seen
    lab = label_height if labels is not None else 0
    under = label_height if ranges is not None else 0
    row_height = cell_size + lab + under + pad
    height = nrows * row_height + pad
    width = ncols * (cell_size + pad) + pad
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for k, cell in enumerate(cells):
        r, c = divmod(k, ncols)
        scale = cell_size / max(cell.shape[0], cell.shape[1])
        h = max(1, round(cell.shape[0] * scale))
        w = max(1, round(cell.shape[1] * scale))
        y = pad + r * row_height + lab
        x = pad + c * (cell_size + pad)
        canvas[y:y + h, x:x + w] = _resize_nearest(cell, h, w)
    captions = []  # (x, y, text)
    for k in range(len(items)):
        r, c = divmod(k, ncols)
        x, y = pad + c * (cell_size + pad), pad + r * row_height
        if labels is not None:
            captions.append((x, y, labels[k]))
        if ranges is not None and ranges[k] is not None:
            captions.append((x, y + lab + cell_size, f"max|R| {ranges[k]}"))
    if captions:
        canvas = _draw_captions(canvas, captions, cell_size)
    if colorbar:
        note = "one scale for all maps" if vmax is not None else "each map on its own scale"
        strip = bar.colorbar(max(width, bar.MIN_WIDTH), cmap=cmap, vmax=vmax, note=note)
        wide = np.full((height, strip.shape[1], 3), 255, dtype=np.uint8)
        wide[:, :width] = canvas
        canvas = np.concatenate([wide, strip], axis=0)
    if path is not None:
        save_png(canvas, path)
    return canvas


def _draw_captions(canvas, captions, max_width):
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for x, y, text in captions:
        # shorten captions that would overflow their cell
        while text and draw.textlength(text, font=font) > max_width:
            text = text[:-4] + "..." if len(text) > 4 else ""
        draw.text((x, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(img)
