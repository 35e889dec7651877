"""Figures of attacks: accuracy against ε (several models on one plot, 95% intervals as bands),
and the adversarial examples of one image per class at a few ε."""
from __future__ import annotations

import math

import numpy as np

from probe.figures.style import (CORRECT, FULL_WIDTH, PALETTE, SMALL_FONT, WRONG, apply_style, canvas,
                                 class_labels, fit_names, new_figure, place_image, text_width)

LINE = 1.45 * SMALL_FONT / 72
NORM_NAMES = {"linf": "L∞", "l2": "L2"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
CURVE_WIDTH = 0.9  # of the text width: room for 13+ ε labels


def eps_label(eps: float, in_255: bool) -> str:
    """0.0313… → "8/255" when the dataset's ε are conventionally in 255ths; else 0.3 as it is, a
    whole number of 255ths that no short decimal writes as k/255 (1/255 given to the Python
    API), any other ε to 3 digits."""
    if eps == 0:
        return "0"
    whole_255 = abs(eps * 255 - round(eps * 255)) < 1e-6
    if in_255 and whole_255:
        return f"{round(eps * 255)}/255"
    short = f"{eps:.4g}"
    if float(short) == eps:  # 0.3, 0.01
        return short
    return f"{round(eps * 255)}/255" if whole_255 else f"{eps:.3g}"  # not 0.00392157


def robustness_figure(curves, *, norm: str = "linf", targeted: bool = False, in_255: bool = False,
                      title: str = ""):
    """Accuracy (%) against ε, one line per model with its 95% Wilson interval as a band.
    curves: [(label, points)], each point a dict with eps, accuracy and ci95 (as
    RobustnessResult holds them), all on the same ε values. The axis starts at 0%, so that a
    collapse looks like one. An uneven grid (0 to 0.1 in 0.01 steps, then 0.2, 0.3) is drawn on
    evenly spaced ticks, its wide steps dotted; tick labels are thinned where they would touch."""
    width = FULL_WIDTH * CURVE_WIDTH
    fig, ax = new_figure(width, width * 0.5)
    eps = [p["eps"] for p in curves[0][1]]
    uneven = _uneven(eps)
    x = np.arange(len(eps), dtype=float) if uneven else np.asarray(eps, dtype=float)
    wide = _wide_steps(eps) if uneven else np.zeros(max(0, len(eps) - 1), dtype=bool)
    for k, (label, pts) in enumerate(curves):
        acc = np.array([100 * p["accuracy"] for p in pts])
        colour = PALETTE[k % len(PALETTE)]
        ax.fill_between(x, [100 * p["ci95"][0] for p in pts], [100 * p["ci95"][1] for p in pts],
                        color=colour, alpha=0.2, linewidth=0)
        for i in range(len(x) - 1):  # a dotted segment where the evenly spaced axis hides a wide step
            ax.plot(x[i:i + 2], acc[i:i + 2], color=colour, linewidth=1.2, linestyle=":" if wide[i] else "-")
        ax.plot(x, acc, linestyle="none", marker=MARKERS[k % len(MARKERS)], color=colour, markersize=3,
                markeredgewidth=0.5, markeredgecolor="white")
    _eps_ticks(ax, x, [eps_label(e, in_255) for e in eps], width * ax.get_position().width)
    ax.set_xlabel(f"ε ({NORM_NAMES[norm]}, pixel values in [0, 1])"
                  + ("; evenly spaced ticks, wider steps dotted" if wide.any() else ""))
    ax.set_ylabel("accuracy (%), targeted attack" if targeted else "accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_xlim(x[0] - 0.02 * (x[-1] - x[0] or 1), x[-1] + 0.02 * (x[-1] - x[0] or 1))
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles = [Line2D([], [], color=PALETTE[k % len(PALETTE)], marker=MARKERS[k % len(MARKERS)], markersize=3,
                      linewidth=1.2, markeredgewidth=0.5, markeredgecolor="white") for k in range(len(curves))]
    labels = [f"{label} (clean {100 * pts[0]['accuracy']:.2f}%)" for label, pts in curves]
    handles.append(Patch(color="0.5", alpha=0.3, linewidth=0))
    labels.append("95% interval (Wilson)")
    # Below the axes: inside, the legend would cover some model's curve. In one row where it fits.
    one_row = sum(text_width(t) + 0.6 for t in labels) <= width
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.22),
              ncol=len(labels) if one_row else 1, frameon=False)
    if title:
        ax.set_title(title)
    return fig


def _uneven(eps) -> bool:
    """ε values whose spacing differs a lot (0, 0.01, …, 0.1, 0.2, 0.3): evenly spaced ticks read
    better than a true scale where the small values pile up at 0."""
    gaps = np.diff(eps)
    return len(gaps) > 1 and gaps.max() > 4 * gaps.min()


def _wide_steps(eps) -> np.ndarray:
    """(E − 1,) bool: the steps of the grid more than 1.5× its usual (median) step."""
    gaps = np.diff(eps)
    return gaps > 1.5 * np.median(gaps)


def _eps_ticks(ax, x, labels: list[str], axis_in: float) -> None:
    """A tick at every ε; a label at every `stride`-th (the first and the last always) so that
    no two labels are closer than their width. axis_in: the axes' width in inches."""
    span = (x[-1] - x[0]) or 1.0
    gap = np.diff(x).min() / span * axis_in * 0.96 if len(x) > 1 else axis_in  # 0.96: the x margins
    need = max(text_width(s) for s in labels) + 0.1
    stride = max(1, math.ceil(need / gap))
    keep = {i for i in range(0, len(x), stride)} | {len(x) - 1}
    if stride > 1 and len(x) - 1 - max(i for i in keep if i < len(x) - 1) < stride:
        keep.discard(max(i for i in keep if i < len(x) - 1))  # the last label's neighbour would touch it
    ax.set_xticks(x, [s if i in keep else "" for i, s in enumerate(labels)])


def examples_figure(images, labels, predicted, p, eps, classes, *, in_255: bool = False, title: str = ""):
    """Columns: one image each (one per class); rows: ε (the first the clean image), each image
    attacked afresh at its ε. Under each, the class the model gives it and that class's
    probability, green when right, red (bold) when wrong; the true class heads each column. The
    probability goes on a second line, and then a name too long for its column is cut ("automob."),
    where the names need the room; more than ~12 images wrap into blocks below each other.
    images: (k, X, C, H, W) float [0, 1] or uint8; labels (k,) class indices; predicted and p:
    (k, X); eps: the X values; classes: ClassNames, names or a count. None when there is no image."""
    apply_style()
    k, e = images.shape[:2]
    if k == 0:
        return None
    # the corner names the columns: the row labels say ε themselves, so "0 1 2 …" never reads as ε
    rows = ["clean" if value == 0 else f"ε = {eps_label(value, in_255)}" for value in eps]
    corner = "true class"
    label_w = max(text_width(r) for r in [*rows, corner]) + 0.12
    full = class_labels(classes, short=True)
    cols, cell_w, two_lines = _grid(k, max(text_width(n, bold=True) for n in full), FULL_WIDTH - 0.05 - label_w)
    names = fit_names(full, cell_w - 0.04, bold=True, mark=".")
    blocks = math.ceil(k / cols)
    img_w = cell_w - 0.06
    img_h = img_w * images.shape[-2] / images.shape[-1]
    row_h = img_h + LINE * (2 if two_lines else 1) + 0.06
    block_h = LINE + 0.04 + e * row_h
    head = 0.3 if title else 0.0
    width, height = label_w + cols * cell_w, head + blocks * block_h + 0.12 * (blocks - 1)
    fig, ax = canvas(width, height)
    for i in range(k):
        top = height - head - (i // cols) * (block_h + 0.12)
        left = label_w + (i % cols) * cell_w + 0.03
        y = int(labels[i])
        ax.text(left + img_w / 2, top, names[y], ha="center", va="top", fontsize=SMALL_FONT)
        for row in range(e):
            bottom = top - LINE - 0.04 - row * row_h - img_h
            if i % cols == 0:
                ax.text(label_w - 0.08, bottom + img_h / 2, rows[row], ha="right", va="center", fontsize=SMALL_FONT)
            place_image(ax, images[i, row], (left, left + img_w, bottom, bottom + img_h))
            _verdict(ax, (left + img_w / 2, bottom - 0.04 * img_h), names, int(predicted[i][row]), float(p[i][row]),
                     y, two_lines)
        if i % cols == 0:
            ax.text(label_w - 0.08, top, corner, ha="right", va="top", fontsize=SMALL_FONT, color="0.35")
    if title:
        fig.text(0.5, 1 - 0.04 / height, title, ha="center", va="top")
    return fig


def _grid(k: int, longest: float, room: float) -> tuple[int, float, bool]:
    """(columns per block, cell width in inches, whether the probability goes on a second line):
    k columns sharing the room (blocks of even length where a column would be under 0.45 in),
    the probability beside the name when the longest name and it fit in a column."""
    cols = k if room / k >= 0.45 else math.ceil(k / math.ceil(k / int(room // 0.45)))
    cell = min(room / cols, 1.0)
    return cols, cell, longest + text_width(" .99", bold=True) + 0.08 > cell


def _verdict(ax, at: tuple[float, float], names, pred: int, p: float, truth: int, two_lines: bool) -> None:
    """The class the model gives and its probability under an image (`at`: its top centre): green
    right, red wrong."""
    prob = f"{p:.2f}".replace("0.", ".", 1)  # ".99", "1.00"
    ax.text(*at, f"{names[pred]}{chr(10) if two_lines else ' '}{prob}", ha="center", va="top", fontsize=SMALL_FONT, linespacing=1.1,
            color=CORRECT if pred == truth else WRONG, fontweight="normal" if pred == truth else "bold")
