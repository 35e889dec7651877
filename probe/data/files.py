"""Reading dataset files safely: only regular files (a FIFO or a device named like a data file
would block or never end), and never more bytes than a file of that kind can hold."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from probe.errors import DataError, ProbeWarning


class DataWarning(ProbeWarning):
    """Something odd in a dataset folder that loading can work around."""


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_regular(path: Path, st: os.stat_result | None = None) -> os.stat_result:
    """stat(path) (following links) if it is a regular file, else a DataError naming it."""
    try:
        st = st or os.stat(path)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: is {_kind(st.st_mode)}, not a regular file; "
                        "replace it with the real file or remove it")
    return st


def open_regular(path: Path):
    """A binary file object for path, refused unless it is a regular file. O_NONBLOCK makes the
    open itself return at once on a FIFO (a plain open would wait for a writer forever)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        check_regular(path, os.fstat(fd))  # fstat: the file we opened, not one swapped in since
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (checked before reading)."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise DataError(f"{path}: {size:,} bytes, more than any {what} ({limit:,}); "
                            "the file is damaged or of another kind")
        data = f.read(limit + 1)
    if len(data) > limit:  # grew while we read
        raise DataError(f"{path}: more than {limit:,} bytes, more than any {what}")
    return data
