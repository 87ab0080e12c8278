"""Speed benchmark: env-only and full training steps/s, trade time, peak memory (issue 7).

    python benchmarks/bench.py                      # N = 50, 1,000, 10,000; table + JSON
    python benchmarks/bench.py --sizes 50 --seconds 3
    python benchmarks/bench.py --sizes 10000 --workloads core train --world 10 10   # a spatial world
    python benchmarks/bench.py --sizes 1000000 --workloads core trade --keep-memory    # glibc keeps freed memory

Each measurement runs in fresh subprocesses (--repeats of them) so that its peak RSS is its own,
and reports the median and the fastest of their timing windows (a shared machine has bursts of
interference lasting seconds to minutes). Workloads:
- dict:  PettingZoo dict API with random actions from the action spaces (sampled beforehand);
- slots: the fixed-slot view (flat Box spaces, docs/design.md section 8), likewise;
- core:  the batched Economy with random [N, ...] action tensors;
- train: act + env step + REINFORCE update + births + the step's stats (train.py's loop);
- trade: clear_market alone on the holdings and weights of a live economy.
N >= 1,000 uses num_peers=32; N = 50 observes everyone else (49 peers). `--world W H` runs every
workload in a world of W x H regions (docs/design.md section 13: local markets, peer_radius 1,
migration_cost 0.05, random moves in the env workloads; the learners emit their own), otherwise the
default one-region economy; `--learner` picks the train workload's learner (default reinforce).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

WORKLOADS = ("dict", "slots", "core", "train", "trade")
LEARNER_OPTIONS: dict = {}  # the train workload's LearnerConfig device and dtype (--learner-device, --learner-dtype)
# glibc: serve every allocation from the heap and never give freed memory back (--keep-memory)
KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}


def config_for(n: int, world: tuple[int, int] = (1, 1)):
    from homoecon_env import EconomyConfig
    space = {} if tuple(world) == (1, 1) else {"world_width": world[0], "world_height": world[1], "peer_radius": 1,
                                               "migration_cost": 0.05}
    return EconomyConfig(num_agents=n, num_peers=None if n <= 50 else 32, max_steps=10**9, **space)


def random_actions(economy, generator):
    import torch

    from homoecon_env.config import NUM_MOVES
    from homoecon_env.core import Actions
    n, c = economy.state.num_slots, economy.config

    def rand(*shape):
        return torch.rand(*shape, generator=generator, dtype=torch.float64)

    move = torch.randint(0, NUM_MOVES, (n,), generator=generator) if c.spatial else None
    # * 2 - 1 in NumPy: torch's elementwise ops on two threads stall when the other core is busy, which
    # at 10,000 agents cost more than the economy's step (the same values either way)
    broadcast = torch.from_numpy(rand(n, c.broadcast_dim).numpy() * 2 - 1)
    return Actions(broadcast, torch.randint(0, c.num_jobs, (n,), generator=generator),
                   rand(n), rand(n, c.num_resources), rand(n, c.num_resources), move)


def timed(step, seconds: float, windows: int = 5, min_steps: int = 3) -> dict:
    """Run `step` for about `seconds` (after one warm-up call), split into `windows` equal windows;
    returns the steps per second of every window and the steps run in all."""
    step()
    rates, total = [], 0
    for _ in range(windows):
        count, start = 0, time.perf_counter()
        while count < min_steps or time.perf_counter() - start < seconds / windows:
            step()
            count += 1
        rates.append(count / (time.perf_counter() - start))
        total += count
    return {"window_rates": rates, "steps": total}


def make_step(kind: str, n: int, world: tuple[int, int] = (1, 1), learner_name: str = "reinforce"):
    """A callable that runs one unit of workload `kind` at N = n in a W x H `world`: an env step (dict, core,
    train with `learner_name`) or one market clearing (trade, which returns its TradeResult; in a spatial
    world one grouped clearing of every region). Everything is built and warm."""
    import torch

    from homoecon_env.core import Economy
    config = config_for(n, world)
    generator = torch.Generator().manual_seed(0)
    if kind == "dict":
        from homoecon_env import parallel_env
        env = parallel_env(config)
        env.reset(seed=0)
        space = env.action_space("agent_0")
        space.seed(0)
        pool = [[space.sample() for _ in range(n)] for _ in range(4)]  # sampled once: time the env, not gymnasium
        clock = {"t": 0}

        def dict_step():
            clock["t"] += 1
            row = pool[clock["t"] % len(pool)]
            return env.step({agent: row[i] for i, agent in enumerate(env.agents)})

        return dict_step
    if kind == "slots":
        from homoecon_env import slot_parallel_env
        slots = slot_parallel_env(config)
        slots.reset(seed=0)
        space = slots.action_space("slot_0")
        space.seed(0)
        flat_pool = [[space.sample() for _ in range(n)] for _ in range(4)]
        tick = {"t": 0}

        def slots_step():
            tick["t"] += 1
            return slots.step(dict(zip(slots.possible_agents, flat_pool[tick["t"] % len(flat_pool)])))

        return slots_step
    economy = Economy(config)
    observation = economy.reset(0)
    if kind == "core":
        return lambda: economy.step(random_actions(economy, generator))
    if kind == "trade":
        from homoecon_env.trade import clear_market
        out = economy.step(random_actions(economy, generator))
        weights = torch.rand(n, config.num_resources, generator=generator, dtype=torch.float64)
        if config.spatial:  # every region's market in one batched solve
            groups = economy.state.region.clone()
            return lambda: clear_market(out.pre_trade, weights, groups=groups)
        return lambda: clear_market(out.pre_trade, weights)
    from agents import LearnerConfig, make_learner
    learner = make_learner(learner_name, config, LearnerConfig(**LEARNER_OPTIONS))
    state = {"observation": observation}

    def train_step():  # the loop of train.py, less its logging every --log-every steps
        out = economy.step(learner.act(state["observation"]))
        learner.update(out)
        learner.on_births(out.births)
        # last_stats is computed lazily on first read; train.py reads it every step (the Recorder
        # averages it between logs), so the benchmark reads it too, to pay the same cost.
        _ = economy.last_stats
        state["observation"] = out.observation

    return train_step


def run_workload(kind: str, n: int, seconds: float, world: tuple[int, int] = (1, 1),
                 learner_name: str = "reinforce") -> dict:
    step = make_step(kind, n, world, learner_name)
    timing = timed(step, seconds)
    if kind != "trade":
        return timing
    result = step()
    return {**timing, "iterations": result.iterations, "init_iterations": result.init_iterations,
            "ir_violation": result.ir_violation, "conservation_error": result.conservation_error}


def summarise(kind: str, runs: list[dict]) -> dict:
    """One row from the repeated runs of a workload: the median window over all of them (what a run
    sees) and the fastest window (the code's speed with the least interference from elsewhere)."""
    rates = sorted(rate for run in runs for rate in run["window_rates"])
    row = {**runs[-1], "window_rates": rates, "steps": sum(run["steps"] for run in runs),
           "peak_rss_mb": max(run["peak_rss_mb"] for run in runs), "repeats": len(runs)}
    median, best = rates[len(rates) // 2], rates[-1]
    if kind == "trade":
        return {**row, "seconds_per_clear": 1.0 / median, "best_seconds_per_clear": 1.0 / best}
    return {**row, "steps_per_sec": median, "best_steps_per_sec": best}


def worker(kind: str, n: int, seconds: float, threads: int, world: tuple[int, int] = (1, 1),
           learner_name: str = "reinforce") -> None:
    import torch
    torch.set_num_threads(threads)
    result = run_workload(kind, n, seconds, world, learner_name)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def machine() -> dict:
    import torch
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.machine()) if os.path.exists("/proc/cpuinfo") else platform.machine()
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu": model, "cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 1000, 10000], help="population sizes N")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--seconds", type=float, default=5.0, help="time spent measuring each workload, per repeat")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh processes per workload; the table pools their five windows each")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: 1 up to 1,000 agents, where per-op overhead rules, "
                             "else every core)")
    parser.add_argument("--world", type=int, nargs=2, default=[1, 1], metavar=("W", "H"),
                        help="a world of W x H regions (docs/design.md section 13); default 1 1, the one-region "
                             "economy")
    parser.add_argument("--learner", default="reinforce", help="the train workload's learner (a --learner name)")
    parser.add_argument("--learner-device", default="cpu", help="the train workload's learner device (cpu, cuda:N)")
    parser.add_argument("--learner-dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--out", default=None,
                        help="JSON output path (default benchmarks/results/bench.json, bench_world_WxH.json in "
                             "a spatial world)")
    parser.add_argument("--keep-memory", action="store_true",
                        help="run the workers with glibc's malloc keeping freed memory (MALLOC_MMAP_THRESHOLD_, "
                             "MALLOC_TRIM_THRESHOLD_): at a million agents a step allocates gigabytes, and a VM that "
                             "hands freed pages back to its host makes every fresh allocation page-fault anew")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.world) < 1:
        parser.error(f"--world needs two positive integers W H, got {args.world}")
    world = tuple(args.world)
    if args.out is None:
        args.out = "benchmarks/results/bench.json" if world == (1, 1) else \
            f"benchmarks/results/bench_world_{world[0]}x{world[1]}.json"
    LEARNER_OPTIONS.update(device=args.learner_device, dtype=args.learner_dtype)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.seconds, args.threads, world, args.learner)
        return
    rows, skipped = [], []
    print("| workload | N | threads | median window | best window | peak RSS |\n"
          "|---|---:|---:|---|---|---:|", flush=True)
    for n in args.sizes:
        for kind in args.workloads:
            if kind in ("dict", "slots") and n > 1000:
                continue  # the dict APIs are for small populations; large ones use the core
            threads = args.threads or (1 if n <= 1000 else os.cpu_count())
            if kind == "train":
                need, have = learner_state_bytes(n, world, args.learner), physical_memory()
                if need > 0.9 * have:  # it would be killed for memory (or swap): say so instead
                    why = (f"train at N={n} needs {need / 1e9:.1f} GB for the learners' parameters and Adam state "
                           f"alone; this machine has {have / 1e9:.1f} GB")
                    skipped.append({"workload": kind, "num_agents": n, "skipped": why})
                    print(f"| {kind:5s} | {n:6d} | skipped: {why} |", flush=True)
                    continue
            command = [sys.executable, __file__, "--worker", kind, str(n), "--seconds", str(args.seconds),
                       "--threads", str(threads), "--world", *map(str, world), "--learner", args.learner,
                       "--learner-device", args.learner_device, "--learner-dtype", args.learner_dtype]
            runs = []
            for _ in range(args.repeats):
                done = subprocess.run(command, capture_output=True, text=True,
                                      env={**os.environ, **KEEP_MEMORY} if args.keep_memory else None)
                if done.returncode != 0:
                    print(f"{kind} N={n} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                    break
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if len(runs) < args.repeats:
                continue
            row = {"workload": kind, "num_agents": n, "threads": threads, "world": list(world),
                   **({"keep_memory": True} if args.keep_memory else {}),
                   **({"learner": args.learner, **LEARNER_OPTIONS} if kind == "train" else {}), **summarise(kind, runs)}
            rows.append(row)
            print(format_row(row), flush=True)
    report = {"machine": machine(), "results": rows, **({"skipped": skipped} if skipped else {})}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    temporary = args.out + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(report, handle, indent=2)
    os.replace(temporary, args.out)
    print(f"\nwrote {args.out}")


def learner_state_bytes(n: int, world: tuple[int, int], learner_name: str) -> int:
    """Bytes of the learners' parameters and Adam's two moments at N = n (what a training step cannot do
    without), from the same learner built for 64 agents: 0 for learners without a parameter row."""
    from agents import LearnerConfig, make_learner
    learner = make_learner(learner_name, config_for(64, world).replace(num_peers=32), LearnerConfig())
    params = getattr(learner, "flat_params", None)
    return 0 if params is None else 3 * n * params.shape[1] * params.element_size()


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def format_row(row: dict) -> str:
    if row["workload"] == "trade":
        speed = f"{row['seconds_per_clear'] * 1e3:6.2f} ms/clear ({row['init_iterations']}+{row['iterations']} it)"
        best = f"{row['best_seconds_per_clear'] * 1e3:6.2f} ms"
    else:
        speed, best = f"{row['steps_per_sec']:9.1f} steps/s", f"{row['best_steps_per_sec']:9.1f}"
    return (f"| {row['workload']:5s} | {row['num_agents']:6d} | {row['threads']} | {speed:28s} | {best:9s} | "
            f"{row['peak_rss_mb']:7.0f} MB |")


if __name__ == "__main__":
    main()
