"""The compact rollout window (agents.window `peer_table`, agents.reinforce `compact_window`): above
`update_rows` slots the REINFORCE learner keeps each step's shown rows and one [N, P] table instead of the
peers [N, T, K, P], recomputes the heads' hidden layer when it learns and runs the social filter a block at
a time. The reference is the same learner keeping the window whole (`compact_window = False`): every
action, parameter, optimizer moment and checkpoint must agree to the bit, for observations from `Economy`
(rows of one table) and for observations that are not (where a step keeps its peers whole)."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from agents import LearnerConfig
from agents.reinforce import ReinforceLearner
from homoecon_env import EconomyConfig
from homoecon_env.core import Economy

N, K, STEPS = 40, 8, 12  # windows of 5 (the default): two full windows and two steps of a third
ROWS = 16  # update_rows: blocks of 13 or 14 agents, so the table keeps the peers


class WholePeers(ReinforceLearner):
    """The reference: the window keeps [N, T, K, P] peers as they are."""
    compact_window = False


def config() -> EconomyConfig:
    return EconomyConfig(num_agents=N, num_peers=K)


def not_rows_of_a_table(observation, step: int):
    """Every odd step: peers that no table gives (slot 3's first peer nudged, so a row shows two values),
    and slot 5's second peer masked and shown as -0.0 (a table's empty row gives +0.0)."""
    if step % 2 == 0:
        return observation
    peers, mask, index = observation.peers.clone(), observation.peer_mask.clone(), observation.peer_index.clone()
    peers[3, 0] += 1e-3
    peers[5, 1] = -0.0
    mask[5, 1], index[5, 1] = 0.0, -1
    return dataclasses.replace(observation, peers=peers, peer_mask=mask, peer_index=index)


def bits(tensor: torch.Tensor) -> bytes:
    return tensor.detach().contiguous().numpy().tobytes()


def run(learner_class, steps: int = STEPS, transform=None, learner=None, economy=None, observation=None):
    """Train `steps` steps; returns (learner, economy, last observation, the bytes of every action)."""
    if learner is None:
        economy = Economy(config())
        observation = economy.reset(0)
        learner = learner_class(config(), LearnerConfig(seed=3))
    trace = []
    for step in range(steps):
        seen = transform(observation, step) if transform else observation
        actions = learner.act(seen)
        trace += [bits(getattr(actions, field)) for field in ("broadcast", "job", "effort", "trade_weights", "consume")]
        out = economy.step(actions)
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
    return learner, economy, observation, trace


def learnt(learner) -> list[bytes]:
    optimizer = learner.optimizer
    return [bits(learner.flat_params), bits(learner.baseline)] + [
        bits(m) for m in optimizer.exp_avg + optimizer.exp_avg_sq + [optimizer.steps]]


@pytest.fixture
def blocked(monkeypatch):
    monkeypatch.setattr(ReinforceLearner, "update_rows", ROWS)
    monkeypatch.setattr(ReinforceLearner, "filter_rows", 12)  # act's social filter in blocks of 10 slots


@pytest.mark.parametrize("transform", [None, not_rows_of_a_table], ids=["economy", "not_rows_of_a_table"])
def test_table_window_trains_to_the_same_bits_as_the_whole_peers(blocked, transform):
    table, _, _, table_trace = run(ReinforceLearner, transform=transform)
    whole, _, _, whole_trace = run(WholePeers, transform=transform)
    assert table.window.peer_table and not whole.window.peer_table
    assert table_trace == whole_trace
    assert learnt(table) == learnt(whole)
    # an Economy's steps all rebuild from their tables; the altered steps (odd) keep their peers whole: the
    # window now holds steps 10 and 11
    assert table.window.is_dense[:table._t] == ([False, False] if transform is None else [False, True])


def test_table_window_holds_no_block_of_every_steps_peers(blocked):
    """What the table saves: the window's tensors (its scratch for the step acted on and the tables, T / K
    steps' worth, included) take at least T - 2 steps of peers [N, K, P] less than with the peers [N, T, K, P]
    kept whole."""
    table, *_ = run(ReinforceLearner, steps=3)
    whole, *_ = run(WholePeers, steps=3)

    def tensors(learner):
        w = learner.window
        found = [*w.buffer.values(), *w.activations.values(), w.peer_rows]
        found += [w.tables, w.step_peers, *[d for d in w.dense if d is not None]] if w.peer_table else []
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in found}
        return storages

    p, t = whole.peer_dim, whole.config.update_every
    assert sum(tensors(table).values()) <= sum(tensors(whole).values()) - (t - 2) * N * K * p * 4


@pytest.mark.parametrize("transform", [None, not_rows_of_a_table], ids=["economy", "not_rows_of_a_table"])
def test_table_window_checkpoint_is_the_whole_windows_and_resumes_to_the_bit(blocked, transform):
    """Mid-window (step 8 of windows of 5: three filled steps), the state equals the reference learner's
    entry by entry, and a fresh learner of either kind loaded with it goes on as the uninterrupted run."""
    table, economy, observation, _ = run(ReinforceLearner, steps=8, transform=transform)
    whole, *_ = run(WholePeers, steps=8, transform=transform)
    state, reference = copy.deepcopy(table.state_dict()), whole.state_dict()  # (live tensors: copied)
    assert state["window"].keys() == reference["window"].keys()
    assert ("peers" in state["window"]) == (transform is not None)  # altered steps: saved as they are
    for key, value in reference["window"].items():
        assert bits(state["window"][key]) == bits(value) if isinstance(value, torch.Tensor) else \
            state["window"][key] == value, key
    snapshot = copy.deepcopy(economy.state_dict())
    shifted = (lambda obs, step: transform(obs, step + 8)) if transform else None
    _, _, _, expected = run(None, steps=6, transform=shifted, learner=table, economy=economy, observation=observation)
    for kind in (ReinforceLearner, WholePeers):
        fresh = kind(config(), LearnerConfig(seed=99))
        fresh.load_state_dict(state)
        resumed_economy = Economy(config())
        resumed_economy.load_state_dict(snapshot)
        _, _, _, trace = run(None, steps=6, transform=shifted, learner=fresh, economy=resumed_economy,
                             observation=resumed_economy.observation)
        assert trace == expected, kind.__name__
        assert learnt(fresh) == learnt(table), kind.__name__
