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
])
def test_bad_value_names_field_and_range(field, value, words):
    with pytest.raises(ValueError) as info:
        EconomyConfig(**{field: value})
    assert field in str(info.value) and words in str(info.value)


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
