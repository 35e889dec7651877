import gzip

import numpy as np
import pytest
import torch

from fixtures import idx_bytes, write_mnist
from probe.data.fetch import MNIST_URL, fetch_dataset
from probe.data.mnist import load_mnist
from probe.data.paths import resolve_data_dir
from probe.data.splits import load_splits
from probe.errors import DataError

REAL_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
REAL_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("gz", [True, False])
def test_load_gz_and_raw(tmp_path, gz):
    write_mnist(tmp_path, n_train=30, n_test=20, gz=gz)
    d = load_mnist(tmp_path)
    assert d["train"].images.shape == (30, 1, 28, 28) and d["train"].images.dtype == torch.uint8
    assert d["test"].images.shape == (20, 1, 28, 28)
    assert d["train"].labels.dtype == torch.int64
    assert d["train"].labels.tolist() == [i % 10 for i in range(30)]
    assert d["train"].images[:, 0, 0, 0].tolist() == list(range(30))  # row-major, in file order


def test_gz_and_raw_give_the_same(tmp_path):
    a = load_mnist(write_mnist(tmp_path / "a", gz=True))
    b = load_mnist(write_mnist(tmp_path / "b", gz=False))
    assert torch.equal(a["train"].images, b["train"].images)


def _break(folder, name, data: bytes):
    for p in folder.glob(name + "*"):
        p.unlink()
    (folder / (name + ".gz")).write_bytes(gzip.compress(data))


def test_truncated_file(tmp_path):
    write_mnist(tmp_path, n_train=30, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: truncated"):
        load_mnist(tmp_path)


def test_truncated_gz(tmp_path):
    write_mnist(tmp_path, n_train=30)
    raw = idx_bytes(np.zeros((30, 28, 28), np.uint8), 2051)
    _break(tmp_path, "train-images-idx3-ubyte", raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_mnist(tmp_path)


def test_corrupt_gz_stream(tmp_path):
    write_mnist(tmp_path, n_train=30)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # cut mid-stream
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


def test_wrong_magic(tmp_path):
    write_mnist(tmp_path, n_train=30)
    # A labels file where the images should be
    _break(tmp_path, "train-images-idx3-ubyte", idx_bytes(np.zeros(30, np.uint8), 2049))
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        load_mnist(tmp_path)


def test_declared_count_larger_than_file_is_caught_before_allocating(tmp_path):
    write_mnist(tmp_path, n_train=30, gz=False)
    images = np.zeros((30, 28, 28), np.uint8)
    # Claims 4 billion images: must fail on the size check, not on a 3 TB allocation.
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(images, 2051, count=4_000_000_000))
    with pytest.raises(DataError, match="declares 4,000,000,000 items"):
        load_mnist(tmp_path)
    # gzipped, the size is unknown until decompressed (a gzip bomb can deliver it): bounded first
    _break(tmp_path, "train-images-idx3-ubyte", idx_bytes(images, 2051, count=4_000_000_000))
    with pytest.raises(DataError, match="declares 4,000,000,000 items .* more than any MNIST file"):
        load_mnist(tmp_path)
    _break(tmp_path, "train-images-idx3-ubyte", idx_bytes(images, 2051, count=31))
    with pytest.raises(DataError, match="truncated"):
        load_mnist(tmp_path)


def test_file_longer_than_header(tmp_path):
    write_mnist(tmp_path, n_train=30)
    _break(tmp_path, "train-labels-idx1-ubyte", idx_bytes(np.zeros(31, np.uint8), 2049, count=30))
    with pytest.raises(DataError, match="longer than its header"):
        load_mnist(tmp_path)


def test_wrong_image_size(tmp_path):
    write_mnist(tmp_path, n_train=30)
    _break(tmp_path, "train-images-idx3-ubyte", idx_bytes(np.zeros((30, 32, 32), np.uint8), 2051))
    with pytest.raises(DataError, match=r"\(32, 32\), expected \(28, 28\)"):
        load_mnist(tmp_path)


def test_counts_disagree(tmp_path):
    write_mnist(tmp_path, n_train=30)
    _break(tmp_path, "train-labels-idx1-ubyte", idx_bytes(np.zeros(29, np.uint8), 2049))
    with pytest.raises(DataError, match="30 images but .* 29 labels"):
        load_mnist(tmp_path)


def test_label_out_of_range(tmp_path):
    write_mnist(tmp_path, n_train=30)
    _break(tmp_path, "train-labels-idx1-ubyte", idx_bytes(np.full(30, 10, np.uint8), 2049))
    with pytest.raises(DataError, match="label 10 outside 0..9"):
        load_mnist(tmp_path)


def test_missing_file(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\[.gz\] not found.*probe data fetch"):
        load_mnist(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("PROBE_DATA_DIR", raising=False)
    assert resolve_data_dir("mnist", None) == type(tmp_path)("data/mnist")
    monkeypatch.setenv("PROBE_DATA_DIR", str(tmp_path))
    assert resolve_data_dir("mnist", None) == tmp_path / "mnist"
    assert resolve_data_dir("mnist", tmp_path / "x") == tmp_path / "x"


def test_fetch_offline_says_what_to_do(tmp_path, monkeypatch):
    import probe.data.fetch as fetch

    def offline(url, timeout=None):
        raise fetch.urllib.error.URLError("network unreachable")

    monkeypatch.setattr(fetch, "urlopen", offline)
    with pytest.raises(DataError) as e:
        fetch_dataset("mnist", tmp_path / "m")
    msg = str(e.value)
    assert MNIST_URL in msg and "by hand" in msg and str(tmp_path / "m") in msg
    assert not list((tmp_path / "m").glob("*"))  # nothing half-written


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    import io

    import probe.data.fetch as fetch

    class Response(io.BytesIO):
        headers = {}

    monkeypatch.setattr(fetch, "urlopen", lambda url, timeout=None: Response(b"not mnist"))
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_dataset("mnist", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial file, no temp file


def test_fetch_skips_files_present(mnist_dir, monkeypatch):
    import probe.data.fetch as fetch

    monkeypatch.setattr(fetch, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    assert fetch_dataset("mnist", mnist_dir) == mnist_dir


def test_fetch_sfddd_points_to_kaggle(tmp_path):
    with pytest.raises(DataError, match="kaggle competitions download -c state-farm-distracted-driver-detection"):
        fetch_dataset("sfddd", tmp_path)


def test_real_mnist(real_mnist_dir):
    d = load_mnist(real_mnist_dir)
    assert d["train"].images.shape == (60_000, 1, 28, 28)
    assert d["test"].images.shape == (10_000, 1, 28, 28)
    assert d["train"].class_counts() == REAL_TRAIN
    assert d["test"].class_counts() == REAL_TEST
    s = load_splits("mnist", real_mnist_dir)
    assert [len(s[k]) for k in ("train", "val", "test")] == [55_000, 5_000, 10_000]


def test_fifo_named_like_an_idx_file_is_refused_not_waited_on(tmp_path):
    import os
    import threading
    write_mnist(tmp_path, n_train=30, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    os.mkfifo(tmp_path / "t10k-labels-idx1-ubyte")
    result = {}
    t = threading.Thread(target=lambda: result.update(e=_error(tmp_path)), daemon=True)
    t.start()
    t.join(timeout=30)  # without O_NONBLOCK the open waits for a writer forever
    assert not t.is_alive(), "load_mnist hangs on a FIFO"
    assert "t10k-labels-idx1-ubyte: is a FIFO (named pipe), not a regular file" in result["e"]


def _error(folder) -> str:
    try:
        load_mnist(folder)
    except DataError as e:
        return str(e)
    return "no error"
