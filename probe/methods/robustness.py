"""Accuracy against ε: how fast a model's accuracy falls under FGSM or PGD as the allowed change
grows, with a 95% interval per point and the adversarial examples of a few images.

Three searches give the same curve. "nested" attacks every image still unbroken at each ε of the
grid in turn. "bisect" finds, for each image, the smallest ε of the grid at which the attack
breaks it by bisection over the grid, each probe one attack at that ε (PGD stops on an image
as soon as it is broken): the largest ε first (an image that survives it is done: most images
of a robust model), then bisection below it, so the accuracy at every ε of a grid of E values
costs at most 1 + ⌈log₂(E − 1)⌉ attacks per image instead of up to E − 1. "sweep" (the default)
also starts at the largest ε; for an image broken there, one cheap sweep (a gradient step per
value of the grid, the ball growing with it) finds an adversarial image in a smaller ball,
which proves the image broken from that ε on, and PGD then moves down the grid from just below
it until an attack fails: one failed PGD attack per image, where bisection spends about half
its probes on failures, each the full number of steps (1.36× faster on the committed
mnist-resnet20, benchmarks/robustness_search.py). An image counts as broken at ε when either
attack found an adversarial image inside the ε-ball. Both rest on the same assumption, which makes the curve
monotone: an image broken at ε stays broken at every larger ε (its adversarial image lies in
every larger ball). Bisection also assumes the converse, that an attack failing at ε would
fail at every smaller ε. PGD is a random local search, so the two disagree on a few images near
their breaking ε: on 200 MNIST test images the curves differ by up to 3 points at an ε where
the accuracy falls steeply, as much as two nested runs with different seeds differ (issue 15).
Where success is monotone in ε the two are equal (tests/test_attacks.py)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
from torch import nn

from probe.methods.attacks import (METHODS, NORMS, PRECISIONS, attack, attack_gradient, check_eps, check_linf_eps,
                                   parse_eps_list, perturbation_size, project, step_direction, succeeded)
from probe.methods.common import as_classes, as_input, class_probabilities, evaluating, model_device, model_dtype
from probe.models.inference import inference_copy
from probe.methods.confusion import wilson_interval
from probe.errors import ConfigError

SEARCHES = ("sweep", "bisect", "nested")
SWEEP_STEP = 1.25  # the sweep's step at each level, in units of the level's growth of ε


@dataclass
class RobustnessCurve:
    """One point per ε (ascending, ε = 0 first: the clean images). Tensors are (E, N) over the E
    values of ε and the N images, or (X, k, C, H, W) for the k example images at the X ε of
    `example_eps` (0 first)."""
    eps: list[float]
    predicted: torch.Tensor  # (E, N) the class the model gives each adversarial image (fp32)
    p_predicted: torch.Tensor  # (E, N)
    p_true: torch.Tensor  # (E, N)
    labels: torch.Tensor  # (N,)
    linf: torch.Tensor  # (E, N) size of each image's change
    l2: torch.Tensor  # (E, N)
    seconds: list[float]  # attack time of each step of the search (per ε: nested; per round: bisect)
    attacks: int  # attacks run, summed over images (the search's cost; an FGSM attack is one step)
    example_index: torch.Tensor  # (k,) into the images
    examples: torch.Tensor  # (X, k, C, H, W) float [0, 1]: the example images attacked afresh at each ε
    example_predicted: torch.Tensor  # (X, k) the class the model gives each of them
    example_p: torch.Tensor  # (X, k) its probability
    example_eps: list[float] = field(default_factory=lambda: [0.0])
    num_classes: int = 0  # the model's outputs
    method: str = "pgd"
    norm: str = "linf"
    target: int | None = None
    search: str = "nested"
    settings: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # the attack's arguments, as given

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> list[int]:
        return (self.predicted == self.labels).sum(1).tolist()

    @property
    def accuracy(self) -> list[float]:
        return [c / self.n for c in self.correct]

    @property
    def clean_accuracy(self) -> float:
        return self.accuracy[0]

    def at_target(self) -> list[int] | None:
        """Targeted attacks: per ε, how many images not of the target class the model now puts
        in the target class."""
        if self.target is None:
            return None
        other = self.labels != self.target
        return ((self.predicted == self.target) & other).sum(1).tolist()

    def points(self) -> list[dict]:
        """One JSON-able record per ε."""
        out = []
        hits = self.at_target()
        n_other = int((self.labels != self.target).sum()) if self.target is not None else None
        for j, eps in enumerate(self.eps):
            correct = self.correct[j]
            lo, hi = wilson_interval(correct, self.n)
            changed = self.linf[j] > 0
            point = {"eps": eps, "accuracy": correct / self.n, "correct": correct, "n": self.n,
                     "ci95": [lo, hi],
                     "mean_linf": float(self.linf[j][changed].mean()) if changed.any() else 0.0,
                     "mean_l2": float(self.l2[j][changed].mean()) if changed.any() else 0.0}
            if hits is not None:
                point |= {"at_target": hits[j], "not_of_target": n_other,
                          "target_rate": hits[j] / n_other if n_other else None}
            out.append(point)
        return out


def search_steps(n_eps: int, search: str) -> int:
    """The steps a search takes over a grid of n_eps values (0 among them): attacks per image
    at most (bisect: the largest ε, then ⌈log₂(n_eps − 1)⌉ rounds below it; sweep: the largest
    ε, the sweep, then one PGD attack per value below it at most, usually one or two; nested:
    one per ε > 0)."""
    if search == "bisect":
        return 1 + math.ceil(math.log2(max(1, n_eps - 1)))
    if search == "sweep":
        return max(1, n_eps - 1 if n_eps <= 3 else n_eps)
    return max(1, n_eps - 1)


def attack_curve(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps, *,
                 method: str = "pgd", norm: str = "linf", steps: int = 40, step_size=None,
                 random_start: bool = True, restarts: int = 1, target: int | None = None,
                 seed: int = 0, batch_size: int = 500, precision: str = "fp32", examples: int = 10,
                 example_eps=None, search: str = "sweep", progress=None) -> RobustnessCurve:
    """Accuracy of `model` on `images` attacked at each ε (ε = 0, the clean accuracy, is always
    included), judged in fp32.

    search "sweep", "bisect" (PGD; FGSM is always nested: one step per ε costs as little as a
    probe) or "nested": see the module's docstring. Either way an image broken at a smaller ε keeps its
    adversarial image at every larger ε, so the curve never rises. Images the model gets wrong
    without any change count as wrong at every ε and are not attacked. Targeted (`target`: a
    class index): the attack drives the images towards the target and stops on each image once
    it is there; accuracy is still the share classified as their true class.

    The images are searched in chunks of batch_size (chunk_slices), one after another, each
    with random starts of its own (attack_chunk): the curve is the same where the chunks run
    elsewhere, side by side, and are put together with merge_chunks (as a report does).

    examples: how many images to show attacked afresh (one per class first, see
    pick_examples); example_eps: the ε to show them at (default: 0 and up to 4 ε where the
    curve falls, see example_eps_of).

    images: (N, C, H, W) uint8 or float [0, 1]; labels (N,) ≥ 0. progress: an optional
    callable(step, n_done, n_to_attack) for each chunk in turn, step counting from 1 to
    search_steps(len(eps), search).
    """
    labels, eps_list = _checked(images, labels, eps, method, norm, precision)
    options = {"method": method, "norm": norm, "steps": steps, "step_size": step_size,
               "random_start": random_start, "restarts": restarts, "batch_size": batch_size,
               "precision": precision, "target": target, "seed": seed, "search": search}
    curve = merge_chunks([attack_chunk(model, images[part], labels[part], eps_list, k, progress=progress, **options)
                          for k, part in enumerate(chunk_slices(len(labels), batch_size))])
    if examples:
        chosen = example_eps if example_eps is not None else example_eps_of(eps_list, [curve.accuracy])
        attack_examples(model, as_input(images, torch.device("cpu"), model_dtype(model)), curve, examples, chosen)
    return curve


CHUNK_SEEDS = 1_000_003  # chunk k's random starts: seed + k · CHUNK_SEEDS + the search's step


def chunk_slices(n: int, batch_size: int) -> list[slice]:
    """The chunks of N images that attack_curve searches one by one: batch_size each, the last fewer."""
    return [slice(start, min(n, start + batch_size)) for start in range(0, n, max(1, batch_size))]


def attack_chunk(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps, chunk: int = 0, *,
                 method: str = "pgd", norm: str = "linf", steps: int = 40, step_size=None,
                 random_start: bool = True, restarts: int = 1, target: int | None = None,
                 seed: int = 0, batch_size: int = 500, precision: str = "fp32", search: str = "sweep",
                 progress=None) -> RobustnessCurve:
    """The curve of one chunk (the `chunk`-th of chunk_slices) of attack_curve's images, with
    its arguments, without example images: its random starts depend on the seed and the
    chunk's number only, so a chunk gives the same part of the curve wherever it runs."""
    labels, eps_list = _checked(images, labels, eps, method, norm, precision)
    if search not in SEARCHES:
        raise ConfigError(f"search {search!r}: use one of {', '.join(SEARCHES)}")
    search = "nested" if method == "fgsm" else search
    clean = as_input(images, torch.device("cpu"), model_dtype(model))  # (N, C, H, W) [0, 1]
    probs = class_probabilities(model, clean, batch_size=batch_size)  # (N, K)
    as_classes(labels, len(labels), probs.shape[1])
    if target is not None:
        if np.ndim(target) != 0:
            raise ConfigError(f"target {target!r}: give one class, the one every image is driven to")
        target = int(as_classes(target, 1, probs.shape[1], what="target")[0])
    options = {"method": method, "norm": norm, "steps": steps, "step_size": step_size,
               "random_start": random_start, "restarts": restarts, "batch_size": batch_size,
               "precision": precision, "target": target, "seed": seed}
    run = {"sweep": partial(_grid_search, sweep=True), "bisect": partial(_grid_search, sweep=False),
           "nested": _nested}[search]
    rows, seconds, attacks = run(model, clean, labels, probs, eps_list, options | {"seed": seed + chunk * CHUNK_SEEDS},
                                 progress)
    return RobustnessCurve(eps=eps_list, labels=labels, seconds=seconds, attacks=attacks,
                           example_index=torch.zeros(0, dtype=torch.long), examples=clean[:0].unsqueeze(0),
                           example_predicted=torch.zeros(1, 0, dtype=torch.long), example_p=torch.zeros(1, 0),
                           num_classes=probs.shape[1], method=method, norm=norm,
                           target=None if target is None else int(target), search=search,
                           settings=_settings(options, search), options=options, **rows)


def merge_chunks(chunks: list[RobustnessCurve]) -> RobustnessCurve:
    """One curve of the chunks' images, in order (attack_chunk's, without examples); each step
    of the search's time summed over the chunks."""
    first = chunks[0]
    rows = {k: torch.cat([getattr(c, k) for c in chunks], 1)
            for k in ("predicted", "p_predicted", "p_true", "linf", "l2")}
    steps = max(len(c.seconds) for c in chunks)
    seconds = [sum(c.seconds[j] for c in chunks if j < len(c.seconds)) for j in range(steps)]
    return replace(first, labels=torch.cat([c.labels for c in chunks]), seconds=seconds,
                   attacks=sum(c.attacks for c in chunks), **rows)


def _nested(model, clean, labels, probs, eps_list, options, progress):
    """Every image still unbroken attacked at each ε in turn; its adversarial image (or its
    last try) kept at every larger ε once it breaks."""
    target, batch_size = options["target"], options["batch_size"]
    adv = clean.clone()  # the current adversarial image of each image
    probs = probs.clone()
    done = _broken(probs, labels, target)  # nothing left to do for these
    rows = {k: [] for k in ("predicted", "p_predicted", "p_true", "linf", "l2")}
    seconds, attacks = [], 0
    for j, e in enumerate(eps_list):
        started = time.perf_counter()
        todo = (~done).nonzero().flatten()  # (M,)
        if e > 0 and len(todo):
            report = (lambda n, j=j, m=len(todo): progress(j, n, m)) if progress else None
            new = _attack(model, clean[todo], labels[todo], e, options["seed"] + j, options, report)
            p_new = class_probabilities(model, new, batch_size=batch_size)  # fp32 judge
            adv[todo], probs[todo] = new, p_new
            done[todo] = _broken(p_new, labels[todo], target)
            attacks += len(todo)
        if e > 0:
            seconds.append(time.perf_counter() - started)
        _record(rows, probs, labels, *perturbation_size(adv, clean))
    return {k: torch.stack(v) for k, v in rows.items()}, seconds, attacks


def _grid_search(model, clean, labels, probs, eps_list, options, progress, *, sweep: bool):
    """For each image, the smallest index of the grid at which the attack breaks it: lo (known
    unbroken: 0, the clean image, at first) and hi (known broken; E: not within the grid)
    close in on it. The first round probes the largest ε: an image that survives it is settled
    in one attack (by the same assumption, it would survive every smaller ε), which is most of
    the images of a robust model. One broken there, usually within a few PGD steps, is then
    searched below it.

    sweep=False (bisection): each round probes (lo + hi) // 2 of every image not yet settled.
    sweep=True: one sweep (_sweep: a step per value of the grid, the ball growing) finds an
    adversarial image inside some smaller ball for most of them, which proves them broken from
    that ε on; then PGD probes the ε just below the smallest ε known to break an image, moving
    down one value of the grid while it succeeds: one failed PGD attack settles each image,
    where bisection spends about half of its ⌈log₂ E⌉ probes on failures, each the full number
    of steps."""
    n, E, target = len(labels), len(eps_list), options["target"]
    lo = torch.zeros(n, dtype=torch.long)
    hi = torch.where(_broken(probs, labels, target), 0, E)  # wrong when clean: broken at ε = 0
    grid = torch.tensor(eps_list, dtype=torch.float64)
    found = {"probs": torch.full((E, *probs.shape), float("nan")), "linf": torch.zeros(E, n), "l2": torch.zeros(E, n)}
    found["probs"][0] = probs
    seconds, attacks, rnd = [], 0, 0

    def keep(todo, at, new, p_new):
        found["probs"][at, todo] = p_new
        found["linf"][at, todo], found["l2"][at, todo] = perturbation_size(new, clean[todo])

    while (todo := (hi - lo > 1).nonzero().flatten()).numel():
        started, rnd = time.perf_counter(), rnd + 1
        report = (lambda done, r=rnd, m=len(todo): progress(r, done, m)) if progress else None
        if sweep and rnd == 2 and E > 3:  # the sweep below the largest ε, for the images broken there
            level, new = _sweep(model, clean[todo], labels[todo], eps_list[:E - 1], options, report)
            swept = level < E - 1
            at = level[swept]
            keep(todo[swept], at, new[swept], class_probabilities(model, new[swept], batch_size=options["batch_size"])
                 if swept.any() else probs[:0])
            hi[todo[swept]] = at
        else:
            mid = (torch.full_like(todo, E - 1) if rnd == 1
                   else hi[todo] - 1 if sweep else (lo[todo] + hi[todo]) // 2)
            new = _attack(model, clean[todo], labels[todo], grid[mid], options["seed"] + rnd, options, report)
            p_new = class_probabilities(model, new, batch_size=options["batch_size"])  # fp32 judge
            keep(todo, mid, new, p_new)
            hit = _broken(p_new, labels[todo], target)
            hi[todo[hit]], lo[todo[~hit]] = mid[hit], mid[~hit]
        attacks += len(todo)
        seconds.append(time.perf_counter() - started)
    return _bisect_rows(found, labels, lo, hi), seconds, attacks


def _sweep(model, clean, labels, eps_list, options, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One gradient step per value of the grid from the clean image, the ball growing with it
    (step SWEEP_STEP·(ε_j − ε_{j−1}), then projected onto the ε_j-ball and [0, 1]); an image
    leaves at the first value whose iterate is adversarial (judged in fp32). Returns each
    image's index into eps_list (len(eps_list): never) and its image there (the last iterate
    where never): an adversarial image inside the ε_j-ball, which proves it broken from ε_j on."""
    target, norm, precision = options["target"], options["norm"], options["precision"]
    targeted = target is not None
    goal_all = torch.full((len(clean),), int(target)) if targeted else labels
    device, fast = model_device(model), inference_copy(model)
    level = torch.full((len(clean),), len(eps_list), dtype=torch.long)
    out = []
    with evaluating(fast, frozen=True):
        for start in range(0, len(clean), options["batch_size"]):
            x0 = as_input(clean[start:start + options["batch_size"]], fast)
            goal, adv, result = goal_all[start:start + len(x0)].to(device), x0.clone(), x0.clone()
            idx = torch.arange(len(x0), device=device)
            for j in range(1, len(eps_list) + 1):
                grad, logits = attack_gradient(fast, adv[idx], goal[idx], targeted=targeted, precision=precision)
                if j > 1:  # the logits judge the iterate of level j − 1 (fp32 confirms bf16's)
                    hit = succeeded(logits, goal[idx], targeted)
                    if precision != "fp32" and hit.any():
                        with torch.no_grad():
                            hit[hit.clone()] = succeeded(fast(adv[idx[hit]]).float(), goal[idx[hit]], targeted)
                    level[start + idx[hit].cpu()] = j - 1
                    result[idx[hit]] = adv[idx[hit]]
                    idx, grad = idx[~hit], grad[~hit]
                if j == len(eps_list) or len(idx) == 0:
                    break
                e, step = eps_list[j], SWEEP_STEP * (eps_list[j] - eps_list[j - 1])
                adv[idx] = project(adv[idx] + step_direction(grad, norm) * step, x0[idx], e, norm)
            result[idx] = adv[idx]
            out.append(result.cpu())
            if progress is not None:
                progress(start + len(x0))
    return level, torch.cat(out)


def _bisect_rows(found: dict, labels: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> dict:
    """The curve's (E, N) rows from the probes: at ε ≥ ε[hi] the adversarial image found at
    ε[hi] (it lies in every larger ball); below, the strongest failed try within the ball (the
    probe at the largest index ≤ ε's that failed), or the clean image."""
    E, n = found["linf"].shape
    index = torch.arange(E).view(E, 1).expand(E, n)
    failed = (index <= lo) & ~found["probs"][:, :, 0].isnan()  # every probe below hi failed; 0: clean
    last_failed = torch.where(failed, index, 0).cummax(0).values  # (E, N)
    source = torch.where(index >= hi, hi.view(1, n).expand(E, n), last_failed)
    probs = found["probs"].gather(0, source.unsqueeze(-1).expand(E, n, found["probs"].shape[-1]))
    linf, l2 = found["linf"].gather(0, source), found["l2"].gather(0, source)
    rows = {k: [] for k in ("predicted", "p_predicted", "p_true", "linf", "l2")}
    for j in range(E):
        _record(rows, probs[j], labels, linf[j], l2[j])
    return {k: torch.stack(v) for k, v in rows.items()}


def example_eps_of(eps: list[float], accuracies: list[list[float]], count: int = 4) -> list[float]:
    """0 and `count` ε of the grid spread over where the accuracy falls: for q = 1/count, 2/count,
    …, 1 the smallest ε at which the accuracy (the mean of the curves given, one per model) has
    lost q of its whole fall (clean − lowest); then, while fewer than `count`, the ε farthest (in
    grid steps) from those chosen. The whole grid when it has no more than count + 1 values."""
    if len(eps) <= count + 1:
        return list(eps)
    acc = [sum(a[j] for a in accuracies) / len(accuracies) for j in range(len(eps))]
    fall = acc[0] - min(acc)
    chosen = set()
    if fall > 0:
        for q in range(1, count + 1):
            chosen.add(next(j for j in range(1, len(eps)) if acc[0] - acc[j] >= fall * q / count - 1e-12))
    while len(chosen) < count:
        taken = chosen | {0}
        chosen.add(max((j for j in range(1, len(eps)) if j not in taken),
                       key=lambda j: (min(abs(j - t) for t in taken), -j)))
    return [0.0, *(eps[j] for j in sorted(chosen))]


def pick_examples(right: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Up to k images, in class order: one per class first (its first image in `right`, (N,)
    bool, e.g. correctly classified by every model; or its first image where none is), then
    more images in `right`, in image order."""
    right = right.tolist()
    first = {}
    for i, y in enumerate(labels.tolist()):
        if y not in first or (right[i] and not right[first[y]]):
            first[y] = i
    chosen = [first[y] for y in sorted(first)][:k]
    chosen += [i for i in range(len(labels)) if right[i] and i not in chosen][:k - len(chosen)]
    return torch.tensor(sorted(chosen, key=lambda i: (int(labels[i]), i)), dtype=torch.long)


def attack_examples(model: nn.Module, images: torch.Tensor, curve: RobustnessCurve, k: int,
                    eps: list[float], pick: torch.Tensor | None = None) -> RobustnessCurve:
    """k example images attacked afresh at each of `eps` with the curve's settings, so that the
    rows of their figure show the change growing (in the curve a broken image keeps its first
    adversarial image). images: the curve's images; pick: which of them (default: pick_examples
    of the ones this model gets right). Sets the curve's example fields and returns it."""
    options = curve.options
    eps = sorted({0.0, *(check_eps(e) for e in eps)})
    clean = as_input(images, torch.device("cpu"), model_dtype(model))
    pick = pick_examples(curve.predicted[0] == curve.labels, curve.labels, k) if pick is None else pick[:k]
    shown, classes, p = [], [], []
    for j, e in enumerate(eps):
        ex = _attack(model, clean[pick], curve.labels[pick], e, options["seed"] + j, options) \
            if e > 0 and len(pick) else clean[pick]
        p_ex = class_probabilities(model, ex, batch_size=options["batch_size"]) if len(pick) else torch.zeros(0, 1)
        shown.append(ex.float())
        classes.append(p_ex.argmax(1))
        p.append(p_ex.max(1).values)
    curve.example_index, curve.example_eps = pick, eps
    curve.examples, curve.example_predicted, curve.example_p = torch.stack(shown), torch.stack(classes), torch.stack(p)
    return curve


def _checked(images, labels, eps, method: str, norm: str, precision: str) -> tuple[torch.Tensor, list[float]]:
    """The labels as a CPU long tensor and the ascending ε list with 0, else a ConfigError."""
    if method not in METHODS:
        raise ConfigError(f"method {method!r}: use one of {', '.join(METHODS)}")
    if norm not in NORMS or precision not in PRECISIONS:
        raise ConfigError(f"norm {norm!r} / precision {precision!r}: use {'|'.join(NORMS)} / {'|'.join(PRECISIONS)}")
    if len(images) == 0:
        raise ConfigError("no images to attack: give at least one")
    labels = as_classes(labels, len(images), None, unlabelled=True)
    if bool((labels < 0).any()):
        raise ConfigError("every image needs a label (≥ 0) to measure accuracy")
    if isinstance(eps, str):  # '0.05,2/255', as on the command line
        eps_list = parse_eps_list(eps, "eps")
    else:  # a number (a NumPy or 0-d tensor one too), or a list of them
        eps_list = [check_eps(e) for e in ([eps] if np.ndim(eps) == 0 else np.asarray(eps, dtype=float).ravel())]
    check_linf_eps(eps_list, norm, "eps")
    return labels, sorted({0.0, *eps_list})


def _broken(probs: torch.Tensor, labels: torch.Tensor, target: int | None) -> torch.Tensor:
    """(N,) bool: at the target (targeted) or away from the true class."""
    pred = probs.argmax(1)
    return pred == target if target is not None else pred != labels


def _attack(model, x, labels, eps, seed: int, options: dict, progress=None) -> torch.Tensor:
    """One attack with the curve's options; eps a float or one per image."""
    target = options["target"]
    goal = torch.full((len(x),), int(target)) if target is not None else None
    return attack(model, x, labels, eps, **(options | {"target": goal, "seed": seed}), progress=progress)


def _record(rows: dict, probs: torch.Tensor, labels: torch.Tensor, linf: torch.Tensor, l2: torch.Tensor) -> None:
    """One ε's row of the curve: each image's class, its probability, the true class's, the change."""
    top_p, top_k = probs.max(1)
    rows["predicted"].append(top_k)
    rows["p_predicted"].append(top_p)
    rows["p_true"].append(probs[torch.arange(len(labels)), labels])
    rows["linf"].append(linf)
    rows["l2"].append(l2)


def _settings(options: dict, search: str) -> dict:
    pgd = options["method"] == "pgd"
    step_size = options["step_size"]
    return {"method": options["method"], "norm": options["norm"], "steps": options["steps"] if pgd else 1,
            "step_size": step_size if step_size is not None else ("2.5·ε/steps" if pgd else "ε"),
            "random_start": options["random_start"] if pgd else False,
            "restarts": options["restarts"] if pgd else 1, "target": options["target"], "seed": options["seed"],
            "precision": options["precision"], "batch_size": options["batch_size"], "search": search}


SUBSET_SEED = 0


def subset(n_total: int, limit: int | None, seed: int = SUBSET_SEED) -> torch.Tensor:
    """The first `limit` of a seeded permutation, in ascending order (all when limit is 0/None):
    a representative sample (MNIST's test set puts its harder writers last), the same for
    every model and every run."""
    if not limit or limit >= n_total:
        return torch.arange(n_total)
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return order[:limit].sort().values
