"""agents.checkpoint: plain-data files that torch.load(weights_only=True) reads, never run code on load,
written atomically, refused with a clear CheckpointError when damaged (docs/design.md section 7)."""
import copy
import dataclasses
import io
import math
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

from agents import LearnerConfig, checkpoint, make_learner
from agents.checkpoint import FORMAT, CheckpointError, load_checkpoint, payload_digest, save_checkpoint
from homoecon_env import EconomyConfig
from homoecon_env.core import Economy


def payload():
    generator = torch.Generator().manual_seed(3)
    return {
        "step": 7,
        "params": {"w": torch.randn(3, 4, generator=generator, dtype=torch.float64)},
        "torch_rng": generator.get_state(),
        "numbers": [1.5, -0.0, float("inf"), 2**70, True, None],
        "pair": (1, "two"),
        "args": {"seed": 1, "run_name": "x"},
    }


def same(a, b):
    """Equal plain data, tensors compared by dtype, shape and value, containers by type."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def trained(name="reinforce", steps=4, **economy_fields):
    config = EconomyConfig(num_agents=10, max_steps=50, **economy_fields)
    economy = Economy(config)
    observation = economy.reset(0)
    learner = make_learner(name, config, LearnerConfig(seed=0, update_every=3))
    for _ in range(steps):
        out = economy.step(learner.act(observation))
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
    return config, economy, learner


class WritesAFile:
    """Unpickling this would create a file (the classic __reduce__ attack)."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


# -- plain data and round trips -------------------------------------------------------------------
def test_round_trip_restores_every_entry_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload())
    assert same(load_checkpoint(path), payload())
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize("name", ["reinforce", "uniform_attention", "random"])
def test_a_real_checkpoint_loads_with_plain_torch_load_weights_only(tmp_path, name):
    _, economy, learner = trained(name)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"learner": learner.state_dict(), "economy": economy.state_dict()})
    document = torch.load(path, weights_only=True)  # no custom header, no allow-list
    assert document["format"] == FORMAT
    assert same(document["payload"]["learner"], learner.state_dict())
    assert same(document["payload"]["economy"], economy.state_dict())


@pytest.mark.parametrize("name", ["reinforce", "uniform_attention"])
def test_resume_from_a_checkpoint_file_is_bit_exact(tmp_path, name):
    """Mid-window (step 4 of windows of 3), through a file: the next 5 steps are the same to the bit."""
    config, economy, learner = trained(name, steps=4)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"learner": learner.state_dict(), "economy": economy.state_dict()})

    def go(learner, economy):
        observation, rewards = economy.observation, []
        for _ in range(5):
            actions = learner.act(observation)
            out = economy.step(actions)
            rewards.append(out.reward)
            learner.update(out)
            learner.on_births(out.births)
            observation = out.observation
        return torch.stack(rewards), copy.deepcopy(learner.state_dict())

    expected_rewards, expected_state = go(learner, economy)
    saved = load_checkpoint(path)
    other_economy = Economy(config)
    other_economy.reset(5)
    other = make_learner(name, config, LearnerConfig(seed=9, update_every=3))
    other.load_state_dict(saved["learner"])
    other_economy.load_state_dict(saved["economy"])
    rewards, state = go(other, other_economy)
    assert torch.equal(rewards, expected_rewards)
    assert same(state, expected_state)


def test_economy_state_is_plain_data_with_the_trade_warm_start_as_a_dict():
    _, economy, _ = trained("random", steps=2)
    state = economy.state_dict()
    payload_digest(state)  # raises TypeError on anything that is not plain data
    assert state["last_trade"]["prices"].shape == (economy.config.num_resources,)
    other = Economy(economy.config)
    other.reset(1)
    other.load_state_dict(state)
    assert dataclasses.asdict(other._last_trade).keys() == state["last_trade"].keys()
    assert torch.equal(other._last_trade.multipliers, economy._last_trade.multipliers)


def test_economy_refuses_a_warm_start_that_is_not_a_trade_result_dict():
    _, economy, _ = trained("random", steps=2)
    state = economy.state_dict()
    with pytest.raises(ValueError, match="last_trade"):
        Economy(economy.config).load_state_dict({**state, "last_trade": {"prices": torch.zeros(3)}})


# -- what a checkpoint holds -----------------------------------------------------------------------
def tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors(item)


@pytest.mark.parametrize("steps, filled", [(3, 0), (4, 1), (5, 2)])
def test_the_learner_saves_only_the_filled_steps_of_its_window_with_peers_as_rows(tmp_path, steps, filled):
    """Windows of 3 steps: after 3, 4 and 5 steps the window holds 0, 1 and 2 steps. Per filled step it
    saves no more than its inputs with each peer as a row number (int32) and a blocked flag, not the
    [N, K, P] peer features; and the file holds no storage beyond the tensors' own bytes (a saved view
    carries its whole storage)."""
    _, _, learner = trained(steps=steps)
    state = learner.state_dict()
    window = state["window"]
    assert window["steps"] == filled and window["reward"].shape[1] == filled and "peers" not in window
    n, k, p = learner.num_slots, learner.num_peer_slots, learner.peer_dim
    per_step = n * (k * (4 + 1) + (learner.self_dim + learner.gaussian_dim + p) * 4 + 8 + 8)  # rows, blocked, own,
    window_bytes = sum(t.numel() * t.element_size() for t in tensors(window))  # pre-image, table, job, reward
    assert window_bytes <= filled * per_step + 8 * n
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"learner": state})
    content = sum(t.numel() * t.element_size() for t in tensors(state))
    assert os.path.getsize(path) < content + 100_000
    params = learner.flat_params.numel() * learner.flat_params.element_size()
    assert content < 3 * params + window_bytes + 50_000  # parameters, two Adam moments, the window


# -- refusing non-plain payloads ----------------------------------------------------------------------
@pytest.mark.parametrize("bad, where", [
    ({"recorder": {"history": {"gini": [0.1, 0.2, 0.3, np.float64(0.4)]}}},
     r"payload\['recorder'\]\['history'\]\['gini'\]\[3\]"),
    ({"rng": np.random.RandomState(0).get_state()}, r"payload\['rng'\]\[1\].*numpy\.ndarray"),
    ({"array": np.zeros(3)}, r"payload\['array'\].*numpy\.ndarray"),
    ({"config": EconomyConfig()}, r"payload\['config'\].*EconomyConfig"),
    ({"nested": [(1, {"f": lambda: None})]}, r"payload\['nested'\]\[0\]\[1\]\['f'\]"),
    ({"keys": {1: "x"}}, r"payload\['keys'\].*keys must be str"),
])
def test_save_refuses_non_plain_data_naming_the_key_path_and_touches_no_file(tmp_path, bad, where):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload())
    before = path.read_bytes()
    with pytest.raises(TypeError, match=where):
        save_checkpoint(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


# -- refusing to run code -------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump", "torch.save inside a checkpoint"])
def test_a_file_crafted_to_run_code_on_load_is_refused_and_runs_nothing(tmp_path, writer):
    path, witness = tmp_path / "checkpoint.pt", tmp_path / "pwned"
    attack = WritesAFile(witness)
    if writer == "torch.save":
        torch.save({"learner": attack}, path)
    elif writer == "pickle.dump":
        path.write_bytes(pickle.dumps({"learner": attack}))
    else:
        torch.save({"format": FORMAT, "sha256": "0" * 64, "payload": {"learner": attack}}, path)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*(unpickling refused.*open|not a HomoEcon checkpoint)"):
        load_checkpoint(path)
    assert not witness.exists()  # (the next test shows that unguarded unpickling does create it)


def test_the_crafted_file_does_run_code_when_unpickled_without_the_guard(tmp_path):
    """The attack used above is real: full unpickling creates the file."""
    witness = tmp_path / "pwned"
    pickle.loads(pickle.dumps(WritesAFile(witness))).close()
    assert witness.exists()


# -- damaged files ----------------------------------------------------------------------------------
def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*no such file"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*empty"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [2, 10, 200, -1])
def test_truncated_file_is_refused(tmp_path, keep):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload())
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*truncated"):
        load_checkpoint(path)


def test_a_changed_number_with_the_old_digest_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload())
    document = torch.load(path, weights_only=True)
    document["payload"]["params"]["w"][1, 2] += 1e-12
    torch.save(document, path)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*checksum mismatch"):
        load_checkpoint(path)


def test_a_flipped_byte_in_the_tensor_data_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    value = torch.arange(1000, dtype=torch.float64)
    save_checkpoint(path, {"w": value})
    data = bytearray(path.read_bytes())
    offset = bytes(data).find(value.numpy().tobytes()[8 * 500:8 * 508])  # the tensor's stored bytes
    assert offset > 0
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*(checksum mismatch|corrupt)"):
        load_checkpoint(path)


def test_a_plain_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*not a HomoEcon checkpoint"):
        load_checkpoint(path)


def test_a_zip_that_is_not_a_torch_archive_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*corrupt"):
        load_checkpoint(path)


def test_the_old_heckpt01_format_is_refused_by_name_without_unpickling(tmp_path):
    path, witness = tmp_path / "checkpoint.pt", tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"learner": WritesAFile(witness)}, buffer)
    body = buffer.getvalue()
    path.write_bytes(struct.pack(">8sQ32s", b"HECKPT01", len(body), b"\0" * 32) + body)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*old HECKPT01 format"):
        load_checkpoint(path)
    assert not witness.exists()


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


# -- atomic writes ----------------------------------------------------------------------------------
def test_failed_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    old = payload()
    save_checkpoint(path, old)
    before = path.read_bytes()
    calls = []

    def failing_fsync(fd):  # fail after the bytes were written to the temporary file
        calls.append(fd)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {**old, "step": 99})
    monkeypatch.undo()
    assert calls, "the write should have reached fsync"
    assert path.read_bytes() == before
    assert same(load_checkpoint(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # the temporary file was removed


def test_a_write_that_fails_midway_removes_its_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"

    def failing_save(obj, stream):
        stream.write(b"PK\x03\x04 partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, payload())
    assert list(tmp_path.iterdir()) == []


def test_a_window_state_with_steps_or_peer_rows_out_of_range_is_refused_naming_the_range():
    """Two filled steps of a 3-step window, 12 agents: 'steps' must be in [0, 3), peer rows -1 or in [0, 12)."""
    from test_learners import run, started
    learner, economy, observation = started(update_every=3)
    run(learner, economy, observation, 2)
    state = copy.deepcopy(learner.state_dict())
    window = state["window"]
    assert window["steps"] == 2 and "peer_rows" in window
    with pytest.raises(ValueError, match=r"window 'steps' is 3, expected an int in \[0, 3\)"):
        learner.load_state_dict({**state, "window": {**window, "steps": 3}})
    rows = window["peer_rows"].clone()
    rows[0, 0] = 12
    with pytest.raises(ValueError, match=r"'peer_rows' holds rows in \[-?\d+, 12\], expected -1 or \[0, 12\)"):
        learner.load_state_dict({**state, "window": {**window, "peer_rows": rows}})
