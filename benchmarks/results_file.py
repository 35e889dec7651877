"""What every benchmark records beside its timings, and how it writes them."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> dict:
    """Which of the SIMD features that decide fp32/bf16 speed the CPU has (/proc/cpuinfo), and
    the instruction set torch dispatches its own kernels to."""
    import torch
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {**{f: f in flags for f in CPU_FLAGS},
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def machine() -> dict:
    """Cores, platform and load average: the load says how busy the machine was meanwhile."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg(),
            "cpu_flags": cpu_flags()}


def flags_line() -> str:
    """The machine in one line, for a benchmark's first printed line."""
    flags = cpu_flags()
    have = [f for f in CPU_FLAGS if flags[f]]
    lacking = [f for f in CPU_FLAGS if not flags[f]]
    missing = f" (no {', '.join(lacking)})" if lacking else ""
    return (f"CPU: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; flags {', '.join(have) or 'none'}"
            f"{missing}; torch kernels {flags['torch_cpu_capability']}")


def write_json(path: Path | None, doc: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"→ {path}")
