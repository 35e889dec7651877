"""Learning-rate schedules as pure functions of the step: nothing to save, nothing to restore."""
from __future__ import annotations

import math
from dataclasses import dataclass

from probe.errors import ConfigError

SCHEDULES = ("paper", "cosine", "onecycle", "constant")
WARMUP_SCHEDULES = ("paper", "cosine")  # the others ignore warmup_steps


@dataclass(frozen=True)
class Schedule:
    name: str
    lr: float  # the peak (base) learning rate
    total_steps: int
    warmup_steps: int = 0  # paper: constant lr/10 before; cosine: linear ramp
    milestones: tuple[float, ...] = (0.5, 0.75)  # paper: fractions of total (32k, 48k of 64k)
    onecycle_pct: float = 0.25  # onecycle: share of steps spent rising
    final_div: float = 1e3  # onecycle/cosine: how far below the peak the last step goes

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.name!r}: use one of {', '.join(SCHEDULES)}")
        if self.total_steps <= 0:
            raise ConfigError("the run has no steps: give --epochs or --iters greater than 0")
        if self.warmup_steps and self.name not in WARMUP_SCHEDULES:
            raise ConfigError(f"the {self.name} schedule has no warm-up (warmup_steps {self.warmup_steps})")

    def __call__(self, step: int) -> float:
        t = min(step, self.total_steps - 1)
        if self.name == "paper":
            if t < self.warmup_steps:  # He et al.: ResNet-110 warms up at 0.01 until ~400 iters
                return self.lr / 10
            drops = sum(t >= m * self.total_steps for m in self.milestones)
            return self.lr * 0.1 ** drops
        if self.name == "constant":
            return self.lr
        floor = self.lr / self.final_div
        if self.name == "cosine":
            if t < self.warmup_steps:
                return self.lr * (t + 1) / self.warmup_steps
            p = (t - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * p))
        # onecycle: linear rise from lr/25 to lr, then cosine down to the floor
        rise = max(1, int(self.onecycle_pct * self.total_steps))
        if t < rise:
            return self.lr / 25 + (self.lr - self.lr / 25) * t / rise
        p = (t - rise) / max(1, self.total_steps - rise)
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * p))
