"""newton: Newton's method on the dual over the traded goods' prices, with each agent's IR
multiplier exact for the prices (also pgd's ``init="dual"`` start; the package docstring)."""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import numpy as np

from homoecon_env.core.threads import run_blocks

from .market import (
    BLOCK,
    EPS,
    IR_ALLOWANCE,
    _blocks,
    _diagnostics,
    _finish,
    _MarketData,
    _sum_over_agents,
    _sum_over_goods,
    _water_fill,
)

DEFAULT_MAX_ITER = 100  # newton price updates when max_iter is None (and pgd's init_max_iter)
CORNER_MAX_ITER = 100  # extra updates of the corner-safe second pass when the cap is left at its default
LINE_SEARCH_STEPS = 80  # evaluations per line search, at most
LINE_SEARCH_SLOPE = 0.5  # a line search stops where |slope| <= this times the start's
MAX_PRICE_GROWTH = 3.0  # a line search's first trial raises no price more than (1 + this) fold
MAX_ENUMERATED_GOODS = 3  # IR multipliers by enumerating the 2^R - 1 sets of goods up to this R,
ENUMERATION_BUDGET = 1 << 12  # or while N 2^R is at most this; by sorting the goods otherwise
MAX_LOG_MULTIPLIER = 200.0  # log(1 + mu) is capped so that (1 + mu) w / lambda stays finite
_SUBNORMAL = np.finfo(np.float64).smallest_subnormal
_TINY = np.finfo(np.float64).tiny  # the least normal float64: 1 / _TINY is finite


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
    weight_floor: float = _SUBNORMAL  # W_i's floor in _newton_direction (_TINY: the corner-safe Hessian)
    corners: Optional[list] = None  # one entry per nan Newton step (a corner with the subnormal floor)
    pool: object = None  # a core.threads.BlockPool running the per-agent passes (None: this thread)


def _economy(weights: np.ndarray, supply: np.ndarray, endowment_utility: np.ndarray, pool=None) -> _Economy:
    log_weights = np.log(np.where(weights > 0, weights, 1.0))
    num_goods, num_agents = weights.shape
    target = np.where(endowment_utility > 0, endowment_utility, -np.inf)
    scratch = np.ones((num_goods + 1, num_agents))
    if not (num_goods <= MAX_ENUMERATED_GOODS or num_agents << num_goods <= ENUMERATION_BUDGET):
        return _Economy(weights, supply, supply.tolist(), None, None, target, log_weights, weights * log_weights,
                        scratch, corners=[], pool=pool)
    subsets = _subsets(num_goods)  # [K, R]
    num_sets = subsets.shape[0]
    # einsum, not BLAS: a multithreaded BLAS can stall for milliseconds next to torch's threads
    subset_weight = np.einsum("kr,rn->kn", subsets, weights)  # [K, N]
    valued_set = subset_weight > 0
    inverse = np.divide(1.0, subset_weight, out=np.zeros(subset_weight.shape), where=valued_set)
    slopes = np.zeros((num_goods, num_sets + 1, num_agents))  # the last line, the cap, is flat
    offset = np.full((num_sets + 1, num_agents), MAX_LOG_MULTIPLIER)
    membership = subsets.T[:, :, None]  # [R, K, 1]

    def fill(blocks):  # elementwise: blocks that stay in cache, the same values
        for block in blocks:
            block_inverse, block_target = inverse[:, block], target[block]
            np.multiply(membership, weights[:, None, block] * block_inverse, out=slopes[:, :num_sets, block])
            # (u(e) - sum_S w log w) / sum_S w; a set nobody values: +inf, or -inf (with every set) where u(e) = 0
            spent = block_target * block_inverse  # minus sum_S w log w / sum_S w, summed good by good
            for good in range(num_goods):
                spent -= slopes[good, :num_sets, block] * log_weights[good, block]
            offset[:num_sets, block] = np.where(valued_set[:, block], spent, block_target * np.inf)

    run_blocks(pool, fill, _blocks(num_agents))
    line_slopes = tuple(slopes)
    return _Economy(weights, supply, supply.tolist(), offset, line_slopes, target, None, None, scratch, corners=[],
                    pool=pool)


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
    weights = economy.weights
    num_goods, num_agents = weights.shape
    enumerated = economy.line_offset is not None  # z is the least of the lines, the cap among them
    if enumerated and num_agents <= BLOCK:  # one block: whole arrays, the fewest calls
        z = economy.line_offset
        for slopes, log_price in zip(economy.line_slopes, np.log(prices).tolist()):
            z = z + slopes * log_price
        z = np.minimum.reduce(z, axis=0)
        z = np.maximum(z, 0.0, out=z)
        ratio = np.multiply.outer(1.0 / prices, np.exp(z))
        ratio *= weights
        allocation = ratio - 1.0
        np.maximum(allocation, 0.0, out=allocation)
        demand = _sum_over_agents(allocation)
        return _Market(prices, z, ratio, allocation, demand, demand - economy.supply)
    if enumerated:
        log_prices = np.log(prices).tolist()
        z = np.empty(num_agents)
    else:
        log_prices = np.log(prices)
        a = economy.log_weights - log_prices[:, None]
        order = np.argsort(np.where(economy.weights > 0, -a, np.inf), axis=0)  # best-valued goods first
        line_weight = np.take_along_axis(economy.weights, order, axis=0).cumsum(axis=0)
        line_value = np.take_along_axis(economy.weighted_log_weights - economy.weights * log_prices[:, None], order,
                                        axis=0).cumsum(axis=0)
        z = np.minimum(np.minimum.reduce((economy.target - line_value) / line_weight, axis=0), MAX_LOG_MULTIPLIER)
    ratio, allocation = np.empty((num_goods, num_agents)), np.empty((num_goods, num_agents))
    inverse_prices = 1.0 / prices

    def respond(blocks):  # elementwise per agent: blocks that stay in cache, the same values
        for block in blocks:
            if enumerated:
                lines = economy.line_offset[:, block]
                for slopes, log_price in zip(economy.line_slopes, log_prices):
                    lines = lines + slopes[:, block] * log_price
                np.minimum.reduce(lines, axis=0, out=z[block])
            block_z = np.maximum(z[block], 0.0, out=z[block])
            block_ratio = np.multiply.outer(inverse_prices, np.exp(block_z), out=ratio[:, block])
            block_ratio *= weights[:, block]
            block_allocation = np.subtract(block_ratio, 1.0, out=allocation[:, block])
            np.maximum(block_allocation, 0.0, out=block_allocation)

    run_blocks(economy.pool, respond, _blocks(num_agents))
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
    scaled = economy.scratch  # [R + 1, N]: the coupling's w_iq / W_i, and a row of ones for the diagonal
    # 1 / W_i for IR-binding agents, 0 for slack ones (whose W_i may be 0). An IR-binding agent may
    # have W_i = 0 too: one whose endowment utility is tiny (holdings ~1e-30) and whose demand rounds
    # to 0 at every good (it sits at a corner; its demand is flat in the prices, so it adds nothing
    # to the Hessian). With the floor _TINY, 1 / W_i is finite and its coupling row 0 * finite = 0;
    # with the least subnormal (the first pass, see _solve_prices), 1 / W_i overflows to inf and
    # 0 * inf = nan makes the Newton step nan, so only the diagonal fallback is left.
    if num_agents <= BLOCK:  # one block: whole arrays, the fewest calls
        active = market.allocation > 0
        one_plus_x = np.where(active, market.marginal_ratio, 0.0)  # [R, N], 0 where x = 0
        active_weights = np.where(active, economy.weights, 0.0)
        binding = (market.log_multipliers > 0) / np.maximum(_sum_over_goods(active_weights), economy.weight_floor)
        np.multiply(active_weights, binding, out=scaled[:num_goods])
    else:
        one_plus_x = np.empty_like(market.allocation)

        def couple(blocks):  # elementwise per agent, cache-sized blocks
            for block in blocks:
                active = market.allocation[:, block] > 0
                one_plus_x[:, block] = np.where(active, market.marginal_ratio[:, block], 0.0)
                active_weights = np.where(active, economy.weights[:, block], 0.0)
                binding = (market.log_multipliers[block] > 0) / np.maximum(_sum_over_goods(active_weights),
                                                                            economy.weight_floor)
                np.multiply(active_weights, binding, out=scaled[:num_goods, block])

        run_blocks(economy.pool, couple, _blocks(num_agents))
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
    if economy.corners is not None and any([p != p for p in newton]):  # nan: noted for _solve_prices
        economy.corners.append(len(economy.corners))
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


def _solve_prices(data: _MarketData, tol, max_iter, warm_multipliers, warm_prices=None, pool=None):
    """Newton steps on traded goods' prices until the returned allocation's KKT residual <= tol.

    The first prices are ``warm_prices`` (the previous call's) where they price every traded good,
    otherwise the water-filling prices for the warm-start multipliers. Then up to two passes of
    Newton (_newton_passes). The first is the solver as it was before the corner fix, its W_i
    floor the least subnormal: where an IR-binding agent demands nothing at all (its endowment
    utility is tiny, holdings ~1e-30, and its demand rounds to 0 at every good), the Hessian is
    nan and every step falls back to the diagonally scaled gradient, which often still converges,
    slowly (kept so that those results, and the economy's trajectories through them, stay bit for
    bit what they were), but may crawl to ``max_iter``. Only when such a nan step was met and the
    first pass did not certify its result does a second pass, from the first pass's last prices,
    use the corner-safe Hessian (floor _TINY: the corner agent adds 0, as its demand is flat in
    the prices), which converges in a few Newton steps; the result with the lower KKT residual is
    returned. ``max_iter`` bounds the price updates of both passes together; None (the default
    cap) gives the first pass DEFAULT_MAX_ITER and the second CORNER_MAX_ITER more, since the
    first often spends all of its own. ``pool``: a `core.threads.BlockPool` for the per-agent passes.
    """
    e, traded = data.endowment, data.traded
    num_goods, num_agents = e.shape
    if not traded.any():
        lam = np.zeros(num_goods)
        x, utility = _finish(np.zeros_like(e), data, 0.0)
        return x, lam, np.zeros(num_agents), 0, _diagnostics(data, x, lam, np.zeros(num_agents), utility)
    all_traded = min(traded.tolist())
    weights = data.weights if all_traded else data.weights[traded]
    economy = _economy(weights, data.supply if all_traded else data.supply[traded], data.endowment_utility, pool)
    start = warm_prices if warm_prices is None or all_traded else warm_prices[traded]
    if start is None or not all(0.0 < price < np.inf for price in start.tolist()):
        initial = np.zeros(num_agents) if warm_multipliers is None else np.nan_to_num(warm_multipliers)
        start = _water_fill((1.0 + initial.clip(0.0, np.expm1(MAX_LOG_MULTIPLIER))) * weights, economy.supply,
                            pool=pool)
    if max_iter is None:
        first_cap, total_cap = DEFAULT_MAX_ITER, DEFAULT_MAX_ITER + CORNER_MAX_ITER
    else:
        first_cap = total_cap = max_iter
    first, prices, corner = _newton_passes(data, economy, start, tol, first_cap, all_traded)
    budget = total_cap - first[3]
    if not corner or first[4]["kkt_residual"] <= tol or budget < 1:
        return first
    second, _, _ = _newton_passes(data, economy._replace(weight_floor=_TINY), prices, tol, budget, all_traded)
    better = second if second[4]["kkt_residual"] <= first[4]["kkt_residual"] else first
    return (*better[:3], first[3] + second[3], better[4])


def _newton_passes(data: _MarketData, economy: _Economy, start, tol, max_iter, all_traded):
    """One pass of _solve_prices from prices ``start``: ((x, lam, mu, iterations, diagnostics),
    the last prices, whether a Newton step of this first-pass (subnormal-floor) economy was nan:
    an IR-binding agent without goods, a corner; noted by _newton_direction, at no cost to the usual
    path).

    Newton stops on the clearing error (excess demand, the dual gradient, in KKT units), once below
    max(1e-3 tol, half the IR allowance min(0.1 tol, IR_ALLOWANCE)); the candidate is then made
    exactly conserving and IR (violations up to the allowance left alone) and its full KKT residual
    measured. If the repair cost more than ``tol``, the target is tightened (x 0.01) and Newton
    resumes. A Newton step that cannot lower Phi is replaced by a diagonally scaled one; it stops
    early when the error reaches rounding level, or has not halved in 20 steps.
    """
    e, traded = data.endowment, data.traded
    num_goods = e.shape[0]
    lam = np.zeros(num_goods)
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
        diagnostics = _diagnostics(data, x, lam, mu, utility, marginal, economy.pool)
        if diagnostics["kkt_residual"] <= tol or iterations >= max_iter or stalled or error <= rounding:
            corner = economy.weight_floor == _SUBNORMAL and bool(economy.corners)
            return (x, lam, mu, iterations, diagnostics), market.prices, corner
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
    return error, 8 * EPS * max(share * (held + count)
                                for share, held, count in zip(shares, market.demand.tolist(), holders))
