"""The public figures for evaluate.py and report.md: each checks its inputs and draws its panels.

Every function takes arrays (NumPy or CPU torch) and returns a :class:`matplotlib.figure.Figure`;
save it with :func:`.base.save_figure`. Shapes: N agents, R resources, J jobs, K observed peers,
B broadcast dim, T logged steps.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import networkx as nx
from matplotlib.figure import Figure

from homoecon_env.diagnostics import metrics
from homoecon_env.diagnostics.plots.base import add_legend, as_array, names_or_default, new_figure, no_data, x_values
from homoecon_env.diagnostics.plots.panels import (
    attention_block,
    draw_age_histogram,
    draw_degree_histogram,
    draw_degree_pagerank,
    draw_effort_consumption,
    draw_heatmap,
    draw_lines,
    draw_net_trade,
    draw_pca,
    draw_population_events,
    draw_spectra_over_time,
    draw_spectrum,
    draw_stack,
    draw_topology,
    draw_trade_arrows,
    population_events,
)

__all__ = [
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
]


def trade_scatter(before: Any, after: Any, prices: Any = None, resource_names: Sequence[str] | None = None,
                  goods: tuple[int, int] = (0, 1)) -> Figure:
    """Two panels of one market clearing: allocations moving, and supply/demand per good.

    ``before``, ``after``: holdings [N, R] before and after trade; ``prices``: [R] clearing prices
    (any scale; shown relative) or None; ``goods``: the two goods on the allocation panel's axes.
    Left: each agent's holdings of the two goods before (hollow) and after (filled) trade, arrows
    showing the move. Right: each good's net trade per agent, agents sorted from the biggest
    seller (negative) to the biggest buyer (positive): the supply and demand met at the price.
    """
    held_before = as_array(before, "before", 2)
    held_after = as_array(after, "after", 2)
    if held_before.shape != held_after.shape:
        raise ValueError(f"after: expected shape {held_before.shape} like before, got {held_after.shape}")
    num_goods = held_before.shape[1]
    if num_goods > 1 and (goods[0] == goods[1] or not all(0 <= g < num_goods for g in goods)):
        raise ValueError(f"goods: expected two distinct indices in [0, {num_goods}), got {goods}")
    names = names_or_default(resource_names, num_goods, "resource")
    clearing = None if prices is None else as_array(prices, "prices", 1)
    figure = new_figure(12, 5)
    left, right = figure.subplots(1, 2)
    draw_trade_arrows(left, held_before, held_after, names, goods)
    draw_net_trade(right, held_before, held_after, clearing, names)
    return figure


def gini_over_time(gini: Any, steps: Any = None) -> Figure:
    """Gini coefficient of wealth [T] against env step (0 = equal, 1 = one agent holds all)."""
    values = as_array(gini, "gini", 1)
    figure = new_figure(7, 4)
    draw_lines(figure.subplots(), x_values(len(values), steps, "gini"), {"Gini": values},
               "Wealth inequality (Gini)", "Gini coefficient", ylim=(0, 1))
    return figure


def resources_over_time(totals: Any, prices: Any, names: Sequence[str] | None = None,
                        steps: Any = None) -> Figure:
    """Total holdings [T, R] (units) and relative prices [T, R] (sum 1) of each good over time."""
    stock = as_array(totals, "totals", 2)
    price = metrics.relative_prices(as_array(prices, "prices", 2))
    if price.shape != stock.shape:
        raise ValueError(f"prices: expected shape {stock.shape} like totals, got {price.shape}")
    labels = names_or_default(names, stock.shape[1], "resource")
    x = x_values(len(stock), steps, "totals")
    figure = new_figure(8, 6)
    top, bottom = figure.subplots(2, 1, sharex=True)
    draw_lines(top, x, dict(zip(labels, stock.T)), "Total holdings after trade", "units", xlabel="")
    add_legend(top, loc="best")
    draw_lines(bottom, x, dict(zip(labels, price.T)), "Relative prices", "price (sum over goods = 1)",
               ylim=(0, 1))
    add_legend(bottom, loc="best")
    return figure


def ages_and_reproduction(ages: Any, births: Any, deaths_age: Any, deaths_starvation: Any,
                          max_age: float | None = None, steps: Any = None) -> Figure:
    """Age histogram of the living [N] (steps) and births / deaths by cause per step [T]
    (deaths stacked by cause, births as an outline: see :func:`draw_population_events`)."""
    living = as_array(ages, "ages", 1)
    events = population_events(*(None if v is None else as_array(v, name, 1) for v, name in
                                  ((births, "births"), (deaths_age, "deaths_age"),
                                   (deaths_starvation, "deaths_starvation"))))
    figure = new_figure(12, 4.5)
    left, right = figure.subplots(1, 2)
    draw_age_histogram(left, living, max_age)
    if events:
        first_label, first = next(iter(events.items()))
        draw_population_events(right, x_values(len(first), steps, first_label), events)
    else:
        no_data(right, "Births and deaths per step")
    return figure


def job_distribution(job_shares: Any, job_names: Sequence[str] | None = None, steps: Any = None) -> Figure:
    """Share of agents in each job [T, J] over time, stacked (fractions summing to 1)."""
    shares = as_array(job_shares, "job_shares", 2)
    figure = new_figure(8, 4.5)
    draw_stack(figure.subplots(), x_values(len(shares), steps, "job_shares"), shares,
               names_or_default(job_names, shares.shape[1], "job"), "Job shares", "share of agents")
    return figure


def broadcast_pca(coords: Any, jobs: Any, ages: Any, explained: Any,
                  job_names: Sequence[str] | None = None) -> Figure:
    """Broadcast messages projected on two principal components, coloured by job and by age.

    ``coords``: [N, 2] (e.g. from ``metrics.broadcast_pca``); ``jobs``: [N] ints; ``ages``: [N]
    steps; ``explained``: [2] explained-variance ratios. Clusters by job mean messages carry
    job information; a gradient by age means they carry age.
    """
    points = as_array(coords, "coords", 2)
    job_of = as_array(jobs, "jobs", 1)
    age_of = as_array(ages, "ages", 1)
    ratio = as_array(explained, "explained", 1)
    if not len(job_of) == len(age_of) == len(points):
        raise ValueError(f"coords, jobs, ages: expected N rows each, got {len(points)}, {len(job_of)}, {len(age_of)}")
    names = list(job_names) if job_names is not None else None
    figure = new_figure(12, 5)
    left, right = figure.subplots(1, 2)
    draw_pca(left, points, ratio, job_of, True, names, "Broadcasts by job")
    draw_pca(right, points, ratio, age_of, False, None, "Broadcasts by age")
    return figure


def attention_heatmap(attention: Any, peer_index: Any, num_agents: int | None = None,
                      max_agents: int = 100) -> Figure:
    """Dense agent-to-agent attention matrix from slot attention [N, K] and peer rows [N, K].

    Row i, column j: the weight agent i puts on agent j (empty slots, peer -1, are ignored).
    Only the first ``max_agents`` rows and columns are drawn, so large populations stay legible.
    """
    weights = as_array(attention, "attention", 2)
    total = weights.shape[0] if num_agents is None else int(num_agents)
    figure = new_figure(7, 6)
    draw_heatmap(figure.subplots(), attention_block(weights, peer_index, total, max_agents), total)
    return figure


def eigen_spectra(spectra: Any, steps: Any = None) -> Figure:
    """Broadcast covariance spectra: [B] as bars, or [T, B] as variance shares over time.

    A growing first layer over time means messages become low-dimensional.
    """
    values = as_array(spectra, "spectra", (1, 2))
    figure = new_figure(8, 4.5)
    ax = figure.subplots()
    if values.ndim == 1:
        draw_spectrum(ax, values)
    else:
        draw_spectra_over_time(ax, x_values(len(values), steps, "spectra"), values)
    return figure


def topology_histogram(hash_counts: Mapping[str, int], sizes: Mapping[str, int] | None = None,
                       examples: Mapping[str, nx.Graph] | None = None, max_shapes: int = 8) -> Figure:
    """Histogram of favourite-graph component shapes.

    ``hash_counts``: WL hash -> number of components of that shape; ``sizes`` (hash -> agents per
    component) and ``examples`` (hash -> one component graph) label and draw each shape; all three
    come from ``graphs.graph_summary``. The ``max_shapes`` most common shapes are shown.
    """
    figure = new_figure(9, 4.5)
    ax = figure.subplots()
    if not hash_counts:
        no_data(ax, "Favourite-graph component shapes", "no components")
    else:
        draw_topology(ax, hash_counts, sizes, examples, max_shapes)
    return figure


def degree_pagerank(in_degree: Any, pagerank: Any) -> Figure:
    """Favourite-graph in-degree distribution [N] and PageRank [N] against in-degree."""
    degree = as_array(in_degree, "in_degree", 1)
    rank = as_array(pagerank, "pagerank", 1)
    if len(degree) != len(rank):
        raise ValueError(f"pagerank: expected {len(degree)} entries like in_degree, got {len(rank)}")
    figure = new_figure(12, 4.5)
    left, right = figure.subplots(1, 2)
    draw_degree_histogram(left, degree)
    draw_degree_pagerank(right, degree, rank)
    return figure


def effort_vs_consumption(effort: Any, consumption: Any, jobs: Any = None,
                          job_names: Sequence[str] | None = None) -> Figure:
    """Each agent's effort [N] against its consumption ([N], or [N, R] summed over goods)."""
    work = as_array(effort, "effort", 1)
    eaten = as_array(consumption, "consumption", (1, 2))
    eaten = eaten.sum(axis=1) if eaten.ndim == 2 else eaten
    job_of = None if jobs is None else as_array(jobs, "jobs", 1)
    if len(eaten) != len(work) or (job_of is not None and len(job_of) != len(work)):
        raise ValueError(f"consumption, jobs: expected {len(work)} agents like effort")
    figure = new_figure(7, 5)
    draw_effort_consumption(figure.subplots(), work, eaten, job_of,
                            list(job_names) if job_names is not None else None)
    return figure
