"""`probe attack`: accuracy against ε under FGSM or PGD for one or more models on one plot, the
adversarial examples of a few images, and every point in results.json."""
from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

import torch

from probe.methods.attacks import METHODS, NORMS, PRECISIONS, check_eps, parse_eps_list, perturbation_size, resolve_precision
from probe.methods.common import class_probabilities
from probe.methods.robustness import robustness_curve
from probe.data.augment import eval_view
from probe.device import cpu_threads, resolve_device
from probe.errors import ConfigError
from probe.figures.attacks import eps_label, examples_figure, robustness_figure
from probe.figures.style import save_figure
from probe.models.folder import load_model_folder
from probe.progress import progress
from probe.tasks.common import REPORTS_ROOT, TaskOutput, load_model_split, output_folder, resolve_model, write_results

DEFAULT_LIMIT = 1000
DEFAULT_STEPS = 40
SUBSET_SEED = 0
# The conventional points of the literature (Madry et al. 2018 for MNIST; CIFAR-10's 2, 4 and
# 8 /255; L2 0.5, 1, 2), and 0: the clean accuracy.
DEFAULT_EPS = {
    ("mnist", "linf"): [0.0, 0.1, 0.2, 0.3],
    ("cifar10", "linf"): [0.0, 2 / 255, 4 / 255, 8 / 255],
    ("sfddd", "linf"): [0.0, 2 / 255, 4 / 255, 8 / 255],
}
DEFAULT_EPS_L2 = [0.0, 0.5, 1.0, 2.0]
IN_255 = ("cifar10", "sfddd")  # datasets whose L∞ ε are written as k/255


@contextlib.contextmanager
def attack_threads(threads: int | None, device) -> Iterator[dict]:
    """CPU threads for an attack or a fooling run (probe.device.cpu_threads), with a
    stricter default: one thread as soon as other processes keep more than cores − 1 busy. The
    gradient steps are many small kernels; two OpenMP threads that share a core with another
    process wait on each other at every one (measured here: PGD on 1,000 MNIST images, 80 s on
    2 threads beside one busy process, 11 s on 1)."""
    why = None
    if threads is None and torch.device(device).type == "cpu" and torch.get_num_threads() > 1:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        cores = os.cpu_count() or 1
        if load > cores - 1:
            threads, why = 1, f"load average {load:.1f} on {cores} cores"
    with cpu_threads(threads, torch.device(device)) as info:
        if why:
            info["why"] = why
        yield info


def default_eps(dataset: str, norm: str) -> list[float]:
    if norm == "l2":
        return list(DEFAULT_EPS_L2)
    return list(DEFAULT_EPS.get((dataset, norm), [0.0, 2 / 255, 4 / 255, 8 / 255]))


def check_attack_options(method: str, norm: str, steps, step_size, restarts, precision: str,
                         limit: int | None, batch_size: int) -> None:
    """ConfigError for any option out of range, before a model or a dataset is read."""
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: use fgsm or pgd")
    if norm not in NORMS:
        raise ConfigError(f"--norm {norm!r}: use linf or l2")
    if precision not in ("auto", *PRECISIONS):
        raise ConfigError(f"--precision {precision!r}: use auto, fp32 or bf16")
    if method == "fgsm":
        given = [name for name, v in (("--steps", steps), ("--step-size", step_size), ("--restarts", restarts))
                 if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: FGSM is one step of size ε; these apply to --method pgd")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: give at least 1 step")
    if restarts is not None and restarts < 1:
        raise ConfigError(f"--restarts {restarts}: give at least 1 (1 = no restart)")
    if step_size is not None and (check_eps(step_size, f"--step-size {step_size}") == 0):
        raise ConfigError(f"--step-size {step_size}: give a step > 0 in pixel units, e.g. 0.01")
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit {limit}: give a number of images ≥ 1, or 0 for the whole split")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: give at least 1")


def subset(n_total: int, limit: int | None, seed: int = SUBSET_SEED) -> torch.Tensor:
    """The first `limit` of a seeded permutation, in ascending order (all when limit is 0/None):
    a representative sample (MNIST's test set puts its harder writers last), the same for
    every model and every run."""
    if not limit or limit >= n_total:
        return torch.arange(n_total)
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return order[:limit].sort().values


def run_attack(models=None, *, method: str = "pgd", norm: str = "linf", eps: str | None = None,
               steps: int | None = None, step_size: float | None = None, targeted: str | None = None,
               restarts: int | None = None, split: str = "test", limit: int | None = DEFAULT_LIMIT,
               data_dir=None, out=None, device: str = "auto", batch_size: int = 500,
               precision: str = "auto", random_start: bool = True, seed: int = 0, examples: int = 6,
               threads: int | None = None, root="trained_models") -> TaskOutput:
    """The `probe attack` command: see the module's docstring. Returns what was written."""
    started = time.perf_counter()
    dev = resolve_device(device)
    check_attack_options(method, norm, steps, step_size, restarts, precision, limit, batch_size)
    precision = resolve_precision(precision, dev)
    with attack_threads(threads, dev) as thread_info:
        return _run_attack(models, method=method, norm=norm, eps=eps, steps=steps, step_size=step_size,
                           targeted=targeted, restarts=restarts, split=split, limit=limit,
                           data_dir=data_dir, out=out, dev=dev, batch_size=batch_size,
                           precision=precision, random_start=random_start, seed=seed,
                           examples=examples, root=root, started=started, thread_info=thread_info)


def _run_attack(models, *, method, norm, eps, steps, step_size, targeted, restarts, split, limit,
                data_dir, out, dev, batch_size, precision, random_start, seed, examples, root, started,
                thread_info) -> TaskOutput:
    eps_given = parse_eps_list(eps) if eps is not None else None
    resolved = [resolve_model(m, root=root) for m in (models or [None])]
    folders = [f for f, _ in resolved]
    names = [f.name for f in folders]
    if len(set(names)) != len(names):
        raise ConfigError(f"--model: the same model is given twice ({', '.join(names)})")
    spec = folders[0].spec
    for f in folders[1:]:
        if f.spec.name != spec.name or f.spec.input_shape != spec.input_shape:
            raise ConfigError(f"--model: {folders[0].name} is a {spec.name} model and {f.name} a "
                              f"{f.spec.name} one; models on one plot must share a dataset")
    target = spec.class_index(targeted) if targeted is not None else None
    eps_list = sorted({0.0, *(eps_given if eps_given is not None else default_eps(spec.name, norm))})
    steps_ = (steps if steps is not None else DEFAULT_STEPS) if method == "pgd" else 1
    restarts_ = (restarts if restarts is not None else 1) if method == "pgd" else 1
    analysis = f"attack-{method}-{norm}" + (f"-to-{spec.classes[target]}" if target is not None else "")
    if out is None and len(folders) > 1:
        out = REPORTS_ROOT / "-vs-".join(names) / analysis
    out = output_folder(folders[0], analysis, out)

    curves, model_rows, whole = [], [], []
    data = None
    for folder in folders:
        data_m = load_model_split(folder, split, data_dir)
        if (data_m.labels < 0).any():
            raise ConfigError(f"the {split!r} split has unlabelled images: accuracy needs labels")
        if data is None:
            data = data_m
            index = subset(len(data), limit)
        elif len(data_m) != len(data) or not torch.equal(data_m.labels, data.labels):
            raise ConfigError(f"--model: {folder.name}'s {split} split differs from {folders[0].name}'s "
                              "(another split seed?): compare the models on the test split")
        net, _ = load_model_folder(folder.path, dev)
        view = eval_view(data_m.images, folder.spec)  # (N, C, H, W) uint8, the network's input
        full_clean = class_probabilities(net, view, batch_size=batch_size).argmax(1)
        whole.append(float((full_clean == data_m.labels).float().mean()))
        n_attacks = sum(e > 0 for e in eps_list)
        with progress(f"{method.upper()} on {folder.name}: {len(index):,} images × {n_attacks} ε") as bar:
            task = bar.add_task("", total=max(1, n_attacks))
            curve = robustness_curve(
                net, view[index], data_m.labels[index], eps_list, method=method, norm=norm, steps=steps_,
                step_size=step_size, random_start=random_start, restarts=restarts_, target=target,
                seed=seed, batch_size=batch_size, precision=precision, examples=examples,
                progress=lambda j, done, m: bar.update(task, completed=j - 1 + done / max(1, m)))
        curves.append((folder.name, curve))
        model_rows.append({"name": folder.name, "path": str(folder.path), "weights_sha256": folder.weights_sha256(),
                           "clean_accuracy_whole_split": whole[-1], "clean_accuracy": curve.clean_accuracy,
                           "points": curve.points(),
                           "examples": _example_records(curve, spec, index)})
        del net

    in_255 = spec.name in IN_255 and norm == "linf"
    figures = []
    norm_name = {"linf": "L∞", "l2": "L2"}[norm]
    what = (f"{method.upper()} {norm_name}" + (f", {steps_} steps" if method == "pgd" else "")
            + (f", targeted at {spec.display_names[target]}" if target is not None else ""))
    figures += save_figure(robustness_figure(curves, in_255=in_255,
                                             title=f"{what}: {len(index):,} {split} images"), out, "robustness")
    for name, curve in curves:
        fig = examples_figure(curve, spec, in_255=in_255, title=f"{name}: {what}")
        if fig is not None:
            figures += save_figure(fig, out, "examples" if len(curves) == 1 else f"examples-{name}")

    settings = curves[0][1].settings | {
        "eps": eps_list, "eps_default": eps_given is None, "split": split, "limit": limit,
        "device": str(dev), "threads": thread_info, "models": names}
    results = {"eps": eps_list, "models": model_rows, "classes": list(spec.classes),
               "target": spec.classes[target] if target is not None else None}
    data_info = {"dataset": spec.name, "split": split, "n": len(index), "n_split": len(data),
                 "subset_seed": SUBSET_SEED if len(index) < len(data) else None,
                 "indices": index.tolist() if len(index) < len(data) else "all"}
    path = write_results(out, analysis, folder=folders[0], settings=settings, results=results,
                         figures=figures, started=started, data=data_info)

    lines = [f"model: {f.path} ({how})" for f, how in resolved]
    step_text = (f"step {step_size:g}" if step_size is not None else "step 2.5·ε/steps")
    lines.append(f"{method.upper()} {norm_name}"
                 + (f", {steps_} steps, {step_text}, {'random start' if random_start else 'no random start'}, "
                    f"{restarts_} restart{'s' if restarts_ > 1 else ''}" if method == "pgd" else "")
                 + (f", targeted at {spec.classes[target]}" if target is not None else "")
                 + f", gradient steps in {precision}, judged in fp32")
    if len(index) < len(data):
        lines.append(f"{len(index):,} of {len(data):,} {split} images (a seeded random subset; "
                     f"--limit 0 attacks all)")
    else:
        lines.append(f"all {len(data):,} {split} images")
    head = ["ε", *(eps_label(e, in_255) for e in eps_list)]
    table = [head] + [[name, *(f"{100 * a:.2f}%" for a in curve.accuracy)] for name, curve in curves]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for r in table:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    for (name, curve), acc in zip(curves, whole):
        lines.append(f"{name}: clean accuracy {100 * acc:.2f}% on all {len(data):,} {split} images "
                     f"(as `probe evaluate`), {100 * curve.clean_accuracy:.2f}% on the {len(index):,} attacked"
                     if len(index) < len(data) else f"{name}: clean accuracy {100 * acc:.2f}% (as `probe evaluate`)")
        if target is not None:
            rates = [p.get("target_rate") for p in curve.points()]
            lines.append(f"  share put in {spec.classes[target]} (images of other classes): "
                         + ", ".join(f"{eps_label(e, in_255)}: {100 * r:.1f}%" for e, r in zip(eps_list, rates) if r is not None))
    seconds = sum(sum(c.seconds) for _, c in curves)
    threads = f"{thread_info['threads']} CPU thread{'s' if thread_info['threads'] > 1 else ''}" + (
        f" ({thread_info['why']})" if thread_info.get("why") else "") if dev.type == "cpu" else str(dev)
    lines.append(f"attacks took {seconds:.1f} s on {threads}; robustness curve and adversarial examples "
                 "(PNG + PDF), results.json")
    return TaskOutput(out, [*figures, path], lines, results)


def _example_records(curve, spec, index: torch.Tensor) -> list[dict]:
    """The example images (attacked afresh at each ε): their index in the split, label, and at
    each ε the class given and the size of the change."""
    out = []
    for row, i in enumerate(curve.example_index.tolist()):
        linf, l2 = perturbation_size(curve.examples[:, row], curve.examples[0, row].expand_as(curve.examples[:, row]))
        out.append({"index": int(index[i]), "label": spec.classes[int(curve.labels[i])],
                    "per_eps": [{"eps": e, "predicted": spec.classes[int(curve.example_predicted[j, row])],
                                 "p_predicted": round(float(curve.example_p[j, row]), 6),
                                 "linf": round(float(linf[j]), 6), "l2": round(float(l2[j]), 6)}
                                for j, e in enumerate(curve.eps)]})
    return out
