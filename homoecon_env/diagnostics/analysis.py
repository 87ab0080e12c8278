"""Numbers for metrics.json from recorded rollouts (evaluate.py; docs/design.md sections 1 and 6).

Pure functions: a rollout's recorded arrays in, plain numbers and dicts out, no module state. They
never run the economy or a learner, and never import matplotlib, torch, the env or the agents.

A *trace* is the dict evaluate.py records per rollout (NumPy arrays; T steps, N agent rows, R goods,
J jobs, B broadcast dim). Every trace holds
    reward, gini, trade_volume, births, deaths_age, deaths_starvation   [T] per-step economy figures
    jobs, ids                                                           [T, N] job chosen, acting agent id
and a *detailed* trace (the main rollouts) also
    totals, prices [T, R]; job_shares [T, J]; spectra [T, B] (broadcast covariance eigenvalues);
    participation_ratio, attention_entropy (normalised), entropy_nats [T] (nan without attention);
    graphs: one :func:`graph_snapshot` per snapshot step; cross_sections: per snapshot step, [N]
    arrays wealth, age, generation, effort, job and taste [N, R]; agents: id -> genealogy record
    (parents, generation, birth_step, slot, tastes, initial, death_step, death_cause);
    lifetime_reward: id -> summed reward; alive_at_end: ids living after the last step;
    frames and final: what the figures draw; communication (optional): "step" and the
    diagnostics.communication.STEP_KEYS -> [C] at C sampled late steps (step_summary), and
    "influence_step", "causal_influence" -> [I] at a subset of them (learner_influence).
With private signals (docs/design.md section 11) every trace also holds scout_attention_mass,
scout_share and listeners_on_boom [T] (diagnostics.scouts; nan where undefined), read by
:func:`scout_outcome`.

Contents: :func:`summarise_rollout` and :func:`summarise_seeds` (main rollouts, means and 95% CIs
over seeds), :func:`genealogy` (lineages and genealogy.csv rows), :func:`ablation_outcome` and
:func:`compare` (paired-seed ablations), :func:`to_json` (metrics.json-safe values).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from homoecon_env.diagnostics import communication, graphs, metrics, scouts, stats

CI_PERCENT = 95  # confidence level of every interval (stats.mean_ci95)
EDGE_FRACTION = 0.2  # "early" = the first 20% of a rollout's steps, "late" = the last 20%
MIN_LIFE_STEPS = 3  # an agent counts for specialization once it chose a job on at least this many steps
TOP_SHARE = 0.1  # the richest fraction whose wealth share is reported
IN_SEASON = 0.5  # a good is in season when its job's seasonal factor is at least halfway to the peak
MAX_GENEALOGY_FOR_DESCENDANTS = 50_000  # above this many agents, descendants are not counted
COMMUNICATION_KEYS = (*communication.STEP_KEYS, "causal_influence")  # per-step, averaged over the late window
MEASURES = ("mean_reward", "gini", "specialization", "trade_volume")  # ablation outcomes


def finite(value) -> Optional[float]:
    """A JSON-safe float: None for nan or inf (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def nanmean(values) -> Optional[float]:
    """Mean of the finite values (None when there is none): nan marks "undefined here", not zero."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return finite(values.mean()) if values.size else None


def edge_windows(steps: int) -> tuple[slice, slice]:
    """The early and late windows of a rollout (EDGE_FRACTION of its steps each, at least one step)."""
    width = max(1, round(EDGE_FRACTION * steps))
    return slice(0, width), slice(steps - width, steps)


def life_job_history(jobs: np.ndarray, ids: np.ndarray, window: slice) -> tuple[np.ndarray, np.ndarray]:
    """Job choices by agent rather than by row: history [L, A] (step of life within the window, agent)
    and mask [L, A], True where counted. Agents with fewer than MIN_LIFE_STEPS steps are not counted:
    a single choice is trivially "specialized"."""
    chosen, agent = jobs[window], ids[window]  # [W, N]
    time_index = np.repeat(np.arange(chosen.shape[0]), chosen.shape[1])
    _, column = np.unique(agent.ravel(), return_inverse=True)
    first = np.full(column.max(initial=-1) + 1, chosen.shape[0])
    np.minimum.at(first, column, time_index)
    position = time_index - first[column]  # an agent holds one row from birth to death
    history = np.zeros((position.max(initial=0) + 1, len(first)), dtype=np.int64)
    mask = np.zeros_like(history, dtype=bool)
    history[position, column] = chosen.ravel()
    mask[position, column] = True
    mask &= mask.sum(axis=0) >= MIN_LIFE_STEPS
    return history, mask


def specialization(trace: dict, num_jobs: int, window: slice) -> tuple[float, float]:
    """(specialization index, division of labour) of the agents living in a window of steps."""
    history, mask = life_job_history(trace["jobs"], trace["ids"], window)
    return (metrics.specialization_index(history, num_jobs, mask),
            metrics.division_of_labour(history, num_jobs, mask))


def graph_snapshot(step: int, attention: np.ndarray, peer_index: np.ndarray, mask: np.ndarray,
                   wealth: np.ndarray) -> dict:
    """The favourite graph of one step (every agent -> the peer it attends to most), summarised.

    ``attention``, ``peer_index``, ``mask`` [N, K] as observed; ``wealth`` [N] holdings after trade.
    Numbers (components, shapes, largest in-degree, fraction of agents in mutual pairs, largest
    PageRank, mean clustering, Spearman of in-degree with wealth) plus what the figures draw.
    """
    graph = graphs.favourite_graph(attention, peer_index, mask)
    summary = graphs.graph_summary(graph)
    mutual = sum(1 for a, b in graph.edges if graph.has_edge(b, a))
    return {
        "step": step, "components": summary["num_components"], "shapes": len(summary["component_hashes"]),
        "max_in_degree": int(summary["in_degree"].max(initial=0)), "mutual_fraction": mutual / len(attention),
        "pagerank_max": float(summary["pagerank"].max(initial=0.0)), "mean_clustering": summary["mean_clustering"],
        "in_degree_wealth_corr": stats.spearman(summary["in_degree"].astype(np.float64), wealth),
        "component_hashes": summary["component_hashes"], "component_sizes": summary["component_sizes"],
        "component_examples": summary["component_examples"], "in_degree": summary["in_degree"],
        "pagerank": summary["pagerank"]}


def summarise_rollout(trace: dict, config, season: np.ndarray) -> dict:
    """Flat dict name -> number (None where undefined) of one main rollout: what report.md quotes.

    ``trace``: a detailed trace (see the module docstring); ``config``: the rollout's EconomyConfig
    (read: resources, jobs, num_jobs, message_width, the broadcast mode); ``season`` [T, J]: each job's seasonal factor
    at the production of each step, in [0, 1] (1 = the job's peak).
    """
    steps = len(trace["reward"])
    early, late = edge_windows(steps)
    goods, jobs = list(config.resources), [job.name for job in config.jobs]
    summary: dict[str, Optional[float]] = {}

    def edges(name: str, values: np.ndarray) -> None:
        summary[f"{name}_early"], summary[f"{name}_late"] = nanmean(values[early]), nanmean(values[late])
        both = summary[f"{name}_early"] is not None and summary[f"{name}_late"] is not None
        summary[f"{name}_change"] = summary[f"{name}_late"] - summary[f"{name}_early"] if both else None

    # Outcomes over time.
    edges("reward", trace["reward"])
    edges("gini", trace["gini"])
    summary["gini_mean"] = nanmean(trace["gini"])
    summary["trade_volume_mean"] = nanmean(trace["trade_volume"])
    for name, window in (("early", early), ("late", late), ("all", slice(0, steps))):
        summary[f"specialization_{name}"], summary[f"division_of_labour_{name}"] = \
            specialization(trace, config.num_jobs, window)
    summary["specialization_change"] = summary["specialization_late"] - summary["specialization_early"]
    shares = trace["job_shares"]
    for j, name in enumerate(jobs):
        summary[f"job_share_late_{name}"] = nanmean(shares[late, j])

    # Social filtering: attention entropy and the favourite graph.
    edges("attention_entropy", trace["attention_entropy"])
    edges("attention_entropy_nats", trace["entropy_nats"])
    width = late.stop - late.start
    snapshots = trace["graphs"]
    for key in ("components", "shapes", "max_in_degree", "mutual_fraction", "pagerank_max", "mean_clustering",
                "in_degree_wealth_corr"):
        early_values = [g[key] for g in snapshots if g["step"] <= width]
        late_values = [g[key] for g in snapshots if g["step"] > steps - width]
        summary[f"graph_{key}_early"] = nanmean(early_values) if snapshots else None
        summary[f"graph_{key}_late"] = nanmean(late_values) if snapshots else None

    # Communication: effective dimension of the messages.
    spectra = trace["spectra"]  # [T, B]
    totals = spectra.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        first_share = np.where(totals > 0, spectra[:, 0] / totals, np.nan)
        two_share = np.where(totals > 0, spectra[:, :2].sum(axis=1) / totals, np.nan)
    edges("participation_ratio", trace["participation_ratio"])
    late_ratio = summary["participation_ratio_late"]
    summary["participation_fraction_late"] = None if late_ratio is None else late_ratio / config.message_width
    edges("pc1_share", first_share)
    summary["pc12_share_late"] = nanmean(two_share[late])
    # Communication metrics (diagnostics.communication) at sampled late steps; absent in older traces.
    sampled = trace.get("communication", {})
    for key in COMMUNICATION_KEYS:
        summary[f"{key}_late"] = nanmean(sampled[key]) if key in sampled else None
    summary["message_entropy_max"] = math.log2(config.num_agents)  # every speaker's message distinct
    if config.symbolic:  # and at most V ** L distinct token messages: L log2 V bits
        summary["message_entropy_max"] = min(summary["message_entropy_max"],
                                             config.message_length * math.log2(config.vocab_size))
    for name in ("mi_job", "mi_wealth"):  # what the message carries beyond the estimator's shuffled baseline
        both = summary[f"{name}_late"] is not None and summary[f"{name}_shuffled_late"] is not None
        summary[f"{name}_excess_late"] = summary[f"{name}_late"] - summary[f"{name}_shuffled_late"] if both else None

    # Inequality: what goes with wealth (Spearman over agents, averaged over snapshots).
    drivers = {"age": lambda c: c["age"], "generation": lambda c: c["generation"], "effort": lambda c: c["effort"],
               f"taste_{goods[0]}": lambda c: c["taste"][:, 0],
               "taste_concentration": lambda c: c["taste"].max(axis=1)}
    if config.num_jobs == 2:
        drivers[f"job_{jobs[1]}"] = lambda c: (c["job"] == 1).astype(np.float64)
    for name, column in drivers.items():
        summary[f"wealth_corr_{name}"] = nanmean([stats.spearman(column(c), c["wealth"])
                                                  for c in trace["cross_sections"]])
    top_shares = []
    for section in trace["cross_sections"]:
        if section["step"] > steps - width:
            wealth = np.sort(section["wealth"])[::-1]
            top = max(1, int(round(TOP_SHARE * len(wealth))))
            top_shares.append(wealth[:top].sum() / max(wealth.sum(), 1e-300))
    summary["top_share_late"] = nanmean(top_shares)

    # Markets: do relative prices follow scarcity, and the seasons?
    correlation = stats.price_scarcity_correlation(trace["prices"], trace["totals"])
    summary["price_scarcity_spearman"] = finite(correlation["mean"])
    summary["price_scarcity_pooled"] = finite(correlation["pooled"])
    relative = metrics.relative_prices(trace["prices"])  # [T, R]
    summary["gini_price_imbalance_corr"] = finite(stats.spearman(relative.max(axis=1), trace["gini"]))
    if season.shape != (steps, config.num_jobs):
        raise ValueError(f"season: expected shape {(steps, config.num_jobs)} (steps, jobs), got {season.shape}")
    for j, job in enumerate(config.jobs):
        good = int(np.argmax(job.output))
        in_season = season[:, j] >= IN_SEASON
        summary[f"price_in_season_{goods[good]}"] = nanmean(relative[in_season, good])
        summary[f"price_out_of_season_{goods[good]}"] = nanmean(relative[~in_season, good])

    # Private signals (docs/design.md section 11): is the structure used, late in the rollout?
    if "listeners_on_boom" in trace:
        summary.update({f"{key}_late": value for key, value in scout_outcome(trace, late).items()})

    # Population.
    for key in ("births", "deaths_age", "deaths_starvation"):
        summary[f"{key}_total"] = int(trace[key].sum())
    return summary


def interval(values) -> dict:
    """{"mean", "ci95"} of samples over seeds; a half-width that is float noise around equal samples is 0."""
    return _rounded(*stats.mean_ci95(np.asarray(values, dtype=np.float64)))


def _rounded(mean: float, half_width: float) -> dict:
    """{"mean", "ci95"}, JSON-safe; a half-width within float noise of 0 (equal samples) becomes 0."""
    if math.isfinite(half_width) and half_width <= 1e-12 * max(1.0, abs(mean)):
        half_width = 0.0
    return {"mean": finite(mean), "ci95": finite(half_width)}


def summarise_seeds(per_seed: list[dict]) -> dict:
    """name -> {"mean", "ci95"} over seeds (ci95 None with one seed); None-valued seeds are skipped."""
    summary = {}
    for key in per_seed[0]:
        values = [s[key] for s in per_seed if s.get(key) is not None]
        if not values:
            summary[key] = {"mean": None, "ci95": None, "seeds": 0}
            continue
        summary[key] = {**interval(values), "seeds": len(values)}
    return summary


def genealogy(trace: dict, goods: list[str]) -> tuple[dict, list[dict]]:
    """Lineage summary for metrics.json and one row per agent for genealogy.csv."""
    agents, alive = trace["agents"], set(trace["alive_at_end"])
    born = {a: r["parents"] for a, r in agents.items() if not r["initial"]}
    causes = {a: r["death_cause"] for a, r in agents.items() if r["death_cause"]}
    life = graphs.lifecycle_stats(born, causes, alive)
    family = graphs.genealogy_graph(born, agents)  # parent -> child
    count_descendants = len(agents) <= MAX_GENEALOGY_FOR_DESCENDANTS
    descendants, living = graphs.descendant_counts(family, alive) if count_descendants else ({}, {})
    rows = []
    for agent in sorted(agents):
        record = agents[agent]
        parents = list(record["parents"]) + [None, None]
        rows.append({
            "agent": f"agent_{agent}", "parent_1": "" if parents[0] is None else f"agent_{parents[0]}",
            "parent_2": "" if parents[1] is None else f"agent_{parents[1]}", "generation": record["generation"],
            "birth_step": record["birth_step"],
            "death_step": "" if record["death_step"] is None else record["death_step"],
            "death_cause": record["death_cause"], "slot": record["slot"],
            **{f"taste_{good}": round(w, 6) for good, w in zip(goods, record["tastes"])},
            "lifetime_reward": round(trace["lifetime_reward"].get(agent, 0.0), 6), "children": family.out_degree(agent),
            "descendants": descendants.get(agent, ""), "living_descendants": living.get(agent, "")})
    initial = [a for a, r in agents.items() if r["initial"]]
    surviving = sum(1 for a in initial if a in alive or living[a]) if count_descendants else None
    prolific = sorted((r for r in rows if r["children"]), key=lambda r: (-(r["descendants"] or 0), -r["children"]))[:5]
    summary = {
        "agents": len(agents), "initial_population": len(initial), "births": life["births"],
        "founder_births": life["founder_births"], "deaths": life["deaths"], "deaths_age": life["deaths_age"],
        "deaths_starvation": life["deaths_starvation"], "lineage_depth": life["lineage_depth"],
        "mean_generation_alive": life["mean_generation"], "max_generation_alive": life["max_generation"],
        "founder_lineages_surviving": surviving,
        "most_prolific": [{k: r[k] for k in ("agent", "generation", "birth_step", "children", "descendants",
                                             "living_descendants")} for r in prolific]}
    return summary, rows


def ablation_outcome(trace: dict, num_jobs: int) -> dict:
    """The four outcome measures (MEASURES) of one frozen evaluation rollout."""
    steps = len(trace["reward"])
    index, _ = specialization(trace, num_jobs, slice(0, steps))
    return {"mean_reward": float(trace["reward"].mean()), "gini": float(trace["gini"].mean()),
            "specialization": float(index), "trade_volume": float(trace["trade_volume"].mean())}


SCOUT_MEASURES = ("attention_on_scouts", "listeners_on_boom")  # private signals only (diagnostics.scouts)


def scout_outcome(trace: dict, window: Optional[slice] = None) -> dict:
    """A private-signals trace's SCOUT_MEASURES over a window of steps (default all): listeners' attention on
    scouts over the scouts' share of their live peers, pooled over the window (1 = uniform; None without
    attention), and the mean share of listeners working the boom job."""
    window = slice(None) if window is None else window
    return {"attention_on_scouts": finite(scouts.ratio(trace["scout_attention_mass"][window],
                                                       trace["scout_share"][window])),
            "listeners_on_boom": nanmean(trace["listeners_on_boom"][window])}


def compare(arms: dict[str, list[dict]], first: str, second: str) -> dict:
    """Arms' per-seed outcomes -> mean and 95% CI per arm, the paired difference (first - second), a verdict."""
    result = {"arms": {}, "difference": {}, "verdict": {}, "first": first, "second": second}
    for name, outcomes in arms.items():
        result["arms"][name] = {}
        for measure in MEASURES:
            values = [o[measure] for o in outcomes]
            result["arms"][name][measure] = {**interval(values), "per_seed": [finite(v) for v in values]}
    for measure in MEASURES:
        difference = _rounded(*stats.paired_difference([a[measure] for a in arms[first]],
                                                       [b[measure] for b in arms[second]]))
        result["difference"][measure] = difference
        significant = difference["ci95"] is not None and abs(difference["mean"]) > difference["ci95"]
        result["verdict"][measure] = ("higher" if difference["mean"] > 0 else "lower") if significant \
            else "no significant difference"
    return result


def to_json(value):
    """metrics.json-safe values: numpy scalars and arrays to Python, nan/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return finite(value)
    return value
