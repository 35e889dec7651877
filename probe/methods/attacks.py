"""Adversarial attacks in [0, 1] pixel space: FGSM and PGD, L∞ or L2, untargeted or targeted,
with a random start and restarts, for any nn.Module mapping [0, 1] images (N, C, H, W) to logits.

ε is in pixel units (0.3 on MNIST, 8/255 on CIFAR-10), because the Classifier normalizes
inside. Every step is projected onto the ε-ball around the clean image and then onto [0, 1]:
for L∞ the two boxes intersect and clamping to one then the other is the exact projection; for
L2, clamping to [0, 1] after the ball projection only moves pixels towards the clean image, so
the result stays inside both sets.

Why a loop of our own rather than captum.robust or torchattacks (benchmarks/attack_speed.py
measures all three on the same images):
- the gradient is taken with respect to the input only (parameters' requires_grad is switched
  off inside, and restored), and the loss is summed, so one image's step never depends on the
  batch it shares;
- early stop: an image that is already adversarial (misclassified, or at the target) is kept
  as it is and leaves the batch, so the remaining steps cost only what is still unbroken. The
  attack reports an image as robust only if no iterate of any restart broke it, which is at
  least as strong as judging the last iterate;
- probe's own ResNets are attacked through a copy with BatchNorm folded into the convs
  (probe.models.inference.inference_copy): the same outputs to float rounding, ~1.6x the steps/s;
- bf16 autocast (CPU or GPU) for the gradient steps when asked; an image counts as broken only
  after an fp32 forward pass confirms it, so the precision of the steps never flatters the
  attack.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from probe.methods.common import (MAX_BATCH, MAX_RESTARTS, MAX_STEPS, as_classes, as_input, class_count, evaluating,
                                  model_device, model_dtype)
from probe.models.inference import inference_copy
from probe.device import resolve_precision as device_precision
from probe.errors import ConfigError

NORMS = ("linf", "l2")
PRECISIONS = ("fp32", "bf16")
METHODS = ("fgsm", "pgd")


def check_eps(eps: float, what: str | None = None) -> float:
    """A finite ε ≥ 0, else ConfigError (`what` names it in the message, default "ε <value>")."""
    what = what or f"ε {eps!r}"
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: give a number ≥ 0 in pixel units, e.g. 0.3 or 8/255") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what}: give a number ≥ 0 in pixel units, e.g. 0.3 or 8/255")
    return value


def resolve_precision(precision: str, device) -> str:
    """The precision of the gradient steps: "auto" → what the device does natively among fp32
    and bf16 (probe.device.native_precision; on a CPU with native bf16 the steps run about twice
    as fast, benchmarks/attack_speed.py); "fp32" and "bf16" as given."""
    return device_precision(precision, device, allowed=PRECISIONS, option="precision")


def _check(norm: str, precision: str) -> None:
    if norm not in NORMS:
        raise ConfigError(f"norm {norm!r}: use one of {', '.join(NORMS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")


def _per_image(value, n: int, device, dtype=torch.float32) -> torch.Tensor:
    """A float or an (N,) tensor → (N, 1, 1, 1) of `dtype`, to broadcast over an image batch."""
    t = torch.as_tensor(value, dtype=dtype, device=device)
    return (t.expand(n) if t.ndim == 0 else t.reshape(n)).view(n, 1, 1, 1)


def _norm2(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # (N, 1, 1, 1)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps, norm: str = "linf") -> torch.Tensor:
    """x_adv moved onto the ε-ball around x (L∞ or L2; eps a float or one per image), then onto
    [0, 1]. Returns a new tensor."""
    e = _per_image(eps, len(x), x.device, x.dtype)
    delta = x_adv - x
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, e), -e)
    elif norm == "l2":
        delta = delta * (e / _norm2(delta).clamp_min(1e-12)).clamp(max=1.0)
    else:
        raise ConfigError(f"norm {norm!r}: use one of {', '.join(NORMS)}")
    return (x + delta).clamp_(0, 1)


def random_in_ball(x: torch.Tensor, eps, norm: str = "linf", generator=None) -> torch.Tensor:
    """A point drawn uniformly from the ε-ball around x (L∞: each pixel in [-ε, ε]; L2: uniform
    in the ball's volume), then clamped to [0, 1]."""
    e = _per_image(eps, len(x), x.device, x.dtype)
    like = {"generator": generator, "device": x.device, "dtype": x.dtype}
    if norm == "linf":
        delta = (torch.rand(x.shape, **like) * 2 - 1) * e
    else:
        d = x[0].numel()
        direction = torch.randn(x.shape, **like)
        direction = direction / _norm2(direction).clamp_min(1e-12)
        radius = torch.rand(len(x), **like).pow(1 / d).view(-1, 1, 1, 1)
        delta = direction * radius * e
    return (x + delta).clamp_(0, 1)


def step_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit size: sign(g) for L∞, g/‖g‖₂ for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / _norm2(grad).clamp_min(1e-12)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def attack_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, *,
                    targeted: bool = False, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the attack's objective with respect to the images, and the logits.
    Untargeted: ascend the cross-entropy of the true labels; targeted (`labels` are the
    targets): ascend log p(target). Summed over the batch, so each image's gradient is its own.
    Call inside `evaluating(model)`; returns (grad (N, C, H, W), logits (N, K)), both in x's
    dtype (float32, or float64 for a float64 model: bf16 autocast logits are cast back up)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with _autocast(x.device, precision):
            logits = model(x)
        logits = logits.to(x.dtype)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        grad, = torch.autograd.grad(-loss if targeted else loss, x)
    return grad, logits.detach()


def succeeded(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """(N,) bool: at the target (targeted) or away from the true class (untargeted)."""
    pred = logits.argmax(1)
    return pred == labels if targeted else pred != labels


def _setup(model, images, labels, target, batch_size, norm, precision):
    """The attack's goal (N,): the labels, or the targets where `target` is given (one class or
    one per image), each a class of the model; and whether the attack is targeted."""
    _check(norm, precision)
    if not 1 <= batch_size <= MAX_BATCH:
        raise ConfigError(f"batch size must be from 1 to {MAX_BATCH:,}, not {batch_size}")
    k = class_count(model, images) if len(images) else None
    labels = as_classes(labels, len(images), k)
    if target is None:
        return labels, False
    return as_classes(target, len(images), k, what="target"), True


def check_linf_eps(values, norm: str, option: str = "ε") -> None:
    """An L∞ ε beyond 1 (the whole pixel range) is ε/255 mistyped: a ConfigError with the value meant."""
    beyond = [float(v) for v in values if float(v) > 1]
    if norm == "linf" and beyond:
        raise ConfigError(f"{option} {beyond[0]:.10g}: an L∞ ε is in pixel units, at most 1 (did you mean "
                          f"{beyond[0]:.10g}/255 = {beyond[0] / 255:.4g}?)")


def _eps_tensor(eps, n: int, norm: str) -> torch.Tensor:
    """ε as float64: one value, or one per image of n; finite, ≥ 0 and (L∞) ≤ 1, else ConfigError."""
    try:
        eps_all = torch.as_tensor(eps, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"ε {eps!r}: give a number ≥ 0 in pixel units, or one per image") from None
    if eps_all.ndim > 1 or (eps_all.ndim == 1 and len(eps_all) != n):
        raise ConfigError(f"ε: give one value, or one per image ({n}), not a tensor of shape {tuple(eps_all.shape)}")
    if (eps_all < 0).any() or not torch.isfinite(eps_all).all():
        raise ConfigError(f"ε must be finite and ≥ 0, not {eps!r}")
    check_linf_eps(eps_all.flatten().tolist(), norm, "eps")
    return eps_all


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps, *, norm: str = "linf",
         target=None, batch_size: int = 500, precision: str = "fp32", progress=None) -> torch.Tensor:
    """The fast gradient (sign) method: one step of size ε from each image, ascending the loss
    of its label (or descending towards `target`: a class index or one per image), then
    clamped to [0, 1]. norm="linf" is Goodfellow et al.'s FGSM (x + ε·sign(∇)); "l2" the fast
    gradient method (x + ε·∇/‖∇‖₂). eps: a float or one per image.

    images: (N, C, H, W) uint8 or float [0, 1]; labels (N,). Returns the adversarial images,
    (N, C, H, W) in the model's dtype on the CPU. The model's mode, .grad and requires_grad are
    restored."""
    goal, targeted = _setup(model, images, labels, target, batch_size, norm, precision)
    device = model_device(model)
    model = inference_copy(model)  # probe's ResNets: BatchNorm folded, the caller's model untouched
    eps_all = _eps_tensor(eps, len(images), norm)
    out = []
    with evaluating(model, frozen=True):
        for start in range(0, len(images), batch_size):
            x = as_input(images[start:start + batch_size], model)
            e = eps_all if eps_all.ndim == 0 else eps_all[start:start + len(x)]
            grad, _ = attack_gradient(model, x, goal[start:start + len(x)].to(device),
                                      targeted=targeted, precision=precision)
            step = step_direction(grad, norm) * _per_image(e, len(x), device, x.dtype)
            out.append(project(x + step, x, e.to(device, x.dtype), norm).cpu())
            if progress is not None:
                progress(start + len(x))
    return torch.cat(out) if out else torch.empty(0, *images.shape[1:], dtype=model_dtype(model))


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps, *, norm: str = "linf",
        steps: int = 40, step_size=None, random_start: bool = True, restarts: int = 1,
        target=None, early_stop: bool = True, seed: int = 0, batch_size: int = 500,
        precision: str = "fp32", progress=None) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018): `steps` steps of `step_size` (default
    2.5·ε/steps, Madry et al.'s rule) in the steepest direction of the norm, each projected onto
    the ε-ball and [0, 1]; from a random point of the ball (`random_start`), and again from a
    new random point for each of `restarts` − 1 restarts on the images not yet broken.
    Untargeted: away from `labels`; targeted: towards `target` (a class index or one per image).

    early_stop: keep an image as soon as an iterate is adversarial (confirmed in fp32) and stop
    spending steps on it. Without it, each restart's last iterate is kept (torchattacks'
    behaviour). eps and step_size: floats or one per image. precision "bf16" runs the gradient
    steps under bf16 autocast; success is always judged in fp32.

    images: (N, C, H, W) uint8 or float [0, 1]; labels (N,). Returns the adversarial images,
    (N, C, H, W) in the model's dtype on the CPU. The model's mode, .grad and requires_grad are
    restored. progress: an optional callable(n_done) after each step (the images of the batch
    broken so far counted done) and each batch."""
    goal, targeted = _setup(model, images, labels, target, batch_size, norm, precision)
    if not 1 <= steps <= MAX_STEPS:
        raise ConfigError(f"steps must be from 1 to {MAX_STEPS:,}, not {steps}")
    if not 1 <= restarts <= MAX_RESTARTS:
        raise ConfigError(f"restarts must be from 1 to {MAX_RESTARTS}, not {restarts}")
    device = model_device(model)
    eps_all = _eps_tensor(eps, len(images), norm)
    if step_size is None:
        alpha_all = 2.5 * eps_all / steps
    else:
        alpha_all = torch.as_tensor(step_size, dtype=torch.float64)
        if (alpha_all <= 0).any() or not torch.isfinite(alpha_all).all():
            raise ConfigError(f"step size must be finite and > 0, not {step_size!r}")
    generator = torch.Generator(device=device).manual_seed(seed)
    model = inference_copy(model)  # probe's ResNets: BatchNorm folded, the caller's model untouched
    out = []
    with evaluating(model, frozen=True):
        for start in range(0, len(images), batch_size):
            x = as_input(images[start:start + batch_size], model)
            n = len(x)
            e = (eps_all if eps_all.ndim == 0 else eps_all[start:start + n]).expand(n).to(device, x.dtype)
            a = (alpha_all if alpha_all.ndim == 0 else alpha_all[start:start + n]).expand(n).to(device, x.dtype)
            tick = None if progress is None else partial(_tick, progress, start)
            out.append(_pgd_batch(model, x, goal[start:start + n].to(device), e, a, norm=norm,
                                  steps=steps, random=random_start, restarts=restarts,
                                  targeted=targeted, early_stop=early_stop, generator=generator,
                                  precision=precision, tick=tick).cpu())
            if progress is not None:
                progress(start + n)
    return torch.cat(out) if out else torch.empty(0, *images.shape[1:], dtype=model_dtype(model))


@torch.no_grad()
def _confirm(model, x, goal, targeted) -> torch.Tensor:
    """(N,) bool: adversarial by an fp32 forward pass."""
    return succeeded(model(x).float(), goal, targeted)


def _tick(progress, start: int, done: torch.Tensor) -> None:
    progress(start + int(done.sum()))


def _pgd_batch(model, x, goal, eps, alpha, *, norm, steps, random, restarts, targeted, early_stop,
               generator, precision, tick=None) -> torch.Tensor:
    """One batch: x (N, C, H, W) float [0, 1] on the model's device; eps, alpha (N,). tick: an
    optional callable(done), done (N,) bool, after each step: a long batch shows it moves (and
    a report's process takes the cores other processes leave: probe.parallel)."""
    result = x.clone()
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    done |= eps <= 0  # nothing to search: the clean image is the answer
    for _ in range(restarts):
        idx = (~done).nonzero().flatten()  # (M,) the images still unbroken
        if len(idx) == 0:
            break
        x0, g0, e, a = x[idx], goal[idx], eps[idx], alpha[idx]
        adv = random_in_ball(x0, e, norm, generator) if random else x0.clone()
        for _ in range(steps):
            grad, logits = attack_gradient(model, adv, g0, targeted=targeted, precision=precision)
            if early_stop:
                hit = succeeded(logits, g0, targeted)
                if precision != "fp32" and hit.any():
                    hit[hit.clone()] = _confirm(model, adv[hit], g0[hit], targeted)
                if hit.any():
                    result[idx[hit]] = adv[hit]
                    done[idx[hit]] = True
                    keep = ~hit
                    idx, x0, g0, e, a, adv, grad = (t[keep] for t in (idx, x0, g0, e, a, adv, grad))
                    if len(idx) == 0:
                        break
            adv = project(adv + step_direction(grad, norm) * a.view(-1, 1, 1, 1), x0, e, norm)
            if tick is not None:
                tick(done)
        if len(idx):
            result[idx] = adv  # the last iterate: judged below, and by the caller
            done[idx] = _confirm(model, adv, g0, targeted)
    return result


def perturbation_size(adversarial: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L∞, L2) of each image's change, (N,) each, in pixel units."""
    a = adversarial.float() / 255 if adversarial.dtype == torch.uint8 else adversarial.float()
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    delta = (a.cpu() - x.cpu()).flatten(1)
    return delta.abs().amax(1), delta.norm(dim=1)


def attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps, *, method: str = "pgd",
           norm: str = "linf", steps: int = 40, step_size=None, random_start: bool = True,
           restarts: int = 1, target=None, early_stop: bool = True, seed: int = 0,
           batch_size: int = 500, precision: str = "fp32", progress=None) -> torch.Tensor:
    """fgsm(...) or pgd(...) by name, with the same arguments (FGSM ignores the PGD-only ones)."""
    if method == "fgsm":
        return fgsm(model, images, labels, eps, norm=norm, target=target, batch_size=batch_size,
                    precision=precision, progress=progress)
    if method == "pgd":
        return pgd(model, images, labels, eps, norm=norm, steps=steps, step_size=step_size,
                   random_start=random_start, restarts=restarts, target=target,
                   early_stop=early_stop, seed=seed, batch_size=batch_size, precision=precision,
                   progress=progress)
    raise ConfigError(f"method {method!r}: use one of {', '.join(METHODS)}")


def parse_eps_list(text: str | Sequence, option: str = "--eps") -> list[float]:
    """'0,0.1,0.3' or '0 2/255 8/255' (fractions allowed) → sorted distinct floats ≥ 0. option:
    how the caller names the list in its messages (the CLI's --eps, the API's eps)."""
    parts = [p for piece in text.split(",") for p in (piece.split() or [""])] if isinstance(text, str) else list(text)
    example = f"{option} 0,0.1,0.3" if option.startswith("--") else f"{option}='0,0.1,0.3'"
    if not parts or parts == [""]:
        raise ConfigError(f"{option}: give at least one value, e.g. {example}")
    if "" in parts:  # "0.1,,0.2": a value left out, not one to skip
        raise ConfigError(f"{option} {text!r}: an empty value (two commas in a row, or one at an end); give values "
                          f"≥ 0 in pixel units, e.g. {example}")
    values = []
    for part in parts:
        item = str(part).strip()
        try:
            if "/" in item:
                num, den = item.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(item)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{option} {item!r}: not a number; give values ≥ 0 in pixel units, "
                              f"e.g. {example} or 0,2/255,8/255") from None
        values.append(check_eps(value, f"{option} {item}"))
    return sorted(set(values))
