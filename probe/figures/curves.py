"""Learning curves: error and loss against epoch, several runs on one plot, each run one
colour; as in He et al. (2016, Figure 6) training thin and dashed, validation bold and solid,
and the learning-rate schedule marked (dotted lines at its drops, a shaded warm-up)."""
from __future__ import annotations

import math

import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from probe.figures.style import FULL_WIDTH, PALETTE, SMALL_FONT, new_figure

TRAIN, VAL, OBJECTIVE = "--", "-", ":"  # dashed, solid, dotted
TRAIN_WIDTH, VAL_WIDTH = 0.9, 1.8  # training thin, validation bold (He et al.)
LR_DROP = (0, (1, 2))  # loosely dotted vertical line: the learning rate dropped here
MARK_GREY, SPAN_GREY = "0.35", "0.9"
LOG_MARGIN = 1.3  # a log axis reaches this factor below the smallest value and above the largest


def run_colours(n: int) -> list:
    """One colour per run: the colour-blind palette, then evenly spaced hues past its 10."""
    return list(PALETTE[:n]) if n <= len(PALETTE) else sns.color_palette("husl", n)


def _xy(epochs, values, scale: float = 1.0):
    """Points with a value; None (no number for that epoch) leaves a gap in the line."""
    return epochs, [math.nan if v is None else v * scale for v in values]


def _percent(v, _pos) -> str:
    return f"{v:g}%"


def _span(values) -> list[float] | None:
    """[smallest, largest] of the positive values (the axes add their margins: a log axis has
    no place for 0, a linear one starts at 0 anyway)."""
    values = [v for v in values if v is not None and v > 0]
    return [min(values), max(values)] if values else None


def axis_limits(runs) -> dict:
    """{"max_epoch", "error_range", "loss_range"}: the ranges that hold every point of every run."""
    def of(keys):
        return _span([v for r in runs for k in keys for v in getattr(r, k)])
    return {"max_epoch": max((max(r.epoch) for r in runs if r.epoch), default=None),
            "error_range": of(("train_error", "val_error")),
            "loss_range": of(("train_loss", "val_loss", "train_objective"))}


def curves_figure(curves, *, log: bool = True, loss: bool = True, title: str = ""):
    """Error (%) against epoch and, with loss=True, loss against epoch beside it. log: log-scale
    error and loss axes (small differences late in training become visible; an error of
    exactly 0 has no place on a log axis and is left out). The best epoch of each run (the
    weights kept) is marked on its validation curve; the lr schedule's drops and warm-up on both
    panels. curves: anything with `.runs`, each run with name, epoch, train_/val_error,
    train_/val_loss, train_objective, smoothed, best_epoch and optionally lr_drops, lr_peak
    (probe.analysis.curves.CurvesResult); its optional `.axes` ({"max_epoch", "error_range",
    "loss_range"}, fractions) fixes the limits, so that several figures share them."""
    runs = curves.runs
    colours = run_colours(len(runs))
    fig, axes = new_figure(FULL_WIDTH, 2.7, ncols=2 if loss else 1, squeeze=False)
    axes = axes[0]
    panels = [(axes[0], "error", 100.0)] + ([(axes[1], "loss", 1.0)] if loss else [])
    any_objective = False
    for run, colour in zip(runs, colours):
        for ax, what, scale in panels:
            any_objective |= _draw_run(ax, run, what, scale, colour)
    marks = _draw_schedule([ax for ax, _, _ in panels], runs, colours)
    given = getattr(curves, "axes", None) or {}
    _style_axes(panels, log, {k: v if given.get(k) is None else given[k] for k, v in axis_limits(runs).items()})
    fig.tight_layout()
    _legends(fig, runs, colours, any_objective, marks)
    if title:
        fig.suptitle(title, y=1.02)
    return fig


TRAIN_POINT = {"marker": "s", "markersize": 5, "markerfacecolor": "white"}
VAL_POINT = {"marker": "D", "markersize": 4}


def one_point(run) -> bool:
    """A run with one epoch recorded: its curves are single points."""
    return len(run.epoch) == 1


def _draw_run(ax, run, what: str, scale: float, colour) -> bool:
    """One run's training and validation `what` (error or loss), its training objective where it
    differs (loss, label smoothing on) and its best epoch; whether the objective was drawn."""
    # a run of one epoch has a point, not a line: drawn as a marker, training hollow
    ax.plot(*_xy(run.epoch, getattr(run, f"train_{what}"), scale), color=colour, linestyle=TRAIN,
            linewidth=TRAIN_WIDTH, **(TRAIN_POINT if one_point(run) else {}))
    ax.plot(*_xy(run.epoch, getattr(run, f"val_{what}"), scale), color=colour, linestyle=VAL,
            linewidth=VAL_WIDTH, **(VAL_POINT if one_point(run) else {}))
    objective = what == "loss" and run.smoothed and any(v is not None for v in run.train_objective)
    if objective:
        ax.plot(*_xy(run.epoch, run.train_objective), color=colour, linestyle=OBJECTIVE, linewidth=TRAIN_WIDTH)
    if run.best_epoch is not None:
        value = getattr(run, f"val_{what}")[run.epoch.index(run.best_epoch)]
        if value is not None:
            ax.plot([run.best_epoch], [value * scale], marker="o", markersize=4, color=colour,
                    linestyle="none")
    return objective


def _draw_schedule(axes, runs, colours) -> set[str]:
    """The learning-rate drops (dotted vertical lines) and warm-up (shaded up to the peak) on
    every panel: grey when all runs share them, else in each run's colour. Returns what was
    drawn ({"drop", "warmup"}), for the legend."""
    marks = [(tuple(getattr(r, "lr_drops", None) or ()), getattr(r, "lr_peak", None)) for r in runs]
    shared = len(set(marks)) == 1
    drawn = set()
    for (drops, peak), colour in (zip(marks[:1], [MARK_GREY]) if shared else zip(marks, colours)):
        for ax in axes:
            if peak is not None:
                ax.axvspan(0, peak, color=SPAN_GREY if shared else colour, alpha=1.0 if shared else 0.12,
                           linewidth=0, zorder=0)
            for x in drops:
                ax.axvline(x, color=colour, linestyle=LR_DROP, linewidth=1.0, zorder=1)
        drawn |= ({"warmup"} if peak is not None else set()) | ({"drop"} if drops else set())
    return drawn | ({"own colours"} if not shared and drawn else set())


def _style_axes(panels, log: bool, limits: dict) -> None:
    max_epoch = limits.get("max_epoch")
    for ax, what, scale in panels:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if max_epoch:
            ax.set_xlim(0, max_epoch + 0.5)
        span = limits.get(f"{what}_range")
        if log and span:  # a panel with no positive number stays linear (a log axis cannot show it)
            ax.set_yscale("log")
            narrow = span[1] / span[0] < 10  # under a decade: (1, 2, 5) would leave one or two ticks
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 1.5, 2, 3, 5, 7) if narrow else (1, 2, 5)))
            ax.yaxis.set_minor_locator(NullLocator())
            top = span[1] * LOG_MARGIN
            ax.set_ylim(span[0] * scale / LOG_MARGIN, scale * (min(top, max(span[1], 1.05)) if what == "error" else top))
        else:
            ax.set_ylim(0, span[1] * scale * 1.05 if span else None)
        if what == "error":
            ax.set_ylabel("error")
            ax.yaxis.set_major_formatter(FuncFormatter(_percent))
        else:
            ax.set_ylabel("cross-entropy loss")
            if log:
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))


def _legends(fig, runs, colours, any_objective: bool, marks: set[str] = frozenset()) -> None:
    """One legend below both panels: row(s) of runs by colour, then a row of line styles (inside,
    they would hide the ends of the curves, where the runs differ most)."""
    handles = [Line2D([], [], color=c, linestyle=VAL, linewidth=VAL_WIDTH, label=r.name)
               for r, c in zip(runs, colours)]
    points = any(one_point(r) for r in runs)  # the key shows the single points' markers too
    key = [Line2D([], [], color="0.3", linestyle=TRAIN, linewidth=TRAIN_WIDTH, label="training",
                  **(TRAIN_POINT if points else {})),
           Line2D([], [], color="0.3", linestyle=VAL, linewidth=VAL_WIDTH, label="validation",
                  **(VAL_POINT if points else {}))]
    if any_objective:
        key.append(Line2D([], [], color="0.3", linestyle=OBJECTIVE, linewidth=TRAIN_WIDTH,
                          label="training objective (smoothed)"))
    if any(r.best_epoch is not None for r in runs):
        key.append(Line2D([], [], color="0.3", marker="o", markersize=4, linestyle="none",
                          label="best epoch"))
    if "warmup" in marks:
        own = "own colours" in marks  # each run's band and drops in its colour: the key says so
        key.append(Patch(facecolor=SPAN_GREY, edgecolor="none",
                         label="lr rising to its peak" + (" (tinted: the run's colour)" if own else "")))
    if "drop" in marks:
        key.append(Line2D([], [], color=MARK_GREY, linestyle=LR_DROP, linewidth=1.0, label="lr drop"))
    ncol = min(4, len(handles))
    run_rows = math.ceil(len(handles) / ncol)
    row = 0.075 * 2.7 / fig.get_figheight()  # one legend row of 8 pt text, in figure fraction
    # A legend fills column by column: order the runs so that they read row by row.
    by_rows = [handles[r * ncol + c] for c in range(ncol) for r in range(run_rows)
               if r * ncol + c < len(handles)]
    fig.legend(handles=by_rows, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
               frameon=False, fontsize=SMALL_FONT, handlelength=2.6)
    fig.legend(handles=key, loc="upper center", bbox_to_anchor=(0.5, -run_rows * row - 0.01),
               ncol=len(key), frameon=False, fontsize=SMALL_FONT, handlelength=2.6)
