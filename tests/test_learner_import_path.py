"""Plug-in learners by import path: `--learner module:ClassName` in train.py and evaluate.py
(docs/design.md sections 5 and 8).

A researcher writes `job_zero_learner.py` in their own folder and runs the scripts from there. The
plug-in's behaviour (every agent works job 0 at full effort) is checked from what the economy
recorded (TensorBoard's job shares, evaluate's metrics.json), not from the learner itself.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import evaluate
import train
from agents import LEARNERS, LearnerConfig, make_learner, resolve_learner
from agents.base import Learner
from homoecon_env import EconomyConfig
from homoecon_lab.evaluation import Args, Source
from homoecon_lab.evaluation_plan import plan_tasks

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "job_zero_learner:JobZero"
TINY = ["--num-agents", "4", "--max-steps", "10", "--log-every", "1", "--dashboard-every", "0", "--seed", "5"]

LEARNER_SOURCE = '''
"""A researcher's learner: every agent works job 0 at full effort; it counts the steps it has seen."""
import torch

from homoecon_env.core import Actions


class JobZero:
    def __init__(self, economy_config, learner_config):
        self.config = economy_config
        self.steps_seen = 0

    def act(self, observation):
        n, c = observation.self_features.shape[0], self.config
        return Actions(broadcast=torch.zeros(n, c.broadcast_dim), job=torch.zeros(n, dtype=torch.long),
                       effort=torch.ones(n), trade_weights=torch.full((n, c.num_resources), 1.0 / c.num_resources),
                       consume=torch.full((n, c.num_resources), 0.5))

    def update(self, step):
        self.steps_seen += 1
        return {"steps_seen": self.steps_seen}   # logged as learner/steps_seen

    def on_births(self, births):
        pass

    def state_dict(self):
        return {"steps_seen": self.steps_seen}

    def load_state_dict(self, state):
        self.steps_seen = state["steps_seen"]


class NoAct:
    def __init__(self, economy_config, learner_config):
        pass

    def update(self, step):
        return {}


class OneArgument(JobZero):
    def __init__(self, economy_config):
        super().__init__(economy_config, None)


not_a_class = 3
'''
BROKEN_SOURCE = "import a_dependency_nobody_installed  # noqa\n"


def write_modules(folder: Path) -> None:
    (folder / "job_zero_learner.py").write_text(textwrap.dedent(LEARNER_SOURCE))
    (folder / "broken_learner.py").write_text(BROKEN_SOURCE)


def script(name: str, *args, cwd):
    """Run a script the way a researcher does: `python <repo>/<name> ...` from their own folder."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONSAFEPATH"}
    return subprocess.run([sys.executable, str(ROOT / name), *args], capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=240)


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars(tag)}


@pytest.fixture(scope="module")
def researcher(tmp_path_factory):
    """A folder holding the researcher's module and a 4-step run trained from it by the CLI."""
    folder = tmp_path_factory.mktemp("researcher")
    write_modules(folder)
    result = script("train.py", "--learner", PLUGIN, "--steps", "4", "--checkpoint-every", "4", *TINY,
                    "--run-dir", "run", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def isolated_imports(tmp_path, monkeypatch):
    """In-process runs: the researcher's folder as cwd; sys.path and its modules restored afterwards."""
    write_modules(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]


def test_train_records_the_import_path_and_the_plugin_drives_every_agent(researcher):
    config = json.loads((researcher / "run" / "config.json").read_text())
    assert config["run"]["learner"] == PLUGIN
    first_job = config["economy"]["jobs"][0]["name"]
    # the economy's own count of who worked what: everyone, every step, on job 0
    assert scalars(researcher / "run", f"jobs/share/{first_job}") == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert scalars(researcher / "run", "learner/steps_seen") == {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}


def test_resume_finds_the_plugin_again_and_restores_its_state(researcher, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(researcher / "run", run)
    result = script("train.py", "--resume", str(run), "--steps", "7", cwd=researcher)
    assert result.returncode == 0, result.stderr
    first_job = json.loads((run / "config.json").read_text())["economy"]["jobs"][0]["name"]
    assert all(share == 1.0 for share in scalars(run, f"jobs/share/{first_job}").values())
    # a fresh learner would count from 1 again: 5, 6, 7 means its checkpointed state came back
    assert scalars(run, "learner/steps_seen") == {step: float(step) for step in range(1, 8)}


def test_evaluate_run_with_two_worker_processes_imports_the_plugin(researcher):
    out = researcher / "evaluation"
    result = script("evaluate.py", "--run", "run", "--out", str(out), "--steps", "3", "--seeds", "2", "--frames", "1",
                    "--ablation-seeds", "0", "--workers", "2", cwd=researcher)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["meta"]["learner"] == PLUGIN
    first_job = metrics["meta"]["jobs"][0]
    assert [seed[f"job_share_late_{first_job}"] for seed in metrics["main"]["per_seed"]] == [1.0, 1.0]


def test_evaluate_takes_an_untrained_plugin_by_import_path(isolated_imports):
    out = isolated_imports / "evaluation"
    evaluate.main(["--learner", PLUGIN, "--out", str(out), "--num-agents", "4", "--steps", "3", "--seeds", "1",
                   "--frames", "1", "--ablation-seeds", "0", "--workers", "1"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["meta"]["learner"] == PLUGIN and metrics["meta"]["run"] is None
    assert metrics["main"]["per_seed"][0][f"job_share_late_{metrics['meta']['jobs'][0]}"] == 1.0


def test_without_a_run_the_policy_ablation_trains_the_plugin_then_compares_it_with_random(isolated_imports):
    sys.path.append(str(isolated_imports))
    args = Args(learner=PLUGIN, ablation_seeds=2, ablation_train_steps=7)
    tasks, stems = plan_tasks(args, Source(EconomyConfig(num_agents=4), PLUGIN, LearnerConfig(), None))
    trained = [task for task in tasks if task.key[:2] == ("ablation", PLUGIN)]
    assert stems["trained"][1] == PLUGIN and len(trained) == 2
    assert all(task.train_steps == 7 and not task.learn for task in trained)
    assert all(task.learner == PLUGIN for task in tasks if task.key[0] == "main")


@pytest.mark.parametrize("learner, expected", [
    ("job_zero_learner.JobZero", "no ':'); an import path separates module and class with a colon: "
                                 "'job_zero_learner:JobZero'"),
    (":JobZero", "the module part is empty"),
    ("job_zero_learner:", "the class part is empty"),
    ("job-zero:JobZero", "'job-zero' is not a dotted Python name"),
    ("no_such_module_here:JobZero", "cannot import module 'no_such_module_here' (ModuleNotFoundError: "
                                    "No module named 'no_such_module_here')"),
    ("broken_learner:Anything", "No module named 'a_dependency_nobody_installed'"),
    ("job_zero_learner:Missing", "has no attribute 'Missing'"),
    ("job_zero_learner:not_a_class", "is not a class but a int object"),
    ("job_zero_learner:NoAct", "missing methods ['act', 'on_births', 'state_dict', 'load_state_dict']"),
    ("job_zero_learner:OneArgument", "must be built as cls(economy_config, learner_config)"),
])
def test_a_bad_learner_is_refused_naming_the_field_before_any_run_folder(isolated_imports, capsys, learner,
                                                                          expected):
    with pytest.raises(SystemExit) as stopped:
        train.main(["--learner", learner, "--steps", "2", *TINY])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err
    assert f"train.py: error: argument --learner: learner {learner!r}" in err and expected in err, err
    assert sorted(os.listdir(isolated_imports)) == ["broken_learner.py", "job_zero_learner.py"]  # no runs/


def test_evaluate_refuses_a_bad_learner_and_another_learner_than_the_runs(isolated_imports, researcher, capsys):
    other_learner = ["--learner", "random", "--run", str(researcher / "run")]
    for argv, expected in ((["--learner", "job_zero_learner:NoAct"], "missing methods"),
                           (other_learner, f"trained with learner {PLUGIN!r}")):
        with pytest.raises(SystemExit) as stopped:
            evaluate.main([*argv, "--out", "never"])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and "evaluate.py: error: argument --learner:" in err and expected in err, err
    assert not (isolated_imports / "never").exists()


def test_resolving_imports_only_the_named_module_and_registers_nothing(isolated_imports):
    sys.path.append(str(isolated_imports))
    registry, before = dict(LEARNERS), set(sys.modules)
    learner_class = resolve_learner(PLUGIN)
    assert set(sys.modules) - before == {"job_zero_learner"}
    assert LEARNERS == registry and learner_class.__name__ == "JobZero"
    learner = make_learner(PLUGIN, EconomyConfig(num_agents=3))
    assert isinstance(learner, Learner) and type(learner) is learner_class
    assert resolve_learner("reinforce") is LEARNERS["reinforce"]  # built-in names unchanged


def test_the_current_directory_is_searched_last_and_only_once(isolated_imports):
    from homoecon_lab.cli import search_current_directory

    search_current_directory()
    search_current_directory()
    assert sys.path.count(str(isolated_imports)) == 1 and sys.path[-1] == str(isolated_imports)


def test_the_readme_import_path_commands_name_the_readme_class(isolated_imports):
    """The README's `--learner mymodule:GreedyLearner` resolves to its example class saved as mymodule.py."""
    section = (ROOT / "README.md").read_text().split("## Plug in another algorithm", 1)[1].split("\n## ", 1)[0]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (isolated_imports / "mymodule.py").write_text("\n".join(line for line in example.splitlines()
                                                            if "LEARNERS" not in line))
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    names = set(re.findall(r"--learner (\S+)", commands))
    assert names == {"mymodule:GreedyLearner"}
    sys.path.append(str(isolated_imports))
    learner = make_learner(names.pop(), EconomyConfig(num_agents=3))
    assert type(learner).__name__ == "GreedyLearner" and isinstance(learner, Learner)
