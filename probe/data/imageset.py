"""ImageSet: a whole split in memory, uint8 pixels and int64 labels, with its DatasetSpec."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from probe.data.spec import DatasetSpec


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64; -1 where unlabelled (SFDDD's imgs/test)
    spec: DatasetSpec
    names: list[str] | None = None  # file names, where the format has them

    def __post_init__(self):
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4, self.images.shape
        assert self.labels.dtype == torch.int64 and len(self.labels) == len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        names = [self.names[i] for i in index.tolist()] if self.names is not None else None
        return ImageSet(self.images[index], self.labels[index], self.spec, names)

    def class_counts(self) -> list[int]:
        labelled = self.labels[self.labels >= 0]
        return torch.bincount(labelled, minlength=self.spec.num_classes).tolist()

    def to(self, device) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device), self.spec, self.names)
