"""Market clearing: the trade stage of a step (docs/design.md section 4).

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
- Outer loop: once the inner problem is stationary to 0.3 times the relative IR residual
  (residual / max(u_i(e_i), u_i(x_i), the IR slack the final repair leaves alone), the
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
  function, in closed form: the least root of its lines, for all agents at once). With mu = 0 this
  is the water-filling (no-IR) optimum.
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
- Corners: an agent whose endowment utility is tiny (residue holdings ~1e-33) can be IR-binding
  while its demand rounds to 0 for every good; its Hessian term is then 0. The first pass keeps
  the solver's original arithmetic, where that term was nan and only gradient steps were left
  (results that converged so stay bit for bit); if it met such a corner and did not certify, a
  second pass from its last prices uses the corner-safe Hessian and converges in a few steps.
  ``max_iter`` bounds both passes together; the default cap allows 100 updates for the first pass
  and 100 more for the second.

``method="penalty"`` is the seed's method, kept for comparison: 100 fixed-size projected gradient
steps on welfare minus a quadratic penalty on IR violations. Its IR violation is reported as is.

Every pgd and newton allocation is returned exactly conserving (each good rescaled to its supply;
a relative fix is exact for small holders next to large ones, where the Euclidean projection's
uniform shift is not) and individually rational (blended towards the endowment where an iteration
cap or rounding left a violation above min(1e-3 tol, 1e-10), for newton and pgd's dual start
min(0.1 tol, 1e-10)); ``converged`` says whether its KKT residual is <= ``tol``.

``groups=`` [N] (the regions of docs/design.md section 13): the same problem separately within each
group, conservation per group and good, prices per group [G, R]; all groups in one batched Newton
solve over the G x R prices (``grouped.py``, its docstring), with pgd's polish for a group left
uncertified.

Conventions: a good nobody holds (s_r = 0) and a good nobody values (all w_ir = 0) are not traded
and have price 0 (their conservation multiplier is not unique); the first stays at 0 for everyone,
the second stays with its owners. An agent with all-zero weights is indifferent, so IR holds for
it whatever it gets and the optimum passes its goods to others. Prices are normalised to sum 1, or
are all 0 when no good is traded. Arithmetic is float64 NumPy (few, cheap calls at small N);
inputs may be torch tensors or arrays, outputs are float64 torch tensors on the input's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from homoecon_env.core.threads import BlockPool

from .grouped import check_groups, solve_groups
from .market import _as_array, _as_matrix, _as_tensor, _diagnostics, _market_data, _utility, project_onto_conservation
from .newton import _solve_prices
from .penalty import PENALTY_STEPS, _solve_penalty
from .pgd import PGD_MAX_ITER, _solve_pgd

__all__ = ["METHODS", "INITS", "TradeResult", "clear_market", "project_onto_conservation"]

METHODS = ("pgd", "newton", "penalty")
INITS = ("dual", "endowment")


@dataclass(frozen=True)
class TradeResult:
    """Outcome of one market clearing.

    allocation [N, R]: holdings after trade. prices [R]: conservation multipliers normalised to
    sum 1 (0 for an untraded good); with ``groups``, [G, R], a row per group (NaN: no prices).
    iterations: projected-gradient iterations (pgd), price updates (newton) or gradient steps
    (penalty). converged: kkt_residual <= tol. conservation_error:
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
    prices: torch.Tensor  # [R], or [G, R] with groups
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
                 init: str = "dual", accelerate: bool = True, init_max_iter: Optional[int] = None,
                 groups=None, num_groups: Optional[int] = None, pool=None) -> TradeResult:
    """Reallocate ``holdings`` [N, R] to maximise summed utility, conserving goods, keeping IR.

    ``weights`` [N, R] are the utility weights w (nonnegative; a row may be all zero).
    ``method``: "pgd" (default), "newton" or "penalty" (module docstring). ``tol`` bounds the
    KKT residual (pgd, newton). ``max_iter`` caps the projected-gradient iterations (pgd, default
    20,000) or the price updates (newton, default 100, plus 100 for a corner pass: module
    docstring), or sets the number of steps (penalty, default 100). ``warm_start``, a previous
    result with N agents, seeds the IR multipliers (and, for pgd with ``init="endowment"``, the
    allocation, rescaled to the current supply). pgd only: ``init`` is "dual" (start from the
    Newton dual solution) or "endowment" (start from the holdings: projected gradient alone);
    ``init_max_iter`` caps the Newton price updates of the dual start (default as newton's);
    ``accelerate=False`` drops FISTA's momentum (plain projected gradient, for comparison).
    ``groups`` [N] (integer, in [0, num_groups); ``num_groups`` defaults to groups.max() + 1): solve
    the problem separately within each group, all groups in one batched solve (``grouped.py``;
    methods "pgd" with ``init="dual"`` and "newton"): goods are conserved per group and good, and
    ``prices`` is [num_groups, R], each row normalised to sum 1, NaN for a group with no agents or
    nothing traded; ``price_scale`` is 0 and the figures are over all groups (``iterations`` and
    ``init_iterations`` the most of any group, ``converged`` every group's). A ``warm_start`` with
    N agents seeds the IR multipliers (its prices are not used). Without ``groups``, everything is
    as it was.
    ``pool``: a `homoecon_env.core.threads.BlockPool` whose threads run the per-agent passes of the
    Newton solve (the dual start of pgd, and newton) at large N, the same bits as one thread; None
    (the default): the calling thread only. The economy passes its own. Not used with ``groups``.
    Bad input raises ``ValueError`` naming the argument.
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
    if pool is not None and not isinstance(pool, BlockPool):
        raise ValueError(f"pool: expected a homoecon_env.core.threads.BlockPool or None, got {type(pool).__name__}")
    if groups is not None:
        return _clear_grouped(e, w, device, groups, num_groups, method, tol, max_iter, warm_start, init,
                              init_max_iter)
    if num_groups is not None:
        raise ValueError(f"num_groups: {num_groups!r} given without groups")

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
                warm_prices, accelerate, pool)
        elif method == "newton":
            x, lam, mu, iterations, diagnostics = _solve_prices(market, tol, max_iter, warm_multipliers, warm_prices,
                                                                pool)
        else:
            x, lam, mu, iterations = _solve_penalty(e, w, max_iter or PENALTY_STEPS)
            diagnostics = _diagnostics(market, x, lam, mu)
        # One sum is finite exactly when every term is (short of overflow, where no trade is also safe).
        if not math.isfinite(float(np.add.reduce(x, axis=None)) + sum(lam.tolist())
                             + float(np.add.reduce(mu, axis=None))):
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


def _clear_grouped(e, w, device, groups, num_groups, method, tol, max_iter, warm_start, init, init_max_iter):
    """clear_market with ``groups``, on checked [R, N] arrays (module ``grouped``)."""
    num_goods, num_agents = e.shape
    groups, num_groups = check_groups(groups, num_agents, num_groups)
    if method == "penalty" or (method == "pgd" and init != "dual"):
        raise ValueError(f"method: {method!r} with init={init!r} does not support groups; "
                         "use method='pgd' (init='dual') or method='newton'")
    warm_multipliers = None
    if warm_start is not None and warm_start.multipliers.shape[0] == num_agents:
        warm_multipliers = _as_array(warm_start.multipliers)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        solution = solve_groups(e, w, groups, num_groups, method, tol, max_iter, init_max_iter, warm_multipliers)
        x, mu = solution.allocation, solution.multipliers
        supply = np.zeros((num_groups, num_goods))
        held = np.zeros((num_groups, num_goods))
        for good in range(num_goods):  # per (group, good) sums: R bincounts
            supply[:, good] = np.bincount(groups, weights=e[good], minlength=num_groups)
            held[:, good] = np.bincount(groups, weights=x[good], minlength=num_groups)
        conservation_error = float(np.max(np.abs(held - supply) / np.maximum(1.0, supply), initial=0.0))
        utility = _utility(w, x)
        ir_violation = float(max(0.0, -np.min(utility - _utility(w, e), initial=0.0)))
        kkt_residual = float(np.max(solution.kkt_residuals, initial=0.0))
        lam = solution.prices
        total = lam.sum(axis=1, keepdims=True)
        prices = np.where(solution.priced[:, None], lam / np.where(total > 0, total, 1.0), np.nan)
    return TradeResult(
        allocation=_as_tensor(x.T, device),
        prices=_as_tensor(prices, device),
        iterations=int(solution.iterations),
        converged=bool(kkt_residual <= tol),
        conservation_error=conservation_error,
        ir_violation=ir_violation,
        kkt_residual=kkt_residual,
        objective=float(np.add.reduce(utility)),
        multipliers=_as_tensor(mu, device),
        method=method,
        init_iterations=int(solution.init_iterations),
        outer_iterations=int(solution.outer_iterations),
        price_scale=0.0,
    )
