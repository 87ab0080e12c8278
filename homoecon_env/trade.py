"""Market clearing: the trade stage of a step (DESIGN.md section 4).

The market reallocates the holdings e [N, R] of N agents to x [N, R] by solving

    max_x  sum_i u_i(x_i),   u_i(x) = sum_r w_ir * log(1 + x_r)
    s.t.   sum_i x_ir = s_r := sum_i e_ir   for every good r    (conservation, multiplier lambda_r)
           x >= 0
           u_i(x_i) >= u_i(e_i)            for every agent i   (individual rationality, multiplier mu_i)

The conservation multipliers lambda are the market prices.

``method="pgd"`` (default) is a projected, Newton-preconditioned gradient method on the dual over
prices, with IR handled by exact Lagrange multipliers:

- For given prices each agent's problem max u_i(x) - lambda.x s.t. x >= 0, u_i(x) >= u_i(e_i) has
  a closed form: x_ir = max(0, (1 + mu_i) w_ir / lambda_r - 1), where mu_i >= 0 is the least
  multiplier restoring the agent's endowment utility (a piecewise-linear 1-D root, solved for all
  agents at once).
- The dual function of prices, Phi(lambda) = sum_i max_x [u_i - lambda.x] + lambda.s, is convex
  in R variables, and its gradient is minus the excess demand. Prices take Newton steps on it
  (the Hessian is an R x R sum of per-agent compensated demand slopes) with a line search on the
  directional derivative, which stays robust where demand is nearly piecewise linear (small
  holdings), falling back to diagonally scaled excess demand when a Newton step cannot lower Phi.
  They stop when the KKT residual of the *returned* allocation is below ``tol``.
- The first prices are the water-filling prices for the warm-start multipliers (exact when those
  are), x_ir = max(0, (1 + mu_i) w_ir / lambda_r - 1) with lambda_r clearing good r.
- The returned allocation is always exactly conserving (each good rescaled to its supply; a
  relative fix is exact for small holders next to large ones, where the Euclidean projection's
  uniform shift is not) and individually rational (blended towards the endowment where an
  iteration cap or rounding left a violation above min(1e-3 tol, 1e-10)); ``converged`` says
  whether ``tol`` was met.

Why Newton rather than first-order steps: fixed-step dual ascent, and alternating water-filling
with multiplier updates (even Anderson-accelerated), converge slowly or cycle when holdings are
small and utilities nearly linear; Newton on the R prices converges in about 5 steps across
holdings from 1e-9 to 1e6 (tests/test_trade.py, benchmarks/bench_trade.py).

``method="penalty"`` is the seed's method, kept for comparison: 100 fixed-size projected gradient
steps on welfare minus a quadratic penalty on IR violations. Its IR violation is reported as is.

Conventions: a good nobody holds (s_r = 0) and a good nobody values (all w_ir = 0) are not traded
and have price 0 (their conservation multiplier is not unique); the first stays at 0 for everyone,
the second stays with its owners. An agent with all-zero weights is indifferent, so IR holds for
it whatever it gets and the optimum passes its goods to others. Prices are normalised to sum 1, or
are all 0 when no good is traded. Arithmetic is float64 NumPy (few, cheap calls at small N);
inputs may be torch tensors or arrays, outputs are float64 torch tensors on the input's device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
import torch

METHODS = ("pgd", "penalty")
DEFAULT_MAX_ITER = 100  # pgd price updates when max_iter is None
PENALTY_STEPS = 100  # the seed's number of steps (penalty's default max_iter)
PENALTY_STEP_SIZE = 0.1  # the seed's fixed gradient step
PENALTY_WEIGHT = 10.0  # the seed's quadratic IR-penalty coefficient
LINE_SEARCH_STEPS = 80  # evaluations per line search, at most
IR_ALLOWANCE = 1e-10  # largest IR violation (utility) left unrepaired, with 1e-3 * tol when smaller
MAX_LOG_MULTIPLIER = 200.0  # log(1 + mu) is capped so that (1 + mu) w / lambda stays finite


@dataclass(frozen=True)
class TradeResult:
    """Outcome of one market clearing.

    allocation [N, R]: holdings after trade. prices [R]: conservation multipliers normalised to
    sum 1 (0 for an untraded good). iterations: price updates (pgd) or gradient steps (penalty).
    converged: kkt_residual <= tol. conservation_error: max_r |sum_i x_ir - s_r| / max(1, s_r).
    ir_violation: max_i max(0, u_i(e_i) - u_i(x_i)). kkt_residual: the largest of conservation
    error, IR violation, complementarity |min(mu_i, u_i(x_i) - u_i(e_i))| and relative
    stationarity. objective: sum_i u_i(x_i). multipliers [N]: IR multipliers mu (warm start for
    the next call). method: the method used. Tensors are float64.
    """

    allocation: torch.Tensor  # [N, R]
    prices: torch.Tensor  # [R]
    iterations: int
    converged: bool
    conservation_error: float
    ir_violation: float
    kkt_residual: float
    objective: float
    multipliers: torch.Tensor  # [N]
    method: str


def clear_market(holdings, weights, *, method: str = "pgd", tol: float = 1e-9,
                 max_iter: Optional[int] = None, warm_start: Optional[TradeResult] = None) -> TradeResult:
    """Reallocate ``holdings`` [N, R] to maximise summed utility, conserving goods, keeping IR.

    ``weights`` [N, R] are the utility weights w (nonnegative; a row may be all zero).
    ``max_iter`` caps the price updates (pgd, default 100) or sets the number of steps (penalty,
    default 100). ``warm_start``, a previous result, seeds the multipliers when it has N agents.
    Bad input raises ``ValueError`` naming the argument.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; expected one of {METHODS}")
    endowment, device = _as_matrix("holdings", holdings)
    utility_weights, _ = _as_matrix("weights", weights)
    if endowment.shape != utility_weights.shape:
        raise ValueError(f"weights: shape {utility_weights.shape} differs from holdings shape {endowment.shape}")
    if not (isinstance(tol, (int, float, np.floating)) and np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: {tol!r}; expected a finite number > 0")
    if max_iter is not None and (not isinstance(max_iter, (int, np.integer)) or max_iter < 1):
        raise ValueError(f"max_iter: {max_iter!r}; expected an integer >= 1")
    if warm_start is not None and not isinstance(warm_start, TradeResult):
        raise ValueError(f"warm_start: expected a TradeResult or None, got {type(warm_start).__name__}")

    if endowment.shape[0] == 0:  # no agents, nothing to trade
        empty = torch.zeros(endowment.shape, dtype=torch.float64, device=device)
        return TradeResult(empty, torch.zeros(endowment.shape[1], dtype=torch.float64, device=device), 0, True,
                           0.0, 0.0, 0.0, 0.0, torch.zeros(0, dtype=torch.float64, device=device), method)
    # Goods-major layout [R, N]: sums over agents run along contiguous memory.
    e = np.ascontiguousarray(endowment.T)
    w = np.ascontiguousarray(utility_weights.T)
    if method == "pgd":
        warm = None
        if warm_start is not None and warm_start.multipliers.shape[0] == e.shape[1]:
            warm = warm_start.multipliers.detach().cpu().numpy().astype(np.float64)
        x, lam, mu, iterations, diagnostics = _solve_prices(e, w, tol, max_iter or DEFAULT_MAX_ITER, warm)
    else:
        x, lam, mu, iterations = _solve_penalty(e, w, max_iter or PENALTY_STEPS)
        diagnostics = _diagnostics(e, w, x, lam, mu)
    as_tensor = lambda array: torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float64, device=device)
    total = lam.sum()
    return TradeResult(
        allocation=as_tensor(x.T),
        prices=as_tensor(lam / total if total > 0 else np.zeros_like(lam)),
        iterations=int(iterations),
        converged=bool(diagnostics["kkt_residual"] <= tol),
        multipliers=as_tensor(mu),
        method=method,
        **diagnostics,
    )


# ----------------------------------------------------------------------------------------------
# Building blocks. Every [R, N] array has one row per good.


def project_onto_conservation(points: np.ndarray, supply: np.ndarray) -> np.ndarray:
    """Exact Euclidean projection of ``points`` [R, N] onto {x >= 0, sum_i x_ri = supply_r}.

    Per good, the projection onto a scaled simplex: x = max(0, y - theta_r) with theta_r found by
    sorting (O(N log N)), batched over goods. ``supply`` [R] must be >= 0; 0 gives x = 0.
    """
    num_goods, num_agents = points.shape
    descending = -np.sort(-points, axis=1)  # [R, N]
    thresholds = (np.cumsum(descending, axis=1) - supply[:, None]) / np.arange(1, num_agents + 1)
    count = np.maximum((descending > thresholds).sum(axis=1), 1)  # the active set is a sorted prefix
    theta = thresholds[np.arange(num_goods), count - 1]
    return np.maximum(points - theta[:, None], 0.0)


def _water_fill(coefficients: np.ndarray, supply: np.ndarray, max_steps: int = 100) -> np.ndarray:
    """Per good, the price lambda_r at which sum_i max(0, c_ri / lambda_r - 1) = supply_r.

    coefficients [R, N] >= 0 with a positive entry in each row, supply [R] > 0. In eta = 1/lambda
    the left side is convex, increasing and piecewise linear, so Newton's method started right of
    the root (everyone active) decreases monotonically and is exact once the active set settles.
    """
    eta = (supply + (coefficients > 0).sum(axis=1)) / coefficients.sum(axis=1)
    for _ in range(max_steps):
        active = coefficients * eta[:, None] > 1.0
        new_eta = (supply + active.sum(axis=1)) / np.where(active, coefficients, 0.0).sum(axis=1)
        if np.array_equal(new_eta, eta):
            break
        eta = new_eta
    return 1.0 / eta


def _utility(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """u_i = sum_r w_ir log(1 + x_ir) for [R, N] arrays; returns [N]."""
    return (weights * np.log1p(x)).sum(axis=0)


# ----------------------------------------------------------------------------------------------
# pgd: Newton-preconditioned projected gradient on the dual over prices


class _Economy(NamedTuple):
    """The traded goods' data, [R_traded, N] arrays, computed once per call."""

    weights: np.ndarray
    valued: np.ndarray  # weights > 0
    log_weights: np.ndarray  # 0 where not valued
    supply: np.ndarray  # [R_traded]
    endowment_utility: np.ndarray  # [N]


class _Market(NamedTuple):
    """Every agent's optimal response to prices, and the resulting excess demand."""

    prices: np.ndarray  # [R_traded] lambda > 0
    log_multipliers: np.ndarray  # [N] z = log(1 + mu) >= 0
    marginal_ratio: np.ndarray  # [R_traded, N] (1 + mu_i) w_ir / lambda_r, = 1 + x_ir where active
    active: np.ndarray  # [R_traded, N] x_ir > 0
    allocation: np.ndarray  # [R_traded, N]
    excess: np.ndarray  # [R_traded] sum_i x_ir - s_r = -grad Phi


def _respond(economy: _Economy, prices: np.ndarray) -> _Market:
    """Demand at ``prices``, each agent with the least IR multiplier that keeps it IR.

    At multiplier mu, u_i = sum_r w_ir max(0, z + a_ir) with z = log(1 + mu) and
    a_ir = log(w_ir / lambda_r): convex, increasing and piecewise linear in z. Agents IR at z = 0
    are slack (mu = 0). For the others, Newton's method on it, started right of the root with
    every valued good bought, lowers z monotonically and is exact once the set of goods bought
    settles (at most R steps, batched over those agents).
    """
    w, valued, endowment_utility = economy.weights, economy.valued, economy.endowment_utility
    a = economy.log_weights - np.log(prices)[:, None]  # [R, N]; its w is 0 where not valued
    z = np.zeros(w.shape[1])
    binding = np.flatnonzero((w * np.maximum(a, 0.0)).sum(axis=0) < endowment_utility)
    if binding.size:
        wb, ab, valued_b, target = w[:, binding], a[:, binding], valued[:, binding], endowment_utility[binding]
        bought = valued_b
        for _ in range(len(prices)):
            zb = (target - np.where(bought, wb * ab, 0.0).sum(axis=0)) / np.where(bought, wb, 0.0).sum(axis=0)
            now_bought = valued_b & (ab > -zb)
            if np.array_equal(now_bought, bought):
                break
            bought = now_bought
        z[binding] = np.clip(zb, 0.0, MAX_LOG_MULTIPLIER)
    ratio = np.exp(z) * w / prices[:, None]
    active = ratio > 1.0
    allocation = np.where(active, ratio - 1.0, 0.0)
    return _Market(prices, z, ratio, active, allocation, allocation.sum(axis=1) - economy.supply)


def _newton_direction(economy: _Economy, market: _Market) -> np.ndarray:
    """Solve (Hessian of Phi) p = excess demand; the Hessian is minus the demand's price slope.

    An agent with mu = 0 has d x_ir / d lambda_r = -(1 + x_ir) / lambda_r on its active goods; an
    IR-binding agent moves along its indifference surface, adding the symmetric rank-one term
    (1 + x_ir) w_iq / (W_i lambda_q) with W_i its active weight. A tiny ridge keeps flat
    directions (perfectly inelastic demand) solvable; the line search then sets the length.
    """
    lam = market.prices
    one_plus_x = np.where(market.active, market.marginal_ratio, 0.0)  # [R, N]
    active_weights = np.where(market.active, economy.weights, 0.0)
    binding_weight = np.where(market.log_multipliers > 0, active_weights.sum(axis=0), 0.0)  # [N]
    compensation = active_weights / np.where(binding_weight > 0, binding_weight, np.inf) / lam[:, None]
    hessian = np.diag(one_plus_x.sum(axis=1) / lam) - one_plus_x @ compensation.T
    ridge = 1e-12 * np.maximum(np.abs(np.diag(hessian)), _full_curvature(economy, market))
    try:
        direction = np.linalg.solve(hessian + np.diag(ridge), market.excess)
    except np.linalg.LinAlgError:
        direction = market.excess / ridge
    if not (np.all(np.isfinite(direction)) and market.excess @ direction > 0):
        direction = _diagonal_direction(economy, market)  # always raises prices where demand exceeds
    return direction


def _full_curvature(economy: _Economy, market: _Market) -> np.ndarray:
    """Per good, the Hessian's diagonal if every agent bought it at mu fixed: sum_i c_ir / lambda_r^2."""
    return np.exp(market.log_multipliers) @ economy.weights.T / market.prices**2


def _diagonal_direction(economy: _Economy, market: _Market) -> np.ndarray:
    """Excess demand scaled per good by its curvature if every agent bought it: always a descent."""
    return market.excess / _full_curvature(economy, market)


def _line_search(economy: _Economy, market: _Market, direction: np.ndarray):
    """Step along ``direction`` to where the slope of Phi has fallen to 10% of its start.

    Phi is convex, so its slope along the line, -excess . direction, is nondecreasing: expand while
    it is negative, backtrack while the step overshoots, then bisect (geometrically, then by
    safeguarded secant). A step with a small negative slope certainly lowers Phi; one with a small
    positive slope is checked against Phi itself, up to rounding (slopes stay exact where Phi
    values are lost in rounding, at small holdings). Returns (market, evaluations); the market is
    the input if no step helped.
    """
    lam = market.prices
    shrinking = direction < 0
    boundary = (lam[shrinking] / -direction[shrinking]).min() if shrinking.any() else np.inf  # prices > 0
    start_slope = -(market.excess @ direction)
    low, low_slope, low_market = 0.0, start_slope, market
    high = high_slope = start_value = None
    step, width = min(1.0, 0.5 * boundary), np.inf
    for evaluations in range(1, LINE_SEARCH_STEPS + 1):
        trial = _respond(economy, lam + step * direction)
        slope = -(trial.excess @ direction)
        if abs(slope) <= 0.1 * abs(start_slope):
            if slope <= 0:  # by convexity Phi(step) <= Phi(0) + step * slope: a certified decrease
                return trial, evaluations
            if start_value is None:
                start_value, noise = _dual_value(economy, market)
            if _dual_value(economy, trial)[0] <= start_value + noise:  # just past the minimum
                return trial, evaluations
        if slope < 0:
            low, low_slope, low_market = step, slope, trial
        else:
            high, high_slope = step, slope
        if high is None:
            step = min(4.0 * step, 0.5 * (step + boundary))
        elif low == 0.0:
            step = high / 4.0
        elif high > 4.0 * low:
            step = np.sqrt(low * high)
        else:
            if high - low > 0.5 * width:  # the secant is creeping: bisect
                step = 0.5 * (low + high)
            else:
                secant = low - low_slope * (high - low) / (high_slope - low_slope)
                step = min(max(secant, low + 0.05 * (high - low)), high - 0.05 * (high - low))
            width = high - low
            if width <= 1e-15 * high:
                break
    return low_market, evaluations


def _dual_value(economy: _Economy, market: _Market):
    """Phi(lambda) = sum_i u_i(x_i) - lambda . excess, and the rounding level of that sum."""
    utility = _utility(economy.weights, market.allocation).sum()
    spending = market.prices @ (market.allocation.sum(axis=1) + economy.supply)
    return utility - market.prices @ market.excess, 64 * np.finfo(np.float64).eps * (abs(utility) + spending)


def _solve_prices(e, w, tol, max_iter, warm_multipliers):
    """Newton steps on traded goods' prices until the returned allocation's KKT residual <= tol.

    Newton stops on the clearing error (excess demand, the dual gradient, in KKT units); the
    candidate is then made exactly conserving and IR and its full KKT residual measured. If the
    repair cost more than ``tol``, the target is tightened (x 0.01) and Newton resumes. A Newton
    step that cannot lower Phi is replaced by a diagonally scaled one; it stops early when the
    error reaches rounding level, or has not halved in 20 steps.
    """
    supply = e.sum(axis=1)
    traded = (supply > 0) & (w > 0).any(axis=1)  # [R]
    endowment_utility = _utility(w, e)
    num_goods, num_agents = e.shape
    lam = np.zeros(num_goods)
    if not traded.any():
        x = _finish(np.zeros_like(e), e, w, traded, supply, endowment_utility, 0.0)
        return x, lam, np.zeros(num_agents), 0, _diagnostics(e, w, x, lam, np.zeros(num_agents))
    weights = w[traded]
    valued = weights > 0
    economy = _Economy(weights, valued, np.log(np.where(valued, weights, 1.0)), supply[traded], endowment_utility)
    initial = np.zeros(num_agents) if warm_multipliers is None else np.nan_to_num(warm_multipliers)
    initial = initial.clip(0.0, np.expm1(MAX_LOG_MULTIPLIER))
    market = _respond(economy, _water_fill((1.0 + initial) * weights, economy.supply))
    target, best, idle = 1e-3 * tol, np.inf, 0  # margin for the final rescaling and repair
    for iterations in range(1, max_iter + 1):
        error, rounding = _clearing_error(market)
        best, idle = (error, 0) if error < 0.5 * best else (best, idle + 1)
        stalled = idle >= 20  # no halving of the error in twenty steps: give up
        if error > max(target, rounding) and iterations < max_iter and not stalled:
            previous = market
            market, _ = _line_search(economy, market, _newton_direction(economy, market))
            if market is previous:  # Newton's model misled it: try the diagonally scaled gradient
                market, _ = _line_search(economy, market, _diagonal_direction(economy, market))
            stalled = market is previous
            if not stalled:
                continue
        x = np.zeros_like(e)
        x[traded] = market.allocation
        x = _finish(x, e, w, traded, supply, endowment_utility, min(1e-3 * tol, IR_ALLOWANCE))
        lam[traded] = market.prices
        mu = np.expm1(market.log_multipliers)
        diagnostics = _diagnostics(e, w, x, lam, mu)
        if diagnostics["kkt_residual"] <= tol or iterations >= max_iter or stalled or error <= rounding:
            return x, lam, mu, iterations, diagnostics
        target = 0.01 * min(target, error)
    raise AssertionError("unreachable: the last iteration always returns")


def _clearing_error(market: _Market):
    """How far demand is from clearing, in the units of the KKT residual, and its rounding level.

    Clearing good r exactly (the final rescaling by s_r / demand_r) changes a holder's relative
    marginal value by about x_ir / (1 + x_ir) * |excess_r| / s_r.
    """
    share = (market.allocation / (1.0 + market.allocation)).max(axis=1)  # largest x / (1 + x)
    supply = market.allocation.sum(axis=1) - market.excess
    error = share * np.abs(market.excess) / supply
    demand_rounding = 8 * np.finfo(np.float64).eps * np.where(market.active, market.marginal_ratio, 0.0).sum(axis=1)
    return float(error.max()), float((share * demand_rounding / supply).max())


def _finish(x, e, w, traded, supply, endowment_utility, allowance):
    """The returned allocation: untraded goods stay with their owners (0 if nobody holds them);
    each traded good is rescaled by s_r / demand_r, which conserves it exactly and moves every
    holder by the same tiny fraction whatever its scale (a good nobody demands, possible only if
    the iteration stopped early, is projected onto its conservation set instead); then IR is
    restored by blending (violations up to ``allowance``, rounding level, are left alone)."""
    demand = x.sum(axis=1)
    rescale = traded & (demand > 0)
    x = np.where(rescale[:, None], x * (supply / np.where(rescale, demand, 1.0))[:, None], x)
    if np.any(traded & ~rescale):
        x = np.where((traded & ~rescale)[:, None], project_onto_conservation(x, supply), x)
    x = np.where(traded[:, None], x, e)
    return _make_individually_rational(x, e, w, endowment_utility, allowance)


# ----------------------------------------------------------------------------------------------
# penalty: the seed's method


def _solve_penalty(e, w, steps):
    """Fixed-step projected gradient ascent on welfare minus a quadratic IR penalty (no repair)."""
    supply = e.sum(axis=1)
    endowment_utility = _utility(w, e)
    x = e.copy()
    for _ in range(steps):
        shortfall = np.maximum(endowment_utility - _utility(w, x), 0.0)  # [N]
        gradient = w / (1.0 + x) * (1.0 + PENALTY_WEIGHT * shortfall)[None, :]
        x = project_onto_conservation(x + PENALTY_STEP_SIZE * gradient, supply)
    mu = PENALTY_WEIGHT * np.maximum(endowment_utility - _utility(w, x), 0.0)
    # Price estimate: the holding-weighted mean marginal value of each good.
    held = x.sum(axis=1)
    marginal_value = ((1.0 + mu)[None, :] * w / (1.0 + x) * x).sum(axis=1)
    lam = np.where(held > 0, marginal_value / np.where(held > 0, held, 1.0), 0.0)
    return x, lam, mu, steps


# ----------------------------------------------------------------------------------------------
# Repair, diagnostics and input checks


def _make_individually_rational(x, e, w, endowment_utility, allowance):
    """Blend x towards e, x <- e + t (x - e), with the largest t in [0, 1] keeping every agent IR.

    Along the segment each agent's utility gap h_i(t) is concave with h_i(0) = 0, so agents IR at
    t = 1 stay IR for every t, and each violator is IR on [0, t_i]. Newton's method from t = 1 on
    a concave function approaches t_i from the right monotonically; t = min t_i. A convex
    combination keeps conservation and non-negativity. Violations up to ``allowance`` (absolute
    utility) are rounding and left alone: blending every agent for one of them costs more.
    """
    slack = allowance + 64 * np.finfo(np.float64).eps * (1.0 + np.abs(endowment_utility))
    violators = _utility(w, x) - endowment_utility < -slack
    if not violators.any():
        return x
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
    return (1.0 - blend) * e + blend * x


def _diagnostics(e, w, x, lam, mu) -> dict:
    """Conservation error, IR violation, KKT residual and objective of allocation x [R, N].

    Stationarity is measured per priced good in relative marginal value,
    |min(x_ir / (1 + x_ir), 1 - (1 + mu_i) w_ir / ((1 + x_ir) lambda_r))|: zero exactly when every
    holder's marginal value equals the price and nobody else values the good above it.
    """
    supply = e.sum(axis=1)
    utility = _utility(w, x)
    gap = utility - _utility(w, e)
    conservation_error = float(np.max(np.abs(x.sum(axis=1) - supply) / np.maximum(1.0, supply), initial=0.0))
    ir_violation = max(0.0, float(np.max(-gap, initial=0.0)))
    complementarity = float(np.max(np.abs(np.minimum(mu, gap)), initial=0.0))
    priced = lam > 0  # [R]
    relative_marginal = (1.0 + mu)[None, :] * w / (1.0 + x) / np.where(priced, lam, 1.0)[:, None]
    stationarity_terms = np.abs(np.minimum(x / (1.0 + x), 1.0 - relative_marginal))
    stationarity = float(np.max(np.where(priced[:, None], stationarity_terms, 0.0), initial=0.0))
    return {
        "conservation_error": conservation_error,
        "ir_violation": ir_violation,
        "kkt_residual": max(stationarity, complementarity, ir_violation, conservation_error),
        "objective": float(utility.sum()),
    }


def _as_matrix(name: str, value):
    """A float64 [N, R] NumPy copy of a tensor or array, checked finite and nonnegative."""
    device = None
    if isinstance(value, torch.Tensor):
        device = value.device
        value = value.detach().to("cpu", torch.float64).numpy()
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: cannot convert {type(value).__name__} to a float array ({error})") from None
    if array.ndim != 2:
        raise ValueError(f"{name}: expected shape [N, R], got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains nan or inf; expected finite values >= 0")
    if np.any(array < 0):
        raise ValueError(f"{name}: contains negative values (min {array.min()}); expected >= 0")
    return array, device
