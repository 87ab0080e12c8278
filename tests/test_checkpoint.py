"""agents.checkpoint: atomic writes and checksum-verified loads (DESIGN.md section 7)."""
import os
import random

import numpy as np
import pytest
import torch

from agents import checkpoint
from agents.checkpoint import HEADER, CheckpointError, load_checkpoint, save_checkpoint


def payload():
    generator = torch.Generator().manual_seed(3)
    return {
        "step": 7,
        "params": {"w": torch.randn(3, 4, generator=generator, dtype=torch.float64)},
        "python_rng": random.Random(1).getstate(),
        "numpy_rng": np.random.default_rng(2).bit_generator.state,
        "torch_rng": generator.get_state(),
        "args": {"seed": 1, "run_name": "x"},
    }


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict) and key == "params":
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name])
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key])
        else:
            assert a[key] == b[key]


def test_round_trip_restores_every_entry(tmp_path):
    path = tmp_path / "checkpoint.pt"
    original = payload()
    save_checkpoint(path, original)
    assert_same(load_checkpoint(path), original)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*no such file"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*empty"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [10, HEADER.size + 5, -1])
def test_truncated_file_is_refused(tmp_path, keep):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload())
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*truncated"):
        load_checkpoint(path)


def test_flipped_byte_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload())
    data = bytearray(path.read_bytes())
    data[HEADER.size + len(data[HEADER.size:]) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*checksum mismatch"):
        load_checkpoint(path)


def test_wrong_magic_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save(payload(), path)  # a plain torch file, no header
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*not a HomoEcon checkpoint"):
        load_checkpoint(path)


def test_trailing_bytes_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload())
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(CheckpointError, match=r"trailing bytes"):
        load_checkpoint(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_failed_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    old = payload()
    save_checkpoint(path, old)
    before = path.read_bytes()

    real_fsync = os.fsync
    calls = []

    def failing_fsync(fd):  # fail after the bytes were written to the temporary file
        calls.append(fd)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {**old, "step": 99})
    monkeypatch.setattr(checkpoint.os, "fsync", real_fsync)
    assert calls, "the write should have reached fsync"
    assert path.read_bytes() == before
    assert_same(load_checkpoint(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # the temporary file was removed


def test_unpicklable_payload_leaves_the_old_checkpoint_intact(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload())
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(path, {"bad": lambda: None})  # pickling fails before any file is touched
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
