"""The LaTeX flavour: every figure as its own vector PDF in figures/ under a stable name, and
figures.tex with one figure environment per figure, ready to \\input."""
from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

from probe.io import atomic_write_text
from probe.presentation import Figure, Report, Section, Table

# Written so that any font encoding prints them (a thesis may load T1; the default is OT1).
_SPECIAL = {"\\": r"$\backslash$", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\~{}", "^": r"\^{}", "<": r"$<$", ">": r"$>$", "|": r"$|$",
            '"': r"{\ttfamily\char34}", "-": "-{}", "[": "{[}", "]": "{]}"}  # [ after \\ is an option
# The symbols probe's own text uses, as pdflatex writes them without extra packages.
_SYMBOLS = {"ε": r"$\varepsilon$", "∞": r"$\infty$", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$",
            "−": "-", "–": "--", "—": "---", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "→": r"$\to$",
            "…": r"\ldots{}", "±": r"$\pm$", "·": r"$\cdot$", "²": r"$^2$", "ρ": r"$\rho$", "δ": r"$\delta$",
            "α": r"$\alpha$", "σ": r"$\sigma$", "°": r"$^\circ$", "†": r"\dag{}", "✗": r"$\times$", "✓": r"$\surd$", "‘": "`", "’": "'", "“": "``", "”": "''",
            "\u00a0": "~", "é": "\\'e", "è": "\\`e", "ü": '\\"u', "ö": '\\"o', "ä": '\\"a'}


def tex_escape(text: str) -> str:
    """Any text as LaTeX that prints it: TeX's specials escaped (also ^, so no ^^xx sequence can
    form), control characters (a newline would end a % comment) as spaces, the symbols probe
    writes as math, and any other character outside ASCII as its closest ASCII letter or "?"."""
    out = []
    for ch in str(text):
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ch in _SYMBOLS:
            out.append(_SYMBOLS[ch])
        elif ch < " " or ch == "\x7f":
            out.append(" ")
        elif ch.isascii():
            out.append(ch)
        else:
            plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append(tex_escape(plain) if plain.strip() and plain.isprintable() else "?")
    return "".join(out)


def tex_cell(text, chunk: int = 12) -> str:
    """A table cell: escaped, with a break allowed inside long unbroken runs (a sha256, a long
    file name), so a narrow column wraps instead of running into the next."""
    words = str(text).split(" ")
    return " ".join("\\allowbreak{}".join(tex_escape(w[i:i + chunk]) for i in range(0, len(w), chunk))
                    if len(w) > chunk else tex_escape(w) for w in words)


LONG_CELL = 30  # characters: a table with a longer cell wraps its text in p-columns


def _longest(table: Table) -> list[int]:
    return [max([len(str(c))] + [len(str(r[i])) for r in table.rows if i < len(r)])
            for i, c in enumerate(table.columns)]


def _column_spec(table: Table) -> str:
    """Columns of short cells in their natural width (l, or r for numbers); columns holding a
    long cell as p-columns sharing what the short ones leave of the text width. The table is
    set in box 0 and shrunk to the text width when still wider (table_tex)."""
    longest = _longest(table)
    short = [n <= LONG_CELL for n in longest]
    # the short columns' width, estimated at 0.55 em a character of \small plus the column gaps;
    # the long ones share the rest of a ~38 em line, but never less than a third of it
    used = sum(0.55 * n + 1.0 for n, s in zip(longest, short) if s)
    room = max(38.0 - used, 12.0)
    long_total = sum(min(n, 60) for n, s in zip(longest, short) if not s) or 1
    cols = []
    for i, (n, is_short) in enumerate(zip(longest, short)):
        if is_short:
            cols.append("r" if i in table.numeric else "l")
            continue
        align = "\\raggedleft" if i in table.numeric else "\\raggedright"
        cols.append(f">{{{align}\\arraybackslash}}p{{{max(room * min(n, 60) / long_total, 6.0):.1f}em}}")
    return "@{}" + "".join(cols) + "@{}"


def _tables(node: Section, found: list) -> list:
    """(section, table) pairs in reading order."""
    for child in node.children:
        if isinstance(child, Table):
            found.append((node, child))
        elif isinstance(child, Section):
            _tables(child, found)
    return found


def table_tex(section: Section, table: Table, label: str) -> str:
    head = " & ".join(f"\\textbf{{{tex_cell(c)}}}" for c in table.columns)
    header = [f"    {head} \\\\", "    \\midrule"] if any(str(c).strip() for c in table.columns) else []
    rows = [" & ".join(tex_cell(v) for v in r) + " \\\\" for r in table.rows]
    return "\n".join([
        "\\begin{table}[htbp]", "  \\centering\\small",
        f"  \\caption{{{tex_escape(table.caption or section.title)}}}", f"  \\label{{tab:{label}}}",
        # measured in box 0 and shrunk to the text width only when wider
        f"  \\sbox0{{\\begin{{tabular}}{{{_column_spec(table)}}}", "    \\toprule", *header,
        *(f"    {r}" for r in rows), "    \\bottomrule", "  \\end{tabular}}",
        "  \\ifdim\\wd0>\\linewidth\\resizebox{\\linewidth}{!}{\\usebox0}\\else\\usebox0\\fi",
        "\\end{table}\n"])


def figure_tex(fig: Figure) -> str:
    width = f"{fig.width:g}\\linewidth" if fig.width != 1 else "\\linewidth"
    return "\n".join([
        "\\begin{figure}[htbp]", "  \\centering",
        # never taller than the page leaves room for: the caption stays on it
        f"  \\includegraphics[width={width},height=0.85\\textheight,keepaspectratio]{{figures/{fig.anchor}.pdf}}",
        f"  \\caption{{{tex_escape(fig.caption)}}}", f"  \\label{{fig:{fig.anchor}}}", "\\end{figure}\n"])


FLOATS_BEFORE_CLEARPAGE = 10  # LaTeX holds at most 18 unplaced floats


def _with_clearpages(blocks: list[str]) -> list[str]:
    out = []
    for i, block in enumerate(blocks, 1):
        out.append(block)
        if i % FLOATS_BEFORE_CLEARPAGE == 0 and i < len(blocks):
            out.append("\\clearpage\n")
    return out


def write_latex(report: Report, out: Path) -> list[Path]:
    """Copies each figure's PDF (and PNG) to out/figures/<anchor>.pdf and writes out/figures.tex
    (one figure environment each) and out/tables.tex (booktabs), both ready to \\input."""
    folder = Path(out) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    figures = []
    for fig in report.figures():
        shutil.copyfile(fig.pdf, folder / f"{fig.anchor}.pdf")
        shutil.copyfile(fig.png, folder / f"{fig.anchor}.png")
        figures.append(figure_tex(fig))
    tables, seen = [], {}
    for top in report.sections:
        for section, table in _tables(top, []):
            seen[section.anchor] = seen.get(section.anchor, 0) + 1
            tables.append(table_tex(section, table, f"{section.anchor}-{seen[section.anchor]}"))
    title = tex_escape(report.title)
    fig_path, tab_path = Path(out) / "figures.tex", Path(out) / "tables.tex"
    atomic_write_text(fig_path, "\n".join([f"% Figures of: {title}. Made by probe; \\input{{figures.tex}} "
                                          "after \\usepackage{graphicx}.\n", *_with_clearpages(figures)]))
    atomic_write_text(tab_path, "\n".join([f"% Tables of: {title}. Made by probe; \\input{{tables.tex}} "
                                          "after \\usepackage{booktabs,array}.\n", *_with_clearpages(tables)]))
    return [fig_path, tab_path]
