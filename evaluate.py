"""Evaluate HomoEcon learners: rollouts, figures, ablations and a report (DESIGN.md section 6).

    python evaluate.py                                    # untrained (freshly initialised) REINFORCE agents
    python evaluate.py --run runs/<run_name> --out eval_run
    python evaluate.py --steps 600 --seeds 5 --num-agents 100 --ablation-seeds 10

Top to bottom:
1. Main rollouts: `--seeds` episodes of `--steps` steps on the batched `Economy`, driven by the
   learner (the trained run's, or freshly initialised REINFORCE agents). The learners keep learning
   during these rollouts, as they do in training (`--no-learn` freezes their weights; newborns
   inherit their parents' networks either way): the economy is a population that learns and
   evolves, and the research questions ask how it changes over time. The first seed is recorded in
   detail for the figures; every seed contributes to the means and 95% confidence intervals.
2. Ablations over `--ablation-seeds` paired seeds. Per seed, every arm starts from fresh networks,
   trains (learning on) for `--ablation-train-steps` steps on economy seed A, then is evaluated
   frozen for `--ablation-steps` steps on a held-out economy seed B; A, B and the learner's seed are
   shared by all arms of a seed, so arms are compared seed by seed (paired differences):
   - social filter: REINFORCE with its learned attention vs the `uniform_attention` ablation;
   - tastes: REINFORCE with heterogeneous vs homogeneous utility weights;
   - policy: trained vs uniformly random actions (trained = the run's learner, frozen, with `--run`;
     else the REINFORCE arm above, i.e. after the short training).
   Outcomes: mean reward, Gini of wealth, specialization index and trade volume.
3. Outputs in `--out`: trade_scatter/step_XXXX.png, trade.gif, gini.png, dashboard.png, one PNG per
   single figure, metrics.json, genealogy.csv and report.md. Every number in report.md is read from
   the dict that metrics.json holds. Every file is written atomically (temporary file + rename).

This script runs the rollouts and writes the files; homoecon_env.diagnostics turns the recorded
traces into numbers (analysis), figures (report_figures, drawn by plots) and report.md (report).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import io
import json
import multiprocessing
import os
import queue
import time
import typing
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from agents import LearnerConfig, make_learner
from agents.checkpoint import load_checkpoint
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Economy
from homoecon_env.core.lifecycle import ALIVE, DEATH_CAUSES
from homoecon_env.core.production import JobTable, seasonal_factor
from homoecon_env.diagnostics import analysis, metrics, report_figures
from homoecon_env.diagnostics.report import NEAR_UNIFORM_ENTROPY, render_report
from homoecon_env.files import atomic_write_text
from train import economy_from_json, field_comments, seed_everything


@dataclass(frozen=True)
class Args:
    """What to evaluate, for how long, and where to write."""

    run: Optional[str] = None  # trained run folder from train.py (config.json, checkpoint.pt); default: untrained REINFORCE agents
    out: str = "eval_out"  # output folder (created if missing; the files in it are replaced atomically)
    steps: int = 300  # env steps per main rollout (a full cycle of the default seasons is 200 steps)
    seeds: int = 3  # main rollouts, one economy seed each; the figures show the first
    seed: int = 0  # base seed from which every rollout's economy and learner seeds are derived
    num_agents: Optional[int] = None  # population size; default: the run's, else EconomyConfig's (50)
    learn: bool = True  # learners keep learning during the main rollouts (--no-learn: frozen weights)
    frames: int = 10  # trade-scatter frames, evenly spaced over the first rollout (the GIF's frames too)
    ablation_seeds: int = 5  # paired seeds per ablation arm (0 skips the ablations)
    ablation_train_steps: int = 500  # steps each ablation arm trains from fresh networks, per seed
    ablation_steps: int = 100  # frozen evaluation steps per ablation arm and seed, on a held-out economy seed
    workers: int = 2  # processes running rollouts and ablation arms in parallel (1: all in this process)
    threads: int = 1  # torch CPU threads per process


GRAPH_SNAPSHOTS = 25  # favourite graphs and wealth cross-sections recorded per main rollout
STREAM_MAIN, STREAM_TRAIN, STREAM_HELD_OUT = 0, 1, 2  # seed streams (see derive_seed)


# -- flags ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """One flag per Args field; its help is the comment after the field."""
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    comments, hints = field_comments(Args), typing.get_type_hints(Args)
    for field in dataclasses.fields(Args):
        name = "--" + field.name.replace("_", "-")
        help_text = f"{comments[field.name]} (default: {field.default})"
        kind = hints[field.name]
        if kind is bool:
            parser.add_argument(name, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=field.default, help=help_text)
            continue
        inner = next(a for a in typing.get_args(kind) if a is not type(None)) if typing.get_args(kind) else kind
        metavar = {"run": "DIR", "out": "DIR"}.get(field.name, inner.__name__.upper())
        parser.add_argument(name, dest=field.name, type=inner, default=field.default, metavar=metavar, help=help_text)
    return parser


def check_args(args: Args) -> None:
    """Refuse bad settings before anything runs; ValueError names the flag and the allowed range."""
    minimum = {"steps": 2, "seeds": 1, "frames": 1, "ablation_seeds": 0, "ablation_train_steps": 0,
               "ablation_steps": 2, "workers": 1, "threads": 1, "seed": 0}
    for name, low in minimum.items():
        value = getattr(args, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be an int >= {low}, got {value!r}")
    if args.ablation_seeds == 1:
        raise ValueError("--ablation-seeds must be 0 (no ablations) or >= 2 (a confidence interval needs two)")
    if args.num_agents is not None and (not isinstance(args.num_agents, int) or args.num_agents < 2):
        raise ValueError(f"--num-agents must be an int >= 2, got {args.num_agents!r}")
    if args.run is not None:
        for name in ("config.json", "checkpoint.pt"):
            if not os.path.isfile(os.path.join(args.run, name)):
                raise ValueError(f"--run {args.run!r} must hold {name} (a train.py run folder)")


# -- seeds and learners ---------------------------------------------------------------------------
def derive_seed(base: int, stream: int, index: int) -> int:
    """An economy seed that is a pure function of (base seed, stream, index), independent across streams."""
    return int(np.random.SeedSequence([base, stream, index]).generate_state(1)[0])


@dataclass(frozen=True)
class Source:
    """Where the evaluated economy and learner come from: a trained run, or fresh defaults."""

    economy: EconomyConfig
    learner_name: str  # the run's learner, or "reinforce"
    learner_config: LearnerConfig
    run_dir: Optional[str]  # None: untrained


def load_source(args: Args) -> Source:
    """The run's economy and learner settings (checked against --num-agents), or the defaults."""
    if args.run is None:
        economy = EconomyConfig() if args.num_agents is None else EconomyConfig(num_agents=args.num_agents)
        return Source(economy, "reinforce", LearnerConfig(), None)
    with open(os.path.join(args.run, "config.json")) as stream:
        saved = json.load(stream)
    economy = economy_from_json(saved["economy"])
    if args.num_agents is not None and args.num_agents != economy.num_agents:
        raise ValueError(f"--num-agents {args.num_agents}: the run in {args.run!r} was trained with "
                         f"{economy.num_agents} agents (its networks are per agent); leave --num-agents out")
    return Source(economy, saved["run"]["learner"], LearnerConfig(**saved["learner"]), args.run)


@dataclass(frozen=True)
class Task:
    """One rollout (optionally after a short training phase); runs in a worker process."""

    key: tuple  # ("main", k) or ("ablation", learner, heterogeneous tastes, seed index)
    economy: EconomyConfig
    learner: str  # a name in agents.LEARNERS, or "run" for the trained run's learner
    learner_config: LearnerConfig
    economy_seed: int  # seed of the recorded rollout
    steps: int  # recorded steps
    learn: bool  # update weights during the recorded rollout
    run_dir: Optional[str] = None
    train_seed: int = 0  # economy seed of the training phase
    train_steps: int = 0  # 0: no training phase
    detail: bool = False  # record everything the figures need
    frames: int = 0


def build_learner(task: Task):
    """A fresh learner, or the trained run's learner restored from its checkpoint."""
    if task.learner != "run":
        return make_learner(task.learner, task.economy, task.learner_config)
    with open(os.path.join(task.run_dir, "config.json")) as stream:
        name = json.load(stream)["run"]["learner"]
    learner = make_learner(name, task.economy, task.learner_config)
    learner.load_state_dict(load_checkpoint(os.path.join(task.run_dir, "checkpoint.pt"))["learner"])
    return learner


# -- recording ------------------------------------------------------------------------------------
class Trace:
    """What a rollout leaves behind: per-step figures always; with ``detail``, everything the figures,
    the genealogy and the report need (time series, favourite graphs, wealth cross-sections, frames).

    Arrays are NumPy, so a Trace pickles cheaply back from a worker process.
    """

    def __init__(self, economy: Economy, steps: int, detail: bool, frames: int):
        config = economy.config
        self.config, self.steps, self.detail = config, steps, detail
        n = config.num_agents
        self.series: dict[str, list] = {key: [] for key in ("reward", "gini", "trade_volume", "births", "deaths_age",
                                                            "deaths_starvation")}
        self.jobs = np.zeros((steps, n), dtype=np.int16)  # [T, N] job chosen by the row's acting agent
        self.ids = np.zeros((steps, n), dtype=np.int64)  # [T, N] acting agent id of each row
        if not detail:
            return
        self.series.update({key: [] for key in ("totals", "prices", "job_shares", "spectra", "participation_ratio",
                                                "attention_entropy", "entropy_nats")})
        self.snapshot_steps = set(np.unique(np.linspace(1, steps, min(GRAPH_SNAPSHOTS, steps)).round().astype(int)).tolist())
        self.frame_steps = set(np.unique(np.linspace(1, steps, min(frames, steps)).round().astype(int)).tolist())
        self.graphs: list[dict] = []  # one per snapshot step
        self.cross_sections: list[dict] = []  # [N] arrays per snapshot step
        self.frames: list[dict] = []  # pre/post trade holdings and prices at frame steps
        self.final: dict = {}
        state = economy.state
        self.agents: dict[int, dict] = {}  # agent id -> genealogy record
        for slot in range(n):
            self._born(int(state.agent_ids[slot]), (), 0, 0, slot, state.utility_weights[slot], founder=True)
        self.lifetime_reward: dict[int, float] = {}

    def _born(self, agent, parents, generation, step, slot, tastes, founder=False) -> None:
        self.agents[agent] = {"parents": tuple(parents), "generation": int(generation), "birth_step": int(step),
                              "slot": int(slot), "tastes": [float(w) for w in tastes], "initial": founder,
                              "death_step": None, "death_cause": ""}

    def record(self, t: int, before, observation, actions, out, economy: Economy, attention) -> None:
        """Record step t (1-based): ``before`` is the state the agents acted in."""
        stats = economy.last_stats
        for key in ("gini", "trade_volume", "births", "deaths_age", "deaths_starvation"):
            self.series[key].append(float(stats[key]))
        self.series["reward"].append(float(out.reward.mean()))
        self.jobs[t - 1] = actions.job.numpy()
        self.ids[t - 1] = out.acting_ids.numpy()
        if not self.detail:
            return
        config = self.config
        self.series["totals"].append(np.asarray(stats["totals"], dtype=np.float64))
        self.series["prices"].append(np.asarray(stats["prices"], dtype=np.float64))
        self.series["job_shares"].append(np.asarray(stats["job_counts"], dtype=np.float64) / config.num_agents)
        broadcasts = actions.broadcast.double().numpy()  # [N, B] messages sent this step
        spectrum = metrics.covariance_spectrum(broadcasts)
        self.series["spectra"].append(spectrum)
        self.series["participation_ratio"].append(metrics.participation_ratio(spectrum))
        mask = observation.peer_mask.numpy()
        weights = None if attention is None else attention.detach().double().numpy()  # [N, K]
        self.series["attention_entropy"].append(np.nan if weights is None else
                                                metrics.attention_entropy(weights, mask, normalised=True))
        self.series["entropy_nats"].append(np.nan if weights is None else metrics.attention_entropy(weights, mask))

        # Per-agent figures of this step.
        reward = out.reward.numpy()
        for agent, value in zip(out.acting_ids.tolist(), reward.tolist()):
            self.lifetime_reward[agent] = self.lifetime_reward.get(agent, 0.0) + value
        before_trade, after_trade = out.pre_trade.numpy(), out.trade.allocation.numpy()  # [N, R]
        if t in self.snapshot_steps and weights is not None:
            self.graphs.append(analysis.graph_snapshot(t, weights, observation.peer_index.numpy(), mask,
                                                       after_trade.sum(axis=1)))
        if t in self.snapshot_steps:
            self.cross_sections.append({
                "step": t, "wealth": after_trade.sum(axis=1), "age": before.ages.numpy().astype(np.float64),
                "taste": before.utility_weights.numpy().copy(), "job": actions.job.numpy().copy(),
                "effort": actions.effort.double().numpy().copy(), "generation": before.generation.numpy().astype(np.float64)})
        if t in self.frame_steps:
            self.frames.append({"step": t, "before": before_trade, "after": after_trade,
                                "prices": out.trade.prices.numpy().copy()})
        if t == self.steps:  # the last step's population, for the snapshot figures
            self.final = {"ages": before.ages.numpy(), "broadcasts": broadcasts, "jobs": actions.job.numpy(),
                          "attention": weights, "peer_index": observation.peer_index.numpy(),
                          "effort": out.effort.numpy(), "consumption": out.consumed.numpy(),
                          "holdings_before": before_trade, "holdings_after": after_trade}

        # Genealogy: deaths of acting agents, then newborns in their slots.
        cause = out.death_cause.numpy()
        for slot in np.flatnonzero(cause != ALIVE).tolist():
            record = self.agents[int(out.acting_ids[slot])]
            record["death_step"], record["death_cause"] = t, DEATH_CAUSES[int(cause[slot])]
        state = economy.state
        for slot in out.births.born.nonzero().squeeze(1).tolist():
            parents = [int(p) for p in state.parent_ids[slot].tolist() if p >= 0]
            self._born(int(state.agent_ids[slot]), parents, int(state.generation[slot]), t, slot,
                       state.utility_weights[slot])

    def result(self, economy: Economy) -> dict:
        """Plain arrays and records (picklable); ``economy`` is the economy after the last step."""
        data = {key: np.asarray(values) for key, values in self.series.items()}
        data.update(jobs=self.jobs, ids=self.ids)
        if self.detail:
            state = economy.state
            data.update(graphs=self.graphs, cross_sections=self.cross_sections, frames=self.frames, final=self.final,
                        agents=self.agents, lifetime_reward=self.lifetime_reward,
                        alive_at_end=state.agent_ids[state.alive].tolist())
        return data


def run_task(task: Task, report: Callable[[int], None]) -> dict:
    """Train (if asked) then record one rollout. ``report(k)`` is told of every k steps done."""
    seed_everything(task.learner_config.seed)
    learner = build_learner(task)
    if task.train_steps:
        economy = Economy(task.economy.replace(max_steps=task.train_steps))
        observation = economy.reset(seed=task.train_seed)
        for _ in range(task.train_steps):
            out = economy.step(learner.act(observation))
            learner.update(out)
            learner.on_births(out.births)
            observation = out.observation
            report(1)
    economy = Economy(task.economy.replace(max_steps=task.steps))
    observation = economy.reset(seed=task.economy_seed)
    trace = Trace(economy, task.steps, task.detail, task.frames)
    for t in range(1, task.steps + 1):
        before = economy.state
        actions = learner.act(observation)
        out = economy.step(actions)
        if task.learn:
            learner.update(out)
        learner.on_births(out.births)  # inheritance is part of the economy, frozen or not
        trace.record(t, before, observation, actions, out, economy, getattr(learner, "last_attention", None))
        observation = out.observation
        report(1)
    return trace.result(economy)


# -- running tasks (in parallel, with one progress bar) ---------------------------------------------
_PROGRESS: Optional[multiprocessing.Queue] = None


def _init_worker(threads: int, progress) -> None:
    global _PROGRESS
    torch.set_num_threads(threads)
    _PROGRESS = progress


def _worker(task: Task) -> dict:
    pending = [0]

    def report(done: int) -> None:  # batch the messages: one per 10 steps
        pending[0] += done
        if pending[0] >= 10:
            _PROGRESS.put(pending[0])
            pending[0] = 0

    result = run_task(task, report)
    _PROGRESS.put(pending[0])
    return result


def run_tasks(tasks: list[Task], workers: int, threads: int) -> dict[tuple, dict]:
    """Run every task (in ``workers`` processes when > 1) under one tqdm bar counting env steps."""
    total = sum(task.train_steps + task.steps for task in tasks)
    results: dict[tuple, dict] = {}
    with tqdm(total=total, desc="evaluate", unit="step", dynamic_ncols=True, mininterval=0.5) as bar:
        if workers == 1:
            torch.set_num_threads(threads)
            for task in tasks:
                results[task.key] = run_task(task, bar.update)
            return results
        context = multiprocessing.get_context("spawn")
        progress = context.Queue()
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context,
                                                    initializer=_init_worker, initargs=(threads, progress)) as pool:
            futures = {pool.submit(_worker, task): task.key for task in tasks}
            waiting = set(futures)
            while waiting:
                done, waiting = concurrent.futures.wait(waiting, timeout=0.3)
                for future in done:
                    results[futures[future]] = future.result()  # re-raises a worker's error here
                try:
                    while True:
                        bar.update(progress.get_nowait())
                except queue.Empty:
                    pass
        bar.update(total - bar.n)
    return results


# -- files ------------------------------------------------------------------------------------------
def write_genealogy(path: str, rows: list[dict]) -> None:
    """genealogy.csv: one row per agent of the first rollout (atomic)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


# -- evaluation -----------------------------------------------------------------------------------
ABLATION_ARMS = {  # arm -> (learner, heterogeneous tastes; None: the evaluated economy's setting)
    "learned": ("reinforce", None),
    "uniform": ("uniform_attention", None),
    "heterogeneous": ("reinforce", True),
    "homogeneous": ("reinforce", False),
    "random": ("random", None),
}
LEARNING_ARMS = ("reinforce", "uniform_attention")  # learners that train before their frozen evaluation
ABLATIONS = {"social_filter": ("learned", "uniform"), "tastes": ("heterogeneous", "homogeneous"),
             "policy": ("trained", "random")}


def plan_tasks(args: Args, source: Source) -> tuple[list[Task], dict[str, tuple]]:
    """The main rollouts and the ablation rollouts (arms sharing a setting share a task).

    Returns the tasks and, for every ablation arm, the key stem of its tasks (key + (seed index,)).
    """
    trained = "run" if source.run_dir else "reinforce"
    tasks = [Task(key=("main", k), economy=source.economy, learner=trained,
                  learner_config=dataclasses.replace(source.learner_config, seed=args.seed + k),
                  economy_seed=derive_seed(args.seed, STREAM_MAIN, k), steps=args.steps, learn=args.learn,
                  run_dir=source.run_dir, detail=True, frames=args.frames if k == 0 else 0)
             for k in range(args.seeds)]
    if not args.ablation_seeds:
        return tasks, {}
    arms = dict(ABLATION_ARMS)
    arms["trained"] = ("run", None) if source.run_dir else ABLATION_ARMS["learned"]
    stems: dict[str, tuple] = {}
    for arm, (learner, heterogeneous) in arms.items():
        tastes = source.economy.heterogeneous_tastes if heterogeneous is None else heterogeneous
        stems[arm] = ("ablation", learner, tastes)
    for stem in dict.fromkeys(stems.values()):
        _, learner, tastes = stem
        trains = learner in LEARNING_ARMS
        for i in range(args.ablation_seeds):
            train_seed = derive_seed(args.seed, STREAM_TRAIN, i)
            tasks.append(Task(key=stem + (i,), economy=source.economy.replace(heterogeneous_tastes=tastes),
                              learner=learner, learner_config=dataclasses.replace(source.learner_config,
                                                                                  seed=train_seed % 2**31),
                              economy_seed=derive_seed(args.seed, STREAM_HELD_OUT, i), steps=args.ablation_steps,
                              learn=False, run_dir=source.run_dir, train_seed=train_seed,
                              train_steps=args.ablation_train_steps if trains else 0))
    return tasks, stems


def seasons(config: EconomyConfig, steps: int) -> np.ndarray:
    """[T, J] every job's seasonal factor at the production of steps 1..T (step t+1 is produced at t)."""
    table = JobTable.from_config(config)
    return np.stack([seasonal_factor(table, t) for t in range(steps)])


def evaluate(args: Args) -> dict:
    """Run the evaluation described in the module docstring; write every output to ``args.out``.

    Returns the metrics dict that metrics.json holds. Raises ValueError on bad settings (before running).
    """
    check_args(args)
    start = time.perf_counter()
    source = load_source(args)
    config = source.economy
    os.makedirs(args.out, exist_ok=True)

    # Rollouts: the main ones and every ablation arm, in parallel under one progress bar.
    tasks, stems = plan_tasks(args, source)
    results = run_tasks(tasks, args.workers, args.threads)
    traces = [results[("main", k)] for k in range(args.seeds)]

    # Numbers.
    season = seasons(config, args.steps)
    per_seed = [analysis.summarise_rollout(trace, config, season) for trace in traces]
    lineage, rows = analysis.genealogy(traces[0], list(config.resources))
    ablations = {}
    if stems:
        outcomes = {arm: [analysis.ablation_outcome(results[stem + (i,)], config.num_jobs)
                          for i in range(args.ablation_seeds)] for arm, stem in stems.items()}
        ablations = {name: analysis.compare({first: outcomes[first], second: outcomes[second]}, first, second)
                     for name, (first, second) in ABLATIONS.items()}

    # Files: figures, genealogy, then metrics.json and report.md from one dict.
    figures = report_figures.draw_figures(traces[0], config, args.out)
    write_genealogy(os.path.join(args.out, "genealogy.csv"), rows)
    meta = {"run": args.run, "learner": source.learner_name, "learn": args.learn, "num_agents": config.num_agents,
            "steps": args.steps, "seeds": args.seeds, "early_steps": analysis.edge_windows(args.steps)[0].stop,
            "snapshots": len(traces[0]["cross_sections"]), "broadcast_dim": config.broadcast_dim,
            "resources": list(config.resources), "jobs": [job.name for job in config.jobs],
            "ci_percent": analysis.CI_PERCENT, "near_uniform_entropy": NEAR_UNIFORM_ENTROPY,
            "top_share": analysis.TOP_SHARE, "min_life_steps": analysis.MIN_LIFE_STEPS,
            "ablation_seeds": args.ablation_seeds, "ablation_train_steps": args.ablation_train_steps,
            "ablation_steps": args.ablation_steps, "wall_seconds": round(time.perf_counter() - start, 1)}
    result = analysis.to_json({"meta": meta, "args": dataclasses.asdict(args), "economy": dataclasses.asdict(config),
                               "learner_config": dataclasses.asdict(source.learner_config),
                               "main": {"summary": analysis.summarise_seeds(per_seed), "per_seed": per_seed},
                               "genealogy": lineage, "ablations": ablations, "figures": figures})
    atomic_write_text(os.path.join(args.out, "metrics.json"), json.dumps(result, indent=2))
    atomic_write_text(os.path.join(args.out, "report.md"), render_report(result))
    return result


def main(argv=None) -> None:
    parser = build_parser()
    args = Args(**vars(parser.parse_args(argv)))
    try:
        check_args(args)
        load_source(args)
    except ValueError as error:
        parser.error(str(error))
    result = evaluate(args)
    print(f"done in {result['meta']['wall_seconds']} s: {os.path.join(args.out, 'report.md')}")


if __name__ == "__main__":
    main()
