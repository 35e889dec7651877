"""What every analysis shares: the context it runs in, its typed result, its registry entry.

An analysis is one module with
    Settings   a frozen dataclass, checked once in __post_init__, in the user's option names;
               `to_json()` is its part of the report's cache key
    run(ctx, settings) -> Result      the numbers, on any nn.Module mapping [0, 1] images to logits
    Result     a dataclass with to_json()/from_json() and a schema version
    figures(result) -> {stem: Figure} drawing needs the class names only (they are in the result)
    section(result) -> Section        the report's part, naming its figures by stem
    summary(result) -> [lines]        what the terminal prints
and one `ANALYSIS = Analysis(...)` entry that the registry, the CLI and the report iterate.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from probe.data.augment import eval_view
from probe.data.imageset import ImageSet
from probe.data.spec import ClassNames, DatasetSpec
from probe.data.user_images import expand_image_paths, load_user_images
from probe.device import analysis_threads
from probe.errors import ConfigError, ModelFileError
from probe.models.folder import ModelFolder
from probe.models.inference import inference_copy
from probe.methods.common import MAX_BATCH, MAX_RESTARTS, MAX_STEPS, class_probabilities, model_device  # noqa: F401
from probe.presentation import Section
from probe.text import shown

# ---- settings ------------------------------------------------------------------------------

# Upper bounds of the options that loop or allocate (issue 18): beyond them a run never ends or
# takes the machine's memory, and a typo (a few zeros too many) is the likelier cause.
# MAX_STEPS (gradient steps of an attack or a fooling run), MAX_RESTARTS and MAX_BATCH
# (--batch-size: images in one forward pass) are probe.methods.common's: the methods share them.
MAX_FOOLED = 1_000  # fooling images of one run, all targets together: they are made as one batch
MAX_SHOWN = 100  # images of one saliency figure (a row each), attack examples
MAX_THREADS = 1_024


def check_int(option: str, value, lo: int, hi: int | None = None, why: str = "") -> int:
    """An integer option in [lo, hi], else a ConfigError naming the option as the user typed it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{option} {shown(value)}: give a whole number")
    if value < lo or (hi is not None and value > hi):
        bound = f"from {lo} to {hi:,}" if hi is not None else f"{lo} or more"
        raise ConfigError(f"{option} {shown(value)}: give {bound}" + (f" ({why})" if why else ""))
    return value


def check_float(option: str, value, lo: float, hi: float, *, open_low: bool = False,
                open_high: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{option} {shown(value)}: give a number")
    low_bad = value <= lo if open_low else value < lo
    high_bad = value >= hi if open_high else value > hi
    if low_bad or high_bad:
        raise ConfigError(f"{option} {value:g}: give a number in {'(' if open_low else '['}{lo:g}, "
                          f"{hi:g}{')' if open_high else ']'}")
    return float(value)


def check_choice(option: str, value, choices, meaning: str = "") -> str:
    if value not in choices:
        raise ConfigError(f"{option} {value!r}: use {', '.join(map(str, choices))}" + (f" ({meaning})" if meaning else ""))
    return value


def check_image_files(images, label) -> tuple[str, ...] | None:
    """--image files (None: none; a folder: its image files) and --label, the class of the files,
    which needs them."""
    files = expand_image_paths(images) if images else None
    if label is not None and not files:
        raise ConfigError("--label: the class of your --image files; give them with --image")
    if label is not None and not str(label).strip():
        raise ConfigError("--label: give a class (a name, a code or an index)")
    return files


def by_name(target, classes):
    """A target class given by name (or a list of them) → its index by `classes` (names or their
    number); anything else (indices, a tensor) as given, for the methods to check."""
    if classes is None:
        if isinstance(target, str) or (isinstance(target, (list, tuple)) and any(isinstance(v, str) for v in target)):
            raise ConfigError(f"target {target!r}: a class by name needs classes=[its names]; or give its index")
        return target
    names = ClassNames.of(classes)
    if isinstance(target, str):
        return names.index(target)
    if isinstance(target, (list, tuple)) and any(isinstance(v, str) for v in target):
        return [names.index(v) if isinstance(v, str) else v for v in target]
    return target


class SettingsBase:
    """Mixin of every Settings dataclass: its JSON form (the cache key part) and replace()."""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# ---- results -------------------------------------------------------------------------------


def array_field(**kwargs):
    """A tensor field of a Result: kept beside results.json in arrays.safetensors, not in JSON."""
    return field(default=None, metadata={"array": True}, repr=False, **kwargs)


class ResultBase:
    """Mixin of every Result dataclass. JSON fields are plain numbers, strings, lists and dicts;
    tensor fields (declared with array_field) travel in arrays.safetensors."""
    KIND: ClassVar[str] = ""
    SCHEMA: ClassVar[int] = 1

    def to_json(self) -> dict:
        out = {"kind": self.KIND, "schema": self.SCHEMA}
        for f in dataclasses.fields(self):
            if not f.metadata.get("array"):
                out[f.name] = getattr(self, f.name)
        return out

    def arrays(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("array") and getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls, doc: dict, arrays: dict[str, torch.Tensor] | None = None):
        """The result of `to_json()` (and `arrays()`), checked for kind and schema version."""
        if not isinstance(doc, dict) or doc.get("kind") != cls.KIND:
            got = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            raise ModelFileError(f"not a {cls.KIND} result (found {got!r})")
        if doc.get("schema") != cls.SCHEMA:
            raise ModelFileError(f"{cls.KIND} result of schema {doc.get('schema')!r}; this probe reads "
                                 f"schema {cls.SCHEMA}: run the analysis again")
        names = {f.name: f for f in dataclasses.fields(cls)}
        missing = [n for n, f in names.items() if not f.metadata.get("array") and n not in doc
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ModelFileError(f"{cls.KIND} result without {', '.join(missing)}: run the analysis again")
        values = {n: doc[n] for n, f in names.items() if not f.metadata.get("array") and n in doc}
        values |= {n: t for n, t in (arrays or {}).items() if n in names}
        return cls(**values)

    def data_info(self) -> dict:
        """Which data the numbers rest on, for results.json: the split and its size, where known."""
        return {k: getattr(self, k) for k in ("split", "n") if getattr(self, k, None) is not None}

    def figures(self) -> dict:
        """{stem: matplotlib Figure}: this result drawn (see the analysis's figures())."""
        from probe.analysis.registry import entry_of  # the registry imports every analysis module
        return entry_of(self).figures(self)

    def summary(self) -> list[str]:
        from probe.analysis.registry import entry_of
        return entry_of(self).summary(self)


# ---- context -------------------------------------------------------------------------------

# Splits loaded in this process: each split of each model's dataset once (the report's analyses
# of one model share the test split).
_SPLITS: dict[tuple, ImageSet] = {}


def load_split_cached(folder: ModelFolder, split: str, data_dir=None) -> ImageSet:
    spec = folder.spec  # size and classes too: two models of one image folder may differ in them
    key = (spec.name, spec.channels, spec.height, spec.width, spec.classes,
           str(Path(data_dir).resolve()) if data_dir is not None else None, split, folder.split_seed, folder.split_by)
    if key not in _SPLITS:
        _SPLITS[key] = folder.load_split(split, data_dir)
    return _SPLITS[key]


def clear_split_cache() -> None:
    _SPLITS.clear()


@dataclass
class Context:
    """What an analysis runs on: the model (any nn.Module mapping [0, 1] images (N, C, H, W) to
    logits), its class names, a name for titles, and, for a trained model folder, its dataset
    (split loader, evaluation crop). progress: an optional callable(description, done, total).
    model None: a model folder without its weights (an analysis with needs_model=False)."""
    model: nn.Module | None
    classes: ClassNames
    name: str = "model"
    folder: ModelFolder | None = None
    data_dir: Path | None = None
    progress: Callable[[str, float, float | None], None] | None = None
    input_shape: tuple[int, int, int] | None = None  # (C, H, W), for inputs made from nothing
    mean: tuple[float, ...] | None = None  # the dataset's mean pixel, where known
    _fast: nn.Module | None = field(default=None, repr=False, compare=False)
    _split_probs: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, model: nn.Module | None, classes=None, *, folder: ModelFolder | None = None, data_dir=None,
           progress=None, name: str | None = None, input_shape=None) -> "Context":
        spec: DatasetSpec | None = folder.spec if folder is not None else getattr(model, "spec", None)
        if classes is None:
            if spec is None:
                raise ConfigError("classes: give the class names (or their number) of a model "
                                  "that probe did not train")
            classes = spec
        names = ClassNames.of(classes)
        return cls(model, names, name or (folder.name if folder is not None else type(model).__name__),
                   folder, Path(data_dir) if data_dir is not None else None, progress,
                   tuple(input_shape) if input_shape is not None else (spec.input_shape if spec else None),
                   tuple(spec.mean) if spec is not None else None)

    @property
    def fast_model(self) -> nn.Module | None:
        """The model for the many forward and input-gradient passes of attacks, fooling, saliency
        and predictions: probe's ResNets with BatchNorm folded into the convs (inference_copy,
        made once per context), any other model as it is. Analyses that change or inspect the
        model's layers (the randomization check) use `model`."""
        if self._fast is None and self.model is not None:
            self._fast = inference_copy(self.model)
        return self._fast

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def spec(self) -> DatasetSpec | None:
        return self.folder.spec if self.folder is not None else None

    def split(self, name: str) -> ImageSet:
        """A split of the model's own dataset (cached in the process)."""
        if self.folder is None:
            raise ConfigError(f"the {name} split: this model has no dataset of its own; give the images")
        return load_split_cached(self.folder, name, self.data_dir)

    def split_probabilities(self, name: str, batch_size: int = 500) -> torch.Tensor:
        """The model's class probabilities (N, K) of every image of a split as the network sees it
        (view), computed once per context: the report's analyses of one model (misclassified,
        fooling from the data, robustness's clean accuracy, saliency's choice of images) share
        one forward pass over the split instead of one each."""
        if name not in self._split_probs:
            data = self.split(name)
            self._split_probs[name] = class_probabilities(
                self.fast_model, self.view(data.images), batch_size=batch_size,
                progress=lambda done: self.report(f"predicting {len(data):,} {name} images", done, len(data)))
        return self._split_probs[name]

    def keep_split_probabilities(self, name: str, probs: torch.Tensor) -> None:
        """split_probabilities(name) computed elsewhere (in a worker process), kept for the analyses after."""
        self._split_probs.setdefault(name, probs)

    def known_split_probabilities(self, name: str) -> torch.Tensor | None:
        """split_probabilities(name) when an analysis before has computed them, else None."""
        return self._split_probs.get(name)

    def view(self, images: torch.Tensor) -> torch.Tensor:
        """Stored images (N, C, H, W) → what the network sees (the dataset's evaluation crop)."""
        return eval_view(images, self.spec) if self.spec is not None else images

    def report(self, what: str, done: float, total: float | None = None) -> None:
        if self.progress is not None:
            self.progress(what, done, total)


def image_files(ctx: Context, paths, label: str | None = None, batch_size: int = 500) -> tuple[ImageSet, str]:
    """--image files in the stored form of the model's images (probe.data.user_images), each
    labelled `label` (--label) or, without one, with the model's own prediction; and the words
    that say which, for the terminal and results.json."""
    if ctx.spec is None:
        raise ConfigError("--image: this model has no description of its input (a model folder or a model file "
                          "with its model info) to bring the files to it")
    user = load_user_images(paths, ctx.spec)
    if label is not None:
        k = ctx.classes.index(label)
        labels = torch.full((len(user.images),), k, dtype=torch.long)
        how = f"labelled {ctx.classes.slugs[k]} (--label)"
    else:
        labels = class_probabilities(ctx.fast_model, ctx.view(user.images), batch_size=batch_size).argmax(1)
        said = ", ".join(f"{p.name} {ctx.classes.slugs[k]}" for p, k in zip(user.paths, labels.tolist()))
        how = f"labelled with the model's own prediction (no --label): {said}"
    return ImageSet(user.images, labels, ctx.spec, [str(p) for p in user.paths]), how + skipped_words(user)


def skipped_words(user) -> str:
    """'; skipped 1 file that could not be read: a.png (why)' for the terminal and results.json."""
    if not user.skipped:
        return ""
    whys = "; ".join(why for _, why in user.skipped[:3]) + ("; …" if len(user.skipped) > 3 else "")
    return f"; skipped {len(user.skipped)} file{'s' if len(user.skipped) != 1 else ''} that could not be read: {whys}"


# ---- the registry entry ------------------------------------------------------------------------


@dataclass(frozen=True)
class Analysis:
    """One analysis as the CLI and the report see it. A joint analysis runs once on all models
    (run(list[Context], settings)), e.g. robustness curves of several models on one plot."""
    name: str  # its folder under reports/<model>/ and its name in the report plan
    title: str  # its section's heading
    command: str  # the `probe` command that runs it (fool runs two: --from noise|dataset)
    settings: type
    result: type
    run: Callable[..., Any]
    figures: Callable[[Any], dict]
    section: Callable[[Any], Section]
    summary: Callable[[Any], list[str]]
    needs_data: bool = True  # reads a split of the model's dataset
    needs_model: bool = True  # loads the weights (learning curves read history.json only)
    reads_history: bool = False  # draws history.json (its sha256 is then part of the cache key)
    joint: bool = False
    # A joint analysis's part in each model's section: (result, model name) -> Section | None.
    model_section: Callable[[Any, str], Section | None] | None = None
    # A joint analysis as a task per model and what makes the result of their outcomes:
    # model_parts(contexts, settings) -> (tasks, finish(outcomes, threads)); run() does both here.
    model_parts: Callable[[Any, Any], tuple[list, Callable[[list, dict], Any]]] | None = None
    write_files: Callable[[Any, Path], list[Path]] | None = None  # files beyond figures and results.json

    def execute(self, contexts, settings):
        """run(contexts, settings) on the CPU threads other processes leave free (--threads where
        the analysis has it): two OpenMP threads sharing a core with another process wait on each
        other at every small kernel (a report's saliency beside one busy process: 64 s, not 8)."""
        first = contexts[0] if isinstance(contexts, (list, tuple)) else contexts
        device = first.device if first.model is not None else torch.device("cpu")
        with analysis_threads(getattr(settings, "threads", None), device):
            return self.run(contexts, settings)
