"""The architecture of a network of the family, as meta.json describes it: ResNetConfig, with its
checks, depth and parameter count. No torch: `probe models list` reads every model's
description without loading PyTorch (probe.models.resnet builds the network from it)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Callable

from probe.data.spec import MAX_CLASSES
from probe.errors import ConfigError
from probe.text import shown

BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("A", "B", "none")
STEMS = ("cifar", "imagenet")
BOTTLENECK_STRIDES = ("1x1", "3x3")
# What a network of this family can sensibly be (a config also comes from a meta.json, which may
# be hostile): beyond these a config is a typo or an attack, and building it would take the memory
# or the time of the machine. resnet1202 has 19M parameters and 1,202 layers; 500M fp32 parameters
# are 2 GB, and a resume file holds them twice (probe.models.folder.MAX_WEIGHTS_BYTES).
MAX_PARAMETERS = 500_000_000
MAX_DEPTH = 10_000  # weighted layers
MAX_FILTERS = 65_536  # channels of a stage, of the stem, of the input
WIDTHS = (1 / 256, 64.0)  # the width multiplier's range
_MAX_STAGES = 64


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(name: str, v, most: int = MAX_FILTERS) -> int:
    if not _is_int(v) or not 1 <= v <= most:
        raise ConfigError(f"ResNet config field {name!r}: expected a positive integer "
                          f"(at most {most:,}), got {shown(v)}")
    return v


def _int_tuple(name: str, v, most: int = MAX_FILTERS) -> tuple[int, ...]:
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
        raise ConfigError(f"ResNet config field {name!r}: expected a list of positive integers, "
                          f"got {shown(v)}")
    if not 1 <= len(v) <= _MAX_STAGES + 1:
        raise ConfigError(f"ResNet config field {name!r}: expected 1..{_MAX_STAGES} entries, "
                          f"got {len(v)}")
    return tuple(_positive_int(f"{name}[{i}]", x, most) for i, x in enumerate(v))


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
    zero_init_fc: bool = False  # zero the linear layer: every class starts at 1/num_classes
    bottleneck_stride: str = "1x1"  # "1x1" (the paper's code) | "3x3" (torchvision v1.5)

    def __post_init__(self):
        set_ = partial(object.__setattr__, self)  # frozen: normalize once, here
        stages, filters = _int_tuple("stages", self.stages, MAX_DEPTH), _int_tuple("filters", self.filters)
        if len(stages) > _MAX_STAGES:
            raise ConfigError(f"ResNet config field 'stages': at most {_MAX_STAGES} stages, "
                              f"got {len(stages)}")
        if self.stem_filters is not None:
            _positive_int("stem_filters", self.stem_filters)
        if len(filters) == len(stages) + 1:
            if self.stem_filters is not None and self.stem_filters != filters[0]:
                raise ConfigError(f"filters {filters} name a stem of {filters[0]} "
                                  f"but stem_filters is {self.stem_filters}")
            set_("stem_filters", filters[0])
            filters = filters[1:]
        if not stages or len(filters) != len(stages):
            raise ConfigError(f"need one filter count per stage (or one more for the stem): "
                              f"stages {stages}, filters {filters}")
        set_("stages", stages)
        set_("filters", filters)
        set_("stem_filters", int(self.stem_filters if self.stem_filters is not None
                                 else filters[0]))
        for name, allowed in (("block", BLOCKS), ("shortcut", SHORTCUTS), ("stem", STEMS),
                              ("bottleneck_stride", BOTTLENECK_STRIDES)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                raise ConfigError(f"unknown {name} {shown(value)}: use one of {', '.join(allowed)}")
        _positive_int("in_channels", self.in_channels)
        _positive_int("num_classes", self.num_classes, MAX_CLASSES)
        for name, lo, hi, said in (("width", *WIDTHS, "1/256..64"), ("bn_eps", 0, 1, "(0, 1]"),
                                   ("bn_momentum", 0, 1, "(0, 1]")):
            v = getattr(self, name)  # lo itself is allowed where it is positive (a width of 1/256)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (lo < v <= hi or 0 < lo == v):
                raise ConfigError(f"ResNet config field {name!r}: expected a number in {said}, got {shown(v)}")
        for name in ("preact", "zero_init_residual", "zero_init_fc"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"ResNet config field {name!r}: expected true or false, "
                                  f"got {shown(getattr(self, name))}")
        if self.depth > MAX_DEPTH:
            raise ConfigError(f"a ResNet of depth {self.depth:,} is beyond any sensible network (at most "
                              f"{MAX_DEPTH:,} layers; resnet1202 has 1,202): check stages {shown(stages)}")
        if self.zero_init_residual and self.shortcut == "none":
            raise ConfigError("zero_init_residual would silence the plain net (no shortcuts)")
        n = self.num_parameters()  # also refuses an A shortcut that would shrink channels
        if n > MAX_PARAMETERS:
            raise ConfigError(f"this ResNet would have {n:,} parameters (more than "
                              f"{MAX_PARAMETERS:,}): check stages {stages}, filters {filters}, "
                              f"width {self.width:g}, num_classes {self.num_classes}")

    @property
    def depth(self) -> int:
        """Weighted layers: the stem conv, every block conv, the linear layer."""
        return len(_LAYOUTS[self.block](1, 1)) * sum(self.stages) + 2

    def channels(self, filters: int) -> int:
        return max(1, int(round(filters * self.width)))

    def num_parameters(self) -> int:
        """Parameters of ResNet(self), in closed form (nothing is built): mirrors ResNet.__init__."""
        layout = _layout(self)
        post = not self.preact

        def block(cin: int, cout: int, stride: int) -> int:
            total, ci = 0, cin
            for kernel, co, _ in layout(cout, stride):
                total += kernel * kernel * ci * co + 2 * (co if post else ci)  # conv + its BN
                ci = co
            if self.shortcut == "A" and cout < cin:
                raise ConfigError(f"shortcut A cannot shrink channels ({cin} → {cout}); use B")
            if self.shortcut == "B" and (cin != cout or stride != 1):
                total += cin * cout + (2 * cout if post else 0)
            return total

        cin = self.channels(self.stem_filters)
        kernel = 7 if self.stem == "imagenet" else 3
        total = kernel * kernel * self.in_channels * cin
        total += 2 * cin if (post or self.stem == "imagenet") else 0
        for s, (n_blocks, filters) in enumerate(zip(self.stages, self.filters), 1):
            cout = self.channels(filters)
            total += block(cin, cout, 2 if s > 1 else 1) + (n_blocks - 1) * block(cout, cout, 1)
            cin = cout
        total += 2 * cin if self.preact else 0  # the final BN
        return total + cin * self.num_classes + self.num_classes

    def num_macs(self, input_shape: tuple[int, int, int]) -> int:
        """Multiply-adds of one image's forward pass through the convs and the fc layer, in closed
        form (nothing is built): what probe.models.zoo.count_macs counts on ResNet(self) with an
        input of `input_shape` (C, H, W). Every strided step (conv, the stem's pool) maps a side
        of n to (n - 1) // stride + 1, as a k×k conv padded by k // 2 does."""
        layout = _layout(self)
        h, w = input_shape[1:]

        def conv(kernel: int, cin: int, cout: int, stride: int) -> int:
            nonlocal h, w
            h, w = (h - 1) // stride + 1, (w - 1) // stride + 1
            return kernel * kernel * cin * cout * h * w

        def block(cin: int, cout: int, stride: int) -> int:
            total, ci = 0, cin
            for kernel, co, s in layout(cout, stride):
                total += conv(kernel, ci, co, s)
                ci = co
            if self.shortcut == "B" and (cin != cout or stride != 1):
                total += cin * cout * h * w  # its 1×1 conv, at the block's output size
            return total

        cin = self.channels(self.stem_filters)
        if self.stem == "imagenet":
            total = conv(7, self.in_channels, cin, 2)
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # its 3×3 max pool, stride 2: no MACs
        else:
            total = conv(3, self.in_channels, cin, 1)
        for s, (n_blocks, filters) in enumerate(zip(self.stages, self.filters), 1):
            cout = self.channels(filters)
            total += block(cin, cout, 2 if s > 1 else 1) + sum(block(cout, cout, 1) for _ in range(n_blocks - 1))
            cin = cout
        return total + cin * self.num_classes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ResNetConfig":
        """A config from its to_dict() (meta.json); every field checked, errors name the field."""
        if not isinstance(d, dict):
            raise ConfigError(f"ResNet config: expected a mapping of fields, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown ResNet config keys: {', '.join(sorted(map(str, unknown)))}")
        # Saved before the option existed: those bottlenecks had their stride on the 3×3.
        d = {"bottleneck_stride": "3x3", **d}
        return cls(**d)


# A layout is the branch's convs as (kernel, out_channels, stride).
def _basic(out_ch: int, stride: int) -> list[tuple[int, int, int]]:
    return [(3, out_ch, stride), (3, out_ch, 1)]


def _bottleneck(out_ch: int, stride: int, stride_on: str = "1x1") -> list[tuple[int, int, int]]:
    mid = max(1, out_ch // 4)
    if stride_on == "1x1":
        return [(1, mid, stride), (3, mid, 1), (1, out_ch, 1)]
    return [(1, mid, 1), (3, mid, stride), (1, out_ch, 1)]


_LAYOUTS = {"basic": _basic, "bottleneck": _bottleneck}


def _layout(cfg: "ResNetConfig") -> Callable[[int, int], list[tuple[int, int, int]]]:
    if cfg.block == "bottleneck":
        return partial(_bottleneck, stride_on=cfg.bottleneck_stride)
    return _LAYOUTS[cfg.block]
