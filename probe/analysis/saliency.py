"""What the model looks at: maps of six attribution methods side by side (probe.methods.saliency's
registry), and how far each can be trusted: deletion/insertion against a random order, and the
model-randomization check (probe.methods.faithfulness).

    probe.saliency(model, images, target, methods="all", classes=names)     -> SaliencyResult
    probe.faithfulness(model, images, target, saliency_result_or_maps)     -> FaithfulnessResult

Both on any nn.Module mapping [0, 1] images (N, C, H, W) to logits, in float32 or float64; both
results draw themselves (`result.figures()`) with nothing but the class names they hold.
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors.torch import save as st_save
from torch import nn

from probe.analysis.base import (Analysis, Context, ResultBase, SettingsBase, array_field, check_choice,
                                 check_int)
from probe.data.imageset import ImageSet
from probe.data.spec import ClassNames
from probe.data.user_images import load_user_images
from probe.device import cpu_threads
from probe.errors import ConfigError
from probe.figures.saliency import (faithfulness_figure, randomization_figure, randomization_maps_figure,
                                    saliency_figure)
from probe.io import atomic_write_bytes, atomic_write_text
from probe.methods.common import class_probabilities
from probe.methods.faithfulness import (RANDOM, FaithfulnessConfig, cascade_groups, deletion_insertion,
                                        randomization_check)
from probe.methods.saliency import METHODS, Attributions, Layer, SaliencyConfig, attribute, method_title, parse_methods
from probe.presentation import FigureRef, Section, Table, Text

SELECTIONS = ("correct", "wrong", "any")
SCALES = ("method", "image")
SPLITS = ("val", "test", "train", "kaggle")
COLOUR_SCALE = {"clip_percentile": 99.5, "absolute": "sequential from 0", "signed": "diverging, symmetric about 0"}
ATTRIBUTIONS = "attributions.safetensors"
CSV_COLUMNS = ["method", "deletion_auc", "insertion_auc", "spearman_randomized", "flagged", "seconds",
               "images_per_second"]


# ---- settings ------------------------------------------------------------------------------------


def parse_index(text: str | Sequence[int]) -> tuple[int, ...]:
    """"3,17,40" → (3, 17, 40): image numbers of a split (checked against its size in run)."""
    out = []
    for item in text.split(",") if isinstance(text, str) else text:
        s = str(item).strip()
        if not s:
            continue
        if not s.lstrip("-").isdigit():
            raise ConfigError(f"--index {s!r}: give image numbers like 3,17,40")
        if int(s) < 0:
            raise ConfigError(f"--index {s}: image numbers start at 0")
        out.append(int(s))
    if not out:
        raise ConfigError("--index: give at least one image number, like 3,17,40")
    return tuple(out)


@dataclass(frozen=True)
class Settings(SettingsBase):
    class_name: str | None = None  # --class: a slug, a code (c2) or an index
    methods: tuple[str, ...] | str = "all"  # --method: "all", "vanilla,ig" or names
    n: int = 6  # --n: images of the class
    split: str = "val"
    selection: str = "correct"  # correct | wrong (--wrong) | any (--any)
    index: tuple[int, ...] | str | None = None  # --index 3,17,40
    images: tuple[str, ...] | None = None  # --image: the user's own files
    scale: str = "method"  # --scale
    overlay: bool = False  # --overlay
    faithfulness: bool = True  # --faithfulness/--no-faithfulness
    batch_size: int = 256  # --batch-size
    seed: int = 0  # --seed
    threads: int | None = None  # --threads (None: PyTorch's own)

    def __post_init__(self):
        try:
            object.__setattr__(self, "methods", tuple(parse_methods(self.methods)))
        except ConfigError as e:
            raise ConfigError(f"--method: {e}") from None
        if self.index is not None:
            object.__setattr__(self, "index", parse_index(self.index))
        if self.images is not None:
            object.__setattr__(self, "images", tuple(str(p) for p in self.images) or None)
        check_int("--n", self.n, 1, why="show at least 1 image")
        check_choice("--split", self.split, SPLITS)
        check_choice("--scale", self.scale, SCALES, "method: one colour scale per method; image: each map its own")
        check_choice("selection", self.selection, SELECTIONS, "--wrong or --any, or neither for correct")
        check_int("--batch-size", self.batch_size, 1)
        check_int("--seed", self.seed, -2 ** 63)
        if self.threads is not None:
            check_int("--threads", self.threads, 1)
        self._check_images_asked()

    def _check_images_asked(self) -> None:
        if self.images and self.index is not None:
            raise ConfigError("give --image files or --index numbers, not both")
        if (self.images or self.index is not None) and self.selection != "correct":
            raise ConfigError(f"--{self.selection} picks images of --class; with --index or --image the images "
                              "are given")
        if self.class_name is None and not self.images and self.index is None:
            raise ConfigError("which class? give --class (a name, a code like c2, or an index), "
                              "or pick images with --index or --image")


def class_index(classes, name: str | int) -> int:
    """--class as a slug, code, display name or index; unknown: the valid names and the closest match."""
    names = ClassNames.of(classes)
    try:
        return names.index(name)
    except ConfigError as e:
        words = [*names.slugs, *names.codes, *(d.lower() for d in names.display)]
        close = difflib.get_close_matches(str(name).strip().lower(), words, n=1, cutoff=0.5)
        if close:
            raise ConfigError(f"{e} (closest match: {names.slugs[words.index(close[0]) % len(names)]})") from None
        raise


# ---- results ---------------------------------------------------------------------------------------


@dataclass
class FaithfulnessResult(ResultBase):
    """Deletion/insertion of each map against a random order, and the model-randomization check.
    curves[method] (and curves["random"]): mean areas ("deletion_auc", "insertion_auc"), per
    image, and the mean curves over `fractions`; randomization: the Spearman correlations per
    cascade step, the final one per method and the flagged methods (None when not run)."""
    KIND = "faithfulness"
    model: str
    methods: list[str]
    count: int  # images
    fractions: list[float]
    curves: dict[str, dict]
    config: dict
    randomization: dict | None = None
    image_name: str = "image 0"
    randomized: torch.Tensor | None = array_field()  # (M, S, H, W): image 0's maps, step by step
    trained: torch.Tensor | None = array_field()  # (M, H, W): image 0's maps of the trained model
    image: torch.Tensor | None = array_field()  # (C, H, W): image 0

    @property
    def randomized_methods(self) -> list[str]:
        return list((self.randomization or {}).get("spearman_mean", {}))

    def figures(self) -> dict:
        return faithfulness_figures(self)

    def summary(self) -> list[str]:
        return _format_table(_table(self.methods, {}, {}, self), True) + _flagged(self)


@dataclass
class SaliencyResult(ResultBase):
    """maps (`attributions`, (M, N, H, W) float32, methods in order) at the network's input, the
    images they explain, a record per image (`rows`: the class explained, the prediction, their
    probabilities, where the image came from), the time each method took, and, where measured,
    how faithful each is (`faithfulness`: a FaithfulnessResult's JSON)."""
    KIND = "saliency"
    model: str
    classes: list[str]  # slugs
    display_names: list[str]
    codes: list[str]
    methods: list[str]
    targets: list[int]
    rows: list[dict]
    row_names: list[str]  # the first line of each row's label: "#12", "#12 true", "a.png"
    description: str  # which images: "the first 6 correctly classified val images of class 3"
    title: str
    config: dict  # the methods' settings (SaliencyConfig) and the colour scale
    layout: dict  # what attributions.safetensors holds
    seconds: dict[str, float]
    images_per_second: dict[str, float]
    convergence: dict[str, dict]  # per method with a completeness check (IG): delta and gap per image
    scale: str = "method"
    overlay: bool = False
    crop_box: list[int] | None = None  # (top, left, height, width) of the input inside a stored frame
    class_name: str | None = None  # the class asked for (a slug)
    selection: str | None = None  # correct | wrong | any | index | files (None: the API)
    split: str | None = None
    split_size: int | None = None
    files: list[str] | None = None
    faithfulness: dict | None = None
    attributions: torch.Tensor | None = array_field()  # (M, N, H, W) float32
    images: torch.Tensor | None = array_field()  # (N, C, H, W): what the network saw
    frames: torch.Tensor | None = array_field()  # (N, C, H', W'): the stored images, where larger
    randomized: torch.Tensor | None = array_field()  # (M', S, H, W): see FaithfulnessResult

    @property
    def names(self) -> ClassNames:
        return ClassNames(tuple(self.classes), tuple(self.display_names), tuple(self.codes))

    @property
    def maps(self) -> dict[str, torch.Tensor]:
        """{method: (N, H, W)}."""
        return dict(zip(self.methods, self.attributions))

    @property
    def faithfulness_result(self) -> FaithfulnessResult | None:
        if self.faithfulness is None:
            return None
        known = list((self.faithfulness.get("randomization") or {}).get("spearman_mean", {}))
        maps = self.maps
        return FaithfulnessResult.from_json(self.faithfulness, {
            "randomized": self.randomized, "image": self.images[0],
            "trained": torch.stack([maps[m][0] for m in known]) if known else None})

    def with_faithfulness(self, f: FaithfulnessResult) -> "SaliencyResult":
        """This result with its faithfulness measured (figures, table and files follow)."""
        f = dataclasses.replace(f, image_name=self.row_names[0])
        return dataclasses.replace(self, faithfulness=f.to_json(), randomized=f.randomized)

    def data_info(self) -> dict:
        if self.files is not None:
            return {"source": "files", "files": self.files}
        return {k: v for k, v in (("split", self.split), ("n", self.split_size)) if v is not None}

    def table(self) -> list[dict]:
        """A row per method (and the random order): seconds, images/s, the deletion and insertion
        areas, the Spearman correlation with the randomized model's maps and its flag."""
        return _table(self.methods, self.seconds, self.images_per_second, self.faithfulness_result)


# ---- the public functions ------------------------------------------------------------------------------


def saliency(model: nn.Module, images: torch.Tensor, target=None, *, methods: str | Sequence[str] = "all",
             classes=None, layer: Layer = None, batch_size: int = 256, seed: int = 0,
             config: SaliencyConfig | None = None, scale: str = "method", overlay: bool = False,
             display_images: torch.Tensor | None = None, name: str = "model", title: str | None = None,
             probs: torch.Tensor | None = None, progress=None) -> SaliencyResult:
    """Maps of each method for images (N, C, H, W) uint8 or [0, 1], explaining `target` (a class,
    (N,) classes, or None: each image's predicted class). classes: names or their number (default:
    the model's outputs). layer: Grad-CAM's layer for a model without `cam_layer`. config: every
    method's settings (default SaliencyConfig(batch_size, seed)). display_images: the stored
    images when larger than the network's input (a centre crop; the figure outlines it).
    progress: callable(what, done, total). The model is left as found (mode, .grad, requires_grad)."""
    check_choice("scale", scale, SCALES)
    config = config or SaliencyConfig(batch_size=batch_size, seed=seed)
    if target is None:
        probs = probs if probs is not None else class_probabilities(model, images, batch_size=config.batch_size)
        target = probs.argmax(1)
    n, methods = len(images), parse_methods(methods)
    a = attribute(model, images, target, methods=methods, config=config, layer=layer, probs=probs, warm_up=True,
                  progress=_counting(progress, f"saliency of {n} image(s)", len(methods)))
    names = ClassNames.of(classes if classes is not None else a.probs.shape[1])
    if len(names) != a.probs.shape[1]:
        raise ConfigError(f"{len(names)} class names for a model with {a.probs.shape[1]} outputs")
    h, w = images.shape[-2:]
    frames = display_images if display_images is not None and display_images.shape[-2:] != images.shape[-2:] else None
    crop = None if frames is None else [(frames.shape[-2] - h) // 2, (frames.shape[-1] - w) // 2, h, w]
    explained = (f"class {names.display[int(a.targets[0])]}" if bool((a.targets == a.targets[0]).all())
                 else "each image's class")
    return SaliencyResult(
        model=name, classes=list(names.slugs), display_names=list(names.display), codes=list(names.codes),
        methods=a.methods, targets=a.targets.tolist(), rows=_rows(a, names), row_names=[f"#{i}" for i in range(n)],
        description=f"{n} image{'s' if n != 1 else ''}",
        title=title or f"{name}: {n} image(s); maps for {explained} (rows: image, class explained, its probability)",
        config={"saliency": config.to_dict(int(h), int(w)), "colour_scale": COLOUR_SCALE},
        layout=_layout(a, n, int(h), int(w)), seconds={m: round(s, 4) for m, s in a.seconds.items()},
        images_per_second={m: round(v, 2) for m, v in a.images_per_second().items()},
        convergence=_convergence(a), scale=scale, overlay=overlay, crop_box=crop,
        attributions=torch.stack([a.maps[m] for m in a.methods]), images=images.detach().cpu(),
        frames=None if frames is None else frames.detach().cpu())


def _counting(progress, what: str, total: int):
    """A callable(step) that reports progress(what, steps done, total) after each step (None: None)."""
    if progress is None:
        return None
    done = [0]

    def step(_name: str) -> None:
        done[0] += 1
        progress(what, done[0], total)
    return step


def _rows(a: Attributions, names: ClassNames) -> list[dict]:
    s = names.slugs
    rows = []
    for r, (t, p) in enumerate(zip(a.targets.tolist(), a.predicted.tolist())):
        row = {"row": r, "target": s[t], "predicted": s[p], "p_target": round(float(a.probs[r, t]), 6),
               "p_predicted": round(float(a.probs[r, p]), 6)}
        for m, (delta, gap) in a.completeness.items():
            row |= {f"{m}_delta": round(float(delta[r]), 6), f"{m}_gap": round(float(gap[r]), 6)}
        rows.append(row)
    return rows


def _layout(a: Attributions, n: int, h: int, w: int) -> dict:
    return {"file": ATTRIBUTIONS, "keys": a.methods, "shape": [n, h, w], "dtype": "float32",
            "signed": [m for m in a.methods if METHODS[m].signed],
            "reduction": {m: METHODS[m].reduction for m in a.methods},
            "space": "the network's input (after the dataset's evaluation crop)"}


def _convergence(a: Attributions) -> dict[str, dict]:
    """Per method that must add up (IG): Σ map − (f(x) − f(baseline)) per image, and the worst."""
    out = {}
    for m, (delta, gap) in a.completeness.items():
        rel = delta.abs() / gap.abs().clamp_min(1e-12)
        out[m] = {"delta": delta.tolist(), "gap": gap.tolist(), "max_abs_delta": float(delta.abs().max()),
                  "max_relative_delta": float(rel.max())}
    return out


def faithfulness(model: nn.Module, images: torch.Tensor, target, maps: SaliencyResult | Mapping[str, torch.Tensor],
                 *, randomization: bool = True, layer: Layer = None, batch_size: int = 256, seed: int = 0,
                 config: FaithfulnessConfig | None = None, saliency_config: SaliencyConfig | None = None,
                 name: str | None = None, progress=None) -> FaithfulnessResult:
    """How far maps (N, H, W) of images (N, C, H, W) explaining `target` can be trusted: deletion
    and insertion curves against a random order, and (randomization=True) the model-randomization
    check of the maps made by a registered method, recomputed on copies re-initialized from the
    top. maps: a SaliencyResult (its settings are reused) or {name: (N, H, W)}.
    progress: callable(what, done, total). The model itself is never changed."""
    if isinstance(maps, SaliencyResult):
        saliency_config = saliency_config or SaliencyConfig.from_dict(maps.config["saliency"])
        name = name or maps.model
        maps = maps.maps
    config = config or FaithfulnessConfig(batch_size=batch_size, seed=seed)
    saliency_config = saliency_config or SaliencyConfig(batch_size=batch_size, seed=seed)
    maps = {m: torch.as_tensor(v).detach().float().cpu() for m, v in maps.items()}
    if progress is not None:
        progress("deletion and insertion", 0, None)
    di = deletion_insertion(model, images, target, maps, config=config)
    known = [m for m in maps if m in METHODS] if randomization else []
    rand = None
    if known:
        rand = randomization_check(
            model, images, target, methods=known, config=saliency_config, layer=layer, trained_maps=maps,
            threshold=config.flag_threshold, seed=seed,
            progress=_counting(progress, "randomization check", len(known) * len(cascade_groups(model))))
    h, w = images.shape[-2:]
    return FaithfulnessResult(
        model=name or "model", methods=list(maps), count=len(images), fractions=di.fractions.tolist(),
        curves=di.summary(), randomization=None if rand is None else rand.summary(),
        config={"deletion_insertion": config.to_dict() | {"blur_sigma": config.sigma(int(h), int(w))},
                "randomization": {"cascading": True, "correlation": "Spearman of |map|",
                                  "threshold": config.flag_threshold, "seed": seed}},
        randomized=None if rand is None else torch.stack([rand.maps[m][:, 0] for m in known]),
        trained=torch.stack([maps[m][0] for m in known]) if known else None, image=images[0].detach().cpu())


# ---- the command: which images -----------------------------------------------------------------------


@dataclass
class Picked:
    """The images a run explains: as stored, the class each map explains, their probabilities, a
    record and a row name each, and a description for the title and the terminal."""
    frames: torch.Tensor  # (N, C, H, W) as stored
    targets: torch.Tensor  # (N,)
    probs: torch.Tensor  # (N, K)
    info: list[dict]
    names: list[str]
    what: str


def select_images(ctx: Context, data: ImageSet, k: int, n: int, selection: str, split: str, batch_size: int):
    """The first n images of class k in the split that the model classifies correctly
    (selection "correct"), wrongly ("wrong") or either ("any"): (indices, probabilities)."""
    candidates = (data.labels == k).nonzero().flatten()
    name = ctx.classes.slugs[k]
    if len(candidates) == 0:
        raise ConfigError(f"the {split} split has no image of class {name}: try --split test or train")
    if selection == "any":
        chosen = candidates[:n]
        return chosen, class_probabilities(ctx.model, ctx.view(data.images[chosen]), batch_size=batch_size)
    chosen, probs = [], []
    step = max(64, 4 * n)
    for s in range(0, len(candidates), step):  # predict only as far as needed
        idx = candidates[s:s + step]
        p = class_probabilities(ctx.model, ctx.view(data.images[idx]), batch_size=batch_size)
        keep = (p.argmax(1) == k) if selection == "correct" else (p.argmax(1) != k)
        chosen.append(idx[keep])
        probs.append(p[keep])
        if sum(len(c) for c in chosen) >= n:
            break
    chosen_t, probs_t = torch.cat(chosen)[:n], torch.cat(probs)[:n]
    if len(chosen_t) == 0 and selection == "correct":
        raise ConfigError(f"no correctly classified image of class {name} in the {split} split "
                          f"({len(candidates)} image(s) of the class, all misclassified): use --wrong "
                          "to see why the model says otherwise, or --any")
    if len(chosen_t) == 0:
        raise ConfigError(f"every one of the {len(candidates)} image(s) of class {name} in the {split} "
                          "split is classified correctly: nothing to show with --wrong (leave it out, or "
                          "try --split test)")
    return chosen_t, probs_t


def _from_files(ctx: Context, settings: Settings, k: int | None) -> Picked:
    if ctx.spec is None:
        raise ConfigError("--image: this model has no dataset to bring the files to its input; "
                          "call probe.saliency with the images as a tensor")
    user = load_user_images(settings.images, ctx.spec)
    probs = class_probabilities(ctx.model, ctx.view(user.images), batch_size=settings.batch_size)
    targets = torch.full((len(user.images),), k) if k is not None else probs.argmax(1)
    info = [{"file": str(p), "note": note, "label": None, "role": None} for p, note in zip(user.paths, user.notes)]
    names = [p.name if len(p.name) <= 12 else p.name[:11] + "…" for p in user.paths]
    n = len(user.images)
    return Picked(user.images, targets, probs, info, names, f"{n} file{'s' if n != 1 else ''}")


def _from_index(ctx: Context, settings: Settings, data: ImageSet, k: int | None):
    """(indices, probs, targets, roles, what) of the images picked by --index."""
    for i in settings.index:
        if i >= len(data):
            raise ConfigError(f"--index {i}: the {settings.split} split has images 0..{len(data) - 1}")
    idx = torch.tensor(settings.index)
    probs = class_probabilities(ctx.model, ctx.view(data.images[idx]), batch_size=settings.batch_size)
    labels = data.labels[idx]
    targets = torch.full((len(idx),), k) if k is not None else torch.where(labels >= 0, labels, probs.argmax(1))
    return idx, probs, targets, [None] * len(idx), f"{settings.split} images {', '.join(map(str, idx.tolist()))}"


def _from_class(ctx: Context, settings: Settings, data: ImageSet, k: int):
    """(indices, probs, targets, roles, what) of the first n images of class k (right, wrong or
    either); with --wrong each image twice: why the true class, why the prediction."""
    idx, probs = select_images(ctx, data, k, settings.n, settings.selection, settings.split, settings.batch_size)
    targets, roles = torch.full((len(idx),), k), [None] * len(idx)
    what = {"correct": f"the first {len(idx)} correctly classified", "any": f"the first {len(idx)}",
            "wrong": f"the first {len(idx)} misclassified"}[settings.selection] \
        + f" {settings.split} image{'s' if len(idx) != 1 else ''} of class {ctx.classes.slugs[k]}"
    if settings.selection == "wrong":
        pred = probs.argmax(1)
        idx, probs = idx.repeat_interleave(2, 0), probs.repeat_interleave(2, 0)
        targets = torch.stack([torch.full_like(pred, k), pred], 1).flatten()
        roles = ["true", "predicted"] * (len(idx) // 2)
    return idx, probs, targets, roles, what


def _from_split(ctx: Context, settings: Settings, k: int | None) -> Picked:
    data = ctx.split(settings.split)
    pick = _from_index if settings.index is not None else _from_class
    idx, probs, targets, roles, what = pick(ctx, settings, data, k)
    s = ctx.classes.slugs
    info = [{"index": i, **({"image": data.names[i]} if data.names else {}),
             "label": s[y] if y >= 0 else None, "role": r}
            for i, y, r in zip(idx.tolist(), data.labels[idx].tolist(), roles)]
    names = [f"#{i}" + {"true": " true", "predicted": " said"}.get(r, "") for i, r in zip(idx.tolist(), roles)]
    return Picked(data.images[idx], targets, probs, info, names, what)


def _title(ctx: Context, settings: Settings, k: int | None, what: str) -> str:
    explained = ("each twice: maps for the true class and for the prediction" if settings.selection == "wrong"
                 else f"maps for class {ctx.classes.display[k]}" if k is not None
                 else "maps for the predicted class" if settings.images else "maps for each image's class")
    return f"{ctx.name}: {what}; {explained} (rows: image, class explained, its probability)"


def run(ctx: Context, settings: Settings) -> SaliencyResult:
    k = class_index(ctx.classes, settings.class_name) if settings.class_name is not None else None
    picked = _from_files(ctx, settings, k) if settings.images else _from_split(ctx, settings, k)
    x = ctx.view(picked.frames)  # (N, C, h, w): what the network sees and the maps cover
    with cpu_threads(settings.threads, ctx.device):
        result = saliency(ctx.model, x, picked.targets, methods=settings.methods, classes=ctx.classes,
                          batch_size=settings.batch_size, seed=settings.seed, scale=settings.scale,
                          overlay=settings.overlay, display_images=picked.frames, name=ctx.name,
                          title=_title(ctx, settings, k, picked.what), probs=picked.probs, progress=ctx.report)
        result = dataclasses.replace(
            result, rows=[info | row for info, row in zip(picked.info, result.rows)], row_names=picked.names,
            description=picked.what, class_name=None if k is None else ctx.classes.slugs[k],
            selection="files" if settings.images else "index" if settings.index is not None else settings.selection,
            split=None if settings.images else settings.split,
            split_size=None if settings.images else len(ctx.split(settings.split)),
            files=[r["file"] for r in picked.info] if settings.images else None)
        if settings.faithfulness:
            result = result.with_faithfulness(faithfulness(ctx.model, x, picked.targets, result, seed=settings.seed,
                                                           batch_size=settings.batch_size, progress=ctx.report))
    return result


# ---- figures, files, the report's section, the terminal ----------------------------------------------------


def _p(p: float) -> str:
    return f"{p:.2f}".removeprefix("0") if p < 0.995 else "1.0"


def figures(result: SaliencyResult) -> dict:
    short = result.names.labels(short=True)
    labels = [f"{name}\n{short[t]} {_p(row['p_target'])}"
              for name, t, row in zip(result.row_names, result.targets, result.rows)]
    out = {"saliency": saliency_figure(result.maps, result.images, row_labels=labels, frames=result.frames,
                                       crop_box=tuple(result.crop_box) if result.crop_box else None,
                                       scale=result.scale, overlay=result.overlay, title=result.title)}
    f = result.faithfulness_result
    return out | (faithfulness_figures(f) if f is not None else {})


def faithfulness_figures(f: FaithfulnessResult) -> dict:
    di = f.config["deletion_insertion"]
    out = {"faithfulness": faithfulness_figure(
        f.fractions, {m: c for m, c in f.curves.items()}, deletion_value=di["deletion_value"],
        insertion_start=di["insertion_start"], title=f"{f.model}: deletion and insertion, mean of {f.count} image(s)")}
    if f.randomization is not None:
        known = f.randomized_methods
        out["randomization"] = randomization_figure(f.randomization, title=f"{f.model}: model-randomization check")
        out["randomization-maps"] = randomization_maps_figure(
            f.image, dict(zip(known, f.trained)), dict(zip(known, f.randomized)), f.randomization["steps"],
            title=f"{f.model}: {f.image_name}, maps as the model is re-initialized from the top")
    return out


def _table(methods: list[str], seconds: dict, ips: dict, f: FaithfulnessResult | None) -> list[dict]:
    curves = f.curves if f is not None else {}
    rand = f.randomization if f is not None else None
    rows = []
    for m in methods:
        row = {"method": m}
        if m in seconds:
            row |= {"seconds": round(seconds[m], 4), "images_per_second": round(ips.get(m, 0.0), 2)}
        if curves:
            row |= {k: round(curves[m][k], 4) for k in ("deletion_auc", "insertion_auc")}
        if rand is not None and m in rand["final"]:
            row |= {"spearman_randomized": round(rand["final"][m], 4), "flagged": m in rand["flagged"]}
        rows.append(row)
    if curves:
        rows.append({"method": RANDOM} | {k: round(curves[RANDOM][k], 4) for k in ("deletion_auc", "insertion_auc")})
    return rows


def _csv(table: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for row in table:
        w.writerow({k: row.get(k, "") for k in CSV_COLUMNS})
    return buf.getvalue()


def write_files(result: SaliencyResult, out: Path) -> list[Path]:
    """attributions.safetensors (a key per method, (N, H, W) float32, rows as in results.json) and,
    where measured, faithfulness.csv (a row per method and the random order)."""
    tensors = {m: v.float().contiguous() for m, v in result.maps.items()}
    files = [out / ATTRIBUTIONS]
    atomic_write_bytes(files[0], st_save(tensors, metadata={"format": "probe saliency maps",
                                                            "layout": "N×H×W float32, rows as in results.json"}))
    if result.faithfulness is not None:
        files.append(out / "faithfulness.csv")
        atomic_write_text(files[1], _csv(result.table()))
    return files


def _name(method: str) -> str:
    return "random order" if method == RANDOM else method_title(method)


def _num(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def section(result: SaliencyResult) -> Section:
    s = Section(ANALYSIS.title, "saliency")
    of_class = f" of class {result.class_name}" if result.class_name is not None else ""
    scale = ("one colour scale per method across the rows" if result.scale == "method"
             else "each map on its own colour scale")
    images = " ".join(filter(None, [str(len(result.rows)), result.split, "image(s)"]))
    s.add(Text(f"Attribution maps of {images}{of_class} for every method, "
               f"{scale}. Faithfulness: deletion removes pixels in the map's order (a faithful map makes the "
               "probability fall fast: low area), insertion restores them (high area is better); the "
               "randomization check compares each map with the map of the same network re-initialized "
               "from the top: a high rank correlation means the map barely depends on what was learned."))
    s.add(FigureRef("saliency", f"{result.model}: saliency maps{of_class.replace(' of class', ', class')}.",
                    data={"rows": result.rows, "methods": result.methods}))
    f = result.faithfulness_result
    if f is None:
        return s
    rand = f.curves[RANDOM]
    s.add(Table(["method", "deletion area ↓", "insertion area ↑", "Spearman vs randomized", "flag", "images/s"],
                [[_name(t["method"]), _num(t.get("deletion_auc")), _num(t.get("insertion_auc")),
                  _num(t.get("spearman_randomized"), 2),
                  "barely changes when the model is destroyed" if t.get("flagged") else "",
                  _num(t.get("images_per_second"), 1)] for t in result.table()],
                caption=f"Faithfulness of each method (random order: deletion {_num(rand['deletion_auc'])}, "
                        f"insertion {_num(rand['insertion_auc'])}).", numeric={1, 2, 3, 5}))
    s.add(FigureRef("faithfulness", f"{result.model}: deletion and insertion curves per method, with a random "
                    "order as the baseline.", data={"fractions": f.fractions, "methods": f.curves}))
    if f.randomization is not None:
        s.add(FigureRef("randomization", f"{result.model}: model-randomization check (Adebayo et al. 2018), rank "
                        "correlation of each method's maps as layers are re-initialized from the top.",
                        data=f.randomization))
        s.add(FigureRef("randomization-maps", f"{result.model}: one image's maps as the model is re-initialized."))
    return s


def _format_table(table: list[dict], faithful: bool) -> list[str]:
    if not faithful:
        return [f"{'method':<22}{'img/s':>9}"] + [f"{_name(r['method']):<22}{r['images_per_second']:>9.1f}"
                                                  for r in table]
    lines = [f"{'method':<22}{'deletion↓':>10}{'insertion↑':>11}{'random ρ':>10}{'img/s':>9}"]
    for r in table:
        rho = r.get("spearman_randomized")
        rho_s = "" if rho is None else f"{rho:.2f}" + ("*" if r.get("flagged") else " ")
        ips = f"{r['images_per_second']:.1f}" if "images_per_second" in r else ""
        lines.append(f"{_name(r['method']):<22}{r['deletion_auc']:>10.3f}{r['insertion_auc']:>11.3f}"
                     f"{rho_s:>10}{ips:>9}")
    lines.append("(areas under the curves, mean over the images; random ρ: Spearman of the trained "
                 "and the re-initialized model's maps, * flagged)")
    return lines


def _flagged(f: FaithfulnessResult | None) -> list[str]:
    flagged = (f.randomization or {}).get("flagged") if f is not None else None
    if not flagged:
        return []
    return ["flagged (maps barely change when the model is re-initialized): " + ", ".join(map(method_title, flagged))]


def summary(result: SaliencyResult) -> list[str]:
    lines = [f"{result.description}: {', '.join(map(method_title, result.methods))}"]
    for m, c in result.convergence.items():
        lines.append(f"{method_title(m).lower()}: largest |convergence delta| {c['max_abs_delta']:.3g} "
                     f"({100 * c['max_relative_delta']:.2g}% of f(x) − f(black))")
    f = result.faithfulness_result
    return lines + _format_table(result.table(), f is not None) + _flagged(f)


ANALYSIS = Analysis("saliency", "What it looks at", "saliency", Settings, SaliencyResult, run, figures, section, summary,
                    write_files=write_files)
