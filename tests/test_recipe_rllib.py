"""The RLlib recipe (examples/rllib_ppo.py): RLlib's env checker accepts the wrapped slot view, the
wrapper passes the slot view's rewards and episode end through unchanged, and one PPO iteration of
the recipe samples every slot every step with finite losses. One Ray session for the module."""
import math

import numpy as np
import pytest
import torch
from extras import import_extra, load_example
from gymnasium.spaces import Box

from homoecon_env import slot_parallel_env

pytestmark = pytest.mark.recipe

SMALL = {"num_agents": 4, "max_steps": 20}


@pytest.fixture(scope="module")
def recipe():
    """The recipe module, imported from its file (examples/ is not a package)."""
    import_extra("ray.rllib", "rllib")
    return load_example("rllib_ppo")


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (startup costs seconds), shut down after its last test."""
    ray = import_extra("ray", "rllib")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()
    torch.set_num_threads(threads)  # the recipe sets 1 too; later test modules get the default back


def test_rllib_env_checker_accepts_the_wrapped_slot_view(recipe):
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    env = recipe.make_env(SMALL)
    check_multiagent_environments(env)  # raises on a malformed reset/step
    slots = [f"slot_{i}" for i in range(SMALL["num_agents"])]
    assert sorted(env.possible_agents) == sorted(slots)
    for slot in slots:  # one flat Box per slot each way, as RLlib's default encoder and Gaussian need
        for space in (env.get_observation_space(slot), env.get_action_space(slot)):
            assert isinstance(space, Box) and len(space.shape) == 1


def test_wrapper_passes_slot_rewards_through_and_ends_the_episode_exactly_at_max_steps(recipe):
    """Same seed, same actions: the RLlib wrapper's per-slot rewards and observations equal the
    plain slot view's, and `__all__` is truncated at max_steps and not one step earlier."""
    wrapped = recipe.make_env(SMALL)
    plain = slot_parallel_env(on_death="continue", flatten=True, **SMALL)
    wrapped_obs, _ = wrapped.reset(seed=7)
    plain_obs, _ = plain.reset(seed=7)
    actions_rng = np.random.default_rng(0)
    for step in range(1, SMALL["max_steps"] + 1):
        assert wrapped_obs.keys() == plain_obs.keys()
        for slot in plain_obs:
            np.testing.assert_array_equal(wrapped_obs[slot], plain_obs[slot])
        actions = {slot: actions_rng.uniform(plain.action_space(slot).low, plain.action_space(slot).high)
                   .astype(np.float32) for slot in plain.agents}
        wrapped_obs, wrapped_rewards, terminated, truncated, _ = wrapped.step(dict(actions))
        plain_obs, plain_rewards, _, _, _ = plain.step(dict(actions))
        assert wrapped_rewards == plain_rewards
        assert set(wrapped_rewards) == set(plain.possible_agents)  # every slot rewarded every step
        assert not any(terminated.values())  # on_death="continue": deaths never end a slot (nor `__all__`)
        assert truncated["__all__"] is (step == SMALL["max_steps"])


def test_one_ppo_iteration_samples_every_slot_every_step_with_finite_losses(recipe, ray_session):
    args = recipe.Args(iterations=1, train_batch_size=2 * SMALL["max_steps"], minibatch_size=40, num_epochs=1,
                       **SMALL)
    (summary,) = recipe.main(args)
    assert summary["env_steps"] >= args.train_batch_size
    # every slot acts at every env step (fixed slots, nobody drops out)
    assert summary["agent_steps"] == summary["env_steps"] * SMALL["num_agents"]
    assert summary["episodes"] >= 1
    assert summary["episode_len_mean"] == SMALL["max_steps"]  # RLlib saw each episode end at max_steps
    for key in ("episode_return_mean", "policy_loss", "vf_loss", "entropy"):
        assert math.isfinite(summary[key]), key
