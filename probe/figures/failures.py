"""Figures of where a model fails: the misclassified grid (the seed's layout), the confusion
matrix, per-class accuracy with its interval."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from probe.data.spec import ClassNames
from probe.figures.style import (CORRECT, FULL_WIDTH, MAX_FIGURE_HEIGHT, PALETTE, SEQUENTIAL, SMALL_FONT, WRONG,
                                 apply_style, canvas, class_labels, fit_names, new_figure, place_image, text_width)

LINE = 1.5 * SMALL_FONT / 72  # inches per line of 8 pt text
PAGE_HEIGHT = 9.0  # inches of grid per page (a thesis page's text height)
NAME_WIDTH = 0.75  # inches of a class name in a grid cell, ~12 characters (the full names are in results.json)
MAX_COLUMNS = 10


def _p(p: float) -> str:
    return f"{p:.2f}".removeprefix("0")  # ".98": narrow cells need every character


@dataclass(frozen=True)
class _GridLayout:
    names: list[str]  # the class names as the cells write them
    cols: int
    cell_w: float
    img_w: float
    img_h: float
    lines: int  # lines of text a cell holds: the true class above; below, the prediction and the
    #             second choice side by side (2) or, where long names do not fit, one under the other (3)
    per_page: int

    @property
    def cell_h(self) -> float:
        return self.img_h + self.lines * LINE + 0.06


def _grid_layout(classes, h: int, w: int, per_page: int) -> _GridLayout:
    """The grid's columns, cells and images per page: a cell as wide as its labels need, measured
    in the figures' font (the prediction in bold, "name 1.00", beside the second choice, "name .50":
    a second choice never has more than half), or the two one under the other where names are so
    long that fewer than 5 columns would fit and stacking puts more images on a page (CIFAR-10's
    "automobile": 5 columns instead of 3); pages no taller than a thesis page."""
    names = fit_names(class_labels(classes, short=True), NAME_WIDTH)
    bold = max(text_width(f"{x} 1.00", bold=True) for x in names)
    plain = max(text_width(f"{x} .50") for x in names)

    def layout(lines: int, need: float) -> _GridLayout:
        cols = max(1, min(MAX_COLUMNS, int(FULL_WIDTH // max(0.6, need / 0.92))))
        cell_w = FULL_WIDTH / cols
        img_w = cell_w * 0.92
        img_h = img_w * h / w
        rows_fit = max(1, int(PAGE_HEIGHT // (img_h + lines * LINE + 0.06)))
        return _GridLayout(names, cols, cell_w, img_w, img_h, lines, max(1, min(per_page, cols * rows_fit)))
    side_by_side, stacked = layout(2, bold + plain + 0.02), layout(3, max(bold, plain))  # 0.02 in: 1.5 pt apart
    if side_by_side.cols >= 5 or side_by_side.per_page >= stacked.per_page:
        return side_by_side  # the seed's layout, where short names leave room for it
    return stacked


def grid_pages(n_wrong: int, image_size: tuple[int, int], classes, per_page: int = 100) -> int:
    """How many pages misclassified_pages draws for n_wrong images of (H, W)."""
    return math.ceil(n_wrong / _grid_layout(classes, *image_size, per_page).per_page)


def misclassified_pages(records: list[dict], images, classes, *, per_page: int = 100, title: str = ""):
    """The wrong images in pages of at most `per_page` (fewer when a page would be taller than a
    thesis page): the true class upper left, the prediction lower left (red), the second choice
    lower right (or under the prediction, for long names), each with its probability. records:
    one per wrong image (class slugs under true/predicted/second, probabilities p_true/p_predicted/
    p_second); images: (M, C, H, W), one per record. Returns a list of Figures (none if no image is wrong)."""
    apply_style()
    names_of = ClassNames.of(classes)
    n = len(records)
    if n == 0:
        return []
    lay = _grid_layout(classes, *images.shape[-2:], per_page)
    names, cols, per_page = lay.names, lay.cols, lay.per_page
    pages = []
    for page, start in enumerate(range(0, n, per_page)):
        chunk = range(start, min(n, start + per_page))
        head = 0.3 if title else 0.0
        H = math.ceil(len(chunk) / cols) * lay.cell_h + head
        W = min(cols, len(chunk)) * lay.cell_w  # a page of fewer images than columns: as wide as they are
        fig, ax = canvas(W, H)
        kw = dict(fontsize=SMALL_FONT)
        for slot, j in enumerate(chunk):
            r, c = divmod(slot, cols)
            left = c * lay.cell_w + (lay.cell_w - lay.img_w) / 2
            bottom = H - head - r * lay.cell_h - LINE - lay.img_h
            place_image(ax, images[j], (left, left + lay.img_w, bottom, bottom + lay.img_h))
            rec = records[j]

            def label(key: str, p: str) -> str:
                return f"{names[names_of.index(rec[key])]} {_p(rec[p])}"
            top, below = bottom + lay.img_h * 1.02, bottom - lay.img_h * 0.03
            ax.text(left, top, label("true", "p_true"), ha="left", va="bottom", color="black", **kw)
            ax.text(left, below, label("predicted", "p_predicted"), ha="left", va="top", color=WRONG,
                    fontweight="bold", **kw)
            if lay.lines == 2:
                ax.text(left + lay.img_w, below, label("second", "p_second"), ha="right", va="top", color="0.35", **kw)
            else:
                ax.text(left, below - LINE, label("second", "p_second"), ha="left", va="top", color="0.35", **kw)
        if title:
            pages_total = math.ceil(n / per_page)
            suffix = f" (page {page + 1} of {pages_total})" if pages_total > 1 else ""
            fig.text(0.5, 1 - 0.05 / H, title + suffix, ha="center", va="top")
        pages.append(fig)
    return pages


def _cell_text(value: float, normalized: bool) -> str:
    """A cell's number: a count, or a percentage that never rounds a mistake to 0 or a miss to 100."""
    if not normalized:
        return f"{int(value):,}"
    if 0 < value < 0.05:
        return "<0.1"
    if 99.95 <= value < 100:
        return ">99.9"
    return "100" if value == 100 else f"{value:.1f}"


LINE_HEIGHT = 1.25 * SMALL_FONT / 72  # inches a label of 8 pt text needs across its baseline


def confusion_figure(matrix, classes, *, normalized: bool = False):
    """A heatmap of the confusion matrix (row = true class), counts or, normalized, each row as a
    percentage of its true class. The diagonal (correct) is shown as numbers on grey; the
    mistakes off it are coloured on their own scale, from 0 to the largest mistake, so their
    structure shows however accurate the model is; cells with no image are white.

    Many classes (a folder dataset's 40): the numbers are printed only where they fit their
    cells, and the axes name every n-th class where a cell is too tight for a name (said in the
    axis labels): 40 classes drew numbers and names over each other."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator
    counts = np.asarray(matrix, dtype=np.int64)  # (K, K): row = true class
    k = len(counts)
    data = counts / np.maximum(1, counts.sum(1, keepdims=True)) * 100 if normalized else counts.astype(float)
    off = ~np.eye(k, dtype=bool)
    top = data[off].max(initial=0)
    # The colour map without its near-white end: one mistake is never mistaken for none.
    cmap = ListedColormap(sns.color_palette(SEQUENTIAL, 256)[40:])
    size = min(FULL_WIDTH, 2.2 + 0.42 * k)
    annot = np.vectorize(lambda v: _cell_text(v, normalized))(data)
    annot[counts.sum(1) == 0, :] = "—"  # a class with no image: no row to speak of
    label = "mistakes, % of the true class" if normalized else "mistakes (images)"

    def draw(numbers: bool):
        fig, ax = new_figure(size, size * 0.92)
        sns.heatmap(data, ax=ax, cmap=cmap, vmin=0, vmax=top or 1, annot=annot if numbers else False, fmt="",
                    square=True, linewidths=0.5 if k <= 30 else 0.0, linecolor="0.9", mask=~off | (counts == 0),
                    cbar=bool(top), cbar_kws={"label": label, "shrink": 0.8}, annot_kws={"fontsize": SMALL_FONT})
        ax.apply_aspect()  # square cells: the axes' final size, to measure a cell by
        return fig, ax, ax.get_position().width * fig.get_figwidth() / k
    widest = max(text_width(t) for t in annot.flatten())

    def fits(cell: float) -> bool:
        return widest <= 0.92 * cell and SMALL_FONT / 72 <= 0.8 * cell
    numbers = fits(0.6 * size / k)  # a guess at the cell (the axes take ~60% of the width); checked below
    fig, ax, cell = draw(numbers)
    if fits(cell) != numbers:  # the guess was wrong: drawn again (seaborn colours each number against its cell)
        plt.close(fig)
        numbers = not numbers
        fig, ax, cell = draw(numbers)
    for i in range(k):  # the diagonal: numbers on grey, outside the colour scale
        ax.add_patch(Rectangle((i, i), 1, 1, facecolor="0.88", edgecolor="0.9", linewidth=0.5 if k <= 30 else 0.0))
        if numbers:
            ax.text(i + 0.5, i + 0.5, annot[i, i], ha="center", va="center", fontsize=SMALL_FONT, color="0.15")
    if top and not normalized:
        ax.collections[0].colorbar.locator = MaxNLocator(integer=True)
        ax.collections[0].colorbar.update_ticks()
    ax.set_title(("Confusion matrix (row-normalized, %)" if normalized else "Confusion matrix (counts)")
                 + ("" if top else ": no mistakes") + ("" if numbers else "; cells too small for numbers"))
    _confusion_axes(ax, class_labels(classes), k, cell)
    return fig


def _confusion_axes(ax, names: list[str], k: int, cell: float) -> None:
    """Class names on both axes: at 45° where long names have the room, else upright (90°), and
    every n-th class only where cells are narrower than a line of text."""
    long = max(map(len, names)) > 2
    slanted = long and cell >= 1.45 * LINE_HEIGHT
    every = max(1, math.ceil(LINE_HEIGHT / cell))
    ticks = np.arange(0, k, every)
    ax.set_xticks(ticks + 0.5, [names[i] for i in ticks], rotation=(45 if slanted else 90) if long else 0,
                  ha="right" if slanted else "center", va="top", rotation_mode="anchor" if slanted else "default")
    ax.set_yticks(ticks + 0.5, [names[i] for i in ticks], rotation=0)
    named = "" if every == 1 else f"; every {_ordinal(every)} class named"
    ax.set_xlabel(f"predicted class (diagonal, grey: correct{named})")
    ax.set_ylabel("true class" + ("" if every == 1 else f" (every {_ordinal(every)} named)"))
    ax.set_facecolor("white")  # cells with no image
    ax.grid(False)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


LEGEND_BELOW = 0.42  # inches from the axes' bottom to a legend under them: tick labels and x label


def per_class_figure(per_class: list[dict], classes):
    """Accuracy per class as a point with its 95% Wilson interval; the axis spans the data
    (a bar from 0 would flatten 99.2% against 99.9%), the overall accuracy as a line."""
    names = class_labels(classes)
    k = len(per_class)
    # 0.22 in a class, closer (down to a line of text) where that would pass a page's 8.2 in
    row = max(1.1 * LINE_HEIGHT, min(0.22, (MAX_FIGURE_HEIGHT - 0.9) / max(k, 1)))
    fig, ax = new_figure(FULL_WIDTH * 0.75, 0.9 + row * k)
    acc = [np.nan if r["accuracy"] is None else 100 * r["accuracy"] for r in per_class]
    lo = [np.nan if r["ci95"] is None else 100 * r["ci95"][0] for r in per_class]
    hi = [np.nan if r["ci95"] is None else 100 * r["ci95"][1] for r in per_class]
    y = np.arange(k)
    err = np.clip([np.subtract(acc, lo), np.subtract(hi, acc)], 0, None)  # float round-off at 100%
    ax.errorbar(acc, y, xerr=err, fmt="o", color=PALETTE[0], ecolor="0.45", capsize=2.5,
                markersize=4, label="accuracy, 95% interval (Wilson)")
    total_correct = sum(r["correct"] for r in per_class)
    total = sum(r["n"] for r in per_class)
    if total:
        ax.axvline(100 * total_correct / total, color=CORRECT, linestyle="--", linewidth=1,
                   label=f"overall {100 * total_correct / total:.2f}%")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    finite = [v for v in lo if not math.isnan(v)]
    left = min(finite) if finite else 0
    span = max(100 - left, 0.1)
    ax.set_xlim(max(0, left - 0.06 * span), 100 + 0.04 * span)  # a point at 100% stays whole
    ax.set_xlabel("accuracy (%)")
    ax.set_ylabel("class")
    # Below the axes and their x label, at a distance in inches (a fraction of the axes' height put
    # it on the label of a 3-class figure); inside, the legend would cover the points of some class.
    axes_height = ax.get_position().height * fig.get_figheight()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -LEGEND_BELOW / axes_height), ncol=2, frameon=False)
    return fig
