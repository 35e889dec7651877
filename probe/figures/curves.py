"""Learning curves: error and loss against epoch, several runs on one plot, each run one
colour, training dashed and validation solid (the seed's figures)."""
from __future__ import annotations

import math

import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from probe.figures.style import FULL_WIDTH, PALETTE, SMALL_FONT, new_figure

TRAIN, VAL, OBJECTIVE = "--", "-", ":"  # dashed, solid, dotted


def run_colours(n: int) -> list:
    """One colour per run: the colour-blind palette, then evenly spaced hues past its 10."""
    return list(PALETTE[:n]) if n <= len(PALETTE) else sns.color_palette("husl", n)


def _xy(epochs, values, scale: float = 1.0):
    """Points with a value; None (no number for that epoch) leaves a gap in the line."""
    return epochs, [math.nan if v is None else v * scale for v in values]


def _percent(v, _pos) -> str:
    return f"{v:g}%"


def curves_figure(curves, *, log: bool = False, loss: bool = True, title: str = ""):
    """Error (%) against epoch and, with loss=True, loss against epoch beside it. log: log-scale
    error and loss axes (small differences late in training become visible; an error of
    exactly 0 has no place on a log axis and is left out). The best epoch of each run (the
    weights kept) is marked on its validation curve. curves: anything with `.runs`, each run
    with name, epoch, train_/val_error, train_/val_loss, train_objective, smoothed, best_epoch
    (probe.analysis.curves.CurvesResult)."""
    runs = curves.runs
    colours = run_colours(len(runs))
    fig, axes = new_figure(FULL_WIDTH, 2.7, ncols=2 if loss else 1, squeeze=False)
    axes = axes[0]
    panels = [(axes[0], "error", 100.0)] + ([(axes[1], "loss", 1.0)] if loss else [])
    any_objective = False
    for run, colour in zip(runs, colours):
        for ax, what, scale in panels:
            any_objective |= _draw_run(ax, run, what, scale, colour)
    _style_axes(panels, log)
    fig.tight_layout()
    _legends(fig, runs, colours, any_objective)
    if title:
        fig.suptitle(title, y=1.02)
    return fig


def _draw_run(ax, run, what: str, scale: float, colour) -> bool:
    """One run's training and validation `what` (error or loss), its training objective where it
    differs (loss, label smoothing on) and its best epoch; whether the objective was drawn."""
    ax.plot(*_xy(run.epoch, getattr(run, f"train_{what}"), scale), color=colour, linestyle=TRAIN,
            linewidth=1.2)
    ax.plot(*_xy(run.epoch, getattr(run, f"val_{what}"), scale), color=colour, linestyle=VAL,
            linewidth=1.4)
    objective = what == "loss" and run.smoothed and any(v is not None for v in run.train_objective)
    if objective:
        ax.plot(*_xy(run.epoch, run.train_objective), color=colour, linestyle=OBJECTIVE, linewidth=1.2)
    if run.best_epoch is not None:
        value = getattr(run, f"val_{what}")[run.epoch.index(run.best_epoch)]
        if value is not None:
            ax.plot([run.best_epoch], [value * scale], marker="o", markersize=4, color=colour,
                    linestyle="none")
    return objective


def _style_axes(panels, log: bool) -> None:
    for ax, what, _ in panels:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
            ax.yaxis.set_minor_locator(NullLocator())
        else:
            ax.set_ylim(bottom=0)
        if what == "error":
            ax.set_ylabel("error")
            ax.yaxis.set_major_formatter(FuncFormatter(_percent))
        else:
            ax.set_ylabel("cross-entropy loss")
            if log:
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))


def _legends(fig, runs, colours, any_objective: bool) -> None:
    """One legend below both panels: row(s) of runs by colour, then a row of line styles (inside,
    they would hide the ends of the curves, where the runs differ most)."""
    handles = [Line2D([], [], color=c, linestyle=VAL, linewidth=1.4, label=r.name)
               for r, c in zip(runs, colours)]
    key = [Line2D([], [], color="0.3", linestyle=TRAIN, linewidth=1.2, label="training"),
           Line2D([], [], color="0.3", linestyle=VAL, linewidth=1.4, label="validation")]
    if any_objective:
        key.append(Line2D([], [], color="0.3", linestyle=OBJECTIVE, linewidth=1.2,
                          label="training objective (smoothed)"))
    if any(r.best_epoch is not None for r in runs):
        key.append(Line2D([], [], color="0.3", marker="o", markersize=4, linestyle="none",
                          label="best epoch"))
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
