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


def font_programs(pdf_path) -> list[bytes]:
    out = []
    for font in PdfReader(pdf_path).pages[0]["/Resources"]["/Font"].values():
        descendant = font.get_object()["/DescendantFonts"][0].get_object()
        out.append(descendant["/FontDescriptor"]["/FontFile2"].get_object().get_data())
    return out


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=float)


@pytest.mark.parametrize("outside", [False, True])
def test_the_png_is_the_one_savefig_makes_tight(tmp_path, outside):
    """save_figure measures the tight box once for both files: its PNG is the size
    savefig(bbox_inches="tight") gives, the same pixels up to a sub-pixel shift, a text placed
    past the figure's edge in it too."""
    def figure():
        fig, ax = new_figure(width=3.1)
        ax.imshow(np.arange(64).reshape(8, 8), cmap="viridis")
        ax.set_title("ε = 8/255")
        if outside:
            ax.text(1.3, 0.5, "a note past the edge", transform=ax.transAxes)
        return fig
    png, _ = save_figure(figure(), tmp_path, "ours")
    fig = figure()
    fig.savefig(tmp_path / "theirs.png", dpi=PNG_DPI, bbox_inches="tight")
    ours, theirs = pixels(png), pixels(tmp_path / "theirs.png")
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).mean() < 4  # of 255: edges moved by under a pixel, nothing else
    if outside:
        assert ours.shape[1] / PNG_DPI > 3.1  # wider than the figure: the note is in it


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
    # byte for byte (no new timestamp), so the report's PDF keeps one copy
    assert font_programs(pdfs[0]) == font_programs(pdfs[1])
    for (_, a), (_, b) in zip(first, second):
        assert a.getGlyphOrder() == b.getGlyphOrder()
        assert {"glyf", "loca", "hmtx"} <= set(b.keys()) and not {"GSUB", "GPOS", "kern"} & set(b.keys())
    assert TITLE in PdfReader(pdfs[1]).pages[0].extract_text()


def test_names_cut_to_fit_stay_apart():
    """Found by looking at a 40-class folder dataset: "species 00 longname" … "species 39
    longname" cut to a heading's width all read "species 0…". The shared first words give way
    first; names that fit are left alone; every label fits its width."""
    from probe.figures.style import cut_to_fit, fit_names, text_width
    names = [f"species {i:02d} longname" for i in range(40)]
    for inches, bold, mark in ((0.55, False, "…"), (0.45, True, ".")):
        fitted = fit_names(names, inches, bold=bold, mark=mark)
        assert len(set(fitted)) == 40 and all(text_width(f, bold=bold) <= inches for f in fitted)
        assert fitted[7].startswith(mark + "07")
    assert fit_names(["cat", "dog"], 1.0) == ["cat", "dog"]
    assert fit_names(["species 1", "species 22 longname", "species 23 longname"], 0.6)[0] == "species 1"  # fits
    assert len(set(fit_names([f"plant_disease_{i:02d}" for i in range(5)], 0.5))) == 5  # folder names: _ breaks words
    assert fit_names(["airplane", "automobile"], 0.5) == [cut_to_fit("airplane", 0.5), cut_to_fit("automobile", 0.5)]
    assert cut_to_fit("automobile", 0.5).endswith("…") and cut_to_fit("x" * 5000, 0.3) == "x" * len(
        cut_to_fit("x" * 5000, 0.3)[:-1]) + "…"


@pytest.mark.parametrize("eps, in_255, written", [(0.3, False, "0.3"), (0.01, False, "0.01"), (1 / 255, False, "1/255"),
                                                  (4 / 255, False, "4/255"), (0.0123456, False, "0.0123"),
                                                  (8 / 255, True, "8/255"), (0, True, "0")])
def test_eps_is_written_as_it_was_given(eps, in_255, written):
    """An ε of 1/255 given to the Python API was written 0.00392157 on the examples' rows."""
    from probe.figures.attacks import eps_label
    assert eps_label(eps, in_255) == written


@pytest.mark.parametrize("text", [TITLE, "Ա ց ѣ"])  # Armenian and Cyrillic: beyond the smaller font
def test_a_subset_cut_from_the_smaller_font_is_the_one_cut_from_the_font(text, tmp_path):
    """From a font's second subset on, subsets are cut from a smaller font of the glyphs figures
    use: table for table the bytes matplotlib's subsetter cuts from the whole font (as the first
    is); text beyond it is cut from the whole font, and reads as text in the PDF."""
    from matplotlib.backends import _backend_pdf_ps as pdf_ps
    from matplotlib.font_manager import FontProperties, findfont, get_font
    from probe.figures import style
    font_file = findfont(FontProperties(family="DejaVu Sans"))
    key = (str(font_file), getattr(font_file, "face_index", None))
    style._BASES.pop(key, None), style._CUTS.pop(key, None)
    charmap = get_font(font_file).get_charmap()
    glyphs = sorted({charmap[ord(c)] for c in text})
    whole = pdf_ps.get_glyphs_subset  # outside the context: matplotlib's own
    with style._glyph_only_font_subsets():
        cuts = [style._cut_subset(whole, font_file, glyphs) for _ in range(2)]
        assert key in style._BASES  # made at the second
        with whole(font_file, glyphs) as theirs:
            expected, expected_index = TTFont(io.BytesIO(pdf_ps.font_as_file(theirs.font).getvalue())), theirs.glyph_index_map
    for data, index in cuts:
        ours = TTFont(io.BytesIO(data))
        assert ours.getGlyphOrder() == expected.getGlyphOrder()
        assert {g: index[g] for g in glyphs} == {g: expected_index[g] for g in glyphs}
        assert sorted(ours.reader.keys()) == sorted(expected.reader.keys())
        assert all(ours.reader[t] == expected.reader[t] for t in ours.reader.keys() if t != "head")
    assert any(g not in style._BASES[key][1] for g in glyphs) == (text != TITLE)
    fig, ax = new_figure()
    ax.set_title(text)
    assert text in PdfReader(save_figure(fig, tmp_path, "figure")[1]).pages[0].extract_text()


def test_another_threads_pdf_gets_matplotlibs_own_subsets():
    """While save_figure holds the subsetter, a plain savefig in another thread goes to
    matplotlib's own: none of probe's caches or options."""
    import threading
    from matplotlib.backends import _backend_pdf_ps as pdf_ps
    from matplotlib.font_manager import FontProperties, findfont, get_font
    from probe.figures import style
    font_file = findfont(FontProperties(family="DejaVu Sans"))
    glyphs = [get_font(font_file).get_charmap()[ord("Q")]]
    seen = {}

    def other():
        with pdf_ps.get_glyphs_subset(font_file, glyphs) as cut:
            seen["tables"] = set(cut.font.keys())
        seen["options"] = subset.Options().layout_features
    with style._glyph_only_font_subsets():
        before = (dict(style._CUTS), len(style._SUBSETS))
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert (dict(style._CUTS), len(style._SUBSETS)) == before
        assert subset.Options().layout_features == []  # this thread: probe's options
    assert "GPOS" in seen["tables"] and seen["options"] != []  # the other: fontTools' own
