"""train / val / test, the same for a given seed on every machine, never overlapping.

MNIST and CIFAR-10: test is the official test set; val is a seeded random draw from the official
training set (5,000 images, as in He et al.), train the rest: 55k/5k/10k and 45k/5k/10k.

SFDDD (split_by="driver", the default): the drivers are shuffled with the seed; the first
`test_drivers` are test, the next `val_drivers` val, the rest train, so no driver is on two sides.
split_by="random" reproduces the seed project's split: test is still the held-out test drivers
(so test numbers of both modes compare), and val is 2,000 images drawn at random from the
remaining drivers' images: the same drivers on both sides of train/val, which is why it leaks.
"kaggle" is Kaggle's unlabelled test set (labels -1), loaded only when asked for.

Small data (test fixtures, a subset): when the data are smaller than the real set, the
requested val size is capped at 10% of it (at least 1), so tiny sets still split; drivers:
min(4, n_drivers // 5) each for val and test (at least 1), which is 4 for the real 26 drivers.
A training split without some class is refused (DataError naming the classes).

Your own data, `folder` (an ImageFolder, probe.data.folder) and `idx` (any IDX set,
probe.data.idx): the spec is made from the files when the name is given, and a model's spec
(from its meta.json) reads them again as the model saw them; each module says how it splits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from probe.data import sfddd
from probe.data.cifar10 import load_cifar10
from probe.data.folder import load_folder
from probe.data.holdout import holdout, val_size
from probe.data.idx import load_idx
from probe.data.imageset import ImageSet
from probe.data.mnist import load_mnist
from probe.data.spec import SFDDD, DatasetSpec, get_spec, is_own_data
from probe.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
SFDDD_LABELLED = 22_424  # images in the real imgs/train


def split_drivers(drivers, seed: int, n_val: int = 4, n_test: int = 4) -> dict[str, list[str]]:
    """The drivers (any iterable, repeats fine) → {"train", "val", "test": sorted driver ids}."""
    unique = sorted(set(drivers))
    if len(unique) < 3:
        raise DataError(f"only {len(unique)} driver(s) in the SFDDD list: splitting by driver needs at "
                        "least 3 (use split_by='random')")
    k_val = max(1, min(n_val, len(unique) // 5))
    k_test = max(1, min(n_test, len(unique) // 5))
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    return {"test": sorted(order[:k_test]), "val": sorted(order[k_test:k_test + k_val]),
            "train": sorted(order[k_test + k_val:])}


def _check_names(name: str, splits) -> tuple[str, ...]:
    allowed = SPLITS + (("kaggle",) if name == "sfddd" else ())
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    for s in splits:
        if s not in allowed:
            raise ConfigError(f"unknown split {s!r} for {name}: use {', '.join(allowed)}")
    return splits


def check_own_options(name: str, size=None, classes_file=None) -> None:
    """--size goes with a folder dataset, --classes with an IDX set: elsewhere a ConfigError."""
    if size is not None and name != "folder":
        raise ConfigError(f"--size is for --dataset folder (your own pictures), not {name}")
    if classes_file is not None and name != "idx":
        raise ConfigError(f"--classes is for --dataset idx (class names of an IDX set), not {name}")


def load_splits(dataset: str | DatasetSpec, data_dir: str | Path | None = None, *, seed: int = 0,
                split_by: str = "driver", splits=SPLITS, size=None, classes_file=None) -> dict[str, ImageSet]:
    """{split: ImageSet} of a dataset by name, or by a model's spec (a trained model's data).

    size ("HxW"): resize a folder dataset's images; classes_file: an IDX set's class names. Both
    make a new spec, so they go with the name "folder" / "idx" only."""
    name = dataset.name if isinstance(dataset, DatasetSpec) else str(dataset).lower()
    fixed = None if is_own_data(name) else get_spec(name)  # an unknown name: a ConfigError first
    check_own_options(name, size, classes_file)
    splits = _check_names(name, splits)
    if fixed is None:
        spec = dataset if isinstance(dataset, DatasetSpec) else None
        out = (load_folder(spec, data_dir, seed=seed, splits=splits, size=size) if name == "folder"
               else load_idx(spec, data_dir, seed=seed, splits=splits, classes_file=classes_file))
    else:
        out = _load(fixed, data_dir, seed, split_by, splits)
    if "train" in out:
        out["train"].require_all_classes(f"{name} training split (seed {seed})")
    return out


def _load(spec, data_dir, seed: int, split_by: str, splits: tuple[str, ...]) -> dict[str, ImageSet]:
    if spec.name == "sfddd":
        return _sfddd(data_dir, seed, split_by, splits)
    raw = (load_mnist if spec.name == "mnist" else load_cifar10)(data_dir)
    out = {}
    if "train" in splits or "val" in splits:
        full = raw["train"]
        sizes = spec.split_sizes
        n_val = val_size(sizes["val"], len(full), full=len(full) >= sizes["train"] + sizes["val"])
        train_idx, val_idx = holdout(len(full), n_val, seed)
        out.update(train=full.subset(train_idx), val=full.subset(val_idx))
    out["test"] = raw["test"]
    return {s: out[s] for s in splits}


def _sfddd(data_dir, seed: int, split_by: str, splits: tuple[str, ...]) -> dict[str, ImageSet]:
    if split_by not in ("driver", "random"):
        raise ConfigError(f"unknown split_by {split_by!r} for sfddd: use driver or random")
    out = {}
    if any(s in SPLITS for s in splits):
        full, drivers = sfddd.load_labelled(data_dir)  # drivers: (N,) str
        groups = split_drivers(drivers, seed, SFDDD.split_sizes["val_drivers"],
                               SFDDD.split_sizes["test_drivers"])
        in_test = np.isin(drivers, groups["test"])
        out["test"] = full.subset(torch.from_numpy(np.flatnonzero(in_test)))
        if split_by == "driver":
            for s in ("train", "val"):
                out[s] = full.subset(torch.from_numpy(np.flatnonzero(np.isin(drivers, groups[s]))))
        else:
            pool = np.flatnonzero(~in_test)  # (P,) indices into full
            n_val = val_size(SFDDD.split_sizes["random_val"], len(pool), full=len(full) >= SFDDD_LABELLED)
            train_pos, val_pos = holdout(len(pool), n_val, seed)
            out["train"] = full.subset(torch.from_numpy(pool[train_pos.numpy()]))
            out["val"] = full.subset(torch.from_numpy(pool[val_pos.numpy()]))
    if "kaggle" in splits:
        out["kaggle"] = sfddd.load_kaggle_test(data_dir)
    return {s: out[s] for s in splits}
