"""`probe report`: run the analyses of one or more models (reusing results already computed for
the same weights, data and settings), assemble the tree, render HTML, PDF and figures.tex."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from probe.errors import ConfigError
from probe.io import atomic_write_json
from probe.models.folder import ModelFolder
from probe.presentation import Report, Section, Text, slug
from probe.tasks.common import TaskOutput, resolve_model

FORMATS = ("html", "pdf")
CACHE_KEY = ".probe-cache.json"


@dataclass
class Step:
    """One analysis for the report: what to run, with which settings, and how its results
    become a section. A per-model step runs once per model (run(path, out=, data_dir=, **settings));
    a group step once for all of them (run([paths], ...)), e.g. robustness curves on one plot."""
    analysis: str
    run: Callable[..., object]
    settings: dict
    section: Callable[..., Section | None]  # per model: (results, out, prefix, name); group: (results, out, folder, prefix)
    needs_data: bool = True
    skip: Callable[[ModelFolder], str | None] = lambda folder: None  # why this model has none
    group: bool = False


@dataclass
class ReportPlan:
    steps: list[Step] = field(default_factory=list)


def cached_run(step: Step, folders: list[ModelFolder], out: Path, data_dir) -> tuple[dict, bool]:
    """results.json of the step, from the cache when its key (the models' names, the sha256 of
    their weights and history, settings, data folder, probe version) is unchanged; else the step
    is run and the key written after it."""
    import probe
    # The names label figures and legends; the training history is what learning curves draw.
    key = {"analysis": step.analysis, "models": [f.name for f in folders],
           "weights_sha256": [f.weights_sha256() for f in folders],
           "history_sha256": [f.history_sha256() for f in folders],
           "settings": step.settings,
           "data_dir": str(Path(data_dir).resolve()) if data_dir is not None and step.needs_data else None,
           "probe": probe.__version__}
    key_path, results_path = out / CACHE_KEY, out / "results.json"
    if key_path.is_file() and results_path.is_file():
        try:
            if json.loads(key_path.read_text()) == key:
                return json.loads(results_path.read_text()), True
        except (OSError, json.JSONDecodeError):
            pass
    if key_path.exists():
        key_path.unlink()  # a half-finished rerun must not look cached
    target = [f.path for f in folders] if step.group else folders[0].path
    step.run(target, out=out, data_dir=data_dir, **step.settings)
    atomic_write_json(key_path, key)
    return json.loads(results_path.read_text()), False


def hardest_class(folders: list[ModelFolder]) -> str:
    """The class with the lowest mean test accuracy over the models (from their meta.json), so
    that every model's saliency is shown on the same, interesting images."""
    spec = folders[0].spec
    scores = []
    for k, name in enumerate(spec.classes):
        accs = [((f.metrics.get("test") or {}).get("per_class_accuracy") or [None] * spec.num_classes)[k]
                for f in folders]
        accs = [a for a in accs if isinstance(a, (int, float))]
        scores.append((sum(accs) / len(accs) if accs else 1.0, k))
    return str(min(scores)[1])  # the index: a class name may be anything a meta.json says


def default_plan(folders: list[ModelFolder]) -> ReportPlan:
    """The analyses of a report, with settings that keep it to a minute or two on a laptop CPU.
    Every model gets the same settings, so their sections compare image for image."""
    from probe.report.structure import (curves_section, failures_section, fooling_section,
                                        robustness_section, saliency_section)
    from probe.tasks.attacks import run_attack
    from probe.tasks.fooling import run_fool
    from probe.tasks.curves import run_learning_curves
    from probe.tasks.failures import run_misclassified
    from probe.tasks.saliency import run_saliency
    plan = ReportPlan()
    plan.steps.append(Step("curves", lambda path, out, data_dir: run_learning_curves([path], out=out),
                           {}, curves_section, needs_data=False,
                           skip=lambda f: None if f.history() else "no training history (history.json)"))
    plan.steps.append(Step("misclassified",
                           lambda path, **kw: run_misclassified(path, **kw),
                           {"split": "test"}, failures_section))
    # The first images of one class, correct or not: identical inputs for every model compared.
    plan.steps.append(Step("saliency", lambda path, **kw: run_saliency(path, **kw),
                           {"class_name": hardest_class(folders), "split": "test", "n": 4,
                            "selection": "any"}, saliency_section))
    # Small budgets: a report of two models stays under two minutes on a 2-core CPU. The
    # commands themselves default to more (probe fool: 4 per target; probe attack: 1,000 images).
    plan.steps.append(Step("fool-noise", lambda path, **kw: run_fool(path, **kw),
                           {"source": "noise", "n": 2}, fooling_section, needs_data=False))
    plan.steps.append(Step("fool-dataset", lambda path, **kw: run_fool(path, **kw),
                           {"source": "dataset", "n": 1, "split": "test"}, fooling_section))
    plan.steps.append(Step("robustness", lambda paths, **kw: run_attack(paths, **kw),
                           {"method": "pgd", "norm": "linf", "steps": 20, "limit": 200, "split": "test"},
                           robustness_section, group=True))
    if len(folders) > 1 and all(f.history() for f in folders):
        # Their learning curves on one plot, for the comparison (no per-model part).
        plan.steps.append(Step("curves", lambda paths, out, data_dir: run_learning_curves(paths, out=out),
                               {}, lambda *args: None, needs_data=False, group=True))
    return plan


def run_report(models=None, *, data_dir=None, out=None, formats=FORMATS, root="trained_models",
               progress_bar: bool = True, plan: ReportPlan | None = None) -> TaskOutput:
    from probe.progress import progress
    from probe.report.structure import model_card
    started = time.perf_counter()
    formats = tuple(formats)
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ConfigError(f"--format {','.join(formats)}: use html, pdf or html,pdf")
    folders = [resolve_model(m, root=root)[0] for m in (models or [None])]
    names = [f.name for f in folders]
    if len(set(names)) != len(names):
        raise ConfigError(f"the same model twice: {', '.join(names)}")
    out = Path(out) if out is not None else Path("reports") / ("-vs-".join(names) if len(names) > 1 else names[0])
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    plan = plan or default_plan(folders)
    per_model = [st for st in plan.steps if not st.group]
    groups = [st for st in plan.steps if st.group]
    sections, lines, reused = [], [], 0
    with progress("report") as bar:
        task = bar.add_task("", total=len(folders) * len(per_model) + len(groups))
        group_results = []
        for step in groups:
            bar.update(task, description=f"{step.analysis} (all models)")
            # beside analyses/, not in it: no model's name can land on a joint analysis's folder
            step_out = out / "joint-analyses" / step.analysis
            results, was_cached = cached_run(step, folders, step_out, data_dir)
            reused += was_cached
            group_results.append((step, results, step_out))
            bar.advance(task)
        for folder in folders:
            prefix = slug(folder.name)
            top = Section(folder.name if len(folders) > 1 else f"Model {folder.name}", prefix)
            top.add(model_card(folder, prefix))
            for step in per_model:
                bar.update(task, description=f"{folder.name}: {step.analysis}")
                why_not = step.skip(folder)
                if why_not:
                    top.add(Section(step.analysis.capitalize(), f"{prefix}-{slug(step.analysis)}",
                                    [Text(f"Not shown: {why_not}.")]))
                else:
                    step_out = out / "analyses" / folder.name / step.analysis
                    results, was_cached = cached_run(step, [folder], step_out, data_dir)
                    reused += was_cached
                    top.add(step.section(results, step_out, prefix, folder.name))
                bar.advance(task)
            for step, results, step_out in group_results:
                top.add(step.section(results, step_out, folder, prefix))
            sections.append(top)
    if len(folders) > 1:
        from probe.report.structure import comparison_section
        sections.insert(0, comparison_section(folders, out, group_results))
    title = ("probe report: " + " vs ".join(names))
    subtitle = ("What the network looks at, how easily it is fooled, and where it fails: "
                f"{', '.join(f'{f.name} ({f.spec.name})' for f in folders)}.")
    report = Report(title, subtitle, sections, time.strftime("%Y-%m-%d %H:%M"))
    files = []
    from probe.report.latex import write_latex
    files.append(write_latex(report, out))
    if "html" in formats:
        from probe.io import atomic_write_text
        from probe.report.html import render_html
        atomic_write_text(out / "report.html", render_html(report))
        files.append(out / "report.html")
    if "pdf" in formats:
        from probe.report.pdf import render_pdf
        files.append(render_pdf(report, out / "report.pdf"))
    seconds = time.perf_counter() - started
    lines.append(f"{len(report.figures())} figures from {len(per_model) * len(folders) + len(groups)} analyses "
                 f"({reused} reused from the cache) in {seconds:.0f} s")
    lines += [f"open {p}" for p in files if p.suffix in (".html", ".pdf")]
    return TaskOutput(out, files, lines, {"seconds": seconds, "reused": reused})
