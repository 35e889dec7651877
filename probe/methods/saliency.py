"""What a model looks at: six attribution methods through captum, configured for batches.

    vanilla     |∂score/∂x|, the largest over channels (Simonyan et al. 2014; the seed's maps)
    smoothgrad  NoiseTunnel(Saliency): the mean |gradient| over noisy copies (Smilkov et al. 2017)
    ig          IntegratedGradients from a black image, summed over channels (signed; Sundararajan
                et al. 2017), with captum's convergence delta per image
    gradcam     LayerGradCam on the last feature map, ReLU'd, upsampled bilinearly to the input
                (Selvaraju et al. 2017)
    guided      GuidedBackprop, |value| the largest over channels (Springenberg et al. 2015)
    occlusion   Occlusion: the drop of the score when a window (sized to the image) is blacked
                out, averaged over the windows covering each pixel (Zeiler & Fergus 2014; signed)

Every map is (N, H, W) at the network's input: one value per pixel. `model` is any nn.Module
mapping [0, 1] images (N, C, H, W) to logits; scores are logits of the target class. The
caller's model mode, `.grad` and `requires_grad` are left as they were.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from probe.methods.common import as_input, evaluating, model_device
from probe.errors import ConfigError

METHODS = ("vanilla", "smoothgrad", "ig", "gradcam", "guided", "occlusion")
TITLES = {"vanilla": "Gradient", "smoothgrad": "SmoothGrad", "ig": "Integrated Gradients",
          "gradcam": "Grad-CAM", "guided": "Guided Backprop", "occlusion": "Occlusion"}
SIGNED = frozenset({"ig", "occlusion"})
MANY_PASSES = frozenset({"smoothgrad", "ig", "occlusion"})  # the others: one forward and backward  # the others are ≥ 0 (absolute values, or ReLU'd)
REDUCTION = {  # how a method's (N, C, H, W) attribution becomes one value per pixel
    "vanilla": "max over channels of |gradient|", "smoothgrad": "max over channels of mean |gradient|",
    "ig": "sum over channels (keeps completeness)", "gradcam": "one channel (layer map, upsampled)",
    "guided": "max over channels of |value|", "occlusion": "mean over channels (equal: the window spans them)",
}

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
        for name in ("smoothgrad_samples", "ig_steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
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
        return window, stride

    def to_dict(self, height: int | None = None, width: int | None = None) -> dict:
        d = asdict(self)
        if height is not None and width is not None:
            d["occlusion_window"], d["occlusion_stride"] = self.occlusion_shape(height, width)
        return d


@dataclass
class SaliencyResult:
    """maps[method]: (N, H, W) float32 on the CPU, at the network's input; targets (N,) the
    class each map explains; probs (N, K) the model's class probabilities of the images."""
    maps: dict[str, torch.Tensor]
    targets: torch.Tensor
    probs: torch.Tensor
    config: SaliencyConfig
    ig_delta: torch.Tensor | None = None  # (N,) captum's convergence delta: Σ attribution − (f(x) − f(0))
    ig_gap: torch.Tensor | None = None  # (N,) f(x) − f(baseline) of the target logit
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


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """"all", "vanilla,ig" or a list → method names in the canonical order given; an unknown
    name is a ConfigError naming the valid ones and the closest match."""
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


def resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    """Grad-CAM's layer: given as a module or a dotted name, else the model's `cam_layer`
    (probe's Classifier and ResNet have one)."""
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise ConfigError(f"the model has no layer {layer!r} for Grad-CAM") from None
    cam = getattr(model, "cam_layer", None)
    if isinstance(cam, nn.Module):
        return cam
    raise ConfigError("gradcam needs a layer: this model has no `cam_layer`, so pass "
                      "layer=<the last convolutional block, a module or its dotted name>")


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The dotted name of `layer` inside `model` (to find the same layer in a copy)."""
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ConfigError("the Grad-CAM layer is not a submodule of the model")


@contextlib.contextmanager
def working_copy(model: nn.Module, channels_last: bool = True) -> Iterator[nn.Module]:
    """The model to compute on, in eval mode without parameter gradients. With channels_last, a
    channels-last copy: convolutions in NHWC are 2-3x faster on the CPU (oneDNN), the maps the
    same to float precision, and the caller's model is not even touched. A model that cannot
    be copied (or has no 2-D convolution) is used itself, and its state restored afterwards."""
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


def same_layer(model: nn.Module, work: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    """Grad-CAM's layer of `model`, found (by name) in `work`, a copy of it."""
    found = resolve_layer(model, layer)
    return found if work is model else work.get_submodule(layer_name(model, found))


def _probabilities(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax (N, K) float32 on the CPU of inputs already in the model's dtype and device."""
    with torch.inference_mode():
        return torch.cat([model(x[sl]).float().softmax(1).cpu() for sl in _chunks(len(x), batch_size)])


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def explain(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, method: str,
            config: SaliencyConfig = SaliencyConfig(), layer: nn.Module | str | None = None) -> torch.Tensor:
    """One method's maps (N, H, W) for inputs x (N, C, H, W, float on the model's device) and
    targets (N,), in batches of at most config.batch_size forward images. Expects the model in
    eval mode (see `saliency`, which sets it and restores the caller's state)."""
    from captum.attr import (GuidedBackprop, IntegratedGradients, LayerAttribution, LayerGradCam,
                             NoiseTunnel, Occlusion, Saliency)
    n, c, h, w = x.shape
    bs = config.batch_size
    per = min(n, bs)  # images per call: the expanded batch (images × samples/steps) stays ≤ bs
    out = []
    for sl in _chunks(n, per):
        # A leaf that wants its gradient: captum then has nothing to set (and warn about).
        xb, tb = x[sl].detach().requires_grad_(method != "occlusion"), targets[sl]
        m = len(xb)
        if method == "vanilla":
            a = Saliency(model).attribute(xb, target=tb, abs=True).amax(1)
        elif method == "smoothgrad":
            a = NoiseTunnel(Saliency(model)).attribute(
                xb, nt_type="smoothgrad", nt_samples=config.smoothgrad_samples,
                nt_samples_batch_size=max(1, min(config.smoothgrad_samples, bs // m)),
                stdevs=config.smoothgrad_stdev, target=tb, abs=True).amax(1)
        elif method == "ig":
            a = IntegratedGradients(model).attribute(
                xb, baselines=config.ig_baseline, target=tb, n_steps=config.ig_steps,
                method=config.ig_method, internal_batch_size=max(m, bs)).sum(1)
        elif method == "gradcam":
            cam = LayerGradCam(model, resolve_layer(model, layer)).attribute(
                xb, target=tb, relu_attributions=True)  # (m, 1, h', w')
            a = LayerAttribution.interpolate(cam, (h, w), interpolate_mode=config.gradcam_interpolation)[:, 0]
        elif method == "guided":
            with warnings.catch_warnings():  # captum announces its (temporary) ReLU hooks
                warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
                a = GuidedBackprop(model).attribute(xb, target=tb).abs().amax(1)
        elif method == "occlusion":
            window, stride = config.occlusion_shape(h, w)
            with torch.no_grad():
                a = Occlusion(model).attribute(
                    xb, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                    baselines=config.occlusion_value, target=tb,
                    perturbations_per_eval=max(1, bs // m)).mean(1)
        else:
            raise ConfigError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
        out.append(a.detach())
    return torch.cat(out)  # (N, H, W)


def _ig_with_delta(model, x, targets, config):
    """IG maps (N, H, W) and captum's convergence delta (N,), in image chunks."""
    from captum.attr import IntegratedGradients
    maps, deltas = [], []
    per = min(len(x), config.batch_size)
    for sl in _chunks(len(x), per):
        a, d = IntegratedGradients(model).attribute(
            x[sl].detach().requires_grad_(), baselines=config.ig_baseline, target=targets[sl], n_steps=config.ig_steps,
            method=config.ig_method, internal_batch_size=max(len(x[sl]), config.batch_size),
            return_convergence_delta=True)
        maps.append(a.detach().sum(1))
        deltas.append(d.detach())
    return torch.cat(maps), torch.cat(deltas)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """A fixed seed for captum's random draws without disturbing the caller's generators."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def prepare_inputs(model: nn.Module, images: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """[0, 1] inputs on the model's device in its dtype, and targets (N,) int64 on that device
    (one int for every image, or one per image)."""
    device = model_device(model)
    x = as_input(images, device).to(_model_dtype(model))
    if len(x) == 0:
        raise ConfigError("no images to explain")
    t = torch.as_tensor(targets, dtype=torch.long)
    t = t.expand(len(x)).clone() if t.ndim == 0 else t.flatten()
    if len(t) != len(x):
        raise ConfigError(f"{len(x)} images but {len(t)} targets")
    return x, t.to(device)


def saliency(model: nn.Module, images: torch.Tensor, target, *, methods: str | Sequence[str] = METHODS,
             config: SaliencyConfig = SaliencyConfig(), layer: nn.Module | str | None = None,
             progress: Callable[[str], None] | None = None,
             probs: torch.Tensor | None = None) -> SaliencyResult:
    """Maps of every method for images (N, C, H, W) uint8 or [0, 1] and target (an int, or (N,)
    classes). layer: Grad-CAM's layer, needed only for a model without `cam_layer`.
    progress: called with each method's name when it is done. probs: the images' class
    probabilities (N, K) if you have them (else one forward pass computes them)."""
    methods = parse_methods(methods)
    x, t = prepare_inputs(model, images, target)
    if "gradcam" in methods:
        resolve_layer(model, layer)  # fail before the slow methods, not after
    maps, seconds = {}, {}
    delta = gap = None
    # The copy costs about one forward pass of a small batch: worth it for the many passes of
    # SmoothGrad, IG and Occlusion, not for one gradient.
    many_passes = any(m in MANY_PASSES for m in methods)
    with working_copy(model, config.channels_last and many_passes) as work, seeded(config.seed, x.device):
        if probs is None:
            probs = _probabilities(work, x, config.batch_size)  # (N, K)
        elif tuple(probs.shape[:1]) != (len(x),):
            raise ConfigError(f"probs of shape {tuple(probs.shape)} for {len(x)} images")
        probs = probs.float().cpu()
        if int(t.min()) < 0 or int(t.max()) >= probs.shape[1]:
            raise ConfigError(f"targets must be classes 0..{probs.shape[1] - 1}")
        cam = same_layer(model, work, layer) if "gradcam" in methods else None
        for method in methods:
            start = time.perf_counter()
            if method == "ig":
                a, delta = _ig_with_delta(work, x, t, config)
                # captum's delta = Σ attribution − (f(x) − f(baseline)): the gap follows.
                gap = (a.double().sum((1, 2)) - delta.double()).float().cpu()
                delta = delta.float().cpu()
            else:
                a = explain(work, x, t, method, config, cam)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            seconds[method] = time.perf_counter() - start
            maps[method] = a.float().cpu()
            if progress is not None:
                progress(method)
    return SaliencyResult(maps=maps, targets=t.cpu(), probs=probs, config=config,
                          ig_delta=delta, ig_gap=gap, seconds=seconds)


def explainer(method: str, config: SaliencyConfig = SaliencyConfig(), layer: str | None = None) -> Explainer:
    """A callable(model, x, targets) → (N, H, W) for one method, usable on a copy of the model
    (Grad-CAM's layer by dotted name, looked up in whichever model it is given)."""
    parse_methods([method])

    def run(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if method == "ig":
            return _ig_with_delta(model, x, targets, config)[0]
        return explain(model, x, targets, method, config, layer)
    run.__name__ = method
    return run
