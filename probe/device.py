"""Which device a command runs on: --device auto|cpu|cuda|cuda:N."""
from __future__ import annotations

import contextlib
from typing import Iterator

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


@contextlib.contextmanager
def cpu_threads(threads: int | None, device: torch.device) -> Iterator[dict]:
    """Intra-op threads for the run (`--threads`), restored afterwards; None keeps PyTorch's
    default. (On a machine shared with other jobs one thread can be several times faster than
    OpenMP threads waiting on each other: say --threads 1.)"""
    before = torch.get_num_threads()
    info = {"threads": before}
    if device.type == "cpu" and threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads {threads}: use 1 or more")
        torch.set_num_threads(threads)
        info["threads"] = threads
    try:
        yield info
    finally:
        torch.set_num_threads(before)
