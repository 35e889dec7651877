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
`ResNetConfig.from_dict(dataclasses.asdict(cfg)) == cfg`.

Every ReLU is its own `nn.ReLU` module, not in-place, used once per forward: captum's
GuidedBackprop and DeepLift only see module ReLUs (captum #156, #378, #578).
"""
from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch.nn.functional as F
from torch import nn

from probe.errors import ConfigError

BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("A", "B", "none")
STEMS = ("cifar", "imagenet")


@dataclass(frozen=True)
class ResNetConfig:
    stages: tuple[int, ...] = (3, 3, 3)  # blocks per stage; stage 1 stride 1, later stride 2
    filters: tuple[int, ...] = (16, 32, 64)  # block output channels per stage (see module doc)
    stem_filters: int | None = None  # None: filters[0]
    block: str = "basic"  # "basic" | "bottleneck"
    preact: bool = False  # False: conv→BN→ReLU (2015); True: BN→ReLU→conv (2016)
    shortcut: str = "A"  # "A" zero-pad | "B" 1×1 projection | "none" the plain twin
    width: float = 1.0
    in_channels: int = 3
    num_classes: int = 10
    stem: str = "cifar"  # "cifar" 3×3 s1 | "imagenet" 7×7 s2 + 3×3 s2 max-pool
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    zero_init_residual: bool = False  # zero the last BN gamma of each residual branch

    def __post_init__(self):
        set_ = partial(object.__setattr__, self)  # frozen: normalize once, here
        stages, filters = tuple(int(s) for s in self.stages), tuple(int(f) for f in self.filters)
        if len(filters) == len(stages) + 1:
            if self.stem_filters is not None and self.stem_filters != filters[0]:
                raise ConfigError(f"filters {filters} name a stem of {filters[0]} "
                                  f"but stem_filters is {self.stem_filters}")
            set_("stem_filters", filters[0])
            filters = filters[1:]
        if not stages or len(filters) != len(stages):
            raise ConfigError(f"need one filter count per stage (or one more for the stem): "
                              f"stages {stages}, filters {filters}")
        if min(stages) < 1 or min(filters) < 1:
            raise ConfigError(f"stages and filters must be positive: {stages}, {filters}")
        set_("stages", stages)
        set_("filters", filters)
        set_("stem_filters", int(self.stem_filters if self.stem_filters is not None
                                 else filters[0]))
        for name, allowed in (("block", BLOCKS), ("shortcut", SHORTCUTS), ("stem", STEMS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}: "
                                  f"use one of {', '.join(allowed)}")
        if self.width <= 0 or self.in_channels < 1 or self.num_classes < 1:
            raise ConfigError("width, in_channels and num_classes must be positive")
        if self.zero_init_residual and self.shortcut == "none":
            raise ConfigError("zero_init_residual would silence the plain net (no shortcuts)")

    @property
    def depth(self) -> int:
        """Weighted layers: the stem conv, every block conv, the linear layer."""
        return len(_LAYOUTS[self.block](1, 1)) * sum(self.stages) + 2

    def channels(self, filters: int) -> int:
        return max(1, int(round(filters * self.width)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ResNetConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown ResNet config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


# ---- building blocks ------------------------------------------------------------------------

def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)  # BN follows


# A layout is the branch's convs as (kernel, out_channels, stride).
def _basic(out_ch: int, stride: int) -> list[tuple[int, int, int]]:
    return [(3, out_ch, stride), (3, out_ch, 1)]


def _bottleneck(out_ch: int, stride: int) -> list[tuple[int, int, int]]:
    mid = max(1, out_ch // 4)
    return [(1, mid, 1), (3, mid, stride), (1, out_ch, 1)]


_LAYOUTS = {"basic": _basic, "bottleneck": _bottleneck}


class ShortcutA(nn.Module):
    """Option A: subsample by the stride, append zero channels. No parameters."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        if out_ch < in_ch:
            raise ConfigError(f"shortcut A cannot shrink channels ({in_ch} → {out_ch}); use B")
        self.stride, self.pad = stride, out_ch - in_ch

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]  # (N, C_in, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, 0, self.pad))  # (N, C_out, H/s, W/s)

    def extra_repr(self):
        return f"stride={self.stride}, pad_channels={self.pad}"


def _make_shortcut(kind: str, in_ch: int, out_ch: int, stride: int, norm) -> nn.Module | None:
    if kind == "none":
        return None
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    if kind == "A":
        return ShortcutA(in_ch, out_ch, stride)
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

    def forward(self, x):
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

    def forward(self, x):
        out, shortcut_in = x, x
        for i in range(1, self.n + 1):
            out = getattr(self, f"relu{i}")(getattr(self, f"bn{i}")(out))
            if i == 1 and self.shortcut_preact:
                shortcut_in = out
            out = getattr(self, f"conv{i}")(out)
        if self.shortcut is not None:
            out = out + self.shortcut(shortcut_in)
        return out


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
        layout = _LAYOUTS[cfg.block]

        cin = cfg.channels(cfg.stem_filters)
        self.stem = _STEMS[cfg.stem](cfg.in_channels, cin, norm, cfg.preact)
        stages = OrderedDict()
        for s, (n_blocks, filters) in enumerate(zip(cfg.stages, cfg.filters), 1):
            cout, blocks = cfg.channels(filters), []
            for b in range(n_blocks):
                stride = 2 if s > 1 and b == 0 else 1
                shortcut = _make_shortcut(cfg.shortcut, cin, cout, stride, norm)
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
        # fc keeps PyTorch's default init.
        if self.config.zero_init_residual:  # each block starts as its shortcut (Goyal et al.)
            for block in self.blocks():
                nn.init.zeros_(block.last_bn().weight)

    def blocks(self) -> list[nn.Module]:
        return [b for stage in self.stages for b in stage]

    @property
    def cam_layer(self) -> nn.Module:
        """The layer Grad-CAM should use: the last feature map, after its final activation
        (the last block's output post-activation; `final`'s BN→ReLU pre-activation), for any
        number of stages."""
        return self.final if self.config.preact else self.stages[-1]

    def forward_features(self, x):  # (N, C_in, H, W) → (N, C_last, h, w), before pooling
        x = self.stem(x)  # (N, C0, H, W); /4 with the imagenet stem
        x = self.stages(x)  # (N, C_last, H/2^(K-1), W/2^(K-1))
        return self.final(x)

    def forward(self, x):  # (N, C_in, H, W)
        x = self.flatten(self.pool(self.forward_features(x)))  # (N, C_last)
        return self.fc(x)  # (N, num_classes)


def build(**fields) -> ResNet:
    """A ResNet from config fields, e.g. build(stages=(3, 4, 6), filters=(64, 128, 256, 512))."""
    try:
        return ResNet(ResNetConfig(**fields))
    except TypeError as e:  # an unknown keyword
        raise ConfigError(f"bad ResNet option: {e}") from None


# ---- presets --------------------------------------------------------------------------------

_PRESETS: dict[str, Callable[..., ResNetConfig]] = {}


def _preset(fn):
    _PRESETS[fn.__name__] = fn
    return fn


def _cifar(n: int, **kw) -> ResNetConfig:
    """6n+2 layers: three stages of n basic blocks, 16/32/64 filters."""
    return ResNetConfig(**{"stages": (n, n, n), "filters": (16, 32, 64), **kw})


def _cifar_bottleneck(n: int, **kw) -> ResNetConfig:
    """9n+2 layers: three stages of n bottlenecks, 64/128/256 out (16/32/64 inner), B shortcuts
    (the 2016 paper's ResNet-164 and -1001 projected where the shape changes)."""
    return ResNetConfig(**{"stages": (n, n, n), "filters": (64, 128, 256), "stem_filters": 16,
                           "block": "bottleneck", "shortcut": "B", **kw})


@_preset
def resnet20(**kw): return _cifar(3, **kw)
@_preset
def resnet32(**kw): return _cifar(5, **kw)
@_preset
def resnet44(**kw): return _cifar(7, **kw)
@_preset
def resnet56(**kw): return _cifar(9, **kw)
@_preset
def resnet110(**kw): return _cifar(18, **kw)
@_preset
def resnet1202(**kw): return _cifar(200, **kw)
@_preset
def preact_resnet20(**kw): return _cifar(3, preact=True, **kw)
@_preset
def preact_resnet32(**kw): return _cifar(5, preact=True, **kw)
@_preset
def preact_resnet44(**kw): return _cifar(7, preact=True, **kw)
@_preset
def preact_resnet56(**kw): return _cifar(9, preact=True, **kw)
@_preset
def preact_resnet110(**kw): return _cifar(18, preact=True, **kw)
@_preset
def preact_resnet1202(**kw): return _cifar(200, preact=True, **kw)
@_preset
def plain20(**kw): return _cifar(3, shortcut="none", **kw)
@_preset
def plain32(**kw): return _cifar(5, shortcut="none", **kw)
@_preset
def plain44(**kw): return _cifar(7, shortcut="none", **kw)
@_preset
def plain56(**kw): return _cifar(9, shortcut="none", **kw)
@_preset
def plain110(**kw): return _cifar(18, shortcut="none", **kw)
@_preset
def resnet164_bottleneck(**kw): return _cifar_bottleneck(18, **kw)
@_preset
def preact_resnet164_bottleneck(**kw): return _cifar_bottleneck(18, preact=True, **kw)
@_preset
def preact_resnet1001_bottleneck(**kw): return _cifar_bottleneck(111, preact=True, **kw)


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
