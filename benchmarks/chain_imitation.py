"""Is the supply chain's plan a resting point of independent REINFORCE? (issue 16, a diagnostic)

    python benchmarks/chain_imitation.py --seeds 1 2 3 --max-age 100000 --imitate-steps 3000 --rl-steps 4000

Trained from scratch, REINFORCE on `supply_chain` ends in the raw layer (docs/design.md section 9). This
asks the converse: start the learners on the plan and see whether learning keeps it.

Phase 1, imitation: the plan (`scripted_chain`'s with roles cut by each agent's public id rather than its
slot, `ChainScriptedLearner(roles="id")`, so that a network can see its role) drives the economy. The learner
acts too, so its window holds its inputs, but the window is given the plan's actions as pre-images
(`agents.reference.reference_pre_images`)
and every valid step the advantage 1: REINFORCE's update is then behaviour cloning's gradient,
d log pi(the plan's action) / d theta, with the learner's own clipping, optimizer and entropy bonus. This
swaps `agents.reinforce.advantages` for the phase (a diagnostic, not a learner option). With `--learner ppo`
the swap is of `agents.ppo.gae`'s advantages (its value head still learns the true returns), and PPO's
clipped surrogate then clones the plan a clip range per epoch.
Phase 2, reinforcement: the learner acts and learns as usual, optionally with another learning rate
(`--rl-learning-rate`) or with a share of every reward replaced by the population's mean (`--shared`, 1:
everyone maximises the mean reward, so a drift away from the plan is not self-interest). `--learn NET ...`
lets only the named networks learn in this phase (the others are put back to their cloned weights after every
update), to find which part of the policy walks off the plan. `--gradient-snr` records every update's per-agent gradient
in this phase and reports, per network, the median over agents of the signal-to-noise ratio of one update's
gradient (|mean over updates| / root-mean-square deviation from it): about 1 / sqrt(updates) when the
updates are noise around a zero mean. Best with `--rl-learning-rate 0` (the cloned point itself).

Reported every `--report-every` steps: mean reward, effort shares of the raw, intermediate and final layers,
final goods made and traded per step, and the share of agents whose job is the plan's. One JSON line per
run is appended to `--out`.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time

import numpy as np
import torch

import agents.ppo as ppo_module
import agents.reinforce as reinforce_module
from agents import make_learner
from agents.config import LearnerConfig
from agents.reference import reference_pre_images
from agents.scripted import ChainScriptedLearner
from homoecon_env.core import Economy
from homoecon_env.core.production import JobTable
from homoecon_env.diagnostics import supply_chain
from homoecon_env.scenarios import SCENARIOS

NETWORKS = ("social_filter_net", "broadcast_net", "production_net", "trading_net", "consumption_net")  # REINFORCE's


@contextlib.contextmanager
def unit_advantages():
    """While open, every valid window step of a REINFORCE update, and every step of a PPO update, has
    advantage 1 (behaviour cloning); PPO's value targets stay its own."""
    originals = reinforce_module.advantages, ppo_module.gae

    def cloning(reward, valid, *args, **kwargs):
        returns, mean, baseline, advantage = originals[0](reward, valid, *args, **kwargs)
        return returns, mean, baseline, torch.where(valid, torch.ones_like(advantage), 0.0)

    def cloning_gae(*args, **kwargs):
        advantage, returns = originals[1](*args, **kwargs)
        return torch.ones_like(advantage), returns

    reinforce_module.advantages, ppo_module.gae = cloning, cloning_gae
    try:
        yield
    finally:
        reinforce_module.advantages, ppo_module.gae = originals


def network_columns(learner) -> dict[str, torch.Tensor]:
    """{network name: its columns of the learner's parameter rows [D] (long)}, in the learner's spec order."""
    return {name: (learner.layout.column_network == index).nonzero().view(-1)
            for index, name in enumerate(learner.spec)}


class FrozenNetworks:
    """Holds every network of a REINFORCE learner except `learning` at its weights when made: `restore` writes
    them back (after each update; the optimizer's moments for them are left as they are)."""

    def __init__(self, learner, learning: list[str]):
        columns = network_columns(learner)
        unknown = sorted(set(learning) - set(columns))
        if unknown:
            raise ValueError(f"--learn: no network named {unknown} in this learner (its networks: {list(columns)})")
        held = [part for name, part in columns.items() if name not in learning]
        self.columns = torch.cat(held) if held else torch.zeros(0, dtype=torch.long)  # (all learning: none held)
        self.weights = learner.flat_params[:, self.columns].clone()

    def restore(self, learner) -> None:
        learner.flat_params[:, self.columns] = self.weights


@contextlib.contextmanager
def recorded_gradients(store: list):
    """While open, the gradient [N, D] of every REINFORCE update (one block of agents) is appended to `store`."""
    original = reinforce_module.ReinforceLearner._learn_block

    def recording(self, *args, **kwargs):
        grad = original(self, *args, **kwargs)
        store.append(grad.clone())
        return grad

    reinforce_module.ReinforceLearner._learn_block = recording
    try:
        yield
    finally:
        reinforce_module.ReinforceLearner._learn_block = original


def gradient_snr(grads: torch.Tensor, network_columns: dict) -> dict:
    """From gradients [U, N, D] of U updates: per network (its columns), the median over agents of
    |mean gradient| / sqrt(mean |gradient - mean|^2), one update's signal against its noise; and
    "noise_floor" 1 / sqrt(U), what a zero-mean gradient gives on average."""
    grads = grads.double()
    out = {}
    for name, columns in network_columns.items():
        part = grads[:, :, columns]
        mean = part.mean(dim=0)  # [N, d]
        noise = (part - mean).square().sum(dim=-1).mean(dim=0).sqrt()  # [N]
        out[name] = float((mean.norm(dim=-1) / noise.clamp(min=1e-300)).median())
    out["noise_floor"] = 1 / grads.shape[0] ** 0.5
    return out


def run(seed: int, args) -> dict:
    """One imitation-then-reinforcement run; its curve as one JSON-ready dict."""
    torch.manual_seed(seed)
    config = SCENARIOS["supply_chain"]().replace(num_agents=args.num_agents, max_age=args.max_age,
                                                 max_steps=args.imitate_steps + args.rl_steps)
    bonus = {} if args.entropy_coef is None else {"entropy_coef": args.entropy_coef,
                                                   "ppo_entropy_coef": args.entropy_coef}
    learner = make_learner(args.learner, config, LearnerConfig(seed=seed, **bonus))
    plan = ChainScriptedLearner(config, roles="id")
    jobs = JobTable.from_config(config)
    layer = supply_chain.job_layers(jobs.output, jobs.inputs)  # [J] 0 raw, 1 intermediate, 2 final
    final = np.flatnonzero(supply_chain.final_goods(jobs.output, jobs.inputs))
    economy = Economy(config)
    observation = economy.reset(seed=seed)
    curve, tally, start, grads = [], None, time.time(), []
    recording = contextlib.ExitStack()
    for step in range(1, args.imitate_steps + args.rl_steps + 1):
        imitating = step <= args.imitate_steps
        if step == args.imitate_steps + 1 and args.gradient_snr:
            recording.enter_context(recorded_gradients(grads))
        if step == args.imitate_steps + 1 and args.rl_learning_rate is not None:
            learner.optimizer.lr = args.rl_learning_rate
        if step == args.imitate_steps + 1 and args.learn:
            frozen = FrozenNetworks(learner, args.learn)
        slot = learner._t  # the window step `act` writes
        own = learner.act(observation)
        planned = plan.act(observation)
        if imitating:
            learner.window.buffer["pre_image"][:, slot] = reference_pre_images(planned, learner.head_slices,
                                                                               learner.gaussian_dim)
            learner.window.buffer["job"][:, slot] = planned.job
        actions = planned if imitating else own
        out = economy.step(actions)
        with unit_advantages() if imitating else contextlib.nullcontext():
            if args.shared and not imitating:
                shared = (1 - args.shared) * out.reward + args.shared * out.reward.mean()
                learner.update(dataclasses.replace(out, reward=shared))
            else:
                learner.update(out)
        if args.learn and not imitating:
            frozen.restore(learner)
        learner.on_births(out.births)
        observation = out.observation
        tally = tally or {"reward": 0.0, "effort": np.zeros(3), "final_made": 0.0, "final_traded": 0.0,
                          "on_plan": 0.0, "steps": 0}
        job, effort = actions.job.numpy(), out.effort.numpy()
        tally["reward"] += float(out.reward.mean())
        np.add.at(tally["effort"], layer[job], effort)
        tally["final_made"] += float(effort[layer[job] == 2].sum())
        moved = np.abs(out.trade.allocation.numpy() - out.pre_trade.numpy()).sum(axis=0) / 2
        tally["final_traded"] += float(moved[final].sum())
        tally["on_plan"] += float((own.job == planned.job).float().mean())
        tally["steps"] += 1
        if step % args.report_every == 0:
            k, shares = tally["steps"], tally["effort"] / max(tally["effort"].sum(), 1e-12)
            curve.append({"step": step, "phase": "imitation" if imitating else "reinforcement",
                          "reward": tally["reward"] / k, "raw": shares[0], "intermediate": shares[1],
                          "final": shares[2], "final_made": tally["final_made"] / k,
                          "final_traded": tally["final_traded"] / k, "own_job_on_plan": tally["on_plan"] / k})
            print(json.dumps({"seed": seed, **{key: round(v, 4) if isinstance(v, float) else v
                                               for key, v in curve[-1].items()}}), flush=True)
            tally = None
    recording.close()
    snr = None
    if args.gradient_snr and grads:
        snr = gradient_snr(torch.stack(grads), network_columns(learner))
        print(json.dumps({"seed": seed, "gradient_snr": {key: round(v, 4) for key, v in snr.items()}}), flush=True)
    return {"seed": seed, "learner": args.learner, "num_agents": args.num_agents, "max_age": args.max_age,
            "imitate_steps": args.imitate_steps,
            "rl_steps": args.rl_steps, "rl_learning_rate": args.rl_learning_rate, "shared": args.shared,
            "entropy_coef": args.entropy_coef, "learn": args.learn, "gradient_snr": snr, "curve": curve,
            "seconds": round(time.time() - start, 1)}


def arm_label(row: dict) -> str:
    """A run's settings in words: learner, learning rate after imitation, shared rewards, entropy, lifespan."""
    parts = [row.get("learner", "reinforce")]
    if row["rl_learning_rate"] is not None:
        parts.append(f"lr {row['rl_learning_rate']:g}")
    if row["shared"]:
        parts.append(f"shared {row['shared']:g}")
    defaults = LearnerConfig()
    default = defaults.ppo_entropy_coef if parts[0] == "ppo" else defaults.entropy_coef
    if row["entropy_coef"] is not None and row["entropy_coef"] != default:
        parts.append(f"entropy {row['entropy_coef']:g}")
    if row.get("learn"):
        parts.append("only " + " + ".join(name.removesuffix("_net") for name in row["learn"]) + " learns")
    if row["max_age"] < 1000:
        parts.append(f"lives of {row['max_age']}")
    return ", ".join(parts)


def plot(rows: list[dict], path: str) -> None:
    """Final goods made per step over training, the mean over seeds of each arm (`arm_label`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms: dict[str, list] = {}
    for row in rows:
        arms.setdefault(arm_label(row), []).append(row["curve"])
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for index, (label, curves) in enumerate(arms.items()):
        steps = [point["step"] for point in curves[0]]
        made = np.mean([[point["final_made"] for point in curve] for curve in curves], axis=0)
        axis.plot(steps, made, marker="o", markersize=3, linestyle=("-", "--", "-.", ":")[index % 4],
                  label=f"{label} ({len(curves)} seeds)")  # (line styles keep arms that coincide visible)
    imitation_end = max(point["step"] for point in rows[0]["curve"] if point["phase"] == "imitation")
    axis.axvline(imitation_end, color="grey", linestyle=":")
    axis.text(imitation_end, axis.get_ylim()[1] * 0.5, " learners on their own", color="grey", va="top")
    axis.set(xlabel="step (imitation of the plan, then reinforcement)", ylabel="final goods made per step",
             title=f"supply_chain, N = {rows[0]['num_agents']}: does learning keep the cloned plan?")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--learner", choices=("reinforce", "ppo"), default="reinforce")
    parser.add_argument("--num-agents", type=int, default=50)
    parser.add_argument("--max-age", type=int, default=100_000, help="lifespan (the scenario's is 10)")
    parser.add_argument("--imitate-steps", type=int, default=3000)
    parser.add_argument("--rl-steps", type=int, default=4000)
    parser.add_argument("--rl-learning-rate", type=float, default=None, help="default: the learner's own")
    parser.add_argument("--shared", type=float, default=0.0, help="share of each reward replaced by the mean")
    parser.add_argument("--entropy-coef", type=float, default=None,
                        help="REINFORCE's entropy_coef and PPO's ppo_entropy_coef (default: the learner's own)")
    parser.add_argument("--learn", nargs="+", metavar="NET", default=None, choices=NETWORKS,
                        help=f"only these networks learn after imitation (of {', '.join(NETWORKS)}); default: all")
    parser.add_argument("--gradient-snr", action="store_true",
                        help="report each network's per-update gradient signal-to-noise after imitation")
    parser.add_argument("--report-every", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/chain_imitation.jsonl", help="JSON lines, appended")
    parser.add_argument("--plot", metavar="PNG", help="draw every run in --out (no new runs without --seeds)")
    args = parser.parse_args(argv)
    if args.report_every < 1 or not 0.0 <= args.shared <= 1.0:
        parser.error("--report-every must be >= 1 and --shared in [0, 1]")
    one_block = args.num_agents <= reinforce_module.ReinforceLearner.update_rows
    if args.gradient_snr and (args.learner != "reinforce" or not one_block):
        parser.error("--gradient-snr needs --learner reinforce and at most update_rows agents (one block per update)")
    if args.learn and (args.learner != "reinforce" or args.max_age <= args.imitate_steps + args.rl_steps):
        parser.error("--learn needs --learner reinforce and lives longer than the run (--max-age > its steps): "
                     "a newborn's networks would be put back to another's cloned weights")
    for seed in args.seeds:
        row = run(seed, args)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(row) + "\n")
    if args.plot:
        with open(args.out) as handle:
            plot([json.loads(line) for line in handle if line.strip()], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
