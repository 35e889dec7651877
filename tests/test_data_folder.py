"""Your own pictures: `--dataset folder --data-dir DIR` (DIR/train/<class>/*.png, optional val/,
test/): exact pixels and labels, the stratified seeded split, grey or colour, --size, the cached
mean/std, a model's spec reading the data again, every bad folder as one line, and a tiny model
trained, evaluated and analysed on a folder."""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from probe.cli import main
from probe.data.files import DataWarning
from probe.data.folder import carve, load_folder, stats_file
from probe.data.imageset import ImageSet, channel_stats
from probe.data.splits import load_splits
from probe.errors import ConfigError, DataError

H, W = 10, 12  # a size that is not square: rows and columns cannot be swapped unnoticed


def picture(seed: int, h: int = H, w: int = W, grey: bool = False) -> np.ndarray:
    """A random image, (h, w, 3) uint8, or (h, w) when grey."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w) if grey else (h, w, 3), dtype=np.uint8)


def write(root: Path, split: str, cls: str, i: int, arr: np.ndarray, ext: str = "png") -> str:
    """root/split/cls/<i>.<ext>; returns its name inside the split ("cls/i.png")."""
    folder = root / split / cls
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(folder / f"{i:03d}.{ext}")
    return f"{cls}/{i:03d}.{ext}"


def make_folder(root: Path, counts: dict[str, int], split: str = "train", grey: bool = False,
                seed: int = 0) -> dict[str, np.ndarray]:
    """counts: class folder → images; returns {name in split: pixels (C, H, W)}."""
    out = {}
    for c, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            arr = picture(seed + 1000 * c + i, grey=grey)
            out[write(root, split, cls, i, arr)] = arr[None] if grey else arr.transpose(2, 0, 1)
    return out


def check_exact(images, written: dict[str, np.ndarray], classes: list[str]) -> None:
    assert sorted(images.names) == sorted(written)
    for x, y, name in zip(images.images, images.labels.tolist(), images.names):
        assert np.array_equal(x.numpy(), written[name]), name
        assert classes[y] == name.split("/")[0]


def run_cli(capsys, *args):
    """(exit code, stdout, stderr) of `probe ARGS`."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


# ---- loading ------------------------------------------------------------------------------------

def test_own_val_and_test_folders_load_exactly(tmp_path):
    written = {s: make_folder(tmp_path, {"cat": 4, "dog": 3, "Phone Right": 2}, split=s, seed=k * 100)
               for k, s in enumerate(("train", "val", "test"))}
    s = load_splits("folder", tmp_path)
    spec = s["train"].spec
    folders = ["Phone Right", "cat", "dog"]  # sorted, as torchvision's ImageFolder sorts
    assert spec.name == "folder" and spec.display_names == tuple(folders)
    assert spec.classes == ("phone_right", "cat", "dog")
    assert (spec.channels, spec.height, spec.width) == (3, H, W)
    for split in ("train", "val", "test"):
        assert s[split].images.dtype == torch.uint8 and s[split].images.shape[1:] == (3, H, W)
        check_exact(s[split], written[split], folders)
    assert spec.split_sizes == {"train": 9, "val": 9, "test": 9}
    assert spec.class_index("Phone Right") == spec.class_index("phone_right") == 0


def test_all_grey_is_one_channel_and_one_colour_image_makes_three(tmp_path):
    written = make_folder(tmp_path, {"a": 3, "b": 3}, grey=True)
    rgb_grey = np.repeat(picture(7, grey=True)[:, :, None], 3, axis=2)  # an RGB file whose pixels are grey
    written[write(tmp_path, "train", "a", 50, rgb_grey)] = rgb_grey[None, :, :, 0]
    s = load_splits("folder", tmp_path)
    assert s["train"].spec.channels == 1
    check_exact(_merged(s), written, ["a", "b"])

    colour = picture(8)
    write(tmp_path, "train", "b", 60, colour)
    s = load_splits("folder", tmp_path)
    assert s["train"].spec.channels == 3
    merged = _merged(s)
    for x, name in zip(merged.images, merged.names):
        if name == "b/060.png":
            assert np.array_equal(x.numpy(), colour.transpose(2, 0, 1))
        else:  # a grey image in a colour set: three equal channels
            assert np.array_equal(x[0].numpy(), written[name][0]) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def _merged(s):
    names = [n for k in ("train", "val", "test") for n in s[k].names]
    return ImageSet(torch.cat([s[k].images for k in ("train", "val", "test")]),
                    torch.cat([s[k].labels for k in ("train", "val", "test")]), s["train"].spec, names)


def test_the_drawn_split_is_stratified_seeded_and_a_partition(tmp_path):
    counts = {"a": 20, "b": 10, "c": 3, "d": 2}
    written = make_folder(tmp_path, counts)
    s = load_splits("folder", tmp_path, seed=0)
    per_class = {k: s[k].class_counts() for k in ("train", "val", "test")}
    assert per_class == {"train": [16, 8, 1, 1], "val": [2, 1, 1, 0], "test": [2, 1, 1, 1]}
    names = [n for k in ("train", "val", "test") for n in s[k].names]
    assert sorted(names) == sorted(written)  # every file once: disjoint, and nothing lost
    again = load_splits("folder", tmp_path, seed=0)
    assert all(again[k].names == s[k].names for k in s)
    other = load_splits("folder", tmp_path, seed=1)
    assert other["val"].names != s["val"].names
    assert [other[k].class_counts() for k in ("train", "val", "test")] == list(per_class.values())


def test_carve_draws_test_first_and_keeps_one_for_train():
    parts = carve([0] * 1 + [1] * 2 + [2] * 3, ("test", "val"), seed=0)
    assert parts["train"].tolist()[:1] == [0]  # a class of one stays in train
    assert np.bincount(np.array([0, 1, 1, 2, 2, 2])[parts["test"]], minlength=3).tolist() == [0, 1, 1]
    assert np.bincount(np.array([0, 1, 1, 2, 2, 2])[parts["val"]], minlength=3).tolist() == [0, 0, 1]


def test_a_val_folder_alone_draws_only_test(tmp_path):
    make_folder(tmp_path, {"a": 10, "b": 10})
    val = make_folder(tmp_path, {"a": 2, "b": 1}, split="val", seed=500)
    s = load_splits("folder", tmp_path)
    assert sorted(s["val"].names) == sorted(val)
    assert s["test"].class_counts() == [1, 1] and s["train"].class_counts() == [9, 9]


def test_size_resizes_every_image_and_keeps_the_centre(tmp_path):
    half = np.zeros((8, 16), np.uint8)
    half[:, 8:] = 255  # 8×16 (H×W): black left half, white right half
    write(tmp_path, "train", "a", 0, half)
    flat = np.full((20, 30, 3), (10, 200, 30), np.uint8)  # one colour: any resize keeps it exactly
    write(tmp_path, "train", "b", 0, flat)
    exact = picture(3, 8, 8)
    write(tmp_path, "train", "b", 1, exact)
    with pytest.raises(DataError, match=r"differ in size \(.*--size HxW"):
        load_splits("folder", tmp_path)
    s = load_splits("folder", tmp_path, size="8x8", splits=("train", "val", "test"))
    spec = s["train"].spec
    assert (spec.channels, spec.height, spec.width) == (3, 8, 8)
    got = {n: x for k in s for n, x in zip(s[k].names, s[k].images)}
    # the centre 8×8 of the 8×16 image: 4 black columns, then 4 white; no resize needed
    assert got["a/000.png"][0].tolist() == [[0] * 4 + [255] * 4] * 8
    assert (got["b/000.png"] == torch.tensor([10, 200, 30], dtype=torch.uint8)[:, None, None]).all()
    assert np.array_equal(got["b/001.png"].numpy(), exact.transpose(2, 0, 1))  # the right size: as is


def test_size_option_is_checked_and_only_for_folders(tmp_path, mnist_dir):
    make_folder(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(ConfigError, match="--size '3by4'"):
        load_splits("folder", tmp_path, size="3by4")
    with pytest.raises(ConfigError, match="--size is for --dataset folder"):
        load_splits("mnist", mnist_dir, size="8x8")
    assert load_splits("folder", tmp_path, size="6")["train"].images.shape[2:] == (6, 6)


# ---- mean and std, cached --------------------------------------------------------------------

def test_mean_std_are_of_train_and_cached_until_a_file_changes(tmp_path):
    make_folder(tmp_path, {"a": 10, "b": 10})
    s = load_splits("folder", tmp_path)
    mean, std = channel_stats(s["train"].images)
    assert s["train"].spec.mean == pytest.approx(tuple(mean)) and s["train"].spec.std == pytest.approx(tuple(std))
    cache = tmp_path / ".probe-cache" / "folder-stats.json"
    data = json.loads(cache.read_text())
    (key, entry), = data["entries"].items()
    assert entry["images"] == 16 and entry["shape"] == [3, H, W]

    entry["mean"] = [0.125, 0.25, 0.375]  # a value only the cache can give
    cache.write_text(json.dumps(data))
    assert load_splits("folder", tmp_path)["train"].spec.mean == (0.125, 0.25, 0.375)
    assert load_splits("folder", tmp_path, seed=1)["train"].spec.mean != (0.125, 0.25, 0.375)  # other train images

    first = next(n for n in s["train"].names)
    path = tmp_path / "train" / first
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(path)  # a training image changes
    os.utime(path, ns=(1, 1))
    again = load_splits("folder", tmp_path)
    fresh, _ = channel_stats(again["train"].images)
    assert again["train"].spec.mean == pytest.approx(tuple(fresh)) and fresh != pytest.approx(mean)
    assert len(json.loads(cache.read_text())["entries"]) == 3  # seed 0, seed 1, seed 0 after the change


def test_a_damaged_cache_is_computed_again(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3})
    first = load_splits("folder", tmp_path)["train"].spec.mean
    (tmp_path / ".probe-cache" / "folder-stats.json").write_text("{not json")
    assert load_splits("folder", tmp_path)["train"].spec.mean == first


def test_an_unwritable_data_folder_caches_in_the_users_cache(tmp_path, monkeypatch):
    data, user = tmp_path / "pics", tmp_path / "user-cache"
    make_folder(data, {"a": 3, "b": 3})
    (data / ".probe-cache").write_text("a file where the cache folder would go")
    monkeypatch.setenv("PROBE_CACHE_DIR", str(user))
    mean = load_splits("folder", data)["train"].spec.mean
    (kept,) = user.glob("folder-*/folder-stats.json")
    assert stats_file(data) == kept and json.loads(kept.read_text())["entries"]
    assert load_splits("folder", data)["train"].spec.mean == mean


# ---- a model's spec reads the data again ----------------------------------------------------------

def test_a_models_spec_reads_the_split_asked_for_at_its_size(tmp_path):
    make_folder(tmp_path, {"a": 10, "b": 10})
    s = load_splits("folder", tmp_path)
    spec = s["train"].spec
    again = load_splits(spec, tmp_path, splits=("val",))
    assert list(again) == ["val"] and torch.equal(again["val"].images, s["val"].images)
    assert again["val"].spec is spec
    from dataclasses import replace
    small = replace(spec, channels=1, height=5, width=6, mean=(0.5,), std=(0.25,))
    grey = load_splits(small, tmp_path, splits=("test",))["test"]
    assert grey.images.shape[1:] == (1, 5, 6) and grey.spec is small
    other = replace(spec, classes=("a", "c"), display_names=("a", "c"))
    with pytest.raises(DataError, match=r"its classes \(a, b\) are not the model's \(a, c\)"):
        load_folder(other, tmp_path, splits=("test",))


# ---- unreadable files ---------------------------------------------------------------------------

def test_few_unreadable_files_are_skipped_with_a_warning(tmp_path):
    make_folder(tmp_path, {"a": 60, "b": 60})
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(DataWarning, match=r"skipped 1 unreadable image of 121: train/a/broken.png"):
        s = load_splits("folder", tmp_path)
    assert sum(len(v) for v in s.values()) == 120


def test_the_cli_prints_the_warning_as_one_line(tmp_path, capsys):
    make_folder(tmp_path, {"a": 60, "b": 60})
    (tmp_path / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, "data", "check", "--dataset", "folder", "--data-dir", tmp_path)
    assert code == 0 and "train" in out
    assert err.startswith("warning: ") and err.count("\n") == 1 and "train/b/broken.jpg" in err, err


# ---- every bad folder: one line, exit code 2 ------------------------------------------------------

def _bad_no_train(root):
    (root / "cats").mkdir(parents=True)


def _bad_no_classes(root):
    (root / "train").mkdir(parents=True)
    Image.fromarray(picture(0)).save(root / "train" / "loose.png")


def _bad_one_class(root):
    make_folder(root, {"only": 3})


def _bad_empty_class(root):
    make_folder(root, {"a": 3, "b": 3})
    (root / "train" / "empty").mkdir()
    (root / "train" / "empty" / "notes.txt").write_text("no images here")


def _bad_unreadable(root):
    make_folder(root, {"a": 5, "b": 5})
    for i in range(2):
        (root / "train" / "a" / f"bad{i}.png").write_text("text, not an image")


def _bad_mixed_sizes(root):
    write(root, "train", "a", 0, picture(0, 8, 8))
    write(root, "train", "b", 0, picture(1, 12, 10))
    write(root, "train", "b", 1, picture(2, 12, 10))


def _bad_stray_val_class(root):
    make_folder(root, {"a": 3, "b": 3})
    make_folder(root, {"a": 1, "z": 1}, split="val")


def _bad_slug_clash(root):
    make_folder(root, {"Cat": 2, "cat": 2})


def _bad_empty_test(root):
    make_folder(root, {"a": 3, "b": 3})
    (root / "test" / "a").mkdir(parents=True)


BAD_FOLDERS = [  # (maker, a regular expression the one line must match)
    (_bad_no_train, r"no train/ folder: put the images in .*/train/<class>/\*\.png"),
    (_bad_no_classes, r"no class folders \(1 image lies directly in it\): make one folder per class"),
    (_bad_one_class, r"only one class folder \(only\): a classifier needs at least two"),
    (_bad_empty_class, r"train/empty: a class folder without images \(\.png, \.jpg, \.jpeg, \.bmp\): "
                       r"add images or remove the folder$"),
    (_bad_unreadable, r"2 of 12 images cannot be read \(train/a/bad0\.png, train/a/bad1\.png; .*\): repair or "
                      r"remove them"),
    (_bad_mixed_sizes, r"the images differ in size \(12x10 like train/b/00\d\.png, 8x8 like train/a/000\.png; "
                       r"height x width\): give --size HxW to resize them all, e\.g\. --size 12x10"),
    (_bad_stray_val_class, r"val/z: class 'z' has no folder in train/ \(a, b\)"),
    (_bad_slug_clash, r"class folders 'Cat' and 'cat' both become the class name 'cat': rename one"),
    (_bad_empty_test, r"test: no images in its class folders: add them, or remove test/ to draw test from train/"),
]


@pytest.mark.parametrize("make,pattern", BAD_FOLDERS, ids=[m.__name__[5:] for m, _ in BAD_FOLDERS])
def test_a_bad_folder_is_one_clear_line(make, pattern, tmp_path, capsys):
    root = tmp_path / "pics"
    make(root)
    code, out, err = run_cli(capsys, "data", "check", "--dataset", "folder", "--data-dir", root)
    assert code == 2 and out == "", out
    assert err.startswith(f"error: {root}") and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err


def test_mixed_sizes_name_two_examples_and_the_fix(tmp_path, capsys):
    _bad_mixed_sizes(tmp_path)
    code, _, err = run_cli(capsys, "train", "--dataset", "folder", "--data-dir", tmp_path, "--epochs", "1")
    assert code == 2
    assert re.search(r"12x10 like train/b/00\d\.png, 8x8 like train/a/000\.png", err) and "--size 12x10" in err, err


def test_a_missing_data_dir_and_a_file_are_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "data", "check", "--dataset", "folder", "--data-dir", tmp_path / "nope")
    assert code == 2 and "nope: no such folder: pass --data-dir DIR" in err and err.count("\n") == 1
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(capsys, "data", "check", "--dataset", "folder", "--data-dir", tmp_path / "file")
    assert code == 2 and "is a file: --data-dir takes the folder" in err


def test_size_with_a_fixed_dataset_is_one_line(mnist_dir, capsys):
    code, _, err = run_cli(capsys, "data", "check", "--dataset", "mnist", "--data-dir", mnist_dir, "--size", "8x8")
    assert code == 2 and "--size is for --dataset folder" in err and err.count("\n") == 1


# ---- probe data check, and a model trained on a folder ---------------------------------------------

def test_data_check_describes_the_folder(tmp_path, capsys):
    make_folder(tmp_path, {"Cat": 10, "dog": 10})
    code, out, _ = run_cli(capsys, "data", "check", "--dataset", "folder", "--data-dir", tmp_path)
    assert code == 0
    assert "classes  2: Cat (cat), dog" in out and f"input    3×{H}×{W}" in out and "colour" in out
    assert "val      drawn from train/: 10% of each class (seed 0)" in out
    assert re.search(r"train\s+16\s+3×10×12", out) and re.search(r"cat\s+8\s+1\s+1", out)
    assert str(tmp_path / ".probe-cache" / "folder-stats.json") in out


def test_train_evaluate_misclassified_and_predict_on_a_folder(tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "pics"
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("bar_top", "bar_middle", "bar_bottom")):
        for i in range(20):  # grey 10×12 noise with a bright bar at a class's row
            arr = rng.integers(0, 60, (H, W), dtype=np.uint8)
            arr[1 + 3 * c, 2:10] = 255
            write(data, "train", cls, i, arr)
    out = tmp_path / "trained_models" / "tiny"
    code, text, err = run_cli(capsys, "train", "--dataset", "folder", "--data-dir", data, "--arch", "resnet8",
                              "--width", "0.25", "--epochs", "2", "--batch-size", "10", "--out", out,
                              "--device", "cpu", "--quiet")
    assert code == 0, err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dataset"]["name"] == "folder" and meta["dataset"]["channels"] == 1
    assert (meta["dataset"]["height"], meta["dataset"]["width"]) == (H, W)
    assert meta["dataset"]["classes"] == ["bar_bottom", "bar_middle", "bar_top"]
    assert meta["augment"]["pad"] == 1 and not meta["augment"]["flip"]

    code, text, err = run_cli(capsys, "evaluate", "--model", out, "--data-dir", data)
    assert code == 0, err
    assert "tiny on folder test (6 images)" in text and "bar_middle" in text

    code, text, err = run_cli(capsys, "misclassified", "--model", out, "--data-dir", data, "--split", "test",
                              "--out", tmp_path / "mis")
    assert code == 0, err
    assert (tmp_path / "mis" / "results.json").is_file() and re.search(r"\d of 6 test images misclassified", text)

    code, text, err = run_cli(capsys, "predict", "--model", out, "--image", data / "train" / "bar_top" / "000.png")
    assert code == 0, err
    assert "000.png" in text and "bar_" in text

    code, _, err = run_cli(capsys, "evaluate", "--model", out, "--data-dir", tmp_path / "elsewhere")
    assert code == 2 and "elsewhere: no such folder" in err
