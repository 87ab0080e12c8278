"""The figure files of one recorded rollout: what report.md shows (evaluate.py; docs/design.md section 6).

A detailed trace (see :mod:`analysis`) in, files out: the trade scatter at each recorded frame
(trade_scatter/step_XXXX.png) and its animation (trade.gif), gini.png, resources_prices.png,
ages_reproduction.png, job_distribution.png, broadcast_pca.png, eigen_spectra.png,
effort_consumption.png, with attention also attention_heatmap.png, topology_early.png,
topology_late.png and degree_pagerank.png, lineage_shares.png (the Muller plot) and dialects.png, and
dashboard.png. :mod:`plots` draws each figure;
this module picks the data, names the files and writes them atomically.
"""
from __future__ import annotations

import os
from typing import Any

import imageio.v3 as iio
import numpy as np

from homoecon_env.diagnostics import lineage, metrics, plots
from homoecon_env.diagnostics.plots import chain as chain_plots
from homoecon_env.diagnostics.plots import lineage as lineage_plots
from homoecon_env.files import atomic_write_bytes


def write_gif(path: str, images: list[np.ndarray], seconds_per_frame: float = 0.8) -> None:
    """An endlessly looping GIF of equally sized RGB frames, written atomically."""
    data = iio.imwrite("<bytes>", np.stack(images), extension=".gif", duration=int(1000 * seconds_per_frame), loop=0)
    atomic_write_bytes(path, data)


def dashboard_history(trace: dict, config) -> dict:
    """The first rollout as the dict plots.dashboard takes (plots.DASHBOARD_KEYS)."""
    final = trace["final"]
    history = {
        "steps": np.arange(1, len(trace["reward"]) + 1), "gini": trace["gini"], "totals": trace["totals"],
        "prices": trace["prices"], "job_shares": trace["job_shares"], "births": trace["births"],
        "deaths_age": trace["deaths_age"], "deaths_starvation": trace["deaths_starvation"], "reward": trace["reward"],
        "participation_ratio": trace["participation_ratio"], "attention_entropy": trace["entropy_nats"],
        "spectra": trace["spectra"], "ages": final["ages"], "broadcasts": final["broadcasts"], "jobs": final["jobs"],
        "attention": final["attention"], "peer_index": final["peer_index"], "effort": final["effort"],
        "consumption": final["consumption"], "holdings_before": final["holdings_before"],
        "holdings_after": final["holdings_after"], "resource_names": list(config.resources),
        "job_names": [job.name for job in config.jobs], "max_age": config.max_age}
    if final["attention"] is None:  # a learner without attention (e.g. random): no social-filter panels
        for key in ("attention", "peer_index", "attention_entropy"):
            del history[key]
    return history


def draw_figures(trace: dict, config, out: str) -> dict:
    """Every figure of a detailed trace, written into ``out``; returns name -> path relative to ``out``
    (plus the trade-scatter and topology steps), as metrics.json's "figures" entry.

    ``config``: the rollout's EconomyConfig (read: resources, jobs, max_age).
    """
    written: dict[str, Any] = {}

    def save(key: str, figure, name: str) -> None:
        plots.save_figure(figure, os.path.join(out, name))
        written[key] = name

    goods, job_names = list(config.resources), [job.name for job in config.jobs]
    steps = np.arange(1, len(trace["reward"]) + 1)
    final = trace["final"]

    # The seed's trade scatter, one frame per recorded step, and its animation.
    images, frame_steps = [], []
    for frame in trace["frames"]:
        figure = plots.trade_scatter(frame["before"], frame["after"], frame["prices"], goods)
        figure.suptitle(f"Market clearing at step {frame['step']}", fontsize=12)
        plots.save_figure(figure, os.path.join(out, "trade_scatter", f"step_{frame['step']:04d}.png"))
        images.append(plots.figure_to_rgb(figure))
        frame_steps.append(frame["step"])
    write_gif(os.path.join(out, "trade.gif"), images)
    written["trade_scatter"] = [f"trade_scatter/step_{t:04d}.png" for t in frame_steps]
    written["trade_scatter_steps"] = frame_steps
    written["trade_gif"] = "trade.gif"

    save("gini", plots.gini_over_time(trace["gini"], steps), "gini.png")
    save("resources_prices", plots.resources_over_time(trace["totals"], trace["prices"], goods, steps),
         "resources_prices.png")
    save("ages_reproduction", plots.ages_and_reproduction(final["ages"], trace["births"], trace["deaths_age"],
                                                          trace["deaths_starvation"], config.max_age, steps),
         "ages_reproduction.png")
    save("job_distribution", plots.job_distribution(trace["job_shares"], job_names, steps), "job_distribution.png")
    coords, explained = metrics.broadcast_pca(final["broadcasts"])
    save("broadcast_pca", plots.broadcast_pca(coords, final["jobs"], final["ages"], explained, job_names),
         "broadcast_pca.png")
    save("eigen_spectra", plots.eigen_spectra(trace["spectra"], steps), "eigen_spectra.png")
    save("effort_consumption", plots.effort_vs_consumption(final["effort"], final["consumption"], final["jobs"],
                                                           job_names), "effort_consumption.png")
    if final["attention"] is not None:
        save("attention_heatmap", plots.attention_heatmap(final["attention"], final["peer_index"]),
             "attention_heatmap.png")
        first, last = trace["graphs"][0], trace["graphs"][-1]
        for key, graph in (("topology_early", first), ("topology_late", last)):
            figure = plots.topology_histogram(graph["component_hashes"], graph["component_sizes"],
                                              graph["component_examples"])
            figure.suptitle(f"Favourite graph at step {graph['step']}", fontsize=12)
            save(key, figure, f"{key}.png")
        written["topology_steps"] = [first["step"], last["step"]]
        save("degree_pagerank", plots.degree_pagerank(last["in_degree"], last["pagerank"]), "degree_pagerank.png")
    if "agents" in trace:  # lineages (docs/design.md section 9)
        _, arrays = lineage.lineage_summary(trace)
        names = [f"agent_{founder}" for founder in arrays["founders"]]
        save("lineage_shares", lineage_plots.lineage_shares(arrays["shares"], names, steps), "lineage_shares.png")
        save("dialects", lineage_plots.dialects_over_time(arrays["dialects"], arrays["family_dialects"]),
             "dialects.png")
    save("dashboard", plots.dashboard(dashboard_history(trace, config), title="HomoEcon evaluation: first rollout"),
         "dashboard.png")
    return written


def draw_chain_figures(trace: dict, config, out: str) -> dict:
    """The supply-chain figures of a trace whose economy's jobs use inputs (``trace["chain"]``): chain_output.png,
    chain_flow.png, chain_value_added.png, chain_bottlenecks.png; returns name -> path relative to ``out``."""
    chain, goods, job_names = trace["chain"], list(config.resources), [job.name for job in config.jobs]
    figures = {"chain_output": chain_plots.output_per_layer(chain, goods),
               "chain_flow": chain_plots.flow(chain, goods, job_names),
               "chain_value_added": chain_plots.value_added(chain, goods),
               "chain_bottlenecks": chain_plots.bottlenecks(chain, goods, job_names)}
    written = {}
    for key, figure in figures.items():
        plots.save_figure(figure, os.path.join(out, f"{key}.png"))
        written[key] = f"{key}.png"
    return written


MAP_STEPS = 4  # time points (rows) of space_maps.png
MAP_GIF_STEPS = 12  # frames of space_maps.gif


def _evenly(steps: int, count: int) -> list[int]:
    return np.unique(np.linspace(1, steps, min(count, steps)).round().astype(int)).tolist()


def space_map_layers(trace: dict, steps: list[int], num_regions: int, controller=None) -> dict:
    """The maps' layers at 1-based ``steps`` of a spatial trace: population, relative price of good 0 (where
    at least diagnostics.space.MIN_MARKET agents trade), mean wealth and controller (-1 everywhere without
    a genealogy) per region, each [S, G]."""
    from homoecon_env.diagnostics import space

    rows = np.asarray(steps) - 1
    population = space.region_counts(trace["regions"][rows], num_regions).astype(np.float64)
    market = population >= space.MIN_MARKET  # a lone agent's "price" is not a market's (as in the dispersion)
    return {"population": population, "price": np.where(market, trace["region_prices"][rows, :, 0], np.nan),
            "wealth": trace["region_wealth"][rows],
            "controller": (np.full((len(rows), num_regions), -1) if controller is None else controller[rows])}


def draw_space_figures(trace: dict, width: int, height: int, goods: list[str], out: str) -> dict:
    """The figures of a spatial trace (docs/design.md section 13): space_maps.png (a few time points),
    space_maps.gif (the same maps over more steps, one row per frame), space_dispersion.png,
    space_control.png (with a genealogy) and space_flows.png; returns name -> path relative to ``out``."""
    from homoecon_env.diagnostics import space
    from homoecon_env.diagnostics.plots import space as space_plots

    num_regions, steps = width * height, len(trace["regions"])
    controller = share = None
    if "agents" in trace:
        controller, share = space.controllers(trace["regions"], space.lineage_rows(trace["ids"], trace["agents"]),
                                              num_regions)
    every = space_map_layers(trace, list(range(1, steps + 1)), num_regions, controller)
    limits = space_plots.map_limits(every)
    palette = space_plots.lineage_palette(every["controller"])
    label = f"relative price of {goods[0]}"
    written: dict[str, Any] = {}

    def save(key: str, figure, name: str) -> None:
        plots.save_figure(figure, os.path.join(out, name))
        written[key] = name

    map_steps = _evenly(steps, MAP_STEPS)
    save("space_maps", space_plots.region_maps(space_map_layers(trace, map_steps, num_regions, controller), map_steps,
                                               width, height, label, palette, limits), "space_maps.png")
    written["space_map_steps"] = map_steps
    images, gif_steps = [], _evenly(steps, MAP_GIF_STEPS)
    for step in gif_steps:
        figure = space_plots.region_maps(space_map_layers(trace, [step], num_regions, controller), [step], width,
                                         height, label, palette, limits)
        images.append(plots.figure_to_rgb(figure))
    write_gif(os.path.join(out, "space_maps.gif"), images)
    written["space_maps_gif"], written["space_map_gif_steps"] = "space_maps.gif", gif_steps
    dispersion = space.price_dispersion(trace["region_prices"], space.region_counts(trace["regions"], num_regions))
    save("space_dispersion", space_plots.dispersion_over_time(dispersion), "space_dispersion.png")
    if controller is not None:
        changes = space.control_changes(controller).sum(axis=1)
        with np.errstate(invalid="ignore"):
            mean_share = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in share])
        save("space_control", space_plots.control_over_time(changes, mean_share), "space_control.png")
    flows, moves = space.migration_flows(trace["regions"], trace["ids"], num_regions)
    save("space_flows", space_plots.migration_flows(flows, space.net_inflow(flows), width, height, moves),
         "space_flows.png")
    return written


def draw_space_sweep(sweep: dict, out: str) -> dict:
    """space_dispersion_cost.png from metrics.json's space sweep (`diagnostics.space.sweep_results`)."""
    from homoecon_env.diagnostics.plots import space as space_plots

    arms = [sweep["arms"][str(float(cost))] for cost in sweep["costs"]]
    stat = lambda key: {"mean": [a[key]["mean"] for a in arms], "ci95": [a[key]["ci95"] for a in arms]}  # noqa: E731
    figure = space_plots.dispersion_against_cost(sweep["costs"], stat("space_dispersion_early"),
                                                 stat("space_dispersion_late"))
    plots.save_figure(figure, os.path.join(out, "space_dispersion_cost.png"))
    return {"space_dispersion_cost": "space_dispersion_cost.png"}
