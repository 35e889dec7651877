"""save_figure: a 200 dpi PNG and a PDF whose text is text, in embedded TrueType fonts that hold
only what a PDF uses (no OpenType layout tables), with fontTools left as it was found."""
import io

import numpy as np
import pytest
from fontTools import subset
from fontTools.ttLib import TTFont
from PIL import Image
from pypdf import PdfReader

from probe.figures.style import PNG_DPI, new_figure, save_figure

TITLE = "Robust accuracy at ε = 8/255 → ‘9’ (fi AV)"


def embedded_fonts(pdf_path):
    """(BaseFont, fontTools font) of every font program embedded in the PDF's first page."""
    fonts = []
    for font in PdfReader(pdf_path).pages[0]["/Resources"]["/Font"].values():
        font = font.get_object()
        descendant = font.get("/DescendantFonts")
        descriptor = (descendant[0].get_object() if descendant else font)["/FontDescriptor"].get_object()
        program = descriptor.get("/FontFile2")
        assert program is not None, f"{font['/BaseFont']} is not embedded as TrueType"
        fonts.append((str(font["/BaseFont"]), TTFont(io.BytesIO(program.get_object().get_data()))))
    return fonts


def test_pdf_text_is_text_in_lean_embedded_truetype_fonts(tmp_path):
    options_before = subset.Options
    fig, ax = new_figure()
    ax.plot(np.arange(5), np.arange(5))
    ax.set_title(TITLE)
    ax.set_xlabel("ε (L∞)")
    png, pdf = save_figure(fig, tmp_path, "figure")
    assert subset.Options is options_before  # the subsetter is as it was
    text = PdfReader(pdf).pages[0].extract_text()
    assert TITLE in text and "ε (L∞)" in text
    fonts = embedded_fonts(pdf)
    assert fonts
    for name, font in fonts:
        assert "DejaVu" in name
        assert not {"GSUB", "GPOS", "kern"} & set(font.keys()), (name, sorted(font.keys()))
        assert {"glyf", "loca", "hmtx"} <= set(font.keys())
    with Image.open(png) as image:
        assert round(image.info["dpi"][0]) == PNG_DPI
        width_inches = image.size[0] / PNG_DPI
    assert 4 < width_inches < 7  # the full text width, cropped tight


def test_a_failed_save_leaves_the_subsetter_as_it_was(tmp_path):
    options_before = subset.Options
    fig, ax = new_figure()
    ax.set_title(r"$\frac{1$", parse_math=True)  # broken mathtext: the save fails while drawing
    with pytest.raises(ValueError):
        save_figure(fig, tmp_path, "figure")
    assert subset.Options is options_before
    assert not list(tmp_path.iterdir())  # no half-written file


def test_a_reused_font_subset_embeds_the_same_font(tmp_path):
    """A subset of glyphs made before (the same text saved again) is reused: the second PDF's
    fonts are the first's, embedded, and its text is still text."""
    from probe.figures import style
    style._SUBSETS.clear()
    pdfs = []
    for k in range(2):
        fig, ax = new_figure()
        ax.set_title(TITLE)
        pdfs.append(save_figure(fig, tmp_path, f"figure-{k}")[1])
        assert style._SUBSETS  # made once, then found
    first, second = (embedded_fonts(pdf) for pdf in pdfs)
    assert [name for name, _ in first] == [name for name, _ in second]
    for (_, a), (_, b) in zip(first, second):
        assert a.getGlyphOrder() == b.getGlyphOrder()
        assert {"glyf", "loca", "hmtx"} <= set(b.keys()) and not {"GSUB", "GPOS", "kern"} & set(b.keys())
    assert TITLE in PdfReader(pdfs[1]).pages[0].extract_text()
