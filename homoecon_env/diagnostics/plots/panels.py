"""Panels: functions that draw one kind of content into a given matplotlib ``Axes``.

The public figures (:mod:`.figures`) and the dashboard (:mod:`.dashboard`) are made of these, so
a panel looks the same wherever it appears. Inputs are already-checked NumPy arrays. Shapes: N
agents, R resources, J jobs, T logged steps.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import networkx as nx
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from homoecon_env.diagnostics import metrics
from homoecon_env.diagnostics.arrays import to_numpy
from homoecon_env.diagnostics.plots.base import (
    LABEL_SIZE,
    TICK_SIZE,
    add_legend,
    as_array,
    category_colour,
    point_style,
    style_axes,
)

MAX_ARROWS = 200  # trade arrows drawn at most (for an evenly spaced subset of agents)
MAX_THUMBNAIL_NODES = 40  # larger component shapes are labelled, not drawn


def draw_lines(ax: Axes, x: np.ndarray, series: Mapping[str, np.ndarray], title: str, ylabel: str,
               xlabel: str = "env step", ylim: tuple[float, float] | None = None) -> None:
    """One line per labelled series [T] against x [T]; a marker when T == 1 so it stays visible."""
    for k, (label, y) in enumerate(series.items()):
        ax.plot(x, y, label=label, color=category_colour(k), lw=1.4, marker="o" if len(y) == 1 else None)
    if ylim is not None:
        ax.set_ylim(*ylim)
    style_axes(ax, title, xlabel, ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        add_legend(ax, loc="best")


def draw_stack(ax: Axes, x: np.ndarray, shares: np.ndarray, labels: list[str], title: str,
               ylabel: str, colours: list[Any] | None = None) -> None:
    """Stacked shares [T, C] over time (bars when T == 1), each layer labelled."""
    colours = colours or [category_colour(k) for k in range(shares.shape[1])]
    if shares.shape[0] == 1:
        bottom = 0.0
        for k, label in enumerate(labels):
            ax.bar([0], [shares[0, k]], bottom=bottom, color=colours[k], label=label, width=0.6)
            bottom += shares[0, k]
        ax.set_xticks([0], [f"step {x[0]:g}"])
        style_axes(ax, title, "", ylabel)
    else:
        ax.stackplot(x, shares.T, labels=labels, colors=colours, alpha=0.85)
        ax.set_xlim(x[0], x[-1])
        style_axes(ax, title, "env step", ylabel)
    ax.set_ylim(0, max(1.0, float(shares.sum(axis=1).max())))
    add_legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # stacks fill the axes


def draw_trade_arrows(ax: Axes, before: np.ndarray, after: np.ndarray, names: list[str],
                      goods: tuple[int, int]) -> None:
    """Each agent's holdings of two goods before (hollow) and after (filled) trade, with arrows."""
    if before.shape[1] == 1:  # one good: before vs after on the diagonal picture
        ax.scatter(before[:, 0], after[:, 0], color=category_colour(0), label="agent", **point_style(len(before)))
        top = float(max(before.max(initial=0.0), after.max(initial=0.0), 1e-9))
        ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="no trade")
        style_axes(ax, "Holdings before vs after trade", f"{names[0]} before (units)", f"{names[0]} after (units)")
        add_legend(ax, loc="upper left")
        return
    first, second = goods
    style = point_style(len(before))
    ax.scatter(before[:, first], before[:, second], facecolors="none", edgecolors="grey",
               label="before trade", **style)
    ax.scatter(after[:, first], after[:, second], color=category_colour(0), label="after trade", **style)
    shown = np.unique(np.linspace(0, len(before) - 1, min(len(before), MAX_ARROWS)).astype(int))
    delta = after[shown] - before[shown]
    moved = np.abs(delta[:, [first, second]]).sum(axis=1) > 0
    if moved.any():
        ax.quiver(before[shown][moved, first], before[shown][moved, second], delta[moved, first],
                  delta[moved, second], angles="xy", scale_units="xy", scale=1, width=0.003,
                  color=category_colour(0), alpha=0.45)
    style_axes(ax, "Allocations before -> after trade", f"{names[first]} (units)", f"{names[second]} (units)")
    ax.grid(alpha=0.3)
    add_legend(ax, loc="best")


def draw_net_trade(ax: Axes, before: np.ndarray, after: np.ndarray, prices: np.ndarray | None,
                   names: list[str]) -> None:
    """Supply and demand: each good's net trade per agent, agents sorted from sellers to buyers."""
    net = after - before  # [N, R]; + bought, - sold
    num_agents = net.shape[0]
    rank = (np.arange(num_agents) + 0.5) / max(num_agents, 1)
    relative = metrics.relative_prices(prices) if prices is not None else None
    for r, name in enumerate(names):
        label = name if relative is None else f"{name} (price {relative[r]:.2f})"
        ax.plot(rank, np.sort(net[:, r]), drawstyle="steps-mid", color=category_colour(r), lw=1.6, label=label)
    ax.axhline(0.0, color="black", lw=0.8)
    volume = metrics.trade_volume(before, after)
    ax.text(0.02, 0.97, f"sold = bought = {volume:.3g} units", transform=ax.transAxes, va="top",
            fontsize=TICK_SIZE)
    style_axes(ax, "Supply (-) and demand (+) at clearing prices", "agents, sorted by net trade (fraction)",
               "net trade (units)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    add_legend(ax, loc="lower right")


def draw_age_histogram(ax: Axes, ages: np.ndarray, max_age: float | None) -> None:
    """Histogram of agent ages (steps), with the age limit marked."""
    top = max_age if max_age is not None else (ages.max() if ages.size else 1.0)
    bins = np.arange(0, math.ceil(max(top, ages.max(initial=0.0))) + 2) - 0.5
    ax.hist(ages, bins=bins, color=category_colour(0), edgecolor="white")
    if max_age is not None:
        ax.axvline(max_age, color="black", ls="--", lw=1, label=f"max_age = {max_age:g}")
        add_legend(ax, loc="upper right")
    style_axes(ax, f"Ages (mean {ages.mean():.1f})" if ages.size else "Ages", "age (steps)", "agents")


def draw_population_events(ax: Axes, x: np.ndarray, events: Mapping[str, np.ndarray]) -> None:
    """Deaths per step [T] stacked by cause (filled), births per step [T] as a black outline over them.

    Every death frees a slot that a birth refills in the same step, so births usually equal total
    deaths: drawn as lines of one kind, births would hide under the deaths. Here the top of the filled
    stack is total deaths, and the outline shows births wherever they differ from it.
    """
    deaths = {label: values for label, values in events.items() if label != "births"}
    cause_colours = {"deaths (age)": category_colour(1), "deaths (starvation)": category_colour(3)}
    colours = [cause_colours[label] for label in deaths]
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
    style_axes(ax, "Births and deaths per step", "env step", "agents per step")
    ax.grid(alpha=0.3)
    add_legend(ax, loc="upper left", ncol=len(events), handlelength=1.0, handletextpad=0.4, columnspacing=0.8)


def draw_pca(ax: Axes, coords: np.ndarray, explained: np.ndarray, colour_by: np.ndarray | None,
             categorical: bool, labels: list[str] | None, title: str) -> None:
    """Broadcasts in the plane of their first two principal components, coloured by a trait."""
    x = coords[:, 0]
    y = coords[:, 1] if coords.shape[1] > 1 else np.zeros_like(x)
    style = point_style(len(x))
    if colour_by is None:
        ax.scatter(x, y, color=category_colour(0), **style)
    elif categorical:
        for value in np.unique(colour_by).astype(int):
            chosen = colour_by == value
            name = labels[value] if labels is not None and value < len(labels) else f"job {value}"
            ax.scatter(x[chosen], y[chosen], color=category_colour(value), label=name, **style)
        add_legend(ax, loc="best", markerscale=max(1.0, 16.0 / style["s"]) ** 0.5)
    else:
        points = ax.scatter(x, y, c=colour_by, cmap="viridis", **style)
        colourbar = ax.figure.colorbar(points, ax=ax)
        colourbar.set_label("age (steps)", fontsize=LABEL_SIZE)
        colourbar.ax.tick_params(labelsize=TICK_SIZE)
    ratio = list(explained) + [0.0, 0.0]
    style_axes(ax, title, f"PC1 ({100 * ratio[0]:.0f}% of variance)", f"PC2 ({100 * ratio[1]:.0f}% of variance)")
    ax.grid(alpha=0.3)


def attention_block(attention: Any, peer_index: Any, num_agents: int, size: int) -> np.ndarray:
    """Dense attention among the first ``size`` agent rows [size, size], without building N x N.

    Attention paid to agents outside the block is left out of the picture.
    """
    weights = as_array(attention, "attention", 2)
    index = to_numpy(peer_index)
    if index.shape != weights.shape:
        raise ValueError(f"peer_index: expected shape {weights.shape} like attention, got {index.shape}")
    if index.size and (index.min() < -1 or index.max() >= num_agents):
        raise ValueError(f"peer_index: values must lie in [-1, {num_agents}), "
                         f"got min {index.min()} and max {index.max()}")
    size = min(size, len(weights), num_agents)
    block = index[:size]
    return metrics.attention_matrix(weights[:size], np.where(block < size, block, -1), size)


def draw_heatmap(ax: Axes, dense: np.ndarray, total_agents: int) -> None:
    """Agent-to-agent attention matrix [rows, columns] as an image with a colour bar."""
    image = ax.imshow(dense, cmap="magma", aspect="auto", interpolation="nearest", vmin=0.0,
                      vmax=max(float(dense.max(initial=0.0)), 1e-12))
    colourbar = ax.figure.colorbar(image, ax=ax)
    colourbar.set_label("attention weight", fontsize=LABEL_SIZE)
    colourbar.ax.tick_params(labelsize=TICK_SIZE)
    shown = dense.shape[0]
    suffix = "" if shown == total_agents else f" (first {shown} of {total_agents})"
    style_axes(ax, "Attention: who watches whom" + suffix, "attended agent (row index)",
               "attending agent (row index)")


def draw_spectrum(ax: Axes, spectrum: np.ndarray) -> None:
    """One covariance spectrum [B] as bars, with its participation ratio."""
    ranks = np.arange(1, len(spectrum) + 1)
    ax.bar(ranks, spectrum, color=category_colour(0))
    ratio = metrics.participation_ratio(spectrum)
    ax.set_xticks(ranks)
    style_axes(ax, f"Broadcast covariance spectrum (effective dim {ratio:.2f} of {len(spectrum)})",
               "principal component", "eigenvalue (variance)")
    ax.grid(alpha=0.3, axis="y")


def draw_spectra_over_time(ax: Axes, x: np.ndarray, spectra: np.ndarray) -> None:
    """Share of broadcast variance per principal component [T, B] over time, stacked."""
    totals = spectra.sum(axis=1, keepdims=True)
    shares = np.divide(spectra, totals, out=np.zeros_like(spectra), where=totals > 0)
    labels = [f"PC{k + 1}" for k in range(spectra.shape[1])]
    colours = [colormaps["viridis"](k / max(spectra.shape[1] - 1, 1)) for k in range(spectra.shape[1])]
    draw_stack(ax, x, shares, labels, "Broadcast variance by component", "share of variance", colours)


def draw_thumbnail(ax: Axes, graph: nx.DiGraph) -> None:
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


def draw_topology(ax: Axes, hash_counts: Mapping[str, int], sizes: Mapping[str, int] | None,
                  examples: Mapping[str, nx.Graph] | None, max_shapes: int) -> None:
    """Counts of component shapes (WL hashes), most common first, with a drawing of each shape."""
    ordered = sorted(hash_counts.items(), key=lambda item: (-item[1], item[0]))
    shown = ordered[:max_shapes]
    counts = np.array([count for _, count in shown], dtype=float)
    positions = np.arange(len(shown))
    ax.bar(positions, counts, color=category_colour(0), width=0.7)
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
    style_axes(ax, f"Favourite-graph component shapes ({total} component{'s' if total != 1 else ''}{suffix})",
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
        draw_thumbnail(inset, example)


def draw_degree_histogram(ax: Axes, in_degree: np.ndarray) -> None:
    """How many agents are the favourite of 0, 1, 2, ... others."""
    values, counts = np.unique(in_degree.astype(int), return_counts=True)
    ax.bar(values, counts, color=category_colour(1), width=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    style_axes(ax, "Favourite-graph in-degree", "in-degree (agents choosing it as favourite)", "agents")
    ax.grid(alpha=0.3, axis="y")


def draw_degree_pagerank(ax: Axes, in_degree: np.ndarray, pagerank: np.ndarray) -> None:
    """PageRank against in-degree: popular agents and agents admired by popular agents."""
    jitter = (np.arange(len(in_degree)) % 7 - 3) * 0.04  # deterministic spread of equal degrees
    ax.scatter(in_degree + jitter, pagerank, color=category_colour(1), **point_style(len(pagerank)))
    if len(pagerank):
        ax.axhline(1.0 / len(pagerank), color="grey", ls="--", lw=1, label="uniform 1/N")
        add_legend(ax, loc="upper left")
    style_axes(ax, "Influence: PageRank vs in-degree", "in-degree (agents)", "PageRank (sums to 1)")
    ax.grid(alpha=0.3)


def draw_effort_consumption(ax: Axes, effort: np.ndarray, consumption: np.ndarray,
                            jobs: np.ndarray | None, job_names: list[str] | None) -> None:
    """Effort in [0, 1] against total consumption per agent, coloured by job when known."""
    style = point_style(len(effort))
    if jobs is None:
        ax.scatter(effort, consumption, color=category_colour(0), **style)
    else:
        for value in np.unique(jobs).astype(int):
            chosen = jobs == value
            name = job_names[value] if job_names is not None and value < len(job_names) else f"job {value}"
            ax.scatter(effort[chosen], consumption[chosen], color=category_colour(value), label=name, **style)
        add_legend(ax, loc="best", markerscale=max(1.0, 16.0 / style["s"]) ** 0.5)
    ax.set_xlim(-0.03, 1.03)
    style_axes(ax, "Effort vs consumption", "effort (fraction, 0-1)", "consumption (units, all goods)")
    ax.grid(alpha=0.3)


def population_events(births: np.ndarray | None, deaths_age: np.ndarray | None,
                      deaths_starvation: np.ndarray | None) -> dict[str, np.ndarray]:
    """The available birth and death series [T], labelled for a legend; all must share T."""
    series = {"births": births, "deaths (age)": deaths_age, "deaths (starvation)": deaths_starvation}
    events = {label: values for label, values in series.items() if values is not None and values.size}
    if len({len(values) for values in events.values()}) > 1:
        lengths = {label: len(values) for label, values in events.items()}
        raise ValueError(f"births, deaths_age, deaths_starvation: expected equal lengths, got {lengths}")
    return events
