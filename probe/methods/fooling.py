"""Fooling images: images the model assigns to a chosen class with probability ≥ a confidence,
made from random noise (gradient ascent on log p(target)) or from correctly classified images
of other classes (the smallest L∞ change that does it).

A fooling image only counts if it still fools the model once saved as an 8-bit image, so every
image here ends on the 1/255 grid, and is judged there: the ascent runs in continuous pixel
values until p(target) passes the goal, the image is rounded to the grid, and where rounding
broke it the ascent continues on the grid itself (steps of ±1/255 per pixel, in the direction
of the gradient's sign), which no later rounding can undo. The images come back as uint8, so
what is saved is bit for bit what was judged.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from probe.methods.attacks import attack_gradient, project
from probe.methods.common import as_input, class_probabilities, evaluating, model_device
from probe.errors import ConfigError

STYLES = ("raw", "natural")
RAW_STEPS, NATURAL_STEPS, DATASET_STEPS = 200, 150, 40  # continuous ascent budgets (per image)
REPAIR_STEPS = 50  # ±1/255 steps on the grid after rounding
GROW_LEVELS = (8, 16, 32, 64, 128, 255)  # L∞ bounds (in 1/255) tried in turn until one works


@dataclass
class Fooling:
    """M fooling images (tensors (M,) or (M, C, H, W)); the fields after `seconds` are set for
    images made from data only (None from noise)."""
    kind: str  # "noise" or "dataset"
    style: str | None
    confidence: float
    target: torch.Tensor  # (M,)
    images: torch.Tensor  # (M, C, H, W) uint8: the fooling images, on the 8-bit grid
    p_target: torch.Tensor  # p(target) of the 8-bit image, fp32
    predicted: torch.Tensor  # the model's class for the 8-bit image
    p_continuous: torch.Tensor  # p(target) of the continuous image just before rounding
    p_rounded: torch.Tensor  # right after rounding, before any repair on the grid
    repair_steps: torch.Tensor  # steps on the grid after rounding
    steps: torch.Tensor  # gradient steps in all (every round of the search, from data)
    seconds: torch.Tensor  # from the start until the image was final
    source_index: torch.Tensor | None = None  # into the images given
    source_label: torch.Tensor | None = None
    original: torch.Tensor | None = None  # (M, C, H, W) uint8
    p_source_original: torch.Tensor | None = None  # p(source) of the original
    p_target_original: torch.Tensor | None = None
    p_source: torch.Tensor | None = None  # p(source) of the fooling image
    eps: torch.Tensor | None = None  # the L∞ bound of the search's last success, in pixels
    linf: torch.Tensor | None = None  # the change's actual size, in pixels
    l2: torch.Tensor | None = None
    shortfall: dict | None = None  # target → images missing (too few candidates)

    def __len__(self) -> int:
        return len(self.target)

    @property
    def fooled(self) -> torch.Tensor:
        """(M,) bool: p(target) ≥ confidence on the 8-bit image."""
        return self.p_target >= self.confidence

    @property
    def rounding_broke(self) -> torch.Tensor:
        """(M,) bool: reached the goal in continuous values, lost it when rounded."""
        goal = goal_for(self.confidence)
        return (self.p_continuous >= goal) & (self.p_rounded < goal)

    def records(self, class_names=None) -> list[dict]:
        name = (lambda k: class_names[k]) if class_names is not None else (lambda k: k)
        out = []
        for i in range(len(self)):
            r = {"target": name(int(self.target[i])), "p_target": round(float(self.p_target[i]), 6),
                 "fooled": bool(self.fooled[i]), "predicted": name(int(self.predicted[i])),
                 "p_before_rounding": round(float(self.p_continuous[i]), 6),
                 "p_after_rounding": round(float(self.p_rounded[i]), 6),
                 "repair_steps": int(self.repair_steps[i]), "steps": int(self.steps[i]),
                 "seconds": round(float(self.seconds[i]), 3)}
            if self.source_index is not None:
                r |= {"source": name(int(self.source_label[i])), "index": int(self.source_index[i]),
                      "p_source_original": round(float(self.p_source_original[i]), 6),
                      "p_target_original": round(float(self.p_target_original[i]), 6),
                      "p_source": round(float(self.p_source[i]), 6),
                      "eps": None if math.isnan(float(self.eps[i])) else round(float(self.eps[i]), 6),
                      "eps_255": None if math.isnan(float(self.eps[i])) else round(float(self.eps[i]) * 255),
                      "linf": round(float(self.linf[i]), 6), "linf_255": round(float(self.linf[i]) * 255),
                      "l2": round(float(self.l2[i]), 6)}
            out.append(r)
        return out


def goal_for(confidence: float) -> float:
    """The threshold the ascent aims for: a hair above the confidence (1% of the remaining
    1 − confidence), so that an image judged again in another batch, whose float sums may
    round differently, is still above the confidence."""
    return 1 - (1 - confidence) * 0.99


def check_confidence(confidence: float) -> float:
    try:
        c = float(confidence)
    except (TypeError, ValueError):
        raise ConfigError(f"--confidence {confidence!r}: give a probability between 0 and 1, e.g. 0.99") from None
    if not (0 < c < 1) or math.isnan(c):
        raise ConfigError(f"--confidence {confidence!r}: give a probability between 0 and 1 "
                          "(exclusive), e.g. 0.99")
    return c


def _check_common(n: int, confidence: float, targets, num_classes: int | None = None) -> list[int]:
    if n < 1:
        raise ConfigError(f"--n {n}: make at least 1 image per target")
    check_confidence(confidence)
    targets = [int(t) for t in targets]
    if not targets:
        raise ConfigError("no target class given")
    if num_classes is not None:
        for t in targets:
            if not 0 <= t < num_classes:
                raise ConfigError(f"target class {t} is not one of 0..{num_classes - 1}")
    return targets


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of each channel (reflect padding), (N, C, H, W) → same."""
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _jitter(x: torch.Tensor, pixels: int, generator=None) -> torch.Tensor:
    """Each image rolled by its own random shift of at most `pixels` in each direction."""
    shifts = torch.randint(-pixels, pixels + 1, (len(x), 2), generator=generator)  # (N, 2)
    out = torch.empty_like(x)
    for dy, dx in torch.unique(shifts, dim=0).tolist():
        same = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).to(x.device)
        out[same] = torch.roll(x[same], (dy, dx), dims=(2, 3))
    return out


@dataclass
class _Natural:
    """Simonyan et al. 2014's class visualisation, with the regularizers of Yosinski et al. 2015:
    L2 decay towards a centre colour, a Gaussian blur every few steps, random jitter."""
    center: torch.Tensor  # (1, C, 1, 1)
    decay: float = 0.01
    blur_every: int = 4
    blur_sigma: float = 0.5
    jitter: int = 1


def _fool_loop(model, x: torch.Tensor, target: torch.Tensor, *, goal: float, steps: int, repair: int,
               lr: torch.Tensor, min_steps: int = 0, x0: torch.Tensor | None = None, eps_level: torch.Tensor | None = None,
               natural: _Natural | None = None, generator=None, started: float | None = None):
    """Ascend log p(target) from x (M, C, H, W) float [0, 1] on the model's device.

    Phase 0, continuous: from data (x0, eps_level given) a signed step of lr (M,) projected onto
    the L∞ ball of eps_level/255 around x0; from noise a step of lr along g/rms(g), and for the
    natural style (`natural`) the regularizers during the first `min_steps` steps, which run in
    full even where the goal is reached at once (the regularizers need time to shape the
    image); after them plain ascent. An image that reaches `goal` (after `min_steps`), or runs
    out of `steps`, is rounded to the grid: phase 1, ±1/255 steps along sign(g) inside the same
    bounds, at most `repair` of them. Each image stops as soon as a forward pass puts it at or above `goal`.
    Returns a dict of (M,) tensors and the uint8 images. Call inside evaluating(model) with the
    parameters' requires_grad off."""
    m = len(x)
    dev = x.device
    started = time.perf_counter() if started is None else started
    lo = hi = None
    if x0 is not None:
        lvl0 = (x0 * 255).round()
        lo = (lvl0 - eps_level.view(-1, 1, 1, 1)).clamp(0, 255)  # (M, C, H, W) levels
        hi = (lvl0 + eps_level.view(-1, 1, 1, 1)).clamp(0, 255)
    phase = torch.zeros(m, dtype=torch.long, device=dev)  # 0 continuous, 1 on the grid
    count = torch.zeros(m, dtype=torch.long, device=dev)  # steps in the current phase
    out = {"steps": torch.zeros(m, dtype=torch.long), "repair_steps": torch.zeros(m, dtype=torch.long),
           "p_continuous": torch.zeros(m), "p_rounded": torch.zeros(m), "seconds": torch.zeros(m)}
    result = torch.zeros(x.shape, dtype=torch.uint8)
    idx = torch.arange(m, device=dev)
    x = x.clone()
    total = 0
    while len(idx):
        grad, logits = attack_gradient(model, x, target[idx], targeted=True)
        p = logits.softmax(1).gather(1, target[idx].view(-1, 1)).flatten()  # (A,)
        reached = p >= goal
        budget = torch.where(phase == 0, torch.full_like(count, steps), torch.full_like(count, repair))
        out_of_steps = count >= budget
        # Phase 0 images that reached the goal or ran out: round onto the grid, judged next pass.
        to_grid = (phase == 0) & ((reached & (count >= min_steps)) | out_of_steps)
        # Phase 1 images that reached the goal or ran out: final.
        final = (phase == 1) & (reached | out_of_steps)
        if to_grid.any():
            j = idx[to_grid].cpu()
            out["p_continuous"][j] = p[to_grid].cpu()
            out["steps"][j] += count[to_grid].cpu()
            level = (x[to_grid] * 255).round()
            if lo is not None:
                level = torch.minimum(torch.maximum(level, lo[idx[to_grid]]), hi[idx[to_grid]])
            x[to_grid] = level / 255
            phase[to_grid] = 1
            count[to_grid] = 0
        if final.any():
            j = idx[final].cpu()
            out["repair_steps"][j] = count[final].cpu()
            out["steps"][j] += count[final].cpu()
            result[j] = (x[final] * 255).round().to(torch.uint8).cpu()
            out["seconds"][j] = time.perf_counter() - started
        first_on_grid = (phase == 1) & (count == 0) & ~to_grid
        if first_on_grid.any():
            out["p_rounded"][idx[first_on_grid].cpu()] = p[first_on_grid].cpu()
        keep = ~final
        # Images just rounded need a fresh forward pass: no step for them this time.
        move = keep & ~to_grid
        # Step: continuous or on the grid.
        cont = move & (phase == 0)
        grid = move & (phase == 1)
        if cont.any():
            xs, g = x[cont], grad[cont]
            if x0 is not None:
                xs = project(xs + lr[idx[cont]].view(-1, 1, 1, 1) * g.sign(), x0[idx[cont]],
                             eps_level[idx[cont]] / 255, "linf")
            else:
                rms = g.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
                xs = xs + lr[idx[cont]].view(-1, 1, 1, 1) * g / rms
                reg = count[cont] < min_steps  # the natural style's regularized steps
                if natural is not None and reg.any():
                    xr = natural.center + (1 - natural.decay) * (xs[reg] - natural.center)
                    if natural.blur_every and total % natural.blur_every == natural.blur_every - 1:
                        xr = _blur(xr, natural.blur_sigma)
                    if natural.jitter:
                        xr = _jitter(xr, natural.jitter, generator)
                    xs[reg] = xr
                xs = xs.clamp(0, 1)
            x[cont] = xs
        if grid.any():
            level = (x[grid] * 255).round() + grad[grid].sign()
            if lo is not None:
                level = torch.minimum(torch.maximum(level, lo[idx[grid]]), hi[idx[grid]])
            x[grid] = level.clamp(0, 255) / 255
        count[move] += 1
        # Images rounded this pass keep their place; finished ones leave.
        idx, x, phase, count = idx[keep], x[keep], phase[keep], count[keep]  # lo, hi, x0: by idx
        total += 1
    out["images"] = result
    return out


def fool_from_noise(model: nn.Module, targets, *, shape: tuple[int, int, int], n: int = 4,
                    confidence: float = 0.99, style: str = "raw", steps: int | None = None,
                    repair_steps: int = REPAIR_STEPS, center=0.5, lr: float | None = None,
                    seed: int = 0) -> Fooling:
    """n images per target class, each from its own random noise, ascended until the model
    gives the target p ≥ confidence (or the step budget ends).

    style "raw": plain gradient ascent from uniform noise, the unrecognizable fooling images of
    Nguyen et al. 2015 (found there by evolution; here by gradient, as in the seed). "natural":
    from a faint noise around `center` (a colour per channel, e.g. the dataset mean), with L2
    decay towards it, a blur every 4 steps and 1-pixel jitter (Simonyan et al. 2014, Yosinski et
    al. 2015), which looks more like the class. shape: the network's (C, H, W).
    Returns a Fooling whose images are uint8 on the 8-bit grid, judged there."""
    if style not in STYLES:
        raise ConfigError(f"--style {style!r}: use raw or natural")
    targets = _check_common(n, confidence, targets)
    steps = steps if steps is not None else (RAW_STEPS if style == "raw" else NATURAL_STEPS)
    if steps < 1 or repair_steps < 0:
        raise ConfigError(f"--steps {steps}: give at least 1 step")
    device = model_device(model)
    g = torch.Generator().manual_seed(seed)
    target = torch.tensor(targets, dtype=torch.long).repeat_interleave(n)  # (M,) n per target, in order
    m = len(target)
    c = shape[0]
    centre = torch.as_tensor(center, dtype=torch.float32).reshape(-1)
    centre = (centre.expand(c) if centre.numel() == 1 else centre).view(1, c, 1, 1)
    if style == "raw":
        x = torch.rand(m, *shape, generator=g)
        natural = None
        rate = 0.02 if lr is None else lr
    else:
        x = _blur(torch.rand(m, *shape, generator=g), 1.0)  # smooth mid-grey noise: decay pulls it to the centre
        natural = _Natural(center=centre.to(device))
        rate = 0.03 if lr is None else lr
    started = time.perf_counter()
    with evaluating(model, frozen=True):
        # natural: `steps` regularized steps, then as many plain ones at most where the goal
        # is not reached yet (a model may give no class to smooth images).
        out = _fool_loop(model, x.to(device), target.to(device), goal=goal_for(confidence),
                         steps=steps if style == "raw" else 2 * steps, repair=repair_steps,
                         lr=torch.full((m,), rate, device=device), natural=natural,
                         min_steps=steps if style == "natural" else 0,
                         generator=g, started=started)
    probs = class_probabilities(model, out["images"])  # fp32, the 8-bit images
    return Fooling(kind="noise", style=style, confidence=confidence, target=target, images=out["images"],
                   p_target=probs.gather(1, target.view(-1, 1)).flatten(), predicted=probs.argmax(1),
                   p_continuous=out["p_continuous"], p_rounded=out["p_rounded"],
                   repair_steps=out["repair_steps"], steps=out["steps"], seconds=out["seconds"])


def choose_sources(predicted: torch.Tensor, labels: torch.Tensor, targets: list[int], n: int, *,
                   source: int | None = None, seed: int = 0) -> tuple[list[tuple[int, int]], dict]:
    """For each target, n correctly classified images of other classes (of `source` only, when
    given), in a seeded random order that takes the source classes in turn, so a row shows
    several classes. Returns [(image index, target)] and {target: missing count}."""
    g = torch.Generator().manual_seed(seed)
    right = (predicted == labels) & (labels >= 0)
    order = torch.randperm(len(labels), generator=g)
    pairs, shortfall = [], {}
    for t in targets:
        pools = {}
        for i in order.tolist():
            y = int(labels[i])
            if right[i] and y != t and (source is None or y == source):
                pools.setdefault(y, []).append(i)
        chosen = []
        classes = sorted(pools)
        start = t % len(classes) if classes else 0
        classes = classes[start:] + classes[:start]  # targets start on different source classes
        while len(chosen) < n and any(pools.values()):
            for y in classes:
                if pools[y] and len(chosen) < n:
                    chosen.append(pools[y].pop(0))
        pairs += [(i, t) for i in chosen]
        if len(chosen) < n:
            shortfall[t] = n - len(chosen)
    return pairs, shortfall


def fool_from_dataset(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targets, *,
                      n: int = 4, confidence: float = 0.99, source: int | None = None,
                      steps: int = DATASET_STEPS, repair_steps: int = REPAIR_STEPS, seed: int = 0,
                      batch_size: int = 500, progress=None) -> Fooling:
    """For each target, n correctly classified images of other classes, each changed as little
    as possible (in L∞) until the model gives the target p ≥ confidence.

    The search is over the L∞ bound in whole 1/255 steps: a targeted PGD (signed steps of
    2.5·bound/steps, at most `steps`, then rounding and grid repair) inside the bound; the bound
    grows (8, 16, 32, 64, 128, 255 /255) until an attempt works, then bisects between the
    largest bound that failed and the size of the smallest change that worked. Each attempt
    starts from the last one (a success projected into the smaller ball, or a failure).
    Every attempt is judged on the 8-bit image. images: (N, C, H, W) uint8 as the network sees
    them; labels (N,). progress: an optional callable(round, rounds_at_most)."""
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    if len(labels) != len(images):
        raise ConfigError(f"{len(images)} images but {len(labels)} labels")
    if images.dtype != torch.uint8:
        raise ConfigError("fooling from data needs the stored 8-bit images (uint8), so that the "
                          "change is a whole number of 1/255 steps")
    probs = class_probabilities(model, images, batch_size=batch_size)  # (N, K)
    targets = _check_common(n, confidence, targets, probs.shape[1])
    if source is not None and not 0 <= int(source) < probs.shape[1]:
        raise ConfigError(f"source class {source} is not one of 0..{probs.shape[1] - 1}")
    pairs, shortfall = choose_sources(probs.argmax(1), labels, targets, n, source=source, seed=seed)
    if not pairs:
        raise ConfigError("no correctly classified image of another class to start from")
    device = model_device(model)
    index = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    target = torch.tensor([t for _, t in pairs], dtype=torch.long)
    m = len(pairs)
    x0 = as_input(images[index], device)  # (M, C, H, W)
    goal = goal_for(confidence)
    original = images[index].clone()  # (M, C, H, W) uint8
    best = original.clone()  # uint8: the smallest change found so far (the original: none)
    last = original.clone()  # uint8: the last attempt's image (a failure's is a warm start too)
    found = torch.zeros(m, dtype=torch.bool)
    lo = torch.zeros(m)  # the largest bound (levels) known to fail
    hi = torch.full((m,), 255.0)  # the size of the smallest change that worked
    grow = torch.zeros(m, dtype=torch.long)  # the next bound to try while none has worked
    stats = {k: torch.zeros(m) for k in ("p_continuous", "p_rounded", "repair_steps", "seconds")}
    steps_total = torch.zeros(m, dtype=torch.long)
    started = time.perf_counter()
    rounds_at_most = len(GROW_LEVELS) + math.ceil(math.log2(255))
    tg = target.to(device)
    levels = torch.tensor(GROW_LEVELS, dtype=torch.float32)
    with evaluating(model, frozen=True):
        for r in range(rounds_at_most):
            growing = ~found & (grow < len(GROW_LEVELS))  # no success yet: the next bound up
            halving = found & (hi - lo > 1)  # a success: bisect below it
            active = (growing | halving).nonzero().flatten()
            if len(active) == 0:
                break
            level = torch.where(growing, levels[grow.clamp(max=len(GROW_LEVELS) - 1)], torch.floor((lo + hi) / 2))
            k = level[active]
            # Warm start: the last success (halving) or the last failure (growing), in the new ball.
            start = as_input(torch.where(halving[active].view(-1, 1, 1, 1), best[active], last[active]), device)
            start = project(start, x0[active], (k / 255).to(device), "linf")
            res = _fool_loop(model, start, tg[active], goal=goal, steps=steps, repair=repair_steps,
                             lr=(torch.clamp(2.5 * k / steps, min=1.0) / 255).to(device), x0=x0[active],
                             eps_level=k.to(device), started=started)
            p_new = class_probabilities(model, res["images"]).gather(1, target[active].view(-1, 1)).flatten()
            ok = p_new >= goal
            steps_total[active] += res["steps"]
            last[active] = res["images"]
            win, lose = active[ok], active[~ok]
            if len(win):
                best[win] = res["images"][ok]
                found[win] = True
                hi[win] = (res["images"][ok].float() - original[win].float()).abs().flatten(1).amax(1)
                for key in stats:
                    stats[key][win] = res[key][ok].float()
            lo[lose] = torch.maximum(lo[lose], level[lose])
            grow[lose[growing[lose]]] += 1
            if progress is not None:
                progress(r + 1, rounds_at_most)
    final = class_probabilities(model, best)  # (M, K) fp32, 8-bit images
    orig = probs[index]
    delta = (best.float() - original.float()) / 255
    return Fooling(kind="dataset", style=None, confidence=confidence, target=target, images=best,
                   p_target=final.gather(1, target.view(-1, 1)).flatten(), predicted=final.argmax(1),
                   p_continuous=stats["p_continuous"], p_rounded=stats["p_rounded"],
                   repair_steps=stats["repair_steps"].long(), steps=steps_total, seconds=stats["seconds"],
                   source_index=index, source_label=labels[index], original=original,
                   p_source_original=orig.gather(1, labels[index].view(-1, 1)).flatten(),
                   p_target_original=orig.gather(1, target.view(-1, 1)).flatten(),
                   p_source=final.gather(1, labels[index].view(-1, 1)).flatten(),
                   eps=torch.where(found, hi / 255, torch.full((m,), float("nan"))),
                   linf=delta.abs().flatten(1).amax(1), l2=delta.flatten(1).norm(dim=1),
                   shortfall=shortfall)
