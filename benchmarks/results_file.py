"""What every benchmark records beside its timings, and how it writes them."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    """Cores, platform and load average: the load says how busy the machine was meanwhile."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()}


def write_json(path: Path | None, doc: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"→ {path}")
