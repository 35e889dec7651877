"""Learning curves: training and validation error and loss against epoch, of one run or of
several side by side (residual against plain, depth 20 against 56, augmentation on against off).

The input is each run's history (history.json: one record per epoch, as `probe train` writes
it); nothing here reads files or draws.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

from probe.errors import ModelFileError

SERIES = ("train_error", "val_error", "train_loss", "val_loss", "train_objective")


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
class Curves:
    runs: list[RunCurves]

    def to_dict(self) -> dict:
        return {"runs": [r.to_dict() for r in self.runs]}


def _number(value, name: str, epoch, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelFileError(f"{name}: history record of epoch {epoch}: {key} is {value!r}, not a number")
    return float(value) if math.isfinite(value) else None  # a NaN loss: a gap in the curve


def run_curves(name: str, history: Iterable[dict], *, label_smoothing: float = 0.0) -> RunCurves:
    """The curves of one run from its history records (any order). An epoch recorded twice (an
    --iters run extended later finishes the epoch it stopped in) keeps its last record."""
    by_epoch: dict[int, dict] = {}
    notes = []
    for record in history:
        epoch = record.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ModelFileError(f"{name}: history record with epoch {epoch!r}, not an epoch number")
        if epoch in by_epoch:
            notes.append(f"epoch {epoch} recorded twice (a resumed run): its last record is used")
        by_epoch[epoch] = record
    epochs = sorted(by_epoch)
    records = [by_epoch[e] for e in epochs]
    series = {key: [_number(r.get(key), name, r["epoch"], key) for r in records] for key in SERIES}
    has_objective = any("train_objective" in r for r in records)
    if not has_objective:
        if label_smoothing > 0:
            # An older history: its train_loss included the smoothing, so it is the objective.
            series["train_objective"] = series["train_loss"]
            series["train_loss"] = [None] * len(records)
            notes.append("older history: its train_loss includes label smoothing, so it is shown "
                         "as the training objective, not as the cross-entropy")
        else:
            series["train_objective"] = list(series["train_loss"])  # no smoothing: the same number
    best = [r["epoch"] for r in records if r.get("best") is True]
    return RunCurves(name=name, epoch=epochs, **series, label_smoothing=float(label_smoothing),
                     best_epoch=best[-1] if best else None, notes=notes)


def learning_curves(histories, label_smoothing: dict[str, float] | None = None) -> Curves:
    """histories: {run name: history records} (or (name, records) pairs), in plot order."""
    items = list(histories.items()) if isinstance(histories, dict) else list(histories)
    smoothing = label_smoothing or {}
    return Curves([run_curves(name, records, label_smoothing=smoothing.get(name, 0.0))
                   for name, records in items])


def curves_of(folders, names: list[str] | None = None) -> Curves:
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
    return Curves(runs)
