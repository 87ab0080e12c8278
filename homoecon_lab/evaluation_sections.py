"""metrics.json's entries beyond the main summary, from the rollouts' traces: inheritance (lineages,
dialects, the inheritance ablation), positive_control (scout measures), space (the migration-cost sweep)
and supply_chain (layers, bottleneck, reference policies); and the seasons the main summary reads.

Traces are found by the task keys `homoecon_lab.evaluation_plan` gave them. Numbers only: no files.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from homoecon_env.config import EconomyConfig
from homoecon_env.core.production import JobTable, seasonal_factor
from homoecon_env.diagnostics import analysis, lineage, space, supply_chain
from homoecon_lab.evaluation_plan import CHAIN_REFERENCES, INHERITANCE_ARMS, POSITIVE_CONTROL_ARMS, space_sweep_keys

if TYPE_CHECKING:  # evaluation imports this module; the names serve the annotations only
    from homoecon_lab.evaluation import Args, Source

DIALECT_KEYS = ("dialect_observed_mean", "dialect_shuffled_mean", "dialect_excess_mean", "family_dialect_observed_mean",
                "family_dialect_shuffled_mean", "family_dialect_excess_mean", "lineages_alive_end")


def _over_seeds(values: list) -> dict:
    """{"mean", "ci95", "per_seed"} over the seeds with a value (None: undefined there)."""
    defined = [v for v in values if v is not None]
    return {**(analysis.interval(defined) if defined else {"mean": None, "ci95": None}), "per_seed": values}


def inheritance_results(traces: list[dict], outcomes: Optional[dict], stems: dict,
                        results: Optional[dict] = None, seeds: int = 0) -> dict:
    """metrics.json's "inheritance": the main rollouts' lineages and message dialects (diagnostics.lineage;
    per seed, and means with 95% CIs over seeds), and the ablation across inheritance modes: every arm's
    outcomes with CIs, cultural and none each against genetic (paired by seed), and each arm's lineages
    and dialects over its frozen rollouts (from ``results``, the ablation traces, ``seeds`` per arm)."""
    per_seed = [lineage.lineage_summary(trace)[0] for trace in traces]
    result = {"lineage": {"summary": analysis.summarise_seeds(
        [{k: v for k, v in seed.items() if k != "largest_lineage"} for seed in per_seed]), "per_seed": per_seed},
        "ablation": {}}
    if outcomes is None:
        return result
    arms = {mode: outcomes[f"inheritance_{mode}"] for mode in INHERITANCE_ARMS}
    versus = {mode: analysis.compare(arms, mode, "genetic") for mode in INHERITANCE_ARMS[1:]}
    result["ablation"] = {"learner": stems["inheritance_genetic"][1], "arms": versus["cultural"]["arms"],
                          "versus_genetic": {mode: {key: versus[mode][key] for key in ("difference", "verdict")}
                                             for mode in versus}, "dialects": {}}
    for mode in INHERITANCE_ARMS:
        summaries = [lineage.lineage_summary(results[stems[f"inheritance_{mode}"] + (i,)])[0] for i in range(seeds)]
        result["ablation"]["dialects"][mode] = {key: _over_seeds([s[key] for s in summaries]) for key in DIALECT_KEYS}
    return result


SCOUT_ARMS = ("learned", "uniform", "trained", *POSITIVE_CONTROL_ARMS)  # arms whose scout measures are reported


def scout_results(summary: dict, results: dict, stems: dict, seeds: int, num_jobs: int) -> dict:
    """metrics.json's "positive_control" (economies with private signals): whether the structure is used
    (analysis.SCOUT_MEASURES), in the main rollouts' late window (means and 95% CIs over seeds) and in every
    SCOUT_ARMS ablation arm's frozen rollouts, with the paired learned - uniform difference."""
    result = {"main": {f"{key}_late": summary[f"{key}_late"] for key in analysis.SCOUT_MEASURES}, "arms": {},
              "chance_on_boom": 1.0 / num_jobs}
    if not stems:
        return result
    arms = [arm for arm in SCOUT_ARMS if arm in stems and (arm != "trained" or stems[arm] != stems["learned"])]
    for arm in arms:
        outcomes = [analysis.scout_outcome(results[stems[arm] + (i,)]) for i in range(seeds)]
        result["arms"][arm] = {key: _over_seeds([o[key] for o in outcomes]) for key in analysis.SCOUT_MEASURES}
    result["learned_minus_uniform"] = {}
    if not {"learned", "uniform"} <= set(result["arms"]):  # the social filter ablation was not chosen
        return result
    for key in analysis.SCOUT_MEASURES:
        learned, uniform = (result["arms"][arm][key]["per_seed"] for arm in ("learned", "uniform"))
        pairs = [(a, b) for a, b in zip(learned, uniform) if a is not None and b is not None]
        result["learned_minus_uniform"][key] = (
            analysis.interval([a - b for a, b in pairs]) if len(pairs) >= 2
            else {"mean": None, "ci95": None})
    return result



def space_results(args: Args, source: Source, results: dict) -> dict:
    """metrics.json's "space" entry: the world, the sweep of migration costs (diagnostics.space.sweep_results)."""
    config = source.economy
    result = {"width": config.world_width, "height": config.world_height, "migration_cost": config.migration_cost,
              "peer_radius": config.peer_radius, "carrying_capacity": config.carrying_capacity,
              "map_good": config.resources[0], "trend_steps": space.TREND_STEPS, "min_market": space.MIN_MARKET,
              "sweep_seeds": args.seeds, "sweep_steps": args.steps, "sweep_learn": args.learn}
    outcomes: dict[float, list] = {}
    for key, cost, _ in space_sweep_keys(args, source):
        outcomes.setdefault(cost, []).append(space.dispersion_outcome(results[key]))
    result["sweep"] = space.sweep_results(outcomes) if outcomes else None
    return result


def seasons(config: EconomyConfig, steps: int) -> np.ndarray:
    """[T, J] every job's seasonal factor at the production of steps 1..T (step t+1 is produced at t)."""
    table = JobTable.from_config(config)
    return np.stack([seasonal_factor(table, t) for t in range(steps)])


def chain_results(args: Args, source: Source, traces: list, results: dict, summary: dict) -> dict:
    """metrics.json's "supply_chain" entry: layers, the answers, the first rollout's bottleneck, and the
    evaluated learner beside the reference policies (CHAIN_REFERENCES) over the same economy seeds."""
    config = source.economy
    goods, job_names = list(config.resources), [job.name for job in config.jobs]
    table = JobTable.from_config(config)
    layers = supply_chain.good_layers(table.output, table.inputs)
    final = supply_chain.final_goods(table.output, table.inputs)
    evaluated = "run" if source.run_dir else source.learner_name
    own = {key: value for key, value in summary.items() if key.startswith("chain_")}
    references = {f"{source.learner_name} (evaluated)": own}
    for learner in CHAIN_REFERENCES:
        if learner != evaluated:
            references[learner] = analysis.summarise_seeds([
                supply_chain.rollout_outcome(results[("reference", learner, k)], goods, job_names)
                for k in range(args.seeds)])
    return {"layers": dict(zip(goods, layers.tolist())), "final_goods": [g for g, f in zip(goods, final) if f],
            "job_layers": dict(zip(job_names, supply_chain.job_layers(table.output, table.inputs).tolist())),
            "verdicts": supply_chain.verdicts(summary, goods),
            "bottleneck": supply_chain.bottleneck(traces[0]["chain"], goods, job_names),
            "min_layer_share": supply_chain.MIN_LAYER_SHARE, "min_turnover": supply_chain.MIN_TURNOVER,
            "references": references,
            "reference_note": "references never learn; the evaluated learner " + ("kept learning" if args.learn
                                                                                  else "was frozen")}

