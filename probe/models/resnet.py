"""The ResNet family of He et al. (2015, 2016): one general network, variation passed in.

`ResNetConfig` says what to build; `ResNet(config)` builds it. The block layout (basic or
bottleneck), the ordering (post- or pre-activation), the shortcut (A, B or none) and the stem
(cifar or imagenet) are looked up once in small tables and handed to the blocks; nothing else
branches on them. Presets are small named functions returning a config (timm style).

How filters map:
    stem_filters   output channels of the stem conv (default: filters[0]).
    filters[i]     OUTPUT channels of every block in stage i. A bottleneck block of width K
                   runs 1×1 (K/4), 3×3 (K/4), 1×1 (K), so a CIFAR bottleneck net uses
                   filters=(64, 128, 256) with stem_filters=16 (He et al. 2016, ResNet-164).
    filters with one more entry than stages: the first entry is the stem's, the rest the
                   stages' (the seed's `build(stages=(3, 4, 6), filters=(64, 128, 256, 512))`
                   is a 64-filter stem and stages of 128, 256, 512).
    width          multiplies every filter count (rounded, at least 1), stem included.
The config is normalized on creation (explicit stem_filters, one filter count per stage), so
`ResNetConfig.from_dict(dataclasses.asdict(cfg)) == cfg`. It is also validated on creation:
field types, positive sizes, and the parameter count (closed form, `num_parameters()`) at most
MAX_PARAMETERS, so an absurd config is refused before anything is allocated.

Where the shape changes:
    bottleneck_stride  "1x1" (default): the stride sits on the first 1×1 conv, as in He et al.'s
                   own code (Caffe ResNet-50, the Torch ResNet-164/1001 of the 2016 paper);
                   "3x3": on the 3×3 conv, torchvision's "ResNet v1.5". Configs saved before
                   this option existed (no key) built "3x3", and from_dict keeps that.
    shortcut "B"   post-activation: 1×1 conv (stride) + BN. Pre-activation: a bare 1×1 conv on
                   the pre-activated input (BN→ReLU of x), as in the 2016 paper's code; the
                   BN that follows the addition's consumer does the normalizing.

Every ReLU is its own `nn.ReLU` module, not in-place, used once per forward: captum's
GuidedBackprop and DeepLift only see module ReLUs (captum #156, #378, #578).
"""
from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from functools import partial
from typing import Callable

import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from probe.errors import ConfigError
from probe.models import fused
from probe.models.config import ResNetConfig, _layout

# ---- building blocks ------------------------------------------------------------------------

def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)  # BN follows


class ShortcutA(nn.Module):
    """Option A: subsample by the stride, append zero channels. No parameters."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        if out_ch < in_ch:
            raise ConfigError(f"shortcut A cannot shrink channels ({in_ch} → {out_ch}); use B")
        self.stride, self.pad = stride, out_ch - in_ch

    def forward(self, x):
        # Every s-th pixel by a 1×1 average pool rather than by slicing: the same numbers, but the
        # gradient keeps the input's memory layout. A slice's gradient is a zero tensor in NCHW,
        # and each elementwise op meeting it and a channels_last tensor ran 5-10× slower.
        if self.stride > 1:
            x = F.avg_pool2d(x, 1, self.stride)  # (N, C_in, ⌈H/s⌉, ⌈W/s⌉)
        return F.pad(x, (0, 0, 0, 0, 0, self.pad))  # (N, C_out, ⌈H/s⌉, ⌈W/s⌉)

    def extra_repr(self):
        return f"stride={self.stride}, pad_channels={self.pad}"


def _make_shortcut(kind: str, in_ch: int, out_ch: int, stride: int, norm,
                   preact: bool = False) -> nn.Module | None:
    if kind == "none":
        return None
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    if kind == "A":
        return ShortcutA(in_ch, out_ch, stride)
    if preact:  # He et al. 2016's code: a bare 1×1 conv on the already pre-activated input
        return nn.Sequential(OrderedDict(conv=_conv(in_ch, out_ch, 1, stride)))
    return nn.Sequential(OrderedDict(conv=_conv(in_ch, out_ch, 1, stride), bn=norm(out_ch)))


class PostActBlock(nn.Module):
    """He et al. 2015: (conv→BN→ReLU)…conv→BN, + shortcut, → ReLU.

    ReLUs are numbered in order of use: relu1..relu{k-1} inside the branch, relu{k} after the
    addition (after the last BN in the plain twin, which has no shortcut).
    """

    def __init__(self, layout, in_ch: int, shortcut: nn.Module | None, norm):
        super().__init__()
        self.n = len(layout)
        for i, (kernel, cout, stride) in enumerate(layout, 1):
            self.add_module(f"conv{i}", _conv(in_ch, cout, kernel, stride))
            self.add_module(f"bn{i}", norm(cout))
            self.add_module(f"relu{i}", nn.ReLU())
            in_ch = cout
        self.shortcut = shortcut  # None: the plain twin

    def last_bn(self) -> nn.BatchNorm2d:
        return getattr(self, f"bn{self.n}")

    def fusable(self) -> bool:
        """Every BN folded, every conv and ReLU plain (checked at each pass: modules may be swapped)."""
        return all(fused.plain_conv(getattr(self, f"conv{i}")) and fused.folded_bn(getattr(self, f"bn{i}"))
                   and fused.plain_relu(getattr(self, f"relu{i}")) for i in range(1, self.n + 1))

    def _fused_forward(self, x):  # conv→ReLU as one kernel, the last conv with the addition and ReLU
        out = x
        for i in range(1, self.n):
            out = fused.conv_relu(getattr(self, f"conv{i}"), out)
        last = getattr(self, f"conv{self.n}")
        if self.shortcut is None:
            return fused.conv_relu(last, out)
        return fused.conv_add(last, out, self.shortcut(x), relu=True)

    def forward(self, x):
        if self.fusable() and fused.usable(x, self.children()):  # folded, and nothing could tell
            return self._fused_forward(x)
        out = x
        for i in range(1, self.n + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.n:
                out = getattr(self, f"relu{i}")(out)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return getattr(self, f"relu{self.n}")(out)


class PreActBlock(nn.Module):
    """He et al. 2016: (BN→ReLU→conv)…, + shortcut; no activation after the addition.

    When the shortcut changes shape it takes the pre-activated input (BN→ReLU of x), as in the
    authors' code, so the projection sees normalized features; an identity takes x itself.
    """

    def __init__(self, layout, in_ch: int, shortcut: nn.Module | None, norm):
        super().__init__()
        self.n = len(layout)
        for i, (kernel, cout, stride) in enumerate(layout, 1):
            self.add_module(f"bn{i}", norm(in_ch))
            self.add_module(f"relu{i}", nn.ReLU())
            self.add_module(f"conv{i}", _conv(in_ch, cout, kernel, stride))
            in_ch = cout
        self.shortcut = shortcut
        self.shortcut_preact = shortcut is not None and not isinstance(shortcut, nn.Identity)

    def last_bn(self) -> nn.BatchNorm2d:
        return getattr(self, f"bn{self.n}")  # zeroed, the last conv sees zeros

    def fusable(self) -> bool:
        """The BN after each conv but the last folded, convs and ReLUs plain (fold_batchnorm_)."""
        return all(fused.plain_conv(getattr(self, f"conv{i}")) for i in range(1, self.n + 1)) \
            and all(fused.folded_bn(getattr(self, f"bn{i}")) and fused.plain_relu(getattr(self, f"relu{i}"))
                    for i in range(2, self.n + 1))

    def _fused_forward(self, x):  # conv{i} with the ReLU after the folded bn{i+1}; the last with the addition
        out = self.relu1(self.bn1(x))
        shortcut_in = out if self.shortcut_preact else x
        for i in range(1, self.n):
            out = fused.conv_relu(getattr(self, f"conv{i}"), out)
        last = getattr(self, f"conv{self.n}")
        if self.shortcut is None:
            return last(out)
        return fused.conv_add(last, out, self.shortcut(shortcut_in), relu=False)

    def forward(self, x):
        if self.fusable() and fused.usable(x, self.children()):  # folded, and nothing could tell
            return self._fused_forward(x)
        out, shortcut_in = x, x
        for i in range(1, self.n + 1):
            out = getattr(self, f"relu{i}")(getattr(self, f"bn{i}")(out))
            if i == 1 and self.shortcut_preact:
                shortcut_in = out
            out = getattr(self, f"conv{i}")(out)
        if self.shortcut is not None:
            out = out + self.shortcut(shortcut_in)
        return out


def _fold(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
        setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(parent, bn_name, nn.Identity())


def _cifar_stem(in_ch: int, out_ch: int, norm, preact: bool) -> nn.Sequential:
    layers = [("conv", _conv(in_ch, out_ch, 3))]
    if not preact:  # pre-activation: the first block normalizes and activates
        layers += [("bn", norm(out_ch)), ("relu", nn.ReLU())]
    return nn.Sequential(OrderedDict(layers))


def _imagenet_stem(in_ch: int, out_ch: int, norm, preact: bool) -> nn.Sequential:
    # BN→ReLU before the pool in both orderings (as in the 2016 paper's ImageNet nets).
    return nn.Sequential(OrderedDict(
        conv=_conv(in_ch, out_ch, 7, 2), bn=norm(out_ch), relu=nn.ReLU(),
        pool=nn.MaxPool2d(3, 2, padding=1)))


_STEMS = {"cifar": _cifar_stem, "imagenet": _imagenet_stem}


class ResNet(nn.Module):
    """stem → stages.stage1..stageK → final (BN→ReLU if preact) → pool → fc.

    Captum addresses layers by name: `net.stages.stage3[-1]` is the last block (Grad-CAM),
    `net.stages.stage1[0].relu1` a ReLU.
    """

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = cfg = config
        norm = partial(nn.BatchNorm2d, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        block_cls = PreActBlock if cfg.preact else PostActBlock
        layout = _layout(cfg)

        cin = cfg.channels(cfg.stem_filters)
        self.stem = _STEMS[cfg.stem](cfg.in_channels, cin, norm, cfg.preact)
        stages = OrderedDict()
        for s, (n_blocks, filters) in enumerate(zip(cfg.stages, cfg.filters), 1):
            cout, blocks = cfg.channels(filters), []
            for b in range(n_blocks):
                stride = 2 if s > 1 and b == 0 else 1
                shortcut = _make_shortcut(cfg.shortcut, cin, cout, stride, norm, cfg.preact)
                blocks.append(block_cls(layout(cout, stride), cin, shortcut, norm))
                cin = cout
            stages[f"stage{s}"] = nn.Sequential(*blocks)
        self.stages = nn.Sequential(stages)
        self.final = nn.Sequential(OrderedDict(bn=norm(cin), relu=nn.ReLU())) if cfg.preact \
            else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, cfg.num_classes)
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # fc keeps PyTorch's default init unless zero_init_fc.
        if self.config.zero_init_residual:  # each block starts as its shortcut (Goyal et al.)
            for block in self.blocks():
                nn.init.zeros_(block.last_bn().weight)
        if self.config.zero_init_fc:  # logits 0: the loss starts at exactly ln(num_classes)
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def blocks(self) -> list[nn.Module]:
        return [b for stage in self.stages for b in stage]

    def fold_batchnorm_(self) -> "ResNet":
        """Evaluation only, in place: every BatchNorm that directly follows a conv folded into
        that conv's weight and bias (w·γ/σ, (b − μ)·γ/σ + β, exact up to rounding) and replaced
        by an Identity. Post-activation: conv{i}→bn{i}, the stem and shortcut B; pre-activation:
        conv{i}→bn{i+1} inside a block (bn1 and `final` see a sum, and stay). Module names and
        ReLUs are kept, so Grad-CAM's layer and Guided Backprop's hooks find theirs. A folded
        block or stem runs its inference passes with fused kernels (probe.models.fused)."""
        self.eval()
        _fold(self.stem, "conv", "bn")
        for block in self.blocks():
            pairs = [(i, i) for i in range(1, block.n + 1)] if isinstance(block, PostActBlock) \
                else [(i, i + 1) for i in range(1, block.n)]
            for c, b in pairs:
                _fold(block, f"conv{c}", f"bn{b}")
            if isinstance(block.shortcut, nn.Sequential):
                _fold(block.shortcut, "conv", "bn")
        return self

    @property
    def cam_layer(self) -> nn.Module:
        """The layer Grad-CAM should use: the last feature map, after its final activation
        (the last block's output post-activation; `final`'s BN→ReLU pre-activation), for any
        number of stages."""
        return self.final if self.config.preact else self.stages[-1]

    def _stem_fusable(self) -> bool:
        stem = self.stem  # conv, folded BN, ReLU (and the ImageNet stem's pool), nothing else
        return type(stem) is nn.Sequential and list(stem._modules) in (["conv", "bn", "relu"], ["conv", "bn", "relu", "pool"]) \
            and fused.plain_conv(stem.conv) and fused.folded_bn(stem.bn) and fused.plain_relu(stem.relu)

    def _stem(self, x):
        stem = self.stem
        if not (self._stem_fusable() and fused.usable(x, (stem, *stem.children()))):
            return stem(x)
        x = fused.conv_relu(stem.conv, x)
        return stem.pool(x) if hasattr(stem, "pool") else x

    def forward_features(self, x):  # (N, C_in, H, W) → (N, C_last, h, w), before pooling
        with fused.finite_pass(x, self):
            x = self._stem(x)  # (N, C0, H, W); /4 with the imagenet stem
            x = self.stages(x)  # (N, C_last, H/2^(K-1), W/2^(K-1))
            return self.final(x)

    def forward(self, x):  # (N, C_in, H, W)
        x = self.flatten(self.pool(self.forward_features(x)))  # (N, C_last)
        return self.fc(x)  # (N, num_classes)

    def forward_from(self, x, block: int):
        """The logits from the input of the `block`-th block (0: the stem's output) on: the rest
        of `forward`, for a pass that computed the layers before another way (probe.models.windowed)."""
        with fused.finite_pass(x, self):
            for b in self.blocks()[block:]:
                x = b(x)
            return self.fc(self.flatten(self.pool(self.final(x))))


def build(**fields) -> ResNet:
    """A ResNet from config fields, e.g. build(stages=(3, 4, 6), filters=(64, 128, 256, 512))."""
    try:
        return ResNet(ResNetConfig(**fields))
    except TypeError as e:  # an unknown keyword
        raise ConfigError(f"bad ResNet option: {e}") from None


# ---- presets --------------------------------------------------------------------------------

def _cifar(n: int, **kw) -> ResNetConfig:
    """6n+2 layers: three stages of n basic blocks, 16/32/64 filters."""
    return ResNetConfig(**{"stages": (n, n, n), "filters": (16, 32, 64), **kw})


def _cifar_bottleneck(n: int, **kw) -> ResNetConfig:
    """9n+2 layers: three stages of n bottlenecks, 64/128/256 out (16/32/64 inner), B shortcuts
    (the 2016 paper's ResNet-164 and -1001 projected where the shape changes)."""
    return ResNetConfig(**{"stages": (n, n, n), "filters": (64, 128, 256), "stem_filters": 16,
                           "block": "bottleneck", "shortcut": "B", **kw})


_DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}  # depth 6n+2 → n
# The paper's networks by name (timm-style presets), each a config factory taking overrides.
_PRESETS: dict[str, Callable[..., ResNetConfig]] = {
    **{f"resnet{d}": partial(_cifar, n) for d, n in _DEPTHS.items()},
    **{f"preact_resnet{d}": partial(_cifar, n, preact=True) for d, n in _DEPTHS.items()},
    **{f"plain{d}": partial(_cifar, n, shortcut="none") for d, n in _DEPTHS.items() if d < 1202},
    "resnet164_bottleneck": partial(_cifar_bottleneck, 18),
    "preact_resnet164_bottleneck": partial(_cifar_bottleneck, 18, preact=True),
    "preact_resnet1001_bottleneck": partial(_cifar_bottleneck, 111, preact=True),
}


# Any depth by name: [preact_](resnet|plain)<depth>[_bottleneck], depth 6n+2 (9n+2 bottleneck).
_NAME = re.compile(r"^(preact_)?(resnet|plain)(\d+)(_bottleneck)?$")
NAME_PATTERN = "[preact_](resnet|plain)<depth>[_bottleneck]"


def list_presets() -> list[str]:
    return list(_PRESETS)


def _normalize_name(arch: str) -> str:
    name = re.sub(r"-(?=\d)", "", arch.strip().lower())  # "ResNet-20" → "resnet20"
    return name.replace("-", "_")


def get_config(arch: str, **overrides) -> ResNetConfig:
    """The config of a preset or a parsed name, with fields overridden."""
    name = _normalize_name(arch)
    if name in _PRESETS:
        base = _PRESETS[name]()
    else:
        base = _parse(name, arch)
    try:
        return dataclasses.replace(base, **overrides)
    except TypeError as e:
        raise ConfigError(f"bad ResNet option for {arch!r}: {e}") from None


def _parse(name: str, arch: str) -> ResNetConfig:
    m = _NAME.match(name)
    if not m:
        raise ConfigError(f"unknown architecture {arch!r}: use one of "
                          f"{', '.join(list_presets())} or {NAME_PATTERN}")
    if len(m[3]) > 6:  # int() of a huge digit string is slow or refused; such a net is absurd
        raise ConfigError(f"{arch[:40]!r}: depth {m[3][:12]}... is absurd (at most 6 digits)")
    preact, kind, depth, bottleneck = bool(m[1]), m[2], int(m[3]), bool(m[4])
    per_block, make = (9, _cifar_bottleneck) if bottleneck else (6, _cifar)
    n, rest = divmod(depth - 2, per_block)
    if rest or n < 1:
        raise ConfigError(f"{arch!r}: depth must be {per_block}n+2 with n ≥ 1 "
                          f"(e.g. {per_block + 2}, {2 * per_block + 2}), not {depth}")
    extra = {"preact": preact} | ({"shortcut": "none"} if kind == "plain" else {})
    return make(n, **extra)


def build_model(arch: str, *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                **overrides) -> ResNet:
    """A ResNet by preset name ("resnet20", "preact_resnet56", "plain20", "resnet14", ...)."""
    return ResNet(get_config(arch, num_classes=num_classes, in_channels=in_channels,
                             width=width, **overrides))
