"""The TorchRL recipe (examples/torchrl_ippo.py) and TorchRL's PettingZooWrapper over the slot view.

The reference for the wiring is the PettingZoo slot view itself, stepped with the same seed and
actions: TorchRL must report each slot's reward, observation and termination in the right row.
"""

import numpy as np
import pytest
import torch
from extras import import_extra, load_example

from homoecon_env import slot_parallel_env

pytestmark = [pytest.mark.recipe, pytest.mark.usefixtures("one_thread")]

# Twelve slots: "slot_10" and "slot_11" sort before "slot_2" as text, so a wrapper that ordered the
# group by name rather than by slot number would put rows in the wrong place. max_age 3 makes deaths
# (and births) happen within a few steps.
SMALL = {"num_agents": 12, "max_age": 3, "max_steps": 8}


def load_recipe():
    import_extra("torchrl", "torchrl")
    return load_example("torchrl_ippo")


def recipe_env(recipe, on_death: str, seed: int):
    """The recipe's own TorchRL env, on the small economy."""
    args = recipe.Args(num_agents=SMALL["num_agents"], max_steps=SMALL["max_steps"], on_death=on_death)
    return recipe.make_env(args, seed, max_age=SMALL["max_age"])


@pytest.mark.parametrize("on_death", ["continue", "terminate"])
def test_torchrl_check_env_specs_passes_on_the_wrapped_slot_view(on_death):
    recipe = load_recipe()
    from torchrl.envs.utils import check_env_specs

    env = recipe_env(recipe, on_death, seed=0)
    assert env.group_map == {"slot": [f"slot_{i}" for i in range(SMALL["num_agents"])]}
    check_env_specs(env, seed=0)
    check_env_specs(env, seed=1, break_when_any_done="both")


def fixed_actions(env, steps: int, seed: int) -> np.ndarray:
    """[steps, N, A] actions drawn once, partly outside the box (the view clips finite values)."""
    space = env.action_space("slot_0")
    rng = np.random.default_rng(seed)
    low, high = space.low, space.high
    draws = rng.uniform(low - 0.2, high + 0.2, size=(steps, len(env.possible_agents), space.shape[0]))
    return draws.astype(np.float32)


def test_torchrl_tensordict_matches_the_slot_view_stepped_with_the_same_seed_and_actions():
    recipe = load_recipe()
    steps, seed = SMALL["max_steps"], 3
    reference = slot_parallel_env(on_death="terminate", **SMALL)
    actions = fixed_actions(reference, steps, seed=11)
    names = reference.possible_agents

    observations, _ = reference.reset(seed=seed)
    expected = []  # per step: rewards [N], terminated [N], agent_id [N], next observation [N, obs]
    for t in range(steps):
        observations, rewards, terminations, truncations, infos = reference.step(
            {name: actions[t, i] for i, name in enumerate(names)})
        expected.append((np.array([rewards[n] for n in names]), np.array([terminations[n] for n in names]),
                         np.array([infos[n]["agent_id"] for n in names]),
                         np.stack([observations[n] for n in names])))

    env = recipe_env(recipe, "terminate", seed=seed)
    tensordict = env.reset(seed=seed)
    deaths = 0
    for t in range(steps):
        tensordict["slot", "action"] = torch.from_numpy(actions[t])
        tensordict = env.step(tensordict)
        rewards, terminated, agent_ids, next_observation = expected[t]
        np.testing.assert_allclose(tensordict["next", "slot", "reward"].squeeze(-1).numpy(), rewards, rtol=1e-6)
        assert tensordict["next", "slot", "terminated"].squeeze(-1).numpy().tolist() == terminated.tolist()
        assert tensordict["next", "slot", "info", "agent_id"].numpy().astype(int).tolist() == agent_ids.tolist()
        np.testing.assert_array_equal(tensordict["next", "slot", "observation"].numpy(), next_observation)
        # the economy goes on after a death: the env is done only at the end, when every slot is truncated
        # (done_on_any=False; it would also be done if every slot died in one step, which this case avoids)
        assert bool(tensordict["next", "done"]) == (t == steps - 1)
        deaths += int(terminated.sum())
        tensordict = tensordict["next"].exclude("reward", "done", "terminated", "truncated")
    assert deaths > 0, "the case should include deaths, or it does not test the terminated rows"


def test_recipe_short_run_has_finite_losses_and_changes_the_policy(monkeypatch, capsys):
    recipe = load_recipe()
    seen = {}
    build = recipe.make_actor_and_critic

    def spy(env, hidden):
        actor, critic = build(env, hidden)
        seen["actor"] = actor
        seen["before"] = [p.detach().clone() for p in actor.parameters()]
        return actor, critic

    monkeypatch.setattr(recipe, "make_actor_and_critic", spy)
    args = recipe.Args(num_agents=6, max_steps=30, iterations=3, steps_per_batch=20, minibatch_steps=10,
                       epochs=2, eval_steps=10, eval_seeds=1, on_death="terminate")
    result = recipe.main(args)

    assert len(result["losses"]) == args.iterations * args.epochs * (args.steps_per_batch // args.minibatch_steps)
    assert all(np.isfinite(result["losses"]))
    after = list(seen["actor"].parameters())
    assert any(not torch.equal(old, new.detach()) for old, new in zip(seen["before"], after))
    assert all(torch.isfinite(p).all() for p in after)
    for key in ("trained", "untrained", "random"):
        assert np.isfinite(result[key])
    printed = capsys.readouterr().out
    assert printed.count("reward/agent-step") == args.iterations
    assert "random" in printed.splitlines()[-1]
