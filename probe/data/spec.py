"""DatasetSpec: everything a model or a figure needs to know about a dataset, and the registry."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from probe.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    classes: tuple[str, ...]  # slugs: what --class takes and files are named after
    display_names: tuple[str, ...]  # for figure labels
    channels: int
    height: int  # stored image size
    width: int
    mean: tuple[float, ...]  # per channel, of [0, 1] pixels of the training split
    std: tuple[float, ...]
    split_sizes: dict[str, int] = field(default_factory=dict)  # default train/val/test sizes
    codes: tuple[str, ...] = ()  # alternative names for the classes (SFDDD's c0..c9)
    crop: tuple[int, int] | None = None  # network input (H, W) when it differs from stored size

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the network sees."""
        h, w = self.crop or (self.height, self.width)
        return (self.channels, h, w)

    def class_index(self, name: str | int) -> int:
        """A slug, a code (c2), a display name or an index ("2" or 2) → the class index."""
        if isinstance(name, int) or (isinstance(name, str) and name.strip().isdigit()):
            i = int(name)
            if 0 <= i < self.num_classes:
                return i
        else:
            key = name.strip().lower()
            for table in (self.classes, self.codes, self.display_names):
                lowered = [t.lower() for t in table]
                if key in lowered:
                    return lowered.index(key)
        raise ConfigError(
            f"unknown class {name!r} for {self.name}: use one of {', '.join(self.classes)}"
            + (f", a code ({self.codes[0]}..{self.codes[-1]})" if self.codes else "")
            + f" or an index 0..{self.num_classes - 1}"
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetSpec":
        d = dict(d)
        for key in ("classes", "display_names", "mean", "std", "codes"):
            if key in d:
                d[key] = tuple(d[key])
        if d.get("crop") is not None:
            d["crop"] = tuple(d["crop"])
        return cls(**d)


MNIST = DatasetSpec(
    name="mnist",
    classes=tuple(str(i) for i in range(10)),
    display_names=tuple(str(i) for i in range(10)),
    channels=1, height=28, width=28,
    mean=(0.1307,), std=(0.3081,),
    split_sizes={"train": 55_000, "val": 5_000, "test": 10_000},
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    classes=("airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"),
    display_names=("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"),
    channels=3, height=32, width=32,
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    split_sizes={"train": 45_000, "val": 5_000, "test": 10_000},
)

SFDDD = DatasetSpec(
    name="sfddd",
    classes=("safe_driving", "texting_right", "phone_right", "texting_left", "phone_left",
             "radio", "drinking", "reaching_behind", "hair_makeup", "passenger"),
    display_names=("safe driving", "texting (right)", "phone (right)", "texting (left)",
                   "phone (left)", "radio", "drinking", "reaching behind", "hair & makeup",
                   "passenger"),
    codes=tuple(f"c{i}" for i in range(10)),
    channels=3, height=48, width=64,  # every image resized once to 64×48 (W×H)
    crop=(32, 32),  # random 32×32 crops to train, the centre crop to evaluate
    # Approximate statistics of the 64×48 training images; recomputed by `probe data check`.
    mean=(0.3141, 0.3803, 0.3729), std=(0.2814, 0.3229, 0.3255),
    # Labelled images are split by driver; sizes depend on the drivers drawn.
    split_sizes={"val_drivers": 4, "test_drivers": 4, "random_val": 2_000},
)

SPECS: dict[str, DatasetSpec] = {s.name: s for s in (MNIST, CIFAR10, SFDDD)}


def get_spec(name: str) -> DatasetSpec:
    try:
        return SPECS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}: use one of {', '.join(SPECS)}") from None
