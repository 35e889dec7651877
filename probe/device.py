"""Which device a command runs on: --device auto|cpu|cuda|cuda:N."""
from __future__ import annotations

import contextlib
import contextvars
import os
import time
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


def _cpu_ticks(stat_text: str) -> int:
    """Busy clock ticks of all cores from /proc/stat's first line: user, nice, system, irq,
    softirq and steal (idle and iowait left out; guest time is already counted in user/nice)."""
    fields = [int(v) for v in stat_text.split("\n", 1)[0].split()[1:9]]
    return sum(fields) - sum(fields[3:5])


def _own_ticks(self_stat_text: str) -> int:
    """This process's clock ticks (utime + stime of every thread) from /proc/self/stat; the
    command name in parentheses may hold spaces, so fields count from its closing one."""
    fields = self_stat_text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def busy_elsewhere(sample_seconds: float = 0.2) -> float | None:
    """Cores kept busy by other processes over a short sample: the machine's busy ticks less
    this process's own (/proc/stat, /proc/self/stat). The load average cannot say this: it
    counts this process too, and lags a minute behind, so a report's own first analyses made it
    pick one thread for the rest. None where /proc cannot be read."""
    try:
        def sample():
            with open("/proc/stat") as machine, open("/proc/self/stat") as own:
                return _cpu_ticks(machine.read()), _own_ticks(own.read())
        (all_0, own_0), start = sample(), time.perf_counter()
        time.sleep(sample_seconds)
        (all_1, own_1), seconds = sample(), time.perf_counter() - start
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return max(0.0, ((all_1 - all_0) - (own_1 - own_0)) / hz / seconds)


# A reading of the other processes' load is reused for this long: a report runs its analyses back
# to back, and sampling 0.2 s before each of them cost 2.8 s of the two-model report's 95 s.
READING_MAX_AGE = 20.0
_last_reading: tuple[float, float | None] | None = None  # (time.monotonic(), cores busy elsewhere)


def recent_busy_elsewhere(max_age: float = READING_MAX_AGE) -> float | None:
    """busy_elsewhere(), or the reading it gave less than `max_age` seconds ago."""
    global _last_reading
    now = time.monotonic()
    if _last_reading is not None and 0 <= now - _last_reading[0] < max_age:
        return _last_reading[1]
    others = busy_elsewhere()
    _last_reading = (time.monotonic(), others)
    return others


def free_cores() -> tuple[int, str | None]:
    """Cores other processes leave free (recent_busy_elsewhere; the load average where /proc
    cannot be read), at least one, and why fewer than all when others keep half a core or more
    busy (None otherwise)."""
    cores = os.cpu_count() or 1
    others = recent_busy_elsewhere()
    what = "other processes keep {:.1f} of {} cores busy"
    if others is None and hasattr(os, "getloadavg"):
        others, what = os.getloadavg()[0], "load average {:.1f} on {} cores"
    if others is None or others < 0.5:
        return cores, None
    return max(1, round(cores - others)), what.format(others, cores)


_CHOSEN: contextvars.ContextVar[dict | None] = contextvars.ContextVar("probe_analysis_threads", default=None)


@contextlib.contextmanager
def analysis_threads(threads: int | None, device) -> Iterator[dict]:
    """CPU threads for an analysis of many small kernels (an attack, fooling images, training
    a small net), as cpu_threads, with a stricter default: as many threads as cores left free
    by other processes (recent_busy_elsewhere: a reading up to READING_MAX_AGE old; the load
    average where /proc cannot be read), one when at most one is free. The steps are many
    small kernels; two OpenMP threads that share a core with another process wait on each other
    at every one (measured here: PGD on 1,000 MNIST images, 80 s on 2 threads beside one busy
    process, 11 s on 1). Yields {"threads": n} and, where other processes chose fewer threads,
    "why". Inside another analysis_threads block (every analysis runs in one:
    Analysis.execute), threads=None keeps that block's choice."""
    device = torch.device(device)
    outer = _CHOSEN.get()
    if threads is None and outer is not None:
        yield dict(outer)
        return
    why = None
    default = torch.get_num_threads()
    if threads is None and device.type == "cpu" and default > 1:
        free, what = free_cores()
        if what is not None and free < default:
            threads, why = free, what
    with cpu_threads(threads, device) as info:
        if why:
            info["why"] = why
        token = _CHOSEN.set(dict(info))
        try:
            yield info
        finally:
            _CHOSEN.reset(token)


def one_thread_here(why: str) -> None:
    """This process computes on one CPU thread from now on, and every analysis_threads block in it
    keeps that (a worker process beside others: probe.parallel)."""
    torch.set_num_threads(1)
    _CHOSEN.set({"threads": 1, "why": why})


@contextlib.contextmanager
def one_thread_for_now(why: str) -> Iterator[dict]:
    """one_thread_here until the block ends, then the threads and the choice from before. Yields
    the choice: a caller that gives the process more threads says so in it, for the
    analysis_threads blocks that start after (one that started before keeps its record)."""
    before, choice = torch.get_num_threads(), {"threads": 1, "why": why}
    torch.set_num_threads(1)
    token = _CHOSEN.set(choice)
    try:
        yield choice
    finally:
        _CHOSEN.reset(token)
        torch.set_num_threads(before)


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

