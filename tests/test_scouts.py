"""Is the positive control's structure used? diagnostics.scouts against hand-worked cases, and its path into
Trace, metrics.json and report.md (docs/design.md section 11)."""
import json
import math
import re

import numpy as np
import pytest

from agents import LearnerConfig
from homoecon_env.diagnostics import analysis, report, scouts
from homoecon_env.scenarios import scenario_config
from homoecon_lab import evaluation
from homoecon_lab.evaluation import Args
from homoecon_lab.rollouts import Task, run_task

# Five agents, two peer slots each; agents 0 and 1 are scouts.
SCOUT = np.array([True, True, False, False, False])
PEERS = np.array([[2, 3], [2, 3], [0, 3], [1, 0], [2, -1]])
MASK = np.array([[1, 1], [1, 1], [1, 1], [1, 1], [1, 0]])
ATTENTION = np.array([[0.5, 0.5],  # a scout: not a listener, never counted
                      [0.9, 0.1],  # a scout
                      [0.8, 0.2],  # scout 0 gets 0.8 of row 2's attention; scouts are 1/2 of its peers
                      [0.3, 0.7],  # both peers are scouts: mass 1, share 1
                      [0.4, 0.6]])  # its one live peer is no scout (the 0.6 on the empty slot counts for nothing)


def test_a_planted_attention_matrix_gives_the_hand_worked_mass_share_and_ratio():
    mass, share = scouts.attention_on_scouts(ATTENTION, PEERS, MASK, SCOUT)
    assert mass == pytest.approx(0.8 + 1.0 + 0.0) and share == pytest.approx(0.5 + 1.0 + 0.0)
    assert scouts.ratio(mass, share) == pytest.approx(1.8 / 1.5)


def test_dead_listeners_are_left_out_and_steps_pool_before_dividing():
    alive = np.array([True, True, True, False, True])  # row 3 goes: only row 2 remains (0.8 over 0.5)
    mass, share = scouts.attention_on_scouts(ATTENTION, PEERS, MASK, SCOUT, alive)
    assert scouts.ratio(mass, share) == pytest.approx(1.6)
    # two steps pooled: (1.8 + 0.8) / (1.5 + 0.5), not the mean of the ratios (1.2 and 1.6)
    assert scouts.ratio([1.8, 0.8], [1.5, 0.5]) == pytest.approx(1.3)


def test_uniform_attention_over_live_peers_gives_exactly_one_whatever_the_peer_set():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, k = 12, 5
        peers = np.stack([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
        mask = (rng.random((n, k)) < 0.8).astype(float)
        peers = np.where(mask > 0, peers, -1)
        scout = rng.random(n) < 0.3
        uniform = mask / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        mass, share = scouts.attention_on_scouts(uniform, peers, mask, scout)
        assert share == 0 or scouts.ratio(mass, share) == pytest.approx(1.0)
    assert math.isnan(scouts.ratio(0.0, 0.0))  # no scout in any listener's view: undefined, not 0


def test_the_share_on_the_boom_counts_live_non_scouts_only():
    jobs = np.array([2, 2, 2, 0, 2, 1])
    scout = np.array([True, True, False, False, False, False])
    alive = np.array([True, True, True, True, False, True])  # row 4 (on the boom) is dead
    assert scouts.listeners_on_boom(jobs, 2, scout, alive) == pytest.approx(1 / 3)  # rows 2, 3, 5
    assert math.isnan(scouts.listeners_on_boom(jobs, -1, scout))  # no boom


def test_mismatched_shapes_are_refused_naming_the_arguments():
    with pytest.raises(ValueError, match="attention_on_scouts: attention"):
        scouts.attention_on_scouts(ATTENTION[:, :1], PEERS, MASK, SCOUT)


def rollout(learner, private_signals=True, steps=25):
    economy = scenario_config("private_signals", private_signals=private_signals)
    return run_task(Task(key=("test",), economy=economy, learner=learner, learner_config=LearnerConfig(seed=0),
                         economy_seed=3, steps=steps, learn=False), lambda k: None)


def test_a_rollout_records_the_scripted_policies_structure_as_built():
    ignorer = analysis.scout_outcome(rollout("agents.scripted:ScriptedIgnorer"))
    listener = analysis.scout_outcome(rollout("agents.scripted:ScriptedListener"))
    assert ignorer["attention_on_scouts"] == pytest.approx(1.0)  # uniform over live peers
    assert listener["attention_on_scouts"] > 2.0  # all of it on scouts, a quarter of the peers
    assert listener["listeners_on_boom"] > 0.5 > ignorer["listeners_on_boom"]  # chance is 1/4
    assert "listeners_on_boom" not in rollout("agents.scripted:ScriptedIgnorer", private_signals=False, steps=3)


@pytest.fixture(scope="module")
def signals_evaluation(tmp_path_factory):
    out = tmp_path_factory.mktemp("signals_eval")
    result = evaluation.evaluate(Args(scenario="private_signals", out=str(out), num_agents=12, steps=10, seeds=2,
                                      frames=2, ablation_seeds=2, ablation_train_steps=5, ablation_steps=10,
                                      workers=1))
    return out, result


def test_metrics_and_report_give_each_arm_its_scout_measures_and_the_report_reads_them_from_metrics(
        signals_evaluation):
    out, result = signals_evaluation
    structure = json.loads((out / "metrics.json").read_text())["positive_control"]
    assert set(structure["arms"]) == {"learned", "uniform", "listener", "ignorer"}
    assert structure["arms"]["uniform"]["attention_on_scouts"]["mean"] == pytest.approx(1.0)
    assert structure["chance_on_boom"] == pytest.approx(1 / 4)
    text = (out / "report.md").read_text()
    row = re.search(r"\| uniform attention \(ablation, frozen\) \| ([^|]+) \| ([^|]+) \|", text)
    assert row and row.group(1).strip() == report.with_ci(structure["arms"]["uniform"]["attention_on_scouts"])
    assert row.group(2).strip() == report.with_ci(structure["arms"]["uniform"]["listeners_on_boom"])
    assert "| learned − uniform (paired) |" in text
    main_only = {key: structure[key] for key in ("main", "chance_on_boom")}  # what --ablation-seeds 0 writes
    skipped = report.render_report({**result, "ablations": {}, "positive_control": {**main_only, "arms": {}}})
    assert "| main rollouts (late window) |" in skipped and "(ablation, frozen)" not in skipped
