"""DatasetSpec: everything a model or a figure needs to know about a dataset, and the registry."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import MISSING, asdict, dataclass, field, fields

from probe.errors import ConfigError
from probe.text import shown

# What a dataset of this project can sensibly be (a spec also comes from a meta.json, which may
# be hostile): images stay in memory, H×W×C bytes each, and every class is drawn and listed.
MAX_SIDE = 4096  # pixels a side (a 65,536² image is 16 GiB as float)
MAX_CHANNELS = 4  # grey, RGB, RGBA
MAX_CLASSES = 100_000
MAX_NAME = 1000  # characters in a class name or a dataset name
MAX_COUNT = 2 ** 31  # images in a split
MAX_STAT = 1e6  # |mean| and std of [0, 1] pixels are at most 1; far beyond is a typo
MIN_STD = 1e-6  # a smaller std makes float32 inputs overflow


@dataclass(frozen=True)
class ClassNames:
    """What drawing and printing need of a model's classes: slugs (what --class takes and files
    are named after), display names for labels, and short codes where a dataset has them."""
    slugs: tuple[str, ...]
    display: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()

    def __post_init__(self):
        _strs("classes", tuple(self.slugs))
        object.__setattr__(self, "slugs", tuple(self.slugs))
        object.__setattr__(self, "display", tuple(self.display) or self.slugs)
        object.__setattr__(self, "codes", tuple(self.codes))
        _strs("display_names", self.display, len(self.slugs))
        if self.codes:
            _strs("codes", self.codes, len(self.slugs))

    @classmethod
    def of(cls, classes) -> "ClassNames":
        """ClassNames from ClassNames, a DatasetSpec, a list of names or a number of classes."""
        if isinstance(classes, ClassNames):
            return classes
        if isinstance(classes, DatasetSpec):
            return cls(classes.classes, classes.display_names, classes.codes)
        if isinstance(classes, int) and not isinstance(classes, bool):
            return cls(tuple(str(k) for k in range(classes)))
        if isinstance(classes, (list, tuple)):
            return cls(tuple(str(c) for c in classes))
        raise ConfigError(f"classes: give a list of class names or their number, not {type(classes).__name__}")

    def __len__(self) -> int:
        return len(self.slugs)

    def labels(self, short: bool = False) -> list[str]:
        """Names for axes and legends: display names, or the short codes (c0..c9) where the
        dataset has them and space is tight."""
        return list(self.codes) if short and self.codes else list(self.display)

    def index(self, name: str | int, dataset: str = "") -> int:
        """A slug, a code (c2), a display name or an index ("2" or 2) → the class index.
        dataset: named in the error, when known."""
        if isinstance(name, int) or (isinstance(name, str) and name.strip().isdigit()):
            i = int(name)
            if 0 <= i < len(self):
                return i
        else:
            key = name.strip().lower()
            for table in (self.slugs, self.codes, self.display):
                lowered = [t.lower() for t in table]
                if key in lowered:
                    return lowered.index(key)
        raise ConfigError(
            f"unknown class {name!r}{f' for {dataset}' if dataset else ''}: use one of {', '.join(self.slugs)}"
            + (f", a code ({self.codes[0]}..{self.codes[-1]})" if self.codes else "")
            + f" or an index 0..{len(self) - 1}")


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

    def __post_init__(self):
        """Every field checked (a spec also comes from meta.json): ConfigError naming the field."""
        _str("name", self.name)
        _int("channels", self.channels, 1, MAX_CHANNELS)
        for name in ("height", "width"):
            _int(name, getattr(self, name), 1, MAX_SIDE)
        _strs("classes", self.classes)
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"dataset spec field 'classes': names repeat: {shown(list(self.classes), 80)}")
        _strs("display_names", self.display_names, len(self.classes))
        if self.codes:
            _strs("codes", self.codes, len(self.classes))
        for name, lo in (("mean", -MAX_STAT), ("std", MIN_STD)):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)) or len(v) != self.channels or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and lo <= x <= MAX_STAT for x in v):
                raise ConfigError(f"dataset spec field {name!r}: expected {self.channels} number(s) in "
                                  f"{lo:g}..{MAX_STAT:g}, one per channel, got {shown(v, 80)}")
        if not isinstance(self.split_sizes, dict) or not all(
                isinstance(k, str) and len(k) <= MAX_NAME and isinstance(v, int) and not isinstance(v, bool)
                and 0 <= v <= MAX_COUNT for k, v in self.split_sizes.items()) or len(self.split_sizes) > 100:
            raise ConfigError(f"dataset spec field 'split_sizes': expected names → counts "
                              f"0..{MAX_COUNT:,}, got {shown(self.split_sizes, 80)}")
        if self.crop is not None:
            if not isinstance(self.crop, (list, tuple)) or len(self.crop) != 2:
                raise ConfigError(f"dataset spec field 'crop': expected null or [height, width], "
                                  f"got {shown(self.crop, 80)}")
            _int("crop[0]", self.crop[0], 1, self.height)
            _int("crop[1]", self.crop[1], 1, self.width)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the network sees."""
        h, w = self.crop or (self.height, self.width)
        return (self.channels, h, w)

    @property
    def names(self) -> ClassNames:
        return ClassNames(self.classes, self.display_names, self.codes)

    def class_index(self, name: str | int) -> int:
        """A slug, a code (c2), a display name or an index ("2" or 2) → the class index."""
        return self.names.index(name, dataset=self.name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetSpec":
        """A spec from its to_dict() (meta.json); every field checked, errors name the field."""
        if not isinstance(d, dict):
            raise ConfigError(f"dataset spec: expected a mapping of fields, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown dataset spec keys: {', '.join(sorted(map(str, unknown)))}")
        required = {f.name for f in fields(cls) if f.default is f.default_factory is MISSING}
        missing = required - set(d)
        if missing:
            raise ConfigError(f"dataset spec: missing field(s) {', '.join(sorted(missing))}")
        d = dict(d)
        for key in ("classes", "display_names", "mean", "std", "codes", "crop"):
            if isinstance(d.get(key), list):  # JSON has lists; the spec keeps tuples (hashable)
                d[key] = tuple(d[key])
        return cls(**d)


def _str(name: str, v) -> None:
    if not isinstance(v, str) or not v or len(v) > MAX_NAME:
        raise ConfigError(f"dataset spec field {name!r}: expected a string of 1..{MAX_NAME} "
                          f"characters, got {shown(v, 80)}")


def _int(name: str, v, lo: int, hi: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError(f"dataset spec field {name!r}: expected an integer in {lo}..{hi}, "
                          f"got {shown(v, 80)}")


def _strs(name: str, v, n: int | None = None) -> None:
    """A list of strings of 1..MAX_NAME characters: exactly n of them, or 1..MAX_CLASSES."""
    if (not isinstance(v, (list, tuple)) or not 1 <= len(v) <= MAX_CLASSES or (n is not None and len(v) != n)
            or not all(isinstance(x, str) and 0 < len(x) <= MAX_NAME for x in v)):
        want = f"{n} non-empty strings" if n is not None else f"a list of 1..{MAX_CLASSES:,} non-empty strings"
        raise ConfigError(f"dataset spec field {name!r}: expected {want} (of at most {MAX_NAME} "
                          f"characters), got {shown(v, 80)}")


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

# Your own data: the spec (classes, size, channels, mean, std) is read from the files at training
# time and kept in the model's meta.json; these names have no fixed spec in SPECS.
OWN_DATA = ("folder", "idx")


def get_spec(name: str) -> DatasetSpec:
    try:
        return SPECS[name.lower()]
    except KeyError:
        if name.lower() in OWN_DATA:
            raise ConfigError(f"the {name} dataset has no fixed spec: it is read from the files "
                              "(load_splits gives it, and a trained model keeps it in meta.json)") from None
        raise ConfigError(f"unknown dataset {name!r}: use one of {', '.join(SPECS)}") from None


def is_own_data(dataset) -> bool:
    """True for a folder or idx dataset (a name or a DatasetSpec): its spec comes from its files."""
    name = dataset.name if isinstance(dataset, DatasetSpec) else str(dataset)
    return name.lower() in OWN_DATA


def parse_size(text: str | tuple | None) -> tuple[int, int] | None:
    """--size: "HxW" (height × width, e.g. 32x32 or 48×64) or one number for a square → (H, W)."""
    if text is None or isinstance(text, tuple):
        return text
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        h, w = (int(parts[0]),) * 2 if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        if len(parts) > 2 or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
            raise ValueError
    except ValueError:
        raise ConfigError(f"--size {shown(text)}: write height×width in pixels, e.g. 32x32 or 48x64 "
                          f"(each 1..{MAX_SIDE})") from None
    return h, w


def slugify(name: str, index: int) -> str:
    """A class name (a folder's, a line of a classes file) → what --class takes and files are
    named after: ASCII letters, digits and _, lower case ("Phone Right" → phone_right,
    "Café" → cafe); class<index> where nothing is left."""
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^0-9a-zA-Z]+", "_", ascii_).strip("_").lower() or f"class{index}"
