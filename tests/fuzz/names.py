"""Hostile names through every output: a model folder's name, a class name and the file names of
misclassified images, drawn by hypothesis (HTML and LaTeX specials, very long, right-to-left
marks, newlines and other controls, any NUL-free unicode, lone surrogates), go through the
report's real parts (the model card, the misclassified section, its figures) into HTML, PDF,
figures.tex and tables.tex, PNG/PDF figures and file names.

Besides ending without an exception, each output is checked against the same report made with a
benign name: the HTML has the same elements and attributes (no name became markup), figures.tex
and tables.tex are printable ASCII with the same TeX commands that could run or read anything
(no name became TeX), file names stay inside their folder and are made of safe characters.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

from hypothesis import strategies as st

SPECIALS = ("<>&\"'`\\{}$%#^_~[]|/\n\r\t\x0b\x0c\x1b\x7f\x85\u202e\u202d\u200f\u200e\u2066\u2067\u2069\ufeff"
            "\u00a0\u2028\u2029\u0301ε∞≥漢字ع😀")
FIXED = ("<script>alert(1)</script>", "\\input{/etc/hostname}", "$\\frac{1}{2}$", "^^5cinput{/etc/hostname}",
         "\\\\end{document}", "\u202egnp.exe", "\n\n", "x\ud800y", "%", "#1", "&&", "]]>", "<!--", "{{ 7*7 }}",
         "{% raw %}", "../../etc/passwd", "..", ".", " ", "\u0301", "[3pt] *starred", "a" * 10_000,
         "<b onerror=alert(1)>bold</b> &amp; <para>", "\\catcode`\\^^@=13", "javascript:alert(1)",
         "\\write18{touch /tmp/pwned}", "~" * 300, "_" * 3000, "\\" * 999, "{" * 500, "$" * 77)
hostile_name = st.one_of(
    st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=40),
    st.text(st.sampled_from(SPECIALS + "ab"), min_size=1, max_size=60),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.sampled_from("ab<\\"), min_size=1, max_size=8),
    st.sampled_from(FIXED),
    st.tuples(st.text(st.sampled_from(SPECIALS + "ab"), min_size=1, max_size=5), st.integers(200, 5000)).map(
        lambda t: (t[0] * (t[1] // len(t[0]) + 1))[:t[1]]),
)
STRATEGY = st.tuples(st.just("names"), hostile_name, st.sampled_from(("model", "class", "file", "all")))

DANGEROUS_TEX = re.compile(r"\\(input|include|write|immediate|openout|openin|read|def|edef|gdef|let|catcode|"
                           r"csname|begin|end|usepackage|documentclass|special|newcommand|renewcommand)\b|\^\^")


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, tuple(sorted(a for a, _ in attrs))))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)


def html_structure(html: str) -> list:
    p = _Tags()
    p.feed(html)
    p.close()
    return p.tags


def fs_name(name: str) -> str:
    """The name as a folder name can hold it: no / or NUL, encodable, at most 255 bytes, not . or .."""
    out = name.replace("/", "_").replace("\x00", "_")
    out = out.encode("utf-8", "replace").decode("utf-8")  # lone surrogates cannot be a file's name here
    while len(os.fsencode(out)) > 255:
        out = out[:-1]
    return out if out not in ("", ".", "..") else "m" + out


def _tiny_figure_files(folder: Path, stems) -> None:
    src = Path(__file__).parent
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        for ext in ("png", "pdf"):
            shutil.copyfile(_PLACEHOLDER[ext], folder / f"{stem}.{ext}")


_PLACEHOLDER: dict[str, Path] = {}


def make_placeholders(base: Path) -> None:
    """A 4×4 PNG and a one-page PDF that stand for every figure of a section."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    base.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(0.4, 0.4), dpi=10)
    for ext in ("png", "pdf"):
        fig.savefig(base / f"placeholder.{ext}")
        _PLACEHOLDER[ext] = base / f"placeholder.{ext}"
    plt.close(fig)


def _build(name: str, where: str, work: Path, shared, draw: bool) -> dict:
    """Every output of a report holding `name`; returns what the checks compare."""
    from probe.analysis.misclassified import ANALYSIS, MisclassifiedResult
    from probe.analysis.runner import output_folder
    from probe.models.folder import read_model_folder
    from probe.presentation import Report, Section, Table, Text, slug
    from probe.report.html import render_html
    from probe.report.latex import write_latex
    from probe.report.pdf import render_pdf
    from probe.report.structure import model_card, place_figures
    from safetensors.torch import load_file

    if not _PLACEHOLDER:
        make_placeholders(shared["base"] / "placeholders")
    model_name = fs_name(name) if where in ("model", "all") else "tiny"
    folder = work / "models" / model_name
    shutil.copytree(shared["model"], folder)
    meta = json.loads((folder / "meta.json").read_text())
    if where in ("class", "all"):
        meta["dataset"]["display_names"][0] = name[:1000]
        (folder / "meta.json").write_text(json.dumps(meta))
    mf = read_model_folder(folder)
    doc = json.loads((shared["base"] / "cache" / "misclassified" / "results.json").read_text())["results"]
    doc = copy.deepcopy(doc)
    if where in ("model", "all"):
        doc["model"] = name
    if where in ("class", "all"):
        doc["display_names"][0] = name[:1000]  # what meta.json may hold
    if where in ("file", "all"):
        for r in doc["misclassified"]:
            r["name"] = name
    arrays = load_file(shared["base"] / "cache" / "misclassified" / "arrays.safetensors")
    result = MisclassifiedResult.from_json(doc, arrays)
    prefix = slug(mf.name)
    raw = ANALYSIS.section(result)
    figs = work / "figs"
    from probe.presentation import FigureRef
    _tiny_figure_files(figs, [c.stem for c in raw.children if isinstance(c, FigureRef)])
    section = place_figures(raw, figs, prefix, "misclassified")
    top = Section(mf.name, prefix).add(model_card(mf, prefix), section, Text(name),
                                       Table([name, "n"], [[name, "1"]], caption=name))
    report = Report("probe report: " + name, name, [top], "today")
    out = work / "report"
    html = render_html(report)
    (out).mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_bytes(html.encode("utf-8", "replace"))  # as the report writes it
    tex = {p.name: p.read_text() for p in write_latex(report, out)}
    pdf = render_pdf(report, out / "report.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-", "not a PDF"
    files = sorted(p.name for p in (out / "figures").iterdir())
    cwd = os.getcwd()
    os.chdir(work)
    try:
        analysis_out = output_folder(mf.name, "misclassified", None)
    finally:
        os.chdir(cwd)
    if draw:
        from probe.figures.style import save_figure
        import matplotlib.pyplot as plt
        for stem, fig in ANALYSIS.figures(result).items():
            png, pdf_fig = save_figure(fig, work / "drawn", stem)
            plt.close(fig)
            assert png.stat().st_size > 0 and pdf_fig.read_bytes()[:5] == b"%PDF-"
    ANALYSIS.summary(result)
    return {"html": html_structure(html), "tex": tex, "files": files, "analysis_out": analysis_out,
            "model_name": mf.name, "prefix": prefix}


_BENIGN: dict[str, dict] = {}


def run_names(variant, work: Path, shared, draw: bool) -> str:
    """Builds the outputs with the hostile name and with a benign one; raises AssertionError on a
    difference a name must not make, or whatever the outputs raise."""
    _, name, where = variant
    got = _build(name, where, work / "hostile", shared, draw)
    if where not in _BENIGN:  # what a name cannot change does not depend on which benign name
        _BENIGN[where] = _build("benign", where, work / "benign", shared, False)
    ref = _BENIGN[where]
    assert got["html"] == ref["html"], "the name changed the HTML's elements or attributes"
    for fname, text in got["tex"].items():
        bad = [c for c in text if not (" " <= c <= "~" or c == "\n")]
        assert not bad, f"{fname}: characters {bad[:5]!r} that are not printable ASCII"
        assert (DANGEROUS_TEX.findall(text) == DANGEROUS_TEX.findall(ref["tex"][fname])), \
            f"{fname}: the name added TeX commands"
    for f in got["files"]:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*\.(png|pdf)", f), f"figure file name {f!r}"
    assert re.fullmatch(r"[a-z0-9-]+|x", got["prefix"]), got["prefix"]
    rel = got["analysis_out"]  # relative to the folder the command runs in
    assert not rel.is_absolute() and rel.parts[0] == "reports" and len(rel.parts) == 3 \
        and ".." not in rel.parts, rel
    return "ok"
