"""Supply-chain figures (docs/design.md section 9): output per layer, the flow of goods, value added, bottlenecks.

Each takes the arrays of `homoecon_env.diagnostics.supply_chain.ChainRecorder.result` (a dict called
``chain``) and names, and returns a pyplot-free Figure like the rest of :mod:`plots`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from homoecon_env.diagnostics.plots.base import add_legend, category_colour, new_figure, style_axes
from homoecon_env.diagnostics.supply_chain import final_goods, good_layers, job_layers, unit_input_cost


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` steps along axis 0 (shorter at the start)."""
    values = np.asarray(values, dtype=np.float64)
    cumulative = np.cumsum(np.concatenate([np.zeros((1, *values.shape[1:])), values]), axis=0)
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    width = (ends - starts).reshape(-1, *([1] * (values.ndim - 1)))
    return (cumulative[ends] - cumulative[starts]) / width


def output_per_layer(chain: dict, goods: Sequence[str]) -> Figure:
    """Goods made per step in each layer over time (left), and final goods made, traded and eaten (right);
    moving averages over a twentieth of the rollout."""
    layers, final = good_layers(chain["output"], chain["inputs"]), final_goods(chain["output"], chain["inputs"])
    steps = np.arange(1, len(chain["produced"]) + 1)
    window = max(1, len(steps) // 20)
    figure = new_figure(12, 4.5)
    left, right = figure.subplots(1, 2)
    for layer in range(int(layers.max()) + 1):
        members = ", ".join(g for g, keep in zip(goods, layers == layer) if keep)
        left.plot(steps, smooth(chain["produced"][:, layers == layer].sum(axis=1), window),
                  color=category_colour(layer), label=f"layer {layer}: {members}")
    style_axes(left, "Output per layer", "env step", "goods made per step")
    add_legend(left, loc="upper left")
    for key, label, colour in (("produced", "made", 0), ("traded", "traded", 1), ("consumed", "eaten", 2)):
        right.plot(steps, smooth(chain[key][:, final].sum(axis=1), window), color=category_colour(colour), label=label)
    style_axes(right, "Final goods (" + ", ".join(g for g, keep in zip(goods, final) if keep) + ")", "env step",
               "goods per step")
    add_legend(right, loc="upper left")
    return figure


def flow(chain: dict, goods: Sequence[str], job_names: Sequence[str]) -> Figure:
    """Goods (circles, one column per layer) and the jobs that turn them into each other (squares); arrow
    widths are the goods moved per step over the rollout: inputs into a job, output out of it."""
    output, inputs = chain["output"], chain["inputs"]
    layers, jobs_layer = good_layers(output, inputs), job_layers(output, inputs)
    steps = max(len(chain["produced"]), 1)
    made, used = chain["job_made"] / steps, chain["job_used"] / steps  # [J, R] per step
    figure = new_figure(11, 6)
    ax = figure.subplots()
    position = {}

    def column(items, x):
        for k, item in enumerate(items):
            position[item] = (x, (len(items) - 1) / 2 - k)

    for layer in range(int(layers.max()) + 1):
        column([("good", r) for r in np.flatnonzero(layers == layer)], 2.0 * layer)
        column([("job", j) for j in np.flatnonzero(jobs_layer == layer)], 2.0 * layer - 1.0)
    top = max(float(made.max(initial=0.0)), float(used.max(initial=0.0)), 1e-12)
    for j in range(len(job_names)):
        for r in range(len(goods)):
            for amount, start, end in ((used[j, r], ("good", r), ("job", j)), (made[j, r], ("job", j), ("good", r))):
                if amount > 0 and start in position and end in position:
                    ax.add_patch(FancyArrowPatch(position[start], position[end], arrowstyle="-|>", mutation_scale=12,
                                                 lw=0.5 + 6.0 * amount / top, color=category_colour(r), alpha=0.6,
                                                 shrinkA=14, shrinkB=14))
    for (kind, index), (x, y) in position.items():
        if kind == "good":
            ax.scatter([x], [y], s=900, color=category_colour(index), zorder=3)
            ax.annotate(goods[index], (x, y), ha="center", va="center", fontsize=8, zorder=4)
        else:
            ax.scatter([x], [y], s=1600, marker="s", color="white", edgecolor="black", zorder=3)
            ax.annotate(f"{job_names[index]}\n{made[index].sum():.2g}/step", (x, y), ha="center", va="center",
                        fontsize=7, zorder=4)
    xs = [p[0] for p in position.values()]
    ys = [p[1] for p in position.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    style_axes(ax, "Flow of goods through the chain (arrow width: goods per step; squares: jobs, with output/step)")
    return figure


def value_added(chain: dict, goods: Sequence[str]) -> Figure:
    """For each processed good: its market price and the market cost of the inputs making one unit of it,
    over time (moving averages); the gap is the value added at market prices."""
    costs = unit_input_cost(chain["output"], chain["inputs"], chain["prices"])
    steps = np.arange(1, len(chain["prices"]) + 1)
    window = max(1, len(steps) // 20)
    figure = new_figure(4 * max(len(costs), 1), 3.8)
    axes = np.atleast_1d(figure.subplots(1, max(len(costs), 1)))
    for ax, (good, cost) in zip(axes, costs.items()):
        price, cost = smooth(chain["prices"][:, good], window), smooth(cost, window)
        ax.plot(steps, price, color=category_colour(good), label="price")
        ax.plot(steps, cost, color="black", ls="--", label="input cost")
        ax.fill_between(steps, cost, price, where=price >= cost, color="tab:green", alpha=0.2, label="value added")
        ax.fill_between(steps, cost, price, where=price < cost, color="tab:red", alpha=0.2, label="value lost")
        style_axes(ax, goods[good], "env step", "relative price (sum 1)")
        add_legend(ax, loc="upper right")
    return figure


def bottlenecks(chain: dict, goods: Sequence[str], job_names: Sequence[str]) -> Figure:
    """Share of the effort wanted in each input-using job that was lost for lack of inputs, split by the
    input that ran out."""
    needs = np.flatnonzero((chain["inputs"] > 0).any(axis=1))
    wanted = chain["spent"].sum(axis=0) + chain["lost"].sum(axis=0)  # [J]
    figure = new_figure(8, 4)
    ax = figure.subplots()
    bottom = np.zeros(len(needs))
    for r, good in enumerate(goods):
        share = chain["binding"][needs, r] / np.maximum(wanted[needs], 1e-300)
        if share.any():
            ax.bar(np.arange(len(needs)), share, bottom=bottom, color=category_colour(r), label=f"{good} ran out")
            bottom += share
    ax.set_xticks(np.arange(len(needs)), [job_names[j] for j in needs])
    ax.set_ylim(0, 1)
    style_axes(ax, "Bottlenecks: effort lost for lack of inputs", "", "share of wanted effort")
    add_legend(ax, loc="upper right")
    return figure
