"""TrainConfig: every option of a training run, its defaults, and the named presets."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from probe.errors import ConfigError
from probe.train.schedule import SCHEDULES, WARMUP_SCHEDULES

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: what the device does natively (probe.device)


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "mnist"
    arch: str = "resnet20"
    width: float = 1.0
    epochs: int | None = None  # exactly one of epochs / iters
    iters: int | None = None
    batch_size: int = 128  # global: split across processes under DDP
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "paper"
    warmup_iters: int | None = None  # None: the schedule's default (paper: 400 for depth ≥ 110); 0: none
    label_smoothing: float = 0.0
    augment: bool = True
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    device: str = "auto"
    seed: int = 0  # weights, data order, augmentation
    split_seed: int = 0  # which images are val/test: the same for every run of a dataset by default
    split_by: str = "driver"  # SFDDD validation split: "driver" (honest) or "random" (the seed's)
    eval_batch_size: int = 500
    # Adversarial training (probe/train/adversarial.py): None, "pgd" or "fgsm-rs"; ε in pixel units.
    adversarial: str | None = None
    adv_eps: float = 0.0
    adv_steps: int = 7  # PGD's steps (FGSM-RS takes one)
    adv_step_size: float | None = None  # None: PGD 2.5·ε/steps, FGSM-RS 1.25·ε

    def __post_init__(self):
        # Explicit checks, not asserts: they must hold under `python -O` and for meta.json read back.
        types = {"dataset": str, "arch": str, "schedule": str, "precision": str, "device": str,
                 "split_by": str, "width": (int, float), "lr": (int, float), "momentum": (int, float),
                 "weight_decay": (int, float), "label_smoothing": (int, float), "batch_size": int,
                 "eval_batch_size": int, "seed": int, "split_seed": int, "epochs": (int, type(None)),
                 "iters": (int, type(None)), "warmup_iters": (int, type(None)), "nesterov": bool,
                 "augment": bool, "channels_last": bool, "compile": bool}
        for name, kind in types.items():
            value = getattr(self, name)
            bad_bool = isinstance(value, bool) and kind is not bool
            if bad_bool or not isinstance(value, kind):
                what = {int: "a whole number", (int, type(None)): "a whole number"}.get(kind) or \
                    getattr(kind, '__name__', 'a number')
                raise ConfigError(f"--{name.replace('_', '-')} must be {what}, not {value!r}")
            if kind == (int, float) and not math.isfinite(value):  # nan passes every comparison below
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, not {value!r}")
        for name in ("seed", "split_seed"):  # what numpy's and torch's generators take
            if not 0 <= getattr(self, name) < 2 ** 63:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: give a whole number from 0 "
                                  f"to 2^63 - 1")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.epochs is None and self.iters is None:
            raise ConfigError("say how long to train: --epochs N or --iters N (or pick a --preset)")
        if self.epochs is not None and self.iters is not None:
            raise ConfigError("give --epochs or --iters, not both")
        for name in ("batch_size", "eval_batch_size", "epochs", "iters", "lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, not {value}")
        for name in ("weight_decay", "warmup_iters"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), not {self.momentum}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), not {self.label_smoothing}")
        if self.schedule not in SCHEDULES:  # checked here, before any data is loaded
            raise ConfigError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if self.warmup_iters and self.schedule not in WARMUP_SCHEDULES:
            raise ConfigError(f"--warmup-iters {self.warmup_iters} does nothing with the {self.schedule} "
                              f"schedule (it has its own shape): drop it or use "
                              f"{' or '.join(WARMUP_SCHEDULES)}")
        if self.width <= 0:
            raise ConfigError(f"--width must be positive, not {self.width}")
        self._check_adversarial()
        if self.split_by not in ("driver", "random"):
            raise ConfigError(f"--split-by must be 'driver' or 'random', not {self.split_by!r}")

    def _check_adversarial(self) -> None:
        if self.adversarial is None:
            if self.adv_eps:
                raise ConfigError(f"--eps {self.adv_eps:g} is the ε of adversarial training: add --adversarial pgd or fgsm-rs")
            return
        if self.adversarial not in ("pgd", "fgsm-rs"):
            raise ConfigError(f"--adversarial {self.adversarial!r}: use pgd or fgsm-rs")
        eps, steps, alpha = self.adv_eps, self.adv_steps, self.adv_step_size
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 1:
            raise ConfigError(f"--eps {eps!r}: adversarial training needs ε in (0, 1] in pixel units, e.g. 0.3 on MNIST")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100:
            raise ConfigError(f"--adv-steps {steps!r}: give 1 to 100 PGD steps")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1):
            raise ConfigError(f"--adv-step-size {alpha!r}: give a step in (0, 1] in pixel units")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From meta.json / resume state. Runs made before split_seed existed split with the
        training seed, so a missing split_seed means `seed`."""
        if not isinstance(d, dict):
            raise ConfigError(f"a training config must be a JSON object, not {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d.setdefault("split_seed", d.get("seed", 0))
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        """Override the fields given (None: keep). A new length replaces the old one: --epochs
        clears iters and --iters clears epochs."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "epochs" in changes and "iters" not in changes:
            changes["iters"] = None
        elif "iters" in changes and "epochs" not in changes:
            changes["epochs"] = None
        return replace(self, **changes)


# Presets reproduce the paper and the seeds; every field stays overridable from the CLI.
PRESETS: dict[str, dict] = {
    # He et al. 2015, CIFAR-10: batch 128, lr 0.1 ÷10 at 32k and 48k, stop at 64k, wd 1e-4.
    "cifar10-paper": dict(dataset="cifar10", arch="resnet20", iters=64_000, batch_size=128,
                          lr=0.1, schedule="paper", weight_decay=1e-4),
    # The seed's MNIST run: a 32-layer net at half width, 60 epochs.
    "mnist-seed": dict(dataset="mnist", arch="resnet32", width=0.5, epochs=60, batch_size=128,
                       lr=0.1, schedule="paper"),
    # Our committed MNIST model: under 30 minutes on 2 CPU cores.
    "mnist-fast": dict(dataset="mnist", arch="resnet20", width=0.5, epochs=20, batch_size=128,
                       lr=0.2, schedule="onecycle", nesterov=True,
                       weight_decay=5e-4, label_smoothing=0.0),
    # The seed's SFDDD run: 64×48 images, random 32×32 crops, validation split by driver.
    "sfddd-seed": dict(dataset="sfddd", arch="resnet32", epochs=30, batch_size=128, lr=0.1,
                       schedule="cosine", split_by="driver"),
}


def preset_config(name: str | None, **overrides) -> TrainConfig:
    base = {}
    if name is not None:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
        base = dict(PRESETS[name])
        if overrides.get("epochs") is not None:
            base.pop("iters", None)  # an explicit length replaces the preset's
        if overrides.get("iters") is not None:
            base.pop("epochs", None)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)
