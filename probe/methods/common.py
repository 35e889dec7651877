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
RANGE_SLACK = 1e-5  # float images a rounding outside [0, 1] are still [0, 1] images (at least: see _check_range)


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
    check_images(images)
    if isinstance(to, nn.Module):
        to, dtype = model_device(to), dtype or model_dtype(to)
    return to_input(images.to(to, non_blocking=True), dtype=dtype or torch.float32)


def check_images(images: torch.Tensor) -> None:
    """(N, C, H, W) uint8 pixels or floats in [0, 1] (up to a rounding of their dtype), else a
    ConfigError that says what to do about what they hold."""
    if images.ndim != 4:
        raise ConfigError(f"images must be (N, C, H, W), not of shape {tuple(images.shape)}")
    if not images.is_floating_point() and images.dtype != torch.uint8:  # int64 0..255 would be taken as 0..255 floats
        raise ConfigError(f"images of dtype {images.dtype}: give uint8 pixels (0..255) or floats in [0, 1]")
    if images.is_floating_point() and images.numel():
        _check_range(images)


def _check_range(images: torch.Tensor) -> None:
    lo, hi = torch.aminmax(images.detach())
    lo, hi = torch.stack([lo, hi]).float().tolist()  # one sync on a GPU
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError("the images hold NaN or infinite values: give uint8 pixels or floats in [0, 1]")
    slack = max(RANGE_SLACK, 2 * torch.finfo(images.dtype).eps)  # bfloat16's 1 + 1 ulp is 1.0078
    if lo >= -slack and hi <= 1 + slack:
        return
    if hi > 1.5 and lo >= 0:
        hint = "divide 0..255 floats by 255"
    elif lo >= -0.1 and hi <= 1.1:
        hint = "clamp them to [0, 1]: a resize or a blur overshoots a little"
    else:
        hint = "undo any normalization: the model should normalize its input itself"
    raise ConfigError(f"the images hold values from {lo:g} to {hi:g}: give uint8 pixels or floats in [0, 1] ({hint})")


def as_classes(values, n: int, num_classes: int | None, what: str = "labels", unlabelled: bool = False) -> torch.Tensor:
    """Class indices (N,) int64 on the CPU from one value for all n images or one per image: whole
    numbers (floats that are whole are taken) in 0..num_classes-1 (num_classes None: any ≥ 0),
    or -1 for an image without a label where `unlabelled`. Else a ConfigError naming `what`."""
    try:
        t = torch.as_tensor(values).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{what} {values!r}: give class indices (whole numbers)") from None
    if t.dtype == torch.bool or t.is_complex() or (t.is_floating_point() and not bool((t == t.round()).all())):
        shown = t.flatten()[0].item() if t.dtype == torch.bool else \
            t.flatten()[(t != t.round()).flatten().nonzero()[0]].item()
        raise ConfigError(f"{what}: {shown!r} is not a class index; give whole numbers")
    t = t.long()
    if t.ndim == 0:
        t = t.expand(n).clone()
    if t.ndim == 1 and len(t) != n:
        raise ConfigError(f"{n} images but {len(t)} {what}: give one per image")
    if t.ndim != 1:
        raise ConfigError(f"{what}: give one class for all {n} images or one per image, not a tensor of shape "
                          f"{tuple(t.shape)}")
    low = -1 if unlabelled else 0
    bad = (t < low) | ((t >= num_classes) if num_classes is not None else False)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        within = f"one of the model's classes 0..{num_classes - 1}" if num_classes is not None else "a class index (0 or more)"
        raise ConfigError(f"{what}: {int(t[i])} (image {i}) is not {within}" + (" or -1 (no label)" if unlabelled else ""))
    return t


def class_count(model: nn.Module, images: torch.Tensor) -> int:
    """K, the classes `model` scores: the width of its logits for the first image (a ConfigError
    where it does not return logits (N, K))."""
    return class_probabilities(model, images[:1]).shape[1]


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
