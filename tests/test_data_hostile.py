"""Hostile and broken dataset files (issue 6): sizes bounded before anything grows, only regular
files read, Ctrl-C ends decoding at once, absent classes refused, checks that survive `python -O`.

| input                                                 | message                                   |
|-------------------------------------------------------|-------------------------------------------|
| tar member declaring 7 GB                             | member ... declares 7,000,000,000 bytes   |
| batch file bigger than any batch                      | more than any CIFAR-10 batch              |
| labels = lists of the same list (memo refs), 10^7     | billion laughs                            |
| the same through DUP and LIST, 10^7                   | billion laughs                            |
| labels holding itself                                 | a container holds itself                  |
| _reconstruct of a 10^12-byte array                    | an array of 1,000,000,000,000 bytes       |
| a FIFO named data_batch_1 / img_9.jpg / the CSV       | is a FIFO (named pipe), not a regular file|
| SFDDD without c3 (no images, no rows)                 | no images of 1 class(es): c3 (texting_left)|
"""
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import probe.data.sfddd as sfddd
from fixtures import cifar_files, write_cifar_folder
from probe.data.cifar10 import expanded_size, load_cifar10, unpickle_batch
from probe.data.check import check_dataset
from probe.data.imageset import ImageSet
from probe.data.spec import MNIST, SFDDD
from probe.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]


# ---- CIFAR-10: sizes ---------------------------------------------------------------------------

def _gz_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A .tar.gz written header by header, so a header may claim far more than follows it."""
    import gzip
    raw = bytearray()
    for info, data in members:
        raw += info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512)
    path.write_bytes(gzip.compress(bytes(raw + b"\0" * 1024), mtime=0))
    return path


def test_tar_member_declaring_7gb_is_refused_before_reading(tmp_path):
    folder = tarfile.TarInfo("cifar-10-batches-py")
    folder.type = tarfile.DIRTYPE
    huge = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    huge.size = 7_000_000_000  # the header's claim; only 4 KB follow
    _gz_tar(tmp_path / "cifar-10-python.tar.gz", [(folder, b""), (huge, b"\0" * 4096)])
    with pytest.raises(DataError, match=r"member 'cifar-10-batches-py/data_batch_1' declares "
                                         r"7,000,000,000 bytes, more than any CIFAR-10 batch"):
        load_cifar10(tmp_path)


def test_batch_file_bigger_than_any_batch_is_refused_unread(tmp_path, monkeypatch):
    import probe.data.cifar10 as cifar10
    write_cifar_folder(tmp_path)
    monkeypatch.setattr(cifar10, "MAX_BATCH_BYTES", 1000)  # the fixture's batches are ~62 KB
    with pytest.raises(DataError, match=r"data_batch_1: [\d,]+ bytes, more than any CIFAR-10 batch"):
        load_cifar10(tmp_path)


def _batch_with_labels(labels_ops: bytes) -> bytes:
    """A real protocol-2 batch {data: (10, 3072) uint8}, then SETITEM "labels" ← labels_ops."""
    head = pickle.dumps({b"data": np.zeros((10, 3072), np.uint8)}, protocol=2)[:-1]  # drop STOP
    return head + b"X\x06\x00\x00\x00labels" + labels_ops + b"s."


def _laughs_memo(levels: int) -> bytes:
    leaf = [0] * 10
    for _ in range(levels - 1):
        leaf = [leaf] * 10  # the same list ten times: pickled once, then memo references (BINGET)
    return pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": leaf}, protocol=2)


def _laughs_dup(levels: int) -> bytes:
    # MARK×levels, 0, then per level: DUP×9 and LIST → ten references to the list below.
    return _batch_with_labels(b"(" * levels + b"K\x00" + (b"2" * 9 + b"l") * levels)


HOSTILE_PICKLES = [
    ("memo billion laughs", lambda: _laughs_memo(7), r"billion laughs"),
    ("DUP billion laughs", lambda: _laughs_dup(7), r"billion laughs"),
    ("list holding itself", lambda: _batch_with_labels(b"]r\x00\x10\x00\x00j\x00\x10\x00\x00a"), r"holds itself"),
    ("10^12-byte array", lambda: (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                                  b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85U\x01b\x87R."),
     r"an array of 1,000,000,000,000 bytes"),
    ("array shape not sizes", lambda: (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                                       b"U\x01x\x85U\x01b\x87R."), r"array shape .* not a tuple of sizes"),
]


@pytest.mark.parametrize("what, make, message", HOSTILE_PICKLES, ids=[h[0] for h in HOSTILE_PICKLES])
def test_hostile_batch_pickles_are_data_errors(tmp_path, what, make, message):
    raw = make()
    assert len(raw) < 40_000  # all of them are small files
    files = cifar_files()
    files["data_batch_2"] = raw
    t = time.perf_counter()
    with pytest.raises(DataError, match=rf"data_batch_2: not a CIFAR-10 batch pickle \(.*{message}"):
        load_cifar10(write_cifar_folder(tmp_path, files))
    assert time.perf_counter() - t < 20


def test_laughs_are_counted_without_expanding_them():
    big = [0] * 10
    for _ in range(29):
        big = [big] * 10  # 10^30 elements as written out, 300 objects in memory
    with pytest.raises(ValueError, match="more than 1,000 elements"):
        expanded_size(big, limit=1000)
    shared = ["x"] * 5
    assert expanded_size({"a": shared, "b": shared}, limit=100) == 1 + 2 + 2 * 6
    deep = []
    for _ in range(100_000):  # deeper than the recursion limit: the walk is iterative
        deep = [deep]
    assert expanded_size(deep, limit=10 ** 6) == 100_001


def test_real_batches_are_far_inside_the_bounds(cifar_folder_dir):
    raw = (cifar_folder_dir / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    d = unpickle_batch(raw, "b")
    assert expanded_size({k.encode(): v for k, v in d.items()}, len(raw)) < len(raw) / 10


# ---- regular files only -----------------------------------------------------------------------

def _in_thread(fn, timeout: float = 60):
    """fn() in a daemon thread: its result or exception, or a failure if it is still blocked."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} blocked for {timeout} s"
    return out


def test_cifar_fifo_batch_is_refused_by_name(tmp_path):
    write_cifar_folder(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.unlink()
    os.mkfifo(batch)
    out = _in_thread(lambda: load_cifar10(tmp_path))
    assert isinstance(out.get("error"), DataError)
    assert "data_batch_1: is a FIFO (named pipe), not a regular file" in str(out["error"])


FIFO_CASES = [("imgs/train/c3/img_fifo.jpg", "load_labelled"), ("imgs/test/img_fifo.jpg", "load_kaggle_test"),
              ("driver_imgs_list.csv", "load_labelled")]
# What needs an interpreter of its own, in one `python -O` subprocess (each costs a second of
# imports): loading SFDDD folders holding a FIFO (a blocked pool thread would also block the
# interpreter's exit, so a timeout catches it) and ImageSet's checks with asserts stripped.
_CHILD = """import sys
import torch
from probe.data.imageset import ImageSet
from probe.data.sfddd import load_labelled, load_kaggle_test
from probe.data.spec import MNIST
from probe.errors import DataError
try:
    ImageSet(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), MNIST)
    print("imageset: accepted")
except Exception as e:
    print("imageset:", type(e).__name__)
for k, (fn, folder) in enumerate(zip(sys.argv[1::2], sys.argv[2::2])):
    try:
        globals()[fn](folder)
        print(f"fifo {k}: loaded")
    except DataError as e:
        print(f"fifo {k}:", e)
"""


@pytest.fixture(scope="module")
def own_interpreter(sfddd_master, tmp_path_factory):
    args = []
    for k, (where, fn) in enumerate(FIFO_CASES):
        folder = Path(shutil.copytree(sfddd_master, tmp_path_factory.mktemp("fifo") / "sfddd",
                                      ignore=shutil.ignore_patterns(".probe-cache")))
        path = folder / where
        if path.exists():
            path.unlink()
        os.mkfifo(path)
        if where.startswith("imgs/train"):
            with open(folder / "driver_imgs_list.csv", "a") as f:
                f.write("p002,c3,img_fifo.jpg\n")
        args += [fn, str(folder)]
    r = subprocess.run([sys.executable, "-O", "-c", _CHILD, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    return dict(line.split(": ", 1) for line in r.stdout.splitlines())


@pytest.mark.parametrize("k", range(len(FIFO_CASES)), ids=[w for w, _ in FIFO_CASES])
def test_sfddd_fifo_is_refused_not_waited_on(own_interpreter, k):
    """A FIFO named .jpg and listed in the CSV used to block a decoding thread forever."""
    name = Path(FIFO_CASES[k][0]).name
    assert f"{name}: is a FIFO (named pipe), not a regular file" in own_interpreter[f"fifo {k}"], own_interpreter


def test_decode_jpeg_refuses_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "img_1.jpg"
    os.mkfifo(fifo)
    out = _in_thread(lambda: sfddd.decode_jpeg(fifo), timeout=30)  # open() alone would block
    assert "is a FIFO" in str(out.get("error"))


class _CtrlCBar:
    """A progress bar whose first advance() is where Ctrl-C lands: in the main thread, between
    two results, as a real KeyboardInterrupt does."""

    def __init__(self, *a, **k):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def advance(self, task):
        raise KeyboardInterrupt


def test_ctrl_c_ends_decoding_at_once(sfddd_dir, monkeypatch):
    """Ctrl-C while a decode is stuck (a stalled read) and 198 more are queued: load_images
    raises at once, the queue is cancelled. The `with ThreadPoolExecutor` block it replaces
    waited for the stuck decode, so the first Ctrl-C seemed to do nothing."""
    calls, stuck = [], threading.Event()

    def decode(path):
        calls.append(path)
        if len(calls) == 2:
            stuck.wait(30)  # released at the end of the test
        time.sleep(0.05)
        return np.zeros((3, 48, 64), np.uint8)

    monkeypatch.setattr(sfddd, "decode_jpeg", decode)
    monkeypatch.setattr(sfddd, "progress", _CtrlCBar)
    base = sfddd_dir / "imgs" / "train"
    rel = sorted(str(p.relative_to(base)) for p in base.glob("*/*.jpg"))  # 200 images
    t = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            sfddd.load_images(sfddd_dir, base, rel, "train", workers=2)
        assert time.perf_counter() - t < 10
    finally:
        stuck.set()
    assert len(calls) < 50  # the queue was cancelled, not decoded
    assert not list((sfddd_dir / ".probe-cache").glob("*.npy"))  # nothing half-done cached


def test_a_bad_jpeg_stops_the_other_decodes(sfddd_dir, monkeypatch):
    calls = []

    def decode(path):
        calls.append(path)
        if len(calls) == 1:
            raise sfddd.DataError(f"{path}: not a readable JPEG")
        time.sleep(0.1)
        return np.zeros((3, 48, 64), np.uint8)

    monkeypatch.setattr(sfddd, "decode_jpeg", decode)
    base = sfddd_dir / "imgs" / "train"
    rel = sorted(str(p.relative_to(base)) for p in base.glob("*/*.jpg"))
    with pytest.raises(DataError, match="not a readable JPEG"):
        sfddd.load_images(sfddd_dir, base, rel, "train", workers=2)
    assert len(calls) < 20


# ---- every class present ----------------------------------------------------------------------

def _drop_class(folder: Path, code: str) -> None:
    for p in (folder / "imgs" / "train" / code).glob("*.jpg"):
        p.unlink()
    csv_path = folder / "driver_imgs_list.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text("".join(l for l in lines if f",{code}," not in l))


def test_sfddd_without_a_class_is_refused(sfddd_dir, monkeypatch):
    _drop_class(sfddd_dir, "c3")
    monkeypatch.setattr(sfddd, "decode_jpeg", lambda p: pytest.fail("decoded before the check"))
    with pytest.raises(DataError, match=r"no images of 1 class\(es\): c3 \(texting_left\)"):
        sfddd.load_labelled(sfddd_dir)


def test_training_split_without_a_class_is_refused(tmp_path):
    from fixtures import write_mnist
    from probe.data.splits import load_splits
    import gzip
    write_mnist(tmp_path, n_train=100)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[8:] = bytes(b if b != 7 else 1 for b in raw[8:])  # no 7s left
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match=r"mnist training split .*no images of 1 class\(es\): 7"):
        load_splits("mnist", tmp_path)
    assert len(load_splits("mnist", tmp_path, splits=("test",))["test"]) == 50  # other splits load


def test_data_check_counts_the_kaggle_test_images(sfddd_master):
    r = check_dataset("sfddd", sfddd_master)  # no splits asked: imgs/test is counted too
    assert r["splits"]["kaggle"]["count"] == 6 and r["splits"]["kaggle"]["unlabelled"] == 6
    assert sum(r["splits"][s]["count"] for s in ("train", "val", "test")) == 200


# ---- ImageSet: real checks ---------------------------------------------------------------------

def _x(n=4, c=1, h=28, w=28, dtype=torch.uint8):
    return torch.zeros(n, c, h, w, dtype=dtype)


BAD_IMAGESETS = [
    ("float images", lambda: ImageSet(_x(dtype=torch.float32), torch.zeros(4, dtype=torch.long), MNIST),
     DataError, r"uint8 \(N, C, H, W\) tensor, not torch.float32"),
    ("3-D images", lambda: ImageSet(torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), MNIST),
     DataError, r"uint8 \(N, C, H, W\)"),
    ("a numpy array", lambda: ImageSet(np.zeros((4, 1, 28, 28), np.uint8), torch.zeros(4, dtype=torch.long), MNIST),
     DataError, "not ndarray"),
    ("wrong channels", lambda: ImageSet(_x(c=3), torch.zeros(4, dtype=torch.long), MNIST),
     DataError, r"shape \(3, 28, 28\), expected \(1, 28, 28\)"),
    ("int32 labels", lambda: ImageSet(_x(), torch.zeros(4, dtype=torch.int32), MNIST),
     DataError, "int64 \\(N,\\) tensor"),
    ("fewer labels", lambda: ImageSet(_x(), torch.zeros(3, dtype=torch.long), MNIST),
     DataError, "4 images but 3 labels"),
    ("label 10 of 10 classes", lambda: ImageSet(_x(), torch.tensor([0, 1, 2, 10]), MNIST),
     DataError, r"labels outside -1..9 \(found 0..10\)"),
    ("names of another length", lambda: ImageSet(_x(), torch.zeros(4, dtype=torch.long), MNIST, ["a"]),
     DataError, "4 images but 1 names"),
    ("no spec", lambda: ImageSet(_x(), torch.zeros(4, dtype=torch.long), "mnist"),
     ConfigError, "needs a DatasetSpec"),
]


@pytest.mark.parametrize("what, make, error, message", BAD_IMAGESETS, ids=[b[0] for b in BAD_IMAGESETS])
def test_bad_imagesets(what, make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_imageset_checks_survive_python_O(own_interpreter):
    assert own_interpreter["imageset"] == "DataError"


def test_good_imagesets_still_build():
    s = ImageSet(_x(), torch.tensor([0, -1, 9, 3]), MNIST, list("abcd"))
    assert len(s.subset(torch.tensor([0, 2]))) == 2 and s.missing_classes() == [
        c for c in MNIST.classes if c not in ("0", "9", "3")]
    ImageSet(torch.zeros(0, 3, 48, 64, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), SFDDD)
