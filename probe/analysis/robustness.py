"""How easily a model is fooled: accuracy against ε under FGSM or PGD (L∞ or L2, targeted or
not) for one or more models on one plot, at a fine grid of ε (each image's smallest breaking ε
found by bisection), with a 95% interval per point and the adversarial examples of one image per
class at a few ε where the accuracy falls. A joint analysis: `probe attack --model a --model b` attacks the same
images of each model and draws every curve on one plot."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from probe.analysis.base import (MAX_BATCH, MAX_RESTARTS, MAX_SHOWN, MAX_STEPS, MAX_THREADS, Analysis, Context,
                                 ResultBase, SettingsBase, array_field, by_name, check_choice, check_image_files,
                                 check_int, image_files)
from probe.data.spec import ClassNames
from probe.device import analysis_threads
from probe.errors import ConfigError
from probe.figures.attacks import CURVE_WIDTH, NORM_NAMES, eps_label, examples_figure, robustness_figure
from probe.methods.attacks import (METHODS, NORMS, PRECISIONS, check_linf_eps, parse_eps_list, perturbation_size,
                                   resolve_precision)
from probe.methods.common import class_probabilities, model_device
from probe.methods.robustness import (SEARCHES, SUBSET_SEED, RobustnessCurve, attack_chunk, attack_curve,
                                     attack_examples, chunk_slices, example_eps_of, merge_chunks, pick_examples,
                                     search_steps, subset)
from probe.methods.confusion import wilson_interval
from probe.presentation import FigureRef, Section, Table, Text, pct, slug

SPLITS = ("test", "val", "train")
DEFAULT_LIMIT = 1000
DEFAULT_STEPS = 40
MAX_EPS = 100  # values of ε in one curve
# Fine grids where an undefended model's accuracy falls, each with the conventional points of the
# literature kept: MNIST L∞ 0.1, 0.2, 0.3 (Madry et al. 2018), CIFAR-10's 2, 4, 8 /255, L2 0.5,
# 1 and 2; and 0, the clean accuracy. Bisection (the default search) costs at most
# 1 + ⌈log₂ 12⌉ = 5 attacks per image for 13 values (the largest ε, then bisection below it).
MNIST_LINF = [k / 100 for k in range(11)] + [0.2, 0.3]
IN_255_LINF = [k / 255 for k in (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16)]
MNIST_L2 = [k / 4 for k in range(9)] + [2.5, 3.0]
NATURAL_L2 = [k / 20 for k in range(11)] + [1.0, 2.0]
DEFAULT_EPS = {
    ("mnist", "linf"): MNIST_LINF,
    ("mnist", "l2"): MNIST_L2,
}
IN_255 = ("cifar10", "sfddd")  # datasets whose L∞ ε are written as k/255


def default_eps(dataset: str | None, norm: str) -> list[float]:
    """The dataset's grid: MNIST's, or that of natural images (CIFAR-10, SFDDD, any other)."""
    return list(DEFAULT_EPS.get((dataset, norm), IN_255_LINF if norm == "linf" else NATURAL_L2))


def attack_title(method: str, norm: str) -> str:
    """The one name of an attack in tables, figures and the terminal: "PGD L∞", "FGSM L2"."""
    return f"{method.upper()} {NORM_NAMES[norm]}"


@dataclass(frozen=True)
class Settings(SettingsBase):
    method: str = "pgd"
    norm: str = "linf"
    eps: tuple[float, ...] | None = None  # --eps (a string "0,0.1" or numbers); None: the dataset's points
    steps: int | None = None  # --steps, PGD only (default 40)
    step_size: float | None = None  # --step-size, PGD only (default 2.5·ε/steps)
    restarts: int | None = None  # --restarts, PGD only (default 1)
    targeted: str | int | None = None  # --targeted: a class name, code or index
    split: str = "test"
    limit: int | None = DEFAULT_LIMIT  # --limit: a seeded subset of this many images; 0 or None: all
    precision: str = "auto"  # of the gradient steps: auto, fp32, bf16
    batch_size: int = 500
    seed: int = 0  # of the random starts
    random_start: bool = True
    examples: int = 10  # images shown attacked, per model: one per class first
    search: str = "sweep"  # --search: each image's smallest breaking ε by sweep, by bisection, or nested attacks
    threads: int | None = None  # --threads (default: probe.device.analysis_threads' choice)
    images: tuple[str, ...] | None = None  # --image: the user's own files instead of the split
    label: str | None = None  # --label: the files' true class (None: the first model's prediction)

    def __post_init__(self):
        check_choice("--method", self.method, METHODS)
        object.__setattr__(self, "images", check_image_files(self.images, self.label))
        check_choice("--norm", self.norm, NORMS)
        if self.eps is not None:
            object.__setattr__(self, "eps", tuple(parse_eps_list(self.eps)))
            check_linf_eps(self.eps, self.norm, "--eps")
        if self.method == "fgsm":
            given = [o for o, v in (("--steps", self.steps), ("--step-size", self.step_size),
                                    ("--restarts", self.restarts)) if v is not None]
            if given:
                raise ConfigError(f"{', '.join(given)}: FGSM is one step of size ε; these apply to --method pgd")
        if self.eps is not None and len(self.eps) > MAX_EPS:
            raise ConfigError(f"--eps: {len(self.eps):,} values, at most {MAX_EPS} (an attack each, on every image)")
        if self.steps is not None:
            check_int("--steps", self.steps, 1, MAX_STEPS)
        if self.restarts is not None:
            check_int("--restarts", self.restarts, 1, MAX_RESTARTS, why="1 = no restart")
        if self.step_size is not None:
            object.__setattr__(self, "step_size", _step_size(self.step_size))
        if self.limit is not None:
            check_int("--limit", self.limit, 0, why="0 attacks the whole split")
        check_choice("--precision", self.precision, ("auto", *PRECISIONS))
        check_int("--batch-size", self.batch_size, 1, MAX_BATCH)
        check_choice("--split", self.split, SPLITS)
        check_int("--seed", self.seed, -2 ** 63, 2 ** 64 - 1)  # what torch.Generator.manual_seed takes
        check_int("examples", self.examples, 0, MAX_SHOWN)
        check_choice("--search", self.search, SEARCHES, "sweep: the default; bisect: at most 1 + ⌈log₂(E − 1)⌉ attacks "
                     "per image for E values of ε; nested: one per ε")
        if self.threads is not None:
            check_int("--threads", self.threads, 1, MAX_THREADS)

    def attack_options(self) -> dict:
        """The arguments of probe.methods.robustness.attack_curve these settings give (PGD's
        defaults filled in; FGSM is one step)."""
        pgd = self.method == "pgd"
        return {"method": self.method, "norm": self.norm, "steps": (self.steps or DEFAULT_STEPS) if pgd else 1,
                "step_size": self.step_size, "random_start": self.random_start,
                "restarts": (self.restarts or 1) if pgd else 1, "seed": self.seed,
                "batch_size": self.batch_size, "search": self.search}


def _step_size(value) -> float:
    """--step-size as a float > 0 (a number, or its text), else a ConfigError."""
    try:
        step = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        step = math.nan
    if not 0 < step < math.inf:
        raise ConfigError(f"--step-size {value}: give a step > 0 in pixel units, e.g. 0.01")
    return step


@dataclass
class RobustnessResult(ResultBase):
    """Every model's curve on the same images and ε. `models`: one record per model (name,
    clean_accuracy on the attacked images, clean_accuracy_whole_split (and n_whole_split),
    points: one per ε with accuracy, correct, n, ci95, mean_linf, mean_l2 and, targeted,
    at_target / target_rate; examples: each example image's index, label and class at each ε of
    example_eps; attacks: attacks run, summed over images; seconds per step of the search)."""
    KIND = "robustness"
    models: list[dict]
    classes: list[str]  # slugs
    display_names: list[str]
    codes: list[str]
    eps: list[float]  # ascending, 0 first
    method: str
    norm: str
    steps: int  # 1 for FGSM
    step_size: float | None  # None: 2.5·ε/steps (PGD), ε (FGSM)
    random_start: bool
    restarts: int
    target: str | None  # the target class's slug (targeted attacks)
    seed: int
    precision: str  # of the gradient steps; every image is judged in fp32
    n: int  # images attacked, the same for every model
    eps_in_255: bool = False  # ε written as k/255 (CIFAR-10 and SFDDD L∞)
    search: str = "nested"  # how the curve was found: "bisect" or "nested" (results before issue 15)
    example_eps: list[float] | None = None  # the ε the examples are shown at (0 first); None: all of eps
    dataset: str | None = None
    split: str | None = None
    n_split: int | None = None  # images in the split (n of them attacked)
    indices: list[int] | None = None  # into the split, when a seeded subset was attacked
    threads: dict | None = None  # the CPU threads of the run
    device: str | None = None  # the model's device
    files: list[str] | None = None  # --image: the files attacked (instead of a split)
    labels_from: str | None = None  # --image: where their true classes came from (--label, the prediction)
    example_images: torch.Tensor | None = array_field()  # (Σk, X, C, H, W) float32: each model's examples in turn
    predicted: torch.Tensor | None = array_field()  # (M, E, N) each model's class of each image at each ε

    @property
    def names(self) -> ClassNames:
        return ClassNames(tuple(self.classes), tuple(self.display_names), tuple(self.codes))

    @property
    def model_names(self) -> list[str]:
        return [m["name"] for m in self.models]

    @property
    def title(self) -> str:
        """The attack in words: "PGD L∞, 40 steps, targeted at 3"."""
        return (attack_title(self.method, self.norm) + (f", {self.steps} steps" if self.method == "pgd" else "")
                + (f", targeted at {self.names.display[self.names.index(self.target)]}" if self.target else ""))

    @property
    def shown_eps(self) -> list[float]:
        return list(self.example_eps) if self.example_eps is not None else list(self.eps)

    def attack_words(self) -> str:
        """Every setting of the attack a reader needs: "PGD L∞, 20 steps of size 2.5·ε/20 from a
        random start in the ball, no restart, targeted at 3"."""
        if self.method != "pgd":
            words = f"{attack_title(self.method, self.norm)}, one step of size ε"
        else:
            size = f"{self.step_size:g}" if self.step_size is not None else f"2.5·ε/{self.steps}"
            runs = "no restart" if self.restarts <= 1 else f"best of {self.restarts} runs"
            start = "from a random start in the ball" if self.random_start else "from the clean image"
            words = f"{attack_title(self.method, self.norm)}, {self.steps} steps of size {size} {start}, {runs}"
        target = self.names.display[self.names.index(self.target)] if self.target else None
        return words + (f", targeted at {target}" if target else "")

    def model(self, name: str) -> dict:
        for m in self.models:
            if m["name"] == name:
                return m
        raise ConfigError(f"no model {name!r} in this robustness result: {', '.join(self.model_names)}")

    def examples_of(self, name: str):
        """One model's example images (k, E, C, H, W), their labels (k,) and, per ε, the class the
        model gives each and its probability ((k, E) each), as class indices."""
        start = 0
        for m in self.models:
            k = len(m["examples"])
            if m["name"] == name:
                break
            start += k
        else:
            raise ConfigError(f"no model {name!r} in this robustness result")
        where = {s: i for i, s in enumerate(self.classes)}
        records = m["examples"]
        images = self.example_images[start:start + k] if k else torch.empty(0, len(self.eps), 1, 1, 1)
        return (images, [where[r["label"]] for r in records],
                [[where[p["predicted"]] for p in r["per_eps"]] for r in records],
                [[p["p_predicted"] for p in r["per_eps"]] for r in records])

    def data_info(self) -> dict:
        if self.files is not None:
            return {"source": "files", "files": self.files, "labels": self.labels_from, "n": self.n}
        info = {"split": self.split, "n": self.n, "n_split": self.n_split}
        if self.indices is not None:
            info |= {"subset_seed": SUBSET_SEED, "indices": self.indices}
        elif self.split is not None:
            info["indices"] = "all"
        return {k: v for k, v in info.items() if v is not None}


# ---- the numbers ------------------------------------------------------------------------------


def robustness_curve(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps, *, classes=None,
                     method: str = "pgd", norm: str = "linf", steps: int = 40, step_size=None,
                     random_start: bool = True, restarts: int = 1, target=None, seed: int = 0,
                     batch_size: int = 500, precision: str = "fp32", examples: int = 10,
                     search: str = "sweep", name: str = "model", eps_in_255: bool = False,
                     progress=None) -> RobustnessResult:
    """Accuracy of any nn.Module (mapping [0, 1] images to logits, any dtype and device) on
    `images` attacked at each ε (ε = 0, the clean accuracy, always included), judged in fp32;
    each image's smallest breaking ε of the grid found by a sweep and PGD below it (search="sweep"),
    by bisection ("bisect") or by attacking at every ε in turn ("nested"): see
    probe.methods.robustness. The curve never rises.

    images: (N, C, H, W) uint8 or float [0, 1]; labels (N,) ≥ 0; eps: a number or a list in
    pixel units. classes: names or their number (default: the model's outputs); target: a class
    (index, or name when classes are given) to drive the images to; examples: images shown
    attacked (one per class first). The model's mode, .grad and requires_grad are left as
    found. result.figures() draws it."""
    names = ClassNames.of(classes) if classes is not None else None
    t = None if target is None else by_name(target, classes)
    curve = attack_curve(model, images, labels, eps, method=method, norm=norm, steps=steps,
                         step_size=step_size, random_start=random_start, restarts=restarts, target=t,
                         seed=seed, batch_size=batch_size, precision=precision, examples=examples,
                         search=search, progress=progress)
    names = names if names is not None else ClassNames.of(curve.num_classes)
    if len(names) != curve.num_classes:
        raise ConfigError(f"{len(names)} class names for a model with {curve.num_classes} outputs")
    return _assemble([_model_part(name, curve, names)], curve, names, eps_in_255=eps_in_255,
                     device=str(model_device(model)))


def _model_part(name: str, curve: RobustnessCurve, names: ClassNames, index: torch.Tensor | None = None,
                whole: tuple[int, int] | None = None) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """One model's record, its example images (k, X, C, H, W) float32 and its classes (E, N).
    index: where the attacked images sit in the split; whole: (correct, n) on all of it."""
    s = names.slugs
    examples = curve.examples.transpose(0, 1).float()  # (k, X, C, H, W)
    records = []
    for row, i in enumerate(curve.example_index.tolist()):
        linf, l2 = perturbation_size(examples[row], examples[row, :1].expand_as(examples[row]))  # (X,) each
        records.append({"index": int(index[i]) if index is not None else i, "label": s[int(curve.labels[i])],
                        "per_eps": [{"eps": e, "predicted": s[int(curve.example_predicted[j, row])],
                                     "p_predicted": round(float(curve.example_p[j, row]), 6),
                                     "linf": round(float(linf[j]), 6), "l2": round(float(l2[j]), 6)}
                                    for j, e in enumerate(curve.example_eps)]})
    correct, n = whole if whole is not None else (curve.correct[0], curve.n)
    record = {"name": name, "clean_accuracy": curve.clean_accuracy, "clean_accuracy_whole_split": correct / n,
              "n_whole_split": n, "ci95_whole_split": list(wilson_interval(correct, n)),
              "points": curve.points(), "examples": records, "attacks": curve.attacks,
              "seconds": [round(x, 3) for x in curve.seconds]}
    return record, examples, curve.predicted


def _assemble(parts: list, curve: RobustnessCurve, names: ClassNames, **info) -> RobustnessResult:
    """The result of every model's part (all attacked with the settings of `curve`)."""
    st = curve.settings
    images = torch.cat([p[1] for p in parts])
    return RobustnessResult(
        models=[p[0] for p in parts], classes=list(names.slugs), display_names=list(names.display),
        codes=list(names.codes), eps=list(curve.eps), method=curve.method, norm=curve.norm,
        steps=st["steps"], step_size=None if isinstance(st["step_size"], str) else float(st["step_size"]),
        random_start=st["random_start"], restarts=st["restarts"],
        target=names.slugs[curve.target] if curve.target is not None else None, seed=st["seed"],
        precision=st["precision"], n=curve.n, search=curve.search, example_eps=list(curve.example_eps),
        example_images=images if len(images) else None, predicted=torch.stack([p[2] for p in parts]), **info)


def run(contexts: list[Context], settings: Settings) -> RobustnessResult:
    """Each model attacked on the same images of its split (a seeded subset of --limit); the
    examples of every model shown at the same ε, chosen where the curves fall."""
    contexts = [contexts] if isinstance(contexts, Context) else list(contexts)
    tasks, finish = model_parts(contexts, settings)
    with analysis_threads(settings.threads, contexts[0].device) as threads:
        return finish([task(None) for task in tasks], threads)


def model_parts(contexts: list[Context], settings: Settings):
    """The analysis in two parts: a task per model and chunk of images, its attack (the slow part,
    which a report runs in worker processes beside its other analyses:
    probe.report.build.run_side_by_side; the chunks as attack_curve makes them, so the curve is
    the same), and
    finish(outcomes, threads), which makes the result of their outcomes (the example images
    attacked here, on `threads`: analysis_threads' record). The images are loaded here."""
    contexts = [contexts] if isinstance(contexts, Context) else list(contexts)
    first = contexts[0]
    data, labels_from = _shared_data(contexts, settings)
    index = subset(len(data), settings.limit) if not settings.images else torch.arange(len(data))
    target = first.classes.index(settings.targeted) if settings.targeted is not None else None
    dataset = first.spec.name if first.spec is not None else None
    eps = sorted({0.0, *(settings.eps if settings.eps is not None else default_eps(dataset, settings.norm))})
    precision = resolve_precision(settings.precision, first.device)
    chunks = chunk_slices(len(index), settings.batch_size)
    tasks = [partial(_attack_model, ctx, data if settings.images else ctx.split(settings.split), index, eps, target,
                     precision, settings, (k, len(chunks), part)) for ctx in contexts for k, part in enumerate(chunks)]

    def finish(outcomes: list, threads: dict) -> RobustnessResult:
        runs = []
        for m, ctx in enumerate(contexts):
            mine = outcomes[m * len(chunks):(m + 1) * len(chunks)]
            runs.append((merge_chunks([o[0] for o in mine]), torch.cat([o[1] for o in mine]), mine[0][2]))
            if mine[0][3] is not None:  # computed in a worker: kept for the analyses after
                ctx.keep_split_probabilities(settings.split, mine[0][3])
        # The same images of every model, at the same ε: the first of each class all of them get right.
        shown = example_eps_of(eps, [curve.accuracy for curve, _, _ in runs])
        right = torch.stack([curve.predicted[0] == curve.labels for curve, _, _ in runs]).all(0)
        pick = pick_examples(right, runs[0][0].labels, settings.examples)
        for ctx, (curve, images, _) in zip(contexts, runs):
            attack_examples(ctx.fast_model, images, curve, settings.examples, shown, pick)
        # One list of class names for the joint result: the first model's (the others share its dataset).
        parts = [_model_part(ctx.name, curve, first.classes, index, whole)
                 for ctx, (curve, _, whole) in zip(contexts, runs)]
        return _assemble(parts, runs[0][0], first.classes,
                         eps_in_255=dataset in IN_255 and settings.norm == "linf", dataset=dataset,
                         split=None if settings.images else settings.split,
                         n_split=None if settings.images else len(data),
                         indices=index.tolist() if len(index) < len(data) else None, threads=threads,
                         device=str(first.device), files=data.names if settings.images else None,
                         labels_from=labels_from)
    return tasks, finish


def _shared_data(contexts: list[Context], settings: Settings):
    """The images every model is attacked on, and where their labels came from (None: the split's):
    the split, or the --image files labelled by --label or by the first model's prediction."""
    if not settings.images:
        return _shared_split(contexts, settings.split), None
    first = contexts[0]
    for ctx in contexts[1:]:
        if ctx.spec.input_shape != first.spec.input_shape:
            raise ConfigError(f"--model: {first.name} and {ctx.name} take images of different sizes; "
                              "--image files are attacked on every model at once")
    data, how = image_files(first, settings.images, settings.label, settings.batch_size)
    if settings.label is None and len(contexts) > 1:
        how = how.replace("the model's own prediction", f"{first.name}'s prediction")
    return data, how


def _shared_split(contexts: list[Context], split: str):
    """The split every model is attacked on: one dataset, the same images and labels."""
    first = contexts[0]
    data = first.split(split)
    if (data.labels < 0).any():
        raise ConfigError(f"the {split!r} split has unlabelled images: accuracy needs labels")
    for ctx in contexts[1:]:
        if ctx.spec.name != first.spec.name or ctx.spec.input_shape != first.spec.input_shape:
            raise ConfigError(f"--model: {first.name} is a {first.spec.name} model and {ctx.name} a "
                              f"{ctx.spec.name} one; models on one plot must share a dataset")
        other = ctx.split(split)
        if len(other) != len(data) or not torch.equal(other.labels, data.labels):
            raise ConfigError(f"--model: {ctx.name}'s {split} split differs from {first.name}'s "
                              "(another split seed?): compare the models on the test split")
    return data


def _attack_model(ctx: Context, data, index: torch.Tensor, eps: list[float], target: int | None,
                  precision: str, settings: Settings, chunk: tuple[int, int, slice], report=None):
    """One model and chunk (k, of how many, its slice of `index`): the chunk's curve, its images,
    and, from the first chunk (None from the others), the model's clean accuracy on the whole
    split as (correct, n), as `probe evaluate` counts it, and the split's class probabilities
    (None for --image files). report: progress (default the context's)."""
    report = report or ctx.report
    view = ctx.view(data.images)  # (N, C, H, W) uint8, the network's input
    k, of, part = chunk
    whole = probs = None
    if k == 0:  # once per model
        probs = (class_probabilities(ctx.fast_model, view, batch_size=settings.batch_size) if settings.images
                 else ctx.split_probabilities(settings.split, settings.batch_size))  # the split's: shared
        whole = int((probs.argmax(1) == data.labels).sum()), len(data)
    search = settings.search if settings.method == "pgd" else "nested"
    rounds = search_steps(len(eps), search)
    what = (f"{settings.method.upper()} on {ctx.name}: {len(index):,} images × {len(eps)} ε"
            + (f", part {k + 1} of {of}" if of > 1 else "")
            + (f" by bisection, {rounds} rounds" if search == "bisect" else ""))

    def progress(j, done, m):  # the sweep's rounds end when every image is settled: no known total
        if search == "sweep":
            report(f"{what}, round {j}: {m:,} images", done, m)
        else:
            report(what, j - 1 + done / max(1, m), rounds)
    mine = index[part]
    curve = attack_chunk(ctx.fast_model, view[mine], data.labels[mine], eps, k, target=target, precision=precision,
                         progress=progress, **settings.attack_options())
    return curve, view[mine], whole, None if settings.images else probs


# ---- drawing, the report, the terminal ---------------------------------------------------------


def examples_stem(result: RobustnessResult, name: str) -> str:
    return "examples" if len(result.models) == 1 else f"examples-{slug(name)}"


def figures(result: RobustnessResult) -> dict:
    where = f": {result.n:,} {result.split} images" if result.split else f": {result.n:,} images"
    out = {"robustness": robustness_figure([(m["name"], m["points"]) for m in result.models], norm=result.norm,
                                           targeted=result.target is not None, in_255=result.eps_in_255,
                                           title=result.title + where)}
    for name in result.model_names:
        images, labels, predicted, p = result.examples_of(name)
        fig = examples_figure(images, labels, predicted, p, result.shown_eps, result.names,
                              in_255=result.eps_in_255, title=f"{name}: {result.title}")
        if fig is not None:
            out[examples_stem(result, name)] = fig
    return out


def _images_words(result: RobustnessResult) -> str:
    """"1,000 test images (a seeded random sample of the 10,000)" or "all 60 test images"."""
    split = f"{result.split} " if result.split else ""
    if result.n_split is not None and result.n < result.n_split:
        return f"{result.n:,} {split}images, a seeded random sample of the {result.n_split:,}"
    return f"all {result.n:,} {split}images" if result.n_split is not None else f"{result.n:,} {split}images"


def _search_words(result: RobustnessResult) -> str:
    e = len(result.eps)
    if result.search == "sweep":
        return (f"Each image's smallest breaking ε of the grid ({e} values) was found by search: PGD at the largest ε "
                "first (an image that survives it is robust at every ε of the grid); for an image broken there, a "
                "sweep from the clean image, one gradient step per value of the grid with the ball growing, which "
                "finds an adversarial image inside a smaller ball for most images (proof that the image is broken "
                "from that ε on); then PGD at the next smaller ε, moving down the grid while it succeeds. An image "
                "counts as broken at ε when either attack found an adversarial image inside the ε-ball. Like the "
                "curve itself, this assumes that an image broken at ε stays broken at every larger ε (its "
                "adversarial image lies in every larger ball), and that PGD failing at ε would fail at every "
                "smaller ε.")
    if result.search == "bisect":
        return (f"Each image's smallest breaking ε of the grid was found by search over its {e} values, each "
                "probe one attack at that ε: the largest ε first (an image that survives it is robust at every ε "
                f"of the grid), then bisection below it ({search_steps(e, 'bisect')} attacks per image at most, not "
                f"{e - 1}). Like the curve itself, this assumes that an image broken at ε stays broken at every "
                "larger ε (its adversarial image lies in every larger ball), and that an attack failing at ε "
                "would fail at every smaller ε.")
    return (f"Every image still unbroken was attacked at each of the {e} values of ε in turn; an image broken "
            "at ε keeps its adversarial image at every larger ε, so the curve never rises.")


def _describe(result: RobustnessResult) -> Text:
    stop = " PGD stops on an image as soon as it is broken." if result.method == "pgd" else ""
    return Text(f"{result.attack_words()}, on {_images_words(result)}: accuracy against the size ε of the "
                f"change ({NORM_NAMES[result.norm]}, pixel values in [0, 1]).{stop} Gradient steps in "
                f"{result.precision}, every image judged in fp32. {_search_words(result)} Intervals and bands: "
                "95% Wilson intervals over the attacked images.")


def _clean_words(result: RobustnessResult, models: list[dict]) -> str:
    """"Clean accuracy on these 1,000 images: 99.10% (98.3–99.5%); on all 10,000 test images
    (as probe evaluate says): 99.66% (99.5–99.8%)." (one value per model, in order)."""
    def each(key, ci):
        return ", ".join((f"{m['name']} " if len(models) > 1 else "") + f"{pct(m[key])} ({_interval(ci(m))})"
                         for m in models)
    here = each("clean_accuracy", lambda m: m["points"][0].get("ci95"))
    words = f"Clean accuracy on these {result.n:,} images: {here}"
    n_whole = models[0].get("n_whole_split")
    if n_whole is not None and n_whole != result.n:
        words += (f"; on all {n_whole:,} {result.split or ''} images (as probe evaluate says): "
                  f"{each('clean_accuracy_whole_split', lambda m: m.get('ci95_whole_split'))}").replace("  ", " ")
    return words + "."


def _interval(ci) -> str:
    return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%" if ci else "no interval"


def _model_part_section(result: RobustnessResult, name: str, with_curve: bool) -> Section:
    """One model's table and adversarial examples (and its curve, when it is the only model)."""
    m = result.model(name)
    s = Section(name, f"robustness-{slug(name)}")
    s.add(Text(f"{name}: {_clean_words(result, [m])}"))
    s.add(Table(["ε", "accuracy", "95% interval", "images"],
                [[eps_label(p["eps"], result.eps_in_255), pct(p["accuracy"]), _interval(p.get("ci95")) if p.get("ci95")
                  else "—", f"{p['n']:,}"] for p in m["points"]],
                caption=f"{name}: accuracy under attack on {_images_words(result)}. Attack: {result.attack_words()}. "
                        f"{_clean_words(result, [m])}", numeric={1, 2, 3}))
    if with_curve:
        s.add(FigureRef("robustness", _curve_caption(result), data={"points": m["points"]}, width=CURVE_WIDTH))
    if m["examples"]:
        s.add(FigureRef(examples_stem(result, name), _examples_caption(result, name), data={"examples": m["examples"]}))
    return s


def _curve_caption(result: RobustnessResult) -> str:
    who = "every model on the same" if len(result.models) > 1 else f"{result.models[0]['name']} on"
    band = "bands: 95% Wilson intervals" if len(result.models) > 1 else "band: 95% Wilson interval"
    return (f"Accuracy against ε of {who} {_images_words(result)}. Attack: {result.attack_words()}; {band}. "
            f"{_clean_words(result, result.models)}")


def _examples_caption(result: RobustnessResult, name: str) -> str:
    shown = [eps_label(e, result.eps_in_255) for e in result.shown_eps if e > 0]
    where = ("where the accuracy falls" if len(shown) < len(result.eps) - 1 else "the whole grid")
    who = "every model classifies" if len(result.models) > 1 else "the model classifies"
    return (f"{name}: adversarial examples ({result.attack_words()}): of each class, the first of the {result.n:,} "
            f"attacked images that {who} correctly (its first image where there is none), attacked afresh at "
            f"ε = {', '.join(shown)} ({where}). Under each image the class the model gives it and that class's "
            "probability, red where wrong.")


def model_section(result: RobustnessResult, name: str) -> Section | None:
    """A model's part of the report: the attack, its accuracy under it, its adversarial examples
    (and the curve, when it was attacked alone; several models share the comparison's plot)."""
    if name not in result.model_names:
        return Section(ANALYSIS.title, "robustness", [Text("Not shown: this model was not attacked.")])
    part = _model_part_section(result, name, with_curve=len(result.models) == 1)
    return Section(ANALYSIS.title, "robustness", [_describe(result), *part.children])


def section(result: RobustnessResult) -> Section:
    """The whole run: the attack, every model's curve on one plot and their accuracies side by side."""
    s = Section(ANALYSIS.title, "robustness").add(_describe(result))
    s.add(FigureRef("robustness", _curve_caption(result), data={m["name"]: m["points"] for m in result.models},
                    width=CURVE_WIDTH))
    # the models side by side; each model's own part (with its examples) is in its section
    rows = [[eps_label(e, result.eps_in_255)] + [_with_interval(m["points"][i]) for m in result.models]
            for i, e in enumerate(result.eps)]
    return s.add(Table(["ε", *result.model_names], rows,
                       caption=f"Accuracy under attack, with its 95% interval, on the same {_images_words(result)}. "
                               f"Attack: {result.attack_words()}.", numeric=set(range(1, len(result.models) + 1))))


def _with_interval(point: dict) -> str:
    ci = point.get("ci95")
    return pct(point["accuracy"]) + (f" ({100 * ci[0]:.1f}–{100 * ci[1]:.1f}%)" if ci else "")


def summary(result: RobustnessResult) -> list[str]:
    lines = [f"{result.attack_words()}, gradient steps in {result.precision}, judged in fp32"]
    if result.files is not None:
        lines.append(f"{result.n} file(s), {result.labels_from}")
    elif result.n_split is not None and result.n < result.n_split:
        lines.append(f"{result.n:,} of {result.n_split:,} {result.split} images (a seeded random subset; "
                     "--limit 0 attacks all)")
    else:
        lines.append(f"all {result.n:,} {result.split or ''} images".replace("  ", " "))
    attacks = sum(m.get("attacks", 0) for m in result.models)
    if result.search in ("bisect", "sweep") and attacks:
        how = "bisection" if result.search == "bisect" else "sweep and PGD below it"
        lines.append(f"{len(result.eps)} ε by {how}: {attacks:,} attacks on {result.n * len(result.models):,} "
                     f"images ({attacks / (result.n * len(result.models)):.1f} each; --search nested: up to "
                     f"{len(result.eps) - 1} each)")
    table = [["ε", *result.model_names]] + [[eps_label(e, result.eps_in_255)]
                                           + [f"{100 * m['points'][j]['accuracy']:.2f}%" for m in result.models]
                                           for j, e in enumerate(result.eps)]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in table]
    return lines + [line for m in result.models for line in _model_lines(result, m)] + [_time_line(result)]


def _model_lines(result: RobustnessResult, m: dict) -> list[str]:
    whole = m["clean_accuracy_whole_split"]
    if result.n_split is not None and result.n < result.n_split:
        lines = [f"{m['name']}: clean accuracy {100 * whole:.2f}% on all {result.n_split:,} {result.split} images "
                 f"(as `probe evaluate`), {100 * m['clean_accuracy']:.2f}% on the {result.n:,} attacked"]
    else:
        lines = [f"{m['name']}: clean accuracy {100 * whole:.2f}%"
                 + (" on the files" if result.files is not None else " (as `probe evaluate`)")]
    if result.target is not None:
        lines.append(f"  share put in {result.target} (images of other classes): "
                     + ", ".join(f"{eps_label(p['eps'], result.eps_in_255)}: {100 * p['target_rate']:.1f}%"
                                 for p in m["points"] if p.get("target_rate") is not None))
    return lines


def _time_line(result: RobustnessResult) -> str:
    seconds = sum(sum(m.get("seconds", [])) for m in result.models)
    t = result.threads or {}
    on = (f"{t['threads']} CPU thread{'s' if t['threads'] > 1 else ''}" + (f" ({t['why']})" if t.get("why") else "")
          if result.device == "cpu" and "threads" in t else result.device or "the model's device")
    return f"the curve's attacks took {seconds:.1f} s on {on}"


ANALYSIS = Analysis("robustness", "Robustness", "attack", Settings, RobustnessResult, run, figures, section, summary,
                    joint=True, model_section=model_section, model_parts=model_parts)
