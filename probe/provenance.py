"""Where a result came from: library versions and the code's git commit."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import probe


def versions() -> dict:
    import numpy
    import torch
    return {"probe": probe.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
