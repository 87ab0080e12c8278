"""Where a step's time goes: a cProfile of one workload of bench.py, the project's functions only.

    python benchmarks/profile_step.py                          # the dict API at N = 50
    python benchmarks/profile_step.py --workload train --num-agents 1000 --steps 200
    python benchmarks/profile_step.py --workload train --num-agents 10000 --steps 10 --world 10 10
    python benchmarks/profile_step.py --workload core --num-agents 1000000 --steps 3 --stages
    python benchmarks/profile_step.py --workload core --num-agents 1000000 --steps 3 --stages --threads 1

Prints, for the project's functions (homoecon_env, agents), the time per step spent inside each
(cumulative, callees included) and its share of the step. cProfile's own overhead inflates every
figure by up to about 2x at N = 50, so read the shares; bench.py gives the true steps/s.
`--stages` times the economy's stages instead (wall and CPU time and minor page faults per step, no
profiler: the figures to read at large N, where a wall time well above the CPU time means a busy
machine, and many page faults mean fresh memory touched, whose kernel time the CPU time includes).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import time
from collections import Counter

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
    parser.add_argument("--stages", action="store_true", help="time the economy's stages (no profiler)")
    parser.add_argument("--warmup", type=int, default=20, help="steps run before timing")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads, which the economy's block passes follow too (default: 1 at N <= 1000, "
                             "else one per core)")
    args = parser.parse_args()
    import torch
    threads = args.threads or (1 if args.num_agents <= 1000 else os.cpu_count())
    torch.set_num_threads(threads)
    timers = stage_timers() if args.stages else None
    step = make_step(args.workload, args.num_agents, tuple(args.world))
    for _ in range(args.warmup):
        step()
    if timers is not None:
        report_stages(step, args.steps, timers, f"{args.workload} at N = {args.num_agents}, {threads} threads")
        return
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


def stage_timers() -> dict:
    """Wrap the economy's stage functions (before the workload is built) with wall and CPU timers."""
    from homoecon_env.core import consumption, economy, lifecycle, observe, production
    timers = {"wall": Counter(), "cpu": Counter(), "faults": Counter()}

    def wrap(owner, name, label, static=False):
        function = getattr(owner, name)

        def timed(*args, **kwargs):
            wall, cpu, faults = time.perf_counter(), time.process_time(), page_faults()
            try:
                return function(*args, **kwargs)
            finally:
                timers["wall"][label] += time.perf_counter() - wall
                timers["cpu"][label] += time.process_time() - cpu
                timers["faults"][label] += page_faults() - faults
        setattr(owner, name, staticmethod(timed) if static else timed)

    wrap(economy.Economy, "_checked_arrays", "action checks")
    wrap(economy.Economy, "normalised_trade_weights", "trade weights", static=True)
    wrap(economy, "normal", "yield noise")
    wrap(production, "produce", "production")
    wrap(economy, "clear_market", "market")
    wrap(consumption, "consume", "consumption")
    wrap(lifecycle, "death_causes", "deaths")
    wrap(lifecycle, "bequeath", "bequests")
    wrap(lifecycle, "reproduce", "births")
    wrap(economy.Economy, "_refuse_non_finite", "finiteness check")
    wrap(observe, "sample_peers", "observe: peer sample")
    wrap(observe, "self_features", "observe: own features")
    wrap(observe, "public_features", "observe: public table")
    wrap(economy.Economy, "_observe", "observe (all)")
    return timers


def page_faults() -> int:
    """Minor page faults of this process so far: each first touch of freshly mapped memory (a large
    array the allocator got from the kernel) costs one, and their kernel time shows in the CPU time."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def report_stages(step, steps: int, timers: dict, title: str) -> None:
    for counter in timers.values():
        counter.clear()
    wall, cpu, faults = time.perf_counter(), time.process_time(), page_faults()
    for _ in range(steps):
        step()
    wall, cpu, faults = time.perf_counter() - wall, time.process_time() - cpu, page_faults() - faults
    print(f"{title}: {1e3 * wall / steps:.1f} ms per step ({1e3 * cpu / steps:.1f} ms CPU, "
          f"{faults / steps:.0f} page faults)\n")
    print("| stage | ms per step | CPU ms per step | page faults per step | share |\n|---|---:|---:|---:|---:|")
    for label, seconds in timers["wall"].most_common():
        print(f"| {label} | {1e3 * seconds / steps:.1f} | {1e3 * timers['cpu'][label] / steps:.1f} | "
              f"{timers['faults'][label] / steps:.0f} | {seconds / wall:.0%} |")


if __name__ == "__main__":
    main()
