"""Do the learners learn? Default `python train.py` runs for several seeds and learners, compared.

    python benchmarks/learning.py                       # reinforce, ppo, scripted, random; seeds 1 2 3, default flags
    python benchmarks/learning.py --learners reinforce uniform_attention random --steps 5000
    python benchmarks/learning.py --learners scripted --merge   # rerun one learner, keep the others' runs
    python benchmarks/learning.py --train-args "--scenario private_signals --horizon-baseline --inherit-optimizer" \
        --learners reinforce uniform_attention ppo random agents.scripted:ScriptedListener \
        agents.scripted:ScriptedIgnorer --label private_signals \
        --out benchmarks/results/learning_private_signals.json \
        --figure docs/figures/learning_curves_private_signals.png   # the positive control

Each run is the plain CLI (`python train.py --learner L --seed S [--steps T]`) in its own run folder.
Two scores per run:
- training: its mean `reward/mean` over the last 20% of training, read back from the TensorBoard
  event files (the policy sampling, and still learning);
- frozen: its final checkpoint evaluated with learning off (as `evaluate.py --run RUN --no-learn`
  does: no weight updates, newborns still inherit their parents' networks) for `--eval-steps`
  steps (default 400, two full cycles of the default seasons) on each of `--eval-seeds` held-out
  economy seeds, acting by sampling (`frozen`) and, for learners with a `deterministic` mode
  (reinforce, uniform_attention, ppo), with the policy's mode (`frozen_deterministic`: the most likely
  job, the Gaussian means; `evaluate.py --no-learn --deterministic`). The others act the same way
  in both.
Writes a JSON summary and a figure of the learning curves.

`scripted` (the one-line heuristic, agents/scripted.py) and `random` never learn: they are the bar
and the floor. A run learns when it logged `learner/loss`; the figure draws the others dashed, and
the summary gives each learner's share of the heuristic's gain over random,
(score - random) / (scripted - random), for every score: 1 means it reached the heuristic (issue 15,
point 5).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import make_learner
from agents.checkpoint import load_checkpoint
from homoecon_env.core import Economy
from homoecon_env.files import atomic_write_text
from homoecon_lab.seeding import derive_seed, seed_everything
from homoecon_lab.settings import read_run_config

STREAM_HELD_OUT = 2  # the held-out economy seeds' stream, as in evaluate.py (homoecon_lab.evaluation_plan)
SCORES = ("score", "frozen", "frozen_deterministic")  # training (last 20%), frozen sampled, frozen mode
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


def frozen_score(run_dir: str, deterministic: bool, steps: int, seeds: int) -> float:
    """Mean reward per agent per step of the run's final checkpoint with learning off (newborns still
    inherit), over `steps` steps on each of `seeds` held-out economy seeds; with `deterministic`, acting
    with the policy's mode where the learner has one."""
    saved = read_run_config(os.path.join(run_dir, "config.json"))
    state = load_checkpoint(os.path.join(run_dir, "checkpoint.pt"))["learner"]
    total = 0.0
    for i in range(seeds):
        seed_everything(saved.learner.seed)
        learner = make_learner(saved.run.learner, saved.economy, saved.learner)
        learner.load_state_dict(state)
        if deterministic and hasattr(learner, "deterministic"):
            learner.deterministic = True
        economy = Economy(saved.economy.replace(max_steps=steps))
        observation = economy.reset(seed=derive_seed(saved.run.seed, STREAM_HELD_OUT, i))
        for _ in range(steps):
            out = economy.step(learner.act(observation))
            learner.on_births(out.births)
            total += float(out.reward.mean())
            observation = out.observation
    return total / (steps * seeds)


def run(learner: str, seed: int, steps, out_root: str, eval_steps: int = 400, eval_seeds: int = 2,
        train_args: tuple[str, ...] = ()) -> dict:
    run_dir = os.path.join(out_root, re.sub(r"[^\w-]", "_", learner) + f"_s{seed}")  # import paths: no ':' or '.'
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--learner", learner, "--seed", str(seed),
               "--run-dir", run_dir, *train_args]
    if steps:
        command += ["--steps", str(steps)]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    x, y, learns = reward_curve(run_dir)
    frozen = {f"frozen{suffix}": frozen_score(run_dir, deterministic, eval_steps, eval_seeds)
              for suffix, deterministic in (("", False), ("_deterministic", True))} if eval_seeds else {}
    return {"learner": learner, "seed": seed, "seconds": seconds, "score": last_fifth_mean(x, y), **frozen,
            "learns": learns, "steps": x.tolist(), "reward": y.tolist()}


def summarise(results: list[dict]) -> dict:
    """Per learner: training scores over seeds, mean/min/max, seconds, whether it learns, the frozen
    scores' means (`frozen_mean`, `frozen_deterministic_mean`, when measured) and (when both `scripted`
    and `random` ran) each score's share of the heuristic's gain over random."""
    learners = list(dict.fromkeys(r["learner"] for r in results))
    summary = {}
    for learner in learners:
        runs = [r for r in results if r["learner"] == learner]
        scores = [r["score"] for r in runs]
        summary[learner] = {"scores": scores, "mean": float(np.mean(scores)), "min": float(np.min(scores)),
                            "max": float(np.max(scores)), "seconds": [r["seconds"] for r in runs],
                            "learns": any(r.get("learns", learner not in ("random", "scripted")) for r in runs)}
        for key in SCORES[1:]:
            if all(key in r for r in runs):
                summary[learner][f"{key}_scores"] = [r[key] for r in runs]
                summary[learner][f"{key}_mean"] = float(np.mean([r[key] for r in runs]))
    if "scripted" in summary and "random" in summary:
        for key, mean in (("", "mean"), ("frozen_", "frozen_mean"),
                          ("frozen_deterministic_", "frozen_deterministic_mean")):
            bar, floor = summary["scripted"].get(mean), summary["random"].get(mean)
            if bar is None or floor is None:
                continue
            for entry in summary.values():
                if mean in entry:
                    share = (entry[mean] - floor) / (bar - floor) if bar != floor else None
                    entry[f"{key}share_of_scripted_gain"] = share
    return summary


def plot(results: list[dict], path: str, economy_label: str = "default economy") -> None:
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
             title=f"Learning curves, {economy_label} (one line per seed, moving average)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", nargs="+", default=["reinforce", "ppo", "scripted", "random"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=None, help="train.py --steps (default: train.py's default)")
    parser.add_argument("--eval-steps", type=int, default=400,
                        help="frozen evaluation steps per held-out economy seed (400: two cycles of the seasons)")
    parser.add_argument("--eval-seeds", type=int, default=2,
                        help="held-out economy seeds per run (0: no frozen scores)")
    parser.add_argument("--runs", default="runs/learning", help="folder of the run folders")
    parser.add_argument("--out", default="benchmarks/results/learning.json")
    parser.add_argument("--figure", default="docs/figures/learning_curves.png")
    parser.add_argument("--train-args", default="",
                        help="more train.py flags for every run, one string (e.g. \"--scenario private_signals\")")
    parser.add_argument("--label", default="default economy", help="what the figure's title calls the economy")
    parser.add_argument("--merge", action="store_true",
                        help="keep the runs of other learners already in --out (rerun only --learners)")
    args = parser.parse_args()
    results = []
    if args.merge and os.path.exists(args.out):
        with open(args.out) as handle:
            results = [r for r in json.load(handle)["runs"] if r["learner"] not in args.learners]
    for learner in args.learners:
        for seed in args.seeds:
            result = run(learner, seed, args.steps, args.runs, args.eval_steps, args.eval_seeds,
                         tuple(shlex.split(args.train_args)))
            results.append(result)
            frozen = "".join(f", {key.replace('_', ' ')} {result[key]:.4f}" for key in SCORES[1:] if key in result)
            print(f"{learner:18s} seed {seed}: last-20% mean reward {result['score']:.4f}{frozen} "
                  f"({result['seconds']:.0f} s)", flush=True)
    summary = summarise(results)
    for learner, entry in summary.items():
        share = entry.get("share_of_scripted_gain")
        frozen = "".join(f"  {key.replace('_', ' ')} {entry[key + '_mean']:.4f}" for key in SCORES[1:]
                         if key + "_mean" in entry)
        print(f"{learner:18s} training {entry['mean']:.4f}  (min {entry['min']:.4f}, max {entry['max']:.4f}){frozen}"
              + (f"  share of the scripted gain over random {share:.2f}" if share is not None else "")
              + ("" if entry["learns"] else "  [does not learn]"))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_write_text(args.out, json.dumps({"train_args": args.train_args, "summary": summary, "runs": results},
                                           indent=1))
    plot(results, args.figure, args.label)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
