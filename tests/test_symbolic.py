"""The symbolic broadcast mode (docs/design.md section 11): L tokens from V symbols, seen by peers as
one-hots; every check against an independent reference (hand-worked one-hots, PettingZoo's own test
utilities, torch.distributions, a hand-built flat action, a straight run against a resumed one)."""
import copy
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo.test import api_test, parallel_api_test
from test_env_api import strict
from test_train import assert_identical
from torch.distributions import Categorical, Normal

import homoecon_env
from agents import LearnerConfig, make_learner
from agents.checkpoint import load_checkpoint
from agents.ppo import log_prob_and_entropy
from homoecon_env import EconomyConfig
from homoecon_env.core import Actions, Economy
from homoecon_env.diagnostics import communication
from homoecon_env.slot_env import slot_env, slot_parallel_env
from homoecon_lab import training
from homoecon_lab.cli import parse_train_args
from homoecon_lab.evaluation import Args, load_source
from homoecon_lab.recorder import message_views

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
V, L = 3, 2
SYMBOLIC = dict(broadcast_mode="symbolic", vocab_size=V, message_length=L)
# No deaths: nobody starves (min_consumption 0) or ages out within the test, so rows keep their agents.
IMMORTAL = dict(num_agents=3, max_steps=20, max_age=10**6, min_consumption=0.0, **SYMBOLIC)
# Hand-worked one-hots, token l of V = 3 symbols at columns 3l .. 3l + 2.
TOKENS = np.array([[0, 2], [1, 1], [2, 0]])
ONE_HOTS = np.array([[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 1, 0], [0, 0, 1, 1, 0, 0]], dtype=np.float32)


def token_actions(env, rng, tokens=None) -> dict:
    """Valid Dict actions for every live agent, broadcast = tokens[i] (or random tokens)."""
    out = {}
    for i, name in enumerate(env.agents):
        out[name] = {"broadcast": np.asarray(tokens[i] if tokens is not None else rng.integers(0, V, L)),
                     "job": int(rng.integers(2)), "effort": rng.uniform(0, 1, (1,)).astype(np.float32),
                     "trade_weights": rng.uniform(0, 1, (2,)).astype(np.float32),
                     "consume": rng.uniform(0, 1, (2,)).astype(np.float32)}
    return out


# -- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, words", [
    ("broadcast_mode", "morse", ["broadcast_mode", "'continuous'", "'symbolic'", "morse"]),
    ("vocab_size", 1, ["vocab_size", ">= 2"]), ("vocab_size", 2.0, ["vocab_size"]),
    ("message_length", 0, ["message_length", ">= 1"]), ("message_length", True, ["message_length"]),
])
def test_config_refuses_a_bad_mode_or_size_naming_the_field(field, value, words):
    with pytest.raises(ValueError) as info:
        EconomyConfig(**{**SYMBOLIC, field: value})
    assert all(word in str(info.value) for word in words), info.value


def test_continuous_is_the_default_and_a_symbolic_message_is_L_times_V_columns_wide():
    assert EconomyConfig().broadcast_mode == "continuous" and EconomyConfig().message_width == 6
    assert EconomyConfig(**SYMBOLIC, broadcast_dim=9).message_width == L * V  # B unused in this mode


# -- core and named env ---------------------------------------------------------------------------
def test_speaker_and_peers_see_the_hand_worked_one_hot_of_the_tokens_a_step_later():
    config = EconomyConfig(**IMMORTAL)
    r, s_offset = config.num_resources, 2 * config.num_resources + 2  # own message after holdings, age, effort, tastes
    economy = Economy(config)
    first = economy.reset(0)
    assert first.self_features.shape == (3, 2 * r + 2 + L * V + config.id_dim + 2 * config.num_jobs)
    assert first.peers.shape == (3, 2, L * V + config.id_dim + r)
    assert not first.self_features[:, s_offset:s_offset + L * V].any() and not first.peers[..., :L * V].any()
    actions = Actions(broadcast=torch.from_numpy(TOKENS), job=torch.zeros(3, dtype=torch.long),
                      effort=torch.ones(3), trade_weights=torch.ones(3, r), consume=torch.full((3, r), 0.5))
    observation = economy.step(actions).observation
    np.testing.assert_array_equal(observation.self_features[:, s_offset:s_offset + L * V].numpy(), ONE_HOTS)
    index = observation.peer_index.numpy()  # everyone else: rows [[1, 2], [0, 2], [0, 1]]
    np.testing.assert_array_equal(index, [[1, 2], [0, 2], [0, 1]])
    np.testing.assert_array_equal(observation.peers[..., :L * V].numpy(), ONE_HOTS[index])


def test_named_env_spaces_are_multidiscrete_tokens_and_one_hot_bounds():
    env = homoecon_env.parallel_env(**IMMORTAL)
    space = env.action_space("agent_0")["broadcast"]
    assert isinstance(space, spaces.MultiDiscrete) and space.nvec.tolist() == [V] * L
    observations, _ = env.reset(seed=3)
    observations, *_ = env.step(token_actions(env, np.random.default_rng(0), TOKENS))
    own = env.observation_space("agent_0")["self"]
    start = 2 * 2 + 2
    assert own.low[start:start + L * V].tolist() == [0.0] * (L * V)  # one-hots: [0, 1], not [-1, 1]
    np.testing.assert_array_equal(observations["agent_1"]["self"][start:start + L * V], ONE_HOTS[1])
    assert all(env.observation_space(a).contains(o) for a, o in observations.items())


def test_pettingzoo_parallel_and_aec_api_tests_pass_in_the_symbolic_mode():
    strict(lambda: parallel_api_test(homoecon_env.parallel_env(num_agents=10, max_steps=60, **SYMBOLIC),
                                     num_cycles=200))
    strict(lambda: api_test(homoecon_env.env(num_agents=6, max_steps=40, **SYMBOLIC), num_cycles=150))


@pytest.mark.parametrize("flatten", [True, False])
def test_slot_views_pass_pettingzoos_api_tests_in_the_symbolic_mode(flatten):
    small = dict(num_agents=6, max_steps=40, **SYMBOLIC)
    if flatten:  # the flat view: every warning an error, as for the continuous mode
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parallel_api_test(slot_parallel_env(**small), num_cycles=150)
            api_test(slot_env(**small), num_cycles=150)
    else:  # Dict spaces: PettingZoo's advisories about Dict spaces tolerated, as for the named env
        strict(lambda: parallel_api_test(slot_parallel_env(flatten=False, **small), num_cycles=150))
        strict(lambda: api_test(slot_env(flatten=False, **small), num_cycles=150))


def grown_twins(steps=6):
    kw = dict(num_agents=8, max_steps=60, num_peers=3, **SYMBOLIC)
    env, twin = homoecon_env.parallel_env(**kw), homoecon_env.parallel_env(**kw)
    env.reset(seed=1)
    twin.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        acts = token_actions(env, rng)
        env.step(copy.deepcopy(acts))
        twin.step(acts)
    return env, twin, token_actions(env, rng)


@pytest.mark.parametrize("bad, words", [
    (np.array([0, V]), ["out of range", str(V)]), (np.array([-1, 0]), ["out of range"]),
    (np.array([0.5, 1.0]), ["not ints", "float64"]), (np.array([1.0, 0.0]), ["not ints"]),
    (np.array([0, 1, 2]), ["shape (3,)", "(2,)"]), ([True, 0], ["not ints", "bool"]),
    (np.array(["a", "b"]), ["not ints", "text"]),
], ids=["too_large", "negative", "fraction", "whole_float", "too_long", "bool", "text"])
def test_a_bad_token_is_refused_naming_agent_and_field_and_the_env_is_unchanged(bad, words):
    from test_determinism import digest

    env, twin, acts = grown_twins()
    victim = env.agents[2]
    wrong = copy.deepcopy(acts)
    wrong[victim]["broadcast"] = bad
    before = (env.state().tobytes(), env.economy.generator.get_state().clone())
    with pytest.raises(ValueError) as info:
        env.step(wrong)
    message = str(info.value)
    assert victim in message and "'broadcast'" in message and all(w in message for w in words), message
    assert env.state().tobytes() == before[0] and torch.equal(env.economy.generator.get_state(), before[1])
    assert digest(env.step(copy.deepcopy(acts)), env.agents) == digest(twin.step(acts), twin.agents)


def test_the_core_checker_names_the_agent_of_a_fractional_or_out_of_range_token():
    economy = Economy(EconomyConfig(**IMMORTAL))
    economy.reset(0)
    base = dict(job=np.zeros(3, dtype=np.int64), effort=np.ones(3), trade_weights=np.ones((3, 2)),
                consume=np.full((3, 2), 0.5))
    for tokens, problem in ((np.array([[0, 0], [0, 1.5], [0, 0]]), "not an int"),
                            (np.array([[0, 0], [0, 0], [3, 0]]), "out of range")):
        with pytest.raises(ValueError) as info:
            economy.step(Actions(broadcast=tokens, **base))
        assert f"agent_{1 if problem == 'not an int' else 2}" in str(info.value) and problem in str(info.value)
    assert economy.state.step == 0 and not economy.state.broadcast.any()


# -- slot view ------------------------------------------------------------------------------------
def test_flat_slot_action_takes_the_argmax_of_clipped_token_scores_ties_to_the_lowest():
    """Hand-built: token 0 scores [0.2, 5, 3] clip to [0.2, 1, 1]: a tie at the bound, symbol 1; token 1
    scores [-2, -3, -0.5] clip to [-1, -1, -0.5]: symbol 2. The slot view then matches the named env
    driven with tokens [1, 2]."""
    slot = slot_parallel_env(**IMMORTAL)
    named = homoecon_env.parallel_env(**IMMORTAL)
    assert slot.layout.action_size == L * V + 2 + 1 + 2 + 2
    slot.reset(seed=5)
    named.reset(seed=5)
    scores = np.array([0.2, 5.0, 3.0, -2.0, -3.0, -0.5])
    rest = np.array([1.0, 0.0, 0.7, 0.5, 0.5, 0.3, 0.3])  # job scores [1, 0] (job 0), effort, trade, consume
    flat = {f"slot_{i}": np.concatenate([scores, rest]).astype(np.float32) for i in range(3)}
    slot.step(flat)
    dict_actions = {f"agent_{i}": {"broadcast": np.array([1, 2]), "job": 0, "effort": np.array([0.7], np.float32),
                                   "trade_weights": np.array([0.5, 0.5], np.float32),
                                   "consume": np.array([0.3, 0.3], np.float32)} for i in range(3)}
    named.step(dict_actions)
    np.testing.assert_array_equal(slot.economy.state.broadcast.numpy(), [[0, 1, 0, 0, 0, 1]] * 3)
    assert slot.state().tobytes() == named.state().tobytes()


def test_dict_slot_view_names_the_slot_of_an_out_of_range_token():
    env = slot_parallel_env(flatten=False, **IMMORTAL)
    env.reset(seed=0)
    acts = {slot: {**env.action_space(slot).sample(), "broadcast": np.array([0, 1])} for slot in env.agents}
    acts["slot_2"]["broadcast"] = np.array([V, 0])
    with pytest.raises(ValueError, match=r"slot_2: action 'broadcast' is out of range"):
        env.step(acts)


# -- learners -------------------------------------------------------------------------------------
def test_reinforce_samples_each_token_from_its_categorical_head():
    """broadcast_net's last layer set to 0 weights and biases log [0.6, 0.3, 0.1] (token 0) and log [0.1,
    0.1, 0.8] (token 1): over 12 agents x 400 draws the token frequencies match (4 sigma ~ 0.03)."""
    config = EconomyConfig(num_agents=12, max_steps=50, **SYMBOLIC)
    economy = Economy(config)
    observation = economy.reset(0)
    learner = make_learner("reinforce", config, LearnerConfig(seed=1))
    target = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    with torch.no_grad():
        learner.params["broadcast_net.w2"].zero_()
        learner.params["broadcast_net.b2"].copy_(target.log().reshape(-1))
    counts = torch.zeros(L, V)
    for _ in range(400):
        tokens = learner.act(observation).broadcast
        assert tokens.dtype == torch.int64 and tokens.shape == (12, L)
        counts += torch.nn.functional.one_hot(tokens, V).sum(0)
    torch.testing.assert_close(counts / counts.sum(1, keepdim=True), target, atol=0.03, rtol=0)


@pytest.mark.parametrize("name", ["random", "scripted", "reinforce", "uniform_attention", "ppo"])
def test_every_builtin_learner_emits_valid_tokens_through_the_economy(name):
    config = EconomyConfig(num_agents=6, max_steps=12, **SYMBOLIC)
    economy = Economy(config)
    observation = economy.reset(0)
    learner = make_learner(name, config, LearnerConfig(seed=0, update_every=4))
    for _ in range(12):
        actions = learner.act(observation)
        assert actions.broadcast.shape == (6, L) and not actions.broadcast.is_floating_point()
        assert int(actions.broadcast.min()) >= 0 and int(actions.broadcast.max()) < V
        out = economy.step(actions)  # the economy's own checks accept them
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
    if name == "scripted":  # says token 0 every time: a constant message
        assert not actions.broadcast.any()


def test_ppo_log_prob_and_entropy_equal_torch_distributions_with_tokens():
    g = torch.Generator().manual_seed(2)
    n, m, j, dims = 3, 4, 2, 3
    out = torch.randn(n, m, j + L * V + dims, generator=g, dtype=torch.float64)
    raw_log_std = 0.3 * torch.randn(n, dims, generator=g, dtype=torch.float64)
    pre_image = torch.randn(n, m, dims, generator=g, dtype=torch.float64)
    job = torch.randint(0, j, (n, m), generator=g)
    tokens = torch.randint(0, V, (n, m, L), generator=g)
    log_prob, entropy = log_prob_and_entropy(out, raw_log_std, pre_image, job, j, tokens, V)
    job_dist, token_dist = Categorical(logits=out[..., :j]), Categorical(logits=out[..., j:j + L * V].unflatten(-1,
                                                                                                            (L, V)))
    normal = Normal(out[..., j + L * V:], raw_log_std.exp()[:, None])
    torch.testing.assert_close(log_prob, job_dist.log_prob(job) + token_dist.log_prob(tokens).sum(-1)
                               + normal.log_prob(pre_image).sum(-1))
    torch.testing.assert_close(entropy, job_dist.entropy() + token_dist.entropy().sum(-1) + normal.entropy().sum(-1))


# -- lab: resume, metrics, command lines ----------------------------------------------------------
TINY = ["--num-agents", "8", "--max-steps", "25", "--log-every", "5", "--seed", "3", "--broadcast-mode", "symbolic",
        "--vocab-size", str(V), "--message-length", str(L)]


@pytest.mark.parametrize("learner", ["reinforce", "ppo"])
def test_resume_is_bit_exact_in_the_symbolic_mode(tmp_path, learner):
    """32 steps straight == 17 steps (mid-window) then --resume to 32: the same learner, economy and RNGs."""
    whole, half = tmp_path / "whole", tmp_path / "half"
    flags = [*TINY, "--learner", learner, "--update-every", "5"]
    training.train(parse_train_args(["--steps", "32", "--run-dir", str(whole), *flags]))
    training.train(parse_train_args(["--steps", "17", "--run-dir", str(half), *flags]))
    assert load_checkpoint(half / "checkpoint.pt")["learner"]["window"]["tokens"].shape[-1] == L
    training.train(parse_train_args(["--resume", str(half), "--steps", "32"]))
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(half / "checkpoint.pt")
    assert a["step"] == b["step"] == 32
    for key in ("learner", "economy", "rng"):
        assert_identical(a[key], b[key], key)


def test_message_entropy_reads_tokens_as_symbols_hand_worked():
    """Messages (0,1), (0,1), (2,0), (1,1): p = 1/2, 1/4, 1/4, H = 1.5 bits; the spectra's vectors are the
    peers' one-hots."""
    config = EconomyConfig(num_agents=4, **SYMBOLIC)
    vectors, messages = message_views(config, torch.tensor([[0, 1], [0, 1], [2, 0], [1, 1]]))
    assert messages.dtype == np.int64 and communication.message_entropy(messages) == pytest.approx(1.5)
    np.testing.assert_array_equal(vectors[2], [0, 0, 1, 1, 0, 0])


def test_train_and_evaluate_scripts_run_end_to_end_in_the_symbolic_mode(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, out = tmp_path / "run", tmp_path / "eval"
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--steps", "10", "--run-dir", str(run_dir), *TINY],
                   check=True, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert json.loads((run_dir / "config.json").read_text())["economy"]["broadcast_mode"] == "symbolic"
    events = EventAccumulator(str(run_dir)).Reload()
    entropies = [e.value for e in events.Scalars("comm/message_entropy")]
    assert entropies and all(0 <= h <= L * math.log2(V) + 1e-9 for h in entropies)
    import evaluate  # the script's main, in this process (a second interpreter costs seconds of imports)

    evaluate.main(["--run", str(run_dir), "--out", str(out), "--steps", "24", "--seeds", "2", "--frames", "2",
                   "--ablation-seeds", "2", "--ablation-train-steps", "6", "--ablation-steps", "6", "--workers", "1"])
    metrics = json.loads((out / "metrics.json").read_text())
    summary = metrics["main"]["summary"]
    ceiling = min(math.log2(8), L * math.log2(V))  # 8 speakers, V ** L = 9 messages
    assert metrics["meta"]["broadcast_mode"] == "symbolic" and metrics["meta"]["broadcast_dim"] == L * V
    assert summary["message_entropy_max"]["mean"] == pytest.approx(ceiling)
    assert 0 <= summary["message_entropy_late"]["mean"] <= ceiling + 1e-9
    assert "token(s) from a vocabulary of 3 symbols" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match=r"--message-length 3: .* trained with message_length=2"):
        load_source(Args(run=str(run_dir), message_length=3))


def test_evaluate_flags_set_the_message_mode_of_untrained_agents():
    economy = load_source(Args(broadcast_mode="symbolic", vocab_size=5, message_length=3, num_agents=4)).economy
    assert (economy.broadcast_mode, economy.message_width, economy.num_agents) == ("symbolic", 15, 4)
    with pytest.raises(ValueError, match=r"--broadcast-mode: broadcast_mode must be one of"):
        load_source(Args(broadcast_mode="morse"))


def test_a_bad_broadcast_mode_flag_ends_with_one_parser_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_train_args(["--broadcast-mode", "morse", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "train.py: error: argument --broadcast-mode:" in err and "'symbolic'" in err
