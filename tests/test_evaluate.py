"""Smoke tests of evaluate.py on a tiny economy: every promised output exists and report.md agrees with metrics.json."""
import csv
import json
import math
import os
import re
import stat

import imageio.v3 as iio
import pytest
from conftest import flip_a_stored_bit

from homoecon_env.diagnostics import analysis, report
from homoecon_lab import evaluation as evaluate
from homoecon_lab.evaluation import Args
from homoecon_lab.evaluation_plan import plan_tasks, with_defaults

TINY = dict(num_agents=6, steps=30, seeds=2, frames=4, ablation_seeds=2, ablation_train_steps=10, ablation_steps=10,
            workers=1)
FIGURES = ("gini.png", "dashboard.png", "resources_prices.png", "ages_reproduction.png", "job_distribution.png",
           "broadcast_pca.png", "attention_heatmap.png", "eigen_spectra.png", "topology_early.png",
           "topology_late.png", "degree_pagerank.png", "effort_consumption.png")
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]\d+)?(?!\w)(?!\.\d)")


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    result = evaluate.evaluate(Args(out=str(out), **TINY))
    return out, result


def numeric_leaves(value):
    """Every int and float in a parsed JSON document (bools excluded)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from numeric_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from numeric_leaves(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_every_promised_file_is_written_and_non_empty(evaluation):
    out, _ = evaluation
    for name in (*FIGURES, "trade.gif", "metrics.json", "report.md", "genealogy.csv"):
        assert os.path.getsize(out / name) > 0, name
    frames = sorted(os.listdir(out / "trade_scatter"))
    assert len(frames) == TINY["frames"] and all(re.fullmatch(r"step_\d{4}\.png", f) for f in frames)
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")], "a temporary file was left behind"


def test_outputs_get_the_permissions_of_a_normal_file(evaluation, tmp_path):
    out, _ = evaluation
    (tmp_path / "reference").write_text("")
    expected = stat.S_IMODE(os.stat(tmp_path / "reference").st_mode)  # what open() gives under this umask
    modes = {str(path.relative_to(out)): stat.S_IMODE(os.stat(path).st_mode)
             for path in out.rglob("*") if path.is_file()}
    assert len(modes) > len(FIGURES) and all(mode == expected for mode in modes.values()), modes


def test_gif_has_one_frame_per_trade_scatter(evaluation):
    out, _ = evaluation
    frames = iio.imread(out / "trade.gif", index=None)
    assert frames.shape[0] == TINY["frames"]


def test_metrics_json_is_strict_json_and_matches_the_returned_dict(evaluation):
    out, result = evaluation

    def refuse(constant):
        raise ValueError(f"metrics.json holds {constant}, which strict JSON forbids")

    parsed = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert parsed == result
    assert set(parsed["ablations"]) == {"social_filter", "tastes", "policy"}
    for ablation in parsed["ablations"].values():
        for arm in ablation["arms"].values():
            assert set(arm) == set(analysis.MEASURES)
            assert all(len(stat["per_seed"]) == TINY["ablation_seeds"] for stat in arm.values())


def test_every_number_in_the_report_comes_from_metrics_json(evaluation):
    out, _ = evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    allowed = {report.number(v) for v in numeric_leaves(metrics)}
    text = (out / "report.md").read_text()
    prose = re.sub(r"`[^`]*`", "", re.sub(r"\]\([^)]*\)", "]", text))  # drop link targets and code spans
    tokens = NUMBER.findall(prose)
    assert len(tokens) > 50  # the report is made of numbers
    missing = sorted({t for t in tokens if t not in allowed})
    assert not missing, f"numbers in report.md that metrics.json does not hold: {missing}"


def test_report_links_only_existing_files(evaluation):
    out, _ = evaluation
    targets = re.findall(r"\]\(([^)]+)\)", (out / "report.md").read_text())
    assert targets and all((out / target).is_file() for target in targets)


def test_report_says_when_ablations_were_skipped(evaluation):
    _, result = evaluation
    text = report.render_report({**result, "ablations": {}})
    assert "Ablations were skipped" in text and "## Q5" not in text


def test_genealogy_is_consistent_with_metrics(evaluation):
    out, result = evaluation
    with open(out / "genealogy.csv") as stream:
        rows = {row["agent"]: row for row in csv.DictReader(stream)}
    assert len(rows) == result["genealogy"]["agents"]
    for row in rows.values():
        parents = [p for p in (row["parent_1"], row["parent_2"]) if p]
        if parents:
            assert int(row["generation"]) == 1 + max(int(rows[p]["generation"]) for p in parents)
            assert all(int(rows[p]["birth_step"]) < int(row["birth_step"]) for p in parents)
        if row["death_step"]:
            assert row["death_cause"] in ("age", "starvation")
            assert int(row["death_step"]) >= int(row["birth_step"])
    assert max(int(r["generation"]) for r in rows.values()) == result["genealogy"]["lineage_depth"]


def test_summary_intervals_use_every_seed(evaluation):
    _, result = evaluation
    summary = result["main"]["summary"]
    assert len(result["main"]["per_seed"]) == TINY["seeds"]
    assert summary["gini_mean"]["seeds"] == TINY["seeds"] and math.isfinite(summary["gini_mean"]["ci95"])


@pytest.mark.parametrize("change, message", [
    (dict(steps=1), "--steps"), (dict(ablation_seeds=1), "--ablation-seeds"), (dict(workers=0), "--workers"),
    (dict(num_agents=1), "--num-agents"), (dict(run="/no/such/run"), "--run"),
])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, change, message):
    out = tmp_path / "never_written"
    with pytest.raises(ValueError, match=message):
        evaluate.evaluate(Args(out=str(out), **{**TINY, **change}))
    assert not out.exists()


def test_a_trained_run_is_loaded_and_compared_with_random(tmp_path):
    from homoecon_lab.cli import parse_train_args
    from homoecon_lab.training import train

    run_dir = tmp_path / "run"
    train(parse_train_args(["--num-agents", "6", "--steps", "10", "--run-dir", str(run_dir),
                                  "--checkpoint-every", "10", "--dashboard-every", "0"]))
    out = tmp_path / "eval"
    result = evaluate.evaluate(Args(run=str(run_dir), out=str(out), **{**TINY, "steps": 10, "seeds": 1, "frames": 2}))
    assert result["meta"]["run"] == str(run_dir) and result["meta"]["learner"] == "reinforce"
    assert "the trained run" in (out / "report.md").read_text()
    assert result["main"]["summary"]["gini_mean"]["ci95"] is None  # one seed: no interval, written as n/a
    with pytest.raises(ValueError, match="--num-agents"):
        evaluate.evaluate(Args(run=str(run_dir), out=str(out), **{**TINY, "num_agents": 7}))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from homoecon_lab.cli import parse_train_args
    from homoecon_lab.training import train

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(parse_train_args(["--num-agents", "6", "--steps", "4", "--run-dir", str(run_dir), "--dashboard-every", "0",
                            "--learner", "random"]))
    return run_dir


def _broken_copy(trained_run, tmp_path, break_it):
    import shutil

    run_dir = tmp_path / "broken"
    shutil.copytree(trained_run, run_dir)
    break_it(run_dir)
    return run_dir


@pytest.mark.parametrize("break_it, expected", [
    (lambda d: flip_a_stored_bit(d / "checkpoint.pt"), "checksum mismatch"),
    (lambda d: (d / "checkpoint.pt").write_bytes(b""), "the file is empty"),
    (lambda d: (d / "checkpoint.pt").unlink(), "missing ['checkpoint.pt']"),
    (lambda d: (d / "config.json").unlink(), "missing ['config.json']"),
    (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"num_agents": 6', '"num_agents": -3')), "num_agents must be an int"),
])
def test_a_corrupt_run_is_refused_with_one_message(trained_run, tmp_path, capsys, break_it, expected):
    from homoecon_lab.cli import parse_eval_args

    run_dir = _broken_copy(trained_run, tmp_path, break_it)
    with pytest.raises(SystemExit) as stopped:
        parse_eval_args(["--run", str(run_dir), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "evaluate.py: error: argument --run:" in err and expected in err, err
    assert not (tmp_path / "out").exists()


def test_a_corrupt_checkpoint_is_refused_from_the_command_line(trained_run, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    run_dir = _broken_copy(trained_run, tmp_path, lambda d: flip_a_stored_bit(d / "checkpoint.pt"))
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "evaluate.py"), "--run", str(run_dir), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, cwd=root, timeout=120)
    assert result.returncode == 2 and "checksum mismatch" in result.stderr and "Traceback" not in result.stderr


def test_a_diverging_learner_ends_the_evaluation_naming_rollout_and_step(tmp_path, monkeypatch):
    from agents.baselines import RandomLearner
    from homoecon_lab import rollouts

    class NaNEffort(RandomLearner):
        calls = 0

        def act(self, observation):
            actions = super().act(observation)
            self.calls += 1
            if self.calls == 4:
                actions.effort[0] = float("nan")
            return actions

    monkeypatch.setattr(rollouts, "make_learner", lambda name, economy, learner: NaNEffort(economy, learner))
    import evaluate as script

    with pytest.raises(SystemExit) as stopped:
        script.main(["--out", str(tmp_path / "out"), "--num-agents", "6", "--steps", "10", "--seeds", "1",
                     "--ablation-seeds", "0", "--workers", "1"])
    assert re.match(r"evaluate\.py: error: rollout \('main', 0\), recorded step 4: .*effort", str(stopped.value.code))


def test_sigterm_stops_an_evaluation_with_one_message_and_no_worker_left(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, str(root / "evaluate.py"), "--out", str(out), "--num-agents", "6",
                                "--steps", "100000", "--seeds", "2", "--ablation-seeds", "0", "--workers", "2"],
                               cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def children():
        return {int(pid) for path in Path(f"/proc/{process.pid}/task").glob("*/children")
                for pid in path.read_text().split()}

    def alive(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    try:
        deadline = time.monotonic() + 120
        while len(children()) < 2:  # both rollout workers started
            assert time.monotonic() < deadline and process.poll() is None, "the workers never started"
            time.sleep(0.1)
        time.sleep(3)  # let them import and start stepping
        started = children()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "evaluate.py: stopped by SIGTERM" in err and "Traceback" not in err, err
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started):
        assert time.monotonic() < deadline, f"workers left running: {started}"
        time.sleep(0.1)
    assert not out.exists() or not [p for p in out.rglob("*.tmp")]


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_signal_while_the_workers_step_ends_the_evaluation_and_every_worker(tmp_path, signum):
    """Regression: the workers ignore SIGTERM (the parent owns it), so a stop that only sent them SIGTERM
    left them stepping and the exit hung joining the pool; here the signal lands once both are stepping."""
    import signal
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, str(root / "evaluate.py"), "--out", str(tmp_path / "out"),
                                "--num-agents", "6", "--steps", "100000", "--seeds", "2", "--ablation-seeds", "0",
                                "--workers", "2"], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: process.stderr.read(1), "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        counts = []
        while len(counts) < 2 or counts[-1] == counts[-2]:  # the bar has moved: the workers are past their setup
            assert time.monotonic() < deadline and process.poll() is None, "".join(err)
            time.sleep(0.2)
            counts = [int(n) for n in re.findall(r"(\d+)/200000", "".join(err))]
        workers = {int(pid) for path in Path(f"/proc/{process.pid}/task").glob("*/children")
                   for pid in path.read_text().split()}
        process.send_signal(getattr(signal, signum))
        process.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(err)
    assert process.returncode == 128 + getattr(signal, signum), text
    assert text.count(f"evaluate.py: stopped by {signum}") == 1 and "Traceback" not in text, text

    def running(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    deadline = time.monotonic() + 30  # the resource tracker, a child too, ends once it sees the parent gone
    while any(running(pid) for pid in workers):
        assert time.monotonic() < deadline, f"children left running: {workers}"
        time.sleep(0.1)
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_the_report_says_whether_the_learners_really_learned(evaluation, tmp_path):
    out, result = evaluation  # reinforce, learning on: its windows end within 30 steps
    assert result["meta"]["updates"] > 0
    assert "during which the learners kept learning" in (out / "report.md").read_text()
    scripted = tmp_path / "scripted"  # learning on, but the heuristic never updates anything
    result = evaluate.evaluate(Args(out=str(scripted), learner="scripted", **{**TINY, "ablation_seeds": 0}))
    report = (scripted / "report.md").read_text()
    assert result["meta"]["updates"] == 0 and "kept learning" not in report and "acts by fixed rules" in report


def test_ablations_run_only_the_chosen_arms_and_the_report_says_which_were_not_run(tmp_path):
    """--ablations social_filter trains only learned and uniform attention (2 arms x 2 seeds, nothing else),
    and the report shows that comparison and says the others were not run; a bad name is refused."""
    args = Args(out=str(tmp_path), ablations=("social_filter",), **TINY)
    tasks, stems = plan_tasks(args, evaluate.load_source(args))
    ablation_tasks = [task for task in tasks if task.key[0] == "ablation"]
    assert set(stems) == {"learned", "uniform"}
    assert sorted(task.learner for task in ablation_tasks) == ["reinforce"] * 2 + ["uniform_attention"] * 2
    result = evaluate.evaluate(args)
    assert set(result["ablations"]) == {"social_filter"} and result["inheritance"]["ablation"] == {}
    assert result["meta"]["ablations"] == ["social_filter"]
    text = (tmp_path / "report.md").read_text()
    assert "| mean reward (per agent per step) |" in text.split("## Q5")[0]  # Q4's table
    assert text.count("Not run: `--ablations` did not choose it.") == 2  # Q5 and the policy ablation
    assert "`--ablations` without `inheritance`" in text
    for bad in (("social",), (), ("tastes", "tastes")):
        with pytest.raises(ValueError, match="--ablations must name one or more of social_filter"):
            evaluate.check_args(Args(out=str(tmp_path), ablations=bad, **TINY))


def test_unset_ablation_settings_take_the_scenarios_defaults_and_given_ones_stay():
    """The positive control's learners need about 50,000 steps to find the scouts, so a bare
    `evaluate.py --scenario private_signals` trains that long, and only the arms its question needs."""
    signals = with_defaults(Args(), "private_signals")
    assert (signals.ablation_train_steps, signals.ablation_steps, signals.ablations) == (
        50_000, 200, ("social_filter", "positive_control"))
    seed = with_defaults(Args(), "seed")
    assert (seed.ablation_train_steps, seed.ablation_steps) == (500, 100)
    assert seed.ablations == ("social_filter", "tastes", "policy", "positive_control", "inheritance")
    given = with_defaults(Args(ablation_train_steps=7, ablations=("tastes",)), "private_signals")
    assert (given.ablation_train_steps, given.ablation_steps, given.ablations) == (7, 200, ("tastes",))
    # a learner with a reference warm start (agents.reference) trains its arms past it; a given setting stays
    assert with_defaults(Args(), "supply_chain", warm_start=4000).ablation_train_steps == 4500
    assert with_defaults(Args(ablation_train_steps=7), "supply_chain", warm_start=4000).ablation_train_steps == 7
