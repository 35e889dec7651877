"""The analyses, in report order: the CLI's commands and the report's plan both iterate this."""
from __future__ import annotations

from probe.analysis import curves, fooling, misclassified, robustness, saliency
from probe.analysis.base import Analysis

ANALYSES: dict[str, Analysis] = {a.name: a for a in (
    curves.ANALYSIS,
    misclassified.ANALYSIS,
    saliency.ANALYSIS,
    fooling.NOISE_ANALYSIS,
    fooling.DATASET_ANALYSIS,
    robustness.ANALYSIS,
)}


def entry_of(result) -> Analysis:
    """The registry entry whose Result class `result` is."""
    for entry in ANALYSES.values():
        if isinstance(result, entry.result):
            return entry
    raise TypeError(f"{type(result).__name__} is not the result of a registered analysis")
