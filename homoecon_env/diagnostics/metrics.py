"""Economy-wide metrics for the research questions of DESIGN.md section 1.

Pure functions: NumPy arrays (or CPU torch tensors) in, Python numbers, NumPy arrays or dicts
out, no module state. Shapes use N agents, R resources, J jobs, K observed peers, B broadcast
dim, T logged steps. This module never imports matplotlib (figures live in ``plots``).

Contents, by question:
- inequality: :func:`gini`;
- specialization: :func:`job_shares`, :func:`job_concentration`, :func:`agent_specialization`,
  :func:`specialization_index`, :func:`division_of_labour`;
- population: :func:`lineage_depth`, :func:`lifecycle_stats`;
- communication: :func:`broadcast_pca`, :func:`covariance_spectrum`,
  :func:`participation_ratio`;
- social filtering: :func:`attention_entropy`, :func:`attention_matrix`,
  :func:`favourite_graph`, :func:`graph_summary`;
- markets: :func:`relative_prices`, :func:`trade_volume`, :func:`price_scarcity_correlation`;
- statistics: :func:`spearman` (rank correlation), :func:`mean_ci95` (over seeds).
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Any, Hashable, Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

__all__ = [
    "to_numpy",
    "gini",
    "job_shares",
    "job_concentration",
    "agent_specialization",
    "specialization_index",
    "division_of_labour",
    "lineage_depth",
    "lifecycle_stats",
    "broadcast_pca",
    "covariance_spectrum",
    "participation_ratio",
    "attention_entropy",
    "attention_matrix",
    "favourite_graph",
    "graph_summary",
    "relative_prices",
    "trade_volume",
    "price_scarcity_correlation",
    "spearman",
    "mean_ci95",
]


# --------------------------------------------------------------------------- helpers


def to_numpy(values: Any, dtype: Any = None) -> np.ndarray:
    """Return ``values`` as a NumPy array; torch tensors are detached and moved to the CPU.

    Torch is never imported here: anything with ``detach`` is treated as a tensor.
    """
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _finite_float_array(values: Any, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """Convert to float64, check the number of dimensions and that every entry is finite."""
    array = to_numpy(values, dtype=np.float64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}-D' for d in allowed)} array, "
                         f"got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains nan or inf; expected finite values")
    return array


def _int_array(values: Any, name: str, low: int, high: int) -> np.ndarray:
    """Convert to int64 and check every entry lies in ``[low, high)``."""
    array = to_numpy(values)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.all(np.isfinite(array)) or np.any(rounded != array):
            raise ValueError(f"{name}: expected integers, got dtype {array.dtype}")
        array = rounded
    array = array.astype(np.int64)
    if array.size and (array.min() < low or array.max() >= high):
        raise ValueError(f"{name}: values must lie in [{low}, {high}), "
                         f"got min {array.min()} and max {array.max()}")
    return array


def _bool_mask(mask: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A boolean mask of ``shape``: all True when ``mask`` is None, else ``mask > 0``."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    array = to_numpy(mask)
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
    return array > 0


def _normalised_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy (nats) over the last axis divided by log(size of that axis); 0 if the axis has 1 slot."""
    size = probabilities.shape[-1]
    if size < 2:
        return np.zeros(probabilities.shape[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * np.log(probabilities), 0.0)
    return -terms.sum(axis=-1) / math.log(size)


def _rank(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the only axis, ties receiving their average rank (as for Spearman)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Group equal values: each group gets the mean of the positions it spans.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1 .. end
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays; nan when either is constant or shorter than 2."""
    if len(x) < 2:
        return float("nan")
    x = x - x.mean()
    y = y - y.mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    if denominator <= 1e-300:
        return float("nan")
    return float(np.clip((x @ y) / denominator, -1.0, 1.0))


# --------------------------------------------------------------------------- correlation


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation of two 1-D samples of equal length (e.g. wealth and age over agents [N]).

    The Pearson correlation of the ranks, tied values sharing their average rank. nan where it says
    nothing: either side constant, or fewer than three pairs (two distinct points are always
    perfectly rank-correlated). Raises ValueError on nan or inf, or unequal lengths.
    """
    first = _finite_float_array(x, "x", ndim=1)
    second = _finite_float_array(y, "y", ndim=1)
    if len(first) != len(second):
        raise ValueError(f"y: expected {len(first)} values like x, got {len(second)}")
    if len(first) < 3:
        return float("nan")
    return _pearson(_rank(first), _rank(second))


# --------------------------------------------------------------------------- inequality


def gini(values: Any) -> float:
    """Gini coefficient of a 1-D nonnegative array (e.g. wealth [N]).

    Population formula (mean absolute difference over all ordered pairs, self-pairs included):
    ``G = sum_i sum_j |x_i - x_j| / (2 n^2 mean(x))``, computed from the sorted values as
    ``G = 2 sum_i i x_(i) / (n sum x) - (n + 1) / n`` (i = 1..n). It lies in [0, 1 - 1/n]:
    [0, 0, 0, 1] gives 0.75. Returns 0.0 when all values are equal, all zero, or the array is
    empty (no inequality to measure). Raises ValueError on negative or non-finite values.
    """
    x = _finite_float_array(values, "gini values", ndim=1)
    if x.size and x.min() < 0:
        raise ValueError(f"gini values: expected nonnegative, got min {x.min()}")
    total = x.sum()
    n = x.size
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    coefficient = 2.0 * float(ranks @ np.sort(x)) / (n * total) - (n + 1) / n
    return float(max(coefficient, 0.0))  # rounding can give -1e-17 for equal values


# --------------------------------------------------------------------------- specialization


def job_shares(jobs: Any, num_jobs: int) -> np.ndarray:
    """Fraction of agents doing each job.

    ``jobs``: integer job choices in [0, J), shape [N] or [T, N] (one row per step).
    Returns float64 [J] (or [T, J]) fractions summing to 1 per row; all zeros if N == 0.
    """
    if num_jobs < 1:
        raise ValueError(f"num_jobs: expected >= 1, got {num_jobs}")
    choices = _int_array(jobs, "jobs", 0, num_jobs)
    if choices.ndim not in (1, 2):
        raise ValueError(f"jobs: expected [N] or [T, N], got shape {choices.shape}")
    rows = choices.reshape(-1, choices.shape[-1])  # [T, N]
    offsets = rows + num_jobs * np.arange(rows.shape[0])[:, None]
    counts = np.bincount(offsets.ravel(), minlength=rows.shape[0] * num_jobs)
    counts = counts.reshape(rows.shape[0], num_jobs).astype(np.float64)  # [T, J]
    shares = counts / max(rows.shape[1], 1)
    return shares[0] if choices.ndim == 1 else shares


def job_concentration(shares: Any) -> float | np.ndarray:
    """Population-level concentration of jobs: 1 - entropy(shares) / log(J).

    ``shares``: [J] (or [T, J]) job fractions, e.g. from :func:`job_shares`. 1 when every agent
    does the same job, 0 when jobs are evenly split; 0 when J == 1. It says nothing about
    whether the *same* agents keep the same job: see :func:`specialization_index`.
    """
    probabilities = _finite_float_array(shares, "shares", ndim=(1, 2))
    totals = probabilities.sum(axis=-1, keepdims=True)
    probabilities = np.divide(probabilities, totals, out=np.zeros_like(probabilities),
                              where=totals > 0)
    concentration = 1.0 - _normalised_entropy(probabilities)
    concentration = np.where(totals[..., 0] > 0, concentration, 0.0)
    return float(concentration) if concentration.ndim == 0 else concentration


def _agent_job_frequencies(job_history: Any, num_jobs: int, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-agent job frequencies [N, J] over the counted steps, and the counts of steps [N]."""
    history = _int_array(job_history, "job_history", 0, num_jobs)
    if history.ndim != 2:
        raise ValueError(f"job_history: expected [T, N], got shape {history.shape}")
    counted = _bool_mask(mask, history.shape, "mask")  # [T, N]
    num_agents = history.shape[1]
    keys = (np.arange(num_agents)[None, :] * num_jobs + history)[counted]
    counts = np.bincount(keys, minlength=num_agents * num_jobs).reshape(num_agents, num_jobs)
    steps = counts.sum(axis=1)  # [N]
    frequencies = counts / np.maximum(steps, 1)[:, None]
    return frequencies, steps


def agent_specialization(job_history: Any, num_jobs: int, mask: Any = None) -> np.ndarray:
    """Per-agent consistency of job choice over time: 1 - entropy(own job frequencies) / log(J).

    ``job_history``: [T, N] job choices; column n is agent row n. Agents die and their row is
    reused by a newborn, so pass ``mask`` [T, N] (True = count this step), e.g. True only since
    the row's current occupant was born, or a window shorter than a lifetime.
    Returns [N]: 1 for an agent that always does the same job, 0 for one that spreads evenly over
    all J jobs; nan for an agent with no counted step. With J == 1 every counted agent scores 1.
    """
    frequencies, steps = _agent_job_frequencies(job_history, num_jobs, mask)
    consistency = 1.0 - _normalised_entropy(frequencies) if num_jobs > 1 else np.ones(len(steps))
    return np.where(steps > 0, consistency, np.nan)


def specialization_index(job_history: Any, num_jobs: int, mask: Any = None) -> float:
    """Mean over agents of :func:`agent_specialization` (agents with no counted step ignored).

    1: every agent sticks to one job; 0: every agent spreads evenly over jobs. Returns 0.0 when no
    agent has a counted step. Combine with :func:`job_concentration` (are they all in the *same*
    job?) or use :func:`division_of_labour`, which is high only when both hold.
    """
    consistency = agent_specialization(job_history, num_jobs, mask)
    finite = consistency[np.isfinite(consistency)]
    return float(finite.mean()) if finite.size else 0.0


def division_of_labour(job_history: Any, num_jobs: int, mask: Any = None) -> float:
    """Mutual information between agent and job, divided by log(J), in [0, 1].

    Decomposes the entropy of the population's job mix (all counted agent-steps pooled) into the
    part explained by who the agent is: I(agent; job) = H(job) - mean_agent H(job | agent), the
    agents weighted by their counted steps. 1 when each agent always does one job and the jobs
    are evenly split across agents; 0 when everyone does the same job, or everyone randomises
    the same way. Returns 0.0 with J == 1 or no counted steps. Shapes as in
    :func:`agent_specialization`.
    """
    frequencies, steps = _agent_job_frequencies(job_history, num_jobs, mask)
    if num_jobs < 2 or steps.sum() == 0:
        return 0.0
    weights = steps / steps.sum()  # [N]
    pooled = weights @ frequencies  # [J]
    scale = math.log(num_jobs)
    conditional = float(weights @ _normalised_entropy(frequencies)) * scale
    marginal = float(_normalised_entropy(pooled)) * scale
    return float(np.clip((marginal - conditional) / scale, 0.0, 1.0))


# --------------------------------------------------------------------------- population


def lineage_depth(parents: Mapping[Hashable, Sequence[Hashable]]) -> dict[Hashable, int]:
    """Depth of every agent in a genealogy: 0 for founders, else 1 + the deepest parent's depth.

    ``parents``: child name -> tuple of parent names (``()`` for a founder, as in the env's
    ``infos[child]["parents"]``). A name that only appears as a parent (the initial population)
    has depth 0. This is the env's ``generation``. Returns name -> depth for every name seen.
    Iterative, so arbitrarily long genealogies are fine; raises ValueError on a cycle.
    """
    depth: dict[Hashable, int] = {}
    for root in parents:
        if root in depth:
            continue
        path = {root}  # the chain of descendants being resolved: meeting one again is a cycle
        stack = [(root, iter(parents[root]))]
        while stack:
            node, unvisited = stack[-1]
            for parent in unvisited:
                if parent in depth:
                    continue
                if parent in path:
                    raise ValueError(f"parents: cycle through {parent!r}; a genealogy must be acyclic")
                path.add(parent)
                stack.append((parent, iter(parents.get(parent, ()))))
                break
            else:
                node_parents = parents.get(node, ())
                depth[node] = 1 + max(depth[p] for p in node_parents) if node_parents else 0
                stack.pop()
                path.discard(node)
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


# --------------------------------------------------------------------------- communication


def covariance_spectrum(broadcasts: Any) -> np.ndarray:
    """Eigenvalues [B], descending, of the sample covariance (ddof=1) of broadcasts [N, B].

    Low-dimensional messages show as a few large eigenvalues. Returns zeros when N < 2 (the
    covariance is undefined there) and when every agent sends the same message.
    """
    messages = _finite_float_array(broadcasts, "broadcasts", ndim=2)
    num_agents, dim = messages.shape
    if num_agents < 2:
        return np.zeros(dim)
    centred = messages - messages.mean(axis=0)
    covariance = centred.T @ centred / (num_agents - 1)  # [B, B]
    eigenvalues = np.linalg.eigvalsh(covariance)[::-1]
    return np.clip(eigenvalues, 0.0, None)  # eigvalsh may return -1e-17 for a null direction


def participation_ratio(eigenvalues: Any) -> float:
    """Effective dimension of a spectrum: (sum l)^2 / sum l^2.

    ``eigenvalues``: [B] nonnegative (e.g. from :func:`covariance_spectrum`). 1 when all variance
    lies in one direction, B when it is spread evenly (isotropic). Returns 0.0 when every
    eigenvalue is zero (no variance, or N < 2). Tiny negatives from round-off are treated as 0;
    a clearly negative eigenvalue raises ValueError.
    """
    spectrum = _finite_float_array(eigenvalues, "eigenvalues", ndim=1)
    scale = np.abs(spectrum).max() if spectrum.size else 0.0
    if spectrum.size and spectrum.min() < -1e-9 * max(scale, 1.0):
        raise ValueError(f"eigenvalues: expected nonnegative, got min {spectrum.min()}")
    spectrum = np.clip(spectrum, 0.0, None)
    squares = float(spectrum @ spectrum)
    if squares <= 0.0:
        return 0.0
    return float(spectrum.sum() ** 2 / squares)


def broadcast_pca(broadcasts: Any, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Project broadcasts [N, B] onto their first principal components.

    Returns ``(coords [N, n_components], explained_variance_ratio [n_components])``, computed by
    SVD of the centred messages. Each component's sign is fixed so that its largest loading is
    positive, so the picture does not flip between calls. Components beyond min(N - 1, B), or when
    there is no variance (N < 2, identical messages), are zero columns with ratio 0.
    """
    if n_components < 1:
        raise ValueError(f"n_components: expected >= 1, got {n_components}")
    messages = _finite_float_array(broadcasts, "broadcasts", ndim=2)
    num_agents = messages.shape[0]
    coords = np.zeros((num_agents, n_components))
    ratio = np.zeros(n_components)
    if num_agents < 2:
        return coords, ratio
    centred = messages - messages.mean(axis=0)
    _, singular_values, directions = np.linalg.svd(centred, full_matrices=False)  # [k], [k, B]
    variance = singular_values**2
    total = variance.sum()
    if total <= 1e-300:
        return coords, ratio
    kept = min(n_components, num_agents - 1, len(singular_values))  # centring costs one rank
    directions = directions[:kept]
    largest = np.argmax(np.abs(directions), axis=1)
    signs = np.sign(directions[np.arange(kept), largest])
    directions = directions * np.where(signs == 0, 1.0, signs)[:, None]
    coords[:, :kept] = centred @ directions.T
    ratio[:kept] = variance[:kept] / total
    return coords, ratio


# --------------------------------------------------------------------------- social filtering


def attention_entropy(attention: Any, mask: Any = None, *, normalised: bool = False) -> float:
    """Mean over agents of the entropy (nats) of their attention over live peers.

    ``attention``: [N, K] nonnegative weights over peer slots; ``mask``: [N, K], nonzero where the
    slot holds a live peer (None: every slot live). Each row is renormalised over its live slots,
    so it need not sum to 1. Uniform attention over n live peers gives log(n); attention on one
    peer gives 0. With ``normalised=True`` each agent's entropy is divided by log(its live peers),
    giving [0, 1]; agents with fewer than 2 live peers (nothing to choose) are then left out.
    Agents with no live peer or zero total attention are always left out; 0.0 if none remain.
    """
    weights = _finite_float_array(attention, "attention", ndim=2)
    if weights.size and weights.min() < 0:
        raise ValueError(f"attention: expected nonnegative weights, got min {weights.min()}")
    live = _bool_mask(mask, weights.shape, "mask")
    weights = np.where(live, weights, 0.0)
    totals = weights.sum(axis=1)  # [N]
    probabilities = weights / np.where(totals > 0, totals, 1.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(probabilities > 0, probabilities * np.log(probabilities), 0.0).sum(axis=1)
    num_live = live.sum(axis=1)
    counted = totals > 0
    if normalised:
        counted &= num_live >= 2
        entropy = entropy / np.log(np.maximum(num_live, 2))
    return float(entropy[counted].mean()) if counted.any() else 0.0


def _peer_index_array(peer_index: Any, shape: tuple[int, ...], num_agents: int) -> np.ndarray:
    """Check peer indices [N, K] against ``shape`` and the range [-1, num_agents)."""
    index = _int_array(peer_index, "peer_index", -1, num_agents)
    if index.shape != shape:
        raise ValueError(f"peer_index: expected shape {shape} like attention, got {index.shape}")
    return index


def attention_matrix(attention: Any, peer_index: Any, num_agents: int | None = None) -> np.ndarray:
    """Dense agent-to-agent attention [N, num_agents]: entry (i, j) = attention i pays to agent j.

    ``attention``: [N, K] weights over peer slots; ``peer_index``: [N, K] the agent row each slot
    shows, -1 for an empty slot (ignored). Slots showing the same peer are summed.
    ``num_agents`` defaults to N. Memory is N * num_agents floats: for plots of small populations.
    """
    weights = _finite_float_array(attention, "attention", ndim=2)
    num_agents = weights.shape[0] if num_agents is None else int(num_agents)
    index = _peer_index_array(peer_index, weights.shape, num_agents)
    dense = np.zeros((weights.shape[0], num_agents))
    rows, slots = np.nonzero(index >= 0)
    np.add.at(dense, (rows, index[rows, slots]), weights[rows, slots])
    return dense


def favourite_graph(attention: Any, peer_index: Any, mask: Any = None) -> nx.DiGraph:
    """Directed graph with an edge from every agent to its most-attended peer.

    ``attention``: [N, K]; ``peer_index``: [N, K] agent rows, -1 for empty slots; ``mask``
    (optional) [N, K], nonzero for live slots. Nodes are the agent rows 0..N-1 (all of them, so
    agents without a live peer appear with no out-edge). Slots showing the same peer are summed;
    ties go to the lowest peer row. Edge attribute ``weight`` is the favourite's attention.
    Every node has out-degree <= 1, so each weakly connected component is a cycle (often two
    mutual favourites) with trees of admirers flowing into it.
    """
    weights = _finite_float_array(attention, "attention", ndim=2)
    num_agents = weights.shape[0]
    index = _peer_index_array(peer_index, weights.shape, num_agents)
    live = _bool_mask(mask, weights.shape, "mask") & (index >= 0)
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


# --------------------------------------------------------------------------- markets


def relative_prices(prices: Any) -> np.ndarray:
    """Prices [R] (or [T, R]) normalised to sum 1 along the last axis.

    Only price ratios matter in an exchange economy; this fixes the numeraire. A row of all
    zeros (no good is scarce) becomes uniform 1/R. Raises ValueError on negative prices.
    """
    values = _finite_float_array(prices, "prices", ndim=(1, 2))
    if values.size and values.min() < 0:
        raise ValueError(f"prices: expected nonnegative, got min {values.min()}")
    totals = values.sum(axis=-1, keepdims=True)
    uniform = np.full_like(values, 1.0 / max(values.shape[-1], 1))
    return np.divide(values, totals, out=uniform, where=totals > 0)


def trade_volume(before: Any, after: Any, *, per_resource: bool = False) -> float | np.ndarray:
    """Units of goods that changed hands: 0.5 * sum_{i,r} |after_ir - before_ir|.

    ``before``, ``after``: holdings [N, R] before and after trade. Trade conserves each good, so
    what buyers gain equals what sellers give; the half counts each unit once. Returns a float
    (summed over goods, in goods' own units) or [R] per good with ``per_resource=True``.
    """
    held_before = _finite_float_array(before, "before", ndim=2)
    held_after = _finite_float_array(after, "after", ndim=2)
    if held_before.shape != held_after.shape:
        raise ValueError(f"after: expected shape {held_before.shape} like before, got {held_after.shape}")
    per_good = 0.5 * np.abs(held_after - held_before).sum(axis=0)  # [R]
    return per_good if per_resource else float(per_good.sum())


def _relative_scarcity(totals: np.ndarray) -> np.ndarray:
    """Relative scarcity [T, R]: (1 / total_r) / sum_q (1 / total_q); goods with none share 1."""
    missing = totals <= 0
    inverse = np.divide(1.0, totals, out=np.zeros_like(totals), where=~missing)
    any_missing = missing.any(axis=1, keepdims=True)
    weights = np.where(any_missing, missing.astype(np.float64), inverse)
    return weights / weights.sum(axis=1, keepdims=True)


def price_scarcity_correlation(
    prices_over_time: Any, totals_over_time: Any, *, method: str = "spearman"
) -> dict[str, Any]:
    """Do prices follow scarcity? Correlation of relative price with relative scarcity.

    ``prices_over_time``: [T, R] prices; ``totals_over_time``: [T, R] total holdings of each good.
    Relative price p_tr / sum_q p_tq; relative scarcity (1/total_tr) / sum_q (1/total_tq)
    (the inverse of a good's share, normalised; a good nobody holds is maximally scarce).
    ``method``: "spearman" (rank, ties averaged) or "pearson".

    Returns a dict: ``per_resource`` [R], the correlation over time of each good's relative
    price with its relative scarcity (with R = 2 both goods give the same number); ``mean``,
    their mean over goods where defined; ``pooled``, one correlation over all (t, r) pairs.
    A correlation is nan where undefined (a constant series, or T < 2): seasons must move
    supplies for this to be measurable.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method: expected 'spearman' or 'pearson', got {method!r}")
    prices = relative_prices(_finite_float_array(prices_over_time, "prices_over_time", ndim=2))
    totals = _finite_float_array(totals_over_time, "totals_over_time", ndim=2)
    if totals.shape != prices.shape:
        raise ValueError(f"totals_over_time: expected shape {prices.shape} like prices, got {totals.shape}")
    if totals.size and totals.min() < 0:
        raise ValueError(f"totals_over_time: expected nonnegative, got min {totals.min()}")
    scarcity = _relative_scarcity(totals) if totals.size else totals

    def correlate(x: np.ndarray, y: np.ndarray) -> float:
        if method == "spearman" and len(x) > 0:
            x, y = _rank(x), _rank(y)
        return _pearson(x, y)

    per_resource = np.array([correlate(prices[:, r], scarcity[:, r]) for r in range(prices.shape[1])])
    finite = per_resource[np.isfinite(per_resource)]
    return {
        "per_resource": per_resource,
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "pooled": correlate(prices.ravel(), scarcity.ravel()),
    }


# --------------------------------------------------------------------------- statistics

# Two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30.
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
    2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
    2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)
_Z975 = 1.959963984540054  # standard normal 0.975 quantile


def _t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table up to df 30, then the Cornish-Fisher expansion (error < 1e-7)."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(term / df ** (power + 1) for power, term in enumerate(terms))


def mean_ci95(samples: Any) -> tuple[float, float]:
    """Mean and 95% confidence half-width of 1-D samples (e.g. one metric over seeds).

    Half-width = t_{0.975, n-1} * s / sqrt(n), with s the sample standard deviation (ddof=1) and
    the Student t quantile from a built-in table (no SciPy). With one sample the half-width is
    inf (the interval is unbounded). Raises ValueError when there is no sample.
    """
    values = _finite_float_array(samples, "samples", ndim=1)
    n = values.size
    if n == 0:
        raise ValueError("samples: expected at least one sample, got none")
    mean = float(values.mean())
    if n == 1:
        return mean, float("inf")
    return mean, float(_t_quantile_975(n - 1) * values.std(ddof=1) / math.sqrt(n))
