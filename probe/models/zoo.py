"""Sizes and costs of models: parameters, multiply-adds, and the table `probe models zoo` shows."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from probe.data.spec import MAX_SIDE  # the largest input side a config is counted for
from probe.errors import ConfigError
from probe.models.resnet import get_config, list_presets


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)) -> int:
    """Multiply-adds of one image's forward pass, counting conv and linear layers only.

    A conv adds out_elements × (in_channels / groups) × kernel area, a linear layer
    out_elements × in_features; biases, BatchNorm, ReLU, pooling, shortcut additions and
    padding are not counted (together well under 1% of a ResNet's). This is what the ResNet
    paper calls "FLOPs" (ResNet-20 ≈ 41M at 32×32).
    """
    total = 0

    def conv_hook(m, inputs, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear_hook(m, inputs, out):
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    param = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None else torch.float32)
    was_training = model.training
    try:
        model.eval()  # BN running stats left untouched
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total




def check_input_shape(shape) -> tuple[int, int, int]:
    """(C, H, W): three positive integers (H, W at most MAX_SIDE), else a ConfigError."""
    try:
        c, h, w = shape
    except (TypeError, ValueError):
        raise ConfigError(f"input shape {shape!r}: expected channels×height×width") from None
    for name, v in (("channels", c), ("height", h), ("width", w)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"input shape {c}×{h}×{w}: {name} must be a positive integer, not {v!r}")
        if v > MAX_SIDE:
            raise ConfigError(f"input shape {c}×{h}×{w}: {name} {v} is more than {MAX_SIDE}")
    return c, h, w


def zoo_table(input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
              presets: Iterable[str] | None = None, width: float = 1.0) -> list[dict]:
    """One row per preset (default: all of list_presets()): name, depth, block, preact,
    shortcut, params, macs. Counted in closed form from each config (nothing is built: building
    the 20 presets and running each once took 7 s); the tests hold the closed forms to the
    counts of built nets."""
    input_shape = check_input_shape(input_shape)
    rows = []
    for name in presets if presets is not None else list_presets():
        cfg = get_config(name, in_channels=input_shape[0], num_classes=num_classes,
                         width=width)
        rows.append(dict(name=name, depth=cfg.depth, block=cfg.block, preact=cfg.preact,
                         shortcut=cfg.shortcut, params=cfg.num_parameters(),
                         macs=cfg.num_macs(input_shape)))
    return rows
