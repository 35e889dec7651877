"""Which device a command runs on: --device auto|cpu|cuda|cuda:N."""
from __future__ import annotations

import torch

from probe.errors import ConfigError


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """auto → the GPU when there is one, else the CPU; `cuda` → this process's GPU (LOCAL_RANK)."""
    if isinstance(name, torch.device):
        return name
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but this machine has no CUDA GPU "
                              "(or torch is a CPU build): use --device cpu or auto")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")
