"""Learning curves: training and validation error and loss against epoch, of one run or of
several side by side (residual against plain, depth 20 against 56, augmentation on against off).

The input is each run's history (history.json: one record per epoch, as `probe train` writes
it): no weights, no data. `learning_curves` takes the records themselves, for runs probe did not
train; `run` reads them from the model folders of its contexts.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

from probe.analysis.base import Analysis, Context, ResultBase, SettingsBase
from probe.errors import ConfigError, ModelFileError
from probe.figures.curves import curves_figure
from probe.presentation import FigureRef, Section

SERIES = ("train_error", "val_error", "train_loss", "val_loss", "train_objective")


@dataclass(frozen=True)
class Settings(SettingsBase):
    log: bool = False  # --log: log-scale error and loss axes

    def __post_init__(self):
        if not isinstance(self.log, bool):
            raise ConfigError(f"--log {self.log!r}: give --log or --no-log")


@dataclass
class RunCurves:
    """One run's curves, one value per epoch (None where the history has no number).

    train_loss is the plain cross-entropy, comparable with val_loss; train_objective is what was
    minimised (with label smoothing, when on). Histories written before the two were told apart
    have only train_loss, which then *is* the objective: with label smoothing on, such a run's
    train_loss is reported as its train_objective and its train_loss is None."""
    name: str
    epoch: list[int]
    train_error: list[float | None]
    val_error: list[float | None]
    train_loss: list[float | None]
    val_loss: list[float | None]
    train_objective: list[float | None]
    label_smoothing: float = 0.0
    best_epoch: int | None = None  # the epoch whose weights were kept (chosen on validation)
    notes: list[str] = field(default_factory=list)

    @property
    def smoothed(self) -> bool:
        """Whether the objective differs from the cross-entropy (label smoothing on)."""
        return self.label_smoothing > 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CurvesResult(ResultBase):
    """The curves of one or more runs, in plot order; log: drawn on log-scale axes."""
    KIND = "curves"
    runs: list[RunCurves]
    log: bool = False

    def __post_init__(self):
        try:  # from_json hands the runs over as dicts
            self.runs = [r if isinstance(r, RunCurves) else RunCurves(**r) for r in self.runs]
        except TypeError as e:
            raise ModelFileError(f"curves result with a malformed run ({e}): run the analysis again") from None

    def to_json(self) -> dict:
        return super().to_json() | {"runs": [r.to_dict() for r in self.runs]}

    def to_dict(self) -> dict:
        """The numbers behind the figure: {"runs": [one dict per run]}."""
        return {"runs": [r.to_dict() for r in self.runs]}


def _number(value, name: str, epoch, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelFileError(f"{name}: history record of epoch {epoch}: {key} is {value!r}, not a number")
    return float(value) if math.isfinite(value) else None  # a NaN loss: a gap in the curve


def _by_epoch(name: str, history: Iterable[dict], notes: list[str]) -> list[dict]:
    """The records in epoch order; an epoch recorded twice keeps its last record."""
    by_epoch: dict[int, dict] = {}
    for record in history:
        epoch = record.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ModelFileError(f"{name}: history record with epoch {epoch!r}, not an epoch number")
        if epoch in by_epoch:
            notes.append(f"epoch {epoch} recorded twice (a resumed run): its last record is used")
        by_epoch[epoch] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def run_curves(name: str, history: Iterable[dict], *, label_smoothing: float = 0.0) -> RunCurves:
    """The curves of one run from its history records (any order). An epoch recorded twice (an
    --iters run extended later finishes the epoch it stopped in) keeps its last record."""
    notes: list[str] = []
    records = _by_epoch(name, history, notes)
    series = {key: [_number(r.get(key), name, r["epoch"], key) for r in records] for key in SERIES}
    if not any("train_objective" in r for r in records):
        if label_smoothing > 0:
            # An older history: its train_loss included the smoothing, so it is the objective.
            series["train_objective"] = series["train_loss"]
            series["train_loss"] = [None] * len(records)
            notes.append("older history: its train_loss includes label smoothing, so it is shown "
                         "as the training objective, not as the cross-entropy")
        else:
            series["train_objective"] = list(series["train_loss"])  # no smoothing: the same number
    best = [r["epoch"] for r in records if r.get("best") is True]
    return RunCurves(name=name, epoch=[r["epoch"] for r in records], **series,
                     label_smoothing=float(label_smoothing), best_epoch=best[-1] if best else None,
                     notes=notes)


def learning_curves(histories, label_smoothing: dict[str, float] | None = None, *,
                    log: bool = False) -> CurvesResult:
    """histories: {run name: history records} (or (name, records) pairs), in plot order; each
    record a dict with "epoch" and any of train_error, val_error, train_loss, val_loss,
    train_objective, best. label_smoothing: {run name: its smoothing} (default 0)."""
    items = list(histories.items()) if isinstance(histories, dict) else list(histories)
    smoothing = label_smoothing or {}
    return CurvesResult([run_curves(name, records, label_smoothing=smoothing.get(name, 0.0))
                         for name, records in items], log=log)


def curves_of(folders, names: list[str] | None = None, *, log: bool = False) -> CurvesResult:
    """The curves of model folders (probe.models.folder.ModelFolder), read from history.json.
    names: the labels to use (default each folder's name)."""
    names = names or [f.name for f in folders]
    runs = []
    for folder, name in zip(folders, names):
        history = folder.history()
        if not history:
            raise ModelFileError(f"{folder.path}: no history.json (or an empty one): no curves to draw")
        smoothing = folder.train_config.get("label_smoothing") or 0.0
        runs.append(run_curves(name, history, label_smoothing=float(smoothing)))
    return CurvesResult(runs, log=log)


def run(ctx: Context | list[Context], settings: Settings) -> CurvesResult:
    """One context (a model's own curves) or several (their curves on one plot); each context
    needs its model folder only, not its weights."""
    contexts = [ctx] if isinstance(ctx, Context) else list(ctx)
    missing = [c.name for c in contexts if c.folder is None]
    if missing:
        raise ConfigError(f"{missing[0]}: learning curves need a model folder with its history.json")
    return curves_of([c.folder for c in contexts], [c.name for c in contexts], log=settings.log)


def figures(result: CurvesResult) -> dict:
    return {"curves": curves_figure(result, log=result.log)}


def section(result: CurvesResult) -> Section:
    """One run: its curves; several: the runs on one plot (the report's comparison)."""
    if len(result.runs) == 1:
        caption = f"{result.runs[0].name}: training (dashed) and validation (solid) error and loss per epoch."
    else:
        caption = ("Learning curves of the models on one plot: each model one colour, training dashed, "
                   "validation solid.")
    return Section(ANALYSIS.title, "curves").add(FigureRef("curves", caption, data=result.to_dict()))


def _run_line(run: RunCurves) -> str:
    line = f"{run.name}: {len(run.epoch)} epochs"
    if run.best_epoch is not None:
        err = run.val_error[run.epoch.index(run.best_epoch)]
        line += f", best epoch {run.best_epoch}" + (f" (val error {100 * err:.2f}%)" if err is not None else "")
    last = next((e for e in reversed(run.train_error) if e is not None), None)
    if last is not None:
        line += f", final train error {100 * last:.2f}%"
    return line


def summary(result: CurvesResult) -> list[str]:
    lines = []
    for r in result.runs:
        lines += [_run_line(r), *(f"  note: {n}" for n in r.notes)]
    lines.append(f"error and loss on a {'log' if result.log else 'linear'} scale")
    return lines


ANALYSIS = Analysis("curves", "Learning curves", "curves", Settings, CurvesResult, run, figures, section, summary,
                    needs_data=False, needs_model=False, reads_history=True, joint=True)
