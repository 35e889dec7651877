import pickle
import pickletools
import tarfile

import numpy as np
import pytest
import torch

from fixtures import Py2Pickle, cifar_batch, cifar_files, write_cifar_archive, write_cifar_folder
from probe.data.cifar10 import load_cifar10, unpickle_batch
from probe.data.fetch import CIFAR10_URL, fetch_dataset
from probe.errors import DataError


def _globals(raw: bytes) -> set[str]:
    return {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}


def test_fixture_is_a_python2_pickle():
    d, _ = cifar_batch(4, 1, b"training batch 1 of 5")
    raw = Py2Pickle.dumps(d)
    assert _globals(raw) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    # py2 str → bytes under encoding="bytes", as with the real files; plain pickle agrees on the content
    ref = pickle.loads(raw, encoding="bytes")
    assert list(ref) == [b"data", b"labels", b"batch_label", b"filenames"]
    assert np.array_equal(ref[b"data"], d[b"data"]) and ref[b"labels"] == d[b"labels"]


@pytest.mark.parametrize("source", ["archive", "folder", "batches-folder"])
def test_load(source, cifar_archive_dir, cifar_folder_dir):
    data_dir = {"archive": cifar_archive_dir, "folder": cifar_folder_dir,
                "batches-folder": cifar_folder_dir / "cifar-10-batches-py"}[source]
    d = load_cifar10(data_dir)
    assert d["train"].images.shape == (100, 3, 32, 32) and d["train"].images.dtype == torch.uint8
    assert d["test"].images.shape == (20, 3, 32, 32)
    # row i of batch 1 is image i: 1024 R values, then G, then B, each row-major 32×32
    batch1, data = cifar_batch(20, 1, b"")
    img = d["train"].images[3]
    assert img[0, 0, 5] == data[3, 5] and img[1, 0, 0] == data[3, 1024] and img[2, 31, 31] == data[3, 3071]
    assert d["train"].labels[:20].tolist() == batch1[b"labels"]
    assert d["train"].names[0] == "img_1_0000.png"


def test_archive_and_folder_agree(cifar_archive_dir, cifar_folder_dir):
    a, b = load_cifar10(cifar_archive_dir), load_cifar10(cifar_folder_dir)
    assert torch.equal(a["train"].images, b["train"].images) and torch.equal(a["test"].labels, b["test"].labels)


def test_python3_protocol2_pickle_loads(tmp_path):
    """A batch re-pickled by Python 3 (bytes via _codecs.encode, numpy._core) loads the same."""
    files = cifar_files()
    d = pickle.loads(files["data_batch_2"], encoding="bytes")
    files["data_batch_2"] = pickle.dumps(d, protocol=2)
    assert "_codecs encode" in _globals(files["data_batch_2"])
    assert any("_reconstruct" in g for g in _globals(files["data_batch_2"]))
    d2 = load_cifar10(write_cifar_folder(tmp_path, files))
    assert torch.equal(d2["train"].images[20:40].reshape(20, -1), torch.from_numpy(d[b"data"]))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a malicious batch does: call something on load
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["open", "os.system", "eval"])
def test_pickle_that_runs_code_is_refused(tmp_path, how):
    marker = tmp_path / "pwned"
    evil = {"open": _Evil(marker)}.get(how)
    if evil is None:
        call = {"os.system": f"touch {marker}", "eval": f"open({str(marker)!r}, 'w')"}[how]
        module, name = {"os.system": ("os", "system"), "eval": ("builtins", "eval")}[how]
        raw = (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + len(call).to_bytes(4, "little")
               + call.encode() + b"\x85R.")
    else:
        raw = pickle.dumps({b"data": evil}, protocol=2)
    files = cifar_files()
    files["data_batch_1"] = raw
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR-10 batch pickle \(refusing to load global"):
        load_cifar10(write_cifar_folder(tmp_path / "c", files))
    assert not marker.exists()


def test_codecs_encode_only_latin1():
    raw = pickle.dumps({b"x": b"y"}, protocol=2).replace(b"latin1", b"rot_13")
    with pytest.raises(DataError, match="not allowed"):
        unpickle_batch(raw, "batch")


def test_only_plain_arrays():
    raw = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R."
    with pytest.raises(DataError, match="holds a ndarray"):  # an array may be built, it is just not a batch
        unpickle_batch(raw, "batch")
    with pytest.raises(DataError, match="refusing to load global numpy.matrix"):
        unpickle_batch(raw.replace(b"cnumpy\nndarray\n", b"cnumpy\nmatrix\n"), "batch")


def test_tar_member_outside_folder_refused(tmp_path):
    info = tarfile.TarInfo("../escape")
    info.size = 1
    write_cifar_archive(tmp_path, extra=[info])
    with pytest.raises(DataError, match=r"member '../escape' points outside"):
        load_cifar10(tmp_path)
    assert not (tmp_path.parent / "escape").exists()


def test_tar_link_refused(tmp_path):
    link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    files = cifar_files()
    del files["data_batch_1"]
    write_cifar_archive(tmp_path, files, extra=[link])
    with pytest.raises(DataError, match="not a regular file"):
        load_cifar10(tmp_path)


def test_bad_batches(tmp_path):
    files = cifar_files()
    d, _ = cifar_batch(20, 3, b"")
    d[b"labels"] = d[b"labels"][:-1]
    files["data_batch_3"] = Py2Pickle.dumps(d)
    with pytest.raises(DataError, match="data_batch_3: 20 images but 19 labels"):
        load_cifar10(write_cifar_folder(tmp_path / "a", files))
    files = cifar_files()
    files["test_batch"] = files["test_batch"][:500]  # truncated
    with pytest.raises(DataError, match="test_batch: not a CIFAR-10 batch"):
        load_cifar10(write_cifar_folder(tmp_path / "b", files))
    files = cifar_files()
    del files["data_batch_5"]
    with pytest.raises(DataError, match="data_batch_5 is missing"):
        load_cifar10(write_cifar_folder(tmp_path / "c", files))
    with pytest.raises(DataError, match="no CIFAR-10 in"):
        load_cifar10(tmp_path / "empty")


def test_cifar100_meta_refused(tmp_path):
    files = cifar_files()
    files["batches.meta"] = Py2Pickle.dumps({b"label_names": [b"apple"] * 10})
    with pytest.raises(DataError, match="not CIFAR-10's"):
        load_cifar10(write_cifar_folder(tmp_path, files))


def test_not_a_tar(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match="cannot be read as a .tar.gz"):
        load_cifar10(tmp_path)


def test_fetch_offline(tmp_path, monkeypatch):
    import probe.data.fetch as fetch

    monkeypatch.setattr(fetch, "urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(DataError, match="by hand") as e:
        fetch_dataset("cifar10", tmp_path)
    assert CIFAR10_URL in str(e.value)


# ---- every array the restricted unpickler builds is bounded, however it is built (issue 18) -------

def _g(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()  # GLOBAL


def _i(i: int) -> bytes:
    return b"J" + i.to_bytes(4, "little", signed=True)  # BININT


_DTYPE_STATE = b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # the plain state, BUILD
_U1 = _g("numpy", "dtype") + b"U\x02u1K\x00K\x01\x87R" + _DTYPE_STATE  # dtype('u1', 0, 1), BUILD


def _batch(data_ops: bytes, n_labels: int) -> bytes:
    """{data: <data_ops>, labels: [0] * n_labels} with the labels spelled K 0 then DUP, DUP, ..."""
    labels = b"](K\x00" + b"2" * (n_labels - 1) + b"e"
    return b"\x80\x02}(U\x04data" + data_ops + b"U\x06labels" + labels + b"u."


def test_ndarray_called_through_reduce_is_bounded(tmp_path):
    """numpy.ndarray((n, 3072), uint8) through REDUCE allocates n × 3072 bytes that no pickle holds:
    six such files of ~2 KB declared 12,000 images (37 MB) and loaded."""
    raw = _batch(_g("numpy", "ndarray") + _i(2000) + _i(3072) + b"\x86" + _U1 + b"\x86R", 2000)
    assert len(raw) < 2200
    files = {name: raw for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                    "data_batch_5", "test_batch")}
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR-10 batch pickle \(it declares an "
                                        r"array of 6,144,000 bytes, more than the pickle holds\)"):
        load_cifar10(write_cifar_folder(tmp_path, files))


def test_ndarray_through_newobj_is_refused():
    """NEWOBJ calls numpy.ndarray.__new__(ndarray, shape): an allocation the C unpickler made unasked."""
    raw = _batch(_g("numpy", "ndarray") + b"(" + _i(2000) + _i(3072) + b"\x86\x85\x81", 2000)
    with pytest.raises(DataError, match=r"opcode b'\\x81' is not allowed"):
        unpickle_batch(raw, "batch")


def test_arrays_together_are_bounded_by_the_pickle():
    """Each array within the pickle's size, but one array per three bytes: memo GETs of the callable
    and its arguments, REDUCE, POP."""
    one = b"h\x01h\x02R0"  # BINGET ndarray, BINGET args, REDUCE, POP
    raw = (b"\x80\x02" + _g("numpy", "ndarray") + b"q\x01" + _i(64) + b"\x85" + _U1 + b"\x86q\x020"
           + one * 2000 + b"]." )
    with pytest.raises(DataError, match=r"it declares an array of 64 bytes, more than the pickle holds"):
        unpickle_batch(raw, "batch")


def _reconstructed(dtype_ops: bytes, data: bytes) -> bytes:
    # _reconstruct(ndarray, (0,), 'b'), then BUILD (1, (1, len(data) // 8), <dtype>, False, data)
    return (_g("numpy.core.multiarray", "_reconstruct") + _g("numpy", "ndarray") + b"K\x00\x85U\x01b\x87R"
            + b"(K\x01K\x01" + _i(len(data) // 8) + b"\x86" + dtype_ops + b"\x89U"
            + bytes([len(data)]) + data + b"tb")


@pytest.mark.parametrize("flags", [0x01, 0x04])
def test_dtype_state_that_would_make_bytes_pointers_is_refused(flags):
    """dtype.__setstate__ sets a uint8 dtype's flags; with NPY_ITEM_REFCOUNT (or IS_POINTER) numpy
    takes the array's bytes for object pointers (here 0x4141...: a crash, or a SystemError)."""
    dtype_ops = (_g("numpy", "dtype") + b"U\x02i8K\x00K\x01\x87R"
                 + b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK" + bytes([flags]) + b"tb")
    raw = _batch(_reconstructed(dtype_ops, b"A" * 8), 1)
    with pytest.raises(DataError, match=r"dtype state \(3, b'<', None, None, None, -1, -1, "
                                        rf"{flags}\) is not a plain type's"):
        unpickle_batch(raw, "batch")


@pytest.mark.parametrize("typecode", [b"O", b"V8", b"u1,u1", b"(2,)u1", b"M8"])
def test_only_plain_number_arrays(typecode):
    """Object arrays (their state is a list: numpy allocates shape × 8 bytes before reading it),
    structured, sub-array and datetime types are not what a batch holds."""
    raw = (_g("numpy.core.multiarray", "_reconstruct") + _g("numpy", "ndarray") + b"K\x00\x85U"
           + bytes([len(typecode)]) + typecode + b"\x87R")
    with pytest.raises(DataError, match=r"is not a plain number type"):
        unpickle_batch(b"\x80\x02" + _batch(raw, 1)[2:], "batch")


@pytest.mark.parametrize("op, where", [(b"(K\x01e", "APPENDS"), (b"K\x01K\x02s", "SETITEM")])
def test_appends_and_setitems_only_on_lists_and_dicts(op, where):
    """APPENDS/SETITEM call .extend/__setitem__ of whatever is on the stack: here an array."""
    arr = _g("numpy", "ndarray") + b"K\x04" + _U1 + b"\x86R"  # ndarray(4, uint8)
    raw = b"\x80\x02" + arr + op + b"."
    with pytest.raises(DataError, match=where):
        unpickle_batch(raw, "batch")


def test_batch_of_more_images_than_cifar_has(tmp_path, monkeypatch):
    import probe.data.cifar10 as cifar10
    monkeypatch.setattr(cifar10, "MAX_BATCH_IMAGES", 19)  # the fixture's batches hold 20
    with pytest.raises(DataError, match=r"data_batch_1: 20 images, more than a CIFAR-10 batch holds \(19\)"):
        load_cifar10(write_cifar_folder(tmp_path))


def test_real_batch_state_still_loads():
    """Python 2's batch, and Python 3's protocol 2 and 4 pickles of a batch, load the same."""
    d, data = cifar_batch(5, 3, b"x")
    for raw in (Py2Pickle.dumps(d), pickle.dumps(d, protocol=2), pickle.dumps(d, protocol=4)):
        out = unpickle_batch(raw, "b")
        assert np.array_equal(out["data"], data) and out["labels"] == d[b"labels"]


def test_messages_of_damaged_batches_are_one_line(tmp_path):
    """Found by the fuzz suite: a global's name with a line break in it (b'\\r\\n' inserted into
    'numpy.core') went into the message as it was: an error of two lines."""
    files = cifar_files()
    raw = files["test_batch"]
    files["test_batch"] = raw.replace(b"numpy.core", b"numpy.\r\ncore", 1)
    with pytest.raises(DataError) as e:
        load_cifar10(write_cifar_folder(tmp_path, files))
    assert "refusing to load global numpy.\\r.core.multiarray" in str(e.value)  # GLOBAL's module ends at the \\n
    assert "\n" not in str(e.value) and "\r" not in str(e.value)


def test_archive_whose_member_data_is_damaged(tmp_path):
    """Found by the fuzz suite: deflate data damaged inside a member (33 bytes deleted at 18,040 of
    the .tar.gz) raised zlib.error from the member's read, which nothing turned into a DataError."""
    write_cifar_archive(tmp_path)
    path = tmp_path / "cifar-10-python.tar.gz"
    data = path.read_bytes()
    path.write_bytes(data[:18040] + data[18073:])
    with pytest.raises(DataError, match=r"cannot be read as a .tar.gz \(.*Error -3 while decompressing"):
        load_cifar10(tmp_path)
