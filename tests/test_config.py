"""EconomyConfig: frozen, validated, with errors naming the field and range."""
import dataclasses
import math

import pytest

from homoecon_env import EconomyConfig, Job, parallel_env


def test_defaults_reproduce_the_seed():
    c = EconomyConfig()
    assert (c.num_agents, c.resources, c.broadcast_dim, c.max_age) == (50, ("berries", "meat"), 6, 10)
    assert [j.name for j in c.jobs] == ["gathering", "hunting"]
    assert c.jobs[0].phase == pytest.approx(math.pi / 2) and c.jobs[1].phase == 0
    assert (c.decay_rate, c.rest_bonus, c.age_effort_penalty, c.need, c.min_consumption, c.mutation, c.yield_noise) \
        == (0.1, 0.005, 0.05, (1.0, 1.0), 0.01, 0.1, 0.1)
    assert c.peers_observed == 49 and not c.samples_peers


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        EconomyConfig().num_agents = 3


@pytest.mark.parametrize("field, value, words", [
    ("num_agents", 0, ">= 1"), ("num_agents", 2.5, ">= 1"), ("num_agents", True, ">= 1"),
    ("decay_rate", 1.5, "[0.0, 1.0]"), ("decay_rate", float("nan"), "[0.0, 1.0]"),
    ("max_age", 0, ">= 1"), ("max_steps", -1, ">= 1"), ("num_peers", 0, ">= 1"),
    ("parent_share", 0.7, "[0.0, 0.5]"), ("yield_noise", -0.1, "[0.0, inf)"), ("max_consume", 2.0, "[0.0, 1.0]"),
    ("need", (1.0,), "one per resource"), ("need", (1.0, -1.0), ">= 0"), ("seed", -4, "seed"),
    ("resources", ("a", "a"), "distinct"), ("heterogeneous_tastes", 1, "bool"),
    # values that used to validate and then overflow to inf or nan
    ("mutation", 300.0, "[0.0, 5.0]"), ("initial_holdings", 1e300, "[0.0, 1000000.0]"),
    ("rest_bonus", 1e308, "[0.0, 1000000.0]"), ("seed", 2**64, str(2**64 - 1)), ("seed", 1.5, "seed"),
    ("max_age", 10**400, "<="), ("max_steps", 2**60, "<="),
])
def test_bad_value_names_field_and_range(field, value, words):
    with pytest.raises(ValueError) as info:
        EconomyConfig(**{field: value})
    assert field in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("job, words", [
    (Job("mine", output=(1e39, 0.0)), "jobs[mine].output"), (Job("mine", output=(0.0, 1e7)), "[0, 1e+06]"),
    (Job("mine", output=(1.0, 0.0), period=1e-300), "jobs[mine].period"),
    (Job("mine", output=(1.0, 0.0), period=0.5), "[1.0, inf)"), (Job("mine", output=(1.0, 0.0), phase=True), "phase"),
    (Job("mine", output=(1.0, 0.0), yield_noise=-1.0), "jobs[mine].yield_noise"),
])
def test_job_values_that_would_overflow_are_refused(job, words):
    with pytest.raises(ValueError) as info:
        EconomyConfig(jobs=(job,))
    assert words in str(info.value), str(info.value)


def test_an_economy_at_every_bound_stays_finite():
    """The bounds are safe: at their extremes every observation, reward and stat stays finite."""
    import numpy as np
    import torch

    from homoecon_env.core import Actions, Economy
    jobs = (Job("mine", output=(1e6, 1e6), period=1.0, phase=1e300, yield_noise=8.0),
            Job("rest", output=(0.0, 0.0), period=1e300))
    config = EconomyConfig(num_agents=12, jobs=jobs, mutation=5.0, initial_holdings=1e6, rest_bonus=1e6, decay_rate=0.0,
                           max_consume=1.0, max_age=2**53, max_steps=60, seed=2**64 - 1)
    economy = Economy(config)
    observation = economy.reset()
    g = torch.Generator().manual_seed(0)
    for t in range(60):
        consume = torch.zeros(12, 2, dtype=torch.float64)
        consume[: t % 3] = 1.0  # some agents starve (births, mutation), others eat everything
        out = economy.step(Actions(broadcast=torch.zeros(12, 6, dtype=torch.float64),
                                   job=torch.zeros(12, dtype=torch.long),
                                   effort=torch.ones(12, dtype=torch.float64),
                                   trade_weights=torch.rand(12, 2, generator=g),
                                   consume=consume))
        for tensor in (out.reward, out.observation.self_features, out.observation.peers):
            assert torch.isfinite(tensor).all(), t
        assert all(np.isfinite(v).all() for v in economy.last_stats.values() if isinstance(v, (float, np.ndarray)))
    assert economy.last_stats["births"] >= 0 and torch.isfinite(observation.self_features).all()


def test_bad_job_names_the_job():
    with pytest.raises(ValueError, match=r"jobs\[mining\]\.output"):
        EconomyConfig(jobs=(Job("mining", output=(1.0,)),))
    with pytest.raises(ValueError, match=r"jobs\[x\]\.period"):
        EconomyConfig(jobs=(Job("x", output=(1.0, 0.0), period=0),))


def test_env_overrides_are_validated_and_unknown_names_refused():
    with pytest.raises(ValueError, match="num_agents"):
        parallel_env(num_agents=-3)
    with pytest.raises(ValueError, match="num_agnets"):
        parallel_env(num_agnets=3)
    assert parallel_env(num_agents=7).config.num_agents == 7
