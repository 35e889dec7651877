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
from torch import nn

from probe.errors import ConfigError
from probe.methods.attacks import attack_gradient, project
from probe.methods.common import as_input, class_probabilities, evaluating, gaussian_blur, model_device, model_dtype
from probe.models.inference import inference_copy

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

    # What happened to each image on its way, judged against the confidence asked for: reached
    # (continuous image) − broken (by rounding) + rounded up + repaired (on the grid) − lost on the
    # grid = fooled (the 8-bit image); rounded up and lost on the grid are rare (an ascent that
    # stopped just short of the confidence, a grid step that lowered p) but counted.
    @property
    def reached(self) -> torch.Tensor:
        """(M,) bool: p(target) ≥ confidence on the continuous image, just before rounding."""
        return self.p_continuous >= self.confidence

    @property
    def rounded_fools(self) -> torch.Tensor:
        """(M,) bool: p(target) ≥ confidence right after rounding to 8 bits, before any grid step."""
        return self.p_rounded >= self.confidence

    @property
    def broken_by_rounding(self) -> torch.Tensor:
        """(M,) bool: reached the confidence in continuous values, lost it when rounded."""
        return self.reached & ~self.rounded_fools

    @property
    def repaired(self) -> torch.Tensor:
        """(M,) bool: below the confidence after rounding, fooling after the ±1/255 steps on the grid."""
        return ~self.rounded_fools & self.fooled

    def records(self, class_names=None) -> list[dict]:
        name = (lambda k: class_names[k]) if class_names is not None else (lambda k: k)
        out = []
        for i in range(len(self)):
            r = {"target": name(int(self.target[i])), "p_target": round(float(self.p_target[i]), 6),
                 "fooled": bool(self.fooled[i]), "predicted": name(int(self.predicted[i])),
                 "p_before_rounding": round(float(self.p_continuous[i]), 6),
                 "p_after_rounding": round(float(self.p_rounded[i]), 6),
                 "reached_before_rounding": bool(self.reached[i]),
                 "broken_by_rounding": bool(self.broken_by_rounding[i]), "repaired": bool(self.repaired[i]),
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

    def regularize(self, x: torch.Tensor, step: int, generator=None) -> torch.Tensor:
        """x (A, C, H, W) after a step: decayed towards the centre, blurred on every
        blur_every-th pass (`step` counts the passes), jittered."""
        x = self.center + (1 - self.decay) * (x - self.center)
        if self.blur_every and step % self.blur_every == self.blur_every - 1:
            x = gaussian_blur(x, self.blur_sigma)
        return _jitter(x, self.jitter, generator) if self.jitter else x


class _Ascent:
    """One run of _fool_loop: its settings, the images still going (idx: their places among the
    M given; x (A, C, H, W); phase: 0 continuous, 1 on the grid; count: steps in the phase) and
    the (M,) record of each image (`out`)."""

    def __init__(self, x: torch.Tensor, target: torch.Tensor, *, goal: float, steps: int, repair: int,
                 lr: torch.Tensor, min_steps: int, x0, eps_level, natural, generator, started):
        m, dev = len(x), x.device
        self.target, self.goal, self.steps, self.repair, self.lr = target, goal, steps, repair, lr
        self.min_steps, self.x0, self.eps_level = min_steps, x0, eps_level
        self.natural, self.generator = natural, generator
        self.started = time.perf_counter() if started is None else started
        self.lo = self.hi = None
        if x0 is not None:
            lvl0 = (x0 * 255).round()
            self.lo = (lvl0 - eps_level.view(-1, 1, 1, 1)).clamp(0, 255)  # (M, C, H, W) levels
            self.hi = (lvl0 + eps_level.view(-1, 1, 1, 1)).clamp(0, 255)
        self.idx = torch.arange(m, device=dev)
        self.x = x.clone()
        self.phase = torch.zeros(m, dtype=torch.long, device=dev)
        self.count = torch.zeros(m, dtype=torch.long, device=dev)
        self.passes = 0
        self.out = {"steps": torch.zeros(m, dtype=torch.long), "repair_steps": torch.zeros(m, dtype=torch.long),
                    "p_continuous": torch.zeros(m), "p_rounded": torch.zeros(m), "seconds": torch.zeros(m),
                    "images": torch.zeros(x.shape, dtype=torch.uint8)}

    def advance(self, model: nn.Module) -> None:
        """One forward and backward pass of the images still going: judge each, round those done
        with the continuous phase onto the grid, keep those done on the grid, step the others."""
        # the images are kept in at least float32 (a bfloat16 image is not on the 8-bit grid); the
        # model sees them in its own dtype
        grad, logits = attack_gradient(model, self.x.to(model_dtype(model)), self.target[self.idx], targeted=True)
        grad = grad.to(self.x.dtype)
        p = logits.float().softmax(1).gather(1, self.target[self.idx].view(-1, 1)).flatten()  # (A,) fp32
        reached = p >= self.goal
        out_of_steps = self.count >= torch.where(self.phase == 0, self.steps, self.repair)
        # Phase 0 images that reached the goal or ran out: round onto the grid, judged next pass.
        to_grid = (self.phase == 0) & ((reached & (self.count >= self.min_steps)) | out_of_steps)
        # Phase 1 images that reached the goal or ran out: final.
        final = (self.phase == 1) & (reached | out_of_steps)
        if to_grid.any():
            self._round(to_grid, p)
        if final.any():
            j = self.idx[final].cpu()
            self.out["repair_steps"][j] = self.count[final].cpu()
            self.out["steps"][j] += self.count[final].cpu()
            self.out["images"][j] = (self.x[final] * 255).round().to(torch.uint8).cpu()
            self.out["seconds"][j] = time.perf_counter() - self.started
        first_on_grid = (self.phase == 1) & (self.count == 0) & ~to_grid
        if first_on_grid.any():
            self.out["p_rounded"][self.idx[first_on_grid].cpu()] = p[first_on_grid].cpu()
        # Images just rounded need a fresh forward pass: no step for them this time.
        move = ~final & ~to_grid
        self._step(grad, move & (self.phase == 0), move & (self.phase == 1))
        self.count[move] += 1
        # Images rounded this pass keep their place; finished ones leave (lo, hi, x0: by idx).
        keep = ~final
        self.idx, self.x, self.phase, self.count = self.idx[keep], self.x[keep], self.phase[keep], self.count[keep]
        self.passes += 1

    def _within(self, level: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """Levels (0..255) of the images `which` clipped to their L∞ bounds (from data)."""
        if self.lo is None:
            return level
        return torch.minimum(torch.maximum(level, self.lo[self.idx[which]]), self.hi[self.idx[which]])

    def _round(self, which: torch.Tensor, p: torch.Tensor) -> None:
        j = self.idx[which].cpu()
        self.out["p_continuous"][j] = p[which].cpu()
        self.out["steps"][j] += self.count[which].cpu()
        self.x[which] = self._within((self.x[which] * 255).round(), which) / 255
        self.phase[which] = 1
        self.count[which] = 0

    def _step(self, grad: torch.Tensor, cont: torch.Tensor, grid: torch.Tensor) -> None:
        """A continuous step of the images `cont`, a ±1/255 step on the grid of those `grid`."""
        if cont.any():
            xs, g, lr = self.x[cont], grad[cont], self.lr[self.idx[cont]].view(-1, 1, 1, 1)
            if self.x0 is not None:
                xs = project(xs + lr * g.sign(), self.x0[self.idx[cont]], self.eps_level[self.idx[cont]] / 255, "linf")
            else:
                rms = g.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
                xs = xs + lr * g / rms
                reg = self.count[cont] < self.min_steps  # the natural style's regularized steps
                if self.natural is not None and reg.any():
                    xs[reg] = self.natural.regularize(xs[reg], self.passes, self.generator)
                xs = xs.clamp(0, 1)
            self.x[cont] = xs
        if grid.any():
            level = (self.x[grid] * 255).round() + grad[grid].sign()
            self.x[grid] = self._within(level, grid).clamp(0, 255) / 255


def _state_dtype(model: nn.Module) -> torch.dtype:
    """What the fooling images are kept in: the model's dtype, at least float32 (k/255 in bfloat16
    or float16 is not k/255: rounding to the grid would move pixels by a level)."""
    return torch.promote_types(model_dtype(model), torch.float32)


def _fool_loop(model, x: torch.Tensor, target: torch.Tensor, *, goal: float, steps: int, repair: int,
               lr: torch.Tensor, min_steps: int = 0, x0: torch.Tensor | None = None,
               eps_level: torch.Tensor | None = None, natural: _Natural | None = None, generator=None,
               started: float | None = None) -> dict:
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
    ascent = _Ascent(x, target, goal=goal, steps=steps, repair=repair, lr=lr, min_steps=min_steps, x0=x0,
                     eps_level=eps_level, natural=natural, generator=generator, started=started)
    while len(ascent.idx):
        ascent.advance(model)
    return ascent.out


def from_noise(model: nn.Module, targets: list[int], n: int, *, shape: tuple[int, int, int],
               style: str = "raw", steps: int | None = None, repair_steps: int = REPAIR_STEPS, center=0.5,
               lr: float | None = None, seed: int = 0, confidence: float = 0.99) -> Fooling:
    """n images per target class, each from its own random noise, ascended until the model
    gives the target p ≥ confidence (or the step budget ends). The arguments are checked by
    the caller (probe.analysis.fooling.fool_from_noise).

    style "raw": plain gradient ascent from uniform noise, the unrecognizable fooling images of
    Nguyen et al. 2015 (found there by evolution; here by gradient, as in the seed). "natural":
    from a faint noise around `center` (a colour per channel, e.g. the dataset mean), with L2
    decay towards it, a blur every 4 steps and 1-pixel jitter (Simonyan et al. 2014, Yosinski et
    al. 2015), which looks more like the class. shape: the network's (C, H, W).
    Returns a Fooling whose images are uint8 on the 8-bit grid, judged there."""
    steps = steps if steps is not None else (RAW_STEPS if style == "raw" else NATURAL_STEPS)
    model = inference_copy(model)  # probe's ResNets: BatchNorm folded, the caller's model untouched
    device = model_device(model)
    g = torch.Generator().manual_seed(seed)
    target = torch.tensor(targets, dtype=torch.long).repeat_interleave(n)  # (M,) n per target, in order
    m, c = len(target), shape[0]
    x = as_input(torch.rand(m, *shape, generator=g), model, _state_dtype(model))  # the same noise in every dtype
    natural = None
    if style != "raw":
        centre = torch.as_tensor(center, dtype=x.dtype).reshape(-1)
        centre = (centre.expand(c) if centre.numel() == 1 else centre).view(1, c, 1, 1)
        x = gaussian_blur(x, 1.0)  # smooth mid-grey noise: decay pulls it to the centre
        natural = _Natural(center=centre.to(device))
    rate = lr if lr is not None else 0.02 if style == "raw" else 0.03
    with evaluating(model, frozen=True):
        # natural: `steps` regularized steps, then as many plain ones at most where the goal
        # is not reached yet (a model may give no class to smooth images).
        out = _fool_loop(model, x, target.to(device), goal=goal_for(confidence),
                         steps=steps if style == "raw" else 2 * steps, repair=repair_steps,
                         lr=torch.full((m,), rate, device=device), natural=natural,
                         min_steps=steps if style == "natural" else 0, generator=g)
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
    right = ((predicted == labels) & (labels >= 0)).tolist()
    order = torch.randperm(len(labels), generator=g).tolist()
    label_of = labels.tolist()  # Python values: 10,000 images × 10 targets of tensor indexing took seconds
    pairs, shortfall = [], {}
    for t in targets:
        pools = {}
        for i in order:
            y = label_of[i]
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


def from_dataset(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targets: list[int],
                 probs: torch.Tensor, *, n: int, confidence: float = 0.99, source: int | None = None,
                 steps: int = DATASET_STEPS, repair_steps: int = REPAIR_STEPS, seed: int = 0,
                 progress=None) -> Fooling:
    """For each target, n correctly classified images of other classes, each changed as little
    as possible (in L∞) until the model gives the target p ≥ confidence. images: (N, C, H, W)
    uint8 as the network sees them; labels (N,); probs (N, K): the model's probabilities of
    `images`. The arguments are checked by the caller (probe.analysis.fooling.fool_from_dataset).
    progress: an optional callable(round, rounds_at_most). See _smallest_change for the search."""
    model = inference_copy(model)  # probe's ResNets: BatchNorm folded, the caller's model untouched
    pairs, shortfall = choose_sources(probs.argmax(1), labels, targets, n, source=source, seed=seed)
    if not pairs:
        raise ConfigError("no correctly classified image of another class to start from")
    index = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    target = torch.tensor([t for _, t in pairs], dtype=torch.long)
    original = images[index].clone()  # (M, C, H, W) uint8
    found = _smallest_change(model, original, target, goal=goal_for(confidence), steps=steps,
                             repair=repair_steps, progress=progress)
    best, m = found["best"], len(pairs)
    final = class_probabilities(model, best)  # (M, K) fp32, 8-bit images
    orig, source_label = probs[index], labels[index]
    delta = (best.float() - original.float()) / 255
    return Fooling(kind="dataset", style=None, confidence=confidence, target=target, images=best,
                   p_target=final.gather(1, target.view(-1, 1)).flatten(), predicted=final.argmax(1),
                   p_continuous=found["p_continuous"], p_rounded=found["p_rounded"],
                   repair_steps=found["repair_steps"].long(), steps=found["steps"], seconds=found["seconds"],
                   source_index=index, source_label=source_label, original=original,
                   p_source_original=orig.gather(1, source_label.view(-1, 1)).flatten(),
                   p_target_original=orig.gather(1, target.view(-1, 1)).flatten(),
                   p_source=final.gather(1, source_label.view(-1, 1)).flatten(),
                   eps=torch.where(found["found"], found["hi"] / 255, torch.full((m,), float("nan"))),
                   linf=delta.abs().flatten(1).amax(1), l2=delta.flatten(1).norm(dim=1),
                   shortfall=shortfall)


def _smallest_change(model: nn.Module, original: torch.Tensor, target: torch.Tensor, *, goal: float,
                     steps: int, repair: int, progress=None) -> dict:
    """The search of from_dataset, over the L∞ bound in whole 1/255 steps, for M images
    `original` (M, C, H, W) uint8 and their targets (M,): a targeted PGD (signed steps of
    2.5·bound/steps, at most `steps`, then rounding and grid repair) inside the bound; the bound
    grows (8, 16, 32, 64, 128, 255 /255) until an attempt works, then bisects between the
    largest bound that failed and the size of the smallest change that worked. Each attempt
    starts from the last one (a success projected into the smaller ball, or a failure), and is
    judged on the 8-bit image. Returns best (uint8), found, hi (the size in levels of the
    smallest change that worked), steps and the loop's records of each best attempt, all (M,)."""
    m, device = len(original), model_device(model)
    x0 = as_input(original, model, _state_dtype(model))  # (M, C, H, W)
    s = {"best": original.clone(), "found": torch.zeros(m, dtype=torch.bool), "hi": torch.full((m,), 255.0),
         "steps": torch.zeros(m, dtype=torch.long),
         **{k: torch.zeros(m) for k in ("p_continuous", "p_rounded", "repair_steps", "seconds")}}
    last = original.clone()  # uint8: the last attempt's image (a failure's is a warm start too)
    lo = torch.zeros(m)  # the largest bound (levels) known to fail
    grow = torch.zeros(m, dtype=torch.long)  # the next bound to try while none has worked
    started = time.perf_counter()
    rounds_at_most = len(GROW_LEVELS) + math.ceil(math.log2(255))
    levels = torch.tensor(GROW_LEVELS, dtype=torch.float32)
    with evaluating(model, frozen=True):
        for r in range(rounds_at_most):
            growing = ~s["found"] & (grow < len(GROW_LEVELS))  # no success yet: the next bound up
            halving = s["found"] & (s["hi"] - lo > 1)  # a success: bisect below it
            active = (growing | halving).nonzero().flatten()
            if len(active) == 0:
                break
            level = torch.where(growing, levels[grow.clamp(max=len(GROW_LEVELS) - 1)], torch.floor((lo + s["hi"]) / 2))
            k = level[active]
            # Warm start: the last success (halving) or the last failure (growing), in the new ball.
            start = as_input(torch.where(halving[active].view(-1, 1, 1, 1), s["best"][active], last[active]), model,
                             x0.dtype)
            start = project(start, x0[active], (k / 255).to(device), "linf")
            res = _fool_loop(model, start, target[active].to(device), goal=goal, steps=steps, repair=repair,
                             lr=(torch.clamp(2.5 * k / steps, min=1.0) / 255).to(device), x0=x0[active],
                             eps_level=k.to(device), started=started)
            ok = class_probabilities(model, res["images"]).gather(1, target[active].view(-1, 1)).flatten() >= goal
            s["steps"][active] += res["steps"]
            last[active] = res["images"]
            _keep_successes(s, active[ok], res, ok, original)
            _note_failures(s, active, res, ok)
            lose = active[~ok]
            lo[lose] = torch.maximum(lo[lose], level[lose])
            grow[lose[growing[lose]]] += 1
            if progress is not None:
                progress(r + 1, rounds_at_most)
    return s


def _note_failures(s: dict, active: torch.Tensor, res: dict, ok: torch.Tensor) -> None:
    """The records of the attempts that failed, for images no attempt has fooled yet: what happened
    to an image the search never fooled is its last attempt's story."""
    never = ~ok & ~s["found"][active]
    for key in ("p_continuous", "p_rounded", "repair_steps", "seconds"):
        s[key][active[never]] = res[key][never].float()


def _keep_successes(s: dict, win: torch.Tensor, res: dict, ok: torch.Tensor, original: torch.Tensor) -> None:
    """The attempts that worked (`win`: their images, `ok`: their places in `res`) become the best."""
    if not len(win):
        return
    s["best"][win] = res["images"][ok]
    s["found"][win] = True
    s["hi"][win] = (res["images"][ok].float() - original[win].float()).abs().flatten(1).amax(1)
    for key in ("p_continuous", "p_rounded", "repair_steps", "seconds"):
        s[key][win] = res[key][ok].float()
