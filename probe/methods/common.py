"""What every analysis shares: the model's device, leaving the caller's model as it was found,
and batched, gradient-free class probabilities for any nn.Module mapping [0, 1] images to logits."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from probe.errors import ConfigError


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a stateless module)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def as_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 pixels or float [0, 1] images (N, C, H, W) → float32 [0, 1] on `device`."""
    if images.ndim != 4:
        raise ConfigError(f"images must be (N, C, H, W), not of shape {tuple(images.shape)}")
    x = images.to(device, non_blocking=True)
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


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
    device = model_device(model)
    out = []
    with evaluating(model), torch.inference_mode():
        for start in range(0, len(images), batch_size):
            logits = model(as_input(images[start:start + batch_size], device))
            out.append(logits.float().softmax(1).cpu())
            if progress is not None:
                progress(min(start + batch_size, len(images)))
    if not out:
        raise ConfigError("no images to analyse")
    return torch.cat(out)  # (N, K)
