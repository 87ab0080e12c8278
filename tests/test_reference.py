"""Learning beside a reference policy (agents.reference, LearnerConfig.reference*): settings refused by name,
the warm start, the anchored gradient against autograd of the plain losses, bit-exact resume, and what the
cloning of other agents' windows buys a population whose lives are short."""
import copy
import dataclasses

import numpy as np
import pytest
import torch
from test_gradient import recording_optimizer, scripted
from test_learners import reference_policy, run, started, with_resources
from torch.distributions import Categorical, Normal

from agents import make_learner
from agents.base import executed_actions
from agents.config import REFERENCE_POLICIES, LearnerConfig
from agents.reference import REFERENCES, reference_pre_images
from agents.reinforce import ReinforceLearner
from agents.scripted import ChainScriptedLearner, ScriptedLearner
from homoecon_env.core import Economy
from homoecon_env.scenarios import scenario_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("options, named", [
    ({"reference": "expert"}, "reference"),
    ({"reference_steps": 10}, "reference_steps"),  # without a reference
    ({"reference_coef": 0.1}, "reference_coef"),
    ({"reference_rows": 2}, "reference_rows"),
    ({"reference": "scripted"}, "reference_steps and reference_coef"),  # a reference that does nothing
    ({"reference": "scripted", "reference_steps": -1}, "reference_steps"),
    ({"reference": "scripted", "reference_coef": -0.5}, "reference_coef"),
    ({"reference": "scripted", "reference_steps": 5, "reference_rows": -1}, "reference_rows")])
def test_config_refuses_reference_settings_naming_the_field(options, named):
    with pytest.raises(ValueError, match=named):
        LearnerConfig(**options)


def test_the_config_names_exactly_the_reference_policies_there_are():
    assert REFERENCE_POLICIES == ("none", *REFERENCES)
    config = scenario_config("supply_chain", num_agents=6)
    for name in REFERENCES:  # each builds on the economy and acts
        assert REFERENCES[name](config).act(Economy(config).reset(0)).job.shape == (6,)


def test_a_state_with_or_without_a_reference_is_refused_by_the_other_kind_and_nothing_changes():
    config = with_resources(2, num_agents=4)
    plain = make_learner("reinforce", config, LearnerConfig(seed=1))
    anchored = make_learner("reinforce", config, LearnerConfig(seed=2, reference="scripted", reference_coef=0.1))
    for learner, other in ((anchored, plain), (plain, anchored)):
        before = copy.deepcopy(learner.state_dict())
        with pytest.raises(ValueError, match="'reference'"):
            learner.load_state_dict(copy.deepcopy(other.state_dict()))
        assert torch.equal(learner.flat_params, before["params"])  # refused before anything was copied
        assert torch.equal(learner.generator.get_state(), before["generator"])


def test_updating_blocks_of_agents_learns_what_one_block_learns(monkeypatch):
    """Above `update_rows` agents the update runs blocks of agents (a compact window): the anchor's own-window
    term slices the kept reference actions by block, so the gradient is the one-block gradient."""
    config = with_resources(2, num_agents=8, max_steps=40, max_age=5)
    options = {"reference": "scripted", "reference_steps": 7, "reference_coef": 0.4, "update_every": 5}
    grads = []
    for rows in (8192, 3):
        monkeypatch.setattr(ReinforceLearner, "update_rows", rows)
        learner, economy, observation = started(config, **options)
        calls = recording_optimizer(learner)
        learning_run(learner, economy, observation, 10)
        grads.append([call["grad"] for call in calls])
    assert len(grads[0]) == len(grads[1]) == 2  # the second window is half warm, half anchored
    for one, blocked in zip(*grads):
        torch.testing.assert_close(blocked, one, atol=1e-6, rtol=1e-5)


def test_learners_and_economies_a_reference_cannot_serve_are_refused_by_name(monkeypatch):
    options = LearnerConfig(reference="scripted", reference_steps=5)
    with pytest.raises(ValueError, match="reference.*PPOLearner"):
        make_learner("ppo", with_resources(2, num_agents=4), options)
    with pytest.raises(ValueError, match="reference.*mixed"):
        make_learner("mixed", with_resources(2, num_agents=4), options)
    with pytest.raises(ValueError, match="reference.*symbolic"):
        make_learner("reinforce", with_resources(2, num_agents=4, broadcast_mode="symbolic"), options)
    with pytest.raises(ValueError, match="reference.*spatial"):
        make_learner("reinforce", scenario_config("spatial"), options)
    monkeypatch.setattr(ReinforceLearner, "update_rows", 3)
    with pytest.raises(ValueError, match="reference_rows.*at most 3 agents"):
        make_learner("reinforce", with_resources(2, num_agents=4),
                     LearnerConfig(reference="scripted", reference_steps=5, reference_rows=1))


def test_pre_images_squash_back_to_the_reference_actions():
    """tanh, sigmoid and softmax([u, 0]), the learner's squashing, give the plan's actions back (within the
    clipping that keeps the pre-images finite)."""
    config = scenario_config("supply_chain", num_agents=30)
    observation = Economy(config).reset(3)
    plan = ChainScriptedLearner(config, roles="id")
    actions = plan.act(observation)
    learner = ReinforceLearner(config)
    u = reference_pre_images(actions, learner.head_slices, learner.gaussian_dim)
    part = {head: u[:, start:stop] for head, (start, stop) in learner.head_slices.items()}
    torch.testing.assert_close(torch.tanh(part["broadcast"]), actions.broadcast.clamp(-0.999, 0.999))
    torch.testing.assert_close(torch.sigmoid(part["effort"][:, 0]), actions.effort.clamp(0.02, 0.98))
    torch.testing.assert_close(torch.sigmoid(part["consume"]), actions.consume.clamp(1e-3, 1 - 1e-3))
    shares = torch.softmax(torch.cat([part["trade_weights"], torch.zeros(30, 1)], dim=1), dim=1)
    expected = actions.trade_weights / actions.trade_weights.sum(1, keepdim=True)
    torch.testing.assert_close(shares, expected, atol=2e-3, rtol=0)  # (shares below 1e-3 are raised to it)


def test_roles_by_id_cut_the_plans_blocks_along_the_first_id_coordinate():
    config = scenario_config("supply_chain", num_agents=40)
    observation = Economy(config).reset(5)
    by_slot, by_id = ChainScriptedLearner(config), ChainScriptedLearner(config, roles="id")
    ends = np.cumsum(by_id.plan)  # the plan's blocks on [0, 1]
    position = (observation.self_features[:, by_id.id_column].numpy() + 1) / 2
    expected = np.minimum((position[:, None] > ends[None, :]).sum(1), len(ends) - 1)  # blocks passed
    assert len(set(expected.tolist())) >= 5  # (40 random ids reach most of the seven jobs)
    assert by_id.act(observation).job.tolist() == expected.tolist()
    assert by_slot.act(observation).job.tolist() == by_slot.slot_job.tolist()  # the default is unchanged
    with pytest.raises(ValueError, match="roles"):
        ChainScriptedLearner(config, roles="lineage")


def test_roles_by_id_take_the_plans_shares_of_a_large_population():
    """Founders' ids are uniform, so the roles' counts come near the plan's shares; jobs rise with the id."""
    config = scenario_config("supply_chain", num_agents=4000)
    plan = ChainScriptedLearner(config, roles="id")
    observation = Economy(config).reset(seed=0)
    jobs = plan.act(observation).job.numpy()
    counts = np.bincount(jobs, minlength=len(plan.plan)) / len(jobs)
    assert np.abs(counts - plan.plan).max() < 0.03
    order = np.argsort(observation.self_features[:, plan.id_column].numpy())
    assert (np.diff(jobs[order]) >= 0).all()  # blocks of the id line


def test_in_the_warm_start_the_reference_drives_a_learning_step_and_rewards_do_not_count():
    """Two learners alike but for their rewards (the second's are noise) stay bit for bit alike through the warm
    start, whose update only clones the reference, and part after it. While learning in the warm start the
    economy executes the reference's exact actions (`executed_actions`); `act` itself, what a frozen rollout
    executes, always returns the learner's own."""
    config = with_resources(2, num_agents=6, max_steps=40)
    options = {"reference": "scripted", "reference_steps": 10, "reference_coef": 0.1, "update_every": 5}
    first, economy, observation = started(config, **options)
    second, other_economy, _ = started(config, **options)
    reference, noise = ScriptedLearner(config), torch.Generator().manual_seed(3)
    for step in range(15):
        own, again = first.act(observation), second.act(observation)
        expected = reference.act(observation)
        assert not torch.equal(own.trade_weights, expected.trade_weights)  # its own samples
        executed = executed_actions(first, own)
        assert all(torch.equal(getattr(executed, name), getattr(expected if step < 10 else own, name))
                   for name in ("job", "effort", "trade_weights", "consume", "broadcast")), step
        out = economy.step(executed)
        other_economy.step(executed_actions(second, again))
        first.update(out)
        second.update(dataclasses.replace(out, reward=torch.randn(6, generator=noise, dtype=torch.float64)))
        for learner in (first, second):
            learner.on_births(out.births)
        observation = out.observation
        if step == 9:  # the warm start's two windows learnt the same from different rewards
            assert torch.equal(first.flat_params, second.flat_params)
    assert not torch.equal(first.flat_params, second.flat_params)  # the third window's rewards count
    assert first.reference.steps == 15 and not first.reference.warming


def learning_run(learner, economy, observation, steps):
    """`steps` learning steps as the scripts run them (the economy executes `executed_actions`)."""
    for _ in range(steps):
        out = economy.step(executed_actions(learner, learner.act(observation)))
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
    return observation


def plain_pre_images(actions, dtype: str) -> torch.Tensor:
    """The season heuristic's actions as the learner's Gaussian pre-images [N, G] (broadcast, effort, consume,
    trade: the G layout), each squashing inverted by hand: atanh, logit (effort 1 clipped to 0.98), and
    log(w_k / w_R) of the normalised trade weights (shares under 1e-3 raised to it)."""
    def logit(x, low, high):
        x = x.to(getattr(torch, dtype)).clamp(low, high)
        return torch.log(x / (1 - x))
    weights = actions.trade_weights.to(getattr(torch, dtype))
    weights = (weights / weights.sum(1, keepdim=True)).clamp(min=1e-3)
    return torch.cat([torch.atanh(actions.broadcast.to(getattr(torch, dtype)).clamp(-0.999, 0.999)),
                      logit(actions.effort[:, None], 0.02, 0.98), logit(actions.consume, 1e-3, 1 - 1e-3),
                      torch.log(weights[:, :-1] / weights[:, -1:])], dim=1)


def plain_anchored_loss(learner, params, window, rewards, first_valid, gamma, entropy_coef, warm, lam, others,
                        ref_job, ref_u):
    """The loss whose gradient an anchored update takes, written one agent at a time with torch.distributions:
    on each agent's valid steps, -(A_t log pi(a_t) + entropy_coef H_t + c_t log pi(a_ref_t)) with A_t = G_t - mean G
    (a fresh agent's first window) and c_t = lam, but A_t = 0 and c_t = 1 on the warm start's steps; then for each
    permutation in `others`, every step of the other agent's window: -c_t / M log pi_i(a_ref of the other at
    its state). Returns the total and each agent's cloning part [N] (the c_t terms)."""
    steps, n = rewards.shape

    def log_prob_entropy(own, peers, blocked, job, pre_image):
        logits, mean, log_std, _ = reference_policy(learner, params, own, peers, blocked)
        job_dist, normal = Categorical(logits=logits), Normal(mean, log_std.exp()[:, None])
        return (job_dist.log_prob(job) + normal.log_prob(pre_image).sum(-1),
                job_dist.entropy() + normal.entropy().sum(-1))

    inputs = (window["own"], window["peers"], window["peer_blocked"])
    log_prob, entropy = log_prob_entropy(*inputs, window["job"], window["pre_image"])
    log_prob_ref, _ = log_prob_entropy(*inputs, ref_job, ref_u)
    total, cloning = 0.0, torch.zeros(n, dtype=torch.float64)
    for i in range(n):
        start = first_valid.get(i, 0)
        if start == steps:
            continue
        returns, running = [], 0.0
        for r in reversed(rewards[start:, i].tolist()):
            running = r + gamma * running
            returns.append(running)
        returns = torch.tensor(returns[::-1], dtype=torch.float64)
        advantage = (returns - returns.mean()).to(log_prob.dtype)
        advantage = torch.where(warm[start:], 0.0, advantage)
        anchor = torch.where(warm[start:], 1.0, torch.tensor(lam, dtype=torch.float64)).to(log_prob.dtype) \
            * log_prob_ref[i, start:]
        total = total - (advantage * log_prob[i, start:] + entropy_coef * entropy[i, start:] + anchor).mean()
        cloning[i] -= float(anchor.detach().mean())
    weight = torch.where(warm, 1.0, torch.tensor(lam, dtype=torch.float64)).to(log_prob.dtype) / len(others)
    for other in others:
        theirs = [tensor[other] for tensor in inputs]
        log_prob_theirs, _ = log_prob_entropy(*theirs, ref_job[other], ref_u[other])
        total = total - (weight * log_prob_theirs).mean(dim=1).sum()
        cloning -= (weight * log_prob_theirs).mean(dim=1).detach().double()
    return total, cloning


TOLERANCE = {"float32": {"atol": 3e-5, "rtol": 1e-4}, "float64": {"atol": 1e-11, "rtol": 1e-9}}


@pytest.mark.parametrize("name, warm_steps, rows, dtype, more", [
    ("reinforce", 0, 2, "float32", {}), ("reinforce", 2, 2, "float32", {}), ("reinforce", 100, 3, "float32", {}),
    ("uniform_attention", 2, 2, "float32", {}), ("reinforce", 0, 0, "float32", {}),
    ("reinforce", 2, 2, "float64", {"mean_context": True, "attention_sink": True}),
    ("uniform_attention", 0, 1, "float64", {})])
def test_anchored_gradient_equals_autograd_of_the_plain_losses(name, warm_steps, rows, dtype, more):
    """One window of 5 steps with deaths inside it (slot 1 at its 2nd step, slot 4 at its 4th, slot 0 at the
    last), random rewards, and the warm start ending before, inside or after the window. The reference's
    actions are recomputed from the observations the learner saw (the season heuristic, inverted by hand); the
    gradient handed to the optimizer equals autograd of `plain_anchored_loss` with them and with the
    permutations the update drew. In float64 (lambda 0.7 kept in float64) with the plain mean beside the
    context and the attention sink too."""
    n, steps, gamma, entropy_coef, lam = 6, 5, 0.8, 0.3, 0.7
    config = with_resources(3, num_agents=n, num_peers=4, max_steps=50)
    learner, economy, observation = started(config, name, update_every=steps, entropy_coef=entropy_coef, gamma=gamma,
                                            reference="scripted", reference_steps=warm_steps, reference_coef=lam,
                                            reference_rows=rows, dtype=dtype, **more)
    with torch.no_grad():
        learner.flat_params.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(7))
    drawn, draw = [], learner.reference.draw_rows

    def recorded(*args):
        drawn.extend(draw(*args))
        return drawn[len(drawn) - rows:]
    learner.reference.draw_rows = recorded
    seen, act = [], learner.act
    learner.act = lambda observation: seen.append(observation) or act(observation)
    calls = recording_optimizer(learner)
    rewards = torch.randn(steps, n, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    _, metrics = run(learner, economy, observation, steps, scripted(n, {1: [1], 3: [4], 4: [0]}, rewards))
    (call,) = calls
    assert len(drawn) == rows and all(sorted(other.tolist()) == list(range(n)) for other in drawn)
    warm = torch.arange(steps) < warm_steps
    assert learner.reference.warm.tolist() == warm.tolist()
    heuristic = [ScriptedLearner(config).act(observation) for observation in seen]
    ref_job = torch.stack([actions.job for actions in heuristic], dim=1)  # [N, T]
    ref_u = torch.stack([plain_pre_images(actions, dtype) for actions in heuristic], dim=1)  # [N, T, G]
    assert torch.equal(learner.reference.job, ref_job)  # what the learner kept, step by step
    torch.testing.assert_close(learner.reference.pre_image, ref_u, **TOLERANCE[dtype])

    leaf = call["params"].clone().requires_grad_(True)
    loss, cloning = plain_anchored_loss(learner, learner.layout.views(leaf), learner.window.buffer, rewards,
                                        {0: steps, 1: 2, 4: 4}, gamma, entropy_coef, warm, lam, drawn, ref_job, ref_u)
    expected, = torch.autograd.grad(loss, leaf)
    assert call["grad"].dtype == getattr(torch, dtype)
    torch.testing.assert_close(call["grad"], expected, **TOLERANCE[dtype])
    # the reported cloning loss: its mean over the agents that learnt (slot 0 has no valid step)
    assert metrics[-1]["reference_loss"] == pytest.approx(float(cloning[1:].mean()), rel=1e-4, abs=1e-5)
    if rows == 0 and warm_steps == 0:  # the anchor alone moves slot 0 (no valid step): nothing
        assert bool((call["grad"][0] == 0).all())


def test_a_resumed_learner_continues_bit_exactly_through_the_end_of_the_warm_start():
    """A learner restored from a state saved mid-window and mid-warm-start acts and learns exactly as the
    original: the reference's kept actions, the warm flags, the clock and the generator are all saved."""
    config = with_resources(2, num_agents=8, max_steps=60, max_age=6)  # births inside the run
    options = {"reference": "scripted", "reference_steps": 11, "reference_coef": 0.2, "reference_rows": 2,
               "update_every": 4}
    learner, economy, observation = started(config, **options)
    observation = learning_run(learner, economy, observation, 9)  # mid-window (9 = 2 * 4 + 1), 2 steps before the end
    resumed = make_learner("reinforce", config, LearnerConfig(seed=123, **options))
    resumed.load_state_dict(copy.deepcopy(learner.state_dict()))
    for _ in range(12):
        actions, again = learner.act(observation), resumed.act(observation)
        executed = executed_actions(learner, actions)
        for name in ("job", "effort", "trade_weights", "consume", "broadcast"):
            assert torch.equal(getattr(actions, name), getattr(again, name)), name
            assert torch.equal(getattr(executed, name), getattr(executed_actions(resumed, again), name)), name
        out = economy.step(executed)
        for one in (learner, resumed):
            one.update(out)
            one.on_births(out.births)
        observation = out.observation
        assert torch.equal(learner.flat_params, resumed.flat_params)
    assert resumed.reference.steps == learner.reference.steps == 21


def own_jobs_on_the_plan(rows: int, steps: int) -> float:
    """supply_chain at N = 40 with its lives of 10 steps: after a warm start of `steps` cloning the plan (roles
    by id), the share of agents whose most likely job is the plan's for their own id."""
    config = scenario_config("supply_chain", num_agents=40, max_steps=steps + 1)
    learner, economy, observation = started(config, seed=2, reference="scripted_chain", reference_steps=steps,
                                            reference_rows=rows)
    observation = learning_run(learner, economy, observation, steps)
    learner.deterministic = True
    return float((learner.act(observation).job == ChainScriptedLearner(config, roles="id").act(observation).job)
                 .float().mean())


def test_cloning_other_agents_windows_teaches_every_network_the_whole_plan():
    """With lives of 10 steps a network sees one id in its life, so it learns one job and a newborn inherits its
    parent's; cloning on other agents' windows too teaches each network the map from ids to jobs."""
    alone, with_others = own_jobs_on_the_plan(0, 1000), own_jobs_on_the_plan(4, 1000)
    assert with_others > 0.5 and with_others > alone + 0.2, (alone, with_others)


def test_train_py_trains_supply_chain_as_apprentices_unless_told_reference_none(tmp_path, capsys):
    """The scenario's training settings are train.py's defaults there (flags given win); --reference none gives
    the plain learner settings back; a reference the economy cannot serve is a parser error naming the flag."""
    from homoecon_lab.cli import parse_train_args
    from homoecon_lab.settings import SCENARIO_TRAINING
    run_dir = str(tmp_path / "run")
    apprentice = parse_train_args(["--scenario", "supply_chain", "--reference-coef", "1.5", "--run-dir", run_dir])
    expected = {**SCENARIO_TRAINING["supply_chain"], "reference_coef": 1.5, "seed": 1}
    assert apprentice.learner == LearnerConfig(**expected)
    alone = parse_train_args(["--scenario", "supply_chain", "--reference", "none", "--run-dir", run_dir])
    assert alone.learner == LearnerConfig(seed=1)
    assert parse_train_args(["--run-dir", run_dir]).learner == LearnerConfig(seed=1)  # the seed scenario: none
    ppo = parse_train_args(["--scenario", "supply_chain", "--learner", "ppo", "--run-dir", run_dir])
    assert ppo.learner.reference == "none"
    with pytest.raises(SystemExit) as stop:
        parse_train_args(["--scenario", "supply_chain", "--broadcast-mode", "symbolic", "--run-dir", run_dir])
    assert stop.value.code == 2 and "argument --reference: " in capsys.readouterr().err
