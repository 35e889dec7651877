"""What hangs on the trainer: progress display and checkpoints."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from probe.train import checkpoint as ckpt
from probe.train.trainer import Callback, Trainer


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def epoch_line(record: dict, epochs: int) -> str:
    val = (f"  val loss {record['val_loss']:.4f}  val err {_pct(record['val_error'])}"
           if "val_loss" in record else "")
    star = " *" if record.get("best") else ""
    return (f"epoch {record['epoch']:>3}/{epochs}  loss {record['train_loss']:.4f}  "
            f"err {_pct(record['train_error'])}{val}  lr {record['lr']:.4g}  "
            f"{record['images_per_second']:,.0f} img/s  {record['seconds']:.1f}s{star}")


class ProgressPrinter(Callback):
    """A rich progress bar per epoch on a terminal; one plain line per epoch always."""

    def __init__(self, stream=None, bar: bool | None = None):
        self.stream = stream or sys.stdout
        self.bar = self.stream.isatty() if bar is None else bar
        self.progress = self.task = None

    def on_epoch_start(self, trainer: Trainer, epoch: int, n_batches: int) -> None:
        if not self.bar:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{trainer.epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), transient=True)
        self.task = self.progress.add_task("train", total=n_batches, stats="")
        self.progress.start()
        self._t0 = None

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float, error: float) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        self._t0 = self._t0 or (now, batch)
        t0, b0 = self._t0
        rate = (batch - b0) * trainer.cfg.batch_size / (now - t0) if now > t0 else 0.0
        self.progress.update(self.task, completed=batch,
                             stats=f"loss {loss:.4f} err {100 * error:.2f}% {rate:,.0f} img/s")

    def on_epoch_end(self, trainer: Trainer, record: dict) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        print(epoch_line(record, trainer.epochs), file=self.stream, flush=True)


class Checkpointer(Callback):
    """After every epoch: the best weights (chosen on validation), the history, the resume state.

    The resume file is written last, so a crash between files resumes from the previous epoch and
    simply redoes it; each file on its own is always whole.
    """

    def __init__(self, folder: Path, meta: dict):
        self.folder, self.meta = Path(folder), meta

    def on_epoch_end(self, trainer: Trainer, record: dict) -> None:
        state = trainer.model.state_dict()
        if record.get("best"):
            ckpt.save_weights(self.folder, state)
        ckpt.save_history(self.folder, trainer.history)
        ckpt.save_meta(self.folder, self.meta | training_summary(trainer))
        ckpt.save_resume(self.folder, state, trainer.optimizer, resume_state(trainer, self.meta))


def training_summary(trainer: Trainer) -> dict:
    s = trainer.state
    return {
        "epochs_done": s.epoch, "steps_done": s.step, "best_epoch": s.best_epoch,
        "metrics": {"val": {"error": s.best_val_error if s.best_epoch else None}},
        "wall_seconds": round(s.elapsed, 2),  # training + validation, all sessions of the run
        "train_seconds": round(s.train_seconds, 2),
        "images_per_second": round(s.images_seen / s.train_seconds, 1) if s.train_seconds else None,
    }


def resume_state(trainer: Trainer, meta: dict) -> dict:
    s = trainer.state
    return {"step": s.step, "epoch": s.epoch, "best_val_error": s.best_val_error if s.best_epoch else None,
            "best_epoch": s.best_epoch, "elapsed": s.elapsed, "train_seconds": s.train_seconds,
            "images_seen": s.images_seen, "history": trainer.history, "train": meta["train"],
            "split_sizes": meta["split_sizes"], "scaler": trainer.scaler.state_dict()}
