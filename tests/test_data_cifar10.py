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
