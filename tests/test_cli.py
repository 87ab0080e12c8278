"""train.py and evaluate.py command lines (tyro): every flag documented, bad values refused naming the flag,
resume rules, hand-broken config.json (docs/design.md sections 6 and 7)."""
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agents.config import LearnerConfig
from homoecon_env.config import EconomyConfig
from homoecon_lab.cli import parse_eval_args, parse_train_args
from homoecon_lab.evaluation import Args
from homoecon_lab.settings import FLAG_NAMES, RunArgs
from homoecon_lab.training import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--num-agents", "8", "--max-steps", "25", "--log-every", "5", "--seed", "3", "--dashboard-every", "0"]
NOT_FLAGS = {EconomyConfig: ("resources", "jobs", "seed"), LearnerConfig: ("seed",), RunArgs: (), Args: ()}


def script(name, *args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / name), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=180, env={**os.environ, "COLUMNS": "80"})


def help_entries(text: str) -> dict[str, str]:
    """Flag -> the help printed for it (one-column layout: an entry starts with '│ --flag')."""
    entries, current = {}, None
    for line in text.splitlines():
        inner = line.strip().strip("│╭╰─╮╯").strip()
        start = re.match(r"(--[a-z0-9-]+)", inner)
        if start:
            current = start[1]
            entries[current] = inner
        elif current and inner and not line.lstrip().startswith(("╭", "╰")):
            entries[current] += " " + inner
        else:
            current = None
    return entries


@pytest.mark.parametrize("name, classes", [("train.py", (RunArgs, EconomyConfig, LearnerConfig)),
                                           ("evaluate.py", (Args,))])
def test_help_documents_every_flag(name, classes):
    result = script(name, "--help")
    assert result.returncode == 0, result.stderr
    entries = help_entries(result.stdout)
    for cls in classes:
        for field in dataclasses.fields(cls):
            if field.name in NOT_FLAGS[cls]:
                continue
            flag = FLAG_NAMES.get(field.name, "--" + field.name.replace("_", "-"))
            assert flag in entries, f"{name}: {flag} missing from --help"
            words = re.sub(r"--[\w-]+|\{None\}\|\w+|[A-Z]{3,}|\(default: [^)]*\)", "", entries[flag]).split()
            assert len(words) >= 3, f"{name}: {flag} has no help text: {entries[flag]!r}"
    if name == "train.py":
        learners = "{llm,mixed,ppo,random,reinforce,scripted,scripted_chain,scripted_spatial,uniform_attention}"
        assert learners in entries["--learner"].replace(" ", "")
    if name == "evaluate.py":
        assert "--no-learn" in entries["--learn"]


def test_flags_are_flat_and_set_their_fields(tmp_path):
    settings = parse_train_args(["--num-agents", "12", "--gamma", "0.5", "--steps", "7", "--seed", "9",
                                 "--no-heterogeneous-tastes", "--need", "2", "3", "--run-dir", str(tmp_path / "r")])
    assert settings.economy.num_agents == 12 and settings.learner.gamma == 0.5 and settings.run.steps == 7
    assert settings.economy.seed == settings.learner.seed == settings.run.seed == 9
    assert settings.economy.heterogeneous_tastes is False and settings.economy.need == (2.0, 3.0)
    assert settings.run.threads == 1  # resolved: small economies run on one thread
    args = parse_eval_args(["--no-learn", "--steps", "20", "--ablation-seeds", "0"])
    assert args == Args(learn=False, steps=20, ablation_seeds=0)


@pytest.mark.parametrize("argv, flag", [
    (["--num-agents", "-3"], "--num-agents"),
    (["--num-agents", "abc"], "--num-agents"),
    (["--learner", "nope"], "--learner"),
    (["--decay-rate", "2"], "--decay-rate"),
    (["--yield-noise", "nan"], "--yield-noise"),
    (["--need", "1"], "--need"),
    (["--gamma", "1.5"], "--gamma"),
    (["--steps", "0"], "--steps"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
    (["--dashboard-every", "-1"], "--dashboard-every"),
    (["--threads", "0"], "--threads"),
    (["--bogus", "1"], "--bogus"),
    (["--device", "gpu"], "--device"),
    (["--device", "cuda:-1"], "--device"),
    (["--learner-dtype", "float16"], "--learner-dtype"),
])
def test_bad_flag_exits_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_train_args(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--seed", "4294967296"], "train.py: error: argument --seed: seed must be an int >= 0 and <= 4294967295"),
    (["--num-agents", "-3"], "train.py: error: argument --num-agents: num_agents must be an int >= 1, got -3"),
])
def test_a_config_error_is_one_parser_line_from_the_command_line(tmp_path, argv, message):
    result = script("train.py", *argv, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, flag", [(["--steps", "1"], "--steps"), (["--seed", str(2**32 - 2)], "--seed"),
                                        (["--num-agents", "1"], "--num-agents"), (["--run", "/no/run"], "--run")])
def test_bad_evaluate_flag_exits_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_eval_args(argv)  # --seed 2**32 - 2 with 3 seeds seeds NumPy with 2**32: refused
    assert stopped.value.code == 2 and f"evaluate.py: error: argument {flag}" in capsys.readouterr().err


@pytest.fixture
def finished_run(tmp_path):
    run_dir = tmp_path / "run"
    train(parse_train_args(["--steps", "5", "--run-dir", str(run_dir), *TINY, "--learner", "random"]))
    return run_dir


def test_resume_refuses_a_changed_setting(finished_run, capsys):
    for argv in (["--num-agents", "9"], ["--threads", "2"], ["--learner", "reinforce"], ["--gamma", "0.5"],
                 ["--learner-dtype", "float64"]):
        with pytest.raises(SystemExit) as stopped:
            parse_train_args(["--resume", str(finished_run), "--steps", "10", *argv])
        assert stopped.value.code == 2 and f"argument {argv[0]}: a resumed run keeps" in capsys.readouterr().err
    same = parse_train_args(["--resume", str(finished_run), "--steps", "10", "--num-agents", "8", "--log-every", "2"])
    assert same.run.steps == 10 and same.run.log_every == 2 and same.economy.num_agents == 8


def _rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.clear(), "missing ['run', 'economy', 'learner']"),
    (lambda d: d["economy"].pop("num_agents"), "economy: missing keys ['num_agents']"),
    (lambda d: d["learner"].update(colour="red"), "learner: unknown keys ['colour']"),
    (lambda d: d["economy"].update(num_agents=-3), "num_agents must be an int >= 1, got -3"),
    (lambda d: d["economy"].update(num_agents="8"), "num_agents must be an int >= 1, got '8'"),
    (lambda d: d["run"].update(seed=2**32), "seed must be an int >= 0 and <= 4294967295"),
    (lambda d: d["economy"].update(jobs=[{"name": "x"}]), "economy.jobs[0]: missing keys ['output'"),
    (lambda d: d["economy"].update(jobs=5), "economy.jobs must be a list"),
    (lambda d: d.update(run=[]), "run must be an object"),
])
def test_hand_broken_config_is_refused_naming_the_key(finished_run, capsys, change, expected):
    _rewrite(finished_run / "config.json", change)
    with pytest.raises(SystemExit) as stopped:
        parse_train_args(["--resume", str(finished_run), "--steps", "10"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "train.py: error: argument --resume:" in err and expected in err, err


def test_config_that_is_not_json_is_refused_from_the_command_line(finished_run):
    (finished_run / "config.json").write_text('{"run": {"steps": 5,')
    result = script("train.py", "--resume", str(finished_run), "--steps", "10")
    assert result.returncode == 2 and "config.json: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


# Keys config.json gained after its first release (listed by hand from the changelog): a run written
# before them must still resume, reading each as the behaviour it had then.
ADDED_LATER = {"run": ["scenario"],
               "economy": ["broadcast_mode", "vocab_size", "message_length", "taste_scale", "private_signals",
                           "boom_multiplier", "boom_switch", "scout_fraction", "world_width", "world_height",
                           "resource_map", "region_phase_shift", "migration_cost", "peer_radius",
                           "carrying_capacity"],
               "learner": ["clip_epsilon", "gae_lambda", "ppo_epochs", "value_coef", "inheritance",
                           "inherit_optimizer", "horizon_baseline", "ppo_entropy_coef", "attention_sink",
                           "mean_context", "llm_backend", "llm_base_url", "llm_model", "llm_max_tokens",
                           "llm_temperature", "llm_timeout_s", "llm_concurrency", "llm_memory", "llm_peers_shown",
                           "mix", "device", "dtype"]}


def test_a_config_written_before_later_fields_resumes_with_their_old_behaviour(finished_run):
    now = parse_train_args(["--resume", str(finished_run), "--steps", "10"])
    _rewrite(finished_run / "config.json",
             lambda d: [d[group].pop(key) for group, keys in ADDED_LATER.items() for key in keys])
    old = parse_train_args(["--resume", str(finished_run), "--steps", "10"])
    assert old.economy == now.economy and old.run == now.run
    assert old.economy.broadcast_mode == "continuous" and old.economy.private_signals is False
    assert old.economy.taste_scale is None
    # PPO's own entropy bonus did not exist: an old PPO run used the shared entropy_coef
    assert old.learner == dataclasses.replace(now.learner, ppo_entropy_coef=now.learner.entropy_coef)
    assert old.learner.inheritance == "genetic" and not old.learner.inherit_optimizer
    assert old.learner.device == "cpu" and old.learner.dtype == "float32"  # learners ran on the CPU in float32
