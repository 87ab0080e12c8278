"""agents.policy_gradient through the learner: the hand-written gradient against autograd (deaths in the
window included), returns and baselines on a hand-worked case, per-agent clipping against separate
torch optimizers."""
import dataclasses

import pytest
import torch
from test_learners import reference_policy, run, started, with_resources
from torch.distributions import Categorical, Normal

import agents.reinforce
from agents.policy_gradient import reinforce_loss
from agents.reinforce import ReinforceLearner
from homoecon_env.core.lifecycle import Births

pytestmark = pytest.mark.usefixtures("one_thread")


def recording_optimizer(learner):
    """Record, at each update, the raw gradient [N, D], the active rows and the parameters before it. An update
    that steps a block of agents at a time (`ReinforceLearner.update_rows`) is recorded as one call."""
    calls, step = [], learner.optimizer.step

    def record(grads, active, grad_scale=None, start=0):
        if start == 0:
            calls.append({"grad": grads[0].clone(), "active": active.clone(), "params": learner.flat_params.clone()})
        else:  # the next block of the same update
            assert start == calls[-1]["active"].shape[0]
            calls[-1]["grad"] = torch.cat([calls[-1]["grad"], grads[0]])
            calls[-1]["active"] = torch.cat([calls[-1]["active"], active])
        return step(grads, active, grad_scale=grad_scale, start=start)

    learner.optimizer.step = record
    return calls


def scripted(n, deaths=None, rewards=None, parents=(0, 2)):
    """A change_step that replaces each step's deaths (step index -> dead slots), births (a newborn in
    each dead slot, from `parents`) and rewards (step index -> [N] rewards)."""
    count = [0]

    def change(out):
        index, count[0] = count[0], count[0] + 1
        dead = torch.zeros(n, dtype=torch.bool)
        dead[list((deaths or {}).get(index, ()))] = True
        slots = torch.full((n, 2), -1, dtype=torch.long)
        slots[dead] = torch.tensor(parents)
        reward = out.reward if rewards is None else torch.as_tensor(rewards[index], dtype=torch.float64)
        return dataclasses.replace(out, reward=reward, death_cause=dead.long(), births=Births(dead, slots, 0))
    return change


def plain_returns(rewards, gamma):
    """Discounted reward-to-go within a window, one step at a time: [T] -> [T]."""
    out, running = [], 0.0
    for r in reversed(rewards):
        running = r + gamma * running
        out.append(running)
    return list(reversed(out))


def plain_loss(log_prob, entropy, rewards, first_valid, gamma, entropy_coef):
    """Sum over agents of the plain REINFORCE loss of a fresh agent's first window, one agent at a time:
    -mean_t[(G_t - mean G) log pi_t + entropy_coef H_t] over its valid steps (from `first_valid`, default 0)."""
    steps, n = rewards.shape
    losses = []
    for i in range(n):
        start = first_valid.get(i, 0)
        if start == steps:
            continue
        returns = torch.tensor(plain_returns(rewards[start:, i].tolist(), gamma), dtype=torch.float64)
        advantage = (returns - returns.mean()).to(log_prob.dtype)  # a fresh agent's first window: its own mean
        losses.append(-(advantage * log_prob[i, start:] + entropy_coef * entropy[i, start:]).mean())
    return torch.stack(losses).sum()


def updated_window(config, name, steps, gamma, entropy_coef, prepare=None, **learner_options):
    """Run one window of `steps` with random parameters (N(0, 0.3^2)), random rewards and deaths inside it:
    slot 1 dies at the window's 2nd step, slot 4 at its 4th, slot 0 at its last (`scripted`). ``prepare``
    (learner) may set parameters before the window; ``learner_options`` go to LearnerConfig. Returns
    (learner, the optimizer call, rewards [T, N])."""
    n = config.num_agents
    learner, economy, observation = started(config, name, update_every=steps, entropy_coef=entropy_coef, gamma=gamma,
                                            **learner_options)
    with torch.no_grad():
        learner.flat_params.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(7))
        if prepare is not None:
            prepare(learner)
    calls = recording_optimizer(learner)
    rewards = torch.randn(steps, n, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    run(learner, economy, observation, steps, scripted(n, {1: [1], 3: [4], 4: [0]}, rewards))
    (call,) = calls
    return learner, call, rewards


# (float32: the tolerance of float32 arithmetic; float64, LearnerConfig.dtype: the same sums agree to ~1e-15)
TOLERANCE = {"float32": {"atol": 2e-5, "rtol": 1e-4}, "float64": {"atol": 1e-11, "rtol": 1e-9}}


@pytest.mark.parametrize("name, sink, rows, mean, dtype", [
    ("reinforce", False, None, False, "float32"), ("uniform_attention", False, None, False, "float32"),
    ("reinforce", True, None, False, "float32"), ("reinforce", False, 4, False, "float32"),
    ("uniform_attention", False, 4, False, "float32"), ("reinforce", False, None, True, "float32"),
    ("reinforce", False, 4, True, "float32"),
    ("reinforce", False, None, False, "float64"), ("uniform_attention", False, None, False, "float64"),
    ("reinforce", True, 4, True, "float64")])
def test_gradient_with_deaths_inside_the_window_equals_autograd_of_the_plain_policy(name, sink, rows, mean, dtype,
                                                                                   monkeypatch):
    """Slot 1 dies at the window's 2nd step and slot 4 at its 4th (their newborns train on the steps after);
    slot 0 dies at the last step (trains nothing). The gradient handed to the optimizer equals autograd
    through the plain policy with torch.distributions, on each agent's own valid steps, with returns
    and the first-window baseline (the agent's own mean return) computed one agent at a time. ``sink``:
    the social filter's softmax has the "nobody" entry (LearnerConfig.attention_sink). ``rows``: the update
    runs blocks of at most this many agents, with the social filter's relu layer recomputed (as at scale).
    ``mean``: the heads also read the plain mean of the live peers (LearnerConfig.mean_context). ``dtype``: the
    learner's float type (LearnerConfig.dtype), with a tolerance to match."""
    if rows is not None:
        monkeypatch.setattr(ReinforceLearner, "update_rows", rows)
    n, steps, gamma, entropy_coef = 6, 5, 0.8, 0.3
    config = with_resources(3, num_agents=n, num_peers=4, max_steps=50)

    def clamp_one_log_std(learner):
        learner.params["broadcast_net.log_std"][3, 0] = 2.5  # clamped to 2: no gradient
    learner, call, rewards = updated_window(config, name, steps, gamma, entropy_coef, clamp_one_log_std,
                                            attention_sink=sink, mean_context=mean, dtype=dtype)
    assert call["grad"].dtype == learner.flat_params.dtype == getattr(torch, dtype)
    first_valid = {0: steps, 1: 2, 4: 4}  # the step after each slot's last death
    assert call["active"].tolist() == [i != 0 for i in range(n)]

    window = {**learner.window.buffer, "peers": learner.window.peers(steps)}  # (rebuilt where rows are blocked)
    leaf = call["params"].clone().requires_grad_(True)
    logits, mean, log_std, _ = reference_policy(learner, learner.layout.views(leaf), window["own"], window["peers"],
                                                window["peer_blocked"])
    job_dist, normal = Categorical(logits=logits), Normal(mean, log_std.exp()[:, None])
    log_prob = job_dist.log_prob(window["job"]) + normal.log_prob(window["pre_image"]).sum(-1)  # [N, T]
    entropy = job_dist.entropy() + normal.entropy().sum(-1)
    expected, = torch.autograd.grad(plain_loss(log_prob, entropy, rewards, first_valid, gamma, entropy_coef), leaf)
    assert bool((call["grad"][0] == 0).all())
    torch.testing.assert_close(call["grad"], expected, **TOLERANCE[dtype])
    assert call["grad"][3, learner.layout.entries["broadcast_net.log_std"][0]] == 0


@pytest.mark.parametrize("name", ["reinforce", "uniform_attention"])
def test_symbolic_gradient_with_deaths_inside_the_window_equals_autograd_of_the_plain_policy(name):
    """The same check in the symbolic broadcast mode (L = 2 tokens of V = 3 symbols): log pi adds each
    token's torch.distributions Categorical log-probability, H its entropy; the hand-written gradient of
    the L categorical heads (and of everything else) equals autograd's."""
    n, steps, gamma, entropy_coef, length, vocab = 6, 5, 0.8, 0.3, 2, 3
    config = with_resources(3, num_agents=n, num_peers=4, max_steps=50, broadcast_mode="symbolic",
                            vocab_size=vocab, message_length=length)
    learner, call, rewards = updated_window(config, name, steps, gamma, entropy_coef)
    assert "broadcast_net.log_std" not in learner.params  # no Gaussian broadcast in this mode
    first_valid = {0: steps, 1: 2, 4: 4}
    window = learner.window.buffer
    assert window["tokens"].shape == (n, steps, length) and int(window["tokens"].max()) < vocab
    leaf = call["params"].clone().requires_grad_(True)
    logits, mean, log_std, _ = reference_policy(learner, learner.layout.views(leaf), window["own"], window["peers"],
                                                window["peer_blocked"])
    j = config.num_jobs
    job_dist, normal = Categorical(logits=logits[..., :j]), Normal(mean, log_std.exp()[:, None])
    token_dist = Categorical(logits=logits[..., j:].unflatten(-1, (length, vocab)))  # batch [N, T, L]
    log_prob = job_dist.log_prob(window["job"]) + token_dist.log_prob(window["tokens"]).sum(-1) \
        + normal.log_prob(window["pre_image"]).sum(-1)
    entropy = job_dist.entropy() + token_dist.entropy().sum(-1) + normal.entropy().sum(-1)
    expected, = torch.autograd.grad(plain_loss(log_prob, entropy, rewards, first_valid, gamma, entropy_coef), leaf)
    start, stop = learner.layout.entries["broadcast_net.w2"][:2]
    assert bool((expected[1:, start:stop] != 0).any())  # the token heads do get a gradient
    torch.testing.assert_close(call["grad"], expected, atol=2e-5, rtol=1e-4)


def test_returns_and_baselines_on_a_hand_worked_case(monkeypatch):
    """gamma 0.5, baseline decay 0.9, windows of 3 steps; advantages A = G - b computed by hand.
    Agent 0, rewards [1, 2, 4]: G = [1 + 0.5*2 + 0.25*4, 2 + 0.5*4, 4] = [3, 4, 4], mean 11/3; the first
    window's baseline is its own mean: A = [-2/3, 1/3, 1/3].
    Rewards [0, 0, 8]: G = [2, 4, 8]; baseline = EMA 0.1 * 11/3 bias-corrected by 1 - 0.9 = 11/3:
    A = [-5/3, 1/3, 13/3]. Rewards [2, 0, 0]: G = [2, 0, 0]; EMA = 0.9 * 0.1 * 11/3 + 0.1 * 14/3 = 0.79667,
    / (1 - 0.81) = 4.19298: A = [-2.19298, -4.19298, -4.19298].
    Agent 1 dies at step 0 of the first window: rewards [9, 1, 4] -> valid steps 1, 2 with G = [3, 4],
    own mean 3.5: A = [0, -0.5, 0.5]."""
    captured = []
    real = agents.reinforce.policy_gradient

    def capture(window, blocks, heads, advantage, *rest):
        captured.append(advantage[:2].double().clone())
        return real(window, blocks, heads, advantage, *rest)

    monkeypatch.setattr(agents.reinforce, "policy_gradient", capture)
    learner, economy, observation = started(update_every=3, gamma=0.5, baseline_decay=0.9)
    rewards = torch.zeros(9, 12, dtype=torch.float64)
    rewards[:, 0] = torch.tensor([1, 2, 4, 0, 0, 8, 2, 0, 0.0])
    rewards[:3, 1] = torch.tensor([9, 1, 4.0])
    run(learner, economy, observation, 9, scripted(12, {0: [1]}, rewards))
    b3 = (0.9 * 0.1 * 11 / 3 + 0.1 * 14 / 3) / (1 - 0.81)
    expected = [[[-2 / 3, 1 / 3, 1 / 3], [0.0, -0.5, 0.5]], [[-5 / 3, 1 / 3, 13 / 3]], [[2 - b3, -b3, -b3]]]
    assert len(captured) == 3
    for got, want in zip(captured, expected):
        torch.testing.assert_close(got[:len(want)], torch.tensor(want, dtype=torch.float64), atol=1e-6, rtol=0)


def test_each_agents_update_equals_its_own_clipped_torch_adam():
    """Agent 0's rewards are 1e3 times, agent 1's 1e-3 times the others': one is clipped every update,
    the other never. Every row's parameters after three updates equal a separate torch.optim.Adam fed
    that agent's raw gradient after torch.nn.utils.clip_grad_norm_ on that agent alone."""
    n, max_norm, lr = 12, 0.5, 0.01
    learner, economy, observation = started(update_every=2, max_grad_norm=max_norm, learning_rate=lr, entropy_coef=0.0)
    calls = recording_optimizer(learner)
    scale = torch.ones(n, dtype=torch.float64)
    scale[0], scale[1] = 1e3, 1e-3
    rewards = (torch.rand(6, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5) * scale
    reference = [learner.flat_params[i].clone().requires_grad_(True) for i in range(n)]
    adams = [torch.optim.Adam([p], lr=lr, betas=(0.9, 0.999), eps=1e-8) for p in reference]
    for update in range(3):
        observation, _ = run(learner, economy, observation, 2, scripted(n, rewards=rewards[2 * update:2 * update + 2]))
        raw = calls[-1]["grad"]
        norms = raw.norm(dim=1)
        assert norms[0] > 10 * max_norm and norms[1] < max_norm / 10  # clipped, and not clipped
        for i in range(n):
            reference[i].grad = raw[i].clone()
            torch.nn.utils.clip_grad_norm_([reference[i]], max_norm)
            adams[i].step()
        torch.testing.assert_close(learner.flat_params, torch.stack([p.detach() for p in reference]),
                                   rtol=1e-5, atol=1e-6)


def test_log_stds_below_the_clamp_get_no_gradient():
    """(An active agent's std of e^-10 is too ill-conditioned in float32 for the autograd test.)"""
    g = torch.Generator().manual_seed(9)
    out = torch.randn(2, 3, 2 + 4, generator=g, dtype=torch.float64)
    raw_log_std = torch.zeros(2, 4, dtype=torch.float64)
    raw_log_std[1, 2] = -11.0
    job, valid = torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool)
    advantage = torch.randn(2, 3, generator=g, dtype=torch.float64)
    pre_image = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    *_, grad_log_std = reinforce_loss(out, raw_log_std, pre_image, job, advantage, valid, torch.full((2,), 3), 0.1, 2)
    assert grad_log_std[1, 2] == 0 and bool((grad_log_std[1, :2] != 0).all())


def test_reported_loss_and_entropy_equal_torch_distributions():
    """The loss and entropy that reinforce_loss reports (the gradient is written separately) are the
    plain policy's, with more Gaussian dimensions than agents and some invalid steps."""
    g = torch.Generator().manual_seed(4)
    n, m, num_jobs, dims, entropy_coef = 3, 5, 3, 4, 0.2
    out = torch.randn(n, m, num_jobs + dims, generator=g, dtype=torch.float64)
    raw_log_std = 0.3 * torch.randn(n, dims, generator=g, dtype=torch.float64)
    pre_image = torch.randn(n, m, dims, generator=g, dtype=torch.float64)
    job = torch.randint(0, num_jobs, (n, m), generator=g)
    advantage = torch.randn(n, m, generator=g, dtype=torch.float64)
    valid = torch.arange(m)[None, :] >= torch.tensor([0, 2, 4])[:, None]  # [N, M]
    counts = valid.sum(1)
    loss, entropy, *_ = reinforce_loss(out, raw_log_std, pre_image, job, advantage, valid, counts, entropy_coef,
                                       num_jobs)
    job_dist = Categorical(logits=out[..., :num_jobs])
    normal = Normal(out[..., num_jobs:], raw_log_std.exp()[:, None])
    log_prob = job_dist.log_prob(job) + normal.log_prob(pre_image).sum(-1)
    expected_entropy = job_dist.entropy() + normal.entropy().sum(-1)
    objective = torch.where(valid, advantage * log_prob + entropy_coef * expected_entropy, 0.0)
    torch.testing.assert_close(entropy, expected_entropy)
    torch.testing.assert_close(loss, -objective.sum(1) / counts)


def test_update_reports_the_mean_valid_return_and_the_mean_raw_gradient_norm():
    """The hand-worked first window above (gamma 0.5, 3 steps): agent 0's G = [3, 4, 4], agent 1 dies at
    step 0 and then has G = [3, 4], ten agents earn nothing: a return sum of 18 over 35 valid steps."""
    learner, economy, observation = started(update_every=3, gamma=0.5)
    calls = recording_optimizer(learner)
    rewards = torch.zeros(3, 12, dtype=torch.float64)
    rewards[:, 0] = torch.tensor([1, 2, 4.0])
    rewards[:, 1] = torch.tensor([9, 1, 4.0])
    _, metrics = run(learner, economy, observation, 3, scripted(12, {0: [1]}, rewards))
    assert metrics[2]["return"] == pytest.approx(18 / 35, rel=1e-9)
    (call,) = calls
    norms = torch.linalg.vector_norm(call["grad"][call["active"]].double(), dim=1)
    assert metrics[2]["grad_norm"] == pytest.approx(norms.mean().item(), rel=1e-5)


@pytest.mark.parametrize("name", ["reinforce", "uniform_attention"])
def test_updating_blocks_of_agents_learns_exactly_what_one_block_learns(name, monkeypatch):
    """At scale an update runs a block of `update_rows` agents at a time and recomputes the social filter's
    relu layer instead of keeping it from act: every agent's parameters, Adam moments and actions over three
    windows with births and deaths must be the same to the bit as with one block of everyone."""
    config = with_resources(3, num_agents=23, num_peers=6, max_steps=40)

    def trained(rows):
        if rows is not None:
            monkeypatch.setattr(ReinforceLearner, "update_rows", rows)
        learner, economy, observation = started(config, name, update_every=4)
        actions, births = [], 0
        for _ in range(14):
            actions.append(learner.act(observation))
            out = economy.step(actions[-1])
            learner.update(out)
            learner.on_births(out.births)
            observation, births = out.observation, births + int(out.births.born.sum())
        monkeypatch.undo()
        return learner, actions, births

    one, one_actions, births = trained(None)
    blocks, block_actions, _ = trained(5)  # 23 agents: blocks of 4-5 rows
    assert births > 0
    assert ("relu" in one.window.activations) == (name == "reinforce")  # the social filter's relu layer: kept
    assert "relu" not in blocks.window.activations  # recomputed when learning
    assert torch.equal(one.flat_params, blocks.flat_params)
    assert all(torch.equal(a, b) for a, b in zip(one.optimizer.exp_avg_sq, blocks.optimizer.exp_avg_sq))
    assert all(torch.equal(a.job, b.job) and torch.equal(a.trade_weights, b.trade_weights)
               for a, b in zip(one_actions, block_actions))
