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
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import io
import json
import math
import multiprocessing
import os
import queue
import time
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional

import imageio.v3 as iio
import numpy as np
import torch
from tqdm import tqdm

from agents import LearnerConfig, make_learner
from agents.checkpoint import load_checkpoint
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Economy
from homoecon_env.core import consumption as consumption_stage
from homoecon_env.core.lifecycle import ALIVE, DEATH_CAUSES
from homoecon_env.core.production import JobTable, seasonal_factor
from homoecon_env.diagnostics import metrics, plots
from homoecon_env.files import atomic_write_bytes
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


CI_PERCENT = 95  # confidence level of every interval (metrics.mean_ci95)
EDGE_FRACTION = 0.2  # "early" = the first 20% of a rollout's steps, "late" = the last 20%
GRAPH_SNAPSHOTS = 25  # favourite graphs and wealth cross-sections recorded per main rollout
MIN_LIFE_STEPS = 3  # an agent counts for specialization once it chose a job on at least this many steps
NEAR_UNIFORM_ENTROPY = 0.95  # normalised attention entropy above which report.md calls attention near-uniform
TOP_SHARE = 0.1  # the richest fraction whose wealth share is reported
MAX_GENEALOGY_FOR_DESCENDANTS = 50_000  # above this many agents, descendants are not counted
MEASURES = ("mean_reward", "gini", "specialization", "trade_volume")  # ablation outcomes
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
            graph = metrics.favourite_graph(weights, observation.peer_index.numpy(), mask)
            summary = metrics.graph_summary(graph)
            mutual = sum(1 for a, b in graph.edges if graph.has_edge(b, a))
            self.graphs.append({
                "step": t, "components": summary["num_components"], "shapes": len(summary["component_hashes"]),
                "max_in_degree": int(summary["in_degree"].max(initial=0)), "mutual_fraction": mutual / config.num_agents,
                "pagerank_max": float(summary["pagerank"].max(initial=0.0)), "mean_clustering": summary["mean_clustering"],
                "in_degree_wealth_corr": metrics.spearman(summary["in_degree"].astype(np.float64), after_trade.sum(axis=1)),
                "component_hashes": summary["component_hashes"], "component_sizes": summary["component_sizes"],
                "component_examples": summary["component_examples"], "in_degree": summary["in_degree"],
                "pagerank": summary["pagerank"]})
        if t in self.snapshot_steps:
            self.cross_sections.append({
                "step": t, "wealth": after_trade.sum(axis=1), "age": before.ages.numpy().astype(np.float64),
                "taste": before.utility_weights.numpy().copy(), "job": actions.job.numpy().copy(),
                "effort": actions.effort.double().numpy().copy(), "generation": before.generation.numpy().astype(np.float64)})
        if t in self.frame_steps:
            self.frames.append({"step": t, "before": before_trade, "after": after_trade,
                                "prices": out.trade.prices.numpy().copy()})
        if t == self.steps:  # the last step's population, for the snapshot figures
            consume = actions.consume.double().clamp(0.0, 1.0)
            consumed, _, _ = consumption_stage.consume(out.trade.allocation, consume, before.utility_weights,
                                                       actions.effort.double(), config)  # [N, R]
            self.final = {"ages": before.ages.numpy(), "broadcasts": broadcasts, "jobs": actions.job.numpy(),
                          "attention": weights, "peer_index": observation.peer_index.numpy(),
                          "effort": actions.effort.double().numpy(), "consumption": consumed.numpy(),
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


# -- analysis: numbers for metrics.json ----------------------------------------------------------------
def finite(value) -> Optional[float]:
    """A JSON-safe float: None for nan or inf (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def nanmean(values) -> Optional[float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return finite(values.mean()) if values.size else None


def edge_windows(steps: int) -> tuple[slice, slice]:
    """The early and late windows of a rollout (EDGE_FRACTION of its steps each, at least one step)."""
    width = max(1, round(EDGE_FRACTION * steps))
    return slice(0, width), slice(steps - width, steps)


def life_job_history(jobs: np.ndarray, ids: np.ndarray, window: slice) -> tuple[np.ndarray, np.ndarray]:
    """Job choices by agent rather than by row: history [L, A] (step of life within the window, agent)
    and mask [L, A], True where counted. Agents with fewer than MIN_LIFE_STEPS steps are not counted:
    a single choice is trivially "specialized"."""
    chosen, agent = jobs[window], ids[window]  # [W, N]
    time_index = np.repeat(np.arange(chosen.shape[0]), chosen.shape[1])
    _, column = np.unique(agent.ravel(), return_inverse=True)
    first = np.full(column.max(initial=-1) + 1, chosen.shape[0])
    np.minimum.at(first, column, time_index)
    position = time_index - first[column]  # an agent holds one row from birth to death
    history = np.zeros((position.max(initial=0) + 1, len(first)), dtype=np.int64)
    mask = np.zeros_like(history, dtype=bool)
    history[position, column] = chosen.ravel()
    mask[position, column] = True
    mask &= mask.sum(axis=0) >= MIN_LIFE_STEPS
    return history, mask


def specialization(trace: dict, num_jobs: int, window: slice) -> tuple[float, float]:
    """(specialization index, division of labour) of the agents living in a window of steps."""
    history, mask = life_job_history(trace["jobs"], trace["ids"], window)
    return (metrics.specialization_index(history, num_jobs, mask),
            metrics.division_of_labour(history, num_jobs, mask))


def summarise_rollout(trace: dict, config: EconomyConfig) -> dict:
    """Flat dict name -> number (None where undefined) of one main rollout: what report.md quotes."""
    steps = len(trace["reward"])
    early, late = edge_windows(steps)
    goods, jobs = list(config.resources), [job.name for job in config.jobs]
    summary: dict[str, Optional[float]] = {}

    def edges(name: str, values: np.ndarray) -> None:
        summary[f"{name}_early"], summary[f"{name}_late"] = nanmean(values[early]), nanmean(values[late])
        both = summary[f"{name}_early"] is not None and summary[f"{name}_late"] is not None
        summary[f"{name}_change"] = summary[f"{name}_late"] - summary[f"{name}_early"] if both else None

    # Outcomes over time.
    edges("reward", trace["reward"])
    edges("gini", trace["gini"])
    summary["gini_mean"] = nanmean(trace["gini"])
    summary["trade_volume_mean"] = nanmean(trace["trade_volume"])
    for name, window in (("early", early), ("late", late), ("all", slice(0, steps))):
        summary[f"specialization_{name}"], summary[f"division_of_labour_{name}"] = \
            specialization(trace, config.num_jobs, window)
    summary["specialization_change"] = summary["specialization_late"] - summary["specialization_early"]
    shares = trace["job_shares"]
    for j, name in enumerate(jobs):
        summary[f"job_share_late_{name}"] = nanmean(shares[late, j])

    # Social filtering: attention entropy and the favourite graph.
    edges("attention_entropy", trace["attention_entropy"])
    edges("attention_entropy_nats", trace["entropy_nats"])
    width = late.stop - late.start
    graphs = trace["graphs"]
    for key in ("components", "shapes", "max_in_degree", "mutual_fraction", "pagerank_max", "mean_clustering",
                "in_degree_wealth_corr"):
        summary[f"graph_{key}_early"] = nanmean([g[key] for g in graphs if g["step"] <= width]) if graphs else None
        summary[f"graph_{key}_late"] = nanmean([g[key] for g in graphs if g["step"] > steps - width]) if graphs else None

    # Communication: effective dimension of the messages.
    spectra = trace["spectra"]  # [T, B]
    totals = spectra.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        first_share = np.where(totals > 0, spectra[:, 0] / totals, np.nan)
        two_share = np.where(totals > 0, spectra[:, :2].sum(axis=1) / totals, np.nan)
    edges("participation_ratio", trace["participation_ratio"])
    late_ratio = summary["participation_ratio_late"]
    summary["participation_fraction_late"] = None if late_ratio is None else late_ratio / config.broadcast_dim
    edges("pc1_share", first_share)
    summary["pc12_share_late"] = nanmean(two_share[late])

    # Inequality: what goes with wealth (Spearman over agents, averaged over snapshots).
    drivers = {"age": lambda c: c["age"], "generation": lambda c: c["generation"], "effort": lambda c: c["effort"],
               f"taste_{goods[0]}": lambda c: c["taste"][:, 0],
               "taste_concentration": lambda c: c["taste"].max(axis=1)}
    if config.num_jobs == 2:
        drivers[f"job_{jobs[1]}"] = lambda c: (c["job"] == 1).astype(np.float64)
    for name, column in drivers.items():
        summary[f"wealth_corr_{name}"] = nanmean([metrics.spearman(column(c), c["wealth"]) for c in trace["cross_sections"]])
    top_shares = []
    for section in trace["cross_sections"]:
        if section["step"] > steps - width:
            wealth = np.sort(section["wealth"])[::-1]
            top = max(1, int(round(TOP_SHARE * len(wealth))))
            top_shares.append(wealth[:top].sum() / max(wealth.sum(), 1e-300))
    summary["top_share_late"] = nanmean(top_shares)

    # Markets: do relative prices follow scarcity, and the seasons?
    correlation = metrics.price_scarcity_correlation(trace["prices"], trace["totals"])
    summary["price_scarcity_spearman"] = finite(correlation["mean"])
    summary["price_scarcity_pooled"] = finite(correlation["pooled"])
    relative = metrics.relative_prices(trace["prices"])  # [T, R]
    summary["gini_price_imbalance_corr"] = finite(metrics.spearman(relative.max(axis=1), trace["gini"]))
    table = JobTable.from_config(config)
    season = np.stack([seasonal_factor(table, t).numpy() for t in range(steps)])  # [T, J]; step t+1 produced at t
    for j, job in enumerate(config.jobs):
        good = int(np.argmax(job.output))
        in_season = season[:, j] >= 0.5
        summary[f"price_in_season_{goods[good]}"] = nanmean(relative[in_season, good])
        summary[f"price_out_of_season_{goods[good]}"] = nanmean(relative[~in_season, good])

    # Population.
    for key in ("births", "deaths_age", "deaths_starvation"):
        summary[f"{key}_total"] = int(trace[key].sum())
    return summary


def interval(values) -> dict:
    """{"mean", "ci95"} of samples over seeds; a half-width that is float noise around equal samples is 0."""
    mean, half_width = metrics.mean_ci95(np.asarray(values, dtype=np.float64))
    if math.isfinite(half_width) and half_width <= 1e-12 * max(1.0, abs(mean)):
        half_width = 0.0
    return {"mean": finite(mean), "ci95": finite(half_width)}


def summarise_seeds(per_seed: list[dict]) -> dict:
    """name -> {"mean", "ci95"} over seeds (ci95 None with one seed); None-valued seeds are skipped."""
    summary = {}
    for key in per_seed[0]:
        values = [s[key] for s in per_seed if s.get(key) is not None]
        if not values:
            summary[key] = {"mean": None, "ci95": None, "seeds": 0}
            continue
        summary[key] = {**interval(values), "seeds": len(values)}
    return summary


def genealogy(trace: dict, goods: list[str]) -> tuple[dict, list[dict]]:
    """Lineage summary for metrics.json and one row per agent for genealogy.csv."""
    agents, alive = trace["agents"], set(trace["alive_at_end"])
    born = {a: r["parents"] for a, r in agents.items() if not r["initial"]}
    causes = {a: r["death_cause"] for a, r in agents.items() if r["death_cause"]}
    stats = metrics.lifecycle_stats(born, causes, alive)
    children: dict[int, list[int]] = {a: [] for a in agents}
    for agent, parents in born.items():
        for parent in parents:
            children[parent].append(agent)
    # Descendants as bit sets (Python ints), children before parents: a child's id is always larger.
    count_descendants = len(agents) <= MAX_GENEALOGY_FOR_DESCENDANTS
    descendants: dict[int, int] = {}
    living = sum(1 << a for a in alive)
    if count_descendants:
        for agent in sorted(agents, reverse=True):
            bits = 0
            for child in children[agent]:
                bits |= (1 << child) | descendants[child]
            descendants[agent] = bits
    rows = []
    for agent in sorted(agents):
        record = agents[agent]
        parents = list(record["parents"]) + [None, None]
        bits = descendants.get(agent, 0)
        rows.append({
            "agent": f"agent_{agent}", "parent_1": "" if parents[0] is None else f"agent_{parents[0]}",
            "parent_2": "" if parents[1] is None else f"agent_{parents[1]}", "generation": record["generation"],
            "birth_step": record["birth_step"], "death_step": "" if record["death_step"] is None else record["death_step"],
            "death_cause": record["death_cause"], "slot": record["slot"],
            **{f"taste_{good}": round(w, 6) for good, w in zip(goods, record["tastes"])},
            "lifetime_reward": round(trace["lifetime_reward"].get(agent, 0.0), 6), "children": len(children[agent]),
            "descendants": bits.bit_count() if count_descendants else "",
            "living_descendants": (bits & living).bit_count() if count_descendants else ""})
    initial = [a for a, r in agents.items() if r["initial"]]
    surviving = sum(1 for a in initial if a in alive or descendants.get(a, 0) & living) if count_descendants else None
    prolific = sorted((r for r in rows if r["children"]), key=lambda r: (-(r["descendants"] or 0), -r["children"]))[:5]
    summary = {
        "agents": len(agents), "initial_population": len(initial), "births": stats["births"],
        "founder_births": stats["founder_births"], "deaths": stats["deaths"], "deaths_age": stats["deaths_age"],
        "deaths_starvation": stats["deaths_starvation"], "lineage_depth": stats["lineage_depth"],
        "mean_generation_alive": stats["mean_generation"], "max_generation_alive": stats["max_generation"],
        "founder_lineages_surviving": surviving,
        "most_prolific": [{k: r[k] for k in ("agent", "generation", "birth_step", "children", "descendants",
                                             "living_descendants")} for r in prolific]}
    return summary, rows


def ablation_outcome(trace: dict, config: EconomyConfig) -> dict:
    """The four outcome measures of one frozen evaluation rollout."""
    steps = len(trace["reward"])
    index, _ = specialization(trace, config.num_jobs, slice(0, steps))
    return {"mean_reward": float(trace["reward"].mean()), "gini": float(trace["gini"].mean()),
            "specialization": float(index), "trade_volume": float(trace["trade_volume"].mean())}


def compare(arms: dict[str, list[dict]], first: str, second: str) -> dict:
    """Arms' per-seed outcomes -> mean and 95% CI per arm, the paired difference (first - second), a verdict."""
    result = {"arms": {}, "difference": {}, "verdict": {}, "first": first, "second": second}
    for name, outcomes in arms.items():
        result["arms"][name] = {}
        for measure in MEASURES:
            values = [o[measure] for o in outcomes]
            result["arms"][name][measure] = {**interval(values), "per_seed": [finite(v) for v in values]}
    for measure in MEASURES:
        difference = interval([a[measure] - b[measure] for a, b in zip(arms[first], arms[second])])
        result["difference"][measure] = difference
        significant = difference["ci95"] is not None and abs(difference["mean"]) > difference["ci95"]
        result["verdict"][measure] = ("higher" if difference["mean"] > 0 else "lower") if significant \
            else "no significant difference"
    return result


# -- figures --------------------------------------------------------------------------------------
def write_gif(path: str, images: list[np.ndarray], seconds_per_frame: float = 0.8) -> None:
    """An endlessly looping GIF of equally sized RGB frames, written atomically."""
    data = iio.imwrite("<bytes>", np.stack(images), extension=".gif", duration=int(1000 * seconds_per_frame), loop=0)
    atomic_write_bytes(path, data)


def dashboard_history(trace: dict, config: EconomyConfig) -> dict:
    """The first rollout as the dict plots.dashboard takes (plots.DASHBOARD_KEYS)."""
    final = trace["final"]
    history = {
        "steps": np.arange(1, len(trace["reward"]) + 1), "gini": trace["gini"], "totals": trace["totals"],
        "prices": trace["prices"], "job_shares": trace["job_shares"], "births": trace["births"],
        "deaths_age": trace["deaths_age"], "deaths_starvation": trace["deaths_starvation"], "reward": trace["reward"],
        "participation_ratio": trace["participation_ratio"], "attention_entropy": trace["entropy_nats"],
        "spectra": trace["spectra"], "ages": final["ages"], "broadcasts": final["broadcasts"], "jobs": final["jobs"],
        "attention": final["attention"], "peer_index": final["peer_index"], "effort": final["effort"],
        "consumption": final["consumption"], "holdings_before": final["holdings_before"],
        "holdings_after": final["holdings_after"], "resource_names": list(config.resources),
        "job_names": [job.name for job in config.jobs], "max_age": config.max_age}
    if final["attention"] is None:  # a learner without attention (e.g. random): no social-filter panels
        for key in ("attention", "peer_index", "attention_entropy"):
            del history[key]
    return history


def draw_figures(trace: dict, config: EconomyConfig, out: str) -> dict:
    """Every figure of the first main rollout; returns name -> path relative to ``out``."""
    written: dict[str, Any] = {}

    def save(key: str, figure, name: str) -> None:
        plots.save_figure(figure, os.path.join(out, name))
        written[key] = name

    goods, job_names = list(config.resources), [job.name for job in config.jobs]
    steps = np.arange(1, len(trace["reward"]) + 1)
    final = trace["final"]

    # The seed's trade scatter, one frame per recorded step, and its animation.
    images, frame_steps = [], []
    for frame in trace["frames"]:
        figure = plots.trade_scatter(frame["before"], frame["after"], frame["prices"], goods)
        figure.suptitle(f"Market clearing at step {frame['step']}", fontsize=12)
        plots.save_figure(figure, os.path.join(out, "trade_scatter", f"step_{frame['step']:04d}.png"))
        images.append(plots.figure_to_rgb(figure))
        frame_steps.append(frame["step"])
    write_gif(os.path.join(out, "trade.gif"), images)
    written["trade_scatter"] = [f"trade_scatter/step_{t:04d}.png" for t in frame_steps]
    written["trade_scatter_steps"] = frame_steps
    written["trade_gif"] = "trade.gif"

    save("gini", plots.gini_over_time(trace["gini"], steps), "gini.png")
    save("resources_prices", plots.resources_over_time(trace["totals"], trace["prices"], goods, steps),
         "resources_prices.png")
    save("ages_reproduction", plots.ages_and_reproduction(final["ages"], trace["births"], trace["deaths_age"],
                                                          trace["deaths_starvation"], config.max_age, steps),
         "ages_reproduction.png")
    save("job_distribution", plots.job_distribution(trace["job_shares"], job_names, steps), "job_distribution.png")
    coords, explained = metrics.broadcast_pca(final["broadcasts"])
    save("broadcast_pca", plots.broadcast_pca(coords, final["jobs"], final["ages"], explained, job_names),
         "broadcast_pca.png")
    save("eigen_spectra", plots.eigen_spectra(trace["spectra"], steps), "eigen_spectra.png")
    save("effort_consumption", plots.effort_vs_consumption(final["effort"], final["consumption"], final["jobs"],
                                                           job_names), "effort_consumption.png")
    if final["attention"] is not None:
        save("attention_heatmap", plots.attention_heatmap(final["attention"], final["peer_index"]),
             "attention_heatmap.png")
        first, last = trace["graphs"][0], trace["graphs"][-1]
        for key, graph in (("topology_early", first), ("topology_late", last)):
            figure = plots.topology_histogram(graph["component_hashes"], graph["component_sizes"],
                                              graph["component_examples"])
            figure.suptitle(f"Favourite graph at step {graph['step']}", fontsize=12)
            save(key, figure, f"{key}.png")
        written["topology_steps"] = [first["step"], last["step"]]
        save("degree_pagerank", plots.degree_pagerank(last["in_degree"], last["pagerank"]), "degree_pagerank.png")
    save("dashboard", plots.dashboard(dashboard_history(trace, config), title="HomoEcon evaluation: first rollout"),
         "dashboard.png")
    return written


def write_genealogy(path: str, rows: list[dict]) -> None:
    """genealogy.csv: one row per agent of the first rollout (atomic)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


# -- report ---------------------------------------------------------------------------------------
def number(value) -> str:
    """How report.md prints a number from metrics.json: ints as they are, floats to 3 significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        raise ValueError(f"number: got a bool ({value}); report numbers must be ints or floats")
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}" if math.isfinite(value) else "n/a"


def with_ci(stat: dict) -> str:
    """'mean ± half-width' of a {"mean", "ci95"} entry."""
    return number(stat["mean"]) if stat["ci95"] is None else f"{number(stat['mean'])} ± {number(stat['ci95'])}"


def change_word(stat: dict, up: str, down: str) -> str:
    """Describe a late-minus-early change: significant only when its CI excludes zero."""
    if stat["mean"] is None or stat["ci95"] is None or abs(stat["mean"]) <= stat["ci95"]:
        return "did not change significantly"
    return up if stat["mean"] > 0 else down


MEASURE_LABELS = {"mean_reward": "mean reward (per agent per step)", "gini": "Gini of wealth",
                  "specialization": "specialization index", "trade_volume": "trade volume (units per step)"}


def ablation_table(result: dict, title_first: str, title_second: str) -> list[str]:
    """Markdown table: each measure's arms, their paired difference and the verdict."""
    first, second = result["first"], result["second"]
    lines = [f"| measure | {title_first} | {title_second} | {title_first} − {title_second} (paired) | verdict |",
             "|---|---|---|---|---|"]
    for measure in MEASURES:
        verdict = result["verdict"][measure]
        verdict = verdict if verdict == "no significant difference" else f"{title_first} {verdict}"
        lines.append(f"| {MEASURE_LABELS[measure]} | {with_ci(result['arms'][first][measure])} | "
                     f"{with_ci(result['arms'][second][measure])} | {with_ci(result['difference'][measure])} | {verdict} |")
    return lines


def ablation_sentence(result: dict, first: str, second: str) -> str:
    """One sentence saying where the arms differ, honestly including 'nowhere'."""
    better = [MEASURE_LABELS[m] for m in MEASURES if result["verdict"][m] != "no significant difference"]
    if not better:
        return (f"No outcome differs significantly between {first} and {second}: every paired difference's "
                "confidence interval contains zero.")
    parts = [f"{MEASURE_LABELS[m]} is {result['verdict'][m]} with {first}" for m in MEASURES
             if result["verdict"][m] != "no significant difference"]
    return "Significant differences: " + "; ".join(parts) + "; the other outcomes do not differ significantly."


def render_report(m: dict) -> str:
    """report.md from the metrics dict alone (so every number in it is in metrics.json)."""
    meta, s, figures = m["meta"], m["main"]["summary"], m["figures"]
    goods, jobs = meta["resources"], meta["jobs"]
    ci = meta["ci_percent"]
    mean = lambda key: with_ci(s[key])  # noqa: E731
    lines = ["# HomoEcon evaluation report", ""]
    source = (f"the trained run `{meta['run']}` (learner `{meta['learner']}`)" if meta["run"]
              else "untrained agents (freshly initialised `reinforce` learners)")
    mode = "kept learning" if meta["learn"] else "were frozen (no weight updates; newborns still inherit networks)"
    lines += [
        f"Evaluated {source}: an economy of {number(meta['num_agents'])} agents, {number(meta['seeds'])} rollouts "
        f"of {number(meta['steps'])} steps each, during which the learners {mode}. Figures show the first rollout; "
        f"numbers are means over the rollouts ± the half-width of a {number(ci)}% confidence interval "
        f"(Student t over seeds; n/a with a single seed). \"Early\" is the first {number(meta['early_steps'])} steps, "
        f"\"late\" the last {number(meta['early_steps'])}. The evaluation took {number(meta['wall_seconds'])} s.",
        "", "![dashboard](dashboard.png)", ""]

    # Q1: attention over time.
    lines += ["## Q1. How do attention patterns change over time?", "",
              "Attention entropy is normalised by the log of the number of live peers: uniform attention is the "
              "maximum, attention on a single peer the minimum. The favourite graph links every agent to the peer "
              "it attends to most; its weakly connected components are classified by Weisfeiler-Lehman hash.", ""]
    if s["attention_entropy_early"]["mean"] is None:
        lines += ["This learner has no attention (every peer counts the same), so there is nothing to track.", ""]
    else:
        lines += ["| | early | late |", "|---|---|---|"]
        rows = [("attention entropy (normalised)", "attention_entropy"), ("attention entropy (nats)", "attention_entropy_nats")]
        for label, key in rows:
            lines.append(f"| {label} | {mean(key + '_early')} | {mean(key + '_late')} |")
        for label, key in (("favourite-graph components", "components"), ("distinct component shapes", "shapes"),
                           ("largest in-degree", "max_in_degree"), ("fraction of agents in mutual pairs", "mutual_fraction"),
                           ("largest PageRank", "pagerank_max"), ("mean clustering", "mean_clustering"),
                           ("Spearman correlation of in-degree with wealth", "in_degree_wealth_corr")):
            lines.append(f"| {label} | {mean(f'graph_{key}_early')} | {mean(f'graph_{key}_late')} |")
        lines += ["", f"Between the early and late windows the attention entropy "
                  f"{change_word(s['attention_entropy_change'], 'rose, i.e. attention became more diffuse', 'fell, i.e. attention became more focused')} "
                  f"(change {mean('attention_entropy_change')}). "
                  + ("Attention stays close to uniform throughout: the late normalised entropy is above "
                     f"{number(meta['near_uniform_entropy'])}, so favourites are picked by small differences in "
                     "attention." if (s["attention_entropy_late"]["mean"] or 0.0) > meta["near_uniform_entropy"] else
                     "Attention is clearly non-uniform late."), "",
                  "![attention heatmap](attention_heatmap.png)", "",
                  "![favourite-graph shapes, early](topology_early.png)", "",
                  "![favourite-graph shapes, late](topology_late.png)", "",
                  "![in-degree and PageRank](degree_pagerank.png)", ""]

    # Q2: dimensionality of messages.
    lines += ["## Q2. Are broadcast vectors low-dimensional?", "",
              f"Messages have {number(meta['broadcast_dim'])} dimensions. The participation ratio of their covariance "
              f"spectrum (the effective number of dimensions) was {mean('participation_ratio_early')} early and "
              f"{mean('participation_ratio_late')} late, i.e. a fraction {mean('participation_fraction_late')} of the "
              f"available dimensions late (change {mean('participation_ratio_change')}: "
              f"{change_word(s['participation_ratio_change'], 'more dimensions used', 'fewer dimensions used')}). "
              f"The first principal component carries a share {mean('pc1_share_early')} of the variance early and "
              f"{mean('pc1_share_late')} late; the first two together {mean('pc12_share_late')} late.", "",
              "![eigenvalue spectra over time](eigen_spectra.png)", "", "![broadcast PCA](broadcast_pca.png)", ""]

    # Q3: inequality and specialization.
    drivers = {k[len("wealth_corr_"):]: v for k, v in s.items() if k.startswith("wealth_corr_")}
    ranked = sorted((k for k in drivers if drivers[k]["mean"] is not None), key=lambda k: -abs(drivers[k]["mean"]))
    lines += ["## Q3. What drives inequality and specialization?", "",
              f"The Gini coefficient of wealth (holdings after trade) was {mean('gini_early')} early and "
              f"{mean('gini_late')} late ({change_word(s['gini_change'], 'inequality grew', 'inequality fell')}); "
              f"late, the richest fraction {number(meta['top_share'])} of agents held a share "
              f"{mean('top_share_late')} of all goods. Over time, the Gini coefficient's Spearman correlation with "
              f"the largest relative price (how scarce the scarcest good is) was {mean('gini_price_imbalance_corr')}: "
              "a positive value means inequality rises when the seasons make one good scarce, so early-vs-late "
              "comparisons mix learning with the season's phase.", "",
              "Spearman correlation of an agent's wealth with its traits, over agents, averaged over "
              f"{number(meta['snapshots'])} snapshots per rollout (the strongest first):", "",
              "| trait | correlation with wealth |", "|---|---|"]
    lines += [f"| {name.replace('_', ' ')} | {with_ci(drivers[name])} |" for name in ranked]
    if ranked:
        lines += ["", f"The strongest association is with **{ranked[0].replace('_', ' ')}**."]
    lines += ["", f"Specialization index (each agent's consistency of job over its life, counted for agents seen "
              f"on at least {number(meta['min_life_steps'])} steps; higher = more specialized) was "
              f"{mean('specialization_early')} early and {mean('specialization_late')} late "
              f"({change_word(s['specialization_change'], 'rose', 'fell')}; change {mean('specialization_change')}); "
              f"division of labour (mutual information of agent and job, normalised) over the whole rollout "
              f"{mean('division_of_labour_all')}. Late job shares: "
              + ", ".join(f"{job} {mean(f'job_share_late_{job}')}" for job in jobs) + ".", "",
              "![Gini over time](gini.png)", "", "![job distribution](job_distribution.png)", "",
              "![effort vs consumption](effort_consumption.png)", "",
              "![ages and reproduction](ages_reproduction.png)", "",
              "The market, before and after each clearing (the seed's trade scatter; also animated in "
              "[trade.gif](trade.gif)): "
              + ", ".join(f"[step {number(t)}]({path})" for t, path in zip(figures["trade_scatter_steps"], figures["trade_scatter"]))
              + ".", "", f"![trade scatter]({figures['trade_scatter'][-1]})", ""]

    # Q4, Q5 and the policy ablation.
    ablations = m["ablations"]
    protocol = (f"Protocol: {number(meta['ablation_seeds'])} paired seeds. Per seed, each arm starts from fresh networks, "
                f"trains for {number(meta['ablation_train_steps'])} steps, then is evaluated frozen for "
                f"{number(meta['ablation_steps'])} steps on a held-out economy seed shared by all arms. "
                f"Entries are means ± {number(ci)}% CI over seeds; differences are paired by seed.")
    if not ablations:
        lines += ["## Q4. Does learned social filtering beat uniform interaction?", "",
                  "Ablations were skipped (`--ablation-seeds 0`).", ""]
    else:
        lines += ["## Q4. Does learned social filtering beat uniform interaction?", "", protocol, "",
                  *ablation_table(ablations["social_filter"], "learned", "uniform"), "",
                  ablation_sentence(ablations["social_filter"], "learned attention", "uniform attention"), "",
                  "## Q5. What does heterogeneity of tastes do?", "",
                  "Both arms run REINFORCE with a learned social filter; homogeneous tastes give every agent equal "
                  "utility weights on all goods (`heterogeneous_tastes=False`).", "",
                  *ablation_table(ablations["tastes"], "heterogeneous", "homogeneous"), "",
                  ablation_sentence(ablations["tastes"], "heterogeneous tastes", "homogeneous tastes"), "",
                  "## Trained vs random policy", "",
                  ("The trained arm is the run's learner, frozen, evaluated on the same held-out seeds (no further "
                   "training)." if meta["run"] else
                   "Without `--run`, the trained arm is the REINFORCE arm above after its short training."),
                  "", *ablation_table(ablations["policy"], "trained", "random"), "",
                  ablation_sentence(ablations["policy"], "the trained policy", "random actions"), ""]

    # Lineages.
    g = m["genealogy"]
    lines += ["## Lineages", "",
              f"In the first rollout {number(g['agents'])} agents lived: {number(g['initial_population'])} founders and "
              f"{number(g['births'])} births ({number(g['founder_births'])} of them refounding after a collapse). "
              f"{number(g['deaths_age'])} died of age and {number(g['deaths_starvation'])} of starvation. The deepest "
              f"lineage reached generation {number(g['lineage_depth'])}; the living end at mean generation "
              f"{number(g['mean_generation_alive'])}, and "
              f"{number(g['founder_lineages_surviving'])} of the {number(g['initial_population'])} founders have "
              "living descendants. Every agent, its parents, birth and death are in [genealogy.csv](genealogy.csv).", ""]
    if g["most_prolific"]:
        lines += ["Most prolific ancestors:", "", "| agent | generation | born at step | children | descendants | living descendants |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| `{r['agent']}` | {number(r['generation'])} | {number(r['birth_step'])} | {number(r['children'])} | "
                  f"{number(r['descendants'] if r['descendants'] != '' else None)} | "
                  f"{number(r['living_descendants'] if r['living_descendants'] != '' else None)} |" for r in g["most_prolific"]]
        lines.append("")

    # Prices and scarcity.
    lines += ["## Do relative prices follow scarcity across seasons?", "",
              "Relative scarcity of a good is the inverse of its total stock, normalised over goods. The Spearman "
              f"correlation of relative price with relative scarcity over time was {mean('price_scarcity_spearman')} "
              f"(all goods pooled: {mean('price_scarcity_pooled')}).", "",
              "| good | relative price in its season | out of season |", "|---|---|---|"]
    lines += [f"| {good} | {mean(f'price_in_season_{good}')} | {mean(f'price_out_of_season_{good}')} |"
              for good in goods if f"price_in_season_{good}" in s]
    lines += ["", "A good is in season when the job producing it is at least halfway to its seasonal peak.", "",
              "![resources and prices](resources_prices.png)", ""]
    lines += ["## Files", "",
              "`metrics.json` (every number above), `genealogy.csv`, `dashboard.png`, `gini.png`, `trade.gif`, "
              "`trade_scatter/`, and one PNG per figure above.", ""]
    return "\n".join(lines)


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


def to_json(value):
    """metrics.json-safe values: numpy scalars and arrays to Python, nan/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return finite(value)
    return value


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
    per_seed = [summarise_rollout(trace, config) for trace in traces]
    lineage, rows = genealogy(traces[0], list(config.resources))
    ablations = {}
    if stems:
        outcomes = {arm: [ablation_outcome(results[stem + (i,)], config) for i in range(args.ablation_seeds)]
                    for arm, stem in stems.items()}
        ablations = {name: compare({first: outcomes[first], second: outcomes[second]}, first, second)
                     for name, (first, second) in ABLATIONS.items()}

    # Files: figures, genealogy, then metrics.json and report.md from one dict.
    figures = draw_figures(traces[0], config, args.out)
    write_genealogy(os.path.join(args.out, "genealogy.csv"), rows)
    meta = {"run": args.run, "learner": source.learner_name, "learn": args.learn, "num_agents": config.num_agents,
            "steps": args.steps, "seeds": args.seeds, "early_steps": edge_windows(args.steps)[0].stop,
            "snapshots": len(traces[0]["cross_sections"]), "broadcast_dim": config.broadcast_dim,
            "resources": list(config.resources), "jobs": [job.name for job in config.jobs],
            "ci_percent": CI_PERCENT, "near_uniform_entropy": NEAR_UNIFORM_ENTROPY, "top_share": TOP_SHARE, "min_life_steps": MIN_LIFE_STEPS,
            "ablation_seeds": args.ablation_seeds, "ablation_train_steps": args.ablation_train_steps,
            "ablation_steps": args.ablation_steps, "wall_seconds": round(time.perf_counter() - start, 1)}
    result = to_json({"meta": meta, "args": dataclasses.asdict(args), "economy": dataclasses.asdict(config),
                      "learner_config": dataclasses.asdict(source.learner_config),
                      "main": {"summary": summarise_seeds(per_seed), "per_seed": per_seed},
                      "genealogy": lineage, "ablations": ablations, "figures": figures})
    atomic_write_bytes(os.path.join(args.out, "metrics.json"), json.dumps(result, indent=2).encode())
    atomic_write_bytes(os.path.join(args.out, "report.md"), render_report(result).encode())
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
