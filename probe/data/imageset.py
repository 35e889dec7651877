"""ImageSet: a whole split in memory, uint8 pixels and int64 labels, with its DatasetSpec."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from probe.data.spec import DatasetSpec
from probe.errors import ConfigError, DataError


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64; -1 where unlabelled (SFDDD's imgs/test)
    spec: DatasetSpec
    names: list[str] | None = None  # file names, where the format has them

    def __post_init__(self):
        # Real checks, not asserts: `python -O` strips asserts, and a wrong set trains garbage.
        if not isinstance(self.spec, DatasetSpec):
            raise ConfigError(f"ImageSet needs a DatasetSpec, not {type(self.spec).__name__}")
        x, y, spec = self.images, self.labels, self.spec
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"{spec.name}: images must be a uint8 (N, C, H, W) tensor, not {got}")
        if tuple(x.shape[1:]) != (spec.channels, spec.height, spec.width):
            raise DataError(f"{spec.name}: images of shape {tuple(x.shape[1:])}, expected "
                            f"{(spec.channels, spec.height, spec.width)} (C, H, W)")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.ndim != 1:
            got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise DataError(f"{spec.name}: labels must be an int64 (N,) tensor, not {got}")
        if len(y) != len(x):
            raise DataError(f"{spec.name}: {len(x):,} images but {len(y):,} labels")
        if len(y) and (int(y.min()) < -1 or int(y.max()) >= spec.num_classes):
            raise DataError(f"{spec.name}: labels outside -1..{spec.num_classes - 1} "
                            f"(found {int(y.min())}..{int(y.max())})")
        if self.names is not None and len(self.names) != len(x):
            raise DataError(f"{spec.name}: {len(x):,} images but {len(self.names):,} names")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        names = [self.names[i] for i in index.tolist()] if self.names is not None else None
        return ImageSet(self.images[index], self.labels[index], self.spec, names)

    def class_counts(self) -> list[int]:
        labelled = self.labels[self.labels >= 0]
        return torch.bincount(labelled, minlength=self.spec.num_classes).tolist()

    def missing_classes(self) -> list[str]:
        """Slugs of the classes with no labelled image here."""
        return [c for c, n in zip(self.spec.classes, self.class_counts()) if n == 0]

    def require_all_classes(self, what: str) -> None:
        """DataError naming the classes absent from this set: a model trained without a class
        never predicts it, and its per-class accuracy is 0/0."""
        missing = self.missing_classes()
        if missing:
            codes = dict(zip(self.spec.classes, self.spec.codes)) if self.spec.codes else {}
            names = ", ".join(f"{c} ({codes[c]})" if c in codes else c for c in missing)
            raise DataError(f"{what}: no images of {len(missing)} class(es): {names}; every class "
                            f"needs training images")

    def to(self, device) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device), self.spec, self.names)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of [0, 1] pixels, in float64 chunks (no full float copy of the set)."""
    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64) / 255  # (n, C, H, W)
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
    n = max(1, images.numel() // c)
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()
