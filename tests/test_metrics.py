"""Hand-worked cases for homoecon_env.diagnostics.metrics."""
import math
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from homoecon_env.diagnostics import metrics

# --------------------------------------------------------------------------- inequality


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0, 0, 0, 1], 0.75),  # sum|xi-xj| = 6, 2 n^2 mean = 8
        ([1, 1, 1, 1], 0.0),
        ([0, 0, 0], 0.0),
        ([1, 3], 0.25),  # sum|xi-xj| = 4, 2 * 4 * 2 = 16
        ([1, 2, 3], 2 / 9),  # sum|xi-xj| = 8, 2 * 9 * 2 = 36
        ([5.0], 0.0),
        ([], 0.0),
    ],
)
def test_gini_matches_population_mean_absolute_difference(values, expected):
    assert metrics.gini(values) == pytest.approx(expected, abs=1e-12)


def test_gini_equals_pairwise_definition_on_random_data():
    values = np.random.default_rng(0).exponential(size=37)
    pairwise = np.abs(values[:, None] - values[None, :]).sum() / (2 * len(values) ** 2 * values.mean())
    assert metrics.gini(values) == pytest.approx(pairwise, rel=1e-12)


def test_gini_is_scale_invariant_and_accepts_tensors():
    torch = pytest.importorskip("torch")
    values = np.array([0.5, 2.0, 7.0, 0.0])
    assert metrics.gini(torch.tensor(values * 3, requires_grad=True)) == pytest.approx(metrics.gini(values))


@pytest.mark.parametrize("bad", [[1.0, -0.1], [1.0, float("nan")], [[1.0, 2.0]]])
def test_gini_rejects_negative_nonfinite_or_2d(bad):
    with pytest.raises(ValueError, match="gini values"):
        metrics.gini(bad)


# --------------------------------------------------------------------------- specialization


def test_job_shares_counts_fractions_per_row():
    np.testing.assert_allclose(metrics.job_shares([0, 2, 2, 1], 3), [0.25, 0.25, 0.5])
    np.testing.assert_allclose(metrics.job_shares([[0, 0], [1, 0]], 2), [[1.0, 0.0], [0.5, 0.5]])


def test_job_shares_rejects_out_of_range_job():
    with pytest.raises(ValueError, match=r"jobs: values must lie in \[0, 2\)"):
        metrics.job_shares([0, 2], 2)


def test_job_concentration_is_one_for_monoculture_zero_for_even_split():
    assert metrics.job_concentration([1.0, 0.0]) == pytest.approx(1.0)
    assert metrics.job_concentration([0.5, 0.5]) == pytest.approx(0.0)
    # shares (0.75, 0.25): entropy = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.5623 nats
    expected = 1 - (-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))) / math.log(2)
    assert metrics.job_concentration([0.75, 0.25]) == pytest.approx(expected)


def test_agent_specialization_per_agent_consistency():
    history = np.array([[0, 0, 1], [0, 1, 1], [0, 0, 1], [0, 1, 1]])  # [T=4, N=3]
    consistency = metrics.agent_specialization(history, 2)
    np.testing.assert_allclose(consistency, [1.0, 0.0, 1.0])
    assert metrics.specialization_index(history, 2) == pytest.approx(2 / 3)


def test_agent_specialization_mask_excludes_previous_occupant_of_a_row():
    history = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    mask = np.array([[0, 1], [0, 1], [1, 1], [1, 1]])  # row 0 reborn at step 2
    np.testing.assert_allclose(metrics.agent_specialization(history, 2, mask), [1.0, 1.0])
    unmasked = metrics.agent_specialization(history, 2)
    assert unmasked[0] == pytest.approx(0.0)
    no_steps = metrics.agent_specialization(history, 2, np.zeros_like(history))
    assert np.all(np.isnan(no_steps))
    assert metrics.specialization_index(history, 2, np.zeros_like(history)) == 0.0


def test_division_of_labour_needs_both_consistency_and_diversity():
    fixed_split = np.array([[0, 1], [0, 1], [0, 1]])
    monoculture = np.zeros((3, 2), dtype=int)
    random_switching = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    assert metrics.division_of_labour(fixed_split, 2) == pytest.approx(1.0)
    assert metrics.division_of_labour(monoculture, 2) == pytest.approx(0.0)
    assert metrics.division_of_labour(random_switching, 2) == pytest.approx(0.0)
    assert metrics.division_of_labour(fixed_split, 2, mask=np.zeros((3, 2))) == 0.0


# --------------------------------------------------------------------------- population


def test_lineage_depth_of_small_genealogy():
    parents = {
        "agent_2": ("agent_0", "agent_1"),
        "agent_3": ("agent_2", "agent_1"),
        "agent_4": ("agent_3", "agent_0"),
        "agent_5": (),  # founder reborn after an extinction
        "agent_6": ("agent_5", "agent_2"),
    }
    assert metrics.lineage_depth(parents) == {
        "agent_0": 0, "agent_1": 0, "agent_2": 1, "agent_3": 2, "agent_4": 3, "agent_5": 0, "agent_6": 2,
    }


def test_lineage_depth_handles_long_chains_and_shared_ancestors():
    chain = {f"a{k}": (f"a{k - 1}", "root") for k in range(1, 5000)}
    depth = metrics.lineage_depth(chain)
    assert depth["a4999"] == 4999 and depth["root"] == 0
    diamond = {"c": ("a", "b"), "b": ("a",), "d": ("c", "c")}
    assert metrics.lineage_depth(diamond) == {"a": 0, "b": 1, "c": 2, "d": 3}


def test_lineage_depth_rejects_cycle():
    with pytest.raises(ValueError, match="cycle"):
        metrics.lineage_depth({"a": ("b",), "b": ("a",)})


def test_lifecycle_stats_counts_births_deaths_and_generations():
    parents = {"agent_2": ("agent_0", "agent_1"), "agent_3": ("agent_2", "agent_1"), "agent_4": ()}
    causes = {"agent_0": "age", "agent_1": "starvation", "agent_2": "age"}
    stats = metrics.lifecycle_stats(parents, causes, alive=["agent_3", "agent_4"])
    assert stats["births"] == 3 and stats["founder_births"] == 1
    assert stats["deaths"] == 3 and stats["deaths_age"] == 2 and stats["deaths_starvation"] == 1
    assert stats["mean_generation"] == pytest.approx(1.0)  # (2 + 0) / 2
    assert stats["max_generation"] == 2 and stats["lineage_depth"] == 2
    empty = metrics.lifecycle_stats({}, [])
    assert empty["births"] == 0 and empty["mean_generation"] == 0.0 and empty["lineage_depth"] == 0


# --------------------------------------------------------------------------- communication


@pytest.mark.parametrize(
    "spectrum, expected",
    [([1, 0, 0], 1.0), ([1, 1, 1, 1], 4.0), ([3, 1], 16 / 10), ([0, 0], 0.0), ([2.0, -1e-15], 1.0)],
)
def test_participation_ratio_of_known_spectra(spectrum, expected):
    assert metrics.participation_ratio(spectrum) == pytest.approx(expected)


def test_participation_ratio_rejects_clearly_negative_eigenvalue():
    with pytest.raises(ValueError, match="eigenvalues"):
        metrics.participation_ratio([1.0, -0.5])


def test_covariance_spectrum_of_messages_on_a_line():
    # Messages t * (1, 1, 0): variance along (1,1,0)/sqrt2 only.
    t = np.array([-1.0, 0.0, 1.0])
    messages = t[:, None] * np.array([1.0, 1.0, 0.0])
    spectrum = metrics.covariance_spectrum(messages)
    np.testing.assert_allclose(spectrum, [2.0, 0.0, 0.0], atol=1e-12)  # var(t)=1 (ddof 1) * |(1,1,0)|^2
    assert metrics.participation_ratio(spectrum) == pytest.approx(1.0)


def test_isotropic_messages_have_full_effective_dimension():
    messages = np.vstack([np.eye(4), -np.eye(4)])
    spectrum = metrics.covariance_spectrum(messages)
    assert metrics.participation_ratio(spectrum) == pytest.approx(4.0)


def test_spectrum_and_pca_degenerate_inputs_do_not_crash():
    np.testing.assert_array_equal(metrics.covariance_spectrum(np.zeros((1, 3))), np.zeros(3))
    np.testing.assert_array_equal(metrics.covariance_spectrum(np.ones((5, 3))), np.zeros(3))
    coords, ratio = metrics.broadcast_pca(np.ones((5, 3)))
    assert coords.shape == (5, 2) and not coords.any() and not ratio.any()
    coords, ratio = metrics.broadcast_pca(np.zeros((1, 3)))
    assert coords.shape == (1, 2) and not ratio.any()
    coords, ratio = metrics.broadcast_pca(np.zeros((0, 3)))
    assert coords.shape == (0, 2)


def test_broadcast_pca_recovers_dominant_direction():
    t = np.linspace(-1, 1, 9)
    messages = np.stack([-2 * t, t, np.zeros_like(t)], axis=1)
    coords, ratio = metrics.broadcast_pca(messages, n_components=2)
    np.testing.assert_allclose(ratio, [1.0, 0.0], atol=1e-12)
    # Sign convention: the largest loading is positive, so the direction is (2, -1, 0) / sqrt5.
    np.testing.assert_allclose(coords[:, 0], -t * math.sqrt(5))
    np.testing.assert_allclose(coords[:, 1], 0.0, atol=1e-12)


def test_broadcast_pca_pads_components_beyond_rank():
    coords, ratio = metrics.broadcast_pca(np.array([[0.0, 1.0], [1.0, 0.0]]), n_components=3)
    assert coords.shape == (2, 3) and ratio[0] == pytest.approx(1.0) and ratio[1:].sum() == 0


# --------------------------------------------------------------------------- social filtering


def test_attention_entropy_of_uniform_and_one_hot_attention():
    uniform = np.full((3, 4), 0.25)
    one_hot = np.eye(3, 4)
    assert metrics.attention_entropy(uniform) == pytest.approx(math.log(4))
    assert metrics.attention_entropy(uniform, normalised=True) == pytest.approx(1.0)
    assert metrics.attention_entropy(one_hot) == pytest.approx(0.0)
    assert metrics.attention_entropy(one_hot, normalised=True) == pytest.approx(0.0)


def test_attention_entropy_uses_only_live_peers():
    attention = np.array([[0.5, 0.5, 0.0, 0.0], [0.2, 0.2, 0.2, 0.4]])
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]])  # agent 1 renormalised to 1/3 each
    assert metrics.attention_entropy(attention, mask) == pytest.approx(math.log(2) / 2 + math.log(3) / 2)
    assert metrics.attention_entropy(attention, mask, normalised=True) == pytest.approx(1.0)


def test_attention_entropy_skips_agents_without_choice():
    attention = np.array([[1.0, 0.0], [0.0, 0.0], [0.5, 0.5]])
    mask = np.array([[1, 0], [0, 0], [1, 1]])
    assert metrics.attention_entropy(attention, mask) == pytest.approx(math.log(2) / 2)  # agents 0, 2
    assert metrics.attention_entropy(attention, mask, normalised=True) == pytest.approx(1.0)  # agent 2
    assert metrics.attention_entropy(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0


def test_attention_matrix_places_slots_at_peer_rows():
    attention = np.array([[0.6, 0.4], [1.0, 0.0], [0.3, 0.7]])
    peer_index = np.array([[2, 1], [0, -1], [1, 1]])
    expected = np.array([[0.0, 0.4, 0.6], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(metrics.attention_matrix(attention, peer_index), expected)


def test_favourite_graph_of_tiny_attention():
    attention = np.array([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5], [0.3, 0.7]])
    peer_index = np.array([[2, 1], [0, 2], [3, 1], [0, -1]])
    graph = metrics.favourite_graph(attention, peer_index)
    # agent 2 ties between peers 3 and 1: the lower row wins; agent 3's empty slot is ignored.
    assert sorted(graph.edges) == [(0, 1), (1, 0), (2, 1), (3, 0)]
    assert graph.edges[0, 1]["weight"] == pytest.approx(0.8)
    assert set(graph.nodes) == {0, 1, 2, 3}


def test_favourite_graph_sums_duplicate_slots_and_respects_mask():
    attention = np.array([[0.3, 0.3, 0.4], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    peer_index = np.array([[1, 1, 2], [0, 2, 2], [0, 1, 0]])
    mask = np.array([[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    graph = metrics.favourite_graph(attention, peer_index, mask)
    assert sorted(graph.edges) == [(0, 1), (1, 0)]
    assert graph.edges[0, 1]["weight"] == pytest.approx(0.6)
    assert graph.out_degree(2) == 0


def test_favourite_graph_rejects_peer_row_out_of_range():
    with pytest.raises(ValueError, match="peer_index"):
        metrics.favourite_graph(np.ones((2, 1)), np.array([[1], [2]]))


def test_graph_summary_degrees_pagerank_and_clustering():
    graph = nx.DiGraph([(0, 1), (1, 0), (2, 1), (3, 1)])
    summary = metrics.graph_summary(graph)
    assert summary["nodes"] == [0, 1, 2, 3]
    np.testing.assert_array_equal(summary["in_degree"], [1, 3, 0, 0])
    np.testing.assert_array_equal(summary["out_degree"], [1, 1, 1, 1])
    assert summary["pagerank"].sum() == pytest.approx(1.0)
    assert np.argmax(summary["pagerank"]) == 1
    np.testing.assert_allclose(summary["clustering"], 0.0)
    assert summary["num_components"] == 1
    triangle = metrics.graph_summary(nx.DiGraph([(0, 1), (1, 2), (2, 0)]))
    np.testing.assert_allclose(triangle["clustering"], 1.0)
    assert triangle["mean_clustering"] == pytest.approx(1.0)


def test_pagerank_sums_to_one_on_random_favourite_graph():
    rng = np.random.default_rng(3)
    attention = rng.dirichlet(np.ones(5), size=20)
    peer_index = np.stack([rng.choice(np.delete(np.arange(20), i), 5, replace=False) for i in range(20)])
    summary = metrics.graph_summary(metrics.favourite_graph(attention, peer_index))
    assert summary["pagerank"].sum() == pytest.approx(1.0)
    assert summary["out_degree"].max() == 1
    assert sum(summary["component_hashes"].values()) == summary["num_components"]


def test_wl_hash_equal_for_isomorphic_and_different_for_non_isomorphic_graphs():
    pair_with_admirer = nx.DiGraph([(0, 1), (1, 0), (2, 1)])
    relabelled = nx.relabel_nodes(pair_with_admirer, {0: "x", 1: "y", 2: "z"})
    three_cycle = nx.DiGraph([(0, 1), (1, 2), (2, 0)])
    admirer_reversed = nx.DiGraph([(0, 1), (1, 0), (1, 2)])  # same undirected shape, other direction
    hash_of = lambda g: metrics.graph_summary(g)["wl_hash"]  # noqa: E731
    assert hash_of(pair_with_admirer) == hash_of(relabelled)
    assert hash_of(pair_with_admirer) != hash_of(three_cycle)
    assert hash_of(pair_with_admirer) != hash_of(admirer_reversed)


def test_topology_histogram_counts_component_shapes():
    # Two mutual pairs, one pair with an admirer: shapes {pair: 2, pair+admirer: 1}.
    graph = nx.DiGraph([(0, 1), (1, 0), (2, 3), (3, 2), (4, 5), (5, 4), (6, 5)])
    summary = metrics.graph_summary(graph)
    assert sorted(summary["component_hashes"].values()) == [1, 2]
    sizes = {summary["component_sizes"][h]: c for h, c in summary["component_hashes"].items()}
    assert sizes == {2: 2, 3: 1}
    for digest, example in summary["component_examples"].items():
        assert example.number_of_nodes() == summary["component_sizes"][digest]
        assert sorted(example.nodes) == list(range(example.number_of_nodes()))


def test_graph_summary_of_empty_graph():
    summary = metrics.graph_summary(nx.DiGraph())
    assert summary["num_components"] == 0 and summary["pagerank"].size == 0


# --------------------------------------------------------------------------- markets


def test_relative_prices_sum_to_one_and_zero_row_is_uniform():
    np.testing.assert_allclose(metrics.relative_prices([2.0, 6.0]), [0.25, 0.75])
    np.testing.assert_allclose(metrics.relative_prices([[1.0, 1.0], [0.0, 0.0]]), [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="prices"):
        metrics.relative_prices([1.0, -1.0])


def test_trade_volume_counts_each_traded_unit_once():
    before = np.array([[2.0, 0.0], [0.0, 4.0]])
    after = np.array([[1.0, 1.5], [1.0, 2.5]])  # 1 unit of good 0 and 1.5 of good 1 change hands
    assert metrics.trade_volume(before, after) == pytest.approx(2.5)
    np.testing.assert_allclose(metrics.trade_volume(before, after, per_resource=True), [1.0, 1.5])
    assert metrics.trade_volume(before, before) == 0.0
    with pytest.raises(ValueError, match="after"):
        metrics.trade_volume(before, after[:1])


def test_prices_following_scarcity_correlate_positively():
    # Berries abundant in even steps, meat in odd steps; the scarce good is dearer.
    totals = np.array([[10.0, 2.0], [2.0, 10.0], [6.0, 4.0], [3.0, 9.0], [8.0, 1.0]])
    prices = 1.0 / totals  # exactly inverse to abundance
    result = metrics.price_scarcity_correlation(prices, totals)
    np.testing.assert_allclose(result["per_resource"], [1.0, 1.0])
    assert result["mean"] == pytest.approx(1.0) and result["pooled"] == pytest.approx(1.0)
    inverted = metrics.price_scarcity_correlation(totals, totals, method="pearson")
    assert inverted["mean"] < -0.9


def test_price_scarcity_correlation_is_nan_for_constant_series():
    result = metrics.price_scarcity_correlation(np.ones((4, 2)), np.ones((4, 2)))
    assert np.all(np.isnan(result["per_resource"])) and math.isnan(result["mean"])


def test_spearman_rank_averages_ties():
    np.testing.assert_allclose(metrics._rank(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_spearman_hand_worked_with_ties():
    # Ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]; centred: [-1.5, 0, 0, 1.5] and [-1.5, .5, -.5, 1.5].
    # Pearson of the ranks = 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
    assert metrics.spearman([10.0, 20.0, 20.0, 30.0], [1.0, 7.0, 5.0, 9.0]) == pytest.approx(math.sqrt(0.9))
    assert metrics.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear
    assert metrics.spearman([1, 2, 3, 4], [8, 4, 2, 1]) == pytest.approx(-1.0)


def test_spearman_is_nan_where_undefined_and_refuses_bad_input():
    assert math.isnan(metrics.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))  # a constant side
    assert math.isnan(metrics.spearman([1.0, 2.0], [2.0, 1.0]))  # two points say nothing
    with pytest.raises(ValueError, match="x: contains nan"):
        metrics.spearman([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="y: expected 3 values like x, got 2"):
        metrics.spearman([1.0, 2.0, 3.0], [1.0, 2.0])


# --------------------------------------------------------------------------- statistics


def test_mean_ci95_of_known_samples():
    # mean 2, s = 1, t_{0.975, 2} = 4.302653 -> half-width 4.302653 / sqrt(3)
    mean, half = metrics.mean_ci95([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    mean, half = metrics.mean_ci95([5.0, 5.0])
    assert mean == 5.0 and half == 0.0
    assert metrics.mean_ci95([4.0]) == (4.0, math.inf)
    with pytest.raises(ValueError, match="samples"):
        metrics.mean_ci95([])


def test_t_quantile_beyond_table_is_accurate():
    # Reference values of t_{0.975, df}.
    for df, expected in [(30, 2.042272), (31, 2.039513), (60, 2.000298), (1000, 1.962339)]:
        assert metrics._t_quantile_975(df) == pytest.approx(expected, abs=2e-6)


# --------------------------------------------------------------------------- module hygiene


def test_metrics_does_not_import_matplotlib():
    code = "import sys, homoecon_env.diagnostics.metrics; print('matplotlib' in sys.modules)"
    root = Path(__file__).absolute().parents[1]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=root, env=environment)
    assert result.stdout.strip() == "False"
