"""How far a saliency map can be trusted: two measures beside every map.

- Deletion and insertion (Petsiuk et al. 2018, RISE): the pixels are removed from the image (set
  to black), or added to a blurred copy of it, in the map's order, most important first; the
  target class's probability is recorded at each step, and the area under each curve compared
  with the same curve for a random order. A faithful map has a small deletion area (the class
  dies fast) and a large insertion area (it comes back fast).
- The model-randomization sanity check (Adebayo et al. 2018): the maps of the trained model
  against the maps of the same architecture whose weights are re-initialized, cascading from
  the top layer down. A map that hardly changes when the model is destroyed explains the image,
  not the model: its Spearman rank correlation with the trained map stays high, and it is flagged
  (on at least two images: a flag never rests on one). A map that goes constant when the
  weights are randomized has changed completely (ρ = 0); the signed correlation beside the one
  of |map| shows a sign flip, which |map| cannot.

Every function takes any nn.Module mapping [0, 1] images to logits, works in batches, and
leaves the caller's model as it found it (a randomized copy is made; the original is never
touched).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from probe.errors import ConfigError
from probe.methods.common import class_probabilities, evaluating, gaussian_blur
from probe.methods.saliency import (METHODS, Explainer, Layer, SaliencyConfig, explainer, layer_name, parse_methods,
                                     prepare_inputs, seeded, working_copy)
from probe.models.inference import inference_copy

RANDOM = "random"  # the key of the random-order baseline
MIN_IMAGES = 2  # a flag (worse than random, barely changes) never rests on fewer images


@dataclass(frozen=True)
class FaithfulnessConfig:
    steps: int = 20  # deletion/insertion curves: 5% of the pixels per step
    random_orders: int = 2  # random orders per image for the baseline (averaged)
    deletion_value: float = 0.0  # a deleted pixel becomes black
    insertion_start: str = "blur"  # "blur" (Petsiuk et al.) or "zero"
    blur_sigma: float | None = None  # None: an eighth of the longer side (3.5 px at 28×28)
    batch_size: int = 256  # images per forward pass
    seed: int = 0  # random orders, tie-breaking
    flag_threshold: float = 0.5  # mean Spearman above this with every weight randomized → flagged
    channels_last: bool = True  # compute on a channels-last copy of the model (see saliency.working_copy)

    def __post_init__(self):
        if int(self.steps) < 1:
            raise ConfigError(f"deletion/insertion steps must be at least 1, not {self.steps}")
        if int(self.random_orders) < 1:
            raise ConfigError(f"random_orders must be at least 1, not {self.random_orders}")
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch size must be at least 1, not {self.batch_size}")
        if self.insertion_start not in ("blur", "zero"):
            raise ConfigError(f"insertion_start must be 'blur' or 'zero', not {self.insertion_start!r}")

    def sigma(self, height: int, width: int) -> float:
        """The blur of the insertion's starting image, in pixels."""
        return self.blur_sigma or max(height, width) / 8

    def to_dict(self) -> dict:
        return asdict(self)


# ---- deletion and insertion ---------------------------------------------------------------------

@dataclass
class DeletionInsertion:
    """curves[kind][method]: (N, steps + 1) target probability after each step, kind ∈
    {"deletion", "insertion"}; method "random" is the random-order baseline (mean over orders)."""
    fractions: torch.Tensor  # (steps + 1,) fraction of the pixels deleted / inserted
    curves: dict[str, dict[str, torch.Tensor]]
    config: FaithfulnessConfig

    @property
    def methods(self) -> list[str]:
        return [m for m in self.curves["deletion"] if m != RANDOM]

    def auc(self, kind: str) -> dict[str, torch.Tensor]:
        """Area under each image's curve (N,), trapezoidal over the fraction of pixels: in [0, 1]."""
        return {m: torch.trapezoid(c, self.fractions, dim=1) for m, c in self.curves[kind].items()}

    def versus_random(self, kind: str) -> dict[str, dict]:
        """Per method, its area against the random order's on the same images (a paired
        comparison): on how many images it is worse (deletion: a larger area; insertion: a
        smaller one), better, the exact two-sided sign test of the two, `mean_worse`: the mean
        area is worse than the random order's, and `worse` (the flag): the mean is worse and so
        is the area of at least MIN_IMAGES images (never one image's doing)."""
        areas = self.auc(kind)
        base = areas[RANDOM]
        out = {}
        for m in self.methods:
            diff = (areas[m] - base) * (1 if kind == "deletion" else -1)  # > 0: worse than random
            worse, better = int((diff > 0).sum()), int((diff < 0).sum())
            mean_worse = bool(diff.mean() > 0)
            out[m] = {"images_worse": worse, "images_better": better, "n": len(diff),
                      "sign_test_p": sign_test(worse, better), "mean_worse": mean_worse,
                      "worse": mean_worse and worse >= MIN_IMAGES}
        return out

    def summary(self) -> dict[str, dict]:
        """Per method (and "random"): the mean AUCs over the images, the mean curves, and (the
        methods) the paired comparison with the random order (see versus_random)."""
        dele, ins = self.auc("deletion"), self.auc("insertion")
        versus = {kind: self.versus_random(kind) for kind in ("deletion", "insertion")}
        out = {}
        for m in self.curves["deletion"]:
            out[m] = {"deletion_auc": float(dele[m].mean()), "insertion_auc": float(ins[m].mean()),
                      "deletion_auc_per_image": dele[m].tolist(), "insertion_auc_per_image": ins[m].tolist(),
                      "deletion_curve": self.curves["deletion"][m].mean(0).tolist(),
                      "insertion_curve": self.curves["insertion"][m].mean(0).tolist()}
            if m != RANDOM:
                out[m] |= {f"{kind}_vs_random": versus[kind][m] for kind in versus}
        return out


def sign_test(k: int, j: int) -> float:
    """The exact two-sided sign test of k against j paired outcomes (ties left out): the
    probability of a split at least this uneven if either side were equally likely."""
    n = k + j
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, j) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def pixel_ranks(maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """maps (N, H, W) → (N, H·W) each pixel's place in the order, 0 = the most important
    (largest value first; ties broken at random, not by position)."""
    n, hw = maps.shape[0], maps[0].numel()
    perm = torch.randperm(hw, generator=generator)
    values = maps.reshape(n, hw).float().cpu()[:, perm]
    order = perm[values.argsort(dim=1, descending=True, stable=True)]  # (N, HW) pixel indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(hw).expand(n, hw).contiguous())
    return ranks


def _target_probabilities(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The probability (N,) of each image's target class, in batches."""
    return class_probabilities(model, x, batch_size=batch_size).gather(1, targets.cpu()[:, None])[:, 0]


@dataclass
class _Curves:
    """What every order's deletion and insertion curves share: the images, their targets, the
    deleted image and the insertion's start, the pixels changed at each inner step."""
    model: nn.Module
    x: torch.Tensor  # (N, C, H, W)
    t: torch.Tensor  # (N,)
    deleted: torch.Tensor  # (N, C, H, W) every pixel deleted
    start: torch.Tensor  # (N, C, H, W) the insertion's start (blurred or black)
    inner: torch.Tensor  # (S-1,) pixels changed at each step between the first and the last
    batch_size: int

    def __post_init__(self):
        # Step 0 and the last step are the same images for every order (the image and the fully
        # deleted one; the start and the image): computed once.
        p = {k: _target_probabilities(self.model, v, self.t, self.batch_size)
             for k, v in (("x", self.x), ("deleted", self.deleted), ("start", self.start))}
        self.ends = {"deletion": (p["x"], p["deleted"]), "insertion": (p["start"], p["x"])}

    def __call__(self, kind: str, ranks: torch.Tensor) -> torch.Tensor:
        """The target probability (N, S+1) along one order (ranks (N, H·W), 0 = first changed)."""
        n, _, h, w = self.x.shape
        k = len(self.inner)
        per_image = max(1, self.batch_size // max(1, k))  # images per forward batch
        rows = []
        for s in range(0, n if k else 0, per_image):
            sl = slice(s, min(n, s + per_image))
            mask = ranks[sl].to(self.x.device)[:, None, :] < self.inner[None, :, None]  # (m, S-1, HW)
            mask = mask.view(-1, k, 1, h, w)
            xs = self.x[sl, None]
            batch = (torch.where(mask, self.deleted[sl, None], xs) if kind == "deletion"
                     else torch.where(mask, xs, self.start[sl, None]))  # (m, S-1, C, H, W)
            p = _target_probabilities(self.model, batch.flatten(0, 1), self.t[sl].repeat_interleave(k),
                                      self.batch_size)
            rows.append(p.view(-1, k))
        first, last = self.ends[kind]
        middle = torch.cat(rows) if k else torch.zeros(n, 0)
        return torch.cat([first[:, None], middle, last[:, None]], dim=1)  # (N, S+1)


def deletion_insertion(model: nn.Module, images: torch.Tensor, target, maps: Mapping[str, torch.Tensor], *,
                       config: FaithfulnessConfig = FaithfulnessConfig()) -> DeletionInsertion:
    """Deletion and insertion curves of every map (N, H, W) for images (N, C, H, W) uint8 or
    [0, 1], explaining `target` (an int or (N,) classes); plus the random-order baseline."""
    x, t = prepare_inputs(model, images, target)
    n, c, h, w = x.shape
    for m, a in maps.items():
        if tuple(a.shape) != (n, h, w):
            raise ConfigError(f"map {m!r} has shape {tuple(a.shape)}, expected {(n, h, w)} (N, H, W)")
    hw = h * w
    counts = torch.tensor([round(s * hw / config.steps) for s in range(config.steps + 1)], device=x.device)
    gen = torch.Generator().manual_seed(config.seed)
    orders = {m: pixel_ranks(a, gen) for m, a in maps.items()}
    randoms = [pixel_ranks(torch.zeros(n, h, w), gen) for _ in range(config.random_orders)]
    start = gaussian_blur(x, config.sigma(h, w)) if config.insertion_start == "blur" else torch.zeros_like(x)
    curves: dict[str, dict[str, torch.Tensor]] = {"deletion": {}, "insertion": {}}
    with working_copy(model, config.channels_last) as work, torch.inference_mode():
        curve = _Curves(work, x, t, torch.full_like(x, config.deletion_value), start, counts[1:-1],
                        config.batch_size)
        for kind in ("deletion", "insertion"):
            for m, ranks in orders.items():
                curves[kind][m] = curve(kind, ranks)
            curves[kind][RANDOM] = torch.stack([curve(kind, r) for r in randoms]).mean(0)
    return DeletionInsertion(fractions=counts.cpu().double() / hw, curves=curves, config=config)


# ---- the model-randomization sanity check ------------------------------------------------------

def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based, ties share their mean rank, as scipy.stats.rankdata) of each row
    of x (N, M), float64."""
    n, m = x.shape
    sorted_x, order = x.sort(dim=1, stable=True)
    new = torch.ones_like(sorted_x, dtype=torch.bool)
    new[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    group = new.long().cumsum(1) - 1  # (N, M) tie group of each sorted position
    pos = torch.arange(m, device=x.device).expand(n, m)
    first = torch.full((n, m), m, dtype=torch.long, device=x.device).scatter_reduce(1, group, pos, "amin")
    last = torch.zeros((n, m), dtype=torch.long, device=x.device).scatter_reduce(1, group, pos, "amax")
    mean_rank = (first.gather(1, group) + last.gather(1, group)).double() / 2 + 1
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of each row pair of a, b (N, ...) → (N,) float64: the Pearson
    correlation of their average ranks; NaN where a row is constant."""
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(denom > 0, (ra * rb).sum(1) / denom.clamp_min(1e-300), torch.nan)


def _is_constant(maps: torch.Tensor) -> torch.Tensor:
    """(N,) True where a map (N, ...) holds one value everywhere (no pixel ranks above another)."""
    flat = maps.reshape(len(maps), -1)
    return flat.amax(1) == flat.amin(1)


def map_correlation(trained: torch.Tensor, randomized: torch.Tensor, signed: bool = False) -> torch.Tensor:
    """Spearman's ρ (N,) of each trained map with its randomized counterpart, of |map| (or, signed,
    of the maps themselves: a sign flip gives −1 where |map| gives 1). A randomized map that went
    constant has lost every ranking the trained one had: it counts as changed, ρ = 0. A constant
    trained map has no ranking to lose: NaN, and the image is left out (see Randomization.n)."""
    a, b = (trained, randomized) if signed else (trained.abs(), randomized.abs())
    rho = spearman(a, b)
    return torch.where(_is_constant(b) & ~_is_constant(a), torch.zeros_like(rho), rho)


def _own_parameter_layers(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters themselves, in registration (≈ forward) order."""
    return [name for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]


def cascade_groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The layers randomized at each step of the cascade, from the top: (label, module names).
    probe's Classifier: the linear layer, then each stage from the last, then the stem; any
    other model: the top layer, then the rest in three near-equal parts."""
    net = getattr(model, "net", None)
    prefix = "net."
    if net is None and hasattr(model, "stages") and hasattr(model, "fc"):
        net, prefix = model, ""
    if net is not None and hasattr(net, "stages") and hasattr(net, "fc") and hasattr(net, "stem"):
        stages = [name for name, _ in net.stages.named_children()]
        groups = [("fc", [f"{prefix}fc"])]
        for i, s in enumerate(reversed(stages)):
            names = [f"{prefix}stages.{s}"] + ([f"{prefix}final"] if i == 0 else [])
            groups.append((s, names))
        groups.append(("stem", [f"{prefix}stem"]))
        return groups
    layers = _own_parameter_layers(model)[::-1]
    if not layers:
        raise ConfigError("the model has no parameters to randomize")
    groups = [(layers[0], [layers[0]])]
    rest = layers[1:]
    parts = min(3, len(rest))
    for i in range(parts):
        chunk = rest[i * len(rest) // parts:(i + 1) * len(rest) // parts]
        label = chunk[0] if len(chunk) == 1 else f"{chunk[0]} … {chunk[-1]}"
        groups.append((label, chunk))
    return groups


def randomize_(model: nn.Module, names: Sequence[str]) -> None:
    """Re-initialize every parameter inside the named modules, in place (as a fresh model would
    be: each layer's own reset_parameters, which also resets BatchNorm's running statistics)."""
    for name in names:
        root = model.get_submodule(name)
        for module in root.modules():
            if next(module.parameters(recurse=False), None) is None:
                continue
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:  # no recipe: draw from a normal of the trained values' scale
                with torch.no_grad():
                    for p in module.parameters(recurse=False):
                        p.normal_(0.0, float(p.std()) if p.numel() > 1 else 0.01)


@dataclass
class Randomization:
    """spearman[method]: (steps, N) ρ of |map|, step k = every group up to k randomized (the
    last: the whole model); signed[method]: the same of the signed maps; flat[method]: (steps, N)
    True where the randomized map went constant (counted as changed, ρ = 0); maps[method]:
    (steps, N, H, W) the randomized models' maps. A mean rests on the images whose trained map
    is not constant (n[method])."""
    steps: list[str]  # label of the group added at each step
    layers: list[list[str]]  # module names randomized at each step (cumulative)
    spearman: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    trained_maps: dict[str, torch.Tensor]
    threshold: float
    cascading: bool = True
    seconds: dict[str, float] = field(default_factory=dict)
    signed: dict[str, torch.Tensor] = field(default_factory=dict)
    flat: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n(self) -> dict[str, int]:
        """Images each method's numbers rest on: those with a ρ (a trained map that is not constant)."""
        return {m: int(torch.isfinite(s[-1]).sum()) for m, s in self.spearman.items()}

    @property
    def final(self) -> dict[str, float]:
        """Mean Spearman correlation of |map| per method with the whole model randomized."""
        return {m: _mean(s[-1]) for m, s in self.spearman.items()}

    @property
    def final_signed(self) -> dict[str, float]:
        return {m: _mean(s[-1]) for m, s in self.signed.items()}

    @property
    def high(self) -> list[str]:
        """Methods whose mean ρ of |map| stays above the threshold with the whole model random."""
        return [m for m, r in self.final.items() if not math.isnan(r) and r > self.threshold]

    @property
    def flagged(self) -> list[str]:
        """Methods whose maps barely change when the model is destroyed, on at least MIN_IMAGES images."""
        return [m for m in self.high if self.n[m] >= MIN_IMAGES]

    def summary(self) -> dict:
        def means(d):
            return {m: [_mean(row) for row in s] for m, s in d.items()}
        return {"steps": self.steps, "layers": self.layers, "cascading": self.cascading,
                "threshold": self.threshold, "min_images": MIN_IMAGES,
                "correlation": "Spearman of |map| (and of the signed map), per image; a map gone constant: 0",
                "spearman_mean": means(self.spearman), "spearman_signed_mean": means(self.signed),
                "spearman_per_image_randomized": {m: s[-1].tolist() for m, s in self.spearman.items()},
                "spearman_signed_per_image_randomized": {m: s[-1].tolist() for m, s in self.signed.items()},
                "constant_maps": {m: [int(row.sum()) for row in f] for m, f in self.flat.items()},
                "n": self.n, "final": self.final, "final_signed": self.final_signed, "flagged": self.flagged,
                "too_few_to_flag": [m for m in self.high if m not in self.flagged]}


def _mean(rho: torch.Tensor) -> float:
    """The mean of the finite values (NaN when there is none), without nanmean's warning."""
    ok = rho[torch.isfinite(rho)]
    return float(ok.mean()) if len(ok) else math.nan


def _explainers(model: nn.Module, methods: Sequence[str] | Mapping[str, Explainer], config: SaliencyConfig,
                layer: Layer) -> dict[str, Explainer]:
    """{name: callable(model, x, targets) → (N, H, W)}: the caller's own, or the named methods
    (Grad-CAM's layer by name, so that it is found in every copy)."""
    if isinstance(methods, Mapping):
        return dict(methods)
    names = parse_methods(methods)
    cam = layer_name(model, layer) if any(METHODS[m].needs_layer for m in names) else None
    return {m: explainer(m, config, cam) for m in names}


@dataclass
class _Timed:
    """Runs one explainer on a model (eval mode, no parameter gradients, the same noise for every
    model), adding its seconds and reporting progress."""
    fns: dict[str, Explainer]
    x: torch.Tensor
    t: torch.Tensor
    seed: int
    progress: Callable[[str], None] | None
    seconds: dict[str, float] = field(default_factory=dict)

    def __call__(self, net: nn.Module, name: str) -> torch.Tensor:
        start = time.perf_counter()
        net = inference_copy(net)  # probe's ResNets: this (randomized) model with BatchNorm folded
        with evaluating(net, frozen=True), seeded(self.seed, self.x.device):
            out = self.fns[name](net, self.x, self.t).detach().float().cpu()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        if self.progress is not None:
            self.progress(name)
        return out


def _copy_to_destroy(model: nn.Module) -> nn.Module:
    try:
        with evaluating(model):
            work = copy.deepcopy(model)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"the randomization check needs a copy of the model, and copy.deepcopy failed: {e}") from None
    for p in work.parameters():
        p.grad = None
    return work


def randomization_check(model: nn.Module, images: torch.Tensor, target, *,
                        methods: Sequence[str] | Mapping[str, Explainer] = ("vanilla",),
                        config: SaliencyConfig = SaliencyConfig(), layer: Layer = None,
                        trained_maps: Mapping[str, torch.Tensor] | None = None, cascade: bool = True,
                        threshold: float = FaithfulnessConfig.flag_threshold, seed: int = 0,
                        progress: Callable[[str], None] | None = None) -> Randomization:
    """Maps of the trained model against maps of copies whose weights are re-initialized,
    cascading from the top layer (cascade=False: only the whole model at once). `methods`:
    names, or {name: callable(model, x, targets) → (N, H, W)} for a map of your own (e.g. the
    image itself, which ignores the model: correlation 1). Correlations are of |map| and of the
    signed maps; a map that goes constant counts as changed (ρ = 0, see map_correlation).
    trained_maps: the trained model's maps if already computed (saves their time)."""
    x, t = prepare_inputs(model, images, target)
    fns = _explainers(model, methods, config, layer)
    groups = cascade_groups(model)
    if not cascade:
        groups = [("all", [name for _, g in groups for name in g])]
    timed = _Timed(fns, x, t, config.seed, progress)
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in fns}
    layers: list[list[str]] = []
    with working_copy(model, config.channels_last) as work:
        trained = {m: (trained_maps[m].float().cpu() if trained_maps is not None and m in trained_maps
                       else timed(work, m)) for m in fns}
    # A copy of its own to destroy, never the working copy: that may be the model's shared
    # inference copy (probe's ResNets), which later calls would then find randomized.
    work = _copy_to_destroy(model)
    with seeded(seed, x.device):
        for _, names in groups:
            randomize_(work, names)  # cumulative: the earlier groups stay randomized
            layers.append((layers[-1] if layers else []) + list(names))
            for m in fns:
                maps[m].append(timed(work, m))

    def per_step(fn):
        return {m: torch.stack([fn(trained[m], r) for r in rs]) for m, rs in maps.items()}
    return Randomization(steps=[label for label, _ in groups], layers=layers, spearman=per_step(map_correlation),
                         maps={m: torch.stack(rs) for m, rs in maps.items()}, trained_maps=trained,
                         threshold=threshold, cascading=cascade, seconds=timed.seconds,
                         signed=per_step(lambda a, b: map_correlation(a, b, signed=True)),
                         flat=per_step(lambda a, b: _is_constant(b)))
