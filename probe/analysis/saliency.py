"""What the model looks at: maps of six attribution methods side by side (probe.methods.saliency's
registry), and how far each can be trusted: deletion/insertion against a random order, and the
model-randomization check (probe.methods.faithfulness).

    probe.saliency(model, images, target, methods="all", classes=names)     -> SaliencyResult
    probe.faithfulness(model, images, target, saliency_result_or_maps)     -> FaithfulnessResult
    comparison_figure([result_a, result_b]), comparison_section(...)       -> the models side by side

Both on any nn.Module mapping [0, 1] images (N, C, H, W) to logits, in float32 or float64; both
results draw themselves (`result.figures()`) with nothing but the class names they hold. The
comparison draws the same images' maps of several models with one colour scale per method.
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch
from safetensors.torch import save as st_save
from torch import nn

from probe.analysis.base import (MAX_BATCH, MAX_SHOWN, MAX_THREADS, Analysis, Context, ResultBase, SettingsBase,
                                 array_field, by_name, check_choice, check_int, skipped_words)
from probe.data.imageset import ImageSet
from probe.data.spec import ClassNames
from probe.data.user_images import expand_image_paths, load_user_images
from probe.device import cpu_threads
from probe.errors import ConfigError
from probe.figures.saliency import (ROW_NAME_WIDTH, area_text, faithfulness_figure, is_signed, legend_of, overlaid,
                                    method_scales, randomization_figure, randomization_maps_figure, rho_text,
                                    saliency_figure)
from probe.figures.style import class_labels, fit_names, plain_text
from probe.io import atomic_write_bytes, atomic_write_text
from probe.methods.common import class_probabilities
from probe.text import shown
from probe.methods.faithfulness import (MIN_IMAGES, RANDOM, FaithfulnessConfig, cascade_groups,
                                        deletion_insertion, randomization_check)
from probe.methods.saliency import (METHODS, Attributions, Layer, SaliencyConfig, asks_all, attribute,
                                    choose_cam_layer, parse_methods, resolve_layer, unavailable_methods)
from probe.presentation import FigureRef, Section, Table, Text

SELECTIONS = ("correct", "wrong", "any")
PAGE_ROWS = 8  # rows of one page of the grid: more would shrink the columns below their headings' width
SCALES = ("method", "image")
OVERLAYS = (True, False, "auto", "all", "none")
SPLITS = ("val", "test", "train", "kaggle")
COLOUR_SCALE = {"clip_percentile": 99.5, "absolute": "sequential from 0", "signed": "diverging, symmetric about 0"}
ATTRIBUTIONS = "attributions.safetensors"
CSV_COLUMNS = ["method", "deletion_auc", "insertion_auc", "deletion_mean_worse", "deletion_worse",
               "insertion_mean_worse", "insertion_worse", "n_images",
               "spearman_randomized", "spearman_signed", "n_randomized", "flagged", "seconds", "images_per_second"]


# ---- settings ------------------------------------------------------------------------------------


def parse_index(text: str | Sequence[int]) -> tuple[int, ...]:
    """"3,17,40" → (3, 17, 40): image numbers of a split (checked against its size in run)."""
    out = []
    for item in text.split(",") if isinstance(text, str) else text:
        s = str(item).strip()
        if not s:
            continue
        if not s.lstrip("-").isdigit() or len(s) > 18:  # int() of 5,000 digits is a ValueError
            raise ConfigError(f"--index {shown(s)}: give image numbers like 3,17,40")
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
    overlay: bool | str = "auto"  # --overlay: True (every map on its image), False, "auto" (Grad-CAM, Occlusion)
    faithfulness: bool = True  # --faithfulness/--no-faithfulness
    batch_size: int = 256  # --batch-size
    seed: int = 0  # --seed
    threads: int | None = None  # --threads (None: PyTorch's own)
    gradcam_layer: str = "auto"  # --gradcam-layer: a layer ("stage2", a dotted name) or "auto": the last
    # feature map, or where it is under 8×8 (MNIST's 7×7) the last stage with at least 8×8
    wrong_too: int = 0  # also the maps of up to this many misclassified images of the split (the report: 4)

    def __post_init__(self):
        try:
            object.__setattr__(self, "methods", tuple(parse_methods(self.methods)))
        except ConfigError as e:
            raise ConfigError(f"--method: {e}") from None
        if self.index is not None:
            object.__setattr__(self, "index", parse_index(self.index))
        if self.images is not None:
            object.__setattr__(self, "images", tuple(str(p) for p in self.images) or None)
        check_int("--n", self.n, 1, MAX_SHOWN, why="a row of the figure each")
        self._check_images_asked()  # before the files are looked at: the options' mistakes first
        if self.images is not None:
            object.__setattr__(self, "images", expand_image_paths(self.images) or None)  # a folder: its images
        for option, given in (("--index", self.index), ("--image", self.images)):
            if given is not None and len(given) > MAX_SHOWN:
                raise ConfigError(f"{option}: {len(given):,} images, at most {MAX_SHOWN} in one run (a row each, "
                                  f"{PAGE_ROWS} a page): give fewer, or a folder of fewer")
        check_choice("--split", self.split, SPLITS)
        check_choice("--scale", self.scale, SCALES, "method: one colour scale per method; image: each map its own")
        check_choice("selection", self.selection, SELECTIONS, "--wrong or --any, or neither for correct")
        check_int("--batch-size", self.batch_size, 1, MAX_BATCH)
        check_int("--seed", self.seed, -2 ** 63)
        check_choice("--overlay", self.overlay, OVERLAYS, "every map on its image, none, or auto: Grad-CAM and "
                                                          "Occlusion, whose maps are smooth enough to see through")
        check_int("wrong_too", self.wrong_too, 0, 100)
        if not isinstance(self.gradcam_layer, str) or not self.gradcam_layer.strip():
            raise ConfigError(f"--gradcam-layer {self.gradcam_layer!r}: give a layer (stage2, or a dotted name "
                              "like net.stages.stage2) or auto")
        if self.threads is not None:
            check_int("--threads", self.threads, 1, MAX_THREADS)

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
    overlay: bool | str = False  # the maps drawn over their image (see probe.figures.saliency.overlaid)
    crop_box: list[int] | None = None  # (top, left, height, width) of the input inside a stored frame
    class_name: str | None = None  # the class asked for (a slug)
    selection: str | None = None  # correct | wrong | any | index | files (None: the API)
    split: str | None = None
    split_size: int | None = None
    files: list[str] | None = None
    faithfulness: dict | None = None
    gradcam: dict | None = None  # Grad-CAM's layer: "layer" (dotted name), "size" [h, w], "reason"
    note: str | None = None  # what the reader must know of the images (none of the class correct)
    wrong: dict | None = None  # misclassified images of the split: a SaliencyResult's JSON (wrong_result)
    skipped: dict | None = None  # method → why it cannot run on this model (a TorchScript file: Grad-CAM)
    attributions: torch.Tensor | None = array_field()  # (M, N, H, W) float32
    images: torch.Tensor | None = array_field()  # (N, C, H, W): what the network saw
    frames: torch.Tensor | None = array_field()  # (N, C, H', W'): the stored images, where larger
    randomized: torch.Tensor | None = array_field()  # (M', S, H, W): see FaithfulnessResult
    wrong_attributions: torch.Tensor | None = array_field()  # the misclassified images' arrays
    wrong_images: torch.Tensor | None = array_field()
    wrong_frames: torch.Tensor | None = array_field()

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

    @property
    def wrong_result(self) -> "SaliencyResult | None":
        """The maps of the misclassified images explained beside these (Settings.wrong_too), if any."""
        if self.wrong is None:
            return None
        return SaliencyResult.from_json(self.wrong, {"attributions": self.wrong_attributions,
                                                     "images": self.wrong_images, "frames": self.wrong_frames})

    def with_wrong(self, wrong: "SaliencyResult") -> "SaliencyResult":
        return dataclasses.replace(self, wrong=wrong.to_json(), wrong_attributions=wrong.attributions,
                                   wrong_images=wrong.images, wrong_frames=wrong.frames)

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
             classes=None, layer: Layer = "auto", batch_size: int = 256, seed: int = 0,
             config: SaliencyConfig | None = None, scale: str = "method", overlay: bool = False,
             display_images: torch.Tensor | None = None, name: str = "model", title: str | None = None,
             probs: torch.Tensor | None = None, progress=None) -> SaliencyResult:
    """Maps of each method for images (N, C, H, W) uint8 or [0, 1], explaining `target` (a class,
    (N,) classes, or None: each image's predicted class). classes: names or their number (default:
    the model's outputs). layer: Grad-CAM's layer (a module or its name; needed for a model
    without `cam_layer`), None for the model's `cam_layer`, or "auto": that one unless its map
    is under 8×8, then the last stage of probe's ResNet with at least 8×8. config: every
    method's settings (default SaliencyConfig(batch_size, seed)). display_images: the stored
    images when larger than the network's input (a centre crop; the figure outlines it).
    progress: callable(what, done, total). The model is left as found (mode, .grad, requires_grad)."""
    check_choice("scale", scale, SCALES)
    config = config or SaliencyConfig(batch_size=batch_size, seed=seed)
    target = by_name(target, classes)
    if target is None:
        probs = probs if probs is not None else class_probabilities(model, images, batch_size=config.batch_size)
        target = probs.argmax(1)
    n, asked = len(images), parse_methods(methods)
    # "all": what the model can serve, the rest said in `skipped` (a TorchScript model: no layer to
    # hook, no ReLU to guide); a method named that it cannot serve is a ConfigError saying why.
    skipped = left_out(model, asked, layer == "auto") if asks_all(methods) else {}
    methods = tuple(m for m in asked if m not in skipped)
    if not methods:
        raise ConfigError("methods: " + "; ".join(f"{m}: {why}" for m, why in skipped.items()))
    cam = choose_cam_layer(model, images, layer) if any(METHODS[m].needs_layer for m in methods) else None
    a = attribute(model, images, target, methods=methods, config=config, layer=cam and cam.name, probs=probs,
                  warm_up=True, progress=_counting(progress, f"saliency of {n} image(s)", len(methods)))
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
        gradcam=None if cam is None else {"layer": cam.name, "size": list(cam.size), "reason": cam.reason},
        skipped=skipped or None,
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
    top. maps: a SaliencyResult (its settings and Grad-CAM layer are reused) or {name: (N, H, W)}.
    progress: callable(what, done, total). The model itself is never changed."""
    if isinstance(maps, SaliencyResult):
        saliency_config = saliency_config or SaliencyConfig.from_dict(maps.config["saliency"])
        name = name or maps.model
        layer = layer if layer is not None else (maps.gradcam or {}).get("layer")
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
                "randomization": {"cascading": True, "correlation": "Spearman of |map| and of the signed map",
                                  "threshold": config.flag_threshold, "seed": seed}},
        randomized=None if rand is None else torch.stack([rand.maps[m][:, 0] for m in known]),
        trained=torch.stack([maps[m][0] for m in known]) if known else None, image=images[0].detach().cpu())


# ---- the command: which images -----------------------------------------------------------------------


@dataclass
class Picked:
    """The images a run explains: as stored, the class each map explains, their probabilities, a
    record and a row name each, a description for the title and the terminal, and a note the
    reader must see (None: nothing to add)."""
    frames: torch.Tensor  # (N, C, H, W) as stored
    targets: torch.Tensor  # (N,)
    probs: torch.Tensor  # (N, K)
    info: list[dict]
    names: list[str]
    what: str
    note: str | None = None


def _first_where(ctx: Context, data: ImageSet, candidates: torch.Tensor, n: int, batch_size: int, keep,
                 step: int = 64, split: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n of `candidates` (indices into data, the split named `split`) whose prediction
    passes keep(predicted, labels) → bool mask, predicting only as far as needed (nothing, where
    an analysis before predicted the whole split): (indices, probabilities)."""
    known = ctx.known_split_probabilities(split) if split is not None else None
    if known is not None:
        mask = keep(known[candidates].argmax(1), data.labels[candidates])
        return candidates[mask][:n], known[candidates[mask][:n]]
    chosen, probs = [candidates[:0]], [torch.zeros(0, len(ctx.classes))]
    for s in range(0, len(candidates), max(step, 4 * n)):
        idx = candidates[s:s + max(step, 4 * n)]
        p = class_probabilities(ctx.fast_model, ctx.view(data.images[idx]), batch_size=batch_size)
        mask = keep(p.argmax(1), data.labels[idx])
        chosen.append(idx[mask])
        probs.append(p[mask])
        if sum(len(c) for c in chosen) >= n:
            break
    return torch.cat(chosen)[:n], torch.cat(probs)[:n]


def select_images(ctx: Context, data: ImageSet, k: int, n: int, selection: str, split: str, batch_size: int):
    """The first n images of class k in the split that the model classifies correctly
    (selection "correct"; none when every one is misclassified), wrongly ("wrong") or either
    ("any"): (indices, probabilities)."""
    candidates = (data.labels == k).nonzero().flatten()
    name = ctx.classes.slugs[k]
    if len(candidates) == 0:
        raise ConfigError(f"the {split} split has no image of class {name}: try --split test or train")
    if selection == "any":
        chosen, known = candidates[:n], ctx.known_split_probabilities(split)
        return chosen, (known[chosen] if known is not None
                        else class_probabilities(ctx.fast_model, ctx.view(data.images[chosen]), batch_size=batch_size))
    right = selection == "correct"
    chosen, probs = _first_where(ctx, data, candidates, n, batch_size, lambda pred, y: (pred == y) == right,
                                 split=split)
    if len(chosen) == 0 and not right:
        raise ConfigError(f"every one of the {len(candidates)} image(s) of class {name} in the {split} "
                          "split is classified correctly: nothing to show with --wrong (leave it out, or "
                          f"try --split {'train' if split == 'test' else 'test'})")
    return chosen, probs


def _from_files(ctx: Context, settings: Settings, k: int | None) -> Picked:
    if ctx.spec is None:
        raise ConfigError("--image: this model has no dataset to bring the files to its input; "
                          "call probe.saliency with the images as a tensor")
    user = load_user_images(settings.images, ctx.spec)
    probs = class_probabilities(ctx.fast_model, ctx.view(user.images), batch_size=settings.batch_size)
    targets = torch.full((len(user.images),), k) if k is not None else probs.argmax(1)
    info = [{"file": str(p), "note": note, "label": None, "role": None} for p, note in zip(user.paths, user.notes)]
    n = len(user.images)
    return Picked(user.images, targets, probs, info, [p.name for p in user.paths], f"{n} file{'s' if n != 1 else ''}",
                  note=skipped_words(user).removeprefix("; ") or None)


def _picked(ctx: Context, data: ImageSet, idx, probs, targets, roles, what: str, note: str | None = None) -> Picked:
    """Images of a split: their records and row names ("#12", "#12 true", "#12 said")."""
    s = ctx.classes.slugs
    info = [{"index": i, **({"image": data.names[i]} if data.names else {}),
             "label": s[y] if y >= 0 else None, "role": r}
            for i, y, r in zip(idx.tolist(), data.labels[idx].tolist(), roles)]
    names = [f"#{i}" + {"true": " true", "predicted": " said"}.get(r, "") for i, r in zip(idx.tolist(), roles)]
    return Picked(data.images[idx], targets, probs, info, names, what, note)


def _from_index(ctx: Context, settings: Settings, data: ImageSet, k: int | None) -> Picked:
    """The images picked by --index."""
    for i in settings.index:
        if i >= len(data):
            raise ConfigError(f"--index {i}: the {settings.split} split has images 0..{len(data) - 1}")
    idx = torch.tensor(settings.index)
    probs = class_probabilities(ctx.fast_model, ctx.view(data.images[idx]), batch_size=settings.batch_size)
    labels = data.labels[idx]
    targets = torch.full((len(idx),), k) if k is not None else torch.where(labels >= 0, labels, probs.argmax(1))
    return _picked(ctx, data, idx, probs, targets, [None] * len(idx),
                   f"{settings.split} images {', '.join(map(str, idx.tolist()))}")


def _true_and_said(idx: torch.Tensor, probs: torch.Tensor, true: torch.Tensor):
    """Each misclassified image twice: explained for its true class, then for the prediction:
    (indices, probabilities, targets, roles)."""
    targets = torch.stack([true, probs.argmax(1)], 1).flatten()
    return idx.repeat_interleave(2, 0), probs.repeat_interleave(2, 0), targets, ["true", "predicted"] * len(idx)


def _from_class(ctx: Context, settings: Settings, data: ImageSet, k: int) -> Picked:
    """The first n images of class k (right, wrong or either); with --wrong each image twice: why
    the true class, why the prediction. Correct ones asked for and none there: the class's
    images anyway, marked misclassified, and a note that says so."""
    slug, split = ctx.classes.slugs[k], settings.split
    idx, probs = select_images(ctx, data, k, settings.n, settings.selection, split, settings.batch_size)
    selection, note = settings.selection, None
    if len(idx) == 0:  # "correct": every image of the class is misclassified
        idx, probs = select_images(ctx, data, k, settings.n, "any", split, settings.batch_size)
        selection = "none correct"
        note = (f"No {split} image of class {slug} is classified correctly (0 of {int((data.labels == k).sum())}): "
                f"showing the first {len(idx)}, all misclassified (each row label says what the model said).")
    targets, roles = torch.full((len(idx),), k), [None] * len(idx)
    what = {"correct": f"the first {len(idx)} correctly classified", "any": f"the first {len(idx)}",
            "wrong": f"the first {len(idx)} misclassified", "none correct": f"the first {len(idx)} (all misclassified)"
            }[selection] + f" {split} image{'s' if len(idx) != 1 else ''} of class {slug}"
    if selection == "wrong":
        idx, probs, targets, roles = _true_and_said(idx, probs, targets)
    return _picked(ctx, data, idx, probs, targets, roles, what, note)


def _misclassified(ctx: Context, settings: Settings) -> Picked | None:
    """The first wrong_too misclassified images of the split (any class), each twice: for the true
    class and for the prediction (None: the model makes no mistake there)."""
    data = ctx.split(settings.split)
    labelled = (data.labels >= 0).nonzero().flatten()
    idx, probs = _first_where(ctx, data, labelled, settings.wrong_too, settings.batch_size,
                              lambda pred, y: pred != y, step=1024, split=settings.split)
    if len(idx) == 0:
        return None
    what = f"the first {len(idx)} misclassified {settings.split} image{'s' if len(idx) != 1 else ''}"
    return _picked(ctx, data, *_true_and_said(idx, probs, data.labels[idx]), what)


def _explained(ctx: Context, settings: Settings, k: int | None) -> str:
    return ("each twice: maps for the true class and for the prediction" if settings.selection == "wrong"
            else f"maps for class {ctx.classes.display[k]}" if k is not None
            else "maps for the predicted class" if settings.images else "maps for each image's class")


def _title(ctx: Context, what: str, explained: str) -> str:
    return f"{ctx.name}: {what}; {explained} (rows: image, class explained, its probability)"


def _explain(ctx: Context, settings: Settings, picked: Picked, title: str, layer) -> SaliencyResult:
    """The maps of the picked images, with their records."""
    result = saliency(ctx.fast_model, ctx.view(picked.frames), picked.targets, methods=settings.methods,
                      classes=ctx.classes, layer=layer, batch_size=settings.batch_size, seed=settings.seed,
                      scale=settings.scale, overlay=settings.overlay, display_images=picked.frames, name=ctx.name,
                      title=title, probs=picked.probs, progress=ctx.report)
    return dataclasses.replace(
        result, rows=[info | row for info, row in zip(picked.info, result.rows)], row_names=picked.names,
        description=picked.what, note=picked.note, split=None if settings.images else settings.split,
        split_size=None if settings.images else len(ctx.split(settings.split)),
        files=[r["file"] for r in picked.info] if settings.images else None)


def usable_methods(model: nn.Module, settings: Settings, name: str = "the model") -> tuple[tuple[str, ...], dict]:
    """The methods asked for that the model can serve, and why each other one is left out (left_out)."""
    skipped = left_out(model, settings.methods, settings.gradcam_layer == "auto")
    kept = tuple(m for m in settings.methods if m not in skipped)
    if not kept:
        raise ConfigError(f"--method: {'; '.join(f'{m} cannot run on {name}: {why}' for m, why in skipped.items())}")
    return kept, skipped


def left_out(model: nn.Module, methods, auto_layer: bool) -> dict[str, str]:
    """Of `methods`, those the model cannot serve, each with why: the model's own `unavailable` (a
    TorchScript or torch.export file: no layer to hook), no nn.ReLU to guide, or Grad-CAM with no
    layer known where none was given (a model of yours without "cam_layer")."""
    unavailable = unavailable_methods(model)
    if "gradcam" in methods and "gradcam" not in unavailable and auto_layer:
        try:
            resolve_layer(model, None)
        except ConfigError:
            unavailable["gradcam"] = ("no Grad-CAM layer is known: give --gradcam-layer (a module path such as "
                                      "layer4), or \"cam_layer\" in the model info")
    return {m: unavailable[m] for m in methods if m in unavailable}


def run(ctx: Context, settings: Settings) -> SaliencyResult:
    methods, skipped = usable_methods(ctx.model, settings, ctx.name)
    if skipped:
        result = run(ctx, settings.replace(methods=methods))
        return dataclasses.replace(result, skipped=skipped)
    k = class_index(ctx.classes, settings.class_name) if settings.class_name is not None else None
    if settings.images:
        picked = _from_files(ctx, settings, k)
    else:
        pick = _from_index if settings.index is not None else _from_class
        picked = pick(ctx, settings, ctx.split(settings.split), k)
    with cpu_threads(settings.threads, ctx.device):
        result = _explain(ctx, settings, picked, _title(ctx, picked.what, _explained(ctx, settings, k)),
                          settings.gradcam_layer)
        result = dataclasses.replace(
            result, class_name=None if k is None else ctx.classes.slugs[k],
            selection="files" if settings.images else "index" if settings.index is not None else settings.selection)
        if settings.faithfulness:
            result = result.with_faithfulness(faithfulness(
                ctx.model, ctx.view(picked.frames), picked.targets, result, seed=settings.seed,
                batch_size=settings.batch_size, progress=ctx.report))
        wrong = _misclassified(ctx, settings) if settings.wrong_too and not settings.images else None
        if wrong is not None:
            explained = "each twice: maps for the true class and for the prediction"
            layer = (result.gradcam or {}).get("layer", settings.gradcam_layer)
            result = result.with_wrong(dataclasses.replace(
                _explain(ctx, settings, wrong, _title(ctx, wrong.what, explained), layer), selection="wrong"))
    return result


# ---- figures, files, the report's section, the terminal ----------------------------------------------------


def _p(p: float) -> str:
    return f"{p:.2f}".removeprefix("0") if p < 0.995 else "1.0"


def _misclassified_row(row: dict) -> bool:
    """An image explained for its own class (not a --wrong pair) that the model gets wrong."""
    return row.get("role") is None and row.get("label") is not None and row["predicted"] != row["label"]


def row_labels(result: SaliencyResult, model: str | None = None) -> list[str]:
    """Each row's label: its name (and the model's, in a comparison), the class explained and its
    probability, and "✗ said <class>" where the model gets the image wrong."""
    short = [c if len(c) <= 12 else c[:11] + "…" for c in class_labels(result.names, short=True)]
    index = {s: i for i, s in enumerate(result.classes)}
    labels = []
    names = fit_names([plain_text(n) for n in result.row_names], ROW_NAME_WIDTH)  # file names: cut, told apart
    for name, t, row in zip(names, result.targets, result.rows):
        lines = [name] + ([model] if model else []) + [f"{short[t]} {_p(row['p_target'])}"]
        if _misclassified_row(row):
            lines.append(f"✗ said {short[index[row['predicted']]]}")
        labels.append("\n".join(lines))
    return labels


def grid_pages(result: SaliencyResult) -> list[list[int]]:
    """The rows of each page of the grid, in order: PAGE_ROWS a page (a --wrong pair never split)."""
    n = len(result.rows)
    return [list(range(s, min(s + PAGE_ROWS, n))) for s in range(0, n, PAGE_ROWS)]


def grid_stems(result: SaliencyResult, stem: str = "saliency") -> list[str]:
    """The figure stem of each page: `stem`, then `stem`-2, -3, ..."""
    return [stem if i == 0 else f"{stem}-{i + 1}" for i in range(len(grid_pages(result)))]


def _grids(result: SaliencyResult, stem: str = "saliency") -> dict:
    """The grid of maps, a figure a page, on one colour scale per method over every page; --wrong
    pairs (true class, prediction) share their image."""
    roles = [row.get("role") for row in result.rows]
    pairs = len(roles) % 2 == 0 and roles == ["true", "predicted"] * (len(roles) // 2)
    maps, labels, pages = result.maps, row_labels(result), grid_pages(result)
    scales = method_scales(maps) if result.scale == "method" else None
    out = {}
    for p, (rows, page_stem) in enumerate(zip(pages, grid_stems(result, stem))):
        page = f" (page\u00a0{p + 1}\u00a0of\u00a0{len(pages)})" if len(pages) > 1 else ""
        out[page_stem] = saliency_figure(
            {m: v[rows] for m, v in maps.items()}, result.images[rows], row_labels=[labels[i] for i in rows],
            frames=None if result.frames is None else result.frames[rows],
            crop_box=tuple(result.crop_box) if result.crop_box else None, scale=result.scale, overlay=result.overlay,
            title=plain_text(result.title) + page, group=2 if pairs else 1, scales=scales,
            across="the rows" + (" of every page" if page else ""), size_rows=len(pages[0]))
    return out


def figures(result: SaliencyResult) -> dict:
    out = _grids(result)
    wrong = result.wrong_result
    if wrong is not None:
        out |= _grids(wrong, "saliency-wrong")
    f = result.faithfulness_result
    return out | (faithfulness_figures(f) if f is not None else {})


def faithfulness_figures(f: FaithfulnessResult) -> dict:
    di = f.config["deletion_insertion"]
    model = plain_text(f.model)
    out = {"faithfulness": faithfulness_figure(
        f.fractions, {m: c for m, c in f.curves.items()}, deletion_value=di["deletion_value"],
        insertion_start=di["insertion_start"], title=f"{model}: deletion and insertion, mean of {f.count} image(s)")}
    if f.randomization is not None:
        known = f.randomized_methods
        out["randomization"] = randomization_figure(f.randomization, title=f"{model}: model-randomization check")
        out["randomization-maps"] = randomization_maps_figure(
            f.image, dict(zip(known, f.trained)), dict(zip(known, f.randomized)), f.randomization["steps"],
            title=f"{model}: {plain_text(f.image_name)}, maps as the model is re-initialized from the top")
    return out


def _faithful_row(m: str, f: FaithfulnessResult) -> dict:
    """One method's numbers, unrounded: areas, their comparison with the random order, the
    randomization check's correlations, the images they rest on, the flags."""
    c, rand = f.curves[m], f.randomization
    row = {k: c[k] for k in ("deletion_auc", "insertion_auc")} | {"n_images": f.count}
    for kind in ("deletion", "insertion"):
        v = c.get(f"{kind}_vs_random") or {}
        row |= {f"{kind}_worse": v.get("worse"), f"{kind}_mean_worse": v.get("mean_worse"),
                f"{kind}_images_worse": v.get("images_worse")}
    if rand is not None and m in rand["final"]:
        row |= {"spearman_randomized": rand["final"][m], "spearman_signed": (rand.get("final_signed") or {}).get(m),
                "n_randomized": (rand.get("n") or {}).get(m), "flagged": m in rand["flagged"],
                "too_few_to_flag": m in rand.get("too_few_to_flag", [])}
    return row


def _table(methods: list[str], seconds: dict, ips: dict, f: FaithfulnessResult | None) -> list[dict]:
    rows = []
    for m in methods:
        row = {"method": m}
        if m in seconds:
            row |= {"seconds": seconds[m], "images_per_second": ips.get(m, 0.0)}
        if f is not None:
            row |= _faithful_row(m, f)
        rows.append(row)
    if f is not None:
        rows.append({"method": RANDOM, "n_images": f.count} | {k: f.curves[RANDOM][k]
                                                               for k in ("deletion_auc", "insertion_auc")})
    return rows


def _csv(table: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for row in table:
        w.writerow({k: round(v, 6) if isinstance(v, float) else v for k, v in
                    ((k, row.get(k, "")) for k in CSV_COLUMNS)})
    return buf.getvalue()


def write_files(result: SaliencyResult, out: Path) -> list[Path]:
    """attributions.safetensors (a key per method, (N, H, W) float32, rows as in results.json; the
    misclassified images' maps, where explained, under "wrong.<method>", rows as in
    results.json's "wrong") and, where measured, faithfulness.csv (a row per method and the
    random order)."""
    tensors = {m: v.float().contiguous() for m, v in result.maps.items()}
    wrong = result.wrong_result
    tensors |= {f"wrong.{m}": v.float().contiguous() for m, v in (wrong.maps if wrong is not None else {}).items()}
    files = [out / ATTRIBUTIONS]
    atomic_write_bytes(files[0], st_save(tensors, metadata={"format": "probe saliency maps",
                                                            "layout": "N×H×W float32, rows as in results.json"}))
    if result.faithfulness is not None:
        files.append(out / "faithfulness.csv")
        atomic_write_text(files[1], _csv(result.table()))
    return files


def _flag_text(t: dict) -> str:
    """The table's flag: what is wrong with a method, and on how many images it rests."""
    parts = []
    if t.get("flagged"):
        signed = t.get("spearman_signed")
        parts.append("barely changes when the model is destroyed" + (
            " (|map|; its signs do change)" if is_signed(t["method"]) and signed is not None
            and not signed > FaithfulnessConfig.flag_threshold else ""))
    elif t.get("too_few_to_flag"):
        parts.append(f"ρ above {FaithfulnessConfig.flag_threshold:g} on {t.get('n_randomized')} image: "
                     "too few images to flag")
    for kind in ("deletion", "insertion"):
        if t.get(f"{kind}_mean_worse"):
            parts.append(f"{kind} worse than random ({t[f'{kind}_images_worse']} of {t['n_images']} images)"
                         if t.get(f"{kind}_worse") else f"{kind}: mean worse than random, from "
                         f"{t[f'{kind}_images_worse']} of {t['n_images']} images: too few to flag")
    return "; ".join(parts)


def _dashes(table: list[dict], f: FaithfulnessResult) -> str:
    """Why a cell of the faithfulness table holds "—" (only the reasons that occur)."""
    rows = [t for t in table if t["method"] != RANDOM]
    why = []
    if any(not is_signed(t["method"]) and "spearman_signed" in t for t in rows):
        why.append("ρ signed of a map ≥ 0 (its signed and |map| correlations are the same number)")
    if any(t.get("n_randomized") == 0 for t in rows):
        why.append("ρ with n = 0: every trained map of the method is constant, so it ranks no pixel")
    if any("spearman_randomized" not in t for t in rows) and f.randomization is not None:
        why.append("ρ of a map of your own: no recipe to recompute it on the re-initialized model")
    return (" — stands for " + "; ".join(why) + ".") if why else ""


def _faithfulness_table(result: SaliencyResult, f: FaithfulnessResult) -> Table:
    table = result.table()

    def rho(t, key):
        if t["method"] == RANDOM:
            return ""
        return "—" if key == "spearman_signed" and not is_signed(t["method"]) else rho_text(t.get(key))
    rows = [[legend_of(t["method"]), area_text(t.get("deletion_auc")) + ("†" if t.get("deletion_mean_worse") else ""),
             area_text(t.get("insertion_auc")) + ("†" if t.get("insertion_mean_worse") else ""),
             rho(t, "spearman_randomized"), rho(t, "spearman_signed"),
             "" if t["method"] == RANDOM else str(t.get("n_randomized", "—")), _flag_text(t)] for t in table]
    rand = f.randomization or {}
    images = f"{f.count} image{'s' if f.count != 1 else ''}"
    caption = (f"Faithfulness of each method on the {images} above. Areas: the mean over the {images} (deletion: "
               "lower is better; insertion: higher), † a mean worse than the random order's on the same images "
               f"(flagged where at least {MIN_IMAGES} images are worse). "
               "ρ: Spearman rank correlation of each map with the map of the fully re-initialized model, of |map| "
               "and of the signed map (a sign flip shows only there), mean over the n images whose trained map is "
               "not constant; a map that goes constant counts as changed (ρ = 0). Flagged: a mean ρ of |map| above "
               f"{rand.get('threshold', FaithfulnessConfig.flag_threshold):g} with n ≥ {MIN_IMAGES}."
               + _dashes(table, f))
    return Table(["method", "deletion area ↓", "insertion area ↑", "ρ of |map|", "ρ signed", "n", "flag"], rows,
                 caption=caption, numeric={1, 2, 3, 4, 5})


def _gradcam_text(result: SaliencyResult) -> str:
    g = result.gradcam
    if not g:
        return ""
    return (f" Grad-CAM explains {g['layer']}, a {g['size'][0]}×{g['size'][1]} feature map ({g['reason']}), "
            "upsampled to the input.")


def _intro(result: SaliencyResult) -> str:
    of_class = f" of class {result.class_name}" if result.class_name is not None else ""
    scale = ("one colour scale per method across the rows" if result.scale == "method"
             else "each map on its own colour scale")
    images = " ".join(filter(None, [str(len(result.rows)), result.split, "image(s)"]))
    on_image = [legend_of(m) for m in result.methods if m in overlaid(result.methods, result.overlay)]
    drawn = f"; {', '.join(on_image)} drawn over the image" if on_image else ""
    wrong = sum(_misclassified_row(r) for r in result.rows)
    marked = (f" {wrong} of them misclassified (marked in the row label with the model's prediction)."
              if wrong else "")
    return (f"Attribution maps of {images}{of_class} for every method, {scale}{drawn}.{marked}"
            + _gradcam_text(result) + " Faithfulness: deletion removes pixels in the map's order (a faithful map "
            "makes the probability fall fast: low area), insertion restores them (high area is better); the "
            "randomization check compares each map with the map of the same network re-initialized from the top: "
            "a high rank correlation means the map barely depends on what was learned.")


def _skipped_text(result: SaliencyResult) -> str | None:
    if not result.skipped:
        return None
    return "Left out: " + "; ".join(f"{legend_of(m)}, as {why}" for m, why in result.skipped.items()) + "."


def _page_refs(result: SaliencyResult, stem: str, caption: str, data: dict | None = None) -> list[FigureRef]:
    """The grid's figures, a reference a page, each with the rows it shows."""
    pages = grid_pages(result)
    refs = []
    for rows, page_stem in zip(pages, grid_stems(result, stem)):
        part = f" (rows {rows[0] + 1}–{rows[-1] + 1} of {len(result.rows)}, one colour scale per method over all)" \
            if len(pages) > 1 else ""
        refs.append(FigureRef(page_stem, f"{caption}{part}.", data={"rows": [result.rows[i] for i in rows],
                                                                    "methods": result.methods, **(data or {})}))
    return refs


def section(result: SaliencyResult) -> Section:
    s = Section(ANALYSIS.title, "saliency")
    s.add(Text(_intro(result)), Text(result.note) if result.note else None)
    if result.skipped:
        s.add(Text(_skipped_text(result)))
    of_class = f", class {result.class_name}" if result.class_name is not None else ""
    s.add(*_page_refs(result, "saliency", f"{result.model}: saliency maps{of_class}", {"gradcam": result.gradcam}))
    wrong = result.wrong_result
    if wrong is not None:
        s.add(Text(f"Why it was wrong: {wrong.description}, each explained twice: first for its true class "
                   "(row label: true), then for the class the model said (row label: said)."),
              *_page_refs(wrong, "saliency-wrong", f"{result.model}: saliency of misclassified images, for the true "
                          "class and for the prediction"))
    f = result.faithfulness_result
    if f is None:
        return s
    s.add(_faithfulness_table(result, f))
    s.add(FigureRef("faithfulness", f"{result.model}: deletion and insertion curves per method, with a random "
                    "order as the baseline; the legend's areas are the table's.",
                    data={"fractions": f.fractions, "methods": f.curves}))
    if f.randomization is not None:
        s.add(FigureRef("randomization", f"{result.model}: model-randomization check (Adebayo et al. 2018), rank "
                        "correlation of each method's maps as layers are re-initialized from the top (n: the "
                        "images each line rests on).", data=f.randomization))
        s.add(FigureRef("randomization-maps", f"{result.model}: one image's maps as the model is re-initialized."))
    return s


# ---- the models side by side ---------------------------------------------------------------------------------


def _check_comparable(results: Sequence[SaliencyResult]) -> list[str]:
    """The methods every result has, in the first one's order; the same images and targets, else a ConfigError."""
    if not results:
        raise ConfigError("no saliency results to compare")
    first = results[0]
    for r in results[1:]:
        if r.images.shape != first.images.shape or not torch.equal(r.images, first.images) \
                or r.targets != first.targets:
            raise ConfigError(f"{r.model} and {first.model} explain different images or classes: "
                              "give every model the same images")
    return [m for m in first.methods if all(m in r.methods for r in results)]


# Rows of one page of the side-by-side figure: what a model's own grid holds at the full text
# width (maps ~0.7 in). Three models × four images in one figure made maps of 0.45 in, under
# column titles and colour-bar labels that ran into each other.
COMPARISON_ROWS = 8
COMPARISON_STEM = "saliency-side-by-side"


def comparison_pages(results: Sequence[SaliencyResult]) -> list[list[int]]:
    """The images of each page of the side-by-side figure: as many as fit COMPARISON_ROWS rows
    with a row per model (at least one), in order."""
    per_page = max(1, COMPARISON_ROWS // max(1, len(results)))
    n = len(results[0].images) if results else 0
    return [list(range(s, min(s + per_page, n))) for s in range(0, n, per_page)]


def comparison_stems(results: Sequence[SaliencyResult], stem: str = COMPARISON_STEM) -> list[str]:
    """The figure stem of each page: `stem`, then `stem`-2, -3, ..."""
    return [stem if i == 0 else f"{stem}-{i + 1}" for i in range(len(comparison_pages(results)))]


def comparison_scales(results: Sequence[SaliencyResult]) -> dict:
    """One colour scale per method over every image of every model: (vmin, vmax, clipped)."""
    methods = _check_comparable(results)
    everything = {m: torch.cat([r.maps[m] for r in results]) for m in methods}
    return method_scales(everything)


def comparison_figure(results: Sequence[SaliencyResult], images: Sequence[int] | None = None, page: str = "",
                      scales: dict | None = None, size_rows: int = 0):
    """The same images' maps of every model side by side: a row per image and model (an image's
    models in adjacent rows, the image drawn once), a column per method, ONE colour scale per
    method across every model and every image of the results (a darker pixel means a larger
    value in every model's map, on every page). images: which of them to draw (default all;
    comparison_figures pages them); page: said in the title ("page 1 of 2"); scales:
    comparison_scales(results), when the caller has them."""
    methods = _check_comparable(results)
    first, k = results[0], len(results)
    chosen = list(range(len(first.images))) if images is None else list(images)
    order = [(i, j) for i in chosen for j in range(k)]  # image-major: models adjacent
    maps = {m: torch.stack([results[j].maps[m][i] for i, j in order]) for m in methods}
    scales = scales or comparison_scales(results)
    names = [plain_text(r.model) if len(r.model) <= 18 else plain_text(r.model[:17]) + "…" for r in results]
    per_model = [row_labels(r, names[j]).copy() for j, r in enumerate(results)]
    labels = [per_model[j][i] if j == 0 else per_model[j][i].split("\n", 1)[1] for i, j in order]
    frames = None if first.frames is None else first.frames[chosen].repeat_interleave(k, 0)
    title = (f"{', '.join(plain_text(r.model) for r in results)}: {plain_text(first.description)}; "
             "each model's maps in adjacent rows, one colour scale per method for all models"
             + (f" ({page})" if page else ""))
    return saliency_figure(maps, first.images[chosen].repeat_interleave(k, 0), row_labels=labels, frames=frames,
                           crop_box=tuple(first.crop_box) if first.crop_box else None, scale="method",
                           overlay=first.overlay, title=title, group=k,
                           across="the rows of every model" + (" and page" if page else ""), scales=scales,
                           size_rows=size_rows)


def comparison_figures(results: Sequence[SaliencyResult]) -> Iterator:
    """comparison_figure, a page at a time (comparison_pages), on one colour scale per method:
    drawn as they are asked for, so that a caller saving each page holds one open at a time."""
    pages, scales = comparison_pages(results), comparison_scales(results)
    for p, images in enumerate(pages):  # no-break spaces: the page mark stays on one line
        yield comparison_figure(results, images, f"page\u00a0{p + 1}\u00a0of\u00a0{len(pages)}"
                                if len(pages) > 1 else "", scales, size_rows=len(pages[0]) * len(results))


def comparison_section(results: Sequence[SaliencyResult], stem: str = COMPARISON_STEM) -> Section:
    """The comparison's part: the models' maps of the same images side by side (comparison_figures,
    to be saved under comparison_stems(results, stem)), with what the reader should know to
    compare them."""
    methods = _check_comparable(results)
    first = results[0]
    layers = {r.model: (r.gradcam or {}).get("layer") for r in results if r.gradcam}
    same = len(set(layers.values())) <= 1
    pages = comparison_pages(results)
    text = (f"The same {first.description} for every model ({', '.join(r.model for r in results)}): each image's "
            "maps of the models in adjacent rows, with one colour scale per method shared by all models, so a "
            "darker pixel means a larger value whichever model it comes from (the models' own sections scale "
            "each model alone)." + ("" if same else " Grad-CAM layers: " + ", ".join(
                f"{m}: {layer}" for m, layer in layers.items()) + ".")
            + (f" {len(first.images)} images × {len(results)} models do not fit one page: {len(pages)} figures, "
               "on the same colour scales." if len(pages) > 1 else ""))
    names = ", ".join(r.model for r in results)
    figures = []
    for images, page_stem in zip(pages, comparison_stems(results, stem)):
        which = f"image {images[0] + 1}" if len(images) == 1 else f"images {images[0] + 1}–{images[-1] + 1}"
        part = f" ({which} of {len(first.images)})" if len(pages) > 1 else ""
        figures.append(FigureRef(page_stem, f"Saliency maps of {names} side by side, one colour scale per method "
                                 f"across the models{part}.",
                                 data={"models": [r.model for r in results], "methods": methods,
                                       "rows": [[r.rows[i] for i in images] for r in results]}))
    return Section("Side by side: what each model looks at", "saliency-side-by-side", [Text(text), *figures])


def _format_table(table: list[dict], faithful: bool) -> list[str]:
    if not faithful:
        return [f"{'method':<22}{'img/s':>9}"] + [f"{legend_of(r['method']):<22}{r['images_per_second']:>9.1f}"
                                                  for r in table]
    lines = [f"{'method':<22}{'deletion↓':>10}{'insertion↑':>11}{'ρ |map|':>9}{'ρ signed':>9}{'n':>4}{'img/s':>9}"]
    for r in table:
        rho = r.get("spearman_randomized")
        rho_s = "" if rho is None else rho_text(rho) + ("*" if r.get("flagged") else " ")
        signed = "" if rho is None else ("—" if not is_signed(r["method"]) else rho_text(r.get("spearman_signed")))
        ips = f"{r['images_per_second']:.1f}" if "images_per_second" in r else ""
        lines.append(f"{legend_of(r['method']):<22}"
                     f"{area_text(r['deletion_auc']) + ('†' if r.get('deletion_mean_worse') else ' '):>10}"
                     f"{area_text(r['insertion_auc']) + ('†' if r.get('insertion_mean_worse') else ' '):>11}"
                     f"{rho_s:>9}{signed:>9}{r.get('n_randomized', ''):>4}{ips:>9}")
    lines.append("(areas under the curves, mean over the images, † mean worse than the random order; ρ: Spearman of the "
                 "trained and the re-initialized model's maps over n images, * flagged; — a map ≥ 0: signed = |map|)")
    return lines


def _flagged(f: FaithfulnessResult | None) -> list[str]:
    rand = (f.randomization or {}) if f is not None else {}
    lines = []
    if rand.get("flagged"):
        lines.append("flagged (maps barely change when the model is re-initialized): "
                     + ", ".join(map(legend_of, rand["flagged"])))
    if rand.get("too_few_to_flag"):
        lines.append("too few images to flag (ρ high on fewer than 2): " + ", ".join(map(legend_of, rand["too_few_to_flag"])))
    worse = [f"{legend_of(m)} ({kind})" for m, c in (f.curves.items() if f is not None else [])
             for kind in ("deletion", "insertion") if (c.get(f"{kind}_vs_random") or {}).get("worse")]
    return lines + ([f"worse than the random order on at least {MIN_IMAGES} images: " + ", ".join(worse)]
                    if worse else [])


def summary(result: SaliencyResult) -> list[str]:
    lines = [f"{result.description}: {', '.join(map(legend_of, result.methods))}"]
    if result.skipped:
        lines.append(_skipped_text(result))
    if result.note:
        lines.append(result.note)
    if result.gradcam:
        lines.append(f"grad-cam layer: {result.gradcam['layer']} ({result.gradcam['size'][0]}×"
                     f"{result.gradcam['size'][1]}; {result.gradcam['reason']})")
    for m, c in result.convergence.items():
        lines.append(f"{legend_of(m).lower()}: largest |convergence delta| {c['max_abs_delta']:.3g} "
                     f"({100 * c['max_relative_delta']:.2g}% of f(x) − f(black))")
    if result.wrong is not None:
        lines.append(f"also {result.wrong_result.description}, for the true and the predicted class")
    f = result.faithfulness_result
    return lines + _format_table(result.table(), f is not None) + _flagged(f)


ANALYSIS = Analysis("saliency", "What it looks at", "saliency", Settings, SaliencyResult, run, figures, section, summary,
                    write_files=write_files)
