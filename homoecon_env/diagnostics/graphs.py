"""Graphs of the economy with networkx: who attends to whom, and who descends from whom.

- Social filtering (docs/design.md section 1): :func:`favourite_graph` (each agent -> the peer it
  attends to most) and :func:`graph_summary` (degrees, PageRank, clustering, component shapes).
- Population: :func:`genealogy_graph` (parent -> child), :func:`lineage_depth` (generations),
  :func:`lifecycle_stats` (births, deaths, generations) and :func:`descendant_counts`.

Pure functions, no module state; networkx graphs, NumPy arrays and dicts out. Shapes: N agents,
K observed peers.
"""
from __future__ import annotations

import warnings
from collections import Counter
from typing import Any, Hashable, Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from homoecon_env.diagnostics.arrays import bool_mask, finite_float_array, peer_index_array

__all__ = [
    "favourite_graph",
    "graph_summary",
    "genealogy_graph",
    "lineage_depth",
    "lifecycle_stats",
    "descendant_counts",
]


# --------------------------------------------------------------------------- social filtering


def favourite_graph(attention: Any, peer_index: Any, mask: Any = None) -> nx.DiGraph:
    """Directed graph with an edge from every agent to its most-attended peer.

    ``attention``: [N, K]; ``peer_index``: [N, K] agent rows, -1 for empty slots; ``mask``
    (optional) [N, K], nonzero for live slots. Nodes are the agent rows 0..N-1 (all of them, so
    agents without a live peer appear with no out-edge). Slots showing the same peer are summed;
    ties go to the lowest peer row. Edge attribute ``weight`` is the favourite's attention.
    Every node has out-degree <= 1, so each weakly connected component is a cycle (often two
    mutual favourites) with trees of admirers flowing into it.
    """
    weights = finite_float_array(attention, "attention", ndim=2)
    num_agents = weights.shape[0]
    index = peer_index_array(peer_index, weights.shape, num_agents)
    live = bool_mask(mask, weights.shape, "mask") & (index >= 0)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(num_agents))
    rows, slots = np.nonzero(live)
    if rows.size == 0:
        return graph
    keys = rows * num_agents + index[rows, slots]
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    summed = np.bincount(inverse, weights=weights[rows, slots])
    key_rows = unique_keys // num_agents
    # Sort by row, then by descending weight; the stable sort keeps the lower peer first on ties.
    order = np.lexsort((-summed, key_rows))
    first = order[np.r_[True, key_rows[order][1:] != key_rows[order][:-1]]]
    graph.add_weighted_edges_from(
        (int(key_rows[k]), int(unique_keys[k] % num_agents), float(summed[k])) for k in first
    )
    return graph


def _wl_hash(graph: nx.Graph) -> str:
    """Weisfeiler-Lehman hash (in- and out-edges kept apart), refined min(nodes, 8) rounds.

    Hashes are comparable within one networkx version only (they changed in networkx 3.5).
    """
    iterations = int(np.clip(graph.number_of_nodes(), 1, 8))
    with warnings.catch_warnings():
        # networkx >= 3.5 warns on every call that its hashes changed in that version.
        warnings.filterwarnings("ignore", message="The hashes produced for", category=UserWarning)
        return nx.weisfeiler_lehman_graph_hash(graph, iterations=iterations)


def graph_summary(graph: nx.Graph) -> dict[str, Any]:
    """Degree, centrality and topology of a (favourite) graph.

    Returns a dict, per-node arrays ordered like ``nodes`` (sorted node labels):
    ``nodes`` list; ``in_degree``, ``out_degree`` int [n] (for an undirected graph both are the
    degree); ``pagerank`` [n] (networkx, damping 0.85; sums to 1); ``clustering`` [n] (on the
    undirected version); ``mean_clustering``; ``wl_hash`` (Weisfeiler-Lehman hash of the whole
    graph: equal for isomorphic graphs); ``component_hashes`` (dict WL hash -> number of weakly
    connected components of that shape: the topology histogram); ``component_sizes`` (hash ->
    nodes per component); ``component_examples`` (hash -> one such component, relabelled 0..m-1,
    for drawing); ``num_components``.
    """
    nodes = sorted(graph.nodes)
    directed = graph.is_directed()
    in_degree = graph.in_degree if directed else graph.degree
    out_degree = graph.out_degree if directed else graph.degree
    pagerank = nx.pagerank(graph) if nodes else {}
    undirected = graph.to_undirected(as_view=True)
    clustering = nx.clustering(undirected) if nodes else {}
    components = nx.weakly_connected_components(graph) if directed else nx.connected_components(graph)
    hash_counts: Counter[str] = Counter()
    sizes: dict[str, int] = {}
    examples: dict[str, nx.Graph] = {}
    for component in components:
        subgraph = graph.subgraph(component)
        digest = _wl_hash(subgraph)
        hash_counts[digest] += 1
        if digest not in examples:
            sizes[digest] = len(component)
            examples[digest] = nx.convert_node_labels_to_integers(subgraph.copy(), ordering="sorted")
    clustering_values = np.array([clustering[n] for n in nodes], dtype=np.float64)
    return {
        "nodes": nodes,
        "in_degree": np.array([in_degree[n] for n in nodes], dtype=np.int64),
        "out_degree": np.array([out_degree[n] for n in nodes], dtype=np.int64),
        "pagerank": np.array([pagerank[n] for n in nodes], dtype=np.float64),
        "clustering": clustering_values,
        "mean_clustering": float(clustering_values.mean()) if nodes else 0.0,
        "wl_hash": _wl_hash(graph),
        "component_hashes": dict(hash_counts),
        "component_sizes": sizes,
        "component_examples": examples,
        "num_components": int(sum(hash_counts.values())),
    }


# --------------------------------------------------------------------------- genealogy


def genealogy_graph(parents: Mapping[Hashable, Sequence[Hashable]], agents: Iterable[Hashable] = ()) -> nx.DiGraph:
    """Directed graph with an edge from each parent to each child.

    ``parents``: child name -> parent names (``()`` for a founder, as in the env's
    ``infos[child]["parents"]``); ``agents``: further names to include without parents (e.g. the
    initial population). A name that only appears as a parent is a node too. A parent listed
    twice for one child gives one edge.
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(agents)
    graph.add_nodes_from(parents)
    graph.add_edges_from((parent, child) for child, ancestry in parents.items() for parent in ancestry)
    return graph


def _topological_order(graph: nx.DiGraph) -> list[Hashable]:
    """Parents before children; ValueError naming an agent on a cycle (a genealogy is acyclic)."""
    try:
        return list(nx.topological_sort(graph))
    except nx.NetworkXUnfeasible:
        parent, child = nx.find_cycle(graph)[0][:2]
        raise ValueError(f"parents: cycle through {child!r} (child of {parent!r}); "
                         "a genealogy must be acyclic") from None


def lineage_depth(parents: Mapping[Hashable, Sequence[Hashable]]) -> dict[Hashable, int]:
    """Depth of every agent in a genealogy: 0 for founders, else 1 + the deepest parent's depth.

    ``parents`` as in :func:`genealogy_graph`. A name that only appears as a parent (the initial
    population) has depth 0. This is the env's ``generation``. Returns name -> depth for every name
    seen. Raises ValueError on a cycle.
    """
    graph = genealogy_graph(parents)
    depth: dict[Hashable, int] = {}
    for agent in _topological_order(graph):
        depth[agent] = 1 + max((depth[parent] for parent in graph.predecessors(agent)), default=-1)
    return depth


def lifecycle_stats(
    parents: Mapping[Hashable, Sequence[Hashable]],
    death_causes: Mapping[Hashable, str] | Iterable[str],
    alive: Iterable[Hashable] | None = None,
) -> dict[str, Any]:
    """Births, deaths by cause, generations and lineage depth of a run.

    ``parents``: child name -> parent names for every agent *born during the run* (founders
    reborn after an extinction map to ``()``); the initial population need not appear.
    ``death_causes``: dead name -> cause ("age" or "starvation"), or just an iterable of causes.
    ``alive``: names alive now; if given, generation statistics are over them, else over every
    name in the genealogy.

    Returns a dict: ``births`` (int), ``founder_births`` (births with no parents),
    ``deaths`` (int), ``deaths_age``, ``deaths_starvation``, ``deaths_by_cause``
    (dict cause -> count, other causes included), ``mean_generation``, ``max_generation``
    (0.0 / 0 with nobody to measure), ``lineage_depth`` (deepest generation ever reached).
    """
    depth = lineage_depth(parents)
    causes = list(death_causes.values()) if isinstance(death_causes, Mapping) else list(death_causes)
    by_cause = dict(Counter(causes))
    measured = [depth.get(name, 0) for name in alive] if alive is not None else list(depth.values())
    return {
        "births": len(parents),
        "founder_births": sum(1 for p in parents.values() if len(p) == 0),
        "deaths": len(causes),
        "deaths_age": by_cause.get("age", 0),
        "deaths_starvation": by_cause.get("starvation", 0),
        "deaths_by_cause": by_cause,
        "mean_generation": float(np.mean(measured)) if measured else 0.0,
        "max_generation": int(max(measured)) if measured else 0,
        "lineage_depth": int(max(depth.values())) if depth else 0,
    }


def descendant_counts(graph: nx.DiGraph, living: Iterable[Hashable] = ()) -> tuple[dict, dict]:
    """For every agent of a genealogy graph: how many descendants it has, and how many are living.

    ``graph``: parent -> child edges (:func:`genealogy_graph`); ``living``: names alive now.
    Returns two dicts name -> int, equal to ``len(nx.descendants(graph, name))`` and its overlap with
    ``living``. Each agent's descendants are one Python int used as a bit set, filled children
    first: one set union per edge. (``nx.descendants`` per agent walks the graph once per agent,
    quadratic in Python: some 200 times slower at 5,000 agents.) Raises ValueError on a cycle.
    """
    order = _topological_order(graph)
    bit = {agent: 1 << position for position, agent in enumerate(order)}
    alive = sum(bit[agent] for agent in set(living) if agent in bit)
    descendants: dict[Hashable, int] = {}
    for agent in reversed(order):  # children before parents
        bits = 0
        for child in graph.successors(agent):
            bits |= bit[child] | descendants[child]
        descendants[agent] = bits
    return ({agent: bits.bit_count() for agent, bits in descendants.items()},
            {agent: (bits & alive).bit_count() for agent, bits in descendants.items()})
