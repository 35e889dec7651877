"""The LaTeX flavour: every figure as its own vector PDF in figures/ under a stable name, and
figures.tex with one figure environment per figure, ready to \\input."""
from __future__ import annotations

import shutil
from pathlib import Path

from probe.io import atomic_write_text
from probe.presentation import Report

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "<": r"\textless{}", ">": r"\textgreater{}"}


def tex_escape(text: str) -> str:
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


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
