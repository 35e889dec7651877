"""CIFAR-10 from `cifar-10-python.tar.gz` (read in place, never extracted) or `cifar-10-batches-py/`.

Each batch is a Python 2 cPickle (protocol 2) of {b"batch_label", b"labels", b"data", b"filenames"}:
data is a (10000, 3072) uint8 array, each row three 32×32 planes R, G, B. A pickle can run any
code while it loads, so batches go through an unpickler that can build nothing but containers,
strings, numbers and plain numpy arrays (see _BatchUnpickler).

Sizes are bounded before anything grows: a member or file may hold at most MAX_BATCH_BYTES
(a real batch is 31 MB), an array the unpickler builds at most as many bytes as the pickle has,
and the object it returns, with shared references counted each time they occur (a "billion
laughs" of lists of the same list), at most one element per byte of the pickle.
"""
from __future__ import annotations

import codecs
import io
import pickle
import tarfile
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from probe.data.files import check_regular, read_regular
from probe.data.imageset import ImageSet
from probe.data.paths import resolve_data_dir
from probe.data.spec import CIFAR10
from probe.errors import DataError

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
META = "batches.meta"
_FIX = f"run `probe data fetch cifar10`, or download {ARCHIVE} again by hand"
MAX_BATCH_BYTES = 200 * 2 ** 20  # a batch is ~31 MB; anything this big is not one

try:  # numpy ≥ 2 calls the module numpy._core; pickles written by numpy 1 (and Python 2) say numpy.core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


def _reconstruct(subtype, shape, typecode, *, max_bytes: int):
    if subtype is not np.ndarray:  # no subclass: its __setstate__ would be someone else's code
        raise pickle.UnpicklingError(f"array subtype {subtype!r} is not allowed")
    # _reconstruct allocates shape × dtype at once (real pickles say (0,) and fill it later).
    if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
        raise pickle.UnpicklingError(f"array shape {shape!r:.60} is not a tuple of sizes")
    if not isinstance(typecode, (str, bytes)):
        raise pickle.UnpicklingError(f"array type {typecode!r:.60} is not a type code")
    nbytes = int(np.prod(shape, dtype=object)) * np.dtype(typecode).itemsize
    if nbytes > max_bytes:
        raise pickle.UnpicklingError(f"an array of {nbytes:,} bytes in a pickle of {max_bytes:,}")
    return _np_reconstruct(subtype, shape, typecode)


def _encode(text, encoding="utf-8"):
    # Protocol-2 pickles of bytes written by Python 3 spell them _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({encoding!r}) is not allowed")
    return codecs.encode(text, "latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Resolves only the globals a CIFAR batch needs; any other global stops the load before it runs."""

    def __init__(self, raw: bytes):
        super().__init__(io.BytesIO(raw), encoding="bytes")
        self.max_bytes = len(raw)

    def find_class(self, module, name):
        try:
            found = _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None
        if found is _reconstruct:
            return partial(_reconstruct, max_bytes=self.max_bytes)
        return found


def _children(obj) -> list:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple)):
        return list(obj)
    return []


def expanded_size(root, limit: int) -> int:
    """Elements of root counting every reference (a list held twice counts twice), computed on
    the shared graph without expanding it; ValueError past `limit` or on a cycle. Iterative:
    a deeply nested pickle must not hit the recursion limit here."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        obj, finished = stack.pop()
        oid = id(obj)
        if finished:
            on_path.discard(oid)
            sizes[oid] = total = 1 + sum(sizes[id(k)] for k in _children(obj))
            if total > limit:
                raise ValueError(f"it expands to more than {limit:,} elements (shared references "
                                 "counted each time): a 'billion laughs'")
            continue
        if oid in sizes:
            continue
        kids = _children(obj)
        if not kids:
            sizes[oid] = 1
            continue
        on_path.add(oid)
        stack.append((obj, True))
        for k in kids:
            if id(k) in on_path:
                raise ValueError("a container holds itself")
            if id(k) not in sizes:
                stack.append((k, False))
    return sizes[id(root)]


def unpickle_batch(raw: bytes, source: str) -> dict[str, object]:
    """Bytes of one batch file → a dict with str keys. `source` names the file in messages."""
    try:
        obj = _BatchUnpickler(raw).load()
        # Each element of an honest pickle costs at least one byte of it.
        expanded_size(obj, limit=len(raw) + 4096)
    except Exception as e:  # UnpicklingError, but also EOFError, ValueError... from a damaged file
        raise DataError(f"{source}: not a CIFAR-10 batch pickle ({e}); {_FIX}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{source}: holds a {type(obj).__name__}, not a CIFAR-10 batch dict; {_FIX}")
    # Python 2 wrote str keys, which load as bytes; accept str keys too (a batch re-pickled by Python 3).
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(d: dict, source: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{source}: 'data' should be a uint8 (N, 3072) array, found {got}; {_FIX}")
    flat = (isinstance(labels, list) and all(type(x) is int for x in labels)) or (
        isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu")
    try:
        if not flat:  # a nested list would turn into a bigger array than it looks
            raise TypeError
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)  # (N,)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{source}: 'labels' is not a list of integers; {_FIX}") from None
    if len(labels) != len(data):
        raise DataError(f"{source}: {len(data):,} images but {len(labels):,} labels; {_FIX}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{source}: labels outside 0..9 (is this CIFAR-100?); {_FIX}")
    names = d.get("filenames")
    if isinstance(names, list) and len(names) == len(data):
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
    else:
        names = [f"{source.rsplit('/', 1)[-1]}_{i:05d}.png" for i in range(len(data))]
    return data, labels, names


def _check_meta(d: dict, source: str) -> None:
    names = d.get("label_names")
    if isinstance(names, list):
        names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
        if names != list(CIFAR10.classes):
            raise DataError(f"{source}: label names {names} are not CIFAR-10's; "
                            f"point --data-dir at the CIFAR-10 (python version) files")


def _read_folder(folder: Path) -> dict[str, bytes]:
    out = {}
    for name in (*TRAIN_BATCHES, *TEST_BATCHES, META):
        path = folder / name
        if not path.exists():
            if name == META:
                continue  # only a cross-check; the batches are what matter
            raise DataError(f"CIFAR-10 batch {path} is missing: the folder is incomplete; {_FIX}")
        out[name] = read_regular(path, MAX_BATCH_BYTES, "CIFAR-10 batch")
    return out


def _read_archive(archive: Path) -> dict[str, bytes]:
    """Read the batches straight out of the tar: nothing is written, so no member can land outside."""
    wanted = {f"{FOLDER}/{n}" for n in (*TRAIN_BATCHES, *TEST_BATCHES, META)}
    out = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                p = PurePosixPath(member.name)
                if p.is_absolute() or ".." in p.parts:
                    raise DataError(f"{archive}: member {member.name!r} points outside the archive "
                                    f"folder; refusing it. {_FIX}")
                if member.name not in wanted:
                    continue
                if not member.isfile():  # links, devices, fifos: never what a batch is
                    raise DataError(f"{archive}: member {member.name!r} is not a regular file; {_FIX}")
                if member.size > MAX_BATCH_BYTES:  # the header's word, before reading a byte
                    raise DataError(f"{archive}: member {member.name!r} declares {member.size:,} "
                                    f"bytes, more than any CIFAR-10 batch ({MAX_BATCH_BYTES:,}): "
                                    f"the archive is damaged or not CIFAR-10; {_FIX}")
                out[p.name] = tar.extractfile(member).read(MAX_BATCH_BYTES + 1)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{archive}: cannot be read as a .tar.gz ({e}); {_FIX}") from None
    missing = [n for n in (*TRAIN_BATCHES, *TEST_BATCHES) if n not in out]
    if missing:
        raise DataError(f"{archive}: no {FOLDER}/{missing[0]} inside (is it the python version "
                        f"of CIFAR-10?); {_FIX}")
    return out


def find_source(folder: Path) -> Path:
    """The batches folder or the archive; `folder` may hold either, or be the batches folder itself."""
    for candidate in (folder, folder / FOLDER):
        if (candidate / TEST_BATCHES[0]).exists() or (candidate / TRAIN_BATCHES[0]).exists():
            return candidate
    for candidate in (folder / ARCHIVE, folder):
        if candidate.exists() and not candidate.is_dir() and candidate.name.endswith((".tar.gz", ".tgz")):
            check_regular(candidate)  # a FIFO would block tarfile.open forever
            return candidate
    raise DataError(f"no CIFAR-10 in {folder}: expected {ARCHIVE} or {FOLDER}/ there; {_FIX} into that "
                    "folder (or pass --data-dir / set PROBE_DATA_DIR)")


def load_cifar10(data_dir: str | Path | None = None) -> dict[str, ImageSet]:
    """{"train": 50,000 images, "test": 10,000}, as uint8 (N, 3, 32, 32) with int64 labels and file names."""
    source = find_source(resolve_data_dir("cifar10", data_dir))
    files = _read_folder(source) if source.is_dir() else _read_archive(source)
    where = (lambda n: str(source / n)) if source.is_dir() else (lambda n: f"{source}:{FOLDER}/{n}")
    if META in files:
        _check_meta(unpickle_batch(files[META], where(META)), where(META))
    out = {}
    for split, batches in (("train", TRAIN_BATCHES), ("test", TEST_BATCHES)):
        parts = [_batch_arrays(unpickle_batch(files[b], where(b)), where(b)) for b in batches]
        data = np.concatenate([p[0] for p in parts])  # (N, 3072)
        out[split] = ImageSet(
            images=torch.from_numpy(data.reshape(-1, 3, 32, 32)),  # (N, 3, 32, 32): planes R, G, B
            labels=torch.from_numpy(np.concatenate([p[1] for p in parts])),
            spec=CIFAR10,
            names=[n for p in parts for n in p[2]],
        )
    return out
