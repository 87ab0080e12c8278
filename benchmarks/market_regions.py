"""Benchmark grouped market clearing (issue 17): one batched solve of G regional markets.

    python benchmarks/market_regions.py [--agents 10000] [--goods 2] [--groups 1 100] [--repeats 7]
                                        [--large 100000] [--out benchmarks/results/market_regions.json]

Markets as in benchmarks/bench_trade.py (holdings exponential, scaled per agent; weights uniform on
the simplex; fixed seed), agents assigned to groups uniformly at random. Rows, each the median of
``--repeats`` calls (one at ``--large`` agents):

- plain: ``clear_market(holdings, weights)``, one market of all agents (the G = 1 reference);
- grouped: ``clear_market(..., groups=g, num_groups=G)``, the batched solve;
- one by one: the plain solver called per group in a Python loop (``grouped.solve_groups_one_by_one``),
  what the batched solve replaces;
- warm: the grouped call on holdings perturbed by up to 10%, started from the previous result.

Newton updates, KKT residual and conservation/IR figures are reported beside the times. Prints a
markdown table and, with ``--out``, writes JSON (atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from homoecon_env.files import atomic_write_text
from homoecon_env.trade import clear_market
from homoecon_env.trade.grouped import solve_groups_one_by_one


def make_market(num_agents: int, num_goods: int, num_groups: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    holdings = rng.exponential(1.0, (num_agents, num_goods)) * rng.uniform(0.0, 3.0, (num_agents, 1))
    weights = rng.dirichlet(np.ones(num_goods), num_agents)
    groups = rng.integers(0, num_groups, num_agents)
    return holdings, weights, groups


def timed(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(num_agents: int, num_goods: int, num_groups: int, repeats: int, one_by_one: bool) -> list:
    holdings, weights, groups = make_market(num_agents, num_goods, num_groups)
    h, w, g = torch.tensor(holdings), torch.tensor(weights), torch.tensor(groups)
    rows = []

    def row(label, seconds, result=None):
        rows.append({"agents": num_agents, "goods": num_goods, "groups": num_groups, "row": label,
                     "seconds": seconds,
                     "newton_updates": None if result is None else result.init_iterations or result.iterations,
                     "converged": None if result is None else result.converged,
                     "kkt_residual": None if result is None else result.kkt_residual,
                     "conservation_error": None if result is None else result.conservation_error,
                     "ir_violation": None if result is None else result.ir_violation})

    if num_groups == 1:
        row("plain", *timed(lambda: clear_market(h, w), repeats))
    seconds, grouped = timed(lambda: clear_market(h, w, groups=g, num_groups=num_groups), repeats)
    row("grouped", seconds, grouped)
    nearby = h * torch.tensor(np.random.default_rng(1).uniform(0.9, 1.1, holdings.shape))
    row("grouped, warm", *timed(lambda: clear_market(nearby, w, groups=g, num_groups=num_groups, warm_start=grouped),
                                repeats))
    if one_by_one:
        e, wt = np.ascontiguousarray(holdings.T), np.ascontiguousarray(weights.T)
        seconds, _ = timed(lambda: solve_groups_one_by_one(e, wt, groups, num_groups, "pgd", 1e-9, None, None, None),
                           max(1, repeats // 3))
        row("one by one (loop)", seconds)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--goods", type=int, default=2)
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--large", type=int, default=100_000, help="also time this many agents in the largest "
                        "group count, once (0: skip)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for num_groups in args.groups:
        rows += measure(args.agents, args.goods, num_groups, args.repeats, one_by_one=num_groups > 1)
    if args.large:
        rows += measure(args.large, args.goods, max(args.groups), 1, one_by_one=False)
    print("| agents | goods | groups | row | seconds | Newton updates | converged | KKT | conservation | IR |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        figures = [r["newton_updates"], r["converged"], r["kkt_residual"], r["conservation_error"], r["ir_violation"]]
        text = ["" if v is None else (f"{v:.1e}" if isinstance(v, float) else str(v)) for v in figures]
        print(f"| {r['agents']} | {r['goods']} | {r['groups']} | {r['row']} | {r['seconds']:.4f} | " + " | ".join(text)
              + " |")
    if args.out:
        meta = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
        atomic_write_text(args.out, json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
