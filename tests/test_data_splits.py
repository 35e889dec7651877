import hashlib

import pytest
import torch

from probe.data.check import check_dataset, format_check
from probe.data.splits import holdout, load_splits, split_drivers, val_size
from probe.errors import ConfigError, DataError


def _hashes(images) -> set[str]:
    return {hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images.images}


def _assert_disjoint(splits):
    seen = {}
    for name, s in splits.items():
        h = _hashes(s)
        assert len(h) == len(s), f"duplicate images inside {name}"
        for other, hs in seen.items():
            assert not (h & hs), f"{name} and {other} overlap"
        seen[name] = h


def test_val_size_rule():
    assert val_size(5000, 60_000, full=True) == 5000
    assert val_size(5000, 200, full=False) == 20  # small data: 10%
    assert val_size(5000, 5, full=False) == 1
    with pytest.raises(DataError):
        val_size(5000, 1, full=False)


def test_holdout_is_a_partition():
    train, val = holdout(100, 10, seed=3)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100)) and len(val) == 10


@pytest.mark.parametrize("name,fixture,sizes", [
    ("mnist", "mnist_dir", (180, 20, 50)),
    ("cifar10", "cifar_archive_dir", (90, 10, 20)),
])
def test_small_splits(name, fixture, sizes, request):
    data_dir = request.getfixturevalue(fixture)
    s = load_splits(name, data_dir, seed=0)
    assert tuple(len(s[k]) for k in ("train", "val", "test")) == sizes
    _assert_disjoint(s)
    again = load_splits(name, data_dir, seed=0)
    assert torch.equal(s["val"].images, again["val"].images)  # deterministic for a seed
    other = load_splits(name, data_dir, seed=1)
    assert not torch.equal(s["val"].images, other["val"].images)
    assert _hashes(s["train"]) | _hashes(s["val"]) == _hashes(other["train"]) | _hashes(other["val"])


def test_only_the_splits_asked_for(mnist_dir):
    assert list(load_splits("mnist", mnist_dir, splits=("test",))) == ["test"]
    assert list(load_splits("mnist", mnist_dir, splits=["val", "train"])) == ["val", "train"]


def test_unknown_split_and_dataset(mnist_dir):
    with pytest.raises(ConfigError, match="unknown split 'holdout'"):
        load_splits("mnist", mnist_dir, splits=("train", "holdout"))
    with pytest.raises(ConfigError, match="unknown split 'kaggle' for mnist"):
        load_splits("mnist", mnist_dir, splits=("kaggle",))
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_splits("imagenet", mnist_dir)


def _drivers_of(split, csv_path) -> set[str]:
    import csv

    by_name = {r["img"]: r["subject"] for r in csv.DictReader(open(csv_path))}
    return {by_name[n] for n in split.names}


def test_sfddd_split_by_driver(sfddd_master):
    s = load_splits("sfddd", sfddd_master, seed=0)
    csv_path = sfddd_master / "driver_imgs_list.csv"
    drivers = {k: _drivers_of(v, csv_path) for k, v in s.items()}
    # 10 drivers (fewer than the real 26): 2 for test, 2 for val, 6 for train
    assert [len(drivers[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    assert not drivers["train"] & drivers["val"] and not drivers["train"] & drivers["test"]
    assert not drivers["val"] & drivers["test"]
    assert sum(len(v) for v in s.values()) == 200
    _assert_disjoint(s)
    assert load_splits("sfddd", sfddd_master, seed=0)["val"].names == s["val"].names
    assert _drivers_of(load_splits("sfddd", sfddd_master, seed=5)["val"], csv_path) != drivers["val"]


def test_sfddd_random_split_keeps_test_drivers(sfddd_master):
    by_driver = load_splits("sfddd", sfddd_master, seed=0)
    rnd = load_splits("sfddd", sfddd_master, seed=0, split_by="random")
    assert rnd["test"].names == by_driver["test"].names  # same held-out drivers
    assert len(rnd["val"]) == 16 and len(rnd["train"]) == 144  # 10% of the 160 others
    _assert_disjoint(rnd)
    csv_path = sfddd_master / "driver_imgs_list.csv"
    assert _drivers_of(rnd["val"], csv_path) & _drivers_of(rnd["train"], csv_path)  # the leak it reproduces
    with pytest.raises(ConfigError, match="split_by"):
        load_splits("sfddd", sfddd_master, split_by="nope")


def test_sfddd_kaggle_only_when_asked(sfddd_master, monkeypatch):
    import probe.data.sfddd as sfddd

    monkeypatch.setattr(sfddd, "load_kaggle_test", lambda d: pytest.fail("kaggle set loaded"))
    assert "kaggle" not in load_splits("sfddd", sfddd_master)
    monkeypatch.undo()
    s = load_splits("sfddd", sfddd_master, splits=("kaggle",))
    assert list(s) == ["kaggle"] and len(s["kaggle"]) == 6


def test_split_drivers_real_sizes():
    drivers = [f"p{i:03d}" for i in range(26)]
    g = split_drivers(drivers, seed=0)
    assert [len(g[k]) for k in ("train", "val", "test")] == [18, 4, 4]
    assert split_drivers(drivers, seed=0) == g and split_drivers(drivers, seed=1) != g
    with pytest.raises(DataError, match="at least 3"):
        split_drivers(["p1", "p2"], seed=0)


def test_check_and_format(mnist_dir, sfddd_master):
    r = check_dataset("mnist", mnist_dir)
    assert r["splits"]["train"]["count"] == 180 and r["splits"]["test"]["shape"] == [1, 28, 28]
    assert sum(r["splits"]["test"]["class_counts"].values()) == 50
    assert 0.45 < r["splits"]["train"]["mean"][0] < 0.55  # uniform random pixels
    text = format_check(r)
    assert "train" in text and "180" in text and "1×28×28" in text
    r = check_dataset("sfddd", sfddd_master, splits=("train", "val", "test", "kaggle"))
    assert r["splits"]["kaggle"]["unlabelled"] == 6 and len(r["drivers"]["val"]) == 2
    text = format_check(r)
    assert "unlabelled" in text and "val drivers (2)" in text and "phone_right" in text


def test_format_thousands():
    from probe.data.check import format_check

    report = {"dataset": "mnist", "data_dir": "x", "spec_mean": [0.1], "spec_std": [0.3],
              "splits": {"train": {"count": 55000, "class_counts": {"0": 5444}, "shape": [1, 28, 28],
                                   "mean": [0.1307], "std": [0.3081]}}}
    assert "55,000" in format_check(report) and "5,444" in format_check(report)
