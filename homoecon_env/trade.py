"""Market clearing: the trade stage of a step (DESIGN.md section 4).

The market reallocates the holdings e [N, R] of N agents to x [N, R] by solving

    max_x  sum_i u_i(x_i),   u_i(x) = sum_r w_ir * log(1 + x_r)
    s.t.   x in C = {x >= 0, sum_i x_ir = s_r := sum_i e_ir for every good r}   (conservation, lambda_r)
           g_i(x) = u_i(e_i) - u_i(x_i) <= 0 for every agent i                 (individual rationality, mu_i)

The conservation multipliers lambda are the market prices. Three methods:

``method="pgd"`` (default): accelerated projected gradient on an augmented Lagrangian.

- Primal variable x, kept in C at every iterate by the exact Euclidean projection onto C: per
  good a scaled simplex, x = max(0, y - theta_r), theta_r found by sorting, batched over goods
  (``project_onto_conservation``). theta_r * L estimates the price lambda_r.
- IR by multipliers, not a penalty: the augmented Lagrangian for inequalities,
  L_rho(x, mu) = sum_i u_i(x_i) - sum_i (max(0, mu_i + rho_i g_i(x))^2 - mu_i^2) / (2 rho_i),
  whose gradient is (1 + max(0, mu_i + rho_i g_i)) w_ir / (1 + x_ir).
- Inner loop, max over C of L_rho(., mu): FISTA steps x+ = P_C(y + grad L_rho(y) / L). The step
  1/L comes from backtracking on the ascent lemma (checked per agent), each step first trying
  0.9 L, so the step follows the local curvature w / (1 + x)^2 + rho |grad u|^2. The momentum
  rule for a varying L is that of Scheinberg, Goldfarb and Bai (2014). Gradient-based adaptive
  restart (O'Donoghue and Candes 2015) resets the momentum when (x+ - y) . (x+ - x) < 0.
  ``accelerate=False`` gives plain projected gradient (same steps, no momentum).
  log(1 + x) is continued below 0 by x - x^2/2, so extrapolated points y outside x >= 0 have
  a gradient; iterates themselves are projections and never leave C.
- Outer loop: once the inner problem is stationary to 0.3 times the relative IR residual, the
  multipliers update mu <- max(0, mu + rho g(x)), with rho_i = 10 (1 + mu_i) / sum_r w_ir (the
  dual curvature's scale), doubled for an agent whose IR residual is among the largest and has
  not halved since the last update (its demand is flat in mu, e.g. it holds nothing).
- Stopping rule on the KKT residual of the iterate: relative stationarity (the projected-gradient
  residual per entry, |min(x_ir / (1 + x_ir), 1 - grad_ir / lambda_r)|) and complementarity
  |min(mu_i, u_i(x_i) - u_i(e_i))| <= tol / 2, IR violation <= min(1e-3 tol, 1e-10) (what the
  final repair leaves alone); conservation holds by the projection. ``max_iter`` caps the
  iterations (default 20,000). The candidate is then made
  exactly conserving and IR as below and its KKT residual measured again; if the repair cost
  more than ``tol`` the target is tightened and the iterations go on.
- Start, ``init="dual"`` (default, the fast path): the Newton solution below, whose multipliers mu
  and prices lambda seed the iteration; when it is already a KKT point (residual <= ``tol``) it
  is returned as it is, after 0 iterations, otherwise projected gradient polishes it.
  ``init="endowment"``: x = e (or, with ``warm_start``, the previous allocation rescaled to the
  current supply) and mu = 0 (or the previous multipliers): projected gradient alone.
- ``iterations`` counts projected-gradient steps, ``init_iterations`` the Newton price updates
  of the start, ``outer_iterations`` the multiplier updates.

``method="newton"``: Newton's method on the dual over the R prices, with the IR multipliers
exact for each price vector:

- For given prices each agent's problem max u_i(x) - lambda.x s.t. x >= 0, u_i(x) >= u_i(e_i) has
  a closed form: x_ir = max(0, (1 + mu_i) w_ir / lambda_r - 1), where mu_i >= 0 is the least
  multiplier restoring the agent's endowment utility (the root of a convex piecewise-linear
  function, in closed form: the least root of its lines, for all agents at once). With mu = 0 this is the water-filling (no-IR) optimum.
- The dual function of prices, Phi(lambda) = sum_i max_x [u_i - lambda.x] + lambda.s, is convex
  in R variables, and its gradient is minus the excess demand. Prices take Newton steps on it
  (the Hessian is an R x R sum of per-agent compensated demand slopes), taken in 1 / lambda (where
  the demand of agents whose IR does not bind is piecewise linear), with a line search on the
  directional derivative, falling back to diagonally scaled excess demand when a Newton step
  cannot lower Phi. They stop once the clearing error is below max(1e-3 tol, min(0.05 tol, 5e-11))
  and the KKT residual of the *returned* allocation is below ``tol``.
- The first prices are the warm start's (``prices * price_scale``, the previous call's
  multipliers) where they price every traded good, otherwise the water-filling prices for the
  warm-start multipliers. The line search tries the full step first (capped so that no price
  more than quadruples) and stops where the slope has halved.
- Fixed-step dual ascent, and alternating water-filling with multiplier updates, converge slowly
  or cycle when holdings are small and utilities nearly linear; Newton on the R prices converges
  in about 5 steps across holdings from 1e-9 to 1e6.

``method="penalty"`` is the seed's method, kept for comparison: 100 fixed-size projected gradient
steps on welfare minus a quadratic penalty on IR violations. Its IR violation is reported as is.

Every pgd and newton allocation is returned exactly conserving (each good rescaled to its supply;
a relative fix is exact for small holders next to large ones, where the Euclidean projection's
uniform shift is not) and individually rational (blended towards the endowment where an iteration
cap or rounding left a violation above min(1e-3 tol, 1e-10), for newton and pgd's dual start
min(0.1 tol, 1e-10)); ``converged`` says whether its KKT residual is <= ``tol``.

Conventions: a good nobody holds (s_r = 0) and a good nobody values (all w_ir = 0) are not traded
and have price 0 (their conservation multiplier is not unique); the first stays at 0 for everyone,
the second stays with its owners. An agent with all-zero weights is indifferent, so IR holds for
it whatever it gets and the optimum passes its goods to others. Prices are normalised to sum 1, or
are all 0 when no good is traded. Arithmetic is float64 NumPy (few, cheap calls at small N);
inputs may be torch tensors or arrays, outputs are float64 torch tensors on the input's device.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
import torch

METHODS = ("pgd", "newton", "penalty")
INITS = ("dual", "endowment")
DEFAULT_MAX_ITER = 100  # newton price updates when max_iter is None (and pgd's init_max_iter)
PENALTY_STEPS = 100  # the seed's number of steps (penalty's default max_iter)
PENALTY_STEP_SIZE = 0.1  # the seed's fixed gradient step
PENALTY_WEIGHT = 10.0  # the seed's quadratic IR-penalty coefficient
LINE_SEARCH_STEPS = 80  # evaluations per line search, at most
LINE_SEARCH_SLOPE = 0.5  # a line search stops where |slope| <= this times the start's
MAX_PRICE_GROWTH = 3.0  # a line search's first trial raises no price more than (1 + this) fold
MAX_ENUMERATED_GOODS = 3  # IR multipliers by enumerating the 2^R - 1 sets of goods up to this R,
ENUMERATION_BUDGET = 1 << 12  # or while N 2^R is at most this; by sorting the goods otherwise
IR_ALLOWANCE = 1e-10  # largest IR violation (utility) left unrepaired, with 1e-3 tol (newton: 0.1 tol) when smaller
MAX_LOG_MULTIPLIER = 200.0  # log(1 + mu) is capped so that (1 + mu) w / lambda stays finite
PGD_MAX_ITER = 20_000  # projected-gradient iterations when max_iter is None
AL_PENALTY = 10.0  # augmented-Lagrangian penalty rho_i = AL_PENALTY (1 + mu_i) / sum_r w_ir
PENALTY_GROWTH = 2.0  # factor on a bottleneck agent's penalty when its IR residual stalls
MAX_PENALTY_BOOST = 1e6  # cap on that growth
INNER_FACTOR = 0.3  # multipliers update once inner stationarity <= this times the relative IR residual
MAX_INNER = 1_000  # FISTA iterations between multiplier updates, at most
LIPSCHITZ_DECAY = 0.9  # each step first tries 0.9 times the last Lipschitz estimate
MAX_BACKTRACKS = 60  # doublings of the Lipschitz estimate per step, at most
EPS = np.finfo(np.float64).eps
_SUBNORMAL = np.finfo(np.float64).smallest_subnormal


@dataclass(frozen=True)
class TradeResult:
    """Outcome of one market clearing.

    allocation [N, R]: holdings after trade. prices [R]: conservation multipliers normalised to
    sum 1 (0 for an untraded good). iterations: projected-gradient iterations (pgd), price updates
    (newton) or gradient steps (penalty). converged: kkt_residual <= tol. conservation_error:
    max_r |sum_i x_ir - s_r| / max(1, s_r). ir_violation: max_i max(0, u_i(e_i) - u_i(x_i)).
    kkt_residual: the largest of conservation error, IR violation, complementarity
    |min(mu_i, u_i(x_i) - u_i(e_i))| and relative stationarity. objective: sum_i u_i(x_i).
    multipliers [N]: IR multipliers mu (warm start for the next call). method: the method used.
    init_iterations: Newton price updates of pgd's ``init="dual"`` start (0 otherwise).
    outer_iterations: pgd's augmented-Lagrangian multiplier updates (0 for other methods).
    price_scale: the sum of the conservation multipliers before normalising (prices * price_scale
    are the multipliers; the next call's Newton start); 0 when no good is priced or unknown.
    Tensors are float64.
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
    init_iterations: int = 0
    outer_iterations: int = 0
    price_scale: float = 0.0


def clear_market(holdings, weights, *, method: str = "pgd", tol: float = 1e-9,
                 max_iter: Optional[int] = None, warm_start: Optional[TradeResult] = None,
                 init: str = "dual", accelerate: bool = True, init_max_iter: int = DEFAULT_MAX_ITER) -> TradeResult:
    """Reallocate ``holdings`` [N, R] to maximise summed utility, conserving goods, keeping IR.

    ``weights`` [N, R] are the utility weights w (nonnegative; a row may be all zero).
    ``method``: "pgd" (default), "newton" or "penalty" (module docstring). ``tol`` bounds the
    KKT residual (pgd, newton). ``max_iter`` caps the projected-gradient iterations (pgd, default
    20,000) or the price updates (newton, default 100), or sets the number of steps (penalty,
    default 100). ``warm_start``, a previous result with N agents, seeds the IR multipliers (and,
    for pgd with ``init="endowment"``, the allocation, rescaled to the current supply).
    pgd only: ``init`` is "dual" (start from the Newton dual solution) or "endowment" (start from
    the holdings: projected gradient alone); ``init_max_iter`` caps the Newton price updates of
    the dual start (default 100); ``accelerate=False`` drops FISTA's momentum (plain projected
    gradient, for comparison). Bad input raises ``ValueError`` naming the argument.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; expected one of {METHODS}")
    if init not in INITS:
        raise ValueError(f"init: unknown start {init!r}; expected one of {INITS}")
    # Goods-major layout [R, N]: sums over agents run along contiguous memory.
    e, device = _as_matrix("holdings", holdings)
    w, _ = _as_matrix("weights", weights)
    if e.shape != w.shape:
        raise ValueError(f"weights: shape {w.shape[::-1]} differs from holdings shape {e.shape[::-1]}")
    if not (isinstance(tol, (int, float, np.floating)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: {tol!r}; expected a finite number > 0")
    for name, cap in (("max_iter", max_iter), ("init_max_iter", init_max_iter)):
        if cap is not None and (not isinstance(cap, (int, np.integer)) or isinstance(cap, bool) or cap < 1):
            raise ValueError(f"{name}: {cap!r}; expected an integer >= 1")
    if warm_start is not None and not isinstance(warm_start, TradeResult):
        raise ValueError(f"warm_start: expected a TradeResult or None, got {type(warm_start).__name__}")

    num_goods, num_agents = e.shape
    if num_agents == 0:  # no agents, nothing to trade
        empty = torch.zeros((0, num_goods), dtype=torch.float64, device=device)
        return TradeResult(empty, torch.zeros(num_goods, dtype=torch.float64, device=device), 0, True,
                           0.0, 0.0, 0.0, 0.0, torch.zeros(0, dtype=torch.float64, device=device), method)
    warm_allocation = warm_multipliers = warm_prices = None
    if warm_start is not None:
        if warm_start.multipliers.shape[0] == num_agents:
            warm_multipliers = _as_array(warm_start.multipliers)
            if method == "pgd" and init == "endowment" and warm_start.allocation.shape == (num_agents, num_goods):
                warm_allocation = np.ascontiguousarray(_as_array(warm_start.allocation).T)
        if warm_start.price_scale > 0 and warm_start.prices.shape[0] == num_goods:  # unnormalised prices
            warm_prices = _as_array(warm_start.prices) * warm_start.price_scale
    init_iterations = outer_iterations = 0
    # Goods nobody holds or values make 0/0 and x/0 in intermediate ratios; the solvers mask them
    # explicitly, so numpy's warnings would only be noise for users.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        market = _market_data(e, w)
        if method == "pgd":
            x, lam, mu, iterations, outer_iterations, init_iterations, diagnostics = _solve_pgd(
                market, tol, max_iter or PGD_MAX_ITER, init, init_max_iter, warm_allocation, warm_multipliers,
                warm_prices, accelerate)
        elif method == "newton":
            x, lam, mu, iterations, diagnostics = _solve_prices(market, tol, max_iter or DEFAULT_MAX_ITER,
                                                                warm_multipliers, warm_prices)
        else:
            x, lam, mu, iterations = _solve_penalty(e, w, max_iter or PENALTY_STEPS)
            diagnostics = _diagnostics(market, x, lam, mu)
        # One sum is finite exactly when every term is (short of overflow, where no trade is also safe).
        if not math.isfinite(float(np.add.reduce(x, axis=None)) + sum(lam.tolist()) + float(np.add.reduce(mu, axis=None))):
            # Last line of defence, never expected: no trade is conserving and individually rational.
            x, lam, mu = e.copy(), np.zeros(num_goods), np.zeros(num_agents)
            diagnostics = {**_diagnostics(market, x, lam, mu), "kkt_residual": np.inf}
    total = sum(lam.tolist())
    return TradeResult(
        allocation=_as_tensor(x.T, device),
        prices=_as_tensor(lam / total if total > 0 else np.zeros_like(lam), device),
        iterations=int(iterations),
        converged=bool(diagnostics["kkt_residual"] <= tol),
        multipliers=_as_tensor(mu, device),
        method=method,
        init_iterations=int(init_iterations),
        outer_iterations=int(outer_iterations),
        price_scale=total if total > 0 else 0.0,
        **diagnostics,
    )


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


_sum_over_goods = functools.partial(np.add.reduce, axis=0)  # [R, N] -> [N], without ndarray.sum's wrapper
_sum_over_agents = functools.partial(np.add.reduce, axis=1)  # [R, N] -> [R]


def _utility(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """u_i = sum_r w_ir log(1 + x_ir) for [R, N] arrays; returns [N]."""
    return _sum_over_goods(weights * np.log1p(x))


# ----------------------------------------------------------------------------------------------
# newton: Newton's method on the dual over prices (also pgd's init="dual" start)


class _Economy(NamedTuple):
    """The traded goods' data, [R_traded, N] arrays, computed once per call.

    The IR multipliers have a closed form (``_respond``): z_i = min over nonempty sets S of goods
    of (u_i(e_i) - sum_S w a) / sum_S w with a = log w - log lambda. With few goods the K = 2^R - 1
    sets are enumerated, each a line in log lambda: z_iS = ``line_offset`` [S, i] +
    sum_r ``line_slopes`` [r, S, i] log lambda_r, with slopes w_ir / sum_S w (r in S) and offset
    (u_i(e_i) - sum_S w log w) / sum_S w, arranged so that a set of goods the agent does not value
    never wins (offset +inf, slopes 0) and an agent with u_i(e_i) = 0, never IR-binding, gets
    z = -inf (offset -inf). A last line, the constant MAX_LOG_MULTIPLIER, caps z. With many goods
    only the R sets of best-valued goods are tried, after sorting (``line_offset`` None, and
    ``log_weights`` and ``weighted_log_weights`` set).
    """

    weights: np.ndarray
    supply: np.ndarray  # [R_traded]
    supply_list: list  # the same, Python floats
    line_offset: Optional[np.ndarray]  # [K + 1, N]
    line_slopes: Optional[tuple]  # R_traded arrays [K + 1, N]
    target: np.ndarray  # [N] u_i(e_i), -inf where 0 (never IR-binding)
    log_weights: Optional[np.ndarray]  # 0 where not valued
    weighted_log_weights: Optional[np.ndarray]  # w log w, 0 where w = 0
    scratch: np.ndarray  # [R_traded + 1, N] working space of _newton_direction, last row ones


def _economy(weights: np.ndarray, supply: np.ndarray, endowment_utility: np.ndarray) -> _Economy:
    log_weights = np.log(np.where(weights > 0, weights, 1.0))
    num_goods, num_agents = weights.shape
    target = np.where(endowment_utility > 0, endowment_utility, -np.inf)
    scratch = np.ones((num_goods + 1, num_agents))
    if not (num_goods <= MAX_ENUMERATED_GOODS or num_agents << num_goods <= ENUMERATION_BUDGET):
        return _Economy(weights, supply, supply.tolist(), None, None, target, log_weights, weights * log_weights, scratch)
    subsets = _subsets(num_goods)  # [K, R]
    num_sets = subsets.shape[0]
    # einsum, not BLAS: a multithreaded BLAS can stall for milliseconds next to torch's threads
    subset_weight = np.einsum("kr,rn->kn", subsets, weights)  # [K, N]
    valued_set = subset_weight > 0
    inverse = np.divide(1.0, subset_weight, out=np.zeros(subset_weight.shape), where=valued_set)
    slopes = np.zeros((num_goods, num_sets + 1, num_agents))  # the last line, the cap, is flat
    np.multiply(subsets.T[:, :, None], weights[:, None, :] * inverse, out=slopes[:, :num_sets])
    offset = np.full((num_sets + 1, num_agents), MAX_LOG_MULTIPLIER)
    # (u(e) - sum_S w log w) / sum_S w; a set nobody values: +inf, or -inf (with every set) where u(e) = 0
    line_slopes = tuple(slopes)
    spent = target * inverse  # minus sum_S w log w / sum_S w, summed good by good
    for good_slopes, good_log_weights in zip(line_slopes, log_weights):
        spent -= good_slopes[:num_sets] * good_log_weights
    offset[:num_sets] = np.where(valued_set, spent, target * np.inf)
    return _Economy(weights, supply, supply.tolist(), offset, line_slopes, target, None, None, scratch)


@functools.lru_cache(maxsize=None)
def _subsets(num_goods: int) -> np.ndarray:
    """[2^R - 1, R] 0/1 rows: every nonempty set of goods (read-only, shared between calls)."""
    subsets = ((np.arange(1, 1 << num_goods)[:, None] >> np.arange(num_goods)) & 1).astype(np.float64)
    subsets.flags.writeable = False
    return subsets


class _Market(NamedTuple):
    """Every agent's optimal response to prices, and the resulting excess demand."""

    prices: np.ndarray  # [R_traded] lambda > 0
    log_multipliers: np.ndarray  # [N] z = log(1 + mu) >= 0
    marginal_ratio: np.ndarray  # [R_traded, N] (1 + mu_i) w_ir / lambda_r, = 1 + x_ir where x_ir > 0
    allocation: np.ndarray  # [R_traded, N]
    demand: np.ndarray  # [R_traded] sum_i x_ir
    excess: np.ndarray  # [R_traded] sum_i x_ir - s_r = -grad Phi


def _respond(economy: _Economy, prices: np.ndarray) -> _Market:
    """Demand at ``prices``, each agent with the least IR multiplier that keeps it IR.

    At multiplier mu, u_i = sum_r w_ir max(0, z + a_ir) with z = log(1 + mu) and
    a_ir = log(w_ir / lambda_r): convex, increasing and piecewise linear in z, and the maximum of
    the lines sum_S w (z + a) over sets S of goods. So u_i reaches u_i(e_i) first at
    z = min_S (u_i(e_i) - sum_S w a) / sum_S w, and z = max(0, that) (an agent IR at z = 0 is slack).
    The best line at any z is that of the goods with a > -z, the R sets of best-valued goods, which
    is all that is tried when there are too many goods to enumerate the sets.
    """
    if economy.line_offset is not None:  # the least of the lines, the cap among them
        z = economy.line_offset
        for slopes, log_price in zip(economy.line_slopes, np.log(prices).tolist()):
            z = z + slopes * log_price
        z = np.minimum.reduce(z, axis=0)
    else:
        log_prices = np.log(prices)
        a = economy.log_weights - log_prices[:, None]
        order = np.argsort(np.where(economy.weights > 0, -a, np.inf), axis=0)  # best-valued goods first
        line_weight = np.take_along_axis(economy.weights, order, axis=0).cumsum(axis=0)
        line_value = np.take_along_axis(economy.weighted_log_weights - economy.weights * log_prices[:, None], order,
                                        axis=0).cumsum(axis=0)
        z = np.minimum(np.minimum.reduce((economy.target - line_value) / line_weight, axis=0), MAX_LOG_MULTIPLIER)
    z = np.maximum(z, 0.0, out=z)
    ratio = np.multiply.outer(1.0 / prices, np.exp(z))
    ratio *= economy.weights
    allocation = ratio - 1.0
    np.maximum(allocation, 0.0, out=allocation)
    demand = _sum_over_agents(allocation)
    return _Market(prices, z, ratio, allocation, demand, demand - economy.supply)


def _newton_direction(economy: _Economy, market: _Market):
    """Solve (Hessian of Phi) p = excess demand; the Hessian is minus the demand's price slope.

    An agent with mu = 0 has d x_ir / d lambda_r = -(1 + x_ir) / lambda_r on its active goods; an
    IR-binding agent moves along its indifference surface, adding the symmetric rank-one term
    (1 + x_ir) w_iq / (W_i lambda_q) with W_i its active weight. A tiny ridge (1e-12 times
    sum_i (1 + x_ir) over all agents, active or not, which bounds the true diagonal) keeps flat
    directions (perfectly inelastic demand) solvable; the line search then sets the length.

    The step p is then taken in eta = 1 / lambda, where the demand of agents with mu = 0 is
    piecewise linear (exact once the active set settles): the Newton step in eta,
    -J_eta^-1 excess = -p / lambda^2, moves lambda to lambda^2 / (lambda - p), so the direction is
    p / (1 - p / lambda) (the ratio capped at 3/4), kept when it is still a descent direction.
    Returns (direction [R] array, excess . direction > 0).
    """
    prices, excess = market.prices.tolist(), market.excess.tolist()
    num_goods, num_agents = market.allocation.shape
    active = market.allocation > 0
    one_plus_x = np.where(active, market.marginal_ratio, 0.0)  # [R, N], 0 where x = 0
    active_weights = np.where(active, economy.weights, 0.0)
    # 1 / W_i for IR-binding agents, 0 for slack ones (whose W_i may be 0: divided by the least subnormal)
    binding = (market.log_multipliers > 0) / np.maximum(_sum_over_goods(active_weights), _SUBNORMAL)
    scaled = economy.scratch  # [R + 1, N]: the coupling's w_iq / W_i, and a row of ones for the diagonal
    np.multiply(active_weights, binding, out=scaled[:num_goods])
    sums = np.einsum("rn,qn->rq", one_plus_x, scaled).tolist()  # [R, R + 1]: the coupling, then the diagonal
    ridge = [1e-12 * (held + num_agents) for held in market.demand.tolist()]
    # H_rq = (diag + ridge - coupling)_rq / lambda_q
    hessian = [[((row[num_goods] + ridge[r] if r == q else 0.0) - row[q]) / prices[q] for q in range(num_goods)]
               for r, row in enumerate(sums)]
    try:
        newton = _solve_small(hessian, excess)
    except np.linalg.LinAlgError:
        newton = [gap * price / bound for gap, price, bound in zip(excess, prices, ridge)]
    for direction in ([p / (1.0 - min(p / price, 0.75)) for p, price in zip(newton, prices)], newton):
        slope = sum([gap * p for gap, p in zip(excess, direction)])  # nan or inf unless the direction is finite
        if 0.0 < slope < np.inf:
            return np.array(direction), slope
    direction = _diagonal_direction(market)  # always raises prices where demand exceeds
    return direction, float(market.excess @ direction)


def _solve_small(matrix, vector) -> list:
    """``np.linalg.solve`` for an R x R system (nested lists or arrays), as a list; R <= 2 by
    Cramer's rule (forward stable for 2 x 2), without the general routine's overhead. Raises
    ``np.linalg.LinAlgError`` when singular."""
    size = len(vector)
    if size > 2:
        return np.linalg.solve(np.asarray(matrix, dtype=np.float64), np.asarray(vector, dtype=np.float64)).tolist()
    if isinstance(matrix, np.ndarray):
        matrix, vector = matrix.tolist(), np.asarray(vector).tolist()
    if size == 1:
        ((a,),), (b,) = matrix, vector
        if a == 0.0:
            raise np.linalg.LinAlgError("singular matrix")
        return [b / a]
    (a, b), (c, d) = matrix
    f, g = vector
    determinant = a * d - b * c
    if determinant == 0.0:
        raise np.linalg.LinAlgError("singular matrix")
    return [(d * f - b * g) / determinant, (a * g - c * f) / determinant]


def _diagonal_direction(market: _Market) -> np.ndarray:
    """Excess demand scaled per good by the Hessian's diagonal if every agent bought the good at mu
    fixed, sum_i (1 + mu_i) w_ir / lambda_r^2: always a descent direction."""
    return market.excess * market.prices / _sum_over_agents(market.marginal_ratio)


def _line_search(economy: _Economy, market: _Market, direction: np.ndarray, descent: float, value=None):
    """Step along ``direction`` to where the slope of Phi has fallen to half its start.

    ``descent`` = excess . direction > 0, minus the start's slope. Phi is convex, so its slope along
    the line, -excess . direction, is nondecreasing: expand while it is negative, backtrack while
    the step overshoots, then bisect (geometrically, then by safeguarded secant). The first trial
    is the full step, shortened to keep every price within (0.5, MAX_PRICE_GROWTH + 1) times its
    value. A step with a small negative slope certainly lowers Phi; one with a small positive slope
    is checked against Phi itself, up to rounding (slopes stay exact where Phi values are lost in
    rounding, at small holdings), unless step * slope, which bounds the increase, is already below
    that rounding level. ``value``: Phi at ``market`` and its rounding level, if known.
    Returns the market and Phi there if it was computed (the input and ``value`` if no step helped).
    """
    lam = market.prices
    relative = (direction / lam).tolist()
    lowest, highest = min(relative), max(relative)
    boundary = -1.0 / lowest if lowest < 0 else np.inf  # prices stay > 0
    step = min(1.0, 0.5 * boundary, MAX_PRICE_GROWTH / highest if highest > 0 else np.inf)
    start_slope = -descent
    low, low_slope, low_market = 0.0, start_slope, market
    high = high_slope = None
    width = np.inf
    for _ in range(LINE_SEARCH_STEPS):
        trial = _respond(economy, lam + step * direction)
        slope = -float(trial.excess @ direction)
        if abs(slope) <= LINE_SEARCH_SLOPE * descent:
            if slope <= 0:  # by convexity Phi(step) <= Phi(0) + step * slope: a certified decrease
                return trial, None
            if step * slope <= _spending_rounding(economy, market):  # an increase below Phi's rounding
                return trial, None
            if value is None:
                value = _dual_value(economy, market)
            trial_value = _dual_value(economy, trial)
            if trial_value[0] <= value[0] + value[1]:  # just past the minimum
                return trial, trial_value
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
    return low_market, value if low_market is market else None


def _spending_rounding(economy: _Economy, market: _Market) -> float:
    """64 eps lambda . (demand + supply): a lower bound on the rounding level of ``_dual_value``."""
    return 64 * EPS * sum([price * (held + supply) for price, held, supply
                           in zip(market.prices.tolist(), market.demand.tolist(), economy.supply_list)])


def _dual_value(economy: _Economy, market: _Market):
    """Phi(lambda) = sum_i u_i(x_i) - lambda . excess, and the rounding level of that sum."""
    utility = float(np.add.reduce(economy.weights * np.log1p(market.allocation), axis=None))
    value = sum([price * (held - supply) for price, held, supply
                 in zip(market.prices.tolist(), market.demand.tolist(), economy.supply_list)])
    return utility - value, 64 * EPS * abs(utility) + _spending_rounding(economy, market)


def _solve_prices(data: _MarketData, tol, max_iter, warm_multipliers, warm_prices=None):
    """Newton steps on traded goods' prices until the returned allocation's KKT residual <= tol.

    The first prices are ``warm_prices`` (the previous call's) where they price every traded good,
    otherwise the water-filling prices for the warm-start multipliers. Newton stops on the clearing
    error (excess demand, the dual gradient, in KKT units), once below max(1e-3 tol, half the IR
    allowance min(0.1 tol, IR_ALLOWANCE)); the candidate is then made exactly conserving and IR
    (violations up to the allowance left alone) and its full KKT residual measured. If the repair cost more than ``tol``,
    the target is tightened (x 0.01) and Newton resumes. A Newton step that cannot lower Phi is
    replaced by a diagonally scaled one; it stops early when the error reaches rounding level, or
    has not halved in 20 steps.
    """
    e, traded = data.endowment, data.traded
    num_goods, num_agents = e.shape
    lam = np.zeros(num_goods)
    if not traded.any():
        x, utility = _finish(np.zeros_like(e), data, 0.0)
        return x, lam, np.zeros(num_agents), 0, _diagnostics(data, x, lam, np.zeros(num_agents), utility)
    all_traded = min(traded.tolist())
    weights = data.weights if all_traded else data.weights[traded]
    economy = _economy(weights, data.supply if all_traded else data.supply[traded], data.endowment_utility)
    start = warm_prices if warm_prices is None or all_traded else warm_prices[traded]
    if start is None or not all(0.0 < price < np.inf for price in start.tolist()):
        initial = np.zeros(num_agents) if warm_multipliers is None else np.nan_to_num(warm_multipliers)
        start = _water_fill((1.0 + initial.clip(0.0, np.expm1(MAX_LOG_MULTIPLIER))) * weights, economy.supply)
    market, value = _respond(economy, start), None
    # The final rescaling moves an IR-binding agent's utility by about the clearing error (weights
    # summing to 1): stopping below half the allowance the repair leaves alone makes blending rare.
    allowance = min(0.1 * tol, IR_ALLOWANCE)
    target, best, idle = max(1e-3 * tol, 0.5 * allowance), np.inf, 0
    for iterations in range(1, max_iter + 1):
        error, rounding = _clearing_error(economy, market)
        best, idle = (error, 0) if error < 0.5 * best else (best, idle + 1)
        stalled = idle >= 20  # no halving of the error in twenty steps: give up
        if error > max(target, rounding) and iterations < max_iter and not stalled:
            previous = market
            market, value = _line_search(economy, market, *_newton_direction(economy, market), value)
            if market is previous:  # Newton's model misled it: try the diagonally scaled gradient
                direction = _diagonal_direction(market)
                market, value = _line_search(economy, market, direction, float(market.excess @ direction), value)
            stalled = market is previous
            if not stalled:
                continue
        if all_traded:
            x, marginal = market.allocation, market.marginal_ratio
        else:
            x, marginal = np.zeros_like(e), None
            x[traded] = market.allocation
        x, utility = _finish(x, data, allowance, market.demand)
        if all_traded:
            lam = market.prices
        else:
            lam[traded] = market.prices
        mu = np.expm1(market.log_multipliers)
        diagnostics = _diagnostics(data, x, lam, mu, utility, marginal)
        if diagnostics["kkt_residual"] <= tol or iterations >= max_iter or stalled or error <= rounding:
            return x, lam, mu, iterations, diagnostics
        target = 0.01 * min(target, error)
    raise AssertionError("unreachable: the last iteration always returns")


def _clearing_error(economy: _Economy, market: _Market):
    """How far demand is from clearing, in the units of the KKT residual, and its rounding level.

    Clearing good r exactly (the final rescaling by s_r / demand_r) changes a holder's relative
    marginal value by about x_ir / (1 + x_ir) * |excess_r| / s_r; the demand sum_i (1 + x_ir)
    over holders carries rounding of about 8 eps times itself. The holders are counted only when
    the error is near that level (N holders bound it otherwise, and the callers only compare).
    """
    largest = np.maximum.reduce(market.allocation, axis=1).tolist()  # the largest x / (1 + x): the largest x's
    num_agents = market.allocation.shape[1]
    shares = []
    error = bound = 0.0
    for big, supply, excess, held in zip(largest, economy.supply_list, market.excess.tolist(), market.demand.tolist()):
        share = big / ((1.0 + big) * supply)
        shares.append(share)
        error, bound = max(error, share * abs(excess)), max(bound, share * (held + num_agents))
    if error > 8 * EPS * bound:
        return error, 8 * EPS * bound
    holders = _sum_over_agents(market.allocation > 0).tolist()  # sum_i (1 + x_ir) over holders
    return error, 8 * EPS * max(share * (held + count) for share, held, count in zip(shares, market.demand.tolist(), holders))


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


# ----------------------------------------------------------------------------------------------
# pgd: accelerated projected gradient on an augmented Lagrangian


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
               warm_prices, accelerate):
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
    0 iterations, when its KKT residual is already <= tol).
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
                                                                                warm_multipliers, warm_prices)
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
                best = (np.inf, e.copy(), lam, mu, _diagnostics(data, e, lam, mu))
            if best[0] <= tol or not finite or iterations >= max_iter or target < 1e-6 * tol:
                break
            target *= 0.01
            continue
        if inner > 0 and not ir_met:  # while IR is unmet, the multipliers may need an update
            shortfall = problem.endowment_utility - point.utility
            ir_residual = np.where(point.multipliers > 0, np.abs(shortfall), np.maximum(shortfall, 0.0))  # [N]
            scale = np.maximum(np.maximum(problem.endowment_utility, point.utility), np.finfo(np.float64).tiny)
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


def _diagnostics(data: _MarketData, x, lam, mu, utility=None, marginal=None) -> dict:
    """Conservation error, IR violation, KKT residual and objective of allocation x [R, N]
    (``utility``: u(x) [N] when known; ``marginal``: (1 + mu_i) w_ir / lambda_r [R, N] when known
    and every good is priced).

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
    one_plus_x = 1.0 + x
    # |min(x, 1 + x - marginal)| / (1 + x), the same as the relative form above
    stationarity_terms = np.minimum(x, one_plus_x - marginal)
    stationarity_terms = np.abs(stationarity_terms, out=stationarity_terms) / one_plus_x
    if not all_priced:
        stationarity_terms = np.where(priced[:, None], stationarity_terms, 0.0)
    stationarity = float(np.maximum.reduce(stationarity_terms, axis=None, initial=0.0))
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
