"""`probe report`: run the registry's analyses of one or more models (reusing results already
computed for the same weights, history, data and settings), assemble the tree of sections the
analyses describe, and render it as HTML, PDF and figures.tex."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import probe
from probe.analysis import curves
from probe.analysis.base import MAX_STEPS, Analysis, Context, check_int
from probe.analysis.registry import ANALYSES
from probe.analysis.runner import Outcome, context_for, read_outputs, resolve_model, write_outputs
from probe.device import analysis_threads, resolve_device
from probe.errors import ConfigError, ModelFileError, ProbeError
from probe.experiments.degradation import experiment_section, is_experiment
from probe.io import atomic_write_bytes, atomic_write_json, read_json
from probe.models.folder import ModelFolder
from probe.models.foreign import ForeignModel, sidecar
from probe.parallel import run_tasks, workers_and_why, workers_limit
from probe.progress import progress
from probe.presentation import Report, Section, Text, slug
from probe.report.html import render_html
from probe.report.latex import write_latex
from probe.report.pdf import render_pdf
from probe.report.structure import comparison_section, model_card, place_figures

FORMATS = ("html", "pdf")
CACHE_KEY = ".probe-cache.json"
MAX_KEY_BYTES = 1_000_000  # a cache key is a few hundred bytes


@dataclass
class Step:
    """One analysis of the report with its settings. A joint step runs once on all the models
    (robustness curves on one plot); the others once per model."""
    entry: Analysis
    settings: object
    joint: bool = False
    skip: Callable[[ModelFolder], str | None] = lambda folder: None  # why this model has none
    name: str | None = None  # the report's name for a second step of one analysis (its folder)

    @property
    def analysis(self) -> str:
        return self.name or self.entry.name


@dataclass
class ReportPlan:
    steps: list[Step] = field(default_factory=list)


def hardest_class(folders: list[ModelFolder]) -> str:
    """The class with the lowest mean test accuracy over the models (from their meta.json), so
    that every model's saliency is shown on the same, interesting images."""
    spec = folders[0].spec
    scores = []
    for k in range(spec.num_classes):
        per_class = [(f.metrics.get("test") or {}).get("per_class_accuracy") for f in folders]
        accs = [a[k] for a in per_class if isinstance(a, list) and k < len(a)]
        accs = [a for a in accs if isinstance(a, (int, float))]
        scores.append((sum(accs) / len(accs) if accs else 1.0, k))
    return str(min(scores)[1])  # the index: a class name may be anything a meta.json says


def _no_history(folder: ModelFolder) -> str | None:
    if isinstance(folder, ForeignModel):
        return "no training history: probe did not train this model, so there are no learning curves"
    return None if folder.history() else "no training history (history.json)"


def _no_data(folder: ModelFolder) -> str | None:
    if folder.has_dataset:
        return None
    return (f"no dataset: the model info names none, and this analysis needs one ({{\"dataset\": \"mnist\"}} "
            f"in {sidecar(folder.path).name} names it)")


def skip_for(name: str, entry: Analysis) -> Callable[[ModelFolder], str | None]:
    """Why a model has no section of this analysis (None: it has one)."""
    own = SKIP.get(name, lambda folder: None)
    return lambda folder: own(folder) or (_no_data(folder) if entry.needs_data else None)


# PGD steps of the report's robustness: half of `probe attack`'s 40 (the report's slowest part);
# --attack-steps 40 gives the command's numbers.
REPORT_ATTACK_STEPS = 20

# The report's budgets (keyword arguments of each analysis's Settings, from the models): small
# enough that a report of two models stays near a minute on a 2-core CPU, and every model gets
# the same, so their sections compare image for image. The commands default to more.
REPORT_SETTINGS = {
    "curves": lambda folders: curves.shared_settings(folders),  # every model's curves on the same axes
    "misclassified": lambda folders: {"split": "test"},
    # The first images of the hardest class, correct or not, and the first 4 misclassified ones.
    "saliency": lambda folders: {"class_name": hardest_class(folders), "split": "test", "n": 4, "selection": "any",
                                 "wrong_too": 4},
    "fool-noise": lambda folders: {"n": 2},
    "fool-dataset": lambda folders: {"n": 1, "split": "test"},
    # the fine ε grid on 1,000 test images, each image's smallest breaking ε by the sweep (the default search)
    "robustness": lambda folders: {"method": "pgd", "norm": "linf", "steps": REPORT_ATTACK_STEPS, "limit": 1000,
                                   "split": "test"},
}
# A second step of an analysis with other settings, after the first: fooling images from noise in
# the natural style too (on a robust model they look like the class, on a standard one they stay
# textures: the contrast the raw style alone does not show).
EXTRA_STEPS = {"fool-noise": [("fool-noise-natural", lambda folders: {"n": 1, "style": "natural"})]}
SKIP = {"curves": _no_history}
ONCE_FOR_ALL = {"robustness"}  # every model on one plot: the comparison shows it, each model its part


def default_plan(folders: list[ModelFolder], attack_steps: int | None = None) -> ReportPlan:
    """Every analysis of the registry, in its order, with the report's budgets; a joint one
    (robustness) once for all models, and the models' learning curves also on one plot when
    there are several. No models (a report of an experiment alone): no steps. attack_steps: the
    robustness section's PGD steps (default REPORT_ATTACK_STEPS)."""
    if attack_steps is not None:
        check_int("--attack-steps", attack_steps, 1, MAX_STEPS, why="PGD steps of the robustness section")
    if not folders:
        return ReportPlan()
    steps = []
    for name, entry in ANALYSES.items():
        settings = REPORT_SETTINGS.get(name, lambda f: {})(folders)
        if name == "robustness" and attack_steps is not None:
            settings["steps"] = attack_steps
        steps.append(Step(entry, entry.settings(**settings),
                          joint=name in ONCE_FOR_ALL, skip=skip_for(name, entry)))
        steps += [Step(entry, entry.settings(**settings(folders)), skip=skip_for(name, entry), name=extra)
                  for extra, settings in EXTRA_STEPS.get(name, [])]
    if len(folders) > 1 and all(f.history() for f in folders):
        curves = ANALYSES["curves"]
        steps.append(Step(curves, curves.settings(), joint=True))  # all on one plot
    return ReportPlan(steps)


def cache_key(step: Step, folders: list[ModelFolder], data_dir) -> dict:
    """What a cached result depends on: the models' names (they label figures), the sha256 of
    the weights (of an analysis that loads them) and of the history (of one that draws it), the
    settings, the data folder (of one that reads data) and probe's version."""
    key = {"analysis": step.analysis, "models": [f.name for f in folders],
            "weights_sha256": [f.weights_sha256() if step.entry.needs_model else None for f in folders],
            "history_sha256": [f.history_sha256() if step.entry.reads_history else None for f in folders],
            # class names, the dataset spec and the split rule all come from meta.json
            "meta_sha256": [f.meta_sha256() for f in folders],
            "settings": step.settings.to_json(),
            "data_dir": str(Path(data_dir).resolve()) if data_dir is not None and step.entry.needs_data else None,
            "probe": probe.__version__}
    return json.loads(json.dumps(key))  # as it reads back: tuples are lists in JSON


class Contexts:
    """Each model loaded once for the whole report (and its splits once, by Context's cache)."""

    def __init__(self, data_dir, device: str, hook):
        self.data_dir, self.device, self.hook, self._made = data_dir, device, hook, {}
        self.seconds: dict[str, float] = {}  # per analysis, summed over models: what the time went to
        self.wall = 0.0  # wall seconds in analyses (models side by side counted once)
        self.side_by_side: tuple[int, float] | None = None  # (processes, wall seconds) of the models' analyses
        self.one_process: str | None = None  # why they ran one after another, where they could have not

    def report_to(self, hook) -> None:
        """Progress to `hook` from now on, of the models loaded and those to come (a worker's)."""
        self.hook = hook
        for ctx in self._made.values():
            ctx.progress = hook

    def __call__(self, folder: ModelFolder, needs_model: bool = True) -> Context:
        if not needs_model:
            return Context.of(None, folder=folder, data_dir=self.data_dir, progress=self.hook)
        if folder.path not in self._made:
            self._made[folder.path] = context_for(folder, device=self.device, data_dir=self.data_dir,
                                                  hook=self.hook)
        return self._made[folder.path]


# What a damaged cached result (results.json edited or cut, arrays.safetensors of another run)
# raises when the report makes its section: such a cache is not used, the analysis runs again.
_BAD_RESULT = (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError, OverflowError)


def read_cached(entry: Analysis, out: Path, names: list[str]):
    """The Result cached in `out`, checked by making of it what the report makes (its section,
    its summary, a joint analysis's part of each model's section): a ModelFileError naming
    results.json when it cannot be used."""
    result = read_outputs(entry, out)
    try:
        entry.section(result)
        entry.summary(result)
        if entry.model_section is not None:
            for name in names:
                entry.model_section(result, name)
    except _BAD_RESULT as e:
        raise ModelFileError(f"{out / 'results.json'}: a cached {entry.name} result that cannot be shown "
                             f"({type(e).__name__}: {str(e)[:200]}); it is made again") from None
    return result


def cached_run(step: Step, folders: list[ModelFolder], out: Path, contexts: Contexts):
    """The step's Result, from the cache when its key is unchanged; else run, written, and the key
    written after it (a half-finished rerun never looks cached)."""
    key = cache_key(step, folders, contexts.data_dir)
    key_path = out / CACHE_KEY
    if key_path.is_file():
        try:
            if read_json(key_path, "a report cache key", MAX_KEY_BYTES, ModelFileError) == key:
                return read_cached(step.entry, out, [f.name for f in folders]), True
        except (OSError, ProbeError):
            pass  # unreadable, or a result that cannot be shown: run again
    started = time.perf_counter()
    ctxs = [contexts(f, step.entry.needs_model) for f in folders]
    result = step.entry.execute(ctxs if step.joint or step.entry.joint else ctxs[0], step.settings)
    _store(step, folders, out, result, started, contexts, key)
    return result, False


def _store(step: Step, folders: list[ModelFolder], out: Path, result, started: float, contexts: Contexts,
           key: dict | None = None) -> None:
    """A step's result written into its cache folder, the key last (a half-written result never
    looks cached), and its time counted."""
    (out / CACHE_KEY).unlink(missing_ok=True)  # an older result's key must not vouch for this one's files
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(step.entry, result, out, settings=step.settings, folders=folders, started=started,
                  device=str(contexts(folders[0]).device) if step.entry.needs_model else None)
    atomic_write_json(out / CACHE_KEY, key or cache_key(step, folders, contexts.data_dir))
    spent = time.perf_counter() - started
    contexts.seconds[step.analysis] = contexts.seconds.get(step.analysis, 0.0) + spent
    contexts.wall += spent


def _cache_holds(step: Step, folders: list[ModelFolder], out: Path, contexts: Contexts) -> bool:
    """Whether `out` holds this step's result under its present key (the result itself unread)."""
    try:
        return read_json(out / CACHE_KEY, "a report cache key", MAX_KEY_BYTES,
                         ModelFileError) == cache_key(step, folders, contexts.data_dir)
    except (OSError, ProbeError):
        return False


def run_side_by_side(folders: list[ModelFolder], steps: list[Step], joint: list[Step], out: Path,
                     contexts: Contexts) -> int:
    """The models' analyses not in the cache in worker processes side by side, where
    probe.parallel gives more than one (on a CPU): each model's `steps`, and of a joint step
    that has model_parts (robustness), its parts (each model's attack, in chunks of images),
    finished here. They go into the report's cache, from which the report then reads them. The
    per-model analyses run many small kernels and draw figures, which scale badly over threads; an
    attack scales well, but beside them the cores stay busy. Returns how many results were made.
    A per-model step that fails in a worker is left to the report, which runs it again and says why."""
    pending = [(folder, step) for step in sorted(steps, key=_longest_first) for folder in folders
               if not step.skip(folder) and not _cache_holds(step, [folder], _step_out(out, folder, step), contexts)]
    parted = [step for step in joint if step.entry.model_parts is not None and step.entry.needs_model
              and getattr(step.settings, "threads", None) is None
              and not _cache_holds(step, folders, _joint_out(out, step), contexts)]
    workers, why = workers_and_why(len(pending) + len(parted) * len(folders), contexts.device)
    if workers < 2:
        contexts.one_process = why
        return 0
    _load_before_fork(pending, parted, folders, contexts)
    started = time.perf_counter()
    parts, tasks = [], []
    for step in parted:  # the attacks first: the longest tasks
        part_tasks, finish = step.entry.model_parts([contexts(f) for f in folders], step.settings)
        parts.append((step, finish, len(part_tasks)))
        tasks += [partial(_timed, task) for task in part_tasks]
    hook = contexts.hook
    outcomes = run_tasks([*tasks, *(partial(_one_step, folder, step, out, contexts) for folder, step in pending)],
                         workers, hook)
    contexts.report_to(hook)  # a step run here (_one_step) had it report through run_tasks
    contexts.side_by_side = (workers, time.perf_counter() - started)
    contexts.wall += contexts.side_by_side[1]
    for step, finish, n in parts:
        done, outcomes = outcomes[:n], outcomes[n:]
        _finish_joint(step, finish, done, folders, out, contexts, workers)
    for (_, step), (made, seconds) in zip(pending, outcomes):
        if made:
            contexts.seconds[step.analysis] = contexts.seconds.get(step.analysis, 0.0) + seconds
    return len(parts) + sum(made for made, _ in outcomes)


def _timed(task, report) -> tuple[object, float]:
    started = time.perf_counter()
    return task(report), time.perf_counter() - started


def _finish_joint(step: Step, finish, done: list, folders: list[ModelFolder], out: Path, contexts: Contexts,
                  workers: int) -> None:
    """A joint step made of its model parts' outcomes (finish runs here, on this process's
    threads) and stored; its time counts the parts' too."""
    started = time.perf_counter()
    with analysis_threads(None, contexts(folders[0]).device):
        result = finish([outcome for outcome, _ in done],
                        {"threads": 1, "why": f"the attacks in chunks in {workers} processes beside the report's other "
                                              "analyses, one thread each; the first on more once the others were done"})
    _store(step, folders, _joint_out(out, step), result, started, contexts)
    contexts.seconds[step.analysis] += sum(seconds for _, seconds in done)


def _joint_out(out: Path, step: Step) -> Path:
    # beside analyses/, not in it: no model's name can land on a joint analysis's folder
    return out / "joint-analyses" / step.analysis


# The report's per-model analyses that take longest, in that order: handed out first, so that the
# workers end together (one thread, a demo MNIST model: fool-dataset and saliency 7-9 s each,
# misclassified and the natural fooling images 2-3 s, the others about 1 s).
LONGEST_FIRST = ("fool-dataset", "saliency", "misclassified", "fool-noise-natural")


def _longest_first(step: Step) -> int:
    return LONGEST_FIRST.index(step.analysis) if step.analysis in LONGEST_FIRST else len(LONGEST_FIRST)


def _step_out(out: Path, folder: ModelFolder, step: Step) -> Path:
    return out / "analyses" / folder.name / step.analysis


def _load_before_fork(pending: list[tuple[ModelFolder, Step]], joint: list[Step], folders: list[ModelFolder],
                      contexts: Contexts) -> None:
    """Each model, and its class probabilities on the splits its steps read, made here once (on
    every thread) for the workers to inherit, rather than once in each worker."""
    for folder, step in [*pending, *((folder, step) for step in joint for folder in folders)]:
        if step.entry.needs_model:
            ctx = contexts(folder)
            split = getattr(step.settings, "split", None)
            if step.entry.needs_data and split is not None and not getattr(step.settings, "images", None):
                try:
                    ctx.split_probabilities(split)
                except ProbeError:
                    pass  # the step says it when it runs


def _one_step(folder: ModelFolder, step: Step, out: Path, contexts: Contexts, report) -> tuple[bool, float]:
    """In a worker: one model's step into the cache; whether it was made here, and its seconds
    (returned, not counted: run here instead, for a worker that died, it would count twice)."""
    contexts.report_to(report)
    counted = dict(contexts.seconds), contexts.wall
    started = time.perf_counter()
    try:
        _, was_cached = cached_run(step, [folder], _step_out(out, folder, step), contexts)
    except ProbeError:
        return False, 0.0  # the report meets it again in its own run, and says it
    finally:
        contexts.seconds, contexts.wall = counted
    return not was_cached, time.perf_counter() - started


def default_folder(names: list[str]) -> str:
    """reports/<this>: the model's name, or the names joined by -vs-; where that is longer than a
    file name may be, their anchors (each at most 64 characters) and a hash of all of them."""
    joined = "-vs-".join(names)
    if len(joined.encode("utf-8", "surrogatepass")) <= 200:
        return joined
    shown = "-vs-".join(slug(n)[:40] for n in names)[:180]
    return f"{shown}-{hashlib.sha256(joined.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def _check_request(models, formats, out, root, experiments=()) -> tuple[list[ModelFolder], Path]:
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ConfigError(f"--format {','.join(formats)}: use html, pdf or html,pdf")
    folders = [resolve_model(m, root=root)[0] for m in (models or ([] if experiments else [None]))]
    names = [f.name for f in folders] + [Path(e).name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"the same model twice: {', '.join(names)}")
    anchors = [slug(n) for n in names]  # every id and figure file of a model starts with it
    clash = [n for n, a in zip(names, anchors) if anchors.count(a) > 1 or a == "comparison"]
    if clash:
        raise ConfigError(f"model names {', '.join(map(repr, clash))} give the same anchor in the report "
                          "(or the comparison's): rename a model folder")
    out = Path(out) if out is not None else Path("reports") / default_folder(names)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return folders, out


def model_sections(folder: ModelFolder, steps: list[Step], out: Path, contexts: Contexts, joint: list,
                   tick: Callable[[str], None], left_out: list = ()) -> tuple[Section, int, dict]:
    """One model's part of the report: its card, then each analysis's section (figures placed
    from the analysis's folder), then its part of the joint analyses (and why a joint analysis
    left out for a model is not there: left_out, (step, why) pairs). Also returns its results
    by analysis name, for the comparison."""
    prefix = slug(folder.name)
    top = Section(folder.name, prefix).add(model_card(folder, prefix))
    reused, results = 0, {}
    for step in steps:
        tick(f"{folder.name}: {step.analysis}")
        why_not = step.skip(folder)
        if why_not:
            top.add(Section(step.entry.title, f"{prefix}-{step.analysis}", [Text(f"Not shown: {why_not}.")]))
            continue
        step_out = _step_out(out, folder, step)
        result, was_cached = cached_run(step, [folder], step_out, contexts)
        reused += was_cached
        results[step.analysis] = result
        top.add(place_figures(step.entry.section(result), step_out, prefix, step.analysis))
    for step, result, step_out in joint:
        part = step.entry.model_section(result, folder.name) if step.entry.model_section else None
        if part is not None:
            top.add(place_figures(part, step_out, prefix, step.analysis))
    for step, why in left_out:
        top.add(Section(step.entry.title, f"{prefix}-{step.analysis}", [Text(f"Not shown: {why}.")]))
    return top, reused, results


def _joint_skip(step: Step, folders: list[ModelFolder]) -> str | None:
    """Why a joint analysis (every model on one plot) is left out: the first model's reason."""
    return next((f"{f.name}: {why}" if len(folders) > 1 else why
                 for f in folders for why in [step.skip(f)] if why), None)


def split_experiments(models, experiments=()) -> tuple[list | None, list[Path]]:
    """(models, experiments): an experiment folder given as a model (its experiment.json says
    so) goes with the experiments; no models but experiments: a report of the experiments alone."""
    found = [Path(m) for m in models or [] if isinstance(m, (str, Path)) and is_experiment(m)]
    rest = [m for m in models or [] if not (isinstance(m, (str, Path)) and is_experiment(m))]
    return rest or None, [*map(Path, experiments or []), *found]


def experiment_sections(experiments: list[Path], data_dir, device) -> list[Section]:
    """Each experiment folder's section (probe.experiments.degradation), its figures placed."""
    out = []
    for folder in experiments:
        section, figures = experiment_section(folder, data_dir=data_dir, device=device)
        out.append(place_figures(section, figures, slug(folder.name), "degradation"))
    return out


def _render(report: Report, out: Path, formats) -> list[Path]:
    files = write_latex(report, out)
    if "html" in formats:
        # a name with bytes that are not UTF-8 (lone surrogates) must not stop the report
        atomic_write_bytes(out / "report.html", render_html(report).encode("utf-8", "replace"))
        files.append(out / "report.html")
    if "pdf" in formats:
        files.append(render_pdf(report, out / "report.pdf"))
    return files


def _time_line(spent: list[tuple[str, float]], contexts: Contexts, seconds: float) -> str:
    """What the report's time went to: each analysis (summed over the models), how the models'
    analyses ran, and the rest."""
    side = contexts.side_by_side
    return ("time: " + ", ".join(f"{name} {t:.0f} s" for name, t in spent)
            + (f" (the per-model analyses ran side by side in {side[0]} processes for {side[1]:.0f} s; "
               "their times are summed over the processes)" if side else "")
            + (f" (the per-model analyses in one process: {contexts.one_process})" if contexts.one_process else "")
            + f", the rest (loading, HTML, PDF, LaTeX) {seconds - contexts.wall:.0f} s")


def _subtitle(folders: list[ModelFolder], experiments) -> str:
    """What the report is of: the models' analyses, then any experiments (alone: the experiments)."""
    if not folders:
        return f"Experiments: {', '.join(e.name for e in experiments)}."
    return ("What the network looks at, how easily it is fooled, and where it fails: "
            f"{', '.join([*(f'{f.name} ({f.spec.name})' for f in folders), *(e.name for e in experiments)])}.")


def _plan_of(plan: ReportPlan | None, folders: list[ModelFolder], attack_steps: int | None) -> ReportPlan:
    if plan is not None and attack_steps is not None:
        raise ConfigError("attack_steps: give it in the plan's robustness settings, or leave out the plan")
    return plan or default_plan(folders, attack_steps)


def run_report(models=None, *, data_dir=None, out=None, formats=FORMATS, root="trained_models",
               device: str = "auto", plan: ReportPlan | None = None, experiments=(),
               workers: int | None = None, attack_steps: int | None = None) -> Outcome:
    """experiments: experiment folders (probe experiment degradation) whose sections follow the
    models' (an experiment folder among `models` counts as one). workers: processes for several
    models' analyses side by side (--workers; default one per free core: probe.parallel).
    attack_steps: the robustness section's PGD steps (default_plan's; not with `plan`)."""
    started = time.perf_counter()
    formats = tuple(formats)
    device = resolve_device(device)  # a bad --device fails before any work
    models, experiments = split_experiments(models, experiments)
    folders, out = _check_request(models, formats, out, root, experiments)
    plan = _plan_of(plan, folders, attack_steps)
    per_model = [st for st in plan.steps if not st.joint]
    joint_steps = [st for st in plan.steps if st.joint]
    sections, reused, joint, per_model_results = [], 0, [], []
    with workers_limit(workers), progress("report") as bar:
        task = bar.add_task("", total=len(folders) * len(per_model) + len(joint_steps))

        def hook(description, done, total=None):
            bar.update(task, description=description)

        def tick(description):
            bar.update(task, description=description, advance=1)
        contexts = Contexts(data_dir, device, hook)
        left_out = [(st, why) for st in joint_steps for why in [_joint_skip(st, folders)] if why]
        joint_run = [st for st in joint_steps if not _joint_skip(st, folders)]
        made_side_by_side = run_side_by_side(folders, per_model, joint_run, out, contexts)
        reused -= made_side_by_side  # read from the cache below, but made in this run
        for step in joint_run:
            tick(f"{step.analysis} (all models)")
            step_out = _joint_out(out, step)
            result, was_cached = cached_run(step, folders, step_out, contexts)
            reused += was_cached
            joint.append((step, result, step_out))
        for folder in folders:
            top, n, results = model_sections(folder, per_model, out, contexts, joint, tick, left_out)
            sections.append(top)
            per_model_results.append(results)
            reused += n
    if len(folders) > 1:
        sections.insert(0, comparison_section(folders, joint, per_model_results, out / "joint-analyses"))
    elif sections:
        sections[0].title = f"Model {folders[0].name}"
    sections += experiment_sections(experiments, data_dir, device)
    names = [f.name for f in folders] + [e.name for e in experiments]
    report = Report("probe report: " + " vs ".join(names), _subtitle(folders, experiments), sections,
                    time.strftime("%Y-%m-%d %H:%M"))
    files = _render(report, out, formats)
    seconds = time.perf_counter() - started
    spent = sorted(contexts.seconds.items(), key=lambda kv: -kv[1])
    lines = [f"{len(report.figures())} figures from {len(per_model) * len(folders) + len(joint_steps)} analyses "
             f"({reused} reused from the cache) in {seconds:.0f} s",
             *([_time_line(spent, contexts, seconds)] if spent else []),
             *(f"open {p}" for p in files if p.suffix in (".html", ".pdf"))]
    side = contexts.side_by_side
    return Outcome(out, {"seconds": seconds, "reused": reused, "figures": len(report.figures()),
                         "analysis_seconds": dict(spent),
                         "side_by_side": {"processes": side[0], "seconds": side[1], "made": made_side_by_side}
                         if side else None}, files, lines)
