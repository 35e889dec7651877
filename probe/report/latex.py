"""The LaTeX flavour: every figure as its own vector PDF in figures/ under a stable name, and
figures.tex with one figure environment per figure, ready to \\input."""
from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

from probe.io import atomic_write_text
from probe.presentation import Report

# Written so that any font encoding prints them (a thesis may load T1; the default is OT1).
_SPECIAL = {"\\": r"$\backslash$", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\~{}", "^": r"\^{}", "<": r"$<$", ">": r"$>$", "|": r"$|$",
            '"': r"{\ttfamily\char34}", "-": "-{}"}
# The symbols probe's own text uses, as pdflatex writes them without extra packages.
_SYMBOLS = {"ε": r"$\varepsilon$", "∞": r"$\infty$", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$",
            "−": "-", "–": "--", "—": "---", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "→": r"$\to$",
            "…": r"\ldots{}", "±": r"$\pm$", "·": r"$\cdot$", "²": r"$^2$", "ρ": r"$\rho$", "δ": r"$\delta$",
            "α": r"$\alpha$", "σ": r"$\sigma$", "°": r"$^\circ$", "‘": "`", "’": "'", "“": "``", "”": "''",
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


def write_latex(report: Report, out: Path) -> Path:
    """Copies each figure's PDF (and PNG) to out/figures/<anchor>.pdf and writes out/figures.tex."""
    folder = Path(out) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    blocks = [f"% Figures of: {report.title}. Made by probe; \\input{{figures.tex}} after "
              "\\usepackage{graphicx}.\n"]
    for fig in report.figures():
        shutil.copyfile(fig.pdf, folder / f"{fig.anchor}.pdf")
        shutil.copyfile(fig.png, folder / f"{fig.anchor}.png")
        width = f"{fig.width:g}\\linewidth" if fig.width != 1 else "\\linewidth"
        blocks.append("\n".join([
            "\\begin{figure}[htbp]",
            "  \\centering",
            f"  \\includegraphics[width={width}]{{figures/{fig.anchor}.pdf}}",
            f"  \\caption{{{tex_escape(fig.caption)}}}",
            f"  \\label{{fig:{fig.anchor}}}",
            "\\end{figure}\n"]))
    path = Path(out) / "figures.tex"
    atomic_write_text(path, "\n".join(blocks))
    return path
