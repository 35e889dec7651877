"""`probe compare`: the runs side by side in one table (architecture, parameters, dataset,
epochs, train time, val and test error, images/s) and the training settings that differ. It
reads only meta.json (history.json for the epochs of an older folder): no weights, no data.

Not in the registry: the report builds its comparison table from the same `compare_row` and
`compare_cells`; `COMPARE` is the entry that lets the runner write its results.json."""
from __future__ import annotations

from dataclasses import dataclass

from probe.analysis.base import Analysis, Context, ResultBase, SettingsBase
from probe.analysis.runner import MODELS_ROOT, Outcome, run_joint
from probe.models.folder import ModelFolder
from probe.presentation import Section, Table, pct
from probe.text import text_table

# The training settings worth naming when they differ between the runs compared.
SETTINGS = ("dataset", "arch", "width", "epochs", "iters", "batch_size", "lr", "schedule",
            "weight_decay", "label_smoothing", "augment", "precision", "seed", "split_seed", "split_by")
COMPARE_COLUMNS = ["run", "architecture", "params", "dataset", "epochs", "train time", "val err",
                   "test err", "images/s"]
COMPARE_NUMERIC = {2, 4, 5, 6, 7, 8}
NOTE = "train time: training and validation, all sessions of the run; images/s: training only"


@dataclass(frozen=True)
class Settings(SettingsBase):
    """compare has no options."""


@dataclass
class CompareResult(ResultBase):
    """One row per run (compare_row), the settings that differ, and the table as the terminal
    shows it."""
    KIND = "compare"
    runs: list[dict]
    differing_settings: dict[str, list]
    table: str

    def figures(self) -> dict:
        return figures(self)

    def summary(self) -> list[str]:
        return summary(self)


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
        "train": _settings(folder),
    }


def _settings(folder: ModelFolder) -> dict:
    train = folder.train_config
    # split_seed as the split loader reads it (models from before split_seed: the seed)
    return {k: train[k] for k in SETTINGS if k in train} | {"split_seed": folder.split_seed}


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def compare_cells(rows: list[dict]) -> list[list[str]]:
    """The compare table's cells, for the terminal and for the report alike."""
    return [[r["run"], r["architecture"], "—" if r["parameters"] is None else f"{r['parameters']:,}",
             r["dataset"], "—" if r["epochs"] is None else str(r["epochs"]), _duration(r["wall_seconds"]),
             pct(r["val_error"]), pct(r["test_error"]),
             "—" if r["images_per_second"] is None else f"{r['images_per_second']:,.0f}"] for r in rows]


def compare_text(rows: list[dict]) -> str:
    return text_table(COMPARE_COLUMNS, compare_cells(rows), COMPARE_NUMERIC)


def differing_settings(rows: list[dict]) -> dict[str, list]:
    """The training settings that are not the same in every run: {setting: [value per run]}."""
    keys = [k for k in SETTINGS if any(k in r["train"] for r in rows)]
    return {k: [r["train"].get(k) for r in rows] for k in keys
            if len({repr(r["train"].get(k)) for r in rows}) > 1}


def compare(folders: list[ModelFolder], labels: list[str] | None = None) -> CompareResult:
    """The table of model folders (labels: their names in it; default the folder names)."""
    rows = [compare_row(f, label) for f, label in zip(folders, labels or [None] * len(folders))]
    return CompareResult(rows, differing_settings(rows), compare_text(rows))


def run(ctx: Context | list[Context], settings: Settings) -> CompareResult:
    contexts = [ctx] if isinstance(ctx, Context) else list(ctx)
    return compare([c.folder for c in contexts], [c.name for c in contexts])


def figures(result: CompareResult) -> dict:
    return {}


def section(result: CompareResult) -> Section:
    return Section("Comparison", "comparison").add(Table(
        COMPARE_COLUMNS, compare_cells(result.runs), numeric=COMPARE_NUMERIC,
        caption="The models side by side (train time: training and validation; images/s: training only)."))


def summary(result: CompareResult) -> list[str]:
    lines = [result.table]
    if len(result.runs) > 1:
        differ = "; ".join(f"{k} " + " / ".join("—" if v is None else str(v) for v in values)
                           for k, values in result.differing_settings.items())
        lines.append(f"settings that differ: {differ or 'none'}")
    return [*lines, NOTE]


COMPARE = Analysis("compare", "Comparison", "compare", Settings, CompareResult, run, figures, section, summary,
                   needs_data=False, needs_model=False, joint=True)


def run_compare(runs, *, out=None, root=MODELS_ROOT) -> Outcome:
    """`probe compare`: reports/<run>/table/ (reports/compare/table/ for several runs) or --out."""
    return run_joint(COMPARE, runs, Settings(), out=out, root=root, folder="table")
