"""The one way an analysis command runs: which model (the folder, or the newest), its Context,
the analysis's run, its figures as PNG + PDF, and results.json (+ arrays.safetensors) in
reports/<model>/<analysis>/ or --out. The CLI and the report both come through here."""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from safetensors.torch import save as st_save

from probe.analysis.base import Analysis, Context
from probe.device import resolve_device
from probe.errors import ConfigError, ModelFileError, ProbeError
from probe.figures.style import save_figure
from probe.io import atomic_write_bytes, atomic_write_json
from probe.models.folder import META, WEIGHTS, ModelFolder, load_model_folder, read_model_folder, read_safetensors
from probe.progress import progress
from probe.provenance import versions

MODELS_ROOT = Path("trained_models")
REPORTS_ROOT = Path("reports")
RESULTS, ARRAYS = "results.json", "arrays.safetensors"
MAX_RESULTS_BYTES = 200_000_000  # a results.json of the largest analysis is a few MB


@dataclass
class Outcome:
    """What a command made: its folder, its files, its result and the lines for the terminal."""
    folder: Path
    result: object
    files: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "\n".join([*self.lines, f"→ {self.folder}"])


# ---- which model, where the output goes --------------------------------------------------------


def resolve_model(model: str | Path | None, *, root: str | Path = MODELS_ROOT,
                  class_name: str | None = None) -> tuple[ModelFolder, str]:
    """The model folder asked for, or the newest one in `root` (whose dataset has `class_name`,
    when a class is asked for). Returns the checked folder and how it was chosen, for printing."""
    if model is not None:
        return read_model_folder(model), "given"
    root = Path(root)
    candidates = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if not (path / META).is_file():
            continue
        try:
            folder = read_model_folder(path)
        except ProbeError:
            continue  # `probe models list` says why; the newest readable one is wanted here
        if class_name is None or _has_class(folder, class_name):
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


def output_folder(name: str, analysis: str, out: str | Path | None) -> Path:
    """`--out`, else reports/<name>/<analysis>/; made now, so a bad path fails before the work."""
    path = Path(out) if out is not None else REPORTS_ROOT / name / analysis
    said = f"--out {path}" if out is not None else f"the output folder {path}"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{said} is a file, not a folder: give a folder for the results (--out DIR)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{said}: cannot make the folder ({e.strerror})") from None
    return path


@contextlib.contextmanager
def progress_hook(what: str) -> Iterator:
    """A progress bar on stderr (a terminal only) driven by Context.progress(description, done, total)."""
    with progress(what) as bar:
        task = bar.add_task("", total=None)

        def hook(description: str, done: float, total: float | None = None) -> None:
            bar.update(task, description=description, completed=done, total=total)
        yield hook


def context_for(folder: ModelFolder, *, device="auto", data_dir=None, hook=None) -> Context:
    """The model of a folder loaded on `device`, with its dataset's split loader."""
    net, _ = load_model_folder(folder.path, resolve_device(device))
    return Context.of(net, folder=folder, data_dir=data_dir, progress=hook)


# ---- results.json ------------------------------------------------------------------------------


def model_record(folder: ModelFolder) -> dict:
    """Which model a result is of: name, path, architecture and the weights' sha256 (None for a
    folder without weights, which curves and compare can still read)."""
    sha = folder.weights_sha256() if (folder.path / WEIGHTS).is_file() else None
    return {"name": folder.name, "path": str(folder.path), "arch": folder.meta.get("arch_name"),
            "weights_sha256": sha}


def write_outputs(entry: Analysis, result, out: Path, *, settings, folders: list[ModelFolder],
                  started: float, device: str | None = None) -> list[Path]:
    """The result's figures (PNG + PDF), its extra files, arrays.safetensors and results.json:
    the numbers behind every figure, the settings, and where they came from."""
    files = []
    for stem, fig in entry.figures(result).items():
        files += save_figure(fig, out, stem)
    if entry.write_files is not None:
        files += entry.write_files(result, out)
    arrays = {k: v.detach().cpu().contiguous() for k, v in result.arrays().items()}
    if arrays:
        atomic_write_bytes(out / ARRAYS, st_save(arrays, metadata={"format": f"probe {entry.name} arrays"}))
        files.append(out / ARRAYS)
    who = {"models": [model_record(f) for f in folders]} if entry.joint else {"model": model_record(folders[0])}
    doc = {"analysis": entry.name, **who, "settings": settings.to_json(), "device": device,
           "results": result.to_json(), "figures": sorted(p.name for p in files if p.suffix in (".png", ".pdf")),
           "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "seconds": round(time.perf_counter() - started, 3)}
    atomic_write_json(out / RESULTS, doc)
    return [*files, out / RESULTS]


def read_outputs(entry: Analysis, out: Path):
    """The Result an earlier run wrote to `out` (results.json + arrays.safetensors)."""
    path = out / RESULTS
    if not path.is_file() or path.stat().st_size > MAX_RESULTS_BYTES:
        raise ModelFileError(f"{path}: no results of {entry.name} (or far too large): run it again")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise ModelFileError(f"{path}: corrupt JSON ({e.__class__.__name__}): run it again") from None
    arrays = read_safetensors(out / ARRAYS)[0] if (out / ARRAYS).is_file() else {}
    return entry.result.from_json(doc.get("results") if isinstance(doc, dict) else None, arrays)


# ---- one command ----------------------------------------------------------------------------------


def run_analysis(entry: Analysis, model, settings, *, out=None, data_dir=None, device="auto",
                 root=MODELS_ROOT, class_name: str | None = None) -> Outcome:
    """`probe <analysis>`: the model folder (or the newest in root), the analysis run on it,
    its files written. class_name: pick the newest model that has this class."""
    started = time.perf_counter()
    folder, how = resolve_model(model, root=root, class_name=class_name)
    out = output_folder(folder.name, entry.name, out)
    with progress_hook(entry.title) as hook:
        ctx = context_for(folder, device=device, data_dir=data_dir, hook=hook)
        result = entry.run(ctx, settings)
    files = write_outputs(entry, result, out, settings=settings, folders=[folder], started=started,
                          device=str(ctx.device))
    lines = [f"model: {folder.path} ({how})", *entry.summary(result),
             f"{sum(p.suffix == '.png' for p in files)} figure(s) (PNG + PDF), "
             + ", ".join(p.name for p in files if p.suffix not in (".png", ".pdf"))]
    return Outcome(out, result, files, lines)
