"""Lineages of a recorded rollout: founder lines, the lineage DAG, Muller shares, message dialects.

Pure functions over the genealogy records a detailed trace holds (:mod:`analysis`: agents, an id ->
record dict with parents, generation, birth_step, death_step, initial, and optionally teacher), and
its arrays; docs/design.md section 9.

Founder lineage. Every birth has two parents, so after a few generations each agent descends from
many founders and "the share descending from founder f" would not partition the population. A
lineage here follows one line instead, like a surname: an agent's founder lineage is its first
parent's (the first of the two the economy drew, both in proportion to lifetime reward), and a
founder (the initial population, or a newborn refounding an extinct population) heads its own.
Every agent belongs to exactly one lineage, so the living shares sum to 1 at every step.

Dialects. The message "dialect" divergence at one step is the root-mean-square Euclidean distance
between the mean messages of every pair of lineages with at least `MIN_MEMBERS` living speakers (the
squared form has a closed sum over pairs, so thousands of lineages cost no pairwise table). Small groups'
means differ by sampling noise alone, so the same statistic over random relabellings (the same group
sizes, `SHUFFLES` permutations) is the baseline, and the excess over it is what lineage explains.
"""
from __future__ import annotations

import io
from typing import Hashable, Mapping, Optional

import networkx as nx
import numpy as np

from homoecon_env.files import atomic_write_text

MIN_MEMBERS = 2  # a lineage's mean message counts once it has this many living speakers
SHUFFLES = 20  # random relabellings per step for the dialect baseline
MULLER_TOP = 8  # lineages named in the Muller plot (the rest are drawn, unnamed, in grey)
FAMILY_DEPTH = 2  # a "family" is everyone sharing the first-parent ancestor this many generations up


def founder_lineages(agents: Mapping[int, Mapping]) -> dict[int, int]:
    """Agent id -> founder id of its first-parent line (a founder maps to itself). ValueError naming an
    agent whose first parent is not a known agent born before it (the records are not a genealogy)."""
    lineage: dict[int, int] = {}
    for agent in sorted(agents):  # ids are given in birth order: a parent's id is smaller than its child's
        parents = tuple(agents[agent]["parents"])
        if not parents:
            lineage[agent] = agent
            continue
        first = parents[0]
        if first not in lineage:
            raise ValueError(f"agents: agent_{agent}'s first parent agent_{first} is not an agent born before it")
        lineage[agent] = lineage[first]
    return lineage


def first_parent_ancestors(agents: Mapping[int, Mapping], depth: int) -> dict[int, int]:
    """Agent id -> its ancestor ``depth`` steps up the first-parent line (a founder is its own ancestor, so a
    shorter line ends at its founder). Depth 1 groups siblings by first parent, depth 2 first cousins."""
    up = {agent: (tuple(agents[agent]["parents"]) or (agent,))[0] for agent in agents}
    founder_lineages(agents)  # refuses records that are not a genealogy
    ancestor = {agent: agent for agent in agents}
    for _ in range(depth):
        ancestor = {agent: up[a] for agent, a in ancestor.items()}
    return ancestor


def lineage_graph(agents: Mapping[int, Mapping], alive: Optional[set] = None) -> nx.DiGraph:
    """The lineage DAG: one node per agent ("agent_<id>") with birth_step, death_step (-1: alive at the
    end), generation, founder_lineage ("agent_<id>"), initial and alive; an edge parent -> child
    (kind="parent") per parent and, where the record names a teacher (cultural inheritance), teacher ->
    pupil (teacher=True; kind="teacher" unless the teacher is also a parent, then kind="parent+teacher")."""
    alive = set(alive or ())
    lineage = founder_lineages(agents)
    name = "agent_{}".format
    graph = nx.DiGraph()
    for agent in sorted(agents):
        record = agents[agent]
        death = record.get("death_step")
        graph.add_node(name(agent), birth_step=int(record["birth_step"]), generation=int(record["generation"]),
                       death_step=-1 if death is None else int(death), founder_lineage=name(lineage[agent]),
                       initial=bool(record.get("initial", False)), alive=agent in alive)
    for agent in sorted(agents):
        record = agents[agent]
        for parent in dict.fromkeys(record["parents"]):
            graph.add_edge(name(parent), name(agent), kind="parent", parent=True, teacher=False)
        teacher = record.get("teacher")
        if teacher is not None:
            if graph.has_edge(name(teacher), name(agent)):
                graph.edges[name(teacher), name(agent)].update(kind="parent+teacher", teacher=True)
            else:
                graph.add_edge(name(teacher), name(agent), kind="teacher", parent=False, teacher=True)
    return graph


def write_graphml(path: str, graph: nx.DiGraph) -> None:
    """The graph as GraphML at ``path``, written atomically (networkx's writer, into memory first)."""
    buffer = io.BytesIO()
    nx.write_graphml(graph, buffer)
    atomic_write_text(path, buffer.getvalue().decode("utf-8"))


def lineage_shares(ids: np.ndarray, lineage: Mapping[int, int]) -> tuple[list[int], np.ndarray]:
    """The living population's share per founder lineage at every step.

    ids [T, N]: the agent in each row at each step (trace["ids"]); lineage: agent -> founder
    (`founder_lineages`). Returns the founders (columns, by final share then first appearance, largest
    first) and shares [T, F], each row summing to 1."""
    ids = np.asarray(ids, dtype=np.int64)
    founders = sorted(set(lineage.values()))
    column = {founder: k for k, founder in enumerate(founders)}
    lookup = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    for agent, founder in lineage.items():
        if agent <= ids.max():
            lookup[agent] = column[founder]
    index = lookup[ids]  # [T, N]
    if (index < 0).any():
        missing = int(ids[index < 0][0])
        raise ValueError(f"ids: agent_{missing} has no genealogy record")
    steps, f = ids.shape[0], len(founders)
    counts = np.bincount((index + f * np.arange(steps)[:, None]).ravel(), minlength=steps * f).reshape(steps, f)
    shares = counts / counts.sum(axis=1, keepdims=True)
    order = sorted(range(f), key=lambda k: (-shares[-1, k], -shares.max(axis=0)[k], k))
    return [founders[k] for k in order], shares[:, order]


def _lineage_mean_distance(messages: np.ndarray, labels: np.ndarray) -> float:
    """Root-mean-square pairwise distance between the mean messages of the labels with MIN_MEMBERS or more
    rows (nan with fewer than two such labels)."""
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((values.size, messages.shape[1]))
    np.add.at(sums, inverse, messages)
    kept = counts >= MIN_MEMBERS
    if kept.sum() < 2:
        return float("nan")
    means = sums[kept] / counts[kept, None]  # [G, B]
    g = means.shape[0]
    # sum over pairs i < j of |m_i - m_j|^2 = G sum_i |m_i|^2 - |sum_i m_i|^2: O(G B), no [G, G] table
    pair_sum = g * np.square(means).sum() - np.square(means.sum(axis=0)).sum()
    return float(np.sqrt(max(pair_sum, 0.0) / (g * (g - 1) / 2)))


def dialect_divergence(messages, labels, rng: np.random.Generator, shuffles: int = SHUFFLES) -> dict:
    """How far apart lineages' mean messages are, against randomly relabelled groups of the same sizes.

    messages [N, B] (one row per living speaker), labels [N] (its lineage). Returns {"observed",
    "shuffled" (mean over ``shuffles`` permutations of the labels), "excess" = observed - shuffled,
    "lineages" (labels with MIN_MEMBERS or more speakers)}; nan where fewer than two lineages qualify."""
    messages = np.asarray(messages, dtype=np.float64)
    labels = np.asarray(labels)
    if messages.ndim != 2 or labels.shape != (messages.shape[0],):
        raise ValueError(f"messages must be [N, B] and labels [N], got {messages.shape} and {labels.shape}")
    observed = _lineage_mean_distance(messages, labels)
    shuffled = float(np.mean([_lineage_mean_distance(messages, rng.permutation(labels)) for _ in range(shuffles)])) \
        if np.isfinite(observed) else float("nan")
    _, counts = np.unique(labels, return_counts=True)
    return {"observed": observed, "shuffled": shuffled, "excess": observed - shuffled,
            "lineages": int((counts >= MIN_MEMBERS).sum())}


def dialects_over_time(trace: dict, lineage: Mapping[int, int]) -> dict[str, np.ndarray]:
    """`dialect_divergence` at every cross-section of a detailed trace that holds the messages
    ("broadcast" [N, B]): {"step", "observed", "shuffled", "excess", "lineages"} -> [S] arrays. Each step
    shuffles with its own generator (seeded by the step), so the numbers do not depend on each other."""
    rows: dict[str, list] = {key: [] for key in ("step", "observed", "shuffled", "excess", "lineages")}
    for section in trace.get("cross_sections", []):
        if "broadcast" not in section:
            continue
        step = int(section["step"])
        labels = np.array([lineage[int(agent)] for agent in trace["ids"][step - 1]])
        values = dialect_divergence(section["broadcast"], labels, np.random.default_rng(step))
        rows["step"].append(step)
        for key, value in values.items():
            rows[key].append(value)
    return {key: np.asarray(values, dtype=np.float64) for key, values in rows.items()}


def lineage_summary(trace: dict) -> tuple[dict, dict]:
    """metrics.json's lineage numbers of a detailed trace and the arrays the figures draw.

    Summary: lineages alive at the end, the largest lineage's final share, and the dialect divergence
    (observed, shuffled, excess) averaged over the late cross-sections (the last 20% of the steps) and
    over all of them, by founder lineage ("dialect_*") and by family ("family_dialect_*": first-parent
    ancestor FAMILY_DEPTH generations up; still defined once one founder lineage has taken over).
    Arrays: founders, shares [T, F], and the dialects over time (by founder lineage, and by family)."""
    lineage = founder_lineages(trace["agents"])
    founders, shares = lineage_shares(trace["ids"], lineage)
    dialects = dialects_over_time(trace, lineage)
    family = dialects_over_time(trace, first_parent_ancestors(trace["agents"], FAMILY_DEPTH))
    steps = len(trace["ids"])
    late = dialects["step"] > steps - max(1, round(0.2 * steps))

    def mean(values) -> Optional[float]:
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else None

    summary = {"founder_lineages": len(founders), "lineages_alive_end": int((shares[-1] > 0).sum()),
               "largest_lineage_share_end": float(shares[-1].max()), "largest_lineage": f"agent_{founders[0]}"}
    for prefix, series in (("dialect", dialects), ("family_dialect", family)):
        for key in ("observed", "shuffled", "excess"):
            summary[f"{prefix}_{key}_late"] = mean(series[key][late])
            summary[f"{prefix}_{key}_mean"] = mean(series[key])
    return summary, {"founders": founders, "shares": shares, "dialects": dialects, "family_dialects": family}


def teacher_counts(agents: Mapping[Hashable, Mapping]) -> int:
    """How many agents name a teacher (cultural births)."""
    return sum(1 for record in agents.values() if record.get("teacher") is not None)
