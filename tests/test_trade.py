"""Market clearing's public contract (docs/design.md section 4), checked against references
independent of the solver.

The references: cvxpy's optimum and duals (the oracle); a weak-duality certificate computed from
first principles (any prices lambda >= 0 and IR multipliers mu >= 0 bound the optimum from above,
so a feasible allocation whose objective meets the bound of the reported duals is optimal);
hand-worked markets; the no-IR closed form found by bisection; and the contract's invariants
(conservation, x >= 0, individual rationality) under hypothesis. No test checks one method or code
path of the solver against another. The solver internals (Newton steps, projected gradient, warm
starts, multipliers, diagnostics) are tested in tests/test_trade_solvers.py; the shared markets and
references live in tests/trade_markets.py.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from trade_markets import (
    KINDS,
    METHODS,
    check_feasible,
    check_optimal,
    cvxpy_solution,
    degenerate_instance,
    random_instance,
    utility,
    water_filling,
)

from homoecon_env.trade import TradeResult, clear_market, project_onto_conservation

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
# The no-IR closed form


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


# ------------------------------------------------------------------------------------------------
# Inputs


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

    def broken(data, tol, max_iter, warm_multipliers, warm_prices=None, pool=None):
        e = data.endowment
        x, lam, mu = e.copy(), np.full(e.shape[0], 0.5), np.zeros(e.shape[1])
        {"allocation": x, "prices": lam, "multipliers": mu}[broken_part][0] = bad
        return x, lam, mu, 1, {}

    monkeypatch.setattr(trade, "_solve_prices", broken)
    holdings = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    result = trade.clear_market(holdings, torch.full((2, 2), 0.5, dtype=torch.float64), method="newton")
    assert torch.equal(result.allocation, holdings) and not result.converged
    assert torch.isfinite(result.prices).all() and result.ir_violation == 0.0


def test_refused_max_iter_is_named_itself_not_init_max_iter():
    # "init_max_iter" contains "max_iter": anchor the match so the message must start with the name.
    with pytest.raises(ValueError, match=r"^max_iter: 0;"):
        clear_market(np.ones((1, 2)), np.ones((1, 2)), max_iter=0)


@pytest.mark.parametrize("value", [[[None, 1.0]], [["one", 1.0]], [[1.0, object()]]])
def test_non_numeric_input_is_refused_with_a_value_error_naming_the_argument(value):
    with pytest.raises(ValueError, match="^holdings: "):
        clear_market(value, np.ones((1, 2)))


@pytest.mark.parametrize("method", ["pgd", "newton", "penalty"])
def test_a_market_without_agents_reports_the_requested_method(method):
    empty = clear_market(np.zeros((0, 3)), np.zeros((0, 3)), method=method)
    assert empty.method == method and empty.converged and empty.iterations == 0
    assert torch.all(empty.prices == 0) and empty.prices.shape == (3,)
