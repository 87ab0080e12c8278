"""homoecon_env.diagnostics.graphs: favourite graphs and genealogies, against hand-worked cases,
a NumPy PageRank solve and networkx's own graph traversal."""
import networkx as nx
import numpy as np
import pytest

from homoecon_env.diagnostics import graphs

# --------------------------------------------------------------------------- favourite graph


def test_favourite_graph_of_tiny_attention():
    attention = np.array([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5], [0.3, 0.7]])
    peer_index = np.array([[2, 1], [0, 2], [3, 1], [0, -1]])
    graph = graphs.favourite_graph(attention, peer_index)
    # agent 2 ties between peers 3 and 1: the lower row wins; agent 3's empty slot is ignored.
    assert sorted(graph.edges) == [(0, 1), (1, 0), (2, 1), (3, 0)]
    assert graph.edges[0, 1]["weight"] == pytest.approx(0.8)
    assert set(graph.nodes) == {0, 1, 2, 3}


def test_favourite_graph_sums_duplicate_slots_and_respects_mask():
    attention = np.array([[0.3, 0.3, 0.4], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    peer_index = np.array([[1, 1, 2], [0, 2, 2], [0, 1, 0]])
    mask = np.array([[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    graph = graphs.favourite_graph(attention, peer_index, mask)
    assert sorted(graph.edges) == [(0, 1), (1, 0)]
    assert graph.edges[0, 1]["weight"] == pytest.approx(0.6)
    assert graph.out_degree(2) == 0


def test_favourite_graph_rejects_peer_row_out_of_range():
    with pytest.raises(ValueError, match="peer_index"):
        graphs.favourite_graph(np.ones((2, 1)), np.array([[1], [2]]))


def test_graph_summary_degrees_pagerank_and_clustering():
    graph = nx.DiGraph([(0, 1), (1, 0), (2, 1), (3, 1)])
    summary = graphs.graph_summary(graph)
    assert summary["nodes"] == [0, 1, 2, 3]
    np.testing.assert_array_equal(summary["in_degree"], [1, 3, 0, 0])
    np.testing.assert_array_equal(summary["out_degree"], [1, 1, 1, 1])
    assert summary["pagerank"].sum() == pytest.approx(1.0)
    assert np.argmax(summary["pagerank"]) == 1
    np.testing.assert_allclose(summary["clustering"], 0.0)
    assert summary["num_components"] == 1
    triangle = graphs.graph_summary(nx.DiGraph([(0, 1), (1, 2), (2, 0)]))
    np.testing.assert_allclose(triangle["clustering"], 1.0)
    assert triangle["mean_clustering"] == pytest.approx(1.0)


def test_pagerank_sums_to_one_on_random_favourite_graph():
    rng = np.random.default_rng(3)
    attention = rng.dirichlet(np.ones(5), size=20)
    peer_index = np.stack([rng.choice(np.delete(np.arange(20), i), 5, replace=False) for i in range(20)])
    summary = graphs.graph_summary(graphs.favourite_graph(attention, peer_index))
    assert summary["pagerank"].sum() == pytest.approx(1.0)
    assert summary["out_degree"].max() == 1
    assert sum(summary["component_hashes"].values()) == summary["num_components"]


def test_wl_hash_equal_for_isomorphic_and_different_for_non_isomorphic_graphs():
    pair_with_admirer = nx.DiGraph([(0, 1), (1, 0), (2, 1)])
    relabelled = nx.relabel_nodes(pair_with_admirer, {0: "x", 1: "y", 2: "z"})
    three_cycle = nx.DiGraph([(0, 1), (1, 2), (2, 0)])
    admirer_reversed = nx.DiGraph([(0, 1), (1, 0), (1, 2)])  # same undirected shape, other direction
    hash_of = lambda g: graphs.graph_summary(g)["wl_hash"]  # noqa: E731
    assert hash_of(pair_with_admirer) == hash_of(relabelled)
    assert hash_of(pair_with_admirer) != hash_of(three_cycle)
    assert hash_of(pair_with_admirer) != hash_of(admirer_reversed)


def test_topology_histogram_counts_component_shapes():
    # Two mutual pairs, one pair with an admirer: shapes {pair: 2, pair+admirer: 1}.
    graph = nx.DiGraph([(0, 1), (1, 0), (2, 3), (3, 2), (4, 5), (5, 4), (6, 5)])
    summary = graphs.graph_summary(graph)
    assert sorted(summary["component_hashes"].values()) == [1, 2]
    sizes = {summary["component_sizes"][h]: c for h, c in summary["component_hashes"].items()}
    assert sizes == {2: 2, 3: 1}
    for digest, example in summary["component_examples"].items():
        assert example.number_of_nodes() == summary["component_sizes"][digest]
        assert sorted(example.nodes) == list(range(example.number_of_nodes()))


def test_graph_summary_of_empty_graph():
    summary = graphs.graph_summary(nx.DiGraph())
    assert summary["num_components"] == 0 and summary["pagerank"].size == 0


# --------------------------------------------------------------------------- genealogy


def test_lineage_depth_of_small_genealogy():
    parents = {
        "agent_2": ("agent_0", "agent_1"),
        "agent_3": ("agent_2", "agent_1"),
        "agent_4": ("agent_3", "agent_0"),
        "agent_5": (),  # founder reborn after an extinction
        "agent_6": ("agent_5", "agent_2"),
    }
    assert graphs.lineage_depth(parents) == {
        "agent_0": 0, "agent_1": 0, "agent_2": 1, "agent_3": 2, "agent_4": 3, "agent_5": 0, "agent_6": 2,
    }


def test_lineage_depth_handles_long_chains_and_shared_ancestors():
    chain = {f"a{k}": (f"a{k - 1}", "root") for k in range(1, 5000)}
    depth = graphs.lineage_depth(chain)
    assert depth["a4999"] == 4999 and depth["root"] == 0
    diamond = {"c": ("a", "b"), "b": ("a",), "d": ("c", "c")}
    assert graphs.lineage_depth(diamond) == {"a": 0, "b": 1, "c": 2, "d": 3}


def test_lineage_depth_rejects_cycle():
    with pytest.raises(ValueError, match="cycle"):
        graphs.lineage_depth({"a": ("b",), "b": ("a",)})


def test_lifecycle_stats_counts_births_deaths_and_generations():
    parents = {"agent_2": ("agent_0", "agent_1"), "agent_3": ("agent_2", "agent_1"), "agent_4": ()}
    causes = {"agent_0": "age", "agent_1": "starvation", "agent_2": "age"}
    stats = graphs.lifecycle_stats(parents, causes, alive=["agent_3", "agent_4"])
    assert stats["births"] == 3 and stats["founder_births"] == 1
    assert stats["deaths"] == 3 and stats["deaths_age"] == 2 and stats["deaths_starvation"] == 1
    assert stats["mean_generation"] == pytest.approx(1.0)  # (2 + 0) / 2
    assert stats["max_generation"] == 2 and stats["lineage_depth"] == 2
    empty = graphs.lifecycle_stats({}, [])
    assert empty["births"] == 0 and empty["mean_generation"] == 0.0 and empty["lineage_depth"] == 0


def pagerank_by_linear_solve(edges, num_nodes, damping=0.85):
    """PageRank as the solution of p = (1 - d) / n + d * M p, with M column-stochastic and a node
    without out-edges spreading its rank evenly (networkx's convention), solved by NumPy."""
    transition = np.zeros((num_nodes, num_nodes))  # [to, from]
    for source, target in edges:
        transition[target, source] = 1.0
    out_degree = transition.sum(axis=0)
    transition = np.where(out_degree > 0, transition / np.maximum(out_degree, 1), 1.0 / num_nodes)
    return np.linalg.solve(np.eye(num_nodes) - damping * transition, np.full(num_nodes, (1 - damping) / num_nodes))


def test_pagerank_matches_a_linear_solve_on_a_favourite_graph():
    # Agents 0 <-> 1 mutual favourites, 2 and 3 admire 1, 4 admires 3, 5 has no live peer (dangling).
    attention = np.array([[1.0, 0.0], [1.0, 0.0], [0.2, 0.8], [0.9, 0.1], [0.0, 1.0], [0.0, 0.0]])
    peer_index = np.array([[1, 2], [0, 3], [0, 1], [1, 0], [0, 3], [-1, -1]])
    graph = graphs.favourite_graph(attention, peer_index)
    assert sorted(graph.edges) == [(0, 1), (1, 0), (2, 1), (3, 1), (4, 3)]
    expected = pagerank_by_linear_solve(graph.edges, 6)
    # networkx iterates until the L1 change is below N * 1e-6, so agree to about that.
    np.testing.assert_allclose(graphs.graph_summary(graph)["pagerank"], expected, atol=1e-5)


# --------------------------------------------------------------------------- genealogy


def random_genealogy(seed, founders=20, births=300):
    """Children with 0, 1 or 2 parents drawn from the 60 agents born just before them."""
    rng = np.random.default_rng(seed)
    parents = {}
    for child in range(founders, founders + births):
        pool = np.arange(max(0, child - 60), child)
        parents[child] = tuple(int(p) for p in rng.choice(pool, size=rng.integers(0, 3), replace=False))
    return parents


def test_lineage_depth_is_the_longest_path_from_a_founder():
    parents = random_genealogy(0)
    depth = graphs.lineage_depth(parents)
    graph = graphs.genealogy_graph(parents)
    for child in (25, 150, 319):
        # Every path inside the child's ancestry extends to the child, so the longest one ends there.
        ancestry = graph.subgraph(nx.ancestors(graph, child) | {child})
        assert depth[child] == nx.dag_longest_path_length(ancestry)


def test_descendant_counts_match_networkx_traversal():
    parents = random_genealogy(1)
    graph = graphs.genealogy_graph(parents, agents=range(20))
    living = set(range(250, 320)) | {3, 7}
    descendants, living_descendants = graphs.descendant_counts(graph, living)
    assert set(descendants) == set(graph.nodes)
    for agent in graph.nodes:
        reference = nx.descendants(graph, agent)
        assert descendants[agent] == len(reference)
        assert living_descendants[agent] == len(reference & living)


def test_genealogy_graph_keeps_parentless_agents_and_one_edge_per_parent():
    graph = graphs.genealogy_graph({"c": ("a", "a"), "d": ()}, agents=["e"])
    assert sorted(graph.nodes) == ["a", "c", "d", "e"]
    assert sorted(graph.edges) == [("a", "c")]


def test_descendant_counts_reject_a_cycle():
    with pytest.raises(ValueError, match="cycle"):
        graphs.descendant_counts(nx.DiGraph([(0, 1), (1, 0)]))
    with pytest.raises(ValueError, match="cycle through 'a'"):
        graphs.lineage_depth({"a": ("a",)})
