"""agents: the registry, the REINFORCE learner's policy, learning, inheritance and safety, and the baselines."""
import copy
import dataclasses
import math

import pytest
import torch

from agents import LEARNERS, LearnerConfig, make_learner
from agents.base import Learner
from agents.reinforce import ReinforceLearner
from homoecon_env import EconomyConfig, Job
from homoecon_env.core import Economy, Observation
from homoecon_env.core.lifecycle import Births

SMALL = EconomyConfig(num_agents=12, max_steps=40)


pytestmark = pytest.mark.usefixtures("one_thread")


def with_resources(count, **fields):
    """A config with `count` resources and one job per resource."""
    names = tuple(f"good{r}" for r in range(count))
    jobs = tuple(Job(f"make{r}", output=tuple(float(q == r) for q in range(count)), phase=r) for r in range(count))
    return EconomyConfig(resources=names, jobs=jobs, need=(1.0,) * count, **fields)


def run(learner, economy, observation, steps, change_step=None):
    """Drive `steps` act/step/update/on_births; change_step(step_output) may rewrite each StepOutput."""
    metrics = []
    for _ in range(steps):
        out = economy.step(learner.act(observation))
        if change_step is not None:
            out = change_step(out)
        metrics.append(learner.update(out))
        learner.on_births(out.births)
        observation = out.observation
    return observation, metrics


def started(config=SMALL, learner="reinforce", seed=0, **learner_options):
    economy = Economy(config)
    observation = economy.reset(seed)
    return make_learner(learner, config, LearnerConfig(seed=seed, **learner_options)), economy, observation


# -- registry and config ----------------------------------------------------------------------
def test_registry_names_and_protocol():
    assert set(LEARNERS) == {"reinforce", "random", "uniform_attention", "scripted", "ppo", "scripted_chain", "llm",
                             "mixed", "scripted_spatial"}
    for name in LEARNERS:
        learner = make_learner(name, SMALL)
        assert isinstance(learner, Learner)
        assert learner.last_attention.shape == (12, 11)
    with pytest.raises(ValueError, match="'sac'.*ppo.*random.*reinforce.*uniform_attention"):
        make_learner("sac", SMALL)


@pytest.mark.parametrize("field, value", [("hidden_size", 0), ("learning_rate", 0.0), ("gamma", 1.5),
                                          ("update_every", 0), ("param_mutation", -0.1), ("entropy_coef", math.nan),
                                          ("baseline_decay", 1.0), ("seed", -1), ("max_grad_norm", 0.0)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        LearnerConfig(**{field: value})


def test_every_config_field_has_help_text():
    assert all(text for text in LearnerConfig.help().values())
    assert set(LearnerConfig.help()) == {f.name for f in dataclasses.fields(LearnerConfig)}


# -- acting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_actions_are_valid_and_need_no_clipping(name):
    config = with_resources(3, num_agents=20, num_peers=5)
    learner, economy, observation = started(config, name)
    for _ in range(3):
        actions = learner.act(observation)
        checked = economy.check_actions(actions)
        for key in ("broadcast", "job", "effort", "trade_weights", "consume"):
            value = getattr(actions, key)
            assert value.shape == getattr(checked, key).shape
            assert torch.equal(value.to(getattr(checked, key).dtype), getattr(checked, key)), key
        observation = economy.step(actions).observation


@pytest.mark.parametrize("config", [
    EconomyConfig(num_agents=5, resources=("food",), jobs=(Job("farm", output=(1.0,)),), need=(1.0,), max_steps=8),
    EconomyConfig(num_agents=1, max_steps=8),  # nobody to attend to; every newborn is a founder
    EconomyConfig(num_agents=6, num_peers=9, max_steps=8),  # more peer slots than peers
], ids=["one_resource", "one_agent", "padded_peers"])
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_learners_run_whole_episodes_of_edge_economies(config, name):
    learner, economy, observation = started(config, name, update_every=3)
    while not economy.done:
        out = economy.step(learner.act(observation))
        metrics = learner.update(out)
        assert all(math.isfinite(v) for v in metrics.values())
        learner.on_births(out.births)
        observation = out.observation


def observation_with_mask(config, mask):
    """A random observation of the default layout with the given peer mask [N, K]."""
    g = torch.Generator().manual_seed(5)
    n, k = mask.shape
    probe = ReinforceLearner(config)
    return Observation(torch.rand(n, probe.self_dim, generator=g),
                       torch.randn(n, k, probe.peer_dim, generator=g) * mask[..., None],
                       mask, torch.where(mask > 0, 0, -1))


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_attention_sums_to_one_over_live_peers_and_is_zero_elsewhere(name):
    config = EconomyConfig(num_agents=6)
    learner = make_learner(name, config)
    mask = (torch.rand(6, 5, generator=torch.Generator().manual_seed(1)) < 0.6).float()
    mask[0] = 0.0  # nobody to attend to
    mask[1] = 1.0
    learner.act(observation_with_mask(config, mask))
    attention = learner.last_attention
    assert attention.shape == (6, 5)
    assert bool((attention[mask == 0] == 0).all())
    live = mask.sum(1) > 0
    torch.testing.assert_close(attention.sum(1)[live], torch.ones(int(live.sum())))
    assert attention[0].sum() == 0
    if name in ("random", "uniform_attention"):  # uniform over live peers
        torch.testing.assert_close(attention[1], torch.full((5,), 0.2))


@pytest.mark.parametrize("name", ["reinforce", "ppo"])
def test_an_attention_sink_takes_one_share_of_the_softmax_and_own_features_can_turn_listening_down(name):
    """LearnerConfig.attention_sink: with every peer scoring 0, each of k live peers gets 1 / (k + 1) (the
    "nobody" entry takes the last share); raising every peer's score by the same amount through the own
    features (the social filter's bias) moves mass onto the peers, which plain softmax cannot do."""
    config = EconomyConfig(num_agents=6)
    learner = make_learner(name, config, LearnerConfig(attention_sink=True))
    mask = torch.ones(6, 5)
    mask[2, :3] = 0.0  # two live peers
    mask[0] = 0.0  # nobody: all the mass on the sink, the context is zero
    observation = observation_with_mask(config, mask)
    with torch.no_grad():
        learner.params["social_filter_net.score"].zero_()
    learner.act(observation)
    expected = mask / (mask.sum(1, keepdim=True) + 1.0)
    torch.testing.assert_close(learner.last_attention, expected)
    with torch.no_grad():  # score = v . relu(bias): the same for every peer, log(2) makes exp(score) = 2
        learner.params["social_filter_net.score"].fill_(1.0)
        learner.params["social_filter_net.w_own"].zero_()
        learner.params["social_filter_net.w_peer"].zero_()
        learner.params["social_filter_net.bias"].zero_()
        learner.params["social_filter_net.bias"][:, 0] = math.log(2.0)
    learner.act(observation)
    torch.testing.assert_close(learner.last_attention, 2.0 * mask / (2.0 * mask.sum(1, keepdim=True) + 1.0))


def test_uniform_attention_ablation_has_no_social_filter_and_averages_live_peers():
    config = EconomyConfig(num_agents=6)
    ablation, full = make_learner("uniform_attention", config), make_learner("reinforce", config)
    assert set(full.spec) - set(ablation.spec) == {"social_filter_net"}
    mask = torch.ones(6, 5)
    mask[2, :3] = 0.0
    ablation.act(observation_with_mask(config, mask))
    torch.testing.assert_close(ablation.last_attention[2], torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5]))


def reference_policy(learner, params, own, peers, blocked):
    """The policy written plainly, one network at a time, from named parameters (differentiable):
    own [N, M, S], peers [N, M, K, P], blocked [N, M, K] -> job logits (spatial world: then the 5 move
    logits; symbolic mode: then the L * V token logits), Gaussian means (G layout), clamped log stds [N, G],
    attention."""
    if learner.uniform_attention:
        live = (~blocked).to(own.dtype)
        attention = live / live.sum(-1, keepdim=True).clamp(min=1)
    else:
        f = {name: params[f"social_filter_net.{name}"] for name in ("w_own", "w_peer", "bias", "score")}
        hidden = torch.relu(torch.einsum("nms,nsa->nma", own, f["w_own"])[:, :, None] + f["bias"][:, None, None]
                            + torch.einsum("nmkp,npa->nmka", peers, f["w_peer"]))
        scores = torch.einsum("nmka,na->nmk", hidden, f["score"]).masked_fill(blocked, -1e9)
        if learner.config.attention_sink:  # "nobody" scores 0: exp(s_k) / (1 + sum_j exp(s_j))
            scores = torch.cat([scores, torch.zeros_like(scores[..., :1])], dim=-1)
        attention = torch.softmax(scores, dim=-1)[..., :blocked.shape[-1]].masked_fill(blocked, 0.0)
    x = torch.cat([own, torch.einsum("nmk,nmkp->nmp", attention, peers)], dim=-1)
    if learner.mean_context:  # the plain mean of the live peers beside the filter's context
        live = (~blocked).to(own.dtype)
        x = torch.cat([x, torch.einsum("nmk,nmkp->nmp", live / live.sum(-1, keepdim=True).clamp(min=1), peers)], -1)

    def mlp(net):  # weights [out, in] like torch.nn.Linear
        hidden = torch.tanh(torch.einsum("nmi,nhi->nmh", x, params[f"{net}.w1"]) + params[f"{net}.b1"][:, None])
        return torch.einsum("nmh,noh->nmo", hidden, params[f"{net}.w2"]) + params[f"{net}.b2"][:, None]

    production, j = mlp("production_net"), learner.economy_config.num_jobs
    broadcast, symbolic = mlp("broadcast_net"), learner.economy_config.symbolic
    # symbolic mode: broadcast_net's outputs are the L tokens' V logits each, returned after the job logits
    means = {"broadcast": broadcast[..., :0] if symbolic else broadcast, "effort": production[..., j:j + 1],
             "consume": mlp("consumption_net"), "trade_weights": mlp("trading_net")}
    nets = {"broadcast": "broadcast_net", "effort": "production_net", "consume": "consumption_net",
            "trade_weights": "trading_net"}
    assert list(learner.head_slices) == list(means)  # the G layout
    log_std = torch.cat([params[f"{nets[head]}.log_std"] for head in means if means[head].shape[-1]],
                        dim=-1).clamp(-10.0, 2.0)
    logits = torch.cat([production[..., :j], production[..., j + 1:]], dim=-1)  # job, then move (spatial world)
    logits = torch.cat([logits, broadcast], dim=-1) if symbolic else logits
    return logits, torch.cat(list(means.values()), dim=-1), log_std, attention


def test_act_samples_the_policy_and_squashes_the_samples_into_actions():
    config = with_resources(3, num_agents=4, num_peers=3)
    learner = ReinforceLearner(config)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    observation = observation_with_mask(config, mask)
    observation.self_features[:, :3] *= 50.0  # holdings enter as log1p
    jobs, draws = [], []
    for _ in range(2000):
        actions = learner.act(observation)
        u = learner.window.buffer["pre_image"][:, 0]
        s = {head: slice(*bounds) for head, bounds in learner.head_slices.items()}
        torch.testing.assert_close(actions.broadcast, torch.tanh(u[:, s["broadcast"]]))
        torch.testing.assert_close(actions.effort, torch.sigmoid(u[:, s["effort"]]).squeeze(1))
        torch.testing.assert_close(actions.consume, torch.sigmoid(u[:, s["consume"]]))
        last_logit = torch.zeros(4, 1)
        torch.testing.assert_close(actions.trade_weights,
                                   torch.softmax(torch.cat([u[:, s["trade_weights"]], last_logit], 1), 1))
        jobs.append(torch.nn.functional.one_hot(actions.job, config.num_jobs).float())
        draws.append(u.clone())
    own, peers = observation.self_features.clone(), observation.peers.clone()
    own[:, :3], peers[..., -3:] = own[:, :3].log1p(), peers[..., -3:].clamp(min=0).log1p()
    torch.testing.assert_close(learner.window.buffer["own"][:, 0], own)
    logits, mean, log_std, attention = reference_policy(learner, learner.params, own[:, None], peers[:, None],
                                                        (mask == 0)[:, None])
    torch.testing.assert_close(learner.last_attention, attention[:, 0])
    jobs, draws = torch.stack(jobs), torch.stack(draws)  # [2000, N, J], [2000, N, G]; tolerances ~4 standard errors
    torch.testing.assert_close(jobs.mean(0), torch.softmax(logits[:, 0], -1), atol=0.045, rtol=0)
    torch.testing.assert_close(draws.mean(0), mean[:, 0], atol=0.06, rtol=0)
    torch.testing.assert_close(draws.std(0), log_std.exp(), atol=0.045, rtol=0)


def test_tanh_via_sigmoid_is_accurate():
    from agents.networks import tanh_
    x = torch.linspace(-30, 30, 20001)
    torch.testing.assert_close(tanh_(x.clone()), torch.tanh(x), atol=2e-7, rtol=0)


# -- learning ---------------------------------------------------------------------------------
def test_update_reports_metrics_when_it_learns_and_clears_the_window_on_truncation():
    config = EconomyConfig(num_agents=12, max_steps=7)
    learner, economy, observation = started(config, update_every=3)
    _, metrics = run(learner, economy, observation, 7)
    assert [bool(m) for m in metrics] == [False, False, True, False, False, True, True]  # 3, 6, then truncation at 7
    assert {"loss", "entropy", "grad_norm"} <= set(metrics[2])
    assert all(math.isfinite(v) for v in metrics[2].values())
    assert learner.state_dict()["window_step"] == 0


def test_agents_learn_independently():
    """Changing agent j's rewards changes agent j's update and nobody else's."""
    results = []
    for bonus in (0.0, 5.0):
        learner, economy, observation = started(update_every=4)
        j = 3
        def change(out, j=j, bonus=bonus):
            reward = out.reward.clone()
            reward[j] += bonus * torch.rand(())
            return dataclasses.replace(out, reward=reward, death_cause=torch.zeros_like(out.death_cause))
        torch.manual_seed(0)
        run(learner, economy, observation, 4, change)
        results.append(learner.flat_params.clone())
    same = (results[0] == results[1]).all(dim=1)
    assert same.tolist() == [i != 3 for i in range(12)]


def test_a_dead_agents_steps_do_not_train_the_newborn_in_its_slot():
    results = []
    for bonus in (0.0, 3.0):
        learner, economy, observation = started(update_every=4)
        count = [0]
        def change(out, bonus=bonus, count=count):
            count[0] += 1
            reward, cause = out.reward.clone(), torch.zeros_like(out.death_cause)
            if count[0] == 2:  # the agent in slot 5 dies at the window's second step with a changed reward
                cause[5] = 1
                reward[5] += bonus
            return dataclasses.replace(out, reward=reward, death_cause=cause)
        run(learner, economy, observation, 4, change)
        results.append(learner.flat_params.clone())
    assert torch.equal(results[0], results[1])


def test_state_dict_round_trip_reproduces_actions_and_updates_bit_exactly():
    learner, economy, observation = started(update_every=3)
    observation, _ = run(learner, economy, observation, 4)  # mid-window
    # state_dict returns live tensors (a checkpoint writes them at once): keep a copy across steps
    saved_learner, saved_economy = copy.deepcopy(learner.state_dict()), copy.deepcopy(economy.state_dict())
    assert saved_learner["window"]["pre_image"].shape[1] == 1  # only the filled step of the window is saved
    run(learner, economy, observation, 5)
    expected = learner.state_dict()
    other, other_economy, _ = started(seed=9, update_every=3)
    other.load_state_dict(saved_learner)
    other_economy.load_state_dict(saved_economy)
    run(other, other_economy, other_economy.observation, 5)
    got = other.state_dict()
    assert torch.equal(got["params"], expected["params"])
    assert torch.equal(got["generator"], expected["generator"])
    assert torch.equal(got["window"]["pre_image"], expected["window"]["pre_image"])
    assert torch.equal(got["optimizer"]["exp_avg_sq"][0], expected["optimizer"]["exp_avg_sq"][0])


def test_window_peers_that_are_not_rows_of_one_table_are_saved_as_they_are_and_resume_exactly():
    """Synthetic observations whose peer slots all claim row 0 but show different features: the compact
    form (rows of one table) cannot hold them, so the window keeps the features themselves."""
    config = with_resources(3, num_agents=4, num_peers=3, max_steps=20)
    learner = ReinforceLearner(config, LearnerConfig(update_every=4))
    observation = observation_with_mask(config, torch.ones(4, 3))
    for step in range(2):  # two window steps (as update would advance them, without needing a StepOutput)
        learner.act(observation)
        learner._t = step + 1
    state = copy.deepcopy(learner.state_dict())
    assert torch.equal(state["window"]["peers"], learner.window.buffer["peers"][:, :2])
    other = ReinforceLearner(config, LearnerConfig(update_every=4, seed=5))
    other.load_state_dict(state)
    assert torch.equal(other.window.buffer["peers"][:, :2], learner.window.buffer["peers"][:, :2])


def test_random_learner_state_round_trip():
    learner, economy, observation = started(learner="random")
    saved = learner.state_dict()
    first = learner.act(observation)
    other = make_learner("random", SMALL, LearnerConfig(seed=4))
    other.load_state_dict(saved)
    second = other.act(observation)
    assert all(torch.equal(getattr(first, k), getattr(second, k)) for k in ("broadcast", "job", "effort", "consume"))
    assert learner.update(economy.step(first)) == {}


# -- births -----------------------------------------------------------------------------------
def births(n, rows, parents):
    born = torch.zeros(n, dtype=torch.bool)
    born[rows] = True
    slots = torch.full((n, 2), -1, dtype=torch.long)
    slots[rows] = torch.tensor(parents)
    return Births(born, slots, int((slots[:, 0] < 0).logical_and(born).sum()))  # founders, as the economy counts them


def test_newborn_networks_are_a_parents_network_plus_mutation_noise():
    mutation = 0.05
    learner = ReinforceLearner(EconomyConfig(num_agents=40), LearnerConfig(param_mutation=mutation))
    before = {k: v.clone() for k, v in learner.params.items()}
    rows = list(range(20, 40))
    parents = [[i % 10, 10 + i % 7] for i in rows]
    learner.on_births(births(40, rows, parents))
    residuals, chose_second = [], []
    for row, (first, second) in zip(rows, parents):
        for net in learner.spec:
            keys = [k for k in before if k.startswith(net + ".")]
            child = torch.cat([learner.params[k][row].flatten() for k in keys])
            a = torch.cat([before[k][first].flatten() for k in keys])
            b = torch.cat([before[k][second].flatten() for k in keys])
            near_b = (child - b).abs().max() < (child - a).abs().max()
            chose_second.append(bool(near_b))
            residuals.append(child - (b if near_b else a))
    residuals = torch.cat(residuals)
    assert residuals.abs().max() < 6 * mutation  # every entry is the chosen parent's plus small noise
    assert residuals.std().item() == pytest.approx(mutation, rel=0.05)
    assert residuals.mean().abs().item() < 0.05 * mutation
    assert 0.3 < sum(chose_second) / len(chose_second) < 0.7  # a fair coin per network
    untouched = list(range(20))
    assert torch.equal(learner.flat_params[untouched], torch.cat([before[k][untouched].flatten(1) for k in before], 1))


def test_founders_get_fresh_networks():
    learner = ReinforceLearner(EconomyConfig(num_agents=5), LearnerConfig(init_log_std=-0.7))
    with torch.no_grad():
        learner.flat_params.add_(1.0)
    learner.on_births(births(5, [2], [[-1, -1]]))
    assert bool((learner.params["production_net.log_std"][2] == -0.7).all())
    assert learner.params["broadcast_net.w1"][2].abs().max() < 1.0  # a fresh U(+-1/sqrt(fan_in)) init
    assert bool((learner.params["broadcast_net.w1"][1] > 0).all())


def test_newborns_get_fresh_optimizer_state_and_baseline():
    learner, economy, observation = started(update_every=2)
    run(learner, economy, observation, 4)
    learner.optimizer.steps.fill_(2)
    learner.baseline_updates.fill_(2)
    learner.on_births(births(12, [4, 9], [[0, 1], [2, 3]]))
    assert learner.optimizer.steps.tolist() == [0 if i in (4, 9) else 2 for i in range(12)]
    assert learner.baseline_updates.tolist() == [0 if i in (4, 9) else 2 for i in range(12)]
    for state in learner.optimizer.exp_avg + learner.optimizer.exp_avg_sq:
        assert bool((state[[4, 9]] == 0).all()) and bool((state[0] != 0).any())


# -- does it learn? ---------------------------------------------------------------------------
def mean_reward(name, steps, seed=0, **learner_options):
    """Mean reward per agent-step over the last quarter of `steps` steps of a 20-agent economy."""
    config = EconomyConfig(num_agents=20, seed=seed)
    learner, economy, observation = started(config, name, seed, **learner_options)
    rewards = []
    for _ in range(steps):
        out = economy.step(learner.act(observation))
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
        rewards.append(float(out.reward.mean()))
        if economy.done:
            observation = economy.reset()
    return sum(rewards[-steps // 4:]) / (steps // 4)


def test_training_beats_the_same_learner_frozen_by_a_margin_over_several_seeds():
    """Learning, without hanging on one seed's luck: over k = 4 seeds, the mean of the paired difference
    in mean reward per agent-step (last quarter of 600 steps) between REINFORCE and the same learner
    with learning_rate 1e-12 (its initial policy, which already beats uniform random actions, so
    "beats random" would not show learning) exceeds 0.03.

    Measured over seeds 0-7 (issue 12): differences 0.075, 0.052, 0.056, 0.138, 0.061, 0.068, 0.027,
    0.082; mean 0.070, standard deviation 0.032 per seed, 0.016 for a mean of 4. A change that only
    reshuffles the random streams fails this test with probability P(z < (0.03 - 0.070) / 0.016 = -2.5)
    ~ 0.6% (normal approximation). A learner that learns nothing (true difference 0) passes with
    probability P(z > 0.03 / 0.016 = 1.9) ~ 3%; gradient ascent instead of descent measured 0.016."""
    differences = [mean_reward("reinforce", 600, seed) - mean_reward("reinforce", 600, seed, learning_rate=1e-12)
                   for seed in range(4)]
    assert sum(differences) / len(differences) > 0.03, differences


def test_social_filter_weights_start_uniform_within_one_over_root_fan_in():
    """Like torch.nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = own + peer features; with
    thousands of draws per block the largest magnitude comes within 2% of the bound."""
    learner = make_learner("reinforce", SMALL, LearnerConfig(seed=3))
    bound = 1.0 / math.sqrt(learner.self_dim + learner.peer_dim)
    for name in ("w_own", "w_peer"):
        largest = learner.params[f"social_filter_net.{name}"].abs().max().item()
        assert 0.98 * bound < largest <= bound, (name, largest, bound)
