"""CIFAR-10 from `cifar-10-python.tar.gz` (read in place, never extracted) or `cifar-10-batches-py/`.

Each batch is a Python 2 cPickle (protocol 2) of {b"batch_label", b"labels", b"data", b"filenames"}:
data is a (10000, 3072) uint8 array, each row three 32×32 planes R, G, B. A pickle can run any
code while it loads, so batches go through an unpickler that can build nothing but containers,
strings, numbers and plain numpy arrays (see _BatchUnpickler).

Sizes are bounded before anything grows: a member or file may hold at most MAX_BATCH_BYTES
(a real batch is 31 MB, 62 MB at most when Python 3 re-pickled it as text), all the arrays one
pickle builds, however built, at most as many bytes as the pickle has, a batch at most
MAX_BATCH_IMAGES images, and the object it returns, with shared references counted each time
they occur (a "billion laughs" of lists of the same list), at most one element per byte of the
pickle.
"""
from __future__ import annotations

import codecs
import io
import math
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from probe.data.files import check_regular, one_line, read_regular
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
MAX_BATCH_BYTES = 64 * 2 ** 20  # a batch is ~31 MB (≤ 62 MB as Python 3 text); anything bigger is not one
MAX_BATCH_IMAGES = 10_000  # every CIFAR-10 batch holds exactly this many

# An unpickler that builds arrays and dtypes is only as safe as every way it can build them:
# numpy.ndarray called through REDUCE (or NEWOBJ), _reconstruct, and BUILD, which is
# ndarray.__setstate__ (allocating shape × dtype) and dtype.__setstate__ (which can set a uint8
# dtype's flags so that numpy takes its bytes for object pointers). The C unpickler calls all of
# those without asking, so batches go through the pure-Python one with its table of opcodes cut
# down to containers, strings and numbers, and with REDUCE and BUILD replaced: REDUCE calls only
# the functions below, BUILD only sets the state of an array or dtype they made, after checking
# it. Every array they allocate is counted against one budget, the size of the pickle: the data
# of an honest array is in the pickle, once.
_OPS = ("PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
        "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1",
        "LONG4", "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES",
        "SHORT_BINBYTES", "BINBYTES8", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
        "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "LIST", "EMPTY_DICT",
        "DICT", "GET", "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE",
        "GLOBAL", "STACK_GLOBAL")
_PLAIN_KINDS = "biuf"  # bool, int, uint, float: what a batch's data and labels can be
MAX_NDIM = 8


class _Ops(dict):
    def __missing__(self, code: int):
        raise pickle.UnpicklingError(f"opcode {bytes([code])!r} is not allowed in a CIFAR-10 batch")


def _plain_dtype(typecode) -> np.dtype:
    """A fresh, canonical dtype of a plain numeric type code ('u1', b'<i8'), else UnpicklingError."""
    if isinstance(typecode, bytes):
        typecode = typecode.decode("latin1")
    if isinstance(typecode, np.dtype):
        typecode = typecode.str  # '<i8': rebuilt from its name, whatever its state was set to
    if not isinstance(typecode, str) or len(typecode) > 8:
        raise pickle.UnpicklingError(f"array type {typecode!r:.60} is not a type code")
    try:
        dt = np.dtype(typecode)
    except (TypeError, ValueError, SyntaxError):
        raise pickle.UnpicklingError(f"array type {typecode!r} is not a numpy type code") from None
    if dt.kind not in _PLAIN_KINDS or dt.subdtype is not None or dt.names is not None:
        raise pickle.UnpicklingError(f"array type {dt} is not a plain number type")
    return np.dtype(dt.str)  # not the shared instance: a BUILD on it must not change numpy's own


def _shape(shape) -> tuple[int, ...]:
    if type(shape) is int:
        shape = (shape,)
    if not (type(shape) is tuple and len(shape) <= MAX_NDIM
            and all(type(d) is int and d >= 0 for d in shape)):
        raise pickle.UnpicklingError(f"array shape {shape!r:.60} is not a tuple of sizes")
    return shape


def _array_marker(*args):  # numpy.ndarray; a function, never the class: NEWOBJ needs a class
    raise AssertionError("called through _BatchUnpickler.load_reduce only")


def _reconstruct_marker(*args):  # numpy.core.multiarray._reconstruct
    raise AssertionError("called through _BatchUnpickler.load_reduce only")


def _dtype_marker(*args):  # numpy.dtype
    raise AssertionError("called through _BatchUnpickler.load_reduce only")


def _encode(text, encoding="utf-8"):
    # Protocol-2 pickles of bytes written by Python 3 spell them _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({encoding!r:.20}) is not allowed")
    return codecs.encode(text, "latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_marker,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_marker,
    ("numpy", "ndarray"): _array_marker,
    ("numpy", "dtype"): _dtype_marker,
    ("_codecs", "encode"): _encode,
}


class _BatchUnpickler(pickle._Unpickler):
    """Resolves only the globals a CIFAR batch needs and runs only the opcodes it needs; any other
    global or opcode stops the load before it runs (see the note above)."""

    dispatch = _Ops({getattr(pickle, op)[0]: pickle._Unpickler.dispatch[getattr(pickle, op)[0]]
                     for op in _OPS})

    def __init__(self, raw: bytes):
        super().__init__(io.BytesIO(raw), encoding="bytes")
        self.budget = len(raw)  # bytes all the arrays together may take

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {one_line(f'{module}.{name}', 120)}") from None

    def _allocate(self, shape: tuple[int, ...], dt: np.dtype) -> np.ndarray:
        nbytes = math.prod(shape) * dt.itemsize
        if nbytes > self.budget:
            raise pickle.UnpicklingError(
                f"it declares an array of {nbytes:,} bytes, more than the pickle holds")
        self.budget -= nbytes
        return np.zeros(shape, dt)

    def _call(self, func, args: tuple):
        if func is _encode:
            return _encode(*args)
        if func is _dtype_marker:  # dtype(obj, align=False, copy=False)
            if not 1 <= len(args) <= 3 or not all(type(a) in (bool, int) for a in args[1:]):
                raise pickle.UnpicklingError(f"numpy.dtype{args!r:.60} is not a plain dtype")
            return _plain_dtype(args[0])
        if func is _reconstruct_marker:  # _reconstruct(ndarray, shape, typecode)
            if len(args) != 3 or args[0] is not _array_marker:
                raise pickle.UnpicklingError("_reconstruct of anything but a plain numpy.ndarray")
            return self._allocate(_shape(args[1]), _plain_dtype(args[2]))
        if func is _array_marker:  # ndarray(shape, dtype=float): no buffer, offset or strides
            if not 1 <= len(args) <= 2:
                raise pickle.UnpicklingError("numpy.ndarray with a buffer is not allowed")
            return self._allocate(_shape(args[0]), _plain_dtype(args[1] if len(args) > 1 else "f8"))
        raise pickle.UnpicklingError(f"a {type(func).__name__} cannot be called")

    def load_reduce(self):
        args = self.stack.pop()
        if type(args) is not tuple:
            raise pickle.UnpicklingError("REDUCE without an argument tuple")
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.dtype):
            # (3, byteorder, None, None, None, -1, -1, 0) is a plain type's whole state; the other
            # fields (subarray, fields, size, alignment, flags) are what would make it unsafe.
            if not (type(state) is tuple and len(state) == 8 and state[0] in (3, 4)
                    and state[1] in ("<", ">", "|", "=", b"<", b">", b"|", b"=")
                    and state[2:5] == (None, None, None) and state[5:] == (-1, -1, 0)):
                raise pickle.UnpicklingError(f"dtype state {state!r:.80} is not a plain type's")
            inst.__setstate__(state)
        elif isinstance(inst, np.ndarray):
            if type(state) is tuple and len(state) == 4:
                state = (1, *state)
            if not (type(state) is tuple and len(state) == 5 and type(state[3]) in (bool, int)):
                raise pickle.UnpicklingError(f"array state {state!r:.80} is not (version, shape, "
                                             "dtype, fortran, data)")
            shape, dt, raw = _shape(state[1]), _plain_dtype(state[2]), state[4]
            nbytes = math.prod(shape) * dt.itemsize
            if type(raw) is not bytes or len(raw) != nbytes:
                got = f"{len(raw):,} bytes" if isinstance(raw, bytes) else type(raw).__name__
                raise pickle.UnpicklingError(f"array data is {got}, its shape {shape} and type "
                                             f"{dt} need {nbytes:,} bytes")
            if nbytes > self.budget:
                raise pickle.UnpicklingError("arrays of more bytes than the pickle holds")
            self.budget -= nbytes
            inst.__setstate__((state[0], shape, dt, bool(state[3]), raw))
        else:
            raise pickle.UnpicklingError(f"BUILD of a {type(inst).__name__} is not allowed")

    # Only real lists and dicts grow: APPENDS and SETITEMS call methods of whatever is on the stack.
    def load_append(self):
        value = self.stack.pop()
        if type(self.stack[-1]) is not list:
            raise pickle.UnpicklingError("APPEND to something not a list")
        self.stack[-1].append(value)

    def load_appends(self):
        items = self.pop_mark()
        if type(self.stack[-1]) is not list:
            raise pickle.UnpicklingError("APPENDS to something not a list")
        self.stack[-1].extend(items)

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        if type(self.stack[-1]) is not dict:
            raise pickle.UnpicklingError("SETITEM of something not a dict")
        self.stack[-1][key] = value

    def load_setitems(self):
        items = self.pop_mark()
        if type(self.stack[-1]) is not dict or len(items) % 2:
            raise pickle.UnpicklingError("SETITEMS of something not a dict")
        d = self.stack[-1]
        for i in range(0, len(items), 2):
            d[items[i]] = items[i + 1]

    for _op, _fn in (("REDUCE", load_reduce), ("BUILD", load_build), ("APPEND", load_append),
                     ("APPENDS", load_appends), ("SETITEM", load_setitem),
                     ("SETITEMS", load_setitems)):
        dispatch[getattr(pickle, _op)[0]] = _fn
    del _op, _fn


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
        raise DataError(f"{source}: not a CIFAR-10 batch pickle ({one_line(e)}); {_FIX}") from None
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
    if len(data) > MAX_BATCH_IMAGES:
        raise DataError(f"{source}: {len(data):,} images, more than a CIFAR-10 batch holds "
                        f"({MAX_BATCH_IMAGES:,}); {_FIX}")
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
            raise DataError(f"{source}: label names {one_line(names)} are not CIFAR-10's; "
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
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged member's data
        raise DataError(f"{archive}: cannot be read as a .tar.gz ({one_line(e)}); {_FIX}") from None
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
