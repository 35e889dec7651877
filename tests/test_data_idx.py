"""Any set in MNIST's IDX format: `--dataset idx --data-dir DIR [--classes FILE]` (Fashion-MNIST,
KMNIST, EMNIST names, gz or raw, any image size): exact tensors and labels, class names, mean/std of
the training file, a model's spec reading the data again, every bad set as one line, and a tiny
model trained and evaluated on one."""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import idx_bytes
from probe.cli import main
from probe.data.idx import find_files, load_idx, role
from probe.data.imageset import channel_stats
from probe.data.splits import load_splits
from probe.errors import ConfigError, DataError

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def write_idx(folder: Path, names=("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
              n_train: int = 100, n_test: int = 30, k: int = 10, h: int = 12, w: int = 10,
              gz: bool = True, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Four IDX files of random h×w images, labels cycling through 0..k-1; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for (img_name, lab_name), n, split in ((names[:2], n_train, "train"), (names[2:], n_test, "test")):
        images = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        labels = (np.arange(n) % k).astype(np.uint8)
        for name, data in ((img_name, idx_bytes(images, 2051)), (lab_name, idx_bytes(labels, 2049))):
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data, mtime=0))
            else:
                (folder / name).write_bytes(data)
        out[split] = (images, labels)
    return out


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


# ---- finding and reading -----------------------------------------------------------------------

@pytest.mark.parametrize("name,expected", [
    ("train-images-idx3-ubyte.gz", ("train", "images")),
    ("t10k-labels-idx1-ubyte", ("test", "labels")),
    ("train-images.idx3-ubyte", ("train", "images")),
    ("emnist-letters-test-images-idx3-ubyte.gz", ("test", "images")),
    ("kmnist-train-labels.gz", ("train", "labels")),
    ("kmnist-train-imgs.npz", None),
    ("README.md", None),
    ("classes.txt", None),
])
def test_file_roles(name, expected):
    assert role(name) == expected


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_names_load_exactly_with_default_classes(tmp_path, gz):
    arrays = write_idx(tmp_path, gz=gz)
    s = load_splits("idx", tmp_path)
    spec = s["train"].spec
    assert spec.name == "idx" and spec.classes == tuple(str(i) for i in range(10))
    assert (spec.channels, spec.height, spec.width) == (1, 12, 10)
    assert [len(s[k]) for k in ("train", "val", "test")] == [90, 10, 30]  # val: 10% of a small set
    assert spec.split_sizes == {"train": 90, "val": 10, "test": 30}
    assert torch.equal(s["test"].images, torch.from_numpy(arrays["test"][0]).unsqueeze(1))
    assert s["test"].labels.tolist() == arrays["test"][1].tolist() and s["test"].labels.dtype == torch.int64
    # train and val are the training file, split by a seeded draw: together, exactly the file
    together = torch.cat([s["train"].images, s["val"].images])
    order = {x.tobytes(): i for i, x in enumerate(arrays["train"][0])}
    idx = [order[x[0].numpy().tobytes()] for x in together]
    assert sorted(idx) == list(range(100))
    assert torch.cat([s["train"].labels, s["val"].labels]).tolist() == arrays["train"][1][idx].tolist()
    again, other = load_splits("idx", tmp_path, seed=0), load_splits("idx", tmp_path, seed=1)
    assert torch.equal(again["val"].images, s["val"].images) and not torch.equal(other["val"].images, s["val"].images)


def test_mean_std_are_of_the_whole_training_file(tmp_path):
    arrays = write_idx(tmp_path)
    spec = load_splits("idx", tmp_path)["train"].spec
    mean, std = channel_stats(torch.from_numpy(arrays["train"][0]).unsqueeze(1))
    assert spec.mean == pytest.approx(tuple(mean)) and spec.std == pytest.approx(tuple(std))
    assert load_splits("idx", tmp_path, seed=3)["train"].spec.mean == spec.mean  # not the seed's


def test_other_names_and_a_classes_file(tmp_path):
    write_idx(tmp_path, names=("fashion-train-images-idx3-ubyte", "fashion-train-labels-idx1-ubyte",
                               "fashion-test-images-idx3-ubyte", "fashion-test-labels-idx1-ubyte"), h=28, w=28)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(FASHION) + "\n\n")
    s = load_splits("idx", tmp_path, classes_file=classes)
    spec = s["train"].spec
    assert spec.display_names == tuple(FASHION)
    assert spec.classes[:3] == ("t_shirt_top", "trouser", "pullover") and spec.classes[-1] == "ankle_boot"
    assert spec.class_index("Ankle boot") == spec.class_index("ankle_boot") == 9
    assert (spec.height, spec.width) == (28, 28)


def test_raw_is_preferred_to_gz(tmp_path):
    write_idx(tmp_path, gz=True)
    write_idx(tmp_path, gz=False, seed=1)  # the same names, raw, other pixels
    paths = find_files(tmp_path)
    assert paths["train"]["images"].name == "train-images-idx3-ubyte"


def test_a_models_spec_reads_only_the_files_it_needs(tmp_path):
    arrays = write_idx(tmp_path)
    spec = load_splits("idx", tmp_path)["train"].spec
    for f in tmp_path.glob("train-*"):
        f.write_bytes(b"damaged")  # test alone reads only the test files
    test = load_idx(spec, tmp_path, splits=("test",))["test"]
    assert test.spec is spec and torch.equal(test.images[:, 0], torch.from_numpy(arrays["test"][0]))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: cannot be read \(Not a gzipped file"):
        load_idx(spec, tmp_path, splits=("val",))
    with pytest.raises(DataError, match=r"12x10 images, but the model takes 28x28: give the --data-dir"):
        load_idx(replace(spec, height=28, width=28), tmp_path, splits=("test",))
    with pytest.raises(DataError, match="label 9, but the model has 3 classes"):
        load_idx(replace(spec, classes=("a", "b", "c"), display_names=("a", "b", "c")), tmp_path, splits=("test",))


def test_classes_only_for_idx(tmp_path, mnist_dir):
    (tmp_path / "c.txt").write_text("a\nb\n")
    with pytest.raises(ConfigError, match="--classes is for --dataset idx"):
        load_splits("mnist", mnist_dir, classes_file=tmp_path / "c.txt")


# ---- every bad set: one line, exit code 2 -------------------------------------------------------

def _missing_labels(root):
    write_idx(root)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()


def _two_candidates(root):
    write_idx(root)
    (root / "train-images-idx3-ubyte-copy.gz").write_bytes((root / "train-images-idx3-ubyte.gz").read_bytes())


def _count_mismatch(root):
    write_idx(root)
    labels = np.zeros(7, np.uint8)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))


def _size_mismatch(root):
    write_idx(root)
    images = np.zeros((30, 28, 28), np.uint8)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 2051)))


def _labels_swapped(root):
    write_idx(root)
    (root / "train-labels-idx1-ubyte.gz").write_bytes((root / "train-images-idx3-ubyte.gz").read_bytes())


def _few_class_names(root):
    write_idx(root)
    (root / "classes.txt").write_text("a\nb\nc\n")


def _one_class_name(root):
    write_idx(root, k=1)
    (root / "classes.txt").write_text("only\n")


def _clashing_names(root):
    write_idx(root, k=2)
    (root / "classes.txt").write_text("Cat\ncat\n")


BAD_SETS = [
    (_missing_labels, r"no test labels file \(t10k-labels-idx1-ubyte\[\.gz\], or any name with t10k or test and "
                      r"labels\): add it"),
    (_two_candidates, r"2 files look like the train images \(train-images-idx3-ubyte, "
                      r"train-images-idx3-ubyte-copy\): keep one there"),
    (_count_mismatch, r"t10k-images-idx3-ubyte\.gz holds 30 images but .*t10k-labels-idx1-ubyte\.gz 7 labels"),
    (_size_mismatch, r"train-images-idx3-ubyte\.gz holds 12x10 images, .*t10k-images-idx3-ubyte\.gz 28x28"),
    (_labels_swapped, r"train-labels-idx1-ubyte\.gz: magic number 2051, expected 2049 \(labels\)"),
    (_few_class_names, r"label 9 in the IDX files, but .*classes\.txt names only 3 classes \(0\.\.2\): give each "
                       r"label a line"),
    (_one_class_name, r"classes\.txt: 1 class name\(s\): write one name per line, at least two"),
    (_clashing_names, r"classes\.txt: the names 'Cat' and 'cat' both become the class 'cat': rename one"),
]


@pytest.mark.parametrize("make,pattern", BAD_SETS, ids=[m.__name__[1:] for m, _ in BAD_SETS])
def test_a_bad_set_is_one_clear_line(make, pattern, tmp_path, capsys):
    root = tmp_path / "set"
    make(root)
    extra = ["--classes", root / "classes.txt"] if (root / "classes.txt").exists() else []
    code, out, err = run_cli(capsys, "data", "check", "--dataset", "idx", "--data-dir", root, *extra)
    assert code == 2 and out == "", out
    assert err.startswith(f"error: {root}") and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err


def test_a_missing_folder_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "data", "check", "--dataset", "idx", "--data-dir", tmp_path / "nope")
    assert code == 2 and "nope: no such folder: pass --data-dir DIR, the folder that holds the four IDX" in err


# ---- probe data check, and a model trained on an IDX set ----------------------------------------

def test_data_check_describes_the_set(tmp_path, capsys):
    write_idx(tmp_path, k=3)
    (tmp_path / "classes.txt").write_text("Cat\nDog\nPhone right\n")
    code, out, err = run_cli(capsys, "data", "check", "--dataset", "idx", "--data-dir", tmp_path,
                             "--classes", tmp_path / "classes.txt")
    assert code == 0, err
    assert "classes  3: Cat (cat), Dog (dog), Phone right (phone_right)" in out
    assert "input    1×12×10 (channels × height × width), grey" in out
    assert "test     t10k-images-idx3-ubyte.gz" in out
    assert re.search(r"train\s+90\s+1×12×10", out) and re.search(r"test\s+30\s+1×12×10", out)
    rows = {line.split()[0]: [int(n) for n in line.split()[1:]] for line in out.splitlines()[-3:]}
    assert list(rows) == ["cat", "dog", "phone_right"] and [sum(r[:2]) for r in rows.values()] == [34, 33, 33]
    assert [r[2] for r in rows.values()] == [10, 10, 10]  # the test file's labels cycle through 0..2


def test_train_and_evaluate_on_an_idx_set(tmp_path, capsys, one_thread):
    write_idx(tmp_path / "set", k=3, n_train=60, n_test=15)
    (tmp_path / "classes.txt").write_text("Cat\nDog\nPhone right\n")
    out = tmp_path / "model"
    code, _, err = run_cli(capsys, "train", "--dataset", "idx", "--data-dir", tmp_path / "set", "--classes",
                           tmp_path / "classes.txt", "--arch", "resnet8", "--width", "0.25", "--epochs", "1",
                           "--batch-size", "18", "--out", out, "--device", "cpu", "--quiet")
    assert code == 0, err
    spec = json.loads((out / "meta.json").read_text())["dataset"]
    assert spec["name"] == "idx" and spec["display_names"] == ["Cat", "Dog", "Phone right"]
    assert (spec["channels"], spec["height"], spec["width"]) == (1, 12, 10)
    code, text, err = run_cli(capsys, "evaluate", "--model", out, "--data-dir", tmp_path / "set")
    assert code == 0, err
    assert "model on idx test (15 images)" in text and "phone_right" in text
