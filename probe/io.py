"""Atomic file writes: a reader sees the old file or the whole new one, never half of it."""
from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from probe.errors import ConfigError

_SPECIAL = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"))


def _refuse_impossible_paths(path: Path) -> None:
    """A folder where the file should be, a device, pipe or socket there (the rename would replace
    it: /dev/full turned into a CSV), or a file where a folder of its path should be."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    try:
        mode = os.stat(path).st_mode  # follows a link: a link to /dev/null is refused too
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((what for test, what in _SPECIAL if test(mode)), "something else")
        raise ConfigError(f"{path}: is {kind}, not a regular file; give the path of a file to write")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{parent} is a file, not a folder", str(path))
            return


def check_writable(path: str | Path) -> None:
    """Raise the OSError that writing `path` would meet (naming `path`), before a long job whose
    result goes there: an impossible path, or a nearest existing folder that refuses a file (tried
    with a real one, as permission bits alone mislead on ACL and network file systems)."""
    path = Path(path)
    _refuse_impossible_paths(path)
    parent = next(p for p in path.parents if p.exists())
    try:
        fd, probe_file = tempfile.mkstemp(dir=parent, prefix=".probe-write-check.")
        os.close(fd)
        os.unlink(probe_file)
    except OSError as e:
        raise type(e)(e.errno, f"cannot write here ({e.strerror})", str(path)) from None


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """Yield a binary file; on a clean exit it replaces `path`, on an exception it vanishes.

    temp file in the same folder (os.replace is atomic only within one file system) → fsync →
    os.replace → fsync the folder, so that the rename itself survives a power cut.
    """
    path = Path(path)
    _refuse_impossible_paths(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except (IsADirectoryError, NotADirectoryError):
        raise
    except OSError as e:  # name the user's path, not our temporary file
        raise type(e)(e.errno, f"cannot write here ({e.strerror})", str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:  # not every platform (Windows) or file system lets a folder be opened and synced
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def json_safe(obj):
    """NaN and ±inf become null: bare NaN is not JSON, and other readers reject it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj) -> None:
    import json
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
