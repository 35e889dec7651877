"""Atomic file writes (a reader sees the old file or the whole new one, never half of it), and
bounded reads (only regular files, never more bytes than a file of that kind can hold, JSON that
cannot exhaust the parser): every fault is a ProbeError naming the file."""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from probe.errors import ConfigError, DataError, ProbeError

_SPECIAL = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    return next((what for test, what in _SPECIAL if test(mode)), "not a regular file")


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
        raise ConfigError(f"{path}: is {_kind(mode)}, not a regular file; give the path of a file to write")
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
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


# ---- bounded reads ---------------------------------------------------------------------------------

def check_regular(path: Path, st: os.stat_result | None = None,
                  error: type[ProbeError] = DataError) -> os.stat_result:
    """stat(path) (following links) if it is a regular file, else `error` naming it."""
    try:
        st = st or os.stat(path)
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: is {_kind(st.st_mode)}, not a regular file; "
                    "replace it with the real file or remove it")
    return st


def open_regular(path: Path, error: type[ProbeError] = DataError):
    """A binary file object for path, refused unless it is a regular file. O_NONBLOCK makes the
    open itself return at once on a FIFO (a plain open would wait for a writer forever)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        check_regular(path, os.fstat(fd), error)  # fstat: the file we opened, not one swapped in since
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int, what: str, error: type[ProbeError] = DataError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (checked before reading: a sparse
    7 GB file is refused, not read into memory)."""
    with open_regular(path, error) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise error(f"{path}: {size:,} bytes, more than any {what} ({limit:,}); "
                        "the file is damaged or of another kind")
        data = f.read(limit + 1)
    if len(data) > limit:  # grew while we read
        raise error(f"{path}: more than {limit:,} bytes, more than any {what}")
    return data


MAX_JSON_DEPTH = 64  # probe's own files nest 5 deep; deeper ones break repr() and recursion later
MAX_JSON_DIGITS = 40  # no count, seed or size probe keeps needs more; int() of 5,000 is a ValueError


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-')):,} digits")
    return int(text)


def _depth(doc) -> int:
    """How deep lists and objects nest (iterative: a deep document must not recurse here)."""
    deepest, stack = 0, [(doc, 1)] if isinstance(doc, (dict, list)) else []
    while stack and deepest <= MAX_JSON_DEPTH:
        obj, depth = stack.pop()
        deepest = max(deepest, depth)
        children = obj.values() if isinstance(obj, dict) else obj
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def parse_json(text: str | bytes, where: str, what: str, error: type[ProbeError] = DataError,
               fix: str = "the file is damaged: restore or remake it"):
    """A JSON document, or `error` naming `where`: never a RecursionError (200,000 brackets), a
    ValueError (a 5,000-digit integer) or a UnicodeDecodeError."""
    try:
        doc = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text, parse_int=_bounded_int)
        deep = _depth(doc) > MAX_JSON_DEPTH
    except RecursionError:  # the parser's own recursion: deeper than the interpreter's limit
        deep = True
    except (UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise error(f"{where}: corrupt JSON ({why}), not {what}; {fix}") from None
    if deep:
        raise error(f"{where}: corrupt JSON (nested more than {MAX_JSON_DEPTH} deep), not {what}; {fix}")
    return doc


def read_json(path: str | Path, what: str, max_bytes: int, error: type[ProbeError] = DataError):
    """The JSON document in the regular file `path` of at most max_bytes, or `error` naming it.
    Every JSON file probe reads goes through here."""
    return parse_json(read_regular(Path(path), max_bytes, what, error), str(path), what, error)
