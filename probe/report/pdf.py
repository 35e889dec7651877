"""The PDF flavour, with Python packages alone: reportlab lays out the text and tables (real,
selectable text in an embedded TrueType font) and leaves a frame of the right size for each
figure; pypdf then stamps the figure's own vector PDF page into its frame, so line art stays
vector art and images stay images."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

import matplotlib
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, FloatObject, NameObject
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Flowable, KeepTogether, PageBreak, Paragraph, SimpleDocTemplate, Spacer
from reportlab.platypus import Table as RLTable
from reportlab.platypus import TableStyle
from reportlab.platypus.tableofcontents import TableOfContents

from probe.io import atomic_write_bytes
from probe.presentation import Figure, Report, Section, Table, Text
from probe.text import CONTROL_AS_SPACE

FONT, FONT_BOLD = "ProbeSans", "ProbeSans-Bold"


def plain(text, limit: int | None = None) -> str:
    """Any text as reportlab can draw and store it: control characters as spaces, lone
    surrogates (bytes of a file name that are not UTF-8) as ?; at most `limit` characters."""
    out = str(text).translate(CONTROL_AS_SPACE).encode("utf-8", "replace").decode("utf-8")
    return out if limit is None or len(out) <= limit else out[:limit - 1] + "…"


def markup(text, limit: int | None = None) -> str:
    """Any text as reportlab paragraph markup that prints it: <, > and & escaped, control
    characters (which reportlab cannot draw) as spaces."""
    return escape(plain(text, limit))


# A table row cannot break across pages: a cell of a very long name (thousands of characters)
# made a row taller than the page, which reportlab cannot lay out. A cell shows at most this
# many characters, fewer in a narrow column (see _Story.table); the HTML shows the whole text.
MAX_CELL_CHARS = 400
MIN_COLUMN_WIDTH = 30  # points; a table of more columns than fit is cut into several


def _register_fonts() -> None:
    """DejaVu Sans, which matplotlib ships: embedded, so the PDF reads the same everywhere."""
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdfmetrics.registerFont(TTFont(FONT, str(ttf / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(ttf / "DejaVuSans-Bold.ttf")))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD, italic=FONT, boldItalic=FONT_BOLD)


INTRO_CHARS = 700  # an intro this long or shorter stays on the page of what it introduces
MIN_SHRINK = 0.7  # a figure may shrink this far to stay on the page with its heading and intro


class FigureSlot(Flowable):
    """Reserves the figure's size (its PDF page scaled to fit, times `shrink`) and records where
    it landed."""

    def __init__(self, figure: Figure, max_width: float, max_height: float, placed: list):
        super().__init__()
        box = PdfReader(str(figure.pdf)).pages[0].mediabox
        self.figure, self.placed, self.shrink = figure, placed, 1.0
        self.box = (float(box.left), float(box.bottom), float(box.width), float(box.height))
        self.fit = min(max_width * figure.width / self.box[2], max_height / self.box[3], 1.0)

    @property
    def scale(self) -> float:
        return self.fit * self.shrink

    def wrap(self, avail_width, avail_height):
        self.width, self.height = self.box[2] * self.scale, self.box[3] * self.scale
        return self.width, self.height

    def draw(self):
        x, y = self.canv.absolutePosition(0, 0)
        self.placed.append((self.canv.getPageNumber(), x, y, self))


class FitTogether(KeepTogether):
    """KeepTogether that, rather than leave the rest of a page empty, shrinks its figure (to
    MIN_SHRINK at most) so that the heading, the intro, the figure and its caption fit."""

    def split(self, aW, aH):
        slots = [f for f in self._content if isinstance(f, FigureSlot)]
        for slot in slots:
            slot.shrink = 1.0
        self.wrap(aW, aH)
        if slots and self._H > aH:
            slot = slots[0]
            natural = slot.box[3] * slot.fit
            wanted = (natural - (self._H - aH) - 1) / natural
            if wanted >= MIN_SHRINK:
                slot.shrink = wanted
                self.wrap(aW, aH)
        return super().split(aW, aH)


def _styles() -> dict:
    body = ParagraphStyle("body", fontName=FONT, fontSize=10, leading=14, spaceAfter=6)
    small = ParagraphStyle("small", parent=body, fontSize=8.5, leading=11, textColor=colors.HexColor("#444444"))
    cell = ParagraphStyle("cell", parent=body, fontSize=8.5, leading=10.5, spaceAfter=0)
    heads = [ParagraphStyle(f"h{i}", parent=body, fontName=FONT_BOLD, fontSize=size, leading=size * 1.3,
                            spaceBefore=size * 0.9, spaceAfter=size * 0.4, keepWithNext=True)
             for i, size in enumerate((20, 15, 12.5, 11), 1)]
    return {"body": body, "small": small, "cell": cell, "cell_num": ParagraphStyle("cellnum", parent=cell, alignment=2),
            "heads": heads, "caption": ParagraphStyle("caption", parent=small, spaceBefore=3, spaceAfter=12),
            "title": ParagraphStyle("title", parent=heads[0], alignment=TA_CENTER),
            "sub": ParagraphStyle("sub", parent=body, alignment=TA_CENTER),
            "intro": ParagraphStyle("intro", parent=body, keepWithNext=True),
            "sub2": ParagraphStyle("sub2", parent=small, alignment=TA_CENTER)}


class _Doc(SimpleDocTemplate):
    def afterFlowable(self, flowable):  # feeds the table of contents and the PDF's bookmarks
        level = getattr(flowable, "toc_level", None)
        if level is not None:
            key = f"h{id(flowable)}"
            self.canv.bookmarkPage(key)
            plain = flowable.getPlainText()
            self.canv.addOutlineEntry(plain, key, level=level)
            # the contents draw their entries as Paragraphs, which parse markup: escaped again
            self.notify("TOCEntry", (level, markup(plain), self.page, key))


class _Story:
    """The report's tree as reportlab flowables; `placed` collects where each figure landed."""

    def __init__(self, frame_w: float, frame_h: float):
        self.st, self.flow, self.placed, self.figures = _styles(), [], [], 0
        self.frame_w, self.frame_h = frame_w, frame_h

    def front(self, report: Report) -> None:
        st = self.st
        toc = TableOfContents()
        toc.tableStyle = TableStyle([("FONT", (0, 0), (-1, -1), FONT), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                                     ("LEFTPADDING", (0, 0), (-1, -1), 0), ("RIGHTPADDING", (0, 0), (-1, -1), 0)])
        toc.levelStyles = [ParagraphStyle(f"toc{i}", parent=st["body"], fontSize=10 - i, leading=13 - i,
                                          leftIndent=12 * i, firstLineIndent=0) for i in range(3)]
        self.flow += [Paragraph(markup(report.title), st["title"]), Paragraph(markup(report.subtitle), st["sub"]),
                      Paragraph(markup(f"Made {report.created}."), st["sub2"]), Spacer(1, 12),
                      Paragraph("Contents", st["heads"][1]), toc, PageBreak()]

    def kept_with_headings(self, parts: list):
        """KeepTogether of `parts`, the intro right before them and the headings before that:
        reportlab's keepWithNext does not join a heading to a KeepTogether, so it would leave it
        alone at a page's foot. An intro is taken only below its own heading, and only a short
        one (a page of text is not held back with a figure)."""
        before = []
        while self.flow and isinstance(self.flow[-1], Paragraph) and self.flow[-1].getKeepWithNext():
            last = self.flow[-1]
            heading = last.style.name.startswith("h")
            if not heading and (any(p.style.name.startswith("h") for p in before) or len(last.text) > INTRO_CHARS):
                break  # an outer section's text, or a long one
            before.insert(0, self.flow.pop())
        return FitTogether(before + parts)

    def add(self, node, level: int = 1) -> None:
        if isinstance(node, Section):
            p = Paragraph(markup(node.title), self.st["heads"][min(level, 3)])
            p.toc_level = level - 1 if level - 1 <= 2 else None
            if level == 1 and self.flow and not isinstance(self.flow[-1], PageBreak):
                self.flow.append(PageBreak())
            self.flow.append(p)
            for child in node.children:
                self.add(child, level + 1)
        elif isinstance(node, Text):
            # a section's intro stays on the page of what it introduces
            intro = bool(self.flow) and isinstance(self.flow[-1], Paragraph) and self.flow[-1].getKeepWithNext()
            self.flow.append(Paragraph(markup(node.text), self.st["intro" if intro else "body"]))
        elif isinstance(node, Table):
            self.table(node)
        elif isinstance(node, Figure):
            self.figures += 1
            # room on the page for headings above the figure and its caption below
            slot = FigureSlot(node, self.frame_w, self.frame_h - 120, self.placed)
            text = Paragraph(f"<b>Figure {self.figures}.</b> {markup(node.caption)}", self.st["caption"])
            self.flow.append(self.kept_with_headings([slot, text]))

    def column_widths(self, node: Table, size: float) -> list[float] | None:
        """Column widths at font `size` that fit the frame: each column as wide as its widest
        cell (at most 45% of the frame), narrowed towards its longest word where the sum is too
        wide; None where even the longest words do not fit (the table needs a smaller font)."""
        pad = 12  # the cell's left and right padding

        def width(text: str, bold: bool) -> float:
            return pdfmetrics.stringWidth(text, FONT_BOLD if bold else FONT, size)
        columns = [[(str(c), True)] + [(str(r[i]), False) for r in node.rows if i < len(r)]
                   for i, c in enumerate(node.columns)]
        # at least two characters wide: a column of zero-width characters (U+200B, a combining
        # accent) left its text no width at all, and reportlab an endless row
        least = 2 * size
        natural = [max(least, min(max(width(t, b) for t, b in col), 0.45 * self.frame_w)) + pad for col in columns]
        floor = [max(least, min(max(width(w, b) for t, b in col for w in t.split() or [""]), 0.45 * self.frame_w)) + pad
                 for col in columns]
        if sum(floor) > self.frame_w:
            return None
        slack = sum(natural) - self.frame_w
        if slack <= 0:
            return natural
        give = sum(n - f for n, f in zip(natural, floor))
        return [n - (n - f) * slack / give for n, f in zip(natural, floor)]

    def table(self, node: Table) -> None:
        most = max(2, int(self.frame_w // MIN_COLUMN_WIDTH))
        if len(node.columns) > most:  # each part: the first column (the row's name) and the next ones
            n = len(node.columns)
            for start in range(1, n, most - 1):
                keep = [0, *range(start, min(start + most - 1, n))]
                part = Table([node.columns[i] for i in keep],
                             [[r[i] if i < len(r) else "" for i in keep] for r in node.rows],
                             f"{node.caption} (columns {start + 1}–{keep[-1] + 1} of {n})".lstrip(),
                             {j for j, i in enumerate(keep) if i in node.numeric})
                self.table(part)
            return
        # the body's 8.5 pt, or smaller where a wide table's words would not fit its columns
        for size in (8.5, 7.5, 6.5, 5.5):
            widths = self.column_widths(node, size)
            if widths is not None:
                break
        else:  # even the smallest font's longest words overflow: equal shares, words may split
            widths = [self.frame_w / len(node.columns)] * len(node.columns)
        cell = ParagraphStyle(f"cell{size}", parent=self.st["cell"], fontSize=size, leading=size * 1.25)
        cell_num = ParagraphStyle(f"cellnum{size}", parent=cell, alignment=2)
        # a cell at most a quarter of the page tall, even in its widest glyphs: the header row and
        # a row below it always fit on a page together
        lines = int(self.frame_h / 4 / (size * 1.25))
        most = [max(8, min(MAX_CELL_CHARS, int((w - 12) / size) * lines)) for w in widths]
        rows = [[Paragraph(f"<b>{markup(c, most[i])}</b>", cell_num if i in node.numeric else cell)
                 for i, c in enumerate(node.columns)]]
        rows += [[Paragraph(markup(str(v), most[min(i, len(most) - 1)]), cell_num if i in node.numeric else cell)
                  for i, v in enumerate(r)] for r in node.rows]
        t = RLTable(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
        t.setStyle(TableStyle([
            ("FONT", (0, 0), (-1, -1), FONT),  # a Table sets its cells' font even for Paragraphs
            ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
            ("LINEBELOW", (0, 1), (-1, -1), 0.3, colors.HexColor("#cccccc")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]))
        parts = ([Paragraph(markup(node.caption), self.st["small"])] if node.caption else []) + [t, Spacer(1, 10)]
        if len(node.rows) < 25:  # a long table may break across pages
            self.flow.append(self.kept_with_headings(parts))
        else:
            self.flow.extend(parts)


def render_pdf(report: Report, path: str | Path) -> Path:
    _register_fonts()
    width, height = A4
    margin = 2.2 * cm
    story = _Story(width - 2 * margin, height - 2 * margin)
    story.front(report)
    for s in report.sections:
        story.add(s)

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont(FONT, 8)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.drawRightString(width - margin, margin / 2, f"{doc.page}")
        canvas.drawString(margin, margin / 2, plain(report.title, 90))
        canvas.restoreState()

    fd, tmp = tempfile.mkstemp(suffix=".pdf")
    os.close(fd)
    try:
        doc = _Doc(tmp, pagesize=A4, leftMargin=margin, rightMargin=margin, topMargin=margin,
                   bottomMargin=margin, title=plain(report.title), author="probe", subject=plain(report.subtitle))
        # The canvas starts in Helvetica, a font no PDF embeds: start in ours.
        base, rl_config.canvas_basefontname = rl_config.canvas_basefontname, FONT
        try:
            doc.multiBuild(story.flow, onFirstPage=footer, onLaterPages=footer)
        finally:
            rl_config.canvas_basefontname = base
        data = _stamp_figures(tmp, story.placed)
    finally:
        os.unlink(tmp)
    atomic_write_bytes(path, data)
    return Path(path)


def _indirect(writer: PdfWriter, obj):
    """obj added to the writer as an indirect object (a Form XObject must be one). pypdf has no
    public call for it: pyproject.toml pins pypdf to the major versions tested (4-7)."""
    return writer._add_object(obj)


def _stamp_figures(layout_pdf: str, placed: list) -> bytes:
    """Put each figure's vector page into the frame reserved for it (the last build's places).

    Each figure page goes in whole as a Form XObject (its content stream and resources as they
    are), drawn with one `cm … Do`: nothing of it is parsed or rewritten, which is what made
    merging pages the slowest part of the PDF."""
    writer = PdfWriter(clone_from=PdfReader(layout_pdf))
    # multiBuild lays the story out several times; the last pass's places are the real ones.
    last = {}
    for page, x, y, slot in placed:
        last[id(slot)] = (page, x, y, slot)
    drawn: dict[int, list[bytes]] = {}
    for k, (page, x, y, slot) in enumerate(last.values()):
        fig_page = PdfReader(str(slot.figure.pdf)).pages[0]
        left, bottom, width, height = slot.box
        form = DecodedStreamObject()
        contents = fig_page.get_contents()
        form.set_data(contents.get_data() if contents is not None else b"")
        form.update({
            NameObject("/Type"): NameObject("/XObject"), NameObject("/Subtype"): NameObject("/Form"),
            NameObject("/BBox"): ArrayObject(FloatObject(v) for v in (left, bottom, left + width, bottom + height)),
            NameObject("/Resources"): fig_page["/Resources"].get_object().clone(writer),
        })
        name = f"/ProbeFigure{k}"
        target = writer.pages[page - 1]
        resources = target.setdefault(NameObject("/Resources"), DictionaryObject()).get_object()
        xobjects = resources.setdefault(NameObject("/XObject"), DictionaryObject()).get_object()
        xobjects[NameObject(name)] = _indirect(writer, form.flate_encode())
        s = slot.scale
        drawn.setdefault(page, []).append(
            f"q {s:.6f} 0 0 {s:.6f} {x - s * left:.4f} {y - s * bottom:.4f} cm {name} Do Q".encode())
    for page, commands in drawn.items():
        target = writer.pages[page - 1]
        # the layout's own content between q … Q, so no state it leaves can reach the figures
        before, after = DecodedStreamObject(), DecodedStreamObject()
        before.set_data(b"q\n")
        after.set_data(b"\nQ\n" + b"\n".join(commands) + b"\n")
        contents = target.get("/Contents")
        contents = contents.get_object() if contents is not None else ArrayObject()
        parts = list(contents) if isinstance(contents, ArrayObject) else [target.raw_get("/Contents")]
        target[NameObject("/Contents")] = ArrayObject(
            [_indirect(writer, before), *parts, _indirect(writer, after.flate_encode())])
    # Figures repeat objects: the same font subset (the same kind of figure of two models, made
    # once by probe.figures.style), the same images. One copy each: the three-model demo's
    # report.pdf, rewritten so, went from 2.07 to 1.66 MB, in 30 ms. Older pypdf lacks the call.
    # Pages then share streams (the "q" before each page's content): nothing may rewrite one
    # page's content streams in place after this (pypdf's compress_content_streams would).
    dedupe = getattr(writer, "compress_identical_objects", None)
    if callable(dedupe):
        dedupe()
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
