"""Markets and references shared by the trade tests (tests/test_trade.py, tests/test_trade_solvers.py).

Random and degenerate instances; the contract's checks (feasibility, and optimality by a
weak-duality certificate); and references independent of the solver: cvxpy's optimum and duals,
water-filling by bisection, and the KKT figures recomputed from a result's definitions.
"""
import warnings

import numpy as np
import pytest
import torch

METHODS = {"pgd (dual start)": {}, "pgd alone": {"init": "endowment"}, "newton": {"method": "newton"}}


def utility(weights, holdings):
    return (np.asarray(weights) * np.log1p(np.asarray(holdings))).sum(axis=1)


def random_instance(rng, num_agents, num_goods, scale=1.0):
    holdings = rng.exponential(1.0, (num_agents, num_goods)) * rng.uniform(0, 3, (num_agents, 1)) * scale
    weights = rng.dirichlet(np.ones(num_goods), num_agents)
    return holdings, weights


def degenerate_instance(rng, kind):
    """Random instances with one of the awkward features the economy produces."""
    holdings, weights = random_instance(rng, int(rng.integers(2, 61)), int(rng.integers(1, 5)))
    if kind == "zero_holdings_rows":
        holdings[rng.integers(0, len(holdings), 3)] = 0.0
    elif kind == "zero_weight_rows":
        weights[rng.integers(0, len(weights), 3)] = 0.0
    elif kind == "good_nobody_holds":
        holdings[:, rng.integers(holdings.shape[1])] = 0.0
    elif kind == "one_agent":
        holdings, weights = holdings[:1], weights[:1]
    elif kind == "sparse_weights":
        weights = weights * (rng.uniform(size=weights.shape) < 0.6)
    return holdings, weights


KINDS = ["plain", "zero_holdings_rows", "zero_weight_rows", "good_nobody_holds", "one_agent", "sparse_weights"]


def check_feasible(result, holdings, weights, tol=1e-9):
    """The contract's guarantees on every returned allocation."""
    holdings = np.asarray(holdings, dtype=np.float64)
    x = result.allocation.numpy()
    assert result.allocation.dtype == torch.float64 and result.prices.dtype == torch.float64
    assert x.shape == holdings.shape and np.all(np.isfinite(x))
    assert np.all(x >= 0)
    supply = holdings.sum(axis=0)
    assert np.all(np.abs(x.sum(axis=0) - supply) <= 1e-9 * np.maximum(1.0, supply))
    assert result.conservation_error <= 1e-9
    assert np.all(utility(weights, x) >= utility(weights, holdings) - 1e-7)
    assert result.ir_violation <= 1e-7
    assert result.converged == (result.kkt_residual <= tol)


def dual_bound(holdings, weights, lam, mu):
    """Weak duality: for lambda >= 0 and mu >= 0 the optimum is at most
    L(lambda, mu) = max_{x >= 0} sum_i [(1 + mu_i) u_i(x_i) - mu_i u_i(e_i)] - lambda . (sum_i x_i - s),
    whose maximiser is x_ir = max(0, (1 + mu_i) w_ir / lambda_r - 1). Goods nobody holds are left
    out (conservation fixes them at 0). +inf when a valued good has no price."""
    held = holdings.sum(axis=0) > 0
    e, w, lam = holdings[:, held], weights[:, held], lam[held]
    mu = np.maximum(mu, 0.0)
    coefficients = (1.0 + mu)[:, None] * w
    valued = coefficients > 0
    if np.any(valued & (lam <= 0)):
        return np.inf
    x = np.where(valued, np.maximum(coefficients / np.where(lam > 0, lam, 1.0) - 1.0, 0.0), 0.0)
    return float((coefficients * np.log1p(x)).sum() - (x.sum(axis=0) - e.sum(axis=0)) @ lam - mu @ utility(w, e))


def check_optimal(result, holdings, weights, gap=1e-8):
    """Feasible, and its welfare (recomputed here) within ``gap`` of the bound of its own duals:
    optimal up to ``gap``, whatever the solver did to get there."""
    check_feasible(result, holdings, weights)
    welfare = utility(weights, result.allocation.numpy()).sum()
    assert result.objective == pytest.approx(welfare, rel=1e-12, abs=1e-15)
    bound = dual_bound(holdings, weights, result.prices.numpy() * result.price_scale, result.multipliers.numpy())
    assert welfare - 1e-9 * max(1.0, abs(welfare)) <= bound <= welfare + gap * max(1.0, abs(welfare))


CLARABEL_TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}


def cvxpy_solution(holdings, weights, tight=False):
    """cvxpy's (optimal welfare, allocation [N, R], conservation duals [R], IR duals [N]).

    ``tight``: Clarabel's tolerances at 1e-12 instead of its defaults (about 1e-8 on the objective,
    which leaves the allocation, where welfare is flat, only about 1e-4 accurate).
    A good nobody holds is left out of the cvxpy model (its allocation is forced to 0, and an
    equality with an empty interior upsets interior-point solvers); its dual is reported as 0.
    The duals are those of the Lagrangian sum_i u_i + sum_i mu_i (u_i - u_i(e_i)) - lambda . excess,
    the solver's own (unnormalised) lambda and mu.
    """
    cp = pytest.importorskip("cvxpy")
    held = holdings.sum(axis=0) > 0
    allocation, duals = np.zeros(holdings.shape), np.zeros(holdings.shape[1])
    if not held.any():
        return 0.0, allocation, duals, np.zeros(len(holdings))
    endowment, utility_weights = holdings[:, held], weights[:, held]
    x = cp.Variable(endowment.shape, nonneg=True)
    welfare = cp.sum(cp.multiply(utility_weights, cp.log(1 + x)), axis=1)
    conservation = cp.sum(x, axis=0) == endowment.sum(axis=0)
    rationality = welfare >= utility(utility_weights, endowment)
    problem = cp.Problem(cp.Maximize(cp.sum(welfare)), [conservation, rationality])
    if "CLARABEL" not in cp.installed_solvers():
        problem.solve(solver="SCS", **({"eps": 1e-12, "max_iters": 100_000} if tight else {}))
    else:
        with warnings.catch_warnings():  # at 1e-12 Clarabel may call a solution "inaccurate"
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver="CLARABEL", **(CLARABEL_TIGHT if tight else {}))
    allocation[:, held] = x.value
    duals[held] = np.abs(np.asarray(conservation.dual_value, dtype=np.float64))
    return problem.value, allocation, duals, np.abs(np.asarray(rationality.dual_value, dtype=np.float64))


def water_filling(weights, supply):
    """The no-IR optimum, per good: x_ir = max(0, w_ir / lambda_r - 1) with lambda_r clearing the
    good, found here by bisection on log lambda (independently of the module's Newton version)."""
    x = np.zeros(weights.shape)
    prices = np.zeros(weights.shape[1])
    for good in range(weights.shape[1]):
        column = weights[:, good]
        low, high = np.log(column.max() / (1.0 + supply[good])), np.log(column.max())  # demand >= s, <= s
        for _ in range(200):
            middle = 0.5 * (low + high)
            excess = np.maximum(column / np.exp(middle) - 1.0, 0.0).sum() - supply[good]
            low, high = (middle, high) if excess > 0 else (low, middle)
        prices[good] = np.exp(0.5 * (low + high))
        x[:, good] = np.maximum(column / prices[good] - 1.0, 0.0)
    return x, prices / prices.sum()


def kkt_from_first_principles(result, holdings, weights):
    """Conservation error, IR violation, objective and KKT residual recomputed from the result alone,
    by the definitions in TradeResult's docstring."""
    x, mu = result.allocation.numpy(), result.multipliers.numpy()
    lam = result.prices.numpy() * result.price_scale  # the conservation multipliers themselves
    supply = holdings.sum(axis=0)
    gap = utility(weights, x) - utility(weights, holdings)
    conservation = np.max(np.abs(x.sum(axis=0) - supply) / np.maximum(1.0, supply))
    ir_violation = max(0.0, -gap.min())
    priced = lam > 0
    marginal = (1.0 + mu)[:, None] * weights / (1.0 + x) / np.where(priced, lam, 1.0)
    stationarity = np.where(priced, np.abs(np.minimum(x / (1.0 + x), 1.0 - marginal)), 0.0).max()
    kkt = max(stationarity, np.abs(np.minimum(mu, gap)).max(), ir_violation, conservation)
    return conservation, ir_violation, utility(weights, x).sum(), kkt
