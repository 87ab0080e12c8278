"""train.py: the CLI end to end, TensorBoard tags, bit-exact resume, bad flags, NaN stop
(docs/design.md sections 6 and 7)."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import flip_a_stored_bit
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from agents.base import NonFiniteLossError
from agents.baselines import RandomLearner
from agents.checkpoint import load_checkpoint
from homoecon_lab import errors as train_errors
from homoecon_lab import training
from homoecon_lab.cli import parse_train_args

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--num-agents", "8", "--max-steps", "25", "--log-every", "5", "--seed", "3"]  # episodes end at 25, 50, ...
CONTRACT_TAGS = [
    "reward/mean", "economy/gini", "economy/price/berries", "economy/price/meat", "economy/total/berries",
    "economy/total/meat", "economy/trade_volume", "population/births", "population/deaths_age",
    "population/deaths_starvation", "population/mean_age", "jobs/share/gathering", "jobs/share/hunting",
    "learner/loss", "learner/entropy", "learner/grad_norm", "comm/participation_ratio",
    "social/attention_entropy", "trade/ir_violation", "trade/iterations", "trade/converged", "trade/kkt_residual",
    "perf/steps_per_sec",
]
HISTOGRAMS = ["population/ages", "economy/wealth", "social/attention_weights",
              "population/utility_weights/berries", "population/utility_weights/meat"]


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=180)


def events(run_dir) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0,
                                                                "tensors": 0})
    accumulator.Reload()
    return accumulator


def assert_identical(a, b, where="checkpoint"):
    """Exact equality of nested dicts / sequences / dataclasses / tensors / arrays."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif dataclasses.is_dataclass(a):
        fields = lambda x: {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}  # noqa: E731
        assert_identical(fields(a), fields(b), where)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


@pytest.fixture(autouse=True)
def restore_torch_globals():
    """train() sets threads, deterministic algorithms and seeds; give other tests theirs back."""
    threads, deterministic, rng = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), \
        torch.get_rng_state()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_rng_state(rng)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One 60-step CLI run (three episodes) shared by the output tests."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = run_cli("--steps", "60", *TINY, "--run-dir", str(run_dir), "--dashboard-every", "30",
                     "--checkpoint-every", "20")
    assert result.returncode == 0, result.stderr
    return run_dir


def test_cli_run_writes_config_events_and_checkpoint(cli_run):
    names = sorted(os.listdir(cli_run))
    assert "config.json" in names and "checkpoint.pt" in names
    assert any(name.startswith("events.out.tfevents") for name in names)
    assert not [name for name in names if name.endswith(".tmp")]
    settings = parse_train_args(["--resume", str(cli_run)])
    assert settings.economy.num_agents == 8 and settings.economy.max_steps == 25
    assert settings.run.learner == "reinforce" and settings.learner.seed == 3
    saved = load_checkpoint(cli_run / "checkpoint.pt")
    assert saved["step"] == 60 and saved["episode"] == 2
    assert {"learner", "economy", "rng", "recorder", "settings"} <= set(saved)
    assert set(saved["rng"]) == {"python", "numpy", "torch"}


def test_tensorboard_has_the_contract_tags(cli_run):
    accumulator = events(cli_run)
    tags = accumulator.Tags()
    missing = [tag for tag in CONTRACT_TAGS if tag not in tags["scalars"]]
    assert not missing, f"missing scalar tags {missing}"
    assert [e.step for e in accumulator.Scalars("reward/mean")] == list(range(5, 61, 5))  # x axis = env steps
    assert all(np.isfinite(e.value) for tag in CONTRACT_TAGS for e in accumulator.Scalars(tag))
    assert set(HISTOGRAMS) <= set(tags["histograms"])
    assert [e.step for e in accumulator.Images("dashboard")] == [30, 60]
    image = accumulator.Images("dashboard")[0]
    assert image.width > 100 and image.height > 100
    assert "hyperparameters/text_summary" in tags["tensors"]


def test_resume_is_bit_exact(tmp_path):
    """44 steps at once == 22 steps, then --resume (another process) to 44: same parameters, economy, RNGs, logs.

    22 is mid-episode (episodes of 25) and mid-rollout (updates every 5 steps)."""
    common = [*TINY, "--checkpoint-every", "1000", "--dashboard-every", "0"]
    whole, half = tmp_path / "whole", tmp_path / "half"
    training.train(parse_train_args(["--steps", "44", "--run-dir", str(whole), *common]))
    training.train(parse_train_args(["--steps", "22", "--run-dir", str(half), *common]))
    assert load_checkpoint(half / "checkpoint.pt")["step"] == 22
    result = run_cli("--resume", str(half), "--steps", "44")
    assert result.returncode == 0, result.stderr
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(half / "checkpoint.pt")
    assert a["step"] == b["step"] == 44 and a["episode"] == b["episode"] == 1
    for key in ("learner", "economy", "rng", "recorder"):
        assert_identical(a[key], b[key], key)
    assert a["settings"]["economy"] == b["settings"]["economy"] and a["settings"]["learner"] == b["settings"]["learner"]
    # The logs continue too: the interval straddling the resume averages the same steps.
    for tag in ("reward/mean", "economy/gini", "learner/loss"):
        assert [(e.step, e.value) for e in events(whole).Scalars(tag)] == \
            [(e.step, e.value) for e in events(half).Scalars(tag)], tag


def test_resume_of_a_finished_run_says_so(tmp_path):
    run_dir = tmp_path / "run"
    training.train(parse_train_args(["--steps", "5", "--run-dir", str(run_dir), *TINY, "--learner", "random"]))
    with pytest.raises(SystemExit) as stopped:
        train.main(["--resume", str(run_dir), "--steps", "5"])
    assert "already at step 5" in str(stopped.value.code)


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    run_dir = tmp_path / "run"
    training.train(parse_train_args(["--steps", "5", "--run-dir", str(run_dir), *TINY, "--learner", "random"]))
    with pytest.raises(SystemExit):
        parse_train_args(["--steps", "5", "--run-dir", str(run_dir)])
    assert "--resume" in capsys.readouterr().err


def test_corrupt_checkpoint_is_refused_on_resume(tmp_path):
    run_dir = tmp_path / "run"
    training.train(parse_train_args(["--steps", "5", "--run-dir", str(run_dir), *TINY, "--learner", "random"]))
    flip_a_stored_bit(run_dir / "checkpoint.pt")
    with pytest.raises(SystemExit) as stopped:
        train.main(["--resume", str(run_dir), "--steps", "10"])
    assert "checkpoint.pt" in str(stopped.value.code) and "checksum" in str(stopped.value.code)


class ExplodingLearner(RandomLearner):
    """A random learner whose update number `explode_at` finds a NaN loss (raised before any change,
    as ReinforceLearner does)."""

    def __init__(self, economy_config, learner_config, explode_at=13):
        super().__init__(economy_config, learner_config)
        self.updates, self.explode_at = 0, explode_at

    def update(self, step):
        self.updates += 1
        if self.updates == self.explode_at:
            raise NonFiniteLossError("non-finite loss for ['agent_5']; no weight was changed")
        return {}


def test_nan_loss_stops_the_run_naming_step_and_agent(tmp_path):
    common = [*TINY, "--learner", "random", "--checkpoint-every", "10", "--dashboard-every", "0"]
    settings = parse_train_args(["--steps", "40", "--run-dir", str(tmp_path / "nan"), *common])
    with pytest.raises(NonFiniteLossError, match=r"step 13: .*agent_5.*checkpoint\.pt \(step 10\)"):
        training.train(settings, learner=ExplodingLearner(settings.economy, settings.learner))
    # The last good checkpoint is the step-10 one, byte for byte what a clean 10-step run writes.
    clean = parse_train_args(["--steps", "10", "--run-dir", str(tmp_path / "clean"), *common])
    training.train(clean)
    stopped, reference = load_checkpoint(tmp_path / "nan" / "checkpoint.pt"), load_checkpoint(
        tmp_path / "clean" / "checkpoint.pt")
    assert stopped["step"] == 10
    for key in ("learner", "economy", "rng"):
        assert_identical(stopped[key], reference[key], key)


def test_resume_after_a_crash_purges_the_events_logged_past_the_checkpoint(tmp_path):
    """Crash at step 27 (checkpoint at 20, logs up to 25), resume to 40: one clean series, as if never stopped."""
    common = [*TINY, "--learner", "random", "--checkpoint-every", "20", "--dashboard-every", "0"]
    crashed = parse_train_args(["--steps", "40", "--run-dir", str(tmp_path / "crashed"), *common])
    with pytest.raises(NonFiniteLossError, match="step 27"):
        training.train(crashed, learner=ExplodingLearner(crashed.economy, crashed.learner, explode_at=27))
    training.train(parse_train_args(["--resume", str(tmp_path / "crashed"), "--steps", "40"]))
    training.train(parse_train_args(["--steps", "40", "--run-dir", str(tmp_path / "clean"), *common]))
    for tag in ("reward/mean", "economy/gini"):
        series = [(e.step, e.value) for e in events(tmp_path / "crashed").Scalars(tag)]
        assert series == [(e.step, e.value) for e in events(tmp_path / "clean").Scalars(tag)], tag
        assert [step for step, _ in series] == list(range(5, 41, 5))


def test_nan_loss_exits_nonzero_from_main(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "make_learner", lambda name, economy, learner: ExplodingLearner(economy, learner))
    with pytest.raises(SystemExit) as stopped:
        train.main(["--steps", "40", "--run-dir", str(tmp_path / "run"), *TINY, "--dashboard-every", "0"])
    message = str(stopped.value.code)
    assert message.startswith("train.py: error: step 13:") and "agent_5" in message


@pytest.mark.parametrize("flags, expected", [([], 1), (["--threads", "2"], 2)])
def test_torch_threads_default_to_one_for_small_economies(tmp_path, flags, expected):
    """Per-call overhead rules up to 1,000 agents, where extra threads only add synchronisation."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        settings = parse_train_args(["--steps", "2", "--run-dir", str(tmp_path / "run"), *TINY,
                                     "--dashboard-every", "0", *flags])
        training.train(settings)
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


def test_trade_convergence_and_kkt_residual_are_logged_as_fraction_and_maximum(tmp_path):
    """Hand-worked interval: converged on 3 of 4 steps -> 0.75; residuals 1e-3, 5e-2, 0, 2e-2 -> 5e-2."""
    from torch.utils.tensorboard import SummaryWriter

    from homoecon_env.config import EconomyConfig
    from homoecon_lab.recorder import Recorder

    config = EconomyConfig(num_agents=4)
    recorder = Recorder(config)
    base = {key: 0.0 for key in ("mean_reward", "gini", "trade_volume", "births", "deaths_age", "deaths_starvation",
                                 "mean_age", "mean_effort", "trade_iterations", "trade_init_iterations",
                                 "trade_ir_violation")}
    base.update(prices=[1.0, 1.0], totals=[1.0, 1.0], produced=[0.0, 0.0], job_counts=[2, 2])
    for converged, residual in ((True, 1e-3), (False, 5e-2), (True, 0.0), (True, 2e-2)):
        recorder.add({**base, "trade_converged": converged, "trade_kkt_residual": residual}, {})
    writer = SummaryWriter(log_dir=str(tmp_path))
    recorder.write(writer, 4, torch.rand(4, 3, dtype=torch.float64), None, None)
    recorder.add({**base, "trade_converged": False, "trade_kkt_residual": 1e-6}, {})  # the next interval starts afresh
    recorder.write(writer, 5, torch.rand(4, 3, dtype=torch.float64), None, None)
    writer.close()
    accumulator = events(tmp_path)
    assert [(e.step, e.value) for e in accumulator.Scalars("trade/converged")] == [(4, 0.75), (5, 0.0)]
    assert [(e.step, pytest.approx(e.value)) for e in accumulator.Scalars("trade/kkt_residual")] == \
        [(4, 5e-2), (5, 1e-6)]


def test_checkpoint_parts_of_the_scripts_are_plain_data_and_restore_exactly(cli_run):
    """RNG states and the recorder survive torch.load(weights_only=True) and restore every generator bit-exactly."""
    import io
    import random

    from homoecon_lab.recorder import Recorder
    from homoecon_lab.seeding import rng_states, seed_everything, set_rng_states

    seed_everything(5)
    random.gauss(0, 1), np.random.standard_normal()  # leave a cached Gaussian in both generators
    states = rng_states()
    expected = (random.random(), random.gauss(0, 1), np.random.random(3), np.random.standard_normal(),
                torch.rand(3))
    recorder = Recorder(parse_train_args(["--resume", str(cli_run)]).economy)
    recorder.load_state_dict(load_checkpoint(cli_run / "checkpoint.pt")["recorder"])
    buffer = io.BytesIO()
    torch.save({"rng": states, "recorder": recorder.state_dict()}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    set_rng_states(loaded["rng"])
    again = (random.random(), random.gauss(0, 1), np.random.random(3), np.random.standard_normal(), torch.rand(3))
    assert again[:2] == expected[:2] and np.array_equal(again[2], expected[2]) and again[3] == expected[3]
    assert torch.equal(again[4], expected[4])
    restored = Recorder(recorder.config)
    restored.load_state_dict(loaded["recorder"])
    assert_identical(restored.history, recorder.history, "history")
    assert_identical(restored.sums, recorder.sums, "sums")
    assert len(recorder.history["spectra"]) == 12 and isinstance(restored.history["spectra"][0], np.ndarray)


def test_thread_count_changes_float_sums_so_resume_keeps_it(tmp_path):
    """Why --threads is fixed for a run: torch splits a sum over threads, so 1 and 2 threads round differently."""
    values = torch.rand(4_000_000, generator=torch.Generator().manual_seed(0))
    torch.set_num_threads(1)
    one = values.sum()
    torch.set_num_threads(2)
    two = values.sum()
    assert one != two  # if torch ever makes this equal, resuming with another --threads could be allowed
    run_dir = tmp_path / "run"
    training.train(parse_train_args(["--steps", "3", "--run-dir", str(run_dir), *TINY, "--learner", "random"]))
    resumed = parse_train_args(["--resume", str(run_dir), "--steps", "6"])
    with pytest.raises(train_errors.ResumeError, match="--threads 2: .* ran with 1 threads"):
        training.train(dataclasses.replace(resumed, run=dataclasses.replace(resumed.run, threads=2)))
