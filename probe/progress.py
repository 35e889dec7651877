"""A rich progress bar on stderr, shown only when stderr is a terminal (quiet in tests and logs)."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress,
                           TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)


def progress(what: str, *, bytes_: bool = False) -> Progress:
    """`with progress("...") as bar: task = bar.add_task("", total=n); bar.advance(task)`."""
    counts = (DownloadColumn(), TransferSpeedColumn()) if bytes_ else (MofNCompleteColumn(),)
    return Progress(f"[bold]{what}", BarColumn(), *counts, TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty())
