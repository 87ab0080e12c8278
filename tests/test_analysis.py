"""Hand-worked cases for homoecon_env.diagnostics.analysis: recorded traces in, metrics.json numbers out."""
import ast
import inspect
import math

import networkx as nx
import numpy as np
import pytest

from homoecon_env.config import EconomyConfig
from homoecon_env.diagnostics import analysis, report


def test_edge_windows_are_a_fifth_of_the_steps_and_never_empty():
    assert analysis.edge_windows(10) == (slice(0, 2), slice(8, 10))
    assert analysis.edge_windows(2) == (slice(0, 1), slice(1, 2))


def test_life_job_history_follows_agents_not_rows():
    # Row 1 is held by agent 1 for two steps, then by newborn agent 2; agent 0 lives throughout.
    ids = np.array([[0, 1], [0, 1], [0, 2], [0, 2]])
    jobs = np.array([[0, 1], [0, 1], [1, 0], [0, 0]])
    history, mask = analysis.life_job_history(jobs, ids, slice(0, 4))
    assert history.shape == (4, 3)  # [step of life, agent]
    np.testing.assert_array_equal(history[:, 0], [0, 0, 1, 0])
    np.testing.assert_array_equal(history[:2, 1], [1, 1])
    np.testing.assert_array_equal(history[:2, 2], [0, 0])
    # Only agent 0 lived MIN_LIFE_STEPS (3) steps or more.
    np.testing.assert_array_equal(mask, [[True, False, False]] * 4)


def test_specialization_of_a_single_steady_worker_is_one():
    trace = {"jobs": np.array([[1], [1], [1]]), "ids": np.array([[5], [5], [5]])}
    index, _ = analysis.specialization(trace, num_jobs=2, window=slice(0, 3))
    assert index == pytest.approx(1.0)


def test_interval_over_seeds():
    three = analysis.interval([1.0, 2.0, 3.0])  # s = 1, t_{0.975, 2} = 4.302653
    assert three["mean"] == pytest.approx(2.0) and three["ci95"] == pytest.approx(4.302653 / math.sqrt(3))
    assert analysis.interval([0.1 + 0.2, 0.3, 0.3])["ci95"] == 0.0  # float noise around equal samples
    assert analysis.interval([0.5]) == {"mean": 0.5, "ci95": None}  # one seed: no interval


def test_summarise_seeds_skips_undefined_values():
    summary = analysis.summarise_seeds([{"a": 1.0, "b": None}, {"a": 3.0, "b": None}, {"a": None, "b": None}])
    assert summary["a"]["mean"] == 2.0 and summary["a"]["seeds"] == 2
    assert summary["b"] == {"mean": None, "ci95": None, "seeds": 0}


def test_compare_pairs_seeds_and_gives_a_verdict_only_when_the_interval_excludes_zero():
    first = [{"mean_reward": r, "gini": 0.3, "specialization": s, "trade_volume": 2.0}
             for r, s in ((1.0, 0.5), (2.0, 0.1), (3.0, 0.9))]
    second = [{"mean_reward": r - 0.5, "gini": 0.4, "specialization": s, "trade_volume": 2.0}
              for r, s in ((1.0, 0.9), (2.0, 0.2), (3.0, 0.1))]
    result = analysis.compare({"a": first, "b": second}, "a", "b")
    # Rewards vary a lot over seeds but always differ by +0.5: paired, that is significant.
    assert result["difference"]["mean_reward"] == {"mean": pytest.approx(0.5), "ci95": 0.0}
    assert result["verdict"] == {"mean_reward": "higher", "gini": "lower",
                                 "specialization": "no significant difference",
                                 "trade_volume": "no significant difference"}
    assert result["arms"]["a"]["mean_reward"]["per_seed"] == [1.0, 2.0, 3.0]


def test_ablation_outcome_averages_over_the_rollout():
    trace = {"reward": np.array([1.0, 3.0, 2.0]), "gini": np.array([0.2, 0.4, 0.3]),
             "trade_volume": np.array([0.0, 3.0, 3.0]), "jobs": np.zeros((3, 2), int), "ids": np.array([[0, 1]] * 3)}
    outcome = analysis.ablation_outcome(trace, num_jobs=2)
    assert outcome == pytest.approx({"mean_reward": 2.0, "gini": 0.3, "specialization": 1.0, "trade_volume": 2.0})


def lineage_trace():
    """Founders 0 and 1; 2 is born to (0, 1) at step 3 when 0 dies of age; 3 is born to 2 at step 5."""
    def record(parents, generation, birth, death=None, cause="", initial=False):
        return {"parents": parents, "generation": generation, "birth_step": birth, "slot": 0, "tastes": [0.25, 0.75],
                "initial": initial, "death_step": death, "death_cause": cause}
    agents = {0: record((), 0, 0, 3, "age", initial=True), 1: record((), 0, 0, initial=True),
              2: record((0, 1), 1, 3), 3: record((2,), 2, 5)}
    return {"agents": agents, "alive_at_end": [1, 2, 3], "lifetime_reward": {0: 1.5, 2: 0.25}}


def test_genealogy_counts_descendants_and_surviving_lineages():
    summary, rows = analysis.genealogy(lineage_trace(), ["berries", "meat"])
    assert summary["agents"] == 4 and summary["initial_population"] == 2 and summary["births"] == 2
    assert summary["deaths_age"] == 1 and summary["lineage_depth"] == 2
    assert summary["founder_lineages_surviving"] == 2  # 0 through its children, 1 itself
    by_agent = {row["agent"]: row for row in rows}
    assert by_agent["agent_0"]["descendants"] == 2 and by_agent["agent_0"]["living_descendants"] == 2
    assert by_agent["agent_2"]["parent_1"] == "agent_0" and by_agent["agent_2"]["parent_2"] == "agent_1"
    assert by_agent["agent_3"]["parent_2"] == "" and by_agent["agent_1"]["death_step"] == ""
    assert by_agent["agent_0"]["lifetime_reward"] == 1.5 and by_agent["agent_1"]["lifetime_reward"] == 0.0
    assert by_agent["agent_0"]["taste_meat"] == 0.75
    assert [r["agent"] for r in summary["most_prolific"]] == ["agent_0", "agent_1", "agent_2"]


def test_genealogy_rows_match_networkx_on_a_random_lineage():
    rng = np.random.default_rng(6)
    agents = {}
    for agent in range(120):
        chosen = rng.choice(agent, size=rng.integers(1, 3), replace=False) if agent >= 10 else []
        parents = tuple(int(p) for p in chosen)
        agents[agent] = {"parents": parents, "generation": 0, "birth_step": agent, "slot": 0, "tastes": [0.5, 0.5],
                         "initial": agent < 10, "death_step": None, "death_cause": ""}
    alive = [a for a in range(120) if a % 3 == 0]
    summary, rows = analysis.genealogy({"agents": agents, "alive_at_end": alive, "lifetime_reward": {}},
                                       ["berries", "meat"])
    family = nx.DiGraph((p, a) for a, r in agents.items() for p in r["parents"])
    family.add_nodes_from(agents)
    for row in rows:
        agent = int(row["agent"].removeprefix("agent_"))
        below = nx.descendants(family, agent)
        assert (row["children"], row["descendants"]) == (family.out_degree(agent), len(below))
        assert row["living_descendants"] == len(below & set(alive))
    assert summary["founder_lineages_surviving"] == sum(
        1 for f in range(10) if f in alive or nx.descendants(family, f) & set(alive))


def detailed_trace(config: EconomyConfig, steps: int) -> dict:
    """A synthetic main-rollout trace: wealth rising with age; the berry price high while berries are scarce."""
    rng = np.random.default_rng(0)
    n, r, b = config.num_agents, config.num_resources, config.broadcast_dim
    berries = np.where(np.arange(steps) % 2 == 0, 2.0, 8.0)  # scarce on even steps
    totals = np.stack([berries, np.full(steps, 5.0)], axis=1)  # [T, R]
    ages = np.arange(n, dtype=np.float64)
    sections = [{"step": t, "wealth": 10.0 * ages + t, "age": ages, "generation": np.zeros(n), "effort": rng.random(n),
                 "taste": rng.dirichlet(np.ones(r), n), "job": rng.integers(0, 2, n)} for t in (1, steps)]
    return {
        "reward": np.linspace(0.0, 1.0, steps), "gini": np.linspace(0.2, 0.4, steps), "trade_volume": np.ones(steps),
        "births": np.ones(steps), "deaths_age": np.ones(steps), "deaths_starvation": np.zeros(steps),
        "jobs": np.zeros((steps, n), int), "ids": np.tile(np.arange(n), (steps, 1)), "totals": totals,
        "prices": 1.0 / totals, "job_shares": np.tile([1.0, 0.0], (steps, 1)),
        "spectra": np.tile([3.0, 1.0] + [0.0] * (b - 2), (steps, 1)),
        "participation_ratio": np.full(steps, 1.6), "attention_entropy": np.full(steps, np.nan),
        "entropy_nats": np.full(steps, np.nan), "graphs": [], "cross_sections": sections}


def test_summarise_rollout_on_a_synthetic_trace():
    config, steps = EconomyConfig(num_agents=5), 10
    season = np.tile([[1.0, 0.0], [0.0, 1.0]], (steps // 2, 1))  # berries in season on even steps
    s = analysis.summarise_rollout(detailed_trace(config, steps), config, season)
    assert s["reward_early"] == pytest.approx(np.linspace(0, 1, 10)[:2].mean())
    gini = np.linspace(0.2, 0.4, 10)
    assert s["gini_change"] == pytest.approx(gini[8:].mean() - gini[:2].mean())
    assert s["specialization_all"] == pytest.approx(1.0)  # everyone always gathers
    assert s["job_share_late_gathering"] == 1.0 and s["job_share_late_hunting"] == 0.0
    assert s["pc1_share_late"] == pytest.approx(0.75) and s["pc12_share_late"] == pytest.approx(1.0)
    assert s["wealth_corr_age"] == pytest.approx(1.0)
    assert s["wealth_corr_generation"] is None  # constant: undefined, not zero
    assert s["attention_entropy_early"] is None and s["graph_components_late"] is None
    assert s["top_share_late"] == pytest.approx(50.0 / sum(10.0 * a + 10 for a in range(5)))  # richest 1 of 5
    assert s["price_scarcity_spearman"] == pytest.approx(1.0)
    # Relative berry price: 5/7 when scarce (in season here), 5/13 when plentiful.
    assert s["price_in_season_berries"] == pytest.approx(5 / 7)
    assert s["price_out_of_season_berries"] == pytest.approx(5 / 13)
    assert s["births_total"] == 10 and s["deaths_starvation_total"] == 0
    with pytest.raises(ValueError, match=r"season: expected shape \(10, 2\)"):
        analysis.summarise_rollout(detailed_trace(config, steps), config, season[:5])


def test_to_json_gives_strict_json_values():
    value = {1: (np.int64(3), np.float32(0.5), np.bool_(True)), "x": np.array([1.0, np.nan]), "y": float("inf")}
    assert analysis.to_json(value) == {"1": [3, 0.5, True], "x": [1.0, None], "y": None}


@pytest.mark.parametrize("module", [analysis, report])
def test_numbers_and_text_import_only_numpy_and_diagnostics(module):
    """No matplotlib, torch, env or agents: a leaf that any layer may call (STYLE.md, Layout)."""
    tree = ast.parse(inspect.getsource(module))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    allowed = {"__future__", "math", "typing", "numpy", "homoecon_env.diagnostics",
               "homoecon_env.diagnostics.analysis"}
    assert imported <= allowed, imported - allowed
