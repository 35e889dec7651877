"""Figures: one plotting style (style.py), saved as PNG for the web and vector PDF for LaTeX.
Each maker takes an analysis result and returns matplotlib Figures; nothing here computes."""
