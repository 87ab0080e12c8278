"""Market clearing (docs/design.md section 4), checked against references independent of the solver.

The references: cvxpy's optimum and duals (the oracle); a weak-duality certificate computed here
from first principles (any prices lambda >= 0 and IR multipliers mu >= 0 bound the optimum from
above, so a feasible allocation whose objective meets the bound of the reported duals is optimal);
hand-worked markets; each agent's best response found by bisection; finite differences; NumPy's
linear solver; and the contract's invariants (conservation, x >= 0, individual rationality) under
hypothesis. No test checks one method or code path of the solver against another.
"""
import functools
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from homoecon_env.trade import TradeResult, clear_market, project_onto_conservation
from homoecon_env.trade import market as trade_market
from homoecon_env.trade import newton as trade_newton

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


# ------------------------------------------------------------------------------------------------
# cvxpy oracle


@pytest.mark.parametrize("kind", KINDS)
def test_trade_reaches_the_cvxpy_optimum(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    for _ in range(20):  # 120 instances over all kinds
        holdings, weights = degenerate_instance(rng, kind)
        result = clear_market(torch.tensor(holdings), torch.tensor(weights))
        optimum = cvxpy_solution(holdings, weights)[0]
        check_feasible(result, holdings, weights)
        assert abs(result.objective - optimum) <= 1e-4 * max(1.0, abs(optimum))
        assert result.converged


@pytest.mark.parametrize("method", METHODS)
def test_every_method_finds_cvxpy_allocation_prices_and_ir_multipliers(method):
    """Every weight positive: the allocation and the prices are unique, and so is (1 + mu) / sum(lambda)
    (stationarity fixes (1 + mu_i) w_ir / lambda_r; a common factor on lambda and 1 + mu is all
    that is free, and only when every agent's IR binds)."""
    rng = np.random.default_rng(9)
    for _ in range(6):
        holdings, weights = random_instance(rng, int(rng.integers(2, 41)), int(rng.integers(1, 5)))
        result = clear_market(holdings, weights, **METHODS[method])
        optimum, allocation, lam, mu = cvxpy_solution(holdings, weights, tight=True)
        check_optimal(result, holdings, weights)
        assert result.converged and result.method == METHODS[method].get("method", "pgd")
        assert result.objective == pytest.approx(optimum, rel=1e-7, abs=1e-7)
        np.testing.assert_allclose(result.allocation.numpy(), allocation, atol=1e-5)
        np.testing.assert_allclose(result.prices.numpy(), lam / lam.sum(), atol=1e-7)
        np.testing.assert_allclose((1.0 + result.multipliers.numpy()) / result.price_scale, (1.0 + mu) / lam.sum(),
                                   rtol=1e-4)


def test_prices_equal_the_cvxpy_conservation_duals():
    rng = np.random.default_rng(7)
    for _ in range(30):  # every good held and every weight positive: unique duals
        holdings, weights = random_instance(rng, int(rng.integers(2, 61)), int(rng.integers(1, 5)))
        result = clear_market(holdings, weights)
        lam = cvxpy_solution(holdings, weights)[2]
        np.testing.assert_allclose(result.prices.numpy(), lam / lam.sum(), atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Hand-worked markets


@pytest.mark.parametrize("method", METHODS)
def test_two_traders_with_opposite_tastes_swap_as_worked_by_hand(method):
    """e = [[10, 0], [0, 10]], w = [[.1, .9], [.9, .1]]. If nobody's IR binds (mu = 0), good 0 is
    water-filled: .1 / lambda - 1 + .9 / lambda - 1 = 10, lambda = 1/12, x = (0.2, 9.8); good 1 is
    the mirror image. Both gain (u_1 = .1 log 1.2 + .9 log 10.8 > .1 log 11), so mu = 0 holds."""
    holdings, weights = np.array([[10.0, 0.0], [0.0, 10.0]]), np.array([[0.1, 0.9], [0.9, 0.1]])
    result = clear_market(holdings, weights, **METHODS[method])
    np.testing.assert_allclose(result.allocation.numpy(), [[0.2, 9.8], [9.8, 0.2]], atol=1e-9)
    np.testing.assert_allclose(result.prices.numpy(), [0.5, 0.5], atol=1e-12)
    assert result.price_scale == pytest.approx(2 / 12, rel=1e-9)
    np.testing.assert_allclose(result.multipliers.numpy(), 0.0, atol=1e-9)
    assert result.objective == pytest.approx(2 * (0.1 * np.log(1.2) + 0.9 * np.log(10.8)), rel=1e-12)
    assert result.converged and result.objective > utility(weights, holdings).sum() + 1.0


@pytest.mark.parametrize("method", METHODS)
def test_binding_individual_rationality_matches_the_hand_worked_optimum(method):
    """A: e = (2, 2), B: e = (2, 0), both w = (1/2, 1/2). Equal shares (2, 1) would leave A below
    u(e_A) = log 3, so A's IR binds and B's does not (mu_B = 0). Stationarity with k = 1 + mu_A:
    1 + x_Ar = k (1 + x_Br), so with supplies 4 and 2, 1 + x_B = (6, 4) / (1 + k) and
    1 + x_A = k (6, 4) / (1 + k). A's IR, (1/2) log(24 t^2) = log 3 with t = k / (1 + k), gives
    t = sqrt(3/8). Then lambda_r = (1/2) / (1 + x_Br) = (1 / 12, 1 / 8) / (1 - t): prices (0.4, 0.6)."""
    holdings, weights = np.array([[2.0, 2.0], [2.0, 0.0]]), np.full((2, 2), 0.5)
    t = np.sqrt(3 / 8)
    result = clear_market(holdings, weights, **METHODS[method])
    np.testing.assert_allclose(result.allocation.numpy(), [[6 * t - 1, 4 * t - 1], [5 - 6 * t, 3 - 4 * t]], atol=1e-9)
    np.testing.assert_allclose(result.prices.numpy(), [0.4, 0.6], atol=1e-9)
    assert result.price_scale == pytest.approx((1 / 12 + 1 / 8) / (1 - t), rel=1e-8)
    np.testing.assert_allclose(result.multipliers.numpy(), [t / (1 - t) - 1, 0.0], atol=1e-8)
    assert utility(weights, result.allocation.numpy())[0] == pytest.approx(np.log(3), abs=1e-9)
    assert result.converged and result.ir_violation <= 1e-10


def test_edge_cases_are_handled():
    holdings = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0], [4.0, 0.0, 0.0]])
    weights = np.array([[0.5, 0.2, 0.3], [0.0, 0.0, 0.0], [0.2, 0.4, 0.4]])
    result = clear_market(holdings, weights)
    check_optimal(result, holdings, weights)
    assert result.prices[1] == 0.0  # nobody holds good 1
    np.testing.assert_allclose(result.allocation[1].numpy(), 0.0)  # indifferent agent 1 gives all away
    np.testing.assert_allclose(result.prices.sum().item(), 1.0)

    alone = clear_market(holdings[:1], weights[:1])  # one agent: nothing to trade
    np.testing.assert_allclose(alone.allocation.numpy(), holdings[:1])

    unvalued = clear_market(holdings, np.zeros_like(weights))  # nobody values anything: nothing moves
    np.testing.assert_allclose(unvalued.allocation.numpy(), holdings)
    assert torch.all(unvalued.prices == 0)

    nothing = clear_market(np.zeros((4, 2)), np.ones((4, 2)))
    assert torch.all(nothing.allocation == 0) and torch.all(nothing.prices == 0)

    empty = clear_market(np.zeros((0, 2)), np.zeros((0, 2)))
    assert empty.allocation.shape == (0, 2) and empty.multipliers.shape == (0,)


def test_scarcer_good_has_higher_relative_price():
    rng = np.random.default_rng(5)
    for _ in range(10):
        holdings, weights = random_instance(rng, 40, 3)
        before = clear_market(holdings, weights).prices
        scarce = holdings.copy()
        scarce[:, 0] *= 0.3
        after = clear_market(scarce, weights).prices
        assert after[0] / after[1:].sum() > before[0] / before[1:].sum()


# ------------------------------------------------------------------------------------------------
# Invariants


@st.composite
def markets(draw):
    num_agents = draw(st.integers(1, 25))
    num_goods = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = 10.0 ** draw(st.integers(-9, 6))
    rng = np.random.default_rng(seed)
    holdings = rng.exponential(1.0, (num_agents, num_goods)) * scale
    holdings *= rng.uniform(size=holdings.shape) < draw(st.floats(0.3, 1.0))  # some zeros
    weights = rng.uniform(size=(num_agents, num_goods)) * (rng.uniform(size=(num_agents, num_goods)) < 0.8)
    return holdings, weights


@settings(max_examples=150, deadline=None)
@given(markets())
def test_trade_conserves_each_resource_and_keeps_everyone_individually_rational(market):
    holdings, weights = market
    check_feasible(clear_market(holdings, weights), holdings, weights)


@settings(max_examples=40, deadline=None)
@given(markets(), st.integers(1, 3), st.sampled_from(["newton", "dual", "endowment"]))
def test_trade_stays_feasible_when_stopped_early(market, max_iter, start):
    holdings, weights = market
    options = {"method": "newton"} if start == "newton" else {"init": start, "init_max_iter": max_iter}
    result = clear_market(holdings, weights, max_iter=max_iter, **options)
    check_feasible(result, holdings, weights)
    assert result.iterations <= max_iter and result.init_iterations <= max_iter


def test_projection_onto_conservation_is_exact_and_nearest():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(3, 40))
    supply = np.array([5.0, 0.0, 0.3])
    projected = project_onto_conservation(points, supply)
    assert np.all(projected >= 0)
    np.testing.assert_allclose(projected.sum(axis=1), supply, atol=1e-12)
    for _ in range(200):  # no feasible point is nearer
        other = project_onto_conservation(projected + 0.1 * rng.normal(size=points.shape), supply)
        assert np.sum((other - points) ** 2) >= np.sum((projected - points) ** 2) - 1e-12


@pytest.mark.parametrize("scale", [1e-9, 1e6])
def test_extreme_magnitudes_stay_finite_and_optimal(scale):
    rng = np.random.default_rng(11)
    for _ in range(10):
        holdings, weights = random_instance(rng, 30, 3, scale)
        result = clear_market(holdings, weights)
        check_optimal(result, holdings, weights)
        assert np.isfinite(result.objective) and torch.all(torch.isfinite(result.prices))


def test_ten_thousand_agents_clear_to_the_certified_optimum():
    """The contract's largest market (its timing lives in benchmarks/bench_trade.py)."""
    rng = np.random.default_rng(0)
    holdings, weights = random_instance(rng, 10_000, 2)
    result = clear_market(torch.tensor(holdings), torch.tensor(weights))
    assert result.converged
    check_optimal(result, holdings, weights)


# ------------------------------------------------------------------------------------------------
# Projected gradient alone: optimum, acceleration, tolerance, warm start


def pure_instances():
    """Moderate random instances, plain and of every degenerate kind, for projected gradient alone."""
    rng = np.random.default_rng(21)
    instances = [random_instance(rng, int(rng.integers(2, 41)), int(rng.integers(1, 5))) for _ in range(10)]
    return instances + [degenerate_instance(rng, kind) for kind in KINDS[1:] for _ in range(2)]


PURE_INSTANCES = pure_instances()


def test_projected_gradient_alone_reaches_the_cvxpy_optimum():
    for holdings, weights in PURE_INSTANCES:
        result = clear_market(holdings, weights, init="endowment")
        check_optimal(result, holdings, weights)
        assert result.converged and result.init_iterations == 0
        optimum = cvxpy_solution(holdings, weights)[0]
        assert abs(result.objective - optimum) <= 1e-4 * max(1.0, abs(optimum))


def test_acceleration_needs_fewer_iterations_than_plain_projected_gradient():
    accelerated_total = plain_total = 0
    for holdings, weights in PURE_INSTANCES:
        accelerated = clear_market(holdings, weights, init="endowment")
        plain = clear_market(holdings, weights, init="endowment", accelerate=False)
        for result in (accelerated, plain):
            assert result.converged
            check_optimal(result, holdings, weights)
        assert accelerated.iterations <= plain.iterations
        accelerated_total, plain_total = accelerated_total + accelerated.iterations, plain_total + plain.iterations
    assert accelerated_total < 0.6 * plain_total


def test_tolerance_option_trades_accuracy_for_iterations():
    rng = np.random.default_rng(8)
    holdings, weights = random_instance(rng, 40, 3)
    loose = clear_market(holdings, weights, init="endowment", tol=1e-5)
    tight = clear_market(holdings, weights, init="endowment", tol=1e-10)
    check_feasible(loose, holdings, weights, tol=1e-5)
    check_optimal(tight, holdings, weights)
    assert loose.converged and tight.converged and loose.iterations < tight.iterations


def test_projected_gradient_warm_start_from_the_previous_step_reaches_the_optimum():
    rng = np.random.default_rng(13)
    holdings, weights = random_instance(rng, 40, 2)
    previous = clear_market(holdings, weights, init="endowment")
    nudged = holdings * rng.uniform(0.9, 1.1, holdings.shape)
    warm = clear_market(nudged, weights, init="endowment", warm_start=previous)
    assert warm.converged
    check_optimal(warm, nudged, weights)


def test_warm_start_reaches_the_optimum_in_no_more_iterations():
    rng = np.random.default_rng(2)
    for _ in range(10):
        holdings, weights = random_instance(rng, 50, 2)
        cold = clear_market(holdings, weights)
        warm = clear_market(holdings, weights, warm_start=cold)
        assert warm.iterations <= cold.iterations and warm.init_iterations <= cold.init_iterations
        check_optimal(warm, holdings, weights)
        # The next step's market is a perturbation of this one: still a valid start.
        nudged = holdings * rng.uniform(0.9, 1.1, holdings.shape)
        check_optimal(clear_market(nudged, weights, warm_start=cold), nudged, weights)
    other_size = clear_market(holdings[:10], weights[:10], warm_start=cold)  # N differs: ignored
    check_optimal(other_size, holdings[:10], weights[:10])


def test_warm_start_tensors_may_require_gradients():
    rng = np.random.default_rng(19)
    holdings, weights = random_instance(rng, 20, 2)
    previous = clear_market(holdings, weights)
    tracked = replace(previous, prices=previous.prices.clone().requires_grad_(),
                      multipliers=previous.multipliers.clone().requires_grad_())
    result = clear_market(holdings, weights, warm_start=tracked)
    assert result.converged
    check_optimal(result, holdings, weights)


# ------------------------------------------------------------------------------------------------
# The Newton (dual) start and method="newton"


def test_default_returns_a_certified_dual_start_and_polishes_a_truncated_one():
    """A converged dual start is returned after 0 projected-gradient steps; one cut to a single
    Newton step is polished by projected gradient; both are optimal by the duality certificate."""
    rng = np.random.default_rng(10)
    for _ in range(5):
        holdings, weights = random_instance(rng, 30, 3)
        certified = clear_market(holdings, weights)
        assert certified.converged and certified.iterations == 0 and certified.init_iterations > 1
        check_optimal(certified, holdings, weights)
        polished = clear_market(holdings, weights, init_max_iter=1)  # one Newton step, then PGD
        assert polished.init_iterations == 1 and polished.iterations > 0 and polished.converged
        check_optimal(polished, holdings, weights)


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


@pytest.mark.parametrize("method", METHODS)
def test_closed_form_water_filling_is_an_upper_bound_and_a_fixed_point(method):
    rng = np.random.default_rng(12)
    for _ in range(6):
        holdings, weights = random_instance(rng, int(rng.integers(2, 41)), int(rng.integers(1, 5)))
        no_ir, no_ir_prices = water_filling(weights, holdings.sum(axis=0))
        # IR only constrains: the closed form's welfare bounds the market's from above.
        assert clear_market(holdings, weights, **METHODS[method]).objective <= utility(weights, no_ir).sum() + 1e-9
        # Starting at the closed form, nobody can gain: the market leaves it where it is.
        stay = clear_market(no_ir, weights, **METHODS[method])
        check_feasible(stay, no_ir, weights)
        np.testing.assert_allclose(stay.allocation.numpy(), no_ir, atol=1e-8)
        np.testing.assert_allclose(stay.prices.numpy(), no_ir_prices, atol=1e-8)
        assert np.all(stay.multipliers.numpy() <= 1e-6)


def test_dual_start_stops_early_but_certifies_its_residual():
    """Newton stops once the clearing error is below half the IR allowance and certifies the
    repaired allocation: its KKT residual, recomputed here, within tol; IR to min(0.1 tol, 1e-10)."""
    rng = np.random.default_rng(17)
    for _ in range(10):
        holdings, weights = random_instance(rng, int(rng.integers(2, 80)), int(rng.integers(1, 4)))
        for tol in (1e-6, 1e-9, 1e-11, 1e-13):
            result = clear_market(holdings, weights, tol=tol)
            check_feasible(result, holdings, weights, tol=tol)
            assert result.converged and result.iterations == 0
            assert result.ir_violation <= min(0.1 * tol, 1e-10)
            assert kkt_from_first_principles(result, holdings, weights)[3] <= tol * (1 + 1e-6)
            bound = dual_bound(holdings, weights, result.prices.numpy() * result.price_scale,
                               result.multipliers.numpy())
            assert bound - result.objective <= max(1e2 * tol, 1e-12) * max(1.0, result.objective)


def test_price_warm_start_from_another_market_reaches_the_optimum():
    rng = np.random.default_rng(12)
    for _ in range(10):
        num_agents, num_goods = int(rng.integers(2, 80)), int(rng.integers(1, 5))
        holdings, weights = random_instance(rng, num_agents, num_goods)
        previous = clear_market(*random_instance(rng, num_agents, num_goods))  # another market's prices
        for start in (previous, replace(previous, multipliers=torch.zeros(3))):  # N differs: prices only
            warm = clear_market(holdings, weights, warm_start=start)
            assert warm.converged
            check_optimal(warm, holdings, weights)
    # A result without unnormalised prices (price_scale 0, the default) falls back to water-filling.
    legacy = replace(previous, price_scale=0.0)
    check_optimal(clear_market(holdings, weights, warm_start=legacy), holdings, weights)


def test_warm_prices_far_off_still_clear():
    """Prices a million times too high or low: at first nobody (or everybody) buys, the Hessian is
    all ridge, and the line search still brings the prices back."""
    rng = np.random.default_rng(18)
    holdings, weights = random_instance(rng, 30, 2)
    cold = clear_market(holdings, weights)
    for factor in (1e6, 1e-6):
        for method in ("pgd", "newton"):
            warm = clear_market(holdings, weights, method=method,
                                warm_start=replace(cold, price_scale=cold.price_scale * factor))
            newton_steps = warm.iterations if method == "newton" else warm.init_iterations
            assert warm.converged and newton_steps > 1  # the far start had to be walked back
            check_optimal(warm, holdings, weights)


def best_response(weights, endowment_utility, prices):
    """Each agent's demand at ``prices`` with the least IR multiplier restoring its endowment
    utility, found by bisection on z = log(1 + mu) (independent of the solver's closed form).
    weights [N, R], endowment_utility [N], prices [R] > 0; returns (z [N], x [N, R])."""
    def demand(z):
        return np.maximum(np.exp(z)[:, None] * weights / prices - 1.0, 0.0)

    low, high = np.zeros(len(weights)), np.full(len(weights), trade_newton.MAX_LOG_MULTIPLIER)
    for _ in range(200):
        middle = 0.5 * (low + high)
        rational = utility(weights, demand(middle)) >= endowment_utility
        low, high = np.where(rational, low, middle), np.where(rational, middle, high)
    z = np.where(utility(weights, demand(np.zeros(len(weights)))) >= endowment_utility, 0.0, high)
    return z, demand(z)


def excess_demand(weights, endowment_utility, supply, eta):
    """sum_i x_i - s at prices 1 / eta, from the bisection best response."""
    return best_response(weights, endowment_utility, 1.0 / eta)[1].sum(axis=0) - supply


@pytest.mark.parametrize("num_goods", [1, 2, 3, 5])
@pytest.mark.parametrize("enumerate_sets", [True, False], ids=["enumerated", "sorted"])
def test_ir_multipliers_are_the_least_that_restore_endowment_utility(monkeypatch, num_goods, enumerate_sets):
    """The Newton solver's closed-form IR multipliers, by enumerating sets of goods or by sorting
    the goods (two code paths), against bisection at prices far from and near the optimum; and the
    market it clears is optimal by the duality certificate."""
    monkeypatch.setattr(trade_newton, "MAX_ENUMERATED_GOODS", 8 if enumerate_sets else 0)
    monkeypatch.setattr(trade_newton, "ENUMERATION_BUDGET", 1 << 30 if enumerate_sets else 0)
    rng = np.random.default_rng(13 + num_goods)
    for kind in KINDS:
        holdings, weights = degenerate_instance(rng, kind)
        holdings = np.resize(holdings, (holdings.shape[0], num_goods)) * rng.uniform(0.5, 1.5, (1, num_goods))
        weights = np.resize(weights, (weights.shape[0], num_goods)) * (rng.uniform(size=(1, num_goods)) < 0.9)
        result = clear_market(holdings, weights, method="newton")
        assert result.converged
        check_optimal(result, holdings, weights)
        data = trade_market._market_data(holdings.T.copy(), weights.T.copy())
        traded = data.traded
        if not traded.any():
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            economy = trade_newton._economy(data.weights[traded], data.supply[traded], data.endowment_utility)
        optimum = result.prices.numpy()[traded] * result.price_scale
        for factor in (1.0, rng.uniform(0.3, 3.0, traded.sum())):
            response = trade_newton._respond(economy, optimum * factor)
            z, x = best_response(weights[:, traded], data.endowment_utility, optimum * factor)
            np.testing.assert_allclose(response.log_multipliers, z, rtol=1e-9, atol=1e-10)
            np.testing.assert_allclose(response.allocation.T, x, rtol=1e-8, atol=1e-10)


def test_newton_direction_is_the_newton_step_in_inverse_prices():
    """The direction is Newton's step on excess demand as a function of eta = 1 / lambda, with the
    Jacobian taken here by central differences of the bisection best response: eta moves by
    -J_eta^-1 excess, and the direction is the resulting change of lambda. It descends Phi."""
    for seed in range(5):
        num_goods = 2 + seed % 2
        rng = np.random.default_rng(40 + seed)
        holdings, weights = random_instance(rng, 40, num_goods)
        data = trade_market._market_data(holdings.T.copy(), weights.T.copy())
        economy = trade_newton._economy(data.weights, data.supply, data.endowment_utility)
        optimum = clear_market(holdings, weights)
        prices = optimum.prices.numpy() * optimum.price_scale * rng.uniform(0.9, 1.1, num_goods)
        market = trade_newton._respond(economy, prices)
        z, _ = best_response(weights, data.endowment_utility, prices)
        assert np.any(z > 0) and np.any(z == 0)  # both kinds of agent take part

        supply = holdings.sum(axis=0)
        excess = functools.partial(excess_demand, weights, data.endowment_utility, supply)
        eta = 1.0 / prices
        jacobian = np.empty((num_goods, num_goods))
        for q in range(num_goods):
            step = np.zeros(num_goods)
            step[q] = 1e-7 * eta[q]
            jacobian[:, q] = (excess(eta + step) - excess(eta - step)) / (2 * step[q])
        new_eta = eta - np.linalg.solve(jacobian, excess(eta))
        assert np.all(new_eta > 0.25 * eta)  # the solver caps a price's growth at fourfold; not reached here
        direction, slope = trade_newton._newton_direction(economy, market)
        np.testing.assert_allclose(direction, 1.0 / new_eta - prices, rtol=1e-5)
        assert slope == pytest.approx(market.excess @ direction) and slope > 0


def test_small_linear_solves_match_numpy():
    from homoecon_env.trade.newton import _solve_small
    rng = np.random.default_rng(14)
    for size in (1, 2, 3):
        matrix, vector = rng.normal(size=(size, size)), rng.normal(size=size)
        np.testing.assert_allclose(_solve_small(matrix, vector), np.linalg.solve(matrix, vector), rtol=1e-10)
        with pytest.raises(np.linalg.LinAlgError):
            _solve_small(np.zeros((size, size)), vector)


# ------------------------------------------------------------------------------------------------
# Reported diagnostics, the penalty method, inputs


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


@pytest.mark.parametrize("options", [{}, {"method": "newton"}, {"method": "newton", "max_iter": 1},
                                     {"init": "endowment"}, {"init": "endowment", "max_iter": 5}],
                         ids=["dual start", "newton", "newton cut short", "pgd alone", "pgd cut short"])
def test_reported_diagnostics_are_true(options):
    """Every reported figure equals its definition, at the optimum and at a point cut short of it."""
    rng = np.random.default_rng(11)
    for _ in range(10):
        holdings, weights = random_instance(rng, int(rng.integers(2, 80)), int(rng.integers(1, 5)))
        result = clear_market(holdings, weights, **options)
        conservation, ir_violation, objective, kkt = kkt_from_first_principles(result, holdings, weights)
        assert result.conservation_error == pytest.approx(conservation, abs=1e-15)
        assert result.ir_violation == pytest.approx(ir_violation, abs=1e-15)
        assert result.objective == pytest.approx(objective, rel=1e-12)
        assert result.kkt_residual == pytest.approx(kkt, rel=1e-6, abs=1e-15)
        assert result.converged == (kkt <= 1e-9) or kkt == pytest.approx(1e-9, rel=1e-6)
        assert result.price_scale > 0 and result.prices.sum().item() == pytest.approx(1.0)
        if "max_iter" not in options:
            assert result.converged


def test_penalty_method_runs_and_reports_its_ir_violation():
    rng = np.random.default_rng(4)
    holdings, weights = random_instance(rng, 50, 2)
    result = clear_market(holdings, weights, method="penalty")
    assert result.method == "penalty" and result.iterations == 100
    x = result.allocation.numpy()
    assert np.all(x >= 0) and result.conservation_error <= 1e-9
    honest = np.max(np.maximum(utility(weights, holdings) - utility(weights, x), 0.0))
    assert result.ir_violation == pytest.approx(honest, abs=1e-12)
    assert result.objective == pytest.approx(utility(weights, x).sum(), rel=1e-12)
    # Without repair its IR violations may buy welfare, but never beyond the bound without IR.
    assert result.objective <= utility(weights, water_filling(weights, holdings.sum(axis=0))[0]).sum() + 1e-9


def test_inputs_may_be_tensors_or_arrays_of_any_float_dtype():
    holdings = torch.tensor([[1.0, 2.0], [3.0, 0.5]], dtype=torch.float32)
    weights = [[0.3, 0.7], [0.6, 0.4]]
    result = clear_market(holdings, weights)
    assert isinstance(result, TradeResult)
    assert result.allocation.dtype == torch.float64 and result.multipliers.shape == (2,)
    check_optimal(result, holdings.double().numpy(), np.array(weights))


@pytest.mark.parametrize(
    "holdings, weights, options, name",
    [
        (np.ones((3, 2)), np.ones((3, 3)), {}, "weights"),
        (np.ones(3), np.ones(3), {}, "holdings"),
        (np.array([[1.0, np.nan]]), np.ones((1, 2)), {}, "holdings"),
        (np.array([[1.0, -1.0]]), np.ones((1, 2)), {}, "holdings"),
        (np.ones((1, 2)), np.array([[np.inf, 1.0]]), {}, "weights"),
        (np.ones((1, 2)), np.array([[-0.1, 1.0]]), {}, "weights"),
        (np.ones((1, 2)), np.ones((1, 2)), {"method": "bfgs"}, "method"),
        (np.ones((1, 2)), np.ones((1, 2)), {"init": "random"}, "init"),
        (np.ones((1, 2)), np.ones((1, 2)), {"init_max_iter": 0}, "init_max_iter"),
        (np.ones((1, 2)), np.ones((1, 2)), {"tol": 0.0}, "tol"),
        (np.ones((1, 2)), np.ones((1, 2)), {"max_iter": 0}, "max_iter"),
        (np.ones((1, 2)), np.ones((1, 2)), {"warm_start": "previous"}, "warm_start"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(holdings, weights, options, name):
    with pytest.raises(ValueError, match=name):
        clear_market(holdings, weights, **options)


@pytest.mark.parametrize("broken_part", ["allocation", "prices", "multipliers"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_solver_result_falls_back_to_no_trade(monkeypatch, broken_part, bad):
    """Last line of defence: whatever a solver returns, the market never hands out NaN or inf."""
    from homoecon_env import trade  # clear_market looks _solve_prices up in the package

    def broken(data, tol, max_iter, warm_multipliers, warm_prices=None):
        e = data.endowment
        x, lam, mu = e.copy(), np.full(e.shape[0], 0.5), np.zeros(e.shape[1])
        {"allocation": x, "prices": lam, "multipliers": mu}[broken_part][0] = bad
        return x, lam, mu, 1, {}

    monkeypatch.setattr(trade, "_solve_prices", broken)
    holdings = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    result = trade.clear_market(holdings, torch.full((2, 2), 0.5, dtype=torch.float64), method="newton")
    assert torch.equal(result.allocation, holdings) and not result.converged
    assert torch.isfinite(result.prices).all() and result.ir_violation == 0.0
