"""A seeded, stratified subset of a split: the first K of an order in which every prefix holds
each class in (nearly) its share of the split, so a small K still has every class, and a larger
K holds every image of a smaller one (runs on 2,000 and 5,000 images share their first 2,000)."""
from __future__ import annotations

import numpy as np
import torch

from probe.data.imageset import ImageSet
from probe.errors import ConfigError


def stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation of range(N) whose every prefix of length k holds about k·n_c/N images
    of class c (and, for k ≥ the number of classes present, at least one of each): the images of
    each class shuffled, the j-th of class c given the key j/n_c, all sorted by key (ties in a
    seeded random order)."""
    y = labels.cpu().numpy()
    rng = np.random.default_rng(seed)
    keys = np.empty(len(y), dtype=np.float64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        members = members[rng.permutation(len(members))]
        keys[members] = np.arange(len(members)) / len(members)
    tie = rng.permutation(len(y))  # the order among equal keys (the first image of every class: key 0)
    return torch.from_numpy(np.lexsort((tie, keys)).astype(np.int64))


def stratified_subset(data: ImageSet, k: int, seed: int, option: str = "--subset") -> ImageSet:
    """The first k images of `stratified_order`, in their original order."""
    classes = data.spec.num_classes
    if isinstance(k, bool) or not isinstance(k, int) or k < classes:
        raise ConfigError(f"{option} {k!r}: give at least {classes} images (one per class of {data.spec.name})")
    if k > len(data):
        raise ConfigError(f"{option} {k:,}: the training split has only {len(data):,} images "
                          f"(drop {option} to train on all of them)")
    index, _ = torch.sort(stratified_order(data.labels, seed)[:k])
    return data.subset(index)
