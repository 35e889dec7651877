"""The PDF flavour, with Python packages alone: reportlab lays out the text and tables (real,
selectable text in an embedded TrueType font) and leaves a frame of the right size for each
figure; pypdf then stamps the figure's own vector PDF page into its frame, so line art stays
vector art and images stay images."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from probe.io import atomic_write_bytes
from probe.presentation import Figure, Report, Section, Table, Text

FONT, FONT_BOLD = "ProbeSans", "ProbeSans-Bold"


def _register_fonts() -> None:
    """DejaVu Sans, which matplotlib ships: embedded, so the PDF reads the same everywhere."""
    import matplotlib
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdfmetrics.registerFont(TTFont(FONT, str(ttf / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(ttf / "DejaVuSans-Bold.ttf")))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD, italic=FONT, boldItalic=FONT_BOLD)


def _figure_slot_class():
    from reportlab.platypus import Flowable

    class FigureSlot(Flowable):
        """Reserves the figure's size (its PDF page scaled to fit) and records where it landed."""

        def __init__(self, figure: Figure, max_width: float, max_height: float, placed: list):
            super().__init__()
            from pypdf import PdfReader
            box = PdfReader(str(figure.pdf)).pages[0].mediabox
            self.figure, self.placed = figure, placed
            self.box = (float(box.left), float(box.bottom), float(box.width), float(box.height))
            self.scale = min(max_width * figure.width / self.box[2], max_height / self.box[3], 1.0)
            self.width, self.height = self.box[2] * self.scale, self.box[3] * self.scale

        def wrap(self, avail_width, avail_height):
            return self.width, self.height

        def draw(self):
            x, y = self.canv.absolutePosition(0, 0)
            self.placed.append((self.canv.getPageNumber(), x, y, self))

    return FigureSlot


def render_pdf(report: Report, path: str | Path) -> Path:
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_CENTER
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import cm
    from reportlab.platypus import (KeepTogether, PageBreak, Paragraph, SimpleDocTemplate, Spacer)
    from reportlab.platypus import Table as RLTable
    from reportlab.platypus import TableStyle
    from reportlab.platypus.tableofcontents import TableOfContents
    from xml.sax.saxutils import escape

    _register_fonts()
    FigureSlot = _figure_slot_class()
    body = ParagraphStyle("body", fontName=FONT, fontSize=10, leading=14, spaceAfter=6)
    small = ParagraphStyle("small", parent=body, fontSize=8.5, leading=11, textColor=colors.HexColor("#444444"))
    cell = ParagraphStyle("cell", parent=body, fontSize=8.5, leading=10.5, spaceAfter=0)
    cell_num = ParagraphStyle("cellnum", parent=cell, alignment=2)
    heads = [ParagraphStyle(f"h{i}", parent=body, fontName=FONT_BOLD, fontSize=size, leading=size * 1.3,
                            spaceBefore=size * 0.9, spaceAfter=size * 0.4, keepWithNext=True)
             for i, size in enumerate((20, 15, 12.5, 11), 1)]
    caption = ParagraphStyle("caption", parent=small, spaceBefore=3, spaceAfter=12)
    title_style = ParagraphStyle("title", parent=heads[0], alignment=TA_CENTER)

    class Doc(SimpleDocTemplate):
        def afterFlowable(self, flowable):  # feeds the table of contents
            level = getattr(flowable, "toc_level", None)
            if level is not None:
                key = f"h{id(flowable)}"
                self.canv.bookmarkPage(key)
                self.canv.addOutlineEntry(flowable.getPlainText(), key, level=level)
                self.notify("TOCEntry", (level, flowable.getPlainText(), self.page, key))

    width, height = A4
    margin = 2.2 * cm
    frame_w, frame_h = width - 2 * margin, height - 2 * margin
    placed: list = []
    story = [Paragraph(escape(report.title), title_style),
             Paragraph(escape(report.subtitle), ParagraphStyle("sub", parent=body, alignment=TA_CENTER)),
             Paragraph(escape(f"Made {report.created}."), ParagraphStyle("sub2", parent=small, alignment=TA_CENTER)),
             Spacer(1, 12)]
    toc = TableOfContents()
    toc.tableStyle = TableStyle([("FONT", (0, 0), (-1, -1), FONT), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                                 ("LEFTPADDING", (0, 0), (-1, -1), 0), ("RIGHTPADDING", (0, 0), (-1, -1), 0)])
    toc.levelStyles = [ParagraphStyle(f"toc{i}", parent=body, fontSize=10 - i, leading=13 - i,
                                      leftIndent=12 * i, firstLineIndent=0) for i in range(3)]
    story += [Paragraph("Contents", heads[1]), toc, PageBreak()]
    counter = {"figure": 0}

    def kept_with_headings(parts: list):
        """KeepTogether of `parts` and the headings right before them: reportlab's keepWithNext
        does not join a heading to a KeepTogether, so it would leave it alone at a page's foot."""
        before = []
        while story and isinstance(story[-1], Paragraph) and story[-1].getKeepWithNext():
            before.insert(0, story.pop())
        return KeepTogether(before + parts)

    def add(node, level):
        if isinstance(node, Section):
            p = Paragraph(escape(node.title), heads[min(level, 3)])
            p.toc_level = level - 1 if level - 1 <= 2 else None
            if level == 1 and len(story) > 0 and not isinstance(story[-1], PageBreak):
                story.append(PageBreak())
            story.append(p)
            for child in node.children:
                add(child, level + 1)
        elif isinstance(node, Text):
            story.append(Paragraph(escape(node.text), body))
        elif isinstance(node, Table):
            rows = [[Paragraph(f"<b>{escape(c)}</b>", cell_num if i in node.numeric else cell)
                     for i, c in enumerate(node.columns)]]
            rows += [[Paragraph(escape(str(v)), cell_num if i in node.numeric else cell)
                      for i, v in enumerate(r)] for r in node.rows]
            t = RLTable(rows, repeatRows=1, hAlign="LEFT")
            t.setStyle(TableStyle([
                ("FONT", (0, 0), (-1, -1), FONT),  # a Table sets its cells' font even for Paragraphs
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                ("LINEBELOW", (0, 1), (-1, -1), 0.3, colors.HexColor("#cccccc")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]))
            parts = ([Paragraph(escape(node.caption), small)] if node.caption else []) + [t, Spacer(1, 10)]
            story.append(kept_with_headings(parts) if len(node.rows) < 25 else parts[0])
            if len(node.rows) >= 25:
                story.extend(parts[1:])
        elif isinstance(node, Figure):
            counter["figure"] += 1
            # room on the page for headings above the figure and its caption below
            slot = FigureSlot(node, frame_w, frame_h - 120, placed)
            text = Paragraph(f"<b>Figure {counter['figure']}.</b> {escape(node.caption)}", caption)
            story.append(kept_with_headings([slot, text]))

    for s in report.sections:
        add(s, 1)

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont(FONT, 8)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.drawRightString(width - margin, margin / 2, f"{doc.page}")
        canvas.drawString(margin, margin / 2, report.title[:90])
        canvas.restoreState()

    fd, tmp = tempfile.mkstemp(suffix=".pdf")
    os.close(fd)
    try:
        doc = Doc(tmp, pagesize=A4, leftMargin=margin, rightMargin=margin, topMargin=margin,
                  bottomMargin=margin, title=report.title, author="probe", subject=report.subtitle)
        placed.clear()
        from reportlab import rl_config
        # The canvas starts in Helvetica, a font no PDF embeds: start in ours.
        base, rl_config.canvas_basefontname = rl_config.canvas_basefontname, FONT
        try:
            doc.multiBuild(story, onFirstPage=footer, onLaterPages=footer)
        finally:
            rl_config.canvas_basefontname = base
        data = _stamp_figures(tmp, placed)
    finally:
        os.unlink(tmp)
    atomic_write_bytes(path, data)
    return Path(path)


def _stamp_figures(layout_pdf: str, placed: list) -> bytes:
    """Put each figure's vector page into the frame reserved for it (the last build's places).

    Each figure page goes in whole as a Form XObject (its content stream and resources as they
    are), drawn with one `cm … Do`: nothing of it is parsed or rewritten, which is what made
    merging pages the slowest part of the PDF."""
    import io

    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import (ArrayObject, DecodedStreamObject, DictionaryObject, FloatObject,
                               NameObject)
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
        xobjects[NameObject(name)] = writer._add_object(form.flate_encode())
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
            [writer._add_object(before), *parts, writer._add_object(after.flate_encode())])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
