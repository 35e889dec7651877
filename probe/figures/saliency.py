"""Figures of what a model looks at: the saliency grid (a row per image: the image, then one map
per method), the deletion/insertion curves, and the model-randomization sanity check.

Colour scales: a map of absolute values (gradients, Grad-CAM) runs sequentially from 0; a signed
map (Integrated Gradients, Occlusion) is diverging and centred on 0, symmetric. The top of a
scale is a high percentile of |value| (99.5% by default), not the maximum, so that one hot pixel
does not wash out the rest; the colour bar's arrow says where values are clipped.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import numpy as np
import torch

from probe.figures.style import (DIVERGING, FULL_WIDTH, PALETTE, SEQUENTIAL, SMALL_FONT, apply_style,
                                 new_figure, show_image)
from probe.methods.saliency import METHODS, method_title

LINE = 1.45 * SMALL_FONT / 72  # inches per line of 8 pt text
CLIP = 99.5  # the percentile of |value| at the top of a colour scale
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def wrap_title(title: str, width_in: float) -> list[str]:
    """A figure title in lines that fit `width_in` inches at 9 pt."""
    chars = max(20, int(width_in / (0.55 * (SMALL_FONT + 1) / 72)))
    return [line for part in title.split("\n") for line in textwrap.wrap(part, chars)] if title else []


def title_of(method: str) -> str:
    """A method's column heading (the registry's short title; a map of the caller's own: its key)."""
    return METHODS[method].short_title if method in METHODS else method


def legend_of(method: str) -> str:
    """A method's name in a legend: its title, on one line."""
    return method_title(method)


def colour_of(method: str, i: int = 0):
    return PALETTE[METHODS[method].colour] if method in METHODS else PALETTE[(6 + i) % len(PALETTE)]


def is_signed(method: str, values: torch.Tensor | None = None) -> bool:
    """A diverging scale: the registry says so, or (a map of the caller's own) it has negative values."""
    if method in METHODS:
        return METHODS[method].signed
    return values is not None and bool((values < 0).any())


def _fmt(v: float) -> str:
    """A short tick label: 2 significant digits, no exponent where avoidable."""
    if v == 0:
        return "0"
    a = abs(v)
    s = f"{v:.2g}" if 1e-3 <= a < 1e4 else f"{v:.1e}".replace("e-0", "e-").replace("e+0", "e")
    if "e" not in s:
        s = s.replace("0.", ".", 1) if s.startswith(("0.", "-0.")) else s  # ".64": narrow bars
    return s.replace("-", "−")


def _text_width(text: str, size: float = SMALL_FONT) -> float:
    """Inches of `text` in DejaVu Sans at `size` pt, roughly (digits 0.64 em, the minus 0.84)."""
    em = {".": 0.32, "−": 0.84, "-": 0.36, "×": 0.84, "e": 0.62}
    return sum(em.get(ch, 0.64) for ch in text) * size / 72


def scale_of(values: torch.Tensor, signed: bool, clip: float = CLIP) -> tuple[float, float, bool]:
    """(vmin, vmax, clipped) of a colour scale for `values`: [0, q] for absolute maps and
    [−q, q] for signed ones, q the `clip` percentile of |value| (never 0)."""
    a = values.detach().abs().flatten().float()
    q = float(torch.quantile(a, clip / 100)) if a.numel() <= 16_000_000 else float(a.max())
    top = float(a.max())
    if not math.isfinite(q) or q <= 0:
        q = top if top > 0 else 1.0
    return (-q if signed else 0.0), q, top > q * (1 + 1e-6)


def _cmap(signed: bool):
    import matplotlib
    return matplotlib.colormaps[DIVERGING if signed else SEQUENTIAL]


def _gray(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) uint8/[0, 1] → (H, W) luminance in [0, 1], for an overlay's background."""
    x = image.detach().cpu().float()
    x = x / 255 if not image.is_floating_point() else x
    if x.shape[0] == 3:
        x = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    else:
        x = x.mean(0)
    return x.clamp(0, 1).numpy()


def draw_map(ax, values: torch.Tensor, vmin: float, vmax: float, signed: bool, *, image=None):
    """One (H, W) map on `ax`; with `image`, as a heat overlay on the image in grayscale (each
    pixel's opacity grows with |value|). Returns the ScalarMappable for a colour bar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    v = values.detach().cpu().float().numpy()
    norm = Normalize(vmin, vmax, clip=True)
    cmap = _cmap(signed)
    if image is None:
        ax.imshow(v, cmap=cmap, norm=norm, interpolation="none")
    else:
        # The image lightened (grey levels 0.55..1): the map's strong colours stay visible on a
        # dark image and a light one alike; opacity grows with |value|.
        ax.imshow(0.55 + 0.45 * _gray(image), cmap="gray", vmin=0, vmax=1, interpolation="none")
        rgba = cmap(norm(v))
        rgba[..., 3] = 0.95 * np.clip(np.abs(v) / max(abs(vmin), abs(vmax)), 0, 1) ** 0.7
        ax.imshow(rgba, interpolation="none")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)
    return ScalarMappable(norm=norm, cmap=cmap)


# ---- the saliency grid -------------------------------------------------------------------------


@dataclass
class _Grid:
    """The grid's layout in inches: a label column, the image column, a column per method; the
    title and the column headings above, the colour bars below."""
    n: int
    m: int
    label_w: float
    first_w: float
    map_w: float
    cell_h: float
    below: float  # under each map: its own scale's top (scale "image")
    head: float
    foot: float
    title_lines: list[str]
    gap: float = 0.05

    @classmethod
    def of(cls, n: int, m: int, first: tuple[int, int], shape: tuple[int, int], row_labels, scale: str,
           title: str) -> "_Grid":
        (fh, fw), (h, w) = first, shape
        label_w = 0.0
        if row_labels:
            longest = max(len(line) for lab in row_labels for line in lab.split("\n"))
            label_w = min(1.1, 0.6 * SMALL_FONT / 72 * longest + 0.08)
        gap = cls.gap
        cell_h = min(1.6, (FULL_WIDTH - label_w - gap * m - 0.02) / (fw / fh + m * w / h))  # few methods: not huge
        first_w, map_w = cell_h * fw / fh, cell_h * w / h
        lines = wrap_title(title, label_w + first_w + m * (map_w + gap))
        head = len(lines) * 1.2 * (SMALL_FONT + 1) / 72 + 2 * LINE + 0.06  # title, two-line column titles
        return cls(n, m, label_w, first_w, map_w, cell_h, LINE if scale == "image" else 0.0, head,
                   0.5 if scale == "method" else 0.02, lines)  # foot: colour bars, their labels, a power of ten

    @property
    def row_h(self) -> float:
        return self.cell_h + self.gap + self.below

    @property
    def width(self) -> float:
        return self.label_w + self.first_w + self.m * (self.map_w + self.gap)

    @property
    def height(self) -> float:
        return self.head + self.n * self.row_h + self.foot

    def map_x(self, j: int) -> float:
        return self.label_w + self.first_w + self.gap + j * (self.map_w + self.gap)

    def axes(self, fig, x_in: float, top_in: float, w_in: float, h_in: float):
        W, H = max(self.width, 1.0), self.height
        return fig.add_axes((x_in / W, 1 - (top_in + h_in) / H, w_in / W, h_in / H))


def _first_column(fig, grid: _Grid, i: int, image, row_label: str | None, crop_box) -> None:
    """Row i's image (with the network's crop outlined on a stored frame) and its label."""
    from matplotlib.patches import Rectangle
    ax = grid.axes(fig, grid.label_w, grid.head + i * grid.row_h, grid.first_w, grid.cell_h)
    show_image(ax, image)
    if crop_box is not None:
        t, l, ch, cw = crop_box
        ax.add_patch(Rectangle((l - 0.5, t - 0.5), cw, ch, fill=False, edgecolor=PALETTE[8], linewidth=0.9))
    if row_label:
        ax.text(-0.06 * grid.cell_h / grid.first_w, 0.5, row_label, transform=ax.transAxes, ha="right",
                va="center", fontsize=SMALL_FONT, linespacing=1.15)
    if i == 0:
        ax.set_title("image\n(crop outlined)" if crop_box is not None else "image", fontsize=SMALL_FONT,
                     pad=3, linespacing=1.1)


def _map_cell(fig, grid: _Grid, i: int, j: int, method: str, values, signed: bool, scale, image):
    """Row i's map of method j on its scale (vmin, vmax, clipped) or, scale None, its own;
    returns (mappable, clipped)."""
    vmin, vmax, clipped = scale if scale is not None else scale_of(values, signed)
    ax = grid.axes(fig, grid.map_x(j), grid.head + i * grid.row_h, grid.map_w, grid.cell_h)
    mappable = draw_map(ax, values, vmin, vmax, signed, image=image)
    if i == 0:
        ax.set_title(title_of(method), fontsize=SMALL_FONT, pad=3, linespacing=1.1)
    if scale is None:  # its own scale: the top printed below it
        ax.text(0.5, -0.02, ("±" if signed else "0–") + _fmt(vmax).replace("−", ""), transform=ax.transAxes,
                ha="center", va="top", fontsize=SMALL_FONT, color="0.3")
    return mappable, clipped


def _colour_bar(fig, grid: _Grid, j: int, mappable, scale: tuple[float, float, bool], signed: bool) -> None:
    """Method j's colour bar under its column: 0 and the top (and −top), a power of ten apart
    where the numbers are long; an arrow where values are clipped."""
    vmin, vmax, clipped = scale
    cax = grid.axes(fig, grid.map_x(j) + 0.04 * grid.map_w, grid.head + grid.n * grid.row_h + 0.02,
                    0.92 * grid.map_w, 0.07)
    extend = ("both" if signed else "max") if clipped else "neither"
    cb = fig.colorbar(mappable, cax=cax, orientation="horizontal", extend=extend, extendfrac=0.06)
    ticks = [vmin, 0.0, vmax] if signed else [0.0, vmax]
    low, high = (0.1, 100) if signed else (0.01, 1000)  # a signed bar has three labels and a minus
    power = math.floor(math.log10(vmax)) if vmax > 0 and not low <= vmax < high else 0
    labels = [_fmt(v / 10 ** power) for v in ticks]
    if signed and _text_width(labels[0]) + _text_width("0") / 2 + 0.07 > 0.92 * grid.map_w / 2:
        labels[1] = ""  # no room for the centre label: the white middle is 0
    cb.set_ticks(ticks, labels=labels)
    if power:  # "6.6" and "×10⁻³" below: narrow bars keep short labels (mathtext is off: Unicode)
        cb.ax.text(1.0, -2.6, "×10" + str(power).translate(SUPERSCRIPT), transform=cb.ax.transAxes,
                   ha="right", va="top", fontsize=SMALL_FONT)
    cb.ax.tick_params(labelsize=SMALL_FONT, length=2, pad=1)
    ends = cb.ax.get_xticklabels()  # the end labels inside the bar's span: neighbours never touch
    ends[0].set_horizontalalignment("left")
    ends[-1].set_horizontalalignment("right")
    cb.outline.set_linewidth(0.4)


def saliency_figure(maps: dict[str, torch.Tensor], images: torch.Tensor, *, row_labels: list[str] | None = None,
                    frames: torch.Tensor | None = None, crop_box: tuple[int, int, int, int] | None = None,
                    scale: str = "method", overlay: bool = False, title: str = ""):
    """A row per image: the image, then one map per method (maps[method]: (N, H, W) at the
    network's input; images (N, C, H, W) that input). frames: the stored images to show in
    the first column instead (SFDDD's 64×48 frame, at its aspect ratio), with crop_box (top,
    left, height, width) outlined: the part the network saw and the maps cover.
    scale: "method" (one colour scale per method across the rows, with a colour bar) or
    "image" (each map its own scale, its top printed below it)."""
    import matplotlib.pyplot as plt
    if scale not in ("method", "image"):
        raise ValueError(f"scale must be 'method' or 'image', not {scale!r}")
    apply_style()
    methods = list(maps)
    first = frames if frames is not None else images
    grid = _Grid.of(len(images), len(methods), tuple(first.shape[-2:]), tuple(images.shape[-2:]), row_labels,
                    scale, title)
    fig = plt.figure(figsize=(max(grid.width, 1.0), grid.height))
    signed = {m: is_signed(m, maps[m]) for m in methods}
    scales = {m: scale_of(maps[m], signed[m]) for m in methods} if scale == "method" else {}
    mappables = {}
    for i in range(len(images)):
        _first_column(fig, grid, i, first[i], row_labels[i] if row_labels else None,
                      crop_box if frames is not None else None)
        for j, m in enumerate(methods):
            mappables[m] = _map_cell(fig, grid, i, j, m, maps[m][i], signed[m], scales.get(m),
                                     images[i] if overlay else None)
    for j, m in enumerate(methods if scale == "method" else []):
        _colour_bar(fig, grid, j, mappables[m][0], scales[m], signed[m])
    if grid.title_lines:
        fig.text(0.5, 1 - 0.02 / grid.height, "\n".join(grid.title_lines), ha="center", va="top",
                 fontsize=SMALL_FONT + 1, linespacing=1.2)
    return fig


# ---- faithfulness --------------------------------------------------------------------------------

RANDOM = "random"  # the random-order baseline's key among the curves


def faithfulness_figure(fractions, curves: dict[str, dict], *, deletion_value: float = 0.0,
                        insertion_start: str = "blur", title: str = ""):
    """Deletion (left) and insertion (right) curves: the mean target probability over the images
    against the fraction of pixels removed / added in the map's order; dashed grey the random
    order. curves[method] (and curves["random"]): "deletion_curve", "insertion_curve" (mean
    over the images, one value per fraction), "deletion_auc", "insertion_auc" (their mean areas).
    The legend gives each method's areas (deletion: lower is better; insertion: higher)."""
    rows = math.ceil(len(curves) / 2)
    foot = 0.17 * rows + 0.3  # inches for the legend below
    fig, axes = new_figure(FULL_WIDTH, 2.35 + foot, ncols=2, sharey=True)
    x = np.asarray(fractions, dtype=float)
    handles, labels = [], []
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for i, (method, c) in enumerate(curves.items()):
            if method == RANDOM:
                line, = ax.plot(x, c[f"{kind}_curve"], color="0.45", linestyle="--", linewidth=1.2, zorder=1)
            else:
                line, = ax.plot(x, c[f"{kind}_curve"], color=colour_of(method, i), linewidth=1.4, zorder=2)
            if kind == "deletion":
                handles.append(line)
                labels.append(f"{'random order' if method == RANDOM else legend_of(method)}: "
                              f"{c['deletion_auc']:.3f} / {c['insertion_auc']:.3f}")
        ax.set_title(f"{kind.capitalize()} (area: {'lower' if kind == 'deletion' else 'higher'} is better)")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_xlabel(f"fraction of pixels set to {deletion_value:g}" + (" (black)" if deletion_value == 0 else ""))
    axes[1].set_xlabel("fraction of pixels restored"
                       + (" in a blurred copy" if insertion_start == "blur" else " in a black image"))
    axes[0].set_ylabel("probability of the target class")
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 0.0),
               title="mean area under the curve: deletion / insertion", title_fontsize=SMALL_FONT,
               columnspacing=2.0, handlelength=1.8)
    fig.tight_layout(rect=(0, foot / (2.35 + foot), 1, 1))
    if title:
        fig.suptitle(title, fontsize=SMALL_FONT + 1)
        fig.tight_layout(rect=(0, foot / (2.35 + foot), 1, 1))
    return fig


def randomization_figure(check: dict, *, title: str = ""):
    """The Spearman rank correlation (mean over the images, of |map|) between the trained
    model's maps and the maps after randomizing the layers from the top down to each step;
    the dashed line is the flag threshold: a method above it with the whole model random
    explains the image more than the model. check: "steps", "spearman_mean" {method: one value
    per step}, "flagged", "threshold", "cascading"."""
    fig, ax = new_figure(FULL_WIDTH, 2.7)
    steps = ["trained"] + list(check["steps"])
    xs = np.arange(len(steps))
    low = 0.0
    for i, (method, rho) in enumerate(check["spearman_mean"].items()):
        mean = [1.0] + [float(r) for r in rho]
        low = min(low, *(v for v in mean if math.isfinite(v)))
        ax.plot(xs, mean, marker="o", markersize=3.5, color=colour_of(method, i), linewidth=1.3,
                label=legend_of(method) + (" (flagged)" if method in check["flagged"] else ""))
    ax.axhline(check["threshold"], color="0.4", linestyle="--", linewidth=1,
               label=f"flag threshold {check['threshold']:g}")
    ax.axhline(0, color="0.75", linewidth=0.7, zorder=0)
    ax.set_xticks(xs, [s if len(s) <= 14 else s[:12] + "…" for s in steps])
    ax.set_xlabel("layers re-initialized, cascading from the top (each step adds one group)"
                  if check.get("cascading", True) else "re-initialized")
    ax.set_ylabel("Spearman ρ with the\ntrained model's map")
    ax.set_ylim(min(-0.1, low - 0.05), 1.05)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    if title:
        ax.set_title(title)
    return fig


def randomization_maps_figure(image: torch.Tensor, trained: dict[str, torch.Tensor],
                              randomized: dict[str, torch.Tensor], steps: list[str], *, title: str = ""):
    """One image's maps as the model is destroyed: a row per method, the trained model's map
    (trained[method]: (H, W)) then one per cascade step (randomized[method]: (S, H, W)). Each
    map has its own scale (randomized models' maps differ in magnitude by orders; the question
    is whether their pattern survives)."""
    import matplotlib.pyplot as plt
    apply_style()
    methods = list(randomized)
    steps = ["trained"] + list(steps)
    cols = len(steps)
    h, w = image.shape[-2:]
    label_w, gap = 0.95, 0.05
    cell_w = min(0.95, (FULL_WIDTH - label_w - 0.75 - gap * cols) / (cols + 1))
    cell_h = cell_w * h / w
    head = (LINE if title else 0) + LINE + 0.05
    width = label_w + (cols + 1) * (cell_w + gap)
    height = head + len(methods) * (cell_h + gap) + 0.05
    fig = plt.figure(figsize=(width, height))

    def axes(x_in, top_in):
        return fig.add_axes((x_in / width, 1 - (top_in + cell_h) / height, cell_w / width, cell_h / height))

    ax = axes(label_w, head)
    show_image(ax, image)
    ax.set_title("image", fontsize=SMALL_FONT, pad=3)
    for r, method in enumerate(methods):
        top = head + r * (cell_h + gap)
        s = is_signed(method, trained[method])
        for c, v in enumerate([trained[method], *randomized[method]]):
            ax = axes(label_w + (c + 1) * (cell_w + gap), top)
            draw_map(ax, v, *scale_of(v, s)[:2], s)
            if r == 0:
                name = steps[c] if len(steps[c]) <= 10 else steps[c][:9] + "…"
                ax.set_title(name if c == 0 else f"→ {name}", fontsize=SMALL_FONT, pad=3)
        fig.text((label_w - 0.06) / width, 1 - (top + cell_h / 2) / height, title_of(method), ha="right",
                 va="center", fontsize=SMALL_FONT, linespacing=1.1)
    if title:
        fig.text(0.5, 1 - 0.02 / height, title, ha="center", va="top", fontsize=SMALL_FONT + 1)
    return fig
