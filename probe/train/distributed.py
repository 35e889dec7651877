"""torchrun + DDP: which process am I, and on which device."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from probe.device import resolve_device
from probe.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_device(name: str, local_rank: int, world_size: int) -> str:
    """The device name for one process. Under torchrun (world_size > 1) every process needs its
    own GPU: `cuda` / `auto` → cuda:LOCAL_RANK, and `cuda:N` → cuda:(N + LOCAL_RANK), i.e. N is
    the first GPU of this node's block (`--device cuda:2` with 2 processes uses GPUs 2 and 3).
    A single process keeps the name as given."""
    if world_size <= 1 or not isinstance(name, str) or not name.startswith("cuda:"):
        return name  # resolve_device maps `cuda` and `auto` to cuda:local_rank
    first = name.split(":", 1)[1]
    if not first.isdigit():
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    return f"cuda:{int(first) + local_rank}"


def setup(device: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device)
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    dev = resolve_device(rank_device(device, d.local_rank, world), d.local_rank)
    if dev.type == "cuda":
        if dev.index >= torch.cuda.device_count():
            raise ConfigError(f"process {d.rank} (local rank {d.local_rank}) would use {dev}, but "
                              f"this node has {torch.cuda.device_count()} GPU(s): lower "
                              "--nproc_per_node or the N of --device cuda:N")
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return d, dev


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
