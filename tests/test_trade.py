"""Market clearing (DESIGN.md section 4): cvxpy is the oracle, hypothesis checks the invariants.

The default method (pgd, started from the Newton dual solution) is checked everywhere; projected
gradient alone (init="endowment"), its acceleration, its agreement with Newton and the closed-form
no-IR optimum have their own section."""
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from homoecon_env.trade import TradeResult, clear_market, project_onto_conservation
from homoecon_env.trade import market as trade_market
from homoecon_env.trade import newton as trade_newton


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


# ------------------------------------------------------------------------------------------------
# cvxpy oracle


def cvxpy_optimum(holdings, weights):
    """(optimal welfare, normalised conservation duals) from cvxpy.

    A good nobody holds is left out of the cvxpy model (its allocation is forced to 0, and an
    equality with an empty interior upsets interior-point solvers); its dual is reported as 0.
    """
    cp = pytest.importorskip("cvxpy")
    held = holdings.sum(axis=0) > 0
    duals = np.zeros(holdings.shape[1])
    if not held.any():
        return 0.0, duals
    endowment, utility_weights = holdings[:, held], weights[:, held]
    x = cp.Variable(endowment.shape, nonneg=True)
    welfare = cp.sum(cp.multiply(utility_weights, cp.log(1 + x)), axis=1)
    conservation = cp.sum(x, axis=0) == endowment.sum(axis=0)
    problem = cp.Problem(cp.Maximize(cp.sum(welfare)),
                         [conservation, welfare >= utility(utility_weights, endowment)])
    problem.solve(solver="CLARABEL" if "CLARABEL" in cp.installed_solvers() else "SCS")
    duals[held] = np.abs(np.asarray(conservation.dual_value, dtype=np.float64))
    return problem.value, duals / duals.sum()


KINDS = ["plain", "zero_holdings_rows", "zero_weight_rows", "good_nobody_holds", "one_agent", "sparse_weights"]


@pytest.mark.parametrize("kind", KINDS)
def test_trade_reaches_the_cvxpy_optimum(kind):
    pytest.importorskip("cvxpy")
    rng = np.random.default_rng(KINDS.index(kind))
    for _ in range(20):  # 120 instances over all kinds
        holdings, weights = degenerate_instance(rng, kind)
        result = clear_market(torch.tensor(holdings), torch.tensor(weights))
        optimum, _ = cvxpy_optimum(holdings, weights)
        check_feasible(result, holdings, weights)
        assert abs(result.objective - optimum) <= 1e-4 * max(1.0, abs(optimum))
        assert result.converged


def test_prices_equal_the_cvxpy_conservation_duals():
    pytest.importorskip("cvxpy")
    rng = np.random.default_rng(7)
    for _ in range(30):  # every good held and every weight positive: unique duals
        holdings, weights = random_instance(rng, int(rng.integers(2, 61)), int(rng.integers(1, 5)))
        result = clear_market(holdings, weights)
        _, duals = cvxpy_optimum(holdings, weights)
        np.testing.assert_allclose(result.prices.numpy(), duals, atol=1e-4)


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


# ------------------------------------------------------------------------------------------------
# Projected gradient alone, acceleration, Newton and the closed form


def pure_instances():
    """Moderate random instances, plain and of every degenerate kind, for projected gradient alone."""
    rng = np.random.default_rng(21)
    instances = [random_instance(rng, int(rng.integers(2, 41)), int(rng.integers(1, 5))) for _ in range(10)]
    return instances + [degenerate_instance(rng, kind) for kind in KINDS[1:] for _ in range(2)]


PURE_INSTANCES = pure_instances()


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


def test_projected_gradient_alone_reaches_the_cvxpy_optimum():
    pytest.importorskip("cvxpy")
    for holdings, weights in PURE_INSTANCES:
        result = clear_market(holdings, weights, init="endowment")
        check_feasible(result, holdings, weights)
        assert result.converged and result.init_iterations == 0
        assert result.ir_violation < 1e-7
        optimum, _ = cvxpy_optimum(holdings, weights)
        assert abs(result.objective - optimum) <= 1e-4 * max(1.0, abs(optimum))


def test_acceleration_needs_fewer_iterations_than_plain_projected_gradient():
    accelerated_total = plain_total = 0
    for holdings, weights in PURE_INSTANCES:
        accelerated = clear_market(holdings, weights, init="endowment")
        plain = clear_market(holdings, weights, init="endowment", accelerate=False)
        assert accelerated.converged and plain.converged
        assert accelerated.iterations <= plain.iterations
        np.testing.assert_allclose(accelerated.allocation.numpy(), plain.allocation.numpy(), atol=1e-6)
        accelerated_total, plain_total = accelerated_total + accelerated.iterations, plain_total + plain.iterations
    assert accelerated_total < 0.6 * plain_total


def test_tolerance_option_trades_accuracy_for_iterations():
    rng = np.random.default_rng(8)
    holdings, weights = random_instance(rng, 40, 3)
    loose = clear_market(holdings, weights, init="endowment", tol=1e-5)
    tight = clear_market(holdings, weights, init="endowment", tol=1e-10)
    check_feasible(loose, holdings, weights, tol=1e-5)
    check_feasible(tight, holdings, weights, tol=1e-10)
    assert loose.converged and tight.converged and loose.iterations < tight.iterations


def test_projected_gradient_and_newton_agree():
    rng = np.random.default_rng(9)
    for _ in range(10):  # all weights positive: the optimal allocation is unique
        holdings, weights = random_instance(rng, int(rng.integers(2, 61)), int(rng.integers(1, 5)))
        newton = clear_market(holdings, weights, method="newton")
        for options in ({}, {"init": "endowment"}):
            pgd = clear_market(holdings, weights, **options)
            assert pgd.method == "pgd" and newton.method == "newton" and pgd.converged and newton.converged
            np.testing.assert_allclose(pgd.allocation.numpy(), newton.allocation.numpy(), atol=1e-7)
            np.testing.assert_allclose(pgd.prices.numpy(), newton.prices.numpy(), atol=1e-8)
            # (1 + mu) and the prices are unique up to one common factor when every agent's IR binds.
            scaled = [(1.0 + r.multipliers.numpy()) / (1.0 + r.multipliers.numpy()).sum() for r in (pgd, newton)]
            np.testing.assert_allclose(*scaled, atol=1e-7)
            assert pgd.objective == pytest.approx(newton.objective, rel=1e-10)


def test_default_certifies_the_dual_start_and_polishes_a_truncated_one():
    rng = np.random.default_rng(10)
    for _ in range(5):
        holdings, weights = random_instance(rng, 30, 3)
        newton = clear_market(holdings, weights, method="newton")
        certified = clear_market(holdings, weights)  # Newton converged: nothing left to polish
        assert certified.init_iterations == newton.iterations and certified.iterations == 0
        assert certified.converged
        polished = clear_market(holdings, weights, init_max_iter=1)  # one Newton step, then PGD
        check_feasible(polished, holdings, weights)
        assert polished.init_iterations == 1 and polished.iterations > 0 and polished.converged
        np.testing.assert_allclose(polished.allocation.numpy(), newton.allocation.numpy(), atol=1e-7)


def test_closed_form_water_filling_is_an_upper_bound_and_a_fixed_point():
    rng = np.random.default_rng(12)
    for _ in range(10):
        holdings, weights = random_instance(rng, int(rng.integers(2, 41)), int(rng.integers(1, 5)))
        no_ir, no_ir_prices = water_filling(weights, holdings.sum(axis=0))
        for options in ({}, {"init": "endowment"}, {"method": "newton"}):
            # IR only constrains: the closed form's welfare bounds the market's from above.
            assert clear_market(holdings, weights, **options).objective <= utility(weights, no_ir).sum() + 1e-9
            # Starting at the closed form, nobody can gain: the market leaves it where it is.
            stay = clear_market(no_ir, weights, **options)
            check_feasible(stay, no_ir, weights)
            np.testing.assert_allclose(stay.allocation.numpy(), no_ir, atol=1e-8)
            np.testing.assert_allclose(stay.prices.numpy(), no_ir_prices, atol=1e-8)
            assert np.all(stay.multipliers.numpy() <= 1e-6)


def test_projected_gradient_warm_start_from_the_previous_step():
    rng = np.random.default_rng(13)
    holdings, weights = random_instance(rng, 40, 2)
    previous = clear_market(holdings, weights, init="endowment")
    nudged = holdings * rng.uniform(0.9, 1.1, holdings.shape)
    warm = clear_market(nudged, weights, init="endowment", warm_start=previous)
    check_feasible(warm, nudged, weights)
    assert warm.converged
    np.testing.assert_allclose(warm.allocation.numpy(), clear_market(nudged, weights).allocation.numpy(), atol=1e-7)


# ------------------------------------------------------------------------------------------------
# Economics and edge cases


def test_scarcer_good_has_higher_relative_price():
    rng = np.random.default_rng(5)
    for _ in range(10):
        holdings, weights = random_instance(rng, 40, 3)
        before = clear_market(holdings, weights).prices
        scarce = holdings.copy()
        scarce[:, 0] *= 0.3
        after = clear_market(scarce, weights).prices
        assert after[0] / after[1:].sum() > before[0] / before[1:].sum()


def test_gains_from_trade_are_realised():
    holdings = np.array([[10.0, 0.0], [0.0, 10.0]])
    weights = np.array([[0.1, 0.9], [0.9, 0.1]])  # each holds what the other wants
    result = clear_market(holdings, weights)
    assert result.objective > utility(weights, holdings).sum() + 1.0
    np.testing.assert_allclose(result.prices.numpy(), [0.5, 0.5], atol=1e-9)


def test_edge_cases_are_handled():
    holdings = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0], [4.0, 0.0, 0.0]])
    weights = np.array([[0.5, 0.2, 0.3], [0.0, 0.0, 0.0], [0.2, 0.4, 0.4]])
    result = clear_market(holdings, weights)
    check_feasible(result, holdings, weights)
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


@pytest.mark.parametrize("scale", [1e-9, 1e6])
def test_extreme_magnitudes_stay_finite_and_feasible(scale):
    rng = np.random.default_rng(11)
    for _ in range(10):
        holdings, weights = random_instance(rng, 30, 3, scale)
        result = clear_market(holdings, weights)
        check_feasible(result, holdings, weights)
        assert np.isfinite(result.objective) and torch.all(torch.isfinite(result.prices))


def test_warm_start_gives_the_same_answer_in_no_more_iterations():
    rng = np.random.default_rng(2)
    for _ in range(10):
        holdings, weights = random_instance(rng, 50, 2)
        cold = clear_market(holdings, weights)
        warm = clear_market(holdings, weights, warm_start=cold)
        assert warm.iterations <= cold.iterations
        np.testing.assert_allclose(warm.allocation.numpy(), cold.allocation.numpy(), atol=1e-7)
        # The next step's market is a perturbation of this one: still a valid start.
        nudged = holdings * rng.uniform(0.9, 1.1, holdings.shape)
        check_feasible(clear_market(nudged, weights, warm_start=cold), nudged, weights)
    other_size = clear_market(holdings[:10], weights[:10], warm_start=cold)  # N differs: ignored
    check_feasible(other_size, holdings[:10], weights[:10])


def true_diagnostics(result, holdings, weights):
    """Conservation error, IR violation, objective and KKT residual recomputed from the result alone."""
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


def test_an_early_return_from_the_dual_start_reports_true_diagnostics():
    rng = np.random.default_rng(11)
    for _ in range(10):
        holdings, weights = random_instance(rng, int(rng.integers(2, 80)), int(rng.integers(1, 5)))
        result = clear_market(holdings, weights)
        assert result.iterations == 0 and result.outer_iterations == 0 and result.init_iterations > 0
        conservation, ir_violation, objective, kkt = true_diagnostics(result, holdings, weights)
        assert result.conservation_error == pytest.approx(conservation, abs=1e-15)
        assert result.ir_violation == pytest.approx(ir_violation, abs=1e-15)
        assert result.objective == pytest.approx(objective, rel=1e-12)
        assert result.kkt_residual == pytest.approx(kkt, rel=1e-6, abs=1e-15) and result.converged
        check_feasible(result, holdings, weights)
        assert result.price_scale > 0 and result.prices.sum().item() == pytest.approx(1.0)


def test_price_warm_start_reaches_the_cold_start_optimum():
    rng = np.random.default_rng(12)
    for _ in range(10):
        num_agents, num_goods = int(rng.integers(2, 80)), int(rng.integers(1, 5))
        holdings, weights = random_instance(rng, num_agents, num_goods)
        previous = clear_market(*random_instance(rng, num_agents, num_goods))  # another market's prices
        for start in (previous, replace(previous, multipliers=torch.zeros(3))):  # N differs: prices only
            warm = clear_market(holdings, weights, warm_start=start)
            cold = clear_market(holdings, weights)
            check_feasible(warm, holdings, weights)
            assert warm.converged
            np.testing.assert_allclose(warm.allocation.numpy(), cold.allocation.numpy(), atol=1e-7)
            np.testing.assert_allclose(warm.prices.numpy(), cold.prices.numpy(), atol=1e-9)
            assert warm.objective == pytest.approx(cold.objective, rel=1e-10)
    # A result without unnormalised prices (price_scale 0, the default) falls back to water-filling.
    legacy = replace(previous, price_scale=0.0)
    check_feasible(clear_market(holdings, weights, warm_start=legacy), holdings, weights)


@pytest.mark.parametrize("num_goods", [1, 2, 3, 5])
def test_ir_multipliers_by_enumeration_and_by_sorting_agree(monkeypatch, num_goods):
    import homoecon_env.trade as trade
    rng = np.random.default_rng(13 + num_goods)
    for kind in KINDS:
        holdings, weights = degenerate_instance(rng, kind)
        holdings = np.resize(holdings, (holdings.shape[0], num_goods)) * rng.uniform(0.5, 1.5, (1, num_goods))
        weights = np.resize(weights, (weights.shape[0], num_goods)) * (rng.uniform(size=(1, num_goods)) < 0.9)
        data = trade_market._market_data(holdings.T.copy(), weights.T.copy())
        traded = data.traded
        results, responses, factors = [], [], [1.0, rng.uniform(0.3, 3.0, traded.sum())]
        for enumerate_sets in (True, False):
            monkeypatch.setattr(trade_newton, "MAX_ENUMERATED_GOODS", 8 if enumerate_sets else 0)
            monkeypatch.setattr(trade_newton, "ENUMERATION_BUDGET", 1 << 30 if enumerate_sets else 0)
            results.append(trade.clear_market(holdings, weights, method="newton"))
            if traded.any():  # the responses themselves, at prices far from and near the optimum
                with np.errstate(divide="ignore", invalid="ignore"):
                    economy = trade_newton._economy(data.weights[traded], data.supply[traded], data.endowment_utility)
                optimum = results[-1].prices.numpy()[traded] * results[-1].price_scale
                responses.append([trade_newton._respond(economy, optimum * factor) for factor in factors])
        enumerated, sorted_ = results
        assert enumerated.init_iterations == sorted_.init_iterations
        np.testing.assert_allclose(enumerated.allocation.numpy(), sorted_.allocation.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(enumerated.multipliers.numpy(), sorted_.multipliers.numpy(), rtol=1e-9, atol=1e-12)
        for by_sets, by_sorting in zip(*responses):
            np.testing.assert_allclose(by_sets.log_multipliers, by_sorting.log_multipliers, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(by_sets.allocation, by_sorting.allocation, rtol=1e-12, atol=1e-12)


def test_small_linear_solves_match_numpy():
    from homoecon_env.trade.newton import _solve_small
    rng = np.random.default_rng(14)
    for size in (1, 2, 3):
        matrix, vector = rng.normal(size=(size, size)), rng.normal(size=size)
        np.testing.assert_allclose(_solve_small(matrix, vector), np.linalg.solve(matrix, vector), rtol=1e-10)
        with pytest.raises(np.linalg.LinAlgError):
            _solve_small(np.zeros((size, size)), vector)


def test_penalty_method_runs_and_reports_its_ir_violation():
    rng = np.random.default_rng(4)
    holdings, weights = random_instance(rng, 50, 2)
    result = clear_market(holdings, weights, method="penalty")
    assert result.method == "penalty" and result.iterations == 100
    x = result.allocation.numpy()
    assert np.all(x >= 0) and result.conservation_error <= 1e-9
    honest = np.max(np.maximum(utility(weights, holdings) - utility(weights, x), 0.0))
    assert result.ir_violation == pytest.approx(honest, abs=1e-12)
    assert result.objective <= clear_market(holdings, weights).objective + 1e-9


def test_inputs_may_be_tensors_or_arrays_of_any_float_dtype():
    holdings = torch.tensor([[1.0, 2.0], [3.0, 0.5]], dtype=torch.float32)
    weights = [[0.3, 0.7], [0.6, 0.4]]
    result = clear_market(holdings, weights)
    assert isinstance(result, TradeResult)
    assert result.allocation.dtype == torch.float64 and result.multipliers.shape == (2,)


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


def test_ten_thousand_agents_clear_well_under_a_second():
    rng = np.random.default_rng(0)
    holdings, weights = random_instance(rng, 10_000, 2)
    clear_market(holdings, weights)  # warm up imports and allocator
    start = time.perf_counter()
    result = clear_market(torch.tensor(holdings), torch.tensor(weights))
    assert time.perf_counter() - start < 1.0
    assert result.converged


@pytest.mark.parametrize("broken_part", ["allocation", "prices", "multipliers"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_solver_result_falls_back_to_no_trade(monkeypatch, broken_part, bad):
    """Last line of defence: whatever a solver returns, the market never hands out NaN or inf."""
    import homoecon_env.trade as trade  # clear_market looks _solve_prices up in the package

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


# ------------------------------------------------------------------------------------------------
# Building blocks of the Newton start


def newton_state(seed=31, num_agents=40, num_goods=2):
    """An economy and the market response at prices off the optimum (some agents IR-binding)."""
    rng = np.random.default_rng(seed)
    holdings, weights = random_instance(rng, num_agents, num_goods)
    data = trade_market._market_data(holdings.T.copy(), weights.T.copy())
    economy = trade_newton._economy(data.weights, data.supply, data.endowment_utility)
    optimum = clear_market(holdings, weights)
    prices = optimum.prices.numpy() * optimum.price_scale * rng.uniform(0.9, 1.1, num_goods)
    return data, economy, trade_newton._respond(economy, prices), optimum


def test_clearing_error_counts_holders_only_near_rounding_level():
    """The error is exact; the rounding level is the exact one whenever the error could be below
    it, and otherwise a bound that the error still exceeds (all the callers compare)."""
    _, economy, market, _ = newton_state()

    def reference(market):
        x = market.allocation
        largest = x.max(axis=1)
        share = largest / ((1.0 + largest) * economy.supply)
        held = market.demand + (x > 0).sum(axis=1)
        return np.max(share * np.abs(market.excess)), 8 * np.finfo(float).eps * np.max(share * held)

    prices = market.prices
    for scale in (1.0, 1.0 + 1e-9, 1.0 + 1e-14, 1.0 + 1e-15):  # far from clearing, then near rounding
        for factor in (np.ones(2), np.array([scale, 1.0])):
            trial = trade_newton._respond(economy, prices * factor)
            error, rounding = trade_newton._clearing_error(economy, trial)
            exact_error, exact_rounding = reference(trial)
            assert error == pytest.approx(exact_error, rel=1e-12, abs=1e-300)
            if error <= exact_rounding or error <= rounding:
                assert rounding == pytest.approx(exact_rounding, rel=1e-12)
            else:
                assert error > rounding >= exact_rounding * (1 - 1e-12)
    # Demand that clears exactly: the error is 0, below rounding, and the holders are counted.
    cleared = market._replace(excess=np.zeros_like(market.excess))
    error, rounding = trade_newton._clearing_error(economy, cleared)
    assert (market.allocation > 0).sum(axis=1).min() < 40  # so that counting holders matters
    assert error == 0.0 and rounding == pytest.approx(reference(cleared)[1], rel=1e-12)


def test_newton_direction_is_the_newton_step_in_inverse_prices():
    """Against the excess demand's Jacobian by central differences: the direction is the Newton step
    p = -J^-1 excess, taken in eta = 1 / lambda (p / (1 - p / lambda)), and a descent direction."""
    for seed in range(5):
        _, economy, market, _ = newton_state(seed=40 + seed, num_goods=2 + seed % 2)
        assert np.any(market.log_multipliers > 0) and np.any(market.log_multipliers == 0)
        prices = market.prices
        jacobian = np.empty((prices.size, prices.size))
        for q in range(prices.size):
            step = np.zeros_like(prices)
            step[q] = 1e-7 * prices[q]
            up, down = trade_newton._respond(economy, prices + step), trade_newton._respond(economy, prices - step)
            jacobian[:, q] = (up.excess - down.excess) / (2 * step[q])
        newton = -np.linalg.solve(jacobian, market.excess)
        direction, slope = trade_newton._newton_direction(economy, market)
        np.testing.assert_allclose(direction, newton / (1.0 - np.minimum(newton / prices, 0.75)), rtol=1e-5)
        assert slope == pytest.approx(market.excess @ direction) and slope > 0


def test_line_search_skips_phi_only_below_its_rounding_level():
    """A step whose slope bound step * slope is below 64 eps lambda . (demand + supply) is taken
    without evaluating Phi: that bound never exceeds the rounding level Phi is compared with."""
    _, economy, market, _ = newton_state()
    for factor in (1.0, 1.05, 0.95, 1e3):
        trial = trade_newton._respond(economy, market.prices * factor)
        spending = trial.prices @ (trial.demand + economy.supply)
        bound = trade_newton._spending_rounding(economy, trial)
        assert bound == pytest.approx(64 * np.finfo(float).eps * spending, rel=1e-12)
        assert 0 < bound <= trade_newton._dual_value(economy, trial)[1]


def test_diagnostics_from_the_newton_response_match_the_general_formula():
    data, economy, off, optimum = newton_state()
    at = trade_newton._respond(economy, optimum.prices.numpy() * optimum.price_scale)
    for market, residual in ((off, 1e-6), (at, 0.0)):  # off the optimum, and at it
        assert np.any(market.log_multipliers > 0)
        x, utility = trade_market._finish(market.allocation, data, 1e-10, market.demand)
        mu = np.expm1(market.log_multipliers)
        given = trade_market._diagnostics(data, x, market.prices, mu, utility, market.marginal_ratio)
        general = trade_market._diagnostics(data, x, market.prices, mu)
        for name in given:
            assert given[name] == pytest.approx(general[name], rel=1e-6, abs=1e-14)
        assert given["kkt_residual"] > residual and (residual > 0 or given["kkt_residual"] < 1e-9)


def test_dual_start_stops_early_but_certifies_its_residual():
    """Newton stops once the clearing error is below half the IR allowance and certifies the
    repaired allocation: within tol of the KKT conditions, IR to min(0.1 tol, 1e-10), and next to
    the allocation of a much tighter solve."""
    rng = np.random.default_rng(17)
    for _ in range(10):
        holdings, weights = random_instance(rng, int(rng.integers(2, 80)), int(rng.integers(1, 4)))
        tight = clear_market(holdings, weights, tol=1e-13)
        for tol in (1e-6, 1e-9, 1e-11):
            result = clear_market(holdings, weights, tol=tol)
            check_feasible(result, holdings, weights, tol=tol)
            assert result.converged and result.iterations == 0
            assert result.ir_violation <= min(0.1 * tol, 1e-10)
            np.testing.assert_allclose(result.allocation.numpy(), tight.allocation.numpy(), atol=1e3 * tol)


def test_warm_prices_far_off_still_clear():
    """Prices a million times too high or low: at first nobody (or everybody) buys, the Hessian is
    all ridge, and the line search still brings the prices back."""
    rng = np.random.default_rng(18)
    holdings, weights = random_instance(rng, 30, 2)
    cold = clear_market(holdings, weights)
    for factor in (1e6, 1e-6):
        warm = clear_market(holdings, weights, warm_start=replace(cold, price_scale=cold.price_scale * factor))
        check_feasible(warm, holdings, weights)
        assert warm.converged
        np.testing.assert_allclose(warm.allocation.numpy(), cold.allocation.numpy(), atol=1e-7)


def test_warm_start_tensors_may_require_gradients():
    rng = np.random.default_rng(19)
    holdings, weights = random_instance(rng, 20, 2)
    previous = clear_market(holdings, weights)
    tracked = replace(previous, prices=previous.prices.clone().requires_grad_(),
                      multipliers=previous.multipliers.clone().requires_grad_())
    result = clear_market(holdings, weights, warm_start=tracked)
    assert result.converged
    np.testing.assert_allclose(result.allocation.numpy(), previous.allocation.numpy(), atol=1e-8)
