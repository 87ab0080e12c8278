"""evaluate.py --backend ray (docs/design.md section 10): the main rollouts and the ablation arms as Ray
tasks give the same outputs as the process pool; plug-in learners reach the Ray workers; a failing task,
a stop by SIGTERM on a cluster given by --address, and a missing Ray each end with one clear message.

One local Ray instance (2 CPUs) serves the module; evaluate uses it as the running Ray session, and the
SIGTERM test's evaluate.py process connects to it by --address.
"""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from extras import import_extra

import evaluate as evaluate_script
from homoecon_lab import evaluation, ray_runner, rollouts, training
from homoecon_lab.cli import parse_train_args
from homoecon_lab.errors import RunError
from homoecon_lab.evaluation import Args
from homoecon_lab.evaluation_plan import plan_tasks
from homoecon_lab.stopping import GracefulStop

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(num_agents=4, steps=4, seeds=2, frames=1, ablation_seeds=2, ablation_train_steps=3, ablation_steps=2)
PLUGINS = "ray_plugin_learners"  # the module a researcher writes in their own folder

PLUGIN_SOURCE = '''
"""A researcher's learners: every agent works job 0 at full effort (NanEffort: at effort nan)."""
import torch

from homoecon_env.core import Actions

LOG = {log!r}  # Logged appends one line per step here


class JobZero:
    effort = 1.0

    def __init__(self, economy_config, learner_config):
        self.config = economy_config

    def act(self, observation):
        n, c = observation.self_features.shape[0], self.config
        return Actions(broadcast=torch.zeros(n, c.broadcast_dim), job=torch.zeros(n, dtype=torch.long),
                       effort=torch.full((n,), self.effort), consume=torch.full((n, c.num_resources), 0.5),
                       trade_weights=torch.full((n, c.num_resources), 1.0 / c.num_resources))

    def update(self, step):
        return {{}}

    def on_births(self, births):
        pass

    def state_dict(self):
        return {{}}

    def load_state_dict(self, state):
        pass


class NanEffort(JobZero):
    effort = float("nan")


class Logged(JobZero):
    def act(self, observation):
        with open(LOG, "a") as log:
            log.write("step\\n")
        return super().act(observation)
'''


def write_plugins(folder: Path, log: Path) -> None:
    (folder / f"{PLUGINS}.py").write_text(textwrap.dedent(PLUGIN_SOURCE.format(log=str(log))))


@pytest.fixture(scope="module")
def ray():
    ray = import_extra("ray", "ray")
    handler = signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, include_dashboard=False)
    signal.signal(signal.SIGTERM, handler)  # ray.init makes SIGTERM exit pytest at once
    yield ray
    ray.shutdown()


@pytest.fixture
def researcher(tmp_path, monkeypatch):
    """The researcher's folder (holding the plug-ins) as cwd; sys.path and its modules restored afterwards."""
    write_plugins(tmp_path, tmp_path / "steps.log")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield tmp_path
    sys.modules.pop(PLUGINS, None)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def comparable(out: Path) -> dict:
    """metrics.json less what differs by design between two runs: the wall clock and the backend flags."""
    metrics = json.loads((out / "metrics.json").read_text())
    del metrics["meta"]["wall_seconds"]
    for name in ("out", "backend", "address", "workers"):
        del metrics["args"][name]
    return metrics


def test_ray_backend_writes_the_same_outputs_as_the_process_pool(ray, tmp_path, monkeypatch):
    by_processes, by_ray = tmp_path / "process", tmp_path / "ray"
    evaluation.evaluate(Args(out=str(by_processes), backend="process", workers=2, **TINY))

    def not_here(task, report):
        raise AssertionError(f"{task.key} ran in the parent process, not in a Ray worker")

    monkeypatch.setattr(rollouts, "run_task", not_here)  # Ray workers import rollouts afresh, unpatched
    evaluation.evaluate(Args(out=str(by_ray), backend="ray", workers=2, **TINY))

    expected, got = comparable(by_processes), comparable(by_ray)
    assert got == expected
    assert set(got["ablations"]) == {"social_filter", "tastes", "policy"}
    assert len(got["main"]["per_seed"]) == TINY["seeds"]
    # the figures (drawn from the traces) and genealogy.csv, byte for byte; report.md but for its wall clock
    files = sorted(str(path.relative_to(by_processes)) for path in by_processes.rglob("*") if path.is_file())
    assert files == sorted(str(path.relative_to(by_ray)) for path in by_ray.rglob("*") if path.is_file())
    assert "gini.png" in files and "trade.gif" in files and "genealogy.csv" in files
    for name in files:
        if name not in ("metrics.json", "report.md"):
            assert (by_ray / name).read_bytes() == (by_processes / name).read_bytes(), name
    took = r"The evaluation took [\d.]+ s"
    assert re.sub(took, "", (by_ray / "report.md").read_text()) == \
        re.sub(took, "", (by_processes / "report.md").read_text())


def test_every_env_step_of_a_ray_task_reaches_the_progress_bar(ray):
    """The Ray tasks report each step they take (batched by ten): the bar's count is theirs, not a top-up."""
    args = Args(**{**TINY, "steps": 23, "ablation_seeds": 0})
    tasks, _ = plan_tasks(args, evaluation.load_source(args))
    reported = []
    results = ray_runner.run_on_ray(ray, tasks, 2, 1, GracefulStop(), reported.append)
    assert set(results) == {("main", 0), ("main", 1)}
    assert sum(reported) == 2 * 23


def test_a_trained_plugin_run_is_restored_in_ray_workers_for_rollouts_and_ablations(ray, researcher):
    """--run of a run trained with a plug-in: the Ray workers import the plug-in, read the run's config and
    checkpoint (main rollouts and the "trained" ablation arm)."""
    # the Ray workers do not see the researcher's folder on their own
    assert ray.get(ray.remote(importlib.util.find_spec).remote(PLUGINS)) is None
    training.train(parse_train_args(["--learner", f"{PLUGINS}:JobZero", "--steps", "2", "--checkpoint-every", "2",
                                     "--num-agents", "4", "--dashboard-every", "0", "--run-dir", "run"]))
    out = researcher / "evaluation"
    evaluate_script.main(["--run", "run", "--backend", "ray", "--out", str(out), "--steps", "3", "--seeds", "1",
                          "--frames", "1", "--ablation-seeds", "2", "--ablation-train-steps", "0",
                          "--ablation-steps", "2"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["meta"]["learner"] == f"{PLUGINS}:JobZero"
    # the economy's own record of who worked what: everyone on job 0, as the plug-in says
    assert metrics["main"]["per_seed"][0][f"job_share_late_{metrics['meta']['jobs'][0]}"] == 1.0
    assert len(metrics["ablations"]["policy"]["arms"]["trained"]["mean_reward"]["per_seed"]) == 2


def test_a_failing_ray_task_ends_evaluate_with_one_message_naming_it(ray, researcher):
    """An untrained plug-in (--learner) whose effort is nan: the economy refuses its first step in the worker."""
    argv = ["--learner", f"{PLUGINS}:NanEffort", "--backend", "ray", "--out", str(researcher / "never"),
            "--num-agents", "4", "--steps", "3", "--seeds", "1", "--frames", "1", "--ablation-seeds", "0"]
    with pytest.raises(RunError, match=r"^rollout \('main', 0\), recorded step 1: .*'effort' is nan"):
        evaluation.evaluate(evaluate_script.parse_eval_args(argv))
    with pytest.raises(SystemExit) as stopped:
        evaluate_script.main(argv)
    message = str(stopped.value.code)
    assert message.startswith("evaluate.py: error: rollout ('main', 0), recorded step 1:") and "\n" not in message
    assert not (researcher / "never" / "metrics.json").exists()


def test_sigterm_cancels_the_tasks_on_a_cluster_given_by_address(ray, tmp_path):
    """evaluate.py on the running cluster (--address): SIGTERM ends it with one message and exit 143, and
    its Ray task stops stepping and gives its CPU back to the cluster, which lives on."""
    log = tmp_path / "steps.log"
    write_plugins(tmp_path, log)
    address = ray.get_runtime_context().gcs_address
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "evaluate.py"), "--learner", f"{PLUGINS}:Logged", "--backend", "ray",
         "--address", address, "--out", str(tmp_path / "out"), "--num-agents", "4", "--steps", "100000",
         "--seeds", "1", "--frames", "1", "--ablation-seeds", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and log.stat().st_size > 0) and process.poll() is None:
            assert time.monotonic() < deadline, "the Ray task never started stepping"
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "evaluate.py: stopped by SIGTERM" in err and "Traceback" not in err, err
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2:  # the cancelled task released its CPU
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.2)
    steps = log.stat().st_size
    time.sleep(1.0)
    assert log.stat().st_size == steps, "the Ray task kept stepping after evaluate.py stopped"
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_an_address_where_no_cluster_answers_is_one_message_not_a_hang(tmp_path):
    import_extra("ray", "ray")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--backend", "ray", "--address", "127.0.0.1:1",
                             "--out", str(out), "--num-agents", "4", "--steps", "3", "--seeds", "1", "--frames", "1",
                             "--ablation-seeds", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "evaluate.py: error: --address '127.0.0.1:1': no Ray cluster answers there" in result.stderr


def test_address_is_refused_without_the_ray_backend():
    with pytest.raises(ValueError, match=r"^--address 'auto': an address applies only with --backend ray"):
        evaluation.check_args(Args(address="auto"))


def test_a_missing_ray_is_one_message_naming_the_extra_before_any_work(tmp_path):
    """Works without Ray installed too: the child hides it (sys.modules['ray'] = None)."""
    out = tmp_path / "out"
    code = ("import sys; sys.modules['ray'] = None; import evaluate; "
            f"evaluate.main(['--backend', 'ray', '--out', {str(out)!r}, '--num-agents', '4', '--steps', '3'])")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=environment)
    assert result.returncode == 2, result.stderr
    assert "evaluate.py: error: argument --backend: ray needs Ray, an optional extra" in result.stderr
    assert 'pip install -e ".[ray]"' in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()  # refused before any work started
