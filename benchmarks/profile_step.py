"""Where a step's time goes: a cProfile of one workload of bench.py, the project's functions only.

    python benchmarks/profile_step.py                          # the dict API at N = 50
    python benchmarks/profile_step.py --workload train --num-agents 1000 --steps 200
    python benchmarks/profile_step.py --workload train --num-agents 10000 --steps 10 --world 10 10

Prints, for the project's functions (homoecon_env, agents), the time per step spent inside each
(cumulative, callees included) and its share of the step. cProfile's own overhead inflates every
figure by up to about 2x at N = 50, so read the shares; bench.py gives the true steps/s.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import WORKLOADS, make_step  # noqa: E402  (the benchmark's own workloads)

PROJECT = (f"{os.sep}homoecon_env{os.sep}", f"{os.sep}agents{os.sep}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="dict", choices=WORKLOADS)
    parser.add_argument("--num-agents", type=int, default=50)
    parser.add_argument("--steps", type=int, default=1000, help="steps profiled (after 20 warm-up steps)")
    parser.add_argument("--top", type=int, default=25, help="rows printed")
    parser.add_argument("--world", type=int, nargs=2, default=[1, 1], metavar=("W", "H"),
                        help="a world of W x H regions (bench.py --world)")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1 if args.num_agents <= 1000 else os.cpu_count())
    step = make_step(args.workload, args.num_agents, tuple(args.world))
    for _ in range(20):
        step()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(args.steps):
        step()
    profile.disable()
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, primitive calls, own, cumulative, callers)
    total = max(cumulative for _, _, _, cumulative, _ in stats.values())  # the workload's step function
    rows = sorted(((cumulative, calls, f"{os.path.basename(path)}:{name}")
                   for (path, _, name), (calls, _, _, cumulative, _) in stats.items()
                   if any(part in path for part in PROJECT)), reverse=True)
    print(f"{args.workload} at N = {args.num_agents}: {1e3 * total / args.steps:.3f} ms per step under cProfile\n")
    print("| function | calls per step | ms per step (cumulative) | share |\n|---|---:|---:|---:|")
    for cumulative, calls, where in rows[:args.top]:
        print(f"| {where} | {calls / args.steps:.1f} | {1e3 * cumulative / args.steps:.3f} | "
              f"{cumulative / total:.0%} |")


if __name__ == "__main__":
    main()
