"""The positive control (docs/design.md section 11): booms, scouts, peers' last job, and what listening is worth."""
import math

import numpy as np
import pytest
import torch
from pettingzoo.test import parallel_api_test

from agents.scripted import ScriptedIgnorer, ScriptedListener
from homoecon_env import EconomyConfig, parallel_env
from homoecon_env.config import Job
from homoecon_env.core import Actions, Economy
from homoecon_env.core.signals import is_scout, next_boom
from homoecon_env.scenarios import scenario_config
from homoecon_env.slot_env import slot_parallel_env
from tests.test_env_api import strict

FLAT = 1e9  # a season period no episode reaches: the season factor stays cos^2(~0) = 1


def flat_jobs(count):
    return tuple(Job(f"ground_{k}", output=(0.5, 0.5), period=FLAT) for k in range(count))


def signal_config(**overrides):
    base = dict(num_agents=6, jobs=flat_jobs(3), private_signals=True, boom_multiplier=4.0, boom_switch=0.0,
                scout_fraction=0.5, yield_noise=0.0, age_effort_penalty=0.0, max_steps=30)
    return EconomyConfig(**{**base, **overrides})


def fixed_actions(n, job, r=2, b=6):
    return Actions(broadcast=torch.zeros(n, b), job=torch.as_tensor(job), effort=torch.ones(n),
                   trade_weights=torch.zeros(n, r), consume=torch.full((n, r), 0.5))


def test_the_boom_moves_to_another_job_exactly_when_the_first_draw_is_below_boom_switch():
    config = signal_config(jobs=flat_jobs(4), boom_switch=0.1)
    assert next_boom(2, np.array([0.1, 0.0]), config) == 2  # not below: stays
    assert next_boom(2, np.array([0.5, 0.7]), config) == 2
    assert next_boom(2, np.array([0.05, 0.0]), config) == 3  # (2 + 1 + floor(0 * 3)) mod 4
    assert next_boom(2, np.array([0.05, 0.5]), config) == 0  # (2 + 1 + 1) mod 4
    assert next_boom(2, np.array([0.05, 0.999]), config) == 1  # (2 + 1 + 2) mod 4: never the job it left


def test_booms_switch_at_the_configured_rate_and_never_to_the_same_job():
    economy = Economy(signal_config(num_agents=2, boom_switch=0.25, max_steps=2000, min_consumption=0.0))
    economy.reset(seed=3)
    booms = [economy.state.boom]
    for _ in range(2000):
        economy.step(fixed_actions(2, [0, 1]))
        booms.append(economy.state.boom)
    booms = np.array(booms)
    moved = booms[1:] != booms[:-1]
    assert abs(moved.mean() - 0.25) < 0.04  # binomial sd 0.01 over 2000 steps
    assert set(np.unique(booms)) == {0, 1, 2}
    # from each job the boom moves to each of the two others about equally often
    for job in range(3):
        targets = booms[1:][moved & (booms[:-1] == job)]
        assert job not in targets and abs((targets == (job + 1) % 3).mean() - 0.5) < 0.15


def test_the_boom_job_yields_boom_multiplier_times_the_others_at_the_same_effort():
    economy = Economy(signal_config(num_agents=3))
    economy.reset(seed=1)
    boom = economy.state.boom
    jobs = [boom, (boom + 1) % 3, (boom + 2) % 3]
    economy.step(fixed_actions(3, jobs))
    # no noise, flat seasons, effort 1, no age cap: output (0.5, 0.5) per worker, times 4 in the boom job
    assert economy.last_stats["produced"].tolist() == pytest.approx([0.5 * (4.0 + 1.0 + 1.0)] * 2)


def test_each_agent_produces_by_its_own_job_and_the_boom_in_force_at_that_step():
    config = signal_config(num_agents=2, boom_switch=1.0)  # the boom moves every step
    economy = Economy(config)
    economy.reset(seed=5)
    for _ in range(6):
        boom = economy.state.boom  # what scouts were shown: in force at this production
        holdings = economy.state.holdings.clone()
        out = economy.step(fixed_actions(2, [boom, (boom + 1) % 3]))
        gained = (out.pre_trade - holdings).numpy()  # [2, R]
        assert gained[0].tolist() == pytest.approx([2.0, 2.0]) and gained[1].tolist() == pytest.approx([0.5, 0.5])
        assert economy.state.boom != boom  # boom_switch = 1: it always moves


def test_scouts_see_the_boom_the_others_see_zeros_and_everyone_sees_peers_last_jobs():
    config = signal_config(num_agents=8, scout_fraction=0.5)
    economy = Economy(config)
    obs = economy.reset(seed=2)
    ids = economy.state.id_vectors.numpy()
    scout = ids[:, 0] > 0.0  # threshold 1 - 2 * 0.5
    assert (is_scout(ids, config) == scout).all() and scout.any() and (~scout).any()
    own = obs.self_features.numpy()
    expected = np.zeros((8, 3), dtype=np.float32)
    expected[scout, economy.state.boom] = 1.0
    assert (own[:, -3:] == expected).all()
    assert (obs.peers.numpy()[:, :, 10:13] == 0).all()  # nobody has worked yet: job -1
    jobs = [k % 3 for k in range(8)]
    out = economy.step(fixed_actions(8, jobs))
    peers, rows, born = out.observation.peers.numpy(), out.observation.peer_index.numpy(), out.births.born.numpy()
    assert born.any() and (~born).any()  # founders' ages are spread: some died of age, newborns took their rows
    b, d, r = config.broadcast_dim, config.id_dim, config.num_resources
    for i in range(8):
        for k, row in enumerate(rows[i]):  # a newborn has not worked yet: zeros
            expected = np.zeros(3) if born[row] else np.eye(3)[jobs[row]]
            assert peers[i, k, b + d:b + d + 3].tolist() == expected.tolist()
            assert peers[i, k, -r:].tolist() == pytest.approx(economy.state.holdings[row].tolist())  # holdings last


def test_scout_fraction_sets_the_share_of_scouts_among_founders_and_newborns():
    config = signal_config(num_agents=4000, scout_fraction=0.2)
    economy = Economy(config)
    economy.reset(seed=0)
    assert abs(is_scout(economy.state.id_vectors.numpy(), config).mean() - 0.2) < 0.03  # sd 0.006
    config = signal_config(num_agents=200, scout_fraction=0.2, max_steps=40)
    economy, newborn_ids = Economy(config), []
    economy.reset(seed=0)
    for _ in range(40):  # max_age 10: about 20 births a step
        out = economy.step(fixed_actions(200, torch.zeros(200, dtype=torch.long)))
        newborn_ids.append(economy.state.id_vectors.numpy()[out.births.born.numpy()])
    newborn_ids = np.concatenate(newborn_ids)
    assert len(newborn_ids) > 500
    assert abs(is_scout(newborn_ids, config).mean() - 0.2) < 0.05  # sd 0.015


def test_switching_signals_off_leaves_the_seed_economy_bit_for_bit_whatever_the_signal_settings():
    plain = parallel_env(num_agents=10, max_steps=25)
    inert = parallel_env(num_agents=10, max_steps=25, boom_multiplier=9.0, boom_switch=0.7, scout_fraction=1.0)
    for env in (plain, inert):
        env.reset(seed=11)
    assert plain.observation_space("agent_0") == inert.observation_space("agent_0")
    assert plain.observation_space("agent_0")["self"].shape == (20,)
    assert plain.observation_space("agent_0")["peers"].shape == (9, 12)
    rng = np.random.default_rng(0)
    while plain.agents:
        actions = {a: plain.action_space(a).sample() for a in plain.agents}
        for a in actions:
            actions[a]["job"] = int(rng.integers(2))
        one, two = plain.step(actions), inert.step(actions)
        assert one[1] == two[1] and plain.state().tobytes() == inert.state().tobytes()
        assert plain.economy.state.boom == inert.economy.state.boom == -1


def test_bad_signal_settings_are_refused_naming_the_field():
    for field, value in (("boom_switch", 1.5), ("scout_fraction", -0.1), ("boom_multiplier", math.nan),
                         ("private_signals", 1)):
        with pytest.raises(ValueError, match=field):
            EconomyConfig(**{field: value})
    with pytest.raises(ValueError, match="private_signals needs at least 2 jobs"):
        EconomyConfig(private_signals=True, jobs=(Job("only", output=(1.0, 1.0)),))


def test_the_scenarios_spaces_pass_pettingzoos_parallel_api_test_named_and_slot_view():
    strict(lambda: parallel_api_test(parallel_env(scenario="private_signals", num_agents=10, max_steps=40),
                                     num_cycles=100))
    strict(lambda: parallel_api_test(slot_parallel_env(scenario="private_signals", num_agents=10, max_steps=40),
                                     num_cycles=100))
    env = parallel_env(scenario="private_signals")
    c = env.config
    space = env.observation_space("agent_0")
    assert space["self"].shape == (2 * c.num_resources + 2 + c.broadcast_dim + c.id_dim + 3 * c.num_jobs,)
    assert space["peers"].shape == (c.num_peers, c.broadcast_dim + c.id_dim + c.num_jobs + c.num_resources)


def test_a_resumed_economy_continues_its_boom_bit_exactly():
    config = signal_config(boom_switch=0.3)
    first, second = Economy(config), Economy(config)
    first.reset(seed=4)
    for _ in range(5):
        first.step(fixed_actions(6, [0, 1, 2, 0, 1, 2]))
    second.load_state_dict(first.state_dict())
    assert second.state.boom == first.state.boom
    for _ in range(10):
        a = first.step(fixed_actions(6, [0, 1, 2, 0, 1, 2]))
        b = second.step(fixed_actions(6, [0, 1, 2, 0, 1, 2]))
        assert first.state.boom == second.state.boom and torch.equal(a.reward, b.reward)


def mean_reward(learner_class, seed, steps=150):
    config = scenario_config("private_signals", max_steps=steps)
    economy, learner = Economy(config), learner_class(config, None)
    observation, total = economy.reset(seed=seed), 0.0
    for _ in range(steps):
        out = economy.step(learner.act(observation))
        observation, total = out.observation, total + float(out.reward.mean())
    return total / steps


def test_listening_to_scouts_earns_clearly_more_than_the_best_policy_that_ignores_peers():
    # measured over seeds 0-2 and 300 steps: listener 1.30, ignorer 0.90 mean reward per agent per step
    listener, ignorer = mean_reward(ScriptedListener, 7), mean_reward(ScriptedIgnorer, 7)
    assert listener > ignorer + 0.2, (listener, ignorer)


def test_the_scripted_listener_follows_the_majority_of_scouts_among_its_peers():
    config = signal_config(num_agents=5, num_peers=4, scout_fraction=0.5)
    listener = ScriptedListener(config, None)
    economy = Economy(config)
    obs = economy.reset(seed=0)
    b, d = config.broadcast_dim, config.id_dim
    peers = obs.peers.clone()
    peers[:, :, b] = torch.tensor([0.9, 0.8, 0.7, -0.5])  # three scouts (id0 > 0), one not
    peers[:, :, b + d:b + d + 3] = torch.tensor([[0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1.0]])
    own = obs.self_features.clone()
    own[:, -3:] = 0.0  # nobody is a scout itself
    job = listener.choose_job(type(obs)(own, peers, torch.ones(5, 4), obs.peer_index))
    assert job.tolist() == [1] * 5  # two scouts say job 1, one job 0; the non-scout's job 2 does not count


# -- the learning fixes (LearnerConfig.horizon_baseline, inherit_optimizer) ----------------------------
def test_the_horizon_baseline_gives_zero_advantage_to_constant_rewards_where_one_baseline_does_not():
    from agents.policy_gradient import advantages, discount_matrix
    reward = torch.ones(1, 3, dtype=torch.float64)
    valid, counts = torch.ones(1, 3, dtype=torch.bool), torch.tensor([3])
    discount = discount_matrix(3, 0.5)  # returns 1.75, 1.5, 1: the steps left h_t, times reward 1
    fresh = (torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.int64), 0.9)
    returns, mean, used, advantage = advantages(reward, valid, counts, discount, *fresh, horizon=True)
    assert returns.tolist() == [[1.75, 1.5, 1.0]] and mean.tolist() == [1.0] and advantage.abs().max() == 0
    _, _, _, one_baseline = advantages(reward, valid, counts, discount, *fresh)  # baseline 4.25 / 3 for all
    assert one_baseline[0].tolist() == pytest.approx([1.75 - 4.25 / 3, 1.5 - 4.25 / 3, 1.0 - 4.25 / 3])
    # a learned per-step baseline of 2 (EMA 0.2 after one update with decay 0.9): A_t = G_t - 2 h_t
    _, _, used, advantage = advantages(reward, valid, counts, discount, torch.tensor([0.2], dtype=torch.float64),
                                       torch.tensor([1]), 0.9, horizon=True)
    assert used.tolist() == pytest.approx([2.0]) and advantage[0].tolist() == pytest.approx([-1.75, -1.5, -1.0])


def test_with_inherit_optimizer_a_newborn_takes_the_mean_of_its_parents_adam_state():
    from agents import LearnerConfig
    from agents.reinforce import ReinforceLearner
    from homoecon_env.core.lifecycle import Births
    config = scenario_config("private_signals", num_agents=12)
    learner = ReinforceLearner(config, LearnerConfig(inherit_optimizer=True))
    for moments in learner.optimizer._moments:  # distinct, recognisable state per row
        moments.copy_(torch.arange(moments.numel(), dtype=moments.dtype).view_as(moments) + 1.0)
    learner.optimizer.steps.copy_(torch.arange(12, dtype=torch.float32) * 3)
    moments = [m.clone() for m in learner.optimizer._moments]
    born = torch.zeros(12, dtype=torch.bool)
    born[[0, 4, 9]] = True
    slots = torch.full((12, 2), -1, dtype=torch.long)
    slots[0], slots[4], slots[9] = torch.tensor([2, 7]), torch.tensor([0, 7]), torch.tensor([-1, -1])
    learner.on_births(Births(born, slots, 1))  # row 0 is both a newborn and row 4's parent
    for before, after in zip(moments, learner.optimizer._moments):
        assert torch.equal(after[:, 4], (before[:, 0] + before[:, 7]) / 2)  # row 0's state before the births
        assert torch.equal(after[:, 0], (before[:, 2] + before[:, 7]) / 2)
        assert bool((after[:, 9] == 0).all()) and torch.equal(after[:, 1], before[:, 1])  # founder; untouched
    assert learner.optimizer.steps[[0, 4, 9, 1]].tolist() == [21.0, 21.0, 0.0, 3.0]  # the larger parent's count
    plain = ReinforceLearner(config, LearnerConfig())
    plain.optimizer._moments[0].fill_(1.0)
    plain.on_births(Births(born, slots, 1))
    assert bool((plain.optimizer._moments[0][:, [0, 4, 9]] == 0).all())  # default: fresh state, as before


def test_the_report_shows_the_positive_control_only_where_it_was_measured():
    from homoecon_env.diagnostics.analysis import compare
    from homoecon_env.diagnostics.report import positive_control_section
    outcome = lambda reward: {"mean_reward": reward, "gini": 0.1, "specialization": 0.5, "trade_volume": 3.0}  # noqa: E731
    arms = {"listener": [outcome(1.3), outcome(1.4), outcome(1.35)],
            "ignorer": [outcome(0.9), outcome(1.0), outcome(0.95)]}
    text = "\n".join(positive_control_section({"positive_control": compare(arms, "listener", "ignorer")},
                                              {"horizon_baseline": True, "inherit_optimizer": True}))
    assert "### Positive control" in text and "| mean reward (per agent per step) | 1.35 ± " in text
    assert "| 0.4 ± 0 | listener higher |" in text  # the paired differences are all 0.4
    assert "`horizon_baseline` and `inherit_optimizer`" in text
    three = "\n".join(positive_control_section({"positive_control": compare(arms, "listener", "ignorer")},
                                               {"horizon_baseline": True, "inherit_optimizer": True,
                                                "attention_sink": True}))
    assert "`horizon_baseline`, `inherit_optimizer` and `attention_sink`" in three
    four = "\n".join(positive_control_section({"positive_control": compare(arms, "listener", "ignorer")},
                                              {"horizon_baseline": True, "inherit_optimizer": True,
                                               "mean_context": True, "entropy_coef": 0.01}))
    assert "`horizon_baseline`, `inherit_optimizer` and `mean_context`" in four
    assert positive_control_section({"social_filter": {}}, {}) == []
