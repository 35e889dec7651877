"""Tiny synthetic datasets and configs for trainer tests: a few hundred 1×12×12 images whose
class is drawn as a bright bar at a class-specific row, learnable in a couple of epochs."""
from __future__ import annotations

from dataclasses import replace

import torch

from probe.data.imageset import ImageSet
from probe.data.spec import MNIST
from probe.train.config import TrainConfig

TINY_SPEC = replace(MNIST, height=12, width=12)


def bars(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = (torch.rand(n, 1, 12, 12, generator=g) * 60).to(torch.uint8)  # (N, 1, 12, 12) noise
    for i, c in enumerate(y.tolist()):
        x[i, 0, c + 1, 2:10] = 255
    return ImageSet(x, y, TINY_SPEC)


def tiny_splits(n_train: int = 192, seed: int = 0) -> dict[str, ImageSet]:
    return {"train": bars(n_train, seed), "val": bars(64, seed + 1), "test": bars(64, seed + 2)}


def tiny_config(**changes) -> TrainConfig:
    base = TrainConfig(dataset="mnist", arch="resnet8", width=0.25, epochs=3, batch_size=16,
                       lr=0.1, schedule="cosine", eval_batch_size=50, device="cpu")
    return replace(base, **changes)
