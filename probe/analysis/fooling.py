"""Fooling images, two analyses in one module: from noise (`fool-noise`: gradient ascent on the
target's probability) and from data (`fool-dataset`: the smallest L∞ change that flips a
correctly classified image to the target). A fooling image counts only if it still fools the
model once saved as an 8-bit PNG and read back: each result tells, per image and in totals, what
happened on the way (reached the goal in continuous values, broken by rounding to 8 bits, repaired
on the 1/255 grid, fooled before and after saving), and the command writes each image to images/
(the PNGs judged). The numerics are in probe.methods.fooling."""
from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from probe.analysis.base import (MAX_BATCH, MAX_FOOLED, MAX_STEPS, MAX_THREADS, Analysis, Context, ResultBase,
                                 SettingsBase, array_field, check_choice, check_float, check_image_files,
                                 check_int, image_files)
from probe.data.spec import ClassNames
from probe.device import analysis_threads
from probe.errors import ConfigError
from probe.figures.fooling import dataset_figures, dataset_page_count, noise_figures, noise_page_count
from probe.io import atomic_write_bytes
from probe.methods import fooling as numerics
from probe.methods.common import as_classes, check_images, class_probabilities, model_device
from probe.methods.confusion import wilson_interval
from probe.presentation import FigureRef, Section, Table, Text, pct

SOURCES = ("noise", "dataset")
SPLITS = ("test", "val", "train")
IMAGES = "images"  # the folder of the PNGs, beside results.json
# What happened to the images, in order: reached − broken + rounded up + repaired − lost on the grid
# = fooled before saving; that − lost by saving + gained by saving = fooled after saving; that +
# not fooled = all. The rare ones (RARE) are shown only where they happened.
STAGES = {  # key: the table's row (short: a table of short cells fits any page), what it means
    "reached_before_rounding": ("reached the goal, continuous", "reached: p(target) at the goal on the "
                                "continuous image, before rounding"),
    "broken_by_rounding": ("broken by rounding to 8 bits", "broken: of those, below the goal once rounded"),
    "rounded_up": ("rounded up to the goal", "rounded up: below the goal before rounding, at it after"),
    "repaired": ("repaired on the 1/255 grid", "repaired: below the goal after rounding, at it after ±1/255 "
                 "steps on the grid"),
    "lost_on_grid": ("lost on the grid", "lost on the grid: at the goal after rounding, not after the grid steps"),
    "fooled_before_saving": ("fooled before saving", ""),
    "lost_by_saving": ("lost by saving", "lost by saving: fooling before saving, not after"),
    "gained_by_saving": ("gained by saving", "gained by saving: not fooling before saving, fooling after"),
    "fooled_after_saving": ("fooled after saving as PNG", "after saving: the PNG read back and classified again"),
    "not_fooled": ("not fooled after saving", ""),
}
RARE = {"rounded_up", "lost_on_grid", "lost_by_saving", "gained_by_saving"}

# ---- settings ------------------------------------------------------------------------------


def _check_run(n, confidence, steps, batch_size, names: tuple[str, str, str, str]) -> None:
    """The numbers both analyses take, each named as the caller knows it (the command's options,
    or the public functions' parameters)."""
    check_int(names[0], n, 1, MAX_FOOLED, why="images per target")
    check_float(names[1], confidence, 0, 1, open_low=True, open_high=True)
    if steps is not None:
        check_int(names[2], steps, 1, MAX_STEPS)
    check_int(names[3], batch_size, 1, MAX_BATCH)


def _check_total(n: int, wanted: list[int], option: str) -> None:
    """The images of every target are made together, as one batch: their number bounds the memory."""
    if n * len(wanted) > MAX_FOOLED:
        raise ConfigError(f"{option} {n} × {len(wanted)} targets = {n * len(wanted):,} images: at most "
                          f"{MAX_FOOLED:,} in one run (they are made together); lower {option} or ask for "
                          "fewer targets (--target)")


@dataclass(frozen=True)
class _Common(SettingsBase):
    target: str = "all"  # --target: a class (name, code or index) or all
    n: int = 4  # --n: images per target
    confidence: float = 0.99
    steps: int | None = None  # None: the method's default (raw 200, natural 150, dataset 40)
    seed: int = 0
    batch_size: int = 500  # images per forward pass when judging
    threads: int | None = None  # --threads: None for probe.device.analysis_threads' choice

    def __post_init__(self):
        if not isinstance(self.target, str) or not self.target.strip():
            raise ConfigError("--target: give a class or all")
        _check_run(self.n, self.confidence, self.steps, self.batch_size,
                   ("--n", "--confidence", "--steps", "batch_size"))
        check_int("--seed", self.seed, 0)
        if self.threads is not None:
            check_int("--threads", self.threads, 1, MAX_THREADS)

    @property
    def targets(self) -> str:
        """"all", or the one class asked for."""
        return "all" if self.target.strip().lower() == "all" else self.target.strip()

    @property
    def class_name(self) -> str | None:
        """The class a model must have (to pick the newest model that has it)."""
        return None if self.targets == "all" else self.targets


@dataclass(frozen=True)
class NoiseSettings(_Common):
    style: str = "raw"  # --style raw|natural

    def __post_init__(self):
        super().__post_init__()
        check_choice("--style", self.style, numerics.STYLES)


@dataclass(frozen=True)
class DatasetSettings(_Common):
    source_class: str | None = None  # --source: change only images of this class
    split: str = "test"
    images: tuple[str, ...] | None = None  # --image: the user's own files instead of the split
    label: str | None = None  # --label: the files' class (None: the model's prediction)

    def __post_init__(self):
        super().__post_init__()
        check_choice("--split", self.split, SPLITS)
        if self.source_class is not None and not str(self.source_class).strip():
            raise ConfigError("--source: give a class")
        object.__setattr__(self, "images", check_image_files(self.images, self.label))


def from_options(source: str, *, style: str | None = None, source_class: str | None = None,
                 split: str = "test", images=None, label: str | None = None, **common) -> tuple[Analysis, _Common]:
    """`probe fool --from SOURCE ...`: the registry entry and its Settings, checked in the
    command's option names. common: target, n, confidence, steps, seed, threads."""
    check_choice("--from", source, SOURCES, "noise: gradient ascent from random noise; dataset: the "
                 "smallest change to correctly classified images")
    if source == "noise":
        if source_class is not None:
            raise ConfigError("--source: applies to --from dataset only (the class of the images to change)")
        if images or label is not None:
            raise ConfigError(f"--{'image' if images else 'label'}: applies to --from dataset only (the images to "
                              "change); --from noise starts from noise")
        return NOISE_ANALYSIS, NoiseSettings(style=style or "raw", **common)
    if style is not None:
        raise ConfigError(f"--style {style}: applies to --from noise only")
    return DATASET_ANALYSIS, DatasetSettings(source_class=source_class, split=split, images=images, label=label,
                                             **common)


# ---- results -------------------------------------------------------------------------------


@dataclass
class FoolingResult(ResultBase):
    """Fooling images and how they fared: `images` holds one record per image (its file under
    images/, target, p(target) before rounding, after rounding, as judged and after saving, what
    happened to it, the steps...), `stages` the counts over all of them (STAGES: count, of,
    fraction, ci95: the 95% Wilson interval), and the pixels (arrays) that the figures draw."""
    SCHEMA = 2  # 2: stages replace rates, rounding_broke and repaired
    model: str
    classes: list[str]  # slugs
    display_names: list[str]
    codes: list[str]
    source: str  # noise or dataset
    style: str | None
    targets: list[str]
    n: int
    confidence: float
    images: list[dict]
    count: int
    fooled_before_saving: int
    fooled_after_saving: int
    stages: dict  # STAGES key → {count, of, fraction, ci95}
    png_identical_to_judged: bool
    median_steps: float
    seconds: float
    device: str = "cpu"
    threads: dict | None = None  # {"threads": n, "why": ...} on the CPU
    pixels: torch.Tensor | None = array_field()  # (M, C, H, W) uint8: the images, as saved
    target: torch.Tensor | None = array_field()  # (M,) class index
    p_saved: torch.Tensor | None = array_field()  # (M,) p(target) of the PNG read back

    @property
    def names(self) -> ClassNames:
        return ClassNames(tuple(self.classes), tuple(self.display_names), tuple(self.codes))


@dataclass
class NoiseFoolingResult(FoolingResult):
    KIND = "fool-noise"

    def data_info(self) -> dict:
        return {"input": "uniform noise" if self.style == "raw" else "faint noise around the dataset mean"}


@dataclass
class DatasetFoolingResult(FoolingResult):
    KIND = "fool-dataset"
    split: str | None = None
    split_size: int | None = None  # the images the originals were chosen from
    median_linf: float | None = None  # of the images that fool the model
    median_l2: float | None = None
    shortfall: dict | None = None  # target → images missing (too few correctly classified ones)
    files: list[str] | None = None  # --image: the files changed (instead of a split)
    labels_from: str | None = None  # --image: where the files' classes came from (--label, the prediction)
    original: torch.Tensor | None = array_field()  # (M, C, H, W) uint8
    source_label: torch.Tensor | None = array_field()  # (M,)
    p_source_original: torch.Tensor | None = array_field()  # (M,) p(its class) of the original

    def data_info(self) -> dict:
        if self.files is not None:
            return {"source": "files", "files": self.files, "labels": self.labels_from}
        return {"split": self.split, "n": self.split_size}


# ---- the 8-bit round trip ------------------------------------------------------------------


def png_bytes(image: torch.Tensor) -> bytes:
    """(C, H, W) uint8 → an 8-bit grayscale or RGB PNG file's bytes."""
    arr = image.permute(1, 2, 0).contiguous().numpy()  # (H, W, C)
    pil = Image.fromarray(arr[:, :, 0], mode="L") if arr.shape[2] == 1 else Image.fromarray(arr, mode="RGB")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def read_png(png: bytes | str | Path, channels: int) -> torch.Tensor:
    """A PNG (its bytes or its path) → (C, H, W) uint8, as a user would load it (Pillow,
    converted to L or RGB)."""
    with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as im:
        arr = np.array(im.convert("L" if channels == 1 else "RGB"))
    t = torch.from_numpy(arr)
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def _file_names(fooling: numerics.Fooling, slugs: tuple[str, ...]) -> list[str]:
    """noise-to-3-00.png, 7-to-4-00.png, ...: the source, the target, a count per target."""
    names, count = [], {}
    for i in range(len(fooling)):
        t = int(fooling.target[i])
        s = "noise" if fooling.source_label is None else slugs[int(fooling.source_label[i])]
        k = count.get(t, 0)
        count[t] = k + 1
        names.append(f"{s}-to-{slugs[t]}-{k:02d}.png")
    return names


def _judged(model: nn.Module, fooling: numerics.Fooling, names: ClassNames, batch_size: int) -> dict:
    """Each image saved as a PNG (in memory), read back and classified again: the fields every
    fooling result shares."""
    back = torch.stack([read_png(png_bytes(im), im.shape[0]) for im in fooling.images])  # (M, C, H, W)
    probs = class_probabilities(model, back, batch_size=batch_size)
    p_saved = probs.gather(1, fooling.target.view(-1, 1)).flatten()
    confidence, m = fooling.confidence, len(fooling)
    records = fooling.records(list(names.slugs))
    for r, name, p in zip(records, _file_names(fooling, names.slugs), p_saved.tolist()):
        r |= {"file": f"{IMAGES}/{name}", "p_target_saved": round(p, 6), "fooled_after_saving": p >= confidence}
    saved = p_saved >= confidence
    return {"classes": list(names.slugs), "display_names": list(names.display), "codes": list(names.codes),
            "source": fooling.kind, "style": fooling.style, "confidence": confidence, "images": records,
            "count": m, "fooled_before_saving": int(fooling.fooled.sum()), "fooled_after_saving": int(saved.sum()),
            "stages": _stages(fooling, saved), "png_identical_to_judged": bool(torch.equal(back, fooling.images)),
            "median_steps": _median(fooling.steps), "pixels": fooling.images,
            "target": fooling.target, "p_saved": p_saved}


def _stages(fooling: numerics.Fooling, saved: torch.Tensor) -> dict:
    """The counts of STAGES over the images, each with its share of all of them and the share's
    95% Wilson interval. saved: (M,) bool, fooling after saving as a PNG and reading back."""
    fooled, rounded = fooling.fooled, fooling.rounded_fools
    flags = {"reached_before_rounding": fooling.reached, "broken_by_rounding": fooling.broken_by_rounding,
             "rounded_up": ~fooling.reached & rounded, "repaired": fooling.repaired,
             "lost_on_grid": rounded & ~fooled, "fooled_before_saving": fooled,
             "lost_by_saving": fooled & ~saved, "gained_by_saving": ~fooled & saved,
             "fooled_after_saving": saved, "not_fooled": ~saved}
    m, out = len(fooling), {}
    for key in STAGES:
        k = int(flags[key].sum())
        out[key] = {"count": k, "of": m, "fraction": k / m, "ci95": list(wilson_interval(k, m))}
    return out


def _class_names(classes, outputs: int) -> ClassNames:
    """The class names given (or the outputs' indices), one per output of the model."""
    names = ClassNames.of(classes if classes is not None else outputs)
    if len(names) != outputs:
        raise ConfigError(f"{len(names)} class names for a model with {outputs} outputs")
    return names


def _asked(names: ClassNames, targets, source=None) -> tuple[list[int], int | None]:
    """targets ("all", a class, or a list of classes: names, codes or indices) and the source
    class → indices; a ConfigError for an unknown class, or one source class that is the only target."""
    if isinstance(targets, str) and targets.strip().lower() == "all":
        wanted = list(range(len(names)))
    else:
        single = isinstance(targets, str) or _whole_number(targets)
        try:
            items = [targets] if single else list(targets)
        except TypeError:
            items = [None]
        if any(not (isinstance(t, str) or _whole_number(t)) for t in items):
            raise ConfigError(f"targets {targets!r}: give \"all\", a class (name, code or index) or a list "
                              "of them") from None
        wanted = [names.index(t if isinstance(t, str) else int(t)) for t in items]
    if not wanted:
        raise ConfigError("no target class given")
    src = names.index(source) if source is not None else None
    if src is not None and wanted == [src]:
        raise ConfigError(f"the source class {source} and the target {names.slugs[src]} are the same class: "
                          "nothing to change")
    return wanted, src


def _median(values: torch.Tensor) -> float:
    """The median, the mean of the two middle values of an even count (torch's median takes the
    lower one: of two images, the smaller change would be called the median)."""
    return float(torch.quantile(values.double().flatten(), 0.5))


def _whole_number(value) -> bool:
    """An int, a NumPy integer or a 0-d integer tensor (not a bool, not a float that would be cut)."""
    if isinstance(value, bool) or getattr(value, "ndim", 0) != 0 or not hasattr(value, "__index__"):
        return False
    return not (isinstance(value, torch.Tensor) and (value.is_floating_point() or value.dtype == torch.bool))


def _on_the_grid(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 as given, or float [0, 1] images rounded to the 8-bit grid (what a PNG
    holds: the change to them is counted in whole 1/255 steps)."""
    check_images(images)
    if images.dtype == torch.uint8:
        return images
    return (images.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8)  # clamp: a rounding's slack


def _stamp(started: float, model: nn.Module) -> dict:
    device = model_device(model)
    return {"seconds": round(time.perf_counter() - started, 3), "device": str(device),
            "threads": {"threads": torch.get_num_threads()} if device.type == "cpu" else None}


# ---- the public functions ------------------------------------------------------------------


def fool_from_noise(model: nn.Module, targets="all", *, shape: tuple[int, int, int], classes=None, n: int = 4,
                    confidence: float = 0.99, style: str = "raw", steps: int | None = None,
                    repair_steps: int = numerics.REPAIR_STEPS, center=0.5, lr: float | None = None,
                    seed: int = 0, batch_size: int = 500, name: str = "model") -> NoiseFoolingResult:
    """n fooling images per target class, each ascended from its own random noise until the model
    gives the target p ≥ confidence on the 8-bit image (or the step budget ends), then saved as
    a PNG (in memory), read back and classified again.

    model: any nn.Module mapping [0, 1] images (N, C, H, W) to logits (any dtype and device; left
    as found). targets: "all", a class or a list (names, codes or indices). shape: its input
    (C, H, W). classes: the class names or their number (default: the model's outputs).
    style: raw (plain ascent from uniform noise, unrecognizable images) or natural (L2 decay
    towards `center`, e.g. the dataset's mean colour, a blur and jitter: looks more like the
    class). steps: ascent steps before rounding (default raw 200, natural 150 regularized and up
    to 150 plain); repair_steps: ±1/255 steps on the grid after rounding; lr: the step size."""
    _check_run(n, confidence, steps, batch_size, ("n", "confidence", "steps", "batch_size"))
    check_choice("style", style, numerics.STYLES)
    check_int("repair_steps", repair_steps, 0)
    if len(shape) != 3:
        raise ConfigError(f"shape {tuple(shape)}: give the model's input as (C, H, W)")
    started = time.perf_counter()
    names = _class_names(classes, class_probabilities(model, torch.zeros(1, *shape)).shape[1])
    wanted, _ = _asked(names, targets)
    _check_total(n, wanted, "n")
    fooling = numerics.from_noise(model, wanted, n, shape=tuple(shape), style=style, steps=steps,
                                  repair_steps=repair_steps, center=center, lr=lr, seed=seed,
                                  confidence=confidence)
    judged = _judged(model, fooling, names, batch_size)
    return NoiseFoolingResult(model=name, targets=[names.slugs[t] for t in wanted], n=n, **judged,
                              **_stamp(started, model))


def fool_from_dataset(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targets="all", *,
                      classes=None, n: int = 4, confidence: float = 0.99, source=None,
                      steps: int | None = None, repair_steps: int = numerics.REPAIR_STEPS, seed: int = 0,
                      batch_size: int = 500, name: str = "model", split: str | None = None,
                      progress=None, probs: torch.Tensor | None = None) -> DatasetFoolingResult:
    """For each target class, n correctly classified images of other classes (of `source` only,
    when given), each changed as little as possible in L∞ (whole 1/255 steps) until the model
    gives the target p ≥ confidence on the 8-bit image; then saved as a PNG (in memory), read
    back and classified again.

    images: (N, C, H, W) uint8 or float [0, 1] (rounded to the 8-bit grid first: the change is
    counted in whole 1/255 steps), as the model takes them; labels (N,). targets, classes: as
    fool_from_noise. steps: PGD steps per attempt of the search (default 40). progress: an
    optional callable(round, rounds_at_most). probs: the model's class probabilities (N, K) of
    these very images (uint8: already on the 8-bit grid), when already computed."""
    _check_run(n, confidence, steps, batch_size, ("n", "confidence", "steps", "batch_size"))
    check_int("repair_steps", repair_steps, 0)
    labels = as_classes(labels, len(images), None, unlabelled=True)  # -1: never a source image
    known = probs is not None and images.dtype == torch.uint8 and len(probs) == len(images)
    images = _on_the_grid(images)
    started = time.perf_counter()
    probs = probs if known else class_probabilities(model, images, batch_size=batch_size)  # (N, K)
    names = _class_names(classes, probs.shape[1])
    as_classes(labels, len(images), probs.shape[1], unlabelled=True)
    wanted, src = _asked(names, targets, source)
    _check_total(n, wanted, "n")
    fooling = numerics.from_dataset(model, images, labels, wanted, probs, n=n, confidence=confidence,
                                    source=src, steps=steps or numerics.DATASET_STEPS,
                                    repair_steps=repair_steps, seed=seed, progress=progress)
    ok = fooling.fooled
    return DatasetFoolingResult(
        model=name, targets=[names.slugs[t] for t in wanted], n=n, split=split, split_size=len(images),
        **_judged(model, fooling, names, batch_size), **_stamp(started, model),
        median_linf=_median(fooling.linf[ok]) if ok.any() else None,
        median_l2=_median(fooling.l2[ok]) if ok.any() else None,
        shortfall={names.slugs[t]: k for t, k in fooling.shortfall.items()}, original=fooling.original,
        source_label=fooling.source_label, p_source_original=fooling.p_source_original)


# ---- the analyses --------------------------------------------------------------------------


def run_noise(ctx: Context, settings: NoiseSettings) -> NoiseFoolingResult:
    if ctx.input_shape is None:
        raise ConfigError("fooling from noise: the model's input shape (C, H, W) is not known")
    _check_total(settings.n, _asked(ctx.classes, settings.targets)[0], "--n")
    with analysis_threads(settings.threads, ctx.device) as threads:
        ctx.report(f"ascending {settings.n} noise image(s) per target", 0)
        result = fool_from_noise(ctx.fast_model, settings.targets, shape=ctx.input_shape, classes=ctx.classes,
                                 n=settings.n, confidence=settings.confidence, style=settings.style,
                                 steps=settings.steps, center=ctx.mean if ctx.mean is not None else 0.5,
                                 seed=settings.seed, batch_size=settings.batch_size, name=ctx.name)
    return dataclasses.replace(result, threads=threads if ctx.device.type == "cpu" else None)


def run_dataset(ctx: Context, settings: DatasetSettings) -> DatasetFoolingResult:
    wanted, _ = _asked(ctx.classes, settings.targets, settings.source_class)  # before the data is read
    _check_total(settings.n, wanted, "--n")
    if settings.images:
        data, labels_from = image_files(ctx, settings.images, settings.label, settings.batch_size)
    else:
        data, labels_from = ctx.split(settings.split), None
    what = f"searching the smallest change, {settings.n} image(s) per target"
    with analysis_threads(settings.threads, ctx.device) as threads:
        result = fool_from_dataset(ctx.fast_model, ctx.view(data.images), data.labels, settings.targets,
                                   classes=ctx.classes, n=min(settings.n, len(data)) if settings.images else settings.n, confidence=settings.confidence,
                                   source=settings.source_class, steps=settings.steps, seed=settings.seed,
                                   batch_size=settings.batch_size, name=ctx.name,
                                   split=None if settings.images else settings.split,
                                   progress=lambda r, rounds: ctx.report(what, r, rounds),
                                   probs=None if settings.images else ctx.split_probabilities(settings.split,
                                                                                             settings.batch_size))
    return dataclasses.replace(result, threads=threads if ctx.device.type == "cpu" else None,
                               files=data.names if settings.images else None, labels_from=labels_from)


def _title(result: FoolingResult) -> str:
    if result.source == "noise":
        return f"{result.model}: fooling images from noise ({result.style})"
    return f"{result.model}: the smallest L∞ change to each target ({result.split or 'given'} images)"


def page_stems(result: FoolingResult) -> list[str]:
    """The figure's stems, as figures() names them: fooling, or fooling-01, fooling-02... when
    it takes several pages."""
    count = noise_page_count if result.source == "noise" else dataset_page_count
    pages = count(result, result.names, title=_title(result))
    return ["fooling"] if pages == 1 else [f"fooling-{i:02d}" for i in range(1, pages + 1)]


def figures(result: FoolingResult) -> dict:
    draw = noise_figures if result.source == "noise" else dataset_figures
    return dict(zip(page_stems(result), draw(result, result.names, title=_title(result)), strict=True))


def write_images(result: FoolingResult, out: Path) -> list[Path]:
    """Each image as the 8-bit PNG that was judged, under out/images/ (an earlier run's removed)."""
    folder = Path(out) / IMAGES
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*-to-*.png"):
        old.unlink()  # an earlier run's images would mix with this run's
    files = []
    for record, image in zip(result.images, result.pixels):
        files.append(Path(out) / record["file"])
        atomic_write_bytes(files[-1], png_bytes(image))
    return files


def section(result: FoolingResult) -> Section:
    noise = result.source == "noise"
    natural = noise and result.style == "natural"
    title = NOISE_ANALYSIS.title if noise else DATASET_ANALYSIS.title
    # the natural style is a section of its own beside the raw one in a report
    s = Section(f"{title}, natural style" if natural else title,
                f"fool-{result.source}" + ("-natural" if natural else ""))
    how = (NATURAL_HOW.format(confidence=result.confidence) if natural else
           f"Gradient ascent from random noise ({result.style}) until the model gives the target class "
           f"p ≥ {result.confidence:g}" if noise else
           f"The smallest L∞ change to a correctly classified {result.split or ''} image of another class "
           f"that makes the model say the target with p ≥ {result.confidence:g}")
    linf = None if noise else result.median_linf
    s.add(Text(f"{how}; {_made(result)}. Each image is made in continuous pixel values, rounded to 8 bits, "
               "stepped by ±1/255 on that grid where rounding left it below the goal, then saved as a PNG "
               f"and read back: it counts only if it still fools the model then. "
               f"{_count(result.stages['fooled_after_saving'])} do"
               + (f"; the median change of the {_fooled(result)} that fool it is L∞ {linf * 255:.3g}/255, "
                  f"L2 {result.median_l2:.2f}." if linf is not None else ".")))
    s.add(_stage_table(result))
    stems = page_stems(result)
    layout = ("each image under its target class, with p(target) after saving as an 8-bit PNG" if noise else
              "original | change (magnified) | fooled for each image, labelled source → target")
    for i, stem in enumerate(stems, 1):
        suffix = f" (page {i} of {len(stems)})" if len(stems) > 1 else ""
        s.add(FigureRef(stem, f"{result.model}: {s.title.lower()}: {layout}; red: below the goal "
                        f"p ≥ {result.confidence:g}{suffix}.", data={"images": result.images}))
    return s


NATURAL_HOW = ("Gradient ascent from faint noise around the dataset's mean colour, regularized for its first steps "
               "(a pull towards the mean, a blur every fourth step and a random one-pixel shift every step, after "
               "Yosinski et al. 2015), until the model gives the target p ≥ {confidence:g}: only what survives "
               "smoothing and shifting raises the target. Adversarially trained networks tend to be fooled this way "
               "only by images that show the class, standard ones also by textures of its parts")


def _made(result: FoolingResult) -> str:
    """"20 images (2 per target × 10 targets)"."""
    k = len(result.targets)
    return f"{result.count} images ({result.n} per target × {k} target{'s' if k > 1 else ''})"


def _fooled(result: FoolingResult) -> str:
    """The images the median changes rest on: those that fool the model (judged before saving)."""
    k = result.fooled_before_saving
    return f"{k} image{'s' if k != 1 else ''}"


def _count(stage: dict) -> str:
    """"19 of 20 (95.0%, 95% interval 76.4–99.1%)"."""
    lo, hi = stage["ci95"]
    return f"{stage['count']} of {stage['of']} ({pct(stage['fraction'], 1)}, 95% interval {_span(lo, hi)})"


def _span(lo: float, hi: float) -> str:
    return f"{100 * lo:.1f}–{100 * hi:.1f}%"


def shown_stages(result: FoolingResult) -> list[str]:
    """The STAGES a reader is shown: all but the rare ones that did not happen."""
    return [k for k in STAGES if k not in RARE or result.stages[k]["count"]]


def _stage_table(result: FoolingResult) -> Table:
    m, shown = result.count, shown_stages(result)
    rows = [[STAGES[k][0], f"{st['count']} of {m}", pct(st["fraction"], 1), _span(*st["ci95"])]
            for k in shown for st in [result.stages[k]]]
    meaning = "; ".join(STAGES[k][1] for k in shown if STAGES[k][1])
    return Table(["what happened", "images", "share", "95% interval"], rows, numeric={1, 2, 3},
                 caption=f"{result.model}: what happened to the {m} fooling images on the way to a PNG, the goal "
                 f"p(target) ≥ {result.confidence:g} ({meaning}). Each share is of all {m}, with its 95% Wilson "
                 f"interval. {_identity(result)}.")


def _identity(result: FoolingResult) -> str:
    """"Reached − broken + repaired = fooled before saving", with the rare terms that happened."""
    shown = shown_stages(result)
    terms = [("", "reached"), ("−", "broken"), ("+", "rounded up"), ("+", "repaired"), ("−", "lost on the grid")]
    keys = ["reached_before_rounding", "broken_by_rounding", "rounded_up", "repaired", "lost_on_grid"]
    text = " ".join(f"{sign} {word}".strip() for (sign, word), k in zip(terms, keys) if k in shown)
    return f"{text[0].upper()}{text[1:]} = fooled before saving"


def summary(result: FoolingResult) -> list[str]:
    kind = f"from noise ({result.style})" if result.source == "noise" else f"from {result.split or 'the given'} images"
    lines = [f"fooling images {kind}: {_made(result)}, goal p(target) ≥ {result.confidence:g}"]
    if getattr(result, "files", None):
        lines.append(f"images: {len(result.files)} file(s), {result.labels_from}")
    if getattr(result, "shortfall", None):
        lines.append("too few correctly classified images for: "
                     + ", ".join(f"{t} (−{k})" for t, k in result.shortfall.items()))
    st, m = result.stages, result.count
    below = m - st["reached_before_rounding"]["count"] + st["broken_by_rounding"]["count"] - st["rounded_up"]["count"]
    lines.append(f"reached the goal before rounding {st['reached_before_rounding']['count']}/{m}; "
                 f"rounding to 8 bits broke {st['broken_by_rounding']['count']}; steps on the 1/255 grid "
                 f"repaired {st['repaired']['count']} of the {below} below the goal after rounding")
    lines += [f"{STAGES[k][1]}: {st[k]['count']}/{m}" for k in sorted(RARE & set(shown_stages(result)))]
    after = st["fooled_after_saving"]
    lines.append(f"fooled before saving {result.fooled_before_saving}/{m}, after saving as PNG and reading back "
                 f"{after['count']}/{m} ({pct(after['fraction'], 1)}, 95% interval {_span(*after['ci95'])})")
    if getattr(result, "median_linf", None) is not None:
        lines.append(f"median change of the {_fooled(result)} that fool it: L∞ {result.median_linf:.4f} "
                     f"({result.median_linf * 255:.3g}/255), L2 {result.median_l2:.3f}")
    lines.append(f"median {result.median_steps:g} gradient steps of {m} images, {result.seconds:.1f} s on {_where(result)}")
    if not result.png_identical_to_judged:
        lines.append("warning: a PNG read back differs from the image judged")
    lines.append(f"{m} 8-bit PNGs in {IMAGES}/, each read back and classified again")
    return lines


def _where(result: FoolingResult) -> str:
    if not result.threads:
        return result.device
    n, why = result.threads["threads"], result.threads.get("why")
    return f"{n} CPU thread{'s' if n > 1 else ''}" + (f" ({why})" if why else "")


NOISE_ANALYSIS = Analysis("fool-noise", "Fooled from noise", "fool", NoiseSettings, NoiseFoolingResult, run_noise,
                          figures, section, summary, needs_data=False, write_files=write_images)
DATASET_ANALYSIS = Analysis("fool-dataset", "Fooled from real images", "fool", DatasetSettings, DatasetFoolingResult,
                            run_dataset, figures, section, summary, write_files=write_images)
