"""The training loop. It knows nothing of datasets or architectures: it is given a model, two
ImageSets, an augmentation and a TrainConfig. Everything else hangs on callbacks (minGPT style):
validation and choosing the best epoch (installed by default), checkpoints, progress display."""
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
from probe.models.classifier import Classifier
from probe.models.inference import to_input
from probe.models.resnet import ResNet
from probe.train.adversarial import RobustValidation, perturb
from probe.train.callbacks import BestEpoch, Callback, Validation  # noqa: F401  (Callback re-exported)
from probe.train.config import TrainConfig
from probe.train.schedule import Schedule


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    best_val_error: float = math.inf
    best_epoch: int = 0
    elapsed: float = 0.0  # seconds of training and validation, summed over resumed sessions
    train_seconds: float = 0.0  # of which in training steps: the images/s denominator
    images_seen: int = 0


def relus_in_place(model: torch.nn.Module) -> list[torch.nn.ReLU]:
    """The ReLUs a training step may run in place: every one of a probe ResNet, where each ReLU
    follows a BatchNorm or an addition, neither of which needs its output for its gradient
    (autograd would raise, not go wrong, if one did). In place, the step writes each activation
    once less: +6-7% img/s in fp32 and bf16 (2-core AVX-512 CPU, resnet20 at CIFAR's shape).
    Other networks keep their ReLUs as they are."""
    net = model.net if isinstance(model, Classifier) else model
    if not isinstance(net, ResNet):
        return []
    return [m for m in net.modules() if type(m) is torch.nn.ReLU and not m.inplace]


@contextlib.contextmanager
def in_place(relus: list[torch.nn.ReLU]):
    """Those ReLUs in place for the forward passes of a step only (and of its adversarial
    images): hooks, captum and callbacks outside it see the model's usual modules."""
    for m in relus:
        m.inplace = True
    try:
        yield
    finally:
        for m in relus:
            m.inplace = False


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    """callbacks run after the built-in Validation (when there is a val set) and BestEpoch, in
    the order given, on every process."""

    def __init__(self, model: torch.nn.Module, train_set: ImageSet, val_set: ImageSet | None,
                 config: TrainConfig, augment: AugmentConfig, *, device: torch.device,
                 callbacks=(), rank: int = 0, world_size: int = 1, log_every: int = 10):
        self.cfg, self.augment, self.device = config, augment, device
        self.rank, self.world_size, self.log_every = rank, world_size, log_every
        self.model = model.to(device)  # the plain module: evaluation and checkpoints use it
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # The whole split lives on the device as uint8; batches are cut from it.
        self.train_set = train_set.to(device)
        self.val_set = val_set.to(device) if val_set is not None and len(val_set) else None
        self.callbacks = [Validation(self.val_set)] if self.val_set is not None else []
        if config.adversarial and self.val_set is not None:  # before BestEpoch: it picks by robustness
            self.callbacks.append(RobustValidation(self.val_set, eps=config.adv_eps))
        self.callbacks.append(BestEpoch())
        self.callbacks += list(callbacks)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         nesterov=config.nesterov, weight_decay=config.weight_decay)
        self.steps_per_epoch = len(shard_batches(torch.arange(len(train_set)), config.batch_size,
                                                 rank, world_size))
        if self.steps_per_epoch == 0:
            raise TrainingError(f"the training split has {len(train_set)} images, fewer than one "
                                f"batch of {config.batch_size}: lower --batch-size")
        # A resumed run given a new length gets the schedule of that length from its current step.
        self.total_steps = (config.epochs * self.steps_per_epoch if config.epochs is not None
                            else config.iters)
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.schedule = Schedule(config.schedule, config.lr, self.total_steps,
                                 warmup_steps=config.warmup_iters or 0)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self.forward = self.model
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [device.index] if device.type == "cuda" else None
            # No buffer broadcast: each rank's BN statistics follow its own shard during the
            # epoch, and _average_buffers makes them the mean over ranks at its end. (The default
            # would overwrite every rank's with rank 0's before each forward pass.)
            self.forward = DDP(self.model, device_ids=ids, broadcast_buffers=False)
        if config.compile:
            self.forward = torch.compile(self.forward)
        # compiled code fuses the ReLUs itself, and a flag flipped each step would recompile it
        self._relus = [] if config.compile else relus_in_place(self.model)
        self.state = TrainState()
        self.history: list[dict] = []

    # -- resume -------------------------------------------------------------------------------
    def load_optimizer_buffers(self, buffers: dict[int, dict]) -> None:
        sd = self.optimizer.state_dict()
        sd["state"] = {i: {k: v.to(self.device) for k, v in b.items()} for i, b in buffers.items()}
        self.optimizer.load_state_dict(sd)

    # -- across processes ---------------------------------------------------------------------
    def _global(self, total: torch.Tensor) -> torch.Tensor:
        """A sum over all ranks (every rank must agree on stopping for a NaN, or one would hang)."""
        if self.world_size == 1:
            return total
        import torch.distributed as dist
        total = total.clone()
        dist.all_reduce(total)
        return total

    def _average_buffers(self) -> None:
        """Each rank's BatchNorm statistics saw only its shard: make every rank's the mean over
        ranks, so all evaluate and save the same model, with statistics of all the data."""
        import torch.distributed as dist
        for buf in self.model.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(self.world_size)

    def _emit(self, event: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    # -- the loop -----------------------------------------------------------------------------
    def fit(self) -> TrainState:
        self._emit("on_train_start")
        while self.state.step < self.total_steps:
            # The epoch follows from the step: an --iters run extended later finishes the epoch
            # it stopped in (its history then holds two records of that epoch).
            epoch = self.state.step // self.steps_per_epoch
            record = self._train_epoch(epoch)
            self.state.epoch = epoch + 1
            self.history.append(record)  # callbacks add to it (val metrics, best)
            self._emit("on_epoch_end", record)
        self._emit("on_train_end")
        return self.state

    def _set_lr(self) -> float:
        lr = self.schedule(self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's augmented float input (B, C, h, w) and labels (B,)."""
        idx = idx.to(self.device)
        x = self.train_set.images[idx]  # (B, C, H, W) uint8
        if self.cfg.augment and self.augment.enabled:
            x = augment_batch(x, self.augment, step_generator(self.cfg.seed, self.state.step, self.rank,
                                                              self.device))
        x = eval_view(x, self.train_set.spec)  # unaugmented SFDDD: the centre crop, as evaluated
        return to_input(x, self.cfg.channels_last), self.train_set.labels[idx]

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step → (objective, plain cross-entropy, wrong count), detached sums."""
        with autocast_context(self.device, self.cfg.precision), in_place(self._relus):
            logits = self.forward(x)
        logits = logits.float()
        objective = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(objective).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.step += 1
        logits = logits.detach()
        plain = (F.cross_entropy(logits, y) if self.cfg.label_smoothing else objective).detach()
        return objective.detach() * len(y), plain * len(y), (logits.argmax(1) != y).sum()

    def _train_epoch(self, epoch: int) -> dict:
        """Train one epoch (or what is left of --iters) → its record: training numbers only,
        summed over all ranks. Validation and the best epoch are callbacks' (on_epoch_end)."""
        perm = epoch_permutation(len(self.train_set), self.cfg.seed, epoch).to(self.device)  # once an epoch
        batches = shard_batches(perm, self.cfg.batch_size, self.rank, self.world_size)
        done = self.state.step - epoch * self.steps_per_epoch  # > 0: resumed inside this epoch
        batches = batches[max(0, done):][: self.total_steps - self.state.step]  # --iters may end mid-epoch
        self._emit("on_epoch_start", epoch, len(batches))
        self.model.train()
        start = time.perf_counter()
        sums = torch.zeros(3, device=self.device)  # objective, plain loss, wrong: this rank's sums
        seen = 0
        for b, idx in enumerate(batches):
            lr = self._set_lr()
            x, y = self._batch(idx)
            if self.cfg.adversarial:  # the step trains on adversarial images of the batch
                with in_place(self._relus):
                    x = perturb(self.forward, x, y, method=self.cfg.adversarial, eps=self.cfg.adv_eps,
                                steps=self.cfg.adv_steps, step_size=self.cfg.adv_step_size,
                                generator=step_generator(self.cfg.seed + 1, self.state.step, self.rank, self.device))
            objective, plain, wrong = self._step(x, y)
            sums += torch.stack([objective, plain, wrong.float()])
            seen += len(y)
            # Syncing with the device only now and then keeps a GPU busy.
            if (b + 1) % self.log_every == 0 or b + 1 == len(batches):
                total = self._global(sums)
                mean = total[0].item() / (seen * self.world_size)
                if not math.isfinite(mean):
                    raise TrainingError(
                        f"the loss became {mean} at step {self.state.step} (epoch {epoch + 1}); "
                        "lower --lr or use --precision fp32. The last good checkpoint is kept.")
                self._emit("on_batch_end", b + 1, mean, total[2].item() / (seen * self.world_size))
        total = self._global(sums) / (seen * self.world_size)  # every rank: the means over all ranks
        if self.world_size > 1:
            self._average_buffers()
        seconds = time.perf_counter() - start
        self.state.train_seconds += seconds
        self.state.elapsed += seconds
        self.state.images_seen += seen * self.world_size
        return {
            "epoch": epoch + 1, "step": self.state.step, "lr": lr,
            # train_loss is the plain cross-entropy, comparable with val_loss; train_objective is
            # what was minimised (with label smoothing, when on).
            "train_loss": total[1].item(), "train_objective": total[0].item(),
            "train_error": total[2].item(),
            "seconds": round(seconds, 3), "images_per_second": round(seen * self.world_size / seconds, 1),
        }
