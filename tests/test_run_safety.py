"""Runs stop and fail cleanly: SIGTERM/SIGINT, occupied or broken run folders, full disks, diverging learners
(docs/design.md section 7). Signals are real ones sent to a real train.py process."""
import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import assert_identical

import train as train_script
from agents.baselines import RandomLearner
from agents.checkpoint import load_checkpoint
from homoecon_lab import training
from homoecon_lab.cli import parse_train_args
from homoecon_lab.errors import RunError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--num-agents", "8", "--max-steps", "25", "--log-every", "5", "--seed", "3"]


@pytest.fixture(autouse=True)
def restore_torch_globals():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children of each of its threads, recursively)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for path in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = {int(c) for c in path.read_text().split()}
            except OSError:
                continue
            todo.extend(children - found)
            found |= children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def temporaries(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_resume_is_bit_exact(tmp_path, signum):
    """A real signal mid-run: one message, exit 128+signal, no child left, no temp file, a final checkpoint at
    the stop step; resuming it == the same steps run without a stop (learner, economy, RNGs, recorder)."""
    stopped = tmp_path / "stopped"
    common = [*TINY, "--learner", "reinforce", "--checkpoint-every", "1000", "--dashboard-every", "3"]
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--steps", "100000", "--run-dir", str(stopped),
                                *common], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: descendants(process.pid) or process.poll() is not None, 120, "the dashboard worker")
        wait_until(lambda: list(stopped.glob("events.out.tfevents.*")), 60, "the event file")
        children = descendants(process.pid)
        assert children and process.poll() is None
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signum, err
    messages = [line for line in err.splitlines() if "train.py:" in line]
    assert len(messages) == 1 and "Traceback" not in err, err
    step = int(re.search(rf"stopped by {signal.Signals(signum).name} at step (\d+) of 100000", messages[0])[1])
    wait_until(lambda: not any(alive(pid) for pid in children), 30, f"children {children} to end")
    assert not temporaries(stopped)
    saved = load_checkpoint(stopped / "checkpoint.pt")
    assert saved["step"] == step > 0

    end = step + 7
    training.train(parse_train_args(["--resume", str(stopped), "--steps", str(end)]))
    reference = tmp_path / "reference"
    training.train(parse_train_args(["--steps", str(end), "--run-dir", str(reference), *common]))
    a, b = load_checkpoint(stopped / "checkpoint.pt"), load_checkpoint(reference / "checkpoint.pt")
    assert a["step"] == b["step"] == end
    for key in ("learner", "economy", "rng", "recorder"):
        assert_identical(a[key], b[key], key)


def test_stale_temporary_files_are_removed_on_resume(tmp_path):
    run_dir = tmp_path / "run"
    training.train(parse_train_args(["--steps", "5", "--run-dir", str(run_dir), *TINY, "--learner", "random"]))
    stale = [".checkpoint.pt.0123456789ab.tmp", ".config.json.abcdefabcdef.tmp"]
    for name in stale:
        (run_dir / name).write_bytes(b"half a file")
    (run_dir / "notes.tmp").write_text("not ours")
    training.train(parse_train_args(["--resume", str(run_dir), "--steps", "8"]))
    assert temporaries(run_dir) == ["notes.tmp"]
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 8


@pytest.mark.parametrize("leftover", ["events.out.tfevents.1.host.1.0", "config.json", "notes.txt"])
def test_a_non_empty_run_dir_is_refused_without_resume(tmp_path, leftover):
    """A run killed before its first checkpoint leaves events and config.json: a new run must not mix with them."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / leftover).write_text("old")
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--steps", "3", "--run-dir", str(run_dir), *TINY],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "argument --run-dir:" in result.stderr and "already holds a run" in result.stderr
    assert "Traceback" not in result.stderr and os.listdir(run_dir) == [leftover]
    settings = parse_train_args(["--steps", "3", "--run-dir", str(tmp_path / "other"), *TINY])
    with pytest.raises(RunError, match="already holds a run"):  # the API refuses too
        training.train(training.dataclasses.replace(
            settings, run=training.dataclasses.replace(settings.run, run_dir=str(run_dir))))


def test_a_file_given_as_run_dir_is_refused(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    for argv in (["--run-dir", str(path)], ["--resume", str(path)]):
        result = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv, *TINY], capture_output=True,
                                text=True, cwd=ROOT, timeout=120)
        assert result.returncode == 2 and "not a folder" in result.stderr and "Traceback" not in result.stderr


def _fail_with(number):
    def fail(*args, **kwargs):
        raise OSError(number, os.strerror(number), str(args[0]) if args else None)
    return fail


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_an_unwritable_run_dir_ends_with_one_message(tmp_path, monkeypatch, capsys, number):
    """Disk full, read-only file system, no permission (simulated: the tests run as root) at config.json."""
    monkeypatch.setattr(training, "atomic_write_text", _fail_with(number))
    with pytest.raises(SystemExit) as stopped:
        train_script.main(["--steps", "5", "--run-dir", str(tmp_path / "run"), *TINY, "--learner", "random"])
    message = str(stopped.value.code)
    assert message.startswith("train.py: error: cannot write the run folder") and os.strerror(number) in message


def test_a_full_disk_at_a_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    real, calls = training.save_checkpoint, []

    def save(path, payload):
        calls.append(payload["step"])
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, payload)

    monkeypatch.setattr(training, "save_checkpoint", save)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        train_script.main(["--steps", "20", "--run-dir", str(run_dir), *TINY, "--learner", "random",
                           "--checkpoint-every", "5", "--dashboard-every", "0"])
    message = str(stopped.value.code)
    assert "step 10: cannot write the checkpoint: No space left on device" in message
    assert "checkpoint.pt (step 5)" in message
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 5 and not temporaries(run_dir)


def test_a_full_disk_while_writing_events_ends_with_one_message(tmp_path, monkeypatch, capfd):
    """TensorBoard writes from a thread; its failure reaches the loop as one message, no thread traceback."""
    from tensorboard.summary.writer import record_writer

    real, calls = record_writer.RecordWriter.write, []

    def write(self, data):
        calls.append(len(data))
        if len(calls) > 30:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    with pytest.raises(SystemExit) as stopped:
        train_script.main(["--steps", "40", "--run-dir", str(tmp_path / "run"), *TINY, "--learner", "random",
                           "--dashboard-every", "0"])
    message = str(stopped.value.code)
    assert re.match(r"train\.py: error: step \d+: cannot write the run's files in .*No space left on device", message)
    assert "Traceback" not in capfd.readouterr().err


def test_a_diverging_learner_ends_with_one_message_naming_the_step(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--learning-rate", "1e30", "--steps", "200",
                             "--run-dir", str(tmp_path / "run"), *TINY, "--dashboard-every", "0"],
                            capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert re.search(r"train\.py: error: step \d+: ", result.stderr), result.stderr


class NaNEffortLearner(RandomLearner):
    """Random actions, but a NaN effort on the 4th call to act: the economy refuses it."""

    calls = 0

    def act(self, observation):
        actions = super().act(observation)
        self.calls += 1
        if self.calls == 4:
            actions.effort[2] = float("nan")
        return actions


def test_an_action_the_economy_refuses_is_reported_with_its_step(tmp_path):
    settings = parse_train_args(["--steps", "10", "--run-dir", str(tmp_path / "run"), *TINY, "--learner", "random",
                                 "--dashboard-every", "0", "--checkpoint-every", "2"])
    refused = r"step 4: the economy refused the learner's actions: .*checkpoint\.pt \(step 2\)"
    with pytest.raises(RunError, match=refused):
        training.train(settings, learner=NaNEffortLearner(settings.economy, settings.learner))
