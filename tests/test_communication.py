"""Communication metrics (homoecon_env.diagnostics.communication) against hand-worked values and
statistical properties."""
import math

import numpy as np
import pytest
import torch

from homoecon_env.core.observe import Observation
from homoecon_env.diagnostics import communication as comm


# -- entropy ---------------------------------------------------------------------------------------
def test_binned_message_entropy_matches_hand_worked_distribution():
    # 4 equal-width bins over [-1, 1]: edges -1, -0.5, 0, 0.5, 1.
    messages = np.array([[-0.9, -0.9], [-0.8, -0.95],  # both (0, 0)
                         [0.9, 0.1],  # (3, 2)
                         [0.3, -0.3]])  # (2, 1)
    assert comm.message_entropy(messages, bins=4) == pytest.approx(1.5)  # p = 1/2, 1/4, 1/4
    tokens = np.array([[1, 2], [1, 2], [1, 2], [3, 0]])  # p = 3/4, 1/4
    assert comm.message_entropy(tokens) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_message_entropy_spans_zero_to_log2_n():
    assert comm.message_entropy(np.full((8, 3), 0.2)) == 0.0
    distinct = np.linspace(-0.99, 0.99, 8)[:, None]  # one per bin with 8 bins
    assert comm.message_entropy(distinct, bins=8) == pytest.approx(3.0)


def test_message_entropy_rejects_non_finite_messages():
    with pytest.raises(ValueError, match="messages"):
        comm.message_entropy(np.array([[0.0, np.nan]]))


# -- topographic similarity ------------------------------------------------------------------------
def test_topographic_similarity_is_one_for_distance_preserving_messages():
    rng = np.random.default_rng(0)
    meanings = rng.normal(size=(40, 3))
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    messages = 0.3 * meanings @ rotation + 0.1  # every distance scaled by 0.3: same order of pairs
    assert comm.topographic_similarity(meanings, messages) == pytest.approx(1.0)


def test_topographic_similarity_near_zero_for_independent_messages():
    # Null SD measured over 100 seeds at N = 200 (19900 dependent pairs): 0.022, max |r| 0.076;
    # 0.1 is about 4.5 null SDs.
    rng = np.random.default_rng(1)
    value = comm.topographic_similarity(rng.normal(size=(200, 3)), rng.uniform(-1, 1, size=(200, 6)))
    assert abs(value) < 0.1


def test_topographic_similarity_subsample_is_seeded_and_close_to_all_pairs():
    rng = np.random.default_rng(2)
    meanings = rng.normal(size=(120, 2))
    messages = np.tanh(meanings[:, :1]) + 0.3 * rng.normal(size=(120, 1))  # partly structured
    full = comm.topographic_similarity(meanings, messages)
    first = comm.topographic_similarity(meanings, messages, np.random.default_rng(5), max_pairs=3000)
    again = comm.topographic_similarity(meanings, messages, np.random.default_rng(5), max_pairs=3000)
    assert first == again
    assert abs(first - full) < 0.05  # 3000 of 7140 pairs
    with pytest.raises(ValueError, match="rng"):
        comm.topographic_similarity(meanings, messages, None, max_pairs=3000)


# -- mutual information ----------------------------------------------------------------------------
def test_mi_of_a_copied_state_is_the_state_entropy_and_far_above_the_shuffled_baseline():
    rng = np.random.default_rng(3)
    state = rng.normal(size=400)
    messages = np.stack([np.tanh(state), rng.uniform(-1, 1, 400)], axis=1)  # dim 0: a monotone copy
    mi, shuffled = comm.message_state_mi_baseline(messages, state, rng)
    assert mi == pytest.approx(2.0)  # same equal-frequency codes: MI = H(4 equal bins) = 2 bits
    assert shuffled < 0.1


def test_mi_of_independent_messages_matches_the_shuffled_baseline():
    # Under independence the plug-in MI of a 4 x 4 table is biased by (4-1)(4-1) / (2 N ln 2) = 0.016
    # bits per dimension at N = 400 (Miller-Madow); the max over 6 dimensions measured 0.027 +- 0.007
    # over 30 seeds, and |MI - baseline| at most 0.019.
    rng = np.random.default_rng(4)
    mi, shuffled = comm.message_state_mi_baseline(rng.uniform(-1, 1, (400, 6)), rng.normal(size=400), rng)
    assert 9 / (2 * 400 * math.log(2)) < shuffled < 0.06
    assert abs(mi - shuffled) < 0.04


def test_mi_rejects_a_state_of_the_wrong_length():
    with pytest.raises(ValueError, match="state"):
        comm.message_state_mi(np.zeros((5, 2)), np.zeros(4))


# -- causal influence ------------------------------------------------------------------------------
B = 2


def _observation():
    """3 agents; agents 1 and 2 see slot 0's message, agent 0 sees 1 and 2; peer features =
    [message (B), holdings (1)]."""
    messages = torch.tensor([[0.5, -0.2], [0.1, 0.4], [-0.3, 0.3]])
    peer_index = torch.tensor([[1, 2], [0, 2], [0, -1]])
    peers = torch.zeros(3, 2, B + 1)
    for i in range(3):
        for k in range(2):
            j = int(peer_index[i, k])
            if j >= 0:
                peers[i, k, :B], peers[i, k, B] = messages[j], 7.0
    return Observation(self_features=torch.ones(3, 4), peers=peers, peer_mask=(peer_index >= 0).float(),
                       peer_index=peer_index), messages


def _linear_listener(weight):
    def listen(observation):  # action_i = weight * sum of the messages agent i sees (+ own features)
        seen = (observation.peers[..., :B] * observation.peer_mask[..., None]).sum(dim=1)
        return (weight * seen + observation.self_features[:, :B]).numpy()
    return listen


def test_causal_influence_of_a_linear_listener_is_weight_times_message_change():
    observation, messages = _observation()
    zero = lambda obs, s: comm.zero_speaker_message(obs, s, B)  # noqa: E731
    influence = comm.causal_influence(_linear_listener(2.0), observation, zero, speakers=[0])
    # agents 1 and 2 see speaker 0: each output moves by 2 * |m_0| = 2 * sqrt(0.29); mean over i != 0
    assert influence == pytest.approx(2.0 * math.sqrt(0.29))
    influence = comm.causal_influence(_linear_listener(2.0), observation, zero, speakers=[2])
    # only agents 0 and 1 see speaker 2 (agent 2 never listens to itself): 2 * |m_2| for both
    assert influence == pytest.approx(2.0 * math.sqrt(0.18))
    # speaker 1 is seen by agent 0 only: (2 * |m_1| + 0) / 2
    influence = comm.causal_influence(_linear_listener(2.0), observation, zero, speakers=[1])
    assert influence == pytest.approx(math.sqrt(0.17))


def test_causal_influence_is_zero_for_a_listener_that_ignores_messages():
    observation, _ = _observation()
    zero = lambda obs, s: comm.zero_speaker_message(obs, s, B)  # noqa: E731
    assert comm.causal_influence(_linear_listener(0.0), observation, zero, speakers=[0, 1, 2]) == 0.0


def test_zero_speaker_message_leaves_the_original_and_other_features_untouched():
    observation, _ = _observation()
    before = observation.peers.clone()
    changed = comm.zero_speaker_message(observation, 0, B)
    assert torch.equal(observation.peers, before)
    assert torch.equal(changed.peers[1, 0, :B], torch.zeros(B)) and changed.peers[1, 0, B] == 7.0
    assert torch.equal(changed.peers[0], before[0])  # agent 0 does not see itself


# -- the learner adapter and the rollout ----------------------------------------------------------
def _economy_after(steps, num_agents=8, seed=1):
    """A small default economy and the observation after ``steps`` random-ish steps (so messages are
    non-zero: at reset every last broadcast is 0)."""
    from agents import LearnerConfig, make_learner
    from homoecon_env.config import EconomyConfig
    from homoecon_env.core import Economy

    config = EconomyConfig(num_agents=num_agents)
    economy = Economy(config)
    observation = economy.reset(seed=seed)
    driver = make_learner("reinforce", config, LearnerConfig(seed=seed))
    for _ in range(steps):
        observation = economy.step(driver.act(observation)).observation
    return config, observation


def _actions_equal(a, b):
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("broadcast", "job", "effort", "trade_weights",
                                                                    "consume"))


def test_learner_listener_reproduces_the_learners_own_act_and_leaves_it_untouched():
    import copy

    from agents import LearnerConfig, make_learner
    config, observation = _economy_after(3)
    learner = make_learner("reinforce", config, LearnerConfig(seed=7))
    reference = copy.deepcopy(learner)  # the same state, never measured
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    listen = comm.learner_listener(learner, config.num_jobs)
    first, second = listen(observation), listen(observation)
    np.testing.assert_array_equal(first, second)  # a function of the observation
    influence = comm.learner_influence(learner, observation, config.broadcast_dim, config.num_jobs,
                                       np.random.default_rng(0))
    assert influence > 0  # the networks read peers' messages (attention and context)
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    actions = learner.act(observation)
    assert _actions_equal(actions, reference.act(observation))  # the measured learner acts as if never measured
    np.testing.assert_array_equal(first, comm.actions_matrix(actions, config.num_jobs))  # = its own act


def test_learner_influence_is_zero_for_the_scripted_learner_which_ignores_messages():
    from agents import LearnerConfig, make_learner
    config, observation = _economy_after(3)
    learner = make_learner("scripted", config, LearnerConfig(seed=7))
    assert comm.learner_influence(learner, observation, config.broadcast_dim, config.num_jobs,
                                  np.random.default_rng(0), speakers=8) == 0.0


def test_learner_influence_is_nan_for_a_learner_that_cannot_be_copied():
    import threading

    class Locked:
        lock = None

        def __init__(self):
            self.lock = threading.Lock()

        def act(self, observation):
            raise AssertionError("never reached")

    _, observation = _economy_after(0)
    assert math.isnan(comm.learner_influence(Locked(), observation, 6, 2, np.random.default_rng(0)))


def test_measuring_communication_leaves_the_recorded_rollout_unchanged(monkeypatch):
    from agents import LearnerConfig
    from homoecon_env.config import EconomyConfig
    from homoecon_lab import rollouts

    task = rollouts.Task(key=("main", 0), economy=EconomyConfig(num_agents=8), learner="reinforce",
                         learner_config=LearnerConfig(seed=2), economy_seed=5, steps=20, learn=True, detail=True)
    measured = rollouts.run_task(task, lambda k: None)
    assert len(measured["communication"]["causal_influence"]) > 0
    assert np.isfinite(measured["communication"]["message_entropy"]).all()
    monkeypatch.setattr(rollouts.Trace, "record_influence", lambda self, t, learner, observation: None)
    monkeypatch.setattr(rollouts.communication, "step_summary", lambda *a, **k: dict.fromkeys(comm.STEP_KEYS, 0.0))
    plain = rollouts.run_task(task, lambda k: None)
    np.testing.assert_array_equal(measured["reward"], plain["reward"])
    np.testing.assert_array_equal(measured["jobs"], plain["jobs"])
    np.testing.assert_array_equal(measured["final"]["broadcasts"], plain["final"]["broadcasts"])
