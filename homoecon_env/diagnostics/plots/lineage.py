"""Lineage figures for evaluate.py (docs/design.md section 9): the Muller plot of founder-lineage shares
and the message dialects over time. Data from :mod:`homoecon_env.diagnostics.lineage`."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from homoecon_env.diagnostics.plots.base import add_legend, as_array, category_colour, new_figure, no_data, style_axes

__all__ = ["lineage_shares", "dialects_over_time"]
OTHER_COLOUR = (0.8, 0.8, 0.8, 1.0)


def lineage_shares(shares: Any, founders: Sequence[str], steps: Any = None, named: int = 8) -> Figure:
    """Muller plot: shares [T, F] of the living population per founder lineage, stacked (each row sums
    to 1), the ``named`` largest lineages (the first columns) coloured and labelled, the rest grey."""
    shares = as_array(shares, "shares", 2)
    if shares.shape[1] != len(founders):
        raise ValueError(f"shares: {shares.shape[1]} lineages but {len(founders)} founder names")
    x = np.arange(1, shares.shape[0] + 1) if steps is None else as_array(steps, "steps", 1)
    figure = new_figure(8.0, 4.2)
    ax = figure.add_subplot(1, 1, 1)
    colours = [category_colour(k) if k < named else OTHER_COLOUR for k in range(shares.shape[1])]
    labels = [f"{name}" if k < named else "_" for k, name in enumerate(founders)]
    # the named lineages at the bottom, the unnamed grey mass on top (edges drawn so small ones stay visible)
    ax.stackplot(x, shares.T, colors=colours, labels=labels, edgecolor="white", linewidth=0.2)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(0.0, 1.0)
    style_axes(ax, "Share of the living population per founder lineage (first-parent line)", "env step", "share")
    add_legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, title="founder")
    return figure


def dialects_over_time(dialects: dict, family: dict | None = None) -> Figure:
    """RMS distance between groups' mean messages over time against its shuffled-label baseline: by founder
    lineage, and (if given) by family (`diagnostics.lineage.FAMILY_DEPTH`), one panel each."""
    panels = [("founder lineages", dialects)] + ([("families (shared first-parent grandparent)", family)]
                                                  if family is not None else [])
    figure = new_figure(6.0 * len(panels), 3.6)
    for k, (groups, series) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), k + 1)
        title = f"Message dialects by {groups}"
        steps = np.asarray(series.get("step", []), dtype=np.float64)
        if steps.size == 0 or not np.isfinite(series["observed"]).any():
            no_data(ax, title, "fewer than two groups\nwith two living members")
            continue
        ax.plot(steps, series["observed"], marker="o", markersize=3, label="by group")
        ax.plot(steps, series["shuffled"], marker="o", markersize=3, linestyle="--", color="grey",
                label="shuffled groups (baseline)")
        style_axes(ax, title, "env step", "RMS distance between mean messages")
        ax.grid(alpha=0.3)
        add_legend(ax, loc="best")
    return figure
