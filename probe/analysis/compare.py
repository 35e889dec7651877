"""`probe compare`: the runs side by side in one table (architecture, parameters, dataset,
epochs, train time, val and test error, images/s) and the training settings that differ. It
reads only meta.json (history.json for the epochs of an older folder): no weights, no data.

Not in the registry: the report builds its comparison table from the same `compare_row` and
`compare_cells` (and `timing_note` under it); `COMPARE` is the entry that lets the runner write
its results.json.

The test errors compared (`compare_errors`, `errors_section`): from each model's misclassified
result on the same split, every error with its 95% Wilson interval and, for each pair, the
images both get wrong, the ones only one gets wrong and an exact McNemar test."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from probe.analysis.base import Analysis, Context, ResultBase, SettingsBase
from probe.analysis.misclassified import MisclassifiedResult
from probe.analysis.runner import MODELS_ROOT, Outcome, run_joint
from probe.errors import ConfigError
from probe.methods.confusion import mcnemar_exact, wilson_interval
from probe.models.folder import ModelFolder
from probe.presentation import Section, Table, Text, pct
from probe.text import text_table

# The training settings worth naming when they differ between the runs compared.
SETTINGS = ("dataset", "arch", "width", "epochs", "iters", "batch_size", "lr", "schedule", "warmup_iters",
            "momentum", "nesterov", "weight_decay", "label_smoothing", "augment", "adversarial", "adv_eps",
            "adv_steps", "precision", "seed", "split_seed", "split_by", "train_images")
SPLIT_BY_DATASETS = ("sfddd", "folder")  # where --split-by changes the split (MNIST, CIFAR-10: a fixed test set)
COMPARE_COLUMNS = ["run", "architecture", "params", "dataset", "epochs", "train time", "val err",
                   "test err", "images/s"]
COMPARE_NUMERIC = {2, 4, 5, 6, 7, 8}
NOTE = "train time: training and validation, all sessions of the run; images/s: training only"


@dataclass(frozen=True)
class Settings(SettingsBase):
    """compare has no options."""


@dataclass
class CompareResult(ResultBase):
    """One row per run (compare_row), the settings that differ, and the table as the terminal
    shows it."""
    KIND = "compare"
    runs: list[dict]
    differing_settings: dict[str, list]
    table: str

    def figures(self) -> dict:
        return figures(self)

    def summary(self) -> list[str]:
        return summary(self)


def _arch(meta: dict) -> str:
    width = (meta.get("arch") or {}).get("width", 1.0)
    return str(meta.get("arch_name", "?")) + (f" ×{width:g}" if width != 1.0 else "")


def _error(meta: dict, split: str, key: str = "error") -> float | None:
    return ((meta.get("metrics") or {}).get(split) or {}).get(key)


def compare_row(folder: ModelFolder, label: str | None = None) -> dict:
    """The numbers of one run, from its meta.json (history.json for the epochs when the meta
    lacks them)."""
    meta = folder.meta
    epochs = meta.get("epochs_done")
    if epochs is None:
        epochs = len({r["epoch"] for r in folder.history()}) or None
    params = meta.get("parameters")
    return {
        "run": label or folder.name, "path": str(folder.path), "dataset": folder.spec.name,
        "arch": meta.get("arch_name"), "width": (meta.get("arch") or {}).get("width", 1.0),
        "architecture": _arch(meta),
        "parameters": params if isinstance(params, int) and not isinstance(params, bool) else None,
        "epochs": epochs, "best_epoch": meta.get("best_epoch"),
        "wall_seconds": meta.get("wall_seconds"), "train_seconds": meta.get("train_seconds"),
        "images_per_second": meta.get("images_per_second"),
        "load_average": meta.get("load_average") if isinstance(meta.get("load_average"), dict) else None,
        "val_error": _error(meta, "val"), "test_error": _error(meta, "test"),
        "val_n": _error(meta, "val", "n"), "test_n": _error(meta, "test", "n"),
        "train": _settings(folder),
    }


def _settings(folder: ModelFolder) -> dict:
    train = folder.train_config
    meta = folder.meta
    out = {k: train[k] for k in SETTINGS if k in train}
    if not train.get("adversarial"):  # ε and steps of an attack that did not run
        out = {k: v for k, v in out.items() if k not in ("adv_eps", "adv_steps")}
    if train.get("adversarial") == "fgsm-rs":  # one step, whatever adv_steps says
        out.pop("adv_steps", None)
    if not out.get("warmup_iters"):  # 0, or none recorded: no warm-up either way
        out.pop("warmup_iters", None)
    if train.get("dataset") not in SPLIT_BY_DATASETS:
        out.pop("split_by", None)
    if isinstance(meta.get("precision"), str):  # what ran, not "auto"
        out["precision"] = meta["precision"]
    size = (meta.get("split_sizes") or {}).get("train")
    # split_seed as the split loader reads it (models from before split_seed: the seed)
    return out | {"split_seed": folder.split_seed} | ({"train_images": size} if isinstance(size, int) else {})


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def compare_cells(rows: list[dict]) -> list[list[str]]:
    """The compare table's cells, for the terminal and for the report alike."""
    return [[r["run"], r["architecture"], "—" if r["parameters"] is None else f"{r['parameters']:,}",
             r["dataset"], "—" if r["epochs"] is None else str(r["epochs"]), _duration(r["wall_seconds"]),
             pct(r["val_error"]), pct(r["test_error"]),
             "—" if r["images_per_second"] is None else f"{r['images_per_second']:,.0f}"] for r in rows]


def compare_text(rows: list[dict]) -> str:
    return text_table(COMPARE_COLUMNS, compare_cells(rows), COMPARE_NUMERIC)


def _load(load: dict | None) -> str | None:
    """"load 3.1 → 2.9 on 16 CPUs": the 1-minute load average at the start and end of training."""
    def first(v):
        return f"{v[0]:.1f}" if isinstance(v, list) and v and isinstance(v[0], (int, float)) else "?"
    if not load or not (load.get("start") or load.get("end")):
        return None
    cpus = load.get("cpus")
    return (f"load {first(load.get('start'))} → {first(load.get('end'))}"
            + (f" on {cpus} CPUs" if isinstance(cpus, int) else ""))


def timing_note(rows: list[dict]) -> str:
    """The line under the table: train time and images/s were measured on shared machines; the
    1-minute load average at the start and end of each run's training where meta.json has it."""
    loads = [(r["run"], _load(r.get("load_average"))) for r in rows]
    known = [f"{run}: {load}" for run, load in loads if load]
    unknown = [run for run, load in loads if not load]
    line = "Train time and images/s were measured on shared machines"
    if known:
        line += " (1-minute load average at the start → end of training: " + "; ".join(known)
        line += (f"; not recorded for {', '.join(unknown)}" if unknown else "") + ")"
    return line + ": they are not comparable across runs" + (", except at a similar load." if known else ".")


def _error_interval(error, n) -> str | None:
    """"0.37–0.78% (n = 5,000)": the 95% Wilson interval of an error measured on n images."""
    if not isinstance(error, (int, float)) or isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return None
    low, high = wilson_interval(n - round(error * n), n)
    return f"{100 * (1 - high):.2f}–{100 * (1 - low):.2f}% (n = {n:,})"


def error_note(rows: list[dict]) -> str | None:
    """The 95% intervals of the table's val and test errors, with the images behind each."""
    parts = []
    for r in rows:
        found = [f"{split} {ci}" for split in ("val", "test")
                 if (ci := _error_interval(r.get(f"{split}_error"), r.get(f"{split}_n")))]
        if found:
            parts.append(f"{r['run']} " + ", ".join(found))
    return ("95% Wilson intervals of the errors: " + "; ".join(parts) + ".") if parts else None


def table_parts(rows: list[dict], caption: str = "") -> list:
    """The comparison table, the intervals of its errors (where meta.json has their n) and the
    timing note under it, for the report."""
    caption = caption or "The models side by side (train time: training and validation; images/s: training only)."
    note = error_note(rows)
    return [Table(COMPARE_COLUMNS, compare_cells(rows), numeric=COMPARE_NUMERIC, caption=caption),
            *([Text(note)] if note else []), Text(timing_note(rows))]


def differing_settings(rows: list[dict]) -> dict[str, list]:
    """The training settings that are not the same in every run: {setting: [value per run]}."""
    keys = [k for k in SETTINGS if any(k in r["train"] for r in rows)]
    return {k: [r["train"].get(k) for r in rows] for k in keys
            if len({repr(r["train"].get(k)) for r in rows}) > 1}


def compare(folders: list[ModelFolder], labels: list[str] | None = None) -> CompareResult:
    """The table of model folders (labels: their names in it; default the folder names)."""
    rows = [compare_row(f, label) for f, label in zip(folders, labels or [None] * len(folders))]
    return CompareResult(rows, differing_settings(rows), compare_text(rows))


def run(ctx: Context | list[Context], settings: Settings) -> CompareResult:
    contexts = [ctx] if isinstance(ctx, Context) else list(ctx)
    return compare([c.folder for c in contexts], [c.name for c in contexts])


def figures(result: CompareResult) -> dict:
    return {}


def section(result: CompareResult) -> Section:
    return Section("Comparison", "comparison").add(*table_parts(result.runs))


def summary(result: CompareResult) -> list[str]:
    lines = [result.table]
    if len(result.runs) > 1:
        differ = "; ".join(f"{k} " + " / ".join("—" if v is None else str(v) for v in values)
                           for k, values in result.differing_settings.items())
        lines.append(f"settings that differ: {differ or 'none'}")
    intervals = error_note(result.runs)
    return [*lines, NOTE, *([intervals] if intervals else []), timing_note(result.runs)]


COMPARE = Analysis("compare", "Comparison", "compare", Settings, CompareResult, run, figures, section, summary,
                   needs_data=False, needs_model=False, joint=True)


def run_compare(runs, *, out=None, root=MODELS_ROOT) -> Outcome:
    """`probe compare`: reports/<run>/table/ (reports/compare/table/ for several runs) or --out."""
    return run_joint(COMPARE, runs, Settings(), out=out, root=root, folder="table")


# ---- the test errors compared ---------------------------------------------------------------

ALPHA = 0.05  # the significance level the words use


def _wrong(result: MisclassifiedResult) -> dict[int, dict]:
    """{image index: its record} of every image the model gets wrong."""
    if result.shown < result.wrong:
        raise ConfigError(f"{result.model}: only {result.shown} of its {result.wrong} mistakes were kept "
                          "(--max): compare results of misclassified run without --max")
    return {r["index"]: r for r in result.misclassified}


def _check_same_images(results: list[MisclassifiedResult], wrong: list[dict[int, dict]]) -> None:
    """The results must be of the same labelled images: same split, count, classes, and the same
    true class (and image name, where known) wherever two models are wrong on one image."""
    first = results[0]
    for r in results[1:]:
        if (r.split, r.n, r.classes) != (first.split, first.n, first.classes):
            raise ConfigError(f"{first.model} and {r.model} were not run on the same images "
                              f"({first.n:,} {first.split} vs {r.n:,} {r.split}, or other classes): "
                              "their errors cannot be compared image by image")
    seen: dict[int, tuple] = {}
    for r, w in zip(results, wrong):
        for i, rec in w.items():
            key = (rec["true"], rec.get("image"))
            if seen.setdefault(i, key) != key:
                raise ConfigError(f"image {i} is {seen[i]} for one model and {key} for {r.model}: "
                                  "the results are of different images")


def _pair(a: MisclassifiedResult, b: MisclassifiedResult, wa: set, wb: set) -> dict:
    only_a, only_b = len(wa - wb), len(wb - wa)
    p = mcnemar_exact(only_a, only_b)
    return {"a": a.model, "b": b.model, "both": len(wa & wb), "only_a": only_a, "only_b": only_b,
            "discordant": only_a + only_b, "p_value": p, "significant": p < ALPHA}


def compare_errors(results: list[MisclassifiedResult]) -> dict:
    """The errors of two or more models on the same images, from their misclassified results
    (run without --max, on the same split):
    {"split", "n", "alpha", "test",
     "models": [{"name", "n", "errors", "error", "ci95": [low, high]}],
     "pairs": [{"a", "b", "both", "only_a", "only_b", "discordant", "p_value", "significant"}]}.
    ci95 is the 95% Wilson interval of the error; p_value the two-sided exact McNemar test on
    the images exactly one of the two gets wrong (the ones both get wrong say nothing about which
    is better); significant: p < 0.05."""
    results = list(results)
    if len(results) < 2:
        raise ConfigError("compare_errors needs the results of two models or more")
    wrong = [_wrong(r) for r in results]
    _check_same_images(results, wrong)
    models = [{"name": r.model, "n": r.n, "errors": len(w), "error": len(w) / r.n,
               "ci95": r.error_ci95} for r, w in zip(results, wrong)]
    pairs = [_pair(results[i], results[j], set(wrong[i]), set(wrong[j]))
             for i, j in combinations(range(len(results)), 2)]
    return {"split": results[0].split, "n": results[0].n, "alpha": ALPHA,
            "test": "exact McNemar, two-sided", "models": models, "pairs": pairs}


def p_value(p: float) -> str:
    """"0.58", "0.039", "0.004", "< 0.001": two significant digits below 0.1."""
    if p < 0.001:
        return "< 0.001"
    return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def p_text(p: float) -> str:
    """"p = 0.58", "p < 0.001"."""
    text = p_value(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def pair_sentence(pair: dict, n: int, split: str | None) -> str:
    """The pair's comparison in words."""
    images = f"{n:,} {split + ' ' if split else ''}images"
    line = (f"{pair['a']} and {pair['b']} both misclassify {pair['both']} of the same {images}; "
            f"{pair['only_a']} are misclassified by {pair['a']} alone, {pair['only_b']} by {pair['b']} alone. ")
    line += f"Exact McNemar test on these {pair['discordant']} images: {p_text(pair['p_value'])}, "
    if not pair["significant"]:
        return line + "not a significant difference at the 5% level."
    better = pair["a"] if pair["only_a"] < pair["only_b"] else pair["b"]
    return line + f"a significant difference at the 5% level ({better} makes fewer errors)."


def _interval(ci) -> str:
    return "—" if ci is None else f"{100 * ci[0]:.2f}–{100 * ci[1]:.2f}%"


def errors_section(results: list[MisclassifiedResult]) -> Section:
    """"Test error compared" (the split's name in the title): each model's error with its 95%
    Wilson interval and n, and for each pair the shared and own errors with an exact McNemar
    test, in a table and in words."""
    stats = compare_errors(results)
    split = stats["split"]
    s = Section(f"{(split or 'the').capitalize()} error compared", f"{split or 'all'}-error-compared")
    s.add(Table(["model", "images", "errors", "error", "95% interval"],
                [[m["name"], f"{m['n']:,}", f"{m['errors']:,}", pct(m["error"]), _interval(m["ci95"])]
                 for m in stats["models"]], numeric={1, 2, 3, 4},
                caption=f"Error on the same {stats['n']:,} {split or ''} images, with its 95% Wilson interval."))
    s.add(Table(["model A", "model B", "both wrong", "only A wrong", "only B wrong", "McNemar p"],
                [[p["a"], p["b"], str(p["both"]), str(p["only_a"]), str(p["only_b"]), p_value(p["p_value"])]
                 for p in stats["pairs"]], numeric={2, 3, 4, 5},
                caption="Errors shared and own, per pair of models; exact two-sided McNemar test on the images "
                        "exactly one of the two gets wrong."))
    for pair in stats["pairs"]:
        s.add(Text(pair_sentence(pair, stats["n"], split)))
    if len(stats["pairs"]) > 1:
        s.add(Text(f"The {len(stats['pairs'])} p-values are not corrected for multiple comparisons "
                   f"(Bonferroni: compare each with {ALPHA / len(stats['pairs']):.3g})."))
    return s
