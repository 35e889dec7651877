"""Where a dataset's files are: an explicit folder, else $PROBE_DATA_DIR/<name>, else ./data/<name>."""
from __future__ import annotations

import os
from pathlib import Path


def resolve_data_dir(name: str, data_dir: str | Path | None = None) -> Path:
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    root = os.environ.get("PROBE_DATA_DIR")
    if root:
        return Path(root).expanduser() / name
    return Path("data") / name

