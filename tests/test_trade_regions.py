"""Grouped market clearing (docs/design.md sections 4 and 13): ``clear_market(..., groups=g)`` solves
section 4's problem separately within each group (region), all groups in one call.

References independent of the solver: cvxpy's optimum and duals for each group's own market, a
hand-worked three-group market, a weak-duality certificate per group at N = 10,000, and the
contract's invariants (conservation per group and good, x >= 0, IR, no goods crossing groups).
One test compares the grouped call with the plain call on each group alone (a property between two
paths); the rest do not rely on the plain solver.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_trade_degenerate import residue_market
from trade_markets import KINDS, cvxpy_solution, degenerate_instance, dual_bound, random_instance, utility

from homoecon_env.trade import clear_market
from homoecon_env.trade import grouped as trade_grouped


def grouped_instance(rng, num_groups):
    """A random market split into ``num_groups`` groups, with the awkward cases the economy
    produces: group 0 a single agent, the last group empty (its id never used) when there are more
    than two, some agents with
    all-zero weights or holdings, a good one group does not hold at all."""
    num_agents, num_goods = int(rng.integers(3 * num_groups, 12 * num_groups)), int(rng.integers(1, 5))
    holdings, weights = random_instance(rng, num_agents, num_goods)
    groups = rng.integers(1, num_groups - 1, num_agents) if num_groups > 2 else np.ones(num_agents, dtype=np.int64)
    groups[0] = 0  # group 0: one agent
    holdings[rng.integers(0, num_agents, 2)] = 0.0
    weights[rng.integers(0, num_agents, 2)] = 0.0
    if num_goods > 1 and num_groups > 2:
        holdings[groups == 1, int(rng.integers(num_goods))] = 0.0  # a good group 1 does not hold
    return holdings, weights, groups


def check_grouped_feasible(result, holdings, weights, groups, num_groups):
    """Conservation per group and good (1e-9 relative), x >= 0, IR per agent (1e-7), no goods
    outside the group that held them, and the price rows' shape and normalisation."""
    x = result.allocation.numpy()
    assert x.shape == holdings.shape and result.allocation.dtype == torch.float64
    assert np.all(np.isfinite(x)) and np.all(x >= 0)
    for group in range(num_groups):
        members = groups == group
        supply = holdings[members].sum(axis=0)
        assert np.all(np.abs(x[members].sum(axis=0) - supply) <= 1e-9 * np.maximum(1.0, supply))
        assert np.all(x[members][:, supply == 0] == 0)  # only goods the group itself held
    assert np.all(utility(weights, x) >= utility(weights, holdings) - 1e-7)
    assert result.conservation_error <= 1e-9 and result.ir_violation <= 1e-7
    prices = result.prices.numpy()
    assert prices.shape == (num_groups, holdings.shape[1])
    finite = ~np.isnan(prices).any(axis=1)
    assert np.all(np.isnan(prices[~finite]))
    np.testing.assert_allclose(prices[finite].sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(prices[finite] >= 0)


@pytest.mark.parametrize("num_groups", [2, 3, 4, 5, 6])
def test_each_group_reaches_its_own_cvxpy_optimum(num_groups):
    rng = np.random.default_rng(100 + num_groups)
    for _ in range(3):
        holdings, weights, groups = grouped_instance(rng, num_groups)
        result = clear_market(torch.tensor(holdings), torch.tensor(weights), groups=torch.tensor(groups),
                              num_groups=num_groups)
        check_grouped_feasible(result, holdings, weights, groups, num_groups)
        assert result.converged
        x = result.allocation.numpy()
        for group in range(num_groups):
            members = groups == group
            optimum = cvxpy_solution(holdings[members], weights[members])[0] if members.any() else 0.0
            achieved = utility(weights[members], x[members]).sum()
            assert abs(achieved - optimum) <= 1e-4 * max(1.0, abs(optimum)), (group, achieved, optimum)
        assert result.objective == pytest.approx(utility(weights, x).sum(), rel=1e-12, abs=1e-12)
        if num_groups > 2:
            assert np.all(np.isnan(result.prices.numpy()[num_groups - 1]))  # the empty group


def test_group_prices_equal_the_cvxpy_conservation_duals_of_each_group():
    """Every weight positive and every good held: each group's duals are unique."""
    rng = np.random.default_rng(3)
    for _ in range(4):
        num_groups = int(rng.integers(2, 7))
        holdings, weights = random_instance(rng, 10 * num_groups, int(rng.integers(1, 5)))
        groups = np.repeat(np.arange(num_groups), 10)
        rng.shuffle(groups)
        result = clear_market(holdings, weights, groups=groups)
        for group in range(num_groups):
            members = groups == group
            lam = cvxpy_solution(holdings[members], weights[members])[2]
            np.testing.assert_allclose(result.prices.numpy()[group], lam / lam.sum(), atol=1e-4)


def test_three_groups_worked_by_hand():
    """Group 0: two agents who each value only what the other holds swap everything, and by symmetry
    price the goods equally. Group 1: one agent with weights (3/4, 1/4) and holdings (1, 3) keeps its
    holdings at prices proportional to w / (1 + x) = (3/8, 1/16), i.e. (6/7, 1/7). Group 2 holds
    nothing: its agent, who values both goods, gets nothing, and its prices are undefined (NaN), as
    are those of group 3, which is empty."""
    holdings = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 3.0], [0.0, 0.0]])
    weights = np.array([[0.0, 1.0], [1.0, 0.0], [0.75, 0.25], [0.5, 0.5]])
    for method in ("pgd", "newton"):
        result = clear_market(holdings, weights, groups=torch.tensor([0, 0, 1, 2]), num_groups=4, method=method)
        np.testing.assert_allclose(result.allocation.numpy(), [[0, 2], [2, 0], [1, 3], [0, 0]], atol=1e-9)
        prices = result.prices.numpy()
        np.testing.assert_allclose(prices[:2], [[0.5, 0.5], [6 / 7, 1 / 7]], atol=1e-9)
        assert np.all(np.isnan(prices[2:]))
        welfare = 2 * np.log(3) + 0.75 * np.log(2) + 0.25 * np.log(4)
        assert result.converged and result.objective == pytest.approx(welfare)


def test_goods_never_cross_groups_even_to_agents_who_value_them_most():
    """Group 0 holds only good 0, group 1 only good 1; every agent of group 1 values only good 0 and
    holds a little good 1 nobody in its group wants. Pooled, group 1 would buy good 0; grouped, it
    keeps its own holdings and group 0 shares good 0 among its own members."""
    rng = np.random.default_rng(5)
    holdings = np.zeros((20, 2))
    holdings[:10, 0] = rng.uniform(1, 2, 10)
    holdings[10:, 1] = rng.uniform(1, 2, 10)
    weights = np.zeros((20, 2))
    weights[:10] = rng.dirichlet([1, 1], 10)
    weights[10:, 0] = 1.0
    groups = np.repeat([0, 1], 10)
    result = clear_market(holdings, weights, groups=groups)
    x = result.allocation.numpy()
    check_grouped_feasible(result, holdings, weights, groups, 2)
    np.testing.assert_array_equal(x[10:], holdings[10:])  # nothing to trade within group 1
    assert np.all(x[:10, 1] == 0)
    assert np.all(np.isnan(result.prices.numpy()[1]))  # group 1 trades nothing: no prices
    np.testing.assert_allclose(result.prices.numpy()[0], [1.0, 0.0])  # only good 0 is priced in group 0


def test_grouped_solve_equals_each_group_cleared_alone():
    rng = np.random.default_rng(11)
    for num_groups in (2, 4, 6):
        holdings, weights, groups = grouped_instance(rng, num_groups)
        grouped = clear_market(holdings, weights, groups=groups, num_groups=num_groups)
        for group in range(num_groups):
            members = groups == group
            if not members.any():
                continue
            alone = clear_market(holdings[members], weights[members])
            achieved = utility(weights[members], grouped.allocation.numpy()[members]).sum()
            assert achieved == pytest.approx(alone.objective, rel=1e-6, abs=1e-9)
            if alone.prices.sum() > 0:
                np.testing.assert_allclose(grouped.prices.numpy()[group], alone.prices.numpy(), atol=1e-6)


def test_ten_thousand_agents_in_a_hundred_groups_are_certified_optimal_per_group():
    """Weak duality per group: any prices lambda_g >= 0 and IR multipliers mu >= 0 bound the group's
    optimum from above (trade_markets.dual_bound). The price rows are normalised, so each group's
    scale is recovered from stationarity on its largest holding: lambda_gr = (1 + mu_i) w_ir / (1 + x_ir)."""
    rng = np.random.default_rng(21)
    holdings, weights = random_instance(rng, 10_000, 2)
    groups = rng.integers(0, 100, 10_000)
    result = clear_market(torch.tensor(holdings), torch.tensor(weights), groups=torch.tensor(groups))
    check_grouped_feasible(result, holdings, weights, groups, 100)
    assert result.converged
    x, mu, prices = result.allocation.numpy(), result.multipliers.numpy(), result.prices.numpy()
    for group in range(0, 100, 7):
        members = groups == group
        xg, wg, eg, mug = x[members], weights[members], holdings[members], mu[members]
        agent, good = np.unravel_index(np.argmax(xg), xg.shape)
        scale = (1 + mug[agent]) * wg[agent, good] / (1 + xg[agent, good]) / prices[group, good]
        welfare = utility(wg, xg).sum()
        bound = dual_bound(eg, wg, prices[group] * scale, mug)
        assert welfare - 1e-9 * welfare <= bound <= welfare + 1e-6 * welfare


def test_a_warm_start_from_the_last_clearing_keeps_every_guarantee():
    rng = np.random.default_rng(8)
    holdings, weights, groups = grouped_instance(rng, 5)
    first = clear_market(holdings, weights, groups=groups, num_groups=5)
    for warm in (first, clear_market(holdings, weights)):  # a grouped result, or a plain one
        nearby = holdings * rng.uniform(0.9, 1.1, holdings.shape)
        result = clear_market(nearby, weights, groups=groups, num_groups=5, warm_start=warm)
        check_grouped_feasible(result, nearby, weights, groups, 5)
        assert result.converged


def test_one_group_gives_the_plain_market():
    rng = np.random.default_rng(2)
    holdings, weights = random_instance(rng, 40, 3)
    plain = clear_market(holdings, weights)
    grouped = clear_market(holdings, weights, groups=np.zeros(40, dtype=np.int64))
    np.testing.assert_allclose(grouped.allocation.numpy(), plain.allocation.numpy(), atol=1e-7)
    np.testing.assert_allclose(grouped.prices.numpy(), plain.prices.numpy()[None], atol=1e-8)
    assert grouped.objective == pytest.approx(plain.objective, rel=1e-10)


def test_no_agents_or_no_goods_give_empty_results():
    result = clear_market(np.zeros((0, 2)), np.zeros((0, 2)), groups=np.zeros(0, dtype=np.int64), num_groups=3)
    assert result.allocation.shape == (0, 2) and result.prices.shape == (3, 2)
    assert torch.isnan(result.prices).all() and result.converged
    result = clear_market(np.zeros((3, 0)), np.zeros((3, 0)), groups=np.array([0, 2, 2]))  # no goods
    assert result.allocation.shape == (3, 0) and result.prices.shape == (3, 0) and result.converged


@pytest.mark.parametrize("groups, num_groups, message", [
    (torch.zeros(3, dtype=torch.int64), None, "groups: shape"),
    (torch.zeros((4, 1), dtype=torch.int64), None, "groups: shape"),
    (torch.tensor([0, -1, 0, 1]), None, "groups: contains -1"),
    (torch.tensor([0, 1, 2, 3]), 3, "groups: contains 3"),
    (torch.tensor([0.0, 1.0, 0.0, 1.0]), None, "groups: dtype"),
    (np.array([0.0, 1.0, 0.0, 1.0]), None, "groups: dtype"),
    (torch.tensor([True, False, True, False]), None, "groups: dtype"),
    ([True, False, True, False], None, "groups: dtype"),
    (["a", "b", "a", "b"], None, "groups: dtype"),
    (torch.zeros(4, dtype=torch.int64), 0, "num_groups"),
    (torch.zeros(4, dtype=torch.int64), 2.0, "num_groups"),
    (torch.zeros(4, dtype=torch.int64), True, "num_groups"),
])
def test_bad_groups_raise_a_value_error_naming_the_field(groups, num_groups, message):
    holdings, weights = random_instance(np.random.default_rng(0), 4, 2)
    with pytest.raises(ValueError, match=message):
        clear_market(holdings, weights, groups=groups, num_groups=num_groups)


def test_unsupported_options_with_groups_are_refused():
    holdings, weights = random_instance(np.random.default_rng(0), 4, 2)
    for options in ({"method": "penalty"}, {"init": "endowment"}):
        with pytest.raises(ValueError, match="does not support groups"):
            clear_market(holdings, weights, groups=np.zeros(4, dtype=np.int64), **options)
    with pytest.raises(ValueError, match="num_groups"):
        clear_market(holdings, weights, num_groups=2)


@st.composite
def grouped_markets(draw):
    """Markets of 1-6 groups at scales 1e-9 to 1e6, some holdings and weights 0, agents shuffled."""
    num_groups = draw(st.integers(1, 6))
    num_goods = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    num_agents = int(rng.integers(1, 8 * num_groups + 1))
    holdings = rng.exponential(1.0, (num_agents, num_goods)) * 10.0 ** draw(st.integers(-9, 6))
    holdings *= rng.uniform(size=holdings.shape) < draw(st.floats(0.3, 1.0))
    weights = rng.uniform(size=(num_agents, num_goods)) * (rng.uniform(size=(num_agents, num_goods)) < 0.8)
    return holdings, weights, rng.integers(0, num_groups, num_agents), num_groups


@settings(max_examples=100, deadline=None)
@given(grouped_markets(), st.sampled_from(["pgd", "newton"]))
def test_grouped_trade_conserves_per_group_keeps_ir_and_never_crosses_groups(market, method):
    holdings, weights, groups, num_groups = market
    result = clear_market(holdings, weights, groups=groups, num_groups=num_groups, method=method)
    check_grouped_feasible(result, holdings, weights, groups, num_groups)
    assert result.converged == (result.kkt_residual <= 1e-9)


def test_the_batched_solve_certifies_awkward_groups_without_the_one_group_fallback(monkeypatch):
    """Groups drawn from every awkward kind of the plain tests, residue markets among them (tiny
    holdings, IR-binding agents at a corner), shuffled together: the batched Newton certifies every
    group itself (the per-group fallback, a loop over groups, is made to fail here) and each
    group's welfare meets cvxpy's optimum for that group."""
    def no_fallback(*args, **kwargs):
        raise AssertionError("a group fell back to the plain solver")

    monkeypatch.setattr(trade_grouped, "_solve_one_group", no_fallback)
    rng = np.random.default_rng(17)
    for _ in range(6):
        parts = [residue_market(rng) if rng.uniform() < 0.4 else degenerate_instance(rng, KINDS[rng.integers(6)])
                 for _ in range(int(rng.integers(2, 7)))]
        num_goods = max(part[0].shape[1] for part in parts)
        holdings = np.concatenate([np.pad(h, ((0, 0), (0, num_goods - h.shape[1]))) for h, _ in parts])
        weights = np.concatenate([np.pad(w, ((0, 0), (0, num_goods - w.shape[1]))) for _, w in parts])
        groups = np.concatenate([np.full(len(h), g) for g, (h, _) in enumerate(parts)])
        shuffle = rng.permutation(len(groups))
        holdings, weights, groups = holdings[shuffle], weights[shuffle], groups[shuffle]
        for method in ("pgd", "newton"):
            result = clear_market(holdings, weights, groups=groups, method=method)
            check_grouped_feasible(result, holdings, weights, groups, len(parts))
            assert result.converged and result.iterations <= (0 if method == "pgd" else 200)
        x = result.allocation.numpy()
        for group in range(len(parts)):
            members = groups == group
            optimum = cvxpy_solution(holdings[members], weights[members])[0]
            assert abs(utility(weights[members], x[members]).sum() - optimum) <= 1e-4 * max(1.0, abs(optimum))


@settings(max_examples=30, deadline=None)
@given(grouped_markets(), st.integers(1, 3), st.sampled_from(["newton", "pgd"]))
def test_grouped_trade_stays_feasible_when_stopped_early(market, cap, method):
    """Newton capped at 1-3 price updates leaves most groups uncertified: newton returns them as
    they are; pgd polishes them, group by group, with projected gradient, itself capped. Either way
    the result is feasible and the caps hold."""
    holdings, weights, groups, num_groups = market
    result = clear_market(holdings, weights, groups=groups, num_groups=num_groups, method=method, max_iter=cap,
                          init_max_iter=cap)
    check_grouped_feasible(result, holdings, weights, groups, num_groups)
    assert result.iterations <= cap and result.init_iterations <= cap


def test_groups_left_uncertified_by_a_capped_newton_still_reach_cvxpy_with_pgd():
    rng = np.random.default_rng(4)
    holdings, weights, groups = grouped_instance(rng, 5)
    result = clear_market(holdings, weights, groups=groups, num_groups=5, init_max_iter=1)
    assert result.converged and result.iterations > 0  # projected gradient polished some group
    x = result.allocation.numpy()
    for group in range(4):
        members = groups == group
        optimum = cvxpy_solution(holdings[members], weights[members])[0]
        assert abs(utility(weights[members], x[members]).sum() - optimum) <= 1e-4 * max(1.0, abs(optimum))
