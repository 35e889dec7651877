"""He et al. (2015), Figure 6: plain networks on the left, their residual twins on the right, the
same axes on both; training error thin and dashed, validation error bold and solid; one colour
per depth, the same in both panels."""
from __future__ import annotations

import math

from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from probe.figures.curves import (LOG_MARGIN, TRAIN, TRAIN_POINT, TRAIN_WIDTH, VAL, VAL_POINT, VAL_WIDTH,
                                  run_colours)
from probe.figures.style import FULL_WIDTH, SMALL_FONT, new_figure

KINDS = ("plain", "resnet")
PANEL_TITLES = {"plain": "plain networks", "resnet": "ResNets (identity shortcuts)"}
KIND_LABEL = {"plain": "plain", "resnet": "ResNet"}


def depth_colours(depths) -> dict[int, tuple]:
    """{depth: colour}: the shallowest first in the palette, the same colour in both panels."""
    depths = sorted(set(depths))
    return dict(zip(depths, run_colours(len(depths))))


def _values(values) -> list[float]:
    return [math.nan if v is None else 100 * v for v in values]


def degradation_figure(runs, depths, *, log: bool = True):
    """runs: each with depth, kind ("plain" or "resnet"), epoch, train_error and val_error
    (fractions, None for a gap); depths: every depth of the experiment (it fixes the colours).
    Each line's gid is "<kind><depth>-train" or "-val", for whoever inspects the figure."""
    colours = depth_colours(depths)
    fig, axes = new_figure(FULL_WIDTH, 2.9, ncols=2, sharex=True, sharey=True)
    panel = dict(zip(KINDS, axes))
    points = any(len(run.epoch) == 1 for run in runs)  # one epoch: a point each, drawn as markers
    for run in sorted(runs, key=lambda r: (r.kind, r.depth)):
        ax, colour = panel[run.kind], colours[run.depth]
        ax.plot(run.epoch, _values(run.train_error), color=colour, linestyle=TRAIN, linewidth=TRAIN_WIDTH,
                gid=f"{run.kind}{run.depth}-train", **(TRAIN_POINT if points else {}))
        ax.plot(run.epoch, _values(run.val_error), color=colour, linestyle=VAL, linewidth=VAL_WIDTH,
                gid=f"{run.kind}{run.depth}-val", **(VAL_POINT if points else {}))
    _style(axes, runs, log)
    for kind, ax in panel.items():
        ax.set_title(PANEL_TITLES[kind])
    axes[1].tick_params(labelleft=True)  # the shared scale read on both panels
    fig.tight_layout()
    _legend(fig, colours, points)
    return fig


def _style(axes, runs, log: bool) -> None:
    errors = [100 * v for r in runs for v in (*r.train_error, *r.val_error) if v is not None and v > 0]
    last = max((max(r.epoch) for r in runs if r.epoch), default=1)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}%"))
    axes[0].set_xlim(0, last + 0.5)
    axes[0].set_ylabel("error")
    if not errors:
        return
    low, high = min(errors), max(errors)
    if log:  # the shared y axis: set once, both panels follow
        axes[0].set_yscale("log")
        narrow = high / low < 10
        axes[0].yaxis.set_major_locator(LogLocator(base=10, subs=(1, 1.5, 2, 3, 5, 7) if narrow else (1, 2, 5)))
        axes[0].yaxis.set_minor_locator(NullLocator())
        axes[0].set_ylim(low / LOG_MARGIN, min(high * LOG_MARGIN, max(high, 105.0)))
        axes[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}%"))
    else:
        axes[0].set_ylim(0, high * 1.05)


def _legend(fig, colours: dict, points: bool = False) -> None:
    """Below both panels: the depths by colour, then what thin and bold (and the markers) mean."""
    handles = [Line2D([], [], color=c, linestyle=VAL, linewidth=VAL_WIDTH, label=f"depth {d}")
               for d, c in colours.items()]
    handles += [Line2D([], [], color="0.3", linestyle=TRAIN, linewidth=TRAIN_WIDTH, label="training error",
                       **(TRAIN_POINT if points else {})),
                Line2D([], [], color="0.3", linestyle=VAL, linewidth=VAL_WIDTH, label="validation error",
                       **(VAL_POINT if points else {}))]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 6),
               frameon=False, fontsize=SMALL_FONT, handlelength=2.6)
