"""Which device a command runs on: --device auto|cpu|cuda|cuda:N."""
from __future__ import annotations

import contextlib
import os
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


@contextlib.contextmanager
def analysis_threads(threads: int | None, device) -> Iterator[dict]:
    """CPU threads for an analysis of many small gradient steps (an attack, fooling images), as
    cpu_threads, with a stricter default: one thread as soon as other processes keep more than
    cores − 1 busy (by the load average). The gradient steps are many small kernels; two OpenMP
    threads that share a core with another process wait on each other at every one (measured
    here: PGD on 1,000 MNIST images, 80 s on 2 threads beside one busy process, 11 s on 1).
    Yields {"threads": n} and, where the load chose one thread, "why"."""
    device = torch.device(device)
    why = None
    if threads is None and device.type == "cpu" and torch.get_num_threads() > 1:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        cores = os.cpu_count() or 1
        if load > cores - 1:
            threads, why = 1, f"load average {load:.1f} on {cores} cores"
    with cpu_threads(threads, device) as info:
        if why:
            info["why"] = why
        yield info


def native_precision(device: str | torch.device) -> str:
    """The precision a device computes fastest natively: on a CPU bf16 only with native bf16
    (AVX512-BF16/AMX; without it autocast emulates bf16 some 10× slower than fp32), else fp32;
    on a GPU bf16 where supported (Ampere and later), else fp16 (with a gradient scaler)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if dev.type == "cpu":
        try:
            return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
        except (AttributeError, RuntimeError):
            return "fp32"
    return "fp32"


def resolve_precision(precision: str, device: str | torch.device,
                      allowed: tuple[str, ...] = ("fp32", "bf16", "fp16"), option: str = "--precision") -> str:
    """"auto" → native_precision(device) (fp32 where that is not among `allowed`); others as given."""
    if precision == "auto":
        native = native_precision(device)
        return native if native in allowed else "fp32"
    if precision not in allowed:
        raise ConfigError(f"{option} {precision!r}: use auto, {', '.join(allowed)}")
    return precision


def configure_for_speed(device: torch.device) -> None:
    """On a GPU: cuDNN picks the fastest kernels for the (fixed) shapes of a run, and convs and
    matmuls may use TF32 (Ampere+: ~10 bits of mantissa in the products, as PyTorch documents
    for training). Nothing changes on a CPU."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True

