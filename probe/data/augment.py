"""Augmentation of whole uint8 batches on their device: pad-and-crop, random crop, flip.

Randomness comes from an explicit torch.Generator so that a batch's augmentation depends only on
(seed, step): a resumed run sees exactly the images an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from probe.data.spec import DatasetSpec


@dataclass(frozen=True)
class AugmentConfig:
    pad: int = 0  # zero padding before a random crop back to the input size
    flip: bool = False  # random horizontal flip
    crop: tuple[int, int] | None = None  # random (H, W) crop of larger stored images

    @property
    def enabled(self) -> bool:
        return self.pad > 0 or self.flip or self.crop is not None


def default_augment(spec: DatasetSpec) -> AugmentConfig:
    """The training augmentation of each dataset: no flip for MNIST digits or SFDDD's hands.
    Your own data: IDX sets (MNIST look-alikes) as MNIST; a folder shifts by up to an eighth of
    its smaller side (CIFAR-10's 4 of 32) and never flips (text, digits and hands would change
    their meaning)."""
    if spec.name == "cifar10":
        return AugmentConfig(pad=4, flip=True)
    if spec.name in ("mnist", "idx"):
        return AugmentConfig(pad=2)
    if spec.name == "folder":
        return AugmentConfig(pad=max(1, min(spec.height, spec.width) // 8))
    if spec.crop is not None:  # SFDDD: random 32×32 crops of the 64×48 images
        return AugmentConfig(crop=spec.crop)
    return AugmentConfig()


def _gather_crops(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int):
    """Crop image i at (top[i], left[i]) to h×w in one indexing op. x: (N, C, H, W)."""
    n, c = x.shape[:2]
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, h, 1)
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return x[batch, chan, rows, cols]  # (N, C, h, w)


def random_crop(x: torch.Tensor, size: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    n, _, H, W = x.shape
    h, w = size
    # drawn where the generator lives (the training device: no copy per step), then moved if not
    top = torch.randint(0, H - h + 1, (n,), generator=gen, device=gen.device).to(x.device)
    left = torch.randint(0, W - w + 1, (n,), generator=gen, device=gen.device).to(x.device)
    return _gather_crops(x, top, left, h, w)


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    H, W = x.shape[-2:]
    h, w = size
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top:top + h, left:left + w]


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """x: (N, C, H, W) uint8 → augmented (N, C, h, w) uint8, on x's device."""
    if cfg.crop is not None:
        x = random_crop(x, cfg.crop, gen)
    if cfg.pad:
        size = tuple(x.shape[-2:])
        x = random_crop(F.pad(x, (cfg.pad,) * 4), size, gen)  # zero padding, as in the paper
    if cfg.flip:
        flip = (torch.rand(len(x), generator=gen, device=gen.device) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(flip, x.flip(-1), x)
    return x


def eval_view(x: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """What the network sees at evaluation: the centre crop where training crops, else as is."""
    if spec.crop is not None and tuple(x.shape[-2:]) != tuple(spec.crop):
        return center_crop(x, spec.crop)
    return x
