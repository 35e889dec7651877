"""What every analysis shares: the model's device, leaving the caller's model as it was found,
and batched, gradient-free class probabilities for any nn.Module mapping [0, 1] images to logits."""
from __future__ import annotations

import contextlib
import itertools
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from probe.errors import ConfigError
from probe.models.inference import batched_logits, to_input

# Upper bounds of options that loop or allocate (issue 18): beyond them a run never ends or takes
# the machine's memory, and a typo (a few zeros too many) is the likelier cause.
MAX_STEPS = 10_000  # gradient steps of an attack, a fooling run, SmoothGrad's samples, IG's steps
MAX_RESTARTS = 100  # PGD's restarts (default 1)
MAX_BATCH = 100_000  # images in one forward pass


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a stateless module)."""
    for t in itertools.chain(model.parameters(), model.buffers()):  # lazily: the first one is enough
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter or buffer (float32 for a stateless module)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def as_input(images: torch.Tensor, to: nn.Module | torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """uint8 pixels or float [0, 1] images (N, C, H, W) → float [0, 1] that a model takes.
    to: the model (its device and, by default, its dtype: a float64 model gets float64) or a
    device (float32 by default)."""
    if images.ndim != 4:
        raise ConfigError(f"images must be (N, C, H, W), not of shape {tuple(images.shape)}")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise ConfigError("the images hold NaN or infinite values: give uint8 pixels or floats in [0, 1]")
    if isinstance(to, nn.Module):
        to, dtype = model_device(to), dtype or model_dtype(to)
    return to_input(images.to(to, non_blocking=True), dtype=dtype or torch.float32)


@contextlib.contextmanager
def evaluating(model: nn.Module, frozen: bool = False) -> Iterator[nn.Module]:
    """Eval mode inside (and, if `frozen`, no parameter requiring gradients: input gradients
    only); afterwards the caller's mode, `.grad` and `requires_grad` as they were, so an analysis
    can be run in the middle of someone's notebook or training loop."""
    was_training = model.training
    params = list(model.parameters())
    grads = [p.grad for p in params]
    flags = [p.requires_grad for p in params]
    model.eval()
    if frozen:
        for p in params:
            p.requires_grad_(False)
    try:
        yield model
    finally:
        model.train(was_training)
        for p, g, f in zip(params, grads, flags):
            p.grad = g
            p.requires_grad_(f)


def class_probabilities(model: nn.Module, images: torch.Tensor, *, batch_size: int = 500,
                        progress=None) -> torch.Tensor:
    """Softmax probabilities (N, K) float32 on the CPU, in batches, on the model's device.
    progress: an optional callable(n_done) called after each batch."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, not {batch_size}")
    if len(images) == 0:
        raise ConfigError("no images to analyse")
    with evaluating(model):
        logits = batched_logits(model, images, lambda batch: as_input(batch, model), batch_size=batch_size,
                                progress=progress)
    return logits.softmax(1)  # (N, K)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of each channel of (N, C, H, W) → the same shape and dtype: the
    kernel reaches 3σ each side (ceil), reflect padding (replicate where the image is smaller
    than the kernel's radius). The one blur of probe: the insertion curve's start, the natural
    fooling images' regularizer."""
    if sigma <= 0:
        raise ConfigError(f"blur sigma must be positive, not {sigma}")
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t / sigma) ** 2 / 2)
    k = k / k.sum()
    c = x.shape[1]
    mode = "reflect" if radius < min(x.shape[-2:]) else "replicate"
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, radius, radius), mode=mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
