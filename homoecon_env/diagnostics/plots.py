"""Figures for evaluate.py, TensorBoard images and the rgb_array dashboard (DESIGN.md section 6).

Every plotting function takes arrays (NumPy or CPU torch) and returns a
:class:`matplotlib.figure.Figure` built without pyplot, so no global figure state is created and
no GUI backend is needed; callers save it with :func:`save_figure` (atomic) or turn it into an
image with :func:`figure_to_rgb`. Importing this module loads matplotlib; importing
``homoecon_env`` or ``diagnostics.metrics`` does not.

Shapes: N agents, R resources, J jobs, K observed peers, B broadcast dim, T logged steps.
Each public figure is made of small ``_draw_*`` panel functions, which :func:`dashboard` reuses.
"""
from __future__ import annotations

import functools
import io
import math
import os
from typing import Any, Callable, Mapping, Sequence

import networkx as nx
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from homoecon_env.diagnostics import metrics
from homoecon_env.files import atomic_write_bytes

__all__ = [
    "DASHBOARD_KEYS",
    "trade_scatter",
    "gini_over_time",
    "resources_over_time",
    "ages_and_reproduction",
    "job_distribution",
    "broadcast_pca",
    "attention_heatmap",
    "eigen_spectra",
    "topology_histogram",
    "degree_pagerank",
    "effort_vs_consumption",
    "dashboard",
    "figure_to_rgb",
    "save_figure",
]

DPI = 100
TITLE_SIZE = 10
LABEL_SIZE = 9
TICK_SIZE = 8
MAX_ARROWS = 200  # trade arrows drawn at most (for an evenly spaced subset of agents)
MAX_THUMBNAIL_NODES = 40  # larger component shapes are labelled, not drawn


# --------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    """A pyplot-free figure with constrained layout, sized in inches at :data:`DPI`."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _style(ax: Axes, title: str, xlabel: str = "", ylabel: str = "") -> None:
    """Title, axis labels and tick sizes shared by every panel."""
    ax.set_title(title, fontsize=TITLE_SIZE)
    ax.set_xlabel(xlabel, fontsize=LABEL_SIZE)
    ax.set_ylabel(ylabel, fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)


def _legend(ax: Axes, **kwargs: Any) -> None:
    """A small legend, only if something is labelled."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=TICK_SIZE, framealpha=0.8, **kwargs)


def _array(values: Any, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``values`` as a float64 array with one of the allowed numbers of dimensions."""
    array = metrics.to_numpy(values, dtype=np.float64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}-D' for d in allowed)} array, "
                         f"got shape {array.shape}")
    return array


def _steps(length: int, steps: Any, name: str) -> np.ndarray:
    """x values for a series of ``length``: ``steps`` if given (checked), else 0..length-1."""
    if steps is None:
        return np.arange(length)
    x = _array(steps, "steps", 1)
    if len(x) != length:
        raise ValueError(f"{name}: has {length} entries but steps has {len(x)}; expected equal lengths")
    return x


def _names(names: Sequence[str] | None, count: int, prefix: str) -> list[str]:
    """``names`` checked against ``count``, or ``prefix 0`` .. ``prefix count-1``."""
    if names is None:
        return [f"{prefix} {k}" for k in range(count)]
    names = [str(n) for n in names]
    if len(names) < count:
        raise ValueError(f"{prefix} names: got {len(names)} names for {count} {prefix}s")
    return names[:count]


def _colour(index: int) -> Any:
    """Categorical colour ``index`` (jobs, goods), stable across figures."""
    return colormaps["tab10"](index % 10)


def _points(count: int) -> dict[str, float]:
    """Marker size and opacity for a scatter of ``count`` agents: smaller and lighter when crowded."""
    return {"s": 16.0, "alpha": 0.9} if count <= 500 else {"s": 3.0, "alpha": 0.4}


def _no_data(ax: Axes, title: str, message: str = "no data yet") -> None:
    """Mark a panel whose data is not available instead of leaving it blank."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=TITLE_SIZE + 2, color="grey",
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    _style(ax, title)


# --------------------------------------------------------------------------- panels


def _draw_lines(ax: Axes, x: np.ndarray, series: Mapping[str, np.ndarray], title: str, ylabel: str,
                xlabel: str = "env step", ylim: tuple[float, float] | None = None) -> None:
    """One line per labelled series [T] against x [T]; a marker when T == 1 so it stays visible."""
    for k, (label, y) in enumerate(series.items()):
        ax.plot(x, y, label=label, color=_colour(k), lw=1.4, marker="o" if len(y) == 1 else None)
    if ylim is not None:
        ax.set_ylim(*ylim)
    _style(ax, title, xlabel, ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        _legend(ax, loc="best")


def _draw_stack(ax: Axes, x: np.ndarray, shares: np.ndarray, labels: list[str], title: str,
                ylabel: str, colours: list[Any] | None = None) -> None:
    """Stacked shares [T, C] over time (bars when T == 1), each layer labelled."""
    colours = colours or [_colour(k) for k in range(shares.shape[1])]
    if shares.shape[0] == 1:
        bottom = 0.0
        for k, label in enumerate(labels):
            ax.bar([0], [shares[0, k]], bottom=bottom, color=colours[k], label=label, width=0.6)
            bottom += shares[0, k]
        ax.set_xticks([0], [f"step {x[0]:g}"])
        _style(ax, title, "", ylabel)
    else:
        ax.stackplot(x, shares.T, labels=labels, colors=colours, alpha=0.85)
        ax.set_xlim(x[0], x[-1])
        _style(ax, title, "env step", ylabel)
    ax.set_ylim(0, max(1.0, float(shares.sum(axis=1).max())))
    _legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # stacks fill the axes


def _draw_trade_arrows(ax: Axes, before: np.ndarray, after: np.ndarray, names: list[str],
                       goods: tuple[int, int]) -> None:
    """Each agent's holdings of two goods before (hollow) and after (filled) trade, with arrows."""
    if before.shape[1] == 1:  # one good: before vs after on the diagonal picture
        ax.scatter(before[:, 0], after[:, 0], color=_colour(0), label="agent", **_points(len(before)))
        top = float(max(before.max(initial=0.0), after.max(initial=0.0), 1e-9))
        ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="no trade")
        _style(ax, "Holdings before vs after trade", f"{names[0]} before (units)", f"{names[0]} after (units)")
        _legend(ax, loc="upper left")
        return
    first, second = goods
    style = _points(len(before))
    ax.scatter(before[:, first], before[:, second], facecolors="none", edgecolors="grey",
               label="before trade", **style)
    ax.scatter(after[:, first], after[:, second], color=_colour(0), label="after trade", **style)
    shown = np.unique(np.linspace(0, len(before) - 1, min(len(before), MAX_ARROWS)).astype(int))
    delta = after[shown] - before[shown]
    moved = np.abs(delta[:, [first, second]]).sum(axis=1) > 0
    if moved.any():
        ax.quiver(before[shown][moved, first], before[shown][moved, second], delta[moved, first],
                  delta[moved, second], angles="xy", scale_units="xy", scale=1, width=0.003,
                  color=_colour(0), alpha=0.45)
    _style(ax, "Allocations before -> after trade", f"{names[first]} (units)", f"{names[second]} (units)")
    ax.grid(alpha=0.3)
    _legend(ax, loc="best")


def _draw_net_trade(ax: Axes, before: np.ndarray, after: np.ndarray, prices: np.ndarray | None,
                    names: list[str]) -> None:
    """Supply and demand: each good's net trade per agent, agents sorted from sellers to buyers."""
    net = after - before  # [N, R]; + bought, - sold
    num_agents = net.shape[0]
    rank = (np.arange(num_agents) + 0.5) / max(num_agents, 1)
    relative = metrics.relative_prices(prices) if prices is not None else None
    for r, name in enumerate(names):
        label = name if relative is None else f"{name} (price {relative[r]:.2f})"
        ax.plot(rank, np.sort(net[:, r]), drawstyle="steps-mid", color=_colour(r), lw=1.6, label=label)
    ax.axhline(0.0, color="black", lw=0.8)
    volume = metrics.trade_volume(before, after)
    ax.text(0.02, 0.97, f"sold = bought = {volume:.3g} units", transform=ax.transAxes, va="top",
            fontsize=TICK_SIZE)
    _style(ax, "Supply (-) and demand (+) at clearing prices", "agents, sorted by net trade (fraction)",
           "net trade (units)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    _legend(ax, loc="lower right")


def _draw_age_histogram(ax: Axes, ages: np.ndarray, max_age: float | None) -> None:
    """Histogram of agent ages (steps), with the age limit marked."""
    top = max_age if max_age is not None else (ages.max() if ages.size else 1.0)
    bins = np.arange(0, math.ceil(max(top, ages.max(initial=0.0))) + 2) - 0.5
    ax.hist(ages, bins=bins, color=_colour(0), edgecolor="white")
    if max_age is not None:
        ax.axvline(max_age, color="black", ls="--", lw=1, label=f"max_age = {max_age:g}")
        _legend(ax, loc="upper right")
    _style(ax, f"Ages (mean {ages.mean():.1f})" if ages.size else "Ages", "age (steps)", "agents")


def _draw_population_events(ax: Axes, x: np.ndarray, events: Mapping[str, np.ndarray]) -> None:
    """Deaths per step [T] stacked by cause (filled), births per step [T] as a black outline over them.

    Every death frees a slot that a birth refills in the same step, so births usually equal total
    deaths: drawn as lines of one kind, births would hide under the deaths. Here the top of the filled
    stack is total deaths, and the outline shows births wherever they differ from it.
    """
    deaths = {label: values for label, values in events.items() if label != "births"}
    colours = [{"deaths (age)": _colour(1), "deaths (starvation)": _colour(3)}[label] for label in deaths]
    if deaths and len(x) > 1:
        ax.stackplot(x, *deaths.values(), labels=list(deaths), colors=colours, step="mid", alpha=0.7, lw=0)
    elif deaths:  # a single step: stacked bars, since a filled area one step wide has no width
        bottom = np.zeros(len(x))
        for (label, values), colour in zip(deaths.items(), colours):
            ax.bar(x, values, bottom=bottom, label=label, color=colour, alpha=0.7, width=0.8)
            bottom = bottom + values
    top = float(np.sum(list(deaths.values()), axis=0).max()) if deaths else 0.0
    if "births" in events:
        ax.step(x, events["births"], where="mid", color="black", lw=1.3, label="births",
                marker="o" if len(x) == 1 else None)
        top = max(top, float(events["births"].max()))
    ax.set_ylim(0, 1.3 * max(top, 1.0))  # headroom for the legend above the data
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _style(ax, "Births and deaths per step", "env step", "agents per step")
    ax.grid(alpha=0.3)
    _legend(ax, loc="upper left", ncol=len(events), handlelength=1.0, handletextpad=0.4, columnspacing=0.8)


def _draw_pca(ax: Axes, coords: np.ndarray, explained: np.ndarray, colour_by: np.ndarray | None,
              categorical: bool, labels: list[str] | None, title: str) -> None:
    """Broadcasts in the plane of their first two principal components, coloured by a trait."""
    x = coords[:, 0]
    y = coords[:, 1] if coords.shape[1] > 1 else np.zeros_like(x)
    style = _points(len(x))
    if colour_by is None:
        ax.scatter(x, y, color=_colour(0), **style)
    elif categorical:
        for value in np.unique(colour_by).astype(int):
            chosen = colour_by == value
            name = labels[value] if labels is not None and value < len(labels) else f"job {value}"
            ax.scatter(x[chosen], y[chosen], color=_colour(value), label=name, **style)
        _legend(ax, loc="best", markerscale=max(1.0, 16.0 / style["s"]) ** 0.5)
    else:
        points = ax.scatter(x, y, c=colour_by, cmap="viridis", **style)
        colourbar = ax.figure.colorbar(points, ax=ax)
        colourbar.set_label("age (steps)", fontsize=LABEL_SIZE)
        colourbar.ax.tick_params(labelsize=TICK_SIZE)
    ratio = list(explained) + [0.0, 0.0]
    _style(ax, title, f"PC1 ({100 * ratio[0]:.0f}% of variance)", f"PC2 ({100 * ratio[1]:.0f}% of variance)")
    ax.grid(alpha=0.3)


def _attention_block(attention: Any, peer_index: Any, num_agents: int, size: int) -> np.ndarray:
    """Dense attention among the first ``size`` agent rows [size, size], without building N x N.

    Attention paid to agents outside the block is left out of the picture.
    """
    weights = _array(attention, "attention", 2)
    index = metrics.to_numpy(peer_index)
    if index.shape != weights.shape:
        raise ValueError(f"peer_index: expected shape {weights.shape} like attention, got {index.shape}")
    if index.size and (index.min() < -1 or index.max() >= num_agents):
        raise ValueError(f"peer_index: values must lie in [-1, {num_agents}), "
                         f"got min {index.min()} and max {index.max()}")
    size = min(size, len(weights), num_agents)
    block = index[:size]
    return metrics.attention_matrix(weights[:size], np.where(block < size, block, -1), size)


def _draw_heatmap(ax: Axes, dense: np.ndarray, total_agents: int) -> None:
    """Agent-to-agent attention matrix [rows, columns] as an image with a colour bar."""
    image = ax.imshow(dense, cmap="magma", aspect="auto", interpolation="nearest", vmin=0.0,
                      vmax=max(float(dense.max(initial=0.0)), 1e-12))
    colourbar = ax.figure.colorbar(image, ax=ax)
    colourbar.set_label("attention weight", fontsize=LABEL_SIZE)
    colourbar.ax.tick_params(labelsize=TICK_SIZE)
    shown = dense.shape[0]
    suffix = "" if shown == total_agents else f" (first {shown} of {total_agents})"
    _style(ax, "Attention: who watches whom" + suffix, "attended agent (row index)",
           "attending agent (row index)")


def _draw_spectrum(ax: Axes, spectrum: np.ndarray) -> None:
    """One covariance spectrum [B] as bars, with its participation ratio."""
    ranks = np.arange(1, len(spectrum) + 1)
    ax.bar(ranks, spectrum, color=_colour(0))
    ratio = metrics.participation_ratio(spectrum)
    ax.set_xticks(ranks)
    _style(ax, f"Broadcast covariance spectrum (effective dim {ratio:.2f} of {len(spectrum)})",
           "principal component", "eigenvalue (variance)")
    ax.grid(alpha=0.3, axis="y")


def _draw_spectra_over_time(ax: Axes, x: np.ndarray, spectra: np.ndarray) -> None:
    """Share of broadcast variance per principal component [T, B] over time, stacked."""
    totals = spectra.sum(axis=1, keepdims=True)
    shares = np.divide(spectra, totals, out=np.zeros_like(spectra), where=totals > 0)
    labels = [f"PC{k + 1}" for k in range(spectra.shape[1])]
    colours = [colormaps["viridis"](k / max(spectra.shape[1] - 1, 1)) for k in range(spectra.shape[1])]
    _draw_stack(ax, x, shares, labels, "Broadcast variance by component", "share of variance", colours)


def _draw_thumbnail(ax: Axes, graph: nx.DiGraph) -> None:
    """A small drawing of one component shape: nodes as dots, favourite links as arrows."""
    positions = nx.spring_layout(graph, seed=0) if graph.number_of_nodes() > 1 else {n: (0.0, 0.0) for n in graph}
    points = np.array([positions[n] for n in graph.nodes])
    ax.scatter(points[:, 0], points[:, 1], s=9, color="black", zorder=3)
    for source, target in graph.edges:
        ax.annotate("", xy=positions[target], xytext=positions[source],
                    arrowprops={"arrowstyle": "-|>", "lw": 0.7, "color": "grey", "shrinkA": 2,
                                "shrinkB": 2, "mutation_scale": 6,
                                # bend mutual links apart so both directions stay visible
                                "connectionstyle": "arc3,rad=0.2" if graph.has_edge(target, source) else "arc3"})
    span = max(float(np.ptp(points, axis=0).max()) if len(points) > 1 else 0.0, 1.0)
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    ax.set_xlim(centre[0] - 0.6 * span, centre[0] + 0.6 * span)
    ax.set_ylim(centre[1] - 0.6 * span, centre[1] + 0.6 * span)
    ax.set_aspect("equal", adjustable="box")
    ax.set_axis_off()


def _draw_topology(ax: Axes, hash_counts: Mapping[str, int], sizes: Mapping[str, int] | None,
                   examples: Mapping[str, nx.Graph] | None, max_shapes: int) -> None:
    """Counts of component shapes (WL hashes), most common first, with a drawing of each shape."""
    ordered = sorted(hash_counts.items(), key=lambda item: (-item[1], item[0]))
    shown = ordered[:max_shapes]
    counts = np.array([count for _, count in shown], dtype=float)
    positions = np.arange(len(shown))
    ax.bar(positions, counts, color=_colour(0), width=0.7)
    tick_labels = []
    for digest, _ in shown:
        size = sizes.get(digest) if sizes else None
        tick_labels.append(f"{digest[:6]}\n{size} agent{'s' if size != 1 else ''}" if size is not None
                           else digest[:6])
    ax.set_xticks(positions, tick_labels)
    ax.set_xlim(-0.6, max(len(shown), 3) - 0.4)
    top = float(counts.max(initial=1.0))
    ax.set_ylim(0, top * 1.75)
    hidden = len(ordered) - len(shown)
    suffix = f"; {hidden} rarer shapes not shown" if hidden else ""
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    total = sum(hash_counts.values())
    _style(ax, f"Favourite-graph component shapes ({total} component{'s' if total != 1 else ''}{suffix})",
           "component shape (WL hash)", "components")
    if not examples:
        return
    # Draw each shape above its bar: x in data units, y in axes fractions.
    for position, (digest, count) in zip(positions, shown):
        example = examples.get(digest)
        if example is None or example.number_of_nodes() > MAX_THUMBNAIL_NODES:
            continue
        bottom = count / (top * 1.75) + 0.03
        inset = ax.inset_axes([position - 0.4, bottom, 0.8, min(0.3, 0.98 - bottom)],
                              transform=ax.get_xaxis_transform())
        _draw_thumbnail(inset, example)


def _draw_degree_histogram(ax: Axes, in_degree: np.ndarray) -> None:
    """How many agents are the favourite of 0, 1, 2, ... others."""
    values, counts = np.unique(in_degree.astype(int), return_counts=True)
    ax.bar(values, counts, color=_colour(1), width=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _style(ax, "Favourite-graph in-degree", "in-degree (agents choosing it as favourite)", "agents")
    ax.grid(alpha=0.3, axis="y")


def _draw_degree_pagerank(ax: Axes, in_degree: np.ndarray, pagerank: np.ndarray) -> None:
    """PageRank against in-degree: popular agents and agents admired by popular agents."""
    jitter = (np.arange(len(in_degree)) % 7 - 3) * 0.04  # deterministic spread of equal degrees
    ax.scatter(in_degree + jitter, pagerank, color=_colour(1), **_points(len(pagerank)))
    if len(pagerank):
        ax.axhline(1.0 / len(pagerank), color="grey", ls="--", lw=1, label="uniform 1/N")
        _legend(ax, loc="upper left")
    _style(ax, "Influence: PageRank vs in-degree", "in-degree (agents)", "PageRank (sums to 1)")
    ax.grid(alpha=0.3)


def _draw_effort_consumption(ax: Axes, effort: np.ndarray, consumption: np.ndarray,
                             jobs: np.ndarray | None, job_names: list[str] | None) -> None:
    """Effort in [0, 1] against total consumption per agent, coloured by job when known."""
    style = _points(len(effort))
    if jobs is None:
        ax.scatter(effort, consumption, color=_colour(0), **style)
    else:
        for value in np.unique(jobs).astype(int):
            chosen = jobs == value
            name = job_names[value] if job_names is not None and value < len(job_names) else f"job {value}"
            ax.scatter(effort[chosen], consumption[chosen], color=_colour(value), label=name, **style)
        _legend(ax, loc="best", markerscale=max(1.0, 16.0 / style["s"]) ** 0.5)
    ax.set_xlim(-0.03, 1.03)
    _style(ax, "Effort vs consumption", "effort (fraction, 0-1)", "consumption (units, all goods)")
    ax.grid(alpha=0.3)


# --------------------------------------------------------------------------- public figures


def trade_scatter(before: Any, after: Any, prices: Any = None, resource_names: Sequence[str] | None = None,
                  goods: tuple[int, int] = (0, 1)) -> Figure:
    """Two panels of one market clearing: allocations moving, and supply/demand per good.

    ``before``, ``after``: holdings [N, R] before and after trade; ``prices``: [R] clearing prices
    (any scale; shown relative) or None; ``goods``: the two goods on the allocation panel's axes.
    Left: each agent's holdings of the two goods before (hollow) and after (filled) trade, arrows
    showing the move. Right: each good's net trade per agent, agents sorted from the biggest
    seller (negative) to the biggest buyer (positive): the supply and demand met at the price.
    """
    held_before = _array(before, "before", 2)
    held_after = _array(after, "after", 2)
    if held_before.shape != held_after.shape:
        raise ValueError(f"after: expected shape {held_before.shape} like before, got {held_after.shape}")
    num_goods = held_before.shape[1]
    if num_goods > 1 and (goods[0] == goods[1] or not all(0 <= g < num_goods for g in goods)):
        raise ValueError(f"goods: expected two distinct indices in [0, {num_goods}), got {goods}")
    names = _names(resource_names, num_goods, "resource")
    clearing = None if prices is None else _array(prices, "prices", 1)
    figure = _figure(12, 5)
    left, right = figure.subplots(1, 2)
    _draw_trade_arrows(left, held_before, held_after, names, goods)
    _draw_net_trade(right, held_before, held_after, clearing, names)
    return figure


def gini_over_time(gini: Any, steps: Any = None) -> Figure:
    """Gini coefficient of wealth [T] against env step (0 = equal, 1 = one agent holds all)."""
    values = _array(gini, "gini", 1)
    figure = _figure(7, 4)
    _draw_lines(figure.subplots(), _steps(len(values), steps, "gini"), {"Gini": values},
                "Wealth inequality (Gini)", "Gini coefficient", ylim=(0, 1))
    return figure


def resources_over_time(totals: Any, prices: Any, names: Sequence[str] | None = None,
                        steps: Any = None) -> Figure:
    """Total holdings [T, R] (units) and relative prices [T, R] (sum 1) of each good over time."""
    stock = _array(totals, "totals", 2)
    price = metrics.relative_prices(_array(prices, "prices", 2))
    if price.shape != stock.shape:
        raise ValueError(f"prices: expected shape {stock.shape} like totals, got {price.shape}")
    labels = _names(names, stock.shape[1], "resource")
    x = _steps(len(stock), steps, "totals")
    figure = _figure(8, 6)
    top, bottom = figure.subplots(2, 1, sharex=True)
    _draw_lines(top, x, dict(zip(labels, stock.T)), "Total holdings after trade", "units", xlabel="")
    _legend(top, loc="best")
    _draw_lines(bottom, x, dict(zip(labels, price.T)), "Relative prices", "price (sum over goods = 1)",
                ylim=(0, 1))
    _legend(bottom, loc="best")
    return figure


def _population_events(births: np.ndarray | None, deaths_age: np.ndarray | None,
                       deaths_starvation: np.ndarray | None) -> dict[str, np.ndarray]:
    """The available birth and death series [T], labelled for a legend; all must share T."""
    series = {"births": births, "deaths (age)": deaths_age, "deaths (starvation)": deaths_starvation}
    events = {label: values for label, values in series.items() if values is not None and values.size}
    if len({len(values) for values in events.values()}) > 1:
        lengths = {label: len(values) for label, values in events.items()}
        raise ValueError(f"births, deaths_age, deaths_starvation: expected equal lengths, got {lengths}")
    return events


def ages_and_reproduction(ages: Any, births: Any, deaths_age: Any, deaths_starvation: Any,
                          max_age: float | None = None, steps: Any = None) -> Figure:
    """Age histogram of the living [N] (steps) and births / deaths by cause per step [T]
    (deaths stacked by cause, births as an outline: see :func:`_draw_population_events`)."""
    living = _array(ages, "ages", 1)
    events = _population_events(*(None if v is None else _array(v, name, 1) for v, name in
                                  ((births, "births"), (deaths_age, "deaths_age"),
                                   (deaths_starvation, "deaths_starvation"))))
    figure = _figure(12, 4.5)
    left, right = figure.subplots(1, 2)
    _draw_age_histogram(left, living, max_age)
    if events:
        first_label, first = next(iter(events.items()))
        _draw_population_events(right, _steps(len(first), steps, first_label), events)
    else:
        _no_data(right, "Births and deaths per step")
    return figure


def job_distribution(job_shares: Any, job_names: Sequence[str] | None = None, steps: Any = None) -> Figure:
    """Share of agents in each job [T, J] over time, stacked (fractions summing to 1)."""
    shares = _array(job_shares, "job_shares", 2)
    figure = _figure(8, 4.5)
    _draw_stack(figure.subplots(), _steps(len(shares), steps, "job_shares"), shares,
                _names(job_names, shares.shape[1], "job"), "Job shares", "share of agents")
    return figure


def broadcast_pca(coords: Any, jobs: Any, ages: Any, explained: Any,
                  job_names: Sequence[str] | None = None) -> Figure:
    """Broadcast messages projected on two principal components, coloured by job and by age.

    ``coords``: [N, 2] (e.g. from ``metrics.broadcast_pca``); ``jobs``: [N] ints; ``ages``: [N]
    steps; ``explained``: [2] explained-variance ratios. Clusters by job mean messages carry
    job information; a gradient by age means they carry age.
    """
    points = _array(coords, "coords", 2)
    job_of = _array(jobs, "jobs", 1)
    age_of = _array(ages, "ages", 1)
    ratio = _array(explained, "explained", 1)
    if not len(job_of) == len(age_of) == len(points):
        raise ValueError(f"coords, jobs, ages: expected N rows each, got {len(points)}, {len(job_of)}, {len(age_of)}")
    names = list(job_names) if job_names is not None else None
    figure = _figure(12, 5)
    left, right = figure.subplots(1, 2)
    _draw_pca(left, points, ratio, job_of, True, names, "Broadcasts by job")
    _draw_pca(right, points, ratio, age_of, False, None, "Broadcasts by age")
    return figure


def attention_heatmap(attention: Any, peer_index: Any, num_agents: int | None = None,
                      max_agents: int = 100) -> Figure:
    """Dense agent-to-agent attention matrix from slot attention [N, K] and peer rows [N, K].

    Row i, column j: the weight agent i puts on agent j (empty slots, peer -1, are ignored).
    Only the first ``max_agents`` rows and columns are drawn, so large populations stay legible.
    """
    weights = _array(attention, "attention", 2)
    total = weights.shape[0] if num_agents is None else int(num_agents)
    figure = _figure(7, 6)
    _draw_heatmap(figure.subplots(), _attention_block(weights, peer_index, total, max_agents), total)
    return figure


def eigen_spectra(spectra: Any, steps: Any = None) -> Figure:
    """Broadcast covariance spectra: [B] as bars, or [T, B] as variance shares over time.

    A growing first layer over time means messages become low-dimensional.
    """
    values = _array(spectra, "spectra", (1, 2))
    figure = _figure(8, 4.5)
    ax = figure.subplots()
    if values.ndim == 1:
        _draw_spectrum(ax, values)
    else:
        _draw_spectra_over_time(ax, _steps(len(values), steps, "spectra"), values)
    return figure


def topology_histogram(hash_counts: Mapping[str, int], sizes: Mapping[str, int] | None = None,
                       examples: Mapping[str, nx.Graph] | None = None, max_shapes: int = 8) -> Figure:
    """Histogram of favourite-graph component shapes.

    ``hash_counts``: WL hash -> number of components of that shape; ``sizes`` (hash -> agents per
    component) and ``examples`` (hash -> one component graph) label and draw each shape; all three
    come from ``metrics.graph_summary``. The ``max_shapes`` most common shapes are shown.
    """
    figure = _figure(9, 4.5)
    ax = figure.subplots()
    if not hash_counts:
        _no_data(ax, "Favourite-graph component shapes", "no components")
    else:
        _draw_topology(ax, hash_counts, sizes, examples, max_shapes)
    return figure


def degree_pagerank(in_degree: Any, pagerank: Any) -> Figure:
    """Favourite-graph in-degree distribution [N] and PageRank [N] against in-degree."""
    degree = _array(in_degree, "in_degree", 1)
    rank = _array(pagerank, "pagerank", 1)
    if len(degree) != len(rank):
        raise ValueError(f"pagerank: expected {len(degree)} entries like in_degree, got {len(rank)}")
    figure = _figure(12, 4.5)
    left, right = figure.subplots(1, 2)
    _draw_degree_histogram(left, degree)
    _draw_degree_pagerank(right, degree, rank)
    return figure


def effort_vs_consumption(effort: Any, consumption: Any, jobs: Any = None,
                          job_names: Sequence[str] | None = None) -> Figure:
    """Each agent's effort [N] against its consumption ([N], or [N, R] summed over goods)."""
    work = _array(effort, "effort", 1)
    eaten = _array(consumption, "consumption", (1, 2))
    eaten = eaten.sum(axis=1) if eaten.ndim == 2 else eaten
    job_of = None if jobs is None else _array(jobs, "jobs", 1)
    if len(eaten) != len(work) or (job_of is not None and len(job_of) != len(work)):
        raise ValueError(f"consumption, jobs: expected {len(work)} agents like effort")
    figure = _figure(7, 5)
    _draw_effort_consumption(figure.subplots(), work, eaten, job_of,
                             list(job_names) if job_names is not None else None)
    return figure


# --------------------------------------------------------------------------- dashboard

DASHBOARD_KEYS: dict[str, str] = {
    # time series, one entry per logged step (all the same length T when "steps" is given)
    "steps": "[T] env step of each logged entry (x axis; default 0..T-1)",
    "gini": "[T] Gini coefficient of wealth",
    "totals": "[T, R] total holdings of each good after trade (units)",
    "prices": "[T, R] clearing prices (any scale; plotted relative, sum 1)",
    "job_shares": "[T, J] fraction of agents in each job",
    "births": "[T] births per step",
    "deaths_age": "[T] deaths of old age per step",
    "deaths_starvation": "[T] deaths of starvation per step",
    "reward": "[T] mean reward per agent",
    "participation_ratio": "[T] effective dimension of broadcasts",
    "attention_entropy": "[T] mean attention entropy (nats)",
    "spectra": "[T, B] broadcast covariance eigenvalues, descending",
    # snapshot of the current population
    "ages": "[N] age of each agent (steps)",
    "broadcasts": "[N, B] last broadcast of each agent",
    "jobs": "[N] current job of each agent (int)",
    "attention": "[N, K] attention over peer slots",
    "peer_index": "[N, K] agent row shown in each slot, -1 for empty",
    "effort": "[N] effort in [0, 1]",
    "consumption": "[N] or [N, R] units consumed",
    "holdings_before": "[N, R] holdings before the last trade",
    "holdings_after": "[N, R] holdings after the last trade",
    # labels and constants
    "resource_names": "list of R names",
    "job_names": "list of J names",
    "max_age": "number, the age limit (steps)",
}

DASHBOARD_MAX_AGENTS = 100  # attention heatmap rows and columns drawn at most


def _history_array(history: Mapping[str, Any], key: str, ndim: int) -> np.ndarray | None:
    """history[key] as a float array of ``ndim`` dims, or None when absent or empty."""
    if history.get(key) is None:
        return None
    array = metrics.to_numpy(history[key], dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"history[{key!r}]: expected {ndim}-D ({DASHBOARD_KEYS[key]}), got shape {array.shape}")
    return array if array.size else None


def _with_legend(draw: Callable[..., None], ax: Axes, *args: Any, **kwargs: Any) -> None:
    """Call a line-drawing panel, then add a legend even for a single labelled series."""
    draw(ax, *args, **kwargs)
    _legend(ax, loc="best")


def _dashboard_panels(history: Mapping[str, Any]) -> list[Callable[[Axes], None]]:
    """One drawing function per panel whose data the history holds, in reading order."""
    get = functools.partial(_history_array, history)
    steps = get("steps", 1)

    def x_of(key: str, values: np.ndarray) -> np.ndarray:
        return _steps(len(values), steps, f"history[{key!r}]")

    resource_names = history.get("resource_names")
    job_names = list(history["job_names"]) if history.get("job_names") is not None else None
    max_age = history.get("max_age")
    panels: list[Callable[[Axes], None]] = []
    add = lambda draw, *args, **kwargs: panels.append(functools.partial(draw, *args, **kwargs))  # noqa: E731

    # Economy over time.
    if (gini := get("gini", 1)) is not None:
        add(_draw_lines, x=x_of("gini", gini), series={"Gini": gini}, title="Wealth inequality (Gini)",
            ylabel="Gini coefficient", ylim=(0, 1))
    if (reward := get("reward", 1)) is not None:
        add(_draw_lines, x=x_of("reward", reward), series={"reward": reward}, title="Mean reward",
            ylabel="reward per agent per step")
    if (totals := get("totals", 2)) is not None:
        names = _names(resource_names, totals.shape[1], "resource")
        add(_with_legend, _draw_lines, x=x_of("totals", totals), series=dict(zip(names, totals.T)),
            title="Total holdings after trade", ylabel="units")
    prices = get("prices", 2)
    if prices is not None:
        relative = metrics.relative_prices(prices)
        names = _names(resource_names, prices.shape[1], "resource")
        add(_with_legend, _draw_lines, x=x_of("prices", relative), series=dict(zip(names, relative.T)),
            title="Relative prices", ylabel="price (sum over goods = 1)", ylim=(0, 1))
    if (shares := get("job_shares", 2)) is not None:
        add(_draw_stack, x=x_of("job_shares", shares), shares=shares,
            labels=_names(job_names, shares.shape[1], "job"), title="Job shares", ylabel="share of agents")
    events = _population_events(get("births", 1), get("deaths_age", 1), get("deaths_starvation", 1))
    if events:
        first_key, first = next(iter(events.items()))
        add(_draw_population_events, x=x_of(first_key, first), events=events)

    # Population snapshot.
    ages = get("ages", 1)
    if ages is not None:
        add(_draw_age_histogram, ages=ages, max_age=max_age)
    effort, jobs = get("effort", 1), get("jobs", 1)
    consumption = None if history.get("consumption") is None else metrics.to_numpy(history["consumption"], np.float64)
    if effort is not None and consumption is not None and consumption.size:
        eaten = consumption.sum(axis=1) if consumption.ndim == 2 else consumption
        job_colour = jobs if jobs is not None and len(jobs) == len(effort) else None
        add(_draw_effort_consumption, effort=effort, consumption=eaten, jobs=job_colour, job_names=job_names)
    before, after = get("holdings_before", 2), get("holdings_after", 2)
    if before is not None and after is not None:
        add(_draw_net_trade, before=before, after=after, prices=None if prices is None else prices[-1],
            names=_names(resource_names, before.shape[1], "resource"))

    # Communication.
    broadcasts = get("broadcasts", 2)
    if broadcasts is not None:
        coords, explained = metrics.broadcast_pca(broadcasts)
        if jobs is not None and len(jobs) == len(coords):
            add(_draw_pca, coords=coords, explained=explained, colour_by=jobs, categorical=True,
                labels=job_names, title="Broadcasts by job")
        else:
            by_age = ages is not None and len(ages) == len(coords)
            add(_draw_pca, coords=coords, explained=explained, colour_by=ages if by_age else None,
                categorical=False, labels=None, title="Broadcasts by age" if by_age else "Broadcasts")
    if (spectra := get("spectra", 2)) is not None:
        add(_draw_spectra_over_time, x=x_of("spectra", spectra), spectra=spectra)
    elif broadcasts is not None:
        add(_draw_spectrum, spectrum=metrics.covariance_spectrum(broadcasts))
    if (ratio := get("participation_ratio", 1)) is not None:
        add(_draw_lines, x=x_of("participation_ratio", ratio), series={"participation ratio": ratio},
            title="Broadcast effective dimension", ylabel="participation ratio (dims)")

    # Social filtering.
    if (entropy := get("attention_entropy", 1)) is not None:
        add(_draw_lines, x=x_of("attention_entropy", entropy), series={"entropy": entropy},
            title="Attention entropy", ylabel="entropy (nats)")
    attention, peer_index = get("attention", 2), history.get("peer_index")
    if attention is not None and peer_index is not None:
        summary = metrics.graph_summary(metrics.favourite_graph(attention, peer_index))
        add(_draw_heatmap, dense=_attention_block(attention, peer_index, len(attention), DASHBOARD_MAX_AGENTS),
            total_agents=len(attention))
        add(_draw_topology, hash_counts=summary["component_hashes"], sizes=summary["component_sizes"],
            examples=summary["component_examples"], max_shapes=6)
        add(_draw_degree_pagerank, in_degree=summary["in_degree"], pagerank=summary["pagerank"])
    return panels


def dashboard(history: Mapping[str, Any], title: str | None = None) -> Figure:
    """One figure (16 x 10 inches) with a panel for every series the history holds.

    ``history`` is a plain dict of arrays (NumPy or torch) so train.py and evaluate.py can fill it;
    every key is optional and :data:`DASHBOARD_KEYS` lists them with shapes. Panels whose data is
    missing are left out rather than drawn empty, and rows are widened to fill the width; with no
    data at all a single "no data yet" panel is drawn. Unknown keys raise ValueError (typos would
    otherwise silently drop a panel).
    """
    unknown = sorted(set(history) - set(DASHBOARD_KEYS))
    if unknown:
        raise ValueError(f"history: unknown keys {unknown}; expected some of {sorted(DASHBOARD_KEYS)}")
    panels = _dashboard_panels(history)
    figure = _figure(16, 10)
    if title:
        figure.suptitle(title, fontsize=TITLE_SIZE + 2)
    if not panels:
        _no_data(figure.add_subplot(), "HomoEcon dashboard")
        return figure
    columns = 1 if len(panels) == 1 else 2 if len(panels) <= 4 else 3 if len(panels) <= 9 else 4
    rows = math.ceil(len(panels) / columns)
    # One subfigure per row: panels in a short last row widen to fill it, and a colour bar in
    # one row does not shift the columns of the others.
    for row, subfigure in enumerate(np.atleast_1d(figure.subfigures(rows, 1))):
        in_row = panels[row * columns:(row + 1) * columns]
        for draw, ax in zip(in_row, np.atleast_1d(subfigure.subplots(1, len(in_row)))):
            draw(ax)
    return figure


# --------------------------------------------------------------------------- output


def dashboard_image(history: Mapping[str, Any], title: str | None = None) -> np.ndarray:
    """:func:`dashboard` rendered to pixels [H, W, 3] uint8 (for TensorBoard)."""
    return figure_to_rgb(dashboard(history, title))


def figure_to_rgb(figure: Figure) -> np.ndarray:
    """Render a figure with the Agg canvas and return its pixels [H, W, 3] uint8."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(figure: Figure, path: str | os.PathLike[str], dpi: float | None = None) -> str:
    """Write ``figure`` to ``path`` atomically; the format comes from the extension (png default).

    The image is rendered to bytes in memory, then written with
    :func:`homoecon_env.files.atomic_write_bytes` (temporary file, fsync, rename): readers never see a
    half-written file, a failure leaves any old file intact, and the file gets the usual permissions.
    Parent directories are created. Returns the path written.
    """
    target = os.fspath(path)
    extension = os.path.splitext(target)[1].lstrip(".").lower() or "png"
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if extension not in supported:
        raise ValueError(f"path: unsupported image format {extension!r} in {target!r}; "
                         f"expected one of {sorted(supported)}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=extension, dpi=dpi or figure.dpi)
    return atomic_write_bytes(target, buffer.getvalue())
