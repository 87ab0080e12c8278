"""Lineage exports and measures (docs/design.md section 9): the GraphML lineage DAG, founder-lineage
(Muller) shares and message-dialect divergence, checked against hand-built genealogies."""
import csv
import json

import networkx as nx
import numpy as np
import pytest

from agents import LearnerConfig
from homoecon_env.config import EconomyConfig
from homoecon_env.diagnostics import lineage
from homoecon_lab.evaluation import Args, evaluate
from homoecon_lab.rollouts import Task, run_task


def record(parents, birth, generation, death=None, teacher=None, initial=False):
    return {"parents": tuple(parents), "birth_step": birth, "generation": generation, "death_step": death,
            "initial": initial, "teacher": teacher, "slot": 0, "tastes": [], "death_cause": ""}


# By hand: founders 0, 1, 2; 3 = child of (0, 1); 4 = child of (1, 0); 5 = child of (3, 4) who copied
# teacher 2 (cultural); 6 = a founder refounding after a collapse; 7 = child of (5, 2) whose teacher is its
# parent 2. First-parent lines: 3 -> 0, 4 -> 1, 5 -> 3 -> 0, 7 -> 5 -> 0.
AGENTS = {0: record((), 0, 0, death=4, initial=True), 1: record((), 0, 0, death=6, initial=True),
          2: record((), 0, 0, initial=True), 3: record((0, 1), 2, 1, death=7), 4: record((1, 0), 3, 1),
          5: record((3, 4), 5, 2, teacher=2), 6: record((), 6, 0), 7: record((5, 2), 8, 3, teacher=2)}
ALIVE = {2, 4, 5, 6, 7}


def test_graphml_round_trip_is_the_hand_built_genealogy(tmp_path):
    path = tmp_path / "genealogy.graphml"
    lineage.write_graphml(str(path), lineage.lineage_graph(AGENTS, ALIVE))
    graph = nx.read_graphml(path)
    assert nx.is_directed_acyclic_graph(graph)
    assert set(graph.nodes) == {f"agent_{a}" for a in range(8)}
    parent_edges = {(u, v) for u, v, d in graph.edges(data=True) if d["parent"]}
    assert parent_edges == {("agent_0", "agent_3"), ("agent_1", "agent_3"), ("agent_1", "agent_4"),
                            ("agent_0", "agent_4"), ("agent_3", "agent_5"), ("agent_4", "agent_5"),
                            ("agent_5", "agent_7"), ("agent_2", "agent_7")}
    teacher_edges = {(u, v): d["kind"] for u, v, d in graph.edges(data=True) if d["teacher"]}
    assert teacher_edges == {("agent_2", "agent_5"): "teacher", ("agent_2", "agent_7"): "parent+teacher"}
    for name in graph.nodes:
        parents_in = sum(1 for _, _, d in graph.in_edges(name, data=True) if d["parent"])
        assert parents_in == (2 if name in ("agent_3", "agent_4", "agent_5", "agent_7") else 0), name
    nodes = graph.nodes
    assert [nodes[f"agent_{a}"]["founder_lineage"] for a in range(8)] == \
        ["agent_0", "agent_1", "agent_2", "agent_0", "agent_1", "agent_0", "agent_6", "agent_0"]
    assert nodes["agent_5"]["birth_step"] == 5 and nodes["agent_5"]["generation"] == 2
    assert nodes["agent_3"]["death_step"] == 7 and nodes["agent_4"]["death_step"] == -1
    assert nodes["agent_6"]["alive"] and not nodes["agent_6"]["initial"] and nodes["agent_0"]["initial"]
    assert isinstance(nodes["agent_5"]["birth_step"], int)  # typed in the file, not strings


def test_families_are_first_parent_ancestors_a_fixed_number_of_generations_up():
    # first-parent lines by hand: 7 -> 5 -> 3 -> 0, 4 -> 1; founders stay themselves
    assert lineage.first_parent_ancestors(AGENTS, 1) == {0: 0, 1: 1, 2: 2, 3: 0, 4: 1, 5: 3, 6: 6, 7: 5}
    assert lineage.first_parent_ancestors(AGENTS, 2) == {0: 0, 1: 1, 2: 2, 3: 0, 4: 1, 5: 0, 6: 6, 7: 3}
    assert lineage.first_parent_ancestors(AGENTS, 10) == lineage.founder_lineages(AGENTS)


def test_a_first_parent_missing_from_the_records_is_refused():
    with pytest.raises(ValueError, match="agent_3's first parent agent_9"):
        lineage.founder_lineages({0: record((), 0, 0), 3: record((9, 0), 1, 1)})


def test_muller_shares_match_a_hand_count_and_sum_to_one():
    lines = lineage.founder_lineages(AGENTS)  # 0: {0, 3, 5, 7}, 1: {1, 4}, 2: {2}, 6: {6}
    ids = np.array([[0, 1, 2, 3],    # lineages 0, 1, 2, 0 -> 0: 2/4, 1: 1/4, 2: 1/4
                    [5, 1, 2, 4],    # 0, 1, 2, 1          -> 0: 1/4, 1: 2/4, 2: 1/4
                    [5, 6, 7, 4]])   # 0, 6, 0, 1          -> 0: 2/4, 1: 1/4, 6: 1/4
    founders, shares = lineage.lineage_shares(ids, lines)
    assert np.allclose(shares.sum(axis=1), 1.0)
    by_founder = dict(zip(founders, shares.T))
    assert np.allclose(by_founder[0], [0.5, 0.25, 0.5])
    assert np.allclose(by_founder[1], [0.25, 0.5, 0.25])
    assert np.allclose(by_founder[2], [0.25, 0.25, 0.0])
    assert np.allclose(by_founder[6], [0.0, 0.0, 0.25])
    assert founders[0] == 0  # the largest lineage at the end comes first (bottom of the stack)
    with pytest.raises(ValueError, match="agent_9 has no genealogy record"):
        lineage.lineage_shares(np.array([[0, 9]]), lines)


def test_dialect_divergence_is_the_hand_distance_for_two_planted_dialects():
    messages = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [3.0, 4.0]])
    result = lineage.dialect_divergence(messages, np.array([1, 1, 2, 2]), np.random.default_rng(0))
    assert result["observed"] == pytest.approx(5.0) and result["lineages"] == 2
    assert result["excess"] > 1.0  # shuffled groups mix the dialects: their means are closer


def test_dialect_divergence_is_near_zero_for_random_lineages_and_positive_for_planted_ones():
    rng = np.random.default_rng(7)
    n, dim, groups = 60, 4, 6
    labels = np.repeat(np.arange(groups), n // groups)
    noise = rng.normal(size=(n, dim))
    # lineage carries no information: many random assignments, the excess averages to ~0
    excess = [lineage.dialect_divergence(noise, rng.permutation(labels), rng)["excess"] for _ in range(60)]
    shuffled = lineage.dialect_divergence(noise, labels, rng)["shuffled"]
    assert abs(np.mean(excess)) < 0.05 * shuffled
    # each lineage speaks around its own centre: far above the shuffled baseline
    centres = rng.normal(scale=1.0, size=(groups, dim))
    planted = lineage.dialect_divergence(noise + centres[labels], labels, rng)
    assert planted["excess"] > 0.5 * planted["shuffled"] > 0


def test_dialect_divergence_needs_two_lineages_with_two_speakers():
    result = lineage.dialect_divergence(np.ones((3, 2)), np.array([0, 0, 1]), np.random.default_rng(0))
    assert np.isnan(result["observed"]) and result["lineages"] == 1
    with pytest.raises(ValueError, match="labels"):
        lineage.dialect_divergence(np.ones((3, 2)), np.array([0, 1]), np.random.default_rng(0))


def test_evaluate_writes_the_graphml_of_genealogy_csv_and_the_inheritance_ablation(tmp_path):
    out = tmp_path / "eval"
    result = evaluate(Args(out=str(out), num_agents=6, steps=30, seeds=2, frames=2, ablation_seeds=2,
                           ablation_train_steps=10, ablation_steps=10, workers=1))
    with open(out / "genealogy.csv") as stream:
        rows = list(csv.DictReader(stream))
    graph = nx.read_graphml(out / "genealogy.graphml")
    assert set(graph.nodes) == {row["agent"] for row in rows}
    assert {(u, v) for u, v, d in graph.edges(data=True) if d["parent"]} == \
        {(p, row["agent"]) for row in rows for p in (row["parent_1"], row["parent_2"]) if p}
    for row in rows:
        assert graph.nodes[row["agent"]]["birth_step"] == int(row["birth_step"])
    arms = result["inheritance"]["ablation"]["arms"]
    assert set(arms) == {"genetic", "cultural", "none"}
    assert all(len(arms[mode]["gini"]["per_seed"]) == 2 and arms[mode]["gini"]["ci95"] is not None for mode in arms)
    ablation = json.loads((out / "metrics.json").read_text())["inheritance"]["ablation"]
    assert ablation["learner"] == "reinforce"
    assert all(len(ablation["dialects"][mode]["lineages_alive_end"]["per_seed"]) == 2 for mode in arms)
    report = (out / "report.md").read_text()
    assert "| measure | genetic | cultural | none |" in report and "lineage_shares.png" in report
    assert (out / "lineage_shares.png").stat().st_size > 0 and (out / "dialects.png").stat().st_size > 0


def test_a_lineage_only_trace_records_the_same_genealogy_and_messages_as_a_detailed_one():
    task = Task(key=("ablation", "reinforce", True, "cultural", 0), economy=EconomyConfig(num_agents=6, max_age=5),
                learner="reinforce", learner_config=LearnerConfig(seed=2, inheritance="cultural"), economy_seed=4,
                steps=30, learn=False, lineage=True)
    light = run_task(task, lambda k: None)
    full = run_task(Task(**{**task.__dict__, "lineage": False, "detail": True}), lambda k: None)
    assert light["agents"] == full["agents"] and light["alive_at_end"] == full["alive_at_end"]
    assert any(r["teacher"] is not None for r in light["agents"].values())
    assert [c["step"] for c in light["cross_sections"]] == [c["step"] for c in full["cross_sections"]]
    for mine, theirs in zip(light["cross_sections"], full["cross_sections"]):
        assert np.array_equal(mine["broadcast"], theirs["broadcast"])
    assert lineage.lineage_summary(light)[0] == lineage.lineage_summary(full)[0]
    assert "graphs" not in light and "agents" not in run_task(Task(**{**task.__dict__, "lineage": False}),
                                                              lambda k: None)
