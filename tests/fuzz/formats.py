"""Each format probe reads: its honest files (built once, small), the hypothesis strategy of its
variants, how a variant is made from the honest files, and how probe loads it (library, and the
CLI command a user would run on it).

A variant is a plain tuple (printable, repeatable): ("bytes", file, ops), ("swap", a, b),
("json", file, (json ops, text ops)), or a format's own, e.g. ("idx_header", file, field, value).
`realize` runs in the worker, where the honest files are; the strategies only name files by index
(so the parent never needs the files), positions are taken modulo the file's length.
"""
from __future__ import annotations

import gzip
import io
import json
import math
import os
import pickle
import pickletools
import shutil
import struct
import sys
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from hypothesis import strategies as st

from fuzz.mutators import (INTERESTING_U32, INTERESTING_U64, apply_bytes, apply_json_variant,
                           byte_ops, mutate_json_strategy)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@dataclass
class Format:
    name: str
    base: str  # folder under the worker's base directory holding the honest files
    files: list[str]  # the files variants change, relative to the format's folder
    load: Callable  # (folder, shared) -> something checked, or a ProbeError
    cli: Callable | None = None  # (folder, shared) -> argv of the `probe` command a user would run
    own: list = field(default_factory=list)  # strategies of the format's own variants
    json_files: tuple[int, ...] = ()  # indices of files that are JSON
    realize_own: Callable | None = None  # (variant, files: {rel: bytes}, shared) -> {rel: bytes | None}
    draw_every: int | None = None  # its own drawing rate, where drawing is cheap (None: the run's)

    def strategy(self):
        n = len(self.files)
        file = st.integers(0, n - 1)
        generic = [
            st.tuples(st.just("bytes"), file, byte_ops()),
            st.tuples(st.just("bytes"), file, byte_ops()),  # the plain mutations, twice as often
            st.tuples(st.just("swap"), file, file),
            st.tuples(st.just("replace"), file, file),
            st.tuples(st.just("delete"), file),
        ]
        if self.json_files:
            j = st.sampled_from(self.json_files)
            generic += [st.tuples(st.just("json"), j, mutate_json_strategy())] * 3
        return st.one_of(*generic, *self.own)


def realize(fmt: Format, variant, files: dict[str, bytes], shared) -> dict[str, bytes | None]:
    """{rel: new bytes, or None to delete} for the variant."""
    kind = variant[0]
    names = fmt.files
    if kind == "bytes":
        rel = names[variant[1]]
        return {rel: apply_bytes(files[rel], variant[2])}
    if kind == "swap":
        a, b = names[variant[1]], names[variant[2]]
        return {a: files[b], b: files[a]}
    if kind == "replace":
        a, b = names[variant[1]], names[variant[2]]
        return {a: files[b]}
    if kind == "delete":
        return {names[variant[1]]: None}
    if kind == "json":
        rel = names[variant[1]]
        return {rel: apply_json_variant(files[rel], variant[2])}
    return fmt.realize_own(variant, files, shared)


# ---- checks of a correct load -------------------------------------------------------------------

def check_imageset(s, name="split") -> None:
    import torch
    assert s.images.dtype == torch.uint8 and s.images.ndim == 4, (name, s.images.dtype, s.images.shape)
    assert s.labels.dtype == torch.int64 and len(s.labels) == len(s.images), name


def check_sets(sets: dict) -> int:
    for k, v in sets.items():
        check_imageset(v, k)
    return sum(len(v) for v in sets.values())


# ---- IDX: MNIST (gz) and your own IDX set (raw) ---------------------------------------------------

IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]


def _idx_own(gz: bool):
    file = st.integers(0, 3)
    out = [st.tuples(st.just("idx_header"), file, st.integers(0, 3),
                     st.sampled_from(INTERESTING_U32 + (2049, 2051, 2050, 0x0803, 0x0801, 28, 27, 29)))]
    if gz:
        out.append(st.tuples(st.just("inner"), file, byte_ops()))  # the decompressed bytes, recompressed
        out.append(st.tuples(st.just("gz_bomb"), file, st.sampled_from((10 ** 6, 10 ** 7, 5 * 10 ** 7))))
    return out


def _realize_idx(gz: bool):
    def real(variant, files, shared):
        rel = IDX_FILES[variant[1]] + (".gz" if gz else "")
        raw = gzip.decompress(files[rel]) if gz else files[rel]
        kind = variant[0]
        if kind == "idx_header":
            _, _, fld, value = variant
            pos = 4 * fld
            raw = raw[:pos] + struct.pack(">I", value) + raw[pos + 4:]
        elif kind == "inner":
            raw = apply_bytes(raw, variant[2])
        elif kind == "gz_bomb":  # an honest header, then far more zeros than it declares
            raw = raw + bytes(variant[2])
        return {rel: gzip.compress(raw, compresslevel=1, mtime=0) if gz else raw}
    return real


def load_mnist(folder, shared):
    from probe.data.mnist import load_mnist as load
    return check_sets(load(folder))


def load_idx(folder, shared):
    """Raw IDX files through both readers: MNIST's (28×28, labels 0..9) and your own set's."""
    from probe.data.idx import load_idx as load
    from probe.data.mnist import load_mnist as load_m
    from probe.errors import ProbeError
    n, refused = 0, []
    for read in (lambda: load_m(folder), lambda: load(None, folder)):
        try:
            n += check_sets(read())
        except ProbeError as e:  # the other reader is still tried; anything else goes up as it is
            refused.append(e)
    if refused:
        raise refused[0]
    return n


# ---- CIFAR-10: the pickled batches, in a folder and in the tar.gz ------------------------------

CIFAR_FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
               "test_batch", "batches.meta"]
HOSTILE_GLOBALS = [("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"), ("numpy", "dtype"),
                   ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode"), ("os", "system"),
                   ("builtins", "eval"), ("numpy", "frombuffer"), ("numpy.core.multiarray", "scalar"),
                   ("builtins", "getattr"), ("copyreg", "_reconstructor"), ("numpy", "matrix")]
OPCODES = [b"\x81", b"R", b"b", b"2", b"0", b"(", b"e", b"u", b"s", b"a", b"t", b".", b"\x8c", b"\x95",
           b"c", b"\x93", b"i", b"o", b"P", b"Q", b"\x82", b"l", b"d", b"}", b"]", b")", b"N", b"\x85",
           b"\x86", b"\x87", b"1", b"h", b"g", b"p", b"q", b"\x94", b"\x8f", b"\x90", b"\x91", b"\x97"]


def _g(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _i(i: int) -> bytes:
    return b"J" + i.to_bytes(4, "little", signed=True)


_U1 = _g("numpy", "dtype") + b"U\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"


def _batch(data_ops: bytes, n_labels: int) -> bytes:
    return b"\x80\x02}(U\x04data" + data_ops + b"U\x06labels](K\x00" + b"2" * (n_labels - 1) + b"eu."


# Hand-made hostile batches: allocations a pickle does not hold, arrays it may not build.
CRAFTED_PICKLES = [
    _batch(_g("numpy", "ndarray") + _i(2000) + _i(3072) + b"\x86" + _U1 + b"\x86R", 2000),
    _batch(_g("numpy", "ndarray") + b"(" + _i(250000) + _i(3072) + b"\x86\x85\x81", 2),
    _batch(_g("numpy.core.multiarray", "_reconstruct") + _g("numpy", "ndarray") + _i(10 ** 9) + b"\x85U\x01b\x87R", 1),
    _batch(_g("numpy.core.multiarray", "_reconstruct") + _g("numpy", "ndarray") + b"K\x00\x85U\x01b\x87R"
           + b"(K\x01" + _i(10 ** 8) + b"K\x01\x86" + _g("numpy", "dtype") + b"U\x01OK\x00K\x01\x87R\x89]tb", 1),
    _batch(_g("numpy.core.multiarray", "_reconstruct") + _g("numpy", "ndarray") + b"K\x00\x85U\x01b\x87R"
           + b"(K\x01K\x01K\x01\x86" + _g("numpy", "dtype") + b"U\x02i8K\x00K\x01\x87R"
           + b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x01tb\x89U\x08AAAAAAAAtb", 1),
    b"\x80\x02" + _g("numpy", "ndarray") + b"q\x01" + _i(64) + b"\x85" + _U1 + b"\x86q\x020" + b"h\x01h\x02R0" * 5000 + b"].",
    b"\x80\x02" + b"(" * 100_000 + b"]" + b"l" * 100_000 + b".",
    b"\x80\x02]" + b"(" + b"K\x00" + b"2" * 100_000 + b"e" + b".",
    b"\x80\x04\x95" + (2 ** 62).to_bytes(8, "little") + b"}.",
    b"\x80\x02\x8a\x08" + b"\xff" * 8 + b".",
    b"\x80\x02X" + (2 ** 31).to_bytes(4, "little") + b"abc.",
    b"\x80\x02L" + b"9" * 100_000 + b"L\n.",
]


# Every batch file of the set replaced by one that declares many images it does not hold (the
# issue's six small files declaring 1.5 million images, 4.3 GiB): ndarray through REDUCE, labels
# by DUP so that the counts agree.
CRAFTED_SETS = [
    _batch(_g("numpy", "ndarray") + _i(250_000) + _i(3072) + b"\x86" + _U1 + b"\x86R", 250_000),
    _batch(_g("numpy", "ndarray") + _i(100_000) + _i(3072) + b"\x86" + _U1 + b"\x86R", 100_000),
]


def _pickle_ops(raw: bytes):
    try:
        return list(pickletools.genops(raw))
    except Exception:
        return []


def _encode_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -2 ** 31 <= value < 2 ** 31:
        return b"J" + struct.pack("<i", value)
    enc = pickle.encode_long(value)
    return b"\x8a" + bytes([len(enc)]) + enc


def mutate_pickle(raw: bytes, variant) -> bytes:
    """The pickle-aware mutations: an int, a string's length, an opcode or a global rewritten."""
    kind = variant[0]
    ops = _pickle_ops(raw)
    if not ops:
        return raw
    ends = [pos for _, _, pos in ops[1:]] + [len(raw)]
    if kind == "pickle_int":
        ints = [(pos, end) for (op, arg, pos), end in zip(ops, ends) if op.name in ("BININT", "BININT1", "BININT2", "LONG1")]
        if ints:
            pos, end = ints[variant[2] % len(ints)]
            return raw[:pos] + _encode_int(variant[3]) + raw[end:]
    elif kind == "pickle_len":
        strs = [(op, pos) for op, arg, pos in ops if op.name in ("BINSTRING", "SHORT_BINSTRING", "BINUNICODE",
                                                                 "BINBYTES", "SHORT_BINBYTES")]
        if strs:
            op, pos = strs[variant[2] % len(strs)]
            width = 1 if op.name.startswith("SHORT") else 4
            value = variant[3] % (256 ** width)
            return raw[:pos + 1] + value.to_bytes(width, "little") + raw[pos + 1 + width:]
    elif kind == "pickle_op":
        pos = ops[variant[2] % len(ops)][2]
        return raw[:pos] + variant[3] + raw[pos + 1:]
    elif kind == "pickle_global":
        globs = [(pos, end) for (op, arg, pos), end in zip(ops, ends) if op.name == "GLOBAL"]
        if globs:
            pos, end = globs[variant[2] % len(globs)]
            return raw[:pos] + _g(*variant[3]) + raw[end:]
    elif kind == "pickle_cut":  # everything after the k-th opcode dropped, then STOP
        pos = ops[variant[2] % len(ops)][2]
        return raw[:pos] + b"."
    return raw


def _pickle_variant(file):
    return st.one_of(
        st.tuples(st.just("pickle_int"), file, st.integers(0, 100),
                  st.one_of(st.sampled_from(INTERESTING_U32 + INTERESTING_U64 + (-1, -2 ** 31, 10, 3072, 3073, 9, 11)),
                            st.integers(-2 ** 80, 2 ** 80))),
        st.tuples(st.just("pickle_len"), file, st.integers(0, 100), st.sampled_from(INTERESTING_U32)),
        st.tuples(st.just("pickle_op"), file, st.integers(0, 10 ** 6), st.sampled_from(OPCODES)),
        st.tuples(st.just("pickle_global"), file, st.integers(0, 10), st.sampled_from(HOSTILE_GLOBALS)),
        st.tuples(st.just("pickle_cut"), file, st.integers(0, 10 ** 6)),
        st.tuples(st.just("crafted"), file, st.integers(0, len(CRAFTED_PICKLES) - 1)),
    )


def _realize_cifar_folder(variant, files, shared):
    if variant[0] == "crafted_set":
        return {"cifar-10-batches-py/" + f: CRAFTED_SETS[variant[2]] for f in CIFAR_FILES[:6]}
    rel = "cifar-10-batches-py/" + CIFAR_FILES[variant[1]]
    if variant[0] == "crafted":
        return {rel: CRAFTED_PICKLES[variant[2]]}
    return {rel: mutate_pickle(files[rel], variant)}


def load_cifar(folder, shared):
    from probe.data.cifar10 import load_cifar10
    return check_sets(load_cifar10(folder))


TAR = "cifar-10-python.tar.gz"
TAR_TYPES = (b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"L", b"K", b"x", b"g", b"S", b"D", b"V", b"\x00")


def _tar_members(tar_bytes: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as t:
        return [m.offset for m in t.getmembers()]


def _set_field(header: bytearray, start: int, width: int, value: bytes) -> None:
    header[start:start + width] = value[:width].ljust(width, b"\x00")


def _fix_checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)


def _size_field(value: int) -> bytes:
    if value < 8 ** 11:
        return b"%011o\x00" % value
    return b"\x80" + value.to_bytes(11, "big")  # GNU base-256 for what octal cannot say


def _realize_cifar_tar(variant, files, shared):
    tgz = files[TAR]
    kind = variant[0]
    tar = gzip.decompress(tgz)
    if kind == "inner":
        tar = apply_bytes(tar, variant[1])
    elif kind == "tar_field":
        _, k, fld, value = variant
        offsets = _tar_members(tar)
        off = offsets[k % len(offsets)]
        header = bytearray(tar[off:off + 512])
        if fld == "size":
            _set_field(header, 124, 12, _size_field(value))
        elif fld == "type":
            header[156:157] = value
        elif fld == "name":
            _set_field(header, 0, 100, value)
        elif fld == "link":
            _set_field(header, 157, 100, value)
        elif fld == "mode":
            _set_field(header, 100, 8, value)
        if fld != "chksum":
            _fix_checksum(header)
        else:
            header[148:156] = b"%06o\x00 " % value
        tar = tar[:off] + bytes(header) + tar[off + 512:]
    elif kind in ("member", "member_crafted"):
        name = CIFAR_FILES[variant[1]]
        out = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as src, tarfile.open(fileobj=out, mode="w:") as dst:
            for m in src.getmembers():
                data = src.extractfile(m).read() if m.isfile() else None
                if m.name.endswith("/" + name) and data is not None:
                    inner = variant[2]
                    data = (CRAFTED_PICKLES[inner] if kind == "member_crafted"
                            else CRAFTED_PICKLES[inner[2]] if inner[0] == "crafted"
                            else mutate_pickle(data, inner) if inner[0].startswith("pickle")
                            else apply_bytes(data, inner[1]))
                    m.size = len(data)
                dst.addfile(m, io.BytesIO(data) if data is not None else None)
        tar = out.getvalue()
    elif kind == "extra":  # an added member: a link, a device, a path outside, a second copy, a huge one
        out = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as src, tarfile.open(fileobj=out, mode="w:") as dst:
            extra = tarfile.TarInfo(variant[2])
            extra.type = variant[1]
            extra.linkname = "/etc/passwd" if variant[1] in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            body = b"x" * 100 if variant[1] == tarfile.REGTYPE else None
            extra.size = len(body) if body else 0
            dst.addfile(extra, io.BytesIO(body) if body else None)
            for m in src.getmembers():
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        tar = out.getvalue()
    elif kind == "recompress_only":
        pass
    return {TAR: apply_bytes(tgz, variant[1]) if kind == "gz" else gzip.compress(tar, compresslevel=1, mtime=0)}


def _tar_own():
    inner_names = st.sampled_from(["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch",
                                   "../escape", "/etc/x", "cifar-10-batches-py/../../x",
                                   "cifar-10-batches-py/batches.meta", "cifar-10-batches-py"])
    file = st.integers(0, len(CIFAR_FILES) - 1)
    return [
        st.tuples(st.just("gz"), byte_ops()),
        st.tuples(st.just("inner"), byte_ops()),
        st.tuples(st.just("tar_field"), st.integers(0, 10), st.just("size"),
                  st.sampled_from(INTERESTING_U32 + INTERESTING_U64 + (7_000_000_000,))),
        st.tuples(st.just("tar_field"), st.integers(0, 10), st.just("type"), st.sampled_from(TAR_TYPES)),
        st.tuples(st.just("tar_field"), st.integers(0, 10), st.sampled_from(("name", "link")),
                  st.sampled_from((b"../x", b"/abs", b"cifar-10-batches-py/data_batch_1", b"", b"\xff\xfe",
                                   b"cifar-10-batches-py/test_batch", b"a" * 100))),
        st.tuples(st.just("tar_field"), st.integers(0, 10), st.just("mode"), st.sampled_from((b"7777777", b"0", b"zz"))),
        st.tuples(st.just("tar_field"), st.integers(0, 10), st.just("chksum"), st.integers(0, 8 ** 6 - 1)),
        st.tuples(st.just("member"), file, st.one_of(_pickle_variant(st.just(0)),
                                                     st.tuples(st.just("bytes"), byte_ops()))),
        st.tuples(st.just("member_crafted"), file, st.integers(0, len(CRAFTED_PICKLES) - 1)),
        st.tuples(st.just("extra"), st.sampled_from((tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                                                     tarfile.FIFOTYPE, tarfile.REGTYPE, tarfile.DIRTYPE)),
                  inner_names),
    ]


# ---- SFDDD: driver_imgs_list.csv and the JPEGs ----------------------------------------------------

SFDDD_CSV = "driver_imgs_list.csv"
SFDDD_JPEGS = [f"imgs/train/c{c}/img_{c}.jpg" for c in range(10)] + ["imgs/test/img_100000.jpg",
                                                                     "imgs/test/img_100001.jpg"]
CSV_LINES = [b"subject,classname,img", b"p002,c0,img_0.jpg", b"p002,c10,img_0.jpg", b"p002,c1,img_0.jpg",
             b"p002,c0", b"p002,c0,img_0.jpg,extra", b"\"p002,c0,img_0.jpg", b"", b"\x00,\x00,\x00",
             b"p002,c0,../../etc/passwd", b"p002,c0,/abs.jpg", b"p002,c0,img_\xff.jpg",
             b"p002,c0," + b"x" * 200_000, b"\xef\xbb\xbfsubject,classname,img", b"p\xe9,c3,img_3.jpg",
             b" p002 , c3 , img_3.jpg ", b"p002,C3,img_3.jpg", b"p002,c3,img_3.JPG", b"p002;c3;img_3.jpg"]


def _realize_sfddd_csv(variant, files, shared):
    lines = files[SFDDD_CSV].split(b"\n")
    kind = variant[0]
    i = variant[1] % max(len(lines), 1)
    if kind == "csv_line_set":
        lines[i] = CSV_LINES[variant[2]]
    elif kind == "csv_line_insert":
        lines.insert(i, CSV_LINES[variant[2]])
    elif kind == "csv_line_delete":
        del lines[i]
    elif kind == "csv_line_dup":
        lines.insert(i, lines[i])
    elif kind == "csv_crlf":
        return {SFDDD_CSV: b"\r\n".join(lines)}
    elif kind == "csv_encoding":
        return {SFDDD_CSV: files[SFDDD_CSV].decode().encode(variant[2], "replace")}
    return {SFDDD_CSV: b"\n".join(lines)}


def _sfddd_csv_own():
    line = st.integers(0, len(CSV_LINES) - 1)
    return [st.tuples(st.just("csv_line_set"), st.integers(0, 40), line),
            st.tuples(st.just("csv_line_insert"), st.integers(0, 40), line),
            st.tuples(st.just("csv_line_delete"), st.integers(0, 40)),
            st.tuples(st.just("csv_line_dup"), st.integers(0, 40)),
            st.tuples(st.just("csv_crlf"), st.integers(0, 0)),
            st.tuples(st.just("csv_encoding"), st.integers(0, 0),
                      st.sampled_from(("utf-16", "utf-32", "utf-8-sig", "latin-1")))]


def load_sfddd(folder, shared):
    from probe.data.sfddd import load_kaggle_test, load_labelled
    labelled, drivers = load_labelled(folder)
    check_imageset(labelled)
    assert len(drivers) == len(labelled)
    if (folder / "imgs" / "test").is_dir():
        check_imageset(load_kaggle_test(folder), "kaggle")
    return len(labelled)


# ---- images: JPEG, PNG, BMP header fields ------------------------------------------------------


def _jpeg_sof(data: bytes) -> int | None:
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        i = data.find(marker)
        if i >= 0:
            return i
    return None


def set_image_dims(data: bytes, width: int, height: int) -> bytes:
    """The header's width and height changed, the rest kept (PNG: the IHDR CRC made right)."""
    b = bytearray(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 33:
        b[16:20], b[20:24] = struct.pack(">I", width % 2 ** 32), struct.pack(">I", height % 2 ** 32)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    elif data[:2] == b"BM" and len(b) >= 26:
        b[18:22] = struct.pack("<i", max(-2 ** 31, min(width, 2 ** 31 - 1)))
        b[22:26] = struct.pack("<i", max(-2 ** 31, min(height, 2 ** 31 - 1)))
    else:
        i = _jpeg_sof(data)
        if i is not None and len(b) >= i + 9:
            b[i + 5:i + 7], b[i + 7:i + 9] = struct.pack(">H", height % 65536), struct.pack(">H", width % 65536)
    return bytes(b)


DIMS = (0, 1, 2, 3, 8, 28, 255, 4096, 30_000, 65_535, 65_536, 100_000, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, -1, -2 ** 31)


def other_image(kind: str) -> bytes:
    """A real image of another kind than the file's name says."""
    from PIL import Image
    img = Image.new("RGB" if kind != "L" else "L", (9, 7), 90)
    buf = io.BytesIO()
    fmt = {"L": "PNG", "rgba": "PNG", "gif": "GIF", "tiff": "TIFF", "webp": "WEBP", "bmp": "BMP",
           "jpeg": "JPEG", "ico": "ICO", "ppm": "PPM", "png16": "PNG"}[kind]
    if kind == "rgba":
        img = img.convert("RGBA")
    if kind == "png16":
        img = Image.new("I;16", (9, 7), 40000)
    img.save(buf, fmt)
    return buf.getvalue()


OTHER_IMAGES = ("L", "rgba", "gif", "tiff", "webp", "bmp", "jpeg", "ico", "ppm", "png16")


# Names a file may have on disk: bytes that are not UTF-8, a line break, right-to-left marks,
# markup, TeX, a leading dash or dot, upper-case or doubled extensions, 250 bytes.
HOSTILE_FILE_NAMES = (b"img_\xff.jpg", b"a\nb.jpg", b"\xe2\x80\xaegpj.exe.jpg", b"<b>x</b>.jpg", b"$x$ \\input.jpg",
                      b"-rf.jpg", b".hidden.jpg", b"x.JPG", b"x.jpg.gz", b"x" * 246 + b".jpg", b"\xc3\x28.jpg",
                      b"caf\xc3\xa9 \xe6\xbc\xa2.jpg", b"\x1b[31mred.jpg", b"img_100000.jpg", b"%n%s.jpg")


def _renamed(rel: str, name: bytes) -> str:
    """rel's file under `name`, with rel's extension (name's own when it has .gz)."""
    stem = name.rsplit(b".", 1)[0] if not name.endswith(b".gz") else name
    ext = rel.rsplit(".", 1)[1].encode() if not name.endswith(b".gz") else b""
    folder = rel.rsplit("/", 1)[0].encode() + b"/" if "/" in rel else b""
    return os.fsdecode(folder + stem + (b"." + ext if ext else b""))


def _image_own(n_files: int):
    file = st.integers(0, n_files - 1)
    return [st.tuples(st.just("rename"), file, st.sampled_from(HOSTILE_FILE_NAMES)),
            st.tuples(st.just("dims"), file, st.sampled_from(DIMS), st.sampled_from(DIMS)),
            st.tuples(st.just("dims"), file, st.sampled_from(DIMS), st.sampled_from(DIMS)),
            st.tuples(st.just("other_image"), file, st.sampled_from(OTHER_IMAGES)),
            st.tuples(st.just("image_cut"), file, st.integers(1, 400))]


def _realize_image(names):
    def real(variant, files, shared):
        rel = names[variant[1]]
        kind = variant[0]
        if kind == "dims":
            return {rel: set_image_dims(files[rel], variant[2], variant[3])}
        if kind == "other_image":
            return {rel: other_image(variant[2])}
        if kind == "image_cut":  # a header whole, the data cut short
            return {rel: files[rel][:variant[2]]}
        if kind == "rename":
            new = _renamed(rel, variant[2])
            return {rel: None, new: files[rel]} if new != rel else {}
        raise ValueError(kind)
    return real


def _realize_sfddd(variant, files, shared):
    if variant[0].startswith("csv"):
        return _realize_sfddd_csv(variant, files, shared)
    return _realize_image(SFDDD_JPEGS)(variant, files, shared)


# ---- your own images: an ImageFolder, and --image files -----------------------------------------

FOLDER_FILES = ["train/cat/a.png", "train/cat/b.jpg", "train/cat/c.bmp", "train/dog/d.png", "train/dog/e.jpg",
                "train/dog/f.png", "test/cat/g.png", "test/dog/h.jpg"]


def load_folder(folder, shared):
    from probe.data.folder import load_folder as load
    n = check_sets(load(None, folder))
    return n + check_sets(load(None, folder, size="6x5"))


USER_FILES = ["digit.png", "photo.jpg", "scan.bmp"]


def _user_paths(folder: Path) -> list[Path]:
    """The folder's files (a variant may have renamed one), else the first name (not there)."""
    return sorted(p for p in folder.iterdir() if p.is_file()) or [folder / USER_FILES[0]]


def load_user(folder, shared):
    from probe.data.spec import CIFAR10, MNIST, SFDDD
    from probe.data.user_images import load_user_images
    paths = _user_paths(folder)
    n = 0
    for spec in (MNIST, CIFAR10, SFDDD):
        for p in paths:
            got = load_user_images([p], spec)
            assert got.images.shape == (1, spec.channels, spec.height, spec.width), got.images.shape
            n += 1
    return n


# ---- a model folder: meta.json, history.json, weights.safetensors, resume.safetensors --------------

def _st_split(data: bytes):
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def _st_join(header: dict, body: bytes, raw_header: bytes | None = None) -> bytes:
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + body


ST_DTYPES = ("F32", "F64", "F16", "BF16", "I64", "I32", "U8", "BOOL", "F8_E4M3", "C64", "XX", "", 7, None)
ST_SHAPES = ([], [0], [1], [2 ** 40], [-1], [2 ** 63], [1, 2, 3, 4, 5, 6, 7, 8, 9], "16", [1.5], [[1]], None,
             [2 ** 31, 2 ** 31], [65536, 65536])
ST_OFFSETS = ([0, 0], [0, 2 ** 63], [10, 5], [-4, 0], [0], [0, 1, 2], "0", None, [0, 2 ** 40], [1.0, 5.0])


def _safetensors_own(file_indices):
    file = st.sampled_from(file_indices)
    return [
        st.tuples(st.just("st_len"), file, st.sampled_from(INTERESTING_U64 + (0, 1, 7, 9, 10 ** 8, 10 ** 9))),
        st.tuples(st.just("st_header"), file, mutate_json_strategy()),
        st.tuples(st.just("st_tensor"), file, st.integers(0, 1000), st.just("dtype"), st.sampled_from(ST_DTYPES)),
        st.tuples(st.just("st_tensor"), file, st.integers(0, 1000), st.just("shape"), st.sampled_from(ST_SHAPES)),
        st.tuples(st.just("st_tensor"), file, st.integers(0, 1000), st.just("data_offsets"), st.sampled_from(ST_OFFSETS)),
        st.tuples(st.just("st_data"), file, byte_ops()),  # the tensor bytes only: a NaN, a huge weight
        st.tuples(st.just("st_nan"), file, st.integers(0, 1000), st.sampled_from(("nan", "inf", "-inf", "1e38", "denormal"))),
    ]


def realize_safetensors(variant, data: bytes) -> bytes:
    kind = variant[0]
    if kind == "st_len":
        return variant[2].to_bytes(8, "little") + data[8:]
    header, body = _st_split(data)
    if kind == "st_header":
        raw = apply_json_variant(json.dumps(header).encode(), variant[2])
        return _st_join(None, body, raw)
    names = sorted(k for k in header if k != "__metadata__")
    if kind == "st_tensor":
        t = header[names[variant[2] % len(names)]]
        t[variant[3]] = variant[4]
        return _st_join(header, body)
    if kind == "st_data":
        return _st_join(header, apply_bytes(body, variant[2])[:len(body)].ljust(len(body), b"\x00"))
    if kind == "st_nan":
        floats = [n for n in names if header[n]["dtype"] == "F32" and header[n]["shape"]]
        if not floats:
            return data
        t = header[floats[variant[2] % len(floats)]]
        value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "1e38": 3e38, "denormal": 1e-45}[variant[3]]
        b = bytearray(body)
        b[t["data_offsets"][0]:t["data_offsets"][0] + 4] = struct.pack("<f", value)
        return _st_join(header, bytes(b))
    if kind == "st_state":  # resume: the training state, a JSON string in the metadata
        meta = header.get("__metadata__", {})
        meta["state"] = apply_json_variant(meta.get("state", "{}").encode(), variant[2]).decode("utf-8", "replace")
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
        return _st_join(None, body, raw)
    raise ValueError(kind)


MODEL_FILES = ["meta.json", "history.json", "weights.safetensors", "resume.safetensors"]


def load_meta(folder, shared):
    from probe.models.folder import load_model_folder, read_model_folder
    import torch
    f = read_model_folder(folder)
    f.history()
    model, _ = load_model_folder(folder)
    with torch.inference_mode():
        out = model(torch.zeros(1, *f.spec.input_shape))
    assert out.shape == (1, f.spec.num_classes)
    return 1


def load_history(folder, shared):
    from probe.analysis.base import Context
    from probe.analysis.curves import ANALYSIS
    from probe.models.folder import read_model_folder
    f = read_model_folder(folder)
    f.history()
    ctx = Context.of(None, folder=f)
    result = ANALYSIS.run(ctx, ANALYSIS.settings())
    ANALYSIS.section(result)
    ANALYSIS.summary(result)
    if shared.get("draw"):
        _draw(ANALYSIS.figures(result), folder)
    return 1


def _draw(figures: dict, folder: Path) -> None:
    from probe.figures.style import save_figure
    import matplotlib.pyplot as plt
    for stem, fig in figures.items():
        save_figure(fig, folder / "figures", stem)
        plt.close(fig)


def load_weights(folder, shared):
    return load_meta(folder, shared)


def load_resume(folder, shared):
    import torch
    from probe.models.folder import read_model_folder
    from probe.train import checkpoint as ckpt
    from probe.train.run import saved_config
    config = saved_config(folder)
    model_state, optim, state, rng = ckpt.load_resume(folder)
    f = read_model_folder(folder)
    model = f.load()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    ckpt.check_against(folder / ckpt.RESUME, model, opt, model_state, optim)
    return 1


# ---- the report cache: results.json + arrays.safetensors of each analysis ----------------------

CACHED = ["curves", "misclassified", "saliency", "fool-noise", "fool-dataset", "robustness"]
CACHE_FILES = [f"{a}/results.json" for a in CACHED] + [f"{a}/arrays.safetensors" for a in CACHED[1:]]  # curves: no arrays


def _realize_cache(variant, files, shared):
    rel = CACHE_FILES[variant[1]]
    if rel not in files:
        return {}
    return {rel: realize_safetensors(variant, files[rel])}


def load_cache(folder, shared):
    """What `probe report` does with a cached result (read_cached: the result, checked by making
    its section), then the section rendered as HTML."""
    from probe.analysis.registry import ANALYSES
    from probe.presentation import Report
    from probe.report.build import read_cached
    from probe.report.html import render_html
    n = 0
    changed = {rel.split("/")[0] for rel in shared.get("changed", ())}
    for name in [a for a in CACHED if a in changed] or CACHED:  # the analyses whose files the variant changed
        out = folder / name
        if not out.is_dir():
            continue
        entry = ANALYSES[name]
        result = read_cached(entry, out, ["tiny"])
        section = entry.section(result)
        html = render_html(Report("r", "s", [_strip_figures(section)], "today"))
        assert "</html>" in html
        if name in ("saliency", "misclassified") and shared.get("draw"):
            # what the comparison of two models makes of cached results: beside the honest one
            from probe.models.folder import read_model_folder
            from probe.report.structure import comparison_section
            mf = read_model_folder(shared["model"])
            honest = read_cached(entry, shared["base"] / "cache" / name, ["tiny"])
            comparison_section([mf, mf], per_model=[{name: honest}, {name: result}], out=folder / "comparison")
        n += 1
    return n


def _strip_figures(section):
    from probe.presentation import FigureRef, Section
    return Section(section.title, section.anchor,
                   [_strip_figures(c) if isinstance(c, Section) else c for c in section.children
                    if not isinstance(c, FigureRef)])


# ---- the formats ---------------------------------------------------------------------------------

def _data_check(dataset: str):
    return lambda folder, shared: ["data", "check", "--dataset", dataset, "--data-dir", str(folder)]


def _predict_image(folder, shared):
    return ["predict", "--model", str(shared["model"]), "--image", *map(str, _user_paths(folder))]


def _predict_model(folder, shared):
    return ["predict", "--model", str(folder), "--image", str(shared["image"])]


def _meta_commands(folder, shared):
    """The listing (one bad folder is one line of it, exit 0) and a command that loads the model."""
    return [["models", "list", "--root", str(folder.parent)], _predict_model(folder, shared)]


def _resume(folder, shared):
    return ["train", "--resume", "--out", str(folder), "--data-dir", str(shared["data"])]


def _curves(folder, shared):
    return ["curves", str(folder), "--out", str(folder.parent / "curves-out")]


IDX_GZ = [f + ".gz" for f in IDX_FILES]
CIFAR_REL = ["cifar-10-batches-py/" + f for f in CIFAR_FILES]

FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("mnist-gz", "mnist-gz", IDX_GZ, load_mnist, _data_check("mnist"),
           own=_idx_own(True), realize_own=_realize_idx(True)),
    Format("idx-raw", "idx-raw", IDX_FILES, load_idx, _data_check("idx"),
           own=_idx_own(False), realize_own=_realize_idx(False)),
    Format("cifar-batches", "cifar-folder", CIFAR_REL, load_cifar, _data_check("cifar10"),
           own=[*[_pickle_variant(st.integers(0, len(CIFAR_FILES) - 1))] * 4,
                st.tuples(st.just("crafted_set"), st.just(0), st.integers(0, len(CRAFTED_SETS) - 1))],
           realize_own=_realize_cifar_folder),
    Format("cifar-tar.gz", "cifar-tar", [TAR], load_cifar, _data_check("cifar10"),
           own=_tar_own(), realize_own=_realize_cifar_tar),
    Format("sfddd-csv", "sfddd", [SFDDD_CSV], load_sfddd, _data_check("sfddd"),
           own=_sfddd_csv_own() * 2, realize_own=_realize_sfddd),
    Format("sfddd-jpeg", "sfddd", SFDDD_JPEGS, load_sfddd, _data_check("sfddd"),
           own=_image_own(len(SFDDD_JPEGS)), realize_own=_realize_image(SFDDD_JPEGS)),
    Format("folder-images", "folder", FOLDER_FILES, load_folder, _data_check("folder"),
           own=_image_own(len(FOLDER_FILES)), realize_own=_realize_image(FOLDER_FILES)),
    Format("user-images", "user", USER_FILES, load_user, _predict_image,
           own=_image_own(len(USER_FILES)), realize_own=_realize_image(USER_FILES)),
    Format("meta.json", "model/tiny", MODEL_FILES[:1], load_meta, _meta_commands, json_files=(0,)),
    Format("history.json", "model/tiny", MODEL_FILES[:2], load_history, _curves, json_files=(1,)),
    Format("weights.safetensors", "model/tiny", MODEL_FILES[2:3], load_weights, _predict_model,
           own=_safetensors_own([0]) * 2, realize_own=lambda v, files, s: {MODEL_FILES[2]: realize_safetensors(v, files[MODEL_FILES[2]])}),
    Format("resume.safetensors", "model/tiny", MODEL_FILES[3:4], load_resume, _resume,
           own=[*_safetensors_own([0]), *[st.tuples(st.just("st_state"), st.just(0), mutate_json_strategy())] * 4],
           realize_own=lambda v, files, s: {MODEL_FILES[3]: realize_safetensors(v, files[MODEL_FILES[3]])}),
    Format("report-cache", "cache", CACHE_FILES, load_cache, None,
           json_files=tuple(range(len(CACHED))),
           own=_safetensors_own(list(range(len(CACHED), len(CACHE_FILES)))), realize_own=_realize_cache,
           draw_every=2),
]}
FORMATS["history.json"].files = ["history.json"]
FORMATS["history.json"].json_files = (0,)
