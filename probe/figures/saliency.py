"""Figures of what a model looks at: the saliency grid (a row per image: the image, then one map
per method), the deletion/insertion curves, and the model-randomization sanity check.

Colour scales: a map of absolute values (gradients, Grad-CAM) runs sequentially from 0; a signed
map (Integrated Gradients, Occlusion) is diverging and centred on 0, symmetric. The top of a
scale is a high percentile of |value| (99.5% by default), not the maximum, so that one hot pixel
does not wash out the rest; the colour bar's arrow says where values are clipped, the words under
it what the values are, and a note under the grid how to read it. Coarse maps (Grad-CAM,
Occlusion) can be drawn over their image, as captum's and pytorch-grad-cam's overlays are; a
comparison of models (group > 1) puts each image's models in adjacent rows on one scale.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import numpy as np
import torch

from probe.figures.style import (DIVERGING, FULL_WIDTH, MAX_FIGURE_HEIGHT, PALETTE, SEQUENTIAL, SMALL_FONT,
                                 apply_style, bare, canvas, new_figure, place_image, plain_text, text_width)
from probe.methods.saliency import METHODS, method_title

LINE = 1.45 * SMALL_FONT / 72  # inches per line of 8 pt text
CLIP = 99.5  # the percentile of |value| at the top of a colour scale
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
RANDOM = "random"  # the random-order baseline's key among the curves


def wrap_title(title: str, width_in: float) -> list[str]:
    """A figure title in lines that fit `width_in` inches at 9 pt."""
    chars = max(20, int(width_in / (0.55 * (SMALL_FONT + 1) / 72)))
    return [line for part in title.split("\n") for line in textwrap.wrap(part, chars)] if title else []


def title_of(method: str) -> str:
    """A method's column heading (the registry's short title; a map of the caller's own: its key)."""
    return METHODS[method].short_title if method in METHODS else method


def legend_of(method: str) -> str:
    """A method's name in a legend and a table: its title, on one line ("random order" for the baseline)."""
    return "random order" if method == RANDOM else method_title(method)


def area_text(value: float | None) -> str:
    """An area under a deletion/insertion curve as the table and the legend both print it: rounded once."""
    return "—" if value is None or not math.isfinite(value) else f"{value:.3f}"


def rho_text(value: float | None) -> str:
    """A rank correlation as the table and the legend both print it."""
    return "—" if value is None or not math.isfinite(value) else f"{value:.2f}".replace("-", "−")


def unit_of(method: str, signed: bool) -> str:
    """What a method's values are, under its colour bar."""
    unit = METHODS[method].unit if method in METHODS else ""
    return unit or ("attribution (signed)" if signed else "attribution")


def overlaid(methods, overlay) -> set[str]:
    """The methods drawn over their image: overlay True (all), False (none), "auto" (those the
    registry marks smooth enough to see the image through: Grad-CAM, Occlusion) or names."""
    if overlay is True or overlay == "all":
        return set(methods)
    if overlay is False or overlay is None or overlay == "none":
        return set()
    if overlay == "auto":
        return {m for m in methods if m in METHODS and METHODS[m].overlay}
    return set(methods) & set(overlay)


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


def scale_of(values: torch.Tensor, signed: bool, clip: float = CLIP) -> tuple[float, float, bool]:
    """(vmin, vmax, clipped) of a colour scale for `values`: [0, q] for absolute maps and
    [−q, q] for signed ones, q the `clip` percentile of |value| (never 0)."""
    a = values.detach().abs().flatten().float()
    q = float(torch.quantile(a, clip / 100)) if a.numel() <= 16_000_000 else float(a.max())
    top = float(a.max())
    if not math.isfinite(q) or q <= 0:
        q = top if top > 0 else 1.0
    return (-q if signed else 0.0), q, top > q * (1 + 1e-6)


def method_scales(maps: dict[str, torch.Tensor]) -> dict[str, tuple[float, float, bool]]:
    """One colour scale per method over all of its maps (scale_of, signed where the method is)."""
    return {m: scale_of(v, is_signed(m, v)) for m, v in maps.items()}


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


def draw_map(ax, values: torch.Tensor, vmin: float, vmax: float, signed: bool, *, image=None,
             extent: tuple[float, float, float, float] | None = None, label: str | None = None):
    """One (H, W) map filling `ax` or, with `extent` (left, right, bottom, top), that part of a
    canvas (probe.figures.style.canvas); with `image`, as a heat overlay on the image in
    grayscale (each pixel's opacity grows with |value|). label: the map's artist label (the
    image under an overlay gets "under " + label). Returns the ScalarMappable for a colour bar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    v = values.detach().cpu().float().numpy()
    norm = Normalize(vmin, vmax, clip=True)
    cmap = _cmap(signed)
    where = {} if extent is None else {"extent": extent, "aspect": "auto"}
    if image is None:
        drawn = ax.imshow(v, cmap=cmap, norm=norm, interpolation="none", **where)
    else:
        # The image lightened (grey levels 0.55..1): the map's strong colours stay visible on a
        # dark image and a light one alike; opacity grows with |value|.
        under = ax.imshow(0.55 + 0.45 * _gray(image), cmap="gray", vmin=0, vmax=1, interpolation="none", **where)
        rgba = cmap(norm(v))
        rgba[..., 3] = 0.95 * np.clip(np.abs(v) / max(abs(vmin), abs(vmax)), 0, 1) ** 0.7
        drawn = ax.imshow(rgba, interpolation="none", **where)
        if label:
            under.set_label("under " + label)
    if label:
        drawn.set_label(label)
    if extent is None:
        bare(ax)
    return ScalarMappable(norm=norm, cmap=cmap)


# ---- the saliency grid -------------------------------------------------------------------------



ROW_LABEL_MAX = 1.25  # inches of the rows' label column, at most
ROW_NAME_WIDTH = ROW_LABEL_MAX - 0.1  # what a label's line may take (drawn right-aligned 0.06 before the image)


@dataclass
class _Grid:
    """The grid's layout in inches: a label column, the image column, a column per method; the
    title and the column headings above; below, the colour bars (what the values are) and a
    note. Rows come in groups of `group` (a comparison: one image, a row per model), a little
    apart; the image is drawn in a group's first row."""
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
    note_lines: list[str]
    group: int = 1
    gap: float = 0.05
    group_gap: float = 0.12

    @classmethod
    def of(cls, n: int, m: int, first: tuple[int, int], shape: tuple[int, int], row_labels, scale: str,
           title: str, note: str, unit_lines: int, group: int = 1, size_rows: int = 0) -> "_Grid":
        """size_rows: size the cells as for this many rows (a last page of fewer rows: cells as
        on the full pages before it)."""
        (fh, fw), (h, w) = first, shape
        label_w = 0.0
        if row_labels:
            longest = max(len(line) for lab in row_labels for line in lab.split("\n"))
            label_w = min(ROW_LABEL_MAX, 0.6 * SMALL_FONT / 72 * longest + 0.08)
        gap, below = cls.gap, (LINE if scale == "image" else 0.0)
        cell_h = min(1.6, (FULL_WIDTH - label_w - gap * m - 0.02) / (fw / fh + m * w / h))  # few methods: not huge
        for _ in range(2):  # the title's lines depend on the width, the width on the height cap
            width = label_w + cell_h * (fw / fh + m * w / h) + gap * m
            lines = wrap_title(title, width)
            notes = textwrap.wrap(note, int(max(width, 3.0) / (0.56 * SMALL_FONT / 72)))
            head = len(lines) * 1.2 * (SMALL_FONT + 1) / 72 + 2 * LINE + 0.06  # title, two-line column titles
            foot = len(notes) * LINE + 0.06 + ((0.27 + unit_lines * LINE) if scale == "method" else 0.0)
            k = max(n, size_rows)
            gaps = (math.ceil(k / group) - 1) * cls.group_gap * (group > 1)
            spare = MAX_FIGURE_HEIGHT - head - foot - k * (gap + below) - gaps
            cell_h = max(0.3, min(cell_h, spare / k))
        return cls(n, m, label_w, cell_h * fw / fh, cell_h * w / h, cell_h, below, head, foot, lines, notes, group)

    @property
    def row_h(self) -> float:
        return self.cell_h + self.gap + self.below

    @property
    def width(self) -> float:
        return self.label_w + self.first_w + self.m * (self.map_w + self.gap)

    @property
    def body(self) -> float:
        return self.n * self.row_h + (self.n - 1) // self.group * self.group_gap * (self.group > 1)

    @property
    def height(self) -> float:
        return self.head + self.body + self.foot

    def row_top(self, i: int) -> float:
        return self.head + i * self.row_h + (i // self.group) * self.group_gap * (self.group > 1)

    def map_x(self, j: int) -> float:
        return self.label_w + self.first_w + self.gap + j * (self.map_w + self.gap)

    def axes(self, fig, x_in: float, top_in: float, w_in: float, h_in: float):
        W, H = max(self.width, 1.0), self.height
        return fig.add_axes((x_in / W, 1 - (top_in + h_in) / H, w_in / W, h_in / H))

    def extent(self, x_in: float, top_in: float, w_in: float, h_in: float) -> tuple[float, float, float, float]:
        """A cell at x_in from the left, top_in from the top, on the figure's canvas (inches from
        its lower left corner)."""
        return x_in, x_in + w_in, self.height - top_in - h_in, self.height - top_in


def column_title(ax, extent, text: str) -> None:
    """A column's heading above its first cell (gid "column title": tests find them by it)."""
    ax.text((extent[0] + extent[1]) / 2, extent[3] + 3 / 72, text, ha="center", va="bottom", fontsize=SMALL_FONT,
            linespacing=1.1, gid="column title")


def _first_column(ax, grid: _Grid, i: int, image, row_label: str | None, crop_box) -> None:
    """Row i's label and, in a group's first row, its image (with the network's crop outlined on
    a stored frame)."""
    from matplotlib.patches import Rectangle
    top = grid.row_top(i)
    if row_label:
        ax.text(grid.label_w - 0.06, grid.height - top - grid.cell_h / 2, row_label, ha="right", va="center",
                fontsize=SMALL_FONT, linespacing=1.15)
    if i % grid.group:
        return
    where = grid.extent(grid.label_w, top, grid.first_w, grid.cell_h)
    place_image(ax, image, where)
    if crop_box is not None:
        t, l, ch, cw = crop_box
        sx, sy = grid.first_w / image.shape[-1], grid.cell_h / image.shape[-2]  # inches a pixel
        ax.add_patch(Rectangle((where[0] + l * sx, where[3] - (t + ch) * sy), cw * sx, ch * sy, fill=False,
                               edgecolor=PALETTE[8], linewidth=0.9))
    if i == 0:
        column_title(ax, where, "image\n(crop outlined)" if crop_box is not None else "image")


def _map_cell(ax, grid: _Grid, i: int, j: int, method: str, values, signed: bool, scale, image):
    """Row i's map of method j on its scale (vmin, vmax, clipped) or, scale None, its own;
    returns (mappable, clipped)."""
    vmin, vmax, clipped = scale if scale is not None else scale_of(values, signed)
    where = grid.extent(grid.map_x(j), grid.row_top(i), grid.map_w, grid.cell_h)
    # the label finds a method's maps (tests: one scale per column)
    mappable = draw_map(ax, values, vmin, vmax, signed, image=image, extent=where, label=f"map {method}")
    if i == 0:
        column_title(ax, where, title_of(method) + (" on\nthe image" if image is not None
                                                     and "\n" not in title_of(method) else ""))
    if scale is None:  # its own scale: the top printed below it
        ax.text((where[0] + where[1]) / 2, where[2] - 0.02 * grid.cell_h,
                ("±" if signed else "0–") + _fmt(vmax).replace("−", ""), ha="center", va="top",
                fontsize=SMALL_FONT, color="0.3")
    return mappable, clipped


def _power(vmax: float, signed: bool) -> int:
    """The power of ten a colour bar's numbers are given in (0: as they are)."""
    low, high = (0.1, 100) if signed else (0.01, 1000)  # a signed bar has three labels and a minus
    return math.floor(math.log10(vmax)) if vmax > 0 and not low <= vmax < high else 0


def _unit_lines(method: str, signed: bool, vmax: float, width_in: float) -> list[str]:
    """The colour bar's label: what the values are, in lines that fit under the bar, and the
    power of ten of its numbers ("×10⁻³"; mathtext is off: Unicode)."""
    chars = max(6, int(width_in / (0.56 * SMALL_FONT / 72)))
    power = _power(vmax, signed)
    return textwrap.wrap(unit_of(method, signed), chars, break_long_words=False) + (["×10" + str(power).translate(SUPERSCRIPT)]
                                                             if power else [])


def _colour_bar(fig, grid: _Grid, j: int, method: str, mappable, scale: tuple[float, float, bool],
                signed: bool) -> None:
    """Method j's colour bar under its column: 0 and the top (and −top), a power of ten apart
    where the numbers are long, an arrow where values are clipped; below, what the values are."""
    vmin, vmax, clipped = scale
    cax = grid.axes(fig, grid.map_x(j) + 0.04 * grid.map_w, grid.head + grid.body + 0.02, 0.92 * grid.map_w, 0.07)
    extend = ("both" if signed else "max") if clipped else "neither"
    cb = fig.colorbar(mappable, cax=cax, orientation="horizontal", extend=extend, extendfrac=0.06)
    ticks = [vmin, 0.0, vmax] if signed else [0.0, vmax]
    labels = [_fmt(v / 10 ** _power(vmax, signed)) for v in ticks]  # "6.6" and "×10⁻³" below: short labels
    if signed and text_width(labels[0]) + text_width("0") / 2 + 0.07 > 0.92 * grid.map_w / 2:
        labels[1] = ""  # no room for the centre label: the white middle is 0
    cb.set_ticks(ticks, labels=labels)
    cb.ax.text(0.5, -0.2 / 0.07, "\n".join(_unit_lines(method, signed, vmax, 0.92 * grid.map_w)),
               transform=cb.ax.transAxes, ha="center", va="top", fontsize=SMALL_FONT, linespacing=1.1,
               color="0.2")
    cb.ax.tick_params(labelsize=SMALL_FONT, length=2, pad=1)
    ends = cb.ax.get_xticklabels()  # the end labels inside the bar's span: neighbours never touch
    ends[0].set_horizontalalignment("left")
    ends[-1].set_horizontalalignment("right")
    cb.outline.set_linewidth(0.4)


def scale_note(scale: str, overlays, across: str = "the rows") -> str:
    """The line under a grid that says how its colours read."""
    text = (f"Colour bars: from 0 (signed maps: from −top) to the {CLIP:g}th percentile of |value| of each "
            f"method over {across}; an arrow: larger values are clipped." if scale == "method" else
            f"Each map on its own scale: 0 (signed maps: ±) to its {CLIP:g}th percentile of |value|, printed below it.")
    if overlays:
        text += (f" {', '.join(legend_of(m) for m in overlays)}: drawn over the image (in grey), more opaque "
                 "where |value| is larger.")
    return text


def saliency_figure(maps: dict[str, torch.Tensor], images: torch.Tensor, *, row_labels: list[str] | None = None,
                    frames: torch.Tensor | None = None, crop_box: tuple[int, int, int, int] | None = None,
                    scale: str = "method", overlay=False, title: str = "", group: int = 1,
                    across: str = "the rows", scales: dict | None = None, size_rows: int = 0):
    """A row per image: the image, then one map per method (maps[method]: (N, H, W) at the
    network's input; images (N, C, H, W) that input). frames: the stored images to show in
    the first column instead (SFDDD's 64×48 frame, at its aspect ratio), with crop_box (top,
    left, height, width) outlined: the part the network saw and the maps cover.
    scale: "method" (one colour scale per method over every row, with a colour bar saying what
    the values are) or "image" (each map its own scale, its top printed below it). overlay:
    True, False, "auto" or method names: those drawn over their image (see `overlaid`).
    group: rows per image (a comparison of models: the image once, a row per model; across
    names what a colour bar spans). scales: scale "method"'s (vmin, vmax, clipped) per method
    when they span more than these rows (a comparison's pages); default scale_of the maps.
    size_rows: cells as large as in a figure of this many rows (pages after a full one)."""
    if scale not in ("method", "image"):
        raise ValueError(f"scale must be 'method' or 'image', not {scale!r}")
    apply_style()
    methods, first = list(maps), (frames if frames is not None else images)
    on_image = [m for m in methods if m in overlaid(methods, overlay)]
    if scale != "method":
        scales = {}
    elif scales is None:
        scales = method_scales(maps)
    signed = {m: is_signed(m, maps[m]) or (m in scales and scales[m][0] < 0) for m in methods}
    unit_lines = 3
    for _ in range(2):  # the lines under the colour bars depend on the columns' width
        grid = _Grid.of(len(images), len(methods), tuple(first.shape[-2:]), tuple(images.shape[-2:]), row_labels,
                        scale, title, scale_note(scale, on_image, across), unit_lines, group, size_rows)
        unit_lines = max([len(_unit_lines(m, signed[m], scales[m][1], 0.92 * grid.map_w)) for m in scales] or [0])
    fig, ax = canvas(max(grid.width, 1.0), grid.height)
    mappables = {}
    for i in range(len(images)):
        _first_column(ax, grid, i, first[i], row_labels[i] if row_labels else None,
                      crop_box if frames is not None else None)
        for j, m in enumerate(methods):
            mappables[m] = _map_cell(ax, grid, i, j, m, maps[m][i], signed[m], scales.get(m),
                                     images[i] if m in on_image else None)
    for j, m in enumerate(methods if scale == "method" else []):
        _colour_bar(fig, grid, j, m, mappables[m][0], scales[m], signed[m])
    if grid.title_lines:
        fig.text(0.5, 1 - 0.02 / grid.height, "\n".join(grid.title_lines), ha="center", va="top",
                 fontsize=SMALL_FONT + 1, linespacing=1.2)
    fig.text(0.01, 0.04 / grid.height, "\n".join(grid.note_lines), ha="left", va="bottom", fontsize=SMALL_FONT,
             linespacing=1.2, color="0.25")
    return fig


# ---- faithfulness --------------------------------------------------------------------------------


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
                labels.append(f"{legend_of(method)}: {area_text(c['deletion_auc'])}{_worse(c, 'deletion')} / "
                              f"{area_text(c['insertion_auc'])}{_worse(c, 'insertion')}")
        ax.set_title(f"{kind.capitalize()} (area: {'lower' if kind == 'deletion' else 'higher'} is better)")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_xlabel(f"fraction of pixels set to {deletion_value:g}" + (" (black)" if deletion_value == 0 else ""))
    axes[1].set_xlabel("fraction of pixels restored"
                       + (" in a blurred copy" if insertion_start == "blur" else " in a black image"))
    axes[0].set_ylabel("probability of the target class")
    worse = any(_worse(c, k) for c in curves.values() for k in ("deletion", "insertion"))
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 0.0),
               title="mean area under the curve: deletion / insertion"
                     + ("  († worse than the random order)" if worse else ""), title_fontsize=SMALL_FONT,
               columnspacing=2.0, handlelength=1.8)
    fig.tight_layout(rect=(0, foot / (2.35 + foot), 1, 1))
    if title:
        fig.suptitle(title, fontsize=SMALL_FONT + 1)
        fig.tight_layout(rect=(0, foot / (2.35 + foot), 1, 1))
    return fig


def _worse(curve: dict, kind: str) -> str:
    """"†" after a mean area worse than the random order's (see DeletionInsertion.versus_random)."""
    return "†" if (curve.get(f"{kind}_vs_random") or {}).get("mean_worse") else ""


def randomization_label(method: str, check: dict) -> str:
    """A method's name in the randomization check's legend: with the images its numbers rest on
    and its flag."""
    n = (check.get("n") or {}).get(method)
    flag = (" flagged" if method in check["flagged"] else
            " too few images to flag" if method in check.get("too_few_to_flag", []) else "")
    return legend_of(method) + (f" (n = {n}{',' if flag else ''}{flag})" if n is not None else
                                f" ({flag.strip()})" if flag else "")


def randomization_figure(check: dict, *, title: str = ""):
    """The Spearman rank correlation (mean over the images, of |map|; dotted, of the signed maps
    of a signed method) between the trained model's maps and the maps after randomizing the
    layers from the top down to each step; the dashed line is the flag threshold: a method
    above it with the whole model random explains the image more than the model. check:
    "steps", "spearman_mean" (and "spearman_signed_mean") {method: one value per step}, "n",
    "flagged", "too_few_to_flag", "threshold", "cascading"."""
    methods = list(check["spearman_mean"])
    signed = check.get("spearman_signed_mean") or {}
    entries = len(methods) + 1 + any(is_signed(m) for m in signed)
    foot = 0.17 * math.ceil(entries / 2) + 0.1  # inches for the legend below (inside the text width)
    fig, ax = new_figure(FULL_WIDTH, 2.6 + foot)
    steps = ["trained"] + [plain_text(s) for s in check["steps"]]
    xs = np.arange(len(steps))
    low = 0.0
    for i, (method, rho) in enumerate(check["spearman_mean"].items()):
        mean = [1.0] + [float(r) for r in rho]
        ax.plot(xs, mean, marker="o", markersize=3.5, color=colour_of(method, i), linewidth=1.3,
                label=randomization_label(method, check))
        if method in signed and is_signed(method):  # a map ≥ 0: signed and |map| are the same
            sig = [1.0] + [float(r) for r in signed[method]]
            ax.plot(xs, sig, linestyle=":", color=colour_of(method, i), linewidth=1.3)
            mean += sig
        low = min(low, *(v for v in mean if math.isfinite(v)))
    if any(is_signed(m) for m in signed):
        ax.plot([], [], linestyle=":", color="0.3", linewidth=1.3, label="dotted: signed maps")
    ax.axhline(check["threshold"], color="0.4", linestyle="--", linewidth=1,
               label=f"flag threshold {check['threshold']:g}")
    ax.axhline(0, color="0.75", linewidth=0.7, zorder=0)
    ax.set_xticks(xs, [s if len(s) <= 14 else s[:12] + "…" for s in steps])
    ax.set_xlabel("layers re-initialized, cascading from the top (each step adds one group)"
                  if check.get("cascading", True) else "re-initialized")
    ax.set_ylabel("Spearman ρ with the\ntrained model's map")
    ax.set_ylim(min(-0.1, low - 0.05), 1.05)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 0.0),
               columnspacing=2.0, handlelength=1.8)
    if title:
        ax.set_title(title)
    fig.tight_layout(rect=(0, foot / (2.6 + foot), 1, 1))
    return fig


def randomization_maps_figure(image: torch.Tensor, trained: dict[str, torch.Tensor],
                              randomized: dict[str, torch.Tensor], steps: list[str], *, title: str = ""):
    """One image's maps as the model is destroyed: a row per method, the trained model's map
    (trained[method]: (H, W)) then one per cascade step (randomized[method]: (S, H, W)). Each
    map has its own scale (randomized models' maps differ in magnitude by orders; the question
    is whether their pattern survives): a key under the maps says how the colours read."""
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
    signed = {m: is_signed(m, trained[m]) for m in methods}
    note = textwrap.wrap(f"Each map on its own colour scale, to its {CLIP:g}th percentile of |value| (the key's "
                         "top): the maps of a re-initialized model differ in size by orders of magnitude, and the "
                         "check asks whether their pattern survives.", int(width / (0.56 * SMALL_FONT / 72)))
    foot = 0.16 + LINE + len(note) * LINE + 0.1  # the key (its title above the maps, its ticks) and the note
    height = head + len(methods) * (cell_h + gap) + foot
    fig, ax = canvas(width, height)

    def cell(x_in, top_in):
        return x_in, x_in + cell_w, height - top_in - cell_h, height - top_in

    place_image(ax, image, cell(label_w, head))
    column_title(ax, cell(label_w, head), "image")
    for r, method in enumerate(methods):
        top = head + r * (cell_h + gap)
        for c, v in enumerate([trained[method], *randomized[method]]):
            where = cell(label_w + (c + 1) * (cell_w + gap), top)
            draw_map(ax, v, *scale_of(v, signed[method])[:2], signed[method], extent=where, label=f"map {method}")
            if r == 0:
                name = steps[c] if len(steps[c]) <= 10 else steps[c][:9] + "…"
                column_title(ax, where, name if c == 0 else f"→ {name}")
        ax.text(label_w - 0.06, height - top - cell_h / 2, title_of(method), ha="right", va="center",
                fontsize=SMALL_FONT, linespacing=1.1)
    kinds = [k for k in (False, True) if k in signed.values()]
    left, room = label_w + cell_w + gap, width - (label_w + cell_w + gap) - 0.05  # under the maps, inside the figure
    key_w = min(1.6 * cell_w, (room - 0.3) / 2)  # two keys 0.3 in apart at most (few steps: a narrow figure)
    for i, kind in enumerate(kinds):
        _colour_key(fig, (left + i * (key_w + 0.3)) / width, (foot - 0.16) / height, key_w / width, 0.07 / height,
                    kind)
    fig.text(0.01, 0.04 / height, "\n".join(note), ha="left", va="bottom", fontsize=SMALL_FONT, linespacing=1.2,
             color="0.25")
    if title:
        fig.text(0.5, 1 - 0.02 / height, title, ha="center", va="top", fontsize=SMALL_FONT + 1)
    return fig


def _colour_key(fig, left: float, bottom: float, width: float, height: float, signed: bool) -> None:
    """A colour bar with no numbers (each map has its own top): 0 to top, or −top to +top."""
    import matplotlib
    cax = fig.add_axes((left, bottom, width, height))
    norm = matplotlib.colors.Normalize(-1 if signed else 0, 1)
    cb = fig.colorbar(matplotlib.cm.ScalarMappable(norm, _cmap(signed)), cax=cax, orientation="horizontal")
    cb.set_ticks([-1, 0, 1] if signed else [0, 1], labels=["−top", "0", "top"] if signed else ["0", "top"])
    cb.ax.tick_params(labelsize=SMALL_FONT, length=2, pad=1)
    cb.ax.set_title("signed maps" if signed else "maps ≥ 0", fontsize=SMALL_FONT, pad=2)
    cb.outline.set_linewidth(0.4)
    ends = cb.ax.get_xticklabels()
    ends[0].set_horizontalalignment("left")
    ends[-1].set_horizontalalignment("right")
