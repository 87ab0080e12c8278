"""Market clearing: the trade stage of a step (DESIGN.md section 4).

The market reallocates every agent's holdings e [N, R] to x [N, R] by solving

    max_x  sum_i u_i(x_i),   u_i(x) = sum_r w_ir * log(1 + x_r)
    s.t.   sum_i x_ir = s_r := sum_i e_ir    for every good r   (conservation, multiplier lambda_r)
           x >= 0
           u_i(x_i) >= u_i(e_i)             for every agent i  (individual rationality, multiplier mu_i)

The conservation multipliers are the market prices. Two methods are offered:

``method="pgd"`` (default) is a projected multiplier method. For fixed IR multipliers mu the
Lagrangian is maximised over the conservation set exactly: per good it is water-filling,
x_ir = max(0, (1 + mu_i) w_ir / lambda_r - 1) with lambda_r the unique level at which the good
clears (the closed-form fixed point of projected gradient ascent on that set). For fixed prices
each agent's multiplier is projected onto mu_i >= 0 at the exact value that restores its endowment
utility (a piecewise-linear 1-D root, solved in closed form for all agents at once). Alternating
the two is a fixed-point iteration on z = log(1 + mu); it is accelerated by Anderson mixing with a
restart whenever the KKT residual grows, and stops when the KKT residual falls below ``tol``. The
result is always made exactly conserving (Euclidean projection onto the conservation set) and
individually rational (blended towards the endowment where needed), and ``converged`` says
honestly whether the tolerance was reached.

``method="penalty"`` is the seed's method, kept for comparison: 100 fixed-size projected gradient
steps on the objective minus a quadratic penalty on IR violations. It reports its IR violation
without repairing it.

Conventions: a good nobody holds (s_r = 0) and a good nobody values (all w_ir = 0) have price 0
(their conservation multiplier is not unique); the first stays at 0 for everyone, the second stays
with its owners. An agent with all-zero weights is indifferent: IR holds for it whatever it gets,
so the optimum gives its valued goods to others. Prices are normalised to sum 1, or are all 0 when
no good is priced. Arithmetic is float64 NumPy (few, cheap calls at small N); inputs may be torch
tensors or arrays, outputs are float64 torch tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

METHODS = ("pgd", "penalty")
PENALTY_STEP_SIZE = 0.1  # the seed's fixed gradient step
PENALTY_WEIGHT = 10.0  # the seed's quadratic IR-penalty coefficient
PENALTY_STEPS = 100  # the seed's number of steps
DEFAULT_MAX_ROUNDS = 200  # pgd rounds when max_iter is None
ANDERSON_MEMORY = 5  # past iterates mixed by the accelerator
MAX_LOG_MULTIPLIER = 700.0  # z = log(1 + mu) is capped here so exp(z) stays finite


@dataclass(frozen=True)
class TradeResult:
    """Outcome of one market clearing.

    allocation [N, R] float64: holdings after trade. prices [R] float64: conservation multipliers,
    normalised to sum 1 (0 for a good nobody holds or values). iterations: rounds (pgd) or gradient
    steps (penalty). converged: the KKT residual reached ``tol``. conservation_error:
    max_r |sum_i x_ir - s_r| / max(1, s_r). ir_violation: max_i max(0, u_i(e_i) - u_i(x_i)).
    kkt_residual: max of the stationarity, complementarity, IR and conservation residuals.
    objective: sum_i u_i(x_i). multipliers [N] float64: IR multipliers mu (a warm start for the next
    call). method: the method that produced it.
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
    """Clear the market: reallocate ``holdings`` [N, R] to maximise utilitarian welfare.

    ``weights`` [N, R] are the utility weights w (nonnegative; a row may be all zero). ``max_iter``
    caps the rounds (pgd, default 200) or sets the number of steps (penalty, default 100).
    ``warm_start`` is a previous result: its IR multipliers seed the iteration when it has the same
    number of agents. Bad input raises ``ValueError`` naming the argument.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; expected one of {METHODS}")
    endowment, device = _as_matrix("holdings", holdings)
    utility_weights, _ = _as_matrix("weights", weights)
    if endowment.shape != utility_weights.shape:
        raise ValueError(f"weights: shape {utility_weights.shape} differs from holdings shape {endowment.shape}")
    if not (tol > 0 and np.isfinite(tol)):
        raise ValueError(f"tol: {tol!r}; expected a finite number > 0")
    if max_iter is not None and (int(max_iter) != max_iter or max_iter < 1):
        raise ValueError(f"max_iter: {max_iter!r}; expected an integer >= 1")
    if warm_start is not None and not isinstance(warm_start, TradeResult):
        raise ValueError(f"warm_start: expected a TradeResult or None, got {type(warm_start).__name__}")

    if endowment.shape[0] == 0:  # no agents: nothing to trade
        endowment = np.zeros((1, endowment.shape[1]))
        empty = clear_market(endowment, endowment, method=method)
        return TradeResult(empty.allocation[:0], empty.prices, 0, True, 0.0, 0.0, 0.0, 0.0,
                           empty.multipliers[:0], method)
    # Goods-major layout [R, N]: reductions over agents run along contiguous memory.
    e = np.ascontiguousarray(endowment.T)
    w = np.ascontiguousarray(utility_weights.T)
    if method == "pgd":
        mu0 = None
        if warm_start is not None and warm_start.multipliers.shape[0] == e.shape[1]:
            mu0 = warm_start.multipliers.detach().cpu().numpy().astype(np.float64)
        x, lam, mu, iterations, diagnostics = _solve_multipliers(
            e, w, tol, DEFAULT_MAX_ROUNDS if max_iter is None else int(max_iter), mu0)
    else:
        x, lam, mu, iterations = _solve_penalty(e, w, PENALTY_STEPS if max_iter is None else int(max_iter))
        diagnostics = _diagnostics(e, w, x, lam, mu)
    as_tensor = lambda array: torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float64, device=device)
    prices = lam / lam.sum() if lam.sum() > 0 else np.zeros_like(lam)
    return TradeResult(
        allocation=as_tensor(x.T),
        prices=as_tensor(prices),
        iterations=int(iterations),
        converged=bool(diagnostics["kkt_residual"] <= tol),
        multipliers=as_tensor(mu),
        method=method,
        **diagnostics,
    )


# ----------------------------------------------------------------------------------------------
# Building blocks (goods-major: every [R, N] array has one row per good)


def project_onto_conservation(points: np.ndarray, supply: np.ndarray) -> np.ndarray:
    """Exact Euclidean projection of ``points`` [R, N] onto {x >= 0, sum_i x_ri = supply_r}.

    Per good, the projection onto a scaled simplex: x = max(0, y - theta_r) with theta_r found by
    sorting (O(N log N)), batched over goods. ``supply`` [R] must be >= 0; 0 gives x = 0.
    """
    num_goods, num_agents = points.shape
    descending = -np.sort(-points, axis=1)  # [R, N]
    thresholds = (np.cumsum(descending, axis=1) - supply[:, None]) / np.arange(1, num_agents + 1)
    active = descending - thresholds > 0  # [R, N]: a prefix of the sorted order
    count = np.maximum(active.sum(axis=1), 1)  # at least the top element (covers supply 0)
    theta = thresholds[np.arange(num_goods), count - 1]
    return np.maximum(points - theta[:, None], 0.0)


def _water_fill(coefficients: np.ndarray, supply: np.ndarray, traded: np.ndarray,
                inverse_price: Optional[np.ndarray] = None, max_steps: int = 100):
    """Per good r, the level eta_r = 1/lambda_r with sum_i max(0, c_ri * eta_r - 1) = supply_r.

    coefficients [R, N] >= 0 (c = (1 + mu_i) w_ir), supply [R], traded [R] bool (goods with
    supply > 0 and some positive coefficient). The left side is convex, increasing and piecewise
    linear in eta, so Newton's method from the right of the root is monotone and exact once the
    active set stops changing: usually 1 to 3 steps when warm-started with ``inverse_price``.
    Returns (x [R, N], eta [R]); untraded goods get x = 0 and eta = 0 (the caller fills them).
    """
    c = np.where(traded[:, None], coefficients, 0.0)
    if inverse_price is None:  # everyone active: this level is at or right of the root
        inverse_price = (supply + (c > 0).sum(axis=1)) / np.where(traded, c.sum(axis=1), 1.0)
    eta = np.where(traded, inverse_price, 0.0)
    for _ in range(max_steps):
        active = c * eta[:, None] > 1.0
        count = active.sum(axis=1)
        mass = np.where(active, c, 0.0).sum(axis=1)
        stalled = traded & (count == 0)  # a warm start left of every breakpoint: jump right
        if stalled.any():
            eta = np.where(stalled, (supply + 1.0) / np.max(c, axis=1).clip(min=1e-300), eta)
            continue
        new_eta = np.where(traded, (supply + count) / np.where(count > 0, mass, 1.0), 0.0)
        if np.array_equal(new_eta, eta):
            break
        eta = new_eta
    return np.maximum(c * eta[:, None] - 1.0, 0.0), eta


def _restoring_log_multipliers(log_weights, weights, weighted_log_weights_mask, log_eta, endowment_utility):
    """Per agent, the least z = log(1 + mu_i) >= 0 whose demand at prices 1/eta gives u_i = u_i(e_i).

    The demand of agent i at multiplier mu is x_ir = max(0, e^z w_ir eta_r - 1), so
    u_i = sum_r w_ir max(0, z + a_ir) with a_ir = log(w_ir eta_r): convex, piecewise linear and
    increasing in z. It equals the maximum over "prefix" sets {r : a_ir >= a_ik} of
    W_ik z + A_ik, so the root is min_k (U_i - A_ik) / W_ik. All arrays [R, N]; returns z [N].
    """
    a = log_weights + log_eta[:, None]  # [R, N], -inf where w = 0 or the good is untraded
    prefix = a[None, :, :] >= a[:, None, :]  # [k, j, N]: good j is active when k is the marginal good
    weight_sum = np.where(prefix, weights[None], 0.0).sum(axis=1)  # [k, N]
    weighted_logs = weights * np.where(weighted_log_weights_mask, a, 0.0)  # [R, N]; 0 where a = -inf
    intercept = np.where(prefix, weighted_logs[None], 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        candidates = np.where(weighted_log_weights_mask, (endowment_utility - intercept) / weight_sum, np.inf)
    z = candidates.min(axis=0)
    return np.where(endowment_utility > 0, np.clip(z, 0.0, MAX_LOG_MULTIPLIER), 0.0)


def _utility(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """u_i = sum_r w_ir log(1 + x_ir) for [R, N] arrays; returns [N]."""
    return (weights * np.log1p(x)).sum(axis=0)


# ----------------------------------------------------------------------------------------------
# Solvers: each returns (x [R, N], lambda [R], mu [N], iterations)


def _solve_multipliers(e, w, tol, max_iter, mu0):
    """Rounds of water-filling and multiplier restoration until the *returned* allocation meets tol.

    The rounds stop on the complementarity residual |min(mu_i, gap_i)|; the candidate is then made
    exactly conserving and IR and its full KKT residual measured. If the repair cost more than
    ``tol``, the round target is tightened (x 0.01, down to rounding level) and the rounds resume.
    """
    supply = e.sum(axis=1)  # [R]
    traded = (supply > 0) & (w > 0).any(axis=1)  # [R]
    endowment_utility = _utility(w, e)
    z = np.zeros(e.shape[1]) if mu0 is None else np.log1p(np.clip(np.nan_to_num(mu0), 0.0, None))
    rounds = _multiplier_rounds(e, w, supply, traded, endowment_utility, np.minimum(z, MAX_LOG_MULTIPLIER))
    floor = 1e-15 * (1.0 + np.max(np.abs(endowment_utility), initial=0.0))  # rounding level of a gap
    target = tol
    for iterations, (x, eta, mu, residual) in enumerate(rounds, start=1):
        if residual > target and iterations < max_iter:
            continue
        x = _finish(x, e, w, traded, supply, endowment_utility)
        lam = np.where(eta > 0, 1.0 / np.where(eta > 0, eta, 1.0), 0.0)
        diagnostics = _diagnostics(e, w, x, lam, mu)
        if diagnostics["kkt_residual"] <= tol or iterations >= max_iter or target <= floor:
            return x, lam, mu, iterations, diagnostics
        target = max(0.01 * target, floor)
    raise AssertionError("unreachable: the rounds never end on their own")


def _multiplier_rounds(e, w, supply, traded, endowment_utility, z):
    """Yield (x [R, N], eta [R], mu [N], residual) per round; the next round's z is Anderson-mixed."""
    active_weights = (w > 0) & traded[:, None]  # [R, N]
    with np.errstate(divide="ignore"):
        log_weights = np.where(active_weights, np.log(np.where(active_weights, w, 1.0)), -np.inf)
    eta = None
    history_z, history_f = [], []
    previous_residual = np.inf
    while True:
        x, eta = _water_fill(np.exp(z)[None, :] * w, supply, traded, eta)
        mu = np.expm1(z)  # the multipliers that x goes with
        gap = _utility(w, x) - endowment_utility
        residual = float(np.max(np.abs(np.minimum(mu, gap)), initial=0.0))
        yield x, eta, mu, residual
        with np.errstate(divide="ignore"):
            log_eta = np.log(eta)
        restoring = _restoring_log_multipliers(log_weights, w, active_weights, log_eta, endowment_utility)
        if residual > previous_residual:  # restart the accelerator when it stops helping
            history_z, history_f = [], []
        previous_residual = residual
        history_z.append(z)
        history_f.append(restoring - z)
        if len(history_z) > ANDERSON_MEMORY + 1:
            history_z.pop(0)
            history_f.pop(0)
        z = np.clip(_anderson(history_z, history_f, restoring), 0.0, MAX_LOG_MULTIPLIER)


def _anderson(history_z, history_f, plain):
    """Anderson-mixed next iterate from past iterates z_k and fixed-point steps f_k = g(z_k) - z_k."""
    if len(history_z) < 2:
        return plain
    delta_f = np.diff(np.stack(history_f), axis=0)  # [m, N]
    delta_z = np.diff(np.stack(history_z), axis=0)
    gram = delta_f @ delta_f.T
    ridge = 1e-12 * np.trace(gram) + 1e-300
    try:
        gamma = np.linalg.solve(gram + ridge * np.eye(len(gram)), delta_f @ history_f[-1])
    except np.linalg.LinAlgError:
        return plain
    mixed = plain - gamma @ (delta_z + delta_f)
    return mixed if np.all(np.isfinite(mixed)) else plain


def _finish(x, e, w, traded, supply, endowment_utility):
    """The returned allocation: untraded goods stay with their owners (0 if nobody holds them),
    each good is projected exactly onto its conservation set, then IR is restored by blending."""
    x = np.where(traded[:, None], x, np.where((supply > 0)[:, None], e, 0.0))
    return _make_individually_rational(project_onto_conservation(x, supply), e, w, endowment_utility)


def _solve_penalty(e, w, steps):
    """The seed's method: fixed-step projected gradient ascent on welfare minus a quadratic IR penalty."""
    supply = e.sum(axis=1)
    endowment_utility = _utility(w, e)
    x = e.copy()
    for _ in range(steps):
        shortfall = np.maximum(endowment_utility - _utility(w, x), 0.0)  # [N]
        gradient = w / (1.0 + x) * (1.0 + PENALTY_WEIGHT * shortfall)[None, :]
        x = project_onto_conservation(x + PENALTY_STEP_SIZE * gradient, supply)
    mu = PENALTY_WEIGHT * np.maximum(endowment_utility - _utility(w, x), 0.0)
    # A price estimate: the holding-weighted mean marginal value of each good.
    marginal = (1.0 + mu)[None, :] * w / (1.0 + x)
    held = x.sum(axis=1)
    lam = np.where(held > 0, (marginal * x).sum(axis=1) / np.where(held > 0, held, 1.0), 0.0)
    return x, lam, mu, steps


# ----------------------------------------------------------------------------------------------
# Repair, diagnostics and packaging


def _make_individually_rational(x, e, w, endowment_utility):
    """Blend x towards e, x <- e + t (x - e), with the largest t in [0, 1] keeping every agent IR.

    Each agent's utility along the segment is concave with value u_i(e_i) at t = 0, so the agents
    that are IR at t = 1 stay IR for every t, and each violator is IR on [0, t_i]; t = min t_i is
    found by bisection over the violators at once. A convex combination keeps conservation and
    non-negativity. Tiny (rounding-level) violations are left alone.
    """
    gap = _utility(w, x) - endowment_utility
    slack = 64 * np.finfo(np.float64).eps * (1.0 + np.abs(endowment_utility))
    violators = gap < -slack
    if not violators.any():
        return x
    xv, ev, wv, uv = x[:, violators], e[:, violators], w[:, violators], endowment_utility[violators]
    low = np.zeros(violators.sum())
    high = np.ones_like(low)
    for _ in range(60):
        mid = 0.5 * (low + high)
        ok = _utility(wv, (1.0 - mid) * ev + mid * xv) >= uv
        low = np.where(ok, mid, low)
        high = np.where(ok, high, mid)
    t = low.min()
    return np.maximum((1.0 - t) * e + t * x, 0.0)


def _diagnostics(e, w, x, lam, mu) -> dict:
    """Conservation error, IR violation, KKT residual and objective of allocation x [R, N].

    The KKT residual is the largest of: conservation error; IR violation; complementarity
    |min(mu_i, u_i(x_i) - u_i(e_i))|; and, per priced good, stationarity in relative marginal value,
    |min(x_ir / (1 + x_ir), 1 - (1 + mu_i) w_ir / ((1 + x_ir) lambda_r))| (zero exactly when every
    holder's marginal value equals the price and nobody else values the good above it).
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
