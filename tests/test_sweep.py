"""sweep.py on Ray Tune (docs/design.md section 10): a tiny grid's trials end where plain `python train.py`
runs end; results.csv and summary.md report them (the CI checked against scipy); a failing trial is
reported while the others finish; a rerun keeps finished trials and continues the others from their
checkpoints; bad flags and a missing Ray fail before any trial, naming the cause. One Ray for the module.
"""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from extras import import_extra

import sweep as sweep_script
from homoecon_lab import sweep_runner, sweeps
from homoecon_lab.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1)
TINY = ["--num-agents", "6", "--steps", "30", "--checkpoint-every", "10", "--seeds", "2"]
ARGS = [*TINY, "--grid", "learner=uniform_attention,flaky:Flaky", "--name", "tiny"]
# A REINFORCE learner that fails at its 21st action while the marker file exists (after the step-20 checkpoint).
FLAKY = '''
import os
from agents.reinforce import ReinforceLearner

MARKER = {marker!r}


class Flaky(ReinforceLearner):
    calls = 0

    def act(self, observation):
        self.calls += 1
        if self.calls > 20 and os.path.exists(MARKER):
            raise RuntimeError("flaky learner told to fail")
        return super().act(observation)
'''


def train_py(learner: str, seed: int, run_dir: Path, cwd: Path, *more: str) -> subprocess.Popen:
    """The independent reference: the ordinary script with the trial's settings."""
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--learner", learner, "--seed", str(seed),
                             *TINY[:6], *more, "--run-dir", str(run_dir)], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def final_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "final_metrics.json").read_text())


def read_rows(folder: Path) -> list[dict]:
    with open(folder / "results.csv", newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The tiny sweep run twice: first with the plug-in failing after its step-20 checkpoint, then (marker
    removed) again with the same command. Plain train.py references run meanwhile."""
    ray = import_extra("ray", "ray")
    tmp = tmp_path_factory.mktemp("sweep")
    marker = tmp / "fail_now"
    marker.write_text("")
    (tmp / "flaky.py").write_text(FLAKY.format(marker=str(marker)))
    here = os.getcwd()
    os.chdir(tmp)  # where a researcher's flaky.py is found, as when sweep.py runs from this folder
    references = {(learner, seed): (tmp / "ref" / f"{learner}_{seed}") for learner in ("uniform_attention", "reinforce")
                  for seed in SEEDS}
    processes = [train_py(learner, seed, path, tmp) for (learner, seed), path in references.items()]
    processes.append(train_py("uniform_attention", 1, tmp / "every_step", tmp, "--log-every", "1"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        argv = [*ARGS, "--sweep-dir", str(tmp / "sweeps")]
        first = sweep_runner.run_sweep(sweeps.parse_sweep_args(argv))
        folder = tmp / "sweeps" / "tiny"
        first_summary = (folder / "summary.md").read_text()
        records = {label: json.loads(path.read_text()) for label, path in
                   ((p.stem, p) for p in (folder / "trials").glob("*.json"))}
        stamps = {path: path.stat().st_mtime_ns for path in folder.glob("runs/*/final_metrics.json")}
        marker.unlink()
        second = sweep_runner.run_sweep(sweeps.parse_sweep_args(argv))
    finally:
        ray.shutdown()
        os.chdir(here)
    for process in processes:
        assert process.wait(timeout=180) == 0, process.stderr.read()
    return {"tmp": tmp, "folder": folder, "argv": argv, "first": first, "second": second, "records": records,
            "first_summary": first_summary, "stamps": stamps, "references": references}


def test_every_trial_ends_where_a_plain_train_py_run_ends(swept):
    """Each trial's final_metrics.json equals train.py's with the same settings, exactly; the flaky trials
    (REINFORCE, resumed from their step-20 checkpoint) equal uninterrupted REINFORCE runs."""
    for learner, label in (("uniform_attention", "uniform_attention"), ("reinforce", "Flaky")):
        for seed in SEEDS:
            trial = swept["folder"] / "runs" / f"learner={label}_s{seed}"
            assert final_metrics(trial) == final_metrics(swept["references"][learner, seed]), trial.name
            config = json.loads((trial / "config.json").read_text())
            assert (config["run"]["seed"], config["economy"]["seed"], config["learner"]["seed"]) == (seed,) * 3


def test_final_metrics_are_the_mean_of_the_last_tenth_of_logged_steps(swept):
    """A 30-step run's final reward/mean is the mean of the per-step rewards a --log-every 1 run logged to
    TensorBoard at steps 28..30 (its last 10%); the same run logged every 10 steps writes the same file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = swept["tmp"] / "every_step"  # train.py --log-every 1, run by the fixture
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    rewards = {event.step: event.value for event in events.Scalars("reward/mean")}
    final = final_metrics(run_dir)
    assert (final["first_step"], final["last_step"], final["steps"]) == (28, 30, 3)
    assert final["metrics"]["reward/mean"] == pytest.approx(np.mean([rewards[s] for s in (28, 29, 30)]), rel=1e-6)
    # log cadence does not change the final metrics: the same run logged every 10 steps
    assert final == final_metrics(swept["references"]["uniform_attention", 1])


def test_results_csv_has_one_row_per_trial_with_its_grid_values(swept):
    rows = read_rows(swept["folder"])
    assert sorted((row["learner"], int(row["seed"]), row["status"]) for row in rows) == sorted(
        (learner, seed, "ok") for learner in ("uniform_attention", "flaky:Flaky") for seed in SEEDS)
    for row in rows:
        trial = swept["folder"] / "runs" / row["trial"]
        assert float(row["reward/mean"]) == final_metrics(trial)["metrics"]["reward/mean"]
        assert float(row["wall_s"]) > 0
    from matplotlib.image import imread

    assert imread(swept["folder"] / "comparison.png").ndim == 3


def test_summary_mean_and_ci_equal_scipy_t_interval_over_results_csv(swept):
    """summary.md's mean reward cell for a grid point = mean and 95% t half-width over its seeds' rows."""
    rows = [row for row in read_rows(swept["folder"]) if row["learner"] == "uniform_attention"]
    values = np.array([float(row["reward/mean"]) for row in rows])
    low, high = scipy.stats.t.interval(0.95, df=len(values) - 1, loc=values.mean(), scale=scipy.stats.sem(values))
    lines = (swept["folder"] / "summary.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| learner"))
    row = next(line for line in lines if line.startswith("| uniform_attention "))
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    assert cells["n"] == "2"
    mean, half = (float(part) for part in cells["mean reward"].split("±"))
    assert mean == pytest.approx(values.mean(), rel=1e-3) and half == pytest.approx((high - low) / 2, rel=1e-2)


def test_a_failing_trial_is_reported_with_its_error_and_the_others_finish(swept):
    first = {row["trial"]: row for row in swept["first"]}
    for seed in SEEDS:
        failed, other = first[f"learner=Flaky_s{seed}"], first[f"learner=uniform_attention_s{seed}"]
        assert failed["status"] == "error" and "flaky learner told to fail" in failed["error"]
        assert other["status"] == "ok" and math.isfinite(other["reward/mean"])
    assert "## Failed trials" in swept["first_summary"] and "flaky learner told to fail" in swept["first_summary"]


def test_a_rerun_keeps_finished_trials_and_continues_the_others_from_their_checkpoints(swept):
    folder, records = swept["folder"], swept["records"]
    for path, stamp in swept["stamps"].items():  # finished in the first run: not rewritten
        assert path.stat().st_mtime_ns == stamp
    for seed in SEEDS:
        kept, resumed = f"learner=uniform_attention_s{seed}", f"learner=Flaky_s{seed}"
        assert json.loads((folder / "trials" / f"{kept}.json").read_text())["attempts"] == 1
        assert records[resumed]["attempts"] == 1
        assert json.loads((folder / "trials" / f"{resumed}.json").read_text())["attempts"] == 2
        # continued, not restarted: the first attempt's event file is still there, then the resumed run's
        assert len(list((folder / "runs" / resumed).glob("events.out.tfevents.*"))) == 2


def test_a_rerun_with_other_settings_into_the_same_sweep_is_refused(swept, capsys):
    argv = [*swept["argv"][:3], "40", *swept["argv"][4:]]  # --steps 40
    with pytest.raises(SystemExit) as stop:
        sweep_script.main(argv)
    assert "--steps was 30, now 40" in str(stop.value) and "other settings" in str(stop.value)


@pytest.mark.parametrize("grid, named", [("num_agentz=4,5", "num_agentz"), ("num_agents=6,0", "num_agents=0"),
                                         ("learning_rate=fast", "learning_rate"), ("seed=1,2", "seed"),
                                         ("learner=reinforce,nomodule:Nope", "learner=nomodule:Nope")])
def test_a_bad_grid_fails_naming_it_before_ray_is_needed(grid, named, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # any use of Ray would fail differently
    with pytest.raises(SystemExit) as stop:
        sweep_script.main(["--grid", grid, "--sweep-dir", str(tmp_path)])
    assert stop.value.code == 2
    assert f"argument --grid {named}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_missing_ray_ends_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(SystemExit) as stop:
        sweep_script.main([*TINY, "--sweep-dir", str(tmp_path)])
    assert "Ray Tune, which is not installed" in str(stop.value) and "pip install -e '.[ray]'" in str(stop.value)


def test_trial_settings_are_train_py_settings_with_the_grid_values():
    sweep = sweeps.parse_sweep_args([*TINY, "--grid", "num_agents=6,8", "--grid", "heterogeneous_tastes=false",
                                     "--grid", "need=1 2"])
    assert [trial.label for trial in sweep.trials] == [
        f"num_agents={n},heterogeneous_tastes=false,need=1_2_s{s}" for n in (6, 8) for s in SEEDS]
    trial = sweep.trials[2]
    assert isinstance(trial.settings, Settings)
    assert (trial.settings.economy.num_agents, trial.settings.economy.heterogeneous_tastes,
            trial.settings.economy.need, trial.settings.run.threads) == (8, False, (1.0, 2.0), 1)
