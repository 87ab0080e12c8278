"""The BenchMARL recipe (examples/benchmarl_task.py): HomoEcon's slot view as a BenchMARL task.

References: the PettingZoo slot view's own spaces (observation size, action box) and its episode
length; BenchMARL must feed its models the observation alone and act inside the action box.
"""
import csv

import numpy as np
import pytest
import torch
from extras import import_extra, load_example

from homoecon_env import slot_parallel_env

pytestmark = [pytest.mark.recipe, pytest.mark.usefixtures("one_thread")]

# Twelve slots and max_age 3: deaths every step, but never all slots at once (TorchRL's
# PettingZooWrapper ends the episode when every slot is done, which a whole population dying in one
# step would also be).
SMALL = {"num_agents": 12, "max_steps": 20}


def load_recipe():
    import_extra("benchmarl", "benchmarl")
    return load_example("benchmarl_task")


def test_benchmarl_task_env_passes_torchrl_check_env_specs_and_splits_observation_from_info():
    recipe = load_recipe()
    from torchrl.envs.utils import check_env_specs

    task = recipe.HomoEconTask.SLOTS.get_task(config={**SMALL, "on_death": "terminate", "max_age": 3})
    env = task.get_env_fun(num_envs=1, continuous_actions=True, seed=0, device="cpu")()
    check_env_specs(env, seed=0)
    reference = slot_parallel_env(**SMALL)
    assert task.group_map(env) == {"slot": reference.possible_agents}
    observation = task.observation_spec(env)
    assert list(observation["slot"].keys()) == ["observation"]  # what BenchMARL's models read
    flat_size = reference.observation_space("slot_0").shape[0]
    assert observation["slot", "observation"].shape == (SMALL["num_agents"], flat_size)
    _, infos = reference.reset(seed=0)
    assert set(task.info_spec(env)["slot", "info"].keys()) == set(infos["slot_0"])
    action = task.action_spec(env)["slot", "action"]
    np.testing.assert_array_equal(action.space.low[0].numpy(), reference.action_space("slot_0").low)
    np.testing.assert_array_equal(action.space.high[0].numpy(), reference.action_space("slot_0").high)


def test_benchmarl_ippo_short_run_trains_acts_in_the_box_and_evaluates_one_whole_episode(tmp_path):
    recipe = load_recipe()
    args = recipe.Args(**SMALL, on_death="terminate", max_frames=80, frames_per_batch=40, save_folder=str(tmp_path))
    experiment = recipe.make_experiment(args, max_age=3)
    # Record what BenchMARL collects and evaluates (its callback hooks, on this experiment only).
    batches, rollouts = [], []
    experiment._on_batch_collected = lambda batch: batches.append(batch.detach().clone())
    experiment._on_evaluation_end = rollouts.extend
    assert experiment.policy.in_keys == [("slot", "observation")]  # infos never reach the policy
    before = [p.detach().clone() for p in experiment.policy.parameters()]
    experiment.run()

    assert experiment.total_frames == args.max_frames and len(batches) == 2
    assert any(not torch.equal(old, new.detach()) for old, new in zip(before, experiment.policy.parameters()))
    losses = list(tmp_path.rglob("train_slot_loss_objective.csv"))
    assert len(losses) == 1
    values = [float(row[-1]) for row in csv.reader(losses[0].open()) if row]
    assert values and np.isfinite(values).all()

    box = slot_parallel_env(**SMALL).action_space("slot_0")
    actions = torch.cat([b["slot", "action"].reshape(-1, box.shape[0]) for b in batches]).numpy()
    assert (actions >= box.low).all() and (actions <= box.high).all()

    # Evaluation runs one whole episode: deaths (terminations) do not end it, max_steps does.
    experiment.evaluate()
    (rollout,) = rollouts
    assert rollout.shape[-1] == SMALL["max_steps"]
    assert bool(rollout["next", "slot", "terminated"].any()), "max_age=3 should kill someone in 20 steps"
    assert bool(rollout["next", "slot", "truncated"][-1].all()) and not bool(rollout["next", "done"][:-1].any())
