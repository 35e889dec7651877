"""What every task shares: which model, which data, where the results go, and results.json."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from probe.errors import ConfigError, ProbeError
from probe.io import atomic_write_json
from probe.models.folder import META, WEIGHTS, ModelFolder, read_model_folder
from probe.provenance import versions

MODELS_ROOT = Path("trained_models")
REPORTS_ROOT = Path("reports")


@dataclass
class TaskOutput:
    """What a task made: the folder, the files, and a few lines for the terminal."""
    folder: Path
    files: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    results: dict = field(default_factory=dict)

    def summary(self) -> str:
        return "\n".join([*self.lines, f"→ {self.folder}"])


def resolve_model(model: str | Path | None, *, root: str | Path = MODELS_ROOT,
                  class_name: str | None = None) -> tuple[ModelFolder, str]:
    """The model folder asked for, or the newest one in `root` (whose dataset has `class_name`,
    when a class is asked for). Returns the checked folder and how it was chosen, for printing."""
    if model is not None:
        return read_model_folder(model), "given"
    root = Path(root)
    candidates = []
    if root.is_dir():
        for path in root.iterdir():
            if not (path / META).is_file():
                continue
            try:
                folder = read_model_folder(path)
            except ProbeError:
                continue  # `probe models list` says why; the newest readable one is wanted here
            if class_name is not None and not _has_class(folder, class_name):
                continue
            candidates.append(folder)
    if not candidates:
        wanted = f" whose dataset has a class {class_name!r}" if class_name is not None else ""
        raise ConfigError(f"no trained model{wanted} in {root}/: train one with `probe train` "
                          "or give --model DIR")
    newest = max(candidates, key=lambda f: (str(f.meta.get("created", "")), (f.path / META).stat().st_mtime))
    return newest, f"the newest model in {root}/"


def _has_class(folder: ModelFolder, name: str) -> bool:
    try:
        folder.spec.class_index(name)
        return True
    except ProbeError:
        return False


def output_folder(folder: ModelFolder | str, analysis: str, out: str | Path | None) -> Path:
    """`--out`, else reports/<model>/<analysis>/ (folder: a model folder or a name, such as
    "compare" for several runs); made now, so a bad path fails before the work."""
    name = folder if isinstance(folder, str) else folder.name
    path = Path(out) if out is not None else REPORTS_ROOT / name / analysis
    said = f"--out {path}" if out is not None else f"the output folder {path}"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{said} is a file, not a folder: give a folder for the results (--out DIR)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{said}: cannot make the folder ({e.strerror})") from None
    return path


def load_model_split(folder: ModelFolder, split: str, data_dir=None):
    """The split of the model's own dataset, drawn with the model's split seed and rule."""
    from probe.analysis.predict import load_split_for
    return load_split_for(folder.meta, split, data_dir)


def model_record(folder: ModelFolder) -> dict:
    """Which model a result is of: name, path, architecture and the weights' sha256 (None for a
    folder without weights, which curves and compare can still read)."""
    sha = folder.weights_sha256() if (folder.path / WEIGHTS).is_file() else None
    return {"name": folder.name, "path": str(folder.path), "arch": folder.meta.get("arch_name"),
            "weights_sha256": sha}


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
