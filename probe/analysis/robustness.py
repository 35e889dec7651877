"""How easily a model is fooled: accuracy against ε under FGSM or PGD (L∞ or L2, targeted or
not) for one or more models on one plot, with a 95% interval per point and the adversarial
examples of a few images. A joint analysis: `probe attack --model a --model b` attacks the same
images of each model and draws every curve on one plot."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from probe.analysis.base import (Analysis, Context, ResultBase, SettingsBase, array_field,
                                 check_choice, check_int)
from probe.data.spec import ClassNames
from probe.device import analysis_threads
from probe.errors import ConfigError
from probe.figures.attacks import NORM_NAMES, eps_label, examples_figure, robustness_figure
from probe.methods.attacks import (METHODS, NORMS, PRECISIONS, check_eps, parse_eps_list, perturbation_size,
                                   resolve_precision)
from probe.methods.common import class_probabilities, model_device
from probe.methods.robustness import SUBSET_SEED, RobustnessCurve, attack_curve, subset
from probe.presentation import FigureRef, Section, Table, Text, pct, slug

SPLITS = ("test", "val", "train")
DEFAULT_LIMIT = 1000
DEFAULT_STEPS = 40
# The conventional points of the literature (Madry et al. 2018 for MNIST; CIFAR-10's 2, 4 and
# 8 /255; L2 0.5, 1, 2), and 0: the clean accuracy.
DEFAULT_EPS = {
    ("mnist", "linf"): [0.0, 0.1, 0.2, 0.3],
    ("cifar10", "linf"): [0.0, 2 / 255, 4 / 255, 8 / 255],
    ("sfddd", "linf"): [0.0, 2 / 255, 4 / 255, 8 / 255],
}
DEFAULT_EPS_L2 = [0.0, 0.5, 1.0, 2.0]
IN_255 = ("cifar10", "sfddd")  # datasets whose L∞ ε are written as k/255


def default_eps(dataset: str | None, norm: str) -> list[float]:
    if norm == "l2":
        return list(DEFAULT_EPS_L2)
    return list(DEFAULT_EPS.get((dataset, norm), [0.0, 2 / 255, 4 / 255, 8 / 255]))


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
    examples: int = 6  # images shown attacked at each ε, per model
    threads: int | None = None  # --threads (default: probe.device.analysis_threads' choice)

    def __post_init__(self):
        check_choice("--method", self.method, METHODS)
        check_choice("--norm", self.norm, NORMS)
        if self.eps is not None:
            object.__setattr__(self, "eps", tuple(parse_eps_list(self.eps)))
        if self.method == "fgsm":
            given = [o for o, v in (("--steps", self.steps), ("--step-size", self.step_size),
                                    ("--restarts", self.restarts)) if v is not None]
            if given:
                raise ConfigError(f"{', '.join(given)}: FGSM is one step of size ε; these apply to --method pgd")
        if self.steps is not None:
            check_int("--steps", self.steps, 1)
        if self.restarts is not None:
            check_int("--restarts", self.restarts, 1, why="1 = no restart")
        if self.step_size is not None and check_eps(self.step_size, f"--step-size {self.step_size}") == 0:
            raise ConfigError(f"--step-size {self.step_size}: give a step > 0 in pixel units, e.g. 0.01")
        if self.limit is not None:
            check_int("--limit", self.limit, 0, why="0 attacks the whole split")
        check_choice("--precision", self.precision, ("auto", *PRECISIONS))
        check_int("--batch-size", self.batch_size, 1)
        check_choice("--split", self.split, SPLITS)
        check_int("--seed", self.seed, -2 ** 63, 2 ** 64 - 1)  # what torch.Generator.manual_seed takes
        check_int("examples", self.examples, 0)
        if self.threads is not None:
            check_int("--threads", self.threads, 1)

    def attack_options(self) -> dict:
        """The arguments of probe.methods.robustness.attack_curve these settings give (PGD's
        defaults filled in; FGSM is one step)."""
        pgd = self.method == "pgd"
        return {"method": self.method, "norm": self.norm, "steps": (self.steps or DEFAULT_STEPS) if pgd else 1,
                "step_size": self.step_size, "random_start": self.random_start,
                "restarts": (self.restarts or 1) if pgd else 1, "seed": self.seed,
                "batch_size": self.batch_size, "examples": self.examples}


@dataclass
class RobustnessResult(ResultBase):
    """Every model's curve on the same images and ε. `models`: one record per model (name,
    clean_accuracy on the attacked images, clean_accuracy_whole_split, points: one per ε with
    accuracy, correct, n, ci95, mean_linf, mean_l2 and, targeted, at_target / target_rate;
    examples: each example image's index, label and per-ε class; seconds per ε)."""
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
    dataset: str | None = None
    split: str | None = None
    n_split: int | None = None  # images in the split (n of them attacked)
    indices: list[int] | None = None  # into the split, when a seeded subset was attacked
    threads: dict | None = None  # the CPU threads of the run
    device: str | None = None  # the model's device
    example_images: torch.Tensor | None = array_field()  # (Σk, E, C, H, W) float32: each model's examples in turn
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
                     batch_size: int = 500, precision: str = "fp32", examples: int = 6,
                     name: str = "model", eps_in_255: bool = False, progress=None) -> RobustnessResult:
    """Accuracy of any nn.Module (mapping [0, 1] images to logits, any dtype and device) on
    `images` attacked at each ε (ε = 0, the clean accuracy, always included), judged in fp32;
    attacks nested (see probe.methods.robustness.attack_curve), so the curve never rises.

    images: (N, C, H, W) uint8 or float [0, 1]; labels (N,) ≥ 0; eps: a number or a list in
    pixel units. classes: names or their number (default: the model's outputs); target: a class
    (index, or name when classes are given) to drive the images to. The model's mode, .grad and
    requires_grad are left as found. result.figures() draws it."""
    names = ClassNames.of(classes) if classes is not None else None
    t = None if target is None else (names.index(target) if names is not None else int(target))
    curve = attack_curve(model, images, labels, eps, method=method, norm=norm, steps=steps,
                         step_size=step_size, random_start=random_start, restarts=restarts, target=t,
                         seed=seed, batch_size=batch_size, precision=precision, examples=examples,
                         progress=progress)
    names = names if names is not None else ClassNames.of(curve.num_classes)
    if len(names) != curve.num_classes:
        raise ConfigError(f"{len(names)} class names for a model with {curve.num_classes} outputs")
    return _assemble([_model_part(name, curve, names)], curve, names, eps_in_255=eps_in_255,
                     device=str(model_device(model)))


def _model_part(name: str, curve: RobustnessCurve, names: ClassNames, index: torch.Tensor | None = None,
                whole: float | None = None) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """One model's record, its example images (k, E, C, H, W) float32 and its classes (E, N).
    index: where the attacked images sit in the split; whole: the clean accuracy on all of it."""
    s = names.slugs
    examples = curve.examples.transpose(0, 1).float()  # (k, E, C, H, W)
    records = []
    for row, i in enumerate(curve.example_index.tolist()):
        linf, l2 = perturbation_size(examples[row], examples[row, :1].expand_as(examples[row]))  # (E,) each
        records.append({"index": int(index[i]) if index is not None else i, "label": s[int(curve.labels[i])],
                        "per_eps": [{"eps": e, "predicted": s[int(curve.example_predicted[j, row])],
                                     "p_predicted": round(float(curve.example_p[j, row]), 6),
                                     "linf": round(float(linf[j]), 6), "l2": round(float(l2[j]), 6)}
                                    for j, e in enumerate(curve.eps)]})
    record = {"name": name, "clean_accuracy": curve.clean_accuracy,
              "clean_accuracy_whole_split": whole if whole is not None else curve.clean_accuracy,
              "points": curve.points(), "examples": records, "seconds": [round(x, 3) for x in curve.seconds]}
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
        precision=st["precision"], n=curve.n, example_images=images if len(images) else None,
        predicted=torch.stack([p[2] for p in parts]), **info)


def run(contexts: list[Context], settings: Settings) -> RobustnessResult:
    """Each model attacked on the same images of its split (a seeded subset of --limit)."""
    contexts = [contexts] if isinstance(contexts, Context) else list(contexts)
    first = contexts[0]
    data = _shared_split(contexts, settings.split)
    index = subset(len(data), settings.limit)
    target = first.classes.index(settings.targeted) if settings.targeted is not None else None
    dataset = first.spec.name if first.spec is not None else None
    eps = sorted({0.0, *(settings.eps if settings.eps is not None else default_eps(dataset, settings.norm))})
    with analysis_threads(settings.threads, first.device) as threads:
        precision = resolve_precision(settings.precision, first.device)
        parts = [_attack_model(ctx, ctx.split(settings.split), index, eps, target, precision, settings)
                 for ctx in contexts]
    return _assemble([p[:3] for p in parts], parts[0][3], first.classes,
                     eps_in_255=dataset in IN_255 and settings.norm == "linf", dataset=dataset,
                     split=settings.split, n_split=len(data),
                     indices=index.tolist() if len(index) < len(data) else None, threads=threads,
                     device=str(first.device))


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
                  precision: str, settings: Settings):
    """One model: its clean accuracy on the whole split (as `probe evaluate`), and its curve on
    the attacked subset. Returns its part of the result and its curve."""
    view = ctx.view(data.images)  # (N, C, H, W) uint8, the network's input
    whole = float((class_probabilities(ctx.model, view, batch_size=settings.batch_size).argmax(1)
                   == data.labels).float().mean())
    attacks = max(1, sum(e > 0 for e in eps))
    what = f"{settings.method.upper()} on {ctx.name}: {len(index):,} images × {attacks} ε"
    curve = attack_curve(ctx.model, view[index], data.labels[index], eps, target=target, precision=precision,
                         progress=lambda j, done, m: ctx.report(what, j - 1 + done / max(1, m), attacks),
                         **settings.attack_options())
    return (*_model_part(ctx.name, curve, ctx.classes, index, whole), curve)


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
        fig = examples_figure(images, labels, predicted, p, result.eps, result.names, in_255=result.eps_in_255,
                              title=f"{name}: {result.title}")
        if fig is not None:
            out[examples_stem(result, name)] = fig
    return out


def _describe(result: RobustnessResult) -> Text:
    start = (f"{result.steps} steps, {'random start' if result.random_start else 'no random start'}"
             if result.method == "pgd" else "one step of size ε")
    target = f", targeted at {result.target}" if result.target else ""
    return Text(f"{attack_title(result.method, result.norm)}, {start}{target}, on {result.n:,} "
                f"{result.split or ''} images: accuracy against the size ε of the change (pixel values in [0, 1]).")


def _model_part_section(result: RobustnessResult, name: str, with_curve: bool) -> Section:
    """One model's table and adversarial examples (and its curve, when it is the only model)."""
    m = result.model(name)
    s = Section(name, f"robustness-{slug(name)}")
    s.add(Text(f"{name}: clean accuracy on the whole split {pct(m['clean_accuracy_whole_split'])}, "
               "as probe evaluate says."))
    s.add(Table(["ε", "accuracy", "95% interval", "images"],
                [[eps_label(p["eps"], result.eps_in_255), pct(p["accuracy"]),
                  f"{100 * p['ci95'][0]:.1f}–{100 * p['ci95'][1]:.1f}%" if p.get("ci95") else "—", f"{p['n']:,}"]
                 for p in m["points"]], caption=f"{name}: accuracy under attack.", numeric={1, 2, 3}))
    if with_curve:
        s.add(FigureRef("robustness", f"{name}: accuracy against ε.", data={"points": m["points"]}, width=0.75))
    if m["examples"]:
        s.add(FigureRef(examples_stem(result, name), f"{name}: adversarial examples at each ε.",
                        data={"examples": m["examples"]}))
    return s


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
    caption = (f"Accuracy against ε of every model on the same {result.n:,} {result.split or ''} images "
               f"({result.title})." if len(result.models) > 1 else f"{result.models[0]['name']}: accuracy against ε.")
    s.add(FigureRef("robustness", caption, data={m["name"]: m["points"] for m in result.models}, width=0.75))
    # the models side by side; each model's own part (with its examples) is in its section
    rows = [[eps_label(e, result.eps_in_255)] + [_with_interval(m["points"][i]) for m in result.models]
            for i, e in enumerate(result.eps)]
    return s.add(Table(["ε", *result.model_names], rows, caption="Accuracy under attack with its 95% interval.",
                       numeric=set(range(1, len(result.models) + 1))))


def _with_interval(point: dict) -> str:
    ci = point.get("ci95")
    return pct(point["accuracy"]) + (f" ({100 * ci[0]:.1f}–{100 * ci[1]:.1f}%)" if ci else "")


def summary(result: RobustnessResult) -> list[str]:
    step = f"step {result.step_size:g}" if result.step_size is not None else "step 2.5·ε/steps"
    lines = [attack_title(result.method, result.norm)
             + (f", {result.steps} steps, {step}, {'random start' if result.random_start else 'no random start'}, "
                f"{result.restarts} restart{'s' if result.restarts > 1 else ''}" if result.method == "pgd" else "")
             + (f", targeted at {result.target}" if result.target else "")
             + f", gradient steps in {result.precision}, judged in fp32"]
    if result.n_split is not None and result.n < result.n_split:
        lines.append(f"{result.n:,} of {result.n_split:,} {result.split} images (a seeded random subset; "
                     "--limit 0 attacks all)")
    else:
        lines.append(f"all {result.n:,} {result.split or ''} images".replace("  ", " "))
    head = ["ε", *(eps_label(e, result.eps_in_255) for e in result.eps)]
    table = [head] + [[m["name"], *(f"{100 * p['accuracy']:.2f}%" for p in m["points"])] for m in result.models]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in table]
    return lines + [line for m in result.models for line in _model_lines(result, m)] + [_time_line(result)]


def _model_lines(result: RobustnessResult, m: dict) -> list[str]:
    whole = m["clean_accuracy_whole_split"]
    if result.n_split is not None and result.n < result.n_split:
        lines = [f"{m['name']}: clean accuracy {100 * whole:.2f}% on all {result.n_split:,} {result.split} images "
                 f"(as `probe evaluate`), {100 * m['clean_accuracy']:.2f}% on the {result.n:,} attacked"]
    else:
        lines = [f"{m['name']}: clean accuracy {100 * whole:.2f}% (as `probe evaluate`)"]
    if result.target is not None:
        lines.append(f"  share put in {result.target} (images of other classes): "
                     + ", ".join(f"{eps_label(p['eps'], result.eps_in_255)}: {100 * p['target_rate']:.1f}%"
                                 for p in m["points"] if p.get("target_rate") is not None))
    return lines


def _time_line(result: RobustnessResult) -> str:
    seconds = sum(sum(m["seconds"]) for m in result.models)
    t = result.threads or {}
    on = (f"{t['threads']} CPU thread{'s' if t['threads'] > 1 else ''}" + (f" ({t['why']})" if t.get("why") else "")
          if result.device == "cpu" and "threads" in t else result.device or "the model's device")
    return f"attacks took {seconds:.1f} s on {on}"


ANALYSIS = Analysis("robustness", "Robustness", "attack", Settings, RobustnessResult, run, figures, section, summary,
                    joint=True, model_section=model_section)
