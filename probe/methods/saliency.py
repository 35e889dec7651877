"""What a model looks at: six attribution methods as captum defines them, configured for batches
(SmoothGrad, IG and Occlusion through captum; Grad-CAM and Guided Backprop computed here, the
same numbers as captum's without its hooks per call; tests compare both).

    vanilla     |∂score/∂x|, the largest over channels (Simonyan et al. 2014; the seed's maps)
    smoothgrad  NoiseTunnel(Saliency): the mean |gradient| over noisy copies (Smilkov et al. 2017)
    ig          IntegratedGradients from a black image, summed over channels (signed; Sundararajan
                et al. 2017), with its completeness gap per image
    gradcam     Grad-CAM on the last feature map (a small input's 7×7 is a blob: choose_cam_layer
                then takes the last one with at least 8×8), ReLU'd, upsampled bilinearly to the
                input (Selvaraju et al. 2017)
    guided      Guided Backprop, |value| the largest over channels (Springenberg et al. 2015)
    occlusion   Occlusion: the drop of the score when a window (sized to the image) is blacked
                out, averaged over the windows covering each pixel (Zeiler & Fergus 2014; signed)

Each method is one entry of METHODS (a `Method`: its name, titles, sign, reduction, colour and
the function that computes it): adding a method touches that one place, and the tables, the
figures and the terminal all take their names from it.

Every map is (N, H, W) at the network's input: one value per pixel. `model` is any nn.Module
mapping [0, 1] images (N, C, H, W) to logits, in any floating dtype; scores are logits of the
target class. The caller's model mode, `.grad` and `requires_grad` are left as they were.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from probe.errors import ConfigError
from probe.methods.common import (MAX_BATCH, MAX_STEPS, as_classes, as_input, class_count, class_probabilities,
                                  evaluating)
from probe.models.inference import inference_copy
from probe.models.windowed import WindowGrid, occluded_logits

Layer = nn.Module | str | None  # Grad-CAM's layer: a module, its dotted name, or the model's cam_layer
MIN_CAM = 8  # "auto" picks a Grad-CAM layer whose feature map is at least this many pixels a side
Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SaliencyConfig:
    """The settings of every method, chosen to be fast on a CPU and recorded in results.json."""
    smoothgrad_samples: int = 25
    smoothgrad_stdev: float = 0.15  # noise σ in [0, 1] pixel units (Smilkov et al.: 10–20% of the range)
    ig_steps: int = 32
    ig_method: str = "gausslegendre"  # captum's default quadrature: accurate with few steps
    ig_baseline: float = 0.0  # a black image
    occlusion_window: int | None = None  # None: about 1/7 of the shorter side (4 px at 28 or 32)
    occlusion_stride: int | None = None  # None: half the window
    occlusion_value: float = 0.0  # what the window is filled with (black)
    gradcam_interpolation: str = "bilinear"
    batch_size: int = 256  # the largest number of images in one forward pass, for every method
    seed: int = 0  # SmoothGrad's noise
    channels_last: bool = True  # compute on a channels-last copy (oneDNN's fast convolutions)

    def __post_init__(self):
        for name, most in (("smoothgrad_samples", MAX_STEPS), ("ig_steps", MAX_STEPS), ("batch_size", MAX_BATCH)):
            if not 1 <= int(getattr(self, name)) <= most:
                raise ConfigError(f"{name} must be from 1 to {most:,}, not {getattr(self, name)}")
        if self.smoothgrad_stdev < 0:
            raise ConfigError(f"smoothgrad_stdev must be ≥ 0, not {self.smoothgrad_stdev}")
        for name in ("occlusion_window", "occlusion_stride"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ConfigError(f"{name} must be at least 1 (or None for the automatic size), not {v}")

    def occlusion_shape(self, height: int, width: int) -> tuple[int, int]:
        """(window, stride) for an H×W input: a window sized to the image, never larger."""
        window = self.occlusion_window or max(2, min(height, width) // 7)
        window = min(window, height, width)
        stride = self.occlusion_stride or max(1, window // 2)
        if stride > window and max(height, width) > window:
            raise ConfigError(f"occlusion_stride {stride} is larger than the {window}-pixel window: pixels between "
                              f"windows would never be occluded; use a stride of at most {window}")
        return window, stride

    def to_dict(self, height: int | None = None, width: int | None = None) -> dict:
        d = asdict(self)
        if height is not None and width is not None:
            d["occlusion_window"], d["occlusion_stride"] = self.occlusion_shape(height, width)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SaliencyConfig":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})


# ---- the methods: one function each, for one batch of images ------------------------------------
# x: (m, C, H, W) detached, on the model's device in its dtype; t: (m,) classes. → (m, H, W).


def _vanilla(model, x, t, config: SaliencyConfig, layer: Layer) -> torch.Tensor:
    from captum.attr import Saliency
    return Saliency(model).attribute(x.requires_grad_(), target=t, abs=True).amax(1)


def _smoothgrad(model, x, t, config: SaliencyConfig, layer: Layer) -> torch.Tensor:
    from captum.attr import NoiseTunnel, Saliency
    per_pass = max(1, min(config.smoothgrad_samples, config.batch_size // len(x)))
    forward = model
    if x.dtype in (torch.float16, torch.bfloat16):  # captum's noise is float32: x + noise would be too
        def forward(inp):
            return model(inp.to(x.dtype))
    return NoiseTunnel(Saliency(forward)).attribute(
        x.requires_grad_(), nt_type="smoothgrad", nt_samples=config.smoothgrad_samples,
        nt_samples_batch_size=per_pass, stdevs=config.smoothgrad_stdev, target=t, abs=True).amax(1)


def _integrated_gradients(model, x, t, config: SaliencyConfig, layer: Layer) -> torch.Tensor:
    from captum.attr import IntegratedGradients
    return IntegratedGradients(model).attribute(
        x.requires_grad_(), baselines=config.ig_baseline, target=t, n_steps=config.ig_steps,
        method=config.ig_method, internal_batch_size=max(len(x), config.batch_size)).sum(1)


def _black(x: torch.Tensor, config: SaliencyConfig) -> torch.Tensor:
    return torch.full_like(x, config.ig_baseline)


def _gradcam(model, x, t, config: SaliencyConfig, layer: Layer) -> torch.Tensor:
    """captum's LayerGradCam (relu_attributions) and LayerAttribution.interpolate, computed here:
    the same numbers without captum's per-call hook machinery (benchmarks/saliency_speed.py).
    Only the layer's gradient is needed, so autograd records from the layer on: the pass up to it
    (of a frozen working copy) runs as inference, fused where it can (probe.models.fused)."""
    module = resolve_layer(model, layer)
    outputs = []

    def keep(_m, _inp, out):
        first = out[0] if isinstance(out, tuple) else out
        if not first.requires_grad:  # nothing before the layer needs a gradient: recorded from here on
            first = first.detach().requires_grad_()
        outputs.append(first)
        # the network goes on with a copy: an in-place op after the layer (ReLU(inplace=True),
        # `out += identity`) leaves the activations as the layer gave them, as captum keeps them
        passed = first.clone()
        return (passed, *out[1:]) if isinstance(out, tuple) else passed
    hook = module.register_forward_hook(keep)
    try:
        score = model(x.detach()).gather(1, t[:, None]).sum()
    finally:
        hook.remove()
    acts = outputs[-1]  # (m, c, h', w'): the layer's output (its last call, as captum's hook keeps)
    grads, = torch.autograd.grad(score, acts)
    weights = grads.mean(dim=tuple(range(2, grads.dim())), keepdim=True)  # (m, c, 1, 1)
    cam = (weights * acts).sum(1, keepdim=True).relu()  # (m, 1, h', w')
    return nn.functional.interpolate(cam, size=tuple(x.shape[-2:]), mode=config.gradcam_interpolation)[:, 0]


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients where the input was positive: captum's
    GuidedBackprop rule (relu of the ReLU's own input gradient), without a hook per module."""

    @staticmethod
    def forward(ctx, x):
        out = x.clamp_min(0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, = ctx.saved_tensors
        return grad.clamp_min(0).masked_fill_(out <= 0, 0)


NO_RELU = ("the model's ReLUs as nn.ReLU modules, and this model has none (a TorchScript or exported model, "
           "another activation, or F.relu in forward)")


def unavailable_methods(model: nn.Module) -> dict[str, str]:
    """The methods this model cannot serve, each with why: what a loaded model says of itself
    (`unavailable`: a TorchScript file has no layer to hook), and Guided Backprop where the model
    has no nn.ReLU module to guide (its map would be the plain gradient)."""
    out = dict(getattr(model, "unavailable", None) or {})
    if "guided" not in out and not any(isinstance(m, nn.ReLU) for m in model.modules()):
        out["guided"] = f"it needs {NO_RELU}"
    return out


def asks_all(methods: str | Sequence[str]) -> bool:
    """Whether `methods` says "all" (in any case, alone or in a list): the methods the model can serve."""
    names = methods.split(",") if isinstance(methods, str) else methods
    return any(str(m).strip().lower() == "all" for m in names)


@contextlib.contextmanager
def _guided_relus(model: nn.Module) -> Iterator[None]:
    """Every nn.ReLU module of the model computing _GuidedReLU while inside; restored after. The
    rule goes with each call: a ReLU module used twice in one forward pass, or built in-place,
    gets the map of the same network with a fresh ReLU per use (tested)."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:  # the rule would change nothing: the map would be the plain gradient, mislabelled
        raise ConfigError(f"Guided Backprop needs {NO_RELU}: leave out guided")
    own = [m.__dict__.get("forward") for m in relus]  # a forward set on the instance, kept
    for m in relus:
        m.forward = _GuidedReLU.apply
    try:
        yield
    finally:
        for m, before in zip(relus, own):
            del m.forward
            if before is not None:
                m.forward = before


def _guided(model, x, t, config: SaliencyConfig, layer: Layer) -> torch.Tensor:
    x = x.requires_grad_()
    with _guided_relus(model):
        score = model(x).gather(1, t[:, None]).sum()
        grad, = torch.autograd.grad(score, x)
    return grad.abs().amax(1)


def _occlusion(model, x, t, config: SaliencyConfig, layer: Layer) -> torch.Tensor:
    c, h, w = x.shape[1:]
    grid = WindowGrid(h, w, *config.occlusion_shape(h, w))
    with torch.no_grad():
        # probe's ResNets: each window's pass computed only where the window reaches (the same maps)
        occluded = occluded_logits(model, x, grid, config.occlusion_value, config.batch_size)
        if occluded is None:
            from captum.attr import Occlusion
            return Occlusion(model).attribute(
                x, sliding_window_shapes=(c, grid.window, grid.window), strides=(c, grid.stride, grid.stride),
                baselines=config.occlusion_value, target=t,
                perturbations_per_eval=max(1, config.batch_size // len(x))).mean(1)
        score = model(x).gather(1, t[:, None])  # (N, 1)
        drops = score[:, :, None] - occluded.gather(3, t[:, None, None, None].expand(*occluded.shape[:3], 1))[..., 0]
        return grid.spread(drops)  # (N, H, W): the mean drop of the windows over each pixel


@dataclass(frozen=True)
class Method:
    """One attribution method: everything the tables, figures and files say of it, and the
    function that computes its maps of one batch."""
    name: str  # what --method takes, the key in attributions.safetensors
    title: str  # in tables, legends and the terminal
    short_title: str  # a figure's column heading: the title, broken where it is long
    signed: bool  # values of both signs (a diverging colour scale about 0); else ≥ 0
    many_passes: bool  # many forward passes per image: a channels-last working copy pays off
    reduction: str  # how the (N, C, H, W) attribution becomes one value per pixel
    colour: int  # its line colour: an index into the figures' colour-blind palette
    compute: Callable[[nn.Module, torch.Tensor, torch.Tensor, SaliencyConfig, Layer], torch.Tensor]
    # The input its attributions add up against (Σ map = f(x) − f(baseline)): checked per image.
    baseline: Callable[[torch.Tensor, SaliencyConfig], torch.Tensor] | None = None
    needs_layer: bool = False  # explains a layer (Grad-CAM's feature map)
    unit: str = ""  # what a value is, under its colour bar ("" : "attribution", signed or not)
    overlay: bool = False  # smooth enough to see the image through: drawn on it by default (overlay "auto")


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("vanilla", "Gradient", "Gradient", False, False, "max over channels of |gradient|", 0, _vanilla,
           unit="|gradient|"),
    Method("smoothgrad", "SmoothGrad", "SmoothGrad", False, True, "max over channels of mean |gradient|", 1,
           _smoothgrad, unit="mean |gradient|"),
    Method("ig", "Integrated Gradients", "Integrated\nGradients", True, True,
           "sum over channels (keeps completeness)", 2, _integrated_gradients, baseline=_black,
           unit="attribution (signed)"),
    Method("gradcam", "Grad-CAM", "Grad-CAM", False, False, "one channel (layer map, upsampled)", 3, _gradcam,
           needs_layer=True, unit="class activation", overlay=True),
    Method("guided", "Guided Backprop", "Guided\nBackprop", False, False, "max over channels of |value|", 4,
           _guided, unit="guided |gradient|"),
    Method("occlusion", "Occlusion", "Occlusion", True, True,
           "mean over channels (equal: the window spans them)", 5, _occlusion, unit="score drop (signed)",
           overlay=True),
)}


def method_title(name: str) -> str:
    """The title of a method (a map of the caller's own keeps its key)."""
    return METHODS[name].title if name in METHODS else name


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """"all", "vanilla,ig" or a list → method names in the order given; an unknown name is a
    ConfigError naming the valid ones and the closest match."""
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not names:
        raise ConfigError(f"no method given: use one or more of {', '.join(METHODS)}, or all")
    out: list[str] = []
    for name in names:
        if name == "all":
            out += [m for m in METHODS if m not in out]
            continue
        if name not in METHODS:
            close = difflib.get_close_matches(name, [*METHODS, "all"], n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown method {name!r}{hint}: use one or more of "
                              f"{', '.join(METHODS)}, or all")
        if name not in out:
            out.append(name)
    return out


# ---- the model: Grad-CAM's layer, a working copy, ReLUs ---------------------------------------------

def resolve_layer(model: nn.Module, layer: Layer) -> nn.Module:
    """Grad-CAM's layer: given as a module or a dotted name (or its last parts, when they name one
    layer: "stage2" is probe's `net.stages.stage2`), else the model's `cam_layer` (probe's
    Classifier and ResNet have one)."""
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            pass
        found = [m for name, m in model.named_modules() if name.endswith("." + layer)]
        if len(found) == 1:
            return found[0]
        stages = ", ".join(n for n, _ in _stages(model))
        raise ConfigError(f"the model has {'several layers' if found else 'no layer'} {layer!r} for Grad-CAM"
                          + (f": give a dotted name or one of {stages}" if stages else "")) from None
    cam = getattr(model, "cam_layer", None)
    if isinstance(cam, nn.Module):
        return cam
    raise ConfigError("gradcam needs a layer: this model has no `cam_layer`, so pass "
                      "layer=<the last convolutional block, a module or its dotted name>")


def layer_name(model: nn.Module, layer: Layer) -> str:
    """The dotted name of Grad-CAM's layer inside `model`: it finds the same layer in a copy."""
    found = resolve_layer(model, layer)
    for name, module in model.named_modules():
        if module is found:
            return name
    raise ConfigError("the Grad-CAM layer is not a submodule of the model")


def _stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the stages of probe's ResNet (bare or inside a Classifier), first to last."""
    net = getattr(model, "net", model)
    stages = getattr(net, "stages", None)
    return [(name, m) for name, m in stages.named_children()] if isinstance(stages, nn.Module) else []


@dataclass(frozen=True)
class CamLayer:
    """Grad-CAM's layer: its dotted name, the size of its feature map for the input, and why it."""
    name: str
    size: tuple[int, int]
    reason: str


def _output_sizes(model: nn.Module, x: torch.Tensor, modules: list[nn.Module]) -> list[tuple[int, int]]:
    """The spatial size (h, w) of each module's output in one forward pass of x[:1]."""
    sizes: dict[int, tuple[int, int]] = {}

    def hook(i):
        def record(module, inputs, out):
            if torch.is_tensor(out) and out.ndim == 4:
                sizes.setdefault(i, (int(out.shape[-2]), int(out.shape[-1])))
        return record
    hooks = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        with evaluating(model), torch.inference_mode():
            model(as_input(x[:1], model))
    finally:
        for h in hooks:
            h.remove()
    return [sizes.get(i, (0, 0)) for i in range(len(modules))]


def choose_cam_layer(model: nn.Module, x: torch.Tensor, layer: Layer | str = "auto", min_size: int = MIN_CAM) \
        -> CamLayer:
    """Grad-CAM's layer for inputs like x (N, C, H, W): the one given (None: the model's
    `cam_layer`); or, "auto", the model's `cam_layer` unless its map is smaller than
    min_size×min_size (7×7 on a 28×28 MNIST digit: a blob), then the last stage of probe's
    ResNet whose map is at least that large."""
    if layer != "auto":
        found = resolve_layer(model, layer)
        return CamLayer(layer_name(model, found), _output_sizes(model, x, [found])[0],
                        "the model's last feature map" if layer is None else "as asked")
    last = resolve_layer(model, None)
    stages = [m for _, m in _stages(model)][::-1]
    candidates = [last] + [m for m in stages if m is not last]
    sizes = _output_sizes(model, x, candidates)
    if min(sizes[0]) >= min_size:
        return CamLayer(layer_name(model, last), sizes[0], "the last feature map")
    for module, size in zip(candidates[1:], sizes[1:]):
        if min(size) >= min_size:
            return CamLayer(layer_name(model, module), size,
                            f"the last feature map is only {sizes[0][0]}×{sizes[0][1]}, so the last layer with "
                            f"at least {min_size}×{min_size}")
    return CamLayer(layer_name(model, last), sizes[0], "the last feature map (no larger one)")


@contextlib.contextmanager
def working_copy(model: nn.Module, channels_last: bool = True) -> Iterator[nn.Module]:
    """The model to compute on, in eval mode without parameter gradients. probe's ResNets: their
    inference copy (BatchNorm folded; made once per model), whatever channels_last says. Others,
    with channels_last, a channels-last copy: convolutions in NHWC are 2-3x faster on the CPU (oneDNN), the maps the
    same to float precision, and the caller's model is not even touched. A model that cannot
    be copied (or has no 2-D convolution) is used itself, and its state restored afterwards."""
    fast = inference_copy(model)  # probe's ResNets: BatchNorm folded, channels_last, kept per model
    if fast is not model:
        yield fast
        return
    work = None
    if channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        try:
            with evaluating(model):  # the copy starts in eval mode
                work = copy.deepcopy(model)
            work = work.to(memory_format=torch.channels_last)
        except Exception:  # noqa: BLE001 - an uncopyable module: fall back to the model itself
            work = None
    if work is None:
        with evaluating(model, frozen=True):  # the caller's state restored afterwards
            yield model
        return
    for p in work.parameters():
        p.grad = None
        p.requires_grad_(False)
    yield work


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """A fixed seed for captum's random draws without disturbing the caller's generators."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        # the generators that can draw here; torch.manual_seed would also queue a seeding of
        # every CUDA device, with a stack trace each (~0.2 ms, a twentieth of a Grad-CAM call)
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield


def prepare_inputs(model: nn.Module, images: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """[0, 1] inputs on the model's device in its dtype, and targets (N,) int64 on that device
    (one int for every image, or one per image)."""
    x = as_input(images, model)
    if len(x) == 0:
        raise ConfigError("no images to explain")
    # One image's logits first: a model that returns no logits, or a target beyond them, fails
    # here, not inside the first method.
    t = as_classes(targets, len(x), class_count(model, x), what="target")
    return x, t.to(x.device)


# ---- computing maps --------------------------------------------------------------------------------

def explain(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, method: str,
            config: SaliencyConfig = SaliencyConfig(), layer: Layer = None) -> torch.Tensor:
    """One method's maps (N, H, W) for inputs x (N, C, H, W, on the model's device in its dtype)
    and targets (N,), in chunks of images whose expanded batch (images × samples or steps) stays
    ≤ config.batch_size. Expects the model in eval mode (see `attribute`, which sets it and
    restores the caller's state)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    compute = METHODS[method].compute
    per = min(len(x), config.batch_size)
    # Each chunk a fresh leaf: captum then has nothing to set (and warn about).
    return torch.cat([compute(model, x[s:s + per].detach(), targets[s:s + per], config, layer).detach()
                      for s in range(0, len(x), per)])  # (N, H, W)


def explainer(method: str, config: SaliencyConfig = SaliencyConfig(), layer: str | None = None) -> Explainer:
    """A callable(model, x, targets) → (N, H, W) for one method, usable on a copy of the model
    (Grad-CAM's layer by dotted name, looked up in whichever model it is given)."""
    parse_methods([method])

    def run(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return explain(model, x, targets, method, config, layer)
    run.__name__ = method
    return run


def completeness_gap(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, baseline: torch.Tensor,
                     batch_size: int) -> torch.Tensor:
    """f(x) − f(baseline) of the target logit (N,) float64: what a complete attribution sums to."""
    def logits(inp):
        return torch.cat([model(inp[s:s + batch_size]).gather(1, targets[s:s + batch_size, None])[:, 0]
                          for s in range(0, len(inp), batch_size)]).double().cpu()
    with torch.inference_mode():
        return logits(x) - logits(baseline)


@dataclass
class Attributions:
    """maps[method]: (N, H, W) float32 on the CPU, at the network's input; targets (N,) the
    class each map explains; probs (N, K) the model's class probabilities of the images;
    completeness[method] = (delta, gap), each (N,): Σ map − (f(x) − f(baseline)), and that gap."""
    maps: dict[str, torch.Tensor]
    targets: torch.Tensor
    probs: torch.Tensor
    config: SaliencyConfig
    completeness: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(self.maps)

    @property
    def predicted(self) -> torch.Tensor:
        return self.probs.argmax(1)

    @property
    def p_target(self) -> torch.Tensor:
        return self.probs.gather(1, self.targets[:, None]).squeeze(1)

    def images_per_second(self) -> dict[str, float]:
        n = len(self.targets)
        return {m: n / s for m, s in self.seconds.items() if s > 0}


def gradient_and_probs(model: nn.Module, x: torch.Tensor, t: torch.Tensor, batch_size: int):
    """The vanilla gradient map (N, H, W) and the class probabilities (N, K) from the same
    forward passes: the gradient of the target logit (as captum's Saliency with abs=True) and the
    softmax of the logits it came from, so the probabilities cost no pass of their own."""
    maps, probs = [], []
    for s in range(0, len(x), batch_size):
        inp = x[s:s + batch_size].detach().requires_grad_()
        logits = model(inp)  # (m, K)
        grad, = torch.autograd.grad(logits.gather(1, t[s:s + batch_size, None]).sum(), inp)
        maps.append(grad.abs().amax(1).detach())  # (m, H, W)
        probs.append(logits.detach().float().softmax(1).cpu())
    return torch.cat(maps), torch.cat(probs)


def _one_pass(names: Sequence[str]) -> str | None:
    """The method whose forward pass can also give the class probabilities: vanilla first, else
    any one-pass method (its single forward over the images is the plain model's)."""
    one = [m for m in names if not METHODS[m].many_passes]
    return "vanilla" if "vanilla" in one else (one[0] if one else None)


def _with_probs(model: nn.Module, x: torch.Tensor, t: torch.Tensor, method: str, config: SaliencyConfig,
                layer) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(maps, probabilities) of a one-pass method, the probabilities read off its forward pass
    by a hook (None where it ran the model other than once over the images)."""
    if method == "vanilla":
        return gradient_and_probs(model, x, t, config.batch_size)
    outputs = []
    hook = model.register_forward_hook(lambda _m, _inp, out: outputs.append(out.detach()))
    try:
        maps = explain(model, x, t, method, config, layer)
    finally:
        hook.remove()
    logits = torch.cat(outputs) if outputs else None
    probs = logits.float().softmax(1).cpu() if logits is not None and logits.shape[0] == len(x) else None
    return maps, probs


def _checked_probs(model, x, t, probs, batch_size) -> torch.Tensor:
    if probs is None:
        probs = class_probabilities(model, x, batch_size=batch_size)  # (N, K)
    elif tuple(probs.shape[:1]) != (len(x),):
        raise ConfigError(f"probs of shape {tuple(probs.shape)} for {len(x)} images")
    probs = probs.float().cpu()
    if int(t.min()) < 0 or int(t.max()) >= probs.shape[1]:
        raise ConfigError(f"targets must be classes 0..{probs.shape[1] - 1}")
    return probs


def _warm_up(model: nn.Module, x: torch.Tensor) -> None:
    """One forward and backward pass: the first gradient of a process pays for setting up
    kernels, which would otherwise be billed to whichever method runs first."""
    inp = x[:1].detach().clone().requires_grad_()
    torch.autograd.grad(model(inp).sum(), inp)


def attribute(model: nn.Module, images: torch.Tensor, target, *, methods: str | Sequence[str] = tuple(METHODS),
              config: SaliencyConfig = SaliencyConfig(), layer: Layer = None,
              progress: Callable[[str], None] | None = None, probs: torch.Tensor | None = None,
              warm_up: bool = False) -> Attributions:
    """Maps of every method for images (N, C, H, W) uint8 or [0, 1] and target (an int, or (N,)
    classes). layer: Grad-CAM's layer, needed only for a model without `cam_layer`.
    progress: called with each method's name when it is done. probs: the images' class
    probabilities (N, K) if you have them (else one forward pass computes them). warm_up: one
    gradient before the first method is timed (its `seconds` then leave out the set-up)."""
    names = parse_methods(methods)
    unavailable = unavailable_methods(model)
    for name in names:
        if name in unavailable:
            raise ConfigError(f"{METHODS[name].title} cannot run on this model: {unavailable[name]}")
    x, t = prepare_inputs(model, images, target)
    # Grad-CAM's layer by name (the same layer in the working copy); a bad one fails before the slow methods.
    cam = layer_name(model, layer) if any(METHODS[m].needs_layer for m in names) else None
    # The copy costs about one forward pass of a small batch: worth it for the many passes of
    # SmoothGrad, IG and Occlusion, not for one gradient.
    many_passes = any(METHODS[m].many_passes for m in names)
    maps, seconds, complete = {}, {}, {}
    with working_copy(model, config.channels_last and many_passes) as work, seeded(config.seed, x.device):
        if warm_up:
            _warm_up(work, x)
        # The class probabilities from the first one-pass method's own forward pass (none of
        # their own): billed to that method.
        first = _one_pass(names) if probs is None else None
        probs_pass, shared = None, 0.0
        if first is not None:
            start = time.perf_counter()
            probs_pass, probs = _with_probs(work, x, t, first, config, cam)
            shared = time.perf_counter() - start
        probs = _checked_probs(work, x, t, probs, config.batch_size)
        for name in names:
            done = probs_pass if name == first else None
            start = time.perf_counter() - (shared if done is not None else 0.0)
            a = done if done is not None else explain(work, x, t, name, config, cam)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            seconds[name] = time.perf_counter() - start
            maps[name] = a.float().cpu()
            if METHODS[name].baseline is not None:
                gap = completeness_gap(work, x, t, METHODS[name].baseline(x, config), config.batch_size)
                complete[name] = ((a.double().sum((1, 2)).cpu() - gap).float(), gap.float())
            if progress is not None:
                progress(name)
    return Attributions(maps=maps, targets=t.cpu(), probs=probs, config=config, completeness=complete,
                        seconds=seconds)
