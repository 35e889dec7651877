"""Learning curves: training and validation error and loss against epoch, of one run or of
several side by side (residual against plain, depth 20 against 56, augmentation on against off).

The input is each run's history (history.json: one record per epoch, as `probe train` writes
it): no weights, no data. `learning_curves` takes the records themselves, for runs probe did not
train; `run` reads them from the model folders of its contexts.

As in He et al. (2016, Figure 6): training error thin and dashed, validation error bold, on a
log axis by default (0.54% against 0.62% stays visible), the learning-rate schedule marked (its
drops; the warm-up of a onecycle or warmed-up schedule shaded). Several models drawn one figure
each share their axes: `shared_settings(folders)` gives the limits of all of them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

from probe.analysis.base import Analysis, Context, ResultBase, SettingsBase
from probe.errors import ConfigError, ModelFileError
from probe.figures.curves import axis_limits, curves_figure
from probe.methods.confusion import wilson_interval
from probe.presentation import FigureRef, Section, Text, pct
from probe.text import count
from probe.train.schedule import Schedule

SERIES = ("train_error", "val_error", "train_loss", "val_loss", "train_objective")


def _check_range(option: str, value) -> None:
    if value is None:
        return
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    if not ok or not 0 < value[0] <= value[1]:
        raise ConfigError(f"{option} {value!r}: give (smallest, largest) value to show, 0 < smallest ≤ largest")


@dataclass(frozen=True)
class Settings(SettingsBase):
    """log: log-scale error and loss axes. max_epoch, error_range (fractions, not percent) and
    loss_range: the smallest and largest positive values the axes must show, to give several
    models' figures the same axes (default: those of the runs drawn; `shared_settings` computes
    them for a set of model folders)."""
    log: bool = True  # --log/--no-log
    max_epoch: int | None = None
    error_range: tuple[float, float] | None = None
    loss_range: tuple[float, float] | None = None

    def __post_init__(self):
        if not isinstance(self.log, bool):
            raise ConfigError(f"--log {self.log!r}: give --log or --no-log")
        if self.max_epoch is not None and (isinstance(self.max_epoch, bool) or not isinstance(self.max_epoch, int)
                                           or self.max_epoch < 1):
            raise ConfigError(f"max_epoch {self.max_epoch!r}: give a whole number of epochs, 1 or more")
        _check_range("error_range", self.error_range)
        _check_range("loss_range", self.loss_range)

    @property
    def axes(self) -> dict:
        return {"max_epoch": self.max_epoch, "error_range": self.error_range, "loss_range": self.loss_range}


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
    lr: list[float | None] = field(default_factory=list)  # at each epoch's last step, where recorded
    schedule: str | None = None  # the train config's schedule name, where known
    lr_drops: list[float] = field(default_factory=list)  # epochs (x) where the lr dropped
    lr_peak: float | None = None  # the epoch (x) where a rising (warm-up) lr peaked
    val_n: int | None = None  # validation images, where known

    @property
    def smoothed(self) -> bool:
        """Whether the objective differs from the cross-entropy (label smoothing on)."""
        return self.label_smoothing > 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CurvesResult(ResultBase):
    """The curves of one or more runs, in plot order; log: drawn on log-scale axes; axes: what
    the axes show ({"max_epoch", "error_range", "loss_range"}: the last epoch, the smallest and
    largest positive error (fraction) and loss; None: the data's)."""
    KIND = "curves"
    runs: list[RunCurves]
    log: bool = True
    axes: dict | None = None

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
    if key.endswith("_error") and math.isfinite(value) and not 0 <= value <= 1:
        # found by the fuzz suite: an error of 7e16 reached the Wilson interval (math domain error)
        raise ModelFileError(f"{name}: history record of epoch {epoch}: {key} is {value!r}, not a "
                             "fraction between 0 and 1")
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


def lr_marks(epochs: list[int], lr: list[float | None], schedule: str | None = None,
             total_epochs: float | None = None) -> tuple[list[float], float | None]:
    """(drops, peak) of the learning rate, in epochs (x of the curves): the boundaries after which
    the lr fell to half or less (a step schedule, He et al.'s ÷10), and the end of a rising
    warm-up. From the lr recorded at each epoch's last step where the history has it; else from
    the schedule's definition (probe.train.schedule) over total_epochs. A smooth decay (cosine,
    onecycle after its peak) has no drops."""
    known = [(e, v) for e, v in zip(epochs, lr) if v is not None and v > 0]
    if len(known) >= 2:
        values = [v for _, v in known]
        steps = schedule == "paper" or (schedule is None and all(
            math.isclose(b, a, rel_tol=1e-3) or b <= a / 2 or b >= 2 * a for a, b in zip(values, values[1:])))
        drops = [float(e0) for (e0, a), (_, b) in zip(known, known[1:]) if b <= a / 2] if steps else []
        top = values.index(max(values))
        peak = float(known[top][0]) if top > 0 else None
        return drops, peak
    if not total_epochs:
        return [], None
    if schedule == "paper":
        return [m * total_epochs for m in Schedule.milestones], None
    if schedule == "onecycle":
        return [], Schedule.onecycle_pct * total_epochs
    return [], None


def run_curves(name: str, history: Iterable[dict], *, label_smoothing: float = 0.0,
               schedule: str | None = None, total_epochs: float | None = None,
               val_n: int | None = None) -> RunCurves:
    """The curves of one run from its history records (any order). An epoch recorded twice (an
    --iters run extended later finishes the epoch it stopped in) keeps its last record.
    schedule, total_epochs: the lr schedule's name and length, to mark it where the records have
    no lr; val_n: the validation images behind val_error (for its interval)."""
    notes: list[str] = []
    records = _by_epoch(name, history, notes)
    series = {key: [_number(r.get(key), name, r["epoch"], key) for r in records] for key in (*SERIES, "lr")}
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
    epochs = [r["epoch"] for r in records]
    drops, peak = lr_marks(epochs, series["lr"], schedule, total_epochs)
    return RunCurves(name=name, epoch=epochs, **{k: series[k] for k in SERIES},
                     label_smoothing=float(label_smoothing), best_epoch=best[-1] if best else None,
                     notes=notes, lr=series["lr"], schedule=schedule, lr_drops=drops, lr_peak=peak,
                     val_n=val_n)


def learning_curves(histories, label_smoothing: dict[str, float] | None = None, *,
                    log: bool = True) -> CurvesResult:
    """histories: {run name: history records} (or (name, records) pairs), in plot order; each
    record a dict with "epoch" and any of train_error, val_error, train_loss, val_loss,
    train_objective, best, lr. label_smoothing: {run name: its smoothing} (default 0)."""
    items = list(histories.items()) if isinstance(histories, dict) else list(histories)
    smoothing = label_smoothing or {}
    runs = [run_curves(name, records, label_smoothing=smoothing.get(name, 0.0)) for name, records in items]
    return CurvesResult(runs, log=log, axes=axis_limits(runs))


def folder_curves(folder, name: str | None = None) -> RunCurves:
    """One model folder's curves (probe.models.folder.ModelFolder), from its history.json, its
    train config (label smoothing, lr schedule) and its validation split's size."""
    history = folder.history()
    if not history:
        raise ModelFileError(f"{folder.path}: no history.json (or an empty one): no curves to draw")
    train = folder.train_config
    meta = folder.meta
    val_n = ((meta.get("metrics") or {}).get("val") or {}).get("n") or (meta.get("split_sizes") or {}).get("val")
    epochs = train.get("epochs") or meta.get("epochs_done")
    return run_curves(name or folder.name, history, label_smoothing=float(train.get("label_smoothing") or 0.0),
                      schedule=train.get("schedule"), val_n=val_n if isinstance(val_n, int) else None,
                      total_epochs=epochs if isinstance(epochs, (int, float)) else None)


def curves_of(folders, names: list[str] | None = None, *, log: bool = True, axes: dict | None = None) -> CurvesResult:
    """The curves of model folders, read from history.json. names: the labels to use (default
    each folder's name); axes: limits to draw them in (default: the runs' own)."""
    names = names or [f.name for f in folders]
    runs = [folder_curves(folder, name) for folder, name in zip(folders, names)]
    own = axis_limits(runs)
    return CurvesResult(runs, log=log, axes={k: v if (axes or {}).get(k) is None else axes[k] for k, v in own.items()})


def shared_settings(folders, *, log: bool = True) -> dict:
    """Settings keywords that give each folder's curves the same axes (those of all of them):
    the report passes them to every model's curves. Folders without a history are left out."""
    runs = [folder_curves(f) for f in folders if f.history()]
    limits = axis_limits(runs) if runs else {}
    return {"log": log} | {k: (tuple(v) if isinstance(v, list) else v) for k, v in limits.items()}


def run(ctx: Context | list[Context], settings: Settings) -> CurvesResult:
    """One context (a model's own curves) or several (their curves on one plot); each context
    needs its model folder only, not its weights."""
    contexts = [ctx] if isinstance(ctx, Context) else list(ctx)
    missing = [c.name for c in contexts if c.folder is None]
    if missing:
        raise ConfigError(f"{missing[0]}: learning curves need a model folder with its history.json")
    return curves_of([c.folder for c in contexts], [c.name for c in contexts], log=settings.log,
                     axes={k: list(v) if isinstance(v, tuple) else v for k, v in settings.axes.items()})


def figures(result: CurvesResult) -> dict:
    return {"curves": curves_figure(result, log=result.log)}


def _schedule_words(runs: list[RunCurves]) -> str:
    words = []
    if any(r.lr_peak is not None for r in runs):
        words.append("the shaded span is the learning rate rising to its peak")
    if any(r.lr_drops for r in runs):
        words.append("dotted vertical lines mark its drops")
    return "; ".join(words)


def section(result: CurvesResult) -> Section:
    """One run: its curves; several: the runs on one plot (the report's comparison)."""
    scale = "log" if result.log else "linear"
    if len(result.runs) == 1:
        caption = (f"{result.runs[0].name}: training (thin, dashed) and validation (bold, solid) error and loss "
                   f"per epoch, {scale} scale")
    else:
        caption = (f"Learning curves of the models on one plot ({scale} scale): each model one colour, "
                   "training thin and dashed, validation bold and solid")
    marks = _schedule_words(result.runs)
    caption += (f"; {marks}." if marks else ".")
    s = Section(ANALYSIS.title, "curves").add(FigureRef("curves", caption, data=result.to_dict()))
    best = [line for line in (_best_line(r) for r in result.runs) if line]
    if best:
        s.add(Text("Best validation error (the epoch whose weights were kept; chosen on the same images, so "
                   "slightly optimistic): " + "; ".join(best) + "."))
    return s


def _best_line(run: RunCurves) -> str | None:
    """"mnist-resnet20 0.54% (95% interval 0.38–0.77%, n = 5,000) at epoch 18"."""
    if run.best_epoch is None or run.val_error[run.epoch.index(run.best_epoch)] is None:
        return None
    err = run.val_error[run.epoch.index(run.best_epoch)]
    if run.val_n:
        ci = wilson_interval(round(err * run.val_n), run.val_n)
        where = f" (95% interval {100 * ci[0]:.2f}–{100 * ci[1]:.2f}%, n = {run.val_n:,})"
    else:
        where = " (validation size unknown: no interval)"
    return f"{run.name} {pct(err)}{where} at epoch {run.best_epoch}"


def _run_line(run: RunCurves) -> str:
    line = f"{run.name}: {count(len(run.epoch), 'epoch')}"
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
    best = [line for line in (_best_line(r) for r in result.runs) if line]
    return lines + ([f"best validation error: {'; '.join(best)}"] if best else [])


ANALYSIS = Analysis("curves", "Learning curves", "curves", Settings, CurvesResult, run, figures, section, summary,
                    needs_data=False, needs_model=False, reads_history=True, joint=True)
