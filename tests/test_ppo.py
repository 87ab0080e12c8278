"""PPO (agents/ppo.py, agents/advantages.py): GAE and the clipped surrogate on hand-worked numbers, the
batched loss and gradient against an unbatched torch.distributions reimplementation of one agent,
independence between agents, births, and a bit-exact resume through train()."""
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import assert_identical

from agents import LearnerConfig, make_learner
from agents.advantages import clipped_surrogate, gae
from agents.checkpoint import load_checkpoint
from agents.policy_gradient import LOG_STD_RANGE
from homoecon_env import EconomyConfig
from homoecon_env.core import Economy
from homoecon_env.core.lifecycle import Births
from homoecon_lab import training
from homoecon_lab.cli import parse_train_args

ROOT = Path(__file__).resolve().parents[1]
SMALL = EconomyConfig(num_agents=12, max_steps=40)
pytestmark = pytest.mark.usefixtures("one_thread")


# -- GAE and the surrogate, by hand -------------------------------------------------------------
def test_gae_matches_hand_worked_values_and_stops_at_a_death():
    """gamma = lambda = 0.5, so gamma * lambda = 0.25. Rows: no death; a death at step 1 (mid-window);
    a death at the last step (no bootstrap). Worked on paper from delta_t = r + gamma V' (1 - done) - V."""
    reward = torch.tensor([[1.0, 0.0, 2.0, 1.0]] * 3, dtype=torch.float64)
    value = torch.tensor([[0.5, 1.0, 0.0, 2.0]] * 3, dtype=torch.float64)
    bootstrap = torch.tensor([4.0, 4.0, math.nan], dtype=torch.float64)  # row 2's successor: must not enter
    done = torch.zeros(3, 4, dtype=torch.bool)
    done[1, 1] = True
    done[2, 3] = True
    advantage, returns = gae(reward, value, bootstrap, done, gamma=0.5, lam=0.5)
    expected = torch.tensor([[0.953125, -0.1875, 3.25, 1.0],  # deltas 1, -1, 3, 1 chained by 0.25
                             [0.75, -1.0, 3.25, 1.0],  # step 1 ends a life: its delta is -1 alone, not 1's successor
                             [0.921875, -0.3125, 2.75, -1.0]], dtype=torch.float64)  # delta_3 = 1 - 2
    torch.testing.assert_close(advantage, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(returns, expected + value, rtol=0, atol=1e-15)


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value():
    """Property: lambda = 1 telescopes to A_t = sum_s gamma^(s-t) r_s + gamma^(T-t) V_T - V_t (no deaths)."""
    g = torch.Generator().manual_seed(0)
    reward = torch.randn(3, 6, generator=g, dtype=torch.float64)
    value = torch.randn(3, 6, generator=g, dtype=torch.float64)
    bootstrap = torch.randn(3, generator=g, dtype=torch.float64)
    advantage, _ = gae(reward, value, bootstrap, torch.zeros(3, 6, dtype=torch.bool), gamma=0.9, lam=1.0)
    for t in range(6):
        ret = sum(0.9 ** (s - t) * reward[:, s] for s in range(t, 6)) + 0.9 ** (6 - t) * bootstrap
        torch.testing.assert_close(advantage[:, t], ret - value[:, t])


def test_clipped_surrogate_takes_the_pessimistic_side():
    """eps = 0.2: rho 1.5, A 2 -> min(3, 2.4); rho 0.5, A 2 -> min(1, 1.6); rho 1.1, A -1 -> -1.1 (inside);
    rho 0.7, A -1 -> min(-0.7, -0.8)."""
    ratio = torch.tensor([[1.5, 0.5, 1.1, 0.7]], dtype=torch.float64)
    advantage = torch.tensor([[2.0, 2.0, -1.0, -1.0]], dtype=torch.float64)
    got = clipped_surrogate(ratio.log(), advantage, 0.2)
    torch.testing.assert_close(got, torch.tensor([[2.4, 1.0, -1.1, -0.8]], dtype=torch.float64))


@pytest.mark.parametrize("field, value", [("clip_epsilon", 0.0), ("clip_epsilon", 1.0), ("gae_lambda", 1.5),
                                          ("ppo_epochs", 0), ("value_coef", -1.0), ("value_coef", math.inf),
                                          ("ppo_entropy_coef", -0.1), ("ppo_entropy_coef", math.nan)])
def test_ppo_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        LearnerConfig(**{field: value})


# -- the learner ---------------------------------------------------------------------------------
def started(config=SMALL, seed=0, **options):
    economy = Economy(config)
    observation = economy.reset(seed)
    return make_learner("ppo", config, LearnerConfig(seed=seed, **options)), economy, observation


def filled_window(steps=3, **options):
    """A PPO learner whose window holds `steps` acted steps (no update yet) and the batch it would learn on."""
    learner, economy, observation = started(update_every=8, **options)
    for _ in range(steps):
        out = economy.step(learner.act(observation))
        assert learner.update(out) == {}
        learner.on_births(out.births)
        observation = out.observation
    return learner, learner.rollout_batch(out)


def reference_loss(learner, flat_row, batch, i, config):
    """Agent i's PPO loss, one step at a time with torch.distributions and its named parameters."""
    p = learner.layout.views(flat_row.unsqueeze(0))
    p = {name: value[0] for name, value in p.items()}
    j = learner.economy_config.num_jobs
    terms = []
    for t in range(batch["own"].shape[1]):
        if not batch["valid"][i, t]:
            continue
        own, peers, blocked = batch["own"][i, t], batch["peers"][i, t], batch["peer_blocked"][i, t]
        hidden = torch.relu(own @ p["social_filter_net.w_own"] + peers @ p["social_filter_net.w_peer"]
                            + p["social_filter_net.bias"])
        scores = hidden @ p["social_filter_net.score"]
        if bool(blocked.all()):
            context = peers.new_zeros(peers.shape[-1])
        else:
            context = torch.softmax(scores[~blocked], 0) @ peers[~blocked]
        x = torch.cat([own, context])
        if learner.mean_context:  # the plain mean of the live peers beside the filter's context
            x = torch.cat([x, peers[~blocked].mean(0) if bool((~blocked).any()) else torch.zeros(peers.shape[-1])])

        def mlp(net, inputs):
            return torch.tanh(inputs @ p[f"{net}.w1"].T + p[f"{net}.b1"]) @ p[f"{net}.w2"].T + p[f"{net}.b2"]
        production = mlp("production_net", x)
        mean = torch.cat([mlp("broadcast_net", x), production[j:], mlp("consumption_net", x), mlp("trading_net", x)])
        log_std = torch.cat([p[f"{net}.log_std"] for net in ("broadcast_net", "production_net", "consumption_net",
                                                            "trading_net")]).clamp(*LOG_STD_RANGE)
        job = torch.distributions.Categorical(logits=production[:j])
        gauss = torch.distributions.Normal(mean, log_std.exp())
        log_prob = job.log_prob(batch["job"][i, t]) + gauss.log_prob(batch["pre_image"][i, t]).sum()
        entropy = job.entropy() + gauss.entropy().sum()
        value = mlp("value_net", torch.cat([own, context.detach()]))[0]
        ratio = torch.exp(log_prob - batch["old_log_prob"][i, t])
        a = batch["advantage"][i, t]
        surrogate = torch.min(ratio * a, torch.clamp(ratio, 1 - config.clip_epsilon, 1 + config.clip_epsilon) * a)
        terms.append(-surrogate + config.value_coef * (value - batch["returns"][i, t]) ** 2
                     - config.ppo_entropy_coef * entropy)
    return torch.stack(terms).mean()


@pytest.mark.parametrize("mean_context, dtype, tolerance", [
    (False, "float32", {"loss": (1e-5, 1e-6), "grad": (1e-4, 1e-6)}),
    (True, "float32", {"loss": (1e-5, 1e-6), "grad": (1e-4, 1e-6)}),
    (True, "float64", {"loss": (1e-10, 1e-12), "grad": (1e-9, 1e-11)})])
def test_loss_and_gradient_equal_an_unbatched_torch_distributions_reference(mean_context, dtype, tolerance):
    """(`dtype`: LearnerConfig.dtype; float64 with a tolerance a million times tighter)"""
    learner, batch = filled_window(value_coef=0.7, ppo_entropy_coef=0.05, clip_epsilon=0.1, mean_context=mean_context,
                                   dtype=dtype)
    assert learner.flat_params.dtype == batch["own"].dtype == getattr(torch, dtype)
    # the old log-probabilities are the policy's at the current parameters
    g = torch.Generator().manual_seed(3)
    # move the parameters so that ratios leave 1 (some clipped): the clipped branch is exercised too
    noise = torch.randn(learner.flat_params.shape, generator=g, dtype=learner.flat_params.dtype)
    flat = (learner.flat_params + 0.05 * noise).requires_grad_(True)
    parts = learner.loss(flat, batch)
    (grad,) = torch.autograd.grad(parts["loss"].sum(), flat)
    assert int(parts["clipped"].sum()) > 0
    checked = 0
    for i in range(learner.num_slots):
        if not bool(batch["valid"][i].any()):
            continue
        row = flat[i].detach().clone().requires_grad_(True)
        loss = reference_loss(learner, row, batch, i, learner.config)
        (reference_grad,) = torch.autograd.grad(loss, row)
        (loss_rtol, loss_atol), (grad_rtol, grad_atol) = tolerance["loss"], tolerance["grad"]
        torch.testing.assert_close(parts["loss"][i], loss, rtol=loss_rtol, atol=loss_atol)
        torch.testing.assert_close(grad[i], reference_grad, rtol=grad_rtol, atol=grad_atol)
        checked += 1
    assert checked >= 10
    # and at the rollout's own parameters every ratio is 1: the reference's log-probs are the old ones
    row = learner.flat_params[0].detach()
    zero = batch["advantage"].clone().zero_()
    loss0 = reference_loss(learner, row, {**batch, "advantage": zero, "returns": zero}, 0,
                           dataclasses.replace(learner.config, value_coef=0.0, ppo_entropy_coef=0.0))
    assert abs(float(loss0)) == 0.0


def test_one_agent_slice_gives_the_same_loss_and_gradient_as_the_batch():
    learner, batch = filled_window()
    flat = learner.flat_params.clone().requires_grad_(True)
    parts = learner.loss(flat, batch)
    (grad,) = torch.autograd.grad(parts["loss"].sum(), flat)
    for i in (0, 5, 11):
        alone = learner.flat_params[i:i + 1].clone().requires_grad_(True)
        sliced = {key: value[i:i + 1] for key, value in batch.items()}
        part = learner.loss(alone, sliced)
        (alone_grad,) = torch.autograd.grad(part["loss"].sum(), alone)
        torch.testing.assert_close(part["loss"], parts["loss"][i:i + 1], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(alone_grad, grad[i:i + 1], rtol=1e-5, atol=1e-7)


def test_agents_learn_independently_bit_for_bit():
    """Changing agent j's rewards changes agent j's parameters after an update and nobody else's."""
    results = []
    for bonus in (0.0, 5.0):
        learner, economy, observation = started(update_every=4, ppo_epochs=3)
        for step in range(4):
            out = economy.step(learner.act(observation))
            reward = out.reward.clone()
            reward[3] += bonus * (step + 1)
            out = dataclasses.replace(out, reward=reward, death_cause=torch.zeros_like(out.death_cause))
            metrics = learner.update(out)
            learner.on_births(out.births)
            observation = out.observation
        assert metrics and all(math.isfinite(v) for v in metrics.values())
        results.append(learner.flat_params.clone())
    same = (results[0] == results[1]).all(dim=1)
    assert same.tolist() == [i != 3 for i in range(12)]


def test_a_dead_agents_steps_do_not_train_the_newborn_in_its_slot():
    """A death at the window's second step: whatever the dead agent earned before, the update of the
    slot (its newborn) is the same (no bootstrap or advantage crosses occupants)."""
    results = []
    for bonus in (0.0, 3.0):
        learner, economy, observation = started(update_every=4)
        for step in range(4):
            out = economy.step(learner.act(observation))
            reward, cause = out.reward.clone(), torch.zeros_like(out.death_cause)
            if step <= 1:
                reward[5] += bonus
            if step == 1:
                cause[5] = 1
            learner.update(dataclasses.replace(out, reward=reward, death_cause=cause))
            learner.on_births(out.births)
            observation = out.observation
        results.append(learner.flat_params.clone())
    assert torch.equal(results[0], results[1])


def test_newborns_inherit_every_network_including_the_value_head_with_fresh_optimizer_state():
    learner, economy, observation = started(update_every=2, param_mutation=0.0)
    for _ in range(2):  # one update: every row has Adam state
        out = economy.step(learner.act(observation))
        learner.update(out)
        observation = out.observation
    assert "value_net" in learner.spec and bool((learner.optimizer.steps > 0).all())
    before = learner.flat_params.clone()
    born = torch.zeros(12, dtype=torch.bool)
    born[4] = True
    parents = torch.full((12, 2), -1)
    parents[4] = torch.tensor([1, 7])
    learner.on_births(Births(born, parents, 0))
    for net in learner.spec:
        columns = learner.layout.column_network == list(learner.spec).index(net)
        child = learner.flat_params[4, columns]
        assert torch.equal(child, before[1, columns]) or torch.equal(child, before[7, columns]), net
    assert learner.optimizer.steps[4] == 0 and bool((learner.optimizer.exp_avg[0][4] == 0).all())
    assert torch.equal(learner.flat_params[torch.arange(12) != 4], before[torch.arange(12) != 4])


# -- scripts: resume and the CLI -----------------------------------------------------------------
TINY = ["--num-agents", "8", "--max-steps", "25", "--log-every", "5", "--seed", "3", "--learner", "ppo",
        "--checkpoint-every", "1000", "--dashboard-every", "0"]


def test_resume_is_bit_exact(tmp_path):
    """32 steps at once == 17 steps (mid-window, mid-episode), then --resume to 32: the same learner state,
    economy and generators."""
    whole, half = tmp_path / "whole", tmp_path / "half"
    training.train(parse_train_args(["--steps", "32", "--run-dir", str(whole), *TINY]))
    training.train(parse_train_args(["--steps", "17", "--run-dir", str(half), *TINY]))
    assert load_checkpoint(half / "checkpoint.pt")["learner"]["kind"] == "ppo"
    training.train(parse_train_args(["--resume", str(half), "--steps", "32"]))
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(half / "checkpoint.pt")
    assert a["step"] == b["step"] == 32
    for key in ("learner", "economy", "rng"):
        assert_identical(a[key], b[key], key)


def test_a_ppo_state_is_refused_by_reinforce_and_the_reverse():
    ppo = make_learner("ppo", SMALL)
    reinforce = make_learner("reinforce", SMALL)
    with pytest.raises(ValueError, match="'ppo'"):
        reinforce.load_state_dict(ppo.state_dict())
    with pytest.raises(ValueError, match="'reinforce'"):
        ppo.load_state_dict(reinforce.state_dict())


def test_train_script_runs_ppo(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--learner", "ppo", "--steps", "60",
                             "--num-agents", "8", "--run-dir", str(tmp_path / "run"), "--dashboard-every", "0"],
                            capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 60


def test_ppo_reads_the_season_as_the_production_cycles_phase_and_reinforce_the_raw_angle():
    """PPO's stored own features end with (sin 2 theta_j, cos 2 theta_j) for theta_j = pi/2 * t / period_j +
    phase_j at the observed step t (from the config, by hand), so cos 2 theta_j = 2 cos^2 theta_j - 1;
    REINFORCE keeps (sin theta_j, cos theta_j). Everything before the season is the same for both."""
    jobs = SMALL.jobs
    learners = {name: make_learner(name, SMALL, LearnerConfig(seed=0, update_every=8)) for name in ("ppo", "reinforce")}
    economy = Economy(SMALL)
    observation = economy.reset(0)
    for t in range(4):
        theta = torch.tensor([math.pi / 2 * t / job.period + job.phase for job in jobs], dtype=torch.float64)
        raw = torch.cat([theta.sin(), theta.cos()]).float()
        doubled = torch.cat([(2 * theta).sin(), (2 * theta).cos()]).float()
        for name, learner in learners.items():
            actions = learner.act(observation)
            own = learner.window.buffer["own"][:, 0]  # no update: act writes the window's first step
            expected = doubled if name == "ppo" else raw
            torch.testing.assert_close(own[:, -2 * len(jobs):], expected.expand(SMALL.num_agents, -1),
                                       atol=1e-6, rtol=0)
        torch.testing.assert_close(learners["ppo"].window.buffer["own"][:, 0, :-2 * len(jobs)],
                                   learners["reinforce"].window.buffer["own"][:, 0, :-2 * len(jobs)])
        out = economy.step(actions)
        observation = out.observation


def test_a_config_written_before_ppo_entropy_coef_loads_with_the_entropy_coef_ppo_used_then():
    from homoecon_lab.settings import RunArgs, Settings, settings_from_json
    data = json.loads(json.dumps(dataclasses.asdict(Settings(RunArgs(), SMALL, LearnerConfig(entropy_coef=0.03)))))
    del data["learner"]["ppo_entropy_coef"]
    assert settings_from_json(data).learner.ppo_entropy_coef == 0.03


def test_with_private_signals_ppo_doubles_the_season_angle_and_leaves_the_boom_columns_after_it():
    from homoecon_env.scenarios import scenario_config
    config = scenario_config("private_signals", num_agents=8, max_steps=10)
    learner = make_learner("ppo", config, LearnerConfig(seed=0))
    observation = Economy(config).reset(0)
    learner.act(observation)
    j, end, raw = config.num_jobs, learner.season_end, observation.self_features
    own = learner.window.buffer["own"][:, 0]
    assert end == learner.self_dim - j  # the boom one-hot [J] follows the season
    sin, cos = raw[:, end - 2 * j:end - j], raw[:, end - j:end]
    torch.testing.assert_close(own[:, end - j:end], cos * cos - sin * sin)
    torch.testing.assert_close(own[:, end - 2 * j:end - j], 2 * sin * cos)
    assert torch.equal(own[:, end:], raw[:, end:])
