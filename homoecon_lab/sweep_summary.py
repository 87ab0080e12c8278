"""A sweep's outputs: results.csv (one row per trial), summary.md and comparison.png (one row or bar per
grid point, mean and 95% CI over seeds). docs/design.md section 10.

A trial's final metrics are its run's final_metrics.json (`homoecon_lab.recorder.Recorder.final_metrics`:
means over the last 10% of its env steps). Per grid point, each headline metric is the mean over the
seeds whose trial finished, with the Student t 95% half-width t_{0.975, n-1} s / sqrt(n)
(`homoecon_env.diagnostics.stats.mean_ci95`; none for n = 1).
"""
from __future__ import annotations

import csv
import io
import math
from typing import Sequence

import numpy as np

from homoecon_env.diagnostics.plots.base import new_figure, save_figure, style_axes
from homoecon_env.diagnostics.stats import mean_ci95
from homoecon_env.files import atomic_write_text

# Final metrics shown per grid point (tag in final_metrics.json -> label).
HEADLINE = {"reward/mean": "mean reward", "economy/gini": "Gini of wealth", "economy/trade_volume": "trade volume",
            "population/mean_age": "mean age", "population/deaths_starvation": "starvation deaths per step",
            "jobs/mean_effort": "mean effort"}
FIXED_COLUMNS = ("trial", "seed", "status", "wall_s", "error")  # the grid fields go after "trial"


def columns(grid_fields: Sequence[str], rows: Sequence[dict]) -> list[str]:
    """results.csv's header: trial, the grid fields, seed, status, wall_s, error, then every metric (sorted)."""
    metrics = sorted({key for row in rows for key in row} - {"point", *FIXED_COLUMNS, *grid_fields})
    return ["trial", *grid_fields, *FIXED_COLUMNS[1:], *metrics]


def write_results(path: str, grid_fields: Sequence[str], rows: Sequence[dict]) -> None:
    """results.csv, written atomically: one row per trial, floats in full precision (repr)."""
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=columns(grid_fields, rows), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: repr(value) if isinstance(value, float) else value for key, value in row.items()})
    atomic_write_text(path, stream.getvalue())


def point_statistics(points: Sequence[str], rows: Sequence[dict]) -> dict:
    """Grid point label -> {"n": finished seeds, "failed": [(trial, error)], metric: (mean, half-width)}."""
    table = {}
    for point in points:
        mine = [row for row in rows if row["point"] == point]
        finished = [row for row in mine if row["status"] == "ok"]
        entry = {"n": len(finished),
                 "failed": [(row["trial"], row["error"]) for row in mine if row["status"] == "error"],
                 "unfinished": sum(row["status"] not in ("ok", "error") for row in mine)}
        for metric in HEADLINE:
            values = [row[metric] for row in finished if metric in row and math.isfinite(row[metric])]
            entry[metric] = mean_ci95(values) if values else (math.nan, math.nan)
        table[point] = entry
    return table


def _cell(mean: float, half: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4g}" if math.isinf(half) else f"{mean:.4g} ± {half:.2g}"


def write_summary(path: str, name: str, grid: dict, points: dict, rows: Sequence[dict]) -> None:
    """summary.md: one row per grid point (its grid values, n, each headline metric as mean ± 95% CI)."""
    table = point_statistics(list(points), rows)
    fields = list(grid)
    ok = sum(row["status"] == "ok" for row in rows)
    failed = sum(row["status"] == "error" for row in rows)
    lines = [f"# Sweep {name}", "",
             f"{len(rows)} trials ({len(points)} grid points x {len({row['seed'] for row in rows})} seeds): "
             f"{ok} finished, {failed} failed, {len(rows) - ok - failed} unfinished.", "",
             "Final metrics: each run's mean of the per-step figure over its last 10% of env steps "
             "(final_metrics.json). Cells: mean ± 95% CI half-width over the n finished seeds "
             "(Student t, n - 1 degrees of freedom; no interval for n = 1).", "",
             "| " + " | ".join([*fields, "n", *HEADLINE.values()]) + " |",
             "|" + "---|" * (len(fields) + 1 + len(HEADLINE))]
    for point, values in points.items():
        entry = table[point]
        cells = [str(values[field]) for field in fields] + [str(entry["n"])]
        cells += [_cell(*entry[metric]) for metric in HEADLINE]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [(trial, error) for point in points for trial, error in table[point]["failed"]]
    if errors:
        lines += ["", "## Failed trials", "", "| trial | error |", "|---|---|"]
        lines += [f"| {trial} | {error.replace('|', '/')} |" for trial, error in errors]
    unfinished = [row["trial"] for row in rows if row["status"] not in ("ok", "error")]
    if unfinished:
        lines += ["", f"Unfinished (run the same command again to resume): {', '.join(unfinished)}."]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_figure(path: str, name: str, points: dict, rows: Sequence[dict]) -> None:
    """comparison.png: one panel per headline metric, a bar per grid point with its 95% CI and each seed's dot.

    ``points``: grid point label -> its grid values; a bar is labelled with its values, one per line."""
    table = point_statistics(list(points), rows)
    fields = list(next(iter(points.values()), {}))
    columns_ = 3
    lines = max(1, math.ceil(len(HEADLINE) / columns_))
    width = max(9.0, 1.0 + 1.2 * len(points) * columns_)
    figure = new_figure(width, 3.2 * lines)
    figure.suptitle(f"Sweep {name}: final metrics, mean and 95% CI over seeds", fontsize=11)
    x = np.arange(len(points))
    labels = [("\n".join(str(value).rpartition(":")[2] for value in values.values()) or point)
              + f"\n(n={table[point]['n']})" for point, values in points.items()]
    for k, (metric, label) in enumerate(HEADLINE.items()):
        ax = figure.add_subplot(lines, columns_, k + 1)
        means = np.array([table[point][metric][0] for point in points])
        halves = np.array([table[point][metric][1] for point in points])
        ax.bar(x, means, color="tab:blue", alpha=0.7)
        finite = np.isfinite(halves) & np.isfinite(means)
        ax.errorbar(x[finite], means[finite], yerr=halves[finite], fmt="none", ecolor="black", capsize=4)
        for i, point in enumerate(points):  # each seed's value
            seeds = [row[metric] for row in rows if row["point"] == point and row["status"] == "ok" and metric in row]
            ax.plot(np.full(len(seeds), float(i)), seeds, "o", color="tab:orange", markersize=3, zorder=3)
        ax.set_xticks(x, labels, rotation=0 if len(points) <= 4 else 30, ha="center" if len(points) <= 4 else "right")
        style_axes(ax, label, xlabel=" / ".join(fields))
    save_figure(figure, path)
