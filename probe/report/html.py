"""The HTML flavour: one self-contained page (figures as PNG data URIs, styles inline, no
request to any other host), rendered by a Jinja2 template with autoescape on."""
from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

import probe

from probe.memo import RecentCache
from probe.presentation import Figure, Report, Section, Table, Text

CSS_PX_PER_INCH = 96


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# Palette PNGs made, by the figure file's bytes (~30 kB each): a report rerun with its analyses
# from the cache (or a copy of one) shows the same figures.
_PALETTE_PNGS = RecentCache(256)


def _palette_png(path: Path) -> tuple[bytes, tuple[int, int], float]:
    """The figure as a palette PNG (a figure has few colours: lossless where ≤ 256, else the 256
    by octree, no dithering, so edges stay sharp): the page weighs a third of the
    RGBA figures'. Returns (bytes, size, dpi)."""
    data = Path(path).read_bytes()
    return _PALETTE_PNGS.get_or_make(hashlib.sha256(data).digest(), lambda: _make_palette_png(data))


def _make_palette_png(data: bytes) -> tuple[bytes, tuple[int, int], float]:
    with Image.open(io.BytesIO(data)) as im:
        dpi = im.info.get("dpi", (200, 200))[0] or 200
        rgba = im.convert("RGBA")
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))  # transparent parts as the page's white
    quantized = flat.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    # the octree averages its boxes: white paper and black pixels would come out a shade off
    quantized.putpalette([0 if v <= 4 else 255 if v >= 251 else v for v in quantized.getpalette()])
    out = io.BytesIO()
    quantized.save(out, format="PNG", dpi=(dpi, dpi))
    return out.getvalue(), flat.size, dpi


def _lead(section: Section) -> int:
    """How many children open the section: its text up to and with its first figure or table."""
    for i, child in enumerate(section.children):
        if not isinstance(child, Text):
            return i + 1 if isinstance(child, (Figure, Table)) else i
    return len(section.children)


def _node(node, numbers: dict) -> dict:
    """A plain dict per renderable for the template (the template never touches files)."""
    if isinstance(node, Section):
        return {"kind": "section", "title": node.title, "anchor": node.anchor, "lead": _lead(node),
                "children": [_node(c, numbers) for c in node.children]}
    if isinstance(node, Text):
        return {"kind": "text", "text": node.text}
    if isinstance(node, Table):
        return {"kind": "table", "columns": node.columns, "rows": node.rows, "caption": node.caption,
                "numeric": node.numeric}
    if isinstance(node, Figure):
        png, (w, h), dpi = _palette_png(Path(node.png))
        scale = CSS_PX_PER_INCH / dpi  # show the figure at its print size
        numbers[node.anchor] = numbers.get(node.anchor, len(numbers) + 1)
        return {"kind": "figure", "anchor": node.anchor, "caption": node.caption,
                "src": _data_uri("image/png", png), "number": numbers[node.anchor],
                "width_px": round(w * scale), "height_px": round(h * scale),
                "data_uri": _data_uri("application/json", json.dumps(node.data, indent=1).encode())
                if node.data is not None else None}
    raise TypeError(f"not a renderable: {node!r}")


def render_html(report: Report) -> str:
    env = Environment(loader=PackageLoader("probe.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=False, lstrip_blocks=False)
    numbers: dict[str, int] = {}
    sections = [_node(s, numbers) for s in report.sections]
    return env.get_template("report.html.j2").render(report=report, sections=sections,
                                                     version=probe.__version__)
