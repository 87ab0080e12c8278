"""Grouped market clearing: section 4's problem solved separately within each group of agents (the
regions of docs/design.md section 13), all groups in one batched solve.

Agents i with ``groups[i] = g`` trade only with each other: goods are conserved per group and good,
and each group has its own prices lambda_g [R]. The problem is separable across groups, so its dual
is a sum of G independent duals over R prices each, and Newton's method on it (``newton.py``) runs
on all groups at once:

- agents are sorted by group once (a stable radix sort) and empty groups dropped; per-group sums are
  segment sums over contiguous agents (``np.add.reduceat``, exact within each group);
- every agent's response (demand and least IR multiplier, newton._respond's closed form) uses its
  own group's prices; the start is each group's water-filling prices (for the warm-start
  multipliers, if any);
- the Hessian is G independent R x R blocks (the rank-one IR coupling summed over IR-binding agents
  only), solved as one batch (Cramer's rule for R <= 2); the line search keeps a step, a bracket
  and a verdict per group, every trial one response of all agents;
- a group's candidate is made exactly conserving (each traded cell rescaled to its group's supply)
  and IR (blended towards the endowment by the group's own violators), and the group stops as soon
  as its own KKT residual is <= tol; the others go on. One pass with the corner-safe Hessian
  (newton's second pass) replaces the plain solver's two: there is no earlier arithmetic to keep
  bit for bit. ``max_iter`` (newton) or ``init_max_iter`` (pgd) caps the updates, default 200.

A (group, good) cell nobody in the group holds or values is not traded there: its weights are
masked to 0 (no agent of the group demands it; no agent ever sees another group's goods), its
price is 0, and its goods stay with their owners. A group with no traded cell has no prices.

A group the batched Newton leaves uncertified (not seen in tests but with capped updates) is
finished alone: for pgd, projected gradient from its batched point (as pgd's dual start polishes
newton's solution; ``max_iter`` caps it), for newton, the plain newton within the updates left.
That loop runs over uncertified groups only, never in the usual path.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch

from .market import EPS, IR_ALLOWANCE, _market_data, _sum_over_goods, _utility
from .newton import (
    _TINY,
    CORNER_MAX_ITER,
    DEFAULT_MAX_ITER,
    LINE_SEARCH_SLOPE,
    LINE_SEARCH_STEPS,
    MAX_LOG_MULTIPLIER,
    MAX_PRICE_GROWTH,
    _Economy,
    _economy,
    _solve_prices,
)
from .pgd import PGD_MAX_ITER, _solve_pgd


class _Groups(NamedTuple):
    """Agents sorted by group: ``order`` [N] (stable), the non-empty groups' ids ``present`` [G'],
    their first positions in sorted order ``starts`` [G'] and sizes ``counts`` [G'], and each
    sorted agent's index among the non-empty groups ``segment`` [N]."""

    order: np.ndarray
    present: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    segment: np.ndarray


def check_groups(groups, num_agents: int, num_groups) -> tuple:
    """``groups`` as an int64 NumPy array [N] with values in [0, G), and G (``num_groups``, or
    groups.max() + 1 when None, 0 for no agents). Raises ValueError naming the argument."""
    if num_groups is not None and (not isinstance(num_groups, (int, np.integer)) or isinstance(num_groups, bool)
                                   or num_groups < 1):
        raise ValueError(f"num_groups: {num_groups!r}; expected an integer >= 1 or None")
    if isinstance(groups, torch.Tensor):
        if groups.dtype == torch.bool or groups.dtype.is_floating_point or groups.dtype.is_complex:
            raise ValueError(f"groups: dtype {groups.dtype}; expected an integer tensor (int64) of group indices")
        array = groups.detach().to("cpu").numpy()
    else:
        try:
            array = np.asarray(groups)
        except (TypeError, ValueError) as error:
            raise ValueError(f"groups: cannot convert {type(groups).__name__} to an array ({error})") from None
        if array.size == 0 and array.dtype == np.float64:  # an empty list
            array = array.astype(np.int64)
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"groups: dtype {array.dtype}; expected integer group indices")
    if array.shape != (num_agents,):
        raise ValueError(f"groups: shape {tuple(array.shape)}; expected ({num_agents},), one group per agent")
    array = array.astype(np.int64)
    if num_agents and array.min() < 0:
        raise ValueError(f"groups: contains {int(array.min())}; expected indices >= 0")
    if num_groups is None:
        num_groups = int(array.max()) + 1 if num_agents else 0
    elif num_agents and array.max() >= num_groups:
        raise ValueError(f"groups: contains {int(array.max())}; expected indices < num_groups={num_groups}")
    return array, int(num_groups)


def _sort_groups(groups: np.ndarray, num_groups: int) -> _Groups:
    # a stable sort of 16-bit keys is a radix sort, O(N)
    keys = groups.astype(np.int16) if num_groups <= np.iinfo(np.int16).max else groups
    order = np.argsort(keys, kind="stable")
    counts_all = np.bincount(groups, minlength=num_groups)
    present = np.flatnonzero(counts_all)
    counts = counts_all[present]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    segment = np.repeat(np.arange(len(present)), counts)
    return _Groups(order, present, starts, counts, segment)


class GroupedSolution(NamedTuple):
    """A grouped solve on [R, N] arrays: allocation x, prices [G, R] (unnormalised multipliers,
    0 for untraded cells, every cell of an empty group 0), IR multipliers mu [N], figures."""

    allocation: np.ndarray
    prices: np.ndarray
    multipliers: np.ndarray
    iterations: int
    init_iterations: int
    outer_iterations: int
    kkt_residuals: np.ndarray  # [G'] per non-empty group
    priced: np.ndarray  # [G] bool: the group has agents and trades some good


def _solve_one_group(e, w, method, tol, max_iter, allocation, multipliers):
    """The fallback for one group's [R, n] arrays that the batched solve left uncertified: for
    pgd, projected gradient from the batched solution (as pgd's dual start polishes newton's), for
    newton, the plain newton (with its corner pass) from those multipliers. Returns (x, lam, mu,
    iterations, outer iterations, diagnostics)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        data = _market_data(e, w)
        if method == "newton":
            x, lam, mu, iterations, diagnostics = _solve_prices(data, tol, max_iter, multipliers)
            return x, lam, mu, iterations, 0, diagnostics
        x, lam, mu, iterations, outer, _, diagnostics = _solve_pgd(
            data, tol, max_iter or PGD_MAX_ITER, "endowment", None, allocation, multipliers, None, True)
        return x, lam, mu, iterations, outer, diagnostics


def solve_groups_one_by_one(e, w, groups: np.ndarray, num_groups: int, method, tol, max_iter, init_max_iter,
                            warm_multipliers: Optional[np.ndarray]) -> GroupedSolution:
    """Each group alone through the plain solver, one after the other (a loop over groups: for
    comparison, not used by ``clear_market``)."""
    num_goods, num_agents = e.shape
    sorted_groups = _sort_groups(groups, num_groups)
    x = np.array(e)
    prices = np.zeros((num_groups, num_goods))
    mu = np.zeros(num_agents)
    residuals = np.zeros(len(sorted_groups.present))
    iterations = init_iterations = outer_iterations = 0
    priced = np.zeros(num_groups, dtype=bool)
    for index, (group, start, count) in enumerate(zip(sorted_groups.present.tolist(), sorted_groups.starts.tolist(),
                                                      sorted_groups.counts.tolist())):
        members = sorted_groups.order[start:start + count]
        warm = None if warm_multipliers is None else warm_multipliers[members]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            data = _market_data(e[:, members], w[:, members])
            if method == "newton":
                xg, lam, mug, its, diagnostics = _solve_prices(data, tol, max_iter, warm)
                outer = init_its = 0
            else:
                xg, lam, mug, its, outer, init_its, diagnostics = _solve_pgd(
                    data, tol, max_iter or PGD_MAX_ITER, "dual", init_max_iter, None, warm, None, True)
        x[:, members] = xg
        prices[group] = lam
        mu[members] = mug
        residuals[index] = diagnostics["kkt_residual"]
        priced[group] = bool(np.any(lam > 0))
        iterations, init_iterations = max(iterations, its), max(init_iterations, init_its)
        outer_iterations = max(outer_iterations, outer)
    return GroupedSolution(x, prices, mu, iterations, init_iterations, outer_iterations, residuals, priced)


# ----------------------------------------------------------------------------------------------
# The batched solve. Arrays are in group-sorted agent order; [R, G'] arrays have one column per
# non-empty group; a cell (good r, group g) is "traded" when g holds r and some member values it.


class _Batch(NamedTuple):
    """One grouped call's data in sorted order, fixed per call."""

    economy: _Economy  # the agents' IR lines, from the weights masked to traded cells
    endowment: np.ndarray  # [R, N]
    weights: np.ndarray  # [R, N] unmasked
    endowment_utility: np.ndarray  # [N]
    segment: np.ndarray  # [N] each agent's column among the non-empty groups
    starts: np.ndarray  # [G'] first agent of each group
    counts: np.ndarray  # [G'] agents per group (float)
    sizes: np.ndarray  # [G'] the same, integers
    supply: np.ndarray  # [R, G'] every cell's supply
    traded: np.ndarray  # [R, G'] bool
    traded_supply: np.ndarray  # [R, G'] supply of traded cells, 0 elsewhere

    def segment_sum(self, values: np.ndarray) -> np.ndarray:
        """Per-group sums over the last axis (agents): [..., N] -> [..., G']."""
        return np.add.reduceat(values, self.starts, axis=-1)

    def per_agent(self, cells: np.ndarray) -> np.ndarray:
        """[R, G'] -> [R, N]: each agent's own group's column."""
        return np.repeat(cells, self.sizes, axis=1)


class _GroupMarket(NamedTuple):
    """Every agent's optimal response to its group's prices, and each group's excess demand."""

    prices: np.ndarray  # [R, G'] > 0 (1 in untraded cells, where nobody demands)
    log_multipliers: np.ndarray  # [N]
    marginal_ratio: np.ndarray  # [R, N]
    allocation: np.ndarray  # [R, N]
    demand: np.ndarray  # [R, G']
    excess: np.ndarray  # [R, G']


def _batch(e, w, sorted_groups: _Groups) -> _Batch:
    starts = sorted_groups.starts
    supply = np.add.reduceat(e, starts, axis=1)
    traded = (supply > 0) & (np.maximum.reduceat(w, starts, axis=1) > 0)
    masked = np.where(traded[:, sorted_groups.segment], w, 0.0)
    endowment_utility = _utility(w, e)  # only traded cells contribute: the others are unheld or unvalued
    economy = _economy(masked, np.zeros(e.shape[0]), endowment_utility)
    return _Batch(economy, e, w, endowment_utility, sorted_groups.segment, starts,
                  sorted_groups.counts.astype(np.float64), sorted_groups.counts, supply, traded,
                  np.where(traded, supply, 0.0))


def _respond(batch: _Batch, prices: np.ndarray) -> _GroupMarket:
    """newton._respond with each agent facing its own group's prices."""
    economy = batch.economy
    log_prices = np.log(prices)
    if economy.line_offset is not None:
        z, term = economy.line_offset.copy(), np.empty_like(economy.line_offset)
        for slopes, log_price in zip(economy.line_slopes, log_prices):
            z += np.multiply(slopes, np.repeat(log_price, batch.sizes), out=term)
        z = np.minimum.reduce(z, axis=0)
    else:
        agent_log_prices = batch.per_agent(log_prices)
        a = economy.log_weights - agent_log_prices
        order = np.argsort(np.where(economy.weights > 0, -a, np.inf), axis=0)
        line_weight = np.take_along_axis(economy.weights, order, axis=0).cumsum(axis=0)
        line_value = np.take_along_axis(economy.weighted_log_weights - economy.weights * agent_log_prices, order,
                                        axis=0).cumsum(axis=0)
        z = np.minimum(np.minimum.reduce((economy.target - line_value) / line_weight, axis=0), MAX_LOG_MULTIPLIER)
    z = np.maximum(z, 0.0, out=z)
    ratio = batch.per_agent(1.0 / prices)
    ratio *= economy.weights
    ratio *= np.exp(z)
    allocation = np.maximum(ratio - 1.0, 0.0)
    demand = batch.segment_sum(allocation)
    return _GroupMarket(prices, z, ratio, allocation, demand, demand - batch.traded_supply)


def _water_fill(batch: _Batch, coefficients: np.ndarray) -> np.ndarray:
    """market._water_fill per cell: prices [R, G'] clearing each traded cell when every agent's
    demand is max(0, c / lambda - 1); 1 in untraded cells."""
    traded, supply = batch.traded, batch.traded_supply
    positive, total = batch.segment_sum((coefficients > 0).astype(np.float64)), batch.segment_sum(coefficients)
    eta = np.where(traded, (supply + positive) / np.where(traded, total, 1.0), 1.0)
    for _ in range(100):
        active = coefficients * batch.per_agent(eta) > 1.0
        denominator = batch.segment_sum(np.where(active, coefficients, 0.0))
        new_eta = np.where(traded, (supply + batch.segment_sum(active.astype(np.float64)))
                           / np.where(traded, denominator, 1.0), 1.0)
        if np.array_equal(new_eta, eta):
            break
        eta = new_eta
    return 1.0 / eta


def _clearing_error(batch: _Batch, market: _GroupMarket):
    """newton._clearing_error per group: ([G'] error, [G'] rounding level)."""
    largest = np.maximum.reduceat(market.allocation, batch.starts, axis=1)
    share = np.where(batch.traded, largest / ((1.0 + largest) * np.where(batch.traded, batch.supply, 1.0)), 0.0)
    error = np.max(share * np.abs(market.excess), axis=0)
    bound = 8 * EPS * np.max(share * (market.demand + batch.counts), axis=0)
    holders = batch.segment_sum((market.allocation > 0).astype(np.float64))
    return error, np.where(error > bound, bound, 8 * EPS * np.max(share * (market.demand + holders), axis=0))


def _newton_direction(batch: _Batch, market: _GroupMarket, stepping: np.ndarray):
    """newton._newton_direction for every group in ``stepping`` at once (0 elsewhere), with the
    corner-safe floor on W_i: the Hessian is G' independent R x R blocks, solved as a batch (the
    rank-one coupling summed over the IR-binding agents only). Returns (direction [R, G'],
    descent [G'] = excess . direction)."""
    num_goods, num_present = market.demand.shape
    active = market.allocation > 0
    one_plus_x = np.where(active, market.marginal_ratio, 0.0)
    ridge = 1e-12 * (market.demand + batch.counts)
    diagonal = batch.segment_sum(one_plus_x) + ridge  # [R, G']
    hessian = np.zeros((num_present, num_goods, num_goods))
    binding = np.flatnonzero(market.log_multipliers > 0)
    if binding.size:  # IR-binding agents add (1 + x_ir) w_iq / W_i, W_i their active weight
        held = one_plus_x[:, binding]
        active_weights = np.where(active[:, binding], batch.economy.weights[:, binding], 0.0)
        scaled = active_weights / np.maximum(_sum_over_goods(active_weights), _TINY)
        segment = batch.segment[binding]
        for r in range(num_goods):
            for q in range(num_goods):
                hessian[:, r, q] = -np.bincount(segment, held[r] * scaled[q], minlength=num_present)
    goods = np.arange(num_goods)
    hessian[:, goods, goods] += diagonal.T
    hessian /= market.prices.T[:, None, :]  # H_rq = (diag + ridge - coupling)_rq / lambda_q
    newton, solvable = _solve_blocks(hessian, market.excess.T)
    newton = np.where(solvable, newton.T, market.excess * market.prices / ridge)
    eta_step = newton / (1.0 - np.minimum(newton / market.prices, 0.75))
    direction = _diagonal_direction(batch, market)
    for candidate in (newton, eta_step):  # the last that is a descent direction wins: eta first
        slope = np.sum(market.excess * candidate, axis=0)
        direction = np.where((slope > 0) & (slope < np.inf), candidate, direction)
    direction = np.where(stepping, direction, 0.0)
    return direction, np.sum(market.excess * direction, axis=0)


def _solve_blocks(matrices: np.ndarray, vectors: np.ndarray):
    """Solve G' systems [G', R, R] x = [G', R]; returns (x [G', R], solvable [G'] bool: finite
    and nonsingular). R <= 2 by Cramer's rule, as newton._solve_small; larger R by LAPACK."""
    num_goods = vectors.shape[1]
    if num_goods == 1:
        a = matrices[:, 0, 0]
        solvable = np.isfinite(a) & (a != 0)
        return vectors / np.where(solvable, a, 1.0)[:, None], solvable
    if num_goods == 2:
        a, b, c, d = matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 1, 0], matrices[:, 1, 1]
        f, g = vectors[:, 0], vectors[:, 1]
        determinant = a * d - b * c
        solvable = np.isfinite(determinant) & (determinant != 0)
        determinant = np.where(solvable, determinant, 1.0)
        return np.stack([(d * f - b * g) / determinant, (a * g - c * f) / determinant], axis=1), solvable
    solvable = np.isfinite(matrices).all(axis=(1, 2))
    matrices = np.where(solvable[:, None, None], matrices, np.eye(num_goods))
    solvable &= np.abs(np.linalg.det(matrices)) > 0
    matrices = np.where(solvable[:, None, None], matrices, np.eye(num_goods))
    return np.linalg.solve(matrices, vectors[:, :, None])[:, :, 0], solvable


def _diagonal_direction(batch: _Batch, market: _GroupMarket) -> np.ndarray:
    """newton._diagonal_direction per group (0 in untraded cells)."""
    total = batch.segment_sum(market.marginal_ratio)
    return np.where(batch.traded, market.excess * market.prices / np.where(batch.traded, total, 1.0), 0.0)


def _spending_rounding(batch: _Batch, market: _GroupMarket) -> np.ndarray:
    return 64 * EPS * np.sum(np.where(batch.traded, market.prices, 0.0) * (market.demand + batch.traded_supply), axis=0)


def _dual_value(batch: _Batch, market: _GroupMarket):
    """Phi per group and its rounding level ([G'], [G'])."""
    utility = batch.segment_sum(_sum_over_goods(batch.economy.weights * np.log1p(market.allocation)))
    spent = np.sum(np.where(batch.traded, market.prices, 0.0) * market.excess, axis=0)
    return utility - spent, 64 * EPS * np.abs(utility) + _spending_rounding(batch, market)


def _line_search(batch: _Batch, market: _GroupMarket, direction, descent, searching) -> np.ndarray:
    """newton._line_search for every group in ``searching`` at once, each with its own step and
    bracket: every trial is one response of all agents. Returns the step per group [G'] (0 where
    no step helped, and for groups not searching)."""
    lam = market.prices
    relative = direction / lam
    lowest, highest = relative.min(axis=0), relative.max(axis=0)
    boundary = np.where(lowest < 0, -1.0 / np.where(lowest < 0, lowest, -1.0), np.inf)
    step = np.minimum(np.minimum(1.0, 0.5 * boundary),
                      np.where(highest > 0, MAX_PRICE_GROWTH / np.where(highest > 0, highest, 1.0), np.inf))
    searching = searching.copy()
    low, low_slope = np.zeros_like(descent), -descent
    high, high_slope = np.full_like(descent, np.nan), np.full_like(descent, np.nan)
    width, chosen = np.full_like(descent, np.inf), np.full_like(descent, np.nan)
    start_value, start_rounding = None, _spending_rounding(batch, market)
    for _ in range(LINE_SEARCH_STEPS):
        if not searching.any():
            break
        trial = _respond(batch, np.where(searching, lam + step * direction, lam))
        slope = -np.sum(trial.excess * direction, axis=0)
        near = searching & (np.abs(slope) <= LINE_SEARCH_SLOPE * descent)
        accept = near & ((slope <= 0) | (step * slope <= start_rounding))
        undecided = near & ~accept
        if undecided.any():  # just past the minimum? Compare Phi itself, up to rounding
            if start_value is None:
                start_value = _dual_value(batch, market)
            accept |= undecided & (_dual_value(batch, trial)[0] <= start_value[0] + start_value[1])
        chosen = np.where(accept, step, chosen)
        searching &= ~accept
        below = searching & (slope < 0)
        above = searching & ~(slope < 0)
        low, low_slope = np.where(below, step, low), np.where(below, slope, low_slope)
        high, high_slope = np.where(above, step, high), np.where(above, slope, high_slope)
        bracketed = ~np.isnan(high)
        span = high - low
        secant = low - low_slope * span / (high_slope - low_slope)
        secant = np.minimum(np.maximum(secant, low + 0.05 * span), high - 0.05 * span)
        refine = bracketed & (low > 0) & ~(high > 4.0 * low)
        next_step = np.where(~bracketed, np.minimum(4.0 * step, 0.5 * (step + boundary)),
                             np.where(low == 0, high / 4.0,
                                      np.where(high > 4.0 * low, np.sqrt(low * high),
                                               np.where(span > 0.5 * width, 0.5 * (low + high), secant))))
        width = np.where(searching & refine, span, width)
        searching &= ~(refine & (width <= 1e-15 * high))
        step = np.where(searching, next_step, step)
    return np.where(np.isnan(chosen), low, chosen)


def _make_individually_rational(batch: _Batch, x: np.ndarray, allowance: float):
    """market._make_individually_rational per group: each group's violators set its own blend t_g
    towards the endowment (the least of their t_i); other groups are untouched."""
    e, w, endowment_utility = batch.endowment, batch.weights, batch.endowment_utility
    utility = _utility(w, x)
    gap = utility - endowment_utility
    slack = allowance + 64 * EPS * (1.0 + np.abs(endowment_utility))
    violators = gap < -slack
    if not violators.any():
        return x, utility
    start, step, wv = e[:, violators], x[:, violators] - e[:, violators], w[:, violators]
    uv, sv = endowment_utility[violators], slack[violators]
    t = np.ones(int(violators.sum()))
    for _ in range(100):
        holdings = start + t * step
        gap = _utility(wv, holdings) - uv
        pending = gap < -sv
        if not pending.any():
            break
        slope = (wv * step / (1.0 + holdings)).sum(axis=0)
        newton = np.where(slope < 0, t - gap / np.where(slope < 0, slope, -1.0), 0.0)
        t = np.where(pending, np.clip(newton, 0.0, t), t)
    else:
        t = np.where(pending, 0.0, t)  # not settled: those keep their group at the endowment
    agent_t = np.ones(x.shape[1])
    agent_t[violators] = t
    blend = np.repeat(np.minimum.reduceat(agent_t, batch.starts), batch.sizes)
    x = (1.0 - blend) * e + blend * x
    return x, _utility(w, x)


def _finish(batch: _Batch, market: _GroupMarket, allowance: float):
    """market._finish per group: untraded cells stay with their owners, each traded cell is
    rescaled to its group's supply (exact conservation per group and good; a cell nobody demands,
    possible only when stopped early, is returned to its owners), then IR is restored per group."""
    traded = batch.per_agent(batch.traded)
    demand = market.demand
    rescale = batch.traded & (demand > 0)
    factor = np.where(rescale, batch.supply / np.where(rescale, demand, 1.0), 1.0)
    x = np.where(traded & batch.per_agent(rescale), market.allocation * batch.per_agent(factor), batch.endowment)
    return _make_individually_rational(batch, x, allowance)


def _group_diagnostics(batch: _Batch, x, lam, mu, utility) -> np.ndarray:
    """The KKT residual of each group ([G']), as market._diagnostics measures one market; ``lam``
    [R, G'] with 0 in untraded cells."""
    gap = utility - batch.endowment_utility
    complementary = np.minimum(mu, gap)
    lowest = np.minimum.reduceat(complementary, batch.starts)
    highest = np.maximum.reduceat(complementary, batch.starts)
    conservation = np.max(np.abs(batch.segment_sum(x) - batch.supply) / np.maximum(1.0, batch.supply), axis=0)
    priced = lam > 0
    marginal = (1.0 + mu) * batch.weights / batch.per_agent(np.where(priced, lam, 1.0))
    terms = np.abs(np.minimum(x, 1.0 + x - marginal)) / (1.0 + x)
    terms = np.where(batch.per_agent(priced), terms, 0.0)
    stationarity = np.max(np.maximum.reduceat(terms, batch.starts, axis=1), axis=0)
    return np.maximum.reduce([stationarity, highest, -lowest, conservation])


def _solve_batched(batch: _Batch, tol, max_iter, warm_multipliers):
    """Newton on every group's prices at once (newton._newton_passes per group, one pass with the
    corner-safe Hessian). Returns (x [R, N], lam [R, G'], mu [N], iterations [G'], kkt [G'])."""
    num_goods, num_agents = batch.endowment.shape
    num_present = batch.starts.shape[0]
    initial = np.zeros(num_agents) if warm_multipliers is None else np.nan_to_num(warm_multipliers)
    coefficients = (1.0 + initial.clip(0.0, np.expm1(MAX_LOG_MULTIPLIER))) * batch.economy.weights
    market = _respond(batch, _water_fill(batch, coefficients))
    allowance = min(0.1 * tol, IR_ALLOWANCE)
    target = np.full(num_present, max(1e-3 * tol, 0.5 * allowance))
    best, idle = np.full(num_present, np.inf), np.zeros(num_present, dtype=np.int64)
    active = np.ones(num_present, dtype=bool)
    x_out, mu_out = batch.endowment.copy(), np.zeros(num_agents)
    lam_out, iterations, kkt = np.zeros((num_goods, num_present)), np.zeros(num_present, dtype=np.int64), np.full(
        num_present, np.inf)
    for iteration in range(1, max_iter + 1):
        error, rounding = _clearing_error(batch, market)
        improved = error < 0.5 * best
        best, idle = np.where(improved, error, best), np.where(improved, 0, idle + 1)
        stalled = idle >= 20
        stepping = active & (error > np.maximum(target, rounding)) & ~stalled & (iteration < max_iter)
        moved = np.zeros(num_present, dtype=bool)
        if stepping.any():
            prices = market.prices
            direction, descent = _newton_direction(batch, market, stepping)
            step = _line_search(batch, market, direction, descent, stepping)
            moved = stepping & (step > 0)
            prices = np.where(moved, prices + step * direction, prices)
            retry = stepping & ~moved  # Newton's model misled it: the diagonally scaled gradient
            if retry.any():
                direction = np.where(retry, _diagonal_direction(batch, market), 0.0)
                step = _line_search(batch, market, direction, np.sum(market.excess * direction, axis=0), retry)
                moved |= retry & (step > 0)
                prices = np.where(retry & (step > 0), prices + step * direction, prices)
            if moved.any():
                market = _respond(batch, prices)  # unmoved groups' responses are unchanged
        finishing = active & ~moved
        if not finishing.any():
            continue
        x, utility = _finish(batch, market, allowance)
        lam = np.where(batch.traded, market.prices, 0.0)
        mu = np.expm1(market.log_multipliers)
        residual = _group_diagnostics(batch, x, lam, mu, utility)
        done = finishing & ((residual <= tol) | (iteration >= max_iter) | stalled | stepping | (error <= rounding))
        members = np.repeat(done, batch.sizes)
        x_out[:, members], mu_out[members] = x[:, members], mu[members]
        lam_out[:, done], iterations[done], kkt[done] = lam[:, done], iteration, residual[done]
        target = np.where(finishing & ~done, 0.01 * np.minimum(target, error), target)
        active &= ~done
        if not active.any():
            break
    return x_out, lam_out, mu_out, iterations, kkt


def solve_groups(e, w, groups: np.ndarray, num_groups: int, method: str, tol, max_iter, init_max_iter,
                 warm_multipliers: Optional[np.ndarray]) -> GroupedSolution:
    """Every group in one batched Newton solve; a group it leaves uncertified goes, alone, through
    the plain solver (``method``: pgd's polish or newton's corner pass), keeping the better result."""
    num_goods, num_agents = e.shape
    sorted_groups = _sort_groups(groups, num_groups)
    order, present = sorted_groups.order, sorted_groups.present
    prices = np.zeros((num_groups, num_goods))
    priced = np.zeros(num_groups, dtype=bool)
    if num_agents == 0 or num_goods == 0:  # nothing to trade
        return GroupedSolution(e.copy(), prices, np.zeros(num_agents), 0, 0, 0, np.zeros(0), priced)
    batch = _batch(e[:, order], w[:, order], sorted_groups)
    warm = None if warm_multipliers is None else warm_multipliers[order]
    cap = (init_max_iter if method == "pgd" else max_iter) or (DEFAULT_MAX_ITER + CORNER_MAX_ITER)
    x_sorted, lam, mu_sorted, newton_iterations, kkt = _solve_batched(batch, tol, cap, warm)
    pgd_iterations = outer_iterations = 0
    newton_cap = max_iter or (DEFAULT_MAX_ITER + CORNER_MAX_ITER)
    for index in np.flatnonzero(kkt > tol).tolist():  # never seen in tests; see the module docstring
        start, count = int(sorted_groups.starts[index]), int(sorted_groups.counts[index])
        members = slice(start, start + count)
        if method == "newton" and newton_cap - newton_iterations[index] < 1:
            continue  # the budget is spent, as for the plain newton
        xg, lam_g, mu_g, its, outer, diagnostics = _solve_one_group(
            batch.endowment[:, members], batch.weights[:, members], method, tol,
            max_iter if method == "pgd" else newton_cap - newton_iterations[index], x_sorted[:, members],
            mu_sorted[members])
        if diagnostics["kkt_residual"] < kkt[index]:
            x_sorted[:, members], mu_sorted[members], lam[:, index] = xg, mu_g, lam_g
            kkt[index] = diagnostics["kkt_residual"]
        if method == "pgd":
            pgd_iterations, outer_iterations = max(pgd_iterations, its), max(outer_iterations, outer)
        else:
            newton_iterations[index] += its
    x, mu = np.empty_like(e), np.empty(num_agents)
    x[:, order], mu[order] = x_sorted, mu_sorted
    prices[present] = lam.T
    priced[present] = batch.traded.any(axis=0)
    most_newton = int(newton_iterations.max(initial=0))
    if method == "pgd":
        return GroupedSolution(x, prices, mu, pgd_iterations, most_newton, outer_iterations, kkt, priced)
    return GroupedSolution(x, prices, mu, most_newton, 0, 0, kkt, priced)
