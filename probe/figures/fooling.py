"""Figures of fooling images: targets × samples from noise, and original | change | fooled
triplets from data, with the change magnified on a diverging scale centred on 0.

Both draw from a fooling result (probe.analysis.fooling) and class names only: its `pixels`
(M, C, H, W) uint8, `target` (M,), `p_saved` (M,) (p(target) of each image saved as an 8-bit
PNG and read back) and `confidence`; from data also `original`, `source_label` and
`p_source_original`."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from probe.figures.style import (CORRECT, DIVERGING, FULL_WIDTH, SMALL_FONT, WRONG, apply_style,
                                 class_labels, show_image)

LINE = 1.45 * SMALL_FONT / 72  # inches per line of 8 pt text
CHAR_WIDTH = 0.6 * SMALL_FONT / 72
PAGE_HEIGHT = 9.0  # inches of figure per page


def _p(p: float) -> str:
    """0.99347 → ".9934": four digits, rounded down, so that a probability just under the goal
    never shows as the goal, and 0.99996 shows as ".9999", not "1.0000"."""
    if p >= 0.99995:
        return ">.9999"  # float32 softmax saturates at 1.0 near here
    return f"{math.floor(p * 1e4) / 1e4:.4f}".removeprefix("0")


def _rows_by_target(target) -> list[tuple[int, list[int]]]:
    """[(target, [positions])] in the order the targets first appear."""
    rows: dict[int, list[int]] = {}
    for i, t in enumerate(target.tolist()):
        rows.setdefault(int(t), []).append(i)
    return list(rows.items())


def _paged(rows: list, row_height: float, head: float):
    per_page = max(1, int((PAGE_HEIGHT - head) / row_height + 1e-6))
    return [rows[i:i + per_page] for i in range(0, len(rows), per_page)]


@dataclass
class _Layout:
    """Where a fooling figure puts things, in inches: `pages` of rows [(target, positions)]."""
    width: float
    head: float  # title and legend
    row_h: float
    img_w: float
    img_h: float
    cell_w: float  # one image and its gap (noise), one triplet (data)
    label_w: float  # the row labels (noise); the gap between triplets (data)
    legend: str
    pages: list


def _noise_layout(result, names: list[str], title: str) -> _Layout:
    rows = _rows_by_target(result.target)
    n = max(len(r[1]) for r in rows)
    label_w = max(0.35, max(len(names[t]) for t, _ in rows) * CHAR_WIDTH + 0.1)
    h, w = result.pixels.shape[2:]
    cell_w = min(0.75, (FULL_WIDTH - label_w) / n)
    img_w = cell_w * 0.9
    note = (f"rows: target class; p: the target's probability after saving as an 8-bit PNG "
            f"(goal ≥ {result.confidence:g})")
    if len(note) * CHAR_WIDTH > label_w + n * max(cell_w, 12 * CHAR_WIDTH):
        note = note.replace("; ", "\n", 1)
    head = (0.3 if title else 0.05) + (note.count("\n") + 1) * LINE + 0.08
    # Every target on one page where the images can stay ≥ 0.4 in: shrink them to fit.
    fit_h = (PAGE_HEIGHT - head) / len(rows) - LINE - 0.06
    img_w = max(min(img_w, fit_h * w / h), min(img_w, 0.4))
    cell_w = max(img_w / 0.9, 12 * CHAR_WIDTH)  # room for "p = .9999"
    img_h = img_w * h / w
    row_h = img_h + LINE + 0.06
    return _Layout(label_w + n * cell_w, head, row_h, img_w, img_h, cell_w, label_w, note,
                   _paged(rows, row_h, head))


def noise_page_count(result, names, *, title: str = "") -> int:
    """The pages noise_figures draws for `result` (without drawing them)."""
    return len(_noise_layout(result, class_labels(names), title).pages)


def _pages(result, names, title: str, layout, draw_row) -> list:
    """The figures of a layout (`layout(result, names, title)` → _Layout), page by page, each row
    drawn by draw_row(fig, lay, names, target, positions, top, height), its top in inches."""
    import matplotlib.pyplot as plt
    apply_style()
    names = class_labels(names)
    lay = layout(result, names, title)
    figs = []
    for page_no, page in enumerate(lay.pages):
        height = lay.head + len(page) * lay.row_h
        fig = plt.figure(figsize=(lay.width, height))
        for r, (t, positions) in enumerate(page):
            draw_row(fig, lay, names, t, positions, height - lay.head - r * lay.row_h, height)
        if title:
            suffix = f" (page {page_no + 1} of {len(lay.pages)})" if len(lay.pages) > 1 else ""
            fig.text(0.5, 1 - 0.06 / height, title + suffix, ha="center", va="top")
        fig.text(0.5, 1 - (0.27 if title else 0.04) / height, lay.legend, ha="center", va="top",
                 fontsize=SMALL_FONT, color="0.3", linespacing=1.3)
        figs.append(fig)
    return figs


def noise_figures(result, names, *, title: str = ""):
    """One row per target, one column per image, each with p(target) of its 8-bit image (green at
    or above the confidence, red below). names: the class names (ClassNames, a list or a count).
    Returns a list of Figures (one unless it is very tall)."""

    def row(fig, lay: _Layout, names, t: int, positions, top: float, height: float) -> None:
        fig.text((lay.label_w - 0.08) / lay.width, (top - lay.img_h / 2) / height, names[t], ha="right",
                 va="center", fontsize=SMALL_FONT + 1)
        for col, i in enumerate(positions):
            left = lay.label_w + col * lay.cell_w + (lay.cell_w - lay.img_w) / 2
            ax = fig.add_axes((left / lay.width, (top - lay.img_h) / height, lay.img_w / lay.width,
                               lay.img_h / height))
            show_image(ax, result.pixels[i])
            p = float(result.p_saved[i])
            text = _p(p)
            ax.text(0.5, -0.04, f"p > {text[1:]}" if text.startswith(">") else f"p = {text}",
                    transform=ax.transAxes, ha="center", va="top", fontsize=SMALL_FONT,
                    color=CORRECT if p >= result.confidence else WRONG)
    return _pages(result, names, title, _noise_layout, row)


def _change_map(delta: np.ndarray) -> np.ndarray:
    """(C, H, W) signed change → (H, W): the change itself for one channel, the mean over the
    channels for colour images."""
    return delta[0] if delta.shape[0] == 1 else delta.mean(0)


def _level(value: float) -> str:
    """A change in pixel units as the 8-bit steps it is made of: 0.102 → "26/255"."""
    return f"{round(value * 255)}/255"


GAP, GROUP_GAP = 0.03, 0.12  # between the images of a triplet, between triplets


def _dataset_layout(result, names: list[str], title: str) -> _Layout:
    c, h, w = result.pixels.shape[1:]
    by_target = _rows_by_target(result.target)
    longest = max(len(f"{names[int(s)]} → {names[int(t)]}") for s, t in zip(result.source_label, result.target))
    min_trip = max(3 * 0.42 + 2 * GAP, longest * CHAR_WIDTH + 0.05)  # "±26/255" fits under 0.42 in
    per_row = max(1, min(max(len(p) for _, p in by_target),
                         int((FULL_WIDTH + GROUP_GAP) // (min_trip + GROUP_GAP))))
    trip_w = min((FULL_WIDTH - (per_row - 1) * GROUP_GAP) / per_row, 3 * 0.8 + 2 * GAP)
    img_w = (trip_w - 2 * GAP) / 3
    rows = []  # (target, positions) chunks of at most per_row
    for t, positions in by_target:
        rows += [(t, positions[i:i + per_row]) for i in range(0, len(positions), per_row)]
    head = 0.68 if title else 0.45
    # Every row on one page where the images can stay ≥ 0.36 in: shrink them (not the text) to fit.
    fit_h = (PAGE_HEIGHT - head) / len(rows) - 2 * LINE - 0.06
    img_w = max(min(img_w, fit_h * w / h), min(img_w, 0.36))
    img_h = img_w * h / w
    row_h = LINE + img_h + LINE + 0.06
    legend = ("original (p of its class) | change, magnified: red brighter, blue darker"
              + ("" if c == 1 else " (mean over channels)")
              + f"\non a scale of ± the value under it | fooled (p of the target after saving, "
              f"goal ≥ {result.confidence:g})")
    return _Layout(per_row * trip_w + (per_row - 1) * GROUP_GAP, head, row_h, img_w, img_h, trip_w, GROUP_GAP,
                   legend, _paged(rows, row_h, head))


def dataset_page_count(result, names, *, title: str = "") -> int:
    """The pages dataset_figures draws for `result` (without drawing them)."""
    return len(_dataset_layout(result, class_labels(names), title).pages)


def dataset_figures(result, names, *, title: str = ""):
    """original | change | fooled for each image, grouped by target (one or more rows each). The
    change is magnified: a diverging map centred on 0 (red brighter, blue darker) whose scale,
    ±its largest value, is printed under it. names: the class names (ClassNames, a list or a
    count). Returns a list of Figures."""

    def row(fig, lay: _Layout, names, t: int, positions, top: float, height: float) -> None:
        for col, i in enumerate(positions):
            x0 = col * (lay.cell_w + lay.label_w)
            fig.text((x0 + lay.cell_w / 2) / lay.width, (top - 0.02) / height,
                     f"{names[int(result.source_label[i])]} → {names[t]}", ha="center", va="top",
                     fontsize=SMALL_FONT)
            bottom = top - LINE - lay.img_h
            pad = (lay.cell_w - 3 * lay.img_w - 2 * GAP) / 2  # images shrunk to fit the page: centred
            axes = [fig.add_axes(((x0 + pad + k * (lay.img_w + GAP)) / lay.width, bottom / height,
                                  lay.img_w / lay.width, lay.img_h / height)) for k in range(3)]
            _triplet(axes, result, i)
    return _pages(result, names, title, _dataset_layout, row)


def _triplet(axes, result, i: int) -> None:
    """Image i's original (with p of its class), change and fooled image (with p of the target)."""
    show_image(axes[0], result.original[i])
    delta = (result.pixels[i].float() - result.original[i].float()).numpy() / 255
    change = _change_map(delta)
    changed = bool(np.abs(delta).max() > 0)  # no change: the search found nothing
    scale = float(np.abs(change).max()) or 1 / 255
    axes[1].imshow(change, cmap=DIVERGING, vmin=-scale, vmax=scale, interpolation="none")
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    axes[1].grid(False)
    for side in axes[1].spines.values():
        side.set_visible(False)
    show_image(axes[2], result.pixels[i])
    p_tgt = float(result.p_saved[i])
    kw = dict(ha="center", va="top", fontsize=SMALL_FONT)
    axes[0].text(0.5, -0.04, _p(float(result.p_source_original[i])), transform=axes[0].transAxes,
                 color="0.2", **kw)
    scale_text = (f"±{_level(scale)}" if delta.shape[0] == 1 else f"±{scale:.3f}") if changed else "none found"
    axes[1].text(0.5, -0.04, scale_text, transform=axes[1].transAxes, color="0.2", **kw)
    axes[2].text(0.5, -0.04, _p(p_tgt), transform=axes[2].transAxes, fontweight="bold",
                 color=CORRECT if p_tgt >= result.confidence else WRONG, **kw)
