"""The model info of a model that probe did not train: what probe cannot read from the file.

A JSON object beside the model file (`mynet.json` beside `mynet.pt`), or `--model-info FILE`, or
`--model-info KEY=VALUE` options (each replacing that key of the file's), or `info=` of
`probe.load_model`:

    {"classes": ["zero", "one", ...],   # or their number; default: the dataset's
     "input": "1x28x28",                # C×H×W the network takes; default: the dataset's
     "mean": [0.1307], "std": [0.3081], # default none: the network takes [0, 1] pixels
     "cam_layer": "layer4",             # Grad-CAM's layer (a factory's network only)
     "dataset": "mnist",                # a probe dataset: its splits for the analyses that need data
     "factory": "pkg.module:fn", "factory_kwargs": {"num_classes": 10},  # for a state dict
     "name": "mynet"}                   # default: the file's name without its suffix
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from probe.data.spec import MAX_CHANNELS, MAX_CLASSES, MAX_NAME, MAX_SIDE
from probe.errors import ConfigError
from probe.io import parse_json, read_json
from probe.text import shown

KEYS = ("classes", "input", "mean", "std", "cam_layer", "dataset", "factory", "factory_kwargs", "name",
        "split_seed")
MAX_INFO_BYTES = 1_000_000  # a model info is a few hundred bytes
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class ModelInfo:
    """The checked model info; `source` says where it came from (for the model card)."""
    classes: tuple[str, ...] | None = None
    input: tuple[int, int, int] | None = None  # (C, H, W)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    cam_layer: str | None = None
    dataset: str | None = None
    factory: str | None = None
    factory_kwargs: dict = field(default_factory=dict)
    name: str | None = None
    split_seed: int = 0
    source: str = "none"

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}) or k == "source"}


def parse_shape(text, what: str = "input") -> tuple[int, int, int]:
    """"3x32x32", "3×32×32" or [3, 32, 32] → (C, H, W)."""
    try:
        parts = text if isinstance(text, (list, tuple)) else str(text).lower().replace("×", "x").split("x")
        if len(parts) != 3 or any(isinstance(p, (bool, float)) for p in parts):
            raise ValueError
        c, h, w = (int(p) for p in parts)
        if not (1 <= c <= MAX_CHANNELS and 1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
            raise ValueError
        return c, h, w
    except (TypeError, ValueError):
        raise ConfigError(f"{what} {shown(text)}: write channels×height×width, e.g. 3x32x32 (channels "
                          f"1..{MAX_CHANNELS}, height and width 1..{MAX_SIDE})") from None


def _numbers(value, key: str, where: str) -> tuple[float, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    try:
        out = tuple(float(v) for v in items if not isinstance(v, bool))
    except (TypeError, ValueError):
        out = ()
    if len(out) != len(items) or not 1 <= len(out) <= MAX_CHANNELS or not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{where}: {key} {shown(value)}: give a number per channel, e.g. [0.5, 0.5, 0.5]")
    return out


def _classes(value, where: str) -> tuple[str, ...]:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CLASSES:
        return tuple(str(k) for k in range(value))
    if (isinstance(value, (list, tuple)) and 1 <= len(value) <= MAX_CLASSES
            and all(isinstance(c, str) and c.strip() and len(c) <= MAX_NAME for c in value)):
        names = tuple(c.strip() for c in value)
        if len(set(names)) == len(names):
            return names
    raise ConfigError(f"{where}: classes {shown(value)}: give a list of distinct names (at most "
                      f"{MAX_CLASSES:,}, each of at most {MAX_NAME} characters), or their number")


def _text(value, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise ConfigError(f"{where}: {key} {shown(value)}: give a non-empty string (at most {MAX_NAME} characters)")
    return value.strip()


def parse_info(doc: dict, where: str) -> ModelInfo:
    """A model info from its JSON object; every key checked, an error names `where` and the key."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: a model info is a JSON object like {{\"classes\": [...], \"input\": \"3x32x32\"}}")
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {shown(', '.join(map(repr, unknown)), 80)}: use {', '.join(KEYS)}")
    v = {k: doc[k] for k in KEYS if doc.get(k) is not None}
    out = {"source": where}
    if "classes" in v:
        out["classes"] = _classes(v["classes"], where)
    if "input" in v:
        out["input"] = parse_shape(v["input"], f"{where}: input")
    for key in ("mean", "std"):
        if key in v:
            out[key] = _numbers(v[key], key, where)
    if ("mean" in out) != ("std" in out):
        raise ConfigError(f"{where}: give mean and std together (or neither: the network takes [0, 1] pixels)")
    if "std" in out and min(out["std"]) <= 0:
        raise ConfigError(f"{where}: std {list(out['std'])}: must be positive")
    for key in ("cam_layer", "dataset", "name", "factory"):
        if key in v:
            out[key] = _text(v[key], key, where)
    if "factory" in out and not FACTORY.match(out["factory"]):
        raise ConfigError(f"{where}: factory {shown(out['factory'])}: write module:function, e.g. torchvision.models:resnet18")
    if "factory_kwargs" in v:
        if not isinstance(v["factory_kwargs"], dict):
            raise ConfigError(f"{where}: factory_kwargs: give a JSON object, e.g. {{\"num_classes\": 10}}")
        out["factory_kwargs"] = dict(v["factory_kwargs"])
    if "split_seed" in v:
        seed = v["split_seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
            raise ConfigError(f"{where}: split_seed {shown(seed)}: give a whole number ≥ 0")
        out["split_seed"] = v["split_seed"]
    return ModelInfo(**out)


def read_info_file(path: Path) -> dict:
    """The JSON object of a model info file (unchecked: parse_info checks it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--model-info {path}: no such file (give a JSON file, or KEY=VALUE)")
    doc = read_json(path, "a model info", MAX_INFO_BYTES, ConfigError)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a model info is a JSON object like {{\"classes\": [...], \"input\": \"3x32x32\"}}")
    return doc


def _option_value(key: str, text: str):
    """KEY=VALUE on the command line → the JSON value of the key."""
    if key in ("classes", "mean", "std"):
        if text.strip().startswith("["):
            return parse_json(text, f"--model-info {key}=", "a JSON list", ConfigError, "give a list like [\"a\", \"b\"]")
        items = [t.strip() for t in text.split(",") if t.strip()]
        if key == "classes" and len(items) == 1 and items[0].isdigit():
            return int(items[0])
        return items if key == "classes" else [float(t) for t in items]
    if key == "factory_kwargs":
        return parse_json(text, f"--model-info {key}=", "a JSON object", ConfigError, "give an object like {\"num_classes\": 10}")
    if key == "split_seed":
        return int(text)
    return text


def info_options(items: Sequence[str] | None, factory: str | None = None) -> dict | None:
    """`--model-info FILE` and `--model-info KEY=VALUE` (in order, later ones win) and
    `--model-factory module:fn` → one model-info dict; None when none is given. A FILE given
    here replaces the JSON beside the model file (the key "info_file" says which it was)."""
    doc: dict = {}
    sources = []
    for item in items or []:
        key, sep, text = str(item).partition("=")
        if not sep or "/" in key or key.endswith(".json"):
            doc |= read_info_file(Path(item)) | {"info_file": str(item)}
            sources.append(Path(item).name)
            continue
        key = key.strip()
        if key not in KEYS:
            raise ConfigError(f"--model-info {item!r}: unknown key {key!r}: use {', '.join(KEYS)} (or a JSON file)")
        try:
            doc[key] = _option_value(key, text)
        except ValueError as e:
            raise ConfigError(f"--model-info {item!r}: {e}") from None
        sources.append(f"--model-info {key}")
    if factory is not None:
        doc["factory"] = factory
        sources.append("--model-factory")
    return doc | {"info_source": " and ".join(dict.fromkeys(sources))} if doc else None
