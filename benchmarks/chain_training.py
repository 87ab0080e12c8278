"""Does `python train.py --scenario supply_chain` make and trade final goods? (issue 16)

    python benchmarks/chain_training.py --seeds 1 2 3 --steps 10000 --plot docs/figures/supply_chain_training.png

Trains the scenario with train.py itself, once per seed and arm: "apprentice" is the command as it stands (the
learners start as apprentices of the plan and learn anchored to it, docs/design.md section 9), "from scratch"
adds `--reference none`. Each run's TensorBoard scalars are read back: final goods made per step (the
`economy/produced/<good>` of the goods nobody uses as an input) and the mean reward, at every log point.
One JSON line per run is appended to `--out`; `--plot` draws every run in it (mean over seeds per arm).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from homoecon_env.core.production import JobTable  # noqa: E402
from homoecon_env.diagnostics import supply_chain  # noqa: E402
from homoecon_env.scenarios import scenario_config  # noqa: E402

ARMS = {"apprentice": [], "from scratch": ["--reference", "none"]}


def final_good_names() -> list[str]:
    """The supply chain's final goods (made, never an input)."""
    config = scenario_config("supply_chain")
    jobs = JobTable.from_config(config)
    return [config.resources[g] for g in np.flatnonzero(supply_chain.final_goods(jobs.output, jobs.inputs))]


def train(arm: str, seed: int, steps: int, log_every: int, runs_dir: str, extra: str = "") -> dict:
    """One train.py run of `arm` (with the `extra` train.py flags); its final goods made per step and mean
    reward at every log point."""
    run_dir = os.path.join(runs_dir, f"{arm.replace(' ', '_')}_{seed}")
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--scenario", "supply_chain", "--seed", str(seed),
               "--steps", str(steps), "--log-every", str(log_every), "--dashboard-every", "0", "--run-dir", run_dir,
               *ARMS[arm], *shlex.split(extra)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    events = EventAccumulator(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))[0],
                              size_guidance={"scalars": 0})
    events.Reload()
    made = [np.array([point.value for point in events.Scalars(f"economy/produced/{good}")])
            for good in final_good_names()]
    rewards = events.Scalars("reward/mean")
    with open(os.path.join(run_dir, "config.json")) as handle:
        learner = json.load(handle)["learner"]
    return {"arm": arm + (f" {extra}" if extra else ""), "seed": seed, "steps": [point.step for point in rewards],
            "final_made": [round(float(v), 4) for v in sum(made)],
            "reward": [round(point.value, 5) for point in rewards],
            "reference": learner["reference"], "reference_steps": learner["reference_steps"]}


def plot(rows: list[dict], path: str) -> None:
    """Final goods made per step over training, mean over seeds per arm, the warm start's end marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm in dict.fromkeys(row["arm"] for row in rows):  # (in the order first run)
        runs = [row for row in rows if row["arm"] == arm]
        if not runs:
            continue
        length = min(len(row["steps"]) for row in runs)
        steps = runs[0]["steps"][:length]
        for axis, key in zip(axes, ("final_made", "reward")):
            values = np.array([row[key][:length] for row in runs])
            axis.plot(steps, values.mean(0), label=f"{arm} ({len(runs)} seeds)")
            axis.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
    warm = max((row["reference_steps"] for row in rows if row["reference"] != "none"), default=0)
    for axis, label in zip(axes, ("final goods made per step", "mean reward per agent-step")):
        if warm:
            axis.axvline(warm, color="grey", linestyle=":")
            axis.text(warm, axis.get_ylim()[1] * 0.5, " warm start ends", color="grey", va="top")
        axis.set(xlabel="training step", ylabel=label)
        axis.legend(fontsize=8, loc="upper right")
    figure.suptitle("python train.py --scenario supply_chain: apprentices of the plan vs from scratch "
                    "(band: seeds' range)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3], help="train.py --seed (its default is 1)")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--extra", default="", help="more train.py flags for every run, e.g. '--learning-rate 0.003' "
                        "(named in the arm's label)")
    parser.add_argument("--workers", type=int, default=2, help="train.py runs at once")
    parser.add_argument("--runs-dir", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--out", default="benchmarks/results/chain_training.jsonl", help="JSON lines, appended")
    parser.add_argument("--plot", metavar="PNG", help="draw every run in --out")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.log_every < 1 or args.workers < 1:
        parser.error("--steps, --log-every and --workers must be >= 1")
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = args.runs_dir or scratch
        jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
        with ThreadPoolExecutor(args.workers) as pool:
            rows = list(pool.map(lambda job: train(*job, args.steps, args.log_every, runs_dir, args.extra), jobs))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
            tail = max(1, len(row["final_made"]) // 5)
            print(json.dumps({"arm": row["arm"], "seed": row["seed"],
                              "final_made_last_fifth": round(float(np.mean(row["final_made"][-tail:])), 3),
                              "reward_last_fifth": round(float(np.mean(row["reward"][-tail:])), 4)}), flush=True)
    if args.plot:
        with open(args.out) as handle:
            plot([json.loads(line) for line in handle if line.strip()], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
