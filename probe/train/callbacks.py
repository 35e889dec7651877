"""What hangs on the trainer: validation, the best epoch, checkpoints, progress display.

The library never prints: the CLI passes a ProgressPrinter; library callers pass what they like.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from probe.models.folder import save_history, save_meta, save_weights
from probe.models.inference import evaluate
from probe.text import count
from probe.train import checkpoint as ckpt

if TYPE_CHECKING:
    from probe.train.trainer import Trainer


class Callback:
    """Hooks the trainer calls (on every process); override what you need."""

    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_epoch_start(self, trainer: "Trainer", epoch: int, n_batches: int) -> None: ...
    def on_batch_end(self, trainer: "Trainer", batch: int, loss: float, error: float) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", record: dict) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...

    def on_run_end(self, trainer: "Trainer", result: dict, status: str) -> None:
        """Called by probe.train.run.train on rank 0 once the run's meta.json is final.
        status: "trained" (epochs ran now), "evaluated" (training had finished, the test
        evaluation had not) or "complete" (nothing left to do)."""


class Validation(Callback):
    """Adds val_loss and val_error to each epoch's record (installed by the Trainer)."""

    def __init__(self, val_set):
        self.val_set = val_set

    def on_epoch_end(self, trainer: "Trainer", record: dict) -> None:
        start = time.perf_counter()
        m = evaluate(trainer.model, self.val_set, batch_size=trainer.cfg.eval_batch_size,
                     device=trainer.device, channels_last=trainer.cfg.channels_last)
        record.update(val_loss=m["loss"], val_error=m["error"])
        trainer.state.elapsed += time.perf_counter() - start


class BestEpoch(Callback):
    """Marks record["best"]: the lowest val error so far (the first of ties), or every epoch when
    there is no validation (the last one wins); in adversarial training the lowest error under
    PGD (val_robust_error), so the model kept is the most robust. Installed by the Trainer."""

    def on_epoch_end(self, trainer: "Trainer", record: dict) -> None:
        s = trainer.state
        key = "val_robust_error" if "val_robust_error" in record else "val_error"
        if key not in record:
            record["best"] = True
            return
        # only an improvement is best: an epoch repeated by extending an --iters run (its record
        # cut short, then its rest) must not take the kept weights without a lower error
        improved = record[key] < s.best_val_error
        if improved:
            s.best_val_error, s.best_epoch = record[key], record["epoch"]
        record["best"] = improved


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def epoch_line(record: dict, epochs: int) -> str:
    val = (f"  val loss {record['val_loss']:.4f}  val err {_pct(record['val_error'])}"
           if "val_loss" in record else "")
    if "val_robust_accuracy" in record:  # adversarial training: train err is on adversarial images
        val += f"  val PGD acc {_pct(record['val_robust_accuracy'])} (n={record['val_robust_n']})"
    star = " *" if record.get("best") else ""
    stopped = f"\n  stopped: {record['stopped']}" if record.get("stopped") else ""
    return (f"epoch {record['epoch']:>3}/{epochs}  loss {record['train_loss']:.4f}  "
            f"err {_pct(record['train_error'])}{val}  lr {record['lr']:.4g}  "
            f"{record['images_per_second']:,.0f} img/s  {record['seconds']:.1f}s{star}{stopped}")


def _threads_note(trainer: "Trainer") -> str:
    info = getattr(trainer, "threads", None)
    if not info or trainer.device.type != "cpu":
        return ""
    return f", {info['threads']} thread(s)" + (f" ({info['why']})" if "why" in info else "")


class ProgressPrinter(Callback):
    """What `probe train` shows: a start line, a rich progress bar per epoch on a terminal, one
    plain line per epoch always, and the result. Give it to rank 0 only."""

    def __init__(self, stream=None, bar: bool | None = None):
        self.stream = stream or sys.stdout
        self.bar = self.stream.isatty() if bar is None else bar
        self.progress = self.task = None

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def on_train_start(self, trainer: "Trainer") -> None:
        cfg, s = trainer.cfg, trainer.state
        self._say(f"training {cfg.arch} on {trainer.train_set.spec.name} ({len(trainer.train_set):,} "
                  f"images) on {trainer.device}: {count(trainer.total_steps, 'step')}, {count(trainer.epochs, 'epoch')}, "
                  f"precision {cfg.precision}" + _threads_note(trainer)
                  + (f", resuming at step {s.step:,} (after epoch {s.epoch})" if s.epoch else ""))

    def on_epoch_start(self, trainer: "Trainer", epoch: int, n_batches: int) -> None:
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

    def on_batch_end(self, trainer: "Trainer", batch: int, loss: float, error: float) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        self._t0 = self._t0 or (now, batch)
        t0, b0 = self._t0
        rate = (batch - b0) * trainer.cfg.batch_size / (now - t0) if now > t0 else 0.0
        self.progress.update(self.task, completed=batch,
                             stats=f"loss {loss:.4f} err {100 * error:.2f}% {rate:,.0f} img/s")

    def on_epoch_end(self, trainer: "Trainer", record: dict) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self._say(epoch_line(record, trainer.epochs))

    def on_run_end(self, trainer: "Trainer", result: dict, status: str) -> None:
        folder = result.get("folder", result.get("name", ""))
        if status == "complete":
            self._say(f"{folder}: the run is already complete ({count(result.get('epochs_done') or 0, 'epoch')})")
            return
        test = result.get("metrics", {}).get("test", {})
        val = result.get("metrics", {}).get("val", {})
        head = "done" if status == "trained" else "training had finished; evaluated"
        self._say(f"{head} in {result.get('wall_seconds', 0):.0f}s: best epoch {result.get('best_epoch')}, "
                  f"val error {100 * (float('nan') if val.get('error') is None else val['error']):.2f}%, "
                  f"test error {100 * test.get('error', float('nan')):.2f}% → {folder}")


class Checkpointer(Callback):
    """After every epoch: the best weights (chosen on validation), the history, the resume state.

    The resume file is written last, so a crash between files resumes from the previous epoch and
    simply redoes it; each file on its own is always whole.
    """

    def __init__(self, folder: Path, meta: dict):
        self.folder, self.meta = Path(folder), meta

    def on_epoch_end(self, trainer: "Trainer", record: dict) -> None:
        state = trainer.model.state_dict()
        if record.get("best"):
            save_weights(self.folder, state)
        save_history(self.folder, trainer.history)
        save_meta(self.folder, self.meta | training_summary(trainer))
        ckpt.save_resume(self.folder, state, trainer.optimizer, resume_state(trainer, self.meta))


def training_summary(trainer: "Trainer") -> dict:
    s = trainer.state
    best = next((r for r in reversed(trainer.history) if r.get("best")), {})  # the kept weights' record
    metrics = {"val": {"error": best.get("val_error")}}
    if "val_robust_accuracy" in best:  # adversarial training: the best epoch's PGD accuracy
        metrics["val_robust"] = {"accuracy": best["val_robust_accuracy"], "n": best["val_robust_n"]}
    return {
        "epochs_done": s.epoch, "steps_done": s.step, "best_epoch": s.best_epoch,
        "metrics": metrics,
        "wall_seconds": round(s.elapsed, 2),  # training + validation, all sessions of the run
        "train_seconds": round(s.train_seconds, 2),
        "images_per_second": round(s.images_seen / s.train_seconds, 1) if s.train_seconds else None,
    }


def resume_state(trainer: "Trainer", meta: dict) -> dict:
    s = trainer.state
    return {"step": s.step, "epoch": s.epoch, "best_val_error": s.best_val_error if s.best_epoch else None,
            "best_epoch": s.best_epoch, "elapsed": s.elapsed, "train_seconds": s.train_seconds,
            "images_seen": s.images_seen, "history": trainer.history, "train": meta["train"],
            "split_sizes": meta["split_sizes"], "scaler": trainer.scaler.state_dict(),
            "world_size": trainer.world_size, "extensions": meta.get("extensions", [])}
