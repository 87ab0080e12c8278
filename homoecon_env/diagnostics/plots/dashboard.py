"""The dashboard: one figure with a panel for every series a run's history holds (train.py, evaluate.py).

``history`` is a plain dict of arrays (NumPy or torch); :data:`DASHBOARD_KEYS` lists its keys with
shapes. Shapes: N agents, R resources, J jobs, K observed peers, B broadcast dim, T logged steps.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from homoecon_env.diagnostics import graphs, metrics
from homoecon_env.diagnostics.arrays import to_numpy
from homoecon_env.diagnostics.plots.base import (
    TITLE_SIZE,
    add_legend,
    figure_to_rgb,
    names_or_default,
    new_figure,
    no_data,
    x_values,
)
from homoecon_env.diagnostics.plots.panels import (
    attention_block,
    draw_age_histogram,
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
    population_events,
)

__all__ = ["DASHBOARD_KEYS", "dashboard", "dashboard_image"]

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
    array = to_numpy(history[key], dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"history[{key!r}]: expected {ndim}-D ({DASHBOARD_KEYS[key]}), got shape {array.shape}")
    return array if array.size else None


def _with_legend(draw: Callable[..., None], ax: Axes, *args: Any, **kwargs: Any) -> None:
    """Call a line-drawing panel, then add a legend even for a single labelled series."""
    draw(ax, *args, **kwargs)
    add_legend(ax, loc="best")


def _dashboard_panels(history: Mapping[str, Any]) -> list[Callable[[Axes], None]]:
    """One drawing function per panel whose data the history holds, in reading order."""
    get = functools.partial(_history_array, history)
    steps = get("steps", 1)

    def x_of(key: str, values: np.ndarray) -> np.ndarray:
        return x_values(len(values), steps, f"history[{key!r}]")

    resource_names = history.get("resource_names")
    job_names = list(history["job_names"]) if history.get("job_names") is not None else None
    max_age = history.get("max_age")
    panels: list[Callable[[Axes], None]] = []
    add = lambda draw, *args, **kwargs: panels.append(functools.partial(draw, *args, **kwargs))  # noqa: E731

    # Economy over time.
    if (gini := get("gini", 1)) is not None:
        add(draw_lines, x=x_of("gini", gini), series={"Gini": gini}, title="Wealth inequality (Gini)",
            ylabel="Gini coefficient", ylim=(0, 1))
    if (reward := get("reward", 1)) is not None:
        add(draw_lines, x=x_of("reward", reward), series={"reward": reward}, title="Mean reward",
            ylabel="reward per agent per step")
    if (totals := get("totals", 2)) is not None:
        names = names_or_default(resource_names, totals.shape[1], "resource")
        add(_with_legend, draw_lines, x=x_of("totals", totals), series=dict(zip(names, totals.T)),
            title="Total holdings after trade", ylabel="units")
    prices = get("prices", 2)
    if prices is not None:
        relative = metrics.relative_prices(prices)
        names = names_or_default(resource_names, prices.shape[1], "resource")
        add(_with_legend, draw_lines, x=x_of("prices", relative), series=dict(zip(names, relative.T)),
            title="Relative prices", ylabel="price (sum over goods = 1)", ylim=(0, 1))
    if (shares := get("job_shares", 2)) is not None:
        add(draw_stack, x=x_of("job_shares", shares), shares=shares,
            labels=names_or_default(job_names, shares.shape[1], "job"), title="Job shares", ylabel="share of agents")
    events = population_events(get("births", 1), get("deaths_age", 1), get("deaths_starvation", 1))
    if events:
        first_key, first = next(iter(events.items()))
        add(draw_population_events, x=x_of(first_key, first), events=events)

    # Population snapshot.
    ages = get("ages", 1)
    if ages is not None:
        add(draw_age_histogram, ages=ages, max_age=max_age)
    effort, jobs = get("effort", 1), get("jobs", 1)
    consumption = None if history.get("consumption") is None else to_numpy(history["consumption"], np.float64)
    if effort is not None and consumption is not None and consumption.size:
        eaten = consumption.sum(axis=1) if consumption.ndim == 2 else consumption
        job_colour = jobs if jobs is not None and len(jobs) == len(effort) else None
        add(draw_effort_consumption, effort=effort, consumption=eaten, jobs=job_colour, job_names=job_names)
    before, after = get("holdings_before", 2), get("holdings_after", 2)
    if before is not None and after is not None:
        add(draw_net_trade, before=before, after=after, prices=None if prices is None else prices[-1],
            names=names_or_default(resource_names, before.shape[1], "resource"))

    # Communication.
    broadcasts = get("broadcasts", 2)
    if broadcasts is not None:
        coords, explained = metrics.broadcast_pca(broadcasts)
        if jobs is not None and len(jobs) == len(coords):
            add(draw_pca, coords=coords, explained=explained, colour_by=jobs, categorical=True,
                labels=job_names, title="Broadcasts by job")
        else:
            by_age = ages is not None and len(ages) == len(coords)
            add(draw_pca, coords=coords, explained=explained, colour_by=ages if by_age else None,
                categorical=False, labels=None, title="Broadcasts by age" if by_age else "Broadcasts")
    if (spectra := get("spectra", 2)) is not None:
        add(draw_spectra_over_time, x=x_of("spectra", spectra), spectra=spectra)
    elif broadcasts is not None:
        add(draw_spectrum, spectrum=metrics.covariance_spectrum(broadcasts))
    if (ratio := get("participation_ratio", 1)) is not None:
        add(draw_lines, x=x_of("participation_ratio", ratio), series={"participation ratio": ratio},
            title="Broadcast effective dimension", ylabel="participation ratio (dims)")

    # Social filtering.
    if (entropy := get("attention_entropy", 1)) is not None:
        add(draw_lines, x=x_of("attention_entropy", entropy), series={"entropy": entropy},
            title="Attention entropy", ylabel="entropy (nats)")
    attention, peer_index = get("attention", 2), history.get("peer_index")
    if attention is not None and peer_index is not None:
        summary = graphs.graph_summary(graphs.favourite_graph(attention, peer_index))
        add(draw_heatmap, dense=attention_block(attention, peer_index, len(attention), DASHBOARD_MAX_AGENTS),
            total_agents=len(attention))
        add(draw_topology, hash_counts=summary["component_hashes"], sizes=summary["component_sizes"],
            examples=summary["component_examples"], max_shapes=6)
        add(draw_degree_pagerank, in_degree=summary["in_degree"], pagerank=summary["pagerank"])
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
    figure = new_figure(16, 10)
    if title:
        figure.suptitle(title, fontsize=TITLE_SIZE + 2)
    if not panels:
        no_data(figure.add_subplot(), "HomoEcon dashboard")
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


def dashboard_image(history: Mapping[str, Any], title: str | None = None) -> np.ndarray:
    """:func:`dashboard` rendered to pixels [H, W, 3] uint8 (for TensorBoard)."""
    return figure_to_rgb(dashboard(history, title))
