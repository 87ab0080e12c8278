"""Who listens to whom, and what messages mean: one figure row per trained run (issue 15, point 7).

    python benchmarks/communication_figures.py --runs runs/default runs/private_signals \
        --labels "default economy" "private_signals" --out docs/figures/communication.png

Each run's final checkpoint acts frozen (learning off, newborns still inherit) for `--steps` steps on a
held-out economy seed of the run's own economy. Per run, two panels:
- attention heatmap of the last step: row i, column j is the weight agent i puts on agent j (blank when
  j was not among i's sampled peers), rows and columns sorted by group: scouts then non-scouts on an
  economy with private signals (the title gives the listeners' attention on scouts relative to their
  share: 1 is what uniform attention gives), otherwise by the job chosen;
- message meaning: every message of the last `--pca-steps` steps on its first two principal components,
  coloured by what the speaker privately knows: the job in boom for a scout (non-scouts grey), or its
  own job on an economy without private signals. Colour clusters mean messages carry that meaning.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from agents import make_learner
from agents.checkpoint import load_checkpoint
from homoecon_env.core import Economy
from homoecon_env.core.signals import is_scout
from homoecon_env.diagnostics import metrics, scouts
from homoecon_env.diagnostics.plots.base import category_colour, new_figure, save_figure, style_axes
from homoecon_lab.seeding import derive_seed, seed_everything
from homoecon_lab.settings import read_run_config

STREAM_HELD_OUT = 2  # the held-out economy seeds' stream, as in evaluate.py and benchmarks/learning.py


def frozen_rollout(run_dir: str, steps: int, pca_steps: int) -> dict:
    """Act `steps` frozen steps with the run's checkpoint; what the two panels need."""
    settings = read_run_config(os.path.join(run_dir, "config.json"))
    seed_everything(settings.learner.seed)
    learner = make_learner(settings.run.learner, settings.economy, settings.learner)
    learner.load_state_dict(load_checkpoint(os.path.join(run_dir, "checkpoint.pt"))["learner"])
    config = settings.economy.replace(max_steps=steps)
    economy = Economy(config)
    observation = economy.reset(seed=derive_seed(settings.run.seed, STREAM_HELD_OUT, 0))
    messages, meanings, mass, share = [], [], [], []
    for t in range(1, steps + 1):
        before = economy.state
        actions = learner.act(observation)
        out = economy.step(actions)
        learner.on_births(out.births)
        jobs = actions.job.numpy()
        if config.private_signals:
            scout = is_scout(before.id_vectors.numpy(), config)
            m, s = scouts.attention_on_scouts(learner.last_attention.double().numpy(), observation.peer_index.numpy(),
                                              observation.peer_mask.numpy(), scout, before.alive.numpy())
            mass.append(m)
            share.append(s)
            group, meaning = ~scout, np.where(scout, before.boom, -1)  # scouts first; non-scouts "know" nothing
        else:
            group, meaning = jobs, jobs
        if t > steps - pca_steps:
            messages.append(actions.broadcast.double().numpy().reshape(len(jobs), -1))
            meanings.append(meaning)
        if t == steps:
            last = {"attention": learner.last_attention.double().numpy(), "peer_index": observation.peer_index.numpy(),
                    "group": group}
        observation = out.observation
    return {**last, "messages": np.concatenate(messages), "meanings": np.concatenate(meanings),
            "on_scouts": scouts.ratio(mass, share) if mass else None, "config": config}


def draw_attention(ax, run: dict, label: str) -> None:
    """The last step's agent-to-agent attention, rows and columns sorted by group."""
    order = np.argsort(run["group"], kind="stable")
    dense = metrics.attention_matrix(run["attention"], run["peer_index"], len(order))[np.ix_(order, order)]
    shown = np.where(dense > 0, dense, np.nan)
    image = ax.imshow(shown, cmap="magma", aspect="auto", interpolation="nearest", vmin=0.0)
    ax.figure.colorbar(image, ax=ax).set_label("attention weight")
    groups = run["group"][order]
    for edge in np.flatnonzero(np.diff(groups)) + 0.5:
        ax.axhline(edge, color="tab:cyan", lw=1)
        ax.axvline(edge, color="tab:cyan", lw=1)
    if run["on_scouts"] is not None:
        title = f"{label}: attention on scouts x{run['on_scouts']:.2f} their share"
        axes = ("attended agent (scouts | others)", "attending agent (scouts | others)")
    else:
        title = f"{label}: attention, agents sorted by job"
        axes = ("attended agent", "attending agent")
    style_axes(ax, title, *axes)


def draw_meaning(ax, run: dict, label: str) -> None:
    """Messages on two principal components, coloured by the speaker's private state."""
    config = run["config"]
    coords, explained = metrics.broadcast_pca(run["messages"])
    meanings = run["meanings"]
    names = [job.name for job in config.jobs]
    for value in np.unique(meanings):
        chosen = meanings == value
        if value < 0:
            ax.scatter(*coords[chosen].T, s=6, color="0.75", label="non-scout")
            continue
        prefix = "boom: " if config.private_signals else ""
        ax.scatter(*coords[chosen].T, s=8, color=category_colour(int(value)), label=prefix + names[int(value)])
    ax.legend(fontsize=7, loc="best", markerscale=2)
    what = "the boom a scout sees" if config.private_signals else "the speaker's job"
    style_axes(ax, f"{label}: messages by {what}", f"PC1 ({100 * explained[0]:.0f}%)",
               f"PC2 ({100 * explained[1]:.0f}%)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="trained run folders (config.json, checkpoint.pt)")
    parser.add_argument("--labels", nargs="+", help="one label per run (default: the folder names)")
    parser.add_argument("--steps", type=int, default=60, help="frozen steps per run")
    parser.add_argument("--pca-steps", type=int, default=20, help="last steps whose messages go into the PCA")
    parser.add_argument("--out", default="docs/figures/communication.png", help="figure path (PNG)")
    args = parser.parse_args(argv)
    labels = args.labels or [os.path.basename(os.path.normpath(run)) for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"--labels: {len(labels)} labels for {len(args.runs)} runs")
    if not 1 <= args.pca_steps <= args.steps:
        parser.error(f"--pca-steps: {args.pca_steps}; expected 1 to --steps ({args.steps})")
    figure = new_figure(13, 5 * len(args.runs))
    axes = np.atleast_2d(figure.subplots(len(args.runs), 2))
    for row, run_dir, label in zip(axes, args.runs, labels):
        run = frozen_rollout(run_dir, args.steps, args.pca_steps)
        draw_attention(row[0], run, label)
        draw_meaning(row[1], run, label)
        if run["on_scouts"] is not None:
            print(f"{label}: listeners' attention on scouts x{run['on_scouts']:.3f} of their share")
    print(save_figure(figure, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
