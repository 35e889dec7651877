"""MNIST from the four IDX files (each gzipped or raw) in one folder.

IDX: a big-endian header (magic, then one uint32 per dimension), then uint8 data, row-major.
Magic 2051 = uint8 data with 3 dims (images), 2049 = uint8 data with 1 dim (labels).
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from probe.data.files import open_regular
from probe.data.imageset import ImageSet
from probe.data.paths import resolve_data_dir
from probe.data.spec import MNIST
from probe.errors import DataError

FILES = {  # split → (images, labels) base names; each may also end in .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
_CHUNK = 1 << 20
_FIX = "run `probe data fetch mnist`, or download the file again by hand"
MAX_DATA_BYTES = 200 * 2 ** 20  # the training images are 47 MB; a header claiming more lies


def find_file(folder: Path, base: str) -> Path:
    # raw first: it needs no decompression. Some mirrors spell the name with a dot (train-images.idx3-ubyte).
    dotted = base.replace("-idx", ".idx")
    for name in (base, base + ".gz", dotted, dotted + ".gz"):
        if (folder / name).exists():  # read_idx refuses what is not a regular file, by name
            return folder / name
    raise DataError(
        f"MNIST file {base}[.gz] not found in {folder}: {_FIX} into that folder "
        "(or pass --data-dir / set PROBE_DATA_DIR)"
    )


def read_idx(path: Path, magic: int, item_shape: tuple[int | None, ...], *, fix: str = _FIX,
             what: str = "MNIST file", max_bytes: int = MAX_DATA_BYTES) -> np.ndarray:
    """One IDX file → uint8 array (count, *item_shape). Every defect → DataError naming the file.

    item_shape: the size of each dimension after the first; None takes any size (another IDX
    set's images). fix: what the message tells the user to do; what / max_bytes: the largest
    honest file of the kind, which a header may not exceed."""
    ndim = 1 + len(item_shape)
    header_size = 4 + 4 * ndim
    try:
        gz = path.name.endswith(".gz")
        raw = open_regular(path)  # a FIFO named like an IDX file is refused, not waited on
        with (gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw) as f, raw:
            header = f.read(header_size)
            if len(header) < header_size:
                raise DataError(f"{path}: only {len(header)} bytes, too short for an IDX header; {fix}")
            found, *dims = struct.unpack(f">{ndim + 1}I", header)
            if found != magic:
                raise DataError(
                    f"{path}: magic number {found}, expected {magic} "
                    f"({'images' if magic == IMAGES_MAGIC else 'labels'}); is it the right file? {fix}"
                )
            if any(want is not None and want != got for want, got in zip(item_shape, dims[1:])):
                raise DataError(f"{path}: items of shape {tuple(dims[1:])}, expected {item_shape}; {fix}")
            count, item_shape = dims[0], tuple(dims[1:])
            need = count * int(np.prod(item_shape, dtype=np.int64))
            if need > max_bytes:  # a gzip bomb could really deliver what the header claims
                raise DataError(f"{path}: the header declares {count:,} items ({need:,} bytes), more "
                                f"than any {what} ({max_bytes:,}); {fix}")
            if not gz:  # raw: the size is known before anything is read
                have = path.stat().st_size - header_size
                if have != need:
                    raise DataError(_size_message(path, count, need, have, fix))
            # Read in chunks: memory grows with the bytes really there, not with what the header claims.
            buf = bytearray()
            while len(buf) < need:
                chunk = f.read(min(_CHUNK, need - len(buf)))
                if not chunk:
                    break
                buf += chunk
            extra = len(f.read(1))
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot be read ({e}); {fix}") from None
    if len(buf) != need or extra:
        raise DataError(_size_message(path, count, need, len(buf) + extra, fix))
    return np.frombuffer(buf, dtype=np.uint8).reshape(count, *item_shape)  # writable: a bytearray


def _size_message(path: Path, count: int, need: int, have: int, fix: str = _FIX) -> str:
    what = "truncated" if have < need else "longer than its header says"
    return (f"{path}: {what}: the header declares {count:,} items ({need:,} data bytes) "
            f"but the file holds {'at least ' if have > need else ''}{have:,}; {fix}")


def load_mnist(data_dir: str | Path | None = None) -> dict[str, ImageSet]:
    """{"train": 60,000 images, "test": 10,000}, as uint8 (N, 1, 28, 28) with int64 labels."""
    folder = resolve_data_dir("mnist", data_dir)
    if not folder.is_dir():
        raise DataError(f"MNIST folder {folder} does not exist: run `probe data fetch mnist` "
                        "or pass --data-dir to the folder holding the four IDX files")
    out = {}
    for split, (images_name, labels_name) in FILES.items():
        images_path, labels_path = find_file(folder, images_name), find_file(folder, labels_name)
        images = read_idx(images_path, IMAGES_MAGIC, (28, 28))  # (N, 28, 28)
        labels = read_idx(labels_path, LABELS_MAGIC, ())  # (N,)
        if len(images) != len(labels):
            raise DataError(f"{images_path} holds {len(images):,} images but {labels_path} "
                            f"{len(labels):,} labels: the files are from different sets; {_FIX}")
        if len(labels) and labels.max() > 9:
            raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..9; {_FIX}")
        out[split] = ImageSet(
            images=torch.from_numpy(images).unsqueeze(1),  # (N, 1, 28, 28)
            labels=torch.from_numpy(labels).long(),
            spec=MNIST,
        )
    return out
