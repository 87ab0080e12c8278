"""Bad actions raise ValueError naming agent and key, and leave the env exactly as it was."""
import copy

import numpy as np
import pytest
import torch
from conftest import random_actions_dict
from test_determinism import digest

import homoecon_env


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


def job_past_int64(d, v):
    d[v]["job"] = 2**63


def job_past_uint64(d, v):
    d[v]["job"] = 2**64


def job_negative(d, v):
    d[v]["job"] = -1


def job_bool(d, v):
    d[v]["job"] = True


def complex_consume(d, v):
    d[v]["consume"] = np.array([0.5 + 1j, 0.25])


def numeric_text_consume(d, v):
    d[v]["consume"] = np.array(["0.5", "0.25"])


def numeric_text_list_trade(d, v):
    d[v]["trade_weights"] = ["0.5", "0.25"]


def bool_effort(d, v):
    d[v]["effort"] = np.array([True])


def bool_in_a_list(d, v):
    d[v]["consume"] = [True, 0.5]


def bool_tensor_broadcast(d, v):
    d[v]["broadcast"] = torch.ones(6, dtype=torch.bool)


CASES = [(job_past_int64, ["job", "out of range", str(2**63), "[0, 2)"]),
         (job_past_uint64, ["job", "out of range", str(2**64)]), (job_negative, ["job", "out of range", "-1"]),
         (job_bool, ["job", "not an int", "True"]), (complex_consume, ["consume", "not numeric", "complex"]),
         (numeric_text_consume, ["consume", "not numeric", "text"]),
         (numeric_text_list_trade, ["trade_weights", "not numeric", "text"]),
         (bool_effort, ["effort", "not numeric", "bool"]), (bool_in_a_list, ["consume", "not numeric", "bool"]),
         (bool_tensor_broadcast, ["broadcast", "not numeric", "bool"]),
         (nan_broadcast, ["broadcast", "nan"]), (inf_trade, ["trade_weights"]), (nan_effort, ["effort", "nan"]),
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
    assert "expected not" not in message, message
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


def test_tensors_that_carry_a_graph_are_read_as_their_values():
    kw = dict(num_agents=6, max_steps=50)
    env, twin = homoecon_env.parallel_env(**kw), homoecon_env.parallel_env(**kw)
    env.reset(seed=4)
    twin.reset(seed=4)
    rng = np.random.default_rng(2)
    for _ in range(3):
        acts = random_actions_dict(env, rng)
        graphed = {name: {key: value if key == "job" else torch.tensor(value, requires_grad=True) * 1.0
                          for key, value in action.items()} for name, action in acts.items()}
        assert digest(env.step(graphed), env.agents) == digest(twin.step(acts), twin.agents)


# -- the batched API: the same refusals, naming the agent in the bad row -------------------------

def batched(economy, seed=0):
    from test_core import random_actions
    return random_actions(economy.state.num_slots, economy.config, torch.Generator().manual_seed(seed))


def core_snapshot(economy):
    s = economy.state
    return (s.step, s.next_id, economy.generator.get_state().clone(), s.holdings.clone(), s.agent_ids.clone())


BATCHED_CASES = [
    ("job", lambda a: torch.tensor([2**63] * a.shape[0], dtype=torch.uint64), ["out of range", str(2**63)]),
    ("job", lambda a: np.where(np.arange(a.shape[0]) == 3, -1, 0), ["agent_3", "out of range", "-1", "[0, 2)"]),
    ("job", lambda a: np.where(np.arange(a.shape[0]) == 2, 0.5, 1.0), ["agent_2", "not an int", "0.5"]),
    ("job", lambda a: np.ones(a.shape[0], dtype=bool), ["not an int", "bool"]),
    ("job", lambda a: [0, 1, 2**64] + [0] * (a.shape[0] - 3), ["agent_2", "out of range", str(2**64)]),
    ("job", lambda a: [0, 1, 0, "1"] + [0] * (a.shape[0] - 4), ["not an int", "text"]),
    ("consume", lambda a: a.numpy() + 0.5j, ["not numeric", "complex"]),
    ("consume", lambda a: a.numpy().astype(str), ["not numeric", "text"]),
    ("effort", lambda a: a > 0.5, ["not numeric", "bool"]),
    ("trade_weights", lambda a: [[0.5, True]] + a.numpy()[1:].tolist(), ["agent_0", "not numeric", "bool"]),
    ("broadcast", lambda a: torch.complex(a, a), ["not numeric", "complex"]),
    # the first bad row is named, not row 0: mixed lists become object arrays, checked row by row
    ("trade_weights", lambda a: a.numpy()[:3].tolist() + [[0.5, True]] + a.numpy()[4:].tolist(),
     ["agent_3", "not numeric", "bool"]),
    ("consume", lambda a: a.numpy()[:5].tolist() + [[0.5, None]] + a.numpy()[6:].tolist(),
     ["agent_5", "not numeric (Python objects of dtype object)", "expected finite real values in [0.0, 1.0]"]),
    ("job", lambda a: [0, 0.5, 2**64] + [0] * (a.shape[0] - 3), ["agent_1", "not an int", "0.5"]),
    # the message says what the array holds, in words
    ("trade_weights", lambda a: [[0.5, True]] + a.numpy()[1:].tolist(), ["bools among numbers of dtype object"]),
    ("broadcast", lambda a: torch.complex(a, a), ["complex numbers of dtype complex128"]),
    ("effort", lambda a: a > 0.5, ["bools of dtype bool"]),
    ("effort", lambda a: np.zeros(a.shape, dtype="datetime64[s]"), ["values of dtype datetime64[s]"]),
]


@pytest.mark.parametrize("key, make, words", BATCHED_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(BATCHED_CASES)])
def test_batched_actions_that_are_not_real_numbers_are_refused_naming_agent_and_key(key, make, words):
    from homoecon_env.core import Actions, Economy
    economy = Economy(homoecon_env.EconomyConfig(num_agents=8, max_steps=20))
    economy.reset(1)
    actions = batched(economy)
    bad = Actions(**{**actions.__dict__, key: make(getattr(actions, key))})
    before = core_snapshot(economy)
    with pytest.raises(ValueError) as info:
        economy.step(bad)
    message = str(info.value)
    assert f"action '{key}'" in message and "agent_" in message and all(w in message for w in words), message
    after = core_snapshot(economy)
    assert before[:2] == after[:2] and all(torch.equal(x, y) for x, y in zip(before[2:], after[2:]))


@pytest.mark.parametrize("key, row, bad, words", [("effort", 4, np.nan, "is nan"),
                                                   ("consume", 2, -np.inf, "is not finite"),
                                                   ("broadcast", 6, np.inf, "is not finite")])
def test_batched_non_finite_actions_are_refused_naming_the_first_bad_agent(key, row, bad, words):
    from homoecon_env.core import Actions, Economy
    economy = Economy(homoecon_env.EconomyConfig(num_agents=8, max_steps=20))
    economy.reset(1)
    actions = batched(economy)
    value = getattr(actions, key).clone()
    value[row] = bad
    with pytest.raises(ValueError, match=rf"agent_{row}: action '{key}' {words}"):
        economy.step(Actions(**{**actions.__dict__, key: value}))


def test_a_batched_action_that_is_no_array_is_refused_naming_key_and_type():
    from homoecon_env.core import Actions, Economy
    economy = Economy(homoecon_env.EconomyConfig(num_agents=8, max_steps=20))
    economy.reset(1)
    actions = batched(economy)
    ragged = [[0.5]] + actions.consume[1:].tolist()
    with pytest.raises(ValueError, match=r"action 'consume': cannot convert list to an array"):
        economy.step(Actions(**{**actions.__dict__, "consume": ragged}))


def test_batched_tensors_with_requires_grad_step_like_plain_ones():
    from homoecon_env.core import Actions, Economy
    config = homoecon_env.EconomyConfig(num_agents=8, max_steps=20)
    graphed, plain = Economy(config), Economy(config)
    graphed.reset(2)
    plain.reset(2)
    actions = batched(graphed)
    with_graph = Actions(**{k: v if k == "job" or v is None else v.clone().requires_grad_(True)
                            for k, v in actions.__dict__.items()})
    assert torch.equal(graphed.step(with_graph).reward, plain.step(actions).reward)


# -- seeds -------------------------------------------------------------------------------------

BAD_SEEDS = [-1, 1.5, "7", True, 2**64, np.float64(3.0), np.bool_(True)]


@pytest.mark.parametrize("seed", BAD_SEEDS, ids=[repr(s) for s in BAD_SEEDS])
def test_bad_reset_seed_is_refused_naming_seed_value_and_range_and_nothing_changes(seed):
    env = homoecon_env.parallel_env(num_agents=6, max_steps=20)
    env.reset(seed=3)
    env.step(random_actions_dict(env, np.random.default_rng(0)))
    before = snapshot(env)
    with pytest.raises(ValueError) as info:
        env.reset(seed=seed)
    message = str(info.value)
    assert "seed" in message and repr(seed) in message and "[0, 2**64 - 1]" in message, message
    assert same(before, snapshot(env))


def test_every_int_seed_in_range_is_accepted_numpy_ints_included():
    env = homoecon_env.parallel_env(num_agents=4, max_steps=5)
    for seed in (0, 2**64 - 1, np.uint64(2**64 - 1), np.int64(7)):
        env.reset(seed=seed)
    a, _ = env.reset(seed=np.int64(7))
    b, _ = homoecon_env.parallel_env(num_agents=4, max_steps=5).reset(seed=7)
    assert all(np.array_equal(a[k]["self"], b[k]["self"]) for k in a)
