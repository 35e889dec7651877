"""What the task modules still here share (fooling, saliency) until each becomes an analysis
module: their output record, and results.json in the old layout. Which model and where the
output goes now live in probe.analysis.runner."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from probe.analysis import runner
from probe.analysis.runner import model_record, resolve_model  # noqa: F401  (the tasks import them here)
from probe.io import atomic_write_json
from probe.models.folder import ModelFolder
from probe.provenance import versions


@dataclass
class TaskOutput:
    """What a task made: the folder, the files, and a few lines for the terminal."""
    folder: Path
    files: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    results: dict = field(default_factory=dict)

    def summary(self) -> str:
        return "\n".join([*self.lines, f"→ {self.folder}"])


def output_folder(folder: ModelFolder | str, analysis: str, out: str | Path | None) -> Path:
    """`--out`, else reports/<model>/<analysis>/ (folder: a model folder or a name)."""
    return runner.output_folder(folder if isinstance(folder, str) else folder.name, analysis, out)


def load_model_split(folder: ModelFolder, split: str, data_dir=None):
    """The split of the model's own dataset, drawn with the model's split seed and rule."""
    return folder.load_split(split, data_dir)


def write_results(out: Path, analysis: str, *, folder: ModelFolder | None = None,
                  folders: list[ModelFolder] | None = None, settings: dict, results: dict,
                  figures: list[Path], started: float, data: dict | None = None) -> Path:
    """results.json: the numbers behind every figure, the settings, and where they came from
    (the model, or `models` for an analysis of several runs; dataset, split, versions, seconds)."""
    who = ({"model": model_record(folder)} if folder is not None else {}) | \
          ({"models": [model_record(f) for f in folders]} if folders is not None else {})
    doc = {
        "analysis": analysis,
        **who,
        "data": data or {},
        "settings": settings,
        "results": results,
        "figures": sorted(p.name for p in figures),
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - started, 3),
    }
    path = out / "results.json"
    atomic_write_json(path, doc)
    return path
