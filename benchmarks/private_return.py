"""How much of the value of one more unit of output does its maker keep after the market? (issue 16)

    python benchmarks/private_return.py --scenario supply_chain --learner scripted_chain --steps 400

The market (docs/design.md section 4) maximises the summed utility of all agents, bounded below by each
agent's utility of its own holdings (individual rationality, IR). Whatever an agent brings beyond what its
IR floor needs goes to whoever the sum favours. This measures how much that is: a policy drives the economy,
and every `--every` steps each agent in turn is given `--delta` more of the good its job makes, on top of
that step's pre-trade holdings; the market is cleared again (warm-started from the step's solution), and the
change in the maker's utility is set against the change in everyone's, both in the market's own utility
u_i(x) = sum_r w_ir log(1 + x_ir) with the step's normalised trade weights w. The ratio, summed over the
makers of a job, is that job's *share kept*: 1 when a maker keeps all the value it adds, 1 / N when the
market spreads it evenly. Also reported: the share of agents whose IR floor binds at the step's solution.

Why it matters: a learner paid its own reward sees only the kept share of what its production is worth.
Printed as a table per job (means over the measured steps); `--out` writes the rows as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from agents import make_learner
from homoecon_env.core import Economy
from homoecon_env.files import atomic_write_text
from homoecon_env.scenarios import SCENARIOS
from homoecon_env.trade import clear_market

IR_TOLERANCE = 1e-7  # an agent's IR floor binds when its utility is within this of its endowment's


def market_utility(weights: np.ndarray, bundle: np.ndarray) -> np.ndarray:
    """[N] u_i = sum_r w_ir log(1 + x_ir), the market's objective per agent."""
    return (weights * np.log1p(bundle)).sum(axis=1)


def value_kept(holdings: np.ndarray, weights: np.ndarray, goods: np.ndarray, delta: float,
               makers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """For each agent i in `makers` (default all): the market is cleared with `delta` more of good
    `goods[i]` in i's holdings. Returns (i's utility gain [M], everyone's summed gain [M], the share of agents
    whose IR floor binds at the unperturbed solution)."""
    holdings = np.asarray(holdings, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    makers = np.arange(holdings.shape[0]) if makers is None else np.asarray(makers)
    base = clear_market(holdings, weights)
    before = market_utility(weights, np.asarray(base.allocation))
    binding = float(np.mean(before - market_utility(weights, holdings) < IR_TOLERANCE))
    own, total = np.empty(len(makers)), np.empty(len(makers))
    for k, i in enumerate(makers):
        more = holdings.copy()
        more[i, goods[i]] += delta
        gain = market_utility(weights, np.asarray(clear_market(more, weights, warm_start=base).allocation)) - before
        own[k], total[k] = gain[i], gain.sum()
    return own, total, binding


def measure(args) -> list[dict]:
    """Drive the economy with the policy; one row per job (and one for all) with the means over the
    measured steps."""
    config = SCENARIOS[args.scenario]().replace(max_age=args.max_age, max_steps=args.steps)
    if args.num_agents:
        config = config.replace(num_agents=args.num_agents)
    learner = make_learner(args.learner, config)
    economy = Economy(config)
    observation = economy.reset(seed=args.seed)
    product = np.array([np.argmax(job.output) for job in config.jobs])  # the good each job makes
    own_sum, total_sum = np.zeros(config.num_jobs), np.zeros(config.num_jobs)
    makers, binding = np.zeros(config.num_jobs), []
    for step in range(1, args.steps + 1):
        actions = learner.act(observation)
        out = economy.step(actions)
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
        if step % args.every:
            continue
        job = actions.job.numpy()
        weights = Economy.normalised_trade_weights(actions.trade_weights.numpy().astype(np.float64))
        own, total, bound = value_kept(out.pre_trade.numpy(), weights, product[job], args.delta)
        binding.append(bound)
        np.add.at(own_sum, job, own)
        np.add.at(total_sum, job, total)
        np.add.at(makers, job, 1)
    measured = len(binding)
    rows = [{"job": config.jobs[j].name, "makers_per_step": makers[j] / measured,
             "own_gain": own_sum[j] / max(makers[j], 1), "total_gain": total_sum[j] / max(makers[j], 1),
             "share_kept": own_sum[j] / total_sum[j] if total_sum[j] > 0 else float("nan")}
            for j in range(config.num_jobs)]
    rows.append({"job": "all", "makers_per_step": makers.sum() / measured,
                 "own_gain": own_sum.sum() / makers.sum(), "total_gain": total_sum.sum() / makers.sum(),
                 "share_kept": own_sum.sum() / total_sum.sum(), "ir_binding_share": float(np.mean(binding))})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="supply_chain", choices=sorted(SCENARIOS))
    parser.add_argument("--learner", default="scripted_chain", help="the policy driving the economy")
    parser.add_argument("--num-agents", type=int, default=None, help="default: the scenario's")
    parser.add_argument("--max-age", type=int, default=100_000, help="lifespan (default: nobody dies)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=100, help="measure every this many steps")
    parser.add_argument("--delta", type=float, default=0.1, help="extra output given to one maker")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if not (1 <= args.every <= args.steps) or not args.delta > 0:
        parser.error("--every must be in [1, --steps] and --delta > 0")
    rows = measure(args)
    print(f"{args.scenario}, {args.learner}, seed {args.seed}: share of one more unit's market value its maker keeps")
    print("| job | makers/step | maker's gain | everyone's gain | share kept |\n|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['job']} | {row['makers_per_step']:.1f} | {row['own_gain']:.5f} | {row['total_gain']:.5f} "
              f"| {row['share_kept']:.3f} |")
    print(f"IR floor binding for {rows[-1]['ir_binding_share']:.0%} of agents")
    if args.out:
        atomic_write_text(args.out, json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
