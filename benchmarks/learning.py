"""Does REINFORCE learn? Default `python train.py` runs for several seeds and learners, compared.

    python benchmarks/learning.py                       # reinforce vs random, seeds 1 2 3, default flags
    python benchmarks/learning.py --learners reinforce uniform_attention random --steps 5000

Each run is the plain CLI (`python train.py --learner L --seed S [--steps T]`) in its own run folder.
The score of a run is its mean `reward/mean` over the last 20% of training, read back from the
TensorBoard event files. Writes a JSON summary and a figure of the learning curves.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reward_curve(run_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, reward/mean) logged by a run."""
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    events = accumulator.Scalars("reward/mean")
    return np.array([e.step for e in events]), np.array([e.value for e in events])


def last_fifth_mean(steps: np.ndarray, values: np.ndarray) -> float:
    return float(values[steps >= steps.max() * 0.8].mean())


def run(learner: str, seed: int, steps, out_root: str) -> dict:
    run_dir = os.path.join(out_root, f"{learner}_s{seed}")
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--learner", learner, "--seed", str(seed),
               "--run-dir", run_dir]
    if steps:
        command += ["--steps", str(steps)]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    x, y = reward_curve(run_dir)
    return {"learner": learner, "seed": seed, "seconds": seconds, "score": last_fifth_mean(x, y),
            "steps": x.tolist(), "reward": y.tolist()}


def plot(results: list[dict], path: str) -> None:
    from matplotlib.figure import Figure

    from homoecon_env.diagnostics.plots import save_figure
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.subplots()
    colours = {}
    for r in results:
        colour = colours.setdefault(r["learner"], f"C{len(colours)}")
        steps, reward = np.array(r["steps"]), np.array(r["reward"])
        width = max(1, len(reward) // 50)
        smooth = np.convolve(reward, np.ones(width) / width, mode="valid")
        axes.plot(steps[width - 1:], smooth, color=colour, alpha=0.8,
                  label=r["learner"] if r is next(q for q in results if q["learner"] == r["learner"]) else None)
    axes.set(xlabel="env step", ylabel="mean reward per agent per step",
             title="Learning curves, default economy (one line per seed, moving average)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", nargs="+", default=["reinforce", "random"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=None, help="train.py --steps (default: train.py's default)")
    parser.add_argument("--runs", default="runs/learning", help="folder of the run folders")
    parser.add_argument("--out", default="benchmarks/results/learning.json")
    parser.add_argument("--figure", default="docs/figures/learning_curves.png")
    args = parser.parse_args()
    results = []
    for learner in args.learners:
        for seed in args.seeds:
            result = run(learner, seed, args.steps, args.runs)
            results.append(result)
            print(f"{learner:18s} seed {seed}: last-20% mean reward {result['score']:.4f} ({result['seconds']:.0f} s)",
                  flush=True)
    summary = {}
    for learner in args.learners:
        scores = [r["score"] for r in results if r["learner"] == learner]
        summary[learner] = {"scores": scores, "mean": float(np.mean(scores)), "min": float(np.min(scores)),
                            "max": float(np.max(scores)),
                            "seconds": [r["seconds"] for r in results if r["learner"] == learner]}
        print(f"{learner:18s} mean {summary[learner]['mean']:.4f}  (min {summary[learner]['min']:.4f}, "
              f"max {summary[learner]['max']:.4f})")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w") as handle:
        json.dump({"summary": summary, "runs": results}, handle, indent=1)
    os.replace(args.out + ".tmp", args.out)
    plot(results, args.figure)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
