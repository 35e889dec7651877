"""Classifier = Normalize → net: the network takes [0, 1] pixels, so attacks and saliency don't
have to know the dataset statistics."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from probe.errors import ConfigError


class Normalize(nn.Module):
    """(x - mean) / std per channel. Buffers, not parameters: they move with .to() and are
    saved in the state dict, but never trained."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std) or not len(mean):
            raise ConfigError(f"mean and std need one value per channel: {mean}, {std}")
        if min(std) <= 0:
            raise ConfigError(f"std must be positive: {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):  # (N, C, H, W) in [0, 1]
        return (x - self.mean) / self.std

    def extra_repr(self):
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Classifier(nn.Module):
    """[0, 1] images → logits. `classifier.net` is the bare network, for captum layer methods.

    A Classifier loaded from a model folder carries its dataset's `spec` (class slugs, display
    names, codes, input shape), so an analysis needs nothing but the model. mean and std None:
    a network that takes [0, 1] pixels itself (no Normalize).
    """

    def __init__(self, net: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None, spec=None):
        super().__init__()
        self.normalize = Normalize(mean, std) if mean is not None else nn.Identity()
        self.net = net
        self.spec = spec  # a DatasetSpec, or None for a bare network

    @classmethod
    def from_spec(cls, net: nn.Module, spec) -> "Classifier":
        """Normalize with a DatasetSpec's mean and std, and carry the spec."""
        return cls(net, spec.mean, spec.std, spec=spec)

    @property
    def cam_layer(self) -> nn.Module:
        """The layer Grad-CAM uses (the network's last feature map)."""
        return self.net.cam_layer

    def forward(self, x):  # (N, C, H, W) in [0, 1]
        return self.net(self.normalize(x))  # (N, num_classes)
