"""The fixed-slot view (docs/design.md section 8) against the named-agent env, PettingZoo's own
tests and hand-worked layouts."""
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pettingzoo.test import api_test, parallel_api_test, render_test
from pettingzoo.utils import parallel_to_aec

import homoecon_env
from homoecon_env import EconomyConfig, Job, slot_env, slot_parallel_env
from homoecon_env.slot_env import INFO_KEYS

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(num_agents=6, max_steps=60)


def flat_action(action: dict, num_jobs: int) -> np.ndarray:
    """The flat form of a Dict action: job as one-hot scores."""
    scores = np.zeros(num_jobs, dtype=np.float32)
    scores[action["job"]] = 1.0
    return np.concatenate([action["broadcast"], scores, action["effort"], action["trade_weights"],
                           action["consume"]]).astype(np.float32)


def unsquash(y):
    return y / (1.0 - y)


# -- PettingZoo's own tests: every warning an error, nothing filtered -------------------------------
@pytest.mark.parametrize("peers", [None, 3])
def test_the_flat_slot_view_passes_pettingzoos_api_tests_with_every_warning_an_error(peers):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(slot_parallel_env(num_peers=peers, **SMALL), num_cycles=200)
        api_test(slot_env(num_peers=peers, **SMALL), num_cycles=200)


@pytest.mark.parametrize("make", [
    homoecon_env.env, homoecon_env.raw_env, slot_env,
    lambda **kw: parallel_to_aec(homoecon_env.parallel_env(**kw)),
    lambda **kw: parallel_to_aec(slot_parallel_env(**kw)),
], ids=["env", "raw_env", "slot_env", "parallel_env", "slot_parallel_env"])
def test_render_test_passes_headless_on_every_env(make):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        render_test(lambda render_mode=None: make(render_mode=render_mode, **SMALL))


def test_every_env_takes_human_and_rgb_array_and_refuses_other_render_modes():
    for make in (homoecon_env.parallel_env, slot_parallel_env):
        env = make(render_mode="human", **SMALL)
        env.reset(seed=0)
        assert env.render() is None
        frame = make(render_mode="rgb_array", **SMALL)
        frame.reset(seed=0)
        assert frame.render().shape[2] == 3
        with pytest.raises(ValueError, match="render_mode"):
            make(render_mode="ansi")


# -- the same trajectories as the named env ----------------------------------------------------------
@pytest.mark.parametrize("flatten", [True, False])
def test_the_slot_view_and_the_named_env_give_the_same_trajectory(flatten, rng):
    """Same seed and actions: per slot the reward of the agent that acted there, the observation of
    its occupant (the newborn after a death), the same deaths and births, the same economy."""
    config = dict(num_agents=8, max_steps=70, num_peers=3)
    named, slots = homoecon_env.parallel_env(**config), slot_parallel_env(flatten=flatten, **config)
    named_obs, _ = named.reset(seed=5)
    slot_obs, slot_infos = slots.reset(seed=5)
    num_jobs, r = named.config.num_jobs, named.config.num_resources
    deaths = births = 0
    for _ in range(70):
        occupants = list(named._slot_names)
        for i, name in enumerate(occupants):
            assert slot_infos[f"slot_{i}"]["agent_id"] == int(name.split("_")[1])
            own = slot_obs[f"slot_{i}"][:named_obs[name]["self"].size] if flatten else slot_obs[f"slot_{i}"]["self"]
            np.testing.assert_allclose(unsquash(own[:r].astype(np.float64)), named_obs[name]["self"][:r], rtol=1e-5)
            np.testing.assert_array_equal(own[r:], named_obs[name]["self"][r:])
        actions = {name: named.action_space(name).sample() for name in occupants}
        for action in actions.values():
            action["job"] = int(rng.integers(num_jobs))
        slot_actions = {f"slot_{i}": flat_action(actions[name], num_jobs) if flatten else actions[name]
                        for i, name in enumerate(occupants)}
        named_obs, rewards, terminations, truncations, infos = named.step(actions)
        slot_obs, slot_rewards, slot_terms, slot_truncs, slot_infos = slots.step(slot_actions)
        np.testing.assert_array_equal(named.economy.state.holdings, slots.economy.state.holdings)
        for i, name in enumerate(occupants):
            slot = f"slot_{i}"
            assert slot_rewards[slot] == rewards[name]
            assert slot_infos[slot]["actor_id"] == int(name.split("_")[1])
            assert not slot_terms[slot] and slot_truncs[slot] == any(truncations.values())  # max_steps: every slot
            died = terminations[name]
            assert slot_infos[slot]["died"] == int(died)
            assert slot_infos[slot]["death_cause"] == {"age": 1, "starvation": 2}.get(infos[name].get("death_cause"), 0)
            deaths += died
        newborns = [name for name in infos if infos[name].get("born")]
        births += len(newborns)
        for name in newborns:
            slot = f"slot_{infos[name]['slot']}"
            assert slot_infos[slot]["born"] == 1 and slot_infos[slot]["agent_id"] == int(name.split("_")[1])
            assert slot_infos[slot]["generation"] == infos[name]["generation"]
        assert sum(info["born"] for info in slot_infos.values()) == len(newborns)
        if not named.agents:
            break
    assert slots.agents == [] and deaths > 5 and births > 5


# -- layout, bounds and infos ------------------------------------------------------------------------
def test_the_flat_observation_is_self_then_peers_then_mask_with_holdings_squashed():
    env = slot_parallel_env(num_agents=5, max_steps=10)
    named = homoecon_env.parallel_env(num_agents=5, max_steps=10)
    obs, _ = env.reset(seed=3)
    reference, _ = named.reset(seed=3)
    c = env.config
    s, k, p = 2 * c.num_resources + 2 + c.broadcast_dim + c.id_dim + 2 * c.num_jobs, 4, c.broadcast_dim + c.id_dim + 2
    assert env.observation_space("slot_0").shape == (s + k * p + k,) == obs["slot_2"].shape
    holdings = env.economy.state.holdings.numpy()[2]
    np.testing.assert_allclose(obs["slot_2"][:2], holdings / (1 + holdings), rtol=1e-6)  # h / (1 + h)
    peers = obs["slot_2"][s:s + k * p].reshape(k, p)
    np.testing.assert_array_equal(peers[:, :p - 2], reference["agent_2"]["peers"][:, :p - 2])
    np.testing.assert_allclose(unsquash(peers[:, p - 2:].astype(np.float64)), reference["agent_2"]["peers"][:, p - 2:],
                               rtol=1e-5)
    np.testing.assert_array_equal(obs["slot_2"][s + k * p:], reference["agent_2"]["peer_mask"])


def test_observation_bounds_are_finite_and_hold_even_for_enormous_holdings():
    env = slot_parallel_env(num_agents=4, max_steps=5)
    space = env.observation_space("slot_0")
    assert np.isfinite(space.low).all() and np.isfinite(space.high).all()
    env.reset(seed=0)
    observation = env.economy.observation
    own, peers = observation.self_features.numpy().copy(), observation.peers.numpy().copy()
    own[:, :2], peers[:, :, -2:] = 1e30, 3e38  # far past any Box a library could normalise with
    obs = env._observations(own, SimpleNamespace(peers=torch.from_numpy(peers), peer_mask=observation.peer_mask))
    assert all(space.contains(o) for o in obs.values())
    assert obs["slot_0"][0] == np.float32(1.0) and obs["slot_0"][2] == own[0, 2]


def test_a_flat_action_is_broadcast_job_scores_effort_weights_consume_and_ties_go_to_the_lowest_job():
    jobs = EconomyConfig().jobs + (Job("fishing", output=(0.5, 0.5)),)
    config = dict(num_agents=3, max_steps=5, jobs=jobs, broadcast_dim=2)
    env, named = slot_parallel_env(**config), homoecon_env.parallel_env(**config)
    env.reset(seed=0)
    named.reset(seed=0)
    space = env.action_space("slot_0")
    assert space.shape == (2 + 3 + 1 + 2 + 2,) and np.isfinite(space.low).all()
    # broadcast | scores | effort | weights | consume
    rows = {"slot_0": [0.5, -0.5, 0.2, 0.9, 0.9, 1.0, 1, 0, 0.9, 0.9],  # a tie between jobs 1 and 2 -> job 1
            "slot_1": [3.0, 0.0, 1.0, 0.0, 0.0, 0.25, 0, 1, 0.9, 0.9],  # broadcast 3.0 is clipped to 1.0
            "slot_2": [0.0, 0.0, 2.0, 3.0, -1.0, 0.7, 0, 0, 0.9, 0.9]}  # clipped to a tie at 1 -> job 0
    _, rewards, _, _, _ = env.step({slot: np.array(row, dtype=np.float32) for slot, row in rows.items()})
    assert env.last_stats["job_counts"].tolist() == [2, 1, 0]

    def by_hand(broadcast, job, effort, weights):
        return {"broadcast": np.array(broadcast, dtype=np.float32), "job": job,
                "effort": np.array([effort], dtype=np.float32), "trade_weights": np.array(weights, dtype=np.float32),
                "consume": np.array([0.9, 0.9], dtype=np.float32)}

    _, named_rewards, _, _, _ = named.step({"agent_0": by_hand([0.5, -0.5], 1, 1.0, [1, 0]),
                                            "agent_1": by_hand([1.0, 0.0], 0, 0.25, [0, 1]),
                                            "agent_2": by_hand([0.0, 0.0], 0, 0.7, [0, 0])})
    assert list(rewards.values()) == list(named_rewards.values())[:3]
    np.testing.assert_array_equal(env.economy.state.holdings, named.economy.state.holdings)


def test_infos_have_the_same_int_keys_at_reset_and_every_step():
    env = slot_parallel_env(**SMALL)
    _, infos = env.reset(seed=1)
    seen_death = False
    while True:
        assert set(infos) == set(env.possible_agents)
        for info in infos.values():
            assert tuple(info) == INFO_KEYS and all(type(v) is int for v in info.values())
            assert info["died"] == int(info["death_cause"] != 0) and info["death_cause"] in (0, 1, 2)
            seen_death |= bool(info["died"])
        if not env.agents:
            break
        _, _, _, _, infos = env.step({a: env.action_space(a).sample() for a in env.agents})
    assert seen_death


def test_on_death_terminate_marks_the_death_step_and_the_slot_acts_on_with_the_newborn():
    env = slot_parallel_env(on_death="terminate", **SMALL)
    env.reset(seed=4)
    terminated = 0
    for _ in range(59):
        _, _, terminations, truncations, infos = env.step({a: env.action_space(a).sample() for a in env.agents})
        for slot, info in infos.items():
            assert terminations[slot] == bool(info["died"])
            if info["died"]:
                assert info["born"] == 1 and info["agent_id"] != info["actor_id"]
        terminated += sum(terminations.values())
        assert env.agents == env.possible_agents and not any(truncations.values())
    assert terminated > 3
    env.step({a: env.action_space(a).sample() for a in env.agents})
    assert env.agents == []


def test_the_aec_slot_env_refuses_terminate_naming_the_option():
    with pytest.raises(ValueError, match="on_death"):
        slot_env(on_death="terminate", **SMALL)
    for bad in (dict(on_death="respawn"), dict(flatten="yes")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            slot_parallel_env(**bad, **SMALL)


# -- bad input: named, nothing changed ---------------------------------------------------------------
def _valid(env):
    return {a: env.action_space(a).sample() for a in env.agents}


@pytest.mark.parametrize("flatten", [True, False])
def test_a_nan_action_names_the_slot_and_field_and_changes_nothing(flatten):
    env = slot_parallel_env(flatten=flatten, **SMALL)
    env.reset(seed=0)
    before = env.economy.state.holdings.clone()
    actions = _valid(env)
    if flatten:
        actions["slot_4"] = actions["slot_4"].copy()
        actions["slot_4"][-3] = np.nan  # trade_weights' last column
        message = r"slot_4: action field 'trade_weights'.* is nan"
    else:
        actions["slot_4"]["effort"] = np.array([np.nan], dtype=np.float32)
        message = "slot_4: action 'effort' is not finite"
    with pytest.raises(ValueError, match=message):
        env.step(actions)
    assert env.economy.state.step == 0 and env.economy.state.holdings.equal(before)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("slot_2"), "slot_2: no action given"),
    (lambda a: a.update(agent_0=a["slot_0"]), "'agent_0': not a slot"),
    (lambda a: a.update(slot_1=np.zeros(3, dtype=np.float32)), r"slot_1: action has shape \(3,\)"),
    (lambda a: a.update(slot_1=np.array(["a"] * 13)), "slot_1: action is not numeric"),
])
def test_malformed_flat_actions_are_refused_by_slot(change, message):
    env = slot_parallel_env(**SMALL)
    env.reset(seed=0)
    actions = _valid(env)
    change(actions)
    with pytest.raises(ValueError, match=message):
        env.step(actions)
    assert env.economy.state.step == 0


def test_lists_and_tensors_are_accepted_as_flat_actions():
    env = slot_parallel_env(**SMALL)
    env.reset(seed=0)
    actions = _valid(env)
    actions["slot_0"] = actions["slot_0"].tolist()
    actions["slot_1"] = torch.tensor(actions["slot_1"])
    env.step(actions)
    assert env.economy.state.step == 1


def test_the_readme_slot_view_example_runs_and_its_shapes_are_right():
    import re
    from pathlib import Path

    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## Use with other libraries", 1)[1], re.S).group(1)
    namespace = {}
    exec(compile(code.replace("num_agents=50", "num_agents=50, max_steps=40"), "README.md", "exec"), namespace)
    env, infos = namespace["env"], namespace["infos"]
    assert env.observation_space("slot_3").shape == (657,) and env.action_space("slot_3").shape == (13,)
    assert env.agents == [] and tuple(infos["slot_3"]) == INFO_KEYS
