"""Builders of small datasets in their exact on-disk formats: IDX files, Python-2 pickle batches in
a real tar.gz, JPEGs in Kaggle's folders with a real driver CSV."""
from __future__ import annotations

import csv
import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

# ---- MNIST: IDX ----------------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray, magic: int, count: int | None = None) -> bytes:
    """Big-endian header (magic, one uint32 per dim), then the uint8 data; `count` may lie."""
    dims = list(arr.shape)
    if count is not None:
        dims[0] = count
    return struct.pack(f">{1 + len(dims)}I", magic, *dims) + arr.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n_train: int = 200, n_test: int = 50, gz: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10  # every class present
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n) % 256  # distinct first pixels help trace images
        for name, data in ((f"{prefix}-images-idx3-ubyte", idx_bytes(images, 2051)),
                           (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels, 2049))):
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data, mtime=0))
            else:
                (folder / name).write_bytes(data)
    return folder


# ---- CIFAR-10: a Python 2 cPickle, protocol 2 ----------------------------------------------------

class Py2Pickle:
    """Writes what Python 2's cPickle.dump(obj, f, 2) writes, for the types in a CIFAR batch: a dict
    of str keys, str values, lists of int or str, and a 2-D uint8 numpy array.

    What makes it Python 2 (and unlike pickle.dumps(..., protocol=2) under Python 3, which spells
    bytes as _codecs.encode(str, "latin1") and numpy as numpy._core): py2 str is written raw as
    SHORT_BINSTRING (U) or BINSTRING (T), the array via GLOBAL numpy.core.multiarray _reconstruct.
    cPickle's habits kept: memo ids from 1, strings shorter than 2 bytes and small tuples not
    memoized, lists and dicts emitted as EMPTY_* + BINPUT + MARK ... APPENDS/SETITEMS in batches
    of 1000, the dtype state in its version-3 form (3, '|', None, None, None, -1, -1, 0)."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self.memo = 0

    def put(self):
        self.memo += 1
        self.out += b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)

    def int(self, i: int):
        if 0 <= i < 256:
            self.out += b"K" + bytes([i])
        elif 0 <= i < 65536:
            self.out += b"M" + struct.pack("<H", i)
        else:
            self.out += b"J" + struct.pack("<i", i)

    def str(self, s: bytes):
        self.out += (b"U" + bytes([len(s)]) if len(s) < 256 else b"T" + struct.pack("<I", len(s))) + s
        if len(s) >= 2:
            self.put()

    def glob(self, module: str, name: str):
        self.out += f"c{module}\n{name}\n".encode()
        self.put()

    def any(self, x):
        if isinstance(x, bytes):
            self.str(x)
        elif isinstance(x, bool) or x is None:
            self.out += {None: b"N", True: b"\x88", False: b"\x89"}[x]
        elif isinstance(x, int):
            self.int(x)
        elif isinstance(x, list):
            self.out += b"]"
            self.put()
            for i in range(0, len(x), 1000):
                self.out += b"("
                for item in x[i:i + 1000]:
                    self.any(item)
                self.out += b"e"  # APPENDS
        elif isinstance(x, dict):
            self.out += b"}"
            self.put()
            items = list(x.items())
            for i in range(0, len(items), 1000):
                self.out += b"("
                for k, v in items[i:i + 1000]:
                    self.any(k)
                    self.any(v)
                self.out += b"u"  # SETITEMS
        elif isinstance(x, np.ndarray):
            assert x.dtype == np.uint8 and x.ndim == 2
            self.glob("numpy.core.multiarray", "_reconstruct")
            self.glob("numpy", "ndarray")
            self.int(0)
            self.out += b"\x85"  # TUPLE1: shape (0,)
            self.str(b"b")
            self.out += b"\x87R"  # TUPLE3, REDUCE
            self.put()
            self.out += b"("  # state: (1, shape, dtype, is_fortran, raw bytes)
            self.int(1)
            self.int(x.shape[0])
            self.int(x.shape[1])
            self.out += b"\x86"  # TUPLE2
            self.glob("numpy", "dtype")
            self.str(b"u1")
            self.int(0)
            self.int(1)
            self.out += b"\x87R"
            self.put()
            self.out += b"(" + b"K\x03" + b"U\x01|" + b"NNN" + b"J\xff\xff\xff\xff" * 2 + b"K\x00" + b"tb"
            self.out += b"\x89"  # not Fortran order
            self.str(np.ascontiguousarray(x).tobytes())
            self.out += b"tb"  # TUPLE, BUILD (ndarray.__setstate__)
        else:
            raise TypeError(type(x))

    @classmethod
    def dumps(cls, obj) -> bytes:
        p = cls()
        p.any(obj)
        return bytes(p.out + b".")


CIFAR_CLASSES = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                 b"dog", b"frog", b"horse", b"ship", b"truck"]


def cifar_batch(n: int, seed: int, label: bytes) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # (N, 3072): R, G, B planes
    labels = [int(x) for x in rng.permutation(np.arange(n) % 10)]
    names = [f"img_{seed}_{i:04d}.png".encode() for i in range(n)]
    # Key order of the real files (a Python 2 dict's order).
    return {b"data": data, b"labels": labels, b"batch_label": label, b"filenames": names}, data


def cifar_files(per_batch: int = 20) -> dict[str, bytes]:
    files = {}
    for i in range(1, 6):
        d, _ = cifar_batch(per_batch, i, f"training batch {i} of 5".encode())
        files[f"data_batch_{i}"] = Py2Pickle.dumps(d)
    d, _ = cifar_batch(per_batch, 0, b"testing batch 1 of 1")
    files["test_batch"] = Py2Pickle.dumps(d)
    files["batches.meta"] = Py2Pickle.dumps(
        {b"num_cases_per_batch": 10000, b"label_names": CIFAR_CLASSES, b"num_vis": 3072})
    files["readme.html"] = b"<html>CIFAR-10</html>"
    return files


def write_cifar_folder(folder: Path, files: dict[str, bytes] | None = None) -> Path:
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    for name, data in (files or cifar_files()).items():
        (batches / name).write_bytes(data)
    return folder


def write_cifar_archive(folder: Path, files: dict[str, bytes] | None = None,
                        extra: list[tarfile.TarInfo] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        dirinfo = tarfile.TarInfo("cifar-10-batches-py")
        dirinfo.type = tarfile.DIRTYPE
        tar.addfile(dirinfo)
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
        for name, data in (files or cifar_files()).items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# ---- SFDDD: JPEGs in Kaggle's folders + driver_imgs_list.csv ----------------------------------

def jpeg_bytes(seed: int, size: tuple[int, int] = (80, 60)) -> bytes:
    """A small JPEG whose colour depends on the seed (so images differ after resizing too)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, 3)
    yy, xx = np.mgrid[0:h, 0:w]
    img = (base + np.stack([xx * 2, yy * 2, xx + yy], -1) + rng.normal(0, 8, (h, w, 3))) % 256
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def write_sfddd(folder: Path, n_drivers: int = 10, per_class: int = 2, n_test: int = 6,
                size: tuple[int, int] = (80, 60)) -> Path:
    """Kaggle's layout: imgs/train/c0..c9, imgs/test, driver_imgs_list.csv; a few 640×480 images too."""
    train = folder / "imgs" / "train"
    rows = []
    k = 0
    for d in range(n_drivers):
        driver = f"p{d + 2:03d}"
        for c in range(10):
            (train / f"c{c}").mkdir(parents=True, exist_ok=True)
            for _ in range(per_class):
                name = f"img_{k}.jpg"
                full = k < 3  # a few at the real size, so draft mode really scales
                (train / f"c{c}" / name).write_bytes(jpeg_bytes(k, (640, 480) if full else size))
                rows.append((driver, f"c{c}", name))
                k += 1
    with open(folder / "driver_imgs_list.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["subject", "classname", "img"])
        w.writerows(rows)
    test = folder / "imgs" / "test"
    test.mkdir(parents=True)
    for i in range(n_test):
        (test / f"img_{100000 + i}.jpg").write_bytes(jpeg_bytes(100000 + i, size))
    return folder
