"""The HTML flavour: one self-contained page (figures as PNG data URIs, styles inline, no
request to any other host), rendered by a Jinja2 template with autoescape on."""
from __future__ import annotations

import base64
import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

import probe

from probe.presentation import Figure, Report, Section, Table, Text

CSS_PX_PER_INCH = 96


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _node(node, numbers: dict) -> dict:
    """A plain dict per renderable for the template (the template never touches files)."""
    if isinstance(node, Section):
        return {"kind": "section", "title": node.title, "anchor": node.anchor,
                "children": [_node(c, numbers) for c in node.children]}
    if isinstance(node, Text):
        return {"kind": "text", "text": node.text}
    if isinstance(node, Table):
        return {"kind": "table", "columns": node.columns, "rows": node.rows, "caption": node.caption,
                "numeric": node.numeric}
    if isinstance(node, Figure):
        png = Path(node.png).read_bytes()
        with Image.open(Path(node.png)) as im:
            w, h = im.size
            dpi = im.info.get("dpi", (200, 200))[0] or 200
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
