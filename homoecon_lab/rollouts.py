"""evaluate.py's rollouts: one `Task` is one (optionally trained) rollout, recorded in a `Trace`.

`run_task` runs one; `homoecon_lab.runners.run_tasks` runs many, in this process, in worker
processes or as Ray tasks. A learner that diverges or an action the economy refuses ends the task
with a `RunError` naming the task and the step (docs/design.md section 7); it reaches the caller from
the worker.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from agents import LearnerConfig, make_learner, resolve_learner
from agents.base import executed_actions
from agents.checkpoint import load_checkpoint
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Economy, production
from homoecon_env.core.lifecycle import ALIVE, DEATH_CAUSES
from homoecon_env.core.signals import is_scout
from homoecon_env.diagnostics import analysis, communication, metrics, scouts, space, supply_chain
from homoecon_lab.errors import RunError
from homoecon_lab.llm_groups import GroupRecorder
from homoecon_lab.recorder import message_views
from homoecon_lab.seeding import seed_everything
from homoecon_lab.settings import read_run_config

GRAPH_SNAPSHOTS = 25  # favourite graphs and wealth cross-sections recorded per main rollout
COMMUNICATION_STEPS = 20  # late-window steps whose messages get the communication metrics (evenly spaced)
INFLUENCE_EVERY = 4  # every 4th of those steps also measures the listeners' causal influence (costly)


@dataclass(frozen=True)
class Task:
    """One rollout (optionally after a short training phase); runs in a worker process."""

    key: tuple  # ("main", k) or ("ablation", learner, heterogeneous tastes, inheritance, seed index)
    economy: EconomyConfig
    learner: str  # a name in agents.LEARNERS, a plug-in's "module:ClassName", or "run" for the trained run's learner
    learner_config: LearnerConfig
    economy_seed: int  # seed of the recorded rollout
    steps: int  # recorded steps
    learn: bool  # update weights during the recorded rollout
    run_dir: Optional[str] = None
    train_seed: int = 0  # economy seed of the training phase
    train_steps: int = 0  # 0: no training phase
    detail: bool = False  # record everything the figures need
    frames: int = 0
    lineage: bool = False  # without detail, still record the genealogy and message snapshots (diagnostics.lineage)
    deterministic: bool = False  # the recorded rollout acts with the policy's mode (learner.deterministic)


def build_learner(task: Task):
    """A fresh learner, or the trained run's learner restored from its checkpoint.

    In a worker a plug-in's module is imported again (a spawned process starts with the parent's sys.path
    and working directory; a Ray task appends the parent's sys.path); a failure is a RunError naming the task."""
    name = task.learner
    try:
        if name == "run":
            name = read_run_config(os.path.join(task.run_dir, "config.json")).run.learner
        resolve_learner(name)
    except ValueError as error:
        raise RunError(f"rollout {task.key}: {error}") from None
    learner = make_learner(name, task.economy, task.learner_config)
    if task.learner != "run":
        return learner
    learner.load_state_dict(load_checkpoint(os.path.join(task.run_dir, "checkpoint.pt"))["learner"])
    return learner

# -- recording ------------------------------------------------------------------------------------
class Trace:
    """What a rollout leaves behind: per-step figures always; with ``detail``, everything the figures,
    the genealogy and the report need (time series, favourite graphs, wealth cross-sections, frames).

    Arrays are NumPy, so a Trace pickles cheaply back from a worker process.
    """

    def __init__(self, economy: Economy, steps: int, detail: bool, frames: int, lineage: bool = False):
        config = economy.config
        self.config, self.steps, self.detail = config, steps, detail
        n = config.num_agents
        self.series: dict[str, list] = {key: [] for key in ("reward", "gini", "trade_volume", "births", "deaths_age",
                                                            "deaths_starvation")}
        self.jobs = np.zeros((steps, n), dtype=np.int16)  # [T, N] job chosen by the row's acting agent
        self.ids = np.zeros((steps, n), dtype=np.int64)  # [T, N] acting agent id of each row
        table = production.JobTable.from_config(config)  # supply chains: flows along the chain, every rollout
        self.chain = supply_chain.ChainRecorder(table.output, table.inputs, steps) if table.needs_inputs else None
        self.space = (space.SpaceRecorder(n, config.num_regions, config.num_resources, steps, rewards=detail)
                      if config.spatial else None)  # regions, their prices and moves (diagnostics.space), every rollout
        if config.private_signals:  # is the positive control's structure used? (diagnostics.scouts), every rollout
            self.series.update({key: [] for key in ("scout_attention_mass", "scout_share", "listeners_on_boom")})
        evenly = lambda count: set(np.unique(np.linspace(1, steps, min(count, steps)).round().astype(int)).tolist())  # noqa: E731
        self.lineage_only = lineage and not detail  # the genealogy and messages at the snapshot steps, nothing else
        if self.lineage_only:
            self.snapshot_steps = evenly(GRAPH_SNAPSHOTS)
            self.cross_sections = []  # {"step", "broadcast"} per snapshot step
            self._start_genealogy(economy)
        if not detail:
            return
        self.series.update({key: [] for key in ("totals", "prices", "job_shares", "spectra", "participation_ratio",
                                                "attention_entropy", "entropy_nats")})
        self.snapshot_steps = evenly(GRAPH_SNAPSHOTS)
        self.frame_steps = evenly(frames)
        late = analysis.edge_windows(steps)[1]  # 0-based [start, stop): steps start + 1 .. stop, 1-based
        self.communication_steps = set(np.unique(np.linspace(late.start + 1, late.stop, min(
            COMMUNICATION_STEPS, late.stop - late.start)).round().astype(int)).tolist())
        self.communication: dict[str, list] = {key: [] for key in ("step", *communication.STEP_KEYS)}
        self.influence_steps = set(sorted(self.communication_steps)[::INFLUENCE_EVERY])
        self.influence: dict[str, list] = {"influence_step": [], "causal_influence": []}
        self.graphs: list[dict] = []  # one per snapshot step
        self.cross_sections: list[dict] = []  # [N] arrays per snapshot step
        self.frames: list[dict] = []  # pre/post trade holdings and prices at frame steps
        self.final: dict = {}
        self._start_genealogy(economy)
        self.lifetime_reward: dict[int, float] = {}

    def _start_genealogy(self, economy: Economy) -> None:
        state = economy.state
        self.agents: dict[int, dict] = {}  # agent id -> genealogy record
        for slot in range(self.config.num_agents):
            self._born(int(state.agent_ids[slot]), (), 0, 0, slot, state.utility_weights[slot], founder=True)

    def record_influence(self, t: int, learner, observation) -> None:
        """Before step t is acted: the learner's causal influence on ``observation`` (the one it will
        act on), measured on copies (communication.learner_influence), at the sampled influence steps."""
        if not self.detail or t not in self.influence_steps:
            return
        config = self.config
        value = communication.learner_influence(learner, observation, config.message_width, config.num_jobs,
                                                np.random.default_rng(t),
                                                vocab_size=config.vocab_size if config.symbolic else None)
        self.influence["influence_step"].append(t)
        self.influence["causal_influence"].append(value)

    def _born(self, agent, parents, generation, step, slot, tastes, founder=False, teacher=None) -> None:
        self.agents[agent] = {"parents": tuple(parents), "generation": int(generation), "birth_step": int(step),
                              "slot": int(slot), "tastes": [float(w) for w in tastes], "initial": founder,
                              "death_step": None, "death_cause": "", "teacher": teacher}

    def record(self, t: int, before, observation, actions, out, economy: Economy, attention,
               teachers=None) -> None:
        """Record step t (1-based): ``before`` is the state the agents acted in; ``teachers`` [N] (cultural
        inheritance, the learner's `last_teachers`): each newborn's teacher slot, -1 or None for none."""
        stats = economy.last_stats
        for key in ("gini", "trade_volume", "births", "deaths_age", "deaths_starvation"):
            self.series[key].append(float(stats[key]))
        self.series["reward"].append(float(out.reward.mean()))
        self.jobs[t - 1] = actions.job.numpy()
        self.ids[t - 1] = out.acting_ids.numpy()
        if self.chain is not None:
            wanted = np.clip(actions.effort.double().numpy(), 0.0, 1.0) * production.effort_cap_by_age(
                before.ages.numpy(), self.config)  # [N] chosen effort after the age cap
            self.chain.record(t, before.holdings.numpy(), actions.job.numpy(), wanted, out.effort.numpy(),
                              out.pre_trade.numpy(), out.trade.allocation.numpy(), out.consumed.numpy(),
                              out.trade.prices.numpy())
        if self.config.private_signals:
            self._record_scouts(before, observation, actions, attention)
        if self.space is not None:  # where each acting agent worked and traded: after its move, before any birth
            self.space.record(t, np.asarray(out.dying_state.region), np.asarray(stats["region_prices"]),
                              out.trade.allocation.numpy(), int(stats["movers"]), out.reward.numpy())
        if self.lineage_only:
            if t in self.snapshot_steps:
                self.cross_sections.append({"step": t, "broadcast": message_views(self.config, actions.broadcast)[0]})
            self._record_genealogy(t, out, economy, teachers)
        if not self.detail:
            return
        config = self.config
        self.series["totals"].append(np.asarray(stats["totals"], dtype=np.float64))
        self.series["prices"].append(np.asarray(stats["prices"], dtype=np.float64))
        self.series["job_shares"].append(np.asarray(stats["job_counts"], dtype=np.float64) / config.num_agents)
        # [N, B] messages sent this step (symbolic: [N, L * V] token one-hots) and, for the communication
        # metrics, the messages as sent ([N, L] tokens in the symbolic mode)
        broadcasts, messages = message_views(config, actions.broadcast)
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
                "effort": actions.effort.double().numpy().copy(),
                "generation": before.generation.numpy().astype(np.float64),
                "broadcast": broadcasts})  # messages by lineage (diagnostics.lineage dialects)
        if t in self.communication_steps:  # its own generator per step: leaves every other stream alone
            values = communication.step_summary(
                messages, before.holdings.numpy(), before.utility_weights.numpy(), actions.job.numpy(),
                config.num_jobs, np.random.default_rng(t))
            self.communication["step"].append(t)
            for key, value in values.items():
                self.communication[key].append(value)
        if t in self.frame_steps:
            self.frames.append({"step": t, "before": before_trade, "after": after_trade,  # regional markets
                                "prices": None if config.spatial else out.trade.prices.numpy().copy()})  # no one line
        if t == self.steps:  # the last step's population, for the snapshot figures
            self.final = {"ages": before.ages.numpy(), "broadcasts": broadcasts, "jobs": actions.job.numpy(),
                          "attention": weights, "peer_index": observation.peer_index.numpy(),
                          "effort": out.effort.numpy(), "consumption": out.consumed.numpy(),
                          "holdings_before": before_trade, "holdings_after": after_trade}

        self._record_genealogy(t, out, economy, teachers)

    def _record_scouts(self, before, observation, actions, attention) -> None:
        """Private signals: listeners' attention on scouts (its two pooled sums; nan without attention) and
        their share on the boom job of this production (``before.boom``)."""
        scout, alive = is_scout(before.id_vectors.numpy(), self.config), before.alive.numpy()
        mass, share = np.nan, np.nan
        if attention is not None:
            mass, share = scouts.attention_on_scouts(attention.detach().double().numpy(),
                                                     observation.peer_index.numpy(), observation.peer_mask.numpy(),
                                                     scout, alive)
        self.series["scout_attention_mass"].append(mass)
        self.series["scout_share"].append(share)
        on_boom = scouts.listeners_on_boom(actions.job.numpy(), before.boom, scout, alive)
        self.series["listeners_on_boom"].append(on_boom)

    def _record_genealogy(self, t: int, out, economy: Economy, teachers) -> None:
        """Deaths of step t's acting agents, then the newborns in their slots (with their teachers)."""
        cause = out.death_cause.numpy()
        for slot in np.flatnonzero(cause != ALIVE).tolist():
            record = self.agents[int(out.acting_ids[slot])]
            record["death_step"], record["death_cause"] = t, DEATH_CAUSES[int(cause[slot])]
        state = economy.state
        for slot in out.births.born.nonzero().squeeze(1).tolist():
            parents = [int(p) for p in state.parent_ids[slot].tolist() if p >= 0]
            teacher = None if teachers is None or int(teachers[slot]) < 0 else int(state.agent_ids[int(teachers[slot])])
            self._born(int(state.agent_ids[slot]), parents, int(state.generation[slot]), t, slot,
                       state.utility_weights[slot], teacher=teacher)

    def result(self, economy: Economy) -> dict:
        """Plain arrays and records (picklable); ``economy`` is the economy after the last step."""
        data = {key: np.asarray(values) for key, values in self.series.items()}
        data.update(jobs=self.jobs, ids=self.ids)
        if self.chain is not None:
            data["chain"] = self.chain.result()
        if self.space is not None:
            data.update(self.space.result())
        if self.lineage_only:
            state = economy.state
            data.update(agents=self.agents, alive_at_end=state.agent_ids[state.alive].tolist(),
                        cross_sections=self.cross_sections)
        if self.detail:
            state = economy.state
            data.update(graphs=self.graphs, cross_sections=self.cross_sections, frames=self.frames, final=self.final,
                        agents=self.agents, lifetime_reward=self.lifetime_reward,
                        alive_at_end=state.agent_ids[state.alive].tolist(),
                        communication={key: np.asarray(values, dtype=np.float64)
                                       for key, values in {**self.communication, **self.influence}.items()})
        return data


def _guarded_step(task: Task, phase: str, t: int, learner, economy: Economy, observation, learn: bool):
    """One step (act, step, learn when ``learn``) -> (actions, step output, whether the learner updated:
    its `update` returned a non-empty dict). A diverging learner or a refused action becomes a RunError
    naming the task, the phase and the step."""
    try:
        actions = learner.act(observation)
        actions = executed_actions(learner, actions) if learn else actions  # (a reference's warm start)
        out = economy.step(actions)
        updated = bool(learner.update(out)) if learn else False
    except ValueError as error:  # NonFiniteLossError included
        raise RunError(f"rollout {task.key}, {phase} step {t}: {error}") from None
    learner.on_births(out.births)  # inheritance is part of the economy, frozen or not
    return actions, out, updated


def run_task(task: Task, report: Callable[[int], None]) -> dict:
    """Train (if asked) then record one rollout. ``report(k)`` is told of every k steps done."""
    seed_everything(task.learner_config.seed)
    learner = build_learner(task)
    if task.train_steps:
        economy = Economy(task.economy.replace(max_steps=task.train_steps))
        observation = economy.reset(seed=task.train_seed)
        for t in range(1, task.train_steps + 1):
            _, out, _ = _guarded_step(task, "training", t, learner, economy, observation, True)
            observation = out.observation
            report(1)
    if task.deterministic:
        if not hasattr(learner, "deterministic"):
            raise RunError(f"rollout {task.key}: --deterministic: learner {type(learner).__name__} has no "
                           "deterministic mode (a `deterministic` attribute)")
        learner.deterministic = True
    economy = Economy(task.economy.replace(max_steps=task.steps))
    observation = economy.reset(seed=task.economy_seed)
    trace = Trace(economy, task.steps, task.detail, task.frames, task.lineage)
    updates = 0  # steps of the recorded rollout after which the learner reported an update
    groups = GroupRecorder(learner.groups, task.steps, economy.config.num_agents) \
        if hasattr(learner, "group_of") else None  # a mixed population (agents.mixed): compare its groups
    for t in range(1, task.steps + 1):
        before = economy.state
        trace.record_influence(t, learner, observation)
        acting_groups = None if groups is None else learner.group_of.clone()
        actions, out, updated = _guarded_step(task, "recorded", t, learner, economy, observation, task.learn)
        if groups is not None:
            groups.record(t, acting_groups, out, actions)
        updates += updated
        trace.record(t, before, observation, actions, out, economy, getattr(learner, "last_attention", None),
                     getattr(learner, "last_teachers", None))
        observation = out.observation
        report(1)
    extra = {} if groups is None else {"groups": groups.result(learner.group_of)}
    return {**trace.result(economy), "updates": updates, **extra}


# -- running tasks (in parallel, with one progress bar) ---------------------------------------------
# One function per backend behind `run_tasks`: `_run_here` (one worker), `_run_in_processes` (the
# default) and `_run_on_ray`. Each takes the tasks, the stop flag and ``advance`` (the bar's update)
# and returns {task key: trace}; Ray is imported only inside the Ray backend.
