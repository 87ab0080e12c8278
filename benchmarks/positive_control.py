"""Learned against uniform attention on the positive control, with long training (issue 15, point 4).

    python benchmarks/positive_control.py --seeds 11 12 13 14 15 --train-steps 50000 --workers 2 \
        --arms reinforce reinforce:attention_sink=True uniform_attention

Each arm is a learner name with optional LearnerConfig fields (`name:field=value,field=value`); every arm
also gets the positive control's two learning fixes (horizon_baseline, inherit_optimizer, as evaluate.py
gives them). Per seed and arm: train `--train-steps` steps on the `private_signals` economy (economy seed
stream 1), then act frozen (no updates; newborns still inherit) for `--eval-steps` steps on a held-out
economy seed (stream 2). Reported per run: mean reward per live agent-step, the share of non-scouts
working the boom job (chance 1/4) and the listeners' attention on scouts relative to their share (1 is
uniform). The summary pairs each arm with the last by seed (mean difference with a 95% t interval).
Runs go one after another (2 at once with `--workers 2`); a line of JSON per run is appended to `--out`.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time

import numpy as np

from agents import make_learner
from agents.config import LearnerConfig
from homoecon_env.core import Economy
from homoecon_env.core.signals import is_scout
from homoecon_env.diagnostics import analysis, communication, scouts
from homoecon_env.scenarios import SCENARIOS
from homoecon_lab.seeding import derive_seed, seed_everything

FIXES = {"horizon_baseline": True, "inherit_optimizer": True}


def parse_arm(text: str) -> tuple[str, dict]:
    """"reinforce:attention_sink=True,entropy_coef=0.001" -> ("reinforce", {...}) with typed values."""
    name, _, options = text.partition(":")
    fields = {}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        fields[key] = json.loads(value.lower()) if value.lower() in ("true", "false") else json.loads(value)
    return name, fields


def run(arm: str, seed: int, train_steps: int, eval_steps: int) -> dict:
    """Train one arm on one seed, then evaluate it frozen; the numbers of one JSON line."""
    name, fields = parse_arm(arm)
    seed_everything(seed)
    config = SCENARIOS["private_signals"]()
    learner = make_learner(name, config, LearnerConfig(**{**FIXES, **fields, "seed": seed}))
    start = time.time()
    economy = Economy(config.replace(max_steps=train_steps))
    observation = economy.reset(seed=derive_seed(seed, 1, 0))
    for _ in range(train_steps):
        out = economy.step(learner.act(observation))
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
    economy = Economy(config.replace(max_steps=eval_steps))
    observation = economy.reset(seed=derive_seed(seed, 2, 0))
    rewards, on_boom, mass, share, said, booms = [], [], [], [], [], []
    for _ in range(eval_steps):
        before = economy.state
        actions = learner.act(observation)
        out = economy.step(actions)
        learner.on_births(out.births)
        scout, alive = is_scout(before.id_vectors.numpy(), config), before.alive.numpy()
        rewards.append(float(out.reward.numpy()[alive].mean()))
        on_boom.append(scouts.listeners_on_boom(actions.job.numpy(), before.boom, scout, alive))
        speaking = scout & alive  # what scouts say, against the boom they alone see
        said.append(actions.broadcast.double().numpy().reshape(len(scout), -1)[speaking])
        booms.append(np.full(int(speaking.sum()), float(before.boom)))
        attention = getattr(learner, "last_attention", None)
        if attention is not None and name != "uniform_attention":
            m, s = scouts.attention_on_scouts(attention.double().numpy(), observation.peer_index.numpy(),
                                              observation.peer_mask.numpy(), scout, alive)
            mass.append(m)
            share.append(s)
        observation = out.observation
    mi, shuffled = communication.message_state_mi_baseline(np.concatenate(said), np.concatenate(booms),
                                                           np.random.default_rng(seed))
    return {"arm": arm, "seed": seed, "train_steps": train_steps, "eval_steps": eval_steps,
            "reward": float(np.mean(rewards)), "nonscout_boom": float(np.nanmean(on_boom)),
            "attention_on_scouts": scouts.ratio(mass, share) if mass else None,
            "message_boom_mi": mi, "message_boom_mi_shuffled": shuffled,
            "seconds": round(time.time() - start, 1)}


def summary(rows: list[dict], arms: list[str]) -> dict:
    """Per arm the means over seeds; each arm minus the last, paired by seed (reward, non-scouts on boom)."""
    by = {(row["arm"], row["seed"]): row for row in rows}
    seeds = sorted({row["seed"] for row in rows if all((arm, row["seed"]) in by for arm in arms)})
    result = {"seeds": seeds, "arms": {}, "minus_" + arms[-1]: {}}
    for arm in arms:
        result["arms"][arm] = {key: analysis.interval([by[arm, s][key] for s in seeds])
                               for key in ("reward", "nonscout_boom")}
    for arm in arms[:-1]:
        result["minus_" + arms[-1]][arm] = {
            key: analysis.interval([by[arm, s][key] - by[arms[-1], s][key] for s in seeds])
            for key in ("reward", "nonscout_boom")}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    parser.add_argument("--arms", nargs="+", default=["reinforce", "uniform_attention"],
                        help="learner[:field=value,...]; the last arm is the one the others are paired against")
    parser.add_argument("--train-steps", type=int, default=50_000)
    parser.add_argument("--eval-steps", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="runs at once (processes)")
    parser.add_argument("--out", default="benchmarks/results/positive_control.jsonl", help="JSON lines, appended")
    args = parser.parse_args(argv)
    for arm in args.arms:
        name, fields = parse_arm(arm)
        make_learner(name, SCENARIOS["private_signals"](), LearnerConfig(**fields))  # refuse a bad arm up front
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    rows = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run, arm, seed, args.train_steps, args.eval_steps) for arm, seed in jobs]
        for future in concurrent.futures.as_completed(futures):
            row = future.result()
            rows.append(row)
            print(json.dumps(row), flush=True)
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "a") as handle:  # one line per finished run: a long sweep keeps what it did
                handle.write(json.dumps(row) + "\n")
    print(json.dumps(summary(rows, args.arms), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
