"""The report's content as a tree of small renderables, built once (structure.py) and rendered
by each flavour (html.py, pdf.py, latex.py): a section added once appears in every format."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path


def pct(x, digits: int = 2) -> str:
    """A fraction as a percentage for the reader; "—" where there is none."""
    return "—" if x is None else f"{100 * x:.{digits}f}%"


MAX_SLUG = 64  # an anchor is a file name too (figures/<anchor>.pdf): far below 255 bytes


def slug(text: str) -> str:
    """A stable anchor / file name: lower case, letters, digits and dashes; a long one cut to
    MAX_SLUG characters, ending in a hash of the whole text (so two long names stay apart)."""
    out = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"
    if len(out) > MAX_SLUG:
        digest = hashlib.sha256(str(text).encode("utf-8", "surrogatepass")).hexdigest()[:8]
        out = out[:MAX_SLUG - 9].rstrip("-") + "-" + digest
    return out


@dataclass
class Text:
    text: str  # plain text: every flavour escapes it


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: set[int] = field(default_factory=set)  # right-aligned columns


@dataclass
class Figure:
    png: Path
    pdf: Path
    caption: str
    anchor: str  # unique in the report; also the stable file name in figures/
    data: dict | None = None  # the numbers behind it, linked as JSON
    width: float = 1.0  # fraction of the text width in print


@dataclass
class FigureRef:
    """A figure an analysis's section names by its file stem; the report finds stem.png and
    stem.pdf in the analysis's folder (a missing one is an error, never a silent omission) and
    gives it a unique anchor."""
    stem: str
    caption: str
    data: dict | None = None
    width: float = 1.0


@dataclass
class Section:
    title: str
    anchor: str
    children: list = field(default_factory=list)  # Text | Table | Figure | Section

    def add(self, *items) -> "Section":
        self.children.extend(i for i in items if i is not None)
        return self


@dataclass
class Report:
    title: str
    subtitle: str
    sections: list[Section]
    created: str

    def figures(self) -> list[Figure]:
        out = []

        def walk(node):
            for child in node.children:
                if isinstance(child, Figure):
                    out.append(child)
                elif isinstance(child, Section):
                    walk(child)
        for s in self.sections:
            walk(s)
        return out
