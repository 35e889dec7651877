"""`probe train` as a function: data → model → Trainer → model folder. It prints nothing: pass
a ProgressPrinter (probe.train.callbacks) in `callbacks` to see progress."""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from probe.data.augment import AugmentConfig, default_augment
from probe.data.spec import DatasetSpec, get_spec, is_own_data
from probe.data.splits import check_own_options, load_splits
from probe.device import analysis_threads, configure_for_speed, resolve_precision
from probe.errors import ConfigError, ModelFileError, ProbeError
from probe.models.classifier import Classifier
from probe.models.folder import HISTORY, META, WEIGHTS, load_model, read_json, read_model_folder, save_meta
from probe.models.inference import evaluate
from probe.models.resnet import ResNet, ResNetConfig, get_config
from probe.provenance import git_commit, versions
from probe.train import checkpoint as ckpt
from probe.train.callbacks import Checkpointer, training_summary
from probe.train.config import TrainConfig
from probe.train.distributed import setup, teardown
from probe.train.trainer import Trainer

# Options that may change between a run and its resumption without changing the result.
RESUMABLE_CHANGES = {"device", "compile", "eval_batch_size"}
# The length may change too: the run is extended (or found complete), see extension().
LENGTH = {"epochs", "iters"}


def build_classifier(arch: ResNetConfig, spec: DatasetSpec) -> Classifier:
    return Classifier.from_spec(ResNet(arch), spec)


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def default_folder(root: Path, config: TrainConfig) -> Path:
    """root/<dataset>-<arch>-<YYYYMMDD-HHMMSS>, with -2, -3, ... if that exists: a new run
    never lands in (or is refused by) an existing model folder, a committed one included."""
    base = Path(root) / f"{config.dataset}-{config.arch}-{timestamp()}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def paper_warmup(config: TrainConfig, depth: int) -> TrainConfig:
    """He et al. trained ResNet-110 (and deeper) at lr/10 for the first ~400 iterations, until
    training error fell below 80%; the paper schedule does so unless told otherwise
    (--warmup-iters N sets it, 0 turns it off)."""
    if config.schedule == "paper" and depth >= 110 and config.warmup_iters is None:
        return config.replace(warmup_iters=400)
    return config


def saved_config(out: str | Path) -> TrainConfig:
    """The TrainConfig of the run in a model folder, from its resume state: what `--resume`
    continues when no options are given."""
    out = Path(out)
    if not (out / ckpt.RESUME).is_file():
        raise ConfigError(f"{out}: nothing to resume (no {ckpt.RESUME}); drop --resume to start a run")
    return _config_of(out, ckpt.load_resume(out)[2])


def _config_of(out: Path, state: dict) -> TrainConfig:
    try:
        return TrainConfig.from_dict(state["train"])
    except (ConfigError, TypeError) as e:
        raise ModelFileError(f"{out / ckpt.RESUME}: 'train' in the training state is not a valid "
                             f"training config ({e})") from None


def _comparable(config: TrainConfig) -> dict:
    d = config.to_dict()
    d["warmup_iters"] = d["warmup_iters"] or 0  # unset and 0 both train without warm-up here
    return {k: v for k, v in d.items() if k not in RESUMABLE_CHANGES | LENGTH}


MODEL_FILES = (META, WEIGHTS, HISTORY, ckpt.RESUME)  # any of them: a folder probe train wrote


def prepare_folder(out: Path, config: TrainConfig, resume: bool, force: bool) -> None:
    """Refuse to overwrite or to resume a different run. Reads only: with --force the old files
    are replaced one by one, atomically, by the first checkpoint, so a run that fails before
    then has destroyed nothing."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: give a folder for the model")
    has_files = out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir())
    has_run = has_files and any((out / name).is_file() for name in MODEL_FILES)
    if has_files and not has_run and not resume:  # never write a model among a user's own files
        raise ConfigError(f"--out {out} is a folder of other files, not a model folder: give a new or empty folder")
    if resume:
        saved, now = _comparable(saved_config(out)), _comparable(config)
        diff = sorted(k for k in now if saved.get(k) != now[k])
        if diff:
            shown = ", ".join(f"{k}: {saved.get(k)!r} there, {now[k]!r} now" for k in diff)
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


def extensions(state: dict, config: TrainConfig) -> list[dict]:
    """The run's changes of length so far, this one included: meta.json says when the schedule
    was recomputed for a new length."""
    done = list(state.get("extensions", []))
    old = {k: state["train"].get(k) for k in sorted(LENGTH)}
    new = {k: getattr(config, k) for k in sorted(LENGTH)}
    if old != new:
        done.append({"at_step": state["step"], "from": old, "to": new})
    return done


def train(config: TrainConfig, out: str | Path, *, data_dir: str | Path | None = None,
          resume: bool = False, force: bool = False, splits=None, callbacks=(),
          size=None, classes_file=None) -> dict:
    """Train, checkpoint every epoch, evaluate the best weights on the test split once.

    resume: continue the run in `out`. A new length (epochs or iters) extends a run or finishes
        it sooner (never before the step reached): the schedule is recomputed for the new
        length and continues from the current step. A run whose training ended but whose test
        evaluation did not (killed in between) is evaluated.
    splits: {"train", "val", "test"} ImageSets, to skip loading from disk (tests, benchmarks).
    callbacks: more trainer callbacks, run on every process after the checkpointer; their
        on_run_end is called on rank 0 with the final meta.
    size, classes_file: your own data's "HxW" (dataset folder) and class names (idx), see load_splits.
    Returns the final meta.json contents.
    """
    out = Path(out)
    dist_info, device = setup(config.device)
    configure_for_speed(device)
    try:
        splits, spec = _dataset(config, out, splits, data_dir, resume, size, classes_file)
        arch = get_config(config.arch, num_classes=spec.num_classes, in_channels=spec.channels,
                          width=config.width)  # its size bounded there, in closed form
        config = paper_warmup(config, arch.depth)
        # auto: what this device does natively (bf16 emulated on a CPU without it is ~10× slower);
        # the config keeps what was asked, meta.json what it became
        precision = resolve_precision(config.precision, device)
        _checked_on_main(dist_info, lambda: prepare_folder(out, config, resume, force))
        if splits is None:
            splits = load_splits(config.dataset, data_dir, seed=config.split_seed, split_by=config.split_by)
        torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
        model = build_classifier(arch, spec)
        augment = default_augment(spec) if config.augment else AugmentConfig()
        saved = ckpt.load_resume(out) if resume else None
        meta = _run_meta(out, config, arch, spec, augment, model, splits, device, dist_info.world_size)
        meta["precision"] = precision
        if saved is not None:
            meta["extensions"] = extensions(saved[2], config)
        hooks = [Checkpointer(out, meta)] if dist_info.is_main else []
        trainer = Trainer(model, splits["train"], splits.get("val"), config.replace(precision=precision), augment,
                          device=device,
                          callbacks=hooks + list(callbacks), rank=dist_info.rank,
                          world_size=dist_info.world_size)
        return _fit_and_evaluate(trainer, saved, out, meta, splits, device, dist_info)
    finally:
        teardown()


def _fit_and_evaluate(trainer: Trainer, saved, out: Path, meta: dict, splits, device, dist_info) -> dict:
    """Resume if there is a checkpoint, train what is left, evaluate the best weights on test."""
    status = "trained"
    if saved is not None:
        _restore(trainer, out, saved, meta["split_sizes"], dist_info.world_size)
        if trainer.state.step >= trainer.total_steps:
            status = "evaluated"
            if dist_info.is_main:
                done = read_model_folder(out).meta  # checked: the file may have changed since
                if "test" in (done.get("metrics") or {}) or "test" not in splits:
                    _run_end(trainer, done | {"folder": str(out)}, "complete")
                    return done
    # One thread where other processes keep the cores busy: OpenMP threads that share cores
    # spin waiting on each other (FGSM-RS training beside 4 busy processes here: 500 img/s on
    # one thread, under 1 img/s on two).
    with analysis_threads(None, device) as trainer.threads:
        if status == "trained":
            trainer.fit()
        if not dist_info.is_main:
            return meta
        result = _final_evaluation(trainer, out, meta, splits, device)
    _run_end(trainer, result | {"folder": str(out)}, status)
    return result


def _dataset(config: TrainConfig, out: Path, splits, data_dir, resume: bool, size, classes_file):
    """(splits, spec) as known before training starts. A fixed dataset: its spec (the splits are
    loaded after the folder checks). Your own data (folder, idx): read now, since the files say
    what the spec is; a resumed run reads them with its own spec."""
    if not is_own_data(config.dataset):
        check_own_options(config.dataset, size, classes_file)
        return splits, get_spec(config.dataset)
    if splits is None:
        source = _saved_spec(out) if resume else config.dataset
        splits = load_splits(source, data_dir, seed=config.split_seed, size=None if resume else size,
                             classes_file=None if resume else classes_file)
    return splits, splits["train"].spec


def _saved_spec(out: Path) -> DatasetSpec:
    """The dataset spec of the run in `out` (your own data: its classes, size and statistics)."""
    try:
        return DatasetSpec.from_dict(read_json(out / META, "a model description").get("dataset"))
    except (ConfigError, AttributeError) as e:
        raise ModelFileError(f"{out / META}: 'dataset' does not describe a dataset ({e})") from None


def _run_meta(out: Path, config: TrainConfig, arch, spec, augment, model, splits, device, world_size: int) -> dict:
    """meta.json of a run as it starts: what it is, on what, with what."""
    return {
        "name": out.name, "arch_name": config.arch, "arch": arch.to_dict(),
        "dataset": spec.to_dict(), "train": config.to_dict(), "augment": asdict(augment),
        "seed": config.seed, "split_seed": config.split_seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "split_sizes": {k: len(v) for k, v in splits.items()},  # the sizes actually trained on
        "versions": versions(), "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(device), "world_size": world_size,
    } | _load_average(None, "start")


def _load_average(meta: dict | None, when: str) -> dict:
    """{"load_average": {..., when: [1-, 5-, 15-minute load averages now], "cpus": n}}: the
    times of a run on a shared machine mean little without the load they ran under. Empty where
    the platform has no load average (Windows)."""
    if not hasattr(os, "getloadavg"):
        return {}
    before = (meta or {}).get("load_average")
    return {"load_average": (before if isinstance(before, dict) else {})
            | {when: [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count()}}


def _final_evaluation(trainer: Trainer, out: Path, meta: dict, splits: dict, device) -> dict:
    """The test split is evaluated once, with the weights chosen on validation, on the training
    device."""
    best, _ = load_model(out, device)
    bs = trainer.cfg.eval_batch_size
    result = meta | training_summary(trainer) | _load_average(meta, "end")  # training has ended
    result["metrics"]["val"] = evaluate(best, splits["val"], batch_size=bs, device=device) if "val" in splits else {}
    if "test" in splits:
        result["metrics"]["test"] = evaluate(best, splits["test"], batch_size=bs, device=device)
    save_meta(out, result)
    return result


def _run_end(trainer: Trainer, result: dict, status: str) -> None:
    for cb in trainer.callbacks:
        cb.on_run_end(trainer, result, status)


def _restore(trainer: Trainer, out: Path, saved: tuple, split_sizes: dict, world_size: int) -> None:
    """Put the trainer where the saved run stopped; everything is checked before anything is
    loaded, and a mismatch is a ModelFileError (damaged file) or ConfigError (other run)."""
    model_state, optim, state, rng = saved
    path = out / ckpt.RESUME
    saved_sizes = state.get("split_sizes", split_sizes)
    if saved_sizes != split_sizes:
        raise ConfigError(f"{out} was trained on splits of {saved_sizes} images, the data now give "
                          f"{split_sizes}: resume with the run's own data (--data-dir)")
    saved_world = state.get("world_size")  # absent in files written before it was recorded
    if saved_world is not None and saved_world != world_size:
        raise ConfigError(f"{out} was trained by {saved_world} process(es), this is {world_size}: "
                          f"resume it with {saved_world} (torchrun --nproc_per_node {saved_world}), "
                          "since each process's data shard and augmentation depend on it")
    if state["step"] > trainer.total_steps:
        raise ConfigError(f"{out} has already trained {state['step']:,} steps ({state['epoch']} epochs); "
                          f"the length asked for is {trainer.total_steps:,} steps: give a longer one")
    ckpt.check_against(path, trainer.model, trainer.optimizer, model_state, optim)
    if state.get("scaler") and trainer.scaler.is_enabled():
        try:
            trainer.scaler.load_state_dict(state["scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ModelFileError(f"{path}: 'scaler' in the training state is not a GradScaler "
                                 f"state ({e!r})") from None
    trainer.model.load_state_dict(model_state)
    trainer.load_optimizer_buffers(optim)
    if rng is not None:
        torch.set_rng_state(rng)
    s = trainer.state
    s.step, s.epoch, s.best_epoch = state["step"], state["epoch"], state["best_epoch"]
    s.best_val_error = state["best_val_error"] if state["best_val_error"] is not None else float("inf")
    s.elapsed, s.images_seen = state["elapsed"], state["images_seen"]
    s.train_seconds = state.get("train_seconds", s.elapsed)
    trainer.history = state["history"]
