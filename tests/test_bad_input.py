"""Bad actions raise ValueError naming agent and key, and leave the env exactly as it was."""
import copy

import numpy as np
import pytest

import homoecon_env
from conftest import random_actions_dict
from test_determinism import digest


def snapshot(env):
    e = env.economy
    return (list(env.agents), env.state().tobytes(), e.state.step, e.state.next_id, e.generator.get_state().clone(),
            e.state.holdings.clone())


def same(a, b):
    return a[0] == b[0] and a[1] == b[1] and a[2:4] == b[2:4] and (a[4] == b[4]).all() and (a[5] == b[5]).all()


def nan_broadcast(d, v):
    d[v]["broadcast"][0] = np.nan


def inf_trade(d, v):
    d[v]["trade_weights"][1] = np.inf


def nan_effort(d, v):
    d[v]["effort"][0] = np.nan


def inf_consume(d, v):
    d[v]["consume"][0] = -np.inf


def long_broadcast(d, v):
    d[v]["broadcast"] = np.zeros(7, np.float32)


def scalar_consume(d, v):
    d[v]["consume"] = 0.5


def text_consume(d, v):
    d[v]["consume"] = np.array(["lots", "some"])


def job_out_of_range(d, v):
    d[v]["job"] = 2


def job_not_int(d, v):
    d[v]["job"] = 0.5


def missing_key(d, v):
    del d[v]["effort"]


def extra_key(d, v):
    d[v]["bribe"] = 1.0


def not_a_dict(d, v):
    d[v] = [1, 2, 3]


def missing_agent(d, v):
    del d[v]


def unknown_agent(d, v):
    d["agent_999999"] = copy.deepcopy(d[v])


def malformed_name(d, v):
    d["bob"] = copy.deepcopy(d[v])


CASES = [(nan_broadcast, ["broadcast", "nan"]), (inf_trade, ["trade_weights"]), (nan_effort, ["effort", "nan"]),
         (inf_consume, ["consume"]), (long_broadcast, ["broadcast", "shape"]), (scalar_consume, ["consume", "shape"]),
         (text_consume, ["consume", "not numeric"]),
         (job_out_of_range, ["job"]), (job_not_int, ["job"]), (missing_key, ["effort"]), (extra_key, ["bribe"]),
         (not_a_dict, ["dict"]), (missing_agent, []), (unknown_agent, ["agent_999999"]), (malformed_name, ["bob"])]


@pytest.mark.parametrize("mutate, words", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_action_is_refused_naming_agent_and_key_and_state_is_untouched(mutate, words):
    kw = dict(num_agents=10, max_steps=100, num_peers=4)
    env, twin = homoecon_env.parallel_env(**kw), homoecon_env.parallel_env(**kw)
    env.reset(seed=1)
    twin.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(12):  # get past some deaths so names are non-trivial
        acts = random_actions_dict(env, rng)
        env.step(copy.deepcopy(acts))
        twin.step(acts)
    acts = random_actions_dict(env, rng)
    victim = env.agents[3]
    bad = copy.deepcopy(acts)
    mutate(bad, victim)
    before = snapshot(env)
    with pytest.raises(ValueError) as info:
        env.step(bad)
    message = str(info.value)
    named = words[0] if words and words[0] in ("agent_999999", "bob") else victim
    assert named in message and all(w in message for w in words), message
    assert same(before, snapshot(env))
    assert digest(env.step(copy.deepcopy(acts)), env.agents) == digest(twin.step(acts), twin.agents)


def test_action_for_an_agent_that_died_earlier_is_refused():
    env = homoecon_env.parallel_env(num_agents=8, max_steps=100)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    dead = None
    while dead is None:
        _, _, term, _, _ = env.step(random_actions_dict(env, rng))
        dead = next((a for a, t in term.items() if t), None)
    acts = random_actions_dict(env, rng)
    acts[dead] = copy.deepcopy(acts[env.agents[0]])
    before = snapshot(env)
    with pytest.raises(ValueError, match=f"{dead}: is dead"):
        env.step(acts)
    assert same(before, snapshot(env))


def test_finite_out_of_range_values_are_clipped_not_refused():
    kw = dict(num_agents=6, max_steps=50)
    env, twin = homoecon_env.parallel_env(**kw), homoecon_env.parallel_env(**kw)
    env.reset(seed=2)
    twin.reset(seed=2)
    acts = random_actions_dict(env, np.random.default_rng(0))
    wild, clipped = copy.deepcopy(acts), copy.deepcopy(acts)
    v = env.agents[2]
    for key, value, bound in (("effort", 3.0, 1.0), ("broadcast", -5.0, -1.0), ("trade_weights", 4.0, 1.0),
                              ("consume", -0.5, 0.0)):
        wild[v][key][0], clipped[v][key][0] = value, bound
    assert digest(env.step(wild), env.agents) == digest(twin.step(clipped), twin.agents)


def test_valid_actions_in_unusual_forms_step_exactly_like_arrays():
    """Lists, 0-d int arrays and read-only mappings skip the stacked fast path but must act the same."""
    from types import MappingProxyType
    kw = dict(num_agents=6, max_steps=50)
    env, twin = homoecon_env.parallel_env(**kw), homoecon_env.parallel_env(**kw)
    env.reset(seed=3)
    twin.reset(seed=3)
    rng = np.random.default_rng(1)
    for _ in range(5):
        acts = random_actions_dict(env, rng)
        odd = {name: MappingProxyType({key: (np.array(value) if key == "job" else np.asarray(value).tolist())
                                       for key, value in action.items()})
               for name, action in acts.items()}
        assert digest(env.step(odd), env.agents) == digest(twin.step(acts), twin.agents)
