"""Figures of attacks: accuracy against ε (several models on one plot, 95% intervals), and the
adversarial examples of a few images at each ε."""
from __future__ import annotations

import numpy as np

from probe.figures.style import (CORRECT, FULL_WIDTH, PALETTE, SMALL_FONT, WRONG, apply_style,
                                 class_labels, new_figure, show_image)

LINE = 1.45 * SMALL_FONT / 72
CHAR_WIDTH = 0.6 * SMALL_FONT / 72
NORM_NAMES = {"linf": "L∞", "l2": "L2"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def eps_label(eps: float, in_255: bool) -> str:
    """0.0313… → "8/255" when the dataset's ε are conventionally eighths of 255ths; else 0.3."""
    if eps == 0:
        return "0"
    if in_255 and abs(eps * 255 - round(eps * 255)) < 1e-6:
        return f"{round(eps * 255)}/255"
    return f"{eps:g}"


def robustness_figure(curves, *, norm: str = "linf", targeted: bool = False, in_255: bool = False,
                      title: str = ""):
    """Accuracy (%) against ε, one line per model with its 95% Wilson interval as a band.
    curves: [(label, points)], each point a dict with eps, accuracy and ci95 (as
    RobustnessResult holds them), all on the same ε values. The axis starts at 0%, so that a
    collapse looks like one."""
    fig, ax = new_figure(FULL_WIDTH * 0.75, FULL_WIDTH * 0.75 * 0.66)
    eps = [p["eps"] for p in curves[0][1]]
    x = np.arange(len(eps)) if _uneven(eps) else np.asarray(eps)
    for k, (label, pts) in enumerate(curves):
        acc = np.array([100 * p["accuracy"] for p in pts])
        lo = np.array([100 * p["ci95"][0] for p in pts])
        hi = np.array([100 * p["ci95"][1] for p in pts])
        colour = PALETTE[k % len(PALETTE)]
        ax.fill_between(x, lo, hi, color=colour, alpha=0.2, linewidth=0)
        ax.plot(x, acc, marker=MARKERS[k % len(MARKERS)], color=colour, markersize=4, linewidth=1.5,
                label=f"{label} (clean {acc[0]:.2f}%)")
    ax.set_xticks(x, [eps_label(e, in_255) for e in eps])
    ax.set_xlabel(f"ε ({NORM_NAMES[norm]}, pixel units of [0, 1])"
                  + (" — evenly spaced ticks" if _uneven(eps) else ""))
    ax.set_ylabel("accuracy (%), targeted attack" if targeted else "accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_xlim(x[0] - 0.04 * (x[-1] - x[0] or 1), x[-1] + 0.04 * (x[-1] - x[0] or 1))
    from matplotlib.patches import Patch
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(color="0.5", alpha=0.3, linewidth=0))
    labels.append("95% interval (Wilson)")
    # Below the axes: inside, the legend would cover some model's curve.
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=1 if len(curves) < 3 else 2, frameon=False)
    if title:
        ax.set_title(title)
    return fig


def _uneven(eps) -> bool:
    """ε values whose spacing differs a lot (0, 1/255, 2/255, 64/255): evenly spaced ticks read
    better than a true scale where the small values pile up at 0."""
    gaps = np.diff(eps)
    return len(gaps) > 1 and gaps.max() > 4 * gaps.min()


def examples_figure(images, labels, predicted, p, eps, classes, *, in_255: bool = False, title: str = ""):
    """Rows: a few images; columns: ε (the first is the clean image), each image attacked afresh
    at its ε. Each with the class the model gives it and that class's probability, green when
    right, red (bold) when wrong. images: (k, E, C, H, W) float [0, 1] or uint8; labels (k,)
    class indices; predicted and p: (k, E); eps: the E values; classes: ClassNames, names or a
    count. None when there is no image."""
    import matplotlib.pyplot as plt
    apply_style()
    names = class_labels(classes, short=True)
    k, e = images.shape[:2]
    if k == 0:
        return None
    h, w = images.shape[-2:]
    longest = max(len(n) for n in names) + 5  # "name .99"
    label_w = max(0.35, max(len(names[int(y)]) for y in labels) * CHAR_WIDTH + 0.15)
    cell_w = min(1.0, (FULL_WIDTH - label_w) / e)
    img_w = min(cell_w * 0.9, max(0.45, longest * CHAR_WIDTH))
    img_w = min(img_w, cell_w * 0.95)
    img_h = img_w * h / w
    row_h = img_h + LINE + 0.08
    head = (0.3 if title else 0.0) + LINE + 0.1
    width = label_w + e * cell_w
    height = head + k * row_h
    fig = plt.figure(figsize=(width, height))
    for col, value in enumerate(eps):
        fig.text((label_w + (col + 0.5) * cell_w) / width, 1 - (head - 0.04) / height,
                 "clean" if value == 0 else f"ε = {eps_label(value, in_255)}", ha="center", va="bottom",
                 fontsize=SMALL_FONT)
    for row in range(k):
        top = height - head - row * row_h
        y = int(labels[row])
        fig.text((label_w - 0.08) / width, (top - img_h / 2) / height, names[y], ha="right", va="center",
                 fontsize=SMALL_FONT + 1)
        for col in range(e):
            left = label_w + col * cell_w + (cell_w - img_w) / 2
            ax = fig.add_axes((left / width, (top - img_h) / height, img_w / width, img_h / height))
            show_image(ax, images[row, col])
            pred = int(predicted[row][col])
            ax.text(0.5, -0.04, f"{names[pred]} {float(p[row][col]):.2f}".replace(" 0.", " ."), transform=ax.transAxes,
                    ha="center", va="top", fontsize=SMALL_FONT,
                    color=CORRECT if pred == y else WRONG, fontweight="normal" if pred == y else "bold")
    if title:
        fig.text(0.5, 1 - 0.04 / height, title, ha="center", va="top")
    return fig

