"""The scenario registry (docs/design.md section 9): "seed" is the default economy, a registered scenario
reaches every entry point (both env views, train.py, config.json, --resume, evaluate.py), and only the
economy settings actually given override it."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import random_actions_dict
from gymnasium import spaces

import homoecon_env
from homoecon_env import EconomyConfig, scenarios
from homoecon_env.scenarios import SCENARIOS, scenario_config
from homoecon_lab import evaluation
from homoecon_lab.cli import parse_eval_args, parse_train_args
from homoecon_lab.evaluation import Args
from homoecon_lab.settings import RunArgs, read_run_config
from homoecon_lab.training import train

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
RUN = ["--max-steps", "12", "--log-every", "4", "--dashboard-every", "0", "--learner", "random"]
EVAL = dict(steps=6, seeds=1, frames=2, ablation_seeds=0, workers=1)  # workers=1: the test's registry is seen
CONSTRUCTORS = {"parallel_env": homoecon_env.parallel_env, "env": homoecon_env.env, "raw_env": homoecon_env.raw_env,
                "slot_parallel_env": homoecon_env.slot_parallel_env, "slot_env": homoecon_env.slot_env}


def tiny() -> EconomyConfig:
    """A test-only scenario whose two settings both differ from the seed's."""
    return EconomyConfig(num_agents=7, max_age=4)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(SCENARIOS, "tiny", tiny)
    return "tiny"


def base_config(made) -> EconomyConfig:
    """The EconomyConfig behind any of the five constructors' results (AEC wrappers unwrapped)."""
    return made.unwrapped.config


# -- the registry ----------------------------------------------------------------------------------

def test_seed_scenario_is_the_seeds_economy_of_design_section_2():
    config = scenario_config("seed")
    assert config == EconomyConfig()
    # The seed's setting as docs/design.md section 2 states it, independently of EconomyConfig's code.
    assert (config.num_agents, config.resources, config.broadcast_dim) == (50, ("berries", "meat"), 6)
    assert (config.max_age, config.decay_rate, config.rest_bonus, config.yield_noise) == (10, 0.1, 0.005, 0.1)
    assert [(job.name, job.output, job.phase, job.period) for job in config.jobs] == [
        ("gathering", (1.0, 0.0), math.pi / 2, 100.0), ("hunting", (0.0, 1.0), 0.0, 100.0)]


def test_scenario_config_applies_overrides_on_top_of_the_scenario(registered):
    config = scenario_config(registered, num_agents=9, decay_rate=0.3)
    assert (config.num_agents, config.max_age, config.decay_rate) == (9, 4, 0.3)
    assert scenario_config(registered) == EconomyConfig(num_agents=7, max_age=4)
    with pytest.raises(ValueError, match="bogus"):
        scenario_config(registered, bogus=1)


@pytest.mark.parametrize("name", ["nope", "", None, 3, "Seed"])
def test_an_unknown_scenario_is_refused_naming_it_and_the_known_ones(registered, name):
    with pytest.raises(ValueError) as error:
        scenario_config(name)
    assert repr(name) in str(error.value) and "seed" in str(error.value) and "tiny" in str(error.value)


def test_a_scenario_function_that_returns_no_config_is_refused_naming_it(monkeypatch):
    monkeypatch.setitem(SCENARIOS, "broken", lambda: {"num_agents": 7})
    with pytest.raises(ValueError, match="scenario 'broken'.*EconomyConfig, got dict"):
        scenario_config("broken")


# -- the env constructors ----------------------------------------------------------------------------

def rollout(made, seed: int, steps: int) -> list:
    """Every observation array and reward of ``steps`` steps with seeded random actions."""
    observations, _ = made.reset(seed=seed)
    rng, record = np.random.default_rng(seed), []
    for _ in range(steps):
        if made.agents and isinstance(made.action_space(made.agents[0]), spaces.Box):
            actions = {agent: rng.uniform(-1, 1, made.action_space(agent).shape).astype(np.float32)
                       for agent in made.agents}
        else:
            actions = random_actions_dict(made, rng)
        observations, rewards, *_ = made.step(actions)
        record.append([(name, rewards[name], *(np.asarray(v).tobytes() for v in (
            observations[name].values() if isinstance(observations[name], dict) else [observations[name]])))
            for name in sorted(observations)])
    return record


@pytest.mark.parametrize("make", [homoecon_env.parallel_env, homoecon_env.slot_parallel_env])
def test_the_seed_scenario_gives_the_default_envs_trajectory(make):
    settings = dict(num_agents=6, max_steps=40, yield_noise=0.3)
    default = rollout(make(**settings), seed=11, steps=30)
    assert rollout(make(scenario="seed", **settings), seed=11, steps=30) == default
    assert rollout(make(homoecon_env.EconomyConfig(**settings)), seed=11, steps=30) == default
    assert rollout(make(scenario="seed", **{**settings, "yield_noise": 0.2}), seed=11, steps=30) != default


@pytest.mark.parametrize("name", CONSTRUCTORS)
def test_every_constructor_builds_the_scenario_with_overrides_on_top(registered, name):
    make = CONSTRUCTORS[name]
    assert base_config(make(scenario=registered)) == EconomyConfig(num_agents=7, max_age=4)
    assert base_config(make(scenario=registered, num_agents=9)) == EconomyConfig(num_agents=9, max_age=4)
    assert base_config(make(num_agents=9)) == EconomyConfig(num_agents=9)  # scenario=None: as before


@pytest.mark.parametrize("name", CONSTRUCTORS)
def test_config_and_scenario_together_or_an_unknown_scenario_are_refused(registered, name):
    make = CONSTRUCTORS[name]
    with pytest.raises(ValueError, match="config and scenario='tiny' were both given"):
        make(EconomyConfig(), scenario=registered)
    with pytest.raises(ValueError, match=r"scenario 'nope' is not a known scenario; known: .*\bseed\b.*\btiny\b"):
        make(scenario="nope")


def test_a_scenarios_lifespan_governs_the_named_and_the_slot_env(registered):
    """max_age 4: every founder (ages 0..3) has died of age by step 4, in both views."""
    named = homoecon_env.parallel_env(scenario=registered, max_steps=20)
    named.reset(seed=2)
    founders = set(named.agents)
    assert len(founders) == 7
    rng = np.random.default_rng(0)
    for _ in range(4):
        named.step(random_actions_dict(named, rng))
    assert not founders & set(named.agents) and len(named.agents) == 7
    slots = homoecon_env.slot_parallel_env(scenario=registered, max_steps=20)
    _, infos = slots.reset(seed=2)
    assert len(slots.agents) == 7
    died = np.zeros(7, dtype=bool)
    for _ in range(4):
        _, _, _, _, infos = slots.step({slot: slots.action_space(slot).sample() for slot in slots.agents})
        died |= np.array([infos[f"slot_{i}"]["died"] == 1 for i in range(7)])
    assert died.all()


# -- train.py, config.json, --resume, evaluate.py -------------------------------------------------

def test_train_flags_override_the_scenario_only_when_given(registered, tmp_path):
    run_dir = str(tmp_path / "r")
    given = parse_train_args(["--scenario", registered, "--run-dir", run_dir])
    assert (given.run.scenario, given.economy.num_agents, given.economy.max_age) == ("tiny", 7, 4)
    given = parse_train_args(["--scenario", registered, "--num-agents", "50", "--decay-rate", "0.2",
                              "--run-dir", run_dir])  # 50 is EconomyConfig's default, but it was given
    assert (given.economy.num_agents, given.economy.max_age, given.economy.decay_rate) == (50, 4, 0.2)
    default = parse_train_args(["--run-dir", run_dir, "--seed", "4"])
    assert default.run.scenario == "seed" and default.economy == EconomyConfig(seed=4)


def test_help_shows_the_scenarios_values_as_the_flags_defaults(registered, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_train_args(["--scenario", registered, "--help"])
    text = " ".join(re.sub("[│╭╰─╮╯]", " ", capsys.readouterr().out).split())
    assert stopped.value.code == 0
    defaults = dict(re.findall(r"(--num-agents|--max-age|--decay-rate) \w+ [^()]*\(default: ([\d.]+)\)", text))
    assert defaults == {"--num-agents": "7", "--max-age": "4", "--decay-rate": "0.1"}


def test_a_scenario_flows_through_train_config_json_resume_and_evaluate(registered, tmp_path):
    run_dir = tmp_path / "run"
    train(parse_train_args(["--scenario", registered, "--steps", "6", "--run-dir", str(run_dir), *RUN]))
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["run"]["scenario"] == "tiny"
    assert (saved["economy"]["num_agents"], saved["economy"]["max_age"]) == (7, 4)

    resumed = parse_train_args(["--resume", str(run_dir), "--steps", "8"])
    assert resumed.run.scenario == "tiny" and resumed.economy.num_agents == 7
    train(resumed)
    assert read_run_config(str(run_dir / "config.json")).run.scenario == "tiny"

    out = tmp_path / "eval"
    result = evaluation.evaluate(Args(run=str(run_dir), out=str(out), **EVAL))
    assert result["meta"]["scenario"] == "tiny" and result["economy"]["max_age"] == 4
    assert result["meta"]["num_agents"] == 7
    with pytest.raises(ValueError, match="--scenario 'seed': the run .* was trained on scenario 'tiny'"):
        evaluation.load_source(Args(run=str(run_dir), scenario="seed"))


def test_resume_refuses_another_scenario(registered, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(parse_train_args(["--scenario", registered, "--steps", "2", "--run-dir", str(run_dir), *RUN]))
    with pytest.raises(SystemExit) as stopped:
        parse_train_args(["--resume", str(run_dir), "--steps", "4", "--scenario", "seed"])
    assert stopped.value.code == 2 and "argument --scenario: a resumed run keeps its setting ('tiny')" in \
        capsys.readouterr().err


def test_evaluate_builds_an_untrained_economy_from_the_scenario(registered):
    source = evaluation.load_source(Args(scenario=registered))
    assert source.scenario == "tiny" and source.economy == EconomyConfig(num_agents=7, max_age=4)
    source = evaluation.load_source(Args(scenario=registered, num_agents=5))
    assert source.economy == EconomyConfig(num_agents=5, max_age=4)
    default = evaluation.load_source(parse_eval_args(["--steps", "10"]))
    assert default.scenario == "seed" and default.economy == EconomyConfig()
    assert parse_eval_args(["--scenario", registered]).scenario == "tiny"


def test_an_older_config_without_scenario_reads_as_seed_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    train(parse_train_args(["--steps", "2", "--num-agents", "5", "--run-dir", str(run_dir), *RUN]))
    data = json.loads((run_dir / "config.json").read_text())
    del data["run"]["scenario"]
    (run_dir / "config.json").write_text(json.dumps(data))
    assert read_run_config(str(run_dir / "config.json")).run.scenario == "seed"
    assert evaluation.load_source(Args(run=str(run_dir))).scenario == "seed"
    train(parse_train_args(["--resume", str(run_dir), "--steps", "3"]))
    assert json.loads((run_dir / "config.json").read_text())["run"]["scenario"] == "seed"


def test_a_config_json_naming_an_unknown_scenario_is_refused_naming_the_key(tmp_path):
    run_dir = tmp_path / "run"
    train(parse_train_args(["--steps", "2", "--num-agents", "5", "--run-dir", str(run_dir), *RUN]))
    data = json.loads((run_dir / "config.json").read_text())
    data["run"]["scenario"] = "gone"
    (run_dir / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"config.json: run: scenario 'gone' is not a known scenario; known: .*\bseed"):
        read_run_config(str(run_dir / "config.json"))


def test_an_unknown_scenario_ends_train_and_evaluate_with_one_line_and_no_folder(tmp_path):
    for script, prog in (("train.py", "train.py"), ("evaluate.py", "evaluate.py")):
        result = subprocess.run([sys.executable, str(ROOT / script), "--scenario", "nope"], capture_output=True,
                                text=True, cwd=tmp_path, timeout=180, env={**os.environ, "COLUMNS": "80"})
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"{prog}: error: argument --scenario: scenario 'nope' is not a known scenario; known: " \
            f"{', '.join(sorted(SCENARIOS))}" in result.stderr
    assert os.listdir(tmp_path) == []  # neither runs/ nor eval_out/
    with pytest.raises(ValueError, match="scenario 'nope'"):
        RunArgs(scenario="nope")


def test_the_registry_is_the_modules_only_global_state():
    """Registering a scenario is one function plus one SCENARIOS line: nothing else in the module keeps names."""
    state = {name for name, value in vars(scenarios).items()
             if not name.startswith("__") and isinstance(value, (dict, list, set, tuple))}
    assert state == {"SCENARIOS"}
