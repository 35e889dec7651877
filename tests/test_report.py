"""probe report: the HTML parses, has every section, escapes hostile names and refers to no
other host; the PDF opens with its sections' titles as text and vector figures; the cache is
used on a second run and invalidated when the weights change; and the page in a real browser
(headless Chromium) loads every image with no error and no request."""
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from figure_checks import overlaps_in_saved_figures  # noqa: E402
from test_model_folder import write_tiny_model  # noqa: E402

from probe.models.folder import read_model_folder  # noqa: E402
from probe.report.build import CACHE_KEY, run_report  # noqa: E402

HOSTILE = "<script>alert(1)</script>"
BROWSERS = ["/usr/bin/chromium-headless-shell", "/usr/lib/chromium-headless-shell/chromium-headless-shell",
            "/usr/bin/chromium"]


class Page(HTMLParser):
    """Collects ids, links, image sources and script tags of an HTML page."""

    def __init__(self):
        super().__init__()
        self.ids, self.hrefs, self.srcs, self.scripts, self.tags = [], [], [], 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if "href" in a:
            self.hrefs.append(a["href"])
        if "src" in a:
            self.srcs.append(a["src"])
        if tag == "script":
            self.scripts += 1


def hostile_model(folder: Path) -> Path:
    write_tiny_model(folder)
    meta = json.loads((folder / "meta.json").read_text())
    names = [HOSTILE, *meta["dataset"]["classes"][1:]]
    meta["dataset"]["classes"] = meta["dataset"]["display_names"] = names
    meta["arch_name"] = "resnet8 <b>bold</b>"
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def write_history(folder: Path, epochs: int = 3) -> None:
    """A history.json as `probe train` writes it, so the report has learning curves to draw."""
    records = [{"epoch": e, "train_loss": 2.3 / e, "train_error": 0.9 / e, "val_loss": 2.4 / e,
                "val_error": 0.95 / e, "best": e == epochs} for e in range(1, epochs + 1)]
    (folder / "history.json").write_text(json.dumps(records))


@pytest.fixture(scope="module")
def report(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("report")
    models = root / "trained_models"
    hostile_model(models / "tiny-a")
    write_tiny_model(models / "tiny-b", seed=1)
    for name in ("tiny-a", "tiny-b"):
        write_history(models / name)
    out = root / "out"
    # checked as the figures are drawn (no extra drawing), and the data read counted as it is read
    with overlaps_in_saved_figures() as overlaps, counted_data_passes() as passes:
        result = run_report([models / "tiny-a", models / "tiny-b"], data_dir=mnist_dir, out=out, plan=small_plan(models))
    result.passes = passes
    return result, out, models, mnist_dir, overlaps


@contextlib.contextmanager
def counted_data_passes():
    """Each split load ("loads") and each pass of class_probabilities over a whole test split
    ("whole_split": its length) while inside; everything else runs as it is."""
    from probe.analysis.base import clear_split_cache
    from probe.models.folder import ModelFolder
    import probe.methods.common as common
    passes = {"loads": [], "whole_split": [], "split_lengths": []}
    real_load, real_probabilities = ModelFolder.load_split, common.class_probabilities

    def load(self, split, data_dir=None):
        passes["loads"].append(split)
        data = real_load(self, split, data_dir)
        passes["split_lengths"].append(len(data.labels))
        return data

    def probabilities(model, images, **kw):
        passes["whole_split"].extend([len(images)] if len(images) in passes["split_lengths"] else [])
        return real_probabilities(model, images, **kw)
    clear_split_cache()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ModelFolder, "load_split", load)
        for module in ("probe.analysis.base", "probe.analysis.misclassified", "probe.analysis.fooling",
                       "probe.analysis.robustness", "probe.analysis.saliency"):
            mp.setattr(f"{module}.class_probabilities", probabilities)
        yield passes
    clear_split_cache()


def small_plan(models: Path, names=("tiny-a", "tiny-b")):
    """The report's own plan (every section), with the work of each analysis cut to a sliver.
    Drawing dominates a test report's time: 12 wrong images still fill two grid pages for tiny-a
    (its long hostile class names leave 9 a page), one wrong image still draws saliency-wrong,
    and two examples still draw the robustness examples."""
    from probe.report.build import default_plan
    plan = default_plan([read_model_folder(models / name) for name in names])
    smaller = {"misclassified": {"max_images": 12},
               "saliency": {"n": 1, "methods": "vanilla,gradcam", "wrong_too": 1},
               "fool-noise": {"n": 1, "target": "1", "steps": 30},
               "fool-noise-natural": {"n": 1, "target": "1", "steps": 30},
               "fool-dataset": {"n": 1, "target": "1", "steps": 30},
               "robustness": {"limit": 20, "steps": 3, "examples": 2}}
    for step in plan.steps:
        step.settings = step.settings.replace(**smaller.get(step.analysis, {}))
    return plan


def test_the_robustness_steps_of_the_report_are_an_option(report):
    """--attack-steps: the report's PGD steps (20 by default), e.g. 40 for `probe attack`'s numbers."""
    from probe.errors import ConfigError
    from probe.report.build import REPORT_ATTACK_STEPS, default_plan
    _, _, models, *_ = report
    folders = [read_model_folder(models / "tiny-a")]

    def steps(plan):
        return next(st.settings.steps for st in plan.steps if st.analysis == "robustness")
    assert steps(default_plan(folders)) == REPORT_ATTACK_STEPS == 20
    assert steps(default_plan(folders, attack_steps=40)) == 40
    with pytest.raises(ConfigError, match="--attack-steps 0: give from 1 to"):
        default_plan(folders, attack_steps=0)
    with pytest.raises(ConfigError, match="attack_steps: give it in the plan"):
        run_report([models / "tiny-a"], plan=default_plan(folders), attack_steps=40)


def test_the_report_files_are_there(report):
    result, out, *_ = report
    for name in ("report.html", "report.pdf", "figures.tex"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert any(line.startswith("open ") and line.endswith("report.html") for line in result.lines)


def test_no_text_of_any_figure_runs_into_another(report):
    """Every figure of the report (hostile long class names, two models side by side) as drawn
    into its PNG: no title, tick label, legend entry or colour-bar number overlaps another (the
    demo's side-by-side saliency figure had a dozen such pairs before it took pages)."""
    *_, overlaps = report
    assert overlaps == []


def test_html_has_every_section_and_figure_and_no_external_reference(report):
    _, out, *_ = report
    html = (out / "report.html").read_text()
    page = Page()
    page.feed(html)
    for anchor in ("comparison", "comparison-curves", "comparison-robustness", "tiny-a", "tiny-a-card", "tiny-a-failures", "tiny-b-failures",
                   "tiny-a-saliency", "tiny-a-fool-noise", "tiny-a-fool-noise-natural", "tiny-a-fool-dataset", "tiny-b-robustness",
                   "tiny-a-curves"):
        assert anchor in page.ids, anchor
    assert len(page.ids) == len(set(page.ids)), sorted(i for i in page.ids if page.ids.count(i) > 1)
    toc = [h[1:] for h in page.hrefs if h.startswith("#")]
    assert toc and all(a in page.ids for a in toc)  # every contents link resolves
    assert page.srcs and all(s.startswith("data:image/png;base64,") for s in page.srcs)
    assert len(html.encode()) < 2_000_000 or len(page.srcs) > 40  # palette PNGs: a two-model report under 2 MB
    assert page.scripts == 0
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html)
    assert "@import" not in html and "url(" not in html
    # every figure has a caption and an anchor
    assert html.count("<figure") == html.count("<figcaption>") > 0


def expected_figures(models=("tiny-a", "tiny-b"), out: Path | None = None) -> set[str]:
    """Every figure the report of the fixture must hold, by name (anchor = file stem in figures/);
    the misclassified grid has as many pages as its results.json says (out: the report)."""
    names = {"comparison-curves-curves", "comparison-robustness-robustness",
             "comparison-saliency-saliency-side-by-side"} if len(models) > 1 else set()
    for m in models:
        names |= {f"{m}-curves-curves", f"{m}-fool-noise-fooling", f"{m}-fool-noise-natural-fooling",
                  f"{m}-fool-dataset-fooling",
                  *([f"{m}-robustness-examples-{m}"] if len(models) > 1 else
                    [f"{m}-robustness-examples", f"{m}-robustness-robustness"])}
        pages = (json.loads((out / "analyses" / m / "misclassified" / "results.json").read_text())
                 ["results"]["grid_pages"] if out is not None else 1)
        grid = ["misclassified"] if pages == 1 else [f"misclassified-{k:02d}" for k in range(1, pages + 1)]
        names |= {f"{m}-misclassified-{s}" for s in (*grid, "confusion", "confusion-normalized", "per-class-accuracy")}
        names |= {f"{m}-saliency-{s}" for s in ("saliency", "saliency-wrong", "faithfulness", "randomization",
                                                "randomization-maps")}  # saliency-wrong: REPORT_SETTINGS wrong_too
    return names


def test_every_figure_is_there_once_by_name(report):
    _, out, *_ = report
    page = Page()
    page.feed((out / "report.html").read_text())
    figure_ids = [i.removeprefix("fig-") for i in page.ids if i.startswith("fig-")]
    expected = expected_figures(out=out)
    assert sorted(figure_ids) == sorted(expected)
    assert {p.stem for p in (out / "figures").glob("*.pdf")} == expected
    tex = (out / "figures.tex").read_text()
    assert sorted(re.findall(r"\\label\{fig:([^}]+)\}", tex)) == sorted(expected)
    # no two figures are the same picture (the comparison once repeated the models' own)
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "figures").glob("*.png")]
    assert len(set(digests)) == len(digests)
    # nor two captions the same: the raw and the natural fooling figures say which they are
    captions = re.findall(r"\\caption\{(.*?)\}\n  \\label", tex, flags=re.S)
    assert len(captions) == len(expected) and len(set(captions)) == len(captions)
    assert any("natural style" in c for c in captions)


def test_each_model_loads_its_test_split_once_and_passes_over_it_once(report):
    """Misclassified, fooling from the data, robustness's clean accuracy and saliency's choice of
    images share one pass over the test split per model."""
    passes = report[0].passes
    assert passes["loads"] == ["test", "test"]  # tiny-a's class names differ: a split of its own
    assert sorted(passes["whole_split"]) == sorted(passes["split_lengths"])


def test_hostile_names_are_shown_as_text(report):
    _, out, *_ = report
    html = (out / "report.html").read_text()
    assert HOSTILE not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_figures_tex_escapes_every_special_character_of_a_caption(tmp_path):
    from probe.figures.style import new_figure, save_figure
    from probe.presentation import Figure, Report, Section
    from probe.report.latex import write_latex
    png, pdf = save_figure(new_figure()[0], tmp_path, "f")
    caption = HOSTILE + r" 100% of $x_1$ & #2 {a} ~ ^ \input"
    report = Report("T", "S", [Section("s", "s", [Figure(png, pdf, caption, "f")])], "today")
    tex = write_latex(report, tmp_path)[0].read_text()
    assert ("\\caption{$<$script$>$alert(1)$<$/script$>$ 100\\% of \\$x\\_1\\$ \\& \\#2 \\{a\\} "
            "\\~{} \\^{} $\\backslash$input}") in tex


def test_pdf_has_the_sections_as_text_and_embedded_fonts(report):
    from pypdf import PdfReader
    _, out, *_ = report
    reader = PdfReader(out / "report.pdf")
    text = "\n".join(p.extract_text() for p in reader.pages)
    for title in ("Comparison", "Model card", "Where it fails", "What it looks at", "Fooled from noise",
                  "Fooled from real images", "Robustness", "tiny-a", "tiny-b"):
        assert title in text, title
    assert HOSTILE in text  # as text, not markup
    # every figure drawn once, whole, as a Form XObject; its text is text (an axis label here)
    drawn = 0
    for page in reader.pages:
        xobjects = (page.get("/Resources") or {}).get("/XObject") or {}
        content = page.get_contents().get_data()
        for name, xobject in xobjects.items():
            if xobject.get_object().get("/Subtype") == "/Form":
                assert content.count(f"{name} Do".encode()) == 1, name
                drawn += 1
    assert drawn == (out / "report.html").read_text().count("<figure")
    assert "predicted class" in text
    fonts = [font for page in reader.pages for font in _fonts(page.get("/Resources"))]
    assert len(fonts) > 2  # the report's own and the figures' (inside their Form XObjects)
    for font in fonts:
        descendant = font.get("/DescendantFonts")
        desc = (descendant[0].get_object() if descendant else font).get("/FontDescriptor")
        assert desc is not None, font.get("/BaseFont")  # no font is left to the viewer
        desc = desc.get_object()
        assert any(k in desc for k in ("/FontFile", "/FontFile2", "/FontFile3")), font.get("/BaseFont")
    # a font program the figures share (the same subset) is in the file once
    programs = {}
    for font in fonts:
        descendant = font.get("/DescendantFonts")
        desc = (descendant[0].get_object() if descendant else font)["/FontDescriptor"].get_object()
        ref = next(desc.raw_get(k) for k in ("/FontFile", "/FontFile2", "/FontFile3") if k in desc)
        programs.setdefault(ref.get_object().get_data(), set()).add(ref.idnum)
    assert len(programs) < len(fonts)  # shared: two models' figures of the same kind use one subset
    assert all(len(refs) == 1 for refs in programs.values()), "a font program is in the file twice"


def _fonts(resources) -> list:
    """Every font a page's resources use, also those of the Form XObjects it draws."""
    if resources is None:
        return []
    resources = resources.get_object()
    fonts = [f.get_object() for f in (resources.get("/Font") or {}).values()]
    for xobject in (resources.get("/XObject") or {}).values():
        xobject = xobject.get_object()
        if xobject.get("/Subtype") == "/Form":
            fonts += _fonts(xobject.get("/Resources"))
    return fonts


def _has_vector_paths(pdf_path: Path) -> bool:
    from pypdf import PdfReader
    data = PdfReader(pdf_path).pages[0].get_contents().get_data()
    builds = re.search(rb"(^|\s)(m|l|c|re)(\s|$)", data)  # path construction operators
    paints = re.search(rb"(^|\s)(f|f\*|S|B)(\s|$)", data)  # fill or stroke
    return bool(builds and paints)


def test_every_figure_pdf_is_vector_and_tex_includes_it(report):
    _, out, *_ = report
    tex = (out / "figures.tex").read_text()
    pdfs = sorted((out / "figures").glob("*.pdf"))
    assert pdfs
    for pdf in pdfs:
        assert _has_vector_paths(pdf), pdf.name
        assert f"figures/{pdf.name}" in tex
        assert f"\\label{{fig:{pdf.stem}}}" in tex


def test_second_run_uses_the_cache_and_new_weights_invalidate_it(report, tmp_path):
    _, out, models, data, _ = report
    # Copies: the other tests read the fixture's models. The cache key holds the weights' sha256,
    # the settings and the data folder, not the model's path, so the copied results still count.
    models, out = Path(shutil.copytree(models, tmp_path / "trained_models")), Path(shutil.copytree(out, tmp_path / "out"))
    pair = [models / "tiny-a", models / "tiny-b"]
    again = run_report(pair, data_dir=data, out=out, plan=small_plan(models), formats=("html",))
    steps = again.result["reused"]
    assert steps == 2 * 6 + 2  # every per-model step of both (fool-noise twice: raw, natural); the joint two
    assert f"({steps} reused from the cache)" in again.lines[0]
    state = load_file(models / "tiny-b" / "weights.safetensors")
    key = next(k for k in state if k.endswith("fc.bias"))
    state[key] = state[key] + torch.arange(len(state[key]), dtype=state[key].dtype)
    save_file(state, models / "tiny-b" / "weights.safetensors")
    # Three of the analyses are enough to see what reruns: tiny-b's own, the joint one, and not
    # the learning curves, which draw the history and not the weights.
    plan = small_plan(models)
    plan.steps = [s for s in plan.steps if s.analysis in ("curves", "misclassified", "robustness")]
    third = run_report(pair, data_dir=data, out=out, plan=plan, formats=("html",))
    assert third.result["reused"] == 4  # tiny-a's misclassified, the 3 curves; tiny-b's and the joint rerun
    rerun = json.loads((out / "analyses" / "tiny-b" / "misclassified" / CACHE_KEY).read_text())
    assert rerun["weights_sha256"] == [read_model_folder(models / "tiny-b").weights_sha256()]
    # A new training history redraws the curves that show it (the weights are the same).
    write_history(models / "tiny-a", epochs=4)
    fourth = run_report(pair, data_dir=data, out=out, plan=plan, formats=("html",))
    assert fourth.result["reused"] == 4  # all but tiny-a's curves and the joint curves
    joint = json.loads((out / "joint-analyses" / "curves" / "results.json").read_text())
    assert [len(run["epoch"]) for run in joint["results"]["runs"]] == [4, 3]


def _browser() -> str | None:
    return next((b for b in BROWSERS if Path(b).is_file()), None)


def test_the_report_in_a_real_browser(report):
    """Every image loaded, no console error, no request but the file itself, contents links
    resolve; a screenshot is saved beside the report. Under CI a missing browser fails."""
    _, out, *_ = report
    in_ci = bool(os.environ.get("CI") or os.environ.get("PROBE_CI"))
    browser_path = _browser()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_path = None
    if browser_path is None:
        if in_ci:
            pytest.fail(f"no headless Chromium (looked for {', '.join(BROWSERS)}) or no playwright")
        pytest.skip("no headless Chromium here; `apt-get install chromium-headless-shell`")
    url = (out / "report.html").resolve().as_uri()
    requests, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=browser_path, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
            broken_links = page.evaluate(
                "() => [...document.querySelectorAll('nav a[href^=\"#\"]')]"
                ".filter(a => !document.getElementById(a.getAttribute('href').slice(1))).length")
            page.click("nav a[href='#tiny-a-failures']")
            scrolled = page.evaluate("() => window.scrollY")
            page.screenshot(path=str(out / "screenshot.png"), full_page=False)
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(url, wait_until="load")
            overflow = phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            phone.screenshot(path=str(out / "screenshot-phone.png"))
        finally:
            browser.close()
    assert images and all(complete and width > 0 for complete, width in images)
    assert errors == []
    non_data = [r for r in requests if not r.startswith("data:")]
    assert non_data == [url], non_data
    assert broken_links == 0 and scrolled > 0
    assert overflow <= 1  # nothing wider than a phone's screen


def test_models_whose_names_share_an_anchor_are_refused(tmp_path, mnist_dir):
    from probe.errors import ConfigError
    write_tiny_model(tmp_path / "A_b")
    write_tiny_model(tmp_path / "a-b", seed=1)
    with pytest.raises(ConfigError, match="same anchor"):
        run_report([tmp_path / "A_b", tmp_path / "a-b"], data_dir=mnist_dir, out=tmp_path / "r")


def test_bad_formats_and_outputs_are_clear_errors(report, tmp_path):
    from probe.errors import ConfigError
    _, _, models, data, _ = report
    with pytest.raises(ConfigError, match="--format"):
        run_report([models / "tiny-b"], data_dir=data, out=tmp_path / "r", formats=("docx",))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        run_report([models / "tiny-b"], data_dir=data, out=tmp_path / "file")


@pytest.mark.parametrize("in_255, norm, written", [(True, "linf", ["0", "2/255", "8/255"]),
                                                   # an ε no short decimal writes, k/255 as it was given
                                                   (False, "linf", ["0", "2/255", "8/255"]),
                                                   (False, "l2", ["0", "2/255", "8/255"])])
def test_robustness_table_writes_eps_as_the_figure_does(in_255, norm, written):
    from probe.analysis.robustness import RobustnessResult, model_section
    from probe.presentation import Table
    eps = [0.0, 2 / 255, 8 / 255]
    points = [{"eps": e, "accuracy": 0.9 - e, "correct": 90, "ci95": [0.8, 0.95], "n": 100} for e in eps]
    result = RobustnessResult(
        models=[{"name": "m", "points": points, "clean_accuracy": 0.9, "clean_accuracy_whole_split": 0.9,
                 "examples": []}], classes=["a", "b"], display_names=["a", "b"], codes=[], eps=eps, method="pgd",
        norm=norm, steps=10, step_size=None, random_start=True, restarts=1, target=None, seed=0,
        precision="fp32", n=100, eps_in_255=in_255 and norm == "linf", split="test")
    section = model_section(result, "m")
    table = next(item for item in section.children if isinstance(item, Table))
    assert [row[0] for row in table.rows] == written


def test_a_heading_goes_to_the_next_page_with_its_figure(tmp_path):
    """reportlab's keepWithNext does not join a heading to a KeepTogether (a figure with its
    caption): the heading must not be left alone at the foot of a page."""
    import numpy as np
    from pypdf import PdfReader
    from probe.figures.style import new_figure, save_figure
    from probe.report.pdf import render_pdf
    from probe.presentation import Figure, Report, Section, Text
    fig, ax = new_figure(height=5.5)  # tall: it cannot fit below a page of text
    ax.plot(np.arange(3))
    png, pdf = save_figure(fig, tmp_path, "tall")
    filler = Text(" ".join(["Words that fill most of the page before the next section starts."] * 48))
    figure_section = Section("Figure after a full page", "b", [Section("Sub heading", "b1",
                                                                       [Figure(png, pdf, "A tall figure.", "tall")])])
    report = Report("T", "S", [Section("Long text", "a", [filler, figure_section])], "today")
    pages = PdfReader(render_pdf(report, tmp_path / "r.pdf")).pages
    with_heading = [k for k, page in enumerate(pages) if "Sub heading" in page.extract_text()]
    with_figure = [k for k, page in enumerate(pages)
                   if any(x.get_object().get("/Subtype") == "/Form"
                          for x in ((page.get("/Resources") or {}).get("/XObject") or {}).values())]
    assert len(with_figure) == 1 and with_heading[-1] == with_figure[0]  # the TOC lists it too
    heading_page = [k for k, page in enumerate(pages) if "Figure after a full page" in page.extract_text()]
    assert heading_page[-1] == with_figure[0]


def test_figures_and_tables_tex_compile_in_real_latex(report, tmp_path):
    """A thesis document that \\input's figures.tex and tables.tex compiles with pdflatex: no
    error, no overfull box wider than 1 pt, and every \\includegraphics file exists."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        if os.environ.get("CI"):
            pytest.fail("no pdflatex: .ci/run installs TeX Live")
        pytest.skip("no pdflatex here")
    _, out, *_ = report
    for name in ("figures.tex", "tables.tex"):
        included = re.findall(r"\\includegraphics\[[^]]*\]\{([^}]+)\}", (out / name).read_text())
        assert all((out / f).is_file() for f in included), name
    (out / "thesis.tex").write_text("\n".join([
        r"\documentclass[a4paper,11pt]{report}", r"\usepackage{graphicx,booktabs,array}", r"\begin{document}",
        r"\chapter{Tables}", r"\input{tables.tex}", r"\chapter{Figures}", r"\input{figures.tex}", r"\end{document}", ""]))
    run = subprocess.run([pdflatex, "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error", "thesis.tex"],
                         cwd=out, capture_output=True, text=True, timeout=300)
    log = (out / "thesis.log").read_text(errors="replace")
    assert run.returncode == 0, log[-2000:]
    assert "\n! " not in log and "LaTeX Error" not in log
    overfull = [float(w) for w in re.findall(r"Overfull \\[hv]box \(([\d.]+)pt too", log)]
    assert all(w <= 1.0 for w in overfull), overfull
    assert "Float(s) lost" not in log and "Too many unprocessed floats" not in log
