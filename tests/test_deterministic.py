"""The learners' deterministic mode (evaluation): the policy's mode instead of a sample, and its use in
evaluate.py (--deterministic) and the learning benchmark's frozen scores."""
import dataclasses

import pytest
import torch
from test_learners import reference_policy, with_resources

from agents import LearnerConfig, make_learner
from agents.reinforce import double_season_angle
from homoecon_env import EconomyConfig
from homoecon_env.core import Economy
from homoecon_lab.errors import RunError
from homoecon_lab.evaluation import Args, Source
from homoecon_lab.evaluation_plan import plan_tasks
from homoecon_lab.rollouts import Task, run_task

pytestmark = pytest.mark.usefixtures("one_thread")
MODES = ("reinforce", "uniform_attention", "ppo")


def played(name, config, steps, seed=0, deterministic=False):
    """A learner of `name` after `steps` steps (sampling, learning on), and the next observation."""
    economy = Economy(config)
    observation = economy.reset(seed)
    learner = make_learner(name, config, LearnerConfig(seed=seed, update_every=3))
    learner.deterministic = deterministic
    actions = []
    for _ in range(steps):
        act = learner.act(observation)
        actions.append(act)
        out = economy.step(act)
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
    return learner, observation, actions


@pytest.mark.parametrize("name", MODES)
def test_mode_actions_are_the_most_likely_job_and_the_squashed_gaussian_means(name):
    """Against the policy written plainly (tests/test_learners.reference_policy, from the named
    parameters): job = argmax of the logits, every continuous action = its squashing of the mean.
    Three resources, so the trade simplex has two free coordinates. The generator is not drawn from."""
    config = with_resources(3, num_agents=6, num_peers=3, max_steps=40)
    learner, observation, _ = played(name, config, 7)  # trained a little: not the initial weights
    r = config.num_resources
    own = observation.self_features.clone()
    own[:, :r] = own[:, :r].clamp(min=0).log1p()
    if learner.season_double_angle:  # PPO's season input (tests/test_ppo.py checks it against the angle)
        double_season_angle(own, config.num_jobs, learner.season_end)
    peers = observation.peers.clone()
    peers[..., -r:] = peers[..., -r:].clamp(min=0).log1p()
    blocked = observation.peer_mask <= 0
    with torch.no_grad():
        logits, means, _, _ = reference_policy(learner, learner.params, own[:, None], peers[:, None], blocked[:, None])
    logits, means = logits[:, 0], means[:, 0]
    assert (logits.max(1).values - logits.topk(2, dim=1).values[:, 1] > 1e-4).all()  # no near-ties
    generator_before = learner.generator.get_state()
    learner.deterministic = True
    actions = learner.act(observation)
    assert torch.equal(learner.generator.get_state(), generator_before)
    s = {head: slice(*bounds) for head, bounds in learner.head_slices.items()}
    assert torch.equal(actions.job, logits.argmax(1))
    torch.testing.assert_close(actions.broadcast, torch.tanh(means[:, s["broadcast"]]))
    torch.testing.assert_close(actions.effort, torch.sigmoid(means[:, s["effort"]]).squeeze(1))
    torch.testing.assert_close(actions.consume, torch.sigmoid(means[:, s["consume"]]))
    trade = torch.cat([means[:, s["trade_weights"]], torch.zeros(6, 1)], 1)
    torch.testing.assert_close(actions.trade_weights, torch.softmax(trade, 1))
    # the same observation again: the same actions (nothing random), unlike sampling
    again = learner.act(observation)
    assert torch.equal(again.job, actions.job) and torch.equal(again.trade_weights, actions.trade_weights)
    learner.deterministic = False
    sampled = [learner.act(observation).effort for _ in range(3)]
    assert not torch.equal(sampled[0], sampled[1])


@pytest.mark.parametrize("name", MODES)
def test_deterministic_play_repeats_from_the_same_seed_and_differs_from_sampling(name):
    """Deaths, births (inheritance draws from the generator) and learning included."""
    config = EconomyConfig(num_agents=8, max_steps=30, max_age=6)
    _, _, first = played(name, config, 25, seed=3, deterministic=True)
    _, _, second = played(name, config, 25, seed=3, deterministic=True)
    _, _, sampled = played(name, config, 25, seed=3)
    for a, b in zip(first, second):
        pairs = [(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)]
        assert all(x is y is None or torch.equal(x, y) for x, y in pairs)  # move is None outside a spatial world
    assert not torch.equal(first[0].effort, sampled[0].effort)


def test_the_flag_is_not_learner_state():
    """A checkpoint holds what was learnt; how the policy is used is the evaluator's choice."""
    learner, _, _ = played("ppo", EconomyConfig(num_agents=6, max_steps=10), 2, deterministic=True)
    state = learner.state_dict()
    assert "deterministic" not in state
    fresh = make_learner("ppo", EconomyConfig(num_agents=6, max_steps=10), LearnerConfig(seed=0, update_every=3))
    fresh.load_state_dict(state)
    assert fresh.deterministic is False


def test_evaluate_applies_deterministic_to_the_main_rollouts_and_refuses_a_learner_without_a_mode():
    config = EconomyConfig(num_agents=6, max_steps=10)
    args = Args(deterministic=True, steps=4, seeds=2, ablation_seeds=2, ablation_train_steps=2, ablation_steps=2)
    tasks, _ = plan_tasks(args, Source(config, "ppo", LearnerConfig(), None))
    assert [t.deterministic for t in tasks if t.key[0] == "main"] == [True, True]
    assert not any(t.deterministic for t in tasks if t.key[0] == "ablation")
    task = Task(key=("main", 0), economy=config, learner="random", learner_config=LearnerConfig(), economy_seed=1,
                steps=3, learn=False, deterministic=True)
    with pytest.raises(RunError, match="--deterministic: learner RandomLearner has no deterministic mode"):
        run_task(task, lambda k: None)
    modal = run_task(dataclasses.replace(task, learner="ppo"), lambda k: None)
    again = run_task(dataclasses.replace(task, learner="ppo"), lambda k: None)
    assert modal["reward"].shape[0] == 3 and (modal["reward"] == again["reward"]).all()
