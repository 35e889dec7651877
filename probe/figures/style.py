"""The one plotting style of the project, and the one way figures are saved.

Sizes are for a thesis page (full text width ≈ 6.3 in, half ≈ 3.1 in) and every font is at
least 8 pt at that size, so a figure is included at 100% and stays readable. Colours come from
seaborn's colour-blind-safe palette; sequential maps are perceptually uniform (viridis-like),
diverging maps centred on zero.
"""
from __future__ import annotations

import functools
import io
import os
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from probe.data.spec import ClassNames  # noqa: E402
from probe.text import CONTROL_AS_SPACE  # noqa: E402
from probe.io import atomic_writer  # noqa: E402
from probe.memo import RecentCache  # noqa: E402

FULL_WIDTH = 6.3  # inches
HALF_WIDTH = 3.1
MAX_FIGURE_HEIGHT = 8.2  # inches: a figure with its caption fits an A4 or letter page of text
FONT_SIZE = 9
SMALL_FONT = 8  # the smallest text in any figure
PNG_DPI = 200
# zlib level of the PNGs: 3 instead of PIL's 6 saved a grid of 64 MNIST images in 0.64 s instead of
# 0.99 s, 11% larger (330 against 298 kB); 1 was no faster.
PNG_COMPRESSION = 3
PALETTE = sns.color_palette("colorblind")
SEQUENTIAL = "rocket_r"  # counts, probabilities: light = few
DIVERGING = "RdBu_r"  # signed values around 0 (attributions, perturbations)
CORRECT, WRONG = PALETTE[2], PALETTE[3]  # green-ish and red-ish of the colour-blind palette

RC = {
    "font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE, "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": SMALL_FONT, "ytick.labelsize": SMALL_FONT, "legend.fontsize": SMALL_FONT,
    "figure.titlesize": FONT_SIZE + 1,
    # User text (class and model names) is drawn as it is: a "$" starts no mathtext.
    "text.parse_math": False,
    # TrueType (Type 42) fonts embedded: text stays text in the PDF and LaTeX accepts it.
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
    "savefig.bbox": "tight", "savefig.pad_inches": 0.02,
    # "none": a vector backend gets each image unsampled, at its own pixels (a 28×28 image is a
    # 28×28 PDF image the viewer enlarges); "nearest" would resample it at 72 dpi. PNG output
    # falls back to nearest-neighbour: pixels stay pixels when a 28×28 image is enlarged.
    "image.interpolation": "none",
    "image.resample": False,
    "image.composite_image": False,  # each image its own PDF image, at its own pixels
}


def apply_style() -> None:
    global _styled
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, rc=RC)
    plt.rcParams.update(RC)
    _styled = True


def new_figure(width: float = FULL_WIDTH, height: float | None = None, **subplots):
    """plt.subplots in the project's style; height defaults to width × 0.62."""
    apply_style()
    return plt.subplots(figsize=(width, height or width * 0.62), **subplots)


# User text in a figure is cut: a class name may be 1,000 characters (a dataset spec allows it),
# and the tight bounding box grows with the text: ten such names on a confusion matrix's axes made
# a 11,834 × 8,536 pixel PNG (2.9 GB while drawing). Axis labels (class names) are cut to
# MAX_LABEL characters where they are made (class_labels); any line of text at all to
# MAX_FIGURE_TEXT characters, and a text to MAX_FIGURE_LINES lines, when the figure is saved (a
# legend wrapped to the figure's width is several lines of well over 200 characters in all).
MAX_LABEL = 40
MAX_FIGURE_TEXT = 200
MAX_FIGURE_LINES = 12


def _drawable(text: str) -> str:
    """Text every backend draws: lone surrogates (bytes of a name that are not UTF-8) as ?, no
    U+FEFF (the PDF backend fails on it: IndexError in its glyph tracker)."""
    return text.replace("\ufeff", "").encode("utf-8", "replace").decode("utf-8")


def _safe_texts(fig) -> None:
    """Every text of the figure drawable, its lines at most MAX_FIGURE_TEXT characters and at
    most MAX_FIGURE_LINES of them, whichever way it was made (a title of a model's name that did
    not pass plain_text)."""
    from matplotlib.text import Text
    for t in fig.findobj(Text):
        text = t.get_text()
        lines = _drawable(text).split("\n")
        if len(lines) > MAX_FIGURE_LINES:
            lines = [*lines[:MAX_FIGURE_LINES - 1], lines[MAX_FIGURE_LINES - 1][:MAX_FIGURE_TEXT - 1] + "…"]
        safe = "\n".join(line if len(line) <= MAX_FIGURE_TEXT else line[:MAX_FIGURE_TEXT - 1] + "…" for line in lines)
        if safe != text:
            t.set_text(safe)


def save_figure(fig, folder: str | Path, stem: str) -> list[Path]:
    """Write `stem.png` (200 dpi) and `stem.pdf` (vector: line art and text stay vectors,
    images stay images) atomically, close the figure, and return both paths."""
    folder = Path(folder)
    _safe_texts(fig)
    bbox = _tight_bbox(fig)
    paths = []
    for ext, kwargs in (("png", {"dpi": PNG_DPI, "pil_kwargs": {"compress_level": PNG_COMPRESSION}}),
                        ("pdf", {"metadata": {"Creator": "probe"}})):
        path = folder / f"{stem}.{ext}"
        with atomic_writer(path) as f, (_glyph_only_font_subsets() if ext == "pdf" else nullcontext()):
            fig.savefig(f, format=ext, bbox_inches=bbox, **kwargs)
        paths.append(path)
    plt.close(fig)
    return paths


def _tight_bbox(fig):
    """The figure's tight bounding box (inches, padded as savefig pads it), measured once for both
    files: `savefig(bbox_inches="tight")` lays the figure out and measures it again for each
    format, a third of a PNG's time. Measured at PNG_DPI, so the PNG is the one "tight" gives;
    the PDF's box differs from its own "tight" one by a fraction of a point (text hinting).
    None ("tight" per format as before) for a figure with a layout engine, which savefig must run."""
    if plt.rcParams["savefig.bbox"] != "tight" or fig.get_layout_engine() is not None:
        return None
    dpi = fig.dpi
    try:
        fig.set_dpi(PNG_DPI)
        fig.draw_without_rendering()
        pad = plt.rcParams["savefig.pad_inches"]
        return fig.get_tightbbox().padded(pad, pad)
    finally:
        fig.set_dpi(dpi)


# OpenType layout tables a PDF never uses: matplotlib places every glyph itself, and a viewer draws
# glyphs from glyf/loca/hmtx and maps text with the ToUnicode CMap. Leaving DejaVu's GPOS and kern
# out of the subsets makes saving a figure 1.1-1.2x faster (benchmarks/figure_speed.py).
_LAYOUT_TABLES = ["GSUB", "GPOS", "GDEF", "kern", "MATH", "JSTF", "BASE"]
_subset_lock = threading.Lock()
# Subsets made, by font file and glyphs: (the subset font's bytes, matplotlib's glyph index map).
# fontTools parses the whole font again for each subset (~40 ms for DejaVu Sans, whatever the
# glyphs), and the figures of a run repeat their glyphs: the axes of one model's figures, the
# same figure of two models.
_SUBSETS = RecentCache(256)  # ~15 kB each


# A subset is cut from a smaller font made once per font file: its glyphs for the scripts and
# symbols figures use (Latin, Greek, punctuation, super- and subscripts, arrows, mathematical
# operators, shapes), 1,376 of DejaVu Sans' 6,241. fontTools reads every glyph of the font it cuts
# from: a subset of a title's glyphs took 35-63 ms from DejaVu Sans and 10-18 ms from this one,
# the same bytes. Making it costs about two cuts from the whole font (64-182 ms), so it is made at
# a font's second subset: a font used once (a bold title) is cut as before. Text beyond it
# (another script) is cut from the whole font.
_BASE_RANGES = ((0x20, 0x250), (0x370, 0x400), (0x2000, 0x20D0), (0x2100, 0x2150), (0x2190, 0x2300),
                (0x25A0, 0x2600), (0xFFFD, 0xFFFE))
_BASES: dict = {}  # (font file, face) -> (the smaller font's bytes, the font's glyph index -> its)
_CUTS: dict = {}  # (font file, face) -> subsets cut so far


class _FontBytes(io.BytesIO):
    """A font in memory where matplotlib's subsetter takes a font file (it reads its face)."""
    face_index = 0


def _cut_subset(make_subset, fontfile, glyphs: list) -> tuple[bytes, dict]:
    """The subset of `glyphs` (the font's glyph indices) as (font bytes, glyph index map from the
    font's indices to the subset's), cut by matplotlib's `make_subset` from the smaller font."""
    from matplotlib.backends._backend_pdf_ps import font_as_file
    key = (str(fontfile), getattr(fontfile, "face_index", None))
    _CUTS[key] = _CUTS.get(key, 0) + 1
    if key not in _BASES and _CUTS[key] >= 2:
        from matplotlib.font_manager import get_font
        charmap = get_font(fontfile).get_charmap()
        wanted = sorted({charmap[c] for low, high in _BASE_RANGES for c in range(low, high) if c in charmap})
        with make_subset(fontfile, wanted) as base:
            _BASES[key] = font_as_file(base.font).getvalue(), dict(base.glyph_index_map)
    data, to_base = _BASES.get(key, (None, None))
    if to_base is not None and all(g in to_base for g in glyphs):
        source, wanted = _FontBytes(data), [to_base[g] for g in glyphs]
    else:  # the font's first subset, or glyphs beyond the smaller font
        source, wanted = fontfile, glyphs
    with make_subset(source, wanted) as fresh:
        index = {g: fresh.glyph_index_map[w] for g, w in zip(glyphs, wanted)}
        return font_as_file(fresh.font).getvalue(), index


@contextmanager
def _glyph_only_font_subsets():
    """While a figure is saved, fontTools' subsetter (which matplotlib calls to embed the Type 42
    fonts) drops the layout tables, and a subset of glyphs made before is reused. Undone on exit;
    a lock keeps concurrent saves consistent, and a PDF another thread saves meanwhile without
    this (a plain savefig) gets matplotlib's own subsets."""
    try:
        from fontTools import subset
        from matplotlib.backends import _backend_pdf_ps as pdf_ps
    except ImportError:  # matplotlib embeds no subset without fontTools; nothing to change
        yield
        return
    with _subset_lock:
        plain = subset.Options
        make_subset = getattr(pdf_ps, "get_glyphs_subset", None)
        results = getattr(pdf_ps, "SubsetResults", None)
        owner = threading.get_ident()

        class GlyphOnly(plain):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                if threading.get_ident() != owner:
                    return
                if isinstance(getattr(self, "drop_tables", None), list):  # else: fontTools changed; subset as it does
                    self.drop_tables = [*self.drop_tables, *_LAYOUT_TABLES]
                    self.layout_features = []

        def reused_subset(fontfile, glyphs):
            from fontTools.ttLib import TTFont
            if threading.get_ident() != owner:
                return make_subset(fontfile, glyphs)
            glyphs = list(glyphs)
            key = (str(fontfile), getattr(fontfile, "face_index", None), frozenset(glyphs))
            data, index_map = _SUBSETS.get_or_make(key, lambda: _cut_subset(make_subset, fontfile, glyphs))
            # as made: matplotlib saves it again, and a new timestamp would make each copy differ
            return results(TTFont(io.BytesIO(data), recalcTimestamp=False), dict(index_map))._as_cm()

        # matplotlib's own helpers, as this version has them; else fontTools' subsets only
        reuse = (callable(make_subset) and callable(getattr(pdf_ps, "font_as_file", None))
                 and results is not None and hasattr(results, "_as_cm"))
        subset.Options = GlyphOnly
        if reuse:
            pdf_ps.get_glyphs_subset = reused_subset
        try:
            yield
        finally:
            subset.Options = plain
            if reuse:
                pdf_ps.get_glyphs_subset = make_subset


def text_width(text: str, size: float = SMALL_FONT, bold: bool = False) -> float:
    """The width in inches that `text` takes drawn at `size` points in the figures' font (its
    advance: what a line of it needs), for laying out names before they are drawn."""
    if not _styled:
        apply_style()  # the figures' font family, before the first measurement
    return _text_width(text, size, bold, str(plt.rcParams["font.family"]), str(plt.rcParams["font.sans-serif"]))


_styled = False


@functools.lru_cache(maxsize=4096)  # names are measured again and again as they are cut to fit
def _text_width(text: str, size: float, bold: bool, family: str, sans: str) -> float:
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath
    font = FontProperties(size=size, weight="bold" if bold else "normal")
    return TextToPath().get_text_width_height_descent(text, font, ismath=False)[0] / 72


def cut_to_fit(text: str, inches: float, *, size: float = SMALL_FONT, bold: bool = False, mark: str = "…") -> str:
    """text cut (ending in `mark`) to at most `inches` at `size` pt, by bisection on its length (a
    long string takes milliseconds to measure); as it is where it fits; at least one character."""
    if text_width(text, size, bold) <= inches:
        return text
    lo, hi = 1, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if text_width(text[:mid] + mark, size, bold) <= inches else (lo, mid - 1)
    return text[:lo] + mark


def fit_names(names: list[str], inches: float, *, size: float = SMALL_FONT, bold: bool = False,
              mark: str = "…") -> list[str]:
    """Class names cut to fit `inches` each (cut_to_fit) and still told apart: where cut names
    would read alike (names that share their first words: "species 00 longname", "species 01
    longname" both "species 0…"; "plant_disease_00" …), the words every name starts with (up to
    a space, _ or -) give way to the mark first in the names that are cut ("…00 longna…"); a
    name that fits stays whole. The plain cut where that does not tell them apart either."""
    cut = [cut_to_fit(n, inches, size=size, bold=bold, mark=mark) for n in names]
    if len(set(cut)) == len(set(names)) or len(names) < 2:
        return cut
    shared = os.path.commonprefix(list(names))
    shared = shared[:max(shared.rfind(c) for c in " _-") + 1]  # whole words only
    if not shared:
        return cut
    tails = [c if c == n else cut_to_fit(mark + n[len(shared):], inches, size=size, bold=bold, mark=mark)
             for n, c in zip(names, cut)]
    return tails if len(set(tails)) > len(set(cut)) else cut


def class_labels(classes, short: bool = False) -> list[str]:
    """Names for axes and legends (classes: ClassNames, a DatasetSpec, names or a count):
    display names, or the short codes (c0..c9) where a dataset has them and space is tight."""
    return [plain_text(x, MAX_LABEL) for x in ClassNames.of(classes).labels(short)]


def plain_text(text, limit: int | None = None) -> str:
    """User text as matplotlib draws it safely: control characters (a newline would break a
    label's layout, a NUL a font) as spaces, lone surrogates as ?, no U+FEFF; mathtext is off
    in RC, so "$" is a dollar sign; at most `limit` characters."""
    out = _drawable(str(text).translate(CONTROL_AS_SPACE))
    return out if limit is None or len(out) <= limit else out[:limit - 1] + "…"


def show_image(ax, image, *, cmap_gray: bool | None = None) -> None:
    """An (C, H, W) uint8 or [0, 1] image, at its own aspect ratio, in true pixel values: never
    rescaled to its own min and max (a dark image must look dark)."""
    place_image(ax, image)
    bare(ax)


def canvas(width: float, height: float):
    """A figure of width × height inches and one axes spanning it, in inches from its lower left
    corner, on which a page of images is placed by extent (place_image) with its texts: an axes
    per image cost 19 ms to make, 2 s for a page of 100. Returns (fig, ax)."""
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_autoscale_on(False)
    ax.set(xlim=(0, width), ylim=(0, height))
    bare(ax)
    ax.axis("off")  # nor its background drawn
    return fig, ax


def place_image(ax, image, extent: tuple[float, float, float, float] | None = None) -> None:
    """show_image's pixels drawn on `ax`, filling `extent` (left, right, bottom, top in data
    units: one of many images on one axes) or, without one, the axes at the image's aspect."""
    import numpy as np
    import torch
    x = image.detach().cpu() if torch.is_tensor(image) else torch.as_tensor(image)
    x = x.float() / 255 if not x.is_floating_point() else x.float()
    arr = x.clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, C)
    where = {} if extent is None else {"extent": extent, "aspect": "auto"}
    if arr.shape[2] == 1:
        ax.imshow(arr[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="none", **where)
    else:
        ax.imshow(np.ascontiguousarray(arr), vmin=0, vmax=1, interpolation="none", **where)


def bare(ax) -> None:
    """An axes of a picture: no ticks, grid or frame; its x and y axis not drawn at all (nor
    measured for the tight box): with no ticks they draw nothing, yet laying them out took a
    third of the time of saving a grid of images. A title and texts of the axes stay; an axis
    label would not show."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.xaxis.set_visible(False)
    ax.yaxis.set_visible(False)
