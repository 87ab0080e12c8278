"""A learner that diverges says so clearly: NonFiniteLossError naming the agents, from the loss, the
gradient, the parameters after an optimizer step, or an action that would not be finite."""
import copy
import dataclasses
import math

import pytest
import torch
from test_learners import run, started

from agents import NonFiniteLossError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_non_finite_loss_names_the_agent_and_changes_nothing():
    learner, economy, observation = started(update_every=2)
    observation, _ = run(learner, economy, observation, 2)
    before = copy.deepcopy(learner.state_dict())
    out = economy.step(learner.act(observation))
    learner.update(out)
    out = economy.step(learner.act(out.observation))
    reward = out.reward.clone()
    reward[7] = math.nan
    bad = dataclasses.replace(out, reward=reward, death_cause=torch.zeros_like(out.death_cause))
    with pytest.raises(NonFiniteLossError, match=f"agent_{int(out.acting_ids[7])}\\b"):
        learner.update(bad)
    after = learner.state_dict()
    assert torch.equal(before["params"], after["params"])
    assert all(torch.equal(a, b) for a, b in zip(before["optimizer"]["exp_avg"], after["optimizer"]["exp_avg"]))
    assert torch.equal(before["optimizer"]["steps"], after["optimizer"]["steps"])
    assert torch.equal(before["baseline"], after["baseline"])


def test_act_refuses_non_finite_actions_naming_the_slots_and_saying_the_policy_diverged():
    """Weights of 3e38 are finite, but their sums overflow to inf (and inf - inf = NaN): no such action may leave."""
    learner, _, observation = started()
    with torch.no_grad():
        learner.params["broadcast_net.w2"][[2, 7]] = 3e38
        learner.params["production_net.b2"][[2, 7]] = 1e38
    with pytest.raises(NonFiniteLossError, match=r"policy diverged.*slots 2, 7\b"):
        learner.act(observation)


def test_a_huge_learning_rate_ends_in_a_clear_divergence_error():
    """--learning-rate 1e30: the first update makes weights ~1e30; the next act or update says so."""
    learner, economy, observation = started(update_every=2, learning_rate=1e30)
    with pytest.raises(NonFiniteLossError, match=r"diverged|non-finite"):
        run(learner, economy, observation, 6)


def test_an_optimizer_step_that_leaves_parameters_non_finite_names_the_agent():
    learner, economy, observation = started(update_every=2)
    step = learner.optimizer.step

    def overflowing_step(*args, **kwargs):  # as if agent 4's step overflowed float32
        step(*args, **kwargs)
        learner.flat_params[4, 10] = math.inf

    learner.optimizer.step = overflowing_step
    out = economy.step(learner.act(observation))
    learner.update(out)
    out = economy.step(learner.act(out.observation))
    with pytest.raises(NonFiniteLossError,
                       match=f"parameters after the optimizer step for agent_{int(out.acting_ids[4])}\\b.*diverged"):
        learner.update(out)


@pytest.mark.parametrize("slots, listed", [([5], "5"), (list(range(10)), "0, 1, 2, 3, 4, 5, 6, 7, 8, 9"),
                                           (list(range(11)), "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 1 more")])
def test_act_names_each_diverged_slot_up_to_ten_then_counts_the_rest(slots, listed):
    """One diverged slot is refused too; past ten slots the message lists ten and counts the others."""
    learner, _, observation = started()
    with torch.no_grad():
        learner.params["production_net.b2"][slots] = math.nan
    with pytest.raises(NonFiniteLossError, match=rf"policy diverged.*slots {listed} \(economy"):
        learner.act(observation)


@pytest.mark.parametrize("count, more", [(10, ""), (11, " and 1 more")])
def test_non_finite_losses_name_ten_agents_then_count_the_rest(count, more):
    learner, economy, observation = started(update_every=2)
    out = economy.step(learner.act(observation))
    learner.update(out)
    out = economy.step(learner.act(out.observation))
    reward = out.reward.clone()
    reward[:count] = math.nan
    bad = dataclasses.replace(out, reward=reward, death_cause=torch.zeros_like(out.death_cause))
    with pytest.raises(NonFiniteLossError, match=rf"non-finite .* for (agent_\d+, ){{9}}agent_\d+{more}; "):
        learner.update(bad)


def test_a_non_finite_gradient_with_a_finite_loss_names_the_agent_and_changes_nothing(monkeypatch):
    import agents.reinforce
    real = agents.reinforce.policy_gradient

    def overflowing_gradient(*args):  # as if agent 6's backward overflowed float32
        loss, entropy, grad = real(*args)
        grad[6, 3] = math.inf
        return loss, entropy, grad

    monkeypatch.setattr(agents.reinforce, "policy_gradient", overflowing_gradient)
    learner, economy, observation = started(update_every=2)
    out = economy.step(learner.act(observation))
    learner.update(out)
    out = economy.step(learner.act(out.observation))
    before = copy.deepcopy(learner.state_dict())
    with pytest.raises(NonFiniteLossError,
                       match=f"non-finite gradient for agent_{int(out.acting_ids[6])}; no weight was changed"):
        learner.update(out)
    assert torch.equal(before["params"], learner.state_dict()["params"])
