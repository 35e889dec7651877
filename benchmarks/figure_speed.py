"""Figure and report-PDF speed: probe's way against the plain way, in one run, on the same inputs.

    .venv/bin/python benchmarks/figure_speed.py
    .venv/bin/python benchmarks/figure_speed.py --repeats 9 --json out.json

1. Saving a figure (PNG at 200 dpi + PDF with Type 42 fonts). Reference: matplotlib's own
   `fig.savefig` of both files, fontTools as shipped (matplotlib subsets the OpenType layout
   tables GSUB/GPOS/kern along with the glyphs). probe: `probe.figures.style.save_figure`, whose
   subsets keep only what a PDF reads. The figures are the report's own kinds: a confusion matrix
   (counts, log scale), its row-normalized twin, per-class accuracy with intervals, and an image
   grid like the misclassified page (48 images with titles).
2. Drawing a page of 100 wrong images (the misclassified grid, MNIST's layout: true class above each
   image, prediction and second choice below), both saved with save_figure. Reference: one axes per
   image, matplotlib's usual way and probe's before (`fig.add_axes` each, texts in axes fractions).
   probe: `probe.figures.failures.misclassified_pages`, every image placed by its extent on one
   axes spanning the page (`probe.figures.style.canvas`).
3. Putting figure PDFs into the report's pages. Reference: pypdf's `merge_transformed_page` of
   each figure page (what probe did before: it parses and rewrites every content stream).
   probe: `probe.report.pdf._stamp_figures` (each figure page whole as a Form XObject, and
   repeated objects, such as the same font subset in two figures, kept once).
4. Cutting the font subsets of 20 figures whose titles differ (every number of a run differs, so
   each figure's PDF needs a subset of its own). Reference: matplotlib's subsetter on the whole
   font; probe: `probe.figures.style._cut_subset`, from a smaller font made once per font file
   (at its second subset; its cost, about two cuts, falls in the warm-up round).

A round times both sides on every input, alternating which goes first; round 0 is a warm-up left
out of the medians. Reported: median seconds of each side, the ratio of medians and the median of
the per-round ratios ("paired"), and for the PDFs the output sizes.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe.methods.confusion import confusion_matrix  # noqa: E402
from probe.data.spec import MNIST  # noqa: E402
from probe.figures.failures import confusion_figure, per_class_figure  # noqa: E402
from probe.figures.style import PNG_DPI, new_figure, save_figure, show_image  # noqa: E402
from probe.provenance import versions  # noqa: E402
from results_file import machine, write_json  # noqa: E402


def figures() -> dict:
    """name -> a function making a fresh figure (a figure is closed once saved)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(1000) % 10
    predicted = torch.where(torch.rand(1000, generator=g) < 0.9, labels, torch.randint(0, 10, (1000,), generator=g))
    confusion = confusion_matrix(labels, predicted, 10)
    images = torch.randint(0, 256, (48, 1, 28, 28), dtype=torch.uint8, generator=g)

    def grid():
        fig, axes = new_figure(height=6.0, nrows=6, ncols=8)
        for ax, image, k in zip(axes.flat, images, range(48)):
            show_image(ax, image)
            ax.set_title(f"{k % 10} → {(k + 3) % 10}  .{90 - k:02d}", fontsize=8)
        fig.suptitle("48 of 1,000 test images misclassified")
        return fig

    return {"confusion": lambda: confusion_figure(confusion.matrix.tolist(), MNIST),
            "confusion-normalized": lambda: confusion_figure(confusion.matrix.tolist(), MNIST, normalized=True),
            "per-class": lambda: per_class_figure(confusion.per_class(), MNIST),
            "image grid": grid}


def grid_pages() -> dict:
    """The 100-image page both ways: name -> (reference maker, probe maker)."""
    import math
    from probe.figures.failures import LINE, _grid_layout, _p, misclassified_pages
    from probe.figures.style import FULL_WIDTH, SMALL_FONT, WRONG, apply_style
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8, generator=g)
    s = MNIST.classes
    records = [{"true": s[k % 10], "predicted": s[(k + 1) % 10], "second": s[(k + 2) % 10],
                "p_true": 0.1, "p_predicted": 0.6, "p_second": 0.3} for k in range(100)]

    def one_axes_per_image():
        import matplotlib.pyplot as plt
        apply_style()
        lay = _grid_layout(MNIST, 28, 28, 100)
        height = math.ceil(100 / lay.cols) * lay.cell_h + 0.3
        fig = plt.figure(figsize=(FULL_WIDTH, height))
        for j, rec in enumerate(records):
            r, c = divmod(j, lay.cols)
            left = (c * lay.cell_w + (lay.cell_w - lay.img_w) / 2) / FULL_WIDTH
            bottom = (height - 0.3 - r * lay.cell_h - LINE - lay.img_h) / height
            ax = fig.add_axes((left, bottom, lay.img_w / FULL_WIDTH, lay.img_h / height))
            show_image(ax, images[j])
            kw = dict(transform=ax.transAxes, fontsize=SMALL_FONT)
            ax.text(0, 1.02, f"{rec['true']} {_p(rec['p_true'])}", ha="left", va="bottom", **kw)
            ax.text(0, -0.03, f"{rec['predicted']} {_p(rec['p_predicted'])}", ha="left", va="top", color=WRONG,
                    fontweight="bold", **kw)
            ax.text(1, -0.03, f"{rec['second']} {_p(rec['p_second'])}", ha="right", va="top", color="0.35", **kw)
        fig.text(0.5, 1 - 0.05 / height, "100 wrong images", ha="center", va="top")
        return fig
    return {"100-image page": (one_axes_per_image,
                               lambda: misclassified_pages(records, images, MNIST, title="100 wrong images")[0])}


def plain_save(fig, folder: Path, stem: str) -> None:
    import matplotlib.pyplot as plt
    fig.savefig(folder / f"{stem}.png", dpi=PNG_DPI)
    fig.savefig(folder / f"{stem}.pdf", metadata={"Creator": "probe"})
    plt.close(fig)


def merge_pages(layout_pdf: str, placed: list) -> bytes:
    """The reference: pypdf merges each figure page into the layout page."""
    from pypdf import PdfReader, PdfWriter, Transformation
    writer = PdfWriter(clone_from=PdfReader(layout_pdf))
    for page, x, y, slot in placed:
        fig_page = PdfReader(str(slot.figure.pdf)).pages[0]
        left, bottom, _, _ = slot.box
        t = Transformation().translate(-left, -bottom).scale(slot.scale, slot.scale).translate(x, y)
        writer.pages[page - 1].merge_transformed_page(fig_page, t)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def layout(folder: Path, pdfs: list[Path]) -> tuple[str, list]:
    """A blank A4 page per two figures, and where each figure goes (as the report places them)."""
    from pypdf import PdfReader, PdfWriter
    writer = PdfWriter()
    placed = []
    for k, pdf in enumerate(pdfs):
        if k % 2 == 0:
            writer.add_blank_page(595.3, 841.9)
        box = PdfReader(str(pdf)).pages[0].mediabox
        box = (float(box.left), float(box.bottom), float(box.width), float(box.height))
        scale = min(450 / box[2], 350 / box[3], 1.0)
        slot = SimpleNamespace(figure=SimpleNamespace(pdf=pdf), box=box, scale=scale)
        placed.append((k // 2 + 1, 72.0, 440.0 if k % 2 == 0 else 60.0, slot))
    path = folder / "layout.pdf"
    with open(path, "wb") as f:
        writer.write(f)
    return str(path), placed


def median_ratio(reference: list[float], probe: list[float]) -> dict:
    return {"reference_median_s": statistics.median(reference), "probe_median_s": statistics.median(probe),
            "ratio_of_medians": statistics.median(reference) / statistics.median(probe),
            "paired": statistics.median(r / p for r, p in zip(reference, probe))}


def font_subsets(count: int = 20):
    """Cutting the font subsets of `count` titles that differ in their digits (a run's figures:
    every number differs), each cut once as a figure's PDF would (no reuse): (reference, probe).
    Reference: matplotlib's subsetter on the whole font; probe: `style._cut_subset`, from the
    smaller font it makes once per font file, at the font's second subset: made in the warm-up
    round, so the medians leave out its cost (64-182 ms once per font and process, about two
    cuts from the whole font). Both drop the layout tables (probe's subsetter options), so the
    difference is the font they cut from."""
    from matplotlib.backends import _backend_pdf_ps as pdf_ps
    from matplotlib.font_manager import FontProperties, findfont, get_font
    from probe.figures import style
    whole = pdf_ps.get_glyphs_subset
    font_file = findfont(FontProperties(family="DejaVu Sans"))
    charmap = get_font(font_file).get_charmap()
    sets = [sorted({charmap[ord(c)] for c in f"Accuracy against ε, run {k}: n = {1000 + 37 * k} ({k / 7:.4f})"})
            for k in range(count)]

    def reference():
        with style._glyph_only_font_subsets():
            for glyphs in sets:
                with whole(font_file, glyphs) as cut:
                    pdf_ps.font_as_file(cut.font)

    def probe():
        with style._glyph_only_font_subsets():
            for glyphs in sets:
                style._cut_subset(whole, font_file, glyphs)
    return reference, probe


def _library_versions() -> dict:
    from importlib.metadata import version
    return {name: version(name) for name in ("matplotlib", "fonttools", "pypdf", "reportlab")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up (default 5)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "figure-speed.json")
    args = p.parse_args(argv)
    from probe.report.pdf import _stamp_figures
    makers, pages = figures(), grid_pages()
    subsets = font_subsets()
    timings = {name: {"reference": [], "probe": []} for name in [*makers, *pages, "report PDF", "20 font subsets"]}
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for round_ in range(args.repeats + 1):
            sides = [("reference", plain_save), ("probe", save_figure)]
            if round_ % 2:
                sides.reverse()
            for name, make in makers.items():
                for side, save in sides:
                    (tmp / side).mkdir(exist_ok=True)
                    fig = make()
                    start = time.perf_counter()
                    save(fig, tmp / side, name.replace(" ", "-"))
                    if round_:
                        timings[name][side].append(time.perf_counter() - start)
            for name, both in pages.items():  # drawn and saved, both with save_figure
                for side, make in (zip(("reference", "probe"), both) if round_ % 2 == 0
                                   else zip(("probe", "reference"), both[::-1])):
                    (tmp / "pages").mkdir(exist_ok=True)
                    start = time.perf_counter()
                    save_figure(make(), tmp / "pages", side)
                    if round_:
                        timings[name][side].append(time.perf_counter() - start)
            for side, cut in (zip(("reference", "probe"), subsets) if round_ % 2 == 0
                              else zip(("probe", "reference"), subsets[::-1])):
                start = time.perf_counter()
                cut()
                if round_:
                    timings["20 font subsets"][side].append(time.perf_counter() - start)
            pdfs = sorted((tmp / "probe").glob("*.pdf")) * 3  # 12 figures: a report's worth
            layout_pdf, placed = layout(tmp, pdfs)
            stamps = [("reference", merge_pages), ("probe", _stamp_figures)]
            if round_ % 2:
                stamps.reverse()
            for side, stamp in stamps:
                start = time.perf_counter()
                data = stamp(layout_pdf, placed)
                if round_:
                    timings["report PDF"][side].append(time.perf_counter() - start)
                sizes[side] = len(data)
    rows = {name: median_ratio(t["reference"], t["probe"]) for name, t in timings.items()}
    print(f"{'':24} {'reference':>10} {'probe':>8} {'× faster':>9} {'paired':>7}")
    for name, r in rows.items():
        print(f"{name:24} {r['reference_median_s']:9.3f}s {r['probe_median_s']:7.3f}s "
              f"{r['ratio_of_medians']:8.2f}× {r['paired']:6.2f}×")
    print(f"report PDF of 12 figures: {sizes['reference'] / 1e3:,.0f} kB (reference), {sizes['probe'] / 1e3:,.0f} kB (probe)")
    doc = {"benchmark": "figure_speed", "repeats": args.repeats, "rows": rows,
           "pdf_bytes": sizes, "timings": timings, "machine": machine(),
           "versions": versions() | _library_versions()}
    write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
