"""The numbers of a degradation experiment, read from its runs: each run's curves (history.json),
its final training and validation error, its kept weights' errors on the test split image by image
(evaluated once per weights file, reused while its sha256 is unchanged), and for each depth the
exact McNemar test between the plain network and its residual twin on the same test images.

Like an analysis: a typed Result (to_json/from_json, a schema version), figures(result),
section(result) and summary(result) lines; and markdown(result) for the experiment's own page."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from probe.analysis.base import ResultBase
from probe.analysis.compare import p_text, p_value
from probe.errors import ModelFileError
from probe.figures.degradation import KIND_LABEL, KINDS, degradation_figure
from probe.methods.confusion import mcnemar_exact, wilson_interval
from probe.presentation import FigureRef, Section, Table, Text, pct
from probe.text import count

FIGURE = "degradation"  # degradation.png + degradation.pdf in the experiment folder
ALPHA = 0.05


@dataclass
class RunRecord:
    """One run of the experiment. Errors are fractions; test_wrong: the indices (in the test split)
    of the images the kept weights (the epoch of lowest validation error) get wrong."""
    depth: int
    kind: str  # "plain" or "resnet"
    name: str  # its folder in the experiment folder: plain20, resnet20
    epoch: list[int]
    train_error: list[float | None]
    val_error: list[float | None]
    train_n: int | None = None
    val_n: int | None = None
    best_epoch: int | None = None
    parameters: int | None = None
    test_n: int | None = None
    test_wrong: list[int] | None = None
    weights_sha256: str | None = None
    history_sha256: str | None = None
    train_seconds: float | None = None

    @property
    def final_train_error(self) -> float | None:
        return self.train_error[-1] if self.train_error else None

    @property
    def final_val_error(self) -> float | None:
        return self.val_error[-1] if self.val_error else None

    @property
    def test_error(self) -> float | None:
        return len(self.test_wrong) / self.test_n if self.test_wrong is not None and self.test_n else None


@dataclass
class DegradationResult(ResultBase):
    KIND = "degradation"
    dataset: str
    settings: dict  # the experiment's manifest settings
    depths: list[int]  # every depth of the experiment (the colours); runs: those complete
    runs: list[RunRecord]
    missing: list[str] = field(default_factory=list)  # runs not (yet) complete, by name
    log: bool = True

    def __post_init__(self):
        try:  # from_json hands the runs over as dicts
            self.runs = [r if isinstance(r, RunRecord) else RunRecord(**r) for r in self.runs]
        except TypeError as e:
            raise ModelFileError(f"degradation result with a malformed run ({e}): run the experiment again") from None

    def to_json(self) -> dict:
        return super().to_json() | {"runs": [asdict(r) for r in self.runs]}

    def run(self, kind: str, depth: int) -> RunRecord | None:
        return next((r for r in self.runs if r.kind == kind and r.depth == depth), None)


def _count_interval(error: float | None, n: int | None) -> list[float] | None:
    """The 95% Wilson interval of an error measured on n images (None where either is unknown)."""
    if error is None or not n:
        return None
    ci = wilson_interval(n - round(error * n), n)  # of the accuracy...
    return [1 - ci[1], 1 - ci[0]]  # ...turned into one of the error


def final_errors(result: DegradationResult) -> list[dict]:
    """One row per run, in depth order, plain first: the last epoch's training and validation
    error (from history.json) and the kept weights' test error, each with its 95% Wilson
    interval and n."""
    rows = []
    for r in sorted(result.runs, key=lambda r: (r.depth, KINDS.index(r.kind))):
        row = {"depth": r.depth, "kind": r.kind, "name": r.name, "epochs": r.epoch[-1] if r.epoch else None,
               "best_epoch": r.best_epoch, "parameters": r.parameters}
        for split, error, n in (("train", r.final_train_error, r.train_n), ("val", r.final_val_error, r.val_n),
                                ("test", r.test_error, r.test_n)):
            row |= {f"{split}_error": error, f"{split}_ci95": _count_interval(error, n), f"{split}_n": n}
        rows.append(row)
    return rows


def paired_tests(result: DegradationResult) -> list[dict]:
    """For each depth with both runs evaluated on the test split: the images only the plain
    network gets wrong, only the ResNet, both; and the two-sided exact McNemar p-value."""
    out = []
    for depth in result.depths:
        plain, res = result.run("plain", depth), result.run("resnet", depth)
        if plain is None or res is None or plain.test_wrong is None or res.test_wrong is None:
            continue
        if plain.test_n != res.test_n:
            continue  # not the same images: nothing to pair
        a, b = set(plain.test_wrong), set(res.test_wrong)
        p = mcnemar_exact(len(a - b), len(b - a))
        out.append({"depth": depth, "n": plain.test_n, "plain_errors": len(a), "resnet_errors": len(b),
                    "only_plain": len(a - b), "only_resnet": len(b - a), "both": len(a & b),
                    "p_value": p, "significant": p < ALPHA})
    return out


def figures(result: DegradationResult) -> dict:
    return {FIGURE: degradation_figure(result.runs, result.depths, log=result.log)}


def _cell(error, ci) -> str:
    return "—" if error is None else pct(error) + (f" ({100 * ci[0]:.2f}–{100 * ci[1]:.2f}%)" if ci else "")


def _sizes(rows: list[dict]) -> str:
    parts = []
    for split in ("train", "val", "test"):
        ns = sorted({r[f"{split}_n"] for r in rows if r[f"{split}_n"]})
        if ns:
            parts.append(f"{split} n = {' / '.join(f'{n:,}' for n in ns)}")
    return ", ".join(parts)


def error_table(result: DegradationResult) -> Table:
    rows = final_errors(result)
    return Table(["depth", "network", "parameters", "train error (95% CI)", "val error (95% CI)", "test error (95% CI)"],
                 [[str(r["depth"]), KIND_LABEL[r["kind"]], f"{r['parameters']:,}" if r["parameters"] else "—",
                   _cell(r["train_error"], r["train_ci95"]), _cell(r["val_error"], r["val_ci95"]),
                   _cell(r["test_error"], r["test_ci95"])] for r in rows],
                 caption="Final errors with 95% Wilson intervals (" + _sizes(rows) + "). Training and validation "
                         "error: the last epoch's, from history.json (the training error is the running error over "
                         "that epoch's augmented images). Test error: the weights kept, those of the epoch of lowest "
                         "validation error.", numeric={0, 2, 3, 4, 5})


def mcnemar_table(result: DegradationResult) -> Table | None:
    pairs = paired_tests(result)
    if not pairs:
        return None
    return Table(["depth", "test images", "plain wrong", "ResNet wrong", "only plain", "only ResNet", "McNemar p"],
                 [[str(p["depth"]), f"{p['n']:,}", f"{p['plain_errors']:,}", f"{p['resnet_errors']:,}",
                   f"{p['only_plain']:,}", f"{p['only_resnet']:,}", p_value(p["p_value"])] for p in pairs],
                 caption="Plain against residual at each depth, on the same test images: the exact two-sided "
                         "McNemar test on the images exactly one of the two gets wrong.", numeric=set(range(7)))


def _pair_words(p: dict) -> str:
    verdict = ("not a significant difference at the 5% level" if not p["significant"] else
               f"a significant difference at the 5% level ({'the ResNet' if p['only_resnet'] < p['only_plain'] else 'the plain network'} "
               "makes fewer errors)")
    return (f"Depth {p['depth']}: {p['only_plain']} test images only the plain network gets wrong, "
            f"{p['only_resnet']} only the ResNet, {p['both']} both; exact McNemar test {p_text(p['p_value'])}, {verdict}.")


def _intro(result: DegradationResult) -> str:
    s = result.settings
    subset = f"the first {s['subset']:,} images of a stratified draw (seed {s['seed']}) of" if s.get("subset") else "all of"
    return (f"He et al. (2015), Figure 6, on {result.dataset}: for each depth, a plain network and its residual twin "
            f"(identity shortcuts, no extra parameters), trained with the same seed ({s['seed']}), the same schedule "
            f"({count(s['epochs'], 'epoch')}) and the same data: {subset} the training split. Degradation is the deeper plain "
            "network training worse than the shallower one; the ResNets should not.")


def _caption(result: DegradationResult) -> str:
    scale = "log" if result.log else "linear"
    depths = ", ".join(map(str, result.depths))
    return (f"Plain networks (left) and ResNets (right) of depth {depths}: training error thin and dashed, validation "
            f"error bold and solid, one colour per depth (the same in both panels), the same axes ({scale} scale).")


def section(result: DegradationResult, name: str | None = None) -> Section:
    """The report's part; name: the experiment folder's, in the title."""
    title = "The degradation experiment" + (f": {name}" if name else "")
    s = Section(title, "degradation").add(Text(_intro(result)))
    s.add(FigureRef(FIGURE, _caption(result), data={"rows": final_errors(result)}))
    s.add(error_table(result), mcnemar_table(result))
    s.add(*(Text(_pair_words(p)) for p in paired_tests(result)))
    if result.missing:
        s.add(Text("Not shown (not complete yet: run the experiment again to finish them): "
                   + ", ".join(result.missing) + "."))
    return s


def summary(result: DegradationResult) -> list[str]:
    lines = [f"{'depth':>5}  {'network':<7}  {'train error':>11}  {'val error':>9}  {'test error':>10}  test 95% CI"]
    for r in final_errors(result):
        ci = r["test_ci95"]
        lines.append(f"{r['depth']:>5}  {KIND_LABEL[r['kind']]:<7}  {pct(r['train_error']):>11}  {pct(r['val_error']):>9}  "
                     f"{pct(r['test_error']):>10}  " + (f"{100 * ci[0]:.2f}–{100 * ci[1]:.2f}%" if ci else "—"))
    lines += [_pair_words(p) for p in paired_tests(result)]
    if result.missing:
        lines.append("not complete: " + ", ".join(result.missing))
    return lines


def _markdown_table(table: Table) -> list[str]:
    def row(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return [row(table.columns), row(["---:" if i in table.numeric else "---" for i in range(len(table.columns))]),
            *(row(r) for r in table.rows), "", table.caption, ""]


def markdown(result: DegradationResult) -> str:
    """The experiment's own page: what it is, the figure, the tables, the tests in words."""
    lines = ["# The degradation experiment", "", _intro(result), "", f"![Figure 6]({FIGURE}.png)", "",
             _caption(result) + f" Vector version: [{FIGURE}.pdf]({FIGURE}.pdf).", ""]
    lines += _markdown_table(error_table(result))
    tests = mcnemar_table(result)
    if tests is not None:
        lines += _markdown_table(tests) + [_pair_words(p) + "\n" for p in paired_tests(result)]
    if result.missing:
        lines.append("Not complete yet: " + ", ".join(result.missing) + ".")
    return "\n".join(lines).rstrip() + "\n"
