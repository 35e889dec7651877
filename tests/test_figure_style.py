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
