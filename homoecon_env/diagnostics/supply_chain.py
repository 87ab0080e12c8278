"""Supply chains (docs/design.md section 9): layers of goods, a balanced plan, and what a rollout did along the chain.

Arrays in, numbers and figures out (a leaf, like the rest of diagnostics). A job table is two arrays,
``output`` and ``inputs`` [J, R] (goods per unit of effort; `homoecon_env.core.production.JobTable`).

- `good_layers`: each good's layer, 0 for raw goods (made by a job needing nothing), else one more than
  the deepest input of the job that makes it; final goods are made but are no job's input.
- `balanced_plan`: the shares of labour per job that make the final goods in given proportions while
  every intermediate is made exactly as fast as it is used (the scripted chain policy's plan).
- `ChainRecorder`: what a rollout did along the chain, step by step (evaluate.py records it for every
  rollout of an economy whose jobs use inputs); `summarise_chain` turns it into the numbers of
  metrics.json's ``chain_*`` keys and report.md's supply-chain section (`report_section`).

Definitions used in the report:
- output per layer: goods made per step, summed over the goods of each layer;
- value added of a processed good g made by job j, per unit of g at the step's market prices p (relative,
  sum 1): p_g - (p . inputs_j) / output_jg, the good's price minus the market cost of the inputs that
  make one unit of it (at the recipe's peak output);
- bottleneck: effort a worker wanted (chosen effort after the age cap) but could not spend because it
  lacked inputs, as a share of the effort its job's workers wanted; the binding input is the one with
  the smallest held / needed ratio.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from homoecon_env.diagnostics import analysis


def good_layers(output: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """[R] int layer of each good: 0 raw, 1 + the deepest input of its makers otherwise, -1 when no job
    makes it (or it sits on a cycle). A good made by several jobs takes the shallowest recipe."""
    num_goods = output.shape[1]
    layer = np.full(num_goods, -1, dtype=np.int64)
    for _ in range(num_goods + 1):  # a DAG of R goods settles within R rounds
        changed = False
        for job in range(output.shape[0]):
            needed = np.flatnonzero(inputs[job] > 0)
            if needed.size and (layer[needed] < 0).any():
                continue
            depth = 0 if not needed.size else 1 + int(layer[needed].max())
            for good in np.flatnonzero(output[job] > 0):
                if layer[good] < 0 or depth < layer[good]:
                    layer[good], changed = depth, True
        if not changed:
            break
    return layer


def final_goods(output: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """[R] bool: goods some job makes and no job uses."""
    return (output > 0).any(axis=0) & ~(inputs > 0).any(axis=0)


def job_layers(output: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """[J] int layer of each job: the deepest layer among the goods it makes."""
    layers = good_layers(output, inputs)
    return np.array([int(layers[output[j] > 0].max(initial=-1)) for j in range(output.shape[0])])


def balanced_plan(output: np.ndarray, inputs: np.ndarray, final_demand: np.ndarray) -> np.ndarray:
    """[J] shares of labour (sum 1) that make the final goods in proportion to ``final_demand`` [R] while
    every intermediate and raw good is made exactly as fast as the recipes use it.

    Goods are visited from the deepest layer down; each is made by the first job that makes it (its
    main output is taken to be that good: output[j, r] per unit of effort) among those whose inputs can
    all be made, and its inputs add to the demand for shallower goods. ValueError when a demanded good
    cannot be made.
    """
    layers = good_layers(output, inputs)
    demand = np.asarray(final_demand, dtype=np.float64).copy()
    unmakeable = np.flatnonzero((demand > 0) & (layers < 0))
    if unmakeable.size:
        raise ValueError(f"good {int(unmakeable[0])} is demanded by the plan but no job makes it (from goods "
                         "that can be made)")
    effort = np.zeros(output.shape[0])
    for good in sorted(np.flatnonzero(layers >= 0).tolist(), key=lambda r: -layers[r]):
        if demand[good] <= 0:
            continue
        # the first job making it whose inputs are all makeable (one exists: the good has a layer)
        job = next(int(j) for j in np.flatnonzero(output[:, good] > 0) if (layers[inputs[j] > 0] >= 0).all())
        work = demand[good] / output[job, good]
        effort[job] += work
        demand += work * inputs[job]
    if effort.sum() <= 0:
        raise ValueError("the plan makes nothing: final_demand has no positive entry on a good some job makes")
    return effort / effort.sum()


def plan_assignment(shares: np.ndarray, num_slots: int) -> np.ndarray:
    """[N] job of each slot: slots 0..N-1 cut into consecutive blocks whose sizes follow ``shares`` [J]
    (largest remainders, so every job with a share of at least one slot gets one)."""
    exact = shares * num_slots
    counts = np.floor(exact).astype(np.int64)
    leftover = num_slots - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:leftover]] += 1
    return np.repeat(np.arange(len(shares)), counts)


LATE_FRACTION = analysis.EDGE_FRACTION  # "late": the last 20% of a rollout's steps, as in the rest of the report
MIN_LAYER_SHARE = 0.05  # a layer "employs" labour when it gets at least this share of the effort spent
MIN_TURNOVER = 0.5  # intermediates "go through the market" when this many units are traded per unit made


class ChainRecorder:
    """Per-step flows along the chain of one rollout (NumPy; one `record` call per step).

    ``output``, ``inputs`` [J, R]: the job table; ``steps``: the rollout's length.
    """

    def __init__(self, output: np.ndarray, inputs: np.ndarray, steps: int):
        self.output, self.inputs = np.asarray(output, dtype=np.float64), np.asarray(inputs, dtype=np.float64)
        num_jobs, num_goods = self.output.shape
        self.produced = np.zeros((steps, num_goods))  # [T, R] goods made
        self.used = np.zeros((steps, num_goods))  # [T, R] inputs used up
        self.traded = np.zeros((steps, num_goods))  # [T, R] half the absolute change in the market, per good
        self.consumed = np.zeros((steps, num_goods))  # [T, R]
        self.prices = np.zeros((steps, num_goods))  # [T, R] relative, sum 1
        self.spent = np.zeros((steps, num_jobs))  # [T, J] effort spent per job
        self.lost = np.zeros((steps, num_jobs))  # [T, J] effort wanted but not spent for lack of inputs
        self.job_made = np.zeros((num_jobs, num_goods))  # [J, R] goods made by each job over the rollout
        self.job_used = np.zeros((num_jobs, num_goods))  # [J, R] inputs used up by each job
        self.binding = np.zeros((num_jobs, num_goods))  # [J, R] effort lost, by the input that ran out
        self.steps_recorded = 0

    def record(self, t: int, holdings_before, job, wanted, spent, pre_trade, after_trade, consumed, prices) -> None:
        """Step t (1-based). ``holdings_before`` [N, R]: holdings the agents worked with; ``job`` [N];
        ``wanted`` [N] chosen effort after the age cap; ``spent`` [N] effort spent (after the input cap);
        ``pre_trade``, ``after_trade``, ``consumed`` [N, R]; ``prices`` [R]."""
        row = t - 1
        num_jobs = self.output.shape[0]
        used = spent[:, None] * self.inputs[job]  # [N, R]
        made = np.maximum(pre_trade - holdings_before + used, 0.0)  # [N, R] produced (rounding clamped)
        self.produced[row], self.used[row] = made.sum(axis=0), used.sum(axis=0)
        self.traded[row] = 0.5 * np.abs(after_trade - pre_trade).sum(axis=0)
        self.consumed[row], self.prices[row] = consumed.sum(axis=0), prices
        lost = np.maximum(wanted - spent, 0.0)  # [N]
        self.spent[row] = np.bincount(job, spent, minlength=num_jobs)
        self.lost[row] = np.bincount(job, lost, minlength=num_jobs)
        np.add.at(self.job_made, job, made)
        np.add.at(self.job_used, job, used)
        needed = self.inputs[job]  # [N, R]
        cover = np.where(needed > 0, holdings_before / np.maximum(needed, 1e-300), np.inf)
        short = (lost > 1e-12) & (needed > 0).any(axis=1)
        if short.any():
            np.add.at(self.binding, (job[short], cover[short].argmin(axis=1)), lost[short])
        self.steps_recorded = t

    def result(self) -> dict:
        """Plain arrays (picklable) for `summarise_chain` and the figures."""
        keep = slice(0, self.steps_recorded)
        return {"output": self.output, "inputs": self.inputs, "produced": self.produced[keep], "used": self.used[keep],
                "traded": self.traded[keep], "consumed": self.consumed[keep], "prices": self.prices[keep],
                "spent": self.spent[keep], "lost": self.lost[keep], "job_made": self.job_made,
                "job_used": self.job_used, "binding": self.binding}


def unit_input_cost(output: np.ndarray, inputs: np.ndarray, prices: np.ndarray) -> dict[int, np.ndarray]:
    """Processed good r -> [T] market cost of the inputs making one unit of it, (p . inputs_j) / output_jr,
    for the first job j that makes r from inputs; ``prices`` [T, R]."""
    cost = {}
    for good in range(output.shape[1]):
        makers = [j for j in np.flatnonzero(output[:, good] > 0) if (inputs[j] > 0).any()]
        if makers:
            job = makers[0]
            cost[good] = prices @ inputs[job] / output[job, good]
    return cost


def _mean(values) -> Optional[float]:
    values = np.asarray(values, dtype=np.float64)
    return analysis.finite(values.mean()) if values.size else None


def summarise_chain(chain: dict, jobs: np.ndarray, ids: np.ndarray, goods: list[str], job_names: list[str]) -> dict:
    """Flat name -> number of one rollout's chain (``chain``: `ChainRecorder.result`; ``jobs``, ``ids``
    [T, N] the trace's job choices and acting ids). Keys start with ``chain_``; "late" is the last 20%."""
    output, inputs = chain["output"], chain["inputs"]
    layers, final = good_layers(output, inputs), final_goods(output, inputs)
    job_layer = job_layers(output, inputs)
    steps = len(chain["produced"])
    late = analysis.edge_windows(steps)[1]
    s: dict[str, Optional[float]] = {}
    for layer in range(int(layers.max()) + 1):
        made = chain["produced"][:, layers == layer].sum(axis=1)
        s[f"chain_output_layer{layer}_all"], s[f"chain_output_layer{layer}_late"] = _mean(made), _mean(made[late])
        spent = chain["spent"][late][:, job_layer == layer].sum()
        s[f"chain_effort_share_layer{layer}_late"] = analysis.finite(spent / max(chain["spent"][late].sum(), 1e-300))
    s["chain_final_produced_late"] = _mean(chain["produced"][late][:, final].sum(axis=1))
    s["chain_final_traded_late"] = _mean(chain["traded"][late][:, final].sum(axis=1))
    s["chain_final_consumed_late"] = _mean(chain["consumed"][late][:, final].sum(axis=1))
    middle = (layers > 0) & ~final
    made_middle = chain["produced"][late][:, middle].sum()
    s["chain_intermediate_turnover_late"] = (analysis.finite(chain["traded"][late][:, middle].sum() / made_middle)
                                            if made_middle > 0 else None)
    # Division of labour along the chain: do agents stick to a layer, and does the layer depend on the agent?
    layer_trace = {"jobs": job_layer[jobs], "ids": ids}
    num_layers = int(job_layer.max()) + 1
    s["chain_layer_specialization_late"], s["chain_layer_division_late"] = analysis.specialization(
        layer_trace, num_layers, late)
    shares = [s[f"chain_effort_share_layer{layer}_late"] or 0.0 for layer in range(num_layers)]
    s["chain_min_layer_share_late"] = float(min(shares))
    # Value added of every processed good at market prices, per unit.
    for good, cost in unit_input_cost(output, inputs, chain["prices"]).items():
        price = chain["prices"][:, good]
        name = goods[good]
        s[f"chain_price_{name}"] = _mean(price)
        s[f"chain_input_cost_{name}"] = _mean(cost)
        s[f"chain_value_added_{name}"] = _mean(price - cost)
        s[f"chain_value_added_positive_share_{name}"] = _mean(price > cost)
    # Bottlenecks: the share of wanted effort lost for lack of inputs, per job that needs inputs.
    wanted = chain["spent"].sum(axis=0) + chain["lost"].sum(axis=0)  # [J]
    for j, name in enumerate(job_names):
        if (inputs[j] > 0).any():
            s[f"chain_lost_effort_share_{name}"] = analysis.finite(chain["lost"][:, j].sum() / wanted[j]) \
                if wanted[j] > 0 else None
    return s


def bottleneck(chain: dict, goods: list[str], job_names: list[str]) -> dict:
    """The job losing the largest share of its wanted effort for lack of inputs, and the input that ran out
    most often there (by effort lost); {} when no job lost effort."""
    wanted = chain["spent"].sum(axis=0) + chain["lost"].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(wanted > 0, chain["lost"].sum(axis=0) / np.maximum(wanted, 1e-300), 0.0)
    share[~(chain["inputs"] > 0).any(axis=1)] = 0.0
    if share.max(initial=0.0) <= 0:
        return {}
    job = int(share.argmax())
    return {"job": job_names[job], "lost_share": float(share[job]), "input": goods[int(chain["binding"][job].argmax())],
            "lost_by_input": {goods[r]: float(v) for r, v in enumerate(chain["binding"][job]) if v > 0}}


def rollout_outcome(trace: dict, goods: list[str], job_names: list[str]) -> dict:
    """`summarise_chain` of a rollout's trace plus its mean reward (``chain_mean_reward``)."""
    outcome = summarise_chain(trace["chain"], trace["jobs"], trace["ids"], goods, job_names)
    outcome["chain_mean_reward"] = _mean(trace["reward"])
    return outcome


def verdicts(summary: dict, goods: list[str]) -> dict:
    """Answers to the report's two questions from the over-seeds summary (name -> {"mean", "ci95"}).

    Division of labour along the chain: every layer gets at least MIN_LAYER_SHARE of the effort late,
    final goods are made, and intermediates are traded at least MIN_TURNOVER units per unit made.
    Value added, per processed good: "yes" when the mean of price - input cost is positive with a
    confidence interval excluding zero, "negative" when it is negative so, else "not significant"
    ("n/a" when never measured)."""
    mean = lambda key: (summary.get(key) or {}).get("mean")  # noqa: E731
    turnover = mean("chain_intermediate_turnover_late")
    division = bool((mean("chain_min_layer_share_late") or 0.0) >= MIN_LAYER_SHARE
                    and (mean("chain_final_produced_late") or 0.0) > 0
                    and turnover is not None and turnover >= MIN_TURNOVER)
    added = {}
    for good in goods:
        stat = summary.get(f"chain_value_added_{good}")
        if stat is None:
            continue
        if stat["mean"] is None:
            added[good] = "n/a"
        elif stat["ci95"] is not None and abs(stat["mean"]) > stat["ci95"]:
            added[good] = "yes" if stat["mean"] > 0 else "negative"
        else:
            added[good] = "not significant"
    return {"division_of_labour": division, "value_added": added}


__all__ = ["ChainRecorder", "balanced_plan", "bottleneck", "final_goods", "good_layers", "job_layers",
           "plan_assignment", "report_section", "rollout_outcome", "summarise_chain", "unit_input_cost", "verdicts"]


def report_section(m: dict) -> list[str]:
    """report.md's "Supply chain" section from the metrics dict (every number read from it); [] when the
    evaluated economy has no input-using jobs."""
    from homoecon_env.diagnostics.report import number, with_ci  # report imports nothing from here
    chain = m.get("supply_chain")
    if not chain:
        return []
    s, goods, figures = m["main"]["summary"], m["meta"]["resources"], m["figures"]
    mean = lambda key: with_ci(s[key]) if key in s else "n/a"  # noqa: E731
    layers = chain["layers"]
    depth = max(layers.values()) + 1
    names = {layer: ", ".join(g for g in goods if layers[g] == layer) for layer in range(depth)}
    lines = ["## Supply chain", "",
             "Goods by layer (0 = raw, made from nothing; each further layer is made from the one before): "
             + "; ".join(f"layer {k}: {names[k]}" for k in range(depth))
             + f". Final goods (made, never an input): {', '.join(chain['final_goods'])}. \"Late\" is the last "
             f"{number(m['meta']['early_steps'])} steps.", "",
             "| layer | goods made per step (whole rollout) | late | share of effort late |", "|---|---|---|---|"]
    lines += [f"| {k} ({names[k]}) | {mean(f'chain_output_layer{k}_all')} | {mean(f'chain_output_layer{k}_late')} | "
              f"{mean(f'chain_effort_share_layer{k}_late')} |" for k in range(depth)]
    verdict = chain["verdicts"]
    lines += ["", f"Final goods late: {mean('chain_final_produced_late')} made per step, "
              f"{mean('chain_final_traded_late')} traded, {mean('chain_final_consumed_late')} eaten.", "",
              "**Does a division of labour along the chain emerge?** "
              + ("Yes" if verdict["division_of_labour"] else "No")
              + f": the least-staffed layer gets {mean('chain_min_layer_share_late')} of the effort late (a layer "
              f"counts as staffed from {number(chain['min_layer_share'])}), "
              f"{mean('chain_intermediate_turnover_late')} units of intermediates change hands in the market per "
              f"unit made (the chain runs through the market from {number(chain['min_turnover'])}), and agents' "
              f"consistency of layer over their lives is {mean('chain_layer_specialization_late')} "
              f"(mutual information of agent and layer, normalised: {mean('chain_layer_division_late')}).", "",
              "Value added at market prices: a processed good's relative price against the market cost of the "
              "inputs that make one unit of it (means over steps).", "",
              "| good | price | input cost | value added | share of steps above cost | value added? |",
              "|---|---|---|---|---|---|"]
    for good, answer in verdict["value_added"].items():
        lines.append(f"| {good} | {mean(f'chain_price_{good}')} | {mean(f'chain_input_cost_{good}')} | "
                     f"{mean(f'chain_value_added_{good}')} | {mean(f'chain_value_added_positive_share_{good}')} | "
                     f"{answer} |")
    carried = [g for g, a in verdict["value_added"].items() if a == "yes"]
    lines += ["", "**Do prices carry value added?** "
              + (f"For {', '.join(carried)} (of {len(verdict['value_added'])} processed goods): their prices exceed "
                 "the cost of their inputs with a confidence interval excluding zero." if carried else
                 "No: no processed good's price exceeds the cost of its inputs significantly."), ""]
    neck = chain["bottleneck"]
    if neck:
        lines += [f"Bottleneck (first rollout): `{neck['job']}` lost a share {number(neck['lost_share'])} of the "
                  f"effort its workers wanted for lack of inputs, mostly {neck['input']}. Per input-using job, the "
                  "share lost (all rollouts): " + ", ".join(
                      f"{key[len('chain_lost_effort_share_'):]} {mean(key)}" for key in s
                      if key.startswith("chain_lost_effort_share_")) + ".", ""]
    else:
        lines += ["No input-using job lost effort for lack of inputs in the first rollout.", ""]
    references = chain["references"]
    if references:
        lines += ["The evaluated learner against reference policies on the same economy seeds "
                  f"({chain['reference_note']}):",
                  "", "| policy | mean reward | final goods made per step (late) | traded (late) | "
                  "least-staffed layer's share of effort (late) |", "|---|---|---|---|---|"]
        for policy, summary in references.items():
            lines.append(f"| `{policy}` | {with_ci(summary['chain_mean_reward'])} | "
                         f"{with_ci(summary['chain_final_produced_late'])} | "
                         f"{with_ci(summary['chain_final_traded_late'])} | "
                         f"{with_ci(summary['chain_min_layer_share_late'])} |")
        lines.append("")
    for key, label in (("chain_output", "output per layer"), ("chain_flow", "flow of goods"),
                       ("chain_value_added", "value added"), ("chain_bottlenecks", "bottlenecks")):
        lines += [f"![{label}]({figures[key]})", ""]
    return lines
