"""Does REINFORCE learn? Default `python train.py` runs for several seeds and learners, compared.

    python benchmarks/learning.py                       # reinforce, scripted, random; seeds 1 2 3, default flags
    python benchmarks/learning.py --learners reinforce uniform_attention random --steps 5000
    python benchmarks/learning.py --learners scripted --merge   # rerun one learner, keep the others' runs

Each run is the plain CLI (`python train.py --learner L --seed S [--steps T]`) in its own run folder.
The score of a run is its mean `reward/mean` over the last 20% of training, read back from the
TensorBoard event files. Writes a JSON summary and a figure of the learning curves.

`scripted` (the one-line heuristic, agents/scripted.py) and `random` never learn: they are the bar
and the floor. A run learns when it logged `learner/loss`; the figure draws the others dashed, and
the summary gives each learner's share of the heuristic's gain over random,
(score - random) / (scripted - random): 1 means it reached the heuristic (issue 15, point 5).
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

from homoecon_env.files import atomic_write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reward_curve(run_dir: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(steps, reward/mean, learns) logged by a run; learns: it logged a `learner/loss`."""
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    events = accumulator.Scalars("reward/mean")
    learns = "learner/loss" in accumulator.Tags()["scalars"]
    return np.array([e.step for e in events]), np.array([e.value for e in events]), learns


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
    x, y, learns = reward_curve(run_dir)
    return {"learner": learner, "seed": seed, "seconds": seconds, "score": last_fifth_mean(x, y), "learns": learns,
            "steps": x.tolist(), "reward": y.tolist()}


def summarise(results: list[dict]) -> dict:
    """Per learner: scores over seeds, mean/min/max, seconds, whether it learns, and (when both
    `scripted` and `random` ran) its share of the heuristic's gain over random."""
    learners = list(dict.fromkeys(r["learner"] for r in results))
    summary = {}
    for learner in learners:
        runs = [r for r in results if r["learner"] == learner]
        scores = [r["score"] for r in runs]
        summary[learner] = {"scores": scores, "mean": float(np.mean(scores)), "min": float(np.min(scores)),
                            "max": float(np.max(scores)), "seconds": [r["seconds"] for r in runs],
                            "learns": any(r.get("learns", learner not in ("random", "scripted")) for r in runs)}
    if "scripted" in summary and "random" in summary:
        gain = summary["scripted"]["mean"] - summary["random"]["mean"]
        for entry in summary.values():
            entry["share_of_scripted_gain"] = (entry["mean"] - summary["random"]["mean"]) / gain if gain else None
    return summary


def plot(results: list[dict], path: str) -> None:
    from matplotlib.figure import Figure

    from homoecon_env.diagnostics.plots import save_figure
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.subplots()
    colours = {}
    for r in results:
        colour = colours.setdefault(r["learner"], f"C{len(colours)}")
        learns = r.get("learns", r["learner"] not in ("random", "scripted"))
        steps, reward = np.array(r["steps"]), np.array(r["reward"])
        width = max(1, len(reward) // 50)
        smooth = np.convolve(reward, np.ones(width) / width, mode="valid")
        first = r is next(q for q in results if q["learner"] == r["learner"])
        label = (r["learner"] if learns else f"{r['learner']} (does not learn)") if first else None
        axes.plot(steps[width - 1:], smooth, color=colour, alpha=0.8, linestyle="-" if learns else "--",
                  label=label)
    axes.set(xlabel="env step", ylabel="mean reward per agent per step",
             title="Learning curves, default economy (one line per seed, moving average)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", nargs="+", default=["reinforce", "scripted", "random"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=None, help="train.py --steps (default: train.py's default)")
    parser.add_argument("--runs", default="runs/learning", help="folder of the run folders")
    parser.add_argument("--out", default="benchmarks/results/learning.json")
    parser.add_argument("--figure", default="docs/figures/learning_curves.png")
    parser.add_argument("--merge", action="store_true",
                        help="keep the runs of other learners already in --out (rerun only --learners)")
    args = parser.parse_args()
    results = []
    if args.merge and os.path.exists(args.out):
        with open(args.out) as handle:
            results = [r for r in json.load(handle)["runs"] if r["learner"] not in args.learners]
    for learner in args.learners:
        for seed in args.seeds:
            result = run(learner, seed, args.steps, args.runs)
            results.append(result)
            print(f"{learner:18s} seed {seed}: last-20% mean reward {result['score']:.4f} ({result['seconds']:.0f} s)",
                  flush=True)
    summary = summarise(results)
    for learner, entry in summary.items():
        share = entry.get("share_of_scripted_gain")
        print(f"{learner:18s} mean {entry['mean']:.4f}  (min {entry['min']:.4f}, max {entry['max']:.4f})"
              + (f"  share of the scripted gain over random {share:.2f}" if share is not None else "")
              + ("" if entry["learns"] else "  [does not learn]"))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_write_text(args.out, json.dumps({"summary": summary, "runs": results}, indent=1))
    plot(results, args.figure)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
