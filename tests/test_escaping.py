"""User text (model, class and file names) reaches each output through that output's one
escaping function: TeX (tex_escape), reportlab markup (markup), matplotlib (mathtext off,
control characters as spaces), HTML (Jinja2 autoescape). Each is fed every character 0-255 and
every special of its output, and the result is compiled or rendered for real."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from probe.presentation import Section, Table
from probe.report.latex import table_tex, tex_escape
from probe.report.pdf import markup

EVERY_BYTE = "".join(chr(i) for i in range(256))
HOSTILE = ["x\n\\input{/etc/hostname}", "^^5cinput{/etc/hostname}", "$\\frac{a}{b}$ 100% #1 &~_{}",
           "<b onerror=alert(1)>bold</b> &amp; <para>", "\\\\end{document}", "ε ∞ ≥ 漢字 \u00a0–—", EVERY_BYTE,
           "[3pt] *starred", "lone \ud800 surrogate"]


def _needs(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: .ci/run installs it")
        pytest.skip(f"no {tool} here")
    return path


def test_tex_escape_compiles_and_runs_nothing(tmp_path):
    pdflatex = _needs("pdflatex")
    lines = [f"% a comment holding user text: {tex_escape(t)}" for t in HOSTILE]
    body = "\n\n".join(f"Item {i}: {tex_escape(t)}" for i, t in enumerate(HOSTILE))
    # every name also as a table's first cell: a row that starts with [ must not be an option
    body += "\n\n" + table_tex(Section("s", "s"), Table(["name", "n"], [[t[:50], "1"] for t in HOSTILE]), "t")
    (tmp_path / "doc.tex").write_text("\n".join(["\\documentclass{article}", "\\usepackage{graphicx,booktabs,array}", *lines, "\\begin{document}", body,
                                                 "\n\nThe end.", "\\end{document}", ""]))
    run = subprocess.run([pdflatex, "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert run.returncode == 0, log[-3000:]
    assert "\n! " not in log
    text = subprocess.run([_needs("pdftotext"), "doc.pdf", "-"], cwd=tmp_path, capture_output=True,
                          text=True).stdout
    assert "The end." in text and "Item 8" in text and "[3pt] *starred" in text
    assert "input{/etc/hostname}" in text.replace("\n", "")  # printed, not run
    hostname = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").is_file() else ""
    if len(hostname) > 3:
        assert hostname not in text


def test_tex_escape_leaves_no_special_unescaped():
    out = tex_escape(EVERY_BYTE)
    assert all(ch.isascii() and (ch >= " ") for ch in out)
    assert "^^" not in out and "\n" not in out


def test_reportlab_markup_builds_and_prints_the_text(tmp_path):
    from pypdf import PdfReader

    from probe.presentation import Report, Section, Table, Text
    from probe.report.pdf import render_pdf
    sections = [Section(t, f"s{i}", [Text(t), Table([t, "n"], [[t, "1"]], caption=t)]) for i, t in enumerate(HOSTILE)]
    pdf = render_pdf(Report(HOSTILE[3], HOSTILE[2], sections, "today"), tmp_path / "r.pdf")
    text = "\n".join(p.extract_text() for p in PdfReader(pdf).pages)
    assert "<b onerror=alert(1)>bold</b> &amp; <para>" in text  # shown, also in the contents
    assert text.count("onerror") >= 4
    assert markup("a<b>&\x00") == "a&lt;b&gt;&amp; "


def test_matplotlib_draws_hostile_names_as_text(tmp_path):
    from probe.figures.failures import confusion_figure
    from probe.figures.style import plain_text, save_figure
    names = ([t[:40] for t in HOSTILE] + ["$x$", "a$b", "c"])[-10:]  # lone surrogate, [ and $ among them
    fig = confusion_figure([[1] * 10 for _ in range(10)], names)
    fig.suptitle(plain_text(EVERY_BYTE))
    png, pdf = save_figure(fig, tmp_path, "hostile")
    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000


def test_pdf_of_names_no_layout_can_hold(tmp_path):
    """Found by the fuzz suite (issue 18): a lone surrogate in the report's title (a model folder
    whose name is not UTF-8) stopped the PDF's metadata with UnicodeEncodeError; a cell of a
    5,000-character name made a table row taller than a page (reportlab's LayoutError); a table
    of 40 columns left each a negative width (ValueError)."""
    from pypdf import PdfReader

    from probe.presentation import Report, Section, Table, Text
    from probe.report.pdf import render_pdf
    wide = Table([f"model {i}" for i in range(60)], [[f"{i}.5%" for i in range(60)]], caption="wide", numeric={3})
    report = Report("probe report: run\udcff\x1b", "of run\udcff", [Section("s", "s", [
        Text("t"), Table(["name", "n"], [["x" * 5000, "1"], ["ab " * 3000, "2"]]), wide])], "today")
    pdf = render_pdf(report, tmp_path / "r.pdf")
    reader = PdfReader(pdf)
    assert reader.metadata.title == "probe report: run? " and reader.metadata.subject == "of run?"
    text = "\n".join(p.extract_text() for p in reader.pages)
    assert "x" * 300 in text.replace("\n", "") and "model 59" in text and "columns 2–" in text


@pytest.mark.parametrize("name, columns", [("\u200b", 2), ("\u0301" * 50, 2), ("\ufeff", 3), ("a" * 400, 12),
                                           ("漢" * 1000, 12)])
def test_pdf_tables_of_names_of_no_width_or_great_length(tmp_path, name, columns):
    """Found by the fuzz suite: a column whose every cell was zero-width characters (U+200B, a
    combining accent) was made 0 pt wide for its text: reportlab's row grew without end
    (LayoutError); twelve columns of 400-character names made a header row and a row taller
    than a page together."""
    from probe.presentation import Report, Section, Table
    from probe.report.pdf import render_pdf
    report = Report("t", "s", [Section("s", "s", [Table([name] * columns, [[name] * columns] * 3)])], "today")
    assert render_pdf(report, tmp_path / "r.pdf").stat().st_size > 1000


def test_figures_of_very_long_names_stay_page_sized(tmp_path):
    """Found by the fuzz suite: class names of 1,000 characters (what a dataset spec allows) on
    a confusion matrix's axes, with the figure saved to its tight bounding box, made a PNG of
    11,834 × 8,536 pixels and took 2.9 GB while drawing; a long title made the figure as wide."""
    from PIL import Image

    from probe.figures.failures import confusion_figure
    from probe.figures.style import plain_text, save_figure
    fig = confusion_figure([[1] * 10 for _ in range(10)], [f"{i}" + "#" * 300 for i in range(10)])
    fig.suptitle(plain_text("model " * 500))
    png, pdf = save_figure(fig, tmp_path, "long")
    width, height = Image.open(png).size
    assert width < 4000 and width * height < 10_000_000, (width, height)  # before: 233 million pixels


@pytest.mark.overlapping_text  # a text of 5,000 lines over the axes, to be cut
def test_a_wrapped_legend_is_kept_whole_and_a_runaway_text_is_cut(tmp_path):
    """The cut is per line: the fooling figure's legend, wrapped to the figure's width, is 250
    characters in three lines and lost its last words ("goal ≥ 0.99, re…") when the cut was on
    the whole text. A text of thousands of lines is still cut to MAX_FIGURE_LINES."""
    from PIL import Image

    from probe.figures.style import MAX_FIGURE_LINES, MAX_FIGURE_TEXT, new_figure, save_figure
    legend = "\n".join(f"line {i}: " + "words of a legend " * 5 for i in range(3))
    assert len(legend) > MAX_FIGURE_TEXT and max(map(len, legend.split("\n"))) < MAX_FIGURE_TEXT
    fig, ax = new_figure()
    kept = fig.text(0.5, 0.5, legend)
    runaway = fig.text(0.1, 0.1, "\n".join(["tall"] * 5000 + ["x" * 1000]))
    png, _ = save_figure(fig, tmp_path, "legend")
    assert kept.get_text() == legend
    lines = runaway.get_text().split("\n")
    assert len(lines) == MAX_FIGURE_LINES and lines[-1].endswith("…")
    assert Image.open(png).size[1] < 4000


def test_figure_texts_that_no_plain_text_passed(tmp_path):
    """Found by the fuzz suite: a title made of a model's name (a lone surrogate: a folder name
    that is not UTF-8) stopped matplotlib (TypeError in FT2Font.set_text), and U+FEFF the PDF
    backend (IndexError); save_figure makes every text drawable, however it was made."""
    from probe.figures.failures import confusion_figure
    from probe.figures.style import save_figure
    fig = confusion_figure([[1] * 10 for _ in range(10)], ["\ufeff^b", "x\ud8d4", *map(str, range(8))])
    fig.suptitle("\ud8d4: 18 of 20 test images misclassified")
    fig.text(0.1, 0.1, "\ufeff^b .07")
    png, pdf = save_figure(fig, tmp_path, "odd")
    assert png.stat().st_size > 1000 and pdf.read_bytes()[:5] == b"%PDF-"
