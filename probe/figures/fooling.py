"""Figures of fooling images: the images from noise under their target class, and original |
change | fooled triplets from data, with the change magnified on a diverging scale centred on 0.

Both are grids laid out to the page: as many targets side by side as fit FULL_WIDTH (a target
with more images than a row holds takes several rows), the images as large as the width lets
them be, each page at most PAGE_HEIGHT tall (a one-column A4 or letter page with its caption);
more pages only where the images would otherwise be smaller than the smallest size.

Both draw from a fooling result (probe.analysis.fooling) and class names only: its `pixels`
(M, C, H, W) uint8, `target` (M,), `p_saved` (M,) (p(target) of each image saved as an 8-bit
PNG and read back) and `confidence`; from data also `original`, `source_label` and
`p_source_original`."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from probe.figures.style import (CORRECT, DIVERGING, FONT_SIZE, FULL_WIDTH, SMALL_FONT, WRONG, apply_style, canvas,
                                 class_labels, cut_to_fit, fit_names, text_width)

LINE = 1.45 * SMALL_FONT / 72  # inches per line of 8 pt text
TITLE_LINE = 1.45 * FONT_SIZE / 72
# Inches of figure per page: saved with savefig's padding (0.02 in each side) a page stays within
# FULL_WIDTH × 8.4 in, which with its caption fits a one-column A4 or letter page.
WIDTH, PAGE_HEIGHT = FULL_WIDTH - 0.05, 8.35
STEP = 0.01  # inches: the image sizes tried
# Image sizes (the longer side, inches): the smallest (to keep a figure on one page), the
# comfortable (rows are filled with images this large) and the largest.
NOISE_SIZES, DATA_SIZES = (0.4, 0.55, 0.9), (0.36, 0.44, 0.8)
P_WIDTH = 0.62  # inches: a noise cell is at least this wide ("p = .9999" is 0.55 in at 8 pt)
NOISE_GROUP_GAP = 0.15  # between the targets side by side in a row


def _p(p: float) -> str:
    """0.99347 → ".9934": four digits, rounded down, so that a probability just under the goal
    never shows as the goal, and 0.99996 shows as ".9999", not "1.0000"."""
    if p >= 0.99995:
        return ">.9999"  # float32 softmax saturates at 1.0 near here
    return f"{math.floor(p * 1e4) / 1e4:.4f}".removeprefix("0")


@functools.lru_cache(maxsize=64)
def _fitted(names: tuple[str, ...], inches: float, size: float) -> list[str]:
    """The class names cut to `inches` and told apart (fit_names), for headings of one width."""
    return fit_names(list(names), inches, size=size)


def _wrap(text: str, inches: float, size: float = SMALL_FONT) -> str:
    """text in lines of at most `inches` at `size` pt, broken between words (no-break spaces hold),
    and inside a word wider than a line."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and text_width(f"{lines[-1]} {word}", size) <= inches:
            lines[-1] += f" {word}"
            continue
        while len(word) > 1 and text_width(word, size) > inches:
            cut = max(1, len(cut_to_fit(word, inches, size=size, mark="")))
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return "\n".join(lines)


def _rows_by_target(target) -> list[tuple[int, list[int]]]:
    """[(target, [positions])] in the order the targets first appear."""
    rows: dict[int, list[int]] = {}
    for i, t in enumerate(target.tolist()):
        rows.setdefault(int(t), []).append(i)
    return list(rows.items())


def _flow(groups: list, cell_w: float, gap: float) -> list[list]:
    """Rows of groups [(target, positions)] side by side within WIDTH: whole groups while one
    fits a row (as many in a row as fit, the rows balanced), a group wider than a row cut in
    pieces of about equal length, one piece a row."""
    cols = max(1, int((WIDTH + 1e-9) // cell_w))
    n = max(len(p) for _, p in groups)
    if n > cols:
        size = math.ceil(n / math.ceil(n / cols))
        return [[(t, p[i:i + size])] for t, p in groups for i in range(0, len(p), size)]
    k = max(1, int((WIDTH + gap + 1e-9) // (n * cell_w + gap)))
    k = math.ceil(len(groups) / math.ceil(len(groups) / k))
    return [groups[i:i + k] for i in range(0, len(groups), k)]


def _row_width(row: list, cell_w: float, gap: float) -> float:
    return sum(len(p) for _, p in row) * cell_w + (len(row) - 1) * gap


@dataclass
class _Layout:
    """Where a fooling figure puts things, in inches: `pages` of rows, a row the groups
    [(target, positions)] side by side, `gap` between them; a cell (one image from noise, one
    triplet from data) is cell_w wide; the grid starts `left` of the figure's edge."""
    width: float
    head: float  # title and legend
    row_h: float
    img_w: float
    img_h: float
    cell_w: float
    gap: float
    left: float
    title: str  # wrapped
    legend: str  # wrapped
    pages: list


@dataclass
class _Cells:
    """What a figure's grid is made of: cell_w(image width) → a cell's width, row_h(image height)
    → a row's height, the image sizes (smallest, comfortable, largest), the gap between groups."""
    cell_w: object
    row_h: object
    sizes: tuple[float, float, float]
    gap: float


def _image_size(size: float, h: int, w: int) -> tuple[float, float]:
    """The longer side `size` → (width, height) at the image's aspect."""
    return size * min(1.0, w / h), size * min(1.0, h / w)


def _grid(groups: list, cells: _Cells, shape: tuple[int, int], title: str, legend: str) -> _Layout:
    """The rows that images of the comfortable size allow, or those of the smallest size where
    they take fewer pages; the rows shared out evenly among the pages; the images as large as the
    page's width and height then let them be (between the smallest and the largest size)."""
    lays = [_grid_at(flow, groups, cells, shape, title, legend) for flow in (cells.sizes[1], cells.sizes[0])]
    return min(lays, key=lambda lay: (len(lay.pages), -lay.img_w))


def _grid_at(flow: float, groups: list, cells: _Cells, shape: tuple[int, int], title: str, legend: str) -> _Layout:
    """_grid with rows of as many cells as fit with images `flow` inches."""
    (lo, _, hi), (h, w) = cells.sizes, shape
    sizes = [hi - i * STEP for i in range(int(round((hi - lo) / STEP)))] + [lo]
    rows = _flow(groups, cells.cell_w(_image_size(flow, h, w)[0]), cells.gap)

    def widest(size: float) -> float:
        return max(_row_width(r, cells.cell_w(_image_size(size, h, w)[0]), cells.gap) for r in rows)
    size = next((x for x in sizes if widest(x) <= WIDTH + 1e-9), lo)
    title, legend, head = _head(title, legend, widest(size))
    at_most = max(1, int((PAGE_HEIGHT - head) / cells.row_h(_image_size(lo, h, w)[1]) + 1e-6))
    per_page = math.ceil(len(rows) / math.ceil(len(rows) / at_most))  # rows per page, the pages even
    size = next((x for x in sizes if x <= size and head + per_page * cells.row_h(_image_size(x, h, w)[1])
                 <= PAGE_HEIGHT + 1e-9), lo)
    img_w, img_h = _image_size(size, h, w)
    grid_w = widest(size)
    width = max(grid_w, _caption_width(title, legend))
    pages = [rows[i:i + per_page] for i in range(0, len(rows), per_page)]
    return _Layout(width, head, cells.row_h(img_h), img_w, img_h, cells.cell_w(img_w), cells.gap,
                   (width - grid_w) / 2, title, legend, pages)


def _head(title: str, legend: str, grid_w: float) -> tuple[str, str, float]:
    """The title and legend wrapped to the grid's width (at least 4 in, at most the page's), and
    the height they take."""
    wide = min(WIDTH, max(grid_w, 4.0)) - 0.1  # a margin for the rasterizer's hinting
    title = _wrap(title, wide, FONT_SIZE) if title else ""
    legend = _wrap(legend, wide)
    lines = title.count("\n") + 1 if title else 0
    return title, legend, 0.06 + lines * TITLE_LINE + (legend.count("\n") + 1) * LINE + 0.1


def _caption_width(title: str, legend: str) -> float:
    return max([text_width(x, FONT_SIZE) for x in title.split("\n")] + [text_width(x) for x in legend.split("\n")])


def _placed(lay: _Layout, row: list):
    """(target, positions, x of its first cell) of each group of a row, left to right."""
    x = lay.left
    for t, positions in row:
        yield t, positions, x
        x += len(positions) * lay.cell_w + lay.gap


def _noise_layout(result, names: list[str], title: str) -> _Layout:
    cells = _Cells(cell_w=lambda img_w: max(img_w / 0.88, P_WIDTH),
                   row_h=lambda img_h: LINE + 0.04 + img_h + LINE + 0.1, sizes=NOISE_SIZES, gap=NOISE_GROUP_GAP)
    legend = (f"Each image under its target class, with p: the target's probability after saving as an "
              f"8-bit PNG and reading back (goal ≥ {result.confidence:g}; red: below it)")
    return _paged_grid(_rows_by_target(result.target), cells, tuple(result.pixels.shape[2:]), title, legend)


def _paged_grid(groups, cells: _Cells, shape, title: str, legend: str) -> _Layout:
    """_grid, again with "(page 1 of 3)" in the title where it takes several pages."""
    lay = _grid(groups, cells, shape, title, legend)
    if len(lay.pages) > 1 and title:  # no-break spaces: the mark stays on one line
        lay = _grid(groups, cells, shape, f"{title}{_mark(len(lay.pages), len(lay.pages))}", legend)
    return lay


def _mark(page: int, pages: int) -> str:
    return f"\u00a0(page\u00a0{page}\u00a0of\u00a0{pages})"


def noise_page_count(result, names, *, title: str = "") -> int:
    """The pages noise_figures draws for `result` (without drawing them)."""
    return len(_noise_layout(result, class_labels(names), title).pages)


def _pages(result, names, title: str, layout, draw_row) -> list:
    """The figures of a layout (`layout(result, names, title)` → _Layout), page by page, each
    drawn on one axes spanning the figure, in inches from its lower left corner (one axes, not
    one per image: a page of 120 images is drawn in a second, not ten); each row drawn by
    draw_row(ax, lay, names, row, top)."""
    apply_style()
    names = class_labels(names)
    lay = layout(result, names, title)
    figs = []
    for page_no, page in enumerate(lay.pages):
        height = lay.head + len(page) * lay.row_h
        fig, ax = canvas(lay.width, height)
        for r, row in enumerate(page):
            draw_row(ax, lay, names, row, height - lay.head - r * lay.row_h)
        top = height - 0.06
        if lay.title:
            n = len(lay.pages)
            text = lay.title if n == 1 else lay.title.rpartition(_mark(n, n))[0] + _mark(page_no + 1, n)
            ax.text(lay.width / 2, top, text, ha="center", va="top", fontsize=FONT_SIZE, linespacing=1.3)
            top -= (lay.title.count("\n") + 1) * TITLE_LINE
        ax.text(lay.width / 2, top, lay.legend, ha="center", va="top", fontsize=SMALL_FONT, color="0.3",
                linespacing=1.3)
        figs.append(fig)
    return figs


def _put(ax, image, left: float, bottom: float, lay: _Layout, **imshow) -> None:
    """An image at (left, bottom), lay.img_w × lay.img_h inches: (C, H, W) uint8 pixels in true
    values (never rescaled to their own range), or a 2-D map drawn with `imshow`'s colour map."""
    if image.ndim == 3:
        arr = image.detach().cpu().float().div(255).permute(1, 2, 0).numpy()  # (H, W, C)
        arr, imshow = (arr[:, :, 0], {"cmap": "gray", "vmin": 0, "vmax": 1}) if arr.shape[2] == 1 else (arr, {})
    else:
        arr = image
    ax.imshow(arr, extent=(left, left + lay.img_w, bottom, bottom + lay.img_h), aspect="auto",
              interpolation="none", **imshow)


def noise_figures(result, names, *, title: str = ""):
    """The images grouped by target class, as many targets side by side as fit the page's width,
    each image with p(target) of its 8-bit image saved and read back (green at or above the
    confidence, red below). names: the class names (ClassNames, a list or a count). Returns a
    list of Figures (one unless there are very many images)."""

    def row(ax, lay: _Layout, names, groups, top: float) -> None:
        for t, positions, x in _placed(lay, groups):
            span, inset = len(positions) * lay.cell_w, (lay.cell_w - lay.img_w) / 2
            ax.text(x + span / 2, top - 0.01, _fitted(tuple(names), span + 0.5 * lay.gap, SMALL_FONT + 1)[t], ha="center",
                    va="top", fontsize=SMALL_FONT + 1)
            if len(positions) > 1:  # the images under one heading
                ax.plot([x + inset, x + span - inset], [top - LINE - 0.02] * 2, color="0.6", linewidth=0.6)
            bottom = top - LINE - 0.04 - lay.img_h
            for col, i in enumerate(positions):
                left = x + col * lay.cell_w + inset
                _put(ax, result.pixels[i], left, bottom, lay)
                p = float(result.p_saved[i])
                text = _p(p)
                ax.text(left + lay.img_w / 2, bottom - 0.02, f"p > {text[1:]}" if text.startswith(">") else
                        f"p = {text}", ha="center", va="top", fontsize=SMALL_FONT,
                        color=CORRECT if p >= result.confidence else WRONG)
    return _pages(result, names, title, _noise_layout, row)


def _change_map(delta: np.ndarray) -> np.ndarray:
    """(C, H, W) signed change → (H, W): the change itself for one channel, the mean over the
    channels for colour images."""
    return delta[0] if delta.shape[0] == 1 else delta.mean(0)


def _steps(value: float) -> str:
    """A change in pixel units in whole 1/255 steps: 0.102 → "26" (a mean over channels rounded)."""
    return f"{value * 255:.0f}"


GAP, TRIPLET_GAP = 0.03, 0.12  # between the images of a triplet, between triplets (each names its target)


def _dataset_layout(result, names: list[str], title: str) -> _Layout:
    c, h, w = result.pixels.shape[1:]
    longest = max(text_width(f"{names[int(s)]} → {names[int(t)]}") for s, t in zip(result.source_label, result.target))
    label_w = min(longest + 0.04, 3 * DATA_SIZES[2] + 2 * GAP)
    cells = _Cells(cell_w=lambda img_w: max(3 * img_w + 2 * GAP, label_w) + TRIPLET_GAP,
                   row_h=lambda img_h: LINE + img_h + LINE + 0.06, sizes=DATA_SIZES, gap=0.0)
    legend = ("source → target: original (p of its class) | change, magnified"
              + ("" if c == 1 else " (channel mean)") + ": red brighter, blue darker, ± the number under "
              "it in 1/255 steps | fooled (p of the target after saving as an 8-bit PNG; goal ≥ "
              f"{result.confidence:g}, red: below)")
    return _paged_grid(_rows_by_target(result.target), cells, (h, w), title, legend)


def dataset_page_count(result, names, *, title: str = "") -> int:
    """The pages dataset_figures draws for `result` (without drawing them)."""
    return len(_dataset_layout(result, class_labels(names), title).pages)


def dataset_figures(result, names, *, title: str = ""):
    """original | change | fooled for each image, grouped by target, as many triplets side by
    side as fit the page's width. The change is magnified: a diverging map centred on 0 (red
    brighter, blue darker) whose scale, ±its largest value in 1/255 steps, is printed under it.
    names: the class names (ClassNames, a list or a count). Returns a list of Figures."""

    def row(ax, lay: _Layout, names, groups, top: float) -> None:
        for t, positions, x in _placed(lay, groups):
            for col, i in enumerate(positions):
                x0, inner = x + col * lay.cell_w + TRIPLET_GAP / 2, lay.cell_w - TRIPLET_GAP
                label = f"{names[int(result.source_label[i])]} → {names[t]}"
                ax.text(x0 + inner / 2, top - 0.02, cut_to_fit(label, inner + 0.02), ha="center", va="top",
                        fontsize=SMALL_FONT)
                pad = (inner - 3 * lay.img_w - 2 * GAP) / 2  # a label wider than the images: centred
                _triplet(ax, lay, result, i, [x0 + pad + k * (lay.img_w + GAP) for k in range(3)],
                         top - LINE - lay.img_h)
    return _pages(result, names, title, _dataset_layout, row)


def _triplet(ax, lay: _Layout, result, i: int, lefts: list[float], bottom: float) -> None:
    """Image i's original (with p of its class), change and fooled image (with p of the target),
    their left edges at `lefts`."""
    delta = (result.pixels[i].float() - result.original[i].float()).numpy() / 255
    change = _change_map(delta)
    changed = bool(np.abs(delta).max() > 0)  # no change: the search found nothing
    scale = float(np.abs(change).max()) or 1 / 255
    _put(ax, result.original[i], lefts[0], bottom, lay)
    _put(ax, change, lefts[1], bottom, lay, cmap=DIVERGING, vmin=-scale, vmax=scale)
    _put(ax, result.pixels[i], lefts[2], bottom, lay)
    p_tgt = float(result.p_saved[i])
    texts = [(_p(float(result.p_source_original[i])), {"color": "0.2"}),
             (f"±{_steps(scale)}" if changed else "none", {"color": "0.2"}),
             (_p(p_tgt), {"fontweight": "bold", "color": CORRECT if p_tgt >= result.confidence else WRONG})]
    for left, (text, style) in zip(lefts, texts):
        ax.text(left + lay.img_w / 2, bottom - 0.02, text, ha="center", va="top", fontsize=SMALL_FONT, **style)
