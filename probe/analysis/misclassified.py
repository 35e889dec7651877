"""Where a model fails: every wrong image of a split in a grid (true class upper left, the
prediction lower left, the second choice lower right: the seed's layout), the confusion matrix,
per-class accuracy with 95% Wilson intervals, and the most confused pairs."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from probe.analysis.base import (MAX_BATCH, Analysis, Context, ResultBase, SettingsBase, array_field,
                                 check_choice, check_int)
from probe.data.spec import ClassNames
from probe.errors import ConfigError
from probe.figures.failures import confusion_figure, grid_pages, misclassified_pages, per_class_figure
from probe.methods.common import as_classes, class_probabilities
from probe.methods.confusion import confusion_matrix, wilson_interval
from probe.presentation import FigureRef, Section, Table, Text, pct

SPLITS = ("val", "test", "train")


@dataclass(frozen=True)
class Settings(SettingsBase):
    split: str = "val"
    max_images: int | None = None  # --max: the most confident mistakes only
    batch_size: int = 500

    def __post_init__(self):
        check_choice("--split", self.split, SPLITS)
        if self.max_images is not None:
            check_int("--max", self.max_images, 1, why="or leave --max out for every wrong image")
        check_int("--batch-size", self.batch_size, 1, MAX_BATCH)


@dataclass
class MisclassifiedResult(ResultBase):
    """The wrong images, most confident mistake first (`misclassified`: one record each, class
    slugs), the confusion matrix (row = true class) and per-class accuracy with its interval."""
    KIND = "misclassified"
    model: str
    classes: list[str]  # slugs
    display_names: list[str]
    codes: list[str]
    split: str | None
    n: int  # labelled images
    wrong: int  # before --max
    error: float
    error_ci95: list[float] | None
    misclassified: list[dict]
    confusion_matrix: list[list[int]]
    per_class: list[dict]
    most_confused: list[dict]
    grid_pages: int = 0  # pages of the misclassified grid
    images: torch.Tensor | None = array_field()  # (M, C, H, W) uint8: the wrong images as stored
    probs: torch.Tensor | None = array_field()  # (N, K) float32: every image's class probabilities

    @property
    def names(self) -> ClassNames:
        return ClassNames(tuple(self.classes), tuple(self.display_names), tuple(self.codes))

    @property
    def shown(self) -> int:
        return len(self.misclassified)

    @property
    def confusion_matrix_row_normalized(self) -> list[list[float]]:
        return [[v / max(1, sum(row)) for v in row] for row in self.confusion_matrix]


def misclassified(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, classes=None,
                  max_images: int | None = None, batch_size: int = 500, display_images=None,
                  image_names: list[str] | None = None, name: str = "model", split: str | None = None,
                  progress=None, probs: torch.Tensor | None = None) -> MisclassifiedResult:
    """images: (N, C, H, W) uint8 or float [0, 1], as the model takes them; labels: (N,) int,
    -1 for unlabelled (never counted wrong). classes: names or their number (default: the
    model's outputs). display_images: what the grid shows (default `images`). probs: the model's
    class probabilities (N, K) of these very images, when already computed."""
    if len(images) == 0:
        raise ConfigError("no images to classify: give at least one")
    labels = as_classes(labels, len(images), None, unlabelled=True)
    if max_images is not None:
        check_int("max_images", max_images, 1)
    if not (labels >= 0).any():
        raise ConfigError("no labelled image: nothing can be called misclassified")
    if probs is None:
        probs = class_probabilities(model, images, batch_size=batch_size, progress=progress)  # (N, K)
    elif probs.shape[0] != len(images):
        raise ConfigError(f"probs: {probs.shape[0]} rows for {len(images)} images")
    names = ClassNames.of(classes if classes is not None else probs.shape[1])
    if len(names) != probs.shape[1]:
        raise ConfigError(f"{len(names)} class names for a model with {probs.shape[1]} outputs")
    as_classes(labels, len(images), probs.shape[1], unlabelled=True)
    top_p, top_k = probs.topk(min(2, probs.shape[1]), dim=1)  # (N, 2)
    wrong = (top_k[:, 0] != labels) & (labels >= 0)
    index = wrong.nonzero().flatten()
    # Most confident mistake first; the stable sort keeps image order among equals.
    index = index[torch.sort(top_p[index, 0], descending=True, stable=True).indices]
    total = len(index)
    index = index[:max_images] if max_images is not None else index
    second = top_k[:, 1] if top_k.shape[1] > 1 else top_k[:, 0]
    s = names.slugs
    records = [{"index": i, **({"image": image_names[i]} if image_names is not None else {}),
                "true": s[int(labels[i])], "predicted": s[int(top_k[i, 0])],
                "p_predicted": round(float(top_p[i, 0]), 6), "second": s[int(second[i])],
                "p_second": round(float(probs[i, second[i]]), 6),
                "p_true": round(float(probs[i, labels[i]]), 6)} for i in index.tolist()]
    confusion = confusion_matrix(labels, top_k[:, 0], len(names))
    n = int((labels >= 0).sum())
    shown = display_images if display_images is not None else images
    return MisclassifiedResult(
        model=name, classes=list(s), display_names=list(names.display), codes=list(names.codes),
        split=split, n=n, wrong=total, error=total / n, error_ci95=_interval(n - total, n, flip=True),
        misclassified=records, confusion_matrix=confusion.matrix.tolist(),
        per_class=[r | {"class": s[r["class"]]} for r in confusion.per_class()],
        most_confused=[r | {"true": s[r["true"]], "predicted": s[r["predicted"]]} for r in confusion.most_confused()],
        images=_as_uint8(shown[index]) if len(index) else None, probs=probs, grid_pages=grid_pages(len(records), tuple(shown.shape[-2:]), names))


@dataclass
class ConfusionResult(ResultBase):
    """The confusion matrix (row = true class, column = prediction) of labelled images, per-class
    accuracy with 95% Wilson intervals, and the most confused pairs."""
    KIND = "confusion"
    classes: list[str]
    display_names: list[str]
    codes: list[str]
    matrix: list[list[int]]
    per_class: list[dict]
    most_confused: list[dict]

    def summary(self) -> list[str]:
        n = sum(map(sum, self.matrix))
        correct = sum(row[k] for k, row in enumerate(self.matrix))
        ci = _interval(correct, n)
        return [f"accuracy {100 * correct / max(n, 1):.2f}% of {n:,} labelled images"
                + (f" (95% CI {100 * ci[0]:.2f}–{100 * ci[1]:.2f}%)" if ci else ""),
                *_class_lines(self.most_confused, self.per_class)]

    def figures(self) -> dict:
        names = ClassNames(tuple(self.classes), tuple(self.display_names), tuple(self.codes))
        return {"confusion": confusion_figure(self.matrix, names),
                "confusion-normalized": confusion_figure(self.matrix, names, normalized=True),
                "per-class-accuracy": per_class_figure(self.per_class, names)}


def confusion(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, classes=None,
              batch_size: int = 500) -> ConfusionResult:
    """The confusion matrix of `model` on labelled images (N, C, H, W) in [0, 1] or uint8."""
    r = misclassified(model, images, labels, classes=classes, max_images=1, batch_size=batch_size)
    return ConfusionResult(r.classes, r.display_names, r.codes, r.confusion_matrix, r.per_class, r.most_confused)


def _interval(correct: int, n: int, flip: bool = False) -> list[float] | None:
    ci = wilson_interval(correct, n)
    if ci is None:
        return None
    return [1 - ci[1], 1 - ci[0]] if flip else list(ci)


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().cpu()
    return x if x.dtype == torch.uint8 else (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


def run(ctx: Context, settings: Settings) -> MisclassifiedResult:
    data = ctx.split(settings.split)
    if not (data.labels >= 0).any():
        raise ConfigError(f"the {settings.split!r} split has no labels: nothing can be called misclassified")
    return misclassified(ctx.fast_model, ctx.view(data.images), data.labels, classes=ctx.classes,
                         max_images=settings.max_images, batch_size=settings.batch_size,
                         display_images=data.images, image_names=data.names, name=ctx.name,
                         split=settings.split, probs=ctx.split_probabilities(settings.split, settings.batch_size))


def figures(result: MisclassifiedResult) -> dict:
    title = f"{result.model}: {result.wrong} of {_images(result)} misclassified"
    pages = misclassified_pages(result.misclassified, result.images, result.names, title=title)
    out = dict(zip(page_stems(result), pages))
    matrix = torch.tensor(result.confusion_matrix)
    out["confusion"] = confusion_figure(matrix, result.names)
    out["confusion-normalized"] = confusion_figure(matrix, result.names, normalized=True)
    out["per-class-accuracy"] = per_class_figure(result.per_class, result.names)
    return out


def page_stems(result: MisclassifiedResult) -> list[str]:
    """The grid's figure stems, as figures() names them."""
    if result.grid_pages == 1:
        return ["misclassified"]
    return [f"misclassified-{i:02d}" for i in range(1, result.grid_pages + 1)]


def section(result: MisclassifiedResult) -> Section:
    split = result.split or ""
    s = Section(ANALYSIS.title, "failures")
    s.add(Text(f"{result.wrong} of {_images(result)} are misclassified (error {pct(result.error)}, "
               f"95% interval {pct(result.error_ci95[0])}–{pct(result.error_ci95[1])}). Each wrong image shows "
               "the true class and its probability (upper left), the prediction (lower left, bold) and the "
               "second choice (lower right); most confident mistake first."))
    stems = page_stems(result) if result.misclassified else []
    for i, stem in enumerate(stems, 1):
        suffix = f" (page {i} of {len(stems)})" if len(stems) > 1 else ""
        s.add(FigureRef(stem, f"{result.model}: misclassified {split} images{suffix}.",
                        data={"misclassified": result.misclassified}))
    s.add(FigureRef("confusion", f"{result.model}: confusion matrix on the {split} split (images): the correct "
                    "ones on the grey diagonal, the mistakes coloured on their own scale from 0 to the largest, "
                    "white where none.", data={"classes": result.classes, "matrix": result.confusion_matrix},
                    width=0.75))
    s.add(FigureRef("confusion-normalized", f"{result.model}: confusion matrix, each row as a percentage of "
                    "its true class; mistakes coloured on their own scale, the diagonal grey.", width=0.75,
                    data={"classes": result.classes, "matrix": result.confusion_matrix_row_normalized}))
    s.add(FigureRef("per-class-accuracy", f"{result.model}: accuracy per class with its 95% Wilson interval.",
                    data={"per_class": result.per_class}, width=0.8))
    s.add(Table(["class", "images", "correct", "accuracy", "95% interval"],
                [[c["class"], f"{c['n']:,}", f"{c['correct']:,}", pct(c["accuracy"]),
                  "—" if c["ci95"] is None else f"{100 * c['ci95'][0]:.2f}–{100 * c['ci95'][1]:.2f}%"]
                 for c in result.per_class], caption="Per-class accuracy.", numeric={1, 2, 3, 4}))
    if result.most_confused:
        s.add(Table(["true class", "predicted", "images", "share of the true class"],
                    [[p["true"], p["predicted"], str(p["count"]), pct(p["fraction_of_true"])]
                     for p in result.most_confused], caption="The most confused pairs.", numeric={2, 3}))
    return s


def _images(result: MisclassifiedResult) -> str:
    """"10,000 test images", or "12 images" where no split is known."""
    return f"{result.n:,} {result.split + ' ' if result.split else ''}images"


def summary(result: MisclassifiedResult) -> list[str]:
    return [f"{result.wrong} of {_images(result)} misclassified (error {100 * result.error:.2f}%)"
            + (f"; the {result.shown} most confident shown" if result.shown < result.wrong else ""),
            *_class_lines(result.most_confused, result.per_class)]


def _class_lines(most_confused: list[dict], per_class: list[dict]) -> list[str]:
    """The most confused pairs and the class with the lowest accuracy, with its interval."""
    lines = []
    if most_confused:
        lines.append("most confused: " + ", ".join(f"{p['true']}→{p['predicted']} ×{p['count']}"
                                                   for p in most_confused[:5]))
    scored = [r for r in per_class if r["accuracy"] is not None]
    if scored:
        worst = min(scored, key=lambda r: r["accuracy"])
        lines.append(f"lowest per-class accuracy: {worst['class']} {100 * worst['accuracy']:.2f}% of {worst['n']:,} "
                     f"(95% CI {100 * worst['ci95'][0]:.2f}–{100 * worst['ci95'][1]:.2f}%)")
    return lines


ANALYSIS = Analysis("misclassified", "Where it fails", "misclassified", Settings, MisclassifiedResult, run, figures, section,
                    summary)
