"""Any set in MNIST's IDX format (Fashion-MNIST, KMNIST, EMNIST, your own): four files in one
folder, each gzipped or raw, found by name:

    train images   MNIST's name (train-images-idx3-ubyte), or any name with "train" and "images"
                   (or "idx3"), e.g. emnist-letters-train-images-idx3-ubyte.gz
    train labels   ... "train" and "labels" (or "idx1")
    test images    ... "t10k" or "test", and "images" (or "idx3")
    test labels    ... "t10k" or "test", and "labels" (or "idx1")

Images: uint8 (N, H, W) of any one size, 1 channel; labels uint8. Classes: one name per line of a
--classes file (the slug, what --class takes, made from it: "T-shirt/top" → t_shirt_top), else
0..K-1 with K the largest label + 1. Split as MNIST: test is the test files; val a seeded random
draw from the training files (5,000 of a set of 60,000 or more, else 10%), train the rest. Mean and
std: of all the training file's images (the way MNIST's 0.1307 / 0.3081 are), so they do not
depend on the seed.

A model trained here keeps its spec in meta.json; its data are read again with that spec: the
images must have its size, and the labels stay below its number of classes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from probe.data.files import read_regular
from probe.data.holdout import holdout, val_size
from probe.data.imageset import ImageSet, channel_stats
from probe.data.mnist import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from probe.data.paths import resolve_data_dir
from probe.data.spec import MNIST, DatasetSpec, slugify
from probe.errors import DataError

SPLITS = ("train", "val", "test")
FULL = MNIST.split_sizes["train"] + MNIST.split_sizes["val"]  # a set this large gives val 5,000, as MNIST
MAX_BYTES = 2 * 2 ** 30  # EMNIST ByClass, the largest IDX set in use, is 550 MB of images
MAX_CLASSES_FILE = 1 << 20
_FIX = "check the file, or download the set again"
_NOT_IDX = {".npz", ".npy", ".txt", ".csv", ".json", ".zip", ".tar", ".tgz", ".md", ".png", ".jpg",
            ".pkl", ".mat", ".h5", ".py"}


def role(name: str) -> tuple[str, str] | None:
    """A file name → (split, "images" | "labels"), or None when it is not one of the four."""
    n = name.lower().removesuffix(".gz")
    if name.startswith(".") or Path(n).suffix in _NOT_IDX:
        return None
    kind = "images" if any(w in n for w in ("images", "idx3")) else "labels" if any(
        w in n for w in ("labels", "idx1")) else None
    is_train, is_test = "train" in n, "t10k" in n or "test" in n
    if kind is None or is_train == is_test:
        return None
    return ("train" if is_train else "test"), kind


def find_files(folder: Path) -> dict[str, dict[str, Path]]:
    """{"train": {"images": path, "labels": path}, "test": {...}}; raw preferred to .gz."""
    found: dict[tuple[str, str], dict[str, list[Path]]] = {}
    for p in sorted(folder.iterdir()):
        r = role(p.name)
        if r is not None and not p.is_dir():
            found.setdefault(r, {}).setdefault(p.name.removesuffix(".gz"), []).append(p)
    out: dict[str, dict[str, Path]] = {"train": {}, "test": {}}
    for split in ("train", "test"):
        for kind in ("images", "labels"):
            bases = found.get((split, kind), {})
            if not bases:
                example = {"train": "train", "test": "t10k"}[split] + f"-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
                raise DataError(f"{folder}: no {split} {kind} file ({example}[.gz], or any name with "
                                f"{'train' if split == 'train' else 't10k or test'} and {kind}): add it, or pass "
                                "--data-dir to the folder that holds the four IDX files")
            if len(bases) > 1:
                raise DataError(f"{folder}: {len(bases)} files look like the {split} {kind} "
                                f"({', '.join(sorted(bases))}): keep one there")
            paths = next(iter(bases.values()))
            out[split][kind] = min(paths, key=lambda p: p.name.endswith(".gz"))  # raw: no decompression
    return out


def read_classes(path: str | Path) -> list[str]:
    """A --classes file: one class name per line (blank lines and surrounding spaces ignored)."""
    path = Path(path)
    try:
        text = read_regular(path, MAX_CLASSES_FILE, "classes file").decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason}): write one class name per line") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) < 2:
        raise DataError(f"{path}: {len(names)} class name(s): write one name per line, at least two")
    slugs = [slugify(n, i) for i, n in enumerate(names)]
    dup = next((s for s in slugs if slugs.count(s) > 1), None)
    if dup is not None:
        same = [n for n, s in zip(names, slugs) if s == dup]
        raise DataError(f"{path}: the names {' and '.join(map(repr, same))} both become the class {dup!r}: "
                        "rename one")
    return names


def read_pair(paths: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """One split's images (N, H, W) and labels (N,), checked against each other."""
    ip, lp = paths["images"], paths["labels"]
    images = read_idx(ip, IMAGES_MAGIC, (None, None), fix=_FIX, what="IDX image file", max_bytes=MAX_BYTES)
    labels = read_idx(lp, LABELS_MAGIC, (), fix=_FIX, what="IDX label file", max_bytes=MAX_BYTES)
    if len(images) != len(labels):
        raise DataError(f"{ip} holds {len(images):,} images but {lp} {len(labels):,} labels: the files "
                        f"are from different sets; {_FIX}")
    return images, labels


def _side(images: np.ndarray) -> str:
    return "x".join(map(str, images.shape[1:]))


def class_names(raw: dict, folder: Path, classes_file=None) -> list[str]:
    """The classes of a new spec: the --classes file's names, else 0..K-1 (K = largest label + 1);
    every label must have a name."""
    top = max((int(y.max()) for _, y in raw.values() if len(y)), default=0)
    names = read_classes(classes_file) if classes_file else [str(k) for k in range(max(top + 1, 2))]
    if top >= len(names):
        raise DataError(f"{folder}: label {top} in the IDX files, but {classes_file} names only {len(names)} "
                        f"classes (0..{len(names) - 1}): give each label a line")
    return names


def _check_against(spec: DatasetSpec, raw: dict, paths: dict, folder: Path) -> None:
    """The data of a model's spec: its image size, labels below its number of classes."""
    for s, (x, y) in raw.items():
        if x.shape[1:] != (spec.height, spec.width):
            raise DataError(f"{paths[s]['images']}: {_side(x)} images, but the model takes {spec.height}x"
                            f"{spec.width}: give the --data-dir the model was trained on")
        if len(y) and int(y.max()) >= spec.num_classes:
            raise DataError(f"{paths[s]['labels']}: label {int(y.max())}, but the model has {spec.num_classes} "
                            "classes: give the --data-dir the model was trained on")


def new_spec(raw: dict, folder: Path, classes_file, n_val: int) -> DatasetSpec:
    names = class_names(raw, folder, classes_file)
    train = torch.from_numpy(raw["train"][0]).unsqueeze(1)  # (N, 1, H, W)
    mean, std = channel_stats(train)
    return DatasetSpec(name="idx", classes=tuple(slugify(n, i) for i, n in enumerate(names)),
                       display_names=tuple(names), channels=1, height=train.shape[2], width=train.shape[3],
                       mean=tuple(mean), std=tuple(max(s, 1e-6) for s in std),
                       split_sizes={"train": len(train) - n_val, "val": n_val, "test": len(raw["test"][1])})


def load_idx(spec: DatasetSpec | None = None, data_dir=None, *, seed: int = 0, splits=SPLITS,
             classes_file=None) -> dict[str, ImageSet]:
    """The splits asked for. spec None: the spec is made from the files (classes from
    classes_file or the labels, size from the images, mean/std of the training file); a model's
    spec: only the files of the splits asked for are read, and checked against it."""
    folder = resolve_data_dir("idx", data_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder: pass --data-dir DIR, the folder that holds the four IDX "
                        "files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)")
    paths = find_files(folder)
    need = [s for s in ("train", "test") if spec is None or s in splits or (s == "train" and "val" in splits)]
    raw = {s: read_pair(paths[s]) for s in need}
    if spec is not None:
        _check_against(spec, raw, paths, folder)
    elif raw["train"][0].shape[1:] != raw["test"][0].shape[1:]:
        raise DataError(f"{paths['train']['images']} holds {_side(raw['train'][0])} images, {paths['test']['images']} "
                        f"{_side(raw['test'][0])}: the files are from different sets; {_FIX}")
    n_train = len(raw["train"][1]) if "train" in raw else 0
    n_val = val_size(MNIST.split_sizes["val"], n_train, full=n_train >= FULL) if "train" in raw else 0
    spec = spec or new_spec(raw, folder, classes_file, n_val)
    sets = {s: ImageSet(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).long(), spec)
            for s, (x, y) in raw.items()}  # images (N, 1, H, W)
    out = {"test": sets.get("test")}
    if "train" in sets:
        train_idx, val_idx = holdout(n_train, n_val, seed)
        out.update(train=sets["train"].subset(train_idx), val=sets["train"].subset(val_idx))
    return {s: out[s] for s in splits}
