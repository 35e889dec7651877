"""`probe train` as a function: data → model → Trainer → model folder."""
from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import torch

from probe.data.augment import AugmentConfig, default_augment
from probe.data.spec import DatasetSpec, get_spec
from probe.errors import ConfigError, ModelFileError, ProbeError
from probe.models.classifier import Classifier
from probe.models.folder import load_model
from probe.models.inference import evaluate
from probe.models.resnet import ResNet, ResNetConfig, get_config
from probe.train import checkpoint as ckpt
from probe.train.callbacks import Checkpointer, ProgressPrinter, training_summary
from probe.train.config import TrainConfig
from probe.train.distributed import setup, teardown
from probe.train.trainer import Trainer

# Options that may change between a run and its resumption without changing the result.
RESUMABLE_CHANGES = {"device", "compile", "eval_batch_size"}


def versions() -> dict:
    import numpy
    import probe
    return {"probe": probe.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build_classifier(arch: ResNetConfig, spec: DatasetSpec) -> Classifier:
    return Classifier.from_spec(ResNet(arch), spec)


def paper_warmup(config: TrainConfig, depth: int) -> TrainConfig:
    """He et al. trained ResNet-110 (and deeper) at lr/10 for the first ~400 iterations, until
    training error fell below 80%; the paper schedule does so unless told otherwise."""
    if config.schedule == "paper" and depth >= 110 and config.warmup_iters == 0:
        return config.replace(warmup_iters=400)
    return config


def saved_config(out: str | Path) -> TrainConfig:
    """The TrainConfig of the run in a model folder, from its resume state: what `--resume`
    continues when no options are given."""
    out = Path(out)
    if not (out / ckpt.RESUME).is_file():
        raise ConfigError(f"{out}: nothing to resume (no {ckpt.RESUME}); drop --resume to start a run")
    return TrainConfig.from_dict(ckpt.load_resume(out)[2]["train"])


def prepare_folder(out: Path, config: TrainConfig, resume: bool, force: bool) -> None:
    """Refuse to overwrite or to resume a different run. Reads only: with --force the old files
    are replaced one by one, atomically, by the first checkpoint, so a run that fails before
    then has destroyed nothing."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: give a folder for the model")
    has_run = out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir())
    if resume:
        if not (out / ckpt.RESUME).is_file():
            raise ConfigError(f"{out}: nothing to resume (no {ckpt.RESUME}); drop --resume to start a run")
        _, _, state, _ = ckpt.load_resume(out)
        saved = state.get("train", {})
        diff = sorted(k for k, v in config.to_dict().items()
                      if k not in RESUMABLE_CHANGES and saved.get(k) != v)
        if diff:
            shown = ", ".join(f"{k}: {saved.get(k)!r} there, {getattr(config, k)!r} now" for k in diff)
            raise ConfigError(f"{out} holds a different run ({shown}); resume it with its own options "
                              "or train into a new --out folder")
    elif has_run and not force:
        raise ConfigError(f"{out} already holds a model: use --resume to continue it, "
                          "--force to overwrite it, or another --out")


def _checked_on_main(dist_info, check) -> None:
    """Run a check on rank 0 and raise its error on every rank (the others would otherwise wait
    in a collective call for a rank that has left)."""
    error = None
    if dist_info.is_main:
        try:
            check()
        except ProbeError as e:
            error = e
    if dist_info.world_size > 1:
        import torch.distributed as dist
        box = [None if error is None else str(error)]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and error is None:
            error = ConfigError(box[0])
    if error is not None:
        raise error


def train(config: TrainConfig, out: str | Path, *, data_dir: str | Path | None = None,
          resume: bool = False, force: bool = False, quiet: bool = False, splits=None,
          callbacks=()) -> dict:
    """Train, checkpoint every epoch, evaluate the best weights on the test split once.

    splits: {"train", "val", "test"} ImageSets, to skip loading from disk (tests, benchmarks).
    callbacks: more trainer callbacks, run on every process after the checkpointer.
    Returns the final meta.json contents.
    """
    out = Path(out)
    dist_info, device = setup(config.device)
    try:
        spec = get_spec(config.dataset)
        arch = get_config(config.arch, num_classes=spec.num_classes, in_channels=spec.channels,
                          width=config.width)
        config = paper_warmup(config, arch.depth)
        _checked_on_main(dist_info, lambda: prepare_folder(out, config, resume, force))
        if splits is None:
            from probe.data.splits import load_splits
            splits = load_splits(config.dataset, data_dir, seed=config.seed, split_by=config.split_by)
        torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
        model = build_classifier(arch, spec)
        augment = default_augment(spec) if config.augment else AugmentConfig()
        meta = {
            "name": out.name, "arch_name": config.arch, "arch": arch.to_dict(),
            "dataset": spec.to_dict(), "train": config.to_dict(), "augment": asdict(augment),
            "seed": config.seed, "parameters": sum(p.numel() for p in model.parameters()),
            "split_sizes": {k: len(v) for k, v in splits.items()},
            "versions": versions(), "git_commit": git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(device),
            "world_size": dist_info.world_size,
        }
        hooks = []
        if dist_info.is_main:
            hooks.append(Checkpointer(out, meta))
            if not quiet:
                hooks.append(ProgressPrinter())
        hooks.extend(callbacks)
        trainer = Trainer(model, splits["train"], splits.get("val"), config, augment, device=device,
                          callbacks=hooks, rank=dist_info.rank, world_size=dist_info.world_size)
        if resume:
            _restore(trainer, out, meta["split_sizes"])
            if trainer.state.step >= trainer.total_steps:
                if not quiet and dist_info.is_main:
                    print(f"{out}: the run is already complete ({trainer.state.epoch} epochs)")
                return ckpt.read_json(out / ckpt.META)
        if not quiet and dist_info.is_main:
            print(f"training {config.arch} on {spec.name} ({len(splits['train']):,} images) on {device}: "
                  f"{trainer.total_steps:,} steps, {trainer.epochs} epochs, precision {config.precision}"
                  + (f", resuming after epoch {trainer.state.epoch}" if resume else ""), flush=True)
        trainer.fit()
        if not dist_info.is_main:
            return meta
        # The test split is evaluated once, with the weights chosen on validation.
        best, _ = load_model(out, device)  # on the training device, where it is evaluated
        result = meta | training_summary(trainer)
        result["metrics"]["val"] = evaluate(best, splits["val"], batch_size=config.eval_batch_size,
                                            device=device) if "val" in splits else {}
        if "test" in splits:
            result["metrics"]["test"] = evaluate(best, splits["test"], batch_size=config.eval_batch_size,
                                                 device=device)
        ckpt.save_meta(out, result)
        if not quiet:
            test = result["metrics"].get("test", {})
            print(f"done in {result['wall_seconds']:.0f}s: best epoch {result['best_epoch']}, "
                  f"val error {100 * result['metrics']['val'].get('error', float('nan')):.2f}%, "
                  f"test error {100 * test.get('error', float('nan')):.2f}% → {out}", flush=True)
        return result
    finally:
        teardown()


def _restore(trainer: Trainer, out: Path, split_sizes: dict) -> None:
    model_state, optim, state, rng = ckpt.load_resume(out)
    saved_sizes = state.get("split_sizes", split_sizes)
    if saved_sizes != split_sizes:
        raise ConfigError(f"{out} was trained on splits of {saved_sizes} images, the data now give "
                          f"{split_sizes}: resume with the run's own data (--data-dir)")
    try:
        trainer.model.load_state_dict(model_state)
    except RuntimeError as e:
        raise ModelFileError(f"{out / ckpt.RESUME}: does not fit the model ({e})") from None
    trainer.load_optimizer_buffers(optim)
    if rng is not None:
        torch.set_rng_state(rng)
    s = trainer.state
    s.step, s.epoch, s.best_epoch = state["step"], state["epoch"], state["best_epoch"]
    s.best_val_error = state["best_val_error"] if state["best_val_error"] is not None else float("inf")
    s.elapsed, s.images_seen = state["elapsed"], state["images_seen"]
    s.train_seconds = state.get("train_seconds", s.elapsed)
    if state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.history = state["history"]
