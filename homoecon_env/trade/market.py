"""Shared building blocks of market clearing: one call's data, the projection onto the
conservation set, water filling, utilities, the final repair (exact conservation and IR),
diagnostics and input checks. Every [R, N] array has one row per good."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch

from homoecon_env.core.threads import run_blocks

IR_ALLOWANCE = 1e-10  # largest IR violation (utility) left unrepaired, with 1e-3 tol (newton: 0.1 tol) when smaller
EPS = np.finfo(np.float64).eps


class _MarketData(NamedTuple):
    """One call's data, [R, N] goods-major arrays, computed once."""

    endowment: np.ndarray
    weights: np.ndarray
    supply: np.ndarray  # [R] s_r = sum_i e_ir
    traded: np.ndarray  # [R] held by someone and valued by someone
    endowment_utility: np.ndarray  # [N] u_i(e_i)


def _market_data(e: np.ndarray, w: np.ndarray) -> _MarketData:
    supply = _sum_over_agents(e)
    return _MarketData(e, w, supply, (supply > 0) & (np.maximum.reduce(w, axis=1, initial=0.0) > 0), _utility(w, e))


# ----------------------------------------------------------------------------------------------
# Building blocks. Every [R, N] array has one row per good.


def project_onto_conservation(points: np.ndarray, supply: np.ndarray) -> np.ndarray:
    """Exact Euclidean projection of ``points`` [R, N] onto {x >= 0, sum_i x_ri = supply_r}.

    Per good, the projection onto a scaled simplex: x = max(0, y - theta_r) with theta_r found by
    sorting (O(N log N)), batched over goods. ``supply`` [R] must be >= 0; 0 gives x = 0.
    """
    return _project_with_threshold(points, supply)[0]


def _project_with_threshold(points: np.ndarray, supply: np.ndarray):
    """``project_onto_conservation`` and its thresholds theta [R], the conservation multipliers
    of the projection (x = max(0, points - theta))."""
    num_goods, num_agents = points.shape
    descending = -np.sort(-points, axis=1)  # [R, N]
    thresholds = (np.cumsum(descending, axis=1) - supply[:, None]) / np.arange(1, num_agents + 1)
    count = np.maximum((descending > thresholds).sum(axis=1), 1)  # the active set is a sorted prefix
    theta = thresholds[np.arange(num_goods), count - 1]
    return np.maximum(points - theta[:, None], 0.0), theta


def _water_fill(coefficients: np.ndarray, supply: np.ndarray, max_steps: int = 100, pool=None) -> np.ndarray:
    """Per good, the price lambda_r at which sum_i max(0, c_ri / lambda_r - 1) = supply_r.

    coefficients [R, N] >= 0 with a positive entry in each row, supply [R] > 0. In eta = 1/lambda
    the left side is convex, increasing and piecewise linear, so Newton's method started right of
    the root (everyone active) decreases monotonically and is exact once the active set settles.
    ``pool``: a `core.threads.BlockPool` for the per-agent pass (None: this thread).
    """
    eta = (supply + (coefficients > 0).sum(axis=1)) / coefficients.sum(axis=1)
    active, bought = np.empty(coefficients.shape, dtype=bool), np.empty(coefficients.shape)

    def mark(blocks):  # elementwise: blocks that stay in cache
        for block in blocks:
            block_active = np.greater(coefficients[:, block] * eta[:, None], 1.0, out=active[:, block])
            bought[:, block] = np.where(block_active, coefficients[:, block], 0.0)

    blocks = _blocks(coefficients.shape[1])
    for _ in range(max_steps):
        run_blocks(pool, mark, blocks)
        new_eta = (supply + active.sum(axis=1)) / bought.sum(axis=1)  # sums over whole rows: the same order
        if np.array_equal(new_eta, eta):
            break
        eta = new_eta
    return 1.0 / eta


BLOCK = 1 << 14  # agents per block of the elementwise passes over [R, N] arrays: a few 128 KB rows in cache
_ALL = [slice(None)]


def _blocks(num_agents: int) -> list:
    """Slices of at most BLOCK agents covering range(num_agents) (all of it, one slice, in small markets).
    Elementwise passes run block by block so that their temporaries stay in cache: the same values, as
    each element is computed by the same operations; sums over agents still run over whole rows."""
    if num_agents <= BLOCK:
        return _ALL
    return [slice(start, min(start + BLOCK, num_agents)) for start in range(0, num_agents, BLOCK)]


_sum_over_goods = functools.partial(np.add.reduce, axis=0)  # [R, N] -> [N], without ndarray.sum's wrapper
_sum_over_agents = functools.partial(np.add.reduce, axis=1)  # [R, N] -> [R]


def _utility(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """u_i = sum_r w_ir log(1 + x_ir) for [R, N] arrays; returns [N]."""
    return _sum_over_goods(weights * np.log1p(x))


# ----------------------------------------------------------------------------------------------
# Repair, diagnostics and input checks


def _finish(x, data: _MarketData, allowance, demand=None):
    """The returned allocation and its utilities [N]: untraded goods stay with their owners (0 if
    nobody holds them); each traded good is rescaled by s_r / demand_r (``demand``, x's row sums,
    when known), which conserves it exactly and moves every holder by the same tiny fraction
    whatever its scale (a good nobody demands, possible only if the iteration stopped early, is
    projected onto its conservation set instead); then IR is restored by blending (violations up to
    ``allowance``, rounding level, are left alone)."""
    e, supply, traded = data.endowment, data.supply, data.traded
    demand = _sum_over_agents(x) if demand is None or demand.shape[0] != x.shape[0] else demand
    rescale = traded & (demand > 0)
    if min(rescale.tolist(), default=True):
        x = x * (supply / demand)[:, None]
    else:
        x = np.where(rescale[:, None], x * (supply / np.where(rescale, demand, 1.0))[:, None], x)
        if np.any(traded & ~rescale):
            x = np.where((traded & ~rescale)[:, None], project_onto_conservation(x, supply), x)
        x = np.where(traded[:, None], x, e)
    return _make_individually_rational(x, data, allowance)



def _make_individually_rational(x, data: _MarketData, allowance):
    """Blend x towards e, x <- e + t (x - e), with the largest t in [0, 1] keeping every agent IR;
    returns (x, u(x) [N]).

    Along the segment each agent's utility gap h_i(t) is concave with h_i(0) = 0, so agents IR at
    t = 1 stay IR for every t, and each violator is IR on [0, t_i]. Newton's method from t = 1 on
    a concave function approaches t_i from the right monotonically; t = min t_i. A convex
    combination keeps conservation and non-negativity. Violations up to ``allowance`` (absolute
    utility) are rounding and left alone: blending every agent for one of them costs more.
    """
    e, w, endowment_utility = data.endowment, data.weights, data.endowment_utility
    utility = _utility(w, x)
    gap = utility - endowment_utility
    if np.minimum.reduce(gap) >= -(allowance + 64 * EPS):  # nobody below its slack
        return x, utility
    slack = allowance + 64 * EPS * (1.0 + np.abs(endowment_utility))
    violators = gap < -slack
    if not violators.any():
        return x, utility
    start, step, wv = e[:, violators], x[:, violators] - e[:, violators], w[:, violators]
    uv, sv = endowment_utility[violators], slack[violators]
    t = np.ones(violators.sum())
    for _ in range(100):
        holdings = start + t * step
        gap = _utility(wv, holdings) - uv
        pending = gap < -sv
        if not pending.any():
            break
        slope = (wv * step / (1.0 + holdings)).sum(axis=0)  # < 0 right of the root
        newton = np.where(slope < 0, t - gap / np.where(slope < 0, slope, -1.0), 0.0)
        t = np.where(pending, np.clip(newton, 0.0, t), t)
    else:
        t = np.zeros_like(t)  # not settled: keep the endowment
    blend = t.min()
    x = (1.0 - blend) * e + blend * x
    return x, _utility(w, x)


def _diagnostics(data: _MarketData, x, lam, mu, utility=None, marginal=None, pool=None) -> dict:
    """Conservation error, IR violation, KKT residual and objective of allocation x [R, N]
    (``utility``: u(x) [N] when known; ``marginal``: (1 + mu_i) w_ir / lambda_r [R, N] when known
    and every good is priced; ``pool``: a `core.threads.BlockPool` for the per-agent pass).

    Stationarity is measured per priced good in relative marginal value,
    |min(x_ir / (1 + x_ir), 1 - (1 + mu_i) w_ir / ((1 + x_ir) lambda_r))|: zero exactly when every
    holder's marginal value equals the price and nobody else values the good above it.
    """
    utility = _utility(data.weights, x) if utility is None else utility
    gap = utility - data.endowment_utility
    conservation_error = max((abs(held - supply) / max(1.0, supply)
                              for held, supply in zip(_sum_over_agents(x).tolist(), data.supply.tolist())), default=0.0)
    # min(mu, gap) with mu >= 0: its negative part is the IR violation, its size the complementarity
    complementary = np.minimum(mu, gap)
    lowest, highest = float(np.minimum.reduce(complementary)), float(np.maximum.reduce(complementary))
    ir_violation = max(0.0, -lowest)
    priced = lam > 0  # [R]
    all_priced = min(priced.tolist(), default=True)
    if marginal is None or not all_priced:
        marginal = np.multiply.outer(1.0 / np.where(priced, lam, 1.0), 1.0 + mu) * data.weights
    def largest_terms(blocks):  # the largest term of these blocks (nan wins as in one reduction)
        largest = []
        for block in blocks:
            block_x = x[:, block]
            one_plus_x = 1.0 + block_x
            # |min(x, 1 + x - marginal)| / (1 + x), the same as the relative form above
            stationarity_terms = np.minimum(block_x, one_plus_x - marginal[:, block])
            stationarity_terms = np.abs(stationarity_terms, out=stationarity_terms) / one_plus_x
            if not all_priced:
                stationarity_terms = np.where(priced[:, None], stationarity_terms, 0.0)
            largest.append(np.maximum.reduce(stationarity_terms, axis=None, initial=0.0))
        return np.maximum.reduce(largest)

    largest = run_blocks(pool, largest_terms, _blocks(x.shape[1]) if x.shape[1] > BLOCK else [Ellipsis])
    stationarity = float(np.maximum.reduce(largest))
    return {
        "conservation_error": conservation_error,
        "ir_violation": ir_violation,
        "kkt_residual": max(stationarity, highest, -lowest, ir_violation, conservation_error),
        "objective": float(np.add.reduce(utility)),
    }


def _as_matrix(name: str, value):
    """A float64 goods-major [R, N] NumPy copy of an [N, R] tensor or array, checked finite and
    nonnegative, and the tensor's device (None for other inputs)."""
    device = None
    if isinstance(value, torch.Tensor):
        device = value.device
        value = value.detach().to("cpu", torch.float64).numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: cannot convert {type(value).__name__} to a float array ({error})") from None
    if array.ndim != 2:
        raise ValueError(f"{name}: expected shape [N, R], got {array.shape}")
    if array.size and not (array.min() >= 0.0 and array.max() < np.inf):  # nan fails both
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: contains nan or inf; expected finite values >= 0")
        raise ValueError(f"{name}: contains negative values (min {array.min()}); expected >= 0")
    return np.array(array.T, order="C"), device


def _as_array(tensor: torch.Tensor) -> np.ndarray:
    """A float64 NumPy view (or copy) of a tensor, on the CPU; callers must not write to it."""
    if tensor.dtype == torch.float64:
        try:
            return tensor.numpy()  # a CPU tensor without gradient: a view
        except (RuntimeError, TypeError):
            pass
    return tensor.detach().to("cpu", torch.float64).numpy()


def _as_tensor(array: np.ndarray, device) -> torch.Tensor:
    """A float64 tensor on ``device`` (the CPU for None) holding a copy of ``array``."""
    tensor = torch.from_numpy(np.array(array, dtype=np.float64, order="C"))
    return tensor if device is None or device.type == "cpu" else tensor.to(device)
