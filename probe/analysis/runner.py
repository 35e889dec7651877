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
from probe.device import configure_for_speed, resolve_device
from probe.errors import ConfigError, ModelFileError, ProbeError
from probe.figures.style import save_figure
from probe.io import atomic_write_bytes, atomic_write_json, read_json
from probe.models.folder import META, ModelFolder, read_model_folder, read_safetensors
from probe.models.foreign import open_model
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
    when a class is asked for). Returns the checked folder and how it was chosen, for printing.
    model: a folder, a model file of yours (with the model info beside it), or a ModelFolder
    already read (probe.models.foreign.open_model: a file with --model-info)."""
    if model is not None:
        return open_model(model), "given"
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


def context_for(folder: ModelFolder, *, device="auto", data_dir=None, hook=None, name: str | None = None,
                load: bool = True) -> Context:
    """The model of a folder loaded on `device`, with its dataset's split loader. load=False:
    the folder without its weights (model None), for an analysis of meta.json and history.json."""
    dev = resolve_device(device)
    configure_for_speed(dev)
    net = folder.load(dev) if load else None
    return Context.of(net, folder=folder, data_dir=data_dir, progress=hook, name=name)


def resolve_runs(runs, root: str | Path = MODELS_ROOT) -> list[ModelFolder]:
    """Model folders from paths, or from names of folders in `root` (`probe curves mnist-resnet20`)."""
    if not runs:
        raise ConfigError("give at least one run: a model folder such as trained_models/mnist-resnet20")
    folders, seen = [], set()
    for run in runs:
        path = Path(run) if not isinstance(run, ModelFolder) else run.path
        if not path.exists() and len(path.parts) == 1 and (Path(root) / path).is_dir():
            path = Path(root) / path
        folder = open_model(run if isinstance(run, ModelFolder) else path)
        key = folder.path.resolve()
        if key in seen:
            raise ConfigError(f"{run}: the same run is given twice")
        seen.add(key)
        folders.append(folder)
    return folders


def run_labels(folders: list[ModelFolder]) -> list[str]:
    """Each run's folder name, or its path where two runs share a name."""
    names = [f.name for f in folders]
    return [n if names.count(n) == 1 else str(f.path) for n, f in zip(names, folders)]


# ---- results.json ------------------------------------------------------------------------------


def model_record(folder: ModelFolder) -> dict:
    """Which model a result is of: name, path, architecture and the weights' sha256 (None for a
    folder without weights, which curves and compare can still read)."""
    sha = folder.weights_sha256() if folder.weights_file().is_file() else None
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
    data = {"dataset": folders[0].spec.name, "split_seed": folders[0].split_seed} | result.data_info()
    doc = {"analysis": entry.name, **who, "data": data, "settings": settings.to_json(), "device": device,
           "results": result.to_json(),
           "figures": sorted(p.name for p in files if p.suffix in (".png", ".pdf") and p.parent == out),
           "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "seconds": round(time.perf_counter() - started, 3)}
    stale = _earlier_figures(out) - set(doc["figures"])
    atomic_write_json(out / RESULTS, doc)
    for name in stale:  # an earlier run's pages this run does not have (it showed fewer images)
        (out / name).unlink(missing_ok=True)
    return [*files, out / RESULTS]


def _earlier_figures(out: Path) -> set[str]:
    """The figure files an earlier run wrote to `out`, as its results.json lists them (plain file
    names of PNGs and PDFs only: nothing else is ever removed)."""
    try:
        names = json.loads((out / RESULTS).read_text()).get("figures") or []
    except (OSError, ValueError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str) and Path(n).name == n and Path(n).suffix in (".png", ".pdf")}


def read_outputs(entry: Analysis, out: Path):
    """The Result an earlier run wrote to `out` (results.json + arrays.safetensors)."""
    path = out / RESULTS
    if not path.exists():
        raise ModelFileError(f"{path}: no results of {entry.name}: run it again")
    doc = read_json(path, f"results of {entry.name}", MAX_RESULTS_BYTES, ModelFileError)
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
        ctx = context_for(folder, device=device, data_dir=data_dir, hook=hook, load=entry.needs_model)
        result = entry.execute([ctx] if entry.joint else ctx, settings)
    return _finish(entry, result, out, settings, [folder], started, ctx, [f"model: {folder.path} ({how})"])


def run_joint(entry: Analysis, runs, settings, *, out=None, data_dir=None, device="auto",
              root=MODELS_ROOT, name: str | None = None, folder: str | None = None) -> Outcome:
    """`probe curves a b`: one analysis of several model folders at once (run(list[Context])).
    runs: paths, or names of folders in root (none: the newest model in root). Output in --out,
    else reports/<name>/<folder>/; name default: the run's own for one, "compare" for several;
    folder default: the analysis's name."""
    started = time.perf_counter()
    folders, lines = (resolve_runs(runs, root), []) if runs else _newest(root)
    name = name or (folders[0].name if len(folders) == 1 else "compare")
    out = output_folder(name, folder or entry.name, out)
    with progress_hook(entry.title) as hook:
        contexts = [context_for(f, device=device, data_dir=data_dir, hook=hook, name=label,
                                load=entry.needs_model) for f, label in zip(folders, run_labels(folders))]
        result = entry.execute(contexts, settings)
    return _finish(entry, result, out, settings, folders, started, contexts[0], lines)


def _newest(root) -> tuple[list[ModelFolder], list[str]]:
    folder, how = resolve_model(None, root=root)
    return [folder], [f"model: {folder.path} ({how})"]


def _finish(entry: Analysis, result, out: Path, settings, folders: list[ModelFolder], started: float,
            ctx: Context, lines: list[str]) -> Outcome:
    """The files written, and the lines for the terminal: how the model was chosen, the
    analysis's summary, what was written."""
    device = str(ctx.device) if ctx.model is not None else None
    files = write_outputs(entry, result, out, settings=settings, folders=folders, started=started,
                          device=device)
    figures = sum(p.suffix == ".png" and p.parent == out for p in files)  # not images/*.png of fooling
    made = ([f"{figures} figure(s) (PNG + PDF)"] if figures else []) + \
        [p.name for p in files if p.suffix not in (".png", ".pdf")]
    return Outcome(out, result, files, [*lines, *entry.summary(result), ", ".join(made)])
