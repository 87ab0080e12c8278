"""Births, deaths and names over long rollouts (docs/design.md sections 2 and 3)."""
import numpy as np
import pytest
from conftest import random_actions_dict

import homoecon_env


def rollout(env, seed, steps, rng):
    env.reset(seed=seed)
    for t in range(1, steps + 1):
        before = list(env.agents)
        out = env.step(random_actions_dict(env, rng))
        yield t, before, out


def test_lifecycle_rules_hold_over_a_long_rollout(rng):
    n, steps = 20, 300
    env = homoecon_env.parallel_env(num_agents=n, max_steps=steps)
    seen, gone, highest = set(f"agent_{k}" for k in range(n)), set(), n - 1
    births = deaths = 0
    for t, before, (obs, rew, term, trunc, info) in rollout(env, 5, steps, rng):
        keys = set(obs)
        assert all(set(d) == keys for d in (rew, term, trunc, info))
        dead = {a for a in keys if term[a]}
        newborns = keys - set(before)
        assert set(before) <= keys, "every agent that acted is in the dicts"
        assert not keys & gone, "the dead are never revived"
        assert dead <= set(before) and all(info[a]["death_cause"] in ("age", "starvation") for a in dead)
        assert not dead & set(env.agents), "the dead leave env.agents"
        survivors = set(before) - dead
        for a in newborns:
            k = int(a.split("_")[1])
            assert a not in seen and k > highest, "names count up and are never reused"
            assert info[a]["born"] is True and rew[a] == 0.0 and not term[a] and not trunc[a]
            p = info[a]["parents"]
            assert len(p) == 2 and p[0] != p[1] and set(p) <= survivors
            assert info[a]["generation"] >= 1
        highest = max([highest] + [int(a.split("_")[1]) for a in newborns])
        assert [info[a].get("born") for a in keys - newborns] == [None] * len(keys - newborns)
        seen |= keys
        gone |= dead
        births += len(newborns)
        deaths += len(dead)
        if t < steps:
            assert len(env.agents) == n and len(newborns) == len(dead), "population is constant"
            assert set(env.agents) == survivors | newborns
            assert not any(trunc.values())
        else:
            assert env.agents == [] and not newborns, "no births on the final step"
            assert all(trunc[a] for a in keys - dead) and not any(trunc[a] for a in dead)
    assert births > 100 and deaths > 100
    assert all(a in env.possible_agents for a in seen)


def test_newborns_get_generation_from_parents(rng):
    env = homoecon_env.parallel_env(num_agents=10, max_steps=200)
    generation = {f"agent_{k}": 0 for k in range(10)}
    deepest = 0
    for _, _, (_, _, _, _, info) in rollout(env, 1, 200, rng):
        for a, i in info.items():
            if i.get("born"):
                p1, p2 = i["parents"]
                assert i["generation"] == max(generation[p1], generation[p2]) + 1
                generation[a] = i["generation"]
                deepest = max(deepest, i["generation"])
    assert deepest >= 3


def test_everyone_dies_of_age_by_max_age(rng):
    env = homoecon_env.parallel_env(num_agents=12, max_steps=60, max_age=4)
    birth_step = {a: 0 for a in env.reset(seed=0)[0]}
    initial_age = dict(zip(env.agents, env.economy.state.ages.tolist()))
    for t in range(1, 61):
        obs, rew, term, trunc, info = env.step(random_actions_dict(env, rng))
        for a in info:
            if info[a].get("born"):
                birth_step[a], initial_age[a] = t, 0
            elif term[a] and info[a]["death_cause"] == "age":
                assert initial_age[a] + t - birth_step[a] == 4
        assert (env.economy.state.ages[env.economy.state.alive] < 4).all()


def test_starvation_kills_agents_who_eat_nothing():
    env = homoecon_env.parallel_env(num_agents=6, max_steps=20)
    env.reset(seed=0)
    actions = {a: {"broadcast": np.zeros(6, np.float32), "job": 0, "effort": np.ones(1, np.float32),
                   "trade_weights": np.ones(2, np.float32), "consume": np.zeros(2, np.float32)} for a in env.agents}
    obs, rew, term, trunc, info = env.step(actions)
    causes = {info[a]["death_cause"] for a in actions if term[a]}
    assert all(term[a] for a in actions) and causes <= {"starvation", "age"} and "starvation" in causes
    assert env.last_stats["deaths_starvation"] + env.last_stats["deaths_age"] == 6
    # everyone died: the newborns are founders with fresh traits
    newborns = [a for a in info if info[a].get("born")]
    assert len(newborns) == 6 and all(info[a]["parents"] == () and info[a]["generation"] == 0 for a in newborns)
    assert env.last_stats["founders"] == 6


def test_truncation_at_max_steps_and_step_after_end_is_refused(rng):
    env = homoecon_env.parallel_env(num_agents=5, max_steps=7)
    *_, (_, _, last) = rollout(env, 0, 7, rng)  # run all 7 steps; keep the final step's output
    _, _, term, trunc, _ = last
    assert env.agents == [] and all(trunc[a] or term[a] for a in trunc)
    with pytest.raises(ValueError, match="reset"):
        env.step({})
    env.reset(seed=0)
    assert len(env.agents) == 5 and env.agents[0] == "agent_0"
