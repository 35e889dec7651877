"""`probe curves` (learning curves of several runs on one plot) and `probe compare` (the runs
side by side in a table). Both read only meta.json and history.json: no weights, no data."""
from __future__ import annotations

import time
from pathlib import Path

from probe.analysis.curves import curves_of
from probe.errors import ConfigError
from probe.figures.curves import curves_figure
from probe.figures.style import save_figure
from probe.models.folder import ModelFolder, read_model_folder
from probe.text import text_table
from probe.tasks.common import MODELS_ROOT, TaskOutput, output_folder, write_results

# The training settings worth naming when they differ between the runs compared.
SETTINGS = ("dataset", "arch", "width", "epochs", "iters", "batch_size", "lr", "schedule",
            "weight_decay", "label_smoothing", "augment", "precision", "seed", "split_seed", "split_by")


def resolve_runs(runs, root: str | Path = MODELS_ROOT) -> list[ModelFolder]:
    """Model folders from paths, or from names of folders in `root` (`probe curves mnist-resnet20`)."""
    if not runs:
        raise ConfigError("give at least one run: a model folder such as trained_models/mnist-resnet20")
    folders, seen = [], set()
    for run in runs:
        path = Path(run)
        if not path.exists() and len(path.parts) == 1 and (Path(root) / path).is_dir():
            path = Path(root) / path
        folder = read_model_folder(path)
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


def _default_name(folders: list[ModelFolder]) -> str:
    return folders[0].name if len(folders) == 1 else "compare"


# ---- curves ---------------------------------------------------------------------------------
def run_learning_curves(runs, *, out=None, log: bool = False, root=MODELS_ROOT) -> TaskOutput:
    started = time.perf_counter()
    folders = resolve_runs(runs, root)
    out = output_folder(_default_name(folders), "curves", out)
    curves = curves_of(folders, run_labels(folders))
    figures = save_figure(curves_figure(curves, log=log), out, "curves")
    results = curves.to_dict()
    path = write_results(out, "curves", folders=folders, settings={"log": log},
                              results=results, figures=figures, started=started)
    lines = []
    for run in curves.runs:
        line = f"{run.name}: {len(run.epoch)} epochs"
        if run.best_epoch is not None:
            i = run.epoch.index(run.best_epoch)
            err = run.val_error[i]
            line += f", best epoch {run.best_epoch}" + (f" (val error {100 * err:.2f}%)" if err is not None else "")
        last = next((e for e in reversed(run.train_error) if e is not None), None)
        if last is not None:
            line += f", final train error {100 * last:.2f}%"
        lines.append(line)
        lines += [f"  note: {n}" for n in run.notes]
    lines.append(f"curves.png, curves.pdf ({'log' if log else 'linear'} scale), results.json")
    return TaskOutput(out, [*figures, path], lines, results)


# ---- compare --------------------------------------------------------------------------------
def _arch(meta: dict) -> str:
    width = (meta.get("arch") or {}).get("width", 1.0)
    return str(meta.get("arch_name", "?")) + (f" ×{width:g}" if width != 1.0 else "")


def _error(meta: dict, split: str) -> float | None:
    return ((meta.get("metrics") or {}).get(split) or {}).get("error")


def compare_row(folder: ModelFolder, label: str | None = None) -> dict:
    """The numbers of one run, from its meta.json (history.json for the epochs when the meta
    lacks them)."""
    meta = folder.meta
    epochs = meta.get("epochs_done")
    if epochs is None:
        epochs = len({r["epoch"] for r in folder.history()}) or None
    params = meta.get("parameters")
    return {
        "run": label or folder.name, "path": str(folder.path), "dataset": folder.spec.name,
        "arch": meta.get("arch_name"), "width": (meta.get("arch") or {}).get("width", 1.0),
        "architecture": _arch(meta),
        "parameters": params if isinstance(params, int) and not isinstance(params, bool) else None,
        "epochs": epochs, "best_epoch": meta.get("best_epoch"),
        "wall_seconds": meta.get("wall_seconds"), "train_seconds": meta.get("train_seconds"),
        "images_per_second": meta.get("images_per_second"),
        "val_error": _error(meta, "val"), "test_error": _error(meta, "test"),
        "train": _settings(folder.train_config),
    }


def _settings(train: dict) -> dict:
    out = {k: train[k] for k in SETTINGS if k in train}
    if "split_seed" not in out and "seed" in train:
        out["split_seed"] = train["seed"]  # models from before split_seed: it was the seed (as the loader reads it)
    return out


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


COMPARE_COLUMNS = ["run", "architecture", "params", "dataset", "epochs", "train time", "val err",
                   "test err", "images/s"]
COMPARE_NUMERIC = {2, 4, 5, 6, 7, 8}


def compare_cells(rows: list[dict]) -> list[list[str]]:
    """The compare table's cells, for the terminal and for the report alike."""
    return [[r["run"], r["architecture"], "—" if r["parameters"] is None else f"{r['parameters']:,}",
             r["dataset"], "—" if r["epochs"] is None else str(r["epochs"]), _duration(r["wall_seconds"]),
             _pct(r["val_error"]), _pct(r["test_error"]),
             "—" if r["images_per_second"] is None else f"{r['images_per_second']:,.0f}"] for r in rows]


def compare_text(rows: list[dict]) -> str:
    return text_table(COMPARE_COLUMNS, compare_cells(rows), COMPARE_NUMERIC)


def differing_settings(rows: list[dict]) -> dict[str, list]:
    """The training settings that are not the same in every run: {setting: [value per run]}."""
    keys = [k for k in SETTINGS if any(k in r["train"] for r in rows)]
    return {k: [r["train"].get(k) for r in rows] for k in keys
            if len({repr(r["train"].get(k)) for r in rows}) > 1}


def run_compare(runs, *, out=None, root=MODELS_ROOT) -> TaskOutput:
    started = time.perf_counter()
    folders = resolve_runs(runs, root)
    out = output_folder(_default_name(folders), "table", out)
    rows = [compare_row(f, label) for f, label in zip(folders, run_labels(folders))]
    text = compare_text(rows)
    differ = differing_settings(rows)
    results = {"runs": rows, "differing_settings": differ, "table": text}
    path = write_results(out, "compare", folders=folders, settings={}, results=results,
                              figures=[], started=started)
    lines = [text]
    if len(rows) > 1:
        lines.append("settings that differ: " + ("; ".join(
            f"{k} " + " / ".join("—" if v is None else str(v) for v in values) for k, values in differ.items())
            or "none"))
    lines.append("train time: training and validation, all sessions of the run; images/s: training only")
    return TaskOutput(out, [path], lines, results)
