"""Economy-wide figures of a step, for loggers (docs/design.md section 3). NumPy only.

The core reports these itself, so it never imports `homoecon_env.diagnostics` (which re-exports
`gini` from here). Every figure is computed from arrays the step already made, on first access of
`Economy.last_stats`: a rollout that never reads them does not pay for them.

The goods ledger closes on every step, per good r (to rounding, 1e-9 relative):

    holdings before + produced - inputs_used - consumed - decayed - lost + founder_endowment
        - migration_lost == holdings after

(``migration_lost`` only in spatial worlds, docs/design.md section 13: goods movers paid, destroyed.)

(trade only moves goods between agents, and a parent's gift to its child moves them too).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from homoecon_env.config import EconomyConfig
from homoecon_env.core.lifecycle import AGE, STARVATION
from homoecon_env.core.production import JobTable
from homoecon_env.core.space import region_control

__all__ = ["StepRecord", "gini", "step_stats"]


def gini(values: Any) -> float:
    """Gini coefficient of a 1-D nonnegative array (e.g. wealth [N]); torch tensors are accepted.

    Population definition: the mean absolute difference over all ordered pairs (self-pairs
    included) over twice the mean, sum_ij |x_i - x_j| / (2 n^2 mean(x)), computed from the sorted
    values as 2 sum_i i x_(i) / (n sum x) - (n + 1) / n (i = 1..n), in O(n log n). It lies in
    [0, 1 - 1/n]: [0, 0, 0, 1] gives 0.75. Returns 0.0 when there is no inequality to measure (all
    values equal, all zero, or none). Raises ValueError on negative, non-finite or non-1-D input.
    """
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"gini values: expected a 1-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("gini values: contains nan or inf; expected finite values")
    if x.size and x.min() < 0:
        raise ValueError(f"gini values: expected nonnegative values, got min {x.min()}")
    n, total = x.size, x.sum()
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    coefficient = 2.0 * float(ranks @ np.sort(x)) / (n * total) - (n + 1) / n
    return float(max(coefficient, 0.0))  # rounding can give -1e-17 for equal values


class StepRecord(NamedTuple):
    """The arrays of one step that its figures are computed from (NumPy, rows are slots)."""

    ages_before: np.ndarray  # [N] ages of the agents that acted
    produced: np.ndarray  # [N, R]
    pre_trade: np.ndarray  # [N, R] holdings entering the market
    trade: Any  # TradeResult
    consumed: np.ndarray  # [N, R]
    reward: np.ndarray  # [N]
    cause: np.ndarray  # [N] death cause codes
    births: Any  # lifecycle.Births (torch)
    lost: np.ndarray  # [R] holdings of the childless dead
    job: np.ndarray  # [N] jobs chosen
    effort: np.ndarray  # [N] effort actually spent
    migration_lost: Any = None  # [R] goods movers paid (spatial worlds; None otherwise)
    moved: Any = None  # [N] bool, slots whose region changed this step (spatial worlds)
    region: Any = None  # [N] region each slot worked and traded in (after its move)
    state_before: Any = None  # the NumPy state the step started from (spatial worlds: control before)


def step_stats(record: StepRecord, holdings_after: np.ndarray, step: int, jobs: JobTable,
               config: EconomyConfig, state_after=None) -> dict:
    """The figures of one step (a few microseconds each). ``holdings_after`` [N, R] is the state
    after the step (newborns included), ``step`` the steps completed. Keys as `Economy.last_stats`.
    Spatial worlds (``state_after``, the NumPy state after the step, is then required) add the keys of
    `spatial_stats`, and ``prices`` is the population-weighted mean of the regions' prices."""
    trade = record.trade
    after_trade = trade.allocation.numpy()  # [N, R]
    num_resources = after_trade.shape[1]
    if jobs.needs_inputs:
        inputs_used = record.effort @ jobs.inputs[record.job]  # [R] = sum_i effort_i * inputs of i's job
    else:
        inputs_used = np.zeros(num_resources)
    born = record.births.born.numpy()
    founder_endowment = holdings_after[born].sum(axis=0) if record.births.founders else np.zeros(num_resources)
    figures = {
        "step": step,
        "totals": after_trade.sum(axis=0),
        "produced": record.produced.sum(axis=0),
        "inputs_used": inputs_used,
        "consumed": record.consumed.sum(axis=0),
        "decayed": (after_trade - record.consumed).sum(axis=0) * config.decay_rate,
        "lost": record.lost,
        "founder_endowment": founder_endowment,
        "prices": trade.prices.numpy(),
        "trade_volume": float(0.5 * np.abs(after_trade - record.pre_trade).sum()),
        "gini": gini(after_trade.sum(axis=1)),
        "mean_reward": float(record.reward.mean()),
        "mean_age": float(record.ages_before.mean()),  # of the agents that acted
        "births": int(np.count_nonzero(born)),
        "founders": record.births.founders,
        "deaths_age": int(np.count_nonzero(record.cause == AGE)),
        "deaths_starvation": int(np.count_nonzero(record.cause == STARVATION)),
        "job_counts": np.bincount(record.job, minlength=config.num_jobs),
        "mean_effort": float(record.effort.mean()),  # effort actually spent
        "trade_iterations": int(trade.iterations),  # projected-gradient steps
        "trade_init_iterations": int(trade.init_iterations),  # Newton steps of the dual start
        "trade_outer_iterations": int(trade.outer_iterations),  # IR multiplier updates
        "trade_converged": bool(trade.converged),
        "trade_ir_violation": float(trade.ir_violation),
        "trade_conservation_error": float(trade.conservation_error),
        "trade_kkt_residual": float(trade.kkt_residual),
    }
    if config.spatial:
        figures.update(spatial_stats(record, state_after, config))
        figures["prices"] = mean_price(figures["region_prices"], np.bincount(record.region,
                                                                             minlength=config.num_regions))
    return figures


def spatial_stats(record: StepRecord, state_after, config: EconomyConfig) -> dict:
    """The figures of space (docs/design.md section 13): ``migration_lost`` [R] (goods movers paid, part of
    the ledger), ``movers``, ``region_prices`` [G, R] (NaN rows: no market there this step),
    ``region_population`` [G] (live agents at the end of the step), ``region_traders`` [G] (agents in
    each region's market this step); territory (issue 17): ``region_control`` [G] (the founder id of the
    lineage, by first-parent descent, with the most live members in the region at the end of the step; -1
    where nobody lives; ties to the lowest id), ``region_control_share`` [G] (its share of the region's
    population), ``control_changes`` (regions whose controller differs from the one at the step's start)."""
    g = config.num_regions
    before = record.state_before
    control_before, _ = region_control(before.region, before.lineage, before.alive, g)
    control, share = region_control(state_after.region, state_after.lineage, state_after.alive, g)
    return {
        "region_control": control,
        "region_control_share": share,
        "control_changes": int(np.count_nonzero(control != control_before)),
        "migration_lost": record.migration_lost,
        "movers": int(np.count_nonzero(record.moved)),
        "region_prices": record.trade.prices.numpy(),
        "region_population": np.bincount(state_after.region[state_after.alive], minlength=config.num_regions),
        "region_traders": np.bincount(record.region, minlength=config.num_regions),
    }


def mean_price(region_prices: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """[R] the ``weight``-weighted mean of the regions' price rows (NaN rows carry no weight)."""
    rows = ~np.isnan(region_prices).any(axis=1) & (weight > 0)
    if not rows.any():
        return np.zeros(region_prices.shape[1])
    return weight[rows] @ region_prices[rows] / weight[rows].sum()
