"""How far a saliency map can be trusted: two measures beside every map.

- Deletion and insertion (Petsiuk et al. 2018, RISE): the pixels are removed from the image (set
  to black), or added to a blurred copy of it, in the map's order, most important first; the
  target class's probability is recorded at each step, and the area under each curve compared
  with the same curve for a random order. A faithful map has a small deletion area (the class
  dies fast) and a large insertion area (it comes back fast).
- The model-randomization sanity check (Adebayo et al. 2018): the maps of the trained model
  against the maps of the same architecture whose weights are re-initialized, cascading from
  the top layer down. A map that hardly changes when the model is destroyed explains the image,
  not the model: its Spearman rank correlation with the trained map stays high, and it is flagged.

Every function takes any nn.Module mapping [0, 1] images to logits, works in batches, and
leaves the caller's model as it found it (a randomized copy is made; the original is never
touched).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from probe.methods.common import evaluating
from probe.methods.saliency import (Explainer, SaliencyConfig, explainer, layer_name,
                                     parse_methods, prepare_inputs, resolve_layer, seeded,
                                     working_copy)
from probe.errors import ConfigError

RANDOM = "random"  # the key of the random-order baseline


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

    def summary(self) -> dict[str, dict]:
        """Per method (and "random"): the mean AUCs over the images, and the mean curves."""
        dele, ins = self.auc("deletion"), self.auc("insertion")
        out = {}
        for m in self.curves["deletion"]:
            out[m] = {"deletion_auc": float(dele[m].mean()), "insertion_auc": float(ins[m].mean()),
                      "deletion_auc_per_image": dele[m].tolist(), "insertion_auc_per_image": ins[m].tolist(),
                      "deletion_curve": self.curves["deletion"][m].mean(0).tolist(),
                      "insertion_curve": self.curves["insertion"][m].mean(0).tolist()}
        return out


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of (N, C, H, W), reflect-padded (replicate where too small)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t / sigma) ** 2 / 2)
    k = k / k.sum()
    c = x.shape[1]
    h, w = x.shape[-2:]
    mode = "reflect" if radius < min(h, w) else "replicate"
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, radius, radius), mode=mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


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


def _probabilities(model, x, targets, batch_size):
    """Target probabilities of x (B, C, H, W) with targets (B,), in batches."""
    out = []
    for s in range(0, len(x), batch_size):
        logits = model(x[s:s + batch_size])
        out.append(logits.float().softmax(1).gather(1, targets[s:s + batch_size, None])[:, 0])
    return torch.cat(out).cpu()


def deletion_insertion(model: nn.Module, images: torch.Tensor, target, maps: Mapping[str, torch.Tensor], *,
                       config: FaithfulnessConfig = FaithfulnessConfig()) -> DeletionInsertion:
    """Deletion and insertion curves of every map (N, H, W) for images (N, C, H, W) uint8 or
    [0, 1], explaining `target` (an int or (N,) classes); plus the random-order baseline."""
    x, t = prepare_inputs(model, images, target)
    n, c, h, w = x.shape
    for m, a in maps.items():
        if tuple(a.shape) != (n, h, w):
            raise ConfigError(f"map {m!r} has shape {tuple(a.shape)}, expected {(n, h, w)} (N, H, W)")
    steps = config.steps
    hw = h * w
    counts = torch.tensor([round(s * hw / steps) for s in range(steps + 1)], device=x.device)  # pixels per step
    gen = torch.Generator().manual_seed(config.seed)
    orders = {m: pixel_ranks(a, gen) for m, a in maps.items()}
    randoms = [pixel_ranks(torch.zeros(n, h, w), gen) for _ in range(config.random_orders)]
    deleted = torch.full_like(x, config.deletion_value)
    sigma = config.sigma(h, w)
    start = gaussian_blur(x, sigma) if config.insertion_start == "blur" else torch.zeros_like(x)

    # Only the inner steps depend on the order: step 0 and the last step are the same images
    # for every order (the image and the fully deleted one; the start and the image).
    inner = counts[1:-1]  # (S-1,)
    curves: dict[str, dict[str, torch.Tensor]] = {"deletion": {}, "insertion": {}}
    per_image = max(1, config.batch_size // max(1, len(inner)))  # images per forward batch
    with working_copy(model, config.channels_last) as work, torch.inference_mode():
        ends = {"deletion": (_probabilities(work, x, t, config.batch_size),
                             _probabilities(work, deleted, t, config.batch_size)),
                "insertion": (_probabilities(work, start, t, config.batch_size),
                              _probabilities(work, x, t, config.batch_size))}

        def curve(kind: str, ranks: torch.Tensor) -> torch.Tensor:
            rows = []
            for s in range(0, n if steps > 1 else 0, per_image):
                sl = slice(s, min(n, s + per_image))
                mask = ranks[sl].to(x.device)[:, None, :] < inner[None, :, None]  # (m, S-1, HW)
                mask = mask.view(-1, steps - 1, 1, h, w)
                xs, t_ = x[sl, None], t[sl]
                if kind == "deletion":
                    batch = torch.where(mask, deleted[sl, None], xs)  # (m, S-1, C, H, W)
                else:
                    batch = torch.where(mask, xs, start[sl, None])
                p = _probabilities(work, batch.flatten(0, 1), t_.repeat_interleave(steps - 1), config.batch_size)
                rows.append(p.view(-1, steps - 1))
            first, last = ends[kind]
            middle = torch.cat(rows) if steps > 1 else torch.zeros(n, 0)
            return torch.cat([first[:, None], middle, last[:, None]], dim=1)  # (N, S+1)

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
    """spearman[method]: (steps, N), step k = every group up to k randomized (the last: the
    whole model); maps[method]: (steps, N, H, W) the randomized models' maps."""
    steps: list[str]  # label of the group added at each step
    layers: list[list[str]]  # module names randomized at each step (cumulative)
    spearman: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    trained_maps: dict[str, torch.Tensor]
    threshold: float
    cascading: bool = True
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        """Mean Spearman correlation per method with the whole model randomized."""
        return {m: float(torch.nanmean(s[-1])) for m, s in self.spearman.items()}

    @property
    def flagged(self) -> list[str]:
        """Methods whose maps barely change when the model is destroyed."""
        return [m for m, r in self.final.items() if not math.isnan(r) and r > self.threshold]

    def summary(self) -> dict:
        return {"steps": self.steps, "layers": self.layers, "cascading": self.cascading,
                "threshold": self.threshold, "correlation": "Spearman of |map|, per image",
                "spearman_mean": {m: [float(torch.nanmean(row)) for row in s] for m, s in self.spearman.items()},
                "spearman_per_image_randomized": {m: s[-1].tolist() for m, s in self.spearman.items()},
                "final": self.final, "flagged": self.flagged}


def randomization_check(model: nn.Module, images: torch.Tensor, target, *,
                        methods: Sequence[str] | Mapping[str, Explainer] = ("vanilla",),
                        config: SaliencyConfig = SaliencyConfig(), layer: nn.Module | str | None = None,
                        trained_maps: Mapping[str, torch.Tensor] | None = None, cascade: bool = True,
                        threshold: float = FaithfulnessConfig.flag_threshold, seed: int = 0,
                        progress: Callable[[str], None] | None = None) -> Randomization:
    """Maps of the trained model against maps of copies whose weights are re-initialized,
    cascading from the top layer (cascade=False: only the whole model at once). `methods`:
    names, or {name: callable(model, x, targets) → (N, H, W)} for a map of your own (e.g. the
    image itself, which ignores the model: correlation 1). Correlations are of |map|.
    trained_maps: the trained model's maps if already computed (saves their time)."""
    import time
    x, t = prepare_inputs(model, images, target)
    if isinstance(methods, Mapping):
        fns = dict(methods)
    else:
        names = parse_methods(methods)
        cam = None
        if "gradcam" in names:  # the same layer, by name, in every copy
            cam = layer if isinstance(layer, str) else layer_name(model, resolve_layer(model, layer))
        fns = {m: explainer(m, config, cam) for m in names}
    groups = cascade_groups(model)
    if not cascade:
        groups = [("all", [name for _, g in groups for name in g])]
    seconds: dict[str, float] = {}

    def run(net: nn.Module, name: str) -> torch.Tensor:
        start = time.perf_counter()
        with evaluating(net, frozen=True), seeded(config.seed, x.device):  # the same noise for every model
            out = fns[name](net, x, t).detach().float().cpu()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        if progress is not None:
            progress(name)
        return out

    maps = {m: [] for m in fns}
    layers: list[list[str]] = []
    with working_copy(model, config.channels_last) as work:
        trained = {m: (trained_maps[m].float().cpu() if trained_maps is not None and m in trained_maps
                       else run(work, m)) for m in fns}
        if work is model:  # no working copy was made: make one to destroy
            try:
                with evaluating(model):
                    work = copy.deepcopy(model)
            except Exception as e:  # noqa: BLE001
                raise ConfigError(f"the randomization check needs a copy of the model, and "
                                  f"copy.deepcopy failed: {e}") from None
            for p in work.parameters():
                p.grad = None
        done: list[str] = []
        with seeded(seed, x.device):
            for _, names in groups:
                randomize_(work, names)  # cumulative: the earlier groups stay randomized
                done = done + list(names)
                layers.append(done)
                for m in fns:
                    maps[m].append(run(work, m))
    spear = {m: torch.stack([spearman(trained[m].abs(), r.abs()) for r in rs]) for m, rs in maps.items()}
    return Randomization(steps=[label for label, _ in groups], layers=layers, spearman=spear,
                         maps={m: torch.stack(rs) for m, rs in maps.items()}, trained_maps=trained,
                         threshold=threshold, cascading=cascade, seconds=seconds)
