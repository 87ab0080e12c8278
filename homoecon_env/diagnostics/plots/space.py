"""Space figures for evaluate.py (docs/design.md section 13): regional maps over time, price dispersion (over
time and against migration cost), control over time, migration flows. Data from
:mod:`homoecon_env.diagnostics.space`; grids are [H, W] images of per-region values (region g = y * W + x)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from homoecon_env.diagnostics.plots.base import add_legend, as_array, category_colour, new_figure, no_data, style_axes

__all__ = ["MAP_LAYERS", "control_over_time", "dispersion_against_cost", "dispersion_over_time", "lineage_palette",
           "map_limits", "migration_flows", "region_maps"]
MAP_LAYERS = ("population", "price", "wealth", "controller")  # the columns of `region_maps`
NAMED_LINEAGES = 9  # controllers coloured individually (tab10 without grey); the rest share one grey
OTHER_COLOUR = (0.6, 0.6, 0.6, 1.0)
EMPTY_COLOUR = (1.0, 1.0, 1.0, 1.0)


def _grid(values: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(height, width)


def lineage_palette(controller: Any) -> tuple[dict[int, int], ListedColormap]:
    """Lineage id -> colour index (0 empty, 1..NAMED_LINEAGES the lineages controlling the most region-steps,
    NAMED_LINEAGES + 1 all others) and the matching colormap, so a lineage keeps its colour in every frame."""
    c = np.asarray(controller, dtype=np.int64).ravel()
    ids, counts = np.unique(c[c >= 0], return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    index = {int(lineage): (k + 1 if k < NAMED_LINEAGES else NAMED_LINEAGES + 1) for k, lineage in enumerate(order)}
    colours = [EMPTY_COLOUR, *[category_colour(k if k < 7 else k + 1) for k in range(NAMED_LINEAGES)], OTHER_COLOUR]
    return index, ListedColormap(colours)


def map_limits(layers: dict) -> dict[str, tuple[float, float]]:
    """(low, high) of each numeric layer's finite values, for colour scales shared by several figures."""
    limits = {}
    for name in ("population", "price", "wealth"):
        values = as_array(layers[name], name, (1, 2))
        finite = values[np.isfinite(values)]
        limits[name] = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return limits


def region_maps(layers: dict, steps: Sequence[int], width: int, height: int, price_label: str = "price",
                palette: tuple[dict[int, int], ListedColormap] | None = None,
                limits: dict[str, tuple[float, float]] | None = None) -> Figure:
    """A grid of maps: one row per step in ``steps``, one column per layer of MAP_LAYERS. ``layers``: name ->
    [S, G] per-region values at those steps (population counts, the relative price of one good, mean
    wealth: nan for an empty region; controller: lineage ids, -1 empty). Colour scales are shared down
    each column, so rows compare over time; ``limits`` (`map_limits`) and ``palette`` (`lineage_palette`)
    fix the scales and the lineage colours across figures (the frames of an animation)."""
    arrays = {name: as_array(layers[name], name, 2) for name in MAP_LAYERS}
    rows = len(steps)
    for name, array in arrays.items():
        if array.shape != (rows, width * height):
            raise ValueError(f"{name}: expected shape ({rows}, {width * height}) for {rows} steps and "
                             f"{width} x {height} regions, got {array.shape}")
    index, cmap = palette or lineage_palette(arrays["controller"])
    cell = max(1.6, min(3.0, 2.4 * max(width, height) / max(width, height, 4)))
    figure = new_figure(4 * cell * max(1.0, width / height) + 1.2, rows * cell * max(1.0, height / width) + 0.6)
    titles = {"population": "population", "price": price_label, "wealth": "mean wealth",
              "controller": "controlling lineage"}
    scales = limits or map_limits(arrays)
    for row, step in enumerate(steps):
        for column, name in enumerate(MAP_LAYERS):
            ax = figure.add_subplot(rows, len(MAP_LAYERS), row * len(MAP_LAYERS) + column + 1)
            values = arrays[name][row]
            if name == "controller":
                codes = np.array([index.get(int(v), NAMED_LINEAGES + 1) if v >= 0 else 0 for v in values])
                ax.imshow(_grid(codes, width, height), cmap=cmap, vmin=-0.5, vmax=NAMED_LINEAGES + 1.5,
                          interpolation="nearest")
                if width * height <= 36:  # small worlds: the founder id in each cell
                    for g, v in enumerate(values):
                        if v >= 0:
                            ax.text(g % width, g // width, str(int(v)), ha="center", va="center", fontsize=7)
            else:
                low, high = scales[name]
                image = ax.imshow(np.ma.masked_invalid(_grid(values, width, height)), cmap=colormaps["viridis"],
                                  vmin=low, vmax=high if high > low else low + 1e-9, interpolation="nearest")
                if row == rows - 1:
                    figure.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            style_axes(ax, titles[name] if row == 0 else "", "", f"step {step}" if column == 0 else "")
    return figure


def dispersion_over_time(dispersion: Any, steps: Any = None) -> Figure:
    """Price dispersion across regions (std of log relative prices, mean over goods) over time."""
    d = as_array(dispersion, "dispersion", 1)
    x = np.arange(1, len(d) + 1) if steps is None else as_array(steps, "steps", 1)
    figure = new_figure(6.5, 3.4)
    ax = figure.add_subplot(1, 1, 1)
    title = "Price dispersion across regions (law of one price: 0)"
    if not np.isfinite(d).any():
        no_data(ax, title, "fewer than two occupied regions")
        return figure
    ax.plot(x, d, linewidth=1.2)
    ax.set_ylim(bottom=0.0)
    style_axes(ax, title, "env step", "std of log price across regions")
    ax.grid(alpha=0.3)
    return figure


def dispersion_against_cost(costs: Sequence[float], early: dict, late: dict) -> Figure:
    """Early and late dispersion (means with 95% CI bars over seeds) against migration cost. ``early``,
    ``late``: {"mean": [C], "ci95": [C]} (None entries drawn as gaps)."""
    position = np.arange(len(costs))
    figure = new_figure(6.0, 3.6)
    ax = figure.add_subplot(1, 1, 1)
    for offset, (label, stat) in zip((-0.08, 0.08), (("early", early), ("late", late))):
        mean = np.array([np.nan if v is None else v for v in stat["mean"]], dtype=np.float64)
        half = np.array([0.0 if v is None else v for v in stat["ci95"]], dtype=np.float64)
        ax.errorbar(position + offset, mean, yerr=half, marker="o", capsize=3, label=f"{label} in the rollout")
    ax.set_xticks(position, [f"{c:g}" for c in costs])
    ax.set_ylim(bottom=0.0)
    style_axes(ax, "Price dispersion against migration cost", "migration cost (fraction of holdings per move)",
               "std of log price across regions")
    ax.grid(alpha=0.3)
    add_legend(ax, loc="best")
    return figure


def control_over_time(changes: Any, share: Any, steps: Any = None) -> Figure:
    """Changes of control per step (all regions) and the controller's mean share of its region."""
    c = as_array(changes, "changes", 1)
    s = as_array(share, "share", 1)
    x = np.arange(1, len(c) + 1) if steps is None else as_array(steps, "steps", 1)
    figure = new_figure(9.0, 3.2)
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    left.bar(x, c, width=1.0, color=category_colour(3))
    style_axes(left, "Changes of control per step", "env step", "regions changing controller")
    right.plot(x, s, color=category_colour(0))
    right.set_ylim(0.0, 1.05)
    style_axes(right, "Controller's share of its region's members", "env step", "share (mean over regions)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return figure


def migration_flows(flows: Any, net: Any, width: int, height: int, moves: Any = None) -> Figure:
    """The region-to-region flow matrix (moves only; stays blank), each region's net inflow as a map, and
    (with ``moves`` [T-1]) moves per step."""
    f = as_array(flows, "flows", 2).copy()
    np.fill_diagonal(f, np.nan)
    n = as_array(net, "net", 1)
    panels = 3 if moves is not None else 2
    figure = new_figure(4.2 * panels, 3.8)
    ax = figure.add_subplot(1, panels, 1)
    image = ax.imshow(np.ma.masked_invalid(f), cmap=colormaps["magma_r"], interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    style_axes(ax, "Moves between regions", "to region", "from region")
    ax = figure.add_subplot(1, panels, 2)
    bound = max(float(np.abs(n).max(initial=0.0)), 1.0)
    image = ax.imshow(_grid(n, width, height), cmap=colormaps["RdBu"], vmin=-bound, vmax=bound,
                      interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    style_axes(ax, "Net inflow (arrivals − departures)", "x", "y")
    if moves is not None:
        ax = figure.add_subplot(1, panels, 3)
        m = as_array(moves, "moves", 1)
        ax.plot(np.arange(1, len(m) + 1), m, linewidth=1.0)
        style_axes(ax, "Moves per step", "env step", "agents changing region")
        ax.grid(alpha=0.3)
    return figure
