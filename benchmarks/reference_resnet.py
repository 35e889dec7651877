"""The reference for speed comparisons (DESIGN.md, "The reference for speed comparisons").

The common way a CIFAR ResNet is trained in PyTorch, as in the blog posts that reproduce
He et al. 2015: convs that keep their bias, BatchNorm, functional F.relu, option-A shortcuts by
nearest-neighbour subsampling plus concatenated zero channels; fp32, NCHW; a DataLoader with 2
workers whose Dataset pads, crops and flips one uint8 HWC image at a time in NumPy; SGD with
momentum 0.9, lr 0.1, weight decay 1e-4, cross-entropy.

It is written once, here, and only timed: nothing in probe imports it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


class ShortcutA(nn.Module):
    """Option A: take every stride-th pixel, append zero channels."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        if self.extra:
            zeros = x.new_zeros(x.shape[0], self.extra, x.shape[2], x.shape[3])
            x = torch.cat([x, zeros], dim=1)
        return x


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        # nn.Conv2d keeps its bias by default, and the blog posts leave it there.
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = (ShortcutA(in_planes, planes, stride)
                         if stride != 1 or in_planes != planes else nn.Identity())

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNetCifar(nn.Module):
    """6n+2 layers: conv → 3 stages of n blocks (16/32/64 filters × width) → pool → fc."""

    def __init__(self, n: int = 3, num_classes: int = 10, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        planes = [max(1, int(round(f * width))) for f in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], kernel_size=3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm2d(planes[0])
        layers, in_planes = [], planes[0]
        for s, p in enumerate(planes):
            for b in range(n):
                layers.append(BasicBlock(in_planes, p, 2 if s > 0 and b == 0 else 1))
                in_planes = p
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet20(**kw) -> ResNetCifar:
    return ResNetCifar(3, **kw)


class AugmentedImages(Dataset):
    """uint8 (N, H, W, C) images; each item padded, randomly cropped, maybe flipped, normalized."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, pad: int = 4,
                 flip: bool = True):
        assert images.dtype == np.uint8 and images.ndim == 4, (images.dtype, images.shape)
        self.images, self.labels = images, labels
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.pad, self.flip = pad, flip

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]  # (H, W, C) uint8
        h, w = img.shape[:2]
        if self.pad:
            p = self.pad
            img = np.pad(img, ((p, p), (p, p), (0, 0)), mode="constant")
            top, left = np.random.randint(0, 2 * p + 1, size=2)
            img = img[top:top + h, left:left + w]
        if self.flip and np.random.rand() < 0.5:
            img = img[:, ::-1]
        x = (img.astype(np.float32) / 255.0 - self.mean) / self.std
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))  # (C, H, W) float32
        return x, int(self.labels[i])


def _seed_numpy(worker_id: int) -> None:
    # Forked workers would otherwise share NumPy's random state.
    np.random.seed((torch.initial_seed() + worker_id) % 2**32)


def make_loader(dataset: Dataset, batch_size: int = 128, num_workers: int = 2,
                persistent_workers: bool = True) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                      num_workers=num_workers, worker_init_fn=_seed_numpy,
                      persistent_workers=persistent_workers and num_workers > 0)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> int:
    """One pass over the loader, as the blog posts write it. Returns the images seen."""
    model.train()
    seen, running_loss = 0, 0.0
    for x, y in loader:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        seen += len(y)
    return seen
