"""SuperSuit on the fixed-slot view (issue 13): the vector env of examples/supersuit_vec.py, its
auto-reset, the recipe's short run, and the SuperSuit wrappers a researcher would stack on top.

The reference throughout is the plain slot view (`slot_parallel_env`) driven by hand with the same
seed and actions: SuperSuit must only re-lay its dicts as arrays, never change the economy.
"""
import math

import numpy as np
import pytest
import torch
from extras import import_extra, load_example

from homoecon_env import slot_parallel_env

pytestmark = [pytest.mark.recipe, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def supersuit():
    return import_extra("supersuit", "supersuit")


def vector_env(supersuit, num_envs, **env_kwargs):
    """The recipe's construction: E economies of N slots as one vector env of E * N sub-envs."""
    vec_env = supersuit.pettingzoo_env_to_vec_env_v1(slot_parallel_env(**env_kwargs))
    return supersuit.concat_vec_envs_v1(vec_env, num_vec_envs=num_envs, num_cpus=0, base_class="gymnasium")


def action_sequence(space, rows, steps, seed):
    """Fixed actions [steps, rows, A], some outside the box (the env clips finite values)."""
    rng = np.random.default_rng(seed)
    width = space.high - space.low
    return rng.uniform(space.low - 0.2 * width, space.high + 0.2 * width,
                       (steps, rows, space.shape[0])).astype(np.float32)


def stacked(dicts, slots):
    """[E * N, ...] from one {slot: value} dict per economy, economy-major like the vector env."""
    return np.stack([np.asarray(d[slot]) for d in dicts for slot in slots])


def test_vector_env_has_one_sub_env_per_slot_of_each_economy(supersuit):
    vec_env = vector_env(supersuit, 3, num_agents=10, max_steps=5)
    plain = slot_parallel_env(num_agents=10, max_steps=5)
    observations, infos = vec_env.reset(seed=0)
    assert vec_env.num_envs == 30  # 3 x 10, not one per possible name (1,010 for 10 agents in the named env)
    assert vec_env.observation_space == plain.observation_space("slot_0")  # SuperSuit keeps one sub-env's space
    assert vec_env.action_space == plain.action_space("slot_0")
    assert observations.shape == (30,) + plain.observation_space("slot_0").shape
    assert observations.dtype == np.float32 and len(infos) == 30


def test_vector_env_rows_are_the_slot_views_stacked_for_the_same_seed_and_actions(supersuit):
    """Row m is slot m % N of economy m // N, and economy i is the slot view reset with seed + i:
    observations, rewards, terminations (deaths, on_death='terminate') and infos all agree."""
    num_envs, seed, steps = 3, 11, 7
    kwargs = dict(num_agents=5, max_steps=20, on_death="terminate")
    vec_env = vector_env(supersuit, num_envs, **kwargs)
    references = [slot_parallel_env(**kwargs) for _ in range(num_envs)]
    slots = references[0].possible_agents
    actions = action_sequence(vec_env.action_space, num_envs * 5, steps, seed=3)

    observations, infos = vec_env.reset(seed=seed)
    resets = [env.reset(seed=seed + i) for i, env in enumerate(references)]
    np.testing.assert_array_equal(observations, stacked([obs for obs, _ in resets], slots))
    deaths = 0
    for t in range(steps):
        observations, rewards, terminations, truncations, infos = vec_env.step(actions[t])
        outs = [env.step(dict(zip(slots, actions[t, 5 * i:5 * (i + 1)]))) for i, env in enumerate(references)]
        np.testing.assert_array_equal(observations, stacked([out[0] for out in outs], slots))
        np.testing.assert_array_equal(rewards, stacked([out[1] for out in outs], slots).astype(np.float32))
        np.testing.assert_array_equal(terminations.astype(bool), stacked([out[2] for out in outs], slots))
        assert not truncations.any()
        assert [info["agent_id"] for info in infos] == [out[4][slot]["agent_id"] for out in outs for slot in slots]
        deaths += int(terminations.sum())
    assert deaths > 0  # the comparison covered slots whose occupant died and was replaced


def test_vector_env_resets_an_economy_at_max_steps_and_keeps_going(supersuit):
    """At max_steps every slot is truncated, the last observation is kept in infos, the economy
    starts a new episode (the slot view's reset() continuing its generator) and the vector env
    steps on into it."""
    max_steps, seed = 3, 5
    kwargs = dict(num_agents=4, max_steps=max_steps)
    vec_env = vector_env(supersuit, 2, **kwargs)
    references = [slot_parallel_env(**kwargs) for _ in range(2)]
    slots = references[0].possible_agents
    actions = action_sequence(vec_env.action_space, 8, max_steps + 2, seed=1)
    vec_env.reset(seed=seed)
    for i, env in enumerate(references):
        env.reset(seed=seed + i)
    for t in range(max_steps):
        observations, rewards, terminations, truncations, infos = vec_env.step(actions[t])
        last = [env.step(dict(zip(slots, actions[t, 4 * i:4 * (i + 1)]))) for i, env in enumerate(references)]
    assert truncations.all() and all(env.agents == [] for env in references)  # the episode really ended
    np.testing.assert_array_equal(np.stack([info["terminal_observation"] for info in infos]),
                                  stacked([out[0] for out in last], slots))
    restarted = [env.reset() for env in references]
    np.testing.assert_array_equal(observations, stacked([obs for obs, _ in restarted], slots))
    assert not np.array_equal(observations, stacked([out[0] for out in last], slots))
    for t in range(max_steps, max_steps + 2):  # the new episode runs: no error, nobody truncated
        observations, rewards, terminations, truncations, infos = vec_env.step(actions[t])
        outs = [env.step(dict(zip(slots, actions[t, 4 * i:4 * (i + 1)]))) for i, env in enumerate(references)]
        np.testing.assert_array_equal(observations, stacked([out[0] for out in outs], slots))
        assert not truncations.any()
    assert all(env.economy.state.step == 2 for env in references)


def test_vector_env_restarts_an_economy_whose_occupants_all_die_in_one_step(supersuit):
    """SuperSuit's rule the recipe documents: every sub-env done means a new episode, so with
    on_death='terminate' a step in which every occupant dies (max_age=1: all die of age) restarts
    the economy, where the plain slot view goes on with the newborns."""
    kwargs = dict(num_agents=4, max_steps=10, max_age=1, on_death="terminate")
    vec_env, reference = vector_env(supersuit, 1, **kwargs), slot_parallel_env(**kwargs)
    slots = reference.possible_agents
    actions = action_sequence(vec_env.action_space, 4, 1, seed=2)[0]
    vec_env.reset(seed=3)
    reference.reset(seed=3)
    observations, _, terminations, truncations, infos = vec_env.step(actions)
    step_observations, _, _, _, step_infos = reference.step(dict(zip(slots, actions)))
    assert terminations.all() and not truncations.any()
    assert [step_infos[slot]["agent_id"] for slot in slots] == [4, 5, 6, 7]  # the plain view: newborns
    np.testing.assert_array_equal(np.stack([info["terminal_observation"] for info in infos]),
                                  stacked([step_observations], slots))
    np.testing.assert_array_equal(observations, stacked([reference.reset()[0]], slots))
    assert [info["agent_id"] for info in infos] == [0, 1, 2, 3]  # a new episode's founders


def test_recipe_short_run_gives_a_finite_loss_and_changes_the_policy(capsys):
    import_extra("supersuit", "supersuit")
    recipe = load_example("supersuit_vec")
    result = recipe.main(["--num-envs", "2", "--num-agents", "6", "--max-steps", "6", "--iterations", "3",
                          "--rollout-steps", "4", "--eval-steps", "3"])
    assert math.isfinite(result["final_loss"])
    assert math.isfinite(result["trained_reward"]) and math.isfinite(result["random_reward"])
    trained = result["policy"].state_dict()
    changed = [name for name, value in result["initial_state"].items() if not torch.equal(value, trained[name])]
    assert "mean_head.weight" in changed and "value_head.weight" in changed and "log_std" in changed
    printed = capsys.readouterr().out
    assert "12 sub-envs" in printed and "mean reward per agent-step: trained" in printed


# -- SuperSuit's per-agent wrappers on the slot view (on_death="continue": these wrappers go through
# PettingZoo's AEC conversion, where a terminated agent must leave, which a slot never does) -------

def run_pair(wrapped, plain, steps, seed, action_map=lambda a: a):
    """Step a wrapped slot view and the plain one with the same seed; the wrapped one gets the raw
    actions, the plain one action_map(actions). Returns both observation sequences [T+1, N, ...]."""
    slots = plain.possible_agents
    actions = action_sequence(plain.action_space("slot_0"), len(slots), steps, seed=seed)
    # copied at once (np.stack): frame_stack_v1 hands out its live buffer, rewritten in place each step
    seen_wrapped = [stacked([wrapped.reset(seed=seed)[0]], slots)]
    seen_plain = [stacked([plain.reset(seed=seed)[0]], slots)]
    for t in range(steps):
        seen_wrapped.append(stacked([wrapped.step(dict(zip(slots, actions[t])))[0]], slots))
        seen_plain.append(stacked([plain.step(dict(zip(slots, action_map(actions[t]))))[0]], slots))
    return seen_wrapped, seen_plain


def test_normalize_obs_maps_observations_into_unit_interval_by_the_finite_bounds(supersuit):
    space = slot_parallel_env(num_agents=5).observation_space("slot_0")
    assert np.isfinite(space.low).all() and np.isfinite(space.high).all() and (space.high > space.low).all()
    wrapped = supersuit.normalize_obs_v0(slot_parallel_env(num_agents=5, max_steps=10))
    normalized, raw = run_pair(wrapped, slot_parallel_env(num_agents=5, max_steps=10), steps=4, seed=2)
    for got, obs in zip(normalized, raw):
        assert np.isfinite(got).all() and got.min() >= 0.0 and got.max() <= 1.0
        np.testing.assert_allclose(got, (obs - space.low) / (space.high - space.low), rtol=1e-6, atol=1e-6)


def test_clip_actions_gives_the_trajectory_of_the_hand_clipped_actions(supersuit):
    """Out-of-box actions through clip_actions_v0 act exactly as np.clip'ed ones on the plain view,
    job scores included (scores (2, 3) clip to a tie (1, 1): job 0)."""
    space = slot_parallel_env(num_agents=5).action_space("slot_0")
    wrapped = supersuit.clip_actions_v0(slot_parallel_env(num_agents=5, max_steps=10))
    clipped, reference = run_pair(wrapped, slot_parallel_env(num_agents=5, max_steps=10), steps=4, seed=4,
                                  action_map=lambda a: np.clip(a, space.low, space.high))
    for got, expected in zip(clipped, reference):
        np.testing.assert_array_equal(got, expected)


def test_agent_indicator_appends_the_slots_one_hot_to_its_observation(supersuit):
    wrapped = supersuit.agent_indicator_v0(slot_parallel_env(num_agents=4, max_steps=10))
    indicated, raw = run_pair(wrapped, slot_parallel_env(num_agents=4, max_steps=10), steps=2, seed=6)
    for got, obs in zip(indicated, raw):
        np.testing.assert_array_equal(got[:, :obs.shape[1]], obs)
        np.testing.assert_array_equal(got[:, obs.shape[1]:], np.eye(4, dtype=np.float32))  # slot_i -> e_i


def test_frame_stack_holds_each_slots_last_observations_oldest_first(supersuit):
    wrapped = supersuit.frame_stack_v1(slot_parallel_env(num_agents=4, max_steps=10), 3)
    frames, raw = run_pair(wrapped, slot_parallel_env(num_agents=4, max_steps=10), steps=4, seed=8)
    zeros = np.zeros_like(raw[0])
    history = [zeros, zeros] + raw  # before the first observation the stack is zeros
    for t, got in enumerate(frames):
        np.testing.assert_array_equal(got, np.concatenate(history[t:t + 3], axis=1))


def test_dtype_changes_only_the_observation_dtype(supersuit):
    wrapped = supersuit.dtype_v0(slot_parallel_env(num_agents=4, max_steps=10), np.float64)
    converted, raw = run_pair(wrapped, slot_parallel_env(num_agents=4, max_steps=10), steps=2, seed=9)
    for got, obs in zip(converted, raw):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, obs.astype(np.float64))


def test_wrapped_slot_views_vectorise_with_the_stacked_observation_shape(supersuit):
    """normalize -> agent indicator -> frame stack, then the vector env: E * N rows of the stacked
    observation, in [0, 1], through an auto-reset."""
    env = supersuit.frame_stack_v1(supersuit.agent_indicator_v0(supersuit.normalize_obs_v0(
        slot_parallel_env(num_agents=4, max_steps=3))), 2)
    vec_env = supersuit.concat_vec_envs_v1(supersuit.pettingzoo_env_to_vec_env_v1(env), num_vec_envs=2,
                                           num_cpus=0, base_class="gymnasium")
    size = slot_parallel_env(num_agents=4).observation_space("slot_0").shape[0]
    observations, _ = vec_env.reset(seed=0)
    actions = action_sequence(vec_env.action_space, 8, 5, seed=0)
    for t in range(5):
        observations, _, _, _, _ = vec_env.step(actions[t])
        assert observations.shape == (8, 2 * (size + 4))
        assert observations.min() >= 0.0 and observations.max() <= 1.0
    assert vec_env.num_envs == 8


def test_frame_skip_repeats_each_action_for_a_seeded_random_count_of_economy_steps(supersuit):
    """frame_skip_v0 draws its skip counts from the env's np_random (seeded by reset), repeating
    each action 2 to 4 economy steps and summing the rewards; the same seed gives the same counts."""
    def episode(seed):
        env = supersuit.frame_skip_v0(slot_parallel_env(num_agents=4, max_steps=30), (2, 4))
        env.reset(seed=seed)
        steps_per_call = []
        while env.agents:
            before = env.unwrapped.economy.state.step
            env.step({a: env.action_space(a).sample() for a in env.agents})
            steps_per_call.append(env.unwrapped.economy.state.step - before)
        return steps_per_call

    counts = episode(3)
    assert sum(counts) == 30 and all(1 <= c <= 4 for c in counts) and all(c >= 2 for c in counts[:-1])
    assert len(set(counts)) > 1 and episode(3) == counts
