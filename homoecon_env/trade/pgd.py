"""pgd: accelerated projected gradient (FISTA) on an augmented Lagrangian, started from the
Newton dual solution or from the holdings (the package docstring)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .market import EPS, IR_ALLOWANCE, _diagnostics, _finish, _MarketData, _project_with_threshold
from .newton import MAX_LOG_MULTIPLIER, _solve_prices

PGD_MAX_ITER = 20_000  # projected-gradient iterations when max_iter is None
AL_PENALTY = 10.0  # augmented-Lagrangian penalty rho_i = AL_PENALTY (1 + mu_i) / sum_r w_ir
PENALTY_GROWTH = 2.0  # factor on a bottleneck agent's penalty when its IR residual stalls
MAX_PENALTY_BOOST = 1e6  # cap on that growth
INNER_FACTOR = 0.3  # multipliers update once inner stationarity <= this times the relative IR residual
MAX_INNER = 1_000  # FISTA iterations between multiplier updates, at most
LIPSCHITZ_DECAY = 0.9  # each step first tries 0.9 times the last Lipschitz estimate
MAX_BACKTRACKS = 60  # doublings of the Lipschitz estimate per step, at most


class _Penalised(NamedTuple):
    """The traded goods' data for projected gradient, [R_traded, N] arrays, fixed per call."""

    weights: np.ndarray
    supply: np.ndarray  # [R_traded] > 0
    endowment_utility: np.ndarray  # [N]
    ir_slack: np.ndarray  # [N] IR shortfall the final repair leaves alone (allowance + rounding)
    penalty_scale: np.ndarray  # [N] AL_PENALTY / W_i, W_i = sum_r w_ir (1 where W_i = 0)


class _Point(NamedTuple):
    """A point x [R, N] and the augmented Lagrangian's pieces there, for fixed (mu, rho)."""

    x: np.ndarray
    utility: np.ndarray  # [N] u_i(x_i), log(1 + x) continued below 0 (_extended_log1p)
    shifted: np.ndarray  # [N] mu_i + rho_i g_i(x), g_i = u_i(e_i) - u_i(x_i)
    multipliers: np.ndarray  # [N] max(0, shifted): the first-order multiplier estimate
    gradient: np.ndarray  # [R, N] (1 + multipliers_i) w_ir / (1 + x_ir)


def _extended_log1p(x: np.ndarray) -> np.ndarray:
    """log(1 + x) for x >= 0, continued below 0 by x - x^2 / 2 (same value, slope and curvature
    at 0): concave and smooth everywhere, so FISTA's extrapolated points, which may leave x >= 0,
    have a gradient. Iterates x_k are projections, hence >= 0, where nothing changes."""
    return np.where(x >= 0.0, np.log1p(np.maximum(x, 0.0)), x - 0.5 * x * x)


def _extended_marginal(x: np.ndarray) -> np.ndarray:
    """The derivative of ``_extended_log1p``: 1 / (1 + x) for x >= 0, 1 - x below."""
    return np.where(x >= 0.0, 1.0 / (1.0 + np.maximum(x, 0.0)), 1.0 - x)


def _log1p_difference(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """_extended_log1p(end) - _extended_log1p(start) for end >= 0, without cancellation where
    start >= 0: log(1 + (end - start) / (1 + start))."""
    safe = np.maximum(start, 0.0)
    return np.where(start >= 0.0, np.log1p((end - safe) / (1.0 + safe)), np.log1p(end) - start + 0.5 * start * start)


def _evaluate(problem: _Penalised, x: np.ndarray, mu: np.ndarray, rho: np.ndarray) -> _Point:
    """The augmented Lagrangian's gradient at x: (1 + max(0, mu + rho g(x))) w / (1 + x)."""
    utility = (problem.weights * _extended_log1p(x)).sum(axis=0)
    shifted = mu + rho * (problem.endowment_utility - utility)
    multipliers = np.maximum(shifted, 0.0)
    return _Point(x, utility, shifted, multipliers, (1.0 + multipliers) * problem.weights * _extended_marginal(x))


def _ascent_holds(problem: _Penalised, y: _Point, x: np.ndarray, rho: np.ndarray, lipschitz: float) -> bool:
    """Whether L_rho(x) >= L_rho(y) + grad L_rho(y) . (x - y) - L/2 |x - y|^2, the ascent lemma
    that a step 1 / L needs, checked agent by agent (L_rho is a sum over agents, and per-agent
    differences, taken without cancellation, keep rounding small)."""
    step = x - y.x
    utility_change = (problem.weights * _log1p_difference(y.x, x)).sum(axis=0)
    shifted = y.shifted - rho * utility_change
    multipliers = np.maximum(shifted, 0.0)
    # Penalty change (max(0, shifted)^2 - max(0, shifted_y)^2) / (2 rho), factored exactly.
    multiplier_change = np.where((shifted > 0) & (y.shifted > 0), -rho * utility_change, multipliers - y.multipliers)
    penalty_change = multiplier_change * (multipliers + y.multipliers) / (2.0 * rho)
    change = utility_change - penalty_change
    linear = (y.gradient * step).sum(axis=0)
    quadratic = 0.5 * lipschitz * (step * step).sum(axis=0)
    rounding = 16 * EPS * (np.abs(utility_change) + np.abs(penalty_change) + np.abs(linear) + quadratic)
    return bool(np.all(change - linear + quadratic >= -rounding))


def _fista_step(problem, point, previous, momentum, lipschitz, mu, rho, accelerate):
    """One accelerated projected-gradient step from ``point`` (x_k, previous x_{k-1}).

    The trial L starts at LIPSCHITZ_DECAY times the last one and doubles until the ascent lemma
    holds. With variable L the momentum follows Scheinberg, Goldfarb and Bai (2014):
    t_{k+1} = (1 + sqrt(1 + 4 t_k^2 L_{k+1} / L_k)) / 2, y = x_k + (t_k - 1) / t_{k+1} (x_k - x_{k-1}),
    both recomputed for each trial L; x_{k+1} = P_C(y + grad L_rho(y) / L) by the exact projection.
    Returns (y, x_{k+1}, theta, t_{k+1}, L); theta [R] are the projection's thresholds, and
    theta * L estimates the conservation multipliers (prices).
    """
    trial = LIPSCHITZ_DECAY * lipschitz
    for _ in range(MAX_BACKTRACKS):
        following = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * momentum * momentum * trial / lipschitz)) if accelerate else 1.0
        extrapolation = (momentum - 1.0) / following
        y = point
        if extrapolation != 0.0:
            y = _evaluate(problem, point.x + extrapolation * (point.x - previous.x), mu, rho)
        x, theta = _project_with_threshold(y.x + y.gradient / trial, problem.supply)
        if _ascent_holds(problem, y, x, rho, trial):
            break
        trial *= 2.0
    return y, x, theta, following, trial


def _stationarity(point: _Point, prices: np.ndarray, typical=1.0) -> float:
    """max over entries of |min(x_ir / (typical + x_ir), 1 - grad_ir / lambda_r)|: the
    projected-gradient residual in relative units, zero exactly when every holder's marginal
    value is the price and nobody values the good above it. ``typical`` = 1 is the KKT measure of
    ``_diagnostics``; a price still near 0 gives an infinite (honest) residual."""
    with np.errstate(over="ignore"):
        relative = point.gradient / np.maximum(prices, np.finfo(np.float64).tiny)[:, None]
    return float(np.max(np.abs(np.minimum(point.x / (typical + point.x), 1.0 - relative)), initial=0.0))


def _residuals(problem: _Penalised, point: _Point, prices: np.ndarray):
    """(stationarity, complementarity, unrepaired IR shortfall) at an iterate, with multipliers
    max(0, mu + rho g(x)) and conservation multipliers ``prices``; conservation holds by
    construction (every iterate is a projection onto it)."""
    shortfall = problem.endowment_utility - point.utility
    complementarity = float(np.max(np.abs(np.minimum(point.multipliers, -shortfall)), initial=0.0))
    return _stationarity(point, prices), complementarity, float(np.max(shortfall - problem.ir_slack, initial=0.0))


def _inner_stationarity(problem: _Penalised, point: _Point, prices: np.ndarray) -> float:
    """Stationarity of the inner maximisation in units free of the holdings' scale, with the
    mean holding s_r / N in place of 1 (the KKT measure's x / (1 + x) is about x at small
    holdings, where it would call any point stationary)."""
    return _stationarity(point, prices, problem.supply[:, None] / point.x.shape[1])


def _lipschitz_estimate(problem: _Penalised, point: _Point, rho: np.ndarray) -> float:
    """The augmented Lagrangian's curvature at ``point``: per agent (1 + mu_hat_i) max_r w_ir /
    (1 + x_ir)^2 from the utilities plus rho_i |grad u_i|^2 from the penalty, maximised over agents.
    A start for the backtracking, which raises it where the iterates need more."""
    marginal = problem.weights * _extended_marginal(point.x)  # w / (1 + x)
    curvature = (1.0 + point.multipliers) * (marginal * _extended_marginal(point.x)).max(axis=0)
    penalty = np.where(point.shifted > 0, rho * (marginal * marginal).sum(axis=0), 0.0)
    return float(max(np.max(curvature + penalty), np.finfo(np.float64).tiny))


def _solve_pgd(data: _MarketData, tol, max_iter, init, init_max_iter, warm_allocation, warm_multipliers,
               warm_prices, accelerate, pool=None):
    """Accelerated projected gradient on the augmented Lagrangian until the KKT residual <= tol.

    Returns (x, lam, mu, iterations, outer_iterations, init_iterations, diagnostics) on [R, N]
    arrays. Inner loop: FISTA steps (``_fista_step``) with O'Donoghue-Candes gradient restart.
    Outer loop: once the inner problem is stationary to INNER_FACTOR times the relative IR
    residual (or after MAX_INNER steps), mu <- max(0, mu + rho g(x)) and
    rho_i = AL_PENALTY boost_i (1 + mu_i) / W_i, where boost_i doubles for an agent whose IR
    residual is among the largest and has not halved since the last update (its demand is flat
    in mu, as for an agent holding nothing: a bigger step on mu gets it off the flat part).
    Whenever the iterate's KKT residual is below the target, it is made exactly conserving and
    IR (``_finish``) and measured; if that cost more than ``tol``, the target is tightened
    (x 0.01) and the iterations go on. The candidate with the lowest KKT residual is returned
    (with ``init="dual"``, the Newton solution is the first candidate, returned at once, after
    0 iterations, when its KKT residual is already <= tol). ``pool``: a `core.threads.BlockPool` for
    the dual start's per-agent passes.
    """
    e, w, supply, traded, endowment_utility = data
    num_goods, num_agents = e.shape
    allowance = min(1e-3 * tol, IR_ALLOWANCE)
    if not traded.any():  # nothing to trade: owners keep what they have
        x, utility = _finish(np.zeros_like(e), data, 0.0)
        lam, mu = np.zeros(num_goods), np.zeros(num_agents)
        return x, lam, mu, 0, 0, 0, _diagnostics(data, x, lam, mu, utility)
    init_iterations, prices, best = 0, None, None
    if init == "dual":  # the fast path: start from the Newton dual solution, exact when it converged
        x_dual, lam_dual, mu, init_iterations, dual_diagnostics = _solve_prices(data, tol, init_max_iter,
                                                                                warm_multipliers, warm_prices,
                                                                                pool=pool)
        if dual_diagnostics["kkt_residual"] <= tol:  # already a KKT point: nothing to polish
            return x_dual, lam_dual, mu, 0, 0, init_iterations, dual_diagnostics
        x, prices = x_dual[traded], lam_dual[traded]
        best = (dual_diagnostics["kkt_residual"], x_dual, lam_dual, mu, dual_diagnostics)
    else:
        x, mu = e[traded], np.zeros(num_agents)
        if warm_allocation is not None:  # the previous allocation, rescaled to the current supply
            previous = warm_allocation[traded]
            held = previous.sum(axis=1)
            x = np.where((held > 0)[:, None], previous * (supply[traded] / np.where(held > 0, held, 1.0))[:, None], x)
        if warm_multipliers is not None:
            mu = np.nan_to_num(warm_multipliers).clip(0.0, np.expm1(MAX_LOG_MULTIPLIER))
    weights = w[traded]
    total_weight = weights.sum(axis=0)
    problem = _Penalised(weights, supply[traded], endowment_utility,
                         allowance + 64 * EPS * (1.0 + np.abs(endowment_utility)),
                         np.where(total_weight > 0, AL_PENALTY / np.where(total_weight > 0, total_weight, 1.0), 1.0))
    boost, last_residual = np.ones(num_agents), np.full(num_agents, np.inf)
    rho = problem.penalty_scale * (1.0 + mu)
    point = _evaluate(problem, x, mu, rho)
    lipschitz = _lipschitz_estimate(problem, point, rho)
    if prices is None:  # the conservation multipliers of one projected-gradient step
        _, theta = _project_with_threshold(point.x + point.gradient / lipschitz, problem.supply)
        prices = lipschitz * theta
    previous, momentum = point, 1.0
    target, iterations, outer, inner = 0.5 * tol, 0, 0, 0
    while True:
        finite = np.all(np.isfinite(point.x)) and np.all(np.isfinite(prices)) and np.isfinite(lipschitz)
        stationarity, complementarity, unrepaired = _residuals(problem, point, prices)
        ir_met = complementarity <= target and unrepaired <= 0
        if not finite or (stationarity <= target and ir_met) or iterations >= max_iter:
            if finite:
                x_full = np.zeros_like(e)
                x_full[traded] = point.x
                x_full, utility = _finish(x_full, data, allowance)
                lam = np.zeros(num_goods)
                lam[traded] = np.maximum(prices, 0.0)
                diagnostics = _diagnostics(data, x_full, lam, point.multipliers, utility)
                if best is None or diagnostics["kkt_residual"] < best[0]:
                    best = (diagnostics["kkt_residual"], x_full, lam, point.multipliers, diagnostics)
            elif best is None:  # rounding broke down (not seen in tests): keep the endowment
                lam, mu = np.zeros(num_goods), np.zeros(num_agents)
                # nothing was certified: report it as such (converged False), whatever no trade's residual
                best = (np.inf, e.copy(), lam, mu, {**_diagnostics(data, e, lam, mu), "kkt_residual": np.inf})
            if best[0] <= tol or not finite or iterations >= max_iter or target < 1e-6 * tol:
                break
            target *= 0.01
            continue
        if inner > 0 and not ir_met:  # while IR is unmet, the multipliers may need an update
            shortfall = problem.endowment_utility - point.utility
            ir_residual = np.where(point.multipliers > 0, np.abs(shortfall), np.maximum(shortfall, 0.0))  # [N]
            scale = np.maximum(np.maximum(problem.endowment_utility, point.utility), problem.ir_slack)
            relative_residual = float(np.max(ir_residual / scale))
            if _inner_stationarity(problem, point, prices) <= INNER_FACTOR * relative_residual or inner >= MAX_INNER:
                mu = point.multipliers  # the augmented-Lagrangian multiplier update
                stalled = ((ir_residual > 0.5 * last_residual) & (ir_residual > problem.ir_slack)
                           & (ir_residual >= 0.5 * ir_residual.max()) & (inner < MAX_INNER))
                boost = np.where(stalled, np.minimum(PENALTY_GROWTH * boost, MAX_PENALTY_BOOST), boost)
                last_residual = ir_residual
                rho = problem.penalty_scale * boost * (1.0 + mu)
                point = previous = _evaluate(problem, point.x, mu, rho)
                momentum, inner, outer = 1.0, 0, outer + 1
        y, x_new, theta, following, lipschitz = _fista_step(problem, point, previous, momentum, lipschitz, mu, rho,
                                                            accelerate)
        prices = lipschitz * theta
        iterations, inner = iterations + 1, inner + 1
        # Gradient restart (O'Donoghue and Candes): drop the momentum once it points against the step.
        momentum = following if np.sum((x_new - y.x) * (x_new - point.x)) >= 0 else 1.0
        previous, point = point, _evaluate(problem, x_new, mu, rho)
    _, x_best, lam_best, mu_best, diagnostics = best
    return x_best, lam_best, mu_best, iterations, outer, init_iterations, diagnostics
