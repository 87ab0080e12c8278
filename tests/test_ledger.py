"""The goods ledger in last_stats closes on every step (docs/design.md section 3), per good:

    holdings before + produced - inputs_used - consumed - decayed - lost + founder_endowment == holdings after

Holdings are read from the state before and after each step, independently of the stats.
"""
import numpy as np
import pytest
import torch

from agents import make_learner
from homoecon_env import EconomyConfig, Job
from homoecon_env.core import Actions, Economy
from homoecon_env.scenarios import scenario_config

LEDGER = ("produced", "inputs_used", "consumed", "decayed", "lost", "founder_endowment")


def chain_config(**overrides) -> EconomyConfig:
    """A 3-good supply chain: grain from nothing, flour from grain, bread from flour and grain."""
    jobs = (Job("farm", output=(1.0, 0.0, 0.0)),
            Job("mill", output=(0.0, 0.8, 0.0), inputs=(0.5, 0.0, 0.0), phase=0.4),
            Job("bake", output=(0.0, 0.0, 1.5), inputs=(0.2, 0.6, 0.0), phase=1.1))
    return EconomyConfig(**{"resources": ("grain", "flour", "bread"), "jobs": jobs, "need": (0.2, 0.3, 1.0),
                            **overrides})


def assert_ledger_closes(economy: Economy, actions_for, steps: int) -> dict:
    """Step ``steps`` times, checking the ledger on each; returns counts of the kinds of steps seen."""
    seen = {"founder_steps": 0, "inputs_used": 0.0, "lost": 0.0, "final": 0}
    for t in range(steps):
        before = economy.state.holdings.numpy().sum(axis=0).copy()
        economy.step(actions_for(t))
        stats = economy.last_stats
        after = economy.state.holdings.numpy().sum(axis=0)
        flows = {key: np.asarray(stats[key], dtype=np.float64) for key in LEDGER}
        assert all(flows[key].shape == before.shape for key in LEDGER)
        assert all((flows[key] >= 0).all() for key in LEDGER), flows
        expected = (before + flows["produced"] - flows["inputs_used"] - flows["consumed"] - flows["decayed"]
                    - flows["lost"] + flows["founder_endowment"])
        scale = np.maximum.reduce([before, after, flows["produced"], flows["consumed"], np.ones_like(before)])
        np.testing.assert_array_less(np.abs(expected - after), 1e-9 * scale, err_msg=f"step {t + 1}")
        if stats["founders"]:
            seen["founder_steps"] += 1
            assert flows["founder_endowment"].sum() > 0
        else:
            assert (flows["founder_endowment"] == 0).all()
        seen["inputs_used"] += flows["inputs_used"].sum()
        seen["lost"] += flows["lost"].sum()
        if economy.done:
            seen["final"] += 1
            break
    return seen


def random_actions(config: EconomyConfig, seed: int, starve_every: int = 0):
    """Random actions; every ``starve_every``-th step nobody eats, so all starve and founders come."""
    g = torch.Generator().manual_seed(seed)
    n, r, f64 = config.num_agents, config.num_resources, torch.float64

    def actions_for(t: int) -> Actions:
        consume = torch.rand(n, r, generator=g, dtype=f64)
        if starve_every and t % starve_every == starve_every - 1:
            consume.zero_()
        return Actions(broadcast=torch.rand(n, config.broadcast_dim, generator=g, dtype=f64) * 2 - 1,
                       job=torch.randint(0, config.num_jobs, (n,), generator=g),
                       effort=torch.rand(n, generator=g, dtype=f64),
                       trade_weights=torch.rand(n, r, generator=g, dtype=f64), consume=consume)

    return actions_for


@pytest.mark.parametrize("seed", [0, 1])
def test_ledger_closes_on_every_step_through_mass_starvation_and_founders(seed):
    config = EconomyConfig(num_agents=12, max_steps=40, decay_rate=0.3, parent_share=0.5)
    economy = Economy(config)
    economy.reset(seed)
    seen = assert_ledger_closes(economy, random_actions(config, seed, starve_every=4), 40)
    assert seen["founder_steps"] >= 5 and seen["lost"] > 0 and seen["final"] == 1


@pytest.mark.parametrize("seed", [0, 3])
def test_ledger_closes_in_a_three_good_supply_chain(seed):
    config = chain_config(num_agents=15, max_steps=60, yield_noise=0.3, decay_rate=0.05)
    economy = Economy(config)
    economy.reset(seed)
    seen = assert_ledger_closes(economy, random_actions(config, seed, starve_every=7), 60)
    assert seen["inputs_used"] > 1.0 and seen["founder_steps"] >= 3


@pytest.mark.parametrize("policy", ["random", "scripted_chain"])
def test_ledger_closes_on_every_step_of_the_supply_chain_scenario(policy):
    """Seven goods, compound recipes: random actions (with mass starvation and founders), and the planned
    chain, whose every job uses up its inputs."""
    config = scenario_config("supply_chain", num_agents=20, max_steps=80)
    economy = Economy(config)
    economy.reset(4)
    if policy == "random":
        seen = assert_ledger_closes(economy, random_actions(config, 4, starve_every=9), 80)
        assert seen["founder_steps"] >= 3
    else:
        learner = make_learner(policy, config)  # it learns nothing and remembers nothing: act alone drives it
        seen = assert_ledger_closes(economy, lambda t: learner.act(economy.observation), 80)
        assert seen["founder_steps"] == 0
    assert seen["inputs_used"] > 20.0 and seen["final"] == 1


def test_inputs_used_match_a_hand_worked_step():
    """One miller with 2 grain and full effort at the mill's peak: 0.5 grain per unit of effort goes in,
    0.8 flour comes out; a baker with 0.1 grain and 3 flour is capped at 0.1 / 0.2 = 0.5 effort; a
    farmer holding nothing needs nothing and farms 1 grain at full effort."""
    config = chain_config(num_agents=3, yield_noise=0.0, age_effort_penalty=0.0, decay_rate=0.0,
                          jobs=(Job("mill", output=(0.0, 0.8, 0.0), inputs=(0.5, 0.0, 0.0)),
                                Job("bake", output=(0.0, 0.0, 1.5), inputs=(0.2, 0.6, 0.0)),
                                Job("farm", output=(1.0, 0.0, 0.0))))
    economy = Economy(config)
    economy.reset(0)
    economy._set_state(economy.state_arrays.replace(holdings=np.array([[2.0, 0.0, 0.0], [0.1, 3.0, 0.0], [0.0] * 3]),
                                                    ages=np.zeros(3, dtype=np.int64)))
    economy.step(Actions(broadcast=torch.zeros(3, 6, dtype=torch.float64), job=torch.tensor([0, 1, 2]),
                         effort=torch.ones(3, dtype=torch.float64), trade_weights=torch.ones(3, 3, dtype=torch.float64),
                         consume=torch.full((3, 3), 0.5, dtype=torch.float64)))
    stats = economy.last_stats
    assert stats["founders"] == 0 and stats["deaths_starvation"] == 0
    np.testing.assert_allclose(stats["inputs_used"], [0.5 + 0.5 * 0.2, 0.5 * 0.6, 0.0], rtol=1e-12)
    np.testing.assert_allclose(stats["produced"], [1.0, 0.8, 0.5 * 1.5], rtol=1e-12)
    assert (stats["decayed"] == 0).all() and (stats["founder_endowment"] == 0).all()
