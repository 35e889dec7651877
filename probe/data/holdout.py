"""A seeded random validation draw: how many images, and which (MNIST, CIFAR-10, IDX sets)."""
from __future__ import annotations

import numpy as np
import torch

from probe.errors import DataError


def val_size(requested: int, pool: int, *, full: bool) -> int:
    """How many of `pool` images go to val: the requested number from the real, full-size data
    (`full`), else at most 10% of the pool, at least 1; train always keeps at least one."""
    if pool < 2:
        raise DataError(f"only {pool} training image(s): too few to split off a validation set")
    n = requested if full else max(1, min(requested, pool // 10))
    return min(n, pool - 1)


def holdout(n: int, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random n_val of range(n) → (train index, val index), both sorted (original order kept)."""
    perm = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return torch.from_numpy(train), torch.from_numpy(val)
