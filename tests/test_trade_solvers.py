"""Market clearing's solver internals (docs/design.md section 4): projected gradient alone and its
acceleration, the Newton dual start and method="newton" (steps, closed-form IR multipliers, small
solves), warm starts, the penalty method, and the reported diagnostics.

The references are independent of the solver, as in tests/test_trade.py: the duality certificate
and cvxpy (tests/trade_markets.py), each agent's best response found by bisection, finite
differences, NumPy's linear solver, and the diagnostics recomputed from their definitions. No test
checks one method or code path of the solver against another.
"""
import functools
from dataclasses import replace

import numpy as np
import pytest
import torch
from trade_markets import (
    KINDS,
    check_feasible,
    check_optimal,
    cvxpy_solution,
    degenerate_instance,
    dual_bound,
    kkt_from_first_principles,
    random_instance,
    utility,
    water_filling,
)

from homoecon_env.trade import clear_market
from homoecon_env.trade import market as trade_market
from homoecon_env.trade import newton as trade_newton
from homoecon_env.trade import pgd as trade_pgd

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


@pytest.mark.parametrize("method", ["pgd", "newton"])
def test_warm_start_with_a_zero_price_for_a_now_traded_good_still_clears(method):
    """Last step nobody held good 1 (price 0); now it is held: a zero price is no Newton start
    (everyone's demand for it is infinite), so the solver must fall back to water-filling."""
    weights = np.array([[0.3, 0.7], [0.6, 0.4]])
    previous = clear_market(np.array([[1.0, 0.0], [2.0, 0.0]]), weights, method="newton")
    assert previous.prices[1] == 0.0 and previous.price_scale > 0  # the warm start holds a zero price
    holdings = np.array([[1.0, 1.0], [2.0, 0.5]])
    warm = clear_market(holdings, weights, method=method, warm_start=previous)
    assert warm.converged
    check_optimal(warm, holdings, weights)


def test_a_misleading_newton_direction_falls_back_to_the_diagonal_step(monkeypatch):
    """Newton's model pointing uphill (the Newton step reversed) leaves the line search no
    decrease; the diagonally scaled gradient must take over and still reach the optimum."""
    honest = trade_newton._newton_direction

    def uphill(economy, market):
        direction, descent = honest(economy, market)
        return -direction, descent

    monkeypatch.setattr(trade_newton, "_newton_direction", uphill)
    holdings, weights = random_instance(np.random.default_rng(3), 12, 3)
    result = clear_market(holdings, weights, method="newton")
    assert result.converged
    check_optimal(result, holdings, weights)


def test_repair_of_an_early_stop_conserves_a_good_nobody_demands():
    """An iterate stopped early may hold none of a traded good; the final repair must still
    hand out exactly the supply (projection) and leave everyone individually rational."""
    holdings = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]])  # [N, R]
    weights = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    data = trade_market._market_data(holdings.T.copy(), weights.T.copy())
    iterate = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])  # good 1 demanded by nobody
    x, _ = trade_market._finish(iterate, data, 0.0)
    np.testing.assert_allclose(x.sum(axis=1), holdings.sum(axis=0), rtol=1e-15)
    assert np.all(x >= 0)
    assert np.all(utility(weights, x.T) >= utility(weights, holdings) - 1e-12)


def test_projected_gradient_keeps_the_endowment_when_its_first_iterate_is_not_finite(monkeypatch):
    """If rounding breaks down before any candidate exists, pgd falls back to no trade."""
    monkeypatch.setattr(trade_pgd, "_lipschitz_estimate", lambda *args: np.inf)
    holdings, weights = random_instance(np.random.default_rng(1), 5, 3)
    result = clear_market(holdings, weights, init="endowment")
    np.testing.assert_array_equal(result.allocation.numpy(), holdings)
    assert result.prices.shape == (3,) and torch.all(result.prices == 0)
    assert result.conservation_error == 0.0 and result.ir_violation == 0.0
    assert not result.converged and result.kkt_residual == np.inf  # nothing was certified


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
# Reported diagnostics, the penalty method


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
