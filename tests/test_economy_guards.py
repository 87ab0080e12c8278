"""The economy refuses to emit non-finite numbers, and says when its market stops short."""
import warnings

import numpy as np
import pytest
import torch

import homoecon_env
from homoecon_env import EconomyConfig
from homoecon_env.core import Actions, Economy, MarketNotConvergedWarning, NonFiniteStateError, consumption


def working_actions(n: int, job: int = 0) -> Actions:
    return Actions(broadcast=torch.zeros(n, 6, dtype=torch.float64), job=torch.full((n,), job),
                   effort=torch.ones(n, dtype=torch.float64), trade_weights=torch.ones(n, 2, dtype=torch.float64),
                   consume=torch.full((n, 2), 0.5, dtype=torch.float64))


def snapshot(economy):
    s = economy.state
    return (s.step, s.next_id, economy.generator.get_state().clone(), s.holdings.clone(),
            economy.observation.peers.clone())


def unchanged(before, after):
    return before[:2] == after[:2] and all(torch.equal(x, y) for x, y in zip(before[2:], after[2:]))


def inflate_meat_of_agent(monkeypatch, row: int, value: float):
    """After decay, the agent in ``row`` holds ``value`` meat: a stand-in for any way holdings could
    grow past float32 (no bounded config reaches it in a realistic run)."""
    original = consumption.decay_and_age

    def inflated(*args):
        holdings, ages = original(*args)
        holdings = holdings.copy()
        holdings[row, 1] = value
        return holdings, ages

    monkeypatch.setattr(consumption, "decay_and_age", inflated)


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul")  # inf * 0 in the test's own inf
@pytest.mark.parametrize("num_peers, value, shown", [(None, 1e39, "1e+39"), (2, np.nan, "nan"), (None, np.inf, "inf")])
def test_step_whose_holdings_leave_float32_is_refused_naming_agent_and_good_and_nothing_changes(
        monkeypatch, num_peers, value, shown):
    economy = Economy(EconomyConfig(num_agents=6, max_age=1000, num_peers=num_peers))
    economy.reset(0)
    economy.step(working_actions(6))
    before = snapshot(economy)
    inflate_meat_of_agent(monkeypatch, 4, value)
    with pytest.raises(NonFiniteStateError) as info:
        economy.step(working_actions(6))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "step 2: " in message and "agent_4's holdings of meat are " + shown in message and "float32" in message
    assert unchanged(before, snapshot(economy)), "a refused step changes nothing, the generator included"


def test_holdings_just_inside_float32_are_emitted(monkeypatch):
    economy = Economy(EconomyConfig(num_agents=6, max_age=1000))
    economy.reset(0)
    inflate_meat_of_agent(monkeypatch, 4, 3.0e38)
    out = economy.step(working_actions(6))
    assert torch.isfinite(out.observation.self_features).all()
    assert out.observation.self_features[4, 1] == np.float32(3e38)


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul")
def test_refused_step_can_be_retried_exactly_like_a_twin_that_never_saw_it(monkeypatch):
    economy, twin = Economy(EconomyConfig(num_agents=6, num_peers=3)), Economy(EconomyConfig(num_agents=6, num_peers=3))
    economy.reset(0)
    twin.reset(0)
    with monkeypatch.context() as patch:
        inflate_meat_of_agent(patch, 1, np.inf)
        with pytest.raises(NonFiniteStateError):
            economy.step(working_actions(6))
    for _ in range(3):  # sampled peers, yield noise and births all draw from the restored generator
        a, b = economy.step(working_actions(6)), twin.step(working_actions(6))
        assert torch.equal(a.reward, b.reward) and torch.equal(a.observation.peers, b.observation.peers)


def test_non_finite_reward_is_refused_naming_the_agent(monkeypatch):
    economy = Economy(EconomyConfig(num_agents=5))
    economy.reset(0)
    original = consumption.consume

    def broken(*args):
        consumed, left, reward = original(*args)
        reward = reward.copy()
        reward[3] = np.inf
        return consumed, left, reward

    monkeypatch.setattr(consumption, "consume", broken)
    before = snapshot(economy)
    with pytest.raises(NonFiniteStateError, match=r"step 1: .*agent_3's reward is inf"):
        economy.step(working_actions(5))
    assert unchanged(before, snapshot(economy))


def test_market_at_its_iteration_cap_warns_once_naming_step_and_residual():
    config = EconomyConfig(num_agents=30, max_steps=20)
    economy = Economy(config)
    economy.reset(0)
    economy.market_options = {"max_iter": 1, "init_max_iter": 1, "tol": 1e-14}
    g = torch.Generator().manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            economy.step(Actions(broadcast=torch.zeros(30, 6, dtype=torch.float64),
                                 job=torch.randint(0, 2, (30,), generator=g),
                                 effort=torch.rand(30, generator=g, dtype=torch.float64),
                                 trade_weights=torch.rand(30, 2, generator=g, dtype=torch.float64),
                                 consume=torch.rand(30, 2, generator=g, dtype=torch.float64)))
            assert not economy.last_stats["trade_converged"]
    market = [w for w in caught if issubclass(w.category, MarketNotConvergedWarning)]
    assert len(market) == 1 and issubclass(MarketNotConvergedWarning, RuntimeWarning)
    residual = economy.last_stats["trade_kkt_residual"]
    assert "step 1" in str(market[0].message) and "KKT residual" in str(market[0].message) and residual > 1e-14


def test_default_economy_clears_its_market_without_warning():
    env = homoecon_env.parallel_env(num_agents=20, max_steps=40)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    from conftest import random_actions_dict
    with warnings.catch_warnings():
        warnings.simplefilter("error", MarketNotConvergedWarning)
        while env.agents:
            env.step(random_actions_dict(env, rng))
            assert env.last_stats["trade_converged"]


def test_newborn_with_non_finite_tastes_is_refused_naming_it(monkeypatch):
    from homoecon_env.core import lifecycle
    economy = Economy(EconomyConfig(num_agents=6, max_age=1000))
    economy.reset(0)
    original = lifecycle.inherit_tastes
    monkeypatch.setattr(lifecycle, "inherit_tastes", lambda *args: original(*args) * np.nan)
    starving = Actions(**{**working_actions(6).__dict__, "consume": torch.tensor([[0.0, 0.0]] + [[0.5, 0.5]] * 5,
                                                                                dtype=torch.float64)})
    before = snapshot(economy)
    with pytest.raises(NonFiniteStateError, match=r"step 1: .*agent_6's utility weights are \[nan, nan\]"):
        economy.step(starving)  # agent_0 starves; its newborn, agent_6, would get nan tastes
    assert unchanged(before, snapshot(economy))
