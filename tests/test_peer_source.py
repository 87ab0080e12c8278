"""`Observation.peer_source` (where a lazy observation's peers come from: one public table and the rows shown)
and the compact window that keeps that table instead of the gathered peers (agents.window
`keep_source_peers`, issue 19). References: the economy's public features computed with NumPy, the gathered
peers themselves, and the same learner fed eager copies of the observations (the checked path of the
window, which keeps the gathered peers)."""
from __future__ import annotations

import copy
import dataclasses
import pickle

import numpy as np
import pytest
import torch
from test_observe_scale import run as run_randomly

from agents import LearnerConfig
from agents.reinforce import ReinforceLearner
from homoecon_env import EconomyConfig
from homoecon_env.core import Economy, observe

pytestmark = pytest.mark.usefixtures("one_thread")

N, K = 40, 8
ALIVE = EconomyConfig(num_agents=N, num_peers=K)  # sampled peers, every slot live
FINAL = EconomyConfig(num_agents=60, num_peers=8, max_steps=4)  # after 4 steps: dead agents, masked
PADDED = EconomyConfig(num_agents=120, num_peers=16, world_width=3, world_height=3, peer_radius=0)  # -1 padding


def bits(tensor) -> np.ndarray:
    """The raw bits of a float tensor or array (so -0.0 differs from 0.0)."""
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu().contiguous().numpy()
    array = np.ascontiguousarray(tensor)
    return array.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[array.itemsize])


@pytest.mark.parametrize("config, steps, masked", [(ALIVE, 3, None), (FINAL, 4, "dead"), (PADDED, 2, "padding")],
                         ids=["alive", "dead", "padding"])
def test_peer_source_rows_of_the_public_table_are_the_gathered_peers(config, steps, masked):
    """The source's table is the public features (NumPy, to the bit); its rows give every live slot's peer to
    the bit; every other slot's peer is a zero signed as its row's values; the mask and the peer index are
    the live slots and their rows. Exercised with dead agents shown (the final step) and with padded slots."""
    economy = run_randomly(config, steps)
    observation, state = economy.observation, economy.state_arrays
    source = observation.peer_source
    public = observe.public_features(state, config)
    assert source is not None and np.array_equal(bits(source.public), bits(public))
    rows, index = source.rows.numpy(), observation.peer_index.numpy()
    live = np.ones(rows.shape, dtype=bool) if source.live is None else source.live.numpy()
    assert rows.min() >= 0 and rows.max() < config.num_agents
    assert np.array_equal(live, observation.peer_mask.numpy() == 1)
    assert np.array_equal(index, np.where(live, rows, -1))
    peers = observation.peers.numpy()  # the gathered peers: the reference
    assert np.array_equal(bits(peers[live]), bits(public[rows[live]]))
    assert (peers[~live] == 0).all() and np.array_equal(np.signbit(peers[~live]), np.signbit(public[rows[~live]]))
    if masked == "dead":  # dead agents are shown, masked
        assert (~state.alive[rows[~live]]).any()
    if masked == "padding":  # empty slots (index -1 from the regional sampler)
        assert (index == -1).any() and (state.alive[rows[~live]]).any()
    assert (~live).any() == (masked is not None)
    assert observation.peer_source is not None  # the source outlives the first read
    assert np.array_equal(bits(observation.peer_source.gather()), bits(peers))


def test_peer_source_survives_copies_but_not_replace_nor_a_pickle_taken_after_the_read():
    """An eager observation (a ready peers tensor, or `dataclasses.replace`, which may change the peers) has no
    source; copies and pickles of an unread lazy observation keep it; a pickle (or copy) taken after the read
    holds the same state as before the source outlived the read (the gathered peers only): it is eager."""
    observation = run_randomly(ALIVE, 1).observation
    unread, copied = pickle.loads(pickle.dumps(observation)), copy.deepcopy(observation)
    assert unread.peer_source is not None and "peers" not in unread.__dict__
    peers = observation.peers
    for other in (unread, copied):
        assert other.peer_source is not None and np.array_equal(bits(other.peers), bits(peers))
    for read in (pickle.loads(pickle.dumps(observation)), copy.deepcopy(observation)):
        assert read.peer_source is None and np.array_equal(bits(read.peers), bits(peers))
    assert dataclasses.replace(observation).peer_source is None
    assert observe.Observation(observation.self_features, peers, observation.peer_mask,
                               observation.peer_index).peer_source is None


# -- the compact window -------------------------------------------------------------------------------
@pytest.fixture
def compact(monkeypatch):
    """Windows of 40 to 120 slots kept compact (above update_rows = 16), act's social filter in blocks."""
    monkeypatch.setattr(ReinforceLearner, "update_rows", 16)
    monkeypatch.setattr(ReinforceLearner, "filter_rows", 12)


def prepared(observation, dtype, r: int) -> torch.Tensor:
    """The peers as act prepares them from the gathered peers: in the learner's dtype, holdings as log1p(max(0, h))."""
    peers = observation.peers.to(dtype)
    peers[..., -r:] = peers[..., -r:].clamp(min=0).log1p()
    return peers


def zeros_are_not_all_positive(observation) -> bool:
    """Whether some slot that is not live shows a row with a negative (or -0.0) or non-finite value, so that its
    gathered peer holds -0.0 or NaN: what the window's empty row (+0.0) cannot give."""
    source = observation.peer_source
    if source.live is None:
        return False
    shown = source.public.numpy()[source.rows.numpy()[~source.live.numpy()]]
    return bool((np.signbit(shown) | ~np.isfinite(shown)).any())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config, steps, masked_step", [(ALIVE, 3, None), (FINAL, 4, None), (PADDED, 2, None),
                                                        (ALIVE, 3, 1), (ALIVE, 3, 0)],
                         ids=["alive", "dead", "padding", "masked_zeros", "masked_signed_zero"])
def test_a_compact_window_keeps_a_source_step_as_the_peers_act_prepares_to_the_bit(compact, config, steps,
                                                                                     masked_step, dtype):
    """Acting on a lazy observation, the compact window's step (and the peers it rebuilds for learning) are
    the gathered peers as act prepares them, to the bit; the step is kept as a table unless a slot that is not
    live shows a signed zero or NaN (dead agents and padding here, and `with_masked_slots`' even steps), and
    act gathers no [N, K, P] peers when it is."""
    economy = run_randomly(config, steps)
    observation = economy.observation
    if masked_step is not None:
        observation = with_masked_slots(observation, masked_step)
    learner = ReinforceLearner(config, LearnerConfig(seed=2, dtype=dtype))
    assert learner.window.peer_table
    learner.act(observation)
    window, r = learner.window, config.num_resources
    dense = zeros_are_not_all_positive(observation)
    assert dense == (config is not ALIVE or masked_step == 0)  # each case is exercised
    assert window.is_dense[0] == dense
    assert ("peers" in observation.__dict__) == dense  # the source path reads no gathered peers
    expected = bits(prepared(observation, learner.dtype, r))
    assert np.array_equal(bits(window.step_peers[:, 0]), expected)
    assert np.array_equal(bits(window.peers(1)[:, 0]), expected)
    assert np.array_equal(bits(window.block_peers(slice(5, 17), 1)[:, 0]), expected[5:17])
    if not dense:  # the rows kept are the peer index, N for an empty slot
        index = observation.peer_index.numpy()
        assert np.array_equal(window.peer_rows[:, 0].numpy(), np.where(index < 0, config.num_agents, index))


def with_masked_slots(observation, step: int):
    """A lazy observation with slots 3 (peer 0) and 5 (every peer) not live: on odd steps their rows show only
    values >= +0.0 (the absolute values; the window keeps a table), on even steps slot 5's first row shows
    -0.5 (its gathered peer holds -0.0 there: the window keeps the peers whole)."""
    public, rows, live = observation.peer_source
    public = public.abs()
    live = torch.ones(rows.shape, dtype=torch.bool) if live is None else live.clone()
    live[3, 0], live[5] = False, False
    if step % 2 == 0:
        public[rows[5, 0], 1] = -0.5
    index = torch.where(live, rows, -1)
    return observe.Observation.lazy(observation.self_features, public, rows, live, live.float(), index)


def as_is(observation, step: int):
    return observation


def lockstep(learners, steps: int, config, transforms):
    """Each learner acts on the same observation (through its transform), the first one's actions step the
    economy; returns each learner's actions' bits, step by step."""
    economy = Economy(config)
    observation = economy.reset(1)
    traces = [[] for _ in learners]
    for step in range(steps):
        actions = [learner.act(transform(observation, step)) for learner, transform in zip(learners, transforms)]
        for trace, action in zip(traces, actions):
            trace += [bits(getattr(action, name)).tobytes() for name in ("broadcast", "job", "effort",
                                                                           "trade_weights", "consume")]
        out = economy.step(actions[0])
        for learner in learners:
            learner.update(out)
            learner.on_births(out.births)
        observation = out.observation
    return traces


def learnt(learner) -> list:
    optimizer = learner.optimizer
    return [bits(tensor).tobytes() for tensor in [learner.flat_params, learner.baseline, *optimizer.exp_avg,
                                                  *optimizer.exp_avg_sq]]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config, masked", [(ALIVE, False), (ALIVE, True), (PADDED, False)],
                         ids=["economy", "masked_slots", "padding"])
def test_a_learner_keeping_source_tables_trains_as_on_eager_copies_to_the_bit(compact, config, masked, dtype):
    """Over two windows and a half, a compact learner given the lazy observations (the source's tables) acts,
    learns and checkpoints to the bit as the same learner given eager copies (the checked gathered peers)."""
    made = [ReinforceLearner(config, LearnerConfig(seed=3, dtype=dtype)) for _ in range(2)]
    lazy = with_masked_slots if masked else as_is

    def copied(observation, step: int):
        return dataclasses.replace(lazy(observation, step))  # the peers gathered: an eager copy, no source

    on_tables, on_copies = lockstep(made, 12, config, [lazy, copied])
    assert on_tables == on_copies
    assert learnt(made[0]) == learnt(made[1])
    first, second = made[0].state_dict()["window"], made[1].state_dict()["window"]
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert (bits(value).tobytes() == bits(second[key]).tobytes()) if isinstance(value, torch.Tensor) \
            else value == second[key], key
    if masked:  # steps 10 (even: -0.0 shown) and 11 (odd: +0.0 only) are in the window
        assert made[0].window.is_dense[:2] == [True, False]
