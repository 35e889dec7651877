"""The training loop. It knows nothing of datasets or architectures: it is given a model, two
ImageSets, an augmentation and a TrainConfig; progress, checkpoints and logs hang on callbacks."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from probe.data.augment import AugmentConfig, augment_batch, eval_view
from probe.data.batches import epoch_permutation, shard_batches, step_generator
from probe.data.imageset import ImageSet
from probe.errors import TrainingError
from probe.train.config import TrainConfig
from probe.models.inference import evaluate, to_input
from probe.train.schedule import Schedule


class Callback:
    """Hooks the trainer calls; override what you need."""

    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_epoch_start(self, trainer: "Trainer", epoch: int, n_batches: int) -> None: ...
    def on_batch_end(self, trainer: "Trainer", batch: int, loss: float, error: float) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", record: dict) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    best_val_error: float = math.inf
    best_epoch: int = 0
    elapsed: float = 0.0  # seconds of training and validation, summed over resumed sessions
    train_seconds: float = 0.0  # of which in training steps: the images/s denominator
    images_seen: int = 0


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    def __init__(self, model: torch.nn.Module, train_set: ImageSet, val_set: ImageSet | None,
                 config: TrainConfig, augment: AugmentConfig, *, device: torch.device,
                 callbacks=(), rank: int = 0, world_size: int = 1, log_every: int = 10):
        self.cfg, self.augment, self.device = config, augment, device
        self.rank, self.world_size, self.log_every = rank, world_size, log_every
        self.callbacks = list(callbacks)
        self.model = model.to(device)  # the plain module: evaluation and checkpoints use it
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # The whole split lives on the device as uint8; batches are cut from it.
        self.train_set, self.val_set = train_set.to(device), val_set.to(device) if val_set is not None else None
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         nesterov=config.nesterov, weight_decay=config.weight_decay)
        self.steps_per_epoch = len(shard_batches(torch.arange(len(train_set)), config.batch_size,
                                                 rank, world_size))
        if self.steps_per_epoch == 0:
            raise TrainingError(f"the training split has {len(train_set)} images, fewer than one "
                                f"batch of {config.batch_size}: lower --batch-size")
        self.total_steps = (config.epochs * self.steps_per_epoch if config.epochs is not None
                            else config.iters)
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        warmup = config.warmup_iters
        self.schedule = Schedule(config.schedule, config.lr, self.total_steps, warmup_steps=warmup)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self.forward = self.model
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [device.index] if device.type == "cuda" else None
            self.forward = DDP(self.model, device_ids=ids)
        if config.compile:
            self.forward = torch.compile(self.forward)
        self.state = TrainState()
        self.history: list[dict] = []

    # -- resume -------------------------------------------------------------------------------
    def load_optimizer_buffers(self, buffers: dict[int, dict]) -> None:
        sd = self.optimizer.state_dict()
        sd["state"] = {i: {k: v.to(self.device) for k, v in b.items()} for i, b in buffers.items()}
        self.optimizer.load_state_dict(sd)

    def _global(self, total: torch.Tensor) -> torch.Tensor:
        """A sum over all ranks (every rank must agree on stopping for a NaN, or one would hang)."""
        if self.world_size == 1:
            return total
        import torch.distributed as dist
        total = total.clone()
        dist.all_reduce(total)
        return total

    def _average_buffers(self) -> None:
        """DDP keeps parameters equal but lets each rank's BatchNorm statistics drift after its
        last forward: average them, so every rank evaluates and saves the same model, with
        statistics of all ranks' data."""
        import torch.distributed as dist
        for buf in self.model.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(self.world_size)

    # -- the loop -----------------------------------------------------------------------------
    def fit(self) -> TrainState:
        for cb in self.callbacks:
            cb.on_train_start(self)
        while self.state.epoch < self.epochs and self.state.step < self.total_steps:
            record = self._train_epoch(self.state.epoch)
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.state

    def _train_epoch(self, epoch: int) -> dict:
        cfg, model = self.cfg, self.forward
        perm = epoch_permutation(len(self.train_set), cfg.seed, epoch)
        batches = shard_batches(perm, cfg.batch_size, self.rank, self.world_size)
        batches = batches[: self.total_steps - self.state.step]  # --iters may end mid-epoch
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch, len(batches))
        self.model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        wrong_sum = torch.zeros((), device=self.device)
        seen = 0
        for b, idx in enumerate(batches):
            lr = self.schedule(self.state.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            idx = idx.to(self.device)
            x = self.train_set.images[idx]  # (B, C, H, W) uint8
            y = self.train_set.labels[idx]
            if cfg.augment and self.augment.enabled:
                x = augment_batch(x, self.augment, step_generator(cfg.seed, self.state.step, self.rank))
            x = eval_view(x, self.train_set.spec)  # unaugmented SFDDD: the centre crop, as evaluated
            x = to_input(x, cfg.channels_last)
            with autocast_context(self.device, cfg.precision):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.state.step += 1
            seen += len(y)
            loss_sum += loss.detach() * len(y)
            wrong_sum += (logits.detach().argmax(1) != y).sum()
            # Syncing with the device only now and then keeps a GPU busy.
            if (b + 1) % self.log_every == 0 or b + 1 == len(batches):
                mean_loss = self._global(loss_sum).item() / (seen * self.world_size)
                if not math.isfinite(mean_loss):
                    raise TrainingError(
                        f"the loss became {mean_loss} at step {self.state.step} (epoch {epoch + 1}); "
                        "lower --lr or use --precision fp32. The last good checkpoint is kept.")
                for cb in self.callbacks:
                    cb.on_batch_end(self, b + 1, mean_loss, wrong_sum.item() / seen)
        if self.world_size > 1:
            self._average_buffers()
        seconds = time.perf_counter() - start
        self.state.train_seconds += seconds
        self.state.images_seen += seen * self.world_size
        record = {
            "epoch": epoch + 1, "step": self.state.step, "lr": lr,
            "train_loss": loss_sum.item() / seen, "train_error": wrong_sum.item() / seen,
            "seconds": round(seconds, 3), "images_per_second": round(seen * self.world_size / seconds, 1),
        }
        if self.val_set is not None and len(self.val_set):
            m = evaluate(self.model, self.val_set, batch_size=cfg.eval_batch_size, device=self.device,
                         channels_last=cfg.channels_last)
            record.update(val_loss=m["loss"], val_error=m["error"])
            if m["error"] < self.state.best_val_error:
                self.state.best_val_error, self.state.best_epoch = m["error"], epoch + 1
        record["best"] = self.state.best_epoch == epoch + 1 or self.val_set is None
        self.state.elapsed += time.perf_counter() - start  # training and validation
        self.state.epoch = epoch + 1
        self.history.append(record)
        return record
