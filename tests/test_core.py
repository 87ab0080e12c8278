"""Stage functions of the batched core, each tested alone, and properties of whole steps."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from homoecon_env import EconomyConfig, Job
from homoecon_env.core import Actions, Economy, consumption, lifecycle, observe, production
from homoecon_env.core.state import initial_state

F64 = torch.float64


def test_production_follows_season_noise_and_age_cap():
    config = EconomyConfig(yield_noise=0.0, age_effort_penalty=1.0, max_age=10)
    jobs = production.JobTable.from_config(config)
    holdings = np.zeros((3, 2))
    ages = np.array([0, 5, 0])
    job = np.array([1, 1, 0])
    effort = np.array([1.0, 1.0, 0.5], dtype=np.float64)
    noise = np.zeros(3, dtype=np.float64)
    after, produced, spent = production.produce(holdings, ages, job, effort, noise, jobs, 0, config)
    # t = 0: hunting (phase 0) at its peak, gathering (phase pi/2) out of season
    assert np.allclose(produced, np.array([[0, 1.0], [0, 0.5], [0, 0]], dtype=np.float64))
    assert np.allclose(spent, np.array([1.0, 0.5, 0.5], dtype=np.float64))
    t = 100  # pi/2 * t / period = pi/2: the seasons swap
    assert production.seasonal_factor(jobs, t).tolist() == pytest.approx([1.0, 0.0], abs=1e-12)


def test_season_adds_the_phase_to_the_angle():
    """At t = 50, period 100, phase pi/3 the angle is pi/4 + pi/3 = 7 pi/12, and cos^2(7 pi/12) = (2 - sqrt 3) / 4
    (a flipped phase would give cos^2(-pi/12) = (2 + sqrt 3) / 4)."""
    config = EconomyConfig(yield_noise=0.0, jobs=(Job("fish", output=(0.0, 2.0), phase=math.pi / 3),))
    jobs = production.JobTable.from_config(config)
    _, produced, _ = production.produce(np.zeros((1, 2)), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64),
                                        np.ones(1), np.zeros(1), jobs, 50, config)
    assert produced[0].tolist() == pytest.approx([0.0, 2.0 * (2 - math.sqrt(3)) / 4], rel=1e-12)
    sin, cos = production.season_features(jobs, 50)
    expected = ((math.sqrt(6) + math.sqrt(2)) / 4, -(math.sqrt(6) - math.sqrt(2)) / 4)  # sin, cos of 105 degrees
    assert (sin, cos) == pytest.approx(expected, rel=1e-12)


def test_effort_cap_raises_the_remaining_life_share_to_the_age_penalty():
    """Cap (1 - age / max_age) ** age_effort_penalty by hand, with a penalty other than 1."""
    config = EconomyConfig(yield_noise=0.0, age_effort_penalty=0.5, max_age=10)
    jobs = production.JobTable.from_config(config)
    ages = np.array([0, 6, 9, 10])
    _, produced, spent = production.produce(np.zeros((4, 2)), ages, np.ones(4, dtype=np.int64), np.full(4, 0.8),
                                            np.zeros(4), jobs, 0, config)  # hunting at its peak at t = 0
    expected = [0.8, 0.8 * math.sqrt(0.4), 0.8 * math.sqrt(0.1), 0.0]
    assert spent.tolist() == pytest.approx(expected, rel=1e-12)
    assert produced[:, 1].tolist() == pytest.approx(expected, rel=1e-12)


def test_starvation_needs_strictly_less_than_min_consumption():
    """need . consumed exactly at min_consumption is enough to live; just below it is not."""
    config = EconomyConfig(max_age=10, min_consumption=0.5)
    need = np.array([1.0, 2.0])
    consumed = np.array([[0.25, 0.125], [0.5, 0.0], [0.0, 0.25], [0.25, 0.12499999], [0.0, 0.0]])  # exact in binary
    causes = lifecycle.death_causes(np.zeros(5, dtype=np.int64), consumed, config, need)
    assert causes.tolist() == [lifecycle.ALIVE, lifecycle.ALIVE, lifecycle.ALIVE, lifecycle.STARVATION,
                               lifecycle.STARVATION]


def test_yield_noise_is_lognormal_with_mean_one():
    config = EconomyConfig(yield_noise=0.5)
    jobs = production.JobTable.from_config(config)
    n = 200_000
    noise = np.random.default_rng(0).standard_normal(n)
    _, produced, _ = production.produce(np.zeros((n, 2)), np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64),
                                        np.ones(n, dtype=np.float64), noise, jobs, 0, config)
    assert produced[:, 1].mean() == pytest.approx(1.0, rel=0.01)
    assert np.log(produced[:, 1]).std() == pytest.approx(0.5, rel=0.01)


def test_a_job_s_own_yield_noise_overrides_the_economy_s():
    config = EconomyConfig(yield_noise=0.5, jobs=(Job("steady", output=(1.0, 0.0), yield_noise=0.0),
                                                  Job("risky", output=(0.0, 1.0))))
    jobs = production.JobTable.from_config(config)
    noise = np.array([1.5, 1.5])
    _, produced, _ = production.produce(np.zeros((2, 2)), np.zeros(2, dtype=np.int64), np.array([0, 1]), np.ones(2),
                                        noise, jobs, 0, config)  # t = 0: both jobs at phase 0, the peak
    assert produced[0, 0] == pytest.approx(1.0) and produced[1, 1] == pytest.approx(math.exp(0.5 * 1.5 - 0.125))


def test_inputs_cap_effort_and_are_used_up():
    config = EconomyConfig(yield_noise=0.0, age_effort_penalty=0.0,
                           jobs=(Job("cook", output=(0.0, 2.0), inputs=(1.0, 0.0)),))
    jobs = production.JobTable.from_config(config)
    holdings = np.array([[0.25, 0.0], [3.0, 0.0]], dtype=np.float64)
    after, produced, spent = production.produce(holdings, np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64),
                                                np.ones(2, dtype=np.float64), np.zeros(2, dtype=np.float64),
                                                jobs, 0, config)
    assert spent.tolist() == [0.25, 1.0]
    assert after.tolist() == [[0.0, 0.5], [2.0, 2.0]]


def test_reward_is_cobb_douglas_like_plus_rest_bonus():
    config = EconomyConfig(max_consume=1.0, rest_bonus=0.1)
    holdings = np.array([[3.0, 8.0]], dtype=np.float64)
    consumed, left, reward = consumption.consume(holdings, np.array([[1.0, 0.5]], dtype=np.float64),
                                                 np.array([[0.5, 0.5]], dtype=np.float64),
                                                 np.array([0.4], dtype=np.float64), config)
    assert consumed.tolist() == [[3.0, 4.0]] and left.tolist() == [[0.0, 4.0]]
    assert reward.item() == pytest.approx(math.sqrt(4 * 5) - 1 + 0.1 * 0.6)
    capped, _, _ = consumption.consume(holdings, np.ones((1, 2)), np.ones((1, 2)) / 2,
                                       np.zeros(1, dtype=np.float64), EconomyConfig(max_consume=0.5))
    assert capped.tolist() == [[1.5, 4.0]]


def test_each_agent_is_rewarded_for_its_own_consumption_and_ages_one_step():
    config = EconomyConfig(max_consume=1.0, rest_bonus=0.0, decay_rate=0.25)
    holdings = np.array([[3.0, 0.0], [0.0, 8.0]])
    consumed, left, reward = consumption.consume(holdings, np.array([[1.0, 0.0], [0.0, 0.5]]),
                                                 np.array([[1.0, 0.0], [0.5, 0.5]]), np.ones(2), config)
    assert reward.tolist() == pytest.approx([3.0, math.sqrt(5.0) - 1.0], rel=1e-12)  # (1 + 3) - 1; sqrt(1 + 4) - 1
    decayed, ages = consumption.decay_and_age(left, np.array([0, 4]), config)
    assert decayed.tolist() == [[0.0, 0.0], [0.0, 3.0]] and ages.tolist() == [1, 5]


def test_death_causes_prefer_age_and_detect_starvation():
    config = EconomyConfig(max_age=5, min_consumption=0.1)
    need = np.array([1.0, 1.0], dtype=np.float64)
    ages = np.array([5, 2, 2, 6])
    consumed = np.array([[1.0, 1.0], [0.04, 0.05], [0.05, 0.06], [0.0, 0.0]], dtype=np.float64)
    assert lifecycle.death_causes(ages, consumed, config, need).tolist() == [lifecycle.AGE, lifecycle.STARVATION,
                                                                          lifecycle.ALIVE, lifecycle.AGE]


def test_bequest_splits_among_living_children_and_counts_the_rest_lost():
    holdings = np.array([[4.0, 2.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [0.0, 0.0]], dtype=np.float64)
    agent_ids = np.array([10, 11, 12, 13, 14, 15])
    dead = np.array([True, False, False, False, True, True])
    # 12 and 13 are children of 10; 15 (dead itself) is a child of 14, which has no living child
    parent_ids = np.array([[-1, -1], [-1, -1], [10, 11], [11, 10], [-1, -1], [14, 11]])
    parent_slots = np.array([[-1, -1], [-1, -1], [0, 1], [1, 0], [-1, -1], [4, 1]])
    kept, lost = lifecycle.bequeath(holdings, dead, agent_ids, parent_ids, parent_slots)
    assert kept.tolist() == [[0, 0], [1, 1], [2, 1], [2, 1], [0, 0], [0, 0]]
    assert lost.tolist() == [5.0, 5.0]
    # a parent that died in an earlier step left its row to someone else: that row's death is not the parent's
    agent_ids_later = np.array([20, 11, 12, 13, 14, 15])  # agent 10's row now holds agent 20
    kept, lost = lifecycle.bequeath(holdings, dead, agent_ids_later, parent_ids, parent_slots)
    assert kept.tolist() == [[0, 0], [1, 1], [0, 0], [0, 0], [0, 0], [0, 0]]
    assert lost.tolist() == [9.0, 7.0]


def test_reproduction_conserves_goods_and_fills_dead_slots():
    config = EconomyConfig(num_agents=30, parent_share=0.3)
    g = torch.Generator().manual_seed(0)
    state = initial_state(config, g).replace(lifetime_reward=np.random.default_rng(0).random(30), step=3)
    dead = np.zeros(30, dtype=bool)
    dead[[1, 4, 5, 20, 29]] = True
    state = state.replace(holdings=np.where(dead[:, None], 0.0, state.holdings))
    new, births = lifecycle.reproduce(state, dead, True, g, config)
    assert np.array_equal(births.born, dead)
    assert new.holdings.sum(0).tolist() == pytest.approx(state.holdings.sum(0).tolist(), rel=1e-12)
    assert (new.holdings >= 0).all() and new.alive.all()
    assert new.agent_ids[dead].tolist() == [30, 31, 32, 33, 34] and new.next_id == 35
    parents = births.parent_slots[dead]
    assert (parents[:, 0] != parents[:, 1]).all() and not dead[parents].any()
    assert np.allclose(new.utility_weights.sum(1), np.ones(30, dtype=np.float64))
    assert (new.ages[dead] == 0).all() and (new.lifetime_reward[dead] == 0).all()


def test_fitter_agents_are_drawn_as_parents_more_often():
    fitness = np.array([0.0, 1.0, 2.0, 10.0], dtype=np.float64)
    picks = lifecycle.draw_parents(fitness, np.ones(4, dtype=bool), np.random.default_rng(0).random((20000, 2)))
    assert (picks[:, 0] != picks[:, 1]).all()
    counts = np.bincount(picks.reshape(-1), minlength=4)
    assert counts[3] > counts[2] > counts[1] > counts[0]


def test_mutation_has_the_configured_scale():
    config = EconomyConfig(mutation=0.1)
    rng = np.random.default_rng(1)
    parent = np.full((20000, 2), 0.5)
    blend, noise = rng.random((20000, 1)), rng.standard_normal((20000, 2))
    child = lifecycle.inherit_tastes(np.stack([parent, parent], axis=1), blend, noise, config)
    log_ratio = np.log(child[:, 0] / child[:, 1])  # difference of two N(0, 0.1^2) draws
    assert log_ratio.std() == pytest.approx(0.1 * math.sqrt(2), rel=0.03)
    homogeneous = lifecycle.inherit_tastes(np.stack([parent, parent], axis=1), blend, noise,
                                           EconomyConfig(heterogeneous_tastes=False))
    assert np.array_equal(homogeneous, parent)


def test_children_born_in_one_step_mutate_independently():
    """Every parent has tastes (0.5, 0.5): each child's log taste ratio is the difference of its own two
    N(0, 0.1^2) draws, std 0.1 * sqrt(2) across the 300 children (a 25% band: about 6 standard errors)."""
    config = EconomyConfig(num_agents=400, mutation=0.1)
    g = torch.Generator().manual_seed(2)
    state = initial_state(config, g)
    state = state.replace(utility_weights=np.full((400, 2), 0.5), lifetime_reward=np.ones(400))
    dead = np.arange(400) < 300
    new, _ = lifecycle.reproduce(state.replace(holdings=np.where(dead[:, None], 0.0, state.holdings)), dead, True,
                                 g, config)
    log_ratio = np.log(new.utility_weights[dead, 0] / new.utility_weights[dead, 1])
    assert log_ratio.std() == pytest.approx(0.1 * math.sqrt(2), rel=0.25)


def test_child_tastes_blend_the_parents_by_the_drawn_weight():
    config = EconomyConfig(mutation=0.1)
    parents = np.array([[[0.9, 0.1], [0.2, 0.8]]] * 3)  # [3 children, 2 parents, R]
    blend = np.array([[1.0], [0.0], [0.25]])
    child = lifecycle.inherit_tastes(parents, blend, np.zeros((3, 2)), config)  # no mutation noise
    np.testing.assert_allclose(child, [[0.9, 0.1], [0.2, 0.8], [0.375, 0.625]], rtol=1e-9)


@pytest.mark.parametrize("n, k", [(50, 49), (200, 16), (30, 20), (10_000, 32)])
def test_sampled_peers_are_distinct_others(n, k):
    g = torch.Generator().manual_seed(0)
    peers = observe.sample_peers(n, k, g) if k < n - 1 else observe.everyone_else(n, k)
    assert peers.shape == (n, k)
    assert not (peers == torch.arange(n)[:, None]).any()
    ordered = peers.sort(dim=1).values
    assert not (ordered[:, 1:] == ordered[:, :-1]).any()
    assert peers.min() >= 0 and peers.max() < n


def random_actions(n, config, g):
    return Actions(broadcast=torch.rand(n, config.broadcast_dim, generator=g, dtype=F64) * 2 - 1,
                   job=torch.randint(0, config.num_jobs, (n,), generator=g),
                   effort=torch.rand(n, generator=g, dtype=F64),
                   trade_weights=torch.rand(n, config.num_resources, generator=g, dtype=F64),
                   consume=torch.rand(n, config.num_resources, generator=g, dtype=F64))


def test_actions_of_any_float_dtype_step_like_their_float64_values():
    """bfloat16 (autocast), float32 and float64 actions are the same actions once widened."""
    config = EconomyConfig(num_agents=12, max_steps=50)
    low, wide = Economy(config), Economy(config)
    low.reset(4)
    wide.reset(4)
    g = torch.Generator().manual_seed(4)
    for dtype in (torch.bfloat16, torch.float32, torch.bfloat16):
        actions = random_actions(12, config, g)
        narrow = Actions(**{f: getattr(actions, f) if f == "job" else getattr(actions, f).to(dtype)
                            for f in ("broadcast", "job", "effort", "trade_weights", "consume")})
        widened = Actions(**{f: getattr(narrow, f) if f == "job" else getattr(narrow, f).double()
                             for f in ("broadcast", "job", "effort", "trade_weights", "consume")})
        a, b = low.step(narrow), wide.step(widened)
        assert torch.equal(a.reward, b.reward) and torch.equal(low.state.holdings, wide.state.holdings)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), seed=st.integers(0, 10_000), resources=st.integers(1, 4), steps=st.integers(1, 4))
def test_steps_conserve_goods_keep_holdings_nonnegative_and_trade_is_rational(n, seed, resources, steps):
    names = tuple(f"good{r}" for r in range(resources))
    jobs = tuple(Job(f"job{r}", output=tuple(float(q == r) for q in range(resources)), phase=0.3 * r)
                 for r in range(resources))
    config = EconomyConfig(num_agents=n, resources=names, jobs=jobs, need=(1.0,) * resources, max_steps=50)
    economy = Economy(config)
    economy.reset(seed)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        before_total = economy.state.holdings.sum(0).numpy()
        out = economy.step(random_actions(n, config, g))
        stats = economy.last_stats
        assert (out.trade.allocation >= 0).all() and (economy.state.holdings >= 0).all()
        assert stats["trade_conservation_error"] <= 1e-9 and stats["trade_ir_violation"] <= 1e-7
        np.testing.assert_allclose(stats["totals"], before_total + stats["produced"], rtol=1e-9, atol=1e-12)
        # every good is accounted for: eaten, decayed, lost, or still held; founders bring their own
        expected = (stats["totals"] - stats["consumed"]) * (1 - config.decay_rate) - stats["lost"] \
            + stats["founder_endowment"]
        np.testing.assert_allclose(economy.state.holdings.sum(0).numpy(), expected, rtol=1e-9, atol=1e-12)
        assert torch.isfinite(out.reward).all()
        if economy.done:
            break


def test_trade_in_a_step_is_individually_rational_for_every_agent():
    config = EconomyConfig(num_agents=40)
    economy = Economy(config)
    economy.reset(0)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        actions = random_actions(40, config, g)
        out = economy.step(actions)
        endowment = out.pre_trade.numpy()  # what each agent brought to the market
        weights = actions.trade_weights.numpy()
        w = weights / weights.sum(axis=1, keepdims=True)  # the trade objective's weights, by hand
        gain = (w * np.log1p(out.trade.allocation.numpy())).sum(1) - (w * np.log1p(endowment)).sum(1)
        assert gain.min() >= -1e-7
        np.testing.assert_allclose(out.trade.allocation.sum(0).numpy(), endowment.sum(0), rtol=1e-9)
